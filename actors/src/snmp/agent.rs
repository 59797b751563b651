//! The SNMP agent actor: SNMPv2c and SNMPv3 (USM authPriv) Get, GetNext and GetBulk
//! over UDP, read-only, with BER from rasn-snmp. Each datagram is answered from a
//! [`View`] of this moment.
//!
//! A datagram that does not decode is counted (snmpInASNParseErrs) and dropped; a
//! wrong community is counted (snmpInBadCommunityNames) and gets no answer, as RFC
//! 3584 asks; a v3 message USM refuses is counted in usmStats and answered with a
//! Report when the manager asked for one ([`super::v3`]); a SET is answered
//! `notWritable`. Responses stay within [`MAX_RESPONSE`] bytes and the manager's
//! msgMaxSize: GetBulk returns as many bindings as fit, Get and GetNext answer `tooBig`
//! when theirs do not.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use arc_swap::{ArcSwap, ArcSwapOption};
use rasn::prelude::{AsnType, Decode, Decoder};
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v1::{Counter, Gauge, TimeTicks};
use rasn_smi::v2::{ApplicationSyntax, Counter64, ObjectSyntax, SimpleSyntax};
use rasn_snmp::v2::{Pdu, Pdus, Response, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use slog::{debug, error, info, Logger};
use tokio::net::UdpSocket;

use super::mib::{self, AgentCounts, Missing, System, Value, View};
use super::v3::{self, Rejected, Request, Usm};
use crate::drain::DrainToken;
use crate::metrics::Metrics;
use crate::tunnel::stats::Stats;

/// Largest response sent: a datagram that crosses an Ethernet path unfragmented.
pub const MAX_RESPONSE: usize = 1472;
/// Largest request read.
const MAX_REQUEST: usize = 65_535;
/// Bytes of a v2c response around its bindings (message and PDU headers), beside the
/// community.
const OVERHEAD_V2C: usize = 64;
/// Bytes of a v3 response around its bindings (header, USM parameters with a 48-octet
/// MAC and an engine ID of up to 32, scoped PDU header), beside the user name.
const OVERHEAD_V3: usize = 224;
/// GetBulk repetitions served at most, whatever the request asks.
const MAX_REPETITIONS: u32 = 256;

/// What the agent answers with.
pub struct Agent {
    /// The v2c community; `None` turns v2c off. Swapped on reload.
    community: ArcSwapOption<Vec<u8>>,
    usm: Usm,
    /// sysContact and sysLocation change on reload.
    system: ArcSwap<System>,
    started: Instant,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    in_pkts: AtomicU32,
    bad_community: AtomicU32,
    parse_errors: AtomicU32,
    unknown_contexts: AtomicU32,
}

impl Agent {
    /// An agent answering v2c for `community` and v3 for `usm`'s users; sysUpTime
    /// counts from `started` (the daemon's start, as in its notifications).
    pub fn new(
        community: Option<Vec<u8>>,
        usm: Usm,
        system: System,
        started: Instant,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            community: ArcSwapOption::from(community.map(Arc::new)),
            usm,
            system: ArcSwap::from_pointee(system),
            started,
            stats,
            metrics,
            in_pkts: AtomicU32::new(0),
            bad_community: AtomicU32::new(0),
            parse_errors: AtomicU32::new(0),
            unknown_contexts: AtomicU32::new(0),
        }
    }

    /// Takes what a reload may change (community, users, sysContact, sysLocation);
    /// the next datagram sees it.
    pub fn reconfigure(&self, snmp: &sssonector_config::Snmp) {
        self.community.store(community(snmp).map(Arc::new));
        self.usm.set_users(&snmp.users);
        let mut system = System::clone(&self.system.load());
        system.contact.clone_from(&snmp.contact);
        system.location.clone_from(&snmp.location);
        self.system.store(Arc::new(system));
    }

    /// The USM engine (for notifications).
    pub fn usm(&self) -> &Usm {
        &self.usm
    }

    /// An agent whose `sssPeerTable` has `rows` made-up sessions, for the benchmarks
    /// (`examples/snmp_table.rs` behind `.ci/bench-snmp.sh`, and `benches/snmp.rs`):
    /// v2c community `public`, SNMPv3 user `bench` (SHA-256 `bench-auth-pw`, AES
    /// `bench-priv-pw`). The agent, its view and BER are the daemon's own; only the
    /// sessions are synthetic, since a thousand real tunnels would need a thousand
    /// TUN-owning peers. Not part of the API.
    #[doc(hidden)]
    pub fn synthetic(rows: u32) -> Self {
        use std::net::IpAddr;

        use sssonector_config::{AuthProtocol, Mode, PrivProtocol, Secret, SnmpUser};

        use crate::snmp::usm::Engine;
        use crate::tunnel::stats::{Counters, Session};

        let stats = Arc::new(Stats::default());
        for i in 0..rows {
            let counters = Arc::new(Counters::default());
            counters.bytes_in.store(u64::from(i) * 1_000_003, Relaxed);
            counters.packets_in.store(u64::from(i) * 977, Relaxed);
            let [_, _, hi, lo] = i.to_be_bytes();
            stats.opened(Session::starting(
                format!("client-{i:04}"),
                format!("192.0.2.{}:{}", i % 250 + 1, 40_000 + i % 20_000),
                IpAddr::from([10, 8, hi, lo]),
                None,
                counters,
            ));
        }
        let metrics = Arc::new(Metrics::new(stats.clone(), Mode::Server));
        let users = [SnmpUser {
            name: "bench".into(),
            auth_protocol: AuthProtocol::Sha256,
            auth_password: Secret::new("bench-auth-pw"),
            priv_protocol: PrivProtocol::Aes,
            priv_password: Secret::new("bench-priv-pw"),
        }];
        let system = System {
            descr: "SSSonector SNMP table benchmark".into(),
            name: "bench".into(),
            contact: String::new(),
            location: String::new(),
            uptime_ticks: 0,
            mode: 1,
        };
        Self::new(
            Some(b"public".to_vec()),
            Usm::new(Engine::ephemeral(), &users),
            system,
            Instant::now(),
            stats,
            metrics,
        )
    }

    fn count(&self, version: &str, pdu: &str, result: &str) {
        self.metrics
            .snmp
            .with_label_values(&[version, pdu, result])
            .inc();
    }

    /// The response to one datagram, if it gets one.
    pub fn answer(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.in_pkts.fetch_add(1, Relaxed);
        if let Ok(msg) = rasn::ber::decode::<Message<Pdus>>(datagram) {
            return self.answer_v2c(msg);
        }
        if let Ok(msg) = rasn::ber::decode::<Message<SignedBulk>>(datagram) {
            return self.answer_v2c(Message {
                version: msg.version,
                community: msg.community,
                data: msg.data.clamped(),
            });
        }
        if let Ok(msg) = rasn::ber::decode::<rasn_snmp::v3::Message>(datagram) {
            return self.answer_v3(datagram, msg);
        }
        self.parse_errors.fetch_add(1, Relaxed);
        self.count("unknown", "unknown", "parse_error");
        None
    }

    fn answer_v2c(&self, msg: Message<Pdus>) -> Option<Vec<u8>> {
        if msg.version != Integer::from(1) {
            self.parse_errors.fetch_add(1, Relaxed);
            self.count("unknown", "unknown", "bad_version");
            return None;
        }
        let community = self.community.load();
        if community.as_deref().map(Vec::as_slice) != Some(msg.community.as_ref()) {
            self.bad_community.fetch_add(1, Relaxed);
            self.count("2c", "unknown", "bad_community");
            return None;
        }
        let budget = MAX_RESPONSE.saturating_sub(OVERHEAD_V2C + msg.community.len());
        let Some((name, pdu)) = self.operate(msg.data, budget) else {
            self.count("2c", "other", "ignored");
            return None;
        };
        self.count("2c", name, result(&pdu));
        let reply = Message {
            version: msg.version,
            community: msg.community,
            data: Pdus::Response(Response(pdu)),
        };
        rasn::ber::encode(&reply).ok()
    }

    fn answer_v3(&self, datagram: &[u8], msg: rasn_snmp::v3::Message) -> Option<Vec<u8>> {
        let request = match self.usm.open(datagram, msg) {
            Ok(r) => r,
            Err(Rejected::Malformed(why)) => {
                self.parse_errors.fetch_add(1, Relaxed);
                self.count("3", "unknown", why);
                return None;
            }
            Err(Rejected::Refused { why, report }) => {
                self.count("3", "unknown", why.as_str());
                return report;
            }
        };
        if !self.our_context(&request) {
            let n = self.unknown_contexts.fetch_add(1, Relaxed) + 1;
            self.count("3", "unknown", "unknown_context");
            let id = v3::request_id(&request.scoped.data);
            let report = v3::counter_report(id, mib::UNKNOWN_CONTEXTS, n);
            return self.usm.seal(&request, report);
        }
        let room = request.max_size.min(MAX_RESPONSE);
        let budget = room.saturating_sub(OVERHEAD_V3 + request.user.len());
        let Some((name, pdu)) = self.operate(request.scoped.data.clone(), budget) else {
            self.count("3", "other", "ignored");
            return None;
        };
        self.count("3", name, result(&pdu));
        self.usm.seal(&request, Pdus::Response(Response(pdu)))
    }

    /// Whether a v3 request names the one context we serve: the default (empty) name
    /// of our engine.
    fn our_context(&self, request: &Request) -> bool {
        let engine = request.scoped.engine_id.as_ref();
        request.scoped.name.is_empty() && (engine.is_empty() || engine == self.usm.engine().id())
    }

    /// Carries out a request PDU: its name for counting and the response PDU; `None`
    /// for PDUs an agent does not answer (responses, traps, reports).
    fn operate(&self, pdus: Pdus, budget: usize) -> Option<(&'static str, Pdu)> {
        let view = self.view();
        Some(match pdus {
            Pdus::GetRequest(r) => ("get", self.get(&view, r.0, budget)),
            Pdus::GetNextRequest(r) => ("getnext", self.get_next(&view, r.0, budget)),
            Pdus::GetBulkRequest(r) => ("getbulk", self.get_bulk(&view, r.0, budget)),
            Pdus::SetRequest(r) => {
                let mut p = r.0;
                p.error_status = Pdu::ERROR_STATUS_NOT_WRITABLE;
                p.error_index = 1;
                ("set", p)
            }
            _ => return None,
        })
    }

    fn view(&self) -> View {
        let mut system = System::clone(&self.system.load());
        let ticks = self.started.elapsed().as_millis() / 10;
        system.uptime_ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        let engine = self.usm.engine();
        let counts = AgentCounts {
            in_pkts: self.in_pkts.load(Relaxed),
            bad_community: self.bad_community.load(Relaxed),
            parse_errors: self.parse_errors.load(Relaxed),
            engine_id: engine.id().to_vec(),
            engine_boots: engine.boots(),
            engine_time: engine.time(),
            max_message: v3::MAX_MESSAGE,
            unknown_contexts: self.unknown_contexts.load(Relaxed),
            usm: self.usm.refused(),
        };
        View::build(&system, &counts, self.stats.snapshot())
            .with_limiters(&self.stats.limits.rows())
            .with_certificates(
                self.metrics.cert_days_left("own"),
                self.metrics.cert_days_left("ca"),
            )
    }

    fn get(&self, view: &View, mut pdu: Pdu, budget: usize) -> Pdu {
        clear_error(&mut pdu);
        for vb in &mut pdu.variable_bindings {
            vb.value = match view.get(&arcs(&vb.name)) {
                Ok(v) => VarBindValue::Value(syntax(&v)),
                Err(Missing::Instance) => VarBindValue::NoSuchInstance,
                Err(Missing::Object) => VarBindValue::NoSuchObject,
            };
        }
        fit_or_too_big(pdu, budget)
    }

    fn get_next(&self, view: &View, mut pdu: Pdu, budget: usize) -> Pdu {
        clear_error(&mut pdu);
        for vb in &mut pdu.variable_bindings {
            *vb = next_binding(view, &vb.name);
        }
        fit_or_too_big(pdu, budget)
    }

    fn get_bulk(&self, view: &View, bulk: rasn_snmp::v2::BulkPdu, mut budget: usize) -> Pdu {
        let names: Vec<ObjectIdentifier> = bulk
            .variable_bindings
            .iter()
            .map(|vb| vb.name.clone())
            .collect();
        let non_rep = (bulk.non_repeaters as usize).min(names.len());
        let reps = bulk.max_repetitions.min(MAX_REPETITIONS);
        let mut out = Vec::new();
        let mut push = |vb: VarBind, out: &mut Vec<VarBind>| -> bool {
            let size = rasn::ber::encode(&vb).map_or(usize::MAX, |b| b.len());
            if size > budget {
                return false;
            }
            budget -= size;
            out.push(vb);
            true
        };
        let mut full = false;
        for name in &names[..non_rep] {
            if !push(next_binding(view, name), &mut out) {
                full = true;
                break;
            }
        }
        let mut cursors: Vec<ObjectIdentifier> = names[non_rep..].to_vec();
        'rows: for _ in 0..reps {
            if full || cursors.is_empty() {
                break;
            }
            let mut all_ended = true;
            for cursor in &mut cursors {
                let vb = next_binding(view, cursor);
                all_ended &= vb.value == VarBindValue::EndOfMibView;
                *cursor = vb.name.clone();
                if !push(vb, &mut out) {
                    break 'rows;
                }
            }
            if all_ended {
                break;
            }
        }
        let mut pdu = Pdu {
            request_id: bulk.request_id,
            error_status: Pdu::ERROR_STATUS_NO_ERROR,
            error_index: 0,
            variable_bindings: out,
        };
        if pdu.variable_bindings.is_empty() && !names.is_empty() {
            pdu.error_status = Pdu::ERROR_STATUS_TOO_BIG;
        }
        pdu
    }
}

