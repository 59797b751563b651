//! The load: one task per connection on a tokio runtime, each verifying every echo
//! it gets (sequence and checksum, see [`super::message`]) and counting
//! only what completed inside the measured window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::message::{self, Fault};
use super::report::Tally;
use crate::cli::BenchMode;

/// How long a connect, a write or an awaited echo may take before it is an error.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a connection that failed is made again, so a refused target is not
/// hammered.
const RETRY: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The service address.
    pub target: SocketAddr,
    /// What each connection does.
    pub mode: BenchMode,
    /// Bytes per message.
    pub payload: usize,
    /// Pause between messages; zero = none.
    pub interval: Duration,
}

/// The run's timeline: sends are stamped against `origin`; what completes in
/// `[measure_from, until]` is counted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Time zero of the send stamps.
    pub origin: Instant,
    /// End of the warm-up.
    pub measure_from: Instant,
    /// End of the run: no message is started after it.
    pub until: Instant,
}

impl Window {
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn counts(&self, sent: Instant, done: Instant) -> bool {
        sent >= self.measure_from && done <= self.until
    }
}

/// Shared with the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages echoed intact so far, warm-up included.
    pub messages: AtomicU64,
    /// Failures so far.
    pub errors: AtomicU64,
}

/// Runs connection `conn` until the window ends; returns its counts.
pub async fn connection(conn: u32, plan: Plan, window: Window, progress: Arc<Progress>) -> Tally {
    let mut tally = Tally::default();
    let mut pacer = (!plan.interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(plan.interval);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut seq = 0u64;
    while Instant::now() < window.until {
        let before = tally.error_count();
        match plan.mode {
            BenchMode::Echo => {
                echo(
                    conn, &plan, &window, &mut tally, &progress, &mut pacer, &mut seq,
                )
                .await
            }
            BenchMode::Bulk => bulk(conn, &plan, &window, &mut tally, &progress).await,
            BenchMode::Connect => {
                if let Some(p) = pacer.as_mut() {
                    p.tick().await;
                }
                connect_once(conn, seq, &plan, &window, &mut tally, &progress).await;
                seq += 1;
            }
        }
        let failed = tally.error_count() - before;
        if failed > 0 {
            progress.errors.fetch_add(failed, Relaxed);
            tokio::time::sleep(RETRY).await;
        }
    }
    tally
}

async fn open(plan: &Plan, tally: &mut Tally) -> Option<TcpStream> {
    match timeout(IO_TIMEOUT, TcpStream::connect(plan.target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(_)) => {
            tally.error("connect");
            None
        }
        Err(_) => {
            tally.error("timeout");
            None
        }
    }
}

/// The kind of a failed read or write.
fn io_kind(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "closed"
    } else {
        "io"
    }
}

/// Runs `f` within [`IO_TIMEOUT`]; a failure is counted and ends the connection.
async fn within<T>(
    tally: &mut Tally,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tally.error(io_kind(&e));
            None
        }
        Err(_) => {
            tally.error("timeout");
            None
        }
    }
}

/// Request and response on one connection until the window ends or it fails.
async fn echo(
    conn: u32,
    plan: &Plan,
    window: &Window,
    tally: &mut Tally,
    progress: &Progress,
    pacer: &mut Option<tokio::time::Interval>,
    seq: &mut u64,
) {
    let Some(mut s) = open(plan, tally).await else {
        return;
    };
    // A new connection starts a new sequence: the echo of the old one is gone.
    *seq = 0;
    let mut out = vec![0u8; plan.payload];
    let mut back = vec![0u8; plan.payload];
    while Instant::now() < window.until {
        if let Some(p) = pacer.as_mut() {
            p.tick().await;
        }
        let sent = Instant::now();
        message::fill(&mut out, conn, *seq, window.stamp(sent));
        if within(tally, s.write_all(&out)).await.is_none()
            || within(tally, s.read_exact(&mut back)).await.is_none()
        {
            return;
        }
        let done = Instant::now();
        if let Err(f) = message::check(&back, conn, *seq) {
            return tally.error(f.kind());
        }
        progress.messages.fetch_add(1, Relaxed);
        if window.counts(sent, done) {
            tally.message(plan.payload as u64, done - sent);
        }
        *seq += 1;
    }
}

