//! The changefeed's SQL outside the read loop: applying migrations, watching tables, resolving a
//! client's table name to a watched table, and loading column types.
//!
//! Client-supplied names never reach SQL text: they are bound as parameters and resolved by
//! PostgreSQL's own `to_regclass`; the snapshot query uses the `regclass::text` the database
//! returns, which is quoted as needed.

use std::collections::HashMap;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row as _};
use tracing::{error, info};

use super::refusals::{Refusals, Refused, WatchRefusal};
use super::tables::TableInfo;
use super::values::ColumnType;
use super::ChangefeedError;
use crate::protocol::{Code, Failure};

/// `migrations/`, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Applies feedgate's migrations (idempotent). The migration bookkeeping table lives in the
/// `feedgate` schema, not in the user's `public`.
pub(crate) async fn migrate(connect: &PgConnectOptions) -> Result<(), ChangefeedError> {
    let options = connect
        .clone()
        .application_name("feedgate-migrate")
        .options([("search_path", "feedgate")]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS feedgate")
        .execute(&pool)
        .await?;
    let migrated = MIGRATOR.run(&pool).await;
    pool.close().await;
    Ok(migrated?)
}

/// Watches a table (idempotent); returns its `schema.table` name.
pub(crate) async fn watch(conn: &mut PgConnection, table: &str) -> Result<String, ChangefeedError> {
    sqlx::query_scalar("SELECT feedgate.watch($1::text::regclass)")
        .bind(table)
        .fetch_one(conn)
        .await
        .map_err(|source| ChangefeedError::Watch {
            table: table.to_owned(),
            reason: WatchRefusal::of(&source),
            source,
        })
}

/// Watches the configured tables at start-up. A table that cannot be watched is logged and
/// recorded in `refusals` (so its subscribers learn why) rather than stopping the server.
/// Fails only when the connection does (the reader then reconnects and watches again).
pub(crate) async fn watch_configured(
    conn: &mut PgConnection,
    tables: &[String],
    refusals: &Refusals,
) -> Result<(), sqlx::Error> {
    for table in tables {
        match watch(conn, table).await {
            Ok(name) => {
                info!(table = %name, "watching");
                refusals.clear(table);
            }
            Err(ChangefeedError::Watch {
                table,
                reason,
                source,
            }) => {
                error!(table = %table, reason = reason.as_str(), error = %source,
                    "cannot watch a configured table");
                let relation = relation(conn, &table).await?;
                refusals.record(Refused {
                    configured: table,
                    relation,
                    reason,
                    message: source
                        .as_database_error()
                        .map_or_else(|| source.to_string(), |db| db.message().to_owned()),
                });
            }
            Err(other) => error!(error = %other, "cannot watch a configured table"),
        }
    }
    Ok(())
}

/// The relation a name resolves to now (oid and `schema.table`), if any; `None` also for a name
/// PostgreSQL cannot parse.
async fn relation(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Option<(u32, String)>, sqlx::Error> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT c.oid::int8, n.nspname || '.' || c.relname \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(conn)
    .await
    .or_else(|err| match err.as_database_error() {
        Some(_) => Ok(None), // an unparsable name names nothing
        None => Err(err),
    })?;
    Ok(row.and_then(|(oid, name)| Some((u32::try_from(oid).ok()?, name))))
}

/// Resolves a client's table name (`orders`, `public.orders`, `"Quoted".name`) to a watched
/// table, or a coded failure saying why not (the start-up refusal, when the `watch` setting
/// named the table).
pub(crate) async fn resolve(
    pool: &PgPool,
    refusals: &Refusals,
    table: &str,
) -> Result<TableInfo, Failure> {
    let row = sqlx::query(
        "SELECT w.table_oid::int8 AS oid, w.table_name, w.table_oid::regclass::text AS sql_name, \
                w.key_columns, n.nspname::text AS schema_name, c.relname::text AS rel_name \
           FROM feedgate.watched w \
           JOIN pg_class c ON c.oid = w.table_oid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE w.table_oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .map_err(|err| lookup_failure(table, &err))?;
    if let Some(row) = row {
        let oid: i64 = row.try_get("oid").map_err(|e| internal(&e))?;
        return Ok(TableInfo {
            oid: u32::try_from(oid).map_err(|e| internal(&e))?,
            name: row.try_get("table_name").map_err(|e| internal(&e))?,
            sql_name: row.try_get("sql_name").map_err(|e| internal(&e))?,
            key_columns: row.try_get("key_columns").map_err(|e| internal(&e))?,
            schema: row.try_get("schema_name").map_err(|e| internal(&e))?,
            relname: row.try_get("rel_name").map_err(|e| internal(&e))?,
        });
    }
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
        .bind(table)
        .fetch_one(pool)
        .await
        .map_err(|err| lookup_failure(table, &err))?;
    let oid = oid.and_then(|oid| u32::try_from(oid).ok());
    if let Some(refused) = refusals.find(oid, table) {
        return Err(refused.failure(table));
    }
    let message = if oid.is_some() {
        format!(
            "table {table} is not watched: an operator must run SELECT feedgate.watch('{table}') \
             or start feedgate with --watch"
        )
    } else {
        format!("no table named {table}")
    };
    Err(Failure::new(Code::NotFound, message).detail("table", table))
}

/// Column name -> type of a table's live columns.
pub(crate) async fn column_types(
    pool: &PgPool,
    oid: u32,
) -> Result<HashMap<String, ColumnType>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, atttypid::regtype::text FROM pg_attribute \
          WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped",
    )
    .bind(i64::from(oid))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, ty)| (name, ColumnType::from_regtype(&ty)))
        .collect())
}

