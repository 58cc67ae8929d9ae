//! Topics routed to a real RabbitMQ (127.0.0.1:5672, guest/guest).

mod support;

use futures_util::StreamExt;
use support::rabbit::{config, exchange, wait_rabbit_connected, Amqp};
use support::*;

#[tokio::test]
async fn subscribers_receive_what_a_real_amqp_publisher_sends() {
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, "rabbit.orders").await;
    let amqp = Amqp::connect(&exchange).await;
    amqp.publish("rabbit.orders", b"from amqp", Some("k-1"))
        .await;
    let message = client.recv_message(1).await;
    assert_eq!(message.topic, "rabbit.orders");
    assert_eq!(&message.payload[..], b"from amqp");
    assert_eq!(message.key, "k-1");
    assert!(message.timestamp_micros > 0);
    amqp.delete_exchange().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_publish_through_feedgate_is_confirmed_and_reaches_a_real_consumer() {
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let amqp = Amqp::connect(&exchange).await;
    let mut consumer = amqp.consume("rabbit.#").await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(Command::Publish(feedgate::protocol::pb::Publish {
            topic: "rabbit.payments".into(),
            payload: bytes::Bytes::from_static(b"paid"),
            key: "p-9".into(),
            headers: [("trace".to_owned(), "abc".to_owned())].into(),
            idempotency_key: "once-1".into(),
        }))
        .await;
    assert!(
        matches!(
            response.result,
            Some(feedgate::protocol::pb::response::Result::Published(_))
        ),
        "{response:?}"
    );
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("delivered in time")
        .expect("a delivery")
        .expect("ok");
    assert_eq!(delivery.routing_key.as_str(), "rabbit.payments");
    assert_eq!(&delivery.data[..], b"paid");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("once-1")
    );
    let headers = delivery.properties.headers().clone().expect("headers");
    assert!(headers.inner().contains_key("trace"));
    amqp.delete_exchange().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn wildcard_subscriptions_follow_amqp_topic_rules_where_the_route_allows_them() {
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, "rabbit.sensors.*.temp").await;
    client.subscribe_topic(2, "rabbit.sensors.#").await;
    // In-process topics take no wildcards; unrouted topics are not found.
    client
        .expect_error(subscribe_topic(3, "local.*"), ErrorCode::Validation)
        .await;
    client
        .expect_error(subscribe_topic(3, "elsewhere"), ErrorCode::NotFound)
        .await;
    client
        .expect_error(publish("rabbit.sensors.*", b"x"), ErrorCode::Validation)
        .await;

    let amqp = Amqp::connect(&exchange).await;
    amqp.publish("rabbit.sensors.kitchen.temp", b"21", None)
        .await;
    amqp.publish("rabbit.sensors.kitchen.humidity", b"40", None)
        .await;
    let mut by_subscription: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for _ in 0..3 {
        let event = client.recv_event().await;
        let Some(feedgate::protocol::pb::event::Body::Message(m)) = event.body else {
            panic!("expected a message");
        };
        by_subscription
            .entry(event.subscription_id)
            .or_default()
            .push(m.topic);
    }
    assert_eq!(by_subscription[&1], vec!["rabbit.sensors.kitchen.temp"]);
    assert_eq!(by_subscription[&2].len(), 2);
    client.barrier().await;
    amqp.delete_exchange().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn two_nodes_share_topics_through_rabbitmq() {
    let exchange = exchange();
    let node_a = start_with(config(&exchange)).await;
    let node_b = start_with(config(&exchange)).await;
    wait_rabbit_connected(node_a.local_addr()).await;
    wait_rabbit_connected(node_b.local_addr()).await;
    let mut on_a = Client::connect(node_a.local_addr()).await;
    let mut also_a = Client::connect(node_a.local_addr()).await;
    let mut on_b = Client::connect(node_b.local_addr()).await;
    on_a.subscribe_topic(1, "rabbit.chat").await;
    also_a.subscribe_topic(7, "rabbit.chat").await;
    on_b.subscribe_topic(2, "rabbit.chat").await;
    let mut publisher = Client::connect(node_b.local_addr()).await;
    for n in 0..20u8 {
        publisher.publish("rabbit.chat", &[n]).await;
    }
    for (client, id) in [(&mut on_a, 1), (&mut also_a, 7), (&mut on_b, 2)] {
        for n in 0..20u8 {
            assert_eq!(
                &client.recv_message(id).await.payload[..],
                &[n],
                "in order, once"
            );
        }
        client.barrier().await;
    }
    // One queue per topic per node, whatever the number of subscribers on it.
    let amqp = Amqp::connect(&exchange).await;
    amqp.delete_exchange().await;
    node_a.shutdown().await.expect("shutdown");
    node_b.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_last_unsubscribe_releases_the_nodes_queue_and_a_new_subscribe_binds_again() {
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    wait_rabbit_connected(server.local_addr()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let amqp = Amqp::connect(&exchange).await;
    client.subscribe_topic(1, "rabbit.cycle").await;
    assert!(amqp.publish_routed("rabbit.cycle", b"bound").await);
    assert_eq!(&client.recv_message(1).await.payload[..], b"bound");
    client.request(unsubscribe(1)).await;
    // The node's consumer retires and its queue goes.
    amqp.wait_unrouted("rabbit.cycle").await;
    client.subscribe_topic(2, "rabbit.cycle").await;
    amqp.publish("rabbit.cycle", b"again", None).await;
    assert_eq!(&client.recv_message(2).await.payload[..], b"again");
    amqp.delete_exchange().await;
    server.shutdown().await.expect("shutdown");
}
