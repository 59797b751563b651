//! Layer-4 services: TCP streams forwarded over the tunnel.
//!
//! On the client, one [`ServiceListener`] per entry in `services` accepts local TCP
//! connections; each becomes a stream over the current tunnel session ([`mux`]),
//! tagged with the service's name. On the server, the session's read task takes each
//! `StreamOpen` and asks that service's Balancer for a connected endpoint
//! (`crate::balancer`), then moves the bytes. [`Streams`] is what every session
//! shares: the service table, the limit and the client's current session;
//! [`StreamCounters`] holds the numbers.

pub mod mux;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde_json::{json, Value};
use slog::{debug, info, warn, Logger};
use sssonector_config::Config;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::mux::{Ending, Mux, Stream};
use crate::balancer::Balancer;
use crate::drain::{Drain, DrainToken};
use crate::error::ErrorCode;
use crate::tunnel::access::AllowList;
use crate::tunnel::handshake::tune_socket;
use crate::tunnel::hub::Hub;
use crate::tunnel::stats::{DurationHistogram, Durations};

/// Codes a stream can be refused or reset with, in counter order; anything else is
/// counted as the last.
pub const STREAM_CODES: [ErrorCode; 10] = [
    ErrorCode::ConnLimit,
    ErrorCode::RateLimited,
    ErrorCode::UnknownService,
    ErrorCode::AccessDenied,
    ErrorCode::NoEndpoint,
    ErrorCode::BreakerOpen,
    ErrorCode::Connect,
    ErrorCode::StreamReset,
    ErrorCode::Protocol,
    ErrorCode::Internal,
];

fn slot(code: ErrorCode) -> usize {
    STREAM_CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(STREAM_CODES.len() - 1)
}

/// Upper bounds, in seconds, of the stream duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 10] =
    [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0];

/// The streams' numbers, over every session: the one place `ctl`, Prometheus and
/// SNMP read them from.
#[derive(Debug)]
pub struct StreamCounters {
    active: AtomicU64,
    total: AtomicU64,
    peak: AtomicU64,
    refused: [AtomicU64; STREAM_CODES.len()],
    reset: [AtomicU64; STREAM_CODES.len()],
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    durations: Durations,
    /// Live streams, for `ctl connections`: touched once at each stream's start
    /// and end, never per byte.
    live: Mutex<HashMap<usize, Weak<Stream>>>,
}

impl Default for StreamCounters {
    fn default() -> Self {
        Self {
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: Default::default(),
            reset: Default::default(),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            durations: Durations::new(&DURATION_BUCKETS),
            live: Mutex::default(),
        }
    }
}

impl StreamCounters {
    /// Lists `stream` in [`StreamCounters::live`] until [`StreamCounters::untrack`].
    pub(crate) fn track(&self, stream: &Arc<Stream>) {
        let key = Arc::as_ptr(stream) as usize;
        self.live
            .lock()
            .expect("live lock not poisoned")
            .insert(key, Arc::downgrade(stream));
    }

    pub(crate) fn untrack(&self, stream: &Stream) {
        let key = std::ptr::from_ref(stream) as usize;
        self.live
            .lock()
            .expect("live lock not poisoned")
            .remove(&key);
    }

    /// Up to `limit` live streams, oldest first, for `ctl connections`.
    pub fn live(&self, limit: usize) -> Vec<Value> {
        let mut streams: Vec<Arc<Stream>> = self
            .live
            .lock()
            .expect("live lock not poisoned")
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        streams.sort_by_key(|s| s.started);
        streams
            .iter()
            .take(limit)
            .map(|s| {
                json!({
                    "service": s.service, "stream": s.id(), "endpoint": s.endpoint(),
                    "duration_seconds": s.started.elapsed().as_secs_f64(),
                    "bytes_sent": s.bytes_sent.load(Relaxed),
                    "bytes_received": s.bytes_received.load(Relaxed),
                })
            })
            .collect()
    }

