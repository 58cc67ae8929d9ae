//! Wires the listener, the sources and the HTTP surface together, and owns shutdown.
//!
//! Shutdown order, once the token is cancelled (SIGINT/SIGTERM in `main`, or
//! [`Server::shutdown`]):
//! 1. the listener stops accepting; `/health`, `/health/ready` and new upgrades answer 503 (on
//!    connections already open);
//! 2. every session's closer fires (they are children of the token): each writer sends close
//!    1001 and the session drops its subscriptions; the server waits for the sessions;
//! 3. only then do the sources stop (a token of their own, so that no session sees its sources
//!    go away before it is closed): the changefeed reader stops polling and removes its row from
//!    `feedgate.readers`, broker consumers and connections close, snapshot tasks end, the
//!    delivery-rate sampler of `/v1/stats` stops, and so does the `--demo` stream;
//! 4. the server waits for the sources' tasks and in-flight HTTP requests. All of it takes at most
//!    `shutdown_timeout`; what is still running then is left behind with a warning.

use std::future::IntoFuture;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::permissions::Permissions;
use crate::auth::{AuthError, Authenticator};
use crate::broker::kafka::KafkaBroker;
use crate::broker::memory::MemoryBroker;
use crate::broker::rabbitmq::RabbitBroker;
use crate::broker::Topics;
use crate::changefeed::{Changefeed, ChangefeedError, ChangefeedSettings};
use crate::config::Config;
use crate::http::{router, Connections, HttpState, Peer};
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::session::SessionSettings;
use crate::stats::{self, Rates};
use crate::version::{COMMIT, VERSION};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The accept loop failed.
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// The changefeed settings are unusable.
    #[error(transparent)]
    Changefeed(#[from] ChangefeedError),
    /// The Kafka client could not be created (invalid `kafka.properties`).
    #[error("invalid kafka settings: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// A key file is missing or invalid.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The server task panicked (a bug).
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Server {
    /// Binds the listen address and starts serving in the background.
    pub async fn start(config: Config) -> Result<Self, AppError> {
        // Key files first: a bad one stops start-up before the port is taken.
        let auth = Authenticator::new(&config.auth)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        // Sources stop after the sessions (see the module docs); their tasks run on `background`.
        let sources = CancellationToken::new();
        let background = TaskTracker::new();
        let metrics = Arc::new(Metrics::new());
        let tables = match &config.database_url {
            Some(url) => {
                let mut settings =
                    ChangefeedSettings::new(url, config.watch.clone(), config.changefeed.clone())?;
                settings.metrics = metrics.clone();
                Some(Changefeed::start(settings, sources.clone(), &background))
            }
            None => None,
        };
        let kafka = match config.kafka.clone() {
            Some(kafka) => Some(
                KafkaBroker::start(kafka, sources.clone(), &background).map_err(|err| {
                    sources.cancel();
                    AppError::Kafka(err)
                })?,
            ),
            None => None,
        };
        let memory = MemoryBroker::new(config.memory.clone(), &background, sources.clone());
        if config.demo {
            background.spawn(crate::demo::run(memory.clone(), sources.clone()));
        }
        let started = tokio::time::Instant::now();
        let rates = Arc::new(Rates::default());
        let state = Arc::new(HttpState {
            settings: SessionSettings {
                max_message_size: config.websocket.max_message_size,
                max_frame_size: config.websocket.max_frame_size,
                ping_interval: config.websocket.ping_interval,
                idle_timeout: config.websocket.idle_timeout,
                max_subscriptions: config.limits.max_subscriptions,
                outbound_queue: config.limits.outbound_queue,
                outbound_queue_bytes: config.limits.outbound_queue_bytes,
                requests_per_second: config.limits.requests_per_second,
                request_burst: config.limits.request_burst,
            },
            topics: Topics::new(
                config.topics.clone(),
                memory,
                config
                    .rabbitmq
                    .clone()
                    .map(|rabbit| RabbitBroker::start(rabbit, sources.clone(), &background)),
                kafka,
            ),
            tables,
            shutdown: shutdown.clone(),
            sessions: TaskTracker::new(),
            next_connection: AtomicU64::new(1),
            auth: Arc::new(auth),
            permissions: Arc::new(Permissions::new(config.permissions.clone())),
            limits: ConnectionLimits::new(&config.limits),
            allowed_origins: config.websocket.allowed_origins.clone(),
            metrics,
            started,
            rates: rates.clone(),
        });
        let (topics, tables) = (state.topics.clone(), state.tables.clone());
        background.spawn(stats::sample(
            rates,
            move || stats::delivered(&topics, tables.as_ref()),
            sources.clone(),
        ));
        if config.permissions.is_empty() {
            warn!("no permission rules: every client may subscribe and publish to everything");
        }
        if config.auth.anonymous {
            warn!("anonymous access is on: clients connect without a token");
        }
        info!(addr = %local_addr, version = VERSION, commit = COMMIT, "listening");
        let task = tokio::spawn(serve(listener, state, background, sources, config));
        Ok(Self {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A token whose cancellation starts shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts shutdown and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Waits until the server stops (after its token is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        self.task.await?
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    background: TaskTracker,
    sources: CancellationToken,
    config: Config,
) -> Result<(), AppError> {
    let shutdown = state.shutdown.clone();
    let sessions = state.sessions.clone();
    let grace = config.shutdown_timeout;
    let http = axum::serve(
        Connections(listener),
        router(state).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    // In-flight HTTP requests get the same grace period as sessions.
    let http = async {
        tokio::select! {
            served = http => served,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => Ok(()),
        }
    };
    let drain = async {
        shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + grace;
        sessions.close();
        if tokio::time::timeout_at(deadline, sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = sessions.len(),
                "shutdown timeout passed with sessions still open"
            );
        }
        sources.cancel();
        background.close();
        if tokio::time::timeout_at(deadline, background.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = background.len(),
                "shutdown timeout passed with sources still stopping"
            );
        }
    };
    let (served, ()) = tokio::join!(http, drain);
    info!("stopped");
    Ok(served?)
}
