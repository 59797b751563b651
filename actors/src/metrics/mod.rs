//! Prometheus metrics: one registry that `/metrics`, `ctl metrics` and (through the
//! same snapshot of the tunnel's counters) the SNMP agent all read.
//!
//! Nothing is counted twice. The tunnel's numbers live in [`Stats`] (atomics the data
//! path adds to anyway) and are read at scrape time by `TunnelCollector`, the
//! services' endpoints (`sssonector_endpoint_*`, labelled by service and endpoint,
//! both bounded by the configuration) by `EndpointCollector`, the rate limiters
//! (`sssonector_limiter_*`, labelled by the limiter's configuration key, and the
//! throttling totals) from [`Stats::limits`] by `LimiterCollector`; only what
//! has no other home is counted here: control commands, SNMP requests and SNMP
//! notifications. Labels take
//! values from fixed sets (directions, drop reasons, error codes, command names), never
//! from peers or packets. Process figures (CPU, RSS, open fds) come from the
//! prometheus crate's process collector, CPU time read to the clock tick.

pub mod http;

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::{json, Map, Value};
use sssonector_config::Mode;

use crate::balancer::registry::BreakerState;
use crate::tunnel::stats::{DropReason, DurationHistogram, Stats};

/// The prometheus crate's process figures, with `process_cpu_seconds_total` to the
/// clock tick: the crate truncates it to whole seconds, so a daemon that used 0.46 s
/// read 0.
struct ProcessFigures(prometheus::process_collector::ProcessCollector);

impl Collector for ProcessFigures {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        if let Some(seconds) = cpu_seconds() {
            for family in families
                .iter_mut()
                .filter(|f| f.name() == "process_cpu_seconds_total")
            {
                for m in family.mut_metric() {
                    let mut c = proto::Counter::default();
                    c.set_value(seconds);
                    m.set_counter(c);
                }
            }
        }
        families
    }
}

/// User plus system CPU time of this process in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_of(
        &stat,
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??,
    )
}

/// utime + stime (fields 14 and 15 of proc_pid_stat(5)) of a `stat` line, in seconds
/// at `ticks_per_second`. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its last `)`.
fn cpu_seconds_of(stat: &str, ticks_per_second: i64) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = u32::try_from(ticks_per_second).ok().filter(|&h| h > 0)?;
    Some((utime + stime) as f64 / f64::from(hz))
}

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
    /// Seconds until a certificate expires (negative once it has), by `cert`: `own`
    /// (`tunnel.cert_file`) and `ca` (the first of `tunnel.ca_file` to expire); set
    /// by the certificate watcher at each check.
    pub cert_expiry: IntGaugeVec,
    /// New certificate file content by `result`: `swapped` (in use for new
    /// handshakes) or `refused` (the old stays).
    pub cert_changes: IntCounterVec,
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
        let cert_expiry = IntGaugeVec::new(
            Opts::new(
                "sssonector_certificate_expiry_seconds",
                "Seconds until the certificate expires (negative once expired), by cert: own or ca (the first of the bundle to expire).",
            ),
            &["cert"],
        )
        .expect("valid metric");
        let cert_changes = IntCounterVec::new(
            Opts::new(
                "sssonector_certificate_changes_total",
                "New content of the certificate, key, CA or CRL files, by result: swapped or refused.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(EndpointCollector {
                stats: stats.clone(),
                descs: descs(ENDPOINT_SPECS),
            }),
            Box::new(LimiterCollector {
                stats: stats.clone(),
                descs: descs(LIMITER_SPECS),
            }),
            Box::new(TunnelCollector::new(stats, mode)),
            Box::new(control.clone()),
            Box::new(snmp.clone()),
            Box::new(notifications.clone()),
            Box::new(crate::supervise::restarts().counter()),
            Box::new(cert_expiry.clone()),
            Box::new(cert_changes.clone()),
            Box::new(ProcessFigures(
                prometheus::process_collector::ProcessCollector::for_self(),
            )),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            control,
            snmp,
            notifications,
            cert_expiry,
            cert_changes,
        }
    }

    /// Whole days until the certificate `cert` (`own` or `ca`) expires, negative
    /// once it has; none before the certificate watcher has read it. Reading does
    /// not create the series.
    pub fn cert_days_left(&self, cert: &str) -> Option<i64> {
        self.cert_expiry
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .find(|m| m.get_label().iter().any(|l| l.value() == cert))
            .map(|m| (m.get_gauge().get_value() as i64).div_euclid(86_400))
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
        "sssonector_tunnel_handshakes_shed_total",
        "Server: connections closed before their handshake, tunnel.max_pending_handshakes or max_pending_per_source being pending.",
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
    spec(
        "sssonector_streams_active",
        "Layer-4 streams open now.",
        GAUGE,
        &[],
    ),
    spec(
        "sssonector_streams_peak",
        "Most layer-4 streams open at once.",
        GAUGE,
        &[],
    ),
    spec(
        "sssonector_streams_total",
        "Layer-4 streams admitted (within connection.max_connections).",
        COUNTER,
        &[],
    ),
    spec(
        "sssonector_stream_refusals_total",
        "Layer-4 streams refused before carrying a byte, by error code.",
        COUNTER,
        &["code"],
    ),
    spec(
        "sssonector_stream_resets_total",
        "Layer-4 streams cut instead of closed, by error code.",
        COUNTER,
        &["code"],
    ),
    spec(
        "sssonector_stream_bytes_total",
        "Bytes of ended layer-4 streams, by direction (sent: read from local sockets into the tunnel).",
        COUNTER,
        &["direction"],
    ),
    spec(
        "sssonector_stream_duration_seconds",
        "How long ended layer-4 streams lasted.",
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
        Self {
            stats,
            mode,
            started: Instant::now(),
            descs: descs(SPECS),
        }
    }
}

