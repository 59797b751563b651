//! The ControlSocket actor: the Unix socket `sssonector ctl` and scripts talk to.
//!
//! The actor owns the listening socket. Each client is served by a plain task that
//! reads newline-delimited JSON requests (at most [`protocol::MAX_LINE`] bytes each),
//! parses them into typed [`Command`]s and has the [`Router`] carry each one to the
//! actor that owns the answer. Replies go back in order. A bad line gets an error reply
//! with a stable code and the client may go on: a line over the limit is discarded up
//! to its newline and answered `E_LINE_TOO_LONG`. A client silent for
//! `control.idle_timeout` gets `E_TIMEOUT` and is disconnected. Other clients never
//! notice.
//!
//! Binding replaces a stale socket file left by a crashed daemon but refuses one a
//! running daemon still answers on (`E_CONTROL_IN_USE`). The socket gets
//! `control.mode` and is removed when the actor stops. Every command that changes the
//! daemon is written to the audit log with the caller's uid and pid (SO_PEERCRED).

pub mod protocol;
mod unique;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};
use slog::{debug, error, info, warn, Logger};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use self::protocol::{error_reply, ok_reply, Command, ProtocolError, MAX_LINE};
use crate::audit::{AuditActor, Record};
use crate::daemon::{Daemon, EndpointOp, GetHealth, GetStatus, Reload, Stop};
use crate::drain::DrainToken;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::ratelimit::{Change, GetLimits, RateLimiter, SetLimits};
use crate::tunnel::stats::Stats;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not
/// spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the control socket at `path` with permission bits `mode`.
///
/// # Errors
/// `E_CONTROL_IN_USE` when a running daemon answers on `path`; `E_IO` when the path is
/// not a socket or binding fails.
pub fn bind(path: &Path, mode: u32) -> Result<StdUnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            let e = std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            );
            return Err(Error::io(path, e));
        }
        if StdUnixStream::connect(path).is_ok() {
            return Err(Error::ControlInUse(path.to_path_buf()));
        }
        // Nobody answers: a stale socket from a daemon that did not stop cleanly.
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    let listener = StdUnixListener::bind(path).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .and_then(|()| listener.set_nonblocking(true))
        .map_err(|e| Error::io(path, e))?;
    Ok(listener)
}

/// Carries each command to the actor that owns its answer.
#[derive(Clone)]
pub struct Router {
    /// The root actor: status, health, log level, reload, stop.
    pub daemon: Addr<Daemon>,
    /// Rate limits (`limits`, `limits.set`).
    pub limiter: Option<Addr<RateLimiter>>,
    /// Where changes are recorded.
    pub audit: Option<Addr<AuditActor>>,
    /// The metrics registry (`metrics`, and control commands are counted in it).
    pub metrics: Arc<Metrics>,
    /// The tunnel's counters (`connections`).
    pub stats: Arc<Stats>,
    /// The certificates in use (`certs`).
    pub certs: Arc<crate::certs::Board>,
}

