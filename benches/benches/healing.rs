//! Cairn's healing benchmark: how fast two replicas confirm they agree, what repairing a few
//! missing blobs costs, and how fast a cluster re-replicates after losing a node, next to raw
//! QUIC measured in the same run. Prints a table and writes `<target>/cairn-bench/healing.json`.
//!
//! 1. **Agreement.** Two engine stores hold the same small blobs, each behind the node's own
//!    `NodeCatalog` with a two-node layout of factor 2 (both nodes own everything). Two
//!    `Healer`s exchange messages in memory: every `HealMsg` is postcard-encoded, as the node
//!    sends it, to count the bytes; every request counts as a round trip. The healers run on a
//!    virtual clock; the wall clock times each session, from the tick that starts it to the
//!    `Done` that ends it. The first session builds each side's summary table; "cold" sessions
//!    rebuild them, as every session of a node does when its sessions are further apart than
//!    the catalog's `SNAPSHOT_AGE_MS_MAX`; "warm" sessions follow a fresh build of both tables
//!    (reported: whether they could reuse them, as a build may outlast the cache).
//! 2. **Repair.** N blobs are deleted from one store; one session finds them, and its copies are
//!    made store to store (get, then put). Afterwards both stores must hold every blob again.
//! 3. **Re-replication.** A local cluster of six nodes in three zones (factor 3, write quorum 2,
//!    healing tuned to short intervals, unthrottled) is loaded through the client with 1 MiB
//!    blobs. Once every blob is on its three replicas, one node is shut down and the layout
//!    without it is applied to the others; the clock runs until every blob is on every replica
//!    the new layout names, layout adoption included (every survivor at once, as `cairn layout
//!    apply` does; routings of one layout in one process share its placement table, so the
//!    survivors build it once, as separate machines would side by side). Throughput is the
//!    bytes that had to be copied over that time. The baseline, measured seconds before in the
//!    same round on the same machine: raw QUIC between two
//!    endpoints with Cairn's TLS and transport settings, the same bytes as 1 MiB streams,
//!    `TRANSFERS_IN_FLIGHT` at a time (the healer's cap), and as one stream. The breakdown: time
//!    to adopt the layout, bytes the healers copied over bytes needed (duplicates), throughput
//!    once every survivor runs the new layout, CPU used.
//!
//! Every node, the client and the baseline run in this one process, on 127.0.0.1, in one tokio
//! runtime. Each measurement is made `rounds` times (3); figures are medians over rounds, and the
//! goal ratio is the median of the per-round ratios.
//!
//! `CAIRN_BENCH_QUICK=1` shrinks the data (100,000 small blobs, 64 MiB) and writes
//! `healing-quick.json`; `CAIRN_BENCH_ONLY=<text>` runs only the parts whose key (`agreement`,
//! `repair`, `rereplication`) contains `<text>` and writes `healing-partial.json`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_benches::{blob, load_average, median, stamp, sync_all_file_systems, target_dir};
use cairn_client::{Client, ClientOptions, Hash, Identity, Layout, NodeSpec, Routing};
use cairn_core::heal::{Action, Catalog, Direction, HealSettings, Healer};
use cairn_core::layout_edit::remove_node;
use cairn_core::limits::HANDOFF_SCAN_ENTRIES_PER_TICK;
use cairn_core::membership::FailureDetectorSettings;
use cairn_engine::{BlobStat, Config as EngineConfig, Store, SyncMode};
use cairn_node::dev::{ClusterFiles, ClusterSpec, write_cluster};
use cairn_node::limits::SNAPSHOT_AGE_MS_MAX;
use cairn_node::local::catalog::NodeCatalog;
use cairn_node::local::versions::VersionTable;
use cairn_node::{Node, NodeConfig, NodeError};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinSet;

#[path = "common/quic.rs"]
mod quic;

use quic::{RawQuic, free_base_port, process_cpu_s, sink};

const MIB: usize = 1024 * 1024;

/// Agreement and repair: blobs in each store at full scale and in a quick run, and their size.
const AGREEMENT_BLOBS_FULL: usize = 1_000_000;
const AGREEMENT_BLOBS_QUICK: usize = 100_000;
/// `cargo test --benches`: just enough to run every path.
const AGREEMENT_BLOBS_TEST: usize = 20_000;
const SMALL_BLOB_BYTES: usize = 32;
/// Fill of a small blob after its 8-byte index.
const SMALL_BLOB_FILL: u8 = 0x5a;
/// Blobs deleted from one store before a repair session.
const REPAIR_COUNTS: [usize; 2] = [10, 1000];
/// Warm sessions per round (the summary tables are reused).
const WARM_SESSIONS_PER_ROUND: usize = 3;
/// The two nodes of the in-memory pair; the one with the smaller id starts the sessions.
const INITIATOR: &str = "n1";
const RESPONDER: &str = "n2";
/// The pair's virtual clock: sessions start this far apart, which is also their interval, so
/// every session is due when its tick comes.
const VIRTUAL_SESSION_SPACING_MS: u64 = 1_000;
/// The pair's hand-off pass runs once before the first session and not again: its next pass
/// is this far off on the virtual clock.
const VIRTUAL_HANDOFF_INTERVAL_MS: u64 = 1 << 40;

