//! One connection's outbound queue ("mailbox") and its close switch.
//!
//! The queue is bounded twice: in messages (`limits.outbound_queue`) and in bytes
//! (`limits.outbound_queue_bytes`), each a semaphore of permits that the writer gives back as it
//! takes each message out. A message is charged its encoded size, at most the whole byte budget
//! (so one message larger than the budget still goes out, alone). The byte bound is what keeps a
//! stalled client's memory small when messages are large; the writer holds at most one batch
//! more in the socket's write buffer. Two kinds of traffic share the queue, each with its own
//! budget:
//! - **live events** (fan-out) are queued with [`Mailbox::try_deliver`], which never waits and
//!   has the whole of both bounds to itself. When they fill it, the client is not keeping up with
//!   its live events, so the connection is closed as a slow consumer (close code 4008) instead of
//!   skipping events silently or letting one client hold up the others;
//! - **traffic that can wait**, the session's responses, snapshot rows, the replay of changes
//!   buffered during a snapshot and Kafka history, is queued with [`Mailbox::send`], which waits
//!   for room in a **waiting share** on top of the live bounds: an eighth of each (at least two
//!   messages), enough to keep the socket busy. A client that sends requests but does not read
//!   the answers is slowed down (TCP backpressure), a big snapshot streams as fast as its client
//!   reads, and nothing promised is dropped.
//!
//! So a connection's snapshots never count against its live budget: it is closed as a slow
//! consumer exactly when it would be without them, however large they are and whatever else it
//! is subscribed to. A connection holds at most 9/8 of each bound. Everything goes through one
//! FIFO, so each subscription's messages keep their order (a live event may wait behind at most
//! the waiting share).
//!
//! Beyond the queue lies the socket. Traffic that can wait is also **paced** by the socket's
//! [`backlog`]: it is queued only while the socket holds less than [`UNSENT_LIMIT`] bytes not yet
//! sent, so a client slower than its snapshot does not find the kernel's send buffer full of rows
//! and its live events waiting in the queue behind them; the rest of that buffer absorbs its
//! live events while it pauses.
//!
//! Nothing here knows about WebSockets beyond the close codes a [`CloseReason`] maps to.

mod backlog;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

pub use self::backlog::Backlog;
use crate::protocol::{code_name, Code, SharedEvent};

/// Traffic that can wait is queued only while its socket holds fewer bytes than this not yet
/// sent: enough to keep a fast link busy between two looks, little enough that the rest of a
/// send buffer (the kernel grows it to megabytes) stays free for live events.
pub const UNSENT_LIMIT: usize = 256 * 1024;

/// Bytes of waiting traffic queued between two looks at the socket's backlog (a system call).
const PACE_EVERY: usize = 16 * 1024;

/// How soon a paced sender looks again while the socket's backlog is over the limit; the wait
/// doubles, up to [`PACE_POLL_MAX`], while the backlog stays over it, so that a client that has
/// stopped reading costs a few wake-ups a second, not a thousand.
const PACE_POLL: Duration = Duration::from_millis(1);

/// The longest wait between two looks at a backlog that stays over the limit.
const PACE_POLL_MAX: Duration = Duration::from_millis(16);

/// One item of a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A complete `ServerMessage` frame.
    Frame(Bytes),
    /// An event encoded once for many subscribers; the writer frames it for this subscription.
    Event {
        /// The subscriber's subscription id on this connection.
        subscription_id: u64,
        /// The shared encoding.
        event: SharedEvent,
    },
}

