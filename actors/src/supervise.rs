//! Supervision that survives a panic: [`start`] runs a long-lived actor so that a
//! panic in one of its handlers restarts it in place, its address still good.
//!
//! actix's own `Supervisor` restarts an actor that *stops*; a panic unwinds out of
//! the task that polls the actor, the task is dropped with the actor's mailbox, and
//! every `Addr` then answers `Closed`. Here the actor's `ContextFut` (which owns the
//! mailbox) is polled inside [`std::panic::catch_unwind`]. On a panic it is logged
//! with `E_ACTOR_PANIC`, counted in `sssonector_actor_restarts_total{actor}`, and
//! `ContextFut::restart` runs: the context's spawned futures and timers are
//! cancelled, [`Supervised::restarting`] rebuilds the actor's machine from the state
//! it keeps, and `started` runs again (restart clears the started flag), re-arming
//! its timers. Messages queued behind the one that panicked are then handled as
//! usual; the sender of that one sees its reply channel closed.
//!
//! An actor that stops while someone still holds its address is restarted the same
//! way when started with [`OnStop::Restart`] (what actix's `Supervisor` does);
//! [`OnStop::End`] lets an actor that stops on request stay stopped.
//!
//! A [`Budget`] bounds restarts: more than [`MAX_RESTARTS`] within
//! [`RESTART_WINDOW`] means the fault is not transient, and the actor is left
//! stopped (logged with the same code, its component `failed` in `status` and
//! `health`). The panic hook is left alone: the default one still prints the panic
//! and its location on stderr. Panics must unwind for this to work; the workspace's
//! profiles keep `panic = "unwind"`.
//!
//! Connection actors are not supervised this way: a session is one peer's, and the
//! peer reconnects.
//!
//! The restart counts are process-wide, as a panic is: one daemon per process.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use actix::dev::ContextFut;
use actix::prelude::*;
use prometheus::{IntCounterVec, Opts};
use serde_json::{json, Value};
use slog::{error, warn, Logger};

use crate::error::ErrorCode;

/// Restarts allowed within [`RESTART_WINDOW`]; one more and the actor stays stopped.
pub const MAX_RESTARTS: usize = 5;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// What to do when a supervised actor stops (rather than panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    /// Restart it while its address is held (actix's `Supervisor`).
    Restart,
    /// Let it end: it stops when asked to (`Shutdown`, `StopService`).
    End,
}

/// How many restarts fit in a window: the pure part of the restart-loop guard.
#[derive(Debug, Clone)]
pub struct Budget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Budget {
    /// At most `max` restarts within any `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::with_capacity(max),
        }
    }

    /// Whether a restart at `now` is allowed; an allowed one is counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Restarts and failures of supervised actors, by actor name (a fixed set of
/// names: the label stays bounded).
pub struct Restarts {
    counter: IntCounterVec,
    /// name -> whether it was left stopped after too many restarts.
    seen: Mutex<BTreeMap<&'static str, bool>>,
}

static RESTARTS: LazyLock<Restarts> = LazyLock::new(|| Restarts {
    counter: IntCounterVec::new(
        Opts::new(
            "sssonector_actor_restarts_total",
            "Restarts of supervised actors after a panic (or an unasked stop), by actor.",
        ),
        &["actor"],
    )
    .expect("valid metric"),
    seen: Mutex::new(BTreeMap::new()),
});

/// The process's restart counts.
pub fn restarts() -> &'static Restarts {
    &RESTARTS
}

impl Restarts {
    /// The counter, for a metrics registry.
    pub fn counter(&self) -> IntCounterVec {
        self.counter.clone()
    }

    fn restarted(&self, name: &'static str) -> u64 {
        self.seen
            .lock()
            .expect("restart table lock is never held across a panic")
            .entry(name)
            .or_insert(false);
        let c = self.counter.with_label_values(&[name]);
        c.inc();
        c.get()
    }

    fn failed(&self, name: &'static str) {
        self.seen
            .lock()
            .expect("restart table lock is never held across a panic")
            .insert(name, true);
    }

    /// Restarts so far of `name`.
    pub fn count(&self, name: &str) -> u64 {
        self.counter.with_label_values(&[name]).get()
    }

