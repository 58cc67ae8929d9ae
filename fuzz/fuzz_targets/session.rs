//! A real session (`feedgate::session::run`) driven through in-memory channels by a sequence of
//! frames derived from the fuzz input, with a server context built from the library's public API:
//! in-process topics only, anonymous access or HS256 tokens, optional permission rules, small
//! limits. Each input gets a fresh broker, so the only publisher is the session itself.
//!
//! The client sends every frame, then (unless a frame ended its side: a close frame or a read
//! error) a final `Ping` as a barrier, reads until every request is answered or the server
//! closed, then ends its input. One input in eight stalls instead: the client sends its frames,
//! then neither reads nor sends. What is checked, on everything the server sent:
//!
//! - the session never panics, and it ends within 10 s (virtual) of the client's end of input;
//!   answering every request must not take 30 s either (timers run on tokio's paused clock, so
//!   any wait for nothing is at once a finding; idle and auth timeouts cannot fire otherwise);
//!   a stalled client is closed (idle, authentication or slow-consumer close) within the idle
//!   timeout plus 10 s;
//! - only binary frames, pings and one close frame, last; every binary frame decodes as a
//!   `ServerMessage` with a response or an event;
//! - every request frame (binary or text) gets exactly one response, in order, with the id the
//!   protocol promises (decoded; peeked for oversized or rate-limited frames; 0 for text), unless
//!   the server closed for a reason that explains it (slow consumer, shutdown, a refused token);
//! - the answer is the one docs/protocol.md gives for the connection's state: duplicate and
//!   unknown subscription ids, the subscription limit, invalid topics (wildcards, resume, start
//!   positions), tables without a database, unauthenticated requests, Welcome's limits;
//! - `Subscribed` is followed by `Ready` before any other event of that subscription; no event
//!   arrives for an id that is not subscribed; each `Published` is preceded by exactly one
//!   message event per subscription to its topic, carrying what was published, its offset and
//!   its cursor; offsets increase;
//! - after the session, no subscription is left in the broker and its connection slot for the
//!   user is given back.

#![no_main]

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use axum::extract::ws::Message;
use bytes::Bytes;
use feedgate::auth::permissions::Permissions;
use feedgate::auth::{Authenticator, Principal};
use feedgate::broker::Topics;
use feedgate::config::{AuthConfig, Limits, PermissionRule};
use feedgate::limits::ConnectionLimits;
use feedgate::protocol::pb;
use feedgate::session::{run, SessionContext, SessionSettings};
use feedgate_fuzz::session_oracle::{Frame, Oracle, ReadError, Setup};
use futures_util::{Sink, Stream};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::{CancellationToken, PollSender};

const SECRET: &str = "feedgate-fuzz-secret-of-at-least-32-bytes";
/// How long answering every request may take (virtual time; nothing real takes any).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long the session may take to end once the client's input ended: the close linger (3 s)
/// and the close frame's timeout (5 s) fit.
const END_WITHIN: Duration = Duration::from_secs(10);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(scenario) = Scenario::new(&mut u) else {
        return;
    };
    runtime().block_on(scenario.run());
});

/// One current-thread runtime per process, on a paused clock.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

// --- the client's side of the socket --------------------------------------------------------

/// The socket the session reads and writes: frames (or read errors) from the client, and a
/// bounded channel of what the server sends (bounded by the input's window, so the writer meets
/// backpressure when the client reads slowly).
struct Socket {
    input: mpsc::UnboundedReceiver<std::result::Result<Message, axum::Error>>,
    output: PollSender<Message>,
}

impl Stream for Socket {
    type Item = std::result::Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().input.poll_recv(cx)
    }
}