/// Re-replication: the cluster, and the node that is lost.
const NODE_COUNT: usize = 6;
const ZONE_COUNT: usize = 3;
const REPLICATION_FACTOR: usize = 3;
const WRITE_QUORUM: usize = 2;
const LOST_NODE: &str = "n6";
const CLIENT_ZONE: &str = "zone-a";
const BLOB_BYTES: usize = MIB;
/// Data loaded before the node is lost (each blob is stored three times).
const LOADED_BYTES_FULL: usize = 512 * MIB;
const LOADED_BYTES_QUICK: usize = 64 * MIB;
const LOADED_BYTES_TEST: usize = 16 * MIB;
/// Puts in flight while loading.
const LOAD_IN_FLIGHT: usize = 16;
/// The healer's cap on copies in flight per node, and the baseline's streams in flight.
const TRANSFERS_IN_FLIGHT: usize = 16;
/// Healing and failure detection, tuned for a benchmark: short intervals, no throttle, no scrub.
const ANTI_ENTROPY_INTERVAL_MS: u64 = 200;
const HANDOFF_INTERVAL_MS: u64 = 200;
const HEAL_REQUEST_TIMEOUT_MS: u64 = 2_000;
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Suspicion as by default: with six nodes on a small shared machine, heartbeats are sometimes
/// late by more than half a second (each node builds its placement table on a runtime thread
/// when it adopts the layout). A peer that looks down then up again makes its larger-id partner
/// start a one-off session, which copies the same blobs a second time (at a 400 ms suspicion the
/// healers copied 2.5 times the bytes needed, at 2 s 1.6 times).
const SUSPECT_AFTER_MS: u64 = 2_000;
const DOWN_AFTER_MS: u64 = 5_000;
/// Where the search for free UDP ports starts: apart from the cluster benchmark's 17401.
const PORT_SEARCH_START: u16 = 18401;
/// Time a client operation may take, retries included.
const CLIENT_DEADLINE_MS: u64 = 30_000;
/// How often convergence is checked.
const POLL_INTERVAL_MS: u64 = 10;
/// Longest wait for the loaded blobs to reach all their replicas.
const LOAD_REPLICATED_TIMEOUT_MS: u64 = 120_000;
/// Longest wait for re-replication; past it the run fails.
const REREPLICATION_TIMEOUT_MS: u64 = 600_000;
/// Longest wait, after convergence, for copies still running (duplicates) to end.
const QUIESCE_TIMEOUT_MS: u64 = 30_000;

/// The goal: re-replication throughput over the raw transport's, unthrottled.
const GOAL_REREPLICATION_FRACTION_OF_RAW: f64 = 0.50;

/// How big everything is.
struct Scale {
    quick: bool,
    /// Run by `cargo bench` (not as a test), so the summary is written.
    measuring: bool,
    rounds: usize,
    agreement_blobs: usize,
    loaded_bytes: usize,
    /// `CAIRN_BENCH_ONLY`: run only the parts whose key contains this.
    only: Option<String>,
}

impl Scale {
    fn from_env() -> Scale {
        let quick = std::env::var("CAIRN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let measuring = std::env::args().any(|a| a == "--bench");
        let only = std::env::var("CAIRN_BENCH_ONLY")
            .ok()
            .filter(|v| !v.is_empty());
        let (rounds, agreement_blobs, loaded_bytes) = match (measuring, quick) {
            (false, _) => (1, AGREEMENT_BLOBS_TEST, LOADED_BYTES_TEST),
            (true, true) => (3, AGREEMENT_BLOBS_QUICK, LOADED_BYTES_QUICK),
            (true, false) => (3, AGREEMENT_BLOBS_FULL, LOADED_BYTES_FULL),
        };
        Scale {
            quick: quick || !measuring,
            measuring,
            rounds,
            agreement_blobs,
            loaded_bytes,
            only,
        }
    }

    fn wants(&self, key: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| key.contains(only.as_str()))
    }
}

fn median_of<T>(items: &[T], figure: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = items.iter().map(figure).collect();
    median(&mut values)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// Agreement and repair: two healers over two engine stores, exchanging messages in memory.
// ---------------------------------------------------------------------------------------------

/// One side of the in-memory pair: a store, the node's catalog over it, a healer.
struct Replica {
    id: &'static str,
    store: Store,
    catalog: NodeCatalog,
    healer: Healer,
    _dir: TempDir,
}

/// What one session cost.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    elapsed: Duration,
    /// Postcard bytes of every message, both ways (requests, replies and the closing `Done`).
    message_bytes: usize,
    /// Requests sent: each waits for its reply.
    round_trips: usize,
    copies: usize,
    copied_bytes: u64,
}

impl Exchange {
    fn json(&self) -> Value {
        json!({
            "ms": ms(self.elapsed),
            "message_bytes": self.message_bytes,
            "round_trips": self.round_trips,
            "copies": self.copies,
            "copied_bytes": self.copied_bytes,
        })
    }
}

/// Median figures over several sessions.
fn exchanges_json(sessions: &[Exchange]) -> Value {
    json!({
        "sessions": sessions.len(),
        "median_ms": median_of(sessions, |e| ms(e.elapsed)),
        "median_message_bytes": median_of(sessions, |e| e.message_bytes as f64),
        "median_round_trips": median_of(sessions, |e| e.round_trips as f64),
        "each": sessions.iter().map(Exchange::json).collect::<Vec<_>>(),
    })
}

/// The 32-byte blob number `i`: its index, then a fixed fill.
fn small_blob(i: usize) -> [u8; SMALL_BLOB_BYTES] {
    let mut b = [SMALL_BLOB_FILL; SMALL_BLOB_BYTES];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    b
}

struct Pair {
    a: Replica,
    b: Replica,
    now_ms: u64,
    hashes: Vec<Hash>,
    load_s: f64,
}

