//! Table subscribers and the fan-out of row changes to them. No I/O.
//!
//! Table subscribers live in a [`Registry`] like every topic's, keyed by the table's oid, and
//! every change, reset and status reaches them through the registry's one delivery function.
//! What is the table path's own is the snapshot **fence** kept per subscriber ([`TableState`]):
//! every table subscription starts **pending**: the reader appends each change of its table to
//! the subscription's buffer (bounded by `changefeed.snapshot_buffer`) while the subscription's
//! own task takes its snapshot and streams the initial rows. The task then drains the buffer,
//! dropping every change whose transaction is visible in its snapshot (the snapshot already
//! contains it), and switches the subscription to **live** under the table's lock, after which
//! the reader delivers directly, still dropping changes visible in that snapshot. A buffer that
//! overflows marks the subscription failed; its task ends it with a coded `SubscriptionClosed`.
//!
//! A subscriber whose row filter requires a column to equal one of a few values is routed by
//! them in the registry ([`Route`]), and a change is offered only to the subscribers routed by
//! the values its old and new row hold, and to those without a route: its cost grows with the
//! subscribers it may concern, not with the table's.

use std::cell::{LazyCell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::changes::{apply_view, seen, view_through, Projection, View};
use super::snapshot::Snapshot;
use super::tables::TableEntry;
use crate::outbound::Mailbox;
use crate::protocol::{
    column, share_event, ChangeKind, EventBody, Failure, RowChange, SharedEvent, Value,
};
use crate::registry::squash::{batch, Offer, Squash, Squashing, Window};
use crate::registry::{
    Fanout, Registration, Registry, Route, RouteValue, Step, Subscriber, SubscriberKey, Tally,
    Visit,
};
use crate::row_filter::{Required, RowFilter};

/// What fan-out keeps for one table subscription besides its key and mailbox.
pub(crate) struct TableState {
    /// The rows it may see, when a row-level rule or its own filter limits them.
    filter: Option<Arc<RowFilter>>,
    /// The columns it asked for, when it did.
    projection: Option<Arc<Projection>>,
    fence: Fence,
    /// Set when the server ends the subscription, so its session frees the id.
    closed: Arc<AtomicBool>,
    /// Its squash window, when it asked for one (live changes only).
    squash: Option<Box<Window<Held>>>,
}

/// A change a squash window holds: as this subscriber sees it, with its encoding (kept while
/// nothing collapsed into it) and cursor.
struct Held {
    change: RowChange,
    event: SharedEvent,
    cursor: Bytes,
    collapsed: bool,
}

impl Held {
    fn encode(self) -> SharedEvent {
        match self.collapsed {
            false => self.event,
            true => share_event(&self.cursor, EventBody::Change(&self.change)),
        }
    }
}

/// One row's two changes in a window as one: the kind the pair amounts to, `old_row` as the
/// subscriber had the row before both, `new_row` the latest, `newer`'s cursor. `None` when they
/// cancel out (an insert then a delete, or updates that end where they began).
fn collapse(older: Held, newer: Held) -> Option<Held> {
    use ChangeKind::{Delete, Insert, Update};
    let kind = match (older.change.kind, newer.change.kind) {
        (Insert, Update) => Insert,
        (Insert, Delete) => return None,
        (Update, Update) | (Delete, Insert) => Update,
        (Update, Delete) => Delete,
        _ => return Some(newer), // no other pair follows itself for one row
    };
    let old_row = match kind {
        Insert => None,
        _ => older.change.old_row,
    };
    let new_row = match kind {
        Delete => None,
        _ => newer.change.new_row,
    };
    if kind == Update && old_row == new_row {
        return None;
    }
    Some(Held {
        change: RowChange {
            kind,
            old_row,
            new_row,
            ..newer.change
        },
        event: newer.event,
        cursor: newer.cursor,
        collapsed: true,
    })
}

impl Squashing for TableState {
    fn wake(&self) -> Option<Arc<Notify>> {
        self.squash.as_ref().map(|window| window.wake())
    }

    fn deadline(&self) -> Option<Instant> {
        self.squash.as_ref().and_then(|window| window.deadline())
    }

    fn end(&mut self, now: Instant) -> Step {
        match &mut self.squash {
            Some(window) => batch(window.end(now).into_iter().map(Held::encode).collect()),
            None => Step::Skip,
        }
    }
}

/// Where a subscription stands relative to its snapshot.
enum Fence {
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
    /// The table was reset meanwhile (see [`Subscribers::reset`]); the subscription has been
    /// removed and ends with this failure.
    Reset(Failure),
    /// The subscription is gone (unsubscribed or dropped as a slow consumer).
    Gone,
}

/// How a subscriber sees its table: the rows it may see (when a row-level rule or its own
/// filter limits them), the columns it asked for, and its squash interval.
#[derive(Default)]
pub(crate) struct Lens {
    pub(crate) filter: Option<Arc<RowFilter>>,
    pub(crate) projection: Option<Arc<Projection>>,
    pub(crate) squash: Option<Squash>,
}

/// Every table subscription of the node, and the table side of fan-out. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Subscribers {
    registry: Registry<TableState>,
    /// One copy of each row filter in use, so that subscribers with equal filters share it and
    /// fan-out asks it once per change ([`Subscribers::share`]).
    filters: Arc<Mutex<HashMap<RowFilter, Weak<RowFilter>>>>,
    /// How many changes a pending subscription may buffer (`changefeed.snapshot_buffer`).
    buffer_limit: usize,
    /// Whether subscribers are routed by their filters' required values
    /// (`changefeed.filter_index`).
    index: bool,
}

