//! Table subscribers and the fan-out of row changes to them. No I/O.
//!
//! Every table subscription starts **pending**: the reader appends each change of its table to
//! the subscription's buffer (bounded by `changefeed.snapshot_buffer`) while the subscription's
//! own task takes its snapshot and streams the initial rows. The task then drains the buffer,
//! dropping every change whose transaction is visible in its snapshot (the snapshot already
//! contains it), and switches the subscription to **live** under the table's lock, after which
//! the reader delivers directly, still dropping changes visible in that snapshot. A buffer that
//! overflows marks the subscription failed; its task ends it with a coded `SubscriptionClosed`.

use std::cell::LazyCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::changes::{apply_view, view_through, View};
use super::snapshot::Snapshot;
use super::values::ColumnType;
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::{share_event, EventBody, Failure, RowChange, SharedEvent};
use crate::registry::SubscriberKey;
use crate::row_filter::RowFilter;

/// A watched table, as resolved from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// pg_class oid; what the log records.
    pub(crate) oid: u32,
    /// `schema.table`, for `RowChange.table`.
    pub(crate) name: String,
    /// The table as a safely quoted SQL name (`regclass::text`), for the snapshot query.
    pub(crate) sql_name: String,
    /// Primary key columns, in key order.
    pub(crate) key_columns: Vec<String>,
    /// Schema and table name as PostgreSQL stores them, for permission checks.
    pub(crate) schema: String,
    pub(crate) relname: String,
}

/// One table's subscribers and what the reader needs to convert its rows.
pub(crate) struct TableEntry {
    pub(crate) info: TableInfo,
    types: RwLock<Arc<HashMap<String, ColumnType>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    buffer_limit: usize,
}

struct Subscriber {
    key: SubscriberKey,
    mailbox: Mailbox,
    /// The rows it may see, when a row-level rule limits them.
    filter: Option<Arc<RowFilter>>,
    state: State,
    /// Set when the server ends the subscription, so its session frees the id.
    closed: Arc<AtomicBool>,
}

enum State {
    Pending {
        buffer: Vec<(u64, SharedEvent)>,
        overflowed: bool,
        /// The table was reset (truncated, or a change could not be read) while the snapshot was
        /// being taken: the failure the subscription ends with.
        reset: Option<Failure>,
    },
    Live {
        since: Snapshot,
    },
}

/// What a subscription's task finds when it drains its buffer.
pub(crate) enum Drain {
    /// Buffered changes (transaction id, event), oldest first; drain again after sending them.
    Items(Vec<(u64, SharedEvent)>),
    /// The buffer was empty and the subscription is now live.
    Live,
    /// The buffer overflowed; the subscription has been removed.
    Overflowed,
    /// The table was reset meanwhile (see [`TableEntry::reset`]); the subscription has been
    /// removed and ends with this failure.
    Reset(Failure),
    /// The subscription is gone (unsubscribed or dropped as a slow consumer).
    Gone,
}

impl TableEntry {
    pub(crate) fn new(
        info: TableInfo,
        types: HashMap<String, ColumnType>,
        buffer_limit: usize,
    ) -> Self {
        Self {
            info,
            types: RwLock::new(Arc::new(types)),
            subscribers: Mutex::new(Vec::new()),
            buffer_limit,
        }
    }

