//! The SNMP agent actor: SNMPv2c Get, GetNext and GetBulk over UDP, read-only, with
//! BER from rasn-snmp. Each datagram is answered from a [`View`] of this moment.
//!
//! A datagram that does not decode is counted (snmpInASNParseErrs) and dropped; a
//! wrong community is counted (snmpInBadCommunityNames) and gets no answer, as RFC
//! 3584 asks; a SET is answered `notWritable`. Responses stay within
//! [`MAX_RESPONSE`] bytes: GetBulk returns as many bindings as fit, Get and GetNext
//! answer `tooBig` when theirs do not.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v1::{Counter, Gauge, TimeTicks};
use rasn_smi::v2::{ApplicationSyntax, Counter64, ObjectSyntax, SimpleSyntax};
use rasn_snmp::v2::{Pdu, Pdus, Response, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use slog::{debug, error, info, Logger};
use tokio::net::UdpSocket;

use super::mib::{AgentCounts, Missing, System, Value, View};
use crate::drain::DrainToken;
use crate::metrics::Metrics;
use crate::tunnel::stats::Stats;

/// Largest response sent: a datagram that crosses an Ethernet path unfragmented.
pub const MAX_RESPONSE: usize = 1472;
/// Largest request read.
const MAX_REQUEST: usize = 65_535;
/// Bytes of a response around its bindings (message and PDU headers, community).
const OVERHEAD: usize = 64;
/// GetBulk repetitions served at most, whatever the request asks.
const MAX_REPETITIONS: u32 = 256;

/// What the agent answers with.
pub struct Agent {
    community: Vec<u8>,
    system: System,
    started: Instant,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    in_pkts: AtomicU32,
    bad_community: AtomicU32,
    parse_errors: AtomicU32,
}

impl Agent {
    /// An agent answering `community` (v2c, read-only).
    pub fn new(
        community: Vec<u8>,
        system: System,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            community,
            system,
            started: Instant::now(),
            stats,
            metrics,
            in_pkts: AtomicU32::new(0),
            bad_community: AtomicU32::new(0),
            parse_errors: AtomicU32::new(0),
        }
    }

    fn count(&self, pdu: &str, result: &str) {
        self.metrics
            .snmp
            .with_label_values(&["2c", pdu, result])
            .inc();
    }

    /// The response to one datagram, if it gets one.
    pub fn answer(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.in_pkts.fetch_add(1, Relaxed);
        let Ok(msg) = rasn::ber::decode::<Message<Pdus>>(datagram) else {
            self.parse_errors.fetch_add(1, Relaxed);
            self.count("unknown", "parse_error");
            return None;
        };
        if msg.version != Integer::from(1) {
            self.parse_errors.fetch_add(1, Relaxed);
            self.count("unknown", "bad_version");
            return None;
        }
        if msg.community.as_ref() != self.community.as_slice() {
            self.bad_community.fetch_add(1, Relaxed);
            self.count("unknown", "bad_community");
            return None;
        }
        let view = self.view();
        let (name, pdu) = match msg.data {
            Pdus::GetRequest(r) => ("get", self.get(&view, r.0)),
            Pdus::GetNextRequest(r) => ("getnext", self.get_next(&view, r.0)),
            Pdus::GetBulkRequest(r) => ("getbulk", self.get_bulk(&view, r.0)),
            Pdus::SetRequest(r) => {
                let mut p = r.0;
                p.error_status = Pdu::ERROR_STATUS_NOT_WRITABLE;
                p.error_index = 1;
                ("set", p)
            }
            _ => {
                self.count("other", "ignored");
                return None;
            }
        };
        let result = match pdu.error_status {
            Pdu::ERROR_STATUS_NO_ERROR => "ok",
            Pdu::ERROR_STATUS_TOO_BIG => "too_big",
            _ => "not_writable",
        };
        self.count(name, result);
        let reply = Message {
            version: msg.version,
            community: msg.community,
            data: Pdus::Response(Response(pdu)),
        };
        rasn::ber::encode(&reply).ok()
    }

    fn view(&self) -> View {
        let mut system = self.system.clone();
        let ticks = self.started.elapsed().as_millis() / 10;
        system.uptime_ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        let counts = AgentCounts {
            in_pkts: self.in_pkts.load(Relaxed),
            bad_community: self.bad_community.load(Relaxed),
            parse_errors: self.parse_errors.load(Relaxed),
        };
        View::build(&system, counts, &self.stats.snapshot())
    }

    fn get(&self, view: &View, mut pdu: Pdu) -> Pdu {
        for vb in &mut pdu.variable_bindings {
            vb.value = match view.get(&arcs(&vb.name)) {
                Ok(v) => VarBindValue::Value(syntax(v)),
                Err(Missing::Instance) => VarBindValue::NoSuchInstance,
                Err(Missing::Object) => VarBindValue::NoSuchObject,
            };
        }
        fit_or_too_big(pdu)
    }

    fn get_next(&self, view: &View, mut pdu: Pdu) -> Pdu {
        for vb in &mut pdu.variable_bindings {
            *vb = next_binding(view, &vb.name);
        }
        fit_or_too_big(pdu)
    }

    fn get_bulk(&self, view: &View, bulk: rasn_snmp::v2::BulkPdu) -> Pdu {
        let names: Vec<ObjectIdentifier> = bulk
            .variable_bindings
            .iter()
            .map(|vb| vb.name.clone())
            .collect();
        let non_rep = (bulk.non_repeaters as usize).min(names.len());
        let reps = bulk.max_repetitions.min(MAX_REPETITIONS);
        let mut out = Vec::new();
        let mut budget = MAX_RESPONSE - OVERHEAD;
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

/// The binding after `name`, or `name` with endOfMibView.
fn next_binding(view: &View, name: &ObjectIdentifier) -> VarBind {
    match view.next(&arcs(name)) {
        Some((oid, v)) => VarBind {
            name: ObjectIdentifier::new_unchecked(oid.clone().into()),
            value: VarBindValue::Value(syntax(v)),
        },
        None => VarBind {
            name: name.clone(),
            value: VarBindValue::EndOfMibView,
        },
    }
}

/// `pdu` as it is when its encoding fits [`MAX_RESPONSE`]; otherwise tooBig with no
/// bindings (RFC 3416 §4.2.1).
fn fit_or_too_big(pdu: Pdu) -> Pdu {
    let size = rasn::ber::encode(&pdu).map_or(usize::MAX, |b| b.len());
    if size + OVERHEAD <= MAX_RESPONSE {
        return pdu;
    }
    Pdu {
        error_status: Pdu::ERROR_STATUS_TOO_BIG,
        error_index: 0,
        variable_bindings: Vec::new(),
        ..pdu
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
        agent: Agent,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        Self {
            socket: Some(socket),
            agent: Arc::new(agent),
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
