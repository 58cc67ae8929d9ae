//! The one delivery rule every fan-out goes through, and what it works with: a
//! [`Subscriber`], what the source wants done with it ([`Step`]), and what was done ([`Fanout`]).
//! The registry holds the locks and counts; this holds the rule.

use super::SubscriberKey;
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::SharedEvent;

/// One subscription, as fan-out sees it.
pub(crate) struct Subscriber<S> {
    /// Whose it is; events carry its subscription id.
    pub(crate) key: SubscriberKey,
    /// Where its events are queued.
    pub(crate) mailbox: Mailbox,
    /// What the source keeps for it (`()` for topics).
    pub(crate) state: S,
}

/// What [`Registry::deliver`] does with one subscriber for one event.
pub(crate) enum Step {
    /// Nothing for this subscriber this time; it stays.
    Skip,
    /// Queue this event. A subscriber whose queue is full or gone is removed (a drop).
    Deliver(SharedEvent),
    /// Queue these events, in order (a squash window's); as `Deliver` if one does not fit.
    Several(Vec<SharedEvent>),
    /// Queue this event, the subscription's last (the source ends it, e.g. a table reset), and
    /// remove the subscriber. Counted as ended when queued, as dropped when not.
    End(SharedEvent),
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers whose queue took the event and that stay subscribed.
    pub delivered: usize,
    /// Subscribers removed because their queue was full or closed.
    pub dropped: usize,
    /// Subscribers that took their last event ([`Step::End`]) and were removed.
    pub ended: usize,
    /// Events queued, counted per subscriber (a squash window sent at once counts each of its
    /// events; a last event counts too): what `/v1/stats` calls deliveries.
    pub events: usize,
}

/// What [`Registry::visit`] does with the subscriber after the visit.
pub(crate) enum Visit<R> {
    /// It stays; the visit's answer.
    Keep(R),
    /// It is removed (not counted as a drop); the visit's answer.
    Remove(R),
}

/// The one delivery rule: queues what `step` gave one subscriber without waiting, counts it in
/// `fanout`, and answers whether the subscriber stays (not when its queue was full or closed,
/// nor when `step` ended it).
pub(super) fn deliver_one<S>(
    subscriber: &mut Subscriber<S>,
    step: Step,
    fanout: &mut Fanout,
) -> bool {
    let id = subscriber.key.subscription_id;
    let mut queued_events = 0;
    let mut queue = |event| {
        let item = Outbound::Event {
            subscription_id: id,
            event,
        };
        let queued = subscriber.mailbox.try_deliver(item).is_ok();
        queued_events += usize::from(queued);
        queued
    };
    let (queued, last) = match step {
        Step::Skip => return true,
        Step::Deliver(event) => (queue(event), false),
        Step::Several(events) if events.is_empty() => return true,
        Step::Several(events) => (events.into_iter().all(&mut queue), false),
        Step::End(event) => (queue(event), true),
    };
    fanout.events += queued_events;
    match (queued, last) {
        (true, false) => fanout.delivered += 1,
        (true, true) => fanout.ended += 1,
        (false, _) => fanout.dropped += 1,
    }
    queued && !last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{mailbox, Closer, Inbox, QueueLimits};
    use crate::protocol::{share_event, EventBody};
    use tokio_util::sync::CancellationToken;

    fn ready() -> SharedEvent {
        share_event(b"", EventBody::Ready)
    }

    /// The rule over a list, as the registry applies it to a key's subscribers.
    fn deliver<S>(
        subscribers: &mut Vec<Subscriber<S>>,
        mut step: impl FnMut(&mut Subscriber<S>) -> Step,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        subscribers.retain_mut(|subscriber| {
            let step = step(subscriber);
            deliver_one(subscriber, step, &mut fanout)
        });
        fanout
    }

    fn subscriber(
        state: u32,
        queue: usize,
        shutdown: &CancellationToken,
    ) -> (Subscriber<u32>, Inbox) {
        let (mailbox, inbox) = mailbox(QueueLimits::new(queue, 1 << 20), Closer::new(shutdown));
        let key = SubscriberKey {
            connection: state.into(),
            subscription_id: 10 + u64::from(state),
        };
        (
            Subscriber {
                key,
                mailbox,
                state,
            },
            inbox,
        )
    }

    #[tokio::test]
    async fn each_subscriber_is_skipped_served_ended_or_dropped_and_counted() {
        let shutdown = CancellationToken::new();
        let mut subscribers = Vec::new();
        let mut inboxes = Vec::new();
        for state in 0..3 {
            let (subscriber, inbox) = subscriber(state, 8, &shutdown);
            subscribers.push(subscriber);
            inboxes.push(inbox);
        }
        let (full, _full_inbox) = subscriber(3, 2, &shutdown);
        let full_closer = full.mailbox.closer().clone();
        subscribers.push(full);
        let step = |subscriber: &mut Subscriber<u32>| match subscriber.state {
            0 => Step::Skip,
            2 => Step::End(ready()),
            _ => Step::Deliver(ready()),
        };
        let first = deliver(&mut subscribers, step);
        assert_eq!(
            first,
            Fanout {
                delivered: 2,
                dropped: 0,
                ended: 1,
                events: 3,
            }
        );
        let states: Vec<u32> = subscribers.iter().map(|s| s.state).collect();
        assert_eq!(states, [0, 1, 3], "the ended one is removed");
        let second = deliver(&mut subscribers, step);
        let third = deliver(&mut subscribers, step);
        assert_eq!((second.delivered, second.dropped), (2, 0));
        assert_eq!(
            (third.delivered, third.dropped),
            (1, 1),
            "a full queue is a drop"
        );
        assert!(full_closer.is_closed(), "closed as a slow consumer");
        let states: Vec<u32> = subscribers.iter().map(|s| s.state).collect();
        assert_eq!(states, [0, 1]);
        let got: Vec<Vec<u64>> = inboxes
            .iter_mut()
            .map(|inbox| {
                std::iter::from_fn(|| inbox.try_recv())
                    .map(|item| match item {
                        Outbound::Event {
                            subscription_id, ..
                        } => subscription_id,
                        other => panic!("expected an event, got {other:?}"),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            got,
            [vec![], vec![11, 11, 11], vec![12]],
            "each with its own id"
        );
    }
}
