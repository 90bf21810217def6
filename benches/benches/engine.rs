//! Cairn's engine benchmarks, each measured side by side with the one-file-per-blob baseline in
//! the same run: durable puts, hot gets, opening a large store, the index's memory per blob, and
//! the disk's raw O_DIRECT write bandwidth for scale; and hashing a stream that arrives in
//! packet-sized pieces, batched against piece by piece. Writes a JSON summary to
//! `<target>/cairn-bench/engine.json` and prints a table with each goal marked met or not.
//!
//! `CAIRN_BENCH_QUICK=1` shrinks every case for a smoke run; `CAIRN_BENCH_ONLY=<text>` runs only
//! the cases whose group name contains `<text>` (its summary goes to `engine-partial.json`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cairn_benches::{
    CountingAllocator, DdRun, NaiveFileStore, PairedRatio, SampleLog, blob, dd_direct_write, fill,
    io_pressure, load_average, median, stamp, sync_all_file_systems, target_dir, unique_id,
};
use cairn_engine::{Config, Hash, RecoveryReport, Store, StreamHasher, SyncMode};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use serde_json::{Value, json};
use tempfile::TempDir;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator::new();

/// Samples per benchmark (criterion's minimum); the medians below are over these.
const SAMPLE_COUNT: usize = 10;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Durable put cases: (blob bytes, concurrent writers).
const PUT_CASES: [(usize, usize); 7] = [
    (4 * KIB, 1),
    (4 * KIB, 32),
    (64 * KIB, 1),
    (64 * KIB, 32),
    (MIB, 1),
    (MIB, 4),
    (MIB, 32),
];
/// The streaming-hash case: bytes hashed per iteration, in pieces of about one QUIC packet's
/// payload (how a replica's writer and the client's reads get them).
const STREAM_HASH_BYTES: usize = 4 * MIB;
const STREAM_HASH_PIECE_BYTES: usize = 1200;
/// Blob size of the store that the open and index-memory cases load.
const OPEN_BLOB_BYTES: usize = 100;
/// Shared segment size of that store: small enough that nearly all of it sits in sealed
/// segments, which open from their hint files.
const OPEN_SEGMENT_BYTES: u64 = 16 * MIB as u64;
/// Store sizes the open and index goals are stated for.
const GOAL_OPEN_BLOBS: u64 = 1_000_000;
const GOAL_OPEN_SECONDS: f64 = 1.0;
const GOAL_INDEX_BYTES_PER_BLOB: f64 = 48.0;

/// How big and how long everything is.
struct Scale {
    quick: bool,
    /// Run by `cargo bench` (criterion is measuring), not as a test.
    measuring: bool,
    warm_up: Duration,
    measurement: Duration,
    dd_mib: u64,
    /// Alternating pairs of batches for each case's paired ratio, and each batch's length.
    pairs: usize,
    pair_batch: Duration,
    /// Distinct blobs the hot-get cases cycle through: (4 KiB count, 1 MiB count).
    get_blobs: (usize, usize),
    open_blobs: u64,
    baseline_files: u64,
    /// `CAIRN_BENCH_ONLY`: run only the cases whose criterion group name contains this.
    only: Option<String>,
}

impl Scale {
    fn from_env() -> Scale {
        let quick_env = std::env::var("CAIRN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let measuring = std::env::args().any(|a| a == "--bench");
        let only = std::env::var("CAIRN_BENCH_ONLY")
            .ok()
            .filter(|v| !v.is_empty());
        if quick_env || !measuring {
            Scale {
                quick: true,
                measuring,
                warm_up: Duration::from_millis(100),
                measurement: Duration::from_millis(300),
                dd_mib: 256,
                pairs: 5,
                pair_batch: Duration::from_millis(30),
                get_blobs: (4096, 16),
                open_blobs: 100_000,
                baseline_files: 20_000,
                only,
            }
        } else {
            Scale {
                quick: false,
                measuring,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(3),
                dd_mib: 1024,
                pairs: 10,
                pair_batch: Duration::from_millis(150),
                get_blobs: (4096, 64),
                open_blobs: GOAL_OPEN_BLOBS,
                // Creating and deleting a million small files takes minutes on a disk mounted
                // with online discard; the walk is compared per file instead.
                baseline_files: 100_000,
                only,
            }
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.as_ref().is_none_or(|only| group.contains(only))
    }

    fn configure(&self, group: &mut BenchmarkGroup<'_, WallTime>, mode: SamplingMode) {
        group
            .sample_size(SAMPLE_COUNT)
            .warm_up_time(self.warm_up)
            .measurement_time(self.measurement)
            .sampling_mode(mode);
    }
}

/// Where every case keeps its data: on the real disk, under the target directory.
struct Dirs {
    out: PathBuf,
    scratch: PathBuf,
}

impl Dirs {
    fn create() -> Dirs {
        let out = target_dir().join("cairn-bench");
        let scratch = out.join("tmp");
        // Leftovers of an interrupted run.
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).expect("remove old scratch directory");
        }
        std::fs::create_dir_all(&scratch).expect("create scratch directory");
        Dirs { out, scratch }
    }

