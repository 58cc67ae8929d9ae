//! Who is subscribed to what, and the one fan-out every source delivers through.
//!
//! A [`Registry`] maps a key (a topic name, a watched table) to its subscribers, each a
//! [`Subscriber`]: the connection's [`Mailbox`], the subscription id it chose, and whatever state
//! the source keeps per subscription (nothing for topics; the snapshot fence and row filter for
//! tables). Every event any source fans out, and every status it announces, reaches subscribers
//! through one function, [`Registry::deliver`]: the source says per subscriber what to do
//! ([`Step`]), the registry queues the shared bytes without waiting and returns what was
//! delivered and what was dropped ([`Fanout`]). A subscriber whose queue is full or gone is
//! removed at once and counted; its connection is closed as a slow consumer by the mailbox, so
//! nobody is ever skipped silently.
//!
//! Routes: a subscriber may be routed by values its filter requires of a field (a column's `=` or
//! `in`: [`Route`]). A delivery that says which routes an event concerns
//! ([`Registry::deliver_routed`]) visits only the subscribers routed there and those with no
//! route, so its cost grows with the subscribers it may concern, not with all of the key's.
//!
//! Ordering: subscribing runs a caller's closure under the key's lock, after the subscriber is
//! added; whatever it queues (`Subscribed`, `Ready`) precedes every event fanned out later.
//! Events of one key reach each subscriber in delivery order.
//!
//! No I/O, no protocol knowledge beyond the shared event bytes it passes along.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use indexmap::IndexSet;
use slab::Slab;

mod delivery;
pub(crate) mod squash;

use crate::outbound::{Mailbox, Outbound};
use crate::protocol::SharedEvent;
use delivery::deliver_one;
pub(crate) use delivery::{Fanout, Step, Subscriber, Visit};

/// Identifies one subscription: the connection and the client's subscription id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    /// Server-assigned connection number.
    pub connection: u64,
    /// Client-chosen subscription id.
    pub subscription_id: u64,
}

/// A value a subscriber's filter requires of one field: only events whose field holds it (before
/// or after a change) can concern the subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Route {
    /// The field (a column's name).
    pub(crate) field: Arc<str>,
    /// The value, in a form whose equality is the filter's.
    pub(crate) value: RouteValue,
}

/// A routed value: integers and text, the kinds whose equality is exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RouteValue {
    Int(i64),
    Text(Box<str>),
}

/// One subscriber and the routes it is indexed under (none: every delivery visits it).
struct Slot<S> {
    subscriber: Subscriber<S>,
    routes: Box<[Route]>,
}

struct Entry<S> {
    subscribers: Slab<Slot<S>>,
    /// Subscription -> its slot.
    slots: HashMap<SubscriberKey, usize>,
    /// Route -> the slots of the subscribers routed there.
    routed: HashMap<Route, IndexSet<usize>>,
    /// The slots of subscribers without routes.
    unrouted: IndexSet<usize>,
    /// The fields some subscriber is routed by...
    fields: Vec<Arc<str>>,
    /// ...and how many routes name each.
    field_routes: Vec<usize>,
}

/// One key's entry, locked on its own so that deliveries to different keys do not contend.
type SharedEntry<S> = Arc<Mutex<Entry<S>>>;

impl<S> Default for Entry<S> {
    fn default() -> Self {
        Self {
            subscribers: Slab::new(),
            slots: HashMap::new(),
            routed: HashMap::new(),
            unrouted: IndexSet::new(),
            fields: Vec::new(),
            field_routes: Vec::new(),
        }
    }
}

