//! Test support: a real feedgate server on 127.0.0.1:0 and a WebSocket client speaking the
//! generated protobuf types (both `feedgate::testing`, shipped for applications' own tests),
//! plus what only feedgate's own tests need: databases, brokers, proxies, raw sockets, stats.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

// The server starter and the protocol client are the shipped ones (`feedgate::testing`, the
// `testing` feature, which Cargo.toml's dev-dependency on this crate turns on).
pub use feedgate::testing::*;

pub mod db;
pub mod kafka;
pub mod proxy;
pub mod rabbit;
pub mod raw;
pub mod tokens;

/// Polls `/v1/stats` until `field` equals `want` (state changes after a close are asynchronous).
pub async fn wait_for_stat(addr: SocketAddr, field: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = stats(addr).await;
        if stats[field] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{field} stayed {} (wanted {want})",
            stats[field]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/v1/stats` until `holds` says yes (counters move asynchronously); returns those
/// stats. Fails after [`WAIT`], naming `what` and showing the last stats.
pub async fn wait_for_stats(
    addr: SocketAddr,
    what: &str,
    holds: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = stats(addr).await;
        if holds(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held; last stats: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
