//! Access control end to end: a server in its own namespace with `allowed_clients`,
//! `deny_cidrs`, a CRL, per-service `allowed_clients` and layer-3
//! `client_destinations`; an allowed client `c1` whose tunnel must keep working
//! throughout; and refused peers, each from its own namespace and address, with
//! certificates made by the openssl CLI with the CA key `cert init` wrote (expired,
//! without the clientAuth EKU, revoked by an `openssl ca -gencrl` CRL, valid but
//! unlisted) or from a denied network. Each refusal must leave exactly the right
//! audit record on the server while the refused client learns only a generic reason.

mod common;

use common::openssl_ok as openssl;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{Lab, Netns};
use common::{cert_init, Control, Daemon};
use serde_json::{json, Value};

/// Time allowed for a daemon to reach a log line, or the audit log a record.
const WAIT: Duration = Duration::from_secs(15);
/// The name `cert init` puts in the server certificate.
const SERVER_NAME: &str = "sssonector-test";
/// The server's tunnel port.
const PORT: u16 = 8443;
/// The server's inner address: the one destination `c1` may reach.
const SERVER_INNER: &str = "10.77.0.1";
/// A second address on the server's TUN device that `c1` may not reach.
const DENIED_INNER: &str = "10.77.0.50";
/// Where `c1` offers the service `web`, in its namespace.
const WEB: &str = "127.0.0.1:7001";

/// An `openssl ca` set up over the CA `cert init` made in `dir`.
struct Ca {
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Self {
        let ca = dir.join("ca-db");
        std::fs::create_dir_all(ca.join("new")).expect("ca folder");
        std::fs::write(ca.join("index.txt"), "").expect("index");
        std::fs::write(ca.join("serial"), "5000\n").expect("serial");
        std::fs::write(ca.join("crlnumber"), "1000\n").expect("crlnumber");
        let cnf = format!(
            "[ca]\ndefault_ca = own\n\
             [own]\ndir = {ca}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/new\n\
             certificate = {d}/ca.crt\nprivate_key = {d}/ca.key\nserial = $dir/serial\n\
             crlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_days = 30\n\
             default_crl_days = 30\npolicy = any\nunique_subject = no\n\
             [any]\ncommonName = supplied\n\
             [client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = clientAuth\n\
             [server_only]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
            ca = ca.display(),
            d = dir.display()
        );
        std::fs::write(ca.join("ca.cnf"), cnf).expect("ca.cnf");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Issues `<name>.crt`/`.key` (CN `name`) with the extensions section `ext`;
    /// `dates` are openssl's `-startdate`/`-enddate`, or `None` for 30 days from now.
    fn issue(&self, name: &str, ext: &str, dates: Option<(&str, &str)>) {
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca-db/ca.cnf",
            "-extensions",
            ext,
            "-in",
            &csr,
            "-out",
            &crt,
        ];
        if let Some((start, end)) = dates {
            args.extend(["-startdate", start, "-enddate", end]);
        }
        openssl(&self.dir, &args);
    }

    /// Revokes `<name>.crt`.
    fn revoke(&self, name: &str) {
        let crt = format!("{name}.crt");
        openssl(
            &self.dir,
            &["ca", "-config", "ca-db/ca.cnf", "-revoke", &crt],
        );
    }

    /// Writes the CRL to `crl.pem`.
    fn gencrl(&self) {
        openssl(
            &self.dir,
            &[
                "ca",
                "-config",
                "ca-db/ca.cnf",
                "-gencrl",
                "-out",
                "crl.pem",
            ],
        );
    }
}

/// A client daemon `name` (certificate `<name>.crt`) with TUN `interface` and
/// inner address `inner`, dialing `server`; `extra` is appended YAML.
fn client_yaml(dir: &Path, name: &str, interface: &str, inner: &str, server: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let services = if name == "c1" {
        format!("services: [ {{ name: web, listen: \"{WEB}\" }} ]\n")
    } else {
        String::new()
    };
    let text = format!(
        "mode: client\n\
         network: {{ interface: {interface}, address: {inner}/24 }}\n\
         tunnel: {{ servers: [ {{ address: \"{server}:{PORT}\" }} ], server_name: {SERVER_NAME}, \
         cert_file: {name}.crt, key_file: {name}.key, ca_file: ca.crt, keepalive: 1s }}\n\
         connection: {{ retry_attempts: 1, retry_interval: 500ms, connect_timeout: 2s }}\n\
         {services}\
         control: {{ socket: {name}.sock }}\n\
         logging: {{ level: info, format: json }}\n"
    );
    std::fs::write(&path, text).expect("client config written");
    path
}

/// The server and `c1`, up, with the folder holding their files; fields drop in
/// order, daemons before namespaces.
struct Site {
    server: Daemon,
    c1: Daemon,
    server_tun: String,
    srv: Netns,
    cli: Netns,
    ca: Ca,
    dir: tempfile::TempDir,
}

