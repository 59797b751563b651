//! SNMP notifications: SSSONECTOR-MIB's sssTunnelUp, sssTunnelDown, sssEndpointDown,
//! sssEndpointUp, sssBreakerOpened, sssBreakerClosed and sssCertExpiring, sent as
//! SNMPv2-Trap PDUs (RFC 3416 §4.2.6) to `monitor.snmp.trap_targets`.
//!
//! The pure part turns a [`Notification`] into the PDU's bindings — sysUpTime.0,
//! snmpTrapOID.0, then the notification's OBJECTS with the instance that identifies
//! them — and decides when our certificate deserves a warning ([`CertWatch`]). The
//! [`TrapSender`] actor listens to the tunnel's [`TunnelEvent`]s and the endpoint
//! registry's [`EndpointEvent`]s (health and breaker transitions), checks the
//! certificate hourly, and sends one datagram per target from an unbound UDP socket:
//! SNMPv2c with the target's community, SNMPv3 through a [`SealV3`] when the target
//! names a user. Every notification to every target is logged and counted in
//! `sssonector_snmp_notifications_total` by one function, so the two agree.
//!
//! Notifications are unacknowledged datagrams: one lost on the way is not resent.
//! On a stop the sender keeps running until the tunnel's sessions have ended, so
//! their sssTunnelDown notifications still go out (within the drain's grace).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::v2::{Pdu, Pdus, Trap, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use slog::{debug, error, info, warn, Logger};
use sssonector_config::{Config, HostPort};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, watch, Notify};

use super::agent::syntax;
use super::mib::{self, Oid, Value, ROOT};
use crate::balancer::registry::{BreakerState, EndpointChange, EndpointEvent};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode};
use crate::metrics::Metrics;
use crate::tunnel::stats::{Stats, TunnelEvent};

/// sysUpTime.0 (RFC 3418): the first binding of every SNMPv2-Trap, the time since
/// the agent started (RFC 3416 §4.2.6).
pub const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
/// snmpTrapOID.0 (RFC 3418): the second binding, naming the notification.
pub const SNMP_TRAP_OID: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];
/// sssNotifications, below [`ROOT`]: notification `n` is `sssNotifications.n`.
const NOTIFICATIONS: u32 = 0;
/// sssNotifyObjects, below [`ROOT`]: the objects only notifications carry.
const NOTIFY_OBJECTS: [u32; 2] = [1, 9];
/// sssNotifyReason, sssNotifyCertSubject, sssNotifyCertDaysLeft: sssNotifyObjects.n.
const NOTIFY_REASON: u32 = 1;
const NOTIFY_CERT_SUBJECT: u32 = 2;
const NOTIFY_CERT_DAYS_LEFT: u32 = 3;

/// Seconds in a day: the unit of sssNotifyCertDaysLeft and the shortest interval
/// between two sssCertExpiring for one certificate.
pub const DAY: i64 = 86_400;
/// How often the certificate is read again; the first check is at start.
pub const CERT_CHECK: Duration = Duration::from_secs(3600);

/// One notification SSSONECTOR-MIB defines, with the values it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// sssTunnelUp: a session started; its peer table row is `index`.
    TunnelUp {
        /// The session's sssPeerIndex.
        index: u32,
        /// sssPeerName.
        peer: String,
        /// sssPeerRemote.
        remote: String,
    },
    /// sssTunnelDown: a session ended; its row was `index`.
    TunnelDown {
        /// The session's sssPeerIndex.
        index: u32,
        /// sssPeerName.
        peer: String,
        /// sssPeerRemote.
        remote: String,
        /// sssNotifyReason: the stable error code that ended it, or `local`.
        reason: &'static str,
    },
    /// sssEndpointDown, sssEndpointUp, sssBreakerOpened or sssBreakerClosed (by
    /// `change`): an endpoint's health or breaker flipped; its endpoint table row is
    /// `index`.
    Endpoint {
        /// Which of the four.
        change: EndpointChange,
        /// The endpoint's sssEndpointIndex.
        index: u32,
        /// sssEndpointService.
        service: String,
        /// sssEndpointAddress.
        address: String,
    },
    /// sssCertExpiring: our certificate expires within the warning period, or has.
    CertExpiring {
        /// sssNotifyCertSubject: the subject distinguished name.
        subject: String,
        /// sssNotifyCertDaysLeft: whole days left, negative once expired.
        days_left: i64,
    },
}

impl Notification {
    /// The notification for a tunnel event; none for a session whose id is past the
    /// peer table's index range (it never had a row to name).
    pub fn from_event(event: &TunnelEvent) -> Option<Self> {
        Some(match event {
            TunnelEvent::Up { session } => Notification::TunnelUp {
                index: mib::peer_index(session.id)?,
                peer: session.peer.clone(),
                remote: session.remote.clone(),
            },
            TunnelEvent::Down { session, reason } => Notification::TunnelDown {
                index: mib::peer_index(session.id)?,
                peer: session.peer.clone(),
                remote: session.remote.clone(),
                reason,
            },
        })
    }

    /// The notification for an endpoint's transition.
    pub fn from_endpoint(event: &EndpointEvent) -> Self {
        Notification::Endpoint {
            change: event.change,
            index: event.index,
            service: event.service.clone(),
            address: event.address.clone(),
        }
    }

