//! SSSonector's own TLS record layer for the tunnel's sessions.
//!
//! rustls does the handshake (its unbuffered API, [`client`] and [`server`]); then
//! `dangerous_into_kernel_connection` hands over the traffic keys, and records are
//! opened here with rustls's decrypter for the negotiated suite and sealed with
//! aws-lc's AEAD (the one under rustls's provider) directly:
//! - the reading half reads as much as the socket has into one buffer and opens each
//!   record in place: no 4 KiB reads, no deframer buffer grown and zero-filled around
//!   records, no copy of each record into a plaintext buffer and out again (rustls's
//!   buffered API does all of these, `benches/tls_records.rs`);
//! - the writing half seals what it is given into records of at most 16 KiB and
//!   writes them with one vectored write;
//! - each half owns its keys and sequence number, so the two run on two tasks with no
//!   lock between them. The [`KernelConnection`] is shared only for the rare events:
//!   a key update (either half), a session ticket (the client's reader).
//!
//! Key updates (TLS 1.3): the writer updates its keys before the suite's
//! confidentiality limit (AES-GCM: 2^24 records, minutes at 1 GB/s) and when the peer
//! asks; the reader follows the peer's. Session tickets that arrive after the
//! handshake go to rustls, so the next handshake can resume.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN,
};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::cipher::{InboundOpaqueMessage, MessageDecrypter};
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{
    AlertDescription, ClientConfig, ConnectionTrafficSecrets, ContentType, HandshakeKind,
    HandshakeType, ProtocolVersion, ServerConfig, SupportedCipherSuite,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::write_queue::WriteQueue;

/// TLS's largest record plaintext.
const MAX_FRAGMENT: usize = 16 * 1024;
/// A record's header: type, legacy version, length.
const HEADER: usize = 5;
/// The largest record on the wire that a peer may send (RFC 8446 5.2: 2^14 + 256).
const MAX_RECORD: usize = HEADER + MAX_FRAGMENT + 256;
/// What the reader asks the socket for at once.
const READ_AHEAD: usize = 64 * 1024;
/// The most a handshake may buffer before it is refused.
const MAX_HANDSHAKE_BUFFER: usize = 256 * 1024;
/// AEAD tag bytes (all three suites).
const TAG_LEN: usize = 16;
/// Records the writer seals before it writes them out.
const WRITE_BATCH: usize = 4;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// TLS said no (the alert, if any, went to the peer).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<HandshakeError> for io::Error {
    /// As tokio-rustls reports it: a TLS error inside `InvalidData`.
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, e),
            HandshakeError::Io(e) => e,
        }
    }
}

/// What a finished handshake learned.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The peer's certificate chain, leaf first.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The suite both sides chose.
    pub suite: SupportedCipherSuite,
    /// TLS 1.3 or 1.2.
    pub version: ProtocolVersion,
    /// Whether a ticket resumed an earlier session.
    pub resumed: bool,
}

