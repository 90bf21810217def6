//! Self-healing, as a plain state machine: anti-entropy between replicas, hand-off of copies the
//! layout placed elsewhere, tombstone purge and scrub pacing. It is told the time, the messages
//! that arrived and how transfers ended, and answers with actions (send a message, copy a blob,
//! apply a tombstone, drop a copy). No IO, no clock, no randomness: the node drives it with
//! tokio and QUIC, the simulator in tests/ drives the same code with virtual time.
//!
//! **Anti-entropy.** Two nodes compare the entries they should share (blobs and tombstones whose
//! replicas include both) as a tree of hash prefixes, 16 children per level. A node of the tree
//! is summarized by the XOR of its entries' digests and their count. The initiator asks for
//! summaries, descends only where they differ, and asks for the entries of a differing prefix
//! once it is small (`AE_LEAF_ENTRIES_MAX`). Identical replicas agree after one summary of the
//! root; a few missing blobs cost a few summaries per level. The initiator then pulls what it
//! lacks, pushes what the peer lacks, and sends tombstones that the peer has not seen.
//!
//! **Hand-off.** A node scans what it holds; an entry whose replicas (in the current layout) no
//! longer include this node is offered to its owners, pushed to those that want it, and dropped
//! here only once every owner holds it durably.
//!
//! **Tombstones and versions.** Every entry has a version (milliseconds on the coordinator's
//! clock; 0 for a live copy whose version was forgotten). Between a live copy and a tombstone
//! the higher version wins, the tombstone on a tie; two live copies always agree. A versioned
//! entry is forgotten (a tombstone purged, a live copy's version dropped) once it is older than
//! the grace period and every other owner has completed an anti-entropy session with this node
//! that started after the entry was recorded here, so every owner has seen it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use cairn_client::Routing;
use serde::{Deserialize, Serialize};

/// A blob's name: its BLAKE3 hash.
pub type BlobHash = [u8; 32];

/// Children of one node of the comparison tree (4 bits of the hash per level).
pub const AE_FANOUT_BITS: u32 = 4;

/// Deepest level of the comparison tree, in hash bits (6 levels below the root).
pub const AE_PREFIX_BITS_MAX: u32 = 24;

/// A differing prefix whose entries on both sides are at most this many is compared entry by
/// entry instead of descending further.
pub const AE_LEAF_ENTRIES_MAX: u64 = 32;

/// Most prefix summaries one request asks for.
pub const AE_SUMMARIES_PER_REQUEST_MAX: usize = 1024;

/// Most entries in one entries reply; longer prefixes are paged.
pub const AE_ENTRIES_PER_REPLY_MAX: usize = 2048;

/// Most entries one hand-off offer or tombstone push carries.
pub const HANDOFF_ENTRIES_PER_OFFER_MAX: usize = 512;

/// Entries a hand-off pass examines per tick.
pub const HANDOFF_SCAN_ENTRIES_PER_TICK: usize = 4096;

/// Misplaced entries a node tracks at once while their owners confirm them.
pub const HANDOFF_PENDING_ENTRIES_MAX: usize = 16_384;

/// Copies a node leaves to their designated source at once, at most; beyond it, it copies.
pub const DEFERRED_COPIES_MAX: usize = 65_536;

/// Versioned entries the purge examines per step.
pub const PURGE_SCAN_ENTRIES_PER_TICK: usize = 4096;

/// Pause between two purge steps.
pub const PURGE_STEP_INTERVAL_MS: u64 = 1_000;

/// Sessions started by peers that a node remembers while waiting for their `Done`.
pub const AE_ANSWERING_SESSIONS_MAX: usize = 4096;

/// Default settings; see [`HealSettings`].
pub const ANTI_ENTROPY_INTERVAL_MS_DEFAULT: u64 = 30_000;
pub const HANDOFF_INTERVAL_MS_DEFAULT: u64 = 10_000;
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 24 * 3600 * 1000;
pub const HEAL_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const TRANSFERS_IN_FLIGHT_MAX_DEFAULT: usize = 8;
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 32 * 1024 * 1024;
pub const SCRUB_INTERVAL_MS_DEFAULT: u64 = 24 * 3600 * 1000;

/// Most transfers (blob copies) in flight at once, whatever the configuration says.
pub const TRANSFERS_IN_FLIGHT_MAX: usize = 256;

/// How healing is paced, from the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealSettings {
    /// Pause between two anti-entropy sessions with the same peer.
    pub anti_entropy_interval_ms: u64,
    /// Pause between two hand-off passes over the store.
    pub handoff_interval_ms: u64,
    /// How long a tombstone (or a live copy's version) is kept at least.
    pub tombstone_grace_ms: u64,
    /// Copies made by anti-entropy and hand-off share this bandwidth; 0: unlimited.
    pub bandwidth_bytes_per_sec: u64,
    pub transfers_in_flight_max: usize,
    /// A request of a session unanswered for this long ends the session.
    pub request_timeout_ms: u64,
    /// Scrub reads at most this many bytes per second; 0: scrub is off.
    pub scrub_bytes_per_sec: u64,
    /// Pause between the end of one scrub pass and the start of the next.
    pub scrub_interval_ms: u64,
}

impl Default for HealSettings {
    fn default() -> HealSettings {
        HealSettings {
            anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL_MS_DEFAULT,
            handoff_interval_ms: HANDOFF_INTERVAL_MS_DEFAULT,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
            bandwidth_bytes_per_sec: 0,
            transfers_in_flight_max: TRANSFERS_IN_FLIGHT_MAX_DEFAULT,
            request_timeout_ms: HEAL_REQUEST_TIMEOUT_MS_DEFAULT,
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            scrub_interval_ms: SCRUB_INTERVAL_MS_DEFAULT,
        }
    }
}

impl HealSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.transfers_in_flight_max == 0
            || self.transfers_in_flight_max > TRANSFERS_IN_FLIGHT_MAX
        {
            return Err(format!(
                "transfers_in_flight_max must be 1..={TRANSFERS_IN_FLIGHT_MAX}"
            ));
        }
        if self.anti_entropy_interval_ms == 0 || self.handoff_interval_ms == 0 {
            return Err("anti_entropy_interval_ms and handoff_interval_ms must be above 0".into());
        }
        if self.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be above 0".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    Live,
    Tombstone,
}

/// What a node holds for one hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub hash: BlobHash,
    pub kind: EntryKind,
    /// Milliseconds on the clock of the node that coordinated the put or delete; 0 for a live
    /// copy whose version was forgotten.
    pub version: u64,
    /// The blob's length (0 for a tombstone); paces transfers.
    pub bytes: u64,
}

fn mix64(mut x: u64) -> u64 {
    // splitmix64's finalizer: a bijection that spreads every input bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Entry {
    pub fn live(hash: BlobHash, version: u64, bytes: u64) -> Entry {
        Entry {
            hash,
            kind: EntryKind::Live,
            version,
            bytes,
        }
    }

    pub fn tombstone(hash: BlobHash, version: u64) -> Entry {
        Entry {
            hash,
            kind: EntryKind::Tombstone,
            version,
            bytes: 0,
        }
    }

    /// What this entry adds to a prefix summary. Live copies agree whatever their versions, so
    /// their digest leaves the version out; a tombstone's includes it.
    pub fn digest(&self) -> u64 {
        let a = u64::from_le_bytes(self.hash[8..16].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(self.hash[16..24].try_into().expect("8 bytes"));
        let base = mix64(a ^ mix64(b));
        match self.kind {
            EntryKind::Live => base,
            EntryKind::Tombstone => mix64(base ^ mix64(self.version ^ 0x746f_6d62_7374_6f6e)),
        }
    }

    fn rank(&self) -> (u64, u8) {
        match self.kind {
            EntryKind::Live => (self.version, 0),
            EntryKind::Tombstone => (self.version, 1),
        }
    }
}

/// Which of two entries for one hash stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Both say the same (two live copies, or the same tombstone).
    Agree,
    /// `ours` stands; the other side must learn it.
    Ours,
    /// `theirs` stands; this side must learn it.
    Theirs,
}

