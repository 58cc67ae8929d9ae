//! The wire protocol: prost types generated from `proto/feedgate/v1/feedgate.proto`, and pure
//! conversions between them and the domain types the rest of the server uses.
//!
//! Nothing here does I/O or knows about sockets, sessions or sources. Decoding turns one binary
//! frame into a validated [`Request`] or a [`Rejection`] carrying the coded error to send back;
//! encoding turns domain values into complete `ServerMessage` frames. Prost types stop here.

pub mod catalog;
pub mod datetime;
pub(crate) mod decode;
mod encode;
mod failure;
mod row;

pub use decode::{
    decode_request, peek_request_id, Command, Rejection, Request, Source, StartPosition, Subscribe,
};
pub use encode::{
    encode_event, encode_response, frame_bundle, frame_shared, share_event, with_more, AuthInfo,
    EventBody, Part, Reply, SharedEvent, WelcomeInfo,
};
pub use failure::Failure;
pub use row::{column, ChangeKind, Row, RowChange, Value};

/// The generated protobuf types, package `feedgate.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/feedgate.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/feedgate.v1.serde.rs"));
}

/// The protocol's error codes; the generated enum is the domain's too, since it is a plain
/// list of names with nothing prost-specific in it.
pub use pb::ErrorCode as Code;

/// A code's name as close reasons and refused upgrades spell it: the `ErrorCode` name without
/// its `ERROR_CODE_` prefix (`SLOW_CONSUMER`).
pub fn code_name(code: Code) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix("ERROR_CODE_").unwrap_or(name)
}

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message on a topic, as sources produce it and subscribers receive it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicMessage {
    /// The topic it was published to; subscribers may use one connection for many topics.
    pub topic: String,
    /// Opaque application bytes.
    pub payload: bytes::Bytes,
    /// Partitioning / routing key (Kafka key); empty when none.
    pub key: String,
    /// Application headers, in a stable order so the encoding is deterministic.
    pub headers: Vec<(String, String)>,
    /// Publish time, microseconds since the Unix epoch.
    pub timestamp_micros: i64,
    /// Kafka partition; 0 elsewhere.
    pub partition: i32,
    /// Position within the topic or partition.
    pub offset: i64,
}

/// The wall clock in the protocol's unit: microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