/// Why a connection is being closed; decides the WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The session ended normally (the client's stream ended).
    Normal,
    /// The client sent a close frame: the writer completes the closing handshake by flushing
    /// the WebSocket's answering close frame (RFC 6455 §5.5.1) instead of sending its own.
    ClientClosed,
    /// The client broke the WebSocket protocol (RFC 6455 close code 1002).
    ProtocolError,
    /// The client sent a text message that is not UTF-8 (close code 1007).
    InvalidPayload,
    /// The server is shutting down.
    ShuttingDown,
    /// Fan-out found the outbound queue full.
    SlowConsumer(QueueLimits),
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// A frame larger than `websocket.max_frame_size` arrived.
    FrameTooLarge,
    /// The transport failed; nothing can be sent.
    TransportError,
    /// No valid token arrived in time, the token expired, or the upgrade's token was bad.
    Unauthenticated(String),
    /// A connection limit (per user or tenant) was reached at authentication.
    LimitExceeded(String),
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 codes, and 4000-4999 for feedgate's own).
    pub fn code(&self) -> u16 {
        match self {
            Self::Normal | Self::ClientClosed | Self::TransportError => 1000,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::ShuttingDown => 1001,
            Self::FrameTooLarge => 1009,
            Self::IdleTimeout => 4000,
            Self::SlowConsumer(_) => 4008,
            Self::Unauthenticated(_) => 4001,
            Self::LimitExceeded(_) => 4029,
        }
    }

    /// The close frame's reason text: the protocol error code's name, a colon, an explanation;
    /// at most 123 bytes (a close frame's limit), cut at a character boundary.
    pub fn text(&self) -> String {
        let mut text = self.full_text();
        if text.len() > 123 {
            let cut = (0..=123)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
        }
        text
    }

    /// The protocol error code the close reason names; `None` for a close that explains
    /// nothing (a normal end, the client's close, a dead transport).
    pub fn error_code(&self) -> Option<Code> {
        match self {
            Self::Normal | Self::ClientClosed | Self::TransportError => None,
            Self::ProtocolError | Self::InvalidPayload => Some(Code::InvalidMessage),
            Self::ShuttingDown => Some(Code::ShuttingDown),
            Self::FrameTooLarge | Self::LimitExceeded(_) => Some(Code::LimitExceeded),
            Self::IdleTimeout => Some(Code::IdleTimeout),
            Self::SlowConsumer(_) => Some(Code::SlowConsumer),
            Self::Unauthenticated(_) => Some(Code::Unauthenticated),
        }
    }

    fn full_text(&self) -> String {
        let Some(code) = self.error_code() else {
            return String::new();
        };
        let explanation = match self {
            Self::Normal | Self::ClientClosed | Self::TransportError => String::new(),
            Self::ProtocolError => "WebSocket protocol error".into(),
            Self::InvalidPayload => "text message is not UTF-8".into(),
            Self::ShuttingDown => "the server is shutting down".into(),
            Self::FrameTooLarge => "frame larger than websocket.max_frame_size".into(),
            Self::IdleTimeout => "nothing received within the idle timeout".into(),
            Self::SlowConsumer(limits) => format!(
                "outbound queue full (limits {} messages, {} bytes)",
                limits.messages, limits.bytes
            ),
            Self::Unauthenticated(why) | Self::LimitExceeded(why) => why.clone(),
        };
        format!("{}: {explanation}", code_name(code))
    }
}

/// Closes one connection from anywhere (session, writer, fan-out); the first reason given wins.
#[derive(Debug, Clone)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<OnceLock<CloseReason>>,
}

impl Closer {
    /// A closer that also fires when `parent` (the server's shutdown token) is cancelled.
    pub fn new(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            reason: Arc::new(OnceLock::new()),
        }
    }

    /// Asks the connection to close for `reason`, unless a reason was given already.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Completes once the connection should close. Cancel safe.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// Whether close was asked for.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The reason given, or `ShuttingDown` when only the server's token fired.
    pub fn reason(&self) -> CloseReason {
        match self.reason.get() {
            Some(reason) => reason.clone(),
            None if self.token.is_cancelled() => CloseReason::ShuttingDown,
            None => CloseReason::Normal,
        }
    }
}

/// Fan-out could not deliver to this mailbox; the subscriber must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// The queue was full; the connection is being closed as a slow consumer.
    Overflow,
    /// The connection is gone.
    Closed,
}

/// A connection's outbound queue bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages queued at most.
    pub messages: usize,
    /// Bytes (encoded frames) queued at most; at most `u32::MAX`.
    pub bytes: usize,
}

