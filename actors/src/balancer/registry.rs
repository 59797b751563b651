//! The per-endpoint numbers of every service, kept in one place: [`Endpoints`] holds
//! one [`EndpointRow`] of atomics per endpoint, which the Balancer and Breaker actors
//! (health, breaker state, stream starts) and the stream data path (bytes, per read)
//! write, and which `ctl endpoints`, Prometheus and the SNMP `sssEndpointTable` read
//! through [`Endpoints::snapshot`]. Nothing is counted twice, so they always agree.
//!
//! A row is found by (service, address) and keeps its SNMP index for as long as it
//! exists; indexes count up from 1 and are never reused (the MIB promises it until
//! the 32-bit space wraps). Writers hold an `Arc` to their row and never take the
//! registry's lock: only creating, retiring and reading a snapshot do.
//!
//! A retired row (its endpoint was removed, by reload or by `ctl`) stays visible
//! while streams still use it, so their bytes keep showing, and disappears at the
//! first snapshot after its last stream ended. Re-adding the endpoint before then
//! revives the same row with its numbers.
//!
//! Health and breaker transitions are also published as [`EndpointEvent`]s on a
//! bounded broadcast channel ([`Endpoints::subscribe`]), for the SNMP notifier: as
//! with the tunnel's events, publishing never blocks, and a listener that falls
//! behind loses the oldest events and learns how many.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::tunnel::stats::{Counters, DurationHistogram, Durations};
use tokio::sync::broadcast;

/// Upper bounds, in seconds, of the stream duration histogram's buckets: streams run
/// from a single request (milliseconds) to long-lived sessions (a day).
pub const STREAM_DURATION_BUCKETS: [f64; 10] = [
    0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0,
];

/// Events an [`Endpoints::subscribe`] receiver holds before the oldest are lost: far
/// more than health checks and breakers flip between two sends of the slowest
/// listener.
pub const EVENT_CAPACITY: usize = 256;

/// What changed about an endpoint: the transitions SNMP notifications report
/// (SSSONECTOR-MIB's sssEndpointDown, sssEndpointUp, sssBreakerOpened,
/// sssBreakerClosed). A breaker's half-opening is no news to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointChange {
    /// The health checks now consider it down.
    Down,
    /// The health checks now consider it up again.
    Up,
    /// Its breaker opened.
    BreakerOpened,
    /// Its breaker closed (trials succeeded, a reset, a restart of the breaker).
    BreakerClosed,
}

/// An endpoint's transition, with the row that names it: its index (the instance of
/// the notification's objects), service and address, copied so that an event never
/// keeps a row alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEvent {
    /// The row's `sssEndpointTable` index.
    pub index: u32,
    /// The service.
    pub service: String,
    /// The endpoint's `host:port`.
    pub address: String,
    /// What happened.
    pub change: EndpointChange,
}

/// An endpoint's circuit breaker state as the registry stores it: the values of the
/// What the health checks know of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet since it was added.
    Unknown,
    /// The checks find it up.
    Healthy,
    /// The checks find it down.
    Unhealthy,
}

/// MIB's `sssEndpointBreakerState` (closed(1), open(2), halfOpen(3)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed = 1,
    /// Calls are rejected.
    Open = 2,
    /// Trial calls decide.
    HalfOpen = 3,
}

