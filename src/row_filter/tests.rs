use serde_json::json;

use std::cmp::Ordering;

use super::eval::decimal_cmp;
use super::*;
use crate::protocol::{pb, Value};

fn principal(claims: Json) -> serde_json::Map<String, Json> {
    claims.as_object().expect("object").clone()
}

fn filter(text: &str, claims: Json) -> RowFilter {
    FilterTemplate::parse(text)
        .expect("parses")
        .fill(&principal(claims))
        .expect("fills")
}

fn row(columns: &[(&str, Value)]) -> Row {
    let mut row: Row = columns
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    row.sort_by(|a, b| a.0.cmp(&b.0));
    row
}

#[test]
fn tenant_equality_with_a_string_claim_matches_an_integer_column() {
    let f = filter("tenant_id = {claims.tenant_id}", json!({"tenant_id": "42"}));
    assert!(f.matches(&row(&[("tenant_id", Value::Int(42))])));
    assert!(!f.matches(&row(&[("tenant_id", Value::Int(43))])));
    assert!(!f.matches(&row(&[("tenant_id", Value::Null)])));
    assert!(
        !f.matches(&row(&[("other", Value::Int(42))])),
        "missing column is NULL"
    );
    let f = filter("tenant_id = {tenant_id}", json!({"tenant_id": 42}));
    assert!(f.matches(&row(&[("tenant_id", Value::Int(42))])));
}

#[test]
fn a_claim_that_is_not_a_number_never_equals_an_integer_column() {
    let f = filter("tenant_id = {claims.t}", json!({"t": "42 or 1=1"}));
    assert!(!f.matches(&row(&[("tenant_id", Value::Int(42))])));
    let f = filter("tenant_id != {claims.t}", json!({"t": "x"}));
    assert!(
        !f.matches(&row(&[("tenant_id", Value::Int(42))])),
        "unknown, not true"
    );
}

#[test]
fn missing_null_object_or_array_claims_leave_the_template_unfilled() {
    let t = FilterTemplate::parse("tenant_id = {claims.tenant_id}").expect("parses");
    for claims in [
        json!({}),
        json!({"tenant_id": null}),
        json!({"tenant_id": {"a": 1}}),
        json!({"tenant_id": [1, 2]}),
    ] {
        assert_eq!(
            t.fill(&principal(claims.clone())),
            Err(Unfilled {
                claim: "tenant_id".into()
            }),
            "{claims}"
        );
    }
}

#[test]
fn in_accepts_lists_and_array_claims() {
    let f = filter(
        "project in {claims.projects}",
        json!({"projects": ["a", "b"]}),
    );
    assert!(f.matches(&row(&[("project", Value::Text("b".into()))])));
    assert!(!f.matches(&row(&[("project", Value::Text("c".into()))])));
    let f = filter("id not in (1, 2, {x})", json!({"x": 3}));
    assert!(f.matches(&row(&[("id", Value::Int(4))])));
    assert!(!f.matches(&row(&[("id", Value::Int(3))])));
    assert!(!f.matches(&row(&[("id", Value::Null)])));
    let t = FilterTemplate::parse("p in {claims.ps}").expect("parses");
    assert!(t.fill(&principal(json!({"ps": [{"a": 1}]}))).is_err());
}

#[test]
fn and_or_parentheses_and_null_tests() {
    let f = filter(
        "(owner = {sub} or public = true) and deleted_at is null",
        json!({"sub": "alice"}),
    );
    let r = |owner: &str, public: bool, deleted: Value| {
        row(&[
            ("owner", Value::Text(owner.into())),
            ("public", Value::Bool(public)),
            ("deleted_at", deleted),
        ])
    };
    assert!(f.matches(&r("alice", false, Value::Null)));
    assert!(f.matches(&r("bob", true, Value::Null)));
    assert!(!f.matches(&r("bob", false, Value::Null)));
    assert!(!f.matches(&r("alice", false, Value::Timestamp(1))));
    assert_eq!(f.columns(), vec!["deleted_at", "owner", "public"]);
}

#[test]
fn orderings_by_column_kind() {
    let f = filter("amount >= 10.5 and amount < 1e2", json!({}));
    assert!(f.matches(&row(&[("amount", Value::Numeric("10.50".into()))])));
    assert!(f.matches(&row(&[("amount", Value::Numeric("99.999".into()))])));
    assert!(!f.matches(&row(&[("amount", Value::Numeric("100".into()))])));
    assert!(!f.matches(&row(&[("amount", Value::Numeric("-11".into()))])));
    assert!(!f.matches(&row(&[("amount", Value::Numeric("NaN".into()))])));
    assert!(f.matches(&row(&[("amount", Value::Int(50))])));
    assert!(f.matches(&row(&[("amount", Value::Double(10.5))])));
    let f = filter("big = 9223372036854775807", json!({}));
    assert!(f.matches(&row(&[("big", Value::Int(i64::MAX))])));
    assert!(!f.matches(&row(&[("big", Value::Int(i64::MAX - 1))])));
    let f = filter("x > 9223372036854775807", json!({}));
    assert!(!f.matches(&row(&[("x", Value::Int(i64::MAX))])));
    assert!(f.matches(&row(&[("x", Value::Numeric("9223372036854775808".into()))])));
    let f = filter("at >= '2024-05-01T00:00:00+00:00'", json!({}));
    assert!(f.matches(&row(&[("at", Value::Timestamp(1_714_521_600_000_000))])));
    assert!(!f.matches(&row(&[("at", Value::Timestamp(1_714_521_599_999_999))])));
    let f = filter("name < 'b'", json!({}));
    assert!(f.matches(&row(&[("name", Value::Text("abc".into()))])));
    assert!(!f.matches(&row(&[("name", Value::Text("b".into()))])));
}

