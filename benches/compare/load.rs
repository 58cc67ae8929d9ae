//! The load generator's clients: connect, subscribe, publish and receive over WebSocket in each
//! system's own protocol (feedgate's protobuf, NATS's text protocol over WebSocket, the Python
//! peer's JSON). Latency comes from a timestamp carried in the payload (topic messages) or in the
//! row (table changes), taken by the publisher or writer just before it sends: never guessed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use prost::Message as _;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use feedgate::protocol::{now_micros, pb};

use crate::ranges::{self, KeyRanges};
use crate::systems::Proto;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Size of every published payload.
pub const PAYLOAD: usize = 256;

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits. Static bounds: new_with_bounds cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub async fn connect(url: &str) -> Result<Ws> {
    connect_from(url, None).await
}

/// Connects from the loopback source address `bind` (the kernel's choice when `None`).
pub async fn connect_from(url: &str, bind: Option<Ipv4Addr>) -> Result<Ws> {
    let mut attempt = 0;
    loop {
        let connected = match bind {
            None => tokio_tungstenite::connect_async(url)
                .await
                .map_err(anyhow::Error::from),
            Some(ip) => {
                async {
                    let socket = TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::from((ip, 0)))?;
                    let stream = socket.connect(crate::worker::address_of(url)?).await?;
                    let (ws, response) =
                        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await?;
                    anyhow::Ok((ws, response))
                }
                .await
            }
        };
        match connected {
            Ok((ws, _)) => return Ok(ws),
            Err(err) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                let _ = err;
            }
            Err(err) => return Err(err).with_context(|| format!("connect {url}")),
        }
    }
}

/// What a connection's subscriptions are to.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum Source {
    Topic(String),
    /// A topic from its earliest record (feedgate's Kafka topics).
    TopicFromEarliest(String),
    Table(String),
    /// Several subscriptions to one table per connection, each filtered to a range of keys;
    /// which ranges depends on the connection's place in its group.
    Ranges(KeyRanges),
}

/// What each receiver of a group is to receive, known once the load is over.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Expected {
    /// Not known yet: the load is still running.
    Unknown,
    /// The same count for every connection (each subscriber sees every message or row).
    Each(u64),
    /// Connection n's count at index n (n counted across the whole group, worker processes
    /// included); connections past the end expect nothing.
    PerConnection(Vec<u64>),
}

impl Expected {
    /// What connection `connection` is to receive (`u64::MAX` while unknown).
    pub fn of(&self, connection: usize) -> u64 {
        match self {
            Expected::Unknown => u64::MAX,
            Expected::Each(count) => *count,
            Expected::PerConnection(counts) => counts.get(connection).copied().unwrap_or(0),
        }
    }

    /// What the first `connections` connections are to receive in all.
    pub fn total(&self, connections: usize) -> u64 {
        (0..connections).map(|n| self.of(n)).sum()
    }
}

fn request(request_id: u64, command: pb::request::Command) -> Message {
    Message::binary(
        pb::Request {
            request_id,
            command: Some(command),
        }
        .encode_to_vec(),
    )
}

/// feedgate's `Hello` asking for bundles (`Hello.bundles`); its request id is one no
/// subscription uses.
fn hello_with_bundles() -> Message {
    let hello = pb::Hello {
        bundles: true,
        client_name: "bench".into(),
        ..Default::default()
    };
    request(u64::MAX, pb::request::Command::Hello(hello))
}

/// A frame's server messages: the one it holds, or a bundle's, in order.
fn unbundle(frame: &[u8]) -> Result<Vec<pb::ServerMessage>> {
    let message = pb::ServerMessage::decode(frame)?;
    Ok(match message.message {
        Some(pb::server_message::Message::Bundle(bundle)) => bundle.messages,
        _ => vec![message],
    })
}

/// feedgate's `Subscribe` request; the request id is the subscription id.
pub fn subscribe_request(subscription_id: u64, source: pb::subscribe::Source) -> Message {
    resume_request(subscription_id, source, Default::default())
}

/// feedgate's `Subscribe` request resuming after `cursor` (empty: a fresh subscription).
fn resume_request(
    subscription_id: u64,
    source: pb::subscribe::Source,
    cursor: bytes::Bytes,
) -> Message {
    let subscribe = pb::Subscribe {
        subscription_id,
        source: Some(source),
        resume_from: cursor,
    };
    request(subscription_id, pb::request::Command::Subscribe(subscribe))
}

