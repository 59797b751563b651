//! The hub: where the TUN device and the sessions meet, and the per-packet path.
//!
//! One task reads the TUN device ([`tun_reader`]) and routes each packet by its
//! destination to a session: a client has one session (the server), a server has one
//! per client, keyed by the client's inner address. Each packet is copied once, from
//! the read buffer into a pooled [`Chunk`] behind its frame header, as many as the
//! device has ready, and each chunk goes to the session's writer task in one channel
//! send: no per-packet allocation, lock or message. A session whose queue stays full
//! for `QUEUE_WAIT` has the chunk dropped and counted (`queue_full`), as a router
//! would, so one slow peer never holds the others up for long.
//!
//! Packets arriving from a session go to the TUN device, or, on a server, straight
//! to another client's session when the destination is that client (hub routing).
//! On a server, a client with a `security.client_destinations` entry first has each
//! packet's destination checked against its list ([`Inbound`] holds the list, taken
//! again once per read batch after a reload: no lock or lookup per packet); a denied
//! packet is dropped and counted (`destination_denied`), and reported at most once
//! per [`DENIAL_REPORT`] per session, with a count, in the log and the audit trail.
//!
//! With offloads on (`virtio_net_hdr`), a read returns a TCP or UDP superpacket of up
//! to 64 KiB; it crosses the tunnel whole in a `Gso` frame when the peer takes them,
//! and is split into MTU-sized packets (checksums completed) when it does not.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Addr, WeakAddr};
use ipnet::IpNet;
use slog::{warn, Logger};

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tun_rs::{AsyncDevice, VirtioNetHdr};

use super::access;
use super::busy::BusyPoll;
use super::codec::{HEADER, T_STREAM_DATA, VNET_HDR};
use super::stats::{Counters, DropReason, Stats};
use crate::audit::{AuditActor, Record};
use crate::error::ErrorCode;
use crate::ratelimit::Flow;

/// Bytes of a pooled chunk: room for two superpackets or a hundred small packets.
pub const CHUNK: usize = 192 * 1024;
/// Room a TUN read needs: the largest superpacket and its `virtio_net_hdr`.
pub const READ_MAX: usize = 65_536 + 64 + VNET_HDR;
/// Chunks a session's send queue holds: bounds the memory and the queueing delay a
/// slow peer can cause (at most `QUEUE * CHUNK` bytes).
pub const QUEUE: usize = 32;
/// How long the TUN reader waits for room in a full session queue before dropping:
/// long enough that one busy session gets back-pressure (TCP inside slows down
/// instead of losing packets), short enough that a stalled one cannot hold the
/// others up for long. A session that made it wait in vain is skipped without
/// waiting until its queue takes a chunk again.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
/// Bytes of a pooled stream chunk: one `StreamData` frame of two TLS records. Small,
/// because a layer-4 stream holds one while its data waits for the session queue,
/// and a thousand streams may be waiting at once.
pub const STREAM_CHUNK: usize = 32 * 1024;
/// Chunks kept for reuse, of each size.
const POOL: usize = 256;
/// Shortest time between two reports of a session's denied packets.
pub const DENIAL_REPORT: std::time::Duration = std::time::Duration::from_secs(10);
/// Packets one superpacket can split into when a peer takes no `Gso` frames.
const SPLIT_MAX: usize = 128;

const FRAME_PACKET: u8 = 0x10;
const FRAME_GSO: u8 = 0x12;
const FRAME_PONG: u8 = 0x31;
const GSO_NONE: u8 = 0;
const NEEDS_CSUM: u8 = 1;

/// A reusable buffer holding encoded frames in `buf[..len]`.
#[derive(Debug)]
pub struct Chunk {
    buf: Box<[u8]>,
    len: usize,
    /// IP packets in the chunk, for counters.
    packets: u64,
    /// IP bytes in the chunk, for counters.
    bytes: u64,
}

