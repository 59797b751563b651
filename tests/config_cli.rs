//! `sssonector config check` as an operator uses it.

mod common;

use common::{repo, run};
use serde_json::Value;

fn check(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = common::bin();
    cmd.args(["config", "check", "--config"]).arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sssonector runs")
}

#[test]
fn config_check_accepts_both_examples_and_prints_json() {
    for name in ["server.yaml", "client.yaml"] {
        let out = check(&repo().join("config/examples").join(name), &[]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("effective config is JSON");
        assert!(
            json["mode"] == "server" || json["mode"] == "client",
            "{json}"
        );
    }
}

#[test]
fn config_check_lists_every_mistake_with_its_key_path_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = repo().join("config/examples/certs");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "mode: server\n\
             network: {{ address: 10.99.0.1/24, mtu: 100 }}\n\
             tunnel:\n  listen_port: 99999\n  cert_file: {c}/server.crt\n  key_file: {c}/server.key\n  ca_file: {c}/ca.crt\n\
             throttle: {{ enabled: true, burst: 10 }}\n",
            c = certs.display()
        ),
    )
    .expect("written");
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E_CONFIG_INVALID"), "{stderr}");
    for expected in [
        "network.mtu: 100 is outside 576..=65535",
        "tunnel.listen_port: 99999 is not a port",
        "throttle.burst: 10 is below one frame",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "no config printed for an invalid file"
    );
}

#[test]
fn an_environment_override_shows_in_the_effective_config() {
    let file = repo().join("config/examples/client.yaml");
    let out = check(
        &file,
        &[
            ("SSSONECTOR_THROTTLE__RATE", "1000"),
            ("SSSONECTOR_MONITOR__SNMP__COMMUNITY", "007"),
            ("SSSONECTOR_LOGGING__LEVEL", "debug"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["throttle"]["rate"], 1000);
    assert_eq!(json["logging"]["level"], "debug");
    assert_eq!(
        json["monitor"]["snmp"]["community"], "***",
        "secrets are redacted"
    );
}

#[test]
fn yaml_json_and_toml_files_print_the_same_effective_config() {
    let dir = repo().join("config/fixtures/valid");
    let outputs: Vec<Value> = ["same.yaml", "same.json", "same.toml"]
        .iter()
        .map(|name| {
            let out = check(&dir.join(name), &[]);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("JSON")
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn an_unreadable_file_is_a_clear_error() {
    let out = run(&[
        "config",
        "check",
        "--config",
        "/nonexistent/sssonector.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/sssonector.yaml"), "{stderr}");
}

#[test]
fn completions_are_printed_for_bash() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_sssonector") && script.contains("cert"),
        "{script}"
    );
}

#[test]
fn an_empty_snmp_community_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = repo().join("config/examples/certs");
    let file = dir.path().join("empty_community.yaml");
    std::fs::write(
        &file,
        format!(
            "mode: server\n\
             network: {{ address: 10.99.0.1/24 }}\n\
             tunnel:\n  listen_port: 8443\n  cert_file: {c}/server.crt\n  key_file: {c}/server.key\n  ca_file: {c}/ca.crt\n\
             monitor:\n  snmp: {{ enabled: true, community: \"\" }}\n",
            c = certs.display()
        ),
    )
    .expect("written");
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("monitor.snmp.community: empty community"),
        "{stderr}"
    );
}
