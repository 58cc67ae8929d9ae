//! The session's commands: one request in, exactly one response out (queued on the connection's
//! mailbox), plus the subscriptions the connection holds.
//!
//! A subscription is registered with its source *before* `Subscribed` and `Ready` are queued,
//! and both are queued under the source's fan-out lock, so the client sees `Subscribed`, then
//! `Ready`, then events, and nothing published after the client saw `Subscribed` is missed.

use std::collections::HashMap;

use bytes::Bytes;
use tracing::debug;

use super::{SessionContext, SessionSettings};
use crate::broker::TopicSubscribe;
use crate::changefeed::{TableSubscribe, TableSubscription};
use crate::outbound::{Mailbox, Outbound};
use crate::protocol::{
    decode::peek_request_id, decode_request, encode_event, encode_response, now_micros, Code,
    Command, EventBody, Failure, Reply, Source, Subscribe, WelcomeInfo,
};
use crate::registry::{Registration, SubscriberKey};

/// One connection's command handler and subscription table.
pub(super) struct Session {
    id: String,
    ctx: SessionContext,
    mailbox: Mailbox,
    /// Active subscriptions by client-chosen id; dropping an entry unsubscribes it.
    subscriptions: HashMap<u64, Active>,
}

/// One active subscription of the connection.
enum Active {
    Topic(Registration),
    Table(TableSubscription),
}

impl Active {
    /// Whether the server already ended it (and told the client with `SubscriptionClosed`).
    fn is_closed(&self) -> bool {
        match self {
            Self::Topic(_) => false,
            Self::Table(table) => table.is_closed(),
        }
    }

    /// Unsubscribes; once this returns, nothing more is queued for it.
    async fn stop(self) {
        match self {
            Self::Topic(registration) => drop(registration),
            Self::Table(table) => table.stop().await,
        }
    }
}

impl Session {
    pub(super) fn new(id: String, ctx: SessionContext, mailbox: Mailbox) -> Self {
        Self {
            id,
            ctx,
            mailbox,
            subscriptions: HashMap::new(),
        }
    }

    pub(super) fn settings(&self) -> &SessionSettings {
        &self.ctx.settings
    }

    /// Handles one binary frame. Cancel safe only at the granularity of whole requests: it is
    /// awaited to completion by the reader, never raced.
    pub(super) async fn handle_frame(&mut self, frame: Bytes) {
        let limit = self.ctx.settings.max_message_size;
        if frame.len() > limit {
            let failure = Failure::new(
                Code::LimitExceeded,
                format!("frame of {} bytes exceeds max_message_size", frame.len()),
            )
            .detail("limit", limit)
            .detail("size", frame.len());
            return self
                .reply(peek_request_id(&frame), Reply::Error(failure))
                .await;
        }
        match decode_request(&frame) {
            Ok(request) => {
                let reply = self.dispatch(request.request_id, request.command).await;
                if let Some(reply) = reply {
                    self.reply(request.request_id, reply).await;
                }
            }
            Err(rejection) => {
                debug!(
                    code = rejection.failure.code.as_str_name(),
                    "request rejected"
                );
                self.reply(rejection.request_id, Reply::Error(rejection.failure))
                    .await;
            }
        }
    }

    /// Answers a text frame: the protocol is binary only.
    pub(super) async fn reject_text(&mut self) {
        let failure = Failure::new(
            Code::InvalidMessage,
            "text frames are not supported: send each Request as a binary protobuf frame",
        );
        self.reply(0, Reply::Error(failure)).await;
    }

    /// Runs one command; `None` when the reply was already queued (subscribe does that under
    /// the source's lock).
    async fn dispatch(&mut self, request_id: u64, command: Command) -> Option<Reply> {
        Some(match command {
            Command::Hello { client_name, .. } => {
                debug!(client_name = %client_name, "hello");
                Reply::Welcome(self.welcome())
            }
            Command::Ping => Reply::Pong {
                server_time_micros: now_micros(),
            },
            Command::Subscribe(subscribe) => match self.subscribe(request_id, subscribe).await {
                Ok(()) => return None,
                Err(failure) => Reply::Error(failure),
            },
            Command::Unsubscribe { subscription_id } => {
                match self.subscriptions.remove(&subscription_id) {
                    Some(active) if !active.is_closed() => {
                        active.stop().await;
                        Reply::Unsubscribed(subscription_id)
                    }
                    _ => Reply::Error(
                        Failure::new(
                            Code::SubscriptionNotFound,
                            format!("no active subscription {subscription_id} on this connection"),
                        )
                        .detail("subscription_id", subscription_id),
                    ),
                }
            }
            Command::Publish(message) => match self.ctx.topics.publish(message).await {
                Ok(receipt) => Reply::Published {
                    cursor: receipt.cursor,
                    offset: receipt.offset,
                },
                Err(failure) => Reply::Error(failure),
            },
        })
    }

