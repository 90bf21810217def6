//! Self-healing, as a plain state machine: anti-entropy between replicas, hand-off of copies the
//! layout placed elsewhere, tombstone purge and scrub pacing. It is told the time, the messages
//! that arrived and how transfers ended, and answers with actions (send a message, copy a blob,
//! apply a tombstone, drop a copy). No IO, no clock, no randomness: the node drives it with
//! tokio and QUIC, the simulator in `core/tests/` drives the same code with virtual time.
//!
//! **Anti-entropy** (`session.rs`). Two nodes compare the entries they should share (blobs and
//! tombstones whose replicas include both) as a tree of hash prefixes, 16 children per level. A
//! node of the tree is summarized by the XOR of its entries' digests and their count. The
//! initiator asks for summaries, descends only where they differ, and asks for the entries of a
//! differing prefix once it is small (`AE_LEAF_ENTRIES_MAX`). Identical replicas agree after one
//! summary of the root; a few missing blobs cost a few summaries per level. The initiator then
//! pulls what it lacks, pushes what the peer lacks, and sends tombstones that the peer has not
//! seen.
//!
//! **Transfers** (`transfers.rs`). Blob copies are queued, started within the in-flight cap and
//! the bandwidth budget, and never made twice; a blob several peers hold is fetched from one, and
//! a copy another owner is designated to make is left to it for a while.
//!
//! **Hand-off** (`handoff.rs`). A node scans what it holds; an entry whose replicas (in the
//! current layout) no longer include this node is offered to its owners, pushed to those that
//! want it, and dropped here only once every owner holds it durably.
//!
//! **Tombstones and versions** (`purge.rs`). Every entry has a version (milliseconds on the
//! coordinator's clock; 0 for a live copy whose version was forgotten). Between a live copy and a
//! tombstone the higher version wins, the tombstone on a tie; two live copies always agree. A
//! versioned entry is forgotten (a tombstone purged, a live copy's version dropped) once it is
//! older than the grace period and every other owner has completed an anti-entropy session with
//! this node that started after the entry was recorded here, so every owner has seen it.
//!
//! **Scrub** (`scrub.rs`) is a separate machine, [`Scrubber`]: it only paces which blobs the
//! driver verifies next.

mod catalog;
mod entry;
mod handoff;
mod msg;
mod purge;
mod scrub;
mod session;
mod settings;
mod throttle;
mod transfers;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use catalog::Catalog;
pub use entry::{BlobHash, Entry, EntryKind, Summary, Verdict, compare, prefix_bounds, prefix_of};
pub use msg::{Action, Direction, HealMsg};
pub use scrub::Scrubber;
pub use settings::{
    ANTI_ENTROPY_INTERVAL_MS_DEFAULT, HANDOFF_INTERVAL_MS_DEFAULT, HEAL_REQUEST_TIMEOUT_MS_DEFAULT,
    HealSettings, HealSettingsError, SCRUB_BYTES_PER_SEC_DEFAULT, SCRUB_INTERVAL_MS_DEFAULT,
    TOMBSTONE_GRACE_MS_DEFAULT, TRANSFERS_IN_FLIGHT_MAX_DEFAULT,
};
pub use throttle::Throttle;

use crate::limits::HANDOFF_RESCAN_WAKE_MS;
use crate::routing::Routing;
use handoff::Handoff;
pub use handoff::UnderReplicated;
use purge::Purge;
use session::Sessions;
use transfers::Transfers;

/// Figures for `cairn status` and `cairn layout status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealProgress {
    /// Bytes of misplaced entries found by the last complete hand-off pass, less those handed
    /// over since.
    pub misplaced_bytes: u64,
    /// Bytes handed over or copied by anti-entropy since the layout was adopted.
    pub moved_bytes: u64,
    pub sessions_completed: u64,
    pub transfers_queued: usize,
    pub transfers_in_flight: usize,
    pub entries_purged: u64,
    /// What the last complete hand-off pass found under-replicated.
    pub under_replicated: UnderReplicated,
    /// Copies made (pushed or fetched) since the node started.
    pub copies_made: u64,
}

/// Ids of sessions, requests and transfers: one counter, so no two of them are ever equal.
#[derive(Debug)]
struct Ids {
    next: u64,
}

impl Ids {
    fn fresh(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }
}

