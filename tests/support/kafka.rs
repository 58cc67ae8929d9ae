//! Kafka test helpers: a config routing `kafka.#` topics to the Kafka-protocol broker that
//! scripts/test starts (tansu, FEEDGATE_TEST_KAFKA, default 127.0.0.1:9092), and a real
//! rdkafka producer/consumer on the side.
#![allow(dead_code)]

use std::time::Duration;

use feedgate::config::{BackendKind, TopicRule};
use feedgate::config::{Config, KafkaConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub fn bootstrap() -> String {
    std::env::var("FEEDGATE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic name of the test's own.
pub fn topic() -> String {
    format!("kafka.test.{}", uuid::Uuid::new_v4().simple())
}

/// `kafka.#` goes to Kafka at `bootstrap`; everything else stays in memory.
pub fn config_at(bootstrap: &str) -> Config {
    let mut config = super::test_config();
    config.kafka = Some(KafkaConfig {
        bootstrap_servers: bootstrap.into(),
        properties: Default::default(),
        publish_timeout: Duration::from_secs(10),
    });
    config.topics = vec![
        TopicRule {
            pattern: "kafka.#".into(),
            backend: BackendKind::Kafka,
            allow_wildcards: false,
            stream: false,
        },
        TopicRule {
            pattern: "#".into(),
            backend: BackendKind::Memory,
            allow_wildcards: false,
            stream: false,
        },
    ];
    config
}

pub fn config() -> Config {
    config_at(&bootstrap())
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    client
}

/// Creates a topic with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client(bootstrap).create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for result in results {
        result.expect("topic created");
    }
}

pub async fn delete_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        client(bootstrap).create().expect("admin client");
    let results = admin
        .delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("delete_topics");
    for result in results {
        result.expect("topic deleted");
    }
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    client(bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer")
}

/// Produces one record with a key and a header; returns (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> (i32, i64) {
    let record =
        FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "source",
                value: Some("test"),
            }));
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(err, _)| err)
        .expect("delivered");
    (delivery.partition, delivery.offset)
}

/// A consumer assigned partition 0..partitions of `topic` from the beginning.
pub fn consumer(bootstrap: &str, topic: &str, partitions: i32) -> StreamConsumer {
    let consumer: StreamConsumer = client(bootstrap)
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Produces records 0..count (payload: the number, 4 bytes big-endian) concurrently, so the
/// producer batches many records per request; waits for every delivery report.
pub async fn produce_batched(producer: &FutureProducer, topic: &str, count: u32) {
    let sends = (0..count).map(|n| async move {
        let payload = n.to_be_bytes();
        let record = FutureRecord::to(topic).key("k").payload(&payload[..]);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(err, _)| err)
            .expect("delivered");
    });
    futures_util::future::join_all(sends).await;
}
