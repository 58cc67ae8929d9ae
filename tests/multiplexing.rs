//! Several subscriptions on one connection: a big snapshot streams next to live topic messages
//! and live table changes without the connection being closed as a slow consumer, while a
//! client that really stops reading still is (against a real PostgreSQL).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use feedgate::protocol::pb;
use support::db::{config_for, table_feed, wait_connected, TestDb, View};
use support::*;
use tokio::sync::watch;
use tokio::time::Instant;

/// A fresh database and a server reading its change log.
async fn setup() -> (TestDb, feedgate::app::Server, std::net::SocketAddr) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    (db, server, addr)
}

/// A watched table `name` holding `rows` rows of about `pad` bytes each.
async fn big_table(db: &TestDb, name: &str, rows: u64, pad: usize) {
    db.execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, pad text NOT NULL);
         SELECT feedgate.watch('public.{name}');
         INSERT INTO {name} SELECT g, repeat('x', {pad}) FROM generate_series(1, {rows}) g;"
    ))
    .await;
}

async fn subscribe_table(client: &mut Client, id: u64, table: &str) {
    let response = client.request(table_feed(id, table, true)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
}

/// Publishes a numbered message to `topic` every 50 ms (20 per second) until `stop` is set;
/// returns how many were published, each acknowledged (so already fanned out).
fn ticker(
    addr: std::net::SocketAddr,
    topic: &'static str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u32> {
    ticker_every(addr, topic, Duration::from_millis(50), stop)
}

/// [`ticker`], one message every `every`.
fn ticker_every(
    addr: std::net::SocketAddr,
    topic: &'static str,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut stop = stop;
        let mut publisher = Client::connect(addr).await;
        let mut sent = 0u32;
        loop {
            tokio::select! {
                _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return sent,
                () = tokio::time::sleep(every) => {
                    publisher.publish(topic, &sent.to_be_bytes()).await;
                    sent += 1;
                }
            }
        }
    })
}

/// What one connection received, checked as it arrives: topic messages numbered without gaps,
/// and a view per table subscription that refuses anything lost, doubled or misordered.
#[derive(Default)]
struct Received {
    ticks: u32,
    views: BTreeMap<u64, View>,
}