    /// The column types used to convert this table's rows.
    pub(crate) fn types(&self) -> Arc<HashMap<String, ColumnType>> {
        self.types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the column types (after a schema change).
    pub(crate) fn set_types(&self, types: HashMap<String, ColumnType>) {
        *self.types.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(types);
    }

    /// Adds a pending subscriber that sees the rows `filter` lets through (all without one);
    /// `closed` is set if the server ends it.
    pub(crate) fn add(
        &self,
        key: SubscriberKey,
        mailbox: Mailbox,
        filter: Option<Arc<RowFilter>>,
        closed: Arc<AtomicBool>,
    ) {
        self.lock().push(Subscriber {
            key,
            mailbox,
            filter,
            closed,
            state: State::Pending {
                buffer: Vec::new(),
                overflowed: false,
                reset: None,
            },
        });
    }

    /// Removes a subscriber (unsubscribe, connection closed, failure).
    pub(crate) fn remove(&self, key: SubscriberKey) {
        self.lock().retain(|s| s.key != key);
    }

    /// Active subscribers (pending or live).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Takes what a pending subscriber buffered, or makes it live when nothing is left.
    pub(crate) fn drain(&self, key: SubscriberKey, since: &Snapshot) -> Drain {
        let mut subscribers = self.lock();
        let Some(index) = subscribers.iter().position(|s| s.key == key) else {
            return Drain::Gone;
        };
        let subscriber = &mut subscribers[index];
        match &mut subscriber.state {
            State::Pending {
                reset: Some(failure),
                ..
            } => {
                let failure = failure.clone();
                subscribers.swap_remove(index);
                Drain::Reset(failure)
            }
            State::Pending {
                overflowed: true, ..
            } => {
                subscribers.swap_remove(index);
                Drain::Overflowed
            }
            State::Pending { buffer, .. } if !buffer.is_empty() => {
                Drain::Items(std::mem::take(buffer))
            }
            State::Pending { .. } => {
                subscriber.state = State::Live {
                    since: since.clone(),
                };
                Drain::Live
            }
            State::Live { .. } => Drain::Live,
        }
    }

    /// Fans one change out. `build` runs at most once, only if some subscriber may take the
    /// change, and each form of it (as it happened, or as the insert or delete a row filter
    /// makes of an update) is encoded at most once, with `cursor`. Returns how many subscribers
    /// were dropped as slow consumers.
    pub(crate) fn fan_out(
        &self,
        xid: u64,
        cursor: &[u8],
        build: impl FnOnce() -> RowChange,
    ) -> usize {
        let mut subscribers = self.lock();
        let mut change = Lazy {
            change: LazyCell::new(build),
            events: Default::default(),
            cursor,
            key_columns: &self.info.key_columns,
        };
        let before = subscribers.len();
        let limit = self.buffer_limit;
        subscribers.retain_mut(|subscriber| {
            let live = match &subscriber.state {
                State::Live { since } if since.is_visible(xid) => return true,
                State::Pending {
                    overflowed: true, ..
                } => return true,
                State::Live { .. } => true,
                State::Pending { .. } => false,
            };
            let view = match &subscriber.filter {
                None => View::Original,
                Some(filter) => match view_through(filter, change.get()) {
                    Some(view) => view,
                    None => return true, // it never sees this row
                },
            };
            if live {
                return subscriber
                    .mailbox
                    .try_deliver(Outbound::Event {
                        subscription_id: subscriber.key.subscription_id,
                        event: change.event(view),
                    })
                    .is_ok();
            }
            if let State::Pending {
                buffer, overflowed, ..
            } = &mut subscriber.state
            {
                if buffer.len() >= limit {
                    *overflowed = true;
                    *buffer = Vec::new();
                } else {
                    buffer.push((xid, change.event(view)));
                }
            }
            true
        });
        before - subscribers.len()
    }

    /// The table was reset by transaction `xid` (truncated, or it logged a change that cannot be
    /// read): ends every subscription whose snapshot does not already reflect it, with `failure`
    /// (a `SubscriptionClosed` event). Pending ones are ended by their task, which does not know
    /// its snapshot's relation to `xid` yet (rare enough that a possibly needless resubscribe is
    /// the simpler price).
    pub(crate) fn reset(&self, xid: u64, failure: &Failure) {
        let closed = share_event(&[], EventBody::Closed(failure));
        self.lock()
            .retain_mut(|subscriber| match &mut subscriber.state {
                State::Pending { reset, buffer, .. } => {
                    *reset = Some(failure.clone());
                    *buffer = Vec::new();
                    true
                }
                State::Live { since } if since.is_visible(xid) => true,
                State::Live { .. } => {
                    let _ = subscriber.mailbox.try_deliver(Outbound::Event {
                        subscription_id: subscriber.key.subscription_id,
                        event: closed.clone(),
                    });
                    subscriber.closed.store(true, Ordering::Release);
                    false
                }
            });
    }

    /// Tells every live subscriber that the source is unavailable (`Some`) or back (`None`).
    /// Returns how many were dropped as slow consumers.
    pub(crate) fn broadcast(&self, status: &SharedEvent) -> usize {
        let mut subscribers = self.lock();
        let before = subscribers.len();
        subscribers.retain(|subscriber| match subscriber.state {
            State::Pending { .. } => true,
            State::Live { .. } => subscriber
                .mailbox
                .try_deliver(Outbound::Event {
                    subscription_id: subscriber.key.subscription_id,
                    event: status.clone(),
                })
                .is_ok(),
        });
        before - subscribers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A change being fanned out, built and encoded on first need.
struct Lazy<'a, F> {
    change: LazyCell<RowChange, F>,
    /// Encoded once per view, by [`View::index`].
    events: [Option<SharedEvent>; 3],
    cursor: &'a [u8],
    key_columns: &'a [String],
}

impl<F: FnOnce() -> RowChange> Lazy<'_, F> {
    fn get(&self) -> &RowChange {
        LazyCell::force(&self.change)
    }

    fn event(&mut self, view: View) -> SharedEvent {
        if let Some(event) = &self.events[view.index()] {
            return event.clone();
        }
        let cursor = self.cursor;
        let key_columns = self.key_columns;
        let change = self.get();
        let event = match view {
            View::Original => share_event(cursor, EventBody::Change(change)),
            _ => share_event(
                cursor,
                EventBody::Change(&apply_view(change, view, key_columns)),
            ),
        };
        self.events[view.index()] = Some(event.clone());
        event
    }
}

/// Table entries by oid. Entries stay once created (there are at most as many as watched
/// tables), keeping their column types cached.
#[derive(Default)]
pub(crate) struct Tables {
    entries: Mutex<HashMap<u32, Arc<TableEntry>>>,
}

impl Tables {
    pub(crate) fn get(&self, oid: u32) -> Option<Arc<TableEntry>> {
        self.lock().get(&oid).cloned()
    }

