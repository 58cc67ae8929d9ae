//! The scenarios: each runs one workload against one system and returns its figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use feedgate::protocol::now_micros;

use crate::load::{self, Expected, Source};
use crate::systems::{Proto, Running};
use crate::worker;

/// How long a receiver waits for one more delivery before giving up.
const IDLE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub connections: usize,
    /// Messages published (fan-out) or rows written (commit to client).
    pub sent: u64,
    pub deliveries: u64,
    pub expected: u64,
    /// From the first publish (or write) to the last delivery.
    pub seconds: f64,
    pub deliveries_per_second: f64,
    pub latency: Latency,
    /// Subscribers that ended with an error (closed as slow consumers, ...).
    pub failed: usize,
}

/// Opens `connections` subscribers to `source`; each receives what the [`Expected`] given to
/// `finish` has for it (known once the load is over) or gives up after IDLE without a delivery.
/// Up to [`worker::per_process`] run in this process; the rest in worker processes of that many
/// each, from 127.0.0.2, 127.0.0.3...
pub struct Subscribers {
    tasks: JoinSet<Result<(load::Received, Histogram<u64>)>>,
    workers: JoinSet<Result<worker::Part>>,
    expected: tokio::sync::watch::Sender<Expected>,
    connections: usize,
}

pub async fn subscribers(
    running: &Running,
    connections: usize,
    source: Source,
) -> Result<Subscribers> {
    let (ready_tx, mut ready_rx) = mpsc::channel(connections.max(1));
    let (expected, expected_rx) = tokio::sync::watch::channel(Expected::Unknown);
    let spec = |first, connections, bind| worker::Spec {
        url: running.url.clone(),
        proto: running.proto,
        source: source.clone(),
        first,
        connections,
        bind,
        idle_ms: IDLE.as_millis() as u64,
    };
    let per_process = worker::per_process();
    let here = connections.min(per_process);
    let tasks = worker::spawn(&spec(0, here, None), &ready_tx, &expected_rx);
    let mut workers = JoinSet::new();
    let mut first = here;
    let mut host = 2;
    while first < connections {
        let n = (connections - first).min(per_process);
        let bind = Some(std::net::Ipv4Addr::new(127, 0, 0, host));
        workers.spawn(worker::run(
            spec(first, n, bind),
            ready_tx.clone(),
            expected_rx.clone(),
        ));
        (first, host) = (first + n, host + 1);
    }
    drop(ready_tx);
    for _ in 0..connections {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    Ok(Subscribers {
        tasks,
        workers,
        expected,
        connections,
    })
}

impl Subscribers {
    /// `expected`: what each subscriber receives once the load is over; `start_us`: when the
    /// load began (wall clock, µs).
    pub async fn finish(
        mut self,
        sent: u64,
        expected: Expected,
        start_us: i64,
    ) -> Result<Delivery> {
        let connections = self.connections;
        let total = expected.total(connections);
        let _ = self.expected.send(expected);
        let mut parts = vec![worker::collect(&mut self.tasks).await?];
        while let Some(part) = self.workers.join_next().await {
            parts.push(part??);
        }
        let mut histogram = load::histogram();
        let (mut deliveries, mut failed, mut last_us) = (0, 0, start_us);
        for part in &parts {
            deliveries += part.deliveries;
            failed += part.failed;
            last_us = last_us.max(part.last_us.unwrap_or(start_us));
            histogram.add(part.histogram()?)?;
        }
        let seconds = ((last_us - start_us) as f64 / 1e6).max(1e-9);
        Ok(Delivery {
            connections,
            sent,
            deliveries,
            expected: total,
            seconds,
            deliveries_per_second: deliveries as f64 / seconds,
            latency: Latency::of(&histogram),
            failed,
        })
    }
}

/// Fan-out: `connections` subscribers to one topic; one publisher sends `messages` 256-byte
/// messages as fast as the system accepts them (or at `rate` per second).
pub async fn fanout(
    running: &Running,
    connections: usize,
    messages: u64,
    rate: Option<f64>,
) -> Result<Delivery> {
    let subs = subscribers(running, connections, Source::Topic("bench.fanout".into())).await?;
    let mut publisher = load::connect(&running.url).await?;
    let start = now_micros();
    let sent = load::publish(
        running.proto,
        &mut publisher,
        "bench.fanout",
        messages,
        256,
        rate,
    )
    .await?;
    let result = subs.finish(sent, Expected::Each(sent), start).await;
    drop(publisher);
    result
}

/// `connections` subscribers to `topic` from its earliest record, each until it has `records`.
pub async fn from_earliest(
    running: &Running,
    connections: usize,
    topic: &str,
    records: u64,
) -> Result<Delivery> {
    let start = now_micros();
    let source = Source::TopicFromEarliest(topic.to_string());
    let subs = subscribers(running, connections, source).await?;
    subs.finish(records, Expected::Each(records), start).await
}

/// The table every commit-to-client run writes: a timestamp column the subscribers read.
pub async fn create_table(db: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, sent_us bigint NOT NULL, body text NOT NULL)"
    ))
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Makes `table` send its changes to `proto`'s system.
pub async fn watch(db: &mut PgConnection, proto: Proto, table: &str) -> Result<()> {
    let function = match proto {
        Proto::Feedgate => "feedgate.watch",
        _ => "peer_watch",
    };
    call_on_table(db, function, table).await
}