#[test]
fn decimals_compare_exactly() {
    let cmp = |a, b| decimal_cmp(a, b).expect("decimals");
    assert_eq!(cmp("0.05", "5e-2"), Ordering::Equal);
    assert_eq!(cmp("-0", "0.000"), Ordering::Equal);
    assert_eq!(cmp("-2", "-10"), Ordering::Greater);
    assert_eq!(
        cmp("100000000000000000001", "100000000000000000000"),
        Ordering::Greater
    );
    assert_eq!(cmp("Infinity", "1e300"), Ordering::Greater);
    assert_eq!(cmp("NaN", "Infinity"), Ordering::Greater);
    assert_eq!(cmp("-Infinity", "-1e300"), Ordering::Less);
    assert_eq!(decimal_cmp("1x", "1"), None);
}

#[test]
fn a_claim_cannot_inject_syntax() {
    // The claim is a value, never parsed: it cannot add an `or`.
    let f = filter("tenant = {claims.t}", json!({"t": "a' or '1'='1"}));
    assert!(!f.matches(&row(&[("tenant", Value::Text("a".into()))])));
    assert!(f.matches(&row(&[("tenant", Value::Text("a' or '1'='1".into()))])));
}

#[test]
fn column_names_fold_like_sql_unless_quoted() {
    let f = filter("Tenant_ID = 1 and \"Mixed\" = 2", json!({}));
    assert_eq!(f.columns(), vec!["Mixed", "tenant_id"]);
}

#[test]
fn parse_errors_say_where() {
    for (text, at) in [
        ("", 0),
        ("tenant_id", 9),
        ("tenant_id = ", 12),
        ("tenant_id = null", 12),
        ("a = 1 b = 2", 6),
        ("a = 'x", 4),
        ("a = {claims.}", 4),
        ("(a = 1", 6),
        ("a not = 1", 6),
        ("a = 1.", 4),
        ("a = 1 and", 9),
        ("a ~ 1", 2),
        ("and = 1", 0),
    ] {
        let err = FilterTemplate::parse(text).expect_err(text);
        assert_eq!(err.at, at, "{text}: {err}");
    }
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(FilterTemplate::parse(&deep).is_err());
    let ok = format!("{}a = 1{}", "(".repeat(20), ")".repeat(20));
    assert!(FilterTemplate::parse(&ok).is_ok());
}

#[test]
fn union_of_rules() {
    let a = filter("tenant_id = 1", json!({}));
    let b = filter("owner = 'alice'", json!({}));
    let f = RowFilter::any(vec![a, b]);
    assert!(f.matches(&row(&[
        ("tenant_id", Value::Int(1)),
        ("owner", Value::Text("x".into()))
    ])));
    assert!(f.matches(&row(&[
        ("tenant_id", Value::Int(2)),
        ("owner", Value::Text("alice".into()))
    ])));
    assert!(!f.matches(&row(&[
        ("tenant_id", Value::Int(2)),
        ("owner", Value::Text("x".into()))
    ])));
}

#[test]
fn sql_prefilters_translate_only_what_they_can_match_exactly() {
    let kinds = |name: &str| match name {
        "tenant_id" | "n" => Some(SqlColumn::Integer),
        "region" | "we\"ird" => Some(SqlColumn::Text),
        _ => None,
    };
    let sql = |text: &str, claims: Json| filter(text, claims).sql_prefilter(&kinds);
    assert_eq!(
        sql("tenant_id = {claims.t}", json!({"t": "42"})),
        ("r.\"tenant_id\" = $1::int8".into(), vec![SqlParam::Int(42)])
    );
    // A claim that is no integer cannot be pushed down (matches decides, exactly).
    assert_eq!(sql("tenant_id = {t}", json!({"t": "4.0"})).0, "TRUE");
    assert_eq!(
        sql(
            "region in {claims.r} and n >= 3 and other = 1",
            json!({"r": ["eu", "us"]})
        ),
        (
            "(r.\"region\" = ANY($1::text[]) AND r.\"n\" >= $2::int8)".into(),
            vec![
                SqlParam::Texts(vec!["eu".into(), "us".into()]),
                SqlParam::Int(3)
            ]
        )
    );
    // One untranslatable branch makes an OR prune nothing, and its parameters are dropped.
    assert_eq!(
        sql("tenant_id = 1 or other = 2", json!({})),
        ("TRUE".into(), vec![])
    );
    assert_eq!(
        sql(
            "(tenant_id = 1 or region = 'eu') and n is not null",
            json!({})
        )
        .0,
        "((r.\"tenant_id\" = $1::int8 OR r.\"region\" = $2::text) AND r.\"n\" IS NOT NULL)"
    );
    // Text ordering follows bytes in `matches` but a collation in SQL: not pushed down.
    assert_eq!(sql("region < 'm'", json!({})).0, "TRUE");
    assert_eq!(sql("n not in (1)", json!({})).0, "TRUE");
    assert_eq!(
        sql("\"we\"\"ird\" = 'x'", json!({})).0,
        "r.\"we\"\"ird\" = $1::text"
    );
}

