//! Limits that keep one client (or one user, or one tenant) from exhausting the server:
//! connections in all, per user and per tenant, and requests per second per connection. Each
//! slot is a guard that gives itself back when dropped, so a connection that ends for any reason
//! frees what it held. Message sizes and subscription counts are checked where they arise
//! (`http` and `session`); the outbound queue bound is `outbound`'s.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::auth::Principal;
use crate::config::Limits;
use crate::protocol::{Code, Failure};

/// Open connections, in all and by user and tenant. Shared by every connection.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_user: usize,
    max_per_tenant: usize,
    total: AtomicUsize,
    /// Open connections by user and by tenant; entries at zero are removed, so the maps hold
    /// only identities with open connections.
    users: Mutex<HashMap<String, usize>>,
    tenants: Mutex<HashMap<String, usize>>,
}

/// One connection counted in the total; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
}

/// One connection counted for its user and tenant; released on drop.
#[derive(Debug)]
pub struct IdentitySlot {
    limits: Arc<ConnectionLimits>,
    user: Option<String>,
    tenant: Option<String>,
}

impl ConnectionLimits {
    /// Limits from the configuration.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_user: limits.max_connections_per_user,
            max_per_tenant: limits.max_connections_per_tenant,
            total: AtomicUsize::new(0),
            users: Mutex::default(),
            tenants: Mutex::default(),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts one more connection, unless `max_connections` are open.
    pub fn connect(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot {
            limits: self.clone(),
        })
    }

    /// Counts a connection for its principal's user and tenant, or `LIMIT_EXCEEDED` naming
    /// the limit reached. Anonymous principals count against neither.
    pub fn identify(self: &Arc<Self>, principal: &Principal) -> Result<IdentitySlot, Failure> {
        let user = principal.user.clone();
        let tenant = principal.tenant.clone();
        if let Some(user) = &user {
            take(&self.users, user, self.max_per_user).map_err(|open| {
                Failure::new(
                    Code::LimitExceeded,
                    format!("user {user} already has {open} connections open"),
                )
                .detail("limit", self.max_per_user)
                .detail("setting", "limits.max_connections_per_user")
            })?;
        }
        if let Some(tenant) = &tenant {
            if let Err(open) = take(&self.tenants, tenant, self.max_per_tenant) {
                if let Some(user) = &user {
                    give_back(&self.users, user);
                }
                return Err(Failure::new(
                    Code::LimitExceeded,
                    format!("tenant {tenant} already has {open} connections open"),
                )
                .detail("limit", self.max_per_tenant)
                .detail("setting", "limits.max_connections_per_tenant"));
            }
        }
        Ok(IdentitySlot {
            limits: self.clone(),
            user,
            tenant,
        })
    }
}

/// Counts one more for `key` unless `max` are held; `Err(open)` when full.
fn take(map: &Mutex<HashMap<String, usize>>, key: &str, max: usize) -> Result<(), usize> {
    let mut map = lock(map);
    let open = map.get(key).copied().unwrap_or(0);
    if open >= max {
        return Err(open);
    }
    map.insert(key.to_string(), open + 1);
    Ok(())
}

fn give_back(map: &Mutex<HashMap<String, usize>>, key: &str) {
    let mut map = lock(map);
    if let Some(open) = map.get_mut(key) {
        *open -= 1;
        if *open == 0 {
            map.remove(key);
        }
    }
}

fn lock(map: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // A panic while holding this lock cannot leave the counts half-updated (single inserts and
    // removes), so a poisoned lock is still consistent.
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        if let Some(user) = &self.user {
            give_back(&self.limits.users, user);
        }
        if let Some(tenant) = &self.tenant {
            give_back(&self.limits.tenants, tenant);
        }
    }
}

/// One connection's request rate: a token bucket of `request_burst` requests refilled at
/// `requests_per_second`. Unlimited when the rate is 0.
pub struct RequestRate {
    limiter: Option<DefaultDirectRateLimiter>,
}

impl RequestRate {
    /// The bucket for one connection.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Takes one request from the bucket, or says how long until one is available.
    pub fn check(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, user: usize, tenant: usize) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&Limits {
            max_connections: total,
            max_connections_per_user: user,
            max_connections_per_tenant: tenant,
            ..Limits::default()
        })
    }

    fn principal(user: &str, tenant: &str) -> Principal {
        Principal {
            user: Some(user.into()),
            tenant: Some(tenant.into()),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn slots_are_given_back_when_dropped() {
        let l = limits(2, 1, 2);
        let a = l.connect().expect("first");
        let _b = l.connect().expect("second");
        assert!(l.connect().is_none());
        drop(a);
        assert!(l.connect().is_some());

        let alice = l.identify(&principal("alice", "t1")).expect("alice");
        let err = l
            .identify(&principal("alice", "t1"))
            .expect_err("one per user");
        assert_eq!(err.code, Code::LimitExceeded);
        let _bob = l.identify(&principal("bob", "t1")).expect("bob");
        let err = l
            .identify(&principal("carol", "t1"))
            .expect_err("two per tenant");
        assert!(err.message.contains("tenant t1"), "{}", err.message);
        // The refused tenant slot gave carol's user slot back.
        drop(alice);
        assert!(l.identify(&principal("carol", "t1")).is_ok());
        assert!(l.identify(&Principal::anonymous()).is_ok());
    }

    #[test]
    fn the_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        // One request back per second, so that a busy machine cannot refill the bucket between
        // these checks.
        let rate = RequestRate::new(1, 3);
        for _ in 0..3 {
            assert!(rate.check().is_ok());
        }
        let wait = rate.check().expect_err("burst used up");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(RequestRate::new(0, 0).check().is_ok());
    }
}