    /// Counts a new stream unless `limit` are live; false then (and nothing counted).
    pub fn try_open(&self, limit: u32) -> bool {
        let admitted = self.active.fetch_update(Relaxed, Relaxed, |n| {
            (n < u64::from(limit)).then_some(n + 1)
        });
        match admitted {
            Ok(before) => {
                self.total.fetch_add(1, Relaxed);
                self.peak.fetch_max(before + 1, Relaxed);
                true
            }
            Err(_) => {
                self.refused(ErrorCode::ConnLimit);
                false
            }
        }
    }

    /// Counts a stream refused with `code` before it carried a byte.
    pub fn refused(&self, code: ErrorCode) {
        self.refused[slot(code)].fetch_add(1, Relaxed);
    }

    /// Retires a stream admitted by [`StreamCounters::try_open`] that never opened.
    pub fn abandoned(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// Retires an admitted stream that ran.
    pub fn finished(&self, stream: &Stream, ending: Ending) {
        self.active.fetch_sub(1, Relaxed);
        if let Ending::Reset(code) = ending {
            self.reset[slot(code)].fetch_add(1, Relaxed);
        }
        self.bytes_sent
            .fetch_add(stream.bytes_sent.load(Relaxed), Relaxed);
        self.bytes_received
            .fetch_add(stream.bytes_received.load(Relaxed), Relaxed);
        self.durations.record(stream.started.elapsed());
    }

    /// A copy of the numbers now.
    pub fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            active: self.active.load(Relaxed),
            total: self.total.load(Relaxed),
            peak: self.peak.load(Relaxed),
            refused: STREAM_CODES
                .iter()
                .zip(&self.refused)
                .map(|(c, n)| (*c, n.load(Relaxed)))
                .collect(),
            reset: STREAM_CODES
                .iter()
                .zip(&self.reset)
                .map(|(c, n)| (*c, n.load(Relaxed)))
                .collect(),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            durations: self.durations.histogram(),
        }
    }
}

/// The streams' numbers at one moment. Bytes are those of ended streams.
#[derive(Clone, Debug)]
pub struct StreamSnapshot {
    /// Live now.
    pub active: u64,
    /// Admitted since start.
    pub total: u64,
    /// Most live at once.
    pub peak: u64,
    /// Refused before they were admitted (the limit, no tunnel, an unknown service),
    /// by code.
    pub refused: Vec<(ErrorCode, u64)>,
    /// Admitted and then ended by a reset, by code: a server stream no endpoint
    /// could take is counted here (`E_NO_ENDPOINT`).
    pub reset: Vec<(ErrorCode, u64)>,
    /// Bytes read from local sockets and sent over the tunnel.
    pub bytes_sent: u64,
    /// Bytes from the tunnel written to local sockets.
    pub bytes_received: u64,
    /// Ended streams' durations.
    pub durations: DurationHistogram,
}

impl StreamSnapshot {
    /// The `streams` part of `ctl status` and `ctl connections`.
    pub fn to_json(&self) -> Value {
        let by_code = |v: &[(ErrorCode, u64)]| {
            v.iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| (c.as_str().to_owned(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "active": self.active,
            "total": self.total,
            "peak": self.peak,
            "refused": by_code(&self.refused),
            "reset": by_code(&self.reset),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "closed": self.durations.count,
            "duration_seconds_total": self.durations.sum_seconds,
        })
    }
}

/// What every session's streams share: the services (server), the limit, socket
/// options and, on a client, the session streams go over. Settings are atomics so
/// a reload changes them for the next stream.
#[derive(Debug)]
pub struct Streams {
    server: AtomicBool,
    balancers: ArcSwap<HashMap<String, Addr<Balancer>>>,
    /// Server: the services with an `allowed_clients` list, and their lists.
    access: ArcSwap<HashMap<String, AllowList>>,
    limit: AtomicU32,
    keepalive_idle_ms: AtomicU64,
    wait_ms: AtomicU64,
    current: watch::Sender<Option<Arc<Mux>>>,
    /// Each live stream's task holds a token of it, so a graceful stop sees the
    /// last stream end; `None` once the stop took it.
    drain: Mutex<Option<Drain>>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            server: AtomicBool::new(false),
            balancers: ArcSwap::default(),
            access: ArcSwap::default(),
            limit: AtomicU32::new(sssonector_config::schema::defaults::MAX_CONNECTIONS),
            keepalive_idle_ms: AtomicU64::new(0),
            wait_ms: AtomicU64::new(0),
            current: watch::Sender::new(None),
            drain: Mutex::new(Some(Drain::default())),
        }
    }
}

