//! The Daemon actor: root of the supervision tree.
//!
//! It owns the running [`Config`], starts the children, and turns signals into
//! lifecycle: SIGHUP reloads (load, validate, diff, hand each change to its owner; a
//! bad file is refused and the running configuration stays), SIGTERM and SIGINT stop
//! gracefully, and a second stop signal forces the exit.
//!
//! A graceful stop first stops taking new tunnels' streams and lets the live layer-4
//! streams finish, up to `connection.drain_timeout` (each stream's task holds a
//! drain token: the last one dropped ends the wait, nothing sleeps); then it closes
//! the sessions, cutting what streams are left, and waits for the children's drain
//! tokens for the rest of the grace period (at least `CLOSE_GRACE`, 2 s).
//!
//! Signals come from tokio's per-signal streams rather than `ctrlc`: `ctrlc` handles
//! SIGINT only, and with its `termination` feature SIGHUP lands in the same handler,
//! where it could not be told apart from a stop.

pub mod health;
pub mod services;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use serde_json::json;
use slog::{debug, error, info, warn, Logger};
use sssonector_config::{diff, load, mode_of, Change, Component, Config, LogLevel, Mode};
use tokio::signal::unix::{signal, SignalKind};

use self::health::ComponentState;
pub use self::services::EndpointOp;
use self::services::Services;
use crate::audit::{AuditActor, Record, Reopen};
use crate::balancer::registry::{EndpointChange, EndpointEvent};
use crate::balancer::Balancer;
use crate::certs::{self, CertWatcher};
use crate::control::protocol::SetLogLevel;
use crate::control::{self, ControlSocketActor, Router};
use crate::dialer::{self, Dialer};
use crate::drain::Drain;
use crate::error::{Error, Result};
use crate::listener::{self, Listener};
use crate::logging::LogHandle;
use crate::metrics::http::PrometheusServer;
use crate::metrics::Metrics;
use crate::privileges;
use crate::ratelimit::{self, RateLimiter};
use crate::snmp::agent::{self, Agent, SnmpAgent};
use crate::snmp::mib;
use crate::snmp::trap::{self, TrapSender};
use crate::snmp::usm::Engine;
use crate::snmp::v3::Usm;
use crate::supervise::{self, OnStop};
use crate::tun::{self, TunAdapter};
use crate::tunnel::busy::BusyPoll;
use crate::tunnel::stats::Stats;
use crate::tunnel::tls;

/// Reload the configuration file (SIGHUP, and later `ctl reload`).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<Change>>")]
pub struct Reload;

/// Stop gracefully; a second `Stop` forces the exit.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop {
    /// Why, for the log and the audit trail: `SIGTERM`, `SIGINT`, `ctl`.
    pub reason: &'static str,
}

/// `status`: mode, uptime, configuration, components.
#[derive(Message, Debug)]
#[rtype(result = "serde_json::Value")]
pub struct GetStatus;

/// `health`: checks and verdict.
#[derive(Message, Debug)]
#[rtype(result = "serde_json::Value")]
pub struct GetHealth;

/// `log.level`: reports the level, after setting it when one is given.
impl Message for SetLogLevel {
    type Result = LogLevel;
}

/// An endpoint transition as an audit event name and fields.
fn endpoint_record(event: &EndpointEvent) -> (&'static str, serde_json::Value) {
    let name = match event.change {
        EndpointChange::Down => "endpoint_down",
        EndpointChange::Up => "endpoint_up",
        EndpointChange::BreakerOpened => "breaker_opened",
        EndpointChange::BreakerClosed => "breaker_closed",
    };
    (
        name,
        json!({ "service": event.service, "endpoint": event.address }),
    )
}

/// Exit status when a second stop signal cuts the drain short.
const FORCED_EXIT: i32 = 130;

