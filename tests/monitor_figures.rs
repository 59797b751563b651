//! Figures a server and client pair report through ctl, Prometheus and SNMP, checked
//! against their source: the process's CPU time against /proc/PID/stat.

mod common;

use common::netns::Lab;
use common::pair::Pair;
use common::snmp::net_snmp;
use serde_json::Value;

const MONITOR: &str = "monitor: { prometheus: { enabled: true, listen: \"127.0.0.1:9650\" }, \
    snmp: { enabled: true, listen: \"127.0.0.1:1161\", community: public } }\n";

fn start(lab: &Lab) -> Pair {
    let srv = lab.netns("srv");
    Pair::start(
        lab,
        srv,
        "echo",
        "strategy: round_robin, endpoints: [ { address: \"127.0.0.1:9\" } ]",
        MONITOR,
        MONITOR,
    )
}

/// utime + stime of `pid` in seconds, from /proc/PID/stat and `getconf CLK_TCK`.
fn proc_cpu_seconds(pid: u32, tick: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("comm");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / tick
}

fn clk_tck() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a tick rate")
}

fn scrape(pair: &Pair) -> String {
    let out = pair
        .srv
        .exec_ok(&["curl", "-s", "http://127.0.0.1:9650/metrics"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scraped(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn process_cpu_seconds_has_the_resolution_of_the_clock_tick() {
    let lab = Lab::new();
    let pair = start(&lab);
    let tick = clk_tck();
    let pid = pair.server.pid();
    // Some CPU work, bounded: control requests until the kernel counts 3 ticks.
    for _ in 0..2_000 {
        if proc_cpu_seconds(pid, tick) >= 3.0 / tick {
            break;
        }
        pair.ctl_ok("server", "metrics", Value::Null);
    }
    let before = proc_cpu_seconds(pid, tick);
    let text = scrape(&pair);
    let after = proc_cpu_seconds(pid, tick);
    common::promtool_check(&text);
    let cpu = scraped(&text, "process_cpu_seconds_total");
    assert!(before > 0.0, "no CPU counted by the kernel");
    assert!(
        before <= cpu && cpu <= after,
        "process_cpu_seconds_total {cpu} is not between {before} and {after} (/proc/{pid}/stat)"
    );
}

#[test]
fn compression_off_reads_none_in_ctl_and_snmp() {
    let lab = Lab::new();
    let pair = start(&lab);
    // The client may be up a moment before the server lists its session.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let status = pair.ctl_ok("server", "status", Value::Null);
        if !status["tunnel"]["peers"][0].is_null() || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        status["tunnel"]["peers"][0]["compression"], "none",
        "{status}"
    );
    let client = pair.ctl_ok("c1", "status", Value::Null);
    assert_eq!(
        client["tunnel"]["peers"][0]["compression"], "none",
        "{client}"
    );
    let connections = pair.ctl_ok("server", "connections", Value::Null);
    assert_eq!(
        connections["tunnel"][0]["compression"], "none",
        "{connections}"
    );
    let mut walk = net_snmp(&pair.srv, "snmpwalk");
    walk.args([
        "-r",
        "1",
        "-t",
        "1",
        "-v2c",
        "-c",
        "public",
        "-Oqv",
        "127.0.0.1:1161",
        "SSSONECTOR-MIB::sssPeerCompression",
    ]);
    let out = common::netns::output_within(walk, std::time::Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "none",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_clients_tunnel_endpoint_row_counts_the_sessions_bytes() {
    let lab = Lab::new();
    let pair = start(&lab);
    assert!(pair.cli.ping(common::pair::SERVER_INNER, 3), "no ping");
    let endpoints = pair.ctl_ok("c1", "endpoints", Value::Null);
    let row = endpoints["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["service"] == "tunnel")
        .unwrap_or_else(|| panic!("no tunnel row: {endpoints}"))
        .clone();
    let status = pair.ctl_ok("c1", "status", Value::Null);
    let session = &status["tunnel"]["peers"][0]["counters"];
    let (wire_in, wire_out) = (
        session["wire_bytes_in"].as_u64().expect("wire in"),
        session["wire_bytes_out"].as_u64().expect("wire out"),
    );
    // Three pings each way at least; the rows read the session's frames.
    let (row_in, row_out) = (
        row["bytes_in"].as_u64().expect("bytes_in"),
        row["bytes_out"].as_u64().expect("bytes_out"),
    );
    assert!(row_in >= 3 * 84 && row_out >= 3 * 84, "{row}");
    assert!(row_in <= wire_in && row_out <= wire_out, "{row} {session}");
    // Prometheus shows the same row.
    let out = pair
        .cli
        .exec_ok(&["curl", "-s", "http://127.0.0.1:9650/metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("sssonector_endpoint_bytes_total")
                && l.contains("service=\"tunnel\"")
                && l.contains("direction=\"in\"")
        })
        .unwrap_or_else(|| panic!("no tunnel endpoint bytes in:\n{text}"));
    let scraped: f64 = line
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("a number");
    assert!(scraped >= row_in as f64, "{line}");
}

/// Every drop counter in a `status` reply's tunnel totals, by reason.
fn drops(status: &Value) -> Vec<(String, u64)> {
    status["tunnel"]["totals"]["drops"]
        .as_object()
        .unwrap_or_else(|| panic!("no drops in {status}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(u64::MAX)))
        .collect()
}

#[test]
fn a_fresh_idle_tunnel_drops_nothing() {
    let lab = Lab::new();
    let pair = start(&lab);
    // IPv6 duplicate address detection, router solicitations and MLD reports on a
    // fresh interface come within the first seconds.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for who in ["server", "c1"] {
        let status = pair.ctl_ok(who, "status", Value::Null);
        let dropped: Vec<_> = drops(&status).into_iter().filter(|(_, n)| *n > 0).collect();
        assert!(dropped.is_empty(), "{who} dropped {dropped:?}");
    }
}
