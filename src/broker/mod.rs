//! Topic backends behind one front: [`Topics`] decides which backend serves a topic name and
//! forwards subscribe and publish to it.
//!
//! Today there is one backend, the in-process broker ([`memory`]), which serves every topic.
//! Kafka and RabbitMQ backends, and the routing rules that choose between backends, plug in here;
//! sessions only ever see [`Topics`]. Backends reach subscribers through the [`Mailbox`] they are
//! handed, never through the session.

pub mod memory;

use bytes::Bytes;

use crate::outbound::Mailbox;
use crate::protocol::{Failure, TopicMessage};
use crate::registry::{Registration, SubscriberKey};

/// Where an accepted publish landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Offset within the topic.
    pub offset: i64,
    /// Opaque cursor of the message.
    pub cursor: Bytes,
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
    /// Cursor to resume after (empty: from now).
    pub resume_from: &'a [u8],
}

/// The topic front all sessions share. Cheap to clone.
#[derive(Clone, Default)]
pub struct Topics {
    memory: memory::MemoryBroker,
}

impl Topics {
    /// Subscribes; `announce` runs once the subscriber is registered and before any event can
    /// reach it, and must queue the `Subscribed` response and the `Ready` event.
    pub fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(),
    ) -> Result<Registration, Failure> {
        self.memory.subscribe(request, announce)
    }

    /// Publishes; returns once the backend accepted the message.
    pub async fn publish(&self, message: TopicMessage) -> Result<Receipt, Failure> {
        self.memory.publish(message)
    }

    /// Active topic subscriptions on this node.
    pub fn subscriptions(&self) -> usize {
        self.memory.registry().subscriptions()
    }

    /// Topics with at least one subscriber on this node.
    pub fn active_topics(&self) -> usize {
        self.memory.registry().keys()
    }
}
