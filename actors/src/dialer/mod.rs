//! The Dialer actor (client): gets a TCP connection to one of `tunnel.servers` from
//! its [`Balancer`], verifies the server's certificate and `server_name`, runs the
//! session handshake and starts a Connection. When the session ends it dials again
//! at once; when a round fails, after [`Backoff`]'s delay, forever, cut short by a
//! TCP-connect probe every [`backoff::PROBE_EVERY`] when no server could be reached
//! ([`Redial`]): so the tunnel is back within a second of its server.
//!
//! The balancer (service [`SERVICE`] in the endpoint registry, so the servers show in
//! `ctl endpoints`, Prometheus and the SNMP endpoint table) keeps the servers in the
//! configured order and health-checks them with TCP connects; it hands out the first
//! server that is healthy and whose breaker is closed, failing over to the next when
//! a connect fails. So when a server dies, the next round goes to the next server
//! by itself, and back to the first once its checks and breaker let it. A TLS or
//! session handshake that fails on the socket counts against that server's breaker
//! too ([`Lease::confirm`]); the session holds its lease for as long as it lives.

pub mod backoff;

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use rustls::pki_types::ServerName;
use serde_json::json;
use slog::{info, warn, Logger};
use sssonector_config::Config;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use self::backoff::{Backoff, Redial, Step};
use crate::audit::{AuditActor, Record};
use crate::balancer::{self, Balancer, ConnectUnconfirmed, Connected, Lease};
use crate::connection::{CloseSession, Connection, Established, SessionClosed};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode};
use crate::supervise::{self, panic_on_fault, OnStop};
use crate::tunnel::codec::{self, Frame};
use crate::tunnel::compress::Algorithm;
use crate::tunnel::handshake::{self, Failed, Kind, HANDSHAKE_TIMEOUT};
use crate::tunnel::hub::{Hub, PeerTx, QUEUE};
use crate::tunnel::session::{Accept, Capabilities, Hello, Reject};
use crate::tunnel::stats::Session;
use crate::tunnel::tls;

/// The service name of the servers' balancer: their rows in the endpoint registry.
pub const SERVICE: &str = "tunnel";

/// What the handshakes need, rebuilt on reload.
#[derive(Clone)]
pub struct Target {
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    address: IpAddr,
    compression: Option<Algorithm>,
}

impl Target {
    /// The target of `config`.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` for unusable TLS material or server name.
    pub fn from_config(config: &Config) -> crate::Result<Self> {
        let t = &config.tunnel;
        let server_name = ServerName::try_from(t.server_name.clone())
            .map_err(|e| Error::Internal(format!("tunnel.server_name: {e}")))?;
        let address = config
            .network
            .address
            .as_ref()
            .map(|a| a.get().addr())
            .ok_or_else(|| Error::Internal("network.address missing after validation".into()))?;
        Ok(Self {
            server_name,
            tls: tls::client_config(t, &config.security)?,
            address,
            compression: Algorithm::from_config(t.compression),
        })
    }
}

/// The client's dialer.
pub struct Dialer {
    target: Target,
    /// The servers' balancer settings, until it starts with the actor (boxed: the
    /// actor is moved around whole, and this is used once).
    servers: Option<Box<balancer::Settings>>,
    /// Picks, health-checks and fails over between the servers; started with the
    /// actor and stopped with it (it stops once nobody holds its address).
    balancer: Option<Addr<Balancer>>,
    /// The same balancer, for the daemon's `status` and `health` (set once it
    /// starts; a supervised restart keeps the address).
    shown: Arc<OnceLock<Addr<Balancer>>>,
    /// When to dial again, and whether to probe meanwhile (boxed, like `servers`:
    /// the actor is moved around whole).
    redial: Box<Redial>,
    /// The servers' addresses, for the probes.
    probe_targets: Arc<[String]>,
    hub: Arc<Hub>,
    runtime: Handle,
    keepalive: Duration,
    connection: Option<Addr<Connection>>,
    /// The live session's hold on its server (the registry's active count, the
    /// breaker's verdict); dropped when the session ends.
    lease: Option<Lease>,
    sessions: u64,
    /// The session is being closed to re-handshake with a renewed certificate.
    rehandshaking: bool,
    /// How many times our certificate was renewed: a dial that began before a
    /// renewal ends in a session with the old certificate, to be redone at once.
    renewals: u64,
    stopping: bool,
    audit: Option<Addr<AuditActor>>,
    drain: Option<DrainToken>,
    log: Logger,
}

