//! `diff(old, new)`: which keys a reload changes and which component owns each, so
//! the daemon hands every component only what concerns it.
//!
//! Pure: compares the serialized forms leaf by leaf. Secrets serialize as `***`, so a
//! changed secret is found by comparing the section itself.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::schema::Config;

/// The part of the daemon that applies a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The root: `mode`.
    Daemon,
    /// The TUN adapter: `network`.
    Tun,
    /// Listener or dialer and TLS: `tunnel`.
    Tunnel,
    /// Service listeners and balancers: `services`.
    Services,
    /// Connection limits: `connection`.
    Connections,
    /// Health checks and failover: `balancer`.
    Balancer,
    /// Circuit breakers: `breaker`.
    Breakers,
    /// Rate limiter: `throttle`.
    RateLimiter,
    /// Access control and audit: `security`.
    Security,
    /// Prometheus endpoint: `monitor.prometheus`.
    Metrics,
    /// SNMP agent: `monitor.snmp`.
    Snmp,
    /// Control socket: `control`.
    Control,
    /// Logging: `logging`.
    Logging,
}

impl Component {
    fn owning(key: &str) -> Component {
        let section = key.split(['.', '[']).next().unwrap_or_default();
        match section {
            "network" => Component::Tun,
            "tunnel" => Component::Tunnel,
            "services" => Component::Services,
            "connection" => Component::Connections,
            "balancer" => Component::Balancer,
            "breaker" => Component::Breakers,
            "throttle" => Component::RateLimiter,
            "security" => Component::Security,
            "monitor" if key.starts_with("monitor.snmp") => Component::Snmp,
            "monitor" => Component::Metrics,
            "control" => Component::Control,
            "logging" => Component::Logging,
            _ => Component::Daemon,
        }
    }
}

/// One changed key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Who applies it.
    pub component: Component,
    /// The key path, e.g. `throttle.rate` or `services[0].endpoints`.
    pub key: String,
}

/// Keys (and whole sections) fixed for a process's life: the mode, the control socket
/// and where logs go. A reload keeps their running values; see
/// [`Config::keeping_restart_keys`], which must copy exactly these.
pub const RESTART_KEYS: &[&str] = &[
    "mode",
    "control",
    "logging.format",
    "logging.file",
    "network.interface",
    "network.address",
    "network.mtu",
    "tunnel.listen_address",
    "tunnel.listen_port",
    "tunnel.threads",
    "monitor.prometheus",
    "monitor.snmp.enabled",
    "monitor.snmp.listen",
    "monitor.snmp.engine_file",
    "security.user",
    "security.group",
];

