//! Decoding one client frame into a validated [`Request`].
//!
//! Validation here is purely syntactic (ids non-zero, names well-formed, a command present);
//! whether a topic exists or a limit is reached is for the session and the sources to decide.

use bytes::Bytes;
use prost::Message as _;

use super::{pb, Code, Failure, PROTOCOL_VERSION};

/// Longest topic or table name accepted, in bytes.
const MAX_NAME_LEN: usize = 255;

/// A decoded, syntactically valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Client-chosen, non-zero; echoed in the response.
    pub request_id: u64,
    /// What the client asks for.
    pub command: Command,
}

/// The commands of protocol version 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Version negotiation and (later) the token.
    Hello {
        /// Requested version; already checked to be one this server speaks.
        protocol_version: u32,
        /// Bearer token, empty when none.
        token: String,
        /// For logs only.
        client_name: String,
        /// The client reads `ServerMessage.bundle`.
        bundles: bool,
    },
    /// Start a subscription.
    Subscribe(Subscribe),
    /// Stop one.
    Unsubscribe {
        /// The id given at subscribe time.
        subscription_id: u64,
    },
    /// Publish to a topic.
    Publish(super::TopicMessage),
    /// Liveness and clock check.
    Ping,
    /// Authenticate, or refresh the token.
    Authenticate {
        /// The bearer token (JWT).
        token: String,
    },
    /// List what the connection may subscribe to.
    GetCatalog,
}

/// A subscribe command.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    /// Client-chosen, non-zero, unique among the connection's active subscriptions.
    pub subscription_id: u64,
    /// Where the events come from.
    pub source: Source,
    /// A cursor to resume after; empty for "from now".
    pub resume_from: Bytes,
    /// Squash: at most one event per key per this interval (the feed's `min_interval_ms`).
    pub squash: Option<std::time::Duration>,
}

/// What a subscription listens to.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A PostgreSQL table's changefeed.
    Table {
        /// As the client wrote it; resolved by the changefeed.
        table: String,
        /// Whether to stream existing rows first.
        include_initial: bool,
        /// The client's row filter, as sent (checked where the table is known).
        filter: Option<pb::Filter>,
        /// The columns it asked for (empty: all; checked where the table is known).
        columns: Vec<String>,
    },
    /// A topic.
    Topic {
        /// Syntactically valid topic name.
        topic: String,
        /// The client's message filter, as sent.
        filter: Option<pb::Filter>,
        /// Where to start.
        start: StartPosition,
    },
}

/// Where a topic subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// What is published after `Subscribed`.
    #[default]
    Latest,
    /// Everything the broker still has.
    Earliest,
    /// From this offset on, in every partition.
    Offset(i64),
}

/// A frame that could not be turned into a request: the id to answer (0 when unreadable) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The request id if the frame had a readable one, else 0.
    pub request_id: u64,
    /// The coded error to send.
    pub failure: Failure,
}

/// Decodes and validates one binary frame.
pub fn decode_request(frame: &[u8]) -> Result<Request, Rejection> {
    if frame.is_empty() {
        return Err(Rejection {
            request_id: 0,
            failure: Failure::new(Code::InvalidMessage, "empty frame: expected a Request"),
        });
    }
    let raw = pb::Request::decode(frame).map_err(|err| Rejection {
        request_id: peek_request_id(frame),
        failure: Failure::new(Code::InvalidMessage, format!("undecodable Request: {err}")),
    })?;
    let request_id = raw.request_id;
    let reject = |failure| Rejection {
        request_id,
        failure,
    };
    if request_id == 0 {
        return Err(reject(Failure::validation(
            "request_id must be non-zero (0 is reserved for errors about unreadable frames)",
        )));
    }
    let command = match raw.command {
        Some(command) => convert_command(command).map_err(reject)?,
        None => return Err(reject(missing_command(frame))),
    };
    Ok(Request {
        request_id,
        command,
    })
}

