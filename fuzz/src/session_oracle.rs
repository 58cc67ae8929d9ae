//! The session target's oracle: what the server sends, checked in order against the frames the
//! client sent and the state docs/protocol.md says the connection is in (see the target's doc
//! comment, fuzz/fuzz_targets/session.rs, for the list of invariants).

use std::collections::{BTreeMap, HashMap};

use axum::extract::ws::Message;
use bytes::Bytes;
use feedgate::protocol::{
    decode_request, pb, peek_request_id, Code, Command, Rejection, Request, Source, StartPosition,
};
use feedgate::session::SessionSettings;
use prost::Message as _;

/// What the client sends.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A binary frame.
    Binary(Bytes),
    /// A text frame.
    Text(String),
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// The client's close frame; nothing is sent after it.
    Close,
    /// The transport fails this way; nothing is read after it.
    ReadError(ReadError),
}

/// Ways reading fails, as axum's socket reports them: tungstenite's error inside an
/// `axum::Error`, which the session classifies by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// A frame over max_frame_size (close 1009).
    TooLong,
    /// A dropped connection, no close frame (1000, no reason).
    Reset,
    /// A protocol violation (1002).
    Protocol,
    /// Text that is not UTF-8 (1007).
    Utf8,
}

impl ReadError {
    /// Every kind, for the fuzzer to choose from.
    pub const ALL: &'static [Self] = &[Self::TooLong, Self::Reset, Self::Protocol, Self::Utf8];

    /// The error the socket yields.
    pub fn error(self) -> axum::Error {
        use tungstenite::error::{CapacityError, Error, ProtocolError};
        axum::Error::new(match self {
            Self::TooLong => Error::Capacity(CapacityError::MessageTooLong {
                size: 17_000_000,
                max_size: 16_777_216,
            }),
            Self::Reset => Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            Self::Protocol => Error::Protocol(ProtocolError::NonZeroReservedBits),
            Self::Utf8 => Error::Utf8("invalid utf-8 sequence".into()),
        })
    }
}

/// What the oracle needs to know of a scenario.
pub struct Setup<'a> {
    /// The session's settings.
    pub settings: &'a SessionSettings,
    /// Everything the client sends, in order.
    pub frames: &'a [Frame],
    /// Whether permission rules are configured.
    pub rules: bool,
    /// HS256 keys (else anonymous access).
    pub hs256: bool,
    /// Whether the upgrade request carried a token.
    pub upgrade_token: bool,
    /// Whether the client stops reading after its frames.
    pub stall: bool,
}

/// What a request frame must be answered with, as far as the frame alone decides.
#[derive(Debug)]
pub enum Expect {
    Text,
    Binary {
        /// The id an oversized or rate-limited frame's answer carries.
        peeked: u64,
        oversized: bool,
        decoded: std::result::Result<Request, Rejection>,
    },
}

#[derive(Debug)]
struct Sub {
    topic: String,
    ready: bool,
}

/// Checks what the server sends against the frames, in order, keeping the state the protocol
/// says the connection is in.
pub struct Oracle {
    /// What each request frame must be answered with, in order.
    pub expected: Vec<Expect>,
    /// How many of them were answered.
    pub matched: usize,
    rules: bool,
    rate_limited: bool,
    max_subscriptions: usize,
    welcome_limits: pb::Limits,
    /// Whether the connection has a principal; `None` until an upgrade token proves good.
    known: Option<bool>,
    upgrade_token: bool,
    anonymous_mode: bool,
    subs: HashMap<u64, Sub>,
    /// Message events since the last response: (subscription id, message, cursor).
    pending: Vec<(u64, pb::TopicMessage, Bytes)>,
    last_offset: i64,
    /// The close frame's code, once it came.
    pub close: Option<u16>,
    /// Whether the client's side shut the server down.
    pub shutdown: bool,
    /// The read error the client's side ended with, if any.
    read_error: Option<ReadError>,
    /// The client stops reading (a close frame may not get through).
    stall: bool,
    /// Message events seen (for FEEDGATE_FUZZ_TRACE).
    events: usize,
    client_closed: bool,
}

