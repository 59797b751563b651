//! The rate-limiting state every part shares: the policy in force, one [`Flow`] per
//! connection, the request limiter, and the rows of the SNMP limiter table.
//!
//! The data path never takes a lock or sends a message to be limited: each I/O task
//! owns a [`Throttle`] (its own [`TokenBucket`]) and reads its flow's rate from an
//! atomic per read or per chunk. The RateLimiter actor writes those atomics: at a
//! configuration change, at `limits.set`, and every [`TICK`] when a global rate is
//! shared. Every connection gets a flow, limited or not, so turning limits on by a
//! reload reaches connections already open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{json, Value};
use sssonector_config::schema::{Throttle as Config, ThrottleOverride};

use super::bucket::TokenBucket;
use super::keyed::{Keyed, Verdict};
use super::share::{shares, Claim};

/// A flow's rate when nothing limits it: the data path skips its bucket then.
pub const UNLIMITED: u64 = u64::MAX;
/// How often the fair shares of the global rate are recomputed and current rates
/// measured: often enough that a new rate holds well within a second.
pub const TICK: Duration = Duration::from_millis(100);
/// How long a throttled session's packets may queue at its rate before new ones are
/// dropped (at least its burst is kept): bounds the delay throttling adds.
pub const QUEUE_DELAY: Duration = Duration::from_millis(100);
/// The least a connection that did not wait is assumed to want of the global rate,
/// bytes per second: a quiet connection starts from this plus any headroom.
const MIN_DEMAND: u64 = 64 * 1024;
/// Connections `ctl limits` lists at most.
pub const LIST_MAX: usize = 1000;

/// What a flow carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A tunnel peer's layer-3 packets.
    Session,
    /// One layer-4 service stream.
    Stream,
}

/// One row of the limiter table: a configured limiter and what it did.
#[derive(Debug)]
pub struct Row {
    /// `sssLimiterIndex`: from 1, never reused for another limiter.
    pub index: u32,
    /// The configuration key, e.g. `throttle`, `throttle.services.db`.
    pub name: String,
    /// Bytes (requests for `throttle.requests`) per second.
    pub rate: AtomicU64,
    /// Bytes (requests) its buckets hold at most.
    pub burst: AtomicU64,
    /// Bytes that waited for a bucket before passing.
    pub throttled: AtomicU64,
    /// Packets dropped or requests refused.
    pub rejected: AtomicU64,
}

/// One connection's limits and numbers, shared by its I/O task (through a
/// [`Throttle`]), the RateLimiter actor and the readers.
#[derive(Debug)]
pub struct Flow {
    /// Unique in this process.
    pub id: u64,
    /// What it carries.
    pub kind: Kind,
    /// The tunnel peer's certificate name.
    pub peer: Arc<str>,
    /// The service, for a stream.
    pub service: Option<Arc<str>>,
    /// The stream's id on its session.
    pub stream: u32,
    /// Its own per-connection rate, bytes per second ([`UNLIMITED`] when off).
    cap: AtomicU64,
    burst: AtomicU64,
    weight: AtomicU32,
    /// The rate its bucket refills at: the cap, or its share of the global rate.
    rate: AtomicU64,
    /// Bytes passed.
    pub passed: AtomicU64,
    /// Bytes that waited for the bucket before passing.
    pub throttled: AtomicU64,
    /// Nanoseconds spent waiting for the bucket.
    pub waited_ns: AtomicU64,
    /// Packets dropped because the throttled queue was full.
    pub dropped: AtomicU64,
    /// It waited for its bucket since the last tick: it wants more than it has.
    waiting: AtomicBool,
    /// Bytes per second over the last second, as the actor measured.
    pub current: AtomicU64,
    row: ArcSwap<Row>,
}

impl Flow {
    /// The name `limits.set` knows it by: the peer for a session,
    /// `peer/service/stream` for a stream.
    pub fn name(&self) -> String {
        match &self.service {
            None => self.peer.to_string(),
            Some(s) => format!("{}/{s}/{}", self.peer, self.stream),
        }
    }

