//! The SNMP agent (`sssonector_actors::snmp::agent::Agent::answer`) over a full
//! peer table: a request datagram in, the response datagram out. Each answer builds
//! the view of that moment (a snapshot of every session), walks it and BER-encodes
//! the bindings that fit one datagram, exactly as the daemon serves a manager.
//!
//! The table has [`ROWS`] synthetic sessions ([`Agent::synthetic`], the same ones
//! `.ci/bench-snmp.sh` walks with Net-SNMP over UDP); here there is no socket, so the
//! figures are the agent's own cost.
//!
//! - `getbulk_v2c` and `getbulk_v3_authpriv`: one GetBulk from the top of
//!   `sssPeerTable` (SNMPv3 adds decrypting the request and sealing the response);
//!   throughput in response bytes.
//! - `bulkwalk_v2c`: every GetBulk of a whole walk of `sssPeerTable`, the requests
//!   prepared beforehand, so an iteration is what `snmpbulkwalk` costs the agent;
//!   throughput in table cells.
//!
//! Run: `cargo bench --bench snmp` (add `-- --quick` for a short run).

// A bench has no API to document; criterion_group! makes an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::v2::{BulkPdu, GetBulkRequest, Pdu, Pdus, Response, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use sssonector_actors::snmp::agent::Agent;
use sssonector_actors::snmp::mib;

/// Sessions in the peer table: issue 5's "1,000 connection-table rows".
const ROWS: u32 = 1000;
/// Readable columns of `sssPeerTable` (SSSONECTOR-MIB, `mibs/`): a walk returns
/// this many cells per row.
const PEER_COLUMNS: usize = 9;
/// max-repetitions asked, as `snmpbulkwalk -Cr50`: enough that the agent's
/// datagram budget, not the request, decides how much each response carries.
const MAX_REPETITIONS: u32 = 50;
/// The v2c community [`Agent::synthetic`] answers.
const COMMUNITY: &[u8] = b"public";
/// The SNMPv3 user [`Agent::synthetic`] has.
const USER: &str = "bench";

/// `sssPeerEntry`: the prefix of every cell of the table.
fn peer_entry() -> Vec<u32> {
    let cell = mib::peer_cell(mib::PEER_NAME, 1);
    cell[..cell.len() - 2].to_vec()
}

/// A GetBulk PDU for what follows `from`.
fn get_bulk(from: &[u32]) -> Pdus {
    Pdus::GetBulkRequest(GetBulkRequest(BulkPdu {
        request_id: 1,
        non_repeaters: 0,
        max_repetitions: MAX_REPETITIONS,
        variable_bindings: vec![VarBind {
            name: ObjectIdentifier::new_unchecked(from.to_vec().into()),
            value: VarBindValue::Unspecified,
        }],
    }))
}

/// `pdus` as an SNMPv2c datagram.
fn v2c(pdus: Pdus) -> Vec<u8> {
    rasn::ber::encode(&Message {
        version: Integer::from(1),
        community: OctetString::from_static(COMMUNITY),
        data: pdus,
    })
    .expect("a request encodes")
}

/// The bindings of a v2c response datagram.
fn bindings(reply: &[u8]) -> Vec<VarBind> {
    let msg = rasn::ber::decode::<Message<Pdus>>(reply).expect("a v2c message");
    let Pdus::Response(Response(Pdu {
        variable_bindings, ..
    })) = msg.data
    else {
        panic!("a response PDU")
    };
    variable_bindings
}

/// The requests of a whole GetBulk walk of the table under `entry`, each starting
/// after the last name the previous response returned, and the cells they return.
fn walk(agent: &Agent, entry: &[u32]) -> (Vec<Vec<u8>>, usize) {
    let (mut requests, mut cells) = (Vec::new(), 0);
    let mut cursor = entry.to_vec();
    loop {
        let request = v2c(get_bulk(&cursor));
        let reply = agent.answer(&request).expect("the agent answers");
        requests.push(request);
        let got = bindings(&reply);
        let inside = got
            .iter()
            .take_while(|vb| vb.value != VarBindValue::EndOfMibView && vb.name.starts_with(entry))
            .count();
        cells += inside;
        if inside < got.len() || got.is_empty() {
            return (requests, cells);
        }
        cursor = got.last().expect("not empty").name.to_vec();
    }
}

fn snmp(c: &mut Criterion) {
    let agent = Agent::synthetic(ROWS);
    let entry = peer_entry();
    let mut group = c.benchmark_group("snmp");

    let request = v2c(get_bulk(&entry));
    let reply = agent.answer(&request).expect("the agent answers");
    assert!(bindings(&reply).len() > 1, "a response of many bindings");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function(BenchmarkId::new("getbulk_v2c", ROWS), |b| {
        b.iter(|| {
            agent
                .answer(black_box(&request))
                .expect("the agent answers")
        })
    });

    let request = agent
        .usm()
        .seal_trap(USER, get_bulk(&entry))
        .expect("the user is known");
    let reply = agent.answer(&request).expect("the agent answers v3");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function(BenchmarkId::new("getbulk_v3_authpriv", ROWS), |b| {
        b.iter(|| {
            agent
                .answer(black_box(&request))
                .expect("the agent answers")
        })
    });

    let (requests, cells) = walk(&agent, &entry);
    assert_eq!(
        cells,
        ROWS as usize * PEER_COLUMNS,
        "the walk saw every cell"
    );
    group.throughput(Throughput::Elements(cells as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("bulkwalk_v2c", ROWS), |b| {
        b.iter(|| {
            let bytes: usize = requests
                .iter()
                .map(|r| agent.answer(black_box(r)).expect("the agent answers").len())
                .sum();
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, snmp);
criterion_main!(benches);
