//! Entries and their merge rule: what a node holds for one hash (a live copy or a tombstone,
//! with its version), which of two entries stands, and the prefix arithmetic and summaries the
//! comparison tree is built from. Everything else in healing, and the coordinators, decide by
//! [`compare`].

use serde::{Deserialize, Serialize};

/// A blob's name: its BLAKE3 hash.
pub type BlobHash = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    Live,
    Tombstone,
}

/// What a node holds for one hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub hash: BlobHash,
    pub kind: EntryKind,
    /// Milliseconds on the clock of the node that coordinated the put or delete; 0 for a live
    /// copy whose version was forgotten.
    pub version: u64,
    /// The blob's length (0 for a tombstone); paces transfers.
    pub bytes: u64,
}

fn mix64(mut x: u64) -> u64 {
    // splitmix64's finalizer: a bijection that spreads every input bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Entry {
    pub fn live(hash: BlobHash, version: u64, bytes: u64) -> Entry {
        Entry {
            hash,
            kind: EntryKind::Live,
            version,
            bytes,
        }
    }

    pub fn tombstone(hash: BlobHash, version: u64) -> Entry {
        Entry {
            hash,
            kind: EntryKind::Tombstone,
            version,
            bytes: 0,
        }
    }

    /// What this entry adds to a prefix summary. Live copies agree whatever their versions, so
    /// their digest leaves the version out; a tombstone's includes it.
    pub fn digest(&self) -> u64 {
        let a = u64::from_le_bytes(self.hash[8..16].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(self.hash[16..24].try_into().expect("8 bytes"));
        let base = mix64(a ^ mix64(b));
        match self.kind {
            EntryKind::Live => base,
            EntryKind::Tombstone => mix64(base ^ mix64(self.version ^ 0x746f_6d62_7374_6f6e)),
        }
    }

    fn rank(&self) -> (u64, u8) {
        match self.kind {
            EntryKind::Live => (self.version, 0),
            EntryKind::Tombstone => (self.version, 1),
        }
    }
}

/// Which of two entries for one hash stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Both say the same (two live copies, or the same tombstone).
    Agree,
    /// `ours` stands; the other side must learn it.
    Ours,
    /// `theirs` stands; this side must learn it.
    Theirs,
}

/// The merge rule of entries. `None` is "nothing here".
pub fn compare(ours: Option<&Entry>, theirs: Option<&Entry>) -> Verdict {
    match (ours, theirs) {
        (None, None) => Verdict::Agree,
        (Some(_), None) => Verdict::Ours,
        (None, Some(_)) => Verdict::Theirs,
        (Some(a), Some(b)) => {
            if a.kind == EntryKind::Live && b.kind == EntryKind::Live {
                return Verdict::Agree;
            }
            match a.rank().cmp(&b.rank()) {
                std::cmp::Ordering::Equal => Verdict::Agree,
                std::cmp::Ordering::Greater => Verdict::Ours,
                std::cmp::Ordering::Less => Verdict::Theirs,
            }
        }
    }
}

/// The high `bits` bits of a hash (at most 32).
pub fn prefix_of(hash: &BlobHash, bits: u32) -> u32 {
    debug_assert!(bits <= 32);
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes(hash[..4].try_into().expect("4 bytes"));
    top >> (32 - bits)
}

/// The first hash under a prefix, and the first past it (`None`: the end of the space).
pub fn prefix_bounds(bits: u32, prefix: u32) -> (BlobHash, Option<BlobHash>) {
    let mut start = [0u8; 32];
    if bits == 0 {
        return (start, None);
    }
    let shift = 32 - bits;
    start[..4].copy_from_slice(&(prefix << shift).to_be_bytes());
    let next = (prefix as u64 + 1) << shift;
    if next > u32::MAX as u64 {
        return (start, None);
    }
    let mut end = [0u8; 32];
    end[..4].copy_from_slice(&(next as u32).to_be_bytes());
    (start, Some(end))
}

/// Digest and count of the entries under a prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub digest: u64,
    pub count: u64,
}

impl Summary {
    pub fn add(&mut self, entry: &Entry) {
        self.digest ^= entry.digest();
        self.count += 1;
    }
}

impl<'a> FromIterator<&'a Entry> for Summary {
    fn from_iter<I: IntoIterator<Item = &'a Entry>>(entries: I) -> Summary {
        let mut s = Summary::default();
        entries.into_iter().for_each(|e| s.add(e));
        s
    }
}