    /// The rate its bucket refills at now.
    pub fn rate(&self) -> u64 {
        self.rate.load(Relaxed)
    }

    fn set(&self, cap: u64, burst: u64, weight: u32) {
        self.cap.store(cap, Relaxed);
        self.burst.store(burst, Relaxed);
        self.weight.store(weight, Relaxed);
    }

    /// Counts `n` bytes that waited, here and in the limiter that held them.
    fn count_throttled(&self, n: u64, global: Option<&Arc<Row>>) {
        self.throttled.fetch_add(n, Relaxed);
        let by_share = self.rate() < self.cap.load(Relaxed);
        match global.filter(|_| by_share) {
            Some(g) => g.throttled.fetch_add(n, Relaxed),
            None => self.row.load().throttled.fetch_add(n, Relaxed),
        };
    }

    /// Counts `packets` dropped by its full throttled queue.
    pub fn count_dropped(&self, packets: u64) {
        self.dropped.fetch_add(packets, Relaxed);
        self.row.load().rejected.fetch_add(packets, Relaxed);
    }

    fn to_json(&self) -> Value {
        let limit = |v: u64| (v != UNLIMITED).then_some(v);
        json!({
            "name": self.name(),
            "kind": match self.kind { Kind::Session => "session", Kind::Stream => "stream" },
            "peer": &*self.peer,
            "service": self.service.as_deref(),
            "limiter": self.row.load().name,
            "rate": limit(self.rate()),
            "cap": limit(self.cap.load(Relaxed)),
            "burst": self.burst.load(Relaxed),
            "weight": self.weight.load(Relaxed),
            "current_rate": self.current.load(Relaxed),
            "bytes": self.passed.load(Relaxed),
            "throttled_bytes": self.throttled.load(Relaxed),
            "wait_seconds": Duration::from_nanos(self.waited_ns.load(Relaxed)).as_secs_f64(),
            "dropped_packets": self.dropped.load(Relaxed),
        })
    }
}

/// The policy in force: the `throttle` section, as `limits.set` left it.
pub type Policy = Config;

/// How [`Policy`] applies to connections.
trait Rules {
    fn resolve(&self, peer: &str, service: Option<&str>) -> (u64, u64, u32, String);
    fn rows(&self) -> Vec<(String, u64, u64)>;
}

impl Rules for Policy {
    /// A connection's cap, burst, weight and the key of the limiter it falls under:
    /// a stream's service override first, then its peer's, then the defaults.
    fn resolve(&self, peer: &str, service: Option<&str>) -> (u64, u64, u32, String) {
        let by_service = service.and_then(|s| Some((s, self.services.get(s)?)));
        let by_client = self.clients.get(peer);
        let pick = |f: fn(&ThrottleOverride) -> Option<u64>| {
            by_service
                .and_then(|(_, o)| f(o))
                .or_else(|| by_client.and_then(f))
        };
        let rate = pick(|o| o.rate).unwrap_or(self.rate);
        let burst = pick(|o| o.burst).unwrap_or(self.burst);
        let weight = by_service
            .and_then(|(_, o)| o.weight)
            .or_else(|| by_client.and_then(|o| o.weight))
            .unwrap_or(1);
        let key = match (by_service, by_client) {
            (Some((s, _)), _) => format!("throttle.services.{s}"),
            (None, Some(_)) => format!("throttle.clients.{peer}"),
            (None, None) => "throttle".to_owned(),
        };
        match self.enabled {
            true => (rate, burst, weight, key),
            false => (UNLIMITED, burst, weight, key),
        }
    }

