//! Anti-entropy sessions: whom to compare with and when, the comparison of prefix summaries
//! down the tree to the differing leaves, reconciling a leaf's entries, answering a peer's
//! requests, and the record of which peers have synced with this node since when (what the
//! purge trusts).
//!
//! Hand-off offers and repair fetches are sessions too (one request, or one transfer), so that
//! their replies and transfers find their way back by the same ids.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::Healer;
use super::catalog::Catalog;
use super::entry::{BlobHash, Entry, EntryKind, Verdict, compare};
use super::msg::{Action, Direction, HealMsg};
use crate::limits::{
    AE_ANSWERING_SESSIONS_MAX, AE_ENTRIES_PER_REPLY_MAX, AE_FANOUT_BITS, AE_LEAF_ENTRIES_MAX,
    AE_LEAF_PAGES_MAX, AE_PREFIX_BITS_MAX, AE_SUMMARIES_PER_REQUEST_MAX,
    HANDOFF_ENTRIES_PER_OFFER_MAX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SessionKind {
    AntiEntropy,
    Handoff,
    /// Fetching a good copy after a corrupt one was quarantined.
    Repair,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) kind: SessionKind,
    pub(super) peer: String,
    started_ms: u64,
    /// When the outstanding request times out (`None`: none outstanding).
    pub(super) deadline_ms: Option<u64>,
    /// The id the outstanding (or last) request went out under: the session's id for its first
    /// request, a fresh one for each after it, so that a late or duplicated reply to an earlier
    /// request is not taken for the answer to the current one.
    request: u64,
    /// Prefixes still to summarize, as (bits, prefix).
    to_summarize: VecDeque<(u32, u32)>,
    /// Prefixes in the outstanding summaries request.
    asked: Vec<(u32, u32)>,
    /// Prefixes to compare entry by entry.
    leaves: VecDeque<(u32, u32)>,
    /// The peer's entries of the leaf being read.
    leaf_entries: Vec<Entry>,
    /// Tombstones the peer needs.
    tombstones_out: Vec<Entry>,
    /// Transfers of this session still queued or running.
    pub(super) transfers: usize,
    pub(super) failed: bool,
    /// Some difference was left to another owner: the session runs on, but is not credited
    /// as a full sync and is tried again soon.
    pub(super) unresolved: bool,
    /// Hand-off: the offered entries, until the owner answers.
    pub(super) offered: Vec<Entry>,
}

impl Session {
    fn new(kind: SessionKind, peer: &str, request: u64, now_ms: u64) -> Session {
        Session {
            kind,
            peer: peer.to_string(),
            started_ms: now_ms,
            deadline_ms: None,
            request,
            to_summarize: VecDeque::new(),
            asked: Vec::new(),
            leaves: VecDeque::new(),
            leaf_entries: Vec::new(),
            tombstones_out: Vec::new(),
            transfers: 0,
            failed: false,
            unresolved: false,
            offered: Vec::new(),
        }
    }

    /// Nothing outstanding and nothing left to ask.
    fn idle(&self) -> bool {
        self.deadline_ms.is_none()
            && self.to_summarize.is_empty()
            && self.leaves.is_empty()
            && self.tombstones_out.is_empty()
    }
}

/// The sessions of one node, and the schedule and record of anti-entropy with each peer.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    /// Sessions this node started, by id.
    pub(super) active: BTreeMap<u64, Session>,
    /// Per peer: when the next anti-entropy session may start. Holds the peers this node
    /// starts sessions with (larger ids), and briefly a smaller one that just came back.
    ae_due_ms: BTreeMap<String, u64>,
    /// Per peer: start time of the last session that completed without a failure, either side
    /// having started it.
    pub(super) synced_since_ms: HashMap<String, u64>,
    /// Sessions peers started with this node: (peer, session) to when the first request came.
    answering: BTreeMap<(String, u64), u64>,
}

impl Sessions {
    pub(super) fn kind_of(&self, id: u64) -> Option<SessionKind> {
        self.active.get(&id).map(|s| s.kind)
    }

