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
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
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

/// Messages between the session's writer and the response body. Small: the session's own
/// outbound queue is the bounded one that matters (and closes a slow consumer); this only keeps
/// the writer from waiting on every event.
const PIPE: usize = 16;

/// Most events held while the answers to a stream's subscriptions are awaited (they are sent
/// first once all are in; a stream whose answers take longer starts without waiting for them).
const HELD_BEFORE_ANSWERS: usize = 1024;

/// What a stream subscribes to, read from the request.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    subscribes: Vec<pb::Subscribe>,
}

/// A request the stream refuses before it starts: an HTTP status and the protocol's error, as
/// JSON.
#[derive(Debug)]
pub(crate) struct Refusal(pb::Error);

impl Refusal {
    fn validation(message: impl Into<String>) -> Self {
        Self(error(Code::Validation, message.into()))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = status(self.0.code());
        let mut response = (status, Json(self.0)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn error(code: Code, message: String) -> pb::Error {
    pb::Error {
        code: code.into(),
        message,
        ..Default::default()
    }
}

/// The HTTP status of a request refused with `code`.
fn status(code: Code) -> StatusCode {
    match code {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::LimitExceeded | Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::SourceUnavailable | Code::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether a subscription refused with `code` refuses the whole request (it is the request's
/// fault, or the caller's), rather than ending that subscription in the stream (it is about the
/// source or the position, which the stream's other subscriptions do not share).
fn refuses_request(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::Validation
            | Code::InvalidMessage
            | Code::UnknownCommand
            | Code::DuplicateSubscription
            | Code::LimitExceeded
            | Code::RateLimited
    )
}

impl Subscriptions {
    /// From `GET /v1/sse`'s query: `table=` and `topic=` (each one subscription; options
    /// `include_initial`, `columns`, `filter`, `min_interval_ms`, `start`, `start_offset` apply
    /// to all of them) and `subscribe=` (a whole `Subscribe`, as proto3 JSON), numbered 1, 2, ...
    /// in the order given unless a `subscribe` names its own id. `token` and `last_event_id` are
    /// the caller's, not read here. Anything else is refused.
    pub(crate) fn from_query(pairs: &[(String, String)]) -> Result<Self, Refusal> {
        let mut options = Options::default();
        for (name, value) in pairs {
            options.read(name, value)?;
        }
        let mut subscribes = Vec::new();
        for (name, value) in pairs {
            let source = match name.as_str() {
                "table" => pb::subscribe::Source::Table(pb::TableFeed {
                    table: value.clone(),
                    include_initial: options.include_initial,
                    filter: options.filter.clone(),
                    columns: options.columns.clone(),
                    min_interval_ms: options.min_interval_ms,
                }),
                "topic" => pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: value.clone(),
                    start: options.start.into(),
                    start_offset: options.start_offset,
                    filter: options.filter.clone(),
                    min_interval_ms: options.min_interval_ms,
                }),
                "subscribe" => {
                    subscribes.push(json::<pb::Subscribe>("subscribe", value)?);
                    continue;
                }
                _ => continue,
            };
            subscribes.push(pb::Subscribe {
                source: Some(source),
                ..Default::default()
            });
        }
        Self::numbered(subscribes)
    }

    /// From `POST /v1/sse`'s JSON body: `{"subscriptions": [Subscribe, ...]}`, each a proto3
    /// JSON `Subscribe`.
    pub(crate) fn from_body(body: &[u8]) -> Result<Self, Refusal> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            subscriptions: Vec<pb::Subscribe>,
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|err| Refusal::validation(format!("request body: {err}")))?;
        Self::numbered(body.subscriptions)
    }

    /// Gives each subscription without an id the next free one, and checks there is at least
    /// one and that ids are unique.
    fn numbered(mut subscribes: Vec<pb::Subscribe>) -> Result<Self, Refusal> {
        if subscribes.is_empty() {
            return Err(Refusal::validation(
                "no subscription: give table=, topic= or subscribe= (or a JSON body with \
                 \"subscriptions\")",
            ));
        }
        let mut taken: HashSet<u64> = HashSet::new();
        for subscribe in &subscribes {
            let id = subscribe.subscription_id;
            if id != 0 && !taken.insert(id) {
                return Err(Refusal::validation(format!(
                    "subscription_id {id} is given twice"
                )));
            }
        }
        let mut next = 1;
        for subscribe in subscribes.iter_mut().filter(|s| s.subscription_id == 0) {
            while taken.contains(&next) {
                next += 1;
            }
            subscribe.subscription_id = next;
            taken.insert(next);
        }
        Ok(Self { subscribes })
    }

    /// Sets each subscription's `resume_from` from a `Last-Event-ID`. Returns the ids of those
    /// the id holds no cursor for: they have nothing to resume from (cut before their first
    /// cursor), and subscribing them "from now" would be a gap.
    fn resume(&mut self, last_event_id: &str) -> Result<Vec<u64>, Refusal> {
        let cursors = parse_id(last_event_id, &self.subscribes)?;
        let mut missing = Vec::new();
        for subscribe in &mut self.subscribes {
            match cursors.get(&subscribe.subscription_id) {
                Some(cursor) => subscribe.resume_from = cursor.clone(),
                None if subscribe.resume_from.is_empty() => missing.push(subscribe.subscription_id),
                None => {}
            }
        }
        self.subscribes
            .retain(|s| !missing.contains(&s.subscription_id));
        Ok(missing)
    }
}

/// The options `table=` and `topic=` subscriptions share.
#[derive(Debug, Default)]
struct Options {
    include_initial: bool,
    filter: Option<pb::Filter>,
    columns: Vec<String>,
    min_interval_ms: u32,
    start: pb::StartPosition,
    start_offset: i64,
}

impl Options {
    fn read(&mut self, name: &str, value: &str) -> Result<(), Refusal> {
        fn number<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, Refusal> {
            value.parse().map_err(|_| {
                Refusal::validation(format!("{what}: {value:?} is not a whole number"))
            })
        }
        match name {
            "include_initial" => {
                self.include_initial = match value {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Refusal::validation(format!(
                            "include_initial: {value:?} is not true or false"
                        )))
                    }
                }
            }
            "filter" => self.filter = Some(json("filter", value)?),
            "columns" => {
                self.columns = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "min_interval_ms" => self.min_interval_ms = number("min_interval_ms", value)?,
            "start_offset" => self.start_offset = number("start_offset", value)?,
            "start" => {
                self.start = match value {
                    "latest" => pb::StartPosition::Latest,
                    "earliest" => pb::StartPosition::Earliest,
                    "offset" => pb::StartPosition::Offset,
                    _ => {
                        return Err(Refusal::validation(format!(
                            "start: {value:?} is not latest, earliest or offset"
                        )))
                    }
                }
            }
            "table" | "topic" | "subscribe" | "token" | "last_event_id" => {}
            _ => {
                return Err(Refusal::validation(format!(
                    "unknown query parameter {name:?}"
                )))
            }
        }
        Ok(())
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, Refusal> {
    serde_json::from_str(value).map_err(|err| Refusal::validation(format!("{what}: {err}")))
}

/// The cursors a `Last-Event-ID` holds, by subscription: a bare cursor on a stream of one
/// subscription, else `id:cursor` pairs separated by commas.
fn parse_id(text: &str, subscribes: &[pb::Subscribe]) -> Result<BTreeMap<u64, Bytes>, Refusal> {
    let bad = |why: &str| Refusal::validation(format!("Last-Event-ID {text:?}: {why}"));
    let decode = |cursor: &str| {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .map(Bytes::from)
            .map_err(|_| bad("a cursor is not base64url"))
    };
    let mut cursors = BTreeMap::new();
    if text.is_empty() {
        return Ok(cursors);
    }
    if !text.contains(':') {
        let [only] = subscribes else {
            return Err(bad(
                "a bare cursor names no subscription, and this stream has several",
            ));
        };
        cursors.insert(only.subscription_id, decode(text)?);
        return Ok(cursors);
    }
    for pair in text.split(',') {
        let (id, cursor) = pair
            .split_once(':')
            .ok_or_else(|| bad("expected id:cursor"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| bad("a subscription id is not a number"))?;
        cursors.insert(id, decode(cursor)?);
    }
    Ok(cursors)
}

/// Formats the event id for the cursors a stream has seen (see [`parse_id`]).
fn format_id(cursors: &BTreeMap<u64, Bytes>, single: bool) -> String {
    if single {
        if let Some(cursor) = cursors.values().next() {
            return URL_SAFE_NO_PAD.encode(cursor);
        }
    }
    let mut id = String::new();
    for (subscription, cursor) in cursors {
        if !id.is_empty() {
            id.push(',');
        }
        id.push_str(&subscription.to_string());
        id.push(':');
        id.push_str(&URL_SAFE_NO_PAD.encode(cursor));
    }
    id
}

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
        let Some(message) = rx.recv().await else {
            break;
        };
        let server = match message {
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((1000, String::new()), |f| (f.code, f.reason.to_string()));
                return Refusal(close_error(code, reason)).into_response();
            }
            Message::Binary(frame) => match pb::ServerMessage::decode(frame) {
                Ok(server) => server,
                Err(_) => continue,
            },
            _ => continue,
        };
        match server.message {
            Some(pb::server_message::Message::Response(response)) => {
                unanswered -= 1;
                if let Some(pb::response::Result::Error(err)) = response.result {
                    let index = usize::try_from(response.request_id.saturating_sub(1)).ok();
                    let id = index
                        .and_then(|i| subscribes.get(i))
                        .map_or(0, |s| s.subscription_id);
                    if refuses_request(err.code()) {
                        let mut err = err;
                        err.details.insert("subscription_id".into(), id.to_string());
                        return Refusal(err).into_response();
                    }
                    held.push_back(closed(id, err));
                }
            }
            Some(pb::server_message::Message::Event(event)) => held.push_back(pb::ServerMessage {
                message: Some(pb::server_message::Message::Event(event)),
            }),
            None => {}
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
            match self.rx.recv().await? {
                Message::Binary(frame) => {
                    let Ok(server) = pb::ServerMessage::decode(frame) else {
                        continue;
                    };
                    if let Some(event) = self.event(server) {
                        return Some(event);
                    }
                }
                Message::Close(frame) => {
                    self.ended = true;
                    let (code, reason) =
                        frame.map_or((1000, String::new()), |f| (f.code, f.reason.to_string()));
                    let data = serde_json::json!({ "code": code, "reason": reason });
                    return Some(Event::default().event("close").data(data.to_string()));
                }
                _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_subscriptions_are_numbered_in_order_and_share_options() {
        let subs = Subscriptions::from_query(&pairs(&[
            ("table", "public.orders"),
            ("include_initial", "true"),
            ("topic", "prices"),
            ("columns", "id, item"),
            (
                "subscribe",
                r#"{"subscriptionId": "2", "topic": {"topic": "news"}}"#,
            ),
        ]))
        .expect("valid");
        let ids: Vec<_> = subs.subscribes.iter().map(|s| s.subscription_id).collect();
        assert_eq!(ids, [1, 3, 2]);
        let Some(pb::subscribe::Source::Table(table)) = &subs.subscribes[0].source else {
            panic!("a table feed");
        };
        assert!(table.include_initial);
        assert_eq!(table.columns, ["id", "item"]);
    }

    #[test]
    fn bad_queries_are_refused_with_validation_errors() {
        for query in [
            pairs(&[]),
            pairs(&[("table", "t"), ("colums", "a")]),
            pairs(&[("table", "t"), ("include_initial", "yes")]),
            pairs(&[("topic", "t"), ("min_interval_ms", "-1")]),
            pairs(&[("subscribe", "{not json")]),
            pairs(&[("topic", "t"), ("filter", r#"{"nope": 1}"#)]),
        ] {
            let refusal = Subscriptions::from_query(&query).expect_err("refused");
            assert_eq!(refusal.0.code(), Code::Validation, "{query:?}");
        }
    }

    #[test]
    fn event_ids_round_trip_through_last_event_id() {
        let subs =
            Subscriptions::from_query(&pairs(&[("topic", "a"), ("topic", "b")])).expect("valid");
        let cursors = BTreeMap::from([
            (1, Bytes::from_static(b"\x00\x01first")),
            (2, Bytes::from_static(b"second\xff")),
        ]);
        let id = format_id(&cursors, false);
        assert_eq!(parse_id(&id, &subs.subscribes).expect("parses"), cursors);

        let one = Subscriptions::from_query(&pairs(&[("topic", "a")])).expect("valid");
        let only = BTreeMap::from([(1, Bytes::from_static(b"\x00\x01first"))]);
        let id = format_id(&only, true);
        assert!(!id.contains(':'), "{id}");
        assert_eq!(parse_id(&id, &one.subscribes).expect("parses"), only);
        assert!(parse_id(&id, &subs.subscribes).is_err());
        assert!(parse_id("1:***", &subs.subscribes).is_err());
    }

    #[test]
    fn a_resume_without_a_cursor_for_a_subscription_leaves_it_out() {
        let mut subs =
            Subscriptions::from_query(&pairs(&[("topic", "a"), ("topic", "b")])).expect("valid");
        let id = format_id(&BTreeMap::from([(2, Bytes::from_static(b"c"))]), false);
        assert_eq!(subs.resume(&id).expect("resumes"), [1]);
        assert_eq!(subs.subscribes.len(), 1);
        assert_eq!(subs.subscribes[0].resume_from, Bytes::from_static(b"c"));
    }
}
