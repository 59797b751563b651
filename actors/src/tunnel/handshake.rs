//! The I/O half of the session handshake, shared by the Listener and the Dialer:
//! reading one whole frame before the session starts, writing one, the peer's
//! certificate names, and socket options.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, Frame};
use crate::error::ErrorCode;

/// Longest a handshake (TLS and session) may take before the peer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest handshake payload accepted: they are small JSON objects.
const MAX_HANDSHAKE: usize = 16 * 1024;

/// A failed handshake step.
#[derive(Debug)]
pub struct Failed {
    /// Stable code.
    pub code: ErrorCode,
    /// Said for people.
    pub reason: String,
}

impl Failed {
    /// A failure with `code`.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The kinds of handshake frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Hello.
    Hello,
    /// Accept.
    Accept,
    /// Reject.
    Reject,
}

/// Reads one handshake frame; returns its kind, its payload and any bytes read past
/// it (the first data frames, which the session then starts from).
///
/// # Errors
/// `E_PROTOCOL` for a frame that is not a handshake frame, or too big; `E_PEER_CLOSED`
/// when the peer closes first.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Kind, Vec<u8>, Vec<u8>), Failed> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match codec::decode(&buf) {
            Ok(Some((frame, used))) => {
                let (kind, payload) = match frame {
                    Frame::Hello(p) => (Kind::Hello, p),
                    Frame::Accept(p) => (Kind::Accept, p),
                    Frame::Reject(p) => (Kind::Reject, p),
                    _ => {
                        return Err(Failed::new(
                            ErrorCode::Protocol,
                            "expected a handshake frame",
                        ))
                    }
                };
                return Ok((kind, payload.to_vec(), buf[used..].to_vec()));
            }
            Ok(None) if buf.len() > MAX_HANDSHAKE => {
                return Err(Failed::new(
                    ErrorCode::Protocol,
                    "handshake frame too large",
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(Failed::new(ErrorCode::Protocol, format!("bad frame: {e}"))),
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failed::new(ErrorCode::PeerClosed, e.to_string()))?;
        if n == 0 {
            return Err(Failed::new(
                ErrorCode::PeerClosed,
                "connection closed during the session handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes one frame and flushes.
///
/// # Errors
/// `E_PEER_CLOSED` when the write fails.
pub async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: &Frame<'_>,
) -> Result<(), Failed> {
    let mut out = Vec::new();
    codec::encode(frame, &mut out).map_err(|e| Failed::new(ErrorCode::Internal, e.to_string()))?;
    async {
        stream.write_all(&out).await?;
        stream.flush().await
    }
    .await
    .map_err(|e| Failed::new(ErrorCode::PeerClosed, e.to_string()))
}

/// The names a certificate carries: its subject CN, then DNS and URI SANs.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) => names.push(s.to_string()),
                _ => {}
            }
        }
    }
    names.dedup();
    names
}

/// What the audit log says about a peer's certificate: never the key, only who it
/// claims to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    /// The subject, as `CN=c1, O=...`; empty when the certificate did not parse.
    pub subject: String,
    /// The serial number in hex, as `openssl x509 -serial` prints it (upper case).
    pub serial: String,
    /// Its names: CN, DNS and URI SANs (see [`cert_names`]).
    pub names: Vec<String>,
}

impl CertSummary {
    /// The summary of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Self::default();
        };
        Self {
            subject: cert.subject().to_string(),
            serial: {
                let raw = cert.raw_serial();
                // DER keeps a 0x00 before a high first byte; openssl does not print it.
                let skip = raw
                    .iter()
                    .take(raw.len().saturating_sub(1))
                    .take_while(|b| **b == 0)
                    .count();
                raw[skip..].iter().map(|b| format!("{b:02X}")).collect()
            },
            names: cert_names(der),
        }
    }
}

/// Socket options for a tunnel or stream connection: no Nagle delay (frames are
/// already batched, streams carry requests and answers), and TCP keepalive after
/// `keepalive_idle` (a probe every 10 s, dead after 3 unanswered), or none. On a
/// listening socket they carry over to every socket it accepts (Linux).
pub fn tune_socket(socket: impl std::os::fd::AsFd, keepalive_idle: Option<Duration>) {
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_tcp_nodelay(true);
    match keepalive_idle {
        Some(idle) => {
            let ka = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            let _ = sock.set_tcp_keepalive(&ka);
        }
        // A new socket has none; a listener may have had it before a reload.
        None => {
            let _ = sock.set_keepalive(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handshake_frame_is_read_with_what_follows_it() {
        let mut wire = Vec::new();
        codec::encode(&Frame::Accept(b"{}"), &mut wire).expect("encodes");
        codec::encode(&Frame::Ping(7), &mut wire).expect("encodes");
        let mut r = &wire[..];
        let (kind, payload, rest) = read_frame(&mut r).await.expect("read");
        assert_eq!((kind, payload.as_slice()), (Kind::Accept, &b"{}"[..]));
        assert_eq!(
            codec::decode(&rest).expect("ok"),
            Some((Frame::Ping(7), rest.len()))
        );
    }

    #[tokio::test]
    async fn anything_else_first_is_a_protocol_error() {
        let mut wire = Vec::new();
        codec::encode(&Frame::Ping(7), &mut wire).expect("encodes");
        let err = read_frame(&mut &wire[..]).await.expect_err("refused");
        assert_eq!(err.code, ErrorCode::Protocol);
        let err = read_frame(&mut &b"\x01\x00"[..])
            .await
            .expect_err("refused");
        assert_eq!(err.code, ErrorCode::PeerClosed);
    }
}
