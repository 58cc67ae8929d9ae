//! Encoding server messages into frames.
//!
//! Fan-out encodes an event once: [`share_event`] encodes the `Event` without its subscription
//! id, and [`frame_shared`] writes, per subscriber, only the bytes that differ — the
//! `ServerMessage.event` tag and length and the `subscription_id` field — in front of the shared
//! bytes. Fields of a protobuf message may come in any order, so the result is one ordinary,
//! valid `ServerMessage`, decodable by any protobuf library.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message as _;

use super::{pb, Failure, RowChange, TopicMessage, PROTOCOL_VERSION};

/// What a `Welcome` tells the client about its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct WelcomeInfo {
    /// The connection's id in the server's logs.
    pub session_id: String,
    /// Largest request frame accepted.
    pub max_message_size: usize,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Silence after which the server closes the connection.
    pub idle_timeout: Duration,
    /// Active subscriptions allowed per connection.
    pub max_subscriptions: usize,
    /// Outbound messages queued before the connection is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Outbound bytes queued before the connection is closed as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Largest frame read at all; a larger one closes the connection.
    pub max_frame_size: usize,
    /// Who the connection acts as, once known.
    pub authenticated: Option<AuthInfo>,
}

/// Who a connection acts as (the answer to `Authenticate`, and part of `Welcome`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthInfo {
    /// The user claim; empty for anonymous connections.
    pub user: String,
    /// The principal's roles.
    pub roles: Vec<String>,
    /// When the token expires (µs since the epoch); 0 when it does not.
    pub expires_at_micros: i64,
}

/// The result half of a `Response`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer to Hello.
    Welcome(WelcomeInfo),
    /// The subscription is active; its `Ready` follows.
    Subscribed(u64),
    /// The subscription is gone; no event for it follows.
    Unsubscribed(u64),
    /// The message was accepted by its topic's backend.
    Published {
        /// Opaque position of the message.
        cursor: Bytes,
        /// Offset within the topic.
        offset: i64,
    },
    /// Answer to Authenticate.
    Authenticated(AuthInfo),
    /// Answer to Ping.
    Pong {
        /// The server's clock.
        server_time_micros: i64,
    },
    /// Answer to GetCatalog.
    Catalog(super::catalog::Catalog),
    /// The request failed.
    Error(Failure),
}

