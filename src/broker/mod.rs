//! Topic backends behind one front: [`Topics`] decides which backend serves a topic name and
//! forwards subscribe and publish to it.
//!
//! Backends: the in-process broker ([`memory`], the default, no outside service, with a
//! history to resume from), Kafka ([`kafka`]) and RabbitMQ ([`rabbitmq`]); [`route`] maps topic names to them by configured rules. Sessions only ever see
//! [`Topics`]. Backends reach subscribers through the [`Mailbox`] they are
//! handed, never through the session.

pub(crate) mod kafka;
pub mod memory;
pub(crate) mod rabbitmq;
pub mod route;

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, TopicRule};
use crate::outbound::Mailbox;
use crate::protocol::SharedEvent;
use crate::protocol::{Code, Failure, StartPosition, TopicMessage};
use crate::registry::squash::Squash;
use crate::registry::{Fanout, Registration, Registry, Step, SubscriberKey, Tally};
use crate::row_filter::{Inspected, MessageFilter};
use crate::source::Availability;
pub use memory::TopicState;

/// Where an accepted publish landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Offset within the topic.
    pub offset: i64,
    /// Opaque cursor of the message.
    pub cursor: Bytes,
}

/// A topic subscription's place in its backend's registry; dropping it unsubscribes.
pub type TopicRegistration = Registration<TopicState>;

/// When a new topic subscription's `Ready` follows its `Subscribed`, as the backend tells the
/// `announce` callback of [`Topics::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyAt {
    /// At once: the subscription is live. `Ready` carries this cursor: the position the
    /// subscription starts after, so that a client that has received no message yet can resume
    /// (empty where the source has no positions). It is read before the subscriber joins the
    /// fan-out, so a message published meanwhile may also come again on a resume, never be
    /// missed.
    Now(Bytes),
    /// After the kept messages it asked for; the backend queues `Ready` itself then.
    AfterReplay,
}

/// A subscription request as a backend sees it.
#[derive(Debug)]
pub struct TopicSubscribe<'a> {
    /// The topic name, already syntactically valid.
    pub topic: &'a str,
    /// Who subscribes.
    pub subscriber: SubscriberKey,
    /// Where events go.
    pub mailbox: Mailbox,
    /// Cursor to resume after (empty: from now); in-process topics only.
    pub resume_from: &'a [u8],
    /// Where to start (Kafka and in-process topics serve `Earliest` and `Offset`).
    pub start: StartPosition,
    /// The client's filter: only the messages it admits reach this subscriber.
    pub filter: Option<Arc<MessageFilter>>,
    /// Squash: at most one message per key per interval (`TopicFeed.min_interval_ms`).
    pub squash: Option<Squash>,
}

/// The keys a broker backend consumes on this node, each with the token that stops its consumer.
///
/// Subscribing holds this lock from finding (or starting) a key's consumer until the subscriber is
/// registered, and retiring holds it while it checks that the key has no subscriber: so a consumer
/// never retires between being found and gaining its new subscriber.
#[derive(Default)]
pub(crate) struct Consumers(
    tokio::sync::Mutex<std::collections::HashMap<String, CancellationToken>>,
);

impl Consumers {
    pub(crate) async fn lock(
        &self,
    ) -> tokio::sync::MutexGuard<'_, std::collections::HashMap<String, CancellationToken>> {
        self.0.lock().await
    }

    /// Forgets `key` when `registry` has no subscriber for it, and runs `forget` under the same
    /// lock (what the backend keeps per key); true when it did (the caller's consumer then
    /// stops).
    pub(crate) async fn retire_if_unused(
        &self,
        registry: &Registry<TopicState>,
        key: &str,
        forget: impl FnOnce(),
    ) -> bool {
        let mut consumers = self.lock().await;
        if registry.has_subscribers(key) {
            return false;
        }
        consumers.remove(key);
        forget();
        true
    }
}

/// Fans a broker's `message` out to the subscribers of `key` whose filter admits it, as
/// `event`: encoded (by `encode`) once, when someone gets it and it is not encoded already, and
/// left in `event` for the caller (a history keeping it).
pub(crate) fn fan_out(
    registry: &Registry<TopicState>,
    key: &str,
    message: &TopicMessage,
    event: &mut Option<SharedEvent>,
    encode: impl Fn() -> SharedEvent,
) -> Fanout {
    let inspected = Inspected::new(message);
    registry.deliver(key, |subscriber| {
        if !subscriber.state.admits(&inspected) {
            return Step::Skip;
        }
        subscriber
            .state
            .step(event.get_or_insert_with(&encode), &message.key)
    })
}

