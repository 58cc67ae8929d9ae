//! The leader: it holds the capture lock on its replication connection, decodes the slot's
//! `pgoutput` stream and appends each transaction's changes to `feedgate.changes` in commit
//! order, then publishes a **watermark**.
//!
//! Markers make watermarks. A marker is a transactional logical message, prefix `feedgate`,
//! whose content is `pg_current_snapshot()` taken by the statement that writes it. Every
//! transaction visible in that snapshot committed (wrote its commit record) before the marker
//! did, so the slot delivers it before the marker. When the marker arrives, everything delivered
//! before it is appended, and in the same transaction the snapshot becomes the watermark and
//! `appended_lsn` moves to the marker's commit end (compare-and-set under this leader's
//! generation: a deposed leader's append fails). Only after that commit is the position
//! acknowledged to the slot, so nothing is acknowledged before it is in the log, and after any
//! restart the stream starts at `appended_lsn` and skips what ended at or before it: a change
//! is in the log exactly once.
//!
//! The leader asks for a marker as soon as a transaction with changes has been delivered and
//! none is on its way, so a change waits one marker round trip. Any node may write a marker
//! (a resume that waits for the log to catch up with its cursor does).
//!
//! Rows are written in chunks inside one open append transaction, so a large source transaction
//! is held neither in memory nor as one statement; the append transaction commits at the next
//! marker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde_json::{Map, Value as Json};
use sqlx::{ConnectOptions as _, PgConnection};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::pgoutput::{self, Datum, Message, Relation, Tuple};
use super::super::snapshot::Snapshot;
use super::super::values::pgoutput::TypeCatalog;
use super::super::xid::widen;
use super::super::{ChangefeedError, ChangefeedSettings};
use super::append::{Chunk, Origin};
use super::election::{replication, Led};
use crate::metrics::Metrics;

/// The logical message prefix of markers.
pub(crate) const MARKER_PREFIX: &str = "feedgate";
/// The prefix of the marker `feedgate.switch_to_logical()` writes.
const SWITCH_PREFIX: &str = "feedgate.switch";
/// Rows written per statement.
const CHUNK: usize = 1000;
/// A marker asked for and not seen within this is asked for again.
const MARKER_RETRY: Duration = Duration::from_secs(1);
/// How often the leader samples its slot for the metrics.
const SAMPLE: Duration = Duration::from_secs(5);
/// How long the stream may be silent before the leader checks on its marker.
const TICK: Duration = Duration::from_millis(100);

/// Writes a marker: a watermark candidate that the leader publishes when it arrives.
pub(crate) const WRITE_MARKER: &str =
    "SELECT pg_logical_emit_message(true, 'feedgate', pg_current_snapshot()::text)::text";

/// What a node that won the election brings to leading: its replication connection (gated,
/// holding the lock), its log connection, and where the log is.
pub(super) struct Leading {
    pub(super) client: ReplicationClient,
    pub(super) log: PgConnection,
    pub(super) slot: String,
    pub(super) generation: i64,
    pub(super) appended: Lsn,
    pub(super) watermark: Snapshot,
    pub(super) switching: bool,
}

/// Streams as leader until shutdown (`Ok(Stopped)`) or a failure.
pub(super) async fn run(
    leading: Leading,
    settings: &ChangefeedSettings,
    shutdown: &CancellationToken,
) -> Result<Led, ChangefeedError> {
    let Leading {
        mut client,
        mut log,
        slot,
        generation,
        appended,
        watermark,
        switching,
    } = leading;
    client.start().await.map_err(replication)?;
    client.wait_started().await.map_err(replication)?;
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut log)
        .await?;
    let marker = settings
        .connect
        .clone()
        .application_name("feedgate-capture-marker")
        .connect()
        .await?;
    info!(slot = %slot, from = %appended, generation, "changefeed capture: leading");
    let mut leader = Leader {
        client,
        metrics: settings.metrics.clone(),
        slot,
        last_sample: Instant::now(),
        appended_uncommitted: 0,
        log,
        marker,
        generation,
        appended,
        reference: watermark.xmax(),
        watermark,
        idle_marker: settings.tuning.idle_poll,
        last_marker: Instant::now(),
        marker_xid: None,
        switching,
        relations: HashMap::new(),
        types: TypeCatalog::default(),
        type_oids: HashSet::new(),
        tx: None,
        open: false,
        chunk: Chunk::default(),
        pending: Vec::new(),
        marker_asked: None,
    };
    settings.metrics.capture_leading(true);
    let outcome = leader.stream(shutdown).await;
    settings.metrics.capture_leading(false);
    let _ = timeout(Duration::from_secs(2), leader.client.shutdown()).await;
    leader.client.abort();
    outcome
}

