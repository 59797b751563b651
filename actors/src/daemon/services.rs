//! The daemon's layer-4 children: a client's ServiceListeners, a server's Balancers.
//! Started with the daemon and reconciled with each reload by service name, so a
//! service whose settings did not change keeps its actor, and live streams are never
//! touched (a stopped listener stops accepting; its streams run on).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};
use sssonector_config::{Config, Mode};
use tokio::runtime::Handle;

use crate::balancer::{self, Balancer};
use crate::control::protocol::{BreakerReset, EndpointAdd, EndpointRef, ProtocolError};
use crate::error::{Error, Result};
use crate::service::{ServiceListener, StopService};
use crate::supervise::{self, OnStop};
use crate::tunnel::hub::Hub;

/// The layer-4 actors of one daemon.
pub struct Services {
    hub: Arc<Hub>,
    runtime: Handle,
    log: Logger,
    /// Client: bound at start, before the actors run, so a port in use stops it.
    bound: Vec<(String, SocketAddr, std::net::TcpListener)>,
    listeners: HashMap<String, (SocketAddr, Addr<ServiceListener>)>,
    balancers: HashMap<String, Addr<Balancer>>,
}

impl Services {
    /// Binds a client's service ports.
    ///
    /// # Errors
    /// `E_IO` naming the service when a port cannot be bound.
    pub fn bind(config: &Config, hub: Arc<Hub>, runtime: Handle, log: Logger) -> Result<Self> {
        hub.streams.configure(config);
        let mut bound = Vec::new();
        if config.mode == Some(Mode::Client) {
            for s in &config.services {
                if let Some(addr) = s.listen.as_ref().map(|a| *a.get()) {
                    let l = ServiceListener::bind(addr)
                        .map_err(|e| Error::io(format!("services.{} listen {addr}", s.name), e))?;
                    bound.push((s.name.clone(), addr, l));
                }
            }
        }
        Ok(Self {
            hub,
            runtime,
            log,
            bound,
            listeners: HashMap::new(),
            balancers: HashMap::new(),
        })
    }

    /// Starts the actors (inside the actix system).
    pub fn start(&mut self, config: &Config) {
        for (name, addr, l) in std::mem::take(&mut self.bound) {
            self.start_listener(name, addr, l);
        }
        if config.mode == Some(Mode::Server) {
            for s in &config.services {
                self.start_balancer(s, config);
            }
            self.publish();
        }
    }

    fn start_listener(&mut self, name: String, addr: SocketAddr, l: std::net::TcpListener) {
        let actor = ServiceListener::new(
            name.clone(),
            l,
            self.hub.clone(),
            self.runtime.clone(),
            &self.log,
        );
        let actor = supervise::start(actor, "service", OnStop::End, &self.log);
        self.listeners.insert(name, (addr, actor));
    }

    fn start_balancer(&mut self, s: &sssonector_config::Service, config: &Config) {
        let settings = balancer::Settings::for_service(s, config);
        let name = s.name.clone();
        let registry = self.hub.stats.endpoints.clone();
        let log = self
            .log
            .new(slog::o!("actor" => "balancer", "service" => name.clone()));
        let balancer = Balancer::new(name, settings, registry, log);
        let addr = supervise::start(balancer, "balancer", OnStop::Restart, &self.log);
        self.balancers.insert(s.name.clone(), addr);
    }

    /// The streams of new sessions find the balancers in force.
    fn publish(&self) {
        self.hub.streams.set_balancers(self.balancers.clone());
    }

    /// Stops accepting new streams (the daemon is stopping: a server refuses new
    /// `StreamOpen`s with `E_UNKNOWN_SERVICE`) and returns the drain of the live
    /// ones, which go on until they end or their session is closed.
    pub fn stop(&mut self) -> Option<crate::drain::Drain> {
        for (_, (_, actor)) in self.listeners.drain() {
            actor.do_send(StopService);
        }
        self.balancers.clear();
        self.publish();
        self.hub.streams.take_drain()
    }

    /// Whether every service listener, and every balancer, is running; `None` where
    /// there are none.
    pub fn connected(&self) -> (Option<bool>, Option<bool>) {
        let listeners = (!self.listeners.is_empty())
            .then(|| self.listeners.values().all(|(_, a)| a.connected()));
        let balancers =
            (!self.balancers.is_empty()).then(|| self.balancers.values().all(Addr::connected));
        (listeners, balancers)
    }

    /// Server: the balancer of `service`, for the control commands.
    pub fn balancer(&self, service: &str) -> Option<&Addr<Balancer>> {
        self.balancers.get(service)
    }

    /// Server: the balancer of `service`, or the first by name (debug `fault`).
    #[cfg(debug_assertions)]
    pub fn balancer_named(&self, service: Option<&str>) -> Option<&Addr<Balancer>> {
        match service {
            Some(s) => self.balancers.get(s),
            None => self
                .balancers
                .iter()
                .min_by_key(|(k, _)| *k)
                .map(|(_, a)| a),
        }
    }

    /// Client: the listener of `service`, or the first by name (debug `fault`).
    #[cfg(debug_assertions)]
    pub fn listener_named(&self, service: Option<&str>) -> Option<&Addr<ServiceListener>> {
        let pick = match service {
            Some(s) => self.listeners.get(s),
            None => self
                .listeners
                .iter()
                .min_by_key(|(k, _)| *k)
                .map(|(_, a)| a),
        };
        pick.map(|(_, a)| a)
    }

