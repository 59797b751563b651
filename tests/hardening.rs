//! Least privilege and the audit trail's file: the daemon drops to `security.user`
//! keeping CAP_NET_ADMIN alone and goes on serving and reloading; the shipped systemd
//! unit passes `systemd-analyze verify` and keeps its exposure rating; the audit log
//! is owner-only and follows a real logrotate.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::netns::Lab;
use common::pair::{
    client_yaml, server_yaml, write, CLIENT_UNDERLAY, SERVER_INNER, SERVER_NAME, SERVER_UNDERLAY,
    WAIT,
};
use common::{cert_init, Control, Daemon, TestServer};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;
/// CAP_NET_ADMIN is capability 12 (linux/capability.h): the one bit left.
const NET_ADMIN_ONLY: &str = "0000000000001000";

/// The `key:` line of `/proc/<pid>/status` (or of a thread's), its value trimmed.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_owned()
}

fn audit_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

fn chown_tree(dir: &Path) {
    let out = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(dir)
        .output()
        .expect("chown runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_server_drops_to_its_user_keeping_net_admin_only_and_goes_on_serving() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let cli = lab.netns("cli");
    lab.veth(&srv, SERVER_UNDERLAY, &cli, CLIENT_UNDERLAY);
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), SERVER_NAME, &["c1"]);
    let interface = lab.ifname("ts");
    let service = "endpoints: [ { address: \"127.0.0.1:9\" } ]";
    let base = server_yaml(&interface, "svc", service, "");
    let text = base.replace(
        "security: { allowed_clients: [c1], audit_log: server-audit.jsonl }",
        "security: { allowed_clients: [c1], user: nobody, group: nogroup, audit_log: audit.jsonl }",
    );
    assert_ne!(text, base, "the security line is where pair.rs writes it");
    let server_config = write(dir.path(), "server.yaml", &text);
    let client_config = write(
        dir.path(),
        "c1.yaml",
        &client_yaml(&lab.ifname("tc"), "svc", ""),
    );
    // After the drop the daemon reads its configuration and TLS files (reload) as
    // `nobody`: an operator hands them over the same way.
    chown_tree(dir.path());

    let mut server = Daemon::start_in(srv.name(), &server_config);
    let dropped = server.wait_for("privileges dropped", WAIT);
    assert_eq!(dropped["user"], "nobody", "{dropped}");
    assert_eq!(dropped["kept"], "CAP_NET_ADMIN", "{dropped}");
    let mut client = Daemon::start_in(cli.name(), &client_config);
    client.wait_for("tunnel up", WAIT);
    server.find_or_wait("session started", &[("peer", "c1")], WAIT);
    assert!(
        cli.ping_until(SERVER_INNER, WAIT).is_some(),
        "no ping through the tunnel after the drop\nserver: {}\nclient: {}",
        server.log(),
        client.log()
    );

    // Every id is nobody's; the process holds CAP_NET_ADMIN alone, also in its
    // bounding set; the data threads hold nothing.
    let pid = server.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let all = |id: u32| format!("{id}\t{id}\t{id}\t{id}");
    assert_eq!(status_field(&status, "Uid"), all(NOBODY));
    assert_eq!(status_field(&status, "Gid"), all(NOBODY));
    assert_eq!(status_field(&status, "Groups"), NOBODY.to_string());
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, set), NET_ADMIN_ONLY, "{set}");
    }
    let mut data_threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == "sss-data" {
            data_threads += 1;
            let s = std::fs::read_to_string(task.join("status")).expect("thread status");
            assert_eq!(status_field(&s, "CapEff"), "0000000000000000");
            assert_eq!(status_field(&s, "Uid"), all(NOBODY));
        }
    }
    assert!(data_threads > 0, "no data thread found");

    let socket = dir.path().join("server.sock");
    let status = Control::connect(&socket).call(1, "status", json!({}));
    assert_eq!(status["data"]["user"]["name"], "nobody", "{status}");

    // A reload as nobody: the files are read, and a new route is added by `ip`,
    // which gets CAP_NET_ADMIN from the ambient set.
    let routed = text.replace(
        &format!("address: {SERVER_INNER}/24 }}"),
        &format!("address: {SERVER_INNER}/24, routes: [10.201.0.0/24] }}"),
    );
    assert_ne!(routed, text);
    std::fs::write(&server_config, routed).expect("config rewritten");
    let reply = Control::connect(&socket).call(2, "reload", json!({}));
    assert_eq!(reply["ok"], true, "{reply}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = srv.exec_ok(&["ip", "route", "show", "10.201.0.0/24"]);
        let routes = String::from_utf8_lossy(&out.stdout).into_owned();
        if routes.contains(&format!("dev {interface}")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "route not added as nobody: {routes:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cli.ping(SERVER_INNER, 2),
        "the tunnel went down after the reload"
    );

    let audit = dir.path().join("audit.jsonl");
    let meta = std::fs::metadata(&audit).expect("audit file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    client.signal(Signal::SIGTERM);
    assert_eq!(client.wait_exit(WAIT), Some(0), "{}", client.log());
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(WAIT), Some(0), "{}", server.log());
    let events: Vec<String> = audit_events(&audit)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    for event in [
        "daemon_started",
        "privileges_dropped",
        "config_reloaded",
        "daemon_stopping",
    ] {
        assert!(
            events.iter().any(|e| e == event),
            "{event} missing: {events:?}"
        );
    }
}

