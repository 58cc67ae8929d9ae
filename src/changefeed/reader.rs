//! The change-log reader: one task per node, one log read per change whatever the number of
//! subscribers.
//!
//! Each poll is one statement: it takes `pg_current_snapshot()` (`cur`) and the logged changes
//! whose transactions are visible in `cur` but were not in the previous poll's snapshot (`prev`),
//! ordered by log id (PgQ's snapshot-difference batches). A transaction that took a low log id
//! but committed late is simply in a later batch; none is skipped, whatever the commit order.
//!
//! Wake-ups: while changes keep coming the reader polls back to back, then every `busy_poll` for
//! `busy_grace`; only then does it set `wants_wakeup` and wait for a NOTIFY (or `idle_poll` as a
//! safety net). Busy writers therefore never NOTIFY. After any connection loss it reconnects with
//! backoff and resumes from `prev`: nothing is lost, and a batch that failed half-way is not
//! delivered twice (see [`Progress`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Row as _};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::capture;
use super::changes::row_change_from_json;
use super::snapshot::Snapshot;
use super::subscription::{truncated, unreadable_change};
use super::{schema, ChangefeedError, ChangefeedSettings, Shared};

use crate::cursor::{encode_table_feed, TxSnapshot};
use crate::protocol::ChangeKind;

const NOTIFY_CHANNEL: &str = "feedgate_changes";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the reader records its position and checks its listener connection.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest wait for the next row of a poll before the connection is taken for dead.
const ROW_TIMEOUT: Duration = Duration::from_secs(30);

/// A logged change's commit time in microseconds since the epoch, as SQL over the change log
/// `c`: PostgreSQL's own commit timestamp where it keeps them (`track_commit_timestamp = on`),
/// else (or for a transaction older than what it kept) the time the transaction started, which
/// the log records. The setting is read per row so that turning it on needs no restart here; the
/// `CASE` keeps `pg_xact_commit_timestamp`, which fails while it is off, from being called.
macro_rules! committed_micros_sql {
    () => {
        "(extract(epoch FROM coalesce( \
             CASE WHEN current_setting('track_commit_timestamp')::bool \
                  THEN pg_xact_commit_timestamp(c.xid::xid) END, \
             c.logged_at)) * 1000000)::int8"
    };
}
pub(super) use committed_micros_sql;

/// The snapshot a reader may read the log up to: in trigger mode `pg_current_snapshot()` (a
/// change is logged in its own transaction), in logical mode the capture leader's latest
/// watermark (every transaction it shows is in the log; see `capture`). One expression, read in
/// the poll's own statement, so the mode needs no state here.
macro_rules! current_snapshot_sql {
    () => {
        "coalesce((SELECT watermark FROM feedgate.capture WHERE mode = 'logical'), \
                  pg_current_snapshot())"
    };
}

const POLL: &str = concat!(
    "\
SELECT cur.s::text AS cur, c.id, c.xid::text AS xid, c.table_oid::int8 AS table_oid, \
       c.op::text AS op, c.old_row, c.new_row, \
       (extract(epoch FROM c.logged_at) * 1000000)::int8 AS logged_micros, ",
    committed_micros_sql!(),
    " AS committed_micros \
  FROM (SELECT ",
    current_snapshot_sql!(),
    " AS s) cur \
  LEFT JOIN feedgate.changes c \
         ON c.xid >= $1::text::xid8 \
        AND pg_visible_in_snapshot(c.xid, cur.s) \
        AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot) \
 ORDER BY c.id"
);

/// Applies migrations and watches the configured tables; any failure is returned.
pub(super) async fn prepare(settings: &ChangefeedSettings) -> Result<Vec<String>, ChangefeedError> {
    migrate(settings).await?;
    let mut conn = settings.connect.clone().connect().await?;
    let mut watched = Vec::new();
    for table in &settings.watch {
        watched.push(schema::watch(&mut conn, table).await?);
    }
    conn.close().await?;
    Ok(watched)
}