impl Pair {
    /// Two stores with the same `count` small blobs, loaded side by side.
    fn load(scratch: &Path, count: usize) -> Pair {
        let layout = Layout {
            version: 1,
            replication_factor: 2,
            write_quorum: 1,
            nodes: [INITIATOR, RESPONDER]
                .iter()
                .enumerate()
                .map(|(i, id)| NodeSpec {
                    id: id.to_string(),
                    addr: std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        PORT_SEARCH_START + i as u16,
                    ))
                    .into(),
                    zone: format!("zone-{i}"),
                    weight: 100,
                })
                .collect(),
        };
        let routing = Arc::new(Routing::new(layout).expect("a valid two-node layout"));
        let settings = HealSettings {
            anti_entropy_interval_ms: VIRTUAL_SESSION_SPACING_MS,
            handoff_interval_ms: VIRTUAL_HANDOFF_INTERVAL_MS,
            // A peer seen down (during the hand-off pass) is tried again after this; shorter
            // than the spacing, so the first session starts on time. Messages are delivered
            // at once, so no request ever waits this long.
            request_timeout_ms: VIRTUAL_SESSION_SPACING_MS / 2,
            ..HealSettings::default()
        };
        let open = |id: &'static str| {
            let dir = tempfile::Builder::new()
                .prefix(&format!("pair-{id}-"))
                .tempdir_in(scratch)
                .expect("create store directory");
            let config = EngineConfig {
                sync: SyncMode::Never,
                ..EngineConfig::default()
            };
            let store = Store::open(dir.path().join("store"), config).expect("open store");
            (id, store, dir)
        };
        let sides = [open(INITIATOR), open(RESPONDER)];
        let started = Instant::now();
        let hashes = std::thread::scope(|scope| {
            let loaders: Vec<_> = sides
                .iter()
                .map(|(_, store, _)| {
                    scope.spawn(move || {
                        (0..count)
                            .map(|i| store.put(&small_blob(i)).expect("put a small blob"))
                            .collect::<Vec<Hash>>()
                    })
                })
                .collect();
            let mut all: Vec<Vec<Hash>> = loaders
                .into_iter()
                .map(|l| l.join().expect("loader panicked"))
                .collect();
            assert_eq!(all[0], all[1], "both stores hold the same blobs");
            all.swap_remove(0)
        });
        let load_s = started.elapsed().as_secs_f64();
        sync_all_file_systems().expect("sync");
        let [a, b] = sides.map(|(id, store, dir)| {
            let versions = Arc::new(VersionTable::open(dir.path()).expect("open version table"));
            Replica {
                id,
                catalog: NodeCatalog::new(id, store.clone(), versions, routing.clone()),
                healer: Healer::new(id, settings.clone(), routing.clone(), 0),
                store,
                _dir: dir,
            }
        });
        let mut pair = Pair {
            a,
            b,
            now_ms: 0,
            hashes,
            load_s,
        };
        pair.finish_handoff_pass();
        pair
    }

    /// Runs the initiator's first hand-off pass (it examines every entry, a batch per tick) at
    /// time 0 with the peer reported down, so no session starts; the next pass is not due
    /// during the benchmark. The responder is never ticked: it only answers.
    fn finish_handoff_pass(&mut self) {
        let ticks = self.hashes.len() / HANDOFF_SCAN_ENTRIES_PER_TICK + 1;
        for _ in 0..ticks {
            let actions = self.a.healer.tick(0, &self.a.catalog, &|_| false);
            assert!(
                actions.is_empty(),
                "the hand-off pass found work: {actions:?}"
            );
        }
    }

    /// Time to build one side's summary table (the initiator's), from the store's index.
    fn summary_table_build(&self) -> Duration {
        self.a.catalog.invalidate();
        let started = Instant::now();
        let _ = self.a.catalog.summary(RESPONDER, 0, 0);
        started.elapsed()
    }

    /// Both sides' summary tables are stale: the next session rebuilds them.
    fn invalidate_summaries(&self) {
        self.a.catalog.invalidate();
        self.b.catalog.invalidate();
    }

    /// Builds both summary tables now if they are stale, so the next session reuses them.
    fn warm_summaries(&self) {
        let _ = self.b.catalog.summary(INITIATOR, 0, 0);
        let _ = self.a.catalog.summary(RESPONDER, 0, 0);
    }

    /// One anti-entropy session, run to its end: the initiator's tick starts it, messages go
    /// straight to the other side, copies are made at once.
    fn session(&mut self) -> Exchange {
        self.now_ms += VIRTUAL_SESSION_SPACING_MS;
        let now = self.now_ms;
        let mut out = Exchange {
            elapsed: Duration::ZERO,
            message_bytes: 0,
            round_trips: 0,
            copies: 0,
            copied_bytes: 0,
        };
        let started = Instant::now();
        let mut queue: VecDeque<(bool, Action)> = self
            .a
            .healer
            .tick(now, &self.a.catalog, &|_| true)
            .into_iter()
            .map(|action| (true, action))
            .collect();
        while let Some((from_a, action)) = queue.pop_front() {
            let (me, other) = if from_a {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            match action {
                Action::Send { to, msg } => {
                    assert_eq!(to, other.id, "a message for a node outside the pair");
                    out.message_bytes += postcard::to_allocvec(&msg).expect("encode").len();
                    if msg.is_request() {
                        out.round_trips += 1;
                    }
                    let replies = other.healer.on_message(now, me.id, msg, &other.catalog);
                    queue.extend(replies.into_iter().map(|a| (!from_a, a)));
                }
                Action::Transfer {
                    id,
                    direction,
                    entry,
                    ..
                } => {
                    let (source, target) = match direction {
                        Direction::Push => (&*me, &*other),
                        Direction::Fetch => (&*other, &*me),
                    };
                    let hash = Hash::from_bytes(entry.hash);
                    let bytes = source
                        .store
                        .get(&hash)
                        .expect("read the copy's source")
                        .expect("the source holds the blob");
                    assert_eq!(target.store.put(&bytes).expect("store a copy"), hash);
                    target.catalog.touch();
                    out.copies += 1;
                    out.copied_bytes += bytes.len() as u64;
                    let next = me.healer.on_transfer_done(now, id, true, &me.catalog);
                    queue.extend(next.into_iter().map(|a| (from_a, a)));
                }
                other => panic!("unexpected action between identical live replicas: {other:?}"),
            }
        }
        out.elapsed = started.elapsed();
        assert_eq!(
            self.a.healer.synced_since_ms(RESPONDER),
            Some(now),
            "the session ended without a failure"
        );
        out
    }

    /// Deletes `count` blobs from the responder's store (a different set each round), repairs
    /// them with one session, and checks that both stores hold every blob again.
    fn repair(&mut self, count: usize, round: usize) -> Exchange {
        let stride = self.hashes.len() / count;
        assert!(stride > round, "too few blobs to repair {count} per round");
        let lost: Vec<Hash> = (0..count)
            .map(|k| self.hashes[k * stride + round])
            .collect();
        for hash in &lost {
            assert!(self.b.store.delete(hash).expect("delete"), "a stored blob");
        }
        self.invalidate_summaries();
        let exchange = self.session();
        assert_eq!(exchange.copies, count, "one copy per missing blob");
        for hash in &lost {
            for side in [&self.a, &self.b] {
                assert!(
                    matches!(side.store.stat(hash), Ok(BlobStat::Present { .. })),
                    "{} lacks {hash} after the repair",
                    side.id
                );
            }
        }
        for side in [&self.a, &self.b] {
            assert_eq!(side.store.stats().blob_count, self.hashes.len() as u64);
        }
        exchange
    }
}

