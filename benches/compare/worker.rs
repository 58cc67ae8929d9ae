//! Subscribers in other processes: past a few thousand connections the load generator spreads
//! its receivers over child processes (this same binary, started with `--worker`), each with
//! connections from its own loopback source address (127.0.0.2, 127.0.0.3, ...). A process may
//! open 20,000 files here and one source address has ~28,000 ephemeral ports, so a single
//! process and address stop near 15,000 connections.
//!
//! The parent writes one JSON line (a [`Spec`]) to the worker's stdin; the worker connects and
//! subscribes, prints `ready <n>`, reads what each subscriber should receive (an [`Expected`],
//! known once the load is over) as one more JSON line, receives, and prints one JSON [`Part`].
//! Times cross the process boundary as wall-clock microseconds (same machine, same clock).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::load::{self, Expected, Source};
use crate::systems::Proto;

/// Connections one process opens before the rest go to worker processes: 5,000, or
/// `FEEDGATE_BENCH_PER_PROCESS`.
pub fn per_process() -> usize {
    std::env::var("FEEDGATE_BENCH_PER_PROCESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5_000)
}

/// What a worker is asked to do.
#[derive(Serialize, Deserialize)]
pub struct Spec {
    pub url: String,
    pub proto: Proto,
    pub source: Source,
    /// The group's index of the first of these connections (a [`Source::Ranges`] subscribes
    /// connection n to its own ranges; [`Expected`] counts by it).
    pub first: usize,
    pub connections: usize,
    /// The loopback address its connections come from.
    pub bind: Option<Ipv4Addr>,
    pub idle_ms: u64,
}

/// What a group of subscribers received.
#[derive(Serialize, Deserialize)]
pub struct Part {
    pub deliveries: u64,
    pub failed: usize,
    /// Wall-clock time of the last delivery, in µs since the epoch.
    pub last_us: Option<i64>,
    /// The latency histogram as (value µs, count) pairs.
    pub latencies: Vec<(u64, u64)>,
}

impl Part {
    pub fn histogram(&self) -> Result<Histogram<u64>> {
        let mut histogram = load::histogram();
        for &(value, count) in &self.latencies {
            histogram.record_n(value, count)?;
        }
        Ok(histogram)
    }
}

fn pairs(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// The `--worker` entry point: one spec in, one part out.
pub async fn main() -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let spec: Spec = serde_json::from_str(&stdin.next_line().await?.context("no spec")?)?;
    let (expected_tx, expected_rx) = watch::channel(Expected::Unknown);
    let (ready_tx, mut ready_rx) = mpsc::channel(spec.connections.max(1));
    let mut tasks = spawn(&spec, &ready_tx, &expected_rx);
    drop(ready_tx);
    let mut ready = 0;
    while ready < spec.connections && ready_rx.recv().await.is_some() {
        ready += 1;
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("ready {ready}\n").as_bytes())
        .await?;
    stdout.flush().await?;
    let expected: Expected =
        serde_json::from_str(&stdin.next_line().await?.context("no expected count")?)?;
    let _ = expected_tx.send(expected);
    let part = collect(&mut tasks).await?;
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&part)?).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

/// Starts `spec.connections` subscribers in this process; each sends `()` on `ready` once
/// subscribed (or gives up), then receives until its count in `expected` or `idle_ms` of
/// silence.
pub fn spawn(
    spec: &Spec,
    ready: &mpsc::Sender<()>,
    expected: &watch::Receiver<Expected>,
) -> JoinSet<Result<(load::Received, Histogram<u64>)>> {
    let gate = Arc::new(Semaphore::new(64));
    let idle = Duration::from_millis(spec.idle_ms);
    let mut tasks = JoinSet::new();
    for connection in spec.first..spec.first + spec.connections {
        let (url, proto, source, gate, ready, mut expected, bind) = (
            spec.url.clone(),
            spec.proto,
            spec.source.clone(),
            gate.clone(),
            ready.clone(),
            expected.clone(),
            spec.bind,
        );
        tasks.spawn(async move {
            let subscribed = async {
                let _permit = gate.acquire_owned().await?;
                let mut ws = load::connect_from(&url, bind).await?;
                load::subscribe(proto, &mut ws, &source, connection).await?;
                anyhow::Ok(ws)
            }
            .await;
            // Ready either way: a failed subscriber must not hold up the load.
            let _ = ready.send(()).await;
            drop(ready);
            let mut ws = subscribed?;
            let mut histogram = load::histogram();
            let received = load::receive(
                proto,
                &mut ws,
                &mut expected,
                connection,
                idle,
                &mut histogram,
            )
            .await;
            Ok((received, histogram))
        });
    }
    tasks
}

/// Joins subscriber tasks into one part.
pub async fn collect(
    tasks: &mut JoinSet<Result<(load::Received, Histogram<u64>)>>,
) -> Result<Part> {
    let mut histogram = load::histogram();
    let (mut deliveries, mut failed, mut last_us) = (0, 0, None::<i64>);
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((received, h)) => {
                deliveries += received.deliveries;
                failed += usize::from(received.error.is_some());
                last_us = last_us.max(received.last_us);
                histogram.add(&h)?;
            }
            Err(_) => failed += 1,
        }
    }
    Ok(Part {
        deliveries,
        failed,
        last_us,
        latencies: pairs(&histogram),
    })
}

/// A worker process running `spec`: reports `()` on `ready` per subscribed connection once all
/// are subscribed, waits for the expected count, then returns its part.
pub async fn run(
    spec: Spec,
    ready: mpsc::Sender<()>,
    mut expected: watch::Receiver<Expected>,
) -> Result<Part> {
    let connections = spec.connections;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start a load generator worker")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
    stdin
        .write_all(format!("{}\n", serde_json::to_string(&spec)?).as_bytes())
        .await?;
    let line = stdout.next_line().await?.context("worker ended early")?;
    let Some(count) = line.strip_prefix("ready ") else {
        bail!("worker said {line:?}");
    };
    let _: usize = count.parse()?;
    for _ in 0..connections {
        let _ = ready.send(()).await;
    }
    drop(ready);
    while matches!(*expected.borrow_and_update(), Expected::Unknown) {
        expected.changed().await?;
    }
    let line = serde_json::to_string(&*expected.borrow())?;
    stdin.write_all(format!("{line}\n").as_bytes()).await?;
    stdin.flush().await?;
    let line = stdout
        .next_line()
        .await?
        .context("worker ended without a result")?;
    let part = serde_json::from_str(&line)?;
    child.wait().await?;
    Ok(part)
}

/// The socket address of a `ws://host:port/...` URL.
pub fn address_of(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("not a ws:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{authority} is not an address"))
}
