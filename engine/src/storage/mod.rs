//! The I/O seam: everything the engine does to files goes through `Storage`.
//!
//! Three implementations: `RealStorage` (std files, memmap2 for reads), `MemStorage` (in memory,
//! tracking which bytes are durable so a test can simulate power loss with `crash`) and
//! `FaultyStorage` (wraps another and fails fsyncs, fills the disk or fails writes on demand).

mod faulty;
mod mem;
mod real;

pub use faulty::{Faults, FaultyStorage};
pub use mem::MemStorage;
pub use real::RealStorage;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file system, as the engine uses it.
pub trait Storage: Send + Sync + fmt::Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`. Durable once the directory of `to` is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` for this process; `None` if another holds it. The lock
    /// lasts as long as the returned guard.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's size in bytes.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` around the page cache (`O_DIRECT`): `offset`, the length
    /// of `buf` and its address are multiples of `DIRECT_WRITE_ALIGN_BYTES`, and nobody writes
    /// through the cache within `DIRECT_WRITE_GUARD_BYTES` of the range meanwhile. Durable like
    /// `write_at`, once `sync_data` returns.
    /// `Ok(false)`, having written nothing, where the file cannot be written this way (the file
    /// system refuses it); the caller then writes through the cache.
    fn write_direct_at(&self, _buf: &[u8], _offset: u64) -> io::Result<bool> {
        Ok(false)
    }
    /// Lets go of what `write_direct_at` keeps open (a second descriptor): the file takes no
    /// more direct writes for now. A later one opens it again.
    fn end_direct_writes(&self) {}
    /// Whether reads of the file through this descriptor read ahead (on, the default) or read
    /// the pages asked for alone (off: `POSIX_FADV_RANDOM`). See `Mapping::read_ahead`.
    fn read_ahead(&self, _on: bool) {}
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and its size) durable: fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Maps the file's current length for reading.
    fn map(&self) -> io::Result<Arc<dyn Mapping>>;
}

/// A read-only view of a file. Bytes written to the file after the mapping was made are visible
/// through it. The engine only ever reads a range after it was fully written, and never writes a
/// range again while a mapping of it lives.
pub trait Mapping: Send + Sync + fmt::Debug {
    /// Bytes mapped.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `len` bytes from `start`; panics if the range is outside the mapping.
    fn bytes(&self, start: u64, len: u64) -> &[u8];
    /// Lets go of the memory the mapping holds resident, keeping it valid: a later read faults
    /// its pages in again (from the page cache, or the file). A hint; nothing changes for
    /// mappings that hold no memory of their own.
    fn release(&self) {}
    /// `release` for the pages holding `len` bytes from `start` (and the rest of the pages they
    /// share with their neighbours).
    fn release_range(&self, _start: u64, _len: u64) {}
    /// Asks for `len` bytes from `start` to be read from the file ahead of their first access,
    /// in large reads (readahead), rather than page by page as they are touched. A hint; nothing
    /// changes for mappings whose bytes are always in memory.
    fn will_need(&self, _start: u64, _len: u64) {}
    /// Whether a fault reads around the page it needs (on, the default) or that page alone
    /// (off: `MADV_RANDOM`). A file taking direct writes has both this and
    /// `StorageFile::read_ahead` off: the kernel's read-ahead caches a file in folios of many
    /// pages, and one such folio over a direct write's range and a neighbour's buffered bytes
    /// could not be dropped by the direct write while the neighbour keeps it dirty. With both
    /// off, every cached folio is a single page read (`will_need`'s too) or what one buffered
    /// write made of the pages it wrote.
    fn read_ahead(&self, _on: bool) {}
}