/// A tunnel connection after its TLS handshake: [`AsyncRead`] and [`AsyncWrite`] of
/// application data, and [`Tls::into_split`] into the two halves.
pub struct Tls {
    facts: Facts,
    reader: RecordReader,
    writer: RecordWriter,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// The client's handshake on `tcp` to `name`.
///
/// # Errors
/// What TLS or the socket said; a fatal alert has gone to the server.
pub async fn client(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut tcp: TcpStream,
) -> Result<Tls, HandshakeError> {
    let mut conn = UnbufferedClientConnection::new(config, name)?;
    let done = drive(&mut conn, &mut tcp).await?;
    let facts = facts(&conn)?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    Tls::new(tcp, facts, Kernel::Client(kernel), secrets, done)
}

/// The server's handshake on `tcp`.
///
/// # Errors
/// What TLS or the socket said; a fatal alert has gone to the client.
pub async fn server(config: Arc<ServerConfig>, mut tcp: TcpStream) -> Result<Tls, HandshakeError> {
    let mut conn = UnbufferedServerConnection::new(config)?;
    let done = drive(&mut conn, &mut tcp).await?;
    let facts = facts(&conn)?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    Tls::new(tcp, facts, Kernel::Server(kernel), secrets, done)
}

fn facts<D>(conn: &UnbufferedConnectionCommon<D>) -> Result<Facts, rustls::Error> {
    Ok(Facts {
        peer_certificates: conn.peer_certificates().unwrap_or_default().to_vec(),
        suite: conn
            .negotiated_cipher_suite()
            .ok_or(rustls::Error::HandshakeNotComplete)?,
        version: conn
            .protocol_version()
            .ok_or(rustls::Error::HandshakeNotComplete)?,
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    })
}

/// The two sides' unbuffered connections, as [`drive`] needs them.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// What a handshake left: ciphertext read past it, plaintext rustls already opened.
struct Done {
    leftover: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Runs the handshake until rustls may send application data. On an error, sends
/// the alert rustls queued before returning it.
async fn drive<C: Unbuffered>(conn: &mut C, tcp: &mut TcpStream) -> Result<Done, HandshakeError> {
    let mut incoming = vec![0_u8; MAX_RECORD];
    let mut used = 0;
    let mut outgoing = vec![0_u8; MAX_RECORD];
    let mut out = 0;
    let mut plaintext = Vec::new();
    let mut failed: Option<rustls::Error> = None;
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut incoming[..used]);
        let mut read_more = false;
        let mut transmit = None;
        let mut finished = false;
        let mut new_error = false;
        match state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => loop {
                match e.encode(&mut outgoing[out..]) {
                    Ok(n) => {
                        out += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.resize(out + required_size, 0);
                    }
                    Err(e) => return Err(io::Error::other(e.to_string()).into()),
                }
            },
            Ok(ConnectionState::TransmitTlsData(t)) => transmit = Some(t),
            Ok(ConnectionState::BlockedHandshake) => read_more = true,
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(record) = r.next_record() {
                    plaintext.extend_from_slice(record?.payload);
                }
            }
            Ok(ConnectionState::WriteTraffic(_)) => finished = true,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            }
            Ok(_) => return Err(io::Error::other("unexpected TLS state in the handshake").into()),
            Err(e) => {
                new_error = failed.is_none();
                failed.get_or_insert(e);
            }
        }
        if discard > 0 {
            incoming.copy_within(discard..used, 0);
            used -= discard;
        }
        if let Some(e) = &failed {
            // One more round hands over the alert rustls queued (it comes before any
            // input is read again: the bytes that failed would fail again, and rustls
            // must not send a second alert). Then it goes out and the error stands.
            if !new_error {
                let _ = tcp.write_all(&outgoing[..out]).await;
                return Err(e.clone().into());
            }
            continue;
        }
        if let Some(t) = transmit {
            tcp.write_all(&outgoing[..out]).await?;
            out = 0;
            t.done();
        }
        if finished {
            if out > 0 {
                tcp.write_all(&outgoing[..out]).await?;
            }
            incoming.truncate(used);
            return Ok(Done {
                leftover: incoming,
                plaintext,
            });
        }
        if read_more {
            if used == incoming.len() {
                // rustls refuses handshake messages over 64 KiB, so this stays small.
                if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                    return Err(
                        io::Error::new(io::ErrorKind::InvalidData, "handshake too long").into(),
                    );
                }
                incoming.resize(incoming.len() * 2, 0);
            }
            let n = tcp.read(&mut incoming[used..]).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            used += n;
        }
    }
}

/// rustls's handle on a converted connection: key updates, session tickets.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Self::Client(k) => k.update_tx_secret(),
            Self::Server(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Self::Client(k) => k.update_rx_secret(),
            Self::Server(k) => k.update_rx_secret(),
        }
    }

    fn ticket(&mut self, payload: &[u8]) -> Result<(), rustls::Error> {
        match self {
            Self::Client(k) => k.handle_new_session_ticket(payload),
            Self::Server(_) => Err(rustls::Error::InappropriateHandshakeMessage {
                expect_types: vec![HandshakeType::KeyUpdate],
                got_type: HandshakeType::NewSessionTicket,
            }),
        }
    }
}

/// What the two halves share.
struct Shared {
    kernel: Mutex<Kernel>,
    /// The peer asked for a key update: the writer sends ours next.
    update_asked: AtomicBool,
}

impl Tls {
    fn new(
        tcp: TcpStream,
        facts: Facts,
        kernel: Kernel,
        secrets: rustls::ExtractedSecrets,
        done: Done,
    ) -> Result<Self, HandshakeError> {
        let sealer = Sealer::new(facts.suite, facts.version, secrets.tx)?;
        let opener = Opener::new(facts.suite, secrets.rx)?;
        let shared = Arc::new(Shared {
            kernel: Mutex::new(kernel),
            update_asked: AtomicBool::new(false),
        });
        let (r, w) = tcp.into_split();
        let mut buf = done.leftover;
        let end = buf.len();
        buf.resize(end.max(READ_AHEAD + MAX_RECORD), 0);
        Ok(Self {
            facts,
            reader: RecordReader {
                tcp: r,
                opener,
                shared: shared.clone(),
                buf,
                start: 0,
                end,
                early: done.plaintext,
                early_at: 0,
                plain: 0..0,
                eof: false,
            },
            writer: RecordWriter {
                tcp: w,
                sealer,
                shared,
                pending: WriteQueue::default(),
                spare: Vec::new(),
                updates: 0,
                closed: false,
            },
        })
    }

    /// What the handshake learned.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The socket under the records.
    pub fn tcp(&self) -> &TcpStream {
        self.reader.tcp.as_ref()
    }

    /// The reading and the writing half, each on its own.
    pub fn into_split(self) -> (RecordReader, RecordWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, out)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }
}

