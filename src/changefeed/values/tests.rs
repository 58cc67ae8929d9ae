//! Tests of value conversion: hand-written edge cases, and every rule checked against the real
//! PostgreSQL's `to_jsonb` output.

use chrono::{DateTime, NaiveDate};
use sqlx::Connection;

use super::*;

fn json(text: &str) -> Json {
    serde_json::from_str(text).expect("test JSON parses")
}

fn micros_rfc3339(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .expect("test timestamp parses")
        .timestamp_micros()
}

fn micros_naive(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, us: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_micro_opt(h, min, s, us))
        .expect("test date is valid")
        .and_utc()
        .timestamp_micros()
}

fn days(y: i32, m: u32, d: u32) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let date = NaiveDate::from_ymd_opt(y, m, d).expect("test date is valid");
    i32::try_from((date - epoch).num_days()).expect("fits")
}

/// Like `==`, but NaN equals NaN.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) if x.is_nan() && y.is_nan() => true,
        _ => a == b,
    }
}

#[test]
fn regtype_names() {
    use ColumnType::*;
    for (name, ty) in [
        ("smallint", Int),
        ("integer", Int),
        ("bigint", Int),
        ("real", Double),
        ("double precision", Double),
        ("numeric", Numeric),
        ("numeric(10,2)", Numeric),
        ("bytea", Bytes),
        ("timestamp with time zone", Timestamp),
        ("timestamp(3) with time zone", Timestamp),
        ("timestamp without time zone", LocalTimestamp),
        ("date", Date),
        ("json", Json),
        ("jsonb", Json),
        ("integer[]", Json),
        ("text[]", Json),
        ("timestamp with time zone[]", Json),
        ("boolean", Other),
        ("text", Text),
        ("character varying", Text),
        ("character varying(10)", Text),
        ("character(3)", Other),
        ("uuid", Other),
        ("mood", Other),
        ("myschema.posint", Other),
        ("\"Integer\"", Other),
        ("oid", Other),
        ("", Other),
    ] {
        assert_eq!(ColumnType::from_regtype(name), ty, "{name}");
    }
}

#[test]
fn null_is_null_for_every_type() {
    use ColumnType::*;
    for ty in [
        Int,
        Double,
        Numeric,
        Bytes,
        Timestamp,
        LocalTimestamp,
        Date,
        Json,
        Other,
    ] {
        assert_eq!(convert(&ty, serde_json::Value::Null), Value::Null, "{ty:?}");
    }
}

#[test]
fn numbers_keep_their_digits() {
    let c = |ty, text| convert(&ty, json(text));
    assert_eq!(
        c(ColumnType::Int, "9223372036854775807"),
        Value::Int(i64::MAX)
    );
    assert_eq!(
        c(ColumnType::Int, "-9223372036854775808"),
        Value::Int(i64::MIN)
    );
    assert_eq!(
        c(ColumnType::Int, "9223372036854775808"),
        Value::Numeric("9223372036854775808".into())
    );
    assert_eq!(c(ColumnType::Int, "1.5"), Value::Numeric("1.5".into()));
    assert_eq!(
        c(ColumnType::Numeric, "12345678901234567890.000001"),
        Value::Numeric("12345678901234567890.000001".into())
    );
    assert_eq!(
        c(ColumnType::Numeric, "1.10"),
        Value::Numeric("1.10".into())
    );
    assert_eq!(
        c(ColumnType::Numeric, "\"NaN\""),
        Value::Numeric("NaN".into())
    );
    assert_eq!(
        c(ColumnType::Numeric, "\"-Infinity\""),
        Value::Numeric("-Infinity".into())
    );
    assert_eq!(c(ColumnType::Numeric, "\"abc\""), Value::Text("abc".into()));
    assert_eq!(c(ColumnType::Double, "0.1"), Value::Double(0.1));
    assert_eq!(
        c(ColumnType::Double, "\"Infinity\""),
        Value::Double(f64::INFINITY)
    );
    assert_eq!(
        c(ColumnType::Double, "\"-Infinity\""),
        Value::Double(f64::NEG_INFINITY)
    );
    assert!(matches!(c(ColumnType::Double, "\"NaN\""), Value::Double(d) if d.is_nan()));
    assert_eq!(c(ColumnType::Double, "\"nan\""), Value::Text("nan".into()));
    assert_eq!(c(ColumnType::Other, "42"), Value::Numeric("42".into()));
    assert_eq!(c(ColumnType::Int, "\"7\""), Value::Text("7".into()));
    assert_eq!(c(ColumnType::Int, "true"), Value::Bool(true));
}

