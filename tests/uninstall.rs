//! `feedgate uninstall`, run as the binary: in logical mode on the private cluster with
//! `wal_level = logical` (scripts/test starts it, `FEEDGATE_TEST_LOGICAL_URL`), and in trigger
//! mode. Without `--yes` nothing changes; with it no slot, publication, trigger or schema is
//! left and replica identities are back; a leading node makes it refuse unless `--force`.

mod support;

use std::process::Output;
use std::time::Duration;

use feedgate::config::{CaptureMode, Config};
use support::db::{config_for, logical_admin_url, wait_connected, TestDb};
use support::*;

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL)";

async fn db_with(capture: CaptureMode, admin: String) -> (TestDb, Config) {
    let db = TestDb::on(admin).await;
    db.execute(ORDERS).await;
    let mut config = config_for(&db);
    config.changefeed.capture = capture;
    config.watch = vec!["public.orders".into()];
    (db, config)
}

/// Runs `feedgate uninstall --database-url <db> <args>`, with no `FEEDGATE_*` setting from the
/// environment.
async fn uninstall(db: &TestDb, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_feedgate"));
    for (name, _) in std::env::vars() {
        if name.starts_with("FEEDGATE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["uninstall", "--database-url", &db.url])
        .args(args)
        .output()
        .await
        .expect("run feedgate uninstall");
    eprintln!(
        "feedgate uninstall {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What feedgate leaves in a database: slots, publication, schema, triggers, and the orders
/// table's replica identity.
#[derive(Debug, PartialEq, Eq)]
struct Left {
    slots: Vec<String>,
    publication: bool,
    schema: bool,
    triggers: i64,
    identity: String,
}

async fn left(db: &TestDb) -> Left {
    let slots = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()",
    )
    .fetch_all(&db.pool)
    .await
    .expect("slots");
    let (publication, schema, triggers, identity) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'feedgate'), \
                to_regnamespace('feedgate') IS NOT NULL, \
                (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'feedgate%'), \
                (SELECT relreplident::text FROM pg_class WHERE oid = 'public.orders'::regclass)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("catalog");
    Left {
        slots,
        publication,
        schema,
        triggers,
        identity,
    }
}

fn nothing_left() -> Left {
    Left {
        slots: Vec::new(),
        publication: false,
        schema: false,
        triggers: 0,
        identity: "d".into(),
    }
}

async fn wait_for_walsender(db: &TestDb) {
    for _ in 0..200 {
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots \
                             WHERE database = current_database() AND active)",
        )
        .fetch_one(&db.pool)
        .await
        .expect("slots");
        if active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node streams the slot");
}

/// Logical mode, nodes stopped: a dry run first, then the removal, then nothing to remove.
#[tokio::test]
async fn uninstall_removes_the_slot_publication_schema_and_restores_identity() {
    let (db, config) = db_with(CaptureMode::Logical, logical_admin_url()).await;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    wait_for_walsender(&db).await;
    server.shutdown().await.expect("shutdown");
    let installed = left(&db).await;
    assert_eq!(installed.slots, [format!("feedgate_{}", db.name)]);
    assert!(installed.publication && installed.schema);
    assert_eq!((installed.triggers, installed.identity.as_str()), (0, "f"));

    let dry = uninstall(&db, &[]).await;
    assert!(dry.status.success());
    let said = stdout(&dry);
    assert!(said.contains(&format!("drop replication slot feedgate_{}", db.name)));
    assert!(said.contains("holds WAL on the server forever"));
    assert!(said.contains("unwatch public.orders: replica identity FULL back to DEFAULT"));
    assert!(said.contains("drop publication feedgate"));
    assert!(said.contains("drop schema feedgate"));
    assert_eq!(left(&db).await, installed, "a dry run changes nothing");

    let done = uninstall(&db, &["--yes"]).await;
    assert!(done.status.success());
    assert!(stdout(&done).contains(&format!("dropped replication slot feedgate_{}", db.name)));
    assert_eq!(left(&db).await, nothing_left());

    let again = uninstall(&db, &["--yes"]).await;
    assert!(again.status.success());
    assert!(stdout(&again).contains("nothing to remove"));
    db.drop_db().await;
}

/// A node that leads capture makes `--yes` refuse and change nothing; `--force` ends its
/// replication connection and removes everything.
#[tokio::test]
async fn uninstall_refuses_while_a_node_leads_unless_forced() {
    let (db, config) = db_with(CaptureMode::Logical, logical_admin_url()).await;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    wait_for_walsender(&db).await;
    let installed = left(&db).await;

    let dry = uninstall(&db, &[]).await;
    assert!(dry.status.success());
    assert!(stdout(&dry).contains("a node leads capture now"));

    let refused = uninstall(&db, &["--yes"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("leads capture"));
    assert_eq!(left(&db).await, installed, "a refusal changes nothing");

    let forced = uninstall(&db, &["--yes", "--force"]).await;
    assert!(forced.status.success());
    let said = stdout(&forced);
    assert!(said.contains(&format!("dropped replication slot feedgate_{}", db.name)));
    assert!(said.contains("dropped schema feedgate"));
    // The node keeps running without its schema: its capture task finds nothing to lead and
    // brings nothing back (migrations run once per process).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(left(&db).await, nothing_left());
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the node stops")
        .ok();
    assert_eq!(left(&db).await, nothing_left());
    db.drop_db().await;
}

/// Trigger mode: the triggers and the schema go.
#[tokio::test]
async fn uninstall_removes_triggers_in_trigger_mode() {
    let (db, config) = db_with(CaptureMode::Trigger, support::db::admin_url()).await;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    server.shutdown().await.expect("shutdown");
    let installed = left(&db).await;
    assert_eq!(installed.triggers, 3);
    assert!(installed.schema && installed.slots.is_empty());

    let dry = uninstall(&db, &[]).await;
    assert!(dry.status.success());
    assert!(stdout(&dry).contains(
        "unwatch public.orders: drop triggers feedgate_capture, feedgate_truncate, feedgate_wakeup"
    ));
    assert_eq!(left(&db).await, installed);

    let done = uninstall(&db, &["--yes"]).await;
    assert!(done.status.success());
    assert_eq!(left(&db).await, nothing_left());
    db.drop_db().await;
}
