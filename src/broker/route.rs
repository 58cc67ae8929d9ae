//! Topic routing: which backend serves a topic name. Pure: no I/O.
//!
//! Rules are tried in order; the first whose pattern matches wins. Patterns are dot-separated
//! segments where `*` matches exactly one segment and `#` matches zero or more (AMQP topic
//! syntax): `orders.*` matches `orders.eu` but not `orders` or `orders.eu.paris`; `audit.#`
//! matches `audit`, `audit.login` and `audit.login.failed`. Without any rule every topic is
//! served by the in-process broker; with rules, a topic that no rule matches is not found.

use serde::Deserialize;

use crate::protocol::{Code, Failure};

/// The backends a topic can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The in-process broker.
    Memory,
    /// Kafka (any Kafka-protocol broker).
    Kafka,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// A topic name or pattern (`*` one segment, `#` any number of segments).
    pub pattern: String,
    /// Which backend serves matching topics.
    pub backend: BackendKind,
    /// Whether subscribers may use `*`/`#` in the topics they subscribe to (RabbitMQ only:
    /// the binding key of the subscription's queue).
    #[serde(default)]
    pub allow_wildcards: bool,
}

/// Whether `pattern` matches `topic` (both dot-separated).
pub fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    matches_segments(&pattern, &topic)
}

pub(crate) fn matches_segments(pattern: &[&str], topic: &[&str]) -> bool {
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

/// Whether a topic name contains wildcard characters.
pub fn has_wildcards(topic: &str) -> bool {
    topic.split('.').any(|s| s == "*" || s == "#") || topic.contains(['*', '#', '>'])
}

/// The rule serving `topic`, or a coded failure. `None` rules means "everything in memory".
pub fn route<'a>(rules: &'a [TopicRule], topic: &str) -> Result<Option<&'a TopicRule>, Failure> {
    if rules.is_empty() {
        return Ok(None);
    }
    rules
        .iter()
        .find(|rule| matches(&rule.pattern, topic))
        .map(Some)
        .ok_or_else(|| {
            Failure::new(
                Code::NotFound,
                format!("no routing rule serves topic {topic}"),
            )
            .detail("topic", topic)
        })
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
    fn first_matching_rule_wins_and_unmatched_is_not_found() {
        let rule = |pattern: &str, backend| TopicRule {
            pattern: pattern.into(),
            backend,
            allow_wildcards: false,
        };
        let rules = vec![
            rule("orders.*", BackendKind::Kafka),
            rule("#", BackendKind::Memory),
        ];
        assert_eq!(
            route(&rules, "orders.eu").map(|r| r.map(|r| r.backend)),
            Ok(Some(BackendKind::Kafka))
        );
        assert_eq!(
            route(&rules, "chat").map(|r| r.map(|r| r.backend)),
            Ok(Some(BackendKind::Memory))
        );
        let only_kafka = vec![rule("orders.*", BackendKind::Kafka)];
        assert_eq!(
            route(&only_kafka, "chat")
                .map(|_| ())
                .expect_err("unrouted")
                .code,
            Code::NotFound
        );
        assert_eq!(route(&[], "chat"), Ok(None));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("a.*.#").is_ok());
        assert!(check_pattern("a..b").is_err());
        assert!(check_pattern("a.b*").is_err());
        assert!(check_pattern("").is_err());
    }
}
