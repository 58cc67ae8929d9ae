//! The writing half of a connection: drains the outbound queue into the socket, batching what is
//! already queued into one flush (and, for a client that reads bundles, into few frames), sends
//! WebSocket pings, and sends the close frame at the end. Once a batch is flushed it counts what
//! it wrote, and the latency from commit to here of each row change in it
//! (`feedgate_changefeed_commit_to_send_seconds`).

use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use crate::outbound::{CloseReason, Closer, Inbox, Outbound};
use crate::protocol::{frame_bundle, frame_shared, now_micros, Part};

/// Most queued messages written per flush.
const MAX_BATCH: usize = 64;

/// Most bytes of messages put in one bundle (a single larger message goes in a frame of its
/// own). Small enough that a client's default frame limit never refuses one.
const BUNDLE_BYTES: usize = 64 * 1024;

/// How long the close frame may take to go out before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's parts.
pub(super) struct Writer<'a> {
    /// The connection's outbound queue.
    pub(super) rx: Inbox,
    pub(super) closer: Closer,
    pub(super) ping_interval: Duration,
    /// Whether the client reads bundles (`Hello.bundles`); set by the session.
    pub(super) bundles: Arc<AtomicBool>,
    pub(super) metrics: &'a Metrics,
}

impl Writer<'_> {
    /// Runs until the closer fires, the queue's senders are all gone, or the socket fails.
    pub(super) async fn run<W>(self, mut sink: W)
    where
        W: Sink<Message> + Unpin,
    {
        let Self {
            mut rx,
            closer,
            ping_interval,
            bundles,
            metrics,
        } = self;
        let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Reused by every flush (and empty between flushes): the queued messages taken, and the
        // frames they make.
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut frames = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                biased;
                () = closer.closed() => break,
                item = rx.recv() => match item {
                    Some(item) => Some(item),
                    None => break,
                },
                _ = ping.tick() => None,
            };
            if let Some(first) = first {
                metrics.queue_depth(rx.len() + 1);
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Some(item) => batch.push(item),
                        None => break,
                    }
                }
                if bundles.load(Ordering::Relaxed) {
                    bundled(&batch, &mut frames);
                } else {
                    frames.extend(batch.iter().map(single));
                }
            }
            let (count, bytes) = (
                frames.len() as u64,
                frames.iter().map(Bytes::len).sum::<usize>(),
            );
            let write = async {
                if frames.is_empty() {
                    // The ping timer fired with nothing queued.
                    return sink.send(Message::Ping(Default::default())).await;
                }
                for frame in frames.drain(..) {
                    sink.feed(Message::Binary(frame)).await?;
                }
                sink.flush().await
            };
            let written = tokio::select! {
                biased;
                () = closer.closed() => break,
                written = write => written,
            };
            if written.is_err() {
                closer.close(CloseReason::TransportError);
                break;
            }
            metrics.written(count, bytes as u64);
            observe_commits(&batch, metrics);
            // Not held while the writer waits: an idle connection keeps no message alive.
            batch.clear();
        }
        let reason = closer.reason();
        if reason == CloseReason::ClientClosed {
            // The WebSocket queued its answer to the client's close frame; flush it out.
            let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
        } else if reason != CloseReason::TransportError {
            let frame = CloseFrame {
                code: reason.code(),
                reason: reason.text().into(),
            };
            let _ = timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        }
    }
}

/// The batch is in the socket: each row change's latency from its commit to now. One clock
/// read per batch; nothing allocated.
fn observe_commits(batch: &[Outbound], metrics: &Metrics) {
    let mut now = None;
    for item in batch {
        let Outbound::Event { event, .. } = item else {
            continue;
        };
        if let Some(micros) = event.committed_micros() {
            let now = *now.get_or_insert_with(now_micros);
            let latency = u64::try_from(now.saturating_sub(micros)).unwrap_or(0);
            metrics.commit_to_send(Duration::from_micros(latency));
        }
    }
}

fn part(item: &Outbound) -> Part<'_> {
    match item {
        Outbound::Frame(bytes) => Part::Message(bytes),
        Outbound::Event {
            subscription_id,
            event,
        } => Part::Event(*subscription_id, event),
    }
}

/// One frame per message.
fn single(item: &Outbound) -> Bytes {
    match item {
        Outbound::Frame(bytes) => bytes.clone(),
        Outbound::Event {
            subscription_id,
            event,
        } => frame_shared(*subscription_id, event),
    }
}

/// The batch in as few frames as [`BUNDLE_BYTES`] allows, in order, added to `frames`:
/// consecutive messages that fit together in one bundle; a message alone (or one larger than the
/// bound) in a plain frame. A response ends its bundle: what follows comes in the next frame, so
/// that a client's code awaiting the response runs before it handles the events after it, as
/// with one message per frame (a browser runs awaiting code between frames, not within one).
fn bundled(batch: &[Outbound], frames: &mut Vec<Bytes>) {
    let (mut start, mut size) = (0, 0);
    for (i, item) in batch.iter().enumerate() {
        let part = part(item);
        if i > start && size + part.len() > BUNDLE_BYTES {
            frames.push(frame(&batch[start..i]));
            (start, size) = (i, 0);
        }
        size += part.len();
        if part.is_response() {
            frames.push(frame(&batch[start..=i]));
            (start, size) = (i + 1, 0);
        }
    }
    if start < batch.len() {
        frames.push(frame(&batch[start..]));
    }
}

