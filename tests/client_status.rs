//! A client's `status` and `health` report the balancer it runs over its tunnel
//! servers (they said `balancer: off`, as a client has no service balancers), and
//! say it failed once that actor is gone.

mod common;

use common::echo::Backend;
use common::netns::Lab;
use common::pair::Pair;
use serde_json::json;

#[test]
fn client_status_and_health_show_the_tunnel_servers_balancer() {
    let lab = Lab::new();
    let srv = lab.netns("srv");
    let _backend = Backend::start(&srv, "srv", 9001);
    let pair = Pair::start(
        &lab,
        srv,
        "echo",
        "endpoints: [ { address: \"127.0.0.1:9001\" } ]",
        "",
        "",
    );
    let status = pair.ctl_ok("c1", "status", json!({}));
    assert_eq!(status["mode"], "client", "{status}");
    assert_eq!(status["components"]["balancer"], "running", "{status}");
    let health = pair.ctl_ok("c1", "health", json!({}));
    assert_eq!(
        health["checks"]["components"]["states"]["balancer"], "running",
        "{health}"
    );
    // The server's own services still count as before.
    let status = pair.ctl_ok("server", "status", json!({}));
    assert_eq!(status["components"]["balancer"], "running", "{status}");
}
