//! `sssonector cert init` output, checked by OpenSSL and by real rustls mutual-TLS
//! handshakes over loopback through the daemon's own TLS configuration code.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{cert_init, run};
use rustls::pki_types::ServerName;
use sssonector_actors::tunnel::tls::{client_config, server_config, TlsError};
use sssonector_actors::ErrorCode;
use sssonector_config::{Security, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn tunnel(dir: &Path, who: &str) -> Tunnel {
    Tunnel {
        cert_file: Some(dir.join(format!("{who}.crt"))),
        key_file: Some(dir.join(format!("{who}.key"))),
        ca_file: Some(dir.join("ca.crt")),
        ..Tunnel::default()
    }
}

/// Runs `openssl ARGS` in `dir` and returns its output.
fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (the test command installs it)")
}

#[test]
fn cert_init_output_verifies_with_openssl() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "tunnel.example", &["alice", "bob"]);
    for leaf in ["server.crt", "alice.crt", "bob.crt"] {
        let out = openssl(dir.path(), &["verify", "-CAfile", "ca.crt", leaf]);
        assert!(
            out.status.success(),
            "{leaf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = openssl(
        dir.path(),
        &["x509", "-noout", "-text", "-in", "server.crt"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("DNS:tunnel.example"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let alice = openssl(dir.path(), &["x509", "-noout", "-text", "-in", "alice.crt"]);
    assert!(String::from_utf8_lossy(&alice.stdout).contains("TLS Web Client Authentication"));
}

#[test]
fn cert_init_writes_keys_owner_only_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "10.0.0.1", &["c1"]);
    for key in ["ca.key", "server.key", "c1.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .expect("key exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let before = std::fs::read(dir.path().join("server.crt")).expect("written");
    let d = dir.path().to_str().expect("utf-8");
    let init = |extra: &[&str]| {
        let base = [
            "cert",
            "init",
            "--dir",
            d,
            "--server-name",
            "x",
            "--client",
            "c1",
        ];
        run(&[&base[..], extra].concat())
    };
    let again = init(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("E_CERT_EXISTS"));
    assert_eq!(
        std::fs::read(dir.path().join("server.crt")).expect("kept"),
        before
    );
    let forced = init(&["--force"]);
    assert!(forced.status.success());
    assert_ne!(
        std::fs::read(dir.path().join("server.crt")).expect("rewritten"),
        before
    );
}

#[test]
fn cert_init_refuses_client_names_that_are_not_file_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().expect("utf-8");
    for bad in ["../evil", "ca", "a b", ""] {
        let out = run(&[
            "cert",
            "init",
            "--dir",
            d,
            "--server-name",
            "s",
            "--client",
            bad,
        ]);
        assert!(!out.status.success(), "{bad:?} accepted");
    }
}

/// One handshake between a server using `server_dir` and a client using
/// `client_dir`, expecting `name` on the server certificate. Returns the server's and
/// the client's outcome as error codes (None = handshake and echo worked).
async fn handshake(
    server_dir: &Path,
    client_dir: &Path,
    client: &str,
    name: &str,
) -> (Option<ErrorCode>, Option<ErrorCode>) {
    let security = Security::default();
    let acceptor = TlsAcceptor::from(
        server_config(&tunnel(server_dir, "server"), &security).expect("server tls"),
    );
    let connector = TlsConnector::from(
        client_config(&tunnel(client_dir, client), &security).expect("client tls"),
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let (_, conn) = tls.get_ref();
                assert_eq!(
                    conn.protocol_version(),
                    Some(rustls::ProtocolVersion::TLSv1_3)
                );
                assert!(conn.peer_certificates().is_some_and(|c| !c.is_empty()));
                let mut buf = [0u8; 5];
                tls.read_exact(&mut buf).await.expect("read");
                tls.write_all(&buf).await.expect("echo");
                tls.flush().await.expect("flush");
                None
            }
            Err(e) => {
                eprintln!("DEBUG {e:?}");
                Some(TlsError::from_handshake(&e).code())
            }
        }
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_string()).expect("valid name");
    let client_result = match connector.connect(server_name, tcp).await {
        // In TLS 1.3 the server checks the client certificate after the client has
        // finished, so a refusal shows on the client's first read.
        Ok(mut tls) => {
            let mut buf = [0u8; 5];
            let echoed = async {
                tls.write_all(b"hello").await?;
                tls.flush().await?;
                tls.read_exact(&mut buf).await
            };
            match echoed.await {
                Ok(_) if &buf == b"hello" => None,
                Ok(_) => Some(ErrorCode::Internal),
                Err(e) => {
                    eprintln!("DEBUG {e:?}");
                    Some(TlsError::from_handshake(&e).code())
                }
            }
        }
        Err(e) => {
            eprintln!("DEBUG {e:?}");
            Some(TlsError::from_handshake(&e).code())
        }
    };
    (server.await.expect("server task"), client_result)
}

#[tokio::test]
async fn mutual_tls_handshake_succeeds_with_cert_init_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "tunnel.example", &["alice"]);
    let outcome = handshake(dir.path(), dir.path(), "alice", "tunnel.example").await;
    assert_eq!(outcome, (None, None));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().expect("temp dir");
    let theirs = tempfile::tempdir().expect("temp dir");
    cert_init(ours.path(), "tunnel.example", &["alice"]);
    cert_init(theirs.path(), "tunnel.example", &["mallory"]);
    // mallory trusts our CA (knows the public CA cert) but holds a certificate of hers.
    std::fs::copy(ours.path().join("ca.crt"), theirs.path().join("ca.crt")).expect("copy ca");
    let (server, client) = handshake(ours.path(), theirs.path(), "mallory", "tunnel.example").await;
    assert_eq!(server, Some(ErrorCode::TlsUntrusted));
    assert_eq!(client, Some(ErrorCode::TlsUntrusted));
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().expect("temp dir");
    let theirs = tempfile::tempdir().expect("temp dir");
    cert_init(ours.path(), "tunnel.example", &["alice"]);
    cert_init(theirs.path(), "tunnel.example", &["x"]);
    let (server, client) = handshake(theirs.path(), ours.path(), "alice", "tunnel.example").await;
    assert_eq!(client, Some(ErrorCode::TlsUntrusted));
    assert_eq!(
        server,
        Some(ErrorCode::TlsUntrusted),
        "the client's alert reaches the server"
    );
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    cert_init(dir.path(), "tunnel.example", &["alice"]);
    let (_, client) = handshake(dir.path(), dir.path(), "alice", "other.example").await;
    assert_eq!(client, Some(ErrorCode::TlsUntrusted));
}
