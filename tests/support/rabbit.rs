//! RabbitMQ test helpers: a config routing topics to RabbitMQ with an exchange of the test's own,
//! and a real lapin publisher/consumer on the side.
#![allow(dead_code)]

use std::time::Duration;

use feedgate::config::{BackendKind, TopicRule};
use feedgate::config::{Config, RabbitConfig};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

pub fn amqp_url() -> String {
    std::env::var("FEEDGATE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A unique exchange name for one test.
pub fn exchange() -> String {
    format!("feedgate_test_{}", uuid::Uuid::new_v4().simple())
}

/// Topics under `rabbit.` (wildcards allowed) go to RabbitMQ; everything else stays in memory.
pub fn config(exchange: &str) -> Config {
    let mut config = super::test_config();
    config.rabbitmq = Some(RabbitConfig {
        url: amqp_url(),
        exchange: exchange.into(),
        exchange_type: "topic".into(),
        prefetch: 64,
        publish_timeout: Duration::from_secs(5),
        stream_prefix: format!("{exchange}.stream."),
        stream_max_bytes: 1 << 30,
        stream_segment_bytes: 64 << 20,
        stream_max_age: Duration::from_secs(3600),
    });
    config.topics = vec![
        TopicRule {
            pattern: "rabbit.#".into(),
            backend: BackendKind::Rabbitmq,
            allow_wildcards: true,
            stream: false,
        },
        TopicRule {
            pattern: "local.#".into(),
            backend: BackendKind::Memory,
            allow_wildcards: false,
            stream: false,
        },
    ];
    config
}

/// [`config`], and topics under `kept.` each kept in a RabbitMQ stream.
pub fn stream_config(exchange: &str) -> Config {
    let mut config = config(exchange);
    config.topics.insert(
        0,
        TopicRule {
            pattern: "kept.#".into(),
            backend: BackendKind::Rabbitmq,
            allow_wildcards: false,
            stream: true,
        },
    );
    config
}

/// Kafka as `kafka::config` routes it, with [`stream_config`]'s RabbitMQ queue and stream
/// topics besides.
pub fn with_kafka_config(exchange: &str) -> Config {
    let rabbit = stream_config(exchange);
    let mut config = super::kafka::config();
    config.rabbitmq = rabbit.rabbitmq;
    let rabbit_topics = rabbit
        .topics
        .into_iter()
        .filter(|rule| rule.backend == BackendKind::Rabbitmq);
    config.topics.splice(0..0, rabbit_topics);
    config
}

pub async fn wait_rabbit_connected(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while super::stats(addr).await["rabbitmq"] != "connected" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rabbitmq never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain AMQP client, as another service would use RabbitMQ.
pub struct Amqp {
    pub connection: Connection,
    pub channel: Channel,
    pub exchange: String,
}

impl Amqp {
    pub async fn connect(exchange: &str) -> Amqp {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("amqp connects");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Amqp {
            connection,
            channel,
            exchange: exchange.into(),
        }
    }

    pub async fn publish(&self, routing_key: &str, payload: &[u8], key_header: Option<&str>) {
        let mut headers = FieldTable::default();
        if let Some(key) = key_header {
            headers.insert("feedgate-key".into(), AMQPValue::LongString(key.into()));
        }
        self.channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes `payload` as mandatory: true when the exchange routed it to a queue, false when
    /// the broker returned it because no queue is bound for `routing_key`.
    pub async fn publish_routed(&self, routing_key: &str, payload: &[u8]) -> bool {
        let confirmation = self
            .channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        match confirmation {
            Confirmation::Ack(returned) => returned.is_none(),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Waits until nothing is bound for `routing_key` any more (a node's queue for it is gone),
    /// probing with mandatory publishes; fails after [`super::WAIT`].
    pub async fn wait_unrouted(&self, routing_key: &str) {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while self.publish_routed(routing_key, b"probe").await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{routing_key} is still routed to a queue"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A queue bound to `binding_key`, consumed.
    pub async fn consume(&self, binding_key: &str) -> lapin::Consumer {
        let queue = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        self.channel
            .queue_bind(
                queue.name().clone(),
                ShortString::from(self.exchange.as_str()),
                ShortString::from(binding_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        self.channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume")
    }

    pub async fn delete_exchange(&self) {
        let _ = self
            .channel
            .exchange_delete(
                ShortString::from(self.exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

/// Deletes the streams of `topics` (durable: they outlive the test) that a server with
/// [`config`]'s stream prefix for `exchange` declared, then the exchange.
pub async fn delete_streams(exchange: &str, topics: &[&str]) {
    let amqp = Amqp::connect(exchange).await;
    for topic in topics {
        let _ = amqp
            .channel
            .queue_delete(
                format!("{exchange}.stream.{topic}").as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    amqp.delete_exchange().await;
}

/// Runs `rabbitmqctl` on this machine's RabbitMQ (tests that stop and start it live in test
/// binaries of their own).
pub fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}");
}
