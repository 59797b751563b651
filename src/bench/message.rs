//! The bench's messages: a 32-byte header and a body that depend on the connection
//! and the sequence number, so the reader of an echo can tell lost, reordered,
//! duplicated and corrupted data apart without keeping copies of what it sent.
//!
//! Header, little endian: magic `SSSB` (4), connection (4), sequence (8), send time
//! in nanoseconds since the run began (8), checksum of the body (8). The body is
//! xorshift64 words seeded by connection and sequence; the checksum folds them in
//! order (rotate, xor), so a swapped, flipped or shifted word shows.

/// Header bytes: also the smallest message.
pub const HEADER: usize = 32;
const MAGIC: [u8; 4] = *b"SSSB";

/// What was wrong with a message that came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Not a bench message: the header's magic or connection is wrong (shifted or
    /// foreign data).
    Header,
    /// A message, but not the next one: data was lost, duplicated or reordered.
    Sequence {
        /// The sequence number expected.
        want: u64,
        /// The one that came.
        got: u64,
    },
    /// The body does not match its checksum, or not its sequence's pattern.
    Corrupt,
}

impl Fault {
    /// The error kind in the report.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Header => "header",
            Fault::Sequence { .. } => "sequence",
            Fault::Corrupt => "corrupt",
        }
    }
}

fn seed(conn: u32, seq: u64) -> u64 {
    (u64::from(conn) << 40 ^ seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The body's checksum; a tail shorter than a word counts byte by byte.
fn checksum(body: &[u8]) -> u64 {
    let mut h = 0u64;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        h = h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().expect("8 bytes"));
    }
    for &b in words.remainder() {
        h = h.rotate_left(5) ^ u64::from(b);
    }
    h
}

/// Fills `buf` (at least [`HEADER`] bytes) with message `seq` of connection `conn`.
pub fn fill(buf: &mut [u8], conn: u32, seq: u64, sent_ns: u64) {
    let (head, body) = buf.split_at_mut(HEADER);
    let mut x = seed(conn, seq);
    let mut words = body.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&next(&mut x).to_le_bytes());
    }
    let tail = next(&mut x).to_le_bytes();
    let rest = words.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&tail[..n]);
    head[..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&conn.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    head[24..32].copy_from_slice(&checksum(body).to_le_bytes());
}

/// Checks that `buf` is message `want` of connection `conn`, unchanged; returns its
/// send time.
///
/// # Errors
/// The [`Fault`] found first.
pub fn check(buf: &[u8], conn: u32, want: u64) -> Result<u64, Fault> {
    let field = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&buf[r]);
        u64::from_le_bytes(b)
    };
    if buf.len() < HEADER || buf[..4] != MAGIC || field(4..8) != u64::from(conn) {
        return Err(Fault::Header);
    }
    let got = field(8..16);
    if got != want {
        return Err(Fault::Sequence { want, got });
    }
    let body = &buf[HEADER..];
    if field(24..32) != checksum(body) {
        return Err(Fault::Corrupt);
    }
    // The checksum could match a body of another pattern only by design; compare
    // the first word too, which the seed fixes.
    if body.len() >= 8 {
        let mut x = seed(conn, want);
        if body[..8] != next(&mut x).to_le_bytes() {
            return Err(Fault::Corrupt);
        }
    }
    Ok(field(16..24))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, conn: u32, seq: u64) -> Vec<u8> {
        let mut m = vec![0; len];
        fill(&mut m, conn, seq, 77);
        m
    }

    #[test]
    fn a_message_checks_and_gives_its_send_time() {
        for len in [HEADER, HEADER + 1, HEADER + 13, 2048] {
            assert_eq!(check(&message(len, 3, 9), 3, 9), Ok(77), "{len}");
        }
    }

    #[test]
    fn each_fault_is_told_apart() {
        let m = message(2048, 3, 9);
        assert_eq!(check(&m, 4, 9), Err(Fault::Header));
        assert_eq!(check(&m, 3, 10), Err(Fault::Sequence { want: 10, got: 9 }));
        for at in [HEADER, HEADER + 700, 2047] {
            let mut bad = m.clone();
            bad[at] ^= 0x10;
            assert_eq!(check(&bad, 3, 9), Err(Fault::Corrupt), "flip at {at}");
        }
        let mut swapped = m.clone();
        swapped.copy_within(HEADER..HEADER + 8, 1000);
        assert_eq!(check(&swapped, 3, 9), Err(Fault::Corrupt));
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&m[..2047]);
        assert_eq!(check(&shifted, 3, 9), Err(Fault::Header));
    }

    #[test]
    fn bodies_differ_by_connection_and_sequence() {
        let a = message(256, 1, 1);
        assert_ne!(a[HEADER..], message(256, 1, 2)[HEADER..]);
        assert_ne!(a[HEADER..], message(256, 2, 1)[HEADER..]);
    }
}