fn key_iv(
    secrets: ConnectionTrafficSecrets,
) -> Result<(rustls::crypto::cipher::AeadKey, rustls::crypto::cipher::Iv), rustls::Error> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(rustls::Error::General("unsupported traffic secrets".into())),
    }
}

fn decrypter(
    suite: SupportedCipherSuite,
    secrets: ConnectionTrafficSecrets,
) -> Result<Box<dyn MessageDecrypter>, rustls::Error> {
    let (key, iv) = key_iv(secrets)?;
    Ok(match suite {
        SupportedCipherSuite::Tls13(s) => s.aead_alg.decrypter(key, iv),
        SupportedCipherSuite::Tls12(s) => {
            let fixed = s.aead_alg.key_block_shape().fixed_iv_len;
            s.aead_alg.decrypter(key, &iv.as_ref()[..fixed])
        }
    })
}

/// One direction's sealing state. Sealed here with aws-lc's AEAD directly, not with
/// rustls's encrypters: those use aws-lc's TLS sealing keys, which take the first
/// sequence number they see as zero, and a session's first record after the
/// handshake may have another (a server's session tickets went first).
struct Sealer {
    tls13: bool,
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    /// TLS 1.2 with AES-GCM: the nonce's last 8 bytes travel in each record.
    explicit: bool,
    seq: u64,
    /// Records before the keys must change (TLS 1.3), or the connection end (1.2).
    limit: u64,
}

impl Sealer {
    fn new(
        suite: SupportedCipherSuite,
        version: ProtocolVersion,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<Self, rustls::Error> {
        let common = match suite {
            SupportedCipherSuite::Tls13(s) => &s.common,
            SupportedCipherSuite::Tls12(s) => &s.common,
        };
        let tls13 = version == ProtocolVersion::TLSv1_3;
        let (key, iv, gcm) = aead_key(secrets)?;
        Ok(Self {
            tls13,
            key,
            iv,
            explicit: !tls13 && gcm,
            seq,
            // Well before the limit, so the update is out before the peer counts to it.
            limit: common.confidentiality_limit.saturating_sub(1 << 16),
        })
    }

    /// Seals bytes `start..end` of `chunks` taken as one run (at most
    /// [`MAX_FRAGMENT`]) as one record of type `typ`; `out` becomes the record.
    fn seal(
        &mut self,
        typ: ContentType,
        chunks: &[&[u8]],
        (start, end): (usize, usize),
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        if self.seq == u64::MAX {
            return Err(rustls::Error::EncryptError);
        }
        let plain_len = end - start;
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        let explicit = if self.explicit { 8 } else { 0 };
        let body = explicit + plain_len + usize::from(self.tls13) + TAG_LEN;
        let outer = if self.tls13 {
            ContentType::ApplicationData
        } else {
            typ
        };
        let [hi, lo] = u16::try_from(body)
            .map_err(|_| rustls::Error::EncryptError)?
            .to_be_bytes();
        let header = [u8::from(outer), 3, 3, hi, lo];
        // Not cleared first: a reused buffer of the same size is not zeroed again,
        // every byte of it is written below.
        out.resize(HEADER + body, 0);
        out[..HEADER].copy_from_slice(&header);
        let from = HEADER + explicit;
        if self.explicit {
            out[HEADER..from].copy_from_slice(&nonce[NONCE_LEN - 8..]);
        }
        let (text, tail) = out[from..].split_at_mut(plain_len);
        // TLS 1.3 (RFC 8446 5.2): the real type after the data, sealed with it.
        let inner = [u8::from(typ)];
        let extra: &[u8] = if self.tls13 { &inner } else { &[] };
        let mut aad = [0_u8; 13];
        let aad_len = if self.tls13 {
            // The header as associated data.
            aad[..HEADER].copy_from_slice(&header);
            HEADER
        } else {
            // RFC 5246 6.2.3.3: sequence number, type, version and plaintext length.
            aad[..8].copy_from_slice(&self.seq.to_be_bytes());
            aad[8] = u8::from(typ);
            aad[9..11].copy_from_slice(&[3, 3]);
            aad[11..].copy_from_slice(&[(plain_len >> 8) as u8, plain_len as u8]);
            aad.len()
        };
        let aad = Aad::from(&aad[..aad_len]);
        let nonce = Nonce::assume_unique_for_key(nonce);
        let mut run = pieces(chunks, start, end);
        let sealed = match (run.next(), run.next()) {
            // The usual case (a record cut from one chunk): sealed straight from the
            // chunk into the record, no copy of the plaintext first.
            (Some(plain), None) => self
                .key
                .seal_out_of_place_scatter(nonce, aad, plain, text, extra, tail),
            _ => {
                let mut put = 0;
                for piece in pieces(chunks, start, end) {
                    text[put..put + piece.len()].copy_from_slice(piece);
                    put += piece.len();
                }
                self.key
                    .seal_in_place_scatter(nonce, aad, text, extra, tail)
            }
        };
        sealed.map_err(|_| rustls::Error::EncryptError)?;
        self.seq += 1;
        Ok(())
    }

    fn due(&self) -> bool {
        self.seq >= self.limit
    }

    fn rekey(
        &mut self,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<(), rustls::Error> {
        let (key, iv, _) = aead_key(secrets)?;
        self.key = key;
        self.iv = iv;
        self.seq = seq;
        Ok(())
    }
}

/// The AEAD key and IV from rustls's traffic secrets, and whether it is AES-GCM.
fn aead_key(
    secrets: ConnectionTrafficSecrets,
) -> Result<(LessSafeKey, [u8; NONCE_LEN], bool), rustls::Error> {
    let (alg, gcm) = match &secrets {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => (&AES_128_GCM, true),
        ConnectionTrafficSecrets::Aes256Gcm { .. } => (&AES_256_GCM, true),
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => (&CHACHA20_POLY1305, false),
        _ => return Err(rustls::Error::General("unsupported traffic secrets".into())),
    };
    let (key, iv) = key_iv(secrets)?;
    let key = UnboundKey::new(alg, key.as_ref())
        .map_err(|_| rustls::Error::General("bad traffic key".into()))?;
    let iv = <[u8; NONCE_LEN]>::try_from(iv.as_ref())
        .map_err(|_| rustls::Error::General("bad traffic IV".into()))?;
    Ok((LessSafeKey::new(key), iv, gcm))
}

/// One direction's opening state.
struct Opener {
    suite: SupportedCipherSuite,
    dec: Box<dyn MessageDecrypter>,
    seq: u64,
}

impl Opener {
    fn new(
        suite: SupportedCipherSuite,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            suite,
            dec: decrypter(suite, secrets)?,
            seq,
        })
    }

