//! Baselines and helpers shared by Cairn's benchmarks: the one-file-per-blob store that Cairn is
//! measured against, deterministic blob contents, a heap-counting allocator, sample bookkeeping
//! for medians, and the disk's raw sequential write bandwidth as `dd` measures it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cairn_engine::Hash;

/// The baseline: every blob is its own file, named by its BLAKE3 hex, under a directory named
/// by the hash's first two hex characters (`<root>/ab/abcdef…`). This is how a plain
/// file-per-artifact provider lays out a content-addressed store.
///
/// A put is durable on return: the bytes go to a temporary name in the blob's fan-out
/// directory, the file is fsynced (`fdatasync`, the cheaper of the two), renamed into place,
/// and the fan-out directory is fsynced so that the rename survives a power loss.
#[derive(Debug)]
pub struct NaiveFileStore {
    root: PathBuf,
    temp_seq: AtomicU64,
}

/// Number of fan-out directories: one per value of the hash's first byte.
pub const FAN_OUT_DIR_COUNT: usize = 256;

impl NaiveFileStore {
    /// Opens the store at `root`, creating the root and all fan-out directories (durably) if
    /// they are missing.
    pub fn open(root: impl AsRef<Path>) -> io::Result<NaiveFileStore> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        for byte in 0..FAN_OUT_DIR_COUNT {
            let dir = root.join(format!("{byte:02x}"));
            if !dir.is_dir() {
                fs::create_dir(&dir)?;
            }
        }
        File::open(&root)?.sync_all()?;
        Ok(NaiveFileStore {
            root,
            temp_seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `hash` lives.
    pub fn path_of(&self, hash: &Hash) -> PathBuf {
        let name = hash.to_string();
        self.root.join(&name[..2]).join(name)
    }

    /// Stores `bytes` durably and returns their hash; a no-op if the blob is already stored.
    pub fn put(&self, bytes: &[u8]) -> io::Result<Hash> {
        let hash = Hash::of(bytes);
        let path = self.path_of(&hash);
        if path.exists() {
            return Ok(hash);
        }
        let dir = path.parent().expect("a blob path has a fan-out directory");
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{hash}.{seq}.tmp"));
        let written = (|| {
            let mut file = File::create_new(&temp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        File::open(dir)?.sync_all()?;
        Ok(hash)
    }

    /// Stores `bytes` with no fsync at all, straight under the final name: only for filling a
    /// large store quickly before a read-side measurement.
    pub fn put_unsynced(&self, bytes: &[u8]) -> io::Result<Hash> {
        let hash = Hash::of(bytes);
        let path = self.path_of(&hash);
        if !path.exists() {
            fs::write(&path, bytes)?;
        }
        Ok(hash)
    }

    /// The whole blob, or `None` if it is not stored.
    pub fn get(&self, hash: &Hash) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(hash)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every stored hash, found by listing all fan-out directories: what this layout must do to
    /// learn what it holds (its counterpart of opening a Cairn store and loading its index).
    /// Leftover temporary files are skipped.
    pub fn walk(&self) -> io::Result<Vec<Hash>> {
        let mut hashes = Vec::new();
        for byte in 0..FAN_OUT_DIR_COUNT {
            for entry in fs::read_dir(self.root.join(format!("{byte:02x}")))? {
                let entry = entry?;
                if let Some(hash) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    hashes.push(hash);
                }
            }
        }
        Ok(hashes)
    }
}

/// Fills `buf` with pseudo-random bytes determined by `seed` (xorshift64*, seeded through
/// splitmix64 so that nearby seeds give unrelated streams). Fast enough that generating a blob
/// costs far less than storing it.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut state = (z ^ (z >> 31)) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&next().to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = next().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// A blob of `len` pseudo-random bytes determined by `seed`.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fill(&mut buf, seed);
    buf
}

/// Makes `buf` a different blob by writing `id` over its first bytes: a fresh, never stored
/// blob at the cost of an 8-byte write instead of regenerating the whole buffer.
pub fn stamp(buf: &mut [u8], id: u64) {
    let id = id.to_le_bytes();
    let n = buf.len().min(id.len());
    buf[..n].copy_from_slice(&id[..n]);
}

/// A number never returned before in this process: with `stamp`, makes every blob unique.
pub fn unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A global allocator that forwards to the system allocator and counts the bytes currently
/// allocated (as requested by callers; the allocator's own per-block overhead is not included)
/// and the highest that count reached.
#[derive(Debug)]
pub struct CountingAllocator {
    live_bytes: AtomicUsize,
    peak_bytes: AtomicUsize,
}

impl CountingAllocator {
    pub const fn new() -> CountingAllocator {
        CountingAllocator {
            live_bytes: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes currently allocated.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// The most bytes allocated at once since the last `reset_peak`.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Starts tracking the peak again from the current figure.
    pub fn reset_peak(&self) {
        self.peak_bytes.store(self.live_bytes(), Ordering::Relaxed);
    }

    fn grew(&self, bytes: usize) {
        let now = self.live_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_bytes.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, bytes: usize) {
        self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Default for CountingAllocator {
    fn default() -> CountingAllocator {
        CountingAllocator::new()
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counters only observe the sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` carry over unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller guarantees `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let old_size = layout.size();
            if new_size >= old_size {
                self.grew(new_size - old_size);
            } else {
                self.shrank(old_size - new_size);
            }
        }
        new
    }
}

/// The measurements criterion asked one benchmark for: each call of an `iter_custom` routine,
/// as (iterations, elapsed). Criterion first calls the routine a few times to warm up, then
/// once per sample, so the last `sample_count` entries are the samples.
#[derive(Debug, Default)]
pub struct SampleLog {
    calls: Mutex<Vec<(u64, Duration)>>,
}

impl SampleLog {
    pub fn record(&self, iters: u64, elapsed: Duration) {
        self.calls
            .lock()
            .expect("sample log poisoned")
            .push((iters, elapsed));
    }

    /// Iterations over every call, warm-up included.
    pub fn total_iters(&self) -> u64 {
        let calls = self.calls.lock().expect("sample log poisoned");
        calls.iter().map(|&(iters, _)| iters).sum()
    }

    /// The median over the last `sample_count` calls of nanoseconds per iteration (the same
    /// statistic as criterion's median estimate), or `None` if fewer calls were recorded (the
    /// benchmark was filtered out or run in test mode).
    pub fn median_ns_per_iter(&self, sample_count: usize) -> Option<f64> {
        let calls = self.calls.lock().expect("sample log poisoned");
        if calls.len() < sample_count || sample_count == 0 {
            return None;
        }
        let mut per_iter: Vec<f64> = calls[calls.len() - sample_count..]
            .iter()
            .map(|&(iters, elapsed)| elapsed.as_nanos() as f64 / iters.max(1) as f64)
            .collect();
        Some(median(&mut per_iter))
    }
}

/// The median of `values` (the mean of the middle two for an even count). Panics if empty.
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Cairn's speed-up over the baseline measured in alternating pairs of short batches, so that
/// both sides see the same background load: a machine whose other work comes and goes moves
/// both halves of a pair together, and the median over pairs discards the bursts.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedRatio {
    /// Per pair: Cairn's and the baseline's nanoseconds per iteration.
    pub pairs: Vec<(f64, f64)>,
}

impl PairedRatio {
    /// Runs `pairs` pairs of batches. Each batch runs about `batch` long, sized from the given
    /// times per iteration; the side that goes first alternates from pair to pair. `cairn` and
    /// `baseline` run the given number of iterations and return how long they took.
    pub fn measure(
        cairn: &dyn Fn(u64) -> Duration,
        baseline: &dyn Fn(u64) -> Duration,
        (cairn_ns_per_iter, baseline_ns_per_iter): (f64, f64),
        batch: Duration,
        pairs: usize,
    ) -> PairedRatio {
        let iters_for = |ns_per_iter: f64| {
            ((batch.as_nanos() as f64 / ns_per_iter.max(1.0)).ceil() as u64).max(1)
        };
        let (cairn_iters, baseline_iters) = (
            iters_for(cairn_ns_per_iter),
            iters_for(baseline_ns_per_iter),
        );
        let per_iter = |elapsed: Duration, iters: u64| elapsed.as_nanos() as f64 / iters as f64;
        let pairs = (0..pairs)
            .map(|pair| {
                let (c, b) = if pair % 2 == 0 {
                    let c = cairn(cairn_iters);
                    (c, baseline(baseline_iters))
                } else {
                    let b = baseline(baseline_iters);
                    (cairn(cairn_iters), b)
                };
                (per_iter(c, cairn_iters), per_iter(b, baseline_iters))
            })
            .collect();
        PairedRatio { pairs }
    }

    /// Per pair: the baseline's time per iteration over Cairn's.
    pub fn ratios(&self) -> Vec<f64> {
        self.pairs
            .iter()
            .map(|&(cairn, baseline)| baseline / cairn.max(f64::MIN_POSITIVE))
            .collect()
    }

    pub fn median(&self) -> f64 {
        median(&mut self.ratios())
    }

    pub fn min(&self) -> f64 {
        self.ratios().into_iter().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.ratios().into_iter().fold(f64::NEG_INFINITY, f64::max)
    }

    /// The median over the pairs of Cairn's nanoseconds per iteration.
    pub fn cairn_median_ns(&self) -> f64 {
        median(&mut self.pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    }

    /// The median over the pairs of the baseline's nanoseconds per iteration.
    pub fn baseline_median_ns(&self) -> f64 {
        median(&mut self.pairs.iter().map(|p| p.1).collect::<Vec<_>>())
    }
}

/// One `dd` run: how many bytes it wrote and how long it took, as dd reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdRun {
    pub bytes: u64,
    pub seconds: f64,
}

impl DdRun {
    /// Decimal megabytes (10^6 bytes) per second, the unit dd prints.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

/// Parses dd's closing summary, e.g.
/// `1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.1 s, 511 MB/s`.
pub fn parse_dd_summary(stderr: &str) -> Option<DdRun> {
    let line = stderr.lines().rev().find(|l| l.contains(" copied, "))?;
    let bytes = line.split_whitespace().next()?.parse().ok()?;
    let (_, rest) = line.split_once(" copied, ")?;
    let seconds: f64 = rest.split_whitespace().next()?.parse().ok()?;
    (seconds > 0.0).then_some(DdRun { bytes, seconds })
}

/// Sequential write bandwidth of the disk holding `dir`: `dd` writes `mib` MiB of zeros in 1 MiB
/// blocks with O_DIRECT (bypassing the page cache) and fsyncs before it stops the clock. The file
/// is removed afterwards.
pub fn dd_direct_write(dir: &Path, mib: u64) -> io::Result<DdRun> {
    let file = dir.join("dd-direct-write.bin");
    let output = Command::new("dd")
        .env("LC_ALL", "C")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "oflag=direct",
            "conv=fsync",
        ])
        .output();
    let _ = fs::remove_file(&file);
    let output = output?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "dd failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    parse_dd_summary(&stderr)
        .ok_or_else(|| io::Error::other(format!("unexpected dd output: {}", stderr.trim())))
}

/// The workspace's target directory: `CARGO_TARGET_DIR` if set (relative to the workspace root
/// if relative), else `target` in the workspace root.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benchmark crate lives inside the workspace")
        .to_path_buf();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// The system's 1-, 5- and 15-minute load averages, from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The share of time (percent, averaged over 10 s, 60 s and 300 s) in which some task was
/// stalled waiting for I/O, from `/proc/pressure/io`: how busy other work kept the disk.
pub fn io_pressure() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/pressure/io").ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let mut averages = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter(|(key, _)| key.starts_with("avg"))
        .map(|(_, value)| value.parse().ok());
    Some([averages.next()??, averages.next()??, averages.next()??])
}

/// Flushes every dirty page of every file system to disk (the `sync` command), so that
/// writeback left over from building a data set does not run during a measurement.
pub fn sync_all_file_systems() -> io::Result<()> {
    let status = Command::new("sync").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("sync failed: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_store_round_trips_and_skips_existing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = NaiveFileStore::open(dir.path().join("store")).unwrap();
        let bytes = blob(10_000, 7);
        let hash = store.put(&bytes).unwrap();
        assert_eq!(hash, Hash::of(&bytes));
        let name = hash.to_string();
        assert!(
            dir.path()
                .join("store")
                .join(&name[..2])
                .join(&name)
                .is_file()
        );
        assert_eq!(store.get(&hash).unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(store.put(&bytes).unwrap(), hash);
        assert_eq!(store.get(&Hash::of(b"absent")).unwrap(), None);
        let other = store.put_unsynced(b"small").unwrap();
        let mut found = store.walk().unwrap();
        found.sort();
        let mut expected = vec![hash, other];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn fill_is_deterministic_and_seeds_differ() {
        assert_eq!(blob(1001, 3), blob(1001, 3));
        assert_ne!(blob(1001, 3), blob(1001, 4));
        let mut a = blob(64, 1);
        let b = a.clone();
        stamp(&mut a, 99);
        assert_ne!(a, b);
        let mut short = [0u8; 3];
        stamp(&mut short, u64::MAX);
        assert_eq!(short, [0xff; 3]);
    }

    #[test]
    fn parses_dd_summary() {
        let stderr = "1024+0 records in\n1024+0 records out\n\
                      1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.5 s, 429 MB/s\n";
        let run = parse_dd_summary(stderr).unwrap();
        assert_eq!(run.bytes, 1 << 30);
        assert_eq!(run.seconds, 2.5);
        assert!((run.mb_per_s() - 429.4967296).abs() < 1e-6);
        assert_eq!(parse_dd_summary("dd: error"), None);
    }

    #[test]
    fn paired_ratio_alternates_and_sizes_batches() {
        let calls = Mutex::new(Vec::new());
        let cairn = |iters: u64| {
            calls.lock().unwrap().push(('c', iters));
            Duration::from_nanos(100 * iters)
        };
        let baseline = |iters: u64| {
            calls.lock().unwrap().push(('b', iters));
            Duration::from_nanos(400 * iters)
        };
        let paired = PairedRatio::measure(
            &cairn,
            &baseline,
            (100.0, 400.0),
            Duration::from_micros(4),
            3,
        );
        assert_eq!(paired.ratios(), vec![4.0, 4.0, 4.0]);
        assert_eq!(
            (paired.median(), paired.min(), paired.max()),
            (4.0, 4.0, 4.0)
        );
        assert_eq!(
            (paired.cairn_median_ns(), paired.baseline_median_ns()),
            (100.0, 400.0)
        );
        let calls = calls.into_inner().unwrap();
        assert_eq!(
            calls,
            vec![
                ('c', 40),
                ('b', 10),
                ('b', 10),
                ('c', 40),
                ('c', 40),
                ('b', 10)
            ]
        );
    }

    #[test]
    fn median_of_last_samples() {
        let log = SampleLog::default();
        log.record(1, Duration::from_nanos(1_000_000)); // warm-up, ignored
        for (iters, ns) in [(2, 200), (2, 100), (4, 1200)] {
            log.record(iters, Duration::from_nanos(ns));
        }
        assert_eq!(log.median_ns_per_iter(3), Some(100.0));
        assert_eq!(log.total_iters(), 9);
        assert_eq!(log.median_ns_per_iter(5), None);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