/// How long closing the sessions may take at least, after the streams' drain used
/// up `connection.drain_timeout`: a goodbye frame and a TLS close each.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The root actor.
pub struct Daemon {
    config: Config,
    /// `config.digest()`, computed once per load: `status` is asked for often.
    digest: String,
    path: PathBuf,
    log: Logger,
    log_handle: LogHandle,
    audit: Option<Addr<AuditActor>>,
    audit_writable: Arc<AtomicBool>,
    control_listener: Option<UnixListener>,
    control: Option<Addr<ControlSocketActor>>,
    drain: Option<Drain>,
    started: Instant,
    /// The data path's own multi-threaded runtime: packets never wait for the actix
    /// thread. `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
    /// The tunnel's counters.
    stats: Arc<Stats>,
    /// The data threads' polling before they sleep (`tunnel.busy_poll`, live).
    busy: Arc<BusyPoll>,
    /// The registry `/metrics`, `ctl metrics` and SNMP read.
    metrics: Arc<Metrics>,
    /// Bound in `new` when `monitor.prometheus.enabled`, served from `started`.
    prometheus_listener: Option<std::net::TcpListener>,
    prometheus: Option<Addr<PrometheusServer>>,
    /// Bound in `new` when `monitor.snmp.enabled`, with the SNMPv3 engine state
    /// (persisted then too), served from `started`.
    snmp_socket: Option<(std::net::UdpSocket, Engine)>,
    snmp: Option<Addr<SnmpAgent>>,
    /// What the agent answers with, kept to hand it reloaded credentials.
    snmp_agent: Option<Arc<Agent>>,
    /// Sends SNMP notifications while `monitor.snmp.enabled` and there are
    /// `trap_targets`; started by a reload that adds the first target.
    traps: Option<Addr<TrapSender>>,
    /// Built in `new` (so a failure stops the start), started in `started`.
    pending: Option<Tunnel>,
    tun: Option<Addr<TunAdapter>>,
    listener: Option<Addr<Listener>>,
    dialer: Option<Addr<Dialer>>,
    /// Client: the dialer's balancer over `tunnel.servers`, the `balancer` component.
    tunnel_balancer: Option<Arc<OnceLock<Addr<Balancer>>>>,
    /// Service listeners (client) or balancers (server).
    services: Services,
    /// Keeps the rate limits in force.
    limiter: Option<Addr<RateLimiter>>,
    /// Who the daemon became after binding (`security.user`), if anyone.
    dropped: Option<privileges::Dropped>,
    /// Puts renewed certificates in use; started with the tunnel.
    certs: Option<Addr<CertWatcher>>,
    /// The certificates in use, for `ctl certs`.
    cert_board: Arc<certs::Board>,
}

/// The tunnel's actors, built but not started.
struct Tunnel {
    tun: TunAdapter,
    side: Side,
}

enum Side {
    Server(Listener),
    Client(Dialer),
}

