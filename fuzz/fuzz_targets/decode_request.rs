//! `decode_request` on any bytes: it never panics, and what it returns keeps the protocol's
//! promises (docs/protocol.md, src/protocol/decode.rs):
//!
//! - an accepted request has a non-zero `request_id`, its names are valid, its ids non-zero, and
//!   it survives a round trip (domain value -> protobuf -> bytes -> `decode_request`) unchanged;
//! - a frame is accepted exactly when protobuf decodes it and the documented syntax rules hold
//!   (an independent check below, written from the documentation);
//! - a rejection carries the request id only when one was readable: when protobuf decodes the
//!   frame, exactly its `request_id`; when it does not, 0 or the value of a `request_id` field
//!   readable at the top level of the frame, and that field's value when it comes first;
//! - rejections use the codes the documentation lists for bad frames.
//!
//! The first input byte chooses between raw bytes (the rest of the input as one frame) and a
//! structured request (built from the rest of the input, then perhaps mutated at the byte level).

#![no_main]

use arbitrary::Unstructured;
use bytes::Bytes;
use feedgate::protocol::{
    decode_request, pb, Code, Command, Request, Source, StartPosition, Subscribe, TopicMessage,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        check(&[]);
        return;
    };
    if mode & 1 == 0 {
        check(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let tokens = ["header.payload.signature".to_owned()];
    let Ok(request) = feedgate_fuzz::request(&mut u, &tokens) else {
        return;
    };
    let frame = if mode & 2 == 0 {
        request.encode_to_vec()
    } else {
        match feedgate_fuzz::mutated(&mut u, &request) {
            Ok(frame) => frame,
            Err(_) => return,
        }
    };
    check(&frame);
});

fn check(frame: &[u8]) {
    let result = decode_request(frame);
    assert_eq!(result, decode_request(frame), "decoding is deterministic");
    let raw = if frame.is_empty() {
        None // an empty frame decodes as the empty Request, but is refused before that
    } else {
        pb::Request::decode(frame).ok()
    };
    match (&result, &raw) {
        (Ok(request), Some(raw)) => {
            assert_eq!(request.request_id, raw.request_id);
            assert_eq!(spec(raw), Ok(()), "accepted what the spec refuses");
            round_trip(request);
        }
        (Ok(_), None) => panic!("accepted a frame protobuf cannot decode: {result:?}"),
        (Err(rejection), Some(raw)) => {
            assert_eq!(rejection.request_id, raw.request_id, "{rejection:?}");
            let expected = spec(raw).expect_err("refused what the spec accepts");
            assert_eq!(rejection.failure.code, expected, "{rejection:?}");
        }
        (Err(rejection), None) => {
            assert_eq!(
                rejection.failure.code,
                Code::InvalidMessage,
                "{rejection:?}"
            );
            let readable = top_level_ids(frame);
            if rejection.request_id != 0 {
                assert!(
                    readable.contains(&rejection.request_id),
                    "id {} is not readable in the frame {frame:02x?}",
                    rejection.request_id
                );
            }
            if let Some(first) = first_field_id(frame) {
                assert_eq!(rejection.request_id, first, "a leading request_id is kept");
            }
        }
    }
}

/// The syntax rules of docs/protocol.md and decode.rs's doc comments, written independently of
/// the decoder: `Ok` when the request is valid, else the code its rejection must carry.
fn spec(raw: &pb::Request) -> Result<(), Code> {
    use pb::request::Command as C;
    use pb::subscribe::Source as S;
    if raw.request_id == 0 {
        return Err(Code::Validation);
    }
    match raw.command.as_ref().ok_or(Code::UnknownCommand)? {
        C::Hello(hello) if hello.protocol_version > 1 => Err(Code::UnsupportedProtocolVersion),
        C::Hello(_) | C::Ping(_) | C::GetCatalog(_) => Ok(()),
        C::Authenticate(auth) if auth.token.is_empty() => Err(Code::Validation),
        C::Authenticate(_) => Ok(()),
        C::Unsubscribe(u) if u.subscription_id == 0 => Err(Code::Validation),
        C::Unsubscribe(_) => Ok(()),
        C::Publish(p) => valid_name(&p.topic, false),
        C::Subscribe(s) if s.subscription_id == 0 => Err(Code::Validation),
        C::Subscribe(s) => match s.source.as_ref().ok_or(Code::Validation)? {
            S::Table(t) => valid_name(&t.table, true),
            S::Topic(t) => {
                valid_name(&t.topic, false)?;
                match t.start {
                    0 | 1 => Ok(()),
                    2 if t.start_offset >= 0 => Ok(()),
                    _ => Err(Code::Validation),
                }
            }
        },
    }
}

