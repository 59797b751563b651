//! The Listener actor (server): accepts TCP on `tunnel.listen_address:listen_port`,
//! checks the peer's source address, runs the TLS 1.3 handshake (client certificate
//! required), checks the certificate names against `security.allowed_clients`, runs
//! the session handshake, and starts one Connection actor per accepted client.
//!
//! Every refusal is audited with its full reason (`handshake_refused` for TLS,
//! `session_refused` after it) while the peer is told only a generic one
//! (`tunnel::refusal`); every accepted session is audited with its identity, the
//! rule that admitted it and its certificate's serial.
//!
//! Accepting and handshaking run as tasks on the data-path runtime, one per incoming
//! connection, each bounded by [`HANDSHAKE_TIMEOUT`]: garbage, a stalled handshake or
//! a refused peer costs that task only, never a live session. Pending handshakes
//! are capped overall and per source ([`gate::Pending`]): beyond the caps a
//! connection is reset at once, counted, never given a task or a buffer. Refusals
//! are logged and audited at most once per reason and source per
//! [`gate::REFUSAL_LOG_INTERVAL`], the rest summed up once per interval
//! ([`gate::RefusalLog`]), so a flood costs bounded log lines too.
//!
//! A session claiming an inner address held by a session of the same identity
//! takes it over (the client came back from a new address before its old session
//! timed out): the old one is closed and audited `session_replaced`.

pub mod gate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde_json::json;
use slog::{debug, info, warn, Logger};
use sssonector_config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditActor, Record};
use crate::connection::{CloseSession, Connection, Established, SessionClosed};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode};
use crate::tunnel::access::{AllowList, Matched};
use crate::tunnel::codec::Frame;
use crate::tunnel::compress::Algorithm;
use crate::tunnel::handshake::{self, CertSummary, Failed, Kind, HANDSHAKE_TIMEOUT};
use crate::tunnel::hub::{Claimed, Holder, Hub, PeerTx, QUEUE};
use crate::tunnel::refusal;
use crate::tunnel::session::{Hello, Policy};
use crate::tunnel::stats::Session;
use crate::tunnel::tls::{self, Tls};
use gate::{Pending, RefusalLog, Shed, REFUSAL_LOG_INTERVAL};

/// What a handshake task needs to decide, swapped whole on reload.
pub struct Rules {
    tls: Arc<rustls::ServerConfig>,
    policy: Policy,
    allowed_clients: AllowList,
    allow_cidrs: Vec<IpNet>,
    deny_cidrs: Vec<IpNet>,
    keepalive_idle: Option<Duration>,
    /// `tunnel.max_pending_handshakes`.
    max_pending: usize,
    /// `tunnel.max_pending_per_source`.
    max_pending_per_source: usize,
    /// `connection.max_connections`: tunnels at once.
    max_connections: usize,
}

impl Rules {
    /// The rules of `config`.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` when the TLS material cannot be used.
    pub fn from_config(config: &Config, gso: bool) -> crate::Result<Self> {
        Self::with_tls(
            config,
            gso,
            tls::server_config(&config.tunnel, &config.security)?,
        )
    }

    /// The rules of `config` with the TLS configuration `server` (the certificate
    /// watcher's, built from renewed files).
    ///
    /// # Errors
    /// `E_INTERNAL` when the configuration lacks what validation guarantees.
    pub fn with_tls(
        config: &Config,
        gso: bool,
        server: Arc<rustls::ServerConfig>,
    ) -> crate::Result<Self> {
        let nets = |v: &[sssonector_config::Parsed<IpNet>]| -> Vec<IpNet> {
            v.iter().map(|p| *p.get()).collect()
        };
        let subnet = config
            .network
            .address
            .as_ref()
            .map(|a| *a.get())
            .ok_or_else(|| Error::Internal("network.address missing after validation".into()))?;
        let s = &config.security;
        Ok(Self {
            tls: server,
            policy: Policy {
                subnet,
                by_name: s
                    .client_addresses
                    .iter()
                    .map(|(k, v)| (k.clone(), nets(v)))
                    .collect::<BTreeMap<_, _>>(),
                gso,
                compression: Algorithm::from_config(config.tunnel.compression),
                mtu: config.network.mtu,
            },
            allowed_clients: AllowList::new(&s.allowed_clients),
            allow_cidrs: nets(&s.allow_cidrs),
            deny_cidrs: nets(&s.deny_cidrs),
            keepalive_idle: config
                .connection
                .keepalive
                .then(|| config.connection.keepalive_idle.duration()),
            max_pending: config.tunnel.max_pending_handshakes as usize,
            max_pending_per_source: config.tunnel.max_pending_per_source as usize,
            max_connections: config.connection.max_connections as usize,
        })
    }

