//! The Kafka backend (rdkafka, any Kafka-protocol broker).
//!
//! Consumers never join a consumer group: each is *assigned* every partition of its topic
//! explicitly, so every feedgate node reads every record (a shared group would split the
//! partitions between nodes and each node's clients would miss the others' share). One consumer
//! per topic per node serves all `START_POSITION_LATEST` subscribers of that node; it is
//! positioned at each partition's high watermark before the first `Subscribed` is answered, so
//! "latest" means "produced after Subscribed". A subscription that asks for `EARLIEST` or an
//! `OFFSET` gets a consumer of its own, positioned there.
//!
//! Publishing answers `Published` with the record's partition and offset once the delivery
//! report arrived; a refusal or no report within `publish_timeout` answers a retryable
//! `PUBLISH_FAILED`. librdkafka reconnects by itself; while consuming fails, subscribers get
//! `SourceStatus { available: false }`, and `available: true` once it works again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Receipt, TopicSubscribe};
use crate::config::KafkaConfig;
use crate::protocol::{
    now_micros, share_event, Code, EventBody, Failure, StartPosition, TopicMessage,
};
use crate::registry::{Registration, Registry};

/// How long metadata and watermark requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kafka backend. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBroker {
    shared: Arc<Shared>,
}

struct Shared {
    config: KafkaConfig,
    /// This node's id: names its (never-committed) consumer group id.
    node: String,
    producer: FutureProducer,
    registry: Registry,
    /// Registry keys with a running consumer, and the token that stops it.
    consumers: AsyncMutex<HashMap<String, CancellationToken>>,
    available: AtomicBool,
}

impl KafkaBroker {
    /// Creates the producer (it connects lazily). Fails only on invalid client properties.
    pub fn start(config: KafkaConfig) -> Result<Self, KafkaError> {
        let producer = client_config(&config)
            .set(
                "message.timeout.ms",
                config.publish_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            shared: Arc::new(Shared {
                node: uuid::Uuid::new_v4().simple().to_string(),
                config,
                producer,
                registry: Registry::default(),
                consumers: AsyncMutex::new(HashMap::new()),
                available: AtomicBool::new(true),
            }),
        })
    }

    /// The registry of this backend's subscribers.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Whether consuming works (as far as this node has seen).
    pub fn is_available(&self) -> bool {
        self.shared.available.load(Ordering::Acquire)
    }

    /// Positions a consumer (shared for LATEST, private otherwise) and registers the subscriber.
    pub async fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(),
    ) -> Result<Registration, Failure> {
        if !request.resume_from.is_empty() {
            return Err(Failure::new(
                Code::ResumeUnavailable,
                "Kafka subscriptions resume with start = OFFSET, not resume_from",
            )
            .detail("topic", request.topic));
        }
        let key = match request.start {
            StartPosition::Latest => request.topic.to_owned(),
            // A private consumer: a key no other subscriber shares.
            _ => format!(
                "{}\u{1f}{}:{}",
                request.topic, request.subscriber.connection, request.subscriber.subscription_id
            ),
        };
        // Registered under the consumers lock, which retiring an unused consumer also takes.
        let mut consumers = self.shared.consumers.lock().await;
        if !consumers.contains_key(&key) {
            let consumer = self.open_consumer(request.topic, request.start).await?;
            let stop = CancellationToken::new();
            let broker = self.clone();
            let (task_key, task_stop) = (key.clone(), stop.clone());
            tokio::spawn(async move { broker.deliver(consumer, &task_key, task_stop).await });
            consumers.insert(key.clone(), stop);
        }
        let registration =
            self.shared
                .registry
                .subscribe(&key, request.subscriber, request.mailbox, announce);
        drop(consumers);
        Ok(registration)
    }

    /// Produces one record and waits for its delivery report.
    pub async fn publish(&self, message: TopicMessage) -> Result<Receipt, Failure> {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &message.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&message.topic)
            .payload(&message.payload[..])
            .headers(headers)
            .timestamp(now_micros() / 1000);
        if !message.key.is_empty() {
            record = record.key(message.key.as_bytes());
        }
        match self
            .shared
            .producer
            .send(record, self.shared.config.publish_timeout)
            .await
        {
            Ok(delivery) => Ok(Receipt {
                offset: delivery.offset,
                cursor: cursor(delivery.partition, delivery.offset),
            }),
            Err((err, _)) => Err(Failure::new(
                Code::PublishFailed,
                format!("Kafka did not accept the message: {err}"),
            )
            .retryable(500)
            .detail("topic", &message.topic)),
        }
    }

    /// A consumer assigned every partition of `topic` at `start`.
    async fn open_consumer(
        &self,
        topic: &str,
        start: StartPosition,
    ) -> Result<StreamConsumer, Failure> {
        let consumer: StreamConsumer = client_config(&self.shared.config)
            .set("group.id", format!("feedgate-{}", self.shared.node))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|err| unavailable(topic, &err))?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || assign(consumer, &topic, start))
            .await
            .map_err(|err| Failure::new(Code::Internal, err.to_string()))?
    }

    /// Fans records out until stopped or nobody on this node listens any more.
    async fn deliver(&self, consumer: StreamConsumer, key: &str, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    if self.retire_if_unused(key).await {
                        break;
                    }
                }
                record = consumer.recv() => match record {
                    Ok(record) => {
                        self.set_available(None);
                        let message = topic_message(&record);
                        let position = cursor(record.partition(), record.offset());
                        self.shared.registry.publish(key, || {
                            share_event(&position, EventBody::Message(&message))
                        });
                    }
                    Err(err) => {
                        debug!(error = %err, "kafka consume error");
                        self.set_available(Some(&err));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        debug!(key, "kafka consumer retired");
    }

    async fn retire_if_unused(&self, key: &str) -> bool {
        let mut consumers = self.shared.consumers.lock().await;
        if self.shared.registry.has_subscribers(key) {
            return false;
        }
        consumers.remove(key);
        true
    }

    fn set_available(&self, error: Option<&KafkaError>) {
        let available = error.is_none();
        if self.shared.available.swap(available, Ordering::AcqRel) == available {
            return;
        }
        if let Some(err) = error {
            warn!(error = %err, "kafka unavailable");
        }
        let failure = error.map(|err| {
            Failure::new(
                Code::SourceUnavailable,
                format!("Kafka is unavailable: {err}"),
            )
            .retryable(1000)
        });
        self.shared
            .registry
            .broadcast(&share_event(&[], EventBody::Status(failure.as_ref())));
    }
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (name, value) in &config.properties {
        client.set(name, value);
    }
    client
}