/// The merge rule of entries. `None` is "nothing here".
pub fn compare(ours: Option<&Entry>, theirs: Option<&Entry>) -> Verdict {
    match (ours, theirs) {
        (None, None) => Verdict::Agree,
        (Some(_), None) => Verdict::Ours,
        (None, Some(_)) => Verdict::Theirs,
        (Some(a), Some(b)) => {
            if a.kind == EntryKind::Live && b.kind == EntryKind::Live {
                return Verdict::Agree;
            }
            match a.rank().cmp(&b.rank()) {
                std::cmp::Ordering::Equal => Verdict::Agree,
                std::cmp::Ordering::Greater => Verdict::Ours,
                std::cmp::Ordering::Less => Verdict::Theirs,
            }
        }
    }
}

/// The high `bits` bits of a hash (at most 32).
pub fn prefix_of(hash: &BlobHash, bits: u32) -> u32 {
    debug_assert!(bits <= 32);
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes(hash[..4].try_into().expect("4 bytes"));
    top >> (32 - bits)
}

/// The first hash under a prefix, and the first past it (`None`: the end of the space).
pub fn prefix_bounds(bits: u32, prefix: u32) -> (BlobHash, Option<BlobHash>) {
    let mut start = [0u8; 32];
    if bits == 0 {
        return (start, None);
    }
    let shift = 32 - bits;
    start[..4].copy_from_slice(&(prefix << shift).to_be_bytes());
    let next = (prefix as u64 + 1) << shift;
    if next > u32::MAX as u64 {
        return (start, None);
    }
    let mut end = [0u8; 32];
    end[..4].copy_from_slice(&(next as u32).to_be_bytes());
    (start, Some(end))
}

/// Digest and count of the entries under a prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub digest: u64,
    pub count: u64,
}

impl Summary {
    pub fn add(&mut self, entry: &Entry) {
        self.digest ^= entry.digest();
        self.count += 1;
    }
}

impl<'a> FromIterator<&'a Entry> for Summary {
    fn from_iter<I: IntoIterator<Item = &'a Entry>>(entries: I) -> Summary {
        let mut s = Summary::default();
        entries.into_iter().for_each(|e| s.add(e));
        s
    }
}

/// What the healer reads of the local store. Implementations answer from memory (the engine's
/// index, the version table); nothing here waits on a disk.
pub trait Catalog {
    /// Summary of this node's entries under the prefix whose replicas include `peer`.
    fn summary(&self, peer: &str, prefix_bits: u32, prefix: u32) -> Summary;
    /// Up to `limit` of those entries after `after`, in hash order.
    fn entries(
        &self,
        peer: &str,
        prefix_bits: u32,
        prefix: u32,
        after: Option<&BlobHash>,
        limit: usize,
    ) -> Vec<Entry>;
    /// This node's entry for a hash.
    fn entry(&self, hash: &BlobHash) -> Option<Entry>;
    /// Up to `limit` of all local entries after `after`, in hash order, whatever their placement.
    fn scan(&self, after: Option<&BlobHash>, limit: usize) -> Vec<Entry>;
    /// Up to `limit` versioned entries after `after`, in hash order, with the time (on this
    /// node's clock) each was recorded here.
    fn versioned(&self, after: Option<&BlobHash>, limit: usize) -> Vec<(Entry, u64)>;
}

/// Messages between healers. Every request carries an id that its reply echoes, and the
/// sender's layout version; a peer on another layout answers `Stale` and the session ends. The
/// first request of a session and its `Done` carry the session's id, every later request a fresh
/// one, so a late or duplicated reply is never taken for the answer to a later request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealMsg {
    Summaries {
        session: u64,
        layout_version: u64,
        prefix_bits: u32,
        prefixes: Vec<u32>,
    },
    SummariesReply {
        session: u64,
        summaries: Vec<Summary>,
    },
    Entries {
        session: u64,
        layout_version: u64,
        prefix_bits: u32,
        prefix: u32,
        after: Option<BlobHash>,
    },
    EntriesReply {
        session: u64,
        entries: Vec<Entry>,
        complete: bool,
    },
    /// Hand-off: "I hold these and you own them". Tombstones among them are applied at once.
    Offer {
        session: u64,
        layout_version: u64,
        entries: Vec<Entry>,
    },
    /// The live entries of the offer that the owner lacks; it holds the others.
    OfferReply {
        session: u64,
        wanted: Vec<BlobHash>,
    },
    /// Tombstones the peer has not seen; applied before the reply.
    Tombstones {
        session: u64,
        layout_version: u64,
        entries: Vec<Entry>,
    },
    TombstonesReply {
        session: u64,
    },
    /// The initiator's session ended with every difference resolved: the responder now knows
    /// the initiator has seen everything it held when the session began.
    Done {
        session: u64,
    },
    /// The request's layout version differs from this node's.
    Stale {
        session: u64,
        layout_version: u64,
    },
}

impl HealMsg {
    /// The id a message carries (see [`HealMsg`]).
    pub fn session(&self) -> u64 {
        match self {
            HealMsg::Summaries { session, .. }
            | HealMsg::SummariesReply { session, .. }
            | HealMsg::Entries { session, .. }
            | HealMsg::EntriesReply { session, .. }
            | HealMsg::Offer { session, .. }
            | HealMsg::OfferReply { session, .. }
            | HealMsg::Tombstones { session, .. }
            | HealMsg::TombstonesReply { session }
            | HealMsg::Done { session }
            | HealMsg::Stale { session, .. } => *session,
        }
    }

    /// The sender's layout version, carried by every request.
    pub fn layout_version(&self) -> Option<u64> {
        match self {
            HealMsg::Summaries { layout_version, .. }
            | HealMsg::Entries { layout_version, .. }
            | HealMsg::Offer { layout_version, .. }
            | HealMsg::Tombstones { layout_version, .. } => Some(*layout_version),
            _ => None,
        }
    }

    /// Whether a message starts an exchange (the peer answers it) or answers one.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            HealMsg::Summaries { .. }
                | HealMsg::Entries { .. }
                | HealMsg::Offer { .. }
                | HealMsg::Tombstones { .. }
        )
    }
}

/// Direction of a blob copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Copy the local blob to the peer, which stores it durably.
    Push,
    /// Copy the peer's blob here: verify its hash, store it durably.
    Fetch,
}

/// What the healer asks its driver to do. Actions are carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: String,
        msg: HealMsg,
    },
    /// Copy a blob; report the outcome with [`Healer::on_transfer_done`].
    Transfer {
        id: u64,
        peer: String,
        direction: Direction,
        entry: Entry,
    },
    /// Record the tombstone durably (and drop the local copy) if it stands over the local entry.
    /// It may be synced later, but before any later `Send` leaves: peers count a session's
    /// answers as what this node holds and purge their tombstones on that basis, so a crash
    /// must not take back a tombstone the peer was already told about.
    ApplyTombstone {
        entry: Entry,
    },
    /// Drop the local copy or tombstone of a hash this node no longer owns; its owners hold it.
    DropLocal {
        hash: BlobHash,
    },
    /// Forget the entry's version: purge a tombstone, or keep a live copy as version 0.
    ForgetVersion {
        entry: Entry,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionKind {
    AntiEntropy,
    Handoff,
    /// Fetching a good copy after a corrupt one was quarantined.
    Repair,
}

#[derive(Debug)]
struct Session {
    kind: SessionKind,
    peer: String,
    started_ms: u64,
    /// When the outstanding request times out (`None`: none outstanding).
    deadline_ms: Option<u64>,
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
    /// Transfers of this session still running.
    transfers: usize,
    failed: bool,
    /// Some difference was left to another owner: the session runs on, but is not credited
    /// as a full sync and is tried again soon.
    unresolved: bool,
    /// Hand-off: the offered entries, until the owner answers.
    offered: Vec<Entry>,
}

#[derive(Debug)]
struct Transfer {
    session: u64,
    peer: String,
    direction: Direction,
    entry: Entry,
}

/// A misplaced entry waiting for its owners to confirm they hold it.
#[derive(Debug)]
struct Misplaced {
    entry: Entry,
    /// Owners that have not confirmed yet (by holding it, or by a push to them succeeding).
    unconfirmed: BTreeSet<String>,
}

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
}

/// Pacing of bytes: a token bucket refilled at `rate` bytes per second, holding at most one
/// second's worth. A copy larger than the bucket may start when the bucket is full and leaves
/// it in debt, so every size eventually passes.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate_bytes_per_sec: u64,
    tokens: i128,
    last_ms: u64,
}