/// A bundle of `items`, or the one item alone.
fn frame(items: &[Outbound]) -> Bytes {
    match items {
        [item] => single(item),
        _ => {
            let parts: Vec<Part<'_>> = items.iter().map(part).collect();
            frame_bundle(&parts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{pb, share_event, ChangeKind, EventBody, RowChange};
    use prost::Message as _;

    fn change(commit_time_micros: i64) -> Outbound {
        let change = RowChange {
            kind: ChangeKind::Insert,
            table: "public.t".into(),
            key: Vec::new(),
            new_row: None,
            old_row: None,
            transaction_id: 1,
            commit_time_micros,
        };
        Outbound::Event {
            subscription_id: 1,
            event: share_event(b"", EventBody::Change(&change)),
        }
    }

    #[test]
    fn a_batch_observes_its_row_changes_once_each_and_nothing_else() {
        let metrics = Metrics::new();
        let a_second_ago = now_micros() - 1_000_000;
        let mut batch: Vec<_> = (0..5).map(|_| change(a_second_ago)).collect();
        batch.push(change(0)); // an initial row
        batch.push(Outbound::Frame(Bytes::from_static(b"response")));
        observe_commits(&batch, &metrics);
        let text = metrics.render(&crate::metrics::Scrape::default());
        let count = "feedgate_changefeed_commit_to_send_seconds_count 5";
        assert!(text.lines().any(|l| l == count), "{text}");
        let under_a_second = "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"0.5\"} 0";
        assert!(text.lines().any(|l| l == under_a_second), "{text}");
    }

    /// A response, then events of subscriptions 1 and 2 (payloads of `size` bytes).
    fn queued(events: usize, size: usize) -> Vec<Outbound> {
        let response = pb::ServerMessage {
            message: Some(pb::server_message::Message::Response(pb::Response {
                request_id: 9,
                result: Some(pb::response::Result::Pong(pb::Pong::default())),
            })),
        };
        let mut batch = vec![Outbound::Frame(response.encode_to_vec().into())];
        for i in 0..events {
            let message = crate::protocol::TopicMessage {
                payload: Bytes::from(vec![b'x'; size]),
                ..Default::default()
            };
            batch.push(Outbound::Event {
                subscription_id: 1 + (i as u64 % 2),
                event: share_event(b"c", EventBody::Message(&message)),
            });
        }
        batch
    }

    /// What a client that reads bundles makes of the frames: every message, in order.
    fn unbundle(frames: &[Bytes]) -> Vec<pb::ServerMessage> {
        let mut messages = Vec::new();
        for frame in frames {
            let message = pb::ServerMessage::decode(frame.clone()).expect("a ServerMessage");
            match message.message {
                Some(pb::server_message::Message::Bundle(bundle)) => {
                    assert!(bundle.messages.len() >= 2, "a bundle of one");
                    messages.extend(bundle.messages);
                }
                _ => messages.push(message),
            }
        }
        messages
    }

    #[test]
    fn bundles_hold_the_same_messages_in_the_same_order() {
        let batch = queued(40, 100);
        let plain: Vec<_> = batch.iter().map(single).collect();
        let expected: Vec<_> = plain
            .iter()
            .map(|f| pb::ServerMessage::decode(f.clone()).expect("decodes"))
            .collect();
        let mut frames = Vec::new();
        bundled(&batch, &mut frames);
        assert_eq!(
            frames.len(),
            2,
            "the response ends its frame; 40 small events in one bundle"
        );
        assert_eq!(frames[0], plain[0], "the response alone");
        assert_eq!(unbundle(&frames), expected);
    }

    #[test]
    fn a_response_ends_its_bundle() {
        let mut batch = queued(2, 100);
        batch.rotate_left(1); // event, event, response
        batch.extend(queued(2, 100)); // response, event, event
        let mut frames = Vec::new();
        bundled(&batch, &mut frames);
        let sizes: Vec<_> = frames
            .iter()
            .map(|f| {
                match pb::ServerMessage::decode(f.clone())
                    .expect("decodes")
                    .message
                {
                    Some(pb::server_message::Message::Bundle(bundle)) => bundle.messages.len(),
                    _ => 1,
                }
            })
            .collect();
        assert_eq!(
            sizes,
            [3, 1, 2],
            "events and their response; the next response; its events"
        );
    }

    #[test]
    fn bundles_are_bounded_by_bytes_and_a_lone_message_is_not_wrapped() {
        let batch = queued(10, 20_000);
        let mut frames = Vec::new();
        bundled(&batch, &mut frames);
        assert!(frames.len() > 1, "{} frames", frames.len());
        for frame in &frames {
            assert!(frame.len() <= BUNDLE_BYTES + 64, "{} bytes", frame.len());
        }
        let plain: Vec<_> = batch.iter().map(single).collect();
        let expected: Vec<_> = plain
            .iter()
            .map(|f| pb::ServerMessage::decode(f.clone()).expect("decodes"))
            .collect();
        assert_eq!(unbundle(&frames), expected);

        let one = queued(1, 10);
        let bundle = |batch: &[Outbound]| {
            let mut frames = Vec::new();
            bundled(batch, &mut frames);
            frames
        };
        assert_eq!(bundle(&one[1..]), vec![single(&one[1])]);
        let large = queued(1, BUNDLE_BYTES * 2);
        assert_eq!(bundle(&large), vec![single(&large[0]), single(&large[1])]);
    }
}