impl BreakerState {
    /// The name in `ctl` replies: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            2 => BreakerState::Open,
            3 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

impl From<crate::breaker::machine::State> for BreakerState {
    fn from(s: crate::breaker::machine::State) -> Self {
        use crate::breaker::machine::State;
        match s {
            State::Closed => BreakerState::Closed,
            State::Open => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// The numbers of one endpoint of one service. Every counter is a relaxed atomic:
/// each is exact on its own, and a snapshot may see one a moment newer than another.
#[derive(Debug)]
pub struct EndpointRow {
    /// The `sssEndpointTable` index: stable for the row's life, never reused.
    pub index: u32,
    /// The service's name.
    pub service: String,
    /// The endpoint's `host:port`, as configured.
    pub address: String,
    /// When the registry was made: `last_check_ms` counts from it.
    origin: Instant,
    weight: AtomicU32,
    healthy: AtomicBool,
    /// A health check came back since the balancer took the endpoint on: until
    /// then its health is `unknown` (the pool still offers it, as it has nothing
    /// against it).
    known: AtomicBool,
    draining: AtomicBool,
    breaker: AtomicU8,
    /// Streams connected and not yet finished.
    active: AtomicU64,
    /// Streams connected since the row appeared.
    total: AtomicU64,
    /// Most streams at once.
    peak: AtomicU64,
    /// Connects by streams that failed or timed out (health checks not included).
    connect_failures: AtomicU64,
    /// Streams the breaker turned away.
    breaker_rejections: AtomicU64,
    /// Times the breaker opened.
    breaker_opened: AtomicU64,
    /// Bytes from the endpoint towards the client.
    bytes_in: AtomicU64,
    /// Bytes sent to the endpoint.
    bytes_out: AtomicU64,
    /// The live tunnel session to this endpoint (the client's `tunnel` rows): its
    /// frame bytes count as the row's without a second count on the data path, and
    /// are added to `bytes_in`/`bytes_out` when it ends ([`Self::carry`]).
    session: Mutex<Option<Arc<Counters>>>,
    /// Health checks made, and those that failed.
    checks: AtomicU64,
    failed_checks: AtomicU64,
    /// Milliseconds after `origin` of the last check, plus one; 0: none yet.
    last_check_ms: AtomicU64,
    /// Removed from the configuration: gone once `active` is 0.
    retired: AtomicBool,
    /// Finished streams' durations.
    durations: Durations,
    /// The registry's event channel, for [`Self::announce`].
    events: broadcast::Sender<EndpointEvent>,
}

impl EndpointRow {
    fn new(
        index: u32,
        service: &str,
        address: &str,
        weight: u32,
        origin: Instant,
        events: broadcast::Sender<EndpointEvent>,
    ) -> Self {
        Self {
            events,
            index,
            service: service.to_owned(),
            address: address.to_owned(),
            origin,
            weight: AtomicU32::new(weight.max(1)),
            healthy: AtomicBool::new(true),
            known: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            breaker: AtomicU8::new(BreakerState::Closed as u8),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            breaker_rejections: AtomicU64::new(0),
            breaker_opened: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            session: Mutex::new(None),
            checks: AtomicU64::new(0),
            failed_checks: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            durations: Durations::new(&STREAM_DURATION_BUCKETS),
        }
    }

    /// Counts the frame bytes of the tunnel session `counters` (or of none) as the
    /// row's from now on; the bytes of the session it replaces stay counted.
    pub fn carry(&self, counters: Option<Arc<Counters>>) {
        let ended = std::mem::replace(
            &mut *self.session.lock().unwrap_or_else(|e| e.into_inner()),
            counters,
        );
        if let Some(c) = ended {
            self.add_in(c.wire_bytes_in.load(Relaxed));
            self.add_out(c.wire_bytes_out.load(Relaxed));
        }
    }

    /// Counts `n` bytes read from the endpoint (towards the client).
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }

    /// Counts `n` bytes written to the endpoint.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }

    /// Whether the health checks consider it up.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Its breaker's state.
    pub fn breaker(&self) -> BreakerState {
        BreakerState::from_u8(self.breaker.load(Relaxed))
    }

    /// Streams connected and not yet finished.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// A stream connected to it.
    pub(crate) fn stream_started(&self) {
        let now = self.active.fetch_add(1, Relaxed) + 1;
        self.total.fetch_add(1, Relaxed);
        self.peak.fetch_max(now, Relaxed);
    }

    /// A stream that [started](Self::stream_started) ended after `lasted`.
    pub(crate) fn stream_finished(&self, lasted: Duration) {
        // Never below zero, even if a bug finished a stream twice.
        let _ = self
            .active
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        self.durations.record(lasted);
    }

    pub(crate) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn breaker_rejected(&self) {
        self.breaker_rejections.fetch_add(1, Relaxed);
    }

    /// Records the breaker's new state; counts an opening.
    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state as u8, Relaxed);
        if state == BreakerState::Open {
            self.breaker_opened.fetch_add(1, Relaxed);
        }
    }

