//! Errors with stable codes.
//!
//! Every failure the daemon reports carries an [`ErrorCode`]: a stable `E_*` name that
//! scripts match on, that the control socket returns and that every log line reporting
//! an error carries under the key `code`. Messages are for people and may change;
//! codes may not.

use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use sssonector_config::LoadError;

use crate::tunnel::tls::TlsError;

/// Declares [`ErrorCode`], its stable names and [`ErrorCode::ALL`] from one list, so
/// no code can be missing from `ALL` (which the README test walks).
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Stable error codes. Their names are part of the public interface: never
        /// rename one. Their order is on the wire ([`ErrorCode::wire`]): append new
        /// codes before `Internal`, never reorder or remove one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The stable name, e.g. `E_CONFIG_INVALID`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// The configuration was refused; `details.problems` lists every key path.
    ConfigInvalid => "E_CONFIG_INVALID",
    /// A file or socket operation failed.
    Io => "E_IO",
    /// Our own certificate, key, CA or CRL could not be used.
    TlsConfig => "E_TLS_CONFIG",
    /// The peer's certificate is not signed by our CA (or the peer refused ours).
    TlsUntrusted => "E_TLS_UNTRUSTED",
    /// The TLS handshake failed for another reason (protocol, timeout, closed).
    TlsHandshake => "E_TLS_HANDSHAKE",
    /// `cert init` would overwrite existing files.
    CertExists => "E_CERT_EXISTS",
    /// A reload changed something only a restart can change (the mode).
    RestartRequired => "E_RESTART_REQUIRED",
    /// The subsystem that would answer is not built yet.
    NotAvailable => "E_NOT_AVAILABLE",
    /// A control request line is not JSON (or not UTF-8).
    BadJson => "E_BAD_JSON",
    /// A control request is JSON of the wrong shape.
    BadRequest => "E_BAD_REQUEST",
    /// A control request names no known command.
    UnknownCommand => "E_UNKNOWN_COMMAND",
    /// A control command's arguments are missing, unknown or of the wrong type.
    BadArgs => "E_BAD_ARGS",
    /// A control request line is longer than the limit.
    LineTooLong => "E_LINE_TOO_LONG",
    /// A control client said nothing for too long.
    Timeout => "E_TIMEOUT",
    /// The control socket belongs to a daemon that is running.
    ControlInUse => "E_CONTROL_IN_USE",
    /// `ctl` could not reach the daemon's control socket.
    Unreachable => "E_UNREACHABLE",
    /// The TUN interface could not be created or configured (no CAP_NET_ADMIN, the
    /// name is taken, no /dev/net/tun).
    Tun => "E_TUN",
    /// The peer is not allowed: its certificate name or source address is refused.
    AccessDenied => "E_ACCESS_DENIED",
    /// The inner address a client asked for is outside the subnet or not allowed for
    /// its certificate.
    BadAddress => "E_BAD_ADDRESS",
    /// The inner address a client asked for is held by another live session.
    AddressInUse => "E_ADDRESS_IN_USE",
    /// The peer broke the tunnel protocol: a malformed frame, an unexpected frame or
    /// an unsupported protocol version.
    Protocol => "E_PROTOCOL",
    /// The peer sent nothing for three keepalive intervals.
    PeerTimeout => "E_PEER_TIMEOUT",
    /// The peer ended the session (closed the connection or said Close).
    PeerClosed => "E_PEER_CLOSED",
    /// Our own certificate expires within `monitor.snmp.cert_warning`, or has
    /// expired: renew it.
    CertExpiring => "E_CERT_EXPIRING",
    /// Tunnel events came faster than the SNMP notifier could send them: the oldest
    /// were dropped unsent.
    NotificationsLost => "E_NOTIFICATIONS_LOST",
    /// `connection.max_connections` streams (client) or tunnels (server) are live:
    /// the new one was refused.
    ConnLimit => "E_CONN_LIMIT",
    /// A stream asked for a service this server does not have.
    UnknownService => "E_UNKNOWN_SERVICE",
    /// No endpoint of the service could take the stream: none healthy, all breakers
    /// open, or every try within `balancer.max_retries` / `retry_timeout` failed.
    NoEndpoint => "E_NO_ENDPOINT",
    /// The endpoint's circuit breaker is open: it was not tried.
    BreakerOpen => "E_BREAKER_OPEN",
    /// A TCP connect to an endpoint failed or timed out.
    Connect => "E_CONNECT",
    /// A forwarded stream was cut: its socket failed or the tunnel under it ended.
    StreamReset => "E_STREAM_RESET",
    /// A client made new connections, handshakes or streams faster than
    /// `throttle.requests` allows: this one was refused.
    RateLimited => "E_RATE_LIMITED",
    /// The daemon could not become `security.user`/`group` (unknown name, or no
    /// right to change user): it refuses to go on as root.
    Privileges => "E_PRIVILEGES",
    /// A long-lived actor panicked: it was restarted with its kept state, or left
    /// stopped after too many panics in a row (its component then shows `failed`).
    ActorPanic => "E_ACTOR_PANIC",
    /// `sssonector bench` saw data lost or corrupted, or a connection fail: the
    /// report's `errors` says which kinds and how many.
    BenchFailed => "E_BENCH_FAILED",
    /// A bug: an invariant did not hold.
    Internal => "E_INTERNAL",
}

