//! What a bench run counted, and the report made of it: pure, so its arithmetic is
//! tested without a tunnel.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
const HIGHEST_US: u64 = 600_000_000;

/// One worker's counts over the measured window; merged at the end.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Messages whose echo came back intact within the window.
    pub messages: u64,
    /// Their bytes (each counted once, one way).
    pub bytes: u64,
    /// Failures by kind (`connect`, `io`, `closed`, `timeout`, `header`,
    /// `sequence`, `corrupt`), counted in the window or not: a failure always counts.
    pub errors: BTreeMap<&'static str, u64>,
    /// Send-to-echo latency of the counted messages, µs.
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            messages: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .expect("bounds 1..600e6 at 3 digits are valid"),
        }
    }
}

impl Tally {
    /// Counts one message of `bytes` that took `latency`.
    pub fn message(&mut self, bytes: u64, latency: Duration) {
        self.messages += 1;
        self.bytes += bytes;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// Counts one failure.
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: &Tally) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        for (k, n) in &other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds add");
    }

    /// Failures of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A watched daemon's use of the machine over the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonUse {
    /// Its pid.
    pub pid: u32,
    /// CPU seconds (user + system) it spent in the window.
    pub cpu_seconds: f64,
    /// Highest resident set seen during the window, bytes.
    pub rss_max: u64,
}

/// How the run was set up, for the report's heading.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `echo`, `bulk` or `connect`.
    pub mode: &'static str,
    /// Where the load went.
    pub target: String,
    /// Concurrent connections.
    pub connections: u32,
    /// Bytes per message.
    pub payload: u32,
    /// Pause between messages.
    pub interval: Duration,
    /// Not counted.
    pub warmup: Duration,
}

/// The report of a finished run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The setup.
    pub setup: Setup,
    /// The measured window's length.
    pub elapsed: Duration,
    /// All workers' counts.
    pub tally: Tally,
    /// The watched daemons.
    pub daemons: Vec<DaemonUse>,
}

/// The latency percentiles reported, as (name, quantile).
pub const PERCENTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99_9", 0.999),
];

impl Report {
    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether the run may be trusted: no failure, and every counted message whole.
    pub fn consistent(&self) -> bool {
        self.tally.error_count() == 0
            && self.tally.bytes == self.tally.messages * u64::from(self.setup.payload)
    }

    fn latency_ms(&self) -> Value {
        let h = &self.tally.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut m = serde_json::Map::new();
        for (name, q) in PERCENTILES {
            m.insert(name.into(), json!(ms(h.value_at_quantile(q))));
        }
        m.insert("max".into(), json!(ms(h.max())));
        m.insert("mean".into(), json!(h.mean() / 1000.0));
        json!(m)
    }

    /// The report for machines (`--json`).
    pub fn to_json(&self) -> Value {
        let s = &self.setup;
        let t = &self.tally;
        json!({
            "mode": s.mode,
            "target": s.target,
            "connections": s.connections,
            "payload_bytes": s.payload,
            "interval_seconds": s.interval.as_secs_f64(),
            "warmup_seconds": s.warmup.as_secs_f64(),
            "duration_seconds": self.elapsed.as_secs_f64(),
            "messages": t.messages,
            "bytes": t.bytes,
            "messages_per_second": self.per_second(t.messages),
            "bytes_per_second": self.per_second(t.bytes),
            "latency_ms": self.latency_ms(),
            "errors": t.errors,
            "error_count": t.error_count(),
            "consistent": self.consistent(),
            "daemons": self.daemons.iter().map(|d| json!({
                "pid": d.pid,
                "cpu_seconds": d.cpu_seconds,
                "cpu_percent": 100.0 * d.cpu_seconds / self.elapsed.as_secs_f64().max(1e-9),
                "rss_max_bytes": d.rss_max,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let s = &self.setup;
        let t = &self.tally;
        let secs = self.elapsed.as_secs_f64();
        let bps = self.per_second(t.bytes);
        let l = self.latency_ms();
        let mut out = format!(
            "sssonector bench: {} to {}, {} connections, {} B messages, interval {:?}, \
             {:.1} s measured after {:?} warm-up\n",
            s.mode, s.target, s.connections, s.payload, s.interval, secs, s.warmup
        );
        out += &format!(
            "  messages  {:>12}  {:>12.1}/s\n  bytes     {:>12}  {:>12.2} MB/s  ({:.3} Gbit/s)\n",
            t.messages,
            self.per_second(t.messages),
            t.bytes,
            bps / 1e6,
            bps * 8.0 / 1e9
        );
        out += &format!(
            "  latency   p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            l["p50"].as_f64().unwrap_or_default(),
            l["p90"].as_f64().unwrap_or_default(),
            l["p99"].as_f64().unwrap_or_default(),
            l["p99_9"].as_f64().unwrap_or_default(),
            l["max"].as_f64().unwrap_or_default(),
        );
        if t.errors.is_empty() {
            out += "  errors    none\n";
        } else {
            let list: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            out += &format!("  errors    {}\n", list.join(", "));
        }
        for d in &self.daemons {
            out += &format!(
                "  daemon    pid {}: {:.2} CPU-s ({:.1}% of one core), RSS max {:.1} MiB\n",
                d.pid,
                d.cpu_seconds,
                100.0 * d.cpu_seconds / secs.max(1e-9),
                d.rss_max as f64 / (1024.0 * 1024.0)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tally: Tally) -> Report {
        Report {
            setup: Setup {
                mode: "echo",
                target: "127.0.0.1:1".into(),
                connections: 2,
                payload: 100,
                interval: Duration::ZERO,
                warmup: Duration::ZERO,
            },
            elapsed: Duration::from_secs(2),
            tally,
            daemons: vec![DaemonUse {
                pid: 7,
                cpu_seconds: 0.5,
                rss_max: 1 << 20,
            }],
        }
    }

    #[test]
    fn merged_tallies_add_up_and_rates_use_the_window() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for i in 1..=100 {
            a.message(100, Duration::from_micros(i));
            b.message(100, Duration::from_micros(1000 + i));
        }
        a.merge(&b);
        let r = report(a);
        let j = r.to_json();
        assert_eq!(j["messages"], 200);
        assert_eq!(j["bytes"], 20_000);
        assert_eq!(j["messages_per_second"], 100.0);
        assert_eq!(j["consistent"], true);
        let p50 = j["latency_ms"]["p50"].as_f64().expect("p50");
        assert!((0.099..=0.101).contains(&p50), "{p50}");
        let max = j["latency_ms"]["max"].as_f64().expect("max");
        assert!((1.099..=1.101).contains(&max), "{max}");
        assert_eq!(j["daemons"][0]["cpu_percent"], 25.0);
        assert!(r.to_text().contains("errors    none"));
    }

    #[test]
    fn an_error_or_a_short_count_makes_the_run_inconsistent() {
        let mut t = Tally::default();
        t.message(100, Duration::from_micros(5));
        t.error("corrupt");
        let r = report(t.clone());
        assert!(!r.consistent());
        assert!(r.to_text().contains("corrupt: 1"));
        let mut short = Tally::default();
        short.message(99, Duration::from_micros(5));
        assert!(!report(short).consistent());
    }
}
