//! The tunnel's frame codec, protocol version 1: pure, no I/O, and no allocation when
//! decoding (frames borrow from the read buffer) or encoding into a reused buffer.
//!
//! # Wire format, version 1
//!
//! After the TLS handshake both ends exchange frames, each a 4-byte header and a
//! payload of at most [`MAX_PAYLOAD`] bytes. Integers are big-endian.
//!
//! ```text
//!  0        1        2        3
//! +-+-------+--------+--------+--------+------ ... ------+
//! |C| type  |     payload length (24)   |     payload     |
//! +-+-------+--------+--------+--------+------ ... ------+
//! ```
//!
//! | type | frame | payload |
//! | --- | --- | --- |
//! | `0x01` | Hello | session handshake, client to server (JSON, see `session`) |
//! | `0x02` | Accept | session handshake, server to client (JSON) |
//! | `0x03` | Reject | session handshake refusal (JSON with a reason code) |
//! | `0x10` | Packet | one IP packet |
//! | `0x11` | Packets | several IP packets, each `[u16 length][packet]` |
//! | `0x12` | Gso | `[virtio_net_hdr, 10 bytes][IP packet of up to 64 KiB]` |
//! | `0x20` | StreamOpen | `[u32 stream id][service name, UTF-8]` |
//! | `0x21` | StreamData | `[u32 stream id][bytes]` |
//! | `0x22` | StreamClose | `[u32 stream id][u16 reason code]` |
//! | `0x23` | StreamWindow | `[u32 stream id][u32 credit, bytes]` |
//! | `0x30` | Ping | `[u64 nonce]` |
//! | `0x31` | Pong | `[u64 nonce]` of the ping answered |
//! | `0x40` | Close | `[u16 reason code][reason, UTF-8]` |
//!
//! Bit `C` ([`FLAG_COMPRESSED`]) marks a payload compressed with the algorithm the
//! session negotiated (lz4 block or zstd frame, see `compress`); only the data frames
//! (`Packet`, `Packets`, `Gso`, `StreamData`) may carry it, and such a frame decodes as
//! [`Frame::Compressed`]: its type and payload, checked by [`decode_payload`] once
//! decompressed. A frame that breaks any rule is an error: the connection that sent it
//! is closed, no other.
//!
//! # Streams
//!
//! Layer-4 streams are opened by the client only, with ids it picks (never two live
//! at once). The opener may send `StreamData` right behind its `StreamOpen`. Each
//! direction of a stream has a window: a sender may have at most
//! [`STREAM_WINDOW`] bytes of `StreamData` (the bytes, not the headers) that the
//! receiver has not yet granted back with `StreamWindow`; the receiver grants bytes
//! once it has handed them to the stream's socket. So one slow stream holds at most a
//! window of memory on the far side and never stalls the others. `StreamClose` with
//! code 0 ends one direction (a TCP FIN: the sender sends no more data, but still
//! takes data and grants windows); both directions ended means the stream is gone.
//! Any other code aborts both directions at once (a TCP reset); the code is an error
//! code's wire number (`E_CONNECT`, `E_NO_ENDPOINT`, ...). Frames for a stream id
//! that is gone are ignored, since they may have crossed its close on the wire; data
//! beyond the window is a protocol error that closes the session.
//!
//! Batching several packets into one `Packets` frame is what keeps per-packet cost
//! down: one header, one TLS record write and one wakeup for as many packets as the
//! TUN had ready. [`BatchWriter`] builds such a frame in place.
//!
//! A `Gso` frame carries a TCP or UDP "superpacket" exactly as a Linux TUN device
//! with offloads hands it out: the `virtio_net_hdr` (its fields little-endian, as the
//! kernel lays them out: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
//! followed by one IP packet of up to 64 KiB that the receiving kernel segments, or
//! delivers whole, as the header says. Sending 64 KiB per frame instead of 1500 bytes
//! is what removes the per-packet cost from the tunnel; it is only sent to a peer that
//! said it takes it (`gso` in the session handshake). The 24-bit length exists for
//! this frame: a superpacket plus its header is longer than 65,535 bytes.

use std::str;

