//! Supervision under faults, end to end against the debug build: `ctl fault` makes
//! the balancer, the SNMP agent, the rate limiter and the control socket's actor
//! panic in turn while a stream
//! keeps echoing through the tunnel and a second control client keeps asking for
//! `status`. Each actor must be logged with `E_ACTOR_PANIC`, be serving again
//! within a second (a new stream through the balancer, an `snmpget`, `limits` and
//! `limits.set`, a new control client), and show its restart in `status` and `/metrics`; the tunnel
//! session is the same one at the end.
//!
//! Every test builds its own namespaces (unique names, removed on drop) and every
//! loop is bounded in time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::echo::Backend;
use common::netns::{output_within, Lab};
use common::pair::{Pair, SERVER_INNER, SERVICE, WAIT};
use common::snmp::net_snmp;
use common::{Control, Daemon};
use serde_json::{json, Value};

/// The echo backend's port in the server's namespace.
const BACKEND: u16 = 9101;
/// How soon a restarted actor must be serving again (the acceptance figure).
const SERVING: Duration = Duration::from_secs(1);

/// Waits for the server to exit with 0 after a stop, and returns its log line
/// `msg` (the drain's summary).
fn exit_and_line(pair: &mut Pair, msg: &str) -> Value {
    assert_eq!(
        pair.server.wait_exit(WAIT),
        Some(0),
        "{}",
        pair.server.log()
    );
    pair.server
        .seen_json()
        .into_iter()
        .find(|j| j["msg"] == msg)
        .unwrap_or_else(|| panic!("no {msg:?} line:\n{}", pair.server.log()))
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
fn balancer_snmp_rate_limiter_and_control_restart_after_a_panic_while_the_tunnel_runs() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let (prometheus, snmp) = srv.free_ports();
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
    for actor in ["balancer", "snmp", "ratelimit", "control"] {
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
            "control" => {
                // A new client of the socket, beside the poller that stays connected.
                let status = pair.ctl_ok("server", "status", json!({}));
                assert_eq!(status["components"]["control"], "running", "{status}");
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
    for actor in ["balancer", "snmp", "ratelimit", "control"] {
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

/// A pair with `drain_timeout` on the server and one echo backend, and a stream
/// through it that has echoed once.
fn pair_with_a_stream(lab: &Lab, drain_timeout: &str) -> (Pair, Backend, TcpStream) {
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let pair = Pair::start(
        lab,
        srv,
        "echo",
        &format!("endpoints: [ {{ address: \"127.0.0.1:{BACKEND}\" }} ]"),
        &format!("connection: {{ drain_timeout: {drain_timeout} }}\n"),
        "",
    );
    let stream = pair
        .cli
        .thread(|| -> std::io::Result<TcpStream> {
            let s = TcpStream::connect(SERVICE)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut name = String::new();
            BufReader::new(s.try_clone()?).read_line(&mut name)?;
            assert_eq!(name.trim(), "b1");
            echo(&s, 1)?;
            Ok(s)
        })
        .join()
        .expect("stream thread")
        .expect("a stream through the tunnel");
    (pair, backend, stream)
}

/// Sends 64 bytes of `n` on `s` and reads them back.
fn echo(mut s: &TcpStream, n: u8) -> std::io::Result<()> {
    let data = [n; 64];
    s.write_all(&data)?;
    let mut back = [0u8; 64];
    s.read_exact(&mut back)?;
    if back == data {
        Ok(())
    } else {
        Err(std::io::Error::other("echo differs"))
    }
}

#[test]
fn a_graceful_stop_lets_a_live_stream_finish_and_refuses_new_ones() {
    let lab = Lab::new();
    let (mut pair, _backend, stream) = pair_with_a_stream(&lab, "10s");
    let stopped = Instant::now();
    pair.server.signal(nix::sys::signal::Signal::SIGTERM);
    log_line(&mut pair.server, "daemon stopping", &[], WAIT);
    // The live stream goes on exchanging, slowly, for a second of the drain.
    for n in 2..7 {
        std::thread::sleep(Duration::from_millis(200));
        echo(&stream, n).unwrap_or_else(|e| panic!("exchange {n} during the drain: {e}"));
    }
    // A new stream is refused while draining.
    let refused = pair.cli.thread(new_stream).join().expect("stream thread");
    assert!(
        refused.is_err(),
        "a new stream during the drain: {refused:?}"
    );
    // Its end: our half-close, the backend's answer; then the daemon exits.
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut rest = Vec::new();
    (&stream)
        .read_to_end(&mut rest)
        .expect("the stream ends cleanly");
    assert!(rest.is_empty());
    let drained = exit_and_line(&mut pair, "streams drained");
    let took = stopped.elapsed();
    assert_eq!(
        (drained["drained"].as_u64(), drained["cut"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    eprintln!(
        "stop with a live stream: drained in {} ms, exited after {took:?}",
        drained["waited_ms"]
    );
}

#[test]
fn a_graceful_stop_cuts_a_stream_that_outlives_drain_timeout() {
    const GRACE: Duration = Duration::from_secs(2);
    let lab = Lab::new();
    let (mut pair, _backend, stream) = pair_with_a_stream(&lab, "2s");
    let stopped = Instant::now();
    pair.server.signal(nix::sys::signal::Signal::SIGTERM);
    // The stream stays open and idle: it is cut once the grace period is over.
    let mut rest = Vec::new();
    let cut = (&stream).read_to_end(&mut rest);
    let cut_after = stopped.elapsed();
    let line = exit_and_line(&mut pair, "streams drained, the rest cut");
    let took = stopped.elapsed();
    assert_eq!(
        (line["drained"].as_u64(), line["cut"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(line["code"], "E_STREAM_RESET");
    assert!(
        cut_after >= GRACE && cut_after < GRACE + Duration::from_secs(2),
        "stream cut after {cut_after:?} ({cut:?})"
    );
    assert!(took < GRACE + Duration::from_secs(5), "stop took {took:?}");
    eprintln!("stop with a stuck stream: cut after {cut_after:?}, exited after {took:?}");
}

#[test]
fn an_actor_that_keeps_panicking_is_left_stopped_and_shown_failed() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let backend = Backend::start(&srv, "b1", BACKEND);
    let (_, snmp) = srv.free_ports();
    let mut pair = Pair::start(
        &lab,
        srv,
        "echo",
        &format!("endpoints: [ {{ address: \"127.0.0.1:{BACKEND}\" }} ]"),
        &format!(
            "monitor: {{ snmp: {{ enabled: true, listen: \"127.0.0.1:{snmp}\", community: public }} }}\n"
        ),
        "",
    );
    // Five restarts fit in the window (supervise::MAX_RESTARTS); the sixth panic
    // leaves the agent stopped.
    for n in 1..=5 {
        pair.ctl_ok("server", "fault", json!({ "actor": "snmp" }));
        let deadline = Instant::now() + SERVING;
        while pair.ctl_ok("server", "status", json!({}))["restarts"]["snmp"]["restarts"].as_u64()
            != Some(n)
        {
            assert!(Instant::now() < deadline, "restart {n} not counted");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    pair.ctl_ok("server", "fault", json!({ "actor": "snmp" }));
    let line = log_line(
        &mut pair.server,
        "actor restarted too often, left stopped",
        &[("supervised", "snmp"), ("code", "E_ACTOR_PANIC")],
        SERVING,
    );
    assert_eq!(line["max"], 5, "{line}");
    let status = pair.ctl_ok("server", "status", json!({}));
    assert_eq!(status["components"]["snmp"], "failed", "{status}");
    assert_eq!(status["restarts"]["snmp"]["failed"], true, "{status}");
    let health = pair.ctl_ok("server", "health", json!({}));
    assert_eq!(health["status"], "degraded", "{health}");
    // Everything else goes on: streams through the tunnel, layer 3.
    let name = pair.cli.thread(new_stream).join().expect("stream thread");
    assert_eq!(name.expect("a stream with the agent gone"), "b1");
    assert!(pair.cli.ping(SERVER_INNER, 2), "layer 3");
    drop(backend);
}
