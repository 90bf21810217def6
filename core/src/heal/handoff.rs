//! Hand-off: a pass over what this node holds finds entries the current layout places
//! elsewhere, offers them to their owners (who take the live copies they lack and apply the
//! tombstones), and drops each one here only once every owner has confirmed it.

use std::collections::{BTreeMap, BTreeSet};

use super::Healer;
use super::catalog::Catalog;
use super::entry::{BlobHash, Entry, EntryKind};
use super::msg::{Action, HealMsg};
use super::session::SessionKind;
use crate::limits::{
    HANDOFF_ENTRIES_PER_OFFER_MAX, HANDOFF_PENDING_ENTRIES_MAX, HANDOFF_SCAN_ENTRIES_PER_TICK,
};

/// A misplaced entry waiting for its owners to confirm they hold it.
#[derive(Debug)]
struct Misplaced {
    entry: Entry,
    /// Owners that have not confirmed yet (by holding it, or by a push to them succeeding).
    unconfirmed: BTreeSet<String>,
}

/// Where the hand-off pass stands, and what it found.
#[derive(Debug)]
pub(super) struct Handoff {
    /// The last hash the pass examined (`None`: between passes).
    cursor: Option<BlobHash>,
    /// When the next pass (or the next step of this one) is due.
    pub(super) due_ms: u64,
    /// Bytes of misplaced entries found so far in this pass.
    pass_bytes: u64,
    /// Live copies are offered only when enabled (see `Healer::set_handoff_enabled`).
    pub(super) enabled: bool,
    misplaced: BTreeMap<BlobHash, Misplaced>,
    /// Whole passes completed since the layout was adopted.
    pub(super) passes_since_layout: u64,
    /// What this pass found under-replicated so far (see `HealProgress::under_replicated`).
    pass_under: UnderReplicated,
}

/// Live blobs this node holds and answers for (it is the first owner, in placement order,
/// that is up) while another of their owners is not up: they have fewer copies than the
/// layout asks for until that owner returns or leaves the layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnderReplicated {
    pub blobs: u64,
    pub bytes: u64,
    /// The owners found not up.
    pub waiting_for: BTreeSet<String>,
}

impl Handoff {
    pub(super) fn new(now_ms: u64) -> Handoff {
        Handoff {
            cursor: None,
            due_ms: now_ms,
            pass_bytes: 0,
            enabled: true,
            misplaced: BTreeMap::new(),
            passes_since_layout: 0,
            pass_under: UnderReplicated::default(),
        }
    }

    /// A new layout: what was misplaced under the old one is found afresh, from now.
    pub(super) fn restart(&mut self, now_ms: u64) {
        self.misplaced.clear();
        self.cursor = None;
        self.due_ms = now_ms;
        self.pass_bytes = 0;
        self.passes_since_layout = 0;
        self.pass_under = UnderReplicated::default();
    }

    /// A pass is under way or entries wait for their owners.
    pub(super) fn busy(&self) -> bool {
        self.cursor.is_some() || !self.misplaced.is_empty()
    }

    fn misplaced_bytes(&self) -> u64 {
        self.misplaced.values().map(|m| m.entry.bytes).sum()
    }

    pub(super) fn assert_invariants(&self) {
        assert!(self.misplaced.len() <= HANDOFF_PENDING_ENTRIES_MAX);
        for (hash, m) in &self.misplaced {
            assert_eq!(
                *hash, m.entry.hash,
                "a misplaced entry filed under another hash"
            );
        }
    }
}

impl Healer {
    /// `owner` holds `entry` (or something that stands over it).
    pub(super) fn confirm(&mut self, entry: &Entry, owner: &str) {
        if let Some(m) = self.handoff.misplaced.get_mut(&entry.hash)
            && m.entry == *entry
        {
            m.unconfirmed.remove(owner);
        }
    }

    /// Drops misplaced entries every owner confirmed, unless the local entry changed since it
    /// was offered (a put or delete arrived meanwhile): the next pass offers the new one.
    pub(super) fn drop_confirmed(&mut self, catalog: &dyn Catalog, actions: &mut Vec<Action>) {
        let done: Vec<BlobHash> = self
            .handoff
            .misplaced
            .iter()
            .filter(|(_, m)| m.unconfirmed.is_empty())
            .map(|(h, _)| *h)
            .collect();
        for hash in done {
            let m = self.handoff.misplaced.remove(&hash).expect("present");
            self.progress.misplaced_bytes =
                self.progress.misplaced_bytes.saturating_sub(m.entry.bytes);
            if catalog.entry(&hash) == Some(m.entry) {
                actions.push(Action::DropLocal { hash });
            }
        }
    }

