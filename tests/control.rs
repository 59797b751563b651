//! The control socket of the real daemon: every command, every kind of bad input,
//! many clients at once, `sssonector ctl`, and a script using socat and jq.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Control, TestServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn socket(server: &TestServer) -> std::path::PathBuf {
    server.dir.path().join("ctl.sock")
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"]["code"].as_str().expect("error code")
}

#[test]
fn every_command_answers_over_the_real_socket() {
    let mut server = TestServer::start("");
    let mut ctl = Control::connect(&socket(&server));

    let help = ctl.call(1, "help", json!({}));
    let names: Vec<&str> = help["data"]["commands"]
        .as_array()
        .expect("command list")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    for expected in [
        "version",
        "status",
        "health",
        "metrics",
        "connections",
        "endpoints",
        "endpoint.add",
        "endpoint.remove",
        "endpoint.drain",
        "breakers",
        "breaker.reset",
        "limits",
        "limits.set",
        "log.level",
        "reload",
        "stop",
        "help",
    ] {
        assert!(names.contains(&expected), "help lacks {expected}");
    }

    let version = ctl.call(2, "version", json!({}));
    assert_eq!(version["data"]["version"], env!("CARGO_PKG_VERSION"));

    let status = ctl.call(3, "status", json!({}));
    let data = &status["data"];
    assert_eq!(data["mode"], "server");
    assert_eq!(data["components"]["control"], "running");
    assert_eq!(data["components"]["tunnel"], "running");
    assert_eq!(data["tunnel"]["sessions"]["current"], 0);
    assert_eq!(
        data["config"]["file"],
        server.config.to_str().expect("utf-8")
    );
    assert_eq!(data["config"]["digest"].as_str().map(str::len), Some(64));
    assert!(data["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0));

    let health = ctl.call(4, "health", json!({}));
    assert_eq!(health["data"]["status"], "healthy", "{health}");
    assert!(health["data"]["checks"]["resources"]["open_fds"]
        .as_u64()
        .is_some_and(|n| n > 0));
    assert!(health["data"]["checks"]["resources"]["rss_bytes"]
        .as_u64()
        .is_some_and(|n| n > 0));

    let metrics = ctl.call(8, "metrics", json!({}));
    assert_eq!(metrics["ok"], true, "{metrics}");
    assert_eq!(
        metrics["data"]["sssonector_control_commands_total"]["type"], "counter",
        "{metrics}"
    );
    let connections = ctl.call(9, "connections", json!({}));
    assert_eq!(connections["data"]["active"], 0, "{connections}");
    // A server without services lists no endpoints and no breakers, and refuses
    // commands for a service it does not have.
    for (i, command) in ["endpoints", "breakers"].into_iter().enumerate() {
        let reply = ctl.call(10 + i as u64, command, json!({}));
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["data"][command], json!([]), "{reply}");
    }
    let no_service = [
        (
            "endpoint.add",
            json!({"service": "web", "address": "127.0.0.1:1", "weight": 2}),
        ),
        (
            "endpoint.remove",
            json!({"service": "web", "address": "127.0.0.1:1"}),
        ),
        (
            "endpoint.drain",
            json!({"service": "web", "address": "127.0.0.1:1"}),
        ),
        ("breaker.reset", json!({"service": "web"})),
    ];
    for (i, (command, args)) in no_service.into_iter().enumerate() {
        let reply = ctl.call(12 + i as u64, command, args);
        assert_eq!(error_code(&reply), "E_BAD_ARGS", "{command}: {reply}");
    }
    // Rate limiting is off here: `limits` says so, `limits.set` is refused rather
    // than faking a change, after its arguments were checked.
    let limits = ctl.call(20, "limits", json!({}));
    assert_eq!(limits["data"]["enabled"], false, "{limits}");
    assert_eq!(limits["data"]["limiters"], json!([]), "{limits}");
    let reply = ctl.call(21, "limits.set", json!({"rate": 1000}));
    assert_eq!(error_code(&reply), "E_NOT_AVAILABLE", "{reply}");
    assert_eq!(
        reply["error"]["message"], "throttle.enabled is false",
        "{reply}"
    );
    let reply = ctl.call(22, "limits.set", json!({"rate": "fast"}));
    assert_eq!(error_code(&reply), "E_BAD_ARGS", "{reply}");
    let reply = ctl.call(30, "endpoint.add", json!({"service": "web"}));
    assert_eq!(error_code(&reply), "E_BAD_ARGS");

    assert_eq!(
        ctl.call(40, "log.level", json!({}))["data"]["level"],
        "info"
    );
    assert_eq!(
        ctl.call(41, "log.level", json!({"level": "debug"}))["data"]["level"],
        "debug"
    );
    assert_eq!(
        ctl.call(42, "status", json!({}))["data"]["log_level"],
        "debug"
    );

    std::fs::write(
        &server.config,
        std::fs::read_to_string(&server.config).expect("readable") + "throttle: { rate: 4242 }\n",
    )
    .expect("edited");
    let reload = ctl.call(50, "reload", json!({}));
    assert_eq!(
        reload["data"]["changes"][0]["key"], "throttle.rate",
        "{reload}"
    );
    std::fs::write(&server.config, "mode: [").expect("broken");
    let refused = ctl.call(51, "reload", json!({}));
    assert_eq!(error_code(&refused), "E_CONFIG_INVALID");

    let stop = ctl.call(60, "stop", json!({}));
    assert_eq!(stop["data"]["stopping"], true);
    assert_eq!(server.daemon.wait_exit(WAIT), Some(0));
    assert!(
        !socket(&server).exists(),
        "the socket file is removed on stop"
    );
}

#[test]
fn bad_input_gets_its_error_code_and_the_connection_keeps_serving() {
    let server = TestServer::start("");
    let mut ctl = Control::connect(&socket(&server));
    let table: [(&[u8], &str); 9] = [
        (b"this is not json\n", "E_BAD_JSON"),
        (b"{\"command\": \"stat\n", "E_BAD_JSON"),
        (b"\xff\xfe{}\n", "E_BAD_JSON"),
        (b"[1, 2, 3]\n", "E_BAD_REQUEST"),
        (b"{\"id\": 1, \"command\": 42}\n", "E_BAD_REQUEST"),
        (b"{\"id\": 1}\n", "E_BAD_REQUEST"),
        (
            b"{\"id\": 1, \"command\": \"selfdestruct\"}\n",
            "E_UNKNOWN_COMMAND",
        ),
        (
            b"{\"id\": 1, \"command\": \"log.level\", \"args\": {\"level\": 5}}\n",
            "E_BAD_ARGS",
        ),
        (
            b"{\"id\": 1, \"command\": \"status\", \"args\": {\"verbose\": true}}\n",
            "E_BAD_ARGS",
        ),
    ];
    for (line, code) in table {
        ctl.send_raw(line);
        let reply = ctl.read_reply().expect("a reply, not a hang-up");
        assert_eq!(
            error_code(&reply),
            code,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // The same connection still answers.
    assert_eq!(ctl.call(7, "status", json!({}))["ok"], true);
}

#[test]
fn a_duplicate_key_at_any_depth_is_refused_and_names_the_key() {
    let server = TestServer::start("");
    let mut ctl = Control::connect(&socket(&server));
    let table: [(&[u8], &str); 4] = [
        (b"{\"id\":1,\"command\":\"status\",\"command\":\"stop\"}\n", "command"),
        (b"{\"id\":1,\"id\":2,\"command\":\"status\"}\n", "id"),
        (
            b"{\"id\":1,\"command\":\"log.level\",\"args\":{\"level\":\"info\",\"level\":\"trace\"}}\n",
            "level",
        ),
        (
            b"{\"id\":1,\"command\":\"status\",\"args\":{},\"x\":[{\"deep\":1,\"deep\":2}]}\n",
            "deep",
        ),
    ];
    for (line, key) in table {
        ctl.send_raw(line);
        let reply = ctl.read_reply().expect("a reply, not a hang-up");
        let shown = String::from_utf8_lossy(line);
        assert_eq!(error_code(&reply), "E_BAD_REQUEST", "{shown}");
        let message = reply["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("duplicate key \"{key}\"")),
            "{shown}: {message}"
        );
    }
    // The duplicate `command` did not stop the daemon, nor change the log level.
    assert_eq!(ctl.call(2, "status", json!({}))["ok"], true);
    let level = ctl.call(3, "log.level", json!({}));
    assert_ne!(level["data"]["level"], "trace", "{level}");
    assert_eq!(
        Control::connect(&socket(&server)).call(4, "version", json!({}))["ok"],
        true
    );
}

#[test]
fn an_empty_or_blank_line_gets_a_reply_not_silence() {
    let server = TestServer::start("");
    let mut ctl = Control::connect(&socket(&server));
    for line in [&b"\n"[..], b"   \t \n", b"\r\n"] {
        ctl.send_raw(line);
        let reply = ctl.read_reply().expect("a reply, not a hang-up");
        assert_eq!(error_code(&reply), "E_BAD_REQUEST", "{line:?}");
        assert_eq!(reply["id"], Value::Null, "{reply}");
    }
    assert_eq!(ctl.call(5, "status", json!({}))["ok"], true);
}

#[test]
fn an_oversized_line_is_refused_and_the_connection_goes_on() {
    let server = TestServer::start("");
    let mut bystander = Control::connect(&socket(&server));
    let mut big = Control::connect(&socket(&server));
    for size in [64 * 1024, 70 * 1024, 1024 * 1024] {
        let mut line = vec![b'x'; size];
        line.push(b'\n');
        big.send_raw(&line);
        let reply = big.read_reply().expect("an error reply");
        assert_eq!(error_code(&reply), "E_LINE_TOO_LONG", "{size} bytes");
        assert_eq!(
            big.call(1, "version", json!({}))["ok"],
            true,
            "after {size} bytes"
        );
    }
    // A line just under the limit is read whole (and is simply not JSON).
    let mut line = vec![b'x'; 64 * 1024 - 1];
    line[64 * 1024 - 2] = b'\n';
    big.send_raw(&line[..64 * 1024 - 1]);
    assert_eq!(error_code(&big.read_reply().expect("reply")), "E_BAD_JSON");
    assert_eq!(bystander.call(2, "status", json!({}))["ok"], true);
}

#[test]
fn a_silent_client_is_timed_out_while_others_are_served() {
    let server = TestServer::start("");
    let mut silent = Control::connect(&socket(&server));
    let begun = Instant::now();
    let mut other = Control::connect(&socket(&server));
    assert_eq!(other.call(1, "status", json!({}))["ok"], true);
    let reply = silent.read_reply().expect("a timeout reply");
    assert_eq!(error_code(&reply), "E_TIMEOUT");
    assert!(silent.read_reply().is_none(), "then the connection closes");
    let waited = begun.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}, idle_timeout is 2s"
    );
    assert_eq!(
        Control::connect(&socket(&server)).call(2, "status", json!({}))["ok"],
        true
    );
}

