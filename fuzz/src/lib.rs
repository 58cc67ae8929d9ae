//! What the fuzz targets share: client requests built from fuzz input, and byte-level
//! mutations of their encodings.
//!
//! Structured requests let the fuzzer reach the accepting paths of the decoder and the session
//! at once (a random byte string is rarely a valid `Request`); the mutations (cuts, repeated or
//! unknown fields, flipped bytes) cover what lies between valid and garbage. Names and ids come
//! mostly from small pools so that subscriptions, publishes and unsubscribes meet; now and then
//! they are arbitrary, to exercise validation.

pub mod session_oracle;
pub mod sql;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use feedgate::protocol::pb;
use prost::Message as _;

/// Whether `FEEDGATE_FUZZ_TRACE` is set: targets then print a line per input saying what it
/// reached (run a corpus with `-runs=0` to see how much of it does what).
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FEEDGATE_FUZZ_TRACE").is_some())
}

/// Topic names most requests use: valid in-process topics, so that publishes reach subscribers.
pub const TOPICS: &[&str] = &["prices", "orders.eu", "a", "x.y.z"];

/// Names that validation or the in-process broker must refuse (or accept as the edge cases
/// they are): empty, whitespace, control characters, wildcards, 255 and 256 bytes, non-ASCII.
fn odd_name(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=10)? {
        0 => String::new(),
        1 => "a b".into(),
        2 => "orders.*".into(),
        3 => "audit.#".into(),
        4 => "x>".into(),
        5 => "tab\there".into(),
        6 => "\u{7f}del".into(),
        7 => "x".repeat(255),
        8 => "x".repeat(256),
        9 => "caf\u{e9}.\u{2003}".into(),
        _ => "public.orders".into(),
    })
}

/// A topic name: mostly from [`TOPICS`], sometimes odd or arbitrary.
pub fn topic(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=15)? {
        0..=11 => (*u.choose(TOPICS)?).to_owned(),
        12 | 13 => odd_name(u)?,
        _ => u.arbitrary()?,
    })
}

/// A request or subscription id: mostly small (so they repeat), sometimes 0 or arbitrary.
pub fn id(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=15)? {
        0 => 0,
        1 => u.arbitrary()?,
        2 => u64::MAX,
        _ => u.int_in_range(1..=6)?,
    })
}

/// A token: one of `tokens` (prepared by the caller), empty, or arbitrary text.
pub fn token(u: &mut Unstructured<'_>, tokens: &[String]) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => String::new(),
        1 => u.arbitrary()?,
        _ if tokens.is_empty() => "not.a.jwt".into(),
        _ => u.choose(tokens)?.clone(),
    })
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Bytes> {
    let len = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

fn publish(u: &mut Unstructured<'_>) -> Result<pb::Publish> {
    let mut headers = std::collections::HashMap::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let name = match u.int_in_range(0..=3)? {
            0 => "idempotency-key".to_owned(),
            1 => "trace".to_owned(),
            _ => u.arbitrary()?,
        };
        headers.insert(name, u.arbitrary()?);
    }
    let payload_len = match u.int_in_range(0..=7)? {
        0 => 200, // larger than the smallest max_message_size the session target configures
        _ => 16,
    };
    Ok(pb::Publish {
        topic: topic(u)?,
        payload: bytes(u, payload_len)?,
        key: if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            String::new()
        },
        headers,
        idempotency_key: if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            String::new()
        },
    })
}

fn subscribe(u: &mut Unstructured<'_>) -> Result<pb::Subscribe> {
    use pb::subscribe::Source;
    let source = match u.int_in_range(0..=9)? {
        0 => None,
        1 => Some(Source::Table(pb::TableFeed {
            table: if u.arbitrary()? {
                "public.orders".into()
            } else {
                odd_name(u)?
            },
            include_initial: u.arbitrary()?,
            ..Default::default()
        })),
        _ => {
            let (start, start_offset) = match u.int_in_range(0..=9)? {
                0 => (1, 0),
                1 => (2, u.arbitrary()?),
                2 => (u.arbitrary()?, u.arbitrary()?),
                _ => (0, 0),
            };
            Some(Source::Topic(pb::TopicFeed {
                topic: topic(u)?,
                start,
                start_offset,
                ..Default::default()
            }))
        }
    };
    Ok(pb::Subscribe {
        subscription_id: id(u)?,
        source,
        resume_from: if u.ratio(1, 8)? {
            bytes(u, 18)?
        } else {
            Bytes::new()
        },
    })
}

/// A request of any command (or none), with fields mostly valid.
pub fn request(u: &mut Unstructured<'_>, tokens: &[String]) -> Result<pb::Request> {
    use pb::request::Command;
    let command = match u.int_in_range(0..=19)? {
        0 => None,
        1 | 2 => Some(Command::Hello(pb::Hello {
            protocol_version: match u.int_in_range(0..=5)? {
                0 => u.arbitrary()?,
                1 => 2,
                2 => 1,
                _ => 0,
            },
            token: token(u, tokens)?,
            client_name: u.arbitrary()?,
            bundles: u.arbitrary()?,
        })),
        3..=7 => Some(Command::Subscribe(subscribe(u)?)),
        8..=10 => Some(Command::Unsubscribe(pb::Unsubscribe {
            subscription_id: id(u)?,
        })),
        11..=15 => Some(Command::Publish(publish(u)?)),
        16 | 17 => Some(Command::Ping(pb::Ping {})),
        _ => Some(Command::Authenticate(pb::Authenticate {
            token: token(u, tokens)?,
        })),
    };
    Ok(pb::Request {
        request_id: id(u)?,
        command,
    })
}

/// `request` encoded, then perhaps changed at the byte level: cut short, given a second
/// `request_id` (protobuf keeps the last), given a field this server does not know, or with one
/// byte changed.
pub fn mutated(u: &mut Unstructured<'_>, request: &pb::Request) -> Result<Vec<u8>> {
    let mut frame = request.encode_to_vec();
    match u.int_in_range(0..=4)? {
        0 => {
            let cut = u.int_in_range(0..=frame.len())?;
            frame.truncate(cut);
        }
        1 => {
            let mut extra = Vec::new();
            prost::encoding::uint64::encode(1, &u.arbitrary::<u64>()?, &mut extra);
            if u.arbitrary()? {
                extra.extend_from_slice(&frame);
                frame = extra;
            } else {
                frame.extend_from_slice(&extra);
            }
        }
        2 => {
            // Field 40 (a command from the future), as an empty message or a varint.
            if u.arbitrary()? {
                frame.extend_from_slice(&[0xc2, 0x02, 0x00]);
            } else {
                frame.extend_from_slice(&[0xc0, 0x02, 0x01]);
            }
        }
        3 if !frame.is_empty() => {
            let at = u.choose_index(frame.len())?;
            frame[at] = u.arbitrary()?;
        }
        _ => {}
    }
    Ok(frame)
}
