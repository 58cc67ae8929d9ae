//! Typed configuration: a TOML file, then `FEEDGATE_*` environment variables, then command-line
//! flags, each layer overriding the one before; then validation, which names the setting at
//! fault. This module reads files and parses; it starts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `feedgate serve` can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
    /// How long shutdown waits for sessions to close before giving up on them.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// WebSocket transport settings.
    pub websocket: WebSocketConfig,
    /// Per-connection limits.
    pub limits: Limits,
    /// PostgreSQL URL for table changefeeds; without it table subscriptions answer
    /// `SOURCE_UNAVAILABLE`. A secret: never logged.
    pub database_url: Option<String>,
    /// Tables (`schema.table`) to watch at start-up, in addition to those an operator watched
    /// with `SELECT feedgate.watch(...)`.
    pub watch: Vec<String>,
    /// Changefeed reader tuning.
    pub changefeed: ChangefeedConfig,
    /// Which backend serves which topic; empty: every topic is in-process.
    pub topics: Vec<TopicRule>,
    /// The in-process broker's history (resume, `EARLIEST`, `OFFSET`). Its own section because
    /// `topics` is the list of routing rules.
    pub memory: MemoryConfig,
    /// The RabbitMQ backend, when a rule routes topics to it.
    pub rabbitmq: Option<RabbitConfig>,
    /// The Kafka backend, when a rule routes topics to it.
    pub kafka: Option<KafkaConfig>,
    /// How clients authenticate (JWT), or that they need not.
    pub auth: AuthConfig,
    /// Grants: who may subscribe and publish to what. None: everything is allowed.
    pub permissions: Vec<PermissionRule>,
    /// How log lines are written to stderr: text for people, JSON for log collectors.
    pub log_format: LogFormat,
    /// Publish a small live sample stream on the in-process topic `demo.prices` (`serve
    /// --demo`), so a first run has something to show.
    pub demo: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, the event's fields, and
    /// the span it happened in (a connection's session id, user and tenant).
    Json,
}

/// The backends a topic can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The in-process broker.
    Memory,
    /// Kafka (any Kafka-protocol broker).
    Kafka,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
}

/// One topic routing rule (see `broker::route`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// A topic name or pattern (`*` one segment, `#` any number of segments).
    pub pattern: String,
    /// Which backend serves matching topics.
    pub backend: BackendKind,
    /// Whether subscribers may use `*`/`#` in the topics they subscribe to (RabbitMQ only:
    /// the binding key of the subscription's queue).
    #[serde(default)]
    pub allow_wildcards: bool,
    /// Whether each matching topic is kept in a RabbitMQ stream of its own (RabbitMQ only; not
    /// with wildcards): subscribers can then start from the first kept message or an offset,
    /// and resume from a cursor (`broker::rabbitmq::stream`).
    #[serde(default)]
    pub stream: bool,
}

/// One grant (see `auth::permissions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionRule {
    /// Roles (from the token's roles claim) this rule applies to; `*` for everyone.
    pub roles: Vec<String>,
    /// Topic patterns these roles may subscribe to.
    #[serde(default)]
    pub subscribe_topics: Vec<String>,
    /// Topic patterns these roles may publish to.
    #[serde(default)]
    pub publish_topics: Vec<String>,
    /// Table patterns (`schema.table`, `*` for any part) these roles may subscribe to.
    #[serde(default)]
    pub subscribe_tables: Vec<String>,
    /// A predicate that limits which rows of `subscribe_tables` these roles see.
    #[serde(default)]
    pub row_filter: Option<String>,
}

