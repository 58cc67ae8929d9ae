//! Who a client is: JWT validation with pinned algorithms, and the [`Principal`] a valid token
//! names. Whether that principal may subscribe or publish is [`permissions`]' business; counting
//! connections per user is `limits`'.
//!
//! Every key is tied to one algorithm when it is loaded (the HS256 secret to HS256, an RSA PEM or
//! JWK to RS256, a P-256 one to ES256), and a token is only checked against keys of the algorithm
//! its header names. So `alg: none` (not an algorithm here) and an HS256 token "signed" with an
//! RSA public key (no HS256 key is that key) are rejected, whatever the token says.

pub mod permissions;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::protocol::{Code, Failure};
use crate::row_filter::Claims;

/// Why the authentication settings cannot be used (bad key file, ...).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key file could not be read.
    #[error("cannot read {setting} file {path}: {source}")]
    Read {
        /// The setting that named it.
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key could not be parsed.
    #[error("invalid key in {setting} ({what}): {reason}")]
    Key {
        /// The setting that named it.
        setting: &'static str,
        /// Which key (file, kid).
        what: String,
        /// The parser's message.
        reason: String,
    },
}

/// A verification key, pinned to one algorithm.
struct Key {
    /// The JWKS `kid`, when the key came from a JWKS file.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Validates tokens; built once from the configuration, shared by every session.
pub struct Authenticator {
    keys: Vec<Key>,
    anonymous: bool,
    leeway: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    require_exp: bool,
    roles_claim: String,
    user_claim: String,
    tenant_claim: String,
    /// How long a connection may stay unauthenticated.
    pub timeout: Duration,
}

/// Who a connection acts as.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The user claim (`sub` by default); `None` for anonymous connections.
    pub user: Option<String>,
    /// The tenant claim's value, when the token has one.
    pub tenant: Option<String>,
    /// Roles from the roles claim (a string or an array of strings); `["anonymous"]` for
    /// anonymous connections.
    pub roles: Vec<String>,
    /// Every claim of the token, for permission placeholders and row rules.
    pub claims: Map<String, Value>,
    /// When the token expires (seconds since the epoch), if it does.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The principal of a connection without a token (when anonymous access is on).
    pub fn anonymous() -> Self {
        Self {
            user: None,
            tenant: None,
            roles: vec!["anonymous".into()],
            claims: Map::new(),
            expires_at: None,
        }
    }

    /// How long until the token expires (plus `leeway`), if it does.
    pub fn remaining(&self, leeway: Duration) -> Option<Duration> {
        let expires = Duration::from_secs(self.expires_at?).saturating_add(leeway);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(expires.saturating_sub(now))
    }
}

/// A claim by name, or by a dotted path into nested objects (`realm_access.roles`): what
/// permission placeholders and row filters are filled from.
impl Claims for Principal {
    fn claim(&self, path: &str) -> Option<&Value> {
        self.claims.claim(path)
    }
}

/// A claim's value as text, when it is a string or a number.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unauthenticated(message: impl Into<String>) -> Failure {
    Failure::new(Code::Unauthenticated, message)
}

