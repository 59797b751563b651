//! The objects the agent serves, as one sorted view built from a snapshot: MIB-II's
//! `system` group, the `snmp` group counters and SSSONECTOR-MIB (`mibs/`). Pure: the
//! agent builds a [`View`] per request and answers Get, GetNext and GetBulk from it.
//!
//! The scalars are written out; the tables (`sssPeerTable`, `sssEndpointTable`,
//! `sssLimiterTable`) are answered from their rows on demand, so a walk costs a
//! snapshot, not an object per cell.

use std::cmp::Ordering;
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::balancer::registry::EndpointView;
use crate::ratelimit::limits::Row;
use crate::tunnel::stats::{DropReason, PeerView, Snapshot};

/// An object identifier as its arcs.
pub type Oid = Vec<u32>;

/// SSSONECTOR-MIB's root: the documentation enterprise number (RFC 5612) 32473, arc 1.
pub const ROOT: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1];
/// MIB-II `system`.
const SYSTEM: &[u32] = &[1, 3, 6, 1, 2, 1, 1];
/// MIB-II `snmp`.
const SNMP: &[u32] = &[1, 3, 6, 1, 2, 1, 11];
/// SNMP-FRAMEWORK-MIB `snmpEngine` (RFC 3411).
const SNMP_ENGINE: &[u32] = &[1, 3, 6, 1, 6, 3, 10, 2, 1];
/// SNMP-TARGET-MIB `snmpUnknownContexts` (RFC 3413): requests for a context we lack.
pub const UNKNOWN_CONTEXTS: &[u32] = &[1, 3, 6, 1, 6, 3, 12, 1, 5, 0];
/// SNMP-USER-BASED-SM-MIB `usmStats` (RFC 3414).
const USM_STATS: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1];

/// A value as SNMP types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// INTEGER / Integer32.
    Integer(i64),
    /// OCTET STRING (DisplayString).
    Octets(Vec<u8>),
    /// OBJECT IDENTIFIER.
    Oid(Oid),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Gauge32(u32),
    /// TimeTicks, hundredths of a second.
    Ticks(u32),
    /// Counter64.
    Counter64(u64),
}

/// Why a Get found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No such object type here.
    Object,
    /// The object exists, not this instance.
    Instance,
}

/// What the system group says.
#[derive(Clone, Debug)]
pub struct System {
    /// sysDescr.
    pub descr: String,
    /// sysName.
    pub name: String,
    /// sysContact.
    pub contact: String,
    /// sysLocation.
    pub location: String,
    /// Agent uptime in hundredths of a second.
    pub uptime_ticks: u32,
    /// 1 server, 2 client (sssMode).
    pub mode: i64,
}

/// The agent's own state and counters (the `snmp` group, the SNMPv3 engine).
#[derive(Clone, Debug, Default)]
pub struct AgentCounts {
    /// snmpEngineID.
    pub engine_id: Vec<u8>,
    /// snmpEngineBoots.
    pub engine_boots: u32,
    /// snmpEngineTime, seconds.
    pub engine_time: u32,
    /// snmpEngineMaxMessageSize.
    pub max_message: u32,
    /// snmpUnknownContexts.
    pub unknown_contexts: u32,
    /// usmStats 1 to 6: unsupported levels, not in time window, unknown users,
    /// unknown engine IDs, wrong digests, decryption errors.
    pub usm: [u32; 6],
    /// snmpInPkts.
    pub in_pkts: u32,
    /// snmpInBadCommunityNames.
    pub bad_community: u32,
    /// snmpInASNParseErrs.
    pub parse_errors: u32,
}

/// Every object at one moment: the scalars materialized and sorted by OID, the
/// tables answered from their rows on demand, so a view of a thousand sessions costs a
/// snapshot, not nine thousand OIDs.
#[derive(Debug)]
pub struct View {
    scalars: Vec<(Oid, Value)>,
    /// `sssPeerTable`.
    peers: Table<PeerView>,
    /// `sssEndpointTable`.
    endpoints: Table<EndpointView>,
    /// `sssLimiterTable`.
    limiters: Table<LimiterView>,
}

