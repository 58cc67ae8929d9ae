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
use feedgate::cursor::{Cursor, CursorError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = Cursor::decode(data);
    assert_eq!(result.map(|_| ()), spec(data), "{data:02x?}");
    if let Ok(cursor) = result {
        assert_eq!(cursor.encode(), data, "{cursor:?} encodes differently");
    }
    if let Ok(cursor) = cursor(&mut Unstructured::new(data)) {
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }
});

/// The layout, written from its documentation rather than from the decoder: a version byte (1),
/// a kind byte, then the kind's big-endian fields: `m` 16 bytes, `k` 12, `c` 8.
fn spec(bytes: &[u8]) -> std::result::Result<(), CursorError> {
    let expected = match bytes {
        [] => return Err(CursorError::Empty),
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

fn cursor(u: &mut Unstructured<'_>) -> Result<Cursor> {
    Ok(match u.int_in_range(0..=2)? {
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
