//! Event cursors: where an event sits in its source, as the opaque bytes that events and
//! `Published` carry and that a client may send back as `resume_from`. This module encodes them
//! for every source and decodes them. It is pure (no I/O, no other feedgate module); whether a
//! source can resume from a cursor is the source's business, not this module's.
//!
//! # Layout
//!
//! ```text
//! byte 0     version: 1 or 2
//! byte 1     kind
//! bytes 2..  the kind's fields, big-endian, nothing after them
//!
//! version 1, fixed width:
//!   'm' in-process topic   epoch u64, offset i64      18 bytes in all
//!   'k' Kafka record       partition i32, offset i64  14 bytes in all
//!   'c' table change       log id i64                 10 bytes in all (no longer written)
//! version 2:
//!   't' table feed position
//!        table oid u32, base snapshot, count u16, count × (snapshot, log id i64)
//!        snapshot = xmin u64, xmax u64, n u32, n × in-progress xid u64
//!   'p' Kafka subscription positions
//!        topic length u16, topic (UTF-8), count u16, count × (partition i32, next offset i64)
//!   'r' RabbitMQ stream message
//!        topic length u16, topic (UTF-8), offset i64, check u32
//! ```
//!
//! Clients may have stored cursors, so the bytes of a version never change. A new layout or kind
//! takes the next version number, [`Cursor::decode`] keeps reading every version ever written,
//! and [`Cursor::encode`] writes each kind in its newest layout.
//!
//! A table feed position says which changes a subscriber has had (see [`TablePosition`]), in
//! terms of PostgreSQL snapshots and change-log ids: the log's ids are not commit order, so an id
//! alone cannot say it.
//!
//! RabbitMQ topics kept in a stream have offsets (kind `r`). Other RabbitMQ topics have no kind:
//! a queue has no offsets, so there is no position to name. Their events, and every RabbitMQ
//! `Published`, carry an empty cursor, which [`Cursor::decode`] refuses as
//! [`CursorError::Empty`].

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The fixed-width layout of topic cursors (and of the table cursors of before resume).
const VERSION: u8 = 1;
/// The layout of table feed positions.
const VERSION_2: u8 = 2;
/// The kind byte of a table feed position (version 2).
const TABLE_FEED: u8 = b't';
/// The kind byte of a Kafka subscription's positions (version 2).
const KAFKA_POSITIONS: u8 = b'p';
/// The kind byte of a RabbitMQ stream message (version 2).
const RABBIT_STREAM: u8 = b'r';
/// Version byte and kind byte.
const HEADER: usize = 2;

/// The position of one event in its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// A message of an in-process topic.
    Memory {
        /// The process that numbered it: offsets start again in every run, so a cursor from
        /// another run is recognisable by its epoch.
        epoch: u64,
        /// The message's offset (one counter for all topics of the process).
        offset: i64,
    },
    /// A Kafka record (a `Published` cursor): offsets are per partition, so both are needed.
    Kafka {
        /// The record's partition.
        partition: i32,
        /// The record's offset within its partition.
        offset: i64,
    },
    /// A change of a watched table, as cursors were before table feeds could resume: a log id
    /// alone, which cannot say what came before it. Still read (clients may have stored one),
    /// no longer written.
    Table {
        /// The change's id in `feedgate.changes`, the change log.
        log_id: i64,
    },
    /// Where a table subscription is in its table's changes.
    TableFeed(TablePosition),
    /// Where a Kafka subscription is in its topic: the next offset to read of each partition it
    /// has read from (the records below them were delivered).
    KafkaPositions {
        /// The topic's name, as UTF-8 bytes (a position resumes only its own topic).
        topic: Vec<u8>,
        /// (partition, next offset), as the subscription reached them.
        next: Vec<(i32, i64)>,
    },
    /// A message of a RabbitMQ topic kept in a stream.
    RabbitStream {
        /// The topic's name, as UTF-8 bytes (a position resumes only its own topic).
        topic: Vec<u8>,
        /// The message's offset in the stream.
        offset: i64,
        /// A checksum of the message, so that a resume finds out when the stream at `offset`
        /// holds another message (the stream was deleted and declared again).
        check: u32,
    },
}

/// Which changes of one table a subscriber has had: every change whose transaction is visible in
/// `base`, and, of the changes visible in each `then` snapshot but not in `base`, those whose log
/// id is at most the one beside it. (The changefeed reader delivers, per poll, the changes that
/// became visible between two snapshots in log-id order, so where it is in a poll is a pair.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TablePosition {
    /// The table (`pg_class` oid); a position resumes only its own table.
    pub table_oid: u32,
    /// Every change visible here was had.
    pub base: TxSnapshot,
    /// And of those visible here but not in `base`, the ones up to this log id.
    pub then: Vec<(TxSnapshot, i64)>,
}

