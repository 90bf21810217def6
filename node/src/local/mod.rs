//! This node's own durable state and its views of it, all synchronous: the version table and
//! the hint log (small checksummed record logs), the metadata store (redb), the small files a
//! node keeps beside them (its adopted layout, where its scrub stands, when it was last alive),
//! and the catalog the healer reads. Nothing here knows about the network or the other nodes.

pub mod catalog;
pub mod files;
pub mod hint_log;
pub mod meta_store;
pub mod recordlog;
pub mod space;
pub mod versions;

/// Bytes the file system holding `path` has free for an unprivileged writer.
pub fn fs_available_bytes(path: &std::path::Path) -> Option<u64> {
    fs_space(path).map(|s| s.available_bytes)
}

/// The size of the file system holding a path, and what an unprivileged writer has free.
#[derive(Clone, Copy, Debug)]
pub struct FsSpace {
    pub available_bytes: u64,
    pub total_bytes: u64,
}

pub fn fs_space(path: &std::path::Path) -> Option<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    Some(FsSpace {
        available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
    })
}