/// One column of a watched table, as the catalog lists it.
pub(super) struct WatchedColumn {
    /// The table's `schema.table`.
    pub(super) table: String,
    /// Schema and table name as stored, for permission checks.
    pub(super) schema: String,
    pub(super) relname: String,
    /// The primary key's columns, in key order.
    pub(super) key_columns: Vec<String>,
    pub(super) name: String,
    /// `format_type`, for people.
    pub(super) pg_type: String,
    /// `regtype::text`, for [`ColumnType::from_regtype`].
    pub(super) regtype: String,
}

/// Every column of every watched table, by table name and then column order.
pub(super) async fn watched_columns(pool: &PgPool) -> Result<Vec<WatchedColumn>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT w.table_name, n.nspname::text AS schema_name, c.relname::text AS rel_name, \
                w.key_columns, a.attname::text AS column_name, \
                format_type(a.atttypid, a.atttypmod) AS pg_type, \
                a.atttypid::regtype::text AS regtype \
           FROM feedgate.watched w \
           JOIN pg_class c ON c.oid = w.table_oid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_attribute a ON a.attrelid = w.table_oid AND a.attnum > 0 AND NOT a.attisdropped \
          ORDER BY w.table_name, a.attnum",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(WatchedColumn {
                table: row.try_get("table_name")?,
                schema: row.try_get("schema_name")?,
                relname: row.try_get("rel_name")?,
                key_columns: row.try_get("key_columns")?,
                name: row.try_get("column_name")?,
                pg_type: row.try_get("pg_type")?,
                regtype: row.try_get("regtype")?,
            })
        })
        .collect()
}

/// A name PostgreSQL cannot parse is the client's fault; anything else means the database is
/// not answering as it should.
fn lookup_failure(table: &str, err: &sqlx::Error) -> Failure {
    let invalid_name = err
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("42") || code.starts_with("3F"));
    if invalid_name {
        Failure::new(
            Code::Validation,
            format!("invalid table name {table:?}: {err}"),
        )
        .detail("table", table)
    } else {
        unavailable(err)
    }
}

/// The database could not be reached or failed: retryable.
pub(crate) fn unavailable(err: &dyn std::fmt::Display) -> Failure {
    Failure::new(
        Code::SourceUnavailable,
        format!("the database is unavailable: {err}"),
    )
    .retryable(1000)
}

fn internal(err: &dyn std::fmt::Display) -> Failure {
    Failure::new(Code::Internal, format!("unexpected catalog data: {err}"))
}
