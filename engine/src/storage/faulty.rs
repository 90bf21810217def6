//! `FaultyStorage`: wraps another `Storage` and, on demand, fails fsyncs, fills the disk
//! part-way through a write, or fails writes outright.

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Mapping, Storage, StorageFile};

/// The switches a test flips.
#[derive(Debug)]
pub struct Faults {
    /// While set, every `sync_data` and `sync_dir` fails with EIO.
    pub fail_sync: AtomicBool,
    /// While set, every write fails with EIO before writing anything.
    pub fail_write: AtomicBool,
    /// Bytes that may still be written; a write that crosses zero writes what fits and then
    /// fails with ENOSPC. `u64::MAX` means unlimited.
    pub space_left_bytes: AtomicU64,
    /// Every `sync_data` first sleeps this long, as a slow disk would.
    pub sync_delay_us: AtomicU64,
    /// While set, direct writes are declined, as by a file system without `O_DIRECT`.
    pub decline_direct: AtomicBool,
    /// Bytes written by direct writes so far.
    pub direct_written_bytes: AtomicU64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            fail_sync: AtomicBool::new(false),
            fail_write: AtomicBool::new(false),
            space_left_bytes: AtomicU64::new(u64::MAX),
            sync_delay_us: AtomicU64::new(0),
            decline_direct: AtomicBool::new(false),
            direct_written_bytes: AtomicU64::new(0),
        }
    }
}

/// A `Storage` that fails when its `Faults` say so.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Arc<Faults>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> FaultyStorage {
        FaultyStorage {
            inner,
            faults: Arc::default(),
        }
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }
}

fn eio() -> io::Error {
    io::Error::other("injected I/O error")
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    faults: Arc<Faults>,
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.create(path)?;
        Ok(Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path)?;
        Ok(Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.sync_dir(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        self.inner.try_lock(path)
    }
}

impl FaultyFile {
    /// How many of `want` bytes a write may write: EIO while writes fail, fewer than asked when
    /// the space left runs out.
    fn grant(&self, want: usize) -> io::Result<usize> {
        if self.faults.fail_write.load(Ordering::SeqCst) {
            return Err(eio());
        }
        let want = want as u64;
        let mut granted = want;
        let _ =
            self.faults
                .space_left_bytes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    if left == u64::MAX {
                        return None;
                    }
                    granted = want.min(left);
                    Some(left - granted)
                });
        Ok(granted as usize)
    }

    /// Returns bytes `grant` took for a write that wrote nothing.
    fn give_back(&self, bytes: usize) {
        let _ =
            self.faults
                .space_left_bytes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    (left != u64::MAX).then(|| left.saturating_add(bytes as u64))
                });
    }
}

impl StorageFile for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let granted = self.grant(buf.len())?;
        self.inner.write_at(&buf[..granted], offset)?;
        match granted < buf.len() {
            true => Err(io::Error::from(io::ErrorKind::StorageFull)),
            false => Ok(()),
        }
    }

    /// As `write_at`, except that a write the space left cuts short writes nothing (a direct
    /// write of part of its pages would not be aligned).
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<bool> {
        if self.faults.decline_direct.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let granted = self.grant(buf.len())?;
        if granted < buf.len() {
            self.give_back(granted);
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let written = self.inner.write_direct_at(buf, offset);
        match written {
            Ok(true) => {
                let len = buf.len() as u64;
                self.faults
                    .direct_written_bytes
                    .fetch_add(len, Ordering::Relaxed);
            }
            // Nothing was written: the caller writes through the cache, which takes it again.
            _ => self.give_back(granted),
        }
        written
    }

    fn end_direct_writes(&self) {
        self.inner.end_direct_writes();
    }

    fn read_ahead(&self, on: bool) {
        self.inner.read_ahead(on);
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay_us = self.faults.sync_delay_us.load(Ordering::Relaxed);
        if delay_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay_us));
        }
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.sync_data()
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        self.inner.map()
    }
}
