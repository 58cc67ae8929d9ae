//! The JSON `to_jsonb` gives for a column value that logical decoding (`pgoutput`, text mode)
//! delivered as its text form, so the capture leader can write log rows equal to the trigger's
//! (docs/changefeeds.md, "Capture from the write-ahead log: design", "Values"). The text forms
//! are those of a session with `DateStyle=ISO`, `IntervalStyle=postgres`, `TimeZone=UTC`,
//! `extra_float_digits=3` and `bytea_output=hex`, which the replication session pins.
//!
//! [`TypeCatalog::load`] reads what conversion needs about the columns' types from `pg_type`,
//! `pg_attribute` and `pg_cast`; [`TypeCatalog::to_json`] is pure. Nothing here knows about
//! replication, tables or the log.
//!
//! The rules, as `to_jsonb` in PostgreSQL 15 applies them (checked against the server by this
//! module's tests): a domain is its base type. smallint, integer, bigint, real, double precision
//! and numeric are JSON numbers read the way `numeric_in` reads them (`1e+300` is 1 and 300
//! zeros, `-0` is `0`), or strings when their text is not a JSON number (`NaN`, `Infinity`).
//! boolean is `true`/`false`. json and jsonb are embedded (duplicate keys: the last wins; numbers
//! as numeric reads them). timestamp and timestamptz are ISO 8601 with a `T` and, for
//! timestamptz, an offset with minutes (`+00:00`); `infinity` and ` BC` stay as they are.
//! Arrays (including `int2vector` and `oidvector`, whose text is space-separated) are JSON arrays
//! of their elements, nested per dimension, lower bounds dropped. Composites are objects keyed
//! by attribute name, dropped attributes absent. Everything else, date, time, timetz, interval,
//! oid, xid, money, enums, ranges and geometric types included, is its text as a string. A
//! user-defined type with a cast to json is converted by that cast, which only the server can
//! run: such values are refused ([`ValueError::JsonCast`]).

mod number;
mod text_form;

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use sqlx::PgConnection;

use text_form::{array_items, record_fields, ArrayItem};

/// Why a text form could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    /// The type was not loaded into the catalog.
    #[error("type {0} is not in the type catalog")]
    UnknownType(u32),
    /// to_jsonb would call the type's cast to json, which only the server can run.
    #[error("type {0} converts through its cast to json")]
    JsonCast(u32),
    /// The text is not what PostgreSQL writes for a value of the type.
    #[error("malformed {kind} text: {text:?}")]
    Malformed {
        /// What the text was read as: `array`, `composite`, `boolean`, ...
        kind: &'static str,
        /// The text, cut to its first 100 characters.
        text: String,
    },
    /// A number numeric cannot hold (to_jsonb fails on it too).
    #[error("number out of numeric's range")]
    NumberOutOfRange,
    /// A composite's text has another number of fields than its type has attributes.
    #[error("composite text has {got} fields, its type {want}")]
    FieldCount {
        /// Fields in the text.
        got: usize,
        /// Attributes of the type.
        want: usize,
    },
    /// Domains, arrays and composites nested deeper than any real type.
    #[error("types nest deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl ValueError {
    fn malformed(kind: &'static str, text: &str) -> Self {
        Self::Malformed {
            kind,
            text: text.chars().take(100).collect(),
        }
    }
}

/// Nesting of domains, arrays and composites beyond which conversion gives up (a guard
/// against a catalog that loops; real types nest a few levels).
const MAX_DEPTH: usize = 32;

/// What conversion needs to know about a type; loaded from pg_type/pg_attribute/pg_cast.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeCatalog {
    /// Every loaded type by oid, with what its values become.
    types: HashMap<u32, Kind>,
}

/// How a type's values convert: to_jsonb's categories (`jsonb_categorize_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Bool,
    /// The integer, float and numeric types.
    Number,
    Json,
    Timestamp,
    TimestampTz,
    /// A true array (`typsubscript = array_subscript_handler`) of `element`, whose text
    /// separates elements with `delimiter` (`typdelim` of the element type).
    Array {
        element: u32,
        delimiter: char,
    },
    /// int2vector and oidvector: arrays whose text is their elements separated by spaces.
    Vector {
        element: u32,
    },
    /// A composite's live attributes in order: name and type.
    Composite {
        fields: Vec<(String, u32)>,
    },
    Domain {
        base: u32,
    },
    /// A user-defined type with a function cast to json.
    JsonCast,
    /// Anything else: the text itself.
    Text,
}

/// One type's catalog row, as [`LOAD`] returns it.
#[derive(sqlx::FromRow)]
struct TypeRow {
    oid: i64,
    typtype: String,
    base: i64,
    element: i64,
    delimiter: String,
    json_cast: bool,
    names: Vec<String>,
    field_types: Vec<i64>,
}

