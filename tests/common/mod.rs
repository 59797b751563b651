//! Harness for end-to-end tests of the built `sssonector` binary: temporary folders,
//! certificates from `sssonector cert init`, configs written from templates, daemons
//! started as child processes and killed when the test ends, pass or fail.

#![allow(dead_code)]

pub mod echo;
pub mod netns;
pub mod pair;
pub mod snmp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sssonector"))
}

/// Runs the binary with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("sssonector runs")
}

/// The repository's folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes a CA, `server_name` and `clients` in `dir` with `cert init`.
pub fn cert_init(dir: &Path, server_name: &str, clients: &[&str]) {
    let mut args = vec![
        "cert",
        "init",
        "--dir",
        dir.to_str().expect("utf-8 temp path"),
        "--server-name",
        server_name,
    ];
    for c in clients {
        args.extend(["--client", c]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "cert init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server config in `dir` using the certificates there; `extra` is appended YAML.
pub fn server_yaml(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("server.yaml");
    let text = format!(
        "mode: server\n\
         network: {{ address: 10.99.0.1/24 }}\n\
         tunnel: {{ listen_port: 18443, cert_file: server.crt, key_file: server.key, ca_file: ca.crt }}\n\
         connection: {{ drain_timeout: 5s }}\n\
         control: {{ socket: ctl.sock, idle_timeout: 2s }}\n\
         logging: {{ level: info, format: json }}\n{extra}"
    );
    std::fs::write(&path, text).expect("config written");
    path
}

/// A server daemon in its own temporary folder with fresh certificates (server name
/// `s`, client `c`), already past "daemon started".
pub struct TestServer {
    /// The daemon.
    pub daemon: Daemon,
    /// Its configuration file, `server.yaml` in `dir`.
    pub config: PathBuf,
    /// The folder; removed when the test ends.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server whose config is [`server_yaml`] plus `extra`.
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        cert_init(dir.path(), "s", &["c"]);
        let config = server_yaml(dir.path(), extra);
        let mut daemon = Daemon::start(&config);
        daemon.wait_for("daemon started", Duration::from_secs(10));
        Self {
            daemon,
            config,
            dir,
        }
    }

    /// Replaces the configuration file and sends SIGHUP.
    pub fn reload_with(&mut self, text: &str) {
        std::fs::write(&self.config, text).expect("config rewritten");
        self.daemon.signal(Signal::SIGHUP);
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.daemon.signal(Signal::SIGTERM);
        self.daemon.wait_exit(Duration::from_secs(10))
    }
}

/// A running daemon whose standard error is read line by line as JSON logs.
pub struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl Daemon {
    /// Starts `sssonector run --config path`.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts `sssonector run --config path` with extra environment variables.
    ///
    /// The daemon runs in a private network namespace of its own (`unshare --net`,
    /// which execs in place, so the pid is the daemon's): its TUN interface and
    /// listening port never touch the host's network, and tests may run in parallel.
    /// The kernel removes the namespace when the daemon exits.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--"])
            .arg(env!("CARGO_BIN_EXE_sssonector"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Starts `sssonector run --config path` inside network namespace `netns` with
    /// `ip netns exec`, which execs in place: [`pid`](Self::pid) and the signals
    /// reach the daemon itself.
    pub fn start_in(netns: &str, config: &Path) -> Self {
        Self::start_in_with_env(netns, config, &[])
    }

    /// Starts `run --config <config>` inside the network namespace `netns`, with
    /// `env` added to its environment.
    pub fn start_in_with_env(netns: &str, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(env!("CARGO_BIN_EXE_sssonector"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Spawns `cmd` with standard error read line by line.
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to `limit` for a JSON log line whose `msg` is `msg`, and returns it.
    pub fn wait_for(&mut self, msg: &str, limit: Duration) -> Value {
        self.wait_new(|json| json["msg"] == msg, limit, msg)
    }

    /// Reads new lines until one satisfies `matches` (returned) or `limit` passes.
    fn wait_new(&mut self, matches: impl Fn(&Value) -> bool, limit: Duration, what: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let json: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                    if matches(&json) {
                        return json;
                    }
                }
                Err(_) => panic!(
                    "no log line {what:?} within {limit:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits up to `limit` for a log line whose `msg` is `msg` and whose string
    /// `fields` have the given values, looking first at the lines already seen (so
    /// earlier waits cannot have consumed it), and returns it.
    pub fn find_or_wait(&mut self, msg: &str, fields: &[(&str, &str)], limit: Duration) -> Value {
        let matches = |json: &Value| {
            json["msg"] == msg && fields.iter().all(|(k, v)| json[*k].as_str() == Some(*v))
        };
        if let Some(found) = self.seen_json().into_iter().find(|j| matches(j)) {
            return found;
        }
        self.wait_new(matches, limit, &format!("{msg} with {fields:?}"))
    }

    /// Moves the lines printed so far into [`seen`](Self::seen), without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// The lines seen so far, parsed; lines that are not JSON are left out.
    pub fn seen_json(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many lines seen so far have `msg` as their `msg`; call
    /// [`drain`](Self::drain) first to include the latest.
    pub fn seen_msg(&self, msg: &str) -> usize {
        self.seen_json().iter().filter(|j| j["msg"] == msg).count()
    }

    /// Every line seen so far, after a [`drain`](Self::drain): for failure messages.
    pub fn log(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("daemon running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, signal).expect("signal delivered");
    }

    /// Waits up to `limit` for the daemon to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("daemon running");
        loop {
            if let Some(status) = child.try_wait().expect("wait works") {
                self.child = None;
                // Collect what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw control-socket client speaking newline-delimited JSON.
pub struct Control {
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Control {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Self {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("control socket answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout set");
        let writer = stream.try_clone().expect("stream clones");
        Self {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends `bytes` as they are (the caller adds the newline).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.writer.write_all(bytes).expect("request written");
    }

    /// Reads one reply line; None when the daemon closed the connection.
    pub fn read_reply(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("reply not JSON ({e}): {line}")),
            ),
            Err(e) => panic!("reading a reply failed: {e}"),
        }
    }

    /// Sends `{"id": id, "command": command, "args": args}` and returns the reply.
    pub fn call(&mut self, id: u64, command: &str, args: Value) -> Value {
        let request = serde_json::json!({ "id": id, "command": command, "args": args });
        self.send_raw(format!("{request}\n").as_bytes());
        let reply = self.read_reply().expect("a reply");
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }
}

/// Runs `promtool check metrics` on a scrape and asserts it says nothing.
pub fn promtool_check(scrape: &str) {
    use std::io::Write;
    // promtool reads the scrape on stdin and says nothing when it is clean.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("scrape written");
    let checked = promtool.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{scrape}"
    );
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr unless it succeeds.
pub fn openssl_ok(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
