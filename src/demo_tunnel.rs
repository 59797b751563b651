//! `sssonector demo` as root: a real layer-3 tunnel between two network namespaces.
//!
//! Makes throwaway certificates, two namespaces joined by a veth pair (underlay
//! 198.18.0.1 and .2, a benchmarking range that routes nowhere), and runs this very
//! binary as a server in one and a client in the other with embedded configurations.
//! Then it pings across the tunnel's inner addresses (10.250.0.1 and .2), streams bulk
//! TCP through it with live figures every second (checking every byte that arrives),
//! and tears everything down: daemons stopped with SIGTERM, namespaces deleted, also
//! after an error or Ctrl-C.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use sssonector_actors::{Error, ErrorCode};

use crate::cli::DemoArgs;

const SERVER_NAME: &str = "sssonector-demo";
const CLIENT_NAME: &str = "demo-client";
const SERVER_INNER: &str = "10.250.0.1";
const CLIENT_INNER: &str = "10.250.0.2";
const SERVER_UNDER: &str = "198.18.0.1";
const CLIENT_UNDER: &str = "198.18.0.2";
const DATA_PORT: u16 = 5001;

fn server_yaml(tun: &str) -> String {
    format!(
        "mode: server\n\
         network: {{ interface: {tun}, address: {SERVER_INNER}/24 }}\n\
         tunnel: {{ listen_address: {SERVER_UNDER}, listen_port: 8443, cert_file: server.crt, \
         key_file: server.key, ca_file: ca.crt, keepalive: 2s }}\n\
         security: {{ allowed_clients: [{CLIENT_NAME}] }}\n\
         connection: {{ drain_timeout: 2s }}\n\
         control: {{ socket: server.sock }}\n\
         logging: {{ level: warn, format: json, file: server.log }}\n"
    )
}

fn client_yaml(tun: &str) -> String {
    format!(
        "mode: client\n\
         network: {{ interface: {tun}, address: {CLIENT_INNER}/24 }}\n\
         tunnel: {{ servers: [{{ address: \"{SERVER_UNDER}:8443\" }}], server_name: {SERVER_NAME}, \
         cert_file: {CLIENT_NAME}.crt, key_file: {CLIENT_NAME}.key, ca_file: ca.crt, keepalive: 2s }}\n\
         connection: {{ retry_interval: 200ms, drain_timeout: 2s }}\n\
         control: {{ socket: client.sock }}\n\
         logging: {{ level: warn, format: json, file: client.log }}\n"
    )
}

/// What the demo made, removed on drop in reverse order.
struct Lab {
    namespaces: Vec<String>,
    daemons: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        crate::stop_children(&mut self.daemons);
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        println!("teardown: daemons stopped, namespaces removed");
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("ip (iproute2)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Session {
            code: ErrorCode::Tun,
            message: format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Runs `f` on a thread that has entered namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<std::io::Result<T>> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        f()
    })
}