    /// The limiter table's rows: (name, rate, burst).
    fn rows(&self) -> Vec<(String, u64, u64)> {
        if !self.enabled {
            return Vec::new();
        }
        let mut rows = vec![("throttle".to_owned(), self.rate, self.burst)];
        if self.global_rate > 0 {
            rows.push(("throttle.global_rate".to_owned(), self.global_rate, 0));
        }
        if self.requests.rate > 0 {
            let r = &self.requests;
            rows.push((
                "throttle.requests".to_owned(),
                r.rate.into(),
                r.burst.into(),
            ));
        }
        let overrides = [("services", &self.services), ("clients", &self.clients)];
        for (part, map) in overrides {
            for (name, o) in map {
                let rate = o.rate.unwrap_or(self.rate);
                let burst = o.burst.unwrap_or(self.burst);
                rows.push((format!("throttle.{part}.{name}"), rate, burst));
            }
        }
        rows
    }
}

/// What `limits.set` may change; validated like the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Per-connection rate.
    pub rate: Option<u64>,
    /// Per-connection burst.
    pub burst: Option<u64>,
    /// Global rate; 0 removes it.
    pub global_rate: Option<u64>,
    /// Only the connections of this name (a peer: its session and streams).
    pub connection: Option<String>,
}

/// Why a `limits.set` was refused: the reply's message (`E_BAD_ARGS`, or
/// `E_NOT_AVAILABLE` when limiting is off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `throttle.enabled` is false.
    Off,
    /// A bad value or an unknown connection.
    BadArgs(String),
}

struct Requesters {
    addrs: Keyed<IpAddr>,
    names: Keyed<String>,
}

/// Everything rate limiting shares; one per daemon, in [`Stats`](crate::tunnel::stats::Stats).
pub struct Limits {
    policy: ArcSwap<Policy>,
    flows: Mutex<HashMap<u64, Weak<Flow>>>,
    next_flow: AtomicU64,
    rows: Mutex<Vec<Arc<Row>>>,
    /// The `throttle.global_rate` row, read by the data path without the lock.
    global_row: ArcSwapOption<Row>,
    next_row: AtomicU32,
    /// `throttle.requests.rate > 0`, read without the lock.
    requests_on: AtomicBool,
    requesters: Mutex<Requesters>,
    /// Requests refused since start.
    pub rejected: AtomicU64,
    /// Sum of the live flows' weights at the last tick, for a new flow's first share.
    weights: AtomicU64,
    /// Bytes that waited, over all flows ever, counted as they pass.
    throttled_total: AtomicU64,
    waited_total_ns: AtomicU64,
}