impl Daemon {
    /// A daemon for `config`, loaded from `path`.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` when the certificate, key, CA or CRL cannot be used: better to
    /// refuse to start than to fail on the first peer. `E_CONTROL_IN_USE` or `E_IO`
    /// when the control socket cannot be bound.
    pub fn new(config: Config, path: PathBuf, log: Logger, log_handle: LogHandle) -> Result<Self> {
        check_tls(&config)?;
        let control = &config.control;
        let control_listener = control::bind(&control.socket, control.mode.get().0)?;
        let busy = BusyPoll::new(config.tunnel.busy_poll.duration())
            .map_err(|e| Error::io("data-path busy polling", e))?;
        let busy = Arc::new(busy);
        let spinner = busy.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(data_threads(&config))
            .thread_name("sss-data")
            .on_thread_park(move || spinner.spin())
            .enable_all()
            .build()
            .map_err(|e| Error::io("data-path runtime", e))?;
        let drain = Drain::default();
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new(stats.clone(), config.mode()));
        let built = (|| {
            let prometheus_listener = bind_prometheus(&config)?;
            let snmp_socket = bind_snmp(&config)?;
            let pending =
                Self::build_tunnel(&config, &runtime, &stats, busy.clone(), &drain, &log)?;
            let services = Services::bind(
                &config,
                pending.tun.hub(),
                runtime.handle().clone(),
                log.new(slog::o!("actor" => "services")),
            )?;
            // Last: the device is open and every port bound.
            let dropped = become_user(&config)?;
            Ok((prometheus_listener, snmp_socket, pending, services, dropped))
        })();
        let (prometheus_listener, snmp_socket, pending, services, dropped) = match built {
            Ok(parts) => parts,
            Err(e) => {
                // Dropped here it would wait for its threads inside the actix
                // runtime, which tokio refuses with a panic.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            digest: config.digest(),
            config,
            path,
            log,
            log_handle,
            audit: None,
            audit_writable: Arc::new(AtomicBool::new(false)),
            control_listener: Some(control_listener),
            control: None,
            drain: Some(drain),
            started: Instant::now(),
            runtime: Some(runtime),
            stats,
            busy,
            metrics,
            prometheus_listener,
            prometheus: None,
            snmp_socket,
            snmp: None,
            snmp_agent: None,
            traps: None,
            pending: Some(pending),
            tun: None,
            listener: None,
            dialer: None,
            tunnel_balancer: None,
            services,
            limiter: None,
            dropped,
            certs: None,
            cert_board: Arc::default(),
        })
    }

    fn build_tunnel(
        config: &Config,
        runtime: &tokio::runtime::Runtime,
        stats: &Arc<Stats>,
        busy: Arc<BusyPoll>,
        drain: &Drain,
        log: &Logger,
    ) -> Result<Tunnel> {
        let handle = runtime.handle().clone();
        let tun = TunAdapter::new(
            &config.network,
            handle.clone(),
            stats.clone(),
            busy,
            log.new(slog::o!("actor" => "tun")),
            drain.token(),
        )?;
        let side = match config.mode() {
            Mode::Server => Side::Server(Listener::new(
                config,
                tun.hub(),
                handle,
                None,
                drain.token(),
                log.new(slog::o!("actor" => "listener")),
            )?),
            Mode::Client => Side::Client(Dialer::new(
                config,
                tun.hub(),
                handle,
                None,
                drain.token(),
                log.new(slog::o!("actor" => "dialer")),
            )?),
        };
        Ok(Tunnel { tun, side })
    }

    fn start_tunnel(&mut self) {
        let Some(Tunnel { tun, side }) = self.pending.take() else {
            return;
        };
        self.tun = Some(supervise::start(tun, "tun", OnStop::End, &self.log));
        match side {
            Side::Server(mut l) => {
                l.set_audit(self.audit.clone());
                self.listener = Some(supervise::start(l, "listener", OnStop::End, &self.log));
            }
            Side::Client(mut d) => {
                d.set_audit(self.audit.clone());
                self.tunnel_balancer = Some(d.balancer_slot());
                self.dialer = Some(supervise::start(d, "dialer", OnStop::End, &self.log));
            }
        }
    }

    /// Starts the certificate watcher for the tunnel side just started.
    fn start_certs(&mut self) {
        let side = match (&self.listener, &self.dialer) {
            (Some(l), _) => certs::Side::Server(l.clone()),
            (_, Some(d)) => certs::Side::Client(d.clone()),
            _ => return,
        };
        let (config, board) = (self.config.clone(), self.cert_board.clone());
        let (audit, traps) = (self.audit.clone(), self.traps.clone());
        let metrics = self.metrics.clone();
        let log = self.log.new(slog::o!("actor" => "certs"));
        let watcher = CertWatcher::new(&config, side, board, (audit, traps), metrics, log);
        self.certs = Some(supervise::start(watcher, "certs", OnStop::End, &self.log));
    }

    fn audit(&self, event: &'static str, fields: serde_json::Value) {
        if let Some(audit) = &self.audit {
            audit.do_send(Record { event, fields });
        }
    }

    fn start_audit(&mut self) {
        self.audit = self.config.security.audit_log.clone().map(|path| {
            let log = self.log.new(slog::o!("actor" => "audit"));
            let token = self.drain.as_ref().and_then(Drain::token);
            let writable = self.audit_writable.clone();
            let actor = AuditActor::new(path, writable, log, token);
            supervise::start(actor, "audit", OnStop::Restart, &self.log)
        });
    }

    /// Writes every endpoint health and breaker transition to the audit trail, from
    /// the registry's broadcast (the one SNMP notifications come from). Holds the
    /// audit actor weakly, so a stop is not kept waiting for it; ends when the actor
    /// is gone.
    fn audit_endpoint_events(&self) {
        let Some(audit) = self.audit.as_ref().map(Addr::downgrade) else {
            return;
        };
        let mut events = self.stats.endpoints.subscribe();
        actix_rt::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let (event, fields) = match events.recv().await {
                    Ok(e) => endpoint_record(&e),
                    Err(RecvError::Lagged(lost)) => {
                        ("endpoint_events_lost", json!({ "count": lost }))
                    }
                    Err(RecvError::Closed) => return,
                };
                let Some(audit) = audit.upgrade() else {
                    return;
                };
                if audit.send(Record { event, fields }).await.is_err() {
                    return;
                }
            }
        });
    }

    fn start_limiter(&mut self) {
        let limits = self.stats.limits.clone();
        let policy = self.config.throttle.clone();
        let log = self.log.new(slog::o!("actor" => "ratelimit"));
        let actor = RateLimiter::new(limits, policy, log);
        self.limiter = Some(supervise::start(
            actor,
            "ratelimit",
            OnStop::Restart,
            &self.log,
        ));
    }

    fn start_control(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.control_listener.take() else {
            return;
        };
        let router = Router {
            daemon: ctx.address(),
            limiter: self.limiter.clone(),
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            certs: self.cert_board.clone(),
        };
        let c = &self.config.control;
        let (path, mode, idle) = (c.socket.clone(), c.mode.get().0, c.idle_timeout.duration());
        let max = usize::try_from(c.max_connections).unwrap_or(usize::MAX);
        let log = self.log.new(slog::o!("actor" => "control"));
        let token = self.drain.as_ref().and_then(Drain::token);
        let actor = ControlSocketActor::new(path, mode, idle, listener, router, log, token)
            .with_max_connections(max);
        self.control = Some(supervise::start(
            actor,
            "control",
            OnStop::Restart,
            &self.log,
        ));
    }

    fn start_prometheus(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.prometheus_listener.take() else {
            return;
        };
        let (metrics, daemon) = (self.metrics.clone(), ctx.address());
        let log = self.log.new(slog::o!("actor" => "prometheus"));
        let token = self.drain.as_ref().and_then(Drain::token);
        let actor = PrometheusServer::new(listener, metrics, daemon, log, token);
        self.prometheus = Some(supervise::start(
            actor,
            "prometheus",
            OnStop::End,
            &self.log,
        ));
    }

    fn start_snmp(&mut self) {
        let Some((socket, engine)) = self.snmp_socket.take() else {
            return;
        };
        let snmp = &self.config.monitor.snmp;
        let (mode, mode_name) = match self.config.mode() {
            Mode::Server => (1, "server"),
            Mode::Client => (2, "client"),
        };
        let system = mib::System {
            descr: format!(
                "SSSonector {} ({mode_name}), {}",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS
            ),
            name: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            contact: snmp.contact.clone(),
            location: snmp.location.clone(),
            uptime_ticks: 0,
            mode,
        };
        let usm = Usm::new(engine, &snmp.users);
        let agent = Arc::new(Agent::new(
            agent::community(snmp),
            usm,
            system,
            self.started,
            self.stats.clone(),
            self.metrics.clone(),
        ));
        let log = self.log.new(slog::o!("actor" => "snmp"));
        let token = self.drain.as_ref().and_then(Drain::token);
        self.snmp_agent = Some(agent.clone());
        let actor = SnmpAgent::new(socket, agent, log, token);
        self.snmp = Some(supervise::start(actor, "snmp", OnStop::End, &self.log));
    }

    /// Starts the notification sender when SNMP is on and has somewhere to send to,
    /// unless stopping. Before the tunnel, so no session goes unannounced.
    fn start_traps(&mut self) {
        let snmp = &self.config.monitor.snmp;
        let stopping = self.drain.is_none();
        if self.traps.is_some() || stopping || !snmp.enabled || snmp.trap_targets.is_empty() {
            return;
        }
        let sender = TrapSender::new(
            trap::Settings::from_config(&self.config),
            self.stats.clone(),
            self.metrics.clone(),
            // SNMPv3 targets are sealed by the agent's USM engine (its users' keys).
            self.snmp_agent.clone().map(|a| a as Arc<dyn trap::SealV3>),
            self.started,
            self.log.new(slog::o!("actor" => "snmp_traps")),
            self.drain.as_ref().and_then(Drain::token),
        );
        self.traps = Some(supervise::start(
            sender,
            "snmp_traps",
            OnStop::End,
            &self.log,
        ));
    }

    fn components(&self) -> Vec<(&'static str, ComponentState)> {
        let audit = match &self.audit {
            None => ComponentState::Off,
            Some(_) if self.audit_writable.load(Ordering::Relaxed) => ComponentState::Running,
            Some(_) => ComponentState::Failed,
        };
        let control = if self.control.is_some() {
            ComponentState::Running
        } else {
            ComponentState::Off
        };
        let mut parts = vec![
            ("daemon", ComponentState::Running),
            ("control", control),
            ("audit", audit),
        ];
        let on = |running: bool| {
            if running {
                ComponentState::Running
            } else {
                ComponentState::Failed
            }
        };
        parts.push(("tun", on(self.tun.as_ref().is_some_and(Addr::connected))));
        let side = match (&self.listener, &self.dialer) {
            (Some(l), _) => l.connected(),
            (_, Some(d)) => d.connected(),
            _ => false,
        };
        parts.push(("tunnel", on(side)));
        parts.push((
            "metrics",
            match &self.prometheus {
                None => ComponentState::Off,
                Some(p) => on(p.connected()),
            },
        ));
        parts.push((
            "snmp",
            match &self.snmp {
                None => ComponentState::Off,
                Some(a) => on(a.connected()),
            },
        ));
        parts.push((
            "snmp_traps",
            match &self.traps {
                None => ComponentState::Off,
                Some(t) => on(t.connected()),
            },
        ));
        let (listeners, balancers) = self.services.connected();
        let of = |actors: Option<bool>| actors.map_or(ComponentState::Off, on);
        parts.push(("services", of(listeners.or(balancers))));
        // A client balances over its tunnel servers (its services have none).
        let tunnel = self
            .tunnel_balancer
            .as_ref()
            .map(|slot| slot.get().is_some_and(Addr::connected));
        parts.push(("balancer", of(balancers.or(tunnel))));
        let limiting = self.config.throttle.enabled;
        parts.push((
            "ratelimit",
            match &self.limiter {
                Some(l) if limiting => on(l.connected()),
                _ => ComponentState::Off,
            },
        ));
        // An actor given up on after too many panics is failed, whatever else holds.
        let restarts = supervise::restarts();
        for (component, state) in &mut parts {
            let actors: &[&str] = match *component {
                "metrics" => &["prometheus"],
                "services" => &["service", "balancer"],
                "tunnel" => &["listener", "dialer"],
                "balancer" => &["balancer", "breaker"],
                other => &[other][..],
            };
            if actors.iter().any(|a| restarts.gave_up(a)) {
                *state = ComponentState::Failed;
            }
        }
        parts
    }

    fn listen_for_signals(&self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let log = self.log.clone();
        let registered = (|| {
            Ok::<_, std::io::Error>((
                signal(SignalKind::hangup())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })();
        let (mut hup, mut term, mut int) = match registered {
            Ok(s) => s,
            Err(e) => {
                let err = Error::io("signal handlers", e);
                error!(log, "cannot install signal handlers"; "code" => err.code(), "error" => %err);
                System::current().stop_with_code(1);
                return;
            }
        };
        actix_rt::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = hup.recv() => None,
                    _ = term.recv() => Some("SIGTERM"),
                    _ = int.recv() => Some("SIGINT"),
                };
                match msg {
                    None => {
                        // The reply is logged by the handler itself.
                        let _ = addr.send(Reload).await;
                    }
                    Some(reason) => addr.do_send(Stop { reason }),
                }
            }
        });
    }

    /// Applies the changes that concern live components and returns the configuration
    /// now in force. Keys fixed for the process's life keep their running values with a
    /// warning; a mode change never gets here, it refuses the whole reload.
    fn apply(&mut self, new: Config, changes: &[Change]) -> Config {
        for change in changes {
            if change.needs_restart() {
                warn!(self.log, "change needs a restart, running value kept"; "key" => %change.key);
            } else if change.component == Component::Logging {
                self.log_handle.set_level(new.logging.level);
            }
            // After acting, so a raised level already shows this line.
            debug!(self.log, "configuration change"; "key" => %change.key, "component" => ?change.component);
        }
        let new = new.keeping_restart_keys(&self.config);
        self.busy.set_spin(new.tunnel.busy_poll.duration());
        // Each tunnel actor takes what concerns it; all of it applies to new
        // handshakes and dials, none of it drops a live session.
        if let Some(l) = &self.listener {
            l.do_send(listener::Reconfigure(Box::new(new.clone())));
        }
        if let Some(d) = &self.dialer {
            d.do_send(dialer::Reconfigure(Box::new(new.clone())));
        }
        if let Some(c) = &self.certs {
            c.do_send(certs::Reconfigure(Box::new(new.clone())));
        }
        if let Some(agent) = &self.snmp_agent {
            agent.reconfigure(&new.monitor.snmp);
        }
        self.services.apply(&new);
        let limits_changed = changes
            .iter()
            .any(|c| c.component == Component::RateLimiter);
        if let (true, Some(l)) = (limits_changed, &self.limiter) {
            l.do_send(ratelimit::Configure(new.throttle.clone()));
        }
        if let Some(t) = &self.tun {
            let routes = new.network.routes.iter().map(|r| *r.get()).collect();
            t.do_send(tun::SetRoutes(routes));
        }
        new
    }

    /// Hands the notification settings in force to the sender, or starts it when
    /// the reload gave it its first target.
    fn apply_traps(&mut self) {
        match &self.traps {
            Some(t) => t.do_send(trap::Reconfigure(trap::Settings::from_config(&self.config))),
            None => self.start_traps(),
        }
    }

    /// Loads and checks the file for a reload.
    fn load_for_reload(&self) -> Result<Config> {
        // Before the full load: a server file switched to `mode: client` would otherwise
        // be judged by the client's rules and answer E_CONFIG_INVALID.
        if mode_of(&self.path).is_some_and(|m| Some(m) != self.config.mode) {
            return Err(Error::RestartRequired("mode".into()));
        }
        let new = load(&self.path)?;
        if new.mode != self.config.mode {
            return Err(Error::RestartRequired("mode".into()));
        }
        check_tls(&new)?;
        Ok(new)
    }
}

