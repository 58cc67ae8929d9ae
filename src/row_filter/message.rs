//! A client's filter on a topic's messages (`TopicFeed.filter`): the same tree and evaluator as
//! row filters, with operands that read a message: a dot path into its payload parsed as JSON,
//! its key, or a header.
//!
//! A payload is parsed at most once per message however many subscribers filter it
//! ([`Inspected`]). A payload that is not JSON, or lacks the path, gives the operand no value, so
//! no comparison on it holds (and `negate` of one does); a path ending at a JSON list gives every
//! item as a value, so a comparison holds when it holds for any of them. JSON numbers compare as
//! exact decimals, strings as text, booleans as booleans; objects and nested lists compare with
//! nothing.

use std::sync::OnceLock;

use serde_json::Value as Json;

use super::client::{build_tree, FilterError};
use super::eval::{eval, Lookup};
use super::{Expr, Scalar};
use crate::protocol::{pb, TopicMessage, Value};

/// The most segments a payload path may have.
pub const MAX_PATH_SEGMENTS: usize = 16;

/// Operand names in the tree: `key`, `header:NAME`, `payload:PATH`.
const KEY: &str = "key";
const HEADER: &str = "header:";
const PAYLOAD: &str = "payload:";

/// A topic subscriber's filter.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFilter {
    expr: Expr<Scalar>,
}

/// A message being fanned out, with its payload parsed once (on first need) for every
/// subscriber's filter.
pub struct Inspected<'a> {
    message: &'a TopicMessage,
    json: OnceLock<Option<Json>>,
}

impl<'a> Inspected<'a> {
    /// Wraps `message`; nothing is parsed yet.
    pub fn new(message: &'a TopicMessage) -> Self {
        Self {
            message,
            json: OnceLock::new(),
        }
    }

    fn json(&self) -> Option<&Json> {
        self.json
            .get_or_init(|| serde_json::from_slice(&self.message.payload).ok())
            .as_ref()
    }
}

impl MessageFilter {
    /// Builds a client's topic filter, or says which node is at fault.
    pub fn from_client(filter: &pb::Filter) -> Result<Self, FilterError> {
        Ok(Self {
            expr: build_tree(filter, &operand)?,
        })
    }

    /// Whether the message passes.
    pub fn matches(&self, message: &Inspected<'_>) -> bool {
        eval(&self.expr, message)
    }
}

fn operand(of: &pb::operand::Of) -> Result<String, String> {
    match of {
        pb::operand::Of::Column(_) => {
            Err("a topic filter's operand is a payload path, the key or a header".into())
        }
        pb::operand::Of::Key(true) => Ok(KEY.into()),
        pb::operand::Of::Key(false) => Err("key must be true to name the key".into()),
        pb::operand::Of::Header(name) if !name.is_empty() => Ok(format!("{HEADER}{name}")),
        pb::operand::Of::Header(_) => Err("a header operand needs a name".into()),
        pb::operand::Of::Path(path) => {
            let segments = path.split('.').count();
            if segments > MAX_PATH_SEGMENTS {
                return Err(format!(
                    "path {path:?} has {segments} segments; at most {MAX_PATH_SEGMENTS}"
                ));
            }
            if !path.is_empty() && path.split('.').any(str::is_empty) {
                return Err(format!("path {path:?} has an empty segment"));
            }
            Ok(format!("{PAYLOAD}{path}"))
        }
    }
}

impl Lookup for Inspected<'_> {
    fn any(&self, operand: &str, test: &mut dyn FnMut(&Value) -> bool) -> bool {
        if operand == KEY {
            return test(&Value::Text(self.message.key.clone()));
        }
        if let Some(name) = operand.strip_prefix(HEADER) {
            return self
                .message
                .headers
                .iter()
                .filter(|(header, _)| header == name)
                .any(|(_, value)| test(&Value::Text(value.clone())));
        }
        let Some(path) = operand.strip_prefix(PAYLOAD) else {
            return false;
        };
        let Some(mut json) = self.json() else {
            return false; // not JSON
        };
        if !path.is_empty() {
            for segment in path.split('.') {
                match json.get(segment) {
                    Some(inner) => json = inner,
                    None => return false,
                }
            }
        }
        match json {
            Json::Array(items) => items.iter().any(|item| test(&value(item))),
            other => test(&value(other)),
        }
    }
}