    /// A fresh directory for one case, removed when dropped.
    fn case(&self, prefix: &str) -> TempDir {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.scratch)
            .expect("create case directory")
    }
}

/// One side of a case: the median time of one iteration and what an iteration does.
#[derive(Clone, Copy)]
struct Side {
    ns_per_iter: f64,
    elements_per_iter: u64,
    bytes_per_iter: u64,
}

impl Side {
    fn from_log(log: &SampleLog, elements_per_iter: u64, bytes_per_iter: u64) -> Option<Side> {
        Some(Side {
            ns_per_iter: log.median_ns_per_iter(SAMPLE_COUNT)?,
            elements_per_iter,
            bytes_per_iter,
        })
    }

    fn ops_per_s(&self) -> f64 {
        self.elements_per_iter as f64 * 1e9 / self.ns_per_iter
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes_per_iter as f64 * 1e9 / self.ns_per_iter / 1e6
    }

    fn json(&self) -> Value {
        json!({
            "median_ns_per_iteration": self.ns_per_iter,
            "ops_per_iteration": self.elements_per_iter,
            "ops_per_s": self.ops_per_s(),
            "mb_per_s": self.mb_per_s(),
        })
    }
}

/// A throughput case: Cairn and the baseline doing the same work.
struct Case {
    group: String,
    label: String,
    blob_bytes: usize,
    writers: usize,
    cairn: Option<Side>,
    baseline: Option<Side>,
    /// Cairn's speed-up measured in alternating pairs (what the goals are judged on).
    paired: Option<PairedRatio>,
    /// Durable puts: how many puts each of Cairn's fsyncs covered (group commit), warm-up
    /// included.
    cairn_puts_per_fsync: Option<f64>,
    /// Hot gets: how many distinct stored blobs the reads cycle through.
    distinct_blobs_read: Option<usize>,
}

impl Case {
    /// Cairn's throughput over the baseline's, from the two criterion medians.
    fn ratio(&self) -> Option<f64> {
        Some(self.cairn?.ops_per_s() / self.baseline?.ops_per_s())
    }

    /// The median of the paired ratios.
    fn paired_ratio(&self) -> Option<f64> {
        self.paired.as_ref().map(PairedRatio::median)
    }

    /// Cairn's MB/s over its batches of the paired phase.
    fn paired_cairn_mb_per_s(&self) -> Option<f64> {
        let bytes_per_iter = self.cairn?.bytes_per_iter as f64;
        Some(bytes_per_iter * 1e9 / self.paired.as_ref()?.cairn_median_ns() / 1e6)
    }

    fn json(&self) -> Value {
        json!({
            "criterion_group": self.group,
            "case": self.label,
            "blob_bytes": self.blob_bytes,
            "writers": self.writers,
            "cairn": self.cairn.map(|s| s.json()),
            "baseline": self.baseline.map(|s| s.json()),
            "ratio_cairn_over_baseline": self.ratio(),
            "paired_ratio": self.paired.as_ref().map(|p| json!({
                "median": p.median(),
                "min": p.min(),
                "max": p.max(),
                "pairs": p.pairs.len(),
                "cairn_median_ns_per_iteration": p.cairn_median_ns(),
                "baseline_median_ns_per_iteration": p.baseline_median_ns(),
                "ns_per_iteration_cairn_baseline": p.pairs,
            })),
            "cairn_puts_per_fsync": self.cairn_puts_per_fsync,
            "distinct_blobs_read": self.distinct_blobs_read,
        })
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes / KIB)
    }
}

/// Lets the disk go quiet before a measurement: writes back every dirty page and makes the file
/// systems commit, which also carries out the discards of the files that the previous case
/// removed. Without it, the tail of one case's cleanup lands in the next case's fsyncs.
fn settle() {
    sync_all_file_systems().expect("sync");
}

/// A case's paired ratio, with batches sized from the criterion medians; `None` if either side
/// was not measured.
fn pair(
    scale: &Scale,
    cairn: &dyn Fn(u64) -> Duration,
    baseline: &dyn Fn(u64) -> Duration,
    cairn_side: Option<Side>,
    baseline_side: Option<Side>,
) -> Option<PairedRatio> {
    let times = (cairn_side?.ns_per_iter, baseline_side?.ns_per_iter);
    settle();
    Some(PairedRatio::measure(
        cairn,
        baseline,
        times,
        scale.pair_batch,
        scale.pairs,
    ))
}

/// Runs `writers` threads that each put `rounds` fresh blobs of `blob_bytes` through `put`, and
/// returns the time from when all of them are ready until the last one finishes.
fn timed_puts(
    put: &(dyn Fn(&[u8]) + Sync),
    blob_bytes: usize,
    writers: usize,
    rounds: u64,
) -> Duration {
    let start_line = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let start_line = &start_line;
                s.spawn(move || {
                    let mut buf = blob(blob_bytes, w as u64);
                    start_line.wait();
                    for _ in 0..rounds {
                        stamp(&mut buf, unique_id());
                        put(&buf);
                    }
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer thread panicked");
        }
        start.elapsed()
    })
}

