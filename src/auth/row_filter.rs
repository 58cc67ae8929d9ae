//! Row-level rules: which rows of a table a principal may see. Pure: no I/O.
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

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value as Json;

use super::Principal;
use crate::changefeed::values::{date, timestamp};
use crate::protocol::{Row, Value};

/// A parsed predicate with its placeholders not yet filled.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTemplate {
    expr: Expr<Operand>,
    text: String,
}

/// A predicate filled for one principal: what its subscriptions to a table may see.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    expr: Expr<Scalar>,
}

#[derive(Debug, Clone, PartialEq)]
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Bool(bool),
    /// A number as written (exact digits).
    Number(String),
    Text(String),
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
        let tokens = tokenize(text)?;
        let mut parser = Parser {
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
    pub fn fill(&self, principal: &Principal) -> Result<RowFilter, Unfilled> {
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

    /// Whether `row` (sorted by column name, as row changes carry it) is visible.
    pub fn matches(&self, row: &Row) -> bool {
        eval(&self.expr, row)
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

fn fill(expr: &Expr<Operand>, principal: &Principal) -> Result<Expr<Scalar>, Unfilled> {
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
    })
}

fn unfilled(path: &str) -> Unfilled {
    Unfilled {
        claim: path.to_owned(),
    }
}

fn scalar_claim(principal: &Principal, path: &str) -> Result<Scalar, Unfilled> {
    principal
        .claim(path)
        .and_then(scalar)
        .ok_or_else(|| unfilled(path))
}

fn scalar(json: &Json) -> Option<Scalar> {
    match json {
        Json::Bool(b) => Some(Scalar::Bool(*b)),
        Json::Number(n) => Some(Scalar::Number(n.to_string())),
        Json::String(s) => Some(Scalar::Text(s.clone())),
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
        Expr::Compare { column, .. } | Expr::In { column, .. } | Expr::IsNull { column, .. } => {
            out.push(column)
        }
    }
}

// --- SQL prefilter ----------------------------------------------------------------------------

/// A column kind a prefilter can compare in SQL with the same result as [`RowFilter::matches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlColumn {
    /// smallint, integer, bigint: compared with bigint parameters.
    Integer,
    /// text, varchar: equality with text parameters (byte equality, as `matches` compares).
    Text,
}

/// A parameter of a prefilter's SQL, bound in order as `$1`, `$2`, ...
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// A bigint.
    Int(i64),
    /// A bigint[] (for `= ANY`).
    Ints(Vec<i64>),
    /// A text.
    Text(String),
    /// A text[] (for `= ANY`).
    Texts(Vec<String>),
}

impl RowFilter {
    /// A SQL condition on the table aliased `r` that holds for every row [`Self::matches`]
    /// accepts, and may hold for others: the snapshot query uses it to let the database skip
    /// rows (and use an index), and still checks each row it returns with `matches`, which
    /// stays the only judge. Only comparisons whose SQL result is known to equal `matches`'
    /// (integer columns with integer values, text equality, null tests on those) are
    /// translated; anything else becomes `TRUE`. Values are bound as parameters, never
    /// written into the SQL; column names are quoted.
    pub fn sql_prefilter(
        &self,
        column: &dyn Fn(&str) -> Option<SqlColumn>,
    ) -> (String, Vec<SqlParam>) {
        let mut params = Vec::new();
        let sql = prefilter(&self.expr, column, &mut params).unwrap_or_else(|| "TRUE".into());
        (sql, params)
    }
}