impl Dialer {
    /// A dialer for `config`.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` for unusable TLS material.
    pub fn new(
        config: &Config,
        hub: Arc<Hub>,
        runtime: Handle,
        audit: Option<Addr<AuditActor>>,
        drain: Option<DrainToken>,
        log: Logger,
    ) -> crate::Result<Self> {
        Ok(Self {
            target: Target::from_config(config)?,
            servers: Some(Box::new(balancer::Settings::for_servers(config))),
            balancer: None,
            shown: Arc::default(),
            lease: None,
            redial: Box::new(Redial::new(backoff_of(config))),
            probe_targets: probe_targets(config),
            hub,
            runtime,
            keepalive: config.tunnel.keepalive.duration(),
            connection: None,
            sessions: 0,
            rehandshaking: false,
            renewals: 0,
            stopping: false,
            audit,
            drain,
            log,
        })
    }

    /// Where the servers' balancer will be once the actor started: the daemon reports
    /// it as its `balancer` component.
    pub fn balancer_slot(&self) -> Arc<OnceLock<Addr<Balancer>>> {
        self.shown.clone()
    }

    /// Where security events go (the audit actor starts after this one is built).
    pub fn set_audit(&mut self, audit: Option<Addr<AuditActor>>) {
        self.audit = audit;
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(balancer) = self.balancer.clone() else {
            return self.retry_later(false, ctx);
        };
        self.redial.dialing();
        let target = self.target.clone();
        let renewals = self.renewals;
        let hub = self.hub.clone();
        let log = self.log.clone();
        let task = self
            .runtime
            .spawn(async move { dial_round(&target, &balancer, &hub, &log).await });
        ctx.spawn(
            async move { task.await.ok() }.into_actor(self).map(
                move |result, act, ctx| match result {
                    Some(Ok((est, lease))) => {
                        act.established(est, lease, ctx);
                        if act.renewals != renewals {
                            act.rehandshake();
                        }
                    }
                    Some(Err(reached)) => act.retry_later(reached, ctx),
                    None => act.retry_later(false, ctx),
                },
            ),
        );
    }

    /// A round failed; `reached`: a server took the TCP connect and refused.
    fn retry_later(&mut self, reached: bool, ctx: &mut Context<Self>) {
        let delay = self.redial.failed(Instant::now(), reached, jitter());
        let failures = self.redial.failures();
        if failures == 1 || failures % 10 == 0 {
            info!(self.log, "dialing again"; "in_ms" => delay.as_millis() as u64,
                "failed_rounds" => failures, "probing" => !reached);
        }
        self.next_step(ctx);
    }

    /// Carries out the redial plan's next step: dial, probe, or wait for either.
    fn next_step(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.connection.is_some() {
            return;
        }
        let now = Instant::now();
        match self.redial.next(now) {
            Step::Dial => self.dial(ctx),
            Step::WaitUntil(t) => {
                ctx.run_later(t.saturating_duration_since(now), |act, ctx| {
                    act.next_step(ctx);
                });
            }
            Step::Probe => {
                let targets = self.probe_targets.clone();
                let task = self.runtime.spawn(async move { probe(&targets).await });
                ctx.spawn(
                    async move { task.await.unwrap_or(false) }
                        .into_actor(self)
                        .map(move |ok, act, ctx| {
                            if act.redial.probed(now, ok) {
                                info!(act.log, "server answers, dialing now");
                            }
                            act.next_step(ctx);
                        }),
                );
            }
        }
    }

    fn established(&mut self, est: Established, lease: Lease, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        lease.row().carry(Some(est.session.counters.clone()));
        self.lease = Some(lease);
        self.redial.succeeded();
        self.sessions += 1;
        if self.sessions > 1 {
            self.hub.stats.reconnects.fetch_add(1, Relaxed);
        }
        self.hub.set_default(Some(est.peer.clone()));
        let log = self
            .log
            .new(slog::o!("server" => est.session.remote.clone()));
        info!(log, "tunnel up"; "server" => &est.session.remote, "inner" => %est.session.inner);
        if let Some(a) = &self.audit {
            a.do_send(Record {
                event: "tunnel_up",
                fields: json!({"server": est.session.remote, "peer": est.session.peer}),
            });
        }
        let conn = Connection::new(
            est,
            self.hub.clone(),
            self.runtime.clone(),
            self.keepalive,
            ctx.address().recipient(),
            log,
            self.drain.clone(),
        );
        self.connection = Some(conn.start());
    }
}

/// The retry policy of `config`.
fn backoff_of(config: &Config) -> Backoff {
    let c = &config.connection;
    Backoff::new(
        c.retry_attempts,
        c.retry_interval.duration(),
        c.retry_max_interval.duration(),
    )
}

/// The addresses the probes try: the configured servers.
fn probe_targets(config: &Config) -> Arc<[String]> {
    config
        .tunnel
        .servers
        .iter()
        .map(|s| s.address.get().to_string())
        .collect()
}