/// One limiter row as read once for a view, so that every cell of one response
/// comes from the same moment.
#[derive(Debug)]
struct LimiterView {
    name: String,
    /// Bytes (requests for [`REQUESTS_LIMITER`]) per second.
    rate: u64,
    /// Bytes (requests).
    burst: u64,
    throttled: u64,
    rejected: u64,
}

/// A conceptual table: its rows by index, ascending, and how to read a cell. A cell
/// is `entry.column.index`; columns are walked in order, each over every row.
#[derive(Debug)]
struct Table<R> {
    entry: &'static [u32],
    /// The readable columns (1 is the not-accessible index in every table).
    columns: RangeInclusive<u32>,
    rows: Vec<(u32, R)>,
    cell: fn(&R, u32) -> Value,
}

impl<R> Table<R> {
    /// A table of `rows`, sorted here by index.
    fn new(
        entry: &'static [u32],
        columns: RangeInclusive<u32>,
        mut rows: Vec<(u32, R)>,
        cell: fn(&R, u32) -> Value,
    ) -> Self {
        rows.sort_by_key(|(i, _)| *i);
        Self {
            entry,
            columns,
            rows,
            cell,
        }
    }

    /// The readable column `oid` lies under, if any.
    fn column(&self, oid: &[u32]) -> Option<u32> {
        let column = *oid.strip_prefix(self.entry)?.first()?;
        self.columns.contains(&column).then_some(column)
    }

    /// The cell at `oid`; None when `oid` is not under one of the table's columns.
    fn get(&self, oid: &[u32]) -> Option<Result<Value, Missing>> {
        let column = self.column(oid)?;
        Some(match oid.get(self.entry.len() + 1..) {
            Some([index]) => self
                .rows
                .binary_search_by_key(index, |(i, _)| *i)
                .map(|r| (self.cell)(&self.rows[r].1, column))
                .map_err(|_| Missing::Instance),
            _ => Err(Missing::Instance),
        })
    }

    /// The first cell after `oid`, with its value.
    fn next(&self, oid: &[u32]) -> Option<(Oid, Value)> {
        let (column, (index, row)) = self.next_cell(oid)?;
        Some((at(self.entry, &[column, *index]), (self.cell)(row, column)))
    }

    /// The first cell after `oid`: its column and row.
    fn next_cell(&self, oid: &[u32]) -> Option<(u32, &(u32, R))> {
        let first = self.rows.first()?;
        let (start, end) = (*self.columns.start(), *self.columns.end());
        let Some(rest) = oid.strip_prefix(self.entry) else {
            // Before the table, everything in it follows; after it, nothing does.
            return (oid < self.entry).then_some((start, first));
        };
        let column = match rest.first() {
            None => return Some((start, first)),
            Some(&c) if c < start => return Some((start, first)),
            Some(&c) if c > end => return None,
            Some(&c) => c,
        };
        let Some(&index) = rest.get(1) else {
            return Some((column, first));
        };
        // The cell `column.index` is `oid` or a prefix of it: the next row is after.
        let r = self.rows.partition_point(|(i, _)| *i <= index);
        match self.rows.get(r) {
            Some(row) => Some((column, row)),
            None if column < end => Some((column + 1, first)),
            None => None,
        }
    }

    /// Cells in the table.
    fn len(&self) -> usize {
        self.columns.clone().count() * self.rows.len()
    }
}

/// `sssPeerEntry`; a cell is `PEER_ENTRY.column.index`.
const PEER_ENTRY: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1, 4, 1];
/// The peer table's readable columns (1 is its not-accessible index).
const PEER_COLUMNS: RangeInclusive<u32> = 2..=10;
/// `sssEndpointEntry`; a cell is `ENDPOINT_ENTRY.column.index`.
const ENDPOINT_ENTRY: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1, 5, 1];
/// The endpoint table's readable columns (1 is its not-accessible index).
const ENDPOINT_COLUMNS: RangeInclusive<u32> = 2..=9;
/// `sssLimiterEntry`; a cell is `LIMITER_ENTRY.column.index`.
const LIMITER_ENTRY: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1, 6, 1];
/// The limiter table's readable columns (1 is its not-accessible index).
const LIMITER_COLUMNS: RangeInclusive<u32> = 2..=6;
/// The limiter whose rate and burst count requests, not bytes: the MIB says so, and
/// they are served as they are rather than in kilobytes.
const REQUESTS_LIMITER: &str = "throttle.requests";