impl Chunk {
    /// The encoded frames.
    pub fn frames(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes that still fit.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends as much of `bytes` as fits, as they are (no frame header); how much.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// IP bytes of the packets in it; 0 for stream and control frames.
    pub fn packet_bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a Pong answering the ping `nonce`, in place.
    pub fn push_pong(&mut self, nonce: u64) {
        self.push_with(FRAME_PONG, 8, |b| b.copy_from_slice(&nonce.to_be_bytes()));
    }

    /// Appends a frame of `kind` whose payload is `[u32 id]` followed by `tail`
    /// (`StreamOpen`, `StreamClose`); false when it does not fit.
    pub fn push_stream(&mut self, kind: u8, id: u32, tail: &[u8]) -> bool {
        self.push_with(kind, 4 + tail.len(), |b| {
            b[..4].copy_from_slice(&id.to_be_bytes());
            b[4..].copy_from_slice(tail);
        })
    }

    /// Appends a `StreamData` frame for stream `id` whose bytes `read` puts into the
    /// slice it is given (at most `max` bytes) and counts; nothing is appended when
    /// it reads 0 bytes or fails. The bytes land in the chunk directly: no copy.
    ///
    /// # Errors
    /// What `read` returned.
    pub fn read_stream_data(
        &mut self,
        id: u32,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let at = self.len;
        let room = self.room().saturating_sub(HEADER + 4).min(max);
        let body = at + HEADER + 4;
        let n = read(&mut self.buf[body..body + room])?;
        if n > 0 {
            write_header(&mut self.buf[at..at + HEADER], T_STREAM_DATA, 4 + n);
            self.buf[at + HEADER..body].copy_from_slice(&id.to_be_bytes());
            self.len = body + n;
        }
        Ok(n)
    }

    /// Appends one frame header and payload built by `fill` over `payload_len`
    /// bytes; false when it does not fit.
    fn push_with(&mut self, kind: u8, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if HEADER + payload_len > self.room() {
            return false;
        }
        let at = self.len;
        write_header(&mut self.buf[at..at + HEADER], kind, payload_len);
        fill(&mut self.buf[at + HEADER..at + HEADER + payload_len]);
        self.len += HEADER + payload_len;
        true
    }
}

fn write_header(out: &mut [u8], kind: u8, len: usize) {
    let len = u32::try_from(len)
        .expect("frames are below 16 MiB")
        .to_be_bytes();
    out.copy_from_slice(&[kind, len[1], len[2], len[3]]);
}

impl AsRef<[u8]> for Chunk {
    /// The encoded frames (or bytes) it holds.
    fn as_ref(&self) -> &[u8] {
        self.frames()
    }
}

/// Chunks for reuse, in two sizes: [`CHUNK`] for packets and [`STREAM_CHUNK`] for
/// stream data. Lock-free queues, so getting and returning one costs no lock.
#[derive(Debug)]
pub struct Pool {
    packets: ArrayQueue<Box<[u8]>>,
    streams: ArrayQueue<Box<[u8]>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            packets: ArrayQueue::new(POOL),
            streams: ArrayQueue::new(POOL),
        }
    }
}

impl Pool {
    /// An empty chunk of [`CHUNK`] bytes, reused when one is free.
    pub fn get(&self) -> Chunk {
        Self::chunk(&self.packets, CHUNK)
    }

    /// An empty chunk of [`STREAM_CHUNK`] bytes, reused when one is free.
    pub fn get_small(&self) -> Chunk {
        Self::chunk(&self.streams, STREAM_CHUNK)
    }

    fn chunk(queue: &ArrayQueue<Box<[u8]>>, size: usize) -> Chunk {
        let buf = queue
            .pop()
            .unwrap_or_else(|| vec![0; size].into_boxed_slice());
        Chunk {
            buf,
            len: 0,
            packets: 0,
            bytes: 0,
        }
    }

    /// Takes a chunk of either size back.
    pub fn put(&self, chunk: Chunk) {
        let queue = if chunk.buf.len() == STREAM_CHUNK {
            &self.streams
        } else {
            &self.packets
        };
        let _ = queue.push(chunk.buf);
    }
}

/// The sending side of a session, as the router sees it.
#[derive(Debug)]
pub struct PeerTx {
    /// The session writer's queue.
    pub tx: mpsc::Sender<Chunk>,
    /// The peer takes `Gso` frames.
    pub gso: bool,
    /// The session's counters.
    pub counters: Arc<Counters>,
    /// Its queue stayed full for `QUEUE_WAIT`: drop at once until it drains.
    pub congested: std::sync::atomic::AtomicBool,
    /// Packet bytes in its queue (added before a send, taken off by the writer).
    pub queued: AtomicU64,
    /// Packet bytes its queue may hold while it is rate limited; 0 = no bound but
    /// the queue's own. Set by the writer from its throttle.
    pub bound: AtomicU64,
    /// Its rate-limiting flow, to count packets dropped by the bound.
    pub flow: std::sync::OnceLock<Arc<Flow>>,
    /// Cancelled to end the session from outside it: a new session of the same
    /// identity took its inner address over.
    pub close: CancellationToken,
}

impl PeerTx {
    /// The router's handle on a session whose writer reads `tx`.
    pub fn new(tx: mpsc::Sender<Chunk>, gso: bool) -> Self {
        Self {
            tx,
            gso,
            counters: Arc::default(),
            congested: std::sync::atomic::AtomicBool::new(false),
            queued: AtomicU64::new(0),
            bound: AtomicU64::new(0),
            flow: std::sync::OnceLock::new(),
            close: CancellationToken::new(),
        }
    }

    /// Whether a chunk of `bytes` packet bytes would overrun the rate-limited bound;
    /// if not, it is counted as queued.
    fn enqueue(&self, bytes: u64) -> bool {
        let bound = self.bound.load(Relaxed);
        let queued = self.queued.fetch_add(bytes, Relaxed);
        if bound != 0 && queued + bytes > bound && queued > 0 {
            self.queued.fetch_sub(bytes, Relaxed);
            return false;
        }
        true
    }
}

