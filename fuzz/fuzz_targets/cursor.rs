//! `Cursor::decode` (src/cursor.rs) on any bytes: it never panics, and what it returns keeps the
//! layout's promises (src/cursor.rs, docs/protocol.md "Cursors and resuming"):
//!
//! - bytes are accepted exactly when the documented layout holds, checked by an independent
//!   statement of it below, and a refusal carries the error that statement gives (empty, unknown
//!   version, truncated, unknown kind, trailing bytes, with the lengths it reports);
//! - an accepted cursor encodes back to exactly the input: one byte string per cursor;
//! - a cursor built from the input survives `encode` then `decode` unchanged.

#![no_main]

use arbitrary::{Result, Unstructured};
use feedgate::cursor::{Cursor, CursorError, TablePosition, TxSnapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = Cursor::decode(data);
    assert_eq!(
        result.as_ref().map(|_| ()).map_err(|e| *e),
        spec(data),
        "{data:02x?}"
    );
    if let Ok(cursor) = result {
        assert_eq!(cursor.encode(), data, "{cursor:?} encodes differently");
    }
    if let Ok(cursor) = cursor(&mut Unstructured::new(data)) {
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor.clone()));
    }
});

/// The layout, written from its documentation rather than from the decoder: a version byte, a
/// kind byte, then the kind's big-endian fields. Version 1: `m` 16 bytes, `k` 12, `c` 8.
/// Version 2: `t`, a table feed position, `p`, Kafka positions, and `r`, a RabbitMQ stream
/// message, of variable length (see `spec_v2`).
fn spec(bytes: &[u8]) -> std::result::Result<(), CursorError> {
    let expected = match bytes {
        [] => return Err(CursorError::Empty),
        [2, ..] => return spec_v2(bytes),
        [version, ..] if *version != 1 => return Err(CursorError::UnknownVersion(*version)),
        [_] => 2,
        [_, b'm', ..] => 18,
        [_, b'k', ..] => 14,
        [_, b'c', ..] => 10,
        [_, kind, ..] => return Err(CursorError::UnknownKind(*kind)),
    };
    let actual = bytes.len();
    if actual < expected {
        return Err(CursorError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(CursorError::TrailingBytes { expected, actual });
    }
    Ok(())
}

/// Version 2, kind `t`: table oid (4 bytes); a snapshot (xmin 8, xmax 8, n 4, n × 8); a count
/// (2); that many times a snapshot and a log id (8). A shortfall names the length needed to read
/// the field it stopped in; bytes after the last field are trailing.
fn spec_v2(bytes: &[u8]) -> std::result::Result<(), CursorError> {
    let actual = bytes.len();
    let mut at = 1;
    let need = |width: usize, at: &mut usize| {
        if actual < *at + width {
            return Err(CursorError::Truncated {
                expected: *at + width,
                actual,
            });
        }
        let field = &bytes[*at..*at + width];
        *at += width;
        Ok(field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
    };
    let kind = need(1, &mut at)?;
    if kind == u64::from(b'p') || kind == u64::from(b'r') {
        // Both start with a topic: its length (2), then the topic.
        let length = need(2, &mut at)? as usize;
        if actual < at + length {
            return Err(CursorError::Truncated {
                expected: at + length,
                actual,
            });
        }
        at += length;
        if kind == u64::from(b'p') {
            // Kafka positions: a count (2), count × 12.
            let count = need(2, &mut at)?;
            for _ in 0..count {
                need(4, &mut at)?;
                need(8, &mut at)?;
            }
        } else {
            // A RabbitMQ stream message: offset (8), check (4).
            need(8, &mut at)?;
            need(4, &mut at)?;
        }
        return if actual > at {
            Err(CursorError::TrailingBytes {
                expected: at,
                actual,
            })
        } else {
            Ok(())
        };
    }
    if kind != u64::from(b't') {
        return Err(CursorError::UnknownKind(bytes[1]));
    }
    need(4, &mut at)?;
    let snapshot = |at: &mut usize| -> std::result::Result<(), CursorError> {
        need(8, at)?;
        need(8, at)?;
        let n = need(4, at)? as usize;
        if actual < *at + n * 8 {
            return Err(CursorError::Truncated {
                expected: *at + n * 8,
                actual,
            });
        }
        *at += n * 8;
        Ok(())
    };
    snapshot(&mut at)?;
    let count = need(2, &mut at)?;
    for _ in 0..count {
        snapshot(&mut at)?;
        need(8, &mut at)?;
    }
    if actual > at {
        return Err(CursorError::TrailingBytes {
            expected: at,
            actual,
        });
    }
    Ok(())
}

fn snapshot(u: &mut Unstructured<'_>) -> Result<TxSnapshot> {
    Ok(TxSnapshot {
        xmin: u.arbitrary()?,
        xmax: u.arbitrary()?,
        xip: (0..u.int_in_range(0..=3)?)
            .map(|_| u.arbitrary())
            .collect::<Result<_>>()?,
    })
}

fn cursor(u: &mut Unstructured<'_>) -> Result<Cursor> {
    Ok(match u.int_in_range(0..=5)? {
        5 => Cursor::RabbitStream {
            topic: (0..u.int_in_range(0..=4)?)
                .map(|_| u.arbitrary())
                .collect::<Result<_>>()?,
            offset: u.arbitrary()?,
            check: u.arbitrary()?,
        },
        4 => Cursor::KafkaPositions {
            topic: (0..u.int_in_range(0..=4)?)
                .map(|_| u.arbitrary())
                .collect::<Result<_>>()?,
            next: (0..u.int_in_range(0..=2)?)
                .map(|_| Ok((u.arbitrary()?, u.arbitrary()?)))
                .collect::<Result<_>>()?,
        },
        3 => Cursor::TableFeed(TablePosition {
            table_oid: u.arbitrary()?,
            base: snapshot(u)?,
            then: (0..u.int_in_range(0..=2)?)
                .map(|_| Ok((snapshot(u)?, u.arbitrary()?)))
                .collect::<Result<_>>()?,
        }),
        0 => Cursor::Memory {
            epoch: u.arbitrary()?,
            offset: u.arbitrary()?,
        },
        1 => Cursor::Kafka {
            partition: u.arbitrary()?,
            offset: u.arbitrary()?,
        },
        _ => Cursor::Table {
            log_id: u.arbitrary()?,
        },
    })
}
