//! When to dial again: `retry_attempts` tries at `retry_interval`, then exponential
//! backoff with jitter up to `retry_max_interval`, forever; and, while the servers
//! cannot be reached, a cheap TCP-connect probe every [`PROBE_EVERY`] that ends the
//! wait as soon as one answers ([`Redial`]). Pure: the jitter and `now` are passed in.

use std::time::{Duration, Instant};

/// How often a client whose servers are unreachable tries a bare TCP connect: the
/// most it lags behind a server that comes back (the dial itself then takes a
/// handshake), bought with one SYN per interval.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Dial retry policy and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    attempts: u32,
    interval: Duration,
    /// The longest wait (never below `interval`).
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// `attempts` rounds at `interval`, then doubling up to `max`.
    pub fn new(attempts: u32, interval: Duration, max: Duration) -> Self {
        Self {
            attempts,
            interval,
            max: max.max(interval),
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
            .min(self.max)
            .max(self.interval);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
            .max(self.interval)
    }

    /// A session was established: start over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// What the dialer does next while it has no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Dial now.
    Dial,
    /// Try a bare TCP connect to the servers now and report it with
    /// [`Redial::probed`].
    Probe,
    /// Nothing before this instant.
    WaitUntil(Instant),
}

/// The wait between failed dial rounds: the backoff's delay, cut short by a probe
/// that reaches a server when the last round could not reach any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redial {
    backoff: Backoff,
    /// When the backoff lets the next round go, once a round failed.
    dial_at: Option<Instant>,
    /// When to probe next; None: no probing (the last round reached a server that
    /// refused, so a probe answering says nothing new).
    probe_at: Option<Instant>,
}

