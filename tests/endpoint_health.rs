//! A newly added endpoint reads `unknown` in `ctl endpoints` until its first health
//! check, not `healthy`; a checked one reads its verdict.

mod common;

use std::time::{Duration, Instant};

use common::{server_yaml, Control, TestServer};
use serde_json::{json, Value};

const OLD: &str = "127.0.0.1:1";
const NEW: &str = "127.0.0.1:2";

fn services(health_check: &str, endpoints: &[&str]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        "balancer: {{ health_check: {health_check}, unhealthy_threshold: 1 }}\n\
         services: [ {{ name: web, endpoints: [ {} ] }} ]\n",
        list.join(", ")
    )
}

fn endpoint(ctl: &mut Control, id: u64, address: &str) -> Value {
    let reply = ctl.call(id, "endpoints", json!({}));
    reply["data"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["address"] == address)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_new_endpoint_is_unknown_until_its_first_check() {
    let server = TestServer::start(&services("200ms", &[OLD]));
    let mut ctl = Control::connect(&server.dir.path().join("ctl.sock"));
    // The first endpoint (a closed port) is checked and found down.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 1;
    let old = loop {
        let e = endpoint(&mut ctl, id, OLD);
        id += 1;
        if e["checks"].as_u64().unwrap_or(0) >= 1 || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(old["health"], "unhealthy", "{old}");

    // A reload adds one and makes the checks rare: it stays unchecked.
    server_yaml(server.dir.path(), &services("1h", &[OLD, NEW]));
    let reply = ctl.call(id, "reload", json!({}));
    assert_eq!(reply["ok"], true, "{reply}");
    let new = endpoint(&mut ctl, id + 1, NEW);
    assert_eq!(new["checks"], 0, "{new}");
    assert_eq!(new["health"], "unknown", "{new}");
    assert_eq!(endpoint(&mut ctl, id + 2, OLD)["health"], "unhealthy");
}