/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Bytes of the frame header.
pub const HEADER: usize = 4;
/// Largest payload accepted: a 64 KiB superpacket with its header fits with room to
/// spare, and a reader needs no buffer larger than `HEADER + MAX_PAYLOAD`.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// Largest payload [`BatchWriter`] builds: four full TLS records.
pub const BATCH_LIMIT: usize = 64 * 1024;
/// Bytes each direction of a stream may have in flight before the receiver grants
/// more (see Streams above).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Bytes of a `virtio_net_hdr` (without `num_buffers`), the prefix of a `Gso` frame.
pub const VNET_HDR: usize = 10;
/// Flag (top bit of the type byte): the payload is compressed.
pub const FLAG_COMPRESSED: u8 = 0b1000_0000;

const T_HELLO: u8 = 0x01;
const T_ACCEPT: u8 = 0x02;
const T_REJECT: u8 = 0x03;
const T_PACKET: u8 = 0x10;
const T_PACKETS: u8 = 0x11;
const T_GSO: u8 = 0x12;
/// Frame type of `StreamOpen`.
pub const T_STREAM_OPEN: u8 = 0x20;
/// Frame type of `StreamData`.
pub const T_STREAM_DATA: u8 = 0x21;
/// Frame type of `StreamClose`.
pub const T_STREAM_CLOSE: u8 = 0x22;
/// Frame type of `StreamWindow`.
pub const T_STREAM_WINDOW: u8 = 0x23;
const T_PING: u8 = 0x30;
const T_PONG: u8 = 0x31;
const T_CLOSE: u8 = 0x40;

/// One frame, borrowing its payload from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Session handshake from the client.
    Hello(&'a [u8]),
    /// Session accepted by the server.
    Accept(&'a [u8]),
    /// Session refused by the server.
    Reject(&'a [u8]),
    /// One IP packet.
    Packet(&'a [u8]),
    /// Several IP packets.
    Packets(Batch<'a>),
    /// One offloaded superpacket and its `virtio_net_hdr`.
    Gso {
        /// The header, as the kernel lays it out.
        hdr: &'a [u8; VNET_HDR],
        /// The IP packet.
        packet: &'a [u8],
    },
    /// A new layer-4 stream to `service`.
    StreamOpen {
        /// Stream id, chosen by the opener.
        id: u32,
        /// Service name.
        service: &'a str,
    },
    /// Bytes of a stream.
    StreamData {
        /// Stream id.
        id: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// The end of a stream.
    StreamClose {
        /// Stream id.
        id: u32,
        /// Why it ended.
        code: u16,
    },
    /// More room granted for a stream's data.
    StreamWindow {
        /// Stream id.
        id: u32,
        /// Additional bytes the receiver will take.
        credit: u32,
    },
    /// Keepalive request.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The session ends.
    Close {
        /// Why.
        code: u16,
        /// Said for people.
        reason: &'a str,
    },
    /// A data frame whose payload is compressed: decompress it, then
    /// [`decode_payload`] with `kind`.
    Compressed {
        /// The frame type, without the flag.
        kind: u8,
        /// The compressed payload.
        payload: &'a [u8],
    },
}

/// The packets of a `Packets` frame, already checked to be well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch<'a>(&'a [u8]);

impl<'a> Batch<'a> {
    /// The packets, in order.
    pub fn iter(&self) -> BatchIter<'a> {
        BatchIter(self.0)
    }
}

impl<'a> IntoIterator for Batch<'a> {
    type Item = &'a [u8];
    type IntoIter = BatchIter<'a>;
    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

/// Iterates the packets of a [`Batch`].
#[derive(Clone, Debug)]
pub struct BatchIter<'a>(&'a [u8]);

impl<'a> Iterator for BatchIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = split_u16(self.0)?;
        let (packet, rest) = rest.split_at_checked(usize::from(len))?;
        self.0 = rest;
        Some(packet)
    }
}

/// Why bytes are not a valid frame. `Copy` and allocation-free: it sits on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The type byte names no frame.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload is too short or too long for its type.
    #[error("frame type {0:#04x} has a payload of the wrong size")]
    BadLength(u8),
    /// A `Packets` payload does not split into whole, non-empty packets.
    #[error("malformed packet batch")]
    BadBatch,
    /// An empty IP packet.
    #[error("empty packet")]
    EmptyPacket,
    /// Text that is not UTF-8.
    #[error("frame type {0:#04x} carries text that is not UTF-8")]
    BadUtf8(u8),
    /// A payload over [`MAX_PAYLOAD`] was to be encoded.
    #[error("payload of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    /// The compressed flag on a frame that is not a data frame, or on nothing.
    #[error("frame type {0:#04x} cannot be compressed")]
    NotCompressible(u8),
}

fn split_u16(b: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = b.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn exact_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*<&[u8; 8]>::try_from(b).ok()?))
}

