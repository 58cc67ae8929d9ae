//! Squashing (`min_interval_ms`): at most one event per key (a row's primary key, a message's
//! key) per interval, for one subscriber.
//!
//! A subscriber's [`Window`] is **idle** until an event comes: that one is sent at once, and a
//! window opens for the interval. Events within it are **held**, one per key (a newer event of a
//! key collapses into the held one, as the source's `collapse` says), and sent together when it
//! ends, each key's at the place of its latest event; then the next window opens, or, when
//! nothing was held, the subscriber is idle again. Events without a key are held too and never
//! collapsed.
//!
//! Why this shape, rather than holding each key on its own clock: an event's cursor says that
//! everything before it was delivered. Sending an event while an older one is held would break
//! that, so events are only ever sent when nothing older is held (the first, at once), or all
//! held ones together in the order of their latest events: every key flushed after an event has
//! its latest change after it, so a resume from that event's cursor neither misses nor repeats
//! anything a squashing subscriber is owed.
//!
//! Bounded: a window holding its limit of keys (half the connection's queue, at most 10,000) is
//! sent at once, early (less squashing, never a loss).
//! A [`flusher`] task per squashing subscriber ends each window on time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Registration, Registry, Step, SubscriberKey, Visit};
use crate::outbound::QueueLimits;
use crate::protocol::{with_more, SharedEvent};

/// Keys a window holds at most before it is sent early (fewer on connections with smaller
/// queues: [`Squash::new`]).
pub(crate) const HELD_LIMIT: usize = 10_000;

/// A subscriber's squashing: its interval, and how many keys a window of it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squash {
    interval: Duration,
    held: usize,
}

impl Squash {
    /// Squashing by `interval` for a subscriber whose connection queues within `queue`: a
    /// window holds at most half the queue's messages (and [`HELD_LIMIT`]), so that a window
    /// sent at once fits in a queue a reading client keeps from filling.
    pub(crate) fn new(interval: Duration, queue: QueueLimits) -> Self {
        Self {
            interval,
            held: (queue.messages / 2).clamp(1, HELD_LIMIT),
        }
    }
}

/// What a held event is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Key(Box<[u8]>),
    /// An event without a key: never collapsed, numbered.
    Unkeyed(u64),
}

/// One subscriber's squash window, holding events of type `V` (each source's own: a topic's
/// encoded message, a table's change).
pub(crate) struct Window<V> {
    interval: Duration,
    /// Until when the open window holds events; `None`: idle.
    open_until: Option<Instant>,
    held: HashMap<Slot, (u64, V)>,
    /// Orders held events by their latest arrival (and numbers unkeyed ones).
    sequence: u64,
    limit: usize,
    /// Wakes the subscriber's flusher when a window opens, and when the window is dropped (the
    /// subscriber is gone).
    wake: Arc<Notify>,
}

/// What becomes of an offered event.
pub(crate) enum Offer<V> {
    /// Send it now (the window was idle).
    Now(V),
    /// Held until the window ends.
    Held,
    /// The window is full: send these (the held events and this one) now, in this order.
    Early(Vec<V>),
}

impl<V> Window<V> {
    /// An idle window.
    pub(crate) fn new(squash: Squash) -> Self {
        Self {
            interval: squash.interval,
            open_until: None,
            held: HashMap::new(),
            sequence: 0,
            limit: squash.held,
            wake: Arc::new(Notify::new()),
        }
    }

    /// What wakes this window's flusher.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Offers `value` with its `key` (`None`: no key, never collapsed). A value held under the
    /// same key is replaced by `collapse(held, value)`, or dropped when that is `None` (the two
    /// cancel out, say an insert and a delete).
    pub(crate) fn offer(
        &mut self,
        key: Option<&[u8]>,
        value: V,
        collapse: impl FnOnce(V, V) -> Option<V>,
    ) -> Offer<V> {
        if self.open_until.is_none() {
            self.open_until = Some(Instant::now() + self.interval);
            self.wake.notify_one();
            return Offer::Now(value);
        }
        self.sequence += 1;
        let sequence = self.sequence;
        let slot = match key {
            Some(key) => Slot::Key(key.into()),
            None => Slot::Unkeyed(sequence),
        };
        match self.held.remove(&slot) {
            Some((_, older)) => {
                if let Some(collapsed) = collapse(older, value) {
                    self.held.insert(slot, (sequence, collapsed));
                }
            }
            None => {
                self.held.insert(slot, (sequence, value));
            }
        }
        if self.held.len() >= self.limit {
            return Offer::Early(self.drain());
        }
        Offer::Held
    }

    /// When the open window ends; `None` when idle.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open_until
    }

    /// Ends the window if it is due at `now`: the held events, in the order of their latest
    /// arrival; the next window opens when there were any, else the subscriber is idle. Nothing
    /// when not due yet (or idle).
    pub(crate) fn end(&mut self, now: Instant) -> Vec<V> {
        match self.open_until {
            Some(until) if until <= now => {}
            _ => return Vec::new(),
        }
        let events = self.drain();
        self.open_until = (!events.is_empty()).then(|| now + self.interval);
        events
    }

    fn drain(&mut self) -> Vec<V> {
        let mut held: Vec<(u64, V)> = self.held.drain().map(|(_, held)| held).collect();
        held.sort_unstable_by_key(|(sequence, _)| *sequence);
        held.into_iter().map(|(_, value)| value).collect()
    }
}

