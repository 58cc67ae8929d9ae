//! One connection's outbound queue ("mailbox") and its close switch.
//!
//! The queue is bounded twice: in messages (`limits.outbound_queue`, a bounded `tokio::sync::mpsc`
//! channel) and in bytes (`limits.outbound_queue_bytes`, a semaphore of byte permits that the
//! writer gives back as it takes each message out). A message is charged its encoded size, at
//! most the whole byte budget (so one message larger than the budget still goes out, alone).
//! The byte bound is what keeps a stalled client's memory small when messages are large; the
//! writer holds at most one batch more in the socket's write buffer. Two kinds of writers use
//! the queue differently:
//! - traffic that can wait (the session's responses, snapshot rows, the replay of changes
//!   buffered during a snapshot, Kafka history) is queued with [`Mailbox::send`], which waits
//!   for room, and only within the **waiting share**: half of each bound. A client that sends
//!   requests but does not read the answers is slowed down (TCP backpressure), a big snapshot
//!   streams as fast as its client reads, and nothing promised is dropped;
//! - live fan-out uses [`Mailbox::try_deliver`], which never waits and may use the whole queue,
//!   so it always finds at least the half that waiting traffic leaves free. When even that is
//!   full the client is not keeping up with its live events, so the connection is closed as a
//!   slow consumer (close code 4008) instead of skipping events silently or letting one client
//!   hold up the others. One connection's snapshots therefore never get it closed as a slow
//!   consumer, however large they are and whatever else it is subscribed to.
//!
//! Everything goes through one FIFO, so each subscription's messages keep their order.
//!
//! Nothing here knows about WebSockets beyond the close codes a [`CloseReason`] maps to.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::protocol::SharedEvent;

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

    fn full_text(&self) -> String {
        match self {
            Self::Normal | Self::ClientClosed | Self::TransportError => String::new(),
            Self::ProtocolError => "INVALID_MESSAGE: WebSocket protocol error".into(),
            Self::InvalidPayload => "INVALID_MESSAGE: text message is not UTF-8".into(),
            Self::ShuttingDown => "SHUTTING_DOWN: the server is shutting down".into(),
            Self::FrameTooLarge => {
                "LIMIT_EXCEEDED: frame larger than websocket.max_frame_size".into()
            }
            Self::IdleTimeout => "IDLE_TIMEOUT: nothing received within the idle timeout".into(),
            Self::SlowConsumer(limits) => format!(
                "SLOW_CONSUMER: outbound queue full (limits {} messages, {} bytes)",
                limits.messages, limits.bytes
            ),
            Self::Unauthenticated(why) => format!("UNAUTHENTICATED: {why}"),
            Self::LimitExceeded(why) => format!("LIMIT_EXCEEDED: {why}"),
        }
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

/// A queued message, what it holds of the byte bound, and whether it came through the waiting
/// share (and then how many of that share's bytes it holds).
#[derive(Debug)]
struct Queued {
    item: Outbound,
    charge: u32,
    waited: Option<u32>,
}

/// The part of the queue that waiting senders may fill: half of each bound, and at least the two
/// messages a topic subscription reserves for its `Subscribed` and `Ready`. Answers, snapshot
/// rows and replays wait for room here first, so however long they stream, live fan-out always
/// finds the other half of the queue (messages and bytes) free for a client that reads; only a
/// client that falls behind its live events fills that half and is closed as a slow consumer.
#[derive(Debug)]
struct WaitingShare {
    messages: Semaphore,
    bytes: Semaphore,
    /// The share's byte bound: what one waiting message is charged against it at most.
    byte_limit: u32,
}

impl WaitingShare {
    fn new(limits: QueueLimits) -> Self {
        let byte_limit = (limits.bytes / 2).max(1);
        Self {
            messages: Semaphore::new((limits.messages / 2).max(2).min(limits.messages)),
            bytes: Semaphore::new(byte_limit),
            // `limits.bytes` fits in u32 (QueueLimits::new).
            byte_limit: byte_limit as u32,
        }
    }
}

/// The sending side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    waiting: Arc<WaitingShare>,
    closer: Closer,
    limits: QueueLimits,
}