impl<S> Entry<S> {
    fn insert(&mut self, subscriber: Subscriber<S>, routes: Vec<Route>) {
        let key = subscriber.key;
        let routes = routes.into_boxed_slice();
        let slot = self.subscribers.vacant_key();
        if routes.is_empty() {
            self.unrouted.insert(slot);
        }
        for route in routes.iter() {
            self.routed.entry(route.clone()).or_default().insert(slot);
            match self.fields.iter().position(|f| *f == route.field) {
                Some(at) => self.field_routes[at] += 1,
                None => {
                    self.fields.push(route.field.clone());
                    self.field_routes.push(1);
                }
            }
        }
        self.subscribers.insert(Slot { subscriber, routes });
        // Sessions refuse a subscription id in use, so a key is never here twice.
        self.slots.insert(key, slot);
    }

    fn remove(&mut self, slot: usize) -> Subscriber<S> {
        let Slot { subscriber, routes } = self.subscribers.remove(slot);
        if self.slots.get(&subscriber.key) == Some(&slot) {
            self.slots.remove(&subscriber.key);
        }
        if routes.is_empty() {
            self.unrouted.swap_remove(&slot);
        }
        for route in routes.iter() {
            if let Some(slots) = self.routed.get_mut(route) {
                slots.swap_remove(&slot);
                if slots.is_empty() {
                    self.routed.remove(route);
                }
            }
            if let Some(at) = self.fields.iter().position(|f| *f == route.field) {
                self.field_routes[at] -= 1;
                if self.field_routes[at] == 0 {
                    self.fields.swap_remove(at);
                    self.field_routes.swap_remove(at);
                }
            }
        }
        subscriber
    }

    fn slot_of(&self, key: SubscriberKey) -> Option<usize> {
        self.slots.get(&key).copied()
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// The slots a delivery with `routes` visits, in slot order: the subscribers routed there
    /// and those without routes.
    fn targets(&self, routes: &[Route]) -> Vec<usize> {
        let mut slots: Vec<usize> = self.unrouted.iter().copied().collect();
        for route in routes {
            if let Some(routed) = self.routed.get(route) {
                slots.extend(routed.iter().copied());
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

/// What a registry serves and has served, as `/v1/stats` reports it per source kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Active subscriptions now.
    pub(crate) subscriptions: usize,
    /// Events queued to subscribers since start (see [`Registry::delivered`]).
    pub(crate) delivered: u64,
}

/// The subscriptions of one source. Cheap to clone; clones share state.
pub struct Registry<S = ()> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Registry<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Default for Registry<S> {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                keys: RwLock::default(),
                subscriptions: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
            }),
        }
    }
}

struct Shared<S> {
    /// Key -> its subscribers. The map lock is held only to find or create an entry; fan-out
    /// holds just the entry's lock, so publishers to different keys do not contend.
    keys: RwLock<HashMap<Arc<str>, SharedEntry<S>>>,
    subscriptions: AtomicUsize,
    /// Subscribers fan-out removed because their queue was full or their connection gone.
    dropped: AtomicU64,
    /// Events queued to subscribers since start ([`Fanout::events`], and the waiting sends'):
    /// one relaxed add per delivery call, made under the key's lock the delivery holds anyway,
    /// so counting adds no lock and no per-subscriber work.
    delivered: AtomicU64,
}

impl<S> Registry<S> {
    /// Adds a subscriber with its source `state` to `key`, then runs `announce` under the key's
    /// lock (see the ordering note above). Returns the guard that removes the subscription when
    /// dropped.
    pub(crate) fn subscribe(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        mailbox: Mailbox,
        state: S,
        announce: impl FnOnce(),
    ) -> Registration<S> {
        self.subscribe_routed(key, subscriber, mailbox, (state, Vec::new()), announce)
    }

    /// [`subscribe`](Self::subscribe), indexed under `routes`: the values its filter requires
    /// of one field (an `in` gives several). No routes: every delivery visits it.
    pub(crate) fn subscribe_routed(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        mailbox: Mailbox,
        (state, routes): (S, Vec<Route>),
        announce: impl FnOnce(),
    ) -> Registration<S> {
        let key: Arc<str> = Arc::from(key);
        let mut keys = self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = keys.entry(key.clone()).or_default();
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let added = Subscriber {
            key: subscriber,
            mailbox,
            state,
        };
        entry.insert(added, routes);
        self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
        announce();
        drop(entry);
        drop(keys);
        Registration {
            registry: self.clone(),
            key,
            subscriber,
        }
    }

