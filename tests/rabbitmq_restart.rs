//! RabbitMQ restarted under a running feedgate (its own test binary: it restarts the machine's
//! RabbitMQ, which tests running beside it would notice).

mod support;

use std::time::Duration;

use feedgate::protocol::pb;
use support::rabbit::{config, exchange, rabbitmqctl, wait_rabbit_connected, Amqp};
use support::*;

fn status_event(event: pb::Event) -> pb::SourceStatus {
    match event.body {
        Some(pb::event::Body::Status(status)) => status,
        other => panic!("expected a status event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broker_restart_is_announced_survived_and_delivery_resumes() {
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    let addr = server.local_addr();
    wait_rabbit_connected(addr).await;
    let mut client = Client::connect(addr).await;
    client.subscribe_topic(1, "rabbit.ticks").await;
    client.subscribe_topic(2, "local.ticks").await;
    let mut publisher = Client::connect(addr).await;
    publisher.publish("rabbit.ticks", b"before").await;
    assert_eq!(&client.recv_message(1).await.payload[..], b"before");

    rabbitmqctl(&["stop_app"]);
    let status = status_event(client.recv_event().await);
    assert!(!status.available);
    let error = status.error.expect("why");
    assert_eq!(error.code(), ErrorCode::SourceUnavailable);
    assert!(error.retryable);
    // Publishing to the broker fails with a retryable code; everything else keeps working.
    let err = publisher
        .expect_error(publish("rabbit.ticks", b"lost"), ErrorCode::PublishFailed)
        .await;
    assert!(err.retryable);
    publisher.publish("local.ticks", b"in-process").await;
    assert_eq!(&client.recv_message(2).await.payload[..], b"in-process");
    assert_eq!(stats(addr).await["rabbitmq"], "unavailable");

    rabbitmqctl(&["start_app"]);
    let status = status_event(client.recv_event().await);
    assert!(status.available, "{status:?}");
    wait_rabbit_connected(addr).await;
    // The subscription was re-bound without resubscribing: a real publisher reaches it again.
    let amqp = Amqp::connect(&exchange).await;
    amqp.publish("rabbit.ticks", b"after", None).await;
    assert_eq!(&client.recv_message(1).await.payload[..], b"after");
    publisher.publish("rabbit.ticks", b"through feedgate").await;
    assert_eq!(
        &client.recv_message(1).await.payload[..],
        b"through feedgate"
    );
    amqp.delete_exchange().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await.expect("shutdown");
}