/// Authentication settings. Keys pin algorithms: the HS256 secret verifies only HS256 tokens,
/// RSA keys only RS256, P-256 keys only ES256.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let connections without a token in (as role `anonymous`). Must be set explicitly, and
    /// cannot be set when keys are configured.
    pub anonymous: bool,
    /// Shared secret for HS256 tokens (at least 32 bytes). A secret: never logged.
    pub hs256_secret: Option<String>,
    /// A file holding the HS256 secret (instead of `hs256_secret`).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM files of RSA public keys for RS256 tokens.
    pub rs256_public_keys: Vec<PathBuf>,
    /// PEM files of P-256 public keys for ES256 tokens.
    pub es256_public_keys: Vec<PathBuf>,
    /// A JWKS file (RSA and P-256 keys; a token's `kid` picks its key).
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens without `exp` (tokens that never expire).
    pub require_exp: bool,
    /// How long a connection may stay unauthenticated before it is closed (4001).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The claim holding the roles (a string or an array; dotted paths reach into objects, e.g.
    /// `realm_access.roles`).
    pub roles_claim: String,
    /// The claim naming the user (connection limits per user).
    pub user_claim: String,
    /// The claim naming the tenant (connection limits per tenant).
    pub tenant_claim: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous: false,
            hs256_secret: None,
            hs256_secret_file: None,
            rs256_public_keys: Vec::new(),
            es256_public_keys: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            require_exp: true,
            timeout: Duration::from_secs(10),
            roles_claim: "roles".into(),
            user_claim: "sub".into(),
            tenant_claim: "tenant_id".into(),
        }
    }
}

impl AuthConfig {
    /// Whether any verification key is configured.
    pub fn has_keys(&self) -> bool {
        self.hs256_secret.is_some()
            || self.hs256_secret_file.is_some()
            || !self.rs256_public_keys.is_empty()
            || !self.es256_public_keys.is_empty()
            || self.jwks_file.is_some()
    }
}

/// The Kafka backend's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the Kafka-protocol brokers.
    pub bootstrap_servers: String,
    /// Extra librdkafka client properties (e.g. `security.protocol`, `sasl.*`), applied to the
    /// producer and the consumers.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// How long a publish waits for the delivery report before failing (retryable).
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
}

/// The RabbitMQ backend's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`. A secret: never logged.
    pub url: String,
    /// The exchange topics are published to and bound on (declared durable if absent).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Its type: `topic` (routing-key patterns), `direct`, `fanout` or `headers`.
    #[serde(default = "default_exchange_type")]
    pub exchange_type: String,
    /// Unacknowledged deliveries per subscription queue.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// How long a publish waits for the broker's confirm before failing (retryable).
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Stream topics: the stream of topic `t` is the queue named this prefix + `t`.
    #[serde(default = "default_stream_prefix")]
    pub stream_prefix: String,
    /// Stream topics: the most bytes a stream keeps (`x-max-length-bytes`); older segments go.
    #[serde(default = "default_stream_max_bytes")]
    pub stream_max_bytes: u64,
    /// Stream topics: the size of a stream's segment files
    /// (`x-stream-max-segment-size-bytes`); retention removes whole segments.
    #[serde(default = "default_stream_segment_bytes")]
    pub stream_segment_bytes: u64,
    /// Stream topics: how long a stream keeps a message (`x-max-age`, whole seconds); `0s`
    /// means only `stream_max_bytes` limits it.
    #[serde(default = "default_stream_max_age", with = "humantime_serde")]
    pub stream_max_age: Duration,
}

fn default_stream_prefix() -> String {
    "feedgate.stream.".into()
}
fn default_stream_max_bytes() -> u64 {
    1 << 30
}
fn default_stream_segment_bytes() -> u64 {
    64 << 20
}
fn default_stream_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_exchange() -> String {
    "feedgate".into()
}
fn default_exchange_type() -> String {
    "topic".into()
}
fn default_prefetch() -> u16 {
    256
}
fn default_publish_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Changefeed reader and buffer tuning.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangefeedConfig {
    /// Changes a subscription may buffer while its snapshot streams; past it, the subscription
    /// is closed with `SLOW_CONSUMER` (retryable).
    pub snapshot_buffer: usize,
    /// After a poll found changes, poll again this often...
    #[serde(with = "humantime_serde")]
    pub busy_poll: Duration,
    /// ...for this long after the last change, before going idle and asking for a NOTIFY.
    #[serde(with = "humantime_serde")]
    pub busy_grace: Duration,
    /// While idle, poll this often anyway (a safety net for a lost notification).
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// Logged changes older than this (and read by every live reader) are pruned.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most this many logged changes are kept (of those read by every live reader).
    pub max_log_rows: u64,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Connections for snapshots and lookups (the reader has its own two). At most `pool_size - 1`
    /// snapshots (or resume catch-ups) run at once; more wait their turn.
    pub pool_size: u32,
    /// Find the subscribers a change concerns through an index of their filters' `=` and `in`
    /// conditions, rather than by asking every subscriber's filter. On by default; off only to
    /// measure what the index saves (`bench/run --only filtered`).
    pub filter_index: bool,
    /// How changes are captured: `auto` (logical decoding when the database allows it, else
    /// row triggers; the start-up log says which and why), `logical` or `trigger`. The first
    /// node to start on a database decides for every node (docs/changefeeds.md).
    pub capture: CaptureMode,
    /// The logical replication slot's name (logical mode); empty: `feedgate_<database>`. Slot
    /// names are the cluster's, not the database's.
    pub slot: String,
    /// Logical mode: how long a resume waits for the change log to catch up with its cursor
    /// before answering `SOURCE_UNAVAILABLE` (retryable).
    #[serde(with = "humantime_serde")]
    pub capture_wait: Duration,
}

