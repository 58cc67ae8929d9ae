//! A JSON number as jsonb stores it: to_jsonb reads a number's text with `numeric_in`, so
//! `1e+300` becomes 1 and 300 zeros, `1.5e-07` becomes `0.00000015` and `-0` becomes `0`.
//! Pure; knows nothing of types.

use super::ValueError;

/// Digits a numeric may have before its point (weight 32767 in base-10000 digits).
const MAX_INTEGER_DIGITS: usize = 131_072;
/// Digits a numeric may have after its point (`NUMERIC_DSCALE_MAX`).
const MAX_SCALE: usize = 16_383;

/// `Ok(None)` when `text` is not a JSON number (to_jsonb then keeps it as a string: `NaN`,
/// `Infinity`); otherwise its digits as `numeric_out` writes them, or an error when numeric
/// cannot hold it (PostgreSQL fails the statement then too).
pub(super) fn canonical(text: &str) -> Result<Option<String>, ValueError> {
    let Some(parts) = Parts::split(text) else {
        return Ok(None);
    };
    let digits: String = [parts.integer, parts.fraction].concat();
    let frac_len = i64::try_from(parts.fraction.len()).map_err(|_| ValueError::NumberOutOfRange)?;
    // Where the point goes, counted from the left end of `digits`, and the display scale.
    let int_len = i64::try_from(parts.integer.len()).map_err(|_| ValueError::NumberOutOfRange)?;
    let point = int_len
        .checked_add(parts.exponent)
        .ok_or(ValueError::NumberOutOfRange)?;
    let scale = frac_len.saturating_sub(parts.exponent).max(0);
    let scale = usize::try_from(scale).map_err(|_| ValueError::NumberOutOfRange)?;
    if scale > MAX_SCALE {
        return Err(ValueError::NumberOutOfRange);
    }
    let integer = if point <= 0 {
        String::new()
    } else {
        let point = usize::try_from(point).map_err(|_| ValueError::NumberOutOfRange)?;
        if point > MAX_INTEGER_DIGITS + digits.len() {
            return Err(ValueError::NumberOutOfRange);
        }
        let mut integer: String = digits.chars().take(point).collect();
        integer.extend(std::iter::repeat_n('0', point.saturating_sub(digits.len())));
        integer
    };
    let integer = integer.trim_start_matches('0');
    if integer.len() > MAX_INTEGER_DIGITS {
        return Err(ValueError::NumberOutOfRange);
    }
    // The fraction: zeros between the point and the digits, the digits past the point, then
    // zeros up to the scale.
    let mut fraction = String::with_capacity(scale);
    if point < 0 {
        let zeros = usize::try_from(-point).map_err(|_| ValueError::NumberOutOfRange)?;
        fraction.extend(std::iter::repeat_n('0', zeros.min(scale)));
    }
    let skip = usize::try_from(point.max(0)).map_err(|_| ValueError::NumberOutOfRange)?;
    fraction.extend(digits.chars().skip(skip));
    fraction.truncate(scale);
    let pad = scale - fraction.len();
    fraction.extend(std::iter::repeat_n('0', pad));

    let is_zero = integer.is_empty() && fraction.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(integer.len() + scale + 3);
    if parts.negative && !is_zero {
        out.push('-');
    }
    out.push_str(if integer.is_empty() { "0" } else { integer });
    if scale > 0 {
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(Some(out))
}

/// A JSON number's pieces (RFC 8259 grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
struct Parts<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
    exponent: i64,
}

impl<'a> Parts<'a> {
    fn split(text: &'a str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (integer, rest) = rest.split_at(int_end);
        if integer.is_empty() || (integer.len() > 1 && integer.starts_with('0')) {
            return None;
        }
        let (fraction, rest) = match rest.strip_prefix('.') {
            Some(rest) => {
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if end == 0 {
                    return None;
                }
                rest.split_at(end)
            }
            None => ("", rest),
        };
        let exponent = match rest.strip_prefix(['e', 'E']) {
            Some(exp) => {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Beyond i64 is far beyond numeric too: saturate, the range check refuses it.
                let magnitude = digits
                    .parse::<i64>()
                    .unwrap_or(i64::MAX / 2)
                    .min(i64::MAX / 2);
                if exp.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                }
            }
            None if rest.is_empty() => 0,
            None => return None,
        };
        Some(Parts {
            negative,
            integer,
            fraction,
            exponent,
        })
    }
}
