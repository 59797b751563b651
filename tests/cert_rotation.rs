//! Certificate rotation end to end: the server's certificate and the CA bundle are
//! replaced under a running iperf3 transfer through the TUN tunnel, which finishes
//! on the same session, while a new client from the new CA gets in; a broken
//! certificate file is refused and audited with the old one still serving; a
//! client's renewed certificate makes it re-handshake; a new CRL refuses the client
//! it revokes at its next handshake. Certificates come from
//! `sssonector cert init` (the first CA) and the `openssl` CLI (the second).
//!
//! Namespaces: the server in `srv`, clients `c1` and `c2` each in their own, joined
//! to the server by veth pairs 192.168.1.0/24 and 192.168.2.0/24. Inner network
//! 10.77.0.0/24: server .1, c1 .2, c2 .3.

mod common;

use common::openssl_ok as openssl;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{output_within, Lab, Netns};
use common::pair::write;
use common::snmp::{binding, net_snmp, TrapReceiver};
use common::{cert_init, Control, Daemon};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Time allowed for a daemon to reach a lifecycle log line.
const WAIT: Duration = Duration::from_secs(15);
/// The name in the server certificates, old and new.
const SERVER_NAME: &str = "sssonector-test";
/// The server's tunnel port.
const PORT: u16 = 8443;
/// How often the daemons look at their certificate files here.
const CHECK: &str = "200ms";
/// Where snmptrapd listens in the server's namespace.
const TRAP_PORT: u16 = 16299;