impl<V> Drop for Window<V> {
    fn drop(&mut self) {
        self.wake.notify_one(); // the flusher finds its subscriber gone and ends
    }
}

/// What a subscriber gets of a batch of events a window sent together: every one but the last
/// marked `more` (`Event.more`), so that a client applies the batch as one.
pub(crate) fn batch(mut events: Vec<SharedEvent>) -> Step {
    let last = events.len().saturating_sub(1);
    for event in &mut events[..last] {
        *event = with_more(event);
    }
    Step::Several(events)
}

/// A subscriber state that may squash: what its flusher needs of it.
pub(crate) trait Squashing: Send + 'static {
    /// What wakes its flusher; `None` when it does not squash.
    fn wake(&self) -> Option<Arc<Notify>>;
    /// When its open window ends; `None` when idle (or it does not squash).
    fn deadline(&self) -> Option<Instant>;
    /// Ends its window if due at `now`: what to queue (the held events, encoded).
    fn end(&mut self, now: Instant) -> Step;
}

/// Starts ending the windows of `registration`'s subscriber on time, when its state has one;
/// the task ends when the subscriber goes.
pub(crate) fn start<S: Squashing>(registration: &Registration<S>) {
    let wake = registration
        .registry
        .visit(&registration.key, registration.subscriber, |state| {
            Visit::Keep(state.wake())
        });
    if let Some(Some(wake)) = wake {
        tokio::spawn(flusher(
            registration.registry.clone(),
            registration.key.clone(),
            registration.subscriber,
            wake,
        ));
    }
}

/// Ends one subscriber's windows on time: waits for a window to open, sleeps until its end,
/// and queues what it held, under the key's lock; until the subscriber is gone. Spawned per
/// squashing subscriber ([`start`]).
pub(crate) async fn flusher<S: Squashing>(
    registry: Registry<S>,
    key: Arc<str>,
    subscriber: SubscriberKey,
    wake: Arc<Notify>,
) {
    loop {
        wake.notified().await;
        loop {
            let Some(open) =
                registry.visit(&key, subscriber, |state| Visit::Keep(state.deadline()))
            else {
                return; // unsubscribed
            };
            let Some(until) = open else {
                break; // idle: wait for the next window
            };
            tokio::time::sleep_until(until).await;
            let ended =
                registry.deliver_to_one(&key, subscriber, |state| state.end(Instant::now()));
            if ended.is_none_or(|fanout| fanout.dropped > 0) {
                return; // gone
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(held: usize) -> Squash {
        Squash::new(
            Duration::from_millis(100),
            QueueLimits::new(2 * held, 1 << 20),
        )
    }

    fn keep_newer(_: &'static str, newer: &'static str) -> Option<&'static str> {
        Some(newer)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_goes_at_once_then_each_key_once_per_window_in_latest_order() {
        let mut window = Window::new(squash(100));
        assert!(matches!(
            window.offer(Some(b"a"), "a1", keep_newer),
            Offer::Now("a1")
        ));
        let deadline = window.deadline().expect("open");
        for (key, value) in [(&b"a"[..], "a2"), (b"b", "b1"), (b"a", "a3")] {
            assert!(matches!(
                window.offer(Some(key), value, keep_newer),
                Offer::Held
            ));
        }
        assert!(matches!(window.offer(None, "u1", keep_newer), Offer::Held));
        assert!(matches!(window.offer(None, "u2", keep_newer), Offer::Held));
        assert!(
            window.end(deadline - Duration::from_millis(1)).is_empty(),
            "not due"
        );
        assert_eq!(window.end(deadline), ["b1", "a3", "u1", "u2"]);
        let next = window.deadline().expect("the next window opened");
        assert_eq!(next, deadline + Duration::from_millis(100));
        assert!(matches!(
            window.offer(Some(b"a"), "a4", keep_newer),
            Offer::Held
        ));
        assert_eq!(window.end(next), ["a4"]);
        let last = window.deadline().expect("open again");
        assert!(window.end(last).is_empty());
        assert_eq!(window.deadline(), None, "idle after an empty window");
        assert!(matches!(
            window.offer(Some(b"a"), "a5", keep_newer),
            Offer::Now("a5")
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn collapsing_to_nothing_drops_the_key_and_a_full_window_goes_early() {
        let mut window = Window::new(squash(3));
        assert!(matches!(
            window.offer(Some(b"x"), "x", keep_newer),
            Offer::Now(_)
        ));
        assert!(matches!(
            window.offer(Some(b"a"), "a", keep_newer),
            Offer::Held
        ));
        assert!(matches!(
            window.offer(Some(b"a"), "gone", |_, _| None),
            Offer::Held
        ));
        assert!(matches!(
            window.offer(Some(b"b"), "b", keep_newer),
            Offer::Held
        ));
        assert!(matches!(window.offer(None, "u", keep_newer), Offer::Held));
        match window.offer(Some(b"c"), "c", keep_newer) {
            Offer::Early(events) => assert_eq!(events, ["b", "u", "c"]),
            _ => panic!("a full window goes early"),
        }
        assert!(window.deadline().is_some(), "still open");
    }
}