/// SNMPv3 notifications are sealed with the agent's engine and users.
impl super::trap::SealV3 for Agent {
    fn seal_trap(&self, user: &str, pdu: Pdus) -> Option<Vec<u8>> {
        self.usm.seal_trap(user, pdu)
    }
}

/// A request's error-status and error-index mean nothing (RFC 3416 §3): the
/// response's are the agent's own, noError/0 unless it reports an error.
fn clear_error(pdu: &mut Pdu) {
    pdu.error_status = Pdu::ERROR_STATUS_NO_ERROR;
    pdu.error_index = 0;
}

/// A GetBulk request as sent, with signed counts: rasn-snmp's `BulkPdu` has them
/// unsigned and refuses a negative one, which RFC 3416 §4.2.3 says is taken as zero.
#[derive(AsnType, Decode, Debug)]
#[rasn(tag(5))]
struct SignedBulk {
    request_id: i32,
    non_repeaters: i32,
    max_repetitions: i32,
    variable_bindings: Vec<VarBind>,
}

impl SignedBulk {
    /// The request with negative counts as zero.
    fn clamped(self) -> Pdus {
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        Pdus::GetBulkRequest(rasn_snmp::v2::GetBulkRequest(rasn_snmp::v2::BulkPdu {
            request_id: self.request_id,
            non_repeaters: count(self.non_repeaters),
            max_repetitions: count(self.max_repetitions),
            variable_bindings: self.variable_bindings,
        }))
    }
}

