//! Hinted handoff, the pure half: a coordinator's promise to bring a replica that missed a put
//! (or a delete) up to date once it is reachable again. [`HintQueue`] says which hints are due
//! and backs off after failures (time is passed in); [`plan`] says what delivering one means
//! given what this node holds now. The node keeps the queue durable (`local/hint_log.rs`) and
//! delivers; the simulator drives the same queue and plan.

use std::collections::BTreeMap;

use cairn_engine::Hash;
use serde::{Deserialize, Serialize};

use crate::heal::{Entry, EntryKind};

/// What a hint makes the target do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HintKind {
    /// Receive a copy of the blob.
    Put,
    /// Delete its copy.
    Delete,
}

/// One pending hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub hash: Hash,
    pub target: String,
    pub kind: HintKind,
}

/// A hint waiting for delivery.
#[derive(Debug)]
struct Pending {
    hint: Hint,
    /// Milliseconds (on the caller's clock) before which the hint is not retried.
    not_before_ms: u64,
    failures: u32,
    in_flight: bool,
}

/// Pending hints and when each is due. Pure: the caller passes the time in milliseconds.
///
/// # The driver's contract
///
/// - `now_ms` is any monotonic millisecond clock of the caller's; it never decreases.
/// - Insert each hint once, under an id never used before (the durable log hands them out),
///   only once it is durable.
/// - [`HintQueue::take_due`] hands each hint out once; report how its delivery went with
///   [`HintQueue::delivered`] or [`HintQueue::failed`] (a delivery that hangs is ended by a
///   timeout, as a failure). What delivering means is [`plan`]'s.
/// - Call [`HintQueue::wake`] when a target is seen alive again.
#[derive(Debug)]
pub struct HintQueue {
    entries: BTreeMap<u64, Pending>,
    retry_ms_min: u64,
    retry_ms_max: u64,
}

impl HintQueue {
    pub fn new(retry_ms_min: u64, retry_ms_max: u64) -> HintQueue {
        HintQueue {
            entries: BTreeMap::new(),
            retry_ms_min,
            retry_ms_max: retry_ms_max.max(retry_ms_min),
        }
    }

    pub fn insert(&mut self, id: u64, hint: Hint, now_ms: u64) {
        let previous = self.entries.insert(
            id,
            Pending {
                hint,
                not_before_ms: now_ms,
                failures: 0,
                in_flight: false,
            },
        );
        assert!(previous.is_none(), "hint id {id} queued twice");
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `limit` hints due at `now_ms`, marked in flight until `delivered` or `failed`.
    pub fn take_due(&mut self, now_ms: u64, limit: usize) -> Vec<(u64, Hint)> {
        let mut due = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            if due.len() == limit {
                break;
            }
            if !e.in_flight && e.not_before_ms <= now_ms {
                e.in_flight = true;
                due.push((*id, e.hint.clone()));
            }
        }
        due
    }

    pub fn delivered(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// The delivery failed: retry after a backoff that doubles per failure, capped.
    pub fn failed(&mut self, id: u64, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            debug_assert!(e.in_flight, "hint {id} failed without being handed out");
            e.failures = e.failures.saturating_add(1);
            let shift = e.failures.min(20) - 1;
            let backoff = self
                .retry_ms_min
                .saturating_mul(1 << shift)
                .min(self.retry_ms_max);
            e.not_before_ms = now_ms + backoff;
            e.in_flight = false;
        }
    }

    /// Makes every hint for `target` due now (the target was seen alive again).
    pub fn wake(&mut self, target: &str, now_ms: u64) {
        for e in self.entries.values_mut() {
            if e.hint.target == target && !e.in_flight {
                e.not_before_ms = now_ms;
            }
        }
    }

    pub fn pending_for(&self, target: &str) -> usize {
        self.entries
            .values()
            .filter(|e| e.hint.target == target)
            .count()
    }

    /// Every pending hint with its id, in id order.
    pub fn pending(&self) -> impl Iterator<Item = (u64, &Hint)> {
        self.entries.iter().map(|(id, e)| (*id, &e.hint))
    }
}

/// What delivering a hint means, given this node's entry for the hash now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintStep {
    /// Copy the local blob to the target as a copy (`Op::Store`): the target keeps it only if
    /// no newer tombstone stands there, so a late hint never undoes a delete.
    Push(Entry),
    /// Send the local tombstone to the target (a replica delete with its version).
    Tombstone(Entry),
    /// Nothing left to pass on (the copy is gone, or a later put superseded the delete): the
    /// hint is done.
    Drop,
}

/// What to do for `hint`, given this node's entry for its hash (`None`: nothing held). A put's
/// hint pushes the live copy held here; a delete's sends the tombstone held here.
pub fn plan(hint: &Hint, local: Option<Entry>) -> HintStep {
    match (hint.kind, local) {
        (HintKind::Put, Some(e)) if e.kind == EntryKind::Live => HintStep::Push(e),
        (HintKind::Delete, Some(e)) if e.kind == EntryKind::Tombstone => HintStep::Tombstone(e),
        _ => HintStep::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(n: u8, target: &str) -> Hint {
        Hint {
            hash: Hash::from_bytes([n; 32]),
            target: target.into(),
            kind: HintKind::Put,
        }
    }

    #[test]
    fn queue_backs_off_and_wakes() {
        let mut q = HintQueue::new(100, 1000);
        q.insert(1, hint(1, "b"), 0);
        assert_eq!(q.take_due(0, 10).len(), 1);
        assert!(
            q.take_due(0, 10).is_empty(),
            "in flight hints are not handed out twice"
        );
        q.failed(1, 0);
        assert!(q.take_due(99, 10).is_empty());
        assert_eq!(q.take_due(100, 10).len(), 1);
        q.failed(1, 100);
        assert!(
            q.take_due(299, 10).is_empty(),
            "second failure waits 200 ms"
        );
        q.wake("b", 150);
        assert_eq!(q.take_due(150, 10).len(), 1);
        for _ in 0..30 {
            q.failed(1, 0);
            assert_eq!(q.take_due(u64::MAX, 10).len(), 1);
        }
        q.failed(1, 0);
        assert!(q.take_due(999, 10).is_empty());
        assert_eq!(q.take_due(1000, 10).len(), 1, "backoff is capped");
        q.delivered(1);
        assert!(q.is_empty());
    }

    #[test]
    fn a_hint_passes_on_what_is_held_now() {
        let put = hint(1, "b");
        let delete = Hint {
            kind: HintKind::Delete,
            ..put.clone()
        };
        let live = Entry::live([1; 32], 5, 10);
        let tombstone = Entry::tombstone([1; 32], 7);
        assert_eq!(plan(&put, Some(live)), HintStep::Push(live));
        assert_eq!(plan(&put, Some(tombstone)), HintStep::Drop, "deleted since");
        assert_eq!(plan(&put, None), HintStep::Drop, "nothing left to copy");
        assert_eq!(
            plan(&delete, Some(tombstone)),
            HintStep::Tombstone(tombstone)
        );
        assert_eq!(plan(&delete, Some(live)), HintStep::Drop, "put again since");
        assert_eq!(plan(&delete, None), HintStep::Drop, "purged");
    }
}
