//! The writing half of a connection: drains the outbound queue into the socket, batching what is
//! already queued into one flush, sends WebSocket pings, and sends the close frame at the end.
//! Once a batch is flushed it counts what it wrote, and the latency from commit to here of each
//! row change in it (`feedgate_changefeed_commit_to_send_seconds`).

use crate::metrics::Metrics;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use crate::outbound::{CloseReason, Closer, Inbox, Outbound};
use crate::protocol::{frame_shared, now_micros};

/// Most queued messages written per flush.
const MAX_BATCH: usize = 64;

/// How long the close frame may take to go out before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until the closer fires, the queue's senders are all gone, or the socket fails.
pub(super) async fn run<W>(
    mut sink: W,
    mut rx: Inbox,
    closer: Closer,
    ping_interval: Duration,
    metrics: &Metrics,
) where
    W: Sink<Message> + Unpin,
{
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
        if first.is_some() {
            metrics.queue_depth(rx.len() + 1);
        }
        let (mut frames, mut bytes) = (0u64, 0u64);
        // When each row change of the batch committed: observed once the batch is flushed.
        let mut committed = Committed::default();
        let mut count = |item: Outbound| {
            committed.note(&item);
            let message = message(item);
            if let Message::Binary(frame) = &message {
                frames += 1;
                bytes += frame.len() as u64;
            }
            message
        };
        let write = async {
            match first {
                None => sink.send(Message::Ping(Default::default())).await,
                Some(item) => {
                    sink.feed(count(item)).await?;
                    for _ in 1..MAX_BATCH {
                        match rx.try_recv() {
                            Some(item) => sink.feed(count(item)).await?,
                            None => break,
                        }
                    }
                    sink.flush().await
                }
            }
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
        metrics.written(frames, bytes);
        committed.observe(metrics);
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

/// The commit times of the row changes in one written batch, kept on the stack (a batch holds
/// at most [`MAX_BATCH`] messages), so that measuring commit-to-send costs no allocation and one
/// clock read per batch.
struct Committed {
    micros: [i64; MAX_BATCH],
    len: usize,
}

impl Default for Committed {
    fn default() -> Self {
        Self {
            micros: [0; MAX_BATCH],
            len: 0,
        }
    }
}

impl Committed {
    /// Keeps `item`'s commit time, if it is a row change that has one.
    fn note(&mut self, item: &Outbound) {
        let Outbound::Event { event, .. } = item else {
            return;
        };
        if let (Some(micros), Some(slot)) =
            (event.committed_micros(), self.micros.get_mut(self.len))
        {
            *slot = micros;
            self.len += 1;
        }
    }

    /// The batch is in the socket: each change's latency from its commit to now.
    fn observe(&self, metrics: &Metrics) {
        if self.len == 0 {
            return;
        }
        let now = now_micros();
        for &micros in &self.micros[..self.len] {
            let latency = u64::try_from(now.saturating_sub(micros)).unwrap_or(0);
            metrics.commit_to_send(Duration::from_micros(latency));
        }
    }
}

fn message(item: Outbound) -> Message {
    match item {
        Outbound::Frame(bytes) => Message::Binary(bytes),
        Outbound::Event {
            subscription_id,
            event,
        } => Message::Binary(frame_shared(subscription_id, &event)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{share_event, ChangeKind, EventBody, RowChange};

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
        let mut committed = Committed::default();
        let a_second_ago = now_micros() - 1_000_000;
        // More than a batch holds: the rest is not kept (a batch never has them).
        for _ in 0..MAX_BATCH + 3 {
            committed.note(&change(a_second_ago));
        }
        committed.note(&change(0)); // an initial row
        committed.note(&Outbound::Frame(bytes::Bytes::from_static(b"response")));
        committed.observe(&metrics);
        let text = metrics.render(&crate::metrics::Scrape::default());
        let count = format!("feedgate_changefeed_commit_to_send_seconds_count {MAX_BATCH}");
        assert!(text.lines().any(|l| l == count), "{text}");
        let under_a_second = "feedgate_changefeed_commit_to_send_seconds_bucket{le=\"0.5\"} 0";
        assert!(text.lines().any(|l| l == under_a_second), "{text}");
    }
}
