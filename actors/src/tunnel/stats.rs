//! The tunnel's counters, kept in one place: the data path adds to per-session
//! atomics (relaxed, no locks), and totals are the sum of the live sessions plus what
//! closed sessions left behind. `ctl status` reads them here; metrics and SNMP will too.
//!
//! Sessions starting and ending are also published as [`TunnelEvent`]s on a bounded
//! broadcast channel ([`Stats::subscribe`]), for the SNMP notifier: publishing never
//! blocks nor allocates, and a listener that falls behind loses the oldest events
//! (it learns how many) instead of slowing the tunnel.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::compress::Algorithm;
use crate::balancer::registry::{EndpointView, Endpoints};
use crate::error::ErrorCode;

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No session holds the destination address.
    NoRoute,
    /// The destination session's send queue was full (a slow peer).
    QueueFull,
    /// A client sent a packet whose source is not its inner address.
    SourceMismatch,
    /// Not an IPv4 or IPv6 packet, or too short to be one.
    Malformed,
    /// The TUN device refused the packet.
    TunWrite,
    /// The session is rate limited and its packet queue held `QUEUE_DELAY` at its
    /// rate already.
    Throttled,
    /// A client sent a packet to a destination outside its
    /// `security.client_destinations`.
    DestinationDenied,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::NoRoute,
        DropReason::QueueFull,
        DropReason::SourceMismatch,
        DropReason::Malformed,
        DropReason::TunWrite,
        DropReason::Throttled,
        DropReason::DestinationDenied,
    ];

    /// Stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no_route",
            DropReason::QueueFull => "queue_full",
            DropReason::SourceMismatch => "source_mismatch",
            DropReason::Malformed => "malformed",
            DropReason::TunWrite => "tun_write",
            DropReason::Throttled => "throttled",
            DropReason::DestinationDenied => "destination_denied",
        }
    }
}

/// Counters of one session, or of the TUN device itself (drops before any session).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes of IP packets received from the peer.
    pub bytes_in: AtomicU64,
    /// Bytes of IP packets sent to the peer.
    pub bytes_out: AtomicU64,
    /// IP packets received from the peer (a superpacket counts as its segments).
    pub packets_in: AtomicU64,
    /// IP packets sent to the peer.
    pub packets_out: AtomicU64,
    /// Bytes of frames read from the peer's TLS stream (after compression: set
    /// against `bytes_in`, what compression saved).
    pub wire_bytes_in: AtomicU64,
    /// Bytes of frames written to the peer's TLS stream.
    pub wire_bytes_out: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts one dropped packet.
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Drops so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    fn add_to(&self, sum: &mut Totals) {
        sum.bytes_in += self.bytes_in.load(Relaxed);
        sum.bytes_out += self.bytes_out.load(Relaxed);
        sum.packets_in += self.packets_in.load(Relaxed);
        sum.packets_out += self.packets_out.load(Relaxed);
        sum.wire_bytes_in += self.wire_bytes_in.load(Relaxed);
        sum.wire_bytes_out += self.wire_bytes_out.load(Relaxed);
        for (d, c) in sum.drops.iter_mut().zip(&self.drops) {
            *d += c.load(Relaxed);
        }
    }

    fn absorb(&self, other: &Counters) {
        self.bytes_in
            .fetch_add(other.bytes_in.load(Relaxed), Relaxed);
        self.bytes_out
            .fetch_add(other.bytes_out.load(Relaxed), Relaxed);
        self.packets_in
            .fetch_add(other.packets_in.load(Relaxed), Relaxed);
        self.packets_out
            .fetch_add(other.packets_out.load(Relaxed), Relaxed);
        self.wire_bytes_in
            .fetch_add(other.wire_bytes_in.load(Relaxed), Relaxed);
        self.wire_bytes_out
            .fetch_add(other.wire_bytes_out.load(Relaxed), Relaxed);
        for (d, c) in self.drops.iter().zip(&other.drops) {
            d.fetch_add(c.load(Relaxed), Relaxed);
        }
    }
}

/// A plain copy of counters, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Packets in.
    pub packets_in: u64,
    /// Packets out.
    pub packets_out: u64,
    /// Frame bytes in.
    pub wire_bytes_in: u64,
    /// Frame bytes out.
    pub wire_bytes_out: u64,
    /// Drops, in [`DropReason::ALL`] order.
    #[serde(skip)]
    pub drops: [u64; DropReason::ALL.len()],
}

