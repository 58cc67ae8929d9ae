//! One table subscription's start: snapshot (with the initial rows when asked for), `Ready`, then
//! the hand-off from the buffered changes to live delivery. See `fence` for the fence.
//!
//! The task sends through the connection's mailbox with waiting sends, within the mailbox's
//! waiting share (a slow client slows only its own snapshot, and the snapshot takes no room from
//! the connection's live events), and every send races the subscription's cancellation, so after
//! [`TableSubscription::stop`] returns nothing more for this subscription is queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use super::changes::{row_change_from_json, seen, Projection};
use super::fence::{Drain, Subscribers, TableState};
use super::resume::{catch_up, Resume, Target, SNAPSHOT_AND_WATERMARK};
use super::schema::unavailable;
use super::snapshot::Snapshot;
use super::tables::TableEntry;
use super::values::ColumnType;
use super::ChangefeedError;
use crate::cursor::encode_table_feed;
use crate::metrics::Metrics;
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::{encode_event, ChangeKind, Code, EventBody, Failure};
use crate::registry::{Registration, SubscriberKey};
use crate::row_filter::{RowFilter, SqlColumn, SqlParam};

/// An active table subscription, held by its session. Dropping it unsubscribes. Kept small:
/// a session holds one per subscription, topic or table, in one map.
pub struct TableSubscription {
    /// Its place among the table's subscribers; dropping it unsubscribes.
    registration: Registration<TableState>,
    /// Stops the start task.
    cancel: CancellationToken,
    closed: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl TableSubscription {
    /// Starts the snapshot and hand-off (once `Subscribed` has been queued) on `tasks`, the
    /// changefeed's tracker, which shutdown waits on; `cancel` stops it. The task logs in the
    /// caller's span (the subscriber's session).
    pub(super) fn start(
        run: Start,
        registration: Registration<TableState>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let closed = run.closed.clone();
        let stop = cancel.clone();
        let task = tasks.spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = run.run() => {}
                }
            }
            .in_current_span(),
        );
        Self {
            registration,
            cancel,
            closed,
            task: Some(task),
        }
    }

    /// Whether the server ended this subscription (a `SubscriptionClosed` was sent); its id is
    /// free again.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Unsubscribes and waits until the start task (if still running) has stopped, so that no
    /// event for this subscription is queued after this returns.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.registration.unsubscribe();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TableSubscription {
    fn drop(&mut self) {
        // The registration unsubscribes as it is dropped, after this.
        self.cancel.cancel();
    }
}

/// What the start task needs: the subscription's table, mailbox and snapshot settings.
pub(super) struct Start {
    pub(super) entry: Arc<TableEntry>,
    pub(super) subscribers: Subscribers,
    pub(super) key: SubscriberKey,
    pub(super) mailbox: Mailbox,
    pub(super) pool: PgPool,
    pub(super) include_initial: bool,
    /// The rows it may see, when a row-level rule or its own filter limits them.
    pub(super) filter: Option<Arc<RowFilter>>,
    /// The columns it asked for, when it did.
    pub(super) projection: Option<Arc<Projection>>,
    /// Set when the server ends the subscription.
    pub(super) closed: Arc<AtomicBool>,
    /// Where to resume from, instead of the initial rows.
    pub(super) resume: Option<Resume>,
    /// Turns for a snapshot transaction (`Shared::snapshots`).
    pub(super) turns: Arc<Semaphore>,
    /// Where snapshots are timed and counted.
    pub(super) metrics: Arc<Metrics>,
    /// Logical mode: how long a resume waits for the log to cover its cursor.
    pub(super) capture_wait: std::time::Duration,
}

impl Start {
    async fn run(self) {
        let id = self.key.subscription_id;
        match self.snapshot_then_live().await {
            Ok(()) => {}
            Err(failure) => {
                debug!(subscription_id = id, error = %failure, "table subscription closed");
                self.subscribers.unsubscribe(&self.entry, self.key);
                self.closed.store(true, Ordering::Release);
                let frame = encode_event(id, &[], EventBody::Closed(&failure));
                let _ = self.mailbox.send(Outbound::Frame(frame)).await;
            }
        }
    }