/// `changefeed.capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Logical decoding when the database allows it, else row triggers.
    Auto,
    /// Logical decoding, or the server does not start.
    Logical,
    /// Row triggers.
    Trigger,
}

impl Default for ChangefeedConfig {
    fn default() -> Self {
        Self {
            snapshot_buffer: 100_000,
            busy_poll: Duration::from_millis(2),
            busy_grace: Duration::from_millis(250),
            idle_poll: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            max_log_rows: 1_000_000,
            prune_interval: Duration::from_secs(30),
            pool_size: 8,
            filter_index: true,
            capture: CaptureMode::Auto,
            slot: String::new(),
            capture_wait: Duration::from_secs(5),
        }
    }
}

/// What the in-process broker keeps of each topic, so that a subscriber can resume after a
/// dropped connection or start from the oldest kept message. Kept in memory only: a restart
/// forgets it (and cursors from before it answer `RESUME_UNAVAILABLE`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Messages kept per topic, newest first; 0 keeps none.
    pub history_size: usize,
    /// Bytes (encoded messages) kept per topic, at most; the oldest go first.
    pub history_bytes: usize,
    /// How long a message is kept.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Topics with a history, at most. A topic published to while this many other topics have
    /// unexpired history keeps none until some expire (a resume of it then answers
    /// `RESUME_UNAVAILABLE`). Bounds the memory held: `history_topics × history_bytes`.
    pub history_topics: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_bytes: 256 * 1024,
            history_ttl: Duration::from_secs(300),
            history_topics: 1000,
        }
    }
}

/// Transport settings of the WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// The server pings each connection this often, so idle proxies keep it open.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection from which nothing (not even a pong) arrives for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request frame served; a larger one gets `LIMIT_EXCEEDED` and is discarded, and
    /// the connection stays open.
    pub max_message_size: usize,
    /// Largest frame read at all; a larger one closes the connection with 1009. Bounds the
    /// memory one connection can make the server hold.
    pub max_frame_size: usize,
    /// Browser origins allowed to connect (`https://app.example.com`, or `*` for any); an
    /// upgrade with another `Origin` header is refused with 403. Empty: any origin. Requests
    /// without an `Origin` header (non-browser clients) are not affected.
    pub allowed_origins: Vec<String>,
}