impl Totals {
    fn to_json(&self) -> Value {
        let drops: serde_json::Map<String, Value> = DropReason::ALL
            .iter()
            .zip(self.drops)
            .map(|(r, n)| (r.as_str().to_string(), json!(n)))
            .collect();
        json!({
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "packets_in": self.packets_in, "packets_out": self.packets_out,
            "wire_bytes_in": self.wire_bytes_in, "wire_bytes_out": self.wire_bytes_out,
            "drops": drops,
        })
    }
}

/// Session ids: unique in this process, never reused (SNMP table indexes).
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One live session as the registry knows it.
#[derive(Debug)]
pub struct Session {
    /// Unique in this process, from 1; the SNMP peer table's index.
    pub id: u64,
    /// Certificate name of the peer.
    pub peer: String,
    /// The peer's TCP address.
    pub remote: String,
    /// The client's inner address.
    pub inner: std::net::IpAddr,
    /// When it started (wall clock, for reports).
    pub since: SystemTime,
    /// When it started (monotonic, for durations).
    pub started: Instant,
    /// The compression its frames use, if any.
    pub compression: Option<Algorithm>,
    /// Its counters, shared with its I/O tasks.
    pub counters: Arc<Counters>,
}

impl Session {
    /// A session starting now.
    pub fn starting(
        peer: String,
        remote: String,
        inner: std::net::IpAddr,
        compression: Option<Algorithm>,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_SESSION.fetch_add(1, Relaxed),
            peer,
            remote,
            inner,
            since: SystemTime::now(),
            started: Instant::now(),
            compression,
            counters,
        })
    }
}

/// Upper bounds, in seconds, of the session duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0, 604_800.0,
];

/// Handshake and session outcomes counted by code.
pub const OUTCOMES: [ErrorCode; 12] = [
    ErrorCode::TlsUntrusted,
    ErrorCode::TlsHandshake,
    ErrorCode::AccessDenied,
    ErrorCode::BadAddress,
    ErrorCode::AddressInUse,
    ErrorCode::Protocol,
    ErrorCode::PeerTimeout,
    ErrorCode::PeerClosed,
    ErrorCode::Io,
    ErrorCode::RateLimited,
    ErrorCode::ConnLimit,
    ErrorCode::Internal,
];

/// Events a [`Stats::subscribe`] receiver holds before the oldest are lost: far more
/// than sessions start or end between two sends of the slowest listener (one UDP
/// datagram per target), small enough that the slots (a few words each, allocated
/// once) cost nothing. A slot lets go of its session once every receiver read it.
pub const EVENT_CAPACITY: usize = 256;

/// A session joined or left the registry: what SNMP notifications report.
///
/// Carries the session itself (an `Arc` clone: publishing allocates nothing) so a
/// listener reads its id, peer and remote address as the peer table showed them.
/// Endpoints' health and breaker transitions have a channel of their own, in the
/// registry ([`Endpoints::subscribe`]).
#[derive(Clone, Debug)]
pub enum TunnelEvent {
    /// A session completed its handshakes and now has a row in the peer table.
    Up {
        /// The session.
        session: Arc<Session>,
    },
    /// A session ended and its row is gone.
    Down {
        /// The session.
        session: Arc<Session>,
        /// What ended it: the stable name of its [`ErrorCode`], or `"local"` when
        /// this daemon did (a stop, a shutdown).
        reason: &'static str,
    },
}

/// [`TunnelEvent::Down`]'s reason when this daemon ended the session.
pub const LOCAL_REASON: &str = "local";

/// All of the tunnel's numbers.
#[derive(Debug)]
pub struct Stats {
    /// Drops that belong to no session (e.g. no route) and what closed sessions left.
    pub base: Counters,
    sessions: Mutex<Vec<Arc<Session>>>,
    handshake_failures: [AtomicU64; OUTCOMES.len()],
    session_ends: [AtomicU64; OUTCOMES.len()],
    /// Sessions started since the daemon started.
    pub sessions_total: AtomicU64,
    /// Server: connections closed before their handshake because
    /// `tunnel.max_pending_handshakes` (or the per-source cap) were pending.
    pub handshakes_shed: AtomicU64,
    peak: AtomicU64,
    /// Client: sessions established after the first.
    pub reconnects: AtomicU64,
    /// Closed sessions' durations.
    durations: Durations,
    /// Sessions starting and ending, for [`Stats::subscribe`]; sent while the
    /// `sessions` lock is held, so a listener that sees no live session has already
    /// been sent every event.
    events: broadcast::Sender<TunnelEvent>,
    /// Layer-4 streams over every session.
    pub streams: crate::service::StreamCounters,
    /// The layer-4 services' endpoints, one row each: kept here so that metrics,
    /// SNMP and `ctl` reach them wherever they reach the tunnel's numbers.
    pub endpoints: Arc<Endpoints>,
    /// Rate limiting: policy, per-connection flows, limiter rows.
    pub limits: Arc<crate::ratelimit::Limits>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            base: Counters::default(),
            sessions: Mutex::new(Vec::new()),
            handshake_failures: Default::default(),
            session_ends: Default::default(),
            sessions_total: AtomicU64::new(0),
            handshakes_shed: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            durations: Durations::new(&DURATION_BUCKETS),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            streams: crate::service::StreamCounters::default(),
            endpoints: Arc::default(),
            limits: Arc::default(),
        }
    }
}