/// A sample with no value yet, with `labels` (in the order of its spec's label
/// names).
fn labelled(labels: &[&str], spec_labels: &[&str]) -> proto::Metric {
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
    proto::Metric::from_label(pairs)
}

/// A sample with `labels` (in the order of its spec's label names).
fn sample(labels: &[&str], value: f64, spec_labels: &[&str], kind: MetricType) -> proto::Metric {
    let mut m = labelled(labels, spec_labels);
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

/// A histogram sample of `d` with `labels` (in the order of `spec_labels`).
fn histogram(labels: &[&str], spec_labels: &[&str], d: &DurationHistogram) -> proto::Metric {
    let mut m = labelled(labels, spec_labels);
    let mut h = proto::Histogram::default();
    h.set_sample_count(d.count);
    h.set_sample_sum(d.sum_seconds);
    h.set_bucket(
        d.buckets
            .iter()
            .map(|(bound, n)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(*n);
                b
            })
            .collect(),
    );
    m.set_histogram(h);
    m
}

/// The descriptions of a collector's families, from its spec table.
fn descs(specs: &[Spec]) -> Vec<Desc> {
    specs
        .iter()
        .map(|s| {
            let labels = s.labels.iter().map(|l| (*l).to_string()).collect();
            Desc::new(s.name.into(), s.help.into(), labels, Default::default())
                .expect("valid metric description")
        })
        .collect()
}

/// Builds a collector's families in the order of its spec table.
struct Families {
    specs: &'static [Spec],
    families: Vec<MetricFamily>,
}

impl Families {
    fn new(specs: &'static [Spec]) -> Self {
        let families = specs
            .iter()
            .map(|s| {
                let mut f = MetricFamily::default();
                f.set_name(s.name.into());
                f.set_help(s.help.into());
                f.set_field_type(s.kind);
                f
            })
            .collect();
        Self { specs, families }
    }

    fn at(&mut self, name: &str) -> (&'static Spec, &mut MetricFamily) {
        let i = self
            .specs
            .iter()
            .position(|s| s.name == name)
            .expect("every family has a spec");
        (&self.specs[i], &mut self.families[i])
    }

    fn add(&mut self, name: &str, labels: &[&str], value: f64) {
        let (spec, family) = self.at(name);
        let m = sample(labels, value, spec.labels, spec.kind);
        family.mut_metric().push(m);
    }

