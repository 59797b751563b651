//! An echo backend for the layer-4 tests: it says its name on a line of its own,
//! then echoes, so a test knows which backend took each connection and that every
//! byte came back intact.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::netns::Netns;

/// An echo backend in a namespace: says its name, then echoes. Counts the
/// connections that sent at least one byte (health checks send none).
pub struct Backend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Starts backend `name` on 127.0.0.1:`port` in `ns`.
    pub fn start(ns: &Netns, name: &str, port: u16) -> Self {
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let listener = ns
            .thread(move || TcpListener::bind(("127.0.0.1", port)))
            .join()
            .expect("bind thread")
            .unwrap_or_else(|e| panic!("backend {port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let thread = {
            let (served, stop, conns, name) =
                (served.clone(), stop.clone(), conns.clone(), name.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).expect("blocking");
                            conns
                                .lock()
                                .expect("conns")
                                .push(s.try_clone().expect("clone"));
                            let (served, name) = (served.clone(), name.clone());
                            std::thread::Builder::new()
                                .stack_size(64 * 1024)
                                .spawn(move || echo(s, &name, &served))
                                .expect("echo thread");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            port,
            served,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// Stops listening and cuts every connection, as a crash would.
    pub fn kill(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("accept thread");
        }
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Connections that sent at least one byte.
    pub fn served(&self) -> u64 {
        self.served.load(Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn echo(mut s: TcpStream, name: &str, served: &AtomicU64) {
    if s.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    let mut counted = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !counted {
                    served.fetch_add(1, Relaxed);
                    counted = true;
                }
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}