/// A JSON value as the evaluator compares it.
fn value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        // Exact digits (serde_json keeps them: arbitrary_precision).
        Json::Number(n) => Value::Numeric(n.to_string()),
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pb::value::Kind;

    fn operand(of: pb::operand::Of) -> Option<pb::Operand> {
        Some(pb::Operand { of: Some(of) })
    }

    fn compare(of: pb::operand::Of, op: pb::CompareOp, value: Kind) -> pb::Filter {
        pb::Filter {
            node: Some(pb::filter::Node::Compare(pb::Comparison {
                operand: operand(of),
                op: op as i32,
                value: Some(pb::Value { kind: Some(value) }),
            })),
        }
    }

    fn message(payload: &str, key: &str) -> TopicMessage {
        TopicMessage {
            topic: "t".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            key: key.into(),
            headers: vec![("region".into(), "north_sea".into())],
            ..Default::default()
        }
    }

    fn passes(filter: &pb::Filter, message: &TopicMessage) -> bool {
        MessageFilter::from_client(filter)
            .expect("valid")
            .matches(&Inspected::new(message))
    }

    #[test]
    fn paths_lists_key_and_headers_are_read_from_the_message() {
        use pb::operand::Of;
        let oil = compare(
            Of::Path("commodity".into()),
            pb::CompareOp::Eq,
            Kind::Text("oil".into()),
        );
        assert!(passes(&oil, &message(r#"{"commodity":"oil"}"#, "")));
        assert!(!passes(&oil, &message(r#"{"commodity":"gas"}"#, "")));
        assert!(
            !passes(&oil, &message("not json", "")),
            "not JSON: no match"
        );
        assert!(
            !passes(&oil, &message(r#"{"other":1}"#, "")),
            "no such path: no match"
        );
        let region = compare(
            Of::Path("regions".into()),
            pb::CompareOp::Eq,
            Kind::Text("gulf".into()),
        );
        assert!(
            passes(&region, &message(r#"{"regions":["north_sea","gulf"]}"#, "")),
            "any item of a list"
        );
        let deep = compare(Of::Path("user.id".into()), pb::CompareOp::Gt, Kind::Int(7));
        assert!(
            passes(&deep, &message(r#"{"user":{"id":7.5}}"#, "")),
            "numbers compare exactly"
        );
        assert!(!passes(&deep, &message(r#"{"user":{"id":7}}"#, "")));
        let key = compare(Of::Key(true), pb::CompareOp::Eq, Kind::Text("k-1".into()));
        assert!(passes(&key, &message("{}", "k-1")));
        let header = compare(
            Of::Header("region".into()),
            pb::CompareOp::Eq,
            Kind::Text("north_sea".into()),
        );
        assert!(passes(&header, &message("x", "")));
        let missing = compare(
            Of::Header("nope".into()),
            pb::CompareOp::Eq,
            Kind::Text("x".into()),
        );
        assert!(!passes(&missing, &message("x", "")));
    }

    #[test]
    fn operands_that_do_not_read_a_message_are_refused() {
        use pb::operand::Of;
        let refused = |of: Of| {
            MessageFilter::from_client(&compare(of, pb::CompareOp::Eq, Kind::Int(1)))
                .expect_err("refused")
                .reason
        };
        assert!(refused(Of::Column("id".into())).contains("payload path"));
        assert!(refused(Of::Path("a..b".into())).contains("empty segment"));
        assert!(refused(Of::Path(vec!["a"; 17].join("."))).contains("at most 16"));
        assert!(refused(Of::Header(String::new())).contains("needs a name"));
    }
}
