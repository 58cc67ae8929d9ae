//! feedgate: a subscription server. Clients open one WebSocket, speak a binary protobuf
//! protocol, and receive database changefeeds and broker events on numbered subscriptions
//! multiplexed over that connection; they publish through it too.
//!
//! # Layout
//!
//! In the order data flows through the server:
//!
//! - [`config`]: typed settings from a TOML file, `FEEDGATE_*` variables and flags.
//! - [`app`]: binds the listener, builds the shared state, owns the shutdown order.
//! - [`http`]: the `/v1/ws` upgrade (Origin check, connection limit, the token in the request),
//!   `/v1/sse`, `/health`, `/health/ready`, `/v1/stats`, `/metrics`, `/ui/`.
//! - [`sse`]: Server-Sent Events: a session driven through a pipe instead of a socket, its
//!   events written as proto3 JSON with cursors as event ids (`Last-Event-ID` resumes).
//! - `dashboard`: the dashboard page's built files, embedded, served at `/ui/`.
//! - [`readiness`]: what `/health` and `/health/ready` answer: the server's status, its
//!   dependencies' availability, its build (pure).
//! - [`stats`]: the per-source-kind part of `/v1/stats`: subscriptions, deliveries counted by
//!   each registry, and their rate over a recent window (sampled once a second).
//! - [`version`]: the crate version and the git commit of the build.
//! - [`auth`]: token -> principal (JWT, pinned algorithms); may this principal subscribe or
//!   publish to that ([`auth::permissions`]).
//! - [`limits`]: connections in all, per user and per tenant; requests per second.
//! - [`session`]: one connection: reads frames, runs commands, holds its subscriptions, writes;
//!   answers `GetCatalog` from the changefeed, the topic front and the permissions.
//! - [`protocol`]: prost types and pure decode/encode between frames and domain values,
//!   including the encode-once framing used by fan-out, and PostgreSQL's date and timestamp text
//!   read into the protocol's units ([`protocol::datetime`]).
//! - [`cursor`]: where an event sits in its source (an in-process topic's offset, a Kafka
//!   subscription's next offset per partition, a table feed's position in snapshots and log
//!   ids), as the versioned bytes events carry and `resume_from` sends back; encodes and
//!   decodes (pure).
//! - [`demo`]: `serve --demo`'s sample stream (price ticks on the in-process `demo.prices`).
//! - [`broker`]: topic backends behind one front ([`broker::Topics`]): the in-process broker,
//!   Kafka and RabbitMQ, and which of them serves a topic ([`broker::route`]).
//! - [`changefeed`]: PostgreSQL tables: the change log, snapshots and their hand-off to live
//!   changes (the fence each table subscriber keeps in the registry), table subscriptions.
//! - [`source`]: what every source shares: its availability, and the one status event a change
//!   of it sends to subscribers.
//! - [`registry`]: who is subscribed to what, for every source; the one delivery function that
//!   fans shared encoded events out and counts drops.
//! - [`outbound`]: each connection's bounded outbound queue and its close switch; what happens
//!   when the queue is full; waiting traffic paced by the socket.
//! - [`row_filter`]: the row-filter language of permissions, parsed, filled from claims and
//!   evaluated on rows (pure; used by `auth` and `changefeed`).
//! - [`topic_pattern`]: topic names and `*`/`#` patterns (pure; used by `broker`, `auth` and
//!   `config`).
//!
//! Beside the flow, behind the `testing` feature: `testing`, a server started in the test's
//! process and a WebSocket client, for applications' own integration tests (and feedgate's);
//! it uses only [`app`], [`config`] and [`protocol`], and nothing uses it.
//!
//! # The one path an event takes
//!
//! Every source delivers the same way. The source (the changefeed reader for a table change;
//! the in-process broker, a Kafka consumer or a RabbitMQ consumer for a topic message) gives the
//! event its [`cursor`] and hands it to its registry (`registry::Registry`) under the key it
//! belongs to: the topic, or the table's oid. The registry's one delivery function
//! (`Registry::deliver`) asks the source, per subscriber, what that subscriber gets: nothing (a
//! table subscriber whose snapshot already holds the change, or whose row filter hides the row),
//! the event (for a filtered table subscriber, the insert or delete its filter makes of an
//! update), or its last event (a table reset). The bytes are encoded once per form and shared;
//! they are queued to each subscriber's connection mailbox (`outbound`) without waiting. A
//! subscriber whose mailbox is full is removed, counted (`/v1/stats` `dropped_subscriptions`)
//! and its connection closed as a slow consumer. A source's availability changes take the same
//! function ([`source::Health::set`] hands the one status event to it). A table subscriber
//! differs only in its state: until its snapshot is known it is pending, and delivery adds the
//! change to its buffer, which the subscription's own task replays. A source that can wait for
//! one reader (a Kafka consumer replaying history for one subscriber) queues within the
//! mailbox's waiting share, paced by the socket, instead. Each connection's writer
//! ([`session`]) takes its mailbox's items in order, puts the subscription id in front of the
//! shared bytes and writes the frame.
//!
//! Dependencies: any module may use `config` (its own settings) and the pure modules
//! (`protocol`, `cursor`, `row_filter`, `topic_pattern`), and `config` uses only those pure ones;
//! `registry` and `outbound` know nothing of sessions or sources; sources reach subscribers only
//! through the mailbox they are handed; only `app` wires everything. No top-level modules depend
//! on each other in a circle (`../shared/tools/modcycles.py src` lists none).

pub mod app;
pub mod auth;
pub mod broker;
pub mod changefeed;
pub mod config;
pub mod cursor;
mod dashboard;
pub mod demo;
mod http;
pub mod limits;
pub mod metrics;
pub(crate) mod outbound;
pub mod protocol;
mod readiness;
pub(crate) mod registry;
pub mod row_filter;
pub mod session;
pub mod source;
mod sse;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topic_pattern;
pub mod version;
