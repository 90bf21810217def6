//! `RealStorage`: std files, `pwrite`, `fdatasync` and memmap2 mappings.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::{Mapping, Storage, StorageFile};
use crate::limits::WILL_NEED_STEP_BYTES;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

#[derive(Debug)]
struct RealFile {
    file: File,
    path: PathBuf,
    direct: Mutex<Direct>,
}

/// The file's second descriptor, opened with `O_DIRECT` at its first direct write.
#[derive(Debug)]
enum Direct {
    Closed,
    Open(Arc<File>),
    /// The file system refused `O_DIRECT`: writes go through the cache.
    Refused,
}

impl RealFile {
    fn shared(file: File, path: &Path) -> Arc<dyn StorageFile> {
        Arc::new(RealFile {
            file,
            path: path.to_path_buf(),
            direct: Mutex::new(Direct::Closed),
        })
    }

    /// The `O_DIRECT` descriptor, opened if need be; `None` if the file system refuses it
    /// (remembered) or the open fails otherwise (out of descriptors, say: tried again at the
    /// next write). Either way the write goes through the cache, as it would without.
    #[cfg(target_os = "linux")]
    fn direct_file(&self) -> Option<Arc<File>> {
        let mut direct = self.direct.lock();
        match &*direct {
            Direct::Open(file) => return Some(file.clone()),
            Direct::Refused => return None,
            Direct::Closed => {}
        }
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path);
        match opened {
            Ok(file) => {
                let file = Arc::new(file);
                *direct = Direct::Open(file.clone());
                Some(file)
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    *direct = Direct::Refused;
                }
                None
            }
        }
    }

    /// Elsewhere every write goes through the cache.
    #[cfg(not(target_os = "linux"))]
    fn direct_file(&self) -> Option<Arc<File>> {
        None
    }
}

#[derive(Debug)]
struct RealMapping {
    map: memmap2::Mmap,
    /// Whether faults read ahead (`Mapping::read_ahead`).
    read_ahead: AtomicBool,
}

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
        Ok(RealFile::shared(f, path))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(RealFile::shared(f, path))
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
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Through the second descriptor. The kernel writes back any cached page of the range first
    /// and drops the range's cached pages after, so a mapping reads what was written. A file
    /// system that refuses the open or the write's alignment (`EINVAL`) is remembered, and the
    /// caller writes through the cache.
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<bool> {
        let Some(direct) = self.direct_file() else {
            return Ok(false);
        };
        match direct.write_all_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                *self.direct.lock() = Direct::Refused;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn end_direct_writes(&self) {
        let mut direct = self.direct.lock();
        if matches!(*direct, Direct::Open(_)) {
            *direct = Direct::Closed;
        }
    }

    /// `posix_fadvise` on the whole file (from 0, length 0); it sets how this descriptor reads.
    #[cfg(target_os = "linux")]
    fn read_ahead(&self, on: bool) {
        use std::os::fd::AsRawFd;
        let advice = match on {
            true => libc::POSIX_FADV_NORMAL,
            false => libc::POSIX_FADV_RANDOM,
        };
        // SAFETY: a plain system call on a descriptor this file owns. It is advice: a failure
        // leaves reads as they were, which is only slower or more cached, never wrong.
        let _ = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, advice) };
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        // SAFETY: the engine never truncates a file while it is mapped and never writes a range
        // that a reader may be looking at (the `Mapping` contract), and the store's directory is
        // locked against other Cairn processes. Another program changing the files underneath is
        // outside what any mmap-based store can defend against.
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Arc::new(RealMapping {
            map,
            read_ahead: AtomicBool::new(true),
        }))
    }
}

impl RealMapping {
    /// Whether every page of the mapping from `start` to `end` is in the page cache
    /// (`mincore`, in windows of `MINCORE_PAGES` pages); false if it cannot tell.
    #[cfg(target_os = "linux")]
    fn cached(&self, start: usize, end: usize) -> bool {
        const MINCORE_PAGES: usize = 512;
        // SAFETY: a query without side effects.
        let Ok(page) = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) else {
            return false;
        };
        let base = self.map.as_ptr() as usize;
        let mut at = (base + start) & !(page - 1);
        let end = base + end;
        let mut resident = [0u8; MINCORE_PAGES];
        while at < end {
            let pages = (end - at).div_ceil(page).min(MINCORE_PAGES);
            // SAFETY: `at` is page-aligned and the `pages` pages from it lie within the mapping
            // (its last page holds `end - 1`); `resident` has a byte for each.
            let asked = unsafe {
                libc::mincore(at as *mut libc::c_void, pages * page, resident.as_mut_ptr())
            };
            if asked != 0 || resident[..pages].iter().any(|&r| r & 1 == 0) {
                return false;
            }
            at += pages * page;
        }
        true
    }

    #[cfg(not(target_os = "linux"))]
    fn cached(&self, _start: usize, _end: usize) -> bool {
        false
    }
}

impl Mapping for RealMapping {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn bytes(&self, start: u64, len: u64) -> &[u8] {
        &self.map[start as usize..(start + len) as usize]
    }

    /// `MADV_DONTNEED`: drops the process's page table entries for the mapping. The pages leave
    /// its resident set and stay in the page cache, where the kernel ages and reclaims them like
    /// any file page. (Marking them cold as well, `MADV_COLD`, made a node under a container's
    /// memory limit evict pages readers were about to use: reads fell from 327 to 23 MB/s.)
    fn release(&self) {
        if self.map.is_empty() {
            return;
        }
        // SAFETY: a read-only shared mapping of a file. Dropping its page table entries loses
        // nothing: the next access faults the same bytes in from the page cache or the file
        // (MADV_DONTNEED zeroes pages only of private and anonymous mappings).
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// `MADV_WILLNEED`: the kernel starts reading the range's pages that are not in the page
    /// cache, and returns; pages already cached cost a lookup each. The kernel reads only so
    /// much of one request; past it, faults read around themselves, unless read-ahead is off:
    /// then a range not wholly cached is asked for in steps of `WILL_NEED_STEP_BYTES`.
    fn will_need(&self, start: u64, len: u64) {
        let Some(end) = start
            .checked_add(len)
            .filter(|&end| end <= self.len() && len > 0)
        else {
            return;
        };
        let step_max = match self.read_ahead.load(Ordering::Relaxed) {
            true => len,
            false if self.cached(start as usize, end as usize) => return,
            false => WILL_NEED_STEP_BYTES,
        };
        let mut at = start;
        while at < end {
            let step = (end - at).min(step_max);
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, at as usize, step as usize);
            at += step;
        }
    }

    fn read_ahead(&self, on: bool) {
        let advice = match on {
            true => memmap2::Advice::Normal,
            false => memmap2::Advice::Random,
        };
        let _ = self.map.advise(advice);
        self.read_ahead.store(on, Ordering::Relaxed);
    }

    fn release_range(&self, start: u64, len: u64) {
        if start.checked_add(len).is_none_or(|end| end > self.len()) || len == 0 {
            return;
        }
        // SAFETY: as `release`; memmap2 widens the range to whole pages, which loses nothing
        // for the same reason.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                len as usize,
            )
        };
    }
}