impl Oracle {
    /// An oracle for a session with these settings, to which the client sends `frames`.
    pub fn new(scenario: &Setup<'_>) -> Self {
        let s = scenario.settings;
        let mut expected = Vec::new();
        for frame in scenario.frames {
            match frame {
                Frame::Text(_) => expected.push(Expect::Text),
                Frame::Binary(bytes) => expected.push(Expect::Binary {
                    peeked: peek_request_id(bytes),
                    oversized: bytes.len() > s.max_message_size,
                    decoded: decode_request(bytes),
                }),
                _ => {}
            }
        }
        let known = match (scenario.upgrade_token, scenario.hs256) {
            (true, _) => None,
            (false, hs256) => Some(!hs256),
        };
        Self {
            expected,
            matched: 0,
            rules: scenario.rules,
            rate_limited: s.requests_per_second > 0,
            max_subscriptions: s.max_subscriptions,
            welcome_limits: pb::Limits {
                max_message_size: s.max_message_size as u32,
                ping_interval_ms: s.ping_interval.as_millis() as u32,
                idle_timeout_ms: s.idle_timeout.as_millis() as u32,
                max_subscriptions: s.max_subscriptions as u32,
                outbound_queue: s.outbound_queue as u32,
                outbound_queue_bytes: s.outbound_queue_bytes as u32,
                max_frame_size: s.max_frame_size as u32,
            },
            known,
            upgrade_token: scenario.upgrade_token,
            anonymous_mode: !scenario.hs256,
            subs: HashMap::new(),
            pending: Vec::new(),
            last_offset: 0,
            close: None,
            shutdown: false,
            stall: scenario.stall,
            events: 0,
            read_error: scenario.frames.iter().find_map(|f| match f {
                Frame::ReadError(kind) => Some(*kind),
                _ => None,
            }),
            client_closed: scenario
                .frames
                .iter()
                .any(|f| matches!(f, Frame::Close | Frame::ReadError(_))),
        }
    }

    pub fn answered(&self) -> bool {
        self.matched == self.expected.len()
    }

