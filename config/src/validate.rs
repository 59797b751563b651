//! Validation: every problem of a configuration at once, each with its key path and
//! the bad value (`tunnel.listen_port: 99999 is not a port`).
//!
//! Checks single values (ranges, syntax kept by [`Parsed`](crate::Parsed)), cross-field
//! rules (a client needs a server; `burst` holds a frame) and the files the daemon will
//! read. Pure apart from asking the file system whether those files exist.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::schema::{defaults, Config, Mode};
use crate::value::{Parsed, Port};

/// Most failures a breaker may wait for: the failure times it keeps stay small.
const MAX_BREAKER_FAILURES: u64 = 10_000;

/// One problem of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Key path such as `tunnel.servers[1].weight`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Lowest MTU for IPv4 (RFC 791: every host must accept 576-byte datagrams).
pub const MIN_MTU_V4: u32 = 576;
/// Lowest MTU for IPv6 (RFC 8200 §5).
pub const MIN_MTU_V6: u32 = 1280;
/// Largest MTU a TUN device takes.
pub const MAX_MTU: u32 = 65535;
/// Longest interface name (IFNAMSIZ minus the NUL).
pub const MAX_IFNAME: usize = 15;
/// Shortest USM password (RFC 3414 §11.2).
pub const MIN_USM_PASSWORD: usize = 8;

/// Collects the problems of `config`; empty when it is valid.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut v = Validator::default();
    v.check(config);
    v.problems
}

