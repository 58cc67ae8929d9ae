//! `feedgate uninstall`: what feedgate left in a database, and its removal. The replication
//! slot comes first and matters most: a slot nobody reads keeps the server's write-ahead log
//! forever (or until `max_slot_wal_keep_size`). Then the publication, each watched table's
//! triggers and replica identity (through `feedgate.unwatch()`), and the `feedgate` schema.
//!
//! [`inspect`] only reads. [`remove`] refuses while a node leads capture (it streams the slot or
//! holds the leader's advisory lock) unless forced, and otherwise takes that lock itself, so no
//! node starts leading while it removes. It does not stop nodes: one still running loses its
//! change log under it.

use std::time::Duration;

use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Row as _};
use tokio::time::{sleep, Instant};

use super::capture::{LEADER_LOCK, PUBLICATION};
use super::ChangefeedSettings;

mod report;

pub use report::Report;

/// How long `--force` keeps ending the leader's connections before it gives up.
const FORCE_WAIT: Duration = Duration::from_secs(15);
/// Between two looks at whether the leader has gone.
const FORCE_POLL: Duration = Duration::from_millis(100);
/// The triggers `feedgate.watch()` creates in trigger mode.
const TRIGGERS: &str = "ARRAY['feedgate_capture', 'feedgate_truncate', 'feedgate_wakeup']";

/// Why `feedgate uninstall --yes` removed nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A node leads capture and `--force` was not given: nothing was changed.
    #[error(
        "a feedgate node leads capture ({0}); nothing was changed: stop the feedgate nodes first, \
         or add --force to terminate the leader's replication connection"
    )]
    Leading(Sessions),
    /// `--force` ended the leader's connections, but a leader was still there when time ran out.
    #[error("a feedgate node still leads capture ({sessions}) after {waited:?} of --force; nothing was changed")]
    StillLeading {
        /// Who held the slot or the lock last.
        sessions: Sessions,
        /// How long it was tried.
        waited: Duration,
    },
}

/// Server processes (PostgreSQL backend pids) that lead capture: the slot's walsender and the
/// holders of the leader's lock (the same process, normally).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions(pub Vec<i32>);

/// What feedgate has in one database, and so what an uninstall removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The database's name.
    pub database: String,
    /// Logical slots of this database that are feedgate's or named like its.
    pub slots: Vec<Slot>,
    /// feedgate's publication, when it exists.
    pub publication: Option<String>,
    /// The tables `feedgate.watched` lists (that still exist).
    pub tables: Vec<Table>,
    /// Whether the `feedgate` schema exists.
    pub schema: bool,
    /// Who leads capture now (empty: nobody).
    pub leaders: Sessions,
}

/// A logical replication slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its name.
    pub name: String,
    /// feedgate's own: recorded in `feedgate.capture` or the configured name. Dropped even
    /// while streamed (after the leader was ended); another is dropped only when inactive.
    pub ours: bool,
    /// The backend streaming it, if any.
    pub active_pid: Option<i32>,
    /// WAL it keeps on disk, in bytes (unknown once invalidated).
    pub retained_bytes: Option<i64>,
}

impl Slot {
    fn dropped(&self) -> bool {
        self.ours || self.active_pid.is_none()
    }
}

/// A watched table and what unwatching it restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `schema.table`, quoted as needed.
    pub name: String,
    /// The table's oid.
    oid: i64,
    /// feedgate's triggers on it (trigger mode).
    pub triggers: Vec<String>,
    /// Its replica identity now.
    pub identity: ReplicaIdentity,
    /// What `unwatch()` sets it back to, when it changes it (logical mode).
    pub restore: Option<ReplicaIdentity>,
}

/// A table's replica identity (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: the whole row (what `watch()` sets in logical mode).
    Full,
    /// `i`: a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    fn from_code(code: &str) -> Self {
        match code {
            "n" => Self::Nothing,
            "f" => Self::Full,
            "i" => Self::Index,
            _ => Self::Default,
        }
    }

    /// What `unwatch()` restores when `watch()` recorded `self`: NOTHING stays NOTHING, FULL
    /// was never changed, anything else becomes DEFAULT.
    fn restored(self) -> Option<Self> {
        match self {
            Self::Full => None,
            Self::Nothing => Some(Self::Nothing),
            Self::Default | Self::Index => Some(Self::Default),
        }
    }
}