    /// Its arc below sssNotifications.
    pub fn number(&self) -> u32 {
        match self {
            Notification::TunnelUp { .. } => 1,
            Notification::TunnelDown { .. } => 2,
            Notification::Endpoint { change, .. } => match change {
                EndpointChange::Down => 3,
                EndpointChange::Up => 4,
                EndpointChange::BreakerOpened => 5,
                EndpointChange::BreakerClosed => 6,
            },
            Notification::CertExpiring { .. } => 7,
        }
    }

    /// Its OID, the value of snmpTrapOID.0.
    pub fn oid(&self) -> Oid {
        let mut oid = ROOT.to_vec();
        oid.extend([NOTIFICATIONS, self.number()]);
        oid
    }

    /// Its name in logs and in the metric's `notification` label.
    pub fn label(&self) -> &'static str {
        match self {
            Notification::TunnelUp { .. } => "tunnel_up",
            Notification::TunnelDown { .. } => "tunnel_down",
            Notification::Endpoint { change, .. } => match change {
                EndpointChange::Down => "endpoint_down",
                EndpointChange::Up => "endpoint_up",
                EndpointChange::BreakerOpened => "breaker_opened",
                EndpointChange::BreakerClosed => "breaker_closed",
            },
            Notification::CertExpiring { .. } => "cert_expiring",
        }
    }

    /// Its OBJECTS in the MIB's order, each as the instance it reports: a peer or
    /// endpoint table column at the session's or endpoint's row, a notification-only
    /// scalar at `.0`.
    pub fn objects(&self) -> Vec<(Oid, Value)> {
        let text = |s: &str| Value::Octets(s.as_bytes().to_vec());
        match self {
            Notification::TunnelUp {
                index,
                peer,
                remote,
            } => vec![
                (mib::peer_cell(mib::PEER_NAME, *index), text(peer)),
                (mib::peer_cell(mib::PEER_REMOTE, *index), text(remote)),
            ],
            Notification::TunnelDown {
                index,
                peer,
                remote,
                reason,
            } => vec![
                (mib::peer_cell(mib::PEER_NAME, *index), text(peer)),
                (mib::peer_cell(mib::PEER_REMOTE, *index), text(remote)),
                (notify_object(NOTIFY_REASON), text(reason)),
            ],
            Notification::Endpoint {
                change,
                index,
                service,
                address,
            } => {
                let mut objects = vec![
                    (
                        mib::endpoint_cell(mib::ENDPOINT_SERVICE, *index),
                        text(service),
                    ),
                    (
                        mib::endpoint_cell(mib::ENDPOINT_ADDRESS, *index),
                        text(address),
                    ),
                ];
                // The state the breaker entered, as sssEndpointBreakerState shows it.
                let state = match change {
                    EndpointChange::BreakerOpened => Some(BreakerState::Open),
                    EndpointChange::BreakerClosed => Some(BreakerState::Closed),
                    EndpointChange::Down | EndpointChange::Up => None,
                };
                if let Some(state) = state {
                    objects.push((
                        mib::endpoint_cell(mib::ENDPOINT_BREAKER_STATE, *index),
                        Value::Integer(state as i64),
                    ));
                }
                objects
            }
            Notification::CertExpiring { subject, days_left } => {
                let days = (*days_left).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
                vec![
                    (notify_object(NOTIFY_CERT_SUBJECT), text(subject)),
                    (notify_object(NOTIFY_CERT_DAYS_LEFT), Value::Integer(days)),
                ]
            }
        }
    }
}

/// The instance `.0` of sssNotifyObjects.`n`.
fn notify_object(n: u32) -> Oid {
    let mut oid = ROOT.to_vec();
    oid.extend(NOTIFY_OBJECTS);
    oid.extend([n, 0]);
    oid
}

fn binding(oid: Oid, value: &Value) -> VarBind {
    VarBind {
        name: ObjectIdentifier::new_unchecked(oid.into()),
        value: VarBindValue::Value(syntax(value)),
    }
}

/// The bindings of `notification` sent `uptime_ticks` hundredths of a second after
/// the agent started: sysUpTime.0, snmpTrapOID.0, then its objects (RFC 3416 §4.2.6).
pub fn varbinds(notification: &Notification, uptime_ticks: u32) -> Vec<VarBind> {
    let mut out = Vec::with_capacity(5);
    out.push(binding(SYS_UPTIME.to_vec(), &Value::Ticks(uptime_ticks)));
    out.push(binding(
        SNMP_TRAP_OID.to_vec(),
        &Value::Oid(notification.oid()),
    ));
    out.extend(
        notification
            .objects()
            .into_iter()
            .map(|(oid, v)| binding(oid, &v)),
    );
    out
}

/// The SNMPv2-Trap PDU of `notification` with `request_id`.
pub fn trap_pdu(request_id: i32, notification: &Notification, uptime_ticks: u32) -> Pdus {
    Pdus::Trap(Trap(Pdu {
        request_id,
        error_status: Pdu::ERROR_STATUS_NO_ERROR,
        error_index: 0,
        variable_bindings: varbinds(notification, uptime_ticks),
    }))
}