impl Default for Limits {
    fn default() -> Self {
        let policy = Policy::default();
        let idle = policy.cleanup_time.duration();
        Self {
            policy: ArcSwap::from_pointee(policy),
            flows: Mutex::default(),
            next_flow: AtomicU64::new(1),
            rows: Mutex::default(),
            global_row: ArcSwapOption::empty(),
            next_row: AtomicU32::new(1),
            requests_on: AtomicBool::new(false),
            requesters: Mutex::new(Requesters {
                addrs: Keyed::new(0, 1, idle),
                names: Keyed::new(0, 1, idle),
            }),
            rejected: AtomicU64::new(0),
            weights: AtomicU64::new(0),
            throttled_total: AtomicU64::new(0),
            waited_total_ns: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("policy", &self.policy.load())
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for every connection, open ones included.
    pub fn apply(&self, policy: Policy) {
        let now = Instant::now();
        {
            let r = &policy.requests;
            let mut q = self
                .requesters
                .lock()
                .expect("requesters lock not poisoned");
            q.addrs
                .set(r.rate, r.burst, policy.cleanup_time.duration(), now);
            q.names
                .set(r.rate, r.burst, policy.cleanup_time.duration(), now);
            self.requests_on.store(r.rate > 0, Relaxed);
        }
        self.policy.store(Arc::new(policy));
        self.sync_rows();
        for flow in self.live() {
            self.resolve(&flow);
        }
        self.share();
    }

    /// A new connection's flow: `service` is `None` for a session's packets.
    pub fn flow(&self, peer: Arc<str>, service: Option<Arc<str>>, stream: u32) -> Arc<Flow> {
        let kind = match service {
            None => Kind::Session,
            Some(_) => Kind::Stream,
        };
        let placeholder = self.row_named("throttle").unwrap_or_else(|| {
            Arc::new(Row {
                index: 0,
                name: "throttle".into(),
                rate: AtomicU64::new(0),
                burst: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            })
        });
        let flow = Arc::new(Flow {
            id: self.next_flow.fetch_add(1, Relaxed),
            kind,
            peer,
            service,
            stream,
            cap: AtomicU64::new(UNLIMITED),
            burst: AtomicU64::new(0),
            weight: AtomicU32::new(1),
            rate: AtomicU64::new(UNLIMITED),
            passed: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            current: AtomicU64::new(0),
            row: ArcSwap::new(placeholder),
        });
        self.resolve(&flow);
        let policy = self.policy.load();
        if policy.enabled && policy.global_rate > 0 {
            // Its first share, until the next tick shares again.
            let w = u64::from(flow.weight.load(Relaxed));
            let all = self.weights.load(Relaxed) + w;
            let share = u128::from(policy.global_rate) * u128::from(w) / u128::from(all);
            let share = u64::try_from(share).unwrap_or(u64::MAX).max(1);
            flow.rate.store(share.min(flow.cap.load(Relaxed)), Relaxed);
            self.weights.fetch_add(w, Relaxed);
        }
        self.flows
            .lock()
            .expect("flows lock not poisoned")
            .insert(flow.id, Arc::downgrade(&flow));
        flow
    }

    /// Counts one request by a source address (before the handshake, or a local
    /// connection to a service); false when it is over `throttle.requests`.
    pub fn admit_addr(&self, addr: IpAddr) -> bool {
        self.admit(|q, now| q.addrs.allow(&addr, now))
    }

    /// Counts one request by a certificate name; false when it is over
    /// `throttle.requests`.
    pub fn admit_name(&self, name: &str) -> bool {
        self.admit(|q, now| q.names.allow(name, now))
    }

    fn admit(&self, allow: impl FnOnce(&mut Requesters, Instant) -> Verdict) -> bool {
        if !self.requests_on.load(Relaxed) || !self.policy.load().enabled {
            return true;
        }
        let verdict = {
            let mut q = self
                .requesters
                .lock()
                .expect("requesters lock not poisoned");
            allow(&mut q, Instant::now())
        };
        if verdict != Verdict::Limited {
            return true;
        }
        self.rejected.fetch_add(1, Relaxed);
        if let Some(row) = self.row_named("throttle.requests") {
            row.rejected.fetch_add(1, Relaxed);
        }
        false
    }

    /// Forgets request buckets idle for `cleanup_time`; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut q = self
            .requesters
            .lock()
            .expect("requesters lock not poisoned");
        q.addrs.sweep(now) + q.names.sweep(now)
    }

    /// Client keys the request limiter tracks now.
    pub fn request_keys(&self) -> usize {
        let q = self
            .requesters
            .lock()
            .expect("requesters lock not poisoned");
        q.addrs.len() + q.names.len()
    }

    /// Changes limits at run time (`limits.set`).
    ///
    /// # Errors
    /// A [`Refusal`] when limiting is off, a value is out of range, or no connection
    /// has the name.
    pub fn set(&self, change: &Change) -> Result<Value, Refusal> {
        let policy = self.policy();
        if !policy.enabled {
            return Err(Refusal::Off);
        }
        let bad = |m: String| Err(Refusal::BadArgs(m));
        if change.rate == Some(0) {
            return bad("rate 0: give at least 1 byte per second".into());
        }
        if let Some(b) = change.burst.filter(|b| *b < MIN_BURST) {
            return bad(format!("burst {b} is below one frame ({MIN_BURST} bytes)"));
        }
        let Some(name) = &change.connection else {
            let mut next = Policy::clone(&policy);
            next.rate = change.rate.unwrap_or(next.rate);
            next.burst = change.burst.unwrap_or(next.burst);
            next.global_rate = change.global_rate.unwrap_or(next.global_rate);
            if next.global_rate != 0 && next.global_rate < next.rate {
                return bad(format!(
                    "global_rate {} is below the per-connection rate {}",
                    next.global_rate, next.rate
                ));
            }
            self.apply(next);
            return Ok(json!({ "changed": "all" }));
        };
        if change.global_rate.is_some() {
            return bad("global_rate applies to all connections, not one".into());
        }
        let matched: Vec<Arc<Flow>> = self
            .live()
            .into_iter()
            .filter(|f| *f.peer == **name || f.name() == *name)
            .collect();
        if matched.is_empty() {
            return bad(format!("no connection named {name:?}"));
        }
        for f in &matched {
            let cap = change.rate.unwrap_or(f.cap.load(Relaxed));
            let burst = change.burst.unwrap_or(f.burst.load(Relaxed));
            f.set(cap, burst, f.weight.load(Relaxed));
            f.rate.store(cap.min(f.rate()).max(1), Relaxed);
            if policy.global_rate == 0 {
                f.rate.store(cap, Relaxed);
            }
        }
        self.share();
        Ok(json!({ "changed": matched.iter().map(|f| f.name()).collect::<Vec<_>>() }))
    }

    /// One tick of the RateLimiter: measures current rates over the last second
    /// (`meters` is the actor's memory of each flow) and shares the global rate.
    pub fn tick(&self, meters: &mut HashMap<u64, Meter>) {
        let live = self.live();
        meters.retain(|id, _| live.iter().any(|f| f.id == *id));
        for f in &live {
            let m = meters.entry(f.id).or_default();
            let passed = f.passed.load(Relaxed);
            m.push(passed);
            f.current.store(m.per_second(), Relaxed);
        }
        self.share_with(&live, meters);
    }

    fn share(&self) {
        self.share_with(&self.live(), &HashMap::new());
    }

    /// Sets every flow's rate: its cap without a global rate, else its fair share.
    fn share_with(&self, live: &[Arc<Flow>], meters: &HashMap<u64, Meter>) {
        let policy = self.policy.load();
        let global = policy.global_rate;
        if !policy.enabled || global == 0 {
            for f in live {
                f.rate.store(f.cap.load(Relaxed), Relaxed);
                f.waiting.store(false, Relaxed);
            }
            return;
        }
        let claims: Vec<Claim> = live
            .iter()
            .map(|f| {
                let cap = f.cap.load(Relaxed);
                let waited = f.waiting.swap(false, Relaxed);
                let used = meters.get(&f.id).map_or(0, Meter::last_tick);
                Claim {
                    weight: f.weight.load(Relaxed),
                    cap,
                    demand: match waited {
                        true => cap,
                        false => used.saturating_mul(2).max(MIN_DEMAND),
                    },
                }
            })
            .collect();
        let weights: u64 = claims.iter().map(|c| u64::from(c.weight)).sum();
        self.weights.store(weights, Relaxed);
        for (f, share) in live.iter().zip(shares(global, &claims)) {
            f.rate.store(share.max(1), Relaxed);
        }
    }

    /// Sets a flow's cap, burst, weight and limiter row from the policy.
    fn resolve(&self, flow: &Flow) {
        let policy = self.policy.load();
        let (cap, burst, weight, key) = policy.resolve(&flow.peer, flow.service.as_deref());
        flow.set(cap, burst, weight);
        if policy.global_rate == 0 || !policy.enabled {
            flow.rate.store(cap, Relaxed);
        }
        if let Some(row) = self.row_named(&key) {
            flow.row.store(row);
        }
    }

    fn live(&self) -> Vec<Arc<Flow>> {
        let mut flows = self.flows.lock().expect("flows lock not poisoned");
        let mut live = Vec::with_capacity(flows.len());
        flows.retain(|_, w| match w.upgrade() {
            Some(f) => {
                live.push(f);
                true
            }
            None => false,
        });
        live
    }

    fn row_named(&self, name: &str) -> Option<Arc<Row>> {
        let rows = self.rows.lock().expect("rows lock not poisoned");
        rows.iter().find(|r| r.name == name).cloned()
    }

    /// Makes the rows follow the policy: new limiters get the next index, gone ones
    /// leave the table, kept ones keep their index and counts.
    fn sync_rows(&self) {
        let wanted = self.policy.load().rows();
        let mut rows = self.rows.lock().expect("rows lock not poisoned");
        rows.retain(|r| wanted.iter().any(|(n, _, _)| *n == r.name));
        for (name, rate, burst) in wanted {
            let row = match rows.iter().find(|r| r.name == name) {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(Row {
                        index: self.next_row.fetch_add(1, Relaxed),
                        name,
                        rate: AtomicU64::new(0),
                        burst: AtomicU64::new(0),
                        throttled: AtomicU64::new(0),
                        rejected: AtomicU64::new(0),
                    });
                    rows.push(r.clone());
                    r
                }
            };
            row.rate.store(rate, Relaxed);
            row.burst.store(burst, Relaxed);
        }
        rows.sort_by_key(|r| r.index);
        let global = rows.iter().find(|r| r.name == "throttle.global_rate");
        self.global_row.store(global.cloned());
    }

