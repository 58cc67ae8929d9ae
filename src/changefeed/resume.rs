//! Resuming a table subscription from a cursor: which logged changes it has not had yet, and
//! whether the log still holds them all. What a position says is `cursor::TablePosition`'s doc.
//!
//! The subscription's task runs the catch-up in its own REPEATABLE READ transaction, the one
//! whose snapshot fences the live changes (see `fence`): it sends, in log order, every change
//! visible in that snapshot that the position does not cover, then `Ready`; the changes the
//! reader fanned out meanwhile were buffered and are sent after, minus those the snapshot holds.
//! So the shared reader neither waits for a resume nor makes one wait.
//!
//! The position covers every change of the table, whatever the subscriber's row filter let it
//! see: the catch-up passes each change through the same filter as live delivery, so a row that
//! moved into view arrives as an insert and a row it may not see does not arrive.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::{PgConnection, PgPool, Row as _};
use tokio::time::sleep;

use super::capture::WRITE_MARKER;
use super::changes::{row_change_from_json, seen, Projection};
use super::reader::{committed_micros_sql, LoggedOp};
use super::snapshot::Snapshot;
use super::subscription::{truncated, unreadable_change};
use super::tables::{TableEntry, TableInfo};
use super::ChangefeedError;
use crate::cursor::{encode_table_feed, Cursor, TablePosition};
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::{encode_event, Code, EventBody, Failure};
use crate::row_filter::RowFilter;

/// The logged changes of one table that a position does not cover, visible in the
/// transaction's snapshot, in log order. `$4`/`$5`: the position's `then` snapshots and ids.
/// `$6`: the snapshot that fences the live changes. In trigger mode it is the transaction's own
/// and the condition changes nothing; in logical mode it is the watermark, and a transaction
/// appended ahead of it is left to the reader (or it would come twice).
const CATCH_UP: &str = concat!(
    "SELECT c.id, c.xid::text AS xid, c.op::text AS op, c.old_row, c.new_row, ",
    committed_micros_sql!(),
    " AS committed_micros \
  FROM feedgate.changes c \
 WHERE c.table_oid = $1::int8::oid \
   AND c.xid >= $2::text::xid8 \
   AND NOT pg_visible_in_snapshot(c.xid, $3::text::pg_snapshot) \
   AND NOT EXISTS ( \
       SELECT 1 FROM unnest($4::text[], $5::int8[]) AS t(snapshot, last_id) \
        WHERE pg_visible_in_snapshot(c.xid, t.snapshot::pg_snapshot) AND c.id <= t.last_id) \
   AND pg_visible_in_snapshot(c.xid, $6::text::pg_snapshot) \
 ORDER BY c.id"
);

/// `pg_current_snapshot()` and, in logical mode, the watermark (NULL in trigger mode): what a
/// subscription's snapshot and a resume's wait read.
pub(super) const SNAPSHOT_AND_WATERMARK: &str = "SELECT pg_current_snapshot()::text, \
            (SELECT watermark::text FROM feedgate.capture WHERE mode = 'logical')";

/// A client's position, checked: its snapshots are ones PostgreSQL could have taken.
pub(crate) struct Resume {
    /// As the client sent it: catch-up cursors extend it.
    position: TablePosition,
    base: Snapshot,
    then: Vec<(Snapshot, i64)>,
}