/// A new CA `name` (`name.crt`, `name.key`) in `dir`.
fn new_ca(dir: &Path, name: &str) {
    let (crt, key, subj) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &subj,
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate for `cn` (`out.crt`, `out.key` in `dir`) signed by the CA `ca`,
/// with `serial` (hex), for a server or a client, valid `days`.
fn leaf(dir: &Path, ca: &str, out: &str, cn: &str, serial: &str, server: bool, days: u32) {
    let usage = if server { "serverAuth" } else { "clientAuth" };
    let ext = format!(
        "subjectAltName=DNS:{cn}\nextendedKeyUsage={usage}\n\
         basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    );
    std::fs::write(dir.join(format!("{out}.ext")), ext).expect("ext written");
    let (crt, key, csr, extf) = (
        format!("{out}.crt"),
        format!("{out}.key"),
        format!("{out}.csr"),
        format!("{out}.ext"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    let (ca_crt, ca_key, serial, days) = (
        format!("{ca}.crt"),
        format!("{ca}.key"),
        format!("0x{serial}"),
        days.to_string(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            &days,
            "-extfile",
            &extf,
            "-out",
            &crt,
        ],
    );
}

/// Writes `text` to `dir/name` atomically (a rename), as a careful deploy tool would.
fn replace(dir: &Path, name: &str, text: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("temp written");
    std::fs::rename(&tmp, dir.join(name)).expect("renamed into place");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The server on `interface`; `security` continues its `security` map (", key: v"),
/// `extra` is appended YAML.
fn server_yaml(interface: &str, security: &str, extra: &str) -> String {
    format!(
        "mode: server\n\
         network: {{ interface: {interface}, address: 10.77.0.1/24 }}\n\
         tunnel: {{ listen_address: 0.0.0.0, listen_port: {PORT}, cert_file: server.crt, \
         key_file: server.key, ca_file: ca.crt, keepalive: 1s }}\n\
         security: {{ cert_check_interval: {CHECK}, audit_log: server-audit.jsonl{security} }}\n\
         control: {{ socket: server.sock }}\n\
         logging: {{ level: info, format: json }}\n{extra}"
    )
}

/// Client `name` with inner address 10.77.0.`host`, dialing `server`, trusting `ca`.
fn client_yaml(name: &str, interface: &str, host: u8, server: &str, ca: &str) -> String {
    format!(
        "mode: client\n\
         network: {{ interface: {interface}, address: 10.77.0.{host}/24 }}\n\
         tunnel: {{ servers: [ {{ address: \"{server}:{PORT}\" }} ], server_name: {SERVER_NAME}, \
         cert_file: {name}.crt, key_file: {name}.key, ca_file: {ca}, keepalive: 1s }}\n\
         connection: {{ retry_attempts: 3, retry_interval: 200ms, connect_timeout: 2s }}\n\
         security: {{ cert_check_interval: {CHECK}, audit_log: {name}-audit.jsonl }}\n\
         control: {{ socket: {name}.sock }}\n\
         logging: {{ level: info, format: json }}\n"
    )
}

fn ctl(dir: &Path, who: &str, command: &str) -> Value {
    let mut c = Control::connect(&dir.join(format!("{who}.sock")));
    let reply = c.call(1, command, json!({}));
    assert_eq!(reply["ok"], true, "{command} on {who}: {reply}");
    reply["data"].clone()
}

/// The serial of our certificate as `ctl certs` shows it.
fn own_serial(dir: &Path, who: &str) -> String {
    ctl(dir, who, "certs")["own"]["chain"][0]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls `ctl certs` on `who` until our serial is `serial`; panics after `limit`.
fn wait_serial(dir: &Path, who: &str, serial: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if own_serial(dir, who) == serial {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{who} still shows serial {} after {limit:?}: {}",
            own_serial(dir, who),
            ctl(dir, who, "certs")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit events of `file` named `event`.
fn audited(file: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["event"] == event)
        .collect()
}

/// Waits until `file` has an audit event `event`; panics after `limit`.
fn wait_audited(file: &Path, event: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Some(e) = audited(file, event).pop() {
            return e;
        }
        assert!(start.elapsed() < limit, "no {event} in {}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the server's live sessions, by peer.
fn sessions(dir: &Path) -> Vec<(String, Value)> {
    ctl(dir, "server", "connections")["tunnel"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["peer"].as_str().unwrap_or("").to_string(),
                p["id"].clone(),
            )
        })
        .collect()
}

/// Waits until the server's session with `peer` has carried `bytes` inbound.
fn wait_bytes(dir: &Path, peer: &str, bytes: u64, limit: Duration) {
    let start = Instant::now();
    loop {
        let data = ctl(dir, "server", "connections");
        let moved = data["tunnel"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["peer"] == peer)
            .filter_map(|p| p["bytes_in"].as_u64())
            .max()
            .unwrap_or(0);
        if moved >= bytes {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{moved} bytes after {limit:?}: {data}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The certificate serial `openssl` reads from `file`.
fn openssl_serial(dir: &Path, file: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-in", file, "-noout", "-serial"])
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// A server and client `c1` joined by a veth pair, the tunnel up.
struct Rig {
    server: Daemon,
    c1: Daemon,
    srv: Netns,
    cli: Netns,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start(lab: &Lab, server_extra: &str) -> Self {
        Self::start_with(lab, "", server_extra, |_| {})
    }

    /// [`start`](Self::start) with `security` added to the server's `security` map
    /// and `prepare` run on the folder once the certificates are made.
    fn start_with(
        lab: &Lab,
        security: &str,
        server_extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        cert_init(dir.path(), SERVER_NAME, &["c1"]);
        prepare(dir.path());
        let (srv, cli) = (lab.netns("srv"), lab.netns("c1"));
        lab.veth(&srv, "192.168.1.1", &cli, "192.168.1.2");
        let s = write(
            dir.path(),
            "server.yaml",
            &server_yaml(&lab.ifname("ts"), security, server_extra),
        );
        let c = write(
            dir.path(),
            "c1.yaml",
            &client_yaml("c1", &lab.ifname("t1"), 2, "192.168.1.1", "ca.crt"),
        );
        let mut server = Daemon::start_in(srv.name(), &s);
        server.wait_for("listening", WAIT);
        let mut c1 = Daemon::start_in(cli.name(), &c);
        c1.wait_for("tunnel up", WAIT);
        server.find_or_wait("session started", &[("peer", "c1")], WAIT);
        Self {
            server,
            c1,
            srv,
            cli,
            dir,
        }
    }
}

#[test]
fn rotating_the_server_certificate_and_ca_keeps_a_running_transfer_and_admits_the_new_ca() {
    let lab = Lab::new();
    let mut rig = Rig::start(&lab, "");
    let dir = rig.dir.path().to_path_buf();
    let old_serial = own_serial(&dir, "server");
    assert_eq!(old_serial, openssl_serial(&dir, "server.crt"));
    let before = sessions(&dir);
    assert_eq!(before.len(), 1, "{before:?}");

    // The new CA, a server certificate and a client c2 from it, made aside.
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).expect("stage dir");
    new_ca(&stage, "ca2");
    leaf(&stage, "ca2", "server", SERVER_NAME, "5EED0001", true, 20);
    leaf(&stage, "ca2", "c2", "c2", "5EED0002", false, 20);

    // A 6-second transfer through the tunnel, c1 to the server.
    let _iperf = rig.srv.spawn(&["iperf3", "-s", "-1", "-B", "10.77.0.1"]);
    assert!(rig.srv.wait_listening(5201, WAIT), "iperf3 does not listen");
    let mut cmd = rig.cli.command("iperf3");
    cmd.args(["-c", "10.77.0.1", "-t", "6", "-f", "m"]);
    let transfer = std::thread::spawn(move || output_within(cmd, Duration::from_secs(30)));
    wait_bytes(&dir, "c1", 1 << 20, WAIT);

    // Mid-transfer: the bundle holds both CAs (atomically replaced), then the
    // certificate and the key are written one after the other, in place.
    let mut bundle = read(&dir.join("ca.crt"));
    bundle.extend(read(&stage.join("ca2.crt")));
    replace(&dir, "ca.crt", &bundle);
    std::fs::write(dir.join("server.crt"), read(&stage.join("server.crt"))).expect("written");
    std::fs::write(dir.join("server.key"), read(&stage.join("server.key"))).expect("written");
    let took = wait_serial(&dir, "server", "5EED0001", WAIT);
    assert!(
        !transfer.is_finished(),
        "the swap came after the transfer ended"
    );
    eprintln!("server certificate in use {took:?} after the files were written");

    let out = transfer.join().expect("iperf3 thread");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed: {text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.server.log()
    );
    let receiver = text
        .lines()
        .find(|l| l.contains("receiver"))
        .unwrap_or_else(|| panic!("no receiver line: {text}"));
    eprintln!("transfer across the rotation: {receiver}");

    // No reconnect: the same single session, never closed, the client up once.
    assert_eq!(sessions(&dir), before);
    rig.server.drain();
    rig.c1.drain();
    assert_eq!(
        rig.server.seen_msg("session closed"),
        0,
        "{}",
        rig.server.log()
    );
    assert_eq!(rig.server.seen_msg("session started"), 1);
    assert_eq!(rig.c1.seen_msg("tunnel up"), 1, "{}", rig.c1.log());
    // c1 took the new bundle (the CA changed, not its own certificate): no re-handshake.
    wait_audited(&dir.join("c1-audit.jsonl"), "certificates_swapped", WAIT);
    assert_eq!(
        rig.c1
            .seen_msg("re-handshaking with the renewed certificate"),
        0
    );

    // Audited with old and new serials.
    let audit = dir.join("server-audit.jsonl");
    let swaps = audited(&audit, "certificates_swapped");
    let last = swaps.last().expect("a swap audited");
    assert_eq!(last["new"]["serial"], "5EED0001", "{swaps:?}");
    assert!(
        swaps
            .iter()
            .any(|s| s["old"]["serial"] == old_serial.as_str()),
        "{swaps:?}"
    );
    let certs = ctl(&dir, "server", "certs");
    assert_eq!(
        certs["ca"]["certificates"].as_array().map(Vec::len),
        Some(2),
        "{certs}"
    );
    assert_eq!(
        certs["own"]["chain"][0]["sans"][0],
        format!("DNS:{SERVER_NAME}")
    );
    let days = certs["own"]["chain"][0]["days_to_expiry"].as_i64();
    assert!(matches!(days, Some(19 | 20)), "{certs}");
    let metrics = ctl(&dir, "server", "metrics");
    let gauge = &metrics["sssonector_certificate_expiry_seconds"];
    assert!(gauge.to_string().contains("own"), "{gauge}");
    let swapped = &metrics["sssonector_certificate_changes_total"];
    assert!(swapped.to_string().contains("swapped"), "{swapped}");

    // A new client with a certificate from the new CA, trusting only the new CA:
    // it handshakes, so the server presents the new certificate.
    for f in ["c2.crt", "c2.key", "ca2.crt"] {
        std::fs::copy(stage.join(f), dir.join(f)).expect("copied");
    }
    let c2ns = lab.netns("c2");
    lab.veth(&rig.srv, "192.168.2.1", &c2ns, "192.168.2.2");
    let c2_yaml = client_yaml("c2", &lab.ifname("t2"), 3, "192.168.2.1", "ca2.crt");
    let c2_config = write(&dir, "c2.yaml", &c2_yaml);
    let mut c2 = Daemon::start_in(c2ns.name(), &c2_config);
    c2.wait_for("tunnel up", WAIT);
    rig.server
        .find_or_wait("session started", &[("peer", "c2")], WAIT);
    assert!(c2ns.ping("10.77.0.1", 1), "c2 cannot reach the server");

    // A broken certificate: refused, logged, audited; the one in use stays and a
    // client still connects. (Writing the certificate before its key above may have
    // been refused once already.)
    rig.server.drain();
    let refusals = rig
        .server
        .seen_msg("certificates refused, the ones in use stay");
    let audited_refusals = audited(&audit, "certificates_refused").len();
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .expect("written");
    let refused = rig
        .server
        .wait_for("certificates refused, the ones in use stay", WAIT);
    assert_eq!(refused["code"], "E_TLS_CONFIG", "{refused}");
    let start = Instant::now();
    while audited(&audit, "certificates_refused").len() == audited_refusals {
        assert!(start.elapsed() < WAIT, "refusal not audited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let audit_refused = audited(&audit, "certificates_refused").pop().expect("one");
    assert_eq!(audit_refused["code"], "E_TLS_CONFIG");
    assert!(
        !audit_refused.to_string().contains("PRIVATE"),
        "{audit_refused}"
    );
    let certs = ctl(&dir, "server", "certs");
    assert_eq!(certs["own"]["chain"][0]["serial"], "5EED0001");
    assert!(certs["last_refusal"]["reason"].is_string(), "{certs}");
    drop(c2);
    rig.server
        .find_or_wait("session closed", &[("peer", "c2")], WAIT);
    let mut c2 = Daemon::start_in(c2ns.name(), &c2_config);
    c2.wait_for("tunnel up", WAIT);
    // One refusal, however many ticks passed.
    rig.server.drain();
    assert_eq!(
        rig.server
            .seen_msg("certificates refused, the ones in use stay"),
        refusals + 1
    );
}

#[test]
fn a_client_with_a_renewed_certificate_re_handshakes() {
    let lab = Lab::new();
    let mut rig = Rig::start(&lab, "");
    let dir = rig.dir.path().to_path_buf();
    let before = sessions(&dir);
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).expect("stage dir");
    std::fs::copy(dir.join("ca.crt"), stage.join("ca.crt")).expect("copied");
    std::fs::copy(dir.join("ca.key"), stage.join("ca.key")).expect("copied");
    leaf(&stage, "ca", "c1", "c1", "C1A2", false, 60);

    // The key first: the old certificate does not match it, a refusal; then the
    // certificate, and the pair goes in.
    std::fs::write(dir.join("c1.key"), read(&stage.join("c1.key"))).expect("written");
    std::fs::write(dir.join("c1.crt"), read(&stage.join("c1.crt"))).expect("written");
    let took = wait_serial(&dir, "c1", "C1A2", WAIT);
    rig.c1
        .wait_for("re-handshaking with the renewed certificate", WAIT);
    rig.c1.wait_for("tunnel up", WAIT);
    eprintln!("client certificate in use {took:?} after the files were written");
    // The server's side: the old session ended, a new one took its place (its log
    // may trail the client's "tunnel up").
    let start = Instant::now();
    let after = loop {
        let now = sessions(&dir);
        if now.len() == 1 && now != before {
            break now;
        }
        assert!(
            start.elapsed() < WAIT,
            "sessions {now:?}\n{}",
            rig.server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(after, before, "a new session");
    assert!(
        rig.cli.ping("10.77.0.1", 1),
        "no tunnel after the re-handshake"
    );
    let swap = wait_audited(&dir.join("c1-audit.jsonl"), "certificates_swapped", WAIT);
    assert_eq!(swap["new"]["serial"], "C1A2", "{swap}");
}

/// `sssCertDaysToExpiry.0` from the server's agent.
fn snmp_days(srv: &Netns) -> Option<i64> {
    let out = net_snmp(srv, "snmpget")
        .args([
            "-v2c",
            "-c",
            "public",
            "-Oqv",
            "127.0.0.1:1161",
            "SSSONECTOR-MIB::sssCertDaysToExpiry.0",
        ])
        .output()
        .expect("snmpget runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|d| d.parse().ok())
}

#[test]
fn a_renewal_that_expires_soon_is_reported_by_metric_snmp_object_and_trap() {
    let monitor = format!(
        "monitor: {{ snmp: {{ enabled: true, listen: \"127.0.0.1:1161\", community: public, \
         trap_targets: [ {{ address: \"127.0.0.1:{TRAP_PORT}\" }} ] }} }}\n"
    );
    let lab = Lab::new();
    let rig = Rig::start(&lab, &monitor);
    let dir = rig.dir.path().to_path_buf();
    let mut traps = TrapReceiver::start(&rig.srv, &dir, "", &[TRAP_PORT]);
    // `cert init` certificates live 397 days: far from the 30-day warning.
    let days = snmp_days(&rig.srv);
    assert!(matches!(days, Some(396 | 397)), "{days:?}");

    // Renewed by a careless job: valid for 5 days only.
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).expect("stage dir");
    std::fs::copy(dir.join("ca.crt"), stage.join("ca.crt")).expect("copied");
    std::fs::copy(dir.join("ca.key"), stage.join("ca.key")).expect("copied");
    leaf(&stage, "ca", "server", SERVER_NAME, "5D4E", true, 5);
    replace(&dir, "server.key", &read(&stage.join("server.key")));
    replace(&dir, "server.crt", &read(&stage.join("server.crt")));
    wait_serial(&dir, "server", "5D4E", WAIT);

    // At once, not at the next hourly check: whole days left, 4 (5 less the seconds
    // since openssl signed), or 5 within its second.
    let trap = traps.next("sssCertExpiring", WAIT);
    let (_, subject) = binding(&trap, "sssNotifyCertSubject");
    assert!(subject.contains(SERVER_NAME), "{trap}");
    let (_, left) = binding(&trap, "sssNotifyCertDaysLeft");
    assert!(left == "4 days" || left == "5 days", "{trap}");
    let days = snmp_days(&rig.srv);
    assert!(matches!(days, Some(4 | 5)), "{days:?}");
    let metrics = ctl(&dir, "server", "metrics");
    let own = metrics["sssonector_certificate_expiry_seconds"]["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["labels"]["cert"] == "own")
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no own sample: {metrics}"));
    assert!((4.0 * 86_400.0..=5.0 * 86_400.0).contains(&own), "{own}");
    let certs = ctl(&dir, "server", "certs");
    let days = certs["own"]["chain"][0]["days_to_expiry"].as_i64();
    assert!(matches!(days, Some(4 | 5)), "{certs}");

    // The watcher holds neither the audit nor the notification sender past a stop:
    // the drain ends with the sessions, long before its 30 s limit.
    let mut rig = rig;
    let stopping = Instant::now();
    rig.server.signal(Signal::SIGTERM);
    assert_eq!(rig.server.wait_exit(Duration::from_secs(5)), Some(0));
    eprintln!("server stopped in {:?}", stopping.elapsed());
}

/// Runs `openssl ca` in `dir` with a minimal CA database (made on first use) for
/// the `cert init` CA: `args` after the configuration and the CA's files.
fn openssl_ca(dir: &Path, args: &[&str]) {
    let conf = dir.join("ca.cnf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             default_md = sha256\ndefault_crl_days = 30\n",
        )
        .expect("ca.cnf written");
        std::fs::write(dir.join("index.txt"), "").expect("index written");
        std::fs::write(dir.join("crlnumber"), "1000\n").expect("crlnumber written");
    }
    let mut all = vec![
        "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt",
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

#[test]
fn a_new_crl_refuses_the_revoked_client_at_its_next_handshake() {
    let lab = Lab::new();
    let mut rig = Rig::start_with(&lab, ", crl_file: crl.pem", "", |dir| {
        openssl_ca(dir, &["-gencrl", "-out", "crl.pem"]);
    });
    let dir = rig.dir.path().to_path_buf();
    let certs = ctl(&dir, "server", "certs");
    assert_eq!(certs["crl"]["lists"][0]["revoked"], 0, "{certs}");

    // c1 is revoked: the new list goes in, c1's live session is left alone.
    openssl_ca(&dir, &["-revoke", "c1.crt"]);
    openssl_ca(&dir, &["-gencrl", "-out", ".crl.pem.new"]);
    std::fs::rename(dir.join(".crl.pem.new"), dir.join("crl.pem")).expect("renamed");
    let swapped = rig
        .server
        .find_or_wait("certificates swapped", &[("files", "crl")], WAIT);
    assert!(swapped["new_serial"].is_string(), "{swapped}");
    let certs = ctl(&dir, "server", "certs");
    assert_eq!(certs["crl"]["lists"][0]["revoked"], 1, "{certs}");
    assert_eq!(sessions(&dir).len(), 1);
    assert!(rig.cli.ping("10.77.0.1", 1), "the live session was cut");

    // Its next handshake is refused: the CRL in use revokes it.
    rig.c1.signal(Signal::SIGKILL);
    // Killed by a signal: no exit code; this returns once it is gone.
    rig.c1.wait_exit(WAIT);
    rig.c1 = Daemon::start_in(rig.cli.name(), &dir.join("c1.yaml"));
    let failed = rig.server.wait_for("handshake failed", WAIT);
    assert_eq!(failed["code"], "E_TLS_UNTRUSTED", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("evoked")),
        "{failed}"
    );
}

#[test]
fn a_reload_that_names_other_files_moves_the_watch_to_them() {
    let lab = Lab::new();
    let rig = Rig::start(&lab, "");
    let dir = rig.dir.path().to_path_buf();
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).expect("stage dir");
    std::fs::copy(dir.join("ca.crt"), stage.join("ca.crt")).expect("copied");
    std::fs::copy(dir.join("ca.key"), stage.join("ca.key")).expect("copied");
    leaf(&stage, "ca", "server2", SERVER_NAME, "AB01", true, 30);
    leaf(&stage, "ca", "server3", SERVER_NAME, "AB02", true, 30);
    for f in ["server2.crt", "server2.key"] {
        std::fs::copy(stage.join(f), dir.join(f)).expect("copied");
    }
    let config = dir.join("server.yaml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "cert_file: server.crt, key_file: server.key",
        "cert_file: server2.crt, key_file: server2.key",
    );
    std::fs::write(&config, text).expect("config written");
    let reply = ctl(&dir, "server", "reload");
    assert!(reply.to_string().contains("tunnel.cert_file"), "{reply}");
    wait_serial(&dir, "server", "AB01", WAIT);
    let certs = ctl(&dir, "server", "certs");
    let file = certs["own"]["file"].as_str().unwrap_or_default();
    assert!(file.ends_with("server2.crt"), "{certs}");
    assert_eq!(certs["swaps"], 0, "a reload is not a swap: {certs}");

    // The old file is not watched any more; the new one is.
    std::fs::write(dir.join("server.crt"), "not a certificate\n").expect("written");
    replace(&dir, "server2.key", &read(&stage.join("server3.key")));
    replace(&dir, "server2.crt", &read(&stage.join("server3.crt")));
    wait_serial(&dir, "server", "AB02", WAIT);
    // (A refusal of the new key beside the old certificate may come between.)
    let certs = ctl(&dir, "server", "certs");
    let reason = certs["last_refusal"]["reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("/server.crt"), "{certs}");
    assert!(rig.cli.ping("10.77.0.1", 1), "the live session was cut");
}