impl Throttle {
    /// `rate_bytes_per_sec` 0: unlimited.
    pub fn new(rate_bytes_per_sec: u64, now_ms: u64) -> Throttle {
        Throttle {
            rate_bytes_per_sec,
            tokens: rate_bytes_per_sec as i128,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_ms) as i128;
        self.last_ms = self.last_ms.max(now_ms);
        let cap = self.rate_bytes_per_sec as i128;
        self.tokens = (self.tokens + elapsed_ms * cap / 1000).min(cap);
    }

    /// Takes `bytes` if the bucket allows it now.
    pub fn try_take(&mut self, now_ms: u64, bytes: u64) -> bool {
        if self.rate_bytes_per_sec == 0 {
            return true;
        }
        self.refill(now_ms);
        let cap = self.rate_bytes_per_sec as i128;
        let bytes = bytes as i128;
        if self.tokens >= bytes || (bytes > cap && self.tokens >= cap) {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// When `bytes` could next be taken.
    pub fn ready_at_ms(&self, bytes: u64) -> u64 {
        if self.rate_bytes_per_sec == 0 {
            return self.last_ms;
        }
        let need = (bytes as i128).min(self.rate_bytes_per_sec as i128) - self.tokens;
        if need <= 0 {
            return self.last_ms;
        }
        self.last_ms + (need * 1000 / self.rate_bytes_per_sec as i128) as u64 + 1
    }
}

/// The healer of one node.
pub struct Healer {
    self_id: String,
    settings: HealSettings,
    routing: Arc<Routing>,
    sessions: BTreeMap<u64, Session>,
    next_id: u64,
    /// Per peer: when the next anti-entropy session may start.
    ae_due_ms: BTreeMap<String, u64>,
    /// Per peer: start time of the last session that completed without a failure.
    synced_since_ms: HashMap<String, u64>,
    queue: VecDeque<u64>,
    transfers: HashMap<u64, Transfer>,
    /// (peer, hash, direction) of queued or running transfers, so a copy is not made twice.
    transfer_keys: HashMap<(String, BlobHash, Direction), u64>,
    /// Hashes with a fetch queued or running, from whichever peer: a blob missing here that
    /// several peers hold is fetched from one of them.
    fetching: HashSet<BlobHash>,
    /// Repairs of a corrupt copy that failed, by hash: where the next attempt starts among the
    /// other owners, and how many failed. The next attempt asks the owner after the one that
    /// failed, so one owner that lacks the blob (a replica still owed a hint, say) cannot stall
    /// the repair.
    repair_attempts: HashMap<BlobHash, (usize, usize)>,
    /// Copies left to another owner (the designated source), by (peer, hash, direction), with
    /// when they were first left.
    deferred: HashMap<(String, BlobHash, Direction), u64>,
    in_flight: usize,
    throttle: Throttle,
    handoff_cursor: Option<BlobHash>,
    handoff_due_ms: u64,
    handoff_pass_bytes: u64,
    handoff_enabled: bool,
    misplaced: BTreeMap<BlobHash, Misplaced>,
    purge_cursor: Option<BlobHash>,
    purge_due_ms: u64,
    /// Sessions peers started with this node: (peer, session) to when the first request came.
    answering: BTreeMap<(String, u64), u64>,
    progress: HealProgress,
}

impl Healer {
    pub fn new(
        self_id: &str,
        settings: HealSettings,
        routing: Arc<Routing>,
        now_ms: u64,
    ) -> Healer {
        let throttle = Throttle::new(settings.bandwidth_bytes_per_sec, now_ms);
        let mut healer = Healer {
            self_id: self_id.to_string(),
            settings,
            routing,
            sessions: BTreeMap::new(),
            next_id: 1,
            ae_due_ms: BTreeMap::new(),
            synced_since_ms: HashMap::new(),
            queue: VecDeque::new(),
            transfers: HashMap::new(),
            transfer_keys: HashMap::new(),
            fetching: HashSet::new(),
            repair_attempts: HashMap::new(),
            deferred: HashMap::new(),
            in_flight: 0,
            throttle,
            handoff_cursor: None,
            handoff_due_ms: now_ms,
            handoff_pass_bytes: 0,
            handoff_enabled: true,
            misplaced: BTreeMap::new(),
            purge_cursor: None,
            purge_due_ms: now_ms,
            answering: BTreeMap::new(),
            progress: HealProgress::default(),
        };
        healer.reset_schedule(now_ms);
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
        self.sessions.clear();
        self.repair_attempts.clear();
        // Queued copies were chosen under the old layout; running ones finish.
        for id in std::mem::take(&mut self.queue) {
            if let Some(t) = self.transfers.remove(&id) {
                self.forget_transfer(&t);
            }
        }
        self.misplaced.clear();
        self.handoff_cursor = None;
        self.handoff_due_ms = now_ms;
        self.handoff_pass_bytes = 0;
        self.progress.misplaced_bytes = 0;
        self.progress.moved_bytes = 0;
        self.synced_since_ms.clear();
        self.reset_schedule(now_ms);
    }

    /// Hand-off of live copies is switched off on a node that was out of contact for longer
    /// than the tombstone grace period: deletes it missed may already be purged elsewhere, so
    /// its copies must not be offered (they would come back). It still takes part as an owner.
    pub fn set_handoff_enabled(&mut self, enabled: bool) {
        self.handoff_enabled = enabled;
    }

    fn reset_schedule(&mut self, now_ms: u64) {
        self.ae_due_ms.clear();
        let peers: Vec<String> = self
            .routing
            .layout
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .filter(|id| *id > self.self_id)
            .collect();
        for peer in peers {
            self.ae_due_ms.insert(peer, now_ms);
        }
    }

    /// The peer came back (or was just met): compare with it soon. Either side starts the
    /// session after such an event, so a one-way recovery is noticed.
    pub fn on_peer_up(&mut self, now_ms: u64, peer: &str) {
        if self.routing.layout.node_index(peer).is_some() && peer != self.self_id {
            self.ae_due_ms.insert(peer.to_string(), now_ms);
        }
    }

    /// A corrupt copy was quarantined here: fetch a good one from another owner.
    pub fn on_corrupt(&mut self, now_ms: u64, entry: Entry, up: &dyn Fn(&str) -> bool) {
        let others: Vec<String> = self
            .owners(&entry.hash)
            .into_iter()
            .filter(|o| *o != self.self_id)
            .collect();
        // Nothing to ask, or a fetch of it already queued or running.
        if others.is_empty() || self.fetching.contains(&entry.hash) {
            return;
        }
        // In placement order, from the owner after the last one that failed; up owners first.
        let start = self.repair_attempts.get(&entry.hash).map_or(0, |a| a.0);
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
    }

    /// A repair fetch from `peer` ended: done, or on to the next owner until each was asked.
    fn repair_done(&mut self, now_ms: u64, entry: Entry, peer: &str, ok: bool) {
        if ok {
            self.repair_attempts.remove(&entry.hash);
            return;
        }
        let others: Vec<String> = self
            .owners(&entry.hash)
            .into_iter()
            .filter(|o| *o != self.self_id)
            .collect();
        let after = others.iter().position(|o| o == peer).map_or(0, |i| i + 1);
        let (start, failed) = self.repair_attempts.entry(entry.hash).or_default();
        *start = after;
        *failed += 1;
        if *failed >= others.len() {
            // Each owner was asked: the next notice of the damage starts over.
            self.repair_attempts.remove(&entry.hash);
            return;
        }
        self.on_corrupt(now_ms, entry, &|_| true);
    }

    pub fn progress(&self) -> HealProgress {
        let mut p = self.progress.clone();
        p.transfers_queued = self.queue.len();
        p.transfers_in_flight = self.in_flight;
        p
    }

    /// Node ids that own a hash under the current layout.
    pub fn owners(&self, hash: &BlobHash) -> Vec<String> {
        let layout = &self.routing.layout;
        self.routing
            .placement
            .replicas(&cairn_client::Hash::from_bytes(*hash))
            .iter()
            .map(|&i| layout.nodes[i as usize].id.clone())
            .collect()
    }

    fn new_session(&mut self, kind: SessionKind, peer: &str, now_ms: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(
            id,
            Session {
                kind,
                peer: peer.to_string(),
                started_ms: now_ms,
                deadline_ms: None,
                request: id,
                to_summarize: VecDeque::new(),
                asked: Vec::new(),
                leaves: VecDeque::new(),
                leaf_entries: Vec::new(),
                tombstones_out: Vec::new(),
                transfers: 0,
                failed: false,
                unresolved: false,
                offered: Vec::new(),
            },
        );
        id
    }

    fn layout_version(&self) -> u64 {
        self.routing.layout.version
    }

    /// Starts what is due, times out what is late, releases transfers the bandwidth allows.
    pub fn tick(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        up: &dyn Fn(&str) -> bool,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        // Time out requests.
        let late: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline_ms.is_some_and(|d| now_ms >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.failed = true;
                s.deadline_ms = None;
                s.to_summarize.clear();
                s.leaves.clear();
            }
            self.finish_if_done(id, now_ms, &mut actions);
        }
        // Anti-entropy sessions due.
        let busy: BTreeSet<String> = self
            .sessions
            .values()
            .filter(|s| s.kind == SessionKind::AntiEntropy && s.deadline_ms.is_some())
            .map(|s| s.peer.clone())
            .collect();
        let mut due = Vec::new();
        for (peer, due_ms) in self.ae_due_ms.iter_mut() {
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
                self.ae_due_ms.insert(
                    peer.clone(),
                    now_ms + self.settings.anti_entropy_interval_ms,
                );
            } else {
                // A one-off session after the peer came back (`on_peer_up`): the peer has the
                // smaller id and starts the regular ones. Were this side to go on starting them
                // too, both would copy every difference between them.
                self.ae_due_ms.remove(&peer);
            }
            let id = self.new_session(SessionKind::AntiEntropy, &peer, now_ms);
            let s = self.sessions.get_mut(&id).expect("just made");
            s.to_summarize.push_back((0, 0));
            self.advance(id, now_ms, catalog, &mut actions);
        }
        self.handoff_tick(now_ms, catalog, up, &mut actions);
        self.purge_tick(now_ms, catalog, &mut actions);
        self.release(now_ms, catalog, &mut actions);
        actions
    }

