//! Prometheus metrics (`GET /metrics`, text format 0.0.4), with the `prometheus-client` crate:
//! one registry per server (so several servers in one process, as the tests run them, count
//! apart), typed metrics held here and updated where things happen, and the figures that are
//! state rather than events (open connections, subscriptions, availability) read at scrape time
//! from a [`Scrape`] the HTTP handler fills.
//!
//! Every metric name is a constant below. Label values come from small fixed sets (a command, an
//! error code's name, a close code, a source kind, a dependency); never a topic, table, user or
//! session id. No I/O and no other feedgate module but the protocol's code names.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Connections accepted (WebSocket upgrades that became sessions).
pub const CONNECTIONS_OPENED: &str = "feedgate_connections_opened";
/// Connections closed, by close code (`code`).
pub const CONNECTIONS_CLOSED: &str = "feedgate_connections_closed";
/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "feedgate_connections_open";
/// Requests received, by command (`command`).
pub const REQUESTS: &str = "feedgate_requests";
/// Requests answered with an error, by `ErrorCode` name (`code`).
pub const REQUEST_ERRORS: &str = "feedgate_request_errors";
/// Events (and responses) written to sockets.
pub const FRAMES_WRITTEN: &str = "feedgate_frames_written";
/// Bytes of frames written to sockets.
pub const BYTES_WRITTEN: &str = "feedgate_written_bytes";
/// Messages a connection's queue held when its writer took the next batch.
pub const QUEUE_DEPTH: &str = "feedgate_outbound_queue_depth";
/// Subscriptions active now, by source kind (`source`: memory, kafka, rabbitmq, table).
pub const SUBSCRIPTIONS: &str = "feedgate_subscriptions";
/// Events queued to subscribers, counted per subscriber, by source kind.
pub const EVENTS_DELIVERED: &str = "feedgate_events_delivered";
/// Subscribers fan-out removed because their queue was full or their connection gone.
pub const FANOUT_DROPPED: &str = "feedgate_fanout_dropped_subscribers";
/// Whether a configured dependency is available (1) or not (0), by `dependency`.
pub const DEPENDENCY_UP: &str = "feedgate_dependency_up";
/// Changes per changefeed poll that found any.
pub const CHANGEFEED_BATCH: &str = "feedgate_changefeed_batch_changes";
/// Seconds from a change's log time (its transaction's start) to its fan-out.
pub const CHANGEFEED_LAG: &str = "feedgate_changefeed_read_lag_seconds";
/// Seconds from a change's commit (PostgreSQL's commit timestamp where it tracks them, else its
/// transaction's start) to the flush of the socket write that carried it, per subscriber.
pub const COMMIT_TO_SEND: &str = "feedgate_changefeed_commit_to_send_seconds";
/// Seconds a subscription's snapshot (initial rows or a resume's catch-up) took.
pub const SNAPSHOT_SECONDS: &str = "feedgate_snapshot_seconds";
/// Initial rows sent.
pub const SNAPSHOT_ROWS: &str = "feedgate_snapshot_rows";
/// The log ids the change log's kept rows span, at the last prune (at least its rows).
pub const CHANGE_LOG_SPAN: &str = "feedgate_change_log_span";
/// Logged changes this node's pruning deleted.
pub const CHANGE_LOG_PRUNED: &str = "feedgate_change_log_pruned";
/// Records this node's Kafka consumers are behind their partitions' high watermarks, summed.
pub const KAFKA_LAG: &str = "feedgate_kafka_consumer_lag_messages";
/// Gauge: 1 on the node that leads capture from the write-ahead log, 0 elsewhere.
pub const CAPTURE_LEADER: &str = "feedgate_capture_leader";
/// Gauge: WAL bytes the replication slot has not had acknowledged (sampled by the leader).
pub const CAPTURE_SLOT_LAG: &str = "feedgate_capture_slot_lag_bytes";
/// Gauge: WAL bytes the replication slot keeps on the database's disk (sampled by the leader).
pub const CAPTURE_SLOT_RETAINED: &str = "feedgate_capture_slot_retained_bytes";
/// Counter: changes the leader appended to the change log.
pub const CAPTURE_APPENDED: &str = "feedgate_capture_appended_changes";
/// Counter: replication slots found invalidated or dropped (subscribers reset).
pub const CAPTURE_RESETS: &str = "feedgate_capture_resets";
/// Resident memory of the process, in bytes.
pub const PROCESS_RESIDENT: &str = "feedgate_process_resident_memory_bytes";
/// File descriptors the process has open.
pub const PROCESS_OPEN_FDS: &str = "feedgate_process_open_fds";
/// CPU time the process has used (user and system), in seconds.
pub const PROCESS_CPU: &str = "feedgate_process_cpu_seconds";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

