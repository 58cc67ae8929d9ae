//! Model-based check of clients' row filters against a real PostgreSQL: random filters (every
//! node kind, over int, text, numeric and timestamptz columns with NULLs) on subscribers that join
//! while 4 writers run random transactions (some long, some rolled back, updates that move rows
//! across the filters). At the end each subscriber's view, built only from its events, must equal
//! `SELECT ... WHERE <the same filter, written in SQL>`; along the way every change must apply
//! cleanly to the view (an update's or delete's old row equal to the view's: nothing lost,
//! doubled or leaked).
//!
//! Every other subscriber squashes (`min_interval_ms` 20 to 200): its view, built from batches
//! of collapsed changes, must be as exact (a row seen older after newer would fail the view's
//! old-row check).
//!
//! `FEEDGATE_FILTER_MODEL_RUNS` sets how many seeds run (default 2).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feedgate::protocol::pb;
use pb::value::Kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use support::db::{columns, config_for, wait_connected, TestDb, View};
use support::*;

const KEYS: i32 = 300;
const SUBSCRIBERS: u64 = 8;
/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;
const DAY: i64 = 86_400_000_000;

/// A random filter and the same predicate in SQL (two-valued, as `Filter` is: each node is
/// wrapped in `COALESCE(.., false)` so that `NOT` of an unknown is true, as `negate` is).
fn random_filter(rng: &mut StdRng, depth: u32) -> (pb::Filter, String) {
    use pb::filter::Node;
    let node = |node| pb::Filter { node: Some(node) };
    let operand = |column: &str| {
        Some(pb::Operand {
            of: Some(pb::operand::Of::Column(column.into())),
        })
    };
    let ops = [
        (pb::CompareOp::Eq, "="),
        (pb::CompareOp::Ne, "<>"),
        (pb::CompareOp::Lt, "<"),
        (pb::CompareOp::Le, "<="),
        (pb::CompareOp::Gt, ">"),
        (pb::CompareOp::Ge, ">="),
    ];
    let leaf_or_tree = if depth >= 3 { 0..6 } else { 0..9 };
    let (filter, sql) = match rng.random_range(leaf_or_tree) {
        0 => {
            let (op, sql_op) = ops[rng.random_range(0..ops.len())];
            let k = rng.random_range(0..20);
            let compare = pb::Comparison {
                operand: operand("a"),
                op: op as i32,
                value: Some(pb::Value {
                    kind: Some(Kind::Int(k)),
                }),
            };
            (node(Node::Compare(compare)), format!("a {sql_op} {k}"))
        }
        1 => {
            let (op, sql_op) = ops[rng.random_range(0..ops.len())];
            let text = format!("t{}", rng.random_range(0..10));
            let compare = pb::Comparison {
                operand: operand("b"),
                op: op as i32,
                value: Some(pb::Value {
                    kind: Some(Kind::Text(text.clone())),
                }),
            };
            // Byte order, as the evaluator compares text.
            let sql = format!("b COLLATE \"C\" {sql_op} '{text}'");
            (node(Node::Compare(compare)), sql)
        }
        2 => {
            let (op, sql_op) = ops[rng.random_range(0..ops.len())];
            let number = format!("{}.{}", rng.random_range(0..50), rng.random_range(0..100));
            let compare = pb::Comparison {
                operand: operand("c"),
                op: op as i32,
                value: Some(pb::Value {
                    kind: Some(Kind::Numeric(number.clone())),
                }),
            };
            (node(Node::Compare(compare)), format!("c {sql_op} {number}"))
        }
        3 => {
            let (op, sql_op) = ops[rng.random_range(0..ops.len())];
            let at = T0 + rng.random_range(0..30) * DAY;
            let compare = pb::Comparison {
                operand: operand("d"),
                op: op as i32,
                value: Some(pb::Value {
                    kind: Some(Kind::TimestampMicros(at)),
                }),
            };
            let sql = format!("d {sql_op} to_timestamp({at} / 1000000.0)");
            (node(Node::Compare(compare)), sql)
        }
        4 => {
            let values: Vec<i64> = (0..rng.random_range(1..5))
                .map(|_| rng.random_range(0..20))
                .collect();
            let one_of = pb::OneOf {
                operand: operand("a"),
                values: values
                    .iter()
                    .map(|v| pb::Value {
                        kind: Some(Kind::Int(*v)),
                    })
                    .collect(),
            };
            let list: Vec<String> = values.iter().map(i64::to_string).collect();
            (
                node(Node::OneOf(one_of)),
                format!("a IN ({})", list.join(", ")),
            )
        }
        5 => {
            let column = ["a", "b", "c", "d"][rng.random_range(0..4)];
            let negated = rng.random_bool(0.5);
            let is_null = pb::IsNull {
                operand: operand(column),
                negated,
            };
            let not = if negated { " NOT" } else { "" };
            (
                node(Node::IsNull(is_null)),
                format!("{column} IS{not} NULL"),
            )
        }
        6 => {
            let (inner, sql) = random_filter(rng, depth + 1);
            (node(Node::Negate(Box::new(inner))), format!("NOT ({sql})"))
        }
        kind => {
            let items: Vec<(pb::Filter, String)> = (0..rng.random_range(0..4))
                .map(|_| random_filter(rng, depth + 1))
                .collect();
            let (filters, sqls): (Vec<_>, Vec<_>) = items.into_iter().unzip();
            let all = kind == 7;
            let joined = match (all, sqls.is_empty()) {
                (true, true) => "TRUE".to_owned(),
                (false, true) => "FALSE".to_owned(),
                (true, false) => sqls.join(" AND "),
                (false, false) => sqls.join(" OR "),
            };
            let filters = pb::Filters { items: filters };
            let tree = if all {
                Node::AllOf(filters)
            } else {
                Node::AnyOf(filters)
            };
            (node(tree), joined)
        }
    };
    (filter, format!("COALESCE(({sql}), false)"))
}