    /// The entry for `info.oid`, created with `types` if absent.
    pub(crate) fn get_or_insert(
        &self,
        info: TableInfo,
        types: impl FnOnce() -> HashMap<String, ColumnType>,
        buffer_limit: usize,
    ) -> Arc<TableEntry> {
        self.lock()
            .entry(info.oid)
            .or_insert_with(|| Arc::new(TableEntry::new(info, types(), buffer_limit)))
            .clone()
    }

    pub(crate) fn all(&self) -> Vec<Arc<TableEntry>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<TableEntry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::outbound::{mailbox, Closer, QueueLimits};
    use crate::protocol::{frame_shared, pb, ChangeKind, Value};
    use crate::row_filter::FilterTemplate;
    use prost::Message as _;
    use tokio_util::sync::CancellationToken;

    fn entry(limit: usize) -> TableEntry {
        let info = TableInfo {
            oid: 1,
            name: "public.t".into(),
            sql_name: "t".into(),
            key_columns: vec!["id".into()],
            schema: "public".into(),
            relname: "t".into(),
        };
        TableEntry::new(info, HashMap::new(), limit)
    }

    fn event() -> RowChange {
        change(ChangeKind::Insert, None, Some(1))
    }

    /// A change of row `id` 1 whose `tenant` column goes from `old` to `new`.
    fn change(kind: ChangeKind, old: Option<i64>, new: Option<i64>) -> RowChange {
        let row = |tenant: i64| {
            vec![
                ("id".to_string(), Value::Int(1)),
                ("tenant".to_string(), Value::Int(tenant)),
            ]
        };
        RowChange {
            kind,
            table: "public.t".into(),
            key: vec![("id".into(), Value::Int(1))],
            new_row: new.map(row),
            old_row: old.map(row),
            transaction_id: 0,
            commit_time_micros: 0,
        }
    }

