//! Network namespaces for end-to-end tunnel tests: each test takes a [`Lab`] whose
//! token makes its namespace and interface names unique, builds [`Netns`] joined by
//! veth pairs, runs commands inside them with a time limit, and leaves nothing behind:
//! dropping a `Netns`, also while a test panics, kills what still runs inside it and
//! deletes it.
//!
//! Namespaces are global to the machine, so their names carry the full process id and
//! a per-process counter. Interfaces live inside the namespaces (veths are created
//! there directly, TUN devices by daemons running there), so their names only need to
//! be unique per test; they still carry the token to make listings readable, and stay
//! within the kernel's 15 bytes.

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where `ip netns add` mounts a namespace.
const NETNS_DIR: &str = "/run/netns";

/// Longest interface name the kernel accepts: IFNAMSIZ (16) minus the NUL.
pub const IFNAME_MAX: usize = 15;

/// Time allowed to [`Netns::exec`]; every command the tests run ends well before.
pub const EXEC_LIMIT: Duration = Duration::from_secs(60);

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(20);

/// Labs made by this process so far: the second half of every token.
static LABS: AtomicU32 = AtomicU32::new(0);

/// One test's share of the machine: a token that makes its names unique among all
/// tests running now, in this process or another.
pub struct Lab {
    /// Process id: namespace names carry all of it, since namespaces are global.
    pid: u32,
    /// This lab's number within the process.
    id: u32,
    /// veth pairs made so far, to name the next one.
    links: AtomicU32,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// A lab with a fresh token.
    pub fn new() -> Self {
        Self {
            pid: std::process::id(),
            id: LABS.fetch_add(1, Ordering::Relaxed),
            links: AtomicU32::new(0),
        }
    }

    /// Creates the namespace `sst<pid>-<lab>-<role>` with `lo` up.
    pub fn netns(&self, role: &str) -> Netns {
        Netns::create(format!("sst{}-{}-{role}", self.pid, self.id))
    }

    /// An interface name `<role>-<pid % 1000>-<lab>`; panics beyond [`IFNAME_MAX`].
    pub fn ifname(&self, role: &str) -> String {
        let name = format!("{role}-{}-{}", self.pid % 1000, self.id);
        assert!(
            name.len() <= IFNAME_MAX,
            "interface name {name:?} longer than {IFNAME_MAX} bytes: use a shorter role"
        );
        name
    }

    /// Joins `a` and `b` by a veth pair, gives the ends `a_addr`/24 and `b_addr`/24
    /// (plain IPv4 addresses) and brings them up.
    pub fn veth(&self, a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Veth {
        let n = self.links.fetch_add(1, Ordering::Relaxed);
        let veth = Veth {
            a: self.ifname(&format!("v{n}a")),
            b: self.ifname(&format!("v{n}b")),
        };
        // Made inside `a` with its peer moved straight into `b`: the names never
        // appear in the root namespace.
        ip(&[
            "-n", &a.name, "link", "add", &veth.a, "type", "veth", "peer", "name", &veth.b,
            "netns", &b.name,
        ]);
        for (ns, dev, addr) in [(a, &veth.a, a_addr), (b, &veth.b, b_addr)] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        veth
    }
}

/// The two ends of a veth pair made by [`Lab::veth`].
#[derive(Clone, Debug)]
pub struct Veth {
    /// The end in the first namespace.
    pub a: String,
    /// The end in the second namespace.
    pub b: String,
}

/// A network namespace this test created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up. A namespace of that name left by a dead
    /// process that had our pid (killed before its drops ran) is replaced.
    fn create(name: String) -> Self {
        if exists(&name) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a new thread that lives in this namespace: the sockets it makes
    /// (listeners included, wherever they are used later) belong to the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .expect("thread starts")
    }

