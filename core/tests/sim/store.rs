//! A simulated node's store: the entries it holds (live copies with a corrupt flag, and
//! tombstones), split into what is durable and what a crash would lose, and the `Catalog` view
//! the healer reads. Owner sets are cached per entry and recomputed when the layout changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_core::heal::{BlobHash, Catalog, Entry, EntryKind, Summary, prefix_bounds};

use super::layouts::{SimLayout, node_ix};

/// One entry as a node holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub entry: Entry,
    /// When this node recorded it (its clock; the simulator has one clock).
    pub recorded_ms: u64,
    /// The bytes on disk no longer hash to the name (live copies only).
    pub corrupt: bool,
    /// Owners under the node's layout (a cache; bit `i` for node `i`).
    owners: u8,
}

/// The first bytes of a hash, for messages.
pub fn short(hash: &BlobHash) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry in a line: `hash:live@version` or `hash:tomb@version`.
pub fn entry_text(e: &Entry) -> String {
    let kind = match e.kind {
        EntryKind::Live => "live",
        EntryKind::Tombstone => "tomb",
    };
    format!("{}:{kind}@{}", short(&e.hash), e.version)
}

impl Slot {
    /// The slot in a line, for messages.
    pub fn text(&self) -> String {
        let corrupt = if self.corrupt { " (corrupt)" } else { "" };
        format!(
            "{} recorded at {}{corrupt}",
            entry_text(&self.entry),
            self.recorded_ms
        )
    }

    pub fn is_live(&self) -> bool {
        self.entry.kind == EntryKind::Live
    }

    pub fn is_good_live(&self) -> bool {
        self.is_live() && !self.corrupt
    }
}

/// What a node holds, as the healer sees it.
pub struct SimCatalog {
    me: usize,
    layout: Arc<SimLayout>,
    pub slots: BTreeMap<BlobHash, Slot>,
}

impl SimCatalog {
    pub fn new(me: usize, layout: Arc<SimLayout>) -> SimCatalog {
        SimCatalog {
            me,
            layout,
            slots: BTreeMap::new(),
        }
    }

    pub fn set_layout(&mut self, layout: Arc<SimLayout>) {
        for slot in self.slots.values_mut() {
            slot.owners = layout.owner_mask(&slot.entry.hash);
        }
        self.layout = layout;
    }

    pub fn get(&self, hash: &BlobHash) -> Option<&Slot> {
        self.slots.get(hash)
    }

    pub fn get_mut(&mut self, hash: &BlobHash) -> Option<&mut Slot> {
        self.slots.get_mut(hash)
    }

    /// Sets or removes the entry of `hash`.
    pub fn set(&mut self, hash: BlobHash, slot: Option<Slot>) {
        match slot {
            Some(mut slot) => {
                slot.owners = self.layout.owner_mask(&hash);
                self.slots.insert(hash, slot);
            }
            None => {
                self.slots.remove(&hash);
            }
        }
    }

    fn shares(&self, peer: &str, slot: &Slot) -> bool {
        let Some(peer) = node_ix(peer) else {
            return false;
        };
        let both = 1u8 << self.me | 1u8 << peer;
        slot.owners & both == both
    }

    fn in_prefix(&self, prefix_bits: u32, prefix: u32) -> impl Iterator<Item = &Slot> {
        let (start, end) = prefix_bounds(prefix_bits.min(32), prefix);
        match end {
            Some(end) => self.slots.range(start..end),
            None => self.slots.range(start..),
        }
        .map(|(_, s)| s)
    }

    fn after(&self, after: Option<&BlobHash>) -> impl Iterator<Item = &Slot> {
        let lower = match after {
            Some(a) => std::ops::Bound::Excluded(*a),
            None => std::ops::Bound::Unbounded,
        };
        self.slots
            .range((lower, std::ops::Bound::Unbounded))
            .map(|(_, s)| s)
    }
}

/// A new slot (its owner cache is filled when it is stored).
pub fn slot(entry: Entry, recorded_ms: u64) -> Slot {
    Slot {
        entry,
        recorded_ms,
        corrupt: false,
        owners: 0,
    }
}

