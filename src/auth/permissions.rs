//! May this principal do that: declarative grants from the configuration file, checked before a
//! subscribe or publish reaches a source. Pure: no I/O.
//!
//! A rule grants, to the principals holding one of its `roles`, `subscribe` on topic patterns and
//! table patterns and `publish` on topic patterns. Topic patterns use the routing syntax (`*` one
//! segment, `#` zero or more); table patterns are `schema.table` where `*` stands for any schema
//! or any table. Patterns may contain claim placeholders, `{sub}` or `{claims.tenant_id}`, filled
//! from the principal's token; a claim that is missing, not a string or number, or that contains
//! `.`, `*`, `#`, `>` or whitespace fills nothing, and the pattern then grants nothing (so a
//! crafted claim cannot widen a grant).
//!
//! A rule may bind its tables to a row filter (`row_filter = "tenant_id = {claims.tenant_id}"`,
//! see [`crate::row_filter`]): a subscription then sees only the rows the filter, filled from
//! the principal's claims, lets through. Grants add up: a table granted by a rule without a
//! filter is seen whole; granted by several filtered rules, a row is seen when any of their
//! filters lets it through. A filtered rule whose claims the token lacks grants nothing.
//!
//! Without any rule every principal may do everything (a server with no rules is an open one,
//! and says so at start-up); with rules, what no rule grants is denied. Role `*` matches every
//! principal, anonymous ones included; anonymous principals hold the role `anonymous`.

use serde_json::Value;

use super::Principal;
use crate::config::PermissionRule;
use crate::protocol::{Code, Failure};
use crate::row_filter::{Claims, FilterTemplate, ParseError, RowFilter};
use crate::topic_pattern::{matches_segments, overlap};

/// Which rows of a table a subscription may see.
#[derive(Debug, Clone, PartialEq)]
pub enum TableAccess {
    /// Every row.
    All,
    /// The rows this filter lets through.
    Rows(RowFilter),
}

/// What is being asked for.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Subscribe to a topic (or, where the backend allows it, a topic pattern).
    SubscribeTopic(&'a str),
    /// Publish to a topic.
    PublishTopic(&'a str),
    /// Subscribe to a table, named by its schema and table name as PostgreSQL stores them
    /// (resolved by the database: never the client's spelling).
    SubscribeTable {
        /// The schema.
        schema: &'a str,
        /// The table.
        table: &'a str,
    },
}

/// What a principal may do with the topics a routing pattern serves (for the catalog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteAccess {
    /// It may subscribe to every topic the pattern matches.
    pub subscribe_all: bool,
    /// It may subscribe to at least one of them.
    pub subscribe_some: bool,
    /// It may publish to at least one of them.
    pub publish_some: bool,
}

/// The configured rules.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    rules: Vec<PermissionRule>,
    /// Each rule's parsed row filter: `None` without one; `Some(Err)` for one that does not
    /// parse (configuration checks refuse those; should one get here, its rule grants no table).
    filters: Vec<Option<Result<FilterTemplate, ParseError>>>,
}

impl Permissions {
    /// Wraps the configured rules, parsing their row filters.
    pub fn new(rules: Vec<PermissionRule>) -> Self {
        let filters = rules
            .iter()
            .map(|rule| rule.row_filter.as_deref().map(FilterTemplate::parse))
            .collect();
        Self { rules, filters }
    }