    /// The earliest deadline or due session.
    pub(super) fn next_wake_ms(&self) -> Option<u64> {
        let due = self.ae_due_ms.values().min().copied();
        let deadline = self.active.values().filter_map(|s| s.deadline_ms).min();
        match (due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A peer's `Done`: the peer has seen everything this node held when its session began.
    pub(super) fn peer_done(&mut self, from: &str, session: u64) {
        if let Some(started_ms) = self.answering.remove(&(from.to_string(), session)) {
            self.credit(from, started_ms);
        }
    }

    /// `peer` and this node agreed on everything either held at `started_ms`.
    fn credit(&mut self, peer: &str, started_ms: u64) {
        let since = self.synced_since_ms.entry(peer.to_string()).or_insert(0);
        *since = (*since).max(started_ms);
    }

    pub(super) fn assert_invariants(&self, self_id: &str) {
        // What must hold.
        assert!(self.answering.len() <= AE_ANSWERING_SESSIONS_MAX);
        for (id, s) in &self.active {
            assert!(
                s.request >= *id,
                "session {id} has an older request id {}",
                s.request
            );
            assert!(s.asked.len() <= AE_SUMMARIES_PER_REQUEST_MAX);
            assert!(
                s.offered.is_empty() || s.kind == SessionKind::Handoff,
                "only hand-off sessions offer"
            );
            // What must not: a session with this node itself, or one left with nothing to
            // wait for (it would never end, and a failed one would never be retried).
            assert_ne!(s.peer, self_id, "session {id} with this node itself");
            assert!(
                !(s.idle() && s.transfers == 0),
                "session {id} ({:?} with {}) lingers with nothing outstanding",
                s.kind,
                s.peer
            );
        }
        assert!(
            !self.ae_due_ms.contains_key(self_id),
            "anti-entropy scheduled with this node itself"
        );
    }
}

impl Healer {
    pub(super) fn reset_schedule(&mut self, now_ms: u64) {
        self.sessions.ae_due_ms.clear();
        let peers: Vec<String> = self
            .routing
            .layout
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .filter(|id| *id > self.self_id)
            .collect();
        for peer in peers {
            self.sessions.ae_due_ms.insert(peer, now_ms);
        }
    }

    /// The peer came back (or was just met): compare with it soon. Either side starts the
    /// session after such an event, so a one-way recovery is noticed.
    pub fn on_peer_up(&mut self, now_ms: u64, peer: &str) {
        if self.routing.layout.node_index(peer).is_some() && peer != self.self_id {
            self.sessions.ae_due_ms.insert(peer.to_string(), now_ms);
        }
    }

    pub(super) fn new_session(&mut self, kind: SessionKind, peer: &str, now_ms: u64) -> u64 {
        let id = self.ids.fresh();
        let previous = self
            .sessions
            .active
            .insert(id, Session::new(kind, peer, id, now_ms));
        assert!(previous.is_none(), "session id {id} reused");
        id
    }

    /// Ends sessions whose outstanding request is late.
    pub(super) fn time_out_requests(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let late: Vec<u64> = self
            .sessions
            .active
            .iter()
            .filter(|(_, s)| s.deadline_ms.is_some_and(|d| now_ms >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(s) = self.sessions.active.get_mut(&id) {
                s.failed = true;
                s.deadline_ms = None;
                s.to_summarize.clear();
                s.leaves.clear();
            }
            self.finish_if_done(id, now_ms, actions);
        }
    }

    /// Starts the anti-entropy sessions that are due, with peers that are up and not already
    /// in a session with this node.
    pub(super) fn start_due_sessions(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        up: &dyn Fn(&str) -> bool,
        actions: &mut Vec<Action>,
    ) {
        let busy: BTreeSet<String> = self
            .sessions
            .active
            .values()
            .filter(|s| s.kind == SessionKind::AntiEntropy && s.deadline_ms.is_some())
            .map(|s| s.peer.clone())
            .collect();
        let mut due = Vec::new();
        for (peer, due_ms) in self.sessions.ae_due_ms.iter_mut() {
            if *due_ms > now_ms {
                continue;
            }
            if busy.contains(peer) || !up(peer) {
                // Looked at again later (a peer coming up is due at once, see `on_peer_up`),
                // so that `next_wake_ms` does not keep saying "now" meanwhile.
                *due_ms = now_ms + self.settings.request_timeout_ms;
            } else {
                due.push(peer.clone());
            }
        }
        for peer in due {
            if peer > self.self_id {
                self.sessions.ae_due_ms.insert(
                    peer.clone(),
                    now_ms + self.settings.anti_entropy_interval_ms,
                );
            } else {
                // A one-off session after the peer came back (`on_peer_up`): the peer has the
                // smaller id and starts the regular ones. Were this side to go on starting them
                // too, both would copy every difference between them.
                self.sessions.ae_due_ms.remove(&peer);
            }
            let id = self.new_session(SessionKind::AntiEntropy, &peer, now_ms);
            let s = self.sessions.active.get_mut(&id).expect("just made");
            s.to_summarize.push_back((0, 0));
            self.advance(id, now_ms, catalog, actions);
        }
    }

    /// Sends the next request of a session, or finishes it.
    pub(super) fn advance(
        &mut self,
        id: u64,
        now_ms: u64,
        catalog: &dyn Catalog,
        actions: &mut Vec<Action>,
    ) {
        let layout_version = self.layout_version();
        let timeout = self.settings.request_timeout_ms;
        let Some(s) = self.sessions.active.get_mut(&id) else {
            return;
        };
        if s.deadline_ms.is_some() || s.failed {
            self.finish_if_done(id, now_ms, actions);
            return;
        }
        if !s.to_summarize.is_empty() {
            // One request holds prefixes of one depth.
            let bits = s.to_summarize[0].0;
            let mut prefixes = Vec::new();
            s.asked.clear();
            while let Some(&(b, p)) = s.to_summarize.front() {
                if b != bits || prefixes.len() == AE_SUMMARIES_PER_REQUEST_MAX {
                    break;
                }
                s.to_summarize.pop_front();
                prefixes.push(p);
                s.asked.push((b, p));
            }
            // The root's request goes out under the session's id (the peer's `Done`
            // bookkeeping knows the session by it); every later request under a fresh one.
            s.request = if bits == 0 { id } else { self.ids.fresh() };
            s.deadline_ms = Some(now_ms + timeout);
            actions.push(Action::Send {
                to: s.peer.clone(),
                msg: HealMsg::Summaries {
                    session: s.request,
                    layout_version,
                    prefix_bits: bits,
                    prefixes,
                },
            });
            return;
        }
        if let Some(&(bits, prefix)) = s.leaves.front() {
            s.request = self.ids.fresh();
            s.deadline_ms = Some(now_ms + timeout);
            s.leaf_entries.clear();
            actions.push(Action::Send {
                to: s.peer.clone(),
                msg: HealMsg::Entries {
                    session: s.request,
                    layout_version,
                    prefix_bits: bits,
                    prefix,
                    after: None,
                },
            });
            return;
        }
        if !s.tombstones_out.is_empty() {
            let n = s.tombstones_out.len().min(HANDOFF_ENTRIES_PER_OFFER_MAX);
            let entries: Vec<Entry> = s.tombstones_out.drain(..n).collect();
            s.request = self.ids.fresh();
            s.deadline_ms = Some(now_ms + timeout);
            actions.push(Action::Send {
                to: s.peer.clone(),
                msg: HealMsg::Tombstones {
                    session: s.request,
                    layout_version,
                    entries,
                },
            });
            return;
        }
        let _ = catalog;
        self.finish_if_done(id, now_ms, actions);
    }

    /// Ends a session with nothing outstanding: a complete anti-entropy session tells the peer
    /// (`Done`) and counts as a sync; a failed or unresolved one is tried again soon.
    pub(super) fn finish_if_done(&mut self, id: u64, now_ms: u64, actions: &mut Vec<Action>) {
        let Some(s) = self.sessions.active.get(&id) else {
            return;
        };
        if !s.idle() || s.transfers > 0 {
            return;
        }
        let s = self.sessions.active.remove(&id).expect("present");
        if s.failed || s.unresolved {
            // Try again soon rather than after a whole interval.
            if s.kind == SessionKind::AntiEntropy
                && let Some(due) = self.sessions.ae_due_ms.get_mut(&s.peer)
            {
                *due = (*due).min(now_ms + self.settings.request_timeout_ms);
            }
            return;
        }
        if s.kind == SessionKind::AntiEntropy {
            self.progress.sessions_completed += 1;
            actions.push(Action::Send {
                to: s.peer.clone(),
                msg: HealMsg::Done { session: id },
            });
            self.sessions.credit(&s.peer, s.started_ms);
        }
    }

    /// A reply from a peer: it names the request it answers, and moves that session on.
    pub(super) fn on_reply(
        &mut self,
        now_ms: u64,
        from: &str,
        msg: HealMsg,
        catalog: &dyn Catalog,
        actions: &mut Vec<Action>,
    ) {
        let request = msg.session();
        let Some(id) = self
            .sessions
            .active
            .iter()
            .find(|(_, s)| s.request == request && s.deadline_ms.is_some())
            .map(|(id, _)| *id)
        else {
            return; // late or duplicated, or its session ended
        };
        let s = self.sessions.active.get_mut(&id).expect("present");
        if s.peer != from {
            return; // not from the peer
        }
        s.deadline_ms = None;
        match msg {
            HealMsg::SummariesReply { summaries, .. } => {
                let asked = std::mem::take(&mut s.asked);
                if summaries.len() != asked.len() {
                    s.failed = true;
                } else {
                    let peer = s.peer.clone();
                    for ((bits, prefix), theirs) in asked.into_iter().zip(summaries) {
                        let ours = catalog.summary(&peer, bits, prefix);
                        if ours == theirs {
                            continue;
                        }
                        let s = self.sessions.active.get_mut(&id).expect("present");
                        if ours.count.max(theirs.count) <= AE_LEAF_ENTRIES_MAX
                            || bits >= AE_PREFIX_BITS_MAX
                        {
                            s.leaves.push_back((bits, prefix));
                        } else {
                            let child_bits = bits + AE_FANOUT_BITS;
                            for c in 0..(1u32 << AE_FANOUT_BITS) {
                                s.to_summarize
                                    .push_back((child_bits, (prefix << AE_FANOUT_BITS) | c));
                            }
                        }
                    }
                }
            }
            HealMsg::EntriesReply {
                entries, complete, ..
            } => {
                s.leaf_entries.extend(entries);
                if s.leaf_entries.len() > AE_ENTRIES_PER_REPLY_MAX * AE_LEAF_PAGES_MAX {
                    s.failed = true;
                } else if !complete {
                    let &(bits, prefix) = s.leaves.front().expect("a leaf is being read");
                    let after = s.leaf_entries.last().map(|e| e.hash);
                    s.request = self.ids.fresh();
                    s.deadline_ms = Some(now_ms + self.settings.request_timeout_ms);
                    actions.push(Action::Send {
                        to: s.peer.clone(),
                        msg: HealMsg::Entries {
                            session: s.request,
                            layout_version: self.routing.layout.version,
                            prefix_bits: bits,
                            prefix,
                            after,
                        },
                    });
                    return;
                } else {
                    let (bits, prefix) = s.leaves.pop_front().expect("a leaf is being read");
                    let theirs = std::mem::take(&mut s.leaf_entries);
                    self.reconcile(now_ms, id, (bits, prefix), theirs, catalog, actions);
                }
            }
            HealMsg::OfferReply { wanted, .. } => {
                let offered = std::mem::take(&mut s.offered);
                let peer = s.peer.clone();
                let wanted: BTreeSet<BlobHash> = wanted.into_iter().collect();
                for entry in offered {
                    if entry.kind == EntryKind::Live && wanted.contains(&entry.hash) {
                        self.enqueue(id, &peer, Direction::Push, entry);
                    } else {
                        self.confirm(&entry, &peer);
                    }
                }
            }
            HealMsg::TombstonesReply { .. } => {}
            HealMsg::Stale { .. } => {
                s.failed = true;
                s.to_summarize.clear();
                s.leaves.clear();
                s.tombstones_out.clear();
            }
            _ => {}
        }
        self.advance(id, now_ms, catalog, actions);
        self.release(now_ms, catalog, actions);
    }

    /// Whether a side holding `held` must learn the tombstone. A side holding nothing needs a
    /// tombstone only within its grace period: past it, "nothing" means purged, and sending it
    /// again would undo the purge.
    fn tombstone_needed(&self, now_ms: u64, held: Option<&Entry>, tombstone: &Entry) -> bool {
        held.is_some()
            || now_ms.saturating_sub(tombstone.version) <= self.settings.tombstone_grace_ms
    }

    /// Compares one leaf's entries (`theirs` against this node's) and schedules what each side
    /// must learn.
    fn reconcile(
        &mut self,
        now_ms: u64,
        id: u64,
        (bits, prefix): (u32, u32),
        theirs: Vec<Entry>,
        catalog: &dyn Catalog,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.sessions.active.get(&id).map(|s| s.peer.clone()) else {
            return;
        };
        let peer = peer.as_str();
        let ours = catalog.entries(peer, bits, prefix, None, usize::MAX);
        let ours: BTreeMap<BlobHash, Entry> = ours.into_iter().map(|e| (e.hash, e)).collect();
        let theirs: BTreeMap<BlobHash, Entry> = theirs.into_iter().map(|e| (e.hash, e)).collect();
        let hashes: BTreeSet<&BlobHash> = ours.keys().chain(theirs.keys()).collect();
        for hash in hashes {
            // A catalog may list from a snapshot; what the peer has and the list lacks is
            // looked up afresh before it is fetched.
            let fresh = match ours.get(hash) {
                Some(_) => None,
                None => catalog.entry(hash),
            };
            let (a, b) = (ours.get(hash).or(fresh.as_ref()), theirs.get(hash));
            match compare(a, b) {
                Verdict::Agree => self.transfers.forget_deferred(peer, hash),
                Verdict::Ours => {
                    let e = *a.expect("ours stands");
                    match e.kind {
                        EntryKind::Live => {
                            self.copy_or_defer(now_ms, id, peer, Direction::Push, e, b.is_none())
                        }
                        EntryKind::Tombstone => {
                            if self.tombstone_needed(now_ms, b, &e)
                                && let Some(s) = self.sessions.active.get_mut(&id)
                            {
                                s.tombstones_out.push(e);
                            }
                        }
                    }
                }
                Verdict::Theirs => {
                    let e = *b.expect("theirs stands");
                    match e.kind {
                        EntryKind::Live => {
                            self.copy_or_defer(now_ms, id, peer, Direction::Fetch, e, a.is_none())
                        }
                        EntryKind::Tombstone => {
                            if self.tombstone_needed(now_ms, a, &e) {
                                actions.push(Action::ApplyTombstone { entry: e })
                            }
                        }
                    }
                }
            }
        }
    }

    /// Answers a peer's request from the catalog.
    pub(super) fn answer(
        &mut self,
        now_ms: u64,
        from: &str,
        msg: HealMsg,
        catalog: &dyn Catalog,
        out: &mut Vec<Action>,
    ) {
        let mine = self.layout_version();
        if let Some(theirs) = msg.layout_version()
            && theirs != mine
        {
            out.push(Action::Send {
                to: from.to_string(),
                msg: HealMsg::Stale {
                    session: msg.session(),
                    layout_version: mine,
                },
            });
            return;
        }
        if let HealMsg::Summaries {
            session,
            prefix_bits: 0,
            ..
        } = &msg
        {
            // The start of a peer's session: remember when, for its `Done`. A duplicate that
            // arrives later must not move the start later than what the peer compared.
            let answering = &mut self.sessions.answering;
            if answering.len() >= AE_ANSWERING_SESSIONS_MAX
                && let Some(oldest) = answering.keys().next().cloned()
            {
                answering.remove(&oldest);
            }
            answering
                .entry((from.to_string(), *session))
                .or_insert(now_ms);
        }
        let reply = match msg {
            HealMsg::Summaries {
                session,
                prefix_bits,
                prefixes,
                ..
            } => {
                let summaries = if prefix_bits > AE_PREFIX_BITS_MAX
                    || prefixes.len() > AE_SUMMARIES_PER_REQUEST_MAX
                {
                    Vec::new()
                } else {
                    prefixes
                        .iter()
                        .map(|&p| catalog.summary(from, prefix_bits, p))
                        .collect()
                };
                HealMsg::SummariesReply { session, summaries }
            }
            HealMsg::Entries {
                session,
                prefix_bits,
                prefix,
                after,
                ..
            } => {
                let bits = prefix_bits.min(AE_PREFIX_BITS_MAX);
                let mut entries = catalog.entries(
                    from,
                    bits,
                    prefix,
                    after.as_ref(),
                    AE_ENTRIES_PER_REPLY_MAX + 1,
                );
                let complete = entries.len() <= AE_ENTRIES_PER_REPLY_MAX;
                entries.truncate(AE_ENTRIES_PER_REPLY_MAX);
                HealMsg::EntriesReply {
                    session,
                    entries,
                    complete,
                }
            }
            HealMsg::Offer {
                session, entries, ..
            } => {
                let mut wanted = Vec::new();
                for theirs in entries.iter().take(HANDOFF_ENTRIES_PER_OFFER_MAX) {
                    let ours = catalog.entry(&theirs.hash);
                    match (compare(ours.as_ref(), Some(theirs)), theirs.kind) {
                        (Verdict::Theirs, EntryKind::Live) => wanted.push(theirs.hash),
                        (Verdict::Theirs, EntryKind::Tombstone)
                            if self.tombstone_needed(now_ms, ours.as_ref(), theirs) =>
                        {
                            out.push(Action::ApplyTombstone { entry: *theirs })
                        }
                        _ => {}
                    }
                }
                HealMsg::OfferReply { session, wanted }
            }
            HealMsg::Tombstones {
                session, entries, ..
            } => {
                for e in entries.iter().take(HANDOFF_ENTRIES_PER_OFFER_MAX) {
                    let ours = catalog.entry(&e.hash);
                    if e.kind == EntryKind::Tombstone
                        && compare(ours.as_ref(), Some(e)) == Verdict::Theirs
                        && self.tombstone_needed(now_ms, ours.as_ref(), e)
                    {
                        out.push(Action::ApplyTombstone { entry: *e });
                    }
                }
                HealMsg::TombstonesReply { session }
            }
            _ => return,
        };
        out.push(Action::Send {
            to: from.to_string(),
            msg: reply,
        });
    }

    /// Start times of the last complete session with each peer (for status and tests).
    pub fn synced_since_ms(&self, peer: &str) -> Option<u64> {
        self.sessions.synced_since_ms.get(peer).copied()
    }

    /// Anti-entropy with `peer` is started by the node with the smaller id; the other side only
    /// answers, so the same difference is not copied twice.
    pub fn initiates_with(&self, peer: &str) -> bool {
        self.sessions.ae_due_ms.contains_key(peer)
    }

    /// Makes a session with `peer` due now (both sides may start it after a peer came back).
    pub fn compare_now(&mut self, now_ms: u64, peer: &str) {
        self.on_peer_up(now_ms, peer);
    }
}
