//! Supervision under faults, end to end against the debug build: `ctl fault` makes
//! the balancer, the SNMP agent and the rate limiter panic in turn while a stream
//! keeps echoing through the tunnel and a second control client keeps asking for
//! `status`. Each actor must be logged with `E_ACTOR_PANIC`, be serving again
//! within a second (a new stream through the balancer, an `snmpget`, `limits` and
//! `limits.set`), and show its restart in `status` and `/metrics`; the tunnel
//! session is the same one at the end.
//!
//! Every test builds its own namespaces (unique names, removed on drop) and every
//! loop is bounded in time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::echo::Backend;
use common::netns::{output_within, Lab, Netns};
use common::pair::{Pair, SERVER_INNER, SERVICE, WAIT};
use common::snmp::net_snmp;
use common::{Control, Daemon};
use serde_json::{json, Value};

/// The echo backend's port in the server's namespace.
const BACKEND: u16 = 9101;
/// How soon a restarted actor must be serving again (the acceptance figure).
const SERVING: Duration = Duration::from_secs(1);

/// A free TCP and a free UDP port in `ns`.
fn free_ports(ns: &Netns) -> (u16, u16) {
    ns.thread(|| {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = |a: std::io::Result<std::net::SocketAddr>| a.expect("bound").port();
        (port(tcp.local_addr()), port(udp.local_addr()))
    })
    .join()
    .expect("the port thread ends")
}

/// Waits up to `limit` for a JSON log line of `daemon` with `msg` whose fields
/// match; stderr lines that are not JSON (the panic hook's) are skipped.
fn log_line(daemon: &mut Daemon, msg: &str, fields: &[(&str, &str)], limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        daemon.drain();
        let found = daemon
            .seen_json()
            .into_iter()
            .find(|j| j["msg"] == msg && fields.iter().all(|(k, v)| j[*k].as_str() == Some(*v)));
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {msg:?} {fields:?} within {limit:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One new stream through the service: the backend's name and a 1 KiB echo.
fn new_stream() -> std::io::Result<String> {
    let s = TcpStream::connect(SERVICE)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name)?;
    let data = [0x5a_u8; 1024];
    let mut w = s;
    w.write_all(&data)?;
    let mut back = [0u8; 1024];
    r.read_exact(&mut back)?;
    if back != data {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(name.trim().to_owned())
}

/// A stream that echoes 256 bytes every 20 ms until `stop`; returns how many
/// exchanges succeeded and the longest gap between two of them, or the error that
/// ended it.
fn live_stream(stop: Arc<AtomicBool>, exchanges: Arc<AtomicU64>) -> Result<Duration, String> {
    let s = TcpStream::connect(SERVICE).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut name = String::new();
    r.read_line(&mut name).map_err(|e| e.to_string())?;
    let mut w = s;
    let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
    let mut n: u8 = 0;
    while !stop.load(Relaxed) {
        n = n.wrapping_add(1);
        let data = [n; 256];
        w.write_all(&data).map_err(|e| format!("write: {e}"))?;
        let mut back = [0u8; 256];
        r.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
        if back != data {
            return Err("echo differs".into());
        }
        exchanges.fetch_add(1, Relaxed);
        gap = gap.max(last.elapsed());
        last = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(gap)
}

/// `sample` of a Prometheus scrape (name and labels as printed).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().expect("a number"))
    })
}