/// The body of an event, borrowed from whoever produced it.
#[derive(Debug, Clone, Copy)]
pub enum EventBody<'a> {
    /// Initial state complete.
    Ready,
    /// The server ended the subscription.
    Closed(&'a Failure),
    /// A topic message.
    Message(&'a TopicMessage),
    /// A row change.
    Change(&'a RowChange),
    /// The source became unavailable (with why) or available again (`None`).
    Status(Option<&'a Failure>),
}

/// An `Event` encoded once without its subscription id, to be framed per subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEvent {
    bytes: Bytes,
    /// When the row change it carries committed (its `commit_time_micros`), so that the writer
    /// can measure commit-to-send latency without decoding; 0 for every other event.
    committed_micros: i64,
}

impl SharedEvent {
    /// The encoded event's size in bytes (without the subscription id its frame adds).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (it never is for a real event).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// When the row change this event carries committed, in microseconds since the Unix epoch;
    /// `None` for any other event (initial rows included: they were not just committed).
    pub fn committed_micros(&self) -> Option<i64> {
        (self.committed_micros > 0).then_some(self.committed_micros)
    }

    /// The topic message this event carries, decoded again (a filtered replay of kept
    /// messages); `None` for another kind of event.
    pub fn topic_message(&self) -> Option<TopicMessage> {
        let event = pb::Event::decode(self.bytes.clone()).ok()?;
        let Some(pb::event::Body::Message(message)) = event.body else {
            return None;
        };
        let mut headers: Vec<(String, String)> = message.headers.into_iter().collect();
        headers.sort();
        Some(TopicMessage {
            topic: message.topic,
            payload: message.payload,
            key: message.key,
            headers,
            timestamp_micros: message.timestamp_micros,
            partition: message.partition,
            offset: message.offset,
        })
    }
}

/// Encodes a complete `ServerMessage { response }` frame.
pub fn encode_response(request_id: u64, reply: Reply) -> Bytes {
    use pb::response::Result as R;
    let result = match reply {
        Reply::Welcome(info) => R::Welcome(welcome(info)),
        Reply::Subscribed(subscription_id) => R::Subscribed(pb::Subscribed { subscription_id }),
        Reply::Unsubscribed(subscription_id) => {
            R::Unsubscribed(pb::Unsubscribed { subscription_id })
        }
        Reply::Published { cursor, offset } => R::Published(pb::Published { cursor, offset }),
        Reply::Pong { server_time_micros } => R::Pong(pb::Pong { server_time_micros }),
        Reply::Authenticated(info) => R::Authenticated(authenticated(info)),
        Reply::Catalog(catalog) => R::Catalog(super::catalog::catalog(catalog)),
        Reply::Error(failure) => R::Error(error(&failure)),
    };
    let message = pb::ServerMessage {
        message: Some(pb::server_message::Message::Response(pb::Response {
            request_id,
            result: Some(result),
        })),
    };
    Bytes::from(message.encode_to_vec())
}

/// Encodes a complete `ServerMessage { event }` frame for one subscriber.
pub fn encode_event(subscription_id: u64, cursor: &[u8], body: EventBody<'_>) -> Bytes {
    frame_shared(subscription_id, &share_event(cursor, body))
}

/// Encodes an event once, without a subscription id, for [`frame_shared`].
pub fn share_event(cursor: &[u8], body: EventBody<'_>) -> SharedEvent {
    use pb::event::Body as B;
    let committed_micros = match body {
        EventBody::Change(change) => change.commit_time_micros,
        _ => 0,
    };
    let body = match body {
        EventBody::Ready => B::Ready(pb::Ready {}),
        EventBody::Closed(failure) => B::Closed(pb::SubscriptionClosed {
            error: Some(error(failure)),
        }),
        EventBody::Message(message) => B::Message(topic_message(message)),
        EventBody::Change(change) => B::Change(super::row::row_change(change)),
        EventBody::Status(failure) => B::Status(pb::SourceStatus {
            available: failure.is_none(),
            error: failure.map(error),
        }),
    };
    let event = pb::Event {
        subscription_id: 0,
        cursor: Bytes::copy_from_slice(cursor),
        body: Some(body),
        more: false,
    };
    SharedEvent {
        bytes: Bytes::from(event.encode_to_vec()),
        committed_micros,
    }
}

/// `event` with `more` set (`Event.more`: more events of its batch follow). Copies its bytes.
pub fn with_more(event: &SharedEvent) -> SharedEvent {
    // Field 8 (more), wire type 0 (varint), true.
    const MORE: [u8; 2] = [8 << 3, 1];
    let mut bytes = BytesMut::with_capacity(event.bytes.len() + MORE.len());
    bytes.put_slice(&event.bytes);
    bytes.put_slice(&MORE);
    SharedEvent {
        bytes: bytes.freeze(),
        committed_micros: event.committed_micros,
    }
}

/// Frames a shared event for one subscriber: `ServerMessage.event` key and length, the
/// `Event.subscription_id` field, then the shared bytes. One small allocation and one copy.
pub fn frame_shared(subscription_id: u64, shared: &SharedEvent) -> Bytes {
    let part = Part::Event(subscription_id, shared);
    let mut frame = BytesMut::with_capacity(part.len());
    part.put(&mut frame);
    frame.freeze()
}

/// One `ServerMessage` queued for a connection: encoded whole, or a shared event still to be
/// framed for its subscription.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// A complete encoded `ServerMessage`.
    Message(&'a [u8]),
    /// `ServerMessage{event}` of a shared event, for this subscription id.
    Event(u64, &'a SharedEvent),
}

impl Part<'_> {
    /// Field 2 (event), wire type 2 (length-delimited); field 1 (subscription_id), varint.
    const EVENT_KEY: u8 = (2 << 3) | 2;
    const SUBSCRIPTION_ID_KEY: u8 = 1 << 3;

    /// The encoded `ServerMessage`'s length.
    pub fn len(&self) -> usize {
        match *self {
            Part::Message(bytes) => bytes.len(),
            Part::Event(subscription_id, shared) => {
                let event_len = Self::event_len(subscription_id, shared);
                1 + encoded_len_varint(event_len as u64) + event_len
            }
        }
    }

    /// Whether it is a `Response` (`ServerMessage` field 1), which a client may be awaiting.
    pub fn is_response(&self) -> bool {
        // Field 1 (response), wire type 2 (length-delimited): the first byte of its encoding.
        const RESPONSE_KEY: u8 = (1 << 3) | 2;
        matches!(*self, Part::Message(bytes) if bytes.first() == Some(&RESPONSE_KEY))
    }

    /// Whether the encoding is empty (no real message's is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn event_len(subscription_id: u64, shared: &SharedEvent) -> usize {
        1 + encoded_len_varint(subscription_id) + shared.bytes.len()
    }

    /// Writes the encoded `ServerMessage`.
    fn put(&self, out: &mut BytesMut) {
        match *self {
            Part::Message(bytes) => out.put_slice(bytes),
            Part::Event(subscription_id, shared) => {
                out.put_u8(Self::EVENT_KEY);
                encode_varint(Self::event_len(subscription_id, shared) as u64, out);
                out.put_u8(Self::SUBSCRIPTION_ID_KEY);
                encode_varint(subscription_id, out);
                out.put_slice(&shared.bytes);
            }
        }
    }
}

/// One frame holding several server messages: `ServerMessage{bundle: Bundle{messages}}`, for a
/// client that asked for bundles (`Hello.bundles`). Each message's bytes are copied in once; a
/// shared event's encoding is not redone.
pub fn frame_bundle(parts: &[Part<'_>]) -> Bytes {
    // ServerMessage field 3 (bundle) and Bundle field 1 (messages), both length-delimited.
    const BUNDLE_KEY: u8 = (3 << 3) | 2;
    const MESSAGE_KEY: u8 = (1 << 3) | 2;
    let bundle_len: usize = parts
        .iter()
        .map(|part| {
            let len = part.len();
            1 + encoded_len_varint(len as u64) + len
        })
        .sum();
    let mut frame = BytesMut::with_capacity(1 + encoded_len_varint(bundle_len as u64) + bundle_len);
    frame.put_u8(BUNDLE_KEY);
    encode_varint(bundle_len as u64, &mut frame);
    for part in parts {
        frame.put_u8(MESSAGE_KEY);
        encode_varint(part.len() as u64, &mut frame);
        part.put(&mut frame);
    }
    frame.freeze()
}

fn welcome(info: WelcomeInfo) -> pb::Welcome {
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    pb::Welcome {
        session_id: info.session_id,
        server_version: crate::version::VERSION.to_owned(),
        protocol_version: PROTOCOL_VERSION,
        limits: Some(pb::Limits {
            max_message_size: clamp(info.max_message_size),
            ping_interval_ms: millis(info.ping_interval),
            idle_timeout_ms: millis(info.idle_timeout),
            max_subscriptions: clamp(info.max_subscriptions),
            outbound_queue: clamp(info.outbound_queue),
            outbound_queue_bytes: clamp(info.outbound_queue_bytes),
            max_frame_size: clamp(info.max_frame_size),
        }),
        authenticated: info.authenticated.map(authenticated),
    }
}

fn authenticated(info: AuthInfo) -> pb::Authenticated {
    pb::Authenticated {
        user: info.user,
        roles: info.roles,
        expires_at_micros: info.expires_at_micros,
    }
}

pub(super) fn error(failure: &Failure) -> pb::Error {
    pb::Error {
        code: failure.code as i32,
        message: failure.message.clone(),
        retryable: failure.retryable,
        retry_after_ms: failure.retry_after_ms,
        details: failure
            .details
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn topic_message(message: &TopicMessage) -> pb::TopicMessage {
    pb::TopicMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        key: message.key.clone(),
        headers: message.headers.iter().cloned().collect(),
        timestamp_micros: message.timestamp_micros,
        partition: message.partition,
        offset: message.offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Code;

    fn decode(frame: &[u8]) -> pb::ServerMessage {
        pb::ServerMessage::decode(frame).expect("valid ServerMessage")
    }

    fn sample() -> TopicMessage {
        TopicMessage {
            topic: "orders".into(),
            payload: Bytes::from(vec![7u8; 300]),
            key: "k".into(),
            headers: vec![("a".into(), "1".into())],
            timestamp_micros: 1_700_000_000_000_000,
            partition: 0,
            offset: 42,
        }
    }

    #[test]
    fn shared_framing_equals_direct_encoding() {
        let message = sample();
        let shared = share_event(b"cur", EventBody::Message(&message));
        for id in [1u64, 127, 128, 300, u64::MAX] {
            let framed = frame_shared(id, &shared);
            let direct = pb::ServerMessage {
                message: Some(pb::server_message::Message::Event(pb::Event {
                    subscription_id: id,
                    cursor: Bytes::from_static(b"cur"),
                    body: Some(pb::event::Body::Message(topic_message(&message))),
                    more: false,
                })),
            };
            assert_eq!(decode(&framed), direct, "subscription id {id}");
            // Same length as prost's own encoding: the prefix is minimal.
            assert_eq!(framed.len(), direct.encoded_len());
        }
    }

    #[test]
    fn with_more_sets_more_and_keeps_the_rest() {
        let message = sample();
        let shared = share_event(b"cur", EventBody::Message(&message));
        let framed = frame_shared(7, &with_more(&shared));
        let Some(pb::server_message::Message::Event(event)) = decode(&framed).message else {
            panic!("an event");
        };
        assert!(event.more);
        assert_eq!(event.cursor, Bytes::from_static(b"cur"));
        assert_eq!(event.subscription_id, 7);
        assert_eq!(
            event.body,
            Some(pb::event::Body::Message(topic_message(&message)))
        );
    }

    #[test]
    fn a_row_change_carries_its_commit_time_and_nothing_else_does() {
        let change = |commit_time_micros| RowChange {
            kind: crate::protocol::ChangeKind::Insert,
            table: "public.t".into(),
            key: Vec::new(),
            new_row: None,
            old_row: None,
            transaction_id: 9,
            commit_time_micros,
        };
        let logged = share_event(b"", EventBody::Change(&change(1_700_000_000_000_000)));
        assert_eq!(logged.committed_micros(), Some(1_700_000_000_000_000));
        assert_eq!(
            with_more(&logged).committed_micros(),
            Some(1_700_000_000_000_000)
        );
        // An initial row has no commit time.
        let initial = share_event(b"", EventBody::Change(&change(0)));
        assert_eq!(initial.committed_micros(), None);
        let message = sample();
        for body in [EventBody::Ready, EventBody::Message(&message)] {
            assert_eq!(share_event(b"", body).committed_micros(), None);
        }
    }

    #[test]
    fn responses_round_trip() {
        let failure = Failure::new(Code::LimitExceeded, "too many").detail("limit", 128);
        let frame = encode_response(5, Reply::Error(failure));
        let Some(pb::server_message::Message::Response(response)) = decode(&frame).message else {
            panic!("not a response");
        };
        assert_eq!(response.request_id, 5);
        let Some(pb::response::Result::Error(err)) = response.result else {
            panic!("not an error");
        };
        assert_eq!(err.code, Code::LimitExceeded as i32);
        assert_eq!(err.details["limit"], "128");
    }
}
