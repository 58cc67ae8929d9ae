//! HTTP surface: the WebSocket endpoint (`/v1/ws`), health (`/health`) and statistics
//! (`/v1/stats`). Handlers here only translate HTTP into calls on the session and the sources;
//! they hold no state of their own beyond counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::broker::Topics;
use crate::changefeed::Changefeed;
use crate::session::{self, SessionContext, SessionSettings};

/// What the HTTP handlers share. Built by `app`.
pub(crate) struct HttpState {
    pub(crate) settings: SessionSettings,
    /// Largest frame tungstenite reads at all (the hard limit).
    pub(crate) max_frame_size: usize,
    pub(crate) topics: Topics,
    pub(crate) tables: Option<Changefeed>,
    pub(crate) shutdown: CancellationToken,
    /// Every session is tracked so shutdown can wait for them.
    pub(crate) sessions: TaskTracker,
    pub(crate) connections: AtomicUsize,
    pub(crate) next_connection: AtomicU64,
}

pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/health", get(health))
        .route("/v1/stats", get(stats))
        .with_state(state)
}

/// Bytes each connection reads from its socket at a time. tungstenite's default (128 KiB,
/// allocated up front) would cost every idle connection that much; requests are small, and a
/// larger frame still arrives whole (the buffer grows for it and is read in several steps).
const READ_BUFFER: usize = 4096;

async fn websocket(State(state): State<Arc<HttpState>>, upgrade: WebSocketUpgrade) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let ctx = SessionContext {
        connection: state.next_connection.fetch_add(1, Ordering::Relaxed),
        settings: state.settings.clone(),
        topics: state.topics.clone(),
        tables: state.tables.clone(),
        shutdown: state.shutdown.clone(),
    };
    let tracked = state.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(state.max_frame_size)
        .max_frame_size(state.max_frame_size)
        .on_failed_upgrade(|err| warn!(error = %err, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let sessions = tracked.sessions.clone();
            sessions.track_future(async move {
                tracked.connections.fetch_add(1, Ordering::Relaxed);
                session::run(socket, ctx).await;
                tracked.connections.fetch_sub(1, Ordering::Relaxed);
            })
        })
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    "ok".into_response()
}

/// Counts for operators and tests: open connections, active subscriptions, topics listened to.
#[derive(Debug, serde::Serialize)]
struct Stats {
    connections: usize,
    subscriptions: usize,
    topics: usize,
    /// "connected", "unavailable" or "not configured".
    database: &'static str,
    /// Likewise for the RabbitMQ backend.
    rabbitmq: &'static str,
    /// Likewise for the Kafka backend.
    kafka: &'static str,
}

async fn stats(State(state): State<Arc<HttpState>>) -> Json<Stats> {
    Json(Stats {
        connections: state.connections.load(Ordering::Relaxed),
        subscriptions: state.topics.subscriptions()
            + state.tables.as_ref().map_or(0, Changefeed::subscriptions),
        topics: state.topics.active_topics(),
        database: match &state.tables {
            None => "not configured",
            Some(tables) if tables.is_available() => "connected",
            Some(_) => "unavailable",
        },
        rabbitmq: state.topics.rabbitmq_status(),
        kafka: state.topics.kafka_status(),
    })
}