/// Applies migrations and settles how the database captures changes (`capture::prepare`).
async fn migrate(settings: &ChangefeedSettings) -> Result<(), ChangefeedError> {
    schema::migrate(&settings.connect).await?;
    capture::prepare(settings).await?;
    Ok(())
}

/// Where the reader is; survives reconnects.
struct Progress {
    /// Every change visible here has been fanned out.
    position: Option<Snapshot>,
    /// Batches that failed half-way: (their `cur`, the last log id fanned out). A change visible
    /// in such a `cur` with an id at or below that is not delivered again. Cleared by the next
    /// complete batch.
    partial: Vec<(Snapshot, i64)>,
    prepared: bool,
}

/// Runs until shutdown: connect, read, and on failure tell subscribers and reconnect.
pub(super) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let node = Uuid::new_v4();
    let mut progress = Progress {
        position: None,
        partial: Vec::new(),
        prepared: false,
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connect(&shared, node, &mut progress) => connected,
        };
        let failure = match connected {
            Ok(mut reader) => {
                backoff = MIN_BACKOFF;
                set_available(&shared, None);
                info!(node = %node, "changefeed reader connected");
                match reader.serve(&mut progress, &shutdown).await {
                    Ok(()) => {
                        reader.deregister().await;
                        return;
                    }
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        warn!(error = %failure, retry_in = ?backoff, "changefeed reader lost the database");
        set_available(&shared, Some(&failure));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Records availability and, when it changes, tells every live table subscriber.
fn set_available(shared: &Shared, failure: Option<&ChangefeedError>) {
    let failure = failure.map(|err| schema::unavailable(err));
    shared.health.set(failure, |status| {
        shared.subscribers.broadcast(status);
    });
}

async fn connect<'a>(
    shared: &'a Shared,
    node: Uuid,
    progress: &mut Progress,
) -> Result<Reader<'a>, ChangefeedError> {
    let settings = &shared.settings;
    if !progress.prepared {
        migrate(settings).await?;
        let mut conn = settings.connect.clone().connect().await?;
        schema::watch_configured(&mut conn, &settings.watch, &shared.refusals).await?;
        conn.close().await?;
        progress.prepared = true;
    }
    let mut conn = settings
        .connect
        .clone()
        .application_name("feedgate-reader")
        .connect()
        .await?;
    let listener_pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(
        settings
            .connect
            .clone()
            .application_name("feedgate-listener"),
    );
    let mut listener = PgListener::connect_with(&listener_pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    let position = match &progress.position {
        Some(position) => position.clone(),
        None => {
            let text: String =
                sqlx::query_scalar(concat!("SELECT (", current_snapshot_sql!(), ")::text"))
                    .fetch_one(&mut conn)
                    .await?;
            snapshot(&text)?
        }
    };
    progress.position = Some(position.clone());
    sqlx::query(
        "INSERT INTO feedgate.readers (node_id, wants_wakeup, position) \
         VALUES ($1, false, $2::text::pg_snapshot) \
         ON CONFLICT (node_id) DO UPDATE SET wants_wakeup = false, \
             position = EXCLUDED.position, seen_at = now()",
    )
    .bind(node)
    .bind(position.to_string())
    .execute(&mut conn)
    .await?;
    let now = Instant::now();
    Ok(Reader {
        shared,
        node,
        conn,
        listener,
        wants_wakeup: false,
        last_change: now,
        last_heartbeat: now,
        last_prune: now,
    })
}

fn snapshot(text: &str) -> Result<Snapshot, ChangefeedError> {
    Ok(Snapshot::parse(text)?)
}

/// Where the reader is within a poll, for the cursors of the changes it fans out (see
/// `cursor::TablePosition`): every change visible in the previous poll's snapshot was delivered;
/// of those of a half-failed earlier try of this poll, the ones up to its last id; of this poll's,
/// the ones up to the change's own id.
struct BatchPosition {
    base: TxSnapshot,
    done: Vec<(TxSnapshot, i64)>,
    cur: TxSnapshot,
}

impl BatchPosition {
    fn new(prev: &Snapshot, partial: &[(Snapshot, i64)], cur: &Snapshot) -> Self {
        Self {
            base: prev.to_tx(),
            done: partial
                .iter()
                .map(|(snapshot, last)| (snapshot.to_tx(), *last))
                .collect(),
            cur: cur.to_tx(),
        }
    }

    /// The cursor of change `id` of table `table_oid`: the position right after it.
    fn cursor(&self, table_oid: u32, id: i64) -> Bytes {
        let done = self.done.iter().map(|(snapshot, last)| (snapshot, *last));
        encode_table_feed(
            table_oid,
            &self.base,
            done.chain(std::iter::once((&self.cur, id))),
        )
    }
}

/// What a change-log row records, read from its `op` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoggedOp {
    /// `I`, `U`, `D`: a row was inserted, updated or deleted.
    Row(ChangeKind),
    /// `T`: the table was truncated.
    Truncate,
}

impl LoggedOp {
    /// Reads change `id`'s op; anything else than the four the log allows is an error, never
    /// guessed at.
    pub(super) fn parse(id: i64, op: &str) -> Result<Self, ChangefeedError> {
        match op {
            "I" => Ok(Self::Row(ChangeKind::Insert)),
            "U" => Ok(Self::Row(ChangeKind::Update)),
            "D" => Ok(Self::Row(ChangeKind::Delete)),
            "T" => Ok(Self::Truncate),
            _ => Err(ChangefeedError::UnknownOp {
                id,
                op: op.to_owned(),
            }),
        }
    }
}

struct Reader<'a> {
    shared: &'a Shared,
    node: Uuid,
    conn: PgConnection,
    listener: PgListener,
    /// Whether this reader asked writers for a NOTIFY (it is idle).
    wants_wakeup: bool,
    last_change: Instant,
    last_heartbeat: Instant,
    last_prune: Instant,
}

