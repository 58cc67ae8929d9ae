//! Filtered subscribers (`--only filtered`): 10,000 subscriptions to one table, each with its
//! own `account_id = N` filter, and 100 with a range filter, while writers insert rows with
//! random account ids at a paced rate. Run on feedgate with its filter index on and off
//! (`changefeed.filter_index`), and on the Python peer, which asks every subscription's filter
//! about every change. Figures: deliveries/s, delivered against expected (computed from the rows
//! written per account), commit-to-client latency and the server's CPU.

use std::collections::HashMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use feedgate::protocol::now_micros;

use crate::load::{Expected, Source};
use crate::ranges::{KeyRanges, RangeGroup};
use crate::scenarios::{self, Delivery};
use crate::systems::{self, Running, System};
use crate::{row, Row};

/// Account ids written: 1..=ACCOUNTS, one `=` subscription each.
const ACCOUNTS: u32 = 10_000;
/// Subscriptions per connection.
const PER_CONNECTION: usize = 10;
/// Range subscriptions: they tile 1..=ACCOUNTS, ACCOUNTS / RANGES ids each, so every row
/// reaches exactly one `=` subscriber and one range subscriber.
const RANGES: usize = 100;
/// Concurrent writers, as in the commit-to-client scenario.
const WRITERS: usize = 8;

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Filtered {
    pub subscriptions: usize,
    /// Rows/s the writers were paced to.
    pub rate: f64,
    /// Seconds the writers wrote.
    pub write_seconds: f64,
    /// Seconds from the first connection to the last subscription's confirmation.
    pub subscribe_seconds: f64,
    /// Rows written (the table's count, per account, after the writers stopped).
    pub rows: u64,
    /// Deliveries and expected (from the rows per account), latency; `seconds` is from the
    /// first write to the last delivery.
    pub delivery: Delivery,
    /// The server's CPU time (user + system) from the first write until every subscriber had
    /// what it expected (or gave up).
    pub server_cpu_seconds: f64,
    /// That CPU time ÷ the time from the first write to the last delivery (100 = one core).
    pub server_cpu_percent: f64,
    /// That CPU time per row written, in µs.
    pub server_cpu_us_per_row: f64,
}

/// The subscriptions: ACCOUNTS / PER_CONNECTION connections of `account_id = N` filters, then
/// RANGES / PER_CONNECTION connections of `account_id >= a AND account_id < b` filters.
fn plan(table: &str) -> KeyRanges {
    KeyRanges {
        table: format!("public.{table}"),
        column: "account_id".into(),
        groups: vec![
            RangeGroup {
                connections: ACCOUNTS as usize / PER_CONNECTION,
                per_connection: PER_CONNECTION,
                width: 1,
            },
            RangeGroup {
                connections: RANGES / PER_CONNECTION,
                per_connection: PER_CONNECTION,
                width: i64::from(ACCOUNTS) / RANGES as i64,
            },
        ],
    }
}

