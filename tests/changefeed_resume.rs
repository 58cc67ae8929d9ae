//! Table subscriptions resume from a cursor, against a real database and real servers: after a
//! dropped connection, on another node, after a restart, across transactions that commit out of
//! log order; and positions that cannot resume answer `RESUME_UNAVAILABLE`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::db::{columns, config_for, table_feed, wait_connected, TestDb};
use support::*;

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, item text NOT NULL);
                      SELECT feedgate.watch('public.orders');
                      CREATE TABLE other (id bigint PRIMARY KEY);
                      SELECT feedgate.watch('public.other');";

fn resume(id: u64, table: &str, cursor: &Bytes) -> Command {
    let Command::Subscribe(mut subscribe) = table_feed(id, table, true) else {
        unreachable!("table_feed makes a Subscribe");
    };
    subscribe.resume_from = cursor.clone();
    Command::Subscribe(subscribe)
}

fn expect_subscribed(response: pb::Response) {
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "expected Subscribed, got {response:?}"
    );
}

/// A change as (kind, id), with the event's cursor.
async fn next(client: &mut Client, id: u64) -> (String, Bytes) {
    let event = client.recv_event().await;
    assert_eq!(event.subscription_id, id);
    match event.body {
        Some(pb::event::Body::Change(change)) => {
            let key = columns(&change.key)["id"].clone();
            (format!("{:?} {key}", change.kind()), event.cursor)
        }
        Some(pb::event::Body::Ready(_)) => ("ready".into(), event.cursor),
        other => panic!("unexpected {other:?}"),
    }
}