/// [`fan_out`] for a one-subscriber (private) feed replaying history: waits for room in the
/// subscriber's queue instead of overflowing it (the broker keeps the rest). Squashes as live
/// fan-out does.
pub(crate) async fn fan_out_waiting(
    registry: &Registry<TopicState>,
    key: &str,
    message: &TopicMessage,
    encode: impl FnOnce() -> SharedEvent,
) -> usize {
    let inspected = Inspected::new(message);
    registry
        .publish_waiting(
            key,
            |state| state.admits(&inspected),
            |state, event| state.step(&event, &message.key),
            encode,
        )
        .await
}

/// RabbitMQ topics bound to queues do not resume from a cursor (a queue has no positions);
/// stream ones, in-process and Kafka topics do.
fn no_resume(request: &TopicSubscribe<'_>) -> Result<(), Failure> {
    if request.resume_from.is_empty() {
        return Ok(());
    }
    Err(cannot_start_there(
        request.topic,
        "RabbitMQ topics resume only when kept in a stream (stream = true on their routing rule)",
    ))
}

/// The `RESUME_UNAVAILABLE` a topic backend answers when a subscription cannot start where it
/// asked (`resume_from`, or an `OFFSET` no longer kept), saying `why`.
pub(crate) fn cannot_start_there(topic: &str, why: &str) -> Failure {
    Failure::new(
        Code::ResumeUnavailable,
        format!("cannot start topic {topic} there: {why}; subscribe without resume_from"),
    )
    .detail("topic", topic)
}

/// Backends without history serve only `StartPosition::Latest`.
fn latest_only(request: &TopicSubscribe<'_>, backend: &str) -> Result<(), Failure> {
    if request.start == StartPosition::Latest {
        return Ok(());
    }
    Err(Failure::new(
        Code::Validation,
        format!(
            "{backend} topics start at the latest message; EARLIEST and OFFSET are for Kafka, \
             in-process and RabbitMQ stream topics"
        ),
    )
    .detail("topic", request.topic))
}

/// A routing rule as the catalog shows it, before permissions narrow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The rule's pattern.
    pub pattern: String,
    /// Which backend serves it.
    pub backend: BackendKind,
    /// Subscriptions may start from EARLIEST or an OFFSET.
    pub history: bool,
    /// Subscriptions may resume from a cursor.
    pub resume: bool,
    /// Subscriptions may name wildcard topics.
    pub wildcards: bool,
    /// The in-process topics this rule serves that have kept messages now.
    pub known_topics: Vec<String>,
}

/// The topic front all sessions share: routes each topic to its backend. Cheap to clone.
#[derive(Clone, Default)]
pub struct Topics {
    rules: Arc<Vec<TopicRule>>,
    memory: memory::MemoryBroker,
    rabbitmq: Option<rabbitmq::RabbitBroker>,
    kafka: Option<kafka::KafkaBroker>,
}

impl Topics {
    /// A front with routing `rules` (empty: everything in-process) and the started backends.
    pub fn new(
        rules: Vec<TopicRule>,
        memory: memory::MemoryBroker,
        rabbitmq: Option<rabbitmq::RabbitBroker>,
        kafka: Option<kafka::KafkaBroker>,
    ) -> Self {
        Self {
            rules: Arc::new(rules),
            memory,
            rabbitmq,
            kafka,
        }
    }