    /// Delivers to the subscribers of `key` what `step` says each gets (see [`Step`]), under the
    /// key's lock, so deliveries of one key are queued in the order they are made. `step` runs
    /// once per subscriber and not at all when nobody listens; drops are counted.
    pub(crate) fn deliver(
        &self,
        key: &str,
        step: impl FnMut(&mut Subscriber<S>) -> Step,
    ) -> Fanout {
        match self.entry(key) {
            Some(entry) => self.deliver_to(key, &entry, |_| None, step),
            None => Fanout::default(),
        }
    }

    /// [`deliver`](Self::deliver) to the subscribers the event may concern: `probe` is given
    /// the fields subscribers of `key` are routed by (only when some are) and answers the
    /// event's routes, the values it holds in those fields (before and after, for a change);
    /// `step` then runs for the subscribers routed there and those without routes. `None` from
    /// `probe` (it cannot tell) visits every subscriber.
    pub(crate) fn deliver_routed(
        &self,
        key: &str,
        probe: impl FnOnce(&[Arc<str>]) -> Option<Vec<Route>>,
        step: impl FnMut(&mut Subscriber<S>) -> Step,
    ) -> Fanout {
        match self.entry(key) {
            Some(entry) => self.deliver_to(key, &entry, probe, step),
            None => Fanout::default(),
        }
    }

    /// [`deliver`](Self::deliver) to every key's subscribers, one key at a time (a source's
    /// status, say).
    pub(crate) fn deliver_all(&self, mut step: impl FnMut(&mut Subscriber<S>) -> Step) -> Fanout {
        let entries: Vec<(Arc<str>, SharedEntry<S>)> = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        let mut total = Fanout::default();
        for (key, entry) in entries {
            let fanout = self.deliver_to(&key, &entry, |_| None, &mut step);
            total.delivered += fanout.delivered;
            total.dropped += fanout.dropped;
            total.ended += fanout.ended;
            total.events += fanout.events;
        }
        total
    }

    /// Delivers under `entry`'s lock to the targets `probe` leaves (see
    /// [`deliver_routed`](Self::deliver_routed)); counts what it removed and forgets the key
    /// once empty.
    fn deliver_to(
        &self,
        key: &str,
        entry: &Mutex<Entry<S>>,
        probe: impl FnOnce(&[Arc<str>]) -> Option<Vec<Route>>,
        mut step: impl FnMut(&mut Subscriber<S>) -> Step,
    ) -> Fanout {
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let routes = match entry.fields.as_slice() {
            [] => None,
            fields => probe(fields),
        };
        let mut fanout = Fanout::default();
        let mut removed = Vec::new();
        match routes {
            None => {
                for (slot, Slot { subscriber, .. }) in entry.subscribers.iter_mut() {
                    let step = step(subscriber);
                    if !deliver_one(subscriber, step, &mut fanout) {
                        removed.push(slot);
                    }
                }
            }
            Some(routes) => {
                for slot in entry.targets(&routes) {
                    let subscriber = &mut entry.subscribers[slot].subscriber;
                    let step = step(subscriber);
                    if !deliver_one(subscriber, step, &mut fanout) {
                        removed.push(slot);
                    }
                }
            }
        }
        self.settle(key, entry, &removed, fanout);
        fanout
    }

    /// Queues one event (encoded once) to every subscriber of every key, e.g. a source status.
    pub(crate) fn broadcast(&self, event: &SharedEvent) -> Fanout {
        self.deliver_all(|_| Step::Deliver(event.clone()))
    }

