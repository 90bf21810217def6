//! What the simulated clients asked and were told, and the checks of a run's end state against
//! it: no acknowledged blob lost, no deleted blob back.

use std::collections::BTreeMap;

use cairn_core::heal::BlobHash;

use super::layouts::{NODE_IDS, SimLayout, mask_nodes};
use super::store::{Slot, Store, short};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Delete,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running, or its coordinator crashed: indeterminate.
    Pending,
    Acked,
    /// The client was told it failed; it may still have taken effect (indeterminate).
    Failed,
    Found,
    NotFound,
}

#[derive(Clone, Debug)]
pub struct OpRecord {
    pub kind: OpKind,
    pub hash: BlobHash,
    /// Index of the blob in the workload's list.
    pub blob: usize,
    pub issued_ms: u64,
    pub coordinator: usize,
    /// The version the coordinator gave the put or delete; `None`: it never started, so it
    /// left nothing anywhere.
    pub version: Option<u64>,
    pub outcome: Outcome,
}

/// Every operation of a run, in the order issued; an operation's id is its index.
#[derive(Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
}

impl History {
    fn by_hash(&self) -> BTreeMap<BlobHash, Vec<&OpRecord>> {
        let mut map: BTreeMap<BlobHash, Vec<&OpRecord>> = BTreeMap::new();
        for op in &self.ops {
            if op.kind != OpKind::Read {
                map.entry(op.hash).or_default().push(op);
            }
        }
        map
    }

    /// Hashes whose newest acknowledged operation is a put that no delete (acknowledged or
    /// not) can have overridden, with that put's version.
    pub fn must_be_live(&self) -> Vec<(BlobHash, u64)> {
        let mut out = Vec::new();
        for (hash, ops) in self.by_hash() {
            let put = ops
                .iter()
                .filter(|o| o.kind == OpKind::Put && o.outcome == Outcome::Acked)
                .filter_map(|o| o.version)
                .max();
            let Some(put) = put else { continue };
            // A tombstone wins a tie, so a delete of the same version overrides.
            let overridden = ops
                .iter()
                .any(|o| o.kind == OpKind::Delete && o.version.is_some_and(|v| v >= put));
            if !overridden {
                out.push((hash, put));
            }
        }
        out
    }

    /// Hashes whose newest acknowledged operation is a delete that no put (acknowledged or
    /// not) can have overridden, with that delete's version.
    pub fn must_be_gone(&self) -> Vec<(BlobHash, u64)> {
        let mut out = Vec::new();
        for (hash, ops) in self.by_hash() {
            let delete = ops
                .iter()
                .filter(|o| o.kind == OpKind::Delete && o.outcome == Outcome::Acked)
                .filter_map(|o| o.version)
                .max();
            let Some(delete) = delete else { continue };
            let overridden = ops
                .iter()
                .any(|o| o.kind == OpKind::Put && o.version.is_some_and(|v| v > delete));
            if !overridden {
                out.push((hash, delete));
            }
        }
        out
    }

    /// The operations on one hash, one per line, for failure messages.
    pub fn story(&self, hash: &BlobHash) -> String {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.hash == *hash)
            .map(|(i, o)| {
                format!(
                    "\n  op{i} at {} ms via {}: {:?} version {:?} -> {:?}",
                    o.issued_ms, NODE_IDS[o.coordinator], o.kind, o.version, o.outcome
                )
            })
            .collect()
    }

    pub fn count(&self, kind: OpKind, outcome: Outcome) -> usize {
        self.ops
            .iter()
            .filter(|o| o.kind == kind && o.outcome == outcome)
            .count()
    }
}

/// Checks 1 and 2 on a converged cluster: every blob that must be live is, intact and durably,
/// on every owner of the final layout; no blob that must be gone is live anywhere.
pub fn check_end(history: &History, layout: &SimLayout, stores: &[&Store]) -> Result<(), String> {
    for (hash, version) in history.must_be_live() {
        for owner in mask_nodes(layout.owner_mask(&hash)) {
            let store = stores[owner];
            let durable = store.durable.get(&hash);
            let current = store.current.get(&hash);
            let intact = |s: Option<&Slot>| s.is_some_and(|s| s.is_good_live());
            if !intact(durable) || !intact(current) {
                let text = |s: Option<&Slot>| s.map_or("nothing".to_string(), Slot::text);
                return Err(format!(
                    "acknowledged put of {} (version {version}) is lost on owner {}: durably \
                     {}, currently {}; its operations:{}",
                    short(&hash),
                    NODE_IDS[owner],
                    text(durable),
                    text(current),
                    history.story(&hash),
                ));
            }
        }
    }
    for (hash, version) in history.must_be_gone() {
        for (ix, store) in stores.iter().enumerate() {
            for (what, slot) in [
                ("durably", store.durable.get(&hash)),
                ("currently", store.current.get(&hash)),
            ] {
                if let Some(slot) = slot
                    && slot.is_live()
                {
                    return Err(format!(
                        "deleted blob {} (delete version {version}) is {what} live again on {}: \
                         {}; its operations:{}",
                        short(&hash),
                        NODE_IDS[ix],
                        slot.text(),
                        history.story(&hash),
                    ));
                }
            }
        }
    }
    Ok(())
}
