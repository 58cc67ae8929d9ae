//! Convergence under load: clients that subscribe with `include_initial` while 4 writers run
//! random inserts, updates and deletes (many small transactions, some long ones, some rolled
//! back) end up with exactly the table's contents, and no change is ever delivered twice.
//!
//! `FEEDGATE_CONVERGENCE_RUNS` sets how many seeds run (default 3).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use feedgate::protocol::pb;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use support::db::{config_for, table_feed, wait_connected, TestDb, View};
use support::*;

const KEYS: i32 = 400;

/// Runs random transactions until `stop`, counting the committed ones in `committed`.
async fn writer(url: String, seed: u64, stop: Arc<AtomicBool>, committed: Arc<AtomicUsize>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("writer connects");
    while !stop.load(Ordering::Relaxed) {
        let long = rng.random_ratio(1, 40);
        let ops = if long {
            rng.random_range(3..12)
        } else {
            rng.random_range(1..4)
        };
        let mut tx = conn.begin().await.expect("begin");
        let mut failed = false;
        for _ in 0..ops {
            let id = rng.random_range(1..=KEYS);
            let sql = match rng.random_range(0..10) {
                0..=3 => format!(
                    "INSERT INTO items VALUES ({id}, {}, 'n{}') ON CONFLICT (id) DO NOTHING",
                    rng.random_range(0..1000),
                    rng.random_range(0..1000)
                ),
                4..=7 => format!(
                    "UPDATE items SET val = val + 1, note = 'u{}' WHERE id = {id}",
                    rng.random_range(0..1000)
                ),
                _ => format!("DELETE FROM items WHERE id = {id}"),
            };
            if sqlx::query(&sql).execute(&mut *tx).await.is_err() {
                failed = true; // a deadlock victim: roll the whole transaction back
                break;
            }
            if long {
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
        }
        if failed || rng.random_ratio(1, 10) {
            let _ = tx.rollback().await;
        } else if tx.commit().await.is_ok() {
            committed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A view's key for the row `id`.
fn key(id: i32) -> String {
    format!("{:?}", BTreeMap::from([("id".to_owned(), id.to_string())]))
}

/// The id of the row inserted once the writers have stopped (they write ids 1..=KEYS). Changes
/// arrive in commit order, so a client holding it (after its snapshot) has had every change.
const LAST: i32 = 0;

/// Reads events into the view until it is ready and holds row [`LAST`], failing on any
/// inconsistency.
async fn read_to_the_end(client: &mut Client, view: &mut View) {
    let last = key(LAST);
    while !(view.ready && view.rows.contains_key(&last)) {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                if let Err(err) = view.apply(&change) {
                    panic!("inconsistent change after {} applied: {err}", view.applied);
                }
            }
            Some(pb::event::Body::Ready(_)) => view.ready = true,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

async fn table_state(db: &TestDb) -> BTreeMap<String, BTreeMap<String, String>> {
    let rows: Vec<(i32, i64, Option<String>)> = sqlx::query_as("SELECT id, val, note FROM items")
        .fetch_all(&db.pool)
        .await
        .expect("select");
    rows.into_iter()
        .map(|(id, val, note)| {
            let row = BTreeMap::from([
                ("id".to_owned(), id.to_string()),
                ("val".to_owned(), val.to_string()),
                ("note".to_owned(), note.unwrap_or_else(|| "null".into())),
            ]);
            (key(id), row)
        })
        .collect()
}

async fn run(seed: u64) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    db.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, val bigint NOT NULL, note text);
         INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1, {KEYS}, 2) g;
         SELECT feedgate.watch('items');"
    ))
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = db.url.clone();
            tokio::spawn(writer(url, seed * 100 + w, stop.clone(), committed.clone()))
        })
        .collect();
    // Clients join at different points of the writes, and read from then on (so their queues
    // never fill) until they have had the last change.
    let mut readers = Vec::new();
    for (i, pause) in [300u64, 90, 110, 70, 130, 100, 80, 120]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let mut client = Client::connect(addr).await;
        let response = client.request(table_feed(1, "items", true)).await;
        assert!(
            matches!(response.result, Some(pb::response::Result::Subscribed(_))),
            "client {i}: {response:?}"
        );
        readers.push(tokio::spawn(async move {
            let mut view = View::default();
            read_to_the_end(&mut client, &mut view).await;
            (client, view)
        }));
    }
    // The writers go on a little after the last client joined, and until they have done some
    // work however busy the machine is.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed.load(Ordering::Relaxed) <= 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers did no work ({} transactions)",
            committed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let committed = committed.load(Ordering::Relaxed);
    eprintln!("seed {seed}: {committed} transactions committed by 4 writers");
    db.execute(&format!("INSERT INTO items VALUES ({LAST}, 0, 'last')"))
        .await;
    let want = table_state(&db).await;
    let mut clients = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (client, view) = reader.await.expect("reader");
        assert!(
            view.rows == want,
            "client {i} had the last change with {} rows in its view, {} in the table",
            view.rows.len(),
            want.len()
        );
        clients.push(client);
    }
    // Nothing more may arrive: any further change would be a duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for client in &mut clients {
        client.barrier().await;
    }
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_subscribing_under_concurrent_writes_converge_exactly() {
    let runs: u64 = std::env::var("FEEDGATE_CONVERGENCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for seed in 1..=runs {
        run(seed).await;
    }
}