#[test]
fn an_empty_any_of_prefilters_as_false_and_an_empty_all_of_as_nothing() {
    let empty = |node: pb::filter::Node| {
        RowFilter::from_client(&pb::Filter { node: Some(node) })
            .expect("valid")
            .sql_prefilter(&|_| Some(SqlColumn::Integer))
            .0
    };
    assert_eq!(
        empty(pb::filter::Node::AnyOf(pb::Filters::default())),
        "FALSE"
    );
    assert_eq!(
        empty(pb::filter::Node::AllOf(pb::Filters::default())),
        "TRUE"
    );
    let any_none = RowFilter::from_client(&pb::Filter {
        node: Some(pb::filter::Node::AnyOf(pb::Filters::default())),
    })
    .expect("valid");
    assert!(!any_none.matches(&row(&[("a", Value::Int(1))])));
}

/// The form [`RowFilter::required`] lists a row value under, if any.
fn required_form(value: &Value) -> Option<Required> {
    match value {
        Value::Int(n) => Some(Required::Int(*n)),
        Value::Text(t) => Some(Required::Text(t.clone())),
        _ => None,
    }
}

#[test]
fn required_values_list_every_row_value_the_filter_finds_equal() {
    let literals = [
        "'42'",
        "' 42'",
        "'042'",
        "'+42'",
        "'42.0'",
        "'4.2e1'",
        "'abc'",
        "''",
        "'-7'",
        "'9223372036854775808'",
        "'NaN'",
        "'true'",
        "42",
        "-7",
        "42.0",
        "0",
    ];
    let values = [
        Value::Int(42),
        Value::Int(-7),
        Value::Int(0),
        Value::Text("42".into()),
        Value::Text(" 42".into()),
        Value::Text("042".into()),
        Value::Text("abc".into()),
        Value::Text(String::new()),
        Value::Text("42.0".into()),
        Value::Numeric("42".into()),
        Value::Null,
    ];
    let mut routed = 0;
    for literal in literals {
        for text in [
            format!("c = {literal}"),
            format!("c in ({literal}, 'zz') and d = 1"),
        ] {
            let f = filter(&text, json!({}));
            let required = f.required();
            if let Some((column, _)) = &required {
                assert!(*column == "c" || *column == "d", "{text}: {column}");
                routed += 1;
            }
            for value in &values {
                let r = row(&[("c", value.clone()), ("d", Value::Int(1))]);
                if !f.matches(&r) {
                    continue;
                }
                let Some((column, forms)) = &required else {
                    continue; // asked of every row
                };
                let held = if *column == "c" {
                    value
                } else {
                    &Value::Int(1)
                };
                // A value of another kind is offered to every subscriber (fence::probe).
                if let Some(form) = required_form(held) {
                    assert!(
                        forms.contains(&form),
                        "{text} matches {value:?}, but routes only {forms:?}"
                    );
                }
            }
        }
    }
    assert!(routed > 20, "most of these are routed: {routed}");
}

#[test]
fn required_takes_the_narrowest_top_level_equality_and_nothing_under_or_or_not() {
    let f = filter("a in (1, 2, 3) and (b = 'x' and c > 1)", json!({}));
    let (column, forms) = f.required().expect("routed");
    assert_eq!(column, "b");
    assert_eq!(forms, [Required::Text("x".into())]);
    for text in [
        "a = 1 or b = 2",
        "a != 1",
        "a not in (1, 2)",
        "a > 1",
        "a = 1.5",
        "a is null",
        "a = true",
    ] {
        assert_eq!(filter(text, json!({})).required(), None, "{text}");
    }
    let all = RowFilter::all(vec![
        filter("tenant = {claims.t}", json!({"t": 7})),
        filter("status in ('open', 'held')", json!({})),
    ]);
    let (column, forms) = all.required().expect("routed");
    assert_eq!(column, "tenant");
    assert_eq!(forms, [Required::Int(7), Required::Text("7".into())]);
}