/// Reads a request id from the start of a frame too large or too broken to decode whole: the
/// value of the first top-level field 1 when it is a varint, else 0 (also when none is readable
/// before the frame stops making sense). Public so that tests and fuzz targets can tell which id
/// the answer to such a frame must carry.
pub fn peek_request_id(frame: &[u8]) -> u64 {
    let mut fields = Fields(frame);
    while let Some((number, value)) = fields.next_field() {
        if number == 1 {
            return value.unwrap_or(0);
        }
    }
    0
}

/// Distinguishes "no command at all" from "a command this server does not know".
fn missing_command(frame: &[u8]) -> Failure {
    let mut fields = Fields(frame);
    while let Some((number, _)) = fields.next_field() {
        if !(1..=8).contains(&number) {
            return Failure::new(
                Code::UnknownCommand,
                format!("request field {number} is not a command this server knows"),
            )
            .detail("field", number);
        }
    }
    Failure::new(Code::UnknownCommand, "request has no command set")
}

fn convert_command(command: pb::request::Command) -> Result<Command, Failure> {
    use pb::request::Command as C;
    Ok(match command {
        C::Hello(hello) => {
            let version = match hello.protocol_version {
                0 => PROTOCOL_VERSION,
                v => v,
            };
            if version != PROTOCOL_VERSION {
                return Err(Failure::new(
                    Code::UnsupportedProtocolVersion,
                    format!("protocol version {version} is not supported"),
                )
                .detail("supported", PROTOCOL_VERSION));
            }
            Command::Hello {
                protocol_version: version,
                token: hello.token,
                client_name: hello.client_name,
                bundles: hello.bundles,
            }
        }
        C::Subscribe(sub) => Command::Subscribe(convert_subscribe(sub)?),
        C::Unsubscribe(unsub) => Command::Unsubscribe {
            subscription_id: nonzero_subscription(unsub.subscription_id)?,
        },
        C::Publish(publish) => {
            check_name("topic", &publish.topic)?;
            let mut headers: Vec<(String, String)> = publish.headers.into_iter().collect();
            if !publish.idempotency_key.is_empty() {
                headers.push(("idempotency-key".into(), publish.idempotency_key));
            }
            headers.sort();
            Command::Publish(super::TopicMessage {
                topic: publish.topic,
                payload: publish.payload,
                key: publish.key,
                headers,
                ..Default::default()
            })
        }
        C::Ping(_) => Command::Ping,
        C::Authenticate(auth) => {
            if auth.token.is_empty() {
                return Err(Failure::validation("Authenticate needs a token"));
            }
            Command::Authenticate { token: auth.token }
        }
        C::GetCatalog(_) => Command::GetCatalog,
    })
}

/// The longest squash interval a subscription may ask for.
pub const MAX_SQUASH_MS: u32 = 60_000;

fn convert_subscribe(sub: pb::Subscribe) -> Result<Subscribe, Failure> {
    use pb::subscribe::Source as S;
    let subscription_id = nonzero_subscription(sub.subscription_id)?;
    let min_interval_ms = match &sub.source {
        Some(S::Table(feed)) => feed.min_interval_ms,
        Some(S::Topic(feed)) => feed.min_interval_ms,
        None => 0,
    };
    if min_interval_ms > MAX_SQUASH_MS {
        return Err(Failure::validation(format!(
            "min_interval_ms is at most {MAX_SQUASH_MS} (got {min_interval_ms})"
        ))
        .detail("min_interval_ms", min_interval_ms));
    }
    let squash =
        (min_interval_ms > 0).then(|| std::time::Duration::from_millis(min_interval_ms.into()));
    let source = match sub.source {
        Some(S::Table(feed)) => {
            check_name("table", &feed.table)?;
            Source::Table {
                table: feed.table,
                include_initial: feed.include_initial,
                filter: feed.filter,
                columns: feed.columns,
            }
        }
        Some(S::Topic(feed)) => {
            check_name("topic", &feed.topic)?;
            let start = match pb::StartPosition::try_from(feed.start) {
                Ok(pb::StartPosition::Latest) => StartPosition::Latest,
                Ok(pb::StartPosition::Earliest) => StartPosition::Earliest,
                Ok(pb::StartPosition::Offset) if feed.start_offset >= 0 => {
                    StartPosition::Offset(feed.start_offset)
                }
                Ok(pb::StartPosition::Offset) => {
                    return Err(Failure::validation("start_offset must not be negative"))
                }
                Err(_) => return Err(Failure::validation("unknown start position")),
            };
            Source::Topic {
                topic: feed.topic,
                filter: feed.filter,
                start,
            }
        }
        None => {
            return Err(Failure::validation(
                "subscribe needs a source: table or topic",
            ))
        }
    };
    Ok(Subscribe {
        subscription_id,
        source,
        resume_from: sub.resume_from,
        squash,
    })
}

