//! RabbitMQ streams: the parts of a stream topic that a queue topic does not have.
//!
//! A topic whose routing rule says `stream = true` is kept in a durable RabbitMQ stream
//! (`x-queue-type: stream`) of its own, named `rabbitmq.stream_prefix` + the topic and bound to
//! the exchange with the topic as its key, so that what is published to the topic is kept for
//! the stream's retention whether anyone listens or not. Reading a stream starts where the
//! consumer says (`x-stream-offset`), and every delivery carries its offset: so a stream topic can
//! start from the first kept message or an offset, and resume from a cursor, on any node and
//! across restarts.
//!
//! A cursor names a delivered message: its offset and a checksum of it. A resume reads the stream
//! from that offset and expects that very message first (then skips it). Finding a later one means
//! the retention removed it; finding another one at that offset, or nothing, means the stream is
//! not the one the cursor came from (deleted and declared again). Either way the resume answers
//! `RESUME_UNAVAILABLE`, never a silent gap. Checking the message itself rather than the offset
//! alone needs no API beyond AMQP's: RabbitMQ 3.10 tells an AMQP client neither a stream's first
//! nor its last offset.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Channel;

use crate::broker::cannot_start_there;
use crate::config::RabbitConfig;
use crate::cursor::{encode_rabbit_stream, Cursor};
use crate::protocol::{Failure, StartPosition};

/// The header RabbitMQ puts the offset of a delivered stream message in.
pub(super) const OFFSET_HEADER: &str = "x-stream-offset";

/// How long a resume waits for the message its cursor names. The broker sends kept messages at
/// once; nothing within this long means the stream holds no message at that offset.
const RESUME_CHECK: Duration = Duration::from_secs(5);

/// A delivered stream message: where it is and what it was, as a cursor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub offset: i64,
    pub check: u32,
}

impl Mark {
    /// The mark of a delivered message, when it carries its stream offset.
    pub(super) fn of(delivery: &lapin::message::Delivery) -> Option<Self> {
        let offset = delivery
            .properties
            .headers()
            .as_ref()?
            .inner()
            .get(OFFSET_HEADER)
            .and_then(as_i64)?;
        Some(Self {
            offset,
            check: crc32fast::hash(&delivery.data),
        })
    }

    /// This message's cursor in `topic`.
    pub(super) fn cursor(self, topic: &str) -> Bytes {
        encode_rabbit_stream(topic.as_bytes(), self.offset, self.check)
    }
}

fn as_i64(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// Where a stream consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// With the next message published.
    Next,
    /// With the first message the stream keeps.
    First,
    /// At this offset (or the first kept one, if that is later, as Kafka's `OFFSET` does).
    Offset(i64),
    /// Right after this message, which must still be there (a resume).
    After(Mark),
}

impl Start {
    /// Where a subscription starts: after its `resume_from` cursor, else at its `start`.
    pub(super) fn of(
        topic: &str,
        resume_from: &[u8],
        start: StartPosition,
    ) -> Result<Self, Failure> {
        if resume_from.is_empty() {
            return Ok(match start {
                StartPosition::Latest => Start::Next,
                StartPosition::Earliest => Start::First,
                StartPosition::Offset(offset) => Start::Offset(offset),
            });
        }
        let why = match Cursor::decode(resume_from) {
            Ok(Cursor::RabbitStream {
                topic: of,
                offset,
                check,
            }) if of == topic.as_bytes() => return Ok(Start::After(Mark { offset, check })),
            Ok(Cursor::RabbitStream { .. }) => "the cursor is another topic's".to_owned(),
            Ok(_) => "the cursor is not a RabbitMQ stream topic's".to_owned(),
            Err(err) => format!("the cursor cannot be read: {err}"),
        };
        Err(cannot_start_there(topic, &why))
    }

    /// The `x-stream-offset` consume argument.
    pub(super) fn arguments(self) -> FieldTable {
        let offset = match self {
            Start::Next => AMQPValue::LongString("next".into()),
            Start::First => AMQPValue::LongString("first".into()),
            Start::Offset(offset) => AMQPValue::LongLongInt(offset.max(0)),
            Start::After(mark) => AMQPValue::LongLongInt(mark.offset.max(0)),
        };
        let mut arguments = FieldTable::default();
        arguments.insert(ShortString::from(OFFSET_HEADER), offset);
        arguments
    }
}

/// The stream queue that keeps `topic`.
pub(super) fn stream_name(config: &RabbitConfig, topic: &str) -> String {
    format!("{}{topic}", config.stream_prefix)
}