/// `pdu` in an SNMPv2c message (RFC 1901) for `community`, BER-encoded.
///
/// # Errors
/// rasn's, which a PDU built by [`trap_pdu`] never meets.
pub fn encode_v2c(community: &[u8], pdu: Pdus) -> Result<Vec<u8>, rasn::error::EncodeError> {
    rasn::ber::encode(&Message {
        version: Integer::from(1),
        community: OctetString::from(community.to_vec()),
        data: pdu,
    })
}

/// What our certificate says about its life, as read from `tunnel.cert_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject distinguished name, e.g. `CN=sssonector-test`.
    pub subject: String,
    /// When it expires, seconds since the Unix epoch (notAfter).
    pub not_after: i64,
}

/// Decides when our certificate deserves sssCertExpiring: from `warning` before its
/// end, and after it, at most once a day for one certificate (a renewed one, with
/// another subject or end, is news at once).
#[derive(Debug)]
pub struct CertWatch {
    warning: Duration,
    /// The certificate last reported and when, Unix seconds.
    last: Option<(CertFacts, i64)>,
}

impl CertWatch {
    /// A watch that warns `warning` ahead.
    pub fn new(warning: Duration) -> Self {
        Self {
            warning,
            last: None,
        }
    }

    /// Warns `warning` ahead from now on (a reload).
    pub fn set_warning(&mut self, warning: Duration) {
        self.warning = warning;
    }

    /// The notification `cert` deserves at `now` (Unix seconds), if any; a `Some`
    /// counts as sent.
    pub fn check(&mut self, cert: &CertFacts, now: i64) -> Option<Notification> {
        let left = cert.not_after.saturating_sub(now);
        let warning = i64::try_from(self.warning.as_secs()).unwrap_or(i64::MAX);
        if left > warning {
            return None;
        }
        if let Some((last, at)) = &self.last {
            if last == cert && now.saturating_sub(*at) < DAY {
                return None;
            }
        }
        self.last = Some((cert.clone(), now));
        Some(Notification::CertExpiring {
            subject: cert.subject.clone(),
            days_left: left.div_euclid(DAY),
        })
    }
}

/// Seals SNMPv3 notifications: the USM engine implements it (with its engine ID,
/// boots, time and the user's keys), so the sender needs no knowledge of USM.
pub trait SealV3: Send + Sync {
    /// The whole SNMPv3 message (authPriv) carrying `pdu` for `user`, or none when
    /// it cannot be made (an unknown user, no keys).
    fn seal_trap(&self, user: &str, pdu: Pdus) -> Option<Vec<u8>>;
}

/// How a target is addressed.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// SNMPv2c with this community.
    Community(Vec<u8>),
    /// SNMPv3 for this USM user.
    User(String),
}

/// One `monitor.snmp.trap_targets` entry, ready to send to.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Where: a host name is resolved when the sender starts, and again after a
    /// failure.
    pub address: HostPort,
    /// As what.
    pub auth: Auth,
}

/// What the sender takes from the configuration; a reload replaces it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The targets, in configuration order.
    pub targets: Vec<TargetSpec>,
    /// Our certificate (`tunnel.cert_file`).
    pub cert_file: Option<PathBuf>,
    /// `monitor.snmp.cert_warning`.
    pub cert_warning: Duration,
}

impl Settings {
    /// The settings `config` gives: each target's community, or the agent's.
    pub fn from_config(config: &Config) -> Self {
        let snmp = &config.monitor.snmp;
        let targets = snmp
            .trap_targets
            .iter()
            .map(|t| TargetSpec {
                address: t.address.get().clone(),
                auth: match &t.user {
                    Some(user) => Auth::User(user.clone()),
                    None => Auth::Community(
                        t.community
                            .as_ref()
                            .or(snmp.community.as_ref())
                            .map(|c| c.expose().as_bytes().to_vec())
                            .unwrap_or_default(),
                    ),
                },
            })
            .collect();
        Self {
            targets,
            cert_file: config.tunnel.cert_file.clone(),
            cert_warning: snmp.cert_warning.duration(),
        }
    }
}

/// Replace the sender's settings (a reload); the certificate is checked again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Settings);

/// Sends the notifications. Its work runs in a task that outlives the actor on a
/// stop until the tunnel's sessions have ended (see the module's doc).
pub struct TrapSender {
    settings: watch::Sender<Settings>,
    /// Wakes the task to check our certificate now (the certificate watcher put a
    /// renewed one in use).
    check: Arc<Notify>,
    run: Option<(Run, Events)>,
    log: Logger,
}

impl TrapSender {
    /// A sender of notifications to `settings.targets` about the sessions in
    /// `stats`; `started` is the agent's start (sysUpTime), `seal` seals SNMPv3
    /// notifications (none: v3 targets are counted `unsealed`), `drain` is held
    /// until the last notification of a stop went out.
    pub fn new(
        settings: Settings,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        seal: Option<Arc<dyn SealV3>>,
        started: Instant,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        // Subscribed now, so nothing between this and `started` is missed.
        let events = Events {
            tunnel: stats.subscribe(),
            endpoints: stats.endpoints.subscribe(),
        };
        let run = Run {
            watch: CertWatch::new(settings.cert_warning),
            targets: targets(&settings),
            settings: settings.clone(),
            next_request: 0,
            started,
            v4: None,
            v6: None,
            seal,
            stats,
            metrics,
            log: log.clone(),
            _drain: drain,
        };
        Self {
            settings: watch::Sender::new(settings),
            check: Arc::new(Notify::new()),
            run: Some((run, events)),
            log,
        }
    }
}

