//! Circuit breakers, one actor per endpoint (issue 6).
//!
//! [`machine`] decides closed / open / half-open; [`BreakerActor`] owns one machine
//! and gives it what a pure machine cannot have: a clock and a timer. Why an actor
//! per endpoint rather than a field of the balancer: a breaker's decisions are asked
//! for from connect futures running outside the balancer's mailbox, and its
//! `reset_timeout` must fire on time even when no stream arrives; an actor serialises
//! both on its own mailbox without holding up the balancer's picks.
//!
//! The Balancer starts one per endpoint and owns its address. A connect asks
//! [`Allow`] before dialing and reports [`Outcome`] (or [`Abandoned`]) with the permit
//! it got. Each transition is written to the endpoint's registry row, logged once
//! (warn with `E_BREAKER_OPEN` when it opens, info when it half-opens or closes),
//! published to the registry's subscribers when it opens or closes (SNMP
//! notifications) and told to the balancer as [`BreakerChanged`], so its pool stops picking an endpoint
//! whose breaker is open instead of asking it only to be rejected.

pub mod machine;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix::WeakRecipient;
use slog::{info, warn, Logger};
use sssonector_config::Breaker as BreakerConfig;

use self::machine::{Decision, Permit, State, Transition};
use crate::balancer::registry::{EndpointChange, EndpointRow};
use crate::error::ErrorCode;

/// The circuit breaker of one endpoint of one service.
pub struct BreakerActor {
    /// Tells this breaker's notices from those of an earlier breaker of the same
    /// address (removed, then added again) that may still be in flight.
    id: u64,
    address: String,
    /// The rule; kept so that a restart rebuilds the machine from it.
    config: BreakerConfig,
    machine: machine::Breaker,
    row: Arc<EndpointRow>,
    /// The balancer, told of every transition. Weak: the balancer owns this actor's
    /// address, and a strong one back would keep both alive forever.
    notify: WeakRecipient<BreakerChanged>,
    log: Logger,
    /// The pending half-open, armed for the machine's deadline.
    timer: Option<SpawnHandle>,
    /// The endpoint was removed: ignore everything until the last address drops.
    retired: bool,
}

impl BreakerActor {
    /// A closed breaker for `address` with `config`'s rule, writing its state to `row`
    /// and telling `notify` of each change. `id` is echoed in every
    /// [`BreakerChanged`]. `log` is the balancer's, which names the service; the
    /// breaker adds the endpoint.
    pub fn new(
        id: u64,
        address: &str,
        config: BreakerConfig,
        row: Arc<EndpointRow>,
        notify: WeakRecipient<BreakerChanged>,
        log: &Logger,
    ) -> Self {
        Self {
            id,
            address: address.to_owned(),
            machine: machine::Breaker::new(&config, Instant::now()),
            config,
            row,
            notify,
            log: log.new(slog::o!("endpoint" => address.to_owned())),
            timer: None,
            retired: false,
        }
    }

    /// Records, logs and announces `transition` if there is one, then re-arms the
    /// timer for the machine's (possibly new) deadline.
    fn after(&mut self, transition: Option<Transition>, ctx: &mut Context<Self>) {
        if let Some(t) = transition {
            self.announce(t);
        }
        self.arm(ctx);
    }

    /// The one place a transition is logged, counted and told: so the log, the
    /// registry (metrics, SNMP) and the balancer's pool never disagree.
    fn announce(&mut self, t: Transition) {
        if self.retired {
            return;
        }
        let state = self.machine.state();
        self.row.set_breaker(state.into());
        match t {
            Transition::Opened => {
                warn!(self.log, "breaker opened";
                    "code" => ErrorCode::BreakerOpen,
                    "reset_timeout" => %humantime::format_duration(self.config.reset_timeout.duration()));
                self.row.announce(EndpointChange::BreakerOpened);
            }
            Transition::HalfOpened => info!(self.log, "breaker half-open"),
            Transition::Closed => {
                info!(self.log, "breaker closed");
                self.row.announce(EndpointChange::BreakerClosed);
            }
        }
        if let Some(balancer) = self.notify.upgrade() {
            balancer.do_send(BreakerChanged {
                id: self.id,
                address: self.address.clone(),
                state,
            });
        }
    }