/// The binding after `name`, or `name` with endOfMibView.
fn next_binding(view: &View, name: &ObjectIdentifier) -> VarBind {
    match view.next(&arcs(name)) {
        Some((oid, v)) => VarBind {
            name: ObjectIdentifier::new_unchecked(oid.into()),
            value: VarBindValue::Value(syntax(&v)),
        },
        None => VarBind {
            name: name.clone(),
            value: VarBindValue::EndOfMibView,
        },
    }
}

/// `pdu` as it is when its encoding fits `budget` bytes; otherwise tooBig with no
/// bindings (RFC 3416 §4.2.1).
fn fit_or_too_big(pdu: Pdu, budget: usize) -> Pdu {
    let size = rasn::ber::encode(&pdu).map_or(usize::MAX, |b| b.len());
    if size <= budget {
        return pdu;
    }
    Pdu {
        error_status: Pdu::ERROR_STATUS_TOO_BIG,
        error_index: 0,
        variable_bindings: Vec::new(),
        ..pdu
    }
}

/// The v2c community of `snmp`; none (v2c off) when unset or empty.
pub fn community(snmp: &sssonector_config::Snmp) -> Option<Vec<u8>> {
    snmp.community
        .as_ref()
        .map(|c| c.expose().as_bytes().to_vec())
        .filter(|c| !c.is_empty())
}