    /// Publishes `change` of this endpoint to the registry's subscribers, if any.
    /// Called by whoever records the transition (the balancer for health, the
    /// breaker for its state), next to its log line.
    pub(crate) fn announce(&self, change: EndpointChange) {
        // An error only says nobody listens now, which is fine.
        let _ = self.events.send(EndpointEvent {
            index: self.index,
            service: self.service.clone(),
            address: self.address.clone(),
            change,
        });
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    /// The balancer took the endpoint on afresh: unchecked, so `unknown`.
    pub(crate) fn set_unknown(&self) {
        self.known.store(false, Relaxed);
    }

    /// `unknown` until the first check, then the checks' verdict.
    pub fn health(&self) -> Health {
        match (self.known.load(Relaxed), self.healthy()) {
            (false, _) => Health::Unknown,
            (true, true) => Health::Healthy,
            (true, false) => Health::Unhealthy,
        }
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Relaxed);
    }

    /// Records a health check's result made at `now`.
    pub(crate) fn checked(&self, ok: bool, now: Instant) {
        self.checks.fetch_add(1, Relaxed);
        self.known.store(true, Relaxed);
        if !ok {
            self.failed_checks.fetch_add(1, Relaxed);
        }
        let ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX - 1);
        self.last_check_ms.store(ms + 1, Relaxed);
    }

    /// A copy of every number now.
    pub fn view(&self) -> EndpointView {
        let last = self.last_check_ms.load(Relaxed);
        let now_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (live_in, live_out) = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or((0, 0), |c| {
                (
                    c.wire_bytes_in.load(Relaxed),
                    c.wire_bytes_out.load(Relaxed),
                )
            });
        EndpointView {
            index: self.index,
            service: self.service.clone(),
            address: self.address.clone(),
            weight: self.weight.load(Relaxed),
            healthy: self.healthy(),
            health: self.health(),
            draining: self.draining.load(Relaxed),
            breaker: self.breaker(),
            active: self.active(),
            total: self.total.load(Relaxed),
            peak: self.peak.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            breaker_rejections: self.breaker_rejections.load(Relaxed),
            breaker_opened: self.breaker_opened.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed) + live_in,
            bytes_out: self.bytes_out.load(Relaxed) + live_out,
            checks: self.checks.load(Relaxed),
            failed_checks: self.failed_checks.load(Relaxed),
            last_check_ms_ago: (last > 0).then(|| now_ms.saturating_sub(last - 1)),
            durations: self.durations.histogram(),
        }
    }
}

/// One endpoint's numbers at one moment: a `ctl endpoints` entry, a Prometheus
/// sample set, an `sssEndpointTable` row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointView {
    /// The `sssEndpointTable` index.
    pub index: u32,
    /// The service.
    pub service: String,
    /// The endpoint's `host:port`.
    pub address: String,
    /// Its weight under weighted round robin.
    pub weight: u32,
    /// The health checks' verdict (true until one says otherwise: the pool's view).
    pub healthy: bool,
    /// The same, `unknown` until the first check.
    pub health: Health,
    /// Whether an operator is draining it.
    pub draining: bool,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Streams connected now.
    pub active: u64,
    /// Streams connected since the row appeared.
    pub total: u64,
    /// Most streams at once.
    pub peak: u64,
    /// Stream connects that failed.
    pub connect_failures: u64,
    /// Streams its breaker turned away.
    pub breaker_rejections: u64,
    /// Times its breaker opened.
    pub breaker_opened: u64,
    /// Bytes from the endpoint towards clients.
    pub bytes_in: u64,
    /// Bytes sent to the endpoint.
    pub bytes_out: u64,
    /// Health checks made.
    pub checks: u64,
    /// Health checks that failed.
    pub failed_checks: u64,
    /// Milliseconds since the last health check; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_ms_ago: Option<u64>,
    /// Durations of finished streams.
    pub durations: DurationHistogram,
}

/// Every endpoint row of every service; share it as `Arc<Endpoints>` (it is in
/// [`Stats`](crate::tunnel::stats::Stats)).
#[derive(Debug)]
pub struct Endpoints {
    origin: Instant,
    inner: Mutex<Inner>,
    /// Health and breaker transitions, for [`Endpoints::subscribe`].
    events: broadcast::Sender<EndpointEvent>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By index, ascending: new rows get the largest index, so pushing keeps order.
    rows: Vec<Arc<EndpointRow>>,
    /// The last index given out.
    last: u32,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            inner: Mutex::default(),
            events: broadcast::Sender::new(EVENT_CAPACITY),
        }
    }
}