/// Binds a monitoring port at start when it is `enabled`, non-blocking for the actor
/// that adopts it, so a port in use stops the start instead of failing later; `key`
/// names the setting in the error.
fn bind_enabled<T>(
    enabled: bool,
    key: &str,
    addr: std::net::SocketAddr,
    bind: impl FnOnce(std::net::SocketAddr) -> std::io::Result<T>,
) -> Result<Option<T>> {
    if !enabled {
        return Ok(None);
    }
    bind(addr)
        .map(Some)
        .map_err(|e| Error::io(format!("{key} {addr}"), e))
}

fn bind_prometheus(config: &Config) -> Result<Option<std::net::TcpListener>> {
    let p = &config.monitor.prometheus;
    bind_enabled(
        p.enabled,
        "monitor.prometheus.listen",
        *p.listen.get(),
        |a| {
            let l = std::net::TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            Ok(l)
        },
    )
}

fn bind_snmp(config: &Config) -> Result<Option<(std::net::UdpSocket, Engine)>> {
    let s = &config.monitor.snmp;
    let Some(socket) = bind_enabled(s.enabled, "monitor.snmp.listen", *s.listen.get(), |a| {
        let u = std::net::UdpSocket::bind(a)?;
        u.set_nonblocking(true)?;
        Ok(u)
    })?
    else {
        return Ok(None);
    };
    Ok(Some((socket, snmp_engine(s)?)))
}

