//! The configuration schema: every section and field, its default and its meaning.
//!
//! Section and field names follow the original SSSonector's `AppConfig` so its users
//! can move their files over. Each field's doc says the unit, the default and whether a
//! reload (SIGHUP or `ctl reload`) applies it live. Defaults live in [`defaults`] as
//! named constants so the README, the code and the tests quote the same numbers.
//!
//! Unknown keys are refused (a typo must not be silently ignored); see
//! [`load`](crate::load), which reports every unknown key and every bad value at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::value::{list_or_csv, DurationValue, FileMode, HostPort, Parsed, Port};

/// Default values, one constant each.
pub mod defaults {
    use std::time::Duration;

    /// `network.interface`.
    pub const INTERFACE: &str = "sssonector0";
    /// `network.mtu`, bytes: Ethernet's payload, so inner packets need no fragmenting
    /// on common paths.
    pub const MTU: u32 = 1500;
    /// `tunnel.listen_address`.
    pub const LISTEN_ADDRESS: &str = "0.0.0.0";
    /// `tunnel.listen_port`.
    pub const LISTEN_PORT: u16 = 8443;
    /// `tunnel.keepalive`: interval between tunnel pings.
    pub const TUNNEL_KEEPALIVE: Duration = Duration::from_secs(30);
    /// `tunnel.busy_poll`: how long a data thread with nothing to do polls before it
    /// sleeps; off. Once the session writer batched small frames, polling cost more
    /// than it saved: on 2 cores it took a quarter of the daemons' CPU under
    /// keep-alive load, and 300µs of it gave no ping gain in alternating runs at 0.4
    /// CPU-s/GB more in bulk (README, Performance).
    pub const BUSY_POLL: Duration = Duration::ZERO;
    /// Longest `tunnel.busy_poll` accepted.
    pub const BUSY_POLL_MAX: Duration = Duration::from_millis(10);
    /// Weight of a server or endpoint that names none.
    pub const WEIGHT: u32 = 1;
    /// `tunnel.max_pending_handshakes`.
    pub const MAX_PENDING_HANDSHAKES: u32 = 256;
    /// `tunnel.max_pending_per_source`.
    pub const MAX_PENDING_PER_SOURCE: u32 = 16;
    /// `connection.max_connections`.
    pub const MAX_CONNECTIONS: u32 = 1000;
    /// `connection.keepalive_idle`: TCP keepalive idle time.
    pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
    /// `connection.retry_attempts`.
    pub const RETRY_ATTEMPTS: u32 = 3;
    /// `connection.retry_interval`.
    pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
    /// `connection.retry_max_interval`.
    pub const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(5);
    /// `connection.connect_timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `connection.drain_timeout`.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `balancer.health_check`.
    pub const HEALTH_CHECK: Duration = Duration::from_secs(10);
    /// `balancer.retry_timeout`.
    pub const RETRY_TIMEOUT: Duration = Duration::from_secs(5);
    /// `balancer.max_retries`.
    pub const MAX_RETRIES: u32 = 3;
    /// `balancer.healthy_threshold`.
    pub const HEALTHY_THRESHOLD: u32 = 2;
    /// `balancer.unhealthy_threshold`.
    pub const UNHEALTHY_THRESHOLD: u32 = 3;
    /// `breaker.max_failures`.
    pub const MAX_FAILURES: u32 = 5;
    /// `breaker.reset_timeout`.
    pub const RESET_TIMEOUT: Duration = Duration::from_secs(30);
    /// `breaker.half_open_max_calls`.
    pub const HALF_OPEN_MAX_CALLS: u32 = 1;
    /// `breaker.failure_window`.
    pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
    /// `throttle.rate`, bytes per second: 100 Mbit/s.
    pub const RATE: u64 = 12_500_000;
    /// `throttle.burst`, bytes.
    pub const BURST: u64 = 1 << 20;
    /// The largest frame the tunnel sends, bytes; a bucket smaller than this could never
    /// pass one, so `throttle.burst` must be at least this.
    pub const MAX_FRAME: u64 = 64 * 1024;
    /// `throttle.cleanup_time`: idle buckets are dropped after this.
    pub const CLEANUP_TIME: Duration = Duration::from_secs(300);
    /// `throttle.requests.burst`.
    pub const REQUEST_BURST: u32 = 20;
    /// The largest `throttle.*.weight`: enough to express any sensible ratio, small
    /// enough that weighted shares never overflow.
    pub const MAX_WEIGHT: u32 = 1000;
    /// `monitor.prometheus.listen`.
    pub const PROMETHEUS_LISTEN: &str = "127.0.0.1:9650";
    /// `monitor.snmp.listen`: an unprivileged port by default.
    pub const SNMP_LISTEN: &str = "127.0.0.1:1161";
    /// `monitor.snmp.engine_file`.
    pub const SNMP_ENGINE_FILE: &str = "/var/lib/sssonector/snmp-engine.json";
    /// `monitor.snmp.cert_warning`: how long before our certificate expires the
    /// sssCertExpiring notification starts, daily. 30 days leaves a monthly renewal
    /// job one run to notice.
    pub const CERT_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// `security.cert_check_interval`: how often the certificate files are looked
    /// at. A stat of four files every 10 s costs nothing and puts a renewal in use
    /// well within a minute.
    pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
    /// `control.socket`.
    pub const CONTROL_SOCKET: &str = "/run/sssonector/control.sock";
    /// `control.mode`: owner only.
    pub const CONTROL_MODE: u32 = 0o600;
    /// `control.idle_timeout`.
    pub const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `control.max_connections`: far more than any operator's scripts hold open, and
    /// few enough that idle clients cannot grow the daemon's memory without bound.
    pub const CONTROL_MAX_CONNECTIONS: u32 = 64;
}

