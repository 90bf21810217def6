//! This node's own blob operations as a replica: making a received copy durable with its
//! version, applying a tombstone, dropping a handed-off copy, forgetting a version, and reading
//! a blob it holds for a front. Each keeps the engine, the version table and the catalog in
//! step under the hash's entry lock; the merge rule that decides is `cairn_core::heal::compare`.
//!
//! These are synchronous (they fsync): async callers run them with `spawn_blocking`.

use std::sync::Arc;

use bytes::Bytes;
use cairn_core::heal::{Catalog, Entry, Verdict, compare};
use cairn_core::wire::{ByteRange, ErrorCode};
use cairn_engine::{BlobStat, BlobWriter, Error as EngineError, Hash};

use crate::clock;
use crate::limits::LOCAL_READ_BYTES_MAX;
use crate::local::recordlog::LogError;
use crate::state::State;

/// Why an operation on this node's own copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("version table: {0}")]
    Versions(#[from] LogError),
    #[error("body hashes to {actual}, not {expected}")]
    HashMismatch { expected: Hash, actual: Hash },
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LocalError {
    /// The wire's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            LocalError::Engine(e) => engine_code(e),
            LocalError::HashMismatch { .. } => ErrorCode::HashMismatch,
            // The version log shares the disk: out of space there is the disk being full.
            LocalError::Versions(e) if e.source.kind() == std::io::ErrorKind::StorageFull => {
                ErrorCode::StoreFull
            }
            LocalError::Versions(_) | LocalError::Task(_) => ErrorCode::Internal,
        }
    }
}

/// Whether a local failure means the disk is full (the node records when it last was).
pub fn is_full(e: &LocalError) -> bool {
    e.code() == ErrorCode::StoreFull
}

/// Records a full disk if `e` says so: every local write that fails goes through here, so
/// the node is marked full whichever path (a replica's, a coordinator's own copy, a copy from
/// a peer) found it.
pub(crate) fn note_if_full(state: &State, e: &LocalError) {
    if is_full(e) {
        state.space.noticed_full(e);
    }
}

/// Refuses a repair's copy (from a peer's healer, a hint, a hand-off, or this node's own
/// fetch) while the node has a layout it could not write (a full disk cannot take the layout
/// file): space that comes back then goes first to that layout, whose retry is up to
/// `ADOPT_RETRY_MS_MAX` away, not to copies that fill the disk again at once. Copies come back
/// with the layout's adoption; client puts are not refused this way.
pub(crate) fn refuse_copy_while_layout_unadopted(state: &State) -> Result<(), CopyRefused> {
    match state.layout_unadopted() {
        Some((version, error)) => Err(CopyRefused { version, error }),
        None => Ok(()),
    }
}

/// Why this node takes no copies now (`refuse_copy_while_layout_unadopted`).
#[derive(Debug, thiserror::Error)]
#[error("this node takes no copies until it has written layout version {version} ({error})")]
pub struct CopyRefused {
    pub version: u64,
    pub error: String,
}

/// A writer for a blob of `len` bytes named `hash` (`Store::writer_for`). Placing a large one
/// in its segment may create a segment or seal a full one (fsyncs), so that runs off the async
/// threads.
pub(crate) async fn open_writer(
    store: &cairn_engine::Store,
    hash: Hash,
    len: u64,
) -> Result<BlobWriter, EngineError> {
    if !store.places(len) {
        return store.writer_for(hash, len);
    }
    let store = store.clone();
    crate::task::spawn_blocking(move || store.writer_for(hash, len))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The wire's code for an engine failure.
pub fn engine_code(e: &EngineError) -> ErrorCode {
    match e {
        EngineError::DiskFull { .. } | EngineError::StoreFull { .. } => ErrorCode::StoreFull,
        EngineError::BlobTooLarge { .. } => ErrorCode::BlobTooLarge,
        EngineError::HashMismatch { .. } => ErrorCode::HashMismatch,
        EngineError::Corrupted { .. } | EngineError::Quarantined { .. } => ErrorCode::Corrupted,
        EngineError::ReadOnly(_) => ErrorCode::ReadOnly,
        EngineError::RangeOutOfBounds { .. } => ErrorCode::RangeOutOfBounds,
        _ => ErrorCode::Internal,
    }
}

/// Whether an engine failure means the local copy is corrupt (and now quarantined).
pub fn is_corrupt(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Corrupted { .. } | EngineError::Quarantined { .. }
    )
}