/// The types asked for and, transitively, their domains' base types, arrays' element types and
/// composites' attribute types, with what conversion needs of each. Needs PostgreSQL 14
/// (`typsubscript`).
const LOAD: &str = r#"
WITH RECURSIVE need(oid) AS (
    SELECT DISTINCT unnest($1::oid[])
  UNION
    SELECT dep.oid
    FROM need JOIN pg_type t ON t.oid = need.oid
    CROSS JOIN LATERAL (
        SELECT t.typbasetype WHERE t.typtype = 'd'
        UNION ALL
        SELECT t.typelem WHERE t.typelem <> 0
            AND t.typsubscript = 'array_subscript_handler'::regproc
        UNION ALL
        SELECT a.atttypid FROM pg_attribute a
        WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS dep(oid)
)
SELECT t.oid::int8 AS oid,
       t.typtype::text AS typtype,
       t.typbasetype::int8 AS base,
       CASE WHEN t.typelem <> 0 AND t.typsubscript = 'array_subscript_handler'::regproc
            THEN t.typelem ELSE 0 END::int8 AS element,
       coalesce(e.typdelim, ',')::text AS delimiter,
       (t.oid >= 16384 AND EXISTS (
            SELECT 1 FROM pg_cast c
            WHERE c.castsource = t.oid AND c.casttarget = 'json'::regtype AND c.castmethod = 'f'
       )) AS json_cast,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum)
                FILTER (WHERE a.attnum IS NOT NULL), '{}') AS names,
       coalesce(array_agg(a.atttypid::int8 ORDER BY a.attnum)
                FILTER (WHERE a.attnum IS NOT NULL), '{}') AS field_types
FROM (SELECT DISTINCT oid FROM need) n
JOIN pg_type t ON t.oid = n.oid
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_attribute a
       ON t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
GROUP BY t.oid, e.typdelim
"#;

impl TypeCatalog {
    /// Loads the types with these oids and, transitively, what they need (array element types,
    /// composites' attribute types, domains' base types), in one query. Oids that name no type
    /// are left out (`to_json` answers `UnknownType` for them).
    ///
    /// Cancel safe: it only reads.
    pub(crate) async fn load(conn: &mut PgConnection, oids: &[u32]) -> Result<Self, sqlx::Error> {
        let oids: Vec<i64> = oids.iter().map(|&oid| i64::from(oid)).collect();
        let rows: Vec<TypeRow> = sqlx::query_as(LOAD).bind(&oids).fetch_all(conn).await?;
        let types = rows
            .into_iter()
            .filter_map(|row| Some((u32::try_from(row.oid).ok()?, Kind::of(row))))
            .collect();
        Ok(TypeCatalog { types })
    }

    /// Whether `oid` was loaded (the oracle test checks that every column's type was).
    #[cfg(test)]
    pub(crate) fn knows(&self, oid: u32) -> bool {
        self.types.contains_key(&oid)
    }

    /// The JSON that to_jsonb gives for a value of type `oid` whose text form is `text`.
    pub(crate) fn to_json(&self, oid: u32, text: &str) -> Result<Json, ValueError> {
        self.convert(oid, text, 0)
    }

    fn convert(&self, oid: u32, text: &str, depth: usize) -> Result<Json, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::TooDeep);
        }
        let kind = self.types.get(&oid).ok_or(ValueError::UnknownType(oid))?;
        match kind {
            Kind::Bool => match text {
                "t" => Ok(Json::Bool(true)),
                "f" => Ok(Json::Bool(false)),
                _ => Err(ValueError::malformed("boolean", text)),
            },
            Kind::Number => number(text),
            Kind::Json => json(text),
            Kind::Timestamp => timestamp(text, false).map(Json::String),
            Kind::TimestampTz => timestamp(text, true).map(Json::String),
            Kind::Text => Ok(Json::String(text.to_owned())),
            Kind::JsonCast => Err(ValueError::JsonCast(oid)),
            Kind::Domain { base } => self.convert(*base, text, depth + 1),
            Kind::Array { element, delimiter } => {
                let items = array_items(text, *delimiter)?;
                self.array(*element, items, depth + 1)
            }
            Kind::Vector { element } => text
                .split_ascii_whitespace()
                .map(|item| self.convert(*element, item, depth + 1))
                .collect::<Result<_, _>>()
                .map(Json::Array),
            Kind::Composite { fields } => self.composite(fields, text, depth + 1),
        }
    }

    fn array(&self, element: u32, items: Vec<ArrayItem>, depth: usize) -> Result<Json, ValueError> {
        items
            .into_iter()
            .map(|item| match item {
                ArrayItem::Null => Ok(Json::Null),
                ArrayItem::Text(text) => self.convert(element, &text, depth),
                ArrayItem::Nested(items) => self.array(element, items, depth),
            })
            .collect::<Result<_, _>>()
            .map(Json::Array)
    }

    fn composite(
        &self,
        fields: &[(String, u32)],
        text: &str,
        depth: usize,
    ) -> Result<Json, ValueError> {
        let mut values = record_fields(text)?;
        // `()` is how both a composite without attributes and one whose single field is NULL
        // are written.
        if fields.is_empty() && values == [None] {
            values.clear();
        }
        if values.len() != fields.len() {
            return Err(ValueError::FieldCount {
                got: values.len(),
                want: fields.len(),
            });
        }
        let mut object = Map::new();
        for ((name, oid), value) in fields.iter().zip(values) {
            let value = match value {
                None => Json::Null,
                Some(text) => self.convert(*oid, &text, depth)?,
            };
            object.insert(name.clone(), value);
        }
        Ok(Json::Object(object))
    }
}