/// The SNMPv3 engine: persisted in `engine_file` when there are users, so its boot
/// count grows across restarts; a throwaway one otherwise (v2c only).
fn snmp_engine(snmp: &sssonector_config::Snmp) -> Result<Engine> {
    if snmp.users.is_empty() {
        return Ok(Engine::ephemeral());
    }
    let path = &snmp.engine_file;
    let what = || format!("monitor.snmp.engine_file {}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(what(), e))?;
    }
    Engine::load_or_create(path).map_err(|e| Error::io(what(), e))
}

/// Threads for the data-path runtime: `tunnel.threads`, or half the cores (1 to 8) on
/// a server and 1 on a client. Measured on 2 cores with one tunnel: 1 thread moved
/// 6.8 Gbit/s at 1.24 CPU-s/GB, 2 threads 6.4 Gbit/s at 1.42 (cross-thread wakeups).
fn data_threads(config: &Config) -> usize {
    match (config.tunnel.threads, config.mode()) {
        (0, Mode::Client) => 1,
        (0, Mode::Server) => std::thread::available_parallelism()
            .map_or(1, |n| n.get() / 2)
            .clamp(1, 8),
        (n, _) => usize::try_from(n).unwrap_or(1),
    }
}

/// Becomes `security.user` when set. The files the daemon writes later as that user
/// (the audit trail, the log file) are made now and handed over, since a user may not
/// be able to create them where root can.
fn become_user(config: &Config) -> Result<Option<privileges::Dropped>> {
    let Some(user) = config.security.user.as_deref() else {
        return Ok(None);
    };
    let group = config.security.group.as_deref();
    let (uid, gid) = privileges::resolve(user, group)?;
    let files = [&config.security.audit_log, &config.logging.file];
    for path in files.into_iter().flatten() {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        nix::unistd::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(path, std::io::Error::from(e)))?;
    }
    privileges::drop_to(user, group).map(Some)
}

