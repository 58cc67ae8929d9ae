//! Who is subscribed to what, and fan-out.
//!
//! A [`Registry`] maps a key (a topic name) to the subscribers of that key, each a connection's
//! [`Mailbox`] and the subscription id it chose. Publishing encodes the event once (the caller's
//! closure, run only when someone listens) and queues the shared bytes to every subscriber
//! without waiting. A subscriber whose queue is full or gone is removed at once; its connection
//! is closed as a slow consumer by the mailbox, so nobody is ever skipped silently.
//!
//! Ordering: subscribing runs a caller's closure under the key's lock, after the subscriber is
//! added; whatever it queues (`Subscribed`, `Ready`) precedes every event fanned out later.
//! Events of one key reach each subscriber in publish order.
//!
//! No I/O, no protocol knowledge beyond the shared event bytes it passes along.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::outbound::{Mailbox, Outbound};
use crate::protocol::SharedEvent;

/// Identifies one subscription: the connection and the client's subscription id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    /// Server-assigned connection number.
    pub connection: u64,
    /// Client-chosen subscription id.
    pub subscription_id: u64,
}

struct Subscriber {
    key: SubscriberKey,
    mailbox: Mailbox,
}

#[derive(Default)]
struct Entry {
    subscribers: Vec<Subscriber>,
}

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers whose queue took the event.
    pub delivered: usize,
    /// Subscribers removed because their queue was full or closed.
    pub dropped: usize,
}

/// The subscriptions of one source. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Registry {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Key -> its subscribers. The map lock is held only to find or create an entry; fan-out
    /// holds just the entry's lock, so publishers to different keys do not contend.
    keys: RwLock<HashMap<Arc<str>, Arc<Mutex<Entry>>>>,
    subscriptions: AtomicUsize,
    /// Subscribers fan-out removed because their queue was full or their connection gone.
    dropped: AtomicU64,
}

impl Registry {
    /// Adds a subscriber to `key`, then runs `announce` under the key's lock (see the ordering
    /// note above). Returns the guard that removes the subscription when dropped.
    pub fn subscribe(
        &self,
        key: &str,
        subscriber: SubscriberKey,
        mailbox: Mailbox,
        announce: impl FnOnce(),
    ) -> Registration {
        let key: Arc<str> = Arc::from(key);
        let mut keys = self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = keys.entry(key.clone()).or_default();
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        entry.subscribers.push(Subscriber {
            key: subscriber,
            mailbox,
        });
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

    /// Fans an event out to every subscriber of `key`. `encode` runs at most once, under the
    /// key's lock (so events are queued in the order they were numbered), and only when there
    /// is at least one subscriber.
    pub fn publish(&self, key: &str, encode: impl FnOnce() -> SharedEvent) -> Fanout {
        let mut fanout = Fanout {
            delivered: 0,
            dropped: 0,
        };
        let Some(entry) = self.entry(key) else {
            return fanout;
        };
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if entry.subscribers.is_empty() {
            return fanout;
        }
        let event = encode();
        entry.subscribers.retain(|subscriber| {
            let item = Outbound::Event {
                subscription_id: subscriber.key.subscription_id,
                event: event.clone(),
            };
            let kept = subscriber.mailbox.try_deliver(item).is_ok();
            if kept {
                fanout.delivered += 1;
            } else {
                fanout.dropped += 1;
            }
            kept
        });
        self.count_dropped(fanout.dropped);
        let now_empty = entry.subscribers.is_empty();
        drop(entry);
        if now_empty {
            self.forget_if_empty(key);
        }
        fanout
    }

    /// Like [`publish`](Self::publish), but waits for room in each subscriber's queue instead
    /// of closing a full one as a slow consumer. For sources that can wait for their reader, such
    /// as a Kafka consumer replaying history for one subscriber; never for shared fan-out, where
    /// one slow reader would hold up the others. A subscriber that leaves while this waits gets
    /// nothing (checked under the key's lock, so nothing follows its `Unsubscribed`). Cancel
    /// safe: a cancelled wait queued nothing for the subscriber it was waiting on.
    pub async fn publish_waiting(&self, key: &str, encode: impl FnOnce() -> SharedEvent) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let targets: Vec<(SubscriberKey, Mailbox)> = {
            let entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
            entry
                .subscribers
                .iter()
                .map(|s| (s.key, s.mailbox.clone()))
                .collect()
        };
        if targets.is_empty() {
            return 0;
        }
        let event = encode();
        let mut delivered = 0;
        for (subscriber, mailbox) in &targets {
            let item = Outbound::Event {
                subscription_id: subscriber.subscription_id,
                event: event.clone(),
            };
            let Ok(permit) = mailbox.reserve_for(&item).await else {
                continue;
            };
            let entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
            if entry.subscribers.iter().any(|s| s.key == *subscriber) {
                permit.send(item);
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues one event (encoded once) to every subscriber of every key, e.g. a source status.
    pub fn broadcast(&self, event: &SharedEvent) {
        let entries: Vec<Arc<Mutex<Entry>>> = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for entry in entries {
            let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
            let before = entry.subscribers.len();
            entry.subscribers.retain(|subscriber| {
                let item = Outbound::Event {
                    subscription_id: subscriber.key.subscription_id,
                    event: event.clone(),
                };
                subscriber.mailbox.try_deliver(item).is_ok()
            });
            self.count_dropped(before - entry.subscribers.len());
        }
    }

    /// Accounts for `dropped` subscribers that fan-out removed.
    fn count_dropped(&self, dropped: usize) {
        self.shared
            .subscriptions
            .fetch_sub(dropped, Ordering::Relaxed);
        self.shared
            .dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
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
                .subscribers
                .is_empty()
        })
    }

    /// Active subscriptions across all keys.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscriptions.load(Ordering::Relaxed)
    }

