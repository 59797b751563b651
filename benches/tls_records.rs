//! What the TLS record path costs in user space, per MiB sent from one side of a
//! session to the other (no sockets, no kernel): rustls's buffered API as the
//! daemons used it (through tokio-rustls) before they had their own record layer
//! (`actors/src/tunnel/record.rs`), against sealing and opening the same records in
//! place with the same AEAD, which is the crypto that layer does. The difference
//! bounds what the layer saves on the bulk path.
//!
//! - `rustls_buffered`: the client writes 16 KiB chunks (`writer().write_all`),
//!   `write_tls` gathers the records, the server takes them in with `read_tls` (which
//!   reads at most 4 KiB a call), `process_new_packets` decrypts, and
//!   `reader().read` copies the plaintext out: every step tokio-rustls takes per
//!   record.
//! - `aead_in_place`: TLS 1.3 records of 16 KiB (plaintext copied into the record
//!   buffer once, the content type appended, the 5-byte header as associated data,
//!   nonce = IV xor sequence number), sealed and then opened in place with
//!   AES-256-GCM, the suite the daemons negotiate on this machine.
//!
//! Run: `cargo bench --bench tls_records` (add `-- --quick` for a short run).

// A bench has no API to document; criterion_group! makes an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Bytes moved per iteration.
const MIB: usize = 1 << 20;
/// TLS's largest record plaintext.
const RECORD: usize = 16 * 1024;
/// AES-GCM's tag.
const TAG: usize = 16;

/// A connected client/server pair, handshake done, TLS 1.3 with AES-256-GCM.
fn pair() -> (ClientConnection, ServerConnection) {
    let key = rcgen::generate_simple_self_signed(vec!["bench.test".to_string()]).expect("cert");
    let cert = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384],
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("bench.test").expect("name");
    let mut c = ClientConnection::new(Arc::new(client), name).expect("client");
    let mut s = ServerConnection::new(Arc::new(server)).expect("server");
    let mut wire = Vec::new();
    for _ in 0..10 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        shuttle(&mut wire, |w| c.write_tls(w), &mut s);
        shuttle(&mut wire, |w| s.write_tls(w), &mut c);
    }
    assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake done");
    (c, s)
}

/// Everything one side has to send, into the other, processed.
fn shuttle<C>(
    wire: &mut Vec<u8>,
    mut write: impl FnMut(&mut Vec<u8>) -> std::io::Result<usize>,
    to: &mut rustls::ConnectionCommon<C>,
) {
    wire.clear();
    while write(wire).expect("write_tls") > 0 {}
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process");
    }
}

/// One MiB from client to server through rustls's buffered API.
fn rustls_buffered(c: &mut ClientConnection, s: &mut ServerConnection, wire: &mut Vec<u8>) {
    let chunk = vec![0x5a_u8; RECORD];
    let mut out = vec![0_u8; RECORD];
    let mut got = 0;
    for _ in 0..MIB / RECORD {
        c.writer().write_all(&chunk).expect("write");
        wire.clear();
        while c.write_tls(wire).expect("write_tls") > 0 {}
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("read_tls");
            s.process_new_packets().expect("process");
            loop {
                match s.reader().read(&mut out) {
                    Ok(n) if n > 0 => got += n,
                    _ => break,
                }
            }
        }
    }
    assert_eq!(got, MIB);
    black_box(&out);
}

/// One side's record state: key, IV and sequence number.
struct Side {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Side {
    fn new() -> Self {
        let key = UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key");
        Self {
            key: LessSafeKey::new(key),
            iv: [9; 12],
            seq: 0,
        }
    }

    fn nonce(&mut self) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }
}

/// One MiB sealed and opened in place, record by record.
fn aead_in_place(tx: &mut Side, rx: &mut Side, record: &mut Vec<u8>) {
    let chunk = vec![0x5a_u8; RECORD];
    let mut got = 0;
    for _ in 0..MIB / RECORD {
        let len = RECORD + 1 + TAG;
        let header = [23, 3, 3, (len >> 8) as u8, len as u8];
        record.clear();
        record.extend_from_slice(&chunk);
        record.push(23);
        let nonce = tx.nonce();
        let tag = tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), record)
            .expect("seal");
        record.extend_from_slice(tag.as_ref());
        let nonce = rx.nonce();
        let plain = rx
            .key
            .open_in_place(nonce, Aad::from(header), record)
            .expect("open");
        got += plain.len() - 1;
    }
    assert_eq!(got, MIB);
    black_box(&record);
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_record_path_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    let (mut client, mut server) = pair();
    let mut wire = Vec::with_capacity(2 * RECORD);
    group.bench_function("rustls_buffered", |b| {
        b.iter(|| rustls_buffered(&mut client, &mut server, &mut wire));
    });
    let (mut tx, mut rx) = (Side::new(), Side::new());
    let mut record = Vec::with_capacity(RECORD + 1 + TAG);
    group.bench_function("aead_in_place", |b| {
        b.iter(|| aead_in_place(&mut tx, &mut rx, &mut record));
    });
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
