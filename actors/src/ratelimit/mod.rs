//! The RateLimiter actor: owns the rate-limiting policy and keeps the shared
//! [`Limits`] following it.
//!
//! It puts a new policy in force at a reload ([`Configure`]) and at `ctl limits.set`
//! ([`SetLimits`]), measures each connection's current rate and shares the global
//! rate fairly every [`TICK`], and forgets idle request buckets every
//! [`SWEEP`]. The bytes themselves never pass through it: each
//! connection's I/O task holds a [`Throttle`] and reads its rate from an atomic.
//!
//! Layer-4 streams are throttled by reading less from their socket (TCP's own
//! back-pressure), so no stream byte is ever buffered without bound or dropped. A
//! session's layer-3 packets queue up to [`QUEUE_DELAY`] at its rate (at least its
//! burst) and past that are dropped and counted (`throttled`), as a router's shaper
//! does: TCP inside the tunnel then slows down.

pub mod bucket;
pub mod keyed;
pub mod limits;
pub mod share;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use slog::{debug, info, Logger};

pub use self::bucket::TokenBucket;
pub use self::limits::{
    Change, Flow, Kind, Limits, Meter, Policy, Refusal, Throttle, QUEUE_DELAY, TICK, UNLIMITED,
};
use crate::error::{Error, Result};

/// How often idle request buckets are looked for: `cleanup_time` is honoured to
/// within this.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Put a (reloaded) `throttle` section in force.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Configure(pub Policy);

/// `limits`: the policy, limiter rows and connections.
#[derive(Message, Debug)]
#[rtype(result = "Value")]
pub struct GetLimits;

/// `limits.set`: change rates at run time.
#[derive(Message, Debug)]
#[rtype(result = "Result<Value>")]
pub struct SetLimits(pub Change);

/// The actor.
pub struct RateLimiter {
    limits: Arc<Limits>,
    /// The policy last put in force, to rebuild from after a restart.
    policy: Policy,
    meters: HashMap<u64, Meter>,
    log: Logger,
}

impl RateLimiter {
    /// A limiter keeping `limits` to `policy`; the policy is put in force at once,
    /// so connections made before the actor runs are already limited. It holds no
    /// drain token: it has nothing to finish, and its timers would keep a stop
    /// waiting for it. It ends with the system.
    pub fn new(limits: Arc<Limits>, policy: Policy, log: Logger) -> Self {
        limits.apply(policy.clone());
        Self {
            limits,
            policy,
            meters: HashMap::new(),
            log,
        }
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, _| act.limits.tick(&mut act.meters));
        ctx.run_interval(SWEEP, |act, _| {
            let dropped = act.limits.sweep();
            if dropped > 0 {
                debug!(act.log, "idle request limiters dropped"; "count" => dropped);
            }
        });
    }
}

/// Puts the kept policy back in force and forgets the rate meters; `started`
/// re-arms the tick and sweep timers the restart cancelled.
impl Supervised for RateLimiter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.meters.clear();
        self.limits.apply(self.policy.clone());
    }
}

crate::supervise::panic_on_fault!(RateLimiter);

impl Handler<Configure> for RateLimiter {
    type Result = ();

    fn handle(&mut self, Configure(policy): Configure, _: &mut Context<Self>) {
        info!(self.log, "rate limits applied";
            "enabled" => policy.enabled, "rate" => policy.rate, "burst" => policy.burst,
            "global_rate" => policy.global_rate);
        self.policy = policy.clone();
        self.limits.apply(policy);
    }
}

impl Handler<GetLimits> for RateLimiter {
    type Result = MessageResult<GetLimits>;

    fn handle(&mut self, _: GetLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.limits.to_json())
    }
}

impl Handler<SetLimits> for RateLimiter {
    type Result = Result<Value>;

    fn handle(&mut self, SetLimits(change): SetLimits, _: &mut Context<Self>) -> Self::Result {
        let reply = self.limits.set(&change).map_err(|r| match r {
            Refusal::Off => Error::NotAvailable("throttle.enabled is false"),
            Refusal::BadArgs(m) => Error::BadArgs(m),
        })?;
        if change.connection.is_none() {
            self.policy = Policy::clone(&self.limits.policy());
        }
        info!(self.log, "rate limits set";
            "rate" => change.rate, "burst" => change.burst,
            "global_rate" => change.global_rate, "connection" => change.connection);
        Ok(reply)
    }
}
