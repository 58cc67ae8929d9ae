//! Squashing (`min_interval_ms`) against real sources: a change or message after a quiet interval
//! comes at once; those within the interval after it come together when it ends, one per row
//! (table) or key (topic), collapsed as docs/changefeeds.md says, each batch's events but the
//! last marked `more`; a batch's changes applied to a strict client view keep it exact; a
//! resume from a batch's last cursor neither misses nor repeats a change; and history replayed
//! through a private consumer (Kafka, RabbitMQ streams) is squashed like live messages.

mod support;

use bytes::Bytes;
use feedgate::protocol::pb;
use pb::value::Kind;
use support::db::{columns, config_for, wait_connected, TestDb, View};
use support::*;

/// Long enough that every write of a test lands in the window its first change opened.
const WINDOW_MS: u32 = 1500;

fn group_one() -> pb::Filter {
    pb::Filter {
        node: Some(pb::filter::Node::Compare(pb::Comparison {
            operand: Some(pb::Operand {
                of: Some(pb::operand::Of::Column("grp".into())),
            }),
            op: pb::CompareOp::Eq as i32,
            value: Some(pb::Value {
                kind: Some(Kind::Int(1)),
            }),
        })),
    }
}

fn items_feed(id: u64, include_initial: bool, squash_ms: u32, cursor: &Bytes) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id: id,
        source: Some(pb::subscribe::Source::Table(pb::TableFeed {
            table: "items".into(),
            include_initial,
            filter: Some(group_one()),
            min_interval_ms: squash_ms,
            ..Default::default()
        })),
        resume_from: cursor.clone(),
    })
}

/// "KIND id" of a change, with its `more` flag: "UPDATE 1 more".
fn said(event: &pb::Event) -> String {
    let Some(pb::event::Body::Change(change)) = &event.body else {
        panic!("expected a change, got {event:?}");
    };
    let kind = change
        .kind()
        .as_str_name()
        .trim_start_matches("CHANGE_KIND_");
    let id = &columns(&change.key)["id"];
    match event.more {
        true => format!("{kind} {id} more"),
        false => format!("{kind} {id}"),
    }
}

/// Reads the subscription's initial rows into a view until `Ready`; returns its cursor.
async fn snapshot_into(client: &mut Client, view: &mut View) -> Bytes {
    loop {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => view.apply(&change).expect("exact"),
            Some(pb::event::Body::Ready(_)) => return event.cursor,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The rows of group 1 now, as a fresh subscription's snapshot gives them.
async fn group_one_rows(addr: std::net::SocketAddr) -> View {
    let mut client = Client::connect(addr).await;
    let mut view = View::default();
    client.send(items_feed(99, true, 0, &Bytes::new())).await;
    let _ = client.recv_response().await;
    snapshot_into(&mut client, &mut view).await;
    view
}

async fn start_items() -> (TestDb, feedgate::app::Server) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, status text NOT NULL);
         INSERT INTO items SELECT g, CASE WHEN g <= 10 THEN 1 ELSE 2 END, 'old'
           FROM generate_series(1, 20) g;
         SELECT feedgate.watch('items');",
    )
    .await;
    (db, server)
}

