//! Capture from the write-ahead log (`changefeed.capture = logical`): one elected node reads
//! feedgate's logical replication slot (`pgoutput`) and appends the decoded changes to the same
//! change log the row triggers fill, so the reader, resume, retention and pruning work as they
//! do in trigger mode, and writers' transactions do no capture work.
//!
//! - [`prepare`] decides once per database how it captures (the first node to start decides
//!   for all; the `feedgate.capture` row records it) and, for logical mode, creates the slot and
//!   the publication.
//! - [`run`] is every node's capture task: while the database is in logical mode it tries to
//!   lead ([`election`]: an advisory lock taken on the replication connection itself, so it
//!   ends with the stream), and the leader streams ([`stream`], appending with [`append`]).
//! - Readers poll up to the **watermark**, a snapshot whose every visible transaction is already
//!   in the log, instead of `pg_current_snapshot()`: see [`stream`] for how markers make it.
//!
//! docs/changefeeds.md ("Capture from the write-ahead log") has the design and its trade-offs.

mod append;
mod election;
mod stream;

pub(super) use stream::WRITE_MARKER;

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationConfig};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{ChangefeedError, ChangefeedSettings, Shared};
use crate::config::CaptureMode;

/// The publication logical mode adds watched tables to (one per database).
pub(super) const PUBLICATION: &str = "feedgate";
/// The advisory lock the leader holds on its replication connection.
pub(super) const LEADER_LOCK: i64 = 0x6665_6564_6761_7465; // "feedgate"
/// How often a follower tries to lead.
const FOLLOWER_RETRY: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Decides (the first node on a database) or reads (every other) how changes are captured, and
/// says which and why once. For logical mode the slot and publication exist when it returns.
pub(super) async fn prepare(settings: &ChangefeedSettings) -> Result<(), ChangefeedError> {
    let mut conn = settings.connect.clone().connect().await?;
    let wanted = settings.tuning.capture;
    let recorded: Option<String> = sqlx::query_scalar("SELECT mode FROM feedgate.capture")
        .fetch_one(&mut conn)
        .await?;
    match recorded.as_deref() {
        Some("logical") => {
            if wanted == CaptureMode::Trigger {
                error!(
                    "changefeed.capture is trigger, but this database captures with logical \
                     decoding (decided by the first node): following the database"
                );
            }
        }
        Some(_) if wanted == CaptureMode::Trigger => {
            info!("changefeed capture: trigger (recorded for this database)");
        }
        // A database on triggers switches when logical decoding is possible (and wanted).
        Some(_) | None => decide(settings, &mut conn, wanted).await?,
    }
    conn.close().await?;
    Ok(())
}

/// The decision of the first node on a database (or of the first that may switch it from
/// triggers to logical decoding).
async fn decide(
    settings: &ChangefeedSettings,
    conn: &mut PgConnection,
    wanted: CaptureMode,
) -> Result<(), ChangefeedError> {
    let slot = settings.slot_name();
    let verdict = match wanted {
        CaptureMode::Trigger => Err("changefeed.capture = trigger".to_owned()),
        CaptureMode::Auto | CaptureMode::Logical => logical_possible(settings, conn, &slot).await,
    };
    let reason = match verdict {
        Ok(reason) => reason,
        Err(why) if wanted == CaptureMode::Logical => return Err(ChangefeedError::Capture(why)),
        Err(why) => {
            record_trigger(conn).await?;
            info!("changefeed capture: trigger ({why})");
            return Ok(());
        }
    };
    if become_logical(conn, &slot).await? {
        info!("changefeed capture: logical ({reason}, slot {slot}; switched from row triggers)");
    } else {
        info!("changefeed capture: logical ({reason}, slot {slot})");
    }
    Ok(())
}

/// Whether logical decoding can be used, and if so a slot is made: `Ok(why)` or `Err(why not)`.
async fn logical_possible(
    settings: &ChangefeedSettings,
    conn: &mut PgConnection,
    slot: &str,
) -> Result<String, String> {
    let db = |e: sqlx::Error| format!("cannot check: {e}");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if version < 140_000 {
        return Err(format!(
            "PostgreSQL {version} is older than 14, which logical capture needs"
        ));
    }
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if wal_level != "logical" {
        return Err(format!(
            "wal_level is {wal_level}; logical decoding needs wal_level = logical and a server \
             restart"
        ));
    }
    // The one test that covers the role's REPLICATION attribute, a managed service's
    // equivalent and pg_hba.conf: open a replication connection.
    let config = settings
        .replication_config(slot, PUBLICATION)
        .map_err(|e| e.to_string())?;
    let mut client = ReplicationClient::connect_gated(config)
        .await
        .map_err(|e| format!("no replication connection: {e}"))?;
    let identified = client.identify_system().await;
    client.abort(); // a gated session that never started
    identified.map_err(|e| format!("no replication connection: {e}"))?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
    )
    .bind(slot)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    // The publication must exist before the slot's start: pgoutput looks it up as of each
    // decoded change, and fails ("publication does not exist") for changes from before it.
    let published: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(PUBLICATION)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !published {
        sqlx::query(&format!(
            "CREATE PUBLICATION {PUBLICATION} WITH (publish_via_partition_root = true)"
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| format!("cannot create publication {PUBLICATION}: {e}"))?;
    }
    if !exists {
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(slot)
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("cannot create replication slot {slot}: {e}"))?;
    }
    Ok(format!(
        "{}wal_level = logical, replication allowed",
        if settings.tuning.capture == CaptureMode::Auto {
            "auto: "
        } else {
            ""
        }
    ))
}

