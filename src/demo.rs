//! `sssonector demo`: SSSonector's main job with an embedded default, no files needed.
//!
//! As root it runs the real tunnel between two namespaces ([`crate::demo_tunnel`]).
//! Otherwise, or with `--loopback`, it makes throwaway certificates in a temporary
//! folder, builds a server and a client configuration from the embedded YAML below,
//! and runs a mutual-TLS 1.3 echo between them on loopback with live figures every
//! second until Ctrl-C (or `--duration`). Each round is a fresh handshake followed by
//! a bulk echo, so both the handshake rate and the throughput show.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sssonector_actors::tunnel::tls::{self, TlsError};
use sssonector_actors::Error;
use sssonector_config::{Config, FileFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cli::DemoArgs;

/// The server's name in the demo certificates.
const SERVER_NAME: &str = "sssonector-demo";
/// Bytes echoed per round: enough that throughput, not the handshake, dominates.
const ROUND_BYTES: usize = 8 << 20;
/// Size of one write, a full TLS record's worth of plaintext several times over.
const CHUNK: usize = 64 << 10;

const SERVER_YAML: &str = r#"
mode: server
network: { address: 10.99.0.1/24 }
tunnel: { cert_file: server.crt, key_file: server.key, ca_file: ca.crt }
security: { allowed_clients: [demo-client] }
"#;

const CLIENT_YAML: &str = r#"
mode: client
network: { address: 10.99.0.2/24 }
tunnel:
  servers: [{ address: "127.0.0.1:8443" }]
  server_name: sssonector-demo
  cert_file: demo-client.crt
  key_file: demo-client.key
  ca_file: ca.crt
"#;

#[derive(Default)]
struct Figures {
    handshakes: AtomicU64,
    bytes: AtomicU64,
    handshake_us: AtomicU64,
}

/// Runs the demo: the real tunnel between two namespaces when this process may make
/// them (root, `/dev/net/tun`), the loopback TLS echo otherwise or with `--loopback`.
pub fn demo(args: &DemoArgs) -> Result<(), Error> {
    let can_tunnel = nix::unistd::geteuid().is_root() && Path::new("/dev/net/tun").exists();
    if can_tunnel && !args.loopback {
        return crate::demo_tunnel::run(args);
    }
    if !args.loopback {
        println!(
            "not root (or no /dev/net/tun): showing the TLS echo on loopback instead of the tunnel"
        );
    }
    loopback(args)
}

fn loopback(args: &DemoArgs) -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    crate::cert::generate(dir.path(), SERVER_NAME, &["demo-client".into()], 1, false)?;
    let server = embedded(SERVER_YAML, dir.path())?;
    let client = embedded(CLIENT_YAML, dir.path())?;
    let acceptor = TlsAcceptor::from(tls::server_config(&server.tunnel, &server.security)?);
    let connector = TlsConnector::from(tls::client_config(&client.tunnel, &client.security)?);
    println!("certificates in {} (removed at exit)", dir.path().display());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("listener", e))?;
        println!("server listening on {addr} (mutual TLS 1.3, client certificate required)");
        tokio::spawn(serve(listener, acceptor));
        let figures = Arc::new(Figures::default());
        let client = tokio::spawn(drive(addr, connector, figures.clone()));
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last_bytes = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            if client.is_finished() {
                break;
            }
            let bytes = figures.bytes.load(Ordering::Relaxed);
            let hs = figures.handshakes.load(Ordering::Relaxed);
            println!(
                "t={:>4}s handshakes={hs} echoed={:.1} MiB rate={:.0} Mbit/s last_handshake={:.2} ms",
                started.elapsed().as_secs(),
                bytes as f64 / f64::from(1 << 20),
                (bytes - last_bytes) as f64 * 8.0 / 1e6,
                figures.handshake_us.load(Ordering::Relaxed) as f64 / 1000.0,
            );
            last_bytes = bytes;
            if args.duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
        }
        if client.is_finished() {
            return client.await.map_err(|e| Error::Internal(e.to_string()))?;
        }
        println!("demo stopped");
        Ok(())
    })
}

fn embedded(yaml: &str, dir: &Path) -> Result<Config, Error> {
    Ok(sssonector_config::from_str(yaml, FileFormat::Yaml, dir)?)
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut buf = vec![0; CHUNK];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Sends what rustls still holds (a full socket leaves records
                // buffered) and close_notify; dropping would lose both.
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// Rounds of handshake + echo, forever; returns only on a failure.
async fn drive(
    addr: std::net::SocketAddr,
    connector: TlsConnector,
    figures: Arc<Figures>,
) -> Result<(), Error> {
    let name = ServerName::try_from(SERVER_NAME).expect("a constant DNS name");
    let mut out = vec![0x5a; CHUNK];
    let mut back = vec![0; CHUNK];
    loop {
        let begun = Instant::now();
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(addr.to_string(), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| Error::Tls(TlsError::from_handshake(&e)))?;
        figures
            .handshake_us
            .store(begun.elapsed().as_micros() as u64, Ordering::Relaxed);
        figures.handshakes.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            let mut sent = 0;
            while sent < ROUND_BYTES {
                wr.write_all(&out).await?;
                sent += out.len();
            }
            wr.shutdown().await?;
            Ok::<_, std::io::Error>(out)
        });
        let mut got = 0;
        while got < ROUND_BYTES {
            let n = rd.read(&mut back).await.map_err(|e| Error::io("echo", e))?;
            if n == 0 {
                return Err(Error::Internal("echo closed early".into()));
            }
            got += n;
            figures.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        out = writer
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::io("echo", e))?;
    }
}