impl QueueLimits {
    /// Both bounds (bytes are capped at `u32::MAX`, what a semaphore acquire takes).
    pub fn new(messages: usize, bytes: usize) -> Self {
        Self {
            messages: messages.max(1),
            bytes: bytes.clamp(1, u32::MAX as usize),
        }
    }
}

/// What [`Mailbox::reserve`] charges: reserved slots carry small control frames (`Subscribed`,
/// `Ready`), charged this much whatever their size.
const RESERVED_CHARGE: u32 = 64;

/// Bytes a WebSocket binary frame adds to its payload, at most.
const FRAME_OVERHEAD: usize = 14;

/// A queued message, what it holds of the byte bound it was charged to, and which budget that
/// is (live, or the waiting share).
#[derive(Debug)]
struct Queued {
    item: Outbound,
    charge: u32,
    waited: bool,
}

/// One budget: message slots and bytes.
#[derive(Debug)]
struct Budget {
    messages: Semaphore,
    bytes: Semaphore,
    /// The byte bound: what one message is charged against it at most.
    byte_limit: u32,
}

impl Budget {
    fn new(messages: usize, bytes: usize) -> Self {
        Self {
            messages: Semaphore::new(messages),
            bytes: Semaphore::new(bytes),
            // Both budgets' bytes fit in u32 (QueueLimits::new).
            byte_limit: bytes as u32,
        }
    }

    /// The waiting share for `limits`: an eighth of each bound, and at least the two messages
    /// (of [`RESERVED_CHARGE`] bytes) a topic subscription reserves for `Subscribed` and `Ready`.
    fn waiting(limits: QueueLimits) -> Self {
        Self::new(
            (limits.messages / 8).max(2),
            (limits.bytes / 8).max(2 * RESERVED_CHARGE as usize),
        )
    }

    fn give_back(&self, charge: u32) {
        self.messages.add_permits(1);
        self.bytes.add_permits(charge as usize);
    }
}

/// The sending side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Queued>,
    /// `limits`, for live events.
    live: Arc<Budget>,
    /// The waiting share, for traffic that waits for room.
    waiting: Arc<Budget>,
    closer: Closer,
    limits: QueueLimits,
    /// Paces waiting traffic by the socket's backlog; `None`: not paced.
    pacer: Option<Arc<Pacer>>,
}

/// The socket a mailbox's traffic goes to, and how much waiting traffic was queued since the
/// last look at its backlog.
#[derive(Debug)]
struct Pacer {
    backlog: Backlog,
    since_look: AtomicUsize,
}

impl Pacer {
    /// Returns once the socket's unsent bytes are under [`UNSENT_LIMIT`], looking after every
    /// [`PACE_EVERY`] bytes queued. Cancel safe.
    async fn pace(&self, charge: u32) {
        let queued = self
            .since_look
            .fetch_add(charge as usize, Ordering::Relaxed);
        if queued + (charge as usize) < PACE_EVERY {
            return;
        }
        self.since_look.store(0, Ordering::Relaxed);
        let mut wait = PACE_POLL;
        while self
            .backlog
            .unsent()
            .is_some_and(|unsent| unsent >= UNSENT_LIMIT)
        {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(PACE_POLL_MAX);
        }
    }
}

/// The receiving side, read by the connection's writer; taking a message out gives its room
/// back to the budget it came from.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Queued>,
    live: Arc<Budget>,
    waiting: Arc<Budget>,
}

/// Creates a mailbox bounded by `limits` (plus its waiting share) and the inbox its writer
/// reads. The channel itself is unbounded: the two budgets bound what is in it.
pub fn mailbox(limits: QueueLimits, closer: Closer) -> (Mailbox, Inbox) {
    let limits = QueueLimits::new(limits.messages, limits.bytes);
    let (tx, rx) = mpsc::unbounded_channel();
    let live = Arc::new(Budget::new(limits.messages, limits.bytes));
    let waiting = Arc::new(Budget::waiting(limits));
    (
        Mailbox {
            tx,
            live: live.clone(),
            waiting: waiting.clone(),
            closer,
            limits,
            pacer: None,
        },
        Inbox { rx, live, waiting },
    )
}

