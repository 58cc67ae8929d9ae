//! The session's commands: one request in, exactly one response out (queued on the connection's
//! mailbox), plus the subscriptions the connection holds.
//!
//! A subscription is registered with its source *before* `Subscribed` and `Ready` are queued,
//! and both are queued under the source's fan-out lock, so the client sees `Subscribed`, then
//! `Ready`, then events, and nothing published after the client saw `Subscribed` is missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use super::identity::Identity;
use super::{SessionContext, SessionSettings};
use crate::auth::permissions::Action;
use crate::broker::{ReadyAt, TopicRegistration, TopicSubscribe};
use crate::changefeed::{TableSubscribe, TableSubscription};
use crate::limits::RequestRate;
use crate::outbound::{CloseReason, Mailbox, Outbound, Undeliverable};
use crate::protocol::{
    code_name, decode::peek_request_id, decode_request, encode_event, encode_response, now_micros,
    Code, Command, EventBody, Failure, Reply, Source, Subscribe, WelcomeInfo,
};
use crate::registry::squash::Squash;
use crate::registry::SubscriberKey;
use crate::row_filter::{MessageFilter, RowFilter};

/// One connection's command handler and subscription table.
pub(super) struct Session {
    id: String,
    ctx: SessionContext,
    mailbox: Mailbox,
    /// Active subscriptions by client-chosen id; dropping an entry unsubscribes it.
    subscriptions: HashMap<u64, Active>,
    /// Who the connection acts as.
    identity: Identity,
    /// Requests per second.
    rate: RequestRate,
    /// The client reads bundles (`Hello.bundles`); the writer reads this.
    bundles: Arc<AtomicBool>,
}

/// One active subscription of the connection.
enum Active {
    Topic(TopicRegistration),
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
    pub(super) fn new(
        id: String,
        ctx: SessionContext,
        mailbox: Mailbox,
        identity: Identity,
        bundles: Arc<AtomicBool>,
    ) -> Self {
        let rate = RequestRate::new(ctx.settings.requests_per_second, ctx.settings.request_burst);
        Self {
            id,
            ctx,
            mailbox,
            subscriptions: HashMap::new(),
            identity,
            rate,
            bundles,
        }
    }

    /// When the connection must close for want of a (fresh) token.
    pub(super) fn auth_deadline(&self) -> Option<tokio::time::Instant> {
        self.identity.deadline()
    }

    /// Why it closes then.
    pub(super) fn auth_deadline_reason(&self) -> CloseReason {
        self.identity.deadline_reason(&self.ctx.auth)
    }

    pub(super) fn settings(&self) -> &SessionSettings {
        &self.ctx.settings
    }

    /// Handles one binary frame. Cancel safe only at the granularity of whole requests: it is
    /// awaited to completion by the reader, never raced.
    pub(super) async fn handle_frame(&mut self, frame: Bytes) {
        if let Err(wait) = self.rate.check() {
            let retry_after = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
            let failure = Failure::new(
                Code::RateLimited,
                format!(
                    "more than {} requests per second",
                    self.ctx.settings.requests_per_second
                ),
            )
            .retryable(retry_after)
            .detail("limit", self.ctx.settings.requests_per_second);
            return self
                .reply(peek_request_id(&frame), Reply::Error(failure))
                .await;
        }
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
                self.ctx.metrics.request(command_name(&request.command));
                let reply = self.dispatch(request.request_id, request.command).await;
                if let Some(reply) = reply {
                    self.reply(request.request_id, reply).await;
                }
            }
            Err(rejection) => {
                self.ctx.metrics.request("unreadable");
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
        let open = matches!(
            command,
            Command::Hello { .. } | Command::Ping | Command::Authenticate { .. }
        );
        if !open && self.identity.principal().is_none() {
            return Some(Reply::Error(Failure::new(
                Code::Unauthenticated,
                "authenticate first: send Hello or Authenticate with a token",
            )));
        }
        Some(match command {
            Command::Hello {
                client_name,
                token,
                bundles,
                ..
            } => {
                debug!(client_name = %client_name, bundles, "hello");
                // Before the Welcome is queued: it may already come in a bundle.
                self.bundles.store(bundles, Ordering::Relaxed);
                if !token.is_empty() {
                    if let Err(failure) = self.authenticate(&token) {
                        return Some(Reply::Error(failure));
                    }
                }
                Reply::Welcome(self.welcome())
            }
            Command::Authenticate { token } => match self.authenticate(&token) {
                Ok(info) => Reply::Authenticated(info),
                Err(failure) => Reply::Error(failure),
            },
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
            Command::GetCatalog => match self.principal() {
                Ok(principal) => {
                    Reply::Catalog(super::catalog::catalog(&self.ctx, principal).await)
                }
                Err(failure) => Reply::Error(failure),
            },
            Command::Publish(message) => {
                if let Err(failure) = self.permit(Action::PublishTopic(&message.topic)) {
                    return Some(Reply::Error(failure));
                }
                match self.ctx.topics.publish(message).await {
                    Ok(receipt) => Reply::Published {
                        cursor: receipt.cursor,
                        offset: receipt.offset,
                    },
                    Err(failure) => Reply::Error(failure),
                }
            }
        })
    }

    fn authenticate(&mut self, token: &str) -> Result<crate::protocol::AuthInfo, Failure> {
        let result = self
            .identity
            .authenticate(&self.ctx.auth, &self.ctx.limits, token);
        match &result {
            Ok(info) => debug!(user = %info.user, "authenticated"),
            Err(failure) => debug!(error = %failure, "authentication failed"),
        }
        result
    }

