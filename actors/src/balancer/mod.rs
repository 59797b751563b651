//! Load balancing of a service's streams across its endpoints (issue 6): the
//! [`Balancer`] actor, one per service on a server (and one for a client's tunnel
//! servers), and the pure machines it owns.
//!
//! - [`strategy`] picks an endpoint for a new stream (round robin, least connections,
//!   smooth weighted round robin, or a fixed failover order).
//! - [`health`] turns active health checks into up/down verdicts.
//! - [`registry`] holds every endpoint's numbers, read by `ctl`, Prometheus and SNMP.
//! - Each endpoint also has a circuit breaker, an actor of its own
//!   ([`crate::breaker`]), which the balancer starts and owns.
//!
//! A [`Connect`] gets a connected TCP socket and a [`Lease`]: the failover loop runs
//! in a future outside the actor's mailbox, so a slow backend never delays another
//! stream's pick. Each try picks an endpoint not tried yet (the pool counts it as
//! started at once, so least connections sees connects in progress), asks the
//! endpoint's breaker, connects within `connection.connect_timeout`, and on failure
//! reports it to the breaker and tries the next: at most `1 + balancer.max_retries`
//! connects, all within `balancer.retry_timeout`. A stream sees an error only when
//! every eligible endpoint failed or the budget ran out.
//!
//! Health checks are plain TCP connects every `balancer.health_check`, made
//! concurrently off the mailbox; an endpoint flips only after the configured number
//! of agreeing checks. A stream's failed connect counts against the breaker, not the
//! health verdict: health says "is it there", the breaker "is it coping". When the
//! checks bring a down endpoint back up they also close its breaker: they were its
//! trials, and a restarted backend should not sit idle for a whole `reset_timeout`.
//!
//! Guards ([`Lease`] and the in-flight try) give back what they took when dropped,
//! so a stream that goes away mid-connect or a panicking caller cannot leak an
//! active count or hold a half-open breaker's trial slot.

pub mod health;
pub mod registry;
pub mod strategy;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, warn, Logger};
use sssonector_config::{
    Balancer as BalancerConfig, Breaker as BreakerConfig, Config, HostPort, Service, Strategy,
};
use tokio::net::TcpStream;

use self::health::{HealthTracker, Transition};
use self::registry::{EndpointChange, EndpointRow, Endpoints};
use self::strategy::Pool;
use crate::breaker::machine::{Permit, State as BreakerState};
use crate::breaker::{self, BreakerActor, BreakerChanged};
use crate::error::{Error, ErrorCode};
use crate::supervise::{self, panic_on_fault, OnStop};

/// Shortest health-check interval honoured: a zero would spin.
const MIN_HEALTH_CHECK: Duration = Duration::from_millis(10);

/// An endpoint to balance over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as configured (normalised: trimmed, IPv6 in brackets); the key in
    /// ctl commands, logs, metrics and the registry. A DNS name is resolved at each
    /// connect.
    pub address: String,
    /// Share under weighted round robin; 0 counts as 1.
    pub weight: u32,
}

/// Everything a [`Balancer`] needs, taken from the configuration; it keeps the last
/// one so a restart rebuilds the same pool.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How to pick (ignored when `priority` is set).
    pub strategy: Strategy,
    /// Pick the first eligible target in `targets` order instead of spreading: a
    /// fixed failover order, for a client's tunnel servers, where the configuration
    /// lists the preferred server first.
    pub priority: bool,
    /// The endpoints, in configuration order.
    pub targets: Vec<Target>,
    /// Health checks and failover.
    pub balancer: BalancerConfig,
    /// Each endpoint's breaker rule.
    pub breaker: BreakerConfig,
    /// Time one TCP connect may take.
    pub connect_timeout: Duration,
    /// TCP keepalive idle time on connected sockets; None: no keepalive.
    pub keepalive_idle: Option<Duration>,
}

impl Settings {
    fn common(config: &Config, strategy: Strategy, priority: bool, targets: Vec<Target>) -> Self {
        let c = &config.connection;
        Self {
            strategy,
            priority,
            targets,
            balancer: config.balancer.clone(),
            breaker: config.breaker.clone(),
            connect_timeout: c.connect_timeout.duration(),
            keepalive_idle: c.keepalive.then(|| c.keepalive_idle.duration()),
        }
    }

    /// A server's service: its endpoints and strategy, the daemon's `balancer`,
    /// `breaker` and `connection` sections.
    pub fn for_service(service: &Service, config: &Config) -> Self {
        let targets = service
            .endpoints
            .iter()
            .map(|e| Target {
                address: e.address.get().to_string(),
                weight: e.weight,
            })
            .collect();
        Self::common(config, service.strategy, false, targets)
    }

    /// A client's `tunnel.servers`: in `priority` order (the first healthy server
    /// whose breaker is closed gets the tunnel; the next only when it fails), with
    /// the same health checks and breakers as services' endpoints. The servers'
    /// weights are kept, for a weighted mode should one be wanted later.
    pub fn for_servers(config: &Config) -> Self {
        let targets = config
            .tunnel
            .servers
            .iter()
            .map(|s| Target {
                address: s.address.get().to_string(),
                weight: s.weight,
            })
            .collect();
        Self::common(config, Strategy::RoundRobin, true, targets)
    }
}

/// One endpoint as the balancer tracks it.
struct Backend {
    /// Its index in the pool.
    index: usize,
    /// Tells this endpoint's breaker notices and check results from those of an
    /// earlier endpoint of the same address (removed, then added again).
    id: u64,
    row: Arc<EndpointRow>,
    health: HealthTracker,
    breaker: Addr<BreakerActor>,
    /// A health check is in flight: the next tick skips it rather than pile up.
    checking: bool,
}

/// The balancer of one service: its endpoints, their health and breakers.
pub struct Balancer {
    name: String,
    settings: Settings,
    registry: Arc<Endpoints>,
    log: Logger,
    pool: Pool,
    /// By address.
    backends: HashMap<String, Backend>,
    /// Pool indexes in `settings.targets` order, for `priority`.
    order: Vec<usize>,
    /// Addresses being drained; kept across restarts (an operator's decision).
    draining: HashSet<String>,
    /// Bumped by each restart: finishes of streams picked from the old pool are
    /// ignored, since its indexes mean nothing to the new one.
    epoch: u64,
    /// The last id given to a backend.
    last_id: u64,
    /// Whether the pool was built from the settings since the actor (re)started.
    built: bool,
    checks: Option<SpawnHandle>,
}