impl Mailbox {
    /// Paces this mailbox's waiting traffic by `backlog`, the socket its writer writes to (see
    /// the module docs).
    pub fn paced_by(mut self, backlog: Backlog) -> Self {
        self.pacer = Some(Arc::new(Pacer {
            backlog,
            since_look: AtomicUsize::new(0),
        }));
        self
    }

    /// What `item` is charged against the byte bound.
    fn charge(&self, item: &Outbound) -> u32 {
        let size = match item {
            Outbound::Frame(frame) => frame.len(),
            // The writer adds the subscription id and the event's field header.
            Outbound::Event { event, .. } => event.len() + 16,
        } + FRAME_OVERHEAD;
        // `limits.bytes` fits in u32 (QueueLimits::new).
        size.min(self.limits.bytes) as u32
    }

    /// Queues a live event without waiting; when the live budget is full (messages or bytes)
    /// closes the connection as a slow consumer.
    pub fn try_deliver(&self, item: Outbound) -> Result<(), Undeliverable> {
        if self.tx.is_closed() {
            return Err(Undeliverable::Closed);
        }
        let charge = self.charge(&item);
        let (Ok(slot), Ok(bytes)) = (
            self.live.messages.try_acquire(),
            self.live.bytes.try_acquire_many(charge),
        ) else {
            return Err(self.overflow());
        };
        let queued = Queued {
            item,
            charge,
            waited: false,
        };
        if self.tx.send(queued).is_err() {
            return Err(Undeliverable::Closed);
        }
        // The writer gives them back.
        slot.forget();
        bytes.forget();
        Ok(())
    }

    fn overflow(&self) -> Undeliverable {
        self.close_as_slow_consumer();
        Undeliverable::Overflow
    }

    /// The bounds this mailbox's live events are queued within.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Closes the connection as a slow consumer (4008, naming this queue's limits): its client
    /// is not reading what is queued for it.
    pub fn close_as_slow_consumer(&self) {
        self.closer.close(CloseReason::SlowConsumer(self.limits));
    }

    /// Queues, waiting for room in the waiting share; gives up when the connection closes. For
    /// answers, snapshots and replays: however long they stream, they take nothing from the
    /// live budget. Cancel safe: if cancelled, nothing was queued and nothing is held.
    pub async fn send(&self, item: Outbound) -> Result<(), Undeliverable> {
        let room = self.room(self.charge(&item)).await?;
        room.send(item);
        Ok(())
    }

    /// Reserves room for one small control frame in the waiting share, waiting for it, so that
    /// it can later be queued without waiting (for example under a registry lock). Cancel safe.
    pub async fn reserve(&self) -> Result<Reserved<'_>, Undeliverable> {
        self.room(RESERVED_CHARGE).await
    }

    /// Reserves room for `item` (charged its size) in the waiting share, waiting for it, so it
    /// can be queued later under a lock. Cancel safe.
    pub async fn reserve_for(&self, item: &Outbound) -> Result<Reserved<'_>, Undeliverable> {
        self.room(self.charge(item)).await
    }

    /// Waits for room in the waiting share for a message charged `charge` bytes (at most the
    /// share's byte bound), and for the socket's backlog to be under the limit.
    async fn room(&self, charge: u32) -> Result<Reserved<'_>, Undeliverable> {
        let charge = charge.min(self.waiting.byte_limit);
        let wait = async {
            if let Some(pacer) = &self.pacer {
                pacer.pace(charge).await;
            }
            let slot = self.waiting.messages.acquire().await;
            let bytes = self.waiting.bytes.acquire_many(charge).await;
            match (slot, bytes) {
                (Ok(slot), Ok(bytes)) if !self.tx.is_closed() => Ok(Reserved {
                    tx: &self.tx,
                    slot,
                    bytes,
                }),
                _ => Err(Undeliverable::Closed),
            }
        };
        tokio::select! {
            room = wait => room,
            () = self.closer.closed() => Err(Undeliverable::Closed),
        }
    }

    /// The connection's closer.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

