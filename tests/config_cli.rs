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

/// Runs `config check` on `yaml` (certificates from the examples) and returns its
/// standard error after asserting it refused the file.
fn refused(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = repo().join("config/examples/certs");
    let file = dir.path().join("mixed.yaml");
    let text = yaml.replace("CERTS", &certs.display().to_string());
    std::fs::write(&file, text).expect("written");
    let out = check(&file, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// Wording that only a Rust programmer would understand.
const INTERNALS: [&str; 9] = [
    "variant",
    "String(",
    "invalid type: ",
    "enum ",
    "struct ",
    "u32",
    "u64",
    "sequence",
    "untagged",
];

fn assert_operator_words(stderr: &str) {
    for word in INTERNALS {
        assert!(
            !stderr.contains(word),
            "Rust internals {word:?} in:\n{stderr}"
        );
    }
}

#[test]
fn config_check_reports_type_errors_durations_typos_and_prefixes_at_once() {
    let stderr = refused(
        "mode: sever\n\
         network: { address: 10.99.0.1/33, mtu: mtu }\n\
         tunnel:\n  listen_prot: 8443\n  keepalive: 30\n  cert_file: CERTS/server.crt\n  key_file: CERTS/server.key\n  ca_file: CERTS/ca.crt\n\
         connection: { max_connections: lots, connect_timeout: 10, retry_interval: soon }\n\
         security: { deny_cidrs: [\"2001:db8::/129\"] }\n\
         loging: { level: debug }\n",
    );
    for expected in [
        "mode: unknown value 'sever', expected one of server, client",
        "network.address: \"10.99.0.1/33\": prefix length 33 is longer than 32",
        "network.mtu: expected a whole number",
        "tunnel.listen_prot: unknown key, did you mean `listen_port`?",
        "tunnel.keepalive: \"30\": time unit needed",
        "connection.max_connections: expected a whole number",
        "connection.connect_timeout: \"10\": time unit needed",
        "connection.retry_interval: \"soon\"",
        "security.deny_cidrs[0]: \"2001:db8::/129\": prefix length 129 is longer than 128",
        "loging: unknown key, did you mean `logging`?",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_operator_words(&stderr);
}

#[test]
fn config_check_reports_bad_list_items_and_wrong_sections_in_operator_words() {
    let stderr = refused(
        "mode: client\n\
         network: { address: 10.99.0.2/24, routes: [10.1.0.0/16, 5] }\n\
         tunnel:\n  server_name: s\n  servers: [{ address: \"a:1\", weight: heavy }, { weight: 2 }, \"b:2\"]\n  cert_file: CERTS/client1.crt\n  key_file: CERTS/client1.key\n  ca_file: CERTS/ca.crt\n  compression: gzip\n\
         services:\n  - { name: web, listen: \"127.0.0.1:8080\", strategy: random }\n\
         balancer: 5\n\
         throttle: { enabled: maybe, services: { web: { rat: 10 } } }\n\
         logging: { level: loud }\n",
    );
    for expected in [
        "tunnel.servers[0].weight: expected a whole number",
        "tunnel.servers[1].address: missing",
        "tunnel.servers[2]: expected a section",
        "tunnel.compression: unknown value 'gzip', expected one of none, lz4, zstd",
        "services[0].strategy: unknown value 'random', expected one of round_robin, least_connections, weighted_round_robin",
        "balancer: expected a section",
        "throttle.enabled: expected true or false, found 'maybe'",
        "throttle.services.web.rat: unknown key, did you mean `rate`?",
        "logging.level: unknown value 'loud', expected one of error, warn, info, debug, trace",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_operator_words(&stderr);
}

#[test]
fn demo_help_describes_both_demos_and_what_duration_does() {
    let out = run(&["demo", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "As root",
        "two network namespaces",
        "TUN tunnel",
        "ping",
        "Without root, or with --loopback",
        "mutual-TLS echo on loopback",
        "tunnel's traffic (default 5s)",
        "loopback echo (default: until Ctrl-C)",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in:\n{help}");
    }
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