    /// Carries an endpoint command to its service's balancer; the reply says what
    /// the endpoint or breaker looks like afterwards.
    pub fn command(&self, op: EndpointOp) -> ResponseFuture<Result<serde_json::Value>> {
        let (command, service) = (op.name(), op.service().to_owned());
        let Some(balancer) = self.balancers.get(&service).cloned() else {
            let known: Vec<&str> = self.balancers.keys().map(String::as_str).collect();
            return Box::pin(std::future::ready(Err(Error::Control(
                ProtocolError::BadArgs {
                    command,
                    message: format!("no service {service:?} here (services: {known:?})"),
                },
            ))));
        };
        let registry = self.hub.stats.endpoints.clone();
        let mailbox = |e: MailboxError| Error::Internal(format!("balancer mailbox: {e}"));
        Box::pin(async move {
            let touched: Vec<String> = match op {
                EndpointOp::Add(a) => {
                    let weight = a.weight;
                    let address = a.address.clone();
                    balancer
                        .send(balancer::AddEndpoint {
                            address: a.address,
                            weight,
                        })
                        .await
                        .map_err(mailbox)??;
                    vec![address]
                }
                EndpointOp::Remove(r) => {
                    balancer
                        .send(balancer::RemoveEndpoint {
                            address: r.address.clone(),
                        })
                        .await
                        .map_err(mailbox)??;
                    return Ok(serde_json::json!({ "removed": r.address, "service": service }));
                }
                EndpointOp::Drain(r) => {
                    balancer
                        .send(balancer::Drain {
                            address: r.address.clone(),
                            draining: true,
                        })
                        .await
                        .map_err(mailbox)??;
                    vec![r.address]
                }
                EndpointOp::ResetBreaker(b) => {
                    let addresses = match b.address {
                        Some(a) => vec![a],
                        None => registry
                            .snapshot()
                            .into_iter()
                            .filter(|e| e.service == service)
                            .map(|e| e.address)
                            .collect(),
                    };
                    for address in &addresses {
                        balancer
                            .send(balancer::ResetBreaker {
                                address: address.clone(),
                            })
                            .await
                            .map_err(mailbox)??;
                    }
                    addresses
                }
            };
            let rows: Vec<_> = registry
                .snapshot()
                .into_iter()
                .filter(|e| e.service == service && touched.contains(&e.address))
                .collect();
            Ok(serde_json::json!({ "endpoints": rows }))
        })
    }

    /// Reconciles the actors with a reloaded `config`: new services start, removed
    /// ones stop, changed ones are reconfigured (a client's moved port is rebound).
    /// A port that cannot be bound is logged and that service keeps its old one.
    pub fn apply(&mut self, config: &Config) {
        self.hub.streams.configure(config);
        match config.mode {
            Some(Mode::Client) => self.apply_client(config),
            Some(Mode::Server) => self.apply_server(config),
            None => {}
        }
    }

    fn apply_client(&mut self, config: &Config) {
        let wanted: HashMap<&str, SocketAddr> = config
            .services
            .iter()
            .filter_map(|s| Some((s.name.as_str(), *s.listen.as_ref()?.get())))
            .collect();
        let gone: Vec<String> = self
            .listeners
            .iter()
            .filter(|(name, (addr, _))| wanted.get(name.as_str()) != Some(addr))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((_, actor)) = self.listeners.remove(&name) {
                actor.do_send(StopService);
            }
        }
        for (name, addr) in wanted {
            if self.listeners.contains_key(name) {
                continue;
            }
            match ServiceListener::bind(addr) {
                Ok(l) => self.start_listener(name.to_owned(), addr, l),
                Err(e) => warn!(self.log, "service port not bound, service not listening";
                    "service" => name, "listen" => %addr, "code" => crate::ErrorCode::Io, "error" => %e),
            }
        }
    }

    fn apply_server(&mut self, config: &Config) {
        self.balancers
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        for s in &config.services {
            match self.balancers.get(&s.name) {
                Some(b) => b.do_send(balancer::Reconfigure(balancer::Settings::for_service(
                    s, config,
                ))),
                None => {
                    info!(self.log, "service added"; "service" => &s.name);
                    self.start_balancer(s, config);
                }
            }
        }
        self.publish();
    }
}

/// A control command for one service's endpoints, routed by the daemon to that
/// service's balancer.
#[derive(Message, Debug)]
#[rtype(result = "Result<serde_json::Value>")]
pub enum EndpointOp {
    /// `endpoint.add`.
    Add(EndpointAdd),
    /// `endpoint.remove`.
    Remove(EndpointRef),
    /// `endpoint.drain`.
    Drain(EndpointRef),
    /// `breaker.reset`.
    ResetBreaker(BreakerReset),
}

impl EndpointOp {
    fn name(&self) -> &'static str {
        match self {
            EndpointOp::Add(_) => "endpoint.add",
            EndpointOp::Remove(_) => "endpoint.remove",
            EndpointOp::Drain(_) => "endpoint.drain",
            EndpointOp::ResetBreaker(_) => "breaker.reset",
        }
    }

    fn service(&self) -> &str {
        match self {
            EndpointOp::Add(a) => &a.service,
            EndpointOp::Remove(r) | EndpointOp::Drain(r) => &r.service,
            EndpointOp::ResetBreaker(b) => &b.service,
        }
    }
}