    /// The limiter table, by index.
    pub fn rows(&self) -> Vec<Arc<Row>> {
        self.rows.lock().expect("rows lock not poisoned").clone()
    }

    /// Totals over every flow, ended ones included.
    pub fn totals(&self) -> Totals {
        Totals {
            throttled_bytes: self.throttled_total.load(Relaxed),
            wait_ns: self.waited_total_ns.load(Relaxed),
            rejected_requests: self.rejected.load(Relaxed),
        }
    }

    /// `ctl limits`.
    pub fn to_json(&self) -> Value {
        let p = self.policy();
        let mut live = self.live();
        live.sort_by_key(|f| f.id);
        let t = self.totals();
        let rows: Vec<Value> = self
            .rows()
            .iter()
            .map(|r| {
                json!({
                    "index": r.index, "name": r.name,
                    "rate": r.rate.load(Relaxed), "burst": r.burst.load(Relaxed),
                    "throttled_bytes": r.throttled.load(Relaxed),
                    "rejected": r.rejected.load(Relaxed),
                })
            })
            .collect();
        json!({
            "enabled": p.enabled,
            "rate": p.rate,
            "burst": p.burst,
            "global_rate": p.global_rate,
            "requests": {
                "rate": p.requests.rate, "burst": p.requests.burst,
                "keys": self.request_keys(), "rejected": t.rejected_requests,
            },
            "cleanup_seconds": p.cleanup_time.duration().as_secs_f64(),
            "throttled_bytes": t.throttled_bytes,
            "wait_seconds": Duration::from_nanos(t.wait_ns).as_secs_f64(),
            "limiters": rows,
            "connection_count": live.len(),
            "connections": live.iter().take(LIST_MAX).map(|f| f.to_json()).collect::<Vec<_>>(),
        })
    }
}