/// The version of the tombstone of `hash` held here, 0 if none: what a replica reports as it
/// prepares a put, so that the put's coordinator can give the put a version that stands over
/// every delete acknowledged before it (see `cairn_core::coordinator`).
pub(crate) fn tombstone_version(state: &State, hash: &Hash) -> u64 {
    state
        .versions
        .tombstone(hash.as_bytes())
        .map_or(0, |t| t.version)
}

/// Whether a live entry of `hash` with `version` stands here: no tombstone of the hash, or an
/// older one.
fn stands(state: &State, hash: &[u8; 32], version: u64) -> bool {
    state
        .versions
        .tombstone(hash)
        .is_none_or(|t| compare(Some(&Entry::live(*hash, version, 0)), Some(&t)) == Verdict::Ours)
}

/// Makes a received blob durable and visible with its version (a put's, as its coordinator
/// decided it; a copy's own), unless a newer tombstone of the hash stands here: then the copy
/// is superseded and dropped, as if the delete had come after it.
pub(crate) fn commit_copy(
    state: &State,
    writer: BlobWriter,
    hash: Hash,
    version: u64,
) -> Result<(), LocalError> {
    let committed = commit_copy_locked(state, writer, hash, version);
    if let Err(e) = &committed {
        note_if_full(state, e);
    }
    committed
}

fn commit_copy_locked(
    state: &State,
    writer: BlobWriter,
    hash: Hash,
    version: u64,
) -> Result<(), LocalError> {
    let _guard = state.entry_lock(hash.as_bytes()).lock();
    if !stands(state, hash.as_bytes(), version) {
        return Ok(());
    }
    if version > 0 {
        state.versions.record(
            &[Entry::live(*hash.as_bytes(), version, 0)],
            clock::wall_ms(),
        )?;
    }
    writer.commit(Some(&hash))?;
    state.catalog.touch();
    // Rare (a writer on an older layout): only then is the healer's lock taken.
    let owned = state
        .routing()
        .replicas(&hash)
        .iter()
        .any(|n| n.id == state.id);
    if !owned {
        state.healing.healer.lock().on_local_write(hash.as_bytes());
    }
    Ok(())
}