impl Actor for TrapSender {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let Some((run, events)) = self.run.take() else {
            return;
        };
        info!(self.log, "snmp notifications on"; "targets" => run.targets.len());
        // Detached: when the actor stops, `settings` is dropped and the task
        // finishes the stop on its own (see `Run::serve`).
        actix_rt::spawn(run.serve(events, self.settings.subscribe(), self.check.clone()));
    }
}

/// Check our certificate now: the certificate watcher put a renewed one in use.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckCertificate;

impl Handler<CheckCertificate> for TrapSender {
    type Result = ();

    fn handle(&mut self, _: CheckCertificate, _ctx: &mut Self::Context) {
        self.check.notify_one();
    }
}

/// Nothing to rebuild: the detached sending task keeps its settings receiver.
impl Supervised for TrapSender {}

crate::supervise::panic_on_fault!(TrapSender);

impl Handler<Reconfigure> for TrapSender {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _ctx: &mut Self::Context) {
        self.settings.send_if_modified(|s| {
            let changed = *s != msg.0;
            *s = msg.0;
            changed
        });
    }
}

/// The sender's event sources.
struct Events {
    tunnel: broadcast::Receiver<TunnelEvent>,
    endpoints: broadcast::Receiver<EndpointEvent>,
}

/// A target and where its name resolved to.
struct Target {
    spec: TargetSpec,
    /// `host:port` as configured, for logs.
    name: String,
    /// None until resolved, and again after a failed send.
    addr: Option<SocketAddr>,
}

fn targets(settings: &Settings) -> Vec<Target> {
    settings
        .targets
        .iter()
        .map(|spec| Target {
            name: spec.address.to_string(),
            spec: spec.clone(),
            addr: None,
        })
        .collect()
}

/// What became of one notification to one target.
enum Outcome {
    Sent,
    /// The name did not resolve.
    Unresolved(Error),
    /// A v3 target without a [`SealV3`], or one that could not seal.
    Unsealed,
    /// BER encoding failed (a bug).
    Unencoded(String),
    /// The socket refused the datagram.
    SendFailed(Error),
}

impl Outcome {
    /// The metric's `result` label.
    fn result(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Unresolved(_) => "unresolved",
            Outcome::Unsealed => "unsealed",
            Outcome::Unencoded(_) => "unencoded",
            Outcome::SendFailed(_) => "send_failed",
        }
    }
}

/// The sender's state and I/O handles, owned by its task.
struct Run {
    settings: Settings,
    targets: Vec<Target>,
    watch: CertWatch,
    /// The request-id of the next notification; each gets its own.
    next_request: i32,
    started: Instant,
    /// Unbound sockets, one per address family, made at the first use.
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    seal: Option<Arc<dyn SealV3>>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    log: Logger,
    _drain: Option<DrainToken>,
}

