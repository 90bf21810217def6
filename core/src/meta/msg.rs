//! The metadata messages between owners (carried as `PeerMsg::Meta`), and what they carry: a
//! page of a partition, and a partition's digest.

use serde::{Deserialize, Serialize};

use super::hlc::Stamp;
use super::key::{Entry, MetaKey, Partition};

/// A page of a partition's entries, tombstones included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<(Vec<u8>, Entry)>,
    /// Entries past the last one were left off (a limit was reached).
    pub truncated: bool,
}

/// A summary of a partition: equal summaries mean (almost surely) equal contents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub xor: u64,
    pub count: u64,
}

impl Digest {
    /// Adds one stored entry: its key's byte form (`MetaKey::encode`) and its stamp.
    pub fn add(&mut self, stored_key: &[u8], stamp: Stamp) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(stored_key);
        hasher.update(&stamp.wall_ms.to_le_bytes());
        hasher.update(&stamp.counter.to_le_bytes());
        hasher.update(&stamp.node.to_le_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        self.xor ^= u64::from_le_bytes(first);
        self.count += 1;
    }
}

/// A metadata request between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaMsg {
    /// Merge these entries (one partition).
    Write {
        writes: Vec<(MetaKey, Entry)>,
    },
    Read {
        key: MetaKey,
    },
    /// A page of a partition after `after`, with `prefix`, tombstones included.
    Scan {
        part: Partition,
        after: Option<Vec<u8>>,
        prefix: Vec<u8>,
        limit: u32,
    },
    Digest {
        part: Partition,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaReply {
    /// The entries were merged; `newer`: the highest stamp this owner kept over one of them
    /// (a write it had seen with a higher stamp), if any.
    Written {
        newer: Option<Stamp>,
    },
    Entry(Option<Entry>),
    Page(Page),
    Digest(Digest),
    Failed {
        message: String,
    },
}