    /// Whether `ip` may connect; if not, the stable reason and the rule that says so.
    fn source_check(&self, ip: IpAddr) -> Result<(), (&'static str, String)> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(n) = self.deny_cidrs.iter().find(|n| n.contains(&ip)) {
            return Err(("source_denied", format!("{ip} is in deny_cidrs {n}")));
        }
        if self.allow_cidrs.is_empty() || self.allow_cidrs.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        Err((
            "source_not_allowed",
            format!("{ip} is in no allow_cidrs entry"),
        ))
    }
}

/// What the peer is told in a Reject: a generic phrase per code, never the rule or
/// the name that refused it (the audit log has those).
fn public_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AccessDenied => refusal::GENERIC,
        ErrorCode::BadAddress => "inner address not allowed",
        ErrorCode::AddressInUse => "inner address in use",
        ErrorCode::Protocol => "protocol error",
        ErrorCode::ConnLimit => "connection limit reached",
        _ => "refused",
    }
}

/// The stable audit reason of a session refusal with `code`.
fn session_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AccessDenied => "name_not_allowed",
        ErrorCode::BadAddress => "address_not_allowed",
        ErrorCode::AddressInUse => "address_in_use",
        ErrorCode::Protocol => "protocol",
        ErrorCode::TlsHandshake => "handshake_timeout",
        ErrorCode::ConnLimit => "conn_limit",
        _ => "session_failed",
    }
}

/// The server's listener.
pub struct Listener {
    /// The configuration in force, to rebuild the rules around a swapped TLS
    /// configuration.
    config: Box<Config>,
    bind: SocketAddr,
    socket: Option<TcpListener>,
    rules: Arc<ArcSwap<Rules>>,
    hub: Arc<Hub>,
    runtime: Handle,
    keepalive: Duration,
    cancel: CancellationToken,
    connections: Vec<Addr<Connection>>,
    audit: Option<Addr<AuditActor>>,
    drain: Option<DrainToken>,
    log: Logger,
}

impl Listener {
    /// A listener for `config`, its socket bound (the accept loop starts with the actor).
    ///
    /// # Errors
    /// `E_TLS_CONFIG` when the TLS material cannot be used, `E_IO` when the address
    /// cannot be bound.
    pub fn new(
        config: &Config,
        hub: Arc<Hub>,
        runtime: Handle,
        audit: Option<Addr<AuditActor>>,
        drain: Option<DrainToken>,
        log: Logger,
    ) -> crate::Result<Self> {
        let t = &config.tunnel;
        let ip = *t.listen_address.get();
        let port = u16::try_from(t.listen_port.raw()).unwrap_or(0);
        hub.configure_access(config);
        let mut this = Self {
            config: Box::new(config.clone()),
            bind: SocketAddr::new(ip, port),
            socket: None,
            rules: Arc::new(ArcSwap::from_pointee(Rules::from_config(
                config,
                hub.offload,
            )?)),
            hub,
            runtime,
            keepalive: t.keepalive.duration(),
            cancel: CancellationToken::new(),
            connections: Vec::new(),
            audit,
            drain,
            log,
        };
        this.socket = Some(this.bind()?);
        Ok(this)
    }

    /// Where security events go (the audit actor starts after this one is built).
    pub fn set_audit(&mut self, audit: Option<Addr<AuditActor>>) {
        self.hub.set_audit(audit.clone());
        self.audit = audit;
    }

