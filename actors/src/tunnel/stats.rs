//! The tunnel's counters, kept in one place: the data path adds to per-session
//! atomics (relaxed, no locks), and totals are the sum of the live sessions plus what
//! closed sessions left behind. `ctl status` reads them here; metrics and SNMP will too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use super::compress::Algorithm;
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
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 5] = [
        DropReason::NoRoute,
        DropReason::QueueFull,
        DropReason::SourceMismatch,
        DropReason::Malformed,
        DropReason::TunWrite,
    ];

    /// Stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no_route",
            DropReason::QueueFull => "queue_full",
            DropReason::SourceMismatch => "source_mismatch",
            DropReason::Malformed => "malformed",
            DropReason::TunWrite => "tun_write",
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

/// One live session as the registry knows it.
#[derive(Debug)]
pub struct Session {
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

/// Handshake and session outcomes counted by code.
const OUTCOMES: [ErrorCode; 10] = [
    ErrorCode::TlsUntrusted,
    ErrorCode::TlsHandshake,
    ErrorCode::AccessDenied,
    ErrorCode::BadAddress,
    ErrorCode::AddressInUse,
    ErrorCode::Protocol,
    ErrorCode::PeerTimeout,
    ErrorCode::PeerClosed,
    ErrorCode::Io,
    ErrorCode::Internal,
];

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
    peak: AtomicU64,
    /// Client: sessions established after the first.
    pub reconnects: AtomicU64,
    duration_total_ms: AtomicU64,
    closed: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            base: Counters::default(),
            sessions: Mutex::new(Vec::new()),
            handshake_failures: Default::default(),
            session_ends: Default::default(),
            sessions_total: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            duration_total_ms: AtomicU64::new(0),
            closed: AtomicU64::new(0),
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
    /// Records a live session.
    pub fn opened(&self, session: Arc<Session>) {
        let mut live = self.sessions.lock().expect("stats lock not poisoned");
        live.push(session);
        self.sessions_total.fetch_add(1, Relaxed);
        self.peak.fetch_max(live.len() as u64, Relaxed);
    }

    /// Retires a session: its counters join the totals, its duration is recorded;
    /// `code` says what ended it (`None`: this daemon did).
    pub fn closed(&self, session: &Arc<Session>, code: Option<ErrorCode>) {
        let mut live = self.sessions.lock().expect("stats lock not poisoned");
        live.retain(|s| !Arc::ptr_eq(s, session));
        self.base.absorb(&session.counters);
        drop(live);
        if let Some(code) = code {
            self.session_ends[slot(code)].fetch_add(1, Relaxed);
        }
        let ms = u64::try_from(session.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.duration_total_ms.fetch_add(ms, Relaxed);
        self.closed.fetch_add(1, Relaxed);
    }

    /// Counts a failed TLS or session handshake.
    pub fn handshake_failed(&self, code: ErrorCode) {
        self.handshake_failures[slot(code)].fetch_add(1, Relaxed);
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

    /// Everything, for `ctl status`.
    pub fn to_json(&self) -> Value {
        let by_code = |counts: &[AtomicU64]| -> Value {
            OUTCOMES
                .iter()
                .zip(counts)
                .filter(|(_, n)| n.load(Relaxed) > 0)
                .map(|(c, n)| (c.as_str().to_string(), json!(n.load(Relaxed))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let live = self.sessions.lock().expect("stats lock not poisoned");
        let sessions: Vec<Value> = live
            .iter()
            .map(|s| {
                let mut t = Totals::default();
                s.counters.add_to(&mut t);
                json!({
                    "peer": s.peer, "remote": s.remote, "inner": s.inner.to_string(),
                    "since": humantime::format_rfc3339_seconds(s.since).to_string(),
                    "duration_seconds": s.started.elapsed().as_secs(),
                    "compression": s.compression.map(Algorithm::as_str),
                    "counters": t.to_json(),
                })
            })
            .collect();
        let current = live.len();
        drop(live);
        let closed = self.closed.load(Relaxed);
        let mean = Duration::from_millis(
            self.duration_total_ms
                .load(Relaxed)
                .checked_div(closed)
                .unwrap_or(0),
        );
        json!({
            "sessions": {
                "current": current,
                "peak": self.peak.load(Relaxed),
                "total": self.sessions_total.load(Relaxed),
                "closed": closed,
                "mean_duration_seconds": mean.as_secs_f64(),
                "ended_by": by_code(&self.session_ends),
            },
            "reconnects": self.reconnects.load(Relaxed),
            "handshake_failures": by_code(&self.handshake_failures),
            "totals": self.totals().to_json(),
            "peers": sessions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(stats: &Stats) -> Arc<Session> {
        let s = Session::starting(
            "c1".into(),
            "192.0.2.1:4000".into(),
            "10.0.0.2".parse().expect("ip"),
            None,
            Arc::default(),
        );
        stats.opened(s.clone());
        s
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
}