/// 1 to 255 bytes, no control characters, no whitespace (table names may contain spaces).
fn valid_name(name: &str, table: bool) -> Result<(), Code> {
    let bad = |c: char| c.is_control() || (c.is_whitespace() && !(table && c == ' '));
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(Code::Validation);
    }
    Ok(())
}

/// Domain value -> protobuf -> bytes -> `decode_request` gives the same value back.
fn round_trip(request: &Request) {
    let mut headers = std::collections::HashMap::new();
    if let Command::Publish(message) = &request.command {
        for (name, value) in &message.headers {
            if headers.insert(name.clone(), value.clone()).is_some() {
                // Two headers of one name (an `idempotency-key` header and the
                // idempotency_key field): a map cannot carry both, so no round trip.
                return;
            }
        }
    }
    let again = decode_request(&encode(request, headers).encode_to_vec())
        .expect("a re-encoded accepted request is accepted");
    assert_eq!(&again, request, "round trip");
}

fn encode(request: &Request, headers: std::collections::HashMap<String, String>) -> pb::Request {
    use pb::request::Command as C;
    let command = match &request.command {
        Command::Hello {
            protocol_version,
            token,
            client_name,
            bundles,
        } => C::Hello(pb::Hello {
            protocol_version: *protocol_version,
            token: token.clone(),
            client_name: client_name.clone(),
            bundles: *bundles,
        }),
        Command::Subscribe(Subscribe {
            subscription_id,
            source,
            resume_from,
            squash,
        }) => C::Subscribe(pb::Subscribe {
            subscription_id: *subscription_id,
            source: Some(match source {
                Source::Table {
                    table,
                    include_initial,
                    filter,
                    columns,
                } => pb::subscribe::Source::Table(pb::TableFeed {
                    table: table.clone(),
                    include_initial: *include_initial,
                    filter: filter.clone(),
                    columns: columns.clone(),
                    min_interval_ms: squash.map_or(0, |d| d.as_millis() as u32),
                }),
                Source::Topic {
                    topic,
                    start,
                    filter,
                } => {
                    let (start, start_offset) = match start {
                        StartPosition::Latest => (0, 0),
                        StartPosition::Earliest => (1, 0),
                        StartPosition::Offset(offset) => (2, *offset),
                    };
                    pb::subscribe::Source::Topic(pb::TopicFeed {
                        topic: topic.clone(),
                        start,
                        start_offset,
                        filter: filter.clone(),
                        min_interval_ms: squash.map_or(0, |d| d.as_millis() as u32),
                    })
                }
            }),
            resume_from: resume_from.clone(),
        }),
        Command::Unsubscribe { subscription_id } => C::Unsubscribe(pb::Unsubscribe {
            subscription_id: *subscription_id,
        }),
        Command::Publish(TopicMessage {
            topic,
            payload,
            key,
            ..
        }) => C::Publish(pb::Publish {
            topic: topic.clone(),
            payload: Bytes::clone(payload),
            key: key.clone(),
            headers,
            idempotency_key: String::new(),
        }),
        Command::Ping => C::Ping(pb::Ping {}),
        Command::Authenticate { token } => C::Authenticate(pb::Authenticate {
            token: token.clone(),
        }),
        Command::GetCatalog => C::GetCatalog(pb::GetCatalog {}),
    };
    pb::Request {
        request_id: request.request_id,
        command: Some(command),
    }
}

/// Reads one varint; `None` when the bytes end first or it runs past 10 bytes.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(7 * i).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Every value of a varint field 1 readable at the top level, up to where the frame stops
/// being readable.
fn top_level_ids(frame: &[u8]) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut rest = frame;
    while !rest.is_empty() {
        let Some(key) = varint(&mut rest) else { break };
        let skip = match key & 7 {
            0 => match varint(&mut rest) {
                Some(value) => {
                    if key >> 3 == 1 {
                        ids.push(value);
                    }
                    0
                }
                None => break,
            },
            1 => 8,
            2 => match varint(&mut rest).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => n,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        match rest.get(skip..) {
            Some(tail) => rest = tail,
            None => break,
        }
    }
    ids
}

/// The value of a varint field 1 that opens the frame (key byte 0x08), if complete.
fn first_field_id(frame: &[u8]) -> Option<u64> {
    let mut rest = frame.strip_prefix(&[0x08])?;
    varint(&mut rest)
}
