//! Fan-out benchmark. Prints figures; asserts nothing about speed.
//!
//! 1. encoding: per-subscriber encoding of the whole `ServerMessage` against encode-once plus a
//!    per-subscriber prefix (what feedgate does), for one 256-byte topic message.
//! 2. end to end: an in-process server, N WebSocket connections subscribed to one topic, one
//!    publisher; deliveries per second and publish-to-receipt latency. Clients run in the same
//!    process and share the 2 cores with the server, so this is a floor, not the server's limit.
//!
//! Run: `cargo bench --bench fanout -- [--connections N] [--messages M]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use feedgate::app::Server;
use feedgate::config::Config;
use feedgate::protocol::{encode_event, frame_shared, pb, share_event, EventBody, TopicMessage};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let connections = arg("--connections", 1000);
    let messages = arg("--messages", 1000);
    encoding(1000, 300);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(end_to_end(connections, messages))
}

fn sample_message() -> TopicMessage {
    TopicMessage {
        topic: "bench.prices".into(),
        payload: Bytes::from(vec![0x42; 256]),
        key: "k".into(),
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        timestamp_micros: 1_700_000_000_000_000,
        partition: 0,
        offset: 12345,
    }
}

fn encoding(subscribers: u64, rounds: u32) {
    let message = sample_message();
    let cursor = Bytes::from_static(b"0123456789abcdef01");
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..rounds {
        for id in 1..=subscribers {
            // The whole event encoded again for every subscriber.
            let frame = encode_event(id, &cursor, EventBody::Message(&message));
            bytes += frame.len();
        }
    }
    let per_subscriber = start.elapsed();
    let start = Instant::now();
    let mut shared_bytes = 0usize;
    for _ in 0..rounds {
        let shared = share_event(&cursor, EventBody::Message(&message));
        for id in 1..=subscribers {
            shared_bytes += frame_shared(id, &shared).len();
        }
    }
    let once = start.elapsed();
    assert_eq!(bytes, shared_bytes, "both produce the same frames");
    let deliveries = f64::from(rounds) * subscribers as f64;
    let ns = |d: Duration| d.as_nanos() as f64 / deliveries;
    println!("encoding, 256-byte message, {subscribers} subscribers x {rounds} messages:");
    println!(
        "  per-subscriber encode : {:8.1} ns/delivery",
        ns(per_subscriber)
    );
    println!("  encode once + prefix  : {:8.1} ns/delivery", ns(once));
    println!(
        "  ratio                 : {:8.2}x",
        per_subscriber.as_secs_f64() / once.as_secs_f64()
    );
}

async fn end_to_end(connections: usize, messages: usize) -> Result<()> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        ..Config::default()
    };
    // Large enough that the in-process clients, which share the CPU, are never dropped as slow.
    config.limits.outbound_queue = messages + 16;
    config.auth.anonymous = true;
    config.limits.requests_per_second = 0;
    let server = Server::start(config).await?;
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let epoch = Instant::now();
    let barrier = Arc::new(Barrier::new(connections + 1));
    let mut readers = Vec::new();
    for i in 0..connections {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let subscribe = pb::Request {
            request_id: 1,
            command: Some(pb::request::Command::Subscribe(pb::Subscribe {
                subscription_id: i as u64 + 1,
                source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: "bench.prices".into(),
                    ..Default::default()
                })),
                resume_from: Bytes::new(),
            })),
        };
        ws.send(Message::Binary(subscribe.encode_to_vec().into()))
            .await?;
        let barrier = barrier.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0usize;
            let mut latencies = Vec::with_capacity(messages);
            let mut ready = false;
            while got < messages {
                let frame = ws.next().await.context("closed")??;
                let Message::Binary(bytes) = frame else {
                    continue;
                };
                let message = pb::ServerMessage::decode(bytes)?;
                let Some(pb::server_message::Message::Event(event)) = message.message else {
                    continue;
                };
                match event.body {
                    Some(pb::event::Body::Ready(_)) => {
                        ready = true;
                        barrier.wait().await;
                    }
                    Some(pb::event::Body::Message(m)) => {
                        let sent = u64::from_be_bytes(m.payload[..8].try_into()?);
                        let now = epoch.elapsed().as_nanos() as u64;
                        latencies.push(now.saturating_sub(sent));
                        got += 1;
                    }
                    _ => {}
                }
            }
            anyhow::ensure!(ready, "no Ready");
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    barrier.wait().await;

    let (publisher, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let start = Instant::now();
    let (mut sink, mut stream) = publisher.split();
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < messages {
            match stream.next().await {
                Some(Ok(Message::Binary(_))) => acked += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        acked
    });
    for n in 0..messages {
        let mut payload = vec![0u8; 256];
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        let request = pb::Request {
            request_id: n as u64 + 1,
            command: Some(pb::request::Command::Publish(pb::Publish {
                topic: "bench.prices".into(),
                payload: payload.into(),
                ..Default::default()
            })),
        };
        sink.feed(Message::Binary(request.encode_to_vec().into()))
            .await?;
        if n % 16 == 15 {
            sink.flush().await?;
        }
    }
    sink.flush().await?;
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await??);
    }
    let elapsed = start.elapsed();
    let acked = acks.await?;
    drop(sink);
    all.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(all[((all.len() - 1) as f64 * p) as usize]);
    let deliveries = all.len();
    println!(
        "end to end, 256-byte messages, {connections} connections x {messages} messages \
         (clients in-process):"
    );
    println!("  deliveries            : {deliveries} ({acked} publishes acknowledged)");
    println!("  elapsed               : {:.3} s", elapsed.as_secs_f64());
    println!(
        "  deliveries/s          : {:.0}",
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency p50/p99/max   : {:?} / {:?} / {:?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    server.shutdown().await?;
    Ok(())
}