    /// Binds the listening socket.
    fn bind(&self) -> crate::Result<TcpListener> {
        let _enter = self.runtime.enter();
        let std = std::net::TcpListener::bind(self.bind)
            .map_err(|e| Error::io(format!("tunnel listen {}", self.bind), e))?;
        std.set_nonblocking(true)
            .map_err(|e| Error::io("tunnel listen", e))?;
        TcpListener::from_std(std).map_err(|e| Error::io("tunnel listen", e))
    }
}

/// A client passed every check; start its Connection.
#[derive(Message)]
#[rtype(result = "()")]
struct Accepted(Established);

/// Apply a reloaded configuration to new handshakes: certificates, CA, CRL,
/// `allowed_clients`, CIDRs and `client_addresses`. Live sessions are not touched.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Box<Config>);

/// Put a TLS configuration built from renewed files (by the certificate watcher) in
/// use for new handshakes; live sessions keep the one they were made with.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SwapTls(pub Arc<rustls::ServerConfig>);

/// Stop listening and close every session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.socket.take() else {
            // Restarted: the accept task kept running with its socket.
            return;
        };
        info!(self.log, "listening"; "address" => %self.bind);
        let task = Accepting {
            rules: self.rules.clone(),
            hub: self.hub.clone(),
            me: ctx.address(),
            audit: self.audit.clone(),
            pending: Arc::default(),
            refusals: Arc::new(Mutex::new(RefusalLog::new(
                REFUSAL_LOG_INTERVAL,
                Instant::now(),
            ))),
            log: self.log.clone(),
        };
        self.runtime.spawn(task.run(listener, self.cancel.clone()));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cancel.cancel();
    }
}

/// Nothing to rebuild: the accept task runs on the data runtime with the rules
/// kept here, and the sessions go on.
impl Supervised for Listener {}

crate::supervise::panic_on_fault!(Listener);

impl Handler<Accepted> for Listener {
    type Result = ();
    fn handle(&mut self, msg: Accepted, ctx: &mut Context<Self>) {
        let log = self.log.new(slog::o!("peer" => msg.0.session.peer.clone()));
        let conn = Connection::new(
            msg.0,
            self.hub.clone(),
            self.runtime.clone(),
            self.keepalive,
            ctx.address().recipient(),
            log,
            self.drain.clone(),
        );
        self.connections.push(conn.start());
    }
}

impl Handler<SessionClosed> for Listener {
    type Result = ();
    fn handle(&mut self, _: SessionClosed, _: &mut Context<Self>) {
        self.connections.retain(|c| c.connected());
    }
}

impl Handler<Reconfigure> for Listener {
    type Result = ();
    fn handle(&mut self, msg: Reconfigure, _: &mut Context<Self>) {
        match Rules::from_config(&msg.0, self.hub.offload) {
            Ok(rules) => {
                self.rules.store(Arc::new(rules));
                self.hub.configure_access(&msg.0);
            }
            Err(e) => warn!(self.log, "new tunnel rules refused, old ones kept";
                "code" => e.code(), "error" => %e),
        }
        self.keepalive = msg.0.tunnel.keepalive.duration();
        self.config = msg.0;
    }
}

impl Handler<SwapTls> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SwapTls, _: &mut Context<Self>) {
        match Rules::with_tls(&self.config, self.hub.offload, msg.0) {
            Ok(rules) => self.rules.store(Arc::new(rules)),
            Err(e) => warn!(self.log, "new tunnel rules refused, old ones kept";
                "code" => e.code(), "error" => %e),
        }
    }
}

impl Handler<Shutdown> for Listener {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.cancel.cancel();
        for c in &self.connections {
            c.do_send(CloseSession);
        }
        ctx.stop();
    }
}

/// The accept loop and its per-connection handshakes, on the data-path runtime.
#[derive(Clone)]
struct Accepting {
    rules: Arc<ArcSwap<Rules>>,
    hub: Arc<Hub>,
    me: Addr<Listener>,
    audit: Option<Addr<AuditActor>>,
    /// Handshakes under way.
    pending: Arc<Mutex<Pending>>,
    /// Which refusals get a log line and an audit record.
    refusals: Arc<Mutex<RefusalLog>>,
    log: Logger,
}

