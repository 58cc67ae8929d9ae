//! PostgreSQL changefeeds against a real database (one database per test).

mod support;

use std::time::Duration;

use feedgate::protocol::pb;
use sqlx::Connection;
use support::db::{columns, config_for, table_feed, wait_connected, TestDb, View};
use support::*;

async fn setup(sql: &str) -> (TestDb, feedgate::app::Server) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(sql).await;
    (db, server)
}

/// Subscribes and expects Subscribed.
async fn subscribe_table(client: &mut Client, id: u64, table: &str, initial: bool) {
    let response = client.request(table_feed(id, table, initial)).await;
    match response.result {
        Some(pb::response::Result::Subscribed(s)) => assert_eq!(s.subscription_id, id),
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

/// The next event must be a row change on `id`.
async fn next_change(client: &mut Client, id: u64) -> pb::RowChange {
    let event = client.recv_event().await;
    assert_eq!(event.subscription_id, id);
    match event.body {
        Some(pb::event::Body::Change(change)) => change,
        other => panic!("expected a row change, got {other:?}"),
    }
}

async fn expect_ready(client: &mut Client, id: u64) {
    let event = client.recv_event().await;
    assert_eq!(event.subscription_id, id);
    assert!(
        matches!(event.body, Some(pb::event::Body::Ready(_))),
        "expected Ready, got {event:?}"
    );
}

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL, qty int);
                      SELECT feedgate.watch('public.orders');";

#[tokio::test]
async fn snapshot_then_ready_then_live_changes_in_commit_order() {
    let (db, server) = setup(ORDERS).await;
    db.execute("INSERT INTO orders VALUES (1, 'apple', 3), (2, 'pear', 1), (3, 'fig', 7)")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 5, "public.orders", true).await;
    let mut initial = Vec::new();
    for _ in 0..3 {
        let change = next_change(&mut client, 5).await;
        assert_eq!(change.kind(), pb::ChangeKind::Initial);
        assert_eq!(change.table, "public.orders");
        initial.push(columns(&change.new_row));
    }
    initial.sort();
    assert_eq!(initial[0]["item"], "apple");
    assert_eq!(initial[2]["qty"], "7");
    expect_ready(&mut client, 5).await;

    db.execute("INSERT INTO orders VALUES (4, 'kiwi', 2)").await;
    db.execute("UPDATE orders SET qty = 4 WHERE id = 1").await;
    db.execute("DELETE FROM orders WHERE id = 2").await;
    let insert = next_change(&mut client, 5).await;
    assert_eq!(insert.kind(), pb::ChangeKind::Insert);
    assert_eq!(columns(&insert.key)["id"], "4");
    assert!(insert.transaction_id > 0 && insert.commit_time_micros > 0);
    let update = next_change(&mut client, 5).await;
    assert_eq!(update.kind(), pb::ChangeKind::Update);
    assert_eq!(columns(&update.old_row)["qty"], "3");
    assert_eq!(columns(&update.new_row)["qty"], "4");
    let delete = next_change(&mut client, 5).await;
    assert_eq!(delete.kind(), pb::ChangeKind::Delete);
    assert_eq!(columns(&delete.key)["id"], "2");
    assert_eq!(columns(&delete.old_row)["item"], "pear");
    assert!(delete.new_row.is_none());
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn without_initial_ready_comes_at_once_and_only_later_changes_follow() {
    let (db, server) = setup(ORDERS).await;
    db.execute("INSERT INTO orders VALUES (1, 'old', 1)").await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "orders", false).await;
    expect_ready(&mut client, 1).await;
    db.execute("INSERT INTO orders VALUES (2, 'new', 1)").await;
    let change = next_change(&mut client, 1).await;
    assert_eq!(change.kind(), pb::ChangeKind::Insert);
    assert_eq!(columns(&change.key)["id"], "2");
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_transaction_with_a_lower_log_id_that_commits_later_is_still_delivered() {
    let (db, server) = setup(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "orders", false).await;
    expect_ready(&mut client, 1).await;

    // T1 takes the lower log id and stays open while T2 logs a higher id and commits.
    let mut t1 = db.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders VALUES (1, 'slow', 1)")
        .execute(&mut *t1)
        .await
        .expect("t1 insert");
    db.execute("INSERT INTO orders VALUES (2, 'fast', 1)").await;
    let fast = next_change(&mut client, 1).await;
    assert_eq!(columns(&fast.key)["id"], "2");
    // Give the reader several polls past T2 (the "last id seen" bug would skip T1 from now on).
    tokio::time::sleep(Duration::from_millis(300)).await;
    t1.commit().await.expect("t1 commit");
    let slow = next_change(&mut client, 1).await;
    assert_eq!(columns(&slow.key)["id"], "1");
    assert!(
        slow.transaction_id < fast.transaction_id,
        "T1 is the older transaction"
    );
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn unknown_unwatched_and_hostile_table_names_are_refused_without_effect() {
    let (db, server) = setup(
        "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE x (id int PRIMARY KEY);
         CREATE TABLE nokey (v int); CREATE TABLE \"Quoted Name\" (id int PRIMARY KEY);
         SELECT feedgate.watch('orders'); SELECT feedgate.watch('\"Quoted Name\"');",
    )
    .await;
    let mut client = Client::connect(server.local_addr()).await;
    for (name, code) in [
        ("public.missing", ErrorCode::NotFound),
        ("x", ErrorCode::NotFound), // exists but not watched
        ("nosuchschema.orders", ErrorCode::NotFound),
        ("orders; DROP TABLE x", ErrorCode::Validation),
        ("orders'); DROP TABLE x; --", ErrorCode::Validation),
        ("\"orders", ErrorCode::Validation),
        ("pg_catalog.pg_class", ErrorCode::NotFound),
    ] {
        let err = client.expect_error(table_feed(1, name, true), code).await;
        assert_eq!(err.details["table"], name);
    }
    // Quoting and schema prefixes resolve to the same table.
    subscribe_table(&mut client, 2, "\"Quoted Name\"", false).await;
    expect_ready(&mut client, 2).await;
    subscribe_table(&mut client, 3, "public.\"Quoted Name\"", false).await;
    expect_ready(&mut client, 3).await;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('x') IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .expect("query");
    assert!(exists, "table x survived");
    let err = sqlx::query("SELECT feedgate.watch('nokey')")
        .execute(&db.pool)
        .await
        .expect_err("no primary key");
    assert!(err.to_string().contains("no primary key"), "{err}");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn unsubscribing_mid_snapshot_stops_the_initial_rows() {
    let (db, server) = setup(ORDERS).await;
    db.execute("INSERT INTO orders SELECT g, repeat('x', 200), g FROM generate_series(1, 20000) g")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 9, "orders", true).await;
    for _ in 0..10 {
        assert_eq!(
            next_change(&mut client, 9).await.kind(),
            pb::ChangeKind::Initial
        );
    }
    let id = client.send(unsubscribe(9)).await;
    let mut after = 0;
    loop {
        match client.recv().await.expect("message") {
            Received::Event(event) => {
                assert_eq!(event.subscription_id, 9);
                after += 1;
            }
            Received::Response(response) => {
                assert_eq!(response.request_id, id);
                assert!(matches!(
                    response.result,
                    Some(pb::response::Result::Unsubscribed(_))
                ));
                break;
            }
            Received::Close(close) => panic!("closed {close:?}"),
        }
    }
    assert!(
        after < 19_990,
        "the snapshot was cut short ({after} rows after unsubscribe)"
    );
    client.barrier().await; // nothing for subscription 9 after Unsubscribed
    wait_for_stat(server.local_addr(), "subscriptions", 0).await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// An unsubscribe may cancel a subscription's snapshot anywhere, in the middle of its `BEGIN`
/// too: the pooled connection must not go back to the pool inside a transaction, where the next
/// snapshot's `BEGIN` would fail (`SOURCE_UNAVAILABLE`: "SET TRANSACTION ISOLATION LEVEL must
/// be called before any query"). Before the fix the Python client's timing hit it in 1 to 14
/// rounds of 200; this test's timing did not (the window is narrow), so it guards the path
/// rather than proving the fix.
#[tokio::test]
async fn subscriptions_cancelled_at_any_point_of_their_snapshot_leave_the_pool_usable() {
    let (db, server) = setup(ORDERS).await;
    db.execute("INSERT INTO orders SELECT g, 'x', g FROM generate_series(1, 50) g")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    for round in 0..300u64 {
        let id = 2 * round + 1;
        subscribe_table(&mut client, id, "orders", false).await;
        // Cancel at a different point of the snapshot each round.
        tokio::time::sleep(Duration::from_micros(round % 10 * 150)).await;
        let unsubscribe_id = client.send(unsubscribe(id)).await;
        loop {
            match client.recv().await.expect("message") {
                Received::Response(response) if response.request_id == unsubscribe_id => break,
                Received::Event(event) => assert_eq!(event.subscription_id, id),
                other => panic!("round {round}: {other:?}"),
            }
        }
        let check = id + 1;
        subscribe_table(&mut client, check, "orders", true).await;
        for _ in 0..50 {
            assert_eq!(
                next_change(&mut client, check).await.kind(),
                pb::ChangeKind::Initial,
                "round {round}"
            );
        }
        expect_ready(&mut client, check).await;
        client.request(unsubscribe(check)).await;
    }
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_one_megabyte_row_arrives_whole() {
    let (db, server) = setup(
        "CREATE TABLE blobs (id int PRIMARY KEY, body text, data bytea);
         SELECT feedgate.watch('blobs');",
    )
    .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "blobs", false).await;
    expect_ready(&mut client, 1).await;
    db.execute(
        "INSERT INTO blobs VALUES (1, repeat('abcdefghij', 104858), \
         decode(repeat('00ff', 262144), 'hex'))",
    )
    .await;
    let change = next_change(&mut client, 1).await;
    let row = change.new_row.expect("new row");
    let Some(pb::value::Kind::Text(body)) = &row.columns["body"].kind else {
        panic!("body is text");
    };
    assert_eq!(body.len(), 1_048_580);
    let Some(pb::value::Kind::Bytes(data)) = &row.columns["data"].kind else {
        panic!("data is bytes");
    };
    assert_eq!(data.len(), 524_288);
    assert_eq!(&data[..2], &[0x00, 0xff]);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn values_keep_their_types_through_the_feed() {
    let (db, server) = setup(
        "CREATE TABLE typed (id bigint PRIMARY KEY, n numeric, f float8, b boolean,
             ts timestamptz, lts timestamp, d date, j jsonb, a int[], bin bytea, u uuid, t text);
         SELECT feedgate.watch('typed');",
    )
    .await;
    db.execute(
        "INSERT INTO typed VALUES (9223372036854775807, 12345678901234567890.123456789, 1.5,
             true, '2024-05-01 12:00:00.123456+02', '2024-05-01 12:00:00', '1970-01-11',
             '{\"k\": [1, 2]}', '{1,2,3}', '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL)",
    )
    .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "typed", true).await;
    let change = next_change(&mut client, 1).await;
    let row = columns(&change.new_row);
    assert_eq!(row["id"], "9223372036854775807");
    assert_eq!(row["n"], "12345678901234567890.123456789");
    assert_eq!(row["f"], "1.5");
    assert_eq!(row["b"], "true");
    assert_eq!(row["ts"], "tstz:1714557600123456");
    assert_eq!(row["lts"], "ts:1714564800000000");
    assert_eq!(row["d"], "date:10");
    assert_eq!(row["j"], "{\"k\":[1,2]}");
    assert_eq!(row["a"], "[1,2,3]");
    assert_eq!(row["bin"], "bytes:00ff");
    assert_eq!(row["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(row["t"], "null");
    expect_ready(&mut client, 1).await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_table_watched_while_clients_are_subscribed_elsewhere_becomes_available() {
    let (db, server) = setup(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         SELECT feedgate.watch('a');",
    )
    .await;
    let addr = server.local_addr();
    let mut on_a = Client::connect(addr).await;
    subscribe_table(&mut on_a, 1, "a", false).await;
    expect_ready(&mut on_a, 1).await;
    let mut on_b = Client::connect(addr).await;
    on_b.expect_error(table_feed(1, "b", false), ErrorCode::NotFound)
        .await;
    db.execute("SELECT feedgate.watch('b')").await;
    subscribe_table(&mut on_b, 1, "b", true).await;
    expect_ready(&mut on_b, 1).await;
    db.execute("INSERT INTO a VALUES (1); INSERT INTO b VALUES (2);")
        .await;
    assert_eq!(columns(&next_change(&mut on_a, 1).await.key)["id"], "1");
    assert_eq!(columns(&next_change(&mut on_b, 1).await.key)["id"], "2");
    on_a.barrier().await;
    on_b.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn killing_the_reader_and_listener_connections_loses_nothing() {
    let (db, server) = setup(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "orders", false).await;
    expect_ready(&mut client, 1).await;
    let mut view = View::default();
    let mut next = 1;
    for round in 0..3 {
        for _ in 0..20 {
            db.execute(&format!(
                "INSERT INTO orders VALUES ({next}, 'r{round}', 0)"
            ))
            .await;
            next += 1;
        }
        // Wait until the reader is (re)connected, then cut both of its connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                  WHERE datname = current_database() \
                    AND application_name IN ('feedgate-reader', 'feedgate-listener')",
            )
            .fetch_all(&db.pool)
            .await
            .expect("terminate");
            if killed.len() == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reader never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..20 {
            db.execute(&format!(
                "INSERT INTO orders VALUES ({next}, 'r{round}', 0)"
            ))
            .await;
            next += 1;
        }
    }
    // Every insert arrives exactly once; status events may come in between.
    while view.rows.len() < (next - 1) as usize {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => view.apply(&change).expect("consistent"),
            Some(pb::event::Body::Status(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(view.applied, (next - 1) as usize);
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// The ids of the rows whose changes are in the log (committed ones), in log order.
async fn logged_ids(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT coalesce(new_row, old_row)->>'id' FROM feedgate.changes ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("log")
}

/// Waits until the log holds exactly the changes of the rows `want` (pruning runs on its own).
async fn wait_for_log(db: &TestDb, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logged = logged_ids(db).await;
        if logged == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log kept {logged:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `id` in the key of the next row change on `subscription`.
async fn next_change_id(client: &mut Client, subscription: u64) -> String {
    columns(&next_change(client, subscription).await.key)["id"].clone()
}

/// Begins a transaction that has taken its id (and so holds back every later one's changes).
async fn begin_with_xid(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("xid");
    tx
}

#[tokio::test]
async fn pruning_removes_what_every_reader_has_read_and_nothing_else() {
    let db = TestDb::new().await;
    let mut config = config_for(&db);
    config.changefeed.retention = Duration::ZERO;
    config.changefeed.prune_interval = Duration::from_millis(100);
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "orders", false).await;
    expect_ready(&mut client, 1).await;

    // Read by the only reader: pruned.
    db.execute("INSERT INTO orders VALUES (1, 'a', 1), (2, 'b', 1)")
        .await;
    next_change(&mut client, 1).await;
    next_change(&mut client, 1).await;
    wait_for_log(&db, &[]).await;

    // An open transaction's logged change is never pruned, and arrives when it commits. Pruning
    // is seen to run meanwhile: `older` took its transaction id before `open` logged its change
    // and commits after it, so the pass that prunes `older`'s change finds `open`'s in the log.
    let mut older = begin_with_xid(&db).await;
    let mut open = db.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders VALUES (3, 'late', 1)")
        .execute(&mut *open)
        .await
        .expect("insert");
    sqlx::query("INSERT INTO orders VALUES (4, 'older', 1)")
        .execute(&mut *older)
        .await
        .expect("insert");
    older.commit().await.expect("commit");
    assert_eq!(next_change_id(&mut client, 1).await, "4");
    wait_for_log(&db, &[]).await; // 3's change is logged but invisible until it commits
    open.commit().await.expect("commit");
    assert_eq!(next_change_id(&mut client, 1).await, "3");

    // Another node whose reader has not read past an old position holds pruning back: it has
    // read up to row 6's transaction. `holder` keeps this node's reader from pruning row 5 until
    // that node is registered; once it ends, a pass prunes 5 and must keep 6.
    let holder = begin_with_xid(&db).await;
    db.execute("INSERT INTO orders VALUES (5, 'read', 1)").await;
    let xid: String = sqlx::query_scalar(
        "INSERT INTO orders VALUES (6, 'kept', 1) RETURNING pg_current_xact_id()::text",
    )
    .fetch_one(&db.pool)
    .await
    .expect("insert");
    assert_eq!(next_change_id(&mut client, 1).await, "5");
    assert_eq!(next_change_id(&mut client, 1).await, "6");
    db.execute(&format!(
        "INSERT INTO feedgate.readers (node_id, position) \
         VALUES (gen_random_uuid(), '{xid}:{xid}:')"
    ))
    .await;
    holder.rollback().await.expect("rollback");
    wait_for_log(&db, &["6"]).await;
    // Once that reader is gone, they go too.
    db.execute("DELETE FROM feedgate.readers WHERE position::text <> ''")
        .await;
    // (our own reader re-registers its row on its next heartbeat or prune pass)
    wait_for_log(&db, &[]).await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn while_the_database_is_unreachable_subscribers_are_told_and_nothing_is_lost() {
    let (db, server) = setup(ORDERS).await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    subscribe_table(&mut client, 1, "orders", false).await;
    expect_ready(&mut client, 1).await;

    // A connection opened before the outage keeps writing during it.
    let mut writer = sqlx::PgConnection::connect(&db.url).await.expect("writer");
    let mut admin = sqlx::PgConnection::connect(&support::db::admin_url())
        .await
        .expect("admin");
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name
    ))
    .execute(&mut admin)
    .await
    .expect("block connections");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = $1 AND application_name LIKE 'feedgate%'",
    )
    .bind(&db.name)
    .execute(&mut admin)
    .await
    .expect("terminate");

    let event = client.recv_event().await;
    let Some(pb::event::Body::Status(status)) = event.body else {
        panic!("expected a status event, got {event:?}");
    };
    assert!(!status.available);
    let error = status.error.expect("why");
    assert_eq!(error.code(), ErrorCode::SourceUnavailable);
    assert!(error.retryable);
    let mut other = Client::connect(addr).await;
    let err = other
        .expect_error(table_feed(1, "orders", false), ErrorCode::SourceUnavailable)
        .await;
    assert!(err.retryable);
    assert_eq!(stats(addr).await["database"], "unavailable");

    for id in 1..=5 {
        sqlx::query("INSERT INTO orders VALUES ($1, 'during outage', 0)")
            .bind(id)
            .execute(&mut writer)
            .await
            .expect("insert during outage");
    }
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name
    ))
    .execute(&mut admin)
    .await
    .expect("unblock");

    let event = client.recv_event().await;
    let Some(pb::event::Body::Status(status)) = event.body else {
        panic!("expected a status event, got {event:?}");
    };
    assert!(status.available && status.error.is_none());
    let mut view = View::default();
    while view.rows.len() < 5 {
        let change = next_change(&mut client, 1).await;
        view.apply(&change).expect("exactly once, in order");
    }
    client.barrier().await;
    drop(writer);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_truncate_ends_subscriptions_with_source_reset_instead_of_leaving_stale_rows() {
    let (db, server) = setup(ORDERS).await;
    db.execute("INSERT INTO orders VALUES (1, 'a', 1), (2, 'b', 1)")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "orders", true).await;
    next_change(&mut client, 1).await;
    next_change(&mut client, 1).await;
    expect_ready(&mut client, 1).await;
    db.execute("TRUNCATE orders").await;
    let event = client.recv_event().await;
    assert_eq!(event.subscription_id, 1);
    let Some(pb::event::Body::Closed(closed)) = event.body else {
        panic!("expected SubscriptionClosed, got {event:?}");
    };
    let error = closed.error.expect("error");
    assert_eq!(error.code(), ErrorCode::SourceReset);
    assert_eq!(error.details["table"], "public.orders");
    // The id is free again; resubscribing rebuilds the (now empty) state.
    db.execute("INSERT INTO orders VALUES (3, 'c', 1)").await;
    subscribe_table(&mut client, 1, "orders", true).await;
    assert_eq!(columns(&next_change(&mut client, 1).await.key)["id"], "3");
    expect_ready(&mut client, 1).await;
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_truncate_of_one_partition_ends_subscriptions_of_the_partitioned_table() {
    let (db, server) = setup(
        "CREATE TABLE events (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
         CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
         SELECT feedgate.watch('public.events');",
    )
    .await;
    db.execute("INSERT INTO events VALUES (1, 'eu'), (2, 'us')")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    subscribe_table(&mut client, 1, "events", true).await;
    next_change(&mut client, 1).await;
    next_change(&mut client, 1).await;
    expect_ready(&mut client, 1).await;
    // A partition's changes come under the parent; so does a partition's TRUNCATE.
    db.execute("INSERT INTO events VALUES (3, 'us')").await;
    assert_eq!(columns(&next_change(&mut client, 1).await.key)["id"], "3");
    db.execute("TRUNCATE events_us").await;
    let event = client.recv_event().await;
    let Some(pb::event::Body::Closed(closed)) = event.body else {
        panic!("expected SubscriptionClosed, got {event:?}");
    };
    let error = closed.error.expect("error");
    assert_eq!(error.code(), ErrorCode::SourceReset);
    assert_eq!(error.details["table"], "public.events");
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_thousand_subscriptions_to_one_table_each_get_every_change_once() {
    let (db, server) = setup(ORDERS).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = Client::connect(addr).await;
        for id in 1..=50 {
            subscribe_table(&mut client, id, "orders", false).await;
            expect_ready(&mut client, id).await;
        }
        clients.push(client);
    }
    assert_eq!(stats(addr).await["subscriptions"], 1000);
    db.execute("INSERT INTO orders SELECT g, 'x', g FROM generate_series(1, 10) g")
        .await;
    for client in &mut clients {
        let mut seen = std::collections::BTreeMap::<u64, Vec<String>>::new();
        for _ in 0..500 {
            let event = client.recv_event().await;
            let Some(pb::event::Body::Change(change)) = event.body else {
                panic!("expected a change");
            };
            seen.entry(event.subscription_id)
                .or_default()
                .push(columns(&change.key)["id"].clone());
        }
        let want: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
        assert_eq!(seen.len(), 50);
        assert!(
            seen.values().all(|ids| *ids == want),
            "every subscription, in order"
        );
        client.barrier().await;
    }
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
