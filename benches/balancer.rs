//! Picking an endpoint for a new stream (`sssonector_actors::balancer::strategy::Pool`)
//! under each strategy, over a small pool (3 endpoints) and a large one (64).
//!
//! The pools are in a steady state: all endpoints eligible, weights 1 to 5 for
//! weighted round robin, and uneven active counts for least connections (held
//! fixed: a pick alone changes no count), so every pick scans the whole pool as it
//! does in the daemon.
//!
//! Run: `cargo bench --bench balancer` (add `-- --quick` for a short run).

// A bench has no API to document; criterion_group! makes an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sssonector_actors::balancer::strategy::Pool;
use sssonector_config::Strategy;

/// A pool of `n` endpoints `10.0.x.y:8080` under `strategy`.
fn pool(strategy: Strategy, n: usize) -> Pool {
    let mut pool = Pool::new(strategy);
    for i in 0..n {
        let weight = u32::try_from(i % 5 + 1).expect("small");
        let at = pool.add(&format!("10.0.{}.{}:8080", i / 250, i % 250 + 1), weight);
        // Active streams 0..7, so least connections has a real minimum to find.
        for _ in 0..(i * 7 + 3) % 8 {
            pool.started(at);
        }
    }
    pool
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    let strategies = [
        ("round_robin", Strategy::RoundRobin),
        ("least_connections", Strategy::LeastConnections),
        ("weighted_round_robin", Strategy::WeightedRoundRobin),
    ];
    for (name, strategy) in strategies {
        for n in [3, 64] {
            let mut pool = pool(strategy, n);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(pool.pick(black_box(&[]))).expect("an eligible endpoint"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