/// The whole configuration of one daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// `server` or `client`. Required. Reload: needs a restart.
    pub mode: Option<Mode>,
    /// The TUN interface.
    pub network: Network,
    /// The TLS tunnel between the two daemons.
    pub tunnel: Tunnel,
    /// Forwarded TCP services (layer 4).
    pub services: Vec<Service>,
    /// Connection limits and TCP behaviour.
    pub connection: Connection,
    /// Load balancing and health checks of service endpoints and tunnel servers.
    pub balancer: Balancer,
    /// Circuit breaker per endpoint.
    pub breaker: Breaker,
    /// Token-bucket rate limiting.
    pub throttle: Throttle,
    /// Access control, TLS policy and audit.
    pub security: Security,
    /// Prometheus and SNMP.
    pub monitor: Monitor,
    /// The control socket for `sssonector ctl`.
    pub control: Control,
    /// Logging.
    pub logging: Logging,
}

/// Which end of the tunnel this daemon is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Accepts tunnels and serves the services' endpoints.
    Server,
    /// Dials a server and exposes its services locally.
    Client,
}

impl Mode {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
        }
    }
}

/// `network`: the TUN interface (layer 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// Interface name, at most 15 bytes. Default `sssonector0`. Reload: restart needed.
    pub interface: String,
    /// This host's inner address with prefix length, e.g. `10.99.0.1/24`. Required.
    /// Reload: restart needed.
    pub address: Option<Parsed<IpNet>>,
    /// MTU of the interface, bytes (576..=65535, 1280 or more for IPv6). Default 1500.
    /// Reload: restart needed.
    pub mtu: u32,
    /// Extra networks routed into the tunnel (CIDR list or comma-separated string).
    /// Default none. Reload: live.
    #[serde(deserialize_with = "list_or_csv")]
    pub routes: Vec<Parsed<IpNet>>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            interface: defaults::INTERFACE.into(),
            address: None,
            mtu: defaults::MTU,
            routes: Vec::new(),
        }
    }
}