/// One connection, one message, its echo, closed.
async fn connect_once(
    conn: u32,
    seq: u64,
    plan: &Plan,
    window: &Window,
    tally: &mut Tally,
    progress: &Progress,
) {
    let started = Instant::now();
    let Some(mut s) = open(plan, tally).await else {
        return;
    };
    let mut buf = vec![0u8; plan.payload];
    message::fill(&mut buf, conn, seq, window.stamp(started));
    if within(tally, s.write_all(&buf)).await.is_none()
        || within(tally, s.read_exact(&mut buf)).await.is_none()
    {
        return;
    }
    let done = Instant::now();
    if let Err(f) = message::check(&buf, conn, seq) {
        return tally.error(f.kind());
    }
    progress.messages.fetch_add(1, Relaxed);
    if window.counts(started, done) {
        tally.message(plan.payload as u64, done - started);
    }
}

/// Streams messages one way as fast as the interval lets, reading and verifying the
/// echo beside; the latency of each is its send stamp to its echo.
async fn bulk(conn: u32, plan: &Plan, window: &Window, tally: &mut Tally, progress: &Progress) {
    let Some(s) = open(plan, tally).await else {
        return;
    };
    let (mut rd, mut wr) = s.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (sent, writing, plan, window) = (sent.clone(), writing.clone(), *plan, *window);
        tokio::spawn(async move {
            let mut pacer =
                (!plan.interval.is_zero()).then(|| tokio::time::interval(plan.interval));
            let mut out = vec![0u8; plan.payload];
            let mut seq = 0u64;
            let mut failure = None;
            while Instant::now() < window.until {
                if let Some(p) = pacer.as_mut() {
                    p.tick().await;
                }
                message::fill(&mut out, conn, seq, window.stamp(Instant::now()));
                match timeout(IO_TIMEOUT, wr.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failure = Some(io_kind(&e));
                        break;
                    }
                    Err(_) => {
                        failure = Some("timeout");
                        break;
                    }
                }
                seq += 1;
                sent.store(seq, Relaxed);
            }
            writing.store(false, Relaxed);
            // The echo backend closes its side when ours ends: the reader then sees
            // every message it is owed, and then the end.
            let _ = wr.shutdown().await;
            failure
        })
    };
    let mut back = vec![0u8; plan.payload];
    let mut seq = 0u64;
    let errors_before = tally.error_count();
    loop {
        if !writing.load(Relaxed) && seq >= sent.load(Relaxed) {
            break;
        }
        match timeout(IO_TIMEOUT, rd.read_exact(&mut back)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // The end before every message came back is lost data.
                if writing.load(Relaxed) || seq < sent.load(Relaxed) {
                    tally.error(io_kind(&e));
                }
                break;
            }
            Err(_) => {
                tally.error("timeout");
                break;
            }
        }
        let done = Instant::now();
        match message::check(&back, conn, seq) {
            Ok(stamp) => {
                let sent_at = window.origin + Duration::from_nanos(stamp);
                progress.messages.fetch_add(1, Relaxed);
                if window.counts(sent_at, done) {
                    tally.message(plan.payload as u64, done - sent_at);
                }
            }
            Err(f @ (Fault::Header | Fault::Sequence { .. } | Fault::Corrupt)) => {
                tally.error(f.kind());
                break;
            }
        }
        seq += 1;
    }
    if tally.error_count() > errors_before {
        // The writer could wait out its timeout on a connection nobody reads.
        writer.abort();
    }
    match writer.await {
        Ok(Some(kind)) => tally.error(kind),
        Ok(None) => {}
        Err(e) if e.is_cancelled() => {}
        Err(_) => tally.error("io"),
    }
}
