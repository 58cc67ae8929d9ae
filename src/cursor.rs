//! Event cursors: where an event sits in its source, as the opaque bytes that events and
//! `Published` carry and that a client may send back as `resume_from`. This module encodes them
//! for every source and decodes them. It is pure (no I/O, no other feedgate module); whether a
//! source can resume from a cursor is the source's business, not this module's.
//!
//! # Layout
//!
//! ```text
//! byte 0     version: 1
//! byte 1     kind: b'm' in-process topic, b'k' Kafka record, b'c' table change
//! bytes 2..  the kind's fields, big-endian, fixed width, nothing after them:
//!              'm'  epoch u64, offset i64      18 bytes in all
//!              'k'  partition i32, offset i64  14 bytes in all
//!              'c'  log id i64                 10 bytes in all
//! ```
//!
//! Clients may have stored cursors, so the bytes of a version never change. A later layout takes
//! the next version number (it may add fields after these, or new kinds), [`Cursor::decode`]
//! keeps reading every version ever written, and [`Cursor::encode`] writes the newest.
//!
//! RabbitMQ topics have no kind: a queue has no offsets, so there is no position to name. Their
//! events and `Published` carry an empty cursor, which [`Cursor::decode`] refuses as
//! [`CursorError::Empty`].

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The layout [`Cursor::encode`] writes; the only one [`Cursor::decode`] reads so far.
const VERSION: u8 = 1;
/// Version byte and kind byte.
const HEADER: usize = 2;

/// The position of one event in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// A message of an in-process topic.
    Memory {
        /// The process that numbered it: offsets start again in every run, so a cursor from
        /// another run is recognisable by its epoch.
        epoch: u64,
        /// The message's offset (one counter for all topics of the process).
        offset: i64,
    },
    /// A Kafka record: offsets are per partition, so both are needed.
    Kafka {
        /// The record's partition.
        partition: i32,
        /// The record's offset within its partition.
        offset: i64,
    },
    /// A change of a watched table.
    Table {
        /// The change's id in `feedgate.changes`, the change log.
        log_id: i64,
    },
}

/// Why bytes are not a cursor. A client's `resume_from` can be anything, so each case is a
/// value to answer with, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CursorError {
    /// No bytes at all: "no position", as RabbitMQ's events carry.
    #[error("the cursor is empty")]
    Empty,
    /// A layout version this build does not know (forged, or from a newer feedgate).
    #[error("unknown cursor version {0}")]
    UnknownVersion(u8),
    /// A kind byte this version does not have.
    #[error("unknown cursor kind {0:#04x}")]
    UnknownKind(u8),
    /// Fewer bytes than the version and kind need.
    #[error("truncated cursor: {actual} bytes, {expected} needed")]
    Truncated {
        /// The whole cursor's length for its version and kind.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// More bytes than the version and kind hold.
    #[error("trailing bytes after the cursor: {actual} bytes, {expected} expected")]
    TrailingBytes {
        /// The whole cursor's length for its version and kind.
        expected: usize,
        /// The length received.
        actual: usize,
    },
}

impl Cursor {
    /// The cursor's bytes, in the newest layout (see the module documentation).
    pub fn encode(&self) -> Bytes {
        let kind = self.kind();
        let mut bytes = BytesMut::with_capacity(HEADER + kind.body_len());
        bytes.put_u8(VERSION);
        bytes.put_u8(kind as u8);
        match *self {
            Cursor::Memory { epoch, offset } => {
                bytes.put_u64(epoch);
                bytes.put_i64(offset);
            }
            Cursor::Kafka { partition, offset } => {
                bytes.put_i32(partition);
                bytes.put_i64(offset);
            }
            Cursor::Table { log_id } => bytes.put_i64(log_id),
        }
        bytes.freeze()
    }

    /// Reads a cursor that [`Cursor::encode`] wrote, in any version this build knows. Any other
    /// bytes give an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, CursorError> {
        let (&version, rest) = bytes.split_first().ok_or(CursorError::Empty)?;
        if version != VERSION {
            return Err(CursorError::UnknownVersion(version));
        }
        let Some((&kind, body)) = rest.split_first() else {
            return Err(CursorError::Truncated {
                expected: HEADER,
                actual: bytes.len(),
            });
        };
        let kind = Kind::from_byte(kind).ok_or(CursorError::UnknownKind(kind))?;
        let mut fields = Fields {
            rest: body,
            expected: HEADER + kind.body_len(),
            actual: bytes.len(),
        };
        let cursor = match kind {
            Kind::Memory => Cursor::Memory {
                epoch: u64::from_be_bytes(fields.take()?),
                offset: i64::from_be_bytes(fields.take()?),
            },
            Kind::Kafka => Cursor::Kafka {
                partition: i32::from_be_bytes(fields.take()?),
                offset: i64::from_be_bytes(fields.take()?),
            },
            Kind::Table => Cursor::Table {
                log_id: i64::from_be_bytes(fields.take()?),
            },
        };
        fields.end()?;
        Ok(cursor)
    }

    /// The kind byte this variant is written with.
    fn kind(&self) -> Kind {
        match self {
            Cursor::Memory { .. } => Kind::Memory,
            Cursor::Kafka { .. } => Kind::Kafka,
            Cursor::Table { .. } => Kind::Table,
        }
    }
}

/// The kind byte of version 1, one per [`Cursor`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Memory = b'm',
    Kafka = b'k',
    Table = b'c',
}