/// Declares `topic`'s stream (durable; retention as configured) and binds it to the exchange.
/// Declaring is idempotent while the arguments agree; a stream of that name declared with other
/// arguments makes the broker refuse (PRECONDITION_FAILED) and close `channel`.
pub(super) async fn declare(
    channel: &Channel,
    config: &RabbitConfig,
    topic: &str,
) -> Result<(), lapin::Error> {
    let name = stream_name(config, topic);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    arguments.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(config.stream_max_bytes).unwrap_or(i64::MAX)),
    );
    arguments.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(config.stream_segment_bytes).unwrap_or(i64::MAX)),
    );
    let age = config.stream_max_age;
    if !age.is_zero() {
        arguments.insert(
            "x-max-age".into(),
            AMQPValue::LongString(format!("{}s", age.as_secs().max(1)).into()),
        );
    }
    channel
        .queue_declare(
            ShortString::from(name.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            ShortString::from(name.as_str()),
            ShortString::from(config.exchange.as_str()),
            ShortString::from(topic),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Why a resumed stream consumer cannot go on: what it found where the cursor's message should
/// have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The first message found is later: the ones between were removed by retention.
    NoLongerKept { first: i64 },
    /// Another message is at that offset: the stream was deleted and declared again.
    Replaced,
    /// Nothing at that offset (within [`RESUME_CHECK`]): the stream is shorter than the cursor.
    PastTheEnd,
    /// The consumer ended (channel or connection closed) before the check.
    Interrupted(String),
}

impl Refusal {
    /// The answer to the subscription.
    pub(super) fn failure(&self, topic: &str, wanted: Mark) -> Failure {
        let offset = wanted.offset;
        let why = match self {
            Refusal::NoLongerKept { first } => format!(
                "messages from offset {offset} on are no longer kept (the stream's retention, \
                 rabbitmq.stream_max_bytes / stream_max_age; the first kept is {first})"
            ),
            Refusal::Replaced => format!(
                "the stream holds another message at offset {offset}: it was deleted and \
                 declared again since the cursor"
            ),
            Refusal::PastTheEnd => format!(
                "the stream has no message at offset {offset}: it was deleted and declared \
                 again since the cursor, or the cursor is forged"
            ),
            Refusal::Interrupted(error) => {
                return Failure::new(
                    crate::protocol::Code::SourceUnavailable,
                    format!("RabbitMQ went away while resuming: {error}"),
                )
                .retryable(1000)
                .detail("topic", topic)
            }
        };
        cannot_start_there(topic, &why).detail("offset", offset)
    }
}

/// Reads the first delivery of a consumer started at `Start::After(wanted)`: it must be the
/// cursor's message, which is acknowledged and dropped (the subscriber had it).
pub(super) async fn skip_resumed(
    consumer: &mut lapin::Consumer,
    wanted: Mark,
) -> Result<(), Refusal> {
    let first = match tokio::time::timeout(RESUME_CHECK, consumer.next()).await {
        Err(_) => return Err(Refusal::PastTheEnd),
        Ok(None) => return Err(Refusal::Interrupted("the consumer ended".into())),
        Ok(Some(Err(err))) => return Err(Refusal::Interrupted(err.to_string())),
        Ok(Some(Ok(delivery))) => delivery,
    };
    let found = Mark::of(&first);
    let _ = first.ack(lapin::options::BasicAckOptions::default()).await;
    match found {
        Some(mark) if mark == wanted => Ok(()),
        Some(mark) if mark.offset > wanted.offset => {
            Err(Refusal::NoLongerKept { first: mark.offset })
        }
        _ => Err(Refusal::Replaced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_starts_after_its_own_topics_cursor_only() {
        let mark = Mark {
            offset: 41,
            check: 7,
        };
        let cursor = mark.cursor("ticks");
        assert_eq!(
            Start::of("ticks", &cursor, StartPosition::Latest),
            Ok(Start::After(mark))
        );
        let refused = |cursor: &[u8]| {
            Start::of("ticks", cursor, StartPosition::Latest)
                .expect_err("refused")
                .message
        };
        assert!(refused(&mark.cursor("other")).contains("another topic's"));
        let memory = Cursor::Memory {
            epoch: 1,
            offset: 41,
        }
        .encode();
        assert!(refused(&memory).contains("not a RabbitMQ stream topic's"));
        assert!(refused(&[2, b'r', 0]).contains("cannot be read"));
        assert_eq!(
            Start::of("ticks", &[], StartPosition::Offset(3)),
            Ok(Start::Offset(3))
        );
        assert_eq!(
            Start::of("ticks", &[], StartPosition::Earliest),
            Ok(Start::First)
        );
    }

    #[test]
    fn each_refusal_says_what_was_found() {
        let wanted = Mark {
            offset: 10,
            check: 1,
        };
        let message = |refusal: Refusal| refusal.failure("ticks", wanted).message;
        assert!(message(Refusal::NoLongerKept { first: 20 }).contains("the first kept is 20"));
        assert!(message(Refusal::Replaced).contains("another message at offset 10"));
        assert!(message(Refusal::PastTheEnd).contains("no message at offset 10"));
        let interrupted = Refusal::Interrupted("gone".into()).failure("ticks", wanted);
        assert_eq!(interrupted.code, crate::protocol::Code::SourceUnavailable);
        assert_eq!(
            Refusal::Replaced.failure("ticks", wanted).code,
            crate::protocol::Code::ResumeUnavailable
        );
    }
}