    /// Keys with at least one subscriber.
    pub fn keys(&self) -> usize {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn entry(&self, key: &str) -> Option<Arc<Mutex<Entry>>> {
        let keys = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keys.get(key).cloned()
    }

    fn remove(&self, key: &str, subscriber: SubscriberKey) {
        let Some(entry) = self.entry(key) else {
            return;
        };
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let before = entry.subscribers.len();
        entry.subscribers.retain(|s| s.key != subscriber);
        let removed = before - entry.subscribers.len();
        self.shared
            .subscriptions
            .fetch_sub(removed, Ordering::Relaxed);
        let now_empty = entry.subscribers.is_empty();
        drop(entry);
        if now_empty {
            self.forget_if_empty(key);
        }
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
                .subscribers
                .is_empty()
        });
        if empty {
            keys.remove(key);
        }
    }
}

/// An active subscription in a [`Registry`]; dropping it unsubscribes.
pub struct Registration {
    registry: Registry,
    key: Arc<str>,
    subscriber: SubscriberKey,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("subscriber", &self.subscriber)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.key, self.subscriber);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let _ra = registry.subscribe("t", key(1, 10), a, || {});
        let _rb = registry.subscribe("t", key(2, 20), b, || {});
        let mut encoded = 0;
        let fanout = registry.publish("t", || {
            encoded += 1;
            ready()
        });
        assert_eq!(encoded, 1);
        assert_eq!(fanout.delivered, 2);
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
        let fanout = registry.publish("t", || panic!("must not encode"));
        assert_eq!(fanout.delivered, 0);
        let shutdown = CancellationToken::new();
        let (a, _rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let registration = registry.subscribe("t", key(1, 1), a, || {});
        assert_eq!((registry.subscriptions(), registry.keys()), (1, 1));
        drop(registration);
        assert_eq!((registry.subscriptions(), registry.keys()), (0, 0));
        registry.publish("t", || panic!("must not encode after unsubscribe"));
    }

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_and_closed_while_others_keep_receiving() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let (slow, _slow_rx) = mailbox(QueueLimits::new(2, 1 << 20), Closer::new(&shutdown));
        let slow_closer = slow.closer().clone();
        let (fast, mut fast_rx) = mailbox(QueueLimits::new(100, 1 << 20), Closer::new(&shutdown));
        let _rs = registry.subscribe("t", key(1, 1), slow, || {});
        let _rf = registry.subscribe("t", key(2, 1), fast, || {});
        let dropped: usize = (0..5).map(|_| registry.publish("t", ready).dropped).sum();
        assert_eq!(dropped, 1);
        assert_eq!(registry.dropped(), 1, "counted for /v1/stats");
        assert!(slow_closer.is_closed());
        assert_eq!(registry.subscriptions(), 1);
        let mut got = 0;
        while fast_rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 5);
    }

    #[tokio::test]
    async fn announce_precedes_every_later_event() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let announcer = mb.clone();
        let _r = registry.subscribe("t", key(1, 1), mb, move || {
            let frame = Outbound::Frame(bytes::Bytes::from_static(b"hello"));
            announcer.try_deliver(frame).expect("room");
        });
        registry.publish("t", ready);
        assert!(matches!(rx.try_recv(), Some(Outbound::Frame(_))));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
    }
}