/// What is state rather than events, read at each scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Connections open now.
    pub connections: usize,
    /// Active subscriptions per source kind.
    pub subscriptions: Vec<(&'static str, usize)>,
    /// Events delivered since start per source kind (each subscriber's copy counted).
    pub delivered: Vec<(&'static str, u64)>,
    /// Subscribers fan-out removed so far, all sources.
    pub dropped: u64,
    /// Each configured dependency and whether it is available.
    pub dependencies: Vec<(&'static str, bool)>,
    /// The process's figures, where the platform gives them.
    pub process: Option<Process>,
    /// Kafka consumer lag as last sampled (see [`KAFKA_LAG`]); `None` without Kafka or before
    /// the first sample.
    pub kafka_lag: Option<u64>,
}

/// What the operating system says of the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Process {
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Commit-to-send buckets, in seconds: 1 ms to 10 s, three per decade.
const COMMIT_TO_SEND_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The server's metrics. Shared as `Arc<Metrics>`; updating one is an atomic add.
#[derive(Debug)]
pub struct Metrics {
    /// Locked only to encode (and to set the scrape-time figures just before).
    registry: Mutex<Registry>,
    connections_opened: Counter,
    connections_closed: Family<CodeLabel, Counter>,
    connections_open: Gauge,
    requests: Family<CommandLabel, Counter>,
    request_errors: Family<CodeLabel, Counter>,
    frames_written: Counter,
    bytes_written: Counter,
    queue_depth: Histogram,
    subscriptions: Family<SourceLabel, Gauge>,
    events_delivered: Family<SourceLabel, Counter>,
    fanout_dropped: Counter,
    dependency_up: Family<DependencyLabel, Gauge>,
    changefeed_batch: Histogram,
    changefeed_lag: Histogram,
    commit_to_send: Histogram,
    snapshot_seconds: Histogram,
    snapshot_rows: Counter,
    change_log_span: Gauge,
    change_log_pruned: Counter,
    kafka_lag: Gauge,
    capture_leader: Gauge,
    capture_slot_lag: Gauge,
    capture_slot_retained: Gauge,
    capture_appended: Counter,
    capture_resets: Counter,
    process_resident: Gauge,
    process_open_fds: Gauge,
    process_cpu: Counter<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            registry: Mutex::new(Registry::default()),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            connections_open: Gauge::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            frames_written: Counter::default(),
            bytes_written: Counter::default(),
            // 1 to ~32k messages.
            queue_depth: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            subscriptions: Family::default(),
            events_delivered: Family::default(),
            fanout_dropped: Counter::default(),
            dependency_up: Family::default(),
            // 1 to ~16k changes per poll.
            changefeed_batch: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            // 0.5 ms to ~65 s.
            changefeed_lag: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            commit_to_send: Histogram::new(COMMIT_TO_SEND_BUCKETS),
            // 1 ms to ~65 s.
            snapshot_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            snapshot_rows: Counter::default(),
            change_log_span: Gauge::default(),
            change_log_pruned: Counter::default(),
            kafka_lag: Gauge::default(),
            capture_leader: Gauge::default(),
            capture_slot_lag: Gauge::default(),
            capture_slot_retained: Gauge::default(),
            capture_appended: Counter::default(),
            capture_resets: Counter::default(),
            process_resident: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_cpu: Counter::default(),
        };
        let m = &metrics;
        registry.register(
            CONNECTIONS_OPENED,
            "Connections accepted",
            m.connections_opened.clone(),
        );
        registry.register(
            CONNECTIONS_CLOSED,
            "Connections closed, by WebSocket close code",
            m.connections_closed.clone(),
        );
        registry.register(
            CONNECTIONS_OPEN,
            "Connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            REQUESTS,
            "Requests received, by command",
            m.requests.clone(),
        );
        registry.register(
            REQUEST_ERRORS,
            "Requests answered with an error, by error code",
            m.request_errors.clone(),
        );
        registry.register(
            FRAMES_WRITTEN,
            "Frames (events and responses) written to sockets",
            m.frames_written.clone(),
        );
        registry.register(
            BYTES_WRITTEN,
            "Bytes of frames written to sockets",
            m.bytes_written.clone(),
        );
        registry.register(
            QUEUE_DEPTH,
            "Messages a connection's outbound queue held when its writer took the next batch",
            m.queue_depth.clone(),
        );
        registry.register(
            SUBSCRIPTIONS,
            "Subscriptions active now, by source kind",
            m.subscriptions.clone(),
        );
        registry.register(
            EVENTS_DELIVERED,
            "Events queued to subscribers (each subscriber's copy counted), by source kind",
            m.events_delivered.clone(),
        );
        registry.register(
            FANOUT_DROPPED,
            "Subscribers removed by fan-out because their queue was full or their connection gone",
            m.fanout_dropped.clone(),
        );
        registry.register(
            DEPENDENCY_UP,
            "Whether a configured dependency is available (1) or not (0)",
            m.dependency_up.clone(),
        );
        registry.register(
            CHANGEFEED_BATCH,
            "Changes per changefeed poll that found any",
            m.changefeed_batch.clone(),
        );
        registry.register(
            CHANGEFEED_LAG,
            "Seconds from a change's log time (its transaction's start) to its fan-out",
            m.changefeed_lag.clone(),
        );
        registry.register(
            COMMIT_TO_SEND,
            "Seconds from a change's commit to the flush of the socket write that carried it, \
             per subscriber (commit: PostgreSQL's commit timestamp with track_commit_timestamp, \
             else the transaction's start)",
            m.commit_to_send.clone(),
        );
        registry.register(
            SNAPSHOT_SECONDS,
            "Seconds a subscription's snapshot or resume catch-up took",
            m.snapshot_seconds.clone(),
        );
        registry.register(SNAPSHOT_ROWS, "Initial rows sent", m.snapshot_rows.clone());
        registry.register(
            CHANGE_LOG_SPAN,
            "Log ids the change log's kept rows span at the last prune (at least its rows)",
            m.change_log_span.clone(),
        );
        registry.register(
            CHANGE_LOG_PRUNED,
            "Logged changes this node's pruning deleted",
            m.change_log_pruned.clone(),
        );
        registry.register(
            KAFKA_LAG,
            "Records this node's Kafka consumers are behind their partitions' high watermarks, \
             summed (sampled every few seconds)",
            m.kafka_lag.clone(),
        );
        registry.register(
            CAPTURE_LEADER,
            "1 on the node that leads capture from the write-ahead log, else 0",
            m.capture_leader.clone(),
        );
        registry.register(
            CAPTURE_SLOT_LAG,
            "WAL bytes the replication slot has not had acknowledged (pg_current_wal_lsn() - \
             confirmed_flush_lsn), sampled by the leader",
            m.capture_slot_lag.clone(),
        );
        registry.register(
            CAPTURE_SLOT_RETAINED,
            "WAL bytes the replication slot keeps on the database's disk (pg_current_wal_lsn() - \
             restart_lsn), sampled by the leader",
            m.capture_slot_retained.clone(),
        );
        registry.register(
            CAPTURE_APPENDED,
            "Changes this node appended to the change log as capture leader",
            m.capture_appended.clone(),
        );
        registry.register(
            CAPTURE_RESETS,
            "Replication slots this node found invalidated or dropped (subscriptions reset)",
            m.capture_resets.clone(),
        );
        registry.register(
            PROCESS_RESIDENT,
            "Resident memory of the process, in bytes",
            m.process_resident.clone(),
        );
        registry.register(
            PROCESS_OPEN_FDS,
            "File descriptors the process has open",
            m.process_open_fds.clone(),
        );
        registry.register(
            PROCESS_CPU,
            "CPU time the process has used (user and system), in seconds",
            m.process_cpu.clone(),
        );
        *metrics
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = registry;
        metrics
    }

    /// A connection became a session.
    pub fn connection_opened(&self) {
        self.connections_opened.inc();
    }

    /// A session ended with WebSocket close `code`.
    pub fn connection_closed(&self, code: u16) {
        let label = CodeLabel {
            code: code.to_string(),
        };
        self.connections_closed.get_or_create(&label).inc();
    }

    /// A request of `command` (a fixed name: `subscribe`, `publish`, ...) arrived.
    pub fn request(&self, command: &'static str) {
        let label = CommandLabel { command };
        self.requests.get_or_create(&label).inc();
    }

    /// A request was answered with error `code` (its `ErrorCode` name).
    pub fn request_error(&self, code: &str) {
        let label = CodeLabel {
            code: code.to_owned(),
        };
        self.request_errors.get_or_create(&label).inc();
    }

    /// `frames` frames of `bytes` bytes in all went to a socket.
    pub fn written(&self, frames: u64, bytes: u64) {
        self.frames_written.inc_by(frames);
        self.bytes_written.inc_by(bytes);
    }

    /// A writer found `depth` messages queued (the one it takes included).
    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth.observe(depth as f64);
    }

    /// A changefeed poll found `changes` changes.
    pub fn changefeed_batch(&self, changes: usize) {
        self.changefeed_batch.observe(changes as f64);
    }

    /// A change was fanned out `lag` after it was logged.
    pub fn changefeed_lag(&self, lag: Duration) {
        self.changefeed_lag.observe(lag.as_secs_f64());
    }

    /// A row change reached a socket `latency` after it committed.
    pub fn commit_to_send(&self, latency: Duration) {
        self.commit_to_send.observe(latency.as_secs_f64());
    }

    /// A snapshot took `took` and sent `rows` initial rows.
    pub fn snapshot(&self, took: Duration, rows: u64) {
        self.snapshot_seconds.observe(took.as_secs_f64());
        self.snapshot_rows.inc_by(rows);
    }

    /// Pruning ran: the kept rows span `span` log ids; it deleted `pruned`.
    pub fn change_log(&self, span: u64, pruned: u64) {
        self.change_log_span
            .set(i64::try_from(span).unwrap_or(i64::MAX));
        self.change_log_pruned.inc_by(pruned);
    }

    /// This node became capture leader (`true`) or stopped leading.
    pub fn capture_leading(&self, leading: bool) {
        self.capture_leader.set(i64::from(leading));
    }

    /// The leader sampled its slot: WAL not yet acknowledged, and WAL kept, in bytes.
    pub fn capture_slot(&self, lag: u64, retained: u64) {
        self.capture_slot_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.capture_slot_retained
            .set(i64::try_from(retained).unwrap_or(i64::MAX));
    }

    /// The leader appended `changes` changes.
    pub fn capture_appended(&self, changes: u64) {
        self.capture_appended.inc_by(changes);
    }

    /// The leader found its slot invalidated or dropped.
    pub fn capture_reset(&self) {
        self.capture_resets.inc();
    }

    /// The metrics in Prometheus' text format, with `now`'s figures.
    pub fn render(&self, now: &Scrape) -> String {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        self.connections_open
            .set(i64::try_from(now.connections).unwrap_or(i64::MAX));
        for (source, count) in &now.subscriptions {
            let label = SourceLabel { source };
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            self.subscriptions.get_or_create(&label).set(count);
        }
        for (source, total) in &now.delivered {
            let counter = self.events_delivered.get_or_create(&SourceLabel { source });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let counted = self.fanout_dropped.get();
        self.fanout_dropped
            .inc_by(now.dropped.saturating_sub(counted));
        for (dependency, up) in &now.dependencies {
            let label = DependencyLabel { dependency };
            self.dependency_up.get_or_create(&label).set(i64::from(*up));
        }
        if let Some(lag) = now.kafka_lag {
            self.kafka_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        if let Some(process) = now.process {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.process_resident.set(gauge(process.resident_bytes));
            self.process_open_fds.set(gauge(process.open_fds));
            let counted = self.process_cpu.get();
            self.process_cpu
                .inc_by((process.cpu_seconds - counted).max(0.0));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        metrics.connection_opened();
        metrics.connection_closed(4008);
        metrics.request("subscribe");
        metrics.request_error("VALIDATION");
        metrics.written(2, 100);
        metrics.commit_to_send(Duration::from_millis(3));
        metrics.commit_to_send(Duration::from_secs(20));
        let text = metrics.render(&Scrape {
            connections: 3,
            subscriptions: vec![("memory", 2), ("table", 1)],
            delivered: vec![("memory", 9)],
            dropped: 5,
            dependencies: vec![("postgres", true)],
            process: Some(Process {
                resident_bytes: 4096,
                open_fds: 9,
                cpu_seconds: 1.5,
            }),
            kafka_lag: Some(12),
        });
        for line in [
            "feedgate_connections_opened_total 1",
            "feedgate_connections_closed_total{code=\"4008\"} 1",
            "feedgate_connections_open 3",
            "feedgate_requests_total{command=\"subscribe\"} 1",
            "feedgate_request_errors_total{code=\"VALIDATION\"} 1",
            "feedgate_written_bytes_total 100",
            "feedgate_subscriptions{source=\"memory\"} 2",
            "feedgate_events_delivered_total{source=\"memory\"} 9",
            "feedgate_fanout_dropped_subscribers_total 5",
            "feedgate_dependency_up{dependency=\"postgres\"} 1",
            "feedgate_process_resident_memory_bytes 4096",
            "feedgate_process_open_fds 9",
            "feedgate_process_cpu_seconds_total 1.5",
            "feedgate_kafka_consumer_lag_messages 12",
            "feedgate_changefeed_commit_to_send_seconds_count 2",
            "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"0.0025\"} 0",
            "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"0.005\"} 1",
            "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"10\"} 1",
            "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"+Inf\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let again = metrics.render(&Scrape {
            dropped: 7,
            ..Scrape::default()
        });
        assert!(again.contains("feedgate_fanout_dropped_subscribers_total 7"));
    }
}