/// Limits on one connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Active subscriptions per connection.
    pub max_subscriptions: usize,
    /// Outbound messages queued per connection; when fan-out finds the queue full the client is
    /// not reading fast enough, and the connection is closed as a slow consumer (4008).
    pub outbound_queue: usize,
    /// Outbound bytes (encoded frames) queued per connection; like `outbound_queue`, when
    /// fan-out finds no room the connection is closed as a slow consumer (4008). At most 4 GiB.
    pub outbound_queue_bytes: usize,
    /// Open connections in all; past it an upgrade is refused with 503.
    pub max_connections: usize,
    /// Open connections per user (the user claim); past it, authentication fails with
    /// `LIMIT_EXCEEDED` and the connection is closed (4029).
    pub max_connections_per_user: usize,
    /// Open connections per tenant (the tenant claim), likewise.
    pub max_connections_per_tenant: usize,
    /// Requests per second per connection (token bucket); past it, `RATE_LIMITED` with
    /// `retry_after_ms`. 0: unlimited.
    pub requests_per_second: u32,
    /// Requests a connection may send at once before the rate applies.
    pub request_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(10),
            websocket: WebSocketConfig::default(),
            limits: Limits::default(),
            database_url: None,
            watch: Vec::new(),
            changefeed: ChangefeedConfig::default(),
            topics: Vec::new(),
            memory: MemoryConfig::default(),
            rabbitmq: None,
            kafka: None,
            auth: AuthConfig::default(),
            permissions: Vec::new(),
            log_format: LogFormat::Text,
            demo: false,
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_message_size: 1024 * 1024,
            max_frame_size: 16 * 1024 * 1024,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions: 128,
            outbound_queue: 1024,
            outbound_queue_bytes: 1 << 20,
            max_connections: 10_000,
            max_connections_per_user: 10,
            max_connections_per_tenant: 100,
            requests_per_second: 100,
            request_burst: 200,
        }
    }
}

