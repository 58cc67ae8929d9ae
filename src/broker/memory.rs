//! The in-process broker: topics that live inside this feedgate process.
//!
//! A publish is numbered, encoded once, kept in its topic's history ([`history`]) and queued to
//! every current subscriber of the topic before `Published` is answered. Offsets come from one
//! counter per process, so within a topic they strictly increase (they are not dense per topic),
//! and every cursor carries the process's epoch.
//!
//! A subscriber may start from kept messages: `resume_from` a cursor (the messages after it),
//! `EARLIEST` (every kept message) or `OFFSET` (the kept messages from that offset on). It is
//! registered *catching up* under the topic's history lock, with the kept messages it asked for
//! copied; its own task sends them (waiting for room, paced like snapshots), then the live
//! messages published meanwhile (which fan-out buffered for it, [`TopicState`]), then `Ready`,
//! and the subscription is live. When what it asked for is no longer kept entirely (the history
//! moved past it, the server restarted since the cursor, the cursor is not an in-process one) the
//! answer is `RESUME_UNAVAILABLE`: never a silent gap.
//!
//! Wildcards are not supported; a topic name matches only itself.

mod history;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{cannot_start_there, ReadyAt, Receipt, TopicRegistration, TopicSubscribe};
use crate::config::MemoryConfig;
use crate::cursor::Cursor;
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::{
    encode_event, now_micros, share_event, Code, EventBody, Failure, SharedEvent, StartPosition,
    TopicMessage,
};
use crate::registry::squash::{batch, Offer, Squash, Squashing, Window};
use crate::registry::{Registry, Step, SubscriberKey, Visit};
use crate::row_filter::{Inspected, MessageFilter};
use history::Histories;

/// Live messages a catching-up subscriber may have buffered for it; past it, its connection is
/// closed as a slow consumer (4008), as when its outbound queue is full.
const CATCH_UP_BUFFER: usize = 1024;

/// What fan-out keeps for one topic subscription: its filter, its squash window when it asked
/// for one, and, while it catches up on kept messages, the live ones published meanwhile. Only
/// in-process topics catch up; every other topic subscriber is live from the start.
#[derive(Default)]
pub struct TopicState {
    catching_up: Option<Box<CatchUp>>,
    filter: Option<Arc<MessageFilter>>,
    squash: Option<Box<Window<SharedEvent>>>,
}

#[derive(Default)]
struct CatchUp {
    buffer: Vec<SharedEvent>,
    overflowed: bool,
}

impl TopicState {
    /// A live subscriber's state, with its filter and squash interval.
    pub(crate) fn new(filter: Option<Arc<MessageFilter>>, squash: Option<Squash>) -> Self {
        Self {
            catching_up: None,
            filter,
            squash: squash.map(|squash| Box::new(Window::new(squash))),
        }
    }

    fn catching_up(filter: Option<Arc<MessageFilter>>, squash: Option<Squash>) -> Self {
        Self {
            catching_up: Some(Box::default()),
            ..Self::new(filter, squash)
        }
    }

    /// Whether this subscriber's filter lets `message` through (no filter: every message).
    pub(crate) fn admits(&self, message: &Inspected<'_>) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(message))
    }

    /// What this subscriber gets of a live `event` of a message with `key` (empty: none): the
    /// event, a place in its squash window, or (catching up) a place in its buffer.
    pub(crate) fn step(&mut self, event: &SharedEvent, key: &str) -> Step {
        if let Some(catch_up) = &mut self.catching_up {
            if catch_up.buffer.len() >= CATCH_UP_BUFFER {
                catch_up.overflowed = true;
                catch_up.buffer = Vec::new();
            } else if !catch_up.overflowed {
                catch_up.buffer.push(event.clone());
            }
            return Step::Skip;
        }
        let Some(window) = &mut self.squash else {
            return Step::Deliver(event.clone());
        };
        let key = (!key.is_empty()).then_some(key.as_bytes());
        match window.offer(key, event.clone(), |_, newer| Some(newer)) {
            Offer::Now(event) => Step::Deliver(event),
            Offer::Held => Step::Skip,
            Offer::Early(events) => batch(events),
        }
    }
}

impl Squashing for TopicState {
    fn wake(&self) -> Option<Arc<Notify>> {
        self.squash.as_ref().map(|window| window.wake())
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.squash.as_ref().and_then(|window| window.deadline())
    }

