//! The delay before the next attempt of a failed job: exponential, capped, with jitter.

use std::time::Duration;

/// `base * 2^(attempt-1)`, capped at `max`, then scaled by a random factor in
/// `[1 - JITTER, 1 + JITTER]` so that jobs failing together do not retry together.
/// With JITTER < 1/3 each delay is strictly longer than the one before (until the cap).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const JITTER: f64 = 0.25;

    /// Delay after the failure of attempt number `attempt` (1-based), for a jitter sample
    /// `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let factor = 1.0 - Self::JITTER + 2.0 * Self::JITTER * unit.clamp(0.0, 1.0);
        raw.mul_f64(factor)
    }

    /// Like [`Backoff::delay`] with a fresh random jitter sample.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_stay_within_jitter_bounds() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(75));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(125));
    }

    #[test]
    fn worst_case_jitter_still_grows_until_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        for attempt in 1..7 {
            assert!(
                b.delay(attempt, 1.0) < b.delay(attempt + 1, 0.0),
                "attempt {attempt}"
            );
        }
        assert!(b.delay(40, 1.0) <= Duration::from_millis(12_500));
    }
}
