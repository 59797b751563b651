//! The two I/O tasks of a session: TLS writer (queue → TLS, keepalive pings) and TLS
//! reader (TLS → frames → TUN or another session). Both run on the data-path runtime
//! in their own tasks, so the two directions use two cores; they share only atomics
//! and a cancellation token.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorCode;
use crate::ratelimit::Throttle;
use crate::service::mux::{Demux, Mux};
use crate::tunnel::codec::{self, Frame, HEADER, MAX_PAYLOAD};
use crate::tunnel::compress::{Algorithm, Compressor, Decompressor};
use crate::tunnel::hub::{Chunk, Hub, Inbound, PeerTx};
use crate::tunnel::record::{RecordReader, RecordWriter};
use crate::tunnel::stats::Counters;
use crate::tunnel::tls::Tls;

/// Keepalive intervals without a byte from the peer before it is declared dead.
pub const DEAD_AFTER: u32 = 3;
/// How long a closing writer waits to say Close to the peer.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Why, as a stable code; `None` when this daemon ended it.
    pub code: Option<ErrorCode>,
    /// Said for people.
    pub reason: String,
}

impl End {
    fn local() -> Self {
        Self {
            code: None,
            reason: "closed by this daemon".into(),
        }
    }

    pub(crate) fn error(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }

    fn io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => {
                End::error(ErrorCode::PeerClosed, format!("connection lost: {e}"))
            }
            _ => End::error(ErrorCode::Io, e.to_string()),
        }
    }
}

/// What a session's tasks own.
pub struct Io {
    /// The TLS stream, split between the two tasks.
    pub stream: Tls,
    /// Bytes already read past the handshake.
    pub leftover: Vec<u8>,
    /// The session's queue.
    pub rx: mpsc::Receiver<Chunk>,
    /// Where the reader puts pongs (the same queue).
    pub pong: mpsc::Sender<Chunk>,
    /// The path to the TUN device.
    pub inbound: Inbound,
    /// The session's counters (the wire bytes are counted here).
    pub counters: Arc<Counters>,
    /// The compression negotiated, if any.
    pub compression: Option<Algorithm>,
    /// The session's streams, as the write task sees them.
    pub mux: Arc<Mux>,
    /// The session's streams, as the read task sees them.
    pub demux: Demux,
    /// The router's handle on the session: its queue's rate-limited bound.
    pub peer: Arc<PeerTx>,
    /// The session's packets' rate limit.
    pub throttle: Throttle,
}

/// Runs the session until either task ends or `cancel` fires; returns how it ended.
pub async fn run(io: Io, hub: Arc<Hub>, keepalive: Duration, cancel: CancellationToken) -> End {
    let (compress, decompress) = match io.compression {
        None => (None, None),
        Some(a) => match (Compressor::new(a), Decompressor::new(a)) {
            (Ok(c), Ok(d)) => (Some(c), Some(d)),
            (Err(e), _) | (_, Err(e)) => return End::error(ErrorCode::Internal, e.to_string()),
        },
    };
    hub.busy.watch(io.stream.tcp());
    let (r, w) = io.stream.into_split();
    let epoch = Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let out = Out {
        w,
        compress,
        counters: io.counters.clone(),
        hub: hub.clone(),
        peer: io.peer,
        throttle: io.throttle,
        held: None,
        batch: Vec::with_capacity(BATCH),
        batch_bytes: 0,
    };
    let mut writer = tokio::spawn(write_pump(
        out,
        io.rx,
        io.mux,
        last_rx.clone(),
        epoch,
        keepalive,
        cancel.clone(),
    ));
    let mut reader = tokio::spawn(read_pump(
        r,
        io.leftover,
        io.inbound,
        io.demux,
        decompress,
        io.counters,
        io.pong,
        hub,
        last_rx,
        epoch,
        cancel.clone(),
    ));
    let joined = |r: Result<End, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| End::error(ErrorCode::Internal, format!("session task: {e}")))
    };
    tokio::select! {
        e = &mut writer => { cancel.cancel(); let _ = reader.await; joined(e) }
        e = &mut reader => { cancel.cancel(); let _ = writer.await; joined(e) }
    }
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The write task's sending side: the TLS half, compression, and the session's
/// rate limit with the chunk it holds back, if any.
struct Out {
    w: RecordWriter,
    compress: Option<Compressor>,
    counters: Arc<Counters>,
    hub: Arc<Hub>,
    peer: Arc<PeerTx>,
    throttle: Throttle,
    /// A packet chunk waiting for the bucket, and when it may go.
    held: Option<(Chunk, tokio::time::Instant)>,
    /// Chunks gathered for one vectored write; at most [`BATCH`].
    batch: Vec<Chunk>,
    /// Their frames' bytes.
    batch_bytes: usize,
}