impl Balancer {
    /// The balancer of service `name` (e.g. `tunnel` for a client's servers), writing
    /// its endpoints' numbers to `registry`. The pool, the endpoints' rows and their
    /// breakers are made when it starts.
    pub fn new(name: String, settings: Settings, registry: Arc<Endpoints>, log: Logger) -> Self {
        let log = log.new(slog::o!("service" => name.clone()));
        Self {
            pool: Pool::new(settings.strategy),
            name,
            settings,
            registry,
            log,
            backends: HashMap::new(),
            order: Vec::new(),
            draining: HashSet::new(),
            epoch: 0,
            last_id: 0,
            built: false,
            checks: None,
        }
    }

    /// Builds the pool, health trackers, breakers and registry rows from the kept
    /// settings, letting go of any earlier ones. Registry rows are found again, so
    /// their numbers carry over.
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        for (_, b) in self.backends.drain() {
            b.breaker.do_send(breaker::Retire);
        }
        self.pool = Pool::new(self.settings.strategy);
        for t in self.settings.targets.clone() {
            self.add_backend(&t, ctx);
        }
        self.reorder();
        self.built = true;
    }

    /// Adds `t` to the pool and the registry with a fresh tracker and breaker.
    fn add_backend(&mut self, t: &Target, ctx: &mut Context<Self>) {
        let index = self.pool.add(&t.address, t.weight);
        let row = self.registry.row(&self.name, &t.address, t.weight);
        row.set_healthy(true);
        row.set_unknown();
        row.set_breaker(registry::BreakerState::Closed);
        let draining = self.draining.contains(&t.address);
        self.pool.set_draining(&t.address, draining);
        row.set_draining(draining);
        self.last_id += 1;
        let id = self.last_id;
        let actor = BreakerActor::new(
            id,
            &t.address,
            self.settings.breaker.clone(),
            row.clone(),
            ctx.address().downgrade().into(),
            &self.log,
        );
        let backend = Backend {
            index,
            id,
            row,
            health: HealthTracker::new(&self.settings.balancer, Instant::now()),
            breaker: supervise::start(actor, "breaker", OnStop::Restart, &self.log),
            checking: false,
        };
        self.backends.insert(t.address.clone(), backend);
    }

    /// Takes `address` out: the pool keeps it until its streams end, its row goes
    /// then, its breaker stops announcing.
    fn remove_backend(&mut self, address: &str) {
        if let Some(b) = self.backends.remove(address) {
            b.breaker.do_send(breaker::Retire);
        }
        self.pool.remove(address);
        self.registry.retire(&self.name, address);
    }

    /// Recomputes the failover order from the targets.
    fn reorder(&mut self) {
        self.order = self
            .settings
            .targets
            .iter()
            .filter_map(|t| self.backends.get(&t.address).map(|b| b.index))
            .collect();
    }

    /// Runs the health checks every `balancer.health_check`, replacing the earlier
    /// timer.
    fn arm_checks(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.checks.take() {
            ctx.cancel_future(h);
        }
        let every = self
            .settings
            .balancer
            .health_check
            .duration()
            .max(MIN_HEALTH_CHECK);
        self.checks = Some(ctx.run_interval(every, |act, ctx| {
            // Nobody holds our address (no owner, no stream, no connect in
            // flight): the service is gone.
            if !ctx.connected() {
                ctx.stop();
                return;
            }
            act.check_all(ctx);
        }));
    }

    /// Starts a health check of every endpoint that has none in flight; each runs
    /// as its own future and its result comes back to [`Self::checked`].
    fn check_all(&mut self, ctx: &mut Context<Self>) {
        let limit = self
            .settings
            .connect_timeout
            .min(self.settings.balancer.health_check.duration())
            .max(MIN_HEALTH_CHECK);
        let due: Vec<(String, u64)> = self
            .backends
            .iter_mut()
            .filter(|(_, b)| !b.checking)
            .map(|(address, b)| {
                b.checking = true;
                (address.clone(), b.id)
            })
            .collect();
        for (address, id) in due {
            let probe = async move {
                let ok = matches!(tokio::time::timeout(limit, dial(&address)).await, Ok(Ok(_)));
                (address, id, ok)
            };
            ctx.spawn(
                probe
                    .into_actor(self)
                    .map(|(address, id, ok), act, _ctx| act.checked(&address, id, ok)),
            );
        }
    }

    /// A health check of `address` (backend `id`) came back `ok`: the one place a
    /// health transition is applied, logged and recorded.
    fn checked(&mut self, address: &str, id: u64, ok: bool) {
        let Some(b) = self.backends.get_mut(address).filter(|b| b.id == id) else {
            return;
        };
        let now = Instant::now();
        b.checking = false;
        b.row.checked(ok, now);
        let Some(t) = b.health.observe(ok, now) else {
            return;
        };
        let up = t == Transition::Up;
        self.pool.set_healthy(b.index, up);
        b.row.set_healthy(up);
        if up {
            info!(self.log, "endpoint up"; "endpoint" => address,
                "checks" => self.settings.balancer.healthy_threshold);
            b.row.announce(EndpointChange::Up);
            // The checks that brought it back were its trials: a breaker opened by
            // the streams that failed while it was down would otherwise keep a
            // restarted backend idle for a whole reset_timeout.
            b.breaker.do_send(breaker::Reset);
        } else {
            warn!(self.log, "endpoint down"; "endpoint" => address, "code" => ErrorCode::Connect,
                "checks" => self.settings.balancer.unhealthy_threshold);
            b.row.announce(EndpointChange::Down);
        }
    }

    /// The backend of `address`, or the error a command naming it gets.
    fn backend(&self, address: &str) -> crate::Result<&Backend> {
        self.backends.get(address).ok_or_else(|| {
            Error::BadArgs(format!("service {} has no endpoint {address}", self.name))
        })
    }

    /// Applies new settings: endpoints diffed by address, everything else in place.
    fn apply(&mut self, new: Settings, ctx: &mut Context<Self>) {
        let old = std::mem::replace(&mut self.settings, new);
        let new = &self.settings;
        self.pool.set_strategy(new.strategy);
        let wanted: HashSet<&str> = new.targets.iter().map(|t| t.address.as_str()).collect();
        let gone: Vec<String> = self
            .backends
            .keys()
            .filter(|a| !wanted.contains(a.as_str()))
            .cloned()
            .collect();
        let (mut added, mut reweighted) = (0, 0);
        for t in new.targets.clone() {
            if let Some(b) = self.backends.get(&t.address) {
                if self.pool.get(b.index).map(|m| m.weight()) != Some(t.weight.max(1)) {
                    self.pool.add(&t.address, t.weight);
                    b.row.set_weight(t.weight);
                    reweighted += 1;
                }
            } else {
                self.add_backend(&t, ctx);
                added += 1;
            }
        }
        for address in &gone {
            self.remove_backend(address);
        }
        for b in self.backends.values_mut() {
            b.health.reconfigure(&self.settings.balancer);
        }
        if old.breaker != self.settings.breaker {
            for b in self.backends.values() {
                b.breaker
                    .do_send(breaker::Reconfigure(self.settings.breaker.clone()));
            }
        }
        if old.balancer.health_check != self.settings.balancer.health_check {
            self.arm_checks(ctx);
        }
        self.reorder();
        info!(self.log, "balancer reconfigured"; "added" => added, "removed" => gone.len(),
            "reweighted" => reweighted, "endpoints" => self.backends.len());
    }

    /// What a Connect needs to run its failover loop on its own; `confirm`: the
    /// caller reports the breaker's verdict itself ([`ConnectUnconfirmed`]).
    fn plan(&self, ctx: &Context<Self>, confirm: bool) -> Plan {
        let b = &self.settings.balancer;
        Plan {
            confirm,
            service: self.name.clone(),
            balancer: ctx.address(),
            deadline: Instant::now() + b.retry_timeout.duration(),
            tries: b.max_retries.saturating_add(1),
            connect_timeout: self.settings.connect_timeout,
            keepalive_idle: self.settings.keepalive_idle,
            log: self.log.clone(),
        }
    }
}