#[test]
fn balancer_snmp_and_rate_limiter_restart_after_a_panic_while_the_tunnel_runs() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let (prometheus, snmp) = free_ports(&srv);
    let monitor = format!(
        "monitor: {{ prometheus: {{ enabled: true, listen: \"127.0.0.1:{prometheus}\" }}, \
         snmp: {{ enabled: true, listen: \"127.0.0.1:{snmp}\", community: public }} }}\n\
         throttle: {{ enabled: true, rate: 50000000, burst: 1000000 }}\n"
    );
    let mut pair = Pair::start(
        &lab,
        srv,
        "echo",
        &format!("endpoints: [ {{ address: \"127.0.0.1:{BACKEND}\" }} ]"),
        &monitor,
        "",
    );
    let session = pair.ctl_ok("server", "connections", json!({}));
    let peer_id = session["tunnel"][0]["id"].clone();
    assert_eq!(session["total"], 1, "{session}");

    // A stream that lives through every fault.
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicU64::new(0));
    let live = {
        let (stop, exchanges) = (stop.clone(), exchanges.clone());
        pair.cli.thread(move || live_stream(stop, exchanges))
    };
    // A control client asking for `status` throughout.
    let polls = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, polls) = (stop.clone(), polls.clone());
        let socket = pair.dir.path().join("server.sock");
        std::thread::spawn(move || {
            let mut c = Control::connect(&socket);
            let mut failures = Vec::new();
            let mut id = 0;
            while !stop.load(Relaxed) {
                id += 1;
                let reply = c.call(id, "status", json!({}));
                if reply["ok"] != true {
                    failures.push(reply);
                }
                polls.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };
    let deadline = Instant::now() + WAIT;
    while exchanges.load(Relaxed) < 5 {
        assert!(Instant::now() < deadline, "the live stream never echoed");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut figures = Vec::new();
    for actor in ["balancer", "snmp", "ratelimit"] {
        let before = exchanges.load(Relaxed);
        let injected = Instant::now();
        let reply = pair.ctl_ok("server", "fault", json!({ "actor": actor }));
        assert_eq!(reply["injected"], true, "{reply}");
        let line = log_line(
            &mut pair.server,
            "actor panicked, restarting",
            &[("supervised", actor), ("code", "E_ACTOR_PANIC")],
            SERVING,
        );
        assert!(
            line["panic"]
                .as_str()
                .is_some_and(|p| p.contains("fault injected")),
            "{line}"
        );
        let logged = injected.elapsed();
        // Serving again: what each actor is for.
        match actor {
            "balancer" => {
                let name = pair.cli.thread(new_stream).join().expect("stream thread");
                assert_eq!(name.expect("a new stream after the restart"), "b1");
            }
            "snmp" => {
                let mut cmd = net_snmp(&pair.srv, "snmpget");
                cmd.args(["-v2c", "-c", "public", "-r", "0", "-t", "1", "-OqvU"])
                    .arg(format!("127.0.0.1:{snmp}"))
                    .arg("SSSONECTOR-MIB::sssConnTotal.0");
                let out = output_within(cmd, Duration::from_secs(5));
                let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert!(
                    out.status.success(),
                    "snmpget after the restart: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(text, "1", "one session ever");
            }
            _ => {
                let limits = pair.ctl_ok("server", "limits", json!({}));
                assert_eq!(limits["rate"], 50_000_000, "{limits}");
                pair.ctl_ok("server", "limits.set", json!({ "rate": 40_000_000 }));
                let limits = pair.ctl_ok("server", "limits", json!({}));
                assert_eq!(limits["rate"], 40_000_000, "{limits}");
            }
        }
        let serving = injected.elapsed();
        figures.push((actor, logged, serving));
        assert!(serving < SERVING, "{actor} serving again after {serving:?}");
        // The live stream went on echoing across the restart.
        let deadline = Instant::now() + SERVING;
        while exchanges.load(Relaxed) < before + 3 {
            assert!(
                Instant::now() < deadline,
                "the live stream stalled after {actor}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    eprintln!("fault -> panic logged -> serving again: {figures:?}");

    // Restarts are counted, in `status` and in /metrics.
    let status = pair.ctl_ok("server", "status", json!({}));
    for actor in ["balancer", "snmp", "ratelimit"] {
        assert_eq!(status["restarts"][actor]["restarts"], 1, "{status}");
        assert_eq!(status["restarts"][actor]["failed"], false, "{status}");
    }
    for component in ["balancer", "snmp", "ratelimit", "tunnel", "control"] {
        assert_eq!(status["components"][component], "running", "{status}");
    }
    let url = format!("http://127.0.0.1:{prometheus}/metrics");
    let out = pair.srv.exec(&["curl", "-sf", &url]);
    assert!(out.status.success(), "curl {url}");
    let scrape = String::from_utf8(out.stdout).expect("UTF-8");
    for actor in ["balancer", "snmp", "ratelimit"] {
        let series = format!("sssonector_actor_restarts_total{{actor=\"{actor}\"}}");
        assert_eq!(sample(&scrape, &series), Some(1.0), "{series}");
    }

    // The tunnel never dropped: same session, no other, layer 3 answers, the
    // stream is still echoing.
    assert!(pair.cli.ping(SERVER_INNER, 3), "layer 3 after the faults");
    stop.store(true, Relaxed);
    let gap = live
        .join()
        .expect("stream thread")
        .unwrap_or_else(|e| panic!("the live stream broke: {e}\n{}", pair.logs()));
    let failures = poller.join().expect("poller");
    assert!(failures.is_empty(), "status failed: {failures:?}");
    eprintln!(
        "live stream: {} exchanges, longest gap {gap:?}; {} status polls",
        exchanges.load(Relaxed),
        polls.load(Relaxed)
    );
    let after = pair.ctl_ok("server", "connections", json!({}));
    assert_eq!(after["total"], 1, "{after}");
    assert_eq!(after["tunnel"][0]["id"], peer_id, "{after}");
    pair.client.drain();
    assert_eq!(pair.client.seen_msg("tunnel down"), 0, "{}", pair.logs());
    drop(backend);
}
