//! The layer-3 tunnel end to end: server and client daemons in their own network
//! namespaces joined by veth pairs, real TUN devices, real `ping` and `socat` traffic
//! across the inner addresses, refused strangers, a server killed and restarted, and
//! junk thrown at the listening port. Every test builds its own namespaces (unique
//! names, removed on drop) and so may run in parallel with the others.
//!
//! Inner network: 10.77.0.0/24, the server at .1. Underlay: one /24 per veth pair,
//! the server's end at .1. Namespaces are isolated from each other and from the host,
//! so tests reuse the same addresses freely.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Lab, Netns, Spawned};
use common::snmp::{binding, net_snmp, TrapReceiver};
use common::{cert_init, Control, Daemon};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Time allowed for a daemon to reach a lifecycle log line.
const WAIT: Duration = Duration::from_secs(15);

/// The name `cert init` puts in the server certificate and clients check.
const SERVER_NAME: &str = "sssonector-test";

/// The server's tunnel port, the same in every (isolated) server namespace.
const PORT: u16 = 8443;

/// The server's inner address.
const SERVER_INNER: &str = "10.77.0.1";

/// Writes `<dir>/server.yaml`: a server on [`PORT`] with TUN `interface`, inner
/// address [`SERVER_INNER`]/24, admitting the certificate names in `allowed`.
fn server_config(dir: &Path, interface: &str, allowed: &[&str]) -> PathBuf {
    let path = dir.join("server.yaml");
    let text = format!(
        "mode: server\n\
         network: {{ interface: {interface}, address: {SERVER_INNER}/24, mtu: 1500 }}\n\
         tunnel: {{ listen_address: 0.0.0.0, listen_port: {PORT}, cert_file: server.crt, \
         key_file: server.key, ca_file: ca.crt, keepalive: 1s }}\n\
         security: {{ allowed_clients: [{}] }}\n\
         connection: {{ drain_timeout: 2s }}\n\
         control: {{ socket: server.sock }}\n\
         logging: {{ level: info, format: json }}\n",
        allowed.join(", ")
    );
    std::fs::write(&path, text).expect("server config written");
    path
}

/// Writes `<dir>/<name>.yaml`: a client using `<name>.crt`/`.key` and `ca.crt` from
/// `dir`, TUN `interface` with `inner`/24, dialing `server` ("ip:port").
fn client_config(dir: &Path, name: &str, interface: &str, inner: &str, server: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "mode: client\n\
         network: {{ interface: {interface}, address: {inner}/24, mtu: 1500 }}\n\
         tunnel: {{ servers: [ {{ address: \"{server}\" }} ], server_name: {SERVER_NAME}, \
         cert_file: {name}.crt, key_file: {name}.key, ca_file: ca.crt, keepalive: 1s }}\n\
         connection: {{ retry_attempts: 3, retry_interval: 200ms, connect_timeout: 2s, \
         drain_timeout: 2s }}\n\
         control: {{ socket: {name}.sock }}\n\
         logging: {{ level: info, format: json }}\n"
    );
    std::fs::write(&path, text).expect("client config written");
    path
}

