//! Who leads capture: every node tries for the capture lock on a replication connection of its
//! own (`pg_try_advisory_lock`, held by that connection's session, so it ends with the stream);
//! the winner fences off any earlier leader (`generation`), checks its slot (invalidated or
//! missing: [`reset`]) and streams ([`stream::run`]).

use pgwire_replication::{Lsn, ReplicationClient};
use sqlx::{ConnectOptions as _, PgConnection, Row as _};
use tokio_util::sync::CancellationToken;

use super::super::snapshot::Snapshot;
use super::super::{ChangefeedError, Shared};
use super::{stream, LEADER_LOCK};

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
                watermark::text AS watermark, switching FROM feedgate.capture",
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
    let switching: bool = row.try_get("switching")?;

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
            let leading = stream::Leading {
                client,
                log,
                slot: slot.clone(),
                generation,
                appended,
                watermark,
                switching,
            };
            return stream::run(leading, settings, shutdown).await;
        }
        None => {}
    }
    client.abort(); // a gated session that never started
    reset(&mut log, &slot, generation).await?;
    settings.metrics.capture_reset();
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

fn parse_lsn(text: Option<&str>) -> Result<Lsn, ChangefeedError> {
    match text {
        None => Ok(Lsn(0)),
        Some(text) => Lsn::parse(text)
            .map_err(|e| ChangefeedError::Capture(format!("unreadable LSN {text:?}: {e}"))),
    }
}

pub(super) fn replication(err: pgwire_replication::PgWireError) -> ChangefeedError {
    ChangefeedError::Capture(format!("replication connection: {err}"))
}
