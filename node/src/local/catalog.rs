//! The node's [`Catalog`]: what the healer reads of the local store, answered from memory (the
//! engine's index and the version table).
//!
//! The engine's index is a hash map, so listing a range of hashes walks all of it. The catalog
//! therefore lists from a **snapshot**: every live hash, sorted into 4096 buckets by its
//! `SNAPSHOT_BUCKET_BITS` high bits, with per-peer summaries over the same buckets, all built in
//! one pass. A snapshot is rebuilt when the layout changes, or when the store has changed and
//! it is older than `SNAPSHOT_AGE_MS_MAX`. Tombstones and versions always come from the version
//! table, and each live hash listed is checked against the engine as it is returned. A snapshot
//! that lags the store misses at most the blobs of its last seconds: a session then compares a
//! few more entries, and the healer looks a hash up afresh before fetching it.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cairn_core::Routing;
use cairn_core::heal::{BlobHash, Catalog, Entry, EntryKind, Summary, prefix_bounds, prefix_of};
use cairn_engine::{BlobStat, Hash, Store};
use parking_lot::{Mutex, RwLock};

use super::versions::VersionTable;
use crate::clock;
use crate::limits::SNAPSHOT_AGE_MS_MAX;

/// Prefix bits of the snapshot's buckets (4096 buckets; per-peer summaries take 64 KiB each).
pub const SNAPSHOT_BUCKET_BITS: u32 = 12;

struct Snapshot {
    generation: u64,
    layout_version: u64,
    built: Instant,
    /// Live hashes, by bucket, each bucket sorted.
    buckets: Vec<Vec<BlobHash>>,
    /// Per peer: one summary per bucket of the live hashes both hold. Tombstones are added
    /// from the version table when a summary is asked for, so they are never stale: a
    /// session that completes has compared every tombstone recorded before it began, which
    /// is what lets a purge trust it.
    per_peer: HashMap<String, Vec<Summary>>,
}

pub struct NodeCatalog {
    id: String,
    store: Store,
    versions: Arc<VersionTable>,
    routing: RwLock<Arc<Routing>>,
    generation: AtomicU64,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl NodeCatalog {
    pub fn new(
        id: &str,
        store: Store,
        versions: Arc<VersionTable>,
        routing: Arc<Routing>,
    ) -> NodeCatalog {
        NodeCatalog {
            id: id.to_string(),
            store,
            versions,
            routing: RwLock::new(routing),
            generation: AtomicU64::new(0),
            snapshot: Mutex::new(None),
        }
    }

    pub fn set_routing(&self, routing: Arc<Routing>) {
        *self.routing.write() = routing;
        self.touch();
    }

    /// Drops the snapshot: the next question rebuilds it, however young it was. For when the
    /// store changed behind the node's back (the benchmark removes blobs directly).
    pub fn invalidate(&self) {
        *self.snapshot.lock() = None;
    }

    /// The local store changed: summaries must be rebuilt.
    pub fn touch(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Ids of the nodes that hold `hash` under the current layout, if this node is one of them.
    fn sharing<'a>(&self, routing: &'a Routing, hash: &BlobHash) -> Option<Vec<&'a str>> {
        let replicas = routing.placement.replicas(&Hash::from_bytes(*hash));
        let ids: Vec<&str> = replicas
            .iter()
            .map(|&i| routing.layout.nodes[i as usize].id.as_str())
            .collect();
        ids.contains(&self.id.as_str()).then_some(ids)
    }

    fn shares(&self, routing: &Routing, peer: &str, hash: &BlobHash) -> bool {
        self.sharing(routing, hash)
            .is_some_and(|ids| ids.contains(&peer))
    }

    /// Local entries with `start <= hash < end`, in order, at most `limit`: live hashes from
    /// the snapshot that the engine still holds, and tombstones from the version table.
    fn range(&self, start: BlobHash, end: Option<BlobHash>, limit: usize) -> Vec<Entry> {
        let snap = self.snapshot();
        let mut live = Vec::new();
        let first = prefix_of(&start, SNAPSHOT_BUCKET_BITS) as usize;
        let last = end.map_or(snap.buckets.len() - 1, |e| {
            prefix_of(&e, SNAPSHOT_BUCKET_BITS) as usize
        });
        'buckets: for bucket in &snap.buckets[first..=last.min(snap.buckets.len() - 1)] {
            let from = bucket.partition_point(|h| *h < start);
            for h in &bucket[from..] {
                if end.is_some_and(|e| *h >= e) || live.len() >= limit {
                    break 'buckets;
                }
                live.push(*h);
            }
        }
        // Tombstones up to the last live hash taken (or the end, if the live ones ran out), so
        // none that belongs among the first `limit` is cut off.
        let upper = match live.last() {
            Some(h) if live.len() >= limit => next_hash(h),
            _ => end,
        };
        let tombstones: Vec<Entry> = self
            .versions
            .range(Bound::Included(start), upper, usize::MAX)
            .into_iter()
            .map(|v| v.entry)
            .filter(|e| e.kind == EntryKind::Tombstone)
            .collect();
        // Merge, then check each live hash against the engine (it may be gone since).
        let mut out = Vec::with_capacity(live.len() + tombstones.len());
        let (mut l, mut t) = (
            live.into_iter().peekable(),
            tombstones.into_iter().peekable(),
        );
        while out.len() < limit {
            let take_live = match (l.peek(), t.peek()) {
                (Some(h), Some(e)) => *h < e.hash,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_live {
                let h = l.next().expect("peeked");
                if t.peek().is_some_and(|e| e.hash == h) {
                    continue; // a tombstone stands for this hash; it comes next
                }
                if let Some(e) = self.entry(&h) {
                    out.push(e);
                }
            } else {
                out.push(t.next().expect("peeked"));
            }
        }
        out
    }

