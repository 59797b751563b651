//! # sssonector-actors
//!
//! The runtime of an SSSonector daemon: supervised actix actors that exchange typed
//! messages, with the per-packet work kept off the mailboxes.
//!
//! # Layout
//! - [`daemon`]: the root actor; signals, reload, graceful stop. Start it with [`start`].
//! - [`audit`]: security events as JSON lines.
//! - [`control`]: the control socket; [`control::protocol`] is shared with `ctl`.
//! - [`tun`]: the TUN device and the TunAdapter actor that owns it.
//! - [`listener`] (server) and [`dialer`] (client): TLS and session handshakes, ACLs,
//!   reconnecting; each live session is a [`connection`] actor with two I/O tasks.
//! - [`tunnel`]: [`tunnel::tls`] (rustls configurations for mutual TLS),
//!   [`tunnel::codec`] (the frame format, protocol version 1), [`tunnel::session`]
//!   (Hello/Accept and the server's decision), [`tunnel::hub`] (the per-packet path
//!   and routing), [`tunnel::stats`] (the counters).
//! - [`service`] (layer 4): streams multiplexed on a session ([`service::mux`]),
//!   the client's ServiceListeners, and the streams' limits and counters.
//! - [`balancer`] (layer 4): the Balancer actor, one per service (and one for a
//!   client's tunnel servers): picks an endpoint per stream, connects with failover,
//!   runs health checks; [`balancer::strategy`] (round robin, least connections,
//!   smooth weighted round robin, fixed failover order), [`balancer::health`]
//!   (health-check thresholds), [`balancer::registry`] (every endpoint's numbers, for
//!   `ctl`, Prometheus and SNMP).
//! - [`breaker`]: the Breaker actor, one per endpoint, owned by its balancer, and
//!   [`breaker::machine`], the circuit breaker it runs (closed / open / half-open).
//! - [`ratelimit`]: the RateLimiter actor and what it keeps in force:
//!   [`ratelimit::bucket`] (the token bucket), [`ratelimit::share`] (fair shares of
//!   the global rate), [`ratelimit::keyed`] (the request limiter) and
//!   [`ratelimit::limits`] (the policy, each connection's flow, the limiter rows; the
//!   `Throttle` each I/O task holds).
//! - [`certs`]: the CertWatcher actor: renewed certificates, keys, CA bundles and
//!   CRLs put in use for new handshakes ([`certs::watch`] decides when,
//!   [`certs::facts`] reads them for `ctl certs`).
//! - [`metrics`]: the Prometheus registry; [`snmp`]: the SNMP agent ([`snmp::agent`],
//!   [`snmp::mib`], [`snmp::usm`], [`snmp::v3`]) and its notifications ([`snmp::trap`]).
//! - [`logging`]: slog with a run-time level.
//! - [`drain`]: drain tokens, how a stop knows the children have finished.
//! - [`supervise`]: restarts a long-lived actor after a panic, its address intact.
//! - [`error`]: the error type and its stable codes.

#![forbid(unsafe_code)]

pub mod audit;
pub mod balancer;
pub mod breaker;
pub mod certs;
pub mod connection;
pub mod control;
pub mod daemon;
pub mod dialer;
pub mod drain;
pub mod error;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod ratelimit;
pub mod service;
pub mod snmp;
pub mod supervise;
pub mod tun;
pub mod tunnel;

use std::path::PathBuf;

use actix::{Actor, Addr};
use slog::Logger;
use sssonector_config::Config;

pub use error::{Error, ErrorCode, Result};

/// Starts the daemon for `config` (loaded from `path`) on the current actix system.
///
/// # Errors
/// `E_TLS_CONFIG` when the TLS material cannot be used.
pub fn start(
    config: Config,
    path: PathBuf,
    log: Logger,
    log_handle: logging::LogHandle,
) -> Result<Addr<daemon::Daemon>> {
    Ok(daemon::Daemon::new(config, path, log, log_handle)?.start())
}
