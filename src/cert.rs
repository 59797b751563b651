//! `sssonector cert init`: a private CA and the certificates of one server and its
//! clients, ready for mutual TLS.
//!
//! All keys are ECDSA P-256 (fast handshakes, supported by every TLS 1.3 stack). The
//! CA may sign leaf certificates only (path length 0). The server certificate carries
//! its name as subject alternative name (DNS name or IP address) and serverAuth; each
//! client certificate carries its name as common name and DNS SAN, and clientAuth.
//! Private keys are written with mode 0600 from the first byte.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sssonector_actors::tunnel::tls::TlsError;
use sssonector_actors::Error;
use time::{Duration, OffsetDateTime};

use crate::cli::CertInitArgs;

/// Days the CA is valid: longer than any certificate it signs.
const CA_DAYS: u32 = 3650;
/// Backdating of `not_before`, so a peer whose clock is slightly behind accepts it.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Runs `cert init`.
pub fn init(args: &CertInitArgs) -> Result<(), Error> {
    let written = generate(
        &args.dir,
        &args.server_name,
        &args.clients,
        args.days,
        args.force,
    )?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the CA, server and client files into `dir` and returns their paths.
///
/// # Errors
/// `E_CERT_EXISTS` when a file exists and `force` is off; `E_IO` when writing fails;
/// `E_TLS_CONFIG` for a name that cannot go into a certificate.
pub fn generate(
    dir: &Path,
    server_name: &str,
    clients: &[String],
    days: u32,
    force: bool,
) -> Result<Vec<PathBuf>, Error> {
    for name in clients {
        let reserved = name == "ca" || name == "server";
        let safe = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if reserved || !safe || name.starts_with('.') {
            return Err(setup(format!(
                "client name {name:?} must be letters, digits, '-', '_' or '.', and not ca or server"
            )));
        }
    }
    let mut stems = vec!["ca".to_string(), "server".to_string()];
    stems.extend(clients.iter().cloned());
    let paths: Vec<(PathBuf, PathBuf)> = stems
        .iter()
        .map(|s| (dir.join(format!("{s}.crt")), dir.join(format!("{s}.key"))))
        .collect();
    if !force {
        if let Some(existing) = paths.iter().flat_map(|(c, k)| [c, k]).find(|p| p.exists()) {
            return Err(Error::CertExists(existing.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().map_err(rcgen_error)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn(&ca_name(&ca_key));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - CLOCK_SKEW;
    ca_params.not_after = now + Duration::days(i64::from(CA_DAYS.max(days)));
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rcgen_error)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut written = Vec::new();
    let mut emit = |(crt, key): &(PathBuf, PathBuf), cert_pem: String, key_pem: String| {
        write_file(crt, cert_pem.as_bytes(), 0o644)?;
        write_file(key, key_pem.as_bytes(), 0o600)?;
        written.extend([crt.clone(), key.clone()]);
        Ok::<_, Error>(())
    };
    emit(&paths[0], ca_cert.pem(), ca_key.serialize_pem())?;

    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(rcgen_error)?;
        params.distinguished_name = dn(name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(i64::from(days));
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (crt, key) = leaf(server_name, ExtendedKeyUsagePurpose::ServerAuth)?;
    emit(&paths[1], crt, key)?;
    for (name, files) in clients.iter().zip(&paths[2..]) {
        let (crt, key) = leaf(name, ExtendedKeyUsagePurpose::ClientAuth)?;
        emit(files, crt, key)?;
    }
    Ok(written)
}

/// A CA name unique to this CA: two deployments' CAs are told apart by name, and a
/// peer verifier meeting a foreign certificate reports an unknown issuer rather than a
/// bad signature from a same-named CA.
fn ca_name(key: &KeyPair) -> String {
    // The first bytes of the random EC point (after the 0x04 uncompressed marker).
    let id: String = key.public_key_raw()[1..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("SSSonector CA {id}")
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "SSSonector");
    dn
}

/// Writes `bytes` to `path` with `mode`; a key is never readable by others, not even
/// between creation and a later chmod.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // An overwritten file keeps its old mode: set it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn rcgen_error(e: rcgen::Error) -> Error {
    setup(e.to_string())
}

fn setup(message: String) -> Error {
    Error::Tls(TlsError::Setup(message))
}