    /// The families that have samples: one with none has nothing to say, and the
    /// text format would print its HELP and TYPE for nothing.
    fn done(self) -> Vec<MetricFamily> {
        self.families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

impl Collector for TunnelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.stats.snapshot();
        let t = &s.totals;
        let mut f = Families::new(SPECS);
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
        f.add(
            "sssonector_tunnel_handshakes_shed_total",
            &[],
            self.stats
                .handshakes_shed
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
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
        let (spec, family) = f.at("sssonector_tunnel_session_duration_seconds");
        let m = histogram(&[], spec.labels, &s.durations);
        family.mut_metric().push(m);
        let st = self.stats.streams.snapshot();
        f.add("sssonector_streams_active", &[], st.active as f64);
        f.add("sssonector_streams_peak", &[], st.peak as f64);
        f.add("sssonector_streams_total", &[], st.total as f64);
        for (code, n) in &st.refused {
            f.add(
                "sssonector_stream_refusals_total",
                &[code.as_str()],
                *n as f64,
            );
        }
        for (code, n) in &st.reset {
            f.add(
                "sssonector_stream_resets_total",
                &[code.as_str()],
                *n as f64,
            );
        }
        f.add(
            "sssonector_stream_bytes_total",
            &["sent"],
            st.bytes_sent as f64,
        );
        f.add(
            "sssonector_stream_bytes_total",
            &["received"],
            st.bytes_received as f64,
        );
        let (spec, family) = f.at("sssonector_stream_duration_seconds");
        let m = histogram(&[], spec.labels, &st.durations);
        family.mut_metric().push(m);
        f.done()
    }
}

/// Labels of the per-endpoint families: both take values from the configuration
/// only (service names and endpoint addresses), so they stay bounded.
const ENDPOINT: &[&str] = &["service", "endpoint"];

/// Every family the endpoint collector reports.
const ENDPOINT_SPECS: &[Spec] = &[
    spec(
        "sssonector_endpoint_healthy",
        "1 while the health checks consider the endpoint up, else 0.",
        GAUGE,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_draining",
        "1 while an operator drains the endpoint (no new streams), else 0.",
        GAUGE,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_breaker_state",
        "The endpoint's circuit breaker: 0 closed, 1 open, 2 half-open.",
        GAUGE,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_streams_active",
        "Streams connected to the endpoint now.",
        GAUGE,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_streams_peak",
        "Most streams connected to the endpoint at once.",
        GAUGE,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_streams_total",
        "Streams connected to the endpoint.",
        COUNTER,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_connect_failures_total",
        "Stream connects to the endpoint that failed or timed out (failed over).",
        COUNTER,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_breaker_rejections_total",
        "Streams the endpoint's open breaker turned away (failed over).",
        COUNTER,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_breaker_opened_total",
        "Times the endpoint's circuit breaker opened.",
        COUNTER,
        ENDPOINT,
    ),
    spec(
        "sssonector_endpoint_health_checks_total",
        "Health checks of the endpoint, by result (ok or failed).",
        COUNTER,
        &["service", "endpoint", "result"],
    ),
    spec(
        "sssonector_endpoint_bytes_total",
        "Bytes of the endpoint's streams, by direction (in: from the endpoint).",
        COUNTER,
        &["service", "endpoint", "direction"],
    ),
    spec(
        "sssonector_endpoint_stream_duration_seconds",
        "Durations of the endpoint's finished streams.",
        HISTOGRAM,
        ENDPOINT,
    ),
];

/// Reads the endpoints' registry ([`Stats::endpoints`]) at scrape time.
struct EndpointCollector {
    stats: Arc<Stats>,
    descs: Vec<Desc>,
}

impl Collector for EndpointCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = Families::new(ENDPOINT_SPECS);
        for e in self.stats.endpoints.snapshot() {
            let l = [e.service.as_str(), e.address.as_str()];
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            let breaker = match e.breaker {
                BreakerState::Closed => 0.0,
                BreakerState::Open => 1.0,
                BreakerState::HalfOpen => 2.0,
            };
            for (name, value) in [
                ("sssonector_endpoint_healthy", flag(e.healthy)),
                ("sssonector_endpoint_draining", flag(e.draining)),
                ("sssonector_endpoint_breaker_state", breaker),
                ("sssonector_endpoint_streams_active", e.active as f64),
                ("sssonector_endpoint_streams_peak", e.peak as f64),
                ("sssonector_endpoint_streams_total", e.total as f64),
                (
                    "sssonector_endpoint_connect_failures_total",
                    e.connect_failures as f64,
                ),
                (
                    "sssonector_endpoint_breaker_rejections_total",
                    e.breaker_rejections as f64,
                ),
                (
                    "sssonector_endpoint_breaker_opened_total",
                    e.breaker_opened as f64,
                ),
            ] {
                f.add(name, &l, value);
            }
            let checks = "sssonector_endpoint_health_checks_total";
            let ok = e.checks.saturating_sub(e.failed_checks);
            f.add(checks, &[l[0], l[1], "ok"], ok as f64);
            f.add(checks, &[l[0], l[1], "failed"], e.failed_checks as f64);
            let bytes = "sssonector_endpoint_bytes_total";
            f.add(bytes, &[l[0], l[1], "in"], e.bytes_in as f64);
            f.add(bytes, &[l[0], l[1], "out"], e.bytes_out as f64);
            let (spec, family) = f.at("sssonector_endpoint_stream_duration_seconds");
            let m = histogram(&l, spec.labels, &e.durations);
            family.mut_metric().push(m);
        }
        f.done()
    }
}

