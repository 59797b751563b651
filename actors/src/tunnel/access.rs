//! Who may do what: the pure decisions of access control, with no I/O.
//!
//! [`AllowList`] decides whether a certificate's names (subject CN, DNS and URI
//! SANs, see `handshake::cert_names`) are admitted by `security.allowed_clients` or
//! a service's `allowed_clients`, and which name and rule matched: the matched name
//! becomes the session's identity, the one per-service lists and
//! `security.client_destinations` are keyed by. [`reaches`] is the layer-3
//! destination check the per-packet path runs; it is a linear scan of a few
//! networks, with no allocation, because it runs once per packet.
//!
//! Entry forms, all matched against every name of the certificate:
//! - `name`: exactly this CN, DNS SAN or URI SAN (case-sensitive);
//! - `*.clients.example.org`: a DNS name with exactly one more label in front
//!   (RFC 6125 §6.4.3 style, ASCII case-insensitive);
//! - `spiffe://example.org/ns/prod/*`: any URI under that path (a SPIFFE trust
//!   domain and path prefix); the rest must be one or more non-empty path segments
//!   without `.` or `..`, so a prefix never admits a path that climbs out of it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// One entry of an allow list, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// The name itself.
    Exact(String),
    /// A URI prefix ending in `/`: the entry without its trailing `*`.
    UnderPath(String),
    /// A DNS suffix starting with `.`: the entry without its leading `*`.
    OneLabel(String),
}

impl Pattern {
    fn parse(entry: &str) -> Self {
        if entry.contains("://") {
            if let Some(prefix) = entry.strip_suffix('*') {
                if prefix.ends_with('/') {
                    return Pattern::UnderPath(prefix.to_owned());
                }
            }
        } else if let Some(suffix) = entry.strip_prefix('*') {
            if suffix.starts_with('.') && suffix.len() > 1 {
                return Pattern::OneLabel(suffix.to_ascii_lowercase());
            }
        }
        Pattern::Exact(entry.to_owned())
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == name,
            Pattern::UnderPath(prefix) => name.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                !rest.contains(['?', '#'])
                    && rest
                        .split('/')
                        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            }),
            Pattern::OneLabel(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && is_label(&name[..name.len() - suffix.len()])
            }
        }
    }
}

/// A DNS label a wildcard may stand for: letters, digits and `-`, not empty.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Which certificate name passed, and by which entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// The certificate name: the session's identity.
    pub name: String,
    /// The entry that admitted it; `None` when the list is empty (anyone the CA
    /// signed), the identity then being the first name (the CN).
    pub rule: Option<String>,
}

/// An `allowed_clients` list, parsed once (at start and on reload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<(String, Pattern)>,
}

impl AllowList {
    /// The list of `entries`, in order.
    pub fn new(entries: &[String]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|e| (e.clone(), Pattern::parse(e)))
                .collect(),
        }
    }

    /// Whether the list is empty (admits everyone).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first of `names` (in certificate order: CN, DNS, URI) that an entry
    /// admits, and that entry; `None` when none is admitted (or there is no name).
    pub fn check(&self, names: &[String]) -> Option<Matched> {
        if self.entries.is_empty() {
            return names.first().map(|n| Matched {
                name: n.clone(),
                rule: None,
            });
        }
        names.iter().find_map(|n| {
            self.entries
                .iter()
                .find(|(_, p)| p.matches(n))
                .map(|(raw, _)| Matched {
                    name: n.clone(),
                    rule: Some(raw.clone()),
                })
        })
    }

    /// Whether `identity` alone is admitted (empty list: yes).
    pub fn admits(&self, identity: &str) -> bool {
        self.entries.is_empty() || self.entries.iter().any(|(_, p)| p.matches(identity))
    }
}

/// Whether a packet to `dst` may go on: `allowed` is the sender's destination list,
/// `None` for a sender without one (it may reach anything). Per packet: no
/// allocation, a scan of a few networks.
#[inline]
pub fn reaches(allowed: Option<&[IpNet]>, dst: IpAddr) -> bool {
    allowed.is_none_or(|nets| nets.iter().any(|n| n.contains(&dst)))
}

/// Denied packets of one session, told at most once per `every`: the first denial
/// at once, later ones as a count when `every` has passed since the last report
/// (and whatever is left when the session ends, see [`Denials::rest`]).
#[derive(Debug)]
pub struct Denials {
    every: Duration,
    count: u64,
    last_destination: Option<IpAddr>,
    reported: Option<Instant>,
}

/// What to tell about denied packets: how many since the last report, and the last
/// one's destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialReport {
    /// Packets denied since the last report.
    pub count: u64,
    /// The destination of the last of them.
    pub last_destination: Option<IpAddr>,
}

