//! Tokens for tests: signing with the test-only keys in `tests/fixtures/keys`, and a server
//! configuration that accepts them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use feedgate::config::Config;
use feedgate::protocol::pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{test_config, Command};

pub const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes!";
pub const ISSUER: &str = "feedgate-tests";
pub const AUDIENCE: &str = "feedgate";

pub fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

pub fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(keys().join(name)).expect("test key")
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A server accepting HS256, RS256 (PEM), ES256 (PEM) and RS256 from a JWKS, with an issuer and
/// audience, and no anonymous access.
pub fn auth_config() -> Config {
    let mut config = test_config();
    config.auth.anonymous = false;
    config.auth.hs256_secret = Some(SECRET.into());
    config.auth.rs256_public_keys = vec![keys().join("rsa-public.pem")];
    config.auth.es256_public_keys = vec![keys().join("ec-public.pem")];
    config.auth.jwks_file = Some(keys().join("jwks.json"));
    config.auth.issuer = Some(ISSUER.into());
    config.auth.audience = Some(AUDIENCE.into());
    config.auth.leeway = Duration::ZERO;
    config
}

pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "roles": ["user"]})
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 if kid == Some("k2") => {
            EncodingKey::from_rsa_pem(&key_file("rsa2-private.pem")).expect("rsa2")
        }
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key_file("rsa-private.pem")).expect("rsa"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_file("ec-private.pem")).expect("ec"),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hello(token: &str) -> Command {
    Command::Hello(pb::Hello {
        protocol_version: 0,
        token: token.into(),
        client_name: "tests/auth".into(),
        bundles: false,
    })
}

pub fn authenticate(token: &str) -> Command {
    Command::Authenticate(pb::Authenticate {
        token: token.into(),
    })
}

pub fn ping() -> Command {
    Command::Ping(pb::Ping {})
}