/// Whether any of `targets` takes a TCP connect within [`backoff::PROBE_EVERY`]; the
/// socket is closed at once (the server sees a connection end before its handshake).
async fn probe(targets: &[String]) -> bool {
    for t in targets {
        let connect = TcpStream::connect(t.as_str());
        if let Ok(Ok(_)) = tokio::time::timeout(backoff::PROBE_EVERY, connect).await {
            return true;
        }
    }
    false
}

/// A pseudo-random number in `[0, 1)` for jitter; quality does not matter.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl Actor for Dialer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(settings) = self.servers.take() {
            let registry = self.hub.stats.endpoints.clone();
            let log = self.log.new(slog::o!("actor" => "balancer"));
            let balancer = Balancer::new(SERVICE.to_string(), *settings, registry, log);
            let addr = supervise::start(balancer, "balancer", OnStop::Restart, &self.log);
            // Set once: `servers` is taken by the first start only.
            let _ = self.shown.set(addr.clone());
            self.balancer = Some(addr);
        }
        // Again after a restart only when no session is up or being made.
        if self.connection.is_none() {
            self.dial(ctx);
        }
    }
}

/// Nothing to rebuild: the target, backoff, balancer and live session are kept;
/// `started` dials again only when no session is up.
impl Supervised for Dialer {}

panic_on_fault!(Dialer);

impl Handler<SessionClosed> for Dialer {
    type Result = ();
    fn handle(&mut self, msg: SessionClosed, ctx: &mut Context<Self>) {
        self.hub.set_default(None);
        self.connection = None;
        if let Some(lease) = self.lease.take() {
            lease.row().carry(None);
        }
        if self.stopping {
            return;
        }
        if std::mem::take(&mut self.rehandshaking) {
            info!(
                self.log,
                "tunnel closed for a re-handshake with the renewed certificate"
            );
        } else {
            warn!(self.log, "tunnel down";
                "code" => msg.end.code.unwrap_or(ErrorCode::PeerClosed), "reason" => &msg.end.reason);
        }
        if let Some(a) = &self.audit {
            a.do_send(Record {
                event: "tunnel_down",
                fields: json!({"peer": msg.peer, "reason": msg.end.reason}),
            });
        }
        // Dial at once: the server may only have restarted.
        self.dial(ctx);
    }
}

/// Apply a reloaded configuration to the next dial: servers (to the balancer: added,
/// removed, reordered; kept ones keep their health and breaker), server name, TLS
/// material, retry policy. The live session is not touched.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Box<Config>);

impl Handler<Reconfigure> for Dialer {
    type Result = ();
    fn handle(&mut self, msg: Reconfigure, _: &mut Context<Self>) {
        match Target::from_config(&msg.0) {
            Ok(t) => self.target = t,
            Err(e) => warn!(self.log, "new dial target refused, old one kept";
                "code" => e.code(), "error" => %e),
        }
        let servers = balancer::Settings::for_servers(&msg.0);
        match &self.balancer {
            Some(b) => b.do_send(balancer::Reconfigure(servers)),
            None => self.servers = Some(Box::new(servers)),
        }
        self.redial.set_backoff(backoff_of(&msg.0));
        self.probe_targets = probe_targets(&msg.0);
        self.keepalive = msg.0.tunnel.keepalive.duration();
    }
}

/// Put a TLS configuration built from renewed files (by the certificate watcher) in
/// use for the next dial. With `rehandshake` (our own certificate or key changed) the
/// live session is closed and the tunnel dialed again at once, so the server sees
/// the new certificate: a controlled reconnect, since the server lets only one
/// session hold our inner address (no make-before-break).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SwapTls {
    /// The new configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// Whether to re-handshake now.
    pub rehandshake: bool,
}

impl Handler<SwapTls> for Dialer {
    type Result = ();
    fn handle(&mut self, msg: SwapTls, _: &mut Context<Self>) {
        self.target.tls = msg.config;
        if msg.rehandshake {
            self.renewals += 1;
            self.rehandshake();
        }
    }
}

impl Dialer {
    /// Closes the live session to dial again at once with the renewed certificate.
    fn rehandshake(&mut self) {
        if self.stopping || self.rehandshaking {
            return;
        }
        if let Some(c) = &self.connection {
            info!(self.log, "re-handshaking with the renewed certificate");
            self.rehandshaking = true;
            c.do_send(CloseSession);
        }
    }
}

/// Stop dialing and close the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Dialer {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.stopping = true;
        if let Some(c) = &self.connection {
            c.do_send(CloseSession);
        }
        ctx.stop();
    }
}

