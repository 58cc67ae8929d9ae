//! The RabbitMQ backend (lapin, AMQP 0-9-1).
//!
//! Subscribing to a topic (a binding key; `*`/`#` wildcards where the routing rule allows them)
//! gives this node one server-named, exclusive, auto-delete queue bound to the configured exchange
//! with that key, consumed with a bounded prefetch; each delivery is fanned out to every
//! subscriber of the key on this node and acknowledged after the hand-off. Every node has queues of
//! its own, so every node sees every message: the broker carries fan-out between nodes.
//!
//! Publishing uses publisher confirms: `Published` is answered only after the broker acked the
//! message; a nack, an unreachable broker or no confirm within `publish_timeout` answers a
//! retryable `PUBLISH_FAILED`.
//!
//! Topics whose routing rule says `stream = true` are kept in a RabbitMQ stream each instead
//! ([`stream`]): declared when first subscribed or published to, read from an offset, so that
//! they start from the first kept message or an offset and resume from a cursor. `LATEST`
//! subscribers of a stream topic share one consumer per node, started at the stream's next
//! message; every other start gets a consumer of its own, which waits for room in its
//! subscriber's queue rather than overflow it (the stream keeps the rest).
//!
//! lapin does not reconnect by itself: a connection task does. While RabbitMQ is unreachable,
//! subscribers get a `SourceStatus { available: false }` event; when it is back, the task declares
//! the exchange again, re-binds a queue for every key that still has subscribers, and sends
//! `SourceStatus { available: true }`. Messages published while the node was disconnected are lost
//! to a queue topic (its exclusive queues died with the connection), and subscribers are told of
//! the gap by those two events. A stream topic's consumers start again right after the last
//! message they delivered, so nothing the stream kept is lost; one whose message the retention
//! removed meanwhile ends its subscribers with `RESUME_UNAVAILABLE`.

mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{fan_out, fan_out_waiting, Consumers, Receipt, TopicSubscribe};
use super::{ReadyAt, TopicRegistration, TopicState};
use crate::config::RabbitConfig;
use crate::protocol::{now_micros, share_event, Code, EventBody, Failure, TopicMessage};
use crate::registry::{Registry, Step};
use crate::source::{Availability, Health};
use stream::{Mark, Start};

const KEY_HEADER: &str = "feedgate-key";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the connection task checks that the connection is still up.
const HEALTH_CHECK: Duration = Duration::from_millis(250);

/// The RabbitMQ backend. Cheap to clone.
#[derive(Clone)]
pub struct RabbitBroker {
    shared: Arc<Shared>,
}

struct Shared {
    config: RabbitConfig,
    registry: Registry<TopicState>,
    /// The current connection's channels; `None` while disconnected.
    link: AsyncMutex<Option<Link>>,
    /// Binding keys with a consumer on the current link, and the token that stops it.
    consumers: Consumers,
    health: Health,
    /// The stream feeds by registry key: where each started and the last message it
    /// delivered, which a reconnect starts again after and a `LATEST` subscriber's `Ready`
    /// carries. Written after each fan-out, so a subscriber joining meanwhile may get that
    /// message again on a resume, never miss it.
    streams: Mutex<HashMap<String, StreamFeed>>,
    /// Where consumer tasks run, so that shutdown waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// Stops the connection task; every consumer's stop token is a child of it.
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    /// Publishing channel, in confirm mode.
    publish: Channel,
    /// Topics whose stream this connection has declared.
    declared: Arc<Mutex<HashSet<String>>>,
}

/// One stream consumer's feed (see [`Shared::streams`]).
#[derive(Debug, Clone)]
struct StreamFeed {
    topic: String,
    /// Where it first started.
    start: Start,
    /// The last message it delivered (or the one its resume cursor named).
    last: Option<Mark>,
    /// One subscriber's own consumer (waits for room) rather than a shared `LATEST` one.
    private: bool,
}

impl StreamFeed {
    /// Where a consumer of this feed starts now: after what it delivered, else where it began.
    fn restart(&self) -> Start {
        self.last.map_or(self.start, Start::After)
    }
}

/// What a delivery loop reads: a queue of its own, or a stream.
enum Reading {
    Queue,
    Stream {
        topic: String,
        /// One subscriber's own consumer (waits for room in its queue).
        private: bool,
    },
}

