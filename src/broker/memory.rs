//! The in-process broker: topics that live inside this feedgate process.
//!
//! A publish is numbered, encoded once and queued to every current subscriber of the topic
//! before `Published` is answered. Offsets come from one counter per process, so within a topic
//! they strictly increase (they are not dense per topic). There is no history: a subscriber
//! receives what is published after its `Subscribed` (the topic front refuses `resume_from`).
//! Wildcards are not supported; a topic name matches only itself.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{Receipt, TopicSubscribe};
use crate::cursor::Cursor;
use crate::protocol::{now_micros, share_event, Code, EventBody, Failure, TopicMessage};
use crate::registry::{Registration, Registry};

/// The in-process broker. Cheap to clone.
#[derive(Clone)]
pub struct MemoryBroker {
    registry: Registry,
    shared: Arc<Shared>,
}

struct Shared {
    /// Identifies this process's offsets, so cursors from another run are recognisable.
    epoch: u64,
    /// Next offset; incremented under the topic's fan-out lock.
    next_offset: AtomicI64,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        let epoch = uuid::Uuid::new_v4().as_u64_pair().0;
        Self {
            registry: Registry::default(),
            shared: Arc::new(Shared {
                epoch,
                next_offset: AtomicI64::new(1),
            }),
        }
    }
}

impl MemoryBroker {
    /// Registers a subscriber; see [`super::Topics::subscribe`].
    pub fn subscribe(
        &self,
        request: TopicSubscribe<'_>,
        announce: impl FnOnce(),
    ) -> Result<Registration, Failure> {
        check_exact(request.topic)?;
        Ok(self.registry.subscribe(
            request.topic,
            request.subscriber,
            request.mailbox,
            (),
            announce,
        ))
    }

    /// Numbers the message, fans it out, and returns where it landed.
    pub fn publish(&self, mut message: TopicMessage) -> Result<Receipt, Failure> {
        check_exact(&message.topic)?;
        message.timestamp_micros = now_micros();
        let topic = message.topic.clone();
        let mut numbered = None;
        self.registry.publish(&topic, || {
            let offset = self.shared.next_offset.fetch_add(1, Ordering::Relaxed);
            let cursor = self.cursor(offset).encode();
            message.offset = offset;
            let event = share_event(&cursor, EventBody::Message(&message));
            numbered = Some((offset, cursor));
            event
        });
        // Nobody listened, so nothing was encoded; the message still gets its offset.
        let (offset, cursor) = numbered.unwrap_or_else(|| {
            let offset = self.shared.next_offset.fetch_add(1, Ordering::Relaxed);
            (offset, self.cursor(offset).encode())
        });
        Ok(Receipt { offset, cursor })
    }

    /// The registry behind this broker, for statistics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn cursor(&self, offset: i64) -> Cursor {
        Cursor::Memory {
            epoch: self.shared.epoch,
            offset,
        }
    }
}

/// In-process topics match exactly; wildcard characters would promise a pattern match that this
/// broker does not do.
fn check_exact(topic: &str) -> Result<(), Failure> {
    if topic.contains(['*', '#', '>']) {
        return Err(Failure::new(
            Code::Validation,
            "in-process topics do not support wildcards (*, #, >)",
        )
        .detail("topic", topic));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{mailbox, Closer, Outbound, QueueLimits};
    use crate::registry::SubscriberKey;
    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn offsets_increase_and_cursors_carry_them() {
        let broker = MemoryBroker::default();
        let shutdown = CancellationToken::new();
        let (mb, mut rx) = mailbox(QueueLimits::new(8, 1 << 20), Closer::new(&shutdown));
        let request = TopicSubscribe {
            topic: "t",
            subscriber: SubscriberKey {
                connection: 1,
                subscription_id: 1,
            },
            mailbox: mb,
            resume_from: &[],
            start: crate::protocol::StartPosition::Latest,
        };
        let _reg = broker.subscribe(request, || {}).expect("subscribed");
        let msg = |p: &'static str| TopicMessage {
            topic: "t".into(),
            payload: Bytes::from_static(p.as_bytes()),
            ..Default::default()
        };
        let first = broker.publish(msg("a")).expect("accepted");
        let second = broker.publish(msg("b")).expect("accepted");
        assert!(second.offset > first.offset);
        assert_eq!(&second.cursor[10..], &second.offset.to_be_bytes());
        assert!(matches!(rx.try_recv(), Some(Outbound::Event { .. })));
    }

    #[test]
    fn wildcards_and_resume_are_refused_with_codes() {
        let broker = MemoryBroker::default();
        let msg = TopicMessage {
            topic: "orders.*".into(),
            ..Default::default()
        };
        assert_eq!(
            broker.publish(msg).expect_err("wildcard").code,
            Code::Validation
        );
    }
}
