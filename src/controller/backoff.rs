//! Per-object exponential backoff with jitter for failed reconciliations
//! (kube-runtime requeues at a fixed delay unless told otherwise).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::Rng;

/// Remembers how many times in a row each object's reconcile failed.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Delays start at `base` and double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before the
    /// next attempt: base·2ⁿ capped at max, ±20 % jitter so that many objects
    /// failing together do not retry together.
    pub fn next_delay(&self, key: &str) -> Duration {
        let attempt = {
            let mut failures = self
                .failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = failures.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let jitter = rand::rng().random_range(0.8..1.2);
        delay_for(self.base, self.max, attempt).mul_f64(jitter)
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn reset(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }
}

/// The un-jittered delay before attempt `attempt` (1-based).
pub fn delay_for(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (1..=8).map(|n| delay_for(b, m, n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn reset_starts_over() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            backoff.next_delay("ns/a");
        }
        backoff.reset("ns/a");
        assert!(backoff.next_delay("ns/a") <= Duration::from_millis(1200));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(attempts in 1u32..40) {
            let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(300));
            let mut last = Duration::ZERO;
            for _ in 0..attempts {
                last = backoff.next_delay("k");
            }
            prop_assert!(last <= Duration::from_secs(360));
            prop_assert!(last >= Duration::from_millis(400));
        }
    }
}