/// A random value for column `a`, `b`, `c` or `d` in SQL, NULL now and then.
fn random_value(rng: &mut StdRng, column: &str) -> String {
    if rng.random_ratio(1, 8) {
        return "NULL".into();
    }
    match column {
        "a" => rng.random_range(0..20).to_string(),
        "b" => format!("'t{}'", rng.random_range(0..10)),
        "c" => format!("{}.{}", rng.random_range(0..50), rng.random_range(0..100)),
        _ => format!(
            "to_timestamp({} / 1000000.0)",
            T0 + rng.random_range(0..30) * DAY
        ),
    }
}

/// Random transactions until `stop`: inserts, updates of one column (often moving the row
/// across filters), deletes; some long, some rolled back.
async fn writer(url: String, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("writer");
    while !stop.load(Ordering::Relaxed) {
        let long = rng.random_ratio(1, 30);
        let mut tx = conn.begin().await.expect("begin");
        let mut failed = false;
        for _ in 0..rng.random_range(1..if long { 10 } else { 4 }) {
            let id = rng.random_range(1..=KEYS);
            let sql = match rng.random_range(0..10) {
                0..=2 => format!(
                    "INSERT INTO t VALUES ({id}, {}, {}, {}, {}) ON CONFLICT (id) DO NOTHING",
                    random_value(&mut rng, "a"),
                    random_value(&mut rng, "b"),
                    random_value(&mut rng, "c"),
                    random_value(&mut rng, "d"),
                ),
                3..=7 => {
                    let column = ["a", "b", "c", "d"][rng.random_range(0..4)];
                    let value = random_value(&mut rng, column);
                    format!("UPDATE t SET {column} = {value} WHERE id = {id}")
                }
                _ => format!("DELETE FROM t WHERE id = {id}"),
            };
            if sqlx::query(&sql).execute(&mut *tx).await.is_err() {
                failed = true;
                break;
            }
            if long {
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
            }
        }
        if failed || rng.random_ratio(1, 10) {
            let _ = tx.rollback().await;
        } else {
            let _ = tx.commit().await;
        }
    }
}

