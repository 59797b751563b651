//! Serves the SNMP agent with a peer table of N synthetic rows, for the benchmark in
//! `.ci/bench-snmp.sh` (issue 5: "a full snmpbulkwalk with 1,000 connection-table
//! rows"). The agent, its view, BER and UDP are the daemon's own; only the sessions
//! are made up ([`Agent::synthetic`]), since a thousand real tunnels would need a
//! thousand TUN-owning peers.
//!
//! Usage: `snmp_table [ROWS] [LISTEN]` (default 1000, 127.0.0.1:1161); community
//! `public`, SNMPv3 user `bench` (SHA-256 `bench-auth-pw`, AES `bench-priv-pw`).
//! Runs until killed.

use std::sync::Arc;

use actix::Actor;
use sssonector_actors::snmp::agent::{Agent, SnmpAgent};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u32 = args
        .next()
        .map_or(1000, |a| a.parse().expect("ROWS is a number"));
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:1161".into());
    let agent = Agent::synthetic(rows);
    let socket = std::net::UdpSocket::bind(&listen)?;
    socket.set_nonblocking(true)?;
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let system = actix::System::new();
    system.block_on(async move {
        let _agent = SnmpAgent::new(socket, Arc::new(agent), log, None).start();
        eprintln!("snmp_table: {rows} rows on {listen}");
        std::future::pending::<()>().await;
    });
    Ok(())
}
