//! Test support for applications' own integration tests (the `testing` feature): start a real
//! feedgate server in the test's process on `127.0.0.1:0`, and talk to it over a real WebSocket
//! with the generated protobuf types.
//!
//! ```no_run
//! # async fn example() {
//! use feedgate::testing::{self, Client};
//!
//! let mut config = testing::test_config();
//! config.database_url = Some("postgres://postgres@127.0.0.1/app_test".into());
//! let server = testing::start_with(config).await;
//! let mut client = Client::connect(server.local_addr()).await;
//! client.subscribe_table(1, "public.orders").await;
//! // ... the application inserts order 7 ...
//! let change = client.recv_change(1).await;
//! assert_eq!(testing::column(&change.new_row, "id").as_deref(), Some("7"));
//! # }
//! ```
//!
//! Everything here is for tests: its functions panic (failing the test) instead of returning
//! errors, and every wait is bounded by [`WAIT`]. feedgate's own integration tests use it
//! through `tests/support`. Not here: databases (the test creates its own), the server itself
//! ([`crate::app`]). Guide: docs/testing-with-feedgate.md.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::Server;
use crate::config::Config;
use crate::protocol::pb;

pub use client::{expect_error_response, Client, Received};
pub use pb::request::Command;
pub use pb::ErrorCode;

mod client;

/// How long any single expected message may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: ephemeral port, anonymous access, no request rate limit (tests that
/// are about authentication or limits set their own); otherwise defaults.
pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    config.auth.anonymous = true;
    config.limits.requests_per_second = 0;
    config
}

/// Starts a server with [`test_config`]; panics (failing the test) when it cannot.
pub async fn start() -> Server {
    start_with(test_config()).await
}

/// Starts a server with `config` (start from [`test_config`]); panics when it cannot.
pub async fn start_with(config: Config) -> Server {
    Server::start(config).await.expect("server starts")
}

/// A `Subscribe` to `topic` from now on.
pub fn subscribe_topic(subscription_id: u64, topic: &str) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id,
        source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
            topic: topic.into(),
            ..Default::default()
        })),
        resume_from: Bytes::new(),
    })
}

/// A topic subscription starting at `start` (`offset` for `START_POSITION_OFFSET`), or resuming
/// after `resume_from` when that is not empty.
pub fn topic_feed_from(
    id: u64,
    topic: &str,
    start: pb::StartPosition,
    offset: i64,
    resume_from: &Bytes,
) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id: id,
        source: Some(pb::subscribe::Source::Topic(pb::TopicFeed {
            topic: topic.into(),
            start: start as i32,
            start_offset: offset,
            ..Default::default()
        })),
        resume_from: resume_from.clone(),
    })
}

/// A `Publish` of `payload` to `topic`.
pub fn publish(topic: &str, payload: &[u8]) -> Command {
    Command::Publish(pb::Publish {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        ..Default::default()
    })
}

/// An `Unsubscribe`.
pub fn unsubscribe(subscription_id: u64) -> Command {
    Command::Unsubscribe(pb::Unsubscribe { subscription_id })
}

/// A `Subscribe` to a table's changes, with its current rows first (as `INITIAL` changes
/// before `Ready`) when `include_initial`.
pub fn table_feed(subscription_id: u64, table: &str, include_initial: bool) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id,
        source: Some(pb::subscribe::Source::Table(pb::TableFeed {
            table: table.into(),
            include_initial,
            ..Default::default()
        })),
        resume_from: Bytes::new(),
    })
}

/// A [`table_feed`] (from now on, no initial rows) that delivers only the rows `filter` matches
/// (see [`column_equals`]); rows moving into it arrive as inserts, out of it as deletes.
pub fn filtered_table_feed(subscription_id: u64, table: &str, filter: pb::Filter) -> Command {
    Command::Subscribe(pb::Subscribe {
        subscription_id,
        source: Some(pb::subscribe::Source::Table(pb::TableFeed {
            table: table.into(),
            filter: Some(filter),
            ..Default::default()
        })),
        resume_from: Bytes::new(),
    })
}

/// The filter `column = value`, e.g. `column_equals("tenant", Kind::Text("a".into()))`.
pub fn column_equals(column: &str, value: pb::value::Kind) -> pb::Filter {
    pb::Filter {
        node: Some(pb::filter::Node::Compare(pb::Comparison {
            operand: Some(pb::Operand {
                of: Some(pb::operand::Of::Column(column.into())),
            }),
            op: pb::CompareOp::Eq as i32,
            value: Some(pb::Value { kind: Some(value) }),
        })),
    }
}

/// A column of a row as text, for assertions: `column(&change.new_row, "id")` is `Some("7")`
/// for a bigint 7, `Some("NULL")` for a null; `None` when the row or the column is absent.
pub fn column(row: &Option<pb::Row>, name: &str) -> Option<String> {
    use pb::value::Kind;
    let value = row.as_ref()?.columns.get(name)?;
    Some(match &value.kind {
        None | Some(Kind::Null(_)) => "NULL".into(),
        Some(Kind::Bool(b)) => b.to_string(),
        Some(Kind::Int(i)) => i.to_string(),
        Some(Kind::Double(d)) => d.to_string(),
        Some(Kind::Text(s) | Kind::Numeric(s) | Kind::Json(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
    })
}

/// A plain HTTP/1.1 GET; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `/v1/stats` as JSON.
pub async fn stats(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(addr, "/v1/stats").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("stats json")
}

/// Waits until the server's changefeed reader is connected to its database (`/v1/stats`
/// says so): [`start_with`] returns once the server listens, and a table subscription before
/// this point is refused (the database is unavailable), nor can `feedgate.watch` be called
/// before the reader has applied feedgate's migrations. Panics after 20 seconds.
pub async fn wait_for_database(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = stats(addr).await;
        if stats["database"] == "connected" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changefeed reader never connected; stats: {stats}"
        );
        // The server's own status: there is nothing to wait on but the next look.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