fn put_group(blob_bytes: usize, writers: usize) -> String {
    format!("put_{}_x{writers}", size_label(blob_bytes))
}

fn get_group(blob_bytes: usize) -> String {
    format!("get_{}", size_label(blob_bytes))
}

fn open_group(blob_count: u64) -> String {
    format!("open_{blob_count}")
}

/// Durable puts. One iteration is one round: each writer puts one fresh blob.
fn bench_put(
    c: &mut Criterion,
    scale: &Scale,
    dirs: &Dirs,
    blob_bytes: usize,
    writers: usize,
) -> Case {
    let group_name = put_group(blob_bytes, writers);
    let mut group = c.benchmark_group(&group_name);
    scale.configure(&mut group, SamplingMode::Flat);
    let elements = writers as u64;
    let bytes = (writers * blob_bytes) as u64;
    group.throughput(Throughput::ElementsAndBytes { elements, bytes });

    let cairn_dir = dirs.case("put-cairn-");
    let config = Config {
        sync: SyncMode::Always,
        ..Config::default()
    };
    let cairn = Store::open(cairn_dir.path(), config).expect("open Cairn store");
    let baseline_dir = dirs.case("put-baseline-");
    let baseline = NaiveFileStore::open(baseline_dir.path()).expect("open baseline store");
    let fsyncs_before = cairn.stats().fsync_count;
    let cairn_put = |b: &[u8]| {
        cairn.put(b).expect("Cairn put");
    };
    let baseline_put = |b: &[u8]| {
        baseline.put(b).expect("baseline put");
    };
    let cairn_rounds = |rounds| timed_puts(&cairn_put, blob_bytes, writers, rounds);
    let baseline_rounds = |rounds| timed_puts(&baseline_put, blob_bytes, writers, rounds);
    let cairn_log = SampleLog::default();
    let baseline_log = SampleLog::default();
    settle();
    group.bench_function("cairn", |b| {
        b.iter_custom(|rounds| {
            let elapsed = cairn_rounds(rounds);
            cairn_log.record(rounds, elapsed);
            elapsed
        })
    });
    settle();
    group.bench_function("baseline", |b| {
        b.iter_custom(|rounds| {
            let elapsed = baseline_rounds(rounds);
            baseline_log.record(rounds, elapsed);
            elapsed
        })
    });
    group.finish();
    let cairn_side = Side::from_log(&cairn_log, elements, bytes);
    let baseline_side = Side::from_log(&baseline_log, elements, bytes);
    let fsyncs = cairn.stats().fsync_count - fsyncs_before;
    let puts = cairn_log.total_iters() * writers as u64;
    let cairn_puts_per_fsync = (fsyncs > 0).then(|| puts as f64 / fsyncs as f64);
    let paired = pair(
        scale,
        &cairn_rounds,
        &baseline_rounds,
        cairn_side,
        baseline_side,
    );
    Case {
        label: format!(
            "durable put {} x{writers} writer{}",
            size_label(blob_bytes),
            if writers == 1 { "" } else { "s" }
        ),
        group: group_name,
        blob_bytes,
        writers,
        cairn: cairn_side,
        baseline: baseline_side,
        paired,
        cairn_puts_per_fsync,
        distinct_blobs_read: None,
    }
}

/// Times `iters` reads, cycling through `hashes`, each read handed to `get`.
fn timed_gets(hashes: &[Hash], iters: u64, get: impl Fn(&Hash)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        get(&hashes[i as usize % hashes.len()]);
    }
    start.elapsed()
}

/// Hot gets, single thread: every blob is stored and in the page cache before measuring.
fn bench_get(
    c: &mut Criterion,
    scale: &Scale,
    dirs: &Dirs,
    blob_bytes: usize,
    count: usize,
) -> Case {
    let group_name = get_group(blob_bytes);
    let mut group = c.benchmark_group(&group_name);
    scale.configure(&mut group, SamplingMode::Auto);
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: blob_bytes as u64,
    });
    let cairn_log = SampleLog::default();
    let cairn_dir = dirs.case("get-cairn-");
    let cairn = Store::open(
        cairn_dir.path(),
        Config {
            sync: SyncMode::Never,
            ..Config::default()
        },
    )
    .expect("open Cairn store");
    let baseline_dir = dirs.case("get-baseline-");
    let baseline = NaiveFileStore::open(baseline_dir.path()).expect("open baseline store");
    let mut hashes = Vec::with_capacity(count);
    let mut bytes = vec![0u8; blob_bytes];
    for i in 0..count as u64 {
        fill(&mut bytes, i);
        let hash = cairn.put(&bytes).expect("Cairn put");
        baseline.put_unsynced(&bytes).expect("baseline put");
        hashes.push(hash);
    }
    cairn.sync().expect("Cairn sync");
    settle();
    // Warm both into memory (page cache, mappings, directory entries).
    for h in &hashes {
        black_box(cairn.get(h).expect("Cairn get").expect("stored"));
        black_box(baseline.get(h).expect("baseline get").expect("stored"));
    }

    let cairn_gets = |iters| {
        timed_gets(&hashes, iters, |h| {
            let blob = cairn.get(h).expect("Cairn get").expect("stored");
            black_box(&*blob);
        })
    };
    let baseline_gets = |iters| {
        timed_gets(&hashes, iters, |h| {
            let bytes = baseline.get(h).expect("baseline get").expect("stored");
            black_box(&bytes[..]);
        })
    };
    group.bench_function("cairn", |b| {
        b.iter_custom(|iters| {
            let elapsed = cairn_gets(iters);
            cairn_log.record(iters, elapsed);
            elapsed
        })
    });
    let baseline_log = SampleLog::default();
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| {
            let elapsed = baseline_gets(iters);
            baseline_log.record(iters, elapsed);
            elapsed
        })
    });
    group.finish();
    let cairn_side = Side::from_log(&cairn_log, 1, blob_bytes as u64);
    let baseline_side = Side::from_log(&baseline_log, 1, blob_bytes as u64);
    let paired = pair(
        scale,
        &cairn_gets,
        &baseline_gets,
        cairn_side,
        baseline_side,
    );
    Case {
        label: format!("hot get {}", size_label(blob_bytes)),
        group: group_name,
        blob_bytes,
        writers: 1,
        cairn: cairn_side,
        baseline: baseline_side,
        paired,
        cairn_puts_per_fsync: None,
        distinct_blobs_read: Some(count),
    }
}

