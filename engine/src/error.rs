//! The engine's error type: what went wrong and where, never a bare string.

use std::io;
use std::path::PathBuf;

use crate::Hash;

/// Why the store refuses writes. Once read-only, a store stays so until it is reopened: a failed
/// fsync may have dropped dirty pages that Linux then marks clean, so retrying it could report
/// success for data that is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadOnlyReason {
    #[error(
        "fsync of {path} failed ({kind:?}): written data may be lost, reopen the store to recover"
    )]
    FsyncFailed { path: PathBuf, kind: io::ErrorKind },
    #[error("the store was opened read-only")]
    OpenedReadOnly,
}

/// What exactly failed a check on stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The record header's magic, version, kind or checksum is wrong.
    RecordHeader,
    /// The record points past the end of its segment.
    RecordBounds,
    /// The header names another hash than the one the index points at.
    HashNameMismatch,
    /// The checksum of the chunk checksum table is wrong.
    ChecksumTable,
    /// A payload chunk's CRC32 is wrong.
    PayloadChecksum { chunk_index: u64 },
    /// The payload's BLAKE3 is not the blob's name (found by `verify` and `scrub`).
    ContentHash,
    /// The segment header is unreadable.
    SegmentHeader,
}

/// Every error the engine returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the disk is full while {op} {path}; the store stays readable")]
    DiskFull { op: &'static str, path: PathBuf },
    #[error("corrupted data in segment {segment} at offset {offset}: {kind:?}")]
    Corrupted {
        segment: u32,
        offset: u64,
        kind: CorruptionKind,
    },
    #[error("blob {hash} is quarantined as corrupt and waits for repair")]
    Quarantined { hash: Hash },
    #[error("content hashes to {actual}, expected {expected}")]
    HashMismatch { expected: Hash, actual: Hash },
    #[error("store full: {needed_bytes} bytes needed, {free_bytes} free")]
    StoreFull { needed_bytes: u64, free_bytes: u64 },
    #[error("blob of {bytes} bytes is over the limit of {max_bytes} bytes")]
    BlobTooLarge { bytes: u64, max_bytes: u64 },
    #[error("range {offset}+{length_bytes} is outside a blob of {blob_bytes} bytes")]
    RangeOutOfBounds {
        offset: u64,
        length_bytes: u64,
        blob_bytes: u64,
    },
    #[error("the store is read-only: {0}")]
    ReadOnly(ReadOnlyReason),
    #[error("no {what} are left; the store takes no more writes")]
    IdsExhausted { what: &'static str },
    #[error("an earlier write to this streaming writer failed; nothing was stored")]
    WriterFailed,
    #[error("the blob was announced as {announced_bytes} bytes but {written_bytes} were written")]
    LengthMismatch {
        announced_bytes: u64,
        written_bytes: u64,
    },
    #[error("{path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("invalid config: {field} {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: &'static str,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path, mapping ENOSPC to `DiskFull`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull { op, path }
        } else {
            Error::Io { op, path, source }
        }
    }
}