#[test]
fn bytea_hex_or_text() {
    let c = |text| convert(&ColumnType::Bytes, json(text));
    assert_eq!(
        c(r#""\\x00ff10""#),
        Value::Bytes(vec![0, 0xff, 0x10].into())
    );
    assert_eq!(c(r#""\\x""#), Value::Bytes(Vec::new().into()));
    assert_eq!(c(r#""\\000\\377""#), Value::Text(r"\000\377".into()));
    assert_eq!(c(r#""\\x0""#), Value::Text(r"\x0".into()));
    assert_eq!(c(r#""\\xzz""#), Value::Text(r"\xzz".into()));
    assert_eq!(c("[1]"), Value::Json("[1]".into()));
}

#[test]
fn timestamps() {
    let tz = |s: &str| convert(&ColumnType::Timestamp, Json::String(s.into()));
    let local = |s: &str| convert(&ColumnType::LocalTimestamp, Json::String(s.into()));
    assert_eq!(
        tz("2024-05-01T16:04:56.123456+05:30"),
        Value::Timestamp(micros_rfc3339("2024-05-01T16:04:56.123456+05:30"))
    );
    assert_eq!(
        tz("2024-05-01T12:34:56.5-07"),
        Value::Timestamp(micros_rfc3339("2024-05-01T12:34:56.5-07:00"))
    );
    assert_eq!(
        tz("1800-01-01T05:53:28+05:53:28"),
        Value::Timestamp(micros_rfc3339("1800-01-01T00:00:00Z"))
    );
    assert_eq!(
        tz("1849-12-31T19:03:58-04:56:02"),
        Value::Timestamp(micros_rfc3339("1850-01-01T00:00:00Z"))
    );
    assert_eq!(
        tz("2024-05-01T00:00:00Z"),
        Value::Timestamp(micros_rfc3339("2024-05-01T00:00:00Z"))
    );
    assert_eq!(
        tz("0044-03-15T00:00:00+00:00 BC"),
        Value::Timestamp(micros_naive(-43, 3, 15, 0, 0, 0, 0))
    );
    assert_eq!(tz("infinity"), Value::Timestamp(i64::MAX));
    assert_eq!(tz("-infinity"), Value::Timestamp(i64::MIN));
    assert_eq!(local("infinity"), Value::LocalTimestamp(i64::MAX));
    assert_eq!(
        local("1969-12-31T23:59:59.999999"),
        Value::LocalTimestamp(-1)
    );
    assert_eq!(
        local("12345-01-01T00:00:00"),
        Value::LocalTimestamp(micros_naive(12345, 1, 1, 0, 0, 0, 0))
    );
    assert_eq!(
        local("294247-01-10T04:00:54.775806"),
        Value::LocalTimestamp(i64::MAX - 1)
    );
    for bad in [
        "294247-01-10T04:00:54.775807", // would read as infinity
        "294276-12-31T23:59:59.999999", // past i64
        "2024-05-01T12:00:00+02:00",    // offset on a local timestamp
        "2024-02-30T00:00:00",
        "2023-13-01T00:00:00",
        "2024-05-01T24:00:00",
        "2024-05-01T12:00:00.1234567",
        "2024-05-01 12:00:00",
        "0000-01-01T00:00:00 BC",
        "+2024-05-01T00:00:00",
        "",
        "T",
        "ünïcödé",
    ] {
        assert_eq!(local(bad), Value::Text(bad.into()), "{bad}");
    }
    for bad in [
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00+5",
        "2024-05-01T12:00:00+05:60",
        "2024-05-01T12:00:00+05:00:00:00",
        "2024-05-01T12:00:00+",
    ] {
        assert_eq!(tz(bad), Value::Text(bad.into()), "{bad}");
    }
    assert_eq!(
        convert(&ColumnType::Timestamp, json("1714566896")),
        Value::Numeric("1714566896".into())
    );
}

#[test]
fn dates() {
    let c = |s: &str| convert(&ColumnType::Date, Json::String(s.into()));
    assert_eq!(c("1970-01-01"), Value::Date(0));
    assert_eq!(c("2024-05-01"), Value::Date(days(2024, 5, 1)));
    assert_eq!(c("2000-02-29"), Value::Date(days(2000, 2, 29)));
    assert_eq!(c("1900-02-29"), Value::Text("1900-02-29".into()));
    assert_eq!(c("0044-03-15 BC"), Value::Date(days(-43, 3, 15)));
    assert_eq!(c("0001-02-29 BC"), Value::Date(days(0, 2, 29)));
    assert_eq!(c("infinity"), Value::Date(i32::MAX));
    assert_eq!(c("-infinity"), Value::Date(i32::MIN));
    assert_eq!(c("5874897-12-31"), Value::Date(2_145_042_905));
    assert_eq!(c("2024-5-1"), Value::Text("2024-5-1".into()));
}

/// No input panics: random strings made of the characters the parsers look at, and random
/// JSON shapes, through every column type.
#[test]
fn never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let alphabet: Vec<char> = "0123456789-+:.TZ BCxinfty\\é".chars().collect();
    let types = [
        ColumnType::Int,
        ColumnType::Double,
        ColumnType::Numeric,
        ColumnType::Bytes,
        ColumnType::Timestamp,
        ColumnType::LocalTimestamp,
        ColumnType::Date,
        ColumnType::Json,
        ColumnType::Other,
    ];
    for _ in 0..50_000 {
        let len = rng.random_range(0..32);
        let s: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        for ty in &types {
            convert(ty, Json::String(s.clone()));
        }
    }
    for text in ["1e999", "-0", "[]", "{}", "true", "\"\"", "1.5", "-1"] {
        for ty in &types {
            convert(ty, json(text));
        }
    }
}

/// The calendar arithmetic agrees with chrono across its range, AD and BC.
#[test]
fn civil_days_match_chrono() {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    for n in (-95_000_000_i64..95_000_000).step_by(997) {
        let date = epoch + chrono::Duration::days(n);
        let text = date.format("%m-%d").to_string();
        let year = chrono::Datelike::year(&date);
        let pg = if year > 0 {
            format!("{year:04}-{text}")
        } else {
            format!("{:04}-{text} BC", 1 - year)
        };
        assert_eq!(
            convert(&ColumnType::Date, Json::String(pg.clone())),
            Value::Date(n as i32),
            "{pg}"
        );
    }
}

#[test]
fn json_and_rows() {
    assert_eq!(
        convert(
            &ColumnType::Json,
            json(r#"{"b": [1, 2.50, 12345678901234567890123], "a": "x"}"#)
        ),
        Value::Json(r#"{"a":"x","b":[1,2.50,12345678901234567890123]}"#.into())
    );
    assert_eq!(
        convert(&ColumnType::Json, json(r#""s""#)),
        Value::Json(r#""s""#.into())
    );
    assert_eq!(
        convert(&ColumnType::Json, json("false")),
        Value::Json("false".into())
    );

    let types = HashMap::from([
        ("id".to_string(), ColumnType::Int),
        ("at".to_string(), ColumnType::Date),
    ]);
    let row = convert_row(
        &types,
        json(concat!(
            r#"{"id": 9007199254740993, "zeta": {"k": 1}, "#,
            r#""at": "2024-05-01", "added": 1.5, "b": "t"}"#
        )),
    );
    assert_eq!(
        row,
        vec![
            ("added".to_string(), Value::Numeric("1.5".into())),
            ("at".to_string(), Value::Date(days(2024, 5, 1))),
            ("b".to_string(), Value::Text("t".into())),
            ("id".to_string(), Value::Int(9_007_199_254_740_993)),
            ("zeta".to_string(), Value::Json(r#"{"k":1}"#.into())),
        ]
    );
    assert_eq!(convert_row(&types, Json::Null), Vec::new());
    assert_eq!(convert_row(&types, json("[1]")), Vec::new());
}

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs `SELECT to_jsonb(t), pg_typeof(t.c)::text FROM (SELECT <expr> AS c) t` and converts
/// it the way the changefeed does.
async fn through_postgres(conn: &mut sqlx::PgConnection, expr: &str) -> Result<Row, sqlx::Error> {
    let sql = format!("SELECT to_jsonb(t), pg_typeof(t.c)::text FROM (SELECT {expr} AS c) t");
    let (row, regtype): (Json, String) = sqlx::query_as(&sql).fetch_one(&mut *conn).await?;
    let types = HashMap::from([("c".to_string(), ColumnType::from_regtype(&regtype))]);
    Ok(convert_row(&types, row))
}

/// Every rule, against what PostgreSQL 15 really emits, with a non-UTC session TimeZone.
#[tokio::test]
async fn postgres_values_convert_exactly() {
    let mut conn = sqlx::PgConnection::connect(DATABASE_URL)
        .await
        .expect("connect to PostgreSQL at 127.0.0.1:5432");
    let schema = format!("values_test_{}", uuid::Uuid::new_v4().simple());
    for sql in [
        "SET TimeZone = 'Asia/Kolkata'".to_string(),
        format!("CREATE SCHEMA {schema}"),
        format!("CREATE TYPE {schema}.mood AS ENUM ('happy', 'sad')"),
        format!("CREATE DOMAIN {schema}.posint AS integer CHECK (VALUE > 0)"),
    ] {
        sqlx::query(&sql)
            .execute(&mut conn)
            .await
            .expect("setup statement");
    }

    let mood = format!("'happy'::{schema}.mood");
    let posint = format!("5::{schema}.posint");
    let ts = |s| Value::Timestamp(micros_rfc3339(s));
    let cases: Vec<(&str, Value)> = vec![
        ("1::smallint", Value::Int(1)),
        ("'-2147483648'::integer", Value::Int(i32::MIN.into())),
        ("9223372036854775807::bigint", Value::Int(i64::MAX)),
        ("'-9223372036854775808'::bigint", Value::Int(i64::MIN)),
        (
            "'12345678901234567890.000001'::numeric",
            Value::Numeric("12345678901234567890.000001".into()),
        ),
        (
            "'-123456789012345678901234567890.1234567890'::numeric",
            Value::Numeric("-123456789012345678901234567890.1234567890".into()),
        ),
        ("'1.1'::numeric(10,2)", Value::Numeric("1.10".into())),
        ("'NaN'::numeric", Value::Numeric("NaN".into())),
        ("'Infinity'::numeric", Value::Numeric("Infinity".into())),
        ("'-Infinity'::numeric", Value::Numeric("-Infinity".into())),
        ("1.5::double precision", Value::Double(1.5)),
        ("0.1::real", Value::Double(0.1)),
        ("'1.7976931348623157e308'::float8", Value::Double(f64::MAX)),
        ("'5e-324'::float8", Value::Double(5e-324)),
        ("'NaN'::float8", Value::Double(f64::NAN)),
        ("'Infinity'::float8", Value::Double(f64::INFINITY)),
        ("'-Infinity'::real", Value::Double(f64::NEG_INFINITY)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("'héllo \"q\"'::text", Value::Text("héllo \"q\"".into())),
        ("'ab'::varchar(5)", Value::Text("ab".into())),
        ("'a'::char(3)", Value::Text("a  ".into())),
        ("'a'::name", Value::Text("a".into())),
        (
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        (
            "'192.168.0.1/24'::inet",
            Value::Text("192.168.0.1/24".into()),
        ),
        (
            "'2 days 03:04:05'::interval",
            Value::Text("2 days 03:04:05".into()),
        ),
        ("'12:34:56.789'::time", Value::Text("12:34:56.789".into())),
        (
            "'12:34:56+05:30'::timetz",
            Value::Text("12:34:56+05:30".into()),
        ),
        ("12.34::money", Value::Text("$12.34".into())),
        ("1::oid", Value::Text("1".into())),
        (&mood, Value::Text("happy".into())),
        (&posint, Value::Numeric("5".into())),
        (
            "'\\x00ff0001ff'::bytea",
            Value::Bytes(vec![0, 0xff, 0, 1, 0xff].into()),
        ),
        ("''::bytea", Value::Bytes(Vec::new().into())),
        (
            "'2024-05-01 12:34:56.123456+02'::timestamptz",
            ts("2024-05-01T12:34:56.123456+02:00"),
        ),
        (
            "'1800-01-01 00:00:00+00'::timestamptz",
            ts("1800-01-01T00:00:00Z"),
        ),
        (
            "'0044-03-15 12:00:00+00 BC'::timestamptz",
            Value::Timestamp(micros_naive(-43, 3, 15, 12, 0, 0, 0)),
        ),
        ("'infinity'::timestamptz", Value::Timestamp(i64::MAX)),
        ("'-infinity'::timestamptz", Value::Timestamp(i64::MIN)),
        (
            "'2024-05-01 12:34:56.5'::timestamp",
            Value::LocalTimestamp(micros_naive(2024, 5, 1, 12, 34, 56, 500_000)),
        ),
        (
            "'1969-12-31 23:59:59.999999'::timestamp",
            Value::LocalTimestamp(-1),
        ),
        (
            "'0044-03-15 10:00:00 BC'::timestamp",
            Value::LocalTimestamp(micros_naive(-43, 3, 15, 10, 0, 0, 0)),
        ),
        ("'-infinity'::timestamp", Value::LocalTimestamp(i64::MIN)),
        (
            "'294247-01-10 04:00:54.775806'::timestamp",
            Value::LocalTimestamp(i64::MAX - 1),
        ),
        (
            "'294276-12-31 23:59:59.999999'::timestamp",
            Value::Text("294276-12-31T23:59:59.999999".into()),
        ),
        ("'2024-05-01'::date", Value::Date(days(2024, 5, 1))),
        ("'1969-12-31'::date", Value::Date(-1)),
        ("'4713-01-01 BC'::date", Value::Date(-2_440_550)),
        ("'5874897-12-31'::date", Value::Date(2_145_042_905)),
        ("'infinity'::date", Value::Date(i32::MAX)),
        ("'-infinity'::date", Value::Date(i32::MIN)),
        (
            "'{\"b\": [1, 2.50], \"a\": null, \"b\": 3}'::json",
            Value::Json(r#"{"a":null,"b":3}"#.into()),
        ),
        (
            "'{\"k\": 12345678901234567890123.5, \"s\": \"x\"}'::jsonb",
            Value::Json(r#"{"k":12345678901234567890123.5,"s":"x"}"#.into()),
        ),
        ("'\"str\"'::jsonb", Value::Json(r#""str""#.into())),
        ("'null'::jsonb", Value::Null),
        ("ARRAY[1, NULL, 3]::int[]", Value::Json("[1,null,3]".into())),
        (
            "ARRAY['a', 'b\"c']::text[]",
            Value::Json(r#"["a","b\"c"]"#.into()),
        ),
        ("'{}'::int[]", Value::Json("[]".into())),
        ("NULL::integer", Value::Null),
        ("NULL::timestamptz", Value::Null),
        ("NULL::bytea", Value::Null),
        ("NULL::jsonb", Value::Null),
    ];

    let mut failures = Vec::new();
    for (expr, expected) in &cases {
        match through_postgres(&mut conn, expr).await {
            Ok(row) => match row.as_slice() {
                [(name, value)] if name == "c" && same(value, expected) => {}
                _ => failures.push(format!("{expr}: got {row:?}, want {expected:?}")),
            },
            Err(e) => failures.push(format!("{expr}: {e}")),
        }
    }

    // The regtype spellings of a real table's columns, as the changefeed reads them.
    let table = format!("{schema}.t");
    let setup = [
        format!(
            "CREATE TABLE {table} (id bigint, amount numeric(12,2), name varchar(10), \
             at timestamp(3) with time zone, feeling {schema}.mood, tags text[])"
        ),
        format!(
            "INSERT INTO {table} VALUES \
             (-1, 12.5, 'n', '2024-05-01 00:00:00.1239Z', 'sad', '{{a}}')"
        ),
    ];
    for sql in &setup {
        if let Err(e) = sqlx::query(sql).execute(&mut conn).await {
            failures.push(format!("{sql}: {e}"));
        }
    }
    let types: Result<Vec<(String, String)>, _> = sqlx::query_as(
        "SELECT attname::text, atttypid::regtype::text FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .bind(&table)
    .fetch_all(&mut conn)
    .await;
    let row: Result<Json, _> = sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t"))
        .fetch_one(&mut conn)
        .await;
    match (types, row) {
        (Ok(types), Ok(row)) => {
            let types = types
                .into_iter()
                .map(|(name, regtype)| (name, ColumnType::from_regtype(&regtype)))
                .collect();
            let want = vec![
                ("amount".to_string(), Value::Numeric("12.50".into())),
                ("at".to_string(), ts("2024-05-01T00:00:00.124Z")),
                ("feeling".to_string(), Value::Text("sad".into())),
                ("id".to_string(), Value::Int(-1)),
                ("name".to_string(), Value::Text("n".into())),
                ("tags".to_string(), Value::Json(r#"["a"]"#.into())),
            ];
            let got = convert_row(&types, row);
            if got != want {
                failures.push(format!("table row: got {got:?}, want {want:?}"));
            }
        }
        (types, row) => failures.push(format!("table queries: {types:?} {row:?}")),
    }

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .expect("drop the test schema");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Dates and timestamps agree with PostgreSQL's own epoch arithmetic, across zones,
/// local mean time offsets, BC and years past 9999.
#[tokio::test]
async fn postgres_epochs_agree() {
    let mut conn = sqlx::PgConnection::connect(DATABASE_URL)
        .await
        .expect("connect to PostgreSQL at 127.0.0.1:5432");
    let values = [
        "2024-05-01 12:34:56.123456",
        "1970-01-01 00:00:00",
        "1969-07-20 20:17:40.000001",
        "1900-01-01 00:00:00",
        "1800-03-01 12:00:00",
        "1582-10-10 00:00:00",
        "0001-01-01 00:00:00",
        "0001-12-31 23:59:59.999999 BC",
        "0044-03-15 10:00:00 BC",
        "4713-01-01 00:00:00 BC",
        "2000-02-29 23:59:59.5",
        "12345-06-07 08:09:10.11",
        "200000-01-01 00:00:00",
    ];
    let mut failures = Vec::new();
    for zone in [
        "UTC",
        "Asia/Kolkata",
        "America/New_York",
        "Europe/Amsterdam",
        "Asia/Kathmandu",
    ] {
        sqlx::query(&format!("SET TimeZone = '{zone}'"))
            .execute(&mut conn)
            .await
            .expect("set TimeZone");
        for value in values {
            for (ty, column_type) in [
                ("timestamptz", ColumnType::Timestamp),
                ("timestamp", ColumnType::LocalTimestamp),
                ("date", ColumnType::Date),
            ] {
                let want = if ty == "date" {
                    format!("'{value}'::date - '1970-01-01'::date")
                } else {
                    format!("(extract(epoch FROM '{value}'::{ty}) * 1000000)::bigint")
                };
                let sql = format!("SELECT to_jsonb('{value}'::{ty}), ({want})::bigint");
                let result: Result<(Json, i64), _> =
                    sqlx::query_as(&sql).fetch_one(&mut conn).await;
                let (json, want) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{sql}: {e}"));
                        continue;
                    }
                };
                let want = match column_type {
                    ColumnType::Timestamp => Value::Timestamp(want),
                    ColumnType::LocalTimestamp => Value::LocalTimestamp(want),
                    _ => Value::Date(i32::try_from(want).expect("date fits")),
                };
                let got = convert(&column_type, json.clone());
                if got != want {
                    failures.push(format!("{zone} {ty} {json}: got {got:?}, want {want:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