/// Puts `count` distinct small blobs into a fresh store in `dir` with `SyncMode::Never`, from two
/// threads, then closes it.
fn fill_cairn(dir: &Path, segment_bytes: u64, count: u64) {
    let config = Config {
        segment_bytes,
        sync: SyncMode::Never,
        ..Config::default()
    };
    let store = Store::open(dir, config).expect("open Cairn store");
    std::thread::scope(|s| {
        for t in 0..2 {
            let store = &store;
            s.spawn(move || {
                let mut buf = [0u8; OPEN_BLOB_BYTES];
                for i in (t..count).step_by(2) {
                    fill(&mut buf, i);
                    stamp(&mut buf, i);
                    store.put(&buf).expect("Cairn put");
                }
            });
        }
    });
    assert_eq!(store.stats().blob_count, count, "every blob stored");
}

/// The same blobs as `fill_cairn`, one file each, without fsyncs.
fn fill_baseline(store: &NaiveFileStore, count: u64) {
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                let mut buf = [0u8; OPEN_BLOB_BYTES];
                for i in (t..count).step_by(2) {
                    fill(&mut buf, i);
                    stamp(&mut buf, i);
                    store.put_unsynced(&buf).expect("baseline put");
                }
            });
        }
    });
}

fn open_config(segment_bytes: u64) -> Config {
    Config {
        segment_bytes,
        ..Config::default()
    }
}

/// What one Cairn store looked like when opened.
struct OpenedStore {
    label: &'static str,
    segment_bytes: u64,
    median_ms: Option<f64>,
    report: RecoveryReport,
}

impl OpenedStore {
    fn json(&self) -> Value {
        json!({
            "layout": self.label,
            "segment_bytes": self.segment_bytes,
            "median_open_ms": self.median_ms,
            "segments_opened": self.report.segments_opened,
            "hint_files_used": self.report.hint_files_used,
            "segments_scanned": self.report.segments_scanned,
            "blobs_indexed": self.report.blobs_indexed,
        })
    }
}

/// The index's heap cost, measured on a freshly opened store.
struct IndexMemory {
    blob_count: u64,
    heap_growth_bytes: usize,
    peak_extra_bytes: usize,
    index_heap_bytes: u64,
}

impl IndexMemory {
    fn measured_per_blob(&self) -> f64 {
        self.heap_growth_bytes as f64 / self.blob_count as f64
    }

    fn estimate_per_blob(&self) -> f64 {
        self.index_heap_bytes as f64 / self.blob_count as f64
    }

    fn json(&self) -> Value {
        json!({
            "blob_count": self.blob_count,
            "heap_growth_of_open_bytes": self.heap_growth_bytes,
            "heap_growth_bytes_per_blob": self.measured_per_blob(),
            "peak_heap_during_open_bytes": self.peak_extra_bytes,
            "stats_index_heap_bytes": self.index_heap_bytes,
            "stats_index_heap_bytes_per_blob": self.estimate_per_blob(),
        })
    }
}

struct OpenResults {
    blob_count: u64,
    stores: Vec<OpenedStore>,
    baseline_files: u64,
    baseline_walk_ms: Option<f64>,
    index: IndexMemory,
}

impl OpenResults {
    /// How many times faster Cairn learns what it holds than the baseline's directory walk,
    /// per blob (the same as the time ratio when both hold the same number of blobs).
    fn ratio(&self, cairn_ms: Option<f64>) -> Option<f64> {
        let cairn_per_blob = cairn_ms? / self.blob_count as f64;
        let baseline_per_blob = self.baseline_walk_ms? / self.baseline_files as f64;
        Some(baseline_per_blob / cairn_per_blob)
    }