/// Whether frames of type `kind` may be compressed: the data frames.
pub fn compressible(kind: u8) -> bool {
    matches!(kind, T_PACKET | T_PACKETS | T_GSO | T_STREAM_DATA)
}

/// Decodes the frame at the start of `buf`.
///
/// Returns the frame and the bytes it took, or `Ok(None)` when `buf` holds only part
/// of a frame (read more and call again).
///
/// # Errors
/// [`CodecError`] when the bytes cannot be a frame; the stream is then unusable.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, CodecError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER>() else {
        return Ok(None);
    };
    let [first, hi, mid, lo] = *header;
    let kind = first & !FLAG_COMPRESSED;
    let len = usize::try_from(u32::from_be_bytes([0, hi, mid, lo])).expect("24 bits fit");
    if len > MAX_PAYLOAD {
        return Err(CodecError::TooLarge(len));
    }
    let Some(payload) = rest.get(..len) else {
        return Ok(None);
    };
    let frame = if first & FLAG_COMPRESSED == 0 {
        decode_payload(kind, payload)?
    } else if compressible(kind) && !payload.is_empty() {
        Frame::Compressed { kind, payload }
    } else {
        return Err(CodecError::NotCompressible(kind));
    };
    Ok(Some((frame, HEADER + len)))
}

/// The frame of type `kind` (no flag) whose payload is `payload`: what
/// [`decode`] does after the header, and what a decompressed payload goes through.
///
/// # Errors
/// [`CodecError`] when the payload does not fit its type.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Frame<'_>, CodecError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge(payload.len()));
    }
    let bad = CodecError::BadLength(kind);
    let text = |b| str::from_utf8(b).map_err(|_| CodecError::BadUtf8(kind));
    let frame = match kind {
        T_HELLO => Frame::Hello(payload),
        T_ACCEPT => Frame::Accept(payload),
        T_REJECT => Frame::Reject(payload),
        T_PACKET if payload.is_empty() => return Err(CodecError::EmptyPacket),
        T_PACKET => Frame::Packet(payload),
        T_PACKETS if payload.is_empty() => return Err(CodecError::BadBatch),
        T_PACKETS => {
            let mut rest = payload;
            while !rest.is_empty() {
                let (n, tail) = split_u16(rest).ok_or(CodecError::BadBatch)?;
                if n == 0 {
                    return Err(CodecError::EmptyPacket);
                }
                rest = tail.get(usize::from(n)..).ok_or(CodecError::BadBatch)?;
            }
            Frame::Packets(Batch(payload))
        }
        T_GSO => match payload.split_first_chunk::<VNET_HDR>() {
            Some((_, [])) => return Err(CodecError::EmptyPacket),
            Some((hdr, packet)) => Frame::Gso { hdr, packet },
            None => return Err(bad),
        },
        T_STREAM_OPEN => {
            let (id, name) = split_u32(payload).ok_or(bad)?;
            Frame::StreamOpen {
                id,
                service: text(name)?,
            }
        }
        T_STREAM_DATA => {
            let (id, data) = split_u32(payload).ok_or(bad)?;
            Frame::StreamData { id, data }
        }
        T_STREAM_CLOSE => {
            let (id, rest) = split_u32(payload).ok_or(bad)?;
            let (code, rest) = split_u16(rest).ok_or(bad)?;
            if !rest.is_empty() {
                return Err(bad);
            }
            Frame::StreamClose { id, code }
        }
        T_STREAM_WINDOW => {
            let (id, rest) = split_u32(payload).ok_or(bad)?;
            let (credit, rest) = split_u32(rest).ok_or(bad)?;
            if !rest.is_empty() {
                return Err(bad);
            }
            Frame::StreamWindow { id, credit }
        }
        T_PING => Frame::Ping(exact_u64(payload).ok_or(bad)?),
        T_PONG => Frame::Pong(exact_u64(payload).ok_or(bad)?),
        T_CLOSE => {
            let (code, reason) = split_u16(payload).ok_or(bad)?;
            Frame::Close {
                code,
                reason: text(reason)?,
            }
        }
        other => return Err(CodecError::UnknownType(other)),
    };
    Ok(frame)
}