/// The address part of a log field that may carry a prefix length ("10.77.0.2/24").
fn addr_of(json: &Value, field: &str) -> String {
    let text = json[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {json}"));
    text.split('/').next().unwrap_or(text).to_owned()
}

/// Whether the log line's `remote` ("ip:port") comes from `ip`.
fn remote_is(json: &Value, ip: &str) -> bool {
    json["remote"]
        .as_str()
        .and_then(|r| r.rsplit_once(':'))
        .is_some_and(|(host, _)| host.trim_matches(['[', ']']) == ip)
}

/// A server daemon in one namespace and a client `c1` in another, joined by a veth
/// pair (underlay 192.168.1.0/24), the tunnel up and the session registered.
/// Fields drop in order: daemons first, then the namespaces they ran in.
struct Pair {
    server: Daemon,
    client: Daemon,
    server_config: PathBuf,
    /// The server's TUN device.
    server_tun: String,
    srv: Netns,
    cli: Netns,
    dir: tempfile::TempDir,
}

impl Pair {
    /// Client's inner address.
    const CLIENT_INNER: &'static str = "10.77.0.2";
    /// Server's underlay address.
    const SERVER_UNDERLAY: &'static str = "192.168.1.1";

    fn start(lab: &Lab) -> Self {
        Self::start_with(lab, "none", "none")
    }

    /// A pair whose server and client ask for the given `tunnel.compression`.
    fn start_with(lab: &Lab, server_compression: &str, client_compression: &str) -> Self {
        Self::start_configured(lab, |server, client| {
            set_compression(server, server_compression);
            set_compression(client, client_compression);
        })
    }

    /// A pair whose config files (server's, client's) `edit` changes before start.
    fn start_configured(lab: &Lab, edit: impl FnOnce(&Path, &Path)) -> Self {
        Self::start_around(lab, edit, |_, _| ()).0
    }

    /// Like [`start_configured`](Self::start_configured), with `before` run on the
    /// server's namespace and the pair's folder before either daemon starts (to start
    /// what must hear them from their first moment); returns what it returned.
    fn start_around<T>(
        lab: &Lab,
        edit: impl FnOnce(&Path, &Path),
        before: impl FnOnce(&Netns, &Path) -> T,
    ) -> (Self, T) {
        let dir = tempfile::tempdir().expect("temp dir");
        cert_init(dir.path(), SERVER_NAME, &["c1"]);
        let srv = lab.netns("srv");
        let cli = lab.netns("cli");
        lab.veth(&srv, Self::SERVER_UNDERLAY, &cli, "192.168.1.2");
        let server_tun = lab.ifname("ts");
        let server_config = server_config(dir.path(), &server_tun, &["c1"]);
        let client_config = client_config(
            dir.path(),
            "c1",
            &lab.ifname("tc"),
            Self::CLIENT_INNER,
            &format!("{}:{PORT}", Self::SERVER_UNDERLAY),
        );
        edit(&server_config, &client_config);
        let prepared = before(&srv, dir.path());
        let mut server = Daemon::start_in(srv.name(), &server_config);
        server.wait_for("listening", WAIT);
        let mut client = Daemon::start_in(cli.name(), &client_config);
        let up = client.wait_for("tunnel up", WAIT);
        assert_eq!(addr_of(&up, "inner"), Self::CLIENT_INNER, "{up}");
        let session = server.find_or_wait("session started", &[("peer", "c1")], WAIT);
        assert_eq!(addr_of(&session, "inner"), Self::CLIENT_INNER, "{session}");
        let pair = Self {
            server,
            client,
            server_config,
            server_tun,
            srv,
            cli,
            dir,
        };
        (pair, prepared)
    }

    /// Bytes the server's TUN device has delivered to the server's kernel so far.
    fn tun_rx_bytes(&self) -> u64 {
        let file = format!("/sys/class/net/{}/statistics/rx_bytes", self.server_tun);
        let out = self.srv.exec_ok(&["cat", &file]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a byte count")
    }

    /// Sends `sent` from the client to a receiver on the server's inner address
    /// (socat both ends), checks what arrived byte for byte, and returns the time.
    fn send_file(&mut self, sent: &Path, port: u16) -> Duration {
        let got = sent.with_extension("received");
        let mut receiver = self.srv.spawn(&[
            "socat",
            "-u",
            &format!("TCP-LISTEN:{port},reuseaddr,bind={SERVER_INNER}"),
            &format!("CREATE:{}", got.display()),
        ]);
        assert!(
            self.srv.wait_listening(port, WAIT),
            "receiver does not listen"
        );
        let start = Instant::now();
        let send = self.cli.exec_within(
            &[
                "socat",
                "-u",
                &format!("FILE:{}", sent.display()),
                &format!("TCP:{SERVER_INNER}:{port}"),
            ],
            Duration::from_secs(300),
        );
        let received = receiver.wait_within(Duration::from_secs(60));
        let elapsed = start.elapsed();
        assert!(
            send.status.success(),
            "sender failed ({}): {}\n{}",
            send.status,
            String::from_utf8_lossy(&send.stderr),
            self.logs()
        );
        assert!(
            received.is_some_and(|s| s.success()),
            "receiver did not finish: {received:?}\n{}",
            self.logs()
        );
        let (want, len) = (file_len(sent), file_len(&got));
        assert_eq!(len, want, "received {len} of {want} bytes");
        assert_eq!(sha256(&got), sha256(sent), "received bytes differ");
        elapsed
    }

    /// The client's one session as `ctl status` shows it.
    fn client_session(&self) -> Value {
        let mut control = Control::connect(&self.dir.path().join("c1.sock"));
        let reply = control.call(1, "status", Value::Null);
        let sessions = &reply["data"]["tunnel"]["peers"];
        assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{reply}");
        sessions[0].clone()
    }

    /// Both daemons' logs, for failure messages.
    fn logs(&mut self) -> String {
        format!(
            "server:\n{}\nclient:\n{}",
            self.server.log(),
            self.client.log()
        )
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fast, seeded, reproducible byte source.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Writes `len` pseudo-random bytes from `seed` to `path`.
fn write_random_file(path: &Path, seed: u64, len: u64) {
    let mut rng = SplitMix64(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("file created"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).expect("chunk fits usize");
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).expect("file written");
        left -= n as u64;
    }
    file.flush().expect("file flushed");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// Sets `tunnel.compression` in a config file written by this test.
fn set_compression(path: &Path, algorithm: &str) {
    let text = std::fs::read_to_string(path).expect("config read");
    let text = text.replace(
        "keepalive: 1s }",
        &format!("keepalive: 1s, compression: {algorithm} }}"),
    );
    assert!(text.contains("compression"), "{text}");
    std::fs::write(path, text).expect("config written");
}

/// The SHA-256 of a file in hex, from coreutils' `sha256sum`.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

#[test]
fn netns_harness_creates_and_removes_namespaces() {
    let lab = Lab::new();
    let (a_name, b_name);
    // Outlives the namespaces: their drop must end it.
    let mut orphan;
    {
        let a = lab.netns("a");
        let b = lab.netns("b");
        a_name = a.name().to_owned();
        b_name = b.name().to_owned();
        assert!(common::netns::exists(&a_name) && common::netns::exists(&b_name));
        let veth = lab.veth(&a, "192.168.1.1", &b, "192.168.1.2");
        assert!(veth.a.len() <= 15 && veth.b.len() <= 15, "{veth:?}");
        // The ends live only in their namespaces.
        a.exec_ok(&["ip", "link", "show", &veth.a]);
        assert!(!a.exec(&["ip", "link", "show", &veth.b]).status.success());
        assert!(a.ping("192.168.1.2", 3), "a cannot ping b");
        assert!(b.ping("192.168.1.1", 3), "b cannot ping a");
        assert!(!a.ping("192.168.9.9", 1), "a ping to nowhere got an answer");
        assert!(a.ping_until("192.168.1.2", WAIT).is_some());

        // `ip netns exec` execs in place: the child's pid is the program's, and the
        // program runs in the namespace.
        let sleeper = b.spawn(&["sleep", "30"]);
        let pid = sleeper.id();
        // Right after the fork the child is still a copy of this test: wait for exec.
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
        let deadline = Instant::now() + WAIT;
        while comm().trim() != "sleep" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(comm().trim(), "sleep");
        assert!(b.pids().contains(&i32::try_from(pid).expect("pid fits")));
        assert_eq!(
            netns_inode(&format!("/proc/{pid}/ns/net")),
            netns_inode(&format!("/run/netns/{b_name}"))
        );

        let _listener = a.spawn(&["socat", "-u", "TCP-LISTEN:5001,reuseaddr", "-"]);
        assert!(a.wait_listening(5001, WAIT), "socat does not listen");
        orphan = sleeper;
    }
    assert!(!common::netns::exists(&a_name), "{a_name} left behind");
    assert!(!common::netns::exists(&b_name), "{b_name} left behind");
    let status = orphan
        .wait_within(WAIT)
        .expect("sleep ended with its namespace");
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");

    // A panicking test still removes its namespace.
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = lab.netns("p");
        *name.lock().expect("not poisoned") = ns.name().to_owned();
        panic!("test failure inside a namespace (expected)");
    }));
    assert!(result.is_err());
    let name = name.into_inner().expect("not poisoned");
    assert!(
        !name.is_empty() && !common::netns::exists(&name),
        "{name} left behind"
    );
}

/// The inode of a network namespace file: equal inodes, same namespace.
fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("namespace file").ino()
}

