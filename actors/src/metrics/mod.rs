//! Prometheus metrics: one registry that `/metrics`, `ctl metrics` and (through the
//! same snapshot of the tunnel's counters) the SNMP agent all read.
//!
//! Nothing is counted twice. The tunnel's numbers live in [`Stats`] (atomics the data
//! path adds to anyway) and are read at scrape time by `TunnelCollector`; only what
//! has no other home is counted here: control commands, SNMP requests and SNMP
//! notifications. Labels take
//! values from fixed sets (directions, drop reasons, error codes, command names), never
//! from peers or packets. Process figures (CPU, RSS, open fds) come from the
//! prometheus crate's process collector.

pub mod http;

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use serde_json::{json, Map, Value};
use sssonector_config::Mode;

use crate::tunnel::stats::{DropReason, Stats};

/// The text format version `/metrics` serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    /// Control commands by command name and result (`ok` or the error code).
    pub control: IntCounterVec,
    /// SNMP requests by version, PDU type and result (`ok` or the error status).
    pub snmp: IntCounterVec,
    /// SNMP notifications by notification (`tunnel_up`, ...) and result (`sent` or
    /// why not), one per target and notification.
    pub notifications: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The registry of a daemon in `mode` whose tunnel counts into `stats`.
    ///
    /// # Panics
    /// Only on a metric defined twice or with an invalid name: a bug the unit tests
    /// catch.
    pub fn new(stats: Arc<Stats>, mode: Mode) -> Self {
        let registry = Registry::new();
        let control = IntCounterVec::new(
            Opts::new(
                "sssonector_control_commands_total",
                "Control socket commands, by command and result (ok or error code).",
            ),
            &["command", "result"],
        )
        .expect("valid metric");
        let snmp = IntCounterVec::new(
            Opts::new(
                "sssonector_snmp_requests_total",
                "SNMP requests, by version, PDU type and result (ok or error).",
            ),
            &["version", "pdu", "result"],
        )
        .expect("valid metric");
        let notifications = IntCounterVec::new(
            Opts::new(
                "sssonector_snmp_notifications_total",
                "SNMP notifications, by notification and result (sent or why not), per target.",
            ),
            &["notification", "result"],
        )
        .expect("valid metric");
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(TunnelCollector::new(stats, mode)),
            Box::new(control.clone()),
            Box::new(snmp.clone()),
            Box::new(notifications.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            control,
            snmp,
            notifications,
        }
    }

    /// Every metric now.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// The text exposition format (0.0.4) of every metric now.
    pub fn text(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.gather(), &mut out)
            .expect("encoding into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The `ctl metrics` reply: the same families as `/metrics`, as JSON.
    pub fn to_json(&self) -> Value {
        let families: Map<String, Value> = self
            .gather()
            .iter()
            .map(|f| (f.name().to_string(), family_json(f)))
            .collect();
        Value::Object(families)
    }
}

fn family_json(f: &MetricFamily) -> Value {
    let kind = match f.get_field_type() {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    };
    let samples: Vec<Value> = f
        .get_metric()
        .iter()
        .map(|m| {
            let labels: Map<String, Value> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), json!(l.value())))
                .collect();
            let mut sample = json!({ "labels": labels });
            match f.get_field_type() {
                MetricType::COUNTER => sample["value"] = json!(m.get_counter().get_value()),
                MetricType::GAUGE => sample["value"] = json!(m.get_gauge().get_value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let buckets: Vec<Value> = h
                        .get_bucket()
                        .iter()
                        .map(|b| json!([b.upper_bound(), b.cumulative_count()]))
                        .collect();
                    sample["count"] = json!(h.get_sample_count());
                    sample["sum"] = json!(h.get_sample_sum());
                    sample["buckets"] = json!(buckets);
                }
                _ => {}
            }
            sample
        })
        .collect();
    json!({ "type": kind, "help": f.help(), "samples": samples })
}

