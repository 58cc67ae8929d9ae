//! Server-Sent Events: a session for clients that cannot or should not speak the binary WebSocket
//! protocol (curl, a browser `EventSource`, a proxy that only passes HTTP).
//!
//! An SSE stream *is* a session (`session::run`), driven through a pipe instead of a socket: the
//! request's subscriptions go in as `Subscribe` requests, and what the session's writer would put
//! on the wire comes out, is decoded once more and is written as SSE events whose `data` is the
//! canonical proto3 JSON of the `Event` (pbjson's generated serde). Permissions, row filters,
//! limits, the bounded outbound queue with its slow-consumer rule, pacing by the socket and
//! shutdown are the session's, unchanged.
//!
//! Resume: every event that ends a batch and has a cursor carries `id:`, the cursor (base64url),
//! or, on a stream of several subscriptions, every subscription's latest cursor
//! (`1:<cursor>,2:<cursor>`). A reconnecting `EventSource` sends it back as `Last-Event-ID`, and
//! each subscription resumes after it, as the generated clients do on a reconnect.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Sink, Stream, StreamExt};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard, PollSendError, PollSender};
use tokio_util::task::TaskTracker;

use crate::limits::ConnectionSlot;
use crate::protocol::{pb, Code};
use crate::session::{self, SessionContext};

mod request;

pub(crate) use request::Subscriptions;
use request::{error, format_id, refuses_request, Refusal};

/// Messages between the session's writer and the response body. Small: the session's own
/// outbound queue is the bounded one that matters (and closes a slow consumer); this only keeps
/// the writer from waiting on every event.
const PIPE: usize = 16;

/// Most events held while the answers to a stream's subscriptions are awaited (they are sent
/// first once all are in; a stream whose answers take longer starts without waiting for them).
const HELD_BEFORE_ANSWERS: usize = 1024;

/// The session's socket: requests in from a stream, frames out into a channel.
struct Pipe {
    input: BoxStream<'static, Result<Message, Infallible>>,
    output: PollSender<Message>,
}

impl Stream for Pipe {
    type Item = Result<Message, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.input.poll_next_unpin(cx)
    }
}

impl Sink<Message> for Pipe {
    type Error = PollSendError<Message>;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.output).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.output).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.output).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.output).poll_close(cx)
    }
}

/// The session's input: its subscriptions, then nothing but a keep-alive (the client cannot
/// send, and writes failing is how a gone client is found) until the response is dropped.
fn requests(
    subscribes: &[pb::Subscribe],
    idle_timeout: Duration,
    gone: CancellationToken,
) -> BoxStream<'static, Result<Message, Infallible>> {
    let frames: Vec<_> = subscribes
        .iter()
        .zip(1..)
        .map(|(subscribe, request_id)| {
            let request = pb::Request {
                request_id,
                command: Some(pb::request::Command::Subscribe(subscribe.clone())),
            };
            Ok(Message::Binary(request.encode_to_vec().into()))
        })
        .collect();
    let every = (idle_timeout / 2).max(Duration::from_millis(10));
    let keep_alive = stream::unfold((), move |()| async move {
        tokio::time::sleep(every).await;
        Some((Ok(Message::Pong(Bytes::new())), ()))
    });
    stream::iter(frames)
        .chain(keep_alive)
        .take_until(gone.cancelled_owned())
        .boxed()
}

/// Starts a stream's session and answers with the stream once every subscription is answered,
/// or with the refusal of the first one refused (see [`refuses_request`]).
pub(crate) async fn open(
    ctx: SessionContext,
    sessions: &TaskTracker,
    slot: ConnectionSlot,
    mut subscriptions: Subscriptions,
    last_event_id: Option<String>,
) -> Response {
    let mut held = VecDeque::new();
    let resumed: HashSet<u64> = match &last_event_id {
        Some(id) => {
            let missing = match subscriptions.resume(id) {
                Ok(missing) => missing,
                Err(refusal) => return refusal.into_response(),
            };
            held.extend(missing.into_iter().map(|id| {
                closed(
                    id,
                    error(
                        Code::ResumeUnavailable,
                        "Last-Event-ID holds no cursor for this subscription (the stream was \
                         cut before its first one): subscribe again without Last-Event-ID"
                            .into(),
                    ),
                )
            }));
            subscriptions
                .subscribes
                .iter()
                .map(|s| s.subscription_id)
                .collect()
        }
        None => HashSet::new(),
    };
    let subscribes = subscriptions.subscribes;
    let single = subscribes.len() + held.len() == 1;
    let gone = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(PIPE);
    let pipe = Pipe {
        input: requests(&subscribes, ctx.settings.idle_timeout, gone.clone()),
        output: PollSender::new(tx),
    };
    let ping_interval = ctx.settings.ping_interval;
    sessions.spawn(async move {
        session::run(pipe, ctx).await;
        drop(slot);
    });
    let guard = gone.drop_guard();

    let mut unanswered = subscribes.len();
    while unanswered > 0 && held.len() < HELD_BEFORE_ANSWERS {
        let server = match next_written(&mut rx).await {
            None => break,
            Some(Written::Close(code, reason)) => {
                return Refusal(close_error(code, reason)).into_response()
            }
            Some(Written::Message(server)) => server,
        };
        if matches!(server.message, Some(pb::server_message::Message::Event(_))) {
            held.push_back(server);
            continue;
        }
        // Bundles are never sent to a session that did not ask for them, as a stream's does not.
        let Some(pb::server_message::Message::Response(response)) = server.message else {
            continue;
        };
        unanswered -= 1;
        if let Some(pb::response::Result::Error(mut err)) = response.result {
            let index = usize::try_from(response.request_id.saturating_sub(1)).ok();
            let id = index
                .and_then(|i| subscribes.get(i))
                .map_or(0, |s| s.subscription_id);
            if refuses_request(err.code()) {
                err.details.insert("subscription_id".into(), id.to_string());
                return Refusal(err).into_response();
            }
            held.push_back(closed(id, err));
        }
    }

    let stream = Events {
        rx,
        held,
        cursors: BTreeMap::new(),
        resumed,
        single,
        ended: false,
        _guard: guard,
    };
    let body = stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, Infallible>(event), stream))
    });
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(ping_interval))
        .into_response();
    // Nginx and the like buffer responses unless told not to.
    response
        .headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}

