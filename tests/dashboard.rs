//! The dashboard's server side: the embedded page served at `/ui/` (`/` redirecting there), and
//! `serve --demo`'s sample stream on `demo.prices`. The page itself is tested in a browser by
//! the TypeScript client's suite (clients/typescript/test/dashboard.test.ts).

mod support;

use support::{http_get, start_with, test_config, Client};

#[tokio::test]
async fn serves_the_embedded_page() {
    let server = start_with(test_config()).await;
    let addr = server.local_addr();
    assert_eq!(http_get(addr, "/").await.0, 307);
    assert_eq!(http_get(addr, "/ui").await.0, 308);
    let (status, index) = http_get(addr, "/ui/").await;
    assert_eq!(status, 200);
    assert!(
        index.contains(r#"<script type="module" src="dashboard.js">"#),
        "{index}"
    );
    let (status, script) = http_get(addr, "/ui/dashboard.js").await;
    assert_eq!(status, 200);
    assert!(script.starts_with("// Built from clients/typescript/examples/dashboard"));
    assert_eq!(http_get(addr, "/ui/dashboard.css").await.0, 200);
    assert_eq!(http_get(addr, "/ui/no-such-file.js").await.0, 404);
    assert_eq!(http_get(addr, "/ui/../Cargo.toml").await.0, 404);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn demo_publishes_json_price_ticks_keyed_by_symbol() {
    let mut config = test_config();
    config.demo = true;
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, feedgate::demo::TOPIC).await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let message = client.recv_message(1).await;
        let tick: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        assert_eq!(message.topic, "demo.prices");
        assert_eq!(tick["symbol"], message.key.as_str());
        assert!(tick["price"].as_f64().expect("price") >= 1.0, "{tick}");
        assert!(tick["change"].is_number(), "{tick}");
        seqs.push(tick["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    server.shutdown().await.expect("shutdown");

    // Off by default.
    let server = start_with(test_config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, feedgate::demo::TOPIC).await;
    let quiet = tokio::time::timeout(feedgate::demo::TICK * 3, client.recv_message(1)).await;
    assert!(quiet.is_err(), "no demo stream without --demo");
    server.shutdown().await.expect("shutdown");
}