    /// Whether `name` was given up on (left stopped).
    pub fn gave_up(&self, name: &str) -> bool {
        self.seen
            .lock()
            .expect("restart table lock is never held across a panic")
            .get(name)
            .copied()
            .unwrap_or(false)
    }

    /// `{"balancer": {"restarts": 1, "failed": false}, ...}` for every actor that
    /// was restarted at least once.
    pub fn to_json(&self) -> Value {
        let seen = self
            .seen
            .lock()
            .expect("restart table lock is never held across a panic");
        let rows: serde_json::Map<String, Value> = seen
            .iter()
            .map(|(name, failed)| {
                let n = self.counter.with_label_values(&[name]).get();
                (name.to_string(), json!({ "restarts": n, "failed": failed }))
            })
            .collect();
        Value::Object(rows)
    }
}

/// Starts `actor` under panic-proof supervision; `name` labels its restarts in the
/// metrics and its supervision log lines (key `supervised`, beside what `log`
/// carries).
pub fn start<A>(actor: A, name: &'static str, on_stop: OnStop, log: &Logger) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let ctx = Context::new();
    let addr = ctx.address();
    let fut = ctx.into_future(actor);
    actix_rt::spawn(Supervision {
        fut: Some(fut),
        name,
        on_stop,
        budget: Budget::new(MAX_RESTARTS, RESTART_WINDOW),
        log: log.new(slog::o!("supervised" => name)),
    });
    addr
}

/// Why an actor is being restarted.
enum Why {
    Panicked(String),
    Stopped,
}

/// The future that runs one supervised actor.
struct Supervision<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// `None` once given up on.
    fut: Option<ContextFut<A, Context<A>>>,
    name: &'static str,
    on_stop: OnStop,
    budget: Budget,
    log: Logger,
}

impl<A> Supervision<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// Restarts the actor after `why`; false when it stays stopped.
    fn restart(&mut self, mut why: Why) -> bool {
        loop {
            let Some(fut) = self.fut.as_mut() else {
                return false;
            };
            let held = fut.ctx().connected();
            if let Why::Panicked(panic) = &why {
                if !held {
                    warn!(self.log, "actor panicked, nobody holds its address: not restarted";
                        "code" => ErrorCode::ActorPanic, "panic" => panic);
                    self.discard();
                    return false;
                }
            } else if !held {
                return false;
            }
            if !self.budget.allow(Instant::now()) {
                restarts().failed(self.name);
                error!(self.log, "actor restarted too often, left stopped";
                    "code" => ErrorCode::ActorPanic, "max" => MAX_RESTARTS, "window_s" => RESTART_WINDOW.as_secs());
                self.discard();
                return false;
            }
            let n = restarts().restarted(self.name);
            match &why {
                Why::Panicked(panic) => {
                    error!(self.log, "actor panicked, restarting";
                        "code" => ErrorCode::ActorPanic, "panic" => panic, "restarts" => n)
                }
                Why::Stopped => {
                    warn!(self.log, "actor stopped while in use, restarting"; "restarts" => n)
                }
            }
            match catch_unwind(AssertUnwindSafe(|| fut.restart())) {
                Ok(restarted) => return restarted,
                Err(payload) => why = Why::Panicked(panic_message(&*payload)),
            }
        }
    }

    /// Drops the actor (its `stopping`/`stopped` run); a panic there is contained.
    fn discard(&mut self) {
        if let Some(fut) = self.fut.take() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(fut))) {
                error!(self.log, "actor panicked while stopping";
                    "code" => ErrorCode::ActorPanic, "panic" => panic_message(&*payload));
            }
        }
    }
}

impl<A> Future for Supervision<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(fut) = this.fut.as_mut() else {
                return Poll::Ready(());
            };
            let why = match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) if this.on_stop == OnStop::End => return Poll::Ready(()),
                Ok(Poll::Ready(())) => Why::Stopped,
                Err(payload) => Why::Panicked(panic_message(&*payload)),
            };
            if !this.restart(why) {
                return Poll::Ready(());
            }
        }
    }
}

/// The text of a panic's payload (`panic!` with a literal or a format).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_string())
}

/// Debug builds only: makes the receiving actor panic, to prove supervision (`ctl
/// fault`).
#[cfg(debug_assertions)]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Panic;