impl Actor for Balancer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.built {
            self.rebuild(ctx);
        }
        self.arm_checks(ctx);
        info!(self.log, "balancer started"; "endpoints" => self.backends.len(),
            "strategy" => ?self.settings.strategy, "priority" => self.settings.priority);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for (address, b) in self.backends.drain() {
            b.breaker.do_send(breaker::Retire);
            self.registry.retire(&self.name, &address);
        }
        info!(self.log, "balancer stopped");
    }
}

impl Supervised for Balancer {
    /// Starts over from the kept settings: fresh pool, trackers and breakers (the
    /// old breakers are retired), the same registry rows and drains.
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.epoch += 1;
        self.checks = None;
        self.rebuild(ctx);
    }
}

panic_on_fault!(Balancer);

/// Connect a new stream to one of the service's endpoints.
#[derive(Message)]
#[rtype(result = "Result<Connected, ConnectError>")]
pub struct Connect;

/// Like [`Connect`], but the endpoint's breaker hears the outcome only when the
/// caller says, through [`Lease::confirm`]: for a connection whose TCP connect is not
/// the whole story, such as a client's tunnel, whose TLS and session handshakes on
/// the socket may still fail. Until then the lease holds the breaker's permit (a
/// half-open breaker's trial slot); dropping it unconfirmed abandons the permit,
/// which says nothing about the endpoint.
#[derive(Message)]
#[rtype(result = "Result<Connected, ConnectError>")]
pub struct ConnectUnconfirmed;

/// A stream's connected socket and its lease on the endpoint.
#[derive(Debug)]
pub struct Connected {
    /// Connected to the endpoint, TCP keepalive set as configured, no Nagle delay.
    pub socket: TcpStream,
    /// Hold it for as long as the stream lives.
    pub lease: Lease,
}

impl Connected {
    /// The socket, moved to the reactor of the runtime this runs on. The balancer
    /// dials on the actors' runtime, whose reactor the socket is registered with; used
    /// from the data path as it is, every readiness event of it would wake the data
    /// thread through the actors' thread.
    ///
    /// # Errors
    /// When the socket cannot be registered here (out of descriptors or memory).
    pub fn socket_here(socket: TcpStream) -> io::Result<TcpStream> {
        socket.into_std().and_then(TcpStream::from_std)
    }
}

/// Why a [`Connect`] failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    /// `E_NO_ENDPOINT`.
    pub code: ErrorCode,
    /// The service, and every endpoint tried with what went wrong.
    pub message: String,
}

/// A stream's hold on its endpoint. Dropping it ends the stream for the balancer
/// (least connections, removal of a drained endpoint) and the registry (active count,
/// duration).
pub struct Lease {
    index: usize,
    epoch: u64,
    address: String,
    row: Arc<EndpointRow>,
    balancer: Addr<Balancer>,
    started: Instant,
    /// From a [`ConnectUnconfirmed`] until [`Lease::confirm`]: the breaker's permit
    /// and the breaker to report to.
    unconfirmed: Option<(Permit, Addr<BreakerActor>)>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The endpoint's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The endpoint's registry row: count the stream's bytes on it
    /// ([`EndpointRow::add_in`], [`EndpointRow::add_out`]).
    pub fn row(&self) -> &Arc<EndpointRow> {
        &self.row
    }