fn at(base: &[u32], tail: &[u32]) -> Oid {
    let mut oid = base.to_vec();
    oid.extend_from_slice(tail);
    oid
}

fn text(s: &str) -> Value {
    Value::Octets(s.as_bytes().to_vec())
}

fn gauge(n: u64) -> Value {
    Value::Gauge32(u32::try_from(n).unwrap_or(u32::MAX))
}

/// One cell of `sssPeerTable`.
fn cell_value(p: &PeerView, column: u32) -> Value {
    let c = &p.counters;
    match column {
        PEER_NAME => text(&p.peer),
        PEER_REMOTE => text(&p.remote),
        4 => text(&p.inner.to_string()),
        5 => Value::Counter64(c.bytes_in),
        6 => Value::Counter64(c.bytes_out),
        7 => Value::Counter64(c.packets_in),
        8 => Value::Counter64(c.packets_out),
        9 => gauge(p.seconds),
        _ => text(p.compression.map_or("none", |a| a.as_str())),
    }
}

/// One cell of `sssEndpointTable`.
fn endpoint_value(e: &EndpointView, column: u32) -> Value {
    match column {
        ENDPOINT_SERVICE => text(&e.service),
        ENDPOINT_ADDRESS => text(&e.address),
        // TruthValue (RFC 2579): true(1), false(2).
        4 => Value::Integer(if e.healthy { 1 } else { 2 }),
        // closed(1), open(2), halfOpen(3): the registry stores these very numbers.
        ENDPOINT_BREAKER_STATE => Value::Integer(e.breaker as i64),
        6 => gauge(e.active),
        7 => Value::Counter64(e.total),
        8 => Value::Counter64(e.bytes_in),
        _ => Value::Counter64(e.bytes_out),
    }
}

/// One cell of `sssLimiterTable`. Rate and burst are kilobytes (1000 bytes, rounded
/// down) per second and kilobytes, as the MIB's UNITS say, saturated at the top of
/// Unsigned32; those of [`REQUESTS_LIMITER`] are requests, as they are.
fn limiter_value(r: &LimiterView, column: u32) -> Value {
    let kilo = |n: u64| match r.name == REQUESTS_LIMITER {
        true => gauge(n),
        false => gauge(n / 1000),
    };
    match column {
        LIMITER_NAME => text(&r.name),
        LIMITER_RATE => kilo(r.rate),
        LIMITER_BURST => kilo(r.burst),
        5 => Value::Counter64(r.throttled),
        _ => Value::Counter64(r.rejected),
    }
}

