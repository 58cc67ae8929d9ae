//! What change capture costs the database's writers, and how fast changes reach a subscriber.
//! Prints figures; asserts nothing about speed.
//!
//! Three runs of 8 concurrent writers doing single-row INSERT transactions
//! (`synchronous_commit = on`) for the same duration, against:
//! 1. a plain table (the baseline);
//! 2. the same table watched by feedgate, with the server running and one live subscriber, whose
//!    commit-to-receipt latency is measured from a timestamp the writer puts in the row;
//! 3. a table with a NOTIFY-per-row trigger (what a hand-written LISTEN/NOTIFY server does).
//!
//! Run: `cargo bench --bench db_cost -- [--seconds N] [--writers N]`
//! Needs PostgreSQL at FEEDGATE_TEST_ADMIN_URL (default postgres://postgres@127.0.0.1/postgres).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use feedgate::app::Server;
use feedgate::config::Config;
use feedgate::protocol::{now_micros, pb};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use sqlx::{Connection, PgConnection};
use tokio_tungstenite::tungstenite::Message;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = arg("--seconds", 5);
    let writers = arg("--writers", 8) as usize;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(Duration::from_secs(seconds), writers))
}

async fn run(duration: Duration, writers: usize) -> Result<()> {
    let admin_url = std::env::var("FEEDGATE_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("feedgate_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let url = format!("{}/{name}", admin_url.rsplit_once('/').context("url")?.0);
    let result = measure(&url, duration, writers).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn measure(url: &str, duration: Duration, writers: usize) -> Result<()> {
    let mut setup = PgConnection::connect(url).await?;
    sqlx::raw_sql(
        "CREATE TABLE plain (id bigserial PRIMARY KEY, sent_micros bigint, payload text);
         CREATE TABLE watched (id bigserial PRIMARY KEY, sent_micros bigint, payload text);
         CREATE TABLE notified (id bigserial PRIMARY KEY, sent_micros bigint, payload text);
         CREATE FUNCTION notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('rows', row_to_json(NEW)::text); RETURN NULL; END $$;
         CREATE TRIGGER notify_row AFTER INSERT ON notified
             FOR EACH ROW EXECUTE FUNCTION notify_row();",
    )
    .execute(&mut setup)
    .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut setup)
        .await?;

    let baseline = write_load(url, "plain", duration, writers).await?;

    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: Some(url.to_owned()),
        watch: vec!["public.watched".into()],
        ..Config::default()
    };
    config.limits.outbound_queue = 1 << 16;
    let server = Server::start(config).await?;
    let subscriber = subscribe(server.local_addr()).await?;
    let watched = write_load(url, "watched", duration, writers).await?;
    let mut latencies = subscriber.finish(watched).await?;
    server.shutdown().await?;

    let notified = write_load(url, "notified", duration, writers).await?;

    println!(
        "database cost, {writers} writers x {}s, single-row INSERT transactions, \
         synchronous_commit={sync}:",
        duration.as_secs()
    );
    println!("  plain table               : {baseline:8.0} tx/s");
    println!(
        "  watched by feedgate       : {watched:8.0} tx/s   ratio {:.2}",
        watched / baseline
    );
    println!(
        "  NOTIFY-per-row trigger    : {notified:8.0} tx/s   ratio {:.2}",
        notified / baseline
    );
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "commit to subscriber under that load ({} changes): p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms",
            latencies.len(),
            pct(0.5),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
    }
    Ok(())
}

/// Runs `writers` connections inserting into `table` for `duration`; returns transactions/s.
async fn write_load(url: &str, table: &str, duration: Duration, writers: usize) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let mut conn = PgConnection::connect(url).await?;
        let stop = stop.clone();
        let sql = format!("INSERT INTO {table} (sent_micros, payload) VALUES ($1, 'x')");
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sqlx::query(&sql)
                    .bind(now_micros())
                    .execute(&mut conn)
                    .await?;
                done += 1;
            }
            Ok::<_, sqlx::Error>(done)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

struct Subscriber {
    task: tokio::task::JoinHandle<Result<Vec<i64>>>,
    stop: Arc<AtomicBool>,
}

async fn subscribe(addr: std::net::SocketAddr) -> Result<Subscriber> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
    // The reader may still be connecting: retry until Subscribed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = pb::Request {
            request_id: 1,
            command: Some(pb::request::Command::Subscribe(pb::Subscribe {
                subscription_id: 1,
                source: Some(pb::subscribe::Source::Table(pb::TableFeed {
                    table: "public.watched".into(),
                    include_initial: false,
                })),
                resume_from: Default::default(),
            })),
        };
        ws.send(Message::Binary(request.encode_to_vec().into()))
            .await?;
        let Some(Ok(Message::Binary(bytes))) = ws.next().await else {
            anyhow::bail!("connection closed");
        };
        if let Some(pb::server_message::Message::Response(r)) =
            pb::ServerMessage::decode(bytes)?.message
        {
            if matches!(r.result, Some(pb::response::Result::Subscribed(_))) {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "could not subscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut latencies = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
            let Ok(Some(frame)) = next else {
                if stopped.load(Ordering::Relaxed) {
                    return Ok(latencies);
                }
                continue;
            };
            let Message::Binary(bytes) = frame? else {
                continue;
            };
            let Some(pb::server_message::Message::Event(event)) =
                pb::ServerMessage::decode(bytes)?.message
            else {
                continue;
            };
            let Some(pb::event::Body::Change(change)) = event.body else {
                continue;
            };
            let sent = change
                .new_row
                .as_ref()
                .and_then(|r| r.columns.get("sent_micros"))
                .and_then(|v| match v.kind {
                    Some(pb::value::Kind::Int(i)) => Some(i),
                    _ => None,
                });
            if let Some(sent) = sent {
                latencies.push(now_micros() - sent);
            }
        }
    });
    Ok(Subscriber { task, stop })
}

impl Subscriber {
    /// Stops once the writers are done and the feed has gone quiet; returns latencies (µs).
    async fn finish(self, _rate: f64) -> Result<Vec<i64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}
