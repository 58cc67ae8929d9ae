//! A small evaluator of the SQL that `RowFilter::sql_prefilter` writes, with SQL's three-valued
//! logic, so that the row_filter target can check the prefilter's promise: it holds for every
//! row `matches` accepts.
//!
//! It reads only the forms the prefilter's documentation lists (`TRUE`; `(a AND b ...)`,
//! `(a OR b ...)`; `r."col" op $n::int8`; `r."col" = $n::text`; `r."col" = ANY($n::int8[])` and
//! `::text[]`; `r."col" IS [NOT] NULL`) and panics on anything else, on a parameter of the wrong
//! kind, or on one that is not used exactly once. Rows are taken as PostgreSQL would hold them
//! for the column kinds the prefilter was told about: integers as `Value::Int`, text as
//! `Value::Text`, either possibly `Value::Null`. Text equality is byte equality (PostgreSQL's
//! deterministic collations).

use feedgate::protocol::{Row, Value};
use feedgate::row_filter::SqlParam;

/// The value (`None` is SQL NULL) of `sql` with `params` on `row`.
pub fn eval(sql: &str, params: &[SqlParam], row: &Row) -> Option<bool> {
    let mut reader = Reader {
        rest: sql,
        params,
        used: vec![false; params.len()],
        row,
    };
    let value = reader.expr();
    assert!(
        reader.rest.is_empty(),
        "trailing SQL {:?} in {sql:?}",
        reader.rest
    );
    assert!(
        reader.used.iter().all(|&u| u),
        "a parameter not used in {sql:?}: {params:?}"
    );
    value
}

/// `sql` without its quoted identifiers holds no string literal (values are parameters).
pub fn has_literal(sql: &str) -> bool {
    let mut outside = String::new();
    let mut quoted = false;
    for c in sql.chars() {
        if c == '"' {
            quoted = !quoted; // a doubled quote toggles twice
        } else if !quoted {
            outside.push(c);
        }
    }
    outside.contains('\'')
}

struct Reader<'a> {
    rest: &'a str,
    params: &'a [SqlParam],
    used: Vec<bool>,
    row: &'a Row,
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

impl Reader<'_> {
    fn eat(&mut self, token: &str) -> bool {
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("expected {what} in the prefilter at {:?}", self.rest)
    }

    fn expr(&mut self) -> Option<bool> {
        if self.eat("TRUE") {
            return Some(true);
        }
        if self.eat("(") {
            let mut value = self.expr();
            let mut connective = None;
            while !self.eat(")") {
                let word = if self.eat(" AND ") {
                    " AND "
                } else if self.eat(" OR ") {
                    " OR "
                } else {
                    self.fail("AND, OR or )")
                };
                assert!(
                    connective.is_none_or(|c| c == word),
                    "AND and OR mixed in one group"
                );
                connective = Some(word);
                let next = self.expr();
                value = if word == " AND " {
                    and(value, next)
                } else {
                    or(value, next)
                };
            }
            return value;
        }
        let column = self.column();
        let value = self
            .row
            .iter()
            .find(|(name, _)| *name == column)
            .map_or(&Value::Null, |(_, v)| v)
            .clone();
        if self.eat(" IS NOT NULL") {
            return Some(value != Value::Null);
        }
        if self.eat(" IS NULL") {
            return Some(value == Value::Null);
        }
        if self.eat(" = ANY(") {
            let found = match self.param() {
                SqlParam::Ints(items) if self.eat("::int8[])") => {
                    if items.is_empty() {
                        return Some(false);
                    }
                    match &value {
                        Value::Int(i) => items.contains(i),
                        Value::Null => return None,
                        other => panic!("an int8[] compared with {other:?}"),
                    }
                }
                SqlParam::Texts(items) if self.eat("::text[])") => {
                    if items.is_empty() {
                        return Some(false);
                    }
                    match &value {
                        Value::Text(t) => items.contains(t),
                        Value::Null => return None,
                        other => panic!("a text[] compared with {other:?}"),
                    }
                }
                param => panic!("{param:?} with the cast at {:?}", self.rest),
            };
            return Some(found);
        }
        let op = [" <> ", " <= ", " >= ", " = ", " < ", " > "]
            .into_iter()
            .find(|op| self.eat(op))
            .unwrap_or_else(|| self.fail("an operator"));
        let ordering = match self.param() {
            SqlParam::Int(n) if self.eat("::int8") => match value {
                Value::Int(i) => i.cmp(&n),
                Value::Null => return None,
                other => panic!("an int8 compared with {other:?}"),
            },
            SqlParam::Text(t) if op == " = " && self.eat("::text") => match &value {
                Value::Text(v) => v.as_bytes().cmp(t.as_bytes()),
                Value::Null => return None,
                other => panic!("a text compared with {other:?}"),
            },
            param => panic!("{param:?} after {op:?} at {:?}", self.rest),
        };
        use std::cmp::Ordering::*;
        Some(match op {
            " = " => ordering == Equal,
            " <> " => ordering != Equal,
            " < " => ordering == Less,
            " <= " => ordering != Greater,
            " > " => ordering == Greater,
            _ => ordering != Less,
        })
    }

    /// `r."name"` with doubled quotes inside.
    fn column(&mut self) -> String {
        if !self.eat("r.\"") {
            self.fail("r.\"column\"");
        }
        let mut name = String::new();
        loop {
            let Some(at) = self.rest.find('"') else {
                self.fail("a closing quote")
            };
            name.push_str(&self.rest[..at]);
            self.rest = &self.rest[at + 1..];
            if !self.eat("\"") {
                return name;
            }
            name.push('"');
        }
    }

    /// `$n`, 1-based; each used once.
    fn param(&mut self) -> SqlParam {
        if !self.eat("$") {
            self.fail("$n");
        }
        let digits = self.rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = self.rest[..digits].parse().unwrap_or(0);
        self.rest = &self.rest[digits..];
        assert!(
            (1..=self.params.len()).contains(&n),
            "${n} of {}",
            self.params.len()
        );
        assert!(!self.used[n - 1], "${n} used twice");
        self.used[n - 1] = true;
        self.params[n - 1].clone()
    }
}
