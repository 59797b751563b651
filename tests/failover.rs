//! Health-checked failover end to end (issue 6): a client whose `tunnel.servers`
//! lists two servers moves its tunnel and services to the second by itself when the
//! first dies; a server's endpoint going down and coming back is told to snmptrapd
//! as sssEndpointDown and sssEndpointUp.
//!
//! Every test builds its own namespaces (unique names, removed on drop) and waits
//! only within bounds.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::echo::Backend;
use common::netns::{Lab, Netns};
use common::snmp::{binding, TrapReceiver};
use common::{cert_init, Daemon};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(15);
/// How long the client may take to be back, through the second server, after the
/// first was killed.
const FAILOVER: Duration = Duration::from_secs(10);
const SERVER_NAME: &str = "sssonector-test";
const PORT: u16 = 8443;
/// Where the client offers the service, in its namespace.
const SERVICE: &str = "127.0.0.1:7001";
/// The echo backend's port, in each server's namespace.
const BACKEND: u16 = 9001;
/// Where snmptrapd listens for SNMPv2c notifications, in the server's namespace.
const TRAP_PORT: u16 = 10162;

/// In `cli`: connects to the client's service, reads the backend's name, sends
/// `data`, half-closes and reads the echo to its end.
fn round_trip(cli: &Netns, data: &'static [u8]) -> std::io::Result<(String, Vec<u8>)> {
    cli.thread(move || {
        let s = TcpStream::connect(SERVICE)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut name = String::new();
        r.read_line(&mut name)?;
        let mut w = s;
        w.write_all(data)?;
        w.shutdown(Shutdown::Write)?;
        let mut back = Vec::new();
        r.read_to_end(&mut back)?;
        Ok((name.trim().to_owned(), back))
    })
    .join()
    .expect("round trip thread")
}

