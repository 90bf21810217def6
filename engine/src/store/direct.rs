//! A placed record's payload written around the page cache: `DirectRun` gathers the payload in
//! an aligned buffer that covers whole pages of the segment file and writes each full buffer in
//! one direct write (`StorageFile::write_direct_at`). The bytes before the payload's first page
//! boundary and after its last one go through the cache: the pages they lie in also hold the
//! record's header, its table or a neighbour's bytes, which are written through the cache.

use std::io;

use crate::limits::{DIRECT_WRITE_ALIGN_BYTES, DIRECT_WRITE_BYTES};
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
    /// The file offset of the buffer's first byte, aligned; `None` until the payload reaches its
    /// first page boundary.
    start: Option<u64>,
    filled: usize,
    /// Cleared once the file refused a direct write: the rest goes through the cache.
    direct: bool,
}

impl DirectRun {
    pub(crate) fn new(buffer: AlignedBuffer) -> DirectRun {
        DirectRun {
            buffer,
            start: None,
            filled: 0,
            direct: true,
        }
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
        at: u64,
    ) -> io::Result<()> {
        match self.start {
            Some(start) => debug_assert_eq!(start + self.filled as u64, at),
            None => {
                let boundary = at.next_multiple_of(DIRECT_WRITE_ALIGN_BYTES as u64);
                let head = (boundary - at).min(data.len() as u64) as usize;
                if head > 0 {
                    file.write_at(&data[..head], at)?;
                    data = &data[head..];
                }
                if data.is_empty() {
                    return Ok(());
                }
                self.start = Some(boundary);
            }
        }
        while !data.is_empty() {
            let filled = self.filled;
            let room = DIRECT_WRITE_BYTES - filled;
            let take = data.len().min(room);
            self.buffer.bytes_mut()[filled..filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == DIRECT_WRITE_BYTES {
                self.flush(file)?;
            }
        }
        Ok(())
    }

    /// Writes what is gathered: its whole pages around the cache, the part of a page that ends
    /// the payload through it. Called once the payload's last byte was written.
    pub(crate) fn flush(&mut self, file: &dyn StorageFile) -> io::Result<()> {
        let Some(start) = self.start else {
            return Ok(());
        };
        let filled = self.filled;
        let pages = filled - filled % DIRECT_WRITE_ALIGN_BYTES;
        let bytes = &self.buffer.bytes()[..filled];
        if pages > 0 {
            let written = self.direct && file.write_direct_at(&bytes[..pages], start)?;
            if !written {
                self.direct = false;
                file.write_at(&bytes[..pages], start)?;
            }
        }
        if filled > pages {
            file.write_at(&bytes[pages..], start + pages as u64)?;
        }
        self.start = Some(start + filled as u64);
        self.filled = 0;
        Ok(())
    }
}