impl View {
    /// The view of this moment.
    pub fn build(system: &System, agent: &AgentCounts, s: Snapshot) -> Self {
        let mut e: Vec<(Oid, Value)> = Vec::with_capacity(64);
        let root = |tail: &[u32]| at(ROOT, tail);
        e.push((at(SYSTEM, &[1, 0]), text(&system.descr)));
        e.push((at(SYSTEM, &[2, 0]), Value::Oid(ROOT.to_vec())));
        e.push((at(SYSTEM, &[3, 0]), Value::Ticks(system.uptime_ticks)));
        e.push((at(SYSTEM, &[4, 0]), text(&system.contact)));
        e.push((at(SYSTEM, &[5, 0]), text(&system.name)));
        e.push((at(SYSTEM, &[6, 0]), text(&system.location)));
        e.push((at(SNMP, &[1, 0]), Value::Counter32(agent.in_pkts)));
        e.push((at(SNMP, &[4, 0]), Value::Counter32(agent.bad_community)));
        e.push((at(SNMP, &[6, 0]), Value::Counter32(agent.parse_errors)));
        let clamp = |n: u32| Value::Integer(i64::from(n.min(i32::MAX as u32)));
        e.push((
            at(SNMP_ENGINE, &[1, 0]),
            Value::Octets(agent.engine_id.clone()),
        ));
        e.push((at(SNMP_ENGINE, &[2, 0]), clamp(agent.engine_boots)));
        e.push((at(SNMP_ENGINE, &[3, 0]), clamp(agent.engine_time)));
        e.push((at(SNMP_ENGINE, &[4, 0]), clamp(agent.max_message)));
        e.push((
            UNKNOWN_CONTEXTS.to_vec(),
            Value::Counter32(agent.unknown_contexts),
        ));
        for (i, n) in (1u32..).zip(agent.usm) {
            e.push((at(USM_STATS, &[i, 0]), Value::Counter32(n)));
        }
        // sssGeneral
        e.push((root(&[1, 1, 1, 0]), text(env!("CARGO_PKG_VERSION"))));
        e.push((root(&[1, 1, 2, 0]), Value::Integer(system.mode)));
        e.push((root(&[1, 1, 3, 0]), Value::Ticks(system.uptime_ticks)));
        // sssTraffic
        let t = &s.totals;
        let mut traffic = vec![
            t.bytes_in,
            t.bytes_out,
            t.packets_in,
            t.packets_out,
            t.wire_bytes_in,
            t.wire_bytes_out,
        ];
        traffic.extend(DropReason::ALL.iter().map(|r| t.drops[*r as usize]));
        for (i, n) in (1u32..).zip(traffic) {
            e.push((root(&[1, 2, i, 0]), Value::Counter64(n)));
        }
        // sssConnections
        let failures: u64 = s.handshake_failures.iter().map(|(_, n)| n).sum();
        e.push((root(&[1, 3, 1, 0]), gauge(s.current)));
        e.push((root(&[1, 3, 2, 0]), Value::Counter64(s.total)));
        e.push((root(&[1, 3, 3, 0]), gauge(s.peak)));
        e.push((root(&[1, 3, 4, 0]), Value::Counter64(failures)));
        e.push((root(&[1, 3, 5, 0]), Value::Counter64(s.reconnects)));
        e.sort_by(|a, b| a.0.cmp(&b.0));
        let peers = s
            .peers
            .into_iter()
            .filter_map(|p| peer_index(p.id).map(|i| (i, p)))
            .collect();
        let endpoints = s.endpoints.into_iter().map(|e| (e.index, e)).collect();
        Self {
            scalars: e,
            peers: Table::new(PEER_ENTRY, PEER_COLUMNS, peers, cell_value),
            endpoints: Table::new(ENDPOINT_ENTRY, ENDPOINT_COLUMNS, endpoints, endpoint_value),
            limiters: Table::new(LIMITER_ENTRY, LIMITER_COLUMNS, Vec::new(), limiter_value),
        }
    }

    /// The view with `sssCertificates`: whole days until our certificate (`own`)
    /// and the CA bundle's first (`ca`) expire, negative once expired; each left out
    /// while unknown.
    pub fn with_certificates(mut self, own: Option<i64>, ca: Option<i64>) -> Self {
        let days = |d: i64| Value::Integer(d.clamp(i64::from(i32::MIN), i64::from(i32::MAX)));
        for (arc, left) in [(1, own), (2, ca)] {
            if let Some(d) = left {
                self.scalars.push((at(ROOT, &[1, 7, arc, 0]), days(d)));
            }
        }
        self.scalars.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }

    /// The view with `rows` as its `sssLimiterTable` (from
    /// [`Limits::rows`](crate::ratelimit::Limits::rows)), read at this moment: the
    /// counters move on, the view does not.
    pub fn with_limiters(mut self, rows: &[Arc<Row>]) -> Self {
        let rows = rows
            .iter()
            .map(|r| {
                let view = LimiterView {
                    name: r.name.clone(),
                    rate: r.rate.load(Relaxed),
                    burst: r.burst.load(Relaxed),
                    throttled: r.throttled.load(Relaxed),
                    rejected: r.rejected.load(Relaxed),
                };
                (r.index, view)
            })
            .collect();
        self.limiters = Table::new(LIMITER_ENTRY, LIMITER_COLUMNS, rows, limiter_value);
        self
    }

