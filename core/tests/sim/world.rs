//! The simulated cluster of one seed: six nodes driving the shipped healer, failure detector,
//! coordinators and hint queue, a faulty network, clients, and a fault injector, all on one
//! virtual clock. Every choice comes from one seeded generator and events run in (time,
//! sequence) order, so a seed replays exactly.
//!
//! **Nodes.** Each node has a store (`store.rs`: entries with versions, a corrupt flag per
//! copy, a durable state and unsynced changes), its layout and the one before it (durable), a
//! `Healer`, a `Membership` and a `Scrubber`. Every `NODE_TICK_INTERVAL_MS` it syncs (at the
//! seed's sync interval), ticks the detector (heartbeats carry the layout version), scrubs, and
//! ticks the healer when `next_wake_ms` says so. Healer actions run in order: messages go on
//! the network (after a sync if a tombstone the healer applied is unsynced: see
//! `Store::barrier`), copies become transfer messages with a timeout, `ApplyTombstone` (when
//! the tombstone stands, per `heal::compare`), `DropLocal` and `ForgetVersion` are unsynced
//! writes. A copy is verified by its receiver and stored durably if it stands; a corrupt copy
//! found by a read or by scrub is quarantined (removed durably) and `on_corrupt` fetches a good
//! one. A crash loses unsynced writes and everything in memory; the restart makes a fresh
//! healer, detector and scrubber.
//!
//! **Layouts.** The operator applies a new layout (a shape from `layouts.rs`, next version) to
//! one node and, lossily, to the others; nodes learn newer layouts from heartbeats (the
//! detector's `NewerLayout`, then a fetch) and tell senders of older versions theirs, so a node
//! that left the layout learns it and hands everything off. A node outside its own layout
//! counts every peer as up (it has no failure detector for them).
//!
//! **Clients.** A put goes to a random coordinator of the operator's layout, which gives it
//! its clock as version and drives the shipped `PutCoordinator` over the owners in its own
//! layout (itself among them when it is one): prepare (staged, invisible; the replica reports
//! the version of its tombstone of the hash), commit (with the coordinator's version, raised
//! above the tombstones the quorum reported; durable unless a newer tombstone stands; a copy
//! already there takes the newer version and, if corrupt, the put's good bytes), abort;
//! replicas that do not answer a phase in time count as failed. A delete drives the shipped
//! `DeleteCoordinator`: tombstones on the owners, decided once every owner answered or timed
//! out, acknowledged at the write quorum. A read asks the owners of the current and the previous
//! layout; replicas never serve a corrupt copy. Every operation is recorded (`history.rs`); one
//! whose coordinator crashed stays pending.
//!
//! **Hints.** A replica the coordinator knows missed a put or a delete gets a hint, durable on
//! the coordinator (like the node's hint log) before its answer. Each tick, a node hands the
//! due hints of its `HintQueue` to `hints::plan` with what it holds now, and pushes the copy or
//! the tombstone, or drops the hint; failures back off, a peer seen up again wakes its hints,
//! and a restart replays the log. The cluster has converged only once every hint is delivered.
//!
//! **Faults.** In storms: lost, duplicated and (by random latency) reordered messages,
//! one-way and two-way partitions, crashes, a corrupt copy of a blob that has another intact
//! copy, layout changes. A storm's end heals the network and restarts every node. Storms are
//! short enough that hand-off always completes within the grace period (see `STORM_MS_MAX`),
//! except in seeds without layout changes, which have no misplaced copies to hand off.
//!
//! **End.** After `FAULT_PHASE_MS` the clients stop and the last storm ends. The cluster must
//! then converge within `CONVERGE_DEADLINE_MS`: every node on the last layout, nothing
//! unsynced, no tombstone and no corrupt copy left anywhere, every live blob on exactly its
//! owners. Then `history::check_end` checks the stores against the history.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use cairn_core::coordinator::{DeleteAction, DeleteCoordinator, PutAction, PutCoordinator};
use cairn_core::heal::{
    Action, BlobHash, Direction, Entry, EntryKind, HealMsg, HealSettings, Healer, Scrubber,
    Verdict, compare,
};
use cairn_core::hints::{Hint, HintKind, HintQueue, HintStep, plan};
use cairn_core::membership::{
    FailureDetectorSettings, MemberEvent, Membership, NodeReport, PeerState,
};
use cairn_core::testing::SplitMix64;

use super::history::{History, OpKind, OpRecord, Outcome, check_end};
use cairn_core::Hash;

use super::layouts::{
    BASE_VERSION, NODE_COUNT, NODE_IDS, SHAPE_BASE, SHAPES, SimLayout, mask_nodes, node_ix,
    sim_layout,
};
use super::store::{Store, entry_text, short, slot};

/// Virtual time during which clients work and faults are injected.
pub const FAULT_PHASE_MS: u64 = 8_000;
/// Faults come in storms separated by calms. In a storm messages are lost and duplicated,
/// nodes crash, partitions form and layouts change; a storm's end heals the network and
/// restarts every node. Storms are shorter than the grace period less what a calm needs to
/// finish hand-offs: the healer's documented envelope (a node out of contact for longer than
/// the grace period must not hand off its copies) is never left.
const STORM_MS_MIN: u64 = 200;
const STORM_MS_MAX: u64 = 1_500;
/// Seeds without layout changes have no misplaced copies, so the envelope does not bind them:
/// their storms may outlast the grace period, so that an owner misses deletes for longer than
/// tombstones live, the case the purge's "every owner has synced" rule is for.
const LONG_STORM_MS_MAX: u64 = 6_000;
/// Seeds that keep their first layout.
const STABLE_LAYOUT_PERCENT: u64 = 40;
const CALM_MS_MIN: u64 = 2_000;
const CALM_MS_MAX: u64 = 3_000;
/// After faults stop, the cluster must converge within this much virtual time.
pub const CONVERGE_DEADLINE_MS: u64 = 60_000;
/// How often convergence is checked once faults stopped.
const CONVERGE_CHECK_INTERVAL_MS: u64 = 250;

/// Every node's periodic work (sync, heartbeats, scrub, healer timers) runs this often.
const NODE_TICK_INTERVAL_MS: u64 = 50;
/// How often a node syncs what the healer changed (tombstones applied, copies dropped,
/// versions forgotten), per seed: a crash loses what was not synced.
const SYNC_INTERVALS_MS: [u64; 3] = [50, 250, 1_000];

/// Healing as configured on every simulated node: fast, so convergence takes seconds.
const ANTI_ENTROPY_INTERVAL_MS: u64 = 500;
const HANDOFF_INTERVAL_MS: u64 = 300;
const TOMBSTONE_GRACE_MS: u64 = 4_000;
const HEAL_REQUEST_TIMEOUT_MS: u64 = 400;
const TRANSFERS_IN_FLIGHT_MAX: usize = 8;
const SCRUB_BYTES_PER_SEC: u64 = 1_000_000;
const SCRUB_INTERVAL_MS: u64 = 1_000;

/// Failure detection on every node.
const HEARTBEAT_INTERVAL_MS: u64 = 100;
const SUSPECT_AFTER_MS: u64 = 400;
const DOWN_AFTER_MS: u64 = 1_500;

/// Coordinators give up on replicas that have not answered a phase for this long.
const PUT_PHASE_TIMEOUT_MS: u64 = 400;
const DELETE_TIMEOUT_MS: u64 = 400;
const READ_TIMEOUT_MS: u64 = 400;
/// A blob copy unanswered for this long failed.
const TRANSFER_TIMEOUT_MS: u64 = 500;
/// A prepared put never committed or aborted is dropped after this long.
const STAGED_TTL_MS: u64 = 2_000;
/// Hint delivery: backoff bounds, hints handed out per tick, and how long a delivery waits.
const HINT_RETRY_MS_MIN: u64 = 100;
const HINT_RETRY_MS_MAX: u64 = 1_000;
const HINT_DELIVERY_BATCH_MAX: usize = 64;
const HINT_TIMEOUT_MS: u64 = 500;

/// Client operations per run, and blob sizes.
const OPS_MIN: u64 = 100;
const OPS_MAX: u64 = 300;
const BLOB_BYTES_MIN: u64 = 1;
const BLOB_BYTES_MAX: u64 = 4_096;
/// Operation mix, in percent: new puts, re-puts of deleted blobs, deletes; the rest are reads.
const PUT_NEW_PERCENT: u64 = 45;
const PUT_AGAIN_PERCENT: u64 = 5;
const DELETE_PERCENT: u64 = 20;

/// Network: one-way latency bounds, and the most any seed drops or duplicates (per mille).
const LATENCY_MS_MIN: u64 = 1;
const LATENCY_MS_MAX: u64 = 150;
const DROP_PERMILLE_MAX: u64 = 200;
const DUPLICATE_PERMILLE_MAX: u64 = 100;
const PERMILLE: u64 = 1_000;