    fn end(&mut self, now: tokio::time::Instant) -> Step {
        match &mut self.squash {
            Some(window) => batch(window.end(now)),
            None => Step::Skip,
        }
    }
}

/// The in-process broker. Cheap to clone.
#[derive(Clone)]
pub struct MemoryBroker {
    registry: Registry<TopicState>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Identifies this process's offsets, so cursors from another run are recognisable.
    epoch: u64,
    /// Next offset; taken under the topic's history lock (or, without one, its fan-out lock).
    next_offset: AtomicI64,
    histories: Histories,
    /// Where catch-up tasks run, so that shutdown waits for them.
    tasks: TaskTracker,
    /// Stops catch-up tasks.
    shutdown: CancellationToken,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(
            MemoryConfig::default(),
            &TaskTracker::new(),
            CancellationToken::new(),
        )
    }
}

/// Where a subscription asked to start, when not at the next message.
struct From {
    /// The first offset it wants.
    offset: i64,
    /// Whether it must get every message from `offset` on (resume, `OFFSET`), or just what is
    /// kept (`EARLIEST`).
    whole: bool,
}

impl MemoryBroker {
    /// A broker keeping history as `settings` say; catch-up tasks run on `tasks` until
    /// `shutdown`.
    pub fn new(settings: MemoryConfig, tasks: &TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            registry: Registry::default(),
            shared: Arc::new(Shared {
                epoch: uuid::Uuid::new_v4().as_u64_pair().0,
                next_offset: AtomicI64::new(1),
                histories: Histories::new(settings),
                tasks: tasks.clone(),
                shutdown,
            }),
        }
    }

    /// Registers a subscriber; see [`super::Topics::subscribe`] and the module doc.
    pub fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> Result<TopicRegistration, Failure> {
        check_exact(request.topic)?;
        let Some(from) = self.start(&request)? else {
            return Ok(self.subscribe_live(request, announce));
        };
        let histories = &self.shared.histories;
        loop {
            let Some(history) = histories.topic(request.topic) else {
                if !from.whole {
                    // EARLIEST with nothing kept: the next message on.
                    return Ok(self.subscribe_live(request, announce));
                }
                return Err(cannot_start_there(
                    request.topic,
                    "this server keeps no history of the topic now (memory.history_size is 0, \
                     or memory.history_topics topics have history already)",
                ));
            };
            let mut kept = history.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.is_retired() {
                continue; // swept as this subscribe found it: look it up again
            }
            kept.expire(Instant::now(), histories.settings().history_ttl);
            if from.whole && kept.evicted_through() >= from.offset {
                return Err(cannot_start_there(
                    request.topic,
                    "messages after that position are no longer kept (memory.history_size, \
                     history_bytes or history_ttl)",
                ));
            }
            return Ok(self.catch_up(request, &kept, from.offset, announce));
        }
    }

    /// Registers a subscriber that starts with the next message: live at once, its `Ready`
    /// carrying the position it starts after.
    fn subscribe_live(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> TopicRegistration {
        let position = self.position();
        self.registry.subscribe(
            request.topic,
            request.subscriber,
            request.mailbox,
            TopicState::new(request.filter, request.squash),
            || announce(ReadyAt::Now(position)),
        )
    }

    /// The cursor of the newest offset handed out so far: resuming from it gets every message
    /// numbered after this call.
    fn position(&self) -> Bytes {
        let newest = self.shared.next_offset.load(Ordering::Acquire) - 1;
        self.cursor(newest).encode()
    }

    /// Registers a subscriber catching up from `from` with what `kept` holds (under its lock,
    /// so no message is in both or neither) and starts its catch-up task.
    fn catch_up(
        &self,
        request: TopicSubscribe<'_>,
        kept: &history::TopicHistory,
        from: i64,
        announce: impl FnOnce(ReadyAt),
    ) -> TopicRegistration {
        let mut replay = kept.since(from);
        if let Some(filter) = &request.filter {
            replay.retain(|event| {
                event
                    .topic_message()
                    .is_some_and(|message| filter.matches(&Inspected::new(&message)))
            });
        }
        // Under `kept`'s lock, which numbering takes: every message after this position is
        // either in `replay` or will reach the subscriber's buffer.
        let position = self.position();
        let mailbox = request.mailbox.clone();
        let registration = self.registry.subscribe(
            request.topic,
            request.subscriber,
            request.mailbox,
            TopicState::catching_up(request.filter.clone(), request.squash),
            || announce(ReadyAt::AfterReplay),
        );
        let catch_up = run_catch_up(
            self.registry.clone(),
            request.topic.to_owned(),
            request.subscriber,
            mailbox,
            replay,
            position,
        );
        let stop = self.shared.shutdown.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = catch_up => {}
            }
        });
        registration
    }

    /// Where `request` starts: `None` for the next message, else from which offset.
    fn start(&self, request: &TopicSubscribe<'_>) -> Result<Option<From>, Failure> {
        if !request.resume_from.is_empty() {
            let after =
                match Cursor::decode(request.resume_from) {
                    Ok(Cursor::Memory { epoch, offset }) if epoch == self.shared.epoch => offset,
                    Ok(Cursor::Memory { .. }) => return Err(cannot_start_there(
                        request.topic,
                        "the cursor is from another run or node of feedgate: in-process topics \
                         keep their history in this process's memory only",
                    )),
                    Ok(_) => {
                        return Err(cannot_start_there(
                            request.topic,
                            "the cursor is not an in-process topic's (it is a Kafka record's or a \
                         table change's)",
                        ))
                    }
                    Err(err) => {
                        return Err(cannot_start_there(
                            request.topic,
                            &format!("the cursor cannot be read: {err}"),
                        ))
                    }
                };
            return Ok(Some(From {
                offset: after.saturating_add(1),
                whole: true,
            }));
        }
        Ok(match request.start {
            StartPosition::Latest => None,
            StartPosition::Earliest => Some(From {
                offset: i64::MIN,
                whole: false,
            }),
            StartPosition::Offset(offset) => Some(From {
                offset,
                whole: true,
            }),
        })
    }

    /// Numbers the message, keeps it, fans it out, and returns where it landed.
    pub fn publish(&self, mut message: TopicMessage) -> Result<Receipt, Failure> {
        check_exact(&message.topic)?;
        message.timestamp_micros = now_micros();
        loop {
            let history = self.shared.histories.topic(&message.topic);
            let mut kept = history
                .as_ref()
                .map(|history| history.lock().unwrap_or_else(PoisonError::into_inner));
            if kept.as_ref().is_some_and(|kept| kept.is_retired()) {
                continue; // swept as this publish found it: look it up again
            }
            return Ok(self.number_and_deliver(&mut message, kept.as_deref_mut()));
        }
    }

    /// Numbers, keeps and fans out `message` under its topic's history lock (`kept`; `None`
    /// when the topic has no history).
    fn number_and_deliver(
        &self,
        message: &mut TopicMessage,
        kept: Option<&mut history::TopicHistory>,
    ) -> Receipt {
        let histories = &self.shared.histories;
        let offset = self.shared.next_offset.fetch_add(1, Ordering::Relaxed);
        let cursor = self.cursor(offset).encode();
        message.offset = offset;
        let message = &*message;
        // Encoded once: now when the history keeps it, else only if someone listens.
        let mut event = kept
            .is_some()
            .then(|| share_event(&cursor, EventBody::Message(message)));
        if kept.is_none() {
            histories.forget(offset);
        }
        super::fan_out(&self.registry, &message.topic, message, &mut event, || {
            share_event(&cursor, EventBody::Message(message))
        });
        if let (Some(kept), Some(event)) = (kept, event) {
            kept.keep(offset, event, histories.settings());
        }
        Receipt { offset, cursor }
    }

    /// The topics that have kept messages now, sorted (for the catalog).
    pub fn kept_topics(&self) -> Vec<String> {
        self.shared.histories.names()
    }

    /// Whether this broker keeps messages to replay and resume from.
    pub fn keeps_history(&self) -> bool {
        self.shared.histories.enabled()
    }

    /// The registry behind this broker, for statistics.
    pub fn registry(&self) -> &Registry<TopicState> {
        &self.registry
    }

    fn cursor(&self, offset: i64) -> Cursor {
        Cursor::Memory {
            epoch: self.shared.epoch,
            offset,
        }
    }
}

