//! Topics kept in RabbitMQ streams (a real RabbitMQ 3.9+ on 127.0.0.1:5672): they keep what is
//! published whether anyone listens or not, start from the first kept message or an offset,
//! and resume from a cursor on another node, each message once; a position the stream no
//! longer holds, or a cursor that is not the stream's, answers RESUME_UNAVAILABLE and the
//! connection stays usable.

mod support;

use std::time::Duration;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::rabbit::{delete_streams, exchange, stream_config, wait_rabbit_connected, Amqp};
use support::*;

/// Reads `count` messages of `subscription_id`: (payload, offset, cursor) each.
async fn messages(
    client: &mut Client,
    subscription_id: u64,
    count: usize,
) -> Vec<(String, i64, Bytes)> {
    let mut out = Vec::new();
    while out.len() < count {
        let event = client.recv_event().await;
        assert_eq!(event.subscription_id, subscription_id, "{event:?}");
        match event.body {
            Some(pb::event::Body::Message(message)) => {
                assert!(!event.cursor.is_empty(), "a stream message has a cursor");
                assert!(
                    !message
                        .headers
                        .iter()
                        .any(|(name, _)| name == "x-stream-offset"),
                    "the broker's offset header is the message's offset, not a header"
                );
                out.push((
                    String::from_utf8(message.payload.to_vec()).expect("utf-8"),
                    message.offset,
                    event.cursor,
                ));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    out
}

/// Subscribes (start, offset, resume_from) and returns the `Ready` event's cursor.
async fn subscribe(
    client: &mut Client,
    id: u64,
    topic: &str,
    start: pb::StartPosition,
    offset: i64,
    resume_from: &Bytes,
) -> Bytes {
    let command = topic_feed_from(id, topic, start, offset, resume_from);
    client.subscribed_then_ready(command).await.cursor
}

/// Subscribes to `topic` resuming from `cursor`, expects RESUME_UNAVAILABLE; returns its message.
async fn refused(client: &mut Client, topic: &str, cursor: Bytes) -> String {
    let command = topic_feed_from(10, topic, pb::StartPosition::Latest, 0, &cursor);
    client
        .expect_error(command, ErrorCode::ResumeUnavailable)
        .await
        .message
}

fn payloads(messages: &[(String, i64, Bytes)]) -> Vec<&str> {
    messages
        .iter()
        .map(|(payload, _, _)| payload.as_str())
        .collect()
}

#[tokio::test]
async fn a_stream_topic_keeps_messages_and_serves_earliest_an_offset_and_a_resume() {
    let exchange = exchange();
    let server = start_with(stream_config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    // Publishes go through a connection of their own: a subscriber's message may come before
    // the `Published` answer.
    let mut publisher = Client::connect(server.local_addr()).await;
    // Published before anyone subscribed: the publish declares the stream, which keeps them.
    for n in 1..=5 {
        publisher
            .publish("kept.prices", format!("p{n}").as_bytes())
            .await;
    }

    let latest = pb::StartPosition::Latest;
    let none = Bytes::new();
    subscribe(
        &mut client,
        1,
        "kept.prices",
        pb::StartPosition::Earliest,
        0,
        &none,
    )
    .await;
    let all = messages(&mut client, 1, 5).await;
    assert_eq!(payloads(&all), ["p1", "p2", "p3", "p4", "p5"]);
    assert!(
        all.windows(2).all(|w| w[0].1 < w[1].1),
        "offsets increase: {all:?}"
    );

    let third = all[2].1;
    subscribe(
        &mut client,
        2,
        "kept.prices",
        pb::StartPosition::Offset,
        third,
        &none,
    )
    .await;
    assert_eq!(
        payloads(&messages(&mut client, 2, 3).await),
        ["p3", "p4", "p5"]
    );

    // A resume after p2 gets p3.. once, then live messages.
    let ready = subscribe(&mut client, 3, "kept.prices", latest, 0, &all[1].2).await;
    assert_eq!(ready, all[1].2, "a resumed Ready carries its cursor");
    assert_eq!(
        payloads(&messages(&mut client, 3, 3).await),
        ["p3", "p4", "p5"]
    );
    client.barrier().await;
    publisher.publish("kept.prices", b"p6").await;
    let mut live = Vec::new();
    for _ in 0..3 {
        let event = client.recv_event().await;
        let Some(pb::event::Body::Message(message)) = event.body else {
            panic!("expected a message, got {event:?}");
        };
        live.push((event.subscription_id, message.payload));
    }
    live.sort();
    assert_eq!(
        live,
        [1, 2, 3].map(|id| (id, Bytes::from_static(b"p6"))).to_vec(),
        "each subscriber gets the live message once"
    );
    client.barrier().await;
    delete_streams(&exchange, &["kept.prices"]).await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_latest_subscribers_ready_names_the_position_it_starts_after() {
    let exchange = exchange();
    let server = start_with(stream_config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    // Publishes go through a connection of their own: a subscriber's message may come before
    // the `Published` answer.
    let mut publisher = Client::connect(server.local_addr()).await;
    let none = Bytes::new();
    let latest = pb::StartPosition::Latest;
    subscribe(&mut client, 1, "kept.ticks", latest, 0, &none).await;
    publisher.publish("kept.ticks", b"t1").await;
    let first = messages(&mut client, 1, 1).await;
    // This node's consumer has delivered t1: a new LATEST subscriber starts after it.
    let ready = subscribe(&mut client, 2, "kept.ticks", latest, 0, &none).await;
    assert_eq!(ready, first[0].2);
    client.request(unsubscribe(2)).await;
    publisher.publish("kept.ticks", b"t2").await;
    assert_eq!(payloads(&messages(&mut client, 1, 1).await), ["t2"]);
    // Resuming from that Ready gets t2, which subscription 2 missed while away.
    subscribe(&mut client, 3, "kept.ticks", latest, 0, &ready).await;
    assert_eq!(payloads(&messages(&mut client, 3, 1).await), ["t2"]);
    client.barrier().await;
    delete_streams(&exchange, &["kept.ticks"]).await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_cursor_from_one_node_resumes_on_another_with_each_message_once() {
    let exchange = exchange();
    let a = start_with(stream_config(&exchange)).await;
    let b = start_with(stream_config(&exchange)).await;
    wait_rabbit_connected(a.local_addr()).await;
    wait_rabbit_connected(b.local_addr()).await;
    let none = Bytes::new();
    let latest = pb::StartPosition::Latest;
    let mut on_a = Client::connect(a.local_addr()).await;
    subscribe(&mut on_a, 1, "kept.orders", latest, 0, &none).await;
    let amqp = Amqp::connect(&exchange).await;
    for n in 0..40 {
        amqp.publish("kept.orders", format!("o{n}").as_bytes(), None)
            .await;
    }
    let got = messages(&mut on_a, 1, 15).await;
    let cursor = got.last().expect("fifteen").2.clone();
    a.shutdown().await.expect("node A stops");

    let mut on_b = Client::connect(b.local_addr()).await;
    subscribe(&mut on_b, 1, "kept.orders", latest, 0, &cursor).await;
    let rest = messages(&mut on_b, 1, 25).await;
    let mut all: Vec<&str> = payloads(&got);
    all.extend(payloads(&rest));
    let expected: Vec<String> = (0..40).map(|n| format!("o{n}")).collect();
    assert_eq!(all, expected.iter().map(String::as_str).collect::<Vec<_>>());
    on_b.barrier().await;
    delete_streams(&exchange, &["kept.orders"]).await;
    b.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn positions_a_stream_cannot_resume_from_are_refused_and_the_connection_stays_usable() {
    let exchange = exchange();
    let mut config = stream_config(&exchange);
    // Tiny segments and limit, so that retention removes the oldest messages at once.
    let rabbit = config.rabbitmq.as_mut().expect("rabbitmq");
    rabbit.stream_max_bytes = 4_000;
    rabbit.stream_segment_bytes = 1_000;
    let server = start_with(config).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    // Publishes go through a connection of their own: a subscriber's message may come before
    // the `Published` answer.
    let mut publisher = Client::connect(server.local_addr()).await;
    let none = Bytes::new();
    for n in 0..3 {
        publisher
            .publish("kept.a", format!("a{n}").as_bytes())
            .await;
    }
    publisher.publish("kept.b", b"b0").await;
    subscribe(
        &mut client,
        1,
        "kept.a",
        pb::StartPosition::Earliest,
        0,
        &none,
    )
    .await;
    let a = messages(&mut client, 1, 3).await;
    subscribe(
        &mut client,
        2,
        "kept.b",
        pb::StartPosition::Earliest,
        0,
        &none,
    )
    .await;
    let b = messages(&mut client, 2, 1).await;
    client.request(unsubscribe(1)).await;

    let message = refused(&mut client, "kept.a", b[0].2.clone()).await;
    assert!(message.contains("another topic's"), "{message}");
    let message = refused(&mut client, "kept.a", Bytes::from_static(b"\x02r\x00")).await;
    assert!(message.contains("cannot be read"), "{message}");
    let mut damaged = a[1].2.to_vec();
    *damaged.last_mut().expect("bytes") ^= 0xff;
    let message = refused(&mut client, "kept.a", Bytes::from(damaged)).await;
    assert!(message.contains("another message at offset"), "{message}");
    let mut forged = feedgate::cursor::Cursor::decode(&a[2].2).expect("a cursor");
    if let feedgate::cursor::Cursor::RabbitStream { offset, .. } = &mut forged {
        *offset += 1_000;
    }
    let message = refused(&mut client, "kept.a", forged.encode()).await;
    assert!(message.contains("no message at offset"), "{message}");
    let memory = publisher.publish("local.x", b"m").await.cursor;
    let message = refused(&mut client, "kept.a", memory).await;
    assert!(
        message.contains("not a RabbitMQ stream topic's"),
        "{message}"
    );

    // Retention: a few kilobytes later, the first segments are gone.
    let filler = vec![b'x'; 300];
    for _ in 0..60 {
        publisher.publish("kept.a", &filler).await;
    }
    let message = refused(&mut client, "kept.a", a[0].2.clone()).await;
    assert!(message.contains("no longer kept"), "{message}");

    // A queue topic still cannot resume, and says how to make it able to.
    let message = refused(&mut client, "rabbit.q", a[0].2.clone()).await;
    assert!(message.contains("stream = true"), "{message}");
    // Nothing above ended the connection or the other subscriptions.
    client.barrier().await;
    publisher.publish("kept.b", b"b1").await;
    assert_eq!(payloads(&messages(&mut client, 2, 1).await), ["b1"]);
    delete_streams(&exchange, &["kept.a", "kept.b"]).await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stream_feed_goes_on_after_the_rabbitmq_connection_is_cut_with_nothing_lost() {
    let exchange = exchange();
    let server = start_with(stream_config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let none = Bytes::new();
    subscribe(
        &mut client,
        1,
        "kept.cut",
        pb::StartPosition::Latest,
        0,
        &none,
    )
    .await;
    let amqp = Amqp::connect(&exchange).await;
    amqp.publish("kept.cut", b"before", None).await;
    assert_eq!(payloads(&messages(&mut client, 1, 1).await), ["before"]);

    // Close feedgate's own connection from the broker's side; another service keeps
    // publishing meanwhile.
    close_feedgate_connection(&exchange);
    let mut published = Vec::new();
    for n in 0..20 {
        let payload = format!("during-{n}");
        amqp.publish("kept.cut", payload.as_bytes(), None).await;
        published.push(payload);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = Vec::new();
    while got.len() < published.len() {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Message(message)) => {
                got.push(String::from_utf8(message.payload.to_vec()).expect("utf-8"));
            }
            Some(pb::event::Body::Status(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got, published,
        "every message once, in order, across the reconnect"
    );
    delete_streams(&exchange, &["kept.cut"]).await;
    server.shutdown().await.expect("shutdown");
}

/// Closes, from the broker's side, the AMQP connection of the feedgate server using `exchange`
/// (its connection is named after it; each test has its own exchange).
fn close_feedgate_connection(exchange: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&output.stdout);
    let name = format!("\"feedgate/{exchange}\"");
    let pid = listing
        .lines()
        .find(|line| line.contains(&name))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"));
    support::rabbit::rabbitmqctl(&["close_connection", pid, "test: cut"]);
}
