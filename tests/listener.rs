//! The server's listener under a client that moves and under floods: a client that
//! comes back from a new address takes its inner address over at once while another
//! identity is still refused; `connection.max_connections` refuses the tunnel beyond
//! it with `E_CONN_LIMIT`; a flood of half-open connections costs bounded log lines
//! and memory, and a handshake that times out is audited.
//!
//! A server runs in namespace `srv`, joined to `cli` and `cli2` by veth pairs; the
//! flood comes from threads of this test process living in `srv`.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{Lab, Netns};
use common::{cert_init, Control, Daemon};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Time allowed for a daemon to reach a log line, or the audit log a record.
const WAIT: Duration = Duration::from_secs(15);
/// The server's tunnel port.
const PORT: u16 = 8443;
/// The server's inner address.
const SERVER_INNER: &str = "10.78.0.1";
/// The inner address both clients ask for.
const CLIENT_INNER: &str = "10.78.0.2";
/// The server's addresses on its two veth pairs.
const SRV_A: &str = "192.168.31.1";
const SRV_B: &str = "192.168.32.1";

/// The server, its namespaces and its folder; fields drop in order, daemons first.
struct Site {
    server: Daemon,
    srv: Netns,
    cli: Netns,
    cli2: Netns,
    /// The `cli` end of the first veth pair, to cut `cli` off.
    cli_link: String,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Site {
    /// Certificates for `c1` and `c2`, and a server with `extra` YAML in its
    /// `connection` section.
    fn start(connection: &str) -> Self {
        let lab = Lab::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        cert_init(d, "s", &["c1", "c2"]);
        let srv = lab.netns("srv");
        let cli = lab.netns("cli");
        let cli2 = lab.netns("cli2");
        let link = lab.veth(&srv, SRV_A, &cli, "192.168.31.2");
        lab.veth(&srv, SRV_B, &cli2, "192.168.32.2");
        let tun = lab.ifname("ts");
        let yaml = format!(
            "mode: server\n\
             network: {{ interface: {tun}, address: {SERVER_INNER}/24 }}\n\
             tunnel: {{ listen_address: 0.0.0.0, listen_port: {PORT}, cert_file: server.crt, \
             key_file: server.key, ca_file: ca.crt }}\n\
             connection: {{ {connection} }}\n\
             security: {{ allowed_clients: [c1, c2], audit_log: {audit} }}\n\
             control: {{ socket: server.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            audit = d.join("audit.log").display(),
        );
        let path = d.join("server.yaml");
        std::fs::write(&path, yaml).expect("server config written");
        let mut server = Daemon::start_in(srv.name(), &path);
        server.wait_for("listening", WAIT);
        Self {
            server,
            srv,
            cli,
            cli2,
            cli_link: link.b,
            lab,
            dir,
        }
    }

    /// Client `name` (certificate `<name>.crt`) in `ns`, dialing `server`, asking for
    /// [`CLIENT_INNER`]; `tag` makes its files and TUN name unique.
    fn client(&self, ns: &Netns, name: &str, tag: &str, server: &str) -> Daemon {
        self.client_at(ns, name, tag, server, CLIENT_INNER)
    }

    /// [`Site::client`] asking for `inner`.
    fn client_at(&self, ns: &Netns, name: &str, tag: &str, server: &str, inner: &str) -> Daemon {
        let path = self.dir.path().join(format!("{tag}.yaml"));
        let text = format!(
            "mode: client\n\
             network: {{ interface: {tun}, address: {inner}/24 }}\n\
             tunnel: {{ servers: [ {{ address: \"{server}:{PORT}\" }} ], server_name: s, \
             cert_file: {name}.crt, key_file: {name}.key, ca_file: ca.crt }}\n\
             connection: {{ retry_attempts: 100, retry_interval: 500ms, connect_timeout: 2s }}\n\
             control: {{ socket: {tag}.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            tun = self.lab.ifname(tag),
        );
        std::fs::write(&path, text).expect("client config written");
        Daemon::start_in(ns.name(), &path)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// The audit records of `event` that `pick` selects, once there is one (within
    /// [`WAIT`]).
    fn audit_wait(&self, event: &str, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<Value> = self
                .audit()
                .into_iter()
                .filter(|r| r["event"] == event && pick(r))
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> Value {
        let mut c = Control::connect(&self.dir.path().join("server.sock"));
        let reply = c.call(1, "status", json!({}));
        assert_eq!(reply["ok"], true, "status: {reply}");
        reply["data"].clone()
    }
}

#[test]
fn a_client_back_from_a_new_address_replaces_its_session_and_another_identity_is_refused() {
    let mut site = Site::start("");
    let mut old = site.client(&site.cli, "c1", "c1a", SRV_A);
    old.wait_for("tunnel up", WAIT);
    site.server
        .find_or_wait("session started", &[("peer", "c1")], WAIT);

    // The old path goes away without a word to the server (no FIN, no RST), then
    // the client dies: its session lives on in the server until it times out.
    let cli = site.cli.name().to_string();
    let out = std::process::Command::new("ip")
        .args(["-n", &cli, "link", "set", &site.cli_link, "down"])
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "link down: {out:?}");
    old.signal(Signal::SIGKILL);
    old.wait_exit(WAIT);

    // The same client from its new address.
    let started = Instant::now();
    let mut new = site.client(&site.cli2, "c1", "c1b", SRV_B);
    new.wait_for("tunnel up", Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("back after {took:?} from the new address");
    assert!(
        took < Duration::from_secs(5),
        "the new session took {took:?}\nserver:\n{}",
        site.server.log()
    );
    let replaced = site.audit_wait("session_replaced", |_| true);
    assert_eq!(replaced.len(), 1, "audit: {:?}", site.audit());
    let r = &replaced[0];
    assert_eq!(r["peer"], "c1");
    assert_eq!(r["inner"], CLIENT_INNER);
    assert!(
        r["old_remote"]
            .as_str()
            .is_some_and(|a| a.starts_with("192.168.31.2:")),
        "{r}"
    );
    assert!(
        r["remote"]
            .as_str()
            .is_some_and(|a| a.starts_with("192.168.32.2:")),
        "{r}"
    );
    assert!(
        site.cli2.ping_until(SERVER_INNER, WAIT).is_some(),
        "the new session carries no packets"
    );
    // The old session is closed at the takeover, not left to time out.
    let old_remote = r["old_remote"].as_str().unwrap_or_default().to_string();
    site.server.find_or_wait(
        "session closed",
        &[("peer", "c1"), ("remote", &old_remote)],
        Duration::from_secs(5),
    );

    // Another identity asking for the held address is still refused.
    let out = std::process::Command::new("ip")
        .args(["-n", &cli, "link", "set", &site.cli_link, "up"])
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "link up: {out:?}");
    let mut other = site.client(&site.cli, "c2", "c2", SRV_A);
    let refused = other.wait_for("tunnel refused", WAIT);
    assert_eq!(refused["code"], "E_ADDRESS_IN_USE", "{refused}");
    let audit = site.audit_wait("session_refused", |r| r["peer"] == "c2");
    assert_eq!(audit[0]["reason"], "address_in_use", "{audit:?}");
    assert!(site.cli2.ping(SERVER_INNER, 2), "c1 lost its tunnel to c2");
    new.drain();
    assert_eq!(new.seen_msg("tunnel up"), 1, "c1 was thrown out by c2");
}

#[test]
fn a_tunnel_beyond_max_connections_is_refused_with_e_conn_limit() {
    let site = Site::start("max_connections: 1");
    let mut c1 = site.client(&site.cli, "c1", "c1", SRV_A);
    c1.wait_for("tunnel up", WAIT);
    // c2 asks for another inner address than c1's.
    let mut c2 = site.client_at(&site.cli2, "c2", "c2", SRV_B, "10.78.0.3");
    // A full server is a passing condition, so the client logs a failed dial (and
    // tries again later), not a refusal.
    let refused = c2.find_or_wait("dial failed", &[("code", "E_CONN_LIMIT")], WAIT);
    assert_eq!(refused["server"], format!("{SRV_B}:{PORT}"), "{refused}");
    let audit = site.audit_wait("session_refused", |r| r["peer"] == "c2");
    assert_eq!(audit[0]["code"], "E_CONN_LIMIT", "{audit:?}");
    assert_eq!(audit[0]["reason"], "conn_limit", "{audit:?}");
    let status = site.status();
    assert!(
        status["tunnel"]["handshake_failures"]["E_CONN_LIMIT"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{}",
        status["tunnel"]
    );
    assert!(site.cli.ping(SERVER_INNER, 2), "c1 lost its tunnel");
}

/// The daemon's resident size in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Connections in one flood round.
const ROUND: usize = 2_000;
/// Flood rounds.
const ROUNDS: usize = 3;
/// The first bytes of a TLS ClientHello: a record header promising more than comes.
const PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// Opens [`ROUND`] connections to `to` from the namespace `ns`, each sending a
/// partial ClientHello (odd ones) or nothing; holds them `hold`, sampling the
/// daemon's RSS, then closes them. Returns (connections made, highest RSS).
fn flood_round(ns: &Netns, to: SocketAddr, pid: u32, hold: Duration) -> (usize, u64) {
    let opener = ns.thread(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut held = Vec::with_capacity(ROUND);
        for i in 0..ROUND {
            if Instant::now() > deadline {
                break;
            }
            if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                if i % 2 == 1 {
                    let _ = s.write_all(PARTIAL_HELLO);
                }
                held.push(s);
            }
        }
        held
    });
    let held = opener.join().expect("flood thread");
    let made = held.len();
    let mut peak = rss_kib(pid);
    let until = Instant::now() + hold;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    (made, peak)
}

#[test]
fn a_handshake_flood_costs_bounded_log_lines_and_memory_and_timeouts_are_audited() {
    let mut site = Site::start("");
    // This process holds a round's sockets at once.
    let _ = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=16384:16384",
        ])
        .output();
    let pid = site.server.pid();
    let to: SocketAddr = format!("127.0.0.1:{PORT}").parse().expect("address");

    // A connection that sends nothing is dropped at the handshake timeout, audited.
    let idle = site
        .srv
        .thread(move || TcpStream::connect(to).expect("connects"))
        .join()
        .expect("thread");
    let timeouts = site.audit_wait("handshake_refused", |r| r["reason"] == "handshake_timeout");
    assert!(
        !timeouts.is_empty(),
        "no audit record of the handshake timeout: {:?}",
        site.audit()
    );
    assert_eq!(timeouts[0]["code"], "E_TLS_HANDSHAKE", "{timeouts:?}");
    drop(idle);

    site.server.drain();
    let log_before: usize = site.server.seen.iter().map(|l| l.len() + 1).sum();
    let lines_before = site.server.seen.len();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    let mut made = 0;
    let mut during = 0;
    for _ in 0..ROUNDS {
        let (n, peak) = flood_round(&site.srv, to, pid, Duration::from_secs(2));
        made += n;
        during = during.max(peak);
    }
    // What the server still has pending ends at the handshake timeout at the
    // latest; then give it a summary interval to say what it did not log.
    let settle = Instant::now() + Duration::from_secs(25);
    let mut after = rss_kib(pid);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kib(pid);
    }
    site.server.drain();
    let log_bytes: usize = site.server.seen.iter().map(|l| l.len() + 1).sum::<usize>() - log_before;
    let lines = site.server.seen.len() - lines_before;
    let per_thousand = log_bytes * 1000 / made.max(1);
    eprintln!(
        "{made} junk connections: rss {before} KiB before, {during} KiB during, \
         {after} KiB after; {lines} log lines, {log_bytes} bytes ({per_thousand} per 1,000)"
    );
    assert!(made >= ROUND, "only {made} connections were made");
    assert!(
        lines <= 40,
        "{lines} log lines for {made} junk connections:\n{}",
        site.server.seen[lines_before..].join("\n")
    );
    assert!(
        after <= before + 10 * 1024,
        "rss {before} KiB before, {during} KiB during, {after} KiB after the flood"
    );
    let status = site.status();
    let shed = status["tunnel"]["handshakes_shed"].as_u64().unwrap_or(0);
    assert!(shed > 0, "no connection shed: {}", status["tunnel"]);
    assert!(
        site.server.seen[lines_before..]
            .iter()
            .any(|l| l.contains("\"refusals not logged\"")),
        "no summary of the refusals not logged"
    );
    assert!(
        site.audit()
            .iter()
            .any(|r| r["event"] == "refusals_suppressed"),
        "no audit summary"
    );
    // The listener still takes a real client.
    let mut c1 = site.client(&site.cli, "c1", "c1", SRV_A);
    c1.wait_for("tunnel up", WAIT);
}