impl Sink<Message> for Socket {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result2<()>> {
        self.get_mut()
            .output
            .poll_reserve(cx)
            .map_err(|e| e.to_string())
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result2<()> {
        self.get_mut()
            .output
            .send_item(item)
            .map_err(|e| e.to_string())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result2<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result2<()>> {
        self.get_mut().output.close();
        Poll::Ready(Ok(()))
    }
}

type Result2<T> = std::result::Result<T, String>;

// --- the scenario -----------------------------------------------------------------------------

#[derive(Debug)]
struct Scenario {
    hs256: bool,
    rules: Vec<PermissionRule>,
    settings: SessionSettings,
    /// Output frames the client lets the server send ahead of its reading.
    window: usize,
    /// The token of the upgrade request.
    upgrade_token: Option<String>,
    /// Connections user alice holds elsewhere, and the most she may hold.
    held: usize,
    max_per_user: usize,
    /// Cancel the server's shutdown token once this many responses arrived.
    shutdown_after: Option<usize>,
    /// The client sends its frames, then neither reads nor sends: the idle timeout must close
    /// the connection all the same (and the authentication timeout one that has no principal).
    stall: bool,
    frames: Vec<Frame>,
}

/// Tokens for HS256 mode: valid ones for two users, and ones the server must refuse.
fn tokens() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let sign = |claims: serde_json::Value, secret: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .expect("signs")
        };
        let alice = |exp: serde_json::Value| {
            serde_json::json!({"sub": "alice", "tenant_id": "t1", "roles": ["reader", "writer"],
                               "exp": exp})
        };
        vec![
            sign(alice(serde_json::json!(now + 3600)), SECRET),
            sign(
                serde_json::json!({"sub": "bob", "tenant_id": "t2", "roles": "reader",
                                   "exp": now + 3600}),
                SECRET,
            ),
            sign(alice(serde_json::json!(u64::MAX)), SECRET),
            sign(alice(serde_json::json!(now - 3600)), SECRET),
            sign(alice(serde_json::Value::Null), SECRET),
            sign(
                alice(serde_json::json!(now + 3600)),
                "another-secret-of-at-least-32-bytes!",
            ),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.".to_owned(),
        ]
    })
}

fn rule(u: &mut Unstructured<'_>) -> Result<PermissionRule> {
    const ROLES: &[&str] = &["*", "reader", "writer", "anonymous", "admin"];
    const PATTERNS: &[&str] = &[
        "prices",
        "orders.*",
        "#",
        "user.{sub}",
        "x.y.z",
        "a",
        "{sub}",
    ];
    let pick = |u: &mut Unstructured<'_>, from: &[&str]| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            out.push((*u.choose(from)?).to_owned());
        }
        Ok(out)
    };
    Ok(PermissionRule {
        roles: pick(u, ROLES)?,
        subscribe_topics: pick(u, PATTERNS)?,
        publish_topics: pick(u, PATTERNS)?,
        subscribe_tables: Vec::new(),
        row_filter: None,
    })
}

fn frame(u: &mut Unstructured<'_>, tokens: &[String]) -> Result<Frame> {
    Ok(match u.int_in_range(0..=31)? {
        0..=21 => {
            let request = feedgate_fuzz::request(u, tokens)?;
            Frame::Binary(request.encode_to_vec().into())
        }
        22..=24 => {
            let request = feedgate_fuzz::request(u, tokens)?;
            Frame::Binary(feedgate_fuzz::mutated(u, &request)?.into())
        }
        25 => Frame::Binary(Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?)),
        26 => Frame::Binary(Bytes::new()),
        27 => Frame::Text(u.arbitrary()?),
        28 => Frame::Ping,
        29 => Frame::Pong,
        30 => Frame::Close,
        _ => Frame::ReadError(*u.choose(ReadError::ALL)?),
    })
}

