//! Per-key rate limits on enqueue (GCRA, governor), per process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::auth::Principal;

/// One limiter per (key, rate): a key whose limit changes gets a fresh one.
type Limiters = HashMap<(Option<Uuid>, u32), Arc<DefaultDirectRateLimiter>>;

#[derive(Clone)]
pub struct RateLimits {
    default: Option<NonZeroU32>,
    limiters: Arc<Mutex<Limiters>>,
}

impl RateLimits {
    /// `per_second` is the default for keys without a limit of their own; 0 disables it.
    pub fn new(per_second: u32) -> Self {
        Self {
            default: NonZeroU32::new(per_second),
            limiters: Arc::default(),
        }
    }

    /// Takes one request from the caller's allowance; `Err` carries when to try again.
    pub fn check(&self, who: &Principal) -> Result<(), Duration> {
        let Some(rate) = who.rate_limit.and_then(NonZeroU32::new).or(self.default) else {
            return Ok(());
        };
        let limiter = {
            let Ok(mut limiters) = self.limiters.lock() else {
                return Ok(());
            };
            limiters
                .entry((who.key_id, rate.get()))
                .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(rate))))
                .clone()
        };
        // The limiter's own clock: a new `DefaultClock` probes the CPU (cpuid, a VM exit under a
        // hypervisor) each time, ~3% of the CPU of a process refusing an overload with 429.
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}