/// Events until and with Ready: their (kind, id), and Ready's cursor.
async fn until_ready(client: &mut Client, id: u64) -> (Vec<String>, Bytes) {
    let mut seen = Vec::new();
    loop {
        let (what, cursor) = next(client, id).await;
        if what == "ready" {
            return (seen, cursor);
        }
        seen.push(what);
    }
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_nothing_lost_or_doubled() {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(ORDERS).await;
    db.execute("INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
        .await;
    let mut first = Client::connect(server.local_addr()).await;
    expect_subscribed(first.request(table_feed(1, "public.orders", true)).await);
    let (initial, _) = until_ready(&mut first, 1).await;
    assert_eq!(initial.len(), 2);
    db.execute("INSERT INTO orders VALUES (3, 'c')").await;
    db.execute("UPDATE orders SET item = 'z' WHERE id = 1")
        .await;
    db.execute("DELETE FROM orders WHERE id = 2").await;
    let (insert, _) = next(&mut first, 1).await;
    let (update, cursor) = next(&mut first, 1).await;
    assert_eq!([insert, update], ["Insert 3", "Update 1"]);
    first.close().await; // the delete is lost with the connection
    db.execute("INSERT INTO orders VALUES (4, 'd')").await;
    db.execute("UPDATE orders SET item = 'y' WHERE id = 3")
        .await;

    let mut again = Client::connect(server.local_addr()).await;
    expect_subscribed(again.request(resume(2, "public.orders", &cursor)).await);
    let (caught_up, _) = until_ready(&mut again, 2).await;
    assert_eq!(caught_up, ["Delete 2", "Insert 4", "Update 3"]);
    db.execute("INSERT INTO orders VALUES (5, 'e')").await;
    assert_eq!(next(&mut again, 2).await.0, "Insert 5");
    again.barrier().await; // each change once
    db.drop_db().await;
}

#[tokio::test]
async fn a_cursor_resumes_on_another_node_and_after_a_restart() {
    let db = TestDb::new().await;
    let node_a = start_with(config_for(&db)).await;
    let node_b = start_with(config_for(&db)).await;
    wait_connected(node_a.local_addr()).await;
    wait_connected(node_b.local_addr()).await;
    db.execute(ORDERS).await;
    let mut on_a = Client::connect(node_a.local_addr()).await;
    expect_subscribed(on_a.request(table_feed(1, "public.orders", true)).await);
    let (_, ready) = until_ready(&mut on_a, 1).await;
    db.execute("INSERT INTO orders VALUES (1, 'a')").await;
    db.execute("INSERT INTO orders VALUES (2, 'b')").await;
    let (_, after_one) = next(&mut on_a, 1).await;
    drop(on_a);

    // Node B, from node A's cursors: Ready's (before both) and the first change's.
    let mut on_b = Client::connect(node_b.local_addr()).await;
    expect_subscribed(on_b.request(resume(1, "public.orders", &ready)).await);
    assert_eq!(until_ready(&mut on_b, 1).await.0, ["Insert 1", "Insert 2"]);
    expect_subscribed(on_b.request(resume(2, "public.orders", &after_one)).await);
    let (caught_up, last) = until_ready(&mut on_b, 2).await;
    assert_eq!(caught_up, ["Insert 2"]);
    drop(on_b);
    node_a.shutdown().await.expect("a stopped");
    node_b.shutdown().await.expect("b stopped");

    // No node runs while these commit; a new one serves the same cursor.
    db.execute("INSERT INTO orders VALUES (3, 'c')").await;
    db.execute("DELETE FROM orders WHERE id = 1").await;
    let node_c = start_with(config_for(&db)).await;
    wait_connected(node_c.local_addr()).await;
    let mut on_c = Client::connect(node_c.local_addr()).await;
    expect_subscribed(on_c.request(resume(1, "public.orders", &last)).await);
    assert_eq!(until_ready(&mut on_c, 1).await.0, ["Insert 3", "Delete 1"]);
    drop(on_c);
    node_c.shutdown().await.expect("c stopped");
    db.drop_db().await;
}

#[tokio::test]
async fn a_transaction_that_took_a_lower_log_id_and_committed_later_is_not_missed() {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    expect_subscribed(client.request(table_feed(1, "public.orders", true)).await);
    until_ready(&mut client, 1).await;

    let mut long = db.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders VALUES (100, 'long')")
        .execute(&mut *long)
        .await
        .expect("insert");
    db.execute("INSERT INTO orders VALUES (101, 'short')").await;
    let (short, cursor) = next(&mut client, 1).await;
    assert_eq!(short, "Insert 101");
    drop(client);
    long.commit().await.expect("commit"); // a lower log id than 101's, committed after it
    let mut rolled_back = db.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO orders VALUES (102, 'never')")
        .execute(&mut *rolled_back)
        .await
        .expect("insert");
    rolled_back.rollback().await.expect("rollback");

    let mut again = Client::connect(server.local_addr()).await;
    expect_subscribed(again.request(resume(1, "public.orders", &cursor)).await);
    assert_eq!(until_ready(&mut again, 1).await.0, ["Insert 100"]);
    again.barrier().await;
    db.drop_db().await;
}

#[tokio::test]
async fn positions_that_cannot_resume_answer_resume_unavailable_and_the_connection_serves_on() {
    let db = TestDb::new().await;
    let mut config = config_for(&db);
    config.changefeed.retention = Duration::ZERO;
    config.changefeed.prune_interval = Duration::from_millis(50);
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute(ORDERS).await;
    let mut client = Client::connect(server.local_addr()).await;
    expect_subscribed(client.request(table_feed(1, "public.orders", true)).await);
    let (_, ready) = until_ready(&mut client, 1).await;
    let topic_cursor = client.publish("t", b"x").await.cursor;

    let refused = [
        (resume(2, "public.other", &ready), "another table"),
        (resume(2, "public.orders", &topic_cursor), "topic"),
        (
            resume(2, "public.orders", &Bytes::from_static(b"\x02t\x00")),
            "cannot be read",
        ),
    ];
    for (command, why) in refused {
        let error = client
            .expect_error(command, ErrorCode::ResumeUnavailable)
            .await;
        assert!(error.message.contains(why), "{why}: {}", error.message);
    }

    // A change after the cursor is pruned (retention 0): the position is gone.
    db.execute("INSERT INTO orders VALUES (1, 'a')").await;
    assert_eq!(next(&mut client, 1).await.0, "Insert 1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM feedgate.changes")
            .fetch_one(&db.pool)
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = client
        .expect_error(
            resume(2, "public.orders", &ready),
            ErrorCode::ResumeUnavailable,
        )
        .await;
    assert!(error.message.contains("pruned"), "{}", error.message);
    client.barrier().await;
    db.drop_db().await;
}
