//! `sssonector run`: start, JSON logs, reload on SIGHUP, graceful stop on
//! SIGTERM/SIGINT, refusal of bad configuration and bad TLS material.

mod common;

use std::time::Duration;

use common::{cert_init, repo, server_yaml, Daemon, TestServer};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn run_with_the_example_config_logs_json_and_exits_0_on_sigterm() {
    let mut daemon = Daemon::start(&repo().join("config/examples/server.yaml"));
    let started = daemon.wait_for("daemon started", WAIT);
    assert_eq!(started["mode"], "server");
    assert_eq!(started["level"], "INFO");
    assert!(started["ts"].is_string(), "{started}");
    daemon.signal(Signal::SIGTERM);
    let stopping = daemon.wait_for("daemon stopping", WAIT);
    assert_eq!(stopping["reason"], "SIGTERM");
    daemon.wait_for("daemon stopped", WAIT);
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
}

#[test]
fn sigint_stops_gracefully_too() {
    let mut server = TestServer::start("");
    server.daemon.signal(Signal::SIGINT);
    server.daemon.wait_for("daemon stopped", WAIT);
    assert_eq!(server.daemon.wait_exit(WAIT), Some(0));
}

#[test]
fn sighup_reloads_and_applies_the_log_level_live() {
    let mut server = TestServer::start("");
    let text = std::fs::read_to_string(&server.config)
        .expect("readable")
        .replace("level: info", "level: debug")
        + "throttle: { rate: 1000 }\n";
    server.reload_with(&text);
    let change = server.daemon.wait_for("configuration change", WAIT);
    assert_eq!(
        change["level"], "DEBG",
        "debug lines appear once the level is debug"
    );
    let reloaded = server.daemon.wait_for("configuration reloaded", WAIT);
    assert_eq!(reloaded["changes"], "logging.level,throttle.rate");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn an_invalid_reload_is_refused_and_the_daemon_keeps_running() {
    let mut server = TestServer::start("");
    let good = std::fs::read_to_string(&server.config).expect("readable");
    for (bad, path) in [
        (good.replace("18443", "99999"), "tunnel.listen_port"),
        (good.replace("server.key", "missing.key"), "tunnel.key_file"),
        ("mode: [".to_string(), ""),
    ] {
        server.reload_with(&bad);
        let refused = server
            .daemon
            .wait_for("reload refused, running configuration kept", WAIT);
        assert_eq!(refused["code"], "E_CONFIG_INVALID");
        assert!(
            refused["error"].as_str().is_some_and(|e| e.contains(path)),
            "{refused}"
        );
    }
    server.reload_with(&good.replace("drain_timeout: 5s", "drain_timeout: 4s"));
    let reloaded = server.daemon.wait_for("configuration reloaded", WAIT);
    assert_eq!(reloaded["changes"], "connection.drain_timeout");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_mode_change_refuses_the_whole_reload() {
    let mut server = TestServer::start("");
    server.reload_with(
        "mode: client\n\
         network: { address: 10.99.0.2/24 }\n\
         tunnel: { servers: [{ address: \"127.0.0.1:18443\" }], server_name: s, cert_file: c.crt, key_file: c.key, ca_file: ca.crt }\n",
    );
    let refused = server
        .daemon
        .wait_for("reload refused, running configuration kept", WAIT);
    assert_eq!(refused["code"], "E_RESTART_REQUIRED");
    // The server's own settings are still in force: a later edit of a live key is
    // diffed against the server configuration, not the refused client one.
    assert_eq!(
        server_yaml(server.dir.path(), "throttle: { rate: 5000 }\n"),
        server.config
    );
    server.daemon.signal(Signal::SIGHUP);
    let reloaded = server.daemon.wait_for("configuration reloaded", WAIT);
    assert_eq!(reloaded["changes"], "throttle.rate");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn the_audit_log_records_start_reload_and_stop() {
    let mut server = TestServer::start("security: { audit_log: audit.jsonl }\n");
    server.daemon.signal(Signal::SIGHUP);
    server.daemon.wait_for("configuration reloaded", WAIT);
    assert_eq!(server.stop(), Some(0));
    let audit =
        std::fs::read_to_string(server.dir.path().join("audit.jsonl")).expect("audit written");
    let events: Vec<String> = audit
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("audit lines are JSON");
            assert!(v["ts"].is_string());
            v["event"].as_str().expect("event name").to_string()
        })
        .collect();
    assert_eq!(
        events,
        ["daemon_started", "config_reloaded", "daemon_stopping"]
    );
}

#[test]
fn unusable_tls_material_refuses_to_start_with_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "s", &["c"]);
    // A key that does not belong to the certificate.
    std::fs::copy(dir.path().join("c.key"), dir.path().join("server.key")).expect("copy");
    let mut daemon = Daemon::start(&server_yaml(dir.path(), ""));
    let failed = daemon.wait_for("daemon cannot start", WAIT);
    assert_eq!(failed["code"], "E_TLS_CONFIG");
    assert_eq!(daemon.wait_exit(WAIT), Some(1));
}

#[test]
fn an_invalid_config_refuses_to_start_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "mode = \"sever\"\n").expect("written");
    let out = common::run(&["run", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("E_CONFIG_INVALID") && stderr.contains("mode"),
        "{stderr}"
    );
}

#[test]
fn the_loopback_demo_runs_mutual_tls_traffic_and_stops_by_itself() {
    let out = common::run(&["demo", "--loopback", "--duration", "2s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rfind(|l| l.contains("handshakes="))
        .expect("a status line");
    let handshakes: u64 = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("handshakes="))
        .and_then(|n| n.parse().ok())
        .expect("handshake count");
    assert!(handshakes > 0, "{last}");
    assert!(stdout.contains("demo stopped"), "{stdout}");
}