/// Settings given as flags or `FEEDGATE_*` variables; each one given wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "FEEDGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "FEEDGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Shutdown drain timeout, e.g. "10s".
    #[arg(long, env = "FEEDGATE_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// WebSocket ping interval, e.g. "25s".
    #[arg(long, env = "FEEDGATE_PING_INTERVAL", value_parser = humantime::parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Idle timeout, e.g. "60s".
    #[arg(long, env = "FEEDGATE_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Largest request frame served, in bytes.
    #[arg(long, env = "FEEDGATE_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Largest frame read at all, in bytes.
    #[arg(long, env = "FEEDGATE_MAX_FRAME_SIZE")]
    pub max_frame_size: Option<usize>,
    /// Active subscriptions per connection.
    #[arg(long, env = "FEEDGATE_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Outbound messages queued per connection.
    #[arg(long, env = "FEEDGATE_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Outbound bytes queued per connection.
    #[arg(long, env = "FEEDGATE_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Open connections in all.
    #[arg(long, env = "FEEDGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Requests per second per connection (0: unlimited).
    #[arg(long, env = "FEEDGATE_REQUESTS_PER_SECOND")]
    pub requests_per_second: Option<u32>,
    /// Let clients connect without a token (sets auth.anonymous; not with keys).
    #[arg(long, env = "FEEDGATE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// HS256 shared secret for tokens (sets auth.hs256_secret).
    #[arg(
        long,
        env = "FEEDGATE_HS256_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<String>,
    /// PostgreSQL URL for table changefeeds, e.g. postgres://user@host/db.
    #[arg(
        long,
        env = "FEEDGATE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// A table to watch at start-up (repeatable; comma-separated in FEEDGATE_WATCH).
    #[arg(
        long,
        env = "FEEDGATE_WATCH",
        value_name = "SCHEMA.TABLE",
        value_delimiter = ','
    )]
    pub watch: Vec<String>,
    /// Log format: text (the default) or json.
    #[arg(long, env = "FEEDGATE_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Publish a live sample stream (price ticks, JSON, four a second) on the in-process topic
    /// demo.prices.
    #[arg(long, env = "FEEDGATE_DEMO")]
    pub demo: bool,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key and line.
        source: Box<toml::de::Error>,
    },
    /// A setting has a value that cannot work.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// Dotted name as in the file, e.g. `websocket.idle_timeout`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Loads the file named by `overrides.config` (if any), applies the overrides, validates.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses one TOML file (no overrides, no validation).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    fn apply(&mut self, o: &Overrides) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *slot = value.clone();
            }
        }
        set(&mut self.listen, &o.listen);
        set(&mut self.shutdown_timeout, &o.shutdown_timeout);
        set(&mut self.websocket.ping_interval, &o.ping_interval);
        set(&mut self.websocket.idle_timeout, &o.idle_timeout);
        set(&mut self.websocket.max_message_size, &o.max_message_size);
        set(&mut self.websocket.max_frame_size, &o.max_frame_size);
        set(&mut self.limits.max_subscriptions, &o.max_subscriptions);
        set(&mut self.limits.outbound_queue, &o.outbound_queue);
        set(
            &mut self.limits.outbound_queue_bytes,
            &o.outbound_queue_bytes,
        );
        set(&mut self.limits.max_connections, &o.max_connections);
        set(&mut self.limits.requests_per_second, &o.requests_per_second);
        set(&mut self.log_format, &o.log_format);
        if o.allow_anonymous {
            self.auth.anonymous = true;
        }
        if o.demo {
            self.demo = true;
        }
        if o.hs256_secret.is_some() {
            self.auth.hs256_secret.clone_from(&o.hs256_secret);
        }
        if o.database_url.is_some() {
            self.database_url.clone_from(&o.database_url);
        }
        for table in &o.watch {
            if !self.watch.contains(table) {
                self.watch.push(table.clone());
            }
        }
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        let ws = &self.websocket;
        if ws.ping_interval.is_zero() {
            return invalid("websocket.ping_interval", "must be longer than 0".into());
        }
        if ws.idle_timeout <= ws.ping_interval {
            return invalid(
                "websocket.idle_timeout",
                format!(
                    "must be longer than websocket.ping_interval ({})",
                    humantime::format_duration(ws.ping_interval)
                ),
            );
        }
        if ws.max_message_size < 64 {
            return invalid("websocket.max_message_size", "must be at least 64".into());
        }
        if ws.max_frame_size < ws.max_message_size {
            return invalid(
                "websocket.max_frame_size",
                format!(
                    "must be at least websocket.max_message_size ({})",
                    ws.max_message_size
                ),
            );
        }
        if self.limits.max_subscriptions == 0 {
            return invalid("limits.max_subscriptions", "must be at least 1".into());
        }
        // Subscribing reserves two slots (Subscribed and Ready) at once.
        if self.limits.outbound_queue < 2 {
            return invalid("limits.outbound_queue", "must be at least 2".into());
        }
        if !(1024..=u32::MAX as usize).contains(&self.limits.outbound_queue_bytes) {
            return invalid(
                "limits.outbound_queue_bytes",
                "must be between 1 KiB and 4 GiB".into(),
            );
        }
        if let Some(url) = &self.database_url {
            if let Err(err) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                return invalid("database_url", format!("not a PostgreSQL URL: {err}"));
            }
        }
        if !self.watch.is_empty() && self.database_url.is_none() {
            return invalid("watch", "needs database_url".into());
        }
        let cf = &self.changefeed;
        if cf.snapshot_buffer == 0 {
            return invalid("changefeed.snapshot_buffer", "must be at least 1".into());
        }
        if cf.busy_poll.is_zero() || cf.idle_poll.is_zero() || cf.prune_interval.is_zero() {
            return invalid(
                "changefeed.busy_poll",
                "busy_poll, idle_poll and prune_interval must be longer than 0".into(),
            );
        }
        if cf.pool_size == 0 {
            return invalid("changefeed.pool_size", "must be at least 1".into());
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1".into());
        }
        if self.limits.max_connections_per_user == 0 || self.limits.max_connections_per_tenant == 0
        {
            return invalid(
                "limits.max_connections_per_user",
                "max_connections_per_user and max_connections_per_tenant must be at least 1".into(),
            );
        }
        if self.limits.requests_per_second > 0 && self.limits.request_burst == 0 {
            return invalid("limits.request_burst", "must be at least 1".into());
        }
        self.validate_auth()?;
        self.validate_topics()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        let auth = &self.auth;
        if auth.has_keys() && auth.anonymous {
            return invalid(
                "auth.anonymous",
                "cannot be true when keys are configured: every client must then authenticate"
                    .into(),
            );
        }
        if !auth.has_keys() && !auth.anonymous {
            return invalid(
                "auth",
                "no way to authenticate clients: configure auth.hs256_secret, \
                 auth.hs256_secret_file, auth.rs256_public_keys, auth.es256_public_keys or \
                 auth.jwks_file, or allow anonymous access explicitly (auth.anonymous = true, \
                 --allow-anonymous)"
                    .into(),
            );
        }
        if auth.hs256_secret.is_some() && auth.hs256_secret_file.is_some() {
            return invalid(
                "auth.hs256_secret",
                "set hs256_secret or hs256_secret_file, not both".into(),
            );
        }
        if auth.hs256_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return invalid(
                "auth.hs256_secret",
                "must be at least 32 bytes (a short HS256 secret can be guessed)".into(),
            );
        }
        if auth.timeout.is_zero() {
            return invalid("auth.timeout", "must be longer than 0".into());
        }
        for rule in &self.permissions {
            if rule.roles.is_empty() {
                return invalid(
                    "permissions.roles",
                    "each rule needs at least one role".into(),
                );
            }
            if let Some(bad) = rule.subscribe_tables.iter().find(|p| !p.contains('.')) {
                return invalid(
                    "permissions.subscribe_tables",
                    format!("{bad:?} is not schema.table (use * for any part)"),
                );
            }
            if let Some(filter) = &rule.row_filter {
                if rule.subscribe_tables.is_empty() {
                    return invalid(
                        "permissions.row_filter",
                        "a row filter needs subscribe_tables to apply to".into(),
                    );
                }
                if let Err(err) = crate::row_filter::FilterTemplate::parse(filter) {
                    return invalid("permissions.row_filter", format!("{filter:?}: {err}"));
                }
            }
        }
        Ok(())
    }

    fn validate_topics(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        for rule in &self.topics {
            if let Err(why) = crate::topic_pattern::check_pattern(&rule.pattern) {
                return invalid("topics.pattern", why);
            }
            if rule.backend == BackendKind::Rabbitmq && self.rabbitmq.is_none() {
                return invalid(
                    "topics.backend",
                    format!(
                        "{:?} routes to rabbitmq but there is no [rabbitmq] section",
                        rule.pattern
                    ),
                );
            }
            if rule.backend == BackendKind::Kafka && self.kafka.is_none() {
                return invalid(
                    "topics.backend",
                    format!(
                        "{:?} routes to kafka but there is no [kafka] section",
                        rule.pattern
                    ),
                );
            }
            if rule.allow_wildcards && rule.backend != BackendKind::Rabbitmq {
                return invalid(
                    "topics.allow_wildcards",
                    "wildcard subscriptions are a RabbitMQ feature".into(),
                );
            }
            if rule.stream && rule.backend != BackendKind::Rabbitmq {
                return invalid(
                    "topics.stream",
                    "streams are a RabbitMQ feature (Kafka topics and in-process ones keep \
                     their messages already)"
                        .into(),
                );
            }
            if rule.stream && rule.allow_wildcards {
                return invalid(
                    "topics.stream",
                    format!(
                        "{:?}: a stream keeps one topic, so its subscribers name that topic: \
                         allow_wildcards cannot be on too",
                        rule.pattern
                    ),
                );
            }
            let exchange_type = self.rabbitmq.as_ref().map(|r| r.exchange_type.as_str());
            if rule.stream && !matches!(exchange_type, Some("topic" | "direct")) {
                return invalid(
                    "topics.stream",
                    "a stream is bound with its topic as the routing key: \
                     rabbitmq.exchange_type must be topic or direct"
                        .into(),
                );
            }
        }
        if let Some(rabbit) = &self.rabbitmq {
            if !matches!(
                rabbit.exchange_type.as_str(),
                "topic" | "direct" | "fanout" | "headers"
            ) {
                return invalid(
                    "rabbitmq.exchange_type",
                    "must be topic, direct, fanout or headers".into(),
                );
            }
            if rabbit.prefetch == 0 {
                return invalid("rabbitmq.prefetch", "must be at least 1".into());
            }
            if rabbit.stream_max_bytes == 0 || rabbit.stream_segment_bytes == 0 {
                return invalid(
                    "rabbitmq.stream_max_bytes",
                    "stream_max_bytes and stream_segment_bytes must be above 0".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let f = file("listen = \"127.0.0.1:9000\"\n[limits]\nmax_subscriptions = 7\n");
        let overrides = Overrides {
            config: Some(f.path().to_owned()),
            max_subscriptions: Some(9),
            allow_anonymous: true,
            ..Default::default()
        };
        let config = Config::load(&overrides).expect("valid");
        assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(config.limits.max_subscriptions, 9);
        assert_eq!(config.limits.outbound_queue, 1024);
    }

    #[test]
    fn the_log_format_is_text_unless_the_file_or_a_flag_says_json() {
        assert_eq!(Config::default().log_format, LogFormat::Text);
        let f = file("log_format = \"json\"\n");
        let anonymous = |log_format| Overrides {
            config: Some(f.path().to_owned()),
            allow_anonymous: true,
            log_format,
            ..Default::default()
        };
        let from_file = Config::load(&anonymous(None)).expect("valid");
        assert_eq!(from_file.log_format, LogFormat::Json);
        let flagged = Config::load(&anonymous(Some(LogFormat::Text))).expect("valid");
        assert_eq!(flagged.log_format, LogFormat::Text, "the flag wins");
        let typo = file("log_format = \"jsn\"\n");
        let err = Config::from_file(typo.path()).expect_err("unknown format");
        assert!(err.to_string().contains("log_format"), "{err}");
    }

    #[test]
    fn durations_are_human_readable() {
        let f = file("[websocket]\nping_interval = \"5s\"\nidle_timeout = \"1m\"\n");
        let config = Config::from_file(f.path()).expect("valid");
        assert_eq!(config.websocket.ping_interval, Duration::from_secs(5));
        assert_eq!(config.websocket.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file("[websocket]\nping_intervall = \"5s\"\n");
        let err = Config::from_file(f.path()).expect_err("unknown key");
        assert!(err.to_string().contains("ping_intervall"), "{err}");
    }

    #[test]
    fn authentication_must_be_configured_or_waived_explicitly() {
        let err = Config::load(&Overrides::default()).expect_err("no keys, not anonymous");
        assert!(err.to_string().contains("auth.anonymous = true"), "{err}");
        let both = Overrides {
            allow_anonymous: true,
            hs256_secret: Some("x".repeat(32)),
            ..Default::default()
        };
        let err = Config::load(&both).expect_err("keys and anonymous");
        assert!(err.to_string().contains("`auth.anonymous`"), "{err}");
        let short = Overrides {
            hs256_secret: Some("short".into()),
            ..Default::default()
        };
        let err = Config::load(&short).expect_err("short secret");
        assert!(err.to_string().contains("32 bytes"), "{err}");
        let keyed = Overrides {
            hs256_secret: Some("x".repeat(32)),
            ..Default::default()
        };
        assert!(Config::load(&keyed).is_ok());
    }

    #[test]
    fn invalid_combinations_name_the_setting() {
        let overrides = Overrides {
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(10)),
            allow_anonymous: true,
            ..Default::default()
        };
        let err = Config::load(&overrides).expect_err("idle < ping");
        assert!(err.to_string().contains("websocket.idle_timeout"), "{err}");

        let overrides = Overrides {
            max_message_size: Some(1 << 20),
            max_frame_size: Some(1024),
            allow_anonymous: true,
            ..Default::default()
        };
        let err = Config::load(&overrides).expect_err("frame < message");
        assert!(
            err.to_string().contains("websocket.max_frame_size"),
            "{err}"
        );
    }

    #[test]
    fn row_filters_are_checked_at_start_up() {
        let load = |rule: &str| {
            let f = file(&format!(
                "[auth]\nanonymous = true\n[[permissions]]\n{rule}\n"
            ));
            let overrides = Overrides {
                config: Some(f.path().to_owned()),
                ..Default::default()
            };
            Config::load(&overrides)
        };
        let ok = "roles = [\"user\"]\nsubscribe_tables = [\"public.orders\"]\n\
                  row_filter = \"tenant_id = {claims.tenant_id}\"";
        assert!(load(ok).is_ok());
        let bad = "roles = [\"user\"]\nsubscribe_tables = [\"public.orders\"]\n\
                   row_filter = \"tenant_id == 1\"";
        let err = load(bad).expect_err("bad filter");
        assert!(err.to_string().contains("permissions.row_filter"), "{err}");
        assert!(err.to_string().contains("at byte 11"), "{err}");
        let alone = "roles = [\"user\"]\nrow_filter = \"tenant_id = 1\"";
        let err = load(alone).expect_err("filter without tables");
        assert!(err.to_string().contains("subscribe_tables"), "{err}");
    }
}
