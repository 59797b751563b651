//! Which endpoint gets the next stream: round robin, least connections and smooth
//! weighted round robin over a [`Pool`] of endpoints addressed by index.
//!
//! Pure: the Balancer actor owns a pool, tells it about health, breakers, drains and
//! stream starts and finishes, and asks [`Pool::pick`] for an index. Picking reads
//! and updates a few integers in place and never allocates, so it costs the same on
//! the ten-thousandth stream as on the first.
//!
//! An index names an endpoint for as long as it is in the pool, so a live stream can
//! always report `finished(i)` to the right one: removing an endpoint that still has
//! streams only marks it, and its slot is freed (and may be reused by a later `add`)
//! when its last stream finishes.

use sssonector_config::{Endpoint, Strategy};

/// One endpoint's state in a [`Pool`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The `host:port` that names it in config, ctl commands and metrics.
    key: String,
    /// Share under weighted round robin; at least 1.
    weight: u32,
    /// Streams started and not yet finished.
    active: u32,
    /// The health checks' verdict; a new endpoint starts healthy (see `health`).
    healthy: bool,
    /// Set by an operator: keeps its streams, takes no new ones.
    draining: bool,
    /// Its breaker is open: picking it would only be rejected.
    breaker_open: bool,
    /// Removed while streams were active: gone once they finish.
    removed: bool,
    /// Smooth weighted round robin's running score (nginx's `current_weight`).
    current: i64,
}

impl Member {
    fn new(key: &str, weight: u32) -> Self {
        Self {
            key: key.to_owned(),
            weight: weight.max(1),
            active: 0,
            healthy: true,
            draining: false,
            breaker_open: false,
            removed: false,
            current: 0,
        }
    }

    /// The `host:port` it was added under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its weight for weighted round robin.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Streams started and not yet finished.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Whether the health checks consider it up.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether an operator is draining it.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether its breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker_open
    }

    /// Whether it was removed and waits for its last streams to finish.
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// Whether a new stream may go to it: healthy, not draining, breaker not open,
    /// not removed.
    pub fn eligible(&self) -> bool {
        self.healthy && !self.draining && !self.breaker_open && !self.removed
    }
}

/// The endpoints of one service and the strategy that picks among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    strategy: Strategy,
    /// Members by index; `None` is a slot freed by a removal, reused by the next add.
    slots: Vec<Option<Member>>,
    /// The last index round robin or least connections picked: the next scan starts
    /// just after it, which is what makes both take turns.
    cursor: usize,
}

