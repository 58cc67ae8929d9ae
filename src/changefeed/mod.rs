//! PostgreSQL changefeeds: table subscriptions with a gap-free initial snapshot.
//!
//! - `migrations/` create the `feedgate` schema: a change log filled by row triggers on watched
//!   tables, and a wake-up that only idle readers ask for ([`schema`]).
//! - One [`reader`] per node reads the log in snapshot-difference batches (the changes whose
//!   transactions became visible between two `pg_current_snapshot()`s, each batch in log order)
//!   and fans each change out, encoded once, to the table's subscribers ([`fence`]).
//! - Each subscription registers with the reader before taking its own snapshot, and drops every
//!   change whose transaction that snapshot already contains ([`subscription`]).
//! - A table the `watch` setting names but that cannot be watched (no primary key, ...) does not
//!   stop the server; its subscribers are told why ([`refusals`]).
//! - With `changefeed.capture = logical`, no triggers: one elected node decodes the write-ahead
//!   log (a logical replication slot, [`pgoutput`]) and appends to the same log ([`capture`]);
//!   readers read up to its watermark instead of `pg_current_snapshot()`.
//! - `feedgate uninstall` removes the slot, the publication, the triggers and the schema again
//!   ([`uninstall`]).
//!
//! Sessions use the [`Changefeed`] handle; nothing here knows about sessions or WebSockets.

mod capture;
mod catalog;
mod changes;
mod fence;
/// Exposed for the fuzz target (`fuzz/fuzz_targets/pgoutput.rs`); not an API.
#[doc(hidden)]
pub mod pgoutput;
mod reader;
mod refusals;
mod resume;
mod schema;
mod snapshot;
mod subscription;
mod tables;
pub mod uninstall;
pub(crate) mod values;
mod xid;

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use refusals::WatchRefusal;
pub use subscription::TableSubscription;

use crate::auth::permissions::TableAccess;
use crate::config::ChangefeedConfig;
use crate::metrics::Metrics;
use crate::outbound::Mailbox;
use crate::protocol::{Code, Failure};
use crate::registry::{SubscriberKey, Tally};
use crate::row_filter::RowFilter;
use crate::source::{Availability, Health};
use changes::Projection;
use fence::{Lens, Subscribers};
use refusals::Refusals;
use resume::Resume;
use tables::Tables;

