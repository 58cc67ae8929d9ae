//! One connection's outbound queue ("mailbox") and its close switch.
//!
//! The queue is bounded twice: in messages (`limits.outbound_queue`, a bounded `tokio::sync::mpsc`
//! channel) and in bytes (`limits.outbound_queue_bytes`, a semaphore of byte permits that the
//! writer gives back as it takes each message out). A message is charged its encoded size, at
//! most the whole byte budget (so one message larger than the budget still goes out, alone).
//! The byte bound is what keeps a stalled client's memory small when messages are large; the
//! writer holds at most one batch more in the socket's write buffer. Two kinds of writers use
//! the queue differently:
//! - the session queues its own responses with [`Mailbox::send`], which waits for room: a client
//!   that sends requests but does not read the answers is slowed down (TCP backpressure), and
//!   nothing it was promised is dropped;
//! - sources fan out with [`Mailbox::try_deliver`], which never waits: when the queue is full the
//!   client is not keeping up, so the connection is closed as a slow consumer (close code 4008)
//!   instead of skipping events silently or letting one client hold up the others.
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

/// A queued message and the byte permits it holds.
type Queued = (Outbound, u32);

/// The sending side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    closer: Closer,
    limits: QueueLimits,
}

/// The receiving side, read by the connection's writer; taking a message out gives its bytes
/// back.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<Semaphore>,
}

/// Creates a mailbox bounded by `limits` and the inbox its writer reads.
pub fn mailbox(limits: QueueLimits, closer: Closer) -> (Mailbox, Inbox) {
    let limits = QueueLimits::new(limits.messages, limits.bytes);
    let (tx, rx) = mpsc::channel(limits.messages);
    let bytes = Arc::new(Semaphore::new(limits.bytes));
    (
        Mailbox {
            tx,
            bytes: bytes.clone(),
            closer,
            limits,
        },
        Inbox { rx, bytes },
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
    /// slow consumer.
    pub fn try_deliver(&self, item: Outbound) -> Result<(), Undeliverable> {
        let charge = self.charge(&item);
        let Ok(bytes) = self.bytes.try_acquire_many(charge) else {
            return Err(self.overflow());
        };
        match self.tx.try_send((item, charge)) {
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

    /// Queues, waiting for room (messages and bytes); gives up when the connection closes.
    /// Cancel safe: if cancelled, nothing was queued and nothing is held.
    pub async fn send(&self, item: Outbound) -> Result<(), Undeliverable> {
        let charge = self.charge(&item);
        let queue = async {
            let slot = self.tx.reserve().await.map_err(|_| Undeliverable::Closed)?;
            let bytes = self
                .bytes
                .acquire_many(charge)
                .await
                .map_err(|_| Undeliverable::Closed)?;
            bytes.forget();
            slot.send((item, charge));
            Ok(())
        };
        tokio::select! {
            queued = queue => queued,
            () = self.closer.closed() => Err(Undeliverable::Closed),
        }
    }

    /// Reserves room for one small control frame, waiting for it, so that it can later be
    /// queued without waiting (for example under a registry lock). Cancel safe.
    pub async fn reserve(&self) -> Result<Reserved<'_>, Undeliverable> {
        let reserve = async {
            let slot = self.tx.reserve().await.map_err(|_| Undeliverable::Closed)?;
            let bytes = self
                .bytes
                .acquire_many(RESERVED_CHARGE.min(self.limits.bytes as u32))
                .await
                .map_err(|_| Undeliverable::Closed)?;
            Ok(Reserved { slot, bytes })
        };
        tokio::select! {
            reserved = reserve => reserved,
            () = self.closer.closed() => Err(Undeliverable::Closed),
        }
    }

    /// The connection's closer.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

/// Room for one control frame in a mailbox; dropping it unused gives the room back.
pub struct Reserved<'a> {
    slot: mpsc::Permit<'a, Queued>,
    bytes: SemaphorePermit<'a>,
}

impl Reserved<'_> {
    /// Queues `item` in the reserved room. Meant for small control frames: the item is charged
    /// the reserved amount whatever its size.
    pub fn send(self, item: Outbound) {
        let charge = self.bytes.num_permits() as u32;
        self.bytes.forget();
        self.slot.send((item, charge));
    }
}

impl Inbox {
    /// The next message, waiting for one; `None` when every mailbox is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let (item, charge) = self.rx.recv().await?;
        self.bytes.add_permits(charge as usize);
        Some(item)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let (item, charge) = self.rx.try_recv().ok()?;
        self.bytes.add_permits(charge as usize);
        Some(item)
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
        // A reservation dropped unused holds nothing.
        let reserved = mb.reserve().await.expect("room");
        drop(reserved);
        assert!(rx.try_recv().is_some());
        let reserved = mb.reserve().await.expect("room");
        reserved.send(frame(3));
        assert!(rx.try_recv().is_some());
        assert_eq!(mb.try_deliver(frame(900)), Ok(()), "all bytes back");
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
