//! The writing half of a connection: drains the outbound queue into the socket, batching what is
//! already queued into one flush, sends WebSocket pings, and sends the close frame at the end.

use crate::metrics::Metrics;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use crate::outbound::{CloseReason, Closer, Inbox, Outbound};
use crate::protocol::frame_shared;

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
        let mut count = |message: Message| {
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
                    sink.feed(count(message(item))).await?;
                    for _ in 1..MAX_BATCH {
                        match rx.try_recv() {
                            Some(item) => sink.feed(count(message(item))).await?,
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

fn message(item: Outbound) -> Message {
    match item {
        Outbound::Frame(bytes) => Message::Binary(bytes),
        Outbound::Event {
            subscription_id,
            event,
        } => Message::Binary(frame_shared(subscription_id, &event)),
    }
}
