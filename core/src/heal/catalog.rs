//! What the healer may read of the local store: a narrow, synchronous view. Implementations
//! answer from memory; the healer never waits on a disk.

use super::entry::{BlobHash, Entry, Summary};

/// What the healer reads of the local store. Implementations answer from memory (the engine's
/// index, the version table); nothing here waits on a disk.
pub trait Catalog {
    /// Summary of this node's entries under the prefix whose replicas include `peer`.
    fn summary(&self, peer: &str, prefix_bits: u32, prefix: u32) -> Summary;
    /// Up to `limit` of those entries after `after`, in hash order.
    fn entries(
        &self,
        peer: &str,
        prefix_bits: u32,
        prefix: u32,
        after: Option<&BlobHash>,
        limit: usize,
    ) -> Vec<Entry>;
    /// This node's entry for a hash.
    fn entry(&self, hash: &BlobHash) -> Option<Entry>;
    /// Up to `limit` of all local entries after `after`, in hash order, whatever their placement.
    fn scan(&self, after: Option<&BlobHash>, limit: usize) -> Vec<Entry>;
    /// Up to `limit` versioned entries after `after`, in hash order, with the time (on this
    /// node's clock) each was recorded here.
    fn versioned(&self, after: Option<&BlobHash>, limit: usize) -> Vec<(Entry, u64)>;
}
