//! Optional frame compression, negotiated per session (`tunnel.compression`).
//!
//! The client offers the algorithm it is configured with in its `Hello`; the server
//! accepts it when it is configured with the same one, so both ends must ask for it.
//! Then each side compresses the payload of every data frame it sends (`Packet`,
//! `Packets`, `Gso`, `StreamData`) and sets the frame's `C` flag, but only when that
//! makes the payload smaller: already compressed or encrypted traffic crosses as it
//! was, at the cost of one failed attempt per frame.
//!
//! - `lz4`: an LZ4 block (no frame header), the fast choice: a few GB/s per core.
//! - `zstd`: a Zstandard frame at level 1, smaller output for more CPU.
//!
//! Both write into buffers kept per session and decompress into a buffer of
//! [`MAX_PAYLOAD`] bytes, so a payload that would decompress to more is refused
//! rather than grown into: a peer cannot make the receiver allocate.

use std::fmt;

use sssonector_config::Compression;

use super::codec::{self, FLAG_COMPRESSED, HEADER, MAX_PAYLOAD};

/// Payloads shorter than this are sent as they are: too short to gain.
const MIN_LEN: usize = 64;
/// Zstandard's level: its fastest regular one.
const ZSTD_LEVEL: i32 = 1;

/// A compression algorithm a session can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// LZ4 blocks.
    Lz4,
    /// Zstandard frames.
    Zstd,
}

impl Algorithm {
    /// The configured algorithm, if any.
    pub fn from_config(c: Compression) -> Option<Self> {
        match c {
            Compression::None => None,
            Compression::Lz4 => Some(Self::Lz4),
            Compression::Zstd => Some(Self::Zstd),
        }
    }

    /// The name the session handshake uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// The algorithm called `name` in a handshake.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Lz4, Self::Zstd]
            .into_iter()
            .find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a compressed payload could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The payload is not valid for the algorithm, or would decompress to more than
    /// [`MAX_PAYLOAD`] bytes.
    #[error("{0} payload does not decompress: {1}")]
    Corrupt(Algorithm, String),
    /// The algorithm's context could not be made (out of memory).
    #[error("{0} context: {1}")]
    Context(Algorithm, std::io::Error),
}

/// The sending side: compresses the data frames of encoded chunks.
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl Compressor {
    /// A compressor for `algorithm`.
    ///
    /// # Errors
    /// When the zstd context cannot be made.
    pub fn new(algorithm: Algorithm) -> Result<Self, CompressError> {
        let zstd = match algorithm {
            Algorithm::Lz4 => None,
            Algorithm::Zstd => Some(
                zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .map_err(|e| CompressError::Context(algorithm, e))?,
            ),
        };
        Ok(Self {
            zstd,
            out: Vec::new(),
        })
    }

    /// `frames` (whole encoded frames, as a chunk holds them) with each data frame's
    /// payload compressed where that makes it smaller; the others copied as they are.
    /// The result never holds more bytes than `frames`.
    pub fn frames(&mut self, frames: &[u8]) -> &[u8] {
        self.out.clear();
        let mut rest = frames;
        while let Some((&[first, hi, mid, lo], tail)) = rest.split_first_chunk::<HEADER>() {
            let len = u32::from_be_bytes([0, hi, mid, lo]) as usize;
            let Some(payload) = tail.get(..len) else {
                break;
            };
            if first & FLAG_COMPRESSED != 0 || !codec::compressible(first) || len < MIN_LEN {
                self.out.extend_from_slice(&rest[..HEADER + len]);
            } else {
                self.push_compressed(first, payload);
            }
            rest = &tail[len..];
        }
        // What is not a whole frame (the hub never builds one) goes as it is.
        self.out.extend_from_slice(rest);
        &self.out
    }

    /// Appends the frame `kind` with `payload`, compressed if that is shorter.
    fn push_compressed(&mut self, kind: u8, payload: &[u8]) {
        let at = self.out.len();
        // Room for the worst case: both libraries refuse to start with less.
        let bound = match self.zstd {
            Some(_) => zstd::zstd_safe::compress_bound(payload.len()),
            None => lz4_flex::block::get_maximum_output_size(payload.len()),
        };
        self.out.resize(at + HEADER + bound, 0);
        let room = &mut self.out[at + HEADER..];
        let packed = match &mut self.zstd {
            Some(z) => z.compress_to_buffer(payload, room).ok(),
            None => lz4_flex::block::compress_into(payload, room).ok(),
        };
        match packed {
            Some(n) if n < payload.len() => {
                self.out.truncate(at + HEADER + n);
                self.out[at..at + HEADER]
                    .copy_from_slice(&codec::header(kind | FLAG_COMPRESSED, n));
            }
            _ => {
                self.out.truncate(at);
                self.out
                    .extend_from_slice(&codec::header(kind, payload.len()));
                self.out.extend_from_slice(payload);
            }
        }
    }
}

/// The receiving side: restores compressed payloads.
pub struct Decompressor {
    algorithm: Algorithm,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    buf: Box<[u8]>,
}

