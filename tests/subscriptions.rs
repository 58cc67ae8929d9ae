//! Request/response correlation, multiplexed subscriptions, unsubscribe and fan-out, against a
//! real server over a real WebSocket.

mod support;

use feedgate::protocol::pb;
use support::*;

#[tokio::test]
async fn hello_is_welcomed_with_session_and_limits_and_ping_gets_pong() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(Command::Hello(pb::Hello {
            protocol_version: 1,
            client_name: "test".into(),
            ..Default::default()
        }))
        .await;
    let Some(pb::response::Result::Welcome(welcome)) = response.result else {
        panic!("expected Welcome, got {response:?}");
    };
    assert_eq!(welcome.protocol_version, 1);
    assert_eq!(welcome.server_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(welcome.session_id.len(), 36, "a uuid");
    let limits = welcome.limits.expect("limits");
    assert_eq!(limits.max_message_size, 1024 * 1024);
    assert_eq!(limits.max_subscriptions, 128);
    assert_eq!(limits.ping_interval_ms, 25_000);
    // The slow-consumer close (4008) and the oversized-frame close (1009) depend on these.
    let config = test_config();
    assert_eq!(limits.outbound_queue as usize, config.limits.outbound_queue);
    assert_eq!(
        limits.outbound_queue_bytes as usize,
        config.limits.outbound_queue_bytes
    );
    assert_eq!(
        limits.max_frame_size as usize,
        config.websocket.max_frame_size
    );

    let pong = client.request(Command::Ping(pb::Ping {})).await;
    let Some(pb::response::Result::Pong(pong)) = pong.result else {
        panic!("expected Pong");
    };
    assert!(pong.server_time_micros > 1_600_000_000_000_000);

    let err = client
        .expect_error(
            Command::Hello(pb::Hello {
                protocol_version: 9,
                ..Default::default()
            }),
            ErrorCode::UnsupportedProtocolVersion,
        )
        .await;
    assert_eq!(err.details["supported"], "1");
}

#[tokio::test]
async fn pipelined_requests_each_get_one_response_with_their_id() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    // Sent back to back without waiting, including an unsubscribe of a subscription whose ack
    // has not been read yet.
    let ids = [
        client.send(Command::Ping(pb::Ping {})).await,
        client.send(subscribe_topic(5, "pipelined")).await,
        client.send(unsubscribe(5)).await,
        client.send(publish("pipelined", b"x")).await,
        client.send(unsubscribe(5)).await,
    ];
    let mut responses = Vec::new();
    while responses.len() < ids.len() {
        match client.recv().await.expect("message") {
            Received::Response(response) => responses.push(response),
            Received::Event(event) => {
                assert_eq!(event.subscription_id, 5);
                assert!(matches!(event.body, Some(pb::event::Body::Ready(_))));
            }
            Received::Close(close) => panic!("closed: {close:?}"),
        }
    }
    let got: Vec<u64> = responses.iter().map(|r| r.request_id).collect();
    assert_eq!(got, ids);
    use pb::response::Result as R;
    assert!(matches!(responses[0].result, Some(R::Pong(_))));
    assert!(matches!(responses[1].result, Some(R::Subscribed(_))));
    assert!(matches!(responses[2].result, Some(R::Unsubscribed(_))));
    assert!(matches!(responses[3].result, Some(R::Published(_))));
    expect_error_response(responses[4].clone(), ErrorCode::SubscriptionNotFound);
    // The publish happened after the unsubscribe, so no message arrives for subscription 5.
    client.barrier().await;
}

#[tokio::test]
async fn two_subscriptions_on_one_connection_are_kept_apart() {
    let server = start().await;
    let addr = server.local_addr();
    let mut subscriber = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    subscriber.subscribe_topic(1, "prices").await;
    subscriber.subscribe_topic(2, "news").await;

    publisher.publish("news", b"headline").await;
    publisher.publish("prices", b"42.5").await;

    let news = subscriber.recv_message(2).await;
    assert_eq!(
        (news.topic.as_str(), &news.payload[..]),
        ("news", &b"headline"[..])
    );
    let price = subscriber.recv_message(1).await;
    assert_eq!(
        (price.topic.as_str(), &price.payload[..]),
        ("prices", &b"42.5"[..])
    );
    subscriber.barrier().await;
}

