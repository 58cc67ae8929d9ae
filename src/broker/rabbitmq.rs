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
//! lapin does not reconnect by itself: a connection task does. While RabbitMQ is unreachable,
//! subscribers get a `SourceStatus { available: false }` event; when it is back, the task declares
//! the exchange again, re-binds a queue for every key that still has subscribers, and sends
//! `SourceStatus { available: true }`. Messages published while the node was disconnected are lost
//! to it (its exclusive queues died with the connection), and subscribers are told of the gap by
//! those two events.

use std::sync::Arc;
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

use super::{Consumers, Receipt, TopicSubscribe};
use super::{ReadyAt, TopicRegistration, TopicState};
use crate::config::RabbitConfig;
use crate::protocol::{now_micros, share_event, Code, EventBody, Failure, TopicMessage};
use crate::registry::Registry;
use crate::source::{Availability, Health};

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
            let unavailable = || {
                Failure::new(Code::SourceUnavailable, "RabbitMQ is unreachable")
                    .retryable(1000)
                    .detail("topic", request.topic)
            };
            let link = self
                .shared
                .link
                .lock()
                .await
                .clone()
                .ok_or_else(unavailable)?;
            let stop = self.shared.shutdown.child_token();
            self.start_consumer(&link, request.topic, stop.clone())
                .await
                .map_err(|err| unavailable().detail("error", err))?;
            consumers.insert(request.topic.to_owned(), stop);
        }
        let registration = self.shared.registry.subscribe(
            request.topic,
            request.subscriber,
            request.mailbox,
            TopicState::default(),
            || announce(ReadyAt::Now),
        );
        drop(consumers);
        Ok(registration)
    }

    /// Publishes with a publisher confirm.
    pub async fn publish(&self, message: TopicMessage) -> Result<Receipt, Failure> {
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
                // A queue has no offsets, so there is no position to name (src/cursor.rs).
                offset: 0,
                cursor: Bytes::new(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(failed("the broker nacked it".into())),
            Ok(Err(err)) => Err(failed(err.to_string())),
            Err(_) => Err(failed("no confirm within rabbitmq.publish_timeout".into())),
        }
    }

    /// Declares, binds and consumes this node's queue for `key`, and spawns its delivery loop.
    async fn start_consumer(
        &self,
        link: &Link,
        key: &str,
        stop: CancellationToken,
    ) -> Result<(), lapin::Error> {
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
        let broker = self.clone();
        let key = key.to_owned();
        self.shared.tasks.spawn(async move {
            broker.deliver(consumer, channel, &key, stop).await;
        });
        Ok(())
    }

    /// Fans deliveries out until the connection drops or nobody on this node listens any more.
    async fn deliver(
        &self,
        mut consumer: lapin::Consumer,
        channel: Channel,
        key: &str,
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
            let message = topic_message(&delivery);
            registry.publish(key, || share_event(&[], EventBody::Message(&message)));
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
            .retire_if_unused(&self.shared.registry, key)
            .await
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
            ConnectionProperties::default().with_connection_name("feedgate".into()),
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
        })
    }

    /// After a reconnect: a queue again for every key that still has subscribers.
    async fn rebind(&self) {
        let Some(link) = self.shared.link.lock().await.clone() else {
            return;
        };
        let mut consumers = self.shared.consumers.lock().await;
        for key in self.shared.registry.key_names() {
            let stop = self.shared.shutdown.child_token();
            match self.start_consumer(&link, &key, stop.clone()).await {
                Ok(()) => {
                    consumers.insert(key, stop);
                }
                Err(err) => warn!(error = %err, key = %key, "cannot re-bind after reconnect"),
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
