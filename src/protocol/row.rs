//! Row changes in domain form, and their conversion to the protocol's `RowChange`/`Value`.
//!
//! Values keep their types end to end: 64-bit integers and numerics are never squeezed through
//! a double, timestamps are microseconds, bytea is bytes. Which PostgreSQL type becomes which
//! [`Value`] is decided by the changefeed; this module only carries and encodes them.

use bytes::Bytes;

use super::pb;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// boolean.
    Bool(bool),
    /// smallint, integer, bigint.
    Int(i64),
    /// real, double precision.
    Double(f64),
    /// Text-like and any type without a dedicated kind, in PostgreSQL's text form.
    Text(String),
    /// bytea.
    Bytes(Bytes),
    /// numeric, exact, in PostgreSQL's text form.
    Numeric(String),
    /// timestamptz: microseconds since the Unix epoch (UTC).
    Timestamp(i64),
    /// timestamp without time zone: wall-clock microseconds since 1970-01-01 00:00.
    LocalTimestamp(i64),
    /// date: days since 1970-01-01.
    Date(i32),
    /// json, jsonb, arrays: JSON text.
    Json(String),
}

/// A row: column names and values, in a stable (sorted) order so encodings are deterministic.
pub type Row = Vec<(String, Value)>;

/// `row`'s value of `name`: found by binary search in a sorted row, by a scan otherwise.
pub fn column<'a>(row: &'a Row, name: &str) -> Option<&'a Value> {
    match row.binary_search_by(|(column, _)| column.as_str().cmp(name)) {
        Ok(i) => Some(&row[i].1),
        Err(_) => row
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, value)| value),
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Part of the initial snapshot.
    Initial,
    /// Inserted.
    Insert,
    /// Updated.
    Update,
    /// Deleted.
    Delete,
}

/// One row-level change of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// INITIAL, INSERT, UPDATE or DELETE.
    pub kind: ChangeKind,
    /// "schema.table".
    pub table: String,
    /// The primary key columns (of the new row; of the old row for DELETE).
    pub key: Row,
    /// The row after the change.
    pub new_row: Option<Row>,
    /// The row before the change.
    pub old_row: Option<Row>,
    /// The writing transaction (xid8); 0 for INITIAL rows.
    pub transaction_id: u64,
    /// When the change was logged, microseconds since the Unix epoch; 0 when unknown.
    pub commit_time_micros: i64,
}

pub(super) fn row_change(change: &RowChange) -> pb::RowChange {
    let kind = match change.kind {
        ChangeKind::Initial => pb::ChangeKind::Initial,
        ChangeKind::Insert => pb::ChangeKind::Insert,
        ChangeKind::Update => pb::ChangeKind::Update,
        ChangeKind::Delete => pb::ChangeKind::Delete,
    };
    pb::RowChange {
        kind: kind as i32,
        table: change.table.clone(),
        key: Some(row(&change.key)),
        new_row: change.new_row.as_ref().map(row),
        old_row: change.old_row.as_ref().map(row),
        transaction_id: change.transaction_id,
        commit_time_micros: change.commit_time_micros,
    }
}

fn row(row: &Row) -> pb::Row {
    pb::Row {
        columns: row
            .iter()
            .map(|(name, value)| (name.clone(), self::value(value)))
            .collect(),
    }
}

fn value(value: &Value) -> pb::Value {
    use pb::value::Kind as K;
    let kind = match value {
        Value::Null => K::Null(pb::NullValue::NullValue as i32),
        Value::Bool(b) => K::Bool(*b),
        Value::Int(i) => K::Int(*i),
        Value::Double(d) => K::Double(*d),
        Value::Text(t) => K::Text(t.clone()),
        Value::Bytes(b) => K::Bytes(b.clone()),
        Value::Numeric(n) => K::Numeric(n.clone()),
        Value::Timestamp(t) => K::TimestampMicros(*t),
        Value::LocalTimestamp(t) => K::LocalTimestampMicros(*t),
        Value::Date(d) => K::DateDays(*d),
        Value::Json(j) => K::Json(j.clone()),
    };
    pb::Value { kind: Some(kind) }
}
