//! HTTP surface: the WebSocket endpoint (`/v1/ws`), Server-Sent Events (`/v1/sse`: see `sse`),
//! liveness and readiness (`/health`, `/health/ready`: see `readiness`), statistics
//! (`/v1/stats`), metrics (`/metrics`) and the dashboard (`/ui/`, see `dashboard`). Handlers
//! here only translate HTTP into calls on the session and the sources; they hold no state of
//! their own beyond counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::warn;

use crate::auth::permissions::Permissions;
use crate::auth::Authenticator;
use crate::broker::Topics;
use crate::changefeed::Changefeed;
use crate::limits::ConnectionLimits;
use crate::metrics::{self, Metrics, Scrape};
use crate::outbound::Backlog;
use crate::protocol::{code_name, Code};
use crate::readiness::{Dependencies, Report};
use crate::session::{self, SessionContext, SessionSettings};
use crate::source::Availability;
use crate::sse::{self, Subscriptions};
use crate::stats::{tallies, KindStats, PerKind, Rates, RATE_WINDOW};

/// What the HTTP handlers share. Built by `app`.
pub(crate) struct HttpState {
    /// Per-connection limits; `max_frame_size` is also tungstenite's hard limit.
    pub(crate) settings: SessionSettings,
    pub(crate) topics: Topics,
    pub(crate) tables: Option<Changefeed>,
    pub(crate) shutdown: CancellationToken,
    /// Every session is tracked so shutdown can wait for them.
    pub(crate) sessions: TaskTracker,
    pub(crate) next_connection: AtomicU64,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) permissions: Arc<Permissions>,
    /// Open connections (in all, per user, per tenant).
    pub(crate) limits: Arc<ConnectionLimits>,
    /// `websocket.allowed_origins`; empty: any.
    pub(crate) allowed_origins: Vec<String>,
    /// What `/metrics` renders; sessions and the changefeed count into it.
    pub(crate) metrics: Arc<Metrics>,
    /// When the server started, for `uptime_seconds`.
    pub(crate) started: tokio::time::Instant,
    /// Recent delivery totals, sampled by a task `app` starts, for the rates in `/v1/stats`.
    pub(crate) rates: Arc<Rates>,
}

pub(crate) fn router(state: Arc<HttpState>) -> Router {
    let allowed = state.allowed_origins.clone();
    // A page on another origin may read a stream when the origin is allowed (preflights for
    // POST and `Authorization` answered here); a refused origin gets 403 from the handler.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin_allowed(&allowed, origin.to_str().unwrap_or(""))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ]);
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/v1/sse", get(sse_get).post(sse_post).layer(cors))
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .with_state(state)
}

/// The server's listener: axum's TCP listener (which rides out accept errors) with
/// `TCP_NODELAY` set on every connection: events are small and latency-bound, and Nagle's
/// algorithm must never hold one back.
pub(crate) struct Connections(pub(crate) TcpListener);

impl Listener for Connections {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (TcpStream, std::net::SocketAddr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        if let Err(err) = tcp.set_nodelay(true) {
            warn!(error = %err, "cannot set TCP_NODELAY");
        }
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Listener::local_addr(&self.0)
    }
}

/// What the handlers learn of each accepted connection's socket: its backlog, by which the
/// session paces snapshots and replays (see `outbound::backlog`). Served with
/// `into_make_service_with_connect_info::<Peer>()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    backlog: Backlog,
}

impl Connected<IncomingStream<'_, Connections>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Connections>) -> Self {
        Self {
            backlog: Backlog::of(stream.io()),
        }
    }
}

/// Bytes each connection reads from its socket at a time. tungstenite's default (128 KiB,
/// allocated up front) would cost every idle connection that much; requests are small, and a
/// larger frame still arrives whole (the buffer grows for it and is read in several steps).
const READ_BUFFER: usize = 4096;

async fn websocket(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refused(&state, &headers) {
        return refused;
    }
    let Some(slot) = state.limits.connect() else {
        return too_many_connections();
    };
    let token = bearer(&headers).or_else(|| query.get("token").cloned());
    let ctx = session_context(&state, token, peer);
    let tracked = state.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(state.settings.max_frame_size)
        .max_frame_size(state.settings.max_frame_size)
        .on_failed_upgrade(|err| warn!(error = %err, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let sessions = tracked.sessions.clone();
            sessions.track_future(async move {
                session::run(socket, ctx).await;
                drop(slot);
            })
        })
}