    fn received(rx: &mut crate::outbound::Inbox) -> Vec<pb::RowChange> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            let Outbound::Event { event, .. } = item else {
                panic!("expected an event");
            };
            let frame = frame_shared(1, &event);
            let message = pb::ServerMessage::decode(frame.as_ref()).expect("decodes");
            let Some(pb::server_message::Message::Event(event)) = message.message else {
                panic!("expected an event message");
            };
            let Some(pb::event::Body::Change(change)) = event.body else {
                panic!("expected a change");
            };
            out.push(change);
        }
        out
    }

    fn key(id: u64) -> SubscriberKey {
        SubscriberKey {
            connection: 1,
            subscription_id: id,
        }
    }

    #[tokio::test]
    async fn pending_buffers_then_live_filters_by_snapshot() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let table = entry(10);
        table.add(key(1), mb, None, Arc::default());
        table.fan_out(5, b"c", event);
        table.fan_out(12, b"c", event);
        let since = Snapshot::parse("10:13:").expect("snapshot"); // 5 and 12 visible, 13+ not
        let Drain::Items(items) = table.drain(key(1), &since) else {
            panic!("expected the buffered items");
        };
        assert_eq!(
            items.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
            vec![5, 12]
        );
        assert!(matches!(table.drain(key(1), &since), Drain::Live));
        table.fan_out(12, b"c", || panic!("visible in the snapshot: not built"));
        table.fan_out(13, b"c", event);
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_full_pending_buffer_fails_the_subscription() {
        let shutdown = CancellationToken::new();
        let (mb, _rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let table = entry(2);
        table.add(key(1), mb, None, Arc::default());
        for xid in 20..25 {
            table.fan_out(xid, b"c", event);
        }
        let since = Snapshot::parse("10:13:").expect("snapshot");
        assert!(matches!(table.drain(key(1), &since), Drain::Overflowed));
        assert_eq!(table.len(), 0);
        assert!(matches!(table.drain(key(1), &since), Drain::Gone));
    }

    #[tokio::test]
    async fn a_row_filter_turns_moves_across_it_into_inserts_and_deletes() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let table = entry(10);
        let filter = FilterTemplate::parse("tenant = 7")
            .expect("parses")
            .fill(&Principal::anonymous())
            .expect("fills");
        table.add(key(1), mb, Some(Arc::new(filter)), Arc::default());
        let since = Snapshot::parse("10:10:").expect("snapshot");
        assert!(matches!(table.drain(key(1), &since), Drain::Live));
        let steps = [
            change(ChangeKind::Insert, None, Some(8)),    // not seen
            change(ChangeKind::Update, Some(8), Some(7)), // moves in: INSERT
            change(ChangeKind::Update, Some(7), Some(7)), // UPDATE
            change(ChangeKind::Update, Some(7), Some(9)), // moves out: DELETE of the old row
            change(ChangeKind::Update, Some(9), Some(8)), // not seen
            change(ChangeKind::Delete, Some(8), None),    // not seen
            change(ChangeKind::Insert, None, Some(7)),    // INSERT
            change(ChangeKind::Delete, Some(7), None),    // DELETE
        ];
        for (xid, step) in (20..).zip(steps) {
            table.fan_out(xid, b"c", || step);
        }
        let got = received(&mut rx);
        let kinds: Vec<_> = got.iter().map(|c| c.kind()).collect();
        use pb::ChangeKind as K;
        assert_eq!(
            kinds,
            [K::Insert, K::Update, K::Delete, K::Insert, K::Delete]
        );
        assert!(got[0].old_row.is_none() && got[0].new_row.is_some());
        assert!(got[2].new_row.is_none() && got[2].old_row.is_some());
        let key = got[2].key.as_ref().expect("key");
        assert_eq!(key.columns.len(), 1, "the delete names the row's key");
    }
}
