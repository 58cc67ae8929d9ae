//! Capture from the write-ahead log (issue 19): what watching tables costs writers in each
//! capture mode, and commit-to-client latency in logical mode. Runs on the benchmark's own
//! PostgreSQL cluster with `wal_level = logical`, fsync and synchronous commit on
//! (`FEEDGATE_BENCH_LOGICAL_URL`, started by `bench/run`), not on the machine's server: logical
//! decoding needs that `wal_level`, and WAL bytes per transaction can only be read off
//! `pg_current_wal_lsn()` on a cluster nothing else writes to.
//!
//! Each mode gets a database of its own and a feedgate started with `changefeed.capture` set to
//! it: the first node to start on a database decides its mode for good, so the modes cannot
//! share one. Workloads: 8 single-row writers (the cost scenario's), and `pgbench` TPC-B with
//! its three keyed tables watched (`pgbench_history` has no key and stays unwatched).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use feedgate::protocol::now_micros;

use crate::load::{Expected, Source};
use crate::scenarios::{self, Delivery};
use crate::systems::{self, Proto, Running, System};
use crate::{row, Row};

/// Writers of the single-row workload and clients of pgbench, as in the cost scenario.
const WRITERS: usize = 8;
/// pgbench's scale: 8 branches, so that its 8 clients do not all queue on one branch row.
const PGBENCH_SCALE: u32 = 8;
/// The tables pgbench updates that have a primary key.
const PGBENCH_WATCHED: [&str; 3] = ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"];

/// `changefeed.capture`, as the server is configured for one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Logical,
    Trigger,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Logical => "logical",
            Mode::Trigger => "trigger",
        }
    }
}

/// The benchmark cluster's admin URL (`bench/run` exports it).
fn admin_url() -> Result<String> {
    std::env::var("FEEDGATE_BENCH_LOGICAL_URL")
        .context("FEEDGATE_BENCH_LOGICAL_URL is not set: run the benchmark with bench/run")
}

/// A fresh database on the benchmark cluster for one mode; `close` drops it with its slots.
pub struct BenchDb {
    admin: PgConnection,
    name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(mode: Mode) -> Result<Self> {
        let admin_url = admin_url()?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("the benchmark's PostgreSQL cluster (wal_level = logical)")?;
        // What an interrupted run left: its slot would keep WAL until the disk fills.
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'feedgate\\_bench\\_%'",
        )
        .fetch_all(&mut admin)
        .await?;
        for name in stale {
            drop_database(&mut admin, &name).await?;
        }
        let name = format!("feedgate_bench_{}_{}", mode.name(), std::process::id());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let base = admin_url.rsplit_once('/').map_or(&*admin_url, |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok(Self { admin, name, url })
    }

    pub async fn close(mut self) -> Result<()> {
        drop_database(&mut self.admin, &self.name).await
    }
}

/// Drops `name`, its replication slots first (a database with a slot cannot be dropped; a slot
/// still held by a walsender that is going away is retried).
async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<()> {
    for _ in 0..200 {
        sqlx::query(
            "SELECT CASE WHEN active_pid IS NOT NULL THEN pg_terminate_backend(active_pid) \
                         ELSE pg_drop_replication_slot(slot_name) IS NULL END \
               FROM pg_replication_slots WHERE database = $1",
        )
        .bind(name)
        .execute(&mut *admin)
        .await?;
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE database = $1")
                .bind(name)
                .fetch_one(&mut *admin)
                .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut *admin)
        .await?;
    Ok(())
}