impl Router {
    /// Carries out `command` and returns the reply's data.
    ///
    /// `stop` answers here and is sent to the daemon by the caller once the reply is
    /// written, so the client hears the answer before the socket goes away.
    ///
    /// # Errors
    /// The owning actor's error, or `E_NOT_AVAILABLE` for a subsystem not built yet.
    pub async fn execute(&self, command: Command) -> Result<Value> {
        let mailbox = |e: MailboxError| Error::Internal(format!("daemon mailbox: {e}"));
        match command {
            Command::Help => Ok(protocol::help()),
            #[cfg(debug_assertions)]
            Command::Fault(f) => self.daemon.send(f).await.map_err(mailbox)?,
            Command::Version => Ok(json!({ "version": env!("CARGO_PKG_VERSION") })),
            Command::Status => self.daemon.send(GetStatus).await.map_err(mailbox),
            Command::Health => self.daemon.send(GetHealth).await.map_err(mailbox),
            Command::LogLevel(set) => {
                let level = self.daemon.send(set).await.map_err(mailbox)?;
                Ok(json!({ "level": level.as_str() }))
            }
            Command::Reload => {
                let changes = self.daemon.send(Reload).await.map_err(mailbox)??;
                let restart: Vec<&str> = changes
                    .iter()
                    .filter(|c| c.needs_restart())
                    .map(|c| c.key.as_str())
                    .collect();
                Ok(json!({ "changes": changes, "restart_needed": restart }))
            }
            Command::Stop => Ok(json!({ "stopping": true })),
            Command::Metrics => Ok(self.metrics.to_json()),
            Command::Connections => Ok(connections(&self.stats)),
            Command::Endpoints => Ok(json!({ "endpoints": self.stats.endpoints.snapshot() })),
            Command::Breakers => Ok(breakers(&self.stats)),
            Command::Certs => Ok(self.certs.to_json(unix_now())),
            Command::EndpointAdd(a) => self.endpoint(EndpointOp::Add(a)).await,
            Command::EndpointRemove(r) => self.endpoint(EndpointOp::Remove(r)).await,
            Command::EndpointDrain(r) => self.endpoint(EndpointOp::Drain(r)).await,
            Command::BreakerReset(b) => self.endpoint(EndpointOp::ResetBreaker(b)).await,
            Command::Limits => {
                let limiter = self.limiter()?;
                limiter.send(GetLimits).await.map_err(limiter_mailbox)
            }
            Command::LimitsSet(set) => {
                let change = Change {
                    rate: set.rate,
                    burst: set.burst,
                    global_rate: set.global_rate,
                    connection: set.connection,
                };
                let limiter = self.limiter()?;
                limiter
                    .send(SetLimits(change))
                    .await
                    .map_err(limiter_mailbox)?
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn limiter_mailbox(e: MailboxError) -> Error {
    Error::Internal(format!("rate limiter mailbox: {e}"))
}

impl Router {
    fn limiter(&self) -> Result<&Addr<RateLimiter>> {
        self.limiter.as_ref().ok_or(Error::NotAvailable(
            "limits before the rate limiter started",
        ))
    }

    async fn endpoint(&self, op: EndpointOp) -> Result<Value> {
        self.daemon
            .send(op)
            .await
            .map_err(|e| Error::Internal(format!("daemon mailbox: {e}")))?
    }
}

/// The `breakers` reply: each endpoint's breaker and what it has done.
fn breakers(stats: &Stats) -> Value {
    let rows: Vec<Value> = stats
        .endpoints
        .snapshot()
        .into_iter()
        .map(|e| {
            json!({
                "service": e.service, "address": e.address, "state": e.breaker,
                "opened": e.breaker_opened, "rejections": e.breaker_rejections,
                "connect_failures": e.connect_failures,
            })
        })
        .collect();
    json!({ "breakers": rows })
}

/// Live streams `connections` lists at most (the counts cover all of them).
const STREAMS_LISTED: usize = 1000;

/// The `connections` reply: the live tunnel sessions and streams, and their counts.
fn connections(stats: &Stats) -> Value {
    let s = stats.snapshot();
    let peers: Vec<Value> = s
        .peers
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "peer": p.peer, "remote": p.remote, "inner": p.inner.to_string(),
                "duration_seconds": p.seconds,
                "compression": p.compression.map_or("none", |c| c.as_str()),
                "bytes_in": p.counters.bytes_in, "bytes_out": p.counters.bytes_out,
                "packets_in": p.counters.packets_in, "packets_out": p.counters.packets_out,
            })
        })
        .collect();
    json!({
        "active": s.current, "peak": s.peak, "total": s.total,
        "closed": s.durations.count,
        "mean_duration_seconds": s.durations.sum_seconds / (s.durations.count.max(1) as f64),
        "tunnel": peers,
        "streams": stats.streams.snapshot().to_json(),
        "stream_list": stats.streams.live(STREAMS_LISTED),
    })
}