/// Frames on their way to one peer, flushed as one chunk.
pub struct Outbox {
    chunk: Chunk,
    peer: Option<Arc<PeerTx>>,
}

impl Outbox {
    fn new(pool: &Pool) -> Self {
        Self {
            chunk: pool.get(),
            peer: None,
        }
    }

    /// Sends what is pending; a full queue drops it, counted.
    fn flush(&mut self, pool: &Pool) {
        let Some((peer, chunk)) = self.take(pool) else {
            return;
        };
        let counts = (chunk.packets, chunk.bytes);
        if !peer.enqueue(chunk.bytes) {
            return Self::account(&peer, counts, Err((chunk, DropReason::Throttled)), pool);
        }
        let result = peer.tx.try_send(chunk).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => {
                (c, DropReason::QueueFull)
            }
        });
        Self::account(&peer, counts, result, pool);
    }

    /// Sends what is pending, waiting up to [`QUEUE_WAIT`] for room.
    async fn flush_waiting(&mut self, pool: &Pool) {
        let Some((peer, chunk)) = self.take(pool) else {
            return;
        };
        let counts = (chunk.packets, chunk.bytes);
        if !peer.enqueue(chunk.bytes) {
            return Self::account(&peer, counts, Err((chunk, DropReason::Throttled)), pool);
        }
        let result = match peer.tx.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(c)) if !peer.congested.load(Relaxed) => {
                let waited = peer.tx.send_timeout(c, QUEUE_WAIT).await;
                waited.map_err(|e| match e {
                    mpsc::error::SendTimeoutError::Timeout(c) => {
                        peer.congested.store(true, Relaxed);
                        c
                    }
                    mpsc::error::SendTimeoutError::Closed(c) => c,
                })
            }
            Err(mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c)) => {
                Err(c)
            }
        };
        let result = result.map_err(|c| (c, DropReason::QueueFull));
        Self::account(&peer, counts, result, pool);
    }

    fn take(&mut self, pool: &Pool) -> Option<(Arc<PeerTx>, Chunk)> {
        let peer = self.peer.take()?;
        if self.chunk.len == 0 {
            return None;
        }
        Some((peer, std::mem::replace(&mut self.chunk, pool.get())))
    }

    /// Counts a sent chunk's packets as out, or a refused one's as dropped.
    fn account(
        peer: &PeerTx,
        (packets, bytes): (u64, u64),
        sent: Result<(), (Chunk, DropReason)>,
        pool: &Pool,
    ) {
        match sent {
            Ok(()) => {
                peer.congested.store(false, Relaxed);
                peer.counters.packets_out.fetch_add(packets, Relaxed);
                peer.counters.bytes_out.fetch_add(bytes, Relaxed);
            }
            Err((chunk, reason)) => {
                if reason == DropReason::QueueFull {
                    peer.queued.fetch_sub(bytes, Relaxed);
                }
                for _ in 0..chunk.packets {
                    peer.counters.drop_packet(reason);
                }
                if let (DropReason::Throttled, Some(flow)) = (reason, peer.flow.get()) {
                    flow.count_dropped(chunk.packets);
                }
                pool.put(chunk);
            }
        }
    }

    /// Makes the outbox collect for `peer` with at least `need` bytes of room.
    fn aim(&mut self, peer: &Arc<PeerTx>, need: usize, pool: &Pool) {
        let same = self.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, peer));
        if !same || self.chunk.room() < need {
            self.flush(pool);
        }
        if self.peer.is_none() {
            self.peer = Some(peer.clone());
        }
    }
}

/// Source and destination of an IP packet.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some((Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into()))
        }
        6 => {
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some((Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into()))
        }
        _ => None,
    }
}

/// IP packets a frame stands for: a superpacket counts as the segments it becomes.
fn segments(hdr: &[u8; VNET_HDR], packet_len: usize) -> u64 {
    let gso_size = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
    let hdr_len = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
    if hdr[1] & 0x7f == GSO_NONE || gso_size == 0 {
        return 1;
    }
    let payload = packet_len.saturating_sub(hdr_len).max(1);
    payload.div_ceil(gso_size) as u64
}

/// Completes a partial checksum (`NEEDS_CSUM` without segmentation), for a peer or a
/// device that takes no offloads.
fn complete_checksum(hdr: &[u8; VNET_HDR], packet: &mut [u8]) {
    if hdr[0] & NEEDS_CSUM == 0 {
        return;
    }
    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let at = start + usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if at + 2 > packet.len() {
        return;
    }
    let initial = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at] = 0;
    packet[at + 1] = 0;
    let sum = !tun_rs::checksum(&packet[start..], u64::from(initial));
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Who holds a route on a server: the session's identity, where it comes from, and
/// its handle (to close it when the same identity takes the address over).
#[derive(Clone)]
pub struct Holder {
    /// The authenticated identity: the certificate name `allowed_clients` matched.
    pub identity: Arc<str>,
    /// The client's `ip:port`, for the audit record of a takeover.
    pub remote: String,
    /// The session's router handle.
    pub peer: Arc<PeerTx>,
}

