//! Topics routed to a real Kafka-protocol broker (tansu, started by scripts/test).

mod support;

use std::time::Duration;

use feedgate::protocol::pb;
use rdkafka::message::{Headers, Message};
use support::kafka::{
    bootstrap, config, consumer, create_topic, produce, produce_batched, producer, topic,
};
use support::*;

fn subscribe_from(id: u64, topic: &str, start: pb::StartPosition, offset: i64) -> Command {
    topic_feed_from(id, topic, start, offset, &Default::default())
}

#[tokio::test]
async fn records_from_a_real_producer_arrive_with_key_headers_partition_and_offset() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 1).await;
    let server = start_with(config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, &topic).await;
    let producer = producer(&bootstrap());
    let (partition, offset) = produce(&producer, &topic, "k1", b"hello kafka").await;
    let message = client.recv_message(1).await;
    assert_eq!(message.topic, topic);
    assert_eq!(&message.payload[..], b"hello kafka");
    assert_eq!(message.key, "k1");
    assert_eq!(message.headers["source"], "test");
    assert_eq!((message.partition, message.offset), (partition, offset));
    assert!(message.timestamp_micros > 0);
    client.barrier().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_publish_through_feedgate_is_acknowledged_with_its_offset_and_read_by_a_real_consumer() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 1).await;
    let server = start_with(config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(Command::Publish(pb::Publish {
            topic: topic.clone(),
            payload: bytes::Bytes::from_static(b"from feedgate"),
            key: "order-1".into(),
            headers: [("trace".to_owned(), "t-1".to_owned())].into(),
            idempotency_key: "once".into(),
        }))
        .await;
    let Some(pb::response::Result::Published(published)) = response.result else {
        panic!("expected Published, got {response:?}");
    };
    let consumer = consumer(&bootstrap(), &topic, 1);
    let record = tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("in time")
        .expect("a record");
    assert_eq!(record.payload(), Some(&b"from feedgate"[..]));
    assert_eq!(record.key(), Some(&b"order-1"[..]));
    assert_eq!(record.offset(), published.offset);
    let headers: Vec<(String, String)> = record
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert!(headers.contains(&("trace".into(), "t-1".into())));
    assert!(headers.contains(&("idempotency-key".into(), "once".into())));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn start_positions_latest_earliest_and_offset() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 1).await;
    let producer = producer(&bootstrap());
    for n in 0..3u8 {
        produce(&producer, &topic, "k", &[n]).await;
    }
    let server = start_with(config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, &topic).await; // latest
    for (id, start, offset) in [
        (2, pb::StartPosition::Earliest, 0),
        (3, pb::StartPosition::Offset, 1),
    ] {
        let response = client
            .request(subscribe_from(id, &topic, start, offset))
            .await;
        assert!(matches!(
            response.result,
            Some(pb::response::Result::Subscribed(_))
        ));
        let ready = client.recv_event().await;
        assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    }
    produce(&producer, &topic, "k", &[3]).await;
    let mut got: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    for _ in 0..(1 + 4 + 3) {
        let event = client.recv_event().await;
        let Some(pb::event::Body::Message(m)) = event.body else {
            panic!("expected a record");
        };
        got.entry(event.subscription_id)
            .or_default()
            .push(m.payload[0]);
    }
    assert_eq!(got[&1], vec![3], "latest: only what came after Subscribed");
    assert_eq!(got[&2], vec![0, 1, 2, 3], "earliest: everything");
    assert_eq!(got[&3], vec![1, 2, 3], "from offset 1");
    client.barrier().await;
    // In-process topics serve start positions too, from what they keep (nothing here).
    let response = client
        .request(subscribe_from(9, "local", pb::StartPosition::Earliest, 0))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let ready = client.recv_event().await;
    assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_unknown_kafka_topic_is_not_found() {
    let server = start_with(config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let err = client
        .expect_error(
            subscribe_topic(1, "kafka.does.not.exist"),
            ErrorCode::NotFound,
        )
        .await;
    assert_eq!(err.details["topic"], "kafka.does.not.exist");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn two_nodes_each_see_every_record_of_a_partitioned_topic() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 3).await;
    let node_a = start_with(config()).await;
    let node_b = start_with(config()).await;
    let mut on_a = Client::connect(node_a.local_addr()).await;
    let mut on_b = Client::connect(node_b.local_addr()).await;
    on_a.subscribe_topic(1, &topic).await;
    on_b.subscribe_topic(2, &topic).await;
    let mut publisher = Client::connect(node_a.local_addr()).await;
    let mut published = Vec::new();
    for n in 0..30u8 {
        let mut client_publish = pb::Publish {
            topic: topic.clone(),
            payload: bytes::Bytes::from(vec![n]),
            ..Default::default()
        };
        client_publish.key = format!("key-{n}");
        let response = publisher.request(Command::Publish(client_publish)).await;
        assert!(matches!(
            response.result,
            Some(pb::response::Result::Published(_))
        ));
        published.push(n);
    }
    for (client, id) in [(&mut on_a, 1), (&mut on_b, 2)] {
        let mut got = Vec::new();
        for _ in 0..30 {
            got.push(client.recv_message(id).await.payload[0]);
        }
        got.sort_unstable();
        assert_eq!(got, published, "every record of every partition, once");
        client.barrier().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    node_a.shutdown().await.expect("shutdown");
    node_b.shutdown().await.expect("shutdown");
}

/// A subscriber replaying a topic from its earliest record gets backpressure, not a slow-consumer
/// close: its private consumer waits for room in the connection's queue. Before, a backlog larger
/// than the outbound queue closed the connection (4008) at once.
#[tokio::test]
async fn replaying_more_history_than_the_outbound_queue_holds_is_paced_not_closed() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 1).await;
    let producer = producer(&bootstrap());
    let records = 2_000u32;
    produce_batched(&producer, &topic, records).await;

    let mut config = config();
    config.limits.outbound_queue = 50;
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(subscribe_from(1, &topic, pb::StartPosition::Earliest, 0))
        .await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    // Let the consumer run ahead of this reader: the queue fills and it has to wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut next = 0u32;
    while next < records {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Ready(_)) => continue,
            Some(pb::event::Body::Message(m)) => {
                let n = u32::from_be_bytes(m.payload[..4].try_into().expect("4 bytes"));
                assert_eq!(n, next, "records in order, none lost or doubled");
                next += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    client.barrier().await;
}