/// Fault injection: pause between faults, and how long crashes and partitions last.
const FAULT_GAP_MS_MIN: u64 = 50;
const FAULT_GAP_MS_MAX: u64 = 1_500;
const CRASH_DOWN_MS_MIN: u64 = 10;
const CRASHED_NODES_MAX: usize = 2;
const PARTITION_MS_MIN: u64 = 50;
const PARTITIONS_ACTIVE_MAX: usize = 2;
const LAYOUT_CHANGES_MAX: u64 = 3;
const PERCENT: u64 = 100;
/// Relative weights of a seed's fault kinds are drawn from 0..=this.
const FAULT_WEIGHT_MAX: u64 = 4;

fn heal_settings() -> HealSettings {
    HealSettings {
        anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL_MS,
        handoff_interval_ms: HANDOFF_INTERVAL_MS,
        tombstone_grace_ms: TOMBSTONE_GRACE_MS,
        bandwidth_bytes_per_sec: 0,
        transfers_in_flight_max: TRANSFERS_IN_FLIGHT_MAX,
        request_timeout_ms: HEAL_REQUEST_TIMEOUT_MS,
        scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC,
        scrub_interval_ms: SCRUB_INTERVAL_MS,
    }
}

fn detector_settings() -> FailureDetectorSettings {
    FailureDetectorSettings {
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        suspect_after_ms: SUSPECT_AFTER_MS,
        down_after_ms: DOWN_AFTER_MS,
    }
}

/// What travels between nodes.
#[derive(Clone, Debug)]
enum Body {
    Heartbeat(NodeReport),
    LayoutFetch,
    LayoutPush {
        shape: usize,
        version: u64,
    },
    Heal(HealMsg),
    /// A blob copy pushed by a healer; `corrupt`: the bytes do not hash to the name.
    PushData {
        tid: u64,
        entry: Entry,
        corrupt: bool,
    },
    PushDone {
        tid: u64,
        ok: bool,
    },
    FetchReq {
        tid: u64,
        hash: BlobHash,
    },
    FetchReply {
        tid: u64,
        copy: Option<(Entry, bool)>,
    },
    Prepare {
        op: usize,
        entry: Entry,
    },
    Prepared {
        op: usize,
        /// The version of the replica's tombstone of the hash (0: none).
        tombstone_version: u64,
    },
    Commit {
        op: usize,
        version: u64,
    },
    CommitReply {
        op: usize,
        stored: bool,
    },
    Abort {
        op: usize,
    },
    Delete {
        op: usize,
        entry: Entry,
    },
    Deleted {
        op: usize,
    },
    Read {
        op: usize,
        hash: BlobHash,
    },
    /// Hint delivery of a put: a copy the receiver keeps if it stands (`Op::Store`).
    HintPush {
        hid: u64,
        entry: Entry,
    },
    /// Hint delivery of a delete: the tombstone, applied as a replica delete.
    HintTombstone {
        hid: u64,
        entry: Entry,
    },
    HintDone {
        hid: u64,
        ok: bool,
    },
    /// `Some(corrupt)`: a live copy was served.
    ReadReply {
        op: usize,
        served: Option<bool>,
    },
}

#[derive(Clone, Debug)]
struct Msg {
    from: usize,
    from_inc: u64,
    to: usize,
    /// The incarnation of `to` the message is for: a node that restarted since (its connections
    /// broke) does not get it.
    to_inc: u64,
    body: Body,
}

enum Event {
    Deliver(Box<Msg>),
    Tick {
        node: usize,
        inc: u64,
    },
    ClientOp,
    Fault,
    /// The end of a crash (of the incarnation that crashed).
    Restart {
        node: usize,
        inc: u64,
    },
    HealPartition {
        id: u64,
    },
    AdminLayout {
        node: usize,
        shape: usize,
        version: u64,
    },
    OpTimeout {
        node: usize,
        inc: u64,
        op: usize,
        phase: Phase,
    },
    TransferTimeout {
        node: usize,
        inc: u64,
        tid: u64,
    },
    HintTimeout {
        node: usize,
        inc: u64,
        hid: u64,
    },
    StormStart,
    StormEnd,
    /// The end of the fault phase: clients stop, the last storm ends.
    StopFaults,
    CheckConvergence,
}

/// What a replica reported to the coordinator of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report {
    /// With the version of the replica's tombstone of the hash (0: none).
    Prepared(u64),
    Stored,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Prepare,
    /// The commit sent to one replica (by its index in the operation's replica list).
    Commit(usize),
    Single,
}

struct Queued {
    at_ms: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed, so the heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Queued) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// A coordinator's state for one client operation: the shipped coordinators, over the
/// operation's replicas (node indices, in placement order).
enum Coord {
    Put {
        coordinator: PutCoordinator,
        replicas: Vec<usize>,
    },
    Delete {
        coordinator: DeleteCoordinator,
        replicas: Vec<usize>,
    },
    Read {
        asked: u8,
        replied: u8,
    },
}

struct Node {
    ix: usize,
    up: bool,
    /// Bumped at every crash and restart.
    inc: u64,
    store: Store,
    /// Durable, like the store.
    layout: Arc<SimLayout>,
    prev_layout: Option<Arc<SimLayout>>,
    healer: Healer,
    membership: Membership,
    scrubber: Scrubber,
    /// Prepared puts: op to (entry, when prepared).
    staged: BTreeMap<usize, (Entry, u64)>,
    coord: BTreeMap<usize, Coord>,
    /// Transfers started and not yet ended.
    open_transfers: BTreeSet<u64>,
    next_sync_ms: u64,
    /// Hints, durable (like the node's hint log: recorded before the put or delete is
    /// acknowledged), and the queue over them, rebuilt at every restart.
    hint_log: BTreeMap<u64, Hint>,
    hints: HintQueue,
    next_hint_id: u64,
    /// Hint deliveries sent and not yet answered.
    open_hints: BTreeSet<u64>,
}

impl Node {
    fn new(ix: usize, layout: Arc<SimLayout>, now_ms: u64) -> Node {
        let mut membership = Membership::new(detector_settings(), now_ms);
        membership.set_peers(layout.peer_ids(ix), layout.version());
        Node {
            ix,
            up: true,
            inc: 0,
            store: Store::new(ix, layout.clone()),
            healer: Healer::new(
                NODE_IDS[ix],
                heal_settings(),
                layout.routing.clone(),
                now_ms,
            ),
            layout,
            prev_layout: None,
            membership,
            scrubber: Scrubber::new(&heal_settings(), None, now_ms),
            staged: BTreeMap::new(),
            coord: BTreeMap::new(),
            open_transfers: BTreeSet::new(),
            next_sync_ms: now_ms,
            hint_log: BTreeMap::new(),
            hints: HintQueue::new(HINT_RETRY_MS_MIN, HINT_RETRY_MS_MAX),
            next_hint_id: 0,
            open_hints: BTreeSet::new(),
        }
    }

    fn id(&self) -> &'static str {
        NODE_IDS[self.ix]
    }
}

/// The faults and pace of one seed.
#[derive(Debug)]
struct Knobs {
    drop_permille: u64,
    duplicate_permille: u64,
    latency_ms_max: u64,
    fault_gap_ms_max: u64,
    /// Weights of crash, partition, corruption, layout change.
    fault_weights: [u64; 4],
    layout_changes_max: u64,
    /// Longest storm; crashes and partitions end with their storm at the latest.
    storm_ms_max: u64,
    sync_interval_ms: u64,
    ops: u64,
}

impl Knobs {
    fn draw(rng: &mut SplitMix64) -> Knobs {
        // A quarter of the seeds lose no messages, even in storms.
        let lossy = rng.below(4) != 0;
        let layout_changes_max = if rng.below(PERCENT) < STABLE_LAYOUT_PERCENT {
            0
        } else {
            rng.between(1, LAYOUT_CHANGES_MAX)
        };
        Knobs {
            drop_permille: if lossy {
                rng.below(DROP_PERMILLE_MAX + 1)
            } else {
                0
            },
            duplicate_permille: if lossy {
                rng.below(DUPLICATE_PERMILLE_MAX + 1)
            } else {
                0
            },
            latency_ms_max: rng.between(LATENCY_MS_MIN, LATENCY_MS_MAX),
            fault_gap_ms_max: rng.between(FAULT_GAP_MS_MIN, FAULT_GAP_MS_MAX),
            fault_weights: [
                rng.below(FAULT_WEIGHT_MAX + 1),
                rng.below(FAULT_WEIGHT_MAX + 1),
                rng.below(FAULT_WEIGHT_MAX + 1),
                rng.below(FAULT_WEIGHT_MAX + 1),
            ],
            layout_changes_max,
            storm_ms_max: if layout_changes_max == 0 {
                LONG_STORM_MS_MAX
            } else {
                STORM_MS_MAX
            },
            ops: rng.between(OPS_MIN, OPS_MAX),
            sync_interval_ms: SYNC_INTERVALS_MS[rng.below(SYNC_INTERVALS_MS.len() as u64) as usize],
        }
    }
}

