//! The SNMP agent of a real server daemon, spoken to with hand-built PDUs that
//! Net-SNMP's tools never send: a request carrying its own error-status/index
//! (RFC 3416 §4.2.1 says the response's are the agent's, 0/0 when all went well) and
//! GetBulk requests with negative non-repeaters or max-repetitions (§4.2.3: treated as
//! zero). The requests go over UDP from a thread inside the server's namespace.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::netns::Lab;
use common::pair::Pair;
use rasn::prelude::*;
use rasn_snmp::v2::{GetRequest, Pdu, Pdus, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use serde_json::Value;

/// Where the agent listens, in the server's namespace.
const AGENT: &str = "127.0.0.1:1161";
const MONITOR: &str = "monitor: { snmp: { enabled: true, listen: \"127.0.0.1:1161\", \
    community: public } }\n";

/// A GetBulk PDU whose counts may be negative, which rasn-snmp's `BulkPdu` (u32)
/// cannot encode; same tag and fields (RFC 3416 §3).
#[derive(AsnType, Encode, Debug)]
#[rasn(tag(5))]
struct SignedBulk {
    request_id: i32,
    non_repeaters: i32,
    max_repetitions: i32,
    variable_bindings: Vec<VarBind>,
}

fn oid(arcs: &[u32]) -> ObjectIdentifier {
    ObjectIdentifier::new_unchecked(arcs.to_vec().into())
}

fn unspecified(arcs: &[u32]) -> VarBind {
    VarBind {
        name: oid(arcs),
        value: VarBindValue::Unspecified,
    }
}

const SYS_DESCR: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 1, 0];
const SYS_NAME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 5, 0];
const SYSTEM: [u32; 7] = [1, 3, 6, 1, 2, 1, 1];

/// Sends each datagram to the agent from inside `pair`'s server namespace; the
/// decoded response PDU of each (`None` when none came within 2 s).
fn exchange(pair: &Pair, datagrams: Vec<Vec<u8>>) -> Vec<Option<Pdu>> {
    pair.srv
        .thread(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            datagrams
                .iter()
                .map(|d| {
                    socket.send_to(d, AGENT).expect("send");
                    let mut buf = vec![0u8; 65_536];
                    let n = socket.recv(&mut buf).ok()?;
                    let msg = rasn::ber::decode::<Message<Pdus>>(&buf[..n]).expect("decodes");
                    match msg.data {
                        Pdus::Response(r) => Some(r.0),
                        other => panic!("not a response: {other:?}"),
                    }
                })
                .collect()
        })
        .join()
        .expect("exchange thread")
}

fn v2c<T: Encode>(data: T) -> Vec<u8> {
    rasn::ber::encode(&Message {
        version: Integer::from(1),
        community: OctetString::from_static(b"public"),
        data,
    })
    .expect("encodes")
}

/// The value of `sssonector_snmp_requests_total` for `pdu` and `result` (v2c).
fn requests(pair: &Pair, pdu: &str, result: &str) -> f64 {
    let reply = pair.ctl_ok("server", "metrics", Value::Null);
    reply["sssonector_snmp_requests_total"]["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["labels"]["version"] == "2c"
                && s["labels"]["pdu"] == pdu
                && s["labels"]["result"] == result
        })
        .filter_map(|s| s["value"].as_f64())
        .sum()
}

fn names(pdu: &Pdu) -> Vec<Vec<u32>> {
    pdu.variable_bindings
        .iter()
        .map(|vb| vb.name.to_vec())
        .collect()
}

#[test]
fn responses_carry_the_agents_error_status_and_negative_bulk_counts_are_zero() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let pair = Pair::start(
        &lab,
        srv,
        "echo",
        "strategy: round_robin, endpoints: [ { address: \"127.0.0.1:9\" } ]",
        MONITOR,
        "",
    );
    let get = v2c(Pdus::GetRequest(GetRequest(Pdu {
        request_id: 7,
        error_status: 5,
        error_index: 3,
        variable_bindings: vec![unspecified(&SYS_DESCR), unspecified(&SYS_NAME)],
    })));
    let bulk = |id, non_repeaters, max_repetitions, names: &[&[u32]]| {
        v2c(SignedBulk {
            request_id: id,
            non_repeaters,
            max_repetitions,
            variable_bindings: names.iter().map(|n| unspecified(n)).collect(),
        })
    };
    let replies = exchange(
        &pair,
        vec![
            get,
            // N = 0: both repetitions of the one repeater.
            bulk(8, -1, 2, &[&SYSTEM]),
            // M = 0: the non-repeater only.
            bulk(9, 1, -3, &[&SYSTEM, &SYSTEM]),
        ],
    );
    let get = replies[0].as_ref().expect("the get is answered");
    assert_eq!(
        (get.request_id, get.error_status, get.error_index),
        (7, 0, 0),
        "{get:?}"
    );
    assert_eq!(names(get), vec![SYS_DESCR.to_vec(), SYS_NAME.to_vec()]);
    assert!(
        get.variable_bindings
            .iter()
            .all(|vb| matches!(vb.value, VarBindValue::Value(_))),
        "{get:?}"
    );

    let n0 = replies[1]
        .as_ref()
        .expect("a bulk with negative non-repeaters is answered");
    assert_eq!((n0.request_id, n0.error_status, n0.error_index), (8, 0, 0));
    assert_eq!(n0.variable_bindings.len(), 2, "{n0:?}");
    assert_eq!(names(n0)[0], SYS_DESCR.to_vec(), "{n0:?}");
    let m0 = replies[2]
        .as_ref()
        .expect("a bulk with negative max-repetitions is answered");
    assert_eq!((m0.request_id, m0.error_status, m0.error_index), (9, 0, 0));
    assert_eq!(names(m0), vec![SYS_DESCR.to_vec()], "{m0:?}");

    assert_eq!(requests(&pair, "get", "ok"), 1.0);
    assert_eq!(requests(&pair, "get", "not_writable"), 0.0);
    assert_eq!(requests(&pair, "getbulk", "ok"), 2.0);
}