impl Plan {
    /// Nothing of feedgate's is left in the database.
    pub fn is_empty(&self) -> bool {
        !self.schema && self.publication.is_none() && self.slots.is_empty()
    }
}

/// What feedgate has in the database; changes nothing.
pub async fn inspect(settings: &ChangefeedSettings) -> Result<Plan, UninstallError> {
    let mut conn = connect(settings).await?;
    let plan = look(&mut conn, settings).await?;
    conn.close().await?;
    Ok(plan)
}

/// Removes feedgate from the database and returns what was removed. Refuses (changing nothing)
/// while a node leads capture, unless `force`: then it terminates the leader's connections
/// until the slot is free. Idempotent: an empty plan when nothing was left.
pub async fn remove(settings: &ChangefeedSettings, force: bool) -> Result<Plan, UninstallError> {
    let mut conn = connect(settings).await?;
    let ours = ours(&mut conn, settings).await?;
    take_lead(&mut conn, &ours, force).await?;
    // Looked at again under the lock: the leader was ended, or another node may have come.
    let plan = look(&mut conn, settings).await?;
    for slot in plan.slots.iter().filter(|slot| slot.dropped()) {
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&slot.name)
            .execute(&mut conn)
            .await?;
    }
    let mut tx = conn.begin().await?;
    if let Some(publication) = &plan.publication {
        let drop: String = sqlx::query_scalar("SELECT format('DROP PUBLICATION IF EXISTS %I', $1)")
            .bind(publication)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&drop).execute(&mut *tx).await?;
    }
    for table in &plan.tables {
        sqlx::query("SELECT feedgate.unwatch($1::oid::regclass)")
            .bind(table.oid)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DROP SCHEMA IF EXISTS feedgate CASCADE")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    conn.close().await?; // releases the lock
    Ok(plan)
}

async fn connect(settings: &ChangefeedSettings) -> Result<PgConnection, UninstallError> {
    Ok(settings
        .connect
        .clone()
        .application_name("feedgate-uninstall")
        .connect()
        .await?)
}

/// Waits until nobody leads, then holds the leader's lock on `conn`. Without `force`, a leader
/// is an error; with it, its backends are terminated (again, should another node take over).
async fn take_lead(
    conn: &mut PgConnection,
    ours: &[String],
    force: bool,
) -> Result<(), UninstallError> {
    let deadline = Instant::now() + FORCE_WAIT;
    loop {
        let leaders = leaders(conn, ours).await?;
        if leaders.0.is_empty() {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if locked {
                return Ok(());
            }
        }
        if !force {
            return Err(UninstallError::Leading(leaders));
        }
        if Instant::now() >= deadline {
            return Err(UninstallError::StillLeading {
                sessions: leaders,
                waited: FORCE_WAIT,
            });
        }
        sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid")
            .bind(&leaders.0)
            .execute(&mut *conn)
            .await?;
        sleep(FORCE_POLL).await;
    }
}

/// The backends that stream one of `ours` slots or hold the leader's lock in this database.
async fn leaders(conn: &mut PgConnection, ours: &[String]) -> Result<Sessions, sqlx::Error> {
    let pids = sqlx::query_scalar(
        "SELECT pid FROM pg_locks \
          WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1 \
         UNION \
         SELECT active_pid FROM pg_replication_slots \
          WHERE database = current_database() AND slot_name::text = ANY($2) \
            AND active_pid IS NOT NULL \
         ORDER BY 1",
    )
    .bind(LEADER_LOCK)
    .bind(ours)
    .fetch_all(conn)
    .await?;
    Ok(Sessions(pids))
}

