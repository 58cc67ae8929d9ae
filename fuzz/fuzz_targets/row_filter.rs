//! The row-filter language (src/row_filter/) on any text: `FilterTemplate::parse` never
//! panics, and a filter that parses is filled with arbitrary claims and evaluated on arbitrary
//! rows without panicking. What its documentation promises is checked too:
//!
//! - a parse error points inside the text (`at byte N`, N <= its length); `Display` of a template
//!   gives back the text it was parsed from;
//! - the grammar composes: `(A)` means A, `(A) and (B)` means A and B, `(A) or (B)` means A or B
//!   (when the extra parentheses nest too deeply, the error says so);
//! - a column the row lacks reads as NULL, columns the filter does not read do not matter, and
//!   rows are looked up by name, so their order does not matter either;
//! - `RowFilter::any` of filters is their union;
//! - the SQL prefilter (`RowFilter::sql_prefilter`) writes no value into the SQL, and holds for
//!   every row `matches` accepts, evaluated with SQL's NULL logic on rows typed as the columns
//!   it was told about (`feedgate_fuzz::sql`).
//!
//! Input: the filter text up to the first NUL byte (so a dictionary of the language's words
//! works on it), then the bytes that choose a second filter, the claims and the rows.

#![no_main]

use arbitrary::{Result, Unstructured};
use std::collections::BTreeMap;

use feedgate::auth::Principal;
use feedgate::protocol::{Row, Value};
use feedgate::row_filter::{FilterTemplate, RowFilter, SqlColumn};
use feedgate_fuzz::sql;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value as Json};

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let text = match std::str::from_utf8(text) {
        Ok(text) => text,
        Err(err) => std::str::from_utf8(&text[..err.valid_up_to()]).expect("valid prefix"),
    };
    let mut u = Unstructured::new(rest);
    let _ = run(text, &mut u);
});

/// The claim names and columns most inputs use, so that filters find what they read.
const NAMES: &[&str] = &["tenant_id", "t", "x", "a", "org.id", "projects", "owner"];

fn run(text: &str, u: &mut Unstructured<'_>) -> Result<()> {
    let Some(template) = parse(text) else {
        return Ok(());
    };
    assert_eq!(template.to_string(), text, "Display gives back the text");
    let principal = principal(u)?;
    let Ok(filter) = template.fill(&principal) else {
        return Ok(());
    };
    let columns: Vec<String> = filter.columns().iter().map(|c| c.to_string()).collect();
    assert!(!columns.is_empty(), "every predicate reads a column");
    let row = row(u, &columns)?;
    let verdict = filter.matches(&row);
    check_rows(&filter, &row, &columns, verdict, u)?;
    prefilter(&filter, &columns, u)?;

    // (A) means A.
    let wrapped = format!("({text})");
    if let Some(same) = parse_or_too_deep(&wrapped) {
        let same = same.fill(&principal).expect("same placeholders as A");
        assert_eq!(same.matches(&row), verdict, "({text}) differs from {text}");
    }

    // A second filter, for and / or / any.
    let other_text = other_text(u, &columns)?;
    let Some(other) = parse(&other_text) else {
        return Ok(());
    };
    let Ok(other) = other.fill(&principal) else {
        return Ok(());
    };
    let other_verdict = other.matches(&row);
    for (word, expected) in [
        ("and", verdict && other_verdict),
        ("or", verdict || other_verdict),
    ] {
        let both = format!("({text}) {word} ({other_text})");
        if let Some(both) = parse_or_too_deep(&both) {
            let both = both.fill(&principal).expect("placeholders of A and B");
            assert_eq!(
                both.matches(&row),
                expected,
                "({text}) {word} ({other_text})"
            );
        }
    }
    let any = RowFilter::any(vec![filter.clone(), other]);
    assert_eq!(
        any.matches(&row),
        verdict || other_verdict,
        "any is the union"
    );
    let one = RowFilter::any(vec![filter]);
    assert_eq!(
        one.matches(&row),
        verdict,
        "any of one filter is that filter"
    );
    Ok(())
}

