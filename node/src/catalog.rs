//! The node's [`Catalog`]: what the healer reads of the local store, answered from memory (the
//! engine's index and the version table).
//!
//! Summaries of large prefixes come from a table of per-peer summaries over the
//! `SUMMARY_BUCKET_BITS` high bits of the hash, built by one pass over the index and reused
//! until the store changes or `SUMMARY_CACHE_MS_MAX` passes. Smaller prefixes are summarized
//! from their entries. A summary that lags the store only makes a session look closer, or
//! compare a few more entries; the entries themselves are always read fresh.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cairn_client::Routing;
use cairn_engine::{BlobStat, Hash, Store};
use parking_lot::{Mutex, RwLock};

use crate::heal::{BlobHash, Catalog, Entry, EntryKind, Summary, prefix_bounds, prefix_of};
use crate::versions::VersionTable;

/// Prefix bits of the cached per-peer summary table (4096 buckets, 64 KiB per peer).
pub const SUMMARY_BUCKET_BITS: u32 = 12;

/// Longest a cached summary table is used.
pub const SUMMARY_CACHE_MS_MAX: u64 = 2_000;

/// Hashes read from the engine's index per page while scanning.
pub const SCAN_PAGE_ENTRIES: usize = 65_536;

struct SummaryTable {
    generation: u64,
    layout_version: u64,
    built: Instant,
    /// Per peer: one summary per bucket.
    per_peer: HashMap<String, Vec<Summary>>,
}

pub struct NodeCatalog {
    id: String,
    store: Store,
    versions: Arc<VersionTable>,
    routing: RwLock<Arc<Routing>>,
    generation: AtomicU64,
    table: Mutex<Option<Arc<SummaryTable>>>,
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
            table: Mutex::new(None),
        }
    }

    pub fn set_routing(&self, routing: Arc<Routing>) {
        *self.routing.write() = routing;
        self.touch();
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

    /// Local entries with `start <= hash < end`, in order, at most `limit`.
    fn range(&self, start: BlobHash, end: Option<BlobHash>, limit: usize) -> Vec<Entry> {
        let end_hash = end.map(Hash::from_bytes);
        let live = self
            .store
            .list(&Hash::from_bytes(start), end_hash.as_ref(), limit);
        let versioned = self.versions.range(Bound::Included(start), end, usize::MAX);
        let mut out = Vec::with_capacity(live.len());
        let mut v = versioned.into_iter().peekable();
        for h in live {
            let h = *h.as_bytes();
            while let Some(t) = v.peek().filter(|t| t.entry.hash < h) {
                if t.entry.kind == EntryKind::Tombstone {
                    out.push(t.entry);
                }
                v.next();
            }
            match v.peek().filter(|t| t.entry.hash == h) {
                Some(t) => {
                    out.push(t.entry);
                    v.next();
                }
                None => out.push(Entry::live(h, 0, 0)),
            }
            if out.len() >= limit {
                out.truncate(limit);
                return out;
            }
        }
        // Tombstones past the last live hash (the live list may have stopped at `limit`).
        let last_live = out.last().map(|e| e.hash);
        for t in v {
            if out.len() >= limit {
                break;
            }
            if t.entry.kind == EntryKind::Tombstone && last_live.is_none_or(|l| t.entry.hash > l) {
                out.push(t.entry);
            }
        }
        out.sort_by_key(|e| e.hash);
        out.truncate(limit);
        out
    }

    fn with_bytes(&self, mut e: Entry) -> Entry {
        if e.kind == EntryKind::Live
            && let Ok(BlobStat::Present { bytes }) = self.store.stat(&Hash::from_bytes(e.hash))
        {
            e.bytes = bytes;
        }
        e
    }

    fn table(&self) -> Arc<SummaryTable> {
        let generation = self.generation.load(Ordering::Relaxed);
        let routing = self.routing.read().clone();
        let mut slot = self.table.lock();
        if let Some(t) = slot.as_ref()
            && t.generation == generation
            && t.layout_version == routing.layout.version
            && t.built.elapsed().as_millis() < SUMMARY_CACHE_MS_MAX as u128
        {
            return t.clone();
        }
        let buckets = 1usize << SUMMARY_BUCKET_BITS;
        let mut per_peer: HashMap<String, Vec<Summary>> = HashMap::new();
        let mut after: Option<BlobHash> = None;
        loop {
            let start = match after {
                None => [0u8; 32],
                Some(h) => match next_hash(&h) {
                    Some(n) => n,
                    None => break,
                },
            };
            let page = self.range(start, None, SCAN_PAGE_ENTRIES);
            for e in &page {
                let Some(ids) = self.sharing(&routing, &e.hash) else {
                    continue;
                };
                let bucket = prefix_of(&e.hash, SUMMARY_BUCKET_BITS) as usize;
                for peer in ids.into_iter().filter(|p| *p != self.id) {
                    per_peer
                        .entry(peer.to_string())
                        .or_insert_with(|| vec![Summary::default(); buckets])[bucket]
                        .add(e);
                }
            }
            if page.len() < SCAN_PAGE_ENTRIES {
                break;
            }
            after = page.last().map(|e| e.hash);
        }
        let table = Arc::new(SummaryTable {
            generation,
            layout_version: routing.layout.version,
            built: Instant::now(),
            per_peer,
        });
        *slot = Some(table.clone());
        table
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
        if prefix_bits <= SUMMARY_BUCKET_BITS {
            let table = self.table();
            let Some(buckets) = table.per_peer.get(peer) else {
                return Summary::default();
            };
            let shift = SUMMARY_BUCKET_BITS - prefix_bits;
            let first = (prefix as usize) << shift;
            let mut s = Summary::default();
            for b in &buckets[first..first + (1usize << shift)] {
                s.digest ^= b.digest;
                s.count += b.count;
            }
            return s;
        }
        let mut s = Summary::default();
        for e in self.entries(peer, prefix_bits, prefix, None, usize::MAX) {
            s.add(&e);
        }
        s
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
        let mut out = Vec::new();
        loop {
            let page = self.range(start, end, SCAN_PAGE_ENTRIES);
            for e in &page {
                if self.shares(&routing, peer, &e.hash) {
                    out.push(self.with_bytes(*e));
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
            match page.last().and_then(|e| next_hash(&e.hash)) {
                Some(n) if page.len() == SCAN_PAGE_ENTRIES => start = n,
                _ => return out,
            }
        }
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
            .into_iter()
            .map(|e| self.with_bytes(e))
            .collect()
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
