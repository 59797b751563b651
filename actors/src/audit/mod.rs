//! The Audit actor: security-relevant events as JSON lines in `security.audit_log`.
//!
//! One line per event: `{"ts": RFC 3339, "event": name, ...fields}`. Each line is
//! written and flushed before the next message is handled, so an audit trail survives
//! a crash of the process. The file is created owner-only (0600) and made so if it was
//! not: the trail names peers, addresses and operators. [`Reopen`] (sent on every
//! reload, SIGHUP or `ctl reload`) reopens it by path, so a logrotate that moved the
//! file away gets a fresh one. Supervised: a restart reopens the file. It stops when
//! its last address is dropped, after writing every record already sent.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use serde_json::{Map, Value};
use slog::{error, Logger};

use crate::drain::DrainToken;
use crate::error::Error;

/// Records one event.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Record {
    /// Event name in snake case, e.g. `config_reloaded`.
    pub event: &'static str,
    /// Event data: a JSON object.
    pub fields: Value,
}

/// Closes and reopens the file by its path: after a logrotate moved it away, the
/// records go to a new file instead of the moved one.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Reopen;

/// The audit file's mode: owner read and write only.
const MODE: u32 = 0o600;

/// Owns the audit file.
pub struct AuditActor {
    path: PathBuf,
    file: Option<File>,
    /// False while the trail cannot be written, so `status` and `health` show it.
    writable: Arc<AtomicBool>,
    log: Logger,
    _drain: Option<DrainToken>,
}

impl AuditActor {
    /// An actor appending to `path`. The file opens (and is narrowed to owner-only)
    /// here, so before the daemon says it started, and again each time the actor
    /// starts. `writable` tells the daemon whether the trail is being written.
    pub fn new(
        path: PathBuf,
        writable: Arc<AtomicBool>,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> Self {
        let mut actor = Self {
            path,
            file: None,
            writable,
            log,
            _drain: drain,
        };
        actor.open();
        actor
    }

    fn open(&mut self) {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(MODE)
            .open(&self.path)
            .and_then(|f| {
                // A file made before (by hand, by an older version) may be wider.
                if f.metadata()?.permissions().mode() & 0o777 != MODE {
                    f.set_permissions(Permissions::from_mode(MODE))?;
                }
                Ok(f)
            });
        match opened {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                let err = Error::io(&self.path, e);
                error!(self.log, "audit log unavailable"; "code" => err.code(), "error" => %err);
                self.file = None;
            }
        }
        self.writable.store(self.file.is_some(), Ordering::Relaxed);
    }

    fn write(&mut self, record: &Record) {
        let mut line = Map::new();
        line.insert(
            "ts".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("event".into(), record.event.into());
        if let Value::Object(fields) = &record.fields {
            line.extend(fields.clone());
        }
        let mut bytes = Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let written = file.write_all(&bytes).and_then(|()| file.flush());
        self.writable.store(written.is_ok(), Ordering::Relaxed);
        if let Err(e) = written {
            let err = Error::io(&self.path, e);
            error!(self.log, "audit write failed"; "code" => err.code(), "error" => %err, "event" => record.event);
        }
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.open();
    }
}

/// The file is opened again by `started`, which runs after each restart.
impl Supervised for AuditActor {}

crate::supervise::panic_on_fault!(AuditActor);

impl Handler<Reopen> for AuditActor {
    type Result = ();
    fn handle(&mut self, _: Reopen, _ctx: &mut Self::Context) {
        self.open();
    }
}

impl Handler<Record> for AuditActor {
    type Result = ();
    fn handle(&mut self, msg: Record, _ctx: &mut Self::Context) {
        self.write(&msg);
    }
}