/// What the session wrote, as the stream reads it.
// Returned and matched at once, never stored: boxing the large variant would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Written {
    /// A server message.
    Message(pb::ServerMessage),
    /// The close frame's code and reason: the session ended.
    Close(u16, String),
}

/// The next thing the session wrote; pings and frames that do not decode are skipped. `None`:
/// the session is gone.
async fn next_written(rx: &mut mpsc::Receiver<Message>) -> Option<Written> {
    loop {
        match rx.recv().await? {
            Message::Binary(frame) => {
                if let Ok(server) = pb::ServerMessage::decode(frame) {
                    return Some(Written::Message(server));
                }
            }
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((1000, String::new()), |f| (f.code, f.reason.to_string()));
                return Some(Written::Close(code, reason));
            }
            _ => {}
        }
    }
}

/// A `SubscriptionClosed` event on subscription `id`.
fn closed(id: u64, err: pb::Error) -> pb::ServerMessage {
    pb::ServerMessage {
        message: Some(pb::server_message::Message::Event(pb::Event {
            subscription_id: id,
            body: Some(pb::event::Body::Closed(pb::SubscriptionClosed {
                error: Some(err),
            })),
            ..Default::default()
        })),
    }
}

/// The error a session's close frame names (its reason is `CODE_NAME: explanation`).
fn close_error(code: u16, reason: String) -> pb::Error {
    let name = reason.split(':').next().unwrap_or_default();
    let code = pb::ErrorCode::from_str_name(&format!("ERROR_CODE_{name}")).unwrap_or(match code {
        4001 => Code::Unauthenticated,
        4029 => Code::LimitExceeded,
        1001 => Code::ShuttingDown,
        _ => Code::Internal,
    });
    error(code, reason)
}

/// The stream's state: what the session writes, turned into SSE events.
struct Events {
    rx: mpsc::Receiver<Message>,
    /// Written first: what arrived while the subscriptions' answers were awaited.
    held: VecDeque<pb::ServerMessage>,
    /// Each subscription's latest cursor that ended a batch.
    cursors: BTreeMap<u64, Bytes>,
    /// Subscriptions resumed from `Last-Event-ID` whose `Ready` has not come yet: the client
    /// saw `Ready` before it was cut, and does not see it twice.
    resumed: HashSet<u64>,
    /// One subscription: ids are its bare cursor.
    single: bool,
    /// The session closed: nothing follows.
    ended: bool,
    /// Ends the session's input (and so the session) when the response is dropped.
    _guard: DropGuard,
}

impl Events {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(server) = self.held.pop_front() {
                if let Some(event) = self.event(server) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match next_written(&mut self.rx).await? {
                Written::Message(server) => {
                    if let Some(event) = self.event(server) {
                        return Some(event);
                    }
                }
                Written::Close(code, reason) => {
                    self.ended = true;
                    let data = serde_json::json!({ "code": code, "reason": reason });
                    return Some(Event::default().event("close").data(data.to_string()));
                }
            }
        }
    }

    /// The SSE event for one server message; `None` for what is not passed on.
    fn event(&mut self, server: pb::ServerMessage) -> Option<Event> {
        let event = match server.message? {
            pb::server_message::Message::Event(event) => event,
            pb::server_message::Message::Response(response) => {
                let data = serde_json::to_string(&response).ok()?;
                return Some(Event::default().event("response").data(data));
            }
            pb::server_message::Message::Bundle(_) => return None,
        };
        let name = match event.body.as_ref()? {
            pb::event::Body::Change(_) => "change",
            pb::event::Body::Ready(_) => "ready",
            pb::event::Body::Message(_) => "message",
            pb::event::Body::Closed(_) => "closed",
            pb::event::Body::Status(_) => "status",
        };
        let subscription = event.subscription_id;
        let moved = !event.cursor.is_empty() && !event.more;
        if moved {
            self.cursors.insert(subscription, event.cursor.clone());
        }
        let id = moved.then(|| format_id(&self.cursors, self.single));
        if name == "ready" && self.resumed.remove(&subscription) {
            // Only the id moves (a block with an id and no data dispatches nothing).
            return id.map(|id| Event::default().id(id));
        }
        if name == "closed" {
            self.resumed.remove(&subscription);
        }
        let data = serde_json::to_string(&event).ok()?;
        let sse = Event::default().event(name).data(data);
        Some(match id {
            Some(id) => sse.id(id),
            None => sse,
        })
    }
}