impl Received {
    fn take(&mut self, topic_subscription: u64, message: support::Received) {
        let event = match message {
            support::Received::Event(event) => event,
            support::Received::Response(response) => {
                let Some(pb::response::Result::Subscribed(_)) = response.result else {
                    panic!("unexpected {response:?}");
                };
                return;
            }
            support::Received::Close(close) => panic!("the connection was closed: {close:?}"),
        };
        match event.body {
            Some(pb::event::Body::Message(message)) => {
                assert_eq!(event.subscription_id, topic_subscription);
                assert_eq!(&message.payload[..], &self.ticks.to_be_bytes(), "no gaps");
                self.ticks += 1;
            }
            Some(pb::event::Body::Change(change)) => {
                let view = self.views.entry(event.subscription_id).or_default();
                assert!(!view.ready || change.kind() != pb::ChangeKind::Initial);
                view.apply(&change).expect("a consistent stream");
            }
            Some(pb::event::Body::Ready(_)) => {
                self.views.entry(event.subscription_id).or_default().ready = true;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    fn all_ready(&self, tables: usize) -> bool {
        self.views.values().filter(|view| view.ready).count() == tables
    }
}

/// Stops the ticker, reads the rest of its messages (topic subscription 1) and a barrier after
/// them; asserts that every message published arrived; returns how many that was.
async fn stop_ticking(
    client: &mut Client,
    received: &mut Received,
    stop: watch::Sender<bool>,
    ticker: tokio::task::JoinHandle<u32>,
) -> u32 {
    let _ = stop.send(true);
    let sent = ticker.await.expect("ticker");
    while received.ticks < sent {
        received.take(1, client.recv().await.expect("a message"));
    }
    client.barrier().await;
    assert_eq!(received.ticks, sent);
    sent
}

/// Rows of `table` as the view keys and rows them.
async fn table_rows(db: &TestDb, table: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(&format!("SELECT id, pad FROM {table}"))
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    rows.into_iter()
        .map(|(id, pad)| {
            let key = BTreeMap::from([("id".to_string(), id.to_string())]);
            let row =
                BTreeMap::from([("id".to_string(), id.to_string()), ("pad".to_string(), pad)]);
            (format!("{key:?}"), row)
        })
        .collect()
}

/// The report's repro: one connection subscribes to a topic and then to a big table with its
/// initial rows; another publishes 20 messages a second. The client (with a fixed 64 KiB
/// receive buffer, so the loopback does not absorb the snapshot) pauses for two seconds (a
/// collector, a busy UI thread), long enough for the snapshot to fill the socket and the
/// outbound queue, then reads as fast as it can. Before the fix, the first live message that
/// found the queue full of snapshot rows closed the connection with 4008.
#[tokio::test]
async fn a_big_snapshot_next_to_live_messages_does_not_close_the_connection() {
    let (db, server, addr) = setup().await;
    big_table(&db, "big", 10_000, 4000).await;

    let mut client = Client::connect_with_receive_buffer(addr, 64 * 1024).await;
    client.subscribe_topic(1, "ticks").await;
    let started = Instant::now();
    subscribe_table(&mut client, 2, "public.big").await;
    let (stop, stopped) = watch::channel(false);
    let ticker = ticker(addr, "ticks", stopped);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut received = Received::default();
    while !received.all_ready(1) {
        received.take(1, client.recv().await.expect("a message"));
    }
    let to_ready = started.elapsed();
    let sent = stop_ticking(&mut client, &mut received, stop, ticker).await;
    assert_eq!(received.views[&2].rows.len(), 10_000);
    assert!(
        sent > 0,
        "messages were published while the snapshot streamed"
    );
    println!("10,000 rows of 4 KB and {sent} live messages; Ready after {to_ready:?}");
    drop(client);
    drop(server);
    db.drop_db().await;
}

/// A client slower than its snapshot but fast enough for its live traffic, reading about 2 MB/s
/// in short bursts (as a client in an interpreted language, or one whose application takes its
/// time with each row, does), over sockets whose buffers grow as the kernel sees fit. Its
/// snapshot must not fill the socket ahead of its live messages: before the server paced
/// snapshots by what its socket had not sent yet, the rows filled the kernel's send buffer,
/// every live message then waited in the queue behind megabytes of rows, and the queue
/// overflowed (4008) within a second or two.
#[tokio::test]
async fn a_client_slower_than_its_snapshot_keeps_up_with_its_live_messages() {
    let db = TestDb::new().await;
    let mut config = config_for(&db);
    // 200 live messages a second against a queue of 32: a client whose live messages waited
    // a sixth of a second anywhere but in the socket would be closed. Without pacing, 4 runs
    // in 4 were closed with 4008; with it, none.
    config.limits.outbound_queue = 32;
    let server = start_with(config).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    big_table(&db, "big", 6_000, 1000).await;

    let mut client = Client::connect(addr).await;
    client.subscribe_topic(1, "ticks").await;
    let started = Instant::now();
    subscribe_table(&mut client, 2, "public.big").await;
    let (stop, stopped) = watch::channel(false);
    let ticker = ticker_every(addr, "ticks", Duration::from_millis(5), stopped);

    let mut received = Received::default();
    // About 2 MB/s: a pause of 8 ms after each 16 KB read.
    let mut read = 0usize;
    while !received.all_ready(1) {
        let message = client.recv().await.expect("a message");
        if let support::Received::Event(event) = &message {
            read += prost::Message::encoded_len(event);
        }
        received.take(1, message);
        if read >= 16 * 1024 {
            read = 0;
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    }
    let to_ready = started.elapsed();
    let sent = stop_ticking(&mut client, &mut received, stop, ticker).await;
    assert_eq!(received.views[&2].rows.len(), 6_000);
    assert!(
        sent > 200,
        "messages were published while the snapshot streamed"
    );
    println!("6,000 rows of 1 KB read at about 2 MB/s and {sent} live messages; Ready after {to_ready:?}");
    drop(client);
    drop(server);
    db.drop_db().await;
}

/// Three big snapshots at once on one connection, next to live messages and to writes on the
/// same tables: every table's view ends exactly equal to the table, every message arrives, and
/// the connection stays open.
#[tokio::test]
async fn several_big_snapshots_at_once_next_to_live_writes() {
    let (db, server, addr) = setup().await;
    let tables = ["alpha", "beta", "gamma"];
    for table in tables {
        big_table(&db, table, 4_000, 4000).await;
    }

    let mut client = Client::connect_with_receive_buffer(addr, 64 * 1024).await;
    client.subscribe_topic(1, "ticks").await;
    // Pipelined: the first table's rows may arrive before the last one's Subscribed.
    for (id, table) in (10..).zip(tables) {
        client
            .send(table_feed(id, &format!("public.{table}"), true))
            .await;
    }
    let (stop, stopped) = watch::channel(false);
    let ticker = ticker(addr, "ticks", stopped);
    // Writes to every table while the snapshots stream: updates of snapshot rows, inserts and
    // deletes, a transaction at a time; then a last insert per table that marks the end.
    let writer = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            for n in 0..150i64 {
                for table in tables {
                    sqlx::raw_sql(&format!(
                        "UPDATE {table} SET pad = 'updated {n}' WHERE id = {};
                         INSERT INTO {table} VALUES ({}, 'inserted {n}');
                         DELETE FROM {table} WHERE id = {};",
                        1 + n * 23,
                        100_000 + n,
                        2 + n * 19,
                    ))
                    .execute(&pool)
                    .await
                    .expect("write");
                }
            }
            for table in tables {
                sqlx::raw_sql(&format!("INSERT INTO {table} VALUES (-1, 'end')"))
                    .execute(&pool)
                    .await
                    .expect("end marker");
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let end_key = format!("{:?}", BTreeMap::from([("id", "-1")]));
    let mut received = Received::default();
    let done = |received: &Received| {
        received.all_ready(3) && (10..13).all(|id| received.views[&id].rows.contains_key(&end_key))
    };
    while !done(&received) {
        received.take(1, client.recv().await.expect("a message"));
    }
    writer.await.expect("writer");
    stop_ticking(&mut client, &mut received, stop, ticker).await;
    for (id, table) in (10..).zip(tables) {
        let expected = table_rows(&db, table).await;
        assert_eq!(expected.len(), 4_000 + 1);
        assert!(received.views[&id].rows == expected, "{table} differs");
    }
    drop(client);
    drop(server);
    db.drop_db().await;
}

/// A client that stops reading altogether while its snapshot streams is still closed as a slow
/// consumer once live messages fill its queue; what it got is a gapless prefix.
#[tokio::test]
async fn a_client_that_stops_reading_during_a_snapshot_is_still_closed_as_a_slow_consumer() {
    let (db, server, addr) = setup().await;
    big_table(&db, "big", 20_000, 1000).await;

    let mut stalled = Client::connect(addr).await;
    stalled.subscribe_topic(1, "firehose").await;
    subscribe_table(&mut stalled, 2, "public.big").await;
    // 400 messages of 64 KiB: more than the socket buffers and the queue hold.
    let mut publisher = Client::connect(addr).await;
    let total = 400u32;
    let payload = vec![0x5a; 64 * 1024];
    for n in 0..total {
        let mut body = n.to_be_bytes().to_vec();
        body.extend_from_slice(&payload);
        publisher.publish("firehose", &body).await;
    }
    let mut messages = 0u32;
    let (code, reason) = loop {
        match stalled.recv().await.expect("message or close") {
            support::Received::Event(event) => match event.body {
                Some(pb::event::Body::Message(message)) => {
                    assert_eq!(&message.payload[..4], &messages.to_be_bytes(), "no gaps");
                    messages += 1;
                }
                Some(pb::event::Body::Change(change)) => {
                    assert_eq!(change.kind(), pb::ChangeKind::Initial)
                }
                other => panic!("unexpected event {other:?}"),
            },
            support::Received::Close(Some(close)) => break close,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.starts_with("SLOW_CONSUMER"), "{reason}");
    assert!(messages < total, "it could not have received everything");
    wait_for_stat(addr, "connections", 1).await;
    // Fan-out dropped its topic subscription (its table subscription ended with the session).
    assert_eq!(stats(addr).await["dropped_subscriptions"], 1);
    drop(server);
    db.drop_db().await;
}
