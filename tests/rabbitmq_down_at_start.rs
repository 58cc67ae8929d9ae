//! feedgate started while RabbitMQ is down (its own test binary: it stops the machine's
//! RabbitMQ application, which tests running beside it would notice).

mod support;

use std::time::Duration;

use support::rabbit::{config, exchange, rabbitmqctl, wait_rabbit_connected, Amqp};
use support::*;

#[tokio::test]
async fn a_broker_down_at_start_is_reported_and_connected_to_once_it_is_up() {
    rabbitmqctl(&["stop_app"]);
    let exchange = exchange();
    let server = start_with(config(&exchange)).await;
    let addr = server.local_addr();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats(addr).await["rabbitmq"], "unavailable");
    let mut client = Client::connect(addr).await;
    let err = client
        .expect_error(
            subscribe_topic(1, "rabbit.late"),
            ErrorCode::SourceUnavailable,
        )
        .await;
    assert!(err.retryable);
    client.subscribe_topic(2, "local.ok").await; // the rest of the server works

    rabbitmqctl(&["start_app"]);
    wait_rabbit_connected(addr).await;
    client.subscribe_topic(1, "rabbit.late").await;
    let amqp = Amqp::connect(&exchange).await;
    amqp.publish("rabbit.late", b"finally", None).await;
    assert_eq!(&client.recv_message(1).await.payload[..], b"finally");
    amqp.delete_exchange().await;
    server.shutdown().await.expect("shutdown");
}