    fn rekey(
        &mut self,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<(), rustls::Error> {
        self.dec = decrypter(self.suite, secrets)?;
        self.seq = seq;
        Ok(())
    }
}

/// A record's outer header, if `buf` holds a whole record: (type, record length).
fn whole_record(buf: &[u8]) -> io::Result<Option<(ContentType, usize)>> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len > MAX_RECORD - HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS record too long",
        ));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    Ok(Some((ContentType::from(buf[0]), HEADER + len)))
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The pieces of `chunks`, each a non-empty part of one chunk, that make up bytes
/// `start..end` of them taken as one run.
fn pieces<'a, 'c: 'a>(
    chunks: &'a [&'c [u8]],
    start: usize,
    end: usize,
) -> impl Iterator<Item = &'c [u8]> + 'a {
    let mut at = 0;
    chunks.iter().filter_map(move |&c| {
        let base = at;
        at += c.len();
        let (lo, hi) = (start.max(base), end.min(at));
        (lo < hi).then(|| &c[lo - base..hi - base])
    })
}

/// The reading half: [`AsyncRead`] of the peer's application data.
pub struct RecordReader {
    tcp: OwnedReadHalf,
    opener: Opener,
    shared: Arc<Shared>,
    /// Ciphertext in `start..end`; opened plaintext in `plain` (before `start`).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Plaintext rustls opened during the handshake, served first.
    early: Vec<u8>,
    early_at: usize,
    plain: std::ops::Range<usize>,
    eof: bool,
}

impl RecordReader {
    /// Opens the next whole record in the buffer, in place. `Ok(false)`: none yet.
    fn open_next(&mut self) -> io::Result<bool> {
        let Some((typ, len)) = whole_record(&self.buf[self.start..self.end])? else {
            return Ok(false);
        };
        let at = self.start;
        self.start += len;
        let base = self.buf.as_ptr() as usize;
        let record = &mut self.buf[at..at + len];
        let version = ProtocolVersion::from(u16::from_be_bytes([record[1], record[2]]));
        if typ == ContentType::ChangeCipherSpec {
            // Only during a handshake (RFC 8446 5; RFC 5246 7.1): rustls took those.
            return Err(invalid("change_cipher_spec after the handshake"));
        }
        let msg = InboundOpaqueMessage::new(typ, version, &mut record[HEADER..]);
        let plain = self
            .opener
            .dec
            .decrypt(msg, self.opener.seq)
            .map_err(invalid)?;
        self.opener.seq += 1;
        let typ = plain.typ;
        let body = plain.payload;
        match typ {
            ContentType::ApplicationData => {
                let off = body.as_ptr() as usize - base;
                self.plain = off..off + body.len();
            }
            ContentType::Alert => {
                if body.len() == 2
                    && AlertDescription::from(body[1]) == AlertDescription::CloseNotify
                {
                    self.eof = true;
                } else {
                    let what = body.get(1).map_or(AlertDescription::DecodeError, |b| {
                        AlertDescription::from(*b)
                    });
                    return Err(invalid(format!("peer sent alert {what:?}")));
                }
            }
            ContentType::Handshake => {
                let body = body.to_vec();
                self.handshake(&body)?;
            }
            other => return Err(invalid(format!("unexpected TLS record type {other:?}"))),
        }
        Ok(true)
    }