/// `tunnel`: the mutually authenticated TLS connection between the daemons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tunnel {
    /// Server: the address to listen on. Default `0.0.0.0`. Reload: restart needed.
    pub listen_address: Parsed<IpAddr>,
    /// Server: the TCP port to listen on. Default 8443. Reload: restart needed.
    pub listen_port: Port,
    /// Client: the servers to dial, in failover order. Reload: live (new dials).
    pub servers: Vec<ServerEntry>,
    /// Client: the name the server's certificate must carry. Required for a client.
    pub server_name: String,
    /// This daemon's certificate chain (PEM). Required. Reload: new handshakes.
    pub cert_file: Option<PathBuf>,
    /// This daemon's private key (PEM). Required. Reload: new handshakes.
    pub key_file: Option<PathBuf>,
    /// The CA that signs the peers' certificates (PEM). Required.
    pub ca_file: Option<PathBuf>,
    /// Frame compression offered: `none`, `lz4` or `zstd`. Default none.
    pub compression: Compression,
    /// Interval between tunnel pings; the peer is dead after three missed. Default 30s.
    pub keepalive: DurationValue,
    /// Threads of the data path (packet I/O and encryption); 0 picks half the cores
    /// (at least 1, at most 8), leaving the rest to the kernel's network stack, which
    /// does as much of the work. A client runs one session, so it uses 1. Default 0.
    /// Reload: restart needed.
    pub threads: u32,
    /// How long a data thread that ran out of work keeps polling its sockets and the
    /// TUN device (yielding the core to anyone else runnable) before it sleeps. A
    /// sleeping thread takes tens of microseconds to wake on a virtual machine, several
    /// times per round trip; polling saves that at the cost of some CPU. `0s` turns it
    /// off. At most 10ms. Default 0s (off). Reload: live.
    pub busy_poll: DurationValue,
    /// Server: TLS and session handshakes under way at once, from all sources; a
    /// connection beyond it is closed at once. Default 256. Reload: live.
    pub max_pending_handshakes: u32,
    /// Server: handshakes under way at once from one source address. Default 16.
    /// Reload: live.
    pub max_pending_per_source: u32,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self {
            listen_address: Parsed::parse(defaults::LISTEN_ADDRESS),
            listen_port: Port::new(defaults::LISTEN_PORT),
            servers: Vec::new(),
            server_name: String::new(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            compression: Compression::None,
            keepalive: DurationValue::of(defaults::TUNNEL_KEEPALIVE),
            threads: 0,
            busy_poll: DurationValue::of(defaults::BUSY_POLL),
            max_pending_handshakes: defaults::MAX_PENDING_HANDSHAKES,
            max_pending_per_source: defaults::MAX_PENDING_PER_SOURCE,
        }
    }
}

/// A tunnel server a client may dial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// `host:port`.
    pub address: Parsed<HostPort>,
    /// Share of new tunnels under weighted balancing; at least 1. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    defaults::WEIGHT
}

/// Frame compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// LZ4: cheap, modest ratio.
    Lz4,
    /// Zstandard: better ratio, more CPU.
    Zstd,
}

/// A forwarded TCP service (layer 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Name both ends agree on: letters, digits, `-`, `_`.
    pub name: String,
    /// Client: local address to accept connections on, e.g. `127.0.0.1:8080`.
    #[serde(default)]
    pub listen: Option<Parsed<SocketAddr>>,
    /// Server: how to pick an endpoint. Default round_robin.
    #[serde(default)]
    pub strategy: Strategy,
    /// Server: the backends.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Server: the session identities (see `security.allowed_clients`, same entry
    /// forms) that may open streams to this service; empty (default) = every client
    /// the tunnel admitted. Others get `E_ACCESS_DENIED`. Reload: new streams.
    #[serde(default, deserialize_with = "list_or_csv")]
    pub allowed_clients: Vec<String>,
}