/// The label a response PDU is counted under.
fn result(pdu: &Pdu) -> &'static str {
    match pdu.error_status {
        Pdu::ERROR_STATUS_NO_ERROR => "ok",
        Pdu::ERROR_STATUS_TOO_BIG => "too_big",
        _ => "not_writable",
    }
}

fn arcs(oid: &ObjectIdentifier) -> Vec<u32> {
    oid.to_vec()
}

/// `v` as the BER value rasn encodes: one mapping for responses and notifications.
pub(crate) fn syntax(v: &Value) -> ObjectSyntax {
    match v {
        Value::Integer(n) => ObjectSyntax::Simple(SimpleSyntax::Integer(Integer::from(*n))),
        Value::Octets(b) => {
            ObjectSyntax::Simple(SimpleSyntax::String(OctetString::from(b.clone())))
        }
        Value::Oid(o) => ObjectSyntax::Simple(SimpleSyntax::ObjectId(
            ObjectIdentifier::new_unchecked(o.clone().into()),
        )),
        Value::Counter32(n) => {
            ObjectSyntax::ApplicationWide(ApplicationSyntax::Counter(Counter(*n)))
        }
        Value::Gauge32(n) => ObjectSyntax::ApplicationWide(ApplicationSyntax::Unsigned(Gauge(*n))),
        Value::Ticks(n) => ObjectSyntax::ApplicationWide(ApplicationSyntax::Ticks(TimeTicks(*n))),
        Value::Counter64(n) => {
            ObjectSyntax::ApplicationWide(ApplicationSyntax::BigCounter(Counter64(*n)))
        }
    }
}