/// feedgate configured with `changefeed.capture = mode` on `db`, checked to have chosen it (it
/// refuses to start in logical mode when it cannot; the check guards against a database some
/// earlier node had already decided for).
async fn feedgate(db: &mut PgConnection, url: &str, mode: Mode) -> Result<Running> {
    let toml = format!("[changefeed]\ncapture = \"{}\"\n", mode.name());
    let running = systems::feedgate_with(Some(url), Some(&toml))?;
    for _ in 0..200 {
        let chosen: Option<String> = sqlx::query_scalar("SELECT mode FROM feedgate.capture")
            .fetch_one(&mut *db)
            .await
            .context("feedgate.capture")?;
        if let Some(chosen) = chosen {
            ensure!(
                chosen == mode.name(),
                "feedgate captures with {chosen}, not {}",
                mode.name()
            );
            return Ok(running);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("feedgate did not record its capture mode")
}

/// The cluster's WAL insert position.
async fn wal_lsn(db: &mut PgConnection) -> Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut *db)
        .await?)
}

/// WAL bytes written since `lsn`, by anything on the cluster: in logical mode that includes the
/// capturing node's appends to `feedgate.changes`, a cost the database pays too.
async fn wal_since(db: &mut PgConnection, lsn: &str) -> Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(lsn)
            .fetch_one(&mut *db)
            .await?,
    )
}

/// One load run: transactions/s and WAL bytes per transaction.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Run {
    pub tps: f64,
    pub transactions: u64,
    pub wal_bytes_per_transaction: f64,
}

/// A plain run and the watched run that followed it.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub plain: Run,
    pub watched: Run,
    pub ratio: f64,
    /// The subscriber that drained the watched run: what it received of what it expected. The
    /// load generator counts (and times) only rows with a `sent_us` column, so for pgbench's
    /// tables this reads zero: that subscriber reads its events without counting them.
    pub drained: Delivery,
}

/// One workload in one mode: every pair, and the one with the median ratio (its figures are
/// the ones reported).
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub mode: Mode,
    pub workload: &'static str,
    pub seconds: f64,
    pub pairs: Vec<Pair>,
    pub median: Pair,
    /// Logical mode: the plain run once more, before feedgate started. The slot's walsender
    /// decodes all of the cluster's WAL, watched tables or not, so the plain runs beside it may
    /// already pay part of the cost; this is the throughput with no feedgate at all.
    pub no_feedgate: Option<Run>,
}

impl Cost {
    fn of(mode: Mode, workload: &'static str, seconds: f64, pairs: Vec<Pair>) -> Result<Self> {
        let mut sorted = pairs.clone();
        sorted.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        let median = sorted.get(sorted.len() / 2).context("no runs")?.clone();
        Ok(Self {
            mode,
            workload,
            seconds,
            pairs,
            median,
            no_feedgate: None,
        })
    }
}

/// `load` timed with the cluster's WAL position around it; `load` returns (transactions, tps).
async fn measured<F>(db: &mut PgConnection, load: F) -> Result<Run>
where
    F: std::future::Future<Output = Result<(u64, f64)>>,
{
    let lsn = wal_lsn(db).await?;
    let (transactions, tps) = load.await?;
    let wal = wal_since(db, &lsn).await?;
    Ok(Run {
        tps,
        transactions,
        wal_bytes_per_transaction: wal / transactions.max(1) as f64,
    })
}

/// The watched half of a pair, after `plain`: one subscriber to `source` drains `load`.
/// Subscribed after the plain run, not before: a receiver gives up after 15 s without a frame,
/// which a 30 s plain run (--full) would outlast.
async fn watched_run<F>(
    running: &Running,
    db: &mut PgConnection,
    source: Source,
    plain: Run,
    load: F,
) -> Result<Pair>
where
    F: std::future::Future<Output = Result<(u64, f64)>>,
{
    let subs = scenarios::subscribers(running, 1, source).await?;
    let start = now_micros();
    let watched = measured(db, load).await?;
    let n = watched.transactions;
    let drained = subs.finish(n, Expected::Each(n), start).await?;
    let ratio = watched.tps / plain.tps;
    Ok(Pair {
        plain,
        watched,
        ratio,
        drained,
    })
}

