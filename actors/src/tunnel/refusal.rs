//! Why a peer was refused, told twice: a generic word to the peer, the full story to
//! the audit log.
//!
//! A refused peer learns only that it was refused (`E_ACCESS_DENIED`, "access
//! denied", the TLS alert `access_denied`): telling a stranger that its certificate
//! is revoked, expired or lacks clientAuth helps it probe the policy. The operator
//! gets the precise reason as a stable word ([`Reason`]) plus the certificate's
//! subject and serial in the `handshake_refused` / `session_refused` audit records.
//!
//! rustls answers a refused client certificate with an alert naming the cause
//! (`certificate_expired`, `certificate_revoked`, `unknown_ca`, ...). [`Generic`]
//! wraps the server's client-certificate verifier: it keeps what the real verifier
//! said and hands rustls `ApplicationVerificationFailure` instead, which rustls
//! sends as `access_denied`. What it kept goes to a per-thread slot that the
//! handshake task takes ([`take_refused`]) when `accept` fails: rustls calls the
//! verifier inside the same poll of the same task that then returns the error (the
//! handshake future does not yield in between), so the slot read on that thread is
//! that handshake's.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::handshake::CertSummary;

/// What the peer is told for any refusal of its identity.
pub const GENERIC: &str = "access denied";

/// A stable word for why a TLS handshake was refused, for the audit log and its
/// readers' scripts: never rename one.
pub type Reason = &'static str;

/// What the verifier refused, kept for the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The stable reason, e.g. `certificate_revoked`.
    pub reason: Reason,
    /// What rustls/webpki said, for people.
    pub detail: String,
    /// The refused certificate's subject and serial.
    pub cert: CertSummary,
}

thread_local! {
    static REFUSED: RefCell<Option<Refused>> = const { RefCell::new(None) };
}

/// What the verifier refused in the handshake this thread polled last, if it was
/// refused by the verifier (see the module docs for why this is that handshake's).
pub fn take_refused() -> Option<Refused> {
    REFUSED.with(|r| r.borrow_mut().take())
}

/// The stable word for a certificate rustls refused.
pub fn certificate_reason(e: &CertificateError) -> Reason {
    use CertificateError as C;
    match e {
        C::Expired | C::ExpiredContext { .. } => "certificate_expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate_not_yet_valid",
        C::Revoked => "certificate_revoked",
        C::UnknownIssuer => "unknown_ca",
        // The server checks client certificates, so the purpose missing is clientAuth.
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "certificate_no_client_auth",
        C::BadSignature => "certificate_bad_signature",
        C::UnknownRevocationStatus => "certificate_revocation_unknown",
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => "crl_expired",
        C::BadEncoding => "certificate_malformed",
        _ => "certificate_invalid",
    }
}

/// The stable word for a failed TLS handshake whose error rustls gave (`None`: not
/// a rustls error, e.g. the connection closed).
pub fn handshake_reason(e: Option<&rustls::Error>) -> Reason {
    match e {
        Some(rustls::Error::InvalidCertificate(c)) => certificate_reason(c),
        Some(rustls::Error::NoCertificatesPresented) => "no_client_certificate",
        Some(rustls::Error::AlertReceived(_)) => "alert_received",
        Some(rustls::Error::PeerIncompatible(_)) => "tls_incompatible",
        Some(_) => "tls_error",
        None => "connection_lost",
    }
}

/// A client-certificate verifier that refuses what `inner` refuses, keeps why for
/// [`take_refused`] and tells the peer only `access_denied`.
#[derive(Debug)]
pub struct Generic(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Generic {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                let reason = match &e {
                    rustls::Error::InvalidCertificate(c) => certificate_reason(c),
                    other => handshake_reason(Some(other)),
                };
                let refused = Refused {
                    reason,
                    detail: e.to_string(),
                    cert: CertSummary::of(end_entity),
                };
                REFUSED.with(|r| *r.borrow_mut() = Some(refused));
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_certificate_failure_has_its_word() {
        use CertificateError as C;
        assert_eq!(certificate_reason(&C::Expired), "certificate_expired");
        assert_eq!(certificate_reason(&C::Revoked), "certificate_revoked");
        assert_eq!(certificate_reason(&C::UnknownIssuer), "unknown_ca");
        assert_eq!(
            certificate_reason(&C::InvalidPurpose),
            "certificate_no_client_auth"
        );
        assert_eq!(
            handshake_reason(Some(&rustls::Error::NoCertificatesPresented)),
            "no_client_certificate"
        );
        assert_eq!(handshake_reason(None), "connection_lost");
    }

    #[test]
    fn the_slot_is_taken_once() {
        REFUSED.with(|r| {
            *r.borrow_mut() = Some(Refused {
                reason: "unknown_ca",
                detail: String::new(),
                cert: CertSummary::default(),
            })
        });
        assert_eq!(take_refused().map(|r| r.reason), Some("unknown_ca"));
        assert_eq!(take_refused(), None);
    }
}
