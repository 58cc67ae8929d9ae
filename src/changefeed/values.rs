//! Conversion of PostgreSQL row data, as `to_jsonb(row)` writes it, into typed [`Value`]s that
//! lose nothing: 64-bit integers and numerics keep their exact digits (serde_json runs with
//! `arbitrary_precision`), float specials come back from their string spellings, bytea is
//! decoded from `\x…` hex, and date/time values become day or microsecond counts.
//!
//! The column's type decides the conversion ([`ColumnType`], from `atttypid::regtype::text`);
//! where the type does not need anything special, or the JSON has an unexpected shape, the
//! value is taken by its JSON shape instead. Nothing here panics on any input, does I/O or
//! knows where the JSON came from.
//!
//! What PostgreSQL 15 emits, and what this module makes of it (checked against the server):
//!
//! - numeric `NaN`/`Infinity`/`-Infinity` and float8/float4 `NaN`/`Infinity`/`-Infinity` are
//!   JSON strings; finite floats are JSON numbers in their shortest decimal form, fully written
//!   out (`1e300` is 301 digits). A float's `-0` arrives as `0`: to_jsonb drops the sign.
//! - bytea is the string `"\\x0001ff"` under the default `bytea_output = hex`; under `escape`
//!   it is `"\\000\\001\\377"`, which is kept as Text.
//! - date/time values are ISO 8601 whatever the session's DateStyle:
//!   `2024-05-01T16:04:56.123456+05:30`. The timestamptz offset is the writer's TimeZone, and
//!   may carry seconds for local mean time (`+05:53:28`, `-04:56:02`). BC values end in ` BC`
//!   (`0044-03-15T10:00:00 BC`, year 44 BC being astronomical year -43); years past 9999 have
//!   more digits. `infinity`/`-infinity` become `i64::MAX`/`i64::MIN` (`i32` for dates).
//!   Timestamps after 294247-01-10T04:00:54.775806Z, which PostgreSQL allows up to year 294276,
//!   do not fit the `i64` microsecond count (and the one equal to `i64::MAX` would read as
//!   infinity); they stay Text.
//! - a json column's value is converted to jsonb by to_jsonb (duplicate keys dropped), and a
//!   jsonb `null` in a column is indistinguishable from SQL NULL: both are Null.
//! - oid, xid, bit, geometric types and the like are JSON strings, hence Text.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::protocol::datetime::{date, timestamp};
use crate::protocol::{Row, Value};

pub(crate) mod pgoutput;

/// A column's type, as far as value conversion cares: only types whose JSON needs more than its
/// own shape to be read right get a variant. Booleans, text-like types (char, name, uuid, inet,
/// interval, time, timetz, money), enums, domains and anything unknown are [`ColumnType::Other`]
/// (text and varchar are [`ColumnType::Text`], converted the same way): to_jsonb already writes
/// them as a JSON bool or their text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// smallint, integer, bigint: a JSON number whose digits must not pass through a double.
    Int,
    /// real, double precision: a JSON number, or a string for NaN and the infinities.
    Double,
    /// numeric: exact text, or a string for NaN and the infinities.
    Numeric,
    /// bytea: `\x`-prefixed hex.
    Bytes,
    /// timestamp with time zone: ISO 8601 with the writer's offset.
    Timestamp,
    /// timestamp without time zone: ISO 8601 wall-clock time.
    LocalTimestamp,
    /// date: ISO 8601 date.
    Date,
    /// json, jsonb and arrays of any type: kept as JSON text.
    Json,
    /// text and varchar: a JSON string, converted like `Other`; told apart only so that row
    /// filters can compare these columns in SQL too.
    Text,
    /// Anything else: taken by the JSON's shape.
    Other,
}

impl ColumnType {
    /// Maps `atttypid::regtype::text` (or `pg_typeof(x)::text`, same spelling), so column types
    /// can be looked up once per table and cached. A typmod (`numeric(10,2)`,
    /// `timestamp(3) with time zone`) is ignored; unknown, enum and domain names are `Other`.
    pub(crate) fn from_regtype(regtype: &str) -> Self {
        let name = regtype.trim();
        if name.ends_with("[]") {
            return Self::Json;
        }
        match without_typmod(name).as_str() {
            "smallint" | "integer" | "bigint" => Self::Int,
            "real" | "double precision" => Self::Double,
            "numeric" => Self::Numeric,
            "bytea" => Self::Bytes,
            "timestamp with time zone" => Self::Timestamp,
            "timestamp without time zone" => Self::LocalTimestamp,
            "date" => Self::Date,
            "json" | "jsonb" => Self::Json,
            "text" | "character varying" => Self::Text,
            _ => Self::Other,
        }
    }
}