fn slot(code: ErrorCode) -> usize {
    OUTCOMES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(OUTCOMES.len() - 1)
}

impl Stats {
    /// Records a live session and publishes [`TunnelEvent::Up`].
    pub fn opened(&self, session: Arc<Session>) {
        let mut live = self.sessions.lock().expect("stats lock not poisoned");
        live.push(session.clone());
        self.sessions_total.fetch_add(1, Relaxed);
        self.peak.fetch_max(live.len() as u64, Relaxed);
        self.publish(TunnelEvent::Up { session });
    }

    /// Retires a session: its counters join the totals, its duration is recorded,
    /// [`TunnelEvent::Down`] is published; `code` says what ended it (`None`: this
    /// daemon did).
    pub fn closed(&self, session: &Arc<Session>, code: Option<ErrorCode>) {
        let mut live = self.sessions.lock().expect("stats lock not poisoned");
        live.retain(|s| !Arc::ptr_eq(s, session));
        self.base.absorb(&session.counters);
        self.publish(TunnelEvent::Down {
            session: session.clone(),
            reason: code.map_or(LOCAL_REASON, ErrorCode::as_str),
        });
        drop(live);
        if let Some(code) = code {
            self.session_ends[slot(code)].fetch_add(1, Relaxed);
        }
        self.durations.record(session.started.elapsed());
    }

    /// A receiver of every [`TunnelEvent`] from now on. It holds at most
    /// [`EVENT_CAPACITY`] unread events; past that the oldest are lost and its next
    /// `recv` says how many (`RecvError::Lagged`), for the listener to count.
    pub fn subscribe(&self) -> broadcast::Receiver<TunnelEvent> {
        self.events.subscribe()
    }

    /// Sends `event` to the subscribers, if any. Never blocks: the channel's slots
    /// are allocated once and a full one overwrites its oldest event.
    fn publish(&self, event: TunnelEvent) {
        // An error only says nobody listens now, which is fine.
        let _ = self.events.send(event);
    }

    /// Counts a failed TLS or session handshake.
    pub fn handshake_failed(&self, code: ErrorCode) {
        self.handshake_failures[slot(code)].fetch_add(1, Relaxed);
    }

    /// Counts a connection closed because too many handshakes were pending.
    pub fn handshake_shed(&self) {
        self.handshakes_shed.fetch_add(1, Relaxed);
    }

    /// Live sessions now.
    pub fn current(&self) -> usize {
        self.sessions.lock().expect("stats lock not poisoned").len()
    }

    /// Totals over closed and live sessions.
    pub fn totals(&self) -> Totals {
        let mut sum = Totals::default();
        self.base.add_to(&mut sum);
        for s in self
            .sessions
            .lock()
            .expect("stats lock not poisoned")
            .iter()
        {
            s.counters.add_to(&mut sum);
        }
        sum
    }

    /// A consistent copy of every number, for metrics and SNMP.
    pub fn snapshot(&self) -> Snapshot {
        let live = self.sessions.lock().expect("stats lock not poisoned");
        let peers: Vec<PeerView> = live
            .iter()
            .map(|s| {
                let mut counters = Totals::default();
                s.counters.add_to(&mut counters);
                PeerView {
                    id: s.id,
                    peer: s.peer.clone(),
                    remote: s.remote.clone(),
                    inner: s.inner,
                    compression: s.compression,
                    since: s.since,
                    seconds: s.started.elapsed().as_secs(),
                    counters,
                }
            })
            .collect();
        let mut totals = Totals::default();
        self.base.add_to(&mut totals);
        for s in live.iter() {
            s.counters.add_to(&mut totals);
        }
        drop(live);
        let by_code = |counts: &[AtomicU64]| -> Vec<(ErrorCode, u64)> {
            OUTCOMES
                .iter()
                .zip(counts)
                .map(|(c, n)| (*c, n.load(Relaxed)))
                .collect()
        };
        Snapshot {
            totals,
            current: peers.len() as u64,
            peers,
            peak: self.peak.load(Relaxed),
            total: self.sessions_total.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            handshake_failures: by_code(&self.handshake_failures),
            ended_by: by_code(&self.session_ends),
            durations: self.durations.histogram(),
            endpoints: self.endpoints.snapshot(),
        }
    }