    fn json(&self) -> Value {
        let cairn: Vec<Value> = self
            .stores
            .iter()
            .map(|s| {
                let mut v = s.json();
                v["ratio_baseline_walk_over_cairn_open_per_blob"] = json!(self.ratio(s.median_ms));
                v
            })
            .collect();
        let file_count_note = if self.baseline_files == self.blob_count {
            "as many files as the Cairn store holds blobs"
        } else {
            "fewer files than the Cairn store holds blobs (creating and removing that many files \
             takes minutes on this disk); the ratio compares time per blob"
        };
        json!({
            "blob_count": self.blob_count,
            "blob_bytes": OPEN_BLOB_BYTES,
            "cairn": cairn,
            "baseline_walk": {
                "what": "listing all 256 fan-out directories and parsing every name into a hash",
                "file_count": self.baseline_files,
                "file_count_note": file_count_note,
                "median_walk_ms": self.baseline_walk_ms,
            },
        })
    }
}

/// Opening a large store of small blobs, its index memory, and the baseline's directory walk.
fn bench_open(c: &mut Criterion, scale: &Scale, dirs: &Dirs) -> OpenResults {
    let n = scale.open_blobs;
    // One store laid out for hint files (all but the last segment sealed) and one with the
    // default segment size, whose blobs all sit in the open segment, which is scanned.
    // (label, criterion function id, segment bytes)
    let layouts = [
        ("hint files", "cairn_hint_files", OPEN_SEGMENT_BYTES),
        (
            "default segments",
            "cairn_default_segments",
            Config::default().segment_bytes,
        ),
    ];
    let store_dirs: Vec<TempDir> = layouts
        .iter()
        .map(|&(_, _, segment_bytes)| {
            let dir = dirs.case("open-cairn-");
            let started = Instant::now();
            fill_cairn(dir.path(), segment_bytes, n);
            println!(
                "built a Cairn store of {n} blobs ({segment_bytes}-byte segments) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            dir
        })
        .collect();
    let baseline_dir = dirs.case("open-baseline-");
    let baseline = NaiveFileStore::open(baseline_dir.path()).expect("open baseline store");
    let started = Instant::now();
    fill_baseline(&baseline, scale.baseline_files);
    println!(
        "built a baseline store of {} files in {:.1} s",
        scale.baseline_files,
        started.elapsed().as_secs_f64()
    );
    settle();

    // Index memory: heap held after opening, minus before, on the hint-file store.
    let before = HEAP.live_bytes();
    HEAP.reset_peak();
    let store = Store::open(store_dirs[0].path(), open_config(OPEN_SEGMENT_BYTES))
        .expect("open Cairn store");
    let after = HEAP.live_bytes();
    let peak = HEAP.peak_bytes();
    let stats = store.stats();
    assert_eq!(stats.blob_count, n, "every blob indexed");
    let index = IndexMemory {
        blob_count: stats.blob_count,
        heap_growth_bytes: after.saturating_sub(before),
        peak_extra_bytes: peak.saturating_sub(before),
        index_heap_bytes: stats.index_heap_bytes,
    };
    drop(store);

    let group_name = open_group(n);
    let mut group = c.benchmark_group(&group_name);
    scale.configure(&mut group, SamplingMode::Flat);
    group.throughput(Throughput::Elements(n));
    let mut stores = Vec::new();
    for (&(label, id, segment_bytes), dir) in layouts.iter().zip(&store_dirs) {
        let log = SampleLog::default();
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let store = Store::open(dir.path(), open_config(segment_bytes))
                        .expect("open Cairn store");
                    total += started.elapsed();
                    drop(store);
                }
                log.record(iters, total);
                total
            })
        });
        let store = Store::open(dir.path(), open_config(segment_bytes)).expect("open Cairn store");
        stores.push(OpenedStore {
            label,
            segment_bytes,
            median_ms: log.median_ns_per_iter(SAMPLE_COUNT).map(|ns| ns / 1e6),
            report: store.recovery_report().clone(),
        });
    }
    let walk_log = SampleLog::default();
    group.throughput(Throughput::Elements(scale.baseline_files));
    group.bench_function("baseline_walk", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let found = baseline.walk().expect("walk baseline store");
                assert_eq!(found.len() as u64, scale.baseline_files);
                black_box(found);
            }
            let elapsed = started.elapsed();
            walk_log.record(iters, elapsed);
            elapsed
        })
    });
    group.finish();
    OpenResults {
        blob_count: n,
        stores,
        baseline_files: scale.baseline_files,
        baseline_walk_ms: walk_log.median_ns_per_iter(SAMPLE_COUNT).map(|ns| ns / 1e6),
        index,
    }
}

/// The dd runs and their median bandwidth.
struct DiskBandwidth {
    runs: Vec<DdRun>,
    error: Option<String>,
}