/// The smallest burst that passes one frame.
const MIN_BURST: u64 = sssonector_config::schema::defaults::MAX_FRAME;

/// Totals for metrics and `ctl limits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes that waited for a bucket.
    pub throttled_bytes: u64,
    /// Nanoseconds spent waiting.
    pub wait_ns: u64,
    /// Requests refused with `E_RATE_LIMITED`.
    pub rejected_requests: u64,
}

/// The actor's memory of one flow: bytes passed at each of the last ten ticks.
#[derive(Debug, Default)]
pub struct Meter {
    seen: [u64; 11],
    ticks: usize,
}

impl Meter {
    fn push(&mut self, passed: u64) {
        self.seen.rotate_right(1);
        self.seen[0] = passed;
        self.ticks += 1;
    }

    /// Bytes per second over the last second (or since the flow appeared).
    fn per_second(&self) -> u64 {
        let span = self.ticks.min(self.seen.len()) - 1;
        if span == 0 {
            return 0;
        }
        let bytes = self.seen[0] - self.seen[span];
        bytes * 1000 / (span as u64 * TICK.as_millis() as u64)
    }

    /// Bytes per second over the last tick.
    fn last_tick(&self) -> u64 {
        if self.ticks < 2 {
            return 0;
        }
        (self.seen[0] - self.seen[1]) * 1000 / TICK.as_millis() as u64
    }
}

