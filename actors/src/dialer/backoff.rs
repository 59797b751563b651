//! When to dial again: `retry_attempts` tries at `retry_interval`, then exponential
//! backoff with jitter up to [`MAX_DELAY`], forever. Pure: the jitter is passed in.

use std::time::Duration;

/// The longest wait between two rounds of dialing.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Dial retry policy and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    attempts: u32,
    interval: Duration,
    failures: u32,
}

impl Backoff {
    /// `attempts` rounds at `interval`, then doubling.
    pub fn new(attempts: u32, interval: Duration) -> Self {
        Self {
            attempts,
            interval,
            failures: 0,
        }
    }

    /// Failed rounds in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A round failed: how long to wait before the next. `jitter` in `[0, 1)` spreads
    /// the exponential delays over their upper half, so clients that lost the same
    /// server do not return in step.
    pub fn failed(&mut self, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures <= self.attempts {
            return self.interval;
        }
        let exp = (self.failures - self.attempts).min(20);
        let full = self
            .interval
            .saturating_mul(1u32 << exp)
            .min(MAX_DELAY)
            .max(self.interval);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
            .max(self.interval)
    }

    /// A session was established: start over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_retries_then_doubling_up_to_the_cap() {
        let mut b = Backoff::new(3, Duration::from_millis(200));
        let delays: Vec<u128> = (0..12).map(|_| b.failed(0.999_999).as_millis()).collect();
        assert_eq!(&delays[..3], &[200, 200, 200]);
        assert_eq!(&delays[3..6], &[399, 799, 1599]);
        assert_eq!(*delays.last().expect("some"), 59_999);
        b.succeeded();
        assert_eq!(b.failed(0.0), Duration::from_millis(200));
    }

    proptest! {
        #[test]
        fn delays_stay_between_the_interval_and_the_cap(
            attempts in 0u32..5, ms in 1u64..5000, jitters in proptest::collection::vec(0.0f64..1.0, 1..40)
        ) {
            let interval = Duration::from_millis(ms);
            let mut b = Backoff::new(attempts, interval);
            for j in jitters {
                let d = b.failed(j);
                prop_assert!(d >= interval);
                prop_assert!(d <= MAX_DELAY.max(interval));
            }
        }
    }
}
