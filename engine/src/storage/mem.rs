//! `MemStorage`: an in-memory file system that remembers what is durable, so that `crash` can
//! produce the state a power loss could leave: synced data intact, unsynced writes lost, kept or
//! torn in any combination, and directory changes after the last directory sync kept only as a
//! prefix in the order they were made (what a journaling file system such as ext4 promises).

use std::any::Any;
use std::cell::UnsafeCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Mapping, Storage, StorageFile};
use crate::limits::DIRECT_WRITE_ALIGN_BYTES;

/// An in-memory file system for tests.
#[derive(Clone, Default)]
pub struct MemStorage {
    fs: Arc<Mutex<Fs>>,
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemStorage")
    }
}

#[derive(Default)]
struct Fs {
    /// The namespace at the start of `ops`.
    base: BTreeMap<PathBuf, Arc<MemFile>>,
    names: BTreeMap<PathBuf, Arc<MemFile>>,
    dirs: BTreeSet<PathBuf>,
    /// Namespace changes since `base`, in order.
    ops: Vec<NameOp>,
    /// `ops[..durable_op_count]` survive a crash.
    durable_op_count: usize,
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
}

#[derive(Clone)]
enum NameOp {
    Create(PathBuf, Arc<MemFile>),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl NameOp {
    fn touches(&self, dir: &Path) -> bool {
        match self {
            NameOp::Create(p, _) | NameOp::Remove(p) => p.parent() == Some(dir),
            NameOp::Rename(a, b) => a.parent() == Some(dir) || b.parent() == Some(dir),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Arc<MemFile>>) {
        match self {
            NameOp::Create(p, f) => {
                names.insert(p.clone(), f.clone());
            }
            NameOp::Rename(a, b) => {
                if let Some(f) = names.remove(a) {
                    names.insert(b.clone(), f);
                }
            }
            NameOp::Remove(p) => {
                names.remove(p);
            }
        }
    }
}

/// A fixed-size byte buffer that writers fill through raw pointers while readers hold slices of
/// other ranges (the `Mapping` contract keeps the two apart).
struct Buffer(Box<[UnsafeCell<u8>]>);

// SAFETY: all writes go through `MemFile::write_at` under the file's mutex, and the engine never
// reads a range that is being written (see `Mapping`), so no byte is accessed concurrently by a
// writer and anyone else.
unsafe impl Sync for Buffer {}

impl Buffer {
    fn zeroed(len: usize) -> Buffer {
        let boxed: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        // SAFETY: UnsafeCell<u8> has the same layout as u8.
        Buffer(unsafe { Box::from_raw(Box::into_raw(boxed) as *mut [UnsafeCell<u8>]) })
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }

    fn ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.0.as_ptr())
    }

    /// # Safety
    /// No one may be writing `[start, start + len)` while the slice lives.
    unsafe fn slice(&self, start: usize, len: usize) -> &[u8] {
        assert!(start + len <= self.capacity());
        // SAFETY: in bounds (checked above); no concurrent writer (the caller's promise).
        unsafe { std::slice::from_raw_parts(self.ptr().add(start), len) }
    }

    /// # Safety
    /// No one may be reading or writing `[start, start + bytes.len())` meanwhile.
    unsafe fn write(&self, start: usize, bytes: &[u8]) {
        assert!(start + bytes.len() <= self.capacity());
        // SAFETY: in bounds; exclusive access to the range (the caller's promise).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr().add(start), bytes.len()) }
    }
}

enum DataOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

struct FileState {
    len: u64,
    buffer: Arc<Buffer>,
    durable: Vec<u8>,
    pending: Vec<DataOp>,
}

/// One in-memory file.
pub struct MemFile {
    state: Mutex<FileState>,
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemFile({} bytes)", self.state.lock().len)
    }
}

impl MemFile {
    fn with_contents(bytes: Vec<u8>) -> MemFile {
        let buffer = Buffer::zeroed(bytes.len());
        // SAFETY: the buffer is new; nobody else can see it.
        unsafe { buffer.write(0, &bytes) };
        MemFile {
            state: Mutex::new(FileState {
                len: bytes.len() as u64,
                buffer: Arc::new(buffer),
                durable: bytes,
                pending: Vec::new(),
            }),
        }
    }

