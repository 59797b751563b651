//! The CertWatcher actor: puts renewed certificates, keys, CA bundles and CRLs in use
//! without a restart and without touching a live session.
//!
//! Every `security.cert_check_interval` it stats `tunnel.cert_file`, `key_file`,
//! `ca_file` and `security.crl_file`; when one looks different it reads all four,
//! and [`watch::Watch`] decides from their digests whether there is anything new.
//! New content is built into a rustls configuration by [`crate::tunnel::tls`] from
//! the very bytes that were hashed, then handed to the Listener (server) or the
//! Dialer (client), which use it for the next handshake; sessions already up keep the
//! configuration they were made with, so traffic never stops for a rotation.
//! Content that does not build (a damaged PEM, a key that is not the certificate's,
//! a half-written file) is refused: logged at error with `E_TLS_CONFIG`, audited as
//! `certificates_refused`, and the configuration in use stays; the next change is
//! tried again. A swap is logged and audited as `certificates_swapped` with the old
//! and new subjects and serials. No key material is ever logged.
//!
//! A client whose own certificate or key changed re-handshakes: it closes its session
//! and dials again at once with the new certificate (a controlled reconnect, logged
//! as such). Make-before-break is not possible here: the server lets one session
//! hold a client's inner address at a time, so a second session from the same
//! client would be refused with `E_ADDRESS_IN_USE` while the first lives.
//!
//! What is in use is published on a [`Board`] that `ctl certs` reads, and the time
//! left on our certificate and on the CA bundle's first to expire goes to the
//! `sssonector_certificate_expiry_seconds` gauge at every tick; swaps and refusals are
//! counted in `sssonector_certificate_changes_total`.

pub mod facts;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix::WeakAddr;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use slog::{debug, error, info, warn, Logger};
use sssonector_config::{Config, Mode};

use self::facts::{rfc3339, CertFacts, CrlFacts};
use self::watch::{Digests, Look, Role, Stamp, Verdict, Watch};
use crate::audit::{AuditActor, Record};
use crate::dialer::{self, Dialer};
use crate::error::ErrorCode;
use crate::listener::{self, Listener};
use crate::metrics::Metrics;
use crate::snmp::trap::{CheckCertificate, TrapSender};
use crate::tunnel::tls::{self, Material, Pem, TlsError};

/// Where new configurations go: the tunnel side of this daemon.
#[derive(Clone)]
pub enum Side {
    /// A server's listener.
    Server(Addr<Listener>),
    /// A client's dialer.
    Client(Addr<Dialer>),
}

/// What is in use, for `ctl certs`.
#[derive(Default)]
struct Report {
    files: [Option<PathBuf>; 4],
    chain: Vec<CertFacts>,
    ca: Vec<CertFacts>,
    crl: Vec<CrlFacts>,
    interval: Duration,
    swaps: u64,
    refusals: u64,
    last_swap: Option<(i64, Vec<&'static str>)>,
    last_refusal: Option<(i64, String)>,
}

/// The certificates in use and what became of the last changes; written by the
/// watcher, read by `ctl certs`.
#[derive(Default)]
pub struct Board(Mutex<Report>);

impl Board {
    fn with<T>(&self, f: impl FnOnce(&mut Report) -> T) -> T {
        // A panic while holding it leaves facts, not invariants: keep going.
        let mut r = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut r)
    }

