//! The rate limiters as an operator watches them: one server daemon with limiting on,
//! its limiter table walked with Net-SNMP's `snmpwalk` (names from `mibs/`), its
//! `/metrics` checked by `promtool` and read, and `ctl limits`, all three agreeing;
//! a reload that drops a per-client override removes that row and leaves the others'
//! indexes alone. The daemon runs in a network namespace of its own, its monitoring
//! ports picked free there.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{output_within, Lab, Netns};
use common::snmp::net_snmp;
use common::{cert_init, server_yaml, Control, Daemon};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Time allowed for a daemon to reach a lifecycle log line, or a change to show.
const WAIT: Duration = Duration::from_secs(10);

/// The tunnel port [`server_yaml`] configures.
const TUNNEL_PORT: u16 = 18443;

/// The limits under test, without the `clients` section ([`CLIENTS`]) a reload drops.
const THROTTLE: &str = "throttle: { enabled: true, rate: 1000000, burst: 131072, \
    global_rate: 4000000, requests: { rate: 5, burst: 10 }";

/// The per-client override of [`THROTTLE`].
const CLIENTS: &str = ", clients: { client1: { rate: 2000000 } }";

/// One row of the limiter table, however it was read: SNMP's units (kilobytes, or
/// requests for `throttle.requests`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    index: u32,
    rate: u64,
    burst: u64,
    throttled: u64,
    rejected: u64,
}

/// Asserts that `tool` is installed: a missing tool fails the test with the package
/// to install, it never skips it.
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: apt-get install -y --no-install-recommends {package}"
    );
}

/// Writes the server's configuration into `dir`: monitoring on `prometheus` (TCP)
/// and `snmp` (UDP), limits with or without the per-client override.
fn write_config(dir: &Path, (prometheus, snmp): (u16, u16), clients: bool) {
    let clients = if clients { CLIENTS } else { "" };
    server_yaml(
        dir,
        &format!(
            "monitor: {{ prometheus: {{ enabled: true, listen: \"127.0.0.1:{prometheus}\" }}, \
             snmp: {{ enabled: true, listen: \"127.0.0.1:{snmp}\", community: public }} }}\n\
             {THROTTLE}{clients} }}\n"
        ),
    );
}

