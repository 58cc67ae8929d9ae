//! Clients' row filters on table feeds (`TableFeed.filter`), against a real PostgreSQL: the
//! snapshot holds exactly the matching rows, changes arrive as seen through the filter (into it
//! as INSERT, out of it as DELETE, within it as UPDATE, outside it not at all), a resume keeps
//! the filter, and a filter that is malformed or does not fit the table answers VALIDATION
//! naming the part at fault while the connection stays usable.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use feedgate::protocol::pb;
use pb::value::Kind;
use support::db::{columns, config_for, wait_connected, TestDb};
use support::*;

fn col(name: &str) -> Option<pb::Operand> {
    Some(pb::Operand {
        of: Some(pb::operand::Of::Column(name.into())),
    })
}

fn node(node: pb::filter::Node) -> pb::Filter {
    pb::Filter { node: Some(node) }
}

fn compare(column: &str, op: pb::CompareOp, value: Kind) -> pb::Filter {
    node(pb::filter::Node::Compare(pb::Comparison {
        operand: col(column),
        op: op as i32,
        value: Some(pb::Value { kind: Some(value) }),
    }))
}

fn one_of(column: &str, values: Vec<Kind>) -> pb::Filter {
    node(pb::filter::Node::OneOf(pb::OneOf {
        operand: col(column),
        values: values
            .into_iter()
            .map(|kind| pb::Value { kind: Some(kind) })
            .collect(),
    }))
}

fn all(items: Vec<pb::Filter>) -> pb::Filter {
    node(pb::filter::Node::AllOf(pb::Filters { items }))
}

fn filtered(id: u64, include_initial: bool, filter: pb::Filter, cursor: &Bytes) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id: id,
        source: Some(pb::subscribe::Source::Table(pb::TableFeed {
            table: "orders".into(),
            include_initial,
            filter: Some(filter),
            ..Default::default()
        })),
        resume_from: cursor.clone(),
    })
}

/// Open orders of accounts 1 and 2 over 10.
fn open_orders() -> pb::Filter {
    all(vec![
        compare("status", pb::CompareOp::Eq, Kind::Text("open".into())),
        one_of("account", vec![Kind::Int(1), Kind::Int(2)]),
        compare("amount", pb::CompareOp::Gt, Kind::Numeric("10".into())),
    ])
}

/// What a change says: kind and id, e.g. "INSERT 7".
fn said(event: &pb::Event) -> String {
    match &event.body {
        Some(pb::event::Body::Change(change)) => {
            let row = if change.kind() == pb::ChangeKind::Delete {
                &change.old_row
            } else {
                &change.new_row
            };
            let kind = change
                .kind()
                .as_str_name()
                .trim_start_matches("CHANGE_KIND_");
            format!("{kind} {}", columns(row)["id"])
        }
        Some(pb::event::Body::Ready(_)) => "READY".into(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn start_orders() -> (TestDb, feedgate::app::Server) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, account int NOT NULL, status text NOT NULL,
                              amount numeric NOT NULL);
         INSERT INTO orders SELECT g, g % 4, CASE WHEN g % 3 = 0 THEN 'closed' ELSE 'open' END,
                                   g * 1.5
           FROM generate_series(1, 60) g;
         SELECT feedgate.watch('orders');",
    )
    .await;
    (db, server)
}

