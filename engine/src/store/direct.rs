//! A placed record's payload written around the page cache: `DirectRun` gathers the payload in
//! an aligned buffer that covers whole pages of the segment file and writes each full buffer in
//! one direct write (`StorageFile::write_direct_at`). The first and last
//! `DIRECT_WRITE_GUARD_BYTES` of the payload (and the pages they end in) go through the cache:
//! the kernel caches a file in folios of several pages, and a direct write drops the cached
//! folios it overlaps, which fails for one that a neighbour's bytes, written through the cache
//! at the same moment, keep dirty. So no folio up to the guard's size holds both a page written
//! direct and a byte written through the cache by another writer. (Larger folios come from
//! read-ahead, which a segment taking direct writes turns off: `Mapping::read_ahead`.)

use std::io;

use crate::limits::{DIRECT_WRITE_ALIGN_BYTES, DIRECT_WRITE_BYTES, DIRECT_WRITE_GUARD_BYTES};
use crate::storage::StorageFile;

/// `DIRECT_WRITE_BYTES` of memory at an address aligned to `DIRECT_WRITE_ALIGN_BYTES`.
pub(crate) struct AlignedBuffer {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuffer {
    pub(crate) fn new() -> AlignedBuffer {
        // Zeroed, so the allocator may hand out untouched pages; aligned by skipping up to one
        // alignment's worth of bytes. A `Vec` keeps its heap address when moved.
        let raw = vec![0u8; DIRECT_WRITE_BYTES + DIRECT_WRITE_ALIGN_BYTES];
        let start = raw.as_ptr().align_offset(DIRECT_WRITE_ALIGN_BYTES);
        assert!(
            start < DIRECT_WRITE_ALIGN_BYTES,
            "a byte pointer can be aligned"
        );
        AlignedBuffer { raw, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + DIRECT_WRITE_BYTES]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + DIRECT_WRITE_BYTES]
    }
}

/// A payload on its way to the file, written in order from where it starts.
pub(crate) struct DirectRun {
    buffer: AlignedBuffer,
    /// The file range written direct: aligned, and `DIRECT_WRITE_GUARD_BYTES` or more inside
    /// the payload at either end. Bytes outside it go through the cache.
    direct_from: u64,
    direct_to: u64,
    /// Payload bytes gathered in the buffer, which starts at `next_direct`.
    filled: usize,
    /// The file offset of the buffer's first byte.
    next_direct: u64,
    /// Cleared once the file refused a direct write: the rest goes through the cache.
    direct: bool,
}

impl DirectRun {
    /// A run for the payload in the file from `payload_at` to `payload_end`; `None` when it is
    /// too short to hold a page far enough from its ends.
    pub(crate) fn for_payload(
        payload_at: u64,
        payload_end: u64,
        take_buffer: impl FnOnce() -> AlignedBuffer,
    ) -> Option<DirectRun> {
        let align = DIRECT_WRITE_ALIGN_BYTES as u64;
        let direct_from = payload_at
            .checked_add(DIRECT_WRITE_GUARD_BYTES)?
            .checked_next_multiple_of(align)?;
        let direct_to = payload_end.checked_sub(DIRECT_WRITE_GUARD_BYTES)?;
        let direct_to = direct_to - direct_to % align;
        (direct_from < direct_to).then(|| DirectRun {
            buffer: take_buffer(),
            direct_from,
            direct_to,
            filled: 0,
            next_direct: direct_from,
            direct: true,
        })
    }

    /// Whether the file declined a direct write (it refuses `O_DIRECT`, or its descriptor could
    /// not be opened), so that the rest of the payload went through the cache.
    pub(crate) fn declined(&self) -> bool {
        !self.direct
    }

    /// The buffer, for the next run, once this one is done with.
    pub(crate) fn into_buffer(self) -> AlignedBuffer {
        self.buffer
    }

