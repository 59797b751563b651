//! The daemons a run measures: watching their CPU and memory in /proc, and for
//! `--local` starting a server and a client (this very binary) with an echo backend
//! behind them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sssonector_actors::{Error, ErrorCode};

use super::report::DaemonUse;

/// Clock ticks per second in `/proc/PID/stat`: USER_HZ, 100 on every Linux ABI.
const TICKS: f64 = 100.0;

/// CPU ticks (user + system) of `pid`, from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set of `pid`, bytes, from `/proc/PID/status`.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A daemon watched over the measured window.
#[derive(Debug)]
pub struct Watch {
    pid: u32,
    start: Option<u64>,
    rss_max: u64,
}

impl Watch {
    /// Starts watching `pid` now.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            start: cpu_ticks(pid),
            rss_max: rss(pid).unwrap_or(0),
        }
    }

    /// Notes the current resident set; called while the load runs.
    pub fn sample(&mut self) {
        self.rss_max = self.rss_max.max(rss(self.pid).unwrap_or(0));
    }

    /// What it used since [`new`](Self::new).
    pub fn finish(mut self) -> DaemonUse {
        self.sample();
        let spent = match (self.start, cpu_ticks(self.pid)) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / TICKS,
            _ => 0.0,
        };
        DaemonUse {
            pid: self.pid,
            cpu_seconds: spent,
            rss_max: self.rss_max,
        }
    }
}

/// The pid a daemon reports on its control socket.
///
/// # Errors
/// `E_UNREACHABLE` or `E_IO` when the socket does not answer.
pub fn pid_of(socket: &Path) -> Result<u32, Error> {
    let request = json!({ "id": 1, "command": "status" });
    let line = crate::ctl::exchange(socket, &request, Duration::from_secs(5))?;
    let reply: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| Error::Internal(format!("status reply is not JSON: {e}")))?;
    reply["data"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| Error::Internal(format!("no pid in the status reply: {line}")))
}

/// A free TCP port on 127.0.0.1 (bound and let go: another process could take it
/// between, which on a test host it does not).
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("a free port", e))
}

/// Reads `path` (YAML, JSON or TOML by its extension) as a tree to lay over both
/// daemons' configurations of a local pair.
///
/// # Errors
/// `E_CONFIG_INVALID` when the file cannot be read or parsed.
pub fn overlay(path: &Path) -> Result<Value, Error> {
    config::Config::builder()
        .add_source(config::File::from(path))
        .build()
        .and_then(config::Config::try_deserialize::<Value>)
        .map_err(|e| {
            Error::Config(sssonector_config::LoadError::Syntax(format!(
                "{}: {e}",
                path.display()
            )))
        })
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (_, Value::Null) => {}
        (b, o) => *b = o.clone(),
    }
}

/// The two configurations of a local pair, before the overlay: the server listens
/// on `port` and forwards the service `bench` to `backend`; the client offers it on
/// `service_port`. `tag` keeps TUN names and inner addresses apart from another
/// pair's on the same host.
fn pair_configs(
    tag: u32,
    port: u16,
    service_port: u16,
    backend: SocketAddr,
) -> [(&'static str, Value); 2] {
    let inner = tag % 250;
    let common = |name: &str| {
        json!({
            "connection": { "drain_timeout": "2s" },
            "control": { "socket": format!("{name}.sock") },
            "logging": { "level": "warn", "format": "json", "file": format!("{name}.log") },
        })
    };
    let mut server = json!({
        "mode": "server",
        "network": { "interface": format!("sssb{tag}s"), "address": format!("10.253.{inner}.1/24") },
        "tunnel": {
            "listen_address": "127.0.0.1", "listen_port": port,
            "cert_file": "server.crt", "key_file": "server.key", "ca_file": "ca.crt",
        },
        "security": { "allowed_clients": ["bench-client"] },
        "services": [ { "name": "bench", "endpoints": [ { "address": backend.to_string() } ] } ],
    });
    let mut client = json!({
        "mode": "client",
        "network": { "interface": format!("sssb{tag}c"), "address": format!("10.253.{inner}.2/24") },
        "tunnel": {
            "servers": [ { "address": format!("127.0.0.1:{port}") } ],
            "server_name": "sssonector-bench",
            "cert_file": "bench-client.crt", "key_file": "bench-client.key", "ca_file": "ca.crt",
        },
        "services": [ { "name": "bench", "listen": format!("127.0.0.1:{service_port}") } ],
    });
    merge(&mut server, &common("server"));
    merge(&mut client, &common("client"));
    [("server", server), ("client", client)]
}

/// A server and a client daemon on this host, with the service `bench` from the
/// client's `service` address to `backend`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct LocalPair {
    /// Where the load goes: the client's service listener.
    pub service: SocketAddr,
    /// The daemons' pids: server, client.
    pub pids: Vec<u32>,
    children: Vec<Child>,
    /// Holds the certificates, configurations, sockets and logs; kept (not
    /// removed) when the pair failed, so its logs can be read.
    dir: Option<tempfile::TempDir>,
}