/// Most chunks one vectored write carries.
const BATCH: usize = 32;
/// A batch this large goes out at once: a full stream chunk is not held back, so
/// bulk transfers write as they read.
const BATCH_BYTES: usize = 32 * 1024;

impl Out {
    /// Writes `first` and whatever else is queued, then flushes once; stops early to
    /// hold a packet chunk the rate limit does not let go yet.
    ///
    /// Uncompressed chunks go out in batches of up to [`BATCH`] chunks or
    /// [`BATCH_BYTES`]: one vectored write hands a batch to TLS, which packs it into
    /// as few records as fit and sends them with one system call.
    async fn drain(&mut self, first: Chunk, rx: &mut mpsc::Receiver<Chunk>) -> Result<(), End> {
        let mut next = Some(first);
        while let Some(c) = next.take() {
            let bytes = c.packet_bytes();
            if bytes > 0 {
                self.peer.bound.store(self.throttle.queue_bound(), Relaxed);
                if let Some(wait) = self.throttle.hold(bytes) {
                    self.held = Some((c, tokio::time::Instant::now() + wait));
                    break;
                }
                self.throttle.charge(bytes);
            }
            if let Some(z) = &mut self.compress {
                let frames = z.frames(c.frames());
                self.counters
                    .wire_bytes_out
                    .fetch_add(frames.len() as u64, Relaxed);
                let written = self.w.write_all(frames).await;
                self.hub.pool.put(c);
                written.map_err(|e| End::io(&e))?;
            } else {
                self.batch_bytes += c.frames().len();
                self.batch.push(c);
                if self.batch.len() == BATCH || self.batch_bytes >= BATCH_BYTES {
                    self.write_batch().await?;
                }
            }
            next = rx.try_recv().ok().map(|c| self.dequeued(c));
        }
        self.write_batch().await?;
        self.w.flush().await.map_err(|e| End::io(&e))
    }

    /// Writes the batched chunks with vectored writes and returns them to the pool.
    async fn write_batch(&mut self) -> Result<(), End> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); BATCH];
        for (slice, c) in slices.iter_mut().zip(&self.batch) {
            *slice = IoSlice::new(c.frames());
        }
        self.counters
            .wire_bytes_out
            .fetch_add(self.batch_bytes as u64, Relaxed);
        let written = write_all_vectored(&mut self.w, &mut slices[..self.batch.len()]).await;
        self.batch_bytes = 0;
        for c in self.batch.drain(..) {
            self.hub.pool.put(c);
        }
        written.map_err(|e| End::io(&e))
    }

    /// Takes a chunk off the session queue's packet count.
    fn dequeued(&self, c: Chunk) -> Chunk {
        self.peer.queued.fetch_sub(c.packet_bytes(), Relaxed);
        c
    }

    /// Writes and flushes a control frame.
    async fn control(&mut self, frame: &[u8]) -> Result<(), End> {
        self.counters
            .wire_bytes_out
            .fetch_add(frame.len() as u64, Relaxed);
        let w = &mut self.w;
        async {
            w.write_all(frame).await?;
            w.flush().await
        }
        .await
        .map_err(|e| End::io(&e))
    }
}

/// Writes every byte of `bufs`, taking up where each partial vectored write stopped.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut bufs, n),
        }
    }
    Ok(())
}

