//! One endpoint's health verdict from its active checks: down after
//! `unhealthy_threshold` failures in a row, up again after `healthy_threshold`
//! successes in a row, so a single lost probe or a single lucky one changes nothing.
//!
//! Pure: the Balancer actor runs a check every `balancer.health_check`, feeds the
//! result to [`HealthTracker::observe`] and, on the [`Transition`] it returns, updates
//! the pool and logs, counts and traps the change exactly once.
//!
//! A new endpoint starts healthy. Starting down would refuse every stream for
//! `healthy_threshold` check intervals after each start, reload or `add` (20 s with
//! the defaults) even when all backends are fine; starting healthy costs at most a
//! few failed connects, which failover retries on another endpoint while the checks
//! catch up.

use std::time::Instant;

use sssonector_config::Balancer as BalancerConfig;

/// A change of verdict, reported once when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Back up after `healthy_threshold` successes in a row.
    Up,
    /// Down after `unhealthy_threshold` failures in a row.
    Down,
}

/// The health verdict of one endpoint and the checks behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTracker {
    healthy: bool,
    /// Checks in a row that disagree with `healthy`; a flip resets it.
    streak: u32,
    /// Successes in a row that bring a down endpoint up; at least 1.
    healthy_threshold: u32,
    /// Failures in a row that take an up endpoint down; at least 1.
    unhealthy_threshold: u32,
    /// Checks observed, for `ctl endpoints` and the metrics.
    checks: u64,
    /// Checks that failed.
    failed_checks: u64,
    /// When the verdict last changed, or the tracker was made.
    changed_at: Instant,
    /// When the last check was observed.
    checked_at: Option<Instant>,
}

impl HealthTracker {
    /// A healthy endpoint (see the module docs for why) with `config`'s thresholds.
    pub fn new(config: &BalancerConfig, now: Instant) -> Self {
        Self {
            healthy: true,
            streak: 0,
            healthy_threshold: config.healthy_threshold.max(1),
            unhealthy_threshold: config.unhealthy_threshold.max(1),
            checks: 0,
            failed_checks: 0,
            changed_at: now,
            checked_at: None,
        }
    }

    /// Records a check's result; returns the transition when this one flips the
    /// verdict, None otherwise.
    pub fn observe(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        self.checks += 1;
        self.checked_at = Some(now);
        if !ok {
            self.failed_checks += 1;
        }
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if ok {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        };
        if self.streak < threshold {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        self.changed_at = now;
        Some(if ok { Transition::Up } else { Transition::Down })
    }

    /// Takes new thresholds (reload applies them live); the verdict and the current
    /// streak stay, so a streak already past a lowered threshold flips at the next
    /// check that continues it.
    pub fn reconfigure(&mut self, config: &BalancerConfig) {
        self.healthy_threshold = config.healthy_threshold.max(1);
        self.unhealthy_threshold = config.unhealthy_threshold.max(1);
    }

    /// The verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Checks in a row that disagree with the verdict so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Checks observed.
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Checks that failed.
    pub fn failed_checks(&self) -> u64 {
        self.failed_checks
    }

    /// When the verdict last changed (or the tracker was made).
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }

    /// When the last check was observed, None before the first.
    pub fn checked_at(&self) -> Option<Instant> {
        self.checked_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn tracker(healthy_threshold: u32, unhealthy_threshold: u32, now: Instant) -> HealthTracker {
        let config = BalancerConfig {
            healthy_threshold,
            unhealthy_threshold,
            ..BalancerConfig::default()
        };
        HealthTracker::new(&config, now)
    }

    #[test]
    fn goes_down_after_the_threshold_of_failures_in_a_row() {
        let t0 = Instant::now();
        let mut h = tracker(2, 3, t0);
        assert!(h.is_healthy());
        assert_eq!(h.observe(false, t0), None);
        assert_eq!(h.observe(false, t0), None);
        assert_eq!(h.observe(true, t0), None, "a success breaks the streak");
        assert_eq!(h.observe(false, t0), None);
        assert_eq!(h.observe(false, t0), None);
        let t1 = t0 + Duration::from_secs(50);
        assert_eq!(h.observe(false, t1), Some(Transition::Down));
        assert!(!h.is_healthy());
        assert_eq!(h.changed_at(), t1);
        assert_eq!(h.observe(false, t1), None, "reported once");
        assert_eq!((h.checks(), h.failed_checks()), (7, 6));
    }

    #[test]
    fn comes_back_after_the_threshold_of_successes_in_a_row() {
        let t0 = Instant::now();
        let mut h = tracker(2, 1, t0);
        assert_eq!(h.observe(false, t0), Some(Transition::Down));
        assert_eq!(h.observe(true, t0), None);
        assert_eq!(h.observe(false, t0), None, "a failure breaks the streak");
        assert_eq!(h.observe(true, t0), None);
        assert_eq!(h.observe(true, t0), Some(Transition::Up));
        assert!(h.is_healthy());
    }

    #[test]
    fn lowered_threshold_flips_at_the_next_check_of_the_streak() {
        let t0 = Instant::now();
        let mut h = tracker(2, 5, t0);
        for _ in 0..3 {
            assert_eq!(h.observe(false, t0), None);
        }
        h.reconfigure(&BalancerConfig {
            unhealthy_threshold: 2,
            ..BalancerConfig::default()
        });
        assert!(h.is_healthy(), "reconfiguring alone never flips");
        assert_eq!(h.observe(false, t0), Some(Transition::Down));
    }

    proptest! {
        #[test]
        fn flips_only_after_threshold_many_agreeing_checks_in_a_row(
            up in 1u32..5, down in 1u32..5, checks in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let t0 = Instant::now();
            let mut h = tracker(up, down, t0);
            // The model: the run of checks disagreeing with the verdict since the
            // last flip.
            let (mut healthy, mut run) = (true, 0u32);
            for ok in checks {
                let flip = h.observe(ok, t0);
                run = if ok == healthy { 0 } else { run + 1 };
                let threshold = if ok { up } else { down };
                if run == threshold {
                    prop_assert_eq!(flip, Some(if ok { Transition::Up } else { Transition::Down }));
                    healthy = ok;
                    run = 0;
                } else {
                    prop_assert_eq!(flip, None);
                }
                prop_assert_eq!(h.is_healthy(), healthy);
            }
        }
    }
}
