//! One connection's outbound queue ("mailbox") and its close switch.
//!
//! The queue is a bounded `tokio::sync::mpsc` channel of `limits.outbound_queue` messages, read by
//! the connection's writer task. Two kinds of writers use it differently:
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
use tokio::sync::mpsc;
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
    /// The client closed, or the session ended normally.
    Normal,
    /// The server is shutting down.
    ShuttingDown,
    /// Fan-out found the outbound queue full.
    SlowConsumer {
        /// The queue's capacity, for the reason text.
        capacity: usize,
    },
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
            Self::Normal | Self::TransportError => 1000,
            Self::ShuttingDown => 1001,
            Self::FrameTooLarge => 1009,
            Self::IdleTimeout => 4000,
            Self::SlowConsumer { .. } => 4008,
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
            Self::Normal | Self::TransportError => String::new(),
            Self::ShuttingDown => "SHUTTING_DOWN: the server is shutting down".into(),
            Self::FrameTooLarge => {
                "LIMIT_EXCEEDED: frame larger than websocket.max_frame_size".into()
            }
            Self::IdleTimeout => "IDLE_TIMEOUT: nothing received within the idle timeout".into(),
            Self::SlowConsumer { capacity } => {
                format!("SLOW_CONSUMER: outbound queue full ({capacity} messages)")
            }
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

/// The sending side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Outbound>,
    closer: Closer,
    capacity: usize,
}

/// Creates a mailbox of `capacity` messages and the receiver its writer reads.
pub fn mailbox(capacity: usize, closer: Closer) -> (Mailbox, mpsc::Receiver<Outbound>) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        Mailbox {
            tx,
            closer,
            capacity,
        },
        rx,
    )
}

impl Mailbox {
    /// Queues without waiting; on a full queue closes the connection as a slow consumer.
    pub fn try_deliver(&self, item: Outbound) -> Result<(), Undeliverable> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer.close(CloseReason::SlowConsumer {
                    capacity: self.capacity,
                });
                Err(Undeliverable::Overflow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Undeliverable::Closed),
        }
    }

    /// Queues, waiting for room; gives up when the connection closes. Cancel safe: if cancelled,
    /// nothing was queued.
    pub async fn send(&self, item: Outbound) -> Result<(), Undeliverable> {
        tokio::select! {
            sent = self.tx.send(item) => sent.map_err(|_| Undeliverable::Closed),
            () = self.closer.closed() => Err(Undeliverable::Closed),
        }
    }

    /// Reserves one slot, waiting for room, so that a message can later be queued without
    /// waiting (for example under a registry lock). Cancel safe.
    pub async fn reserve(&self) -> Result<mpsc::Permit<'_, Outbound>, Undeliverable> {
        tokio::select! {
            permit = self.tx.reserve() => permit.map_err(|_| Undeliverable::Closed),
            () = self.closer.closed() => Err(Undeliverable::Closed),
        }
    }

    /// The connection's closer.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let shutdown = CancellationToken::new();
        let (mailbox, mut rx) = mailbox(2, Closer::new(&shutdown));
        let frame = || Outbound::Frame(Bytes::from_static(b"x"));
        assert_eq!(mailbox.try_deliver(frame()), Ok(()));
        assert_eq!(mailbox.try_deliver(frame()), Ok(()));
        assert_eq!(mailbox.try_deliver(frame()), Err(Undeliverable::Overflow));
        assert!(mailbox.closer().is_closed());
        assert_eq!(mailbox.closer().reason().code(), 4008);
        // What was queued before the overflow is still there, in order.
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
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
