//! `sssonector bench` end to end: short runs of every mode through a real tunnel
//! (two daemons in two namespaces, `bench --echo-backend` behind the server), a
//! local pair the bench starts itself, and a backend that corrupts data, which must
//! fail the run loudly.
//!
//! Every test builds its own namespaces (unique names, removed on drop).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::netns::{Lab, Netns};
use common::pair::{Pair, SERVICE, WAIT};
use serde_json::Value;

/// The echo backend's port in the server's namespace.
const BACKEND: u16 = 9101;
/// A bench of 2 s ends well within this.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `sssonector bench ARGS --json` in `ns`; returns its output and report.
fn bench(ns: &Netns, args: &[&str]) -> (Output, Value) {
    let mut all = vec![env!("CARGO_BIN_EXE_sssonector"), "bench", "--json"];
    all.extend_from_slice(args);
    let out = ns.exec_within(&all, LIMIT);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON report ({e}, {}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// The checks every clean run must pass: it succeeded, counted messages, every
/// counted byte belongs to a whole message, no error, and its percentiles are in
/// order.
fn assert_clean(out: &Output, r: &Value) {
    assert!(
        out.status.success(),
        "{}: {r}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = r["messages"].as_u64().expect("messages");
    assert!(messages > 0, "{r}");
    assert_eq!(
        r["bytes"].as_u64(),
        Some(messages * r["payload_bytes"].as_u64().expect("payload")),
        "{r}"
    );
    assert_eq!(r["error_count"], 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["consistent"], true, "{r}");
    let rate = r["messages_per_second"].as_f64().expect("rate");
    let secs = r["duration_seconds"].as_f64().expect("duration");
    assert!((rate * secs - messages as f64).abs() < 1.0, "{r}");
    let l = &r["latency_ms"];
    let at = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("latency {k}: {r}"));
    assert!(at("p50") > 0.0, "{r}");
    assert!(at("p50") <= at("p90") && at("p90") <= at("p99"), "{r}");
    assert!(at("p99") <= at("p99_9") && at("p99_9") <= at("max"), "{r}");
}

/// The watched daemons' pids; each was seen using CPU and memory.
fn watched(r: &Value) -> Vec<u64> {
    let daemons = r["daemons"].as_array().expect("daemons");
    for d in daemons {
        assert!(d["cpu_seconds"].as_f64().expect("cpu") > 0.0, "{r}");
        assert!(d["rss_max_bytes"].as_u64().expect("rss") > 1 << 20, "{r}");
    }
    daemons
        .iter()
        .map(|d| d["pid"].as_u64().expect("pid"))
        .collect()
}

fn streams_total(pair: &Pair, who: &str) -> u64 {
    let status = pair.ctl_ok(who, "status", serde_json::json!({}));
    status["tunnel"]["streams"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("streams total in {status}"))
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn each_mode_through_a_real_tunnel_reports_consistent_figures() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = format!("127.0.0.1:{BACKEND}");
    let mut echo = srv.spawn(&[
        env!("CARGO_BIN_EXE_sssonector"),
        "bench",
        "--echo-backend",
        &backend,
    ]);
    assert!(srv.wait_listening(BACKEND, WAIT), "echo backend listens");
    let pair = Pair::start(
        &lab,
        srv,
        "bench",
        &format!("endpoints: [ {{ address: \"{backend}\" }} ]"),
        "",
        "",
    );
    let dir = pair.dir.path();
    let sockets = [dir.join("c1.sock"), dir.join("server.sock")];
    let pids = vec![u64::from(pair.client.pid()), u64::from(pair.server.pid())];

    for (mode, interval) in [("echo", "50ms"), ("bulk", "0"), ("connect", "20ms")] {
        let svg = dir.join(format!("{mode}.svg"));
        let streams_before = streams_total(&pair, "server");
        let (out, r) = bench(
            &pair.cli,
            &[
                "--target",
                SERVICE,
                "--mode",
                mode,
                "--duration",
                "2s",
                "--connections",
                "10",
                "--warmup",
                "0s",
                "--interval",
                interval,
                "--output",
                svg.to_str().expect("utf-8 path"),
                "--control",
                sockets[0].to_str().expect("utf-8 path"),
                "--control",
                sockets[1].to_str().expect("utf-8 path"),
            ],
        );
        eprintln!("{mode}: {r}");
        assert_clean(&out, &r);
        assert_eq!(r["mode"], mode);
        assert_eq!(r["connections"], 10);
        assert_eq!(r["payload_bytes"], 2048);
        assert_eq!(watched(&r), pids, "the daemons behind the control sockets");
        let messages = r["messages"].as_u64().expect("messages");
        let streams = streams_total(&pair, "server") - streams_before;
        match mode {
            // 10 connections, each a message every 50 ms, over 2 s: about 400.
            "echo" => {
                assert!((300..=440).contains(&messages), "{r}");
                assert_eq!(streams, 10, "one stream per connection");
            }
            "bulk" => assert_eq!(streams, 10, "one stream per connection"),
            // One stream per message, the counted ones and the few in flight at the
            // window's edge.
            "connect" => assert!(
                (messages..=messages + 10).contains(&streams),
                "{streams} streams for {messages} messages"
            ),
            _ => unreachable!(),
        }
        let plot = text(&svg);
        assert!(plot.starts_with("<svg"), "{mode}.svg");
        assert!(
            plot.contains(&format!("sssonector bench {mode}")),
            "{mode}.svg"
        );
        assert!(plot.contains(&format!("{messages} messages")), "{mode}.svg");
    }
    assert!(
        echo.try_wait().expect("wait").is_none(),
        "echo backend still up"
    );
}

#[test]
fn a_local_pair_is_started_measured_and_stopped_and_takes_a_config_overlay() {
    let lab = Lab::new();
    let ns = lab.netns("loc");
    let (out, r) = bench(
        &ns,
        &[
            "--local",
            "--duration",
            "2s",
            "--connections",
            "10",
            "--warmup",
            "1s",
        ],
    );
    assert_clean(&out, &r);
    let pids = watched(&r);
    assert_eq!(pids.len(), 2, "server and client: {r}");
    assert!(
        ns.pids().is_empty(),
        "both daemons stopped: {:?}",
        ns.pids()
    );

    // The overlay reaches the daemons: 2 streams limited to 500 kB/s each.
    let dir = tempfile::tempdir().expect("temp dir");
    let overlay = dir.path().join("overlay.yaml");
    std::fs::write(
        &overlay,
        "throttle: { enabled: true, rate: 500000, burst: 65536 }\n",
    )
    .expect("overlay written");
    let (out, r) = bench(
        &ns,
        &[
            "--config",
            overlay.to_str().expect("utf-8 path"),
            "--mode",
            "bulk",
            "--interval",
            "0",
            "--duration",
            "2s",
            "--connections",
            "2",
            "--warmup",
            "0s",
        ],
    );
    eprintln!("throttled bulk: {r}");
    assert_clean(&out, &r);
    let rate = r["bytes_per_second"].as_f64().expect("rate");
    assert!(
        (700_000.0..=1_300_000.0).contains(&rate),
        "2 streams at 500 kB/s moved {rate} B/s: {r}"
    );
    assert!(
        ns.pids().is_empty(),
        "both daemons stopped: {:?}",
        ns.pids()
    );
}

#[test]
fn a_backend_that_corrupts_data_fails_the_run_with_its_kind() {
    let lab = Lab::new();
    let ns = lab.netns("bad");
    // Echoes, but flips one bit in every 4 KiB read.
    let listener = ns
        .thread(|| TcpListener::bind("127.0.0.1:9102").expect("bind"))
        .join()
        .expect("thread");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    buf[n / 2] ^= 0x10;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let out = ns.exec_within(
        &[
            env!("CARGO_BIN_EXE_sssonector"),
            "bench",
            "--target",
            "127.0.0.1:9102",
            "--duration",
            "1s",
            "--connections",
            "2",
            "--warmup",
            "0s",
            "--json",
        ],
        LIMIT,
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("a report, also on failure");
    assert_eq!(out.status.code(), Some(1), "{r}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E_BENCH_FAILED"), "{stderr}");
    assert_eq!(r["consistent"], false, "{r}");
    let errors = &r["errors"];
    let bad = errors["corrupt"].as_u64().unwrap_or(0) + errors["header"].as_u64().unwrap_or(0);
    assert!(bad > 0, "{r}");
}