/// The receiving side, read by the connection's writer; taking a message out gives its bytes
/// (and its room in the waiting share) back.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<Semaphore>,
    waiting: Arc<WaitingShare>,
}

/// Creates a mailbox bounded by `limits` and the inbox its writer reads.
pub fn mailbox(limits: QueueLimits, closer: Closer) -> (Mailbox, Inbox) {
    let limits = QueueLimits::new(limits.messages, limits.bytes);
    let (tx, rx) = mpsc::channel(limits.messages);
    let bytes = Arc::new(Semaphore::new(limits.bytes));
    let waiting = Arc::new(WaitingShare::new(limits));
    (
        Mailbox {
            tx,
            bytes: bytes.clone(),
            waiting: waiting.clone(),
            closer,
            limits,
        },
        Inbox { rx, bytes, waiting },
    )
}

impl Mailbox {
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

    /// Queues without waiting; on a full queue (messages or bytes) closes the connection as a
    /// slow consumer. Live fan-out uses this: it may fill the whole queue, including what the
    /// waiting share leaves free.
    pub fn try_deliver(&self, item: Outbound) -> Result<(), Undeliverable> {
        let charge = self.charge(&item);
        let Ok(bytes) = self.bytes.try_acquire_many(charge) else {
            return Err(self.overflow());
        };
        let queued = Queued {
            item,
            charge,
            waited: None,
        };
        match self.tx.try_send(queued) {
            Ok(()) => {
                bytes.forget(); // the writer gives them back
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.overflow()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Undeliverable::Closed),
        }
    }

    fn overflow(&self) -> Undeliverable {
        self.close_as_slow_consumer();
        Undeliverable::Overflow
    }

    /// Closes the connection as a slow consumer (4008, naming this queue's limits): its client
    /// is not reading what is queued for it.
    pub fn close_as_slow_consumer(&self) {
        self.closer.close(CloseReason::SlowConsumer(self.limits));
    }

    /// Queues, waiting for room in the waiting share (half of each bound) and in the queue;
    /// gives up when the connection closes. For answers, snapshots and replays: however long
    /// they stream, live fan-out keeps the other half. Cancel safe: if cancelled, nothing was
    /// queued and nothing is held.
    pub async fn send(&self, item: Outbound) -> Result<(), Undeliverable> {
        let room = self.room(self.charge(&item)).await?;
        room.send(item);
        Ok(())
    }

    /// Reserves room for one small control frame in the waiting share, waiting for it, so that
    /// it can later be queued without waiting (for example under a registry lock). Cancel safe.
    pub async fn reserve(&self) -> Result<Reserved<'_>, Undeliverable> {
        self.room(RESERVED_CHARGE.min(self.limits.bytes as u32))
            .await
    }

    /// Reserves room for `item` (charged its size) in the waiting share, waiting for it, so it
    /// can be queued later under a lock. Cancel safe.
    pub async fn reserve_for(&self, item: &Outbound) -> Result<Reserved<'_>, Undeliverable> {
        self.room(self.charge(item)).await
    }

    /// Waits for room for a message charged `charge` bytes: first in the waiting share, then
    /// in the queue (which has it unless live events fill more than their half).
    async fn room(&self, charge: u32) -> Result<Reserved<'_>, Undeliverable> {
        let closed = |_| Undeliverable::Closed;
        let share_charge = charge.min(self.waiting.byte_limit);
        let wait = async {
            let share_slot = self.waiting.messages.acquire().await.map_err(closed)?;
            let share_bytes = self
                .waiting
                .bytes
                .acquire_many(share_charge)
                .await
                .map_err(closed)?;
            let slot = self.tx.reserve().await.map_err(|_| Undeliverable::Closed)?;
            let bytes = self.bytes.acquire_many(charge).await.map_err(closed)?;
            Ok(Reserved {
                slot,
                bytes,
                share_slot,
                share_bytes,
            })
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
    slot: mpsc::Permit<'a, Queued>,
    bytes: SemaphorePermit<'a>,
    share_slot: SemaphorePermit<'a>,
    share_bytes: SemaphorePermit<'a>,
}

