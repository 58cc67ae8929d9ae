//! Capture from the write-ahead log (`changefeed.capture = logical`), on the private PostgreSQL
//! cluster with `wal_level = logical` that scripts/test starts (`FEEDGATE_TEST_LOGICAL_URL`):
//! what only logical mode has. Every other changefeed test also runs in logical mode
//! (scripts/test runs them again with `FEEDGATE_TEST_CAPTURE=logical`).

mod support;

use std::time::Duration;

use feedgate::config::{CaptureMode, Config};
use feedgate::protocol::pb;
use support::db::{
    columns, config_for, logical_admin_url, table_feed, wait_connected, TestDb, View,
};
use support::*;

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL, qty int);
                      SELECT feedgate.watch('public.orders');";

/// The invalidation test writes hundreds of MB of WAL, which invalidates any other test's slot
/// that lags at that moment (`max_slot_wal_keep_size` is the cluster's): it runs alone.
static WAL_FLOOD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn logical_db() -> (TestDb, Config) {
    let db = TestDb::on(logical_admin_url()).await;
    let mut config = config_for(&db);
    config.changefeed.capture = CaptureMode::Logical;
    (db, config)
}

/// A server in logical mode on a fresh database of the private cluster, connected.
async fn start_logical() -> (TestDb, feedgate::app::Server) {
    let (db, config) = logical_db().await;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    (db, server)
}

/// The next event on `id`: a row change, or None for Ready.
async fn next_change(client: &mut Client, id: u64) -> Option<pb::RowChange> {
    let event = client.recv_event().await;
    assert_eq!(event.subscription_id, id);
    match event.body {
        Some(pb::event::Body::Change(change)) => Some(change),
        Some(pb::event::Body::Ready(_)) => None,
        other => panic!("expected a row change, got {other:?}"),
    }
}

async fn subscribe(client: &mut Client, id: u64, initial: bool) {
    let response = client
        .request(table_feed(id, "public.orders", initial))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "expected Subscribed, got {response:?}"
    );
    if !initial {
        assert!(next_change(client, id).await.is_none(), "Ready first");
    }
}

/// Applies changes to `view` until it holds rows 1..=n, each as last written.
async fn read_until(client: &mut Client, id: u64, view: &mut View, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while view.rows.len() < n {
        let change = tokio::time::timeout_at(deadline, next_change(client, id))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} rows arrived", view.rows.len()));
        if let Some(change) = change {
            view.apply(&change)
                .expect("no change lost, doubled or out of order");
        }
    }
}

async fn table_rows(db: &TestDb) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    usize::try_from(n).expect("count")
}

async fn walsender_pid(db: &TestDb) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT active_pid FROM pg_replication_slots WHERE database = current_database() AND active",
    )
    .fetch_optional(&db.pool)
    .await
    .expect("slots")
}

