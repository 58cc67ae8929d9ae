//! Limits against a real server: allowed browser origins, connections in all, per user and per
//! tenant, and requests per second. Each is answered with its coded error, and what is over the
//! limit does not disturb what is within it.

mod support;

use std::time::Duration;

use feedgate::protocol::pb;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::tokens::{auth_config, claims, ping, sign};
use support::{start_with, test_config, wait_for_stat, Client, ErrorCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The HTTP status of a refused upgrade.
fn refused_status(result: Result<Client, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

#[tokio::test]
async fn only_allowed_browser_origins_may_connect() {
    let mut config = test_config();
    config.websocket.allowed_origins = vec!["https://app.example.com".into()];
    let server = start_with(config).await;
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let with_origin = |origin: &str| {
        let mut request = url.as_str().into_client_request().expect("request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
        request
    };
    for evil in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "null",
    ] {
        let status = refused_status(Client::connect_request(with_origin(evil)).await);
        assert_eq!(status, 403, "{evil}");
    }
    let mut client = Client::connect_request(with_origin("https://app.example.com"))
        .await
        .expect("allowed origin");
    client.subscribe_topic(1, "t").await;
    // Clients that are not browsers send no Origin and are not affected.
    let mut plain = Client::connect(server.local_addr()).await;
    plain.subscribe_topic(1, "t").await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn connections_past_the_total_are_refused_and_the_slot_comes_back() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/v1/ws");
    let first = Client::connect(addr).await;
    let mut second = Client::connect(addr).await;
    assert_eq!(
        refused_status(Client::connect_request(url.as_str()).await),
        503
    );
    // Those within the limit are unaffected.
    second.subscribe_topic(1, "t").await;
    first.close().await;
    wait_for_stat(addr, "connections", 1).await;
    let mut third = Client::connect_request(url.as_str())
        .await
        .expect("a slot is free");
    third.subscribe_topic(1, "t").await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn connections_per_user_and_per_tenant_are_limited() {
    let mut config = auth_config();
    config.limits.max_connections_per_user = 2;
    config.limits.max_connections_per_tenant = 3;
    let server = start_with(config).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/v1/ws");
    let token = |sub: &str, tenant: &str| {
        let mut claims = claims(sub);
        claims["tenant_id"] = json!(tenant);
        sign(Algorithm::HS256, None, &claims)
    };
    let connect = |token: String| {
        let url = format!("{url}?token={token}");
        async move { Client::connect_request(url).await.expect("upgrade") }
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = connect(token("alice", "acme")).await;
        client.subscribe_topic(1, "t").await;
        held.push(client);
    }
    let mut third = connect(token("alice", "acme")).await;
    let (code, reason) = third.expect_close().await;
    assert_eq!(code, 4029);
    assert!(reason.starts_with("LIMIT_EXCEEDED: user alice"), "{reason}");

    // Authenticating in Hello hits the same limit, as an error response (the connection stays
    // unauthenticated).
    let mut other = Client::connect(addr).await;
    let response = other
        .request(support::tokens::hello(&token("alice", "acme")))
        .await;
    let error = support::expect_error_response(response, ErrorCode::LimitExceeded);
    assert!(error.message.contains("alice"), "{}", error.message);

    let mut bob = connect(token("bob", "acme")).await;
    bob.subscribe_topic(1, "t").await;
    let mut carol = connect(token("carol", "acme")).await;
    let (code, reason) = carol.expect_close().await;
    assert_eq!(code, 4029);
    assert!(reason.contains("tenant acme"), "{reason}");

    // Another tenant is not affected, and a closed connection gives its slots back.
    let mut dave = connect(token("dave", "globex")).await;
    dave.subscribe_topic(1, "t").await;
    held.pop().expect("one").close().await;
    // Open now: alice's other connection, the unauthenticated one, bob and dave.
    wait_for_stat(addr, "connections", 4).await;
    let mut alice_again = connect(token("alice", "acme")).await;
    alice_again.subscribe_topic(1, "t").await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn requests_past_the_rate_get_rate_limited_with_a_retry_time() {
    let mut config = test_config();
    // One request back each second: the burst is used up before one comes back, even on a
    // busy machine.
    config.limits.requests_per_second = 1;
    config.limits.request_burst = 5;
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut other = Client::connect(server.local_addr()).await;
    // Six requests at once: the burst lets five through and refuses the sixth.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(client.send(ping()).await);
    }
    for id in &ids[..5] {
        let response = client.recv_response().await;
        assert_eq!(response.request_id, *id);
        assert!(matches!(
            response.result,
            Some(pb::response::Result::Pong(_))
        ));
    }
    let response = client.recv_response().await;
    assert_eq!(response.request_id, ids[5]);
    let error = support::expect_error_response(response, ErrorCode::RateLimited);
    assert!(error.retryable);
    assert!(
        (1..=1000).contains(&error.retry_after_ms),
        "retry_after_ms {}",
        error.retry_after_ms
    );
    // Another connection has its own bucket, and this one recovers after the advised wait.
    assert!(matches!(
        other.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    tokio::time::sleep(Duration::from_millis(u64::from(error.retry_after_ms) + 10)).await;
    assert!(matches!(
        client.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    server.shutdown().await.expect("shutdown");
}