impl Pool {
    /// An empty pool.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            slots: Vec::new(),
            cursor: 0,
        }
    }

    /// A pool of a service's configured endpoints, in config order, keyed by their
    /// normalised `host:port`.
    pub fn from_config(strategy: Strategy, endpoints: &[Endpoint]) -> Self {
        let mut pool = Self::new(strategy);
        for e in endpoints {
            pool.add(&e.address.get().to_string(), e.weight);
        }
        pool
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Switches strategy (reload applies it live); active counts and flags stay.
    pub fn set_strategy(&mut self, strategy: Strategy) {
        if strategy != self.strategy {
            self.strategy = strategy;
            self.restart_weighted();
        }
    }

    /// Adds the endpoint `key` with `weight` (0 counts as 1, the config minimum) and
    /// returns its index. A key already present keeps its index, counts and flags:
    /// its weight is updated and a pending removal is undone, so a reload that
    /// removes and re-adds an endpoint does not lose its streams.
    ///
    /// A new endpoint or a changed weight restarts the weighted sequence from zero
    /// for everyone, as nginx does on reload, so the shares stay exact.
    pub fn add(&mut self, key: &str, weight: u32) -> usize {
        if let Some(i) = self.index_of(key) {
            let m = self.slots[i]
                .as_mut()
                .expect("index_of returns occupied slots");
            m.removed = false;
            if m.weight != weight.max(1) {
                m.weight = weight.max(1);
                self.restart_weighted();
            }
            return i;
        }
        let member = Some(Member::new(key, weight));
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = member;
                i
            }
            None => {
                self.slots.push(member);
                self.slots.len() - 1
            }
        };
        self.restart_weighted();
        i
    }

    /// Removes the endpoint `key`; false if there is none. With no active streams its
    /// slot is freed now; otherwise it takes no new streams and its slot is freed
    /// when the last one [finishes](Self::finished), so live streams are untouched.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(i) = self.index_of(key) else {
            return false;
        };
        let m = self.slots[i]
            .as_mut()
            .expect("index_of returns occupied slots");
        m.removed = true;
        self.vacate_if_done(i);
        true
    }

    /// Starts or stops draining the endpoint `key`; returns its index, None if there
    /// is none. A draining endpoint keeps its streams and gets no new ones.
    pub fn set_draining(&mut self, key: &str, draining: bool) -> Option<usize> {
        let i = self.index_of(key)?;
        self.slots[i]
            .as_mut()
            .expect("index_of returns occupied slots")
            .draining = draining;
        Some(i)
    }

    /// Records the health checks' verdict for endpoint `i`.
    pub fn set_healthy(&mut self, i: usize, healthy: bool) {
        if let Some(m) = self.member_mut(i) {
            m.healthy = healthy;
        }
    }

    /// Records whether endpoint `i`'s breaker is open. Half-open counts as not open:
    /// the breaker itself then admits or rejects each trial, and a rejected endpoint
    /// goes into `exclude` for the next pick.
    pub fn set_breaker_open(&mut self, i: usize, open: bool) {
        if let Some(m) = self.member_mut(i) {
            m.breaker_open = open;
        }
    }

    /// A stream was assigned to endpoint `i`. Call it right after the pick, before
    /// connecting, so least connections counts connects in progress and does not
    /// send a burst to the endpoint that happened to be least loaded.
    pub fn started(&mut self, i: usize) {
        if let Some(m) = self.member_mut(i) {
            m.active = m.active.saturating_add(1);
        }
    }

    /// A stream of endpoint `i` ended, or its connect failed. Frees the slot of a
    /// removed endpoint whose last stream this was.
    pub fn finished(&mut self, i: usize) {
        if let Some(m) = self.member_mut(i) {
            m.active = m.active.saturating_sub(1);
            self.vacate_if_done(i);
        }
    }

    /// The index of the endpoint `key`, including one removed with streams left.
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|m| m.key == key))
    }

    /// Endpoint `i`, None for a free slot or an index past the end.
    pub fn get(&self, i: usize) -> Option<&Member> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    /// Every endpoint with its index, in index order.
    pub fn members(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|m| (i, m)))
    }

    /// The index for a new stream by the pool's strategy, skipping endpoints that are
    /// not [eligible](Member::eligible) and those in `exclude` (the endpoints this
    /// stream already failed on, for failover). None only when no endpoint is left.
    pub fn pick(&mut self, exclude: &[usize]) -> Option<usize> {
        match self.strategy {
            Strategy::RoundRobin => self.pick_round_robin(exclude),
            Strategy::LeastConnections => self.pick_least_connections(exclude),
            Strategy::WeightedRoundRobin => self.pick_weighted(exclude),
        }
    }

    /// The first endpoint of `order` (indexes, the most preferred first) that a new
    /// stream may go to, skipping `exclude`: failover in a fixed order, whatever the
    /// strategy, for a client's tunnel servers. Changes no state: the same pool
    /// answers the same until a flag changes.
    pub fn pick_first(&self, order: &[usize], exclude: &[usize]) -> Option<usize> {
        order
            .iter()
            .copied()
            .find(|&i| self.candidate(i, exclude).is_some())
    }

    /// When [`pick_first`](Self::pick_first) finds none: the first endpoint of
    /// `order` not in `exclude`, draining or removed, whatever its health checks and
    /// breaker say. They choose among a client's servers; they must never keep it
    /// off all of them (a dead, then restarted, only server would wait for its
    /// checks and breaker to notice for tens of seconds).
    pub fn pick_fallback(&self, order: &[usize], exclude: &[usize]) -> Option<usize> {
        order.iter().copied().find(|&i| {
            !exclude.contains(&i) && self.get(i).is_some_and(|m| !m.draining && !m.removed)
        })
    }

    /// The first candidate after the cursor, wrapping around: each candidate in turn.
    fn pick_round_robin(&mut self, exclude: &[usize]) -> Option<usize> {
        let i = self
            .after_cursor()
            .find(|&i| self.candidate(i, exclude).is_some())?;
        self.cursor = i;
        Some(i)
    }

    /// The candidate with the fewest active streams; among equals the first after the
    /// cursor, so ties (an idle pool) take turns instead of all going to index 0.
    fn pick_least_connections(&mut self, exclude: &[usize]) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for i in self.after_cursor() {
            if let Some(m) = self.candidate(i, exclude) {
                if best.is_none_or(|(_, active)| m.active < active) {
                    best = Some((i, m.active));
                }
            }
        }
        let (i, _) = best?;
        self.cursor = i;
        Some(i)
    }

    /// nginx's smooth weighted round robin (`ngx_http_upstream_get_peer` since nginx
    /// commit 27e94984 "smooth weighted round-robin balancing"): every candidate's
    /// `current` grows by its weight, the largest wins (the first on a tie) and gives
    /// back the candidates' total weight. Each run of `total` picks
    /// gives every endpoint exactly its weight, spread out rather than in bursts:
    /// weights a=1, b=2 give b,a,b, b,a,b, …; a=5, b=1, c=1 give a,a,b,a,c,a,a.
    /// Unlike nginx, weights do not drop after failures: health checks and breakers
    /// take failing endpoints out instead.
    fn pick_weighted(&mut self, exclude: &[usize]) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(m) = slot
                .as_mut()
                .filter(|m| m.eligible() && !exclude.contains(&i))
            else {
                continue;
            };
            m.current += i64::from(m.weight);
            total += i64::from(m.weight);
            if best.is_none_or(|(_, current)| m.current > current) {
                best = Some((i, m.current));
            }
        }
        let (i, _) = best?;
        self.member_mut(i)
            .expect("the best was picked among members")
            .current -= total;
        Some(i)
    }

    /// Indices from just after the cursor round to the cursor itself.
    fn after_cursor(&self) -> impl Iterator<Item = usize> {
        let (n, cursor) = (self.slots.len(), self.cursor);
        (1..=n).map(move |step| (cursor + step) % n)
    }

    /// Endpoint `i` if a new stream may go to it.
    fn candidate(&self, i: usize, exclude: &[usize]) -> Option<&Member> {
        self.get(i)
            .filter(|m| m.eligible() && !exclude.contains(&i))
    }

    fn member_mut(&mut self, i: usize) -> Option<&mut Member> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Frees slot `i` if its endpoint was removed and has no streams left.
    fn vacate_if_done(&mut self, i: usize) {
        if self.get(i).is_some_and(|m| m.removed && m.active == 0) {
            self.slots[i] = None;
            self.restart_weighted();
        }
    }

    /// Restarts the weighted sequence after the membership or weights changed, so the
    /// running scores again sum to zero and each round gives exact shares.
    fn restart_weighted(&mut self) {
        for m in self.slots.iter_mut().flatten() {
            m.current = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Member, Pool};
    // proptest's prelude brings its own `Strategy` trait: the config's is `Kind` here.
    use proptest::prelude::*;
    use sssonector_config::Strategy as Kind;

    fn pool(strategy: Kind, weights: &[u32]) -> Pool {
        let mut p = Pool::new(strategy);
        for (i, w) in weights.iter().enumerate() {
            p.add(&format!("10.0.0.{i}:80"), *w);
        }
        p
    }

    fn picks(p: &mut Pool, n: usize) -> Vec<usize> {
        (0..n).map(|_| p.pick(&[]).expect("eligible")).collect()
    }

    #[test]
    fn round_robin_takes_each_endpoint_in_turn() {
        let mut p = pool(Kind::RoundRobin, &[1, 1, 1]);
        assert_eq!(picks(&mut p, 7), [1, 2, 0, 1, 2, 0, 1]);
    }

    #[test]
    fn unhealthy_draining_open_and_excluded_endpoints_are_skipped() {
        for strategy in [
            Kind::RoundRobin,
            Kind::LeastConnections,
            Kind::WeightedRoundRobin,
        ] {
            let mut p = pool(strategy, &[1, 1, 1, 1, 1]);
            p.set_healthy(0, false);
            p.set_draining("10.0.0.1:80", true);
            p.set_breaker_open(2, true);
            let got: Vec<_> = (0..6).map(|_| p.pick(&[3])).collect();
            assert_eq!(got, [Some(4); 6], "{strategy:?}");
            assert_eq!(p.pick(&[3, 4]), None, "{strategy:?}");
        }
    }

    #[test]
    fn the_fallback_ignores_health_and_breakers_but_not_drains_or_exclusions() {
        let mut p = pool(Kind::RoundRobin, &[1, 1, 1]);
        let order = [0, 1, 2];
        p.set_healthy(0, false);
        p.set_breaker_open(1, true);
        p.set_healthy(2, false);
        assert_eq!(p.pick_first(&order, &[]), None);
        assert_eq!(p.pick_fallback(&order, &[]), Some(0));
        assert_eq!(p.pick_fallback(&order, &[0]), Some(1));
        p.set_draining("10.0.0.1:80", true);
        assert_eq!(p.pick_fallback(&order, &[0]), Some(2));
        assert_eq!(p.pick_fallback(&order, &[0, 2]), None);
    }

    #[test]
    fn pick_first_takes_the_first_eligible_in_the_given_order() {
        let mut p = pool(Kind::RoundRobin, &[1, 1, 1]);
        let order = [2, 0, 1];
        assert_eq!(p.pick_first(&order, &[]), Some(2));
        assert_eq!(p.pick_first(&order, &[]), Some(2), "no rotation");
        p.set_healthy(2, false);
        assert_eq!(p.pick_first(&order, &[]), Some(0));
        assert_eq!(p.pick_first(&order, &[0]), Some(1));
        assert_eq!(p.pick_first(&order, &[0, 1]), None);
        assert_eq!(p.pick_first(&[7], &[]), None, "unknown indexes are skipped");
    }

    #[test]
    fn least_connections_picks_the_least_loaded_and_rotates_ties() {
        let mut p = pool(Kind::LeastConnections, &[1, 1, 1]);
        p.started(0);
        p.started(0);
        p.started(2);
        assert_eq!(p.pick(&[]), Some(1));
        p.started(1);
        // 1 and 2 are tied at one: the one after the last pick goes first.
        assert_eq!(p.pick(&[]), Some(2));
        p.started(2);
        assert_eq!(p.pick(&[]), Some(1));
        p.finished(0);
        p.finished(0);
        assert_eq!(p.pick(&[]), Some(0));
    }

    #[test]
    fn weighted_one_and_two_is_b_a_b_repeating() {
        // The a,b,b,a,b,b rotated by one: nginx's first pick goes to the
        // heavier endpoint. Never b,b,b.
        let mut p = pool(Kind::WeightedRoundRobin, &[1, 2]);
        assert_eq!(picks(&mut p, 9), [1, 0, 1, 1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn weighted_matches_nginx_example() {
        // The example in nginx commit 27e94984, which introduced the algorithm.
        let mut p = pool(Kind::WeightedRoundRobin, &[5, 1, 1]);
        assert_eq!(picks(&mut p, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn adding_and_draining_keep_the_others_counts() {
        let mut p = pool(Kind::LeastConnections, &[1, 1]);
        p.started(0);
        p.started(1);
        p.started(1);
        let c = p.add("10.0.0.9:80", 3);
        assert_eq!(c, 2);
        assert_eq!(p.add("10.0.0.9:80", 3), 2, "adding twice keeps one entry");
        assert_eq!(p.get(0).map(Member::active), Some(1));
        assert_eq!(p.get(1).map(Member::active), Some(2));
        assert_eq!(p.set_draining("10.0.0.9:80", true), Some(2));
        assert_eq!(p.pick(&[]), Some(0));
        assert_eq!(p.set_draining("nope:1", true), None);
    }

    #[test]
    fn removing_waits_for_the_last_stream_and_frees_the_slot() {
        let mut p = pool(Kind::RoundRobin, &[1, 1, 1]);
        p.started(1);
        assert!(p.remove("10.0.0.1:80"));
        assert!(p.get(1).is_some_and(Member::removed));
        assert_eq!(picks(&mut p, 4), [2, 0, 2, 0]);
        p.finished(1);
        assert_eq!(p.get(1), None);
        assert_eq!(p.index_of("10.0.0.1:80"), None);
        assert_eq!(p.add("10.0.0.7:80", 1), 1, "the free slot is reused");
        assert!(!p.remove("10.0.0.1:80"));
    }

    #[test]
    fn re_adding_a_removed_endpoint_keeps_its_streams() {
        let mut p = pool(Kind::RoundRobin, &[1, 1]);
        p.started(0);
        p.remove("10.0.0.0:80");
        assert_eq!(p.add("10.0.0.0:80", 1), 0);
        assert_eq!(
            p.get(0).map(|m| (m.active(), m.removed())),
            Some((1, false))
        );
    }

    #[test]
    fn removing_an_idle_endpoint_frees_it_at_once() {
        let mut p = pool(Kind::WeightedRoundRobin, &[1, 1]);
        assert!(p.remove("10.0.0.0:80"));
        assert_eq!(p.get(0), None);
        assert_eq!(picks(&mut p, 3), [1, 1, 1]);
    }

    #[test]
    fn an_empty_pool_picks_nothing() {
        for strategy in [
            Kind::RoundRobin,
            Kind::LeastConnections,
            Kind::WeightedRoundRobin,
        ] {
            assert_eq!(Pool::new(strategy).pick(&[]), None);
        }
    }

    #[test]
    fn finishing_more_than_started_stays_at_zero() {
        let mut p = pool(Kind::RoundRobin, &[1]);
        p.finished(0);
        p.finished(5);
        assert_eq!(p.get(0).map(Member::active), Some(0));
    }

    /// One step of a random workload against a pool of `n` endpoints.
    #[derive(Clone, Debug)]
    enum Op {
        Pick(Vec<usize>),
        Healthy(usize, bool),
        Draining(usize, bool),
        BreakerOpen(usize, bool),
        Started(usize),
        Finished(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        let i = 0..n;
        prop_oneof![
            4 => proptest::collection::vec(0..n, 0..3).prop_map(Op::Pick),
            1 => (i.clone(), any::<bool>()).prop_map(|(i, b)| Op::Healthy(i, b)),
            1 => (i.clone(), any::<bool>()).prop_map(|(i, b)| Op::Draining(i, b)),
            1 => (i.clone(), any::<bool>()).prop_map(|(i, b)| Op::BreakerOpen(i, b)),
            2 => i.clone().prop_map(Op::Started),
            1 => i.prop_map(Op::Finished),
        ]
    }

    fn any_strategy() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::RoundRobin),
            Just(Kind::LeastConnections),
            Just(Kind::WeightedRoundRobin),
        ]
    }

    fn workload() -> impl Strategy<Value = (Kind, Vec<u32>, Vec<Op>)> {
        (any_strategy(), proptest::collection::vec(1u32..=10, 1..=8)).prop_flat_map(|(s, w)| {
            let n = w.len();
            (Just(s), Just(w), proptest::collection::vec(op(n), 0..200))
        })
    }

    proptest! {
        #[test]
        fn picks_only_eligible_endpoints_and_none_only_when_none_is((strategy, weights, ops) in workload()) {
            let mut p = pool(strategy, &weights);
            for op in ops {
                match op {
                    Op::Pick(exclude) => {
                        let eligible: Vec<usize> = p
                            .members()
                            .filter(|(i, m)| m.eligible() && !exclude.contains(i))
                            .map(|(i, _)| i)
                            .collect();
                        match p.pick(&exclude) {
                            None => prop_assert!(eligible.is_empty()),
                            Some(i) => {
                                prop_assert!(eligible.contains(&i));
                                if strategy == Kind::LeastConnections {
                                    let least = eligible.iter().filter_map(|&j| p.get(j)).map(Member::active).min();
                                    prop_assert_eq!(p.get(i).map(Member::active), least);
                                }
                            }
                        }
                    }
                    Op::Healthy(i, b) => p.set_healthy(i, b),
                    Op::Draining(i, b) => { p.set_draining(&format!("10.0.0.{i}:80"), b); }
                    Op::BreakerOpen(i, b) => p.set_breaker_open(i, b),
                    Op::Started(i) => p.started(i),
                    Op::Finished(i) => p.finished(i),
                }
            }
        }

        #[test]
        fn weighted_gives_exact_shares_per_round_without_bursts(weights in proptest::collection::vec(1u32..=10, 1..=8)) {
            let mut p = pool(Kind::WeightedRoundRobin, &weights);
            let total: u32 = weights.iter().sum();
            let seq = picks(&mut p, 3 * total as usize);
            for round in seq.chunks(total as usize) {
                for (i, &w) in weights.iter().enumerate() {
                    prop_assert_eq!(round.iter().filter(|&&x| x == i).count(), w as usize);
                }
            }
            // Any window of k picks gives endpoint i between floor(k·w/T) − 1 and
            // ceil(k·w/T) + 1 of them: no bursts, no starvation.
            for start in 0..total as usize {
                for k in 1..=total as usize {
                    let window = &seq[start..start + k];
                    for (i, &w) in weights.iter().enumerate() {
                        let got = window.iter().filter(|&&x| x == i).count() as u64;
                        let share = k as u64 * u64::from(w);
                        prop_assert!(got <= share.div_ceil(u64::from(total)) + 1, "burst of {} in {:?}", i, window);
                        prop_assert!(got + 1 >= share / u64::from(total), "{} starved in {:?}", i, window);
                    }
                }
            }
        }

        #[test]
        fn weighted_scores_stay_bounded_under_exclusions(
            weights in proptest::collection::vec(1u32..=10, 2..=8),
            excludes in proptest::collection::vec(proptest::collection::vec(0usize..8, 0..4), 1..300),
        ) {
            let mut p = pool(Kind::WeightedRoundRobin, &weights);
            let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
            for exclude in excludes {
                p.pick(&exclude);
                for (_, m) in p.members() {
                    prop_assert!(m.current.abs() <= total, "score {} beyond {}", m.current, total);
                }
            }
        }

        #[test]
        fn round_robin_visits_every_eligible_endpoint_once_per_cycle(
            flags in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..=8),
            warmup in 0usize..10,
        ) {
            let mut p = pool(Kind::RoundRobin, &vec![1; flags.len()]);
            for (i, &(healthy, draining)) in flags.iter().enumerate() {
                p.set_healthy(i, healthy);
                p.set_draining(&format!("10.0.0.{i}:80"), draining);
            }
            let mut eligible: Vec<usize> = p.members().filter(|(_, m)| m.eligible()).map(|(i, _)| i).collect();
            for _ in 0..warmup {
                p.pick(&[]);
            }
            let n = eligible.len();
            for _ in 0..3 {
                let mut cycle: Vec<usize> = (0..n).filter_map(|_| p.pick(&[])).collect();
                cycle.sort_unstable();
                eligible.sort_unstable();
                prop_assert_eq!(&cycle, &eligible);
            }
        }
    }
}