    /// Which rows of `schema.table` (as PostgreSQL stores the names) `principal` may see, or
    /// `PERMISSION_DENIED` when it may not subscribe to the table at all.
    pub fn table_access(
        &self,
        principal: &Principal,
        schema: &str,
        table: &str,
    ) -> Result<TableAccess, Failure> {
        if self.is_open() {
            return Ok(TableAccess::All);
        }
        let action = Action::SubscribeTable { schema, table };
        let mut filters = Vec::new();
        let mut missing = None;
        for (rule, filter) in self.rules.iter().zip(&self.filters) {
            if !grants(rule, principal, action) {
                continue;
            }
            match filter {
                None => return Ok(TableAccess::All),
                Some(Err(_)) => {}
                Some(Ok(template)) => match template.fill(principal) {
                    Ok(filter) => filters.push(filter),
                    Err(unfilled) => missing = Some(unfilled.claim),
                },
            }
        }
        if !filters.is_empty() {
            return Ok(TableAccess::Rows(RowFilter::any(filters)));
        }
        let mut denied = denial(principal, action);
        if let Some(claim) = missing {
            denied.message = format!(
                "{} (its row filter needs the claim {claim}, which the token lacks or holds \
                 in a form that cannot be compared)",
                denied.message
            );
            denied = denied.detail("claim", claim);
        }
        Err(denied)
    }

    /// Whether any rule is configured (without rules everything is allowed).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// What `principal` may do with the topics routing `pattern` matches.
    pub fn route_access(&self, principal: &Principal, pattern: &str) -> RouteAccess {
        if self.is_open() {
            return RouteAccess {
                subscribe_all: true,
                subscribe_some: true,
                publish_some: true,
            };
        }
        let mut access = RouteAccess::default();
        for rule in &self.rules {
            if !applies(rule, principal) {
                continue;
            }
            let filled = |patterns: &[String]| -> Vec<String> {
                patterns
                    .iter()
                    .filter_map(|granted| fill(granted, principal))
                    .collect()
            };
            for granted in filled(&rule.subscribe_topics) {
                access.subscribe_all |= covers(&granted, pattern);
                access.subscribe_some |= overlap(&granted, pattern);
            }
            for granted in filled(&rule.publish_topics) {
                access.publish_some |= overlap(&granted, pattern);
            }
        }
        access
    }

    /// `Ok` when a rule grants `action` to `principal`; otherwise `PERMISSION_DENIED` naming
    /// what was denied.
    /// For tables this says only whether the principal may subscribe at all; which rows it may
    /// see is [`Self::table_access`]'s answer.
    pub fn check(&self, principal: &Principal, action: Action<'_>) -> Result<(), Failure> {
        if let Action::SubscribeTable { schema, table } = action {
            return self.table_access(principal, schema, table).map(|_| ());
        }
        if self.is_open()
            || self
                .rules
                .iter()
                .any(|rule| grants(rule, principal, action))
        {
            return Ok(());
        }
        Err(denial(principal, action))
    }
}

/// `PERMISSION_DENIED` naming who was denied what.
fn denial(principal: &Principal, action: Action<'_>) -> Failure {
    let (verb, kind, name) = match action {
        Action::SubscribeTopic(topic) => ("subscribe to", "topic", topic.to_string()),
        Action::PublishTopic(topic) => ("publish to", "topic", topic.to_string()),
        Action::SubscribeTable { schema, table } => {
            ("subscribe to", "table", format!("{schema}.{table}"))
        }
    };
    let who = principal.user.as_deref().unwrap_or("anonymous");
    Failure::new(
        Code::PermissionDenied,
        format!("{who} may not {verb} {kind} {name}"),
    )
    .detail(kind, name)
}

/// Whether `rule` is for one of `principal`'s roles.
fn applies(rule: &PermissionRule, principal: &Principal) -> bool {
    rule.roles
        .iter()
        .any(|role| role == "*" || principal.roles.iter().any(|r| r == role))
}

fn grants(rule: &PermissionRule, principal: &Principal, action: Action<'_>) -> bool {
    if !applies(rule, principal) {
        return false;
    }
    let patterns = match action {
        Action::SubscribeTopic(_) => &rule.subscribe_topics,
        Action::PublishTopic(_) => &rule.publish_topics,
        Action::SubscribeTable { .. } => &rule.subscribe_tables,
    };
    patterns
        .iter()
        .filter_map(|pattern| fill(pattern, principal))
        .any(|pattern| matches_action(&pattern, action))
}