    /// Everything, for `ctl status`.
    pub fn to_json(&self) -> Value {
        let s = self.snapshot();
        let by_code = |counts: &[(ErrorCode, u64)]| -> Value {
            counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| (c.as_str().to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let peers: Vec<Value> = s
            .peers
            .iter()
            .map(|p| {
                json!({
                    "peer": p.peer, "remote": p.remote, "inner": p.inner.to_string(),
                    "since": humantime::format_rfc3339_seconds(p.since).to_string(),
                    "duration_seconds": p.seconds,
                    "compression": p.compression.map_or("none", Algorithm::as_str),
                    "counters": p.counters.to_json(),
                })
            })
            .collect();
        let mean = s.durations.sum_seconds / s.durations.count.max(1) as f64;
        json!({
            "sessions": {
                "current": s.current,
                "peak": s.peak,
                "total": s.total,
                "closed": s.durations.count,
                "mean_duration_seconds": mean,
                "ended_by": by_code(&s.ended_by),
            },
            "reconnects": s.reconnects,
            "handshake_failures": by_code(&s.handshake_failures),
            "handshakes_shed": self.handshakes_shed.load(Relaxed),
            "totals": s.totals.to_json(),
            "peers": peers,
            "streams": self.streams.snapshot().to_json(),
        })
    }
}

/// A copy of the tunnel's numbers at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Totals over closed and live sessions, and drops outside sessions.
    pub totals: Totals,
    /// Live sessions.
    pub peers: Vec<PeerView>,
    /// Live sessions now.
    pub current: u64,
    /// Most live sessions at once.
    pub peak: u64,
    /// Sessions started.
    pub total: u64,
    /// Client: sessions after the first.
    pub reconnects: u64,
    /// Failed handshakes by code, in [`OUTCOMES`] order.
    pub handshake_failures: Vec<(ErrorCode, u64)>,
    /// Ended sessions by code, in [`OUTCOMES`] order (sessions this daemon ended are
    /// not in it).
    pub ended_by: Vec<(ErrorCode, u64)>,
    /// Durations of closed sessions.
    pub durations: DurationHistogram,
    /// The services' endpoints, by index.
    pub endpoints: Vec<EndpointView>,
}

/// One live session.
#[derive(Clone, Debug)]
pub struct PeerView {
    /// Its process-unique id.
    pub id: u64,
    /// The peer's certificate name.
    pub peer: String,
    /// The peer's TCP address.
    pub remote: String,
    /// The client's inner address.
    pub inner: std::net::IpAddr,
    /// Its compression.
    pub compression: Option<Algorithm>,
    /// When it started (wall clock).
    pub since: SystemTime,
    /// Seconds since it started.
    pub seconds: u64,
    /// Its counters.
    pub counters: Totals,
}

/// Durations counted into fixed buckets: recording costs three relaxed atomic adds,
/// reading gives a cumulative [`DurationHistogram`]. Sessions, streams and each
/// endpoint's streams keep one.
#[derive(Debug)]
pub struct Durations {
    /// Upper bounds of the buckets, in seconds, ascending.
    bounds: &'static [f64],
    /// Per bucket, not cumulative; longer ones are in none.
    counts: Box<[AtomicU64]>,
    total_ms: AtomicU64,
    count: AtomicU64,
}

impl Durations {
    /// A recorder with buckets up to each of `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            total_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one that lasted `lasted`.
    pub fn record(&self, lasted: std::time::Duration) {
        let ms = u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX);
        self.total_ms.fetch_add(ms, Relaxed);
        let secs = lasted.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
    }

    /// What was recorded so far.
    pub fn histogram(&self) -> DurationHistogram {
        let mut cumulative = 0;
        DurationHistogram {
            buckets: self
                .bounds
                .iter()
                .zip(&*self.counts)
                .map(|(bound, n)| {
                    cumulative += n.load(Relaxed);
                    (*bound, cumulative)
                })
                .collect(),
            count: self.count.load(Relaxed),
            sum_seconds: self.total_ms.load(Relaxed) as f64 / 1000.0,
        }
    }
}