/// One family [`TunnelCollector`] reports.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every family the tunnel collector reports: descriptions and samples both come
/// from this table.
const SPECS: &[Spec] = &[
    spec(
        "sssonector_build_info",
        "Always 1; the labels say which build and mode run.",
        GAUGE,
        &["version", "mode"],
    ),
    spec(
        "sssonector_uptime_seconds",
        "Seconds since the daemon started.",
        GAUGE,
        &[],
    ),
    spec(
        "sssonector_tunnel_bytes_total",
        "Bytes of IP packets through the tunnel, by direction (in: from peers).",
        COUNTER,
        &["direction"],
    ),
    spec(
        "sssonector_tunnel_packets_total",
        "IP packets through the tunnel, by direction; a superpacket counts as its segments.",
        COUNTER,
        &["direction"],
    ),
    spec(
        "sssonector_tunnel_wire_bytes_total",
        "Bytes of frames inside TLS, after compression, by direction.",
        COUNTER,
        &["direction"],
    ),
    spec(
        "sssonector_tunnel_drops_total",
        "Packets dropped, by reason.",
        COUNTER,
        &["reason"],
    ),
    spec(
        "sssonector_tunnel_handshakes_total",
        "Tunnel handshakes, by result: accepted, or the error code of the failure.",
        COUNTER,
        &["result"],
    ),
    spec(
        "sssonector_tunnel_session_ends_total",
        "Sessions ended by the peer or an error, by code.",
        COUNTER,
        &["code"],
    ),
    spec(
        "sssonector_tunnel_sessions_active",
        "Live tunnel sessions.",
        GAUGE,
        &[],
    ),
    spec(
        "sssonector_tunnel_sessions_peak",
        "Most live tunnel sessions at once since start.",
        GAUGE,
        &[],
    ),
    spec(
        "sssonector_tunnel_sessions_total",
        "Tunnel sessions started since start.",
        COUNTER,
        &[],
    ),
    spec(
        "sssonector_tunnel_reconnects_total",
        "Client: sessions established after the first.",
        COUNTER,
        &[],
    ),
    spec(
        "sssonector_tunnel_session_duration_seconds",
        "Durations of closed tunnel sessions.",
        HISTOGRAM,
        &[],
    ),
];

/// Reads the tunnel's [`Stats`] at scrape time.
struct TunnelCollector {
    stats: Arc<Stats>,
    mode: Mode,
    started: Instant,
    descs: Vec<Desc>,
}

impl TunnelCollector {
    fn new(stats: Arc<Stats>, mode: Mode) -> Self {
        let descs = SPECS
            .iter()
            .map(|s| {
                let labels = s.labels.iter().map(|l| (*l).to_string()).collect();
                Desc::new(s.name.into(), s.help.into(), labels, Default::default())
                    .expect("valid metric description")
            })
            .collect();
        Self {
            stats,
            mode,
            started: Instant::now(),
            descs,
        }
    }
}