    /// Arms the timer for the machine's deadline, replacing any earlier one.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if self.retired {
            return;
        }
        if let Some(deadline) = self.machine.deadline() {
            let wait = deadline.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let t = act.machine.poll(Instant::now());
                act.after(t, ctx);
            }));
        }
    }
}

impl Actor for BreakerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm(ctx);
    }
}

impl Supervised for BreakerActor {
    /// Starts over closed from the kept rule, and says so: a breaker that failed
    /// knows nothing it can trust about the endpoint.
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.timer = None;
        let was = self.machine.state();
        self.machine = machine::Breaker::new(&self.config, Instant::now());
        if was != State::Closed {
            self.announce(Transition::Closed);
        }
    }
}

crate::supervise::panic_on_fault!(BreakerActor);

/// May a stream connect to the endpoint now? `Some(permit)`: yes, then report its
/// [`Outcome`] with the permit; `None`: the breaker is open (or every half-open trial
/// is taken), try another endpoint. Rejections are counted in the registry row.
#[derive(Message)]
#[rtype(result = "Option<Permit>")]
pub struct Allow;

/// How an allowed connect went.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outcome {
    /// The permit [`Allow`] gave.
    pub permit: Permit,
    /// Whether the connect succeeded.
    pub ok: bool,
}

/// An allowed connect was given up before it finished (its stream went away, or
/// the failover ran out of time): it says nothing about the endpoint, and a
/// half-open trial gets its slot back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandoned {
    /// The permit [`Allow`] gave.
    pub permit: Permit,
}

/// Force the breaker closed (`ctl breaker.reset`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reset;

/// Take a new rule (reload); the state stays.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub BreakerConfig);

/// The endpoint was removed: stop timing and announcing; the actor ends when the
/// last holder of its address lets go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// The breaker of `address` moved to `state`: sent to the balancer.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct BreakerChanged {
    /// The breaker's id, as given to [`BreakerActor::new`].
    pub id: u64,
    /// The endpoint.
    pub address: String,
    /// Its new state.
    pub state: State,
}

impl Handler<Allow> for BreakerActor {
    type Result = Option<Permit>;

    fn handle(&mut self, _: Allow, ctx: &mut Self::Context) -> Self::Result {
        let (decision, t) = self.machine.allow(Instant::now());
        self.after(t, ctx);
        match decision {
            Decision::Allow(permit) => Some(permit),
            Decision::Reject => {
                self.row.breaker_rejected();
                None
            }
        }
    }
}

impl Handler<Outcome> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Outcome, ctx: &mut Self::Context) {
        let now = Instant::now();
        let t = if msg.ok {
            self.machine.success(msg.permit, now)
        } else {
            self.machine.failure(msg.permit, now)
        };
        self.after(t, ctx);
    }
}

impl Handler<Abandoned> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Abandoned, _ctx: &mut Self::Context) {
        self.machine.cancelled(msg.permit, Instant::now());
    }
}

impl Handler<Reset> for BreakerActor {
    type Result = ();

    fn handle(&mut self, _: Reset, ctx: &mut Self::Context) {
        let t = self.machine.reset(Instant::now());
        self.after(t, ctx);
    }
}

impl Handler<Reconfigure> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Self::Context) {
        self.machine.reconfigure(&msg.0);
        self.config = msg.0;
        // A shorter reset_timeout may already have passed.
        let t = self.machine.poll(Instant::now());
        self.after(t, ctx);
    }
}

impl Handler<Retire> for BreakerActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        self.retired = true;
        self.arm(ctx);
    }
}