    /// The earliest time `tick` has something to do (a timer for the driver).
    pub fn next_wake_ms(&self, now_ms: u64) -> u64 {
        let mut wake = self.handoff_due_ms.min(self.purge_due_ms);
        if let Some(d) = self.ae_due_ms.values().min() {
            wake = wake.min(*d);
        }
        for s in self.sessions.values() {
            if let Some(d) = s.deadline_ms {
                wake = wake.min(d);
            }
        }
        if let Some(id) = self.queue.front()
            && let Some(t) = self.transfers.get(id)
            && self.in_flight < self.settings.transfers_in_flight_max
        {
            wake = wake.min(self.throttle.ready_at_ms(t.entry.bytes));
        }
        if self.handoff_cursor.is_some() || !self.misplaced.is_empty() {
            wake = wake.min(now_ms + 100);
        }
        wake.max(now_ms)
    }

    /// Sends the next request of a session, or finishes it.
    fn advance(&mut self, id: u64, now_ms: u64, catalog: &dyn Catalog, actions: &mut Vec<Action>) {
        let layout_version = self.layout_version();
        let timeout = self.settings.request_timeout_ms;
        let Some(s) = self.sessions.get_mut(&id) else {
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
            s.request = if bits == 0 {
                id
            } else {
                self.next_id += 1;
                self.next_id - 1
            };
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
            s.request = self.next_id;
            self.next_id += 1;
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
            s.request = self.next_id;
            self.next_id += 1;
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

    fn finish_if_done(&mut self, id: u64, now_ms: u64, actions: &mut Vec<Action>) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let idle = s.deadline_ms.is_none()
            && s.to_summarize.is_empty()
            && s.leaves.is_empty()
            && s.tombstones_out.is_empty();
        if !idle || s.transfers > 0 {
            return;
        }
        let s = self.sessions.remove(&id).expect("present");
        if s.failed || s.unresolved {
            // Try again soon rather than after a whole interval.
            if s.kind == SessionKind::AntiEntropy && self.ae_due_ms.contains_key(&s.peer) {
                let retry = now_ms + self.settings.request_timeout_ms;
                let due = self.ae_due_ms.get_mut(&s.peer).expect("present");
                *due = (*due).min(retry);
            }
            return;
        }
        if s.kind == SessionKind::AntiEntropy {
            self.progress.sessions_completed += 1;
            actions.push(Action::Send {
                to: s.peer.clone(),
                msg: HealMsg::Done { session: id },
            });
            let since = self.synced_since_ms.entry(s.peer).or_insert(0);
            *since = (*since).max(s.started_ms);
        }
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
            return actions;
        }
        if let HealMsg::Done { session } = msg {
            if let Some(started_ms) = self.answering.remove(&(from.to_string(), session)) {
                let since = self.synced_since_ms.entry(from.to_string()).or_insert(0);
                *since = (*since).max(started_ms);
            }
            return actions;
        }
        // A reply names the request it answers: find the session waiting for that request.
        let request = msg.session();
        let Some(id) = self
            .sessions
            .iter()
            .find(|(_, s)| s.request == request && s.deadline_ms.is_some())
            .map(|(id, _)| *id)
        else {
            return actions; // late or duplicated, or its session ended
        };
        let s = self.sessions.get_mut(&id).expect("present");
        if s.peer != from {
            return actions; // not from the peer
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
                        let s = self.sessions.get_mut(&id).expect("present");
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
                if s.leaf_entries.len() > AE_ENTRIES_PER_REPLY_MAX * 64 {
                    s.failed = true;
                } else if !complete {
                    let &(bits, prefix) = s.leaves.front().expect("a leaf is being read");
                    let after = s.leaf_entries.last().map(|e| e.hash);
                    s.request = self.next_id;
                    self.next_id += 1;
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
                    return actions;
                } else {
                    let (bits, prefix) = s.leaves.pop_front().expect("a leaf is being read");
                    let theirs = std::mem::take(&mut s.leaf_entries);
                    self.reconcile(now_ms, id, (bits, prefix), theirs, catalog, &mut actions);
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
        self.advance(id, now_ms, catalog, &mut actions);
        self.release(now_ms, catalog, &mut actions);
        actions
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
        let Some(peer) = self.sessions.get(&id).map(|s| s.peer.clone()) else {
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
                Verdict::Agree => {
                    if !self.deferred.is_empty() {
                        for d in [Direction::Push, Direction::Fetch] {
                            self.deferred.remove(&(peer.to_string(), *hash, d));
                        }
                    }
                }
                Verdict::Ours => {
                    let e = *a.expect("ours stands");
                    match e.kind {
                        EntryKind::Live => {
                            self.copy_or_defer(now_ms, id, peer, Direction::Push, e, b.is_none())
                        }
                        EntryKind::Tombstone => {
                            if self.tombstone_needed(now_ms, b, &e)
                                && let Some(s) = self.sessions.get_mut(&id)
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

    /// The owner that should supply a missing copy to `receiver`: the first owner in placement
    /// order other than the receiver. Every holder of a copy that a new owner lacks sees the
    /// same gap in its own session with it; only this one copies at once.
    fn designated_source(&self, hash: &BlobHash, receiver: &str) -> Option<String> {
        self.owners(hash).into_iter().find(|o| o != receiver)
    }

    /// Queues a copy, unless the receiver lacks the blob entirely and another owner is the
    /// designated source: then this node waits one `anti_entropy_interval_ms` (the session
    /// counts as unfinished, so it is tried again) and copies only if the gap is still there,
    /// in case the designated source cannot.
    fn copy_or_defer(
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
        match self.deferred.get(&key) {
            Some(&since)
                if now_ms.saturating_sub(since) >= self.settings.anti_entropy_interval_ms =>
            {
                self.deferred.remove(&key);
                self.enqueue(id, peer, direction, entry);
            }
            Some(_) => {}
            None => {
                if self.deferred.len() >= DEFERRED_COPIES_MAX {
                    // Too many gaps waiting: copy rather than remember.
                    self.enqueue(id, peer, direction, entry);
                    return;
                }
                self.deferred.insert(key, now_ms);
            }
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.unresolved = true;
        }
    }

    /// Answers a peer's request from the catalog.
    fn answer(
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
            if self.answering.len() >= AE_ANSWERING_SESSIONS_MAX
                && let Some(oldest) = self.answering.keys().next().cloned()
            {
                self.answering.remove(&oldest);
            }
            self.answering
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

    fn enqueue(&mut self, session: u64, peer: &str, direction: Direction, entry: Entry) {
        let key = (peer.to_string(), entry.hash, direction);
        if self.transfer_keys.contains_key(&key) {
            return;
        }
        if direction == Direction::Fetch && !self.fetching.insert(entry.hash) {
            return; // being fetched from another peer
        }
        let id = self.next_id;
        self.next_id += 1;
        self.transfer_keys.insert(key, id);
        self.transfers.insert(
            id,
            Transfer {
                session,
                peer: peer.to_string(),
                direction,
                entry,
            },
        );
        if let Some(s) = self.sessions.get_mut(&session) {
            s.transfers += 1;
        }
        self.queue.push_back(id);
    }

    /// A transfer is no longer queued or running.
    fn forget_transfer(&mut self, t: &Transfer) {
        self.transfer_keys
            .remove(&(t.peer.clone(), t.entry.hash, t.direction));
        if t.direction == Direction::Fetch {
            self.fetching.remove(&t.entry.hash);
        }
    }

    /// Starts queued transfers while the in-flight cap and the bandwidth allow. A queued fetch
    /// of a blob that arrived meanwhile (another owner pushed it) is dropped: nothing to copy.
    fn release(&mut self, now_ms: u64, catalog: &dyn Catalog, actions: &mut Vec<Action>) {
        while self.in_flight < self.settings.transfers_in_flight_max {
            let Some(&id) = self.queue.front() else {
                break;
            };
            let Some(t) = self.transfers.get(&id) else {
                self.queue.pop_front();
                continue;
            };
            let arrived = t.direction == Direction::Fetch
                && catalog
                    .entry(&t.entry.hash)
                    .is_some_and(|e| e.kind == EntryKind::Live);
            if arrived {
                self.queue.pop_front();
                let t = self.transfers.remove(&id).expect("present");
                self.forget_transfer(&t);
                if let Some(s) = self.sessions.get_mut(&t.session) {
                    s.transfers = s.transfers.saturating_sub(1);
                    self.finish_if_done(t.session, now_ms, actions);
                }
                continue;
            }
            if !self.throttle.try_take(now_ms, t.entry.bytes) {
                break;
            }
            self.queue.pop_front();
            self.in_flight += 1;
            actions.push(Action::Transfer {
                id,
                peer: t.peer.clone(),
                direction: t.direction,
                entry: t.entry,
            });
        }
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
        let Some(t) = self.transfers.remove(&id) else {
            return actions;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.forget_transfer(&t);
        let repair = self
            .sessions
            .get(&t.session)
            .is_some_and(|s| s.kind == SessionKind::Repair);
        if ok {
            self.progress.moved_bytes += t.entry.bytes;
            if t.direction == Direction::Push {
                self.confirm(&t.entry, &t.peer);
            }
        }
        if let Some(s) = self.sessions.get_mut(&t.session) {
            s.transfers = s.transfers.saturating_sub(1);
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
        actions
    }

    /// `owner` holds `entry` (or something that stands over it).
    fn confirm(&mut self, entry: &Entry, owner: &str) {
        if let Some(m) = self.misplaced.get_mut(&entry.hash)
            && m.entry == *entry
        {
            m.unconfirmed.remove(owner);
        }
    }

    /// Drops misplaced entries every owner confirmed, unless the local entry changed since it
    /// was offered (a put or delete arrived meanwhile): the next pass offers the new one.
    fn drop_confirmed(&mut self, catalog: &dyn Catalog, actions: &mut Vec<Action>) {
        let done: Vec<BlobHash> = self
            .misplaced
            .iter()
            .filter(|(_, m)| m.unconfirmed.is_empty())
            .map(|(h, _)| *h)
            .collect();
        for hash in done {
            let m = self.misplaced.remove(&hash).expect("present");
            self.progress.misplaced_bytes =
                self.progress.misplaced_bytes.saturating_sub(m.entry.bytes);
            if catalog.entry(&hash) == Some(m.entry) {
                actions.push(Action::DropLocal { hash });
            }
        }
    }

    /// One step of the hand-off pass: find misplaced entries, offer them to their owners.
    fn handoff_tick(
        &mut self,
        now_ms: u64,
        catalog: &dyn Catalog,
        up: &dyn Fn(&str) -> bool,
        actions: &mut Vec<Action>,
    ) {
        if now_ms < self.handoff_due_ms {
            return;
        }
        let in_layout = self.routing.layout.node_index(&self.self_id).is_some();
        let batch = catalog.scan(self.handoff_cursor.as_ref(), HANDOFF_SCAN_ENTRIES_PER_TICK);
        let end_of_pass = batch.len() < HANDOFF_SCAN_ENTRIES_PER_TICK;
        for entry in &batch {
            if self.misplaced.len() >= HANDOFF_PENDING_ENTRIES_MAX {
                break;
            }
            self.handoff_cursor = Some(entry.hash);
            let owners = self.owners(&entry.hash);
            if in_layout && owners.contains(&self.self_id) {
                continue;
            }
            let old_tombstone = entry.kind == EntryKind::Tombstone
                && now_ms.saturating_sub(entry.version) > self.settings.tombstone_grace_ms;
            if old_tombstone {
                actions.push(Action::DropLocal { hash: entry.hash });
                continue;
            }
            if entry.kind == EntryKind::Live && !self.handoff_enabled {
                continue;
            }
            self.handoff_pass_bytes += entry.bytes;
            // A pending entry that changed here since it was found is offered afresh.
            if self
                .misplaced
                .get(&entry.hash)
                .is_none_or(|m| m.entry != *entry)
            {
                self.misplaced.insert(
                    entry.hash,
                    Misplaced {
                        entry: *entry,
                        unconfirmed: owners.into_iter().collect(),
                    },
                );
            }
        }
        let stopped_early = self.misplaced.len() >= HANDOFF_PENDING_ENTRIES_MAX;
        if end_of_pass && !stopped_early {
            self.handoff_cursor = None;
            self.progress.misplaced_bytes = self
                .misplaced
                .values()
                .map(|m| m.entry.bytes)
                .sum::<u64>()
                .max(self.progress.misplaced_bytes.min(self.handoff_pass_bytes));
            self.handoff_pass_bytes = 0;
            self.handoff_due_ms = now_ms + self.settings.handoff_interval_ms;
        } else {
            self.progress.misplaced_bytes = self
                .progress
                .misplaced_bytes
                .max(self.misplaced.values().map(|m| m.entry.bytes).sum());
        }
        // Offer what is pending to owners that are up and not already being asked.
        let asking: BTreeSet<String> = self
            .sessions
            .values()
            .filter(|s| s.kind == SessionKind::Handoff)
            .map(|s| s.peer.clone())
            .collect();
        let mut offers: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for m in self.misplaced.values() {
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
            let s = self.sessions.get_mut(&id).expect("just made");
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

    /// One step of the purge: forget versions every owner has seen, past the grace period.
    fn purge_tick(&mut self, now_ms: u64, catalog: &dyn Catalog, actions: &mut Vec<Action>) {
        if now_ms < self.purge_due_ms {
            return;
        }
        self.purge_due_ms = now_ms + PURGE_STEP_INTERVAL_MS;
        // Gaps left to a designated source were copied or closed by now.
        let keep_ms = 2 * self.settings.anti_entropy_interval_ms;
        self.deferred
            .retain(|_, since| now_ms.saturating_sub(*since) < keep_ms);
        let batch = catalog.versioned(self.purge_cursor.as_ref(), PURGE_SCAN_ENTRIES_PER_TICK);
        self.purge_cursor = if batch.len() < PURGE_SCAN_ENTRIES_PER_TICK {
            None
        } else {
            batch.last().map(|(e, _)| e.hash)
        };
        for (entry, recorded_ms) in batch {
            if now_ms.saturating_sub(recorded_ms) < self.settings.tombstone_grace_ms
                || now_ms.saturating_sub(entry.version) < self.settings.tombstone_grace_ms
            {
                continue;
            }
            let owners = self.owners(&entry.hash);
            if !owners.contains(&self.self_id) {
                continue; // misplaced: hand-off deals with it
            }
            let seen_by_all = owners.iter().filter(|o| **o != self.self_id).all(|o| {
                self.synced_since_ms
                    .get(o)
                    .is_some_and(|since| *since > recorded_ms)
            });
            if seen_by_all {
                self.progress.entries_purged += 1;
                actions.push(Action::ForgetVersion { entry });
            }
        }
    }

    /// Start times of the last complete session with each peer (for status and tests).
    pub fn synced_since_ms(&self, peer: &str) -> Option<u64> {
        self.synced_since_ms.get(peer).copied()
    }

    /// Anti-entropy with `peer` is started by the node with the smaller id; the other side only
    /// answers, so the same difference is not copied twice.
    pub fn initiates_with(&self, peer: &str) -> bool {
        self.ae_due_ms.contains_key(peer)
    }

    /// Makes a session with `peer` due now (both sides may start it after a peer came back).
    pub fn compare_now(&mut self, now_ms: u64, peer: &str) {
        self.on_peer_up(now_ms, peer);
    }
}

/// Scrub pacing: which hashes to verify next, at a bytes-per-second budget, resumable from a
/// cursor the driver stores.
#[derive(Debug)]
pub struct Scrubber {
    cursor: Option<BlobHash>,
    throttle: Throttle,
    next_pass_ms: u64,
    interval_ms: u64,
    enabled: bool,
    /// Blobs and bytes verified since the node started, and passes completed.
    pub verified_blobs: u64,
    pub verified_bytes: u64,
    pub passes_completed: u64,
}

/// Blobs the scrubber hands out per step.
pub const SCRUB_BLOBS_PER_STEP_MAX: usize = 64;

impl Scrubber {
    pub fn new(settings: &HealSettings, cursor: Option<BlobHash>, now_ms: u64) -> Scrubber {
        Scrubber {
            cursor,
            throttle: Throttle::new(settings.scrub_bytes_per_sec, now_ms),
            next_pass_ms: now_ms,
            interval_ms: settings.scrub_interval_ms,
            enabled: settings.scrub_bytes_per_sec > 0,
            verified_blobs: 0,
            verified_bytes: 0,
            passes_completed: 0,
        }
    }

    /// Where the pass stands; store it to resume after a restart.
    pub fn cursor(&self) -> Option<BlobHash> {
        self.cursor
    }

    /// Live blobs to verify now (empty when the budget or the schedule says wait).
    pub fn step(&mut self, now_ms: u64, catalog: &dyn Catalog) -> Vec<Entry> {
        if !self.enabled || now_ms < self.next_pass_ms {
            return Vec::new();
        }
        let batch = catalog.scan(self.cursor.as_ref(), SCRUB_BLOBS_PER_STEP_MAX);
        let mut out = Vec::new();
        for e in &batch {
            if e.kind == EntryKind::Live {
                if !self.throttle.try_take(now_ms, e.bytes) {
                    return out;
                }
                self.verified_blobs += 1;
                self.verified_bytes += e.bytes;
                out.push(*e);
            }
            self.cursor = Some(e.hash);
        }
        if batch.len() < SCRUB_BLOBS_PER_STEP_MAX {
            self.cursor = None;
            self.next_pass_ms = now_ms + self.interval_ms;
            self.passes_completed += 1;
        }
        out
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

    pub fn set_routing(&mut self, routing: Arc<Routing>) {
        self.routing = routing;
    }

    fn shares(&self, peer: &str, hash: &BlobHash) -> bool {
        let layout = &self.routing.layout;
        let replicas = self
            .routing
            .placement
            .replicas(&cairn_client::Hash::from_bytes(*hash));
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::layout::{Layout, NodeSpec};

    fn routing(ids: &[&str], factor: usize) -> Arc<Routing> {
        let layout = Layout {
            version: 1,
            replication_factor: factor,
            write_quorum: 1,
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| NodeSpec {
                    id: id.to_string(),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    zone: format!("z{i}"),
                    weight: 1,
                })
                .collect(),
        };
        Arc::new(Routing::new(layout).unwrap())
    }

    fn hash(i: u64) -> BlobHash {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    /// Runs two healers until quiet, carrying out transfers at once. Returns the bytes of
    /// messages exchanged (postcard) and the number of round trips.
    fn run_pair(
        a: (&mut Healer, &mut MemoryCatalog),
        b: (&mut Healer, &mut MemoryCatalog),
        now_ms: u64,
    ) -> (usize, usize) {
        let (ha, ca) = a;
        let (hb, cb) = b;
        let mut bytes = 0;
        let mut requests = 0;
        let mut inbox: VecDeque<(bool, Action)> = ha
            .tick(now_ms, ca, &|_| true)
            .into_iter()
            .map(|x| (true, x))
            .collect();
        inbox.extend(
            hb.tick(now_ms, cb, &|_| true)
                .into_iter()
                .map(|x| (false, x)),
        );
        while let Some((from_a, action)) = inbox.pop_front() {
            let (me, my_cat, other, other_cat) = if from_a {
                (&mut *ha, &mut *ca, &mut *hb, &mut *cb)
            } else {
                (&mut *hb, &mut *cb, &mut *ha, &mut *ca)
            };
            let next: Vec<Action> = match action {
                Action::Send { msg, .. } => {
                    bytes += postcard::to_allocvec(&msg).unwrap().len();
                    if msg.is_request() {
                        requests += 1;
                    }
                    let id = me.self_id.clone();
                    let out = other.on_message(now_ms, &id, msg, other_cat);
                    inbox.extend(out.into_iter().map(|x| (!from_a, x)));
                    continue;
                }
                Action::Transfer {
                    id,
                    direction,
                    entry,
                    ..
                } => {
                    match direction {
                        Direction::Push => {
                            other_cat.entries.insert(entry.hash, (entry, now_ms));
                        }
                        Direction::Fetch => {
                            my_cat.entries.insert(entry.hash, (entry, now_ms));
                        }
                    }
                    me.on_transfer_done(now_ms, id, true, my_cat)
                }
                Action::ApplyTombstone { entry } => {
                    my_cat.entries.insert(entry.hash, (entry, now_ms));
                    Vec::new()
                }
                Action::DropLocal { hash } => {
                    my_cat.entries.remove(&hash);
                    Vec::new()
                }
                Action::ForgetVersion { entry } => {
                    match entry.kind {
                        EntryKind::Tombstone => {
                            my_cat.entries.remove(&entry.hash);
                        }
                        EntryKind::Live => {
                            if let Some((e, _)) = my_cat.entries.get_mut(&entry.hash) {
                                e.version = 0;
                            }
                        }
                    }
                    Vec::new()
                }
            };
            inbox.extend(next.into_iter().map(|x| (from_a, x)));
        }
        (bytes, requests)
    }

    fn pair(n: u64) -> (Healer, MemoryCatalog, Healer, MemoryCatalog) {
        let r = routing(&["a", "b"], 2);
        let mut ca = MemoryCatalog::new("a", r.clone());
        for i in 0..n {
            let e = Entry::live(hash(i), 0, 100);
            ca.entries.insert(e.hash, (e, 0));
        }
        let cb = ca.clone_as("b");
        let ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
        let hb = Healer::new("b", HealSettings::default(), r, 0);
        (ha, ca, hb, cb)
    }

    impl MemoryCatalog {
        fn clone_as(&self, id: &str) -> MemoryCatalog {
            let mut c = self.clone();
            c.self_id = id.to_string();
            c
        }
    }

    #[test]
    fn identical_replicas_agree_in_one_request() {
        let (mut ha, mut ca, mut hb, mut cb) = pair(20_000);
        let (bytes, requests) = run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 1);
        assert_eq!(requests, 1);
        assert!(bytes < 100, "{bytes} bytes");
        assert_eq!(ha.synced_since_ms("b"), Some(1));
        assert_eq!(
            hb.synced_since_ms("a"),
            Some(1),
            "Done reached the responder"
        );
    }

    #[test]
    fn missing_blobs_are_found_both_ways_without_listing_everything() {
        let (mut ha, mut ca, mut hb, mut cb) = pair(20_000);
        for i in 0..5 {
            ca.entries.remove(&hash(i * 1000));
            cb.entries.remove(&hash(i * 1000 + 7));
        }
        let (bytes, _) = run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 1);
        assert_eq!(ca.entries.len(), 20_000);
        assert_eq!(cb.entries.len(), 20_000);
        assert!(bytes < 64 * 1024, "{bytes} bytes for 10 differences");
    }

    #[test]
    fn a_newer_tombstone_wins_and_a_newer_put_beats_it() {
        let (mut ha, mut ca, mut hb, mut cb) = pair(100);
        let t = Entry::tombstone(hash(1), 50);
        ca.entries.insert(t.hash, (t, 50));
        let revived = Entry::live(hash(2), 70, 100);
        cb.entries
            .insert(hash(2), (Entry::tombstone(hash(2), 60), 60));
        ca.entries.insert(hash(2), (revived, 70));
        run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 100);
        assert_eq!(cb.entry(&hash(1)), Some(t));
        assert_eq!(cb.entry(&hash(2)).unwrap().kind, EntryKind::Live);
        assert_eq!(ca.entry(&hash(2)).unwrap().kind, EntryKind::Live);
    }

    #[test]
    fn tombstones_are_purged_after_grace_once_every_owner_synced() {
        let (mut ha, mut ca, mut hb, mut cb) = pair(10);
        let grace = HealSettings::default().tombstone_grace_ms;
        let t = Entry::tombstone(hash(3), 10);
        ca.entries.insert(t.hash, (t, 10));
        run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 20);
        assert_eq!(cb.entry(&hash(3)), Some(t));
        // Past the grace period: b's last sync with a began when b recorded the tombstone, so b
        // keeps it through this round; the round's session is a fresh sync.
        let later = 20 + grace + 1;
        run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), later);
        assert!(cb.entry(&hash(3)).is_some());
        let later2 = later + PURGE_STEP_INTERVAL_MS;
        run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), later2);
        assert!(ca.entry(&hash(3)).is_none());
        assert!(cb.entry(&hash(3)).is_none());
    }

    #[test]
    fn misplaced_copies_are_handed_off_then_dropped() {
        // c leaves: a and b (factor 2 of 2) own everything; c's copies go to them.
        let r = routing(&["a", "b"], 2);
        let mut cc = MemoryCatalog::new("c", r.clone());
        for i in 0..50 {
            let e = Entry::live(hash(i), 0, 10);
            cc.entries.insert(e.hash, (e, 0));
        }
        let mut ca = MemoryCatalog::new("a", r.clone());
        let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
        let mut ha = Healer::new("a", HealSettings::default(), r, 0);
        // Only talk to a: b never confirms, so nothing is dropped.
        run_pair((&mut hc, &mut cc), (&mut ha, &mut ca), 1);
        assert_eq!(ca.entries.len(), 50);
        assert_eq!(cc.entries.len(), 50, "dropped before every owner held it");
    }

    /// The messages among `actions`.
    fn sent(actions: Vec<Action>) -> Vec<HealMsg> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { msg, .. } => Some(msg),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn duplicates_neither_answer_a_later_request_nor_move_a_sessions_start() {
        // a holds a tombstone b lacks: a's session reads the root leaf, then pushes the
        // tombstone. A second copy of the entries reply arrives while the push is outstanding.
        let (mut ha, mut ca, mut hb, cb) = pair(10);
        let t = Entry::tombstone(hash(100), 5);
        ca.entries.insert(t.hash, (t, 5));
        let summaries = sent(ha.tick(10, &ca, &|_| true));
        assert_eq!(summaries.len(), 1);
        let reply = sent(hb.on_message(10, "a", summaries[0].clone(), &cb));
        let entries = sent(ha.on_message(10, "b", reply[0].clone(), &ca));
        assert!(matches!(entries[0], HealMsg::Entries { .. }));
        let entries_reply = sent(hb.on_message(10, "a", entries[0].clone(), &cb));
        let push = sent(ha.on_message(10, "b", entries_reply[0].clone(), &ca));
        assert!(matches!(push[0], HealMsg::Tombstones { .. }));
        assert!(
            ha.on_message(10, "b", entries_reply[0].clone(), &ca)
                .is_empty(),
            "the duplicate is ignored"
        );
        // The real answer still completes the session, and the responder credits it from when
        // the session's first request arrived, not from when a duplicate of it did.
        hb.on_message(12, "a", summaries[0].clone(), &cb);
        let done = sent(ha.on_message(
            10,
            "b",
            HealMsg::TombstonesReply {
                session: push[0].session(),
            },
            &ca,
        ));
        assert!(matches!(done[..], [HealMsg::Done { .. }]));
        assert_eq!(ha.synced_since_ms("b"), Some(10));
        hb.on_message(13, "a", done[0].clone(), &cb);
        assert_eq!(hb.synced_since_ms("a"), Some(10));
    }

    #[test]
    fn a_misplaced_entry_that_changed_meanwhile_is_not_dropped() {
        // c, outside the layout, offers a tombstone and a live copy; a put of the tombstone's
        // blob lands on c before the owners answer. c must keep that live copy (and offer it
        // afresh), while the other copy goes once pushed.
        let r = routing(&["a", "b"], 2);
        let t = Entry::tombstone(hash(1), 5);
        let other = Entry::live(hash(2), 5, 100);
        let mut cc = MemoryCatalog::new("c", r.clone());
        cc.entries.insert(t.hash, (t, 5));
        cc.entries.insert(other.hash, (other, 5));
        let (ca, cb) = (
            MemoryCatalog::new("a", r.clone()),
            MemoryCatalog::new("b", r.clone()),
        );
        let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
        let mut ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
        let mut hb = Healer::new("b", HealSettings::default(), r, 0);
        let mut replies = Vec::new();
        for action in hc.tick(10, &cc, &|_| true) {
            if let Action::Send { to, msg } = action {
                let (h, c) = if to == "a" {
                    (&mut ha, &ca)
                } else {
                    (&mut hb, &cb)
                };
                let answer = sent(h.on_message(10, "c", msg, c));
                replies.extend(answer.into_iter().map(|m| (to.clone(), m)));
            }
        }
        assert_eq!(replies.len(), 2);
        let live = Entry::live(hash(1), 20, 100);
        cc.entries.insert(live.hash, (live, 20));
        let mut pushes = Vec::new();
        for (from, msg) in replies {
            for action in hc.on_message(20, &from, msg, &cc) {
                if let Action::Transfer { id, .. } = action {
                    pushes.push(id);
                }
            }
        }
        assert_eq!(pushes.len(), 2, "both owners want the other copy");
        let mut dropped = Vec::new();
        for id in pushes {
            for action in hc.on_transfer_done(30, id, true, &cc) {
                if let Action::DropLocal { hash } = action {
                    dropped.push(hash);
                }
            }
        }
        assert_eq!(dropped, vec![other.hash]);
        cc.entries.remove(&other.hash);
        let later = 30 + HealSettings::default().handoff_interval_ms;
        let offers = sent(hc.tick(later, &cc, &|_| true));
        assert_eq!(offers.len(), 2);
        for offer in offers {
            assert!(matches!(offer, HealMsg::Offer { entries, .. } if entries == [live]));
        }
    }

    #[test]
    fn an_unreachable_peer_does_not_make_the_healer_spin() {
        let (mut ha, ca, _, _) = pair(10);
        ha.tick(0, &ca, &|_| false);
        assert!(
            ha.next_wake_ms(0) > 0,
            "nothing to do until the peer is back"
        );
        ha.on_peer_up(5, "b");
        assert_eq!(
            ha.next_wake_ms(5),
            5,
            "a peer that came back is due at once"
        );
    }

    /// Delivers messages among healers (indexed as `ids`) until none is left; every other
    /// action is returned with the index of the healer that asked for it, not carried out.
    fn deliver(
        healers: &mut [Healer],
        catalogs: &[MemoryCatalog],
        ids: &[&str],
        now_ms: u64,
        mut queue: VecDeque<(usize, Action)>,
    ) -> Vec<(usize, Action)> {
        let mut held = Vec::new();
        while let Some((from, action)) = queue.pop_front() {
            match action {
                Action::Send { to, msg } => {
                    let t = ids.iter().position(|id| *id == to).unwrap();
                    let out = healers[t].on_message(now_ms, ids[from], msg, &catalogs[t]);
                    queue.extend(out.into_iter().map(|a| (t, a)));
                }
                other => held.push((from, other)),
            }
        }
        held
    }

    fn live_catalog(id: &str, r: &Arc<Routing>, n: u64) -> MemoryCatalog {
        let mut c = MemoryCatalog::new(id, r.clone());
        for i in 0..n {
            let e = Entry::live(hash(i), 0, 100);
            c.entries.insert(e.hash, (e, 0));
        }
        c
    }

    #[test]
    fn after_a_peer_comes_back_the_larger_id_compares_once() {
        let (ha, ca, hb, cb) = pair(100);
        let ids = ["a", "b"];
        let (mut healers, catalogs) = ([ha, hb], [ca, cb]);
        assert!(!healers[1].initiates_with("a"));
        healers[1].on_peer_up(1, "a");
        let start = healers[1].tick(1, &catalogs[1], &|_| true);
        assert!(
            start
                .iter()
                .any(|a| matches!(a, Action::Send { to, .. } if to == "a"))
        );
        let queue = start.into_iter().map(|a| (1, a)).collect();
        assert!(deliver(&mut healers, &catalogs, &ids, 1, queue).is_empty());
        assert_eq!(healers[1].synced_since_ms("a"), Some(1));
        assert!(
            !healers[1].initiates_with("a"),
            "the regular sessions are a's: were b to start them too, both would copy every \
             difference"
        );
        let later = 1 + 10 * HealSettings::default().anti_entropy_interval_ms;
        let actions = healers[1].tick(later, &catalogs[1], &|_| true);
        assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })));
    }

    #[test]
    fn a_repair_that_fails_asks_the_next_owner_once_each() {
        let r = routing(&["a", "b", "c"], 3);
        let catalog = MemoryCatalog::new("a", r.clone());
        let mut healer = Healer::new("a", HealSettings::default(), r, 0);
        let entry = Entry::live(hash(1), 5, 100);
        let fetch = |actions: Vec<Action>| -> Option<(u64, String)> {
            actions.into_iter().find_map(|a| match a {
                Action::Transfer {
                    id,
                    peer,
                    direction: Direction::Fetch,
                    ..
                } => Some((id, peer)),
                _ => None,
            })
        };
        healer.on_corrupt(1, entry, &|_| true);
        let (id, first) = fetch(healer.tick(1, &catalog, &|_| true)).expect("a fetch");
        // The first owner asked lacks the blob: the other is asked next.
        let (id, second) = fetch(healer.on_transfer_done(2, id, false, &catalog)).expect("retry");
        assert_ne!(first, second);
        // Both failed: nothing more until the damage is noticed again, which starts over.
        assert_eq!(fetch(healer.on_transfer_done(3, id, false, &catalog)), None);
        healer.on_corrupt(4, entry, &|_| true);
        assert!(fetch(healer.tick(4, &catalog, &|_| true)).is_some());
    }

    #[test]
    fn a_blob_two_peers_hold_is_fetched_once() {
        let ids = ["a", "b", "c"];
        let r = routing(&ids, 3);
        let mut ca = live_catalog("a", &r, 50);
        ca.entries.remove(&hash(7));
        let catalogs = [ca, live_catalog("b", &r, 50), live_catalog("c", &r, 50)];
        let mut healers: Vec<Healer> = ids
            .iter()
            .map(|id| Healer::new(id, HealSettings::default(), r.clone(), 0))
            .collect();
        // a starts its sessions with b and c in the same tick; both find hash 7 missing.
        let start = healers[0].tick(1, &catalogs[0], &|_| true);
        let queue = start.into_iter().map(|a| (0, a)).collect();
        let held = deliver(&mut healers, &catalogs, &ids, 1, queue);
        let fetches = held
            .iter()
            .filter(|(_, a)| {
                matches!(a, Action::Transfer { direction: Direction::Fetch, entry, .. }
                    if entry.hash == hash(7))
            })
            .count();
        assert_eq!(fetches, 1, "{held:?}");
    }

    #[test]
    fn a_queued_fetch_of_a_blob_that_arrived_meanwhile_is_dropped() {
        let ids = ["a", "b"];
        let r = routing(&ids, 2);
        let mut ca = live_catalog("a", &r, 50);
        ca.entries.remove(&hash(7));
        ca.entries.remove(&hash(8));
        let mut catalogs = [ca, live_catalog("b", &r, 50)];
        let settings = HealSettings {
            transfers_in_flight_max: 1,
            ..HealSettings::default()
        };
        let mut healers: Vec<Healer> = ids
            .iter()
            .map(|id| Healer::new(id, settings.clone(), r.clone(), 0))
            .collect();
        let start = healers[0].tick(1, &catalogs[0], &|_| true);
        let queue = start.into_iter().map(|a| (0, a)).collect();
        let held = deliver(&mut healers, &catalogs, &ids, 1, queue);
        assert_eq!(held.len(), 1, "one copy at a time: {held:?}");
        let Action::Transfer { id, entry, .. } = held[0].1.clone() else {
            panic!("a transfer: {held:?}");
        };
        // The other blob arrives meanwhile (another owner pushed it), then the copy ends.
        let other = if entry.hash == hash(7) {
            hash(8)
        } else {
            hash(7)
        };
        for e in [entry, Entry::live(other, 0, 100)] {
            catalogs[0].entries.insert(e.hash, (e, 1));
        }
        let after = healers[0].on_transfer_done(1, id, true, &catalogs[0]);
        assert!(
            !after.iter().any(|a| matches!(a, Action::Transfer { .. })),
            "{after:?}"
        );
        assert!(
            after.iter().any(|a| matches!(
                a,
                Action::Send {
                    msg: HealMsg::Done { .. },
                    ..
                }
            )),
            "the session ends: {after:?}"
        );
        let p = healers[0].progress();
        assert_eq!(
            (p.moved_bytes, p.transfers_queued, p.transfers_in_flight),
            (100, 0, 0)
        );
    }

    #[test]
    fn a_missing_copy_comes_from_its_designated_source_first() {
        let r = routing(&["a", "b", "c"], 3);
        let mut ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
        let mut hb = Healer::new("b", HealSettings::default(), r.clone(), 0);
        let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
        // A blob whose copy for c should come from b, not a.
        let x = (0..1000)
            .map(|i| Entry::live(hash(i), 5, 10))
            .find(|e| ha.designated_source(&e.hash, "c").as_deref() == Some("b"))
            .expect("some hash names b first");
        let mut ca = MemoryCatalog::new("a", r.clone());
        ca.entries.insert(x.hash, (x, 0));
        let mut cb = ca.clone_as("b");
        let mut cc = MemoryCatalog::new("c", r);
        run_pair((&mut ha, &mut ca), (&mut hc, &mut cc), 1);
        assert!(cc.entry(&x.hash).is_none(), "a left the copy to b");
        assert_eq!(
            ha.synced_since_ms("c"),
            None,
            "a gap was left: no sync credit"
        );
        run_pair((&mut hb, &mut cb), (&mut hc, &mut cc), 2);
        assert!(
            cc.entry(&x.hash).is_some(),
            "b, the designated source, copied it"
        );
        assert_eq!(hb.synced_since_ms("c"), Some(2));
        // Had b not copied it, a would after one anti-entropy interval.
        let mut cc2 = MemoryCatalog::new("c", cc.routing.clone());
        let later = 1 + HealSettings::default().anti_entropy_interval_ms;
        ha.compare_now(later, "c");
        run_pair((&mut ha, &mut ca), (&mut hc, &mut cc2), later);
        assert!(
            cc2.entry(&x.hash).is_some(),
            "a copied once the gap outlived its wait"
        );
    }

    #[test]
    fn throttle_paces_and_lets_large_copies_through() {
        let mut t = Throttle::new(1000, 0);
        assert!(t.try_take(0, 600));
        assert!(!t.try_take(0, 600));
        assert!(t.try_take(600, 600));
        let mut t = Throttle::new(1000, 0);
        assert!(t.try_take(0, 5000), "a full bucket lets a large copy start");
        assert!(!t.try_take(1000, 1));
        assert!(t.try_take(5001, 1));
    }
}