/// A PostgreSQL snapshot (`pg_snapshot`) as numbers: a transaction is visible in it when it is
/// below `xmin`, or below `xmax` and not in `xip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxSnapshot {
    /// Every older transaction had ended.
    pub xmin: u64,
    /// No newer transaction had started.
    pub xmax: u64,
    /// The transactions in progress between the two.
    pub xip: Vec<u64>,
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
    /// The cursor's bytes, in its kind's newest layout (see the module documentation).
    pub fn encode(&self) -> Bytes {
        let kind = match self {
            Cursor::TableFeed(position) => {
                let then = position.then.iter().map(|(snapshot, id)| (snapshot, *id));
                return encode_table_feed(position.table_oid, &position.base, then);
            }
            Cursor::KafkaPositions { topic, next } => {
                return encode_kafka_positions(topic, next.iter().copied());
            }
            Cursor::RabbitStream {
                topic,
                offset,
                check,
            } => return encode_rabbit_stream(topic, *offset, *check),
            other => other.kind(),
        };
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
            Cursor::TableFeed(_) | Cursor::KafkaPositions { .. } | Cursor::RabbitStream { .. } => {} // returned above
        }
        bytes.freeze()
    }

    /// Reads a cursor that [`Cursor::encode`] wrote, in any version this build knows. Any other
    /// bytes give an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, CursorError> {
        let (&version, rest) = bytes.split_first().ok_or(CursorError::Empty)?;
        if version == VERSION_2 {
            return decode_v2(bytes);
        }
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

    /// The version 1 kind byte this variant is written with (table feeds: see `encode`).
    fn kind(&self) -> Kind {
        match self {
            Cursor::Memory { .. } => Kind::Memory,
            Cursor::Kafka { .. } => Kind::Kafka,
            Cursor::Table { .. } | Cursor::TableFeed(_) => Kind::Table,
            Cursor::KafkaPositions { .. } | Cursor::RabbitStream { .. } => Kind::Kafka,
        }
    }
}

/// A table feed position's bytes (version 2), from borrowed parts: the changefeed reader writes
/// one per change without copying its snapshots.
pub fn encode_table_feed<'a>(
    table_oid: u32,
    base: &TxSnapshot,
    then: impl Iterator<Item = (&'a TxSnapshot, i64)> + Clone,
) -> Bytes {
    let mut bytes = BytesMut::with_capacity(64);
    bytes.put_u8(VERSION_2);
    bytes.put_u8(TABLE_FEED);
    bytes.put_u32(table_oid);
    put_snapshot(&mut bytes, base);
    // More than u16::MAX entries would take a client that resumed 65,535 times mid-catch-up.
    let count = then.clone().count().min(usize::from(u16::MAX));
    bytes.put_u16(count as u16);
    for (snapshot, id) in then.take(count) {
        put_snapshot(&mut bytes, snapshot);
        bytes.put_i64(id);
    }
    bytes.freeze()
}

fn put_snapshot(bytes: &mut BytesMut, snapshot: &TxSnapshot) {
    bytes.put_u64(snapshot.xmin);
    bytes.put_u64(snapshot.xmax);
    bytes.put_u32(u32::try_from(snapshot.xip.len()).unwrap_or(u32::MAX));
    for xid in snapshot.xip.iter().take(u32::MAX as usize) {
        bytes.put_u64(*xid);
    }
}

/// A Kafka subscription's positions (version 2): the topic (at most 65,535 bytes, as topic
/// names are far shorter) and each partition's next offset.
pub fn encode_kafka_positions(
    topic: &[u8],
    next: impl Iterator<Item = (i32, i64)> + Clone,
) -> Bytes {
    let topic = &topic[..topic.len().min(usize::from(u16::MAX))];
    let count = next.clone().count().min(usize::from(u16::MAX));
    let mut bytes = BytesMut::with_capacity(HEADER + 2 + topic.len() + 2 + count * 12);
    bytes.put_u8(VERSION_2);
    bytes.put_u8(KAFKA_POSITIONS);
    bytes.put_u16(topic.len() as u16);
    bytes.put_slice(topic);
    bytes.put_u16(count as u16);
    for (partition, offset) in next.take(count) {
        bytes.put_i32(partition);
        bytes.put_i64(offset);
    }
    bytes.freeze()
}