/// A source transaction being received.
struct SourceTx {
    origin: Origin,
    /// Already in the log (it ended at or before `appended_lsn`): a replay after a restart.
    skip: bool,
    changes: usize,
    marker: Option<String>,
}

struct Leader {
    client: ReplicationClient,
    metrics: Arc<Metrics>,
    slot: String,
    last_sample: Instant,
    /// Changes appended in the open append transaction (counted once it commits).
    appended_uncommitted: u64,
    /// Appends and publishes (one transaction open from the first row to the next marker).
    log: PgConnection,
    /// Writes markers (it must not wait for the append transaction).
    marker: PgConnection,
    generation: i64,
    /// The commit end of the last transaction in the log.
    appended: Lsn,
    /// A recent snapshot's xmax, to widen 32-bit xids by.
    reference: u64,
    /// The latest watermark published.
    watermark: Snapshot,
    /// While idle, how often to check whether the watermark lags behind (transactions that
    /// touched no watched table ended: readers, resumes and pruning wait on it).
    idle_marker: Duration,
    last_marker: Instant,
    /// The transaction of the last marker published (its own end shows nothing new).
    marker_xid: Option<u64>,
    /// The database is switching from row triggers: everything before the switch marker was
    /// logged by them and is dropped here.
    switching: bool,
    relations: HashMap<u32, Relation>,
    types: TypeCatalog,
    type_oids: HashSet<u32>,
    tx: Option<SourceTx>,
    /// Whether the append transaction is open.
    open: bool,
    chunk: Chunk,
    /// The transactions with changes delivered that no watermark shows yet. A transaction
    /// that commits after a marker's snapshot was taken, and before the marker, is appended
    /// with it but shown only by the next: it stays here, and another marker is asked for.
    pending: Vec<u64>,
    /// When a marker was last asked for, while none has arrived since.
    marker_asked: Option<Instant>,
}