async fn write_pump(
    mut out: Out,
    mut rx: mpsc::Receiver<Chunk>,
    mux: Arc<Mux>,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
    keepalive: Duration,
    cancel: CancellationToken,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_ms = u64::try_from((keepalive * DEAD_AFTER).as_millis()).unwrap_or(u64::MAX);
    let mut nonce = 0u64;
    let mut control = Vec::with_capacity(64);
    loop {
        let release = out.held.as_ref().map(|(_, at)| *at);
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // What is queued goes out before the Close: a stream's last frame
                // (its FIN) must not be lost to a stop that closes the session as
                // soon as the stream has ended.
                let close = async {
                    if let Ok(c) = rx.try_recv() {
                        let c = out.dequeued(c);
                        let _ = out.drain(c, &mut rx).await;
                    }
                    control.clear();
                    let _ = codec::encode(&Frame::Close { code: 0, reason: "closing" }, &mut control);
                    out.w.write_all(&control).await?;
                    out.w.shutdown().await
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
                return End::local();
            }
            () = tokio::time::sleep_until(release.unwrap_or_else(tokio::time::Instant::now)),
                if release.is_some() =>
            {
                let (chunk, _) = out.held.take().expect("held while release is set");
                out.drain(chunk, &mut rx).await
            }
            chunk = rx.recv(), if release.is_none() => {
                let Some(chunk) = chunk else { return End::local() };
                let chunk = out.dequeued(chunk);
                if chunk.frames().len() < BATCH_BYTES && rx.is_empty() {
                    // Small, and alone so far: let the other ready tasks (streams
                    // with their answers) queue theirs first, so that one record and
                    // one segment carry them all.
                    tokio::task::yield_now().await;
                }
                out.drain(chunk, &mut rx).await
            }
            () = mux.wake.notified() => {
                control.clear();
                mux.control(&mut control);
                out.control(&control).await
            }
            _ = tick.tick() => {
                if millis(epoch).saturating_sub(last_rx.load(Relaxed)) > dead_ms {
                    return End::error(
                        ErrorCode::PeerTimeout,
                        format!("nothing from the peer for {:?}", keepalive * DEAD_AFTER),
                    );
                }
                nonce += 1;
                control.clear();
                let _ = codec::encode(&Frame::Ping(nonce), &mut control);
                out.control(&control).await
            }
        };
        if let Err(end) = sent {
            return end;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_pump(
    mut r: RecordReader,
    leftover: Vec<u8>,
    mut inbound: Inbound,
    mut demux: Demux,
    mut decompress: Option<Decompressor>,
    counters: Arc<Counters>,
    pong: mpsc::Sender<Chunk>,
    hub: Arc<Hub>,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
    cancel: CancellationToken,
) -> End {
    // Two frames' worth: a whole frame always fits after compaction.
    let mut buf = vec![0u8; 2 * (HEADER + MAX_PAYLOAD)].into_boxed_slice();
    let (mut start, mut end) = (0, leftover.len());
    buf[..end].copy_from_slice(&leftover);
    loop {
        loop {
            let (frame, used) = match codec::decode(&buf[start..end]) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => return End::error(ErrorCode::Protocol, format!("bad frame: {e}")),
            };
            let delivered = match frame {
                Frame::Compressed { kind, payload } => {
                    let Some(d) = &mut decompress else {
                        return End::error(
                            ErrorCode::Protocol,
                            "compressed frame, none negotiated",
                        );
                    };
                    let plain = match d.payload(payload) {
                        Ok(plain) => plain,
                        Err(e) => return End::error(ErrorCode::Protocol, e.to_string()),
                    };
                    match codec::decode_payload(kind, plain) {
                        Ok(frame) => {
                            data(&mut inbound, &mut demux, hub.offload, frame, plain).await
                        }
                        Err(e) => {
                            return End::error(ErrorCode::Protocol, format!("bad frame: {e}"))
                        }
                    }
                }
                Frame::Packet(_) | Frame::Packets(_) | Frame::Gso { .. } => {
                    let payload = &buf[start + HEADER..start + used];
                    data(&mut inbound, &mut demux, hub.offload, frame, payload).await
                }
                Frame::StreamOpen { .. }
                | Frame::StreamData { .. }
                | Frame::StreamClose { .. }
                | Frame::StreamWindow { .. } => demux.frame(frame),
                Frame::Ping(n) => {
                    let mut c = hub.pool.get();
                    c.push_pong(n);
                    if let Err(e) = pong.try_send(c) {
                        let (mpsc::error::TrySendError::Full(c)
                        | mpsc::error::TrySendError::Closed(c)) = e;
                        hub.pool.put(c);
                    }
                    Ok(())
                }
                Frame::Pong(_) => Ok(()),
                Frame::Close { reason, .. } => {
                    return End::error(ErrorCode::PeerClosed, format!("peer closed: {reason}"))
                }
                other => Err(unexpected(&other)),
            };
            if let Err(end) = delivered {
                return end;
            }
            start += used;
        }
        inbound.flush();
        if start == end {
            (start, end) = (0, 0);
        } else if buf.len() - end < HEADER + MAX_PAYLOAD {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let n = tokio::select! {
            biased;
            () = cancel.cancelled() => return End::local(),
            n = r.read(&mut buf[end..]) => n,
        };
        match n {
            Ok(0) => return End::error(ErrorCode::PeerClosed, "connection closed by the peer"),
            Ok(n) => {
                end += n;
                counters.wire_bytes_in.fetch_add(n as u64, Relaxed);
                last_rx.store(millis(epoch), Relaxed);
            }
            Err(e) => return End::io(&e),
        }
    }
}

/// Delivers the packets of a data frame whose payload is `payload`, or a stream's
/// bytes.
async fn data(
    inbound: &mut Inbound,
    demux: &mut Demux,
    offload: bool,
    frame: Frame<'_>,
    payload: &[u8],
) -> Result<(), End> {
    match frame {
        Frame::Packet(p) => inbound.deliver(None, p).await,
        Frame::Packets(batch) => {
            for p in batch {
                inbound.deliver(None, p).await;
            }
        }
        Frame::Gso { hdr, .. } if offload => inbound.deliver(Some(hdr), payload).await,
        Frame::Gso { .. } => return Err(End::error(ErrorCode::Protocol, "gso frame without gso")),
        Frame::StreamData { .. } => return demux.frame(frame),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

fn unexpected(frame: &Frame<'_>) -> End {
    End::error(
        ErrorCode::Protocol,
        format!("unexpected frame {}", frame_name(frame)),
    )
}

fn frame_name(frame: &Frame<'_>) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Accept(_) => "accept",
        Frame::Reject(_) => "reject",
        Frame::StreamOpen { .. } => "stream open",
        Frame::StreamData { .. } => "stream data",
        Frame::StreamClose { .. } => "stream close",
        Frame::StreamWindow { .. } => "stream window",
        _ => "data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Takes at most `step` bytes per call, from the first buffer or across several,
    /// and now and then answers "not now" first.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.got.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_vectored_writes_deliver_every_byte_in_order() {
        let parts: Vec<Vec<u8>> = (0..7u8)
            .map(|i| vec![i; 1 + usize::from(i) * 5])
            .chain([Vec::new(), vec![9; 3]])
            .collect();
        let want: Vec<u8> = parts.concat();
        for step in [1, 2, 5, 7, 16, 1000] {
            let mut w = Trickle {
                got: Vec::new(),
                step,
                calls: 0,
            };
            let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            write_all_vectored(&mut w, &mut slices)
                .await
                .expect("written");
            assert_eq!(w.got, want, "step {step}");
        }
    }

    #[tokio::test]
    async fn a_writer_that_takes_nothing_is_an_error() {
        let mut w = Trickle {
            got: Vec::new(),
            step: 0,
            calls: 0,
        };
        let data = [1u8; 4];
        let err = write_all_vectored(&mut w, &mut [IoSlice::new(&data)])
            .await
            .expect_err("write zero");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