/// 8 single-row writers on a plain table, then on a watched one (`REPLICA IDENTITY FULL` in
/// logical mode, through `feedgate.watch`, as in production), with one subscriber draining
/// the watched table; `runs` pairs.
async fn writers(
    running: &Running,
    db: &mut PgConnection,
    url: &str,
    mode: Mode,
    runs: usize,
    seconds: f64,
) -> Result<Cost> {
    let (plain, watched) = ("bench_wal_plain", "bench_wal_watched");
    scenarios::create_table(db, plain).await?;
    scenarios::create_table(db, watched).await?;
    scenarios::watch(db, Proto::Feedgate, watched).await?;
    let mut pairs = Vec::new();
    for _ in 0..runs {
        let write = |table| single_row(url, table, seconds);
        let plain = measured(db, write(plain)).await?;
        let source = Source::Table(format!("public.{watched}"));
        pairs.push(watched_run(running, db, source, plain, write(watched)).await?);
    }
    Cost::of(mode, "8 single-row writers", seconds, pairs)
}

/// 8 writers of single-row INSERT transactions into `table` for `seconds`: (transactions, tps).
async fn single_row(url: &str, table: &str, seconds: f64) -> Result<(u64, f64)> {
    let rows = scenarios::write(url, table, None, WRITERS, seconds, None).await?;
    Ok((rows, rows as f64 / seconds))
}

