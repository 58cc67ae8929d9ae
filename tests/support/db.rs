//! A fresh PostgreSQL database per test, and a materialized view of a table built from events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use feedgate::config::Config;
use feedgate::protocol::pb;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Whether this run tests capture from the write-ahead log: `FEEDGATE_TEST_CAPTURE=logical`
/// (scripts/test runs the changefeed tests once in each mode). Then every test database is made
/// on the private cluster with `wal_level = logical` (`FEEDGATE_TEST_LOGICAL_URL`, started by
/// scripts/test) and the server is configured with `changefeed.capture = logical`, so a test
/// fails rather than falls back to triggers.
pub fn logical() -> bool {
    std::env::var("FEEDGATE_TEST_CAPTURE").is_ok_and(|mode| mode == "logical")
}

/// The admin database URL; the test script exports it, the default is the local trust setup.
pub fn admin_url() -> String {
    if logical() {
        return logical_admin_url();
    }
    std::env::var("FEEDGATE_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The private cluster with `wal_level = logical` that scripts/test starts.
pub fn logical_admin_url() -> String {
    std::env::var("FEEDGATE_TEST_LOGICAL_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into())
}

/// A database created for one test; `drop_db` removes it (a panicking test leaves it behind for
/// the test script to sweep: names start with `feedgate_test_`).
pub struct TestDb {
    pub name: String,
    /// The cluster's admin URL it was made with.
    pub admin: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::on(admin_url()).await
    }

    /// A database on the cluster of `base` (an admin URL).
    pub async fn on(base: String) -> TestDb {
        let name = format!("feedgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base)
            .await
            .expect("PostgreSQL at FEEDGATE_TEST_ADMIN_URL (run scripts/test)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => panic!("admin url without a database"),
        };
        let pool = PgPoolOptions::new()
            .max_connections(6)
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDb {
            name,
            admin: base,
            url,
            pool,
        }
    }

    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin).await.expect("admin");
        drop_slots(&mut admin, &self.name).await;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop database");
    }
}

/// Drops the database's replication slots (a database with a slot cannot be dropped), ending
/// the walsender that holds one first.
pub async fn drop_slots(admin: &mut PgConnection, database: &str) {
    for _ in 0..200 {
        let _ = sqlx::query(
            "SELECT CASE WHEN active_pid IS NOT NULL THEN pg_terminate_backend(active_pid) \
                         ELSE pg_drop_replication_slot(slot_name) IS NULL END \
               FROM pg_replication_slots WHERE database = $1",
        )
        .bind(database)
        .execute(&mut *admin)
        .await;
        let remaining: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE database = $1")
                .bind(database)
                .fetch_one(&mut *admin)
                .await
                .expect("slots");
        if remaining == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server config for changefeed tests: quick polling so tests run fast.
pub fn config_for(db: &TestDb) -> Config {
    let mut config = super::test_config();
    config.database_url = Some(db.url.clone());
    config.changefeed.busy_poll = Duration::from_millis(1);
    config.changefeed.busy_grace = Duration::from_millis(50);
    config.changefeed.idle_poll = Duration::from_millis(200);
    // Tests run in parallel against one PostgreSQL (max_connections = 100 by default).
    config.changefeed.pool_size = 3;
    if logical() {
        config.changefeed.capture = feedgate::config::CaptureMode::Logical;
    }
    config
}

/// Waits until `/v1/stats` says the changefeed reader is connected.
pub async fn wait_connected(addr: std::net::SocketAddr) {
    feedgate::testing::wait_for_database(addr).await;
}

#[allow(unused_imports)] // not every test binary subscribes to tables
pub use feedgate::testing::table_feed;

/// A compact text form of a value, for comparisons.
pub fn show(value: &pb::Value) -> String {
    use pb::value::Kind as K;
    match &value.kind {
        None | Some(K::Null(_)) => "null".into(),
        Some(K::Bool(b)) => b.to_string(),
        Some(K::Int(i)) => i.to_string(),
        Some(K::Double(d)) => d.to_string(),
        Some(K::Text(t)) => t.clone(),
        Some(K::Bytes(b)) => format!("bytes:{}", hex_string(b)),
        Some(K::Numeric(n)) => n.clone(),
        Some(K::TimestampMicros(t)) => format!("tstz:{t}"),
        Some(K::LocalTimestampMicros(t)) => format!("ts:{t}"),
        Some(K::DateDays(d)) => format!("date:{d}"),
        Some(K::Json(j)) => j.clone(),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Row columns as name -> shown value.
pub fn columns(row: &Option<pb::Row>) -> BTreeMap<String, String> {
    row.as_ref()
        .map(|r| {
            r.columns
                .iter()
                .map(|(k, v)| (k.clone(), show(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// A client-side view of a table rebuilt from events, which refuses anything that would mean a
/// lost, doubled or misordered change.
#[derive(Default, Debug)]
pub struct View {
    pub rows: BTreeMap<String, BTreeMap<String, String>>,
    pub ready: bool,
    pub applied: usize,
}

impl View {
    pub fn apply(&mut self, change: &pb::RowChange) -> Result<(), String> {
        use pb::ChangeKind as K;
        let key = format!("{:?}", columns(&change.key));
        let new_row = columns(&change.new_row);
        let old_row = columns(&change.old_row);
        self.applied += 1;
        match change.kind() {
            K::Initial | K::Insert => {
                if self.rows.insert(key.clone(), new_row).is_some() {
                    return Err(format!(
                        "{:?} of a row already present: {key}",
                        change.kind()
                    ));
                }
            }
            K::Update => {
                let Some(current) = self.rows.get_mut(&key) else {
                    return Err(format!("update of a missing row {key}"));
                };
                if *current != old_row {
                    return Err(format!(
                        "update's old row {old_row:?} differs from the view's {current:?}"
                    ));
                }
                *current = new_row;
            }
            K::Delete => match self.rows.remove(&key) {
                Some(current) if current == old_row => {}
                Some(current) => {
                    return Err(format!("delete's old row {old_row:?} != {current:?}"))
                }
                None => return Err(format!("delete of a missing row {key}")),
            },
            K::Unspecified => return Err("unspecified change kind".into()),
        }
        Ok(())
    }
}
