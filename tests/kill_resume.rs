//! A feedgate process killed with SIGKILL mid-stream, and another started: a table subscriber
//! resumes from the last cursor it received, on the new process, and gets every change once while
//! a writer keeps committing throughout. Real PostgreSQL, real processes.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::db::{columns, table_feed, wait_connected, TestDb};
use support::*;

/// The feedgate binary serving `database_url` on a port of its own.
fn spawn(database_url: &str) -> (Child, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve", "--listen", &addr.to_string(), "--allow-anonymous"])
        .args(["--database-url", database_url])
        .env("FEEDGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn feedgate");
    (child, addr)
}

async fn listening(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("feedgate never listened on {addr}");
}

/// Reads changes of subscription 1 into `seen` (id → times) until `until` says stop; returns
/// the last cursor.
async fn read(
    client: &mut Client,
    seen: &mut BTreeMap<i64, u32>,
    until: impl Fn(usize) -> bool,
) -> Bytes {
    let mut cursor = Bytes::new();
    let mut count = 0;
    while !until(count) {
        let event = client.recv_event().await;
        assert_eq!(event.subscription_id, 1);
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                let id: i64 = columns(&change.key)["id"].parse().expect("an id");
                *seen.entry(id).or_default() += 1;
                count += 1;
            }
            Some(pb::event::Body::Ready(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        cursor = event.cursor;
    }
    cursor
}

#[tokio::test]
async fn a_table_subscriber_resumes_on_a_new_process_after_sigkill_with_every_change_once() {
    const ROWS: i64 = 1_500;
    let db = TestDb::new().await;
    let (mut first, addr) = spawn(&db.url);
    listening(addr).await;
    wait_connected(addr).await;
    db.execute(
        "CREATE TABLE ticks (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()); \
         SELECT feedgate.watch('public.ticks');",
    )
    .await;
    let mut client = Client::connect(addr).await;
    let response = client.request(table_feed(1, "public.ticks", true)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let pool = db.pool.clone();
    let writer = tokio::spawn(async move {
        for id in 1..=ROWS {
            sqlx::query("INSERT INTO ticks (id) VALUES ($1)")
                .bind(id)
                .execute(&pool)
                .await
                .expect("insert");
            // Paced, so that commits go on while one process dies and the next one starts.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let mut seen = BTreeMap::new();
    let cursor = read(&mut client, &mut seen, |count| count >= 300).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    drop(client);

    let (mut second, addr) = spawn(&db.url);
    listening(addr).await;
    wait_connected(addr).await;
    let mut client = Client::connect(addr).await;
    let Command::Subscribe(mut resume) = table_feed(1, "public.ticks", true) else {
        unreachable!("table_feed makes a Subscribe");
    };
    resume.resume_from = cursor;
    let response = client.request(Command::Subscribe(resume)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    writer.await.expect("writer");
    let before = seen.len();
    read(&mut client, &mut seen, seen_all(before, ROWS)).await;
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "changes received twice: {doubled:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=ROWS).collect::<Vec<_>>()
    );
    db.drop_db().await;
}

/// Whether the changes read since resuming (`count`) complete the rows: `before` were read on the
/// killed process.
fn seen_all(before: usize, rows: i64) -> impl Fn(usize) -> bool {
    move |count| before + count >= rows as usize
}