/// Agreement and repair figures.
#[derive(Default)]
struct PairResults {
    blobs: usize,
    load_s: f64,
    table_builds: Vec<Duration>,
    first: Option<Exchange>,
    cold: Vec<Exchange>,
    warm: Vec<Exchange>,
    /// Per repair count, one exchange per round.
    repairs: BTreeMap<usize, Vec<Exchange>>,
}

fn run_pair(scale: &Scale, scratch: &Path) -> PairResults {
    let mut results = PairResults {
        blobs: scale.agreement_blobs,
        ..PairResults::default()
    };
    let started = Instant::now();
    let mut pair = Pair::load(scratch, scale.agreement_blobs);
    results.load_s = pair.load_s;
    eprintln!(
        "pair: {} blobs loaded in {:.1} s, hand-off pass done at {:.1} s",
        scale.agreement_blobs,
        pair.load_s,
        started.elapsed().as_secs_f64()
    );
    if scale.wants("agreement") {
        for round in 0..scale.rounds {
            pair.invalidate_summaries();
            let cold = pair.session();
            assert_eq!(cold.copies, 0, "identical replicas copy nothing");
            if round == 0 {
                results.first = Some(cold);
            }
            results.cold.push(cold);
            for _ in 0..WARM_SESSIONS_PER_ROUND {
                pair.warm_summaries();
                results.warm.push(pair.session());
            }
            results.table_builds.push(pair.summary_table_build());
        }
    }
    for count in REPAIR_COUNTS {
        if !scale.wants(&format!("repair_{count}")) {
            continue;
        }
        let rounds = (0..scale.rounds).map(|r| pair.repair(count, r)).collect();
        results.repairs.insert(count, rounds);
    }
    results
}

impl PairResults {
    /// Whether the warm sessions did reuse the tables built before them: a build that takes
    /// longer than `SNAPSHOT_AGE_MS_MAX` leaves the first table stale by the time the second
    /// is done, and the session builds it again.
    fn warm_reused_tables(&self) -> bool {
        median_of(&self.warm, |e| ms(e.elapsed)) < median_of(&self.table_builds, |d| ms(*d)) / 2.0
    }

