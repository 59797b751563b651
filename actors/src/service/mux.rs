//! Layer-4 streams multiplexed on one tunnel session (the wire rules are in the codec's
//! "Streams" section).
//!
//! Three parts share a [`Stream`]'s state through atomics:
//! - the session's **read task** owns a [`Demux`]: it hands `StreamData` to the
//!   stream's socket with a non-blocking write where the bytes lie in the read buffer
//!   (no copy, no wakeup), and only what the socket does not take at once goes to the
//!   stream's pending buffer. It never waits on a stream, so a slow one cannot stall
//!   the others; the window bounds what one can pend.
//! - the stream's **task** (`run`) reads its socket straight into a pooled chunk
//!   behind a frame header (as much as the peer's window allows), sends it on the
//!   session queue, writes the pending bytes, and carries FIN and reset both ways.
//! - the session's **write task** sends the windows granted back ([`Mux::control`]),
//!   queued without blocking by whoever handed bytes to a socket.
//!
//! An idle stream holds no buffer: chunks are taken only when the socket has bytes,
//! and pending bytes wait in pooled chunks that go back to the pool once written, so
//! a backend that falls behind again and again reuses warm buffers rather than
//! growing a fresh one (page faults, realloc copies) each time.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use slog::{debug, Logger};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::balancer::{Connect, Connected, Lease};
use crate::connection::End;
use crate::error::ErrorCode;
use crate::ratelimit::{Flow, Throttle};
use crate::tunnel::codec::{self, Frame, HEADER, STREAM_WINDOW, T_STREAM_CLOSE, T_STREAM_OPEN};
use crate::tunnel::hub::{Chunk, Hub, STREAM_CHUNK};
use crate::tunnel::write_queue::WriteQueue;

/// Most data bytes one `StreamData` frame carries: a pooled stream chunk's worth.
pub const DATA_MAX: usize = STREAM_CHUNK - HEADER - 4;
/// Consumed bytes a receiver collects before it grants them back: a quarter window,
/// so a busy stream sends one `StreamWindow` per 512 KiB and never runs dry.
const GRANT_AT: u32 = STREAM_WINDOW / 4;
/// Refusals and grants that may wait for the writer before the peer is judged to
/// be flooding the session with stream opens it cannot have.
const CONTROL_MAX: usize = 65_536;
/// Pending chunks one write to the socket takes at most.
const PENDING_WRITE: usize = 8;

const PEER_FIN: u8 = 1;
const RESET: u8 = 2;

/// One stream's state, shared by the session's read task and the stream's task.
#[derive(Debug)]
pub struct Stream {
    id: u32,
    /// The service it belongs to.
    pub service: String,
    socket: OnceLock<TcpStream>,
    /// Bytes from the peer the socket has not taken yet (read task appends, the
    /// stream task writes them out); `pending_len` mirrors its length so the read
    /// task can tell "empty" without the lock.
    pending: Mutex<Pending>,
    pending_len: AtomicUsize,
    /// Bytes we may still send: the peer's window.
    credit: AtomicI64,
    /// Bytes handed to the socket and not yet granted back.
    owed: AtomicU32,
    /// Window granted to the peer so far, the initial one included.
    granted: AtomicU64,
    grant_queued: AtomicBool,
    flags: AtomicU8,
    reset_code: AtomicU16,
    wake: Notify,
    /// When it opened.
    pub started: Instant,
    /// Bytes read from the local socket and sent to the peer.
    pub bytes_sent: AtomicU64,
    /// Bytes from the peer written to the local socket.
    pub bytes_received: AtomicU64,
    /// Server: the endpoint's lease, for its byte counters.
    lease: OnceLock<Lease>,
    /// Its rate limit and numbers.
    flow: Arc<Flow>,
}

/// Bytes for the socket, in pooled chunks.
type Pending = WriteQueue<Chunk>;