/// Whether a filled pattern of the action's kind covers what the action names.
fn matches_action(pattern: &str, action: Action<'_>) -> bool {
    match action {
        Action::SubscribeTopic(topic) | Action::PublishTopic(topic) => covers(pattern, topic),
        Action::SubscribeTable { schema, table } => table_matches(pattern, schema, table),
    }
}

/// The pattern with its placeholders filled from the principal's claims; `None` when one cannot
/// be filled safely.
fn fill(pattern: &str, principal: &Principal) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let name = &rest[open + 1..close];
        let name = name.strip_prefix("claims.").unwrap_or(name);
        let value = match principal.claim(name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let unsafe_char =
            |c: char| matches!(c, '.' | '*' | '#' | '>' | '{' | '}') || c.is_whitespace();
        if value.is_empty() || value.contains(unsafe_char) {
            return None;
        }
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether every topic `requested` names (itself, or all it matches when it is a pattern) is
/// matched by `pattern`.
fn covers(pattern: &str, requested: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let requested: Vec<&str> = requested.split('.').collect();
    if !requested.iter().any(|s| *s == "*" || *s == "#") {
        return matches_segments(&pattern, &requested);
    }
    covers_segments(&pattern, &requested)
}

fn covers_segments(pattern: &[&str], requested: &[&str]) -> bool {
    match (pattern.split_first(), requested.split_first()) {
        (None, None) => true,
        (Some((&"#", rest)), _) => {
            covers_segments(rest, requested)
                || (!requested.is_empty() && covers_segments(pattern, &requested[1..]))
        }
        // A requested `#` matches any number of segments: only a pattern `#` covers that.
        (_, Some((&"#", _))) | (None, Some(_)) | (Some(_), None) => false,
        (Some((&p, p_rest)), Some((&r, r_rest))) => {
            (p == "*" || p == r) && covers_segments(p_rest, r_rest)
        }
    }
}

fn table_matches(pattern: &str, schema: &str, table: &str) -> bool {
    let Some((p_schema, p_table)) = pattern.split_once('.') else {
        return false;
    };
    (p_schema == "*" || p_schema == schema) && (p_table == "*" || p_table == table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(claims: Value) -> Principal {
        let claims = claims.as_object().expect("object").clone();
        Principal {
            user: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            tenant: None,
            roles: claims["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            claims,
            expires_at: None,
        }
    }

    fn seeds() -> Permissions {
        let rules: Vec<PermissionRule> = toml::from_str::<toml::Table>(
            r##"
            [[r]]
            roles = ["*"]
            subscribe_topics = ["public.#"]
            [[r]]
            roles = ["user"]
            subscribe_topics = ["user.{sub}.#"]
            publish_topics = ["user.{sub}.#"]
            subscribe_tables = ["public.products", "tenant_{claims.tenant_id}.*"]
            [[r]]
            roles = ["admin"]
            subscribe_topics = ["#"]
            publish_topics = ["#"]
            subscribe_tables = ["*.*"]
            "##,
        )
        .expect("toml")["r"]
            .clone()
            .try_into()
            .expect("rules");
        Permissions::new(rules)
    }

    #[test]
    fn users_own_their_topics_and_everyone_reads_public_ones() {
        let p = seeds();
        let alice = principal(json!({"sub": "alice", "roles": ["user"], "tenant_id": 7}));
        let anon = Principal::anonymous();
        assert!(p
            .check(&alice, Action::SubscribeTopic("user.alice.inbox"))
            .is_ok());
        assert!(p.check(&alice, Action::PublishTopic("user.alice")).is_ok());
        assert!(p
            .check(&alice, Action::SubscribeTopic("user.bob.inbox"))
            .is_err());
        assert!(p
            .check(&alice, Action::PublishTopic("public.news"))
            .is_err());
        assert!(p
            .check(&anon, Action::SubscribeTopic("public.news"))
            .is_ok());
        assert!(p
            .check(&anon, Action::SubscribeTopic("user.alice.inbox"))
            .is_err());
        let denied = p
            .check(&alice, Action::SubscribeTopic("user.bob.inbox"))
            .expect_err("denied");
        assert_eq!(denied.code, Code::PermissionDenied);
        assert!(
            denied.message.contains("user.bob.inbox"),
            "{}",
            denied.message
        );
    }

    #[test]
    fn wildcard_requests_need_a_pattern_that_covers_them() {
        let p = seeds();
        let alice = principal(json!({"sub": "alice", "roles": ["user"]}));
        assert!(p
            .check(&alice, Action::SubscribeTopic("user.alice.*"))
            .is_ok());
        assert!(p
            .check(&alice, Action::SubscribeTopic("user.alice.#"))
            .is_ok());
        assert!(p
            .check(&alice, Action::SubscribeTopic("user.*.inbox"))
            .is_err());
        assert!(p.check(&alice, Action::SubscribeTopic("user.#")).is_err());
        assert!(p.check(&alice, Action::SubscribeTopic("#")).is_err());
        let admin = principal(json!({"sub": "root", "roles": ["admin"]}));
        assert!(p.check(&admin, Action::SubscribeTopic("#")).is_ok());
    }

    #[test]
    fn crafted_claims_fill_nothing() {
        let p = seeds();
        for sub in ["*", "#", "a.b", "", "x y", "{sub}"] {
            let mallory = principal(json!({"sub": sub, "roles": ["user"]}));
            assert!(
                p.check(&mallory, Action::SubscribeTopic(&format!("user.{sub}.x")))
                    .is_err(),
                "{sub:?}"
            );
            assert!(
                p.check(&mallory, Action::SubscribeTopic("user.bob.x"))
                    .is_err(),
                "{sub:?}"
            );
        }
        let no_sub = principal(json!({"roles": ["user"]}));
        assert!(p.check(&no_sub, Action::SubscribeTopic("user..x")).is_err());
    }

    #[test]
    fn tables_match_their_stored_names() {
        let p = seeds();
        let t7 = principal(json!({"sub": "a", "roles": ["user"], "tenant_id": 7}));
        let table = |schema, table| Action::SubscribeTable { schema, table };
        assert!(p.check(&t7, table("public", "products")).is_ok());
        assert!(p.check(&t7, table("tenant_7", "orders")).is_ok());
        assert!(p.check(&t7, table("tenant_8", "orders")).is_err());
        assert!(p.check(&t7, table("public", "Products")).is_err());
        assert!(p.check(&t7, table("public", "orders")).is_err());
    }

    #[test]
    fn no_rules_means_open() {
        let open = Permissions::default();
        assert!(open
            .check(&Principal::anonymous(), Action::PublishTopic("anything"))
            .is_ok());
    }

    #[test]
    fn route_access_says_what_a_principal_may_do_under_a_pattern() {
        let permissions = seeds();
        let alice = principal(json!({"sub": "alice", "roles": ["user"]}));
        let access = |pattern| permissions.route_access(&alice, pattern);
        assert_eq!(
            access("user.*.#"),
            RouteAccess {
                subscribe_all: false,
                subscribe_some: true,
                publish_some: true,
            }
        );
        assert_eq!(
            access("public.#"),
            RouteAccess {
                subscribe_all: true,
                subscribe_some: true,
                publish_some: false,
            }
        );
        assert_eq!(access("orders.*"), RouteAccess::default());
        let admin = principal(json!({"sub": "root", "roles": ["admin"]}));
        assert!(permissions.route_access(&admin, "orders.*").subscribe_all);
        assert!(
            Permissions::default()
                .route_access(&alice, "#")
                .publish_some
        );
    }
}
