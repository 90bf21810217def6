//! The transfer queue: blob copies (pushes and fetches) waiting to start or running, within the
//! in-flight cap and the bandwidth budget. A copy is never queued twice, a blob several peers
//! hold is fetched from one of them, and a copy that another owner is designated to make is
//! left to it for one anti-entropy interval. Repairs of corrupt copies go through here too,
//! from one owner to the next until one succeeds.

use std::collections::{HashMap, HashSet, VecDeque};

use super::Healer;
use super::catalog::Catalog;
use super::entry::{BlobHash, Entry, EntryKind};
use super::msg::{Action, Direction};
use super::session::SessionKind;
use super::throttle::Throttle;
use crate::limits::DEFERRED_COPIES_MAX;

#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) session: u64,
    pub(super) peer: String,
    pub(super) direction: Direction,
    pub(super) entry: Entry,
}

/// A copy's identity: the same (peer, hash, direction) is never queued twice.
type CopyKey = (String, BlobHash, Direction);

#[derive(Debug)]
pub(super) struct Transfers {
    /// Ids of transfers waiting to start, in order.
    queue: VecDeque<u64>,
    /// Every transfer queued or running, by id.
    by_id: HashMap<u64, Transfer>,
    /// The id of each transfer queued or running, by what it copies.
    keys: HashMap<CopyKey, u64>,
    /// Hashes with a fetch queued or running, from whichever peer: a blob missing here that
    /// several peers hold is fetched from one of them.
    fetching: HashSet<BlobHash>,
    /// Repairs of a corrupt copy that failed, by hash: where the next attempt starts among the
    /// other owners, and how many failed. The next attempt asks the owner after the one that
    /// failed, so one owner that lacks the blob (a replica still owed a hint, say) cannot stall
    /// the repair.
    repair_attempts: HashMap<BlobHash, (usize, usize)>,
    /// Copies left to another owner (the designated source), with when they were first left.
    deferred: HashMap<CopyKey, u64>,
    /// Transfers started and not yet ended.
    pub(super) in_flight: usize,
    throttle: Throttle,
}