impl Catalog for SimCatalog {
    fn summary(&self, peer: &str, prefix_bits: u32, prefix: u32) -> Summary {
        self.in_prefix(prefix_bits, prefix)
            .filter(|slot| self.shares(peer, slot))
            .map(|slot| &slot.entry)
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
            .filter(|s| after.is_none_or(|a| s.entry.hash > *a))
            .filter(|s| self.shares(peer, s))
            .take(limit)
            .map(|s| s.entry)
            .collect()
    }

    fn entry(&self, hash: &BlobHash) -> Option<Entry> {
        self.slots.get(hash).map(|s| s.entry)
    }

    fn scan(&self, after: Option<&BlobHash>, limit: usize) -> Vec<Entry> {
        self.after(after).take(limit).map(|s| s.entry).collect()
    }

    fn versioned(&self, after: Option<&BlobHash>, limit: usize) -> Vec<(Entry, u64)> {
        self.after(after)
            .filter(|s| s.entry.version > 0)
            .take(limit)
            .map(|s| (s.entry, s.recorded_ms))
            .collect()
    }
}

/// A node's store: the current state, the durable state, and which hashes differ (unsynced).
pub struct Store {
    pub current: SimCatalog,
    pub durable: BTreeMap<BlobHash, Slot>,
    unsynced: BTreeSet<BlobHash>,
    /// A tombstone applied by the healer is not durable yet.
    tombstone_unsynced: bool,
}

impl Store {
    pub fn new(me: usize, layout: Arc<SimLayout>) -> Store {
        Store {
            current: SimCatalog::new(me, layout),
            durable: BTreeMap::new(),
            unsynced: BTreeSet::new(),
            tombstone_unsynced: false,
        }
    }

    /// Writes an entry and syncs it before returning (acknowledged puts, deletes, copies,
    /// quarantines).
    pub fn write_durable(&mut self, hash: BlobHash, slot: Option<Slot>) {
        self.current.set(hash, slot);
        self.unsynced.remove(&hash);
        match self.current.get(&hash) {
            Some(s) => self.durable.insert(hash, *s),
            None => self.durable.remove(&hash),
        };
    }

    /// Writes an entry that the next sync makes durable.
    pub fn write_unsynced(&mut self, hash: BlobHash, slot: Option<Slot>) {
        self.current.set(hash, slot);
        self.unsynced.insert(hash);
    }

    /// Records a tombstone the healer applied; the next sync makes it durable, and so does the
    /// barrier before this node next tells a peer anything.
    pub fn write_tombstone_unsynced(&mut self, slot: Slot) {
        self.write_unsynced(slot.entry.hash, Some(slot));
        self.tombstone_unsynced = true;
    }

    /// Syncs if a tombstone the healer applied is not durable yet: peers take what this node
    /// says for what it holds (and purge their tombstones once it has seen them), so what it
    /// says must survive a crash.
    pub fn barrier(&mut self) {
        if self.tombstone_unsynced {
            self.sync();
        }
    }

    /// Changes an entry in place, unsynced.
    pub fn modify_unsynced(&mut self, hash: BlobHash, f: impl FnOnce(&mut Slot)) {
        if let Some(s) = self.current.get_mut(&hash) {
            f(s);
            self.unsynced.insert(hash);
        }
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Makes every change durable.
    pub fn sync(&mut self) {
        self.tombstone_unsynced = false;
        for hash in std::mem::take(&mut self.unsynced) {
            match self.current.get(&hash) {
                Some(s) => self.durable.insert(hash, *s),
                None => self.durable.remove(&hash),
            };
        }
    }

    /// A crash: unsynced changes are lost; the store reopens with its durable state.
    pub fn crash(&mut self) {
        self.unsynced.clear();
        self.tombstone_unsynced = false;
        let durable = self.durable.clone();
        self.current.slots.clear();
        for (hash, slot) in durable {
            self.current.set(hash, Some(slot));
        }
    }

    /// Damages the bytes of a live copy (on disk, so durably).
    pub fn corrupt(&mut self, hash: &BlobHash) {
        if let Some(s) = self.current.get_mut(hash) {
            s.corrupt = true;
        }
        if let Some(s) = self.durable.get_mut(hash)
            && s.is_live()
        {
            s.corrupt = true;
        }
    }

    pub fn set_layout(&mut self, layout: Arc<SimLayout>) {
        self.current.set_layout(layout);
    }
}
