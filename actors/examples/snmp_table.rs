//! Serves the SNMP agent with a peer table of N synthetic rows, for the benchmark in
//! `.ci/bench-snmp.sh` (issue 5: "a full snmpbulkwalk with 1,000 connection-table
//! rows"). The agent, its view, BER and UDP are the daemon's own; only the sessions
//! are made up, since a thousand real tunnels would need a thousand TUN-owning peers.
//!
//! Usage: `snmp_table [ROWS] [LISTEN]` (default 1000, 127.0.0.1:1161); community
//! `public`, SNMPv3 user `bench` (SHA-256 `bench-auth-pw`, AES `bench-priv-pw`).
//! Runs until killed.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix::Actor;
use sssonector_actors::metrics::Metrics;
use sssonector_actors::snmp::agent::{Agent, SnmpAgent};
use sssonector_actors::snmp::mib::System;
use sssonector_actors::snmp::usm::Engine;
use sssonector_actors::snmp::v3::Usm;
use sssonector_actors::tunnel::stats::{Counters, Session, Stats};
use sssonector_config::{AuthProtocol, Mode, PrivProtocol, Secret, SnmpUser};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u32 = args
        .next()
        .map_or(1000, |a| a.parse().expect("ROWS is a number"));
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:1161".into());
    let stats = Arc::new(Stats::default());
    for i in 0..rows {
        let counters = Arc::new(Counters::default());
        counters.bytes_in.store(u64::from(i) * 1_000_003, Relaxed);
        counters.packets_in.store(u64::from(i) * 977, Relaxed);
        let inner = IpAddr::from([10, 8, (i >> 8) as u8, i as u8]);
        stats.opened(Session::starting(
            format!("client-{i:04}"),
            format!("192.0.2.{}:{}", i % 250 + 1, 40_000 + i % 20_000),
            inner,
            None,
            counters,
        ));
    }
    let metrics = Arc::new(Metrics::new(stats.clone(), Mode::Server));
    let users = [SnmpUser {
        name: "bench".into(),
        auth_protocol: AuthProtocol::Sha256,
        auth_password: Secret::new("bench-auth-pw"),
        priv_protocol: PrivProtocol::Aes,
        priv_password: Secret::new("bench-priv-pw"),
    }];
    let system = System {
        descr: "SSSonector SNMP table benchmark".into(),
        name: "bench".into(),
        contact: String::new(),
        location: String::new(),
        uptime_ticks: 0,
        mode: 1,
    };
    let agent = Agent::new(
        Some(b"public".to_vec()),
        Usm::new(Engine::ephemeral(), &users),
        system,
        std::time::Instant::now(),
        stats,
        metrics,
    );
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
