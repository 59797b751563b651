//! One endpoint's circuit breaker: closed → open after `max_failures` failures within
//! `failure_window`; open rejects at once for `reset_timeout`; then half-open lets
//! `half_open_max_calls` trial calls through, closes when all of them succeed and
//! reopens on any failure.
//!
//! Pure: the Breaker actor asks [`Breaker::allow`] before each connect, reports
//! [`Breaker::success`] or [`Breaker::failure`] with the [`Permit`] it got, arms a
//! timer for [`Breaker::deadline`] and calls [`Breaker::poll`] when it fires, so the
//! breaker half-opens at the configured time even when no stream arrives. Every
//! [`Transition`] is returned once, for the actor to log, count and trap.
//!
//! Choices the issue leaves open:
//! - Failures are counted within the window whatever succeeds between them: the rule
//!   is a rate, so a backend failing every other connect still trips.
//! - Half-open closes only when all `half_open_max_calls` trials have succeeded (as the
//!   original SSSonector breaker did), not on the first: one lucky connect to a
//!   flapping backend should not reopen the floodgates. With the default of 1 trial
//!   both readings agree.
//! - An outcome counts only in the period (from one transition or reset to the next)
//!   its call was admitted in, which the [`Permit`] records. A connect started before
//!   the breaker opened says nothing about the backend since, and must not close a
//!   half-open breaker or take the slot of a trial that is still running.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sssonector_config::Breaker as BreakerConfig;

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are rejected at once until `reset_timeout` has passed.
    Open,
    /// A few trial calls decide between closing and reopening.
    HalfOpen,
}

/// Whether a call may go to the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead, then report [`Breaker::success`] or [`Breaker::failure`] (or
    /// [`Breaker::cancelled`] if the call is abandoned) with this permit.
    Allow(Permit),
    /// Fail fast: try another endpoint.
    Reject,
}

/// The ticket of an allowed call: which period it was admitted in, so its outcome is
/// ignored once the breaker has moved on. Neither `Copy` nor `Clone`: reporting
/// consumes it, so no outcome is reported twice.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the call's outcome with its permit"]
pub struct Permit {
    epoch: u64,
}

/// A change of state, reported once when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open → open.
    Opened,
    /// Open → half-open.
    HalfOpened,
    /// Half-open → closed, or a reset.
    Closed,
}

/// What a breaker has done since it was made, for `ctl breakers` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls rejected while open or with every half-open trial taken.
    pub rejected: u64,
    /// Transitions to open.
    pub opened: u64,
    /// Transitions to half-open.
    pub half_opened: u64,
    /// Transitions to closed, resets included.
    pub closed: u64,
}

/// The circuit breaker of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    max_failures: u32,
    reset_timeout: Duration,
    half_open_max_calls: u32,
    failure_window: Duration,
    state: State,
    /// Bumped by every transition and reset: permits of older periods are stale.
    epoch: u64,
    /// Closed: the times of failures still inside the window, oldest first. Fewer than
    /// `max_failures` are ever kept (reaching it opens and clears), so it is bounded
    /// by the config, not by traffic.
    failures: VecDeque<Instant>,
    /// Half-open: trials let through in this half-open period.
    trials: u32,
    /// Half-open: trials that succeeded.
    trial_successes: u32,
    /// When the state last changed, or the breaker was made.
    changed_at: Instant,
    opened_at: Option<Instant>,
    half_opened_at: Option<Instant>,
    closed_at: Option<Instant>,
    counts: Counts,
}

impl Breaker {
    /// A closed breaker with `config`'s rule. Counts below 1 count as 1, the config
    /// minimum.
    pub fn new(config: &BreakerConfig, now: Instant) -> Self {
        let mut breaker = Self {
            max_failures: 1,
            reset_timeout: Duration::ZERO,
            half_open_max_calls: 1,
            failure_window: Duration::ZERO,
            state: State::Closed,
            epoch: 0,
            failures: VecDeque::new(),
            trials: 0,
            trial_successes: 0,
            changed_at: now,
            opened_at: None,
            half_opened_at: None,
            closed_at: None,
            counts: Counts::default(),
        };
        breaker.reconfigure(config);
        breaker
    }

