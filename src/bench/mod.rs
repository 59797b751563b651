//! `sssonector bench`: drives verified load through a service of a running
//! SSSonector, or through a server and client pair it starts itself, and reports
//! throughput, latency percentiles, errors and the daemons' CPU and memory.
//!
//! The pieces: [`message`] (what is sent and how an echo is verified), [`load`] (one
//! task per connection), [`daemons`] (watching pids in /proc; the local pair),
//! [`report`] (the arithmetic, pure) and [`svg`] (the latency plot). The far end of
//! every service must echo: `bench --echo-backend` is that backend.

mod daemons;
mod load;
mod message;
mod report;
mod svg;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sssonector_actors::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::cli::{BenchArgs, BenchMode};
use daemons::{LocalPair, Watch};
use load::{Plan, Progress, Window};
use report::{Report, Setup, Tally};

/// How often the progress bar and the daemons' resident sets are refreshed.
const TICK: Duration = Duration::from_millis(200);

/// Runs `bench` as its arguments say.
///
/// # Errors
/// `E_BENCH_FAILED` when any message was lost or corrupted or a connection failed
/// (the report is printed first); `E_IO`, `E_UNREACHABLE` or `E_NOT_AVAILABLE` when
/// the run could not be set up.
pub fn bench(args: &BenchArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sssonector-bench")
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    if let Some(addr) = args.echo_backend {
        return runtime.block_on(serve_echo_until_signal(addr));
    }
    // Held to the end of the run: dropping it stops the daemons.
    let mut pair = None;
    let target = if args.local || args.config.is_some() {
        let backend = runtime.block_on(echo_backend("127.0.0.1:0".parse().expect("an address")))?;
        let overlay = match &args.config {
            Some(path) => daemons::overlay(path)?,
            None => Value::Null,
        };
        let started = pair.insert(LocalPair::start(backend, &overlay)?);
        started.service
    } else {
        args.target
            .ok_or_else(|| Error::BadArgs("--target, --local or --config is needed".into()))?
    };
    let mut pids = args.pid.clone();
    for socket in &args.control {
        pids.push(daemons::pid_of(socket)?);
    }
    pids.extend(pair.iter().flat_map(|p| p.pids.iter().copied()));

    let setup = Setup {
        mode: match args.mode {
            BenchMode::Echo => "echo",
            BenchMode::Bulk => "bulk",
            BenchMode::Connect => "connect",
        },
        target: target.to_string(),
        connections: args.connections,
        payload: args.payload,
        interval: args.interval,
        warmup: args.warmup,
    };
    let plan = Plan {
        target,
        mode: args.mode,
        payload: usize::try_from(args.payload).expect("a u32 fits usize"),
        interval: args.interval,
    };
    let report = runtime.block_on(measure(setup, plan, args.duration, &pids));
    drop(pair);

    if args.json {
        crate::print_out(&format!("{}\n", report.to_json()));
    } else {
        crate::print_out(&report.to_text());
    }
    if let Some(path) = &args.output {
        svg::latency(path, &report)?;
    }
    if report.consistent() {
        Ok(())
    } else {
        let t = &report.tally;
        Err(Error::Bench(format!(
            "{} errors, {} messages, {} bytes counted",
            t.error_count(),
            t.messages,
            t.bytes
        )))
    }
}

/// Runs the load: every connection from the start, counted after the warm-up; the
/// daemons are watched over the counted window only.
async fn measure(setup: Setup, plan: Plan, duration: Duration, pids: &[u32]) -> Report {
    let origin = Instant::now();
    let window = Window {
        origin,
        measure_from: origin + setup.warmup,
        until: origin + setup.warmup + duration,
    };
    let progress = Arc::new(Progress::default());
    let workers: Vec<_> = (0..setup.connections)
        .map(|conn| tokio::spawn(load::connection(conn, plan, window, progress.clone())))
        .collect();

    let bar = progress_bar(setup.warmup + duration);
    let mut watches: Option<Vec<Watch>> = None;
    let mut last = (origin, 0u64);
    loop {
        let now = Instant::now();
        if watches.is_none() && now >= window.measure_from {
            watches = Some(pids.iter().map(|&p| Watch::new(p)).collect());
        }
        watches.iter_mut().flatten().for_each(Watch::sample);
        if now >= window.until {
            break;
        }
        let messages = progress.messages.load(Relaxed);
        let rate = (messages - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
        last = (now, messages);
        let phase = if watches.is_none() {
            "warm-up"
        } else {
            "measuring"
        };
        bar.set_position(u64::try_from((now - origin).as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{phase}: {rate:.0} msg/s, {} errors",
            progress.errors.load(Relaxed)
        ));
        // Wake on time for the window's edges, so the daemons are watched over it
        // exactly.
        let mut wake = (now + TICK).min(window.until);
        if watches.is_none() {
            wake = wake.min(window.measure_from);
        }
        tokio::time::sleep_until(wake).await;
    }
    // The window is over: what the daemons used is what the load made them use.
    let daemons = watches.into_iter().flatten().map(Watch::finish).collect();
    bar.finish_and_clear();

    let mut tally = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(t) => tally.merge(&t),
            Err(_) => tally.error("internal"),
        }
    }
    Report {
        setup,
        elapsed: duration,
        tally,
        daemons,
    }
}

/// A bar over the whole run, in milliseconds; drawn on standard error only when
/// it is a terminal.
fn progress_bar(total: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {percent:>3}% {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Binds an echo backend on `addr` and serves it in the background; returns the
/// address it got (`addr` may ask for port 0).
async fn echo_backend(addr: SocketAddr) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("echo backend {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("echo backend {addr}"), e))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(echo(s));
                }
                // Out of descriptors or a connection gone before accept: go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok(bound)
}

/// Sends back everything a connection sends, then closes its side once the peer
/// closed its own.
async fn echo(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.split();
    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// `bench --echo-backend`: serves until SIGINT or SIGTERM.
async fn serve_echo_until_signal(addr: SocketAddr) -> Result<(), Error> {
    let bound = echo_backend(addr).await?;
    crate::print_out(&format!("echo backend listening on {bound}\n"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("SIGTERM handler", e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