impl Stream {
    pub(crate) fn new(id: u32, service: &str, flow: Arc<Flow>) -> Self {
        Self {
            id,
            service: service.to_owned(),
            socket: OnceLock::new(),
            pending: Mutex::default(),
            pending_len: AtomicUsize::new(0),
            credit: AtomicI64::new(i64::from(STREAM_WINDOW)),
            owed: AtomicU32::new(0),
            granted: AtomicU64::new(u64::from(STREAM_WINDOW)),
            grant_queued: AtomicBool::new(false),
            flags: AtomicU8::new(0),
            reset_code: AtomicU16::new(0),
            wake: Notify::new(),
            started: Instant::now(),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            lease: OnceLock::new(),
            flow,
        }
    }

    /// The stream's id on its session.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Server: the endpoint it was connected to.
    pub fn endpoint(&self) -> Option<&str> {
        self.lease.get().map(Lease::address)
    }

    /// Hands bytes from the peer to the socket, or to the pending buffer for the
    /// stream's task when the socket does not take them at once (or is not
    /// connected yet).
    fn deliver(self: &Arc<Self>, mut data: &[u8], mux: &Mux) {
        if self.flags.load(Acquire) & RESET != 0 {
            return;
        }
        if self.pending_len.load(Acquire) == 0 {
            if let Some(socket) = self.socket.get() {
                if let Ok(n) = socket.try_write(data) {
                    data = &data[n..];
                    self.consumed(n, mux);
                }
            }
        }
        if !data.is_empty() {
            let mut p = self.pending.lock().expect("pending lock not poisoned");
            self.pending_len.fetch_add(data.len(), Release);
            while !data.is_empty() {
                let n = match p.last_mut() {
                    Some(last) if last.room() > 0 => last.fill(data),
                    _ => {
                        let mut chunk = mux.hub.pool.get_small();
                        let n = chunk.fill(data);
                        p.push(chunk);
                        n
                    }
                };
                data = &data[n..];
            }
            drop(p);
            self.wake.notify_one();
        }
    }

    /// Writes pending bytes until the socket is full.
    fn flush_pending(self: &Arc<Self>, socket: &TcpStream, mux: &Mux) -> io::Result<()> {
        let mut p = self.pending.lock().expect("pending lock not poisoned");
        while !p.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); PENDING_WRITE];
            let used = p.slices(&mut slices);
            let n = match socket.try_write_vectored(&slices[..used]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            self.pending_len.fetch_sub(n, Release);
            self.consumed(n, mux);
            p.advance(n, |done| mux.hub.pool.put(done));
        }
        Ok(())
    }

    /// `n` bytes reached the socket: count them and grant them back once enough
    /// have gathered.
    fn consumed(self: &Arc<Self>, n: usize, mux: &Mux) {
        let n32 = u32::try_from(n).expect("below a window");
        self.bytes_received.fetch_add(n as u64, Relaxed);
        if let Some(lease) = self.lease.get() {
            lease.row().add_out(n as u64);
        }
        let owed = self.owed.fetch_add(n32, AcqRel) + n32;
        if owed >= GRANT_AT && !self.grant_queued.swap(true, AcqRel) {
            mux.control.push(Control::Grant(self.clone()));
            mux.wake.notify_one();
        }
    }

    /// The peer ended its direction (code 0) or the whole stream.
    fn peer_closed(&self, code: u16) {
        if code == 0 {
            self.flags.fetch_or(PEER_FIN, Release);
        } else {
            self.reset_code.store(code, Relaxed);
            self.flags.fetch_or(RESET, Release);
        }
        self.wake.notify_one();
    }

    fn reset_here(&self) {
        self.flags.fetch_or(RESET, Release);
        self.wake.notify_one();
    }
}

/// What the write task sends for the streams besides their data.
#[derive(Debug)]
enum Control {
    /// The window `owed` to this stream.
    Grant(Arc<Stream>),
    /// A refused `StreamOpen`: `StreamClose` with this code.
    Refuse(u32, ErrorCode),
}

/// One session's streams, as the stream tasks and the write task see them.
pub struct Mux {
    hub: Arc<Hub>,
    tx: mpsc::Sender<Chunk>,
    control: SegQueue<Control>,
    /// Wakes the write task: there is [`Mux::control`] work.
    pub wake: Notify,
    opened: mpsc::UnboundedSender<Weak<Stream>>,
    next_id: AtomicU32,
    /// The peer's certificate name: the request limiter's key and the streams'
    /// flows' peer.
    peer: Arc<str>,
    /// Fires when the session ends: every stream is reset.
    closed: CancellationToken,
    log: Logger,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").finish_non_exhaustive()
    }
}