impl Scenario {
    fn new(u: &mut Unstructured<'_>) -> Result<Self> {
        let hs256 = u.arbitrary()?;
        let tokens: &[String] = if hs256 { tokens() } else { &[] };
        let rules = if u.ratio(1, 4)? {
            let mut rules = Vec::new();
            for _ in 0..u.int_in_range(1..=3)? {
                rules.push(rule(u)?);
            }
            rules
        } else {
            Vec::new()
        };
        let (requests_per_second, request_burst) = if u.ratio(1, 8)? {
            (u.int_in_range(1..=50)?, u.int_in_range(1..=8)?)
        } else {
            (0, 0)
        };
        // Within what Config::validate accepts.
        let settings = SessionSettings {
            max_message_size: *u.choose(&[64, 128, 1024, 1 << 20])?,
            max_frame_size: 16 << 20,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_subscriptions: *u.choose(&[1, 2, 4, 128])?,
            outbound_queue: *u.choose(&[2, 3, 8, 1024])?,
            outbound_queue_bytes: *u.choose(&[1024, 4096, 1 << 20])?,
            requests_per_second,
            request_burst,
        };
        let window = *u.choose(&[1, 2, 8, 4096])?;
        let upgrade_token = match u.int_in_range(0..=7)? {
            0 => Some(feedgate_fuzz::token(u, tokens)?),
            1 if hs256 => Some(tokens[0].clone()),
            _ => None,
        };
        let max_per_user = u.int_in_range(1..=3)?;
        let held = u.int_in_range(0..=max_per_user)?;
        let shutdown_after = if u.ratio(1, 16)? {
            Some(u.int_in_range(0..=8)?)
        } else {
            None
        };
        let stall = u.ratio(1, 8)?;
        let mut frames = Vec::new();
        // Frames until the input runs out (an exhausted input would only add requests with
        // id 0 and no command), at most 40.
        while frames.len() < 40 && !u.is_empty() {
            let frame = frame(u, tokens)?;
            let last = matches!(frame, Frame::Close | Frame::ReadError(_));
            frames.push(frame);
            if last {
                break;
            }
        }
        Ok(Self {
            hs256,
            rules,
            settings,
            window,
            upgrade_token,
            held,
            max_per_user,
            shutdown_after,
            stall,
            frames,
        })
    }

    fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            anonymous: !self.hs256,
            hs256_secret: self.hs256.then(|| SECRET.to_owned()),
            ..AuthConfig::default()
        }
    }

    async fn run(mut self) {
        let auth = Authenticator::new(&self.auth_config()).expect("a valid auth config");
        let limits = ConnectionLimits::new(&Limits {
            max_connections_per_user: self.max_per_user,
            ..Limits::default()
        });
        let alice = Principal {
            user: Some("alice".into()),
            tenant: Some("t1".into()),
            ..Principal::anonymous()
        };
        let held: Vec<_> = (0..self.held)
            .map(|_| limits.identify(&alice).expect("within the limit"))
            .collect();
        let topics = Topics::new(
            Vec::new(),
            feedgate::broker::memory::MemoryBroker::default(),
            None,
            None,
        );
        let shutdown = CancellationToken::new();
        let ctx = SessionContext {
            connection: 1,
            settings: self.settings.clone(),
            topics: topics.clone(),
            tables: None,
            shutdown: shutdown.clone(),
            auth: Arc::new(auth),
            permissions: Arc::new(Permissions::new(self.rules.clone())),
            limits: limits.clone(),
            token: self.upgrade_token.clone(),
            // Channels, not a socket: no kernel send buffer to pace by (as in the unit tests).
            backlog: None,
            metrics: std::sync::Arc::default(),
        };
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::channel(self.window);
        let socket = Socket {
            input: input_rx,
            output: PollSender::new(output_tx),
        };
        let terminal = matches!(self.frames.last(), Some(Frame::Close | Frame::ReadError(_)));
        if !terminal && !self.stall {
            let barrier = pb::Request {
                request_id: 1,
                command: Some(pb::request::Command::Ping(pb::Ping {})),
            };
            self.frames
                .push(Frame::Binary(barrier.encode_to_vec().into()));
        }
        let oracle = Oracle::new(&Setup {
            settings: &self.settings,
            frames: &self.frames,
            rules: !self.rules.is_empty(),
            hs256: self.hs256,
            upgrade_token: self.upgrade_token.is_some(),
            stall: self.stall,
        });
        let frames = self.frames.clone();
        let ended = CancellationToken::new();
        let session = async {
            run(socket, ctx).await;
            ended.cancel();
        };
        let client = client(
            frames, terminal, input_tx, output_rx, oracle, shutdown, &ended, &self,
        );
        let ((), oracle) = tokio::join!(session, client);

        assert_eq!(
            topics.subscriptions(),
            0,
            "subscriptions outlived the session"
        );
        assert_eq!(topics.active_topics(), 0, "topics outlived the session");
        drop(held);
        let slots: Vec<_> = (0..self.max_per_user)
            .map(|i| {
                limits
                    .identify(&alice)
                    .unwrap_or_else(|f| panic!("slot {i} of alice not given back: {f}"))
            })
            .collect();
        drop((slots, oracle));
    }
}