#[test]
fn daemon_started_in_a_namespace_runs_there_under_its_own_pid() {
    let lab = Lab::new();
    let ns = lab.netns("d");
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "s", &["c"]);
    let config = common::server_yaml(dir.path(), "");
    let mut daemon = Daemon::start_in(ns.name(), &config);
    daemon.wait_for("daemon started", WAIT);
    let pid = daemon.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert_eq!(exe, Path::new(env!("CARGO_BIN_EXE_sssonector")));
    assert_eq!(
        netns_inode(&format!("/proc/{pid}/ns/net")),
        netns_inode(&format!("/run/netns/{}", ns.name()))
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn ping_both_ways_and_bulk_transfer_arrives_intact() {
    const BYTES: u64 = 200_000_000;
    const DATA_PORT: u16 = 5001;
    let lab = Lab::new();
    let mut pair = Pair::start(&lab);
    assert!(
        pair.cli.ping(SERVER_INNER, 3),
        "client cannot ping the server's inner address\n{}",
        pair.logs()
    );
    assert!(
        pair.srv.ping(Pair::CLIENT_INNER, 3),
        "server cannot ping the client's inner address\n{}",
        pair.logs()
    );

    let data = tempfile::tempdir().expect("temp dir");
    let sent = data.path().join("sent.bin");
    write_random_file(&sent, 0x5555_0e17, BYTES);
    let tun_before = pair.tun_rx_bytes();
    let elapsed = pair.send_file(&sent, DATA_PORT);
    // The bytes came out of the server's TUN, not some other path.
    let through_tun = pair.tun_rx_bytes() - tun_before;
    assert!(
        through_tun >= BYTES,
        "only {through_tun} bytes left the TUN"
    );
    let secs = elapsed.as_secs_f64();
    println!(
        "{} MB through the tunnel in {secs:.2} s: {:.1} MB/s",
        BYTES / 1_000_000,
        BYTES as f64 / 1e6 / secs
    );
}

#[test]
fn compression_is_negotiated_and_shrinks_compressible_traffic() {
    const BYTES: usize = 32_000_000;
    let data = tempfile::tempdir().expect("temp dir");
    let sent = data.path().join("log.txt");
    // Log lines: the kind of traffic that compresses.
    let mut text = String::with_capacity(BYTES + 100);
    for i in 0.. {
        if text.len() >= BYTES {
            break;
        }
        text.push_str(&format!(
            "2026-11-22T10:{:02}:{:02}Z INFO request id={i} path=/api/v1/items/{} status=200\n",
            i / 60 % 60,
            i % 60,
            i % 977
        ));
    }
    std::fs::write(&sent, &text).expect("file written");
    for algorithm in ["lz4", "zstd"] {
        let lab = Lab::new();
        let mut pair = Pair::start_with(&lab, algorithm, algorithm);
        assert_eq!(pair.client_session()["compression"], algorithm);
        let elapsed = pair.send_file(&sent, 5002);
        let counters = &pair.client_session()["counters"];
        let ip = counters["bytes_out"].as_u64().expect("bytes_out");
        let wire = counters["wire_bytes_out"].as_u64().expect("wire_bytes_out");
        assert!(ip >= BYTES as u64, "{counters}");
        assert!(
            wire * 3 < ip,
            "{algorithm}: {wire} wire bytes for {ip} IP bytes"
        );
        println!(
            "{algorithm}: {} MB of log lines in {:.2} s, {:.1}x smaller on the wire",
            BYTES / 1_000_000,
            elapsed.as_secs_f64(),
            ip as f64 / wire as f64
        );
    }
    // Different algorithms on the two ends: no compression, and the tunnel works.
    let lab = Lab::new();
    let pair = Pair::start_with(&lab, "lz4", "zstd");
    assert_eq!(pair.client_session()["compression"], "none");
    assert!(
        pair.cli.ping(SERVER_INNER, 2),
        "no ping without compression"
    );
}

/// Appends `text` (whole top-level YAML sections) to a config file.
fn append_config(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).expect("config read");
    config.push_str(text);
    std::fs::write(path, config).expect("config written");
}

/// `sssonector_tunnel_bytes_total{direction="in"}` in a text-format scrape.
fn scraped_bytes_in(scrape: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix("sssonector_tunnel_bytes_total{direction=\"in\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bytes_total in:\n{scrape}"))
}

/// `sssonector_tunnel_bytes_total{direction="in"}` in a `ctl metrics` reply.
fn ctl_bytes_in(reply: &Value) -> f64 {
    reply["data"]["sssonector_tunnel_bytes_total"]["samples"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["labels"]["direction"] == "in"))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no bytes_total in {reply}"))
}