async fn wait_for_walsender(db: &TestDb) -> i32 {
    for _ in 0..200 {
        if let Some(pid) = walsender_pid(db).await {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node streams the slot");
}

#[tokio::test]
async fn watching_sets_replica_identity_full_and_publishes_without_triggers() {
    let _shared = WAL_FLOOD.read().await;
    let (db, config) = logical_db().await;
    db.execute("CREATE TABLE plain (id int PRIMARY KEY)").await;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute("SELECT feedgate.watch('plain')").await;
    let (identity, triggers, published): (String, i64, bool) = sqlx::query_as(
        "SELECT (SELECT relreplident::text FROM pg_class WHERE oid = 'plain'::regclass), \
                (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass), \
                EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'feedgate' \
                         AND tablename = 'plain')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("catalog");
    assert_eq!((identity.as_str(), triggers, published), ("f", 0, true));
    let mode: String = sqlx::query_scalar("SELECT mode FROM feedgate.capture")
        .fetch_one(&db.pool)
        .await
        .expect("mode");
    assert_eq!(mode, "logical");
    db.execute("SELECT feedgate.unwatch('plain')").await;
    let (identity, published): (String, bool) = sqlx::query_as(
        "SELECT (SELECT relreplident::text FROM pg_class WHERE oid = 'plain'::regclass), \
                EXISTS (SELECT 1 FROM pg_publication_tables WHERE tablename = 'plain')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("catalog");
    assert_eq!((identity.as_str(), published), ("d", false));
    // A partitioned table: its partitions carry the rows, so they get FULL too, and back.
    db.execute(
        "CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (100);
         SELECT feedgate.watch('parted');",
    )
    .await;
    let identities = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) \
                   FROM pg_class WHERE relname IN ('parted', 'parted_a')",
            )
            .fetch_one(&pool)
            .await
            .expect("identities")
        }
    };
    assert_eq!(identities(&db).await, "parted=f,parted_a=f");
    db.execute("SELECT feedgate.unwatch('parted')").await;
    assert_eq!(identities(&db).await, "parted=d,parted_a=d");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn large_toasted_values_arrive_whole_when_an_update_leaves_them_unchanged() {
    let _shared = WAL_FLOOD.read().await;
    let (db, server) = start_logical().await;
    db.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, blob bytea, n int);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE docs ALTER COLUMN blob SET STORAGE EXTERNAL;
         SELECT feedgate.watch('public.docs');",
    )
    .await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client.request(table_feed(1, "public.docs", false)).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    assert!(next_change(&mut client, 1).await.is_none(), "Ready first");
    // 256 kB of text and 128 kB of bytes, stored out of line (uncompressed: EXTERNAL).
    db.execute(
        "INSERT INTO docs SELECT 1, string_agg(md5(g::text), ''), \
                decode(string_agg(md5(g::text), ''), 'hex'), 0 \
           FROM generate_series(1, 8192) g",
    )
    .await;
    let insert = next_change(&mut client, 1).await.expect("insert");
    db.execute("UPDATE docs SET n = 1 WHERE id = 1").await;
    let (body, blob): (String, Vec<u8>) = sqlx::query_as("SELECT body, blob FROM docs")
        .fetch_one(&db.pool)
        .await
        .expect("row");
    assert_eq!(body.len(), 256 << 10);
    let external: bool = sqlx::query_scalar(
        "SELECT pg_relation_size(reltoastrelid) > 300000 FROM pg_class WHERE oid = 'docs'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .expect("size");
    assert!(
        external,
        "the values are stored out of line (in the TOAST table)"
    );
    let update = next_change(&mut client, 1).await.expect("update");
    assert_eq!(update.kind(), pb::ChangeKind::Update);
    for (what, row) in [
        ("insert's new", &insert.new_row),
        ("update's old", &update.old_row),
        ("update's new", &update.new_row),
    ] {
        let row = row.as_ref().expect(what);
        let text = match &row.columns["body"].kind {
            Some(pb::value::Kind::Text(text)) => text.clone(),
            other => panic!("{what} body: {other:?}"),
        };
        assert!(text == body, "{what} row's body is whole");
        let bytes = match &row.columns["blob"].kind {
            Some(pb::value::Kind::Bytes(bytes)) => bytes.to_vec(),
            other => panic!("{what} blob: {other:?}"),
        };
        assert!(bytes == blob, "{what} row's blob is whole");
    }
    assert_eq!(columns(&update.old_row)["n"], "0");
    assert_eq!(columns(&update.new_row)["n"], "1");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn the_replication_connection_terminated_mid_stream_loses_and_doubles_nothing() {
    let _shared = WAL_FLOOD.read().await;
    let (db, server) = start_logical().await;
    db.execute(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe(&mut client, 1, false).await;
    let writer_db = db.pool.clone();
    let writer = tokio::spawn(async move {
        for i in 1..=300_i64 {
            sqlx::query("INSERT INTO orders VALUES ($1, 'x', 0)")
                .bind(i)
                .execute(&writer_db)
                .await
                .expect("insert");
            sqlx::query("UPDATE orders SET qty = qty + 1 WHERE id = $1")
                .bind(i)
                .execute(&writer_db)
                .await
                .expect("update");
        }
    });
    let mut killed = 0;
    while !writer.is_finished() || killed < 3 {
        let pid = wait_for_walsender(&db).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&db.pool)
            .await
            .expect("terminate");
        killed += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    writer.await.expect("writer");
    let mut view = View::default();
    read_until(&mut client, 1, &mut view, 300).await;
    // Every row was inserted and then updated once: the view must end with qty = 1 each.
    let mut deadline_reads = 0;
    while view.rows.values().any(|row| row["qty"] != "1") && deadline_reads < 1000 {
        if let Some(change) = next_change(&mut client, 1).await {
            view.apply(&change)
                .expect("no change lost, doubled or out of order");
        }
        deadline_reads += 1;
    }
    assert_eq!(view.rows.len(), 300);
    assert!(view.rows.values().all(|row| row["qty"] == "1"));
    assert_eq!(view.applied, 600, "each insert and update exactly once");
    assert_eq!(table_rows(&db).await, 300);
    client.barrier().await; // nothing more, nothing doubled
    assert!(killed >= 3);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn another_node_takes_over_capture_when_the_leader_stops() {
    let _shared = WAL_FLOOD.read().await;
    let (db, config) = logical_db().await;
    let leader = start_with(config.clone()).await;
    wait_connected(leader.local_addr()).await;
    db.execute(ORDERS).await;
    wait_for_walsender(&db).await; // the first node leads
    let follower = start_with(config).await;
    wait_connected(follower.local_addr()).await;
    let mut client = Client::connect(follower.local_addr()).await;
    subscribe(&mut client, 1, false).await;
    for i in 1..=50_i64 {
        sqlx::query("INSERT INTO orders VALUES ($1, 'before', 0)")
            .bind(i)
            .execute(&db.pool)
            .await
            .expect("insert");
    }
    let mut view = View::default();
    read_until(&mut client, 1, &mut view, 50).await;
    // The leader stops while writes go on; the follower takes over from where it left.
    let writer_db = db.pool.clone();
    let writer = tokio::spawn(async move {
        for i in 51..=200_i64 {
            sqlx::query("INSERT INTO orders VALUES ($1, 'during', 0)")
                .bind(i)
                .execute(&writer_db)
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.shutdown().await.expect("leader stopped");
    writer.await.expect("writer");
    read_until(&mut client, 1, &mut view, 200).await;
    assert_eq!(view.applied, 200, "each insert exactly once");
    client.barrier().await;
    let generation: i64 = sqlx::query_scalar("SELECT generation FROM feedgate.capture")
        .fetch_one(&db.pool)
        .await
        .expect("generation");
    assert!(
        generation >= 2,
        "a second leader took over (generation {generation})"
    );
    // The follower says it leads now, and counts what it appended.
    let (status, metrics) = feedgate::testing::http_get(follower.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(value("feedgate_capture_leader"), 1.0);
    assert!(value("feedgate_capture_appended_changes_total") > 0.0);
    follower.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn an_invalidated_slot_ends_subscriptions_with_source_reset_and_capture_starts_again() {
    let _alone = WAL_FLOOD.write().await;
    let (db, server) = start_logical().await;
    db.execute(&format!(
        "{ORDERS} CREATE TABLE junk (id int, pad text); ALTER TABLE junk SET (autovacuum_enabled = off);"
    ))
    .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe(&mut client, 1, false).await;
    db.execute("INSERT INTO orders VALUES (1, 'a', 0)").await;
    assert_eq!(
        next_change(&mut client, 1).await.expect("insert").kind(),
        pb::ChangeKind::Insert
    );

    // Hold the leader in its next append (it waits for this row lock), so the slot does not
    // move while WAL past max_slot_wal_keep_size (64MB on the test cluster) is written.
    let mut hold = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM feedgate.capture FOR UPDATE")
        .execute(&mut *hold)
        .await
        .expect("lock");
    db.execute("INSERT INTO orders VALUES (2, 'b', 0)").await;
    let mut lost = false;
    for _ in 0..10 {
        db.execute(
            "INSERT INTO junk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 100000) g;
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT wal_status FROM pg_replication_slots WHERE database = current_database()",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("slot")
        .flatten();
        if status.as_deref() == Some("lost") {
            lost = true;
            break;
        }
    }
    assert!(lost, "the slot was invalidated");
    hold.rollback().await.expect("release");

    // Row 2 may arrive before the reset (it was decoded before the slot was lost); then the
    // subscription ends with SOURCE_RESET.
    let closed = loop {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => assert_eq!(columns(&change.key)["id"], "2"),
            Some(pb::event::Body::Closed(closed)) => break closed,
            other => panic!("unexpected {other:?}"),
        }
    };
    let error = closed.error.expect("an error");
    assert_eq!(error.code(), pb::ErrorCode::SourceReset, "{error:?}");

    // Capture starts again from a new slot: a new subscription gets new changes.
    subscribe(&mut client, 2, false).await;
    db.execute("INSERT INTO orders VALUES (3, 'c', 0)").await;
    let change = next_change(&mut client, 2)
        .await
        .expect("insert after the reset");
    assert_eq!(columns(&change.key)["id"], "3");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// The table as a view would hold it: key (as `View` writes it) → columns.
async fn expected_rows(
    db: &TestDb,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let rows: Vec<(i64, i32)> = sqlx::query_as("SELECT id, val FROM items ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    rows.into_iter()
        .map(|(id, val)| {
            let key = std::collections::BTreeMap::from([("id".to_owned(), id.to_string())]);
            let row = std::collections::BTreeMap::from([
                ("id".to_owned(), id.to_string()),
                ("val".to_owned(), val.to_string()),
            ]);
            (format!("{key:?}"), row)
        })
        .collect()
}

/// Applies changes on `id` until the view equals the table.
async fn converge(client: &mut Client, id: u64, view: &mut View, db: &TestDb) {
    let want = expected_rows(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while view.rows != want || !view.ready {
        let event = tokio::time::timeout_at(deadline, client.recv_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the view never matched the table: {} rows of {}",
                    view.rows.len(),
                    want.len()
                )
            });
        assert_eq!(event.subscription_id, id);
        match event.body {
            Some(pb::event::Body::Change(change)) => view
                .apply(&change)
                .expect("no change lost, doubled or out of order"),
            Some(pb::event::Body::Ready(_)) => view.ready = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_database_on_triggers_switches_to_logical_decoding_under_writes_losing_and_doubling_nothing(
) {
    let _shared = WAL_FLOOD.read().await;
    let (db, logical) = logical_db().await;
    let mut triggers = logical.clone();
    triggers.changefeed.capture = CaptureMode::Trigger;
    let first = start_with(triggers).await;
    wait_connected(first.local_addr()).await;
    db.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, val int NOT NULL);
         INSERT INTO items SELECT g, 0 FROM generate_series(1, 50) g;
         SELECT feedgate.watch('public.items');",
    )
    .await;
    let mut on_first = Client::connect(first.local_addr()).await;
    let response = on_first.request(table_feed(1, "public.items", true)).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    let mut view = View::default();
    // Ready's cursor, from before any change: resumed after the switch below.
    let ready = loop {
        let event = on_first.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => view.apply(&change).expect("initial row"),
            Some(pb::event::Body::Ready(_)) => break event.cursor,
            other => panic!("unexpected {other:?}"),
        }
    };
    view.ready = true;
    let initial = view.rows.clone();

    // Writers insert and update, before, during and after the switch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (pool, stop) = (db.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut id = 50_i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO items VALUES ($1, 0)")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                sqlx::query("UPDATE items SET val = val + 1 WHERE id = $1")
                    .bind(1 + id % 50)
                    .execute(&mut *tx)
                    .await
                    .expect("update");
                tx.commit().await.expect("commit");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // The publication (with the table already in it) and the slot made ahead, as an operator
    // may, while writes go on: the slot then delivers many transactions that the triggers
    // logged, which the leader must skip.
    db.execute(
        "CREATE PUBLICATION feedgate FOR TABLE items WITH (publish_via_partition_root = true)",
    )
    .await;
    db.execute(&format!(
        "SELECT pg_create_logical_replication_slot('feedgate_{}', 'pgoutput')",
        db.name
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A node configured `auto` starts: the database switches to logical decoding.
    let second = start_with(logical).await;
    wait_connected(second.local_addr()).await;
    let (mode, capture_triggers): (String, i64) = sqlx::query_as(
        "SELECT (SELECT mode FROM feedgate.capture), \
                (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass \
                    AND tgname LIKE 'feedgate%')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("mode");
    assert_eq!((mode.as_str(), capture_triggers), ("logical", 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");

    // The client of the first node saw every change once across the switch.
    converge(&mut on_first, 1, &mut view, &db).await;
    // And a new client of the second node gets the same table.
    let mut on_second = Client::connect(second.local_addr()).await;
    let response = on_second.request(table_feed(1, "public.items", true)).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    let mut fresh = View::default();
    converge(&mut on_second, 1, &mut fresh, &db).await;
    // A cursor from before the switch resumes across it: the log holds each change once.
    let mut resumed = Client::connect(second.local_addr()).await;
    let Command::Subscribe(mut resume) = table_feed(1, "public.items", true) else {
        unreachable!("table_feed makes a Subscribe");
    };
    resume.resume_from = ready;
    let response = resumed.request(Command::Subscribe(resume)).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    let mut from_cursor = View {
        rows: initial,
        ..View::default()
    };
    converge(&mut resumed, 1, &mut from_cursor, &db).await;
    let (by_triggers, by_leader): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE commit_lsn IS NULL), count(*) FILTER (WHERE commit_lsn IS NOT NULL) \
           FROM feedgate.changes",
    )
    .fetch_one(&db.pool)
    .await
    .expect("log");
    assert!(
        by_triggers > 0 && by_leader > 0,
        "logged by triggers {by_triggers}, by the leader {by_leader}"
    );
    on_first.barrier().await;
    first.shutdown().await.expect("first stopped");
    second.shutdown().await.expect("second stopped");
    db.drop_db().await;
}

/// Restarts the private cluster (`pg_ctl restart -m fast`), as its owner.
fn restart_postgres() {
    let data = std::env::var("FEEDGATE_TEST_LOGICAL_PGDATA")
        .unwrap_or_else(|_| "/var/lib/postgresql/feedgate-logical".into());
    let bin = std::env::var("FEEDGATE_TEST_PG_BIN")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let pg_ctl = format!("{bin}/pg_ctl");
    let log = format!("{data}/server.log");
    let args = [
        "-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart",
    ];
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    let mut command = if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", &pg_ctl]);
        c
    } else {
        std::process::Command::new(&pg_ctl)
    };
    let out = command
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .expect("pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_restart_of_postgresql_mid_stream_loses_and_doubles_nothing() {
    let _alone = WAL_FLOOD.write().await; // the restart cuts every connection to the cluster
    let (db, server) = start_logical().await;
    db.execute(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe(&mut client, 1, false).await;
    let insert = |from: i64, to: i64| {
        let pool = db.pool.clone();
        async move {
            for i in from..=to {
                sqlx::query("INSERT INTO orders VALUES ($1, 'x', 0)")
                    .bind(i)
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
        }
    };
    insert(1, 50).await;
    // Committed, and possibly not yet appended by the leader, when the server goes down.
    insert(51, 100).await;
    restart_postgres();
    insert(101, 150).await;
    let mut view = View::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while view.rows.len() < 150 {
        let event = tokio::time::timeout_at(deadline, client.recv_event())
            .await
            .unwrap_or_else(|_| panic!("{} of 150 rows arrived", view.rows.len()));
        match event.body {
            Some(pb::event::Body::Change(change)) => view
                .apply(&change)
                .expect("no change lost, doubled or out of order"),
            // Unavailable while the database is down, available again after.
            Some(pb::event::Body::Status(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(view.applied, 150, "each insert exactly once");
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
