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
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde_json::{Map, Value as Json};
use sqlx::{ConnectOptions as _, PgConnection, Row as _};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::pgoutput::{self, Datum, Message, Relation, Tuple};
use super::super::snapshot::Snapshot;
use super::super::values::pgoutput::TypeCatalog;
use super::super::xid::widen;
use super::super::{ChangefeedError, Shared};
use super::LEADER_LOCK;

/// The logical message prefix of markers.
pub(crate) const MARKER_PREFIX: &str = "feedgate";
/// Rows written per statement.
const CHUNK: usize = 1000;
/// A marker asked for and not seen within this is asked for again.
const MARKER_RETRY: Duration = Duration::from_secs(1);
/// How long the stream may be silent before the leader checks on its marker.
const TICK: Duration = Duration::from_millis(100);

/// Writes a marker: a watermark candidate that the leader publishes when it arrives.
pub(crate) const WRITE_MARKER: &str =
    "SELECT pg_logical_emit_message(true, 'feedgate', pg_current_snapshot()::text)::text";

const APPEND: &str = "\
INSERT INTO feedgate.changes (xid, table_oid, op, old_row, new_row, logged_at, commit_lsn) \
SELECT u.xid::xid8, u.t::oid, u.op::\"char\", u.old::jsonb, u.new::jsonb, \
       timestamptz '2000-01-01 00:00:00+00' + u.ts * interval '1 microsecond', u.lsn::pg_lsn \
  FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[]) \
       WITH ORDINALITY AS u(xid, t, op, old, new, ts, lsn, n) \
 ORDER BY u.n";

/// How a turn at leading ended.
pub(super) enum Led {
    /// The database captures with triggers: nothing to lead.
    NotLogical,
    /// Another node leads (or just did): try again later.
    Follower,
    /// No node has migrated the database or decided how it captures yet (it is about to).
    Undecided,
    /// Shutdown.
    Stopped,
}

/// Tries to lead; as leader, streams until shutdown or a failure.
pub(super) async fn lead(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<Led, ChangefeedError> {
    let settings = &shared.settings;
    let mut log = settings
        .connect
        .clone()
        .application_name("feedgate-capture-log")
        .connect()
        .await?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('feedgate.capture') IS NOT NULL")
        .fetch_one(&mut log)
        .await?;
    if !migrated {
        return Ok(Led::Undecided); // the reader applies the migrations first
    }
    let row = sqlx::query(
        "SELECT mode, slot_name, publication, appended_lsn::text AS appended, \
                watermark::text AS watermark FROM feedgate.capture",
    )
    .fetch_one(&mut log)
    .await?;
    let mode: Option<String> = row.try_get("mode")?;
    match mode.as_deref() {
        Some("logical") => {}
        Some(_) => return Ok(Led::NotLogical),
        None => return Ok(Led::Undecided),
    }
    let slot: String = row.try_get("slot_name")?;
    let publication: String = row.try_get("publication")?;
    let appended: Option<String> = row.try_get("appended")?;
    let appended = parse_lsn(appended.as_deref())?;
    let watermark: String = row.try_get("watermark")?;
    let watermark = Snapshot::parse(&watermark)?;

    let config = settings
        .replication_config(&slot, &publication)?
        .with_start_lsn(appended)
        .with_ack_lsn(appended);
    let mut client = ReplicationClient::connect_gated(config)
        .await
        .map_err(replication)?;
    let granted = client
        .simple_query(&format!("SELECT pg_try_advisory_lock({LEADER_LOCK})"))
        .await
        .map_err(replication)?;
    let granted = granted
        .first()
        .and_then(|row| row.first())
        .and_then(|value| value.as_deref())
        == Some(b"t".as_slice());
    if !granted {
        client.abort(); // a gated session that never started
        return Ok(Led::Follower);
    }
    // Leading: fence off any earlier leader, and check nobody appended since we looked.
    let row = sqlx::query(
        "UPDATE feedgate.capture SET generation = generation + 1 \
         RETURNING generation, appended_lsn::text AS appended",
    )
    .fetch_one(&mut log)
    .await?;
    let generation: i64 = row.try_get("generation")?;
    let now_appended: Option<String> = row.try_get("appended")?;
    if parse_lsn(now_appended.as_deref())? != appended {
        client.abort(); // a gated session that never started
        return Ok(Led::Follower);
    }
    let status: Option<Option<String>> =
        sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .fetch_optional(&mut log)
            .await?;
    match status {
        Some(Some(status)) if status == "lost" => {}
        Some(_) => {
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
                log,
                marker,
                generation,
                appended,
                reference: watermark.xmax(),
                watermark,
                idle_marker: settings.tuning.idle_poll,
                last_marker: Instant::now(),
                marker_xid: None,
                relations: HashMap::new(),
                types: TypeCatalog::default(),
                type_oids: HashSet::new(),
                tx: None,
                open: false,
                chunk: Chunk::default(),
                pending: false,
                marker_asked: None,
            };
            let outcome = leader.stream(shutdown).await;
            let _ = timeout(Duration::from_secs(2), leader.client.shutdown()).await;
            leader.client.abort();
            return outcome;
        }
        None => {}
    }
    client.abort(); // a gated session that never started
    reset(&mut log, &slot, generation).await?;
    Ok(Led::Follower)
}