    /// The snapshot, rebuilt if the layout changed, or if the store changed and it is old.
    fn snapshot(&self) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Relaxed);
        let routing = self.routing.read().clone();
        let mut slot = self.snapshot.lock();
        if let Some(s) = slot.as_ref()
            && s.layout_version == routing.layout.version
            && (s.generation == generation || clock::since_ms(s.built) < SNAPSHOT_AGE_MS_MAX)
        {
            return s.clone();
        }
        let buckets_n = 1usize << SNAPSHOT_BUCKET_BITS;
        let mut buckets: Vec<Vec<BlobHash>> = vec![Vec::new(); buckets_n];
        for h in self.store.list(&Hash::MIN, None, usize::MAX) {
            let h = *h.as_bytes();
            buckets[prefix_of(&h, SNAPSHOT_BUCKET_BITS) as usize].push(h); // already sorted
        }
        let mut per_peer: HashMap<String, Vec<Summary>> = HashMap::new();
        let mut add = |e: &Entry| {
            let Some(ids) = self.sharing(&routing, &e.hash) else {
                return;
            };
            let bucket = prefix_of(&e.hash, SNAPSHOT_BUCKET_BITS) as usize;
            for peer in ids.into_iter().filter(|p| *p != self.id) {
                per_peer
                    .entry(peer.to_string())
                    .or_insert_with(|| vec![Summary::default(); buckets_n])[bucket]
                    .add(e);
            }
        };
        for h in buckets.iter().flatten() {
            // Live digests leave the version out, so no lookup is needed here.
            add(&Entry::live(*h, 0, 0));
        }
        let snap = Arc::new(Snapshot {
            generation,
            layout_version: routing.layout.version,
            built: clock::now(),
            buckets,
            per_peer,
        });
        *slot = Some(snap.clone());
        snap
    }

    /// Every local entry, in pages (for status figures and the benchmark).
    pub fn entry_count(&self) -> u64 {
        self.store.stats().blob_count + self.versions.tombstone_count() as u64
    }
}

/// The hash right after `h`, or `None` after the last one.
fn next_hash(h: &BlobHash) -> Option<BlobHash> {
    let mut n = *h;
    for i in (0..32).rev() {
        if n[i] == 0xff {
            n[i] = 0;
        } else {
            n[i] += 1;
            return Some(n);
        }
    }
    None
}

impl Catalog for NodeCatalog {
    fn summary(&self, peer: &str, prefix_bits: u32, prefix: u32) -> Summary {
        if prefix_bits <= SNAPSHOT_BUCKET_BITS {
            let snap = self.snapshot();
            let shift = SNAPSHOT_BUCKET_BITS - prefix_bits;
            let first = (prefix as usize) << shift;
            let mut s = Summary::default();
            if let Some(buckets) = snap.per_peer.get(peer) {
                for b in &buckets[first..first + (1usize << shift)] {
                    s.digest ^= b.digest;
                    s.count += b.count;
                }
            }
            let routing = self.routing.read().clone();
            let (start, end) = prefix_bounds(prefix_bits, prefix);
            for v in self.versions.range(Bound::Included(start), end, usize::MAX) {
                if v.entry.kind == EntryKind::Tombstone
                    && self.shares(&routing, peer, &v.entry.hash)
                {
                    s.add(&v.entry);
                }
            }
            return s;
        }
        self.entries(peer, prefix_bits, prefix, None, usize::MAX)
            .iter()
            .collect()
    }

    fn entries(
        &self,
        peer: &str,
        prefix_bits: u32,
        prefix: u32,
        after: Option<&BlobHash>,
        limit: usize,
    ) -> Vec<Entry> {
        let routing = self.routing.read().clone();
        let (mut start, end) = prefix_bounds(prefix_bits, prefix);
        if let Some(a) = after {
            match next_hash(a) {
                Some(n) if n > start => start = n,
                Some(_) => {}
                None => return Vec::new(),
            }
        }
        self.range(start, end, usize::MAX)
            .into_iter()
            .filter(|e| self.shares(&routing, peer, &e.hash))
            .take(limit)
            .collect()
    }

    fn entry(&self, hash: &BlobHash) -> Option<Entry> {
        let versioned = self.versions.get(hash).map(|v| v.entry);
        if let Some(t) = versioned.filter(|e| e.kind == EntryKind::Tombstone) {
            return Some(t);
        }
        match self.store.stat(&Hash::from_bytes(*hash)) {
            Ok(BlobStat::Present { bytes }) => {
                let version = versioned.map_or(0, |e| e.version);
                Some(Entry::live(*hash, version, bytes))
            }
            _ => None,
        }
    }

    fn scan(&self, after: Option<&BlobHash>, limit: usize) -> Vec<Entry> {
        let start = match after {
            None => [0u8; 32],
            Some(a) => match next_hash(a) {
                Some(n) => n,
                None => return Vec::new(),
            },
        };
        self.range(start, None, limit)
    }

    fn versioned(&self, after: Option<&BlobHash>, limit: usize) -> Vec<(Entry, u64)> {
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(*a));
        self.versions
            .range(start, None, limit)
            .into_iter()
            .filter_map(|v| match v.entry.kind {
                EntryKind::Tombstone => Some((v.entry, v.recorded_ms)),
                // A live version without its blob (dropped, or lost in a crash) is stale.
                EntryKind::Live => self
                    .entry(&v.entry.hash)
                    .filter(|e| e.kind == EntryKind::Live)
                    .map(|e| {
                        (
                            Entry {
                                version: v.entry.version,
                                ..e
                            },
                            v.recorded_ms,
                        )
                    }),
            })
            .collect()
    }
}
