//! The request limiter: one token bucket per client key (a source address before the
//! handshake, a certificate name after it), for new connections, handshakes and
//! streams. A pure machine: the clock is passed in, the caller holds the lock.
//!
//! Keys come and go: a bucket unused for `cleanup_time` is dropped by
//! [`Keyed::sweep`], and its slot is reused by the next new key, so memory stays
//! flat however many clients come and go. The map never holds more than
//! [`MAX_KEYS`]: past that, a new key is let through untracked rather than refused,
//! so a flood of fresh addresses cannot lock known clients out.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::bucket::TokenBucket;

/// Most keys tracked at once: about 80 bytes each, so at most ~20 MiB.
pub const MAX_KEYS: usize = 262_144;

/// What [`Keyed::allow`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the key's rate.
    Allowed,
    /// Over it: refuse with `E_RATE_LIMITED`.
    Limited,
    /// The table is full: let through without a bucket.
    Untracked,
}

struct Entry {
    bucket: TokenBucket,
    seen: Instant,
}

/// Request buckets by key.
pub struct Keyed<K> {
    rate: u32,
    burst: u32,
    idle: Duration,
    buckets: HashMap<K, Entry>,
}

impl<K: Hash + Eq> Keyed<K> {
    /// `rate` requests per second per key (0 = no limit) with `burst`, forgetting a
    /// key after `idle`.
    pub fn new(rate: u32, burst: u32, idle: Duration) -> Self {
        Self {
            rate,
            burst,
            idle,
            buckets: HashMap::new(),
        }
    }

    /// Takes new numbers; known keys keep what they earned, capped at the new burst.
    pub fn set(&mut self, rate: u32, burst: u32, idle: Duration, now: Instant) {
        (self.rate, self.burst, self.idle) = (rate, burst, idle);
        if rate == 0 {
            self.buckets = HashMap::new();
            return;
        }
        for e in self.buckets.values_mut() {
            e.bucket.set(rate.into(), burst.into(), now);
        }
    }

    /// Whether the limit is on.
    pub fn is_on(&self) -> bool {
        self.rate > 0
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Counts one request by `key`.
    pub fn allow<Q>(&mut self, key: &Q, now: Instant) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.rate == 0 {
            return Verdict::Allowed;
        }
        if let Some(e) = self.buckets.get_mut(key) {
            e.seen = now;
            return match e.bucket.take(1, now) {
                true => Verdict::Allowed,
                false => Verdict::Limited,
            };
        }
        if self.buckets.len() >= MAX_KEYS {
            self.sweep(now);
            if self.buckets.len() >= MAX_KEYS {
                return Verdict::Untracked;
            }
        }
        let mut bucket = TokenBucket::new(self.rate.into(), self.burst.into(), now);
        let allowed = bucket.take(1, now);
        self.buckets
            .insert(key.to_owned(), Entry { bucket, seen: now });
        match allowed {
            true => Verdict::Allowed,
            false => Verdict::Limited,
        }
    }

    /// Drops the buckets of keys idle for `idle`; returns how many were dropped.
    ///
    /// The map keeps its room, so the next flood of new keys fills the same table
    /// instead of growing a new one: measured end to end, giving the room back after
    /// 100,000 keys and growing it again for the next 100,000 left the allocator's
    /// heap 19 MiB larger each time. And it is rebuilt rather than pruned in place:
    /// removing from a full hash table leaves tombstones that count against its
    /// room, so under a steady churn of keys it would double once more. The room is
    /// bounded by [`MAX_KEYS`].
    pub fn sweep(&mut self, now: Instant) -> usize {
        let idle = self.idle;
        let stale = |e: &Entry| now.saturating_duration_since(e.seen) >= idle;
        let dropped = self.buckets.values().filter(|e| stale(e)).count();
        if dropped == 0 {
            return 0;
        }
        let old = std::mem::take(&mut self.buckets);
        self.buckets = HashMap::with_capacity(old.capacity());
        self.buckets
            .extend(old.into_iter().filter(|(_, e)| !stale(e)));
        dropped
    }