impl Decompressor {
    /// A decompressor for `algorithm`.
    ///
    /// # Errors
    /// When the zstd context cannot be made.
    pub fn new(algorithm: Algorithm) -> Result<Self, CompressError> {
        let zstd = match algorithm {
            Algorithm::Lz4 => None,
            Algorithm::Zstd => Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| CompressError::Context(algorithm, e))?,
            ),
        };
        Ok(Self {
            algorithm,
            zstd,
            buf: vec![0; MAX_PAYLOAD].into_boxed_slice(),
        })
    }

    /// The payload `compressed` stood for.
    ///
    /// # Errors
    /// [`CompressError::Corrupt`] when it is not valid or longer than [`MAX_PAYLOAD`].
    pub fn payload(&mut self, compressed: &[u8]) -> Result<&[u8], CompressError> {
        let n = match &mut self.zstd {
            Some(z) => z
                .decompress_to_buffer(compressed, &mut self.buf[..])
                .map_err(|e| CompressError::Corrupt(self.algorithm, e.to_string()))?,
            None => lz4_flex::block::decompress_into(compressed, &mut self.buf)
                .map_err(|e| CompressError::Corrupt(self.algorithm, e.to_string()))?,
        };
        Ok(&self.buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::codec::{decode, decode_payload, encode, Frame};
    use proptest::prelude::*;

    /// Decodes `wire` back into frames, decompressing with `d`, as the reader does.
    fn restore(wire: &[u8], d: &mut Decompressor) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut rest = wire;
        while let Some((frame, used)) = decode(rest).expect("valid") {
            let mut out = Vec::new();
            match frame {
                Frame::Compressed { kind, payload } => {
                    let plain = d.payload(payload).expect("decompresses");
                    let frame = decode_payload(kind, plain).expect("a frame");
                    encode(&frame, &mut out).expect("encodes");
                }
                other => encode(&other, &mut out).expect("encodes"),
            }
            frames.push(out);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        frames
    }

    fn chunk(frames: &[Frame<'_>]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut all = Vec::new();
        let mut each = Vec::new();
        for f in frames {
            let mut one = Vec::new();
            encode(f, &mut one).expect("encodes");
            all.extend_from_slice(&one);
            each.push(one);
        }
        (all, each)
    }

    #[test]
    fn data_frames_shrink_and_come_back_whole_others_pass_as_they_are() {
        let text = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(40);
        // xorshift64: bytes no compressor can shrink.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let (wire, each) = chunk(&[
            Frame::Packet(&text),
            Frame::Ping(9),
            Frame::Packet(&random),
            Frame::StreamData { id: 3, data: &text },
            Frame::Packet(b"short"),
        ]);
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            let mut c = Compressor::new(algorithm).expect("context");
            let mut d = Decompressor::new(algorithm).expect("context");
            let sent = c.frames(&wire).to_vec();
            assert!(
                sent.len() < wire.len() - text.len(),
                "{algorithm}: {} of {}",
                sent.len(),
                wire.len()
            );
            assert_eq!(restore(&sent, &mut d), each, "{algorithm}");
            // Only the text was compressed: not the ping, the random or short packet.
            let mut compressed = Vec::new();
            let mut rest = &sent[..];
            while let Some((frame, used)) = decode(rest).expect("valid") {
                compressed.push(matches!(frame, Frame::Compressed { .. }));
                rest = &rest[used..];
            }
            assert_eq!(compressed, [true, false, false, true, false], "{algorithm}");
        }
    }

    #[test]
    fn a_payload_that_would_grow_past_the_limit_is_refused() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut lz4 = vec![0u8; 2 * MAX_PAYLOAD];
        let n = lz4_flex::block::compress_into(&big, &mut lz4).expect("compresses");
        let lz4 = &lz4[..n];
        let mut d = Decompressor::new(Algorithm::Lz4).expect("context");
        assert!(d.payload(lz4).is_err());
        assert!(d.payload(&[0xff; 40]).is_err());
        let zst = zstd::bulk::compress(&big, 1).expect("compresses");
        let mut d = Decompressor::new(Algorithm::Zstd).expect("context");
        assert!(d.payload(&zst).is_err());
        assert!(d.payload(b"not zstd at all").is_err());
    }

    #[test]
    fn names_match_the_config() {
        for (c, name) in [(Compression::Lz4, "lz4"), (Compression::Zstd, "zstd")] {
            let a = Algorithm::from_config(c).expect("an algorithm");
            assert_eq!((a.as_str(), Algorithm::from_name(name)), (name, Some(a)));
        }
        assert_eq!(Algorithm::from_config(Compression::None), None);
        assert_eq!(Algorithm::from_name("gzip"), None);
    }

    proptest! {
        /// Any sequence of packet frames survives compression and back, and is never
        /// longer on the wire than it was.
        #[test]
        fn any_packets_round_trip(
            packets in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 1..3000),
                    (1usize..3000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
                ],
                1..20,
            ),
            zstd in any::<bool>(),
        ) {
            let algorithm = if zstd { Algorithm::Zstd } else { Algorithm::Lz4 };
            let frames: Vec<Frame<'_>> = packets.iter().map(|p| Frame::Packet(p)).collect();
            let (wire, each) = chunk(&frames);
            let mut c = Compressor::new(algorithm).expect("context");
            let mut d = Decompressor::new(algorithm).expect("context");
            let sent = c.frames(&wire).to_vec();
            prop_assert!(sent.len() <= wire.len());
            prop_assert_eq!(restore(&sent, &mut d), each);
        }
    }
}