/// The label of the per-limiter families: the limiter's configuration key
/// (`throttle`, `throttle.requests`, `throttle.clients.<name>`, ...), bounded by the
/// configuration like the rows of SNMP's `sssLimiterTable`.
const LIMITER: &[&str] = &["limiter"];

/// Every family the limiter collector reports. The rate and burst of most limiters
/// are bytes; those of `throttle.requests` are requests: one family per figure, like
/// the limiter table of SNMP and `ctl limits`, so no unit suffix fits them all.
const LIMITER_SPECS: &[Spec] = &[
    spec(
        "sssonector_limiter_rate",
        "The limiter's sustained rate: bytes per second, requests per second for throttle.requests.",
        GAUGE,
        LIMITER,
    ),
    spec(
        "sssonector_limiter_burst",
        "The limiter's bucket size: bytes, requests for throttle.requests; 0 for throttle.global_rate.",
        GAUGE,
        LIMITER,
    ),
    spec(
        "sssonector_limiter_throttled_bytes_total",
        "Bytes that waited for the limiter's bucket before passing, since the limiter appeared.",
        COUNTER,
        LIMITER,
    ),
    spec(
        "sssonector_limiter_rejected_total",
        "Packets the limiter dropped or requests it refused, since the limiter appeared.",
        COUNTER,
        LIMITER,
    ),
    spec(
        "sssonector_throttled_bytes_total",
        "Bytes that waited for a rate limiter before passing, over all connections since start.",
        COUNTER,
        &[],
    ),
    spec(
        "sssonector_throttle_wait_seconds_total",
        "Time connections spent waiting for a rate limiter, summed over all connections since start.",
        COUNTER,
        &[],
    ),
    spec(
        "sssonector_rate_limited_requests_total",
        "Connections, handshakes and streams refused by throttle.requests (E_RATE_LIMITED) since start.",
        COUNTER,
        &[],
    ),
];

/// Reads the rate limiters ([`Stats::limits`]) at scrape time: the rows of the
/// limiter table (none while `throttle.enabled` is false) and the totals.
struct LimiterCollector {
    stats: Arc<Stats>,
    descs: Vec<Desc>,
}