/// What [`decide_claim`] says about a session claiming an inner address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Free: take it.
    Take,
    /// Held by a session of the same identity: the client came back from elsewhere
    /// (NAT rebinding, a new uplink) before the old session timed out. The new
    /// session takes over and the old one is closed.
    Replace,
    /// Held by another identity: refused (`E_ADDRESS_IN_USE`).
    InUse,
    /// Free, but `connection.max_connections` sessions are live (`E_CONN_LIMIT`).
    Full,
}

/// The decision on a claim by `claimant` of an address held by `holder` (`None`:
/// free; an empty identity is nobody's, so never replaced), with `live` sessions of
/// `max` at most. A takeover keeps the count, so it is never `Full`.
pub fn decide_claim(holder: Option<&str>, claimant: &str, live: usize, max: usize) -> Claim {
    match holder {
        Some(h) if !h.is_empty() && h == claimant => Claim::Replace,
        Some(_) => Claim::InUse,
        None if live >= max => Claim::Full,
        None => Claim::Take,
    }
}

/// What came of [`Hub::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The address was free and is now this session's.
    Taken,
    /// The address was this identity's older session's (from `remote`), now closed.
    Replaced {
        /// Where the old session came from.
        remote: String,
    },
    /// Another identity holds it.
    InUse,
    /// Too many sessions are live.
    Full,
}

/// The TUN device and the routing table between it and the sessions.
pub struct Hub {
    tun: Arc<AsyncDevice>,
    /// The device hands out and takes `virtio_net_hdr`-prefixed packets.
    pub offload: bool,
    /// The server: routes by destination. A client sends everything to `default`.
    routes: ArcSwap<HashMap<IpAddr, Arc<PeerTx>>>,
    default: ArcSwapOption<PeerTx>,
    /// Serialises changes to `routes` (control path only), and says who holds each
    /// route (server).
    writer: Mutex<HashMap<IpAddr, Holder>>,
    /// Reused chunks.
    pub pool: Pool,
    /// The tunnel's counters.
    pub stats: Arc<Stats>,
    /// Spins the data threads a little before they sleep.
    pub busy: Arc<BusyPoll>,
    /// Layer-4 streams: services, limits, the client's current session.
    pub streams: crate::service::Streams,
    /// Server: `security.client_destinations`, by session identity; swapped whole
    /// on reload, when [`Hub::destinations_epoch`] moves on so each session's
    /// [`Inbound`] takes its new list at its next batch.
    destinations: ArcSwap<HashMap<String, Arc<[IpNet]>>>,
    destinations_epoch: AtomicU64,
    /// Where security events go (`packet_denied`, `stream_refused`). Weak: the hub
    /// lives as long as the process, and a strong address would keep the audit
    /// actor, and so every graceful stop, waiting for the whole drain timeout.
    audit: ArcSwapOption<WeakAddr<AuditActor>>,
}

impl Hub {
    /// A hub over `tun`.
    pub fn new(
        tun: Arc<AsyncDevice>,
        offload: bool,
        stats: Arc<Stats>,
        busy: Arc<BusyPoll>,
    ) -> Self {
        busy.watch(&**tun);
        Self {
            tun,
            offload,
            routes: ArcSwap::default(),
            default: ArcSwapOption::empty(),
            writer: Mutex::new(HashMap::new()),
            pool: Pool::default(),
            stats,
            busy,
            streams: crate::service::Streams::default(),
            destinations: ArcSwap::default(),
            destinations_epoch: AtomicU64::new(0),
            audit: ArcSwapOption::empty(),
        }
    }

    /// Takes `security.client_destinations` from `config`, for live sessions too.
    pub fn configure_access(&self, config: &sssonector_config::Config) {
        let map = config
            .security
            .client_destinations
            .iter()
            .map(|(name, nets)| {
                let nets: Arc<[IpNet]> = nets.iter().map(|n| *n.get()).collect();
                (name.clone(), nets)
            })
            .collect();
        self.destinations.store(Arc::new(map));
        self.destinations_epoch.fetch_add(1, Relaxed);
    }

    /// The destinations `identity` may reach; `None`: anything.
    fn destinations_of(&self, identity: &str) -> Option<Arc<[IpNet]>> {
        self.destinations.load().get(identity).cloned()
    }

    /// Where security events go from now on.
    pub fn set_audit(&self, audit: Option<Addr<AuditActor>>) {
        self.audit
            .store(audit.as_ref().map(|a| Arc::new(a.downgrade())));
    }

    /// Writes a security event to the audit log, if there is one (control path).
    pub fn audit(&self, event: &'static str, fields: serde_json::Value) {
        if let Some(a) = self.audit.load().as_ref().and_then(|a| a.upgrade()) {
            a.do_send(Record { event, fields });
        }
    }