/// Load-balancing strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest active streams.
    LeastConnections,
    /// Smooth weighted round robin, as nginx does it: weights 1 and 2 give
    /// b,a,b,b,a,b (each its share per round, no bursts).
    WeightedRoundRobin,
}

/// A backend of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `host:port`.
    pub address: Parsed<HostPort>,
    /// Weight for weighted round robin; at least 1. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// `connection`: limits and TCP behaviour of tunnels and streams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connection {
    /// Most tunnels (server) or streams at once; beyond it, `E_CONN_LIMIT`. Default 1000.
    pub max_connections: u32,
    /// TCP keepalive on tunnel and stream sockets. Default true.
    pub keepalive: bool,
    /// TCP keepalive idle time before the first probe. Default 60s.
    pub keepalive_idle: DurationValue,
    /// Dial attempts at `retry_interval` before exponential backoff. Default 3.
    pub retry_attempts: u32,
    /// Pause between the first dial attempts. Default 5s.
    pub retry_interval: DurationValue,
    /// Longest pause between dials once backing off (never below `retry_interval`):
    /// a server that refuses is retried this often; one that is down is probed
    /// every 250 ms anyway. Default 5s. Reload: live.
    pub retry_max_interval: DurationValue,
    /// Time allowed for TCP connect plus TLS handshake. Default 10s.
    pub connect_timeout: DurationValue,
    /// On stop, time given to live connections to finish before they are cut.
    /// Default 30s.
    pub drain_timeout: DurationValue,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            max_connections: defaults::MAX_CONNECTIONS,
            keepalive: true,
            keepalive_idle: DurationValue::of(defaults::KEEPALIVE_IDLE),
            retry_attempts: defaults::RETRY_ATTEMPTS,
            retry_interval: DurationValue::of(defaults::RETRY_INTERVAL),
            retry_max_interval: DurationValue::of(defaults::RETRY_MAX_INTERVAL),
            connect_timeout: DurationValue::of(defaults::CONNECT_TIMEOUT),
            drain_timeout: DurationValue::of(defaults::DRAIN_TIMEOUT),
        }
    }
}

/// `balancer`: health checks and failover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Balancer {
    /// Interval between active health checks. Default 10s. Reload: live.
    pub health_check: DurationValue,
    /// Total time a new stream may spend failing over. Default 5s. Reload: live.
    pub retry_timeout: DurationValue,
    /// Other endpoints tried after a failed connect. Default 3. Reload: live.
    pub max_retries: u32,
    /// Successes in a row that mark an endpoint healthy. Default 2. Reload: live.
    pub healthy_threshold: u32,
    /// Failures in a row that mark an endpoint unhealthy. Default 3. Reload: live.
    pub unhealthy_threshold: u32,
}

impl Default for Balancer {
    fn default() -> Self {
        Self {
            health_check: DurationValue::of(defaults::HEALTH_CHECK),
            retry_timeout: DurationValue::of(defaults::RETRY_TIMEOUT),
            max_retries: defaults::MAX_RETRIES,
            healthy_threshold: defaults::HEALTHY_THRESHOLD,
            unhealthy_threshold: defaults::UNHEALTHY_THRESHOLD,
        }
    }
}

/// `breaker`: the circuit breaker of each endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Breaker {
    /// Failures within `failure_window` that open the breaker. Default 5. Reload: live.
    pub max_failures: u32,
    /// Time an open breaker rejects before half-opening. Default 30s. Reload: live.
    pub reset_timeout: DurationValue,
    /// Trial calls let through while half-open. Default 1. Reload: live.
    pub half_open_max_calls: u32,
    /// Window in which failures are counted. Default 60s. Reload: live.
    pub failure_window: DurationValue,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            max_failures: defaults::MAX_FAILURES,
            reset_timeout: DurationValue::of(defaults::RESET_TIMEOUT),
            half_open_max_calls: defaults::HALF_OPEN_MAX_CALLS,
            failure_window: DurationValue::of(defaults::FAILURE_WINDOW),
        }
    }
}