impl Collector for LimiterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let limits = &self.stats.limits;
        let mut f = Families::new(LIMITER_SPECS);
        for row in limits.rows() {
            let l = [row.name.as_str()];
            for (name, value) in [
                ("sssonector_limiter_rate", &row.rate),
                ("sssonector_limiter_burst", &row.burst),
                ("sssonector_limiter_throttled_bytes_total", &row.throttled),
                ("sssonector_limiter_rejected_total", &row.rejected),
            ] {
                f.add(name, &l, value.load(Relaxed) as f64);
            }
        }
        let t = limits.totals();
        let waited = std::time::Duration::from_nanos(t.wait_ns).as_secs_f64();
        f.add(
            "sssonector_throttled_bytes_total",
            &[],
            t.throttled_bytes as f64,
        );
        f.add("sssonector_throttle_wait_seconds_total", &[], waited);
        f.add(
            "sssonector_rate_limited_requests_total",
            &[],
            t.rejected_requests as f64,
        );
        f.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::stats::test_session;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn cpu_seconds_count_ticks_after_a_command_name_with_spaces_and_parens() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 23 7 0 0 20 0 9 0 5 1 2";
        assert_eq!(cpu_seconds_of(stat, 100), Some(0.3));
        assert_eq!(cpu_seconds_of(stat, 0), None);
        assert_eq!(cpu_seconds_of("42 (x) S 1", 100), None);
    }

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

    #[test]
    fn endpoints_are_read_from_the_registry_at_scrape_time() {
        let stats = Arc::new(Stats::default());
        let m = Metrics::new(stats.clone(), Mode::Server);
        assert!(
            !m.text().contains("sssonector_endpoint_"),
            "no service, no endpoint families"
        );
        let row = stats.endpoints.row("web", "10.0.0.1:80", 1);
        row.add_in(300);
        row.add_out(20);
        row.set_breaker(BreakerState::HalfOpen);
        let text = m.text();
        for s in ENDPOINT_SPECS {
            assert!(
                text.contains(&format!("# TYPE {} ", s.name)),
                "{} missing",
                s.name
            );
            assert_eq!(s.kind == COUNTER, s.name.ends_with("_total"), "{}", s.name);
        }
        let l = "service=\"web\",endpoint=\"10.0.0.1:80\"";
        for line in [
            format!("sssonector_endpoint_bytes_total{{{l},direction=\"in\"}} 300"),
            format!("sssonector_endpoint_bytes_total{{{l},direction=\"out\"}} 20"),
            format!("sssonector_endpoint_breaker_state{{{l}}} 2"),
            format!("sssonector_endpoint_healthy{{{l}}} 1"),
            format!("sssonector_endpoint_stream_duration_seconds_count{{{l}}} 0"),
        ] {
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn limiters_are_read_from_the_limit_table_at_scrape_time() {
        use sssonector_config::schema::{Throttle, ThrottleOverride};
        let stats = Arc::new(Stats::default());
        let m = Metrics::new(stats.clone(), Mode::Server);
        let text = m.text();
        assert!(
            !text.contains("sssonector_limiter_"),
            "limiting off, no limiter rows:\n{text}"
        );
        assert!(
            text.contains("sssonector_throttled_bytes_total 0"),
            "{text}"
        );
        assert!(text.contains("sssonector_throttle_wait_seconds_total 0"));
        assert!(text.contains("sssonector_rate_limited_requests_total 0"));
        // The new label values are enumerated with the others, counted or not.
        assert!(text.contains("sssonector_tunnel_drops_total{reason=\"throttled\"} 0"));
        assert!(text.contains("sssonector_tunnel_handshakes_total{result=\"E_RATE_LIMITED\"} 0"));
        assert!(text.contains("sssonector_stream_refusals_total{code=\"E_RATE_LIMITED\"} 0"));

        let mut config = Throttle {
            enabled: true,
            rate: 1_000_000,
            burst: 131_072,
            global_rate: 4_000_000,
            ..Throttle::default()
        };
        config.requests.rate = 5;
        config.requests.burst = 10;
        config.clients.insert(
            "client1".into(),
            ThrottleOverride {
                rate: Some(2_000_000),
                ..ThrottleOverride::default()
            },
        );
        stats.limits.apply(config);
        let rows = stats.limits.rows();
        rows[3].throttled.fetch_add(700, Relaxed);
        rows[2].rejected.fetch_add(3, Relaxed);
        let text = m.text();
        for s in LIMITER_SPECS {
            assert!(
                text.contains(&format!("# TYPE {} ", s.name)),
                "{} missing",
                s.name
            );
            assert!(s.name.starts_with("sssonector_"));
            assert_eq!(s.kind == COUNTER, s.name.ends_with("_total"), "{}", s.name);
        }
        for line in [
            "sssonector_limiter_rate{limiter=\"throttle\"} 1000000",
            "sssonector_limiter_burst{limiter=\"throttle\"} 131072",
            "sssonector_limiter_rate{limiter=\"throttle.global_rate\"} 4000000",
            "sssonector_limiter_burst{limiter=\"throttle.global_rate\"} 0",
            "sssonector_limiter_rate{limiter=\"throttle.requests\"} 5",
            "sssonector_limiter_burst{limiter=\"throttle.requests\"} 10",
            "sssonector_limiter_rejected_total{limiter=\"throttle.requests\"} 3",
            "sssonector_limiter_rate{limiter=\"throttle.clients.client1\"} 2000000",
            "sssonector_limiter_burst{limiter=\"throttle.clients.client1\"} 131072",
            "sssonector_limiter_throttled_bytes_total{limiter=\"throttle.clients.client1\"} 700",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // ctl metrics carries the same families.
        let json = m.to_json();
        let samples = json["sssonector_limiter_rate"]["samples"]
            .as_array()
            .expect("samples");
        assert_eq!(samples.len(), 4, "{json}");
        assert_eq!(json["sssonector_limiter_rate"]["type"], "gauge");
        assert_eq!(
            json["sssonector_rate_limited_requests_total"]["type"],
            "counter"
        );
    }
}