/// Serves the agent on a bound UDP socket.
pub struct SnmpAgent {
    socket: Option<std::net::UdpSocket>,
    agent: Arc<Agent>,
    log: Logger,
    serving: Option<actix_rt::task::JoinHandle<()>>,
    _drain: Option<DrainToken>,
}

impl SnmpAgent {
    /// An actor serving `agent` on `socket` (bound, non-blocking).
    pub fn new(
        socket: std::net::UdpSocket,
        agent: Arc<Agent>,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        Self {
            socket: Some(socket),
            agent,
            log,
            serving: None,
            _drain: drain,
        }
    }
}

impl Actor for SnmpAgent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(std_socket) = self.socket.take() else {
            return;
        };
        let socket = match UdpSocket::from_std(std_socket) {
            Ok(s) => s,
            Err(e) => {
                let err = crate::error::Error::io("snmp socket", e);
                error!(self.log, "cannot serve snmp"; "code" => err.code(), "error" => %err);
                ctx.stop();
                return;
            }
        };
        if let Ok(addr) = socket.local_addr() {
            info!(self.log, "snmp agent listening"; "listen" => %addr);
        }
        let (agent, log) = (self.agent.clone(), self.log.clone());
        self.serving = Some(actix_rt::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                match agent.answer(&buf[..n]) {
                    Some(reply) => {
                        let _ = socket.send_to(&reply, from).await;
                    }
                    None => {
                        debug!(log, "snmp datagram not answered"; "from" => %from, "bytes" => n)
                    }
                }
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(task) = self.serving.take() {
            task.abort();
        }
    }
}