/// A RabbitMQ stream message's cursor (version 2): the topic (at most 65,535 bytes), the
/// message's offset and its checksum.
pub fn encode_rabbit_stream(topic: &[u8], offset: i64, check: u32) -> Bytes {
    let topic = &topic[..topic.len().min(usize::from(u16::MAX))];
    let mut bytes = BytesMut::with_capacity(HEADER + 2 + topic.len() + 12);
    bytes.put_u8(VERSION_2);
    bytes.put_u8(RABBIT_STREAM);
    bytes.put_u16(topic.len() as u16);
    bytes.put_slice(topic);
    bytes.put_i64(offset);
    bytes.put_u32(check);
    bytes.freeze()
}

/// Reads a version 2 cursor (the whole bytes, version byte included).
fn decode_v2(bytes: &[u8]) -> Result<Cursor, CursorError> {
    let mut fields = Fields {
        rest: &bytes[1..],
        expected: HEADER,
        actual: bytes.len(),
    };
    let [kind] = fields.take_more::<1>()?;
    let cursor = match kind {
        TABLE_FEED => decode_table_feed(&mut fields)?,
        KAFKA_POSITIONS => decode_kafka_positions(&mut fields)?,
        RABBIT_STREAM => {
            let topic = take_topic(&mut fields)?;
            Cursor::RabbitStream {
                topic,
                offset: i64::from_be_bytes(fields.take_more()?),
                check: u32::from_be_bytes(fields.take_more()?),
            }
        }
        other => return Err(CursorError::UnknownKind(other)),
    };
    fields.end_here()?;
    Ok(cursor)
}

/// A topic name: its length u16, then that many bytes.
fn take_topic(fields: &mut Fields<'_>) -> Result<Vec<u8>, CursorError> {
    let length = usize::from(u16::from_be_bytes(fields.take_more()?));
    if fields.rest.len() < length {
        return Err(CursorError::Truncated {
            expected: fields.actual - fields.rest.len() + length,
            actual: fields.actual,
        });
    }
    let (topic, rest) = fields.rest.split_at(length);
    fields.rest = rest;
    Ok(topic.to_vec())
}

fn decode_kafka_positions(fields: &mut Fields<'_>) -> Result<Cursor, CursorError> {
    let topic = take_topic(fields)?;
    let count = u16::from_be_bytes(fields.take_more()?);
    let mut next = Vec::new();
    for _ in 0..count {
        let partition = i32::from_be_bytes(fields.take_more()?);
        next.push((partition, i64::from_be_bytes(fields.take_more()?)));
    }
    Ok(Cursor::KafkaPositions { topic, next })
}

fn decode_table_feed(fields: &mut Fields<'_>) -> Result<Cursor, CursorError> {
    let table_oid = u32::from_be_bytes(fields.take_more()?);
    let base = take_snapshot(fields)?;
    let count = u16::from_be_bytes(fields.take_more()?);
    let mut then = Vec::new();
    for _ in 0..count {
        let snapshot = take_snapshot(fields)?;
        then.push((snapshot, i64::from_be_bytes(fields.take_more()?)));
    }
    Ok(Cursor::TableFeed(TablePosition {
        table_oid,
        base,
        then,
    }))
}