impl Run {
    /// Sends until the actor is gone and, after that, until every session has ended
    /// and its sssTunnelDown went out.
    async fn serve(
        mut self,
        events: Events,
        mut settings: watch::Receiver<Settings>,
        check: Arc<Notify>,
    ) {
        let Events {
            tunnel: mut events,
            endpoints: mut endpoint_events,
        } = events;
        // The registry lives as long as `stats`, which this task holds: its channel
        // closes never, but a closed one is no reason to stop the tunnel's.
        let mut endpoints_open = true;
        for i in 0..self.targets.len() {
            // A failure is logged there and retried at the next notification.
            let _ = self.resolve(i).await;
        }
        // The first tick is at once: the certificate is checked at start.
        let mut hourly = tokio::time::interval(CERT_CHECK);
        hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.tunnel_event(&event).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lost(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                event = endpoint_events.recv(), if endpoints_open => match event {
                    Ok(event) => self.notify(&Notification::from_endpoint(&event)).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lost(n),
                    Err(broadcast::error::RecvError::Closed) => endpoints_open = false,
                },
                _ = hourly.tick(), if !stopping => self.check_cert().await,
                () = check.notified(), if !stopping => self.check_cert().await,
                changed = settings.changed(), if !stopping => match changed {
                    Ok(()) => {
                        let new = settings.borrow_and_update().clone();
                        self.reconfigure(new).await;
                    }
                    Err(_) => stopping = true,
                },
            }
            // `Stats` publishes a Down under the lock it counts sessions with: no
            // live session means every Down is already queued here.
            if stopping && events.is_empty() && self.stats.current() == 0 {
                break;
            }
        }
        debug!(self.log, "snmp notifications off");
    }

    async fn reconfigure(&mut self, settings: Settings) {
        let old: Vec<Target> = std::mem::take(&mut self.targets);
        self.targets = targets(&settings);
        for t in &mut self.targets {
            // A target kept keeps its resolved address; new ones resolve now.
            t.addr = old
                .iter()
                .find(|o| o.spec.address == t.spec.address)
                .and_then(|o| o.addr);
        }
        for i in 0..self.targets.len() {
            if self.targets[i].addr.is_none() {
                let _ = self.resolve(i).await;
            }
        }
        self.watch.set_warning(settings.cert_warning);
        self.settings = settings;
        info!(self.log, "snmp notifications reconfigured"; "targets" => self.targets.len());
        self.check_cert().await;
    }

    /// Resolves target `i`, logging a failure; its first address wins.
    async fn resolve(&mut self, i: usize) -> Result<SocketAddr, Error> {
        let t = &mut self.targets[i];
        let HostPort { host, port } = &t.spec.address;
        let found = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
            });
        match found {
            Ok(addr) => {
                t.addr = Some(addr);
                debug!(self.log, "snmp target resolved"; "target" => &t.name, "addr" => %addr);
                Ok(addr)
            }
            Err(e) => {
                let err = Error::io(format!("trap target {}", t.name), e);
                warn!(self.log, "snmp target does not resolve, retried at the next notification";
                    "code" => err.code(), "target" => &t.name, "error" => %err);
                Err(err)
            }
        }
    }

    async fn tunnel_event(&mut self, event: &TunnelEvent) {
        match Notification::from_event(event) {
            Some(n) => self.notify(&n).await,
            None => debug!(self.log, "session without a peer table row, not notified"),
        }
    }

    async fn check_cert(&mut self) {
        let Some(path) = self.settings.cert_file.clone() else {
            return;
        };
        let cert = match read_cert(&path) {
            Ok(c) => c,
            Err(err) => {
                warn!(self.log, "certificate not readable for its expiry check";
                    "code" => err.code(), "file" => %path.display(), "error" => %err);
                return;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let Some(n) = self.watch.check(&cert, now) else {
            return;
        };
        if let Notification::CertExpiring { days_left, .. } = n {
            let code = ErrorCode::CertExpiring;
            let (file, subject) = (path.display().to_string(), cert.subject.as_str());
            if days_left < 0 {
                error!(self.log, "certificate expired";
                    "code" => code, "file" => file, "subject" => subject, "days_left" => days_left);
            } else {
                warn!(self.log, "certificate expires soon";
                    "code" => code, "file" => file, "subject" => subject, "days_left" => days_left);
            }
        }
        self.notify(&n).await;
    }

    /// Sends `n` to every target.
    async fn notify(&mut self, n: &Notification) {
        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1) & i32::MAX;
        let ticks = self.started.elapsed().as_millis() / 10;
        let pdu = trap_pdu(request_id, n, u32::try_from(ticks).unwrap_or(u32::MAX));
        for i in 0..self.targets.len() {
            let outcome = self.send(i, &pdu).await;
            self.record(n, request_id, i, &outcome);
        }
    }

    async fn send(&mut self, i: usize, pdu: &Pdus) -> Outcome {
        let addr = match self.targets[i].addr {
            Some(a) => a,
            None => match self.resolve(i).await {
                Ok(a) => a,
                Err(e) => return Outcome::Unresolved(e),
            },
        };
        let datagram = match &self.targets[i].spec.auth {
            Auth::Community(c) => match encode_v2c(c, pdu.clone()) {
                Ok(d) => d,
                Err(e) => return Outcome::Unencoded(e.to_string()),
            },
            Auth::User(user) => match self
                .seal
                .as_ref()
                .and_then(|s| s.seal_trap(user, pdu.clone()))
            {
                Some(d) => d,
                None => return Outcome::Unsealed,
            },
        };
        let sent = match self.socket(addr).await {
            Ok(socket) => socket.send_to(&datagram, addr).await.map(drop),
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => Outcome::Sent,
            Err(e) => {
                // The name may point elsewhere now: look it up again next time.
                self.targets[i].addr = None;
                Outcome::SendFailed(Error::io(format!("trap target {addr}"), e))
            }
        }
    }

    /// The socket for `addr`'s family, bound to an ephemeral port at the first use.
    async fn socket(&mut self, addr: SocketAddr) -> std::io::Result<&UdpSocket> {
        let (slot, any) = if addr.is_ipv6() {
            (&mut self.v6, "[::]:0")
        } else {
            (&mut self.v4, "0.0.0.0:0")
        };
        if slot.is_none() {
            *slot = Some(UdpSocket::bind(any).await?);
        }
        Ok(slot.as_ref().expect("bound just above"))
    }

    /// Logs and counts one notification to one target.
    fn record(&self, n: &Notification, request_id: i32, i: usize, outcome: &Outcome) {
        self.metrics
            .notifications
            .with_label_values(&[n.label(), outcome.result()])
            .inc();
        let target = &self.targets[i];
        let log = self.log.new(slog::o!(
            "notification" => n.label(), "target" => target.name.clone(),
            "request_id" => request_id, "result" => outcome.result()));
        match outcome {
            Outcome::Sent => debug!(log, "snmp notification sent"),
            Outcome::Unresolved(err) | Outcome::SendFailed(err) => {
                warn!(log, "snmp notification not sent"; "code" => err.code(), "error" => %err);
            }
            Outcome::Unsealed => warn!(log, "snmp notification not sent";
                "code" => ErrorCode::NotAvailable,
                "error" => "no SNMPv3 security for this user"),
            Outcome::Unencoded(e) => error!(log, "snmp notification not sent";
                "code" => ErrorCode::Internal, "error" => e.as_str()),
        }
    }

    /// Counts and logs `n` tunnel or endpoint events lost to a full queue.
    fn lost(&self, n: u64) {
        self.metrics
            .notifications
            .with_label_values(&["unknown", "lost"])
            .inc_by(n);
        warn!(self.log, "events lost, their notifications not sent";
            "code" => ErrorCode::NotificationsLost, "lost" => n);
    }
}