    /// The value at `oid` exactly.
    ///
    /// # Errors
    /// [`Missing::Instance`] when `oid` lies under a served object or column,
    /// [`Missing::Object`] otherwise.
    pub fn get(&self, oid: &[u32]) -> Result<Value, Missing> {
        if let Ok(i) = self
            .scalars
            .binary_search_by(|(o, _)| o.as_slice().cmp(oid))
        {
            return Ok(self.scalars[i].1.clone());
        }
        let cell = self.peers.get(oid);
        let cell = cell.or_else(|| self.endpoints.get(oid));
        if let Some(cell) = cell.or_else(|| self.limiters.get(oid)) {
            return cell;
        }
        if self.is_known_scalar(oid) {
            Err(Missing::Instance)
        } else {
            Err(Missing::Object)
        }
    }

    /// The first object after `oid` in lexicographic order; `None` at the end of the
    /// view (endOfMibView).
    pub fn next(&self, oid: &[u32]) -> Option<(Oid, Value)> {
        let i = self
            .scalars
            .partition_point(|(o, _)| o.as_slice().cmp(oid) != Ordering::Greater);
        let scalar = self.scalars.get(i).cloned();
        let tables = [
            self.peers.next(oid),
            self.endpoints.next(oid),
            self.limiters.next(oid),
        ];
        std::iter::once(scalar)
            .chain(tables)
            .flatten()
            .min_by(|a, b| a.0.cmp(&b.0))
    }

    /// Whether `oid` names an instance of a scalar served here: the scalar's OID
    /// without its `.0` is a prefix of `oid`.
    fn is_known_scalar(&self, oid: &[u32]) -> bool {
        (1..oid.len()).any(|n| {
            let prefix = &oid[..n];
            let i = self.scalars.partition_point(|(o, _)| o.as_slice() < prefix);
            self.scalars
                .get(i)
                .is_some_and(|(o, _)| o.len() == n + 1 && o.starts_with(prefix))
        })
    }

    /// Objects in the view.
    pub fn len(&self) -> usize {
        self.scalars.len() + self.peers.len() + self.endpoints.len() + self.limiters.len()
    }

    /// Whether the view is empty (it never is: the system group is always there).
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty()
    }
}

/// sssPeerName, the peer table's column 2.
pub const PEER_NAME: u32 = 2;
/// sssPeerRemote, the peer table's column 3.
pub const PEER_REMOTE: u32 = 3;

/// sssEndpointService, the endpoint table's column 2.
pub const ENDPOINT_SERVICE: u32 = 2;
/// sssEndpointAddress, the endpoint table's column 3.
pub const ENDPOINT_ADDRESS: u32 = 3;
/// sssEndpointBreakerState, the endpoint table's column 5.
pub const ENDPOINT_BREAKER_STATE: u32 = 5;

/// sssLimiterName, the limiter table's column 2.
pub const LIMITER_NAME: u32 = 2;
/// sssLimiterRate, the limiter table's column 3.
pub const LIMITER_RATE: u32 = 3;
/// sssLimiterBurst, the limiter table's column 4.
pub const LIMITER_BURST: u32 = 4;

/// The sssPeerTable index of session `id`: the id itself while it fits the index's
/// `Unsigned32 (1..4294967295)`, else none (the session has no row).
pub fn peer_index(id: u64) -> Option<u32> {
    u32::try_from(id).ok().filter(|i| *i != 0)
}

/// The OID of `column` in the peer table's row `index`: sssPeerEntry.column.index.
pub fn peer_cell(column: u32, index: u32) -> Oid {
    at(PEER_ENTRY, &[column, index])
}