#[test]
fn metrics_scrape_passes_promtool_and_agrees_with_ctl() {
    const MONITOR: &str =
        "monitor: { prometheus: { enabled: true, listen: \"127.0.0.1:9650\" } }\n";
    let lab = Lab::new();
    let mut pair = Pair::start_configured(&lab, |server, client| {
        append_config(server, MONITOR);
        append_config(client, MONITOR);
    });
    assert!(pair.cli.ping(SERVER_INNER, 3), "no ping\n{}", pair.logs());
    let curl = |ns: &Netns, path: &str| -> (String, String) {
        let url = format!("http://127.0.0.1:9650{path}");
        let out = ns.exec(&["curl", "-s", "-w", "\n%{http_code}", &url]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("a status code");
        (body.to_owned(), code.to_owned())
    };
    let (scrape, code) = curl(&pair.srv, "/metrics");
    assert_eq!(code, "200", "{scrape}");
    common::promtool_check(&scrape);
    for family in [
        "mode=\"server\"} 1",
        "sssonector_tunnel_sessions_active 1",
        "sssonector_tunnel_handshakes_total{result=\"accepted\"} 1",
        "sssonector_tunnel_session_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(scrape.contains(family), "{family} missing:\n{scrape}");
    }
    // The same counter, by Prometheus and by ctl, at one moment: no traffic flows
    // (keepalive pings are not IP bytes), so a scrape between two ctl reads agrees.
    let mut control = Control::connect(&pair.dir.path().join("server.sock"));
    let before = ctl_bytes_in(&control.call(1, "metrics", Value::Null));
    let scraped = scraped_bytes_in(&curl(&pair.srv, "/metrics").0);
    let after = ctl_bytes_in(&control.call(2, "metrics", Value::Null));
    assert!(before > 0.0, "the pings were counted");
    assert_eq!(
        (before, scraped),
        (after, after),
        "ctl and /metrics disagree"
    );
    // Control commands are counted too, by command and result.
    let (scrape, _) = curl(&pair.srv, "/metrics");
    assert!(
        scrape.contains("sssonector_control_commands_total{command=\"metrics\",result=\"ok\"} 2"),
        "{scrape}"
    );
    // Health: the client has its session; unknown paths and methods get their codes.
    let (health, code) = curl(&pair.cli, "/healthz");
    assert_eq!(code, "200", "{health}");
    let health: Value = serde_json::from_str(&health).expect("health is JSON");
    assert_eq!(
        health["checks"]["connectivity"]["status"], "healthy",
        "{health}"
    );
    assert_eq!(curl(&pair.cli, "/nope").1, "404");
    let out = pair.cli.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "http://127.0.0.1:9650/metrics",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    // The session list is in ctl connections.
    let connections = control.call(3, "connections", Value::Null);
    assert_eq!(connections["data"]["active"], 1, "{connections}");
    assert_eq!(
        connections["data"]["tunnel"][0]["peer"], "c1",
        "{connections}"
    );
}

/// A Net-SNMP tool run in `ns` with SSSONECTOR-MIB loaded and no system config.
fn snmp_tool(ns: &Netns, tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = net_snmp(ns, tool);
    cmd.args(["-r", "1", "-t", "1"]).args(args);
    common::netns::output_within(cmd, Duration::from_secs(60))
}

/// The value of `object` from the agent at 127.0.0.1:1161 in `ns` (v2c, "public").
fn snmp_value<T: std::str::FromStr>(ns: &Netns, object: &str) -> T {
    let agent = "127.0.0.1:1161";
    let out = snmp_tool(
        ns,
        "snmpget",
        &["-v2c", "-c", "public", "-Oqv", agent, object],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{object}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{object} is not a number: {text}"))
}

#[test]
fn snmp_walks_agree_and_name_every_object_by_the_mib() {
    const MONITOR: &str = "monitor: { prometheus: { enabled: true, listen: \"127.0.0.1:9650\" }, \
        snmp: { enabled: true, listen: \"127.0.0.1:1161\", community: public } }\n";
    let lab = Lab::new();
    let mut pair = Pair::start_configured(&lab, |server, _| append_config(server, MONITOR));
    assert!(pair.cli.ping(SERVER_INNER, 2), "no ping\n{}", pair.logs());
    let agent = "127.0.0.1:1161";
    let walk = snmp_tool(
        &pair.srv,
        "snmpwalk",
        &["-v2c", "-c", "public", agent, ".1"],
    );
    let bulk = snmp_tool(
        &pair.srv,
        "snmpbulkwalk",
        &["-v2c", "-c", "public", agent, ".1"],
    );
    for out in [&walk, &bulk] {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Everything but what moves on its own (uptimes, the agent's packet count).
    let steady = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                !l.contains("Timeticks")
                    && !l.contains("snmpInPkts")
                    && !l.contains("snmpModules.10.2.1.3.0")
                    && !l.contains("sssPeerDuration")
            })
            .map(str::to_owned)
            .collect()
    };
    let (walked, bulked) = (steady(&walk), steady(&bulk));
    assert_eq!(walked, bulked, "snmpwalk and snmpbulkwalk differ");
    let text = walked.join("\n");
    for expected in [
        "SNMPv2-MIB::sysDescr.0 = STRING: SSSonector",
        "SNMPv2-MIB::sysObjectID.0 = OID: SSSONECTOR-MIB::sssonectorMIB",
        "SSSONECTOR-MIB::sssMode.0 = INTEGER: server(1)",
        "SSSONECTOR-MIB::sssConnActive.0 = Gauge32: 1",
        "SSSONECTOR-MIB::sssPeerCompression.",
    ] {
        assert!(text.contains(expected), "{expected} missing in:\n{text}");
    }
    assert!(
        walked
            .iter()
            .any(|l| l.starts_with("SSSONECTOR-MIB::sssPeerName.") && l.ends_with("STRING: c1")),
        "no peer row in:\n{text}"
    );
    assert!(
        !text.contains("iso."),
        "an object the MIB does not name:\n{text}"
    );
    // The table, as an NMS shows it.
    let table = snmp_tool(
        &pair.srv,
        "snmptable",
        &[
            "-v2c",
            "-c",
            "public",
            agent,
            "SSSONECTOR-MIB::sssPeerTable",
        ],
    );
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && table_text.contains("c1"),
        "{table_text}{}",
        String::from_utf8_lossy(&table.stderr)
    );
    // One counter by SNMP, Prometheus and ctl at one moment (no traffic flows).
    let mut control = Control::connect(&pair.dir.path().join("server.sock"));
    let by_ctl = ctl_bytes_in(&control.call(1, "metrics", Value::Null));
    let by_snmp: f64 = snmp_value(&pair.srv, "SSSONECTOR-MIB::sssBytesIn.0");
    let scrape = pair
        .srv
        .exec_ok(&["curl", "-s", "http://127.0.0.1:9650/metrics"]);
    let by_prometheus = scraped_bytes_in(&String::from_utf8_lossy(&scrape.stdout));
    assert!(by_ctl > 0.0);
    assert_eq!(
        (by_snmp, by_prometheus),
        (by_ctl, by_ctl),
        "SNMP, Prometheus and ctl disagree"
    );
    // A wrong community gets no answer and is counted; a SET is refused.
    let wrong = snmp_tool(
        &pair.srv,
        "snmpget",
        &["-v2c", "-c", "wrong", agent, "SNMPv2-MIB::sysName.0"],
    );
    assert!(!wrong.status.success(), "answered a wrong community");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Timeout"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let bad: u64 = snmp_value(&pair.srv, "SNMPv2-MIB::snmpInBadCommunityNames.0");
    assert!(bad >= 1, "bad community not counted");
    let set = snmp_tool(
        &pair.srv,
        "snmpset",
        &[
            "-v2c",
            "-c",
            "public",
            agent,
            "SNMPv2-MIB::sysName.0",
            "s",
            "x",
        ],
    );
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("notWritable"),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let missing = snmp_tool(
        &pair.srv,
        "snmpget",
        &[
            "-v2c",
            "-c",
            "public",
            agent,
            "SNMPv2-MIB::sysName.1",
            "SNMPv2-MIB::sysORLastChange.0",
        ],
    );
    let missing = String::from_utf8_lossy(&missing.stdout);
    assert!(
        missing.contains("No Such Instance") && missing.contains("No Such Object"),
        "{missing}"
    );

    // 200 malformed, truncated and oversized datagrams, then a valid request.
    let sent = send_fuzz_corpus(pair.srv.name(), "127.0.0.1:1161".parse().expect("addr"));
    assert_eq!(sent, 200);
    // The agent still answers (snmp_value asserts the reply) and counted the junk.
    let parse_errors: u64 = snmp_value(&pair.srv, "SNMPv2-MIB::snmpInASNParseErrs.0");
    // The 40 truncations go first; later datagrams may be dropped by a full socket
    // buffer (the kernel's right) or decode with a wrong community.
    assert!(
        parse_errors >= 40,
        "only {parse_errors} parse errors counted"
    );
    assert!(
        pair.cli.ping(SERVER_INNER, 2),
        "the tunnel suffered\n{}",
        pair.logs()
    );
}