/// The subject and end of the first certificate (the leaf) in the PEM file `path`.
///
/// # Errors
/// `E_TLS_CONFIG` when the file cannot be read or its certificate parsed.
pub fn read_cert(path: &std::path::Path) -> Result<CertFacts, Error> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs = crate::tunnel::tls::certificates(path)?;
    let der = certs
        .first()
        .expect("certificates() refuses a file without one");
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
        Error::Tls(crate::tunnel::tls::TlsError::File {
            path: path.to_path_buf(),
            message: format!("not an X.509 certificate: {e}"),
        })
    })?;
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::stats::test_session;
    use rasn_smi::v1::TimeTicks;
    use rasn_smi::v2::{ApplicationSyntax, ObjectSyntax, SimpleSyntax};

    fn arcs(oid: &ObjectIdentifier) -> Vec<u32> {
        oid.to_vec()
    }

    fn down() -> Notification {
        Notification::TunnelDown {
            index: 7,
            peer: "c1".into(),
            remote: "192.0.2.1:40112".into(),
            reason: "E_PEER_CLOSED",
        }
    }

    fn root(tail: &[u32]) -> Vec<u32> {
        let mut oid = ROOT.to_vec();
        oid.extend_from_slice(tail);
        oid
    }

    #[test]
    fn a_trap_decodes_to_uptime_trap_oid_then_the_objects_of_its_row() {
        let bytes = encode_v2c(b"public", trap_pdu(42, &down(), 1234)).expect("encodes");
        let msg: Message<Pdus> = rasn::ber::decode(&bytes).expect("decodes");
        assert_eq!(msg.version, Integer::from(1), "SNMPv2c");
        assert_eq!(msg.community.as_ref(), b"public");
        let Pdus::Trap(Trap(pdu)) = msg.data else {
            panic!("not an SNMPv2-Trap: {:?}", msg.data)
        };
        assert_eq!(
            (pdu.request_id, pdu.error_status, pdu.error_index),
            (42, 0, 0)
        );
        let names: Vec<Vec<u32>> = pdu
            .variable_bindings
            .iter()
            .map(|vb| arcs(&vb.name))
            .collect();
        assert_eq!(
            names,
            [
                SYS_UPTIME.to_vec(),
                SNMP_TRAP_OID.to_vec(),
                root(&[1, 4, 1, 2, 7]),
                root(&[1, 4, 1, 3, 7]),
                root(&[1, 9, 1, 0]),
            ]
        );
        let values: Vec<&VarBindValue> = pdu.variable_bindings.iter().map(|vb| &vb.value).collect();
        assert_eq!(
            values[0],
            &VarBindValue::Value(ObjectSyntax::ApplicationWide(ApplicationSyntax::Ticks(
                TimeTicks(1234)
            )))
        );
        let VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(trap_oid))) = values[1]
        else {
            panic!("snmpTrapOID.0 is not an OID: {:?}", values[1])
        };
        assert_eq!(arcs(trap_oid), root(&[0, 2]), "sssTunnelDown");
        let strings: Vec<&[u8]> = values[2..]
            .iter()
            .map(|v| match v {
                VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::String(s))) => s.as_ref(),
                other => panic!("not a string: {other:?}"),
            })
            .collect();
        assert_eq!(strings, [&b"c1"[..], b"192.0.2.1:40112", b"E_PEER_CLOSED"]);
    }

    #[test]
    fn each_notification_has_its_mib_number_and_objects() {
        let up = Notification::TunnelUp {
            index: 3,
            peer: "c1".into(),
            remote: "r".into(),
        };
        let cert = Notification::CertExpiring {
            subject: "CN=x".into(),
            days_left: -2,
        };
        assert_eq!(up.oid(), root(&[0, 1]));
        assert_eq!(down().oid(), root(&[0, 2]));
        assert_eq!(cert.oid(), root(&[0, 7]));
        assert_eq!(varbinds(&up, 0).len(), 2 + 2);
        assert_eq!(
            cert.objects(),
            [
                (root(&[1, 9, 2, 0]), Value::Octets(b"CN=x".to_vec())),
                (root(&[1, 9, 3, 0]), Value::Integer(-2)),
            ]
        );
        let far = Notification::CertExpiring {
            subject: String::new(),
            days_left: i64::MIN,
        };
        assert_eq!(
            far.objects()[1].1,
            Value::Integer(i64::from(i32::MIN)),
            "Integer32"
        );
    }

    /// Holds the notifications to `mibs/SSSONECTOR-MIB.txt`: each name's `::=` says
    /// the parent and arc the code uses.
    #[test]
    fn the_oids_are_the_mibs() {
        let mib = include_str!("../../../mibs/SSSONECTOR-MIB.txt");
        let assigned = |name: &str| -> String {
            let start = mib
                .find(&format!("\n{name} "))
                .unwrap_or_else(|| panic!("{name} not defined"));
            let rest = &mib[start..];
            let at = rest.find("::=").expect("an assignment");
            let end = rest[at..].find('}').expect("closed") + at;
            rest[at + 3..=end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (name, want) in [
            ("sssNotifications", "{ sssonectorMIB 0 }"),
            ("sssNotifyObjects", "{ sssObjects 9 }"),
            ("sssTunnelUp", "{ sssNotifications 1 }"),
            ("sssTunnelDown", "{ sssNotifications 2 }"),
            ("sssEndpointDown", "{ sssNotifications 3 }"),
            ("sssEndpointUp", "{ sssNotifications 4 }"),
            ("sssBreakerOpened", "{ sssNotifications 5 }"),
            ("sssBreakerClosed", "{ sssNotifications 6 }"),
            ("sssCertExpiring", "{ sssNotifications 7 }"),
            ("sssNotifyReason", "{ sssNotifyObjects 1 }"),
            ("sssNotifyCertSubject", "{ sssNotifyObjects 2 }"),
            ("sssNotifyCertDaysLeft", "{ sssNotifyObjects 3 }"),
            ("sssPeerName", "{ sssPeerEntry 2 }"),
            ("sssPeerRemote", "{ sssPeerEntry 3 }"),
            ("sssEndpointService", "{ sssEndpointEntry 2 }"),
            ("sssEndpointAddress", "{ sssEndpointEntry 3 }"),
            ("sssEndpointBreakerState", "{ sssEndpointEntry 5 }"),
        ] {
            assert_eq!(assigned(name), want, "{name}");
        }
        assert_eq!(NOTIFY_OBJECTS, [1, 9]);
        assert_eq!(
            (NOTIFY_REASON, NOTIFY_CERT_SUBJECT, NOTIFY_CERT_DAYS_LEFT),
            (1, 2, 3)
        );
    }

    /// The instances a tunnel notification names are the peer table's cells of that
    /// session, with the values the agent serves there.
    #[test]
    fn tunnel_notifications_name_the_sessions_peer_table_row() {
        let stats = Arc::new(Stats::default());
        let mut rx = stats.subscribe();
        let s = test_session(&stats, "c1");
        let event = rx.try_recv().expect("an event");
        let n = Notification::from_event(&event).expect("a row");
        let system = mib::System {
            descr: String::new(),
            name: String::new(),
            contact: String::new(),
            location: String::new(),
            uptime_ticks: 0,
            mode: 1,
        };
        let view = mib::View::build(&system, &Default::default(), stats.snapshot());
        for (oid, value) in n.objects() {
            assert_eq!(view.get(&oid), Ok(value), "{oid:?}");
        }
        stats.closed(&s, Some(ErrorCode::PeerTimeout));
        let down = Notification::from_event(&rx.try_recv().expect("an event")).expect("a row");
        assert_eq!(
            down.objects()[2].1,
            Value::Octets(b"E_PEER_TIMEOUT".to_vec())
        );
    }

    fn endpoint(change: EndpointChange) -> Notification {
        Notification::Endpoint {
            change,
            index: 4,
            service: "web".into(),
            address: "10.0.0.7:8080".into(),
        }
    }

    #[test]
    fn endpoint_and_breaker_traps_carry_service_address_and_breaker_state_of_the_row() {
        let entry = |column: u32| root(&[1, 5, 1, column, 4]);
        let cases = [
            (EndpointChange::Down, 3, "endpoint_down", None),
            (EndpointChange::Up, 4, "endpoint_up", None),
            (EndpointChange::BreakerOpened, 5, "breaker_opened", Some(2)),
            (EndpointChange::BreakerClosed, 6, "breaker_closed", Some(1)),
        ];
        for (change, number, label, state) in cases {
            let n = endpoint(change);
            assert_eq!((n.number(), n.label()), (number, label));
            let bytes = encode_v2c(b"public", trap_pdu(9, &n, 77)).expect("encodes");
            let msg: Message<Pdus> = rasn::ber::decode(&bytes).expect("decodes");
            let Pdus::Trap(Trap(pdu)) = msg.data else {
                panic!("not an SNMPv2-Trap: {:?}", msg.data)
            };
            let names: Vec<Vec<u32>> = pdu
                .variable_bindings
                .iter()
                .map(|vb| arcs(&vb.name))
                .collect();
            let mut want = vec![
                SYS_UPTIME.to_vec(),
                SNMP_TRAP_OID.to_vec(),
                entry(2),
                entry(3),
            ];
            want.extend(state.map(|_| entry(5)));
            assert_eq!(names, want, "{label}");
            let VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(trap_oid))) =
                &pdu.variable_bindings[1].value
            else {
                panic!("snmpTrapOID.0 is not an OID")
            };
            assert_eq!(arcs(trap_oid), root(&[0, number]), "{label}");
            let values: Vec<&VarBindValue> =
                pdu.variable_bindings.iter().map(|vb| &vb.value).collect();
            let string = |v: &VarBindValue| match v {
                VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::String(s))) => {
                    s.as_ref().to_vec()
                }
                other => panic!("not a string: {other:?}"),
            };
            assert_eq!(string(values[2]), b"web");
            assert_eq!(string(values[3]), b"10.0.0.7:8080");
            if let Some(state) = state {
                assert_eq!(
                    values[4],
                    &VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::Integer(
                        Integer::from(state)
                    ))),
                    "{label}"
                );
            }
        }
    }

    /// The instances an endpoint notification names are the endpoint table's cells
    /// of that endpoint, with the values the agent serves there.
    #[test]
    fn endpoint_notifications_name_the_endpoints_table_row() {
        use crate::balancer::registry::BreakerState;
        let stats = Arc::new(Stats::default());
        let _other = stats.endpoints.row("db", "10.0.0.1:5432", 1);
        let row = stats.endpoints.row("web", "10.0.0.7:8080", 1);
        let mut rx = stats.endpoints.subscribe();
        row.set_breaker(BreakerState::Open);
        row.announce(EndpointChange::BreakerOpened);
        let n = Notification::from_endpoint(&rx.try_recv().expect("an event"));
        assert_eq!(n, {
            let mut want = endpoint(EndpointChange::BreakerOpened);
            if let Notification::Endpoint { index, .. } = &mut want {
                *index = 2;
            }
            want
        });
        let system = mib::System {
            descr: String::new(),
            name: String::new(),
            contact: String::new(),
            location: String::new(),
            uptime_ticks: 0,
            mode: 1,
        };
        let view = mib::View::build(&system, &Default::default(), stats.snapshot());
        let objects = n.objects();
        assert_eq!(objects.len(), 3);
        for (oid, value) in objects {
            assert_eq!(view.get(&oid), Ok(value), "{oid:?}");
        }
    }

    #[test]
    fn a_certificate_is_reported_within_the_warning_at_most_daily() {
        let now = 1_800_000_000;
        let cert = CertFacts {
            subject: "CN=server".into(),
            not_after: now + 10 * DAY + 3600,
        };
        let mut watch = CertWatch::new(Duration::from_secs(5 * 86_400));
        assert_eq!(watch.check(&cert, now), None, "10 days left, 5 warned");
        watch.set_warning(Duration::from_secs(30 * 86_400));
        let days = |n: Option<Notification>| match n {
            Some(Notification::CertExpiring { days_left, .. }) => Some(days_left),
            _ => None,
        };
        assert_eq!(days(watch.check(&cert, now)), Some(10));
        assert_eq!(days(watch.check(&cert, now + 3600)), None, "an hour later");
        assert_eq!(days(watch.check(&cert, now + DAY - 1)), None);
        assert_eq!(days(watch.check(&cert, now + DAY)), Some(9), "a day later");
        let renewed = CertFacts {
            not_after: now + 20 * DAY,
            ..cert.clone()
        };
        assert_eq!(days(watch.check(&renewed, now + DAY + 1)), Some(18), "news");
        // Expired: negative days, an hour past the end is day -1.
        let mut watch = CertWatch::new(Duration::from_secs(86_400));
        assert_eq!(days(watch.check(&cert, cert.not_after + 3600)), Some(-1));
        assert_eq!(days(watch.check(&cert, cert.not_after - 1)), None, "sent");
        let mut watch = CertWatch::new(Duration::from_secs(86_400));
        assert_eq!(days(watch.check(&cert, cert.not_after - 1)), Some(0));
    }

    #[test]
    fn targets_take_their_community_or_the_agents_and_v3_their_user() {
        use sssonector_config::{DurationValue, Parsed, Secret, TrapTarget};
        let mut config = Config::default();
        let snmp = &mut config.monitor.snmp;
        snmp.community = Some(Secret::new("agent"));
        snmp.cert_warning = DurationValue::of(Duration::from_secs(2 * 86_400));
        let target = |address: &str, community: Option<&str>, user: Option<&str>| TrapTarget {
            address: Parsed::parse(address),
            community: community.map(Secret::new),
            user: user.map(str::to_string),
        };
        snmp.trap_targets = vec![
            target("127.0.0.1:162", None, None),
            target("nms.example:1162", Some("own"), None),
            target("[::1]:162", None, Some("ops")),
        ];
        let s = Settings::from_config(&config);
        let auth: Vec<&Auth> = s.targets.iter().map(|t| &t.auth).collect();
        assert!(auth[0] == &Auth::Community(b"agent".to_vec()));
        assert!(auth[1] == &Auth::Community(b"own".to_vec()));
        assert!(auth[2] == &Auth::User("ops".into()));
        assert_eq!(s.targets[1].address.host, "nms.example");
        assert_eq!(s.cert_warning, Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn our_certificate_gives_its_subject_and_end() {
        let certs =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/certs");
        let facts = read_cert(&certs.join("server.crt")).expect("the example certificate");
        assert!(facts.subject.contains("CN="), "{facts:?}");
        assert!(facts.not_after > 1_700_000_000, "{facts:?}");
        let err = read_cert(&certs.join("server.key")).expect_err("a key is no certificate");
        assert_eq!(err.code(), ErrorCode::TlsConfig);
    }
}
