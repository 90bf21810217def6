//! The purge: a paced pass over this node's versioned entries that forgets a version (purges a
//! tombstone, keeps a live copy as version 0) once it is past the grace period and every other
//! owner has completed an anti-entropy session with this node that began after the entry was
//! recorded here, so every owner has seen it.

use super::Healer;
use super::catalog::Catalog;
use super::entry::BlobHash;
use super::msg::Action;
use crate::limits::{PURGE_SCAN_ENTRIES_PER_TICK, PURGE_STEP_INTERVAL_MS};

/// Where the purge pass stands.
#[derive(Debug)]
pub(super) struct Purge {
    /// The last hash examined (`None`: the next step starts from the beginning).
    cursor: Option<BlobHash>,
    /// When the next step is due.
    pub(super) due_ms: u64,
}

impl Purge {
    pub(super) fn new(now_ms: u64) -> Purge {
        Purge {
            cursor: None,
            due_ms: now_ms,
        }
    }
}

impl Healer {
    /// One step of the purge: forget versions every owner has seen, past the grace period.
    pub(super) fn purge_tick(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        actions: &mut Vec<Action>,
    ) {
        if now_ms < self.purge.due_ms {
            return;
        }
        self.purge.due_ms = now_ms + PURGE_STEP_INTERVAL_MS;
        // Gaps left to a designated source were copied or closed by now.
        let keep_ms = 2 * self.settings.anti_entropy_interval_ms;
        self.transfers.expire_deferred(now_ms, keep_ms);
        let batch = catalog.versioned(self.purge.cursor.as_ref(), PURGE_SCAN_ENTRIES_PER_TICK);
        self.purge.cursor = if batch.len() < PURGE_SCAN_ENTRIES_PER_TICK {
            None
        } else {
            batch.last().map(|(e, _)| e.hash)
        };
        let grace_ms = self.settings.tombstone_grace_ms;
        for (entry, recorded_ms) in batch {
            if now_ms.saturating_sub(recorded_ms) < grace_ms
                || now_ms.saturating_sub(entry.version) < grace_ms
            {
                continue;
            }
            let owners = self.owners(&entry.hash);
            if !owners.contains(&self.self_id) {
                continue; // misplaced: hand-off deals with it
            }
            let seen_by_all = owners.iter().filter(|o| **o != self.self_id).all(|o| {
                self.synced_since_ms(o)
                    .is_some_and(|since| since > recorded_ms)
            });
            if seen_by_all {
                self.progress.entries_purged += 1;
                actions.push(Action::ForgetVersion { entry });
            }
        }
    }
}