    /// Reports to the endpoint's breaker whether the connection from a
    /// [`ConnectUnconfirmed`] turned out usable; a failure also counts in the row's
    /// connect failures. Only the first call counts, and none for a [`Connect`]'s
    /// lease (its connect was the verdict).
    pub fn confirm(&mut self, ok: bool) {
        if let Some((permit, breaker)) = self.unconfirmed.take() {
            if !ok {
                self.row.connect_failed();
            }
            breaker.do_send(breaker::Outcome { permit, ok });
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((permit, breaker)) = self.unconfirmed.take() {
            breaker.do_send(breaker::Abandoned { permit });
        }
        self.row.stream_finished(self.started.elapsed());
        // do_send: one message per stream, on the control path, and it must not be
        // lost (the pool's count would never come down). A stopped balancer drops it.
        self.balancer.do_send(Finished {
            index: self.index,
            epoch: self.epoch,
        });
    }
}

/// Reload: new endpoints, strategy, thresholds and breaker rule. Endpoints are
/// diffed by address: new ones are added, missing ones removed (their live streams
/// go on), changed weights applied; the others keep their health, breaker and counts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Settings);

/// `ctl`: add an endpoint (until the next reload).
///
/// # Errors
/// `E_BAD_ARGS` when the address is not `host:port` or the service has it already.
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
pub struct AddEndpoint {
    /// `host:port`.
    pub address: String,
    /// Its weight; 0 counts as 1.
    pub weight: u32,
}

/// `ctl`: remove an endpoint (until the next reload); its live streams go on.
///
/// # Errors
/// `E_BAD_ARGS` when the service has no such endpoint.
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
pub struct RemoveEndpoint {
    /// `host:port` as listed.
    pub address: String,
}

/// `ctl`: start or stop draining an endpoint: it keeps its streams, gets no new one.
///
/// # Errors
/// `E_BAD_ARGS` when the service has no such endpoint.
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
pub struct Drain {
    /// `host:port` as listed.
    pub address: String,
    /// Whether to drain.
    pub draining: bool,
}

/// `ctl`: force an endpoint's breaker closed. Replies once the breaker has.
///
/// # Errors
/// `E_BAD_ARGS` when the service has no such endpoint.
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
pub struct ResetBreaker {
    /// `host:port` as listed.
    pub address: String,
}

/// A try picks an endpoint: the pool counts it as started.
#[derive(Message)]
#[rtype(result = "Option<Picked>")]
struct Pick {
    exclude: Vec<usize>,
}

/// The endpoint a try goes to.
struct Picked {
    index: usize,
    epoch: u64,
    address: String,
    row: Arc<EndpointRow>,
    breaker: Addr<BreakerActor>,
    /// Picked although unhealthy or with its breaker open, as nothing else was left
    /// ([`Pool::pick_fallback`]): dialed without asking the breaker.
    forced: bool,
}

/// A picked endpoint's stream ended, or its try failed.
#[derive(Message)]
#[rtype(result = "()")]
struct Finished {
    index: usize,
    epoch: u64,
}

impl Handler<Connect> for Balancer {
    type Result = ResponseFuture<Result<Connected, ConnectError>>;

    fn handle(&mut self, _: Connect, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(self.plan(ctx, false).run())
    }
}

impl Handler<ConnectUnconfirmed> for Balancer {
    type Result = ResponseFuture<Result<Connected, ConnectError>>;

    fn handle(&mut self, _: ConnectUnconfirmed, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(self.plan(ctx, true).run())
    }
}

impl Handler<Pick> for Balancer {
    type Result = Option<Picked>;

    fn handle(&mut self, msg: Pick, _ctx: &mut Self::Context) -> Self::Result {
        let (index, forced) = if self.settings.priority {
            match self.pool.pick_first(&self.order, &msg.exclude) {
                Some(i) => (i, false),
                None => (self.pool.pick_fallback(&self.order, &msg.exclude)?, true),
            }
        } else {
            (self.pool.pick(&msg.exclude)?, false)
        };
        let address = self.pool.get(index)?.key().to_owned();
        let b = self.backends.get(&address)?;
        self.pool.started(index);
        Some(Picked {
            index,
            epoch: self.epoch,
            row: b.row.clone(),
            breaker: b.breaker.clone(),
            address,
            forced,
        })
    }
}

impl Handler<Finished> for Balancer {
    type Result = ();

    fn handle(&mut self, msg: Finished, _ctx: &mut Self::Context) {
        if msg.epoch == self.epoch {
            self.pool.finished(msg.index);
        }
    }
}

impl Handler<BreakerChanged> for Balancer {
    type Result = ();

    fn handle(&mut self, msg: BreakerChanged, _ctx: &mut Self::Context) {
        if let Some(b) = self.backends.get(&msg.address).filter(|b| b.id == msg.id) {
            self.pool
                .set_breaker_open(b.index, msg.state == BreakerState::Open);
        }
    }
}

impl Handler<Reconfigure> for Balancer {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Self::Context) {
        self.apply(msg.0, ctx);
    }
}

impl Handler<AddEndpoint> for Balancer {
    type Result = crate::Result<()>;

    fn handle(&mut self, msg: AddEndpoint, ctx: &mut Self::Context) -> Self::Result {
        let address = msg
            .address
            .trim()
            .parse::<HostPort>()
            .map_err(|e| {
                Error::BadArgs(format!(
                    "service {}: endpoint {:?}: {e}",
                    self.name, msg.address
                ))
            })?
            .to_string();
        if self.backends.contains_key(&address) {
            return Err(Error::BadArgs(format!(
                "service {} already has endpoint {address}",
                self.name
            )));
        }
        let t = Target {
            address,
            weight: msg.weight,
        };
        self.settings.targets.push(t.clone());
        self.add_backend(&t, ctx);
        self.reorder();
        info!(self.log, "endpoint added"; "endpoint" => &t.address, "weight" => t.weight.max(1));
        Ok(())
    }
}

impl Handler<RemoveEndpoint> for Balancer {
    type Result = crate::Result<()>;

    fn handle(&mut self, msg: RemoveEndpoint, _ctx: &mut Self::Context) -> Self::Result {
        let active = self.backend(&msg.address)?.row.active();
        self.settings.targets.retain(|t| t.address != msg.address);
        self.draining.remove(&msg.address);
        self.remove_backend(&msg.address);
        self.reorder();
        info!(self.log, "endpoint removed"; "endpoint" => &msg.address, "active" => active);
        Ok(())
    }
}

impl Handler<Drain> for Balancer {
    type Result = crate::Result<()>;

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let row = self.backend(&msg.address)?.row.clone();
        self.pool.set_draining(&msg.address, msg.draining);
        row.set_draining(msg.draining);
        if msg.draining {
            self.draining.insert(msg.address.clone());
            info!(self.log, "endpoint draining"; "endpoint" => &msg.address, "active" => row.active());
        } else {
            self.draining.remove(&msg.address);
            info!(self.log, "endpoint drain ended"; "endpoint" => &msg.address);
        }
        Ok(())
    }
}

