//! The loader against the fixture folders: every valid file loads, every invalid file
//! is refused with exactly the key paths its `# expect:` line lists, each of its
//! `# message:` lines begins one of the problems, and no problem is worded in Rust.

use std::path::{Path, PathBuf};

use sssonector_config::{load_with_env, Config, LoadError, Mode};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture folder exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn load(path: &Path, env: &[(&str, &str)]) -> Result<Config, LoadError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load_with_env(path, env)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[test]
fn every_valid_fixture_loads() {
    for file in fixtures("valid") {
        if let Err(e) = load(&file, &[]) {
            panic!("{} refused: {e}", file.display());
        }
    }
}

#[test]
fn every_invalid_fixture_reports_exactly_its_expected_paths() {
    for file in fixtures("invalid") {
        let text = std::fs::read_to_string(&file).expect("readable fixture");
        let expect_line = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", file.display()));
        let mut want: Vec<&str> = expect_line.split(", ").collect();
        want.sort();
        let err = load(&file, &[]).expect_err("invalid fixture must be refused");
        let problems = err.problems();
        let mut got: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        got.sort();
        assert_eq!(got, want, "{}: {err}", file.display());
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for message in text.lines().filter_map(|l| l.strip_prefix("# message: ")) {
            assert!(
                lines.iter().any(|l| l.starts_with(message)),
                "{}: no problem reads {message:?} in {lines:#?}",
                file.display()
            );
        }
        for line in &lines {
            for internal in RUST_INTERNALS {
                assert!(
                    !line.contains(internal),
                    "{}: Rust wording {internal:?} in {line:?}",
                    file.display()
                );
            }
        }
    }
}

/// Wording from serde and the `config` crate that means nothing to an operator.
const RUST_INTERNALS: [&str; 10] = [
    "variant",
    "String(",
    "invalid type: ",
    "enum ",
    "struct ",
    "u32",
    "u64",
    "sequence",
    "untagged",
    " at 0",
];

#[test]
fn problems_quote_the_bad_value() {
    let err = load(&fixture("invalid/three-mistakes.yaml"), &[]).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("tunnel.listen_port: 99999 is not a port"),
        "{text}"
    );
    assert!(
        text.contains("tunnel.servers[0].weight: 0 is below the minimum 1"),
        "{text}"
    );
    assert!(
        text.contains("network.mtu: 100 is outside 576..=65535"),
        "{text}"
    );
}

#[test]
fn yaml_json_and_toml_with_the_same_content_give_the_same_config() {
    let yaml = load(&fixture("valid/same.yaml"), &[]).expect("yaml loads");
    let json = load(&fixture("valid/same.json"), &[]).expect("json loads");
    let toml = load(&fixture("valid/same.toml"), &[]).expect("toml loads");
    assert_eq!(yaml, json);
    assert_eq!(yaml, toml);
    assert_eq!(yaml.mode, Some(Mode::Client));
    assert_eq!(yaml.network.routes.len(), 2);
    assert_eq!(yaml.connection.retry_interval.duration().as_secs(), 90);
}

#[test]
fn environment_overrides_nested_keys_and_keeps_strings_as_written() {
    let config = load(
        &fixture("valid/same.yaml"),
        &[
            ("SSSONECTOR_THROTTLE__RATE", "1000"),
            ("SSSONECTOR_THROTTLE__ENABLED", "true"),
            ("SSSONECTOR_MONITOR__SNMP__COMMUNITY", "0042"),
            ("SSSONECTOR_LOGGING__LEVEL", "debug"),
            (
                "SSSONECTOR_NETWORK__ROUTES",
                "10.7.0.0/16,10.8.0.0/16,10.9.0.0/16",
            ),
            ("SSSONECTOR_SECURITY__ALLOWED_CLIENTS", "a,b"),
            ("SSSONECTOR_CONNECTION__CONNECT_TIMEOUT", "500ms"),
            ("UNRELATED_THROTTLE__RATE", "7"),
        ],
    )
    .expect("overridden config loads");
    assert_eq!(config.throttle.rate, 1000);
    assert!(config.throttle.enabled);
    let community = config
        .monitor
        .snmp
        .community
        .as_ref()
        .expect("community set");
    assert_eq!(community.expose(), "0042", "leading zeros survive");
    assert_eq!(config.logging.level, sssonector_config::LogLevel::Debug);
    assert_eq!(config.network.routes.len(), 3);
    assert_eq!(config.security.allowed_clients, ["a", "b"]);
    assert_eq!(
        config.connection.connect_timeout.duration().as_millis(),
        500
    );
}

#[test]
fn a_bad_environment_override_is_reported_with_its_key_path() {
    let err = load(
        &fixture("valid/same.yaml"),
        &[
            ("SSSONECTOR_THROTTLE__RATE", "fast"),
            ("SSSONECTOR_TUNNEL__LISTEN_PORT", "70000"),
            ("SSSONECTOR_TUNNELL__X", "1"),
        ],
    )
    .expect_err("bad overrides are refused");
    let mut paths: Vec<_> = err.problems().into_iter().map(|p| p.path).collect();
    paths.sort();
    assert_eq!(paths, ["throttle.rate", "tunnel.listen_port", "tunnell"]);
}

#[test]
fn relative_file_paths_are_relative_to_the_config_file() {
    let config = load(&fixture("valid/minimal-server.yaml"), &[]).expect("loads");
    let ca = config.tunnel.ca_file.expect("ca set");
    assert!(ca.is_absolute(), "{}", ca.display());
    assert!(ca.is_file());
}

#[test]
fn the_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in ["server.yaml", "client.yaml"] {
        if let Err(e) = load(&dir.join(name), &[]) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn an_unknown_extension_is_refused() {
    let err = load(Path::new("/etc/sssonector.ini"), &[]).expect_err("ini is not read");
    assert!(matches!(err, LoadError::UnsupportedFormat(_)));
}

#[test]
fn secrets_are_redacted_in_the_effective_config() {
    let config = load(&fixture("valid/same.yaml"), &[]).expect("loads");
    let json = serde_json::to_string(&config).expect("serializes");
    assert!(!json.contains("007"), "{json}");
    assert!(json.contains("\"community\":\"***\""), "{json}");
}