/// Parses, checking that an error points inside the text.
fn parse(text: &str) -> Option<FilterTemplate> {
    match FilterTemplate::parse(text) {
        Ok(template) => Some(template),
        Err(err) => {
            let message = err.to_string();
            let at: usize = message
                .strip_prefix("at byte ")
                .and_then(|m| m.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("error without an offset: {message}"));
            assert!(at <= text.len(), "offset {at} past the end: {message}");
            None
        }
    }
}

/// Parses a composition of texts that parsed on their own: it parses too, unless the extra
/// parentheses nest too deeply (and then the error says that).
fn parse_or_too_deep(text: &str) -> Option<FilterTemplate> {
    match FilterTemplate::parse(text) {
        Ok(template) => Some(template),
        Err(err) => {
            assert!(
                err.to_string().contains("nested too deeply"),
                "{text:?} does not parse: {err}"
            );
            None
        }
    }
}

/// The same verdict on the row in another order, with the filter's missing columns present as
/// NULL, and with a column the filter does not read.
fn check_rows(
    filter: &RowFilter,
    row: &Row,
    columns: &[String],
    verdict: bool,
    u: &mut Unstructured<'_>,
) -> Result<()> {
    let mut shuffled = row.clone();
    shuffled.reverse();
    if !shuffled.is_empty() {
        let at = u.choose_index(shuffled.len())?;
        shuffled.rotate_left(at);
    }
    assert_eq!(
        filter.matches(&shuffled),
        verdict,
        "row order changed the verdict"
    );

    let mut with_nulls = row.clone();
    for column in columns {
        if !with_nulls.iter().any(|(name, _)| name == column) {
            with_nulls.push((column.clone(), Value::Null));
        }
    }
    with_nulls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        filter.matches(&with_nulls),
        verdict,
        "a missing column is not NULL"
    );

    let unread = format!("unread_{}", columns.join("_"));
    let mut extra = row.clone();
    extra.push((unread, value(u)?));
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        filter.matches(&extra),
        verdict,
        "an unread column changed the verdict"
    );
    Ok(())
}

/// The prefilter keeps every row `matches` accepts, for column kinds chosen by the input.
fn prefilter(filter: &RowFilter, columns: &[String], u: &mut Unstructured<'_>) -> Result<()> {
    let mut kinds = BTreeMap::new();
    for column in columns {
        let kind = match u.int_in_range(0..=2)? {
            0 => Some(SqlColumn::Integer),
            1 => Some(SqlColumn::Text),
            _ => None,
        };
        kinds.insert(column.clone(), kind);
    }
    let (text, params) = filter.sql_prefilter(&|name| kinds.get(name).copied().flatten());
    assert!(
        !sql::has_literal(&text),
        "a value written into the SQL: {text}"
    );
    let mut accepted = 0;
    for _ in 0..4 {
        let row = typed_row(u, &kinds)?;
        let kept = sql::eval(&text, &params, &row);
        if filter.matches(&row) {
            assert_eq!(kept, Some(true), "{text} {params:?} drops {row:?}");
            accepted += 1;
        }
    }
    if feedgate_fuzz::tracing() {
        eprintln!("trace: prefilter {text:?} accepted {accepted}");
    }
    Ok(())
}

/// A row with every column, of the kind the prefilter was told (integer, text, or anything).
fn typed_row(u: &mut Unstructured<'_>, kinds: &BTreeMap<String, Option<SqlColumn>>) -> Result<Row> {
    let mut row: Row = Vec::new();
    for (name, kind) in kinds {
        let value = match kind {
            _ if u.ratio(1, 6)? => Value::Null,
            Some(SqlColumn::Integer) => Value::Int(if u.ratio(3, 4)? {
                u.int_in_range(-3..=3)?
            } else {
                u.arbitrary()?
            }),
            Some(SqlColumn::Text) => Value::Text(if u.ratio(3, 4)? {
                (*u.choose(&["x", "1", "alice", "42", "", "t1"])?).into()
            } else {
                u.arbitrary()?
            }),
            None => value(u)?,
        };
        row.push((name.clone(), value));
    }
    row.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(row)
}