    /// Subscribes; `announce` runs once the subscriber is registered and before any event can
    /// reach it, and must queue the `Subscribed` response, and the `Ready` event when told
    /// [`ReadyAt::Now`] (else the backend queues it once the subscriber has caught up).
    pub async fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(ReadyAt),
    ) -> Result<TopicRegistration, Failure> {
        let rule = route::route(&self.rules, request.topic)?;
        let allow_wildcards = rule.is_some_and(|r| r.allow_wildcards);
        if crate::topic_pattern::has_wildcards(request.topic) && !allow_wildcards {
            return Err(Failure::new(
                Code::Validation,
                "wildcards (*, #) are allowed only on topics whose routing rule allows them",
            )
            .detail("topic", request.topic));
        }
        let registration = match self.backend(rule, request.topic)? {
            Backend::Memory(memory) => memory.subscribe(request, announce),
            Backend::Rabbitmq(rabbit) if rule.is_some_and(|r| r.stream) => {
                rabbit.subscribe_stream(request, announce).await
            }
            Backend::Rabbitmq(rabbit) => {
                no_resume(&request)?;
                latest_only(&request, "RabbitMQ queue")?;
                rabbit.subscribe(request, announce).await
            }
            Backend::Kafka(kafka) => kafka.subscribe(request, announce).await,
        }?;
        crate::registry::squash::start(&registration);
        Ok(registration)
    }

    /// Publishes; returns once the backend accepted the message.
    pub async fn publish(&self, message: TopicMessage) -> Result<Receipt, Failure> {
        if crate::topic_pattern::has_wildcards(&message.topic) {
            return Err(Failure::new(
                Code::Validation,
                "a publish names one topic; wildcards (*, #) are for subscribing",
            )
            .detail("topic", &message.topic));
        }
        let rule = route::route(&self.rules, &message.topic)?;
        match self.backend(rule, &message.topic)? {
            Backend::Memory(memory) => memory.publish(message),
            Backend::Rabbitmq(rabbit) => {
                let stream = rule.is_some_and(|r| r.stream);
                rabbit.publish(message, stream).await
            }
            Backend::Kafka(kafka) => kafka.publish(message).await,
        }
    }

    /// The routing rules in the order they are tried (without rules: one, `#`, in-process),
    /// with what each backend offers, for the catalog.
    pub fn routes(&self) -> Vec<RouteInfo> {
        let everything = [TopicRule {
            pattern: "#".into(),
            backend: BackendKind::Memory,
            allow_wildcards: false,
            stream: false,
        }];
        let rules: &[TopicRule] = if self.rules.is_empty() {
            &everything
        } else {
            &self.rules
        };
        let kept = self.memory.kept_topics();
        let memory_history = self.memory.keeps_history();
        rules
            .iter()
            .map(|rule| {
                let (history, resume) = match rule.backend {
                    BackendKind::Memory => (memory_history, memory_history),
                    BackendKind::Kafka => (true, true),
                    BackendKind::Rabbitmq => (rule.stream, rule.stream),
                };
                let known_topics = kept
                    .iter()
                    .filter(|topic| {
                        rule.backend == BackendKind::Memory
                            && route::route(rules, topic).ok().flatten() == Some(rule)
                    })
                    .cloned()
                    .collect();
                RouteInfo {
                    pattern: rule.pattern.clone(),
                    backend: rule.backend,
                    history,
                    resume,
                    wildcards: rule.allow_wildcards,
                    known_topics,
                }
            })
            .collect()
    }

    /// The RabbitMQ backend's availability.
    pub fn rabbitmq_availability(&self) -> Availability {
        self.rabbitmq.as_ref().map_or(
            Availability::NotConfigured,
            rabbitmq::RabbitBroker::availability,
        )
    }

    /// The Kafka backend's availability (as far as consuming has shown).
    pub fn kafka_availability(&self) -> Availability {
        self.kafka.as_ref().map_or(
            Availability::NotConfigured,
            kafka::KafkaBroker::availability,
        )
    }

    /// Records this node's Kafka consumers are behind, as last sampled; `None` without Kafka or
    /// before the first sample.
    pub fn kafka_lag(&self) -> Option<u64> {
        self.kafka
            .as_ref()
            .and_then(kafka::KafkaBroker::consumer_lag)
    }

    /// One backend's subscriptions now and events it delivered so far, for `/v1/stats`
    /// (zeros for a backend that is not configured).
    pub(crate) fn tally(&self, backend: BackendKind) -> Tally {
        let registry = match backend {
            BackendKind::Memory => Some(self.memory.registry()),
            BackendKind::Rabbitmq => self.rabbitmq.as_ref().map(|r| r.registry()),
            BackendKind::Kafka => self.kafka.as_ref().map(|k| k.registry()),
        };
        registry.map_or_else(Tally::default, Registry::tally)
    }

    /// Active topic subscriptions on this node.
    pub fn subscriptions(&self) -> usize {
        self.registries().map(Registry::subscriptions).sum()
    }

    /// Topic subscribers fan-out has removed so far, in all backends (see
    /// [`Registry::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.registries().map(Registry::dropped).sum()
    }

    /// Topics (or patterns) with at least one subscriber on this node.
    pub fn active_topics(&self) -> usize {
        self.registries().map(Registry::keys).sum()
    }

    fn registries(&self) -> impl Iterator<Item = &Registry<TopicState>> {
        std::iter::once(self.memory.registry())
            .chain(self.rabbitmq.as_ref().map(|r| r.registry()))
            .chain(self.kafka.as_ref().map(|k| k.registry()))
    }

    fn backend(&self, rule: Option<&TopicRule>, topic: &str) -> Result<Backend<'_>, Failure> {
        match rule.map_or(BackendKind::Memory, |r| r.backend) {
            BackendKind::Memory => Ok(Backend::Memory(&self.memory)),
            BackendKind::Rabbitmq => {
                self.rabbitmq
                    .as_ref()
                    .map(Backend::Rabbitmq)
                    .ok_or_else(|| {
                        Failure::new(
                            Code::SourceUnavailable,
                            "the RabbitMQ backend is not configured",
                        )
                        .detail("topic", topic)
                    })
            }
            BackendKind::Kafka => self.kafka.as_ref().map(Backend::Kafka).ok_or_else(|| {
                Failure::new(
                    Code::SourceUnavailable,
                    "the Kafka backend is not configured",
                )
                .detail("topic", topic)
            }),
        }
    }
}

enum Backend<'a> {
    Memory(&'a memory::MemoryBroker),
    Rabbitmq(&'a rabbitmq::RabbitBroker),
    Kafka(&'a kafka::KafkaBroker),
}