/// How a stream ended, for its log line and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both directions closed cleanly.
    Done,
    /// Cut, by this side or the peer, with this code.
    Reset(ErrorCode),
}

impl Mux {
    /// The streams of a session whose write task reads `tx`, and the read task's
    /// half.
    pub fn new(
        hub: Arc<Hub>,
        tx: mpsc::Sender<Chunk>,
        peer: Arc<str>,
        log: Logger,
    ) -> (Arc<Mux>, Demux) {
        let (opened, registered) = mpsc::unbounded_channel();
        let mux = Arc::new(Mux {
            hub,
            tx,
            control: SegQueue::new(),
            wake: Notify::new(),
            opened,
            next_id: AtomicU32::new(1),
            peer,
            closed: CancellationToken::new(),
            log,
        });
        let demux = Demux {
            mux: mux.clone(),
            streams: HashMap::new(),
            registered,
            sweep_at: SWEEP_MIN,
        };
        (mux, demux)
    }

    /// Whether the session under it has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Encodes the grants and refusals waiting into `out` (the write task).
    pub fn control(&self, out: &mut Vec<u8>) {
        while let Some(c) = self.control.pop() {
            let _ = match c {
                Control::Grant(s) => {
                    s.grant_queued.store(false, Release);
                    let credit = s.owed.swap(0, AcqRel);
                    if credit == 0 {
                        continue;
                    }
                    s.granted.fetch_add(u64::from(credit), AcqRel);
                    codec::encode(&Frame::StreamWindow { id: s.id, credit }, out)
                }
                Control::Refuse(id, code) => codec::encode(
                    &Frame::StreamClose {
                        id,
                        code: code.wire(),
                    },
                    out,
                ),
            };
        }
    }

    async fn send(&self, chunk: Chunk) -> Result<(), ()> {
        self.tx
            .send(chunk)
            .await
            .map_err(|e| self.hub.pool.put(e.0))
    }

    async fn send_close(&self, id: u32, code: u16) {
        let mut chunk = self.hub.pool.get_small();
        chunk.push_stream(T_STREAM_CLOSE, id, &code.to_be_bytes());
        let _ = self.send(chunk).await;
    }

    /// Client: opens a stream to `service` for `socket` and runs it until it ends.
    pub async fn open(self: Arc<Self>, service: &str, socket: TcpStream) -> Ending {
        // Held until the stream ends: a graceful stop waits for it.
        let _drain = self.hub.streams.token();
        let id = self.next_id.fetch_add(1, Relaxed);
        let stream = Arc::new(Stream::new(id, service, self.flow(service, id)));
        stream
            .socket
            .set(socket)
            .expect("a new stream has no socket");
        self.hub.stats.streams.track(&stream);
        let _ = self.opened.send(Arc::downgrade(&stream));
        let mut chunk = self.hub.pool.get_small();
        chunk.push_stream(T_STREAM_OPEN, id, service.as_bytes());
        let ending = if self.send(chunk).await.is_err() {
            linger_zero(&stream);
            Ending::Reset(ErrorCode::StreamReset)
        } else {
            run(stream.clone(), &self).await
        };
        self.ended(&stream, ending);
        ending
    }

