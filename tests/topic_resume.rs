//! In-process topics resume from a cursor, and start from kept messages (`EARLIEST`,
//! `OFFSET`), against a real server over real WebSockets: nothing lost, nothing doubled, and a
//! coded `RESUME_UNAVAILABLE` when the position is no longer kept or is not this server's.

mod support;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::*;

fn feed(id: u64, topic: &str, start: pb::StartPosition, offset: i64, cursor: &Bytes) -> Command {
    topic_feed_from(id, topic, start, offset, cursor)
}

fn resume(id: u64, topic: &str, cursor: &Bytes) -> Command {
    feed(id, topic, pb::StartPosition::Latest, 0, cursor)
}

fn expect_subscribed(response: pb::Response) {
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "expected Subscribed, got {response:?}"
    );
}

/// Reads events of subscription `id` until `Ready`: the payloads before it.
async fn until_ready(client: &mut Client, id: u64) -> Vec<String> {
    let mut payloads = Vec::new();
    loop {
        let event = client.recv_event().await;
        assert_eq!(event.subscription_id, id);
        match event.body {
            Some(pb::event::Body::Ready(_)) => return payloads,
            Some(pb::event::Body::Message(m)) => {
                payloads.push(String::from_utf8(m.payload.to_vec()).expect("utf-8"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn names(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn a_client_that_reconnects_resumes_with_nothing_lost_or_doubled() {
    let server = start().await;
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr).await;
    let mut first = Client::connect(addr).await;
    first.subscribe_topic(1, "prices").await;
    for name in names(0..5) {
        publisher.publish("prices", name.as_bytes()).await;
    }
    let mut cursor = Bytes::new();
    for name in names(0..3) {
        let event = first.recv_event().await;
        let Some(pb::event::Body::Message(message)) = event.body else {
            panic!("expected a message");
        };
        assert_eq!(message.payload, name.as_bytes());
        cursor = event.cursor;
    }
    first.close().await; // the connection drops with two messages unread
    for name in names(5..10) {
        publisher.publish("prices", name.as_bytes()).await;
    }
    let mut again = Client::connect(addr).await;
    expect_subscribed(again.request(resume(7, "prices", &cursor)).await);
    assert_eq!(until_ready(&mut again, 7).await, names(3..10));
    publisher.publish("prices", b"live").await;
    assert_eq!(again.recv_message(7).await.payload, &b"live"[..]);
    again.barrier().await; // nothing else arrived
}

#[tokio::test]
async fn a_subscriber_that_had_no_message_resumes_from_its_ready() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut publisher = Client::connect(server.local_addr()).await;
    publisher.publish("quiet", b"before").await;
    expect_subscribed(client.request(resume(1, "quiet", &Bytes::new())).await);
    let ready = client.recv_event().await;
    assert!(
        matches!(ready.body, Some(pb::event::Body::Ready(_))),
        "{ready:?}"
    );
    assert!(
        !ready.cursor.is_empty(),
        "a live subscription's Ready names its position"
    );
    // The connection drops before any message; two are published meanwhile.
    drop(client);
    publisher.publish("quiet", b"while away 1").await;
    publisher.publish("quiet", b"while away 2").await;
    let mut client = Client::connect(server.local_addr()).await;
    expect_subscribed(client.request(resume(1, "quiet", &ready.cursor)).await);
    assert_eq!(
        until_ready(&mut client, 1).await,
        ["while away 1", "while away 2"],
        "what followed the Ready, not what came before it"
    );
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_resume_while_messages_keep_coming_gets_each_once_in_order() {
    let mut config = test_config();
    config.memory.history_size = 10_000;
    config.memory.history_bytes = 16 << 20;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr).await;
    let mut cursor = Bytes::new();
    for i in 0..200u32 {
        cursor = publisher.publish("ticks", &i.to_be_bytes()).await.cursor;
    }
    let writer = tokio::spawn(async move {
        for i in 200..2_000u32 {
            publisher.publish("ticks", &i.to_be_bytes()).await;
        }
        publisher
    });
    let mut reader = Client::connect(addr).await;
    expect_subscribed(reader.request(resume(1, "ticks", &cursor)).await);
    let mut next = 200u32;
    let mut ready = false;
    while next < 2_000 {
        let event = reader.recv_event().await;
        match event.body {
            Some(pb::event::Body::Ready(_)) => {
                assert!(!ready, "Ready once");
                ready = true;
            }
            Some(pb::event::Body::Message(m)) => {
                let got = u32::from_be_bytes(m.payload[..].try_into().expect("4 bytes"));
                assert_eq!(got, next, "every message once, in order");
                next += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let _publisher = writer.await.expect("publisher");
    if !ready {
        // Caught up only with the last message: Ready still comes, after it.
        let event = reader.recv_event().await;
        assert!(matches!(event.body, Some(pb::event::Body::Ready(_))));
    }
    reader.barrier().await;
}

#[tokio::test]
async fn earliest_and_offset_start_from_what_is_kept() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut offsets = Vec::new();
    for name in names(0..3) {
        offsets.push(client.publish("news", name.as_bytes()).await.offset);
    }
    let none = Bytes::new();
    expect_subscribed(
        client
            .request(feed(1, "news", pb::StartPosition::Earliest, 0, &none))
            .await,
    );
    assert_eq!(until_ready(&mut client, 1).await, names(0..3));
    let from_second = feed(2, "news", pb::StartPosition::Offset, offsets[1], &none);
    expect_subscribed(client.request(from_second).await);
    assert_eq!(until_ready(&mut client, 2).await, names(1..3));
}

#[tokio::test]
async fn positions_no_longer_kept_or_from_another_run_answer_resume_unavailable() {
    let mut config = test_config();
    config.memory.history_size = 2;
    let server = start_with(config.clone()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut published = Vec::new();
    for name in names(0..4) {
        published.push(client.publish("news", name.as_bytes()).await);
    }
    let none = Bytes::new();
    let refused = [
        resume(1, "news", &published[0].cursor), // m1 is no longer kept
        feed(
            1,
            "news",
            pb::StartPosition::Offset,
            published[1].offset,
            &none,
        ),
    ];
    for command in refused {
        let error = client
            .expect_error(command, ErrorCode::ResumeUnavailable)
            .await;
        assert!(
            error.message.contains("no longer kept"),
            "{}",
            error.message
        );
    }
    // After m2 everything is kept: the connection still serves, and the resume works.
    expect_subscribed(
        client
            .request(resume(1, "news", &published[1].cursor))
            .await,
    );
    assert_eq!(until_ready(&mut client, 1).await, names(2..4));
    let cursor = published[3].cursor.clone();
    drop(client);
    server.shutdown().await.expect("stopped");

    let restarted = start_with(config).await;
    let mut client = Client::connect(restarted.local_addr()).await;
    let error = client
        .expect_error(resume(1, "news", &cursor), ErrorCode::ResumeUnavailable)
        .await;
    assert!(error.message.contains("another run"), "{}", error.message);
    client.barrier().await;
}