/// Appends `frame` to `out`; no allocation once `out` has the capacity.
///
/// # Errors
/// [`CodecError::TooLarge`] when the payload exceeds [`MAX_PAYLOAD`];
/// [`CodecError::EmptyPacket`] for an empty packet; [`CodecError::NotCompressible`]
/// for a compressed frame of another type than data, or an empty one. `out` is
/// unchanged then.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match *frame {
        Frame::Packet([]) | Frame::Gso { packet: [], .. } => return Err(CodecError::EmptyPacket),
        Frame::Compressed { kind, payload } if !compressible(kind) || payload.is_empty() => {
            return Err(CodecError::NotCompressible(kind))
        }
        _ => {}
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let kind = match *frame {
        Frame::Hello(p) => put(out, T_HELLO, &[p]),
        Frame::Accept(p) => put(out, T_ACCEPT, &[p]),
        Frame::Reject(p) => put(out, T_REJECT, &[p]),
        Frame::Packet(p) => put(out, T_PACKET, &[p]),
        Frame::Packets(b) => put(out, T_PACKETS, &[b.0]),
        Frame::Gso { hdr, packet } => put(out, T_GSO, &[hdr, packet]),
        Frame::StreamOpen { id, service } => {
            put(out, T_STREAM_OPEN, &[&id.to_be_bytes(), service.as_bytes()])
        }
        Frame::StreamData { id, data } => put(out, T_STREAM_DATA, &[&id.to_be_bytes(), data]),
        Frame::StreamClose { id, code } => put(
            out,
            T_STREAM_CLOSE,
            &[&id.to_be_bytes(), &code.to_be_bytes()],
        ),
        Frame::StreamWindow { id, credit } => put(
            out,
            T_STREAM_WINDOW,
            &[&id.to_be_bytes(), &credit.to_be_bytes()],
        ),
        Frame::Ping(n) => put(out, T_PING, &[&n.to_be_bytes()]),
        Frame::Pong(n) => put(out, T_PONG, &[&n.to_be_bytes()]),
        Frame::Close { code, reason } => {
            put(out, T_CLOSE, &[&code.to_be_bytes(), reason.as_bytes()])
        }
        Frame::Compressed { kind, payload } => put(out, kind | FLAG_COMPRESSED, &[payload]),
    };
    let len = out.len() - start - HEADER;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(CodecError::TooLarge(len));
    }
    out[start..start + HEADER].copy_from_slice(&header(kind, len));
    Ok(())
}

/// The header bytes of a frame whose first byte (type and flag) is `first`, for a
/// payload of `len` (at most [`MAX_PAYLOAD`]) bytes.
pub fn header(first: u8, len: usize) -> [u8; HEADER] {
    let len = u32::try_from(len)
        .expect("checked against MAX_PAYLOAD")
        .to_be_bytes();
    [first, len[1], len[2], len[3]]
}

fn put(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) -> u8 {
    for part in parts {
        out.extend_from_slice(part);
    }
    kind
}

/// Builds a `Packets` frame in place at the end of a reused buffer.
///
/// ```
/// # use sssonector_actors::tunnel::codec::{BatchWriter, decode, Frame};
/// let mut out = Vec::with_capacity(64 * 1024);
/// let mut batch = BatchWriter::begin(&mut out);
/// assert!(batch.push(b"packet one"));
/// assert!(batch.push(b"packet two"));
/// assert_eq!(batch.finish(), 2);
/// let (frame, used) = decode(&out).expect("valid").expect("complete");
/// let Frame::Packets(b) = frame else { panic!("a batch") };
/// assert_eq!(b.iter().count(), 2);
/// assert_eq!(used, out.len());
/// ```
pub struct BatchWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    count: usize,
}

impl<'o> BatchWriter<'o> {
    /// Starts a frame at the end of `out`.
    pub fn begin(out: &'o mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&[T_PACKETS, 0, 0, 0]);
        Self {
            out,
            start,
            count: 0,
        }
    }