/// Runs the tunnel demo.
///
/// # Errors
/// `E_TUN` when namespaces or links cannot be made, `E_TIMEOUT` when the tunnel does
/// not come up, `E_IO` for file and process errors.
pub fn run(args: &DemoArgs) -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    crate::cert::generate(dir.path(), SERVER_NAME, &[CLIENT_NAME.into()], 1, false)?;
    let id = std::process::id();
    let (ns_s, ns_c) = (format!("sssdemo-{id}-s"), format!("sssdemo-{id}-c"));
    let mut lab = Lab {
        namespaces: Vec::new(),
        daemons: Vec::new(),
    };
    for ns in [&ns_s, &ns_c] {
        ip(&["netns", "add", ns])?;
        lab.namespaces.push(ns.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    ip(&[
        "-n", &ns_s, "link", "add", "demo-s", "type", "veth", "peer", "name", "demo-c", "netns",
        &ns_c,
    ])?;
    for (ns, dev, addr) in [
        (&ns_s, "demo-s", SERVER_UNDER),
        (&ns_c, "demo-c", CLIENT_UNDER),
    ] {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    println!("namespaces {ns_s} (server, {SERVER_UNDER}) and {ns_c} (client, {CLIENT_UNDER}) joined by veth");

    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    for (ns, name, yaml) in [
        (&ns_s, "server.yaml", server_yaml("sssdemo-s")),
        (&ns_c, "client.yaml", client_yaml("sssdemo-c")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).map_err(|e| Error::io(&path, e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("ip netns exec", e))?;
        lab.daemons.push(child);
    }

    let started = Instant::now();
    let up = wait_for_ping(&ns_c, SERVER_INNER, Duration::from_secs(15));
    if !up {
        return Err(Error::Session {
            code: ErrorCode::Timeout,
            message: format!(
                "the tunnel did not come up within 15 s; logs in {}",
                dir.path().display()
            ),
        });
    }
    println!(
        "tunnel up in {:.2} s: {CLIENT_INNER} (client) <-> {SERVER_INNER} (server), TLS 1.3, mutual certificates",
        started.elapsed().as_secs_f64()
    );
    for (ns, to) in [(&ns_c, SERVER_INNER), (&ns_s, CLIENT_INNER)] {
        let out = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-q", "-c", "5", "-i", "0.2", to,
            ])
            .output()
            .map_err(|e| Error::io("ping", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().last().unwrap_or("no reply");
        println!("ping {to}: {summary}");
    }
    transfer(
        &ns_s,
        &ns_c,
        args.duration.unwrap_or(Duration::from_secs(5)),
        dir.path(),
    )?;
    drop(lab);
    println!("demo stopped");
    Ok(())
}

fn wait_for_ping(ns: &str, to: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let ok = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", to,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A byte of the demo stream at `offset`: the receiver checks every one.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) >> 3) as u8
}

/// Streams TCP from the client namespace to the server's inner address for
/// `duration`, printing figures every second, and checks every byte received.
fn transfer(ns_s: &str, ns_c: &str, duration: Duration, dir: &Path) -> Result<(), Error> {
    let received = Arc::new(AtomicU64::new(0));
    let corrupt = Arc::new(AtomicBool::new(false));
    let listener = in_netns(ns_s, || TcpListener::bind((SERVER_INNER, DATA_PORT)))
        .join()
        .map_err(|_| Error::Internal("listener thread".into()))?
        .map_err(|e| Error::io("demo receiver", e))?;
    let (rx_count, rx_bad) = (received.clone(), corrupt.clone());
    let receiver = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut offset = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n]
                .iter()
                .enumerate()
                .any(|(i, b)| *b != pattern(offset + i as u64))
            {
                rx_bad.store(true, Ordering::Relaxed);
            }
            offset += n as u64;
            rx_count.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let sender = in_netns(ns_c, move || {
        let mut s = TcpStream::connect((SERVER_INNER, DATA_PORT))?;
        let mut buf = vec![0u8; 256 << 10];
        let mut offset = 0u64;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(offset + i as u64);
            }
            s.write_all(&buf)?;
            offset += buf.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(offset)
    });
    let start = Instant::now();
    let mut last = 0u64;
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_secs(1).min(duration));
        let now = received.load(Ordering::Relaxed);
        println!(
            "t={:>4.1}s  {:>6.2} Gbit/s through the tunnel  {:>8.1} MB received",
            start.elapsed().as_secs_f64(),
            (now - last) as f64 * 8.0 / 1e9,
            now as f64 / 1e6
        );
        last = now;
    }
    let sent = sender
        .join()
        .map_err(|_| Error::Internal("sender thread".into()))?
        .map_err(|e| Error::io("demo sender", e))?;
    receiver
        .join()
        .map_err(|_| Error::Internal("receiver thread".into()))?
        .map_err(|e| Error::io("demo receiver", e))?;
    let got = received.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    if got != sent || corrupt.load(Ordering::Relaxed) {
        return Err(Error::Internal(format!(
            "transfer damaged: sent {sent} bytes, received {got}; logs in {}",
            dir.display()
        )));
    }
    println!(
        "transfer: {:.1} MB in {secs:.1} s, {:.2} Gbit/s, every byte checked",
        got as f64 / 1e6,
        got as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}