    /// The connection's principal (`dispatch` lets no other request through before there is one).
    fn principal(&self) -> Result<&crate::auth::Principal, Failure> {
        self.identity
            .principal()
            .ok_or_else(|| Failure::new(Code::Unauthenticated, "authenticate first"))
    }

    /// Squashing by `interval` on this connection (windows sized to its queue).
    fn squash(&self, interval: Option<std::time::Duration>) -> Option<Squash> {
        interval.map(|interval| Squash::new(interval, self.mailbox.limits()))
    }

    /// Whether the connection's principal may do `action`.
    fn permit(&self, action: Action<'_>) -> Result<(), Failure> {
        self.ctx.permissions.check(self.principal()?, action)
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
            Source::Topic {
                topic,
                filter,
                start,
            } => {
                self.permit(Action::SubscribeTopic(topic))?;
                let filter = filter
                    .as_ref()
                    .map(|filter| MessageFilter::from_client(filter).map(Arc::new))
                    .transpose()
                    .map_err(|err| err.failure("topic", topic))?;
                let request = TopicSubscribe {
                    topic,
                    subscriber,
                    mailbox: self.mailbox.clone(),
                    resume_from: &subscribe.resume_from,
                    start: *start,
                    filter,
                    squash: self.squash(subscribe.squash),
                };
                self.subscribe_topic(request_id, request).await
            }
            Source::Table {
                table,
                include_initial,
                filter,
                columns,
            } => {
                let filter = filter
                    .as_ref()
                    .map(RowFilter::from_client)
                    .transpose()
                    .map_err(|err| err.failure("table", table))?;
                let principal = self.principal()?.clone();
                let permissions = self.ctx.permissions.clone();
                let authorize = move |schema: &str, table: &str| {
                    permissions.table_access(&principal, schema, table)
                };
                let request = TableSubscribe {
                    table,
                    include_initial: *include_initial,
                    subscriber,
                    mailbox: self.mailbox.clone(),
                    resume_from: &subscribe.resume_from,
                    authorize: &authorize,
                    filter,
                    columns,
                    squash: self.squash(subscribe.squash),
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
        let (Ok(subscribed), Ok(ready)) = (
            self.room(self.mailbox.reserve()).await,
            self.room(self.mailbox.reserve()).await,
        ) else {
            return Ok(());
        };
        let announce = move |ready_at| {
            subscribed.send(Outbound::Frame(encode_response(
                request_id,
                Reply::Subscribed(id),
            )));
            if let ReadyAt::Now(cursor) = ready_at {
                ready.send(Outbound::Frame(encode_event(id, &cursor, EventBody::Ready)));
            }
        };
        let registration = self.ctx.topics.subscribe(request, announce).await?;
        debug!(subscription_id = id, topic = %topic, "subscribed");
        self.subscriptions.insert(id, Active::Topic(registration));
        Ok(())
    }

    /// Registers with the changefeed, which answers `Subscribed` through `announce` and then
    /// starts the snapshot task (initial rows, `Ready`, then the live changes).
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
        // Room for Subscribed, reserved before registering (as for topics). If the connection
        // is closing there is nobody to answer.
        let Ok(subscribed) = self.room(self.mailbox.reserve()).await else {
            return Ok(());
        };
        let announce = move || {
            subscribed.send(Outbound::Frame(encode_response(
                request_id,
                Reply::Subscribed(id),
            )));
        };
        let subscription = changefeed.subscribe(request, announce).await?;
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
            outbound_queue_bytes: s.outbound_queue_bytes,
            max_frame_size: s.max_frame_size,
            authenticated: self.identity.info(),
        }
    }

    /// Queues one response, waiting for room (backpressure on a client that does not read).
    async fn reply(&self, request_id: u64, reply: Reply) {
        if let Reply::Error(failure) = &reply {
            self.ctx.metrics.request_error(code_name(failure.code));
        }
        let frame = encode_response(request_id, reply);
        // Err only when the connection is closing, and then nobody is listening.
        let _ = self.room(self.mailbox.send(Outbound::Frame(frame))).await;
    }

    /// Waits for room in the outbound queue (`wait`: a send or a reservation), at most the idle
    /// timeout. While a request waits here the read loop watches neither the idle nor the
    /// authentication deadline, so a client that stopped reading (and sending) would otherwise
    /// hold the connection open for ever; one that has read nothing for that long is closed as
    /// a slow consumer (4008), which makes every wait for room give up at once.
    async fn room<T>(
        &self,
        wait: impl std::future::Future<Output = Result<T, Undeliverable>>,
    ) -> Result<T, Undeliverable> {
        let patience = self.ctx.settings.idle_timeout;
        match tokio::time::timeout(patience, wait).await {
            Ok(result) => result,
            Err(_) => {
                debug!("no room in the outbound queue within the idle timeout");
                self.mailbox.close_as_slow_consumer();
                Err(Undeliverable::Closed)
            }
        }
    }
}

/// A command's name, as metrics count requests.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Hello { .. } => "hello",
        Command::Subscribe(_) => "subscribe",
        Command::Unsubscribe { .. } => "unsubscribe",
        Command::Publish(_) => "publish",
        Command::Ping => "ping",
        Command::Authenticate { .. } => "authenticate",
        Command::GetCatalog => "get_catalog",
    }
}

#[cfg(test)]
mod tests;