/// Whether `entry` is a well-formed `allowed_clients` entry: a name, or `*` only as
/// a whole first DNS label (`*.example.org`) or as the last path segment of a URI
/// (`spiffe://example.org/ns/*`).
pub fn allow_entry_is_valid(entry: &str) -> bool {
    let rest = if entry.contains("://") {
        entry.strip_suffix("/*").unwrap_or(entry)
    } else {
        entry.strip_prefix("*.").unwrap_or(entry)
    };
    !rest.is_empty() && !rest.contains('*')
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn parsed<T>(&mut self, path: &str, value: &Parsed<T>) {
        if let Some(err) = value.error() {
            self.fail(path, format!("{:?}: {err}", value.raw()));
        }
    }

    fn port(&mut self, path: &str, port: Port) {
        if port.raw() == 0 || port.raw() > u64::from(u16::MAX) {
            self.fail(path, format!("{} is not a port", port.raw()));
        }
    }

    fn at_least(&mut self, path: &str, value: u64, min: u64) {
        if value < min {
            self.fail(path, format!("{value} is below the minimum {min}"));
        }
    }

    fn at_most(&mut self, path: &str, value: u64, max: u64) {
        if value > max {
            self.fail(path, format!("{value} is above the maximum {max}"));
        }
    }

    fn duration(&mut self, path: &str, value: &crate::DurationValue) {
        self.parsed(path, value);
        if value.error().is_none() && value.duration().is_zero() {
            self.fail(path, format!("{:?} must be longer than zero", value.raw()));
        }
    }

    fn file(&mut self, path: &str, file: Option<&PathBuf>, required: bool) {
        match file {
            None if required => self.fail(path, "missing, name a PEM file"),
            None => {}
            Some(f) if !f.is_file() => {
                self.fail(path, format!("{}: no such file", f.display()));
            }
            Some(_) => {}
        }
    }

    fn check(&mut self, c: &Config) {
        match c.mode {
            None => self.fail("mode", "missing, expected server or client"),
            Some(mode) => self.mode_rules(c, mode),
        }
        self.network(c);
        self.tunnel(c);
        self.services(c);
        self.limits(c);
        self.security(c);
        self.monitor(c);
        self.parsed("control.mode", &c.control.mode);
        self.duration("control.idle_timeout", &c.control.idle_timeout);
        self.at_least(
            "control.max_connections",
            u64::from(c.control.max_connections),
            1,
        );
        if c.control.socket.as_os_str().is_empty() {
            self.fail("control.socket", "must name a path");
        }
    }

    fn mode_rules(&mut self, c: &Config, mode: Mode) {
        match mode {
            Mode::Client => {
                if c.tunnel.servers.is_empty() {
                    self.fail("tunnel.servers", "a client needs at least one server");
                }
                if c.tunnel.server_name.trim().is_empty() {
                    self.fail(
                        "tunnel.server_name",
                        "a client needs the name on the server's certificate",
                    );
                }
                for (i, s) in c.services.iter().enumerate() {
                    if s.listen.is_none() {
                        self.fail(
                            &format!("services[{i}].listen"),
                            format!(
                                "service {:?} needs a local listen address on a client",
                                s.name
                            ),
                        );
                    }
                }
            }
            Mode::Server => {
                for (i, s) in c.services.iter().enumerate() {
                    if s.endpoints.is_empty() {
                        self.fail(
                            &format!("services[{i}].endpoints"),
                            format!(
                                "service {:?} needs at least one endpoint on a server",
                                s.name
                            ),
                        );
                    }
                }
            }
        }
    }

    fn network(&mut self, c: &Config) {
        let n = &c.network;
        let name = &n.interface;
        if name.is_empty() || name.len() > MAX_IFNAME {
            self.fail(
                "network.interface",
                format!("{name:?} must be 1 to {MAX_IFNAME} bytes long"),
            );
        } else if name
            .chars()
            .any(|ch| ch == '/' || ch == ':' || ch.is_whitespace() || ch.is_control())
        {
            self.fail(
                "network.interface",
                format!("{name:?} may not contain '/', ':' or white space"),
            );
        }
        let v6 = match &n.address {
            None => {
                self.fail(
                    "network.address",
                    "missing, give the inner address as CIDR, e.g. 10.99.0.1/24",
                );
                false
            }
            Some(a) => {
                self.parsed("network.address", a);
                a.error().is_none() && matches!(a.get(), ipnet::IpNet::V6(_))
            }
        };
        let min = if v6 { MIN_MTU_V6 } else { MIN_MTU_V4 };
        if !(min..=MAX_MTU).contains(&n.mtu) {
            self.fail(
                "network.mtu",
                format!("{} is outside {min}..={MAX_MTU}", n.mtu),
            );
        }
        for (i, r) in n.routes.iter().enumerate() {
            self.parsed(&format!("network.routes[{i}]"), r);
        }
    }

    fn tunnel(&mut self, c: &Config) {
        let t = &c.tunnel;
        self.parsed("tunnel.listen_address", &t.listen_address);
        if t.threads > 64 {
            self.fail("tunnel.threads", format!("{} is above 64", t.threads));
        }
        self.port("tunnel.listen_port", t.listen_port);
        for (i, s) in t.servers.iter().enumerate() {
            self.parsed(&format!("tunnel.servers[{i}].address"), &s.address);
            self.at_least(&format!("tunnel.servers[{i}].weight"), s.weight.into(), 1);
        }
        self.file("tunnel.cert_file", t.cert_file.as_ref(), true);
        self.file("tunnel.key_file", t.key_file.as_ref(), true);
        self.file("tunnel.ca_file", t.ca_file.as_ref(), true);
        self.duration("tunnel.keepalive", &t.keepalive);
        self.parsed("tunnel.busy_poll", &t.busy_poll);
        if t.busy_poll.error().is_none() && t.busy_poll.duration() > defaults::BUSY_POLL_MAX {
            self.fail(
                "tunnel.busy_poll",
                format!(
                    "{:?} is above {:?}",
                    t.busy_poll.raw(),
                    defaults::BUSY_POLL_MAX
                ),
            );
        }
    }

    fn services(&mut self, c: &Config) {
        let mut names = HashSet::new();
        for (i, s) in c.services.iter().enumerate() {
            let at = format!("services[{i}]");
            let valid_name = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !valid_name {
                self.fail(
                    &format!("{at}.name"),
                    format!("{:?} must be letters, digits, '-' or '_'", s.name),
                );
            } else if !names.insert(s.name.as_str()) {
                self.fail(&format!("{at}.name"), format!("{:?} is used twice", s.name));
            }
            if let Some(listen) = &s.listen {
                self.parsed(&format!("{at}.listen"), listen);
            }
            for (j, e) in s.endpoints.iter().enumerate() {
                self.parsed(&format!("{at}.endpoints[{j}].address"), &e.address);
                self.at_least(&format!("{at}.endpoints[{j}].weight"), e.weight.into(), 1);
            }
            self.allow_list(&format!("{at}.allowed_clients"), &s.allowed_clients);
        }
    }

    /// Every entry of an `allowed_clients` list is a name or one of its two
    /// wildcard forms.
    fn allow_list(&mut self, at: &str, entries: &[String]) {
        for (i, entry) in entries.iter().enumerate() {
            if entry.trim().is_empty() {
                self.fail(&format!("{at}[{i}]"), "empty name");
            } else if !allow_entry_is_valid(entry) {
                self.fail(
                    &format!("{at}[{i}]"),
                    format!(
                        "{entry:?}: `*` only as a whole first DNS label (`*.example.org`) \
                         or a URI's last segment (`spiffe://example.org/ns/*`)"
                    ),
                );
            }
        }
    }

    fn limits(&mut self, c: &Config) {
        let k = &c.connection;
        self.at_least("connection.max_connections", k.max_connections.into(), 1);
        let t = &c.tunnel;
        self.at_least(
            "tunnel.max_pending_handshakes",
            t.max_pending_handshakes.into(),
            1,
        );
        self.at_least(
            "tunnel.max_pending_per_source",
            t.max_pending_per_source.into(),
            1,
        );
        self.duration("connection.keepalive_idle", &k.keepalive_idle);
        self.duration("connection.retry_interval", &k.retry_interval);
        self.duration("connection.retry_max_interval", &k.retry_max_interval);
        self.duration("connection.connect_timeout", &k.connect_timeout);
        self.duration("connection.drain_timeout", &k.drain_timeout);

        let b = &c.balancer;
        self.duration("balancer.health_check", &b.health_check);
        self.duration("balancer.retry_timeout", &b.retry_timeout);
        self.at_least("balancer.healthy_threshold", b.healthy_threshold.into(), 1);
        self.at_least(
            "balancer.unhealthy_threshold",
            b.unhealthy_threshold.into(),
            1,
        );

        let r = &c.breaker;
        self.at_least("breaker.max_failures", r.max_failures.into(), 1);
        // Each breaker keeps the times of its last `max_failures` failures.
        self.at_most(
            "breaker.max_failures",
            r.max_failures.into(),
            MAX_BREAKER_FAILURES,
        );
        self.at_least(
            "breaker.half_open_max_calls",
            r.half_open_max_calls.into(),
            1,
        );
        self.duration("breaker.reset_timeout", &r.reset_timeout);
        self.duration("breaker.failure_window", &r.failure_window);

        let t = &c.throttle;
        self.duration("throttle.cleanup_time", &t.cleanup_time);
        if t.enabled {
            self.at_least("throttle.rate", t.rate, 1);
            self.burst("throttle.burst", t.burst);
            if t.global_rate != 0 && t.global_rate < t.rate {
                self.fail(
                    "throttle.global_rate",
                    format!(
                        "{} is below the per-connection rate {}",
                        t.global_rate, t.rate
                    ),
                );
            }
        }
        if t.requests.rate > 0 {
            self.at_least("throttle.requests.burst", t.requests.burst.into(), 1);
        }
        let services: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        for (name, o) in &t.services {
            let path = format!("throttle.services.{name}");
            if !services.contains(&name.as_str()) {
                self.fail(&path, "no service of that name in `services`");
            }
            self.throttle_override(&path, o);
        }
        for (name, o) in &t.clients {
            self.throttle_override(&format!("throttle.clients.{name}"), o);
        }
    }

    fn throttle_override(&mut self, path: &str, o: &crate::schema::ThrottleOverride) {
        if let Some(rate) = o.rate {
            self.at_least(&format!("{path}.rate"), rate, 1);
        }
        if let Some(burst) = o.burst {
            self.burst(&format!("{path}.burst"), burst);
        }
        if let Some(weight) = o.weight {
            let path = format!("{path}.weight");
            self.at_least(&path, weight.into(), 1);
            self.at_most(&path, weight.into(), defaults::MAX_WEIGHT.into());
        }
    }

    fn burst(&mut self, path: &str, burst: u64) {
        if burst < defaults::MAX_FRAME {
            self.fail(
                path,
                format!(
                    "{burst} is below one frame ({} bytes): no frame could ever pass",
                    defaults::MAX_FRAME
                ),
            );
        }
    }

    fn security(&mut self, c: &Config) {
        let s = &c.security;
        self.allow_list("security.allowed_clients", &s.allowed_clients);
        for (name, nets) in &s.client_addresses {
            for (i, n) in nets.iter().enumerate() {
                self.parsed(&format!("security.client_addresses.{name}[{i}]"), n);
            }
        }
        for (name, nets) in &s.client_destinations {
            for (i, n) in nets.iter().enumerate() {
                self.parsed(&format!("security.client_destinations.{name}[{i}]"), n);
            }
        }
        for (i, n) in s.allow_cidrs.iter().enumerate() {
            self.parsed(&format!("security.allow_cidrs[{i}]"), n);
        }
        for (i, n) in s.deny_cidrs.iter().enumerate() {
            self.parsed(&format!("security.deny_cidrs[{i}]"), n);
        }
        self.file("security.crl_file", s.crl_file.as_ref(), false);
        if s.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
            self.fail("security.user", "empty name");
        }
        if s.group.is_some() && s.user.is_none() {
            self.fail("security.group", "needs security.user");
        }
        self.duration("security.cert_check_interval", &s.cert_check_interval);
        if let Some(log) = &s.audit_log {
            self.parent_exists("security.audit_log", log);
        }
        if let Some(file) = &c.logging.file {
            self.parent_exists("logging.file", file);
        }
    }

    fn parent_exists(&mut self, path: &str, file: &Path) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                self.fail(
                    path,
                    format!(
                        "{}: folder {} does not exist",
                        file.display(),
                        dir.display()
                    ),
                );
            }
        }
    }

    fn monitor(&mut self, c: &Config) {
        let m = &c.monitor;
        self.parsed("monitor.prometheus.listen", &m.prometheus.listen);
        let s = &m.snmp;
        self.parsed("monitor.snmp.listen", &s.listen);
        // An empty community would answer any v1/v2c request that sends "" (no secret at all).
        if s.community.as_ref().is_some_and(|c| c.is_empty()) {
            self.fail(
                "monitor.snmp.community",
                "empty community: omit the key to disable v1/v2c",
            );
        }
        if s.enabled && s.users.is_empty() && s.community.as_ref().is_none_or(|c| c.is_empty()) {
            self.fail(
                "monitor.snmp",
                "enabled with neither a community nor users: no request could be answered",
            );
        }
        for (i, u) in s.users.iter().enumerate() {
            let at = format!("monitor.snmp.users[{i}]");
            if u.name.is_empty() {
                self.fail(&format!("{at}.name"), "empty user name");
            }
            for (key, pw) in [
                ("auth_password", &u.auth_password),
                ("priv_password", &u.priv_password),
            ] {
                if pw.expose().chars().count() < MIN_USM_PASSWORD {
                    self.fail(
                        &format!("{at}.{key}"),
                        format!("shorter than {MIN_USM_PASSWORD} characters (RFC 3414)"),
                    );
                }
            }
        }
        self.duration("monitor.snmp.cert_warning", &s.cert_warning);
        for (i, t) in s.trap_targets.iter().enumerate() {
            let at = format!("monitor.snmp.trap_targets[{i}]");
            self.parsed(&format!("{at}.address"), &t.address);
            if let Some(user) = &t.user {
                if !s.users.iter().any(|u| &u.name == user) {
                    self.fail(
                        &format!("{at}.user"),
                        format!("{user:?} is not in monitor.snmp.users"),
                    );
                }
            } else if t.community.is_none() && s.community.is_none() {
                self.fail(
                    &at,
                    "needs a community (here or monitor.snmp.community) or a user",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::allow_entry_is_valid;

    #[test]
    fn stars_only_make_a_first_label_or_a_last_path_segment() {
        for ok in [
            "c1",
            "*.a.org",
            "spiffe://td/ns/*",
            "spiffe://td/x",
            "a.b-c.org",
        ] {
            assert!(allow_entry_is_valid(ok), "{ok}");
        }
        for no in [
            "",
            "*",
            "c*",
            "a.*.org",
            "*.*.org",
            "spiffe://td/*/x",
            "spiffe://td/ns*",
            "*.",
        ] {
            assert!(!allow_entry_is_valid(no), "{no}");
        }
    }
}