/// The slot is gone or invalidated: the changes between the last append and a new slot are
/// lost to the log. Every watched table gets a reset entry (its subscriptions end with
/// `SOURCE_RESET` and clients rebuild), pruning's mark moves past the gap (cursors from before
/// it answer `RESUME_UNAVAILABLE`), and capture starts again from the new slot.
async fn reset(log: &mut PgConnection, slot: &str, generation: i64) -> Result<(), ChangefeedError> {
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *log)
    .await?;
    tracing::error!(
        slot,
        wal_status = reason.as_deref().unwrap_or("missing"),
        "changefeed capture: the replication slot was invalidated or dropped; changes since \
         the last append are lost, subscriptions of watched tables end with SOURCE_RESET"
    );
    if reason.is_some() {
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut *log)
            .await?;
    }
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(slot)
        .execute(&mut *log)
        .await?;
    let mut tx = sqlx::Connection::begin(&mut *log).await?;
    sqlx::query(
        "INSERT INTO feedgate.changes (table_oid, op) SELECT table_oid, 'T' FROM feedgate.watched",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO feedgate.pruned (below) VALUES (pg_current_xact_id()) \
         ON CONFLICT (singleton) DO UPDATE SET below = greatest(feedgate.pruned.below, EXCLUDED.below)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE feedgate.capture SET appended_lsn = \
             (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1) \
          WHERE generation = $2",
    )
    .bind(slot)
    .bind(generation)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify('feedgate_changes', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A source transaction being received.
struct SourceTx {
    xid: u64,
    commit_micros: i64,
    commit_lsn: Lsn,
    /// Already in the log (it ended at or before `appended_lsn`): a replay after a restart.
    skip: bool,
    changes: usize,
    marker: Option<String>,
}

/// Rows to append, column by column (the statement's arrays).
#[derive(Default)]
struct Chunk {
    xid: Vec<String>,
    table: Vec<i64>,
    op: Vec<String>,
    old: Vec<Option<String>>,
    new: Vec<Option<String>>,
    committed: Vec<i64>,
    lsn: Vec<String>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.xid.len()
    }

    fn push(
        &mut self,
        tx: &SourceTx,
        table: u32,
        op: &str,
        old: Option<String>,
        new: Option<String>,
    ) {
        self.xid.push(tx.xid.to_string());
        self.table.push(i64::from(table));
        self.op.push(op.to_owned());
        self.old.push(old);
        self.new.push(new);
        self.committed.push(tx.commit_micros);
        self.lsn.push(tx.commit_lsn.to_string());
    }
}

struct Leader {
    client: ReplicationClient,
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
    relations: HashMap<u32, Relation>,
    types: TypeCatalog,
    type_oids: HashSet<u32>,
    tx: Option<SourceTx>,
    /// Whether the append transaction is open.
    open: bool,
    chunk: Chunk,
    /// Transactions with changes were delivered since the last watermark.
    pending: bool,
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
            let overdue = self
                .marker_asked
                .is_some_and(|asked| asked.elapsed() > MARKER_RETRY);
            if self.pending && (self.marker_asked.is_none() || overdue) {
                self.ask_marker().await?;
            } else if !self.pending
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
                    xid: widen(xid, self.reference),
                    commit_micros: commit_time_micros,
                    commit_lsn: final_lsn,
                    skip: final_lsn < self.appended,
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
                if prefix == MARKER_PREFIX {
                    if let Some(tx) = &mut self.tx {
                        tx.marker = Some(String::from_utf8_lossy(&content).into_owned());
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
                    self.pending = true;
                }
                if let Some(marker) = tx.marker {
                    match Snapshot::parse(&marker) {
                        Ok(watermark) => {
                            self.publish(&watermark, end_lsn).await?;
                            self.marker_xid = Some(tx.xid);
                        }
                        Err(err) => warn!(error = %err, "changefeed capture: marker ignored"),
                    }
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Nothing delivered waits for the log: what the server has sent so far concerns
                // no watched table, and must not hold WAL back.
                if self.tx.is_none() && !self.open && !self.pending && self.chunk.len() == 0 {
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
                    let conn = self.marker_connection();
                    self.types = TypeCatalog::load(conn, &oids).await?;
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

    fn marker_connection(&mut self) -> &mut PgConnection {
        &mut self.marker
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
        self.chunk.push(tx, table, op, old, new);
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
        sqlx::query(APPEND)
            .bind(chunk.xid)
            .bind(chunk.table)
            .bind(chunk.op)
            .bind(chunk.old)
            .bind(chunk.new)
            .bind(chunk.committed)
            .bind(chunk.lsn)
            .execute(&mut self.log)
            .await?;
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
                    appended_lsn = $2::text::pg_lsn \
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
        if self.pending {
            sqlx::query("SELECT pg_notify('feedgate_changes', '')")
                .execute(&mut self.log)
                .await?;
        }
        sqlx::query("COMMIT").execute(&mut self.log).await?;
        self.open = false;
        self.pending = false;
        self.marker_asked = None;
        self.appended = end;
        self.reference = watermark.xmax();
        self.watermark = watermark.clone();
        self.client.update_applied_lsn(end);
        Ok(())
    }

    async fn ask_marker(&mut self) -> Result<(), ChangefeedError> {
        sqlx::query(WRITE_MARKER).execute(&mut self.marker).await?;
        self.marker_asked = Some(Instant::now());
        self.last_marker = Instant::now();
        Ok(())
    }
}

fn parse_lsn(text: Option<&str>) -> Result<Lsn, ChangefeedError> {
    match text {
        None => Ok(Lsn(0)),
        Some(text) => Lsn::parse(text)
            .map_err(|e| ChangefeedError::Capture(format!("unreadable LSN {text:?}: {e}"))),
    }
}

/// `NULL` for the zero position (nothing appended yet), else PostgreSQL's text form.
fn lsn_text(lsn: Lsn) -> Option<String> {
    (!lsn.is_zero()).then(|| lsn.to_pg_string())
}

fn replication(err: pgwire_replication::PgWireError) -> ChangefeedError {
    ChangefeedError::Capture(format!("replication connection: {err}"))
}