    /// Writes `data`, the file's bytes from `at` on; `at` follows the bytes written before.
    pub(crate) fn write(
        &mut self,
        file: &dyn StorageFile,
        mut data: &[u8],
        mut at: u64,
    ) -> io::Result<()> {
        debug_assert!(
            at < self.direct_to || self.filled == 0,
            "gathered bytes skipped"
        );
        if at < self.direct_from {
            let head = (self.direct_from - at).min(data.len() as u64) as usize;
            file.write_at(&data[..head], at)?;
            data = &data[head..];
            at += head as u64;
        }
        while !data.is_empty() && at < self.direct_to {
            debug_assert_eq!(self.next_direct + self.filled as u64, at);
            let filled = self.filled;
            let room = (DIRECT_WRITE_BYTES - filled) as u64;
            let take = (data.len() as u64).min(room).min(self.direct_to - at) as usize;
            self.buffer.bytes_mut()[filled..filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            at += take as u64;
            if self.filled == DIRECT_WRITE_BYTES || at == self.direct_to {
                self.flush(file)?;
            }
        }
        if !data.is_empty() {
            file.write_at(data, at)?;
        }
        Ok(())
    }

    /// Writes the gathered pages, around the cache unless the file refused that before.
    fn flush(&mut self, file: &dyn StorageFile) -> io::Result<()> {
        let bytes = &self.buffer.bytes()[..self.filled];
        debug_assert!(bytes.len().is_multiple_of(DIRECT_WRITE_ALIGN_BYTES));
        let written = self.direct && file.write_direct_at(bytes, self.next_direct)?;
        if !written {
            self.direct = false;
            file.write_at(bytes, self.next_direct)?;
        }
        self.next_direct += self.filled as u64;
        self.filled = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::storage::{Mapping, MemStorage, Storage};

    /// A file that remembers the ranges written direct.
    #[derive(Debug)]
    struct Recording {
        inner: Arc<dyn StorageFile>,
        direct: Mutex<Vec<(u64, u64)>>,
    }

    impl StorageFile for Recording {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.inner.write_at(buf, offset)
        }
        fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<bool> {
            let end = offset + buf.len() as u64;
            self.direct.lock().push((offset, end));
            self.inner.write_direct_at(buf, offset)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn map(&self) -> io::Result<Arc<dyn Mapping>> {
            self.inner.map()
        }
    }

    /// Payloads at every alignment and of lengths around the guard bands and the buffer, written
    /// in uneven pieces: the file holds exactly the payload, and every direct write was aligned
    /// (the memory storage checks each one).
    #[test]
    fn a_run_writes_every_byte_once_in_its_place_whatever_the_alignment() {
        let guard = DIRECT_WRITE_GUARD_BYTES as usize;
        let lens = [
            1,
            2 * guard,
            2 * guard + DIRECT_WRITE_ALIGN_BYTES - 1,
            2 * guard + 2 * DIRECT_WRITE_ALIGN_BYTES + 17,
            DIRECT_WRITE_BYTES + 2 * guard + 5000,
            3 * DIRECT_WRITE_BYTES + 1,
        ];
        let storage = MemStorage::new();
        storage.create_dir_all(Path::new("/s")).unwrap();
        let mut case = 0;
        for payload_at in [0u64, 64, 4096, 4096 + 128, 65_536 - 1] {
            for len in lens {
                case += 1;
                let file = Recording {
                    inner: storage
                        .create(&Path::new("/s").join(case.to_string()))
                        .unwrap(),
                    direct: Mutex::new(Vec::new()),
                };
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + case) as u8).collect();
                let end = payload_at + len as u64;
                let mut run = DirectRun::for_payload(payload_at, end, AlignedBuffer::new);
                let has_middle = len >= 2 * guard + 2 * DIRECT_WRITE_ALIGN_BYTES;
                if has_middle {
                    assert!(run.is_some(), "{payload_at} + {len}");
                }
                let mut at = payload_at;
                let mut rest = &payload[..];
                for n in [1usize, 1200, 70_000, 3].iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (piece, after) = rest.split_at((*n).min(rest.len()));
                    match &mut run {
                        Some(run) => run.write(&file, piece, at).unwrap(),
                        None => file.write_at(piece, at).unwrap(),
                    }
                    at += piece.len() as u64;
                    rest = after;
                }
                assert_eq!(file.len().unwrap(), end, "{payload_at} + {len}");
                // The middle went direct, one write after another, and nothing of the bands.
                let direct = file.direct.lock().clone();
                let direct_bytes: u64 = direct.iter().map(|(from, to)| to - from).sum();
                let band = DIRECT_WRITE_GUARD_BYTES + DIRECT_WRITE_ALIGN_BYTES as u64;
                if has_middle {
                    assert!(
                        direct_bytes + 2 * band >= len as u64,
                        "{payload_at} + {len}: {direct:?}"
                    );
                }
                for (from, to) in &direct {
                    assert!(
                        *from >= payload_at + DIRECT_WRITE_GUARD_BYTES
                            && *to + DIRECT_WRITE_GUARD_BYTES <= end,
                        "{payload_at} + {len}: {direct:?}"
                    );
                }
                assert!(
                    direct.windows(2).all(|w| w[0].1 == w[1].0),
                    "{payload_at} + {len}: {direct:?}"
                );
                let mut back = vec![0u8; len];
                file.read_at(&mut back, payload_at).unwrap();
                assert!(back == payload, "{payload_at} + {len}");
            }
        }
    }
}