impl Handler<ResetBreaker> for Balancer {
    type Result = ResponseFuture<crate::Result<()>>;

    fn handle(&mut self, msg: ResetBreaker, _ctx: &mut Self::Context) -> Self::Result {
        let breaker = self.backend(&msg.address).map(|b| b.breaker.clone());
        Box::pin(async move {
            breaker?
                .send(breaker::Reset)
                .await
                .map_err(|e| Error::Internal(format!("breaker of {}: {e}", msg.address)))
        })
    }
}

/// One Connect's failover loop, run outside the actor.
struct Plan {
    /// The caller confirms the outcome ([`ConnectUnconfirmed`]).
    confirm: bool,
    service: String,
    balancer: Addr<Balancer>,
    deadline: Instant,
    tries: u32,
    connect_timeout: Duration,
    keepalive_idle: Option<Duration>,
    log: Logger,
}

impl Plan {
    async fn run(self) -> Result<Connected, ConnectError> {
        let mut exclude = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        let mut tries = 0;
        let why = loop {
            if tries >= self.tries {
                break "retries exhausted";
            }
            if Instant::now() >= self.deadline {
                break "retry_timeout passed";
            }
            let picked = match self
                .balancer
                .send(Pick {
                    exclude: exclude.clone(),
                })
                .await
            {
                Ok(Some(p)) => p,
                Ok(None) if tried.is_empty() => {
                    break "no endpoint is healthy, undrained and with its breaker closed"
                }
                Ok(None) => break "no endpoint left to try",
                Err(_) => break "balancer stopped",
            };
            exclude.push(picked.index);
            let mut attempt = Attempt {
                picked,
                balancer: self.balancer.clone(),
                permit: None,
                leased: false,
            };
            let address = attempt.picked.address.clone();
            if attempt.picked.forced {
                debug!(self.log, "no eligible endpoint, dialing one anyway"; "endpoint" => &address);
            } else {
                match attempt.picked.breaker.send(breaker::Allow).await {
                    Ok(Some(permit)) => attempt.permit = Some(permit),
                    Ok(None) | Err(_) => {
                        tried.push(format!("{address} ({})", ErrorCode::BreakerOpen));
                        continue;
                    }
                }
            }
            tries += 1;
            let budget = self.deadline.saturating_duration_since(Instant::now());
            let limit = self.connect_timeout.min(budget);
            match tokio::time::timeout(limit, dial(&address)).await {
                Ok(Ok(socket)) => {
                    crate::tunnel::handshake::tune_socket(&socket, self.keepalive_idle);
                    debug!(self.log, "stream connected"; "endpoint" => &address, "tries" => tries);
                    return Ok(Connected {
                        socket,
                        lease: attempt.succeeded(self.confirm),
                    });
                }
                Ok(Err(e)) => {
                    debug!(self.log, "endpoint connect failed"; "endpoint" => &address,
                        "code" => ErrorCode::Connect, "error" => %e);
                    tried.push(format!("{address} ({e})"));
                    attempt.failed();
                }
                Err(_) if limit < self.connect_timeout => {
                    // The budget ran out, not the endpoint's time: it says nothing
                    // about the endpoint (the attempt's drop abandons the permit).
                    tried.push(format!("{address} (cut by retry_timeout)"));
                    break "retry_timeout passed";
                }
                Err(_) => {
                    debug!(self.log, "endpoint connect failed"; "endpoint" => &address,
                        "code" => ErrorCode::Connect, "error" => "timed out");
                    tried.push(format!("{address} (connect timed out)"));
                    attempt.failed();
                }
            }
        };
        let message = if tried.is_empty() {
            format!("service {}: {why}", self.service)
        } else {
            format!(
                "service {}: {why}; tried {}",
                self.service,
                tried.join(", ")
            )
        };
        Err(ConnectError {
            code: ErrorCode::NoEndpoint,
            message,
        })
    }
}

/// One try in flight: what it took (the pool's count, the breaker's permit) is given
/// back when it is dropped, whatever ends it, unless it became a [`Lease`].
struct Attempt {
    picked: Picked,
    balancer: Addr<Balancer>,
    permit: Option<Permit>,
    /// A lease took over the pool's count: the drop must not finish it.
    leased: bool,
}

impl Attempt {
    /// The connect failed: the breaker and the row count it; the drop frees the pick.
    fn failed(mut self) {
        self.picked.row.connect_failed();
        if let Some(permit) = self.permit.take() {
            self.picked
                .breaker
                .do_send(breaker::Outcome { permit, ok: false });
        }
    }