    /// The `ctl certs` reply at `now` (Unix seconds).
    pub fn to_json(&self, now: i64) -> Value {
        self.with(|r| {
            let file = |role: Role| {
                r.files[role as usize]
                    .as_ref()
                    .map(|p| p.display().to_string())
            };
            json!({
                "own": {
                    "file": file(Role::Cert),
                    "key_file": file(Role::Key),
                    "chain": r.chain.iter().map(|c| c.to_json(now)).collect::<Vec<_>>(),
                },
                "ca": {
                    "file": file(Role::Ca),
                    "certificates": r.ca.iter().map(|c| c.to_json(now)).collect::<Vec<_>>(),
                },
                "crl": {
                    "file": file(Role::Crl),
                    "lists": r.crl.iter().map(CrlFacts::to_json).collect::<Vec<_>>(),
                },
                "check_interval_ms": u64::try_from(r.interval.as_millis()).unwrap_or(u64::MAX),
                "swaps": r.swaps,
                "refusals": r.refusals,
                "last_swap": r.last_swap.as_ref().map(|(at, files)| json!({
                    "at": rfc3339(*at), "files": files,
                })),
                "last_refusal": r.last_refusal.as_ref().map(|(at, reason)| json!({
                    "at": rfc3339(*at), "reason": reason,
                })),
            })
        })
    }
}

/// Apply a reloaded configuration: file paths and check interval. The reload has
/// already put the files' content in use, so it becomes the new baseline.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Box<Config>);

/// Stop watching: the daemon is stopping, and no swap is to come during its drain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for CertWatcher {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A configuration built from the files, ready for the tunnel side.
enum Built {
    Server(Arc<rustls::ServerConfig>),
    Client(Arc<rustls::ClientConfig>),
}

/// What was read and understood from one set of files.
struct Parsed {
    built: Built,
    chain: Vec<CertFacts>,
    ca: Vec<CertFacts>,
    crl: Vec<CrlFacts>,
}

/// Watches the TLS files and swaps new content in.
pub struct CertWatcher {
    config: Box<Config>,
    side: Side,
    watch: Watch,
    board: Arc<Board>,
    /// Weak, like `traps`: those actors stop when the daemon drops its addresses on
    /// a stop (and their drain tokens with them); this one must not keep them.
    audit: Option<WeakAddr<AuditActor>>,
    metrics: Arc<Metrics>,
    /// Told when our certificate changed, so sssCertExpiring is decided at once.
    traps: Option<WeakAddr<TrapSender>>,
    ticks: Option<SpawnHandle>,
    log: Logger,
}

impl CertWatcher {
    /// A watcher of `config`'s files that hands new configurations to `side` and
    /// tells `traps` when our certificate changed.
    pub fn new(
        config: &Config,
        side: Side,
        board: Arc<Board>,
        (audit, traps): (Option<Addr<AuditActor>>, Option<Addr<TrapSender>>),
        metrics: Arc<Metrics>,
        log: Logger,
    ) -> Self {
        let mut this = Self {
            config: Box::new(config.clone()),
            side,
            watch: Watch::new([Stamp::Unset; 4], [None; 4]),
            board,
            audit: audit.as_ref().map(Addr::downgrade),
            metrics,
            traps: traps.as_ref().map(Addr::downgrade),
            ticks: None,
            log,
        };
        this.baseline();
        this
    }

    fn files(&self) -> [Option<PathBuf>; 4] {
        let t = &self.config.tunnel;
        [
            t.cert_file.clone(),
            t.key_file.clone(),
            t.ca_file.clone(),
            self.config.security.crl_file.clone(),
        ]
    }

    fn look(&self) -> Look {
        self.files().map(|f| match f {
            None => Stamp::Unset,
            Some(path) => match std::fs::metadata(&path) {
                Ok(m) => Stamp::Present {
                    len: m.len(),
                    modified: m.modified().unwrap_or(UNIX_EPOCH),
                },
                Err(_) => Stamp::Missing,
            },
        })
    }

    fn read(&self) -> [Option<Result<Pem, TlsError>>; 4] {
        self.files().map(|f| f.as_deref().map(Pem::read))
    }

