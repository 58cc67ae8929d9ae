//! Who a connection acts as, over its life: unauthenticated (until a token arrives or the
//! authentication timeout closes it), then a principal, whose token may be refreshed in-band
//! before it expires. Validation itself is `auth`'s; this module only holds the state and the
//! deadlines the session's read loop waits on.

use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::{Authenticator, Principal};
use crate::limits::{ConnectionLimits, IdentitySlot};
use crate::outbound::CloseReason;
use crate::protocol::{AuthInfo, Code, Failure};

/// A connection's identity.
pub(super) enum Identity {
    /// No valid token yet; the connection is closed at `deadline`.
    Pending {
        /// `auth.timeout` after the connection opened.
        deadline: Instant,
    },
    /// Authenticated (or anonymous, where that is allowed).
    Known {
        principal: Principal,
        /// When the token expires (plus leeway); `None` when it does not.
        expires: Option<Instant>,
        /// The connection's place in the per-user and per-tenant counts.
        _slot: IdentitySlot,
    },
}

impl Identity {
    /// The identity a connection starts with: from the upgrade request's token, anonymous when
    /// there is none and that is allowed, else pending. A bad token in the upgrade ends the
    /// connection (its close reason says why).
    pub(super) fn start(
        auth: &Authenticator,
        limits: &Arc<ConnectionLimits>,
        token: Option<&str>,
    ) -> Result<Self, CloseReason> {
        match token {
            Some(token) => {
                let principal = auth
                    .verify(token)
                    .map_err(|f| CloseReason::Unauthenticated(f.message))?;
                Self::known(auth, limits, principal).map_err(|f| match f.code {
                    Code::LimitExceeded => CloseReason::LimitExceeded(f.message),
                    _ => CloseReason::Unauthenticated(f.message),
                })
            }
            None if auth.allows_anonymous() => Self::known(auth, limits, Principal::anonymous())
                .map_err(|f| CloseReason::LimitExceeded(f.message)),
            None => Ok(Self::Pending {
                deadline: Instant::now() + auth.timeout,
            }),
        }
    }

    /// The identity of `principal`, counted in the per-user and per-tenant limits, and named
    /// in the session's span from now on.
    fn known(
        auth: &Authenticator,
        limits: &Arc<ConnectionLimits>,
        principal: Principal,
    ) -> Result<Self, Failure> {
        let slot = limits.identify(&principal)?;
        let span = tracing::Span::current();
        if let Some(user) = &principal.user {
            span.record("user", user.as_str());
        }
        if let Some(tenant) = &principal.tenant {
            span.record("tenant", tenant.as_str());
        }
        Ok(Self::Known {
            expires: expiry(auth, &principal),
            principal,
            _slot: slot,
        })
    }

    /// The principal, once authenticated.
    pub(super) fn principal(&self) -> Option<&Principal> {
        match self {
            Self::Pending { .. } => None,
            Self::Known { principal, .. } => Some(principal),
        }
    }

    /// When the connection must close unless something changes: the authentication timeout, or
    /// the token's expiry.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Pending { deadline } => Some(*deadline),
            Self::Known { expires, .. } => *expires,
        }
    }

    /// Why the connection closes at its deadline.
    pub(super) fn deadline_reason(&self, auth: &Authenticator) -> CloseReason {
        match self {
            Self::Pending { .. } => CloseReason::Unauthenticated(format!(
                "no valid token within {}",
                humantime::format_duration(auth.timeout)
            )),
            Self::Known { .. } => {
                CloseReason::Unauthenticated("token expired; reconnect with a new one".into())
            }
        }
    }

    /// Authenticates with `token`, or refreshes: a refreshing token must name the same user and
    /// tenant. On failure nothing changes.
    pub(super) fn authenticate(
        &mut self,
        auth: &Authenticator,
        limits: &Arc<ConnectionLimits>,
        token: &str,
    ) -> Result<AuthInfo, Failure> {
        let principal = auth.verify(token)?;
        let info = info_of(&principal);
        match self {
            Self::Known {
                principal: held,
                expires,
                ..
            } => {
                if held.user != principal.user || held.tenant != principal.tenant {
                    return Err(Failure::new(
                        Code::Unauthenticated,
                        "a refreshed token must name the connection's user and tenant",
                    ));
                }
                *expires = expiry(auth, &principal);
                *held = principal;
            }
            Self::Pending { .. } => *self = Self::known(auth, limits, principal)?,
        }
        Ok(info)
    }

    /// What `Welcome` says about the identity, once known.
    pub(super) fn info(&self) -> Option<AuthInfo> {
        self.principal().map(info_of)
    }
}

/// What `Welcome` and `Authenticated` say about a principal.
fn info_of(principal: &Principal) -> AuthInfo {
    AuthInfo {
        user: principal.user.clone().unwrap_or_default(),
        roles: principal.roles.clone(),
        expires_at_micros: principal.expires_at.map_or(0, |s| {
            i64::try_from(s)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000))
                .unwrap_or(i64::MAX)
        }),
    }
}

/// When the principal's token expires (plus leeway) on the monotonic clock; `None` when it does
/// not, or so far ahead that the clock cannot represent it.
fn expiry(auth: &Authenticator, principal: &Principal) -> Option<Instant> {
    Instant::now().checked_add(principal.remaining(auth.leeway())?)
}