#[tokio::test]
async fn the_same_topic_twice_on_one_connection_delivers_to_both_ids() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(7, "t").await;
    client.subscribe_topic(8, "t").await;
    let id = client.send(publish("t", b"both")).await;
    // Fan-out happens before Published is queued, so both events come first.
    let mut seen = vec![
        client.recv_event().await.subscription_id,
        client.recv_event().await.subscription_id,
    ];
    seen.sort_unstable();
    assert_eq!(seen, vec![7, 8]);
    assert_eq!(client.recv_response().await.request_id, id);
}

#[tokio::test]
async fn unsubscribe_stops_delivery_at_once_and_frees_the_id() {
    let server = start().await;
    let addr = server.local_addr();
    let mut subscriber = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    subscriber.subscribe_topic(3, "t").await;
    publisher.publish("t", b"one").await;
    assert_eq!(&subscriber.recv_message(3).await.payload[..], b"one");

    let response = subscriber.request(unsubscribe(3)).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Unsubscribed(pb::Unsubscribed {
            subscription_id: 3
        }))
    ));
    publisher.publish("t", b"two").await;
    subscriber.barrier().await; // nothing arrived for subscription 3

    // The id can be reused, for another topic.
    subscriber.subscribe_topic(3, "other").await;
    publisher.publish("t", b"three").await;
    publisher.publish("other", b"four").await;
    let message = subscriber.recv_message(3).await;
    assert_eq!(
        (message.topic.as_str(), &message.payload[..]),
        ("other", &b"four"[..])
    );
}

#[tokio::test]
async fn fan_out_reaches_every_connection_in_publish_order() {
    let server = start().await;
    let addr = server.local_addr();
    let mut subscribers = Vec::new();
    for i in 0..8u64 {
        let mut client = Client::connect(addr).await;
        client.subscribe_topic(100 + i, "fan").await;
        subscribers.push(client);
    }
    let mut publisher = Client::connect(addr).await;
    let mut offsets = Vec::new();
    for n in 0..50u32 {
        offsets.push(publisher.publish("fan", &n.to_be_bytes()).await.offset);
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
    for (i, client) in subscribers.iter_mut().enumerate() {
        for (n, offset) in offsets.iter().enumerate() {
            let message = client.recv_message(100 + i as u64).await;
            assert_eq!(&message.payload[..], &(n as u32).to_be_bytes());
            assert_eq!(message.offset, *offset);
            assert!(message.timestamp_micros > 0);
        }
        client.barrier().await;
    }
    assert_eq!(stats(addr).await["subscriptions"], 8);
}

#[tokio::test]
async fn publish_carries_key_headers_and_idempotency_key() {
    let server = start().await;
    let addr = server.local_addr();
    let mut subscriber = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    subscriber.subscribe_topic(1, "orders").await;
    let published = publisher
        .request(Command::Publish(pb::Publish {
            topic: "orders".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            key: "order-17".into(),
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            idempotency_key: "retry-1".into(),
        }))
        .await;
    let Some(pb::response::Result::Published(published)) = published.result else {
        panic!("expected Published");
    };
    let message = subscriber.recv_message(1).await;
    assert_eq!(message.key, "order-17");
    assert_eq!(message.headers["content-type"], "application/json");
    assert_eq!(message.headers["idempotency-key"], "retry-1");
    assert_eq!(message.offset, published.offset);
}

#[tokio::test]
async fn closing_a_connection_frees_every_subscription_it_held() {
    let server = start().await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    for id in 1..=5 {
        client.subscribe_topic(id, &format!("topic-{id}")).await;
    }
    let stats_now = stats(addr).await;
    assert_eq!(
        (
            &stats_now["connections"],
            &stats_now["subscriptions"],
            &stats_now["topics"]
        ),
        (&1.into(), &5.into(), &5.into())
    );
    client.close().await;
    wait_for_stat(addr, "subscriptions", 0).await;
    wait_for_stat(addr, "topics", 0).await;
    wait_for_stat(addr, "connections", 0).await;
}

#[tokio::test]
async fn table_feeds_answer_source_unavailable_without_a_database() {
    let server = start().await;
    let mut client = Client::connect(server.local_addr()).await;
    let err = client
        .expect_error(
            Command::Subscribe(pb::Subscribe {
                subscription_id: 1,
                source: Some(pb::subscribe::Source::Table(pb::TableFeed {
                    table: "public.orders".into(),
                    include_initial: true,
                    ..Default::default()
                })),
                resume_from: Default::default(),
            }),
            ErrorCode::SourceUnavailable,
        )
        .await;
    assert_eq!(err.details["table"], "public.orders");
    client.barrier().await;
}
