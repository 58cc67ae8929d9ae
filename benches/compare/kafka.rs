//! Kafka to client: one Kafka topic holding `records` 256-byte records; librdkafka's raw consume
//! rate of them on the same broker (one consumer assigned the partition from the beginning) is
//! the limit, and feedgate delivers them to `subscribers` WebSocket subscribers that each ask for
//! the topic from its earliest record.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::load::PAYLOAD;
use crate::scenarios;
use crate::systems;

#[derive(Debug, Clone, Serialize)]
pub struct Kafka {
    pub records: u64,
    pub subscribers: usize,
    pub raw_records_per_second: f64,
    /// All subscribers' deliveries ÷ the time from the first subscribe to the last delivery.
    pub deliveries_per_second: f64,
    /// deliveries_per_second ÷ raw_records_per_second.
    pub ratio: f64,
    pub delivered: u64,
    pub expected: u64,
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    client
}

pub async fn kafka_to_client(bootstrap: &str, records: u64, subscribers: usize) -> Result<Kafka> {
    let topic = format!("kafka.bench.{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &options,
        )
        .await?
    {
        result.map_err(|(name, code)| anyhow::anyhow!("create topic {name}: {code}"))?;
    }

    let producer: FutureProducer = client(bootstrap)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .create()?;
    let payload = vec![b'x'; PAYLOAD];
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|n| {
            let key = n.to_string();
            let (producer, payload, topic) = (&producer, &payload, &topic);
            async move {
                let record = FutureRecord::to(topic).key(&key).payload(payload);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for sent in futures_util::future::join_all(sends).await {
            sent.context("produce")?;
        }
    }

    // The limit: one librdkafka consumer reading them all from the beginning.
    let raw_seconds = {
        let topic = topic.clone();
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || raw_consume(&bootstrap, &topic, records)).await??
    };

    let toml = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\n[[topics]]\npattern = \"kafka.#\"\nbackend = \"kafka\"\n\n[[topics]]\npattern = \"#\"\nbackend = \"memory\"\n"
    );
    let feedgate = systems::feedgate_with(None, Some(&toml))?;
    let figures = scenarios::from_earliest(&feedgate, subscribers, &topic, records).await?;
    let raw_records_per_second = records as f64 / raw_seconds;
    Ok(Kafka {
        records,
        subscribers,
        raw_records_per_second,
        deliveries_per_second: figures.deliveries_per_second,
        ratio: figures.deliveries_per_second / raw_records_per_second,
        delivered: figures.deliveries,
        expected: figures.expected,
    })
}

fn raw_consume(bootstrap: &str, topic: &str, records: u64) -> Result<f64> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", "feedgate-bench-raw")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let start = Instant::now();
    let mut consumed = 0;
    while consumed < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => consumed += 1,
            Some(Err(err)) => bail!("raw consume: {err}"),
            None => bail!("raw consume: nothing for 10 s after {consumed} records"),
        }
    }
    Ok(start.elapsed().as_secs_f64())
}
