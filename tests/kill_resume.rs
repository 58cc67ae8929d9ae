//! A feedgate process killed with SIGKILL mid-stream, and another started: table, Kafka and
//! RabbitMQ-stream subscribers resume from the last cursor they received, on the new process
//! (on another port, and on the same one), and get every change or message once while writers
//! keep going throughout. Real PostgreSQL, RabbitMQ and Kafka (tansu), real processes.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::db::{columns, table_feed, wait_connected, TestDb};
use support::*;

/// A spawned feedgate, killed when dropped: a failing test must not leave a server behind
/// (one left running kept streaming its test database's replication slot).
struct Spawned(Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The feedgate binary serving `database_url` on a port of its own.
fn spawn(database_url: &str) -> (Spawned, std::net::SocketAddr) {
    let addr = free_addr();
    (spawn_at(addr, &["--database-url", database_url]), addr)
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// The feedgate binary on `addr`, with `args` after `serve --listen <addr> --allow-anonymous`.
fn spawn_at(addr: std::net::SocketAddr, args: &[&str]) -> Spawned {
    let child = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve", "--listen", &addr.to_string(), "--allow-anonymous"])
        .args(args)
        .env("FEEDGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn feedgate");
    Spawned(child)
}

async fn listening(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("feedgate never listened on {addr}");
}

/// Reads changes of subscription 1 into `seen` (id → times) until `until` says stop; returns
/// the last cursor.
async fn read(
    client: &mut Client,
    seen: &mut BTreeMap<i64, u32>,
    until: impl Fn(usize) -> bool,
) -> Bytes {
    let mut cursor = Bytes::new();
    let mut count = 0;
    while !until(count) {
        let event = client.recv_event().await;
        assert_eq!(event.subscription_id, 1);
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                let id: i64 = columns(&change.key)["id"].parse().expect("an id");
                *seen.entry(id).or_default() += 1;
                count += 1;
            }
            Some(pb::event::Body::Ready(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        cursor = event.cursor;
    }
    cursor
}

#[tokio::test]
async fn a_table_subscriber_resumes_on_a_new_process_after_sigkill_with_every_change_once() {
    const ROWS: i64 = 1_500;
    let db = TestDb::new().await;
    let (mut first, addr) = spawn(&db.url);
    listening(addr).await;
    wait_connected(addr).await;
    db.execute(
        "CREATE TABLE ticks (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()); \
         SELECT feedgate.watch('public.ticks');",
    )
    .await;
    let mut client = Client::connect(addr).await;
    let response = client.request(table_feed(1, "public.ticks", true)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let pool = db.pool.clone();
    let writer = tokio::spawn(async move {
        for id in 1..=ROWS {
            sqlx::query("INSERT INTO ticks (id) VALUES ($1)")
                .bind(id)
                .execute(&pool)
                .await
                .expect("insert");
            // Paced, so that commits go on while one process dies and the next one starts.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let mut seen = BTreeMap::new();
    let cursor = read(&mut client, &mut seen, |count| count >= 300).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    drop(client);

    let (mut second, addr) = spawn(&db.url);
    listening(addr).await;
    wait_connected(addr).await;
    let mut client = Client::connect(addr).await;
    let Command::Subscribe(mut resume) = table_feed(1, "public.ticks", true) else {
        unreachable!("table_feed makes a Subscribe");
    };
    resume.resume_from = cursor;
    let response = client.request(Command::Subscribe(resume)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    writer.await.expect("writer");
    let before = seen.len();
    read(&mut client, &mut seen, seen_all(before, ROWS)).await;
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "changes received twice: {doubled:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=ROWS).collect::<Vec<_>>()
    );
    db.drop_db().await;
}

/// Whether the changes read since resuming (`count`) complete the rows: `before` were read on the
/// killed process.
fn seen_all(before: usize, rows: i64) -> impl Fn(usize) -> bool {
    move |count| before + count >= rows as usize
}

/// Subscription 1 reads a Kafka topic (3 partitions), subscription 2 a RabbitMQ stream topic;
/// a producer and an AMQP publisher keep going while the server is killed and started again on
/// the same port.
#[tokio::test]
async fn broker_subscribers_resume_on_the_same_port_after_sigkill_with_every_message_once() {
    const MESSAGES: usize = 600;
    let exchange = support::rabbit::exchange();
    let kafka_topic = support::kafka::topic();
    let bootstrap = support::kafka::bootstrap();
    support::kafka::create_topic(&bootstrap, &kafka_topic, 3).await;
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        format!(
            r#"
[[topics]]
pattern = "kafka.#"
backend = "kafka"

[[topics]]
pattern = "kept.#"
backend = "rabbitmq"
stream = true

[kafka]
bootstrap_servers = "{bootstrap}"

[rabbitmq]
url = "{url}"
exchange = "{exchange}"
stream_prefix = "{exchange}.stream."
"#,
            url = support::rabbit::amqp_url(),
        ),
    )
    .expect("write config");
    let config_path = config.path().to_str().expect("utf-8 path");
    let addr = free_addr();
    let mut first = spawn_at(addr, &["--config", config_path]);
    listening(addr).await;
    support::rabbit::wait_rabbit_connected(addr).await;
    let mut client = Client::connect(addr).await;
    let none = Bytes::new();
    let latest = pb::StartPosition::Latest;
    for (id, topic) in [(1, kafka_topic.as_str()), (2, "kept.kill")] {
        client
            .subscribed_then_ready(topic_feed_from(id, topic, latest, 0, &none))
            .await;
    }
    // The stream exists once subscribed: the AMQP publisher's messages are kept from here on.
    let amqp = support::rabbit::Amqp::connect(&exchange).await;
    let producer = support::kafka::producer(&bootstrap);
    let topic = kafka_topic.clone();
    let writers = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let payload = format!("{n}");
            support::kafka::produce(
                &producer,
                &topic,
                &format!("key-{}", n % 7),
                payload.as_bytes(),
            )
            .await;
            amqp.publish("kept.kill", payload.as_bytes(), None).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let mut got: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut cursors: BTreeMap<u64, Bytes> = BTreeMap::new();
    read_messages(&mut client, &mut got, &mut cursors, |got| {
        got.values().map(Vec::len).min().unwrap_or(0) >= 150 && got.len() == 2
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    drop(client);

    let mut second = spawn_at(addr, &["--config", config_path]);
    listening(addr).await;
    support::rabbit::wait_rabbit_connected(addr).await;
    let mut client = Client::connect(addr).await;
    // Both resume at once: the first one's messages may come before the second's answer, which
    // the reading below checks.
    for (id, topic) in [(1, kafka_topic.as_str()), (2, "kept.kill")] {
        client
            .send(topic_feed_from(id, topic, latest, 0, &cursors[&id]))
            .await;
    }
    writers.await.expect("writers");
    read_messages(&mut client, &mut got, &mut cursors, |got| {
        got.values().all(|seen| seen.len() >= MESSAGES)
    })
    .await;
    client.barrier().await;
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    // The stream keeps the whole run in order; Kafka keeps each key's order (one partition per
    // key), so sorted, each must be every message exactly once.
    assert_eq!(
        got[&2],
        (0..MESSAGES).collect::<Vec<_>>(),
        "the stream topic"
    );
    let mut kafka = got[&1].clone();
    for key in 0..7 {
        let of_key: Vec<usize> = kafka.iter().copied().filter(|n| n % 7 == key).collect();
        assert!(
            of_key.windows(2).all(|w| w[0] < w[1]),
            "key {key} in order: {of_key:?}"
        );
    }
    kafka.sort_unstable();
    assert_eq!(kafka, (0..MESSAGES).collect::<Vec<_>>(), "the Kafka topic");
    support::rabbit::delete_streams(&exchange, &["kept.kill"]).await;
    support::kafka::delete_topic(&bootstrap, &kafka_topic).await;
}

/// Reads topic messages into `got` (subscription id → payloads as numbers) and the last cursor
/// of each subscription into `cursors`, until `done`.
async fn read_messages(
    client: &mut Client,
    got: &mut BTreeMap<u64, Vec<usize>>,
    cursors: &mut BTreeMap<u64, Bytes>,
    done: impl Fn(&BTreeMap<u64, Vec<usize>>) -> bool,
) {
    while !done(got) {
        let Some(event) = client.recv_event_or_subscribed().await else {
            continue;
        };
        match event.body {
            Some(pb::event::Body::Message(message)) => {
                let n = std::str::from_utf8(&message.payload)
                    .expect("utf-8")
                    .parse()
                    .expect("a number");
                got.entry(event.subscription_id).or_default().push(n);
            }
            Some(pb::event::Body::Ready(_) | pb::event::Body::Status(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        if !event.cursor.is_empty() {
            cursors.insert(event.subscription_id, event.cursor);
        }
    }
}