/// Sends the frames, reads until every request is answered (or the server closed), ends the
/// input, and reads until the session is gone. A stalling client sends its frames and then waits,
/// reading nothing, until the session is gone.
#[allow(clippy::too_many_arguments)]
async fn client(
    frames: Vec<Frame>,
    terminal: bool,
    input: mpsc::UnboundedSender<std::result::Result<Message, axum::Error>>,
    mut output: mpsc::Receiver<Message>,
    mut oracle: Oracle,
    shutdown: CancellationToken,
    ended: &CancellationToken,
    scenario: &Scenario,
) -> Oracle {
    for frame in frames {
        let item = match frame {
            Frame::Binary(bytes) => Ok(Message::Binary(bytes)),
            Frame::Text(text) => Ok(Message::Text(text.into())),
            Frame::Ping => Ok(Message::Ping(Bytes::from_static(b"p"))),
            Frame::Pong => Ok(Message::Pong(Bytes::from_static(b"p"))),
            Frame::Close => Ok(Message::Close(None)),
            Frame::ReadError(kind) => Err(kind.error()),
        };
        let _ = input.send(item);
    }
    if scenario.stall {
        // docs: a connection silent for idle_timeout (no frame, no pong) is closed with 4000.
        let limit = scenario.settings.idle_timeout + END_WITHIN;
        if tokio::time::timeout(limit, ended.cancelled())
            .await
            .is_err()
        {
            panic!(
                "a client that stopped reading and sending was not closed within {limit:?} \
                 ({} of {} requests answered so far)\n{scenario:?}",
                oracle.matched,
                oracle.expected.len()
            );
        }
        while let Ok(message) = output.try_recv() {
            oracle.observe(message);
        }
        oracle.finish(terminal);
        drop(input);
        return oracle;
    }
    if !terminal {
        let deadline = Instant::now() + ANSWER_WITHIN;
        while !oracle.answered() && oracle.close.is_none() {
            match timeout_at(deadline, output.recv()).await {
                Ok(Some(message)) => oracle.observe(message),
                Ok(None) => break,
                Err(_) => panic!(
                    "requests not answered within {ANSWER_WITHIN:?}: {} of {} answered\n{scenario:?}",
                    oracle.matched,
                    oracle.expected.len()
                ),
            }
            if scenario.shutdown_after.is_some_and(|n| oracle.matched >= n) {
                oracle.shutdown = true;
                shutdown.cancel();
            }
        }
    }
    drop(input);
    let deadline = Instant::now() + END_WITHIN;
    loop {
        match timeout_at(deadline, output.recv()).await {
            Ok(Some(message)) => oracle.observe(message),
            Ok(None) => break,
            Err(_) => panic!("the session did not end within {END_WITHIN:?} of the end of input"),
        }
    }
    oracle.finish(terminal);
    oracle
}
