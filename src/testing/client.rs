//! The test client: one WebSocket connection speaking the generated protobuf types, with a
//! bounded wait ([`WAIT`]) on everything it reads and assertions on what arrives. Not here:
//! the server (the parent module) and the commands it sends (built there).

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{publish, subscribe_topic, table_feed, Command, ErrorCode, WAIT};
use crate::protocol::pb;

/// A server message as [`Received`]; a bundle inside a bundle is an error.
fn received(message: pb::ServerMessage) -> Result<Received> {
    match message.message {
        Some(pb::server_message::Message::Response(r)) => Ok(Received::Response(r)),
        Some(pb::server_message::Message::Event(e)) => Ok(Received::Event(e)),
        Some(pb::server_message::Message::Bundle(_)) => Err(anyhow!("a bundle in a bundle")),
        None => Err(anyhow!("empty ServerMessage")),
    }
}

/// One WebSocket client connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_request_id: u64,
    /// The rest of a bundle received (`Hello.bundles`), handed out before the next frame.
    unbundled: std::collections::VecDeque<pb::ServerMessage>,
    /// Binary frames received so far.
    pub frames: u64,
    /// Of those, bundles (several messages in one frame, after `Hello { bundles: true }`).
    pub bundles: u64,
}

/// Something a client received.
#[derive(Debug)]
pub enum Received {
    /// The answer to a request.
    Response(pb::Response),
    /// An event of a subscription.
    Event(pb::Event),
    /// The server closed the connection: the close code and reason, if it sent them.
    Close(Option<(u16, String)>),
}