/// Records trigger mode unless another node recorded a mode first.
async fn record_trigger(conn: &mut PgConnection) -> Result<(), ChangefeedError> {
    sqlx::query("UPDATE feedgate.capture SET mode = 'trigger' WHERE mode IS NULL")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the database capture with logical decoding, unless another node did first:
/// `feedgate.switch_to_logical` moves every watched table from its triggers to the publication
/// (see the migration; `logical_possible` made the publication and the slot). Returns whether tables were
/// switched from triggers.
async fn become_logical(conn: &mut PgConnection, slot: &str) -> Result<bool, ChangefeedError> {
    let mut tx = conn.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT mode FROM feedgate.capture FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    if current.as_deref() == Some("logical") {
        tx.rollback().await?;
        return Ok(false);
    }
    let watched: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM feedgate.watched)")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("SELECT feedgate.switch_to_logical($1, $2)")
        .bind(slot)
        .bind(PUBLICATION)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(watched)
}

/// Every node's capture task, until shutdown: in logical mode, lead when the lock is free.
pub(super) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Trigger mode can become logical while this node runs (another node switches the
        // database): look every few seconds, on a pooled connection, without leading.
        let mode: Result<Option<String>, _> = sqlx::query_scalar(
            "SELECT CASE WHEN to_regclass('feedgate.capture') IS NOT NULL \
                         THEN (SELECT mode FROM feedgate.capture) END",
        )
        .fetch_one(&shared.pool)
        .await;
        let outcome = match mode {
            Ok(Some(mode)) if mode == "logical" => tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = election::lead(&shared, &shutdown) => outcome,
            },
            Ok(Some(_)) => Ok(election::Led::NotLogical),
            Ok(None) => Ok(election::Led::Undecided),
            Err(err) => Err(ChangefeedError::Database(err)),
        };
        if outcome.is_ok() {
            backoff = MIN_BACKOFF;
        }
        let wait = match outcome {
            Ok(election::Led::NotLogical) => FOLLOWER_RETRY,
            Ok(election::Led::Follower) => FOLLOWER_RETRY,
            Ok(election::Led::Undecided) => Duration::from_millis(100),
            Ok(election::Led::Stopped) => return,
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff, "changefeed capture stopped");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(wait) => {}
        }
    }
}

impl ChangefeedSettings {
    /// The replication slot's name: `changefeed.slot`, or `feedgate_<database>` (slot names
    /// are the cluster's; lower-case letters, digits and `_`, at most 63 bytes).
    pub(super) fn slot_name(&self) -> String {
        if !self.tuning.slot.is_empty() {
            return self.tuning.slot.clone();
        }
        let database = self.connect.get_database().unwrap_or("postgres");
        let mut name: String = format!("feedgate_{database}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        name.truncate(63);
        name
    }

    /// A replication connection's settings, from the database URL. The session's date, time
    /// and number formats are pinned, so the text form of decoded values does not depend on the
    /// server's defaults.
    pub(super) fn replication_config(
        &self,
        slot: &str,
        publication: &str,
    ) -> Result<ReplicationConfig, ChangefeedError> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| ChangefeedError::Capture(format!("database_url: {e}")))?;
        let password = url
            .password()
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let host = match self.connect.get_socket() {
            Some(socket) => socket.to_string_lossy().into_owned(),
            None => self.connect.get_host().to_owned(),
        };
        let config = ReplicationConfig::new(
            host,
            self.connect.get_username(),
            password,
            self.connect.get_database().unwrap_or("postgres"),
            slot,
            publication,
        )
        .with_port(self.connect.get_port())
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_buffer_size(1024)
        .with_application_name("feedgate-capture")
        .with_options(
            "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
             -c extra_float_digits=3 -c bytea_output=hex",
        );
        Ok(config)
    }
}
