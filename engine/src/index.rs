//! The in-memory index: hash to record location, in 16 bytes an entry.
//!
//! An entry is keyed on the first 8 bytes of the hash (a `u64`) and holds a 4-byte segment id
//! and a 4-byte offset; the full hash lives in the record header on disk. Two hashes that share
//! their first 8 bytes (about one pair in 10^10 among a million blobs) are told apart by reading
//! the header, and the second goes to a small overflow map keyed on the full hash. The map is
//! split into `INDEX_SHARD_COUNT` shards, chosen by hash byte 8, each behind its own lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::RwLock;

use crate::Hash;
use crate::limits::INDEX_SHARD_COUNT;

/// Where a blob's record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment_id: u32,
    pub offset: u32,
}

/// The keys are already uniformly random (BLAKE3 output), so hashing them again is waste.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type PrefixMap = HashMap<u64, Location, BuildHasherDefault<PrefixHasher>>;

#[derive(Default)]
struct Shard {
    map: PrefixMap,
    /// Entries whose 8-byte prefix is taken by another hash in `map`.
    overflow: HashMap<Hash, Location>,
}

/// Reads the full hash of the record at a location; `None` if the header is unreadable, in
/// which case the entry is taken to be the hash asked about (a later read reports the damage).
pub(crate) type NameOf<'a> = &'a dyn Fn(Location) -> Option<Hash>;

pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
}

fn shard_of(hash: &Hash) -> usize {
    usize::from(hash.as_bytes()[8]) & (INDEX_SHARD_COUNT - 1)
}

enum Slot {
    Primary,
    Overflow,
}

impl Shard {
    /// Which slot holds `hash`, and its location if present.
    fn find(&self, hash: &Hash, name_of: NameOf<'_>) -> (Slot, Option<Location>) {
        match self.map.get(&hash.prefix_u64()) {
            None => (Slot::Primary, None),
            Some(&loc) => {
                if name_of(loc).is_none_or(|name| name == *hash) {
                    (Slot::Primary, Some(loc))
                } else {
                    (Slot::Overflow, self.overflow.get(hash).copied())
                }
            }
        }
    }
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            shards: (0..INDEX_SHARD_COUNT)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
        }
    }

    pub(crate) fn get(&self, hash: &Hash, name_of: NameOf<'_>) -> Option<Location> {
        self.shards[shard_of(hash)].read().find(hash, name_of).1
    }

    /// The entry in the primary slot of `hash`'s 8-byte prefix, without reading any header: the
    /// read path's fast lookup. It may belong to another hash with the same prefix, so the
    /// caller must check the name in the record header (and fall back to `get`).
    pub(crate) fn get_by_prefix(&self, hash: &Hash) -> Option<Location> {
        self.shards[shard_of(hash)]
            .read()
            .map
            .get(&hash.prefix_u64())
            .copied()
    }

    /// Atomically replaces the entry of `hash` with `f(current)`; returns the previous entry.
    pub(crate) fn update(
        &self,
        hash: &Hash,
        name_of: NameOf<'_>,
        f: impl FnOnce(Option<Location>) -> Option<Location>,
    ) -> Option<Location> {
        let mut shard = self.shards[shard_of(hash)].write();
        let (slot, current) = shard.find(hash, name_of);
        let next = f(current);
        let key = hash.prefix_u64();
        match (slot, next) {
            (Slot::Primary, Some(loc)) => {
                shard.map.insert(key, loc);
            }
            (Slot::Overflow, Some(loc)) => {
                shard.overflow.insert(*hash, loc);
            }
            (Slot::Overflow, None) => {
                shard.overflow.remove(hash);
            }
            (Slot::Primary, None) => {
                if current.is_some() {
                    shard.map.remove(&key);
                    // Keep the invariant that an empty primary slot has no overflow entries
                    // with its prefix, by promoting one.
                    let promoted = shard
                        .overflow
                        .keys()
                        .find(|h| h.prefix_u64() == key)
                        .copied();
                    if let Some(h) = promoted {
                        let loc = shard.overflow.remove(&h).expect("just found");
                        shard.map.insert(key, loc);
                    }
                }
            }
        }
        current
    }

    /// Every (hash, location) whose 8-byte prefix is in `[prefix_start, prefix_end]`, with the
    /// full hash read through `name_of` (entries whose header is unreadable are skipped).
    pub(crate) fn entries_in(
        &self,
        prefix_start: u64,
        prefix_end: u64,
        name_of: NameOf<'_>,
    ) -> Vec<(Hash, Location)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (&key, &loc) in &shard.map {
                // An entry whose record names a hash of another prefix came from a damaged
                // hint; it is not this record's entry and is skipped.
                if (prefix_start..=prefix_end).contains(&key)
                    && let Some(name) = name_of(loc)
                    && name.prefix_u64() == key
                {
                    out.push((name, loc));
                }
            }
            for (&hash, &loc) in &shard.overflow {
                if (prefix_start..=prefix_end).contains(&hash.prefix_u64()) {
                    out.push((hash, loc));
                }
            }
        }
        out
    }

    pub(crate) fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                let s = s.read();
                (s.map.len() + s.overflow.len()) as u64
            })
            .sum()
    }

    /// An estimate of the heap the index holds, from the tables' capacities (the benchmark
    /// measures the real figure with a counting allocator).
    pub(crate) fn heap_bytes(&self) -> u64 {
        let entry = std::mem::size_of::<(u64, Location)>() as u64;
        let overflow_entry = std::mem::size_of::<(Hash, Location)>() as u64;
        self.shards
            .iter()
            .map(|s| {
                let s = s.read();
                // A hashbrown table has a power-of-two bucket count with capacity 7/8 of it, and one
                // control byte per bucket.
                let buckets = |cap: usize| {
                    if cap == 0 {
                        0
                    } else {
                        (cap * 8 / 7).next_power_of_two() as u64
                    }
                };
                buckets(s.map.capacity()) * (entry + 1)
                    + buckets(s.overflow.capacity()) * (overflow_entry + 1)
            })
            .sum()
    }
}

const _: () = assert!(std::mem::size_of::<(u64, Location)>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_with_prefix(prefix: u64, tail: u8) -> Hash {
        let mut b = [tail; 32];
        b[..8].copy_from_slice(&prefix.to_be_bytes());
        Hash::from_bytes(b)
    }

    #[test]
    fn colliding_prefixes_are_kept_apart() {
        let index = Index::new();
        let a = hash_with_prefix(7, 1);
        let b = hash_with_prefix(7, 2);
        // The "disk": which hash lives at which location.
        let names = |loc: Location| Some(if loc.offset == 100 { a } else { b });
        let la = Location {
            segment_id: 1,
            offset: 100,
        };
        let lb = Location {
            segment_id: 1,
            offset: 200,
        };
        index.update(&a, &names, |_| Some(la));
        index.update(&b, &names, |_| Some(lb));
        assert_eq!(index.get(&a, &names), Some(la));
        assert_eq!(index.get(&b, &names), Some(lb));
        assert_eq!(index.len(), 2);
        // Removing the primary promotes the overflow entry.
        assert_eq!(index.update(&a, &names, |_| None), Some(la));
        assert_eq!(index.get(&a, &names), None);
        assert_eq!(index.get(&b, &names), Some(lb));
        let mut all = index.entries_in(0, u64::MAX, &names);
        all.sort_by_key(|e| e.0);
        assert_eq!(all, vec![(b, lb)]);
    }
}
