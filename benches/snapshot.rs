//! Initial snapshot throughput and memory. Prints figures; asserts nothing about speed.
//!
//! Fills a table with N rows, then: the time `psql -c "COPY t TO STDOUT"` takes (the raw read
//! limit), and the time a feedgate subscription with `include_initial` takes from Subscribe to
//! Ready, with this process's peak RSS (server and client run in this process; the client decodes
//! and drops each row). Run it with two sizes to see that peak memory does not grow with the table.
//!
//! Run: `cargo bench --bench snapshot -- [--rows N]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use feedgate::app::Server;
use feedgate::config::Config;
use feedgate::protocol::pb;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use sqlx::{Connection, PgConnection};
use tokio_tungstenite::tungstenite::Message;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(rows))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn run(rows: u64) -> Result<()> {
    let admin_url = std::env::var("FEEDGATE_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("feedgate_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let url = format!("{}/{name}", admin_url.rsplit_once('/').context("url")?.0);
    let result = measure(&url, rows).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn measure(url: &str, rows: u64) -> Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, name text, qty int, at timestamptz);
         INSERT INTO t SELECT g, 'item ' || g, g % 1000, now() FROM generate_series(1, {rows}) g;"
    ))
    .execute(&mut conn)
    .await?;
    sqlx::query("VACUUM ANALYZE t").execute(&mut conn).await?;

    let start = Instant::now();
    let copy = Command::new("psql")
        .args([url, "-qc", "COPY t TO STDOUT"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(copy.success(), "COPY failed");
    let copy_time = start.elapsed();

    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: Some(url.to_owned()),
        watch: vec!["public.t".into()],
        ..Config::default()
    };
    let server = Server::start(config).await?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", server.local_addr())).await?;
    let rss_before = peak_rss_kib();
    // The reader may still be connecting: retry until Subscribed, then count rows until Ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    let start = loop {
        let request = pb::Request {
            request_id: 1,
            command: Some(pb::request::Command::Subscribe(pb::Subscribe {
                subscription_id: 1,
                source: Some(pb::subscribe::Source::Table(pb::TableFeed {
                    table: "public.t".into(),
                    include_initial: true,
                })),
                resume_from: Default::default(),
            })),
        };
        let start = Instant::now();
        ws.send(Message::Binary(request.encode_to_vec().into()))
            .await?;
        let response = loop {
            let frame = ws.next().await.context("closed")??;
            let Message::Binary(bytes) = frame else {
                continue;
            };
            if let Some(pb::server_message::Message::Response(r)) =
                pb::ServerMessage::decode(bytes)?.message
            {
                break r;
            }
        };
        if matches!(response.result, Some(pb::response::Result::Subscribed(_))) {
            break start;
        }
        anyhow::ensure!(Instant::now() < deadline, "cannot subscribe: {response:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut received = 0u64;
    loop {
        let frame = ws.next().await.context("closed")??;
        let Message::Binary(bytes) = frame else {
            continue;
        };
        let Some(pb::server_message::Message::Event(event)) =
            pb::ServerMessage::decode(bytes)?.message
        else {
            continue;
        };
        match event.body {
            Some(pb::event::Body::Change(_)) => received += 1,
            Some(pb::event::Body::Ready(_)) => break,
            _ => {}
        }
    }
    let snapshot_time = start.elapsed();
    let rss_after = peak_rss_kib();
    server.shutdown().await?;
    anyhow::ensure!(received == rows, "received {received} of {rows} rows");
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("initial snapshot of {rows} rows (bigint, text, int, timestamptz):");
    println!(
        "  psql COPY TO STDOUT     : {:7.2} s  {:10.0} rows/s",
        copy_time.as_secs_f64(),
        rate(copy_time)
    );
    println!(
        "  feedgate include_initial: {:7.2} s  {:10.0} rows/s  ({:.0}% of COPY)",
        snapshot_time.as_secs_f64(),
        rate(snapshot_time),
        100.0 * rate(snapshot_time) / rate(copy_time)
    );
    println!(
        "  peak RSS of this process: {} MiB before the snapshot, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    Ok(())
}