    /// A free TCP port and a free UDP port on 127.0.0.1 in this namespace (bound and
    /// let go).
    pub fn free_ports(&self) -> (u16, u16) {
        self.thread(|| {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
            let port = |a: std::io::Result<std::net::SocketAddr>| a.expect("bound").port();
            (port(tcp.local_addr()), port(udp.local_addr()))
        })
        .join()
        .expect("the port thread ends")
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`, to add arguments and standard streams to. `ip`
    /// execs `program` in place, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output; killed after
    /// [`EXEC_LIMIT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_within(args, EXEC_LIMIT)
    }

    /// Runs `args` inside the namespace and returns its output; killed after `limit`
    /// (the output then has the status of a killed process).
    pub fn exec_within(&self, args: &[&str], limit: Duration) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        let mut cmd = self.command(program);
        cmd.args(rest);
        output_within(cmd, limit)
    }

    /// Like [`exec`](Self::exec), and panics with its output unless it succeeded.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `args` inside the namespace, standard streams discarded; killed when the
    /// returned guard drops.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let (program, rest) = args.split_first().expect("a program to run");
        let child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("in {}: {args:?} does not start: {e}", self.name));
        Spawned::new(child)
    }

    /// Sends `count` pings to `addr` 0.2 s apart, each given 1 s to answer; true when
    /// every one was answered.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        self.ping_replies(addr, count) == count
    }

    /// Sends `count` pings to `addr` 0.2 s apart and returns how many were answered.
    pub fn ping_replies(&self, addr: &str, count: u32) -> u32 {
        let count_arg = count.to_string();
        // Deadline: the sending time plus a second for the last answer, plus slack.
        let deadline = (count / 5 + 3).to_string();
        let out = self.exec(&[
            "ping", "-n", "-q", "-c", &count_arg, "-i", "0.2", "-W", "1", "-w", &deadline, addr,
        ]);
        received(&String::from_utf8_lossy(&out.stdout))
    }

    /// Pings `addr` once at a time until one answer or `limit`; returns the time until
    /// that answer.
    pub fn ping_until(&self, addr: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let out = self.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", addr]);
            if out.status.success() {
                return Some(start.elapsed());
            }
            // An unreachable route fails at once: do not spin.
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits up to `limit` for a TCP socket listening on `port` inside the namespace.
    pub fn wait_listening(&self, port: u16, limit: Duration) -> bool {
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + limit;
        loop {
            let out = self.exec(&["ss", "-H", "-l", "-t", "-n", &filter]);
            if out.status.success() && !out.stdout.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Process ids running inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever still runs inside was started by this test (daemons, socat, ping):
        // a process keeps a deleted namespace alive, so end them first, by pid.
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            // No panic here: it would abort a test that is already unwinding.
            Ok(out) => eprintln!(
                "ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("ip netns del {} did not run: {e}", self.name),
        }
    }
}

/// A child process killed and reaped when dropped, so a failing test leaves no
/// process behind.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
}

impl Spawned {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self { child }
    }

    /// Waits up to `limit` for the process to exit; None (and the process killed)
    /// when it did not.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_within(&mut self.child, limit)
    }
}

impl Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // `kill` does nothing to a child already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `child` to exit; None (and the child killed and reaped)
/// when it did not.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `cmd` with its output collected; killed after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    // Read both pipes while waiting, so a chatty command cannot block on a full one.
    let stdout = collect(child.stdout.take().expect("stdout piped"));
    let stderr = collect(child.stderr.take().expect("stderr piped"));
    let status = match wait_within(&mut child, limit) {
        Some(status) => status,
        None => {
            eprintln!("{cmd:?} killed after {limit:?}");
            child.wait().expect("killed child reaped")
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("reader thread"),
        stderr: stderr.join().expect("reader thread"),
    }
}

/// Reads `pipe` to its end on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `ip args` in the root namespace and panics with its error unless it succeeded.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a namespace called `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// The number of answers in ping's summary line ("3 packets transmitted, 3 received,
/// ..."); 0 when there is none.
fn received(summary: &str) -> u32 {
    summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| {
            l.split(", ")
                .find_map(|part| part.strip_suffix(" received"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}
