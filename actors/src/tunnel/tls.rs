//! rustls configurations for both ends of the tunnel, built from the `tunnel` and
//! `security` sections.
//!
//! Both ends authenticate: the server requires a client certificate signed by
//! `ca_file` and the client checks the server's certificate against the same CA and
//! `server_name`. TLS 1.3 only unless `security.tls.min_version` is `"1.2"`; a
//! `security.crl_file` revokes certificates on both ends. The provider is aws-lc-rs,
//! whose AES-GCM is the fastest rustls offers on x86-64 and aarch64.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use serde_json::{json, Value};
use sssonector_config::{Security, TlsVersion, Tunnel};

use crate::error::ErrorCode;

/// Why TLS could not be set up, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{}: {message}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// A required file is not configured.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("tls setup: {0}")]
    Setup(String),
    /// A handshake failed.
    #[error("tls handshake: {message}")]
    Handshake {
        /// [`ErrorCode::TlsUntrusted`] or [`ErrorCode::TlsHandshake`].
        code: ErrorCode,
        /// What rustls said.
        message: String,
    },
}

impl TlsError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            TlsError::Handshake { code, .. } => *code,
            _ => ErrorCode::TlsConfig,
        }
    }

    /// Machine-readable details.
    pub fn details(&self) -> Value {
        match self {
            TlsError::File { path, .. } => json!({ "path": path }),
            _ => json!({}),
        }
    }

    /// Classifies a failed handshake: the peer's certificate was not trusted by us, or
    /// ours by the peer (`E_TLS_UNTRUSTED`), or anything else (`E_TLS_HANDSHAKE`).
    pub fn from_handshake(err: &std::io::Error) -> Self {
        let rustls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        let untrusted = match rustls_err {
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
                true
            }
            Some(rustls::Error::AlertReceived(alert)) => matches!(
                alert,
                // decrypt_error: a handshake signature did not verify (RFC 8446 §6.2).
                AlertDescription::UnknownCA
                    | AlertDescription::DecryptError
                    | AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateRequired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateExpired
                    | AlertDescription::AccessDenied
            ),
            _ => false,
        };
        TlsError::Handshake {
            code: if untrusted {
                ErrorCode::TlsUntrusted
            } else {
                ErrorCode::TlsHandshake
            },
            message: err.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, TlsError>;

/// A tunnel connection, TLS established: rustls's handshake, our record layer.
pub use super::record::Tls;

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of the TLS files, read once: the certificate watcher hashes exactly what
/// it builds from, so a file rewritten between the two cannot slip through unseen.
#[derive(Clone)]
pub struct Material {
    /// `tunnel.cert_file`: our certificate chain, leaf first.
    pub cert: Pem,
    /// `tunnel.key_file`: our private key.
    pub key: Pem,
    /// `tunnel.ca_file`: the CA bundle peers are verified against.
    pub ca: Pem,
    /// `security.crl_file` (PEM or DER), when set.
    pub crl: Option<Pem>,
}

/// One file's path and content.
#[derive(Clone)]
pub struct Pem {
    /// Where it was read from, for errors.
    pub path: PathBuf,
    /// What it held.
    pub bytes: Vec<u8>,
}

/// Never the bytes: the key file is among them.
impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.path.display(), self.bytes.len())
    }
}

impl Pem {
    /// Reads `path`.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` when it cannot be read.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }
}

impl Material {
    /// Reads the files `tunnel` and `security` name.
    ///
    /// # Errors
    /// `E_TLS_CONFIG` when one is not set or cannot be read.
    pub fn read(tunnel: &Tunnel, security: &Security) -> Result<Self> {
        let need = |p: &Option<PathBuf>, key: &'static str| {
            p.as_deref()
                .ok_or(TlsError::Missing(key))
                .and_then(Pem::read)
        };
        Ok(Self {
            cert: need(&tunnel.cert_file, "tunnel.cert_file")?,
            key: need(&tunnel.key_file, "tunnel.key_file")?,
            ca: need(&tunnel.ca_file, "tunnel.ca_file")?,
            crl: security.crl_file.as_deref().map(Pem::read).transpose()?,
        })
    }
}

/// The server's configuration: our certificate, client certificates required and
/// verified against `ca_file` (and `crl_file`).
///
/// # Errors
/// `E_TLS_CONFIG` when a file is missing, unreadable or does not fit.
pub fn server_config(tunnel: &Tunnel, security: &Security) -> Result<Arc<ServerConfig>> {
    server_config_from(&Material::read(tunnel, security)?, security)
}

/// [`server_config`] from material already read.
///
/// # Errors
/// `E_TLS_CONFIG` when the material does not parse or fit (e.g. a key that is not
/// the certificate's).
pub fn server_config_from(m: &Material, security: &Security) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let roots = ca_roots(&m.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls(m.crl.as_ref())?)
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let verifier = Arc::new(super::refusal::Generic(verifier));
    let (certs, key) = identity(m)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(security))
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    // The record layer takes the traffic keys over after the handshake.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The client's configuration: our certificate presented, the server's verified
/// against `ca_file` (and `crl_file`). The name checked is the caller's to pass when
/// connecting (`tunnel.server_name`).
///
/// # Errors
/// `E_TLS_CONFIG` when a file is missing, unreadable or does not fit.
pub fn client_config(tunnel: &Tunnel, security: &Security) -> Result<Arc<ClientConfig>> {
    client_config_from(&Material::read(tunnel, security)?, security)
}

/// [`client_config`] from material already read.
///
/// # Errors
/// `E_TLS_CONFIG` when the material does not parse or fit.
pub fn client_config_from(m: &Material, security: &Security) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(ca_roots(&m.ca)?, provider.clone())
        .with_crls(crls(m.crl.as_ref())?)
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let (certs, key) = identity(m)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(security))
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    // The record layer takes the traffic keys over after the handshake.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// TLS 1.3 alone (RFC 8446).
static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(security: &Security) -> &'static [&'static SupportedProtocolVersion] {
    match security.tls.min_version {
        TlsVersion::V1_3 => &TLS13_ONLY,
        TlsVersion::V1_2 => rustls::ALL_VERSIONS,
    }
}

fn identity(m: &Material) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = pem_certificates(&m.cert)?;
    let key =
        PrivateKeyDer::from_pem_slice(&m.key.bytes).map_err(|e| file_error(&m.key.path, e))?;
    Ok((certs, key))
}

fn ca_roots(ca: &Pem) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(ca)? {
        roots.add(cert).map_err(|e| TlsError::File {
            path: ca.path.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The certificates of the PEM file at `path`, in file order (the leaf first in a
/// chain).
///
/// # Errors
/// `E_TLS_CONFIG` when the file cannot be read or holds no certificate.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    pem_certificates(&Pem::read(path)?)
}

/// The certificates in `pem`, in file order.
///
/// # Errors
/// `E_TLS_CONFIG` when it holds no certificate or a damaged one.
pub fn pem_certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_error(&pem.path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: pem.path.clone(),
            message: "no PEM certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The revocation lists in `crl` (PEM or DER), none when no file is set.
///
/// # Errors
/// `E_TLS_CONFIG` when a PEM file is damaged.
pub fn crls(crl: Option<&Pem>) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let Some(pem) = crl else {
        return Ok(Vec::new());
    };
    if pem.bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&pem.bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| file_error(&pem.path, e))
    } else {
        Ok(vec![CertificateRevocationListDer::from(pem.bytes.clone())])
    }
}

fn file_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM item of the expected kind".into()
            }
            other => other.to_string(),
        },
    }
}