    /// Post-handshake messages: session tickets and key updates, each whole in its
    /// record (rustls sends them so; one split over records is refused).
    fn handshake(&mut self, mut msgs: &[u8]) -> io::Result<()> {
        while !msgs.is_empty() {
            let [typ, a, b, c, rest @ ..] = msgs else {
                return Err(invalid("truncated handshake message"));
            };
            let len = usize::try_from(u32::from_be_bytes([0, *a, *b, *c])).map_err(invalid)?;
            if rest.len() < len {
                return Err(invalid("truncated handshake message"));
            }
            let (body, next) = rest.split_at(len);
            msgs = next;
            let mut kernel = self.shared.kernel.lock().map_err(|_| invalid("poisoned"))?;
            match HandshakeType::from(*typ) {
                HandshakeType::NewSessionTicket => kernel.ticket(body).map_err(invalid)?,
                HandshakeType::KeyUpdate => {
                    let asked = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(invalid("bad key update")),
                    };
                    let next = kernel.update_rx().map_err(invalid)?;
                    self.opener.rekey(next).map_err(invalid)?;
                    if asked {
                        self.shared.update_asked.store(true, Ordering::Release);
                    }
                }
                other => return Err(invalid(format!("unexpected handshake message {other:?}"))),
            }
        }
        Ok(())
    }
}

impl AsyncRead for RecordReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.early_at < this.early.len() {
            let n = out.remaining().min(this.early.len() - this.early_at);
            out.put_slice(&this.early[this.early_at..this.early_at + n]);
            this.early_at += n;
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plain.is_empty() {
                let n = out.remaining().min(this.plain.len());
                out.put_slice(&this.buf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.open_next()? {
                continue;
            }
            // Room for more: move the partial record to the front.
            if this.start > 0 {
                this.buf.copy_within(this.start..this.end, 0);
                this.end -= this.start;
                this.start = 0;
            }
            let mut rb = ReadBuf::new(&mut this.buf[this.end..]);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed without close_notify",
                )));
            }
            this.end += n;
        }
    }
}

/// The writing half: [`AsyncWrite`] of our application data.
pub struct RecordWriter {
    tcp: OwnedWriteHalf,
    sealer: Sealer,
    shared: Arc<Shared>,
    /// Sealed records not yet written.
    pending: WriteQueue<Vec<u8>>,
    /// Written records' buffers, for the next ones.
    spare: Vec<Vec<u8>>,
    /// Key updates sent.
    updates: u64,
    closed: bool,
}

impl RecordWriter {
    /// Seals one record into a reused buffer and queues it.
    fn queue(
        &mut self,
        typ: ContentType,
        chunks: &[&[u8]],
        range: (usize, usize),
    ) -> io::Result<()> {
        let mut record = self.spare.pop().unwrap_or_default();
        self.sealer
            .seal(typ, chunks, range, &mut record)
            .map_err(invalid)?;
        self.pending.push(record);
        Ok(())
    }

    /// Writes out every pending record.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH + 2];
            let n = self.pending.slices(&mut slices);
            let wrote = ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, &slices[..n]))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let spare = &mut self.spare;
            self.pending.advance(wrote, |done| spare.push(done));
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a key update and switches keys, when due or asked (TLS 1.3).
    fn rekey_if_due(&mut self) -> io::Result<()> {
        if !self.sealer.tls13 {
            return if self.sealer.due() {
                Err(io::Error::other("TLS 1.2 session reached its record limit"))
            } else {
                Ok(())
            };
        }
        let asked = self.shared.update_asked.swap(false, Ordering::AcqRel);
        if !(asked || self.sealer.due()) {
            return Ok(());
        }
        // KeyUpdate(update_not_requested), sealed under the old keys.
        let msg = [u8::from(HandshakeType::KeyUpdate), 0, 0, 1, 0];
        self.queue(ContentType::Handshake, &[&msg], (0, msg.len()))?;
        let next = self
            .shared
            .kernel
            .lock()
            .map_err(|_| invalid("poisoned"))?
            .update_tx()
            .map_err(invalid)?;
        self.updates += 1;
        self.sealer.rekey(next).map_err(invalid)
    }

    /// Key updates this side has sent (TLS 1.3).
    pub fn key_updates(&self) -> u64 {
        self.updates
    }

    #[cfg(test)]
    fn rekey_every(&mut self, records: u64) {
        self.sealer.limit = self.sealer.seq + records;
    }
}