/// The healer of one node: an orchestrator over four sub-states (anti-entropy sessions, the
/// transfer queue, the hand-off scan, the purge scan), each in its own file with its own
/// invariants.
///
/// # The driver's contract
///
/// - Make one healer per node process with [`Healer::new`]; a restarted process makes a new one
///   (nothing of it is durable: sessions are simply started again).
/// - Time is an argument: `now_ms` is milliseconds on this node's wall clock (the clock
///   versions are written with) and never decreases from one call to the next.
/// - Call [`Healer::tick`] when [`Healer::next_wake_ms`] says so (calling it more often is
///   harmless), with `up` saying which peers the failure detector sees up.
/// - Give every [`HealMsg`] a peer sends to [`Healer::on_message`], requests and replies alike,
///   with the sender's node id. A request's answer is among the returned actions (a `Send` to
///   the sender); the driver returns it to the sender as the reply.
/// - Carry out returned [`Action`]s in order. An `ApplyTombstone` must be durable before any
///   later `Send` leaves (see [`Action::ApplyTombstone`]).
/// - Report the end of every [`Action::Transfer`] exactly once with
///   [`Healer::on_transfer_done`]; a transfer that hangs must be ended by a timeout (`ok` false).
/// - Tell [`Healer::set_routing`] of every layout adopted, [`Healer::on_peer_up`] of every peer
///   the failure detector sees come up, and [`Healer::on_corrupt`] of every local copy found
///   corrupt and quarantined.
/// - The [`Catalog`] passed in is this node's store as it is now; it may answer listings from a
///   slightly old snapshot, but [`Catalog::entry`] is current.
pub struct Healer {
    self_id: String,
    settings: HealSettings,
    routing: Arc<Routing>,
    /// When the current layout was adopted.
    layout_since_ms: u64,
    ids: Ids,
    sessions: Sessions,
    transfers: Transfers,
    handoff: Handoff,
    purge: Purge,
    progress: HealProgress,
}

impl Healer {
    pub fn new(
        self_id: &str,
        settings: HealSettings,
        routing: Arc<Routing>,
        now_ms: u64,
    ) -> Healer {
        let transfers = Transfers::new(settings.bandwidth_bytes_per_sec, now_ms);
        let mut healer = Healer {
            self_id: self_id.to_string(),
            settings,
            routing,
            layout_since_ms: now_ms,
            ids: Ids { next: 1 },
            sessions: Sessions::default(),
            transfers,
            handoff: Handoff::new(now_ms),
            purge: Purge::new(now_ms),
            progress: HealProgress::default(),
        };
        healer.reset_schedule(now_ms);
        healer.assert_invariants();
        healer
    }

    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    pub fn settings(&self) -> &HealSettings {
        &self.settings
    }

    /// A new layout was adopted: sessions on the old one end, every peer is compared again, and
    /// a hand-off pass starts at once.
    pub fn set_routing(&mut self, now_ms: u64, routing: Arc<Routing>) {
        self.routing = routing;
        self.layout_since_ms = now_ms;
        self.sessions.active.clear();
        self.sessions.synced_since_ms.clear();
        // Queued copies were chosen under the old layout; running ones finish.
        self.transfers.drop_queued();
        self.handoff.restart(now_ms);
        self.progress.misplaced_bytes = 0;
        self.progress.moved_bytes = 0;
        self.reset_schedule(now_ms);
        self.assert_invariants();
    }

    /// The same layout without its predecessor (its moves are over): nothing changes for the
    /// healer, which places by the current layout only.
    pub fn retire_previous(&mut self, routing: Arc<Routing>) {
        assert_eq!(
            routing.layout, self.routing.layout,
            "retiring the previous layout keeps the current one"
        );
        self.routing = routing;
    }

    /// When the current layout was adopted (wall clock, milliseconds).
    pub fn layout_since_ms(&self) -> u64 {
        self.layout_since_ms
    }

    /// Hand-off of live copies is switched off on a node that was out of contact for longer
    /// than the tombstone grace period: deletes it missed may already be purged elsewhere, so
    /// its copies must not be offered (they would come back). It still takes part as an owner.
    pub fn set_handoff_enabled(&mut self, enabled: bool) {
        self.handoff.enabled = enabled;
    }

    pub fn progress(&self) -> HealProgress {
        let mut p = self.progress.clone();
        p.transfers_queued = self.transfers.queued();
        p.transfers_in_flight = self.transfers.in_flight;
        p
    }

    /// Node ids that own a hash under the current layout.
    pub fn owners(&self, hash: &BlobHash) -> Vec<String> {
        let layout = &self.routing.layout;
        self.routing
            .placement
            .replicas(&cairn_engine::Hash::from_bytes(*hash))
            .iter()
            .map(|&i| layout.nodes[i as usize].id.clone())
            .collect()
    }

    fn layout_version(&self) -> u64 {
        self.routing.layout.version
    }

    /// A copy of `hash` was written here (a put or a copy). If the layout places it elsewhere
    /// (a writer still on an older layout sent it), the node is no longer settled until a
    /// whole hand-off pass has run again.
    pub fn on_local_write(&mut self, hash: &BlobHash) {
        let me = self.routing.layout.node_index(&self.self_id);
        let owned = me.is_some_and(|me| {
            self.routing
                .placement
                .replicas(&cairn_engine::Hash::from_bytes(*hash))
                .iter()
                .any(|&i| usize::from(i) == me)
        });
        if !owned {
            self.handoff.passes_since_layout = 0;
        }
    }