fn take_snapshot(fields: &mut Fields<'_>) -> Result<TxSnapshot, CursorError> {
    let xmin = u64::from_be_bytes(fields.take_more()?);
    let xmax = u64::from_be_bytes(fields.take_more()?);
    let n = u32::from_be_bytes(fields.take_more()?) as usize;
    // Checked before allocating: a forged count cannot make a large vector.
    if fields.rest.len() / 8 < n {
        return Err(CursorError::Truncated {
            expected: fields.actual - fields.rest.len() + n * 8,
            actual: fields.actual,
        });
    }
    let xip = (0..n)
        .map(|_| fields.take_more().map(u64::from_be_bytes))
        .collect::<Result<_, _>>()?;
    Ok(TxSnapshot { xmin, xmax, xip })
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

    /// The next field's `N` bytes, in a variable-length layout: a shortfall reports the length
    /// needed to read this field.
    fn take_more<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let read = self.actual - self.rest.len();
        self.expected = read + N;
        self.take()
    }

    /// Every byte was a field, in a variable-length layout: the expected length is what was read.
    fn end_here(&mut self) -> Result<(), CursorError> {
        self.expected = self.actual - self.rest.len();
        self.end()
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
    fn table_feed_bytes_are_pinned() {
        let cursor = Cursor::TableFeed(TablePosition {
            table_oid: 0x0102_0304,
            base: TxSnapshot {
                xmin: 5,
                xmax: 9,
                xip: vec![6],
            },
            then: vec![(
                TxSnapshot {
                    xmin: 9,
                    xmax: 9,
                    xip: vec![],
                },
                258,
            )],
        });
        let bytes: Vec<u8> = [
            &[2, b't', 1, 2, 3, 4][..],
            &[
                0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 6,
            ],
            &[0, 1],
            &[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 1, 2],
        ]
        .concat();
        assert_eq!(cursor.encode()[..], bytes[..]);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn kafka_positions_bytes_are_pinned() {
        let cursor = Cursor::KafkaPositions {
            topic: b"ab".to_vec(),
            next: vec![(1, 258)],
        };
        let bytes = [
            2, b'p', 0, 2, b'a', b'b', 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
        ];
        assert_eq!(cursor.encode()[..], bytes);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn rabbit_stream_bytes_are_pinned() {
        let cursor = Cursor::RabbitStream {
            topic: b"ab".to_vec(),
            offset: 258,
            check: 0x0A0B_0C0D,
        };
        let bytes = [
            2, b'r', 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 1, 2, 0x0A, 0x0B, 0x0C, 0x0D,
        ];
        assert_eq!(&cursor.encode()[..], &bytes[..]);
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn a_forged_count_is_a_truncation_not_an_allocation() {
        // base snapshot claims u32::MAX in-progress transactions and carries none.
        let bytes = [
            &[2, b't', 0, 0, 0, 1][..],
            &[0; 16],
            &[0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(
            Cursor::decode(&bytes),
            Err(CursorError::Truncated {
                expected: bytes.len() + (u32::MAX as usize) * 8,
                actual: bytes.len(),
            })
        );
        assert_eq!(
            Cursor::decode(&[2, b'c']),
            Err(CursorError::UnknownKind(b'c'))
        );
        assert_eq!(
            Cursor::decode(&[2]),
            Err(CursorError::Truncated {
                expected: 2,
                actual: 1
            })
        );
    }

    #[test]
    fn each_malformed_shape_has_its_error() {
        use CursorError::*;
        let table = Cursor::Table { log_id: 7 }.encode();
        let cases: [(&[u8], CursorError); 8] = [
            (&[], Empty),
            (&[0], UnknownVersion(0)),
            (&[3, b'c', 0, 0, 0, 0, 0, 0, 0, 7], UnknownVersion(3)),
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
            (
                prop::collection::vec(any::<u8>(), 0..8),
                prop::collection::vec((any::<i32>(), any::<i64>()), 0..3)
            )
                .prop_map(|(topic, next)| Cursor::KafkaPositions { topic, next }),
            (
                prop::collection::vec(any::<u8>(), 0..8),
                any::<i64>(),
                any::<u32>()
            )
                .prop_map(|(topic, offset, check)| Cursor::RabbitStream {
                    topic,
                    offset,
                    check
                }),
            (
                any::<u32>(),
                any_snapshot(),
                prop::collection::vec((any_snapshot(), any::<i64>()), 0..3)
            )
                .prop_map(|(table_oid, base, then)| Cursor::TableFeed(TablePosition {
                    table_oid,
                    base,
                    then
                })),
        ]
    }

    fn any_snapshot() -> impl Strategy<Value = TxSnapshot> {
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..3),
        )
            .prop_map(|(xmin, xmax, xip)| TxSnapshot { xmin, xmax, xip })
    }

    /// Any bytes, but mostly ones that start like a cursor, so that the kinds' bodies (right,
    /// short and long) are reached, not only the version check.
    fn cursor_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let header = prop_oneof![
            Just(vec![]),
            any::<u8>().prop_map(|version| vec![version]),
            prop::sample::select(vec![b'm', b'k', b'c', b'x', 0]).prop_map(|kind| vec![1, kind]),
            // Kafka positions: a short topic name, then a small count.
            (0u8..4, 0u8..3).prop_map(|(length, count)| {
                let mut bytes = vec![2, b'p', 0, length];
                bytes.extend(std::iter::repeat_n(b'a', usize::from(length)));
                bytes.extend([0, count]);
                bytes
            }),
            // A RabbitMQ stream message: a short topic name.
            (0u8..4).prop_map(|length| {
                let mut bytes = vec![2, b'r', 0, length];
                bytes.extend(std::iter::repeat_n(b'a', usize::from(length)));
                bytes
            }),
            // A table feed position: oid, then a base snapshot with a small in-progress count.
            (any::<u8>(), 0u8..3).prop_map(|(oid, n)| {
                let mut bytes = vec![2, b't', 0, 0, 0, oid];
                bytes.extend([0; 16]);
                bytes.extend([0, 0, 0, n]);
                bytes
            }),
        ];
        prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..24),
            3 => (header, prop::collection::vec(any::<u8>(), 0..60))
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