    /// The connect succeeded: the stream now holds the pick as a lease, and the
    /// permit too when the caller will `confirm` the outcome.
    fn succeeded(mut self, confirm: bool) -> Lease {
        let mut unconfirmed = None;
        if let Some(permit) = self.permit.take() {
            if confirm {
                unconfirmed = Some((permit, self.picked.breaker.clone()));
            } else {
                self.picked
                    .breaker
                    .do_send(breaker::Outcome { permit, ok: true });
            }
        }
        self.picked.row.stream_started();
        self.leased = true;
        Lease {
            index: self.picked.index,
            epoch: self.picked.epoch,
            address: self.picked.address.clone(),
            row: self.picked.row.clone(),
            balancer: self.balancer.clone(),
            started: Instant::now(),
            unconfirmed,
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        // do_send: a drop cannot wait, and neither message may be lost (a lost
        // permit would hold a half-open trial slot, a lost finish the pool's count).
        if let Some(permit) = self.permit.take() {
            self.picked.breaker.do_send(breaker::Abandoned { permit });
        }
        if !self.leased {
            self.balancer.do_send(Finished {
                index: self.picked.index,
                epoch: self.picked.epoch,
            });
        }
    }
}

/// Connects to `address` (`host:port`, a name resolved now), trying each address
/// it resolves to in turn.
async fn dial(address: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

#[cfg(test)]
mod tests {
    //! The actors against real loopback listeners: no mocks, every test bounded.

    use super::*;
    use registry::{BreakerState as Shown, EndpointView};
    use sssonector_config::DurationValue;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const MS: Duration = Duration::from_millis(1);

    fn settings(addresses: &[&str]) -> Settings {
        Settings {
            strategy: Strategy::RoundRobin,
            priority: false,
            targets: addresses
                .iter()
                .map(|a| Target {
                    address: (*a).to_string(),
                    weight: 1,
                })
                .collect(),
            balancer: BalancerConfig {
                // Long: no check interferes unless a test asks for them.
                health_check: DurationValue::of(Duration::from_secs(60)),
                retry_timeout: DurationValue::of(Duration::from_secs(2)),
                max_retries: 3,
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
            breaker: BreakerConfig {
                max_failures: 100,
                reset_timeout: DurationValue::of(Duration::from_secs(30)),
                half_open_max_calls: 1,
                failure_window: DurationValue::of(Duration::from_secs(60)),
            },
            connect_timeout: 500 * MS,
            keepalive_idle: Some(Duration::from_secs(60)),
        }
    }

    /// A started balancer, once its rows are in the registry.
    async fn start(settings: Settings) -> (Addr<Balancer>, Arc<Endpoints>) {
        let registry = Arc::new(Endpoints::default());
        let log = Logger::root(slog::Discard, slog::o!());
        let n = settings.targets.len();
        let b = Balancer::new("web".into(), settings, registry.clone(), log);
        let b = Supervisor::start(|_| b);
        while registry.snapshot().len() < n {
            tokio::time::sleep(MS).await;
        }
        (b, registry)
    }

    async fn listen() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let a = l.local_addr().expect("bound").to_string();
        (l, a)
    }

    /// An address nothing listens on.
    async fn closed_port() -> String {
        listen().await.1
    }

    /// `f`, which must finish within 3 s.
    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(3), f)
            .await
            .expect("the test finishes within 3 s")
    }

    /// Waits until `cond` holds for the registry's row of `address`.
    async fn until(registry: &Endpoints, address: &str, cond: impl Fn(&EndpointView) -> bool) {
        loop {
            if view(registry, address).is_some_and(|v| cond(&v)) {
                return;
            }
            tokio::time::sleep(5 * MS).await;
        }
    }

    fn view(registry: &Endpoints, address: &str) -> Option<EndpointView> {
        registry
            .snapshot()
            .into_iter()
            .find(|v| v.address == address)
    }

    async fn connect(b: &Addr<Balancer>) -> Connected {
        b.send(Connect)
            .await
            .expect("balancer alive")
            .expect("connected")
    }

    /// How many of `n` connects went to each address.
    /// Drains (or undrains) `address`, which the balancer knows.
    async fn drain(b: &Addr<Balancer>, address: &str, draining: bool) {
        b.send(Drain {
            address: address.to_owned(),
            draining,
        })
        .await
        .expect("alive")
        .expect("known");
    }

    /// Resets the breaker of `address`, which the balancer knows.
    async fn reset(b: &Addr<Balancer>, address: &str) {
        b.send(ResetBreaker {
            address: address.to_owned(),
        })
        .await
        .expect("alive")
        .expect("known");
    }