    fn json(&self) -> Value {
        let repairs: Vec<Value> = self
            .repairs
            .iter()
            .map(|(count, rounds)| {
                json!({
                    "missing_blobs": count,
                    "checked": "both stores hold every blob afterwards",
                    "median_ms": median_of(rounds, |e| ms(e.elapsed)),
                    "median_message_bytes": median_of(rounds, |e| e.message_bytes as f64),
                    "median_round_trips": median_of(rounds, |e| e.round_trips as f64),
                    "rounds": rounds.iter().map(Exchange::json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let agreement = self.first.map(|first| {
            json!({
                "first_session": first.json(),
                "cold_sessions": exchanges_json(&self.cold),
                "warm_sessions": exchanges_json(&self.warm),
                "warm_sessions_reused_tables": self.warm_reused_tables(),
                "summary_cache_ms_max": SNAPSHOT_AGE_MS_MAX,
                "summary_table_build_ms": {
                    "median": median_of(&self.table_builds, |d| ms(*d)),
                    "rounds": self.table_builds.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
                },
            })
        });
        json!({
            "blobs_per_store": self.blobs,
            "blob_bytes": SMALL_BLOB_BYTES,
            "load_seconds": self.load_s,
            "agreement": agreement,
            "repair": repairs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Re-replication after a node loss, against raw QUIC.
// ---------------------------------------------------------------------------------------------

/// One round of the re-replication case and its baselines.
#[derive(Clone, Debug, Default)]
struct RereplicationSample {
    blobs: usize,
    load_mb_per_s: f64,
    /// Copies that had to be made: (blob, node) pairs of the new layout's placement whose node
    /// lacked the blob after the loss.
    copies_needed: usize,
    bytes_needed: u64,
    /// Blobs whose replicas included the lost node, times their size.
    lost_copy_bytes: u64,
    seconds: f64,
    /// Applying the layout to every survivor at once (the first builds the placement table the
    /// others share); healing starts on a node as soon as it adopted.
    apply_ms: f64,
    /// From the layout change to the first copy found in place.
    first_copy_ms: f64,
    /// Share of polls during which some node had a copy in flight.
    active_fraction: f64,
    /// Most copies in flight at once, over every node.
    in_flight_max: u64,
    /// Bytes the healers copied (`moved_bytes`, summed over nodes, once every copy ended).
    moved_bytes: u64,
    cpu_cores: Option<f64>,
    fsyncs: u64,
    raw_parallel_mb_per_s: f64,
    raw_parallel_cpu_cores: Option<f64>,
    raw_one_stream_mb_per_s: f64,
}

impl RereplicationSample {
    fn mb_per_s(&self) -> f64 {
        self.bytes_needed as f64 / self.seconds / 1e6
    }

    /// Seconds after the last survivor adopted the layout.
    fn copy_phase_s(&self) -> f64 {
        self.seconds - self.apply_ms / 1e3
    }

    /// Throughput once every survivor runs the new layout.
    fn copy_phase_mb_per_s(&self) -> f64 {
        self.bytes_needed as f64 / self.copy_phase_s() / 1e6
    }

    /// Bytes the healers copied, duplicates included, once every survivor runs the new layout.
    fn moved_mb_per_s(&self) -> f64 {
        self.moved_bytes as f64 / self.copy_phase_s() / 1e6
    }

    fn duplication(&self) -> f64 {
        self.moved_bytes as f64 / self.bytes_needed as f64
    }

    fn ratio_parallel(&self) -> f64 {
        self.mb_per_s() / self.raw_parallel_mb_per_s
    }

    fn ratio_one_stream(&self) -> f64 {
        self.mb_per_s() / self.raw_one_stream_mb_per_s
    }

    fn json(&self) -> Value {
        json!({
            "blobs": self.blobs,
            "load_mb_per_s": self.load_mb_per_s,
            "copies_needed": self.copies_needed,
            "bytes_needed": self.bytes_needed,
            "lost_copy_bytes": self.lost_copy_bytes,
            "seconds": self.seconds,
            "mb_per_s": self.mb_per_s(),
            "apply_layout_ms": self.apply_ms,
            "first_copy_ms": self.first_copy_ms,
            "active_fraction": self.active_fraction,
            "in_flight_max": self.in_flight_max,
            "moved_bytes": self.moved_bytes,
            "moved_over_needed": self.duplication(),
            "copy_phase_mb_per_s": self.copy_phase_mb_per_s(),
            "moved_mb_per_s": self.moved_mb_per_s(),
            "cpu_cores": self.cpu_cores,
            "fsyncs": self.fsyncs,
            "raw_parallel_mb_per_s": self.raw_parallel_mb_per_s,
            "raw_parallel_cpu_cores": self.raw_parallel_cpu_cores,
            "raw_one_stream_mb_per_s": self.raw_one_stream_mb_per_s,
            "ratio_to_raw_parallel": self.ratio_parallel(),
            "ratio_to_raw_one_stream": self.ratio_one_stream(),
        })
    }
}

fn cluster_spec(base_port: u16) -> ClusterSpec {
    let mut spec = ClusterSpec::local(NODE_COUNT, ZONE_COUNT, [127, 0, 0, 1], base_port);
    spec.replication_factor = REPLICATION_FACTOR;
    spec.write_quorum = WRITE_QUORUM;
    spec.heal = HealSettings {
        anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL_MS,
        handoff_interval_ms: HANDOFF_INTERVAL_MS,
        request_timeout_ms: HEAL_REQUEST_TIMEOUT_MS,
        transfers_in_flight_max: TRANSFERS_IN_FLIGHT,
        bandwidth_bytes_per_sec: 0,
        scrub_bytes_per_sec: 0,
        ..HealSettings::default()
    };
    spec.failure_detector = FailureDetectorSettings {
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        suspect_after_ms: SUSPECT_AFTER_MS,
        down_after_ms: DOWN_AFTER_MS,
    };
    spec
}

fn holds(node: &Node, hash: &Hash) -> bool {
    matches!(node.store().stat(hash), Ok(BlobStat::Present { .. }))
}

/// (blob, node) pairs of `routing`'s placement whose node (running, in `nodes`) lacks the blob.
fn missing_copies(
    routing: &Routing,
    nodes: &[Option<Node>],
    hashes: &[Hash],
) -> Vec<(usize, usize)> {
    let mut missing = Vec::new();
    for (b, hash) in hashes.iter().enumerate() {
        for spec in routing.replicas(hash) {
            let n = nodes
                .iter()
                .position(|n| n.as_ref().is_some_and(|n| n.id() == spec.id))
                .expect("every replica is a running node");
            if !holds(nodes[n].as_ref().expect("running"), hash) {
                missing.push((b, n));
            }
        }
    }
    missing
}

/// Writes back every dirty page, so loading's writeback does not run during a measurement.
async fn settle() {
    tokio::task::spawn_blocking(sync_all_file_systems)
        .await
        .expect("sync task")
        .expect("sync");
}

/// `streams` streams of one `BLOB_BYTES` payload each, `TRANSFERS_IN_FLIGHT` at a time:
/// (MB/s, CPU cores).
async fn raw_parallel(raw: &RawQuic, streams: usize) -> (f64, Option<f64>) {
    let payload = Bytes::from(blob(BLOB_BYTES, 0xb0));
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let mut running = JoinSet::new();
    for _ in 0..streams {
        if running.len() >= TRANSFERS_IN_FLIGHT {
            running
                .join_next()
                .await
                .expect("a stream")
                .expect("stream");
        }
        let (conn, payload) = (raw.conn.clone(), payload.clone());
        running.spawn(async move { sink(&conn, [payload]).await });
    }
    while let Some(done) = running.join_next().await {
        done.expect("stream");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| (after - before) / elapsed);
    ((streams * BLOB_BYTES) as f64 / elapsed / 1e6, cpu)
}

/// One stream carrying `chunks` payloads of `BLOB_BYTES`: MB/s.
async fn raw_one_stream(raw: &RawQuic, chunks: usize) -> f64 {
    let payload = Bytes::from(blob(BLOB_BYTES, 0xb1));
    let started = Instant::now();
    sink(&raw.conn, std::iter::repeat_n(payload, chunks)).await;
    (chunks * BLOB_BYTES) as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Puts `count` fresh 1 MiB blobs, `LOAD_IN_FLIGHT` at a time; returns their hashes.
async fn load_cluster(client: &Client, count: usize, round: usize) -> Vec<Hash> {
    let base = blob(BLOB_BYTES, 0x4ea1);
    let mut hashes = Vec::with_capacity(count);
    let mut running = JoinSet::new();
    for i in 0..count {
        if running.len() >= LOAD_IN_FLIGHT {
            hashes.push(running.join_next().await.expect("a put").expect("put task"));
        }
        let mut bytes = base.clone();
        stamp(&mut bytes, ((round as u64) << 32) | i as u64);
        let client = client.clone();
        running.spawn(async move { client.put(bytes).await.expect("put a blob") });
    }
    while let Some(done) = running.join_next().await {
        hashes.push(done.expect("put task"));
    }
    hashes
}

async fn rereplication_round(
    scratch: &Path,
    loaded_bytes: usize,
    round: usize,
) -> RereplicationSample {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cluster-{round}-"))
        .tempdir_in(scratch)
        .expect("create cluster directory");
    let base_port = free_base_port(PORT_SEARCH_START, NODE_COUNT);
    let spec = cluster_spec(base_port);
    let files: ClusterFiles = write_cluster(dir.path(), &spec).expect("write cluster files");
    let mut nodes: Vec<Option<Node>> = Vec::with_capacity(NODE_COUNT);
    for path in &files.node_configs {
        let config = NodeConfig::load(path).expect("load node configuration");
        nodes.push(Some(Node::start(&config).await.expect("start node")));
    }
    let layout = cairn_client::load_layout(&files.layout).expect("load layout");
    let client_tls = files.client_tls();
    let identity = Identity::load(&client_tls.ca, &client_tls.cert, &client_tls.key)
        .expect("load client identity");
    let options = ClientOptions {
        zone: Some(CLIENT_ZONE.to_string()),
        deadline_ms: CLIENT_DEADLINE_MS,
        ..ClientOptions::default()
    };
    let client = Client::connect(layout.clone(), &identity, options)
        .await
        .expect("connect client");

    let count = loaded_bytes / BLOB_BYTES;
    let started = Instant::now();
    let hashes = load_cluster(&client, count, round).await;
    let load_mb_per_s = loaded_bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    let old_routing = Routing::new(layout.clone()).expect("routing");
    let waited = Instant::now();
    while !missing_copies(&old_routing, &nodes, &hashes).is_empty() {
        assert!(
            waited.elapsed() < Duration::from_millis(LOAD_REPLICATED_TIMEOUT_MS),
            "the loaded blobs did not reach all their replicas"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
    client.close().await;

    // What the loss of the node will leave to copy: every copy the new layout places on a
    // surviving node that does not hold it yet.
    let next = remove_node(&layout, LOST_NODE).expect("layout without the lost node");
    let new_routing = Routing::new(next.clone()).expect("routing");
    let lost_index = nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.id() == LOST_NODE))
        .expect("the lost node runs");
    let lost_copy_bytes = hashes
        .iter()
        .filter(|h| old_routing.replicas(h).iter().any(|n| n.id == LOST_NODE))
        .count() as u64
        * BLOB_BYTES as u64;

    settle().await;
    let raw = RawQuic::start(&files).await;
    // Handshake done; one wave opens the flow-control windows before measuring.
    let _ = raw_parallel(&raw, TRANSFERS_IN_FLIGHT).await;

    let lost = nodes[lost_index].take().expect("running");
    lost.shutdown().await;
    let mut pending = missing_copies(&new_routing, &nodes, &hashes);
    // Routings of one layout in one process share its placement table: the benchmark's must
    // be gone before the survivors adopt, so that they build the table on the clock.
    drop(new_routing);
    let copies_needed = pending.len();
    assert!(
        copies_needed > 0,
        "losing {LOST_NODE} leaves copies to make"
    );
    let baseline_streams = copies_needed.max(TRANSFERS_IN_FLIGHT);
    let (raw_parallel_mb_per_s, raw_parallel_cpu_cores) =
        raw_parallel(&raw, baseline_streams).await;
    let raw_one_stream_mb_per_s = raw_one_stream(&raw, baseline_streams).await;
    raw.shutdown().await;
    settle().await;

    let survivors: Vec<&Node> = nodes.iter().flatten().collect();
    let fsyncs_before: u64 = survivors
        .iter()
        .map(|n| n.store().stats().fsync_count)
        .sum();
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    // Every survivor at once, as `cairn layout apply` offers it; each adoption blocks while
    // the node builds its placement table.
    std::thread::scope(|scope| {
        for &node in &survivors {
            let next = next.clone();
            scope.spawn(move || {
                // A node may have learned the layout from a peer's heartbeat already.
                if node.layout().version < next.version {
                    match node.apply_layout(next) {
                        Ok(()) | Err(NodeError::LayoutNotNewer { .. }) => {}
                        Err(e) => panic!("{}: cannot apply the layout: {e}", node.id()),
                    }
                }
            });
        }
    });
    let apply_ms = ms(started.elapsed());
    let mut first_copy_ms = None;
    let (mut polls, mut active_polls, mut in_flight_max) = (0u64, 0u64, 0u64);
    while !pending.is_empty() {
        let timeout = Duration::from_millis(REREPLICATION_TIMEOUT_MS);
        assert!(
            started.elapsed() < timeout,
            "re-replication did not finish in {REREPLICATION_TIMEOUT_MS} ms: {} of \
             {copies_needed} copies still missing",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        let in_flight: u64 = survivors
            .iter()
            .map(|n| n.status().transfers_in_flight)
            .sum();
        polls += 1;
        active_polls += u64::from(in_flight > 0);
        in_flight_max = in_flight_max.max(in_flight);
        let before = pending.len();
        pending.retain(|&(b, n)| !holds(nodes[n].as_ref().expect("running"), &hashes[b]));
        if pending.len() < before && first_copy_ms.is_none() {
            first_copy_ms = Some(ms(started.elapsed()));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_cores = process_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| (after - before) / elapsed);
    let fsyncs_after: u64 = survivors
        .iter()
        .map(|n| n.store().stats().fsync_count)
        .sum();
    // Copies still running (a blob copied to one node by two peers) end before the count.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(QUIESCE_TIMEOUT_MS)
        && survivors.iter().any(|n| {
            let s = n.status();
            s.transfers_in_flight + s.transfers_queued > 0
        })
    {
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
    let moved_bytes = survivors
        .iter()
        .map(|n| n.status().report.moved_bytes)
        .sum();
    drop(survivors);
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
    drop(dir);
    RereplicationSample {
        blobs: count,
        load_mb_per_s,
        copies_needed,
        bytes_needed: (copies_needed * BLOB_BYTES) as u64,
        lost_copy_bytes,
        seconds: elapsed,
        apply_ms,
        first_copy_ms: first_copy_ms.unwrap_or(f64::NAN),
        active_fraction: active_polls as f64 / polls.max(1) as f64,
        in_flight_max,
        moved_bytes,
        cpu_cores,
        fsyncs: fsyncs_after - fsyncs_before,
        raw_parallel_mb_per_s,
        raw_parallel_cpu_cores,
        raw_one_stream_mb_per_s,
    }
}

fn rereplication_json(samples: &[RereplicationSample], loaded_bytes: usize) -> Value {
    let cores = |s: &RereplicationSample| s.cpu_cores.unwrap_or(f64::NAN);
    json!({
        "nodes": NODE_COUNT,
        "zones": ZONE_COUNT,
        "replication_factor": REPLICATION_FACTOR,
        "write_quorum": WRITE_QUORUM,
        "lost_node": LOST_NODE,
        "blob_bytes": BLOB_BYTES,
        "loaded_bytes": loaded_bytes,
        "heal_settings": {
            "anti_entropy_interval_ms": ANTI_ENTROPY_INTERVAL_MS,
            "handoff_interval_ms": HANDOFF_INTERVAL_MS,
            "request_timeout_ms": HEAL_REQUEST_TIMEOUT_MS,
            "transfers_in_flight_max": TRANSFERS_IN_FLIGHT,
            "bandwidth_bytes_per_sec": 0,
            "scrub_bytes_per_sec": 0,
        },
        "failure_detector": {
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "suspect_after_ms": SUSPECT_AFTER_MS,
            "down_after_ms": DOWN_AFTER_MS,
        },
        "median_of_rounds": {
            "seconds": median_of(samples, |s| s.seconds),
            "mb_per_s": median_of(samples, RereplicationSample::mb_per_s),
            "apply_layout_ms": median_of(samples, |s| s.apply_ms),
            "first_copy_ms": median_of(samples, |s| s.first_copy_ms),
            "active_fraction": median_of(samples, |s| s.active_fraction),
            "moved_over_needed": median_of(samples, RereplicationSample::duplication),
            "copy_phase_mb_per_s": median_of(samples, RereplicationSample::copy_phase_mb_per_s),
            "moved_mb_per_s": median_of(samples, RereplicationSample::moved_mb_per_s),
            "cpu_cores": median_of(samples, cores),
            "raw_parallel_mb_per_s": median_of(samples, |s| s.raw_parallel_mb_per_s),
            "raw_one_stream_mb_per_s": median_of(samples, |s| s.raw_one_stream_mb_per_s),
            "ratio_to_raw_parallel": median_of(samples, RereplicationSample::ratio_parallel),
            "ratio_to_raw_one_stream": median_of(samples, RereplicationSample::ratio_one_stream),
        },
        "rounds": samples.iter().map(RereplicationSample::json).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// Summary.
// ---------------------------------------------------------------------------------------------

fn main() {
    let scale = Scale::from_env();
    let out = target_dir().join("cairn-bench");
    let scratch = out.join("healing-tmp");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).expect("remove old scratch directory");
    }
    std::fs::create_dir_all(&scratch).expect("create scratch directory");
    let load_at_start = load_average();
    let started = Instant::now();

    let pair =
        (scale.wants("agreement") || scale.wants("repair")).then(|| run_pair(&scale, &scratch));
    let mut rereplication = Vec::new();
    if scale.wants("rereplication") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        for round in 0..scale.rounds {
            let began = Instant::now();
            let sample = runtime.block_on(rereplication_round(&scratch, scale.loaded_bytes, round));
            eprintln!(
                "re-replication round {} of {}: {:.1} MB/s ({:.2} of raw) in {:.1} s",
                round + 1,
                scale.rounds,
                sample.mb_per_s(),
                sample.ratio_parallel(),
                began.elapsed().as_secs_f64()
            );
            rereplication.push(sample);
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let load_at_end = load_average();
    let _ = std::fs::remove_dir_all(&scratch);

    print_summary(
        &scale,
        pair.as_ref(),
        &rereplication,
        (load_at_start, load_at_end),
        elapsed_s,
    );
    if !scale.measuring {
        return;
    }
    let goal = (!rereplication.is_empty()).then(|| {
        let per_round: Vec<f64> = rereplication
            .iter()
            .map(RereplicationSample::ratio_parallel)
            .collect();
        let value = median(&mut per_round.clone());
        json!({
            "goal": format!(
                "re-replication MB/s over raw QUIC MB/s ({TRANSFERS_IN_FLIGHT} x 1 MiB streams in \
                 flight), unthrottled"
            ),
            "target": format!(">= {GOAL_REREPLICATION_FRACTION_OF_RAW:.2}"),
            "value": value,
            "per_round": per_round,
            "met": value >= GOAL_REREPLICATION_FRACTION_OF_RAW,
        })
    });
    let summary = json!({
        "quick": scale.quick,
        "rounds": scale.rounds,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "seconds": elapsed_s,
        "load_average_1_5_15_min": {"at_start": load_at_start, "at_end": load_at_end},
        "units": {
            "ms": "wall-clock milliseconds",
            "message_bytes": "postcard bytes of every HealMsg of the session, both ways",
            "round_trips": "requests of the session, each answered before the next",
            "mb_per_s": "10^6 bytes per second",
            "cpu_cores": "process CPU time over wall-clock time: every node and the baseline \
                          run in this process",
            "median_of_rounds": "the median over rounds of each round's figure",
            "ratios": "the median over rounds of the ratio within each round",
        },
        "pair": pair.as_ref().map(PairResults::json),
        "rereplication": (!rereplication.is_empty())
            .then(|| rereplication_json(&rereplication, scale.loaded_bytes)),
        "goal": goal,
    });
    let name = if scale.only.is_some() {
        "healing-partial.json"
    } else if scale.quick {
        "healing-quick.json"
    } else {
        "healing.json"
    };
    let path = out.join(name);
    let text = serde_json::to_string_pretty(&summary).expect("encode summary");
    std::fs::write(&path, text + "\n").expect("write summary");
    println!("summary written to {}", path.display());
}

fn print_summary(
    scale: &Scale,
    pair: Option<&PairResults>,
    rereplication: &[RereplicationSample],
    (load_at_start, load_at_end): (Option<[f64; 3]>, Option<[f64; 3]>),
    elapsed_s: f64,
) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let three = |v: Option<[f64; 3]>| {
        v.map_or_else(
            || "n/a".to_string(),
            |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
        )
    };
    println!();
    println!(
        "Cairn healing ({} run, median of {} round(s), {elapsed_s:.0} s); load average 1/5/15 \
         min ({cores} cores): at start {}, at end {}",
        if scale.quick { "QUICK" } else { "full" },
        scale.rounds,
        three(load_at_start),
        three(load_at_end),
    );
    if let Some(p) = pair {
        println!();
        println!(
            "Two replicas of {} blobs of {SMALL_BLOB_BYTES} B, healers exchanging messages in \
             memory:",
            p.blobs
        );
        println!(
            "{:<52} {:>10} {:>10} {:>11} {:>7}  ms per round",
            "case", "ms", "msg bytes", "round trips", "copies"
        );
        let row = |label: &str, sessions: &[Exchange]| {
            let per: Vec<String> = sessions
                .iter()
                .map(|e| format!("{:.2}", ms(e.elapsed)))
                .collect();
            let shown = if per.len() > 6 {
                format!("{} ...", per[..6].join(" "))
            } else {
                per.join(" ")
            };
            println!(
                "{label:<52} {:>10.3} {:>10.0} {:>11.0} {:>7.0}  {shown}",
                median_of(sessions, |e| ms(e.elapsed)),
                median_of(sessions, |e| e.message_bytes as f64),
                median_of(sessions, |e| e.round_trips as f64),
                median_of(sessions, |e| e.copies as f64),
            );
        };
        if let Some(first) = p.first {
            row("agreement: first session (builds summary tables)", &[first]);
            row("agreement: cold sessions (tables rebuilt)", &p.cold);
            row(
                "agreement: warm sessions (tables built just before)",
                &p.warm,
            );
            println!(
                "{:<52} {:>10.3}",
                "  summary table build, one side",
                median_of(&p.table_builds, |d| ms(*d))
            );
            if !p.warm_reused_tables() {
                println!(
                    "  (a table build outlasts the catalog's {SNAPSHOT_AGE_MS_MAX} ms cache: the \
                     warm sessions rebuilt a table, and every summary request does)"
                );
            }
        }
        for (count, rounds) in &p.repairs {
            row(
                &format!("repair of {count} missing blobs (checked)"),
                rounds,
            );
        }
    }
    if !rereplication.is_empty() {
        let s = rereplication;
        println!();
        println!(
            "Re-replication after losing {LOST_NODE}: {NODE_COUNT} nodes in {ZONE_COUNT} zones, \
             factor {REPLICATION_FACTOR}, {} MiB of {} MiB blobs loaded; raw QUIC in the same round",
            scale.loaded_bytes / MIB,
            BLOB_BYTES / MIB
        );
        let per = |f: &dyn Fn(&RereplicationSample) -> f64, d: usize| {
            s.iter()
                .map(|x| format!("{:.d$}", f(x)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let line = |label: &str, f: &dyn Fn(&RereplicationSample) -> f64, d: usize| {
            println!(
                "{label:<52} {:>10.d$}  per round: {}",
                median_of(s, f),
                per(f, d)
            );
        };
        line("copies needed (1 MiB each)", &|x| x.copies_needed as f64, 0);
        line(
            "lost copies, MiB",
            &|x| x.lost_copy_bytes as f64 / MIB as f64,
            0,
        );
        line("seconds to full replication", &|x| x.seconds, 2);
        line("re-replication MB/s", &RereplicationSample::mb_per_s, 1);
        line(
            &format!("raw QUIC MB/s, {TRANSFERS_IN_FLIGHT} x 1 MiB streams in flight"),
            &|x| x.raw_parallel_mb_per_s,
            1,
        );
        line(
            "raw QUIC MB/s, one stream",
            &|x| x.raw_one_stream_mb_per_s,
            1,
        );
        line(
            "ratio to raw (parallel streams)",
            &RereplicationSample::ratio_parallel,
            3,
        );
        line(
            "ratio to raw (one stream)",
            &RereplicationSample::ratio_one_stream,
            3,
        );
        line(
            "layout applied to all survivors after, ms",
            &|x| x.apply_ms,
            0,
        );
        line("first copy in place after, ms", &|x| x.first_copy_ms, 0);
        line(
            "share of time with copies in flight",
            &|x| x.active_fraction,
            2,
        );
        line(
            "most copies in flight, all nodes",
            &|x| x.in_flight_max as f64,
            0,
        );
        line(
            "bytes copied over bytes needed",
            &RereplicationSample::duplication,
            2,
        );
        line(
            "after the last adoption: needed MB/s",
            &RereplicationSample::copy_phase_mb_per_s,
            1,
        );
        line(
            "after the last adoption: copied MB/s (duplicates too)",
            &RereplicationSample::moved_mb_per_s,
            1,
        );
        line(
            "cpu cores busy (re-replication)",
            &|x| x.cpu_cores.unwrap_or(f64::NAN),
            2,
        );
        line(
            "cpu cores busy (raw QUIC, parallel)",
            &|x| x.raw_parallel_cpu_cores.unwrap_or(f64::NAN),
            2,
        );
        line("fsyncs during re-replication", &|x| x.fsyncs as f64, 0);
        line("client load MB/s (factor 3)", &|x| x.load_mb_per_s, 1);
        let mut ratios: Vec<f64> = s.iter().map(RereplicationSample::ratio_parallel).collect();
        let value = median(&mut ratios);
        println!();
        println!(
            "goal: re-replication over raw QUIC ({TRANSFERS_IN_FLIGHT} streams) >= \
             {GOAL_REREPLICATION_FRACTION_OF_RAW:.2}: {value:.3} {}",
            if value >= GOAL_REREPLICATION_FRACTION_OF_RAW {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
