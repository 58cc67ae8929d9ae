//! PostgreSQL as the oracle: a table with a column of every type the Values table and the
//! design name, filled with edge values; each value's text form (its type's output function,
//! as pgoutput sends it, in a session pinned like the replication session) must convert to
//! exactly what `to_jsonb` gives. Runs in a scratch database of its own on the machine's
//! server, dropped at the end.

use serde_json::Value as Json;
use sqlx::{Connection, PgConnection};

use super::{TypeCatalog, ValueError};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The session the leader's replication connection pins.
const PINNED: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; \
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

const SETUP: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s "complicated"');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE DOMAIN label2 AS label;
CREATE DOMAIN intlist AS integer[];
CREATE TYPE inner_t AS (x int, y text, j jsonb, f float8);
CREATE TYPE outer_t AS (id int, gone int, inner_v inner_t, tags text[], at timestamptz);
ALTER TYPE outer_t DROP ATTRIBUTE gone;
ALTER TYPE outer_t ADD ATTRIBUTE later bool;
CREATE DOMAIN outer_d AS outer_t;
CREATE TYPE single_t AS (only_one text);
CREATE TYPE empty_t AS ();
CREATE TYPE casted AS ENUM ('a', 'b');
CREATE FUNCTION casted_json(casted) RETURNS json LANGUAGE sql AS $$ SELECT to_json('cast ' || $1::text) $$;
CREATE CAST (casted AS json) WITH FUNCTION casted_json(casted);
"#;