impl Resume {
    /// Reads `resume_from`; anything but a sound table feed position is `RESUME_UNAVAILABLE`.
    pub(crate) fn parse(cursor: &[u8], table: &str) -> Result<Self, Failure> {
        let position = match Cursor::decode(cursor) {
            Ok(Cursor::TableFeed(position)) => position,
            Ok(Cursor::Table { .. }) => {
                return Err(unavailable(
                    table,
                    "the cursor is from a feedgate before table feeds could resume",
                ))
            }
            Ok(_) => {
                return Err(unavailable(
                    table,
                    "the cursor is a topic's, not a table feed's",
                ))
            }
            Err(err) => {
                return Err(unavailable(
                    table,
                    &format!("the cursor cannot be read: {err}"),
                ))
            }
        };
        let damaged = || unavailable(table, "the cursor is damaged (impossible snapshots)");
        let base = Snapshot::from_tx(&position.base).ok_or_else(damaged)?;
        let then = position
            .then
            .iter()
            .map(|(snapshot, id)| Snapshot::from_tx(snapshot).map(|s| (s, *id)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(damaged)?;
        Ok(Self {
            position,
            base,
            then,
        })
    }

    /// A position resumes only the table it was taken on.
    pub(crate) fn check_table(&self, info: &TableInfo) -> Result<(), Failure> {
        if self.position.table_oid == info.oid {
            return Ok(());
        }
        Err(unavailable(
            &info.name,
            "the cursor is another table's (or the table was dropped and created again)",
        ))
    }

    /// Refuses a position that pruning may have reached into: a change after it may be gone.
    /// Checked at subscribe (to answer the request) and again in the catch-up's transaction
    /// (to be sure).
    pub(crate) async fn check_kept(
        &self,
        conn: &mut PgConnection,
        table: &str,
    ) -> Result<(), Failure> {
        let below: Option<String> = sqlx::query_scalar("SELECT below::text FROM feedgate.pruned")
            .fetch_optional(conn)
            .await
            .map_err(|e| super::schema::unavailable(&e))?;
        let below = below.and_then(|text| text.parse::<u64>().ok());
        match below {
            Some(below) if self.base.xmin() < below => Err(unavailable(
                table,
                "changes after the cursor were pruned from the change log \
                 (changefeed.retention, changefeed.max_log_rows)",
            )),
            _ => Ok(()),
        }
    }

    /// Logical mode: waits until the watermark covers this position and every transaction
    /// committed before the wait began. The first so that the fence (the watermark) never
    /// delivers again what the position already has (a position from an initial snapshot can
    /// be a few milliseconds ahead of the watermark); the second so that `Ready` means caught
    /// up, as in trigger mode. A marker written here moves the watermark on. Trigger mode:
    /// returns at once. After `wait`, `SOURCE_UNAVAILABLE` (retryable).
    pub(crate) async fn wait_until_logged(
        &self,
        conn: &mut PgConnection,
        wait: Duration,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let db = |e: sqlx::Error| super::schema::unavailable(&e);
        let parse = |text: &str| Snapshot::parse(text).map_err(|e| super::schema::unavailable(&e));
        let mut now: Option<Snapshot> = None;
        loop {
            let (current, watermark): (String, Option<String>) =
                sqlx::query_as(SNAPSHOT_AND_WATERMARK)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
            let Some(watermark) = watermark else {
                return Ok(()); // trigger mode
            };
            let watermark = parse(&watermark)?;
            let now = match &mut now {
                Some(now) => now,
                None => now.insert(parse(&current)?),
            };
            let covered = watermark.covers(now)
                && watermark.covers(&self.base)
                && self
                    .then
                    .iter()
                    .all(|(snapshot, _)| watermark.covers(snapshot));
            if covered {
                return Ok(());
            }
            if started.elapsed() >= wait {
                return Err(super::schema::unavailable(
                    &"the change log has not caught up with the cursor (changefeed.capture_wait)",
                ));
            }
            sqlx::query(WRITE_MARKER)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// [`check_kept`](Self::check_kept) on a connection of `pool`.
    pub(crate) async fn check_kept_in(&self, pool: &PgPool, table: &str) -> Result<(), Failure> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| super::schema::unavailable(&e))?;
        self.check_kept(&mut conn, table).await
    }
}

/// What a catch-up sends to: the subscription's table, filter and mailbox.
pub(crate) struct Target<'a> {
    pub(crate) entry: &'a TableEntry,
    pub(crate) filter: Option<&'a RowFilter>,
    pub(crate) projection: Option<&'a Projection>,
    pub(crate) mailbox: &'a Mailbox,
    pub(crate) subscription_id: u64,
}

/// Sends every change `resume` does not cover that the transaction on `conn` (whose snapshot is
/// `since`) sees, in log order, each with the cursor right after it. A truncation or an
/// unreadable change in between ends the subscription with `SOURCE_RESET` (the client rebuilds).
pub(crate) async fn catch_up(
    conn: &mut PgConnection,
    resume: &Resume,
    since: &Snapshot,
    target: Target<'_>,
) -> Result<(), Failure> {
    let info = &target.entry.info;
    resume.check_kept(conn, &info.name).await?;
    let then_texts: Vec<String> = resume.then.iter().map(|(s, _)| s.to_string()).collect();
    let then_ids: Vec<i64> = resume.then.iter().map(|(_, id)| *id).collect();
    let since_tx = since.to_tx();
    let mut rows = sqlx::query(CATCH_UP)
        .bind(i64::from(info.oid))
        .bind(resume.base.xmin().to_string())
        .bind(resume.base.to_string())
        .bind(then_texts)
        .bind(then_ids)
        .bind(since.to_string())
        .fetch(conn);
    let db = |e: sqlx::Error| super::schema::unavailable(&e);
    while let Some(row) = rows.try_next().await.map_err(db)? {
        let id: i64 = row.try_get("id").map_err(db)?;
        let op: String = row.try_get("op").map_err(db)?;
        let kind = match LoggedOp::parse(id, &op) {
            Ok(LoggedOp::Row(kind)) => kind,
            Ok(LoggedOp::Truncate) => return Err(truncated(&info.name)),
            Err(err) => return Err(unreadable_change(&info.name, &err)),
        };
        let xid: String = row.try_get("xid").map_err(db)?;
        let types = target.entry.types();
        let mut change = row_change_from_json(
            kind,
            info,
            &types,
            row.try_get("old_row").map_err(db)?,
            row.try_get("new_row").map_err(db)?,
        );
        // As the reader does: a transaction id that is not a number is not guessed at.
        change.transaction_id = xid
            .parse()
            .map_err(|_| unreadable_change(&info.name, &ChangefeedError::BadXid(xid)))?;
        change.commit_time_micros = row.try_get("committed_micros").map_err(db)?;
        let Some(change) = seen(change, target.filter, target.projection, &info.key_columns) else {
            continue; // a row it may not see, or an update of columns it did not ask for
        };
        let then = resume.position.then.iter().map(|(s, n)| (s, *n));
        let cursor = encode_table_feed(
            info.oid,
            &resume.position.base,
            then.chain(std::iter::once((&since_tx, id))),
        );
        let frame = encode_event(target.subscription_id, &cursor, EventBody::Change(&change));
        if target.mailbox.send(Outbound::Frame(frame)).await.is_err() {
            return Ok(()); // the connection is closing
        }
    }
    Ok(())
}

fn unavailable(table: &str, why: &str) -> Failure {
    Failure::new(
        Code::ResumeUnavailable,
        format!("cannot resume table {table}: {why}; subscribe again with include_initial"),
    )
    .detail("table", table)
}