impl Streams {
    /// Takes the settings of `config` for the next streams.
    pub fn configure(&self, config: &Config) {
        let c = &config.connection;
        self.server.store(
            config.mode == Some(sssonector_config::Mode::Server),
            Relaxed,
        );
        self.limit.store(c.max_connections, Relaxed);
        let idle = if c.keepalive {
            millis(c.keepalive_idle.duration()).max(1)
        } else {
            0
        };
        self.keepalive_idle_ms.store(idle, Relaxed);
        self.wait_ms
            .store(millis(c.connect_timeout.duration()), Relaxed);
        let access = config
            .services
            .iter()
            .filter(|s| !s.allowed_clients.is_empty())
            .map(|s| (s.name.clone(), AllowList::new(&s.allowed_clients)))
            .collect();
        self.access.store(Arc::new(access));
    }

    /// Server: whether the session identity `peer` may open streams to `service`
    /// (its `allowed_clients`; a service without one admits every session).
    pub fn admits(&self, service: &str, peer: &str) -> bool {
        self.access
            .load()
            .get(service)
            .is_none_or(|list| list.admits(peer))
    }

    /// A token for a new stream's task, held until the stream ends; `None` once
    /// the daemon is stopping.
    pub fn token(&self) -> Option<DrainToken> {
        self.drain
            .lock()
            .expect("the drain lock is never held across a panic")
            .as_ref()
            .and_then(Drain::token)
    }

    /// The drain of the live streams, for a graceful stop: its `wait` returns when
    /// the last one has ended. `None` after the first call.
    pub fn take_drain(&self) -> Option<Drain> {
        self.drain
            .lock()
            .expect("the drain lock is never held across a panic")
            .take()
    }

    /// Server: the balancer of each service, swapped in whole (at start and reload).
    pub fn set_balancers(&self, balancers: HashMap<String, Addr<Balancer>>) {
        self.balancers.store(Arc::new(balancers));
    }

    /// Server: the balancer of `service`.
    pub fn balancer(&self, service: &str) -> Option<Addr<Balancer>> {
        self.balancers.load().get(service).cloned()
    }

    /// Whether this daemon takes streams (a server) rather than opens them.
    pub fn is_server(&self) -> bool {
        self.server.load(Relaxed)
    }

    /// Most streams live at once.
    pub fn limit(&self) -> u32 {
        self.limit.load(Relaxed)
    }

    /// Client: streams go over `mux` from now on (`None`: no session).
    pub fn set_current(&self, mux: Option<Arc<Mux>>) {
        self.current.send_replace(mux);
    }

    /// Client: forgets `mux` if it is still the current session.
    pub fn clear_current(&self, mux: &Arc<Mux>) {
        self.current.send_if_modified(|m| {
            let same = m.as_ref().is_some_and(|m| Arc::ptr_eq(m, mux));
            if same {
                *m = None;
            }
            same
        });
    }

    /// Client: the session to open a stream on, waiting for one up to
    /// `connection.connect_timeout` (a tunnel failing over).
    async fn session(&self) -> Option<Arc<Mux>> {
        let wait = Duration::from_millis(self.wait_ms.load(Relaxed));
        let mut rx = self.current.subscribe();
        let found = tokio::time::timeout(
            wait,
            rx.wait_for(|m| m.as_ref().is_some_and(|m| !m.is_closed())),
        )
        .await;
        match found {
            Ok(Ok(m)) => m.clone(),
            _ => None,
        }
    }