/// `throttle`: token-bucket rate limiting of what this daemon sends into the tunnel.
///
/// Each connection (a tunnel peer's packets, a service stream's bytes) has its own
/// bucket; `global_rate` is shared fairly by all of them. `services` and `clients`
/// override the per-connection numbers, and `requests` limits how fast one client
/// (certificate name or source address) may open connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttle {
    /// Whether limiting is on. Default false. Reload: live, also for open connections.
    pub enabled: bool,
    /// Per-connection rate, bytes per second. Default 12500000 (100 Mbit/s). Reload:
    /// live, also for open connections.
    pub rate: u64,
    /// Per-connection bucket size, bytes; at least 65536 (one frame). Default 1048576.
    /// Reload: live.
    pub burst: u64,
    /// Rate shared fairly by all connections, bytes per second; 0 = no global limit.
    /// Default 0. Reload: live.
    pub global_rate: u64,
    /// Idle time after which a request limiter's bucket for one client is dropped.
    /// Default 5m. Reload: live.
    pub cleanup_time: DurationValue,
    /// New connections and handshakes per client. Reload: live.
    pub requests: Requests,
    /// Per-service overrides of `rate`, `burst` and `weight`, by service name.
    /// Default none. Reload: live.
    pub services: BTreeMap<String, ThrottleOverride>,
    /// Per-client overrides, by client certificate name (server) or tunnel server
    /// name (client). A stream with both a service and a client override takes the
    /// service's. Default none. Reload: live.
    pub clients: BTreeMap<String, ThrottleOverride>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            enabled: false,
            rate: defaults::RATE,
            burst: defaults::BURST,
            global_rate: 0,
            cleanup_time: DurationValue::of(defaults::CLEANUP_TIME),
            requests: Requests::default(),
            services: BTreeMap::new(),
            clients: BTreeMap::new(),
        }
    }
}

/// `throttle.requests`: a token bucket per client key (certificate name, or source
/// address before the handshake) for new tunnel connections, handshakes and
/// streams; one over the limit is refused with `E_RATE_LIMITED`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requests {
    /// Requests per second per client; 0 = no request limit. Default 0.
    pub rate: u32,
    /// Requests one client may make at once after a quiet spell; at least 1 when
    /// `rate` is set. Default 20.
    pub burst: u32,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            rate: 0,
            burst: defaults::REQUEST_BURST,
        }
    }
}

/// `throttle.services.<name>` and `throttle.clients.<name>`: what differs from the
/// `throttle` defaults for those connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleOverride {
    /// Per-connection rate, bytes per second. Default: `throttle.rate`.
    pub rate: Option<u64>,
    /// Per-connection bucket size, bytes, at least 65536. Default: `throttle.burst`.
    pub burst: Option<u64>,
    /// Share of `global_rate` relative to other connections, 1 to 1000. Default 1.
    pub weight: Option<u32>,
}