/// `None` stands for `TRUE` (nothing to prune).
fn prefilter(
    expr: &Expr<Scalar>,
    column: &dyn Fn(&str) -> Option<SqlColumn>,
    params: &mut Vec<SqlParam>,
) -> Option<String> {
    match expr {
        Expr::And(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|e| prefilter(e, column, params))
                .collect();
            (!parts.is_empty()).then(|| format!("({})", parts.join(" AND ")))
        }
        Expr::Or(items) => {
            let mut parts = Vec::with_capacity(items.len());
            let before = params.len();
            for item in items {
                match prefilter(item, column, params) {
                    Some(part) => parts.push(part),
                    None => {
                        params.truncate(before); // one branch prunes nothing: neither does OR
                        return None;
                    }
                }
            }
            Some(format!("({})", parts.join(" OR ")))
        }
        Expr::Compare {
            column: name,
            op,
            value,
        } => {
            let sql_op = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            };
            match (column(name)?, value) {
                (SqlColumn::Integer, Scalar::Number(n) | Scalar::Text(n)) => {
                    let n = n.trim().parse::<i64>().ok()?;
                    let p = param(SqlParam::Int(n), params);
                    Some(format!("{} {sql_op} {p}::int8", quote(name)))
                }
                (SqlColumn::Text, Scalar::Text(t) | Scalar::Number(t)) if *op == Op::Eq => {
                    let p = param(SqlParam::Text(t.clone()), params);
                    Some(format!("{} = {p}::text", quote(name)))
                }
                _ => None,
            }
        }
        Expr::In {
            column: name,
            values,
            negated: false,
        } => match column(name)? {
            SqlColumn::Integer => {
                let ints = values
                    .iter()
                    .map(|v| match v {
                        Scalar::Number(n) | Scalar::Text(n) => n.trim().parse::<i64>().ok(),
                        Scalar::Bool(_) => None,
                    })
                    .collect::<Option<Vec<i64>>>()?;
                let p = param(SqlParam::Ints(ints), params);
                Some(format!("{} = ANY({p}::int8[])", quote(name)))
            }
            SqlColumn::Text => {
                let texts = values
                    .iter()
                    .map(|v| match v {
                        Scalar::Number(t) | Scalar::Text(t) => Some(t.clone()),
                        Scalar::Bool(_) => None,
                    })
                    .collect::<Option<Vec<String>>>()?;
                let p = param(SqlParam::Texts(texts), params);
                Some(format!("{} = ANY({p}::text[])", quote(name)))
            }
        },
        Expr::In { negated: true, .. } => None,
        Expr::IsNull {
            column: name,
            negated,
        } => {
            column(name)?;
            let not = if *negated { " NOT" } else { "" };
            Some(format!("{} IS{not} NULL", quote(name)))
        }
    }
}

/// Adds a parameter; returns its placeholder.
fn param(p: SqlParam, params: &mut Vec<SqlParam>) -> String {
    params.push(p);
    format!("${}", params.len())
}

/// `r."name"`, with embedded quotes doubled.
fn quote(name: &str) -> String {
    format!("r.\"{}\"", name.replace('"', "\"\""))
}

// --- evaluation -------------------------------------------------------------------------------

fn eval(expr: &Expr<Scalar>, row: &Row) -> bool {
    match expr {
        Expr::And(items) => items.iter().all(|e| eval(e, row)),
        Expr::Or(items) => items.iter().any(|e| eval(e, row)),
        Expr::Compare { column, op, value } => {
            let Some(ordering) = compare(column_value(row, column), value) else {
                return false;
            };
            match op {
                Op::Eq => ordering == Ordering::Equal,
                Op::Ne => ordering != Ordering::Equal,
                Op::Lt => ordering == Ordering::Less,
                Op::Le => ordering != Ordering::Greater,
                Op::Gt => ordering == Ordering::Greater,
                Op::Ge => ordering != Ordering::Less,
            }
        }
        Expr::In {
            column,
            values,
            negated,
        } => {
            let value = column_value(row, column);
            if matches!(value, Value::Null) {
                return false;
            }
            // As in SQL: `x NOT IN (...)` is true only when x compares unequal to every item.
            let mut unknown = false;
            for item in values {
                match compare(value, item) {
                    Some(Ordering::Equal) => return !negated,
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            *negated && !unknown
        }
        Expr::IsNull { column, negated } => {
            matches!(column_value(row, column), Value::Null) != *negated
        }
    }
}

/// The row's value of `column`; a column the row lacks reads as NULL.
fn column_value<'a>(row: &'a Row, column: &str) -> &'a Value {
    const NULL: &Value = &Value::Null;
    match row.binary_search_by(|(name, _)| name.as_str().cmp(column)) {
        Ok(i) => &row[i].1,
        Err(_) => row
            .iter()
            .find(|(name, _)| name == column)
            .map_or(NULL, |(_, v)| v),
    }
}

/// How a column value orders against a filter value; `None` when they do not compare (NULL, or
/// a value that does not convert to the column's kind).
fn compare(value: &Value, scalar: &Scalar) -> Option<Ordering> {
    match (value, scalar) {
        (Value::Null, _) => None,
        (Value::Bool(b), Scalar::Bool(s)) => Some(b.cmp(s)),
        (Value::Bool(b), Scalar::Text(s)) => Some(b.cmp(&parse_bool(s)?)),
        (Value::Int(i), Scalar::Number(n) | Scalar::Text(n)) => {
            let n = n.trim();
            match n.parse::<i64>() {
                Ok(n) => Some(i.cmp(&n)),
                Err(_) => decimal_cmp(&i.to_string(), n),
            }
        }
        (Value::Numeric(d), Scalar::Number(n) | Scalar::Text(n)) => decimal_cmp(d, n.trim()),
        (Value::Double(d), Scalar::Number(n) | Scalar::Text(n)) => {
            let n = parse_double(n.trim())?;
            Some(double_cmp(*d, n))
        }
        (Value::Text(t), Scalar::Text(s) | Scalar::Number(s)) => {
            Some(t.as_bytes().cmp(s.as_bytes()))
        }
        (Value::Text(t), Scalar::Bool(b)) => {
            Some(t.as_str().cmp(if *b { "true" } else { "false" }))
        }
        (Value::Timestamp(t), Scalar::Text(s)) => Some(t.cmp(&timestamp(s, true)?)),
        (Value::LocalTimestamp(t), Scalar::Text(s)) => Some(t.cmp(&timestamp(s, false)?)),
        (Value::Date(d), Scalar::Text(s)) => Some(d.cmp(&date(s)?)),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok().filter(|d: &f64| d.is_finite()),
    }
}

