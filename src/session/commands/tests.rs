//! Session commands driven through a whole session (`session::run`) over an in-memory socket.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::stream::{self, BoxStream};
use futures_util::{Sink, Stream, StreamExt};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::auth::permissions::Permissions;
use crate::auth::Authenticator;
use crate::broker::Topics;
use crate::config::{AuthConfig, Limits};
use crate::limits::ConnectionLimits;
use crate::protocol::pb;
use crate::session::{run, SessionContext, SessionSettings};

/// A client that sends its frames, then neither sends nor reads: no write ever completes.
struct Stalled(BoxStream<'static, Result<Message, Infallible>>);

impl Stream for Stalled {
    type Item = Result<Message, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_next_unpin(cx)
    }
}

impl Sink<Message> for Stalled {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Infallible> {
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }
}

/// Found by the session fuzz target (fuzz/seeds/session/stalled-client): answers waiting for
/// room in the outbound queue kept the read loop from its idle deadline for ever.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_and_sending_is_closed() {
    let ping = pb::Request {
        request_id: 1,
        command: Some(pb::request::Command::Ping(pb::Ping {})),
    }
    .encode_to_vec();
    let frames: Vec<_> = (0..20)
        .map(|_| Ok(Message::Binary(ping.clone().into())))
        .collect();
    let socket = Stalled(stream::iter(frames).chain(stream::pending()).boxed());
    let idle_timeout = Duration::from_secs(60);
    let ctx = SessionContext {
        connection: 1,
        settings: SessionSettings {
            max_message_size: 1 << 20,
            max_frame_size: 16 << 20,
            ping_interval: Duration::from_secs(25),
            idle_timeout,
            max_subscriptions: 128,
            outbound_queue: 2,
            outbound_queue_bytes: 1 << 20,
            requests_per_second: 0,
            request_burst: 0,
        },
        topics: Topics::default(),
        tables: None,
        shutdown: CancellationToken::new(),
        auth: Arc::new(
            Authenticator::new(&AuthConfig {
                anonymous: true,
                ..AuthConfig::default()
            })
            .expect("anonymous auth"),
        ),
        permissions: Arc::new(Permissions::default()),
        limits: ConnectionLimits::new(&Limits::default()),
        token: None,
        backlog: None,
        metrics: std::sync::Arc::default(),
    };
    let started = tokio::time::Instant::now();
    // The idle timeout, then at most the close frame's 5 s (it cannot go out either).
    tokio::time::timeout(idle_timeout * 2, run(socket, ctx))
        .await
        .expect("the session ends");
    assert!(started.elapsed() >= idle_timeout);
}

/// Every subscription of a session, topic or table, takes one slot of the same size in its map:
/// a table subscription that grew would make each of a node's topic subscriptions pay for it
/// (`bench/run --only memory`, bytes per subscription).
#[test]
fn a_subscription_slot_stays_small() {
    let slot = std::mem::size_of::<super::Active>();
    let topic = std::mem::size_of::<crate::registry::Registration>();
    assert!(
        slot <= 64,
        "a subscription slot is {slot} bytes (a topic's registration alone: {topic})"
    );
}
