//! The text-form readers on tricky input, the number rules, and conversion of garbage (an
//! error, never a panic). PostgreSQL's own verdicts are in `oracle.rs`.

use proptest::prelude::*;
use serde_json::json;

use super::number::canonical;
use super::text_form::{array_items, record_fields, ArrayItem};
use super::*;

fn text(s: &str) -> ArrayItem {
    ArrayItem::Text(s.into())
}

#[test]
fn arrays_read_as_array_out_writes_them() {
    use ArrayItem::{Nested, Null};
    assert_eq!(array_items("{}", ','), Ok(vec![]));
    assert_eq!(
        array_items("{1,NULL,3}", ','),
        Ok(vec![text("1"), Null, text("3")])
    );
    assert_eq!(
        array_items(r#"{"a\"b","c\\d","NULL",null,""," x ","{",",","}"}"#, ','),
        Ok(vec![
            text("a\"b"),
            text("c\\d"),
            text("NULL"),
            Null,
            text(""),
            text(" x "),
            text("{"),
            text(","),
            text("}"),
        ])
    );
    assert_eq!(
        array_items("[2:3][1:1]={{1},{2}}", ','),
        Ok(vec![Nested(vec![text("1")]), Nested(vec![text("2")])])
    );
    assert_eq!(
        array_items("[0:1]={1,2}", ','),
        Ok(vec![text("1"), text("2")])
    );
    assert_eq!(
        array_items("{(3,4),(1,2);(7,8),(5,6)}", ';'),
        Ok(vec![text("(3,4),(1,2)"), text("(7,8),(5,6)")])
    );
    // What array_in also accepts: space around elements, escapes outside quotes.
    assert_eq!(
        array_items(" { a b , \\NULL,x\\ } ", ','),
        Ok(vec![text("a b"), text("NULL"), text("x ")])
    );
    assert_eq!(
        array_items(r#"{"(1,\"a b\")","(2,)",NULL}"#, ','),
        Ok(vec![text("(1,\"a b\")"), text("(2,)"), Null])
    );
}

#[test]
fn malformed_arrays_are_errors() {
    for bad in [
        "",
        "{",
        "}",
        "{1,2",
        "{1,,2}",
        "{,}",
        "{\"a}",
        "{1}x",
        "{{1},2",
        "{a\"b}",
        "{a{b}",
        "[1:2]{1,2}",
        "[x]={1}",
        "{{{{{{{1}}}}}}}",
        "{1\\",
        "1,2",
    ] {
        assert!(array_items(bad, ',').is_err(), "{bad:?} read as an array");
    }
    assert!(
        array_items("{{{{{{1}}}}}}", ',').is_ok(),
        "six dimensions are allowed"
    );
}

#[test]
fn records_read_as_record_out_writes_them() {
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        record_fields("(1,\"b c\",)"),
        Ok(vec![some("1"), some("b c"), None])
    );
    assert_eq!(record_fields("(,)"), Ok(vec![None, None]));
    assert_eq!(record_fields("()"), Ok(vec![None]));
    assert_eq!(record_fields("(\"\")"), Ok(vec![some("")]));
    assert_eq!(
        record_fields(r#"(2,"q""uo\\te,(x)",null)"#),
        Ok(vec![some("2"), some("q\"uo\\te,(x)"), some("null")])
    );
    assert_eq!(
        record_fields(r#"(1,"(2,""in""""ner"",,)")"#),
        Ok(vec![some("1"), some(r#"(2,"in""ner",,)"#)])
    );
    assert_eq!(record_fields("(a\\,b)"), Ok(vec![some("a,b")]));
    for bad in [
        "", "(", "(1", "1)", "(1,\"x)", "(1)x", "(\\", "(\"a\"\"", "x(1)",
    ] {
        assert!(record_fields(bad).is_err(), "{bad:?} read as a composite");
    }
}

#[test]
fn numbers_read_as_numeric_in_reads_them() {
    for (text, want) in [
        ("0", Some("0")),
        ("-0", Some("0")),
        ("-0.00", Some("0.00")),
        ("0.0e3", Some("0")),
        ("1e2", Some("100")),
        ("1.5E+2", Some("150")),
        ("1.5e-07", Some("0.00000015")),
        ("1e-2", Some("0.01")),
        ("123.456e1", Some("1234.56")),
        ("-2.50", Some("-2.50")),
        ("12345678901234567890", Some("12345678901234567890")),
        ("NaN", None),
        ("Infinity", None),
        ("-Infinity", None),
        ("01", None),
        ("1.", None),
        (".5", None),
        ("1e", None),
        ("+1", None),
        ("", None),
        ("-", None),
    ] {
        assert_eq!(canonical(text), Ok(want.map(String::from)), "{text:?}");
    }
    assert_eq!(
        canonical("1e300").map(|d| d.map(|d| d.len())),
        Ok(Some(301))
    );
    assert_eq!(
        canonical("5e-324").map(|d| d.map(|d| d.len())),
        Ok(Some(326))
    );
    assert!(canonical("1e131071").is_ok());
    for huge in [
        "1e131072",
        "1e-16384",
        "1e99999999999999999999999",
        "1e-99999999999999999999",
    ] {
        assert_eq!(canonical(huge), Err(ValueError::NumberOutOfRange), "{huge}");
    }
}

#[test]
fn timestamps_take_to_jsonb_form() {
    assert_eq!(
        timestamp("2024-05-01 16:04:56.5", false).as_deref(),
        Ok("2024-05-01T16:04:56.5")
    );
    assert_eq!(
        timestamp("0044-03-15 10:00:00+00 BC", true).as_deref(),
        Ok("0044-03-15T10:00:00+00:00 BC")
    );
    assert_eq!(
        timestamp("2024-05-01 16:04:56-04:56:02", true).as_deref(),
        Ok("2024-05-01T16:04:56-04:56:02")
    );
    assert_eq!(timestamp("infinity", true).as_deref(), Ok("infinity"));
    for bad in [
        "",
        "2024-05-01",
        "2024-05-01 16:04:56",
        "2024-05-01 x+00",
        "2024-05-01 16:00+",
    ] {
        assert!(timestamp(bad, true).is_err(), "{bad:?}");
    }
}

/// A catalog of the built-in types the garbage test uses, without a server.
fn builtin_catalog() -> TypeCatalog {
    let mut types = HashMap::new();
    for (oid, kind) in [
        (16, Kind::Bool),
        (23, Kind::Number),
        (701, Kind::Number),
        (3802, Kind::Json),
        (1114, Kind::Timestamp),
        (1184, Kind::TimestampTz),
        (25, Kind::Text),
        (
            1007,
            Kind::Array {
                element: 23,
                delimiter: ',',
            },
        ),
        (
            1009,
            Kind::Array {
                element: 25,
                delimiter: ',',
            },
        ),
        (
            1020,
            Kind::Array {
                element: 603,
                delimiter: ';',
            },
        ),
        (603, Kind::Text),
        (22, Kind::Vector { element: 21 }),
        (21, Kind::Number),
        (
            90_000,
            Kind::Composite {
                fields: vec![("a".into(), 23), ("b".into(), 90_001)],
            },
        ),
        (
            90_001,
            Kind::Composite {
                fields: vec![("x".into(), 1009), ("y".into(), 3802)],
            },
        ),
        (
            90_002,
            Kind::Array {
                element: 90_000,
                delimiter: ',',
            },
        ),
        (90_003, Kind::Domain { base: 90_002 }),
        (90_004, Kind::Domain { base: 90_004 }),
    ] {
        types.insert(oid, kind);
    }
    TypeCatalog { types }
}

#[test]
fn nested_values_convert() {
    let catalog = builtin_catalog();
    assert_eq!(
        catalog.to_json(
            90_003,
            r#"{"(1,\"(\"\"{a,NULL}\"\",\"\"{\"\"\"\"k\"\"\"\": 10}\"\")\")",NULL,"(,)"}"#
        ),
        Ok(
            json!([{"a": 1, "b": {"x": ["a", null], "y": {"k": 10}}}, null, {"a": null, "b": null}])
        )
    );
    assert_eq!(catalog.to_json(22, "1 2"), Ok(json!([1, 2])));
    assert_eq!(catalog.to_json(22, ""), Ok(json!([])));
    assert_eq!(catalog.to_json(90_004, "1"), Err(ValueError::TooDeep));
    assert_eq!(catalog.to_json(1, "1"), Err(ValueError::UnknownType(1)));
    assert_eq!(
        catalog.to_json(90_000, "(1)"),
        Err(ValueError::FieldCount { got: 1, want: 2 })
    );
    assert!(catalog.to_json(16, "true").is_err());
    assert!(catalog.to_json(23, "1x").is_ok_and(|j| j == json!("1x")));
}

proptest! {
    #[test]
    fn garbage_is_an_error_not_a_panic(text in r#"[{}()\[\]:=",\\ a0-9.eE+\-NUL;T]{0,40}"#) {
        let catalog = builtin_catalog();
        for oid in [16, 23, 701, 3802, 1114, 1184, 25, 1007, 1009, 1020, 22, 90_000, 90_002, 90_003] {
            let _ = catalog.to_json(oid, &text);
        }
    }

    #[test]
    fn any_string_is_an_error_not_a_panic(text in any::<String>()) {
        let catalog = builtin_catalog();
        for oid in [16, 23, 3802, 1184, 1009, 22, 90_000, 90_003] {
            let _ = catalog.to_json(oid, &text);
        }
    }
}