/// PostgreSQL's float order: NaN equals NaN and is above everything else.
fn double_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of two decimal numbers in text (`-12.50`, `3`, `1e3`, and numeric's `NaN`,
/// `Infinity`, `-Infinity`, ordered as PostgreSQL orders them: NaN above everything).
fn decimal_cmp(a: &str, b: &str) -> Option<Ordering> {
    let a = Decimal::parse(a)?;
    let b = Decimal::parse(b)?;
    Some(a.cmp(&b))
}

/// A decimal as sign, and digits with the position of the decimal point; or a special value.
#[derive(Debug, PartialEq, Eq)]
enum Decimal {
    NegInfinity,
    Finite {
        negative: bool,
        /// Significant digits without leading or trailing zeros ("" for zero).
        digits: Vec<u8>,
        /// The power of ten of the first digit's place plus one (123.4 → 3, 0.05 → -1).
        exponent: i64,
    },
    Infinity,
    NaN,
}

impl Decimal {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "NaN" => return Some(Self::NaN),
            "Infinity" | "+Infinity" => return Some(Self::Infinity),
            "-Infinity" => return Some(Self::NegInfinity),
            _ => {}
        }
        let (negative, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(at) => (&s[..at], s[at + 1..].parse::<i64>().ok()?),
            None => (s, 0),
        };
        if exp.unsigned_abs() > 1_000_000 {
            return None;
        }
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let leading = all.iter().take_while(|&&d| d == b'0').count();
        let mut digits = all[leading..].to_vec();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        let exponent = int.len() as i64 - leading as i64 + exp;
        let negative = negative && !digits.is_empty();
        Some(Self::Finite {
            negative,
            exponent: if digits.is_empty() { 0 } else { exponent },
            digits,
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Self::NegInfinity => 0,
            Self::Finite { .. } => 1,
            Self::Infinity => 2,
            Self::NaN => 3,
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let (
            Self::Finite {
                negative: an,
                digits: ad,
                exponent: ae,
            },
            Self::Finite {
                negative: bn,
                digits: bd,
                exponent: be,
            },
        ) = (self, other)
        else {
            return self.rank().cmp(&other.rank());
        };
        let sign = |negative: bool, digits: &[u8]| match (negative, digits.is_empty()) {
            (_, true) => 0,
            (true, false) => -1,
            (false, false) => 1,
        };
        let (sa, sb) = (sign(*an, ad), sign(*bn, bd));
        if sa != sb || sa == 0 {
            return sa.cmp(&sb);
        }
        let magnitude = ae.cmp(be).then_with(|| ad.cmp(bd));
        if sa < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// --- parsing ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Quoted(String),
    Text(String),
    Number(String),
    Placeholder(String),
    Op(Op),
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s}"),
            Token::Quoted(s) => write!(f, "\"{s}\""),
            Token::Text(s) => write!(f, "'{s}'"),
            Token::Number(s) => write!(f, "{s}"),
            Token::Placeholder(s) => write!(f, "{{{s}}}"),
            Token::Op(op) => f.write_str(match op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            }),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
            Token::Comma => f.write_str(","),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let error = |at: usize, reason: &str| ParseError {
        at,
        reason: reason.to_owned(),
    };
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Token::Open
            }
            b')' => {
                i += 1;
                Token::Close
            }
            b',' => {
                i += 1;
                Token::Comma
            }
            b'=' => {
                i += 1;
                Token::Op(Op::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Token::Op(Op::Ne)
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    i += 2;
                    Token::Op(Op::Le)
                }
                Some(b'>') => {
                    i += 2;
                    Token::Op(Op::Ne)
                }
                _ => {
                    i += 1;
                    Token::Op(Op::Lt)
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Token::Op(Op::Ge)
                } else {
                    i += 1;
                    Token::Op(Op::Gt)
                }
            }
            b'\'' | b'"' => {
                let (content, next) =
                    quoted(text, i, c).ok_or_else(|| error(start, "unterminated quote"))?;
                i = next;
                if c == b'\'' {
                    Token::Text(content)
                } else if content.is_empty() {
                    return Err(error(start, "empty quoted column name"));
                } else {
                    Token::Quoted(content)
                }
            }
            b'{' => {
                let close = text[i..]
                    .find('}')
                    .ok_or_else(|| error(start, "unterminated placeholder"))?
                    + i;
                let name = text[i + 1..close].trim();
                let name = name.strip_prefix("claims.").unwrap_or(name);
                if name.is_empty() || name.contains(['{', ' ']) {
                    return Err(error(start, "a placeholder is {claims.NAME} or {NAME}"));
                }
                i = close + 1;
                Token::Placeholder(name.to_owned())
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || (matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let number = &text[start..i];
                if Decimal::parse(number).is_none()
                    || matches!(number.as_bytes().last(), Some(b'.'))
                {
                    return Err(error(start, &format!("{number:?} is not a number")));
                }
                Token::Number(number.to_owned())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Token::Ident(text[start..i].to_owned())
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(error(start, &format!("unexpected character {ch:?}")));
            }
        };
        out.push((start, token));
    }
    Ok(out)
}