/// `snmpwalk` of sssObjects at `port` in `ns`, one `name.index value` line each
/// (`-OsqU`: names without module, no types, no units).
fn walk(ns: &Netns, port: u16) -> Vec<String> {
    let mut cmd = net_snmp(ns, "snmpwalk");
    cmd.args(["-v2c", "-c", "public", "-r", "1", "-t", "2", "-OsqU"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("SSSONECTOR-MIB::sssObjects");
    let out = output_within(cmd, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "snmpwalk ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// The limiter table in a [`walk`], by limiter name.
fn snmp_rows(walked: &[String]) -> BTreeMap<String, Row> {
    let mut cells: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for line in walked {
        let Some(rest) = line.strip_prefix("sssLimiter") else {
            continue;
        };
        let (oid, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let (column, index) = oid.split_once('.').expect("column.index");
        let index = index.parse().expect("a numeric index");
        let value = value.trim_matches('"').to_owned();
        cells.entry(index).or_default().insert(column.into(), value);
    }
    cells
        .into_iter()
        .map(|(index, c)| {
            let n = |column: &str| -> u64 {
                c.get(column)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("row {index}: no number {column} in {c:?}"))
            };
            let row = Row {
                index,
                rate: n("Rate"),
                burst: n("Burst"),
                throttled: n("ThrottledBytes"),
                rejected: n("Rejected"),
            };
            (c["Name"].clone(), row)
        })
        .collect()
}

/// The limiter table of a `ctl limits` reply, in SNMP's units, by limiter name.
fn ctl_rows(reply: &Value) -> BTreeMap<String, Row> {
    let limiters = reply["data"]["limiters"]
        .as_array()
        .unwrap_or_else(|| panic!("no limiters in {reply}"));
    limiters
        .iter()
        .map(|l| {
            let name = l["name"].as_str().expect("a name").to_owned();
            let n = |key: &str| l[key].as_u64().unwrap_or_else(|| panic!("{key} in {l}"));
            let kilo = |v: u64| {
                if name == "throttle.requests" {
                    v
                } else {
                    v / 1000
                }
            };
            let row = Row {
                index: u32::try_from(n("index")).expect("an Unsigned32 index"),
                rate: kilo(n("rate")),
                burst: kilo(n("burst")),
                throttled: n("throttled_bytes"),
                rejected: n("rejected"),
            };
            (name, row)
        })
        .collect()
}

/// `/metrics` at `port` in `ns`, after `promtool check metrics` found nothing to say.
fn scrape(ns: &Netns, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = ns.exec(&["curl", "-sf", &url]);
    assert!(out.status.success(), "curl {url}: {}", out.status);
    let text = String::from_utf8(out.stdout).expect("the text format is UTF-8");
    common::promtool_check(&text);
    text
}

/// The value of the sample `series` (name and labels, as printed) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().expect("a number"))
    })
}

/// The limiter families of a scrape, in bytes (and requests), by limiter name:
/// (rate, burst, throttled bytes, rejected).
fn prometheus_rows(scrape: &str) -> BTreeMap<String, [u64; 4]> {
    let mut rows: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let families = [
        "sssonector_limiter_rate",
        "sssonector_limiter_burst",
        "sssonector_limiter_throttled_bytes_total",
        "sssonector_limiter_rejected_total",
    ];
    for line in scrape.lines() {
        for (i, family) in families.iter().enumerate() {
            let Some(rest) = line.strip_prefix(&format!("{family}{{limiter=\"")) else {
                continue;
            };
            let (name, value) = rest.split_once("\"} ").expect("one label");
            rows.entry(name.into()).or_default()[i] = value.parse().expect("an integer");
        }
    }
    rows
}

/// `ctl limits` until `done` holds for its reply (returned), or [`WAIT`].
fn limits_until(control: &mut Control, id: &mut u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        *id += 1;
        let reply = control.call(*id, "limits", Value::Null);
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "ctl limits never got there: {reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn snmp_prometheus_and_ctl_show_the_same_limiters_and_a_reload_drops_a_row_only() {
    for (tool, package) in [
        ("snmpwalk", "snmp"),
        ("promtool", "prometheus"),
        ("curl", "curl"),
    ] {
        require(tool, package);
    }
    let lab = Lab::new();
    let ns = lab.netns("srv");
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "s", &["client1"]);
    let (prometheus, snmp) = ns.free_ports();
    write_config(dir.path(), (prometheus, snmp), true);
    let mut daemon = Daemon::start_in(ns.name(), &dir.path().join("server.yaml"));
    daemon.wait_for("daemon started", WAIT);
    let mut control = Control::connect(&dir.path().join("ctl.sock"));
    let mut id = 0;

    // Twenty connections at once from one address: throttle.requests (burst 10,
    // 5 per second) refuses some before any TLS byte, with E_RATE_LIMITED.
    let opened = ns
        .thread(|| {
            (0..20)
                .filter(|_| TcpStream::connect(("127.0.0.1", TUNNEL_PORT)).is_ok())
                .count()
        })
        .join()
        .expect("the connecting thread ends");
    assert_eq!(opened, 20, "the listener accepts before it limits");
    let refused = |reply: &Value| reply["data"]["requests"]["rejected"].as_u64();
    let mut last = limits_until(&mut control, &mut id, |r| refused(r) > Some(0));
    // The refusals are counted as each accepted connection is looked at: wait until
    // the count holds still, so that the three readers see the same numbers.
    let settled = loop {
        std::thread::sleep(Duration::from_millis(300));
        id += 1;
        let reply = control.call(id, "limits", Value::Null);
        if refused(&reply) == refused(&last) {
            break reply;
        }
        last = reply;
    };
    let rejected = refused(&settled).expect("a count");
    assert!((1..=10).contains(&rejected), "{settled}");

    // SNMP: four rows, in kilobytes, requests as they are.
    let walked = walk(&ns, snmp);
    let by_snmp = snmp_rows(&walked);
    let shown: BTreeMap<&str, (u64, u64)> = by_snmp
        .iter()
        .map(|(name, r)| (name.as_str(), (r.rate, r.burst)))
        .collect();
    assert_eq!(
        shown,
        BTreeMap::from([
            ("throttle", (1000, 131)),
            ("throttle.global_rate", (4000, 0)),
            ("throttle.requests", (5, 10)),
            ("throttle.clients.client1", (2000, 131)),
        ]),
        "{walked:#?}"
    );
    assert_eq!(by_snmp["throttle.requests"].rejected, rejected);
    assert!(
        walked.iter().any(|l| l == "sssDropsThrottled.0 0"),
        "the throttled drops have their MIB name: {walked:#?}"
    );
    assert_eq!(by_snmp, ctl_rows(&settled), "SNMP and ctl limits disagree");

    // Prometheus: the same rows in bytes, the totals, the new label values.
    let text = scrape(&ns, prometheus);
    let by_prometheus = prometheus_rows(&text);
    assert_eq!(
        by_prometheus,
        BTreeMap::from([
            ("throttle".into(), [1_000_000, 131_072, 0, 0]),
            ("throttle.global_rate".into(), [4_000_000, 0, 0, 0]),
            ("throttle.requests".into(), [5, 10, 0, rejected]),
            (
                "throttle.clients.client1".into(),
                [2_000_000, 131_072, 0, 0]
            ),
        ]),
        "{text}"
    );
    for (series, value) in [
        ("sssonector_rate_limited_requests_total", rejected as f64),
        (
            "sssonector_tunnel_handshakes_total{result=\"E_RATE_LIMITED\"}",
            rejected as f64,
        ),
        ("sssonector_tunnel_drops_total{reason=\"throttled\"}", 0.0),
        ("sssonector_throttled_bytes_total", 0.0),
        ("sssonector_throttle_wait_seconds_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // ctl metrics mirrors the registry.
    id += 1;
    let metrics = control.call(id, "metrics", Value::Null);
    let samples = metrics["data"]["sssonector_limiter_rate"]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no limiter rates in {metrics}"));
    assert_eq!(samples.len(), 4, "{metrics}");

    // A reload without the client override: its row goes, the others stay as they
    // were, index and counts.
    write_config(dir.path(), (prometheus, snmp), false);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("configuration reloaded", WAIT);
    let after = limits_until(&mut control, &mut id, |r| ctl_rows(r).len() == 3);
    let walked = walk(&ns, snmp);
    let mut kept = by_snmp.clone();
    kept.remove("throttle.clients.client1");
    assert_eq!(snmp_rows(&walked), kept, "{walked:#?}");
    assert_eq!(ctl_rows(&after), kept, "SNMP and ctl limits disagree");
    let text = scrape(&ns, prometheus);
    let mut left = by_prometheus.clone();
    left.remove("throttle.clients.client1");
    assert_eq!(prometheus_rows(&text), left, "{text}");

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT), Some(0), "{}", daemon.log());
}