impl Authenticator {
    /// Loads the configured keys. Validation that the settings make sense together (keys or
    /// explicit anonymous access) is `Config::validate`'s.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        if let Some(secret) = hs256_secret(config)? {
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        let rsa = |pem: &[u8]| DecodingKey::from_rsa_pem(pem);
        let ec = |pem: &[u8]| DecodingKey::from_ec_pem(pem);
        keys.extend(pem_keys(
            &config.rs256_public_keys,
            "auth.rs256_public_keys",
            Algorithm::RS256,
            rsa,
        )?);
        keys.extend(pem_keys(
            &config.es256_public_keys,
            "auth.es256_public_keys",
            Algorithm::ES256,
            ec,
        )?);
        if let Some(path) = &config.jwks_file {
            keys.extend(jwks(path)?);
        }
        Ok(Self {
            keys,
            anonymous: config.anonymous,
            leeway: config.leeway,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            require_exp: config.require_exp,
            roles_claim: config.roles_claim.clone(),
            user_claim: config.user_claim.clone(),
            tenant_claim: config.tenant_claim.clone(),
            timeout: config.timeout,
        })
    }

    /// Whether connections without a token are let in (as [`Principal::anonymous`]).
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The clock-skew allowance applied to `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Validates a token: signature with a key of the token's (pinned) algorithm, `exp`, `nbf`,
    /// and `iss`/`aud` when configured. The failure says what was wrong, never with the token.
    pub fn verify(&self, token: &str) -> Result<Principal, Failure> {
        if self.keys.is_empty() {
            return Err(unauthenticated(
                "this server accepts no tokens (no keys are configured)",
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| {
            unauthenticated(format!(
                "malformed token or unsupported algorithm: {}",
                describe(err.kind())
            ))
        })?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(unauthenticated(format!(
                "tokens signed with {:?}{} are not accepted",
                header.alg,
                header
                    .kid
                    .as_ref()
                    .map_or(String::new(), |kid| format!(" (kid {kid})"))
            )));
        }
        let validation = self.validation(header.alg);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    self.check_times(&data.claims)?;
                    return Ok(self.principal(data.claims));
                }
                Err(err) if matches!(err.kind(), ErrorKind::InvalidSignature) => last = Some(err),
                Err(err) => return Err(unauthenticated(describe(err.kind()))),
            }
        }
        Err(unauthenticated(last.map_or_else(
            || "invalid signature".to_string(),
            |err| describe(err.kind()),
        )))
    }

    /// `exp` and `nbf`, checked here rather than by jsonwebtoken: with serde_json's
    /// `arbitrary_precision` (which this crate enables for exact numerics) jsonwebtoken cannot
    /// read numeric claims and would take them for absent.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), Failure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let leeway = self.leeway.as_secs();
        let seconds = |name: &str| -> Result<Option<u64>, Failure> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => whole_seconds(value)
                    .map(Some)
                    .ok_or_else(|| unauthenticated(format!("token has an invalid {name} claim"))),
            }
        };
        match seconds("exp")? {
            Some(exp) if exp.saturating_add(leeway) < now => {
                return Err(unauthenticated("token expired"))
            }
            None if self.require_exp => return Err(unauthenticated("token has no exp claim")),
            _ => {}
        }
        if let Some(nbf) = seconds("nbf")? {
            if nbf > now.saturating_add(leeway) {
                return Err(unauthenticated(
                    "token not valid yet (nbf is in the future)",
                ));
            }
        }
        Ok(())
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        // See check_times.
        validation.validate_nbf = false;
        validation.validate_exp = false;
        let mut required = vec![];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn principal(&self, claims: Map<String, Value>) -> Principal {
        let roles = match claims.claim(&self.roles_claim) {
            Some(Value::String(role)) => vec![role.clone()],
            Some(Value::Array(roles)) => roles
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Principal {
            user: claims.claim(&self.user_claim).and_then(scalar),
            tenant: claims.claim(&self.tenant_claim).and_then(scalar),
            roles,
            expires_at: claims.get("exp").and_then(whole_seconds),
            claims,
        }
    }
}

/// A NumericDate claim as whole seconds: an integer, or a non-negative finite number rounded
/// down (RFC 7519 allows fractions).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range checked just before
fn whole_seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && (0.0..1.8e19).contains(f))
            .map(|f| f as u64)
    })
}

/// A token error in words a client can act on.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidAudience => "token has the wrong audience (aud)".into(),
        ErrorKind::InvalidIssuer => "token has the wrong issuer (iss)".into(),
        ErrorKind::InvalidSignature => "invalid signature".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted".into()
        }
        other => format!("invalid token ({other:?})"),
    }
}

/// The HS256 secret, from the setting or its file (trailing newline dropped).
fn hs256_secret(config: &AuthConfig) -> Result<Option<String>, AuthError> {
    if let Some(secret) = &config.hs256_secret {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = &config.hs256_secret_file else {
        return Ok(None);
    };
    let bytes = read(path, "auth.hs256_secret_file")?;
    let text =
        String::from_utf8(bytes).map_err(|e| key_error("auth.hs256_secret_file", path, &e))?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::Read {
        setting,
        path: path.display().to_string(),
        source,
    })
}

fn key_error(setting: &'static str, path: &Path, err: &dyn std::fmt::Display) -> AuthError {
    AuthError::Key {
        setting,
        what: path.display().to_string(),
        reason: err.to_string(),
    }
}

/// PEM public keys from `paths`, each pinned to `algorithm`.
fn pem_keys(
    paths: &[std::path::PathBuf],
    setting: &'static str,
    algorithm: Algorithm,
    parse: impl Fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
) -> Result<Vec<Key>, AuthError> {
    paths
        .iter()
        .map(|path| {
            let key = parse(&read(path, setting)?).map_err(|e| key_error(setting, path, &e))?;
            Ok(Key {
                kid: None,
                algorithm,
                key,
            })
        })
        .collect()
}

/// The keys of a JWKS file, each pinned to its `alg`, or to RS256 (RSA) / ES256 (P-256) when
/// the key names none. Keys of other kinds are refused rather than skipped.
fn jwks(path: &Path) -> Result<Vec<Key>, AuthError> {
    const SETTING: &str = "auth.jwks_file";
    let text = read(path, SETTING)?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| key_error(SETTING, path, &e))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let what = || format!("{} kid {}", path.display(), kid.as_deref().unwrap_or("-"));
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => {
                return Err(AuthError::Key {
                    setting: SETTING,
                    what: what(),
                    reason: "only RSA and P-256 keys are supported".into(),
                })
            }
        };
        if let Some(declared) = jwk.common.key_algorithm {
            let declared = format!("{declared:?}");
            if declared != format!("{algorithm:?}") {
                return Err(AuthError::Key {
                    setting: SETTING,
                    what: what(),
                    reason: format!("alg {declared} is not supported for this key"),
                });
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Key {
            setting: SETTING,
            what: what(),
            reason: e.to_string(),
        })?;
        keys.push(Key {
            kid,
            algorithm,
            key,
        });
    }
    Ok(keys)
}