    /// Routes `addr` to `peer` for the session of `identity` from `remote`, as
    /// [`decide_claim`] says with `max` sessions at most; a session of the same
    /// identity that held it is told to close.
    pub fn claim(&self, addr: IpAddr, peer: Arc<PeerTx>, claimant: Holder, max: usize) -> Claimed {
        let mut holders = self.writer.lock().expect("route lock not poisoned");
        let current = self.routes.load();
        let holder = current
            .get(&addr)
            .map(|p| holders.get(&addr).filter(|h| Arc::ptr_eq(&h.peer, p)));
        let decision = decide_claim(
            holder.map(|h| h.map_or("", |h| &*h.identity)),
            &claimant.identity,
            current.len(),
            max,
        );
        let replaced = match decision {
            Claim::InUse => return Claimed::InUse,
            Claim::Full => return Claimed::Full,
            Claim::Take => None,
            Claim::Replace => holders.remove(&addr),
        };
        let mut next = HashMap::clone(&current);
        next.insert(addr, peer.clone());
        self.routes.store(Arc::new(next));
        holders.insert(addr, Holder { peer, ..claimant });
        match replaced {
            Some(old) => {
                old.peer.close.cancel();
                Claimed::Replaced { remote: old.remote }
            }
            None => Claimed::Taken,
        }
    }

    /// Whether a session holds `addr`.
    pub fn is_claimed(&self, addr: IpAddr) -> bool {
        self.routes.load().contains_key(&addr)
    }

    /// Whether a session of another identity than `identity` holds `addr`.
    pub fn is_held_by_other(&self, addr: IpAddr, identity: &str) -> bool {
        let holders = self.writer.lock().expect("route lock not poisoned");
        let current = self.routes.load();
        current.get(&addr).is_some_and(|p| {
            !holders
                .get(&addr)
                .is_some_and(|h| Arc::ptr_eq(&h.peer, p) && &*h.identity == identity)
        })
    }

    /// Removes the route to `addr` if it still leads to `peer`.
    pub fn release(&self, addr: IpAddr, peer: &Arc<PeerTx>) {
        let mut holders = self.writer.lock().expect("route lock not poisoned");
        let current = self.routes.load();
        if current.get(&addr).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            let mut next = HashMap::clone(&current);
            next.remove(&addr);
            self.routes.store(Arc::new(next));
            holders.remove(&addr);
        }
    }

    /// The client: everything goes to `peer` (or nowhere with `None`).
    pub fn set_default(&self, peer: Option<Arc<PeerTx>>) {
        self.default.store(peer);
    }

    fn route(&self, dst: IpAddr) -> Option<Arc<PeerTx>> {
        if let Some(p) = self.routes.load().get(&dst) {
            return Some(p.clone());
        }
        self.default.load_full()
    }

    /// Frames the `n` bytes just read into `out`'s chunk (behind room for a frame
    /// header) where they lie, when they are for the session the chunk fills for and
    /// need no change (no offload, or a peer taking `Gso` frames). Otherwise they go
    /// the copying way, by way of `spare`.
    fn place_read(&self, out: &mut Outbox, n: usize, spare: &mut [u8], split: &mut Splitter) {
        let at = out.chunk.len + HEADER;
        let raw = &out.chunk.buf[at..at + n];
        let (hdr, packet) = match self.offload {
            true => match raw.split_first_chunk::<VNET_HDR>() {
                Some((h, p)) => (Some(*h), p),
                None => return self.stats.base.drop_packet(DropReason::Malformed),
            },
            false => (None, raw),
        };
        let Some((_, dst)) = addresses(packet) else {
            return self.stats.base.drop_packet(DropReason::Malformed);
        };
        let Some(peer) = self.route(dst) else {
            return self.stats.base.drop_packet(DropReason::NoRoute);
        };
        let same = out.peer.as_ref().is_none_or(|p| Arc::ptr_eq(p, &peer));
        if !same || (hdr.is_some() && !peer.gso) {
            // For another session's chunk, or to split for a peer without `Gso` frames.
            let len = packet.len();
            spare[..len].copy_from_slice(packet);
            let packet = &mut spare[..len];
            return push_packet(out, &peer, hdr.as_ref(), packet, split, &self.pool);
        }
        let (kind, packets) = match &hdr {
            Some(h) => (FRAME_GSO, segments(h, packet.len())),
            None => (FRAME_PACKET, 1),
        };
        let bytes = packet.len() as u64;
        let c = &mut out.chunk;
        write_header(&mut c.buf[c.len..c.len + HEADER], kind, n);
        c.len += HEADER + n;
        c.packets += packets;
        c.bytes += bytes;
        out.peer.get_or_insert(peer);
    }

    /// Writes one packet that arrived from a session to the TUN device; `with_hdr` is
    /// the packet preceded by its `virtio_net_hdr` when the frame carried one.
    async fn to_tun(
        &self,
        counters: &Counters,
        hdr: Option<&[u8; VNET_HDR]>,
        with_hdr: &[u8],
        scratch: &mut [u8],
    ) {
        let packet = &with_hdr[with_hdr.len() - packet_len(hdr, with_hdr)..];
        let result = match (self.offload, hdr) {
            (true, Some(_)) => self.tun.send(with_hdr).await,
            (true, None) => {
                // The device expects a header: a zeroed one says "nothing offloaded".
                let n = VNET_HDR + packet.len();
                scratch[..VNET_HDR].fill(0);
                scratch[VNET_HDR..n].copy_from_slice(packet);
                self.tun.send(&scratch[..n]).await
            }
            (false, _) => self.tun.send(packet).await,
        };
        if result.is_err() {
            counters.drop_packet(DropReason::TunWrite);
        }
    }
}

