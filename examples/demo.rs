//! A minimal feedgate client: connect, say Hello, subscribe twice on one connection, publish to
//! both topics, and print every message the server sends, tagged with its subscription id.
//!
//! Start a server (`cargo run --release -- serve --allow-anonymous`), then: `cargo run --example demo [-- URL]`.

use anyhow::{bail, Context, Result};
use feedgate::protocol::pb::{self, request::Command};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/v1/ws".into());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let commands = [
        Command::Hello(pb::Hello {
            protocol_version: 1,
            client_name: "demo".into(),
            ..Default::default()
        }),
        subscribe(1, "greetings"),
        subscribe(2, "weather"),
        publish("weather", "sunny"),
        publish("greetings", "hello"),
        Command::Unsubscribe(pb::Unsubscribe { subscription_id: 1 }),
    ];
    let sent = commands.len();
    for (i, command) in commands.into_iter().enumerate() {
        let request = pb::Request {
            request_id: i as u64 + 1,
            command: Some(command),
        };
        ws.send(Message::Binary(request.encode_to_vec().into()))
            .await?;
    }
    let mut responses = 0;
    while responses < sent {
        let Some(frame) = ws.next().await else {
            bail!("server closed the connection");
        };
        let Message::Binary(bytes) = frame? else {
            continue;
        };
        match pb::ServerMessage::decode(bytes)?.message {
            Some(pb::server_message::Message::Response(response)) => {
                responses += 1;
                println!("response #{}: {:?}", response.request_id, response.result);
            }
            Some(pb::server_message::Message::Event(event)) => match event.body {
                Some(pb::event::Body::Message(m)) => println!(
                    "event on subscription {}: topic={} payload={:?} offset={}",
                    event.subscription_id,
                    m.topic,
                    String::from_utf8_lossy(&m.payload),
                    m.offset
                ),
                body => println!("event on subscription {}: {body:?}", event.subscription_id),
            },
            // Only sent to a client that asks for bundles in Hello; this one does not.
            Some(pb::server_message::Message::Bundle(_)) => bail!("unexpected bundle"),
            None => bail!("empty ServerMessage"),
        }
    }
    ws.close(None).await?;
    Ok(())
}

fn subscribe(subscription_id: u64, topic: &str) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id,
        source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
            topic: topic.into(),
            ..Default::default()
        })),
        resume_from: Default::default(),
    })
}

fn publish(topic: &str, payload: &str) -> Command {
    Command::Publish(pb::Publish {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec().into(),
        ..Default::default()
    })
}