/// Subscribes (subscription 1) to `table` on feedgate, with its initial rows or resuming after
/// `cursor`, and reads to `Ready`: the row changes that came before it, and `Ready`'s cursor.
pub async fn table_until_ready(
    ws: &mut Ws,
    table: &str,
    include_initial: bool,
    cursor: bytes::Bytes,
) -> Result<(u64, bytes::Bytes)> {
    let source = pb::subscribe::Source::Table(pb::TableFeed {
        table: table.into(),
        include_initial,
        ..Default::default()
    });
    ws.send(resume_request(1, source, cursor)).await?;
    let mut changes = 0;
    loop {
        let frame = next_binary(ws).await?;
        match pb::ServerMessage::decode(frame.as_ref())?.message {
            Some(pb::server_message::Message::Event(event)) => match event.body {
                Some(pb::event::Body::Change(_)) => changes += 1,
                Some(pb::event::Body::Ready(_)) => return Ok((changes, event.cursor)),
                Some(pb::event::Body::Closed(closed)) => bail!("subscription ended: {closed:?}"),
                _ => {}
            },
            Some(pb::server_message::Message::Response(response))
                if matches!(response.result, Some(pb::response::Result::Error(_))) =>
            {
                bail!("subscribe refused: {response:?}")
            }
            _ => {}
        }
    }
}

/// Subscribes connection `connection` of its group and returns once the system confirmed it
/// (feedgate: `Ready`; NATS: the PONG after SUB; Python: `subscribed`).
pub async fn subscribe(
    proto: Proto,
    ws: &mut Ws,
    source: &Source,
    connection: usize,
) -> Result<()> {
    match proto {
        Proto::Feedgate => {
            let source = match source {
                Source::Topic(topic) => pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: topic.clone(),
                    ..Default::default()
                }),
                Source::TopicFromEarliest(topic) => pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic: topic.clone(),
                    start: pb::StartPosition::Earliest as i32,
                    ..Default::default()
                }),
                Source::Table(table) => pb::subscribe::Source::Table(pb::TableFeed {
                    table: table.clone(),
                    include_initial: false,
                    ..Default::default()
                }),
                Source::Ranges(plan) => {
                    return ranges::subscribe(proto, ws, plan, connection).await
                }
            };
            // Bundles, as the generated clients ask for them: a receiver that falls behind gets
            // what queued up in few frames.
            ws.feed(hello_with_bundles()).await?;
            ws.send(subscribe_request(1, source)).await?;
            loop {
                let frame = next_binary(ws).await?;
                for message in unbundle(&frame)? {
                    match message.message {
                        Some(pb::server_message::Message::Event(event))
                            if matches!(event.body, Some(pb::event::Body::Ready(_))) =>
                        {
                            return Ok(())
                        }
                        Some(pb::server_message::Message::Response(response))
                            if matches!(response.result, Some(pb::response::Result::Error(_))) =>
                        {
                            bail!("subscribe refused: {response:?}")
                        }
                        _ => {}
                    }
                }
            }
        }
        Proto::Nats => {
            let Source::Topic(topic) = source else {
                bail!("NATS has no tables")
            };
            ws.send(Message::text(format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {topic} 1\r\nPING\r\n"
            )))
            .await?;
            let mut parser = NatsParser::default();
            loop {
                let frame = next_binary(ws).await?;
                if parser.feed(&frame).pongs > 0 {
                    return Ok(());
                }
            }
        }
        Proto::Python => {
            let text = match source {
                Source::Topic(topic) => format!("{{\"op\":\"subscribe\",\"topic\":\"{topic}\"}}"),
                Source::Table(table) => format!("{{\"op\":\"subscribe\",\"table\":\"{table}\"}}"),
                Source::TopicFromEarliest(_) => bail!("the Python peer keeps no history"),
                Source::Ranges(plan) => {
                    return ranges::subscribe(proto, ws, plan, connection).await
                }
            };
            ws.send(Message::text(text)).await?;
            loop {
                let frame = next_binary(ws).await?;
                if frame.starts_with(b"{\"op\": \"subscribed\"") {
                    return Ok(());
                }
            }
        }
    }
}

/// Subscribes to `count` topics `{prefix}.0`, `{prefix}.1`, ... pipelined, and returns once
/// the system confirmed them all.
pub async fn subscribe_many(proto: Proto, ws: &mut Ws, prefix: &str, count: u64) -> Result<()> {
    let frames = (0..count).map(|n| {
        let topic = format!("{prefix}.{n}");
        match proto {
            Proto::Feedgate => subscribe_request(
                n + 1,
                pb::subscribe::Source::Topic(pb::TopicFeed {
                    topic,
                    ..Default::default()
                }),
            ),
            Proto::Nats => Message::text(format!("SUB {topic} {}\r\n", n + 1)),
            Proto::Python => {
                Message::text(format!("{{\"op\":\"subscribe\",\"topic\":\"{topic}\"}}"))
            }
        }
    });
    subscribe_all(proto, ws, frames.collect()).await
}