/// 32 clients × 1,000 `status` requests in parallel, every reply checked. Prints the
/// rate; a benchmark figure, not an assertion.
#[test]
fn thirty_two_clients_in_parallel_all_get_correct_replies() {
    const CLIENTS: u64 = 32;
    const REQUESTS: u64 = 1000;
    let server = TestServer::start("");
    let path = socket(&server);
    let begun = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut ctl = Control::connect(&path);
                for r in 0..REQUESTS {
                    let id = c * REQUESTS + r;
                    let reply = ctl.call(id, "status", json!({}));
                    assert_eq!(reply["ok"], true, "{reply}");
                    assert_eq!(reply["data"]["mode"], "server");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let elapsed = begun.elapsed();
    let total = CLIENTS * REQUESTS;
    println!(
        "control socket: {total} status requests from {CLIENTS} clients in {:.2} s = {:.0} requests/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_socket_gets_its_mode_a_stale_file_is_replaced_and_a_live_one_is_not_stolen() {
    // A stale socket: bound and abandoned, as a crashed daemon leaves it.
    let dir = tempfile::tempdir().expect("temp dir");
    common::cert_init(dir.path(), "s", &["c"]);
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("ctl.sock")).expect("bind");
    drop(stale);
    let config = common::server_yaml(dir.path(), "");
    let mut first = common::Daemon::start(&config);
    first.wait_for("control socket listening", WAIT);
    let mode = std::fs::metadata(dir.path().join("ctl.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut second = common::Daemon::start(&config);
    let failed = second.wait_for("daemon cannot start", WAIT);
    assert_eq!(failed["code"], "E_CONTROL_IN_USE");
    assert_eq!(second.wait_exit(WAIT), Some(1));
    // The socket is still the first daemon's.
    let mut ctl = Control::connect(&dir.path().join("ctl.sock"));
    assert_eq!(ctl.call(1, "status", json!({}))["data"]["pid"], first.pid());
}

#[test]
fn changing_commands_are_audited_with_the_callers_uid() {
    let mut server = TestServer::start("security: { audit_log: audit.jsonl }\n");
    let mut ctl = Control::connect(&socket(&server));
    ctl.call(1, "status", json!({}));
    ctl.call(2, "log.level", json!({}));
    ctl.call(3, "log.level", json!({"level": "warn"}));
    ctl.call(4, "limits.set", json!({"rate": 10}));
    assert_eq!(server.stop(), Some(0));
    let audit = std::fs::read_to_string(server.dir.path().join("audit.jsonl")).expect("audit");
    let commands: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|e| e["event"] == "control_command")
        .collect();
    assert_eq!(commands.len(), 2, "only the changing commands: {audit}");
    assert_eq!(commands[0]["command"], "log.level");
    assert_eq!(commands[0]["result"], "ok");
    assert_eq!(commands[0]["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(commands[0]["pid"], std::process::id());
    assert_eq!(commands[1]["command"], "limits.set");
    assert_eq!(commands[1]["result"], "E_NOT_AVAILABLE");
}

#[test]
fn ctl_prints_for_people_and_for_scripts_and_exits_by_outcome() {
    let mut server = TestServer::start("");
    let sock = socket(&server);
    let sock = sock.to_str().expect("utf-8");
    let ctl = |args: &[&str]| common::run(&[&["ctl", "--socket", sock], args].concat());

    let human = ctl(&["status"]);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.lines().any(|l| l == "mode: server"), "{text}");
    assert!(
        text.lines().any(|l| l == "components.control: running"),
        "{text}"
    );

    let json = ctl(&["--json", "log.level", "level=trace"]);
    assert_eq!(json.status.code(), Some(0));
    let reply: Value = serde_json::from_slice(&json.stdout).expect("raw JSON reply");
    assert_eq!(reply["data"]["level"], "trace");

    let failed = ctl(&["limits.set", "rate=5"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("error[E_NOT_AVAILABLE]"));
    assert_eq!(ctl(&["frobnicate"]).status.code(), Some(1));
    assert_eq!(
        ctl(&["log.level", "level"]).status.code(),
        Some(1),
        "a word without ="
    );

    let help = ctl(&["help"]);
    assert!(String::from_utf8_lossy(&help.stdout)
        .contains("endpoint.add service=<string> address=<string> [weight=<integer>]"));

    let stop = ctl(&["stop"]);
    assert_eq!(stop.status.code(), Some(0));
    assert_eq!(server.daemon.wait_exit(WAIT), Some(0));

    let gone = ctl(&["status"]);
    assert_eq!(gone.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains("E_UNREACHABLE") && stderr.contains(sock),
        "{stderr}"
    );
}

#[test]
fn a_script_drives_the_socket_with_socat_and_jq() {
    let server = TestServer::start("");
    let script = common::repo().join("tests/control_socat_jq.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(socket(&server))
        .arg(env!("CARGO_BIN_EXE_sssonector"))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

#[test]
fn the_socket_takes_the_configured_mode_from_an_environment_override() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::cert_init(dir.path(), "s", &["c"]);
    let config = common::server_yaml(dir.path(), "");
    let mut daemon =
        common::Daemon::start_with_env(&config, &[("SSSONECTOR_CONTROL__MODE", "0660")]);
    let listening = daemon.wait_for("control socket listening", WAIT);
    assert_eq!(listening["mode"], "0660");
    let mode = std::fs::metadata(dir.path().join("ctl.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
}

/// A file whose `mode` differs from the running one is refused as a whole with
/// `E_RESTART_REQUIRED`, whether the rest of it suits the new mode or not, through
/// `ctl reload` and SIGHUP alike; the server's configuration stays in force.
#[test]
fn a_reload_that_changes_mode_answers_restart_required_and_keeps_the_running_config() {
    let mut server = TestServer::start("");
    let original = std::fs::read_to_string(&server.config).expect("config read");
    let client_file = "mode: client\n\
         network: { address: 10.99.0.2/24 }\n\
         tunnel: { servers: [{ address: \"127.0.0.1:18443\" }], server_name: s, cert_file: c.crt, key_file: c.key, ca_file: ca.crt }\n\
         control: { socket: ctl.sock, idle_timeout: 2s }\n";
    // The operator's edit: only the mode line, the rest still a server's.
    let flipped = original.replace("mode: server", "mode: client");
    let mut ctl = Control::connect(&socket(&server));
    for (n, text) in [client_file.to_string(), flipped.clone()]
        .iter()
        .enumerate()
    {
        std::fs::write(&server.config, text).expect("config rewritten");
        let reply = ctl.call(n as u64, "reload", json!({}));
        assert_eq!(error_code(&reply), "E_RESTART_REQUIRED", "{text}\n{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("mode")),
            "{reply}"
        );
    }
    server.daemon.drain();
    server.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let refused = server
        .daemon
        .wait_for("reload refused, running configuration kept", WAIT);
    assert_eq!(refused["code"], "E_RESTART_REQUIRED", "{refused}");
    let status = ctl.call(9, "status", json!({}));
    assert_eq!(status["data"]["mode"], "server", "{status}");
    assert_eq!(
        status["data"]["components"]["tunnel"], "running",
        "{status}"
    );
    // A later edit of a live key is diffed against the running server config.
    std::fs::write(
        &server.config,
        original.replace("level: info", "level: debug"),
    )
    .expect("config rewritten");
    let reply = ctl.call(10, "reload", json!({}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        reply["data"]["changes"][0]["key"], "logging.level",
        "{reply}"
    );
}

/// The daemon's resident memory, bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status read");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// 300 idle clients: the first `control.max_connections` (64) are served, every one
/// beyond gets one `E_CONN_LIMIT` line and is closed, memory stays bounded, and once a
/// few served clients leave `ctl status` is answered again.
#[test]
fn control_connections_beyond_the_cap_are_refused_and_memory_stays_bounded() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    const CAP: usize = 64;
    const CLIENTS: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    common::cert_init(dir.path(), "s", &["c"]);
    let config = common::server_yaml(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("config read");
    std::fs::write(
        &config,
        text.replace("idle_timeout: 2s", "idle_timeout: 60s"),
    )
    .expect("config written");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for("daemon started", WAIT);
    let path = dir.path().join("ctl.sock");
    let sock = path.to_str().expect("utf-8");
    let ctl = |args: &[&str]| common::run(&[&["ctl", "--socket", sock], args].concat());
    let before = rss_bytes(daemon.pid());

    let mut streams: Vec<UnixStream> = (0..CLIENTS)
        .map(|_| UnixStream::connect(&path).expect("connects"))
        .collect();
    for s in &streams {
        s.set_nonblocking(true).expect("non-blocking");
    }
    // Each stream either has a refusal then end of input, or nothing yet (served).
    let mut refused = vec![false; CLIENTS];
    let deadline = Instant::now() + WAIT;
    while refused.iter().filter(|r| **r).count() < CLIENTS - CAP && Instant::now() < deadline {
        for i in 0..CLIENTS {
            if refused[i] {
                continue;
            }
            let mut got = Vec::new();
            match streams[i].read_to_end(&mut got) {
                Ok(_) => {
                    let reply: Value = serde_json::from_slice(&got)
                        .unwrap_or_else(|e| panic!("client {i}: {e}: {got:?}"));
                    assert_eq!(error_code(&reply), "E_CONN_LIMIT", "client {i}");
                    assert_eq!(got.iter().filter(|&&b| b == b'\n').count(), 1);
                    refused[i] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = rss_bytes(daemon.pid());
    let served = refused.iter().filter(|r| !**r).count();
    assert_eq!(served, CAP, "clients served at once");
    assert!(
        refused[CAP..].iter().all(|r| *r),
        "the first {CAP} are served"
    );
    println!(
        "rss before {} KiB, with {CLIENTS} clients {} KiB",
        before / 1024,
        during / 1024
    );
    assert!(
        during < before + 16 * 1024 * 1024,
        "rss grew from {before} to {during} bytes"
    );

    // Full: the CLI hears the refusal and exits non-zero.
    let full = ctl(&["status"]);
    assert_ne!(full.status.code(), Some(0));
    let said =
        String::from_utf8_lossy(&full.stderr).to_string() + &String::from_utf8_lossy(&full.stdout);
    assert!(said.contains("E_CONN_LIMIT"), "{said}");
    // A few served clients leave; the CLI is answered again.
    streams.truncate(CAP - 4);
    let deadline = Instant::now() + WAIT;
    let mut status = ctl(&["status"]);
    while status.status.code() != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        status = ctl(&["status"]);
    }
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let scrape = ctl(&["--json", "metrics"]);
    let metrics = String::from_utf8_lossy(&scrape.stdout);
    assert!(metrics.contains("E_CONN_LIMIT"), "{metrics}");
}

/// `ctl help` is a two-column table: every command's description starts in the same
/// column, however long its usage.
#[test]
fn ctl_help_puts_every_description_in_one_column() {
    let server = TestServer::start("");
    let sock = socket(&server);
    let out = common::run(&["ctl", "--socket", sock.to_str().expect("utf-8"), "help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut ctl = Control::connect(&sock);
    let help = ctl.call(1, "help", json!({}));
    let commands = help["data"]["commands"].as_array().expect("commands");
    let mut columns = Vec::new();
    for c in commands {
        let (name, summary) = (
            c["name"].as_str().expect("name"),
            c["summary"].as_str().expect("summary"),
        );
        let line = text
            .lines()
            .find(|l| l.trim_start().split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        let at = line.rfind(summary).unwrap_or_else(|| panic!("{line}"));
        assert!(
            line[..at].ends_with("  "),
            "usage and description run together: {line}"
        );
        columns.push((at, line.to_string()));
    }
    let first = columns[0].0;
    for (at, line) in &columns {
        assert_eq!(*at, first, "not aligned:\n{text}\n{line}");
    }
}