/// Room for one message in a mailbox's waiting share; dropping it unused gives the room back.
pub struct Reserved<'a> {
    tx: &'a mpsc::UnboundedSender<Queued>,
    slot: SemaphorePermit<'a>,
    bytes: SemaphorePermit<'a>,
}

impl Reserved<'_> {
    /// Queues `item` in the reserved room. The item is charged the reserved amount whatever
    /// its size (a reservation from [`Mailbox::reserve`] is meant for small control frames).
    pub fn send(self, item: Outbound) {
        let queued = Queued {
            item,
            charge: self.bytes.num_permits() as u32,
            waited: true,
        };
        // A closed channel (the writer is gone) drops the item and, with it, the room.
        if self.tx.send(queued).is_ok() {
            self.slot.forget();
            self.bytes.forget();
        }
    }
}

impl Inbox {
    /// The next message, waiting for one; `None` when every mailbox is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let queued = self.rx.recv().await?;
        Some(self.release(queued))
    }

    /// Messages queued and not taken yet.
    #[allow(clippy::len_without_is_empty)] // nothing asks whether it is empty
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let queued = self.rx.try_recv().ok()?;
        Some(self.release(queued))
    }

    /// Gives back the room a message held.
    fn release(&self, queued: Queued) -> Outbound {
        let budget = if queued.waited {
            &self.waiting
        } else {
            &self.live
        };
        budget.give_back(queued.charge);
        queued.item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(2, 1 << 20), Closer::new(&shutdown));
        let frame = || Outbound::Frame(Bytes::from_static(b"x"));
        assert_eq!(mb.try_deliver(frame()), Ok(()));
        assert_eq!(mb.try_deliver(frame()), Ok(()));
        assert_eq!(mb.try_deliver(frame()), Err(Undeliverable::Overflow));
        assert!(mb.closer().is_closed());
        assert_eq!(mb.closer().reason().code(), 4008);
        // What was queued before the overflow is still there, in order.
        assert!(rx.try_recv().is_some() && rx.try_recv().is_some() && rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_too() {
        let shutdown = CancellationToken::new();
        let limits = QueueLimits::new(1000, 10_000);
        let (mb, mut rx) = mailbox(limits, Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        // 3 x (3000 + overhead) fit, a fourth does not: far fewer than 1000 messages.
        for _ in 0..3 {
            assert_eq!(mb.try_deliver(frame(3000)), Ok(()));
        }
        assert_eq!(mb.try_deliver(frame(3000)), Err(Undeliverable::Overflow));
        assert_eq!(mb.closer().reason(), CloseReason::SlowConsumer(limits));
        assert!(mb.closer().reason().text().contains("10000 bytes"));
        assert!(rx.try_recv().is_some());

        // Taking messages out gives their bytes back; a message larger than the whole budget
        // is charged the budget, so it goes out when the queue is empty (and only then).
        let (mb, mut rx) = mailbox(limits, Closer::new(&shutdown));
        assert_eq!(mb.try_deliver(frame(50_000)), Ok(()));
        assert_eq!(mb.try_deliver(frame(1)), Err(Undeliverable::Overflow));
        let (mb, mut rx2) = mailbox(limits, Closer::new(&shutdown));
        assert_eq!(mb.try_deliver(frame(9_000)), Ok(()));
        assert!(rx2.try_recv().is_some());
        assert_eq!(mb.try_deliver(frame(9_000)), Ok(()));
        assert!(rx.try_recv().is_some());
    }

    #[tokio::test]
    async fn waiting_sends_wait_for_bytes_and_reservations_give_room_back() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(100, 1000), Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        mb.send(frame(600)).await.expect("room");
        let second = mb.send(frame(600));
        tokio::pin!(second);
        assert!(
            futures_util::poll!(second.as_mut()).is_pending(),
            "no room for 600 more bytes"
        );
        assert!(rx.recv().await.is_some());
        second.await.expect("room after the writer took the first");
        // The second fills the waiting share (128 bytes at least): a reservation waits for it.
        assert!(futures_util::poll!(Box::pin(mb.reserve())).is_pending());
        assert!(rx.try_recv().is_some());
        // A reservation dropped unused holds nothing.
        let reserved = mb.reserve().await.expect("room");
        drop(reserved);
        let reserved = mb.reserve().await.expect("room");
        reserved.send(frame(3));
        assert!(rx.try_recv().is_some());
        assert_eq!(mb.try_deliver(frame(900)), Ok(()), "all bytes back");
    }

    #[tokio::test]
    async fn waiting_traffic_has_its_own_share_and_takes_nothing_from_live_events() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        // A snapshot streams: two waiting sends (an eighth of 16 messages) fit, the third waits.
        for _ in 0..2 {
            mb.send(frame(10)).await.expect("room in the waiting share");
        }
        let third = mb.send(frame(10));
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        // Live fan-out still has all 16 messages, and overflows only past them.
        for _ in 0..16 {
            assert_eq!(mb.try_deliver(frame(10)), Ok(()));
        }
        assert!(!mb.closer().is_closed());
        assert_eq!(mb.try_deliver(frame(10)), Err(Undeliverable::Overflow));
        assert_eq!(mb.closer().reason().code(), 4008);

        // The writer taking a waited message out gives its share back; one FIFO keeps order.
        let shutdown = CancellationToken::new();
        let (mb, mut rx2) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        mb.send(frame(1)).await.expect("room");
        assert_eq!(mb.try_deliver(frame(2)), Ok(()));
        mb.send(frame(3)).await.expect("room");
        let fourth = mb.send(frame(4));
        tokio::pin!(fourth);
        assert!(futures_util::poll!(fourth.as_mut()).is_pending());
        let len = |item: Option<Outbound>| match item {
            Some(Outbound::Frame(frame)) => frame.len(),
            other => panic!("expected a frame, got {other:?}"),
        };
        assert_eq!(len(rx2.recv().await), 1);
        fourth.await.expect("room after the writer took one");
        let order: Vec<usize> = (0..3).map(|_| len(rx2.try_recv())).collect();
        assert_eq!(order, [2, 3, 4]);

        // The smallest queue (2, the configured minimum) still takes the two reservations of a
        // topic subscription.
        let (small, _rx) = mailbox(QueueLimits::new(2, 1024), Closer::new(&shutdown));
        let (first, second) = (small.reserve().await, small.reserve().await);
        assert!(first.is_ok() && second.is_ok());
        drop(rx.try_recv());
    }

    #[tokio::test]
    async fn the_waiting_share_is_an_eighth_of_the_byte_bound_too() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(100, 16_000), Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        // 1000 + overhead fits in the 2,000-byte share; a second one waits.
        mb.send(frame(1000)).await.expect("room");
        let second = mb.send(frame(1000));
        tokio::pin!(second);
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        // Live events have all 16,000 bytes.
        for _ in 0..3 {
            assert_eq!(mb.try_deliver(frame(5000)), Ok(()));
        }
        assert_eq!(mb.try_deliver(frame(1000)), Err(Undeliverable::Overflow));
        // A waiting message larger than the share is charged the share: it goes out alone.
        let (mb, mut rx2) = mailbox(QueueLimits::new(100, 16_000), Closer::new(&shutdown));
        mb.send(frame(8_000))
            .await
            .expect("room for one large message");
        assert_eq!(
            mb.try_deliver(frame(15_000)),
            Ok(()),
            "live has its own bytes"
        );
        assert!(rx2.try_recv().is_some() && rx2.try_recv().is_some());
        assert!(rx.try_recv().is_some());
    }

    #[tokio::test]
    async fn server_shutdown_reaches_every_closer() {
        let shutdown = CancellationToken::new();
        let closer = Closer::new(&shutdown);
        shutdown.cancel();
        closer.closed().await;
        assert_eq!(closer.reason(), CloseReason::ShuttingDown);
        // Shutdown is inferred from the token, not stored: an explicit reason still takes.
        closer.close(CloseReason::IdleTimeout);
        assert_eq!(closer.reason(), CloseReason::IdleTimeout);
    }

    /// Waiting traffic waits while its socket holds [`UNSENT_LIMIT`] bytes or more not yet sent,
    /// and goes once the peer has read them; live traffic does not wait for the socket.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn waiting_traffic_is_paced_by_the_sockets_unsent_bytes() {
        use std::time::Duration;
        use tokio::io::AsyncReadExt;

        // A large send buffer and a small receive buffer: the writer's unsent bytes pile up
        // well past the limit once the reader stops reading.
        let listening = tokio::net::TcpSocket::new_v4().expect("socket");
        listening
            .set_recv_buffer_size(64 * 1024)
            .expect("SO_RCVBUF");
        listening
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = listening.local_addr().expect("addr");
        let listener = listening.listen(1).expect("listen");
        let connecting = tokio::net::TcpSocket::new_v4().expect("socket");
        connecting.set_send_buffer_size(4 << 20).expect("SO_SNDBUF");
        let (writer, accepted) = tokio::join!(connecting.connect(addr), listener.accept());
        let (writer, (mut reader, _)) = (writer.expect("connect"), accepted.expect("accept"));
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0usize;
        while let Ok(n) = writer.try_write(&chunk) {
            written += n;
        }
        let backlog = Backlog::of(&writer);
        assert!(
            backlog.unsent().expect("linux tells") >= UNSENT_LIMIT,
            "the socket holds {written} bytes written, not enough unsent"
        );

        let shutdown = CancellationToken::new();
        let (mb, _rx) = mailbox(QueueLimits::new(16, 1 << 20), Closer::new(&shutdown));
        let mb = mb.paced_by(backlog);
        let frame = || Outbound::Frame(Bytes::from(vec![0u8; PACE_EVERY]));
        assert_eq!(mb.try_deliver(frame()), Ok(()), "live traffic is not paced");
        let waiting = tokio::time::timeout(Duration::from_millis(200), mb.send(frame())).await;
        assert!(
            waiting.is_err(),
            "a waiting send went ahead of a full socket"
        );

        // The peer reads everything: the next waiting send goes.
        let mut left = written;
        let mut buffer = vec![0u8; 64 * 1024];
        while left > 0 {
            left -= reader.read(&mut buffer).await.expect("read");
        }
        let sent = tokio::time::timeout(Duration::from_secs(5), mb.send(frame())).await;
        assert_eq!(sent.expect("it went once the socket drained"), Ok(()));
    }

    #[test]
    fn close_texts_spell_the_error_code_names() {
        let cases = [
            (CloseReason::Normal, ""),
            (CloseReason::ClientClosed, ""),
            (CloseReason::TransportError, ""),
            (
                CloseReason::ProtocolError,
                "INVALID_MESSAGE: WebSocket protocol error",
            ),
            (
                CloseReason::InvalidPayload,
                "INVALID_MESSAGE: text message is not UTF-8",
            ),
            (
                CloseReason::ShuttingDown,
                "SHUTTING_DOWN: the server is shutting down",
            ),
            (
                CloseReason::FrameTooLarge,
                "LIMIT_EXCEEDED: frame larger than websocket.max_frame_size",
            ),
            (
                CloseReason::IdleTimeout,
                "IDLE_TIMEOUT: nothing received within the idle timeout",
            ),
            (
                CloseReason::SlowConsumer(QueueLimits::new(2, 100)),
                "SLOW_CONSUMER: outbound queue full (limits 2 messages, 100 bytes)",
            ),
            (
                CloseReason::Unauthenticated("token expired".into()),
                "UNAUTHENTICATED: token expired",
            ),
            (
                CloseReason::LimitExceeded("user alice".into()),
                "LIMIT_EXCEEDED: user alice",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.text(), text, "{reason:?}");
        }
    }
}