/// One round: a TCP connection from the balancer (which fails over between the
/// servers), then the TLS and session handshakes on it, whose outcome the server's
/// breaker hears. The session and its lease, or whether a server was reached (it
/// took the TCP connect but the handshake failed); logged and counted.
async fn dial_round(
    target: &Target,
    balancer: &Addr<Balancer>,
    hub: &Arc<Hub>,
    log: &Logger,
) -> Result<(Established, Lease), bool> {
    let started = Instant::now();
    let Connected { socket, mut lease } = match balancer.send(ConnectUnconfirmed).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            hub.stats.handshake_failed(ErrorCode::Io);
            warn!(log, "dial failed"; "code" => e.code, "reason" => &e.message);
            return Err(false);
        }
        Err(e) => {
            warn!(log, "dial failed"; "code" => ErrorCode::Internal,
                "reason" => %format_args!("servers' balancer: {e}"));
            return Err(false);
        }
    };
    let server = lease.address().to_string();
    let tcp = match Connected::socket_here(socket) {
        Ok(tcp) => tcp,
        Err(e) => {
            hub.stats.handshake_failed(ErrorCode::Io);
            warn!(log, "dial failed"; "server" => &server, "code" => ErrorCode::Io,
                "reason" => %format_args!("socket: {e}"));
            return Err(false);
        }
    };
    let failed = match tokio::time::timeout(HANDSHAKE_TIMEOUT, dial_one(target, tcp, &server, hub))
        .await
    {
        Ok(Ok(est)) => {
            lease.confirm(true);
            slog::debug!(log, "dialed"; "server" => &server, "ms" => started.elapsed().as_millis() as u64);
            return Ok((est, lease));
        }
        Ok(Err(f)) => f,
        Err(_) => Failed::new(ErrorCode::Timeout, "no session within the time limit"),
    };
    lease.confirm(false);
    hub.stats.handshake_failed(failed.code);
    if failed.code == ErrorCode::AccessDenied
        || failed.code == ErrorCode::BadAddress
        || failed.code == ErrorCode::AddressInUse
    {
        warn!(log, "tunnel refused"; "server" => &server, "code" => failed.code, "reason" => &failed.reason);
    } else {
        warn!(log, "dial failed"; "server" => &server, "code" => failed.code, "reason" => &failed.reason);
    }
    // A connection cut mid-handshake is a server going away, not one refusing.
    Err(failed.code != ErrorCode::Io)
}

/// The TLS and session handshakes on `tcp`, connected to `server`.
async fn dial_one(
    target: &Target,
    tcp: TcpStream,
    server: &str,
    hub: &Arc<Hub>,
) -> Result<Established, Failed> {
    let remote = tcp
        .peer_addr()
        .map_or_else(|_| server.to_string(), |a| a.to_string());
    let mut tls =
        crate::tunnel::record::client(target.tls.clone(), target.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                let e = tls::TlsError::from_handshake(&e.into());
                Failed::new(e.code(), e.to_string())
            })?;
    let hello = Hello {
        version: codec::VERSION,
        address: target.address,
        capabilities: Capabilities {
            gso: hub.offload,
            compression: target
                .compression
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            ..Capabilities::default()
        },
    };
    let payload =
        serde_json::to_vec(&hello).map_err(|e| Failed::new(ErrorCode::Internal, e.to_string()))?;
    handshake::write_frame(&mut tls, &Frame::Hello(&payload)).await?;
    let (kind, payload, leftover) = handshake::read_frame(&mut tls).await?;
    match kind {
        Kind::Accept => {}
        Kind::Reject => {
            let r: Reject = serde_json::from_slice(&payload)
                .map_err(|e| Failed::new(ErrorCode::Protocol, format!("bad reject: {e}")))?;
            let code = ErrorCode::ALL
                .iter()
                .copied()
                .find(|c| c.as_str() == r.code)
                .unwrap_or(ErrorCode::AccessDenied);
            return Err(Failed::new(code, r.reason));
        }
        Kind::Hello => return Err(Failed::new(ErrorCode::Protocol, "server sent hello")),
    }
    let accept: Accept = serde_json::from_slice(&payload)
        .map_err(|e| Failed::new(ErrorCode::Protocol, format!("bad accept: {e}")))?;
    let compression = match accept.compression.as_deref() {
        None => None,
        Some(name) => match target.compression.filter(|a| a.as_str() == name) {
            Some(a) => Some(a),
            None => {
                let why = format!("server chose compression {name:?}, which was not offered");
                return Err(Failed::new(ErrorCode::Protocol, why));
            }
        },
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let peer = Arc::new(PeerTx::new(tx, accept.gso && hub.offload));
    let name = target.server_name.to_str().into_owned();
    let counters = peer.counters.clone();
    let session = Session::starting(name, remote, accept.address, compression, counters);
    Ok(Established {
        stream: tls,
        leftover,
        session,
        peer,
        rx,
        route: None,
    })
}