    /// Adds `packet` if it fits; false (and nothing added) when the frame is full or
    /// the packet empty, so the caller sends this frame and starts another.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let used = self.out.len() - self.start - HEADER;
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        if packet.is_empty() || used + 2 + packet.len() > BATCH_LIMIT {
            return false;
        }
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(packet);
        self.count += 1;
        true
    }

    /// Packets in the frame so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no packet was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the length and returns the number of packets; an empty frame is removed.
    pub fn finish(self) -> usize {
        if self.count == 0 {
            self.out.truncate(self.start);
            return 0;
        }
        let len = self.out.len() - self.start - HEADER;
        self.out[self.start..self.start + HEADER].copy_from_slice(&header(T_PACKETS, len));
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame<'_>) {
        let mut out = Vec::new();
        encode(&frame, &mut out).expect("encodes");
        let (back, used) = decode(&out).expect("valid").expect("complete");
        assert_eq!((back, used), (frame, out.len()));
    }

    #[test]
    fn every_frame_type_round_trips() {
        let mut batch = Vec::new();
        let mut w = BatchWriter::begin(&mut batch);
        w.push(b"ab");
        w.push(b"c");
        w.finish();
        let (Frame::Packets(b), _) = decode(&batch).expect("valid").expect("complete") else {
            panic!("a batch")
        };
        for frame in [
            Frame::Hello(br#"{"version":1}"#),
            Frame::Accept(b"{}"),
            Frame::Reject(b""),
            Frame::Packet(&[0x45; 1500]),
            Frame::Packets(b),
            Frame::Gso {
                hdr: &[1, 1, 0x36, 0, 0xb4, 0x05, 0x22, 0, 0x10, 0],
                packet: &[0x45; 65535],
            },
            Frame::StreamOpen {
                id: 7,
                service: "web",
            },
            Frame::StreamData {
                id: u32::MAX,
                data: b"GET /",
            },
            Frame::StreamClose { id: 1, code: 3 },
            Frame::StreamWindow {
                id: 2,
                credit: 65536,
            },
            Frame::Ping(42),
            Frame::Pong(u64::MAX),
            Frame::Close {
                code: 1,
                reason: "bye",
            },
            Frame::Compressed {
                kind: T_GSO,
                payload: b"lz4 bytes",
            },
        ] {
            roundtrip(frame);
        }
    }

    #[test]
    fn the_header_is_as_documented() {
        let mut out = Vec::new();
        encode(&Frame::Ping(1), &mut out).expect("encodes");
        assert_eq!(out, [0x30, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        out.clear();
        let payload = [0x45; 70_000];
        let compressed = Frame::Compressed {
            kind: T_PACKET,
            payload: &payload,
        };
        encode(&compressed, &mut out).expect("encodes");
        assert_eq!(out[..HEADER], [0x90, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut out = Vec::new();
        encode(
            &Frame::StreamData {
                id: 1,
                data: &[9; 100],
            },
            &mut out,
        )
        .expect("encodes");
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_their_reason() {
        let table: &[(&[u8], CodecError)] = &[
            (&[0x79, 0, 0, 0], CodecError::UnknownType(0x79)),
            (&[0x10, 0x02, 0, 1, 0], CodecError::TooLarge(0x20001)),
            (&[0x12, 0, 0, 3, 0, 0, 0], CodecError::BadLength(0x12)),
            (
                &[0x12, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                CodecError::EmptyPacket,
            ),
            (&[0x10, 0, 0, 0], CodecError::EmptyPacket),
            (&[0x30, 0, 0, 4, 0, 0, 0, 1], CodecError::BadLength(0x30)),
            (
                &[0x22, 0, 0, 7, 0, 0, 0, 1, 0, 2, 9],
                CodecError::BadLength(0x22),
            ),
            (
                &[0x20, 0, 0, 5, 0, 0, 0, 1, 0xff],
                CodecError::BadUtf8(0x20),
            ),
            (&[0x11, 0, 0, 3, 0, 5, 1], CodecError::BadBatch),
            (&[0x11, 0, 0, 1, 0], CodecError::BadBatch),
            (&[0x11, 0, 0, 2, 0, 0], CodecError::EmptyPacket),
            (&[0x11, 0, 0, 0], CodecError::BadBatch),
            (&[0xb0, 0, 0, 1, 7], CodecError::NotCompressible(0x30)),
            (&[0x90, 0, 0, 0], CodecError::NotCompressible(0x10)),
        ];
        for (bytes, want) in table {
            assert_eq!(decode(bytes), Err(*want), "{bytes:02x?}");
        }
    }

    #[test]
    fn oversized_and_empty_payloads_are_not_encoded() {
        let mut out = vec![1, 2, 3];
        let big = vec![0; MAX_PAYLOAD + 1];
        assert_eq!(
            encode(&Frame::Packet(&big), &mut out),
            Err(CodecError::TooLarge(MAX_PAYLOAD + 1))
        );
        assert_eq!(
            encode(&Frame::Packet(&[]), &mut out),
            Err(CodecError::EmptyPacket)
        );
        assert_eq!(out, [1, 2, 3], "the buffer is left as it was");
        let max = vec![0; MAX_PAYLOAD];
        assert!(encode(&Frame::Packet(&max), &mut out).is_ok());
        let ping = Frame::Compressed {
            kind: T_PING,
            payload: b"x",
        };
        assert_eq!(
            encode(&ping, &mut out),
            Err(CodecError::NotCompressible(T_PING))
        );
    }

    #[test]
    fn a_batch_stops_at_the_frame_limit_and_an_empty_one_vanishes() {
        let mut out = Vec::new();
        let mut w = BatchWriter::begin(&mut out);
        let packet = [0u8; 1500];
        let mut n = 0;
        while w.push(&packet) {
            n += 1;
        }
        assert_eq!(n, BATCH_LIMIT / 1502);
        assert!(!w.push(&[]));
        assert_eq!(w.finish(), n);
        assert!(out.len() <= HEADER + BATCH_LIMIT);
        let mut empty = vec![7];
        assert_eq!(BatchWriter::begin(&mut empty).finish(), 0);
        assert_eq!(empty, [7]);
    }

    proptest! {
        /// Decoding arbitrary bytes never panics; whatever decodes re-encodes to the
        /// very bytes it came from (one encoding per frame).
        #[test]
        fn decoding_anything_is_safe_and_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((frame, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                let mut again = Vec::new();
                encode(&frame, &mut again).expect("a decoded frame encodes");
                prop_assert_eq!(&again[..], &bytes[..used]);
            }
        }

        /// A correct header over a random payload: the decoder either refuses it or
        /// takes exactly the frame, canonically.
        #[test]
        fn well_framed_random_payloads_decode_exactly_or_are_refused(
            kind in proptest::sample::select(vec![
                T_HELLO, T_ACCEPT, T_REJECT, T_PACKET, T_PACKETS, T_GSO, T_STREAM_OPEN,
                T_STREAM_DATA, T_STREAM_CLOSE, T_STREAM_WINDOW, T_PING, T_PONG, T_CLOSE,
            ]),
            flags in proptest::sample::select(vec![0, FLAG_COMPRESSED]),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = header(kind | flags, payload.len()).to_vec();
            bytes.extend_from_slice(&payload);
            bytes.extend_from_slice(&trailing);
            if let Ok(Some((frame, used))) = decode(&bytes) {
                prop_assert_eq!(used, HEADER + payload.len());
                prop_assert_eq!(matches!(frame, Frame::Compressed { .. }), flags != 0);
                let mut again = Vec::new();
                encode(&frame, &mut again).expect("a decoded frame encodes");
                prop_assert_eq!(&again[..], &bytes[..used]);
            }
        }

        /// Packets pushed into batches come out the same, in order, however the byte
        /// stream is cut into reads.
        #[test]
        fn batches_survive_any_read_boundaries(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..3000), 1..60),
            cut in 1usize..5000,
        ) {
            let mut wire = Vec::new();
            let mut pending = packets.iter().peekable();
            while pending.peek().is_some() {
                let mut w = BatchWriter::begin(&mut wire);
                while let Some(p) = pending.peek() {
                    if !w.push(p) { break; }
                    pending.next();
                }
                prop_assert!(w.finish() > 0);
            }
            // Deliver in reads of `cut` bytes, decoding whenever a frame is whole.
            let mut buf = Vec::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for chunk in wire.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some((frame, used)) = decode(&buf).expect("valid stream") {
                    let Frame::Packets(b) = frame else { panic!("only batches were sent") };
                    got.extend(b.iter().map(<[u8]>::to_vec));
                    buf.drain(..used);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, packets);
        }
    }
}