fn packet_len(hdr: Option<&[u8; VNET_HDR]>, with_hdr: &[u8]) -> usize {
    with_hdr.len() - hdr.map_or(0, |_| VNET_HDR)
}

/// Scratch space for splitting superpackets for a peer that takes no `Gso` frames.
struct Splitter {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl Splitter {
    fn new() -> Self {
        Self {
            bufs: Vec::new(),
            sizes: Vec::new(),
        }
    }

    /// Splits `packet` per `hdr`; returns the packets in `bufs[..n]` / `sizes[..n]`.
    fn split(&mut self, hdr: &[u8; VNET_HDR], packet: &mut [u8]) -> io::Result<usize> {
        if self.bufs.is_empty() {
            // Allocated once per task, the first time a split is needed.
            self.bufs = vec![vec![0; 65_536]; SPLIT_MAX];
            self.sizes = vec![0; SPLIT_MAX];
        }
        let is_v6 = packet.first().is_some_and(|b| b >> 4 == 6);
        let hdr = VirtioNetHdr::decode(hdr)?;
        tun_rs::gso_split(packet, hdr, &mut self.bufs, &mut self.sizes, 0, is_v6)
    }
}

/// Appends `packet` (and its offload header) to `out` for `peer`, in the frame the
/// peer takes.
fn push_packet(
    out: &mut Outbox,
    peer: &Arc<PeerTx>,
    hdr: Option<&[u8; VNET_HDR]>,
    packet: &mut [u8],
    split: &mut Splitter,
    pool: &Pool,
) {
    match hdr {
        Some(h) if peer.gso => {
            out.aim(peer, HEADER + VNET_HDR + packet.len(), pool);
            let pushed = out
                .chunk
                .push_with(FRAME_GSO, VNET_HDR + packet.len(), |b| {
                    b[..VNET_HDR].copy_from_slice(h);
                    b[VNET_HDR..].copy_from_slice(packet);
                });
            if pushed {
                out.chunk.packets += segments(h, packet.len());
                out.chunk.bytes += packet.len() as u64;
            }
        }
        Some(h) if h[1] & 0x7f != GSO_NONE => match split.split(h, packet) {
            Ok(n) => {
                for i in 0..n {
                    let size = split.sizes[i];
                    let p = &split.bufs[i][..size];
                    push_plain(out, peer, p, pool);
                }
            }
            Err(_) => peer.counters.drop_packet(DropReason::Malformed),
        },
        Some(h) => {
            complete_checksum(h, packet);
            push_plain(out, peer, packet, pool);
        }
        None => push_plain(out, peer, packet, pool),
    }
}

fn push_plain(out: &mut Outbox, peer: &Arc<PeerTx>, packet: &[u8], pool: &Pool) {
    out.aim(peer, HEADER + packet.len(), pool);
    if out
        .chunk
        .push_with(FRAME_PACKET, packet.len(), |b| b.copy_from_slice(packet))
    {
        out.chunk.packets += 1;
        out.chunk.bytes += packet.len() as u64;
    }
}

/// Reads the TUN device until `cancel`, routing every packet to its session.
///
/// Each wakeup reads as many packets as the device has ready (up to 256) before
/// handing the chunks on, so a burst costs one channel send per chunk. Each read lands
/// in the outbox's chunk right behind room for its frame header, so a packet for the
/// session the chunk is filling for is never copied (see `Hub::place_read`).
pub async fn tun_reader(hub: Arc<Hub>, cancel: CancellationToken) -> io::Result<()> {
    let mut out = Outbox::new(&hub.pool);
    let mut spare = vec![0u8; READ_MAX].into_boxed_slice();
    let mut split = Splitter::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            ready = hub.tun.readable() => ready?,
        }
        for _ in 0..256 {
            if out.chunk.room() < HEADER + READ_MAX {
                out.flush_waiting(&hub.pool).await;
            }
            let at = out.chunk.len + HEADER;
            match hub.tun.try_recv(&mut out.chunk.buf[at..at + READ_MAX]) {
                Ok(n) => hub.place_read(&mut out, n, &mut spare, &mut split),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        out.flush_waiting(&hub.pool).await;
    }
}

/// Per-session state of the path from a peer to the TUN device.
pub struct Inbound {
    hub: Arc<Hub>,
    counters: Arc<Counters>,
    /// The server: the only source address this client may use.
    source: Option<IpAddr>,
    scratch: Box<[u8]>,
    out: Outbox,
    split: Splitter,
    /// The session's identity, the key of `client_destinations`.
    identity: Arc<str>,
    /// The destinations it may reach (`None`: any), as of `epoch`.
    allowed: Option<Arc<[IpNet]>>,
    epoch: u64,
    /// Packets denied, told at most once per [`DENIAL_REPORT`].
    denials: access::Denials,
    log: Logger,
}

impl Inbound {
    /// The path for one session; `source` pins the packets' source address (a
    /// server) and `identity` names the session for its destination list.
    pub fn new(
        hub: Arc<Hub>,
        counters: Arc<Counters>,
        source: Option<IpAddr>,
        identity: Arc<str>,
        log: Logger,
    ) -> Self {
        let out = Outbox::new(&hub.pool);
        let epoch = hub.destinations_epoch.load(Relaxed);
        let allowed = source.and(hub.destinations_of(&identity));
        Self {
            hub,
            counters,
            source,
            scratch: vec![0; READ_MAX].into_boxed_slice(),
            out,
            split: Splitter::new(),
            identity,
            allowed,
            epoch,
            denials: access::Denials::new(DENIAL_REPORT),
            log,
        }
    }