impl Subscribers {
    pub(crate) fn new(buffer_limit: usize, index: bool) -> Self {
        Self {
            registry: Registry::default(),
            filters: Arc::default(),
            buffer_limit,
            index,
        }
    }

    /// The copy of `filter` subscribers already share, or `filter`, now shared. Forgets the
    /// filters nobody uses any more as it goes (when the map has doubled since).
    pub(crate) fn share(&self, filter: RowFilter) -> Arc<RowFilter> {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = filters.get(&filter).and_then(Weak::upgrade) {
            return shared;
        }
        if filters.len() >= 64 && filters.len().is_power_of_two() {
            filters.retain(|_, used| used.strong_count() > 0);
        }
        let shared = Arc::new(filter.clone());
        filters.insert(filter, Arc::downgrade(&shared));
        shared
    }

    /// Adds a pending subscriber of `table` that sees the rows `filter` lets through (all
    /// without one), then runs `announce` under the table's lock; `closed` is set if the server
    /// ends it. Dropping the registration unsubscribes.
    pub(crate) fn subscribe(
        &self,
        table: &TableEntry,
        key: SubscriberKey,
        mailbox: Mailbox,
        lens: Lens,
        closed: Arc<AtomicBool>,
        announce: impl FnOnce(),
    ) -> Registration<TableState> {
        let Lens {
            filter,
            projection,
            squash,
        } = lens;
        let routes = match &filter {
            Some(filter) if self.index => routes(filter),
            _ => Vec::new(),
        };
        let state = TableState {
            filter,
            projection,
            closed,
            fence: Fence::Pending {
                buffer: Vec::new(),
                overflowed: false,
                reset: None,
            },
            squash: squash.map(|squash| Box::new(Window::new(squash))),
        };
        self.registry
            .subscribe_routed(&table.key, key, mailbox, (state, routes), announce)
    }

    /// Removes a subscriber (failure); nothing if it is gone already.
    pub(crate) fn unsubscribe(&self, table: &TableEntry, key: SubscriberKey) {
        self.registry.unsubscribe(&table.key, key);
    }

    /// Active subscribers (pending or live) of every table.
    pub(crate) fn len(&self) -> usize {
        self.registry.subscriptions()
    }

    /// Subscribers fan-out has removed because their queue was full or their connection gone.
    pub(crate) fn dropped(&self) -> u64 {
        self.registry.dropped()
    }

    /// Subscriptions now and changes and statuses delivered so far (see `Registry::tally`).
    pub(crate) fn tally(&self) -> Tally {
        self.registry.tally()
    }

    /// Takes what a pending subscriber buffered, or makes it live when nothing is left.
    pub(crate) fn drain(&self, table: &TableEntry, key: SubscriberKey, since: &Snapshot) -> Drain {
        let drained = self
            .registry
            .visit(&table.key, key, |state| match &mut state.fence {
                Fence::Pending {
                    reset: Some(failure),
                    ..
                } => Visit::Remove(Drain::Reset(failure.clone())),
                Fence::Pending {
                    overflowed: true, ..
                } => Visit::Remove(Drain::Overflowed),
                Fence::Pending { buffer, .. } if !buffer.is_empty() => {
                    Visit::Keep(Drain::Items(std::mem::take(buffer)))
                }
                Fence::Pending { .. } => {
                    state.fence = Fence::Live {
                        since: since.clone(),
                    };
                    Visit::Keep(Drain::Live)
                }
                Fence::Live { .. } => Visit::Keep(Drain::Live),
            });
        drained.unwrap_or(Drain::Gone)
    }