    async fn spread(b: &Addr<Balancer>, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let c = connect(b).await;
            *counts.entry(c.lease.address().to_string()).or_default() += 1;
        }
        counts
    }

    #[actix_rt::test]
    async fn round_robin_gives_each_of_three_endpoints_ten_of_thirty() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let (_l3, a3) = listen().await;
            let (b, registry) = start(settings(&[&a1, &a2, &a3])).await;
            let counts = spread(&b, 30).await;
            for a in [&a1, &a2, &a3] {
                assert_eq!(counts.get(a), Some(&10), "{counts:?}");
                let v = view(&registry, a).expect("a row");
                assert_eq!((v.total, v.active, v.peak), (10, 0, 1));
            }
        })
        .await;
    }

    #[actix_rt::test]
    async fn closed_ports_are_failed_over_without_a_single_connect_error() {
        within(async {
            let c1 = closed_port().await;
            let (_l, live) = listen().await;
            let c2 = closed_port().await;
            let (b, registry) = start(settings(&[&c1, &live, &c2])).await;
            let counts = spread(&b, 30).await;
            assert_eq!(counts.get(&live), Some(&30));
            for c in [&c1, &c2] {
                let v = view(&registry, c).expect("a row");
                assert!(v.connect_failures > 0, "{v:?}");
                assert_eq!(v.total, 0);
            }
        })
        .await;
    }

    #[actix_rt::test]
    async fn with_every_endpoint_down_the_error_names_what_was_tried() {
        within(async {
            let (c1, c2) = (closed_port().await, closed_port().await);
            let (b, _) = start(settings(&[&c1, &c2])).await;
            let err = b.send(Connect).await.expect("alive").expect_err("none up");
            assert_eq!(err.code, ErrorCode::NoEndpoint);
            assert!(err.message.contains("service web"), "{}", err.message);
            assert!(
                err.message.contains(&c1) && err.message.contains(&c2),
                "{}",
                err.message
            );
            let (empty, _) = start(settings(&[])).await;
            let err = empty.send(Connect).await.expect("alive").expect_err("none");
            assert_eq!(
                err.message,
                "service web: no endpoint is healthy, undrained and with its breaker closed"
            );
        })
        .await;
    }

    #[actix_rt::test]
    async fn a_lost_endpoint_goes_down_after_the_threshold_and_comes_back() {
        within(async {
            let (l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let mut s = settings(&[&a1, &a2]);
            s.balancer.health_check = DurationValue::of(50 * MS);
            let (b, registry) = start(s).await;
            until(&registry, &a1, |v| v.checks >= 1).await;
            drop(l1);
            until(&registry, &a1, |v| !v.healthy).await;
            let v = view(&registry, &a1).expect("row");
            assert!(v.failed_checks >= 2, "down after two failed checks: {v:?}");
            let counts = spread(&b, 10).await;
            assert_eq!(
                counts.get(&a2),
                Some(&10),
                "nothing goes to a down endpoint"
            );
            assert_eq!(view(&registry, &a1).map(|v| v.connect_failures), Some(0));
            let _l1 = TcpListener::bind(&a1).await.expect("the same port again");
            until(&registry, &a1, |v| v.healthy).await;
            let counts = spread(&b, 10).await;
            assert_eq!(counts.get(&a1), Some(&5), "back in rotation: {counts:?}");
        })
        .await;
    }

    #[actix_rt::test]
    async fn the_breaker_opens_at_max_failures_and_half_opens_at_reset_timeout() {
        within(async {
            let dead = closed_port().await;
            let (_l, live) = listen().await;
            let mut s = settings(&[&dead, &live]);
            s.breaker.max_failures = 3;
            s.breaker.reset_timeout = DurationValue::of(300 * MS);
            let (b, registry) = start(s).await;
            while view(&registry, &dead).is_some_and(|v| v.connect_failures < 3) {
                connect(&b).await;
            }
            until(&registry, &dead, |v| v.breaker == Shown::Open).await;
            let opened = Instant::now();
            let v = view(&registry, &dead).expect("row");
            assert_eq!((v.connect_failures, v.breaker_opened), (3, 1));
            // Open: nothing is sent to it, so nothing fails there.
            let counts = spread(&b, 6).await;
            assert_eq!(counts.get(&live), Some(&6));
            until(&registry, &dead, |v| v.breaker == Shown::HalfOpen).await;
            let took = opened.elapsed();
            assert!(
                took >= 250 * MS && took <= 550 * MS,
                "half-open after {took:?}, not 300 ms"
            );
            // The trial fails: open again, and the stream still connected elsewhere.
            while view(&registry, &dead).is_some_and(|v| v.breaker_opened < 2) {
                connect(&b).await;
            }
            assert_eq!(view(&registry, &dead).map(|v| v.connect_failures), Some(4));
        })
        .await;
    }

    #[actix_rt::test]
    async fn reset_breaker_closes_an_open_breaker() {
        within(async {
            let dead = closed_port().await;
            let (_l, live) = listen().await;
            let mut s = settings(&[&dead, &live]);
            s.breaker.max_failures = 1;
            let (b, registry) = start(s).await;
            while view(&registry, &dead).is_some_and(|v| v.connect_failures < 1) {
                connect(&b).await;
            }
            until(&registry, &dead, |v| v.breaker == Shown::Open).await;
            reset(&b, &dead).await;
            assert_eq!(
                view(&registry, &dead).map(|v| v.breaker),
                Some(Shown::Closed)
            );
        })
        .await;
    }

    #[actix_rt::test]
    async fn draining_stops_new_picks_and_the_live_lease_keeps_its_socket() {
        within(async {
            let (l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l1.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let _ = s.read_to_end(&mut buf).await;
                        if !buf.is_empty() {
                            let _ = tx.send(buf);
                        }
                    });
                }
            });
            let (b, registry) = start(settings(&[&a1, &a2])).await;
            let mut kept = connect(&b).await;
            while kept.lease.address() != a1 {
                kept = connect(&b).await;
            }
            drain(&b, &a1, true).await;
            let counts = spread(&b, 10).await;
            assert_eq!(counts.get(&a2), Some(&10));
            let v = view(&registry, &a1).expect("row");
            assert_eq!((v.draining, v.active), (true, 1));
            kept.socket.write_all(b"still here").await.expect("writes");
            kept.socket.shutdown().await.expect("shuts down");
            assert_eq!(rx.recv().await.as_deref(), Some(&b"still here"[..]));
            drop(kept);
            assert_eq!(view(&registry, &a1).map(|v| v.active), Some(0));
            drain(&b, &a1, false).await;
            assert_eq!(spread(&b, 10).await.get(&a1), Some(&5));
        })
        .await;
    }

    #[actix_rt::test]
    async fn reconfigure_adds_and_removes_endpoints() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let (_l3, a3) = listen().await;
            let (b, registry) = start(settings(&[&a1, &a2])).await;
            spread(&b, 4).await;
            let mut s = settings(&[&a2, &a3]);
            s.targets[1].weight = 3;
            s.strategy = Strategy::WeightedRoundRobin;
            b.send(Reconfigure(s)).await.expect("alive");
            let counts = spread(&b, 20).await;
            assert_eq!(
                (counts.get(&a1), counts.get(&a2), counts.get(&a3)),
                (None, Some(&5), Some(&15))
            );
            let rows: Vec<(u32, String, u64)> = registry
                .snapshot()
                .into_iter()
                .map(|v| (v.index, v.address, v.total))
                .collect();
            assert_eq!(rows, [(2, a2.clone(), 7), (3, a3.clone(), 15)]);
        })
        .await;
    }

    #[actix_rt::test]
    async fn ctl_commands_add_and_remove_endpoints_and_refuse_unknown_ones() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let (b, registry) = start(settings(&[&a1])).await;
            let add = |address: &str| AddEndpoint {
                address: address.to_string(),
                weight: 1,
            };
            b.send(add(&a2)).await.expect("alive").expect("added");
            assert_eq!(spread(&b, 4).await.get(&a2), Some(&2));
            let err = b.send(add(&a2)).await.expect("alive").expect_err("twice");
            assert_eq!(err.code(), ErrorCode::BadArgs);
            let err = b
                .send(add("nonsense"))
                .await
                .expect("alive")
                .expect_err("bad");
            assert_eq!(err.code(), ErrorCode::BadArgs);
            b.send(RemoveEndpoint {
                address: a1.clone(),
            })
            .await
            .expect("alive")
            .expect("removed");
            assert_eq!(spread(&b, 4).await.get(&a2), Some(&4));
            assert!(view(&registry, &a1).is_none(), "its row is gone");
            let unknown = "192.0.2.1:9".to_string();
            let errors = [
                b.send(RemoveEndpoint {
                    address: unknown.clone(),
                })
                .await,
                b.send(Drain {
                    address: unknown.clone(),
                    draining: true,
                })
                .await,
                b.send(ResetBreaker {
                    address: unknown.clone(),
                })
                .await,
            ];
            for e in errors {
                let e = e.expect("alive").expect_err("unknown");
                assert_eq!(e.code(), ErrorCode::BadArgs);
                assert_eq!(e.to_string(), "service web has no endpoint 192.0.2.1:9");
            }
        })
        .await;
    }

    #[actix_rt::test]
    async fn priority_order_sends_everything_to_the_first_eligible_server() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let mut s = settings(&[&a1, &a2]);
            s.priority = true;
            let (b, _) = start(s).await;
            assert_eq!(spread(&b, 5).await.get(&a1), Some(&5));
            drain(&b, &a1, true).await;
            assert_eq!(spread(&b, 5).await.get(&a2), Some(&5));
        })
        .await;
    }

    #[actix_rt::test]
    async fn an_unconfirmed_connect_counts_for_the_breaker_only_once_confirmed() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let mut s = settings(&[&a1, &a2]);
            s.priority = true;
            s.breaker.max_failures = 2;
            let (b, registry) = start(s).await;
            let unconfirmed = || async {
                b.send(ConnectUnconfirmed)
                    .await
                    .expect("balancer alive")
                    .expect("connected")
            };
            // Dropped without a verdict: the permit is abandoned, nothing counted.
            let c = unconfirmed().await;
            assert_eq!(c.lease.address(), a1);
            drop(c);
            // Only the first verdict counts.
            let mut c = unconfirmed().await;
            c.lease.confirm(true);
            c.lease.confirm(false);
            drop(c);
            assert_eq!(view(&registry, &a1).map(|v| v.connect_failures), Some(0));
            for _ in 0..2 {
                let mut c = unconfirmed().await;
                assert_eq!(c.lease.address(), a1, "a closed breaker keeps the order");
                c.lease.confirm(false);
            }
            until(&registry, &a1, |v| v.breaker == Shown::Open).await;
            assert_eq!(view(&registry, &a1).map(|v| v.connect_failures), Some(2));
            assert_eq!(unconfirmed().await.lease.address(), a2, "failed over");
        })
        .await;
    }

    #[actix_rt::test]
    async fn health_and_breaker_transitions_are_published_by_the_registry() {
        within(async {
            let (l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let mut s = settings(&[&a1, &a2]);
            s.balancer.health_check = DurationValue::of(20 * MS);
            s.breaker.max_failures = 1;
            let (b, registry) = start(s).await;
            let mut rx = registry.subscribe();
            let index = view(&registry, &a1).expect("a row").index;
            drop(l1);
            let e = rx.recv().await.expect("an event");
            assert_eq!(
                (e.index, e.address.as_str(), e.service.as_str(), e.change),
                (index, a1.as_str(), "web", EndpointChange::Down)
            );
            let _l1 = TcpListener::bind(&a1).await.expect("the same port again");
            assert_eq!(
                rx.recv().await.expect("an event").change,
                EndpointChange::Up
            );
            // Now a failed confirmation opens its breaker; a reset closes it.
            let mut c = b
                .send(ConnectUnconfirmed)
                .await
                .expect("alive")
                .expect("connected");
            let address = c.lease.address().to_string();
            c.lease.confirm(false);
            let e = rx.recv().await.expect("an event");
            assert_eq!(
                (e.address.as_str(), e.change),
                (address.as_str(), EndpointChange::BreakerOpened)
            );
            reset(&b, &address).await;
            let e = rx.recv().await.expect("an event");
            assert_eq!(
                (e.address.as_str(), e.change),
                (address.as_str(), EndpointChange::BreakerClosed)
            );
        })
        .await;
    }

    #[actix_rt::test]
    async fn least_connections_counts_held_leases() {
        within(async {
            let (_l1, a1) = listen().await;
            let (_l2, a2) = listen().await;
            let mut s = settings(&[&a1, &a2]);
            s.strategy = Strategy::LeastConnections;
            let (b, _) = start(s).await;
            let mut held = Vec::new();
            for _ in 0..3 {
                let c = connect(&b).await;
                if c.lease.address() == a1 {
                    held.push(c);
                }
            }
            // a1 holds one or two streams, a2 none: a2 is picked until they even out.
            let next = connect(&b).await;
            assert_eq!(next.lease.address(), a2);
        })
        .await;
    }

    #[actix_rt::test]
    async fn a_balancer_nobody_holds_stops_once_its_last_lease_ends() {
        within(async {
            let (_l, a) = listen().await;
            let mut s = settings(&[&a]);
            s.balancer.health_check = DurationValue::of(20 * MS);
            let (b, registry) = start(s).await;
            let kept = connect(&b).await;
            drop(b);
            tokio::time::sleep(100 * MS).await;
            assert_eq!(registry.snapshot().len(), 1, "a live lease holds it");
            drop(kept);
            while !registry.snapshot().is_empty() {
                tokio::time::sleep(5 * MS).await;
            }
        })
        .await;
    }

    #[test]
    fn settings_come_from_the_configuration() {
        use sssonector_config::{Endpoint, Parsed, ServerEntry};
        let mut config = Config::default();
        config.services.push(Service {
            name: "web".into(),
            listen: None,
            strategy: Strategy::WeightedRoundRobin,
            allowed_clients: Vec::new(),
            endpoints: vec![
                Endpoint {
                    address: Parsed::parse(" backend.internal:8080"),
                    weight: 3,
                },
                Endpoint {
                    address: Parsed::parse("[::1]:80"),
                    weight: 1,
                },
            ],
        });
        for a in ["b.example:8443", "a.example:8443"] {
            config.tunnel.servers.push(ServerEntry {
                address: Parsed::parse(a),
                weight: 1,
            });
        }
        config.connection.keepalive = false;
        let s = Settings::for_service(&config.services[0], &config);
        assert_eq!(s.strategy, Strategy::WeightedRoundRobin);
        assert!(!s.priority);
        let targets: Vec<(&str, u32)> = s
            .targets
            .iter()
            .map(|t| (t.address.as_str(), t.weight))
            .collect();
        assert_eq!(targets, [("backend.internal:8080", 3), ("[::1]:80", 1)]);
        assert_eq!(s.keepalive_idle, None);
        assert_eq!(
            s.connect_timeout,
            config.connection.connect_timeout.duration()
        );
        let s = Settings::for_servers(&config);
        assert!(s.priority);
        assert_eq!(
            s.targets[0].address, "b.example:8443",
            "configured order kept"
        );
    }
}
