//! Authentication against a real server with hostile tokens: missing, expired, not yet valid,
//! wrong audience or issuer, `alg: none`, algorithm confusion, tampered, unknown key; tokens in
//! the upgrade request, in Hello and in Authenticate; the authentication timeout; expiry and
//! in-band refresh.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use feedgate::protocol::pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::tokens::{auth_config, authenticate, b64, claims, hello, key_file, now, ping, sign};
use support::{expect_error_response, start_with, test_config, Client, ErrorCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Sends Hello with `token` and expects UNAUTHENTICATED whose message contains `says`.
async fn refused(client: &mut Client, token: &str, says: &str) {
    let error = client
        .expect_error(hello(token), ErrorCode::Unauthenticated)
        .await;
    assert!(
        error.message.contains(says),
        "expected {says:?} in {:?}",
        error.message
    );
}

#[tokio::test]
async fn valid_tokens_of_each_pinned_algorithm_are_accepted() {
    let server = start_with(auth_config()).await;
    for (alg, kid) in [
        (Algorithm::HS256, None),
        (Algorithm::RS256, None),
        (Algorithm::ES256, None),
        (Algorithm::RS256, Some("k2")),
    ] {
        let mut client = Client::connect(server.local_addr()).await;
        let response = client
            .request(hello(&sign(alg, kid, &claims("alice"))))
            .await;
        let Some(pb::response::Result::Welcome(welcome)) = response.result else {
            panic!("{alg:?}/{kid:?}: expected Welcome, got {response:?}");
        };
        let who = welcome.authenticated.expect("authenticated");
        assert_eq!(who.user, "alice");
        assert_eq!(who.roles, vec!["user".to_string()]);
        assert!(who.expires_at_micros > 0);
        client.subscribe_topic(1, "anything").await;
        client.close().await;
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn hostile_tokens_are_refused_with_a_reason_and_the_connection_stays_usable() {
    let server = start_with(auth_config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let hs = |claims: &Value| sign(Algorithm::HS256, None, claims);

    let mut expired = claims("a");
    expired["exp"] = json!(now() - 60);
    refused(&mut client, &hs(&expired), "expired").await;

    let mut early = claims("a");
    early["nbf"] = json!(now() + 600);
    refused(&mut client, &hs(&early), "not valid yet").await;

    let mut audience = claims("a");
    audience["aud"] = json!("someone-else");
    refused(&mut client, &hs(&audience), "audience").await;

    let mut issuer = claims("a");
    issuer["iss"] = json!("https://evil.example");
    refused(&mut client, &hs(&issuer), "issuer").await;

    let mut no_exp = claims("a");
    no_exp.as_object_mut().expect("object").remove("exp");
    refused(&mut client, &hs(&no_exp), "exp").await;

    // alg: none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("a").to_string().as_bytes())
    );
    refused(&mut client, &none, "unsupported algorithm").await;

    // Signed with the right secret, then the claims swapped for another user's.
    let genuine = hs(&claims("a"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string().as_bytes()),
        parts[2]
    );
    refused(&mut client, &forged, "invalid signature").await;

    // Signed by the JWKS key but naming a kid that is not in the set: only the keys without a
    // kid (the PEM files) are tried, and they did not sign it.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("nope".into());
    let unknown_kid = jsonwebtoken::encode(
        &header,
        &claims("a"),
        &EncodingKey::from_rsa_pem(&key_file("rsa2-private.pem")).expect("rsa2"),
    )
    .expect("sign");
    refused(&mut client, &unknown_kid, "invalid signature").await;
    // An algorithm no key is pinned to, and garbage.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("a"),
        &EncodingKey::from_secret(support::tokens::SECRET.as_bytes()),
    )
    .expect("sign");
    refused(&mut client, &hs384, "HS384 are not accepted").await;
    refused(&mut client, "not-a-jwt", "malformed").await;

    // Nothing was let through, and the connection still works.
    client
        .expect_error(support::subscribe_topic(1, "t"), ErrorCode::Unauthenticated)
        .await;
    assert!(matches!(
        client.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    let response = client.request(hello(&hs(&claims("a")))).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Welcome(_))
    ));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    // The classic algorithm confusion: a server that verified RS256 with "the key" would accept
    // an HS256 token whose HMAC secret is the (public) RSA key. Only RS256 keys here.
    let mut config = auth_config();
    config.auth.hs256_secret = None;
    let server = start_with(config).await;
    let public_pem = key_file("rsa-public.pem");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("sign");
    let mut client = Client::connect(server.local_addr()).await;
    refused(&mut client, &confused, "HS256 are not accepted").await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unauthenticated_connections_may_only_hello_and_ping_until_the_timeout() {
    let mut config = auth_config();
    // Long enough for the four requests below on a busy machine; the close is awaited, not timed.
    config.auth.timeout = Duration::from_secs(3);
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    for command in [
        support::subscribe_topic(1, "t"),
        support::publish("t", b"x"),
        support::unsubscribe(1),
    ] {
        let error = client
            .expect_error(command, ErrorCode::Unauthenticated)
            .await;
        assert!(
            error.message.contains("authenticate first"),
            "{}",
            error.message
        );
    }
    assert!(matches!(
        client.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(
        reason.starts_with("UNAUTHENTICATED: no valid token within"),
        "{reason}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_upgrade_request_can_carry_the_token() {
    let server = start_with(auth_config()).await;
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let token = sign(Algorithm::ES256, None, &claims("bob"));

    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let mut client = Client::connect_request(request).await.expect("connects");
    client.subscribe_topic(1, "t").await;
    client.close().await;

    let mut client = Client::connect_request(format!("{url}?token={token}"))
        .await
        .expect("connects");
    client.subscribe_topic(1, "t").await;
    client.close().await;

    let mut expired = claims("bob");
    expired["exp"] = json!(now() - 60);
    let stale = sign(Algorithm::ES256, None, &expired);
    let mut client = Client::connect_request(format!("{url}?token={stale}"))
        .await
        .expect("upgrade completes; the close says why");
    let (code, reason) = client.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "UNAUTHENTICATED: token expired")
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_expiring_token_ends_the_session_unless_refreshed() {
    let server = start_with(auth_config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    // `exp` has a resolution of seconds. Each token leaves at least 3 s for the requests made
    // under it, so a busy machine does not end the session early; what is checked is the `exp`
    // put in the tokens, never the clock read again after the work.
    let first_exp = now() + 4;
    let mut short = claims("carol");
    short["exp"] = json!(first_exp);
    let response = client
        .request(authenticate(&sign(Algorithm::HS256, None, &short)))
        .await;
    let Some(pb::response::Result::Authenticated(who)) = response.result else {
        panic!("expected Authenticated, got {response:?}");
    };
    assert_eq!(who.expires_at_micros, first_exp * 1_000_000);
    client.subscribe_topic(1, "t").await;

    // Another user's token cannot take the connection over; nothing changes.
    let error = client
        .expect_error(
            authenticate(&sign(Algorithm::HS256, None, &claims("dave"))),
            ErrorCode::Unauthenticated,
        )
        .await;
    assert!(
        error.message.contains("connection's user"),
        "{}",
        error.message
    );

    // A refresh for the same user extends the session past the first token's expiry...
    let refreshed_exp = first_exp + 4;
    let mut longer = claims("carol");
    longer["exp"] = json!(refreshed_exp);
    let response = client
        .request(authenticate(&sign(Algorithm::RS256, None, &longer)))
        .await;
    let Some(pb::response::Result::Authenticated(who)) = response.result else {
        panic!("expected Authenticated, got {response:?}");
    };
    assert_eq!(who.user, "carol");
    assert_eq!(who.expires_at_micros, refreshed_exp * 1_000_000);
    sleep_until_past(first_exp).await;
    assert!(matches!(
        client.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    // ...and then it ends with a coded close, not before the refreshed token expires.
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("token expired"), "{reason}");
    assert!(now() >= refreshed_exp, "closed before the refreshed expiry");
    server.shutdown().await.expect("shutdown");
}

/// Sleeps until the wall clock (which the server checks `exp` against) is half a second past
/// `exp`, so that an expiry still armed for `exp` would have fired.
async fn sleep_until_past(exp: i64) {
    let exp = UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).expect("exp after 1970"));
    let wake = exp + Duration::from_millis(500);
    if let Ok(left) = wake.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_is_served_without_overflow() {
    // exp = u64::MAX is a valid NumericDate; the expiry deadline and Welcome's microseconds
    // must saturate, not overflow.
    let server = start_with(auth_config()).await;
    let mut forever = claims("methuselah");
    forever["exp"] = json!(u64::MAX);
    let mut client = Client::connect(server.local_addr()).await;
    let response = client
        .request(hello(&sign(Algorithm::ES256, None, &forever)))
        .await;
    let Some(pb::response::Result::Welcome(welcome)) = response.result else {
        panic!("expected Welcome, got {response:?}");
    };
    assert_eq!(
        welcome.authenticated.expect("who").expires_at_micros,
        i64::MAX
    );
    client.subscribe_topic(1, "t").await;
    assert!(matches!(
        client.request(ping()).await.result,
        Some(pb::response::Result::Pong(_))
    ));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn anonymous_access_is_explicit() {
    // test_config() allows it: no token needed, and Welcome says who the connection is.
    let server = start_with(test_config()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let response = client.request(hello("")).await;
    let Some(pb::response::Result::Welcome(welcome)) = response.result else {
        panic!("expected Welcome, got {response:?}");
    };
    let who = welcome.authenticated.expect("anonymous principal");
    assert_eq!(
        (who.user.as_str(), who.roles),
        ("", vec!["anonymous".to_string()])
    );
    // A token is still checked when one is sent, and refused here: no keys are configured.
    let response = client.request(hello("a.b.c")).await;
    expect_error_response(response, ErrorCode::Unauthenticated);
    server.shutdown().await.expect("shutdown");
}