impl Endpoints {
    /// The row of `address` in `service`, made with the next index if there is none.
    /// A row retired while streams still used it comes back with its numbers. Its
    /// weight is set to `weight`.
    pub fn row(&self, service: &str, address: &str, weight: u32) -> Arc<EndpointRow> {
        let mut inner = self.inner.lock().expect("registry lock not poisoned");
        if let Some(row) = inner
            .rows
            .iter()
            .find(|r| r.service == service && r.address == address)
        {
            row.retired.store(false, Relaxed);
            row.set_weight(weight);
            return row.clone();
        }
        // 0 is not a valid index: after the 32-bit space wraps, start again at 1.
        inner.last = inner.last.checked_add(1).unwrap_or(1);
        let row = Arc::new(EndpointRow::new(
            inner.last,
            service,
            address,
            weight,
            self.origin,
            self.events.clone(),
        ));
        let at = inner.rows.partition_point(|r| r.index < row.index);
        inner.rows.insert(at, row.clone());
        row
    }

    /// The endpoint was removed: its row goes now if it has no streams, else once
    /// the last one ended.
    pub fn retire(&self, service: &str, address: &str) {
        let mut inner = self.inner.lock().expect("registry lock not poisoned");
        inner.rows.retain(|r| {
            if r.service != service || r.address != address {
                return true;
            }
            r.retired.store(true, Relaxed);
            r.active() > 0
        });
    }

    /// A receiver of every [`EndpointEvent`] from now on. It holds at most
    /// [`EVENT_CAPACITY`] unread events; past that the oldest are lost and its next
    /// `recv` says how many (`RecvError::Lagged`), for the listener to count.
    pub fn subscribe(&self) -> broadcast::Receiver<EndpointEvent> {
        self.events.subscribe()
    }

