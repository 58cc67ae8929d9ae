//! The Kafka backend (rdkafka, any Kafka-protocol broker).
//!
//! Consumers never join a consumer group: each is *assigned* every partition of its topic
//! explicitly, so every feedgate node reads every record (a shared group would split the
//! partitions between nodes and each node's clients would miss the others' share). One consumer
//! per topic per node serves all `START_POSITION_LATEST` subscribers of that node; it is
//! positioned at each partition's high watermark before the first `Subscribed` is answered, so
//! "latest" means "produced after Subscribed". A subscription that asks for `EARLIEST` or an
//! `OFFSET`, or resumes from a cursor, gets a consumer of its own, positioned there. Each record's
//! cursor is the feed's position right after it (every partition's next offset), which is what a
//! resume assigns; offsets the topic no longer has answer `RESUME_UNAVAILABLE`.
//!
//! Publishing answers `Published` with the record's partition and offset once the delivery
//! report arrived; a refusal or no report within `publish_timeout` answers a retryable
//! `PUBLISH_FAILED`. librdkafka reconnects by itself; when it reports that all brokers are down,
//! subscribers get `SourceStatus { available: false }`, and `available: true` once a record
//! arrives or a metadata probe (every second while unavailable) succeeds.
//!
//! **Consumers do not outlive an outage.** When the brokers go down, every consumer is closed at
//! once, and a fresh one is opened at the positions reached only after the probe saw the brokers
//! back and the topic exists again. An old consumer that kept fetching across a broker restart
//! could crash the whole process: a broker that lost its log (tansu with in-memory storage)
//! answers its fetches for the old topic id with a reply that makes librdkafka 2.12 dereference a
//! null topic name (SIGSEGV in `rd_kafka_metadata_update_op`). A fresh client learns the topic
//! anew from its first metadata request and never sends such a fetch. The close races the
//! broker's return, so this narrows the window rather than closing it; and a topic deleted under
//! a running consumer on tansu still crashes it at the next fetch, which nothing here can avoid.
//! See docs/brokers.md, "When a broker client misbehaves".
//!
//! How far this node's consumers are behind their partitions' ends is sampled off the delivery
//! path, for `/metrics` ([`lag`]).

mod lag;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::TopicState;
use super::{cannot_start_there, fan_out, fan_out_waiting, ReadyAt, TopicRegistration};
use super::{Consumers, Receipt, TopicSubscribe};
use crate::config::KafkaConfig;
use crate::cursor::{encode_kafka_positions, Cursor};
use crate::protocol::{
    now_micros, share_event, Code, EventBody, Failure, StartPosition, TopicMessage,
};
use crate::registry::Registry;
use crate::source::{Availability, Health};

/// How long metadata and watermark requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// What librdkafka's callbacks need: the subscribers to tell, the availability, and the outages
/// seen.
struct Signals {
    registry: Registry<TopicState>,
    health: Health,
    /// Counts outages (availability lost); each consumer's task watches it and closes its
    /// consumer at once, so that no consumer fetches across a broker restart.
    outages: watch::Sender<u64>,
}

impl Signals {
    /// Records availability; when it changes, every subscriber gets a status event.
    fn set(&self, unavailable: Option<String>) {
        let failure = unavailable.as_ref().map(|why| {
            Failure::new(
                Code::SourceUnavailable,
                format!("Kafka is unavailable: {why}"),
            )
            .retryable(1000)
        });
        let lost = failure.is_some();
        if self.health.set(failure, |status| {
            self.registry.broadcast(status);
        }) && lost
        {
            warn!(
                error = unavailable.as_deref().unwrap_or_default(),
                "kafka unavailable"
            );
            self.outages.send_modify(|outages| *outages += 1);
        }
    }
}

/// What one consumer serves and how far it got.
struct Feed {
    /// Registry key: the topic, or a private key for EARLIEST/OFFSET subscriptions.
    key: String,
    topic: String,
    /// Next offset to read, per partition.
    positions: HashMap<i32, i64>,
    /// A consumer of one EARLIEST/OFFSET subscriber: it waits for room in that subscriber's
    /// queue (backpressure) instead of closing it as a slow consumer.
    private: bool,
    /// `positions`, as the lag sampler reads them.
    progress: Arc<lag::Progress>,
}