#[test]
fn snmpv3_authpriv_answers_its_user_and_refuses_wrong_keys() {
    let lab = Lab::new();
    let mut pair = Pair::start_configured(&lab, |server, _| {
        let engine = server.with_file_name("snmp-engine.json");
        append_config(
            server,
            &format!(
                "monitor: {{ snmp: {{ enabled: true, listen: \"127.0.0.1:1161\", \
                 engine_file: \"{}\", contact: \"noc@example.com\", \
                 users: [{{ name: nms, auth_password: auth-secret-1, \
                 priv_password: priv-secret-1 }}] }} }}\n",
                engine.display()
            ),
        );
    });
    assert!(pair.cli.ping(SERVER_INNER, 2), "no ping\n{}", pair.logs());
    let agent = "127.0.0.1:1161";
    let v3 = |level: &str, auth: &str, privacy: &str, objects: &[&str]| {
        let mut args = vec![
            "-v3", "-l", level, "-u", "nms", "-a", "SHA-256", "-A", auth, "-x", "AES", "-X",
            privacy, agent,
        ];
        args.extend_from_slice(objects);
        snmp_tool(&pair.srv, "snmpget", &args)
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let ok = v3(
        "authPriv",
        "auth-secret-1",
        "priv-secret-1",
        &[
            "SNMPv2-MIB::sysDescr.0",
            "SNMPv2-MIB::sysContact.0",
            "SSSONECTOR-MIB::sssConnActive.0",
        ],
    );
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    for expected in [
        "sysDescr.0 = STRING: SSSonector",
        "sysContact.0 = STRING: noc@example.com",
        "sssConnActive.0 = Gauge32: 1",
    ] {
        assert!(out.contains(expected), "{expected} missing in {out}");
    }
    // A whole walk over v3 ends cleanly and shows the peer row.
    let walk = snmp_tool(
        &pair.srv,
        "snmpbulkwalk",
        &[
            "-v3",
            "-l",
            "authPriv",
            "-u",
            "nms",
            "-a",
            "SHA-256",
            "-A",
            "auth-secret-1",
            "-x",
            "AES",
            "-X",
            "priv-secret-1",
            agent,
            ".1",
        ],
    );
    let walked = text(&walk);
    assert!(
        walk.status.success() && walked.contains("sssPeerName."),
        "{walked}"
    );

    // Each wrong key fails with Net-SNMP's own words, and nothing answers v2c (no
    // community is configured).
    for (level, auth, privacy, says) in [
        (
            "authPriv",
            "wrong-password",
            "priv-secret-1",
            "Authentication failure",
        ),
        (
            "authPriv",
            "auth-secret-1",
            "wrong-password",
            "Decryption error",
        ),
        (
            "authNoPriv",
            "auth-secret-1",
            "priv-secret-1",
            "Unsupported security level",
        ),
    ] {
        let refused = v3(level, auth, privacy, &["SNMPv2-MIB::sysDescr.0"]);
        let out = text(&refused);
        assert!(
            !refused.status.success() && out.contains(says),
            "{level} {auth} {privacy}: {out}"
        );
    }
    let v2c = snmp_tool(
        &pair.srv,
        "snmpget",
        &["-v2c", "-c", "public", agent, "SNMPv2-MIB::sysDescr.0"],
    );
    assert!(text(&v2c).contains("Timeout"), "{}", text(&v2c));
    // usmStatsWrongDigests, usmStatsDecryptionErrors and usmStatsUnsupportedSecLevels
    // count what was refused, and the engine state is on disk, private.
    let counts = v3(
        "authPriv",
        "auth-secret-1",
        "priv-secret-1",
        &[
            "-Oqv",
            ".1.3.6.1.6.3.15.1.1.5.0",
            ".1.3.6.1.6.3.15.1.1.6.0",
            ".1.3.6.1.6.3.15.1.1.1.0",
            ".1.3.6.1.6.3.10.2.1.2.0",
        ],
    );
    let numbers: Vec<String> = String::from_utf8_lossy(&counts.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(numbers, ["1", "1", "1", "1"], "{}", text(&counts));
    let engine = pair.dir.path().join("snmp-engine.json");
    let meta = std::fs::metadata(&engine).expect("engine state written");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(&engine).expect("read")).expect("json");
    assert_eq!(state["boots"], 1);
}

/// The UDP port snmptrapd listens on, on the server namespace's loopback (each test's
/// namespace is its own: no clash with another test or the host).
const TRAP_PORT: u16 = 10162;
/// Where the same snmptrapd takes SNMPv3 notifications, so a record says how it came.
const TRAP_PORT_V3: u16 = 10163;
/// The server's SNMPv3 engine ID in the notification test (written to its engine
/// file before it starts): snmptrapd needs the sender's engine ID to localize keys.
const TRAP_ENGINE_ID: &str = "80007ed90574726170";

/// A `sssonector_snmp_notifications_total` sample of a scrape.
fn notifications_counted(scrape: &str, notification: &str, result: &str) -> f64 {
    let series = format!(
        "sssonector_snmp_notifications_total{{notification=\"{notification}\",result=\"{result}\"}} "
    );
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn snmp_notifications_reach_snmptrapd_when_tunnels_go_up_and_down() {
    let monitor = format!(
        "monitor: {{ prometheus: {{ enabled: true, listen: \"127.0.0.1:9650\" }}, \
         snmp: {{ enabled: true, listen: \"127.0.0.1:1161\", community: public, \
         cert_warning: 400days, engine_file: snmp-engine.json, \
         users: [ {{ name: nms, auth_password: auth-secret-1, priv_password: priv-secret-1 }} ], \
         trap_targets: [ {{ address: \"127.0.0.1:{TRAP_PORT}\", community: public }}, \
                         {{ address: \"127.0.0.1:{TRAP_PORT_V3}\", user: nms }} ] }} }}\n"
    );
    let lab = Lab::new();
    let (mut pair, mut traps) = Pair::start_around(
        &lab,
        |server, _| {
            let engine = format!("{{\"engine_id\": \"{TRAP_ENGINE_ID}\", \"boots\": 4}}\n");
            std::fs::write(server.with_file_name("snmp-engine.json"), engine).expect("written");
            append_config(
                server,
                &monitor.replace(
                    "snmp-engine.json",
                    &server
                        .with_file_name("snmp-engine.json")
                        .display()
                        .to_string(),
                ),
            );
        },
        |ns, dir| {
            let users = format!(
                "createUser -e 0x{TRAP_ENGINE_ID} nms SHA-256 auth-secret-1 AES priv-secret-1\n\
                 authUser log nms\n"
            );
            TrapReceiver::start(ns, dir, &users, &[TRAP_PORT, TRAP_PORT_V3])
        },
    );

    // At start: `cert init` certificates live 397 days, inside the 400-day warning.
    let cert = traps.next("sssCertExpiring", WAIT);
    let (_, subject) = binding(&cert, "sssNotifyCertSubject");
    assert!(subject.contains(SERVER_NAME), "{cert}");
    let (instance, days) = binding(&cert, "sssNotifyCertDaysLeft");
    assert_eq!(instance, "0", "{cert}");
    // "397 days" less the seconds since `cert init`: 396, or 397 within its second.
    let days: u32 = days
        .split_whitespace()
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no day count in {cert}"));
    assert!((396..=397).contains(&days), "{cert}");

    // The session's sssTunnelUp names its row of the agent's peer table.
    let up = traps.next("sssTunnelUp", WAIT);
    let (row, peer) = binding(&up, "sssPeerName");
    assert_eq!(peer, "c1", "{up}");
    let (remote_row, remote) = binding(&up, "sssPeerRemote");
    assert_eq!(remote_row, row, "{up}");
    assert!(remote.starts_with("192.168.1.2:"), "{up}");
    // The same notification as SNMPv3 authPriv, which snmptrapd authenticated and
    // decrypted with the user's keys for our engine ID.
    let up_v3 = traps.next_at("sssTunnelUp", TRAP_PORT_V3, WAIT);
    assert_eq!(
        binding(&up_v3, "sssPeerName"),
        (row.clone(), "c1".into()),
        "{up_v3}"
    );
    let name = snmp_tool(
        &pair.srv,
        "snmpget",
        &[
            "-v2c",
            "-c",
            "public",
            "-Oqv",
            "127.0.0.1:1161",
            &format!("SSSONECTOR-MIB::sssPeerName.{row}"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&name.stdout)
            .trim()
            .trim_matches('"'),
        "c1",
        "{}",
        String::from_utf8_lossy(&name.stderr)
    );

    // A client killed outright: sssTunnelDown with the code the server logged.
    pair.client.signal(Signal::SIGKILL);
    pair.client.wait_exit(WAIT);
    let closed = pair
        .server
        .find_or_wait("session closed", &[("peer", "c1")], WAIT);
    let code = closed["code"].as_str().unwrap_or("local").to_owned();
    let down = traps.next("sssTunnelDown", WAIT);
    assert_eq!(
        binding(&down, "sssPeerName"),
        (row.clone(), "c1".into()),
        "{down}"
    );
    assert_eq!(binding(&down, "sssPeerRemote").0, row, "{down}");
    assert_eq!(
        binding(&down, "sssNotifyReason"),
        ("0".into(), code),
        "{down}"
    );

    let down_v3 = traps.next_at("sssTunnelDown", TRAP_PORT_V3, WAIT);
    assert_eq!(binding(&down_v3, "sssPeerName").1, "c1", "{down_v3}");

    // Counted by notification and result (once per target), in a scrape promtool
    // accepts.
    let scrape = pair
        .srv
        .exec_ok(&["curl", "-s", "http://127.0.0.1:9650/metrics"]);
    let scrape = String::from_utf8_lossy(&scrape.stdout).into_owned();
    common::promtool_check(&scrape);
    for notification in ["cert_expiring", "tunnel_up", "tunnel_down"] {
        assert_eq!(
            notifications_counted(&scrape, notification, "sent"),
            2.0,
            "{notification}:\n{scrape}"
        );
    }

    // A new session gets a new row; a stop ends it and still says so before exit.
    pair.client = Daemon::start_in(pair.cli.name(), &pair.dir.path().join("c1.yaml"));
    pair.client.wait_for("tunnel up", WAIT);
    let up = traps.next("sssTunnelUp", WAIT);
    let (new_row, _) = binding(&up, "sssPeerName");
    assert_ne!(new_row, row, "{up}");
    pair.server.signal(Signal::SIGTERM);
    assert_eq!(pair.server.wait_exit(WAIT), Some(0), "{}", pair.logs());
    let down = traps.next("sssTunnelDown", WAIT);
    assert_eq!(
        binding(&down, "sssPeerName"),
        (new_row, "c1".into()),
        "{down}"
    );
    assert_eq!(binding(&down, "sssNotifyReason").1, "local", "{down}");
    assert!(
        !traps.seen.iter().any(|l| l.contains("Cannot find module")),
        "{}",
        traps.seen.join("\n")
    );
}

/// A valid SNMPv2c GetRequest for sysDescr.0 with community "public".
const GET_SYSDESCR: [u8; 40] = [
    0x30, 0x26, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0, 0x19, 0x02,
    0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06,
    0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
];

/// Sends the fuzz corpus from inside namespace `ns` to `to`; returns how many went.
fn send_fuzz_corpus(ns: &str, to: std::net::SocketAddr) -> usize {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        // Every truncation of a valid request.
        corpus.extend((0..GET_SYSDESCR.len()).map(|n| GET_SYSDESCR[..n].to_vec()));
        // Bit flips in its framing and lengths.
        for i in 0..GET_SYSDESCR.len() {
            for bit in [0x01u8, 0x80] {
                if corpus.len() < 130 {
                    let mut p = GET_SYSDESCR.to_vec();
                    p[i] ^= bit;
                    corpus.push(p);
                }
            }
        }
        // Lengths claiming more than is there, and nesting without end.
        corpus.push(vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff]);
        corpus.push([0x30, 0x80].repeat(500));
        // Oversized datagrams.
        for fill in 0..10u8 {
            corpus.push(vec![0x30 ^ fill; 60_000]);
        }
        // Random bytes.
        let mut rng = SplitMix64(0xf022);
        while corpus.len() < 200 {
            let len = usize::try_from(rng.next_u64() % 1500).expect("fits");
            let mut p = vec![0u8; len];
            rng.fill(&mut p);
            corpus.push(p);
        }
        for p in &corpus {
            socket.send_to(p, to).expect("datagram sent");
        }
        corpus.len()
    })
    .join()
    .expect("fuzz thread")
}