/// `pgbench` (the machine's, `FEEDGATE_BENCH_PGBENCH`) with `args` against `url`; its output.
async fn pgbench(url: &str, args: &[&str]) -> Result<String> {
    let bin = std::env::var("FEEDGATE_BENCH_PGBENCH").unwrap_or_else(|_| "pgbench".into());
    // tokio's process: a blocking wait would take one of the runtime's threads from the
    // subscriber that drains the run.
    let output = tokio::process::Command::new(&bin)
        .args(args)
        .arg(url)
        .output()
        .await
        .with_context(|| format!("cannot run {bin}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{bin} {args:?} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(text)
}

/// TPC-B for `seconds`: (transactions processed, tps without connection time).
async fn tpc_b(url: &str, seconds: f64) -> Result<(u64, f64)> {
    let (clients, time) = (WRITERS.to_string(), format!("{}", seconds.round() as u64));
    let out = pgbench(url, &["-c", &clients, "-j", "2", "-T", &time, "-n"]).await?;
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no `{prefix}` in pgbench's output:\n{out}"))
    };
    let transactions = field("number of transactions actually processed: ")?.parse()?;
    let tps = field("tps = ")?.parse()?;
    Ok((transactions, tps))
}

async fn set_watched(db: &mut PgConnection, on: bool) -> Result<()> {
    let function = if on {
        "feedgate.watch"
    } else {
        "feedgate.unwatch"
    };
    for table in PGBENCH_WATCHED {
        scenarios::call_on_table(db, function, table).await?;
    }
    Ok(())
}

/// pgbench TPC-B, `-c 8 -j 2`: for each of `runs` pairs, freshly initialised tables (scale 8),
/// a plain run, then the same with the three keyed tables watched and one subscriber draining
/// `pgbench_branches` (one update per transaction), then unwatched again for the next pair.
async fn tpc_b_pairs(
    running: &Running,
    db: &mut PgConnection,
    url: &str,
    mode: Mode,
    runs: usize,
    seconds: f64,
) -> Result<Cost> {
    let mut pairs = Vec::new();
    for _ in 0..runs {
        pgbench(url, &["-i", "-q", "-s", &PGBENCH_SCALE.to_string()]).await?;
        let plain = measured(db, tpc_b(url, seconds)).await?;
        set_watched(db, true).await?;
        let source = Source::Table("public.pgbench_branches".into());
        pairs.push(watched_run(running, db, source, plain, tpc_b(url, seconds)).await?);
        set_watched(db, false).await?;
    }
    Cost::of(mode, "pgbench TPC-B, 8 clients", seconds, pairs)
}

/// The cost scenario in both modes on the benchmark cluster: quick, one 8 s pair per workload;
/// full, three 30 s pairs, the median ratio reported.
pub async fn cost(full: bool) -> Result<(Vec<Row>, serde_json::Map<String, Value>)> {
    let (runs, seconds) = if full { (3, 30.0) } else { (1, 8.0) };
    let (mut rows, mut details) = (Vec::new(), serde_json::Map::new());
    for mode in [Mode::Logical, Mode::Trigger] {
        let bench = BenchDb::create(mode).await?;
        let result = cost_in(mode, &bench.url, runs, seconds).await;
        bench.close().await?;
        for cost in result? {
            rows.extend(cost_rows(&cost));
            details.insert(scenario_of(&cost), serde_json::to_value(&cost)?);
        }
    }
    Ok((rows, details))
}

async fn cost_in(mode: Mode, url: &str, runs: usize, seconds: f64) -> Result<Vec<Cost>> {
    let mut db = PgConnection::connect(url).await?;
    let baselines = match mode {
        Mode::Logical => Some(no_feedgate(&mut db, url, seconds).await?),
        Mode::Trigger => None,
    };
    let running = feedgate(&mut db, url, mode).await?;
    eprintln!("cost, capture = {}: 8 writers", mode.name());
    let mut writers = writers(&running, &mut db, url, mode, runs, seconds).await?;
    eprintln!("cost, capture = {}: pgbench TPC-B", mode.name());
    let mut tpc_b = tpc_b_pairs(&running, &mut db, url, mode, runs, seconds).await?;
    if let Some((w, t)) = baselines {
        (writers.no_feedgate, tpc_b.no_feedgate) = (Some(w), Some(t));
    }
    Ok(vec![writers, tpc_b])
}

/// One plain run of each workload on a database no feedgate has started on yet (no slot).
async fn no_feedgate(db: &mut PgConnection, url: &str, seconds: f64) -> Result<(Run, Run)> {
    eprintln!("cost, no feedgate running: 8 writers, pgbench TPC-B");
    let table = "bench_wal_plain";
    scenarios::create_table(db, table).await?;
    let writers = measured(db, single_row(url, table, seconds)).await?;
    pgbench(url, &["-i", "-q", "-s", &PGBENCH_SCALE.to_string()]).await?;
    let tpc_b = measured(db, tpc_b(url, seconds)).await?;
    Ok((writers, tpc_b))
}

fn scenario_of(cost: &Cost) -> String {
    format!(
        "cost to the database, {}, capture = {} (wal_level = logical, fsync on)",
        cost.workload,
        cost.mode.name()
    )
}

/// The table's rows of one workload in one mode (feedgate's column).
fn cost_rows(cost: &Cost) -> Vec<Row> {
    let scenario = scenario_of(cost);
    let m = &cost.median;
    [
        ("plain tps", m.plain.tps),
        ("watched tps", m.watched.tps),
        ("watched ÷ plain throughput", m.ratio),
        ("WAL bytes/txn, plain", m.plain.wal_bytes_per_transaction),
        (
            "WAL bytes/txn, watched",
            m.watched.wal_bytes_per_transaction,
        ),
    ]
    .into_iter()
    .chain(cost.no_feedgate.iter().flat_map(|b| {
        [
            ("plain tps, no feedgate running", b.tps),
            (
                "watched ÷ plain with no feedgate running",
                m.watched.tps / b.tps,
            ),
        ]
    }))
    .map(|(figure, value)| {
        let higher = !figure.starts_with("WAL");
        let mut r = row(&scenario, figure, higher);
        r.values.push((System::Feedgate, value));
        r
    })
    .collect()
}

/// Commit to client at `rate` rows/s with 100 subscribers, feedgate capturing in `mode` on the
/// benchmark cluster (the commit scenario's run, on a database of its own).
pub async fn commit_to_client(mode: Mode, rate: f64, seconds: f64) -> Result<Delivery> {
    let bench = BenchDb::create(mode).await?;
    let result = async {
        let mut db = PgConnection::connect(&bench.url).await?;
        let running = feedgate(&mut db, &bench.url, mode).await?;
        scenarios::commit_to_client(&running, &mut db, &bench.url, 100, rate, seconds).await
    }
    .await;
    bench.close().await?;
    result
}