/// librdkafka reports "all brokers down" through the client context, not through consuming.
#[derive(Clone)]
struct Context(Arc<Signals>);

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka also reports "0/N brokers are down" under this code once they are back.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && !reason.starts_with("0/")
        {
            self.0.set(Some(reason.to_owned()));
        } else {
            debug!(error = %error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for Context {}

/// The Kafka backend. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBroker {
    shared: Arc<Shared>,
}

struct Shared {
    config: KafkaConfig,
    /// This node's id: names its (never-committed) consumer group id.
    node: String,
    producer: FutureProducer<Context>,
    signals: Arc<Signals>,
    /// Registry keys with a running consumer, and the token that stops it.
    consumers: Consumers,
    /// Each shared (LATEST) feed's position after the last record it fanned out, which a new
    /// subscriber's `Ready` carries. Written after the fan-out, so a subscriber joining
    /// meanwhile may get that record again on a resume, never miss it.
    positions: std::sync::Mutex<HashMap<String, Bytes>>,
    /// Where consumer tasks run, so that shutdown waits for them (and their consumers' close).
    tasks: tokio_util::task::TaskTracker,
    /// Stops the probe; every consumer's stop token is a child of it.
    shutdown: CancellationToken,
    /// How far behind the consumers are, for `/metrics`.
    lag: Arc<lag::Lag>,
}

impl KafkaBroker {
    /// Creates the producer (it connects lazily) and the health probe. Fails only on invalid
    /// client properties.
    pub fn start(
        config: KafkaConfig,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Result<Self, KafkaError> {
        let signals = Arc::new(Signals {
            registry: Registry::default(),
            health: Health::new(true),
            outages: watch::Sender::new(0),
        });
        let producer = client_config(&config)
            .set(
                "message.timeout.ms",
                config.publish_timeout.as_millis().to_string(),
            )
            .create_with_context(Context(signals.clone()))?;
        let broker = Self {
            shared: Arc::new(Shared {
                node: uuid::Uuid::new_v4().simple().to_string(),
                config,
                producer,
                signals,
                consumers: Consumers::default(),
                positions: std::sync::Mutex::default(),
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
                lag: Arc::default(),
            }),
        };
        tasks.spawn(broker.clone().probe(shutdown.clone()));
        let signals = broker.shared.signals.clone();
        tasks.spawn(broker.shared.lag.clone().run(
            broker.shared.producer.clone(),
            move || signals.health.is_available(),
            shutdown,
        ));
        Ok(broker)
    }

    /// The registry of this backend's subscribers.
    pub fn registry(&self) -> &Registry<TopicState> {
        &self.shared.signals.registry
    }

    /// Whether the brokers are reachable (as far as this node has seen).
    pub fn is_available(&self) -> bool {
        self.shared.signals.health.is_available()
    }

    /// Records this node's consumers are behind their partitions' high watermarks, as last
    /// sampled (see [`lag`]); `None` before the first sample.
    pub fn consumer_lag(&self) -> Option<u64> {
        self.shared.lag.sampled()
    }

    /// Whether the brokers are reachable, for `/v1/stats`.
    pub fn availability(&self) -> Availability {
        self.shared.signals.health.availability()
    }

    /// While unavailable, asks for metadata every second; success means the brokers are back.
    async fn probe(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.is_available() {
                continue;
            }
            let producer = self.shared.producer.clone();
            let probe = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, METADATA_TIMEOUT)
                    .map(|_| ())
            })
            .await;
            if matches!(probe, Ok(Ok(()))) {
                self.shared.signals.set(None);
            }
        }
    }

    /// Positions a consumer (shared for LATEST, private otherwise) and registers the subscriber.
    pub async fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> Result<TopicRegistration, Failure> {
        let resume = match request.resume_from {
            [] => None,
            cursor => Some(resume_positions(cursor, request.topic)?),
        };
        let private = resume.is_some() || request.start != StartPosition::Latest;
        let key = if private {
            // A private consumer: a key no other subscriber shares.
            format!(
                "{}\u{1f}{}:{}",
                request.topic, request.subscriber.connection, request.subscriber.subscription_id
            )
        } else {
            request.topic.to_owned()
        };
        // Registered under the consumers lock, which retiring an unused consumer also takes.
        let mut consumers = self.shared.consumers.lock().await;
        let opened = if consumers.contains_key(&key) {
            None
        } else {
            let (start, positions, strict) = match resume {
                // Partitions the cursor does not name are newer than it: all of them.
                Some(positions) => (StartPosition::Earliest, positions, true),
                None => (request.start, HashMap::new(), false),
            };
            Some(
                self.open_consumer(request.topic, start, positions, strict)
                    .await?,
            )
        };
        let position = match &opened {
            Some((_, assigned)) => {
                let position = encode_positions(request.topic, assigned);
                if !private {
                    self.shared.set_position(&key, position.clone());
                }
                position
            }
            None => self.shared.position(&key),
        };
        // The subscriber is registered before a new consumer's task starts, so that no record
        // it reads finds nobody to deliver to.
        let registration = self.registry().subscribe(
            &key,
            request.subscriber,
            request.mailbox,
            TopicState::new(request.filter.clone(), request.squash),
            || announce(ReadyAt::Now(position)),
        );
        if let Some((consumer, positions)) = opened {
            let stop = self.shared.shutdown.child_token();
            let broker = self.clone();
            let feed = Feed {
                key: key.clone(),
                topic: request.topic.to_owned(),
                progress: self.shared.lag.track(&key, request.topic, &positions),
                positions,
                private,
            };
            let task_stop = stop.clone();
            self.shared
                .tasks
                .spawn(async move { broker.deliver(consumer, feed, task_stop).await });
            consumers.insert(key.clone(), stop);
        }
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
                cursor: Cursor::Kafka {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }
                .encode(),
            }),
            Err((err, _)) => Err(Failure::new(
                Code::PublishFailed,
                format!("Kafka did not accept the message: {err}"),
            )
            .retryable(500)
            .detail("topic", &message.topic)),
        }
    }

    /// A consumer assigned every partition of `topic`: at `positions` where known (see
    /// [`assign`]), else at `start`. Returns it with the positions it was assigned.
    async fn open_consumer(
        &self,
        topic: &str,
        start: StartPosition,
        positions: HashMap<i32, i64>,
        strict: bool,
    ) -> Result<(StreamConsumer<Context>, HashMap<i32, i64>), Failure> {
        let consumer: StreamConsumer<Context> = client_config(&self.shared.config)
            .set("group.id", format!("feedgate-{}", self.shared.node))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(Context(self.shared.signals.clone()))
            .map_err(|err| unavailable(topic, &err))?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || assign(consumer, &topic, start, positions, strict))
            .await
            .map_err(|err| Failure::new(Code::Internal, err.to_string()))?
    }

    /// Fans records out until stopped or nobody on this node listens any more. When the brokers
    /// go down it closes the consumer at once; once they are back and the topic exists, it opens
    /// a fresh one at the positions reached (see the module docs for why never the old one).
    async fn deliver(
        &self,
        consumer: StreamConsumer<Context>,
        mut feed: Feed,
        stop: CancellationToken,
    ) {
        let mut consumer = Some(consumer);
        let mut outages = self.shared.signals.outages.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Ok(()) = outages.changed() => {
                    if let Some(old) = consumer.take() {
                        debug!(key = %feed.key, "brokers down: kafka consumer closed");
                        close(old).await;
                    }
                }
                _ = tick.tick() => {
                    if self.retire_if_unused(&feed.key).await {
                        break;
                    }
                    if consumer.is_none() && self.is_available() {
                        consumer = self.reopen(&mut feed).await;
                    }
                }
                record = next_record(consumer.as_ref()) => match record {
                    Ok(record) => {
                        self.shared.signals.set(None);
                        let next = feed.positions.get(&record.partition()).copied();
                        if next.is_some_and(|next| record.offset() < next) {
                            // Already delivered (or before where this feed started): a broker
                            // that serves a record twice must not make a subscriber see it twice.
                            continue;
                        }
                        feed.positions.insert(record.partition(), record.offset() + 1);
                        feed.progress.advance(record.partition(), record.offset() + 1);
                        let message = topic_message(&record);
                        // The position right after this record: every partition's next
                        // offset, so that a resume continues each where this left it.
                        let position = encode_positions(&feed.topic, &feed.positions);
                        let encode = || share_event(&position, EventBody::Message(&message));
                        if feed.private {
                            // One reader replaying history: wait for it rather than overflow
                            // its queue (the broker keeps the rest).
                            fan_out_waiting(self.registry(), &feed.key, &message, encode).await;
                        } else {
                            fan_out(self.registry(), &feed.key, &message, &mut None, encode);
                            self.shared.set_position(&feed.key, position);
                        }
                    }
                    Err(err) if topic_gone(&err) => {
                        // The topic was deleted (and may be created again under a new id): a
                        // fresh consumer, opened once it exists, reads the new one.
                        debug!(key = %feed.key, error = %err, "kafka topic gone: consumer closed");
                        if let Some(old) = consumer.take() {
                            close(old).await;
                        }
                    }
                    Err(err) => {
                        debug!(error = %err, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        if let Some(old) = consumer {
            close(old).await;
        }
        self.shared.lag.forget(&feed.key, &feed.progress);
        debug!(key = %feed.key, "kafka consumer retired");
    }

    /// Opens a fresh consumer for `feed` at the positions it reached, or `None` when the topic
    /// cannot be read yet (the next tick tries again).
    async fn reopen(&self, feed: &mut Feed) -> Option<StreamConsumer<Context>> {
        let positions = feed.positions.clone();
        match self
            .open_consumer(&feed.topic, StartPosition::Latest, positions, false)
            .await
        {
            Ok((consumer, positions)) => {
                feed.progress.reset(&positions);
                feed.positions = positions;
                debug!(key = %feed.key, "kafka consumer re-opened");
                Some(consumer)
            }
            Err(err) => {
                debug!(key = %feed.key, error = %err, "cannot re-open kafka consumer yet");
                None
            }
        }
    }

    async fn retire_if_unused(&self, key: &str) -> bool {
        let forget_position = || {
            self.shared
                .positions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(key);
        };
        self.shared
            .consumers
            .retire_if_unused(self.registry(), key, forget_position)
            .await
    }
}

/// The next record of `consumer`; never completes without one (while the brokers are down).
/// Cancel safe (as `StreamConsumer::recv`).
async fn next_record(
    consumer: Option<&StreamConsumer<Context>>,
) -> Result<rdkafka::message::BorrowedMessage<'_>, KafkaError> {
    match consumer {
        Some(consumer) => consumer.recv().await,
        None => std::future::pending().await,
    }
}

/// Stops a consumer's fetching and closes it. librdkafka's close can block, so it runs on the
/// blocking pool.
async fn close(consumer: StreamConsumer<Context>) {
    let closing = tokio::task::spawn_blocking(move || {
        let _ = consumer.unassign();
        drop(consumer);
    });
    if let Err(err) = closing.await {
        warn!(error = %err, "closing a kafka consumer failed");
    }
}

/// Whether a consume error says the topic no longer exists (deleted, or the broker lost it).
fn topic_gone(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopicId
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (name, value) in &config.properties {
        client.set(name, value);
    }
    client
}

/// Blocking: looks the topic up and assigns all its partitions, each at its known position, or
/// at `start` when none is known. A known position beyond the partition's end means the broker
/// lost that log (a broker with in-memory storage restarted): the new log is read from its
/// beginning, since every record in it is new.
fn assign(
    consumer: StreamConsumer<Context>,
    topic: &str,
    start: StartPosition,
    positions: HashMap<i32, i64>,
    strict: bool,
) -> Result<(StreamConsumer<Context>, HashMap<i32, i64>), Failure> {
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
    let mut assigned = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|err| unavailable(topic, &err))?;
        if let (true, Some(&next)) = (strict, positions.get(&partition)) {
            check_in_range(topic, partition, next, (low, high))?;
        }
        let offset = match (positions.get(&partition), start) {
            (Some(&next), _) if next <= high => next,
            (Some(_), _) => low,
            (None, StartPosition::Latest) => high,
            (None, StartPosition::Earliest) => low,
            (None, StartPosition::Offset(offset)) => offset.max(low),
        };
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|err| unavailable(topic, &err))?;
        assigned.insert(partition, offset);
    }
    consumer
        .assign(&assignment)
        .map_err(|err| unavailable(topic, &err))?;
    Ok((consumer, assigned))
}