    /// One step of the hand-off pass: find misplaced entries, offer them to their owners.
    pub(super) fn handoff_tick(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        up: &dyn Fn(&str) -> bool,
        actions: &mut Vec<Action>,
    ) {
        if now_ms < self.handoff.due_ms {
            return;
        }
        let in_layout = self.routing.layout.node_index(&self.self_id).is_some();
        let batch = catalog.scan(self.handoff.cursor.as_ref(), HANDOFF_SCAN_ENTRIES_PER_TICK);
        let end_of_pass = batch.len() < HANDOFF_SCAN_ENTRIES_PER_TICK;
        for entry in &batch {
            if self.handoff.misplaced.len() >= HANDOFF_PENDING_ENTRIES_MAX {
                break;
            }
            self.handoff.cursor = Some(entry.hash);
            let owners = self.owners(&entry.hash);
            if in_layout && owners.contains(&self.self_id) {
                if entry.kind == EntryKind::Live {
                    let answerable = owners.iter().find(|o| **o == self.self_id || up(o));
                    if answerable == Some(&self.self_id) {
                        let missing = owners.iter().filter(|o| **o != self.self_id && !up(o));
                        let mut any = false;
                        for owner in missing {
                            any = true;
                            self.handoff.pass_under.waiting_for.insert(owner.clone());
                        }
                        if any {
                            self.handoff.pass_under.blobs += 1;
                            self.handoff.pass_under.bytes += entry.bytes;
                        }
                    }
                }
                continue;
            }
            let old_tombstone = entry.kind == EntryKind::Tombstone
                && now_ms.saturating_sub(entry.version) > self.settings.tombstone_grace_ms;
            if old_tombstone {
                actions.push(Action::DropLocal { hash: entry.hash });
                continue;
            }
            if entry.kind == EntryKind::Live && !self.handoff.enabled {
                continue;
            }
            self.handoff.pass_bytes += entry.bytes;
            // A pending entry that changed here since it was found is offered afresh.
            if self
                .handoff
                .misplaced
                .get(&entry.hash)
                .is_none_or(|m| m.entry != *entry)
            {
                self.handoff.misplaced.insert(
                    entry.hash,
                    Misplaced {
                        entry: *entry,
                        unconfirmed: owners.into_iter().collect(),
                    },
                );
            }
        }
        let stopped_early = self.handoff.misplaced.len() >= HANDOFF_PENDING_ENTRIES_MAX;
        if end_of_pass && !stopped_early {
            self.handoff.cursor = None;
            self.progress.misplaced_bytes = self
                .handoff
                .misplaced_bytes()
                .max(self.progress.misplaced_bytes.min(self.handoff.pass_bytes));
            self.handoff.pass_bytes = 0;
            self.handoff.passes_since_layout += 1;
            self.progress.under_replicated = std::mem::take(&mut self.handoff.pass_under);
            self.handoff.due_ms = now_ms + self.settings.handoff_interval_ms;
        } else {
            self.progress.misplaced_bytes = self
                .progress
                .misplaced_bytes
                .max(self.handoff.misplaced_bytes());
        }
        // Offer what is pending to owners that are up and not already being asked.
        let asking: BTreeSet<String> = self
            .sessions
            .active
            .values()
            .filter(|s| s.kind == SessionKind::Handoff)
            .map(|s| s.peer.clone())
            .collect();
        let mut offers: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for m in self.handoff.misplaced.values() {
            for owner in &m.unconfirmed {
                if asking.contains(owner) || !up(owner) {
                    continue;
                }
                let list = offers.entry(owner.clone()).or_default();
                if list.len() < HANDOFF_ENTRIES_PER_OFFER_MAX {
                    list.push(m.entry);
                }
            }
        }
        for (owner, entries) in offers {
            let id = self.new_session(SessionKind::Handoff, &owner, now_ms);
            let s = self.sessions.active.get_mut(&id).expect("just made");
            s.offered = entries.clone();
            s.deadline_ms = Some(now_ms + self.settings.request_timeout_ms);
            actions.push(Action::Send {
                to: owner,
                msg: HealMsg::Offer {
                    session: id,
                    layout_version: self.routing.layout.version,
                    entries,
                },
            });
        }
        self.drop_confirmed(catalog, actions);
    }
}