/// Recorded durations at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DurationHistogram {
    /// (upper bound in seconds, how many lasted at most that long), cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// How many were recorded.
    pub count: u64,
    /// Their durations added up, in seconds.
    pub sum_seconds: f64,
}

/// A session of peer `peer` from 192.0.2.1:4000 with inner address 10.0.0.2, opened
/// in `stats`: what the tests of every part that reads sessions start from.
#[cfg(test)]
pub(crate) fn test_session(stats: &Stats, peer: &str) -> Arc<Session> {
    let s = Session::starting(
        peer.into(),
        "192.0.2.1:4000".into(),
        "10.0.0.2".parse().expect("ip"),
        None,
        Arc::default(),
    );
    stats.opened(s.clone());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(stats: &Stats) -> Arc<Session> {
        test_session(stats, "c1")
    }

    #[test]
    fn totals_keep_what_closed_sessions_counted() {
        let stats = Stats::default();
        let a = session(&stats);
        let b = session(&stats);
        a.counters.bytes_in.fetch_add(100, Relaxed);
        b.counters.bytes_in.fetch_add(20, Relaxed);
        b.counters.drop_packet(DropReason::QueueFull);
        stats.base.drop_packet(DropReason::NoRoute);
        assert_eq!(stats.current(), 2);
        stats.closed(&a, Some(ErrorCode::PeerClosed));
        let t = stats.totals();
        assert_eq!(t.bytes_in, 120);
        assert_eq!(t.drops[DropReason::QueueFull as usize], 1);
        assert_eq!(t.drops[DropReason::NoRoute as usize], 1);
        let json = stats.to_json();
        assert_eq!(json["sessions"]["current"], 1);
        assert_eq!(json["sessions"]["peak"], 2);
        assert_eq!(json["sessions"]["total"], 2);
        assert_eq!(json["sessions"]["ended_by"]["E_PEER_CLOSED"], 1);
        assert_eq!(json["totals"]["drops"]["queue_full"], 1);
    }

    #[test]
    fn a_snapshot_agrees_with_the_report_and_counts_durations() {
        let stats = Stats::default();
        let a = session(&stats);
        let b = session(&stats);
        assert!(b.id > a.id, "ids grow");
        b.counters.packets_out.fetch_add(7, Relaxed);
        stats.closed(&a, None);
        let snap = stats.snapshot();
        assert_eq!((snap.current, snap.peak, snap.total), (1, 2, 2));
        assert_eq!(snap.peers[0].id, b.id);
        assert_eq!(snap.peers[0].counters.packets_out, 7);
        assert_eq!(snap.totals, stats.totals());
        // A session closed at once lies in the first bucket and every later one.
        assert_eq!(snap.durations.count, 1);
        assert!(snap.durations.buckets.iter().all(|(_, n)| *n == 1));
    }

    #[test]
    fn subscribers_hear_sessions_start_and_end_with_the_reason() {
        let stats = Stats::default();
        let quiet = session(&stats);
        let mut rx = stats.subscribe();
        let a = session(&stats);
        stats.closed(&a, Some(ErrorCode::PeerTimeout));
        stats.closed(&quiet, None);
        match rx.try_recv().expect("up") {
            TunnelEvent::Up { session } => assert!(Arc::ptr_eq(&session, &a)),
            other => panic!("{other:?}"),
        }
        match rx.try_recv().expect("down") {
            TunnelEvent::Down { session, reason } => {
                assert_eq!((session.id, reason), (a.id, "E_PEER_TIMEOUT"));
            }
            other => panic!("{other:?}"),
        }
        match rx.try_recv().expect("down") {
            TunnelEvent::Down { reason, .. } => assert_eq!(reason, LOCAL_REASON),
            other => panic!("{other:?}"),
        }
        assert!(
            rx.is_empty(),
            "a session opened before subscribing is not news"
        );
    }

    #[test]
    fn a_lagging_subscriber_loses_the_oldest_events_and_learns_how_many() {
        use tokio::sync::broadcast::error::TryRecvError;
        let stats = Stats::default();
        let mut rx = stats.subscribe();
        let first = session(&stats);
        for _ in 0..EVENT_CAPACITY {
            let s = session(&stats);
            stats.closed(&s, None);
        }
        // 1 + 2 * capacity events sent, the newest `capacity` kept.
        assert_eq!(
            rx.try_recv().map(|_| ()),
            Err(TryRecvError::Lagged(EVENT_CAPACITY as u64 + 1))
        );
        assert_eq!(rx.len(), EVENT_CAPACITY);
        assert!(stats.current() == 1 && first.id > 0);
    }
}