impl Client {
    fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_request_id: 1,
            unbundled: Default::default(),
            frames: 0,
            bundles: 0,
        }
    }

    /// Connects to the server at `addr` (`ws://{addr}/v1/ws`); panics when it cannot.
    pub async fn connect(addr: SocketAddr) -> Client {
        let url = format!("ws://{addr}/v1/ws");
        Self::connect_request(url.as_str())
            .await
            .expect("websocket connects")
    }

    /// Connects over a socket whose receive buffer is fixed at `bytes` (no autotuning), so
    /// that what the server writes piles up in its own queue soon after the client pauses,
    /// rather than in tens of megabytes of loopback buffers.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/v1/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket handshake");
        Client::new(ws)
    }

    /// Connects with a request of the caller's making (headers, query); the error is the
    /// refused upgrade's.
    pub async fn connect_request(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client::new(ws))
    }

    /// Sends a request with the next request id and returns that id.
    pub async fn send(&mut self, command: Command) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = pb::Request {
            request_id,
            command: Some(command),
        };
        self.send_raw(Message::Binary(request.encode_to_vec().into()))
            .await;
        request_id
    }

    /// Sends one WebSocket message as it is (malformed input, text frames, ...).
    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// [`send`](Self::send), for a connection that may be gone (a test cutting connections).
    pub async fn try_send(&mut self, command: Command) -> Result<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = pb::Request {
            request_id,
            command: Some(command),
        };
        self.ws
            .send(Message::Binary(request.encode_to_vec().into()))
            .await?;
        Ok(request_id)
    }

    /// The next protocol message or close; skips pings. Fails after [`WAIT`].
    pub async fn recv(&mut self) -> Result<Received> {
        if let Some(message) = self.unbundled.pop_front() {
            return received(message);
        }
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("timed out waiting for a message")?;
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    self.frames += 1;
                    let message = pb::ServerMessage::decode(bytes)?;
                    if let Some(pb::server_message::Message::Bundle(bundle)) = message.message {
                        self.bundles += 1;
                        if bundle.messages.len() < 2 {
                            bail!("a bundle of {} messages", bundle.messages.len());
                        }
                        self.unbundled.extend(bundle.messages);
                        let first = self.unbundled.pop_front().expect("two or more");
                        return received(first);
                    }
                    return received(message);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Received::Close(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => bail!("server sent a text frame: {text}"),
                Some(Err(err)) => bail!("read error: {err}"),
                None => bail!("connection ended without a close frame"),
            }
        }
    }

    /// Messages of a bundle received and not handed out yet.
    pub fn unbundled(&self) -> usize {
        self.unbundled.len()
    }

    /// The next message, which must be a response.
    pub async fn recv_response(&mut self) -> pb::Response {
        match self.recv().await.expect("a message") {
            Received::Response(response) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// The next message, which must be an event.
    pub async fn recv_event(&mut self) -> pb::Event {
        match self.recv().await.expect("a message") {
            Received::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Sends a command and returns its response (asserting no event arrives first).
    pub async fn request(&mut self, command: Command) -> pb::Response {
        let id = self.send(command).await;
        let response = self.recv_response().await;
        assert_eq!(response.request_id, id, "response for another request");
        response
    }

    /// Expects the request to fail with `code`; returns the error.
    pub async fn expect_error(&mut self, command: Command, code: ErrorCode) -> pb::Error {
        let response = self.request(command).await;
        expect_error_response(response, code)
    }

    /// Subscribes to a topic and checks Subscribed then Ready.
    pub async fn subscribe_topic(&mut self, subscription_id: u64, topic: &str) {
        self.subscribed_then_ready(subscribe_topic(subscription_id, topic))
            .await;
    }

    /// Sends a `Subscribe` with no initial rows, checks that `Subscribed` (for its id) then
    /// `Ready` follow, and returns the `Ready` event (its cursor is the subscription's start).
    pub async fn subscribed_then_ready(&mut self, subscribe: Command) -> pb::Event {
        let Command::Subscribe(pb::Subscribe {
            subscription_id, ..
        }) = subscribe
        else {
            panic!("subscribed_then_ready takes a Subscribe, not {subscribe:?}");
        };
        let response = self.request(subscribe).await;
        match response.result {
            Some(pb::response::Result::Subscribed(s)) => {
                assert_eq!(s.subscription_id, subscription_id)
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
        let ready = self.recv_event().await;
        assert_eq!(ready.subscription_id, subscription_id);
        assert!(
            matches!(ready.body, Some(pb::event::Body::Ready(_))),
            "{ready:?}"
        );
        ready
    }

    /// The next event, or `None` for a `Subscribed` answer (checked): for subscribes sent
    /// with [`send`](Self::send), whose events may come before later ones' answers. A close
    /// fails the test.
    pub async fn recv_event_or_subscribed(&mut self) -> Option<pb::Event> {
        match self.recv().await.expect("a message") {
            Received::Event(event) => Some(event),
            Received::Response(response) => {
                assert!(
                    matches!(response.result, Some(pb::response::Result::Subscribed(_))),
                    "{response:?}"
                );
                None
            }
            Received::Close(close) => panic!("closed: {close:?}"),
        }
    }

    /// Publishes and returns the Published result.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> pb::Published {
        match self.request(publish(topic, payload)).await.result {
            Some(pb::response::Result::Published(p)) => p,
            other => panic!("expected Published, got {other:?}"),
        }
    }

    /// Round-trips a Ping: everything queued for this client before it has arrived once this
    /// returns, so "nothing else arrived" can be asserted. Panics if anything else comes first.
    pub async fn barrier(&mut self) {
        let response = self.request(Command::Ping(pb::Ping {})).await;
        assert!(matches!(
            response.result,
            Some(pb::response::Result::Pong(_))
        ));
    }

    /// The next topic message, asserting its subscription id.
    pub async fn recv_message(&mut self, subscription_id: u64) -> pb::TopicMessage {
        let event = self.recv_event().await;
        assert_eq!(event.subscription_id, subscription_id, "event {event:?}");
        match event.body {
            Some(pb::event::Body::Message(message)) => message,
            other => panic!("expected a topic message, got {other:?}"),
        }
    }

    /// Subscribes to `table`'s changes from now on and checks `Subscribed` then `Ready`.
    pub async fn subscribe_table(&mut self, subscription_id: u64, table: &str) {
        self.subscribed_then_ready(table_feed(subscription_id, table, false))
            .await;
    }

    /// The next row change, asserting its subscription id; fails after [`WAIT`] or when
    /// anything else arrives first.
    pub async fn recv_change(&mut self, subscription_id: u64) -> pb::RowChange {
        let event = self.recv_event().await;
        assert_eq!(event.subscription_id, subscription_id, "event {event:?}");
        match event.body {
            Some(pb::event::Body::Change(change)) => change,
            other => panic!("expected a row change, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await.expect("a message before close") {
                Received::Close(Some(frame)) => return frame,
                Received::Close(None) => panic!("close frame without a code"),
                _ => continue,
            }
        }
    }

    /// Closes the connection (a close frame; errors ignored).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Asserts that `response` is an error with `code` and a message; returns the error.
pub fn expect_error_response(response: pb::Response, code: ErrorCode) -> pb::Error {
    match response.result {
        Some(pb::response::Result::Error(error)) => {
            assert_eq!(
                error.code(),
                code,
                "wrong error code; message: {}",
                error.message
            );
            assert!(!error.message.is_empty(), "error without a message");
            error
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}
