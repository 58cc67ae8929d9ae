//! Row-level rules: which rows of a table a principal may see, and which rows or topic messages
//! a client asked for. Pure: no I/O, and nothing of where the claims come from (`auth`
//! implements [`Claims`] for its principals).
//!
//! Clients' filters (`TableFeed.filter`, `TopicFeed.filter`) are the same tree, built from the
//! protocol's `Filter` message ([`RowFilter::from_client`], [`MessageFilter::from_client`]) and
//! evaluated by the same evaluator, whose operands read a row's columns or a message's parts.
//!
//! A permission rule may bind its tables to a predicate, written in the configuration file with
//! claim placeholders (`tenant_id = {claims.tenant_id}`). The predicate is parsed once at start-up
//! into a [`FilterTemplate`]; each subscription fills it from its principal's claims into a
//! [`RowFilter`], which the changefeed evaluates on every row it would deliver: snapshot rows,
//! and the old and the new row of every change, so one evaluator decides what a subscriber sees
//! and an update that moves a row out of (into) its visible set reaches it as a delete (insert).
//!
//! The language is a small, SQL-like subset:
//!
//! ```text
//! filter  := or
//! or      := and ("or" and)*
//! and     := term ("and" term)*
//! term    := "(" or ")" | column op value | column ["not"] "in" "(" value ("," value)* ")"
//!          | column ["not"] "in" placeholder | column "is" ["not"] "null"
//! op      := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! value   := 'text' | number | true | false | placeholder
//! placeholder := "{claims.NAME}" | "{NAME}"      (NAME may be a dotted path)
//! column  := identifier | "quoted identifier"
//! ```
//!
//! A row is visible when the predicate is true; a comparison with SQL NULL (or with a value of
//! another kind that does not convert) is not true, as in SQL. Values are compared by the
//! column's kind: integers and numerics as exact numbers (a claim `"42"` equals an integer column
//! holding 42), doubles as doubles (NaN equal to itself and above everything, as PostgreSQL
//! orders it), text by its bytes (`<`/`>` follow byte order, not a collation), booleans,
//! timestamps and dates from their ISO text. bytea and json columns compare unequal to
//! everything.

mod client;
mod eval;
mod message;
mod parse;
mod sql;

use std::fmt;

use serde_json::Value as Json;

use crate::protocol::Row;
pub use client::{FilterError, FilterKind};
pub use message::{Inspected, MessageFilter};
pub use sql::{SqlColumn, SqlParam};

/// Where a template's placeholders take their values: a principal's token claims, by name or by
/// a dotted path into nested objects (`realm_access.roles`).
pub trait Claims {
    /// The claim at `path`, if there is one.
    fn claim(&self, path: &str) -> Option<&Json>;
}

impl Claims for serde_json::Map<String, Json> {
    fn claim(&self, path: &str) -> Option<&Json> {
        if let Some(value) = self.get(path) {
            return Some(value);
        }
        let mut parts = path.split('.');
        let mut value = self.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }
}

/// A parsed predicate with its placeholders not yet filled.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTemplate {
    expr: Expr<Operand>,
    text: String,
}

/// A predicate filled for one principal: what its subscriptions to a table may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowFilter {
    expr: Expr<Scalar>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Expr<V> {
    And(Vec<Expr<V>>),
    Or(Vec<Expr<V>>),
    Compare {
        column: String,
        op: Op,
        value: V,
    },
    In {
        column: String,
        values: Vec<V>,
        negated: bool,
    },
    IsNull {
        column: String,
        negated: bool,
    },
    /// The item does not match (two-valued: true where the item is not true, NULLs included).
    /// Only clients' filters have it.
    Not(Box<Expr<V>>),
    /// The column's text starts with these bytes. Only clients' filters have it.
    Prefix {
        column: String,
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A value as written in the template.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Scalar),
    /// A claim path (`tenant_id`, `org.id`).
    Claim(String),
}

/// A filled value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scalar {
    Bool(bool),
    /// A number as written (exact digits).
    Number(Lit),
    Text(Lit),
    /// Microseconds since 1970-01-01 (a client's timestamp value), UTC for timestamptz columns,
    /// wall-clock for timestamp columns.
    Micros(i64),
    /// Days since 1970-01-01 (a client's date value).
    Days(i32),
}

/// A number or text as written, with the integer it reads as (trimmed), when it reads as one:
/// parsed once, not at every comparison with an integer column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Lit {
    text: String,
    int: Option<i64>,
}

impl Lit {
    fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let int = text.trim().parse().ok();
        Self { text, int }
    }
}

impl std::ops::Deref for Lit {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a predicate does not parse, with the byte offset it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {reason}")]
pub struct ParseError {
    at: usize,
    reason: String,
}

/// Why a template could not be filled for a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilled {
    /// The claim that is missing or of a kind that cannot be compared.
    pub claim: String,
}

impl FilterTemplate {
    /// Parses a predicate from the configuration.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let tokens = parse::tokenize(text)?;
        let mut parser = parse::Parser {
            tokens,
            at: 0,
            end: text.len(),
        };
        let expr = parser.or()?;
        if let Some((offset, token)) = parser.tokens.get(parser.at) {
            return Err(ParseError {
                at: *offset,
                reason: format!("unexpected {token} (expected and, or, or the end)"),
            });
        }
        Ok(Self {
            expr,
            text: text.to_owned(),
        })
    }

    /// Fills the placeholders from `principal`'s claims. A claim that is missing, null, an
    /// object, or an array where one value is expected leaves the template unfilled: the rule
    /// it belongs to then grants nothing.
    pub fn fill(&self, principal: &impl Claims) -> Result<RowFilter, Unfilled> {
        Ok(RowFilter {
            expr: fill(&self.expr, principal)?,
        })
    }
}