impl Reader<'_> {
    /// Polls and waits until shutdown (`Ok`) or a database failure (`Err`).
    async fn serve(
        &mut self,
        progress: &mut Progress,
        shutdown: &CancellationToken,
    ) -> Result<(), ChangefeedError> {
        let tuning = self.shared.settings.tuning.clone();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let started = Instant::now();
            let found = self.poll(progress).await?;
            let now = Instant::now();
            if found > 0 {
                debug!(
                    changes = found,
                    took_ms = now.duration_since(started).as_millis() as u64,
                    since_last_ms = now.duration_since(self.last_change).as_millis() as u64,
                    "change log batch"
                );
                self.last_change = now;
                if self.wants_wakeup {
                    self.set_wakeup(false, progress).await?;
                }
            }
            self.maintain(progress).await?;
            if found > 0 {
                continue;
            }
            let wait = if now.duration_since(self.last_change) < tuning.busy_grace {
                tuning.busy_poll
            } else if !self.wants_wakeup {
                // Ask for a NOTIFY, then poll once more: a change that committed before the
                // request was seen would otherwise wait for the safety poll.
                self.set_wakeup(true, progress).await?;
                continue;
            } else {
                tuning.idle_poll
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = sleep(wait) => {}
                notification = self.listener.try_recv() => {
                    // Ok(None): the listener lost its connection and reconnects on the next
                    // call; notifications may have been missed, which the poll covers.
                    notification?;
                }
            }
        }
    }

    /// Reads and fans out one batch; returns how many changes it held.
    async fn poll(&mut self, progress: &mut Progress) -> Result<usize, ChangefeedError> {
        let prev = progress
            .position
            .clone()
            .ok_or(ChangefeedError::NoPosition)?;
        let shared = self.shared;
        let mut rows = sqlx::query(POLL)
            .bind(prev.xmin().to_string())
            .bind(prev.to_string())
            .fetch(&mut self.conn);
        let mut cur: Option<Snapshot> = None;
        let mut batch: Option<BatchPosition> = None;
        let mut found = 0;
        let mut stale_types = HashSet::new();
        loop {
            let row = match timeout(ROW_TIMEOUT, rows.try_next()).await {
                Ok(row) => row?,
                Err(_) => {
                    return Err(ChangefeedError::NoAnswer {
                        connection: "reader",
                        after: ROW_TIMEOUT,
                    })
                }
            };
            let Some(row) = row else { break };
            if cur.is_none() {
                let text: String = row.try_get("cur")?;
                let snap = snapshot(&text)?;
                if !snap.covers(&prev) {
                    // Only when a database switches from triggers to logical decoding: the
                    // first watermark can be older than this reader's last
                    // `pg_current_snapshot()`. Reading from it would deliver again what `prev`
                    // covers; wait for a watermark that covers it.
                    return Ok(0);
                }
                batch = Some(BatchPosition::new(&prev, &progress.partial, &snap));
                progress.partial.push((snap.clone(), i64::MIN));
                cur = Some(snap);
            }
            let Some(id) = row.try_get::<Option<i64>, _>("id")? else {
                continue; // the LEFT JOIN's empty row: no changes
            };
            let xid: String = row.try_get("xid")?;
            let xid: u64 = xid.parse().map_err(|_| ChangefeedError::BadXid(xid))?;
            let delivered_before = progress.partial[..progress.partial.len() - 1]
                .iter()
                .any(|(snap, last)| snap.is_visible(xid) && id <= *last);
            if let (false, Some(batch)) = (delivered_before, &batch) {
                match fan_out(shared, &row, (id, xid), batch, &mut stale_types) {
                    Ok(()) => {}
                    // The change cannot be delivered, and failing the batch would only read it
                    // again, and fail on it, at every reconnect: `fan_out` ended its table's
                    // subscriptions; the reader goes on.
                    Err(err @ ChangefeedError::UnknownOp { .. }) => {
                        warn!(error = %err, "change log entry skipped");
                    }
                    Err(err) => return Err(err),
                }
                found += 1;
            }
            if let Some(last) = progress.partial.last_mut() {
                last.1 = id;
            }
        }
        drop(rows);
        if found > 0 {
            shared.settings.metrics.changefeed_batch(found);
        }
        if let Some(cur) = cur {
            progress.position = Some(cur);
            progress.partial.clear();
        }
        for oid in stale_types {
            self.refresh_types(oid).await;
        }
        Ok(found)
    }

    /// Reloads a table's column types after a change carried a column the cache lacked.
    async fn refresh_types(&self, oid: u32) {
        let Some(entry) = self.shared.tables.get(oid) else {
            return;
        };
        match schema::column_types(&self.shared.pool, oid).await {
            Ok(types) => entry.set_types(types),
            Err(err) => warn!(error = %err, "cannot reload column types"),
        }
    }

    async fn set_wakeup(
        &mut self,
        wanted: bool,
        progress: &Progress,
    ) -> Result<(), ChangefeedError> {
        self.record(wanted, progress).await?;
        self.wants_wakeup = wanted;
        Ok(())
    }

    /// Writes this reader's row: position, wake-up wish, liveness.
    async fn record(&mut self, wanted: bool, progress: &Progress) -> Result<(), ChangefeedError> {
        let position = progress
            .position
            .as_ref()
            .ok_or(ChangefeedError::NoPosition)?
            .to_string();
        // An upsert: another node may have removed this row as stale after a long pause.
        sqlx::query(
            "INSERT INTO feedgate.readers (node_id, wants_wakeup, position) \
             VALUES ($1, $2, $3::text::pg_snapshot) \
             ON CONFLICT (node_id) DO UPDATE SET wants_wakeup = EXCLUDED.wants_wakeup, \
                 position = EXCLUDED.position, seen_at = now()",
        )
        .bind(self.node)
        .bind(wanted)
        .bind(position)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Heartbeat (position, liveness, listener health) and pruning, when they are due.
    async fn maintain(&mut self, progress: &Progress) -> Result<(), ChangefeedError> {
        let now = Instant::now();
        if now.duration_since(self.last_heartbeat) >= HEARTBEAT {
            self.last_heartbeat = now;
            self.record(self.wants_wakeup, progress).await?;
            sqlx::query(
                "DELETE FROM feedgate.readers WHERE seen_at < now() - interval '2 minutes'",
            )
            .execute(&mut self.conn)
            .await?;
            // A half-open listener connection would otherwise never be noticed.
            timeout(
                HEARTBEAT,
                sqlx::query("SELECT 1").execute(&mut self.listener),
            )
            .await
            .map_err(|_| ChangefeedError::NoAnswer {
                connection: "listener",
                after: HEARTBEAT,
            })??;
        }
        let tuning = &self.shared.settings.tuning;
        if now.duration_since(self.last_prune) >= tuning.prune_interval {
            self.last_prune = now;
            // Prune against this reader's freshest position.
            self.record(self.wants_wakeup, progress).await?;
            let pruned = prune(&mut self.conn, tuning.retention, tuning.max_log_rows).await?;
            if pruned > 0 {
                debug!(pruned, "change log pruned");
            }
            // The ids the kept rows span (rolled-back inserts leave gaps): two index lookups.
            let span: i64 = sqlx::query_scalar(
                "SELECT coalesce(max(id) - min(id) + 1, 0) FROM feedgate.changes",
            )
            .fetch_one(&mut self.conn)
            .await?;
            let metrics = &self.shared.settings.metrics;
            metrics.change_log(u64::try_from(span).unwrap_or(0), pruned);
        }
        Ok(())
    }

    async fn deregister(mut self) {
        let _ = sqlx::query("DELETE FROM feedgate.readers WHERE node_id = $1")
            .bind(self.node)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

/// Fans one logged change out to its table's subscribers, converting it once and encoding each
/// form of it (see `tables`) once. A change with an unknown op ends its table's subscriptions
/// (what they hold would be stale) and is returned as [`ChangefeedError::UnknownOp`].
fn fan_out(
    shared: &Shared,
    row: &sqlx::postgres::PgRow,
    (id, xid): (i64, u64),
    batch: &BatchPosition,
    stale_types: &mut HashSet<u32>,
) -> Result<(), ChangefeedError> {
    let oid: i64 = row.try_get("table_oid")?;
    let op = LoggedOp::parse(id, &row.try_get::<String, _>("op")?);
    let Some(entry) = u32::try_from(oid)
        .ok()
        .and_then(|oid| shared.tables.get(oid))
    else {
        // Nobody ever subscribed to this table on this node; an unknown op is still reported.
        return op.map(|_| ());
    };
    let kind = match op {
        Ok(LoggedOp::Row(kind)) => kind,
        Ok(LoggedOp::Truncate) => {
            shared
                .subscribers
                .reset(&entry, xid, &truncated(&entry.info.name));
            return Ok(());
        }
        Err(err) => {
            let failure = unreadable_change(&entry.info.name, &err);
            shared.subscribers.reset(&entry, xid, &failure);
            return Err(err);
        }
    };
    let mut rows: Option<(Option<serde_json::Value>, Option<serde_json::Value>)> =
        Some((row.try_get("old_row")?, row.try_get("new_row")?));
    let logged: i64 = row.try_get("logged_micros")?;
    let committed: i64 = row.try_get("committed_micros")?;
    let lag = crate::protocol::now_micros().saturating_sub(logged);
    shared
        .settings
        .metrics
        .changefeed_lag(std::time::Duration::from_micros(lag.max(0) as u64));
    let cursor = batch.cursor(entry.info.oid, id);
    let fanout = shared.subscribers.fan_out(&entry, xid, &cursor, || {
        let (old, new) = rows.take().unwrap_or_default();
        let types = entry.types();
        let unknown = |json: &Option<serde_json::Value>| {
            json.as_ref()
                .and_then(|j| j.as_object())
                .is_some_and(|o| o.keys().any(|k| !types.contains_key(k)))
        };
        if unknown(&old) || unknown(&new) {
            stale_types.insert(entry.info.oid);
        }
        let mut change = row_change_from_json(kind, &entry.info, &types, old, new);
        change.transaction_id = xid;
        change.commit_time_micros = committed;
        change
    });
    if fanout.dropped > 0 {
        let dropped = fanout.dropped;
        debug!(table = %entry.info.name, dropped, "slow table subscribers dropped");
    }
    Ok(())
}

/// Deletes logged changes that every live reader has read (their transaction is older than the
/// oldest reader position's xmin) and that are older than `retention` or beyond the newest
/// `max_rows`. With no live reader nothing is deleted.
pub(super) async fn prune(
    conn: &mut PgConnection,
    retention: Duration,
    max_rows: u64,
) -> Result<u64, sqlx::Error> {
    // Records how far it reached (`feedgate.pruned`, see migrations/0002) in the same statement,
    // so that no resume can miss a deletion.
    let deleted: i64 = sqlx::query_scalar(
        "WITH horizon AS ( \
             SELECT min(pg_snapshot_xmin(position)) AS xmin FROM feedgate.readers \
              WHERE seen_at > now() - interval '2 minutes'), \
         gone AS ( \
             DELETE FROM feedgate.changes c USING horizon h \
              WHERE c.xid < h.xmin \
                AND (c.logged_at < now() - make_interval(secs => $1) \
                     OR c.id <= (SELECT max(id) FROM feedgate.changes) - $2) \
             RETURNING c.xid), \
         mark AS ( \
             INSERT INTO feedgate.pruned (below) \
             SELECT (max(xid::text::numeric) + 1)::text::xid8 FROM gone HAVING count(*) > 0 \
             ON CONFLICT (singleton) DO UPDATE \
                SET below = greatest(feedgate.pruned.below, excluded.below)) \
         SELECT count(*) FROM gone",
    )
    .bind(retention.as_secs_f64())
    .bind(i64::try_from(max_rows).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_logged_ops_are_read() {
        for (op, read) in [
            ("I", LoggedOp::Row(ChangeKind::Insert)),
            ("U", LoggedOp::Row(ChangeKind::Update)),
            ("D", LoggedOp::Row(ChangeKind::Delete)),
            ("T", LoggedOp::Truncate),
        ] {
            assert_eq!(LoggedOp::parse(1, op).ok(), Some(read), "{op}");
        }
    }

    #[test]
    fn an_unknown_op_is_an_error_not_a_truncate() {
        for op in ["X", "", "i", "TT"] {
            match LoggedOp::parse(42, op) {
                Err(ChangefeedError::UnknownOp { id: 42, op: logged }) => assert_eq!(logged, op),
                other => panic!("{op:?} read as {other:?}"),
            }
        }
        let err = LoggedOp::parse(42, "X").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("change 42 in the change log has unknown op \"X\"")
        );
    }

    #[test]
    fn an_unknown_op_ends_subscriptions_with_a_source_reset() {
        let err = ChangefeedError::UnknownOp {
            id: 7,
            op: "X".into(),
        };
        let failure = unreadable_change("public.orders", &err);
        assert_eq!(failure.code, crate::protocol::Code::SourceReset);
        assert!(
            failure.message.contains("unknown op"),
            "{}",
            failure.message
        );
        assert_eq!(
            failure.details.get("table").map(String::as_str),
            Some("public.orders")
        );
    }
}
