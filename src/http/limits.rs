//! Abuse limits: token buckets per phone number, client address or user (login, registration,
//! nearby searches), and the bound on requests in progress that sheds load under overload.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Forget idle keys every this many checks, so the limiter's memory stays bounded.
const PRUNE_EVERY_CHECKS: u64 = 1024;

/// A burst of `burst` attempts, then one more every `replenish`.
#[derive(Debug, Clone, Copy)]
pub struct LimitRule {
    pub burst: u32,
    pub replenish: Duration,
}

impl LimitRule {
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).expect("max(1) is non-zero");
        Quota::with_period(self.replenish.max(Duration::from_millis(1)))
            .expect("period is non-zero")
            .allow_burst(burst)
    }
}

/// One token bucket per key, forgetting idle keys now and then so memory stays bounded.
pub struct KeyedLimiter<K: std::hash::Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rule: LimitRule) -> Self {
        Self {
            buckets: RateLimiter::keyed(rule.quota()),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one token from `key`'s bucket; 429 with the wait in seconds when it is empty.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY_CHECKS == 0 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(key).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

pub struct LoginLimiter {
    per_phone: KeyedLimiter<String>,
    per_address: KeyedLimiter<IpAddr>,
}

impl LoginLimiter {
    pub fn new(per_phone: LimitRule, per_address: LimitRule) -> Self {
        Self {
            per_phone: KeyedLimiter::new(per_phone),
            per_address: KeyedLimiter::new(per_address),
        }
    }

    /// Counts one login attempt; 429 with the wait in seconds when either bucket is empty.
    pub fn check(&self, phone: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(address) = address {
            self.per_address.check(&address)?;
        }
        self.per_phone.check(&phone.to_owned())
    }
}

/// The request-level limits that are not login's, shared by every worker.
pub struct Limits {
    /// `POST /v1/auth/register` per client address.
    pub register_per_address: KeyedLimiter<IpAddr>,
    /// `GET /v1/therapists/nearby` per user.
    pub nearby_per_user: KeyedLimiter<i64>,
}

/// Requests being answered at once. Past the limit a request is refused at once with 503 and
/// `Retry-After` instead of queueing: under twice the load the server can take, the requests it
/// admits are still answered promptly and the rest learn so in microseconds.
#[derive(Debug)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    limit: usize,
}

/// Holds a place among the requests in progress until dropped.
pub struct Admitted<'a>(&'a InFlight);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            count: std::sync::atomic::AtomicUsize::new(0),
            limit: limit.max(1),
        }
    }

    /// A place for one more request, or `None` when every place is taken.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self);
        (before < self.limit).then_some(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_limit_are_refused_until_one_finishes() {
        let gate = InFlight::new(2);
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none());
        drop(a);
        assert!(gate.admit().is_some());
    }

    #[test]
    fn the_burst_is_allowed_then_429_with_a_retry_after() {
        let rule = LimitRule {
            burst: 2,
            replenish: Duration::from_secs(30),
        };
        let limiter = LoginLimiter::new(
            rule,
            LimitRule {
                burst: 100,
                replenish: Duration::from_secs(1),
            },
        );
        assert!(limiter.check("+639171234567", None).is_ok());
        assert!(limiter.check("+639171234567", None).is_ok());
        match limiter.check("+639171234567", None) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => {
                assert!((1..=30).contains(&retry_after_secs))
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            limiter.check("+639170000000", None).is_ok(),
            "other phones are unaffected"
        );
    }
}
