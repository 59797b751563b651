//! What a certificate or a revocation list says, for `ctl certs`, the audit trail
//! and the expiry metric: parsed once when a file is put in use, never on a
//! handshake. Pure: DER in, facts out; "days to expiry" takes `now` from the caller.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// One certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject distinguished name, e.g. `CN=sssonector-server`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names: DNS names and URIs (SPIFFE IDs among them).
    pub sans: Vec<String>,
    /// Serial number, upper-case hex without leading zeros, as `openssl x509 -serial`.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER, upper-case hex pairs joined by `:`, as
    /// `openssl x509 -fingerprint -sha256`.
    pub fingerprint: String,
}

impl CertFacts {
    /// The facts of the DER certificate `der`.
    ///
    /// # Errors
    /// What x509-parser says when `der` is no X.509 certificate.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(s) => sans.push(format!("DNS:{s}")),
                    GeneralName::URI(s) => sans.push(format!("URI:{s}")),
                    _ => {}
                }
            }
        }
        let raw = cert.raw_serial();
        let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        let mut serial: String = raw[first..].iter().map(|b| format!("{b:02X}")).collect();
        if serial.is_empty() {
            serial.push('0');
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            serial,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            fingerprint: fingerprint(der),
        })
    }

    /// Seconds left at `now` (Unix seconds), negative once expired.
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }

    /// Whole days left at `now`, negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        self.seconds_left(now).div_euclid(DAY)
    }

    /// The `ctl certs` row at `now`.
    pub fn to_json(&self, now: i64) -> Value {
        json!({
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": self.sans,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "days_to_expiry": self.days_left(now),
            "fingerprint_sha256": self.fingerprint,
        })
    }
}

/// One revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFacts {
    /// Issuer distinguished name.
    pub issuer: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, when given.
    pub next_update: Option<i64>,
    /// How many certificates it revokes.
    pub revoked: usize,
}

impl CrlFacts {
    /// The facts of the DER list `der`.
    ///
    /// # Errors
    /// What x509-parser says when `der` is no X.509 CRL.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| format!("not an X.509 CRL: {e}"))?;
        Ok(Self {
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().count(),
        })
    }

    /// The `ctl certs` row.
    pub fn to_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "this_update": rfc3339(self.this_update),
            "next_update": self.next_update.map(rfc3339),
            "revoked": self.revoked,
        })
    }
}

/// SHA-256 of `der` as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let sum = Sha256::digest(der);
    let pairs: Vec<String> = sum.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// `unix` seconds as an RFC 3339 UTC time, e.g. `2026-12-05T13:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(DAY), unix.rem_euclid(DAY));
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level
    // Date Algorithms", days_from_civil's inverse).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_475_599), "2026-12-05T12:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_generated_certificate_reads_back() {
        let mut params =
            rcgen::CertificateParams::new(vec!["tunnel.example".to_string()]).expect("valid name");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x1f, 0xa2]));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "unit");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let facts = CertFacts::parse(cert.der()).expect("parses");
        assert_eq!(facts.subject, "CN=unit");
        assert_eq!(facts.sans, vec!["DNS:tunnel.example".to_string()]);
        assert_eq!(facts.serial, "1FA2");
        assert_eq!(facts.fingerprint.len(), 32 * 3 - 1);
        let at = facts.not_after - 5 * DAY - 10;
        assert_eq!(facts.days_left(at), 5);
        assert_eq!(facts.days_left(facts.not_after + 1), -1);
        assert!(CertFacts::parse(b"garbage").is_err());
    }
}