/// Owns the listening socket and the client tasks.
pub struct ControlSocketActor {
    path: PathBuf,
    mode: u32,
    idle: Duration,
    max_clients: usize,
    listener: Option<StdUnixListener>,
    router: Router,
    log: Logger,
    clients: Option<actix_rt::task::JoinHandle<()>>,
    _drain: Option<DrainToken>,
}

impl ControlSocketActor {
    /// An actor serving `listener` (from [`bind`]) at `path`.
    pub fn new(
        path: PathBuf,
        mode: u32,
        idle: Duration,
        listener: StdUnixListener,
        router: Router,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        Self {
            path,
            mode,
            idle,
            max_clients: usize::try_from(sssonector_config::defaults::CONTROL_MAX_CONNECTIONS)
                .unwrap_or(usize::MAX),
            listener: Some(listener),
            router,
            log,
            clients: None,
            _drain: drain,
        }
    }

    /// Serves at most `max` clients at once (`control.max_connections`).
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self
    }

    fn serve(&mut self) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let err = Error::io(&self.path, e);
                error!(self.log, "control socket unusable"; "code" => err.code(), "error" => %err);
                return;
            }
        };
        info!(self.log, "control socket listening"; "socket" => %self.path.display(), "mode" => format!("{:04o}", self.mode));
        let (router, log, idle) = (self.router.clone(), self.log.clone(), self.idle);
        let max = self.max_clients;
        self.clients = Some(actix_rt::spawn(accept_loop(
            listener, router, idle, max, log,
        )));
    }
}

impl Actor for ControlSocketActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.serve();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Aborting the accept task drops its JoinSet, which aborts every client task.
        if let Some(task) = self.clients.take() {
            task.abort();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            let err = Error::io(&self.path, e);
            warn!(self.log, "control socket not removed"; "code" => err.code(), "error" => %err);
        }
    }
}

impl Supervised for ControlSocketActor {
    /// The accept task is not a context future: while it runs, it and its clients
    /// go on untouched. Only when it has ended is the socket bound again.
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if self.clients.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.clients = None;
        match bind(&self.path, self.mode) {
            Ok(l) => self.listener = Some(l),
            Err(err) => {
                error!(self.log, "control socket rebind failed"; "code" => err.code(), "error" => %err)
            }
        }
    }
}

crate::supervise::panic_on_fault!(ControlSocketActor);

async fn accept_loop(
    listener: UnixListener,
    router: Router,
    idle: Duration,
    max: usize,
    log: Logger,
) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if clients.len() >= max => refuse(&stream, max, &router, &log),
                Ok((stream, _)) => {
                    clients.spawn(serve_client(stream, router.clone(), idle, log.clone()));
                }
                Err(e) => {
                    let err = Error::io("control accept", e);
                    warn!(log, "control accept failed"; "code" => err.code(), "error" => %err);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
}

/// Answers a client beyond the cap with one `E_CONN_LIMIT` line and drops it. The
/// write does not wait: a new socket's send buffer is empty, and a refusal must cost
/// the accept loop nothing, however many arrive.
fn refuse(stream: &UnixStream, max: usize, router: &Router, log: &Logger) {
    let code = ErrorCode::ConnLimit;
    let error = json!({
        "code": code,
        "message": format!("control.max_connections ({max}) clients already connected"),
    });
    let reply = json!({ "id": Value::Null, "ok": false, "error": error });
    let mut bytes = serde_json::to_vec(&reply).expect("a JSON value serializes");
    bytes.push(b'\n');
    let _ = stream.try_write(&bytes);
    router
        .metrics
        .control
        .with_label_values(&["connect", code.as_str()])
        .inc();
    debug!(log, "control client refused"; "code" => code, "max_connections" => max);
}