impl fmt::Display for FilterTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl RowFilter {
    /// Visible when any of `filters` is (the union of what several rules grant).
    pub fn any(mut filters: Vec<RowFilter>) -> Self {
        if filters.len() == 1 {
            return filters.remove(0);
        }
        Self {
            expr: Expr::Or(filters.into_iter().map(|f| f.expr).collect()),
        }
    }

    /// Visible when every one of `filters` is (a client's filter within what its permissions
    /// grant).
    pub fn all(mut filters: Vec<RowFilter>) -> Self {
        if filters.len() == 1 {
            return filters.remove(0);
        }
        Self {
            expr: Expr::And(filters.into_iter().map(|f| f.expr).collect()),
        }
    }

    /// Whether `row` (sorted by column name, as row changes carry it) is visible.
    pub fn matches(&self, row: &Row) -> bool {
        eval::eval(&self.expr, row)
    }

    /// A column the predicate requires to equal one of a few values (a top-level `=` or `in`
    /// whose values compare exactly: integers and text), with those values in every form a
    /// row's value can take to equal them; the one with the fewest values when there are
    /// several. `None`: no such column (the predicate must be asked of every row).
    pub fn required(&self) -> Option<(&str, Vec<Required>)> {
        let mut best: Option<(&str, Vec<Required>)> = None;
        for (column, values) in conjuncts(&self.expr).filter_map(required_by) {
            if best.as_ref().is_none_or(|(_, b)| values.len() < b.len()) {
                best = Some((column, values));
            }
        }
        best
    }

    /// The columns the predicate reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        collect_columns(&self.expr, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A value a row's column may hold to equal what a filter requires (see [`RowFilter::required`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// An integer column's value.
    Int(i64),
    /// A text column's value.
    Text(String),
}

/// The items of `expr`'s top-level `and`s (`expr` itself when it is not one).
fn conjuncts<V>(expr: &Expr<V>) -> Box<dyn Iterator<Item = &Expr<V>> + '_> {
    match expr {
        Expr::And(items) => Box::new(items.iter().flat_map(conjuncts)),
        Expr::Or(items) if items.len() == 1 => conjuncts(&items[0]),
        other => Box::new(std::iter::once(other)),
    }
}

/// The column and values an `=` or `in` requires, when each value compares exactly.
fn required_by(expr: &Expr<Scalar>) -> Option<(&str, Vec<Required>)> {
    let (column, values) = match expr {
        Expr::Compare {
            column,
            op: Op::Eq,
            value,
        } => (column, std::slice::from_ref(value)),
        Expr::In {
            column,
            values,
            negated: false,
        } => (column, values.as_slice()),
        _ => return None,
    };
    let mut out = Vec::with_capacity(values.len() * 2);
    for value in values {
        out.extend(eval::equal_forms(value)?);
    }
    Some((column, out))
}

fn fill(expr: &Expr<Operand>, principal: &impl Claims) -> Result<Expr<Scalar>, Unfilled> {
    Ok(match expr {
        Expr::And(items) => Expr::And(
            items
                .iter()
                .map(|e| fill(e, principal))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(items) => Expr::Or(
            items
                .iter()
                .map(|e| fill(e, principal))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Compare { column, op, value } => Expr::Compare {
            column: column.clone(),
            op: *op,
            value: match value {
                Operand::Literal(scalar) => scalar.clone(),
                Operand::Claim(path) => scalar_claim(principal, path)?,
            },
        },
        Expr::In {
            column,
            values,
            negated,
        } => {
            let mut filled = Vec::with_capacity(values.len());
            for value in values {
                match value {
                    Operand::Literal(scalar) => filled.push(scalar.clone()),
                    Operand::Claim(path) => match principal.claim(path) {
                        Some(Json::Array(items)) => {
                            for item in items {
                                filled.push(scalar(item).ok_or_else(|| unfilled(path))?);
                            }
                        }
                        _ => filled.push(scalar_claim(principal, path)?),
                    },
                }
            }
            Expr::In {
                column: column.clone(),
                values: filled,
                negated: *negated,
            }
        }
        Expr::IsNull { column, negated } => Expr::IsNull {
            column: column.clone(),
            negated: *negated,
        },
        Expr::Not(item) => Expr::Not(Box::new(fill(item, principal)?)),
        Expr::Prefix { column, prefix } => Expr::Prefix {
            column: column.clone(),
            prefix: prefix.clone(),
        },
    })
}

fn unfilled(path: &str) -> Unfilled {
    Unfilled {
        claim: path.to_owned(),
    }
}

fn scalar_claim(principal: &impl Claims, path: &str) -> Result<Scalar, Unfilled> {
    principal
        .claim(path)
        .and_then(scalar)
        .ok_or_else(|| unfilled(path))
}

fn scalar(json: &Json) -> Option<Scalar> {
    match json {
        Json::Bool(b) => Some(Scalar::Bool(*b)),
        Json::Number(n) => Some(Scalar::Number(Lit::new(n.to_string()))),
        Json::String(s) => Some(Scalar::Text(Lit::new(s.as_str()))),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

fn collect_columns<'a, V>(expr: &'a Expr<V>, out: &mut Vec<&'a str>) {
    match expr {
        Expr::And(items) | Expr::Or(items) => {
            for item in items {
                collect_columns(item, out);
            }
        }
        Expr::Not(item) => collect_columns(item, out),
        Expr::Compare { column, .. }
        | Expr::In { column, .. }
        | Expr::IsNull { column, .. }
        | Expr::Prefix { column, .. } => out.push(column),
    }
}

#[cfg(test)]
mod tests;
