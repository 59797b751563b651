//! Buffers waiting for a socket, written from the front with vectored writes that
//! may stop anywhere: the TLS records of a session, a stream's pending bytes.

use std::collections::VecDeque;
use std::io::IoSlice;

/// Buffers in the order they go out; `front` bytes of the first are out already.
#[derive(Debug)]
pub struct WriteQueue<T> {
    bufs: VecDeque<T>,
    front: usize,
}

impl<T> Default for WriteQueue<T> {
    fn default() -> Self {
        Self {
            bufs: VecDeque::new(),
            front: 0,
        }
    }
}

impl<T: AsRef<[u8]>> WriteQueue<T> {
    /// Queues `buf` behind the others.
    pub fn push(&mut self, buf: T) {
        self.bufs.push_back(buf);
    }

    /// Whether everything is out.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// The last buffer queued, to append to.
    pub fn last_mut(&mut self) -> Option<&mut T> {
        self.bufs.back_mut()
    }

    /// Fills `slices` with what goes out next, the first buffer from where it stopped;
    /// how many it filled.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, buf) in slices.iter_mut().zip(&self.bufs) {
            let buf = buf.as_ref();
            *slot = IoSlice::new(if n == 0 { &buf[self.front..] } else { buf });
            n += 1;
        }
        n
    }

    /// `wrote` bytes went out: each buffer now wholly out goes to `done`.
    pub fn advance(&mut self, mut wrote: usize, mut done: impl FnMut(T)) {
        while wrote > 0 {
            let Some(first) = self.bufs.front() else {
                return;
            };
            let left = first.as_ref().len() - self.front;
            if wrote < left {
                self.front += wrote;
                return;
            }
            wrote -= left;
            self.front = 0;
            if let Some(buf) = self.bufs.pop_front() {
                done(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_that_stop_anywhere_go_on_where_they_stopped() {
        let mut q = WriteQueue::default();
        for b in [&b"abc"[..], b"de", b"fghi"] {
            q.push(b.to_vec());
        }
        let mut done = Vec::new();
        let mut out = Vec::new();
        // Writes of 2 bytes at most from the first two slices, as a full socket might.
        while !q.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2];
            let n = q.slices(&mut slices);
            let taken: Vec<u8> = slices[..n]
                .iter()
                .flat_map(|s| s.iter().copied())
                .take(2)
                .collect();
            out.extend_from_slice(&taken);
            q.advance(taken.len(), |b| done.push(b));
        }
        assert_eq!(out, b"abcdefghi");
        assert_eq!(done, [b"abc".to_vec(), b"de".to_vec(), b"fghi".to_vec()]);
    }
}