#[tokio::test]
async fn a_squashed_table_feed_collapses_each_rows_changes_and_resumes_from_a_batch_exactly() {
    let (db, server) = start_items().await;
    let addr = server.local_addr();
    let mut squashed = Client::connect(addr).await;
    let mut plain = Client::connect(addr).await;
    let mut view = View::default();
    let mut plain_view = View::default();
    squashed
        .send(items_feed(1, true, WINDOW_MS, &Bytes::new()))
        .await;
    let _ = squashed.recv_response().await;
    snapshot_into(&mut squashed, &mut view).await;
    plain.send(items_feed(1, true, 0, &Bytes::new())).await;
    let _ = plain.recv_response().await;
    snapshot_into(&mut plain, &mut plain_view).await;
    // One transaction each, in this order.
    for sql in [
        "UPDATE items SET status = 'a' WHERE id = 1", // at once: the window was idle
        "UPDATE items SET status = 'b' WHERE id = 1",
        "UPDATE items SET status = 'c' WHERE id = 1", // 1: one UPDATE, old row 'a'
        "INSERT INTO items VALUES (100, 1, 'new')",
        "UPDATE items SET status = 'newer' WHERE id = 100", // 100: INSERT of 'newer'
        "INSERT INTO items VALUES (101, 1, 'x')",
        "DELETE FROM items WHERE id = 101", // 101: nothing
        "UPDATE items SET status = 'y' WHERE id = 2",
        "DELETE FROM items WHERE id = 2", // 2: DELETE of the row as it was ('old')
        "DELETE FROM items WHERE id = 3",
        "INSERT INTO items VALUES (3, 1, 'again')", // 3: UPDATE 'old' -> 'again'
        "UPDATE items SET grp = 2 WHERE id = 4",    // out of the filter...
        "UPDATE items SET grp = 1, status = 'back' WHERE id = 4", // ...and in: UPDATE
        "UPDATE items SET status = 'elsewhere' WHERE id = 11", // another group: nothing
    ] {
        db.execute(sql).await;
    }
    let mut events = Vec::new();
    let mut got = Vec::new();
    let mut after_first = None;
    while got
        .last()
        .is_none_or(|last: &String| last.ends_with("more") || got.len() < 2)
    {
        let event = squashed.recv_event().await;
        let Some(pb::event::Body::Change(change)) = &event.body else {
            panic!("expected a change, got {event:?}");
        };
        view.apply(change)
            .expect("a squashed change keeps the view exact");
        after_first.get_or_insert_with(|| view.rows.clone());
        got.push(said(&event));
        events.push(event);
    }
    assert_eq!(
        got,
        [
            "UPDATE 1",
            "UPDATE 1 more",
            "INSERT 100 more",
            "DELETE 2 more",
            "UPDATE 3 more",
            "UPDATE 4",
        ]
    );
    squashed.barrier().await; // and nothing else
    for _ in 0..13 {
        let event = plain.recv_event().await;
        let Some(pb::event::Body::Change(change)) = &event.body else {
            panic!("expected a change, got {event:?}");
        };
        plain_view.apply(change).expect("exact");
        assert!(!event.more, "unsquashed events are not batched");
    }
    plain.barrier().await;
    let table = group_one_rows(addr).await;
    assert_eq!(view.rows, table.rows, "squashed view = the table");
    assert_eq!(plain_view.rows, table.rows, "plain view = the table");

    // A resume from the lone first event's cursor gets every change after it, once, which
    // applied to the view as it was then gives the table.
    let mut resumed = View {
        rows: after_first.expect("a first event"),
        ..View::default()
    };
    let mut client = Client::connect(addr).await;
    client
        .send(items_feed(2, false, WINDOW_MS, &events[0].cursor))
        .await;
    let _ = client.recv_response().await;
    let mut caught_up = Vec::new();
    loop {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                resumed.apply(&change).expect("exact after a resume");
                let kind = change
                    .kind()
                    .as_str_name()
                    .trim_start_matches("CHANGE_KIND_");
                caught_up.push(format!("{kind} {}", columns(&change.key)["id"]));
            }
            Some(pb::event::Body::Ready(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        caught_up,
        [
            "UPDATE 1",
            "UPDATE 1",
            "INSERT 100",
            "UPDATE 100",
            "INSERT 101",
            "DELETE 101",
            "UPDATE 2",
            "DELETE 2",
            "DELETE 3",
            "INSERT 3",
            "DELETE 4",
            "INSERT 4",
        ],
        "a resume's catch-up is not squashed"
    );
    assert_eq!(resumed.rows, table.rows);
    client.barrier().await;
    // From the batch's last cursor: nothing is owed.
    let end = &events.last().expect("a batch").cursor;
    let mut last = Client::connect(addr).await;
    last.subscribed_then_ready(items_feed(3, false, WINDOW_MS, end))
        .await;
    last.barrier().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

fn squashed_topic(id: u64, topic: &str) -> Command {
    squashed_topic_from(id, topic, pb::StartPosition::Latest)
}

fn squashed_topic_from(id: u64, topic: &str, start: pb::StartPosition) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id: id,
        source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
            topic: topic.into(),
            start: start as i32,
            min_interval_ms: WINDOW_MS,
            ..Default::default()
        })),
        resume_from: Bytes::new(),
    })
}

/// The messages of the squash tests: (key, payload); an empty key is none.
const KEYED: [(&str, &str); 6] = [
    ("k1", "1"),
    ("k1", "2"),
    ("k2", "3"),
    ("", "4"),
    ("k1", "5"),
    ("", "6"),
];