/// A connection's limiter as its I/O task holds it: its flow and its own bucket.
pub struct Throttle {
    flow: Arc<Flow>,
    limits: Arc<Limits>,
    bucket: Option<TokenBucket>,
    /// Tokens the bucket held at the last look, less what passed since: reads up to
    /// this pass without a clock read. Refills only add, so this is never more than
    /// the bucket would allow.
    spare: u64,
    /// When it started waiting, if it is.
    waiting_since: Option<Instant>,
    /// The bytes about to pass waited.
    waited: bool,
    now: Instant,
}

impl Throttle {
    /// The throttle of `flow`.
    pub fn new(flow: Arc<Flow>, limits: Arc<Limits>) -> Self {
        Self {
            flow,
            limits,
            bucket: None,
            spare: 0,
            waiting_since: None,
            waited: false,
            now: Instant::now(),
        }
    }

    /// Its flow.
    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// The bucket at the flow's current numbers; `None` when unlimited.
    fn bucket(&mut self, now: Instant) -> Option<&mut TokenBucket> {
        let rate = self.flow.rate();
        if rate == UNLIMITED {
            self.bucket = None;
            return None;
        }
        let burst = self.flow.burst.load(Relaxed);
        let b = self
            .bucket
            .get_or_insert_with(|| TokenBucket::new(rate, burst, now));
        if (b.rate(), b.burst()) != (rate, burst) {
            b.set(rate, burst, now);
        }
        Some(b)
    }

    /// How many of `want` bytes may pass now, or how long to wait before asking
    /// again when none may. Unlimited flows pass everything without a clock read.
    ///
    /// # Errors
    /// The wait, when the bucket is empty.
    pub fn allow(&mut self, want: usize) -> Result<usize, Duration> {
        let rate = self.flow.rate();
        if rate == UNLIMITED {
            self.bucket = None;
            return Ok(want);
        }
        let same = self
            .bucket
            .as_ref()
            .is_some_and(|b| b.rate() == rate && b.burst() == self.flow.burst.load(Relaxed));
        if same && self.spare >= want as u64 {
            return Ok(want);
        }
        let now = Instant::now();
        self.now = now;
        let Some(b) = self.bucket(now) else {
            return Ok(want);
        };
        // Pass nothing until a twentieth of a second's worth has gathered (at most
        // `want` and the burst), so a saturated flow moves in steps of up to 50 ms
        // rather than the few bytes earned since its last read: tiny reads would
        // make tiny frames, burn the CPU and never count as waiting.
        let quantum = (b.rate() / 20)
            .clamp(1, want.max(1) as u64)
            .min(b.burst().max(1));
        let available = b.available(now);
        if available >= quantum {
            self.spare = available;
            self.end_wait(now);
            return Ok(usize::try_from(available).unwrap_or(usize::MAX).min(want));
        }
        let wait = b.delay(quantum, now);
        self.spare = 0;
        self.start_wait(now);
        Err(wait)
    }

    /// Records `n` bytes that passed after [`allow`](Self::allow).
    pub fn passed(&mut self, n: usize) {
        let n = n as u64;
        self.spare = self.spare.saturating_sub(n);
        self.flow.passed.fetch_add(n, Relaxed);
        let now = self.now;
        if let Some(b) = self.bucket.as_mut() {
            b.consume(n, now);
        }
        self.count_waited(n);
    }

