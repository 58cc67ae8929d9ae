//! One WebSocket client: the reader loop, the writer, and the commands in between.
//!
//! A connection runs as one task with two halves joined: the reader ([`run`]'s loop) decodes
//! frames and hands requests to the [`commands::Session`], which owns the connection's
//! subscriptions; the [`writer`] drains the connection's bounded outbound queue into the socket
//! and pings. Either half can end the connection through the shared [`Closer`]; the writer then
//! sends the close frame that says why. When the session ends, its subscriptions are dropped,
//! which removes them from their sources at once.
//!
//! Generic over the socket's `Stream`/`Sink`, so tests and benches can drive it with channels;
//! a read error is any `std::error::Error`, classified by the WebSocket error found among its
//! sources (axum's socket wraps tungstenite's).

mod catalog;
mod commands;
mod identity;
mod writer;

use std::error::Error;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{debug, info_span, Instrument};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

use crate::auth::permissions::Permissions;
use crate::auth::Authenticator;
use crate::broker::Topics;
use crate::changefeed::Changefeed;
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::outbound::{mailbox, Backlog, CloseReason, Closer, QueueLimits};

/// The per-connection settings a session enforces and announces in `Welcome`.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Largest request frame served.
    pub max_message_size: usize,
    /// Largest frame read at all (the WebSocket layer's hard limit; larger closes with 1009).
    pub max_frame_size: usize,
    /// How often the writer pings.
    pub ping_interval: Duration,
    /// Silence after which the connection is closed.
    pub idle_timeout: Duration,
    /// Active subscriptions allowed.
    pub max_subscriptions: usize,
    /// Outbound queue capacity, in messages.
    pub outbound_queue: usize,
    /// Outbound queue capacity, in bytes.
    pub outbound_queue_bytes: usize,
    /// Requests per second (token bucket refill); 0: unlimited.
    pub requests_per_second: u32,
    /// Token bucket size.
    pub request_burst: u32,
}

/// What a session is given by the server.
#[derive(Clone)]
pub struct SessionContext {
    /// Server-assigned connection number, unique for this process's lifetime.
    pub connection: u64,
    /// Limits and timers.
    pub settings: SessionSettings,
    /// The topic front (in-process broker and, later, broker backends).
    pub topics: Topics,
    /// Table changefeeds; `None` when no database is configured.
    pub tables: Option<Changefeed>,
    /// The server's shutdown token; cancelling it closes the session with 1001.
    pub shutdown: CancellationToken,
    /// Validates tokens.
    pub auth: Arc<Authenticator>,
    /// Who may subscribe and publish to what.
    pub permissions: Arc<Permissions>,
    /// Connections per user and tenant.
    pub limits: Arc<ConnectionLimits>,
    /// The token the upgrade request carried (`Authorization: Bearer` or `?token=`).
    pub token: Option<String>,
    /// The connection's socket, to pace snapshots and replays by what it has not sent yet;
    /// `None`: not paced.
    pub backlog: Option<Backlog>,
    /// Where the session counts connections, requests, errors and what it writes.
    pub metrics: Arc<Metrics>,
}

/// Serves one connection until it closes. Never panics on client input; returns when both the
/// reader and the writer are done.
pub async fn run<S, E>(socket: S, ctx: SessionContext)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin,
    E: Error + 'static,
{
    let session_id = uuid::Uuid::new_v4().to_string();
    // Every line a connection logs carries these; `user` and `tenant` (claims, never the token)
    // are recorded once it authenticates (`identity`).
    let span = info_span!(
        "session",
        session_id = %session_id,
        connection = ctx.connection,
        user = Empty,
        tenant = Empty,
    );
    async move {
        debug!("session started");
        let metrics = ctx.metrics.clone();
        metrics.connection_opened();
        let (sink, stream) = socket.split();
        let closer = Closer::new(&ctx.shutdown);
        let limits = QueueLimits::new(
            ctx.settings.outbound_queue,
            ctx.settings.outbound_queue_bytes,
        );
        let (mut mailbox, rx) = mailbox(limits, closer.clone());
        if let Some(backlog) = ctx.backlog {
            mailbox = mailbox.paced_by(backlog);
        }
        let ping_interval = ctx.settings.ping_interval;
        let identity = identity::Identity::start(&ctx.auth, &ctx.limits, ctx.token.as_deref());
        let identity = match identity {
            Ok(identity) => identity,
            Err(reason) => {
                debug!(reason = ?reason, "refused at authentication");
                closer.close(reason);
                // Pending: the closer has fired, so the read loop ends at once.
                identity::Identity::Pending {
                    deadline: Instant::now(),
                }
            }
        };
        let bundles = Arc::new(AtomicBool::new(false));
        let session = commands::Session::new(session_id, ctx, mailbox, identity, bundles.clone());
        let reader = read_loop(stream, session, closer.clone());
        let writer = writer::Writer {
            rx,
            closer: closer.clone(),
            ping_interval,
            bundles,
            metrics: &metrics,
        };
        let writer = writer.run(sink);
        tokio::join!(reader, writer);
        metrics.connection_closed(closer.reason().code());
        debug!(reason = ?closer.reason(), "session ended");
    }
    .instrument(span)
    .await;
}