impl Reserved<'_> {
    /// Queues `item` in the reserved room. The item is charged the reserved amount whatever
    /// its size (a reservation from [`Mailbox::reserve`] is meant for small control frames).
    pub fn send(self, item: Outbound) {
        let queued = Queued {
            item,
            charge: self.bytes.num_permits() as u32,
            waited: Some(self.share_bytes.num_permits() as u32),
        };
        self.bytes.forget();
        self.share_slot.forget();
        self.share_bytes.forget();
        self.slot.send(queued);
    }
}

impl Inbox {
    /// The next message, waiting for one; `None` when every mailbox is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let queued = self.rx.recv().await?;
        Some(self.release(queued))
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let queued = self.rx.try_recv().ok()?;
        Some(self.release(queued))
    }

    /// Gives back the room a message held.
    fn release(&self, queued: Queued) -> Outbound {
        self.bytes.add_permits(queued.charge as usize);
        if let Some(share_bytes) = queued.waited {
            self.waiting.messages.add_permits(1);
            self.waiting.bytes.add_permits(share_bytes as usize);
        }
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
        // The second fills the waiting share (half of 1000 bytes): a reservation waits for it.
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
    async fn waiting_traffic_fills_half_the_queue_and_live_events_always_find_the_rest() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        // A snapshot streams: four waiting sends (half of 8 messages) fit, the fifth waits.
        for _ in 0..4 {
            mb.send(frame(10)).await.expect("room in the waiting share");
        }
        let fifth = mb.send(frame(10));
        tokio::pin!(fifth);
        assert!(futures_util::poll!(fifth.as_mut()).is_pending());
        // Live fan-out finds the other half, and overflows only past the whole queue.
        for _ in 0..4 {
            assert_eq!(mb.try_deliver(frame(10)), Ok(()));
        }
        assert!(!mb.closer().is_closed());
        assert_eq!(mb.try_deliver(frame(10)), Err(Undeliverable::Overflow));
        assert_eq!(mb.closer().reason().code(), 4008);

        // The smallest queue (2, the configured minimum) still takes the two reservations of a
        // topic subscription.
        let (mb2, _rx) = mailbox(QueueLimits::new(2, 1024), Closer::new(&shutdown));
        let (first, second) = (mb2.reserve().await, mb2.reserve().await);
        assert!(first.is_ok() && second.is_ok());

        // The writer taking a waited message out gives its share back.
        let shutdown = CancellationToken::new();
        let (mb, mut rx2) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        for _ in 0..4 {
            mb.send(frame(10)).await.expect("room");
        }
        let fifth = mb.send(frame(10));
        tokio::pin!(fifth);
        assert!(futures_util::poll!(fifth.as_mut()).is_pending());
        assert!(rx2.recv().await.is_some());
        fifth.await.expect("room after the writer took one");
        drop(rx.try_recv());
    }

    #[tokio::test]
    async fn the_waiting_share_is_half_of_the_byte_bound_too() {
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(100, 10_000), Closer::new(&shutdown));
        let frame = |n: usize| Outbound::Frame(Bytes::from(vec![0u8; n]));
        // 2 x (2000 + overhead) fit in the 5,000-byte share; a third waits.
        mb.send(frame(2000)).await.expect("room");
        mb.send(frame(2000)).await.expect("room");
        let third = mb.send(frame(2000));
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        // Live events use what is left of all 10,000 bytes.
        assert_eq!(mb.try_deliver(frame(2000)), Ok(()));
        assert_eq!(mb.try_deliver(frame(2000)), Ok(()));
        assert_eq!(mb.try_deliver(frame(2000)), Err(Undeliverable::Overflow));
        // A waiting message larger than the share is charged the share: it goes out alone.
        let shutdown = CancellationToken::new();
        let (mb, mut rx2) = mailbox(QueueLimits::new(100, 10_000), Closer::new(&shutdown));
        mb.send(frame(8_000))
            .await
            .expect("room for one large message");
        assert_eq!(
            mb.try_deliver(frame(100)),
            Ok(()),
            "live still fits beside it"
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
}
