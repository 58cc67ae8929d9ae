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
//!   `/health`, `/v1/stats`.
//! - [`auth`]: token -> principal (JWT, pinned algorithms); may this principal subscribe or
//!   publish to that ([`auth::permissions`]).
//! - [`limits`]: connections in all, per user and per tenant; requests per second.
//! - [`session`]: one connection: reads frames, runs commands, holds its subscriptions, writes.
//! - [`protocol`]: prost types and pure decode/encode between frames and domain values,
//!   including the encode-once framing used by fan-out, and PostgreSQL's date and timestamp text
//!   read into the protocol's units ([`protocol::datetime`]).
//! - [`cursor`]: where an event sits in its source (an in-process topic's offset, a Kafka
//!   record's partition and offset, a table change's log id), as the versioned bytes events carry
//!   and `resume_from` sends back; encodes and decodes (pure).
//! - [`broker`]: topic backends behind one front ([`broker::Topics`]): the in-process broker,
//!   Kafka and RabbitMQ, and which of them serves a topic ([`broker::route`]).
//! - [`changefeed`]: PostgreSQL tables: the change log, snapshots and their hand-off to live
//!   changes, table subscriptions.
//! - [`source`]: what every source shares: its availability, and the one status event a change
//!   of it sends to subscribers.
//! - [`registry`]: who is subscribed to what; fan-out of shared encoded events.
//! - [`outbound`]: each connection's bounded outbound queue and its close switch; what happens
//!   when the queue is full; waiting traffic paced by the socket.
//! - [`row_filter`]: the row-filter language of permissions, parsed, filled from claims and
//!   evaluated on rows (pure; used by `auth` and `changefeed`).
//! - [`topic_pattern`]: topic names and `*`/`#` patterns (pure; used by `broker`, `auth` and
//!   `config`).
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
mod http;
pub mod limits;
pub(crate) mod outbound;
pub mod protocol;
pub(crate) mod registry;
pub mod row_filter;
pub mod session;
pub mod source;
pub mod topic_pattern;
