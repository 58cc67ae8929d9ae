//! Topic routing: which backend serves a topic name. Pure: no I/O.
//!
//! Rules are tried in order; the first whose pattern matches wins (patterns: see
//! [`crate::topic_pattern`]). Without any rule every topic is served by the in-process broker;
//! with rules, a topic that no rule matches is not found.

use crate::config::TopicRule;
use crate::protocol::{Code, Failure};
use crate::topic_pattern::matches;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;

    #[test]
    fn first_matching_rule_wins_and_unmatched_is_not_found() {
        let rule = |pattern: &str, backend| TopicRule {
            pattern: pattern.into(),
            backend,
            allow_wildcards: false,
            stream: false,
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
}