/// A sample with `labels` (in the order of its spec's label names).
fn sample(labels: &[&str], value: f64, spec_labels: &[&str], kind: MetricType) -> proto::Metric {
    let pairs = spec_labels
        .iter()
        .zip(labels)
        .map(|(name, value)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*name).to_string());
            p.set_value((*value).to_string());
            p
        })
        .collect();
    let mut m = proto::Metric::from_label(pairs);
    match kind {
        COUNTER => {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        _ => {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    m
}

/// Builds the families in [`SPECS`] order.
struct Families(Vec<MetricFamily>);

impl Families {
    fn new() -> Self {
        Self(
            SPECS
                .iter()
                .map(|s| {
                    let mut f = MetricFamily::default();
                    f.set_name(s.name.into());
                    f.set_help(s.help.into());
                    f.set_field_type(s.kind);
                    f
                })
                .collect(),
        )
    }

    fn at(&mut self, name: &str) -> (&Spec, &mut MetricFamily) {
        let i = SPECS
            .iter()
            .position(|s| s.name == name)
            .expect("every family has a spec");
        (&SPECS[i], &mut self.0[i])
    }

    fn add(&mut self, name: &str, labels: &[&str], value: f64) {
        let (spec, family) = self.at(name);
        let m = sample(labels, value, spec.labels, spec.kind);
        family.mut_metric().push(m);
    }
}

impl Collector for TunnelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.stats.snapshot();
        let t = &s.totals;
        let mut f = Families::new();
        let mode = match self.mode {
            Mode::Server => "server",
            Mode::Client => "client",
        };
        f.add(
            "sssonector_build_info",
            &[env!("CARGO_PKG_VERSION"), mode],
            1.0,
        );
        let up = self.started.elapsed().as_secs_f64();
        f.add("sssonector_uptime_seconds", &[], up);
        for (name, inn, out) in [
            ("sssonector_tunnel_bytes_total", t.bytes_in, t.bytes_out),
            (
                "sssonector_tunnel_packets_total",
                t.packets_in,
                t.packets_out,
            ),
            (
                "sssonector_tunnel_wire_bytes_total",
                t.wire_bytes_in,
                t.wire_bytes_out,
            ),
        ] {
            f.add(name, &["in"], inn as f64);
            f.add(name, &["out"], out as f64);
        }
        for (reason, n) in DropReason::ALL.iter().zip(t.drops) {
            f.add(
                "sssonector_tunnel_drops_total",
                &[reason.as_str()],
                n as f64,
            );
        }
        f.add(
            "sssonector_tunnel_handshakes_total",
            &["accepted"],
            s.total as f64,
        );
        for (code, n) in &s.handshake_failures {
            f.add(
                "sssonector_tunnel_handshakes_total",
                &[code.as_str()],
                *n as f64,
            );
        }
        for (code, n) in &s.ended_by {
            f.add(
                "sssonector_tunnel_session_ends_total",
                &[code.as_str()],
                *n as f64,
            );
        }
        f.add("sssonector_tunnel_sessions_active", &[], s.current as f64);
        f.add("sssonector_tunnel_sessions_peak", &[], s.peak as f64);
        f.add("sssonector_tunnel_sessions_total", &[], s.total as f64);
        f.add(
            "sssonector_tunnel_reconnects_total",
            &[],
            s.reconnects as f64,
        );
        let (_, family) = f.at("sssonector_tunnel_session_duration_seconds");
        let mut h = proto::Histogram::default();
        h.set_sample_count(s.durations.count);
        h.set_sample_sum(s.durations.sum_seconds);
        h.set_bucket(
            s.durations
                .buckets
                .iter()
                .map(|(bound, n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect(),
        );
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        family.mut_metric().push(m);
        f.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::stats::test_session;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn the_text_has_every_family_with_conventional_names() {
        let stats = Arc::new(Stats::default());
        let m = Metrics::new(stats.clone(), Mode::Server);
        m.control.with_label_values(&["status", "ok"]).inc();
        m.notifications
            .with_label_values(&["tunnel_up", "sent"])
            .inc();
        let text = m.text();
        for s in SPECS {
            assert!(
                text.contains(&format!("# TYPE {} ", s.name)),
                "{} missing",
                s.name
            );
            assert!(s.name.starts_with("sssonector_"));
            assert_eq!(s.kind == COUNTER, s.name.ends_with("_total"), "{}", s.name);
        }
        assert!(
            text.contains("sssonector_control_commands_total{command=\"status\",result=\"ok\"} 1")
        );
        assert!(text.contains(
            "sssonector_snmp_notifications_total{notification=\"tunnel_up\",result=\"sent\"} 1"
        ));
        assert!(text.contains("process_open_fds "), "process metrics");
        assert!(text.contains("sssonector_tunnel_session_duration_seconds_bucket{le=\"+Inf\"} 0"));
    }

    #[test]
    fn the_numbers_are_the_tunnels_own() {
        let stats = Arc::new(Stats::default());
        let m = Metrics::new(stats.clone(), Mode::Client);
        let s = test_session(&stats, "server");
        s.counters.bytes_out.fetch_add(1234, Relaxed);
        stats.base.drop_packet(DropReason::NoRoute);
        let json = m.to_json();
        let value = |name: &str, label: (&str, &str)| {
            json[name]["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .find(|s| s["labels"][label.0] == label.1)
                .map(|s| s["value"].as_f64().expect("a number"))
        };
        assert_eq!(
            value("sssonector_tunnel_bytes_total", ("direction", "out")),
            Some(1234.0)
        );
        assert_eq!(
            value("sssonector_tunnel_drops_total", ("reason", "no_route")),
            Some(1.0)
        );
        assert_eq!(
            value("sssonector_build_info", ("mode", "client")),
            Some(1.0)
        );
        assert_eq!(
            json["sssonector_tunnel_sessions_active"]["samples"][0]["value"],
            1.0
        );
    }
}
