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
//!   including the encode-once framing used by fan-out.
//! - [`cursor`]: where an event sits in its source (an in-process topic's offset, a Kafka
//!   record's partition and offset, a table change's log id), as the versioned bytes events carry
//!   and `resume_from` sends back; encodes and decodes.
//! - [`broker`]: topic backends behind one front ([`broker::Topics`]); today the in-process
//!   broker.
//! - [`registry`]: who is subscribed to what; fan-out of shared encoded events.
//! - [`outbound`]: each connection's bounded outbound queue and its close switch; what happens
//!   when the queue is full.
//!
//! Dependencies point down this list's far end: `protocol` and `cursor` are pure; `registry` and
//! `outbound` know nothing of sessions or sources; sources reach subscribers only through the
//! mailbox they are handed; only `app` wires everything.

pub mod app;
pub mod auth;
pub mod broker;
pub mod changefeed;
pub mod config;
pub mod cursor;
mod http;
pub mod limits;
pub mod outbound;
pub mod protocol;
pub mod registry;
pub mod session;
