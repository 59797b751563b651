//! Layer-4 services end to end: a client daemon forwards local TCP connections as
//! streams over its tunnel; the server daemon balances them across echo backends
//! the test runs in the server's namespace. Each backend first says its name on a
//! line of its own, then echoes, so the test knows which one took each connection
//! and that every byte came back intact.
//!
//! Every test builds its own namespaces (unique names, removed on drop).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::netns::{Lab, Netns};
use common::{cert_init, Control, Daemon};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const SERVER_NAME: &str = "sssonector-test";
const PORT: u16 = 8443;
const SERVER_UNDERLAY: &str = "192.168.1.1";
/// Where the client offers the service, in its namespace.
const SERVICE: &str = "127.0.0.1:7001";
/// First backend port in the server's namespace; backend i listens on BACKEND + i.
const BACKEND: u16 = 9001;

/// An echo backend in a namespace: says its name, then echoes. Counts the
/// connections that sent at least one byte (health checks send none).
struct Backend {
    port: u16,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &Netns, name: &str, port: u16) -> Self {
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let listener = ns
            .thread(move || TcpListener::bind(("127.0.0.1", port)))
            .join()
            .expect("bind thread")
            .unwrap_or_else(|e| panic!("backend {port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let thread = {
            let (served, stop, conns, name) =
                (served.clone(), stop.clone(), conns.clone(), name.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).expect("blocking");
                            conns
                                .lock()
                                .expect("conns")
                                .push(s.try_clone().expect("clone"));
                            let (served, name) = (served.clone(), name.clone());
                            std::thread::Builder::new()
                                .stack_size(64 * 1024)
                                .spawn(move || echo(s, &name, &served))
                                .expect("echo thread");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            port,
            served,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// Stops listening and cuts every connection, as a crash would.
    fn kill(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("accept thread");
        }
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn echo(mut s: TcpStream, name: &str, served: &AtomicU64) {
    if s.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    let mut counted = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !counted {
                    served.fetch_add(1, Relaxed);
                    counted = true;
                }
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// A server with one service `echo` over `backends` and a client offering it on
/// [`SERVICE`], in two namespaces joined by a veth pair.
struct L4 {
    /// The daemons run as long as this lives; fields drop in order, so they stop
    /// before their namespaces go.
    server: Daemon,
    client: Daemon,
    dir: tempfile::TempDir,
    #[allow(dead_code)]
    srv: Netns,
    cli: Netns,
}

impl L4 {
    /// `service` is the YAML of the server's service entry after `name: echo, `.
    fn start(lab: &Lab, srv: Netns, service: &str, extra_server: &str, extra_client: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        cert_init(dir.path(), SERVER_NAME, &["c1"]);
        let cli = lab.netns("cli");
        lab.veth(&srv, SERVER_UNDERLAY, &cli, "192.168.1.2");
        let server = write(
            dir.path(),
            "server.yaml",
            &format!(
                "mode: server\n\
                 network: {{ interface: {}, address: 10.77.0.1/24 }}\n\
                 tunnel: {{ listen_port: {PORT}, cert_file: server.crt, key_file: server.key, \
                 ca_file: ca.crt, keepalive: 1s }}\n\
                 security: {{ allowed_clients: [c1] }}\n\
                 services: [ {{ name: echo, {service} }} ]\n\
                 control: {{ socket: server.sock }}\n\
                 logging: {{ level: info, format: json }}\n{extra_server}",
                lab.ifname("ts")
            ),
        );
        let client = write(
            dir.path(),
            "c1.yaml",
            &format!(
                "mode: client\n\
                 network: {{ interface: {}, address: 10.77.0.2/24 }}\n\
                 tunnel: {{ servers: [ {{ address: \"{SERVER_UNDERLAY}:{PORT}\" }} ], \
                 server_name: {SERVER_NAME}, cert_file: c1.crt, key_file: c1.key, \
                 ca_file: ca.crt, keepalive: 1s }}\n\
                 services: [ {{ name: echo, listen: \"{SERVICE}\" }} ]\n\
                 control: {{ socket: c1.sock }}\n\
                 logging: {{ level: info, format: json }}\n{extra_client}",
                lab.ifname("tc")
            ),
        );
        let mut server_d = Daemon::start_in(srv.name(), &server);
        server_d.wait_for("listening", WAIT);
        let mut client_d = Daemon::start_in(cli.name(), &client);
        client_d.wait_for("tunnel up", WAIT);
        Self {
            server: server_d,
            client: client_d,
            dir,
            srv,
            cli,
        }
    }

    fn ctl(&self, who: &str, command: &str) -> Value {
        let mut c = Control::connect(&self.dir.path().join(format!("{who}.sock")));
        c.call(1, command, json!({}))
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// Bytes that differ per stream and per position, so a mixed-up or shifted stream
/// shows.
fn pattern(stream: u64, len: usize) -> Vec<u8> {
    let mut x = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Connects to the service, reads the backend's name, sends `data`, half-closes
/// and reads the echo to its end; returns the backend's name and the echo.
fn round_trip(data: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let s = TcpStream::connect(SERVICE)?;
    s.set_read_timeout(Some(WAIT))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name)?;
    let mut w = s;
    let writer = {
        let data = data.to_vec();
        let mut w2 = w.try_clone()?;
        std::thread::spawn(move || {
            let sent = w2.write_all(&data);
            let _ = w2.shutdown(Shutdown::Write);
            sent
        })
    };
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back)?;
    writer.join().expect("writer")?;
    w.flush()?;
    Ok((name.trim().to_owned(), back))
}

#[test]
fn a_stream_carries_megabytes_both_ways_and_closes_cleanly() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let l4 = L4::start(
        &lab,
        srv,
        &format!(
            "endpoints: [ {{ address: \"127.0.0.1:{}\" }} ]",
            backend.port
        ),
        "",
        "",
    );
    let data = pattern(7, 8 << 20);
    let (name, back) = l4
        .cli
        .thread(move || {
            let started = Instant::now();
            let r = round_trip(&data).expect("round trip");
            eprintln!("8 MiB echoed in {:?}", started.elapsed());
            (r.0, r.1 == data, r.1.len())
        })
        .join()
        .map(|(n, same, len)| {
            assert!(same, "echo of {len} bytes differs");
            (n, len)
        })
        .expect("client thread");
    assert_eq!(name, "b1");
    assert_eq!(back, 8 << 20);
    assert_eq!(backend.served(), 1);
    let status = l4.ctl("c1", "status");
    let streams = &status["data"]["tunnel"]["streams"];
    assert_eq!(streams["total"], 1, "{status}");
    drop(backend);
}

#[test]
fn a_thousand_concurrent_streams_each_carry_their_own_data() {
    const THREADS: usize = 50;
    const PER: usize = 20;
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let l4 = L4::start(
        &lab,
        srv,
        &format!(
            "endpoints: [ {{ address: \"127.0.0.1:{}\" }} ]",
            backend.port
        ),
        "connection: { max_connections: 5000 }\n",
        "connection: { max_connections: 5000 }\n",
    );
    // Every thread opens its streams, then all wait until all 1,000 are open.
    let all_open = Arc::new(Barrier::new(THREADS + 1));
    let checked = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (all_open, checked) = (all_open.clone(), checked.clone());
            l4.cli.thread(move || {
                let mut conns = Vec::new();
                for i in 0..PER {
                    let s = TcpStream::connect(SERVICE).expect("connect");
                    s.set_read_timeout(Some(WAIT)).expect("timeout");
                    let mut r = BufReader::new(s.try_clone().expect("clone"));
                    let mut name = String::new();
                    r.read_line(&mut name).expect("backend name");
                    conns.push((t * PER + i, s, r));
                }
                all_open.wait();
                checked.wait();
                let mut ok = 0;
                for (id, mut s, mut r) in conns {
                    let data = pattern(id as u64, 4096 + id);
                    s.write_all(&data).expect("write");
                    s.shutdown(Shutdown::Write).expect("shutdown");
                    let mut back = Vec::new();
                    r.read_to_end(&mut back).expect("read");
                    assert!(back == data, "stream {id}: {} bytes back", back.len());
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    all_open.wait();
    let status = l4.ctl("c1", "status");
    let active = status["data"]["tunnel"]["streams"]["active"].clone();
    checked.wait();
    let ok: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert_eq!(ok, THREADS * PER);
    assert_eq!(active, json!(THREADS * PER), "{status}");
    let server = l4.ctl("server", "status");
    assert_eq!(
        server["data"]["tunnel"]["streams"]["peak"],
        json!(THREADS * PER),
        "{server}"
    );
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_stalled_stream_holds_one_window_and_the_others_go_on() {
    const BIG: usize = 64 << 20;
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let l4 = L4::start(
        &lab,
        srv,
        &format!(
            "endpoints: [ {{ address: \"127.0.0.1:{}\" }} ]",
            backend.port
        ),
        "",
        "",
    );
    let rss_before = rss_kib(l4.server.pid()) + rss_kib(l4.client.pid());
    // Stream A sends 64 MiB and reads nothing back until told: the echo fills every
    // buffer on the way and A stalls.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<usize>();
    let stalled = l4.cli.thread(move || {
        let s = TcpStream::connect(SERVICE).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut name = String::new();
        r.read_line(&mut name).expect("name");
        let data = pattern(1, BIG);
        let writer = {
            let (mut w, data, sent_tx) = (s.try_clone().expect("clone"), data.clone(), sent_tx);
            std::thread::spawn(move || {
                let mut sent = 0;
                for piece in data.chunks(64 * 1024) {
                    w.write_all(piece).expect("write");
                    sent += piece.len();
                    let _ = sent_tx.send(sent);
                }
                w.shutdown(Shutdown::Write).expect("shutdown");
            })
        };
        go_rx.recv().expect("go");
        let mut back = Vec::with_capacity(BIG);
        r.read_to_end(&mut back).expect("read");
        writer.join().expect("writer");
        back == data
    });
    // Wait until A's sender is blocked: nothing more got through for half a second.
    let mut sent = sent_rx
        .recv_timeout(WAIT)
        .expect("the stalled stream sends");
    while let Ok(n) = sent_rx.recv_timeout(Duration::from_millis(500)) {
        sent = n;
    }
    assert!(
        sent < BIG,
        "the stalled stream sent everything ({sent} bytes)"
    );
    // Stream B meanwhile makes a full round trip.
    let started = Instant::now();
    let ok = l4
        .cli
        .thread(|| {
            let data = pattern(2, 1 << 20);
            round_trip(&data).map(|(_, back)| back == data)
        })
        .join()
        .expect("thread")
        .expect("round trip");
    assert!(ok, "stream B's echo differs");
    let took = started.elapsed();
    let rss_stalled = rss_kib(l4.server.pid()) + rss_kib(l4.client.pid());
    eprintln!("stalled after {sent} bytes; B took {took:?}; RSS {rss_before} -> {rss_stalled} KiB");
    assert!(took < Duration::from_secs(5), "stream B took {took:?}");
    // Each daemon pends at most a window (512 KiB) for A, plus buffers in flight.
    assert!(
        rss_stalled < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_stalled} KiB"
    );
    go_tx.send(()).expect("go");
    assert!(
        stalled.join().expect("stalled thread"),
        "stream A's echo differs"
    );
}
