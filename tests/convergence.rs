//! Convergence under load: clients that subscribe with `include_initial` while 4 writers run
//! random inserts, updates and deletes (many small transactions, some long ones, some rolled
//! back) end up with exactly the table's contents, and no change is ever delivered twice.
//!
//! The second test puts a proxy between the clients and the server that cuts every connection
//! after 150 to 500 ms, often mid-frame: each client connects again and resumes from the last
//! cursor it received (or, cut before it had one, subscribes afresh), and still ends up with
//! exactly the table, every change once (each update's old row must be the view's row, and
//! updates count `val` up, so a lost or doubled change fails).
//!
//! `FEEDGATE_CONVERGENCE_RUNS` sets how many seeds each test runs (default 3, and 2 with cuts).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use feedgate::protocol::pb;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use support::db::{config_for, table_feed, wait_connected, TestDb, View};
use support::proxy::CuttingProxy;
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

/// How the clients of a run reach the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    /// Through a [`CuttingProxy`].
    Cut,
}

/// Reads as [`read_to_the_end`] does, through connections that get cut: after each cut, connects
/// again and resumes from the last cursor received, or subscribes afresh (dropping the view)
/// when cut before any. Returns the view and how many times it resumed and started afresh.
async fn read_through_cuts(addr: std::net::SocketAddr, i: usize) -> (View, usize, usize) {
    let last = key(LAST);
    let mut view = View::default();
    let mut cursor = bytes::Bytes::new();
    let (mut resumes, mut fresh) = (0, 0);
    loop {
        let Ok(mut client) = Client::connect_request(format!("ws://{addr}/v1/ws").as_str()).await
        else {
            continue; // cut during the handshake
        };
        let Command::Subscribe(mut subscribe) = table_feed(1, "items", cursor.is_empty()) else {
            unreachable!("table_feed makes a Subscribe");
        };
        if cursor.is_empty() {
            view = View::default();
            fresh += 1;
        } else {
            resumes += 1;
        }
        subscribe.resume_from = cursor.clone();
        if client
            .try_send(Command::Subscribe(subscribe))
            .await
            .is_err()
        {
            continue;
        }
        loop {
            let received = match client.recv().await {
                Ok(received) => received,
                Err(err) if err.to_string().contains("timed out") => {
                    panic!("client {i}: nothing arrived within {WAIT:?}")
                }
                Err(_) => break, // cut
            };
            let event = match received {
                Received::Event(event) => event,
                Received::Response(response) => {
                    assert!(
                        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
                        "client {i}: {response:?}"
                    );
                    continue;
                }
                Received::Close(_) => break,
            };
            match event.body {
                Some(pb::event::Body::Change(change)) => {
                    if let Err(err) = view.apply(&change) {
                        panic!(
                            "client {i}: inconsistent change after {} applied: {err}",
                            view.applied
                        );
                    }
                }
                Some(pb::event::Body::Ready(_)) => view.ready = true,
                other => panic!("client {i}: unexpected event {other:?}"),
            }
            if !event.cursor.is_empty() {
                cursor = event.cursor;
            }
            if view.ready && view.rows.contains_key(&last) {
                return (view, resumes, fresh);
            }
        }
    }
}

async fn run(seed: u64, path: Path) {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    let proxy = match path {
        Path::Direct => None,
        Path::Cut => Some(CuttingProxy::start(server.local_addr(), 150..500, seed).await),
    };
    let addr = proxy
        .as_ref()
        .map_or(server.local_addr(), |proxy| proxy.addr);
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
    let mut cut_readers = Vec::new();
    for (i, pause) in [300u64, 90, 110, 70, 130, 100, 80, 120]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if path == Path::Cut {
            cut_readers.push(tokio::spawn(read_through_cuts(addr, i)));
            continue;
        }
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
    // The writers go on a little after the last client joined (with cuts, long enough for each
    // client to be cut several times while they write), and until they have done some work
    // however busy the machine is.
    let writing = match path {
        Path::Direct => 600,
        Path::Cut => 3_000,
    };
    tokio::time::sleep(Duration::from_millis(writing)).await;
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
    if let Some(proxy) = proxy {
        let (mut resumes, mut fresh) = (0, 0);
        for (i, reader) in cut_readers.into_iter().enumerate() {
            let (view, resumed, started) = reader.await.expect("reader");
            assert!(
                view.rows == want,
                "client {i} had the last change with {} rows in its view, {} in the table",
                view.rows.len(),
                want.len()
            );
            resumes += resumed;
            fresh += started;
        }
        eprintln!(
            "seed {seed}: {} connections cut, {resumes} resumes, {fresh} fresh subscriptions",
            proxy.cuts()
        );
        assert!(
            resumes >= 8,
            "the cuts must make the clients resume ({resumes} resumes)"
        );
        server.shutdown().await.expect("shutdown");
        db.drop_db().await;
        return;
    }
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
        run(seed, Path::Direct).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_connections_are_cut_resume_and_converge_exactly() {
    let runs: u64 = std::env::var("FEEDGATE_CONVERGENCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for seed in 1..=runs {
        run(seed, Path::Cut).await;
    }
}
