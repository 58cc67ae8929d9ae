//! Slow-consumer benchmark: do clients that stop reading cost the others latency, or the server
//! memory? Prints figures; asserts nothing about speed.
//!
//! The feedgate binary runs as its own process. `--healthy` clients read a topic that one
//! publisher feeds at `--rate` messages per second of `--size` bytes for `--seconds`; each
//! message carries its send time, so every healthy client measures publish-to-receipt latency.
//! The run is made twice: alone, then with `--stalled` more subscribers that never read (their
//! sockets have a 4 KiB receive buffer, so they stall at once). Reported per run: healthy
//! deliveries and latency percentiles, the server's peak RSS (sampled every 50 ms from
//! /proc), and what became of the stalled clients (closed by the server as slow consumers, how
//! many messages each had received).
//!
//! Run: `cargo bench --bench slow_consumers -- [--healthy 50] [--stalled 50] [--rate 200]
//! [--size 8192] [--seconds 10] [--queue-bytes 1048576]`

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use feedgate::protocol::pb;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const TOPIC: &str = "bench.firehose";

#[derive(Clone, Copy)]
struct Params {
    healthy: usize,
    stalled: usize,
    rate: u64,
    size: usize,
    seconds: u64,
    queue_bytes: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let params = Params {
        healthy: arg("--healthy", 50),
        stalled: arg("--stalled", 50),
        rate: arg("--rate", 200) as u64,
        size: arg("--size", 8192).max(16),
        seconds: arg("--seconds", 10) as u64,
        queue_bytes: arg("--queue-bytes", 1 << 20),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "slow consumers: {} healthy readers, {} msg/s of {} bytes for {} s, \
         limits.outbound_queue_bytes = {}",
        params.healthy, params.rate, params.size, params.seconds, params.queue_bytes
    );
    for stalled in [0, params.stalled] {
        runtime.block_on(run(params, stalled))?;
    }
    Ok(())
}

/// The feedgate server process; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(params: Params) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(env!("CARGO_BIN_EXE_feedgate"))
            .args(["serve", "--allow-anonymous", "--requests-per-second", "0"])
            .args(["--listen", &addr.to_string()])
            .args(["--outbound-queue-bytes", &params.queue_bytes.to_string()])
            .args(["--max-message-size", &(params.size + 1024).to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start feedgate")?;
        Ok(Self { child, addr })
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id()).unwrap_or(0)
    }
}

/// A process's resident set size, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Connects, with a small receive buffer when `small_buffer` (a client that will stall).
async fn connect(addr: SocketAddr, small_buffer: bool) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    let stream = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), stream).await?;
    Ok(ws)
}

/// Subscribes and waits for Subscribed and Ready.
async fn subscribe(ws: &mut Ws, id: u64) -> Result<()> {
    let request = pb::Request {
        request_id: 1,
        command: Some(pb::request::Command::Subscribe(pb::Subscribe {
            subscription_id: id,
            source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
                topic: TOPIC.into(),
                ..Default::default()
            })),
            resume_from: Bytes::new(),
        })),
    };
    ws.send(Message::Binary(request.encode_to_vec().into()))
        .await?;
    loop {
        let Message::Binary(bytes) = ws.next().await.context("closed")?? else {
            continue;
        };
        let message = pb::ServerMessage::decode(bytes)?;
        if let Some(pb::server_message::Message::Event(event)) = message.message {
            if matches!(event.body, Some(pb::event::Body::Ready(_))) {
                return Ok(());
            }
        }
    }
}