    /// What a power loss could leave of this file, drawing choices from `rng`.
    fn crashed(&self, rng: &mut SplitMix) -> Vec<u8> {
        let st = self.state.lock();
        let mut out = st.durable.clone();
        for op in &st.pending {
            match op {
                DataOp::SetLen(len) => {
                    if rng.below(2) == 0 {
                        out.resize(*len as usize, 0);
                    }
                }
                DataOp::Write(offset, bytes) => {
                    let kept = match rng.below(4) {
                        0 => 0,
                        1 => rng.below(bytes.len() as u64 + 1) as usize,
                        _ => bytes.len(),
                    };
                    if kept > 0 {
                        let start = *offset as usize;
                        if out.len() < start + kept {
                            out.resize(start + kept, 0);
                        }
                        out[start..start + kept].copy_from_slice(&bytes[..kept]);
                    }
                }
            }
        }
        out
    }
}

fn grow(st: &mut FileState, len: u64) {
    if len as usize > st.buffer.capacity() {
        let new = Buffer::zeroed((len as usize).max(st.buffer.capacity() * 2));
        // SAFETY: `new` is private to us; the old buffer's first `st.len` bytes are not being
        // written (we hold the file's mutex, through which all writes go).
        unsafe { new.write(0, st.buffer.slice(0, st.len as usize)) };
        st.buffer = Arc::new(new);
    }
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        if len < st.len {
            // Zero what is cut off, so that extending again reads zeros like a real file.
            let cut = vec![0u8; (st.len - len) as usize];
            // SAFETY: the engine never truncates a range someone is reading.
            unsafe { st.buffer.write(len as usize, &cut) };
        } else {
            grow(&mut st, len);
        }
        st.len = len;
        st.pending.push(DataOp::SetLen(len));
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let end = offset + buf.len() as u64;
        grow(&mut st, end);
        // SAFETY: writes are serialized by the mutex; the engine never writes a range a reader
        // is looking at (the `Mapping` contract).
        unsafe { st.buffer.write(offset as usize, buf) };
        st.len = st.len.max(end);
        st.pending.push(DataOp::Write(offset, buf.to_vec()));
        Ok(())
    }

    /// Checks the alignment a real `O_DIRECT` write needs, so that tests on memory find a
    /// misaligned one, then writes as `write_at` (durable only once synced, as on a disk).
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<bool> {
        let align = DIRECT_WRITE_ALIGN_BYTES;
        assert!(
            offset.is_multiple_of(align as u64)
                && buf.len().is_multiple_of(align)
                && (buf.as_ptr() as usize).is_multiple_of(align),
            "a direct write of {} bytes at {offset} from {:p} is not aligned to {align}",
            buf.len(),
            buf.as_ptr()
        );
        self.write_at(buf, offset)?;
        Ok(true)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let st = self.state.lock();
        if offset + buf.len() as u64 > st.len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        // SAFETY: writes are serialized by the mutex we hold.
        buf.copy_from_slice(unsafe { st.buffer.slice(offset as usize, buf.len()) });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.pending);
        for op in pending {
            match op {
                DataOp::SetLen(len) => st.durable.resize(len as usize, 0),
                DataOp::Write(offset, bytes) => {
                    let end = offset as usize + bytes.len();
                    if st.durable.len() < end {
                        st.durable.resize(end, 0);
                    }
                    st.durable[offset as usize..end].copy_from_slice(&bytes);
                }
            }
        }
        Ok(())
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        let st = self.state.lock();
        Ok(Arc::new(MemMapping {
            buffer: st.buffer.clone(),
            len: st.len,
        }))
    }
}

struct MemMapping {
    buffer: Arc<Buffer>,
    len: u64,
}

impl fmt::Debug for MemMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemMapping({} bytes)", self.len)
    }
}

impl Mapping for MemMapping {
    fn len(&self) -> u64 {
        self.len
    }