impl RabbitBroker {
    /// Starts the connection task; returns at once (the broker may be down at start-up).
    pub fn start(
        config: RabbitConfig,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let broker = Self {
            shared: Arc::new(Shared {
                config,
                registry: Registry::default(),
                link: AsyncMutex::new(None),
                consumers: Consumers::default(),
                streams: Mutex::default(),
                health: Health::new(false),
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
            }),
        };
        tasks.spawn(broker.clone().connection_task(shutdown));
        broker
    }

    /// Whether the connection to RabbitMQ is up.
    pub fn is_available(&self) -> bool {
        self.shared.health.is_available()
    }

    /// Whether the connection is up, for `/v1/stats`.
    pub fn availability(&self) -> Availability {
        self.shared.health.availability()
    }

    /// The registry of this backend's subscribers.
    pub fn registry(&self) -> &Registry<TopicState> {
        &self.shared.registry
    }

    /// Makes sure a queue is bound and consumed for `key`, then registers the subscriber.
    pub async fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> Result<TopicRegistration, Failure> {
        // Registered under the consumers lock, which retiring an unused consumer also takes:
        // a consumer cannot retire between being found and gaining this subscriber.
        let mut consumers = self.shared.consumers.lock().await;
        if !consumers.contains_key(request.topic) {
            let link = self.link(request.topic).await?;
            let stop = self.shared.shutdown.child_token();
            let (consumer, channel) = self
                .consume_queue(&link, request.topic)
                .await
                .map_err(|err| unreachable(request.topic).detail("error", err))?;
            self.spawn_delivery(consumer, channel, request.topic, Reading::Queue, &stop);
            consumers.insert(request.topic.to_owned(), stop);
        }
        let registration = self.shared.registry.subscribe(
            request.topic,
            request.subscriber,
            request.mailbox,
            TopicState::new(request.filter, request.squash),
            || announce(ReadyAt::Now(Bytes::new())),
        );
        drop(consumers);
        Ok(registration)
    }