    /// Fans one change of `table` out. `build` runs at most once, only if some subscriber may
    /// take the change, and each form of it (as it happened, or as the insert or delete a row
    /// filter makes of an update, with all columns or a projection's) is encoded at most once,
    /// with `cursor`.
    pub(crate) fn fan_out(
        &self,
        table: &TableEntry,
        xid: u64,
        cursor: &[u8],
        build: impl FnOnce() -> RowChange,
    ) -> Fanout {
        let change = Lazy {
            change: LazyCell::new(build),
            views: RefCell::default(),
            events: RefCell::new(Vec::new()),
            cursor,
            key_columns: &table.info.key_columns,
        };
        let limit = self.buffer_limit;
        self.registry.deliver_routed(
            &table.key,
            |fields| probe(fields, change.get()),
            |subscriber| step(subscriber, xid, limit, &change),
        )
    }

    /// `table` was reset by transaction `xid` (truncated, or it logged a change that cannot be
    /// read): ends every subscription whose snapshot does not already reflect it, with
    /// `failure` (a `SubscriptionClosed` event). Pending ones are ended by their task, which
    /// does not know its snapshot's relation to `xid` yet (rare enough that a possibly needless
    /// resubscribe is the simpler price).
    pub(crate) fn reset(&self, table: &TableEntry, xid: u64, failure: &Failure) -> Fanout {
        let closed = share_event(&[], EventBody::Closed(failure));
        self.registry
            .deliver(&table.key, |subscriber| match &mut subscriber.state.fence {
                Fence::Pending { reset, buffer, .. } => {
                    *reset = Some(failure.clone());
                    *buffer = Vec::new();
                    Step::Skip
                }
                Fence::Live { since } if since.is_visible(xid) => Step::Skip,
                Fence::Live { .. } => {
                    subscriber.state.closed.store(true, Ordering::Release);
                    Step::End(closed.clone())
                }
            })
    }

    /// Tells every live subscriber of every table a source status (see `source::Health`).
    pub(crate) fn broadcast(&self, status: &SharedEvent) -> Fanout {
        self.registry
            .deliver_all(|subscriber| match subscriber.state.fence {
                Fence::Pending { .. } => Step::Skip,
                Fence::Live { .. } => Step::Deliver(status.clone()),
            })
    }
}

/// The routes a subscriber with `filter` is indexed under: the values its filter requires of
/// one column (none when it requires none).
fn routes(filter: &RowFilter) -> Vec<Route> {
    let Some((column, values)) = filter.required() else {
        return Vec::new();
    };
    let field: Arc<str> = Arc::from(column);
    let mut routes: Vec<Route> = values
        .into_iter()
        .map(|value| Route {
            field: field.clone(),
            value: match value {
                Required::Int(n) => RouteValue::Int(n),
                Required::Text(text) => RouteValue::Text(text.into()),
            },
        })
        .collect();
    routes.sort_unstable();
    routes.dedup();
    routes
}

/// The routes `change` concerns: the values its old and new row hold in `fields`. `None` (offer
/// it to every subscriber) when a row holds a value of another kind there, which a routed
/// subscriber's filter might still find equal (the column's type changed, say).
fn probe(fields: &[Arc<str>], change: &RowChange) -> Option<Vec<Route>> {
    let mut routes = Vec::with_capacity(fields.len() * 2);
    for row in [&change.old_row, &change.new_row].into_iter().flatten() {
        for field in fields {
            let value = match column(row, field) {
                None | Some(Value::Null) => continue, // equal to nothing
                Some(Value::Int(n)) => RouteValue::Int(*n),
                Some(Value::Text(text)) => RouteValue::Text(text.as_str().into()),
                Some(_) => return None,
            };
            routes.push(Route {
                field: field.clone(),
                value,
            });
        }
    }
    Some(routes)
}