/// The id of the row inserted after the writers stopped: an unfiltered subscription on the same
/// connection that has it means the filtered one has had every change before it.
const LAST: i32 = 0;

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    let mut setup = String::from(
        "CREATE TABLE t (id int PRIMARY KEY, a int, b text, c numeric, d timestamptz);",
    );
    for id in (1..=KEYS).step_by(2) {
        setup.push_str(&format!(
            "INSERT INTO t VALUES ({id}, {}, {}, {}, {});",
            random_value(&mut rng, "a"),
            random_value(&mut rng, "b"),
            random_value(&mut rng, "c"),
            random_value(&mut rng, "d"),
        ));
    }
    setup.push_str("SELECT feedgate.watch('t');");
    db.execute(&setup).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(db.url.clone(), seed * 100 + w, stop.clone())))
        .collect();
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        let (filter, sql) = random_filter(&mut rng, 0);
        let squash_ms = if i % 2 == 1 {
            rng.random_range(20..200)
        } else {
            0
        };
        let mut client = Client::connect(addr).await;
        // Subscription 2, unfiltered, tells when everything before LAST has arrived.
        for (id, filter, squash_ms) in [(1, Some(filter), squash_ms), (2, None, 0)] {
            client
                .send(Command::Subscribe(pb::Subscribe {
                    subscription_id: id,
                    source: Some(pb::subscribe::Source::Table(pb::TableFeed {
                        table: "t".into(),
                        include_initial: id == 1,
                        filter,
                        min_interval_ms: squash_ms,
                        ..Default::default()
                    })),
                    resume_from: Bytes::new(),
                }))
                .await;
        }
        readers.push(tokio::spawn(async move {
            let mut view = View::default();
            let mut ready = BTreeSet::new();
            let mut last = false;
            while !(last && ready.len() == 2) {
                let Some(event) = client.recv_event_or_subscribed().await else {
                    continue;
                };
                match (event.subscription_id, event.body) {
                    (id, Some(pb::event::Body::Ready(_))) => {
                        ready.insert(id);
                    }
                    (1, Some(pb::event::Body::Change(change))) => {
                        if let Err(err) = view.apply(&change) {
                            panic!("subscriber {i} ({sql}): {err}");
                        }
                    }
                    (2, Some(pb::event::Body::Change(change))) => {
                        last |= columns(&change.key)["id"] == LAST.to_string();
                    }
                    (_, other) => panic!("subscriber {i}: unexpected {other:?}"),
                }
            }
            // A squashing subscriber may still hold changes from before LAST: they come within
            // its interval (well within this quiet time), then nothing more.
            if squash_ms > 0 {
                loop {
                    let quiet = Duration::from_secs(2);
                    let Ok(event) = tokio::time::timeout(quiet, client.recv_event()).await else {
                        break;
                    };
                    match (event.subscription_id, event.body) {
                        (1, Some(pb::event::Body::Change(change))) => {
                            if let Err(err) = view.apply(&change) {
                                panic!("subscriber {i} ({sql}, squashed): {err}");
                            }
                        }
                        (2, Some(pb::event::Body::Change(_))) => {}
                        (_, other) => panic!("subscriber {i}: unexpected {other:?}"),
                    }
                }
            }
            (format!("{sql} [min_interval_ms {squash_ms}]"), view)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    db.execute(&format!("INSERT INTO t (id) VALUES ({LAST})"))
        .await;
    for (i, reader) in readers.into_iter().enumerate() {
        let (sql, view) = reader.await.expect("reader");
        let (sql, squash) = sql.split_once(" [").expect("squash noted");
        let rows: Vec<(i32, Option<i32>, Option<String>)> = sqlx::query_as(&format!(
            "SELECT id, a, b FROM t WHERE {sql} AND id <> {LAST}"
        ))
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
        let want: BTreeMap<String, (String, String)> = rows
            .into_iter()
            .map(|(id, a, b)| {
                let show = |v: Option<String>| v.unwrap_or_else(|| "null".into());
                (id.to_string(), (show(a.map(|a| a.to_string())), show(b)))
            })
            .collect();
        let got: BTreeMap<String, (String, String)> = view
            .rows
            .values()
            .filter(|row| row["id"] != LAST.to_string())
            .map(|row| (row["id"].clone(), (row["a"].clone(), row["b"].clone())))
            .collect();
        assert_eq!(
            got, want,
            "seed {seed}, subscriber {i}: WHERE {sql} [{squash}"
        );
        eprintln!(
            "seed {seed}, subscriber {i} [{squash}: {} rows match, {} changes applied",
            want.len(),
            view.applied
        );
    }
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filters_under_concurrent_writes_equal_the_same_filter_in_sql() {
    let runs: u64 = std::env::var("FEEDGATE_FILTER_MODEL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for seed in 1..=runs {
        run(seed).await;
    }
}