impl Site {
    /// Certificates (`c1` and the unlisted `stranger` from `cert init`, the rest
    /// from `openssl ca`), the CRL revoking `revoked`, the server and `c1`.
    fn start(lab: &Lab) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        cert_init(d, SERVER_NAME, &["c1", "stranger"]);
        let ca = Ca::new(d);
        ca.issue(
            "expired",
            "client",
            Some(("20200101000000Z", "20200201000000Z")),
        );
        ca.issue("noauth", "server_only", None);
        ca.issue("revoked", "client", None);
        ca.issue("denied", "client", None);
        ca.revoke("revoked");
        ca.gencrl();
        // `foreign` comes from another CA altogether.
        let other = tempfile::tempdir().expect("temp dir");
        cert_init(other.path(), SERVER_NAME, &["foreign"]);
        for f in ["foreign.crt", "foreign.key"] {
            std::fs::copy(other.path().join(f), d.join(f)).expect("copied");
        }
        let srv = lab.netns("srv");
        let cli = lab.netns("cli");
        lab.veth(&srv, "192.168.1.1", &cli, "192.168.1.2");
        let server_tun = lab.ifname("ts");
        let audit = d.join("audit.log");
        let server_yaml = format!(
            "mode: server\n\
             network: {{ interface: {server_tun}, address: {SERVER_INNER}/24 }}\n\
             tunnel: {{ listen_address: 0.0.0.0, listen_port: {PORT}, cert_file: server.crt, \
             key_file: server.key, ca_file: ca.crt, keepalive: 1s }}\n\
             security: {{ allowed_clients: [c1, expired, noauth, revoked, denied], \
             deny_cidrs: [192.168.6.0/24], crl_file: {crl}, audit_log: {audit}, \
             client_destinations: {{ c1: [{SERVER_INNER}/32] }} }}\n\
             services: [ {{ name: web, endpoints: [ {{ address: \"127.0.0.1:7100\" }} ], \
             allowed_clients: [somebody-else] }} ]\n\
             control: {{ socket: server.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            crl = d.join("crl.pem").display(),
            audit = audit.display(),
        );
        let server_path = d.join("server.yaml");
        std::fs::write(&server_path, server_yaml).expect("server config written");
        let mut server = Daemon::start_in(srv.name(), &server_path);
        server.wait_for("listening", WAIT);
        let c1_path = client_yaml(d, "c1", &lab.ifname("tc"), "10.77.0.2", "192.168.1.1");
        let mut c1 = Daemon::start_in(cli.name(), &c1_path);
        c1.wait_for("tunnel up", WAIT);
        server.find_or_wait("session started", &[("peer", "c1")], WAIT);
        if cli.ping_until(SERVER_INNER, WAIT).is_none() {
            panic!(
                "c1 does not reach the server\nserver:\n{}\nc1:\n{}",
                server.log(),
                c1.log()
            );
        }
        Self {
            server,
            c1,
            server_tun,
            srv,
            cli,
            ca,
            dir,
        }
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// The audit records that `pick` selects, once there is one (within [`WAIT`]).
    fn audit_wait(&self, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<Value> = self.audit().into_iter().filter(|r| pick(r)).collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `c1` still has its first tunnel: it answers pings and never said "tunnel up"
    /// twice.
    fn c1_kept_its_tunnel(&mut self) {
        assert!(
            self.cli.ping(SERVER_INNER, 2),
            "c1's tunnel stopped working"
        );
        self.c1.drain();
        assert_eq!(self.c1.seen_msg("tunnel up"), 1, "c1 reconnected");
    }

    fn ctl(&self, who: &str, command: &str) -> Value {
        let mut c = Control::connect(&self.dir.path().join(format!("{who}.sock")));
        let reply = c.call(1, command, json!({}));
        assert_eq!(reply["ok"], true, "{command} on {who}: {reply}");
        reply["data"].clone()
    }
}

/// Whether an audit record's `remote` ("ip:port") comes from `ip`.
fn from_ip(record: &Value, ip: &str) -> bool {
    record["remote"]
        .as_str()
        .and_then(|r| r.rsplit_once(':'))
        .is_some_and(|(host, _)| host == ip)
}

/// Words a refused client must never be told.
const SPECIFIC: [&str; 9] = [
    "expir",
    "revok",
    "purpose",
    "clientauth",
    "client_auth",
    "allowed_clients",
    "deny",
    "cidr",
    "unknownca",
];

#[test]
fn refused_peers_leave_the_right_audit_record_and_c1_keeps_its_tunnel() {
    let lab = Lab::new();
    let mut site = Site::start(&lab);
    // (certificate, network, audit event, audit reason)
    let peers = [
        ("expired", 2, "handshake_refused", "certificate_expired"),
        (
            "noauth",
            3,
            "handshake_refused",
            "certificate_no_client_auth",
        ),
        ("revoked", 4, "handshake_refused", "certificate_revoked"),
        ("stranger", 5, "session_refused", "name_not_allowed"),
        ("denied", 6, "session_refused", "source_denied"),
        ("foreign", 7, "handshake_refused", "unknown_ca"),
    ];
    for (name, net, event, reason) in peers {
        let ns = lab.netns(name);
        let (server_ip, ip) = (format!("192.168.{net}.1"), format!("192.168.{net}.2"));
        lab.veth(&site.srv, &server_ip, &ns, &ip);
        let config = client_yaml(
            site.dir.path(),
            name,
            &lab.ifname(&format!("t{net}")),
            &format!("10.77.0.{}", 10 + net),
            &server_ip,
        );
        let mut client = Daemon::start_in(ns.name(), &config);
        // A Reject is "tunnel refused"; a TLS or TCP failure "dial failed".
        let said = if name == "stranger" {
            "tunnel refused"
        } else {
            "dial failed"
        };
        let failed = client.wait_for(said, WAIT);
        let told = failed["reason"].as_str().unwrap_or_default().to_lowercase();
        for word in SPECIFIC {
            assert!(!told.contains(word), "{name} was told {told:?} ({word:?})");
        }
        if name == "stranger" {
            assert_eq!(failed["code"], "E_ACCESS_DENIED", "{failed}");
            assert_eq!(told, "access denied");
        }
        let records = site.audit_wait(|r| {
            from_ip(r, &ip) && r["event"].as_str().is_some_and(|e| e.ends_with("_refused"))
        });
        assert!(!records.is_empty(), "no audit record for {name}");
        for r in &records {
            assert_eq!(
                (r["event"].as_str(), r["reason"].as_str()),
                (Some(event), Some(reason)),
                "{name}: {r}"
            );
            if event == "handshake_refused" || name == "stranger" {
                assert!(
                    r["subject"]
                        .as_str()
                        .is_some_and(|s| s.contains(&format!("CN={name}"))),
                    "{name}: no subject in {r}"
                );
                assert!(r["serial"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
            }
        }
        drop(client);
        site.c1_kept_its_tunnel();
        site.server.drain();
        eprintln!("{name}: refused as {event}/{reason}, told {told:?}");
    }
    // The accepted session was audited with its identity, rule and serial.
    let started = site.audit_wait(|r| r["event"] == "session_started");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["peer"], "c1");
    assert_eq!(started[0]["rule"], "c1");
    assert!(started[0]["serial"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn a_service_and_a_destination_outside_c1s_lists_are_refused_and_counted() {
    let lab = Lab::new();
    let mut site = Site::start(&lab);
    // Layer 4: `web` admits only `somebody-else`; c1's stream is reset at once.
    let got = site
        .cli
        .thread(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(WEB).expect("c1 offers web");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout set");
            let _ = s.write_all(b"hello");
            let mut buf = [0u8; 16];
            s.read(&mut buf).map_err(|e| e.kind())
        })
        .join()
        .expect("client thread");
    assert!(
        matches!(got, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the refused stream ends at once: {got:?}"
    );
    let refused = site.audit_wait(|r| r["event"] == "stream_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let r = &refused[0];
    assert_eq!(
        (&r["peer"], &r["service"], &r["reason"], &r["code"]),
        (
            &json!("c1"),
            &json!("web"),
            &json!("service_not_allowed"),
            &json!("E_ACCESS_DENIED")
        ),
        "{r}"
    );
    let status = site.ctl("server", "status");
    assert_eq!(
        status["tunnel"]["streams"]["refused"]["E_ACCESS_DENIED"], 1,
        "{status}"
    );

    // Layer 3: c1 may reach SERVER_INNER only; DENIED_INNER is the server's too.
    site.srv.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{DENIED_INNER}/32"),
        "dev",
        &site.server_tun,
    ]);
    assert_eq!(
        site.cli.ping_replies(DENIED_INNER, 3),
        0,
        "denied destination answered"
    );
    assert!(site.cli.ping(SERVER_INNER, 2), "allowed destination");
    let status = site.ctl("server", "status");
    let dropped = status["tunnel"]["totals"]["drops"]["destination_denied"]
        .as_u64()
        .unwrap_or_else(|| panic!("no destination_denied drops in {status}"));
    assert!(dropped >= 3, "{dropped} drops counted");
    let denied = site.audit_wait(|r| r["event"] == "packet_denied");
    assert!(!denied.is_empty(), "no packet_denied record");
    assert_eq!(denied[0]["peer"], "c1", "{}", denied[0]);
    assert_eq!(denied[0]["last_destination"], DENIED_INNER, "{}", denied[0]);
    // Rate-limited: three denied pings within 10 s make one record, not three.
    assert_eq!(denied.len(), 1, "{denied:?}");

    // A reload widens c1's list: the live session takes it, no reconnect.
    let path = site.dir.path().join("server.yaml");
    let text = std::fs::read_to_string(&path).expect("server config");
    let wider = format!("c1: [{SERVER_INNER}/32, {DENIED_INNER}/32]");
    let text = text.replace(&format!("c1: [{SERVER_INNER}/32]"), &wider);
    std::fs::write(&path, text).expect("server config written");
    site.ctl("server", "reload");
    assert!(
        site.cli.ping_until(DENIED_INNER, WAIT).is_some(),
        "the reloaded list applies to the live session"
    );
    site.c1_kept_its_tunnel();
    let _ = &site.ca;
}