/// Sends these subscribe requests pipelined, and returns once the system confirmed them all.
pub async fn subscribe_all(proto: Proto, ws: &mut Ws, requests: Vec<Message>) -> Result<()> {
    let count = requests.len() as u64;
    for frame in requests {
        ws.feed(frame).await?;
    }
    if proto == Proto::Nats {
        ws.feed(Message::text("PING\r\n")).await?;
    }
    ws.flush().await?;
    let mut confirmed = 0;
    let mut nats = NatsParser::default();
    while confirmed < count {
        let frame = next_binary(ws).await?;
        confirmed += match proto {
            Proto::Feedgate => match pb::ServerMessage::decode(frame.as_ref())?.message {
                Some(pb::server_message::Message::Event(event))
                    if matches!(event.body, Some(pb::event::Body::Ready(_))) =>
                {
                    1
                }
                Some(pb::server_message::Message::Response(response))
                    if matches!(response.result, Some(pb::response::Result::Error(_))) =>
                {
                    bail!("subscribe refused: {response:?}")
                }
                _ => 0,
            },
            Proto::Nats => {
                if nats.feed(&frame).pongs > 0 {
                    count
                } else {
                    0
                }
            }
            Proto::Python => u64::from(frame.starts_with(b"{\"op\": \"subscribed\"")),
        };
    }
    Ok(())
}

/// Subscribes to `table` with its initial rows; returns how many INITIAL rows arrived before
/// `Ready`.
pub async fn initial_rows(ws: &mut Ws, table: &str) -> Result<u64> {
    Ok(initial_rows_beside(ws, table, None).await?.0)
}

/// Like [`initial_rows`], on a connection that is also subscribed to `topic` (subscription 1;
/// the table is then subscription 2) when given: returns the rows and, for each topic message that arrived before `Ready`, its
/// latency in microseconds (its payload is the publisher's `now_micros`, see [`ticker`]).
pub async fn initial_rows_beside(
    ws: &mut Ws,
    table: &str,
    topic: Option<&str>,
) -> Result<(u64, Vec<u64>)> {
    if let Some(topic) = topic {
        subscribe(Proto::Feedgate, ws, &Source::Topic(topic.to_owned()), 0).await?;
    }
    let source = pb::subscribe::Source::Table(pb::TableFeed {
        table: table.into(),
        include_initial: true,
        ..Default::default()
    });
    let table_id = if topic.is_some() { 2 } else { 1 };
    ws.send(subscribe_request(table_id, source)).await?;
    let (mut rows, mut latencies) = (0, Vec::new());
    loop {
        let frame = next_binary(ws).await?;
        match pb::ServerMessage::decode(frame.as_ref())?.message {
            Some(pb::server_message::Message::Event(event)) => match event.body {
                Some(pb::event::Body::Change(_)) => rows += 1,
                Some(pb::event::Body::Ready(_)) => return Ok((rows, latencies)),
                Some(pb::event::Body::Closed(closed)) => bail!("snapshot ended: {closed:?}"),
                Some(pb::event::Body::Message(message)) => {
                    let sent = <[u8; 8]>::try_from(&message.payload[..])
                        .map(u64::from_be_bytes)
                        .context("a ticker payload")?;
                    latencies.push((now_micros() as u64).saturating_sub(sent));
                }
                _ => {}
            },
            Some(pb::server_message::Message::Response(response))
                if matches!(response.result, Some(pb::response::Result::Error(_))) =>
            {
                bail!("subscribe refused: {response:?}")
            }
            _ => {}
        }
    }
}

/// Publishes to a feedgate `topic` every 50 ms (20 messages/s), each payload the send time
/// (`now_micros`, 8 bytes big-endian), until `stop` is set; returns how many it published.
pub async fn ticker(
    url: &str,
    topic: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64> {
    let mut ws = connect(url).await?;
    let mut sent = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return Ok(sent),
            _ = every.tick() => {}
        }
        sent += 1;
        let publish = pb::Publish {
            topic: topic.into(),
            payload: (now_micros() as u64).to_be_bytes().to_vec().into(),
            ..Default::default()
        };
        ws.send(request(sent, pb::request::Command::Publish(publish)))
            .await?;
        next_binary(&mut ws).await?;
    }
}