impl AsyncWrite for RecordWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Takes up to four records' worth once the earlier ones are out.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_drain(cx))?;
        this.rekey_if_due()?;
        let mut chunks = [&[][..]; 64];
        let mut n = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()).take(chunks.len()) {
            chunks[n] = b;
            n += 1;
        }
        let chunks = &chunks[..n];
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let take = total.min(WRITE_BATCH * MAX_FRAGMENT);
        let mut at = 0;
        while at < take {
            let end = (at + MAX_FRAGMENT).min(take);
            this.queue(ContentType::ApplicationData, chunks, (at, end))?;
            at = end;
        }
        // Start writing now; what the socket does not take goes with the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    /// Says close_notify, then closes the socket's sending side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.closed = true;
            // Level warning (1), as close_notify is sent.
            let alert = [1, u8::from(AlertDescription::CloseNotify)];
            this.queue(ContentType::Alert, &[&alert], (0, alert.len()))?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! Interop with rustls's own buffered connections (tokio-rustls) over loopback TCP:
    //! the peer checks our records, we check its, in every suite and both versions.

    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, SupportedProtocolVersion};
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const LIMIT: Duration = Duration::from_secs(20);

    #[test]
    fn a_run_is_cut_into_the_parts_of_the_chunks_it_covers() {
        let chunks: [&[u8]; 4] = [b"abc", b"", b"defg", b"hi"];
        let run = |start, end| pieces(&chunks, start, end).collect::<Vec<_>>();
        assert_eq!(run(1, 3), [&b"bc"[..]]);
        assert_eq!(run(3, 7), [&b"defg"[..]]);
        assert_eq!(run(2, 8), [&b"c"[..], b"defg", b"h"]);
        assert_eq!(run(0, 9), [&b"abc"[..], b"defg", b"hi"]);
        assert!(run(4, 4).is_empty());
    }

    struct Pki {
        roots: Arc<RootCertStore>,
        server: (Vec<CertificateDer<'static>>, Vec<u8>),
        client: (Vec<CertificateDer<'static>>, Vec<u8>),
    }

    /// A CA named `ca` with a server and a client certificate.
    fn pki_named(ca_name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, &ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_string()])
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("leaf");
            (vec![cert.der().clone()], key.serialize_der())
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        Pki {
            roots: Arc::new(roots),
            server: leaf("server.test"),
            client: leaf("client.test"),
        }
    }

    fn pki() -> Pki {
        pki_named("test CA")
    }

    fn key(der: &[u8]) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
    }

    fn provider(
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> Arc<rustls::crypto::CryptoProvider> {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(s) = suite {
            p.cipher_suites = vec![s];
        }
        Arc::new(p)
    }

    fn configs(
        pki: &Pki,
        suite: Option<rustls::SupportedCipherSuite>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(pki.roots.clone(), provider(None))
                .build()
                .expect("verifier");
        let mut server = ServerConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(pki.server.0.clone(), key(&pki.server.1))
            .expect("server");
        server.enable_secret_extraction = true;
        let mut client = ClientConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(pki.roots.clone())
            .with_client_auth_cert(pki.client.0.clone(), key(&pki.client.1))
            .expect("client");
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from("server.test").expect("name")
    }

    /// Bytes that say where they are, so a lost or doubled record shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Writes `data` in pieces of varied size, each as three slices (so that records
    /// are cut from one slice and across slices), then closes.
    async fn send(mut w: impl AsyncWrite + Unpin, data: &[u8]) {
        let mut at = 0;
        let mut piece = 1;
        while at < data.len() {
            let end = (at + piece).min(data.len());
            let (a, rest) = data[at..end].split_at((end - at) / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            let slices = [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)];
            at += w.write_vectored(&slices).await.expect("write");
            piece = piece * 7 % 70_001 + 1;
        }
        w.shutdown().await.expect("shutdown");
    }

    async fn receive(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        got
    }

    /// Our client against a rustls server: `len` bytes each way, closed cleanly both ways.
    async fn ours_to_rustls(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        len: usize,
    ) -> Facts {
        ours_to_rustls_keyed(server, client, len, None, false)
            .await
            .0
    }

    /// Like [`ours_to_rustls`]; `rekey_every`: our writer updates its keys every so
    /// many records; `peer_asks`: the rustls side asks for an update first. Also
    /// answers how many key updates we sent.
    async fn ours_to_rustls_keyed(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        len: usize,
        rekey_every: Option<u64>,
        peer_asks: bool,
    ) -> (Facts, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(server);
        let peer = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("rustls handshake");
            let data = pattern(len, 2);
            let mut from = 0;
            if peer_asks {
                // After some data, so our side has long taken over from rustls.
                from = 100_000;
                tls.write_all(&data[..from]).await.expect("write");
                tls.get_mut().1.refresh_traffic_keys().expect("key update");
            }
            let (r, w) = tokio::io::split(tls);
            let (got, ()) = tokio::join!(receive(r), send(w, &data[from..]));
            got
        });
        let tcp = TcpStream::connect(at).await.expect("connect");
        let session = super::client(client, name(), tcp)
            .await
            .expect("our handshake");
        let facts = session.facts().clone();
        let (mut r, mut w) = session.into_split();
        if let Some(n) = rekey_every {
            w.rekey_every(n);
        }
        // With the peer's request read before we write, our first write answers it.
        let mut got = vec![0; if peer_asks { 200_000 } else { 0 }];
        r.read_exact(&mut got).await.expect("read");
        let data = pattern(len, 1);
        let (rest, ()) = tokio::join!(receive(r), send(&mut w, &data));
        got.extend(rest);
        assert!(got == pattern(len, 2), "we read what rustls sent");
        assert!(
            peer.await.expect("peer") == pattern(len, 1),
            "rustls read what we sent"
        );
        (facts, w.key_updates())
    }

    /// Our server against a rustls client.
    async fn rustls_to_ours(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        len: usize,
    ) -> Facts {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let connector = TlsConnector::from(client);
        let peer = tokio::spawn(async move {
            let tcp = TcpStream::connect(at).await.expect("connect");
            let tls = connector
                .connect(name(), tcp)
                .await
                .expect("rustls handshake");
            let (r, w) = tokio::io::split(tls);
            let data = pattern(len, 3);
            let (got, ()) = tokio::join!(receive(r), send(w, &data));
            got
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let session = super::server(server, tcp).await.expect("our handshake");
        let facts = session.facts().clone();
        assert_eq!(facts.peer_certificates.len(), 1, "the client's certificate");
        let (r, w) = session.into_split();
        let data = pattern(len, 4);
        let (got, ()) = tokio::join!(receive(r), send(w, &data));
        assert!(got == pattern(len, 3), "we read what rustls sent");
        assert!(
            peer.await.expect("peer") == pattern(len, 4),
            "rustls read what we sent"
        );
        facts
    }

    #[tokio::test]
    async fn records_interoperate_with_rustls_in_every_suite_and_version() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let pki = pki();
        let tls13 = [&rustls::version::TLS13];
        let tls12 = [&rustls::version::TLS12];
        let cases: [(
            rustls::SupportedCipherSuite,
            &[&'static SupportedProtocolVersion],
        ); 5] = [
            (cs::TLS13_AES_256_GCM_SHA384, &tls13),
            (cs::TLS13_AES_128_GCM_SHA256, &tls13),
            (cs::TLS13_CHACHA20_POLY1305_SHA256, &tls13),
            (cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, &tls12),
            (cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, &tls12),
        ];
        for (suite, versions) in cases {
            eprintln!("suite {:?}", suite.suite());
            let (server, client) = configs(&pki, Some(suite), versions);
            let len = 3 * 1024 * 1024 + 17;
            let f =
                tokio::time::timeout(LIMIT, ours_to_rustls(server.clone(), client.clone(), len))
                    .await
                    .expect("in time");
            assert_eq!(f.suite.suite(), suite.suite());
            let f = tokio::time::timeout(LIMIT, rustls_to_ours(server, client, len))
                .await
                .expect("in time");
            assert_eq!(f.suite.suite(), suite.suite());
        }
    }

    #[tokio::test]
    async fn keys_update_before_the_limit_and_when_the_peer_asks() {
        let pki = pki();
        let (server, client) = configs(&pki, None, &[&rustls::version::TLS13]);
        let len = 2 * 1024 * 1024;
        // Every 10 records: about 13 updates in 2 MiB, each followed by rustls.
        let (_, sent) =
            ours_to_rustls_keyed(server.clone(), client.clone(), len, Some(10), false).await;
        assert!(sent >= 12, "{sent} key updates");
        // Never due here: the one update answers the peer's request.
        let (_, sent) = ours_to_rustls_keyed(server, client, len, None, true).await;
        assert_eq!(sent, 1, "answered the peer's key update");
    }

    #[tokio::test]
    async fn a_refused_handshake_sends_its_alert() {
        let (pki, stranger) = (pki(), pki_named("another CA"));
        let (server, _) = configs(&pki, None, &[&rustls::version::TLS13]);
        // A client without a certificate: our server refuses, the client hears why.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let anonymous = ClientConfig::builder_with_provider(provider(None))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(pki.roots.clone())
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(anonymous));
        let peer = tokio::spawn(async move {
            let tcp = TcpStream::connect(at).await.expect("connect");
            // TLS 1.3: the client finishes first and hears the refusal on its first read.
            let mut tls = connector
                .connect(name(), tcp)
                .await
                .expect("client side done");
            let mut byte = [0_u8; 1];
            tls.read(&mut byte).await.expect_err("refused")
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let err = super::server(server.clone(), tcp)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                HandshakeError::Tls(rustls::Error::NoCertificatesPresented)
            ),
            "{err}"
        );
        let heard = peer.await.expect("peer").to_string();
        assert!(heard.contains("CertificateRequired"), "{heard}");

        // Our client that trusts another CA: the rustls server hears UnknownCA.
        let (_, doubting) = configs(&stranger, None, &[&rustls::version::TLS13]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(server);
        let peer = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            acceptor.accept(tcp).await.expect_err("refused").to_string()
        });
        let tcp = TcpStream::connect(at).await.expect("connect");
        let err = super::client(doubting, name(), tcp)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                HandshakeError::Tls(rustls::Error::InvalidCertificate(_))
            ),
            "{err}"
        );
        let heard = peer.await.expect("peer");
        assert!(heard.contains("UnknownCA"), "{heard}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_refused_with_one_alert() {
        let pki = pki();
        let (server, _) = configs(&pki, None, &[&rustls::version::TLS13]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(at).await.expect("connect");
            // No TLS record starts with 0xff; then more junk after it.
            let mut junk = pattern(64 * 1024, 9);
            junk[0] = 0xff;
            let _ = tcp.write_all(&junk).await;
            let mut heard = Vec::new();
            let _ = tcp.read_to_end(&mut heard).await;
            heard
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let err = tokio::time::timeout(LIMIT, super::server(server, tcp))
            .await
            .expect("in time")
            .expect_err("refused");
        assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
        // One plaintext alert record: fatal (2), decode_error (50).
        assert_eq!(peer.await.expect("peer"), [21, 3, 3, 0, 2, 2, 50]);
    }

    /// A rustls server on loopback that sends `pieces` × 40,000 bytes, 100 ms apart,
    /// then holds the connection open.
    async fn rustls_sender(config: Arc<ServerConfig>, pieces: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("handshake");
            for _ in 0..pieces {
                let _ = tls.write_all(&pattern(40_000, 6)).await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(LIMIT).await;
        });
        at
    }

    /// A relay on loopback to `server` that passes the server's records to the client
    /// whole, each after `edit` (bytes passed before it, the record with its header).
    async fn relay(
        server: std::net::SocketAddr,
        mut edit: impl FnMut(usize, &mut Vec<u8>) + Send + 'static,
    ) -> std::net::SocketAddr {
        let relay = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let via = relay.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut down, _) = relay.accept().await.expect("accept");
            let mut up = TcpStream::connect(server).await.expect("connect");
            let (mut ur, mut uw) = up.split();
            let (mut dr, mut dw) = down.split();
            let to_server = tokio::io::copy(&mut dr, &mut uw);
            let to_client = async {
                let mut passed = 0;
                let mut header = [0_u8; HEADER];
                while ur.read_exact(&mut header).await.is_ok() {
                    let mut record = header.to_vec();
                    record.resize(
                        HEADER + usize::from(u16::from_be_bytes([header[3], header[4]])),
                        0,
                    );
                    if ur.read_exact(&mut record[HEADER..]).await.is_err() {
                        break;
                    }
                    let len = record.len();
                    edit(passed, &mut record);
                    passed += len;
                    if dw.write_all(&record).await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::join!(to_server, to_client);
        });
        via
    }

    /// Our client through `via` until the reader fails; answers the error and the
    /// plaintext it gave before.
    async fn read_until_refused(
        client: Arc<ClientConfig>,
        via: std::net::SocketAddr,
    ) -> (io::Error, usize) {
        let tcp = TcpStream::connect(via).await.expect("connect");
        let session = super::client(client, name(), tcp).await.expect("handshake");
        let (mut r, _w) = session.into_split();
        let mut got = Vec::new();
        let err = tokio::time::timeout(LIMIT, r.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect_err("refused");
        (err, got.len())
    }

    #[tokio::test]
    async fn a_record_changed_on_the_way_is_refused() {
        let pki = pki();
        let (server, client) = configs(&pki, None, &[&rustls::version::TLS13]);
        let at = rustls_sender(server, 4).await;
        // One bit flipped 50,000 bytes into what the server sends.
        let via = relay(at, |passed, record| {
            if (passed..passed + record.len()).contains(&50_000) {
                record[50_000 - passed] ^= 0x01;
            }
        })
        .await;
        let (err, got) = read_until_refused(client, via).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(got < 50_000, "nothing past the changed record: {got}");
    }

    #[tokio::test]
    async fn a_change_cipher_spec_after_the_handshake_is_refused() {
        let pki = pki();
        let (server, client) = configs(&pki, None, &[&rustls::version::TLS13]);
        let at = rustls_sender(server, 4).await;
        // A change_cipher_spec record slipped in once 60,000 bytes have gone by.
        let mut slipped = false;
        let via = relay(at, move |passed, record| {
            if passed > 60_000 && !slipped {
                slipped = true;
                record.splice(0..0, [20, 3, 3, 0, 1, 1]);
            }
        })
        .await;
        let (err, got) = read_until_refused(client, via).await;
        assert!(err.to_string().contains("change_cipher_spec"), "{err}");
        assert!((40_000..160_000).contains(&got), "{got}");
    }

    #[tokio::test]
    async fn tickets_that_arrive_after_the_handshake_resume_the_next_one() {
        let pki = pki();
        let (server, client) = configs(&pki, None, &[&rustls::version::TLS13]);
        let first = ours_to_rustls(server.clone(), client.clone(), 1000).await;
        assert!(!first.resumed);
        let second = ours_to_rustls(server, client, 1000).await;
        assert!(
            second.resumed,
            "the ticket our reader handed to rustls was used"
        );
    }
}