/// Column types and the values each gets, one row per value (NULL where a column has fewer).
const COLUMNS: &[(&str, &[&str])] = &[
    ("int2", &["0", "-32768", "32767"]),
    ("int4", &["-2147483648", "2147483647"]),
    ("int8", &["-9223372036854775808", "9223372036854775807"]),
    (
        "float4",
        &[
            "0.1",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'-0'",
            "3.4e38",
            "1e-45",
            "123456.7",
        ],
    ),
    (
        "float8",
        &[
            "0.1",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'-0'",
            "1e300",
            "5e-324",
            "1.5e-7",
            "1.5e20",
            "-2.5",
            "1e15",
            "1e16",
            "123456789.125",
        ],
    ),
    (
        "numeric",
        &[
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0",
            "-0.00",
            "1e-5",
            "'-123456789012345678901234567890.1234567890'",
            "1e100",
            "'1.000'",
        ],
    ),
    ("numeric(10,2)", &["1.1", "-3"]),
    ("bool", &["true", "false"]),
    (
        "text",
        &[
            r#"'it''s "quoted" \ back\\slash'"#,
            "'héllo ✓ 𝄞'",
            "E'line\\nbreak\\ttab'",
            "''",
            "'NULL'",
            "' spaced '",
        ],
    ),
    ("varchar(10)", &["'ab'"]),
    ("char(4)", &["'a'", "'abcd'"]),
    ("\"char\"", &["'x'"]),
    ("name", &["'a name'"]),
    ("bytea", &["'\\x0001ff'", "''"]),
    (
        "json",
        &[
            r#"'{"a":1,"a":2,"b":[1e2,-0,0.0e3,1.5E+2,-0.0,1e-2],"c":{"d":null}}'"#,
            "'[]'",
            "'\"str\"'",
            "'  3  '",
            "'null'",
            r#"'{"z":1, "aa":2, "b":"\u00e9"}'"#,
        ],
    ),
    (
        "jsonb",
        &[
            r#"'{"a":1,"a":2,"n":1.50,"s":"x\"y"}'"#,
            "'[1,[2,{\"k\":false}]]'",
            "'null'",
            "'1e3'",
        ],
    ),
    (
        "date",
        &[
            "'2024-05-01'",
            "'0044-03-15 BC'",
            "'infinity'",
            "'-infinity'",
            "'10000-01-01'",
        ],
    ),
    (
        "timestamp",
        &[
            "'2024-05-01 16:04:56.123456'",
            "'0044-03-15 10:00:00 BC'",
            "'infinity'",
            "'-infinity'",
            "'10000-01-01 00:00:00'",
            "'2000-01-01 00:00:00.5'",
        ],
    ),
    (
        "timestamptz",
        &[
            "'2024-05-01 16:04:56.123456+05:30'",
            "'0044-03-15 10:00:00+00 BC'",
            "'infinity'",
            "'-infinity'",
            "'294276-12-31 23:59:59.999999+00'",
            "'1900-01-01 00:00:00+05:53:28'",
        ],
    ),
    ("time", &["'12:00:01.5'", "'24:00'"]),
    ("timetz", &["'12:00:01.5+05:30'", "'00:00-01'"]),
    (
        "interval",
        &["'1 year 2 days 03:04:05.5'", "'-1 mons'", "'0'"],
    ),
    ("uuid", &["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    ("inet", &["'192.168.0.1'", "'10.0.0.0/8'", "'::1'"]),
    ("cidr", &["'10.0.0.0/8'"]),
    ("macaddr", &["'08:00:2b:01:02:03'"]),
    ("money", &["12.5", "-1"]),
    ("oid", &["12345"]),
    ("xid", &["'5'"]),
    ("point", &["'(1,2.5)'"]),
    ("int4range", &["'[1,5)'", "'empty'"]),
    ("varbit", &["B'1011'"]),
    ("tsvector", &["'a fat cat'"]),
    ("int2vector", &["'1 2 3'", "''"]),
    ("oidvector", &["'1 2'"]),
    ("mood", &["'happy'", r#"'it''s "complicated"'"#]),
    ("posint", &["5"]),
    ("label", &["'a label'"]),
    ("label2", &["'(not a composite)'"]),
    ("intlist", &["'{1,NULL,3}'"]),
    (
        "inner_t",
        &[
            "ROW(1, 'a b', '{\"k\": [1]}', 'NaN')",
            "ROW(NULL, '', NULL, -0.5)",
            r#"ROW(2, 'q"uo\te,(x)', 'null', 1e300)"#,
            "ROW(NULL, NULL, NULL, NULL)",
        ],
    ),
    (
        "outer_t",
        &[
            "ROW(1, ROW(2, 'in\"ner', '[1]', 1)::inner_t, ARRAY['a b', NULL, '\"'], \
        '2024-05-01 16:04:56+00', true)",
            "ROW(NULL, NULL, '{}', NULL, NULL)",
        ],
    ),
    (
        "outer_d",
        &["ROW(3, ROW(NULL, ')', NULL, NULL)::inner_t, NULL, 'infinity', false)"],
    ),
    (
        "single_t",
        &[
            "ROW(NULL)::single_t",
            "ROW('')::single_t",
            "ROW('x')::single_t",
        ],
    ),
    ("empty_t", &["ROW()::empty_t"]),
    (
        "int[]",
        &[
            "'{}'",
            "'{1,NULL,3}'",
            "'[0:1]={1,2}'",
            "'{{1,2},{3,4}}'",
            "'[2:3][1:1]={{1},{2}}'",
            "'{{{1}},{{2}}}'",
        ],
    ),
    (
        "text[]",
        &[
            r#"ARRAY['a"b', 'c\d', 'NULL', NULL, '', ' x ', '{', ',', '}', 'é ✓', E'\n']"#,
            "'{}'",
            "ARRAY[ARRAY['a', NULL], ARRAY['{}', 'b c']]",
        ],
    ),
    (
        "float8[]",
        &["ARRAY['NaN', '-0', '1e300', '-Infinity']::float8[]"],
    ),
    ("numeric[]", &["'{1.50,NaN,-0}'"]),
    ("bool[]", &["'{t,f,NULL}'"]),
    (
        "inner_t[]",
        &["ARRAY[ROW(1, 'a b', NULL, 1)::inner_t, ROW(NULL, NULL, NULL, NULL)::inner_t, NULL]"],
    ),
    (
        "outer_t[]",
        &[
            "ARRAY[ROW(1, ROW(2, '\"', '{\"a\":[\"}\"]}', 2)::inner_t, ARRAY['{', NULL], \
        'infinity', NULL)::outer_t]",
        ],
    ),
    (
        "jsonb[]",
        &[r#"ARRAY['{"a":1}', '[1,"x"]', 'null', NULL]::jsonb[]"#],
    ),
    ("json[]", &[r#"ARRAY['{"a":1,"a":2}', '2.50']::json[]"#]),
    (
        "box[]",
        &["ARRAY['((1,2),(3,4))'::box, '((5,6),(7,8))'::box]"],
    ),
    (
        "timestamptz[]",
        &["ARRAY['2024-05-01 16:04:56+00'::timestamptz, 'infinity', NULL]"],
    ),
    (
        "timestamp[]",
        &["ARRAY['2024-05-01 16:04:56'::timestamp, '0044-03-15 10:00:00 BC']"],
    ),
    ("date[]", &["ARRAY['2024-05-01'::date, 'infinity']"]),
    ("bytea[]", &["ARRAY['\\x00'::bytea, '']"]),
    ("mood[]", &["'{happy,sad}'"]),
    ("posint[]", &["'{1,2}'"]),
    ("intlist[]", &["ARRAY['{1,2}'::intlist]"]),
    ("int2vector[]", &["ARRAY['1 2'::int2vector]"]),
    (
        "uuid[]",
        &["ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]"],
    ),
    ("oid[]", &["'{1,2}'"]),
];

#[tokio::test]
async fn converts_as_to_jsonb_does() {
    let name = format!("feedgate_test_pgoutput_{}", std::process::id());
    let mut admin = PgConnection::connect(ADMIN_URL)
        .await
        .expect("connect to PostgreSQL at 127.0.0.1:5432");
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(&drop)
        .execute(&mut admin)
        .await
        .expect("drop old scratch database");
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create scratch database");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let failures = {
        let mut conn = PgConnection::connect(&url)
            .await
            .expect("connect to scratch database");
        let failures = compare_all(&mut conn).await;
        conn.close().await.expect("close");
        failures
    };
    sqlx::raw_sql(&drop)
        .execute(&mut admin)
        .await
        .expect("drop scratch database");
    assert!(
        failures.is_empty(),
        "{} values differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Creates the table, and compares every value; the differences, one line each.
async fn compare_all(conn: &mut PgConnection) -> Vec<String> {
    sqlx::raw_sql(SETUP)
        .execute(&mut *conn)
        .await
        .expect("create types");
    let columns: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (ty, _))| format!("c{i} {ty}"))
        .collect();
    let create = format!(
        "CREATE TABLE oracle (id int PRIMARY KEY, {})",
        columns.join(", ")
    );
    sqlx::raw_sql(&create)
        .execute(&mut *conn)
        .await
        .expect("create table");
    let rows = COLUMNS
        .iter()
        .map(|(_, values)| values.len())
        .max()
        .unwrap_or(0);
    for row in 0..rows {
        let values: Vec<String> = COLUMNS
            .iter()
            .map(|(ty, values)| match values.get(row) {
                Some(expr) => format!("({expr})::{ty}"),
                None => "NULL".into(),
            })
            .collect();
        let insert = format!("INSERT INTO oracle VALUES ({row}, {})", values.join(", "));
        sqlx::raw_sql(&insert)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{insert}: {e}"));
    }
    sqlx::raw_sql(PINNED)
        .execute(&mut *conn)
        .await
        .expect("pin the session");

    let types: Vec<(String, i64)> = sqlx::query_as(
        "SELECT attname::text, atttypid::int8 FROM pg_attribute \
         WHERE attrelid = 'oracle'::regclass AND attnum > 1 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("column types");
    let oids: Vec<u32> = types
        .iter()
        .map(|(_, oid)| u32::try_from(*oid).expect("oid"))
        .collect();
    let catalog = TypeCatalog::load(conn, &oids)
        .await
        .expect("load the catalog");

    let mut failures = Vec::new();
    for ((column, _), (ty, oid)) in types
        .iter()
        .zip(COLUMNS.iter().map(|(ty, _)| ty).zip(&oids))
    {
        assert!(
            catalog.knows(*oid),
            "{column} ({ty}): type {oid} not loaded"
        );
        // format('%s') calls the type's output function, as pgoutput does; `::text` would not
        // (a boolean's cast gives `true`, inet's adds `/32`, char(n)'s trims the padding).
        let sql = format!(
            "SELECT id, format('%s', {column}), to_jsonb({column}) FROM oracle \
             WHERE to_jsonb({column}) IS NOT NULL ORDER BY id"
        );
        let values: Vec<(i32, String, Json)> = sqlx::query_as(&sql)
            .fetch_all(&mut *conn)
            .await
            .expect("read a column");
        for (id, text, expected) in values {
            match catalog.to_json(*oid, &text) {
                Ok(got) if got == expected => {}
                got => failures.push(format!(
                    "{column} ({ty}) row {id}: text {text:?} gave {got:?}, to_jsonb {expected}"
                )),
            }
        }
    }
    failures.extend(json_cast(conn).await);
    failures
}

/// A type with a cast to json: to_jsonb runs the cast, so conversion must refuse it.
async fn json_cast(conn: &mut PgConnection) -> Option<String> {
    let (oid, text, jsonb): (i64, String, Json) = sqlx::query_as(
        "SELECT 'casted'::regtype::oid::int8, format('%s', 'a'::casted), to_jsonb('a'::casted)",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("read the cast type");
    let oid = u32::try_from(oid).expect("oid");
    let catalog = TypeCatalog::load(conn, &[oid])
        .await
        .expect("load the catalog");
    let got = catalog.to_json(oid, &text);
    (got != Err(ValueError::JsonCast(oid)) || jsonb != Json::String("cast a".into()))
        .then(|| format!("casted: text {text:?} gave {got:?}, to_jsonb {jsonb}"))
}