async fn run(params: Params, stalled: usize) -> Result<()> {
    let server = ServerProcess::start(params)?;
    wait_listening(server.addr).await?;
    let total = params.rate * params.seconds;
    let epoch = Instant::now();

    let mut readers = Vec::new();
    for i in 0..params.healthy {
        let mut ws = connect(server.addr, false).await?;
        subscribe(&mut ws, i as u64 + 1).await?;
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total as usize);
            while (latencies.len() as u64) < total {
                let frame = ws.next().await.context("healthy client closed")??;
                let Message::Binary(bytes) = frame else {
                    continue;
                };
                let message = pb::ServerMessage::decode(bytes)?;
                let Some(pb::server_message::Message::Event(event)) = message.message else {
                    continue;
                };
                if let Some(pb::event::Body::Message(m)) = event.body {
                    let sent = u64::from_be_bytes(m.payload[..8].try_into()?);
                    let now = epoch.elapsed().as_nanos() as u64;
                    latencies.push((sent, now.saturating_sub(sent)));
                }
            }
            Ok::<_, anyhow::Error>((latencies, ws))
        }));
    }
    let mut stalled_clients = Vec::new();
    for i in 0..stalled {
        let mut ws = connect(server.addr, true).await?;
        subscribe(&mut ws, 1_000_000 + i as u64).await?;
        stalled_clients.push(ws); // never read again until the end
    }

    let peak_rss = Arc::new(AtomicU64::new(server.rss_kib()));
    let baseline_rss = server.rss_kib();
    let sampling = {
        let peak = peak_rss.clone();
        let pid = server.child.id();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The publisher, paced: message n goes out at n / rate seconds.
    let publisher = connect(server.addr, false).await?;
    let (mut sink, mut acks) = publisher.split();
    let acked = tokio::spawn(async move {
        let mut n = 0u64;
        while n < total {
            match acks.next().await {
                Some(Ok(Message::Binary(_))) => n += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        n
    });
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / params.rate as f64);
    for n in 0..total {
        tokio::time::sleep_until((start + interval * n as u32).into()).await;
        let mut payload = vec![0x5a; params.size];
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        let request = pb::Request {
            request_id: n + 1,
            command: Some(pb::request::Command::Publish(pb::Publish {
                topic: TOPIC.into(),
                payload: payload.into(),
                ..Default::default()
            })),
        };
        sink.send(Message::Binary(request.encode_to_vec().into()))
            .await?;
    }
    let mut samples = Vec::new();
    let mut healthy_clients = Vec::new();
    for reader in readers {
        let (got, ws) = reader.await??;
        samples.extend(got);
        healthy_clients.push(ws);
    }
    let published = acked.await?;
    let rss_during = peak_rss.load(Ordering::Relaxed);
    // Healthy clients are still connected (their sockets are held below).
    let stats = http_get(server.addr, "/v1/stats").await.unwrap_or_default();

    // What became of the stalled clients: read what reached them, then the close.
    let mut closed_4008 = 0;
    let mut closed_other = 0;
    let mut received = Vec::new();
    for mut ws in stalled_clients {
        let mut count = 0u64;
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(_))) => count += 1,
                    Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await;
        match outcome {
            Ok(Some(4008)) => closed_4008 += 1,
            _ => closed_other += 1,
        }
        received.push(count);
    }
    sampling.abort();
    if samples.is_empty() {
        bail!("no deliveries");
    }
    let publish_start = start.duration_since(epoch).as_nanos() as u64;
    let mut windows: Vec<Vec<u64>> = vec![Vec::new(); params.seconds as usize + 1];
    for (sent, latency) in &samples {
        let second = (sent.saturating_sub(publish_start) / 1_000_000_000) as usize;
        windows[second.min(params.seconds as usize)].push(*latency);
    }
    let mut latencies: Vec<u64> = samples.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let ms = |sorted: &[u64], p: f64| {
        Duration::from_nanos(sorted[((sorted.len() - 1) as f64 * p) as usize]).as_secs_f64()
            * 1000.0
    };
    let pct = |p: f64| ms(&latencies, p);
    let per_second: Vec<String> = windows
        .iter_mut()
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.sort_unstable();
            format!("{:.1}", ms(w, 0.99))
        })
        .collect();
    println!("\n{stalled} stalled subscribers:");
    println!(
        "  healthy deliveries       : {} of {} ({published} publishes acknowledged)",
        latencies.len(),
        total * params.healthy as u64
    );
    println!(
        "  latency p50/p99/max      : {:.2} / {:.2} / {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("  p99 per second sent (ms) : {}", per_second.join(" "));
    println!(
        "  server RSS               : {:.1} MB before publishing, peak {:.1} MB",
        baseline_rss as f64 / 1024.0,
        rss_during as f64 / 1024.0
    );
    if stalled > 0 {
        received.sort_unstable();
        println!(
            "  stalled clients          : {closed_4008} closed with 4008, {closed_other} cut \
             without a close frame; messages each received before: min {} / max {}",
            received.first().copied().unwrap_or(0),
            received.last().copied().unwrap_or(0)
        );
    }
    let subscriptions = stats
        .split("\"subscriptions\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .unwrap_or("?");
    println!("  subscriptions at the end : {subscriptions} (the healthy readers hold theirs)");
    drop(sink);
    drop(healthy_clients);
    Ok(())
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("feedgate did not start listening on {addr}")
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}