    /// Takes the files as they are as the content in use (at start, the daemon has
    /// just built its configuration from them; after a reload, likewise).
    fn baseline(&mut self) {
        let look = self.look();
        let reads = self.read();
        self.watch.rebase(look, digests(&reads));
        let interval = self.config.security.cert_check_interval.duration();
        let files = self.files();
        match self.parse(reads) {
            Ok(p) => self.board.with(|r| {
                (r.chain, r.ca, r.crl) = (p.chain, p.ca, p.crl);
                r.files = files;
                r.interval = interval;
            }),
            Err(e) => {
                // The daemon refused to start or reload on this: seen only in a race.
                warn!(self.log, "certificate files not readable for their facts";
                    "code" => e.code(), "error" => %e);
                self.board.with(|r| {
                    r.files = files;
                    r.interval = interval;
                });
            }
        }
        self.export_expiry();
    }

    /// Builds a configuration for this side from what was read, and parses the facts.
    fn parse(&self, reads: [Option<Result<Pem, TlsError>>; 4]) -> Result<Parsed, TlsError> {
        let [cert, key, ca, crl] = reads;
        let need = |r: Option<Result<Pem, TlsError>>, key: &'static str| {
            r.ok_or(TlsError::Missing(key)).and_then(|r| r)
        };
        let material = Material {
            cert: need(cert, "tunnel.cert_file")?,
            key: need(key, "tunnel.key_file")?,
            ca: need(ca, "tunnel.ca_file")?,
            crl: crl.transpose()?,
        };
        let security = &self.config.security;
        let built = match self.config.mode() {
            Mode::Server => tls::server_config_from(&material, security).map(Built::Server),
            Mode::Client => tls::client_config_from(&material, security).map(Built::Client),
        }?;
        let facts = |pem: &Pem| -> Result<Vec<CertFacts>, TlsError> {
            tls::pem_certificates(pem)?
                .iter()
                .map(|c| CertFacts::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| TlsError::File {
                    path: pem.path.clone(),
                    message,
                })
        };
        // rustls accepted the lists: one x509-parser cannot read is left out of
        // `ctl certs`, not a reason to refuse.
        let crl = tls::crls(material.crl.as_ref())?
            .iter()
            .filter_map(|c| CrlFacts::parse(c).ok())
            .collect();
        Ok(Parsed {
            built,
            chain: facts(&material.cert)?,
            ca: facts(&material.ca)?,
            crl,
        })
    }

    fn tick(&mut self) {
        self.export_expiry();
        if !self.watch.looked(self.look()) {
            return;
        }
        let reads = self.read();
        let digests = digests(&reads);
        let verdict = self.watch.read(&digests);
        let Verdict::Build { changed } = &verdict else {
            if verdict == Verdict::Unchanged {
                debug!(self.log, "certificate files touched, content unchanged");
            }
            return;
        };
        let files: Vec<&'static str> = changed.iter().map(|r| r.as_str()).collect();
        match self.parse(reads) {
            Ok(parsed) => {
                self.watch.swapped(digests);
                self.swap(parsed, files, verdict.renews_identity());
            }
            Err(e) => {
                self.watch.refused(digests);
                self.refuse(&files, &e);
            }
        }
    }

    fn swap(&mut self, p: Parsed, files: Vec<&'static str>, renewed: bool) {
        match (&self.side, p.built) {
            (Side::Server(l), Built::Server(c)) => l.do_send(listener::SwapTls(c)),
            (Side::Client(d), Built::Client(c)) => d.do_send(dialer::SwapTls {
                config: c,
                rehandshake: renewed,
            }),
            _ => {
                return error!(self.log, "certificate watcher built for the other side";
                    "code" => ErrorCode::Internal)
            }
        }
        let serials = |v: &[CertFacts]| v.iter().map(|c| c.serial.clone()).collect::<Vec<_>>();
        let leaf = |v: &[CertFacts]| {
            v.first()
                .map(|c| json!({"subject": c.subject, "serial": c.serial}))
        };
        let now = unix_now();
        self.metrics
            .cert_changes
            .with_label_values(&["swapped"])
            .inc();
        let (old_leaf, old_ca) = self.board.with(|r| (leaf(&r.chain), serials(&r.ca)));
        let (new_leaf, new_ca) = (leaf(&p.chain), serials(&p.ca));
        info!(self.log, "certificates swapped";
            "files" => files.join(","),
            "old_serial" => old_leaf.as_ref().and_then(|l| l["serial"].as_str()).map(str::to_string),
            "new_serial" => new_leaf.as_ref().and_then(|l| l["serial"].as_str()).map(str::to_string),
            "subject" => p.chain.first().map(|c| c.subject.clone()),
            "ca_serials" => new_ca.join(","),
            "rehandshake" => renewed && matches!(self.side, Side::Client(_)));
        self.record(
            "certificates_swapped",
            json!({
                "files": files, "old": old_leaf, "new": new_leaf,
                "old_ca_serials": old_ca, "new_ca_serials": new_ca,
            }),
        );
        let own_changed = files.contains(&Role::Cert.as_str());
        self.board.with(|r| {
            (r.chain, r.ca, r.crl) = (p.chain, p.ca, p.crl);
            r.swaps += 1;
            r.last_swap = Some((now, files));
        });
        self.export_expiry();
        if let (true, Some(t)) = (own_changed, self.traps.as_ref().and_then(WeakAddr::upgrade)) {
            t.do_send(CheckCertificate);
        }
    }

    fn refuse(&mut self, files: &[&'static str], e: &TlsError) {
        let reason = e.to_string();
        self.metrics
            .cert_changes
            .with_label_values(&["refused"])
            .inc();
        error!(self.log, "certificates refused, the ones in use stay";
            "code" => e.code(), "files" => files.join(","), "error" => &reason);
        self.record(
            "certificates_refused",
            json!({ "files": files, "code": e.code(), "reason": reason }),
        );
        self.board.with(|r| {
            r.refusals += 1;
            r.last_refusal = Some((unix_now(), reason));
        });
    }

    fn record(&self, event: &'static str, fields: Value) {
        if let Some(a) = self.audit.as_ref().and_then(WeakAddr::upgrade) {
            a.do_send(Record { event, fields });
        }
    }

    /// Time left on our certificate and on the CA bundle's first to expire.
    fn export_expiry(&self) {
        let now = unix_now();
        let (own, ca) = self.board.with(|r| {
            (
                r.chain.first().map(|c| c.seconds_left(now)),
                r.ca.iter().map(|c| c.seconds_left(now)).min(),
            )
        });
        for (label, left) in [("own", own), ("ca", ca)] {
            if let Some(left) = left {
                self.metrics
                    .cert_expiry
                    .with_label_values(&[label])
                    .set(left);
            }
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.ticks.take() {
            ctx.cancel_future(h);
        }
        let every = self.config.security.cert_check_interval.duration();
        self.ticks = Some(ctx.run_interval(every, |act, _| act.tick()));
    }
}

fn digests(reads: &[Option<Result<Pem, TlsError>>; 4]) -> Digests {
    let hash = |r: &Option<Result<Pem, TlsError>>| match r {
        Some(Ok(pem)) => Some(Sha256::digest(&pem.bytes).into()),
        _ => None,
    };
    [
        hash(&reads[0]),
        hash(&reads[1]),
        hash(&reads[2]),
        hash(&reads[3]),
    ]
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Actor for CertWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let files = self.files();
        let shown = |i: usize| {
            files[i]
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
        };
        info!(self.log, "watching certificate files";
            "cert" => shown(0), "ca" => shown(2), "crl" => shown(3),
            "every_ms" => self.config.security.cert_check_interval.duration().as_millis() as u64);
        self.schedule(ctx);
    }
}

impl Supervised for CertWatcher {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // The machine survives a restart: it still knows what is in use, so a change
        // made meanwhile is seen at the first tick. Only the timer was the old
        // context's.
        self.ticks = None;
    }
}

impl Handler<Reconfigure> for CertWatcher {
    type Result = ();
    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        let interval_changed =
            msg.0.security.cert_check_interval != self.config.security.cert_check_interval;
        self.config = msg.0;
        self.baseline();
        if interval_changed {
            self.schedule(ctx);
        }
    }
}