fn nonzero_subscription(id: u64) -> Result<u64, Failure> {
    if id == 0 {
        return Err(Failure::validation("subscription_id must be non-zero"));
    }
    Ok(id)
}

/// Topic and table names: 1 to 255 bytes, no control characters; topics no whitespace at all
/// (a quoted SQL identifier may contain spaces, so table names may).
fn check_name(what: &str, name: &str) -> Result<(), Failure> {
    let forbidden =
        |c: char| c.is_control() || (c.is_whitespace() && (what != "table" || c != ' '));
    let bad = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 255 bytes")
    } else if name.chars().any(forbidden) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match bad {
        Some(why) => Err(Failure::validation(format!("{what} name {why}")).detail(what, name)),
        None => Ok(()),
    }
}

/// A minimal reader of top-level protobuf fields, enough to find a request id or an unknown
/// field number in a frame that prost could not (or need not) decode.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    /// The next field's number and, for varint fields, its value; `None` at the end or on
    /// malformed input.
    fn next_field(&mut self) -> Option<(u64, Option<u64>)> {
        if self.0.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Some(self.varint()?),
            1 => self.skip(8).map(|()| None)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.skip(len).map(|()| None)?
            }
            5 => self.skip(4).map(|()| None)?,
            _ => return None,
        };
        Some((number, value))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.0 = self.0.get(len..)?;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(request: pb::Request) -> Vec<u8> {
        request.encode_to_vec()
    }

    fn subscribe_topic(id: u64, topic: &str) -> pb::Request {
        pb::Request {
            request_id: 9,
            command: Some(pb::request::Command::Subscribe(pb::Subscribe {
                subscription_id: id,
                source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: topic.into(),
                    ..Default::default()
                })),
                resume_from: Bytes::new(),
            })),
        }
    }

    #[test]
    fn decodes_a_topic_subscribe() {
        let request = decode_request(&encode(subscribe_topic(3, "orders"))).expect("valid");
        assert_eq!(request.request_id, 9);
        assert_eq!(
            request.command,
            Command::Subscribe(Subscribe {
                subscription_id: 3,
                source: Source::Topic {
                    topic: "orders".into(),
                    filter: None,
                    start: StartPosition::Latest,
                },
                resume_from: Bytes::new(),
                squash: None,
            })
        );
    }

    #[test]
    fn min_interval_is_a_squash_of_at_most_a_minute() {
        let with = |ms| {
            let mut request = subscribe_topic(3, "orders");
            if let Some(pb::request::Command::Subscribe(sub)) = &mut request.command {
                if let Some(pb::subscribe::Source::Topic(feed)) = &mut sub.source {
                    feed.min_interval_ms = ms;
                }
            }
            decode_request(&encode(request))
        };
        let Ok(request) = with(250) else {
            panic!("250 ms is valid");
        };
        let Command::Subscribe(sub) = request.command else {
            panic!("a subscribe");
        };
        assert_eq!(sub.squash, Some(std::time::Duration::from_millis(250)));
        let Err(rejection) = with(MAX_SQUASH_MS + 1) else {
            panic!("too long");
        };
        assert_eq!(rejection.failure.code, Code::Validation);
        assert!(rejection.failure.message.contains("min_interval_ms"));
    }

    #[test]
    fn rejects_zero_ids_and_bad_names_with_the_request_id() {
        for (request, needle) in [
            (subscribe_topic(0, "orders"), "subscription_id"),
            (subscribe_topic(1, ""), "empty"),
            (subscribe_topic(1, "a b"), "whitespace"),
            (subscribe_topic(1, &"x".repeat(256)), "longer"),
        ] {
            let err = decode_request(&encode(request)).expect_err("invalid");
            assert_eq!(err.request_id, 9);
            assert_eq!(err.failure.code, Code::Validation);
            assert!(err.failure.message.contains(needle), "{}", err.failure);
        }
    }

    #[test]
    fn garbage_gets_invalid_message_with_a_peeked_id() {
        // field 1 = 77, then a length-delimited field whose length runs past the end.
        let frame = [0x08, 77, 0x12, 0x7f, 0x01];
        let err = decode_request(&frame).expect_err("undecodable");
        assert_eq!(err.failure.code, Code::InvalidMessage);
        assert_eq!(err.request_id, 77);
        assert_eq!(decode_request(&[0xff]).expect_err("junk").request_id, 0);
    }

    #[test]
    fn missing_and_unknown_commands_are_told_apart() {
        let none = decode_request(&encode(pb::Request {
            request_id: 4,
            command: None,
        }))
        .expect_err("no command");
        assert_eq!(none.failure.code, Code::UnknownCommand);
        assert!(none.failure.message.contains("no command"));

        // request_id 4, then field 40 (a command from the future) as an empty message.
        let frame = [0x08, 4, 0xc2, 0x02, 0x00];
        let unknown = decode_request(&frame).expect_err("unknown");
        assert_eq!(unknown.request_id, 4);
        assert_eq!(unknown.failure.code, Code::UnknownCommand);
        assert_eq!(unknown.failure.details["field"], "40");
    }

    #[test]
    fn empty_frame_and_zero_request_id_are_rejected() {
        assert_eq!(
            decode_request(&[]).expect_err("empty").failure.code,
            Code::InvalidMessage
        );
        let zero = encode(pb::Request {
            request_id: 0,
            command: Some(pb::request::Command::Ping(pb::Ping {})),
        });
        assert_eq!(
            decode_request(&zero).expect_err("zero id").failure.code,
            Code::Validation
        );
    }

    #[test]
    fn hello_negotiates_version_one_only() {
        let hello = |v| {
            encode(pb::Request {
                request_id: 1,
                command: Some(pb::request::Command::Hello(pb::Hello {
                    protocol_version: v,
                    ..Default::default()
                })),
            })
        };
        assert!(matches!(
            decode_request(&hello(0)).expect("v0").command,
            Command::Hello {
                protocol_version: 1,
                ..
            }
        ));
        let err = decode_request(&hello(2)).expect_err("v2");
        assert_eq!(err.failure.code, Code::UnsupportedProtocolVersion);
    }

    #[test]
    fn publish_carries_the_idempotency_key_as_a_header() {
        let frame = encode(pb::Request {
            request_id: 2,
            command: Some(pb::request::Command::Publish(pb::Publish {
                topic: "t".into(),
                payload: Bytes::from_static(b"p"),
                idempotency_key: "k1".into(),
                ..Default::default()
            })),
        });
        let Command::Publish(msg) = decode_request(&frame).expect("valid").command else {
            panic!("not a publish");
        };
        assert_eq!(msg.headers, vec![("idempotency-key".into(), "k1".into())]);
    }
}