    /// Every row now, by index; rows retired and idle since are dropped first.
    pub fn snapshot(&self) -> Vec<EndpointView> {
        let mut inner = self.inner.lock().expect("registry lock not poisoned");
        inner
            .rows
            .retain(|r| !(r.retired.load(Relaxed) && r.active() == 0));
        inner.rows.iter().map(|r| r.view()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_stable_indexes_that_are_never_reused() {
        let e = Endpoints::default();
        let a = e.row("web", "10.0.0.1:80", 1);
        let b = e.row("web", "10.0.0.2:80", 2);
        let c = e.row("db", "10.0.0.1:80", 1);
        assert_eq!((a.index, b.index, c.index), (1, 2, 3));
        assert!(Arc::ptr_eq(&a, &e.row("web", "10.0.0.1:80", 5)));
        assert_eq!(a.view().weight, 5, "getting a row again sets its weight");
        e.retire("web", "10.0.0.1:80");
        let again = e.row("web", "10.0.0.1:80", 1);
        assert_eq!(
            again.index, 4,
            "a retired idle row is gone; its index is not reused"
        );
        let indexes: Vec<u32> = e.snapshot().iter().map(|v| v.index).collect();
        assert_eq!(indexes, [2, 3, 4]);
    }

    #[test]
    fn a_retired_row_stays_while_streams_use_it() {
        let e = Endpoints::default();
        let row = e.row("web", "a:1", 1);
        row.stream_started();
        e.retire("web", "a:1");
        assert_eq!(e.snapshot().len(), 1, "a stream still runs");
        row.add_in(10);
        row.stream_finished(Duration::from_millis(5));
        assert!(e.snapshot().is_empty(), "gone after its last stream");
    }

    #[test]
    fn re_adding_before_the_last_stream_ends_revives_the_row() {
        let e = Endpoints::default();
        let row = e.row("web", "a:1", 1);
        row.stream_started();
        e.retire("web", "a:1");
        let back = e.row("web", "a:1", 1);
        assert!(Arc::ptr_eq(&row, &back));
        row.stream_finished(Duration::ZERO);
        assert_eq!(e.snapshot().len(), 1);
    }

    #[test]
    fn a_carried_session_counts_live_and_stays_counted_after_it_ends() {
        let e = Endpoints::default();
        let row = e.row("tunnel", "s:1", 1);
        row.add_in(5);
        let first = Arc::new(Counters::default());
        row.carry(Some(first.clone()));
        first.wire_bytes_in.store(100, Relaxed);
        first.wire_bytes_out.store(40, Relaxed);
        assert_eq!((row.view().bytes_in, row.view().bytes_out), (105, 40));
        let second = Arc::new(Counters::default());
        row.carry(Some(second.clone()));
        second.wire_bytes_in.store(1, Relaxed);
        row.carry(None);
        first.wire_bytes_in.store(999, Relaxed);
        assert_eq!((row.view().bytes_in, row.view().bytes_out), (106, 40));
    }

    #[test]
    fn the_view_counts_streams_bytes_checks_and_durations() {
        let e = Endpoints::default();
        let row = e.row("web", "a:1", 1);
        row.stream_started();
        row.stream_started();
        row.stream_finished(Duration::from_millis(50));
        row.stream_started();
        row.add_in(100);
        row.add_out(7);
        row.connect_failed();
        row.breaker_rejected();
        row.set_breaker(BreakerState::Open);
        row.set_breaker(BreakerState::HalfOpen);
        row.checked(false, Instant::now());
        row.set_healthy(false);
        row.stream_finished(Duration::from_secs(2));
        row.stream_finished(Duration::from_secs(2));
        row.stream_finished(Duration::from_secs(2));
        let v = &e.snapshot()[0];
        assert_eq!((v.active, v.total, v.peak), (0, 3, 2));
        assert_eq!((v.bytes_in, v.bytes_out), (100, 7));
        assert_eq!(
            (v.connect_failures, v.breaker_rejections, v.breaker_opened),
            (1, 1, 1)
        );
        assert_eq!(v.breaker, BreakerState::HalfOpen);
        assert_eq!((v.checks, v.failed_checks, v.healthy), (1, 1, false));
        assert_eq!(v.health, Health::Unhealthy);
        assert!(v.last_check_ms_ago.is_some_and(|ms| ms < 1000));
        assert_eq!(v.durations.count, 4);
        // 50 ms lies in the 0.1 s bucket and beyond; 2 s from the 10 s bucket on.
        assert_eq!(v.durations.buckets[0], (0.01, 0));
        assert_eq!(v.durations.buckets[1], (0.1, 1));
        assert_eq!(v.durations.buckets[3], (10.0, 4));
        let json = serde_json::to_value(v).expect("serializes");
        assert_eq!(json["breaker"], "half_open");
    }

    #[test]
    fn announcements_name_the_row_and_reach_every_subscriber() {
        let e = Endpoints::default();
        let _first = e.row("web", "a:1", 1);
        let row = e.row("web", "b:2", 1);
        row.announce(EndpointChange::Down);
        let mut rx = e.subscribe();
        row.announce(EndpointChange::BreakerOpened);
        assert_eq!(
            rx.try_recv().expect("an event"),
            EndpointEvent {
                index: 2,
                service: "web".into(),
                address: "b:2".into(),
                change: EndpointChange::BreakerOpened,
            }
        );
        assert!(rx.try_recv().is_err(), "nothing from before subscribing");
    }

    #[test]
    fn a_new_row_has_no_check_yet() {
        let e = Endpoints::default();
        let v = e.row("web", "a:1", 0).view();
        assert_eq!((v.weight, v.last_check_ms_ago), (1, None));
        assert!(serde_json::to_value(&v)
            .expect("serializes")
            .get("last_check_ms_ago")
            .is_none());
    }

    #[test]
    fn health_is_unknown_until_the_first_check_and_again_when_taken_on_afresh() {
        let e = Endpoints::default();
        let row = e.row("web", "a:1", 1);
        assert_eq!(row.view().health, Health::Unknown);
        assert!(row.view().healthy, "the pool still offers it");
        row.checked(true, Instant::now());
        assert_eq!(row.view().health, Health::Healthy);
        row.set_unknown();
        assert_eq!(row.view().health, Health::Unknown);
    }
}