impl DiskBandwidth {
    /// One more dd run (none once one has failed).
    fn measure(&mut self, scale: &Scale, dirs: &Dirs) {
        if self.error.is_some() {
            return;
        }
        let dir = dirs.case("dd-");
        settle();
        match dd_direct_write(dir.path(), scale.dd_mib) {
            Ok(run) => self.runs.push(run),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn json(&self, mib: u64) -> Value {
        json!({
            "command": format!(
                "dd if=/dev/zero of=<bench dir>/dd-direct-write.bin bs=1M count={mib} \
                 oflag=direct conv=fsync"
            ),
            "when": "at the start, then (full run) right before and right after the 1 MiB \
                     4-writer puts",
            "runs_mb_per_s": self.runs.iter().map(DdRun::mb_per_s).collect::<Vec<_>>(),
            "median_mb_per_s": self.median_mb_per_s(),
            "error": self.error,
        })
    }

    fn median_mb_per_s(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self.runs.iter().map(DdRun::mb_per_s).collect();
        (!rates.is_empty()).then(|| median(&mut rates))
    }
}

/// How busy the machine was when the run started (other work shares its cores and disk).
struct Conditions {
    load_at_start: Option<[f64; 3]>,
    io_pressure_at_start: Option<[f64; 3]>,
}

/// A goal the figures are judged against.
struct Goal {
    text: String,
    value: Option<f64>,
    /// `None` when not measured, or measured at a scale the goal is not stated for.
    met: Option<bool>,
}

impl Goal {
    fn new(text: &str, value: Option<f64>, met: Option<bool>) -> Goal {
        Goal {
            text: text.to_string(),
            value,
            met,
        }
    }

    fn json(&self) -> Value {
        json!({"goal": self.text, "value": self.value, "met": self.met})
    }
}

fn met(condition: Option<bool>) -> &'static str {
    match condition {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "n/a",
    }
}

fn fmt_side(side: Option<Side>) -> String {
    match side {
        Some(s) => format!("{:>10.0} ops/s {:>8.1} MB/s", s.ops_per_s(), s.mb_per_s()),
        None => "not measured".to_string(),
    }
}

fn fmt_opt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}{unit}"))
}

/// A stream hashed as it arrives: `StreamHasher` (batches of `HASH_BATCH_BYTES`), against
/// `blake3::Hasher` fed every piece as it comes, in alternating pairs of batches.
fn bench_stream_hash(scale: &Scale) -> PairedRatio {
    let bytes = blob(STREAM_HASH_BYTES, 7);
    let expected = Hash::of(&bytes);
    let batched = |iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            let mut h = StreamHasher::new();
            for piece in bytes.chunks(STREAM_HASH_PIECE_BYTES) {
                h.update(black_box(piece));
            }
            assert_eq!(h.finalize(), expected);
        }
        start.elapsed()
    };
    let piece_by_piece = |iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            let mut h = blake3::Hasher::new();
            for piece in bytes.chunks(STREAM_HASH_PIECE_BYTES) {
                h.update(black_box(piece));
            }
            assert_eq!(Hash::from(h.finalize()), expected);
        }
        start.elapsed()
    };
    let per_iter = |f: &dyn Fn(u64) -> Duration| f(1).as_nanos() as f64;
    let estimate = (per_iter(&batched), per_iter(&piece_by_piece));
    PairedRatio::measure(
        &batched,
        &piece_by_piece,
        estimate,
        scale.pair_batch,
        scale.pairs,
    )
}