/// Counts of what happened in a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// A digest of the run: the time and order of every event and every node's final store.
    /// Two runs of one seed must agree on it.
    pub digest: u64,
    pub events: u64,
    pub messages: u64,
    pub acked_puts: usize,
    pub acked_deletes: usize,
    pub failed_ops: usize,
    pub reads_found: usize,
    pub crashes: u64,
    pub partitions: u64,
    pub corruptions: u64,
    pub quarantines: u64,
    /// Hints recorded by coordinators for replicas that missed a put or delete, and hints
    /// delivered (or found to have nothing left to pass on).
    pub hints_recorded: u64,
    pub hints_delivered: u64,
    pub layout_changes: u64,
    /// Healer ticks after which the healer asked to be woken at once again.
    pub healer_busy_wakes: u64,
    /// Virtual time from the end of faults to convergence.
    pub converge_ms: u64,
}

impl RunStats {
    pub fn add(&mut self, o: &RunStats) {
        self.digest = mix(self.digest ^ o.digest);
        self.events += o.events;
        self.messages += o.messages;
        self.acked_puts += o.acked_puts;
        self.acked_deletes += o.acked_deletes;
        self.failed_ops += o.failed_ops;
        self.reads_found += o.reads_found;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.corruptions += o.corruptions;
        self.quarantines += o.quarantines;
        self.hints_recorded += o.hints_recorded;
        self.hints_delivered += o.hints_delivered;
        self.layout_changes += o.layout_changes;
        self.healer_busy_wakes += o.healer_busy_wakes;
        self.converge_ms = self.converge_ms.max(o.converge_ms);
    }
}

/// One partition: the directed links it cuts.
struct Cut {
    id: u64,
    links: Vec<(usize, usize)>,
}

pub struct World {
    rng: SplitMix64,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    history: History,
    /// The newest layout the operator made.
    latest: Arc<SimLayout>,
    /// A storm is raging.
    storm: bool,
    /// Clients are working.
    workload_on: bool,
    knobs: Knobs,
    cuts: Vec<Cut>,
    next_cut_id: u64,
    /// How many cuts block each directed link.
    blocked: [[u8; NODE_COUNT]; NODE_COUNT],
    ops_left: u64,
    /// Blobs made so far: (hash, bytes).
    blobs: Vec<(BlobHash, u64)>,
    /// Blobs with an acknowledged put, and with an acknowledged delete (repeats allowed).
    acked_put: Vec<usize>,
    acked_delete: Vec<usize>,
    /// Hashes that had a copy corrupted (at most one copy each).
    corrupted: BTreeSet<BlobHash>,
    seed: u64,
    trace: bool,
    done: bool,
    stats: RunStats,
}

/// splitmix64's finalizer, to fold values into a digest.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Logs a line of the replay trace (only when tracing).
macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.trace {
            println!("{:>7} {}", $w.now_ms, format_args!($($arg)*));
        }
    };
}

fn describe(body: &Body) -> String {
    match body {
        Body::Heal(m) => {
            let what = match m {
                HealMsg::Summaries {
                    prefix_bits,
                    prefixes,
                    ..
                } => format!("Summaries bits {prefix_bits} x{}", prefixes.len()),
                HealMsg::SummariesReply { summaries, .. } => {
                    format!("SummariesReply x{}", summaries.len())
                }
                HealMsg::Entries {
                    prefix_bits,
                    prefix,
                    ..
                } => format!("Entries {prefix_bits}/{prefix:x}"),
                HealMsg::EntriesReply { entries, .. } => {
                    format!("EntriesReply [{}]", entries_text(entries))
                }
                HealMsg::Offer { entries, .. } => format!("Offer [{}]", entries_text(entries)),
                HealMsg::OfferReply { wanted, .. } => format!(
                    "OfferReply wants [{}]",
                    wanted.iter().map(short).collect::<Vec<_>>().join(" ")
                ),
                HealMsg::Tombstones { entries, .. } => {
                    format!("Tombstones [{}]", entries_text(entries))
                }
                HealMsg::TombstonesReply { .. } => "TombstonesReply".to_string(),
                HealMsg::Done { .. } => "Done".to_string(),
                HealMsg::Stale { layout_version, .. } => format!("Stale v{layout_version}"),
            };
            format!("heal s{} {what}", m.session())
        }
        Body::PushData {
            tid,
            entry,
            corrupt,
        } => format!("PushData t{tid} {} corrupt={corrupt}", entry_text(entry)),
        Body::FetchReq { tid, hash } => format!("FetchReq t{tid} {}", short(hash)),
        Body::FetchReply { tid, copy } => format!(
            "FetchReply t{tid} {:?}",
            copy.map(|(e, c)| (entry_text(&e), c))
        ),
        Body::Prepare { op, entry } | Body::Delete { op, entry } => {
            format!("{} op{op} {}", variant(body), entry_text(entry))
        }
        Body::Read { op, hash } => format!("Read op{op} {}", short(hash)),
        other => format!("{other:?}"),
    }
}

fn variant(body: &Body) -> &'static str {
    match body {
        Body::Prepare { .. } => "Prepare",
        Body::Delete { .. } => "Delete",
        _ => "?",
    }
}