/// The scenario at each rate (quick: 2,000 rows/s for 3 s; full: 2,000 and 10,000 rows/s for
/// 10 s), on a fresh process of each system, one system at a time (two feedgates at once
/// would both read the change log). The Python peer runs at the first rate only: it falls far
/// behind there already.
pub async fn run(
    full: bool,
    db: &mut PgConnection,
    database_url: &str,
) -> Result<(Vec<Row>, Vec<(String, Value)>)> {
    let rates: &[f64] = if full { &[2000.0, 10_000.0] } else { &[2000.0] };
    let seconds = if full { 10.0 } else { 3.0 };
    let (mut rows, mut details) = (Vec::new(), Vec::new());
    for (n, &rate) in rates.iter().enumerate() {
        let scenario = format!(
            "filtered, {ACCOUNTS} account_id = N and {RANGES} range subscribers, {rate} rows/s"
        );
        let mut per_second = row(&scenario, "deliveries/s", true);
        let mut share = row(&scenario, "delivered (% of expected)", true);
        let mut p50 = row(&scenario, "p50 latency (ms)", false);
        let mut p99 = row(&scenario, "p99 latency (ms)", false);
        let mut cpu = row(&scenario, "server CPU (% of one core)", false);
        let mut cpu_per_row = row(&scenario, "server CPU per row written (µs)", false);
        let mut achieved = row(&scenario, "rows/s written (target: the rate)", true);
        let mut columns = vec![System::Feedgate, System::FeedgateNoIndex];
        if n == 0 {
            columns.push(System::Python);
        }
        for system in columns {
            let running = match system {
                System::Feedgate => systems::feedgate_filter_index(database_url, true)?,
                System::FeedgateNoIndex => systems::feedgate_filter_index(database_url, false)?,
                System::Python => systems::python(database_url)?,
                System::Nats => anyhow::bail!("NATS has no tables"),
            };
            eprintln!("{scenario}: {}", system.name());
            let figures = filtered(&running, db, database_url, rate, seconds).await?;
            drop(running);
            let delivery = &figures.delivery;
            if delivery.deliveries != delivery.expected || delivery.failed > 0 {
                eprintln!(
                    "{scenario}: {}: {} deliveries of {} expected, {} subscribers failed",
                    system.name(),
                    delivery.deliveries,
                    delivery.expected,
                    delivery.failed
                );
            }
            per_second
                .values
                .push((system, delivery.deliveries_per_second));
            let percent = 100.0 * delivery.deliveries as f64 / delivery.expected.max(1) as f64;
            share.values.push((system, percent));
            p50.values.push((system, delivery.latency.p50_ms));
            p99.values.push((system, delivery.latency.p99_ms));
            cpu.values.push((system, figures.server_cpu_percent));
            cpu_per_row
                .values
                .push((system, figures.server_cpu_us_per_row));
            achieved
                .values
                .push((system, figures.rows as f64 / seconds));
            details.push((
                format!("{scenario} / {}", system.name()),
                serde_json::to_value(&figures)?,
            ));
        }
        rows.extend([per_second, share, p50, p99, cpu, cpu_per_row, achieved]);
    }
    Ok((rows, details))
}

/// One run on `running`: a fresh table, its subscribers, `WRITERS` writers paced to `rate`
/// rows/s in total for `seconds`.
async fn filtered(
    running: &Running,
    db: &mut PgConnection,
    database_url: &str,
    rate: f64,
    seconds: f64,
) -> Result<Filtered> {
    let table = match running.system {
        System::Feedgate => "bench_filtered_feedgate",
        System::FeedgateNoIndex => "bench_filtered_no_index",
        System::Nats => "bench_filtered_nats",
        System::Python => "bench_filtered_python",
    };
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id bigserial PRIMARY KEY, account_id int NOT NULL,
                               sent_us bigint NOT NULL, body text NOT NULL)"
    ))
    .execute(&mut *db)
    .await?;
    scenarios::watch(db, running.proto, table).await?;
    let plan = plan(table);
    let subscribe_start = std::time::Instant::now();
    let subs =
        scenarios::subscribers(running, plan.connections(), Source::Ranges(plan.clone())).await?;
    let subscribe_seconds = subscribe_start.elapsed().as_secs_f64();
    let cpu_before = running.cpu_seconds()?;
    let start = now_micros();
    let key = Some(("account_id", ACCOUNTS));
    let written = scenarios::write(database_url, table, key, WRITERS, seconds, Some(rate)).await?;
    let per_account: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT account_id::int8, count(*) FROM {table} GROUP BY account_id"
    ))
    .fetch_all(&mut *db)
    .await?;
    let rows_per_key: HashMap<i64, u64> = per_account
        .into_iter()
        .map(|(key, rows)| (key, rows as u64))
        .collect();
    let rows: u64 = rows_per_key.values().sum();
    anyhow::ensure!(
        rows == written,
        "{table} holds {rows} rows; the writers wrote {written}"
    );
    let expected = Expected::PerConnection(plan.expected(&rows_per_key));
    let delivery = subs.finish(rows, expected, start).await?;
    let server_cpu_seconds = running.cpu_seconds()? - cpu_before;
    Ok(Filtered {
        subscriptions: plan.subscriptions(),
        rate,
        write_seconds: seconds,
        subscribe_seconds,
        rows,
        server_cpu_percent: 100.0 * server_cpu_seconds / delivery.seconds,
        server_cpu_us_per_row: 1e6 * server_cpu_seconds / rows.max(1) as f64,
        server_cpu_seconds,
        delivery,
    })
}