impl Kind {
    /// The kind a byte names in version 1, if any.
    fn from_byte(byte: u8) -> Option<Self> {
        [Kind::Memory, Kind::Kafka, Kind::Table]
            .into_iter()
            .find(|kind| *kind as u8 == byte)
    }

    /// How many bytes of fields follow the header.
    fn body_len(self) -> usize {
        match self {
            Kind::Memory => 8 + 8,
            Kind::Kafka => 4 + 8,
            Kind::Table => 8,
        }
    }
}

/// Reads a body's fixed-width fields in order; knows the lengths its errors report.
struct Fields<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// The whole cursor's length for its version and kind.
    expected: usize,
    /// The whole cursor's length as received.
    actual: usize,
}

impl Fields<'_> {
    /// The next field's `N` bytes.
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let (field, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(CursorError::Truncated {
                expected: self.expected,
                actual: self.actual,
            })?;
        self.rest = rest;
        Ok(*field)
    }

    /// Every byte was a field.
    fn end(&self) -> Result<(), CursorError> {
        if self.rest.is_empty() {
            return Ok(());
        }
        Err(CursorError::TrailingBytes {
            expected: self.expected,
            actual: self.actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Today's bytes, pinned: clients may have stored cursors, so these must never change.
    #[test]
    fn memory_cursor_bytes_are_pinned() {
        let cursor = Cursor::Memory {
            epoch: 0x0102_0304_0506_0708,
            offset: 0x1112_1314_1516_1718,
        };
        let bytes = [
            1, b'm', 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        ];
        assert_eq!(cursor.encode()[..], bytes);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn kafka_cursor_bytes_are_pinned() {
        let cursor = Cursor::Kafka {
            partition: 3,
            offset: 0x0102_0304_0506_0708,
        };
        let bytes = [1, b'k', 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(cursor.encode()[..], bytes);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
        // Negative values are two's complement, as `put_i32`/`put_i64` wrote them.
        let negative = Cursor::Kafka {
            partition: -1,
            offset: -2,
        };
        let bytes = [
            1, b'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
        ];
        assert_eq!(negative.encode()[..], bytes);
        assert_eq!(Cursor::decode(&bytes), Ok(negative));
    }

    #[test]
    fn table_cursor_bytes_are_pinned() {
        let cursor = Cursor::Table { log_id: 258 };
        let bytes = [1, b'c', 0, 0, 0, 0, 0, 0, 1, 2];
        assert_eq!(cursor.encode()[..], bytes);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn each_malformed_shape_has_its_error() {
        use CursorError::*;
        let table = Cursor::Table { log_id: 7 }.encode();
        let cases: [(&[u8], CursorError); 8] = [
            (&[], Empty),
            (&[0], UnknownVersion(0)),
            (&[2, b'c', 0, 0, 0, 0, 0, 0, 0, 7], UnknownVersion(2)),
            (
                &[1],
                Truncated {
                    expected: 2,
                    actual: 1,
                },
            ),
            (&[1, b'r'], UnknownKind(b'r')),
            (
                &[1, b'm', 0, 0],
                Truncated {
                    expected: 18,
                    actual: 4,
                },
            ),
            (
                &table[..9],
                Truncated {
                    expected: 10,
                    actual: 9,
                },
            ),
            (
                &[&table[..], &[0]].concat(),
                TrailingBytes {
                    expected: 10,
                    actual: 11,
                },
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(Cursor::decode(bytes), Err(error), "{bytes:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            CursorError::UnknownKind(b'r').to_string(),
            "unknown cursor kind 0x72"
        );
        assert_eq!(
            CursorError::Truncated {
                expected: 18,
                actual: 4
            }
            .to_string(),
            "truncated cursor: 4 bytes, 18 needed"
        );
    }

    fn any_cursor() -> impl Strategy<Value = Cursor> {
        prop_oneof![
            (any::<u64>(), any::<i64>())
                .prop_map(|(epoch, offset)| Cursor::Memory { epoch, offset }),
            (any::<i32>(), any::<i64>())
                .prop_map(|(partition, offset)| Cursor::Kafka { partition, offset }),
            any::<i64>().prop_map(|log_id| Cursor::Table { log_id }),
        ]
    }

    /// Any bytes, but mostly ones that start like a cursor, so that the kinds' bodies (right,
    /// short and long) are reached, not only the version check.
    fn cursor_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let header = prop_oneof![
            Just(vec![]),
            any::<u8>().prop_map(|version| vec![version]),
            prop::sample::select(vec![b'm', b'k', b'c', b'x', 0]).prop_map(|kind| vec![1, kind]),
        ];
        prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..24),
            3 => (header, prop::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(mut bytes, body)| {
                    bytes.extend(body);
                    bytes
                }),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(cursor in any_cursor()) {
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn any_bytes_decode_to_their_cursor_or_an_error(bytes in cursor_like_bytes()) {
            match Cursor::decode(&bytes) {
                Ok(cursor) => prop_assert_eq!(&cursor.encode()[..], &bytes[..]),
                Err(CursorError::Empty) => prop_assert!(bytes.is_empty()),
                Err(CursorError::UnknownVersion(version)) => prop_assert_eq!(bytes[0], version),
                Err(CursorError::UnknownKind(kind)) => prop_assert_eq!(bytes[1], kind),
                Err(CursorError::Truncated { expected, actual }) => {
                    prop_assert_eq!(actual, bytes.len());
                    prop_assert!(actual < expected);
                }
                Err(CursorError::TrailingBytes { expected, actual }) => {
                    prop_assert_eq!(actual, bytes.len());
                    prop_assert!(actual > expected);
                }
            }
        }
    }
}