/// Reads messages (skipping `Ready`) until a lone first one and one whole batch are in: their
/// payloads, a batch's events but the last marked "more".
async fn first_and_batch(subscriber: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < 2
        || got
            .last()
            .is_some_and(|last: &String| last.ends_with("more"))
    {
        let event = subscriber.recv_event().await;
        let message = match &event.body {
            Some(pb::event::Body::Message(message)) => message,
            Some(pb::event::Body::Ready(_)) => continue,
            _ => panic!("expected a message, got {event:?}"),
        };
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        got.push(match event.more {
            true => format!("{payload} more"),
            false => payload,
        });
    }
    got
}

/// Publishes (key, payload) pairs to `topic`; an empty key is none.
async fn publish_keyed(client: &mut Client, topic: &str, messages: &[(&str, &str)]) {
    for (key, payload) in messages {
        let response = client
            .request(Command::Publish(pb::Publish {
                topic: topic.into(),
                payload: Bytes::from(payload.to_string()),
                key: key.to_string(),
                ..Default::default()
            }))
            .await;
        assert!(
            matches!(response.result, Some(pb::response::Result::Published(_))),
            "{response:?}"
        );
    }
}

/// The first message comes at once; the rest of the window comes as one batch, one message per
/// key (the latest), in the order of their latest, messages without a key all kept.
async fn topic_squash_holds(addr: std::net::SocketAddr, topic: &str) {
    let mut subscriber = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    subscriber
        .subscribed_then_ready(squashed_topic(1, topic))
        .await;
    publish_keyed(&mut publisher, topic, &KEYED).await;
    let got = first_and_batch(&mut subscriber).await;
    assert_eq!(got, ["1", "3 more", "4 more", "5 more", "6"], "on {topic}");
    subscriber.barrier().await;
}

/// The same for a subscriber that replays the topic from its start through a private consumer
/// (Kafka, RabbitMQ streams): the history is squashed like live messages.
async fn replayed_squash_holds(addr: std::net::SocketAddr, topic: &str) {
    let mut publisher = Client::connect(addr).await;
    publish_keyed(&mut publisher, topic, &KEYED).await;
    let mut subscriber = Client::connect(addr).await;
    let earliest = squashed_topic_from(1, topic, pb::StartPosition::Earliest);
    let response = subscriber.request(earliest).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let got = first_and_batch(&mut subscriber).await;
    assert_eq!(
        got,
        ["1", "3 more", "4 more", "5 more", "6"],
        "replaying {topic}"
    );
}

#[tokio::test]
async fn squashed_topic_feeds_keep_the_latest_per_key_and_every_unkeyed_message() {
    let exchange = support::rabbit::exchange();
    let server = start_with(support::rabbit::with_kafka_config(&exchange)).await;
    let addr = server.local_addr();
    support::rabbit::wait_rabbit_connected(addr).await;
    topic_squash_holds(addr, "squash.memory").await;
    let bootstrap = support::kafka::bootstrap();
    let kafka_topic = support::kafka::topic();
    support::kafka::create_topic(&bootstrap, &kafka_topic, 1).await;
    topic_squash_holds(addr, &kafka_topic).await;
    topic_squash_holds(addr, "rabbit.squash").await;
    let kafka_replayed = support::kafka::topic();
    support::kafka::create_topic(&bootstrap, &kafka_replayed, 1).await;
    replayed_squash_holds(addr, &kafka_replayed).await;
    replayed_squash_holds(addr, "kept.squash").await;
    support::rabbit::delete_streams(&exchange, &["kept.squash"]).await;
    let mut client = Client::connect(addr).await;
    let mut too_long = squashed_topic(2, "squash.memory");
    if let Command::Subscribe(pb::Subscribe {
        source: Some(pb::subscribe::Source::Topic(feed)),
        ..
    }) = &mut too_long
    {
        feed.min_interval_ms = 60_001;
    }
    let error = client.expect_error(too_long, ErrorCode::Validation).await;
    assert!(
        error.message.contains("min_interval_ms"),
        "{}",
        error.message
    );
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
    support::kafka::delete_topic(&bootstrap, &kafka_topic).await;
    support::kafka::delete_topic(&bootstrap, &kafka_replayed).await;
}