impl Shared {
    /// A shared feed's position after its last fanned-out record (empty before it has one).
    fn position(&self, key: &str) -> Bytes {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        positions.get(key).cloned().unwrap_or_default()
    }

    fn set_position(&self, key: &str, position: Bytes) {
        self.positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), position);
    }
}

/// A feed position as a cursor: every partition's next offset, in partition order.
fn encode_positions(topic: &str, positions: &HashMap<i32, i64>) -> Bytes {
    let mut next: Vec<(i32, i64)> = positions.iter().map(|(p, o)| (*p, *o)).collect();
    next.sort_unstable();
    encode_kafka_positions(topic.as_bytes(), next.into_iter())
}

/// Reads a `resume_from` for `topic`: a Kafka subscription's positions, by partition.
fn resume_positions(cursor: &[u8], topic: &str) -> Result<HashMap<i32, i64>, Failure> {
    let why = match Cursor::decode(cursor) {
        Ok(Cursor::KafkaPositions { topic: of, next }) if of == topic.as_bytes() => {
            return Ok(next.into_iter().collect());
        }
        Ok(Cursor::KafkaPositions { .. }) => "the cursor is another topic's".to_owned(),
        Ok(Cursor::Kafka { .. }) => "the cursor names one record (a Published cursor, or one \
             from a feedgate before Kafka topics could resume); resume from an event's cursor"
            .to_owned(),
        Ok(_) => "the cursor is not a Kafka topic's".to_owned(),
        Err(err) => format!("the cursor cannot be read: {err}"),
    };
    Err(cannot_start_there(topic, &why))
}

/// A resumed partition's next offset must still be in the topic: below its first record, the
/// records between were deleted (retention); past its end, the cursor is another topic's of that
/// name (deleted and created again) or forged.
fn check_in_range(
    topic: &str,
    partition: i32,
    next: i64,
    (low, high): (i64, i64),
) -> Result<(), Failure> {
    let why = if next < low {
        format!("partition {partition}: records from offset {next} on are no longer kept (the first is {low})")
    } else if next > high {
        format!("partition {partition}: offset {next} is past the topic's end ({high})")
    } else {
        return Ok(());
    };
    Err(cannot_start_there(topic, &why).detail("partition", partition))
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