/// How reading one request line ended.
enum Line {
    /// A line is in the buffer.
    Complete,
    /// The client closed the connection.
    Closed,
    /// The line exceeded [`MAX_LINE`]; the rest of it was discarded.
    TooLong,
}

type Reader = BufReader<tokio::net::unix::OwnedReadHalf>;

/// Reads one line of at most [`MAX_LINE`] bytes into `buf`. A longer line is read to
/// its end and dropped without being held in memory.
async fn read_line(reader: &mut Reader, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE).expect("64 KiB fits u64");
    let n = reader.take(limit).read_until(b'\n', buf).await?;
    Ok(match n {
        0 => Line::Closed,
        _ if buf.last() == Some(&b'\n') => Line::Complete,
        _ if n >= MAX_LINE => {
            buf.clear();
            skip_line(reader).await?;
            Line::TooLong
        }
        // The client closed after a last line without a newline.
        _ => Line::Complete,
    })
}

/// Discards input up to and including the next newline (or the end of input).
async fn skip_line(reader: &mut Reader) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

async fn serve_client(stream: UnixStream, router: Router, idle: Duration, log: Logger) {
    let peer = stream.peer_cred().ok();
    let (uid, pid) = (peer.map(|c| c.uid()), peer.and_then(|c| c.pid()));
    let log = log.new(slog::o!("peer_uid" => uid, "peer_pid" => pid));
    debug!(log, "control client connected");
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = Vec::with_capacity(1024);
    loop {
        let (reply, last, stop) =
            match tokio::time::timeout(idle, read_line(&mut reader, &mut line)).await {
                Err(_) => (
                    error_reply(&Value::Null, &ProtocolError::Timeout(idle).into()),
                    true,
                    false,
                ),
                Ok(Err(_) | Ok(Line::Closed)) => break,
                Ok(Ok(Line::TooLong)) => (
                    error_reply(&Value::Null, &ProtocolError::LineTooLong.into()),
                    false,
                    false,
                ),
                Ok(Ok(Line::Complete)) => {
                    let (reply, stop) = answer(&line, &router, uid, pid, &log).await;
                    (reply, false, stop)
                }
            };
        let mut bytes = serde_json::to_vec(&reply).expect("a JSON value serializes");
        bytes.push(b'\n');
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        if stop {
            router.daemon.do_send(Stop { reason: "ctl" });
        }
        if last {
            debug!(log, "control client disconnected"; "code" => reply["error"]["code"].as_str());
            break;
        }
    }
}

/// Answers one request line; the flag says whether the daemon is to stop once the
/// reply is out.
async fn answer(
    line: &[u8],
    router: &Router,
    uid: Option<u32>,
    pid: Option<i32>,
    log: &Logger,
) -> (Value, bool) {
    let (id, parsed) = protocol::parse(line);
    let command = match parsed {
        Ok(c) => c,
        Err(e) => {
            let err = Error::from(e);
            debug!(log, "control request refused"; "code" => err.code(), "error" => %err);
            let labels = ["invalid", err.code().as_str()];
            router.metrics.control.with_label_values(&labels).inc();
            return (error_reply(&id, &err), false);
        }
    };
    let name = command.name();
    let audited = command.changes_state();
    let stop = command == Command::Stop;
    let result = router.execute(command).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    router
        .metrics
        .control
        .with_label_values(&[name, outcome])
        .inc();
    if audited {
        if let Some(audit) = &router.audit {
            let request: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
            audit.do_send(Record {
                event: "control_command",
                fields: json!({ "command": name, "request": request, "uid": uid, "pid": pid, "result": outcome }),
            });
        }
    }
    match result {
        Ok(data) => {
            debug!(log, "control request served"; "command" => name);
            (ok_reply(&id, data), stop)
        }
        Err(err) => {
            debug!(log, "control request failed"; "command" => name, "code" => err.code(), "error" => %err);
            (error_reply(&id, &err), false)
        }
    }
}