/// The least a client does to be a live connection of its protocol: feedgate a `Ping` round
/// trip, NATS `CONNECT` and a PING/PONG; the Python peer has no handshake.
pub async fn handshake(proto: Proto, ws: &mut Ws) -> Result<()> {
    match proto {
        Proto::Feedgate => {
            ws.send(request(1, pb::request::Command::Ping(pb::Ping {})))
                .await?;
            next_binary(ws).await?;
        }
        Proto::Nats => {
            ws.send(Message::text(
                "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n",
            ))
            .await?;
            let mut parser = NatsParser::default();
            while parser.feed(&next_binary(ws).await?).pongs == 0 {}
        }
        Proto::Python => {}
    }
    Ok(())
}

/// The payload of a frame's data, text or binary; closes and errors end the stream.
async fn next_binary(ws: &mut Ws) -> Result<bytes::Bytes> {
    loop {
        match ws.next().await.context("connection ended")?? {
            Message::Binary(data) => return Ok(data),
            Message::Text(text) => return Ok(bytes::Bytes::copy_from_slice(text.as_bytes())),
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => {}
        }
    }
}

/// How a receiver ended.
pub struct Received {
    pub deliveries: u64,
    /// Wall-clock time of the last delivery, µs since the epoch (comparable across processes).
    pub last_us: Option<i64>,
    pub error: Option<String>,
}

