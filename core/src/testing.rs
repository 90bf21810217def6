//! Helpers for tests and the simulator (feature `testing`): an in-memory [`Catalog`], and a
//! small seeded generator. Nothing here is used by the node.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::heal::{BlobHash, Catalog, Entry, Summary, prefix_bounds};
use crate::routing::Routing;

/// splitmix64: small, fast, seedable, good enough to pick sizes, timings and faults.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no answer");
        self.next_u64() % n
    }

    /// A number in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "between({lo}, {hi}) is empty");
        lo + self.below(hi - lo + 1)
    }
}

/// A catalog held in memory: what the simulator and the tests give the healer in place of a
/// store. Each entry keeps the time it was recorded.
#[derive(Clone)]
pub struct MemoryCatalog {
    self_id: String,
    routing: Arc<Routing>,
    pub entries: BTreeMap<BlobHash, (Entry, u64)>,
}

impl MemoryCatalog {
    pub fn new(self_id: &str, routing: Arc<Routing>) -> MemoryCatalog {
        MemoryCatalog {
            self_id: self_id.to_string(),
            routing,
            entries: BTreeMap::new(),
        }
    }

    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    pub fn set_routing(&mut self, routing: Arc<Routing>) {
        self.routing = routing;
    }

    /// The same entries, as another node's catalog.
    pub fn clone_as(&self, id: &str) -> MemoryCatalog {
        let mut c = self.clone();
        c.self_id = id.to_string();
        c
    }

    fn shares(&self, peer: &str, hash: &BlobHash) -> bool {
        let layout = &self.routing.layout;
        let replicas = self
            .routing
            .placement
            .replicas(&cairn_engine::Hash::from_bytes(*hash));
        let has = |id: &str| replicas.iter().any(|&i| layout.nodes[i as usize].id == id);
        has(&self.self_id) && has(peer)
    }

    fn in_prefix(
        &self,
        prefix_bits: u32,
        prefix: u32,
    ) -> impl Iterator<Item = (&BlobHash, &(Entry, u64))> {
        let (start, end) = prefix_bounds(prefix_bits.min(32), prefix);
        match end {
            Some(end) => self.entries.range(start..end),
            None => self.entries.range(start..),
        }
    }
}

impl Catalog for MemoryCatalog {
    fn summary(&self, peer: &str, prefix_bits: u32, prefix: u32) -> Summary {
        self.in_prefix(prefix_bits, prefix)
            .filter(|(h, _)| self.shares(peer, h))
            .map(|(_, (e, _))| e)
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
        self.in_prefix(prefix_bits, prefix)
            .filter(|(h, _)| after.is_none_or(|a| *h > a))
            .filter(|(h, _)| self.shares(peer, h))
            .take(limit)
            .map(|(_, (e, _))| *e)
            .collect()
    }

    fn entry(&self, hash: &BlobHash) -> Option<Entry> {
        self.entries.get(hash).map(|(e, _)| *e)
    }

    fn scan(&self, after: Option<&BlobHash>, limit: usize) -> Vec<Entry> {
        let iter: Box<dyn Iterator<Item = _>> = match after {
            Some(a) => Box::new(
                self.entries
                    .range((std::ops::Bound::Excluded(*a), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(self.entries.iter()),
        };
        iter.take(limit).map(|(_, (e, _))| *e).collect()
    }

    fn versioned(&self, after: Option<&BlobHash>, limit: usize) -> Vec<(Entry, u64)> {
        let iter: Box<dyn Iterator<Item = _>> = match after {
            Some(a) => Box::new(
                self.entries
                    .range((std::ops::Bound::Excluded(*a), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(self.entries.iter()),
        };
        iter.filter(|(_, (e, _))| e.version > 0)
            .take(limit)
            .map(|(_, v)| *v)
            .collect()
    }
}