impl Leader {
    async fn stream(&mut self, shutdown: &CancellationToken) -> Result<Led, ChangefeedError> {
        // Whatever a replay after a restart brings, one marker covers it.
        self.ask_marker().await?;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return Ok(Led::Stopped),
                event = timeout(TICK, self.client.recv()) => event,
            };
            match event {
                Err(_) => {}
                Ok(Ok(Some(event))) => self.handle(event).await?,
                Ok(Ok(None)) => {
                    return Err(ChangefeedError::Capture(
                        "the replication stream ended".into(),
                    ))
                }
                Ok(Err(err)) => return Err(replication(err)),
            }
            if self.last_sample.elapsed() >= SAMPLE {
                self.last_sample = Instant::now();
                self.sample_slot().await?;
            }
            let overdue = self
                .marker_asked
                .is_some_and(|asked| asked.elapsed() > MARKER_RETRY);
            if !self.pending.is_empty() && (self.marker_asked.is_none() || overdue) {
                self.ask_marker().await?;
            } else if self.pending.is_empty()
                && self.marker_asked.is_none()
                && self.last_marker.elapsed() >= self.idle_marker
            {
                self.last_marker = Instant::now();
                let now: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
                    .fetch_one(&mut self.marker)
                    .await?;
                if Snapshot::parse(&now)?.ended_since(&self.watermark, self.marker_xid) {
                    self.ask_marker().await?;
                }
            }
        }
    }

    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), ChangefeedError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.tx = Some(SourceTx {
                    origin: Origin {
                        xid: widen(xid, self.reference),
                        commit_micros: commit_time_micros,
                        commit_lsn: final_lsn,
                    },
                    skip: final_lsn < self.appended || self.switching,
                    changes: 0,
                    marker: None,
                });
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data).map_err(|e| {
                    ChangefeedError::Capture(format!("undecodable pgoutput message: {e}"))
                })?;
                self.message(message).await?;
            }
            ReplicationEvent::Message {
                prefix, content, ..
            } => {
                if let Some(tx) = &mut self.tx {
                    let content = || String::from_utf8_lossy(&content).into_owned();
                    if prefix == MARKER_PREFIX {
                        tx.marker = Some(content());
                    } else if prefix == SWITCH_PREFIX && self.switching {
                        // The switch: what follows it is the leader's to log.
                        tx.marker = Some(content());
                        tx.skip = false;
                        self.switching = false;
                    }
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                let Some(tx) = self.tx.take() else {
                    return Ok(());
                };
                if tx.skip {
                    return Ok(());
                }
                if tx.changes > 0 {
                    self.pending.push(tx.origin.xid);
                }
                if let Some(marker) = tx.marker {
                    match Snapshot::parse(&marker) {
                        Ok(watermark) => {
                            self.publish(&watermark, end_lsn).await?;
                            self.marker_xid = Some(tx.origin.xid);
                        }
                        Err(err) => warn!(error = %err, "changefeed capture: marker ignored"),
                    }
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Nothing delivered waits for the log: what the server has sent so far concerns
                // no watched table, and must not hold WAL back.
                if self.tx.is_none()
                    && !self.open
                    && self.pending.is_empty()
                    && self.chunk.len() == 0
                {
                    self.client.update_applied_lsn(wal_end);
                }
            }
            ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn message(&mut self, message: Message) -> Result<(), ChangefeedError> {
        match message {
            Message::Relation(relation) => {
                let missing: Vec<u32> = relation
                    .columns
                    .iter()
                    .map(|c| c.type_oid)
                    .filter(|oid| !self.type_oids.contains(oid))
                    .collect();
                if !missing.is_empty() {
                    self.type_oids.extend(missing);
                    let oids: Vec<u32> = self.type_oids.iter().copied().collect();
                    // On the marker connection: the log's may be in its append transaction.
                    self.types = TypeCatalog::load(&mut self.marker, &oids).await?;
                }
                self.relations.insert(relation.id, relation);
            }
            Message::Insert { relation, new } => {
                let new = self.row(relation, &new, None)?;
                self.push(relation, "I", None, Some(new)).await?;
            }
            Message::Update {
                relation, old, new, ..
            } => {
                let new_row = self.row(relation, &new, old.as_ref())?;
                let old_row = match &old {
                    Some(old) => Some(self.row(relation, old, None)?),
                    None => None,
                };
                self.push(relation, "U", old_row, Some(new_row)).await?;
            }
            Message::Delete { relation, old, .. } => {
                let old = self.row(relation, &old, None)?;
                self.push(relation, "D", Some(old), None).await?;
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    self.push(relation, "T", None, None).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A tuple as the JSON object `to_jsonb` gives for the row. A column whose value did not
    /// change and is stored out of line (TOAST) is not in an update's new tuple: it is taken
    /// from the old tuple, which `REPLICA IDENTITY FULL` makes whole.
    fn row(
        &self,
        relation: u32,
        tuple: &Tuple,
        old: Option<&Tuple>,
    ) -> Result<String, ChangefeedError> {
        let Some(rel) = self.relations.get(&relation) else {
            return Err(ChangefeedError::Capture(format!(
                "a change of relation {relation} came before its description"
            )));
        };
        let mut row = Map::new();
        for (i, column) in rel.columns.iter().enumerate() {
            let datum = match tuple.0.get(i) {
                Some(Datum::UnchangedToast) => old.and_then(|old| old.0.get(i)),
                other => other,
            };
            let value = match datum {
                None | Some(Datum::UnchangedToast) => {
                    warn!(
                        table = %rel.name,
                        column = %column.name,
                        "changefeed capture: an unchanged out-of-line value without the old \
                         row (is the table's REPLICA IDENTITY FULL?); left out"
                    );
                    continue;
                }
                Some(Datum::Null) => Json::Null,
                Some(Datum::Text(text)) => self
                    .types
                    .to_json(column.type_oid, text)
                    .unwrap_or_else(|_| Json::String(text.clone())),
                Some(Datum::Binary(_)) => {
                    return Err(ChangefeedError::Capture(
                        "pgoutput sent a binary value; the stream is in text mode".into(),
                    ))
                }
            };
            row.insert(column.name.clone(), value);
        }
        Ok(Json::Object(row).to_string())
    }

    async fn push(
        &mut self,
        table: u32,
        op: &str,
        old: Option<String>,
        new: Option<String>,
    ) -> Result<(), ChangefeedError> {
        let Some(tx) = &mut self.tx else {
            return Err(ChangefeedError::Capture(
                "a change outside a transaction".into(),
            ));
        };
        if tx.skip {
            return Ok(());
        }
        tx.changes += 1;
        self.chunk.push(&tx.origin, table, op, old, new);
        if self.chunk.len() >= CHUNK {
            self.flush_chunk().await?;
        }
        Ok(())
    }

    /// Writes the chunk inside the append transaction (opening it first).
    async fn flush_chunk(&mut self) -> Result<(), ChangefeedError> {
        if self.chunk.len() == 0 {
            return Ok(());
        }
        if !self.open {
            sqlx::query("BEGIN").execute(&mut self.log).await?;
            self.open = true;
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.appended_uncommitted += chunk.write(&mut self.log).await?;
        Ok(())
    }

    /// A marker arrived: append what came before it and make its snapshot the watermark.
    async fn publish(&mut self, watermark: &Snapshot, end: Lsn) -> Result<(), ChangefeedError> {
        self.flush_chunk().await?;
        if !self.open {
            sqlx::query("BEGIN").execute(&mut self.log).await?;
            self.open = true;
        }
        let moved = sqlx::query(
            "UPDATE feedgate.capture SET watermark = $1::text::pg_snapshot, \
                    appended_lsn = $2::text::pg_lsn, switching = false \
              WHERE generation = $3 AND appended_lsn IS NOT DISTINCT FROM $4::text::pg_lsn",
        )
        .bind(watermark.to_string())
        .bind(end.to_string())
        .bind(self.generation)
        .bind(lsn_text(self.appended))
        .execute(&mut self.log)
        .await?
        .rows_affected();
        if moved == 0 {
            let _ = sqlx::query("ROLLBACK").execute(&mut self.log).await;
            self.open = false;
            return Err(ChangefeedError::Capture(
                "another node leads capture now (this node's generation is stale)".into(),
            ));
        }
        // Readers may have more to read even without changes of ours: rows a trigger logged
        // (a partition's TRUNCATE, or before a switch) show once a watermark does.
        sqlx::query("SELECT pg_notify('feedgate_changes', '')")
            .execute(&mut self.log)
            .await?;
        sqlx::query("COMMIT").execute(&mut self.log).await?;
        self.metrics
            .capture_appended(std::mem::take(&mut self.appended_uncommitted));
        self.open = false;
        self.pending.retain(|&xid| !watermark.is_visible(xid));
        self.marker_asked = None;
        self.appended = end;
        self.reference = watermark.xmax();
        self.watermark = watermark.clone();
        self.client.update_applied_lsn(end);
        Ok(())
    }

    /// Reads the slot's lag and retained WAL for the metrics.
    async fn sample_slot(&mut self) -> Result<(), ChangefeedError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, \
                    (pg_current_wal_lsn() - restart_lsn)::int8 \
               FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(&mut self.marker)
        .await?;
        if let Some((lag, retained)) = row {
            let bytes = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
            self.metrics.capture_slot(bytes(lag), bytes(retained));
        }
        Ok(())
    }

    async fn ask_marker(&mut self) -> Result<(), ChangefeedError> {
        sqlx::query(WRITE_MARKER).execute(&mut self.marker).await?;
        self.marker_asked = Some(Instant::now());
        self.last_marker = Instant::now();
        Ok(())
    }
}

/// `NULL` for the zero position (nothing appended yet), else PostgreSQL's text form.
fn lsn_text(lsn: Lsn) -> Option<String> {
    (!lsn.is_zero()).then(|| lsn.to_pg_string())
}