    /// Server: takes the peer's `StreamOpen` (read task), or refuses it.
    fn accept(self: &Arc<Self>, id: u32, service: &str) -> Option<Arc<Stream>> {
        let streams = &self.hub.streams;
        let counters = &self.hub.stats.streams;
        let Some(balancer) = streams.balancer(service) else {
            counters.refused(ErrorCode::UnknownService);
            debug!(self.log, "stream refused"; "service" => service, "code" => ErrorCode::UnknownService);
            self.control
                .push(Control::Refuse(id, ErrorCode::UnknownService));
            self.wake.notify_one();
            return None;
        };
        if !self.hub.stats.limits.admit_name(&self.peer) {
            counters.refused(ErrorCode::RateLimited);
            debug!(self.log, "stream refused"; "service" => service, "code" => ErrorCode::RateLimited);
            self.control
                .push(Control::Refuse(id, ErrorCode::RateLimited));
            self.wake.notify_one();
            return None;
        }
        if !streams.admits(service, &self.peer) {
            // After the request limiter: a flood of refused opens is throttled
            // (and not audited one by one) like any other.
            counters.refused(ErrorCode::AccessDenied);
            slog::warn!(self.log, "stream refused"; "service" => service,
                "code" => ErrorCode::AccessDenied, "reason" => "service_not_allowed");
            self.hub.audit(
                "stream_refused",
                serde_json::json!({"peer": &*self.peer, "service": service,
                    "code": ErrorCode::AccessDenied, "reason": "service_not_allowed",
                    "detail": format!("{} is not in the service's allowed_clients", self.peer)}),
            );
            self.control
                .push(Control::Refuse(id, ErrorCode::AccessDenied));
            self.wake.notify_one();
            return None;
        }
        if !counters.try_open(streams.limit()) {
            debug!(self.log, "stream refused"; "service" => service, "code" => ErrorCode::ConnLimit);
            self.control.push(Control::Refuse(id, ErrorCode::ConnLimit));
            self.wake.notify_one();
            return None;
        }
        let stream = Arc::new(Stream::new(id, service, self.flow(service, id)));
        counters.track(&stream);
        let mux = self.clone();
        let task = stream.clone();
        // Held until the stream ends: a graceful stop waits for it.
        let drain = streams.token();
        tokio::spawn(async move {
            let _drain = drain;
            let ending = serve(&task, &mux, balancer).await;
            mux.ended(&task, ending);
        });
        Some(stream)
    }

    /// A new stream's rate-limiting flow.
    fn flow(&self, service: &str, id: u32) -> Arc<Flow> {
        let limits = &self.hub.stats.limits;
        limits.flow(self.peer.clone(), Some(service.into()), id)
    }

    /// Records how `stream` ended.
    pub fn ended(&self, stream: &Stream, ending: Ending) {
        self.hub.stats.streams.untrack(stream);
        self.hub.stats.streams.finished(stream, ending);
        match ending {
            Ending::Done => debug!(self.log, "stream closed";
                "service" => &stream.service, "stream" => stream.id,
                "endpoint" => stream.endpoint().unwrap_or("-"),
                "sent" => stream.bytes_sent.load(Relaxed),
                "received" => stream.bytes_received.load(Relaxed)),
            Ending::Reset(code) => debug!(self.log, "stream reset";
                "service" => &stream.service, "stream" => stream.id,
                "endpoint" => stream.endpoint().unwrap_or("-"), "code" => code),
        }
    }
}

/// Server: connects `stream` to an endpoint of its service and runs it.
async fn serve(
    stream: &Arc<Stream>,
    mux: &Arc<Mux>,
    balancer: actix::Addr<crate::balancer::Balancer>,
) -> Ending {
    let connected = tokio::select! {
        c = balancer.send(Connect) => c,
        () = mux.closed.cancelled() => return Ending::Reset(ErrorCode::StreamReset),
    };
    match connected {
        Ok(Ok(Connected { socket, lease })) => {
            let socket = match Connected::socket_here(socket) {
                Ok(socket) => socket,
                Err(e) => {
                    slog::warn!(mux.log, "stream refused";
                        "service" => &stream.service, "stream" => stream.id,
                        "code" => ErrorCode::Io, "reason" => %format_args!("socket: {e}"));
                    mux.send_close(stream.id, ErrorCode::Io.wire()).await;
                    return Ending::Reset(ErrorCode::Io);
                }
            };
            // The balancer set its options (no Nagle delay, keepalive) when it dialled.
            stream.socket.set(socket).expect("connected once");
            let _ = stream.lease.set(lease);
            run(stream.clone(), mux).await
        }
        Ok(Err(e)) => {
            slog::warn!(mux.log, "stream refused";
                "service" => &stream.service, "stream" => stream.id,
                "code" => e.code, "reason" => e.message);
            mux.send_close(stream.id, e.code.wire()).await;
            Ending::Reset(e.code)
        }
        Err(_) => {
            mux.send_close(stream.id, ErrorCode::Internal.wire()).await;
            Ending::Reset(ErrorCode::Internal)
        }
    }
}