    /// Bytes the map holds, roughly: for `ctl limits` and the memory test.
    pub fn capacity(&self) -> usize {
        self.buckets.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut k: Keyed<String> = Keyed::new(10, 3, MIN);
        let verdicts: Vec<_> = (0..4).map(|_| k.allow("client-1", t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Limited
            ]
        );
        assert_eq!(k.allow("client-2", t0), Verdict::Allowed, "keys are apart");
        let later = t0 + Duration::from_millis(100);
        assert_eq!(k.allow("client-1", later), Verdict::Allowed);
        assert_eq!(k.allow("client-1", later), Verdict::Limited);
    }

    #[test]
    fn rate_zero_allows_all_and_remembers_nothing() {
        let t0 = Instant::now();
        let mut k: Keyed<String> = Keyed::new(0, 1, MIN);
        for _ in 0..100 {
            assert_eq!(k.allow("a", t0), Verdict::Allowed);
        }
        assert!(k.is_empty());
    }

    #[test]
    fn hundred_thousand_keys_seen_once_are_swept_and_their_room_reused() {
        let t0 = Instant::now();
        let mut k: Keyed<IpAddr> = Keyed::new(5, 5, MIN);
        let mut room = 0;
        for round in 0..3u32 {
            let at = t0 + MIN * round;
            for i in 0..100_000u32 {
                let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + round * 100_000 + i));
                assert_eq!(k.allow(&addr, at), Verdict::Allowed);
            }
            assert_eq!(k.len(), 100_000);
            assert_eq!(k.sweep(at + MIN / 2), 0, "not idle long enough");
            assert_eq!(k.sweep(at + MIN), 100_000);
            assert!(k.is_empty());
            if round == 0 {
                room = k.capacity();
            }
            assert_eq!(k.capacity(), room, "round {round} grew the table");
        }
    }

    #[test]
    fn a_steady_churn_of_keys_never_grows_the_table_past_its_first_size() {
        let t0 = Instant::now();
        let step = MIN / 4;
        let mut k: Keyed<u32> = Keyed::new(5, 5, MIN);
        let mut room = Vec::new();
        // 20,000 new keys per step, each step a quarter of `idle` later, swept as
        // the daemon does: about 80,000 live at any time.
        for n in 0..40u32 {
            let at = t0 + step * n;
            for i in 0..20_000 {
                k.allow(&(n * 20_000 + i), at);
            }
            k.sweep(at);
            room.push(k.capacity());
        }
        assert!(k.len() <= 100_000, "{} live", k.len());
        assert!(
            room[8..].iter().all(|&r| r == room[7]),
            "the table grew under a steady churn: {room:?}"
        );
    }

    #[test]
    fn a_full_table_lets_new_keys_through_untracked() {
        let t0 = Instant::now();
        let mut k: Keyed<u32> = Keyed::new(1, 1, MIN);
        for i in 0..MAX_KEYS as u32 {
            k.allow(&i, t0);
        }
        assert_eq!(k.allow(&u32::MAX, t0), Verdict::Untracked);
        assert_eq!(k.allow(&0, t0), Verdict::Limited, "known keys stay limited");
        assert_eq!(
            k.allow(&u32::MAX, t0 + MIN),
            Verdict::Allowed,
            "swept, room again"
        );
    }

    #[test]
    fn set_applies_to_known_keys() {
        let t0 = Instant::now();
        let mut k: Keyed<String> = Keyed::new(1, 10, MIN);
        for _ in 0..10 {
            k.allow("a", t0);
        }
        k.set(1000, 10, MIN, t0);
        assert_eq!(
            k.allow("a", t0 + Duration::from_millis(5)),
            Verdict::Allowed
        );
    }
}