#[test]
fn two_clients_reach_server_and_each_other_while_strangers_are_refused() {
    const C1: &str = "10.77.0.2";
    const C2: &str = "10.77.0.3";
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), SERVER_NAME, &["c1", "c2", "c3"]);
    // A stranger: a certificate from another CA, even with an allowed name, which
    // trusts the real server (its ca.crt is the real one).
    let foreign_dir = tempfile::tempdir().expect("temp dir");
    cert_init(foreign_dir.path(), SERVER_NAME, &["c1"]);
    std::fs::copy(dir.path().join("ca.crt"), foreign_dir.path().join("ca.crt"))
        .expect("real CA copied");

    let srv = lab.netns("srv");
    // (role, underlay subnet, cert name, inner address, folder)
    let clients = [
        ("c1", 1, "c1", C1, dir.path()),
        ("c2", 2, "c2", C2, dir.path()),
        ("frn", 3, "c1", "10.77.0.4", foreign_dir.path()),
        ("unl", 4, "c3", "10.77.0.5", dir.path()),
    ];
    let mut nets = Vec::new();
    let mut configs = Vec::new();
    for (role, subnet, name, inner, folder) in clients {
        let ns = lab.netns(role);
        let server_end = format!("192.168.{subnet}.1");
        lab.veth(&srv, &server_end, &ns, &format!("192.168.{subnet}.2"));
        configs.push(client_config(
            folder,
            name,
            &lab.ifname(&format!("t{role}")),
            inner,
            &format!("{server_end}:{PORT}"),
        ));
        nets.push(ns);
    }
    let [c1_ns, c2_ns, foreign_ns, unlisted_ns] = &nets[..] else {
        unreachable!("four client namespaces")
    };
    let server_config = server_config(dir.path(), &lab.ifname("ts"), &["c1", "c2"]);

    let mut server = Daemon::start_in(srv.name(), &server_config);
    server.wait_for("listening", WAIT);
    let mut c1 = Daemon::start_in(c1_ns.name(), &configs[0]);
    let mut c2 = Daemon::start_in(c2_ns.name(), &configs[1]);
    c1.wait_for("tunnel up", WAIT);
    c2.wait_for("tunnel up", WAIT);
    server.find_or_wait("session started", &[("peer", "c1")], WAIT);
    server.find_or_wait("session started", &[("peer", "c2")], WAIT);

    let reachable = |server: &mut Daemon, when: &str| {
        for (from, ns, to) in [
            ("c1", c1_ns, SERVER_INNER),
            ("c2", c2_ns, SERVER_INNER),
            ("c1", c1_ns, C2),
            ("c2", c2_ns, C1),
            ("server", &srv, C1),
            ("server", &srv, C2),
        ] {
            assert!(
                ns.ping(to, 3),
                "{when}: {from} cannot ping {to}\nserver:\n{}",
                server.log()
            );
        }
    };
    reachable(&mut server, "before the strangers");

    let mut foreign = Daemon::start_in(foreign_ns.name(), &configs[2]);
    let mut unlisted = Daemon::start_in(unlisted_ns.name(), &configs[3]);
    let untrusted = server.find_or_wait("handshake failed", &[("code", "E_TLS_UNTRUSTED")], WAIT);
    assert!(remote_is(&untrusted, "192.168.3.2"), "{untrusted}");
    let denied = server.find_or_wait("session refused", &[("code", "E_ACCESS_DENIED")], WAIT);
    assert!(remote_is(&denied, "192.168.4.2"), "{denied}");
    if let Some(peer) = denied["peer"].as_str() {
        assert_eq!(peer, "c3", "{denied}");
    }

    reachable(&mut server, "after the strangers");
    server.drain();
    foreign.drain();
    unlisted.drain();
    assert_eq!(
        server.seen_msg("session started"),
        2,
        "a stranger got a session:\n{}",
        server.log()
    );
    assert_eq!(foreign.seen_msg("tunnel up"), 0, "{}", foreign.log());
    assert_eq!(unlisted.seen_msg("tunnel up"), 0, "{}", unlisted.log());
}