impl Change {
    /// Whether applying this change needs a restart of the daemon rather than a reload.
    pub fn needs_restart(&self) -> bool {
        RESTART_KEYS.iter().any(|k| {
            self.key == *k
                || self
                    .key
                    .strip_prefix(k)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

impl Config {
    /// This configuration with the running values of every [`RESTART_KEYS`] entry
    /// taken from `running`: what a reload can put in force.
    pub fn keeping_restart_keys(mut self, running: &Config) -> Config {
        self.mode = running.mode;
        self.control = running.control.clone();
        self.logging.format = running.logging.format;
        self.logging.file = running.logging.file.clone();
        self.network.interface = running.network.interface.clone();
        self.network.address = running.network.address.clone();
        self.network.mtu = running.network.mtu;
        self.tunnel.listen_address = running.tunnel.listen_address.clone();
        self.tunnel.listen_port = running.tunnel.listen_port;
        self.tunnel.threads = running.tunnel.threads;
        self.monitor.prometheus = running.monitor.prometheus.clone();
        self.monitor.snmp.enabled = running.monitor.snmp.enabled;
        self.monitor.snmp.listen = running.monitor.snmp.listen.clone();
        self.monitor.snmp.engine_file = running.monitor.snmp.engine_file.clone();
        self.security.user = running.security.user.clone();
        self.security.group = running.security.group.clone();
        self
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// The keys that differ between `old` and `new`, in key order.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut keys = Vec::new();
    walk("", &to_json(old), &to_json(new), &mut keys);
    if old.monitor.snmp != new.monitor.snmp && !keys.iter().any(|k| k.starts_with("monitor.snmp")) {
        keys.push("monitor.snmp".to_string());
    }
    keys.into_iter()
        .map(|key| Change {
            component: Component::owning(&key),
            key,
        })
        .collect()
}

fn to_json(c: &Config) -> Value {
    serde_json::to_value(c).expect("the schema serializes to JSON: string keys, finite numbers")
}

/// Records the paths where `a` and `b` differ. A list whose length changed is reported
/// whole, since its items no longer line up.
fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&sub, va, y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostPort, Parsed, Secret};

    fn base() -> Config {
        Config::default()
    }

    #[test]
    fn diff_names_each_changed_key_and_its_owner() {
        type Edit = fn(&mut Config);
        let table: &[(Edit, &[(&str, Component)])] = &[
            (|_| {}, &[]),
            (
                |c| c.throttle.rate = 1000,
                &[("throttle.rate", Component::RateLimiter)],
            ),
            (
                |c| c.logging.level = crate::LogLevel::Debug,
                &[("logging.level", Component::Logging)],
            ),
            (|c| c.network.mtu = 1400, &[("network.mtu", Component::Tun)]),
            (
                |c| c.monitor.snmp.community = Some(Secret::new("new")),
                &[("monitor.snmp.community", Component::Snmp)],
            ),
            (
                |c| {
                    c.monitor.snmp.cert_warning =
                        crate::DurationValue::of(std::time::Duration::from_secs(86_400))
                },
                &[("monitor.snmp.cert_warning", Component::Snmp)],
            ),
            (
                |c| {
                    c.breaker.max_failures = 9;
                    c.monitor.prometheus.enabled = true;
                },
                &[
                    ("breaker.max_failures", Component::Breakers),
                    ("monitor.prometheus.enabled", Component::Metrics),
                ],
            ),
            (
                |c| {
                    c.tunnel.servers.push(crate::ServerEntry {
                        address: Parsed::<HostPort>::parse("b:1"),
                        weight: 1,
                    })
                },
                &[("tunnel.servers", Component::Tunnel)],
            ),
        ];
        for (edit, want) in table {
            let old = base();
            let mut new = base();
            edit(&mut new);
            let got: Vec<_> = diff(&old, &new)
                .into_iter()
                .map(|c| (c.key, c.component))
                .collect();
            let want: Vec<_> = want.iter().map(|(k, c)| (k.to_string(), *c)).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_changed_secret_is_seen_although_it_prints_as_stars() {
        let mut old = base();
        old.monitor.snmp.community = Some(Secret::new("one"));
        let mut new = base();
        new.monitor.snmp.community = Some(Secret::new("two"));
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].component, Component::Snmp);
    }

    /// Holds `RESTART_KEYS` and `keeping_restart_keys` to each other: every listed key
    /// has an edit here, and after keeping no change needing a restart is left.
    #[test]
    fn keeping_restart_keys_undoes_exactly_the_restart_changes() {
        type Edit = fn(&mut Config);
        let edits: &[(&str, Edit)] = &[
            ("mode", |c| c.mode = Some(crate::Mode::Client)),
            ("control", |c| {
                c.control.socket = "/tmp/other.sock".into();
                c.control.idle_timeout =
                    crate::DurationValue::of(std::time::Duration::from_secs(5));
            }),
            ("logging.format", |c| {
                c.logging.format = crate::LogFormat::Term
            }),
            ("logging.file", |c| c.logging.file = Some("/tmp/log".into())),
            ("network.interface", |c| {
                c.network.interface = "other0".into()
            }),
            ("network.address", |c| {
                c.network.address = Some(crate::Parsed::parse("10.1.0.1/24"))
            }),
            ("network.mtu", |c| c.network.mtu = 9000),
            ("tunnel.listen_address", |c| {
                c.tunnel.listen_address = crate::Parsed::parse("127.0.0.1")
            }),
            ("tunnel.listen_port", |c| {
                c.tunnel.listen_port = crate::Port::new(9)
            }),
            ("tunnel.threads", |c| c.tunnel.threads = 4),
            ("monitor.prometheus", |c| {
                c.monitor.prometheus.enabled = true
            }),
            ("monitor.snmp.enabled", |c| c.monitor.snmp.enabled = true),
            ("monitor.snmp.listen", |c| {
                c.monitor.snmp.listen = crate::Parsed::parse("127.0.0.1:161")
            }),
            ("monitor.snmp.engine_file", |c| {
                c.monitor.snmp.engine_file = "/tmp/other.json".into()
            }),
            ("security.user", |c| c.security.user = Some("nobody".into())),
            ("security.group", |c| {
                c.security.group = Some("nogroup".into())
            }),
        ];
        let listed: Vec<&str> = edits.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            listed, RESTART_KEYS,
            "every restart key needs an edit in this test"
        );
        for (key, edit) in edits {
            let running = base();
            let mut new = base();
            edit(&mut new);
            new.throttle.rate = 1;
            assert!(
                diff(&running, &new).iter().any(Change::needs_restart),
                "{key}"
            );
            let kept: Vec<String> = diff(&running, &new.keeping_restart_keys(&running))
                .into_iter()
                .map(|c| c.key)
                .collect();
            assert_eq!(kept, ["throttle.rate"], "{key}: only the live change stays");
        }
    }

    #[test]
    fn notification_settings_apply_live() {
        let mut new = base();
        new.monitor.snmp.cert_warning =
            crate::DurationValue::of(std::time::Duration::from_secs(86_400));
        new.monitor.snmp.trap_targets.push(crate::TrapTarget {
            address: Parsed::parse("nms.example:162"),
            community: None,
            user: None,
        });
        let changes = diff(&base(), &new);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.iter().all(|c| !c.needs_restart()), "{changes:?}");
    }

    #[test]
    fn a_key_that_only_shares_a_prefix_is_live() {
        let change = Change {
            component: Component::Daemon,
            key: "modes".into(),
        };
        assert!(!change.needs_restart());
    }

    #[test]
    fn mode_and_control_need_a_restart() {
        let old = base();
        let mut new = base();
        new.mode = Some(crate::Mode::Client);
        new.control.socket = "/tmp/x.sock".into();
        new.throttle.enabled = true;
        let restart: Vec<_> = diff(&old, &new)
            .into_iter()
            .filter(Change::needs_restart)
            .map(|c| c.key)
            .collect();
        assert_eq!(restart, ["control.socket", "mode"]);
    }
}
