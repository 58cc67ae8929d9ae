//! The `watch` setting against a real database: a configured table that cannot be watched does
//! not stop the server, and a later subscription to it is told the real cause (issue 13).

mod support;

use support::db::{config_for, table_feed, wait_connected, TestDb};
use support::*;

#[tokio::test]
async fn a_configured_table_that_cannot_be_watched_tells_its_subscribers_why() {
    let db = TestDb::new().await;
    db.execute(
        "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int);
         CREATE TABLE orders (id int PRIMARY KEY);
         CREATE VIEW orders_view AS SELECT * FROM orders;",
    )
    .await;
    let mut config = config_for(&db);
    config.watch = vec![
        "public.pgbench_history".into(),
        "orders_view".into(),
        "not_yet".into(),
        "orders".into(),
    ];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;

    // However the subscriber spells it, the table is matched to the configured one.
    for name in ["public.pgbench_history", "pgbench_history"] {
        let err = client
            .expect_error(table_feed(1, name, true), ErrorCode::NotFound)
            .await;
        assert!(
            err.message.starts_with(&format!(
                "table {name} is not watched: the `watch` setting names it"
            )),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("it has no primary key"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("SELECT feedgate.watch('public.pgbench_history')"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("--watch"), "{}", err.message);
        assert!(!err.retryable);
        assert_eq!(err.details["table"], name);
        assert_eq!(err.details["reason"], "no_primary_key");
        assert_eq!(err.details["watch"], "public.pgbench_history");
    }

    let err = client
        .expect_error(table_feed(1, "orders_view", false), ErrorCode::NotFound)
        .await;
    assert_eq!(err.details["reason"], "not_a_table", "{}", err.message);
    assert!(err.message.contains("is not a table"), "{}", err.message);

    let err = client
        .expect_error(table_feed(1, "not_yet", false), ErrorCode::NotFound)
        .await;
    assert_eq!(err.details["reason"], "no_such_table", "{}", err.message);

    // The refusals did not keep the good table from being watched.
    client
        .subscribed_then_ready(table_feed(2, "orders", false))
        .await;

    // Once the operator fixes the table and watches it, subscriptions work.
    db.execute(
        "ALTER TABLE pgbench_history ADD COLUMN id serial PRIMARY KEY;
         SELECT feedgate.watch('public.pgbench_history');",
    )
    .await;
    client
        .subscribed_then_ready(table_feed(3, "pgbench_history", false))
        .await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
