//! The Dialer actor (client): connects to the first of `tunnel.servers` that answers,
//! verifies its certificate and `server_name`, runs the session handshake and starts
//! a Connection. When the session ends, or a round over all servers fails, it dials
//! again after [`Backoff`]'s delay, forever.

pub mod backoff;

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use rustls::pki_types::ServerName;
use serde_json::json;
use slog::{info, warn, Logger};
use sssonector_config::Config;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_rustls::{TlsConnector, TlsStream};

use self::backoff::Backoff;
use crate::audit::{AuditActor, Record};
use crate::connection::{CloseSession, Connection, Established, SessionClosed};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode};
use crate::tunnel::codec::{self, Frame};
use crate::tunnel::compress::Algorithm;
use crate::tunnel::handshake::{self, Failed, Kind, HANDSHAKE_TIMEOUT};
use crate::tunnel::hub::{Hub, PeerTx, QUEUE};
use crate::tunnel::session::{Accept, Capabilities, Hello, Reject};
use crate::tunnel::stats::Session;
use crate::tunnel::tls;

/// What dialing needs, rebuilt on reload.
#[derive(Clone)]
pub struct Target {
    servers: Vec<String>,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    address: IpAddr,
    connect_timeout: Duration,
    keepalive_idle: Option<Duration>,
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
            servers: t
                .servers
                .iter()
                .map(|s| s.address.get().to_string())
                .collect(),
            server_name,
            connector: TlsConnector::from(tls::client_config(t, &config.security)?),
            address,
            connect_timeout: config.connection.connect_timeout.duration(),
            keepalive_idle: config
                .connection
                .keepalive
                .then(|| config.connection.keepalive_idle.duration()),
            compression: Algorithm::from_config(t.compression),
        })
    }
}

/// The client's dialer.
pub struct Dialer {
    target: Target,
    backoff: Backoff,
    hub: Arc<Hub>,
    runtime: Handle,
    keepalive: Duration,
    connection: Option<Addr<Connection>>,
    sessions: u64,
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
        let c = &config.connection;
        Ok(Self {
            target: Target::from_config(config)?,
            backoff: Backoff::new(c.retry_attempts, c.retry_interval.duration()),
            hub,
            runtime,
            keepalive: config.tunnel.keepalive.duration(),
            connection: None,
            sessions: 0,
            stopping: false,
            audit,
            drain,
            log,
        })
    }

    /// Where security events go (the audit actor starts after this one is built).
    pub fn set_audit(&mut self, audit: Option<Addr<AuditActor>>) {
        self.audit = audit;
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let target = self.target.clone();
        let hub = self.hub.clone();
        let log = self.log.clone();
        let task = self
            .runtime
            .spawn(async move { dial_round(&target, &hub, &log).await });
        ctx.spawn(
            async move { task.await.ok() }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Some(Some(est)) => act.established(est, ctx),
                    _ => act.retry_later(ctx),
                }),
        );
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff.failed(jitter());
        if self.backoff.failures() == 1 || self.backoff.failures() % 10 == 0 {
            info!(self.log, "dialing again"; "in_ms" => delay.as_millis() as u64,
                "failed_rounds" => self.backoff.failures());
        }
        ctx.run_later(delay, |act, ctx| act.dial(ctx));
    }

    fn established(&mut self, est: Established, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.backoff.succeeded();
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
        self.dial(ctx);
    }
}

impl Handler<SessionClosed> for Dialer {
    type Result = ();
    fn handle(&mut self, msg: SessionClosed, ctx: &mut Context<Self>) {
        self.hub.set_default(None);
        self.connection = None;
        if self.stopping {
            return;
        }
        warn!(self.log, "tunnel down";
            "code" => msg.end.code.unwrap_or(ErrorCode::PeerClosed), "reason" => &msg.end.reason);
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

/// Apply a reloaded configuration to the next dial: servers, server name, TLS
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
        let c = &msg.0.connection;
        self.backoff = Backoff::new(c.retry_attempts, c.retry_interval.duration());
        self.keepalive = msg.0.tunnel.keepalive.duration();
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

/// Tries every server once, in order; the first session established wins.
async fn dial_round(target: &Target, hub: &Arc<Hub>, log: &Logger) -> Option<Established> {
    for server in &target.servers {
        let started = Instant::now();
        match tokio::time::timeout(
            target.connect_timeout + HANDSHAKE_TIMEOUT,
            dial_one(target, server, hub),
        )
        .await
        {
            Ok(Ok(est)) => {
                slog::debug!(log, "dialed"; "server" => server, "ms" => started.elapsed().as_millis() as u64);
                return Some(est);
            }
            Ok(Err(f)) => {
                hub.stats.handshake_failed(f.code);
                if f.code == ErrorCode::AccessDenied
                    || f.code == ErrorCode::BadAddress
                    || f.code == ErrorCode::AddressInUse
                {
                    warn!(log, "tunnel refused"; "server" => server, "code" => f.code, "reason" => &f.reason);
                } else {
                    warn!(log, "dial failed"; "server" => server, "code" => f.code, "reason" => &f.reason);
                }
            }
            Err(_) => {
                hub.stats.handshake_failed(ErrorCode::Timeout);
                warn!(log, "dial failed"; "server" => server, "code" => ErrorCode::Timeout,
                    "reason" => "no session within the time limit");
            }
        }
    }
    None
}

async fn dial_one(target: &Target, server: &str, hub: &Arc<Hub>) -> Result<Established, Failed> {
    let tcp = tokio::time::timeout(target.connect_timeout, TcpStream::connect(server))
        .await
        .map_err(|_| Failed::new(ErrorCode::Timeout, "connect timed out"))?
        .map_err(|e| Failed::new(ErrorCode::Io, format!("connect: {e}")))?;
    let remote = tcp
        .peer_addr()
        .map_or_else(|_| server.to_string(), |a| a.to_string());
    handshake::tune_socket(&tcp, target.keepalive_idle);
    let tls = target
        .connector
        .connect(target.server_name.clone(), tcp)
        .await
        .map_err(|e| {
            let e = tls::TlsError::from_handshake(&e);
            Failed::new(e.code(), e.to_string())
        })?;
    let mut tls = TlsStream::Client(tls);
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