impl Redial {
    /// No round failed yet.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            dial_at: None,
            probe_at: None,
        }
    }

    /// Takes a new retry policy (reload), keeping the wait under way.
    pub fn set_backoff(&mut self, backoff: Backoff) {
        let failures = self.backoff.failures;
        self.backoff = backoff;
        self.backoff.failures = failures;
    }

    /// Failed rounds in a row.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// A round failed at `now`; `reached`: some server accepted the TCP connect (it
    /// refused the handshake), so only the backoff timer brings the next round.
    /// Returns the backoff's delay.
    pub fn failed(&mut self, now: Instant, reached: bool, jitter: f64) -> Duration {
        let delay = self.backoff.failed(jitter);
        self.dial_at = Some(now + delay);
        self.probe_at = (!reached).then(|| now + PROBE_EVERY);
        delay
    }

    /// A round is starting, or a session came up: no wait is under way.
    pub fn dialing(&mut self) {
        self.dial_at = None;
        self.probe_at = None;
    }

    /// A session was established.
    pub fn succeeded(&mut self) {
        self.backoff.succeeded();
        self.dialing();
    }

    /// What to do at `now`.
    pub fn next(&self, now: Instant) -> Step {
        let Some(dial_at) = self.dial_at else {
            return Step::Dial;
        };
        if now >= dial_at {
            return Step::Dial;
        }
        match self.probe_at {
            Some(p) if now >= p => Step::Probe,
            Some(p) => Step::WaitUntil(p.min(dial_at)),
            None => Step::WaitUntil(dial_at),
        }
    }

    /// A probe started at `now` answered (`ok`) or not: true means dial now.
    pub fn probed(&mut self, now: Instant, ok: bool) -> bool {
        if ok {
            self.dial_at = Some(now);
            self.probe_at = None;
            return true;
        }
        if self.probe_at.is_some() {
            self.probe_at = Some(now + PROBE_EVERY);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn fixed_retries_then_doubling_up_to_the_cap() {
        let mut b = Backoff::new(3, Duration::from_millis(200), CAP);
        let delays: Vec<u128> = (0..12).map(|_| b.failed(0.999_999).as_millis()).collect();
        assert_eq!(&delays[..3], &[200, 200, 200]);
        assert_eq!(&delays[3..6], &[399, 799, 1599]);
        assert_eq!(*delays.last().expect("some"), 59_999);
        b.succeeded();
        assert_eq!(b.failed(0.0), Duration::from_millis(200));
    }

    #[test]
    fn the_cap_is_configurable_and_never_below_the_interval() {
        let mut b = Backoff::new(0, Duration::from_millis(200), Duration::from_secs(2));
        let last = (0..30).map(|_| b.failed(0.999_999)).last().expect("some");
        assert_eq!(last.as_millis(), 1999);
        let mut b = Backoff::new(0, Duration::from_secs(5), Duration::from_secs(2));
        assert_eq!(b.failed(0.0), Duration::from_secs(5));
    }

    #[test]
    fn an_unreachable_server_is_probed_and_dialed_as_soon_as_it_answers() {
        let t0 = Instant::now();
        let mut r = Redial::new(Backoff::new(0, Duration::from_secs(5), CAP));
        assert_eq!(r.next(t0), Step::Dial);
        r.dialing();
        let delay = r.failed(t0, false, 0.5);
        assert!(delay >= Duration::from_secs(5));
        assert_eq!(r.next(t0), Step::WaitUntil(t0 + PROBE_EVERY));
        let t1 = t0 + PROBE_EVERY;
        assert_eq!(r.next(t1), Step::Probe);
        assert!(!r.probed(t1, false));
        assert_eq!(r.next(t1), Step::WaitUntil(t1 + PROBE_EVERY));
        let t2 = t1 + PROBE_EVERY;
        assert_eq!(r.next(t2), Step::Probe);
        assert!(r.probed(t2, true));
        assert_eq!(r.next(t2), Step::Dial);
    }

    #[test]
    fn a_server_that_refused_waits_for_the_backoff_without_probes() {
        let t0 = Instant::now();
        let mut r = Redial::new(Backoff::new(1, Duration::from_secs(1), CAP));
        r.dialing();
        r.failed(t0, true, 0.0);
        assert_eq!(
            r.next(t0 + PROBE_EVERY),
            Step::WaitUntil(t0 + Duration::from_secs(1))
        );
        assert_eq!(r.next(t0 + Duration::from_secs(1)), Step::Dial);
    }

    #[test]
    fn the_backoff_timer_dials_even_when_probes_keep_failing() {
        let t0 = Instant::now();
        let mut r = Redial::new(Backoff::new(1, Duration::from_millis(600), CAP));
        r.failed(t0, false, 0.0);
        let mut now = t0;
        let mut probes = 0;
        for _ in 0..10 {
            match r.next(now) {
                Step::Dial => break,
                Step::Probe => {
                    probes += 1;
                    assert!(!r.probed(now, false));
                }
                Step::WaitUntil(t) => now = t,
            }
        }
        assert_eq!(probes, 2);
        assert_eq!(now, t0 + Duration::from_millis(600));
        assert_eq!(r.next(now), Step::Dial);
    }

    #[test]
    fn success_starts_over() {
        let t0 = Instant::now();
        let mut r = Redial::new(Backoff::new(0, Duration::from_secs(1), CAP));
        r.failed(t0, false, 0.0);
        r.failed(t0, false, 0.0);
        assert_eq!(r.failures(), 2);
        r.succeeded();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next(t0), Step::Dial);
    }

    proptest! {
        #[test]
        fn delays_stay_between_the_interval_and_the_cap(
            attempts in 0u32..5, ms in 1u64..5000, cap_ms in 1u64..120_000,
            jitters in proptest::collection::vec(0.0f64..1.0, 1..40)
        ) {
            let interval = Duration::from_millis(ms);
            let cap = Duration::from_millis(cap_ms);
            let mut b = Backoff::new(attempts, interval, cap);
            for j in jitters {
                let d = b.failed(j);
                prop_assert!(d >= interval);
                prop_assert!(d <= cap.max(interval));
            }
        }
    }
}