    /// Queues one event to each subscriber of `key` whose state it `wants` (encoded once, and
    /// only if one does), waiting for room in each queue instead of closing a full one as a
    /// slow consumer; `step` says, under the key's lock, what each gets of it (the event, or a
    /// place in its squash window: see [`Step`]). For sources that can wait for their reader,
    /// such as a Kafka consumer replaying history for one subscriber; never for shared fan-out,
    /// where one slow reader would hold up the others. A subscriber that leaves while this
    /// waits gets nothing (checked under the key's lock, so nothing follows its
    /// `Unsubscribed`). Cancel safe: a cancelled wait queued nothing for the subscriber it was
    /// waiting on.
    pub(crate) async fn publish_waiting(
        &self,
        key: &str,
        wants: impl Fn(&S) -> bool,
        step: impl Fn(&mut S, SharedEvent) -> Step,
        encode: impl FnOnce() -> SharedEvent,
    ) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let targets: Vec<(SubscriberKey, Mailbox)> = {
            let entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
            entry
                .subscribers
                .iter()
                .map(|(_, slot)| &slot.subscriber)
                .filter(|s| wants(&s.state))
                .map(|s| (s.key, s.mailbox.clone()))
                .collect()
        };
        if targets.is_empty() {
            return 0;
        }
        let event = encode();
        let mut delivered = 0;
        for (subscriber, mailbox) in &targets {
            if self
                .send_waiting_with(key, *subscriber, mailbox, event.clone(), &step)
                .await
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues `event` to one subscriber of `key`, waiting for room in its queue; `false` (and
    /// nothing queued) when it is no longer subscribed (checked under the key's lock, so nothing
    /// follows its `Unsubscribed`) or its connection is closing. Cancel safe: a cancelled wait
    /// queued nothing.
    pub(crate) async fn send_waiting(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        mailbox: &Mailbox,
        event: SharedEvent,
    ) -> bool {
        self.send_waiting_with(key, subscriber, mailbox, event, |_, event| {
            Step::Deliver(event)
        })
        .await
    }

    /// [`send_waiting`](Self::send_waiting), queuing what `step` makes of `event` under the
    /// key's lock once there is room for it. A batch (a squash window sent early) takes the
    /// room waited for with its first event and queues the rest without waiting, by the one
    /// delivery rule (a full queue drops the subscriber).
    async fn send_waiting_with(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        mailbox: &Mailbox,
        event: SharedEvent,
        step: impl FnOnce(&mut S, SharedEvent) -> Step,
    ) -> bool {
        let id = subscriber.subscription_id;
        let item = |event| Outbound::Event {
            subscription_id: id,
            event,
        };
        let Ok(permit) = mailbox.reserve_for(&item(event.clone())).await else {
            return false;
        };
        let Some(shared) = self.entry(key) else {
            return false;
        };
        let mut entry = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = entry.slot_of(subscriber) else {
            return false;
        };
        let found = &mut entry.subscribers[slot].subscriber;
        let mut rest = match step(&mut found.state, event) {
            Step::Skip => return true,
            Step::Deliver(event) | Step::End(event) => {
                permit.send(item(event));
                self.count_delivered(1);
                return true;
            }
            Step::Several(events) => events.into_iter(),
        };
        if let Some(first) = rest.next() {
            permit.send(item(first));
            self.count_delivered(1);
        }
        let mut fanout = Fanout::default();
        let stays = deliver_one(found, Step::Several(rest.collect()), &mut fanout);
        let removed = if stays { &[][..] } else { &[slot][..] };
        self.settle(key, entry, removed, fanout);
        stays
    }

    /// Runs `visit` on one subscriber's state under its key's lock (so no delivery to it runs
    /// meanwhile) and keeps or removes it as the visit says. `None` when it is not subscribed.
    pub(crate) fn visit<R>(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        visit: impl FnOnce(&mut S) -> Visit<R>,
    ) -> Option<R> {
        let entry = self.entry(key)?;
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = entry.slot_of(subscriber)?;
        match visit(&mut entry.subscribers[slot].subscriber.state) {
            Visit::Keep(answer) => Some(answer),
            Visit::Remove(answer) => {
                entry.remove(slot);
                self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
                let now_empty = entry.is_empty();
                drop(entry);
                if now_empty {
                    self.forget_if_empty(key);
                }
                Some(answer)
            }
        }
    }

    /// Delivers to one subscriber of `key` what `step` makes of its state, under the key's lock
    /// (a squash window's end, say), by the one delivery rule. `None` when it is not subscribed.
    pub(crate) fn deliver_to_one(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        step: impl FnOnce(&mut S) -> Step,
    ) -> Option<Fanout> {
        let entry = self.entry(key)?;
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = entry.slot_of(subscriber)?;
        let mut fanout = Fanout::default();
        let found = &mut entry.subscribers[slot].subscriber;
        let step = step(&mut found.state);
        let removed = if deliver_one(found, step, &mut fanout) {
            &[][..]
        } else {
            &[slot][..]
        };
        self.settle(key, entry, removed, fanout);
        Some(fanout)
    }

    /// Removes one subscriber (unsubscribe, connection closed, failure); nothing if it is gone.
    pub(crate) fn unsubscribe(&self, key: &str, subscriber: SubscriberKey) {
        self.visit(key, subscriber, |_| Visit::Remove(()));
    }

    /// Ends a delivery to `key` under `entry`'s lock: removes the `removed` slots (subscribers
    /// the delivery dropped or ended), counts `fanout`, releases the lock, and forgets the key
    /// once nobody is left.
    fn settle(
        &self,
        key: &str,
        mut entry: MutexGuard<'_, Entry<S>>,
        removed: &[usize],
        fanout: Fanout,
    ) {
        for &slot in removed {
            entry.remove(slot);
        }
        self.count(fanout);
        let now_empty = entry.is_empty();
        drop(entry);
        if now_empty && !removed.is_empty() {
            self.forget_if_empty(key);
        }
    }

    /// Accounts for what a delivery queued and removed.
    fn count(&self, fanout: Fanout) {
        self.count_delivered(fanout.events);
        let removed = fanout.dropped + fanout.ended;
        if removed == 0 {
            return;
        }
        self.shared
            .subscriptions
            .fetch_sub(removed, Ordering::Relaxed);
        self.shared
            .dropped
            .fetch_add(fanout.dropped as u64, Ordering::Relaxed);
    }

    /// Counts `events` queued (nothing when none were: no atomic write).
    fn count_delivered(&self, events: usize) {
        if events > 0 {
            self.shared
                .delivered
                .fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    /// Events queued to this registry's subscribers since start: every event fan-out and the
    /// waiting sends queued, counted once per subscriber that got it.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Subscribers fan-out has removed so far because their queue was full (the connection was
    /// closed as a slow consumer) or their connection was gone.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The keys that have subscribers now.
    pub fn key_names(&self) -> Vec<String> {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// Whether `key` has at least one subscriber.
    pub fn has_subscribers(&self, key: &str) -> bool {
        self.entry(key).is_some_and(|entry| {
            !entry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        })
    }

    /// Active subscriptions across all keys.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscriptions.load(Ordering::Relaxed)
    }

    /// Subscriptions now and events delivered so far.
    pub(crate) fn tally(&self) -> Tally {
        Tally {
            subscriptions: self.subscriptions(),
            delivered: self.delivered(),
        }
    }

    /// Keys with at least one subscriber.
    pub fn keys(&self) -> usize {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn entry(&self, key: &str) -> Option<SharedEntry<S>> {
        let keys = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keys.get(key).cloned()
    }

    /// Drops a key's entry once it has no subscribers, so that names nobody listens to any
    /// more cost no memory. Re-checked under the map's write lock, which `subscribe` also takes.
    fn forget_if_empty(&self, key: &str) {
        let mut keys = self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let empty = keys.get(key).is_some_and(|entry| {
            entry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        });
        if empty {
            keys.remove(key);
        }
    }
}

/// An active subscription in a [`Registry`]; dropping it unsubscribes.
pub struct Registration<S = ()> {
    registry: Registry<S>,
    key: Arc<str>,
    subscriber: SubscriberKey,
}

impl<S> std::fmt::Debug for Registration<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("subscriber", &self.subscriber)
            .finish()
    }
}

impl<S> Registration<S> {
    /// Unsubscribes now rather than when dropped (dropping it afterwards does nothing more).
    pub(crate) fn unsubscribe(&self) {
        self.registry.unsubscribe(&self.key, self.subscriber);
    }
}

impl<S> Drop for Registration<S> {
    fn drop(&mut self) {
        self.registry.unsubscribe(&self.key, self.subscriber);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event to every subscriber of `key`, encoded at most once and only if someone
    /// listens (as topic fan-out does, without filters).
    fn publish(registry: &Registry<()>, encode: impl FnOnce() -> SharedEvent) -> Fanout {
        let mut encode = Some(encode);
        let mut event: Option<SharedEvent> = None;
        registry.deliver("t", |_| {
            if event.is_none() {
                event = encode.take().map(|encode| encode());
            }
            event.clone().map_or(Step::Skip, Step::Deliver)
        })
    }
    use crate::outbound::{mailbox, Closer, QueueLimits};
    use crate::protocol::{share_event, EventBody};
    use tokio_util::sync::CancellationToken;

    fn key(connection: u64, subscription_id: u64) -> SubscriberKey {
        SubscriberKey {
            connection,
            subscription_id,
        }
    }

    fn ready() -> SharedEvent {
        share_event(b"", EventBody::Ready)
    }

    #[tokio::test]
    async fn fans_out_to_each_subscriber_with_its_own_id() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let (a, mut rx_a) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let (b, mut rx_b) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let _ra = registry.subscribe("t", key(1, 10), a, (), || {});
        let _rb = registry.subscribe("t", key(2, 20), b, (), || {});
        let mut encoded = 0;
        let fanout = publish(&registry, || {
            encoded += 1;
            ready()
        });
        assert_eq!(encoded, 1);
        assert_eq!((fanout.delivered, fanout.events), (2, 2));
        assert_eq!(registry.delivered(), 2);
        for (rx, id) in [(&mut rx_a, 10), (&mut rx_b, 20)] {
            match rx.try_recv() {
                Some(Outbound::Event {
                    subscription_id, ..
                }) => assert_eq!(subscription_id, id),
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn nobody_listening_means_no_encoding_and_dropping_unsubscribes() {
        let registry = Registry::default();
        let fanout = publish(&registry, || panic!("must not encode"));
        assert_eq!(fanout.delivered, 0);
        let shutdown = CancellationToken::new();
        let (a, _rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let registration = registry.subscribe("t", key(1, 1), a, (), || {});
        assert_eq!((registry.subscriptions(), registry.keys()), (1, 1));
        drop(registration);
        assert_eq!((registry.subscriptions(), registry.keys()), (0, 0));
        publish(&registry, || panic!("must not encode after unsubscribe"));
    }

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_and_closed_while_others_keep_receiving() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let (slow, _slow_rx) = mailbox(QueueLimits::new(2, 1 << 20), Closer::new(&shutdown));
        let slow_closer = slow.closer().clone();
        let (fast, mut fast_rx) = mailbox(QueueLimits::new(100, 1 << 20), Closer::new(&shutdown));
        let _rs = registry.subscribe("t", key(1, 1), slow, (), || {});
        let _rf = registry.subscribe("t", key(2, 1), fast, (), || {});
        let dropped: usize = (0..5).map(|_| publish(&registry, ready).dropped).sum();
        assert_eq!(dropped, 1);
        assert_eq!(registry.dropped(), 1, "counted for /v1/stats");
        assert!(slow_closer.is_closed());
        assert_eq!(registry.subscriptions(), 1);
        let mut got = 0;
        while fast_rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 5);
        assert_eq!(
            registry.delivered(),
            2 + 5,
            "what each queue took, for /v1/stats"
        );
    }

    #[tokio::test]
    async fn announce_precedes_every_later_event() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let announcer = mb.clone();
        let _r = registry.subscribe("t", key(1, 1), mb, (), move || {
            let frame = Outbound::Frame(bytes::Bytes::from_static(b"hello"));
            announcer.try_deliver(frame).expect("room");
        });
        publish(&registry, ready);
        assert!(matches!(rx.try_recv(), Some(Outbound::Frame(_))));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
    }

    #[tokio::test]
    async fn a_visit_sees_and_may_remove_one_subscriber() {
        let registry: Registry<Vec<u8>> = Registry::default();
        let shutdown = CancellationToken::new();
        let (mb, _rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let _r = registry.subscribe("t", key(1, 1), mb, Vec::new(), || {});
        registry.deliver("t", |subscriber| {
            subscriber.state.push(7);
            Step::Skip
        });
        let seen = registry.visit("t", key(1, 1), |state| Visit::Keep(state.clone()));
        assert_eq!(seen, Some(vec![7]));
        assert_eq!(registry.visit("t", key(1, 2), |_| Visit::Keep(())), None);
        registry.visit("t", key(1, 1), |_| Visit::Remove(()));
        assert_eq!((registry.subscriptions(), registry.keys()), (0, 0));
        assert_eq!(registry.visit("t", key(1, 1), |_| Visit::Keep(())), None);
    }

    fn route(value: i64) -> Route {
        Route {
            field: Arc::from("x"),
            value: RouteValue::Int(value),
        }
    }

    #[tokio::test]
    async fn a_routed_delivery_visits_the_subscribers_routed_there_and_the_unrouted() {
        let registry: Registry<&'static str> = Registry::default();
        let shutdown = CancellationToken::new();
        let mb = || mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown)).0;
        let a = registry.subscribe_routed("t", key(1, 1), mb(), ("a", vec![route(1)]), || {});
        let b =
            registry.subscribe_routed("t", key(2, 1), mb(), ("b", vec![route(2), route(3)]), || {});
        let _c = registry.subscribe("t", key(3, 1), mb(), "c", || {});
        let visited = |probe: Option<Vec<Route>>| {
            let mut seen = Vec::new();
            registry.deliver_routed(
                "t",
                |fields| {
                    assert_eq!(fields, [Arc::<str>::from("x")]);
                    probe
                },
                |subscriber| {
                    seen.push(subscriber.state);
                    Step::Skip
                },
            );
            seen.sort_unstable();
            seen
        };
        assert_eq!(visited(Some(vec![route(1)])), ["a", "c"]);
        assert_eq!(visited(Some(vec![route(3), route(1)])), ["a", "b", "c"]);
        assert_eq!(visited(Some(vec![route(9)])), ["c"]);
        assert_eq!(visited(None), ["a", "b", "c"], "a probe that cannot tell");
        assert_eq!(visited(Some(vec![route(2)])), ["b", "c"]);
        drop(b);
        assert_eq!(visited(Some(vec![route(2)])), ["c"]);
        drop(a);
        let mut seen = Vec::new();
        registry.deliver_routed(
            "t",
            |_| panic!("nobody is routed: no probe"),
            |subscriber| {
                seen.push(subscriber.state);
                Step::Skip
            },
        );
        assert_eq!(seen, ["c"]);
        assert_eq!(
            registry.visit("t", key(3, 1), |s| Visit::Keep(*s)),
            Some("c")
        );
    }
}