    /// Takes a reloaded destination list; reports denials (once per batch).
    fn refresh(&mut self) {
        let epoch = self.hub.destinations_epoch.load(Relaxed);
        if epoch != self.epoch && self.source.is_some() {
            self.epoch = epoch;
            self.allowed = self.hub.destinations_of(&self.identity);
        }
        if self.denials.pending() {
            if let Some(r) = self.denials.due(Instant::now()) {
                self.report_denials(r);
            }
        }
    }

    /// Logs and audits the packets denied since the last report.
    fn report_denials(&self, r: access::DenialReport) {
        let count = r.count;
        let to = r
            .last_destination
            .map(|a| a.to_string())
            .unwrap_or_default();
        warn!(self.log, "packets denied";
            "code" => ErrorCode::AccessDenied, "peer" => &*self.identity, "count" => count,
            "destination" => &to);
        self.hub.audit(
            "packet_denied",
            serde_json::json!({"peer": &*self.identity, "code": ErrorCode::AccessDenied,
                "reason": "destination_not_allowed", "count": count, "last_destination": to}),
        );
    }

    /// Delivers one packet from the peer: to another session (a server forwarding
    /// between clients) or to the TUN device. `with_hdr` is the packet, preceded by
    /// its `virtio_net_hdr` when `hdr` is given.
    pub async fn deliver(&mut self, hdr: Option<&[u8; VNET_HDR]>, with_hdr: &[u8]) {
        let packet = &with_hdr[with_hdr.len() - packet_len(hdr, with_hdr)..];
        let c = &self.counters;
        let packets = hdr.map_or(1, |h| segments(h, packet.len()));
        c.packets_in.fetch_add(packets, Relaxed);
        c.bytes_in.fetch_add(packet.len() as u64, Relaxed);
        let Some((src, dst)) = addresses(packet) else {
            return c.drop_packet(DropReason::Malformed);
        };
        if self.source.is_some_and(|s| s != src) {
            return c.drop_packet(DropReason::SourceMismatch);
        }
        if !access::reaches(self.allowed.as_deref(), dst) {
            for _ in 0..packets {
                c.drop_packet(DropReason::DestinationDenied);
            }
            self.denials.deny(packets, dst);
            return;
        }
        if self.source.is_some() {
            if let Some(peer) = self.hub.routes.load().get(&dst).cloned() {
                // Hub: from one client to another, without touching the TUN device.
                let n = packet.len();
                self.scratch[..n].copy_from_slice(packet);
                let pool = &self.hub.pool;
                push_packet(
                    &mut self.out,
                    &peer,
                    hdr,
                    &mut self.scratch[..n],
                    &mut self.split,
                    pool,
                );
                return;
            }
        }
        self.hub
            .to_tun(&self.counters, hdr, with_hdr, &mut self.scratch)
            .await;
    }

    /// Sends what was forwarded to other sessions; call after each read.
    pub fn flush(&mut self) {
        self.out.flush(&self.hub.pool);
        self.refresh();
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        // The session ended: what was denied since the last report is told now.
        if let Some(r) = self.denials.rest() {
            self.report_denials(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::codec;

    #[test]
    fn the_same_identity_takes_its_address_over_and_another_is_refused() {
        assert_eq!(decide_claim(None, "c1", 0, 10), Claim::Take);
        assert_eq!(decide_claim(Some("c1"), "c1", 10, 10), Claim::Replace);
        assert_eq!(decide_claim(Some("c1"), "c2", 1, 10), Claim::InUse);
        assert_eq!(decide_claim(Some(""), "", 1, 10), Claim::InUse);
        assert_eq!(decide_claim(None, "c1", 10, 10), Claim::Full);
        assert_eq!(decide_claim(None, "c1", 11, 10), Claim::Full);
    }

    #[test]
    fn addresses_come_from_the_ip_header() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 0, 0, 2]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 1]);
        let (s, d) = addresses(&v4).expect("ipv4");
        assert_eq!(
            (s.to_string(), d.to_string()),
            ("10.0.0.2".into(), "10.0.0.1".into())
        );
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[39] = 1;
        let (_, d) = addresses(&v6).expect("ipv6");
        assert_eq!(d.to_string(), "::1");
        assert_eq!(addresses(&v4[..19]), None);
        assert_eq!(addresses(&[0x00; 40]), None);
        assert_eq!(addresses(&[]), None);
    }