/// The OID of `column` in the endpoint table's row `index`:
/// sssEndpointEntry.column.index.
pub fn endpoint_cell(column: u32, index: u32) -> Oid {
    at(ENDPOINT_ENTRY, &[column, index])
}

/// The OID of `column` in the limiter table's row `index`:
/// sssLimiterEntry.column.index.
pub fn limiter_cell(column: u32, index: u32) -> Oid {
    at(LIMITER_ENTRY, &[column, index])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::stats::{test_session, Stats};
    use std::sync::atomic::Ordering::Relaxed;

    fn system() -> System {
        System {
            descr: "SSSonector".into(),
            name: "host".into(),
            contact: String::new(),
            location: String::new(),
            uptime_ticks: 100,
            mode: 1,
        }
    }

    fn view_with_peers(n: usize) -> View {
        let stats = Stats::default();
        for i in 0..n {
            let s = test_session(&stats, &format!("c{i}"));
            s.counters.bytes_in.fetch_add(10 * i as u64, Relaxed);
        }
        View::build(&system(), &AgentCounts::default(), stats.snapshot())
    }

    /// Every cell of `table` written out.
    fn cells<R>(table: &Table<R>) -> Vec<(Oid, Value)> {
        let mut all = Vec::new();
        for column in table.columns.clone() {
            for (index, row) in &table.rows {
                all.push((
                    at(table.entry, &[column, *index]),
                    (table.cell)(row, column),
                ));
            }
        }
        all
    }

    /// Every object of `view` materialized: what the lazy tables must behave like.
    fn materialized(view: &View) -> Vec<(Oid, Value)> {
        let mut all = view.scalars.clone();
        all.extend(cells(&view.peers));
        all.extend(cells(&view.endpoints));
        all.extend(cells(&view.limiters));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stats with a session per entry of `closed` (closed again where it says so)
    /// and an endpoint row per entry of `retired` (retired where it says so).
    fn stats_with(closed: &[bool], retired: &[bool]) -> Stats {
        let stats = Stats::default();
        for (i, close) in closed.iter().enumerate() {
            let s = test_session(&stats, &format!("c{i}"));
            if *close {
                stats.closed(&s, None);
            }
        }
        for (i, retire) in retired.iter().enumerate() {
            let address = format!("10.0.0.{i}:80");
            let row = stats.endpoints.row("web", &address, 1);
            row.add_in(i as u64);
            if *retire {
                stats.endpoints.retire("web", &address);
            }
        }
        stats
    }

    /// A limiter row as the rate limiter keeps it.
    fn row(index: u32, name: &str, rate: u64, burst: u64) -> Arc<Row> {
        Arc::new(Row {
            index,
            name: name.into(),
            rate: rate.into(),
            burst: burst.into(),
            throttled: 0.into(),
            rejected: 0.into(),
        })
    }

    /// Limiter rows 1.. where `kept` says so (the others were removed by a reload).
    fn limiter_rows(kept: &[bool]) -> Vec<Arc<Row>> {
        (1u32..)
            .zip(kept)
            .filter(|(_, k)| **k)
            .map(|(i, _)| {
                row(
                    i,
                    &format!("throttle.clients.c{i}"),
                    1000 * u64::from(i),
                    65_536,
                )
            })
            .collect()
    }

    proptest::proptest! {
        /// With any rows gone (sparse indexes), next and get agree with the tables
        /// written out, around every object: at it, inside it, before and after it.
        #[test]
        fn the_lazy_tables_agree_with_the_tables_written_out(
            closed in proptest::collection::vec(proptest::bool::ANY, 0..12),
            retired in proptest::collection::vec(proptest::bool::ANY, 0..12),
            limiters in proptest::collection::vec(proptest::bool::ANY, 0..8),
        ) {
            let stats = stats_with(&closed, &retired);
            let view = View::build(&system(), &AgentCounts::default(), stats.snapshot())
                .with_limiters(&limiter_rows(&limiters));
            let all = materialized(&view);
            proptest::prop_assert_eq!(all.len(), view.len());
            let mut probes: Vec<Oid> = vec![
                vec![], vec![0], vec![2], PEER_ENTRY.to_vec(), ENDPOINT_ENTRY.to_vec(),
                LIMITER_ENTRY.to_vec(), at(ROOT, &[1, 5]), at(ROOT, &[1, 6]), at(ROOT, &[1, 7]),
            ];
            for (oid, value) in &all {
                proptest::prop_assert_eq!(view.get(oid), Ok(value.clone()));
                let mut longer = oid.clone();
                longer.push(0);
                let mut bumped = oid.clone();
                *bumped.last_mut().expect("arcs") += 1;
                probes.extend([oid.clone(), longer, oid[..oid.len() - 1].to_vec(), bumped]);
            }
            for probe in probes {
                let i = all.partition_point(|(o, _)| *o <= probe);
                let want = all.get(i).cloned();
                proptest::prop_assert_eq!(view.next(&probe), want, "after {:?}", probe);
            }
        }
    }

    #[test]
    fn walking_visits_every_object_once_in_order() {
        let view = view_with_peers(3);
        let mut oid: Oid = vec![0];
        let mut seen = Vec::new();
        while let Some((next, _)) = view.next(&oid) {
            assert!(next.as_slice() > oid.as_slice(), "{next:?} after {oid:?}");
            oid = next.clone();
            seen.push(oid.clone());
        }
        assert_eq!(seen.len(), view.len());
        // 9 system and snmp, 3 general, 13 traffic, 5 connection, 9 columns x 3 rows,
        // 4 engine, snmpUnknownContexts, 6 usmStats.
        assert_eq!(seen.len(), 9 + 3 + 13 + 5 + 27 + 4 + 1 + 6);
    }

    #[test]
    fn get_tells_missing_instances_from_missing_objects() {
        let view = view_with_peers(1);
        assert_eq!(view.get(&at(SYSTEM, &[5, 0])), Ok(text("host")));
        assert_eq!(view.get(&at(SYSTEM, &[5, 1])), Err(Missing::Instance));
        assert_eq!(view.get(&at(SYSTEM, &[5])), Err(Missing::Object));
        assert_eq!(
            view.get(&at(ROOT, &[1, 4, 1, 2, 999_999])),
            Err(Missing::Instance)
        );
        assert_eq!(view.get(&[1, 3, 6, 1, 9]), Err(Missing::Object));
        assert_eq!(view.next(&[2]), None, "past the end");
    }

    #[test]
    fn the_peer_table_is_column_major_with_the_session_id_as_index() {
        let view = view_with_peers(2);
        let first = view.next(&at(ROOT, &[1, 4])).expect("a row");
        assert_eq!(first.0[..ROOT.len() + 4], at(ROOT, &[1, 4, 1, 2])[..]);
        assert!(matches!(first.1, Value::Octets(_)));
    }

    #[test]
    fn the_endpoint_table_shows_the_registry_rows_by_their_index() {
        let stats = stats_with(&[], &[true, false]);
        let row = stats.endpoints.row("web", "10.0.0.1:80", 1);
        row.add_out(42);
        row.set_healthy(false);
        row.set_breaker(crate::balancer::registry::BreakerState::HalfOpen);
        let view = View::build(&system(), &AgentCounts::default(), stats.snapshot());
        // Row 1 was retired: the first row is index 2.
        let (oid, value) = view.next(ENDPOINT_ENTRY).expect("a row");
        assert_eq!(oid, endpoint_cell(ENDPOINT_SERVICE, 2));
        assert_eq!(value, text("web"));
        assert_eq!(view.get(&endpoint_cell(3, 2)), Ok(text("10.0.0.1:80")));
        assert_eq!(view.get(&endpoint_cell(4, 2)), Ok(Value::Integer(2)));
        assert_eq!(view.get(&endpoint_cell(5, 2)), Ok(Value::Integer(3)));
        assert_eq!(view.get(&endpoint_cell(9, 2)), Ok(Value::Counter64(42)));
        assert_eq!(view.get(&endpoint_cell(9, 1)), Err(Missing::Instance));
        assert_eq!(view.get(&endpoint_cell(10, 2)), Err(Missing::Object));
        let past = view.next(&endpoint_cell(9, 2));
        assert!(past.is_none_or(|(o, _)| o.as_slice() > ENDPOINT_ENTRY));
    }

    #[test]
    fn the_limiter_table_serves_kilobytes_and_requests_by_the_row_index() {
        let rows = vec![
            row(1, "throttle", 1_000_000, 131_072),
            row(2, "throttle.global_rate", 4_000_000, 0),
            row(3, REQUESTS_LIMITER, 5, 10),
            row(5, "throttle.clients.c1", u64::MAX, 1999),
        ];
        rows[3].throttled.fetch_add(7, Relaxed);
        rows[2].rejected.fetch_add(2, Relaxed);
        let stats = Stats::default();
        let view =
            View::build(&system(), &AgentCounts::default(), stats.snapshot()).with_limiters(&rows);
        rows[2].rejected.fetch_add(100, Relaxed);
        let (oid, value) = view.next(LIMITER_ENTRY).expect("a row");
        assert_eq!(
            (oid, value),
            (limiter_cell(LIMITER_NAME, 1), text("throttle"))
        );
        let cell = |column, index| view.get(&limiter_cell(column, index));
        assert_eq!(cell(LIMITER_RATE, 1), Ok(Value::Gauge32(1000)));
        assert_eq!(cell(LIMITER_BURST, 1), Ok(Value::Gauge32(131)));
        assert_eq!(cell(LIMITER_RATE, 2), Ok(Value::Gauge32(4000)));
        assert_eq!(cell(LIMITER_BURST, 2), Ok(Value::Gauge32(0)));
        assert_eq!(cell(LIMITER_RATE, 3), Ok(Value::Gauge32(5)), "requests/s");
        assert_eq!(cell(LIMITER_BURST, 3), Ok(Value::Gauge32(10)), "requests");
        assert_eq!(cell(6, 3), Ok(Value::Counter64(2)), "read when built");
        assert_eq!(cell(LIMITER_RATE, 5), Ok(Value::Gauge32(u32::MAX)));
        assert_eq!(cell(LIMITER_BURST, 5), Ok(Value::Gauge32(1)));
        assert_eq!(cell(5, 5), Ok(Value::Counter64(7)));
        assert_eq!(cell(LIMITER_NAME, 4), Err(Missing::Instance));
        assert_eq!(
            cell(1, 1),
            Err(Missing::Object),
            "the index is not-accessible"
        );
        assert_eq!(cell(7, 1), Err(Missing::Object));
        // After the last cell, the walk leaves the table.
        let past = view
            .next(&limiter_cell(6, 5))
            .expect("the snmpEngine group");
        assert!(!past.0.starts_with(LIMITER_ENTRY), "{past:?}");
        let empty = View::build(&system(), &AgentCounts::default(), stats.snapshot());
        // Limiting off: the table is served, with no row.
        assert_eq!(empty.get(&limiter_cell(2, 1)), Err(Missing::Instance));
        assert!(empty
            .next(LIMITER_ENTRY)
            .is_none_or(|(o, _)| !o.starts_with(LIMITER_ENTRY)));
    }

    #[test]
    fn certificate_days_are_served_when_known() {
        let stats = Stats::default();
        let build = || View::build(&system(), &AgentCounts::default(), stats.snapshot());
        let own = at(ROOT, &[1, 7, 1, 0]);
        let ca = at(ROOT, &[1, 7, 2, 0]);
        let view = build().with_certificates(Some(4), Some(-2));
        assert_eq!(view.get(&own), Ok(Value::Integer(4)));
        assert_eq!(view.get(&ca), Ok(Value::Integer(-2)));
        assert_eq!(view.next(&own), Some((ca.clone(), Value::Integer(-2))));
        let unknown = build().with_certificates(None, Some(i64::MAX));
        assert_eq!(unknown.get(&own), Err(Missing::Object));
        assert_eq!(unknown.get(&ca), Ok(Value::Integer(i64::from(i32::MAX))));
    }
}