fn main() {
    let scale = Scale::from_env();
    let dirs = Dirs::create();
    let conditions = Conditions {
        load_at_start: load_average(),
        io_pressure_at_start: io_pressure(),
    };
    let mut c = Criterion::default()
        .nresamples(if scale.quick { 10_000 } else { 100_000 })
        .sample_size(SAMPLE_COUNT)
        .warm_up_time(scale.warm_up)
        .measurement_time(scale.measurement)
        .configure_from_args();

    // The disk's bandwidth drifts with other work on the machine: a full run measures it at
    // the start and right before and after the 1 MiB, 4-writer puts it is compared with.
    let mut disk = DiskBandwidth {
        runs: Vec::new(),
        error: None,
    };
    disk.measure(&scale, &dirs);
    let mut cases = Vec::new();
    for (blob_bytes, writers) in PUT_CASES {
        if !scale.wants(&put_group(blob_bytes, writers)) {
            continue;
        }
        let next_to_dd = !scale.quick && (blob_bytes, writers) == (MIB, 4);
        if next_to_dd {
            disk.measure(&scale, &dirs);
        }
        cases.push(bench_put(&mut c, &scale, &dirs, blob_bytes, writers));
        if next_to_dd {
            disk.measure(&scale, &dirs);
        }
    }
    let disk_mb_per_s = disk.median_mb_per_s();
    for (blob_bytes, count) in [(4 * KIB, scale.get_blobs.0), (MIB, scale.get_blobs.1)] {
        if scale.wants(&get_group(blob_bytes)) {
            cases.push(bench_get(&mut c, &scale, &dirs, blob_bytes, count));
        }
    }
    let open = scale
        .wants(&open_group(scale.open_blobs))
        .then(|| bench_open(&mut c, &scale, &dirs));
    let stream_hash = scale
        .wants("stream_hash")
        .then(|| bench_stream_hash(&scale));
    c.final_summary();

    let find = |group: &str| cases.iter().find(|c| c.group == group);
    let put_4k_32 = find("put_4KiB_x32").and_then(Case::paired_ratio);
    let put_1m_4 = find("put_1MiB_x4");
    let put_1m_4_ratio = put_1m_4.and_then(Case::paired_ratio);
    let put_1m_4_fraction_of_dd = put_1m_4
        .and_then(|c| c.cairn)
        .zip(disk_mb_per_s)
        .map(|(side, dd)| side.mb_per_s() / dd);
    let put_1m_4_paired_fraction_of_dd = put_1m_4
        .and_then(Case::paired_cairn_mb_per_s)
        .zip(disk_mb_per_s)
        .map(|(mb, dd)| mb / dd);
    let get_4k = find("get_4KiB").and_then(Case::paired_ratio);
    let mut goals = vec![
        Goal::new(
            "durable 4 KiB puts, 32 writers: >= 8x baseline",
            put_4k_32,
            put_4k_32.map(|r| r >= 8.0),
        ),
        Goal::new(
            "durable 1 MiB puts, 4 writers: >= 2x baseline",
            put_1m_4_ratio,
            put_1m_4_ratio.map(|r| r >= 2.0),
        ),
        Goal::new(
            "durable 1 MiB puts, 4 writers: >= 0.6 of dd O_DIRECT bandwidth",
            put_1m_4_fraction_of_dd,
            put_1m_4_fraction_of_dd.map(|f| f >= 0.6),
        ),
        Goal::new(
            "hot 4 KiB gets: >= 10x baseline",
            get_4k,
            get_4k.map(|r| r >= 10.0),
        ),
    ];
    let index_goal = "index heap: <= 48 bytes/blob [value in bytes/blob]";
    match &open {
        Some(open) => {
            let at_goal_scale = open.blob_count == GOAL_OPEN_BLOBS;
            for s in &open.stores {
                let seconds = s.median_ms.map(|ms| ms / 1e3);
                goals.push(Goal::new(
                    &format!("open of 1M blobs ({}): < 1 s [value in s]", s.label),
                    seconds,
                    seconds
                        .filter(|_| at_goal_scale)
                        .map(|t| t < GOAL_OPEN_SECONDS),
                ));
            }
            let per_blob = open.index.measured_per_blob();
            goals.push(Goal::new(
                index_goal,
                Some(per_blob),
                at_goal_scale.then_some(per_blob <= GOAL_INDEX_BYTES_PER_BLOB),
            ));
        }
        None => {
            goals.push(Goal::new("open of 1M blobs: < 1 s", None, None));
            goals.push(Goal::new(index_goal, None, None));
        }
    }

    let summary = json!({
        "quick": scale.quick,
        "load_average_1_5_15_min": {
            "at_start": conditions.load_at_start,
            "at_end": load_average(),
        },
        "io_pressure_some_percent_10s_60s_300s": {
            "at_start": conditions.io_pressure_at_start,
            "at_end": io_pressure(),
        },
        "units": {
            "mb_per_s": "10^6 bytes per second",
            "ratio_cairn_over_baseline": "Cairn throughput / baseline throughput, from the two \
                                          criterion medians",
            "paired_ratio": "baseline time / Cairn time in alternating pairs of short batches \
                             run right after criterion, so that both sides share whatever \
                             background load and write-back the disk carries; median, min and \
                             max over the pairs; the ratio goals are judged on the median",
            "fraction_of_dd": "Cairn's 1 MiB 4-writer MB/s (criterion median) over dd's median",
            "median_ns_per_iteration": "median over the samples of elapsed / iterations",
            "put_iteration": "one round: each writer puts one fresh blob",
            "get_iteration": "one get",
        },
        "sample_count": SAMPLE_COUNT,
        "disk_dd_o_direct_write": disk.json(scale.dd_mib),
        "cases": cases.iter().map(Case::json).collect::<Vec<_>>(),
        "put_1MiB_x4_fraction_of_dd": put_1m_4_fraction_of_dd,
        "put_1MiB_x4_fraction_of_dd_from_paired_phase": put_1m_4_paired_fraction_of_dd,
        "open": open.as_ref().map(OpenResults::json),
        "index_memory": open.as_ref().map(|o| o.index.json()),
        "goals": goals.iter().map(Goal::json).collect::<Vec<_>>(),
        "stream_hash": stream_hash.as_ref().map(|p| json!({
            "bytes": STREAM_HASH_BYTES,
            "piece_bytes": STREAM_HASH_PIECE_BYTES,
            "stream_hasher_mb_per_s": STREAM_HASH_BYTES as f64 / p.cairn_median_ns() * 1e3,
            "piece_by_piece_mb_per_s": STREAM_HASH_BYTES as f64 / p.baseline_median_ns() * 1e3,
            "paired_ratio": {"median": p.median(), "min": p.min(), "max": p.max()},
        })),
    });

    print_table(
        &scale,
        &conditions,
        &cases,
        &disk,
        open.as_ref(),
        (put_1m_4_fraction_of_dd, put_1m_4_paired_fraction_of_dd),
        &goals,
    );
    if let Some(p) = &stream_hash {
        println!(
            "hashing {} MiB arriving in {STREAM_HASH_PIECE_BYTES} B pieces: StreamHasher {:.0} \
             MB/s, blake3::Hasher piece by piece {:.0} MB/s; paired ratio {:.2}x [{:.2}..{:.2}]",
            STREAM_HASH_BYTES / MIB,
            STREAM_HASH_BYTES as f64 / p.cairn_median_ns() * 1e3,
            STREAM_HASH_BYTES as f64 / p.baseline_median_ns() * 1e3,
            p.median(),
            p.min(),
            p.max()
        );
    }
    if scale.measuring {
        // A partial run must not replace the summary of a full one.
        let name = if scale.only.is_some() {
            "engine-partial.json"
        } else {
            "engine.json"
        };
        std::fs::create_dir_all(&dirs.out).expect("create output directory");
        let path = dirs.out.join(name);
        let text = serde_json::to_string_pretty(&summary).expect("encode summary");
        std::fs::write(&path, text + "\n").expect("write summary");
        println!("summary written to {}", path.display());
    }
    // Every case removed its own directory; only the empty scratch root is left.
    let _ = std::fs::remove_dir(&dirs.scratch);
}