#[test]
fn client_reconnects_after_server_sigkill() {
    const LIMIT: Duration = Duration::from_secs(30);
    let lab = Lab::new();
    let mut pair = Pair::start(&lab);
    assert!(pair.cli.ping(SERVER_INNER, 3), "{}", pair.logs());

    let killed = Instant::now();
    pair.server.signal(Signal::SIGKILL);
    assert_eq!(pair.server.wait_exit(WAIT), None, "killed by a signal");
    pair.server = Daemon::start_in(pair.srv.name(), &pair.server_config);
    pair.server.wait_for("listening", WAIT);
    pair.client.wait_for("tunnel up", LIMIT);
    let left = LIMIT.saturating_sub(killed.elapsed());
    let pinged = pair.cli.ping_until(SERVER_INNER, left);
    let back = killed.elapsed();
    assert!(
        pinged.is_some(),
        "no ping within {LIMIT:?} of the kill\n{}",
        pair.logs()
    );
    println!("reconnected in {:.2} s", back.as_secs_f64());
    assert!(back < LIMIT, "reconnected only after {back:?}");
    pair.client.find_or_wait("tunnel down", &[], WAIT);
    assert!(pair.srv.ping(Pair::CLIENT_INNER, 3), "{}", pair.logs());
}

#[test]
fn garbage_and_half_handshakes_do_not_disturb_live_tunnels() {
    /// Pings each way while the junk arrives: 0.2 s apart, about 8 s.
    const PINGS: u32 = 40;
    /// How long the half handshake stays open.
    const HOLD: Duration = Duration::from_secs(5);
    let lab = Lab::new();
    let mut pair = Pair::start(&lab);
    assert!(pair.cli.ping(SERVER_INNER, 3), "{}", pair.logs());
    let target = format!("TCP:{}:{PORT}", Pair::SERVER_UNDERLAY);

    let garbage = pair.dir.path().join("garbage.bin");
    write_random_file(&garbage, 0x6a72_6261_6765, 64 * 1024);
    // A first byte that no TLS record starts with (RFC 8446 §5.1: content types
    // 20..=24), whatever the generator gives.
    let mut bytes = std::fs::read(&garbage).expect("garbage read");
    bytes[0] = 0xff;
    std::fs::write(&garbage, &bytes).expect("garbage written");

    // The start of a TLS ClientHello (RFC 8446 §5.1, §4.1.2): a handshake record of
    // 512 bytes announcing a ClientHello of 508, of which only 100 bytes come.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut rng = SplitMix64(7);
    let mut tail = vec![0u8; 100 - hello.len()];
    rng.fill(&mut tail);
    hello.extend_from_slice(&tail);

    let (to_server, to_client) = std::thread::scope(|s| {
        let to_server = s.spawn(|| pair.cli.ping_replies(SERVER_INNER, PINGS));
        let to_client = s.spawn(|| pair.srv.ping_replies(Pair::CLIENT_INNER, PINGS));

        let sent = pair.cli.exec_within(
            &[
                "socat",
                "-u",
                &format!("FILE:{}", garbage.display()),
                &target,
            ],
            Duration::from_secs(20),
        );
        // The server may cut the connection mid-write: socat's status is not judged.
        eprintln!(
            "garbage sender: {} {}",
            sent.status,
            String::from_utf8_lossy(&sent.stderr).trim()
        );

        let child = pair
            .cli
            .command("socat")
            .args(["-u", "STDIN", &target])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat starts");
        let mut half = Spawned::new(child);
        let mut stdin = half.stdin.take().expect("stdin piped");
        stdin.write_all(&hello).expect("hello written");
        stdin.flush().expect("hello flushed");
        std::thread::sleep(HOLD);
        drop(stdin);
        half.wait_within(Duration::from_secs(10));

        (
            to_server.join().expect("ping thread"),
            to_client.join().expect("ping thread"),
        )
    });
    assert_eq!(
        to_server,
        PINGS,
        "pings to the server lost\n{}",
        pair.logs()
    );
    assert_eq!(
        to_client,
        PINGS,
        "pings to the client lost\n{}",
        pair.logs()
    );

    pair.server.find_or_wait("handshake failed", &[], WAIT);
    assert!(pair.cli.ping(SERVER_INNER, 3), "{}", pair.logs());
    pair.server.drain();
    pair.client.drain();
    assert_eq!(
        pair.server.seen_msg("session started"),
        1,
        "{}",
        pair.logs()
    );
    assert_eq!(pair.client.seen_msg("tunnel up"), 1, "{}", pair.logs());
    assert_eq!(pair.client.seen_msg("tunnel down"), 0, "{}", pair.logs());
}

#[test]
fn the_demo_shows_a_real_tunnel_and_removes_what_it_made() {
    let child = common::bin()
        .args(["demo", "--duration", "2s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("demo starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("demo ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "tunnel up",
        "ping 10.250.0.1: rtt",
        "ping 10.250.0.2: rtt",
        "every byte checked",
        "teardown",
        "demo stopped",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let left = String::from_utf8_lossy(&list.stdout);
    assert!(
        !left.contains(&format!("sssdemo-{pid}-")),
        "namespaces left: {left}"
    );
}