/// A second filter's text: mostly a simple comparison on one of the first filter's columns.
fn other_text(u: &mut Unstructured<'_>, columns: &[String]) -> Result<String> {
    let column = u.choose(columns)?;
    let quoted = format!("\"{}\"", column.replace('"', "\"\""));
    Ok(match u.int_in_range(0..=4)? {
        0 => format!("{quoted} is null"),
        1 => format!("{quoted} in (1, 'x', {{claims.projects}})"),
        2 => format!("{quoted} >= {{t}}"),
        3 => format!("{quoted} != {}", u.int_in_range(-3i64..=3)?),
        _ => u.arbitrary()?,
    })
}

fn principal(u: &mut Unstructured<'_>) -> Result<Principal> {
    let mut claims = Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let name = if u.ratio(3, 4)? {
            (*u.choose(NAMES)?).to_owned()
        } else {
            u.arbitrary()?
        };
        if name == "org.id" && u.arbitrary()? {
            let mut org = Map::new();
            org.insert("id".into(), json(u, 0)?);
            claims.insert("org".into(), Json::Object(org));
        } else {
            claims.insert(name, json(u, 0)?);
        }
    }
    Ok(Principal {
        user: Some("fuzz".into()),
        tenant: None,
        roles: vec!["reader".into()],
        claims,
        expires_at: None,
    })
}

/// A JSON claim value; numbers are parsed from text so that exact (arbitrary precision) numbers
/// appear as tokens carry them.
fn json(u: &mut Unstructured<'_>, depth: u32) -> Result<Json> {
    Ok(match u.int_in_range(0..=7)? {
        0 => Json::Null,
        1 => Json::Bool(u.arbitrary()?),
        2 => Json::String(u.arbitrary()?),
        3 => Json::String(number_text(u)?),
        4 => serde_json::from_str(&number_text(u)?).unwrap_or(Json::Null),
        5 if depth < 2 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                items.push(json(u, depth + 1)?);
            }
            Json::Array(items)
        }
        6 if depth < 2 => {
            let mut map = Map::new();
            map.insert("id".into(), json(u, depth + 1)?);
            Json::Object(map)
        }
        _ => Json::from(u.int_in_range(-3i64..=3)?),
    })
}

fn number_text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0 => "9223372036854775807".into(),
        1 => "-9223372036854775808".into(),
        2 => "1e3".into(),
        3 => "10.50".into(),
        4 => "0.0".into(),
        5 => "NaN".into(),
        6 => u.arbitrary::<f64>()?.to_string(),
        7 => u.arbitrary::<i64>()?.to_string(),
        8 => u.arbitrary()?,
        _ => u.int_in_range(-3i64..=3)?.to_string(),
    })
}

fn value(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=12)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.int_in_range(-3..=3)?),
        3 => Value::Int(u.arbitrary()?),
        4 => Value::Double(u.arbitrary()?),
        5 => Value::Text(u.arbitrary()?),
        6 => Value::Text((*u.choose(&["x", "1", "true", "b", ""])?).into()),
        7 => Value::Bytes(bytes::Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?)),
        8 => Value::Numeric(number_text(u)?),
        9 => Value::Timestamp(u.arbitrary()?),
        10 => Value::LocalTimestamp(u.arbitrary()?),
        11 => Value::Date(u.arbitrary()?),
        _ => Value::Json(u.arbitrary()?),
    })
}

/// A row sorted by column name, with unique names: mostly the filter's own columns.
fn row(u: &mut Unstructured<'_>, columns: &[String]) -> Result<Row> {
    let mut row: Row = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let name = if u.ratio(4, 5)? {
            u.choose(columns)?.clone()
        } else {
            (*u.choose(NAMES)?).to_owned()
        };
        if !row.iter().any(|(n, _)| *n == name) {
            row.push((name, value(u)?));
        }
    }
    row.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(row)
}