/// Moves one connected stream's bytes until both directions end or it is reset.
async fn run(stream: Arc<Stream>, mux: &Mux) -> Ending {
    let socket = stream.socket.get().expect("run after connect");
    let id = stream.id;
    let mut eof = false;
    let mut shut = false;
    let mut throttle = Throttle::new(stream.flow.clone(), mux.hub.stats.limits.clone());
    // Reading waits until then for the rate limit: the socket's data stays in the
    // kernel and TCP slows the sender down.
    let mut paused: Option<tokio::time::Instant> = None;
    loop {
        if stream.pending_len.load(Acquire) > 0 {
            if let Err(e) = stream.flush_pending(socket, mux) {
                return abort(&stream, mux, &e).await;
            }
        }
        let flags = stream.flags.load(Acquire);
        // Both sides said FIN and every byte is out: finished, even if the session
        // ended right after (a stop closing sessions once their streams drained).
        if flags & PEER_FIN != 0 && eof && stream.pending_len.load(Acquire) == 0 {
            if !shut {
                let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
            }
            return Ending::Done;
        }
        if flags & RESET != 0 {
            linger_zero(&stream);
            let code = ErrorCode::from_wire(stream.reset_code.load(Relaxed));
            return Ending::Reset(code.unwrap_or(ErrorCode::StreamReset));
        }
        if flags & PEER_FIN != 0 && !shut && stream.pending_len.load(Acquire) == 0 {
            let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
            shut = true;
        }
        if shut && eof {
            return Ending::Done;
        }
        let credit = stream.credit.load(Acquire);
        let want_read = !eof && credit > 0 && paused.is_none();
        let want_write = stream.pending_len.load(Acquire) > 0;
        tokio::select! {
            biased;
            () = stream.wake.notified() => {}
            () = mux.closed.cancelled() => {
                linger_zero(&stream);
                return Ending::Reset(ErrorCode::StreamReset);
            }
            () = tokio::time::sleep_until(paused.unwrap_or_else(tokio::time::Instant::now)),
                if paused.is_some() =>
            {
                paused = None;
            }
            ready = socket.writable(), if want_write => {
                if let Err(e) = ready {
                    return abort(&stream, mux, &e).await;
                }
            }
            ready = socket.readable(), if want_read => {
                if let Err(e) = ready {
                    return abort(&stream, mux, &e).await;
                }
                let max = usize::try_from(credit).unwrap_or(DATA_MAX).min(DATA_MAX);
                let max = match throttle.allow(max) {
                    Ok(n) => n,
                    Err(wait) => {
                        paused = Some(tokio::time::Instant::now() + wait);
                        continue;
                    }
                };
                let mut chunk = mux.hub.pool.get_small();
                match chunk.read_stream_data(id, max, |b| socket.try_read(b)) {
                    Ok(0) => {
                        eof = true;
                        chunk.push_stream(T_STREAM_CLOSE, id, &0u16.to_be_bytes());
                    }
                    Ok(n) => {
                        throttle.passed(n);
                        stream.credit.fetch_sub(n as i64, AcqRel);
                        stream.bytes_sent.fetch_add(n as u64, Relaxed);
                        if let Some(lease) = stream.lease.get() {
                            lease.row().add_in(n as u64);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        mux.hub.pool.put(chunk);
                        continue;
                    }
                    Err(e) => {
                        mux.hub.pool.put(chunk);
                        return abort(&stream, mux, &e).await;
                    }
                }
                if mux.send(chunk).await.is_err() {
                    linger_zero(&stream);
                    return Ending::Reset(ErrorCode::StreamReset);
                }
            }
        }
    }
}

/// The local socket failed: reset the stream both ways.
async fn abort(stream: &Stream, mux: &Mux, e: &io::Error) -> Ending {
    debug!(mux.log, "stream socket failed"; "stream" => stream.id, "error" => %e);
    mux.send_close(stream.id, ErrorCode::StreamReset.wire())
        .await;
    linger_zero(stream);
    Ending::Reset(ErrorCode::StreamReset)
}

/// Makes the socket's close a reset, so the local peer learns the stream was cut
/// rather than finished.
fn linger_zero(stream: &Stream) {
    if let Some(socket) = stream.socket.get() {
        let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
    }
}

/// Live-stream entries the read task keeps before it sweeps out ended ones.
const SWEEP_MIN: usize = 64;

/// The read task's side of a session's streams: finds each frame's stream.
pub struct Demux {
    mux: Arc<Mux>,
    /// By id; `Weak`, so a stream's socket closes as soon as its task ends.
    streams: HashMap<u32, Entry>,
    registered: mpsc::UnboundedReceiver<Weak<Stream>>,
    sweep_at: usize,
}

struct Entry {
    stream: Weak<Stream>,
    /// Data bytes received, checked against the window granted.
    received: u64,
}

impl Demux {
    /// Handles one stream frame.
    ///
    /// # Errors
    /// The `End` of a session whose peer broke the stream rules.
    pub fn frame(&mut self, frame: Frame<'_>) -> Result<(), End> {
        match frame {
            Frame::StreamOpen { id, service } => self.open(id, service),
            Frame::StreamData { id, data } => {
                let Some((stream, entry)) = self.find(id) else {
                    return Ok(());
                };
                entry.received += data.len() as u64;
                if entry.received > stream.granted.load(Acquire) {
                    return Err(End::error(
                        ErrorCode::Protocol,
                        format!("stream {id} sent beyond its window"),
                    ));
                }
                stream.deliver(data, &self.mux);
                Ok(())
            }
            Frame::StreamClose { id, code } => {
                if let Some((stream, _)) = self.find(id) {
                    stream.peer_closed(code);
                }
                Ok(())
            }
            Frame::StreamWindow { id, credit } => {
                if let Some((stream, _)) = self.find(id) {
                    stream.credit.fetch_add(i64::from(credit), AcqRel);
                    stream.wake.notify_one();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn open(&mut self, id: u32, service: &str) -> Result<(), End> {
        if self.mux.control.len() > CONTROL_MAX {
            return Err(End::error(
                ErrorCode::Protocol,
                "too many stream opens waiting for an answer",
            ));
        }
        if self.find(id).is_some() {
            return Err(End::error(
                ErrorCode::Protocol,
                format!("stream {id} opened twice"),
            ));
        }
        if let Some(stream) = self.mux.accept(id, service) {
            self.insert(id, &stream);
        }
        Ok(())
    }

    fn insert(&mut self, id: u32, stream: &Arc<Stream>) {
        if self.streams.len() >= self.sweep_at {
            self.streams.retain(|_, e| e.stream.strong_count() > 0);
            self.sweep_at = (2 * self.streams.len()).max(SWEEP_MIN);
        }
        self.streams.insert(
            id,
            Entry {
                stream: Arc::downgrade(stream),
                received: 0,
            },
        );
    }

    /// The live stream `id`, taking in streams this end opened since the last look.
    fn find(&mut self, id: u32) -> Option<(Arc<Stream>, &mut Entry)> {
        if !self.streams.contains_key(&id) {
            while let Ok(weak) = self.registered.try_recv() {
                if let Some(s) = weak.upgrade() {
                    self.insert(s.id, &s);
                }
            }
        }
        let Some(stream) = self.streams.get(&id)?.stream.upgrade() else {
            self.streams.remove(&id);
            return None;
        };
        let entry = self.streams.get_mut(&id)?;
        Some((stream, entry))
    }
}

impl Drop for Demux {
    /// The session is over: every stream on it is reset.
    fn drop(&mut self) {
        self.mux.closed.cancel();
        for entry in self.streams.values() {
            if let Some(s) = entry.stream.upgrade() {
                s.reset_here();
            }
        }
    }
}
