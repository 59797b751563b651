//! The listener's pure decisions about load: how many handshakes may be pending at
//! once ([`Pending`]), and which refusals are worth a log line ([`RefusalLog`]).
//!
//! A flood of half-open connections must cost bounded memory, descriptors and log
//! lines: each pending handshake holds a socket, a task and TLS state for up to the
//! handshake timeout, and each refusal used to write a warning and an audit record.
//! Both machines take `now` (where time matters) as an argument: the accept loop
//! drives them, the unit tests below drive them with a made-up clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often a source may log a refusal for the same reason, and how often the
/// suppressed ones are summed up in one line.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Sources remembered by [`RefusalLog`] within one interval: beyond it, refusals
/// from new sources are only counted, so a flood from many addresses costs bounded
/// memory too.
pub const REFUSAL_LOG_SOURCES: usize = 1024;

/// Why a connection was closed before its handshake started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// `tunnel.max_pending_handshakes` handshakes are pending.
    Overall,
    /// `tunnel.max_pending_per_source` handshakes from this address are pending.
    PerSource,
}

impl Shed {
    /// The stable word in logs and audit records.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Overall => "pending_handshakes_full",
            Self::PerSource => "pending_handshakes_per_source_full",
        }
    }
}

/// Handshakes under way, overall and per source address.
#[derive(Debug, Default)]
pub struct Pending {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Most pending at once since [`Pending::take_peak`] last ran: a burst.
    peak: usize,
}

impl Pending {
    /// Admits one more handshake from `ip` unless `max_total` (overall) or
    /// `max_per_source` (from `ip`) are pending already.
    ///
    /// # Errors
    /// Which cap is reached.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        max_total: usize,
        max_per_source: usize,
    ) -> Result<(), Shed> {
        if self.total >= max_total {
            return Err(Shed::Overall);
        }
        let n = self.by_source.entry(ip).or_insert(0);
        if *n >= max_per_source {
            return Err(Shed::PerSource);
        }
        *n += 1;
        self.total += 1;
        self.peak = self.peak.max(self.total);
        Ok(())
    }

    /// One handshake from `ip` is over; true when none is left pending.
    pub fn done(&mut self, ip: IpAddr) -> bool {
        if let Some(n) = self.by_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&ip);
            }
            self.total -= 1;
        }
        self.total == 0
    }

    /// Handshakes pending now.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The most pending at once since the last call, and starts over.
    pub fn take_peak(&mut self) -> usize {
        std::mem::replace(&mut self.peak, self.total)
    }
}

/// Refusal log lines: at most one per reason per source per interval; the rest are
/// counted, and summed up once per interval.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    /// When each (reason, source) last had a line, this interval.
    last: HashMap<(&'static str, IpAddr), Instant>,
    /// Refusals not logged since the last summary, by reason.
    suppressed: BTreeMap<&'static str, u64>,
    /// When the last summary was due.
    since: Instant,
}

impl RefusalLog {
    /// A limiter allowing one line per reason and source per `interval`, from `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            last: HashMap::new(),
            suppressed: BTreeMap::new(),
            since: now,
        }
    }

    /// Whether a refusal for `reason` from `ip` at `now` gets its log line; if not it
    /// is counted for the summary.
    pub fn admit(&mut self, now: Instant, reason: &'static str, ip: IpAddr) -> bool {
        let key = (reason, ip);
        let fresh = match self.last.get(&key) {
            Some(at) => now.saturating_duration_since(*at) >= self.interval,
            None => self.last.len() < REFUSAL_LOG_SOURCES,
        };
        if fresh {
            self.last.insert(key, now);
        } else {
            *self.suppressed.entry(reason).or_insert(0) += 1;
        }
        fresh
    }

    /// Once per interval: the refusals not logged since the last summary, by reason
    /// (`None` when the interval is not over or nothing was suppressed). Sources
    /// quiet for an interval are forgotten.
    pub fn summary(&mut self, now: Instant) -> Option<BTreeMap<&'static str, u64>> {
        if now.saturating_duration_since(self.since) < self.interval {
            return None;
        }
        self.since = now;
        let interval = self.interval;
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < interval);
        if self.suppressed.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn pending_handshakes_are_capped_overall_and_per_source() {
        let mut p = Pending::default();
        assert_eq!(p.admit(ip(1), 3, 2), Ok(()));
        assert_eq!(p.admit(ip(1), 3, 2), Ok(()));
        assert_eq!(p.admit(ip(1), 3, 2), Err(Shed::PerSource));
        assert_eq!(p.admit(ip(2), 3, 2), Ok(()));
        assert_eq!(p.admit(ip(3), 3, 2), Err(Shed::Overall));
        assert!(!p.done(ip(1)));
        assert_eq!(p.admit(ip(3), 3, 2), Ok(()));
        assert_eq!(p.take_peak(), 3);
        for who in [1, 2, 3] {
            p.done(ip(who));
        }
        assert_eq!(p.total(), 0);
        assert!(p.by_source.is_empty(), "no source is kept once it is done");
        assert_eq!(p.take_peak(), 3, "the peak is kept until taken");
        assert_eq!(p.take_peak(), 0);
    }

    #[test]
    fn done_for_an_unknown_source_changes_nothing() {
        let mut p = Pending::default();
        p.admit(ip(1), 3, 3).expect("room");
        assert!(!p.done(ip(9)));
        assert_eq!(p.total(), 1);
    }

    #[test]
    fn one_line_per_reason_and_source_per_interval_and_a_summary() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut log = RefusalLog::new(10 * s, t0);
        assert!(log.admit(t0, "tls_error", ip(1)));
        assert!(!log.admit(t0 + s, "tls_error", ip(1)));
        assert!(!log.admit(t0 + 2 * s, "tls_error", ip(1)));
        assert!(log.admit(t0 + 2 * s, "handshake_timeout", ip(1)));
        assert!(log.admit(t0 + 2 * s, "tls_error", ip(2)));
        assert_eq!(log.summary(t0 + 9 * s), None, "not yet due");
        let sum = log.summary(t0 + 10 * s).expect("two suppressed");
        assert_eq!(sum.into_iter().collect::<Vec<_>>(), vec![("tls_error", 2)]);
        assert!(log.admit(t0 + 10 * s, "tls_error", ip(1)), "a new interval");
        assert_eq!(log.summary(t0 + 20 * s), None, "nothing suppressed");
    }

    #[test]
    fn sources_beyond_the_bound_are_only_counted_and_forgotten_later() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(10), t0);
        for n in 0..REFUSAL_LOG_SOURCES + 10 {
            let ip = IpAddr::from(u32::try_from(n).expect("small").to_be_bytes());
            let logged = log.admit(t0, "tls_error", ip);
            assert_eq!(logged, n < REFUSAL_LOG_SOURCES);
        }
        assert_eq!(log.last.len(), REFUSAL_LOG_SOURCES);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            log.summary(later).and_then(|s| s.get("tls_error").copied()),
            Some(10)
        );
        assert!(log.last.is_empty(), "quiet sources are forgotten");
    }
}