impl Transfers {
    pub(super) fn new(bandwidth_bytes_per_sec: u64, now_ms: u64) -> Transfers {
        Transfers {
            queue: VecDeque::new(),
            by_id: HashMap::new(),
            keys: HashMap::new(),
            fetching: HashSet::new(),
            repair_attempts: HashMap::new(),
            deferred: HashMap::new(),
            in_flight: 0,
            throttle: Throttle::new(bandwidth_bytes_per_sec, now_ms),
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Drops every queued transfer (chosen under a layout no longer in force) and the repair
    /// bookkeeping; running transfers finish.
    pub(super) fn drop_queued(&mut self) {
        self.repair_attempts.clear();
        for id in std::mem::take(&mut self.queue) {
            if let Some(t) = self.by_id.remove(&id) {
                self.forget(&t);
            }
        }
    }

    /// When the head of the queue could start, if a slot is free.
    pub(super) fn next_release_ms(&self, in_flight_max: usize) -> Option<u64> {
        let t = self.by_id.get(self.queue.front()?)?;
        (self.in_flight < in_flight_max).then(|| self.throttle.ready_at_ms(t.entry.bytes))
    }

    /// A running transfer ended: it leaves the queue's books.
    pub(super) fn finished(&mut self, id: u64) -> Option<Transfer> {
        let t = self.by_id.remove(&id)?;
        debug_assert!(
            !self.queue.contains(&id),
            "transfer {id} ended before it started"
        );
        assert!(
            self.in_flight > 0,
            "transfer {id} ended with none in flight"
        );
        self.in_flight -= 1;
        self.forget(&t);
        Some(t)
    }

    /// A transfer is no longer queued or running.
    fn forget(&mut self, t: &Transfer) {
        self.keys
            .remove(&(t.peer.clone(), t.entry.hash, t.direction));
        if t.direction == Direction::Fetch {
            self.fetching.remove(&t.entry.hash);
        }
    }

    /// The peer and this node agree on `hash`: nothing is left to a designated source.
    pub(super) fn forget_deferred(&mut self, peer: &str, hash: &BlobHash) {
        if !self.deferred.is_empty() {
            for d in [Direction::Push, Direction::Fetch] {
                self.deferred.remove(&(peer.to_string(), *hash, d));
            }
        }
    }

    /// Forgets copies left to a designated source for longer than `keep_ms`: by then they were
    /// copied or the gap closed.
    pub(super) fn expire_deferred(&mut self, now_ms: u64, keep_ms: u64) {
        self.deferred
            .retain(|_, since| now_ms.saturating_sub(*since) < keep_ms);
    }

    pub(super) fn count_for_session(&self, session: u64) -> usize {
        self.by_id.values().filter(|t| t.session == session).count()
    }

    pub(super) fn assert_invariants(&self, self_id: &str, in_flight_max: usize) {
        // What must hold: the cap, and the books agreeing with each other.
        assert!(
            self.in_flight <= in_flight_max,
            "{} transfers in flight, over the cap of {in_flight_max}",
            self.in_flight
        );
        assert_eq!(
            self.by_id.len(),
            self.queue.len() + self.in_flight,
            "transfers known: {}, queued: {}, in flight: {}",
            self.by_id.len(),
            self.queue.len(),
            self.in_flight
        );
        assert_eq!(self.keys.len(), self.by_id.len(), "a copy is keyed once");
        for (key, id) in &self.keys {
            let t = &self.by_id[id];
            assert_eq!(
                (&t.peer, t.entry.hash, t.direction),
                (&key.0, key.1, key.2),
                "transfer {id} filed under another key"
            );
        }
        let fetches = self
            .by_id
            .values()
            .filter(|t| t.direction == Direction::Fetch)
            .count();
        assert_eq!(fetches, self.fetching.len(), "one fetch per hash");
        assert!(self.deferred.len() <= DEFERRED_COPIES_MAX);
        // What must not: a copy to or from this node itself.
        assert!(
            self.by_id.values().all(|t| t.peer != self_id),
            "a transfer with this node itself"
        );
    }
}

impl Healer {
    /// A corrupt copy was quarantined here: fetch a good one from another owner.
    pub fn on_corrupt(&mut self, now_ms: u64, entry: Entry, up: &dyn Fn(&str) -> bool) {
        let others: Vec<String> = self
            .owners(&entry.hash)
            .into_iter()
            .filter(|o| *o != self.self_id)
            .collect();
        // Nothing to ask, or a fetch of it already queued or running.
        if others.is_empty() || self.transfers.fetching.contains(&entry.hash) {
            return;
        }
        // In placement order, from the owner after the last one that failed; up owners first.
        let start = self
            .transfers
            .repair_attempts
            .get(&entry.hash)
            .map_or(0, |a| a.0);
        let order: Vec<&String> = (0..others.len())
            .map(|i| &others[(start + i) % others.len()])
            .collect();
        let source = order
            .iter()
            .find(|o| up(o))
            .unwrap_or(&order[0])
            .to_string();
        let id = self.new_session(SessionKind::Repair, &source, now_ms);
        self.enqueue(id, &source, Direction::Fetch, entry);
        self.assert_invariants();
    }

    /// A repair fetch from `peer` ended: done, or on to the next owner until each was asked.
    pub(super) fn repair_done(&mut self, now_ms: u64, entry: Entry, peer: &str, ok: bool) {
        if ok {
            self.transfers.repair_attempts.remove(&entry.hash);
            return;
        }
        let others: Vec<String> = self
            .owners(&entry.hash)
            .into_iter()
            .filter(|o| *o != self.self_id)
            .collect();
        let after = others.iter().position(|o| o == peer).map_or(0, |i| i + 1);
        let (start, failed) = self
            .transfers
            .repair_attempts
            .entry(entry.hash)
            .or_default();
        *start = after;
        *failed += 1;
        if *failed >= others.len() {
            // Each owner was asked: the next notice of the damage starts over.
            self.transfers.repair_attempts.remove(&entry.hash);
            return;
        }
        self.on_corrupt(now_ms, entry, &|_| true);
    }

    /// The owner that should supply a missing copy to `receiver`: the first owner in placement
    /// order other than the receiver. Every holder of a copy that a new owner lacks sees the
    /// same gap in its own session with it; only this one copies at once.
    pub(super) fn designated_source(&self, hash: &BlobHash, receiver: &str) -> Option<String> {
        self.owners(hash).into_iter().find(|o| o != receiver)
    }

    /// Queues a copy, unless the receiver lacks the blob entirely and another owner is the
    /// designated source: then this node waits one `anti_entropy_interval_ms` (the session
    /// counts as unfinished, so it is tried again) and copies only if the gap is still there,
    /// in case the designated source cannot.
    pub(super) fn copy_or_defer(
        &mut self,
        now_ms: u64,
        id: u64,
        peer: &str,
        direction: Direction,
        entry: Entry,
        missing: bool,
    ) {
        let (source, receiver) = match direction {
            Direction::Push => (self.self_id.clone(), peer.to_string()),
            Direction::Fetch => (peer.to_string(), self.self_id.clone()),
        };
        let designated = self.designated_source(&entry.hash, &receiver);
        if !missing || designated.as_deref() == Some(source.as_str()) {
            self.enqueue(id, peer, direction, entry);
            return;
        }
        let key = (peer.to_string(), entry.hash, direction);
        match self.transfers.deferred.get(&key) {
            Some(&since)
                if now_ms.saturating_sub(since) >= self.settings.anti_entropy_interval_ms =>
            {
                self.transfers.deferred.remove(&key);
                self.enqueue(id, peer, direction, entry);
            }
            Some(_) => {}
            None => {
                if self.transfers.deferred.len() >= DEFERRED_COPIES_MAX {
                    // Too many gaps waiting: copy rather than remember.
                    self.enqueue(id, peer, direction, entry);
                    return;
                }
                self.transfers.deferred.insert(key, now_ms);
            }
        }
        if let Some(s) = self.sessions.active.get_mut(&id) {
            s.unresolved = true;
        }
    }

    /// Queues a copy for a session, unless the same copy is already queued or running (or the
    /// blob is being fetched from another peer).
    pub(super) fn enqueue(&mut self, session: u64, peer: &str, direction: Direction, entry: Entry) {
        let key = (peer.to_string(), entry.hash, direction);
        let transfers = &mut self.transfers;
        if transfers.keys.contains_key(&key) {
            return;
        }
        if direction == Direction::Fetch && !transfers.fetching.insert(entry.hash) {
            return; // being fetched from another peer
        }
        let id = self.ids.fresh();
        transfers.keys.insert(key, id);
        transfers.by_id.insert(
            id,
            Transfer {
                session,
                peer: peer.to_string(),
                direction,
                entry,
            },
        );
        if let Some(s) = self.sessions.active.get_mut(&session) {
            s.transfers += 1;
        }
        transfers.queue.push_back(id);
    }

    /// Starts queued transfers while the in-flight cap and the bandwidth allow. A queued fetch
    /// of a blob that arrived meanwhile (another owner pushed it) is dropped: nothing to copy.
    pub(super) fn release(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        actions: &mut Vec<Action>,
    ) {
        while self.transfers.in_flight < self.settings.transfers_in_flight_max {
            let transfers = &mut self.transfers;
            let Some(&id) = transfers.queue.front() else {
                break;
            };
            let t = transfers
                .by_id
                .get(&id)
                .expect("every queued transfer is known");
            let arrived = t.direction == Direction::Fetch
                && catalog
                    .entry(&t.entry.hash)
                    .is_some_and(|e| e.kind == EntryKind::Live);
            if arrived {
                transfers.queue.pop_front();
                let t = transfers.by_id.remove(&id).expect("present");
                transfers.forget(&t);
                if let Some(s) = self.sessions.active.get_mut(&t.session) {
                    assert!(s.transfers > 0, "a session's transfer count went negative");
                    s.transfers -= 1;
                    self.finish_if_done(t.session, now_ms, actions);
                }
                continue;
            }
            if !transfers.throttle.try_take(now_ms, t.entry.bytes) {
                break;
            }
            transfers.queue.pop_front();
            transfers.in_flight += 1;
            actions.push(Action::Transfer {
                id,
                peer: t.peer.clone(),
                direction: t.direction,
                entry: t.entry,
            });
        }
    }
}