impl Denials {
    /// Reports at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            count: 0,
            last_destination: None,
            reported: None,
        }
    }

    /// Counts `packets` denied on their way to `dst` (per packet: no clock read).
    #[inline]
    pub fn deny(&mut self, packets: u64, dst: IpAddr) {
        self.count += packets;
        self.last_destination = Some(dst);
    }

    /// Whether any are waiting to be told (per batch, before [`Denials::due`]).
    pub fn pending(&self) -> bool {
        self.count > 0
    }

    /// The report to make at `now`, if one is due.
    pub fn due(&mut self, now: Instant) -> Option<DenialReport> {
        if self.count == 0
            || self
                .reported
                .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return None;
        }
        self.reported = Some(now);
        self.rest()
    }

    /// What is left untold, whenever asked (the session ended).
    pub fn rest(&mut self) -> Option<DenialReport> {
        if self.count == 0 {
            return None;
        }
        let report = DenialReport {
            count: self.count,
            last_destination: self.last_destination.take(),
        };
        self.count = 0;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_exact_entry_matches_cn_dns_or_uri_and_says_which() {
        let l = list(&["c1", "spiffe://example.org/ns/prod/web"]);
        let m = l.check(&names(&["c1", "c1.example.org"])).expect("cn");
        assert_eq!((m.name.as_str(), m.rule.as_deref()), ("c1", Some("c1")));
        let m = l
            .check(&names(&["other", "spiffe://example.org/ns/prod/web"]))
            .expect("uri");
        assert_eq!(m.name, "spiffe://example.org/ns/prod/web");
        assert_eq!(l.check(&names(&["C1", "c2"])), None);
        assert_eq!(l.check(&[]), None);
    }

    #[test]
    fn an_empty_list_admits_the_first_name() {
        let m = AllowList::default()
            .check(&names(&["cn", "dns"]))
            .expect("any");
        assert_eq!((m.name.as_str(), m.rule), ("cn", None));
        assert_eq!(AllowList::default().check(&[]), None);
    }

    #[test]
    fn a_spiffe_prefix_admits_paths_under_it_only() {
        let l = list(&["spiffe://example.org/ns/prod/*"]);
        for ok in [
            "spiffe://example.org/ns/prod/sa/web",
            "spiffe://example.org/ns/prod/x",
        ] {
            assert!(l.admits(ok), "{ok}");
        }
        for no in [
            "spiffe://example.org/ns/prod/",
            "spiffe://example.org/ns/prod",
            "spiffe://example.org/ns/production/x",
            "spiffe://example.org/ns/prod/../admin",
            "spiffe://example.org/ns/prod//x",
            "spiffe://example.org/ns/prod/x?y",
            "spiffe://other.org/ns/prod/x",
            "ns/prod/x",
        ] {
            assert!(!l.admits(no), "{no}");
        }
    }

    #[test]
    fn a_dns_wildcard_stands_for_one_label() {
        let l = list(&["*.clients.example.org"]);
        assert!(l.admits("a.clients.example.org"));
        assert!(l.admits("A-1.Clients.Example.ORG"));
        for no in [
            "clients.example.org",
            ".clients.example.org",
            "a.b.clients.example.org",
            "aclients.example.org",
            "a.clients.example.org.evil",
        ] {
            assert!(!l.admits(no), "{no}");
        }
    }

    #[test]
    fn destinations_bound_only_senders_with_a_list() {
        let nets: Vec<IpNet> = vec!["10.99.0.0/24".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(reaches(Some(&nets), ip("10.99.0.7")));
        assert!(!reaches(Some(&nets), ip("10.98.0.7")));
        assert!(!reaches(Some(&[]), ip("10.99.0.7")));
        assert!(reaches(None, ip("10.98.0.7")));
    }

    #[test]
    fn denials_are_told_at_once_then_at_most_once_per_period_with_a_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut d = Denials::new(s(10));
        assert_eq!(d.due(t0), None);
        d.deny(1, ip("10.0.0.1"));
        let first = d.due(t0).expect("the first at once");
        assert_eq!(
            (first.count, first.last_destination),
            (1, Some(ip("10.0.0.1")))
        );
        d.deny(2, ip("10.0.0.2"));
        d.deny(3, ip("10.0.0.3"));
        assert_eq!(d.due(t0 + s(9)), None, "within the period");
        let later = d.due(t0 + s(10)).expect("due after the period");
        assert_eq!(
            (later.count, later.last_destination),
            (5, Some(ip("10.0.0.3")))
        );
        d.deny(1, ip("10.0.0.4"));
        assert_eq!(d.due(t0 + s(11)), None);
        assert_eq!(
            d.rest().map(|r| r.count),
            Some(1),
            "told when the session ends"
        );
        assert_eq!(d.rest(), None);
    }

    proptest! {
        #[test]
        fn an_exact_entry_admits_exactly_itself(a in "[a-z0-9.:/-]{1,20}", b in "[a-z0-9.:/-]{1,20}") {
            let l = AllowList::new(std::slice::from_ref(&a));
            prop_assert!(l.admits(&a));
            prop_assert_eq!(l.admits(&b), a == b);
        }

        #[test]
        fn a_prefix_never_admits_a_name_outside_it(rest in "[a-z./]{0,20}") {
            let l = list(&["spiffe://td/ns/*"]);
            let name = format!("spiffe://td/{rest}");
            if l.admits(&name) {
                prop_assert!(name.starts_with("spiffe://td/ns/"));
                prop_assert!(!name.contains("/../") && !name.ends_with("/..") && !name.contains("//ns"));
            }
        }

        #[test]
        fn a_wildcard_admits_one_label_only(label in "[a-z0-9.-]{0,12}") {
            let l = list(&["*.c.org"]);
            let name = format!("{label}.c.org");
            prop_assert_eq!(l.admits(&name), !label.is_empty() && !label.contains('.'));
        }

        #[test]
        fn a_destination_passes_exactly_when_a_listed_network_holds_it(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..4),
            dst in any::<u32>(),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, len)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), len).expect("len <= 32")))
                .collect();
            let dst = IpAddr::V4(dst.into());
            let held = nets.iter().any(|n| {
                let (IpNet::V4(n), IpAddr::V4(d)) = (n, dst) else { return false };
                let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix_len())).unwrap_or(0);
                u32::from(d) & mask == u32::from(n.network()) & mask
            });
            prop_assert_eq!(reaches(Some(&nets), dst), held);
            prop_assert!(reaches(None, dst));
        }

        #[test]
        fn checking_never_panics(entries in proptest::collection::vec(".{0,12}", 0..4), ns in proptest::collection::vec(".{0,12}", 0..4)) {
            let l = AllowList::new(&entries);
            if let Some(m) = l.check(&ns) {
                prop_assert!(ns.contains(&m.name));
            }
        }
    }
}
