//! `feedgate::testing` as an application's own test uses it: the server started in the test's
//! process with a database, a table watched, a change the test makes arriving, and a filtered
//! subscription that does not see another tenant's row. Only the database comes from
//! `tests/support`; the rest is the shipped module (and is the Rust example of
//! docs/testing-with-feedgate.md), and its assertions failing with what arrived instead.

mod support;

use feedgate::protocol::pb;
use feedgate::protocol::pb::value::Kind;
use feedgate::testing::{self, Client};
use support::db::TestDb;

/// A server on a fresh database whose `orders` table is watched.
async fn server_with_orders() -> (feedgate::app::Server, TestDb) {
    let db = TestDb::new().await;
    db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, tenant text NOT NULL, item text)")
        .await;
    let mut config = testing::test_config();
    config.database_url = Some(db.url.clone());
    config.changefeed.pool_size = 2;
    let server = testing::start_with(config).await;
    testing::wait_for_database(server.local_addr()).await;
    db.execute("SELECT feedgate.watch('public.orders')").await;
    (server, db)
}

#[tokio::test]
async fn an_inserted_row_reaches_a_table_subscriber() {
    let (server, db) = server_with_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_table(1, "public.orders").await;

    db.execute("INSERT INTO orders VALUES (7, 'a', 'tea')")
        .await;

    let change = client.recv_change(1).await;
    assert_eq!(change.kind(), pb::ChangeKind::Insert);
    assert_eq!(testing::column(&change.new_row, "id").as_deref(), Some("7"));
    assert_eq!(
        testing::column(&change.new_row, "item").as_deref(),
        Some("tea")
    );
    client.barrier().await; // and nothing else
    client.close().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_filtered_subscription_does_not_see_another_tenants_row() {
    let (server, db) = server_with_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    let tenant_a = testing::column_equals("tenant", Kind::Text("a".into()));
    client
        .subscribed_then_ready(testing::filtered_table_feed(1, "public.orders", tenant_a))
        .await;

    // Tenant b's row is committed first: were it delivered, it would come first.
    db.execute("INSERT INTO orders VALUES (1, 'b', 'coffee')")
        .await;
    db.execute("INSERT INTO orders VALUES (2, 'a', 'tea')")
        .await;

    let change = client.recv_change(1).await;
    assert_eq!(
        testing::column(&change.new_row, "tenant").as_deref(),
        Some("a")
    );
    assert_eq!(testing::column(&change.new_row, "id").as_deref(), Some("2"));
    client.close().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
#[should_panic(expected = "expected a row change, got Some(Message(TopicMessage { topic: \"news\"")]
async fn recv_change_fails_naming_what_arrived_instead() {
    let server = testing::start().await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, "news").await;
    let mut publisher = Client::connect(server.local_addr()).await;
    publisher.publish("news", b"not a row").await;
    client.recv_change(1).await;
}

#[tokio::test]
#[should_panic(expected = "expected a response, got Event(")]
async fn barrier_fails_when_an_event_arrived_first() {
    let server = testing::start().await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, "news").await;
    let mut publisher = Client::connect(server.local_addr()).await;
    publisher.publish("news", b"unexpected").await;
    client.barrier().await;
}
