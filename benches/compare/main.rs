//! feedgate side by side with the systems users would pick instead, in the same run, so that
//! each figure is also a ratio that survives a noisy machine. Prints a table, writes a JSON
//! result file and PNG charts. Asserts nothing about speed.
//!
//! Systems: feedgate (release build), nats-server with its WebSocket listener (a Go fan-out
//! ceiling), and the Python peer in `bench/peers/python` (FastAPI + uvicorn + asyncpg
//! LISTEN/NOTIFY: what teams write today). Scenarios: fan-out, commit to client, cost to the
//! database, memory per idle connection and per subscription, initial snapshot against COPY,
//! filtered table subscribers with feedgate's filter index on and off (docs/benchmarks.md says
//! what each measures).
//!
//! Run through `bench/run [--quick|--full] [--only fanout,commit,sustain,cost,memory,snapshot,kafka,resume,filtered]`, which installs
//! and starts what is needed; directly: `cargo bench --bench compare -- --quick`.

mod capture;
mod chart;
mod filtered;
mod kafka;
mod load;
mod ranges;
mod scenarios;
mod systems;
mod worker;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use systems::{Proto, Running, System};

struct Args {
    full: bool,
    only: Option<Vec<String>>,
    out: PathBuf,
    charts: PathBuf,
    /// Redraw the table and charts from an earlier result file instead of running.
    from: Option<PathBuf>,
}

fn args() -> Args {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1).cloned())
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Args {
        full: raw.iter().any(|a| a == "--full"),
        only: value("--only").map(|v| v.split(',').map(str::to_string).collect()),
        out: value("--out").map_or_else(|| root.join("bench/results/latest.json"), PathBuf::from),
        charts: value("--charts").map_or_else(|| root.join("docs/benchmarks"), PathBuf::from),
        from: value("--from").map(PathBuf::from),
    }
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::args().any(|a| a == "--worker") {
        return runtime.block_on(worker::main());
    }
    runtime.block_on(run(args()))
}

/// One figure of one scenario for each system that ran it.
pub struct Row {
    /// What was run (`fan-out, 1000 subscribers`).
    pub scenario: String,
    /// What was measured (`deliveries/s`).
    pub figure: String,
    /// Whether more is better (deliveries/s) or less (latency, bytes).
    pub higher_is_better: bool,
    /// The figure per system.
    pub values: Vec<(System, f64)>,
    /// The chart this figure is a point of, and its x (connections, rows/s).
    pub chart: Option<&'static str>,
    /// This figure's x on that chart.
    pub x: Option<f64>,
}

