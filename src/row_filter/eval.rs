//! Evaluating a filled filter on a row (or a topic message), with SQL's NULL rules and
//! PostgreSQL's orderings.

use std::cmp::Ordering;

use super::{Expr, Op, Scalar};
use crate::protocol::datetime::{date, timestamp};
use crate::protocol::{Row, Value};

/// Where a filter's operands take their values: a row's columns (one value each, NULL when
/// absent), or a message's parts (none when absent, several for a JSON list).
pub(super) trait Lookup {
    /// Whether `test` holds for any value of `operand` (false when it has none).
    fn any(&self, operand: &str, test: &mut dyn FnMut(&Value) -> bool) -> bool;
}

impl Lookup for Row {
    fn any(&self, operand: &str, test: &mut dyn FnMut(&Value) -> bool) -> bool {
        test(column_value(self, operand))
    }
}

pub(super) fn eval(expr: &Expr<Scalar>, values: &dyn Lookup) -> bool {
    match expr {
        Expr::And(items) => items.iter().all(|e| eval(e, values)),
        Expr::Or(items) => items.iter().any(|e| eval(e, values)),
        Expr::Compare { column, op, value } => values.any(column, &mut |found| {
            let Some(ordering) = compare(found, value) else {
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
        }),
        Expr::In {
            column,
            values: items,
            negated,
        } => values.any(column, &mut |value| {
            if matches!(value, Value::Null) {
                return false;
            }
            // As in SQL: `x NOT IN (...)` is true only when x compares unequal to every item.
            let mut unknown = false;
            for item in items {
                match compare(value, item) {
                    Some(Ordering::Equal) => return !negated,
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            *negated && !unknown
        }),
        Expr::IsNull { column, negated } => values.any(column, &mut |value| {
            matches!(value, Value::Null) != *negated
        }),
        Expr::Not(item) => !eval(item, values),
        Expr::Prefix { column, prefix } => values.any(column, &mut |value| match value {
            Value::Text(text) => text.as_bytes().starts_with(prefix.as_bytes()),
            _ => false,
        }),
    }
}

/// The row values that [`compare`] finds equal to `scalar`, when they can be listed exactly:
/// an integer and its text as written, or just the text; `None` for anything else (a
/// decimal, which equals integers written otherwise, or a boolean, a timestamp or a date).
pub(super) fn equal_forms(scalar: &Scalar) -> Option<Vec<super::Required>> {
    use super::Required;
    let (Scalar::Text(text) | Scalar::Number(text)) = scalar else {
        return None;
    };
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i64>() {
        return Some(vec![Required::Int(n), Required::Text(text.to_string())]);
    }
    if trimmed.parse::<f64>().is_ok() || Decimal::parse(trimmed).is_some() {
        return None; // a number an integer column may equal, written otherwise ("42.0")
    }
    Some(vec![Required::Text(text.to_string())])
}

/// The row's value of `column`; a column the row lacks reads as NULL.
fn column_value<'a>(row: &'a Row, column: &str) -> &'a Value {
    const NULL: &Value = &Value::Null;
    crate::protocol::column(row, column).unwrap_or(NULL)
}

/// How a column value orders against a filter value; `None` when they do not compare (NULL, or
/// a value that does not convert to the column's kind).
fn compare(value: &Value, scalar: &Scalar) -> Option<Ordering> {
    match (value, scalar) {
        (Value::Null, _) => None,
        (Value::Bool(b), Scalar::Bool(s)) => Some(b.cmp(s)),
        (Value::Bool(b), Scalar::Text(s)) => Some(b.cmp(&parse_bool(s)?)),
        (Value::Int(i), Scalar::Number(n) | Scalar::Text(n)) => match n.int {
            Some(n) => Some(i.cmp(&n)),
            None => decimal_cmp(&i.to_string(), n.trim()),
        },
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
        (Value::Timestamp(t) | Value::LocalTimestamp(t), Scalar::Micros(s)) => Some(t.cmp(s)),
        (Value::Date(d), Scalar::Days(s)) => Some(d.cmp(s)),
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
pub(super) fn decimal_cmp(a: &str, b: &str) -> Option<Ordering> {
    let a = Decimal::parse(a)?;
    let b = Decimal::parse(b)?;
    Some(a.cmp(&b))
}

/// A decimal as sign, and digits with the position of the decimal point; or a special value.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decimal {
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
    pub(super) fn parse(s: &str) -> Option<Self> {
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