/// Receives until the deliveries `expected` has for `connection` arrived or none arrived for
/// `idle`, recording each delivery's latency (now − the timestamp it carries) in `histogram`.
/// `expected` changes while receiving (the count is known once the load is over).
pub async fn receive(
    proto: Proto,
    ws: &mut Ws,
    expected: &mut tokio::sync::watch::Receiver<Expected>,
    connection: usize,
    idle: Duration,
    histogram: &mut Histogram<u64>,
) -> Received {
    let mut received = Received {
        deliveries: 0,
        last_us: None,
        error: None,
    };
    let mut nats = NatsParser::default();
    let mut stamps = Vec::new();
    while received.deliveries < expected.borrow_and_update().of(connection) {
        // Both branches are cancel safe: a stream's next() and a watch's changed().
        let frame = tokio::select! {
            next = tokio::time::timeout(idle, next_binary(ws)) => match next {
                Ok(Ok(frame)) => frame,
                Ok(Err(err)) => {
                    received.error = Some(err.to_string());
                    break;
                }
                Err(_) => break,
            },
            changed = expected.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        stamps.clear();
        match proto {
            Proto::Feedgate => feedgate_stamps(&frame, &mut stamps),
            Proto::Nats => {
                let parsed = nats.feed(&frame);
                stamps.extend(parsed.stamps);
                if parsed.pings > 0 {
                    let _ = ws.send(Message::text("PONG\r\n")).await;
                }
            }
            Proto::Python => python_stamps(&frame, &mut stamps),
        }
        if stamps.is_empty() {
            continue;
        }
        let now = now_micros().max(0) as u64;
        for &stamp in &stamps {
            let _ = histogram.record(now.saturating_sub(stamp).max(1));
        }
        received.deliveries += stamps.len() as u64;
        received.last_us = Some(now_micros());
    }
    received
}

fn feedgate_stamps(frame: &[u8], out: &mut Vec<u64>) {
    let Ok(message) = pb::ServerMessage::decode(frame) else {
        return;
    };
    let event = match message.message {
        Some(pb::server_message::Message::Event(event)) => event,
        Some(pb::server_message::Message::Bundle(bundle)) => {
            for message in bundle.messages {
                if let Some(pb::server_message::Message::Event(event)) = message.message {
                    event_stamps(event, out);
                }
            }
            return;
        }
        _ => return,
    };
    event_stamps(event, out);
}

fn event_stamps(event: pb::Event, out: &mut Vec<u64>) {
    match event.body {
        Some(pb::event::Body::Message(message)) => out.extend(stamp_of(&message.payload)),
        Some(pb::event::Body::Change(change)) => {
            let stamp = change
                .new_row
                .and_then(|row| row.columns.get("sent_us").cloned())
                .and_then(|value| match value.kind {
                    Some(pb::value::Kind::Int(micros)) => Some(micros as u64),
                    _ => None,
                });
            out.extend(stamp);
        }
        _ => {}
    }
}

fn python_stamps(frame: &[u8], out: &mut Vec<u64>) {
    if frame.starts_with(b"{\"op\": \"message\"") {
        // {"op": "message", "topic": "...", "payload": "<16 hex digits>..."}
        if let Some(at) = find(frame, b"\"payload\": \"") {
            let hex = &frame[at + 12..(at + 28).min(frame.len())];
            if let Some(stamp) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                out.push(stamp);
            }
        }
    } else if frame.starts_with(b"{\"op\": \"change\"") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(frame) {
            out.extend(value["row"]["sent_us"].as_u64());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// A payload of PAYLOAD bytes starting with the current time: 8 bytes little-endian for binary
/// protocols, 16 hex digits for the JSON one.
pub fn payload(proto: Proto) -> Vec<u8> {
    let now = now_micros().max(0) as u64;
    let mut payload = match proto {
        Proto::Python => format!("{now:016x}").into_bytes(),
        _ => now.to_le_bytes().to_vec(),
    };
    payload.resize(PAYLOAD, b'x');
    payload
}

/// Publishes `messages` messages to `topic` as fast as the system accepts them (at most
/// `window` unacknowledged), or at `rate` per second when given. Returns how many it published.
pub async fn publish(
    proto: Proto,
    ws: &mut Ws,
    topic: &str,
    messages: u64,
    window: u64,
    rate: Option<f64>,
) -> Result<u64> {
    if proto == Proto::Nats {
        ws.send(Message::text(
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n",
        ))
        .await?;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut nats = NatsParser::default();
    while acked < messages {
        while sent < messages && sent - acked < window {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let body = payload(proto);
            let frame = match proto {
                Proto::Feedgate => request(
                    sent + 1,
                    pb::request::Command::Publish(pb::Publish {
                        topic: topic.into(),
                        payload: body.into(),
                        ..Default::default()
                    }),
                ),
                Proto::Nats => {
                    // NATS acknowledges nothing: a PING every 100 messages, answered in order,
                    // is the acknowledgement of all before it.
                    let mut text = format!("PUB {topic} {PAYLOAD}\r\n").into_bytes();
                    text.extend_from_slice(&body);
                    text.extend_from_slice(b"\r\n");
                    if (sent + 1).is_multiple_of(100) || sent + 1 == messages {
                        text.extend_from_slice(b"PING\r\n");
                    }
                    Message::binary(text)
                }
                Proto::Python => Message::text(format!(
                    "{{\"op\":\"publish\",\"topic\":\"{topic}\",\"payload\":\"{}\"}}",
                    String::from_utf8_lossy(&body)
                )),
            };
            ws.feed(frame).await?;
            sent += 1;
        }
        ws.flush().await?;
        let frame = next_binary(ws).await?;
        acked = match proto {
            Proto::Feedgate => {
                let message = pb::ServerMessage::decode(frame.as_ref())?;
                if let Some(pb::server_message::Message::Response(response)) = message.message {
                    if let Some(pb::response::Result::Error(error)) = response.result {
                        bail!("publish refused: {}", error.message);
                    }
                    acked + 1
                } else {
                    acked
                }
            }
            Proto::Nats => {
                let parsed = nats.feed(&frame);
                if parsed.errors > 0 {
                    bail!("nats-server refused a publish");
                }
                (acked + 100 * parsed.pongs).min(sent)
            }
            Proto::Python => {
                if frame.starts_with(b"{\"op\": \"published\"") {
                    acked + 1
                } else {
                    acked
                }
            }
        };
    }
    Ok(sent)
}

/// What one WebSocket frame of NATS's protocol held.
#[derive(Default)]
pub struct Parsed {
    pub stamps: Vec<u64>,
    pub pings: u64,
    pub pongs: u64,
    pub errors: u64,
}

/// NATS's protocol over WebSocket is a byte stream cut into frames anywhere: this keeps the
/// unfinished tail between frames.
#[derive(Default)]
pub struct NatsParser {
    buffer: Vec<u8>,
}

impl NatsParser {
    pub fn feed(&mut self, frame: &[u8]) -> Parsed {
        self.buffer.extend_from_slice(frame);
        let mut parsed = Parsed::default();
        let mut at = 0;
        while let Some(end) = find(&self.buffer[at..], b"\r\n") {
            let line = &self.buffer[at..at + end];
            if line.starts_with(b"MSG ") {
                let size: usize = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let body = at + end + 2;
                if self.buffer.len() < body + size + 2 {
                    break; // the payload is in the next frame
                }
                parsed
                    .stamps
                    .extend(stamp_of(&self.buffer[body..body + size]));
                at = body + size + 2;
                continue;
            }
            if line == b"PING" {
                parsed.pings += 1;
            } else if line == b"PONG" {
                parsed.pongs += 1;
            } else if line.starts_with(b"-ERR") {
                parsed.errors += 1;
            }
            at += end + 2;
        }
        self.buffer.drain(..at);
        parsed
    }
}