    fn bytes(&self, start: u64, len: u64) -> &[u8] {
        assert!(start + len <= self.len, "read past the end of a mapping");
        // SAFETY: the `Mapping` contract: nobody writes a range while it is being read.
        unsafe { self.buffer.slice(start as usize, len as usize) }
    }
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// The state a power loss at this instant could leave, as a new file system; `seed` picks
    /// which unsynced writes survive, whole or torn. This one is left untouched.
    pub fn crash(&self, seed: u64) -> MemStorage {
        let fs = self.fs.lock();
        let mut rng = SplitMix(seed);
        let keep = fs.durable_op_count
            + rng.below((fs.ops.len() - fs.durable_op_count) as u64 + 1) as usize;
        let mut names = fs.base.clone();
        for op in &fs.ops[..keep] {
            op.apply(&mut names);
        }
        let mut files = BTreeMap::new();
        for (path, file) in names {
            files.insert(
                path,
                Arc::new(MemFile::with_contents(file.crashed(&mut rng))),
            );
        }
        MemStorage {
            fs: Arc::new(Mutex::new(Fs {
                base: files.clone(),
                names: files,
                dirs: fs.dirs.clone(),
                ops: Vec::new(),
                durable_op_count: 0,
                locks: Arc::default(),
            })),
        }
    }

    /// Overwrites bytes of a file directly, as bit rot or a stray write would. For tests.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .fs
            .lock()
            .names
            .get(path)
            .cloned()
            .ok_or(io::ErrorKind::NotFound)?;
        let mut st = file.state.lock();
        if offset + bytes.len() as u64 > st.len {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a test's deliberate damage; the engine under test must cope with any bytes.
        unsafe { st.buffer.write(offset as usize, bytes) };
        let end = offset as usize + bytes.len();
        if st.durable.len() >= end {
            st.durable[offset as usize..end].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// Paths of every file, for tests.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.fs.lock().names.keys().cloned().collect()
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        for d in dir.ancestors() {
            fs.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs.lock();
        if !fs.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(fs
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut fs = self.fs.lock();
        if !path.parent().is_some_and(|d| fs.dirs.contains(d)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if fs.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let file = Arc::new(MemFile::with_contents(Vec::new()));
        fs.names.insert(path.to_path_buf(), file.clone());
        fs.ops
            .push(NameOp::Create(path.to_path_buf(), file.clone()));
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let fs = self.fs.lock();
        let file = fs.names.get(path).cloned().ok_or(io::ErrorKind::NotFound)?;
        Ok(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        let file = fs.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        fs.names.insert(to.to_path_buf(), file);
        fs.ops
            .push(NameOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.names.remove(path).ok_or(io::ErrorKind::NotFound)?;
        fs.ops.push(NameOp::Remove(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs.lock();
        if let Some(last) = fs.ops.iter().rposition(|op| op.touches(dir)) {
            fs.durable_op_count = fs.durable_op_count.max(last + 1);
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let locks = self.fs.lock().locks.clone();
        if !locks.lock().insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock {
            locks,
            path: path.to_path_buf(),
        })))
    }
}

struct MemLock {
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
    path: PathBuf,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.locks.lock().remove(&self.path);
    }
}

/// splitmix64: a tiny, seedable source of choices for `crash`.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)`; `n` must be positive.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_data_and_synced_names() {
        let fs = MemStorage::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(b"world", 5).unwrap();
        let g = fs.create(&dir.join("b")).unwrap();
        g.write_at(b"x", 0).unwrap();
        for seed in 0..50 {
            let after = fs.crash(seed);
            let a = after.open(&dir.join("a")).unwrap();
            let mut head = [0u8; 5];
            a.read_at(&mut head, 0).unwrap();
            assert_eq!(&head, b"hello");
            assert!(a.len().unwrap() <= 10);
        }
        // Some seed loses the unsynced creation of b, some keeps it.
        let kept: Vec<bool> = (0..50)
            .map(|s| fs.crash(s).open(&dir.join("b")).is_ok())
            .collect();
        assert!(kept.contains(&true) && kept.contains(&false));
    }
}