fn entries_text(entries: &[Entry]) -> String {
    entries.iter().map(entry_text).collect::<Vec<_>>().join(" ")
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = SplitMix64::new(seed);
        let knobs = Knobs::draw(&mut rng);
        let base = sim_layout(SHAPE_BASE, BASE_VERSION);
        let nodes = (0..NODE_COUNT)
            .map(|ix| Node::new(ix, base.clone(), 0))
            .collect();
        let mut w = World {
            rng,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            history: History::default(),
            latest: base,
            storm: false,
            workload_on: true,
            ops_left: knobs.ops,
            knobs,
            cuts: Vec::new(),
            next_cut_id: 0,
            blocked: [[0; NODE_COUNT]; NODE_COUNT],
            blobs: Vec::new(),
            acked_put: Vec::new(),
            acked_delete: Vec::new(),
            corrupted: BTreeSet::new(),
            seed,
            trace,
            done: false,
            stats: RunStats::default(),
        };
        trace!(w, "seed {seed}: {:?}", w.knobs);
        for node in 0..NODE_COUNT {
            let at = w.rng.below(NODE_TICK_INTERVAL_MS);
            w.schedule(at, Event::Tick { node, inc: 0 });
        }
        w.schedule(0, Event::ClientOp);
        let first_storm = w.rng.below(CALM_MS_MIN);
        w.schedule(first_storm, Event::StormStart);
        w.schedule(FAULT_PHASE_MS, Event::StopFaults);
        w
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at_ms,
            seq: self.seq,
            event,
        });
    }

    /// Runs the seed to its end: Ok once converged and checked.
    pub fn run(mut self) -> Result<RunStats, String> {
        while let Some(q) = self.queue.pop() {
            debug_assert!(q.at_ms >= self.now_ms);
            self.now_ms = q.at_ms;
            self.stats.events += 1;
            self.stats.digest = mix(self.stats.digest ^ q.at_ms ^ q.seq << 32);
            self.dispatch(q.event)?;
            if self.done {
                self.stats.acked_puts = self.history.count(OpKind::Put, Outcome::Acked);
                self.stats.acked_deletes = self.history.count(OpKind::Delete, Outcome::Acked);
                self.stats.failed_ops = self.history.count(OpKind::Put, Outcome::Failed)
                    + self.history.count(OpKind::Delete, Outcome::Failed);
                self.stats.reads_found = self.history.count(OpKind::Read, Outcome::Found);
                for n in &self.nodes {
                    for s in n.store.durable.values() {
                        let key = u64::from_le_bytes(s.entry.hash[..8].try_into().expect("8"));
                        self.stats.digest = mix(self.stats.digest ^ key ^ s.entry.version);
                    }
                }
                return Ok(self.stats);
            }
        }
        Err("the event queue ran dry".to_string())
    }

    fn dispatch(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver(msg) => self.deliver(*msg)?,
            Event::Tick { node, inc } => self.tick(node, inc),
            Event::ClientOp => self.client_op(),
            Event::Fault => self.fault(),
            Event::Restart { node, inc } => {
                if self.nodes[node].inc == inc {
                    self.restart(node);
                }
            }
            Event::HealPartition { id } => self.heal_partition(id),
            Event::AdminLayout {
                node,
                shape,
                version,
            } => {
                if self.nodes[node].up {
                    trace!(self, "{} told of layout v{version}", NODE_IDS[node]);
                    self.adopt(node, shape, version);
                }
            }
            Event::OpTimeout {
                node,
                inc,
                op,
                phase,
            } => {
                if self.nodes[node].up && self.nodes[node].inc == inc {
                    self.op_timeout(node, op, phase);
                }
            }
            Event::TransferTimeout { node, inc, tid } => {
                if self.nodes[node].up && self.nodes[node].inc == inc {
                    self.end_transfer(node, tid, false);
                }
            }
            Event::HintTimeout { node, inc, hid } => {
                if self.nodes[node].up && self.nodes[node].inc == inc {
                    self.end_hint(node, hid, false);
                }
            }
            Event::StormStart => self.storm_start(),
            Event::StormEnd => self.storm_end(),
            Event::StopFaults => self.stop_faults(),
            Event::CheckConvergence => self.check_convergence()?,
        }
        Ok(())
    }

    // ---- network ----

    fn send(&mut self, from: usize, to: usize, body: Body) {
        let to_inc = self.nodes[to].inc;
        self.send_to(from, to, to_inc, body);
    }

    fn send_to(&mut self, from: usize, to: usize, to_inc: u64, body: Body) {
        self.stats.messages += 1;
        let msg = Msg {
            from,
            from_inc: self.nodes[from].inc,
            to,
            to_inc,
            body,
        };
        if from == to {
            self.schedule(self.now_ms, Event::Deliver(Box::new(msg)));
            return;
        }
        let dropped = if !self.nodes[to].up || self.blocked[from][to] > 0 {
            Some("cut")
        } else if self.storm && self.rng.below(PERMILLE) < self.knobs.drop_permille {
            Some("lost")
        } else {
            None
        };
        if let Some(why) = dropped {
            if !matches!(msg.body, Body::Heartbeat(_)) {
                trace!(
                    self,
                    "{} -> {} {why}: {}",
                    NODE_IDS[from],
                    NODE_IDS[to],
                    describe(&msg.body)
                );
            }
            return;
        }
        if self.storm && self.rng.below(PERMILLE) < self.knobs.duplicate_permille {
            let at = self.now_ms + self.rng.between(LATENCY_MS_MIN, self.knobs.latency_ms_max);
            self.schedule(at, Event::Deliver(Box::new(msg.clone())));
        }
        let at = self.now_ms + self.rng.between(LATENCY_MS_MIN, self.knobs.latency_ms_max);
        self.schedule(at, Event::Deliver(Box::new(msg)));
    }

    fn deliver(&mut self, msg: Msg) -> Result<(), String> {
        let (to, from) = (msg.to, msg.from);
        let node = &self.nodes[to];
        if !node.up || node.inc != msg.to_inc {
            return Ok(());
        }
        if !matches!(msg.body, Body::Heartbeat(_)) {
            trace!(
                self,
                "{} -> {}: {}",
                NODE_IDS[from],
                NODE_IDS[to],
                describe(&msg.body)
            );
        }
        let reply_inc = msg.from_inc;
        match msg.body {
            Body::Heartbeat(report) => {
                let mine = self.nodes[to].layout.clone();
                if report.layout_version < mine.version() {
                    // The membership ignores nodes outside the layout; tell them anyway, so a
                    // removed node learns it was removed.
                    self.send_to(
                        to,
                        from,
                        reply_inc,
                        Body::LayoutPush {
                            shape: mine.shape,
                            version: mine.version(),
                        },
                    );
                }
                let events =
                    self.nodes[to]
                        .membership
                        .on_heartbeat(self.now_ms, NODE_IDS[from], report);
                self.member_events(to, events);
            }
            Body::LayoutFetch => {
                let mine = self.nodes[to].layout.clone();
                self.send_to(
                    to,
                    from,
                    reply_inc,
                    Body::LayoutPush {
                        shape: mine.shape,
                        version: mine.version(),
                    },
                );
            }
            Body::LayoutPush { shape, version } => self.adopt(to, shape, version),
            Body::Heal(hm) => {
                let reply = hm.is_request().then_some((from, reply_inc));
                let n = &mut self.nodes[to];
                let actions =
                    n.healer
                        .on_message(self.now_ms, NODE_IDS[from], hm, &n.store.current);
                self.run_actions(to, actions, reply);
            }
            Body::PushData {
                tid,
                entry,
                corrupt,
            } => {
                let ok = !corrupt && self.store_copy(to, entry);
                self.send_to(to, from, reply_inc, Body::PushDone { tid, ok });
            }
            Body::PushDone { tid, ok } => self.end_transfer(to, tid, ok),
            Body::FetchReq { tid, hash } => {
                let copy = self.nodes[to]
                    .store
                    .current
                    .get(&hash)
                    .filter(|s| s.is_live())
                    .map(|s| (s.entry, s.corrupt));
                self.send_to(to, from, reply_inc, Body::FetchReply { tid, copy });
            }
            Body::FetchReply { tid, copy } => {
                if self.nodes[to].open_transfers.contains(&tid) {
                    // The fetcher verifies the bytes before keeping them.
                    let ok = match copy {
                        Some((entry, false)) => self.store_copy(to, entry),
                        _ => false,
                    };
                    self.end_transfer(to, tid, ok);
                }
            }
            Body::Prepare { op, entry } => {
                self.nodes[to].staged.insert(op, (entry, self.now_ms));
                let tombstone_version = match self.nodes[to].store.current.get(&entry.hash) {
                    Some(s) if s.entry.kind == EntryKind::Tombstone => s.entry.version,
                    _ => 0,
                };
                let prepared = Body::Prepared {
                    op,
                    tombstone_version,
                };
                self.send_to(to, from, reply_inc, prepared);
            }
            Body::Prepared {
                op,
                tombstone_version,
            } => self.put_report(to, op, from, Report::Prepared(tombstone_version)),
            Body::HintPush { hid, entry } => {
                // The node answers a copy it keeps, and one a newer tombstone supersedes, alike.
                self.store_copy(to, entry);
                self.send_to(to, from, reply_inc, Body::HintDone { hid, ok: true });
            }
            Body::HintTombstone { hid, entry } => {
                self.apply_delete(to, entry);
                self.send_to(to, from, reply_inc, Body::HintDone { hid, ok: true });
            }
            Body::HintDone { hid, ok } => self.end_hint(to, hid, ok),
            Body::Commit { op, version } => {
                let stored = match self.nodes[to].staged.remove(&op) {
                    Some((entry, _)) => {
                        self.commit_put(to, Entry { version, ..entry });
                        true
                    }
                    None => false,
                };
                self.send_to(to, from, reply_inc, Body::CommitReply { op, stored });
            }
            Body::CommitReply { op, stored } => {
                let report = if stored {
                    Report::Stored
                } else {
                    Report::Failed
                };
                self.put_report(to, op, from, report);
            }
            Body::Abort { op } => {
                self.nodes[to].staged.remove(&op);
            }
            Body::Delete { op, entry } => {
                self.apply_delete(to, entry);
                self.send_to(to, from, reply_inc, Body::Deleted { op });
            }
            Body::Deleted { op } => self.delete_ack(to, op, from),
            Body::Read { op, hash } => {
                let found = self.nodes[to].store.current.get(&hash).copied();
                let served = match found {
                    Some(s) if s.is_live() && s.corrupt => {
                        // The engine checks what it reads: a corrupt copy is quarantined, not
                        // served.
                        self.quarantine(to, &hash);
                        None
                    }
                    Some(s) if s.is_live() => Some(s.corrupt),
                    _ => None,
                };
                self.send_to(to, from, reply_inc, Body::ReadReply { op, served });
            }
            Body::ReadReply { op, served } => self.read_reply(to, op, from, served)?,
        }
        Ok(())
    }

    // ---- node: periodic work, membership, layouts ----

    fn tick(&mut self, ix: usize, inc: u64) {
        let now = self.now_ms;
        {
            let n = &self.nodes[ix];
            if !n.up || n.inc != inc {
                return;
            }
        }
        if now >= self.nodes[ix].next_sync_ms {
            self.nodes[ix].next_sync_ms = now + self.knobs.sync_interval_ms;
            self.nodes[ix].store.sync();
        }
        let events = self.nodes[ix].membership.tick(now);
        self.member_events(ix, events);
        self.deliver_hints(ix);
        let n = &mut self.nodes[ix];
        let to_verify = n.scrubber.step(now, &n.store.current);
        for e in to_verify {
            if self.nodes[ix]
                .store
                .current
                .get(&e.hash)
                .is_some_and(|s| s.corrupt)
            {
                trace!(
                    self,
                    "{} scrub finds {} corrupt",
                    NODE_IDS[ix],
                    short(&e.hash)
                );
                self.quarantine(ix, &e.hash);
            }
        }
        let n = &mut self.nodes[ix];
        n.scrubber.checked();
        n.staged
            .retain(|_, (_, at)| now.saturating_sub(*at) < STAGED_TTL_MS);
        if n.healer.next_wake_ms(now) <= now {
            let not_member = !n.layout.contains(ix);
            let membership = &n.membership;
            let up = |p: &str| not_member || membership.is_up(p);
            let actions = n.healer.tick(now, &n.store.current, &up);
            if n.healer.next_wake_ms(now) <= now {
                self.stats.healer_busy_wakes += 1;
            }
            self.run_actions(ix, actions, None);
        }
        self.schedule(now + NODE_TICK_INTERVAL_MS, Event::Tick { node: ix, inc });
    }

    fn member_events(&mut self, ix: usize, events: Vec<MemberEvent>) {
        for event in events {
            match event {
                MemberEvent::SendHeartbeat { to } => {
                    let n = &self.nodes[ix];
                    let report = NodeReport {
                        layout_version: n.layout.version(),
                        blob_count: n.store.current.slots.len() as u64,
                        ..NodeReport::default()
                    };
                    let to = node_ix(&to).expect("a known node");
                    self.send(ix, to, Body::Heartbeat(report));
                }
                MemberEvent::StateChanged { peer, from, to } => {
                    trace!(self, "{} sees {peer} {from:?} -> {to:?}", NODE_IDS[ix]);
                    if to == PeerState::Up {
                        let now = self.now_ms;
                        self.nodes[ix].healer.on_peer_up(now, &peer);
                        self.nodes[ix].hints.wake(&peer, now);
                    }
                }
                MemberEvent::NewerLayout { peer, version } => {
                    trace!(
                        self,
                        "{} hears of layout v{version} from {peer}", NODE_IDS[ix]
                    );
                    let to = node_ix(&peer).expect("a known node");
                    self.send(ix, to, Body::LayoutFetch);
                }
            }
        }
    }

    fn adopt(&mut self, ix: usize, shape: usize, version: u64) {
        let now = self.now_ms;
        let n = &mut self.nodes[ix];
        if version <= n.layout.version() {
            return;
        }
        trace!(
            self,
            "{} adopts layout v{version} ({})", NODE_IDS[ix], SHAPES[shape].name
        );
        let n = &mut self.nodes[ix];
        let layout = sim_layout(shape, version);
        n.prev_layout = Some(std::mem::replace(&mut n.layout, layout.clone()));
        n.store.set_layout(layout.clone());
        n.healer.set_routing(now, layout.routing.clone());
        n.membership.set_peers(layout.peer_ids(ix), version);
    }

    fn crash(&mut self, ix: usize) {
        let down_ms = self.rng.between(CRASH_DOWN_MS_MIN, self.knobs.storm_ms_max);
        trace!(self, "CRASH {} for {down_ms} ms", NODE_IDS[ix]);
        self.stats.crashes += 1;
        let n = &mut self.nodes[ix];
        n.up = false;
        n.inc += 1;
        n.store.crash();
        n.staged.clear();
        n.coord.clear();
        n.open_transfers.clear();
        n.open_hints.clear();
        let inc = n.inc;
        self.schedule(self.now_ms + down_ms, Event::Restart { node: ix, inc });
    }

    fn restart(&mut self, ix: usize) {
        let now = self.now_ms;
        let n = &mut self.nodes[ix];
        if n.up {
            return;
        }
        n.up = true;
        n.inc += 1;
        // The process starts afresh: nothing of the healer or the detector survives.
        n.healer = Healer::new(n.id(), heal_settings(), n.layout.routing.clone(), now);
        n.membership = Membership::new(detector_settings(), now);
        n.membership
            .set_peers(n.layout.peer_ids(ix), n.layout.version());
        n.scrubber = Scrubber::new(&heal_settings(), None, now);
        // The hint log is replayed: every hint is due again.
        n.hints = HintQueue::new(HINT_RETRY_MS_MIN, HINT_RETRY_MS_MAX);
        for (id, hint) in &n.hint_log {
            n.hints.insert(*id, hint.clone(), now);
        }
        let inc = n.inc;
        trace!(self, "RESTART {}", NODE_IDS[ix]);
        self.schedule(now, Event::Tick { node: ix, inc });
    }

    // ---- node: healer actions and copies ----

    /// Carries out a healer's actions in order; `reply` is the requester when they answer a
    /// request (answers go to the incarnation that asked).
    fn run_actions(&mut self, ix: usize, actions: Vec<Action>, reply: Option<(usize, u64)>) {
        let now = self.now_ms;
        let mut work: VecDeque<Action> = actions.into();
        while let Some(action) = work.pop_front() {
            match action {
                Action::Send { to, msg } => {
                    let to = node_ix(&to).expect("a known node");
                    self.nodes[ix].store.barrier();
                    match reply {
                        Some((r, inc)) if r == to && !msg.is_request() => {
                            self.send_to(ix, to, inc, Body::Heal(msg))
                        }
                        _ => self.send(ix, to, Body::Heal(msg)),
                    }
                }
                Action::Transfer {
                    id,
                    peer,
                    direction,
                    entry,
                } => {
                    let peer = node_ix(&peer).expect("a known node");
                    trace!(
                        self,
                        "{} transfer t{id} {direction:?} {} with {}",
                        NODE_IDS[ix],
                        entry_text(&entry),
                        NODE_IDS[peer]
                    );
                    let body = match direction {
                        Direction::Push => {
                            match self.nodes[ix].store.current.get(&entry.hash).copied() {
                                Some(s) if s.is_live() => Some(Body::PushData {
                                    tid: id,
                                    entry: s.entry,
                                    corrupt: s.corrupt,
                                }),
                                _ => None,
                            }
                        }
                        Direction::Fetch => Some(Body::FetchReq {
                            tid: id,
                            hash: entry.hash,
                        }),
                    };
                    let n = &mut self.nodes[ix];
                    match body {
                        Some(body) => {
                            n.open_transfers.insert(id);
                            let inc = n.inc;
                            self.send(ix, peer, body);
                            self.schedule(
                                now + TRANSFER_TIMEOUT_MS,
                                Event::TransferTimeout {
                                    node: ix,
                                    inc,
                                    tid: id,
                                },
                            );
                        }
                        None => {
                            // Nothing left to push: the copy fails at once.
                            let more = n.healer.on_transfer_done(now, id, false, &n.store.current);
                            work.extend(more);
                        }
                    }
                }
                Action::ApplyTombstone { entry } => {
                    let store = &mut self.nodes[ix].store;
                    let ours = store.current.get(&entry.hash).map(|s| s.entry);
                    if compare(ours.as_ref(), Some(&entry)) == Verdict::Theirs {
                        trace!(self, "{} applies {}", NODE_IDS[ix], entry_text(&entry));
                        self.nodes[ix]
                            .store
                            .write_tombstone_unsynced(slot(entry, now));
                    }
                }
                Action::DropLocal { hash } => {
                    trace!(self, "{} drops {}", NODE_IDS[ix], short(&hash));
                    self.nodes[ix].store.write_unsynced(hash, None);
                }
                Action::ForgetVersion { entry } => {
                    let store = &mut self.nodes[ix].store;
                    if store.current.get(&entry.hash).map(|s| s.entry) != Some(entry) {
                        continue;
                    }
                    trace!(self, "{} forgets {}", NODE_IDS[ix], entry_text(&entry));
                    let store = &mut self.nodes[ix].store;
                    match entry.kind {
                        EntryKind::Tombstone => store.write_unsynced(entry.hash, None),
                        EntryKind::Live => {
                            store.modify_unsynced(entry.hash, |s| s.entry.version = 0)
                        }
                    }
                }
            }
        }
    }

    /// Keeps a verified copy that arrived by a transfer, durably, if it stands over what is
    /// here. True if this node now holds the blob.
    fn store_copy(&mut self, ix: usize, entry: Entry) -> bool {
        let now = self.now_ms;
        let store = &mut self.nodes[ix].store;
        let ours = store.current.get(&entry.hash).map(|s| s.entry);
        match compare(ours.as_ref(), Some(&entry)) {
            Verdict::Theirs => {
                store.write_durable(entry.hash, Some(slot(entry, now)));
                self.nodes[ix].healer.on_local_write(&entry.hash);
                true
            }
            Verdict::Agree => true,
            Verdict::Ours => false,
        }
    }

    fn end_transfer(&mut self, ix: usize, tid: u64, ok: bool) {
        let now = self.now_ms;
        let n = &mut self.nodes[ix];
        if !n.open_transfers.remove(&tid) {
            return;
        }
        trace!(self, "{} transfer t{tid} ends ok={ok}", NODE_IDS[ix]);
        let n = &mut self.nodes[ix];
        let actions = n.healer.on_transfer_done(now, tid, ok, &n.store.current);
        self.run_actions(ix, actions, None);
    }

    /// Removes a corrupt copy (durably) and asks the healer for a good one.
    fn quarantine(&mut self, ix: usize, hash: &BlobHash) {
        let now = self.now_ms;
        let n = &mut self.nodes[ix];
        let Some(s) = n.store.current.get(hash).copied() else {
            return;
        };
        self.stats.quarantines += 1;
        n.store.write_durable(*hash, None);
        let not_member = !n.layout.contains(ix);
        let membership = &n.membership;
        let up = |p: &str| not_member || membership.is_up(p);
        n.healer.on_corrupt(now, s.entry, &up);
    }

    // ---- clients and coordinators ----

    fn client_op(&mut self) {
        if !self.workload_on || self.ops_left == 0 {
            return;
        }
        self.ops_left -= 1;
        let gap_mean = FAULT_PHASE_MS / self.knobs.ops;
        let gap = self.rng.between(1, 2 * gap_mean);
        self.schedule(self.now_ms + gap, Event::ClientOp);

        let roll = self.rng.below(PERCENT);
        let (kind, blob) = if roll < PUT_NEW_PERCENT || self.blobs.is_empty() {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&self.seed.to_le_bytes());
            key[8..].copy_from_slice(&(self.blobs.len() as u64).to_le_bytes());
            let hash = *blake3::hash(&key).as_bytes();
            let bytes = self.rng.between(BLOB_BYTES_MIN, BLOB_BYTES_MAX);
            self.blobs.push((hash, bytes));
            (OpKind::Put, self.blobs.len() - 1)
        } else if roll < PUT_NEW_PERCENT + PUT_AGAIN_PERCENT && !self.acked_delete.is_empty() {
            let i = self.rng.below(self.acked_delete.len() as u64) as usize;
            (OpKind::Put, self.acked_delete[i])
        } else if roll < PUT_NEW_PERCENT + PUT_AGAIN_PERCENT + DELETE_PERCENT
            && !self.acked_put.is_empty()
        {
            let i = self.rng.below(self.acked_put.len() as u64) as usize;
            (OpKind::Delete, self.acked_put[i])
        } else {
            let i = self.rng.below(self.blobs.len() as u64) as usize;
            (OpKind::Read, i)
        };
        let members: Vec<usize> = mask_nodes(self.latest.members).collect();
        let coordinator = members[self.rng.below(members.len() as u64) as usize];
        let (hash, bytes) = self.blobs[blob];
        let op = self.history.ops.len();
        self.history.ops.push(OpRecord {
            kind,
            hash,
            blob,
            issued_ms: self.now_ms,
            coordinator,
            version: None,
            outcome: Outcome::Pending,
        });
        trace!(
            self,
            "op{op}: {kind:?} {} via {}",
            short(&hash),
            NODE_IDS[coordinator]
        );
        if !self.nodes[coordinator].up {
            self.finish_op(op, Outcome::Failed);
            return;
        }
        let c = coordinator;
        let now = self.now_ms;
        let layout = self.nodes[c].layout.clone();
        let owners = layout.owner_mask(&hash);
        let inc = self.nodes[c].inc;
        let replicas: Vec<usize> = mask_nodes(owners).collect();
        let local = replicas.iter().position(|&r| r == c);
        match kind {
            OpKind::Put => {
                let entry = Entry::live(hash, now, bytes);
                self.history.ops[op].version = Some(now);
                let (coordinator, actions) =
                    PutCoordinator::new(replicas.len(), layout.write_quorum(), local, now);
                for &o in &replicas {
                    self.send(c, o, Body::Prepare { op, entry });
                }
                self.nodes[c].coord.insert(
                    op,
                    Coord::Put {
                        coordinator,
                        replicas,
                    },
                );
                self.schedule(
                    now + PUT_PHASE_TIMEOUT_MS,
                    Event::OpTimeout {
                        node: c,
                        inc,
                        op,
                        phase: Phase::Prepare,
                    },
                );
                self.put_actions(c, op, actions);
            }
            OpKind::Delete => {
                let entry = Entry::tombstone(hash, now);
                self.history.ops[op].version = Some(now);
                let (coordinator, actions) =
                    DeleteCoordinator::new(replicas.len(), layout.write_quorum(), local);
                for &o in &replicas {
                    self.send(c, o, Body::Delete { op, entry });
                }
                self.nodes[c].coord.insert(
                    op,
                    Coord::Delete {
                        coordinator,
                        replicas,
                    },
                );
                self.schedule(
                    now + DELETE_TIMEOUT_MS,
                    Event::OpTimeout {
                        node: c,
                        inc,
                        op,
                        phase: Phase::Single,
                    },
                );
                self.delete_actions(c, op, actions);
            }
            OpKind::Read => {
                let previous = self.nodes[c]
                    .prev_layout
                    .as_ref()
                    .map_or(0, |p| p.owner_mask(&hash));
                let asked = owners | previous;
                self.nodes[c]
                    .coord
                    .insert(op, Coord::Read { asked, replied: 0 });
                for o in mask_nodes(asked) {
                    self.send(c, o, Body::Read { op, hash });
                }
                self.schedule(
                    now + READ_TIMEOUT_MS,
                    Event::OpTimeout {
                        node: c,
                        inc,
                        op,
                        phase: Phase::Single,
                    },
                );
            }
        }
    }

    fn finish_op(&mut self, op: usize, outcome: Outcome) {
        let rec = &mut self.history.ops[op];
        rec.outcome = outcome;
        let (kind, blob) = (rec.kind, rec.blob);
        trace!(self, "op{op} {kind:?} ends {outcome:?}");
        match (kind, outcome) {
            (OpKind::Put, Outcome::Acked) => self.acked_put.push(blob),
            (OpKind::Delete, Outcome::Acked) => self.acked_delete.push(blob),
            _ => {}
        }
    }

    /// A replica commits a prepared put: it keeps the copy durably unless a newer tombstone
    /// stands; a copy already here takes the newer version. A copy already here is checked
    /// first: the put's verified bytes replace a corrupt one (otherwise a put acknowledged by a
    /// quorum of one could rest on bytes that scrub later throws away).
    fn commit_put(&mut self, ix: usize, entry: Entry) {
        let now = self.now_ms;
        let store = &mut self.nodes[ix].store;
        let ours = store.current.get(&entry.hash).copied();
        match compare(ours.map(|s| s.entry).as_ref(), Some(&entry)) {
            Verdict::Theirs => {
                store.write_durable(entry.hash, Some(slot(entry, now)));
                self.nodes[ix].healer.on_local_write(&entry.hash);
            }
            Verdict::Agree => {
                if let Some(s) = ours
                    && (s.entry.version < entry.version || s.corrupt)
                {
                    let mut updated = s;
                    updated.entry.version = s.entry.version.max(entry.version);
                    updated.recorded_ms = now;
                    updated.corrupt = false;
                    store.write_durable(entry.hash, Some(updated));
                }
            }
            Verdict::Ours => {}
        }
    }

    /// A replica's report on a put this node coordinates, to the shipped coordinator.
    fn put_report(&mut self, c: usize, op: usize, from: usize, report: Report) {
        let Some(Coord::Put {
            coordinator,
            replicas,
        }) = self.nodes[c].coord.get_mut(&op)
        else {
            return;
        };
        let Some(i) = replicas.iter().position(|&r| r == from) else {
            return; // not a replica of this put
        };
        let actions = match report {
            Report::Prepared(tombstone_version) => coordinator.on_prepared(i, tombstone_version),
            Report::Stored => coordinator.on_stored(i),
            Report::Failed => coordinator.on_failed(i),
        };
        self.put_actions(c, op, actions);
    }

    /// Carries out the put coordinator's actions, in order.
    fn put_actions(&mut self, c: usize, op: usize, actions: Vec<PutAction>) {
        let Some(Coord::Put { replicas, .. }) = self.nodes[c].coord.get(&op) else {
            return;
        };
        let replicas = replicas.clone();
        let hash = self.history.ops[op].hash;
        for action in actions {
            match action {
                PutAction::Commit {
                    replica: i,
                    version,
                } => {
                    trace!(
                        self,
                        "op{op} commits on {} as v{version}", NODE_IDS[replicas[i]]
                    );
                    // The version the put stands with, if the quorum held a newer tombstone.
                    self.history.ops[op].version = Some(version);
                    self.send(c, replicas[i], Body::Commit { op, version });
                    let inc = self.nodes[c].inc;
                    self.schedule(
                        self.now_ms + PUT_PHASE_TIMEOUT_MS,
                        Event::OpTimeout {
                            node: c,
                            inc,
                            op,
                            phase: Phase::Commit(i),
                        },
                    );
                }
                PutAction::Abort(i) => self.send(c, replicas[i], Body::Abort { op }),
                PutAction::Hint(i) => self.record_hint(c, hash, replicas[i], HintKind::Put),
                PutAction::Acknowledge => self.finish_op(op, Outcome::Acked),
                PutAction::Fail => self.finish_op(op, Outcome::Failed),
            }
        }
        if let Some(Coord::Put { coordinator, .. }) = self.nodes[c].coord.get(&op)
            && coordinator.is_settled()
        {
            self.nodes[c].coord.remove(&op);
        }
    }

    fn delete_ack(&mut self, c: usize, op: usize, from: usize) {
        let Some(Coord::Delete {
            coordinator,
            replicas,
        }) = self.nodes[c].coord.get_mut(&op)
        else {
            return;
        };
        let Some(i) = replicas.iter().position(|&r| r == from) else {
            return;
        };
        let actions = coordinator.on_deleted(i, false);
        self.delete_actions(c, op, actions);
    }

    /// Carries out the delete coordinator's actions, in order.
    fn delete_actions(&mut self, c: usize, op: usize, actions: Vec<DeleteAction>) {
        let Some(Coord::Delete { replicas, .. }) = self.nodes[c].coord.get(&op) else {
            return;
        };
        let replicas = replicas.clone();
        let hash = self.history.ops[op].hash;
        for action in actions {
            match action {
                DeleteAction::Hint(i) => self.record_hint(c, hash, replicas[i], HintKind::Delete),
                DeleteAction::Acknowledge { .. } => {
                    self.nodes[c].coord.remove(&op);
                    self.finish_op(op, Outcome::Acked);
                }
                DeleteAction::Fail => {
                    self.nodes[c].coord.remove(&op);
                    self.finish_op(op, Outcome::Failed);
                }
            }
        }
    }

    fn read_reply(
        &mut self,
        c: usize,
        op: usize,
        from: usize,
        served: Option<bool>,
    ) -> Result<(), String> {
        let Some(Coord::Read { asked, replied }) = self.nodes[c].coord.get_mut(&op) else {
            return Ok(());
        };
        *replied |= 1 << from;
        match served {
            Some(corrupt) => {
                // Check 4: a client is never given a corrupt copy.
                if corrupt {
                    return Err(format!(
                        "read op{op} was served a corrupt copy of {} by {}",
                        short(&self.history.ops[op].hash),
                        NODE_IDS[from]
                    ));
                }
                self.nodes[c].coord.remove(&op);
                self.finish_op(op, Outcome::Found);
            }
            None => {
                if *replied & *asked == *asked {
                    self.nodes[c].coord.remove(&op);
                    self.finish_op(op, Outcome::NotFound);
                }
            }
        }
        Ok(())
    }

    fn op_timeout(&mut self, c: usize, op: usize, phase: Phase) {
        let Some(coord) = self.nodes[c].coord.get_mut(&op) else {
            return;
        };
        match (coord, phase) {
            (Coord::Put { coordinator, .. }, Phase::Prepare) => {
                let silent: Vec<usize> = coordinator.sending().collect();
                let actions = silent
                    .into_iter()
                    .flat_map(|i| coordinator.on_failed(i))
                    .collect();
                self.put_actions(c, op, actions);
            }
            (Coord::Put { coordinator, .. }, Phase::Commit(i))
                if coordinator.committing().any(|r| r == i) =>
            {
                let actions = coordinator.on_failed(i);
                self.put_actions(c, op, actions);
            }
            (Coord::Delete { coordinator, .. }, _) => {
                let silent: Vec<usize> = coordinator.waiting().collect();
                let actions = silent
                    .into_iter()
                    .flat_map(|i| coordinator.on_failed(i))
                    .collect();
                self.delete_actions(c, op, actions);
            }
            (Coord::Read { .. }, _) => {
                self.nodes[c].coord.remove(&op);
                self.finish_op(op, Outcome::NotFound);
            }
            _ => {}
        }
    }

    // ---- hinted handoff ----

    /// A coordinator records a hint durably (before its answer, as the node's hint log does).
    fn record_hint(&mut self, c: usize, hash: BlobHash, target: usize, kind: HintKind) {
        let now = self.now_ms;
        let n = &mut self.nodes[c];
        let id = n.next_hint_id;
        n.next_hint_id += 1;
        let hint = Hint {
            hash: Hash::from_bytes(hash),
            target: NODE_IDS[target].to_string(),
            kind,
        };
        n.hint_log.insert(id, hint.clone());
        n.hints.insert(id, hint, now);
        self.stats.hints_recorded += 1;
        trace!(
            self,
            "{} records hint h{id}: {kind:?} {} for {}",
            NODE_IDS[c],
            short(&hash),
            NODE_IDS[target]
        );
    }

    /// Delivers the hints that are due, as the node's delivery loop does: what a hint means is
    /// `cairn_core::hints::plan` of what this node holds now.
    fn deliver_hints(&mut self, ix: usize) {
        let now = self.now_ms;
        let due = self.nodes[ix].hints.take_due(now, HINT_DELIVERY_BATCH_MAX);
        for (hid, hint) in due {
            let target = node_ix(&hint.target).expect("a known node");
            if !self.nodes[ix].layout.contains(target) {
                // The target left the layout: the node drops the hint.
                self.hint_delivered(ix, hid);
                continue;
            }
            let hash = *hint.hash.as_bytes();
            let held = self.nodes[ix].store.current.get(&hash).copied();
            let body = match plan(&hint, held.map(|s| s.entry)) {
                HintStep::Drop => {
                    self.hint_delivered(ix, hid);
                    continue;
                }
                HintStep::Push(_) if held.is_some_and(|s| s.corrupt) => {
                    // Reading the copy to push it finds it corrupt: quarantined, retried later.
                    self.quarantine(ix, &hash);
                    self.nodes[ix].hints.failed(hid, now);
                    continue;
                }
                HintStep::Push(entry) => Body::HintPush { hid, entry },
                HintStep::Tombstone(entry) => Body::HintTombstone { hid, entry },
            };
            trace!(self, "{} delivers hint h{hid}", NODE_IDS[ix]);
            let n = &mut self.nodes[ix];
            n.open_hints.insert(hid);
            let inc = n.inc;
            self.send(ix, target, body);
            self.schedule(
                now + HINT_TIMEOUT_MS,
                Event::HintTimeout { node: ix, inc, hid },
            );
        }
    }

    fn end_hint(&mut self, ix: usize, hid: u64, ok: bool) {
        let now = self.now_ms;
        if !self.nodes[ix].open_hints.remove(&hid) {
            return; // timed out already, or a duplicate
        }
        if ok {
            self.hint_delivered(ix, hid);
        } else {
            self.nodes[ix].hints.failed(hid, now);
        }
    }

    fn hint_delivered(&mut self, ix: usize, hid: u64) {
        let n = &mut self.nodes[ix];
        n.hints.delivered(hid);
        n.hint_log.remove(&hid);
        self.stats.hints_delivered += 1;
    }

    /// A replica applies a tombstone durably if it stands over what it holds (a coordinator's
    /// delete, or a delete's hint).
    fn apply_delete(&mut self, ix: usize, entry: Entry) {
        let now = self.now_ms;
        let store = &mut self.nodes[ix].store;
        let ours = store.current.get(&entry.hash).map(|s| s.entry);
        if compare(ours.as_ref(), Some(&entry)) == Verdict::Theirs {
            store.write_durable(entry.hash, Some(slot(entry, now)));
        }
    }

    // ---- faults ----

    fn storm_start(&mut self) {
        if !self.workload_on {
            return;
        }
        let lasts = self.rng.between(STORM_MS_MIN, self.knobs.storm_ms_max);
        let end = (self.now_ms + lasts).min(FAULT_PHASE_MS);
        trace!(self, "STORM until {end}");
        self.storm = true;
        self.schedule(end, Event::StormEnd);
        let first = self.rng.below(self.knobs.fault_gap_ms_max);
        self.schedule(self.now_ms + first, Event::Fault);
    }

    /// The network heals and every node is brought back.
    fn storm_end(&mut self) {
        if !self.storm {
            return;
        }
        trace!(self, "CALM: the network heals, every node comes back");
        self.storm = false;
        self.cuts.clear();
        self.blocked = [[0; NODE_COUNT]; NODE_COUNT];
        for ix in 0..NODE_COUNT {
            self.restart(ix);
        }
        if self
            .nodes
            .iter()
            .all(|n| n.layout.version() < self.latest.version())
        {
            // Every copy of the operator's last layout was lost: it applies it again.
            let node = self.rng.below(NODE_COUNT as u64) as usize;
            let (shape, version) = (self.latest.shape, self.latest.version());
            self.schedule(
                self.now_ms + LATENCY_MS_MIN,
                Event::AdminLayout {
                    node,
                    shape,
                    version,
                },
            );
        }
        let calm = self.rng.between(CALM_MS_MIN, CALM_MS_MAX);
        self.schedule(self.now_ms + calm, Event::StormStart);
    }

    fn fault(&mut self) {
        if !self.storm {
            return;
        }
        let gap = self
            .rng
            .between(FAULT_GAP_MS_MIN, self.knobs.fault_gap_ms_max);
        self.schedule(self.now_ms + gap, Event::Fault);
        let weights = self.knobs.fault_weights;
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return;
        }
        let mut roll = self.rng.below(total);
        let mut kind = 0;
        while roll >= weights[kind] {
            roll -= weights[kind];
            kind += 1;
        }
        match kind {
            0 => {
                let down = self.nodes.iter().filter(|n| !n.up).count();
                let ix = self.rng.below(NODE_COUNT as u64) as usize;
                if down < CRASHED_NODES_MAX && self.nodes[ix].up {
                    self.crash(ix);
                }
            }
            1 => self.partition(),
            2 => self.corrupt_a_copy(),
            _ => self.change_layout(),
        }
    }

    fn partition(&mut self) {
        if self.cuts.len() >= PARTITIONS_ACTIVE_MAX {
            return;
        }
        let all = (1u8 << NODE_COUNT) - 1;
        let side = 1 + self.rng.below(u64::from(all) - 1) as u8;
        let one_way = self.rng.below(2) == 0;
        let mut links = Vec::new();
        for a in mask_nodes(side) {
            for b in mask_nodes(all & !side) {
                links.push((a, b));
                if !one_way {
                    links.push((b, a));
                }
            }
        }
        for &(a, b) in &links {
            self.blocked[a][b] += 1;
        }
        let id = self.next_cut_id;
        self.next_cut_id += 1;
        let lasts = self.rng.between(PARTITION_MS_MIN, self.knobs.storm_ms_max);
        trace!(
            self,
            "PARTITION #{id} {:?} {} the rest for {lasts} ms",
            mask_nodes(side).map(|i| NODE_IDS[i]).collect::<Vec<_>>(),
            if one_way {
                "cannot reach"
            } else {
                "split from"
            }
        );
        self.stats.partitions += 1;
        self.cuts.push(Cut { id, links });
        self.schedule(self.now_ms + lasts, Event::HealPartition { id });
    }

    fn heal_partition(&mut self, id: u64) {
        if let Some(pos) = self.cuts.iter().position(|c| c.id == id) {
            let cut = self.cuts.remove(pos);
            for (a, b) in cut.links {
                self.blocked[a][b] -= 1;
            }
            trace!(self, "partition #{id} heals");
        }
    }

    /// Damages one live copy of a blob that has another intact copy elsewhere, once per blob.
    fn corrupt_a_copy(&mut self) {
        let ix = self.rng.below(NODE_COUNT as u64) as usize;
        let candidates: Vec<BlobHash> = self.nodes[ix]
            .store
            .current
            .slots
            .values()
            .filter(|s| s.is_good_live() && !self.corrupted.contains(&s.entry.hash))
            .map(|s| s.entry.hash)
            .filter(|h| {
                self.nodes
                    .iter()
                    .any(|n| n.ix != ix && n.store.durable.get(h).is_some_and(|s| s.is_good_live()))
            })
            .collect();
        if candidates.is_empty() || !self.nodes[ix].up {
            return;
        }
        let hash = candidates[self.rng.below(candidates.len() as u64) as usize];
        trace!(self, "CORRUPT {} on {}", short(&hash), NODE_IDS[ix]);
        self.stats.corruptions += 1;
        self.corrupted.insert(hash);
        self.nodes[ix].store.corrupt(&hash);
    }

    /// The operator applies the next layout: one node surely hears of it, the others may.
    fn change_layout(&mut self) {
        if self.stats.layout_changes >= self.knobs.layout_changes_max {
            return;
        }
        let up: Vec<usize> = (0..NODE_COUNT).filter(|&i| self.nodes[i].up).collect();
        if up.is_empty() {
            return;
        }
        let mut shape = self.rng.below(SHAPES.len() as u64 - 1) as usize;
        if shape >= self.latest.shape {
            shape += 1;
        }
        let version = self.latest.version() + 1;
        self.latest = sim_layout(shape, version);
        self.stats.layout_changes += 1;
        trace!(self, "LAYOUT v{version}: {}", SHAPES[shape].name);
        let first = up[self.rng.below(up.len() as u64) as usize];
        self.schedule(
            self.now_ms + LATENCY_MS_MIN,
            Event::AdminLayout {
                node: first,
                shape,
                version,
            },
        );
        for node in 0..NODE_COUNT {
            if node != first && self.rng.below(PERMILLE) >= self.knobs.drop_permille {
                let at = self.now_ms + self.rng.between(LATENCY_MS_MIN, self.knobs.latency_ms_max);
                self.schedule(
                    at,
                    Event::AdminLayout {
                        node,
                        shape,
                        version,
                    },
                );
            }
        }
    }

    fn stop_faults(&mut self) {
        trace!(self, "FAULT PHASE ENDS: clients stop");
        self.workload_on = false;
        self.storm_end();
        self.schedule(
            self.now_ms + CONVERGE_CHECK_INTERVAL_MS,
            Event::CheckConvergence,
        );
    }

    // ---- convergence and checks ----

    /// A node that says it is settled (`Healer::settled`: the layout change is over as far as
    /// it can tell) holds no live copy the layout places elsewhere: the promise a node's
    /// `settled` report makes before the cluster forgets the previous layout.
    fn check_settled_nodes(&self) -> Result<(), String> {
        for n in self.nodes.iter().filter(|n| n.up && n.healer.settled()) {
            for s in n.store.current.slots.values().filter(|s| s.is_live()) {
                let owners = n.layout.owner_mask(&s.entry.hash);
                if owners & (1 << n.ix) == 0 {
                    return Err(format!(
                        "{} says it is settled on layout v{} but holds {}, owned by {:?}",
                        n.id(),
                        n.layout.version(),
                        short(&s.entry.hash),
                        mask_nodes(owners).map(|i| NODE_IDS[i]).collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Why the cluster has not converged yet, if it has not.
    fn not_converged(&self) -> Option<String> {
        let latest = &self.latest;
        for n in &self.nodes {
            if n.up && n.layout.version() == latest.version() && !n.healer.settled() {
                return Some(format!(
                    "{} is not settled on v{}",
                    n.id(),
                    latest.version()
                ));
            }
            if n.layout.version() != latest.version() {
                return Some(format!(
                    "{} is on layout v{}, not v{}",
                    n.id(),
                    n.layout.version(),
                    latest.version()
                ));
            }
            if n.store.has_unsynced() {
                return Some(format!("{} has unsynced changes", n.id()));
            }
            if let Some((id, hint)) = n.hint_log.iter().next() {
                return Some(format!(
                    "{} still owes hint h{id} ({:?} of {} to {})",
                    n.id(),
                    hint.kind,
                    short(hint.hash.as_bytes()),
                    hint.target
                ));
            }
        }
        let mut live: BTreeMap<BlobHash, u8> = BTreeMap::new();
        for n in &self.nodes {
            for s in n.store.current.slots.values() {
                let h = short(&s.entry.hash);
                if !s.is_live() {
                    return Some(format!(
                        "{} still holds the tombstone {}:{} (recorded at {})",
                        n.id(),
                        h,
                        s.entry.version,
                        s.recorded_ms
                    ));
                }
                if s.corrupt {
                    return Some(format!("{} still holds a corrupt copy of {h}", n.id()));
                }
                let owners = latest.owner_mask(&s.entry.hash);
                if owners & (1 << n.ix) == 0 {
                    return Some(format!(
                        "{} still holds {h}, owned by {:?}",
                        n.id(),
                        mask_nodes(owners).map(|i| NODE_IDS[i]).collect::<Vec<_>>()
                    ));
                }
                *live.entry(s.entry.hash).or_default() |= 1 << n.ix;
            }
        }
        for (hash, holders) in live {
            let owners = latest.owner_mask(&hash);
            if holders != owners {
                return Some(format!(
                    "{} is on {:?}, owned by {:?}",
                    short(&hash),
                    mask_nodes(holders).map(|i| NODE_IDS[i]).collect::<Vec<_>>(),
                    mask_nodes(owners).map(|i| NODE_IDS[i]).collect::<Vec<_>>()
                ));
            }
        }
        None
    }

    fn check_convergence(&mut self) -> Result<(), String> {
        let since_ms = self.now_ms - FAULT_PHASE_MS;
        self.check_settled_nodes()?;
        match self.not_converged() {
            None => {
                trace!(self, "converged {since_ms} ms after faults stopped");
                self.stats.converge_ms = since_ms;
                let stores: Vec<&Store> = self.nodes.iter().map(|n| &n.store).collect();
                check_end(&self.history, &self.latest, &stores)?;
                self.done = true;
                Ok(())
            }
            Some(reason) => {
                if since_ms >= CONVERGE_DEADLINE_MS {
                    return Err(format!(
                        "no convergence {since_ms} ms after faults stopped: {reason}"
                    ));
                }
                self.schedule(
                    self.now_ms + CONVERGE_CHECK_INTERVAL_MS,
                    Event::CheckConvergence,
                );
                Ok(())
            }
        }
    }
}