/// Why reading failed, from the WebSocket error among `err` and its sources (axum's socket
/// error wraps tungstenite's): a frame or message over the size limits, a frame that breaks
/// RFC 6455 (reserved bits, bad opcodes, control frames over 125 bytes or fragmented, ...), a
/// text message that is not UTF-8; anything else, a peer gone without a close frame included,
/// is the transport failing.
fn read_failure(err: &(dyn Error + 'static)) -> CloseReason {
    let websocket = std::iter::successors(Some(err), |&err| err.source())
        .find_map(|err| err.downcast_ref::<WsError>());
    match websocket {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => CloseReason::FrameTooLarge,
        // The client dropped the connection.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
            CloseReason::TransportError
        }
        Some(WsError::Protocol(_)) => CloseReason::ProtocolError,
        Some(WsError::Utf8(_)) => CloseReason::InvalidPayload,
        _ => CloseReason::TransportError,
    }
}

/// How long a closing connection keeps reading for the client's close frame (RFC 6455 closing
/// handshake), so that a client still writing (a pong, a request) reads our close frame instead
/// of a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Reads frames until the client goes away, the idle timeout passes, or the closer fires.
/// Drops the session (and with it every subscription) first, then, when the server is the one
/// closing, discards input until the client's close frame arrives or [`CLOSE_LINGER`] passes.
async fn read_loop<S, E>(mut stream: S, mut session: commands::Session, closer: Closer)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Error + 'static,
{
    let idle_timeout = session.settings().idle_timeout;
    let mut deadline = Instant::now() + idle_timeout;
    loop {
        let auth_deadline = session.auth_deadline();
        let frame = tokio::select! {
            biased;
            () = closer.closed() => break,
            () = sleep_until(deadline) => {
                closer.close(CloseReason::IdleTimeout);
                break;
            }
            () = sleep_until(auth_deadline.unwrap_or(deadline)), if auth_deadline.is_some() => {
                closer.close(session.auth_deadline_reason());
                break;
            }
            frame = stream.next() => frame,
        };
        deadline = Instant::now() + idle_timeout;
        match frame {
            Some(Ok(Message::Binary(bytes))) => session.handle_frame(bytes).await,
            Some(Ok(Message::Text(_))) => session.reject_text().await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) => {
                // The WebSocket has queued its answering close frame; the writer flushes it.
                closer.close(CloseReason::ClientClosed);
                return;
            }
            None => {
                closer.close(CloseReason::Normal);
                return;
            }
            Some(Err(err)) => {
                debug!(error = %err, "read failed");
                closer.close(read_failure(&err));
                return;
            }
        }
    }
    drop(session);
    let until_client_closes = async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, until_client_closes).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What axum's socket yields: tungstenite's error inside an `axum::Error`.
    fn axum_error(err: WsError) -> axum::Error {
        axum::Error::new(err)
    }

    #[test]
    fn read_failures_are_classified_by_the_websocket_error_axum_wraps() {
        let cases = [
            (
                WsError::Capacity(CapacityError::MessageTooLong {
                    size: 17_000_000,
                    max_size: 16_777_216,
                }),
                CloseReason::FrameTooLarge,
            ),
            (
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                CloseReason::TransportError,
            ),
            (
                WsError::Protocol(ProtocolError::NonZeroReservedBits),
                CloseReason::ProtocolError,
            ),
            (
                WsError::Protocol(ProtocolError::ControlFrameTooBig),
                CloseReason::ProtocolError,
            ),
            (WsError::Utf8("bad".into()), CloseReason::InvalidPayload),
            (WsError::ConnectionClosed, CloseReason::TransportError),
            (WsError::AlreadyClosed, CloseReason::TransportError),
            (
                WsError::Io(std::io::ErrorKind::ConnectionReset.into()),
                CloseReason::TransportError,
            ),
            (
                WsError::Capacity(CapacityError::TooManyHeaders),
                CloseReason::TransportError,
            ),
        ];
        for (err, reason) in cases {
            let text = err.to_string();
            assert_eq!(read_failure(&axum_error(err)), reason, "{text}");
        }
    }

    #[test]
    fn a_bare_websocket_error_is_classified_too() {
        let err = WsError::Utf8("bad".into());
        assert_eq!(read_failure(&err), CloseReason::InvalidPayload);
    }

    #[test]
    fn other_errors_are_the_transport_failing() {
        let io = std::io::Error::other("Message too long: WebSocket protocol error");
        assert_eq!(read_failure(&io), CloseReason::TransportError);
        assert_eq!(
            read_failure(&axum::Error::new(io)),
            CloseReason::TransportError
        );
    }
}
