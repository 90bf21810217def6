//! Gathering a read's pieces: QUIC hands out about one packet (1.2 KB) at a time, and every
//! piece passed on costs its reader a hand-off (a queue, a task's wake-up, a write of its
//! own). [`Gather`] copies small pieces into one of `READ_PIECE_BYTES` and passes larger ones
//! on as they are. The copy stands in for the one the hasher would make: a gathered piece is
//! long enough for `StreamHasher` to hash in place.

use bytes::{Bytes, BytesMut};

use crate::limits::READ_PIECE_BYTES;

/// Pieces of a stream, gathered up to `READ_PIECE_BYTES`; see the module's doc.
#[derive(Default)]
pub(crate) struct Gather {
    buf: BytesMut,
}

impl Gather {
    /// Takes the next piece; a piece to pass on once one is gathered.
    pub(crate) fn push(&mut self, piece: Bytes) -> Option<Bytes> {
        if self.buf.is_empty() && piece.len() >= READ_PIECE_BYTES {
            return Some(piece);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(READ_PIECE_BYTES);
        }
        self.buf.extend_from_slice(&piece);
        (self.buf.len() >= READ_PIECE_BYTES).then(|| self.buf.split().freeze())
    }

    /// What is gathered and not yet passed on, at the stream's end.
    pub(crate) fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cuts `bytes` into pieces of `sizes` (cycled), gathers them, and returns what is passed
    /// on.
    fn gathered(bytes: &[u8], sizes: &[usize]) -> Vec<Bytes> {
        let mut gather = Gather::default();
        let mut out = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < bytes.len() {
            let end = (at + sizes[i % sizes.len()]).min(bytes.len());
            out.extend(gather.push(Bytes::copy_from_slice(&bytes[at..end])));
            (at, i) = (end, i + 1);
        }
        out.extend(gather.rest());
        out
    }

    #[test]
    fn gathered_pieces_keep_every_byte_in_order_and_are_long_but_for_the_last() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for sizes in [
            &[1200][..],
            &[1],
            &[READ_PIECE_BYTES - 1],
            &[READ_PIECE_BYTES],
            &[700, 100_000, 3],
            &[bytes.len()],
        ] {
            let out = gathered(&bytes, sizes);
            assert_eq!(out.concat(), bytes, "pieces of {sizes:?}");
            let (last, rest) = out.split_last().expect("something passed on");
            assert!(!last.is_empty());
            assert!(
                rest.iter().all(|p| p.len() >= READ_PIECE_BYTES),
                "a short piece passed on before the end, pieces of {sizes:?}"
            );
        }
        assert!(gathered(&[], &[1200]).is_empty());
    }

    #[test]
    fn a_long_piece_with_nothing_gathered_is_passed_on_without_a_copy() {
        let piece = Bytes::from(vec![7u8; READ_PIECE_BYTES]);
        let mut gather = Gather::default();
        let out = gather.push(piece.clone()).expect("a long piece passes on");
        assert_eq!(out.as_ptr(), piece.as_ptr());
        assert!(gather.rest().is_none());
    }
}
