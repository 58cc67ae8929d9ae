//! Topic names and patterns: dot-separated segments where `*` matches exactly one segment and
//! `#` matches zero or more (AMQP topic syntax): `orders.*` matches `orders.eu` but not `orders`
//! or `orders.eu.paris`; `audit.#` matches `audit`, `audit.login` and `audit.login.failed`.
//! Pure: used by topic routing (`broker::route`), by permissions (`auth::permissions`) and by the
//! configuration's checks, none of which it knows.

/// Whether `pattern` matches `topic` (both dot-separated).
pub fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    matches_segments(&pattern, &topic)
}

/// [`matches()`] on names already split into segments.
pub fn matches_segments(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| matches_segments(rest, &topic[skip..])),
        Some((&segment, rest)) => match topic.split_first() {
            Some((&first, tail)) => {
                (segment == "*" || segment == first) && matches_segments(rest, tail)
            }
            None => false,
        },
    }
}

/// Whether some topic name matches both patterns (a permission grant and a routing rule's
/// pattern, say).
pub fn overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    overlap_segments(&a, &b)
}

fn overlap_segments(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        // `#` matches nothing (then the rest must overlap) or one more segment of the other.
        (Some((&"#", a_rest)), _) => {
            overlap_segments(a_rest, b) || (!b.is_empty() && overlap_segments(a, &b[1..]))
        }
        (_, Some((&"#", b_rest))) => {
            overlap_segments(a, b_rest) || (!a.is_empty() && overlap_segments(&a[1..], b))
        }
        (None, Some(_)) | (Some(_), None) => false,
        (Some((&x, a_rest)), Some((&y, b_rest))) => {
            (x == "*" || y == "*" || x == y) && overlap_segments(a_rest, b_rest)
        }
    }
}

/// Whether a topic name contains wildcard characters.
pub fn has_wildcards(topic: &str) -> bool {
    topic.split('.').any(|s| s == "*" || s == "#") || topic.contains(['*', '#', '>'])
}

/// Checks a rule's pattern: non-empty segments, wildcards only as whole segments.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    for segment in pattern.split('.') {
        if segment.is_empty() {
            return Err(format!("{pattern:?} has an empty segment"));
        }
        if segment != "*" && segment != "#" && segment.contains(['*', '#']) {
            return Err(format!("{pattern:?}: wildcards must be whole segments"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_overlap_when_some_topic_matches_both() {
        assert!(overlap("#", "orders.eu"));
        assert!(overlap("orders.*", "orders.eu"));
        assert!(overlap("orders.*", "*.eu"));
        assert!(overlap("audit.#", "#.failed"));
        assert!(overlap("demo.#", "demo"));
        assert!(!overlap("orders.*", "orders"));
        assert!(!overlap("orders.*", "audit.#"));
        assert!(!overlap("orders.eu", "orders.us"));
        assert!(!overlap("a.*.c", "a.b"));
    }

    #[test]
    fn amqp_style_patterns() {
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.eu"));
        assert!(matches("orders.*", "orders.eu"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "orders.eu.paris"));
        assert!(matches("audit.#", "audit"));
        assert!(matches("audit.#", "audit.login.failed"));
        assert!(matches("#.failed", "audit.login.failed"));
        assert!(matches("#", "anything.at.all"));
        assert!(!matches("a.*.c", "a.b.d"));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("a.*.#").is_ok());
        assert!(check_pattern("a..b").is_err());
        assert!(check_pattern("a.b*").is_err());
        assert!(check_pattern("").is_err());
    }
}