#[tokio::test]
async fn a_filtered_feed_gets_exactly_the_matching_rows_and_changes_through_the_filter() {
    let (db, server) = start_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(filtered(1, true, open_orders(), &Bytes::new()))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let mut snapshot = Vec::new();
    loop {
        let event = client.recv_event().await;
        let said = said(&event);
        if said == "READY" {
            break;
        }
        snapshot.push(said);
    }
    let want: Vec<(i32,)> = sqlx::query_as(
        "SELECT id FROM orders WHERE status = 'open' AND account IN (1, 2) AND amount > 10
          ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("select");
    let mut got: Vec<String> = snapshot;
    got.sort_by_key(|s| s[8..].parse::<i32>().expect("an id"));
    assert_eq!(
        got,
        want.iter()
            .map(|(id,)| format!("INITIAL {id}"))
            .collect::<Vec<_>>(),
        "the snapshot is exactly the matching rows"
    );
    assert!(!want.is_empty());

    // id 9: closed, account 1, 13.5: moves in. id 10: open, account 2, 15: stays in (update).
    // id 13: open, account 1, 19.5: moves out (closed). id 3: not matching, deleted: nothing.
    // id 61: a matching insert; id 62 a non-matching one; id 10 deleted while matching.
    for sql in [
        "UPDATE orders SET status = 'open' WHERE id = 9",
        "UPDATE orders SET amount = 16 WHERE id = 10",
        "UPDATE orders SET status = 'closed' WHERE id = 13",
        "DELETE FROM orders WHERE id = 3",
        "INSERT INTO orders VALUES (61, 2, 'open', 100)",
        "INSERT INTO orders VALUES (62, 3, 'open', 100)",
        "UPDATE orders SET amount = 1 WHERE id = 62",
        "DELETE FROM orders WHERE id = 10",
        "INSERT INTO orders VALUES (63, 1, 'open', 11)",
    ] {
        db.execute(sql).await;
    }
    let mut changes = Vec::new();
    while changes.last().map(String::as_str) != Some("INSERT 63") {
        changes.push(said(&client.recv_event().await));
    }
    assert_eq!(
        changes,
        [
            "INSERT 9",
            "UPDATE 10",
            "DELETE 13",
            "INSERT 61",
            "DELETE 10",
            "INSERT 63"
        ]
    );
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_filtered_feed_resumes_through_the_same_filter() {
    let (db, server) = start_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    client
        .request(filtered(1, false, open_orders(), &Bytes::new()))
        .await;
    let ready = client.recv_event().await;
    assert_eq!(said(&ready), "READY");
    db.execute("UPDATE orders SET status = 'open' WHERE id = 9")
        .await;
    let moved_in = client.recv_event().await;
    assert_eq!(said(&moved_in), "INSERT 9");
    drop(client);
    // While away: a change outside the filter, one into it, one out of it.
    db.execute("UPDATE orders SET amount = 2 WHERE id = 4")
        .await;
    db.execute("UPDATE orders SET status = 'open', amount = 50 WHERE id = 21")
        .await;
    db.execute("UPDATE orders SET status = 'closed' WHERE id = 9")
        .await;
    let mut client = Client::connect(server.local_addr()).await;
    client
        .request(filtered(1, false, open_orders(), &moved_in.cursor))
        .await;
    let mut resumed = Vec::new();
    loop {
        let said = said(&client.recv_event().await);
        if said == "READY" {
            break;
        }
        resumed.push(said);
    }
    assert_eq!(resumed, ["INSERT 21", "DELETE 9"]);
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_filter_that_is_malformed_or_does_not_fit_the_table_is_refused_by_name() {
    let (db, server) = start_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    let none = Bytes::new();
    let mut deep = compare("id", pb::CompareOp::Eq, Kind::Int(1));
    for _ in 0..20 {
        deep = node(pb::filter::Node::Negate(Box::new(deep)));
    }
    let cases: Vec<(pb::Filter, &str)> = vec![
        (
            compare("nope", pb::CompareOp::Eq, Kind::Int(1)),
            "column nope",
        ),
        (
            compare("account", pb::CompareOp::Eq, Kind::Text("one".into())),
            "column account",
        ),
        (
            compare(
                "status",
                pb::CompareOp::Unspecified,
                Kind::Text("open".into()),
            ),
            "filter.compare",
        ),
        (all(vec![pb::Filter { node: None }]), "filter.all_of[0]"),
        (deep, "deeper than 16"),
        (
            one_of("id", (0..1001).map(Kind::Int).collect()),
            "at most 1000",
        ),
        (
            compare("status", pb::CompareOp::Eq, Kind::Null(0)),
            "is_null",
        ),
    ];
    for (filter, names) in cases {
        let error = client
            .expect_error(filtered(1, true, filter, &none), ErrorCode::Validation)
            .await;
        assert!(error.message.contains(names), "{names}: {}", error.message);
        // The table as named, or as resolved once the name was looked up.
        let table = error.details.get("table").map(String::as_str);
        assert!(
            matches!(table, Some("orders" | "public.orders")),
            "{error:?}"
        );
    }
    // Nothing was subscribed, and the connection works: the same id subscribes now.
    let response = client
        .request(filtered(1, false, open_orders(), &none))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    assert_eq!(said(&client.recv_event().await), "READY");
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

fn on(of: pb::operand::Of, value: Kind) -> pb::Filter {
    node(pb::filter::Node::Compare(pb::Comparison {
        operand: Some(pb::Operand { of: Some(of) }),
        op: pb::CompareOp::Eq as i32,
        value: Some(pb::Value { kind: Some(value) }),
    }))
}

fn topic_feed(id: u64, topic: &str, start: pb::StartPosition, filter: pb::Filter) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id: id,
        source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
            topic: topic.into(),
            start: start as i32,
            filter: Some(filter),
            ..Default::default()
        })),
        resume_from: Bytes::new(),
    })
}

