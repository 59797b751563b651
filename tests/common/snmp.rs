//! Net-SNMP for the tests: its tools and `snmptrapd` run inside a namespace with the
//! IETF base MIBs and SSSONECTOR-MIB loaded and without the system's configuration.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::{Netns, Spawned};

/// Time snmptrapd gets to say it listens.
const START: Duration = Duration::from_secs(15);

/// The IETF base MIBs, fetched by `.ci/base-mibs.sh` into target/base-mibs.
pub fn base_mibs() -> PathBuf {
    let dir = super::repo().join("target").join("base-mibs");
    let out = Command::new("bash")
        .arg(super::repo().join(".ci/base-mibs.sh"))
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "base-mibs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Net-SNMP's `tool` in `ns` without the system's configuration, with the base MIBs
/// and SSSONECTOR-MIB loaded (`-M`, `-m`): the caller adds the rest.
pub fn net_snmp(ns: &Netns, tool: &str) -> Command {
    let base = base_mibs();
    let persistent = super::repo().join("target").join("snmp-persistent");
    std::fs::create_dir_all(&persistent).expect("dir");
    let mibs = format!(
        "{}:{}",
        base.display(),
        super::repo().join("mibs").display()
    );
    let mut cmd = ns.command("env");
    cmd.arg(format!("SNMPCONFPATH={}", base.display()))
        .arg(format!("SNMP_PERSISTENT_DIR={}", persistent.display()))
        .arg(tool)
        .args(["-M", &mibs, "-m", "SNMPv2-MIB:SSSONECTOR-MIB"]);
    cmd
}

/// snmptrapd inside a namespace, accepting SNMPv2c notifications for community
/// "public" (and whatever `extra` configures) on 127.0.0.1 at each of `ports`, and
/// printing each (`-Lo`) as a header line and a line of tab-separated bindings named
/// by SSSONECTOR-MIB; a thread reads them. Killed on drop.
pub struct TrapReceiver {
    _child: Spawned,
    lines: std::sync::mpsc::Receiver<String>,
    ports: Vec<u16>,
    /// Every line so far.
    pub seen: Vec<String>,
    /// Per notification name and port, the index in `seen` of the last record
    /// returned.
    returned: std::collections::HashMap<String, usize>,
}

impl TrapReceiver {
    /// Starts snmptrapd in `ns` with its configuration (`extra` lines added) in
    /// `dir`, listening on `ports`, and waits until it listens.
    pub fn start(ns: &Netns, dir: &Path, extra: &str, ports: &[u16]) -> Self {
        let conf = dir.join("snmptrapd.conf");
        std::fs::write(&conf, format!("authCommunity log public\n{extra}"))
            .expect("snmptrapd.conf written");
        let listen: Vec<String> = ports.iter().map(|p| format!("udp:127.0.0.1:{p}")).collect();
        let mut cmd = net_snmp(ns, "snmptrapd");
        // Foreground, log to stdout, only our configuration file.
        cmd.args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg(listen.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("snmptrapd runs (apt-get install snmptrapd)");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for (pipe, prefix) in [
            (Box::new(stdout) as Box<dyn Read + Send>, ""),
            (Box::new(stderr), "stderr: "),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        let mut receiver = Self {
            _child: Spawned::new(child),
            lines,
            ports: ports.to_vec(),
            seen: Vec::new(),
            returned: std::collections::HashMap::new(),
        };
        receiver.wait_line(|l| l.starts_with("NET-SNMP version"), START, "its start");
        receiver
    }

    /// Reads lines until one satisfies `matches` (its index in `seen`) or `limit`.
    fn wait_line(&mut self, matches: impl Fn(&str) -> bool, limit: Duration, what: &str) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if matches(self.seen.last().expect("just pushed")) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!(
                    "snmptrapd printed no {what} within {limit:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The bindings of the next notification `name` (after the last one returned)
    /// that came to the first port, waiting up to `limit` for it.
    pub fn next(&mut self, name: &str, limit: Duration) -> String {
        self.next_at(name, self.ports[0], limit)
    }

    /// The bindings of the next notification `name` that came to `port`: its header
    /// line, just before, ends with `->[127.0.0.1]:port]:`.
    pub fn next_at(&mut self, name: &str, port: u16, limit: Duration) -> String {
        let tag = format!("snmpTrapOID.0 = OID: SSSONECTOR-MIB::{name}\t");
        let via = format!("->[127.0.0.1]:{port}]");
        let key = format!("{name}@{port}");
        let is_it = |seen: &[String], i: usize| {
            let l = &seen[i];
            (l.contains(&tag) || l.ends_with(tag.trim_end())) && i > 0 && seen[i - 1].contains(&via)
        };
        let mut i = self.returned.get(&key).map_or(0, |i| i + 1);
        let deadline = Instant::now() + limit;
        loop {
            while i < self.seen.len() {
                if is_it(&self.seen, i) {
                    self.returned.insert(key, i);
                    return self.seen[i].clone();
                }
                i += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "snmptrapd printed no {key} within {limit:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// The instance and value of `object` in a record's bindings: for
/// `SSSONECTOR-MIB::sssPeerName.3 = STRING: c1`, ("3", "c1").
pub fn binding(record: &str, object: &str) -> (String, String) {
    let prefix = format!("SSSONECTOR-MIB::{object}.");
    record
        .split('\t')
        .find_map(|b| b.strip_prefix(&prefix))
        .and_then(|rest| {
            let (instance, value) = rest.split_once(" = ")?;
            let value = value.split_once(": ").map_or(value, |(_, v)| v);
            Some((instance.to_owned(), value.trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| panic!("no {object} in {record}"))
}
