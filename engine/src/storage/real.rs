//! `RealStorage`: std files, `pwrite`, `fdatasync` and memmap2 mappings.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{Mapping, Storage, StorageFile};

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

#[derive(Debug)]
struct RealFile(File);

#[derive(Debug)]
struct RealMapping(memmap2::Mmap);

impl Storage for RealStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Box::new(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        // SAFETY: the engine never truncates a file while it is mapped and never writes a range
        // that a reader may be looking at (the `Mapping` contract), and the store's directory is
        // locked against other Cairn processes. Another program changing the files underneath is
        // outside what any mmap-based store can defend against.
        let map = unsafe { memmap2::Mmap::map(&self.0)? };
        Ok(Arc::new(RealMapping(map)))
    }
}

impl Mapping for RealMapping {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes(&self, start: u64, len: u64) -> &[u8] {
        &self.0[start as usize..(start + len) as usize]
    }

    /// `MADV_DONTNEED`: drops the process's page table entries for the mapping. The pages leave
    /// its resident set and stay in the page cache, where the kernel ages and reclaims them like
    /// any file page. (Marking them cold as well, `MADV_COLD`, made a node under a container's
    /// memory limit evict pages readers were about to use: reads fell from 327 to 23 MB/s.)
    fn release(&self) {
        if self.0.is_empty() {
            return;
        }
        // SAFETY: a read-only shared mapping of a file. Dropping its page table entries loses
        // nothing: the next access faults the same bytes in from the page cache or the file
        // (MADV_DONTNEED zeroes pages only of private and anonymous mappings).
        let _ = unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }

    fn release_range(&self, start: u64, len: u64) {
        if start.checked_add(len).is_none_or(|end| end > self.len()) || len == 0 {
            return;
        }
        // SAFETY: as `release`; memmap2 widens the range to whole pages, which loses nothing
        // for the same reason.
        let _ = unsafe {
            self.0.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                len as usize,
            )
        };
    }
}