/// The ticks the topic tests publish: (number, commodity, regions, key, header region).
const TICKS: [(u32, &str, &str, &str, &str); 6] = [
    (1, "oil", r#"["north_sea"]"#, "k1", "gulf"),
    (2, "gas", r#"["north_sea"]"#, "k2", "gulf"),
    (3, "oil", r#"["gulf","north_sea"]"#, "k1", "north"),
    (4, "oil", r#"["gulf"]"#, "k2", "north"),
    (5, "oil", r#""north_sea""#, "k3", "gulf"),
    (6, "coal", r#"[]"#, "k1", "north"),
];

async fn publish_ticks(publisher: &mut Client, topic: &str) {
    for (n, commodity, regions, key, region) in TICKS {
        let payload = format!(r#"{{"n":{n},"commodity":"{commodity}","regions":{regions}}}"#);
        let response = publisher
            .request(Command::Publish(pb::Publish {
                topic: topic.into(),
                payload: Bytes::from(payload),
                key: key.into(),
                headers: [("region".to_owned(), region.to_owned())].into(),
                ..Default::default()
            }))
            .await;
        assert!(
            matches!(response.result, Some(pb::response::Result::Published(_))),
            "{response:?}"
        );
    }
}

/// The three filters the topic tests subscribe with, by subscription id, and the ticks each
/// must get.
fn tick_filters() -> Vec<(u64, pb::Filter, Vec<u32>)> {
    use pb::operand::Of;
    vec![
        (
            1,
            all(vec![
                on(Of::Path("commodity".into()), Kind::Text("oil".into())),
                on(Of::Path("regions".into()), Kind::Text("north_sea".into())),
            ]),
            vec![1, 3, 5],
        ),
        (2, on(Of::Key(true), Kind::Text("k1".into())), vec![1, 3, 6]),
        (
            3,
            node(pb::filter::Node::Negate(Box::new(on(
                Of::Header("region".into()),
                Kind::Text("gulf".into()),
            )))),
            vec![3, 4, 6],
        ),
    ]
}

/// Reads until `answers` responses (each `Subscribed`), `messages` messages and `readies`
/// `Ready` events have come; adds the messages' numbers, by subscription id, to `got`.
async fn read_ticks(
    client: &mut Client,
    (mut answers, mut messages, mut readies): (usize, usize, usize),
    got: &mut BTreeMap<u64, Vec<u32>>,
) {
    while answers > 0 || messages > 0 || readies > 0 {
        let Some(event) = client.recv_event_or_subscribed().await else {
            answers -= 1;
            continue;
        };
        let Some(pb::event::Body::Message(message)) = event.body else {
            assert!(
                matches!(event.body, Some(pb::event::Body::Ready(_))),
                "{event:?}"
            );
            readies -= 1;
            continue;
        };
        let json: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        let n = json["n"].as_u64().expect("n") as u32;
        got.entry(event.subscription_id).or_default().push(n);
        messages -= 1;
    }
}

/// Subscribes with the three filters on `topic` (from `start`), publishes the ticks (before
/// subscribing when `start` is EARLIEST), and checks each subscription got exactly its ticks.
async fn topic_filters_hold(addr: std::net::SocketAddr, topic: &str, start: pb::StartPosition) {
    let mut client = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    if start == pb::StartPosition::Earliest {
        publish_ticks(&mut publisher, topic).await;
    }
    let filters = tick_filters();
    for (id, filter, _) in &filters {
        client
            .send(topic_feed(*id, topic, start, filter.clone()))
            .await;
    }
    let total: usize = filters.iter().map(|(_, _, ticks)| ticks.len()).sum();
    let mut got = BTreeMap::new();
    let subscriptions = filters.len();
    if start == pb::StartPosition::Earliest {
        read_ticks(&mut client, (subscriptions, total, subscriptions), &mut got).await;
    } else {
        read_ticks(&mut client, (subscriptions, 0, subscriptions), &mut got).await;
        publish_ticks(&mut publisher, topic).await;
        read_ticks(&mut client, (0, total, 0), &mut got).await;
    }
    for (id, _, want) in &filters {
        assert_eq!(
            got.get(id),
            Some(want),
            "subscription {id} ({start:?}) on {topic}"
        );
    }
    client.barrier().await;
}

#[tokio::test]
async fn in_process_topic_filters_read_payload_paths_lists_keys_and_headers() {
    let server = start().await;
    let addr = server.local_addr();
    topic_filters_hold(addr, "ticks.live", pb::StartPosition::Latest).await;
    // The kept messages replayed to an EARLIEST subscriber go through its filter too.
    topic_filters_hold(addr, "ticks.kept", pb::StartPosition::Earliest).await;
    let mut client = Client::connect(addr).await;
    let column = compare("id", pb::CompareOp::Eq, Kind::Int(1));
    let error = client
        .expect_error(
            topic_feed(1, "ticks.live", pb::StartPosition::Latest, column),
            ErrorCode::Validation,
        )
        .await;
    assert!(error.message.contains("payload path"), "{}", error.message);
    assert_eq!(
        error.details.get("topic").map(String::as_str),
        Some("ticks.live")
    );
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn kafka_and_rabbitmq_topic_filters_hold_for_shared_and_private_consumers() {
    let exchange = support::rabbit::exchange();
    let server = start_with(support::rabbit::with_kafka_config(&exchange)).await;
    let addr = server.local_addr();
    support::rabbit::wait_rabbit_connected(addr).await;
    let bootstrap = support::kafka::bootstrap();
    let kafka_topics = [support::kafka::topic(), support::kafka::topic()];
    for topic in &kafka_topics {
        support::kafka::create_topic(&bootstrap, topic, 1).await;
    }
    topic_filters_hold(addr, &kafka_topics[0], pb::StartPosition::Latest).await;
    topic_filters_hold(addr, &kafka_topics[1], pb::StartPosition::Earliest).await;
    topic_filters_hold(addr, "rabbit.ticks", pb::StartPosition::Latest).await;
    topic_filters_hold(addr, "kept.ticks", pb::StartPosition::Latest).await;
    topic_filters_hold(addr, "kept.ticks2", pb::StartPosition::Earliest).await;
    support::rabbit::delete_streams(&exchange, &["kept.ticks", "kept.ticks2"]).await;
    // Deleted once nothing consumes them (librdkafka crashes fetching a topic deleted under
    // it on tansu: docs/brokers.md).
    server.shutdown().await.expect("shutdown");
    for topic in &kafka_topics {
        support::kafka::delete_topic(&bootstrap, topic).await;
    }
}

#[tokio::test]
async fn a_projection_sends_only_the_asked_columns_and_skips_updates_of_the_others() {
    let (db, server) = start_orders().await;
    let mut client = Client::connect(server.local_addr()).await;
    let projected = |id: u64, columns: &[&str], filter: Option<pb::Filter>| {
        Command::Subscribe(pb::Subscribe {
            subscription_id: id,
            source: Some(pb::subscribe::Source::Table(pb::TableFeed {
                table: "orders".into(),
                include_initial: true,
                filter,
                columns: columns.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            })),
            resume_from: Bytes::new(),
        })
    };
    let error = client
        .expect_error(
            projected(1, &["status", "nope"], None),
            ErrorCode::Validation,
        )
        .await;
    assert!(
        error.message.contains("no column nope"),
        "{}",
        error.message
    );
    // Open orders of account 1, status only: the filter reads a column the rows do not carry.
    let account_1 = compare("account", pb::CompareOp::Eq, Kind::Int(1));
    let response = client
        .request(projected(1, &["status"], Some(account_1)))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let mut initial = 0;
    loop {
        let event = client.recv_event().await;
        let Some(pb::event::Body::Change(change)) = event.body else {
            break; // Ready
        };
        let row = columns(&change.new_row);
        assert_eq!(
            row.keys().map(String::as_str).collect::<Vec<_>>(),
            ["id", "status"],
            "the key's column and the asked ones"
        );
        initial += 1;
    }
    assert_eq!(initial, 15, "account 1 has ids 1, 5, ..., 57");
    db.execute("UPDATE orders SET amount = amount + 1 WHERE id = 5")
        .await; // not asked for
    db.execute("UPDATE orders SET status = 'x' WHERE id = 9")
        .await;
    db.execute("DELETE FROM orders WHERE id = 13").await;
    let update = client.recv_event().await;
    let Some(pb::event::Body::Change(change)) = update.body else {
        panic!("expected a change, got {update:?}");
    };
    assert_eq!(change.kind(), pb::ChangeKind::Update);
    assert_eq!(
        columns(&change.key)["id"],
        "9",
        "the amount-only update of 5 is not sent"
    );
    assert_eq!(columns(&change.new_row)["status"], "x");
    assert_eq!(columns(&change.old_row).len(), 2);
    let delete = client.recv_event().await;
    assert_eq!(said(&delete), "DELETE 13");
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