/// A connection's session context: the server's shared parts, and what its request carried.
fn session_context(state: &HttpState, token: Option<String>, peer: Peer) -> SessionContext {
    SessionContext {
        connection: state.next_connection.fetch_add(1, Ordering::Relaxed),
        settings: state.settings.clone(),
        topics: state.topics.clone(),
        tables: state.tables.clone(),
        shutdown: state.shutdown.clone(),
        auth: state.auth.clone(),
        permissions: state.permissions.clone(),
        limits: state.limits.clone(),
        token,
        backlog: Some(peer.backlog),
        metrics: state.metrics.clone(),
    }
}

/// Why a new connection (WebSocket or SSE stream) is refused before it starts, if it is: 503
/// while shutting down, 403 when a browser's `Origin` is not in `websocket.allowed_origins`.
fn refused(state: &HttpState, headers: &HeaderMap) -> Option<Response> {
    if state.shutdown.is_cancelled() {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    }
    let origin = headers.get(header::ORIGIN)?;
    if origin_allowed(&state.allowed_origins, origin.to_str().unwrap_or("")) {
        return None;
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            format!(
                "{}: origin not allowed (websocket.allowed_origins)",
                code_name(Code::PermissionDenied)
            ),
        )
            .into_response(),
    )
}

fn too_many_connections() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{}: too many connections (limits.max_connections)",
            code_name(Code::LimitExceeded)
        ),
    )
        .into_response()
}

