//! cairn-engine: Cairn's local filestore. Content-addressed blobs (named by their BLAKE3 hash)
//! in append-only segment files, read through memory maps, with group-committed fsyncs, hint
//! files for fast opening, crash recovery, compaction and scrubbing.
//!
//! A plain synchronous library: no async runtime, no network, no knowledge of other nodes.
//! A `Store` is cheap to clone and safe to use from many threads at once.
//!
//! What is durable when (`SyncMode`):
//! - `Always`: `put`, `delete` and a streaming `commit` return only after their record is on
//!   stable storage (concurrent callers share each fdatasync). A blob becomes visible to readers
//!   only once durable.
//! - `Interval { period_ms }`: writes return once in the page cache and are visible at once; a
//!   background thread fsyncs the open segment every `period_ms`. A power loss loses at most
//!   that window; a killed process loses nothing.
//! - `Never`: the engine fsyncs only when it seals a segment, writes a dedicated segment, and
//!   closes. A power loss may lose any write since the last seal.
//!
//! In every mode, blobs stored in a dedicated segment (large ones) are durable when their commit
//! returns, and recovery after any crash never returns a record whose checksums fail.

mod error;
pub mod format;
mod hash;
mod index;
pub mod latency;
pub mod limits;
mod segment;
pub mod storage;
mod store;

pub use error::{CorruptionKind, Error, ReadOnlyReason, Result};
pub use hash::{Hash, HashParseError, StreamHasher};
pub use store::{
    BlobStat, BlobWriter, CompactionReport, Config, RecoveryReport, ScrubReport, SegmentId, Stats,
    Store, SyncMode,
};

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use storage::Mapping;

/// A blob's bytes, read in place from its mapped segment: no copy. Cheap to clone, sendable
/// across threads; keeps the segment mapped for as long as it lives, even if compaction removes
/// the segment's file meanwhile.
#[derive(Clone)]
pub struct Blob {
    map: Arc<dyn Mapping>,
    start: u64,
    len: u64,
}

impl Blob {
    /// Lets go of the resident pages of the record this blob is the whole payload of (header,
    /// payload and table), and of those the kernel mapped around them: after a read whose
    /// bytes go nowhere else (`verify`, the scrub).
    pub(crate) fn release_record_pages(&self) {
        let around = limits::FAULT_AROUND_BYTES;
        let record_start = self.start.saturating_sub(limits::RECORD_HEADER_BYTES);
        let start = record_start.saturating_sub(around);
        let end = (record_start + format::record_bytes(self.len) + around).min(self.map.len());
        self.map.release_range(start, end - start);
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.bytes(self.start, self.len)
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests;