fn check_tls(config: &Config) -> Result<()> {
    match config.mode() {
        Mode::Server => tls::server_config(&config.tunnel, &config.security).map(drop)?,
        Mode::Client => tls::client_config(&config.tunnel, &config.security).map(drop)?,
    }
    Ok(())
}

impl Actor for Daemon {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_audit();
        self.audit_endpoint_events();
        self.start_limiter();
        self.start_control(ctx);
        self.start_prometheus(ctx);
        self.start_snmp();
        self.start_traps();
        self.services.start(&self.config);
        self.start_tunnel();
        self.start_certs();
        self.listen_for_signals(ctx);
        info!(self.log, "daemon started";
            "mode" => self.config.mode().as_str(),
            "config" => %self.path.display(),
            "digest" => &self.digest,
            "pid" => std::process::id());
        self.audit(
            "daemon_started",
            json!({ "config": self.path, "digest": self.digest }),
        );
        if let Some(d) = &self.dropped {
            let kept: Vec<String> = privileges::KEPT.iter().map(ToString::to_string).collect();
            info!(self.log, "privileges dropped";
                "user" => &d.user, "uid" => d.uid, "gid" => d.gid, "kept" => kept.join(","));
            self.audit(
                "privileges_dropped",
                json!({ "user": d.user, "uid": d.uid, "gid": d.gid, "kept": kept }),
            );
        }
    }
}