/// Round trips until one through backend `name` echoes `data` intact, or `limit`.
fn round_trip_until(cli: &Netns, name: &str, data: &'static [u8], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((got, back)) = round_trip(cli, data) {
            if got == name && back == data {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// A server config: TUN `interface`, the service `echo` over the local backend.
fn server_yaml(dir: &Path, file: &str, interface: &str, extra: &str) -> PathBuf {
    let sock = file.trim_end_matches(".yaml");
    write(
        dir,
        file,
        &format!(
            "mode: server\n\
             network: {{ interface: {interface}, address: 10.77.0.1/24 }}\n\
             tunnel: {{ listen_port: {PORT}, cert_file: server.crt, key_file: server.key, \
             ca_file: ca.crt, keepalive: 1s }}\n\
             security: {{ allowed_clients: [c1] }}\n\
             services: [ {{ name: echo, endpoints: [ {{ address: \"127.0.0.1:{BACKEND}\" }} ] }} ]\n\
             control: {{ socket: {sock}.sock }}\n\
             logging: {{ level: info, format: json }}\n{extra}"
        ),
    )
}

fn logs(daemons: &mut [(&str, &mut Daemon)]) -> String {
    daemons
        .iter_mut()
        .map(|(name, d)| format!("--- {name}\n{}", d.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn client_fails_over_to_the_second_server_with_its_services_when_the_first_dies() {
    const DATA: &[u8] = b"through the tunnel and back";
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), SERVER_NAME, &["c1"]);
    let (s1, s2, cli) = (lab.netns("s1"), lab.netns("s2"), lab.netns("cli"));
    lab.veth(&s1, "192.168.1.1", &cli, "192.168.1.2");
    lab.veth(&s2, "192.168.2.1", &cli, "192.168.2.2");
    let _b1 = Backend::start(&s1, "s1", BACKEND);
    let _b2 = Backend::start(&s2, "s2", BACKEND);

    let c1 = server_yaml(dir.path(), "s1.yaml", &lab.ifname("t1"), "");
    let c2 = server_yaml(dir.path(), "s2.yaml", &lab.ifname("t2"), "");
    let client = write(
        dir.path(),
        "c1.yaml",
        &format!(
            "mode: client\n\
             network: {{ interface: {}, address: 10.77.0.2/24 }}\n\
             tunnel: {{ servers: [ {{ address: \"192.168.1.1:{PORT}\" }}, \
             {{ address: \"192.168.2.1:{PORT}\" }} ], \
             server_name: {SERVER_NAME}, cert_file: c1.crt, key_file: c1.key, \
             ca_file: ca.crt, keepalive: 1s }}\n\
             balancer: {{ health_check: 200ms, unhealthy_threshold: 2, healthy_threshold: 2 }}\n\
             services: [ {{ name: echo, listen: \"{SERVICE}\" }} ]\n\
             control: {{ socket: c1.sock }}\n\
             logging: {{ level: info, format: json }}\n",
            lab.ifname("tc")
        ),
    );
    let mut server1 = Daemon::start_in(s1.name(), &c1);
    let mut server2 = Daemon::start_in(s2.name(), &c2);
    server1.wait_for("listening", WAIT);
    server2.wait_for("listening", WAIT);
    let mut client = Daemon::start_in(cli.name(), &client);
    client.wait_for("tunnel up", WAIT);

    // The first server listed has the tunnel and serves the service.
    server1.find_or_wait("session started", &[("peer", "c1")], WAIT);
    assert!(
        round_trip_until(&cli, "s1", DATA, WAIT),
        "no echo through s1\n{}",
        logs(&mut [
            ("s1", &mut server1),
            ("s2", &mut server2),
            ("client", &mut client)
        ])
    );
    server2.drain();
    assert_eq!(
        server2.seen_msg("session started"),
        0,
        "the second server is not used while the first is up"
    );
    // The balancer's health checks reach s2 all along, and it says nothing of them.
    std::thread::sleep(Duration::from_millis(600));
    server2.drain();
    assert_eq!(
        server2.seen_msg("handshake failed"),
        0,
        "a health check is no failed handshake\n{}",
        server2.log()
    );

    // The first dies: tunnel and service move to the second by themselves.
    let killed = Instant::now();
    server1.signal(Signal::SIGKILL);
    assert_eq!(server1.wait_exit(WAIT), None, "killed by a signal");
    server2.wait_for("session started", FAILOVER);
    let left = FAILOVER.saturating_sub(killed.elapsed());
    assert!(
        round_trip_until(&cli, "s2", DATA, left),
        "no echo through s2 within {FAILOVER:?} of the kill\n{}",
        logs(&mut [("s2", &mut server2), ("client", &mut client)])
    );
    println!("failed over in {:.2} s", killed.elapsed().as_secs_f64());
    client.find_or_wait("tunnel down", &[], WAIT);
    let up = client.find_or_wait(
        "tunnel up",
        &[("server", &format!("192.168.2.1:{PORT}"))],
        WAIT,
    );
    assert_eq!(up["inner"], "10.77.0.2", "{up}");
}

#[test]
fn an_endpoint_going_down_and_up_is_notified_to_snmptrapd() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), SERVER_NAME, &["c1"]);
    let srv = lab.netns("srv");
    let mut traps = TrapReceiver::start(&srv, dir.path(), "", &[TRAP_PORT]);
    let backend = Backend::start(&srv, "b1", BACKEND);
    let config = server_yaml(
        dir.path(),
        "server.yaml",
        &lab.ifname("ts"),
        &format!(
            "balancer: {{ health_check: 100ms, unhealthy_threshold: 2, healthy_threshold: 2 }}\n\
             monitor: {{ snmp: {{ enabled: true, listen: \"127.0.0.1:1161\", community: public, \
             trap_targets: [ {{ address: \"127.0.0.1:{TRAP_PORT}\", community: public }} ] }} }}\n"
        ),
    );
    let mut server = Daemon::start_in(srv.name(), &config);
    server.wait_for("listening", WAIT);

    drop(backend);
    let down = traps.next("sssEndpointDown", WAIT);
    let (row, service) = binding(&down, "sssEndpointService");
    assert_eq!(service, "echo", "{down}");
    assert_eq!(
        binding(&down, "sssEndpointAddress"),
        (row.clone(), format!("127.0.0.1:{BACKEND}")),
        "{down}"
    );
    server.find_or_wait(
        "endpoint down",
        &[("endpoint", &format!("127.0.0.1:{BACKEND}"))],
        WAIT,
    );

    let _backend = Backend::start(&srv, "b1", BACKEND);
    let up = traps.next("sssEndpointUp", WAIT);
    assert_eq!(
        binding(&up, "sssEndpointService"),
        (row.clone(), "echo".into()),
        "{up}"
    );
    assert_eq!(binding(&up, "sssEndpointAddress").0, row, "{up}");
    assert!(
        !traps.seen.iter().any(|l| l.contains("Cannot find module")),
        "{}",
        traps.seen.join("\n")
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(WAIT), Some(0), "{}", server.log());
}