    /// Subscribes to a topic kept in a stream: `LATEST` joins this node's shared consumer of the
    /// topic; a resume, `EARLIEST` or an `OFFSET` gets a consumer of its own, and a resume is
    /// answered only once its cursor's message was found where the cursor says.
    pub async fn subscribe_stream(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> Result<TopicRegistration, Failure> {
        let topic = request.topic;
        let start = Start::of(topic, request.resume_from, request.start)?;
        let private = start != Start::Next;
        let key = if private {
            // A private consumer: a key no other subscriber shares.
            format!(
                "{topic}\u{1f}{}:{}",
                request.subscriber.connection, request.subscriber.subscription_id
            )
        } else {
            topic.to_owned()
        };
        let feed = StreamFeed {
            topic: topic.to_owned(),
            start,
            last: match start {
                Start::After(mark) => Some(mark),
                _ => None,
            },
            private,
        };
        // A private consumer is opened (and its resume checked, which may take a while) before
        // the lock: nobody else can want its key.
        let mut opened = if private {
            Some(self.consume_stream(&self.link(topic).await?, &feed).await?)
        } else {
            None
        };
        let mut consumers = self.shared.consumers.lock().await;
        if !consumers.contains_key(&key) {
            if opened.is_none() {
                opened = Some(self.consume_stream(&self.link(topic).await?, &feed).await?);
            }
            self.lock_streams().insert(key.clone(), feed);
        }
        let position = self
            .lock_streams()
            .get(&key)
            .and_then(|feed| feed.last)
            .map(|mark| mark.cursor(topic))
            .unwrap_or_default();
        let registration = self.shared.registry.subscribe(
            &key,
            request.subscriber,
            request.mailbox,
            TopicState::new(request.filter, request.squash),
            || announce(ReadyAt::Now(position)),
        );
        if let Some((consumer, channel)) = opened {
            let stop = self.shared.shutdown.child_token();
            let reading = Reading::Stream {
                topic: topic.to_owned(),
                private,
            };
            self.spawn_delivery(consumer, channel, &key, reading, &stop);
            consumers.insert(key, stop);
        }
        drop(consumers);
        Ok(registration)
    }

    /// Publishes with a publisher confirm; a topic kept in a `stream` has its stream declared
    /// first, so that the stream keeps the message even if nobody listens yet.
    pub async fn publish(&self, message: TopicMessage, stream: bool) -> Result<Receipt, Failure> {
        let failed = |why: String| {
            Failure::new(
                Code::PublishFailed,
                format!("RabbitMQ did not accept the message: {why}"),
            )
            .retryable(500)
            .detail("topic", &message.topic)
        };
        let link = self.shared.link.lock().await.clone();
        let Some(link) = link else {
            return Err(failed("the broker is unreachable".into()));
        };
        if stream {
            self.declare_stream(&link, &message.topic)
                .await
                .map_err(|err| failed(format!("cannot declare the topic's stream: {err}")))?;
        }
        let properties = properties(&message);
        let publish = async {
            link.publish
                .basic_publish(
                    ShortString::from(self.shared.config.exchange.as_str()),
                    ShortString::from(message.topic.as_str()),
                    BasicPublishOptions::default(),
                    &message.payload,
                    properties,
                )
                .await?
                .await
        };
        match timeout(self.shared.config.publish_timeout, publish).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => Ok(Receipt {
                // A confirm says neither a queue's position (it has none) nor a stream's offset
                // (src/cursor.rs).
                offset: 0,
                cursor: Bytes::new(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(failed("the broker nacked it".into())),
            Ok(Err(err)) => Err(failed(err.to_string())),
            Err(_) => Err(failed("no confirm within rabbitmq.publish_timeout".into())),
        }
    }

    /// The current connection, or a retryable `SOURCE_UNAVAILABLE` for `topic`.
    async fn link(&self, topic: &str) -> Result<Link, Failure> {
        self.shared
            .link
            .lock()
            .await
            .clone()
            .ok_or_else(|| unreachable(topic))
    }

    /// Declares `topic`'s stream once per connection (see [`stream::declare`]).
    async fn declare_stream(&self, link: &Link, topic: &str) -> Result<(), lapin::Error> {
        let known = |link: &Link| {
            link.declared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(topic)
        };
        if known(link) {
            return Ok(());
        }
        // A channel of its own: a refused declare closes the channel it was sent on.
        let channel = link.connection.create_channel().await?;
        let declared = stream::declare(&channel, &self.shared.config, topic).await;
        let _ = channel.close(200, "declared".into()).await;
        declared?;
        link.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned());
        Ok(())
    }

    /// Declares, binds and consumes this node's queue for `key`.
    async fn consume_queue(
        &self,
        link: &Link,
        key: &str,
    ) -> Result<(lapin::Consumer, Channel), lapin::Error> {
        let channel = link.connection.create_channel().await?;
        channel
            .basic_qos(self.shared.config.prefetch, BasicQosOptions::default())
            .await?;
        let queue = channel
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                ShortString::from(self.shared.config.exchange.as_str()),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        debug!(key, queue = %queue.name(), "rabbitmq queue bound");
        Ok((consumer, channel))
    }

    /// Declares `feed`'s stream and consumes it from where the feed starts now; a start after a
    /// message first checks that message is there (and skips it).
    async fn consume_stream(
        &self,
        link: &Link,
        feed: &StreamFeed,
    ) -> Result<(lapin::Consumer, Channel), Failure> {
        let topic = feed.topic.as_str();
        let broken = |err: lapin::Error| unreachable(topic).detail("error", err);
        self.declare_stream(link, topic).await.map_err(broken)?;
        let channel = link.connection.create_channel().await.map_err(broken)?;
        let start = feed.restart();
        let consumed = async {
            channel
                .basic_qos(self.shared.config.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    ShortString::from(stream::stream_name(&self.shared.config, topic)),
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    start.arguments(),
                )
                .await
        };
        let mut consumer = consumed.await.map_err(broken)?;
        if let Start::After(mark) = start {
            if let Err(refusal) = stream::skip_resumed(&mut consumer, mark).await {
                let _ = channel.close(200, "feedgate: cannot resume".into()).await;
                return Err(refusal.failure(topic, mark));
            }
        }
        debug!(topic, ?start, "rabbitmq stream consumed");
        Ok((consumer, channel))
    }

    /// Runs `key`'s delivery loop until `stop`, the connection's end, or its retirement.
    fn spawn_delivery(
        &self,
        consumer: lapin::Consumer,
        channel: Channel,
        key: &str,
        reading: Reading,
        stop: &CancellationToken,
    ) {
        let broker = self.clone();
        let key = key.to_owned();
        let stop = stop.clone();
        self.shared.tasks.spawn(async move {
            broker.deliver(consumer, channel, &key, reading, stop).await;
        });
    }

    /// Fans deliveries out until the connection drops or nobody on this node listens any more.
    async fn deliver(
        &self,
        mut consumer: lapin::Consumer,
        channel: Channel,
        key: &str,
        reading: Reading,
        stop: CancellationToken,
    ) {
        let registry = &self.shared.registry;
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        loop {
            let delivery = tokio::select! {
                () = stop.cancelled() => break,
                _ = idle.tick() => {
                    if self.retire_if_unused(key).await {
                        break;
                    }
                    continue;
                }
                delivery = consumer.next() => delivery,
            };
            let Some(Ok(delivery)) = delivery else {
                break; // the channel or connection closed: the connection task takes over
            };
            let mut message = topic_message(&delivery);
            match &reading {
                Reading::Queue => {
                    fan_out(registry, key, &message, &mut None, || {
                        share_event(&[], EventBody::Message(&message))
                    });
                }
                Reading::Stream { topic, private } => {
                    let mark = Mark::of(&delivery);
                    message.offset = mark.map_or(0, |mark| mark.offset);
                    let cursor = mark.map(|mark| mark.cursor(topic)).unwrap_or_default();
                    let encode = || share_event(&cursor, EventBody::Message(&message));
                    if *private {
                        // One reader replaying the stream: wait for it rather than overflow its
                        // queue (unacknowledged, the rest stays in the stream).
                        fan_out_waiting(registry, key, &message, encode).await;
                    } else {
                        fan_out(registry, key, &message, &mut None, encode);
                    }
                    if let (Some(mark), Some(feed)) = (mark, self.lock_streams().get_mut(key)) {
                        feed.last = Some(mark);
                    }
                }
            }
            // Acknowledged after the hand-off to every subscriber's queue.
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = channel.close(200, "feedgate: no subscribers".into()).await;
    }

    /// Stops consuming `key` when it has had no subscriber on this node; true when retired.
    async fn retire_if_unused(&self, key: &str) -> bool {
        self.shared
            .consumers
            .retire_if_unused(&self.shared.registry, key, || {
                self.lock_streams().remove(key);
            })
            .await
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, StreamFeed>> {
        self.shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn connection_task(self, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                link = self.connect() => link,
            };
            match connected {
                Ok(link) => {
                    backoff = MIN_BACKOFF;
                    info!("rabbitmq connected");
                    *self.shared.link.lock().await = Some(link.clone());
                    self.rebind().await;
                    self.set_available(None);
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            let _ = link.connection.close(200, "feedgate shutting down".into()).await;
                            return;
                        }
                        () = wait_until_closed(&link.connection) => {}
                    }
                    warn!("rabbitmq connection lost");
                    *self.shared.link.lock().await = None;
                    for (_, stop) in self.shared.consumers.lock().await.drain() {
                        stop.cancel();
                    }
                    self.set_available(Some("the RabbitMQ connection was lost"));
                }
                Err(err) => {
                    warn!(error = %err, retry_in = ?backoff, "cannot connect to rabbitmq");
                    self.set_available(Some("RabbitMQ is unreachable"));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<Link, lapin::Error> {
        let config = &self.shared.config;
        let connection = Connection::connect(
            &config.url,
            // The exchange in the name tells an operator (and a test) which deployment it is.
            ConnectionProperties::default()
                .with_connection_name(format!("feedgate/{}", config.exchange).into()),
        )
        .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        publish
            .exchange_declare(
                ShortString::from(config.exchange.as_str()),
                exchange_kind(&config.exchange_type),
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Link {
            connection: Arc::new(connection),
            publish,
            declared: Arc::default(),
        })
    }

    /// After a reconnect: a queue again for every queue key that still has subscribers, and a
    /// consumer again for every stream feed, right after the last message it delivered. A feed
    /// whose message the stream no longer holds ends its subscribers with the refusal.
    async fn rebind(&self) {
        let Some(link) = self.shared.link.lock().await.clone() else {
            return;
        };
        let mut consumers = self.shared.consumers.lock().await;
        for key in self.shared.registry.key_names() {
            let stop = self.shared.shutdown.child_token();
            let feed = self.lock_streams().get(&key).cloned();
            let Some(feed) = feed else {
                match self.consume_queue(&link, &key).await {
                    Ok((consumer, channel)) => {
                        self.spawn_delivery(consumer, channel, &key, Reading::Queue, &stop);
                        consumers.insert(key, stop);
                    }
                    Err(err) => warn!(error = %err, key = %key, "cannot re-bind after reconnect"),
                }
                continue;
            };
            match self.consume_stream(&link, &feed).await {
                Ok((consumer, channel)) => {
                    let reading = Reading::Stream {
                        topic: feed.topic,
                        private: feed.private,
                    };
                    self.spawn_delivery(consumer, channel, &key, reading, &stop);
                    consumers.insert(key, stop);
                }
                Err(failure) if failure.code == Code::ResumeUnavailable => {
                    warn!(key = %key, error = %failure.message, "stream feed cannot go on");
                    self.lock_streams().remove(&key);
                    let closed = share_event(&[], EventBody::Closed(&failure));
                    self.shared
                        .registry
                        .deliver(&key, |_| Step::End(closed.clone()));
                }
                Err(failure) => {
                    warn!(key = %key, error = %failure.message, "cannot consume the stream again");
                }
            }
        }
    }

    /// Records availability; when it changes, every subscriber gets a status event.
    fn set_available(&self, unavailable: Option<&str>) {
        let failure =
            unavailable.map(|why| Failure::new(Code::SourceUnavailable, why).retryable(1000));
        let registry = &self.shared.registry;
        self.shared.health.set(failure, |status| {
            registry.broadcast(status);
        });
    }
}

/// The answer to a subscription while RabbitMQ is unreachable.
fn unreachable(topic: &str) -> Failure {
    Failure::new(Code::SourceUnavailable, "RabbitMQ is unreachable")
        .retryable(1000)
        .detail("topic", topic)
}

async fn wait_until_closed(connection: &Connection) {
    while connection.status().connected() {
        sleep(HEALTH_CHECK).await;
    }
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        _ => ExchangeKind::Topic,
    }
}

/// AMQP properties for a published message: headers as a table, the key as a header, the
/// idempotency key as the message id, the publish time.
fn properties(message: &TopicMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut message_id = None;
    for (name, value) in &message.headers {
        if name == "idempotency-key" {
            message_id = Some(ShortString::from(value.as_str()));
        } else {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
    }
    if !message.key.is_empty() {
        headers.insert(
            ShortString::from(KEY_HEADER),
            AMQPValue::LongString(message.key.as_str().into()),
        );
    }
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_timestamp(u64::try_from(now_micros() / 1_000_000).unwrap_or(0));
    if let Some(id) = message_id {
        properties = properties.with_message_id(id);
    }
    properties
}

fn topic_message(delivery: &lapin::message::Delivery) -> TopicMessage {
    let mut key = String::new();
    let mut headers = Vec::new();
    if let Some(table) = delivery.properties.headers() {
        for (name, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                other => format!("{other:?}"),
            };
            if name.as_str() == KEY_HEADER {
                key = text;
            } else if name.as_str() == stream::OFFSET_HEADER {
                // The broker's, not the publisher's: it is the message's `offset`.
            } else {
                headers.push((name.to_string(), text));
            }
        }
    }
    if let Some(id) = delivery.properties.message_id() {
        headers.push(("idempotency-key".into(), id.to_string()));
    }
    headers.sort();
    TopicMessage {
        topic: delivery.routing_key.to_string(),
        payload: Bytes::copy_from_slice(&delivery.data),
        key,
        headers,
        timestamp_micros: delivery
            .properties
            .timestamp()
            .map_or_else(now_micros, |s| i64::try_from(s).unwrap_or(0) * 1_000_000),
        partition: 0,
        offset: 0,
    }
}