impl Handler<Reload> for Daemon {
    type Result = Result<Vec<Change>>;

    fn handle(&mut self, _msg: Reload, _ctx: &mut Self::Context) -> Self::Result {
        // First, so a logrotate's move is followed even when the file is refused.
        if let Some(audit) = &self.audit {
            audit.do_send(Reopen);
        }
        let new = match self.load_for_reload() {
            Ok(c) => c,
            Err(err) => {
                warn!(self.log, "reload refused, running configuration kept";
                    "code" => err.code(), "error" => %err);
                self.audit(
                    "reload_refused",
                    json!({ "code": err.code(), "error": err.to_string() }),
                );
                return Err(err);
            }
        };
        let changes = diff(&self.config, &new);
        self.config = self.apply(new, &changes);
        self.apply_traps();
        self.digest = self.config.digest();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        let restart: Vec<&str> = changes
            .iter()
            .filter(|c| c.needs_restart())
            .map(|c| c.key.as_str())
            .collect();
        info!(self.log, "configuration reloaded";
            "changes" => keys.join(","), "restart_needed" => restart.join(","),
            "digest" => &self.digest);
        self.audit(
            "config_reloaded",
            json!({ "changes": keys, "restart_needed": restart, "digest": self.digest }),
        );
        Ok(changes)
    }
}

impl Handler<GetStatus> for Daemon {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        let components: serde_json::Map<String, serde_json::Value> = self
            .components()
            .into_iter()
            .map(|(name, state)| (name.to_string(), json!(state)))
            .collect();
        MessageResult(json!({
            "mode": self.config.mode().as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "config": { "file": self.path, "digest": self.digest },
            "log_level": self.log_handle.level().as_str(),
            "user": self.dropped.as_ref().map(|d| json!({ "name": d.user, "uid": d.uid, "gid": d.gid })),
            "stopping": self.drain.is_none(),
            "components": components,
            "restarts": supervise::restarts().to_json(),
            "tunnel": self.stats.to_json(),
        }))
    }
}

impl Handler<GetHealth> for Daemon {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _msg: GetHealth, _ctx: &mut Self::Context) -> Self::Result {
        let client = self.config.mode() == Mode::Client;
        let link = health::connectivity(client, self.stats.current() as u64);
        MessageResult(health::assess(
            &self.components(),
            health::read_resources(),
            link,
        ))
    }
}

impl Handler<EndpointOp> for Daemon {
    type Result = ResponseFuture<Result<serde_json::Value>>;

    fn handle(&mut self, op: EndpointOp, _ctx: &mut Self::Context) -> Self::Result {
        self.services.command(op)
    }
}

impl Handler<SetLogLevel> for Daemon {
    type Result = MessageResult<SetLogLevel>;

    fn handle(&mut self, msg: SetLogLevel, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(level) = msg.level {
            self.log_handle.set_level(level);
            info!(self.log, "log level set"; "level" => level.as_str());
        }
        MessageResult(self.log_handle.level())
    }
}

/// `fault` (debug builds): the named actor gets a message whose handler panics.
#[cfg(debug_assertions)]
impl Message for crate::control::protocol::Fault {
    type Result = Result<serde_json::Value>;
}