/// Nothing to rebuild: the serving task (not a context future, so the restart does
/// not cancel it) keeps answering from the shared [`Agent`].
impl Supervised for SnmpAgent {}

crate::supervise::panic_on_fault!(SnmpAgent);

#[cfg(test)]
mod tests {
    use rasn_snmp::v2::GetRequest;
    use sssonector_config::{AuthProtocol, Mode, PrivProtocol, Secret, SnmpUser};

    use super::*;
    use crate::snmp::usm::Engine;

    fn agent() -> Agent {
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new(stats.clone(), Mode::Server));
        let user = SnmpUser {
            name: "nms".into(),
            auth_protocol: AuthProtocol::Sha256,
            auth_password: Secret::new("auth-pass-1"),
            priv_protocol: PrivProtocol::Aes,
            priv_password: Secret::new("priv-pass-1"),
        };
        let system = System {
            descr: "SSSonector".into(),
            name: "host".into(),
            contact: String::new(),
            location: String::new(),
            uptime_ticks: 0,
            mode: 1,
        };
        let usm = Usm::new(Engine::ephemeral(), &[user]);
        Agent::new(
            Some(b"public".to_vec()),
            usm,
            system,
            Instant::now(),
            stats,
            metrics,
        )
    }

    fn get_sysdescr() -> Pdus {
        Pdus::GetRequest(GetRequest(Pdu {
            request_id: 1,
            error_status: 0,
            error_index: 0,
            variable_bindings: vec![VarBind {
                name: ObjectIdentifier::new_unchecked(vec![1, 3, 6, 1, 2, 1, 1, 1, 0].into()),
                value: VarBindValue::Unspecified,
            }],
        }))
    }

    fn v2c_get() -> Vec<u8> {
        rasn::ber::encode(&Message {
            version: Integer::from(1),
            community: OctetString::from_static(b"public"),
            data: get_sysdescr(),
        })
        .expect("encodes")
    }

    /// Every truncation and single-bit flip of a valid authPriv v3 message, and of a
    /// v2c request, is refused or answered without a panic, and a valid request is
    /// answered afterwards.
    #[test]
    fn truncated_and_flipped_messages_never_disturb_the_agent() {
        let agent = agent();
        let v3 = agent
            .usm()
            .seal_trap("nms", get_sysdescr())
            .expect("sealed");
        for valid in [v3, v2c_get()] {
            for n in 0..valid.len() {
                let _ = agent.answer(&valid[..n]);
            }
            for i in 0..valid.len() {
                for bit in 0..8 {
                    let mut p = valid.clone();
                    p[i] ^= 1 << bit;
                    let _ = agent.answer(&p);
                }
            }
        }
        let reply = agent.answer(&v2c_get()).expect("still answers");
        let msg = rasn::ber::decode::<Message<Pdus>>(&reply).expect("a v2c message");
        assert!(matches!(msg.data, Pdus::Response(_)));
        assert!(agent.parse_errors.load(Relaxed) > 0);
    }

    #[test]
    fn without_a_community_v2c_is_off() {
        let agent = agent();
        agent.reconfigure(&sssonector_config::Snmp::default());
        assert!(agent.answer(&v2c_get()).is_none());
        assert_eq!(agent.bad_community.load(Relaxed), 1);
    }
}