/// `security`: who may connect and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// TLS policy.
    pub tls: Tls,
    /// Certificate names allowed to connect, each matched against the subject CN,
    /// DNS SANs and URI SANs: an exact name, `*.example.org` (one DNS label) or a
    /// URI path prefix such as `spiffe://example.org/ns/prod/*`. The name that
    /// matched is the session's identity. Empty (default) = any certificate the CA
    /// signed, identified by its CN. List or comma-separated string. Reload: new
    /// sessions.
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_clients: Vec<String>,
    /// Server: the inner addresses each client certificate name may claim, as CIDR
    /// lists, e.g. `{ client1: [10.99.0.2/32] }`. A name without an entry may claim
    /// any free address of the server's subnet. Default none. Reload: new sessions.
    pub client_addresses: BTreeMap<String, Vec<Parsed<IpNet>>>,
    /// Server: the inner destinations each client identity may send packets to,
    /// as CIDR lists, e.g. `{ client1: [10.99.0.0/24] }`; other packets from it are
    /// dropped (counted as `destination_denied`). An identity without an entry may
    /// reach anything. Default none. Reload: live, also for sessions already up.
    pub client_destinations: BTreeMap<String, Vec<Parsed<IpNet>>>,
    /// Source networks allowed to connect; empty = all. Reload: live.
    #[serde(deserialize_with = "list_or_csv")]
    pub allow_cidrs: Vec<Parsed<IpNet>>,
    /// Source networks refused; wins over `allow_cidrs`. Reload: live.
    #[serde(deserialize_with = "list_or_csv")]
    pub deny_cidrs: Vec<Parsed<IpNet>>,
    /// Certificate revocation list (PEM or DER). Default none. Reload: live.
    pub crl_file: Option<PathBuf>,
    /// File that security events are appended to as JSON lines. Default none.
    pub audit_log: Option<PathBuf>,
    /// User to run as once the TUN device is open and the ports are bound, keeping
    /// only CAP_NET_ADMIN (for routes); name or numeric uid. Default none: stay as
    /// started. Reload: restart needed.
    pub user: Option<String>,
    /// Group to run as with `user`; name or numeric gid. Default: the user's primary
    /// group. Reload: restart needed.
    pub group: Option<String>,
    /// How often `tunnel.cert_file`, `key_file`, `ca_file` and `crl_file` are checked
    /// for a change (size and modification time, then content); a change is put in
    /// use for new handshakes. Default 10s. Reload: live.
    pub cert_check_interval: DurationValue,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            tls: Tls::default(),
            allowed_clients: Vec::new(),
            client_addresses: BTreeMap::new(),
            client_destinations: BTreeMap::new(),
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            crl_file: None,
            audit_log: None,
            cert_check_interval: DurationValue::of(defaults::CERT_CHECK_INTERVAL),
            user: None,
            group: None,
        }
    }
}

/// `security.tls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Tls {
    /// Lowest TLS version accepted: `"1.3"` (default) or `"1.2"`.
    pub min_version: TlsVersion,
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 (RFC 8446).
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

/// `monitor`: Prometheus and SNMP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Monitor {
    /// The Prometheus endpoint.
    pub prometheus: Prometheus,
    /// The SNMP agent.
    pub snmp: Snmp,
}

/// `monitor.prometheus`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prometheus {
    /// Whether `/metrics` is served. Default false.
    pub enabled: bool,
    /// HTTP listen address. Default `127.0.0.1:9650`.
    pub listen: Parsed<SocketAddr>,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: Parsed::parse(defaults::PROMETHEUS_LISTEN),
        }
    }
}

/// `monitor.snmp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snmp {
    /// Whether the agent runs, and notifications are sent. Default false. Reload:
    /// restart needed.
    pub enabled: bool,
    /// UDP listen address. Default `127.0.0.1:1161`. Reload: restart needed.
    pub listen: Parsed<SocketAddr>,
    /// SNMPv2c read-only community, also the community of v2c notifications whose
    /// target names none; none = v2c off. Reload: live.
    pub community: Option<Secret>,
    /// SNMPv3 USM users. Reload: live.
    pub users: Vec<SnmpUser>,
    /// Where notifications (SNMPv2-Trap) go. Default none: no notifications. Reload:
    /// live.
    pub trap_targets: Vec<TrapTarget>,
    /// sysContact: who looks after this daemon. Reload: live.
    pub contact: String,
    /// sysLocation: where it runs. Reload: live.
    pub location: String,
    /// Where the SNMPv3 engine keeps its ID and boot count (RFC 3414 §2.2: boots
    /// must grow across restarts, or old messages could be replayed). Written at each
    /// start when `users` is set. Default `/var/lib/sssonector/snmp-engine.json`.
    /// Reload: needs a restart.
    pub engine_file: PathBuf,
    /// How long before our certificate (`tunnel.cert_file`) expires it is reported
    /// by an sssCertExpiring notification, at most once a day; an expired one is
    /// reported too. Checked at start and hourly. Default 30 days. Reload: live.
    pub cert_warning: DurationValue,
}