    /// Sets a stream socket's options as the tunnel's are set ([`tune_socket`]), with
    /// the keepalive setting now: a vanished peer does not hold a stream forever. Set
    /// on a client's listening socket, they carry over to every stream it accepts,
    /// with no system call per stream.
    pub fn prepare(&self, socket: impl std::os::fd::AsFd) {
        let idle = self.keepalive_idle_ms.load(Relaxed);
        tune_socket(socket, (idle > 0).then(|| Duration::from_millis(idle)));
    }

    /// The keepalive setting [`Self::prepare`] applies, to see it changed.
    fn keepalive_idle_ms(&self) -> u64 {
        self.keepalive_idle_ms.load(Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Client: accepts one service's local connections and forwards each as a stream.
pub struct ServiceListener {
    name: String,
    listener: Option<std::net::TcpListener>,
    hub: Arc<Hub>,
    runtime: Handle,
    cancel: CancellationToken,
    log: Logger,
}

impl ServiceListener {
    /// A listener for service `name` on `listener` (bound by the caller, so a port
    /// in use fails the start or reload that asked for it).
    pub fn new(
        name: String,
        listener: std::net::TcpListener,
        hub: Arc<Hub>,
        runtime: Handle,
        log: &Logger,
    ) -> Self {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        Self {
            log: log.new(slog::o!("service" => name.clone(), "listen" => addr)),
            name,
            listener: Some(listener),
            hub,
            runtime,
            cancel: CancellationToken::new(),
        }
    }

    /// Binds `addr` for a service listener.
    ///
    /// # Errors
    /// What binding said.
    pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    }
}

impl Actor for ServiceListener {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            // Restarted: the accept task kept running with its socket.
            return;
        };
        info!(self.log, "service listening");
        self.runtime.spawn(accept(
            self.name.clone(),
            listener,
            self.hub.clone(),
            self.cancel.clone(),
            self.log.clone(),
        ));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cancel.cancel();
        info!(self.log, "service stopped");
    }
}

/// Nothing to rebuild: the accept task runs on the data runtime, the streams go on.
impl Supervised for ServiceListener {}

crate::supervise::panic_on_fault!(ServiceListener);

/// Stops a service listener; its live streams go on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopService;