impl ErrorCode {
    /// The number that stands for this code in a frame (`StreamClose`): its place in
    /// [`ErrorCode::ALL`] plus one, so 0 can mean "no error".
    pub fn wire(self) -> u16 {
        let at = ErrorCode::ALL
            .iter()
            .position(|&c| c == self)
            .expect("every code is in ALL");
        u16::try_from(at + 1).expect("fewer than 65535 codes")
    }

    /// The code a frame's number stands for; `None` for 0 and for numbers this
    /// version does not know.
    pub fn from_wire(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The process exit status for a command that failed with this code: 2 for a
    /// configuration to correct or a daemon that cannot be reached, 1 otherwise.
    pub const fn exit_status(self) -> i32 {
        match self {
            ErrorCode::ConfigInvalid | ErrorCode::Unreachable => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl slog::Value for ErrorCode {
    fn serialize(
        &self,
        _record: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_str(key, self.as_str())
    }
}

/// Any error of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be loaded or was invalid.
    #[error("configuration refused: {0}")]
    Config(#[from] LoadError),
    /// TLS material or a handshake failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TUN interface could not be set up.
    #[error(transparent)]
    Tun(#[from] crate::tun::TunError),
    /// A tunnel session failed or was refused.
    #[error("{message}")]
    Session {
        /// Why, as a stable code.
        code: ErrorCode,
        /// Said for people.
        message: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `cert init` found files it would overwrite.
    #[error("{} already exists, pass --force to overwrite", .0.display())]
    CertExists(PathBuf),
    /// A reload would change `key`, which needs a restart; nothing was applied.
    #[error("{0} changed: restart the daemon to apply this file")]
    RestartRequired(String),
    /// A command whose subsystem is off or not running: the message says which.
    #[error("{0}")]
    NotAvailable(&'static str),
    /// A control request that could not be carried out as sent.
    #[error(transparent)]
    Control(#[from] crate::control::protocol::ProtocolError),
    /// The control socket is in use by a running daemon.
    #[error("{}: control socket in use by a running daemon", .0.display())]
    ControlInUse(PathBuf),
    /// `ctl` cannot reach the daemon.
    #[error("cannot reach the daemon at {}: {source}", .path.display())]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// What connecting said.
        source: std::io::Error,
    },
    /// A command named something that does not exist (e.g. an endpoint a service
    /// lacks) or that already does; the message names both.
    #[error("{0}")]
    BadArgs(String),
    /// Dropping privileges failed; the message says which step.
    #[error("dropping privileges: {0}")]
    Privileges(String),
    /// A bench run whose data or connections failed; the message sums it up.
    #[error("bench failed: {0}")]
    Bench(String),
    /// An invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config(_) => ErrorCode::ConfigInvalid,
            Error::Tls(e) => e.code(),
            Error::Tun(_) => ErrorCode::Tun,
            Error::Session { code, .. } => *code,
            Error::Io { .. } => ErrorCode::Io,
            Error::CertExists(_) => ErrorCode::CertExists,
            Error::RestartRequired(_) => ErrorCode::RestartRequired,
            Error::NotAvailable(_) => ErrorCode::NotAvailable,
            Error::Control(e) => e.code(),
            Error::ControlInUse(_) => ErrorCode::ControlInUse,
            Error::Unreachable { .. } => ErrorCode::Unreachable,
            Error::BadArgs(_) => ErrorCode::BadArgs,
            Error::Privileges(_) => ErrorCode::Privileges,
            Error::Bench(_) => ErrorCode::BenchFailed,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Machine-readable details: the problems of a refused configuration, the file of
    /// an I/O error.
    pub fn details(&self) -> Value {
        match self {
            Error::Config(e) => json!({ "problems": e.problems() }),
            Error::Io { path, .. }
            | Error::CertExists(path)
            | Error::ControlInUse(path)
            | Error::Unreachable { path, .. } => json!({ "path": path }),
            Error::Tls(e) => e.details(),
            _ => json!({}),
        }
    }

    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The JSON form used in control replies and `--json` output:
    /// `{"code": "E_…", "message": "…", "details": {…}}`.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string(), "details": self.details() })
    }
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip_and_zero_is_no_code() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.wire()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire(0), None);
        assert_eq!(ErrorCode::from_wire(u16::MAX), None);
        assert_eq!(ErrorCode::ConfigInvalid.wire(), 1);
    }

    #[test]
    fn codes_are_unique_upper_snake_names() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(name.starts_with("E_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
            assert!(seen.insert(name), "{name} twice");
        }
    }

    #[test]
    fn config_errors_carry_every_problem_in_details() {
        let err = Error::Config(LoadError::Invalid(vec![
            sssonector_config::Problem::new("a.b", "bad"),
            sssonector_config::Problem::new("c", "worse"),
        ]));
        let json = err.to_json();
        assert_eq!(json["code"], "E_CONFIG_INVALID");
        assert_eq!(json["details"]["problems"][1]["path"], "c");
        assert_eq!(err.code().exit_status(), 2);
    }
}