impl LocalPair {
    /// Starts both, waits until the client has its tunnel; `overlay` is laid over
    /// both configurations (see [`overlay`]).
    ///
    /// # Errors
    /// `E_IO` when a file or process cannot be made, `E_NOT_AVAILABLE` when the
    /// tunnel does not come up within 15 s (the logs are in the folder named).
    pub fn start(backend: SocketAddr, overlay: &Value) -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        crate::cert::generate(
            dir.path(),
            "sssonector-bench",
            &["bench-client".into()],
            2,
            true,
        )?;
        let (port, service_port) = (free_port()?, free_port()?);
        let configs = pair_configs(std::process::id() % 100_000, port, service_port, backend);
        let mut pair = Self {
            service: SocketAddr::from(([127, 0, 0, 1], service_port)),
            pids: Vec::new(),
            children: Vec::new(),
            dir: Some(dir),
        };
        let exe = std::env::current_exe().map_err(|e| Error::io("this program", e))?;
        for (name, mut config) in configs {
            merge(&mut config, overlay);
            let d = pair.dir();
            let path = d.join(format!("{name}.json"));
            std::fs::write(&path, format!("{config:#}\n")).map_err(|e| Error::io(&path, e))?;
            let err_path = d.join(format!("{name}.stderr"));
            let stderr = std::fs::File::create(&err_path).map_err(|e| Error::io(&err_path, e))?;
            let child = Command::new(&exe)
                .args(["run", "--config"])
                .arg(&path)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| Error::io("sssonector run", e))?;
            pair.pids.push(child.id());
            pair.children.push(child);
        }
        pair.wait_tunnel(Duration::from_secs(15))?;
        Ok(pair)
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .expect("the folder is kept only on failure, which ends the pair")
    }

    fn wait_tunnel(&mut self, limit: Duration) -> Result<(), Error> {
        let socket = self.dir().join("client.sock");
        let deadline = Instant::now() + limit;
        let request = json!({ "id": 1, "command": "status" });
        while Instant::now() < deadline {
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(self.failed(&format!("a daemon exited ({status})")));
                }
            }
            if let Ok(line) = crate::ctl::exchange(&socket, &request, Duration::from_secs(1)) {
                let up = serde_json::from_str::<Value>(&line)
                    .map(|r| r["data"]["tunnel"]["sessions"]["current"] == 1)
                    .unwrap_or(false);
                if up {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.failed("no tunnel within 15 s"))
    }

    /// The error for a pair that did not come up; keeps its folder for the logs.
    fn failed(&mut self, what: &str) -> Error {
        let kept = self.dir.take().map(tempfile::TempDir::keep);
        Error::Session {
            code: ErrorCode::NotAvailable,
            message: format!(
                "local pair: {what} (it needs root for its TUN devices); configurations and logs kept in {}",
                kept.as_deref().unwrap_or(Path::new("?")).display()
            ),
        }
    }
}

impl Drop for LocalPair {
    fn drop(&mut self) {
        crate::stop_children(&mut self.children);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_merges_sections_and_replaces_values_and_lists() {
        let [(_, mut server), (_, client)] =
            pair_configs(7, 1000, 1001, "127.0.0.1:9".parse().expect("addr"));
        merge(
            &mut server,
            &json!({ "throttle": { "rate": "1GB" }, "tunnel": { "listen_port": 2000 },
                     "services": [ { "name": "other" } ], "mode": null }),
        );
        assert_eq!(server["throttle"]["rate"], "1GB");
        assert_eq!(server["tunnel"]["listen_port"], 2000);
        assert_eq!(server["tunnel"]["cert_file"], "server.crt");
        assert_eq!(server["services"], json!([{ "name": "other" }]));
        assert_eq!(server["mode"], "server", "null leaves a value alone");
        assert_eq!(server["control"]["socket"], "server.sock");
        assert_eq!(client["tunnel"]["servers"][0]["address"], "127.0.0.1:1000");
        assert_eq!(client["network"]["interface"], "sssb7c");
    }

    #[test]
    fn this_process_reads_its_own_cpu_and_memory() {
        let me = std::process::id();
        let w = Watch::new(me);
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let used = w.finish();
        assert!(used.cpu_seconds > 0.05, "{used:?}");
        assert!(used.rss_max > 1 << 20, "{used:?}");
    }
}