    /// Packets: how long until a chunk of `n` bytes may go (`None`: now), after which
    /// [`charge`](Self::charge) it. A chunk larger than the burst waits for a full
    /// bucket and leaves it in debt.
    pub fn hold(&mut self, n: u64) -> Option<Duration> {
        if self.flow.rate() == UNLIMITED {
            self.bucket = None;
            return None;
        }
        let now = Instant::now();
        self.now = now;
        let wait = self.bucket(now)?.delay(n, now);
        if wait.is_zero() {
            self.end_wait(now);
            return None;
        }
        self.start_wait(now);
        Some(wait)
    }

    /// Records a chunk of `n` bytes that [`hold`](Self::hold) let go.
    pub fn charge(&mut self, n: u64) {
        self.flow.passed.fetch_add(n, Relaxed);
        let now = self.now;
        if let Some(b) = self.bucket.as_mut() {
            b.charge(n, now);
        }
        self.count_waited(n);
    }

    /// The most packet bytes a throttled session should queue: its burst, or
    /// [`QUEUE_DELAY`] at its rate if that is more; 0 when unlimited.
    pub fn queue_bound(&self) -> u64 {
        let rate = self.flow.rate();
        if rate == UNLIMITED {
            return 0;
        }
        let per_delay = u128::from(rate) * QUEUE_DELAY.as_nanos() / 1_000_000_000;
        let per_delay = u64::try_from(per_delay).unwrap_or(u64::MAX);
        per_delay.max(self.flow.burst.load(Relaxed))
    }

    fn start_wait(&mut self, now: Instant) {
        self.flow.waiting.store(true, Relaxed);
        self.waiting_since.get_or_insert(now);
    }

    fn end_wait(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.count_wait(now - since);
            self.waited = true;
        }
    }

    fn count_wait(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.flow.waited_ns.fetch_add(ns, Relaxed);
        self.limits.waited_total_ns.fetch_add(ns, Relaxed);
    }

    fn count_waited(&mut self, n: u64) {
        if std::mem::take(&mut self.waited) {
            let global = self.limits.global_row.load();
            self.flow.count_throttled(n, global.as_ref());
            self.limits.throttled_total.fetch_add(n, Relaxed);
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.count_wait(since.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saturated flow waits for a quantum instead of reading the few bytes earned
    /// since its last read.
    #[test]
    fn an_emptied_bucket_waits_for_a_quantum_not_a_few_bytes() {
        let limits = Arc::new(Limits::default());
        limits.apply(Config {
            enabled: true,
            rate: 1_000_000,
            burst: 65_536,
            ..Config::default()
        });
        let flow = limits.flow("p".into(), Some("s".into()), 1);
        let mut t = Throttle::new(flow.clone(), limits.clone());
        assert_eq!(
            t.allow(65_536),
            Ok(65_536),
            "a full bucket passes its burst"
        );
        t.passed(65_536);
        // 50 ms at 1 MB/s: unless this thread stalled that long, nothing passes.
        let wait = t.allow(65_536).expect_err("an emptied bucket waits");
        assert!(wait > Duration::from_millis(40), "{wait:?}");
        std::thread::sleep(wait);
        let n = t.allow(65_536).expect("a quantum has gathered");
        assert!(n >= 50_000, "{n}");
        t.passed(n);
        assert_eq!(
            flow.throttled.load(Relaxed),
            n as u64,
            "bytes that waited count"
        );
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// What one read costs the data path with limits far above the link: run with
    /// `cargo test --release -p sssonector-actors --lib cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn allow_and_passed_cost() {
        let limits = Arc::new(Limits::default());
        limits.apply(Config {
            enabled: true,
            rate: 10_000_000_000,
            burst: 16 << 20,
            global_rate: 40_000_000_000,
            ..Config::default()
        });
        let flow = limits.flow("p".into(), Some("s".into()), 1);
        let mut t = Throttle::new(flow, limits);
        let n = 5_000_000u32;
        let start = Instant::now();
        for _ in 0..n {
            let k = t.allow(32_000).expect("far above");
            t.passed(std::hint::black_box(k.min(100)));
        }
        println!("{:?} per read", start.elapsed() / n);
    }
}
