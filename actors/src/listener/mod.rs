//! The Listener actor (server): accepts TCP on `tunnel.listen_address:listen_port`,
//! checks the peer's source address, runs the TLS 1.3 handshake (client certificate
//! required), checks the certificate name against `security.allowed_clients`, runs
//! the session handshake, and starts one Connection actor per accepted client.
//!
//! Accepting and handshaking run as tasks on the data-path runtime, one per incoming
//! connection, each bounded by [`HANDSHAKE_TIMEOUT`]: garbage, a stalled handshake or
//! a refused peer costs that task only, never a live session.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
use tokio_rustls::{TlsAcceptor, TlsStream};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditActor, Record};
use crate::connection::{CloseSession, Connection, Established, SessionClosed};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode};
use crate::tunnel::codec::Frame;
use crate::tunnel::compress::Algorithm;
use crate::tunnel::handshake::{self, Failed, Kind, HANDSHAKE_TIMEOUT};
use crate::tunnel::hub::{Hub, PeerTx, QUEUE};
use crate::tunnel::session::{Hello, Policy};
use crate::tunnel::stats::Session;
use crate::tunnel::tls;

/// What a handshake task needs to decide, swapped whole on reload.
pub struct Rules {
    acceptor: TlsAcceptor,
    policy: Policy,
    allowed_clients: Vec<String>,
    allow_cidrs: Vec<IpNet>,
    deny_cidrs: Vec<IpNet>,
    keepalive_idle: Option<Duration>,
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
            acceptor: TlsAcceptor::from(server),
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
            allowed_clients: s.allowed_clients.clone(),
            allow_cidrs: nets(&s.allow_cidrs),
            deny_cidrs: nets(&s.deny_cidrs),
            keepalive_idle: config
                .connection
                .keepalive
                .then(|| config.connection.keepalive_idle.duration()),
        })
    }

    fn source_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny_cidrs.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow_cidrs.is_empty() || self.allow_cidrs.iter().any(|n| n.contains(&ip))
    }

    fn name_allowed<'n>(&self, names: &'n [String]) -> Option<&'n String> {
        if self.allowed_clients.is_empty() {
            return names.first();
        }
        names.iter().find(|n| self.allowed_clients.contains(n))
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
            return ctx.stop();
        };
        info!(self.log, "listening"; "address" => %self.bind);
        let task = Accepting {
            rules: self.rules.clone(),
            hub: self.hub.clone(),
            me: ctx.address(),
            audit: self.audit.clone(),
            log: self.log.clone(),
        };
        self.runtime.spawn(task.run(listener, self.cancel.clone()));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cancel.cancel();
    }
}

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
            Ok(rules) => self.rules.store(Arc::new(rules)),
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
    log: Logger,
}

impl Accepting {
    async fn run(self, listener: TcpListener, cancel: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let this = self.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
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

    fn refuse(&self, remote: SocketAddr, peer: Option<&str>, code: ErrorCode, reason: &str) {
        self.hub.stats.handshake_failed(code);
        warn!(self.log, "session refused";
            "code" => code, "reason" => reason, "remote" => %remote, "peer" => peer.unwrap_or(""));
        if let Some(a) = &self.audit {
            a.do_send(Record {
                event: "session_refused",
                fields: json!({"remote": remote.to_string(), "peer": peer, "code": code, "reason": reason}),
            });
        }
    }

    async fn handshake(self, stream: TcpStream, remote: SocketAddr) {
        let rules = self.rules.load_full();
        if !rules.source_allowed(remote.ip()) {
            return self.refuse(
                remote,
                None,
                ErrorCode::AccessDenied,
                "source address not allowed",
            );
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
        let tls = match tokio::time::timeout(left, rules.acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let e = tls::TlsError::from_handshake(&e);
                self.hub.stats.handshake_failed(e.code());
                return warn!(self.log, "handshake failed";
                    "code" => e.code(), "remote" => %remote, "error" => %e);
            }
            Err(_) => {
                self.hub.stats.handshake_failed(ErrorCode::TlsHandshake);
                return warn!(self.log, "handshake failed";
                    "code" => ErrorCode::TlsHandshake, "remote" => %remote,
                    "error" => "no TLS handshake within the time limit");
            }
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| handshake::cert_names(c))
            .unwrap_or_default();
        let tls = TlsStream::Server(tls);
        let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        let first = names.first().cloned();
        match tokio::time::timeout(left, self.session(tls, &rules, &names, remote)).await {
            Ok(Ok(established)) => {
                debug!(self.log, "handshake done";
                    "remote" => %remote, "ms" => started.elapsed().as_millis() as u64);
                self.me.do_send(Accepted(established));
            }
            Ok(Err((mut tls, f))) => {
                let reject = crate::tunnel::session::Reject {
                    code: f.code.as_str().into(),
                    reason: f.reason.clone(),
                };
                let payload = serde_json::to_vec(&reject).unwrap_or_default();
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    handshake::write_frame(&mut tls, &Frame::Reject(&payload)),
                )
                .await;
                self.refuse(remote, first.as_deref(), f.code, &f.reason);
            }
            Err(_) => self.refuse(
                remote,
                first.as_deref(),
                ErrorCode::TlsHandshake,
                "no session handshake within the time limit",
            ),
        }
    }

    /// Certificate name check, Hello, address claim, Accept.
    async fn session(
        &self,
        mut tls: TlsStream<TcpStream>,
        rules: &Rules,
        names: &[String],
        remote: SocketAddr,
    ) -> Result<Established, (TlsStream<TcpStream>, Failed)> {
        let Some(name) = rules.name_allowed(names).cloned() else {
            let f = Failed::new(ErrorCode::AccessDenied, "certificate name not allowed");
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
            .decide(&hello, &name, |a| self.hub.is_claimed(a))
        {
            Ok(a) => a,
            Err(r) => return Err((tls, Failed::new(r.code, r.reason))),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer = Arc::new(PeerTx::new(tx, accept.gso));
        if !self.hub.claim(accept.address, peer.clone()) {
            let f = Failed::new(
                ErrorCode::AddressInUse,
                format!(
                    "inner address {} is held by another session",
                    accept.address
                ),
            );
            return Err((tls, f));
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
                fields: json!({"peer": name, "remote": remote.to_string(), "inner": accept.address.to_string()}),
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
