//! The tunnel's frame codec (`sssonector_actors::tunnel::codec`) on the data path:
//! one IP packet per frame, a batch of packets per frame, and a layer-4 stream's
//! data chunk. Encoding appends to one reused buffer and decoding borrows from the
//! read buffer, as the connection's I/O tasks do, so no iteration allocates.
//!
//! Run: `cargo bench --bench codec` (add `-- --quick` for a short run).

// A bench has no API to document; criterion_group! makes an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sssonector_actors::tunnel::codec::{self, BatchWriter, Frame, BATCH_LIMIT, HEADER};

/// An IP packet that fits a 1500-byte path after the tunnel's own overhead.
const PACKET: usize = 1400;
/// A stream data chunk: what a layer-4 stream reads per frame (two TLS records).
const STREAM_DATA: usize = 32 * 1024;

/// Encode and decode of the single-payload data frames: `Packet` and `StreamData`.
fn data_frames(c: &mut Criterion) {
    let packet = vec![0x45u8; PACKET];
    let chunk = vec![0xa5u8; STREAM_DATA];
    let frames = [
        ("packet", Frame::Packet(&packet)),
        (
            "stream_data",
            Frame::StreamData {
                id: 7,
                data: &chunk,
            },
        ),
    ];
    let mut group = c.benchmark_group("codec");
    for (name, frame) in frames {
        let mut out = Vec::with_capacity(HEADER + STREAM_DATA + 4);
        codec::encode(&frame, &mut out).expect("a valid frame encodes");
        let wire = out.clone();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                codec::encode(black_box(&frame), &mut out).expect("a valid frame encodes");
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let (frame, used) = codec::decode(black_box(&wire))
                    .expect("valid")
                    .expect("whole");
                black_box((frame, used))
            })
        });
    }
    group.finish();
}

/// A `Packets` frame filled with 1400-byte packets up to [`BATCH_LIMIT`], built in
/// place with [`BatchWriter`] and decoded with every packet visited, as the hub does
/// with what the TUN device had ready.
fn batches(c: &mut Criterion) {
    let packet = vec![0x45u8; PACKET];
    let mut out = Vec::with_capacity(HEADER + BATCH_LIMIT);
    let fill = |out: &mut Vec<u8>| {
        let mut batch = BatchWriter::begin(out);
        while batch.push(&packet) {}
        batch.finish()
    };
    let count = fill(&mut out);
    let wire = out.clone();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let name = format!("packets_x{count}");
    group.bench_function(BenchmarkId::new("encode", &name), |b| {
        b.iter(|| {
            out.clear();
            black_box(fill(&mut out))
        })
    });
    group.bench_function(BenchmarkId::new("decode", &name), |b| {
        b.iter(|| {
            let (frame, used) = codec::decode(black_box(&wire))
                .expect("valid")
                .expect("whole");
            let Frame::Packets(batch) = frame else {
                unreachable!("a batch was encoded")
            };
            let bytes: usize = batch.iter().map(<[u8]>::len).sum();
            black_box((bytes, used))
        })
    });
    group.finish();
}

criterion_group!(benches, data_frames, batches);
criterion_main!(benches);