impl Handler<StopService> for ServiceListener {
    type Result = ();
    fn handle(&mut self, _: StopService, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

async fn accept(
    name: String,
    listener: std::net::TcpListener,
    hub: Arc<Hub>,
    cancel: CancellationToken,
    log: Logger,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(log, "service listener failed"; "code" => ErrorCode::Io, "error" => %e);
            return;
        }
    };
    let name: Arc<str> = name.into();
    // The keepalive setting the listener's options carry, for the sockets it accepts.
    let mut tuned = None;
    loop {
        let streams = &hub.streams;
        let idle = streams.keepalive_idle_ms();
        if tuned != Some(idle) {
            // At the start, and after a reload changed it: from the next connection on.
            tuned = Some(idle);
            streams.prepare(&listener);
        }
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let socket = match accepted {
            Ok((socket, from)) if !hub.stats.limits.admit_addr(from.ip()) => {
                hub.stats.streams.refused(ErrorCode::RateLimited);
                debug!(log, "stream refused"; "code" => ErrorCode::RateLimited,
                    "remote" => %from);
                let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                continue;
            }
            Ok((socket, _)) => socket,
            Err(e) => {
                warn!(log, "accept failed"; "code" => ErrorCode::Io, "error" => %e);
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        if !hub.stats.streams.try_open(streams.limit()) {
            warn!(log, "stream refused"; "code" => ErrorCode::ConnLimit,
                "limit" => streams.limit());
            let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            continue;
        }
        let hub = hub.clone();
        let name = name.clone();
        let log = log.clone();
        tokio::spawn(async move {
            match hub.streams.session().await {
                Some(mux) => {
                    mux.open(&name, socket).await;
                }
                None => {
                    hub.stats.streams.abandoned();
                    hub.stats.streams.refused(ErrorCode::NoEndpoint);
                    warn!(log, "stream refused"; "code" => ErrorCode::NoEndpoint,
                        "reason" => "no tunnel to the server");
                    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `prepare` set on a listening socket, every socket it accepts has, also
    /// after a reload changed it.
    #[test]
    fn accepted_sockets_take_the_listeners_options() {
        let streams = Streams::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let at = listener.local_addr().expect("addr");
        let accepted = |idle_ms| {
            streams.keepalive_idle_ms.store(idle_ms, Relaxed);
            streams.prepare(&listener);
            let client = std::net::TcpStream::connect(at).expect("connect");
            (listener.accept().expect("accept").0, client)
        };
        let (socket, _client) = accepted(45_000);
        let s = socket2::SockRef::from(&socket);
        assert!(s.tcp_nodelay().expect("nodelay"));
        assert!(s.keepalive().expect("keepalive"));
        assert_eq!(
            s.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(45)
        );
        assert_eq!(
            s.tcp_keepalive_interval().expect("interval"),
            Duration::from_secs(10)
        );
        assert_eq!(s.tcp_keepalive_retries().expect("retries"), 3);
        let (socket, _client) = accepted(0);
        let s = socket2::SockRef::from(&socket);
        assert!(s.tcp_nodelay().expect("nodelay"));
        assert!(!s.keepalive().expect("keepalive off after the change"));
    }

    #[test]
    fn the_limit_admits_that_many_and_counts_each_refusal() {
        let c = StreamCounters::default();
        assert!(c.try_open(2));
        assert!(c.try_open(2));
        assert!(!c.try_open(2));
        assert!(!c.try_open(2));
        let s = c.snapshot();
        assert_eq!((s.active, s.total, s.peak), (2, 2, 2));
        assert_eq!(
            s.refused[slot(ErrorCode::ConnLimit)],
            (ErrorCode::ConnLimit, 2)
        );
        c.abandoned();
        assert!(c.try_open(2));
        assert_eq!(c.snapshot().total, 3);
    }

    fn stream(id: u32, service: &str) -> mux::Stream {
        let flow =
            crate::ratelimit::Limits::default().flow("peer".into(), Some(service.into()), id);
        mux::Stream::new(id, service, flow)
    }

    #[test]
    fn a_finished_stream_leaves_its_bytes_duration_and_reset_code() {
        let c = StreamCounters::default();
        assert!(c.try_open(10));
        assert!(c.try_open(10));
        let a = stream(1, "web");
        a.bytes_sent.store(100, Relaxed);
        a.bytes_received.store(7, Relaxed);
        c.finished(&a, Ending::Done);
        let b = stream(3, "web");
        c.finished(&b, Ending::Reset(ErrorCode::Connect));
        let s = c.snapshot();
        assert_eq!((s.active, s.durations.count), (0, 2));
        assert_eq!((s.bytes_sent, s.bytes_received), (100, 7));
        assert_eq!(s.reset[slot(ErrorCode::Connect)].1, 1);
        assert_eq!(s.reset.iter().map(|(_, n)| n).sum::<u64>(), 1);
        // Both ended within the first bucket (10 ms), and the buckets are cumulative.
        assert_eq!(s.durations.buckets.first(), Some(&(0.01, 2)));
        assert_eq!(s.durations.buckets.last(), Some(&(3600.0, 2)));
    }

    #[test]
    fn live_streams_are_listed_until_untracked() {
        let c = StreamCounters::default();
        let a = Arc::new(stream(1, "web"));
        let b = Arc::new(stream(3, "db"));
        c.track(&a);
        c.track(&b);
        let listed = c.live(10);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["service"], "web");
        assert_eq!(c.live(1).len(), 1);
        c.untrack(&a);
        drop(b);
        assert!(
            c.live(10).is_empty(),
            "untracked or dropped streams are not listed"
        );
    }

    #[test]
    fn unknown_codes_count_as_the_last() {
        assert_eq!(slot(ErrorCode::ConfigInvalid), STREAM_CODES.len() - 1);
        assert_eq!(slot(ErrorCode::ConnLimit), 0);
    }
}