/// The content of a quote starting at `start` (doubled quotes stand for one), and the index
/// after its closing quote.
fn quoted(text: &str, start: usize, quote: u8) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut from = i;
    loop {
        let at = i + text[i..].find(quote as char)?;
        out.push_str(&text[from..at]);
        if bytes.get(at + 1) == Some(&quote) {
            out.push(quote as char);
            i = at + 2;
            from = i;
        } else {
            return Some((out, at + 1));
        }
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end: usize,
}

/// Nesting deeper than this is refused (the parser recurses).
const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(o, _)| *o)
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.offset(),
            reason: reason.into(),
        })
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(s)) if s.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(token) {
            self.at += 1;
            Ok(())
        } else {
            self.error(format!("expected {what}"))
        }
    }

    fn or(&mut self) -> Result<Expr<Operand>, ParseError> {
        self.or_at(0)
    }

    fn or_at(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        let mut items = vec![self.and(depth)?];
        while self.keyword("or") {
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        let mut items = vec![self.term(depth)?];
        while self.keyword("and") {
            items.push(self.term(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        if self.peek() == Some(&Token::Open) {
            if depth >= MAX_DEPTH {
                return self.error("parentheses nested too deeply");
            }
            self.at += 1;
            let inner = self.or_at(depth + 1)?;
            self.expect(&Token::Close, ")")?;
            return Ok(inner);
        }
        let column = match self.peek() {
            Some(Token::Quoted(name)) => name.clone(),
            Some(Token::Ident(name)) if !is_keyword(name) => name.to_ascii_lowercase(),
            _ => return self.error("expected a column name"),
        };
        self.at += 1;
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return self.error("expected null");
            }
            return Ok(Expr::IsNull { column, negated });
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            let values = if let Some(Token::Placeholder(name)) = self.peek() {
                let claim = Operand::Claim(name.clone());
                self.at += 1;
                vec![claim]
            } else {
                self.expect(&Token::Open, "( or a placeholder after in")?;
                let mut values = vec![self.value()?];
                while self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                    values.push(self.value()?);
                }
                self.expect(&Token::Close, ")")?;
                values
            };
            return Ok(Expr::In {
                column,
                values,
                negated,
            });
        }
        if negated {
            return self.error("expected in after not");
        }
        let Some(Token::Op(op)) = self.peek().cloned() else {
            return self.error("expected a comparison (=, !=, <, <=, >, >=), in or is");
        };
        self.at += 1;
        let value = self.value()?;
        Ok(Expr::Compare { column, op, value })
    }

    fn value(&mut self) -> Result<Operand, ParseError> {
        let operand = match self.peek() {
            Some(Token::Text(s)) => Operand::Literal(Scalar::Text(s.clone())),
            Some(Token::Number(n)) => Operand::Literal(Scalar::Number(n.clone())),
            Some(Token::Placeholder(name)) => Operand::Claim(name.clone()),
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("true") => {
                Operand::Literal(Scalar::Bool(true))
            }
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("false") => {
                Operand::Literal(Scalar::Bool(false))
            }
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("null") => {
                return self.error("compare with null using is null / is not null");
            }
            _ => {
                return self
                    .error("expected a value ('text', a number, true, false or {claims.NAME})")
            }
        };
        self.at += 1;
        Ok(operand)
    }
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "not", "in", "is", "null", "true", "false"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests;