    async fn subscribe(&mut self, request_id: u64, subscribe: Subscribe) -> Result<(), Failure> {
        let id = subscribe.subscription_id;
        // Subscriptions the server ended free their ids.
        self.subscriptions.retain(|_, active| !active.is_closed());
        if self.subscriptions.contains_key(&id) {
            return Err(Failure::new(
                Code::DuplicateSubscription,
                format!("subscription {id} is already active on this connection"),
            )
            .detail("subscription_id", id));
        }
        let limit = self.ctx.settings.max_subscriptions;
        if self.subscriptions.len() >= limit {
            return Err(Failure::new(
                Code::LimitExceeded,
                format!("at most {limit} active subscriptions per connection"),
            )
            .detail("limit", limit));
        }
        let subscriber = SubscriberKey {
            connection: self.ctx.connection,
            subscription_id: id,
        };
        match &subscribe.source {
            Source::Topic { topic, start } => {
                let request = TopicSubscribe {
                    topic,
                    subscriber,
                    mailbox: self.mailbox.clone(),
                    resume_from: &subscribe.resume_from,
                    start: *start,
                };
                self.subscribe_topic(request_id, request).await
            }
            Source::Table {
                table,
                include_initial,
            } => {
                let request = TableSubscribe {
                    table,
                    include_initial: *include_initial,
                    subscriber,
                    mailbox: self.mailbox.clone(),
                    resume_from: &subscribe.resume_from,
                };
                self.subscribe_table(request_id, request).await
            }
        }
    }

    async fn subscribe_topic(
        &mut self,
        request_id: u64,
        request: TopicSubscribe<'_>,
    ) -> Result<(), Failure> {
        let id = request.subscriber.subscription_id;
        let topic = request.topic.to_owned();
        // Two slots, so Subscribed and Ready can be queued without waiting under the lock. If
        // the connection is closing there is nobody to answer.
        let (Ok(subscribed), Ok(ready)) =
            (self.mailbox.reserve().await, self.mailbox.reserve().await)
        else {
            return Ok(());
        };
        let announce = move || {
            subscribed.send(Outbound::Frame(encode_response(
                request_id,
                Reply::Subscribed(id),
            )));
            ready.send(Outbound::Frame(encode_event(id, &[], EventBody::Ready)));
        };
        let registration = self.ctx.topics.subscribe(request, announce).await?;
        debug!(subscription_id = id, topic = %topic, "subscribed");
        self.subscriptions.insert(id, Active::Topic(registration));
        Ok(())
    }

    /// Registers with the changefeed, answers `Subscribed`, then starts the snapshot task,
    /// which sends the initial rows, `Ready` and then the live changes.
    async fn subscribe_table(
        &mut self,
        request_id: u64,
        request: TableSubscribe<'_>,
    ) -> Result<(), Failure> {
        let Some(changefeed) = &self.ctx.tables else {
            return Err(Failure::new(
                Code::SourceUnavailable,
                "table feeds are not available: this server has no database configured",
            )
            .detail("table", request.table));
        };
        let id = request.subscriber.subscription_id;
        let table = request.table.to_owned();
        let mut subscription = changefeed.subscribe(request).await?;
        let subscribed = encode_response(request_id, Reply::Subscribed(id));
        if self
            .mailbox
            .send(Outbound::Frame(subscribed))
            .await
            .is_err()
        {
            return Ok(()); // the connection is closing
        }
        subscription.start();
        debug!(subscription_id = id, table = %table, "subscribed");
        self.subscriptions.insert(id, Active::Table(subscription));
        Ok(())
    }

    fn welcome(&self) -> WelcomeInfo {
        let s = &self.ctx.settings;
        WelcomeInfo {
            session_id: self.id.clone(),
            max_message_size: s.max_message_size,
            ping_interval: s.ping_interval,
            idle_timeout: s.idle_timeout,
            max_subscriptions: s.max_subscriptions,
            outbound_queue: s.outbound_queue,
        }
    }

    /// Queues one response, waiting for room (backpressure on a client that does not read).
    async fn reply(&self, request_id: u64, reply: Reply) {
        let frame = encode_response(request_id, reply);
        // Err only when the connection is closing, and then nobody is listening.
        let _ = self.mailbox.send(Outbound::Frame(frame)).await;
    }
}