async fn run(args: Args) -> Result<()> {
    if let Some(from) = &args.from {
        let report: Value = serde_json::from_slice(&std::fs::read(from)?)?;
        let rows =
            rows_of(&report).with_context(|| format!("{} is not a result file", from.display()))?;
        print_table(&rows);
        std::fs::create_dir_all(&args.charts)?;
        for path in chart::render(&rows, &args.charts)? {
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    let wants = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    let admin = std::env::var("FEEDGATE_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("feedgate_bench_{}", std::process::id());
    let mut admin_db = PgConnection::connect(&admin).await.context("PostgreSQL")?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin_db)
        .await?;
    let database_url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(&*admin, |(base, _)| base)
    );
    let result = scenarios(&args, &wants, &database_url).await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin_db)
        .await?;
    let (rows, details) = result?;
    print_table(&rows);
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpu": cpu_model(),
    });
    let report = json!({
        "mode": if args.full { "full" } else { "quick" },
        "machine": machine,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "figures": rows.iter().map(|r| json!({
            "scenario": r.scenario, "figure": r.figure, "higher_is_better": r.higher_is_better,
            "chart": r.chart, "x": r.x,
            "values": r.values.iter().map(|(p, v)| (p.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "details": details,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwrote {}", args.out.display());
    std::fs::create_dir_all(&args.charts)?;
    for path in chart::render(&rows, &args.charts)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

async fn scenarios(
    args: &Args,
    wants: &dyn Fn(&str) -> bool,
    database_url: &str,
) -> Result<(Vec<Row>, Value)> {
    let mut db = PgConnection::connect(database_url).await?;
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    // Fresh processes for each run: a system still working off an earlier run's backlog (the
    // Python peer after 10,000-connection fan-out) would take CPU from the next one's figures.
    let fresh = || -> Result<[Running; 3]> {
        Ok([
            systems::feedgate(Some(database_url))?,
            systems::nats()?,
            systems::python(database_url)?,
        ])
    };

    if wants("fanout") {
        let runs: &[(usize, u64, Option<f64>)] = if args.full {
            &[
                (1000, 5000, None),
                (10_000, 200, Some(100.0)),
                (18_000, 100, Some(20.0)),
            ]
        } else {
            &[(1000, 1000, None)]
        };
        for &(connections, messages, rate) in runs {
            let systems = fresh()?;
            let scenario = format!(
                "fan-out, {connections} connections{}",
                rate.map_or(String::new(), |r| format!(", {r} msg/s"))
            );
            let mut rate_row = row(&scenario, "deliveries/s", true);
            if rate.is_none() || args.full {
                (rate_row.chart, rate_row.x) = (Some("fanout"), Some(connections as f64));
            }
            let mut p99_row = row(&scenario, "p99 latency (ms)", false);
            let mut share = row(&scenario, "delivered (% of expected)", true);
            for system in &systems {
                // The Python peer fans out ~100x slower: fewer messages keep its run short.
                let messages = if system.proto == Proto::Python && !args.full {
                    messages / 5
                } else {
                    messages
                };
                eprintln!("{scenario}: {} ({messages} messages)", system.proto.name());
                let figures = scenarios::fanout(system, connections, messages, rate).await?;
                rate_row
                    .values
                    .push((system.system, figures.deliveries_per_second));
                p99_row.values.push((system.system, figures.latency.p99_ms));
                let percent = 100.0 * figures.deliveries as f64 / figures.expected.max(1) as f64;
                share.values.push((system.system, percent));
                details.insert(
                    format!("{scenario} / {}", system.proto.name()),
                    serde_json::to_value(&figures)?,
                );
            }
            rows.extend([rate_row, p99_row, share]);
        }
    }

    if wants("commit") {
        let rates: &[f64] = if args.full {
            &[1000.0, 10_000.0]
        } else {
            &[1000.0]
        };
        let seconds = if args.full { 10.0 } else { 3.0 };
        for &rate in rates {
            let [feedgate, _, python] = fresh()?;
            let scenario = format!("commit to client, 100 subscribers, {rate} rows/s");
            let mut p50 = row(&scenario, "p50 latency (ms)", false);
            let mut p99 = row(&scenario, "p99 latency (ms)", false);
            let mut p999 = row(&scenario, "p99.9 latency (ms)", false);
            let mut achieved = row(&scenario, "rows/s written (target: the rate)", true);
            for system in [&feedgate, &python] {
                eprintln!("{scenario}: {}", system.proto.name());
                let figures =
                    scenarios::commit_to_client(system, &mut db, database_url, 100, rate, seconds)
                        .await?;
                p50.values.push((system.system, figures.latency.p50_ms));
                p99.values.push((system.system, figures.latency.p99_ms));
                p999.values.push((system.system, figures.latency.p999_ms));
                achieved
                    .values
                    .push((system.system, figures.sent as f64 / seconds));
                details.insert(
                    format!("{scenario} / {}", system.proto.name()),
                    serde_json::to_value(&figures)?,
                );
            }
            for r in [&mut p50, &mut p99, &mut p999] {
                (r.chart, r.x) = (Some("commit"), Some(rate));
            }
            rows.extend([p50, p99, p999, achieved]);
        }
        // The same at 1,000 rows/s on the benchmark's wal_level = logical cluster, feedgate
        // capturing from the write-ahead log, and with row triggers on that same cluster for a
        // like-for-like comparison (issue 19's target: p99 no worse than trigger mode).
        for mode in [capture::Mode::Logical, capture::Mode::Trigger] {
            let (rate, seconds) = (1000.0, if args.full { 10.0 } else { 3.0 });
            let scenario = format!(
                "commit to client, 100 subscribers, {rate} rows/s, capture = {} (wal_level = logical, fsync on)",
                mode.name()
            );
            eprintln!("{scenario}: feedgate");
            let figures = capture::commit_to_client(mode, rate, seconds).await?;
            let mut figure = |name: &str, higher: bool, value: f64| {
                let mut r = row(&scenario, name, higher);
                r.values.push((System::Feedgate, value));
                rows.push(r);
            };
            figure("p50 latency (ms)", false, figures.latency.p50_ms);
            figure("p99 latency (ms)", false, figures.latency.p99_ms);
            figure("p99.9 latency (ms)", false, figures.latency.p999_ms);
            let achieved = figures.sent as f64 / seconds;
            figure("rows/s written (target: the rate)", true, achieved);
            details.insert(scenario, serde_json::to_value(&figures)?);
        }
    }

    if wants("sustain") {
        // The highest paced write rate each system serves to 100 subscribers with p99 under
        // 50 ms, doubling the rate until a step fails.
        let seconds = if args.full { 5.0 } else { 2.0 };
        let scenario = "commit to client, 100 subscribers, highest rate with p99 < 50 ms";
        let mut best = row(scenario, "rows/s", true);
        let [feedgate, _, python] = fresh()?;
        for system in [&feedgate, &python] {
            let mut sustained = 0.0;
            let mut steps = Vec::new();
            let mut rate = 500.0;
            while rate <= 64_000.0 {
                eprintln!("{scenario}: {} at {rate} rows/s", system.proto.name());
                let figures =
                    scenarios::commit_to_client(system, &mut db, database_url, 100, rate, seconds)
                        .await?;
                let achieved = figures.sent as f64 / seconds;
                let ok = figures.latency.p99_ms < 50.0 && achieved >= 0.9 * rate;
                steps.push(json!({"rate": rate, "achieved": achieved, "p99_ms": figures.latency.p99_ms,
                    "rows_per_transaction": scenarios::rows_per_transaction(rate), "sustained": ok}));
                if !ok {
                    break;
                }
                sustained = rate;
                rate *= 2.0;
            }
            best.values.push((system.system, sustained));
            details.insert(
                format!("{scenario} / {}", system.proto.name()),
                json!(steps),
            );
        }
        rows.push(best);
    }

    if wants("cost") {
        let seconds = if args.full { 10.0 } else { 3.0 };
        let scenario = "cost to the database, 8 writers".to_string();
        let mut ratio = row(&scenario, "watched ÷ plain throughput", true);
        let [feedgate, _, python] = fresh()?;
        for system in [&feedgate, &python] {
            eprintln!("{scenario}: {}", system.proto.name());
            let figures = scenarios::db_cost(system, &mut db, database_url, 8, seconds).await?;
            ratio.values.push((system.system, figures.ratio));
            details.insert(
                format!("{scenario} / {}", system.proto.name()),
                serde_json::to_value(&figures)?,
            );
        }
        rows.push(ratio);
        // Capture modes side by side on the benchmark's wal_level = logical cluster (issue 19).
        let (more_rows, more) = capture::cost(args.full).await?;
        rows.extend(more_rows);
        details.extend(more);
    }

    if wants("memory") {
        let (connections, subscribed) = if args.full {
            (10_000, 1_000)
        } else {
            (2_000, 200)
        };
        let scenario = format!("memory, {connections} idle connections");
        let subscriptions = subscribed * 100;
        let mut per = row(&scenario, "bytes per connection", false);
        let mut per_sub = row(
            &format!("memory, {subscriptions} subscriptions on {subscribed} connections"),
            "bytes per subscription",
            false,
        );
        // Fresh processes (feedgate without a database): what earlier scenarios left allocated
        // (or a GC returned) would blur it.
        let systems = [
            systems::feedgate(None)?,
            systems::nats()?,
            systems::python(database_url)?,
        ];
        for system in &systems {
            eprintln!("{scenario}: {}", system.proto.name());
            let figures = scenarios::idle_memory(system, connections, subscribed, 100).await?;
            per.values
                .push((system.system, figures.bytes_per_connection));
            per_sub
                .values
                .push((system.system, figures.bytes_per_subscription));
            details.insert(
                format!("{scenario} / {}", system.proto.name()),
                serde_json::to_value(&figures)?,
            );
        }
        rows.push(per);
        rows.push(per_sub);
    }

    if wants("kafka") {
        let bootstrap =
            std::env::var("FEEDGATE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let records = if args.full { 100_000 } else { 20_000 };
        let scenario = format!("kafka to client, 100 subscribers, {records} records");
        eprintln!("{scenario}: raw librdkafka consumer, then feedgate");
        let figures = kafka::kafka_to_client(&bootstrap, records, 100).await?;
        let mut rate = row(&scenario, "deliveries/s (raw consumer: records/s)", true);
        rate.values
            .push((System::Feedgate, figures.deliveries_per_second));
        let mut ratio = row(&scenario, "÷ raw librdkafka records/s", true);
        ratio.values.push((System::Feedgate, figures.ratio));
        details.insert(scenario.clone(), serde_json::to_value(&figures)?);
        rows.extend([rate, ratio]);
    }

    if wants("snapshot") {
        let sizes: &[u64] = if args.full {
            &[100_000, 1_000_000]
        } else {
            &[200_000]
        };
        for &size in sizes {
            let scenario = format!("initial snapshot, {size} rows");
            eprintln!("{scenario}: feedgate and psql COPY");
            let figures = scenarios::snapshot(&mut db, database_url, size).await?;
            let mut rate = row(&scenario, "rows/s", true);
            rate.values
                .push((System::Feedgate, figures.rows_per_second));
            let mut ratio = row(&scenario, "÷ COPY rows/s", true);
            ratio.values.push((System::Feedgate, figures.ratio));
            let mut peak = row(&scenario, "peak RSS growth (KiB)", false);
            let growth = figures.peak_rss_kib.saturating_sub(figures.rss_before_kib);
            peak.values.push((System::Feedgate, growth as f64));
            let live = &figures.beside_live;
            let mut beside = row(&scenario, "rows/s beside a live topic (20 msg/s)", true);
            beside.values.push((System::Feedgate, live.rows_per_second));
            let mut latency = row(&scenario, "live message max latency during it (ms)", false);
            latency
                .values
                .push((System::Feedgate, live.message_latency_max_ms));
            details.insert(scenario.clone(), serde_json::to_value(&figures)?);
            rows.extend([rate, ratio, peak, beside, latency]);
        }
    }
    if wants("resume") {
        let (table_rows, changes) = if args.full {
            (100_000, 10_000)
        } else {
            (20_000, 2_000)
        };
        let scenario = format!(
            "resume, 100 table subscribers, {changes} changes missed, {table_rows}-row table"
        );
        eprintln!("{scenario}: feedgate");
        let figures = scenarios::resume(&mut db, database_url, 100, table_rows, changes).await?;
        let mut resumed = row(&scenario, "seconds to all Ready, resuming", false);
        resumed
            .values
            .push((System::Feedgate, figures.resume_seconds));
        let mut fresh = row(
            &scenario,
            "seconds to all Ready, fresh include_initial",
            false,
        );
        fresh.values.push((System::Feedgate, figures.fresh_seconds));
        details.insert(scenario.clone(), serde_json::to_value(&figures)?);
        rows.extend([resumed, fresh]);
    }
    if wants("filtered") {
        let (filtered, more) = filtered::run(args.full, &mut db, database_url).await?;
        rows.extend(filtered);
        details.extend(more);
    }
    Ok((rows, Value::Object(details)))
}

/// The rows of a result file (the inverse of what `run` writes).
fn rows_of(report: &Value) -> Option<Vec<Row>> {
    let mut rows = Vec::new();
    for figure in report["figures"].as_array()? {
        let values = figure["values"]
            .as_object()?
            .iter()
            .filter_map(|(name, v)| {
                let system = System::ALL.into_iter().find(|s| s.name() == name)?;
                Some((system, v.as_f64()?))
            })
            .collect();
        rows.push(Row {
            scenario: figure["scenario"].as_str()?.to_string(),
            figure: figure["figure"].as_str()?.to_string(),
            higher_is_better: figure["higher_is_better"].as_bool()?,
            values,
            chart: match figure["chart"].as_str() {
                Some("fanout") => Some("fanout"),
                Some("commit") => Some("commit"),
                _ => None,
            },
            x: figure["x"].as_f64(),
        });
    }
    Some(rows)
}

fn row(scenario: &str, figure: &str, higher_is_better: bool) -> Row {
    Row {
        scenario: scenario.into(),
        figure: figure.into(),
        higher_is_better,
        values: Vec::new(),
        chart: None,
        x: None,
    }
}

/// The figure `row` has for `system`, if that system ran it.
pub fn value_of(row: &Row, system: System) -> Option<f64> {
    row.values
        .iter()
        .find(|(s, _)| *s == system)
        .map(|(_, v)| *v)
}

/// The table: feedgate, nats and python always; other columns (feedgate with a feature off)
/// only when a row has a figure for them.
fn print_table(rows: &[Row]) {
    let columns: Vec<System> = System::ALL
        .into_iter()
        .filter(|&s| s != System::FeedgateNoIndex || rows.iter().any(|r| value_of(r, s).is_some()))
        .collect();
    let others = || columns.iter().filter(|&&s| s != System::Feedgate);
    let mut header = String::from("| scenario | figure |");
    for system in &columns {
        header += &format!(" {} |", system.name());
    }
    for system in others() {
        header += &format!(" feedgate vs {} |", system.name());
    }
    println!("\n{header}");
    println!("|---|---|{}", "---|".repeat(columns.len() * 2 - 1));
    for row in rows {
        let cell = |s| value_of(row, s).map_or("—".to_string(), format_value);
        let ratio = |s| match (value_of(row, System::Feedgate), value_of(row, s)) {
            (Some(f), Some(o)) if f > 0.0 && o > 0.0 => {
                let r = if row.higher_is_better { f / o } else { o / f };
                format!("{r:.2}×")
            }
            _ => "—".into(),
        };
        let mut line = format!("| {} | {} |", row.scenario, row.figure);
        for &system in &columns {
            line += &format!(" {} |", cell(system));
        }
        for &system in others() {
            line += &format!(" {} |", ratio(system));
        }
        println!("{line}");
    }
    println!("\n(ratios: how many times better feedgate is; below 1× it is worse)");
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