impl Default for Snmp {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: Parsed::parse(defaults::SNMP_LISTEN),
            community: None,
            users: Vec::new(),
            trap_targets: Vec::new(),
            contact: String::new(),
            location: String::new(),
            engine_file: PathBuf::from(defaults::SNMP_ENGINE_FILE),
            cert_warning: DurationValue::of(defaults::CERT_WARNING),
        }
    }
}

/// An SNMPv3 user (authPriv).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnmpUser {
    /// USM user name.
    pub name: String,
    /// Authentication protocol. Default sha256.
    #[serde(default)]
    pub auth_protocol: AuthProtocol,
    /// Authentication password, at least 8 characters (RFC 3414 §11.2).
    pub auth_password: Secret,
    /// Privacy protocol. Default aes (AES-128-CFB, RFC 3826).
    #[serde(default)]
    pub priv_protocol: PrivProtocol,
    /// Privacy password, at least 8 characters.
    pub priv_password: Secret,
}

/// USM authentication protocol (RFC 3414, RFC 7860).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthProtocol {
    /// HMAC-SHA-96 (RFC 3414), for old NMS tools only.
    Sha,
    /// HMAC-192-SHA-256 (RFC 7860).
    #[default]
    Sha256,
    /// HMAC-384-SHA-512 (RFC 7860).
    Sha512,
}

/// USM privacy protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrivProtocol {
    /// AES-128-CFB (RFC 3826).
    #[default]
    Aes,
}

/// Where SNMP notifications are sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrapTarget {
    /// `host:port`, usually port 162.
    pub address: Parsed<HostPort>,
    /// Community for SNMPv2-Trap; defaults to `monitor.snmp.community`.
    #[serde(default)]
    pub community: Option<Secret>,
    /// USM user for SNMPv3 notifications instead of v2c.
    #[serde(default)]
    pub user: Option<String>,
}

/// `control`: the Unix socket of `sssonector ctl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Control {
    /// Socket path. Default `/run/sssonector/control.sock`. Reload: needs a restart.
    pub socket: PathBuf,
    /// Socket permission bits, octal. Default `"0600"`. Reload: needs a restart.
    pub mode: Parsed<FileMode>,
    /// A client that sends no request for this long is disconnected. Default 30s.
    pub idle_timeout: DurationValue,
    /// Clients served at once; one more is answered `E_CONN_LIMIT` and closed.
    /// Default 64. Reload: needs a restart.
    pub max_connections: u32,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(defaults::CONTROL_SOCKET),
            mode: Parsed::from_value(FileMode(defaults::CONTROL_MODE)),
            idle_timeout: DurationValue::of(defaults::CONTROL_IDLE_TIMEOUT),
            max_connections: defaults::CONTROL_MAX_CONNECTIONS,
        }
    }
}

/// `logging`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Logging {
    /// Least severe level written. Default info. Reload: live (also `ctl log.level`).
    pub level: LogLevel,
    /// `json` (default) or `term`. Reload: needs a restart.
    pub format: LogFormat,
    /// File to append to instead of standard error. Reload: needs a restart.
    pub file: Option<PathBuf>,
}

/// Log severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// An operator must act.
    Error,
    /// Degraded but self-healing.
    Warn,
    /// Lifecycle.
    #[default]
    Info,
    /// Per connection.
    Debug,
    /// Per packet.
    Trace,
}

impl LogLevel {
    /// All levels, most severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The level's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown log level {s:?}, expected error, warn, info, debug or trace")
            })
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Term,
}