/// A put of a blob held here without its bytes: if an intact copy of `len` bytes is here (read
/// and checked against its hash now: a copy counted towards a quorum must be good), it takes
/// the put's version; says whether it was here. A tombstone here means no copy: the put then
/// sends its bytes, and its commit stands over the tombstone.
pub(crate) fn refresh(
    state: &State,
    hash: Hash,
    len: u64,
    version: u64,
) -> Result<bool, LocalError> {
    // Checked outside the entry lock (it reads the whole blob), then confirmed under it.
    match state.store.verify(&hash) {
        Ok(Some(n)) if n == len => {}
        Ok(_) => return Ok(false),
        Err(e) if is_corrupt(&e) => {
            state.noticed_corrupt(hash);
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let _guard = state.entry_lock(hash.as_bytes()).lock();
    let live = state
        .catalog
        .entry(hash.as_bytes())
        .is_some_and(|e| e.kind == cairn_core::heal::EntryKind::Live);
    if !live || state.store.stat(&hash)? != (BlobStat::Present { bytes: len }) {
        return Ok(false);
    }
    if !stands(state, hash.as_bytes(), version) {
        return Ok(false);
    }
    state.versions.record(
        &[Entry::live(*hash.as_bytes(), version, 0)],
        clock::wall_ms(),
    )?;
    state.catalog.touch();
    Ok(true)
}

/// Records a tombstone if it stands over the local entry, then drops the local copy; says
/// whether a copy was here.
pub(crate) fn apply_tombstone(state: &State, tombstone: Entry) -> Result<bool, LocalError> {
    let _guard = state.entry_lock(&tombstone.hash).lock();
    let local = state.catalog.entry(&tombstone.hash);
    if compare(local.as_ref(), Some(&tombstone)) != Verdict::Theirs {
        return Ok(false);
    }
    state.versions.record(&[tombstone], clock::wall_ms())?;
    let existed = state.store.delete(&Hash::from_bytes(tombstone.hash))?;
    state.catalog.touch();
    Ok(existed)
}

/// Deletes a hash here: records its tombstone (if it stands over what is here) and drops the
/// bytes, off the async threads.
pub(crate) async fn local_delete(
    state: &Arc<State>,
    hash: Hash,
    version: u64,
) -> Result<bool, LocalError> {
    let s = state.clone();
    let tombstone = Entry::tombstone(*hash.as_bytes(), version);
    crate::task::spawn_blocking(move || apply_tombstone(&s, tombstone)).await?
}

/// Drops the local copy or tombstone of a hash this node no longer owns (its owners hold it).
pub(crate) fn drop_local(state: &State, hash: &[u8; 32]) -> Result<(), LocalError> {
    state.store.delete(&Hash::from_bytes(*hash))?;
    state.versions.forget(hash, None)?;
    state.catalog.touch();
    Ok(())
}

/// Forgets an entry's version (purges a tombstone, keeps a live copy as version 0), if the
/// entry is still the one the healer saw.
pub(crate) fn forget_version(state: &State, entry: &Entry) -> Result<(), LocalError> {
    state.versions.forget(&entry.hash, Some(entry))?;
    state.catalog.touch();
    Ok(())
}

/// A blob (or `range` of it) from this node's own engine, if the node is one of its replicas
/// and holds a good copy: a whole blob is hashed against its name, a range checked by the
/// engine's chunk CRCs. A corrupt copy is reported to the healer and `None` returned, so the
/// caller goes through the cluster instead.
pub(crate) async fn local_read(
    state: &Arc<State>,
    hash: Hash,
    range: Option<ByteRange>,
) -> Option<Bytes> {
    let routing = state.routing();
    if !routing.replicas(&hash).iter().any(|n| n.id == state.id) {
        return None;
    }
    let state = state.clone();
    let read = crate::task::spawn_blocking(move || {
        // Hashing first would hold back the first byte: large blobs stream instead.
        if range.is_none()
            && matches!(state.store.stat(&hash), Ok(BlobStat::Present { bytes }) if bytes > LOCAL_READ_BYTES_MAX)
        {
            return None;
        }
        let blob = match range {
            None => state.store.get(&hash),
            Some(r) => state.store.read_range(&hash, r.offset, r.len),
        };
        match blob {
            Ok(Some(blob)) if range.is_some() || Hash::of(&blob) == hash => {
                Some(Bytes::from_owner(blob))
            }
            Ok(Some(_)) => {
                state.noticed_corrupt(hash);
                None
            }
            Err(e) if is_corrupt(&e) => {
                state.noticed_corrupt(hash);
                None
            }
            Ok(None) | Err(_) => None,
        }
    });
    read.await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_under_the_version_log_is_reported_as_store_full() {
        let log = |kind| {
            LocalError::Versions(crate::local::recordlog::LogError {
                path: "versions.log".into(),
                source: std::io::Error::from(kind),
            })
        };
        assert_eq!(
            log(std::io::ErrorKind::StorageFull).code(),
            ErrorCode::StoreFull
        );
        assert!(is_full(&log(std::io::ErrorKind::StorageFull)));
        assert_eq!(
            log(std::io::ErrorKind::PermissionDenied).code(),
            ErrorCode::Internal
        );
    }
}