/// Blocking: looks the topic up and assigns all its partitions at `start`.
fn assign(
    consumer: StreamConsumer,
    topic: &str,
    start: StartPosition,
) -> Result<StreamConsumer, Failure> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|err| unavailable(topic, &err))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(
            Failure::new(Code::NotFound, format!("no Kafka topic named {topic}"))
                .detail("topic", topic),
        );
    }
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let offset = match start {
            StartPosition::Latest => {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                    .map_err(|err| unavailable(topic, &err))?;
                Offset::Offset(high)
            }
            StartPosition::Earliest => Offset::Beginning,
            StartPosition::Offset(offset) => Offset::Offset(offset),
        };
        assignment
            .add_partition_offset(topic, partition, offset)
            .map_err(|err| unavailable(topic, &err))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| unavailable(topic, &err))?;
    Ok(consumer)
}

fn unavailable(topic: &str, err: &KafkaError) -> Failure {
    Failure::new(
        Code::SourceUnavailable,
        format!("Kafka is unavailable: {err}"),
    )
    .retryable(1000)
    .detail("topic", topic)
}

fn topic_message<M: Message>(record: &M) -> TopicMessage {
    let mut headers = Vec::new();
    if let Some(list) = record.headers() {
        for header in list.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            headers.push((header.key.to_owned(), value.into_owned()));
        }
    }
    headers.sort();
    TopicMessage {
        topic: record.topic().to_owned(),
        payload: Bytes::copy_from_slice(record.payload().unwrap_or_default()),
        key: record
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        headers,
        timestamp_micros: record.timestamp().to_millis().map_or(0, |ms| ms * 1000),
        partition: record.partition(),
        offset: record.offset(),
    }
}

/// A record's cursor: version, kind `k`, partition, offset.
fn cursor(partition: i32, offset: i64) -> Bytes {
    let mut cursor = BytesMut::with_capacity(14);
    cursor.put_u8(1);
    cursor.put_u8(b'k');
    cursor.put_i32(partition);
    cursor.put_i64(offset);
    cursor.freeze()
}