#[cfg(debug_assertions)]
impl Handler<crate::control::protocol::Fault> for Daemon {
    type Result = Result<serde_json::Value>;

    fn handle(
        &mut self,
        f: crate::control::protocol::Fault,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        use crate::supervise::Panic;
        fn send<A>(addr: Option<&Addr<A>>) -> bool
        where
            A: Actor<Context = Context<A>> + Handler<Panic>,
        {
            addr.map(|a| a.do_send(Panic)).is_some()
        }
        let service = f.service.as_deref();
        let sent = match f.actor.as_str() {
            "balancer" => send(self.services.balancer_named(service)),
            "service" => send(self.services.listener_named(service)),
            "snmp" => send(self.snmp.as_ref()),
            "ratelimit" => send(self.limiter.as_ref()),
            "audit" => send(self.audit.as_ref()),
            "control" => send(self.control.as_ref()),
            "prometheus" => send(self.prometheus.as_ref()),
            "snmp_traps" => send(self.traps.as_ref()),
            "tun" => send(self.tun.as_ref()),
            "listener" => send(self.listener.as_ref()),
            "dialer" => send(self.dialer.as_ref()),
            other => {
                return Err(Error::Control(
                    crate::control::protocol::ProtocolError::BadArgs {
                        command: "fault",
                        message: format!("no actor {other:?} to fault"),
                    },
                ))
            }
        };
        if !sent {
            return Err(Error::NotAvailable("fault: that actor is not running"));
        }
        warn!(self.log, "fault injected"; "actor" => &f.actor, "service" => service);
        Ok(json!({ "actor": f.actor, "injected": true }))
    }
}

impl Handler<Stop> for Daemon {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        let Some(drain) = self.drain.take() else {
            warn!(self.log, "second stop request, exiting without waiting"; "reason" => msg.reason);
            System::current().stop_with_code(FORCED_EXIT);
            return;
        };
        let grace = self.config.connection.drain_timeout.duration();
        info!(self.log, "daemon stopping";
            "reason" => msg.reason,
            "grace_ms" => grace.as_millis() as u64,
            "uptime_s" => self.started.elapsed().as_secs());
        self.audit("daemon_stopping", json!({ "reason": msg.reason }));
        // Children stop when their last address is gone, after their queued messages.
        self.control = None;
        self.prometheus = None;
        self.snmp = None;
        self.snmp_agent = None;
        // Its task keeps sending until the sessions below have ended, on its token.
        self.traps = None;
        self.audit = None;
        // Its address dropped with the message, so its supervisor does not restart it.
        if let Some(c) = self.certs.take() {
            c.do_send(certs::Shutdown);
        }
        // No new streams; the live ones may finish within the grace period, on
        // sessions kept open for them.
        let streams = self.services.stop();
        let live = self.stats.streams.snapshot().active;
        let (listener, dialer, tun) = (self.listener.take(), self.dialer.take(), self.tun.take());
        let stats = self.stats.clone();
        let runtime = self.runtime.take();
        let log = self.log.clone();
        ctx.spawn(
            async move {
                let began = Instant::now();
                if let Some(streams) = streams.filter(|_| live > 0) {
                    streams.wait(grace).await;
                    let cut = stats.streams.snapshot().active;
                    let waited_ms = began.elapsed().as_millis() as u64;
                    if cut == 0 {
                        info!(log, "streams drained"; "drained" => live, "cut" => 0, "waited_ms" => waited_ms);
                    } else {
                        warn!(log, "streams drained, the rest cut";
                            "code" => crate::ErrorCode::StreamReset,
                            "drained" => live.saturating_sub(cut), "cut" => cut, "waited_ms" => waited_ms);
                    }
                }
                // Then the sessions (resetting what streams are left) and the device.
                if let Some(l) = listener {
                    l.do_send(listener::Shutdown);
                }
                if let Some(d) = dialer {
                    d.do_send(dialer::Shutdown);
                }
                if let Some(t) = tun {
                    t.do_send(tun::Shutdown);
                }
                let rest = grace.saturating_sub(began.elapsed()).max(CLOSE_GRACE);
                if drain.wait(rest).await {
                    info!(log, "daemon stopped");
                } else {
                    warn!(log, "drain timeout, remaining work cut"; "grace_ms" => grace.as_millis() as u64);
                }
                if let Some(rt) = runtime {
                    rt.shutdown_background();
                }
                System::current().stop_with_code(0);
            }
            .into_actor(self),
        );
    }
}