    #[test]
    fn a_superpacket_counts_as_its_segments() {
        // TCPv4, hdr_len 52, gso_size 1448: 52 + 3 * 1448 + 10 bytes is four segments.
        let mut hdr = [0u8; VNET_HDR];
        hdr[1] = 1;
        hdr[2..4].copy_from_slice(&52u16.to_le_bytes());
        hdr[4..6].copy_from_slice(&1448u16.to_le_bytes());
        assert_eq!(segments(&hdr, 52 + 3 * 1448 + 10), 4);
        assert_eq!(segments(&[0; VNET_HDR], 1500), 1);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        // A UDP/IPv4 datagram 10.0.0.1:1 -> 10.0.0.2:2 with payload "hi"; the kernel
        // leaves the pseudo-header sum in the checksum field.
        let mut p = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IP
            0, 1, 0, 2, 0, 10, 0, 0, b'h', b'i', // UDP
        ];
        let pseudo: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 10;
        let folded = ((pseudo >> 16) + (pseudo & 0xffff)) as u16;
        p[26..28].copy_from_slice(&folded.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR];
        hdr[0] = NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&20u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
        complete_checksum(&hdr, &mut p);
        // Verify: the one's complement sum over pseudo-header and segment is 0xffff.
        let seg_sum = tun_rs::checksum(&p[20..], u64::from(pseudo));
        assert_eq!(seg_sum, 0xffff);
    }

    #[test]
    fn a_pong_is_written_in_place_as_the_codec_reads_it() {
        let mut c = Pool::default().get();
        c.push_pong(0xdead_beef);
        let (frame, used) = codec::decode(c.frames()).expect("valid").expect("whole");
        assert_eq!(
            (frame, used),
            (codec::Frame::Pong(0xdead_beef), c.frames().len())
        );
    }

    #[test]
    fn a_throttled_session_queues_to_its_bound_then_drops_as_throttled() {
        let pool = Pool::default();
        let (tx, mut rx) = mpsc::channel(16);
        let peer = Arc::new(PeerTx::new(tx, false));
        let limits = crate::ratelimit::Limits::default();
        let flow = limits.flow("peer".into(), None, 0);
        peer.flow.set(flow.clone()).expect("unset");
        // Room for two 100-byte packets: the third is dropped.
        peer.bound.store(250, Relaxed);
        let mut out = Outbox::new(&pool);
        let mut split = Splitter::new();
        let mut packet = [0x45u8; 100];
        for _ in 0..3 {
            push_packet(&mut out, &peer, None, &mut packet, &mut split, &pool);
            out.flush(&pool);
        }
        assert_eq!(peer.counters.packets_out.load(Relaxed), 2);
        assert_eq!(peer.counters.drops(DropReason::Throttled), 1);
        assert_eq!(flow.dropped.load(Relaxed), 1);
        assert_eq!(peer.queued.load(Relaxed), 200);
        // The writer takes one off: room for one more.
        let chunk = rx.try_recv().expect("queued");
        peer.queued.fetch_sub(chunk.packet_bytes(), Relaxed);
        push_packet(&mut out, &peer, None, &mut packet, &mut split, &pool);
        out.flush(&pool);
        assert_eq!(peer.counters.packets_out.load(Relaxed), 3);
        // An empty queue always takes a chunk, however small the bound.
        peer.bound.store(1, Relaxed);
        while let Ok(c) = rx.try_recv() {
            peer.queued.fetch_sub(c.packet_bytes(), Relaxed);
        }
        push_packet(&mut out, &peer, None, &mut packet, &mut split, &pool);
        out.flush(&pool);
        assert_eq!(peer.counters.packets_out.load(Relaxed), 4);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let pool = Pool::default();
        let (tx, mut rx) = mpsc::channel(1);
        let peer = Arc::new(PeerTx::new(tx, false));
        let mut out = Outbox::new(&pool);
        let mut split = Splitter::new();
        let mut packet = [0x45u8; 100];
        for _ in 0..2 {
            push_packet(&mut out, &peer, None, &mut packet, &mut split, &pool);
            out.flush(&pool);
        }
        assert_eq!(peer.counters.packets_out.load(Relaxed), 1);
        assert_eq!(peer.counters.drops(DropReason::QueueFull), 1);
        let chunk = rx.try_recv().expect("one chunk queued");
        let (frame, used) = codec::decode(chunk.frames())
            .expect("valid")
            .expect("whole");
        assert_eq!(frame, codec::Frame::Packet(&[0x45; 100]));
        assert_eq!(used, chunk.frames().len());
    }
}
