//! What an SSE request asks for, and how it is refused: its subscriptions (from the query or a
//! JSON body), the cursors of a `Last-Event-ID` (and the ids the stream writes), and refusals as
//! an HTTP status with the protocol's `Error`.

use std::collections::{BTreeMap, HashSet};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;

use crate::protocol::{pb, Code};

/// What a stream subscribes to, read from the request.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    pub(super) subscribes: Vec<pb::Subscribe>,
}

/// A request the stream refuses before it starts: an HTTP status and the protocol's error, as
/// JSON.
#[derive(Debug)]
pub(crate) struct Refusal(pub(super) pb::Error);

impl Refusal {
    fn validation(message: impl Into<String>) -> Self {
        Self(error(Code::Validation, message.into()))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = status(self.0.code());
        let mut response = (status, Json(self.0)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub(super) fn error(code: Code, message: String) -> pb::Error {
    pb::Error {
        code: code.into(),
        message,
        ..Default::default()
    }
}

/// The HTTP status of a request refused with `code`.
fn status(code: Code) -> StatusCode {
    match code {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::LimitExceeded | Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::SourceUnavailable | Code::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether a subscription refused with `code` refuses the whole request (it is the request's
/// fault, or the caller's), rather than ending that subscription in the stream (it is about the
/// source or the position, which the stream's other subscriptions do not share).
pub(super) fn refuses_request(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::Validation
            | Code::InvalidMessage
            | Code::UnknownCommand
            | Code::DuplicateSubscription
            | Code::LimitExceeded
            | Code::RateLimited
    )
}

impl Subscriptions {
    /// From `GET /v1/sse`'s query: `table=` and `topic=` (each one subscription; options
    /// `include_initial`, `columns`, `filter`, `min_interval_ms`, `start`, `start_offset` apply
    /// to all of them) and `subscribe=` (a whole `Subscribe`, as proto3 JSON), numbered 1, 2, ...
    /// in the order given unless a `subscribe` names its own id. `token` and `last_event_id` are
    /// the caller's, not read here. Anything else is refused.
    pub(crate) fn from_query(pairs: &[(String, String)]) -> Result<Self, Refusal> {
        let mut options = Options::default();
        for (name, value) in pairs {
            options.read(name, value)?;
        }
        let mut subscribes = Vec::new();
        for (name, value) in pairs {
            let source = match name.as_str() {
                "table" => pb::subscribe::Source::Table(pb::TableFeed {
                    table: value.clone(),
                    include_initial: options.include_initial,
                    filter: options.filter.clone(),
                    columns: options.columns.clone(),
                    min_interval_ms: options.min_interval_ms,
                }),
                "topic" => pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: value.clone(),
                    start: options.start.into(),
                    start_offset: options.start_offset,
                    filter: options.filter.clone(),
                    min_interval_ms: options.min_interval_ms,
                }),
                "subscribe" => {
                    subscribes.push(json::<pb::Subscribe>("subscribe", value)?);
                    continue;
                }
                _ => continue,
            };
            subscribes.push(pb::Subscribe {
                source: Some(source),
                ..Default::default()
            });
        }
        Self::numbered(subscribes)
    }

    /// From `POST /v1/sse`'s JSON body: `{"subscriptions": [Subscribe, ...]}`, each a proto3
    /// JSON `Subscribe`.
    pub(crate) fn from_body(body: &[u8]) -> Result<Self, Refusal> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            subscriptions: Vec<pb::Subscribe>,
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|err| Refusal::validation(format!("request body: {err}")))?;
        Self::numbered(body.subscriptions)
    }

    /// Gives each subscription without an id the next free one, and checks there is at least
    /// one and that ids are unique.
    fn numbered(mut subscribes: Vec<pb::Subscribe>) -> Result<Self, Refusal> {
        if subscribes.is_empty() {
            return Err(Refusal::validation(
                "no subscription: give table=, topic= or subscribe= (or a JSON body with \
                 \"subscriptions\")",
            ));
        }
        let mut taken: HashSet<u64> = HashSet::new();
        for subscribe in &subscribes {
            let id = subscribe.subscription_id;
            if id != 0 && !taken.insert(id) {
                return Err(Refusal::validation(format!(
                    "subscription_id {id} is given twice"
                )));
            }
        }
        let mut next = 1;
        for subscribe in subscribes.iter_mut().filter(|s| s.subscription_id == 0) {
            while taken.contains(&next) {
                next += 1;
            }
            subscribe.subscription_id = next;
            taken.insert(next);
        }
        Ok(Self { subscribes })
    }

    /// Sets each subscription's `resume_from` from a `Last-Event-ID`. Returns the ids of those
    /// the id holds no cursor for: they have nothing to resume from (cut before their first
    /// cursor), and subscribing them "from now" would be a gap.
    pub(super) fn resume(&mut self, last_event_id: &str) -> Result<Vec<u64>, Refusal> {
        let cursors = parse_id(last_event_id, &self.subscribes)?;
        let mut missing = Vec::new();
        for subscribe in &mut self.subscribes {
            match cursors.get(&subscribe.subscription_id) {
                Some(cursor) => subscribe.resume_from = cursor.clone(),
                None if subscribe.resume_from.is_empty() => missing.push(subscribe.subscription_id),
                None => {}
            }
        }
        self.subscribes
            .retain(|s| !missing.contains(&s.subscription_id));
        Ok(missing)
    }
}

/// The options `table=` and `topic=` subscriptions share.
#[derive(Debug, Default)]
struct Options {
    include_initial: bool,
    filter: Option<pb::Filter>,
    columns: Vec<String>,
    min_interval_ms: u32,
    start: pb::StartPosition,
    start_offset: i64,
}

impl Options {
    fn read(&mut self, name: &str, value: &str) -> Result<(), Refusal> {
        fn number<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, Refusal> {
            value.parse().map_err(|_| {
                Refusal::validation(format!("{what}: {value:?} is not a whole number"))
            })
        }
        match name {
            "include_initial" => {
                self.include_initial = match value {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Refusal::validation(format!(
                            "include_initial: {value:?} is not true or false"
                        )))
                    }
                }
            }
            "filter" => self.filter = Some(json("filter", value)?),
            "columns" => {
                self.columns = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "min_interval_ms" => self.min_interval_ms = number("min_interval_ms", value)?,
            "start_offset" => self.start_offset = number("start_offset", value)?,
            "start" => {
                self.start = match value {
                    "latest" => pb::StartPosition::Latest,
                    "earliest" => pb::StartPosition::Earliest,
                    "offset" => pb::StartPosition::Offset,
                    _ => {
                        return Err(Refusal::validation(format!(
                            "start: {value:?} is not latest, earliest or offset"
                        )))
                    }
                }
            }
            "table" | "topic" | "subscribe" | "token" | "last_event_id" => {}
            _ => {
                return Err(Refusal::validation(format!(
                    "unknown query parameter {name:?}"
                )))
            }
        }
        Ok(())
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, Refusal> {
    serde_json::from_str(value).map_err(|err| Refusal::validation(format!("{what}: {err}")))
}

/// The cursors a `Last-Event-ID` holds, by subscription: a bare cursor on a stream of one
/// subscription, else `id:cursor` pairs separated by commas.
fn parse_id(text: &str, subscribes: &[pb::Subscribe]) -> Result<BTreeMap<u64, Bytes>, Refusal> {
    let bad = |why: &str| Refusal::validation(format!("Last-Event-ID {text:?}: {why}"));
    let decode = |cursor: &str| {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .map(Bytes::from)
            .map_err(|_| bad("a cursor is not base64url"))
    };
    let mut cursors = BTreeMap::new();
    if text.is_empty() {
        return Ok(cursors);
    }
    if !text.contains(':') {
        let [only] = subscribes else {
            return Err(bad(
                "a bare cursor names no subscription, and this stream has several",
            ));
        };
        cursors.insert(only.subscription_id, decode(text)?);
        return Ok(cursors);
    }
    for pair in text.split(',') {
        let (id, cursor) = pair
            .split_once(':')
            .ok_or_else(|| bad("expected id:cursor"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| bad("a subscription id is not a number"))?;
        cursors.insert(id, decode(cursor)?);
    }
    Ok(cursors)
}

/// Formats the event id for the cursors a stream has seen (see [`parse_id`]).
pub(super) fn format_id(cursors: &BTreeMap<u64, Bytes>, single: bool) -> String {
    if single {
        if let Some(cursor) = cursors.values().next() {
            return URL_SAFE_NO_PAD.encode(cursor);
        }
    }
    let mut id = String::new();
    for (subscription, cursor) in cursors {
        if !id.is_empty() {
            id.push(',');
        }
        id.push_str(&subscription.to_string());
        id.push(':');
        id.push_str(&URL_SAFE_NO_PAD.encode(cursor));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_subscriptions_are_numbered_in_order_and_share_options() {
        let subs = Subscriptions::from_query(&pairs(&[
            ("table", "public.orders"),
            ("include_initial", "true"),
            ("topic", "prices"),
            ("columns", "id, item"),
            (
                "subscribe",
                r#"{"subscriptionId": "2", "topic": {"topic": "news"}}"#,
            ),
        ]))
        .expect("valid");
        let ids: Vec<_> = subs.subscribes.iter().map(|s| s.subscription_id).collect();
        assert_eq!(ids, [1, 3, 2]);
        let Some(pb::subscribe::Source::Table(table)) = &subs.subscribes[0].source else {
            panic!("a table feed");
        };
        assert!(table.include_initial);
        assert_eq!(table.columns, ["id", "item"]);
    }

    #[test]
    fn bad_queries_are_refused_with_validation_errors() {
        for query in [
            pairs(&[]),
            pairs(&[("table", "t"), ("colums", "a")]),
            pairs(&[("table", "t"), ("include_initial", "yes")]),
            pairs(&[("topic", "t"), ("min_interval_ms", "-1")]),
            pairs(&[("subscribe", "{not json")]),
            pairs(&[("topic", "t"), ("filter", r#"{"nope": 1}"#)]),
        ] {
            let refusal = Subscriptions::from_query(&query).expect_err("refused");
            assert_eq!(refusal.0.code(), Code::Validation, "{query:?}");
        }
    }

    #[test]
    fn event_ids_round_trip_through_last_event_id() {
        let subs =
            Subscriptions::from_query(&pairs(&[("topic", "a"), ("topic", "b")])).expect("valid");
        let cursors = BTreeMap::from([
            (1, Bytes::from_static(b"\x00\x01first")),
            (2, Bytes::from_static(b"second\xff")),
        ]);
        let id = format_id(&cursors, false);
        assert_eq!(parse_id(&id, &subs.subscribes).expect("parses"), cursors);

        let one = Subscriptions::from_query(&pairs(&[("topic", "a")])).expect("valid");
        let only = BTreeMap::from([(1, Bytes::from_static(b"\x00\x01first"))]);
        let id = format_id(&only, true);
        assert!(!id.contains(':'), "{id}");
        assert_eq!(parse_id(&id, &one.subscribes).expect("parses"), only);
        assert!(parse_id(&id, &subs.subscribes).is_err());
        assert!(parse_id("1:***", &subs.subscribes).is_err());
    }

    #[test]
    fn a_resume_without_a_cursor_for_a_subscription_leaves_it_out() {
        let mut subs =
            Subscriptions::from_query(&pairs(&[("topic", "a"), ("topic", "b")])).expect("valid");
        let id = format_id(&BTreeMap::from([(2, Bytes::from_static(b"c"))]), false);
        assert_eq!(subs.resume(&id).expect("resumes"), [1]);
        assert_eq!(subs.subscribes.len(), 1);
        assert_eq!(subs.subscribes[0].resume_from, Bytes::from_static(b"c"));
    }
}