impl Kind {
    fn of(row: TypeRow) -> Kind {
        const BOOL: i64 = 16;
        const INT2VECTOR: i64 = 22;
        const OIDVECTOR: i64 = 30;
        let oid_of = |oid: i64| u32::try_from(oid).unwrap_or(0);
        match (row.oid, row.typtype.as_str()) {
            (BOOL, _) => Kind::Bool,
            // int8, int2, int4, float4, float8, numeric
            (20 | 21 | 23 | 700 | 701 | 1700, _) => Kind::Number,
            // json, jsonb
            (114 | 3802, _) => Kind::Json,
            (1114, _) => Kind::Timestamp,
            (1184, _) => Kind::TimestampTz,
            (INT2VECTOR | OIDVECTOR, _) => Kind::Vector {
                element: oid_of(row.element),
            },
            (_, "d") => Kind::Domain {
                base: oid_of(row.base),
            },
            _ if row.element != 0 => Kind::Array {
                element: oid_of(row.element),
                delimiter: row.delimiter.chars().next().unwrap_or(','),
            },
            (_, "c") => Kind::Composite {
                fields: row
                    .names
                    .into_iter()
                    .zip(row.field_types.into_iter().map(oid_of))
                    .collect(),
            },
            _ if row.json_cast => Kind::JsonCast,
            _ => Kind::Text,
        }
    }
}

/// A number type's text: a JSON number as jsonb stores it, or a string (`NaN`, `Infinity`).
fn number(text: &str) -> Result<Json, ValueError> {
    match number::canonical(text)? {
        Some(digits) => json_number(&digits, text),
        None => Ok(Json::String(text.to_owned())),
    }
}

/// `digits` (a canonical JSON number) as a serde_json number, digits kept
/// (`arbitrary_precision`).
fn json_number(digits: &str, text: &str) -> Result<Json, ValueError> {
    serde_json::from_str::<serde_json::Number>(digits)
        .map(Json::Number)
        .map_err(|_| ValueError::malformed("number", text))
}

/// json or jsonb text, parsed (the last of duplicate keys wins, as in jsonb) with its numbers
/// as jsonb keeps them.
fn json(text: &str) -> Result<Json, ValueError> {
    let value: Json =
        serde_json::from_str(text).map_err(|_| ValueError::malformed("json", text))?;
    as_jsonb(value)
}

fn as_jsonb(value: Json) -> Result<Json, ValueError> {
    Ok(match value {
        Json::Number(n) => {
            let text = n.to_string();
            match number::canonical(&text)? {
                Some(digits) => json_number(&digits, &text)?,
                None => return Err(ValueError::malformed("json number", &text)),
            }
        }
        Json::Array(items) => {
            Json::Array(items.into_iter().map(as_jsonb).collect::<Result<_, _>>()?)
        }
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, as_jsonb(v)?)))
                .collect::<Result<_, ValueError>>()?,
        ),
        other => other,
    })
}

/// `2024-05-01 16:04:56.5+00` → `2024-05-01T16:04:56.5+00:00`: a `T` between date and time,
/// the offset's minutes always written; ` BC` and `infinity` kept.
fn timestamp(text: &str, with_zone: bool) -> Result<String, ValueError> {
    let malformed = || ValueError::malformed("timestamp", text);
    if text == "infinity" || text == "-infinity" {
        return Ok(text.to_owned());
    }
    let (date, rest) = text.split_once(' ').ok_or_else(malformed)?;
    let (time, era) = match rest.strip_suffix(" BC") {
        Some(time) => (time, " BC"),
        None => (rest, ""),
    };
    let (clock, zone) = if with_zone {
        let at = time.find(['+', '-']).ok_or_else(malformed)?;
        time.split_at(at)
    } else {
        (time, "")
    };
    let digits_and = |s: &str, extra: &[u8]| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || extra.contains(&b))
    };
    let zone_ok = zone.is_empty() || digits_and(&zone[1..], b":");
    if !digits_and(date, b"-") || !digits_and(clock, b":.") || !zone_ok {
        return Err(malformed());
    }
    let minutes = if zone.len() == 3 { ":00" } else { "" };
    Ok(format!("{date}T{clock}{zone}{minutes}{era}"))
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