/// Implements `Handler<Panic>` for supervised actors in debug builds.
macro_rules! panic_on_fault {
    ($($actor:ty),* $(,)?) => {
        $(
            #[cfg(debug_assertions)]
            impl ::actix::Handler<$crate::supervise::Panic> for $actor {
                type Result = ();
                fn handle(&mut self, _: $crate::supervise::Panic, _: &mut Self::Context) {
                    panic!("fault injected into {}", stringify!($actor));
                }
            }
        )*
    };
}
pub(crate) use panic_on_fault;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn budget_allows_max_restarts_per_window() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, Duration::from_secs(10));
        assert!(b.allow(t0));
        assert!(b.allow(t0 + Duration::from_secs(1)));
        assert!(b.allow(t0 + Duration::from_secs(2)));
        assert!(!b.allow(t0 + Duration::from_secs(3)));
        // The first has left the window: room for one more.
        assert!(b.allow(t0 + Duration::from_secs(10)));
        assert!(!b.allow(t0 + Duration::from_secs(10)));
    }

    /// Counts its restarts; panics or stops on request.
    struct Fragile {
        restarts: Arc<AtomicUsize>,
        started: Arc<AtomicUsize>,
        /// Rebuilt by `restarting`, as a machine would be.
        value: u32,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            self.started.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Supervised for Fragile {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.restarts.fetch_add(1, Ordering::SeqCst);
            self.value = 7;
        }
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Get;

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Boom;

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Quit;

    impl Handler<Get> for Fragile {
        type Result = u32;
        fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u32 {
            self.value
        }
    }

    impl Handler<Boom> for Fragile {
        type Result = ();
        fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
            self.value = 0;
            panic!("boom");
        }
    }

    impl Handler<Quit> for Fragile {
        type Result = ();
        fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    fn fragile() -> (Fragile, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (restarts, started) = (Arc::default(), Arc::default());
        let f = Fragile {
            restarts: Arc::clone(&restarts),
            started: Arc::clone(&started),
            value: 1,
        };
        (f, restarts, started)
    }

    #[actix_rt::test]
    async fn panicking_actor_keeps_its_address_and_answers_after_restart() {
        let (actor, restarts, started) = fragile();
        let addr = start(actor, "test_fragile", OnStop::End, &log());
        assert_eq!(addr.send(Get).await.expect("running"), 1);
        // The panicking message's reply channel is closed; the actor is not.
        assert!(addr.send(Boom).await.is_err());
        assert_eq!(addr.send(Get).await.expect("restarted"), 7);
        assert!(addr.connected());
        assert_eq!(restarts.load(Ordering::SeqCst), 1);
        assert_eq!(started.load(Ordering::SeqCst), 2, "started runs again");
        assert_eq!(super::restarts().count("test_fragile"), 1);
        assert!(!super::restarts().gave_up("test_fragile"));
    }

    #[actix_rt::test]
    async fn a_panic_loop_is_given_up_after_the_budget() {
        let (actor, restarts, _) = fragile();
        let addr = start(actor, "test_loop", OnStop::End, &log());
        for _ in 0..MAX_RESTARTS {
            assert!(addr.send(Boom).await.is_err());
            assert_eq!(addr.send(Get).await.expect("restarted"), 7);
        }
        assert!(addr.send(Boom).await.is_err());
        assert!(addr.send(Get).await.is_err(), "left stopped");
        assert_eq!(restarts.load(Ordering::SeqCst), MAX_RESTARTS);
        assert!(super::restarts().gave_up("test_loop"));
        assert_eq!(super::restarts().to_json()["test_loop"]["failed"], true);
    }

    #[actix_rt::test]
    async fn a_stop_restarts_only_when_asked() {
        let (actor, restarts, _) = fragile();
        let addr = start(actor, "test_stop_restart", OnStop::Restart, &log());
        addr.send(Quit).await.expect("handled");
        assert_eq!(addr.send(Get).await.expect("restarted"), 7);
        assert_eq!(restarts.load(Ordering::SeqCst), 1);

        let (actor, restarts, _) = fragile();
        let addr = start(actor, "test_stop_end", OnStop::End, &log());
        addr.send(Quit).await.expect("handled");
        assert!(addr.send(Get).await.is_err(), "stayed stopped");
        assert_eq!(restarts.load(Ordering::SeqCst), 0);
    }
}
