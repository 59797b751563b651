//! The token bucket (`sssonector_actors::ratelimit::TokenBucket`) as a throttled
//! connection's I/O task asks it on every read, with the clock passed in and moved
//! forward by hand: no clock read is timed, only the bucket.
//!
//! - `plenty`: the fast path of a flow under its rate: the bucket has the tokens
//!   (`available`, then `consume` what was read; or `take` in one call).
//! - `must_wait`: a saturated flow: the bucket is in debt, so every read asks how
//!   long to wait (`available`, then `delay`).
//!
//! Run: `cargo bench --bench bucket` (add `-- --quick` for a short run).

// A bench has no API to document; criterion_group! makes an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sssonector_actors::ratelimit::TokenBucket;

/// Bytes per read: one socket read of a stream.
const READ: u64 = 16 * 1024;

fn bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_bucket");
    // 10 GB/s with a 4 MiB burst, a read every 10 µs: 100 kB earned per 16 KiB taken,
    // so the bucket never runs short.
    let step = Duration::from_micros(10);
    let t0 = Instant::now();
    let mut b = TokenBucket::new(10_000_000_000, 4 << 20, t0);
    let mut now = t0;
    group.bench_function("plenty/available_consume", |bench| {
        bench.iter(|| {
            now += step;
            let n = b.available(black_box(now)).min(READ);
            b.consume(n, now);
            black_box(n)
        })
    });
    let mut b = TokenBucket::new(10_000_000_000, 4 << 20, t0);
    let mut now = t0;
    group.bench_function("plenty/take", |bench| {
        bench.iter(|| {
            now += step;
            black_box(b.take(black_box(READ), now))
        })
    });
    // 1 MB/s, 64 KiB burst, charged far into debt (as an oversized chunk of packets
    // leaves it): a read every µs earns one byte and never reaches the quantum.
    let rate = 1_000_000;
    // What `Throttle::allow` waits for at least: a twentieth of a second's worth.
    let quantum = rate / 20;
    let mut b = TokenBucket::new(rate, 64 * 1024, t0);
    b.charge(u64::MAX / 2, t0);
    let mut now = t0;
    let step = Duration::from_micros(1);
    group.bench_function("must_wait/available_delay", |bench| {
        bench.iter(|| {
            now += step;
            let available = b.available(black_box(now));
            black_box((available, b.delay(quantum, now)))
        })
    });
    assert_eq!(b.available(now), 0, "the bucket stayed in debt throughout");
    group.finish();
}

criterion_group!(benches, bucket);
criterion_main!(benches);