/// What one subscriber gets of one change: nothing (its snapshot has it, or its filter hides
/// the row), a place in its pending buffer, or the change in the form its filter makes of it.
fn step<F: FnOnce() -> RowChange>(
    subscriber: &mut Subscriber<TableState>,
    xid: u64,
    limit: usize,
    change: &Lazy<'_, F>,
) -> Step {
    let state = &mut subscriber.state;
    match &state.fence {
        Fence::Live { since } if since.is_visible(xid) => return Step::Skip,
        Fence::Pending {
            overflowed: true, ..
        } => return Step::Skip,
        _ => {}
    }
    let view = match &state.filter {
        None => View::Original,
        Some(filter) => match change.view(filter) {
            Some(view) => view,
            None => return Step::Skip, // it never sees this row
        },
    };
    let Some(event) = change.event(view, state.projection.as_ref()) else {
        return Step::Skip; // an update of columns it did not ask for
    };
    match &mut state.fence {
        Fence::Live { .. } => match &mut state.squash {
            None => Step::Deliver(event),
            Some(window) => {
                let filter = state.filter.as_deref();
                let projection = state.projection.as_deref();
                // The form `event` encodes, kept to collapse with: `seen` derives it as the event
                // was (so it is there: the event is).
                let Some(form) = seen(change.get().clone(), filter, projection, change.key_columns)
                else {
                    return Step::Skip;
                };
                let key = format!("{:?}", form.key);
                let held = Held {
                    change: form,
                    event,
                    cursor: Bytes::copy_from_slice(change.cursor),
                    collapsed: false,
                };
                match window.offer(Some(key.as_bytes()), held, collapse) {
                    Offer::Now(held) => Step::Deliver(held.event),
                    Offer::Held => Step::Skip,
                    Offer::Early(held) => batch(held.into_iter().map(Held::encode).collect()),
                }
            }
        },
        Fence::Pending {
            buffer, overflowed, ..
        } => {
            if buffer.len() >= limit {
                *overflowed = true;
                *buffer = Vec::new();
            } else {
                buffer.push((xid, event));
            }
            Step::Skip
        }
    }
}

/// One form of a change (its view, its projection) and its encoding (`None`: nothing to send).
type Form = (View, Option<Arc<Projection>>, Option<SharedEvent>);

/// A change being fanned out, built and encoded on first need.
struct Lazy<'a, F> {
    change: LazyCell<RowChange, F>,
    /// What each row filter makes of it, by the filter's address: subscribers sharing a filter
    /// ([`Subscribers::share`]) ask it once.
    views: RefCell<HashMap<*const RowFilter, Option<View>>>,
    /// Encoded once per view and projection (by value: subscribers asking for the same columns
    /// share an encoding); `None`: the projection leaves nothing to send.
    events: RefCell<Vec<Form>>,
    cursor: &'a [u8],
    key_columns: &'a [String],
}