/// Sends a catching-up subscriber its kept messages, then what was published meanwhile, then
/// `Ready`, and makes it live. Ends early when the subscriber goes. `Ready` carries `position`
/// (where the catch-up began) when no message went before it, so that the client has a cursor
/// either way.
async fn run_catch_up(
    registry: Registry<TopicState>,
    topic: String,
    subscriber: SubscriberKey,
    mailbox: Mailbox,
    replay: Vec<SharedEvent>,
    position: Bytes,
) {
    let mut batch = replay;
    let mut sent_any = false;
    loop {
        sent_any |= !batch.is_empty();
        for event in batch {
            if !registry
                .send_waiting(&topic, subscriber, &mailbox, event)
                .await
            {
                return; // unsubscribed, or the connection is closing
            }
        }
        let next = registry.visit(&topic, subscriber, |state| {
            let Some(catch_up) = &mut state.catching_up else {
                return Visit::Keep(Next::Done);
            };
            if catch_up.overflowed {
                return Visit::Remove(Next::Overflowed);
            }
            if !catch_up.buffer.is_empty() {
                return Visit::Keep(Next::Send(std::mem::take(&mut catch_up.buffer)));
            }
            // Under the topic's fan-out lock: Ready precedes every live message.
            state.catching_up = None;
            let cursor = if sent_any { &[][..] } else { &position[..] };
            let ready = encode_event(subscriber.subscription_id, cursor, EventBody::Ready);
            let _ = mailbox.try_deliver(Outbound::Frame(ready));
            Visit::Keep(Next::Done)
        });
        batch = match next {
            Some(Next::Send(events)) => events,
            Some(Next::Done) | None => return,
            Some(Next::Overflowed) => {
                mailbox.close_as_slow_consumer();
                return;
            }
        };
    }
}