    pub fn observe(&mut self, message: Message) {
        assert!(self.close.is_none(), "{message:?} after the close frame");
        match message {
            Message::Binary(bytes) => {
                let decoded = pb::ServerMessage::decode(bytes.as_ref())
                    .unwrap_or_else(|e| panic!("undecodable server frame {bytes:02x?}: {e}"));
                self.server_message(decoded, true);
            }
            Message::Ping(_) => {}
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((1005, String::new()), |f| (f.code, f.reason.to_string()));
                self.close(code, &reason);
            }
            other => panic!("the server sent {other:?}"),
        }
    }

    /// One server message; a bundle (only at the top of a frame, never nested) is its
    /// messages in order.
    fn server_message(&mut self, message: pb::ServerMessage, top: bool) {
        match message.message {
            Some(pb::server_message::Message::Response(response)) => self.response(response),
            Some(pb::server_message::Message::Event(event)) => self.event(event),
            Some(pb::server_message::Message::Bundle(bundle)) => {
                assert!(top, "a bundle inside a bundle");
                for inner in bundle.messages {
                    self.server_message(inner, false);
                }
            }
            None => panic!("a ServerMessage with nothing in it"),
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        assert!(reason.len() <= 123, "close reason too long: {reason:?}");
        let first = self.matched == 0 && self.pending.is_empty();
        let prefix = match code {
            1000 => "",
            1001 if self.shutdown => "SHUTTING_DOWN:",
            4000 if self.stall => "IDLE_TIMEOUT:",
            4001 if self.stall => "UNAUTHENTICATED:",
            1009 if self.read_error == Some(ReadError::TooLong) => "LIMIT_EXCEEDED:",
            1002 if self.read_error == Some(ReadError::Protocol) => "INVALID_MESSAGE:",
            1007 if self.read_error == Some(ReadError::Utf8) => "INVALID_MESSAGE:",
            4001 if self.upgrade_token && first && self.known.is_none() => "UNAUTHENTICATED:",
            4029 if self.upgrade_token && first && self.known.is_none() => "LIMIT_EXCEEDED:",
            // Fan-out overflowing the queue (a publish must be among the unanswered frames), or
            // a client that stopped reading while answers waited for room.
            4008 if self.publish_in_flight() || self.stall => "SLOW_CONSUMER:",
            _ => panic!(
                "unexpected close {code} {reason:?} after {} answers",
                self.matched
            ),
        };
        assert!(
            reason.starts_with(prefix),
            "close {code} with reason {reason:?}"
        );
        if code == 1000 && !self.answered() && !self.client_closed {
            panic!(
                "closed normally with {} of {} requests unanswered",
                self.matched,
                self.expected.len()
            );
        }
        self.close = Some(code);
    }

    /// Whether a request not answered yet is a publish.
    fn publish_in_flight(&self) -> bool {
        self.expected[self.matched..].iter().any(|e| {
            matches!(e, Expect::Binary { decoded: Ok(r), oversized: false, .. }
                if matches!(r.command, Command::Publish(_)))
        })
    }

    /// At the end: nothing half-delivered.
    pub fn finish(&self, terminal: bool) {
        if crate::tracing() {
            eprintln!(
                "trace: answered {}/{} close {:?} subs {} last_offset {} events {}",
                self.matched,
                self.expected.len(),
                self.close,
                self.subs.len(),
                self.last_offset,
                self.events
            );
        }
        if self.close.is_none() && !terminal && !self.stall {
            panic!("the session ended without a close frame");
        }
        if self.answered() {
            assert!(
                self.pending.is_empty(),
                "message events without a Published: {:?}",
                self.pending
            );
        }
    }

    fn event(&mut self, event: pb::Event) {
        use pb::event::Body;
        let id = event.subscription_id;
        let sub = self.subs.get_mut(&id).unwrap_or_else(|| {
            panic!("event for subscription {id}, which is not active: {event:?}")
        });
        match event.body {
            Some(Body::Ready(_)) => {
                assert!(!sub.ready, "a second Ready for subscription {id}");
                sub.ready = true;
            }
            Some(Body::Message(message)) => {
                assert!(sub.ready, "a message before Ready on subscription {id}");
                assert_eq!(message.topic, sub.topic, "a message of another topic");
                self.pending.push((id, message, event.cursor));
                self.events += 1;
            }
            Some(Body::Closed(_)) => {
                self.subs.remove(&id);
            }
            other => panic!("unexpected event on an in-process topic: {other:?}"),
        }
    }

    fn response(&mut self, response: pb::Response) {
        use pb::response::Result as R;
        let expect = self
            .expected
            .get(self.matched)
            .unwrap_or_else(|| panic!("a response to nothing: {response:?}"));
        self.matched += 1;
        let result = response.result.clone().expect("a response with a result");
        let id = response.request_id;
        let error = match &result {
            R::Error(e) => Some(Code::try_from(e.code).expect("a known code")),
            _ => None,
        };
        if error == Some(Code::RateLimited) {
            let Expect::Binary { peeked, .. } = expect else {
                panic!("a text frame was rate limited");
            };
            assert!(self.rate_limited, "RATE_LIMITED without a rate limit");
            assert_eq!(id, *peeked, "id of a rate-limited frame");
            return self.no_events();
        }
        let request = match expect {
            Expect::Text => {
                assert_eq!((id, error), (0, Some(Code::InvalidMessage)), "text frame");
                return self.no_events();
            }
            Expect::Binary {
                peeked,
                oversized: true,
                ..
            } => {
                assert_eq!(
                    (id, error),
                    (*peeked, Some(Code::LimitExceeded)),
                    "oversized"
                );
                return self.no_events();
            }
            Expect::Binary {
                decoded: Err(rejection),
                ..
            } => {
                assert_eq!(
                    (id, error),
                    (rejection.request_id, Some(rejection.failure.code)),
                    "rejected frame"
                );
                return self.no_events();
            }
            Expect::Binary {
                decoded: Ok(request),
                ..
            } => request.clone(),
        };
        assert_eq!(id, request.request_id, "response id");
        if self.known.is_none() {
            // The upgrade's token was good: a refused one closes before any answer.
            self.known = Some(true);
        }
        let open = matches!(
            request.command,
            Command::Hello { .. } | Command::Ping | Command::Authenticate { .. }
        );
        if !open {
            let unauthenticated = error == Some(Code::Unauthenticated);
            assert_eq!(
                unauthenticated,
                self.known == Some(false),
                "authenticated {:?}, answer {result:?}",
                self.known
            );
            if unauthenticated {
                return self.no_events();
            }
        }
        if !matches!(request.command, Command::Publish(_)) {
            self.no_events();
        }
        match request.command {
            Command::Ping => assert!(matches!(result, R::Pong(_)), "{result:?}"),
            Command::Hello { token, .. } => self.hello(&token, result),
            Command::Authenticate { .. } => match result {
                R::Authenticated(_) if !self.anonymous_mode => self.known = Some(true),
                R::Error(_)
                    if matches!(error, Some(Code::Unauthenticated | Code::LimitExceeded)) =>
                {
                    assert!(!self.anonymous_mode || error == Some(Code::Unauthenticated));
                }
                other => panic!("Authenticate answered {other:?}"),
            },
            Command::Subscribe(subscribe) => self.subscribe(subscribe, result, error),
            Command::Unsubscribe { subscription_id } => {
                if self.subs.remove(&subscription_id).is_some() {
                    assert_eq!(
                        result,
                        R::Unsubscribed(pb::Unsubscribed { subscription_id }),
                        "unsubscribe of an active subscription"
                    );
                } else {
                    assert_eq!(error, Some(Code::SubscriptionNotFound), "{result:?}");
                }
            }
            Command::Publish(message) => self.published(message, result, error),
            Command::GetCatalog => assert!(matches!(result, R::Catalog(_)), "{result:?}"),
        }
    }

    fn no_events(&mut self) {
        assert!(
            self.pending.is_empty(),
            "message events before an answer that is not Published: {:?}",
            self.pending
        );
    }

    fn hello(&mut self, token: &str, result: pb::response::Result) {
        use pb::response::Result as R;
        match result {
            R::Welcome(welcome) => {
                if !token.is_empty() {
                    assert!(!self.anonymous_mode, "a token accepted without keys");
                    self.known = Some(true);
                }
                assert_eq!(welcome.protocol_version, 1);
                assert!(!welcome.session_id.is_empty());
                assert_eq!(welcome.limits.as_ref(), Some(&self.welcome_limits));
                assert_eq!(
                    welcome.authenticated.is_some(),
                    self.known == Some(true),
                    "Welcome.authenticated"
                );
            }
            R::Error(e) if !token.is_empty() => {
                let code = Code::try_from(e.code).expect("known code");
                assert!(
                    matches!(code, Code::Unauthenticated | Code::LimitExceeded),
                    "Hello with a token: {e:?}"
                );
            }
            other => panic!("Hello answered {other:?}"),
        }
    }

    fn subscribe(
        &mut self,
        subscribe: feedgate::protocol::Subscribe,
        result: pb::response::Result,
        error: Option<Code>,
    ) {
        use pb::response::Result as R;
        let id = subscribe.subscription_id;
        let expected = if self.subs.contains_key(&id) {
            Err(Code::DuplicateSubscription)
        } else if self.subs.len() >= self.max_subscriptions {
            Err(Code::LimitExceeded)
        } else {
            match &subscribe.source {
                Source::Table { .. } => Err(Code::SourceUnavailable),
                Source::Topic {
                    topic,
                    start,
                    filter,
                } => {
                    assert!(filter.is_none(), "the generator sends no topic filters");
                    if error == Some(Code::PermissionDenied) && self.rules {
                        return;
                    }
                    if topic.contains(['*', '#', '>']) {
                        Err(Code::Validation)
                    } else if !subscribe.resume_from.is_empty() {
                        Err(Code::ResumeUnavailable)
                    } else if *start != StartPosition::Latest {
                        Err(Code::Validation)
                    } else {
                        Ok(topic.clone())
                    }
                }
            }
        };
        match expected {
            Ok(topic) => {
                assert_eq!(
                    result,
                    R::Subscribed(pb::Subscribed {
                        subscription_id: id
                    }),
                    "subscribe to {topic}"
                );
                self.subs.insert(
                    id,
                    Sub {
                        topic,
                        ready: false,
                    },
                );
            }
            Err(code) => assert_eq!(error, Some(code), "subscribe {subscribe:?}: {result:?}"),
        }
    }

    fn published(
        &mut self,
        message: feedgate::protocol::TopicMessage,
        result: pb::response::Result,
        error: Option<Code>,
    ) {
        use pb::response::Result as R;
        let pending = std::mem::take(&mut self.pending);
        let published = match result {
            R::Published(published) => published,
            _ if error == Some(Code::PermissionDenied) && self.rules => {
                assert!(pending.is_empty(), "events of a denied publish");
                return;
            }
            _ if message.topic.contains(['*', '#', '>']) => {
                assert_eq!(error, Some(Code::Validation), "{result:?}");
                assert!(pending.is_empty(), "events of a refused publish");
                return;
            }
            other => panic!("publish to {} answered {other:?}", message.topic),
        };
        assert!(
            !message.topic.contains(['*', '#', '>']),
            "published to a wildcard"
        );
        assert!(
            published.offset > self.last_offset,
            "offset {} after {}",
            published.offset,
            self.last_offset
        );
        self.last_offset = published.offset;
        let mut subscribers: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.topic == message.topic)
            .map(|(id, _)| *id)
            .collect();
        subscribers.sort_unstable();
        let mut delivered: Vec<u64> = pending.iter().map(|(id, _, _)| *id).collect();
        delivered.sort_unstable();
        assert_eq!(
            delivered, subscribers,
            "who received offset {}",
            published.offset
        );
        let headers: BTreeMap<_, _> = message.headers.iter().cloned().collect();
        for (id, event, cursor) in pending {
            assert_eq!(event.offset, published.offset, "offset on {id}");
            assert_eq!(cursor, published.cursor, "cursor on {id}");
            assert_eq!(event.payload, message.payload);
            assert_eq!(event.key, message.key);
            let got: BTreeMap<_, _> = event.headers.into_iter().collect();
            if headers.len() == message.headers.len() {
                assert_eq!(got, headers, "headers on {id}");
            } else {
                let names: Vec<_> = headers.keys().collect();
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    names,
                    "header names on {id}"
                );
            }
        }
    }
}