    /// Whether everything this node holds is where the current layout places it, as far as it
    /// can tell: a whole hand-off pass has run since the layout was adopted and left nothing
    /// misplaced, no copy is queued or running, and (for a node of the layout) every other node
    /// of the layout has completed an anti-entropy session with it that began after the
    /// adoption, so whatever either side lacked was copied. A node outside the layout is
    /// settled once it holds nothing the layout places elsewhere, that is, once it is empty.
    pub fn settled(&self) -> bool {
        let moved_out = self.handoff.passes_since_layout > 0
            && !self.handoff.busy()
            && self.transfers.queued() == 0
            && self.transfers.in_flight == 0;
        if !moved_out {
            return false;
        }
        let since = self.layout_since_ms;
        self.routing
            .layout
            .nodes
            .iter()
            .filter(|n| n.id != self.self_id)
            .all(|n| self.synced_since_ms(&n.id).is_some_and(|t| t >= since))
            || self.routing.layout.node_index(&self.self_id).is_none()
    }

    /// Starts what is due, times out what is late, releases transfers the bandwidth allows.
    pub fn tick(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        up: &dyn Fn(&str) -> bool,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.time_out_requests(now_ms, &mut actions);
        self.start_due_sessions(now_ms, catalog, up, &mut actions);
        self.handoff_tick(now_ms, catalog, up, &mut actions);
        self.purge_tick(now_ms, catalog, &mut actions);
        self.release(now_ms, catalog, &mut actions);
        self.assert_invariants();
        actions
    }

    /// The earliest time `tick` has something to do (a timer for the driver).
    pub fn next_wake_ms(&self, now_ms: u64) -> u64 {
        let mut wake = self.handoff.due_ms.min(self.purge.due_ms);
        if let Some(d) = self.sessions.next_wake_ms() {
            wake = wake.min(d);
        }
        if let Some(ready) = self
            .transfers
            .next_release_ms(self.settings.transfers_in_flight_max)
        {
            wake = wake.min(ready);
        }
        if self.handoff.busy() {
            wake = wake.min(now_ms + HANDOFF_RESCAN_WAKE_MS);
        }
        wake.max(now_ms)
    }

    /// A message from a peer. Requests are answered; replies move their session on.
    pub fn on_message(
        &mut self,
        now_ms: u64,
        from: &str,
        msg: HealMsg,
        catalog: &dyn Catalog,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if msg.is_request() {
            self.answer(now_ms, from, msg, catalog, &mut actions);
        } else if let HealMsg::Done { session } = msg {
            self.sessions.peer_done(from, session);
        } else {
            self.on_reply(now_ms, from, msg, catalog, &mut actions);
        }
        self.assert_invariants();
        actions
    }

    /// A transfer ended. `ok`: the receiving side holds the blob durably.
    pub fn on_transfer_done(
        &mut self,
        now_ms: u64,
        id: u64,
        ok: bool,
        catalog: &dyn Catalog,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(t) = self.transfers.finished(id) else {
            return actions; // ended already, or dropped with its layout
        };
        let repair = self.sessions.kind_of(t.session) == Some(session::SessionKind::Repair);
        if ok {
            self.progress.moved_bytes += t.entry.bytes;
            self.progress.copies_made += 1;
            if t.direction == Direction::Push {
                self.confirm(&t.entry, &t.peer);
            }
        }
        if let Some(s) = self.sessions.active.get_mut(&t.session) {
            assert!(s.transfers > 0, "a session's transfer count went negative");
            s.transfers -= 1;
            if !ok {
                s.failed = true;
            }
            self.finish_if_done(t.session, now_ms, &mut actions);
        }
        if repair {
            self.repair_done(now_ms, t.entry, &t.peer, ok);
        }
        self.drop_confirmed(catalog, &mut actions);
        self.release(now_ms, catalog, &mut actions);
        self.assert_invariants();
        actions
    }

    /// Checks what must hold between the sub-states after every public call: in debug builds
    /// and in the simulator, which turns each of these beliefs into a fact over every seed.
    fn assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.sessions.assert_invariants(&self.self_id);
        self.transfers
            .assert_invariants(&self.self_id, self.settings.transfers_in_flight_max);
        self.handoff.assert_invariants();
        // Every active session's transfer count is what the transfer queue holds for it.
        for (id, s) in &self.sessions.active {
            let held = self.transfers.count_for_session(*id);
            assert_eq!(
                s.transfers, held,
                "session {id} counts {} transfers, the queue holds {held}",
                s.transfers
            );
        }
    }
}
