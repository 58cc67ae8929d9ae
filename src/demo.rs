//! `serve --demo`: a small live sample stream for a first run with nothing else installed, so
//! the dashboard has something moving to show. Four symbols' prices take a random walk and one
//! tick is published every [`TICK`] on the in-process broker's [`TOPIC`], as JSON
//! (`{"symbol":"ACME","price":101.25,"change":0.25,"seq":7}`) keyed by symbol (so squashing by
//! key keeps each symbol's latest). Off by default; it knows nothing of sessions or routing: it
//! publishes to the in-process broker whatever the routing rules say.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::broker::memory::MemoryBroker;
use crate::protocol::TopicMessage;

/// The demo stream's topic.
pub const TOPIC: &str = "demo.prices";

/// Time between ticks: four a second.
pub const TICK: Duration = Duration::from_millis(250);

/// The symbols and their starting prices, in cents.
const SYMBOLS: [(&str, i64); 4] = [
    ("ACME", 10_000),
    ("GLOBEX", 4_250),
    ("INITECH", 1_875),
    ("UMBRELLA", 23_000),
];

/// Publishes ticks until `stop` is cancelled. Cancel safe: it holds nothing between ticks.
pub async fn run(broker: MemoryBroker, stop: CancellationToken) {
    info!(topic = TOPIC, "demo stream on");
    let mut prices = SYMBOLS.map(|(_, cents)| cents);
    // xorshift64, seeded from the clock: a sample stream needs no better randomness.
    let mut state = crate::protocol::now_micros().unsigned_abs() | 1;
    let mut interval = tokio::time::interval(TICK);
    for seq in 1_u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // `state % 4` and `% 101` are below 101: the casts cannot truncate.
        let index = (state % 4) as usize;
        let change = ((state >> 8) % 101) as i64 - 50;
        prices[index] = (prices[index] + change).max(100);
        let payload = tick(SYMBOLS[index].0, prices[index], change, seq);
        let message = TopicMessage {
            topic: TOPIC.into(),
            payload: Bytes::from(payload),
            key: SYMBOLS[index].0.into(),
            ..TopicMessage::default()
        };
        if let Err(failure) = broker.publish(message) {
            debug!(error = %failure, "demo tick not published");
        }
    }
}

/// One tick's JSON.
fn tick(symbol: &str, cents: i64, change: i64, seq: u64) -> String {
    serde_json::json!({
        "symbol": symbol,
        "price": cents as f64 / 100.0,
        "change": change as f64 / 100.0,
        "seq": seq,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_json_with_exact_cents() {
        let tick: serde_json::Value =
            serde_json::from_str(&tick("ACME", 10_125, -25, 3)).expect("json");
        assert_eq!(tick["symbol"], "ACME");
        assert_eq!(tick["price"].to_string(), "101.25");
        assert_eq!(tick["change"].to_string(), "-0.25");
        assert_eq!(tick["seq"], 3);
    }
}