impl ColumnType {
    /// The `Value` kind this column's values arrive as (NULL aside), for the catalog;
    /// `regtype` as for [`Self::from_regtype`], which tells booleans among `Other`.
    pub(crate) fn value_kind(&self, regtype: &str) -> crate::protocol::catalog::ValueKind {
        use crate::protocol::catalog::ValueKind;
        match self {
            Self::Int => ValueKind::Int,
            Self::Double => ValueKind::Double,
            Self::Numeric => ValueKind::Numeric,
            Self::Bytes => ValueKind::Bytes,
            Self::Timestamp => ValueKind::TimestampMicros,
            Self::LocalTimestamp => ValueKind::LocalTimestampMicros,
            Self::Date => ValueKind::DateDays,
            Self::Json => ValueKind::Json,
            Self::Other if regtype.trim() == "boolean" => ValueKind::Bool,
            Self::Text | Self::Other => ValueKind::Text,
        }
    }

    /// What a client's filter may compare this column with.
    pub(crate) fn filter_kind(&self) -> crate::row_filter::FilterKind {
        use crate::row_filter::FilterKind;
        match self {
            Self::Int | Self::Double | Self::Numeric => FilterKind::Number,
            Self::Text => FilterKind::Text,
            Self::Timestamp | Self::LocalTimestamp => FilterKind::Timestamp,
            Self::Date => FilterKind::Date,
            Self::Bytes | Self::Json => FilterKind::Opaque,
            Self::Other => FilterKind::Other,
        }
    }
}

/// `numeric(10,2)` → `numeric`, `timestamp(3) with time zone` → `timestamp with time zone`.
fn without_typmod(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Converts one column's to_jsonb value, so a changefeed can hand subscribers typed values.
/// JSON null is Null for every type; a value of unexpected shape falls back to
/// [`by_shape`] (or Text, for a string that does not parse as the type says).
pub(crate) fn convert(ty: &ColumnType, json: Json) -> Value {
    match (ty, json) {
        (_, Json::Null) => Value::Null,
        (ColumnType::Int, Json::Number(n)) => {
            let text = n.to_string();
            match text.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Numeric(text),
            }
        }
        (ColumnType::Double, Json::Number(n)) => {
            let text = n.to_string();
            match text.parse::<f64>() {
                Ok(d) => Value::Double(d),
                Err(_) => Value::Numeric(text),
            }
        }
        (ColumnType::Double, Json::String(s)) => match s.as_str() {
            "NaN" => Value::Double(f64::NAN),
            "Infinity" => Value::Double(f64::INFINITY),
            "-Infinity" => Value::Double(f64::NEG_INFINITY),
            _ => Value::Text(s),
        },
        (ColumnType::Numeric, Json::Number(n)) => Value::Numeric(n.to_string()),
        (ColumnType::Numeric, Json::String(s))
            if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") =>
        {
            Value::Numeric(s)
        }
        (ColumnType::Bytes, Json::String(s)) => {
            match s.strip_prefix("\\x").and_then(|h| hex::decode(h).ok()) {
                Some(bytes) => Value::Bytes(bytes.into()),
                None => Value::Text(s),
            }
        }
        (ColumnType::Timestamp, Json::String(s)) => match timestamp(&s, true) {
            Some(micros) => Value::Timestamp(micros),
            None => Value::Text(s),
        },
        (ColumnType::LocalTimestamp, Json::String(s)) => match timestamp(&s, false) {
            Some(micros) => Value::LocalTimestamp(micros),
            None => Value::Text(s),
        },
        (ColumnType::Date, Json::String(s)) => match date(&s) {
            Some(days) => Value::Date(days),
            None => Value::Text(s),
        },
        (ColumnType::Json, json) => Value::Json(json.to_string()),
        (_, json) => by_shape(json),
    }
}

/// The value by JSON shape alone: for `Other` columns, columns of unknown type, and values whose
/// shape does not match their column type.
fn by_shape(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => Value::Numeric(n.to_string()),
        Json::String(s) => Value::Text(s),
        json @ (Json::Array(_) | Json::Object(_)) => Value::Json(json.to_string()),
    }
}

/// Converts a whole `to_jsonb(row)` object into a [`Row`] sorted by column name, which is what
/// row changes carry. Columns missing from `types` (added after the types were cached) are
/// taken by their JSON shape. Anything but an object (to_jsonb of a NULL row is `null`) gives
/// an empty row.
pub(crate) fn convert_row(types: &HashMap<String, ColumnType>, json: Json) -> Row {
    let Json::Object(columns) = json else {
        return Vec::new();
    };
    let mut row: Row = columns
        .into_iter()
        .map(|(name, value)| {
            let value = match types.get(&name) {
                Some(ty) => convert(ty, value),
                None => by_shape(value),
            };
            (name, value)
        })
        .collect();
    row.sort_by(|a, b| a.0.cmp(&b.0));
    row
}

#[cfg(test)]
mod tests;