fn print_table(
    scale: &Scale,
    conditions: &Conditions,
    cases: &[Case],
    disk: &DiskBandwidth,
    open: Option<&OpenResults>,
    (fraction_of_dd, paired_fraction_of_dd): (Option<f64>, Option<f64>),
    goals: &[Goal],
) {
    println!();
    println!(
        "Cairn engine vs one-file-per-blob baseline ({} run, medians of {SAMPLE_COUNT} samples)",
        if scale.quick { "QUICK" } else { "full" }
    );
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let three = |v: Option<[f64; 3]>| {
        v.map_or_else(
            || "n/a".to_string(),
            |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
        )
    };
    println!(
        "load average 1/5/15 min ({cores} cores): at start {}, at end {}",
        three(conditions.load_at_start),
        three(load_average())
    );
    println!(
        "I/O pressure (% of time some task stalled on I/O, 10/60/300 s): at start {}, at end {}",
        three(conditions.io_pressure_at_start),
        three(io_pressure())
    );
    println!(
        "{:<30} {:>30} {:>30} {:>7} {:>22} {:>10}",
        "case", "Cairn (median)", "baseline (median)", "ratio", "paired [min..max]", "puts/fsync"
    );
    for case in cases {
        let paired = case.paired.as_ref().map_or_else(
            || "n/a".to_string(),
            |p| format!("{:.2}x [{:.2}..{:.2}]", p.median(), p.min(), p.max()),
        );
        println!(
            "{:<30} {:>30} {:>30} {:>7} {:>22} {:>10}",
            case.label,
            fmt_side(case.cairn),
            fmt_side(case.baseline),
            fmt_opt(case.ratio(), "x"),
            paired,
            case.cairn_puts_per_fsync
                .map_or_else(String::new, |p| format!("{p:.1}")),
        );
    }
    println!();
    match disk.median_mb_per_s() {
        Some(mb) => println!(
            "disk: dd O_DIRECT sequential write {mb:.1} MB/s (median of {} run(s) of {} MiB)",
            disk.runs.len(),
            scale.dd_mib
        ),
        None => println!(
            "disk: dd failed: {}",
            disk.error.as_deref().unwrap_or("no run")
        ),
    }
    println!(
        "durable 1 MiB puts x4 as a fraction of dd: {} (criterion median; from the paired \
         phase: {})",
        fmt_opt(fraction_of_dd, ""),
        fmt_opt(paired_fraction_of_dd, "")
    );
    if let Some(open) = open {
        for s in &open.stores {
            println!(
                "open {} blobs of {OPEN_BLOB_BYTES} B ({}, {} hint files used, {} segments \
                 scanned): {} (baseline walk of {} files: {}; ratio per blob {})",
                open.blob_count,
                s.label,
                s.report.hint_files_used,
                s.report.segments_scanned,
                fmt_opt(s.median_ms, " ms"),
                open.baseline_files,
                fmt_opt(open.baseline_walk_ms, " ms"),
                fmt_opt(open.ratio(s.median_ms), "x"),
            );
        }
        println!(
            "index: heap growth of open {:.1} B/blob (peak during open {:.1} B/blob); \
             stats().index_heap_bytes {:.1} B/blob",
            open.index.measured_per_blob(),
            open.index.peak_extra_bytes as f64 / open.index.blob_count as f64,
            open.index.estimate_per_blob(),
        );
    }
    println!();
    println!(
        "{:<66} {:>10}  result   (ratios: the paired median)",
        "goal", "value"
    );
    for g in goals {
        println!(
            "{:<66} {:>10}  {}",
            g.text,
            fmt_opt(g.value, ""),
            met(g.met)
        );
    }
    if scale.quick {
        println!(
            "(quick run: the open and index goals are stated for 1M blobs and are not judged)"
        );
    }
}
