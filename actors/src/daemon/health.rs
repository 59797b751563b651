//! Health: the verdict over component, resource and connectivity checks, and the
//! reading of this process's resources from /proc.
//!
//! The verdict is pure. The worst check decides: `unhealthy` when file descriptors are
//! at 95 % of the limit (new connections are about to fail), `degraded` from 80 % or
//! when a component is failed, `healthy` otherwise. Checks of parts not built yet say
//! `not_available` and do not count.

use serde::Serialize;
use serde_json::{json, Value};

/// Share of the descriptor limit from which health is degraded, percent.
pub const FD_DEGRADED_PERCENT: u64 = 80;
/// Share of the descriptor limit from which health is unhealthy, percent.
pub const FD_UNHEALTHY_PERCENT: u64 = 95;

/// A verdict, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// All is well.
    Healthy,
    /// Working, but an operator should look.
    Degraded,
    /// Failing or about to.
    Unhealthy,
}

/// This process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft limit of open file descriptors; None when unlimited or unknown.
    pub fd_limit: Option<u64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
}

/// The state of one component as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Running.
    Running,
    /// Configured off.
    Off,
    /// Should run but does not.
    Failed,
    /// Not built in this version.
    NotAvailable,
}

/// The verdict on file descriptor use.
pub fn fd_verdict(open: u64, limit: Option<u64>) -> Verdict {
    let Some(limit) = limit.filter(|l| *l > 0) else {
        return Verdict::Healthy;
    };
    let percent = open.saturating_mul(100) / limit;
    if percent >= FD_UNHEALTHY_PERCENT {
        Verdict::Unhealthy
    } else if percent >= FD_DEGRADED_PERCENT {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    }
}

/// Whether the tunnel carries traffic: a client needs its session to a server; a
/// server is connected as long as it listens (clients come and go).
pub fn connectivity(client: bool, sessions: u64) -> (Verdict, String) {
    match (client, sessions) {
        (true, 0) => (Verdict::Degraded, "no tunnel session to a server".into()),
        (true, _) => (Verdict::Healthy, "tunnel session to the server up".into()),
        (false, n) => (Verdict::Healthy, format!("{n} client session(s)")),
    }
}

/// The `health` reply: every check and the overall verdict; `link` is
/// [`connectivity`]'s.
pub fn assess(
    components: &[(&str, ComponentState)],
    res: Resources,
    link: (Verdict, String),
) -> Value {
    let component_verdict = if components.iter().any(|(_, s)| *s == ComponentState::Failed) {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    let fds = fd_verdict(res.open_fds, res.fd_limit);
    let overall = component_verdict.max(fds).max(link.0);
    let states: serde_json::Map<String, Value> = components
        .iter()
        .map(|(name, state)| ((*name).to_string(), json!(state)))
        .collect();
    json!({
        "status": overall,
        "checks": {
            "components": { "status": component_verdict, "states": states },
            "resources": {
                "status": fds,
                "open_fds": res.open_fds,
                "fd_limit": res.fd_limit,
                "rss_bytes": res.rss_bytes,
            },
            "connectivity": { "status": link.0, "detail": link.1 },
        }
    })
}

/// Reads this process's resources from /proc; what cannot be read stays unknown.
pub fn read_resources() -> Resources {
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Resources {
        open_fds,
        fd_limit: soft_fd_limit(&limits),
        rss_bytes: rss_bytes(&status),
    }
}

/// The soft limit from `/proc/self/limits`: `Max open files  1024  524288  files`.
fn soft_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `VmRSS:   12345 kB` from `/proc/self/status`, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> (Verdict, String) {
        connectivity(true, 1)
    }

    #[test]
    fn fd_use_decides_by_share_of_the_limit() {
        assert_eq!(fd_verdict(10, Some(1024)), Verdict::Healthy);
        assert_eq!(fd_verdict(819, Some(1024)), Verdict::Healthy);
        assert_eq!(fd_verdict(820, Some(1024)), Verdict::Degraded);
        assert_eq!(fd_verdict(973, Some(1024)), Verdict::Unhealthy);
        assert_eq!(fd_verdict(5000, None), Verdict::Healthy);
        assert_eq!(fd_verdict(5, Some(0)), Verdict::Healthy);
    }

    #[test]
    fn the_worst_check_decides_and_unbuilt_parts_do_not_count() {
        let res = Resources {
            open_fds: 10,
            fd_limit: Some(1000),
            rss_bytes: Some(1 << 20),
        };
        let ok = assess(
            &[
                ("daemon", ComponentState::Running),
                ("tunnel", ComponentState::NotAvailable),
            ],
            res,
            up(),
        );
        assert_eq!(ok["status"], "healthy");
        let down = assess(&[], res, connectivity(true, 0));
        assert_eq!(down["status"], "degraded");
        assert_eq!(down["checks"]["connectivity"]["status"], "degraded");
        assert_eq!(connectivity(false, 0).0, Verdict::Healthy);
        let failed = assess(&[("audit", ComponentState::Failed)], res, up());
        assert_eq!(failed["status"], "degraded");
        let full = Resources {
            open_fds: 999,
            ..res
        };
        assert_eq!(
            assess(&[("audit", ComponentState::Failed)], full, up())["status"],
            "unhealthy"
        );
    }

    #[test]
    fn proc_files_are_parsed() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_fd_limit(limits), Some(1024));
        assert_eq!(
            soft_fd_limit("Max open files  unlimited  unlimited  files"),
            None
        );
        assert_eq!(rss_bytes("Name:\tx\nVmRSS:\t    2048 kB\n"), Some(2 << 20));
        let now = read_resources();
        assert!(now.open_fds > 0 && now.rss_bytes.is_some());
    }
}