/// Why the changefeed could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChangefeedError {
    /// `database_url` is not a valid PostgreSQL URL.
    #[error("invalid database_url: {0}")]
    InvalidUrl(sqlx::Error),
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("cannot apply feedgate's migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The reader lost its place: it was asked to read or record without a position. A bug:
    /// connecting always sets one.
    #[error("the changefeed reader has no position")]
    NoPosition,
    /// The database answered with a snapshot the reader cannot parse.
    #[error("unreadable snapshot from the database: {0}")]
    BadSnapshot(#[from] snapshot::BadSnapshot),
    /// The change log holds a transaction id that is not a number.
    #[error("unreadable transaction id {0:?} in the change log")]
    BadXid(String),
    /// The change log holds an operation this version does not know (the log's check
    /// constraint allows I, U, D and T): the change cannot be delivered.
    #[error("change {id} in the change log has unknown op {op:?}")]
    UnknownOp {
        /// The change's log id.
        id: i64,
        /// The op as logged.
        op: String,
    },
    /// A connection to the database stopped answering: it is taken for dead.
    #[error("the {connection} connection did not answer within {after:?}")]
    NoAnswer {
        /// Which one: the reader's or the listener's.
        connection: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// Capture from the write-ahead log cannot start or stopped (see `changefeed.capture`).
    #[error("changefeed capture: {0}")]
    Capture(String),
    /// A table named in `watch` could not be watched.
    #[error("cannot watch table {table:?} (setting `watch`): {source}")]
    Watch {
        /// As configured.
        table: String,
        /// Why, classified (no such table, no primary key, ...).
        reason: WatchRefusal,
        /// What the database answered.
        source: sqlx::Error,
    },
}

/// What the changefeed needs from the configuration.
#[derive(Debug, Clone)]
pub struct ChangefeedSettings {
    /// Where the database is.
    pub connect: PgConnectOptions,
    /// The database URL as configured (the replication connection is made from it).
    url: String,
    /// Tables to watch at start-up.
    pub watch: Vec<String>,
    /// Reader and buffer tuning.
    pub tuning: ChangefeedConfig,
    /// Where the changefeed counts polls, lag and snapshots.
    pub metrics: Arc<Metrics>,
}

impl ChangefeedSettings {
    /// Parses the database URL (the error names the setting, never the password).
    pub fn new(
        url: &str,
        watch: Vec<String>,
        tuning: ChangefeedConfig,
    ) -> Result<Self, ChangefeedError> {
        let connect = PgConnectOptions::from_str(url).map_err(ChangefeedError::InvalidUrl)?;
        Ok(Self {
            connect: connect.disable_statement_logging(),
            url: url.to_owned(),
            watch,
            tuning,
            metrics: Arc::default(),
        })
    }
}

/// A table subscription request.
pub struct TableSubscribe<'a> {
    /// The table as the client named it.
    pub table: &'a str,
    /// Stream existing rows first.
    pub include_initial: bool,
    /// Who subscribes.
    pub subscriber: SubscriberKey,
    /// Where events go.
    pub mailbox: Mailbox,
    /// A cursor to resume after (a `Change` or `Ready` event's); instead of the initial rows.
    pub resume_from: &'a [u8],
    /// Whether the subscriber may read the table, and which of its rows, given its schema and
    /// name as stored (called once the name is resolved, so spelling tricks cannot get around
    /// it).
    pub authorize: &'a (dyn Fn(&str, &str) -> Result<TableAccess, Failure> + Sync),
    /// The client's own row filter (ANDed with what `authorize` allows), already well formed;
    /// checked here against the table's columns.
    pub filter: Option<RowFilter>,
    /// The columns it asked for (empty: all); checked here against the table's.
    pub columns: &'a [String],
    /// Squash: at most one change per row per interval (`TableFeed.min_interval_ms`).
    pub squash: Option<crate::registry::squash::Squash>,
}

/// The sessions' handle to the changefeed. Cheap to clone.
#[derive(Clone)]
pub struct Changefeed {
    shared: Arc<Shared>,
}

struct Shared {
    settings: ChangefeedSettings,
    /// Snapshots, name resolution and column types; the reader has connections of its own.
    pool: PgPool,
    tables: Tables,
    /// Every table subscription, and fan-out to them.
    subscribers: Subscribers,
    /// Configured tables that could not be watched at start-up, and why.
    refusals: Refusals,
    /// Whether the reader is connected; subscribe answers `SOURCE_UNAVAILABLE` while not.
    health: Health,
    /// Where subscriptions' snapshot tasks run, so that shutdown waits for them.
    tasks: TaskTracker,
    /// Stops the reader; every subscription's own stop token is a child of it.
    shutdown: CancellationToken,
    /// Turns for subscriptions' snapshot transactions (initial rows or a resume's catch-up), one
    /// connection of the pool each: `pool_size - 1` of them (at least 1), so one connection
    /// stays free for name and type lookups. The rest wait their turn, in order, as long as it
    /// takes (each subscription holds one waiter; unsubscribing leaves the line).
    snapshots: Arc<Semaphore>,
}

impl Changefeed {
    /// Starts the reader in the background. Does not wait for the database: while it cannot be
    /// reached, the reader retries with backoff and table subscriptions answer
    /// `SOURCE_UNAVAILABLE`.
    pub fn start(
        settings: ChangefeedSettings,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(settings.tuning.pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(settings.connect.clone().application_name("feedgate"));
        let subscribers = Subscribers::new(
            settings.tuning.snapshot_buffer,
            settings.tuning.filter_index,
        );
        let turns = (settings.tuning.pool_size as usize)
            .saturating_sub(1)
            .max(1);
        let changefeed = Self {
            shared: Arc::new(Shared {
                settings,
                pool,
                tables: Tables::default(),
                subscribers,
                refusals: Refusals::default(),
                health: Health::new(false),
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
                snapshots: Arc::new(Semaphore::new(turns)),
            }),
        };
        tasks.spawn(capture::run(changefeed.shared.clone(), shutdown.clone()));
        tasks.spawn(reader::run(changefeed.shared.clone(), shutdown));
        changefeed
    }

    /// Applies migrations and watches the configured tables, then returns (`feedgate migrate`).
    pub async fn migrate(settings: &ChangefeedSettings) -> Result<Vec<String>, ChangefeedError> {
        reader::prepare(settings).await
    }

    /// Resolves the table, registers the subscription (its live changes held back), runs
    /// `announce` (which queues `Subscribed`) and starts the snapshot task, which sends the
    /// initial rows, `Ready` and then the live changes. The same handshake as
    /// [`crate::broker::Topics::subscribe`]: nothing for the caller to call afterwards, and
    /// nothing of the subscription's reaches the client before what `announce` queued.
    pub async fn subscribe(
        &self,
        request: TableSubscribe<'_>,
        announce: impl FnOnce(),
    ) -> Result<TableSubscription, Failure> {
        let resume = match request.resume_from {
            [] => None,
            cursor => Some(Resume::parse(cursor, request.table)?),
        };
        if !self.shared.health.is_available() {
            return Err(
                schema::unavailable(&"the changefeed reader is not connected")
                    .detail("table", request.table),
            );
        }
        let info = schema::resolve(&self.shared.pool, &self.shared.refusals, request.table).await?;
        let access = (request.authorize)(&info.schema, &info.relname)?;
        if let Some(resume) = &resume {
            resume.check_table(&info)?;
            resume.check_kept_in(&self.shared.pool, &info.name).await?;
        }
        let entry = match self.shared.tables.get(info.oid) {
            Some(entry) => entry,
            None => {
                let types = schema::column_types(&self.shared.pool, info.oid)
                    .await
                    .map_err(|e| schema::unavailable(&e))?;
                self.shared.tables.get_or_insert(info, || types)
            }
        };
        let mut filters = Vec::new();
        if let TableAccess::Rows(filter) = access {
            check_columns(&filter, &entry)?;
            filters.push(filter);
        }
        if let Some(filter) = request.filter {
            let types = entry.types();
            let kind_of = |column: &str| types.get(column).map(|t| t.filter_kind());
            filter
                .check_client_columns(&kind_of)
                .map_err(|err| err.failure("table", &entry.info.name))?;
            filters.push(filter);
        }
        let filter =
            (!filters.is_empty()).then(|| self.shared.subscribers.share(RowFilter::all(filters)));
        let projection = match request.columns {
            [] => None,
            asked => Some(Arc::new(projection(asked, &entry)?)),
        };
        let closed = Arc::new(AtomicBool::new(false));
        let lens = Lens {
            filter: filter.clone(),
            projection: projection.clone(),
            squash: request.squash,
        };
        let registration = self.shared.subscribers.subscribe(
            &entry,
            request.subscriber,
            request.mailbox.clone(),
            lens,
            closed.clone(),
            announce,
        );
        crate::registry::squash::start(&registration);
        let start = subscription::Start {
            entry,
            subscribers: self.shared.subscribers.clone(),
            key: request.subscriber,
            mailbox: request.mailbox,
            pool: self.shared.pool.clone(),
            include_initial: request.include_initial,
            filter,
            projection,
            closed,
            resume,
            turns: self.shared.snapshots.clone(),
            metrics: self.shared.settings.metrics.clone(),
            capture_wait: self.shared.settings.tuning.capture_wait,
        };
        let cancel = self.shared.shutdown.child_token();
        Ok(TableSubscription::start(
            start,
            registration,
            cancel,
            &self.shared.tasks,
        ))
    }

    /// Whether the reader is connected to the database.
    pub fn is_available(&self) -> bool {
        self.shared.health.is_available()
    }

    /// Whether the reader is connected, for `/v1/stats`.
    pub fn availability(&self) -> Availability {
        self.shared.health.availability()
    }

    /// Active table subscriptions on this node.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscribers.len()
    }

    /// Table subscribers fan-out has removed so far because their queue was full (the
    /// connection was closed as a slow consumer) or their connection was gone.
    pub fn dropped(&self) -> u64 {
        self.shared.subscribers.dropped()
    }

    /// Table subscriptions now and events queued to them by fan-out so far (live changes,
    /// resets, statuses; not snapshot rows nor the changes a subscription buffered during its
    /// snapshot, which its own task sends), for `/v1/stats`.
    pub(crate) fn tally(&self) -> Tally {
        self.shared.subscribers.tally()
    }
}

/// The columns a subscriber asked for, all of them the table's (else `VALIDATION`).
fn projection(asked: &[String], entry: &tables::TableEntry) -> Result<Projection, Failure> {
    let types = entry.types();
    if let Some(missing) = asked.iter().find(|column| !types.contains_key(*column)) {
        let table = &entry.info.name;
        return Err(Failure::new(
            Code::Validation,
            format!("columns: table {table} has no column {missing}"),
        )
        .detail("table", table)
        .detail("column", missing));
    }
    Ok(Projection::new(asked, &entry.info.key_columns))
}

/// Refuses a row filter that names a column the table lacks: it would hide every row, which is
/// safe but surely not what the permissions' author meant, so the subscriber is told and the
/// server logs it.
fn check_columns(filter: &RowFilter, entry: &tables::TableEntry) -> Result<(), Failure> {
    let types = entry.types();
    let Some(missing) = filter
        .columns()
        .into_iter()
        .find(|column| !types.contains_key(*column))
    else {
        return Ok(());
    };
    let table = &entry.info.name;
    tracing::warn!(%table, column = missing, "a row filter names a column the table lacks");
    Err(Failure::new(
        Code::Internal,
        format!(
            "the row filter that applies to table {table} names column {missing}, which the \
             table does not have; the server's permissions need fixing"
        ),
    )
    .detail("table", table)
    .detail("column", missing))
}
