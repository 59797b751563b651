//! The Connection actor: one per live tunnel session, on either end.
//!
//! The actor carries control only. The bytes move in two plain tokio tasks on the
//! data-path runtime ([`pump`]): the writer drains the session's queue of chunks
//! (filled by the hub) into the TLS stream and sends keepalive pings; the reader
//! decodes frames and delivers packets to the TUN device or, on a server, to another
//! client. They share atomic counters and a cancellation token. When either ends the
//! session is over: the other is cancelled, the route is released, the counters are
//! retired into the totals, and the owner (Listener or Dialer) is told.

pub mod pump;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, warn, Logger};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::drain::DrainToken;
use crate::error::ErrorCode;
use crate::ratelimit::Throttle;
use crate::service::mux::Mux;
use crate::tunnel::hub::{Chunk, Hub, Inbound, PeerTx};
use crate::tunnel::stats::Session;
use crate::tunnel::tls::Tls;

pub use pump::End;

/// A session whose handshakes are done, ready to carry packets.
pub struct Established {
    /// The TLS stream.
    pub stream: Tls,
    /// Bytes read past the session handshake (the first frames, if any).
    pub leftover: Vec<u8>,
    /// What the registry shows.
    pub session: Arc<Session>,
    /// The router's handle on this session.
    pub peer: Arc<PeerTx>,
    /// The session's queue, filled by the hub.
    pub rx: mpsc::Receiver<Chunk>,
    /// Server: the client's inner address (its route, and the only source allowed).
    pub route: Option<IpAddr>,
}

/// Sent to the owner when a session has ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionClosed {
    /// The peer's certificate name.
    pub peer: String,
    /// How it ended.
    pub end: End,
}

/// Ends the session (the daemon is stopping, or an operator asked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession;

/// The control side of one session.
pub struct Connection {
    io: Option<Established>,
    session: Arc<Session>,
    hub: Arc<Hub>,
    runtime: Handle,
    keepalive: Duration,
    cancel: CancellationToken,
    owner: Recipient<SessionClosed>,
    end: Option<End>,
    /// The session's streams (a client's ServiceListeners open theirs on it).
    mux: Option<Arc<Mux>>,
    log: Logger,
    _drain: Option<DrainToken>,
}

impl Connection {
    /// A connection for `io`; started with `Actor::start`.
    pub fn new(
        io: Established,
        hub: Arc<Hub>,
        runtime: Handle,
        keepalive: Duration,
        owner: Recipient<SessionClosed>,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        // The session's own token: the hub cancels it when a newer session of the
        // same identity takes the inner address over.
        let cancel = io.peer.close.clone();
        Self {
            session: io.session.clone(),
            io: Some(io),
            hub,
            runtime,
            keepalive,
            cancel,
            owner,
            end: None,
            mux: None,
            log,
            _drain: drain,
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(io) = self.io.take() else {
            return ctx.stop();
        };
        let session = io.session.clone();
        self.hub.stats.opened(session.clone());
        let peer_name: Arc<str> = session.peer.as_str().into();
        let inbound = Inbound::new(
            self.hub.clone(),
            session.counters.clone(),
            io.route,
            peer_name.clone(),
            self.log.clone(),
        );
        let limits = self.hub.stats.limits.clone();
        let flow = limits.flow(peer_name.clone(), None, 0);
        let _ = io.peer.flow.set(flow.clone());
        let (mux, demux) = Mux::new(
            self.hub.clone(),
            io.peer.tx.clone(),
            peer_name,
            self.log.clone(),
        );
        if !self.hub.streams.is_server() {
            self.hub.streams.set_current(Some(mux.clone()));
        }
        self.mux = Some(mux.clone());
        let run = pump::run(
            pump::Io {
                stream: io.stream,
                leftover: io.leftover,
                rx: io.rx,
                pong: io.peer.tx.clone(),
                inbound,
                counters: session.counters.clone(),
                compression: session.compression,
                mux,
                demux,
                peer: io.peer.clone(),
                throttle: Throttle::new(flow, limits),
            },
            self.hub.clone(),
            self.keepalive,
            self.cancel.clone(),
        );
        let task = self.runtime.spawn(run);
        let peer = io.peer;
        let route = io.route;
        // Spawned, not waited for: `ctx.wait` would hold every message back until the
        // session ends, so a CloseSession (a stop) could never end it.
        ctx.spawn(
            async move {
                task.await.unwrap_or_else(|e| End {
                    code: Some(ErrorCode::Internal),
                    reason: format!("session task failed: {e}"),
                })
            }
            .into_actor(self)
            .map(move |end, act, ctx| {
                if let Some(addr) = route {
                    act.hub.release(addr, &peer);
                }
                act.end = Some(end);
                ctx.stop();
            }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cancel.cancel();
        if let Some(mux) = self.mux.take() {
            self.hub.streams.clear_current(&mux);
        }
        let end = self.end.take().unwrap_or(End {
            code: None,
            reason: "stopped".into(),
        });
        let session = self.session.clone();
        self.hub.stats.closed(&session, end.code);
        let c = &session.counters;
        let fields = slog::o!(
            "peer" => session.peer.clone(), "remote" => session.remote.clone(),
            "inner" => session.inner.to_string(),
            "duration_ms" => u64::try_from(session.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "bytes_in" => c.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            "bytes_out" => c.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
            "reason" => end.reason.clone(),
        );
        match end.code {
            Some(code) => warn!(self.log.new(fields), "session closed"; "code" => code),
            None => info!(self.log.new(fields), "session closed"),
        }
        self.owner.do_send(SessionClosed {
            peer: session.peer.clone(),
            end,
        });
    }
}

impl Handler<CloseSession> for Connection {
    type Result = ();
    fn handle(&mut self, _: CloseSession, _: &mut Context<Self>) {
        self.cancel.cancel();
    }
}