    async fn snapshot_then_live(&self) -> Result<(), Failure> {
        let since = self.snapshot().await?;
        let id = self.key.subscription_id;
        // Ready's cursor: everything the snapshot holds (the rows sent, or what a resume caught
        // up on); the buffered and live changes after it carry the reader's cursors.
        let position = encode_table_feed(self.entry.info.oid, &since.to_tx(), std::iter::empty());
        let ready = encode_event(id, &position, EventBody::Ready);
        if self.mailbox.send(Outbound::Frame(ready)).await.is_err() {
            return Ok(()); // the connection is closing
        }
        loop {
            match self.subscribers.drain(&self.entry, self.key, &since) {
                Drain::Items(items) => {
                    for (xid, event) in items {
                        if since.is_visible(xid) {
                            continue; // the snapshot already contains it
                        }
                        let item = Outbound::Event {
                            subscription_id: id,
                            event,
                        };
                        if self.mailbox.send(item).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Drain::Live | Drain::Gone => return Ok(()),
                Drain::Reset(failure) => return Err(failure),
                Drain::Overflowed => {
                    return Err(Failure::new(
                        Code::SlowConsumer,
                        "changes arrived faster than the initial snapshot was read; \
                         subscribe again",
                    )
                    .retryable(1000))
                }
            }
        }
    }

    /// Takes the subscription's snapshot in one REPEATABLE READ transaction, streaming the rows
    /// when `include_initial`; returns the snapshot that fences the live changes.
    async fn snapshot(&self) -> Result<Snapshot, Failure> {
        // Waits its turn (see `Shared::snapshots`): a burst of subscriptions, such as clients
        // reconnecting after a deploy, queues here instead of timing out on the pool.
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| unavailable(&"the changefeed is shutting down"))?;
        let started = std::time::Instant::now();
        let mut sent = 0;
        let mut tx = Snapshotting {
            conn: self.pool.acquire().await.map_err(|e| unavailable(&e))?,
            ended: false,
        };
        if let Some(resume) = &self.resume {
            // Logical mode: the log is complete up to the watermark only, which may lag
            // behind the cursor's snapshot, and behind what committed, by a few milliseconds.
            resume
                .wait_until_logged(&mut tx.conn, self.capture_wait)
                .await?;
        }
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx.conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let (text, watermark): (String, Option<String>) = sqlx::query_as(SNAPSHOT_AND_WATERMARK)
            .fetch_one(&mut *tx.conn)
            .await
            .map_err(|e| unavailable(&e))?;
        // A resume reads the log, complete up to the watermark in logical mode: that is what
        // fences the live changes then. The table's own rows are read under the transaction's
        // snapshot, which fences them in either mode.
        let since = match (&self.resume, watermark) {
            (Some(_), Some(watermark)) => watermark,
            _ => text,
        };
        let since = Snapshot::parse(&since).map_err(|e| unavailable(&e))?;
        if let Some(resume) = &self.resume {
            let target = Target {
                entry: &self.entry,
                filter: self.filter.as_deref(),
                projection: self.projection.as_deref(),
                mailbox: &self.mailbox,
                subscription_id: self.key.subscription_id,
            };
            catch_up(&mut tx.conn, resume, &since, target).await?;
        } else if self.include_initial {
            let info = &self.entry.info;
            // sql_name is regclass::text from the database: quoted, never client text. `r.*`
            // is the whole row even when the table has a column named like the alias.
            // A row filter is also given to the database as a prefilter (a superset of what
            // it lets through, so an index can serve a tenant's rows); each row is still
            // checked below.
            let (condition, params) = match &self.filter {
                Some(filter) => {
                    let types = self.entry.types();
                    filter.sql_prefilter(&|column| match types.get(column) {
                        Some(ColumnType::Int) => Some(SqlColumn::Integer),
                        Some(ColumnType::Text) => Some(SqlColumn::Text),
                        _ => None,
                    })
                }
                None => ("TRUE".to_owned(), Vec::new()),
            };
            let sql = format!(
                "SELECT to_jsonb(r.*) FROM {} AS r WHERE {condition}",
                info.sql_name
            );
            let mut query = sqlx::query_scalar::<_, serde_json::Value>(&sql);
            for param in params {
                query = match param {
                    SqlParam::Int(v) => query.bind(v),
                    SqlParam::Ints(v) => query.bind(v),
                    SqlParam::Text(v) => query.bind(v),
                    SqlParam::Texts(v) => query.bind(v),
                };
            }
            let mut rows = query.fetch(&mut *tx.conn);
            while let Some(json) = rows.try_next().await.map_err(|e| unavailable(&e))? {
                let types = self.entry.types();
                let change =
                    row_change_from_json(ChangeKind::Initial, info, &types, None, Some(json));
                // An INITIAL row is seen whole or not at all (a projection keeps every one).
                let filter = self.filter.as_deref();
                let projection = self.projection.as_deref();
                let Some(change) = seen(change, filter, projection, &info.key_columns) else {
                    continue; // a row it may not see
                };
                let frame = encode_event(self.key.subscription_id, &[], EventBody::Change(&change));
                if self.mailbox.send(Outbound::Frame(frame)).await.is_err() {
                    return Ok(since);
                }
                sent += 1;
            }
        }
        sqlx::query("COMMIT")
            .execute(&mut *tx.conn)
            .await
            .map_err(|e| unavailable(&e))?;
        tx.ended = true;
        self.metrics.snapshot(started.elapsed(), sent);
        Ok(since)
    }
}

/// A pooled connection in a subscription's snapshot transaction. The task can be cancelled at any
/// await (an unsubscribe), and a connection left inside the transaction, or in the middle of its
/// `BEGIN`, must not go back to the pool (the next snapshot's `BEGIN` would fail: sqlx's own
/// `Pool::begin` is not cancel safe, launchbadge/sqlx#4393): unless the transaction ended, the
/// connection is closed instead.
struct Snapshotting {
    conn: PoolConnection<Postgres>,
    /// `COMMIT` went through: the connection may be reused.
    ended: bool,
}

impl Drop for Snapshotting {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

/// The failure a subscription ends with when its table is truncated.
pub(super) fn truncated(table: &str) -> Failure {
    Failure::new(
        Code::SourceReset,
        format!("table {table} was truncated; subscribe again with include_initial"),
    )
    .retryable(0)
    .detail("table", table)
}

/// The failure a subscription ends with when its table logged a change that cannot be read
/// ([`ChangefeedError::UnknownOp`]): the change is not delivered, so what the client holds may
/// be stale.
pub(super) fn unreadable_change(table: &str, err: &ChangefeedError) -> Failure {
    Failure::new(
        Code::SourceReset,
        format!("table {table}: {err}; subscribe again with include_initial"),
    )
    .retryable(0)
    .detail("table", table)
}
