//! The command line: `sssonector <command>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// SSSonector: services on different sites talk over a mutually authenticated
/// TLS 1.3 tunnel, without a VPN.
#[derive(Parser, Debug)]
#[command(name = "sssonector", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (SIGTERM/SIGINT stop it, SIGHUP reloads).
    Run(ConfigArg),
    /// Work with configuration files.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make certificates.
    Cert {
        /// What to make.
        #[command(subcommand)]
        command: CertCommand,
    },
    /// A throwaway demonstration with embedded configuration, no files needed.
    ///
    /// As root (with /dev/net/tun): makes throwaway certificates and two network
    /// namespaces joined by a veth pair, starts a server and a client daemon in them,
    /// brings up the TUN tunnel between them, pings across it both ways, streams TCP
    /// through it with live figures every second, then stops the daemons and removes
    /// the namespaces.
    ///
    /// Without root, or with --loopback: a mutual-TLS echo on loopback between a
    /// server and a client built from the same embedded configuration, with
    /// handshake and throughput figures every second.
    Demo(DemoArgs),
    /// Send a command to a running daemon's control socket (`ctl help` lists them).
    Ctl(CtlArgs),
    /// Drive load through a service of a running SSSonector (or a local pair it starts)
    /// and report throughput, latency and the daemons' CPU and memory.
    Bench(BenchArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `--config FILE`.
#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Configuration file: .yaml, .yml, .json or .toml.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a file: print the effective configuration as JSON (secrets redacted)
    /// and exit 0, or print every problem and exit 2.
    Check(ConfigArg),
}

/// `cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a CA, a server certificate and client certificates in DIR.
    Init(CertInitArgs),
}

/// `cert init` arguments.
#[derive(Args, Debug)]
pub struct CertInitArgs {
    /// Folder to write ca.crt, ca.key, server.crt, server.key, NAME.crt, NAME.key.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The server's name (DNS name or IP address) clients check.
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    /// A client certificate name; repeat for more clients.
    #[arg(long = "client", value_name = "NAME", required = true)]
    pub clients: Vec<String>,
    /// Days the server and client certificates are valid.
    #[arg(long, default_value_t = 397, value_name = "DAYS")]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `demo` arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long traffic runs, e.g. `10s`: the tunnel's traffic (default 5s) or the
    /// loopback echo (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = humantime_duration)]
    pub duration: Option<std::time::Duration>,
    /// Run the mutual-TLS echo on loopback even as root, instead of the tunnel.
    #[arg(long)]
    pub loopback: bool,
}

/// `ctl` arguments.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The daemon's control socket (its `control.socket`).
    #[arg(long, value_name = "PATH", default_value = sssonector_config::defaults::CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Print the raw JSON reply, for scripts.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime_duration)]
    pub timeout: std::time::Duration,
    /// The command, e.g. `status`, `log.level`, `help`.
    pub command: String,
    /// Arguments as key=value; numbers and true/false are sent as JSON values.
    #[arg(value_name = "KEY=VALUE")]
    pub args: Vec<String>,
}

/// What `bench` measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// Request and response: each connection sends a message and waits for its echo.
    Echo,
    /// One-way throughput: each connection streams messages; the echo is verified.
    Bulk,
    /// New connections per second: connect, one message and its echo, close.
    Connect,
}

/// `bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A client-side service address of a running SSSonector whose server forwards to
    /// an echo backend (see `--echo-backend`).
    #[arg(long, value_name = "HOST:PORT", required_unless_present_any = ["local", "config", "echo_backend"], conflicts_with_all = ["local", "config"])]
    pub target: Option<std::net::SocketAddr>,
    /// Start a server and a client daemon and an echo backend on this host (root:
    /// each daemon makes a TUN device), measure through them, stop them.
    #[arg(long)]
    pub local: bool,
    /// Like `--local`, with this file (YAML, JSON or TOML) laid over both daemons'
    /// configurations: its sections merge key by key (e.g. `throttle`, or `tunnel`
    /// with `compression`), its other values and lists replace.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve as the echo backend on this address until stopped, instead of measuring.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["target", "local", "config"])]
    pub echo_backend: Option<std::net::SocketAddr>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: BenchMode,
    /// Concurrent connections.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// How long to measure, after the warm-up.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime_duration)]
    pub duration: std::time::Duration,
    /// Bytes per message, its 32-byte header included.
    #[arg(long, value_name = "BYTES", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(32..=16_777_216))]
    pub payload: u32,
    /// Pause between messages on one connection; 0 = as fast as possible.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime_duration)]
    pub interval: std::time::Duration,
    /// Load before measuring, not counted.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime_duration)]
    pub warmup: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw the latency distribution to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub output: Option<PathBuf>,
    /// A daemon to watch (CPU, RSS); repeat for more. `--local` watches its own.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// A daemon's control socket, to find its pid to watch; repeat for more.
    #[arg(long, value_name = "PATH")]
    pub control: Vec<PathBuf>,
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<sssonector_config::HumanDuration>().map(|d| d.0)
}
