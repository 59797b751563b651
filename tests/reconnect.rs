//! A client is back within a second of its one tunnel server coming back, whatever
//! the outage: the server is killed, stays down 2, 10 or 40 s (three labs at once,
//! to bound the test's time), and is started again; the tunnel (a ping through it)
//! and the client's service must work again within [`BACK`] of the server
//! listening. The client keeps the default retry policy, health checks and breaker:
//! those are what used to keep it out for tens of seconds.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::echo::Backend;
use common::netns::{Lab, Netns};
use common::{cert_init, Daemon};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(15);
/// The promise is one second; the margin is for a loaded 2-core CI box.
const BACK: Duration = Duration::from_millis(1500);
const SERVER_NAME: &str = "sssonector-test";
const PORT: u16 = 8443;
const SERVICE: &str = "127.0.0.1:7001";
const BACKEND: u16 = 9001;

/// One round trip through the client's service: the backend's name, then the echo.
fn round_trip(cli: &Netns) -> bool {
    cli.thread(|| -> std::io::Result<bool> {
        let s = TcpStream::connect(SERVICE)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut name = String::new();
        r.read_line(&mut name)?;
        let mut w = s;
        w.write_all(b"ping")?;
        w.shutdown(Shutdown::Write)?;
        let mut back = Vec::new();
        r.read_to_end(&mut back)?;
        Ok(name.trim() == "srv" && back == b"ping")
    })
    .join()
    .expect("round trip thread")
    .unwrap_or(false)
}

/// Pings through the tunnel, each ping given 0.2 s (not the harness's 1 s, which
/// would blur the figure by up to a second), until one answer or `limit`.
fn ping_fast_until(cli: &Netns, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let out = cli.exec(&["ping", "-n", "-q", "-c", "1", "-W", "0.2", "10.77.0.1"]);
        if out.status.success() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Round trips until one works or `limit`; the time until it did.
fn service_until(cli: &Netns, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if round_trip(cli) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// Kills the server, waits `outage`, starts it again; returns how long after it
/// listened again the ping and the service worked, with the logs on failure.
fn outage(outage: Duration) -> Result<(Duration, Duration), String> {
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), SERVER_NAME, &["c1"]);
    let (srv, cli) = (lab.netns("srv"), lab.netns("cli"));
    lab.veth(&srv, "192.168.1.1", &cli, "192.168.1.2");
    let _backend = Backend::start(&srv, "srv", BACKEND);
    let server = write(
        dir.path(),
        "srv.yaml",
        &format!(
            "mode: server\n\
             network: {{ interface: {}, address: 10.77.0.1/24 }}\n\
             tunnel: {{ listen_port: {PORT}, cert_file: server.crt, key_file: server.key, \
             ca_file: ca.crt, keepalive: 1s }}\n\
             security: {{ allowed_clients: [c1] }}\n\
             services: [ {{ name: echo, endpoints: [ {{ address: \"127.0.0.1:{BACKEND}\" }} ] }} ]\n\
             control: {{ socket: srv.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            lab.ifname("ts")
        ),
    );
    let client = write(
        dir.path(),
        "c1.yaml",
        &format!(
            "mode: client\n\
             network: {{ interface: {}, address: 10.77.0.2/24 }}\n\
             tunnel: {{ servers: [ {{ address: \"192.168.1.1:{PORT}\" }} ], \
             server_name: {SERVER_NAME}, cert_file: c1.crt, key_file: c1.key, \
             ca_file: ca.crt, keepalive: 1s }}\n\
             services: [ {{ name: echo, listen: \"{SERVICE}\" }} ]\n\
             control: {{ socket: c1.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            lab.ifname("tc")
        ),
    );
    let mut s = Daemon::start_in(srv.name(), &server);
    s.wait_for("listening", WAIT);
    let mut c = Daemon::start_in(cli.name(), &client);
    c.wait_for("tunnel up", WAIT);
    if cli.ping_until("10.77.0.1", WAIT).is_none() || service_until(&cli, WAIT).is_none() {
        return Err(format!("no tunnel at the start\n{}", c.log()));
    }

    s.signal(Signal::SIGKILL);
    s.wait_exit(WAIT);
    std::thread::sleep(outage);
    let mut s = Daemon::start_in(srv.name(), &server);
    if !srv.wait_listening(PORT, WAIT) {
        return Err(format!("the server did not listen again\n{}", s.log()));
    }
    let listening = Instant::now();
    let limit = Duration::from_secs(60);
    let Some(_) = ping_fast_until(&cli, limit) else {
        return Err(format!("no ping within {limit:?}\n{}", c.log()));
    };
    let ping = listening.elapsed();
    let Some(_) = service_until(&cli, limit) else {
        return Err(format!("no service within {limit:?}\n{}", c.log()));
    };
    let service = listening.elapsed();
    if ping > BACK || service > BACK {
        return Err(format!(
            "back after {:.2} s (ping) / {:.2} s (service)\n--- client\n{}\n--- server\n{}",
            ping.as_secs_f64(),
            service.as_secs_f64(),
            c.log(),
            s.log()
        ));
    }
    Ok((ping, service))
}

#[test]
fn a_client_is_back_within_a_second_of_its_only_server_after_2_10_and_40_s_outages() {
    let runs: Vec<_> = [2u64, 10, 40]
        .into_iter()
        .map(|secs| {
            (
                secs,
                std::thread::spawn(move || outage(Duration::from_secs(secs))),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (secs, run) in runs {
        match run.join().expect("outage thread") {
            Ok((ping, service)) => println!(
                "outage {secs} s: ping back {:.3} s, service back {:.3} s after the server listened",
                ping.as_secs_f64(),
                service.as_secs_f64()
            ),
            Err(e) => failures.push(format!("outage {secs} s: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