/// Nothing doubled, even from a broker that serves a record twice. tansu (the test broker) does:
/// after a batch of many records its high watermark is the batch's base offset + 1, and a
/// consumer positioned there is handed the next record again and again. feedgate delivers each
/// offset once.
#[tokio::test]
async fn a_record_served_twice_by_the_broker_is_delivered_once() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 1).await;
    let producer = producer(&bootstrap());
    produce_batched(&producer, &topic, 200).await;
    let server = start_with(config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, &topic).await; // latest
    let (_, offset) = produce(&producer, &topic, "k", b"new").await;
    let event = client.recv_event().await;
    let Some(pb::event::Body::Message(message)) = event.body else {
        panic!("expected the new record, got {event:?}");
    };
    assert_eq!(
        (message.offset, &message.payload[..]),
        (offset, &b"new"[..])
    );
    // Long enough for the broker's repeats to arrive; none may reach the client.
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.barrier().await;
}

/// Records of subscription `id` until `count` arrived: their payload bytes, and the last cursor.
async fn records(client: &mut Client, id: u64, count: usize) -> (Vec<u8>, bytes::Bytes) {
    let mut payloads = Vec::new();
    let mut cursor = bytes::Bytes::new();
    while payloads.len() < count {
        let event = client.recv_event().await;
        assert_eq!(event.subscription_id, id);
        match event.body {
            Some(pb::event::Body::Message(m)) => {
                payloads.push(m.payload[0]);
                cursor = event.cursor;
            }
            Some(pb::event::Body::Ready(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (payloads, cursor)
}

#[tokio::test]
async fn a_kafka_subscription_resumes_from_its_cursor_on_another_node() {
    let topic = topic();
    create_topic(&bootstrap(), &topic, 2).await;
    let producer = producer(&bootstrap());
    for n in 0..6u8 {
        produce(&producer, &topic, &format!("k{n}"), &[n]).await;
    }
    let node_a = start_with(config()).await;
    let node_b = start_with(config()).await;
    let mut on_a = Client::connect(node_a.local_addr()).await;
    let response = on_a
        .request(subscribe_from(1, &topic, pb::StartPosition::Earliest, 0))
        .await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Subscribed(_))
    ));
    let (first, cursor) = records(&mut on_a, 1, 3).await;
    drop(on_a);
    for n in 6..10u8 {
        produce(&producer, &topic, &format!("k{n}"), &[n]).await;
    }

    let mut on_b = Client::connect(node_b.local_addr()).await;
    let resume = topic_feed_from(1, &topic, pb::StartPosition::Latest, 0, &cursor);
    let response = on_b.request(resume).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let (rest, _) = records(&mut on_b, 1, 7).await;
    let mut all: Vec<u8> = first.iter().chain(&rest).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..10).collect::<Vec<u8>>(),
        "each record once: {first:?} then {rest:?}"
    );
    on_b.barrier().await;

    // Positions the topic no longer has, or another topic's, are refused with a reason.
    let past_end =
        feedgate::cursor::encode_kafka_positions(topic.as_bytes(), [(0, 1_000_000)].into_iter());
    let error = on_b
        .expect_error(
            topic_feed_from(2, &topic, pb::StartPosition::Latest, 0, &past_end),
            ErrorCode::ResumeUnavailable,
        )
        .await;
    assert!(
        error.message.contains("past the topic's end"),
        "{}",
        error.message
    );
    let other = feedgate::cursor::encode_kafka_positions(b"another.topic", [(0, 0)].into_iter());
    let error = on_b
        .expect_error(
            topic_feed_from(2, &topic, pb::StartPosition::Latest, 0, &other),
            ErrorCode::ResumeUnavailable,
        )
        .await;
    assert!(error.message.contains("another topic"), "{}", error.message);
    on_b.barrier().await;
    node_a.shutdown().await.expect("a stopped");
    node_b.shutdown().await.expect("b stopped");
}
