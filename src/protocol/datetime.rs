//! PostgreSQL's ISO 8601 date and timestamp text (as `to_jsonb` writes it, whatever the
//! session's DateStyle) read into the protocol's units: days and microseconds since the Unix
//! epoch. Pure: the changefeed uses it to convert row values, the row-filter language to compare
//! a column with a date or timestamp literal. Conversions are checked against chrono across the
//! whole range in `changefeed::values`'s tests.

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 from PostgreSQL's ISO date (`2024-05-01`, `0044-03-15 BC`,
/// `5874897-12-31`, `infinity`). A finite date that would equal `i32::MAX`/`MIN` is refused so
/// those stay the infinities.
pub fn date(s: &str) -> Option<i32> {
    match s {
        "infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (s, bc) = split_bc(s);
    let days = i32::try_from(civil_days(s, bc)?).ok()?;
    (days != i32::MAX && days != i32::MIN).then_some(days)
}

/// Microseconds since the Unix epoch from PostgreSQL's ISO timestamp: with an offset
/// (`2024-05-01T16:04:56.123456+05:30`, `1800-01-01T05:53:28+05:53:28`) when `with_offset`,
/// without one otherwise. `None` when it does not parse or does not fit (or would be taken for
/// an infinity).
pub fn timestamp(s: &str, with_offset: bool) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = split_bc(s);
    let (date, time) = s.split_once('T')?;
    let (time, offset_secs) = if with_offset {
        match time.strip_suffix('Z') {
            Some(time) => (time, 0),
            None => {
                let at = time.find(['+', '-'])?;
                (&time[..at], utc_offset(&time[at..])?)
            }
        }
    } else {
        (time, 0)
    };
    let micros = civil_days(date, bc)?
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(time_of_day(time)?)?
        .checked_sub(offset_secs * 1_000_000)?;
    (micros != i64::MAX && micros != i64::MIN).then_some(micros)
}

/// Strips the ` BC` PostgreSQL appends to dates before year 1.
fn split_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD` (year of 1 to 9 digits) in the proleptic Gregorian
/// calendar PostgreSQL uses; `bc` makes year `y` astronomical year `1 - y`. Own arithmetic
/// rather than chrono's, whose range (±262143 years) is narrower than PostgreSQL's dates
/// (up to 5874897 AD).
fn civil_days(s: &str, bc: bool) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year = digits(parts.next()?, 1..=9)?;
    let month = digits(parts.next()?, 2..=2)?;
    let day = digits(parts.next()?, 2..=2)?;
    let year = if bc {
        if year == 0 {
            return None;
        }
        1 - year
    } else {
        year
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // Howard Hinnant's days_from_civil: years start in March so leap days fall last.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year.rem_euclid(4) == 0
            && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]`.
fn time_of_day(s: &str) -> Option<i64> {
    let (hms, fraction) = match s.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (s, None),
    };
    let mut parts = hms.splitn(3, ':');
    let hours = digits(parts.next()?, 2..=2)?;
    let minutes = digits(parts.next()?, 2..=2)?;
    let seconds = digits(parts.next()?, 2..=2)?;
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let micros = match fraction {
        Some(f) => digits(f, 1..=6)? * 10_i64.pow(6 - f.len() as u32),
        None => 0,
    };
    Some(((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros)
}

/// Seconds east of UTC of `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`).
fn utc_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mut secs = 0;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        let n = digits(part, 2..=2)?;
        if i > 2 || (i > 0 && n > 59) {
            return None;
        }
        secs = secs * 60 + n;
        count = i + 1;
    }
    Some(sign * secs * 60_i64.pow(3 - count as u32))
}

/// A non-negative decimal of ASCII digits only (no sign), of a length in `len`.
fn digits(s: &str, len: std::ops::RangeInclusive<usize>) -> Option<i64> {
    if !len.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
