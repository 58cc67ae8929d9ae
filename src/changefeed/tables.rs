//! Table subscribers and the fan-out of row changes to them. No I/O.
//!
//! Every table subscription starts **pending**: the reader appends each change of its table to
//! the subscription's buffer (bounded by `changefeed.snapshot_buffer`) while the subscription's
//! own task takes its snapshot and streams the initial rows. The task then drains the buffer,
//! dropping every change whose transaction is visible in its snapshot (the snapshot already
//! contains it), and switches the subscription to **live** under the table's lock, after which
//! the reader delivers directly, still dropping changes visible in that snapshot. A buffer that
//! overflows marks the subscription failed; its task ends it with a coded `SubscriptionClosed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::snapshot::Snapshot;
use super::values::ColumnType;
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::SharedEvent;
use crate::registry::SubscriberKey;

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
    state: State,
    /// Set when the server ends the subscription, so its session frees the id.
    closed: Arc<AtomicBool>,
}

enum State {
    Pending {
        buffer: Vec<(u64, SharedEvent)>,
        overflowed: bool,
        /// The table was truncated while the snapshot was being taken.
        reset: bool,
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
    /// The table was truncated meanwhile; the subscription has been removed.
    Reset,
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

    /// Adds a pending subscriber; `closed` is set if the server ends it.
    pub(crate) fn add(&self, key: SubscriberKey, mailbox: Mailbox, closed: Arc<AtomicBool>) {
        self.lock().push(Subscriber {
            key,
            mailbox,
            closed,
            state: State::Pending {
                buffer: Vec::new(),
                overflowed: false,
                reset: false,
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
            State::Pending { reset: true, .. } => {
                subscribers.swap_remove(index);
                Drain::Reset
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

    /// Fans one change out. `encode` runs at most once, only if some subscriber takes the
    /// change. Returns how many subscribers were dropped as slow consumers.
    pub(crate) fn fan_out(&self, xid: u64, mut encode: impl FnMut() -> SharedEvent) -> usize {
        let mut subscribers = self.lock();
        let mut event: Option<SharedEvent> = None;
        let mut shared = || event.get_or_insert_with(&mut encode).clone();
        let before = subscribers.len();
        let limit = self.buffer_limit;
        subscribers.retain_mut(|subscriber| match &mut subscriber.state {
            State::Pending {
                buffer, overflowed, ..
            } => {
                if *overflowed {
                } else if buffer.len() >= limit {
                    *overflowed = true;
                    *buffer = Vec::new();
                } else {
                    buffer.push((xid, shared()));
                }
                true
            }
            State::Live { since } if since.is_visible(xid) => true,
            State::Live { .. } => subscriber
                .mailbox
                .try_deliver(Outbound::Event {
                    subscription_id: subscriber.key.subscription_id,
                    event: shared(),
                })
                .is_ok(),
        });
        before - subscribers.len()
    }

    /// The table was truncated by transaction `xid`: ends every subscription whose snapshot does
    /// not already reflect it, with `closed` (a `SubscriptionClosed` event). Pending ones are
    /// ended by their task, which does not know its snapshot's relation to `xid` yet (rare
    /// enough that a possibly needless resubscribe is the simpler price).
    pub(crate) fn reset(&self, xid: u64, closed: &SharedEvent) {
        self.lock()
            .retain_mut(|subscriber| match &mut subscriber.state {
                State::Pending { reset, buffer, .. } => {
                    *reset = true;
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
    pub(crate) fn broadcast(&self, status: &SharedEvent) {
        self.lock().retain(|subscriber| match subscriber.state {
            State::Pending { .. } => true,
            State::Live { .. } => subscriber
                .mailbox
                .try_deliver(Outbound::Event {
                    subscription_id: subscriber.key.subscription_id,
                    event: status.clone(),
                })
                .is_ok(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
    use crate::outbound::{mailbox, Closer};
    use crate::protocol::{share_event, EventBody};
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

    fn event() -> SharedEvent {
        share_event(b"x", EventBody::Ready)
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
        let (mb, mut rx) = mailbox(16, Closer::new(&shutdown));
        let table = entry(10);
        table.add(key(1), mb, Arc::default());
        table.fan_out(5, event);
        table.fan_out(12, event);
        let since = Snapshot::parse("10:13:").expect("snapshot"); // 5 and 12 visible, 13+ not
        let Drain::Items(items) = table.drain(key(1), &since) else {
            panic!("expected the buffered items");
        };
        assert_eq!(
            items.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
            vec![5, 12]
        );
        assert!(matches!(table.drain(key(1), &since), Drain::Live));
        table.fan_out(12, || panic!("visible in the snapshot: not encoded"));
        table.fan_out(13, event);
        assert!(matches!(rx.try_recv(), Ok(Outbound::Event { .. })));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_pending_buffer_fails_the_subscription() {
        let shutdown = CancellationToken::new();
        let (mb, _rx) = mailbox(16, Closer::new(&shutdown));
        let table = entry(2);
        table.add(key(1), mb, Arc::default());
        for xid in 20..25 {
            table.fan_out(xid, event);
        }
        let since = Snapshot::parse("10:13:").expect("snapshot");
        assert!(matches!(table.drain(key(1), &since), Drain::Overflowed));
        assert_eq!(table.len(), 0);
        assert!(matches!(table.drain(key(1), &since), Drain::Gone));
    }
}