impl<F: FnOnce() -> RowChange> Lazy<'_, F> {
    fn get(&self) -> &RowChange {
        LazyCell::force(&self.change)
    }

    fn view(&self, filter: &Arc<RowFilter>) -> Option<View> {
        if Arc::strong_count(filter) == 1 {
            return view_through(filter, self.get()); // nobody else has it: nothing to share
        }
        let address = Arc::as_ptr(filter);
        if let Some(view) = self.views.borrow().get(&address) {
            return *view;
        }
        let view = view_through(filter, self.get());
        self.views.borrow_mut().insert(address, view);
        view
    }

    fn event(&self, view: View, projection: Option<&Arc<Projection>>) -> Option<SharedEvent> {
        if let Some((_, _, event)) = self
            .events
            .borrow()
            .iter()
            .find(|(v, p, _)| *v == view && p.as_ref() == projection)
        {
            return event.clone();
        }
        let cursor = self.cursor;
        let key_columns = self.key_columns;
        let change = self.get();
        let viewed = match view {
            View::Original => None,
            _ => Some(apply_view(change, view, key_columns)),
        };
        let change = viewed.as_ref().unwrap_or(change);
        let event = match projection {
            None => Some(share_event(cursor, EventBody::Change(change))),
            Some(projection) => projection
                .apply(change)
                .map(|projected| share_event(cursor, EventBody::Change(&projected))),
        };
        self.events
            .borrow_mut()
            .push((view, projection.cloned(), event.clone()));
        event
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables::TableInfo;
    use super::*;
    use crate::auth::Principal;
    use crate::outbound::{mailbox, Closer, Outbound, QueueLimits};
    use crate::protocol::{frame_shared, pb, ChangeKind, Value};
    use crate::row_filter::FilterTemplate;
    use prost::Message as _;
    use std::collections::HashMap;
    use tokio_util::sync::CancellationToken;

    fn entry(limit: usize) -> (TableEntry, Subscribers) {
        let info = TableInfo {
            oid: 1,
            name: "public.t".into(),
            sql_name: "t".into(),
            key_columns: vec!["id".into()],
            schema: "public".into(),
            relname: "t".into(),
        };
        (
            TableEntry::new(info, HashMap::new()),
            Subscribers::new(limit, true),
        )
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

    /// A row filter from the permissions' language, filled for an anonymous principal.
    fn parse(text: &str) -> RowFilter {
        FilterTemplate::parse(text)
            .expect("parses")
            .fill(&Principal::anonymous())
            .expect("fills")
    }

    /// A subscriber's lens that sees the rows `text` holds for.
    fn seeing(text: &str) -> Lens {
        Lens {
            filter: Some(Arc::new(parse(text))),
            ..Lens::default()
        }
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
        let (table, subscribers) = entry(10);
        let _registration =
            subscribers.subscribe(&table, key(1), mb, Lens::default(), Arc::default(), || {});
        subscribers.fan_out(&table, 5, b"c", event);
        subscribers.fan_out(&table, 12, b"c", event);
        let since = Snapshot::parse("10:13:").expect("snapshot"); // 5 and 12 visible, 13+ not
        let Drain::Items(items) = subscribers.drain(&table, key(1), &since) else {
            panic!("expected the buffered items");
        };
        assert_eq!(
            items.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
            vec![5, 12]
        );
        assert!(matches!(
            subscribers.drain(&table, key(1), &since),
            Drain::Live
        ));
        subscribers.fan_out(&table, 12, b"c", || {
            panic!("visible in the snapshot: not built")
        });
        subscribers.fan_out(&table, 13, b"c", event);
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_full_pending_buffer_fails_the_subscription() {
        let shutdown = CancellationToken::new();
        let (mb, _rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let (table, subscribers) = entry(2);
        let _registration =
            subscribers.subscribe(&table, key(1), mb, Lens::default(), Arc::default(), || {});
        for xid in 20..25 {
            subscribers.fan_out(&table, xid, b"c", event);
        }
        let since = Snapshot::parse("10:13:").expect("snapshot");
        assert!(matches!(
            subscribers.drain(&table, key(1), &since),
            Drain::Overflowed
        ));
        assert_eq!(subscribers.len(), 0);
        assert!(matches!(
            subscribers.drain(&table, key(1), &since),
            Drain::Gone
        ));
    }

    #[tokio::test]
    async fn a_row_filter_turns_moves_across_it_into_inserts_and_deletes() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let (table, subscribers) = entry(10);
        let _registration = subscribers.subscribe(
            &table,
            key(1),
            mb,
            seeing("tenant = 7"),
            Arc::default(),
            || {},
        );
        let since = Snapshot::parse("10:10:").expect("snapshot");
        assert!(matches!(
            subscribers.drain(&table, key(1), &since),
            Drain::Live
        ));
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
            subscribers.fan_out(&table, xid, b"c", || step);
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

    #[tokio::test]
    async fn routed_subscribers_get_the_changes_of_their_values_only_and_moves_between_them() {
        let shutdown = CancellationToken::new();
        let (table, subscribers) = entry(10);
        let since = Snapshot::parse("10:10:").expect("snapshot");
        let mut inboxes = Vec::new();
        let mut registrations = Vec::new();
        for (id, text) in [
            (1, "tenant = 7"),
            (2, "tenant in (8, 9)"),
            (3, "tenant > 7"),
        ] {
            let (mb, rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
            registrations.push(subscribers.subscribe(
                &table,
                key(id),
                mb,
                seeing(text),
                Arc::default(),
                || {},
            ));
            assert!(matches!(
                subscribers.drain(&table, key(id), &since),
                Drain::Live
            ));
            inboxes.push(rx);
        }
        let steps = [
            change(ChangeKind::Insert, None, Some(7)),    // 1
            change(ChangeKind::Update, Some(7), Some(8)), // 1: DELETE, 2: INSERT, 3: INSERT
            change(ChangeKind::Update, Some(8), Some(5)), // 2: DELETE, 3: DELETE
            change(ChangeKind::Insert, None, Some(6)),    // nobody
            change(ChangeKind::Delete, Some(9), None),    // 2, 3
        ];
        for (xid, step) in (20..).zip(steps) {
            subscribers.fan_out(&table, xid, b"c", || step);
        }
        use pb::ChangeKind as K;
        let kinds: Vec<Vec<K>> = inboxes
            .iter_mut()
            .map(|rx| received(rx).iter().map(|c| c.kind()).collect())
            .collect();
        assert_eq!(
            kinds,
            [
                vec![K::Insert, K::Delete],
                vec![K::Insert, K::Delete, K::Delete],
                vec![K::Insert, K::Delete, K::Delete],
            ]
        );
    }

    #[test]
    fn equal_filters_are_shared_and_forgotten_once_unused() {
        let (_, subscribers) = entry(10);
        let a = subscribers.share(parse("tenant = 7"));
        let b = subscribers.share(parse("tenant = 7"));
        let c = subscribers.share(parse("tenant = 8"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b, c));
        for n in 0..200 {
            drop(subscribers.share(parse(&format!("tenant = {n}"))));
        }
        let kept = subscribers.filters.lock().expect("lock").len();
        assert!(kept < 200, "unused filters are forgotten: {kept} kept");
    }
}