/// What a catch-up task does next.
enum Next {
    Send(Vec<SharedEvent>),
    Done,
    Overflowed,
}

/// In-process topics match exactly; wildcard characters would promise a pattern match that this
/// broker does not do.
fn check_exact(topic: &str) -> Result<(), Failure> {
    if topic.contains(['*', '#', '>']) {
        return Err(Failure::new(
            Code::Validation,
            "in-process topics do not support wildcards (*, #, >)",
        )
        .detail("topic", topic));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{mailbox, Closer, Inbox, QueueLimits};
    use crate::protocol::{frame_shared, pb};
    use bytes::Bytes;
    use prost::Message as _;

    fn broker(history_size: usize) -> MemoryBroker {
        let settings = MemoryConfig {
            history_size,
            ..MemoryConfig::default()
        };
        MemoryBroker::new(settings, &TaskTracker::new(), CancellationToken::new())
    }

    fn msg(payload: &'static str) -> TopicMessage {
        TopicMessage {
            topic: "t".into(),
            payload: Bytes::from_static(payload.as_bytes()),
            ..Default::default()
        }
    }

    fn request<'a>(
        id: u64,
        mb: Mailbox,
        cursor: &'a [u8],
        start: StartPosition,
    ) -> TopicSubscribe<'a> {
        TopicSubscribe {
            topic: "t",
            subscriber: SubscriberKey {
                connection: 1,
                subscription_id: id,
            },
            mailbox: mb,
            resume_from: cursor,
            start,
            filter: None,
            squash: None,
        }
    }

    fn publish_all(broker: &MemoryBroker, payloads: &[&'static str]) -> Vec<Receipt> {
        payloads
            .iter()
            .map(|p| broker.publish(msg(p)).expect("accepted"))
            .collect()
    }

    /// What arrived: each message's payload, and `ready` where `Ready` came.
    async fn arrived(inbox: &mut Inbox, count: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < count {
            let item = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.recv())
                .await
                .expect("in time")
                .expect("open");
            let frame = match item {
                Outbound::Event {
                    subscription_id,
                    event,
                } => frame_shared(subscription_id, &event),
                Outbound::Frame(frame) => frame,
            };
            let message = pb::ServerMessage::decode(frame.as_ref()).expect("decodes");
            let Some(pb::server_message::Message::Event(event)) = message.message else {
                panic!("expected an event");
            };
            out.push(match event.body {
                Some(pb::event::Body::Message(m)) => {
                    String::from_utf8(m.payload.to_vec()).expect("utf-8")
                }
                Some(pb::event::Body::Ready(_)) => "ready".into(),
                other => panic!("unexpected {other:?}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn offsets_increase_and_cursors_carry_them() {
        let broker = broker(0);
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let _reg = broker
            .subscribe(request(1, mb, &[], StartPosition::Latest), |_| {})
            .expect("subscribed");
        let first = broker.publish(msg("a")).expect("accepted");
        let second = broker.publish(msg("b")).expect("accepted");
        assert!(second.offset > first.offset);
        assert_eq!(&second.cursor[10..], &second.offset.to_be_bytes());
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
    }

    #[tokio::test]
    async fn a_resume_gets_what_followed_its_cursor_then_ready_then_live_messages() {
        let broker = broker(100);
        let shutdown = CancellationToken::new();
        let receipts = publish_all(&broker, &["a", "b", "c"]);
        let (mb, mut rx) = mailbox(QueueLimits::new(64, 1 << 20), Closer::new(&shutdown));
        let mut told = None;
        let _reg = broker
            .subscribe(
                request(1, mb, &receipts[0].cursor, StartPosition::Latest),
                |at| told = Some(at),
            )
            .expect("resumed");
        assert_eq!(told, Some(ReadyAt::AfterReplay));
        // Published while the catch-up task has not run yet: buffered, sent after the replay.
        broker.publish(msg("d")).expect("accepted");
        assert_eq!(arrived(&mut rx, 4).await, ["b", "c", "d", "ready"]);
        broker.publish(msg("e")).expect("accepted");
        assert_eq!(arrived(&mut rx, 1).await, ["e"]);
        assert!(rx.try_recv().is_none(), "each once");
    }

    #[tokio::test]
    async fn earliest_and_offset_start_from_kept_messages() {
        let broker = broker(100);
        let shutdown = CancellationToken::new();
        let receipts = publish_all(&broker, &["a", "b", "c"]);
        let (mb, mut rx) = mailbox(QueueLimits::new(64, 1 << 20), Closer::new(&shutdown));
        let _all = broker
            .subscribe(request(1, mb.clone(), &[], StartPosition::Earliest), |_| {})
            .expect("earliest");
        assert_eq!(arrived(&mut rx, 4).await, ["a", "b", "c", "ready"]);
        let from_b = StartPosition::Offset(receipts[1].offset);
        let _some = broker
            .subscribe(request(2, mb, &[], from_b), |_| {})
            .expect("offset");
        assert_eq!(arrived(&mut rx, 3).await, ["b", "c", "ready"]);
    }

    #[tokio::test]
    async fn positions_no_longer_kept_or_not_ours_are_refused_with_resume_unavailable() {
        let broker = broker(2);
        let shutdown = CancellationToken::new();
        let receipts = publish_all(&broker, &["a", "b", "c", "d"]);
        let other_run = Cursor::Memory {
            epoch: broker.shared.epoch.wrapping_add(1),
            offset: receipts[3].offset,
        }
        .encode();
        let kafka = Cursor::Kafka {
            partition: 0,
            offset: 1,
        }
        .encode();
        let refused: [(&[u8], StartPosition); 5] = [
            (&receipts[0].cursor, StartPosition::Latest), // b was evicted
            (&[], StartPosition::Offset(receipts[1].offset)),
            (&other_run, StartPosition::Latest),
            (&kafka, StartPosition::Latest),
            (b"\x01m\x00", StartPosition::Latest), // truncated
        ];
        for (cursor, start) in refused {
            let (mb, _rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
            let err = broker
                .subscribe(request(1, mb, cursor, start), |_| panic!("not announced"))
                .expect_err("refused");
            assert_eq!(err.code, Code::ResumeUnavailable, "{err:?}");
        }
        assert_eq!(broker.registry().subscriptions(), 0);
        // c and d are kept: resuming after b loses nothing.
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let _reg = broker
            .subscribe(
                request(1, mb, &receipts[1].cursor, StartPosition::Latest),
                |_| {},
            )
            .expect("kept");
        assert_eq!(arrived(&mut rx, 3).await, ["c", "d", "ready"]);
    }

    #[test]
    fn wildcards_are_refused_with_a_code() {
        let broker = broker(0);
        let msg = TopicMessage {
            topic: "orders.*".into(),
            ..Default::default()
        };
        assert_eq!(
            broker.publish(msg).expect_err("wildcard").code,
            Code::Validation
        );
    }
}