/// One admitted handshake: counted as pending until dropped.
struct PendingSlot {
    pending: Arc<Mutex<Pending>>,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("pending lock not poisoned")
            .done(self.ip);
    }
}

impl Accepting {
    async fn run(self, listener: TcpListener, cancel: CancellationToken) {
        let mut summary = tokio::time::interval(REFUSAL_LOG_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                _ = summary.tick() => {
                    self.summarise();
                    continue;
                }
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let rules = self.rules.load();
                    let admitted = self
                        .pending
                        .lock()
                        .expect("pending lock not poisoned")
                        .admit(remote.ip(), rules.max_pending, rules.max_pending_per_source);
                    if let Err(shed) = admitted {
                        self.shed(stream, remote, shed);
                        continue;
                    }
                    let slot = PendingSlot {
                        pending: self.pending.clone(),
                        ip: remote.ip(),
                    };
                    let this = self.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = this.handshake(stream, remote) => {}
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!(self.log, "accept failed"; "code" => ErrorCode::Io, "error" => %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Closes a connection beyond the pending-handshake caps at once, with a reset
    /// (no TIME_WAIT, nothing kept), and counts it.
    fn shed(&self, stream: TcpStream, remote: SocketAddr, shed: Shed) {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
        self.hub.stats.handshake_shed();
        let reason = shed.reason();
        if self.noted(reason, remote) {
            warn!(self.log, "connection closed before the tls handshake";
                "code" => ErrorCode::ConnLimit, "reason" => reason, "remote" => %remote);
            self.audit(
                "handshake_refused",
                json!({"remote": remote.to_string(),
                "code": ErrorCode::ConnLimit, "reason": reason,
                "detail": "too many handshakes pending"}),
            );
        }
    }

    /// Whether a refusal for `reason` from `remote` gets its log line and audit
    /// record now (see [`RefusalLog`]); the counters count every one regardless.
    fn noted(&self, reason: &'static str, remote: SocketAddr) -> bool {
        self.refusals
            .lock()
            .expect("refusal log lock not poisoned")
            .admit(Instant::now(), reason, remote.ip())
    }

    fn audit(&self, event: &'static str, fields: serde_json::Value) {
        if let Some(a) = &self.audit {
            a.do_send(Record { event, fields });
        }
    }

    /// Once per interval: one line (and one audit record) summing up the refusals
    /// that were not logged.
    fn summarise(&self) {
        let counts = self
            .refusals
            .lock()
            .expect("refusal log lock not poisoned")
            .summary(Instant::now());
        let Some(counts) = counts else { return };
        let total: u64 = counts.values().sum();
        let by_reason = counts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        warn!(self.log, "refusals not logged";
            "total" => total, "by_reason" => &by_reason,
            "interval_s" => REFUSAL_LOG_INTERVAL.as_secs());
        self.audit(
            "refusals_suppressed",
            json!({"total": total, "by_reason": counts,
            "interval_s": REFUSAL_LOG_INTERVAL.as_secs()}),
        );
    }

    /// Counts, logs and audits a refused session: `reason` is the stable word,
    /// `detail` the rule or the check that refused it, `cert` the peer's certificate
    /// when the TLS handshake got that far.
    fn refuse(
        &self,
        remote: SocketAddr,
        code: ErrorCode,
        reason: &'static str,
        detail: &str,
        cert: Option<&CertSummary>,
    ) {
        self.hub.stats.handshake_failed(code);
        if !self.noted(reason, remote) {
            return;
        }
        let peer = cert
            .and_then(|c| c.names.first())
            .map_or("", String::as_str);
        warn!(self.log, "session refused";
            "code" => code, "reason" => reason, "detail" => detail, "remote" => %remote,
            "peer" => peer);
        if let Some(a) = &self.audit {
            let mut fields = json!({"remote": remote.to_string(), "code": code,
                "reason": reason, "detail": detail});
            if let Some(c) = cert {
                fields["peer"] = json!(peer);
                fields["subject"] = json!(c.subject);
                fields["serial"] = json!(c.serial);
                fields["names"] = json!(c.names);
            }
            a.do_send(Record {
                event: "session_refused",
                fields,
            });
        }
    }

    /// Counts, logs and audits a failed TLS handshake (`handshake_refused`).
    fn tls_refused(&self, remote: SocketAddr, e: &std::io::Error) {
        let tls_error = tls::TlsError::from_handshake(e);
        let code = tls_error.code();
        // Our verifier refused the certificate: its own words, and the certificate.
        // Only its error says so; any other failure leaves the slot to be cleared.
        let rustls_err = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        let refused = refusal::take_refused().filter(|_| {
            matches!(
                rustls_err,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure
                ))
            )
        });
        let (reason, detail) = match &refused {
            Some(r) => (r.reason, r.detail.clone()),
            None => (refusal::handshake_reason(rustls_err), e.to_string()),
        };
        self.hub.stats.handshake_failed(code);
        if !self.noted(reason, remote) {
            return;
        }
        warn!(self.log, "handshake failed";
            "code" => code, "reason" => reason, "remote" => %remote, "error" => &detail);
        if let Some(a) = &self.audit {
            let mut fields = json!({"remote": remote.to_string(), "code": code,
                "reason": reason, "detail": detail});
            if let Some(r) = &refused {
                fields["subject"] = json!(r.cert.subject);
                fields["serial"] = json!(r.cert.serial);
                fields["names"] = json!(r.cert.names);
            }
            a.do_send(Record {
                event: "handshake_refused",
                fields,
            });
        }
    }

    async fn handshake(self, stream: TcpStream, remote: SocketAddr) {
        let rules = self.rules.load_full();
        if let Err((reason, detail)) = rules.source_check(remote.ip()) {
            // Before TLS: the peer is told nothing, the connection just closes.
            return self.refuse(remote, ErrorCode::AccessDenied, reason, &detail, None);
        }
        if !self.hub.stats.limits.admit_addr(remote.ip()) {
            // Debug only: a flood would drown the log; the counter shows it.
            self.hub.stats.handshake_failed(ErrorCode::RateLimited);
            return debug!(self.log, "connection refused before the tls handshake";
                "code" => ErrorCode::RateLimited, "remote" => %remote);
        }
        handshake::tune_socket(&stream, rules.keepalive_idle);
        let started = Instant::now();
        // A connection closed before its first byte is a TCP probe (a client's
        // balancer health-checking this port, a load balancer, a port scan), not a
        // failed handshake: no warning, no count.
        if let Ok(Ok(0)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut [0u8; 1])).await
        {
            return debug!(self.log, "closed before the tls handshake"; "remote" => %remote);
        }
        let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        let accept = crate::tunnel::record::server(rules.tls.clone(), stream);
        let tls = match tokio::time::timeout(left, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.tls_refused(remote, &e.into()),
            Err(_) => {
                let code = ErrorCode::TlsHandshake;
                self.hub.stats.handshake_failed(code);
                let reason = "handshake_timeout";
                if self.noted(reason, remote) {
                    let detail = "no tls handshake within the time limit";
                    warn!(self.log, "handshake failed";
                        "code" => code, "reason" => reason, "remote" => %remote,
                        "error" => detail);
                    self.audit(
                        "handshake_refused",
                        json!({"remote": remote.to_string(),
                        "code": code, "reason": reason, "detail": detail}),
                    );
                }
                return;
            }
        };
        let cert = tls
            .facts()
            .peer_certificates
            .first()
            .map(|c| CertSummary::of(c))
            .unwrap_or_default();
        let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.session(tls, &rules, &cert, remote)).await {
            Ok(Ok(established)) => {
                debug!(self.log, "handshake done";
                    "remote" => %remote, "ms" => started.elapsed().as_millis() as u64);
                self.me.do_send(Accepted(established));
            }
            Ok(Err((mut tls, f))) => {
                let reject = crate::tunnel::session::Reject {
                    code: f.code.as_str().into(),
                    reason: public_reason(f.code).into(),
                };
                let payload = serde_json::to_vec(&reject).unwrap_or_default();
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    handshake::write_frame(&mut tls, &Frame::Reject(&payload)),
                )
                .await;
                self.refuse(
                    remote,
                    f.code,
                    session_reason(f.code),
                    &f.reason,
                    Some(&cert),
                );
            }
            Err(_) => self.refuse(
                remote,
                ErrorCode::TlsHandshake,
                session_reason(ErrorCode::TlsHandshake),
                "no session handshake within the time limit",
                Some(&cert),
            ),
        }
    }

    /// Certificate name check, Hello, address claim, Accept.
    async fn session(
        &self,
        mut tls: Tls,
        rules: &Rules,
        cert: &CertSummary,
        remote: SocketAddr,
    ) -> Result<Established, (Tls, Failed)> {
        let Some(Matched { name, rule }) = rules.allowed_clients.check(&cert.names) else {
            let f = Failed::new(
                ErrorCode::AccessDenied,
                format!(
                    "no certificate name ({}) matches security.allowed_clients",
                    cert.names.join(", ")
                ),
            );
            return Err((tls, f));
        };
        let (kind, payload, leftover) = match handshake::read_frame(&mut tls).await {
            Ok(v) => v,
            Err(f) => return Err((tls, f)),
        };
        if kind != Kind::Hello {
            return Err((tls, Failed::new(ErrorCode::Protocol, "expected hello")));
        }
        let hello: Hello = match serde_json::from_slice(&payload) {
            Ok(h) => h,
            Err(e) => {
                let f = Failed::new(ErrorCode::Protocol, format!("bad hello: {e}"));
                return Err((tls, f));
            }
        };
        let accept = match rules
            .policy
            .decide(&hello, &name, |a| self.hub.is_held_by_other(a, &name))
        {
            Ok(a) => a,
            Err(r) => return Err((tls, Failed::new(r.code, r.reason))),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer = Arc::new(PeerTx::new(tx, accept.gso));
        let holder = Holder {
            identity: name.as_str().into(),
            remote: remote.to_string(),
            peer: peer.clone(),
        };
        let max = rules.max_connections;
        match self.hub.claim(accept.address, peer.clone(), holder, max) {
            Claimed::Taken => {}
            Claimed::Replaced { remote: old } => {
                info!(self.log, "session replaced";
                    "peer" => &name, "remote" => %remote, "old_remote" => &old,
                    "inner" => %accept.address);
                self.audit(
                    "session_replaced",
                    json!({"peer": name,
                    "remote": remote.to_string(), "old_remote": old,
                    "inner": accept.address.to_string(), "serial": cert.serial}),
                );
            }
            Claimed::InUse => {
                let f = Failed::new(
                    ErrorCode::AddressInUse,
                    format!(
                        "inner address {} is held by another session",
                        accept.address
                    ),
                );
                return Err((tls, f));
            }
            Claimed::Full => {
                let f = Failed::new(
                    ErrorCode::ConnLimit,
                    format!("{max} tunnels are live, connection.max_connections is {max}"),
                );
                return Err((tls, f));
            }
        }
        let payload = serde_json::to_vec(&accept).unwrap_or_default();
        if let Err(f) = handshake::write_frame(&mut tls, &Frame::Accept(&payload)).await {
            self.hub.release(accept.address, &peer);
            return Err((tls, f));
        }
        info!(self.log, "session started";
            "peer" => &name, "remote" => %remote, "inner" => %accept.address, "gso" => accept.gso);
        if let Some(a) = &self.audit {
            a.do_send(Record {
                event: "session_started",
                fields: json!({"peer": name, "rule": rule, "remote": remote.to_string(),
                    "inner": accept.address.to_string(), "subject": cert.subject,
                    "serial": cert.serial}),
            });
        }
        let counters = peer.counters.clone();
        let compression = accept.compression.as_deref().and_then(Algorithm::from_name);
        let session = Session::starting(
            name,
            remote.to_string(),
            accept.address,
            compression,
            counters,
        );
        Ok(Established {
            stream: tls,
            leftover,
            session,
            peer,
            rx,
            route: Some(accept.address),
        })
    }
}
