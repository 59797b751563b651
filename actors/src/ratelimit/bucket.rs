//! The token bucket: a pure machine with the clock passed in.
//!
//! Tokens are bytes (or requests). The bucket holds at most `burst` of them and
//! refills at `rate` per second. Whole tokens are kept as nano-tokens (`tokens ×
//! 10⁹`), so a refill of `rate × elapsed nanoseconds` is exact however often it is
//! asked: no rounding drift, even at a read per microsecond.
//!
//! A sender that passes only what [`TokenBucket::available`] allows (and then
//! [`TokenBucket::consume`]s it) never passes more than `burst + rate × t` in any
//! interval `t`. A sender of indivisible units larger than what is available (a
//! chunk of packets) may [`TokenBucket::charge`] them into debt and then wait
//! [`TokenBucket::delay`] for the debt to clear: its long-run rate is the same, and
//! it overshoots by at most one unit.

use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;

/// A token bucket of `burst` tokens refilling at `rate` tokens per second.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Nano-tokens; negative is debt.
    level: i128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            level: i128::from(burst) * NANOS as i128,
            last: now,
        }
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The most tokens it holds.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes new numbers: what was earned so far at the old rate stays, capped at
    /// the new burst, so a change neither grants nor takes a windfall.
    pub fn set(&mut self, rate: u64, burst: u64, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.burst = burst;
        self.level = self.level.min(self.cap());
    }

    /// Whole tokens available now (0 while in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / NANOS as i128).unwrap_or(0)
    }

    /// Takes `n` tokens if that many are available; false (and nothing taken) if not.
    pub fn take(&mut self, n: u64, now: Instant) -> bool {
        if self.available(now) < n {
            return false;
        }
        self.level -= i128::from(n) * NANOS as i128;
        true
    }

    /// Takes `n` tokens that [`available`](Self::available) allowed.
    pub fn consume(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.level -= i128::from(n) * NANOS as i128;
    }

    /// Takes `n` tokens whatever is available, into debt if need be.
    pub fn charge(&mut self, n: u64, now: Instant) {
        self.consume(n, now);
    }

    /// How long until `n` tokens are available (`n` capped at `burst`, which is all
    /// a bucket can ever hold); zero when they are now. A bucket with rate 0 never
    /// refills: `Duration::MAX` then.
    pub fn delay(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let want = i128::from(n.min(self.burst)) * NANOS as i128;
        let missing = want - self.level;
        if missing <= 0 {
            return Duration::ZERO;
        }
        if self.rate == 0 {
            return Duration::MAX;
        }
        // Nano-tokens over tokens per second gives nanoseconds; round up so the
        // tokens are there when the caller wakes.
        let nanos = (missing as u128).div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whether it is full: a full bucket remembers nothing a fresh one would not.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.cap()
    }

    fn cap(&self) -> i128 {
        i128::from(self.burst) * NANOS as i128
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        self.last = now;
        let earned = i128::from(self.rate) * elapsed.as_nanos() as i128;
        self.level = (self.level + earned).min(self.cap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_new_bucket_is_full_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.available(t0), 500);
        assert!(b.take(500, t0));
        assert!(!b.take(1, t0));
        assert_eq!(b.available(at(t0, 100)), 100);
        assert_eq!(b.available(at(t0, 10_000)), 500, "capped at burst");
    }

    #[test]
    fn refill_is_exact_when_asked_every_microsecond() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(999, 10_000, t0);
        b.consume(10_000, t0);
        let mut now = t0;
        for _ in 0..1_000_000 {
            now += Duration::from_micros(1);
            let _ = b.available(now);
        }
        assert_eq!(
            b.available(now),
            999,
            "one second at 999/s, no rounding loss"
        );
    }

    #[test]
    fn delay_says_when_tokens_are_there() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        b.consume(1000, t0);
        let d = b.delay(250, t0);
        assert_eq!(d, Duration::from_millis(250));
        assert_eq!(b.available(t0 + d), 250);
        assert_eq!(
            b.delay(5000, t0 + d),
            Duration::from_millis(750),
            "capped at burst"
        );
    }

    #[test]
    fn debt_is_paid_before_anything_else_passes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        b.charge(600, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.delay(0, t0), Duration::from_millis(500));
        assert_eq!(b.available(at(t0, 600)), 100);
    }

    #[test]
    fn set_keeps_what_was_earned_and_caps_it() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        b.consume(1000, t0);
        b.set(2000, 1000, at(t0, 100));
        assert_eq!(b.available(at(t0, 100)), 100, "earned at the old rate");
        assert_eq!(b.available(at(t0, 200)), 300, "then the new rate");
        b.set(2000, 50, at(t0, 200));
        assert_eq!(b.available(at(t0, 200)), 50, "capped at the new burst");
    }

    #[test]
    fn a_zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 10, t0);
        b.consume(10, t0);
        assert_eq!(b.delay(1, t0), Duration::MAX);
        assert_eq!(b.available(at(t0, 60_000)), 0);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1000, 1000, t0);
        b.consume(1000, t0);
        assert_eq!(b.available(t0 - Duration::from_secs(5)), 0);
        assert_eq!(b.available(at(t0, 1)), 1);
    }

    proptest! {
        /// Over any interval, a sender that passes what the bucket allows passes at
        /// most `burst + rate × interval`.
        #[test]
        fn never_more_than_burst_plus_rate_times_interval(
            rate in 1u64..10_000_000,
            burst in 1u64..10_000_000,
            steps in prop::collection::vec((0u64..50_000, 0u64..2_000_000), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            let mut now = t0;
            let mut passed = vec![(t0, 0u64)];
            for (micros, want) in steps {
                now += Duration::from_micros(micros);
                let n = want.min(b.available(now));
                b.consume(n, now);
                passed.push((now, n));
            }
            for i in 0..passed.len() {
                let mut sum = 0u128;
                for j in i..passed.len() {
                    sum += u128::from(passed[j].1);
                    let span = passed[j].0 - passed[i].0;
                    let bound = u128::from(burst)
                        + u128::from(rate) * span.as_nanos() / NANOS;
                    prop_assert!(sum <= bound + 1, "{sum} > {bound} over {span:?}");
                }
            }
        }

        /// A sender that always wants more gets the rate: after the initial burst,
        /// what passed in `t` is `rate × t` to within one token.
        #[test]
        fn a_steady_sender_gets_the_rate(
            rate in 1_000u64..100_000_000,
            burst in 65_536u64..4_000_000,
            tick_us in 1u64..20_000,
        ) {
            // A tick must earn no more than the bucket holds, or the excess is lost
            // by design.
            prop_assume!(u128::from(rate) * u128::from(tick_us) <= u128::from(burst) * 1_000_000);
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            b.consume(burst, t0);
            let mut now = t0;
            let mut passed = 0u128;
            let end = t0 + Duration::from_secs(10);
            while now < end {
                now += Duration::from_micros(tick_us);
                let n = b.available(now);
                b.consume(n, now);
                passed += u128::from(n);
            }
            let expected = u128::from(rate) * (now - t0).as_nanos() / NANOS;
            prop_assert!(passed <= expected && expected - passed <= 1,
                "passed {passed}, expected {expected}");
        }

        /// Waiting the delay always makes the tokens available.
        #[test]
        fn delay_is_enough(rate in 1u64..1_000_000_000, burst in 1u64..10_000_000,
                           debt in 0u64..10_000_000, n in 0u64..10_000_000) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            b.charge(burst + debt, t0);
            let d = b.delay(n, t0);
            prop_assert!(b.available(t0 + d) >= n.min(burst));
        }
    }
}