    /// May a call go through now? Half-opens first if `reset_timeout` has passed, and
    /// returns that transition with the decision. A half-open breaker admits each
    /// trial by this call, so ask once per call and report its outcome.
    #[must_use]
    pub fn allow(&mut self, now: Instant) -> (Decision, Option<Transition>) {
        let transition = self.poll(now);
        let permit = Permit { epoch: self.epoch };
        let decision = match self.state {
            State::Closed => Decision::Allow(permit),
            State::HalfOpen if self.trials < self.half_open_max_calls => {
                self.trials += 1;
                Decision::Allow(permit)
            }
            State::Open | State::HalfOpen => {
                self.counts.rejected += 1;
                Decision::Reject
            }
        };
        (decision, transition)
    }

    /// Half-opens an open breaker whose `reset_timeout` has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        due.then(|| self.enter(State::HalfOpen, now))
    }

    /// When an open breaker half-opens: the time for the actor's timer. None unless
    /// open (or when the timeout is too large to represent: it never half-opens).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Open => self.changed_at.checked_add(self.reset_timeout),
            State::Closed | State::HalfOpen => None,
        }
    }

    /// An allowed call succeeded. Closes a half-open breaker once all its trials have.
    pub fn success(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if self.state != State::HalfOpen || self.is_stale(&permit) {
            return None;
        }
        self.trial_successes += 1;
        (self.trial_successes >= self.half_open_max_calls).then(|| self.enter(State::Closed, now))
    }

    /// An allowed call failed. Opens a closed breaker at its `max_failures`-th failure
    /// within `failure_window` (the failures in `(now − failure_window, now]`);
    /// reopens a half-open one.
    pub fn failure(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if self.is_stale(&permit) {
            return None;
        }
        match self.state {
            State::Open => None,
            State::HalfOpen => Some(self.enter(State::Open, now)),
            State::Closed => {
                while self
                    .failures
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) >= self.failure_window)
                {
                    self.failures.pop_front();
                }
                self.failures.push_back(now);
                (self.failures.len() >= self.max_failures as usize)
                    .then(|| self.enter(State::Open, now))
            }
        }
    }

    /// An allowed call ended with no outcome (the client went away before the connect
    /// finished): a half-open trial slot is given back instead of staying taken.
    pub fn cancelled(&mut self, permit: Permit, _now: Instant) {
        if self.state == State::HalfOpen && !self.is_stale(&permit) {
            self.trials -= 1;
        }
    }

    /// Closes the breaker and forgets its failures, including those of calls still
    /// running (`ctl breaker.reset`). Returns [`Transition::Closed`] unless it was
    /// closed already.
    pub fn reset(&mut self, now: Instant) -> Option<Transition> {
        if self.state == State::Closed {
            self.failures.clear();
            self.epoch += 1;
            return None;
        }
        Some(self.enter(State::Closed, now))
    }

    /// Takes a new rule (reload applies it live); the state stays and no transition
    /// happens here. A new `reset_timeout` moves the deadline of an open breaker. A
    /// lowered `max_failures` keeps only the newest failures below it, so the next
    /// failure within the window opens; a lowered `half_open_max_calls` leaves one
    /// success to go, so a half-open breaker is never left with no trial to make.
    pub fn reconfigure(&mut self, config: &BreakerConfig) {
        self.max_failures = config.max_failures.max(1);
        self.reset_timeout = config.reset_timeout.duration();
        self.half_open_max_calls = config.half_open_max_calls.max(1);
        self.failure_window = config.failure_window.duration();
        while self.failures.len() >= self.max_failures as usize {
            self.failures.pop_front();
        }
        let in_flight = self.trials_in_flight();
        self.trial_successes = self.trial_successes.min(self.half_open_max_calls - 1);
        self.trials = self.trial_successes + in_flight;
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the state last changed (or the breaker was made).
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }

    /// When it last opened.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// When it last half-opened.
    pub fn half_opened_at(&self) -> Option<Instant> {
        self.half_opened_at
    }

    /// When it last closed after being open or half-open.
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed_at
    }

    /// Failures counted toward opening (closed only; as of the last failure).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }

    /// Half-open trials let through whose outcome is not known yet.
    pub fn trials_in_flight(&self) -> u32 {
        self.trials - self.trial_successes
    }

    /// Rejections and transitions so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether `permit` is from an earlier period. One from the current half-open
    /// period is always a trial still running: every call that period admitted was a
    /// trial, and each permit is reported once.
    fn is_stale(&self, permit: &Permit) -> bool {
        permit.epoch != self.epoch
    }

    fn enter(&mut self, state: State, now: Instant) -> Transition {
        self.state = state;
        self.epoch += 1;
        self.changed_at = now;
        self.failures.clear();
        self.trials = 0;
        self.trial_successes = 0;
        match state {
            State::Open => {
                self.opened_at = Some(now);
                self.counts.opened += 1;
                Transition::Opened
            }
            State::HalfOpen => {
                self.half_opened_at = Some(now);
                self.counts.half_opened += 1;
                Transition::HalfOpened
            }
            State::Closed => {
                self.closed_at = Some(now);
                self.counts.closed += 1;
                Transition::Closed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sssonector_config::DurationValue;

    const SEC: Duration = Duration::from_secs(1);

    fn config(max_failures: u32, reset_secs: u32, trials: u32, window_secs: u32) -> BreakerConfig {
        BreakerConfig {
            max_failures,
            reset_timeout: DurationValue::of(SEC * reset_secs),
            half_open_max_calls: trials,
            failure_window: DurationValue::of(SEC * window_secs),
        }
    }

    /// Asks for a call that must be allowed with no transition.
    fn permit(b: &mut Breaker, now: Instant) -> Permit {
        match b.allow(now) {
            (Decision::Allow(p), None) => p,
            other => panic!("expected a plain allow, got {other:?}"),
        }
    }

    /// A call that fails at `now`.
    fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
        let p = permit(b, now);
        b.failure(p, now)
    }

    #[test]
    fn opens_at_max_failures_within_the_window_and_rejects_until_the_timeout() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(3, 30, 1, 60), t0);
        assert_eq!(fail(&mut b, t0), None);
        let p = permit(&mut b, t0);
        assert_eq!(b.success(p, t0 + SEC), None);
        assert_eq!(fail(&mut b, t0 + SEC * 2), None);
        let t_open = t0 + SEC * 4;
        assert_eq!(fail(&mut b, t_open), Some(Transition::Opened));
        assert_eq!((b.state(), b.opened_at()), (State::Open, Some(t_open)));
        assert_eq!(b.deadline(), Some(t_open + SEC * 30));
        assert_eq!(b.allow(t_open + SEC * 29), (Decision::Reject, None));
        assert_eq!(b.counts().rejected, 1);
    }

    #[test]
    fn failures_that_left_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(3, 30, 1, 10), t0);
        assert_eq!(fail(&mut b, t0), None);
        assert_eq!(fail(&mut b, t0 + SEC * 5), None);
        // The first failure is exactly one window old: out.
        assert_eq!(fail(&mut b, t0 + SEC * 10), None);
        assert_eq!(b.recent_failures(), 2);
        assert_eq!(fail(&mut b, t0 + SEC * 11), Some(Transition::Opened));
    }

    #[test]
    fn half_opens_on_time_and_closes_when_every_trial_succeeds() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(1, 30, 2, 60), t0);
        assert_eq!(fail(&mut b, t0), Some(Transition::Opened));
        assert_eq!(b.poll(t0 + SEC * 29), None);
        let t_half = t0 + SEC * 30;
        assert_eq!(b.poll(t_half), Some(Transition::HalfOpened));
        assert_eq!(b.half_opened_at(), Some(t_half));
        let first = permit(&mut b, t_half);
        let second = permit(&mut b, t_half);
        assert_eq!(
            b.allow(t_half),
            (Decision::Reject, None),
            "both trials taken"
        );
        assert_eq!(b.success(first, t_half + SEC), None, "one of two trials");
        assert_eq!(
            b.allow(t_half + SEC),
            (Decision::Reject, None),
            "no third trial"
        );
        assert_eq!(
            b.success(second, t_half + SEC * 2),
            Some(Transition::Closed)
        );
        assert_eq!(b.closed_at(), Some(t_half + SEC * 2));
        let _closed = permit(&mut b, t_half + SEC * 2);
        let c = b.counts();
        assert_eq!(
            (c.opened, c.half_opened, c.closed, c.rejected),
            (1, 1, 1, 2)
        );
    }

    #[test]
    fn a_failed_trial_reopens_and_restarts_the_timeout() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(1, 30, 1, 60), t0);
        fail(&mut b, t0);
        let t_half = t0 + SEC * 31;
        let (decision, transition) = b.allow(t_half);
        assert_eq!(transition, Some(Transition::HalfOpened));
        let Decision::Allow(trial) = decision else {
            panic!("the first call after the timeout is a trial");
        };
        assert_eq!(b.failure(trial, t_half + SEC), Some(Transition::Opened));
        assert_eq!(b.deadline(), Some(t_half + SEC * 31));
        assert_eq!(b.allow(t_half + SEC * 30), (Decision::Reject, None));
    }

    #[test]
    fn outcomes_of_calls_from_an_earlier_period_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(1, 30, 1, 60), t0);
        let slow = permit(&mut b, t0);
        let slower = permit(&mut b, t0);
        let slowest = permit(&mut b, t0);
        assert_eq!(fail(&mut b, t0), Some(Transition::Opened));
        assert_eq!(b.failure(slow, t0 + SEC), None);
        assert_eq!(
            b.deadline(),
            Some(t0 + SEC * 30),
            "a late failure does not extend it"
        );
        assert_eq!(b.poll(t0 + SEC * 30), Some(Transition::HalfOpened));
        let trial = permit(&mut b, t0 + SEC * 30);
        assert_eq!(b.success(slower, t0 + SEC * 31), None, "not a trial");
        b.cancelled(slowest, t0 + SEC * 31);
        assert_eq!(b.trials_in_flight(), 1, "the trial keeps its slot");
        assert_eq!(b.success(trial, t0 + SEC * 32), Some(Transition::Closed));
    }

    #[test]
    fn a_cancelled_trial_gives_its_slot_back() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(1, 0, 1, 60), t0);
        fail(&mut b, t0);
        let (Decision::Allow(trial), Some(Transition::HalfOpened)) = b.allow(t0) else {
            panic!("a zero timeout half-opens at once");
        };
        assert_eq!(b.allow(t0), (Decision::Reject, None));
        b.cancelled(trial, t0);
        assert_eq!(b.trials_in_flight(), 0);
        let _again = permit(&mut b, t0);
    }

    #[test]
    fn reset_closes_and_forgets() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(2, 30, 1, 60), t0);
        let running = permit(&mut b, t0);
        fail(&mut b, t0);
        assert_eq!(b.reset(t0), None, "already closed");
        assert_eq!(b.failure(running, t0), None, "from before the reset");
        assert_eq!(fail(&mut b, t0), None, "the earlier failure was forgotten");
        assert_eq!(fail(&mut b, t0), Some(Transition::Opened));
        assert_eq!(b.reset(t0 + SEC), Some(Transition::Closed));
        assert_eq!((b.state(), b.recent_failures()), (State::Closed, 0));
    }

    #[test]
    fn reconfigure_keeps_the_state_and_applies_the_new_rule() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(5, 30, 1, 60), t0);
        for _ in 0..4 {
            assert_eq!(fail(&mut b, t0), None);
        }
        b.reconfigure(&config(2, 30, 1, 60));
        assert_eq!(b.state(), State::Closed, "reconfiguring alone never opens");
        assert_eq!(b.recent_failures(), 1);
        assert_eq!(fail(&mut b, t0), Some(Transition::Opened));
        b.reconfigure(&config(2, 10, 1, 60));
        assert_eq!(b.deadline(), Some(t0 + SEC * 10));
    }

    #[test]
    fn fewer_trials_by_reload_still_leave_one_to_make() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&config(1, 0, 3, 60), t0);
        fail(&mut b, t0);
        assert_eq!(b.poll(t0), Some(Transition::HalfOpened));
        for _ in 0..2 {
            let trial = permit(&mut b, t0);
            assert_eq!(b.success(trial, t0), None);
        }
        b.reconfigure(&config(1, 0, 1, 60));
        assert_eq!(b.state(), State::HalfOpen);
        let last = permit(&mut b, t0);
        assert_eq!(b.success(last, t0), Some(Transition::Closed));
    }

    /// One step of a random workload; time only moves forward.
    #[derive(Clone, Debug)]
    enum Op {
        Wait(u32),
        Allow,
        /// Report the outcome of the running call chosen by the index.
        Outcome(usize, bool),
        Cancel(usize),
        Poll,
        Reset,
        Reconfigure(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u32..40).prop_map(Op::Wait),
            4 => Just(Op::Allow),
            4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Outcome(i, ok)),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => Just(Op::Poll),
            1 => Just(Op::Reset),
            1 => (1u32..4).prop_map(Op::Reconfigure),
        ]
    }

    /// A call the model is running: its permit, and whether it is a trial of the
    /// current half-open period.
    type Running = (Permit, bool);

    /// After any transition no running call is a trial of the current period.
    fn forget_trials(t: Option<Transition>, running: &mut [Running]) {
        if t.is_some() {
            running.iter_mut().for_each(|(_, trial)| *trial = false);
        }
    }

    proptest! {
        #[test]
        fn never_more_trials_than_allowed_and_open_always_rejects_before_the_timeout(
            max_failures in 1u32..5, reset in 1u32..60, trials in 1u32..4, window in 1u32..60,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut limit = trials;
            let mut b = Breaker::new(&config(max_failures, reset, limit, window), t0);
            let mut running: Vec<Running> = Vec::new();
            let in_trial = |running: &[Running]| running.iter().filter(|(_, trial)| *trial).count();
            for op in ops {
                let (state, opened) = (b.state(), b.opened_at());
                match op {
                    Op::Wait(s) => now += SEC * s,
                    Op::Allow => {
                        let idle = in_trial(&running) == 0;
                        let (decision, t) = b.allow(now);
                        let idle = idle || t.is_some();
                        forget_trials(t, &mut running);
                        if state == State::Open && opened.is_some_and(|o| now < o + SEC * reset) {
                            prop_assert_eq!(&decision, &Decision::Reject);
                        }
                        if b.state() == State::HalfOpen && idle {
                            prop_assert!(matches!(decision, Decision::Allow(_)), "no trial to make");
                        }
                        if let Decision::Allow(p) = decision {
                            running.push((p, b.state() == State::HalfOpen));
                            prop_assert!(in_trial(&running) <= limit as usize, "{} trials at once", in_trial(&running));
                        }
                    }
                    Op::Outcome(i, ok) if !running.is_empty() => {
                        let (p, _) = running.swap_remove(i % running.len());
                        let t = if ok { b.success(p, now) } else { b.failure(p, now) };
                        forget_trials(t, &mut running);
                    }
                    Op::Cancel(i) if !running.is_empty() => {
                        let (p, _) = running.swap_remove(i % running.len());
                        b.cancelled(p, now);
                    }
                    Op::Outcome(..) | Op::Cancel(_) => {}
                    Op::Poll => forget_trials(b.poll(now), &mut running),
                    Op::Reset => forget_trials(b.reset(now), &mut running),
                    Op::Reconfigure(n) => {
                        limit = n;
                        b.reconfigure(&config(max_failures, reset, limit, window));
                    }
                }
                prop_assert_eq!(b.trials_in_flight() as usize, in_trial(&running));
                prop_assert!(b.recent_failures() < max_failures as usize);
            }
        }

        #[test]
        fn closed_opens_exactly_when_max_failures_fall_in_one_window(
            max_failures in 1u32..6, window in 1u32..30,
            events in proptest::collection::vec((0u32..10, any::<bool>()), 0..200),
        ) {
            let t0 = Instant::now();
            let mut b = Breaker::new(&config(max_failures, 1000, 1, window), t0);
            let mut now = t0;
            let mut failures: Vec<Instant> = Vec::new();
            for (gap, ok) in events {
                now += SEC * gap;
                let p = permit(&mut b, now);
                if ok {
                    prop_assert_eq!(b.success(p, now), None);
                    continue;
                }
                failures.push(now);
                let in_window = failures
                    .iter()
                    .filter(|&&t| now.duration_since(t) < SEC * window)
                    .count();
                let expect_open = in_window >= max_failures as usize;
                prop_assert_eq!(b.failure(p, now), expect_open.then_some(Transition::Opened));
                if expect_open {
                    // Open for good (the timeout is longer than the run): done.
                    return Ok(());
                }
            }
        }
    }
}