/// feedgate's slot names: the one `feedgate.capture` records and the configured one.
async fn ours(
    conn: &mut PgConnection,
    settings: &ChangefeedSettings,
) -> Result<Vec<String>, sqlx::Error> {
    let mut names = vec![settings.slot_name()];
    let capture: bool = sqlx::query_scalar("SELECT to_regclass('feedgate.capture') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let recorded: Option<String> = if capture {
        sqlx::query_scalar("SELECT slot_name FROM feedgate.capture")
            .fetch_optional(&mut *conn)
            .await?
            .flatten()
    } else {
        None
    };
    names.extend(recorded.filter(|name| !names.contains(name)));
    Ok(names)
}

/// Reads the plan.
async fn look(conn: &mut PgConnection, settings: &ChangefeedSettings) -> Result<Plan, sqlx::Error> {
    let ours = ours(conn, settings).await?;
    let row = sqlx::query(
        "SELECT current_database()::text AS database, \
                to_regnamespace('feedgate') IS NOT NULL AS schema, \
                to_regclass('feedgate.watched') IS NOT NULL AS watched, \
                to_regclass('feedgate.capture') IS NOT NULL AS capture",
    )
    .fetch_one(&mut *conn)
    .await?;
    let database: String = row.try_get("database")?;
    let schema: bool = row.try_get("schema")?;
    let capture: bool = row.try_get("capture")?;
    let tables = if row.try_get("watched")? {
        tables(conn, capture).await?
    } else {
        Vec::new()
    };
    let publication: Option<String> =
        sqlx::query_scalar("SELECT pubname::text FROM pg_publication WHERE pubname = $1")
            .bind(publication_name(conn, capture).await?)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Plan {
        database,
        slots: slots(conn, &ours).await?,
        publication,
        tables,
        schema,
        leaders: leaders(conn, &ours).await?,
    })
}

/// The publication `feedgate.capture` records, else the one logical mode creates.
async fn publication_name(conn: &mut PgConnection, capture: bool) -> Result<String, sqlx::Error> {
    let recorded: Option<String> = if capture {
        sqlx::query_scalar("SELECT publication FROM feedgate.capture")
            .fetch_optional(&mut *conn)
            .await?
            .flatten()
    } else {
        None
    };
    Ok(recorded.unwrap_or_else(|| PUBLICATION.to_owned()))
}

async fn slots(conn: &mut PgConnection, ours: &[String]) -> Result<Vec<Slot>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT slot_name::text AS name, slot_name::text = ANY($1) AS ours, active_pid, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained \
           FROM pg_replication_slots \
          WHERE database = current_database() AND slot_type = 'logical' \
            AND (slot_name::text = ANY($1) OR slot_name::text LIKE 'feedgate\\_%') \
          ORDER BY slot_name",
    )
    .bind(ours)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Slot {
                name: row.try_get("name")?,
                ours: row.try_get("ours")?,
                active_pid: row.try_get("active_pid")?,
                retained_bytes: row.try_get("retained")?,
            })
        })
        .collect()
}

/// The watched tables that still exist. `previous_identity` came with the capture table.
async fn tables(conn: &mut PgConnection, capture: bool) -> Result<Vec<Table>, sqlx::Error> {
    let previous = if capture {
        "w.previous_identity::text"
    } else {
        "NULL::text"
    };
    let rows = sqlx::query(&format!(
        "SELECT w.table_oid::bigint AS oid, \
                format('%I.%I', (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace), \
                       c.relname) AS name, \
                c.relreplident::text AS identity, {previous} AS previous, \
                ARRAY(SELECT tgname::text FROM pg_trigger t \
                       WHERE t.tgrelid = w.table_oid AND t.tgname = ANY({TRIGGERS}) \
                       ORDER BY tgname) AS triggers \
           FROM feedgate.watched w JOIN pg_class c ON c.oid = w.table_oid \
          ORDER BY 2"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let identity = ReplicaIdentity::from_code(row.try_get("identity")?);
            let previous: Option<&str> = row.try_get("previous")?;
            let restore = previous
                .map(ReplicaIdentity::from_code)
                .and_then(ReplicaIdentity::restored)
                .filter(|restore| *restore != identity);
            Ok(Table {
                name: row.try_get("name")?,
                oid: row.try_get("oid")?,
                triggers: row.try_get("triggers")?,
                identity,
                restore,
            })
        })
        .collect()
}
