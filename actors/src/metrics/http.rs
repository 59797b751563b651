//! The Prometheus endpoint: `GET /metrics` (text format 0.0.4) and `GET /healthz`
//! (the `ctl health` check: 200 when healthy or degraded, 503 when unhealthy) over a
//! minimal HTTP/1.1 server, one request per connection.
//!
//! A request must arrive whole within [`REQUEST_TIMEOUT`] and fit in
//! [`MAX_REQUEST`] bytes, and at most [`MAX_CLIENTS`] are served at once; anything
//! else gets its status code (400, 404, 405, 408, 431, 503) and the connection is
//! closed, so a scraper gone wrong costs a task, never the daemon.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{error, info, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Metrics, CONTENT_TYPE};
use crate::daemon::{Daemon, GetHealth};
use crate::drain::DrainToken;

/// Longest request head accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CLIENTS: usize = 32;

/// A response: status line, content type and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The bytes on the wire; `head_only` for HEAD.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            if self.status == 405 { "Allow: GET, HEAD\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Health,
}

/// Parses a request head: the route and whether it is HEAD, or the error response.
///
/// # Errors
/// The response to send instead: 400 for a malformed request line, 405 for another
/// method, 404 for another path.
pub fn parse(head: &[u8]) -> Result<(Route, bool), Response> {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .map(str::trim_end)
        .ok_or_else(|| Response::text(400, "bad request line\n"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "bad request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(400, "HTTP/1.x only\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Response::text(405, "GET or HEAD\n")),
    };
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => Ok((Route::Metrics, head_only)),
        "/healthz" => Ok((Route::Health, head_only)),
        _ => Err(Response::text(404, "try /metrics or /healthz\n")),
    }
}

/// Serves the endpoint; started by the daemon when `monitor.prometheus.enabled`.
pub struct PrometheusServer {
    listener: Option<std::net::TcpListener>,
    metrics: Arc<Metrics>,
    daemon: Addr<Daemon>,
    log: Logger,
    /// The accept loop; aborted when the actor stops (its last address is gone).
    serving: Option<actix_rt::task::JoinHandle<()>>,
    _drain: Option<DrainToken>,
}

impl PrometheusServer {
    /// A server for `listener` (bound, non-blocking).
    pub fn new(
        listener: std::net::TcpListener,
        metrics: Arc<Metrics>,
        daemon: Addr<Daemon>,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        Self {
            listener: Some(listener),
            metrics,
            daemon,
            log,
            serving: None,
            _drain: drain,
        }
    }
}

impl Actor for PrometheusServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let err = crate::error::Error::io("prometheus listener", e);
                error!(self.log, "cannot serve metrics"; "code" => err.code(), "error" => %err);
                ctx.stop();
                return;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            info!(self.log, "serving metrics"; "listen" => %addr);
        }
        let metrics = self.metrics.clone();
        let daemon = self.daemon.clone();
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let serve = async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (metrics, daemon) = (metrics.clone(), daemon.clone());
                actix_rt::spawn(async move {
                    serve_one(stream, &metrics, &daemon).await;
                    drop(permit);
                });
            }
        };
        self.serving = Some(actix_rt::spawn(serve));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(task) = self.serving.take() {
            task.abort();
        }
    }
}

/// Nothing to rebuild: the accept task (not a context future) keeps serving.
impl Supervised for PrometheusServer {}

crate::supervise::panic_on_fault!(PrometheusServer);

async fn serve_one(mut stream: TcpStream, metrics: &Metrics, daemon: &Addr<Daemon>) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream, &mut head)).await;
    let (response, head_only) = match read {
        Err(_) => (Response::text(408, "request timeout\n"), false),
        Ok(Err(status)) => (Response::text(status, "bad request\n"), false),
        Ok(Ok(())) => match parse(&head) {
            Err(r) => (r, false),
            Ok((route, head_only)) => (answer(route, metrics, daemon).await, head_only),
        },
    };
    let _ = stream.write_all(&response.encode(head_only)).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line ending the head; an error status when it is too long
/// or the client went away.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<(), u16> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(());
        }
        if head.len() > MAX_REQUEST {
            return Err(431);
        }
    }
}

async fn answer(route: Route, metrics: &Metrics, daemon: &Addr<Daemon>) -> Response {
    match route {
        Route::Metrics => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: metrics.text(),
        },
        Route::Health => match daemon.send(GetHealth).await {
            Ok(health) => {
                let status = match health["status"].as_str() {
                    Some("unhealthy") => 503,
                    _ => 200,
                };
                Response {
                    status,
                    content_type: "application/json",
                    body: format!("{health}\n"),
                }
            }
            Err(_) => Response::text(503, "daemon not answering\n"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_route_or_get_their_status() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|r| r.status),
            Ok((Route::Metrics, false))
        );
        assert_eq!(
            parse(b"HEAD /healthz?verbose HTTP/1.0\r\n\r\n").map_err(|r| r.status),
            Ok((Route::Health, true))
        );
        let status = |head: &[u8]| parse(head).map(|_| ()).map_err(|r| r.status);
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(status(b"GET /other HTTP/1.1\r\n\r\n"), Err(404));
        assert_eq!(status(b"GET /metrics\r\n\r\n"), Err(400));
        assert_eq!(status(b"GET /metrics SPDY/3\r\n\r\n"), Err(400));
        assert_eq!(status(b"\xff\xfe\r\n\r\n"), Err(400));
    }

    #[test]
    fn a_response_says_its_length_and_head_leaves_the_body_out() {
        let r = Response::text(405, "no\n");
        let text = String::from_utf8(r.encode(false)).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nno\n"));
        let head = String::from_utf8(r.encode(true)).expect("ascii");
        assert!(head.ends_with("\r\n\r\n"));
    }
}