#[test]
fn an_unknown_user_refuses_to_start_with_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "s", &["c"]);
    let config = common::server_yaml(dir.path(), "security: { user: no-such-user-sss }\n");
    let mut daemon = Daemon::start(&config);
    let refused = daemon.wait_for("daemon cannot start", WAIT);
    assert_eq!(refused["code"], "E_PRIVILEGES", "{refused}");
    assert_ne!(daemon.wait_exit(WAIT), Some(0));
}

#[test]
fn the_audit_log_is_owner_only_and_follows_logrotate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.jsonl");
    // Made wider by hand before the start: the daemon narrows it.
    std::fs::write(&audit, "").expect("audit file");
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut server =
        TestServer::start(&format!("security: {{ audit_log: {} }}\n", audit.display()));
    let mode = |p: &Path| std::fs::metadata(p).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode(&audit), 0o600);

    let conf = dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 2\n  create 0600 root root\n  missingok\n  postrotate\n    kill -HUP {}\n  endscript\n}}\n",
            audit.display(),
            server.daemon.pid()
        ),
    )
    .expect("logrotate config");
    let out = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate runs: apt-get install -y logrotate");
    assert!(out.status.success(), "logrotate: {out:?}");
    server.daemon.wait_for("configuration reloaded", WAIT);
    assert_eq!(server.stop(), Some(0));

    let rotated = dir.path().join("audit.jsonl.1");
    let old: Vec<Value> = audit_events(&rotated);
    let new: Vec<Value> = audit_events(&audit);
    let names = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&old), ["daemon_started"]);
    assert_eq!(names(&new), ["config_reloaded", "daemon_stopping"]);
    assert_eq!(mode(&audit), 0o600);
    assert!(new[0]["restart_needed"].is_array(), "{}", new[0]);
}

#[test]
fn the_shipped_systemd_unit_verifies_and_keeps_its_exposure_rating() {
    let unit = std::fs::read_to_string(common::repo().join("config/deploy/sssonector.service"))
        .expect("unit file");
    let dir = tempfile::tempdir().expect("temp dir");
    // `verify` checks that the programs exist: point it at the one just built.
    let path = dir.path().join("sssonector.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/sssonector",
            env!("CARGO_BIN_EXE_sssonector"),
        ),
    )
    .expect("unit copy");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs: apt-get install -y systemd");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // 2.0 "OK" on systemd 252; --threshold fails above 20 (tenths).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        security.status.success(),
        "exposure rose above 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
}