/// `SELECT function('public.<table>')`: watching or unwatching a table.
pub async fn call_on_table(db: &mut PgConnection, function: &str, table: &str) -> Result<()> {
    sqlx::query(&format!("SELECT {function}($1)"))
        .bind(format!("public.{table}"))
        .execute(&mut *db)
        .await
        .with_context(|| format!("{function}({table})"))?;
    Ok(())
}

/// Rows per transaction for a paced write load: one up to 1,000 rows/s, then one more per
/// 1,000 rows/s (8 synchronous-commit writers sharing 2 cores with the server and 100
/// subscribers reach about 2,400 single-row transactions per second).
pub fn rows_per_transaction(rate: f64) -> u64 {
    (rate / 1000.0).ceil().max(1.0) as u64
}

/// `writers` writers insert into `table` for `seconds`: single-row transactions as fast as they
/// go, or, paced to `rate` rows/s in total, [`rows_per_transaction`] rows each; returns the rows
/// written. Each row's `sent_us` is the writer's clock just before its INSERT; with `random_key`
/// (column, keys), that column also gets a random key in 1..=keys, drawn by the database.
pub async fn write(
    database_url: &str,
    table: &str,
    random_key: Option<(&str, u32)>,
    writers: usize,
    seconds: f64,
    rate: Option<f64>,
) -> Result<u64> {
    let (key_column, key_value) = match random_key {
        Some((column, keys)) => (
            format!(", {column}"),
            format!(", 1 + floor(random() * {keys})::int"),
        ),
        None => (String::new(), String::new()),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = JoinSet::new();
    // Paced writers put more rows in one transaction once single-row commits cannot reach the
    // rate on these cores.
    let batch = rate.map_or(1, rows_per_transaction);
    let sql = format!(
        "INSERT INTO {table} (sent_us, body{key_column}) \
         SELECT $1, 'x'{key_value} FROM generate_series(1, {batch})"
    );
    for _ in 0..writers {
        let (url, sql) = (database_url.to_string(), sql.clone());
        tasks.spawn(async move {
            let mut db = PgConnection::connect(&url).await?;
            let start = Instant::now();
            let mut rows = 0u64;
            while Instant::now() < deadline {
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(rows as f64 * writers as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                sqlx::query(&sql)
                    .bind(now_micros())
                    .execute(&mut db)
                    .await?;
                rows += batch;
            }
            anyhow::Ok(rows)
        });
    }
    let mut rows = 0;
    while let Some(joined) = tasks.join_next().await {
        rows += joined??;
    }
    Ok(rows)
}

/// Commit to client: `connections` subscribers to one table while 8 writers insert at `rate`
/// rows/s for `seconds`; latency from the writer's timestamp to receipt.
pub async fn commit_to_client(
    running: &Running,
    db: &mut PgConnection,
    database_url: &str,
    connections: usize,
    rate: f64,
    seconds: f64,
) -> Result<Delivery> {
    let table = format!("bench_commit_{}", running.proto.name());
    create_table(db, &table).await?;
    watch(db, running.proto, &table).await?;
    let source = Source::Table(format!("public.{table}"));
    let subs = subscribers(running, connections, source).await?;
    let start = now_micros();
    let rows = write(database_url, &table, None, 8, seconds, Some(rate)).await?;
    subs.finish(rows, Expected::Each(rows), start).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub writers: usize,
    pub seconds: f64,
    pub plain_tps: f64,
    pub watched_tps: f64,
    pub ratio: f64,
}

/// Cost to the database: `writers` single-row INSERT transactions on a plain table, then on a
/// table watched by the system (which is running, with one subscriber draining it).
pub async fn db_cost(
    running: &Running,
    db: &mut PgConnection,
    database_url: &str,
    writers: usize,
    seconds: f64,
) -> Result<Cost> {
    let (plain, watched) = match running.proto {
        Proto::Feedgate => ("bench_cost_plain_f", "bench_cost_feedgate"),
        _ => ("bench_cost_plain_p", "bench_cost_python"),
    };
    create_table(db, plain).await?;
    create_table(db, watched).await?;
    watch(db, running.proto, watched).await?;
    let subs = subscribers(running, 1, Source::Table(format!("public.{watched}"))).await?;
    let plain_rows = write(database_url, plain, None, writers, seconds, None).await?;
    let start = now_micros();
    let watched_rows = write(database_url, watched, None, writers, seconds, None).await?;
    let _ = subs
        .finish(watched_rows, Expected::Each(watched_rows), start)
        .await?;
    let (plain_tps, watched_tps) = (plain_rows as f64 / seconds, watched_rows as f64 / seconds);
    Ok(Cost {
        writers,
        seconds,
        plain_tps,
        watched_tps,
        ratio: watched_tps / plain_tps,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub bytes_per_connection: f64,
    /// Topic subscriptions then opened on the first connections.
    pub subscriptions: u64,
    pub rss_with_subscriptions_kib: u64,
    pub bytes_per_subscription: f64,
}

/// RSS per idle connection: the server's RSS before and after `connections` connections that
/// completed their protocol's handshake and then stay idle. Then RSS per subscription: each of
/// the first `subscribed` connections subscribes to `per_connection` distinct topics.
pub async fn idle_memory(
    running: &Running,
    connections: usize,
    subscribed: usize,
    per_connection: u64,
) -> Result<Memory> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = running.rss_kib()?;
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (url, proto, gate) = (running.url.clone(), running.proto, gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut ws = load::connect(&url).await?;
            load::handshake(proto, &mut ws).await?;
            anyhow::Ok(ws)
        });
    }
    let mut open = Vec::with_capacity(connections);
    while let Some(joined) = tasks.join_next().await {
        open.push(joined??);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = running.rss_kib()?;
    let mut tasks = JoinSet::new();
    for (n, mut ws) in open.drain(..).enumerate() {
        let (proto, gate) = (running.proto, gate.clone());
        tasks.spawn(async move {
            if n < subscribed {
                let _permit = gate.acquire_owned().await?;
                load::subscribe_many(proto, &mut ws, &format!("idle.{n}"), per_connection).await?;
            }
            anyhow::Ok(ws)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        open.push(joined??);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_subscriptions = running.rss_kib()?;
    drop(open);
    let subscriptions = subscribed as u64 * per_connection;
    Ok(Memory {
        connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) * 1024) as f64 / connections as f64,
        subscriptions,
        rss_with_subscriptions_kib: with_subscriptions,
        bytes_per_subscription: (with_subscriptions.saturating_sub(after) * 1024) as f64
            / subscriptions.max(1) as f64,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub copy_seconds: f64,
    pub copy_rows_per_second: f64,
    /// feedgate's rows/s ÷ COPY's.
    pub ratio: f64,
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
    /// The server's CPU time during the snapshot ÷ its duration (1.0 = one core busy).
    pub server_cpu: f64,
    /// The same snapshot on a fresh server, on a connection also subscribed to a topic that
    /// another connection publishes 20 messages/s to.
    pub beside_live: BesideLive,
}

/// A snapshot next to live messages on one connection.
#[derive(Debug, Clone, Serialize)]
pub struct BesideLive {
    /// Subscribe to `Ready`.
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Topic messages published while the snapshot streamed, and how many arrived before
    /// `Ready` (the rest follow it).
    pub messages_sent: u64,
    pub messages_before_ready: u64,
    pub message_latency_p50_ms: f64,
    pub message_latency_max_ms: f64,
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
}

/// Initial snapshot: a fresh feedgate streams a `rows`-row table's INITIAL rows to one
/// subscriber; the limit is `psql -c "COPY t TO STDOUT"` of the same table (output discarded).
pub async fn snapshot(db: &mut PgConnection, database_url: &str, rows: u64) -> Result<Snapshot> {
    // feedgate's schema, in case no earlier scenario of this run started a feedgate.
    let migrated = std::process::Command::new(env!("CARGO_BIN_EXE_feedgate"))
        .args([
            "migrate",
            "--allow-anonymous",
            "--database-url",
            database_url,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("feedgate migrate")?;
    anyhow::ensure!(migrated.success(), "feedgate migrate failed: {migrated}");
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS bench_snapshot;
         CREATE TABLE bench_snapshot (id bigint PRIMARY KEY, name text NOT NULL,
                                      price numeric NOT NULL, at timestamptz NOT NULL);
         INSERT INTO bench_snapshot SELECT g, 'item ' || g, g * 1.25, now()
           FROM generate_series(1, {rows}) g"
    ))
    .execute(&mut *db)
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE bench_snapshot")
        .execute(&mut *db)
        .await?;
    watch(db, Proto::Feedgate, "bench_snapshot").await?;

    let start = Instant::now();
    let status = std::process::Command::new("psql")
        .args([database_url, "-qAtc", "COPY bench_snapshot TO STDOUT"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("psql")?;
    anyhow::ensure!(status.success(), "psql COPY failed: {status}");
    let copy_seconds = start.elapsed().as_secs_f64();

    let server = crate::systems::feedgate(Some(database_url))?;
    let rss_before_kib = server.rss_kib()?;
    let mut ws = load::connect(&server.url).await?;
    let (start, cpu_before) = (Instant::now(), server.cpu_seconds()?);
    let received = load::initial_rows(&mut ws, "public.bench_snapshot").await?;
    let seconds = start.elapsed().as_secs_f64();
    let server_cpu = (server.cpu_seconds()? - cpu_before) / seconds;
    anyhow::ensure!(received == rows, "{received} initial rows of {rows}");
    let (rows_per_second, copy_rows_per_second) =
        (rows as f64 / seconds, rows as f64 / copy_seconds);
    let peak_rss_kib = server.peak_rss_kib()?;
    drop(server);
    let beside_live = snapshot_beside_live(database_url, rows).await?;
    Ok(Snapshot {
        rows,
        seconds,
        rows_per_second,
        copy_seconds,
        copy_rows_per_second,
        ratio: rows_per_second / copy_rows_per_second,
        rss_before_kib,
        peak_rss_kib,
        server_cpu,
        beside_live,
    })
}

/// The snapshot of `bench_snapshot` on a fresh feedgate, on a connection that is also
/// subscribed to a topic which another connection publishes 20 messages/s to (the repro of a
/// connection once closed as a slow consumer because of its own snapshot).
async fn snapshot_beside_live(database_url: &str, rows: u64) -> Result<BesideLive> {
    let server = crate::systems::feedgate(Some(database_url))?;
    let rss_before_kib = server.rss_kib()?;
    let mut ws = load::connect(&server.url).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let url = server.url.clone();
    let ticker = tokio::spawn(async move { load::ticker(&url, "bench.ticks", stopped).await });
    let start = Instant::now();
    let (received, latencies) =
        load::initial_rows_beside(&mut ws, "public.bench_snapshot", Some("bench.ticks")).await?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let messages_sent = ticker.await??;
    anyhow::ensure!(received == rows, "{received} initial rows of {rows}");
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    let ms = |us: Option<&u64>| us.map_or(0.0, |&us| us as f64 / 1000.0);
    Ok(BesideLive {
        seconds,
        rows_per_second: rows as f64 / seconds,
        messages_sent,
        messages_before_ready: latencies.len() as u64,
        message_latency_p50_ms: ms(sorted.get(sorted.len() / 2)),
        message_latency_max_ms: ms(sorted.last()),
        rss_before_kib,
        peak_rss_kib: server.peak_rss_kib()?,
    })
}

/// Reconnecting table subscribers: resume against a fresh snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Resume {
    pub subscribers: usize,
    pub table_rows: u64,
    pub changes: u64,
    /// Every subscriber resumed from its cursor and reached `Ready`: seconds from the first
    /// `Subscribe` sent to the last `Ready`.
    pub resume_seconds: f64,
    /// Changes each resumed subscriber received before `Ready` (must be `changes`).
    pub resumed_changes_each: u64,
    /// The same subscribers subscribing afresh with `include_initial` instead.
    pub fresh_seconds: f64,
    /// Rows each fresh subscriber received before `Ready` (must be `table_rows`).
    pub fresh_rows_each: u64,
}

/// `subscribers` connections subscribe to a table of `table_rows` rows and keep `Ready`'s
/// cursor, disconnect; `changes` row updates are committed; then they all reconnect and resume
/// from their cursors (timed to the last `Ready`), and, for comparison, all subscribe afresh with
/// `include_initial` (timed the same way).
pub async fn resume(
    db: &mut PgConnection,
    database_url: &str,
    subscribers: usize,
    table_rows: u64,
    changes: u64,
) -> Result<Resume> {
    let server = crate::systems::feedgate(Some(database_url))?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS bench_resume;
         CREATE TABLE bench_resume (id bigint PRIMARY KEY, name text NOT NULL, n bigint NOT NULL);
         INSERT INTO bench_resume SELECT g, 'item ' || g, 0 FROM generate_series(1, {table_rows}) g"
    ))
    .execute(&mut *db)
    .await?;
    watch(db, Proto::Feedgate, "bench_resume").await?;
    let mut cursors = Vec::new();
    for _ in 0..subscribers {
        let mut ws = load::connect(&server.url).await?;
        let (_, cursor) =
            load::table_until_ready(&mut ws, "public.bench_resume", false, Default::default())
                .await?;
        cursors.push(cursor);
    }
    // All disconnected (the sockets closed as `ws` went); the changes commit meanwhile, 100 rows
    // per transaction.
    let per_transaction = 100.min(changes.max(1));
    let mut done = 0;
    while done < changes {
        let n = per_transaction.min(changes - done);
        sqlx::query(
            "UPDATE bench_resume SET n = n + 1 \
              WHERE id IN (SELECT 1 + (g % $3) FROM generate_series($1::int8, $1::int8 + $2 - 1) g)",
        )
        .bind(i64::try_from(done)?)
        .bind(i64::try_from(n)?)
        .bind(i64::try_from(table_rows)?)
        .execute(&mut *db)
        .await?;
        done += n;
    }
    let timed = |include_initial: bool, cursors: Vec<bytes::Bytes>| {
        let url = server.url.clone();
        async move {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for cursor in cursors {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut ws = load::connect(&url).await?;
                    let (received, _) = load::table_until_ready(
                        &mut ws,
                        "public.bench_resume",
                        include_initial,
                        cursor,
                    )
                    .await?;
                    anyhow::Ok(received)
                }));
            }
            let mut each = Vec::new();
            for task in tasks {
                each.push(task.await??);
            }
            anyhow::Ok((start.elapsed().as_secs_f64(), each))
        }
    };
    let (resume_seconds, resumed) = timed(false, cursors).await?;
    let (fresh_seconds, fresh) = timed(true, vec![bytes::Bytes::new(); subscribers]).await?;
    let resumed_changes_each = resumed.iter().copied().min().unwrap_or(0);
    anyhow::ensure!(
        resumed.iter().all(|&n| n == changes),
        "resumed subscribers got {resumed:?} changes, not {changes} each"
    );
    let fresh_rows_each = fresh.iter().copied().min().unwrap_or(0);
    anyhow::ensure!(
        fresh.iter().all(|&n| n == table_rows),
        "fresh subscribers got {fresh:?} rows, not {table_rows} each"
    );
    drop(server);
    Ok(Resume {
        subscribers,
        table_rows,
        changes,
        resume_seconds,
        resumed_changes_each,
        fresh_seconds,
        fresh_rows_each,
    })
}