/// `GET /v1/sse?table=...&topic=...`: an SSE stream (see `sse`).
async fn sse_get(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let value = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let token = bearer(&headers).or_else(|| value("token"));
    let last_event_id = last_event_id(&headers).or_else(|| value("last_event_id"));
    match Subscriptions::from_query(&query) {
        Ok(subscriptions) => {
            stream(&state, peer, &headers, token, subscriptions, last_event_id).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /v1/sse` with `{"subscriptions": [...]}`: an SSE stream (see `sse`).
async fn sse_post(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let token = bearer(&headers).or_else(|| query.get("token").cloned());
    match Subscriptions::from_body(&body) {
        Ok(subscriptions) => {
            let last_event_id = last_event_id(&headers);
            stream(&state, peer, &headers, token, subscriptions, last_event_id).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn stream(
    state: &HttpState,
    peer: Peer,
    headers: &HeaderMap,
    token: Option<String>,
    subscriptions: Subscriptions,
    last_event_id: Option<String>,
) -> Response {
    if let Some(refused) = refused(state, headers) {
        return refused;
    }
    let Some(slot) = state.limits.connect() else {
        return too_many_connections();
    };
    let ctx = session_context(state, token, peer);
    sse::open(ctx, &state.sessions, slot, subscriptions, last_event_id).await
}

/// The `Last-Event-ID` header a reconnecting `EventSource` sends.
fn last_event_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("last-event-id")?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether a browser `Origin` may connect: any when none are configured or `*` is; otherwise
/// an exact (case-insensitive) match of scheme, host and port.
fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Liveness: 200 while the process serves (whatever its dependencies say), 503 once shutting
/// down; the body is the same report as `/health/ready`'s.
async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let report = report(&state);
    answer(report.is_live(), report)
}

/// Readiness: 200 while serving with every configured dependency reachable, else 503.
async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    let report = report(&state);
    answer(report.is_ready(), report)
}

fn report(state: &HttpState) -> Report {
    let dependencies = Dependencies {
        postgres: state
            .tables
            .as_ref()
            .map_or(Availability::NotConfigured, Changefeed::availability)
            .into(),
        kafka: state.topics.kafka_availability().into(),
        rabbitmq: state.topics.rabbitmq_availability().into(),
    };
    Report::new(
        state.shutdown.is_cancelled(),
        state.started.elapsed(),
        dependencies,
    )
}

fn answer(ok: bool, report: Report) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Counts for operators and tests: open connections, active subscriptions, topics listened to.
#[derive(Debug, serde::Serialize)]
struct Stats {
    connections: usize,
    subscriptions: usize,
    topics: usize,
    /// Subscriptions fan-out removed since start because their connection's queue was full
    /// (closed as a slow consumer, 4008) or the connection was gone.
    dropped_subscriptions: u64,
    /// "connected", "unavailable" or "not configured".
    database: Availability,
    /// Likewise for the RabbitMQ backend.
    rabbitmq: Availability,
    /// Likewise for the Kafka backend.
    kafka: Availability,
    /// Per source kind: subscriptions now, events delivered since start, and per second.
    sources: PerKind<KindStats>,
    /// Events delivered since start, all kinds together: each event queued to a subscriber's
    /// connection counts once per subscriber.
    delivered: u64,
    /// Of those, per second over the last `rate_window_seconds`.
    delivered_per_second: f64,
    /// The window of every `delivered_per_second` (10; less in the first seconds after start).
    rate_window_seconds: u64,
}

async fn stats(State(state): State<Arc<HttpState>>) -> Json<Stats> {
    let sources = state.rates.stats(
        tokio::time::Instant::now(),
        tallies(&state.topics, state.tables.as_ref()),
    );
    let kinds = [
        sources.memory,
        sources.kafka,
        sources.rabbitmq,
        sources.table,
    ];
    Json(Stats {
        connections: state.limits.open(),
        subscriptions: state.topics.subscriptions()
            + state.tables.as_ref().map_or(0, Changefeed::subscriptions),
        topics: state.topics.active_topics(),
        dropped_subscriptions: state.topics.dropped()
            + state.tables.as_ref().map_or(0, Changefeed::dropped),
        database: state
            .tables
            .as_ref()
            .map_or(Availability::NotConfigured, Changefeed::availability),
        rabbitmq: state.topics.rabbitmq_availability(),
        kafka: state.topics.kafka_availability(),
        sources,
        delivered: kinds.iter().map(|k| k.delivered).sum(),
        // Each kind's rate has two decimals; so has their sum, but for float noise.
        delivered_per_second: (kinds.iter().map(|k| k.delivered_per_second).sum::<f64>() * 100.0)
            .round()
            / 100.0,
        rate_window_seconds: RATE_WINDOW.as_secs(),
    })
}

/// `GET /metrics`: Prometheus' text format, with the figures that are state read now.
async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let tables = state.tables.as_ref();
    let kinds = tallies(&state.topics, tables);
    let configured = [
        (
            "postgres",
            None,
            tables.map_or(Availability::NotConfigured, Changefeed::availability),
        ),
        (
            "kafka",
            Some(kinds.kafka),
            state.topics.kafka_availability(),
        ),
        (
            "rabbitmq",
            Some(kinds.rabbitmq),
            state.topics.rabbitmq_availability(),
        ),
    ]
    .into_iter()
    .filter(|(_, _, availability)| *availability != Availability::NotConfigured);
    // Per source kind: in-process topics, configured broker backends, tables.
    let mut counted = vec![("memory", kinds.memory)];
    let mut dependencies = Vec::new();
    for (name, tally, availability) in configured {
        dependencies.push((name, availability == Availability::Connected));
        if let Some(tally) = tally {
            counted.push((name, tally));
        }
    }
    counted.push(("table", kinds.table));
    let now = Scrape {
        connections: state.limits.open(),
        subscriptions: counted.iter().map(|&(n, t)| (n, t.subscriptions)).collect(),
        delivered: counted.iter().map(|&(n, t)| (n, t.delivered)).collect(),
        dropped: state.topics.dropped() + tables.map_or(0, Changefeed::dropped),
        dependencies,
        process: process(),
        kafka_lag: state.topics.kafka_lag(),
    };
    let text = state.metrics.render(&now);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// This process's resident memory, open files and CPU time, from `/proc`.
#[cfg(target_os = "linux")]
fn process() -> Option<metrics::Process> {
    let me = procfs::process::Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some(metrics::Process {
        resident_bytes: stat.rss * procfs::page_size(),
        open_fds: me.fd_count().ok()? as u64,
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
    })
}

#[cfg(not(target_os = "linux"))]
fn process() -> Option<metrics::Process> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&allowed, "https://app.example.com"));
        assert!(origin_allowed(&allowed, "HTTPS://APP.EXAMPLE.COM"));
        assert!(!origin_allowed(&allowed, "https://app.example.com.evil.io"));
        assert!(!origin_allowed(&allowed, "http://app.example.com"));
        assert!(!origin_allowed(&allowed, "null"));
        assert!(origin_allowed(&[], "https://anything"));
        assert!(origin_allowed(&["*".to_string()], "https://anything"));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer abc.def".parse().expect("value"),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&headers), None);
    }
}
