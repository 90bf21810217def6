//! `Store`: the engine's front door. Opening and recovery, the write path (append to the open
//! shared segment under one lock, then a shared fsync), reads, deletes, sealing with hint files,
//! compaction and scrubbing.

mod direct;
mod writer;

pub use writer::BlobWriter;

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::error::{CorruptionKind, Error, ReadOnlyReason, Result};
use crate::format::{
    self, FormatError, HintEntry, RecordHeader, RecordKind, ScanCheck, SegmentHeader, SegmentKind,
};
use crate::index::{Index, Location};
use crate::latency::{LatencyHistogram, LatencySnapshot};
use crate::limits::{
    BLOB_BYTES_MAX, DAMAGED_NAMES_MAX, DIRECT_BUFFERS_SPARE_MAX, PLACED_PAYLOAD_BYTES_MIN,
    READ_RETRY_COUNT_MAX, RECORD_HEADER_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, STREAM_BUFFER_BYTES_MAX, SYNC_INTERVAL_MS_MAX,
    WRITE_BUFFER_SPARE_BYTES_MIN, WRITE_BUFFERS_SPARE_MAX, ZERO_WRITE_BYTES_MAX,
};
use crate::segment::{Segment, SyncFailed};
use crate::storage::{RealStorage, Storage, StorageFile};
use crate::{Blob, Hash};

/// When writes become durable. See the crate documentation for the exact contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write returns only once durable; concurrent writers share fsyncs.
    Always,
    /// A background thread fsyncs the open segment every `period_ms`.
    Interval { period_ms: u64 },
    /// fsync only when sealing a segment, writing a dedicated segment, or closing.
    Never,
}

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Capacity of each shared segment file. Records larger than a quarter of it go to a
    /// dedicated segment of their own.
    pub segment_bytes: u64,
    /// The most bytes of segment files the store may hold; a write that would go over fails
    /// with `StoreFull` before writing.
    pub capacity_bytes: u64,
    pub sync: SyncMode,
    /// `compact` rewrites a sealed segment when its live bytes are below this fraction of the
    /// bytes written to it.
    pub compact_live_ratio_below: f64,
    /// A streaming writer holds up to this many bytes in memory before it spills to a dedicated
    /// segment; at most `STREAM_BUFFER_BYTES_MAX`.
    pub stream_buffer_bytes: u64,
    /// `Store::writer_for` places a blob from this many bytes on (if its record fits a shared
    /// segment) and writes it in place; a smaller one is gathered whole. The default is
    /// `PLACED_PAYLOAD_BYTES_MIN`; tests lower it to place small blobs too.
    pub placed_payload_bytes_min: u64,
    /// A placed record's payload is written around the page cache (`O_DIRECT`) where the file
    /// system allows it, all but `DIRECT_WRITE_GUARD_BYTES` at either end, which go through
    /// it. On by default; off, every byte goes through the cache (a benchmark's baseline).
    pub direct_writes: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            capacity_bytes: u64::MAX,
            sync: SyncMode::Always,
            compact_live_ratio_below: 0.5,
            stream_buffer_bytes: STREAM_BUFFER_BYTES_MAX,
            placed_payload_bytes_min: PLACED_PAYLOAD_BYTES_MIN,
            direct_writes: true,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        let bad = |field, problem| Err(Error::InvalidConfig { field, problem });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                "must be between SEGMENT_BYTES_MIN and SEGMENT_BYTES_MAX",
            );
        }
        if self.stream_buffer_bytes > STREAM_BUFFER_BYTES_MAX {
            return bad(
                "stream_buffer_bytes",
                "must be at most STREAM_BUFFER_BYTES_MAX",
            );
        }
        if !(0.0..=1.0).contains(&self.compact_live_ratio_below) {
            return bad("compact_live_ratio_below", "must be between 0 and 1");
        }
        if let SyncMode::Interval { period_ms } = self.sync
            && !(1..=SYNC_INTERVAL_MS_MAX).contains(&period_ms)
        {
            return bad(
                "sync.period_ms",
                "must be between 1 and SYNC_INTERVAL_MS_MAX",
            );
        }
        Ok(())
    }
}

/// A segment file that recovery could not use; it is moved, untouched, into the store's
/// `damaged/` directory (with its hint file), where an operator may look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSegment {
    pub path: PathBuf,
    pub problem: FormatError,
    /// Where it was moved (`None`: moving it failed, it stays where it was).
    pub moved_to: Option<PathBuf>,
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    pub segments_opened: u64,
    pub hint_files_used: u64,
    /// Segments read record by record (no hint file, or a bad one).
    pub segments_scanned: u64,
    pub hint_files_written: u64,
    /// Torn or corrupt tails cut off: (segment id, offset of the first bad byte, problem).
    pub torn_tails: Vec<(u32, u64, FormatError)>,
    /// Records passed over inside a segment: (segment id, offset, problem). `Uncommitted` ones
    /// are streams that were cut off before their commit: nothing acknowledged. Any other
    /// problem is a record whose bytes do not check.
    pub records_skipped: Vec<(u32, u64, FormatError)>,
    pub unreadable_segments: Vec<UnreadableSegment>,
    /// Leftovers of writes that never committed (streams, hint files being written).
    pub temp_files_removed: u64,
    pub blobs_indexed: u64,
    /// Records a segment's hint file listed that recovery could not find: cut off with a torn
    /// tail, or inside an unreadable segment. (A segment without a hint file loses records
    /// uncounted: only the bytes are known, in `torn_tails` and `unreadable_segments`.)
    pub records_lost: u64,
}

impl RecoveryReport {
    /// Whether the open dropped anything: an operator should know (the cluster's other
    /// replicas restore what was lost).
    pub fn dropped_anything(&self) -> bool {
        !self.torn_tails.is_empty()
            || !self.unreadable_segments.is_empty()
            || self.records_lost > 0
            || (self.records_skipped.iter()).any(|s| s.2 != FormatError::Uncommitted)
    }
}

/// What `stat` knows about a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStat {
    Present {
        bytes: u64,
    },
    Absent,
    /// Found corrupt; not served until a good copy is put again.
    Quarantined,
}

/// Figures for monitoring.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    pub blob_count: u64,
    /// Bytes on disk (headers, payloads, checksum tables) of the records readers can reach.
    pub live_bytes: u64,
    /// Bytes on disk of records that are deleted, superseded or tombstones: what compaction can
    /// reclaim.
    pub dead_bytes: u64,
    pub segment_count: u64,
    pub capacity_bytes: u64,
    /// Bytes of segment files (shared segments count at their preallocated size).
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Estimated heap bytes of the in-memory index.
    pub index_heap_bytes: u64,
    pub quarantined_count: u64,
    pub fsync_count: u64,
    /// How long the engine's fsyncs took.
    pub fsync_latency: LatencySnapshot,
    pub read_only: Option<ReadOnlyReason>,
    /// Bytes compaction would give back now: the file bytes of the sealed segments past the
    /// threshold (`Config::compact_live_ratio_below`), less the live bytes it would copy out.
    pub reclaimable_bytes: u64,
    /// Placed records since the store opened whose bytes the file system would not take around
    /// the page cache (it refuses `O_DIRECT`, or a descriptor could not be opened): they went
    /// through the cache, which is slower for large writes and fills the cache with them.
    pub direct_writes_declined: u64,
    /// Index entries found pointing at a segment no longer there, since the store opened, and
    /// dropped: each a blob that reads as absent here and is fetched again from its replicas.
    /// Always 0 unless Cairn has a bug.
    pub dangling_index_entries: u64,
}

/// A segment file, as compaction names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(u32);

/// What `compact` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    pub segments_removed: u64,
    /// Segments left in place because a record in them is damaged.
    pub segments_skipped_damaged: u64,
    pub blobs_moved: u64,
    pub tombstones_kept: u64,
    pub tombstones_dropped: u64,
    pub bytes_reclaimed: u64,
    /// Bytes of live records copied into the open segment.
    pub bytes_moved: u64,
}

/// What `scrub` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    /// Blobs found corrupt, now quarantined.
    pub corrupt: Vec<Hash>,
}

/// A content-addressed blob store in one directory. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Active {
    segment: Option<Arc<Segment>>,
    /// Where the next record goes.
    end: u64,
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segment_dir: PathBuf,
    pub(crate) temp_dir: PathBuf,
    /// Where recovery moves segment files it cannot read.
    damaged_dir: PathBuf,
    pub(crate) config: Config,
    index: Index,
    segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// The append lock: one writer at a time places and writes its record, so records land in
    /// order with no holes (recovery stops at the first bad record; a hole would hide acknowledged
    /// records behind it).
    active: Mutex<Active>,
    pub(crate) next_seq: AtomicU64,
    pub(crate) next_segment_id: AtomicU32,
    used_bytes: AtomicU64,
    read_only: Mutex<Option<ReadOnlyReason>>,
    is_read_only: AtomicBool,
    quarantined: Mutex<HashSet<Hash>>,
    compaction: Mutex<()>,
    /// Segments compaction found damaged and leaves alone (for scrub and repair).
    compaction_damaged: Mutex<HashSet<u32>>,
    pub(crate) fsyncs: Arc<LatencyHistogram>,
    /// Buffers of finished streaming writers, kept for the next ones.
    spare_buffers: Spares<Vec<u8>>,
    /// Direct-write buffers of committed placed records, kept for the next ones.
    direct_buffers: Spares<direct::AlignedBuffer>,
    /// Placed records whose direct writes the file declined (`Stats::direct_writes_declined`).
    pub(crate) direct_writes_declined: AtomicU64,
    /// `Stats::dangling_index_entries`.
    dangling_index_entries: AtomicU64,
    recovery: RecoveryReport,
    _stop_syncer: Option<mpsc::Sender<()>>,
    _lock: Box<dyn Any + Send + Sync>,
}

/// Buffers kept for the next writer, at most `max` of them: a large buffer's pages are touched
/// once, not once per write.
struct Spares<T> {
    kept: Mutex<Vec<T>>,
    max: usize,
}

impl<T> Spares<T> {
    fn new(max: usize) -> Spares<T> {
        Spares {
            kept: Mutex::new(Vec::new()),
            max,
        }
    }

    fn take(&self) -> Option<T> {
        self.kept.lock().pop()
    }

    /// Keeps `spare` if there is room; frees it otherwise.
    fn keep(&self, spare: T) {
        let mut kept = self.kept.lock();
        if kept.len() < self.max {
            kept.push(spare);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().len()
    }
}

fn segment_file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

fn hint_file_name(id: u32) -> String {
    format!("{id:010}.hint")
}

fn parse_id(name: &str, suffix: &str) -> Option<u32> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Store {
    /// Opens (creating if needed) the store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        Store::open_with(Arc::new(RealStorage), dir.as_ref(), config)
    }

    /// Opens the store in `dir` on the given storage (tests use `MemStorage`, `FaultyStorage`).
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path, config: Config) -> Result<Store> {
        config.validate()?;
        let segment_dir = dir.join("segments");
        let temp_dir = dir.join("tmp");
        let damaged_dir = dir.join("damaged");
        for d in [&segment_dir, &temp_dir] {
            storage
                .create_dir_all(d)
                .map_err(|e| Error::io("create directory", d, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = storage
            .try_lock(&lock_path)
            .map_err(|e| Error::io("lock", &lock_path, e))?
            .ok_or(Error::Locked { path: lock_path })?;
        let mut report = RecoveryReport::default();
        let names = storage
            .list_dir(&temp_dir)
            .map_err(|e| Error::io("list", &temp_dir, e))?;
        for name in &names {
            let path = temp_dir.join(name);
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            report.temp_files_removed += 1;
        }
        if !names.is_empty() {
            storage
                .sync_dir(&temp_dir)
                .map_err(|e| Error::io("sync directory", &temp_dir, e))?;
        }
        let inner = Inner {
            storage,
            segment_dir,
            temp_dir,
            damaged_dir,
            config,
            index: Index::new(),
            segments: RwLock::new(BTreeMap::new()),
            active: Mutex::new(Active {
                segment: None,
                end: 0,
            }),
            next_seq: AtomicU64::new(1),
            next_segment_id: AtomicU32::new(1),
            used_bytes: AtomicU64::new(0),
            read_only: Mutex::new(None),
            is_read_only: AtomicBool::new(false),
            quarantined: Mutex::new(HashSet::new()),
            compaction: Mutex::new(()),
            compaction_damaged: Mutex::new(HashSet::new()),
            fsyncs: Arc::new(LatencyHistogram::default()),
            spare_buffers: Spares::new(WRITE_BUFFERS_SPARE_MAX),
            direct_buffers: Spares::new(DIRECT_BUFFERS_SPARE_MAX),
            direct_writes_declined: AtomicU64::new(0),
            dangling_index_entries: AtomicU64::new(0),
            recovery: RecoveryReport::default(),
            _stop_syncer: None,
            _lock: lock,
        };
        let mut inner = inner;
        inner.recover(&mut report)?;
        inner.recovery = report;
        if let SyncMode::Interval { period_ms } = inner.config.sync {
            let (tx, rx) = mpsc::channel::<()>();
            inner._stop_syncer = Some(tx);
            let inner = Arc::new(inner);
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("cairn-sync".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        rx.recv_timeout(Duration::from_millis(period_ms))
                    {
                        let Some(inner) = weak.upgrade() else { return };
                        // A failure turns the store read-only; writers see it on their next call.
                        let _ = inner.sync_active();
                    }
                })
                .map_err(|e| Error::io("spawn sync thread", PathBuf::new(), e))?;
            return Ok(Store { inner });
        }
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// What opening the store found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Stores `bytes` and returns their hash. Storing a blob that is already present writes
    /// nothing.
    pub fn put(&self, bytes: &[u8]) -> Result<Hash> {
        let hash = Hash::of(bytes);
        let len = bytes.len() as u64;
        if self.inner.config.direct_writes && self.places(len) && !self.inner.contains(&hash) {
            // Placed, so that its pages go around the page cache, outside the append lock.
            let mut writer = self.placed_writer(hash, len, true)?;
            writer.write(bytes)?;
            return writer.commit(Some(&hash));
        }
        self.inner.put_hashed(hash, bytes)?;
        Ok(hash)
    }

    /// A streaming writer for a blob of any size, holding at most `STREAM_BUFFER_BYTES_MAX` in
    /// memory.
    pub fn writer(&self) -> BlobWriter {
        BlobWriter::new(self.clone())
    }

    /// Whether `writer_for` places a new blob of `payload_bytes` in the open segment: then
    /// opening its writer may create a segment or seal a full one (file IO and fsyncs), and a
    /// caller on an async runtime should open it off its threads.
    pub fn places(&self, payload_bytes: u64) -> bool {
        payload_bytes >= self.inner.config.placed_payload_bytes_min
            && payload_bytes <= BLOB_BYTES_MAX
            && format::record_bytes(payload_bytes) <= self.inner.shared_record_bytes_max()
    }

    /// A streaming writer for a blob whose name and length are known before its bytes (a
    /// replica's put). A blob from `Config::placed_payload_bytes_min` whose record fits a shared segment
    /// is placed there first and written in place as its bytes arrive: one `CRC_CHUNK_BYTES`
    /// chunk is held, not the blob. Others are written as by `writer`. Writing other than
    /// `payload_bytes` bytes, or bytes that hash otherwise, stores nothing.
    pub fn writer_for(&self, hash: Hash, payload_bytes: u64) -> Result<BlobWriter> {
        if payload_bytes > BLOB_BYTES_MAX {
            return Err(Error::BlobTooLarge {
                bytes: payload_bytes,
                max_bytes: BLOB_BYTES_MAX,
            });
        }
        if !self.places(payload_bytes) || self.inner.contains(&hash) {
            let mut writer = BlobWriter::new(self.clone());
            writer.reserve(payload_bytes);
            return Ok(writer);
        }
        self.placed_writer(hash, payload_bytes, false)
    }

    /// A writer into a record placed in the open segment; `hashed` says its caller has hashed
    /// the bytes already.
    fn placed_writer(&self, hash: Hash, payload_bytes: u64, hashed: bool) -> Result<BlobWriter> {
        let (seg, offset) = self.inner.place(&hash, payload_bytes)?;
        Ok(BlobWriter::placed(
            self.clone(),
            seg,
            offset,
            hash,
            payload_bytes,
            hashed,
        ))
    }

    /// The whole blob, checked against its checksums; `None` if absent.
    pub fn get(&self, hash: &Hash) -> Result<Option<Blob>> {
        self.inner.read(hash, None)
    }

    /// `length_bytes` bytes of the blob from `offset`, checking only the chunks they touch.
    pub fn read_range(&self, hash: &Hash, offset: u64, length_bytes: u64) -> Result<Option<Blob>> {
        self.inner.read(hash, Some((offset, length_bytes)))
    }

    pub fn stat(&self, hash: &Hash) -> Result<BlobStat> {
        self.inner.stat(hash)
    }

    /// Deletes a blob; returns whether it was there. Durable on return under `SyncMode::Always`.
    pub fn delete(&self, hash: &Hash) -> Result<bool> {
        self.inner.delete(hash)
    }

    /// Up to `limit` stored hashes in `[start, end)` (`end` `None`: to the last hash), ascending.
    /// Page through a range by starting the next call just after the last hash returned.
    pub fn list(&self, start: &Hash, end: Option<&Hash>, limit: usize) -> Vec<Hash> {
        self.inner.list(start, end, limit)
    }

    /// Recomputes the blob's BLAKE3. `Ok(Some(bytes))` if intact, `Ok(None)` if absent; a
    /// corrupt blob is quarantined and reported as `Err(Corrupted)`.
    pub fn verify(&self, hash: &Hash) -> Result<Option<u64>> {
        self.inner.verify(hash)
    }

    /// Verifies every blob; corrupt ones are quarantined and listed.
    pub fn scrub(&self) -> Result<ScrubReport> {
        self.inner.scrub()
    }

    /// Rewrites sealed segments whose live ratio is under the configured threshold, then
    /// removes them. Safe to run alongside reads and writes.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.compact()
    }

    /// The segments `compact` would take now, oldest first (their tombstones are the likeliest
    /// to be dropped). With [`Store::compact_segment`], lets a caller pace compaction: one
    /// round over this list always ends, even where kept tombstones are rewritten.
    pub fn compaction_candidates(&self) -> Vec<SegmentId> {
        self.inner
            .compaction_victims()
            .iter()
            .map(|s| SegmentId(s.id))
            .collect()
    }

    /// Compacts one segment if it is still a candidate; `None` if it is not (gone, or live
    /// again after a reopen).
    pub fn compact_segment(&self, id: SegmentId) -> Result<Option<CompactionReport>> {
        self.inner.compact_segment(id.0)
    }

    /// Seals the open shared segment when nothing in it is live, or when its dead bytes are
    /// at least `dead_bytes_min` and past the compaction threshold, so that compaction can
    /// take it; says whether it did. The next write opens a new segment.
    pub fn seal_open_segment_if_dead(&self, dead_bytes_min: u64) -> Result<bool> {
        self.inner.seal_open_segment_if_dead(dead_bytes_min)
    }

    /// Lets go of the resident memory of the mappings of cold segments, those no read touched
    /// since the previous call (see `Mapping::release`); a segment being read keeps its pages,
    /// so a reader streaming a blob is not made to fault them in again. Reads go on as before.
    /// Returns the segments released.
    pub fn release_cold_mappings(&self) -> usize {
        let segments = self.inner.segment_list();
        let mut released = 0;
        for segment in &segments {
            if !segment.read_since_release.swap(false, Ordering::Relaxed) {
                segment.map.release();
                released += 1;
            }
        }
        released
    }

    /// Makes every write that returned before this call durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync_active()
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.is_read_only.load(Ordering::Relaxed) {
            // Closing: make what was written durable. Nobody is left to hear about a failure,
            // and recovery handles whatever did not reach the disk.
            let _ = self.sync_active();
        }
    }
}

/// Lets go of the pages a pass over a segment's headers mapped (a seal's scan, a listing),
/// unless a reader used the segment since the last `release_cold_mappings`. The kernel maps the
/// pages around each header read too, 64 KiB per record of large blobs; kept, they would stay
/// resident until the node's bound on mapped memory is reached, for no reader.
fn release_if_unread(seg: &Segment) {
    if !seg.read_since_release.load(Ordering::Relaxed) {
        seg.map.release();
    }
}

impl Inner {
    /// Every segment, as a list taken under a short read lock.
    fn segment_list(&self) -> Vec<Arc<Segment>> {
        self.segments.read().values().cloned().collect()
    }

    pub(crate) fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        // `read_recursive`: this runs inside index shard locks (`name_of`), and a plain read
        // would queue behind a writer waiting for `segments` (a segment created or removed).
        // No holder of `segments` waits for another lock, so this cannot deadlock.
        self.segments.read_recursive().get(&id).cloned()
    }

    /// The hash a location's header names, read from the file (`Segment::header_read`).
    /// `None` if it cannot be read, corrupt or on a read error, which the index takes as the
    /// name asked for. So if two stored hashes share their 8-byte prefix, a read error at that
    /// moment may answer a lookup of one with the other's location; a read of the blob checks
    /// the name in the header again.
    fn name_of(&self, loc: Location) -> Option<Hash> {
        self.segment(loc.segment_id)?
            .name_read(u64::from(loc.offset))
    }

    /// `name_of` through the mapping, for a pass over many headers (a listing), which lets go
    /// of the pages afterwards: one page fault maps many small records' headers at once.
    fn name_of_mapped(&self, loc: Location) -> Option<Hash> {
        self.segment(loc.segment_id)?.name_at(u64::from(loc.offset))
    }

    fn seq_at(&self, loc: Location) -> Option<u64> {
        Some(
            self.segment(loc.segment_id)?
                .header_read(u64::from(loc.offset))
                .ok()?
                .seq,
        )
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_read_only.load(Ordering::Acquire) {
            let reason = self.read_only.lock().clone().expect("set before the flag");
            return Err(Error::ReadOnly(reason));
        }
        Ok(())
    }

    /// Turns the store read-only after a failed fsync and returns the error to report.
    pub(crate) fn fsync_failed(&self, path: &Path, e: std::io::Error) -> Error {
        let mut reason = self.read_only.lock();
        let r = reason
            .get_or_insert(ReadOnlyReason::FsyncFailed {
                path: path.to_path_buf(),
                kind: e.kind(),
            })
            .clone();
        self.is_read_only.store(true, Ordering::Release);
        Error::ReadOnly(r)
    }

    /// The next sequence number. Sequence numbers never wrap: damaged or hostile files can hold
    /// the largest one, and then the store takes no more writes.
    pub(crate) fn allocate_seq(&self) -> Result<u64> {
        self.next_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
            .map_err(|_| Error::IdsExhausted {
                what: "record sequence numbers",
            })
    }

    /// The next segment id; never wraps (see `allocate_seq`).
    pub(crate) fn allocate_segment_id(&self) -> Result<u32> {
        self.next_segment_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
            .map_err(|_| Error::IdsExhausted {
                what: "segment ids",
            })
    }

    pub(crate) fn reserve_bytes(&self, bytes: u64) -> Result<()> {
        let capacity = self.config.capacity_bytes;
        self.used_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&u| u <= capacity)
            })
            .map(|_| ())
            .map_err(|used| Error::StoreFull {
                needed_bytes: bytes,
                free_bytes: capacity.saturating_sub(used),
            })
    }

    pub(crate) fn release_bytes(&self, bytes: u64) {
        let _ = self
            .used_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Records bigger than this go to a dedicated segment.
    pub(crate) fn shared_record_bytes_max(&self) -> u64 {
        (self.config.segment_bytes - SEGMENT_HEADER_BYTES) / 4
    }

    /// `durable` for a placed record. Under `SyncMode::Interval` the syncer covers only the
    /// open segment; one that filled while this record was being written waits for its seal,
    /// which waits for every record placed in it, so it is synced here.
    pub(crate) fn durable_placed(&self, seg: &Segment) -> Result<()> {
        let active = || {
            let active = self.active.lock();
            active.segment.as_ref().is_some_and(|a| a.id == seg.id)
        };
        match self.config.sync {
            SyncMode::Interval { .. } if !active() => seg
                .sync_written()
                .map_err(|SyncFailed(e)| self.fsync_failed(&seg.path, e)),
            _ => self.durable(seg),
        }
    }

    pub(crate) fn durable(&self, seg: &Segment) -> Result<()> {
        match self.config.sync {
            SyncMode::Always => seg
                .sync_written()
                .map_err(|SyncFailed(e)| self.fsync_failed(&seg.path, e)),
            SyncMode::Interval { .. } | SyncMode::Never => Ok(()),
        }
    }

    pub(crate) fn sync_active(&self) -> Result<()> {
        let seg = self.active.lock().segment.clone();
        match seg {
            Some(seg) => seg
                .sync_written()
                .map_err(|SyncFailed(e)| self.fsync_failed(&seg.path, e)),
            None => Ok(()),
        }
    }

    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.index.get(hash, &|loc| self.name_of(loc)).is_some()
    }

    /// An empty buffer of at least `bytes` capacity. A large one (at least
    /// `WRITE_BUFFER_SPARE_BYTES_MIN`) is always `stream_buffer_bytes` long, a spare if there is
    /// one, so that every spare fits every large writer.
    pub(crate) fn take_buffer(&self, bytes: usize) -> Vec<u8> {
        if bytes as u64 >= WRITE_BUFFER_SPARE_BYTES_MIN {
            if let Some(spare) = self.spare_buffers.take() {
                return spare;
            }
            return Vec::with_capacity(self.config.stream_buffer_bytes as usize);
        }
        Vec::with_capacity(bytes)
    }

    #[cfg(test)]
    pub(crate) fn spare_buffer_count(&self) -> usize {
        self.spare_buffers.len()
    }

    /// Keeps a writer's buffer for the next one if it is a large one (`take_buffer`'s) and
    /// there is room; frees it otherwise. A store holds at most `WRITE_BUFFERS_SPARE_MAX` times
    /// `stream_buffer_bytes` this way (16 MiB by default), idle or not.
    pub(crate) fn give_buffer(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity() as u64;
        if capacity >= WRITE_BUFFER_SPARE_BYTES_MIN && capacity == self.config.stream_buffer_bytes {
            buffer.clear();
            self.spare_buffers.keep(buffer);
        }
    }

    /// A buffer for a placed record's direct writes: a spare if there is one.
    pub(crate) fn take_direct_buffer(&self) -> direct::AlignedBuffer {
        let spare = self.direct_buffers.take();
        spare.unwrap_or_else(direct::AlignedBuffer::new)
    }

    /// Keeps a direct-write buffer for the next record, up to `DIRECT_BUFFERS_SPARE_MAX`.
    pub(crate) fn give_direct_buffer(&self, buffer: direct::AlignedBuffer) {
        self.direct_buffers.keep(buffer);
    }

    pub(crate) fn put_hashed(&self, hash: Hash, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        if len > BLOB_BYTES_MAX {
            return Err(Error::BlobTooLarge {
                bytes: len,
                max_bytes: BLOB_BYTES_MAX,
            });
        }
        if self.contains(&hash) {
            return Ok(());
        }
        self.check_writable()?;
        if format::record_bytes(len) > self.shared_record_bytes_max() {
            let mut file = writer::DedicatedFile::create(self)?;
            let written = file.append(self, bytes);
            return match written {
                Ok(()) => file.finish(self, hash),
                Err(e) => {
                    file.discard(self);
                    Err(e)
                }
            };
        }
        let (seg, loc, seq) = self.append(RecordKind::Blob, &hash, bytes, None, true)?;
        seg.note_record(seq, format::record_bytes(len));
        let durable = self.durable(&seg);
        if durable.is_ok() {
            self.publish(hash, &seg, loc);
        }
        let done = self.placed_done(&seg);
        durable.and(done)
    }

    /// Makes a durable blob record visible to readers.
    pub(crate) fn publish(&self, hash: Hash, seg: &Segment, loc: Location) {
        let previous = self
            .index
            .update(&hash, &|l| self.name_of(l), |cur| cur.or(Some(loc)));
        if previous.is_some() {
            // A concurrent put of the same blob won; this copy is dead weight for compaction.
            let header = seg
                .header_at(u64::from(loc.offset))
                .expect("we just wrote it");
            sub_saturating(&seg.live_bytes, format::record_bytes(header.payload_bytes));
        } else {
            let mut q = self.quarantined.lock();
            if !q.is_empty() {
                q.remove(&hash);
            }
        }
    }

    /// Appends a record to the open shared segment (opening a new one if it is full), under the
    /// append lock. `seq` is `None` for new records, the original for records compaction moves.
    /// A record appended with `hold` counts as placed in its segment (`Segment::placing`) until
    /// the caller's `placed_done`: a blob record is held until the index names it, so that its
    /// segment is neither sealed nor compacted away meanwhile (compaction keeps only the records
    /// the index names).
    fn append(
        &self,
        kind: RecordKind,
        hash: &Hash,
        payload: &[u8],
        seq: Option<u64>,
        hold: bool,
    ) -> Result<(Arc<Segment>, Location, u64)> {
        let mut record = EncodedRecord::new(kind, hash, payload);
        let record_bytes = record.record_bytes();
        let mut active = self.active.lock();
        let (seg, offset, full) = self.room(&mut active, record_bytes)?;
        let seq = match seq {
            Some(seq) => seq,
            None => self.allocate_seq()?,
        };
        let written = record.write(seg.file.as_ref(), offset, seq);
        if written.is_ok() {
            seg.min_seq.fetch_min(seq, Ordering::Relaxed);
        }
        let (seg, offset) =
            self.end_append(active, (seg, offset, full), record_bytes, written, hold)?;
        let loc = Location {
            segment_id: seg.id,
            offset: u32::try_from(offset).expect("segments are at most 4 GiB"),
        };
        Ok((seg, loc, seq))
    }

    /// Where the next record of `record_bytes` goes, under the append lock: the open shared
    /// segment and the offset in it, and the segment it replaced if that one was full (to be
    /// sealed once the lock is let go).
    fn room(
        &self,
        active: &mut Active,
        record_bytes: u64,
    ) -> Result<(Arc<Segment>, u64, Option<Arc<Segment>>)> {
        assert!(
            record_bytes <= self.shared_record_bytes_max(),
            "record too big for a shared segment"
        );
        self.check_writable()?;
        let mut full = None;
        let needs_new = match &active.segment {
            None => true,
            Some(seg) => active.end + record_bytes > seg.file_bytes,
        };
        if needs_new {
            let new = self.create_shared_segment()?;
            full = active.segment.replace(new);
            active.end = SEGMENT_HEADER_BYTES;
        }
        let seg = active.segment.clone().expect("set above");
        Ok((seg, active.end, full))
    }

    /// Places a blob record of `payload_bytes` in the open shared segment before its bytes
    /// arrive: its identity header is written and its space taken, under the append lock; the
    /// payload, table and commit follow outside it (`store::writer::Placed`). Until committed
    /// the record is passed over by every scan, and the segment is not sealed.
    pub(crate) fn place(&self, hash: &Hash, payload_bytes: u64) -> Result<(Arc<Segment>, u64)> {
        let record_bytes = format::record_bytes(payload_bytes);
        let identity = format::encode_record_identity(RecordKind::Blob, hash, payload_bytes);
        let mut active = self.active.lock();
        let (seg, offset, full) = self.room(&mut active, record_bytes)?;
        let written = seg.file.write_at(&identity, offset);
        self.end_append(active, (seg, offset, full), record_bytes, written, true)
    }

    /// Ends a write of a record of `record_bytes` at the place `room` gave it, begun under the
    /// append lock (`active`). Written, the append point moves past it and, with `hold`, the
    /// record is held in its segment until its caller's `placed_done`. Torn, the append point
    /// stays put: the next record overwrites the torn bytes, through the cache. Then, outside
    /// the lock, the full segment `room` replaced is sealed; if that fails, a held record is let
    /// go, as its caller will not.
    fn end_append(
        &self,
        mut active: parking_lot::MutexGuard<'_, Active>,
        (seg, offset, full): (Arc<Segment>, u64, Option<Arc<Segment>>),
        record_bytes: u64,
        written: std::io::Result<()>,
        hold: bool,
    ) -> Result<(Arc<Segment>, u64)> {
        if written.is_ok() {
            active.end = offset + record_bytes;
            seg.written_end.store(active.end, Ordering::Release);
            if hold {
                seg.placing.lock().records += 1;
            }
        } else {
            seg.stop_direct_writes();
        }
        drop(active);
        let sealed = full.map_or(Ok(()), |full| self.seal_when_placed(&full));
        written.map_err(|e| Error::io("write record to", &seg.path, e))?;
        if let Err(e) = sealed {
            if hold {
                let _ = self.placed_done(&seg);
            }
            return Err(e);
        }
        Ok((seg, offset))
    }

    /// A placed record was committed or abandoned: the last one in a full segment seals it.
    pub(crate) fn placed_done(&self, seg: &Segment) -> Result<()> {
        let mut placing = seg.placing.lock();
        placing.records -= 1;
        let seal_now = placing.records == 0 && std::mem::take(&mut placing.seal_due);
        drop(placing);
        match seal_now {
            true => self.seal(seg),
            false => Ok(()),
        }
    }

    /// Seals a segment that takes no more records now, or, while records placed in it are
    /// still being written, once the last of them is done.
    /// Either way the segment is synced now, as sealing would: what was appended to it is
    /// durable before anything relies on it (compaction removing originals, `Store::sync`), and
    /// the syncer of `SyncMode::Interval`, which covers only the open segment, need not.
    fn seal_when_placed(&self, seg: &Segment) -> Result<()> {
        let mut placing = seg.placing.lock();
        if placing.records > 0 {
            placing.seal_due = true;
            drop(placing);
            return seg
                .sync_written()
                .map_err(|SyncFailed(e)| self.fsync_failed(&seg.path, e));
        }
        drop(placing);
        self.seal(seg)
    }

    fn create_shared_segment(&self) -> Result<Arc<Segment>> {
        let bytes = self.config.segment_bytes;
        self.reserve_bytes(bytes)?;
        let id = match self.allocate_segment_id() {
            Ok(id) => id,
            Err(e) => {
                self.release_bytes(bytes);
                return Err(e);
            }
        };
        let path = self.segment_dir.join(segment_file_name(id));
        let created = (|| {
            let file = self
                .storage
                .create(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            let header = SegmentHeader {
                version: format::FORMAT_VERSION,
                kind: SegmentKind::Shared,
                segment_id: id,
                capacity_bytes: bytes,
            };
            file.set_len(bytes)
                .map_err(|e| Error::io("size", &path, e))?;
            file.write_at(&format::encode_segment_header(&header), 0)
                .map_err(|e| Error::io("write header of", &path, e))?;
            file.sync_data().map_err(|e| self.fsync_failed(&path, e))?;
            self.storage
                .sync_dir(&self.segment_dir)
                .map_err(|e| self.fsync_failed(&self.segment_dir, e))?;
            let map = file.map().map_err(|e| Error::io("map", &path, e))?;
            Ok(Arc::new(Segment::new(
                id,
                path.clone(),
                file,
                map,
                SEGMENT_HEADER_BYTES,
                false,
                self.config.direct_writes,
                self.fsyncs.clone(),
            )))
        })();
        match created {
            Ok(seg) => {
                self.segments.write().insert(id, seg.clone());
                Ok(seg)
            }
            Err(e) => {
                let _ = self.storage.remove(&path);
                self.release_bytes(bytes);
                Err(e)
            }
        }
    }

    /// Seals a full shared segment: fsync it, then write its hint file (temp name, fsync,
    /// rename, fsync the directory).
    fn seal(&self, seg: &Segment) -> Result<()> {
        seg.sync_written()
            .map_err(|SyncFailed(e)| self.fsync_failed(&seg.path, e))?;
        // Nothing is placed in it any more.
        seg.end_direct_writes();
        let end = seg.written_end.load(Ordering::Acquire);
        let scan = format::scan_records(
            seg.map.bytes(0, end),
            SEGMENT_HEADER_BYTES,
            ScanCheck::Headers,
        );
        assert_eq!(
            scan.valid_end, end,
            "segment {} does not scan to its written end",
            seg.id
        );
        let entries: Vec<HintEntry> = scan.records.iter().map(HintEntry::from_scanned).collect();
        self.write_hint(seg.id, &entries)?;
        seg.sealed.store(true, Ordering::Release);
        release_if_unread(seg);
        Ok(())
    }

    fn write_hint(&self, id: u32, entries: &[HintEntry]) -> Result<()> {
        let bytes = format::encode_hint_file(id, entries);
        let temp = self.temp_dir.join(hint_file_name(id));
        let path = self.segment_dir.join(hint_file_name(id));
        let file = self
            .storage
            .create(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        file.write_at(&bytes, 0)
            .map_err(|e| Error::io("write", &temp, e))?;
        file.sync_data().map_err(|e| self.fsync_failed(&temp, e))?;
        self.storage
            .rename(&temp, &path)
            .map_err(|e| Error::io("rename", &temp, e))?;
        self.storage
            .sync_dir(&self.segment_dir)
            .map_err(|e| self.fsync_failed(&self.segment_dir, e))
    }

    /// Registers a finished dedicated segment and counts its record.
    pub(crate) fn add_segment(&self, seg: Arc<Segment>) {
        self.segments.write().insert(seg.id, seg);
    }

    fn read(&self, hash: &Hash, range: Option<(u64, u64)>) -> Result<Option<Blob>> {
        // Fast path: one index probe, one header decode. An empty primary slot means absent (the
        // index never keeps an overflow entry behind an empty primary slot). Anything unusual (a
        // prefix shared with another hash, a segment compacted away) takes the full path below.
        match self.index.get_by_prefix(hash) {
            None => {
                if self.quarantined.lock().contains(hash) {
                    return Err(Error::Quarantined { hash: *hash });
                }
                return Ok(None);
            }
            Some(loc) => {
                if let Some(seg) = self.segment(loc.segment_id)
                    && let Ok(blob) = seg.read_blob(u64::from(loc.offset), hash, range)
                {
                    return Ok(Some(blob));
                }
            }
        }
        let mut gone = None;
        for _ in 0..READ_RETRY_COUNT_MAX {
            let Some(loc) = self.index.get(hash, &|l| self.name_of(l)) else {
                if self.quarantined.lock().contains(hash) {
                    return Err(Error::Quarantined { hash: *hash });
                }
                return Ok(None);
            };
            // Compaction may have moved the blob and removed the segment since; look again.
            let Some(seg) = self.segment(loc.segment_id) else {
                gone = Some(loc);
                continue;
            };
            return match seg.read_blob(u64::from(loc.offset), hash, range) {
                Ok(blob) => Ok(Some(blob)),
                Err(e @ Error::Corrupted { .. }) => {
                    self.quarantine(hash, loc);
                    Err(e)
                }
                Err(e) => Err(e),
            };
        }
        self.drop_dangling(hash, gone);
        Ok(None)
    }

    /// An index entry that still points at a removed segment after `READ_RETRY_COUNT_MAX`
    /// looks: compaction updates the index before it removes a segment, so this is a bug, not
    /// a race. The entry is dropped and counted (`Stats::dangling_index_entries`): the blob is
    /// then absent here, as its bytes are, and the healer fetches it again from its replicas.
    fn drop_dangling(&self, hash: &Hash, gone: Option<Location>) {
        let gone = gone.expect("only a removed segment makes a lookup retry");
        let previous = self.index.update(hash, &|l| self.name_of(l), |cur| {
            if cur == Some(gone) { None } else { cur }
        });
        if previous == Some(gone) {
            self.dangling_index_entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stat(&self, hash: &Hash) -> Result<BlobStat> {
        // Fast path, as `read`'s: the primary slot's header, read once, names the blob.
        // Anything else (absent, a prefix shared with another hash) takes the full path below.
        if let Some(loc) = self.index.get_by_prefix(hash)
            && let Some(seg) = self.segment(loc.segment_id)
            && let Ok(h) = seg.header_read(u64::from(loc.offset))
            && h.hash == *hash
            && h.kind == RecordKind::Blob
        {
            return Ok(BlobStat::Present {
                bytes: h.payload_bytes,
            });
        }
        let mut gone = None;
        for _ in 0..READ_RETRY_COUNT_MAX {
            let Some(loc) = self.index.get(hash, &|l| self.name_of(l)) else {
                if self.quarantined.lock().contains(hash) {
                    return Ok(BlobStat::Quarantined);
                }
                return Ok(BlobStat::Absent);
            };
            let Some(seg) = self.segment(loc.segment_id) else {
                gone = Some(loc);
                continue;
            };
            return match seg.header_read(u64::from(loc.offset)) {
                Ok(h) if h.hash == *hash && h.kind == RecordKind::Blob => Ok(BlobStat::Present {
                    bytes: h.payload_bytes,
                }),
                Ok(_) => {
                    self.quarantine(hash, loc);
                    Err(Error::Corrupted {
                        segment: seg.id,
                        offset: u64::from(loc.offset),
                        kind: CorruptionKind::HashNameMismatch,
                    })
                }
                Err(e @ Error::Corrupted { .. }) => {
                    self.quarantine(hash, loc);
                    Err(e)
                }
                Err(e) => Err(e),
            };
        }
        self.drop_dangling(hash, gone);
        Ok(BlobStat::Absent)
    }

    fn verify(&self, hash: &Hash) -> Result<Option<u64>> {
        let Some(blob) = self.read(hash, None)? else {
            return Ok(None);
        };
        let actual = Hash::of(&blob);
        // The check's pages are of no use to any reader (a scrub walks the whole store).
        blob.release_record_pages();
        if actual == *hash {
            return Ok(Some(blob.len() as u64));
        }
        let Some(loc) = self.index.get(hash, &|l| self.name_of(l)) else {
            return Ok(None); // deleted meanwhile
        };
        self.quarantine(hash, loc);
        Err(Error::Corrupted {
            segment: loc.segment_id,
            offset: u64::from(loc.offset),
            kind: CorruptionKind::ContentHash,
        })
    }

    fn scrub(&self) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let entries = self.index.entries_in(0, u64::MAX, &|l| self.name_of(l));
        for (hash, _) in entries {
            match self.verify(&hash) {
                Ok(Some(bytes)) => {
                    report.blobs_checked += 1;
                    report.bytes_checked += bytes;
                }
                Ok(None) => {}
                Err(Error::Corrupted { .. }) => {
                    report.blobs_checked += 1;
                    report.corrupt.push(hash);
                }
                // Quarantined meanwhile, through another entry naming the same blob.
                Err(Error::Quarantined { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        report.corrupt.sort();
        Ok(report)
    }

    /// Stops serving a corrupt copy: drop it from the index and record the quarantine on disk
    /// (best effort: a read-only store keeps it in memory only).
    fn quarantine(&self, hash: &Hash, loc: Location) {
        let previous = self.index.update(hash, &|l| self.name_of(l), |cur| {
            if cur == Some(loc) { None } else { cur }
        });
        if previous != Some(loc) {
            return; // already moved, deleted or quarantined by someone else
        }
        self.account_dead(loc);
        self.quarantined.lock().insert(*hash);
        if self.check_writable().is_ok()
            && let Ok((seg, _, seq)) = self.append(RecordKind::Quarantine, hash, &[], None, false)
        {
            seg.note_record(seq, 0);
            let _ = self.durable(&seg);
        }
    }

    fn account_dead(&self, loc: Location) {
        if let Some(seg) = self.segment(loc.segment_id)
            && let Ok(h) = seg.header_read(u64::from(loc.offset))
        {
            sub_saturating(&seg.live_bytes, format::record_bytes(h.payload_bytes));
        }
    }

    fn delete(&self, hash: &Hash) -> Result<bool> {
        self.check_writable()?;
        let quarantined = self.quarantined.lock().contains(hash);
        if !quarantined && !self.contains(hash) {
            return Ok(false);
        }
        let (seg, _, seq) = self.append(RecordKind::Tombstone, hash, &[], None, false)?;
        seg.note_record(seq, 0);
        self.durable(&seg)?;
        // The tombstone's sequence number is higher than any record of this hash, so whatever
        // the index points at now (perhaps moved by compaction meanwhile) is dead.
        if let Some(loc) = self.index.update(hash, &|l| self.name_of(l), |_| None) {
            self.account_dead(loc);
        }
        self.quarantined.lock().remove(hash);
        Ok(true)
    }

    fn list(&self, start: &Hash, end: Option<&Hash>, limit: usize) -> Vec<Hash> {
        let prefix_end = end.map_or(u64::MAX, Hash::prefix_u64);
        let mut hashes: Vec<Hash> = self
            .index
            .entries_in(start.prefix_u64(), prefix_end, &|l| self.name_of_mapped(l))
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| h >= start && end.is_none_or(|e| h < e))
            .collect();
        hashes.sort_unstable();
        hashes.truncate(limit);
        for seg in self.segment_list() {
            release_if_unread(&seg);
        }
        hashes
    }

    fn stats(&self) -> Stats {
        // A snapshot: no other lock is taken while `segments` is held (see `segment`).
        let segments = self.segment_list();
        let live_bytes: u64 = segments
            .iter()
            .map(|s| s.live_bytes.load(Ordering::Relaxed))
            .sum();
        let written: u64 = segments.iter().map(|s| s.written_bytes()).sum();
        let used_bytes = self.used_bytes.load(Ordering::Relaxed);
        let reclaimable_bytes = {
            let damaged = self.compaction_damaged.lock();
            segments
                .iter()
                .filter(|s| self.compactable(s, &damaged))
                .map(|s| {
                    s.file_bytes
                        .saturating_sub(s.live_bytes.load(Ordering::Relaxed))
                })
                .sum()
        };
        Stats {
            blob_count: self.index.len(),
            live_bytes,
            dead_bytes: written.saturating_sub(live_bytes),
            segment_count: segments.len() as u64,
            capacity_bytes: self.config.capacity_bytes,
            used_bytes,
            free_bytes: self.config.capacity_bytes.saturating_sub(used_bytes),
            index_heap_bytes: self.index.heap_bytes(),
            quarantined_count: self.quarantined.lock().len() as u64,
            fsync_count: self.fsyncs.count(),
            fsync_latency: self.fsyncs.snapshot(),
            read_only: self.read_only.lock().clone(),
            reclaimable_bytes,
            direct_writes_declined: self.direct_writes_declined.load(Ordering::Relaxed),
            dangling_index_entries: self.dangling_index_entries.load(Ordering::Relaxed),
        }
    }

    /// Whether compaction takes `s`: sealed, not known damaged, and live below the threshold.
    fn compactable(&self, s: &Segment, damaged: &HashSet<u32>) -> bool {
        let live = s.live_bytes.load(Ordering::Relaxed);
        s.sealed.load(Ordering::Acquire)
            && !damaged.contains(&s.id)
            && (live == 0
                || (live as f64)
                    < self.config.compact_live_ratio_below * s.written_bytes().max(1) as f64)
    }

    /// The segments compaction takes, oldest first.
    fn compaction_victims(&self) -> Vec<Arc<Segment>> {
        let segments = self.segment_list();
        let damaged = self.compaction_damaged.lock();
        let mut victims: Vec<Arc<Segment>> = segments
            .into_iter()
            .filter(|s| self.compactable(s, &damaged))
            .collect();
        victims.sort_by_key(|s| s.min_seq.load(Ordering::Relaxed));
        victims
    }

    fn compact(&self) -> Result<CompactionReport> {
        let _one_at_a_time = self.compaction.lock();
        self.check_writable()?;
        let mut report = CompactionReport::default();
        for victim in self.compaction_victims() {
            self.compact_one(&victim, &mut report)?;
        }
        Ok(report)
    }

    fn compact_segment(&self, id: u32) -> Result<Option<CompactionReport>> {
        let _one_at_a_time = self.compaction.lock();
        self.check_writable()?;
        let Some(victim) = self.segment(id) else {
            return Ok(None);
        };
        if !self.compactable(&victim, &self.compaction_damaged.lock()) {
            return Ok(None);
        }
        let mut report = CompactionReport::default();
        self.compact_one(&victim, &mut report)?;
        Ok(Some(report))
    }

    fn seal_open_segment_if_dead(&self, dead_bytes_min: u64) -> Result<bool> {
        let mut active = self.active.lock();
        self.check_writable()?;
        let Some(seg) = active.segment.clone() else {
            return Ok(false);
        };
        if seg.placing.lock().records > 0 {
            // A record being written, or appended and not yet in the index, counts as dead
            // until it is: compaction would drop it.
            return Ok(false);
        }
        let written = seg.written_bytes();
        let live = seg.live_bytes.load(Ordering::Relaxed);
        let dead = written.saturating_sub(live);
        let past_threshold = (live as f64) < self.config.compact_live_ratio_below * written as f64;
        let worth = written > 0 && (live == 0 || (dead >= dead_bytes_min && past_threshold));
        if !worth {
            return Ok(false);
        }
        active.segment = None;
        active.end = SEGMENT_HEADER_BYTES;
        drop(active);
        self.seal_when_placed(&seg)?;
        Ok(true)
    }

    fn compact_one(&self, victim: &Arc<Segment>, report: &mut CompactionReport) -> Result<()> {
        let end = victim.written_end.load(Ordering::Acquire);
        let scan = format::scan_records(
            victim.map.bytes(0, end),
            SEGMENT_HEADER_BYTES,
            ScanCheck::Headers,
        );
        if scan.valid_end != end {
            // Damaged in the middle: records past the damage cannot be found by scanning, and
            // removing the segment would lose them. Leave it for scrub and repair.
            report.segments_skipped_damaged += 1;
            self.compaction_damaged.lock().insert(victim.id);
            return Ok(());
        }
        for &(offset, _) in &scan.skipped {
            // A record passed over that the index still names was committed and has decayed
            // since: quarantined like any copy that fails its checks, for repair to replace.
            let here = Location {
                segment_id: victim.id,
                offset: offset as u32,
            };
            if let Some(hash) = victim.name_at(offset)
                && self.index.get(&hash, &|l| self.name_of(l)) == Some(here)
            {
                self.quarantine(&hash, here);
            }
        }
        for record in &scan.records {
            let RecordHeader {
                kind,
                hash,
                seq,
                payload_bytes,
                ..
            } = record.header;
            match kind {
                RecordKind::Blob => {
                    let here = Location {
                        segment_id: victim.id,
                        offset: record.offset as u32,
                    };
                    if self.index.get(&hash, &|l| self.name_of(l)) != Some(here) {
                        continue; // dead
                    }
                    // Check before copying, so that compaction never spreads a bad copy.
                    let blob = match victim.read_blob(record.offset, &hash, None) {
                        Ok(blob) => blob,
                        Err(_) => {
                            self.quarantine(&hash, here);
                            continue;
                        }
                    };
                    let (seg, loc, _) =
                        self.append(RecordKind::Blob, &hash, &blob, Some(seq), true)?;
                    let record_bytes = format::record_bytes(payload_bytes);
                    seg.note_record(seq, record_bytes);
                    let previous = self.index.update(&hash, &|l| self.name_of(l), |cur| {
                        if cur == Some(here) { Some(loc) } else { cur }
                    });
                    if previous == Some(here) {
                        sub_saturating(&victim.live_bytes, record_bytes);
                        report.blobs_moved += 1;
                        report.bytes_moved += record_bytes;
                    } else {
                        // Deleted or quarantined while we copied: the copy is dead. Its old
                        // sequence number keeps the segment's minimum low enough that the
                        // tombstone that killed it outlives it.
                        sub_saturating(&seg.live_bytes, record_bytes);
                    }
                    self.placed_done(&seg)?;
                }
                RecordKind::Tombstone | RecordKind::Quarantine => {
                    let oldest_elsewhere = self
                        .segments
                        .read()
                        .values()
                        .filter(|s| s.id != victim.id)
                        .map(|s| s.min_seq.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(u64::MAX);
                    if oldest_elsewhere > seq {
                        report.tombstones_dropped += 1;
                    } else {
                        let (seg, _, _) = self.append(kind, &hash, &[], Some(seq), false)?;
                        seg.note_record(seq, 0);
                        report.tombstones_kept += 1;
                    }
                }
            }
        }
        // The copies must be durable before the originals go.
        self.sync_active()?;
        self.segments.write().remove(&victim.id);
        self.storage
            .remove(&victim.path)
            .map_err(|e| Error::io("remove", &victim.path, e))?;
        let hint = self.segment_dir.join(hint_file_name(victim.id));
        match self.storage.remove(&hint) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &hint, e)),
        }
        self.storage
            .sync_dir(&self.segment_dir)
            .map_err(|e| self.fsync_failed(&self.segment_dir, e))?;
        self.release_bytes(victim.file_bytes);
        report.segments_removed += 1;
        report.bytes_reclaimed += victim.file_bytes;
        Ok(())
    }

    /// Rebuilds the index from the segment files. See engine/FORMAT.md, "Recovery".
    fn recover(&mut self, report: &mut RecoveryReport) -> Result<()> {
        let dir = self.segment_dir.clone();
        let names = self
            .storage
            .list_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?;
        let mut segment_ids: Vec<u32> = names.iter().filter_map(|n| parse_id(n, ".seg")).collect();
        segment_ids.sort_unstable();
        let hint_ids: HashSet<u32> = names.iter().filter_map(|n| parse_id(n, ".hint")).collect();
        let max_id = segment_ids
            .iter()
            .chain(hint_ids.iter())
            .copied()
            .max()
            .unwrap_or(0);
        self.next_segment_id
            .store(max_id.saturating_add(1), Ordering::Relaxed);
        for &id in hint_ids
            .iter()
            .filter(|id| segment_ids.binary_search(id).is_err())
        {
            // A hint whose segment compaction removed.
            let path = dir.join(hint_file_name(id));
            self.storage
                .remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }

        let mut loaded: Vec<(Arc<Segment>, Vec<HintEntry>)> = Vec::new();
        let mut unsealed: Vec<usize> = Vec::new();
        // Shared segments shorter than their header says, or of an older format version: read
        // as they are, never appended to.
        let mut closed: HashSet<u32> = HashSet::new();
        for &id in &segment_ids {
            let path = dir.join(segment_file_name(id));
            let file = self
                .storage
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            let file_bytes = file.len().map_err(|e| Error::io("size of", &path, e))?;
            let header = read_segment_header(file.as_ref(), file_bytes, id);
            let header = match header {
                Ok(h) => h,
                Err(problem) => {
                    if never_written(file.as_ref(), file_bytes) {
                        // A crash while the segment was being created, before it held anything.
                        self.storage
                            .remove(&path)
                            .map_err(|e| Error::io("remove", &path, e))?;
                    } else {
                        drop(file);
                        self.set_aside(id, path, problem, hint_ids.contains(&id), report);
                    }
                    continue;
                }
            };
            if file_bytes < header.capacity_bytes || header.version != format::FORMAT_VERSION {
                closed.insert(id);
            }
            let map = file.map().map_err(|e| Error::io("map", &path, e))?;
            report.segments_opened += 1;
            self.used_bytes.fetch_add(file_bytes, Ordering::Relaxed);
            let bytes = map.bytes(0, file_bytes);
            let (entries, written_end, sealed) = match header.kind {
                SegmentKind::Dedicated => {
                    let scan =
                        format::scan_records(bytes, SEGMENT_HEADER_BYTES, ScanCheck::Headers);
                    if scan.records.len() != 1 || scan.valid_end != file_bytes {
                        let problem = scan.stopped_by.unwrap_or(FormatError::BadLength);
                        // The one record of a dedicated segment is lost with it.
                        report.records_lost += 1;
                        self.used_bytes.fetch_sub(file_bytes, Ordering::Relaxed);
                        drop((file, map));
                        self.set_aside(id, path, problem, false, report);
                        continue;
                    }
                    let entry = HintEntry::from_scanned(&scan.records[0]);
                    (vec![entry], file_bytes, true)
                }
                SegmentKind::Shared => {
                    let hint = hint_ids
                        .contains(&id)
                        .then(|| self.read_hint(id, file_bytes))
                        .transpose()?
                        .flatten();
                    match hint {
                        Some(entries) => {
                            report.hint_files_used += 1;
                            let end = entries
                                .iter()
                                .map(|e| {
                                    u64::from(e.offset) + format::record_bytes(e.payload_bytes)
                                })
                                .max()
                                .unwrap_or(SEGMENT_HEADER_BYTES);
                            (entries, end, true)
                        }
                        None => {
                            report.segments_scanned += 1;
                            let scan = format::scan_records(
                                bytes,
                                SEGMENT_HEADER_BYTES,
                                ScanCheck::Content,
                            );
                            if let Some(problem) =
                                scan.stopped_by.filter(|p| *p != FormatError::Zeroed)
                            {
                                report.torn_tails.push((id, scan.valid_end, problem));
                            }
                            let skipped = scan.skipped.iter().map(|&(at, p)| (id, at, p));
                            report.records_skipped.extend(skipped);
                            // A hint file that did not fit the segment (it was cut short) still
                            // says what the segment held.
                            if hint_ids.contains(&id)
                                && let Some(listed) = self.read_hint(id, SEGMENT_BYTES_MAX)?
                            {
                                report.records_lost += listed
                                    .iter()
                                    .filter(|e| {
                                        u64::from(e.offset) + format::record_bytes(e.payload_bytes)
                                            > scan.valid_end
                                    })
                                    .count()
                                    as u64;
                            }
                            let entries =
                                scan.records.iter().map(HintEntry::from_scanned).collect();
                            unsealed.push(loaded.len());
                            (entries, scan.valid_end, false)
                        }
                    }
                }
            };
            let seg = Segment::new(
                id,
                path,
                file,
                map,
                written_end,
                sealed,
                false,
                self.fsyncs.clone(),
            );
            loaded.push((Arc::new(seg), entries));
        }

        // The newest unsealed shared segment stays open for appends, with anything after its
        // last good record cleared; any other unsealed one (a crash while sealing, one cut
        // short, or one of an older format version) is sealed now.
        let reopened = unsealed
            .last()
            .copied()
            .filter(|&i| !closed.contains(&loaded[i].0.id));
        if let Some(last) = reopened {
            let seg = &loaded[last].0;
            let end = seg.written_end.load(Ordering::Relaxed);
            let (file, path) = (seg.file.clone(), seg.path.clone());
            // Zero whatever a torn write left past the last good record, in place: the file's
            // size never changes, so a crash in the middle of this leaves a store that the next
            // open recovers the same way.
            let tail = seg.map.bytes(end, seg.file_bytes - end);
            let mut cleared = false;
            if let Some(dirty_bytes) = dirty_prefix_bytes(tail) {
                let zeros = vec![0u8; ZERO_WRITE_BYTES_MAX.min(dirty_bytes) as usize];
                let mut at = end;
                while at < end + dirty_bytes {
                    let n = (end + dirty_bytes - at).min(zeros.len() as u64);
                    file.write_at(&zeros[..n as usize], at)
                        .map_err(|e| Error::io("clear the tail of", &path, e))?;
                    at += n;
                }
                cleared = true;
            }
            // A record passed over for failing its checks after its commit has its commit
            // cleared, so that it reads as never committed: the hint file written when this
            // segment is sealed comes from a scan of headers alone, which would list it.
            let id = seg.id;
            for &(_, at, _) in (report.records_skipped.iter())
                .filter(|s| s.0 == id && s.2 != FormatError::Uncommitted)
            {
                file.write_at(&[0u8; 12], at + format::RECORD_COMMIT_OFFSET)
                    .map_err(|e| Error::io("clear a bad record's commit in", &path, e))?;
                cleared = true;
            }
            if cleared {
                file.sync_data().map_err(|e| self.fsync_failed(&path, e))?;
            }
            *self.active.get_mut() = Active {
                segment: Some(seg.clone()),
                end,
            };
        }
        for &i in unsealed.iter().filter(|&&i| Some(i) != reopened) {
            let (seg, entries) = &loaded[i];
            self.write_hint(seg.id, entries)?;
            seg.sealed.store(true, Ordering::Release);
            report.hint_files_written += 1;
        }

        for (seg, _) in &loaded {
            self.segments.get_mut().insert(seg.id, seg.clone());
        }
        let mut max_seq = 0;
        let mut tombstones: HashMap<Hash, (u64, RecordKind)> = HashMap::new();
        for (seg, entries) in &loaded {
            for e in entries {
                max_seq = max_seq.max(e.seq);
                seg.min_seq.fetch_min(e.seq, Ordering::Relaxed);
                if e.kind != RecordKind::Blob {
                    let newest = tombstones.entry(e.hash).or_insert((e.seq, e.kind));
                    if e.seq > newest.0 {
                        *newest = (e.seq, e.kind);
                    }
                    continue;
                }
                let loc = Location {
                    segment_id: seg.id,
                    offset: e.offset,
                };
                let mut replaced = None;
                let mut won = true;
                self.index
                    .update(&e.hash, &|l| self.name_of(l), |cur| match cur {
                        None => Some(loc),
                        Some(old) if self.seq_at(old).is_none_or(|s| e.seq > s) => {
                            replaced = Some(old);
                            Some(loc)
                        }
                        Some(old) => {
                            won = false;
                            Some(old)
                        }
                    });
                if won {
                    seg.live_bytes
                        .fetch_add(format::record_bytes(e.payload_bytes), Ordering::Relaxed);
                    if let Some(old) = replaced {
                        self.account_dead(old);
                    }
                }
            }
        }
        let mut quarantined = HashSet::new();
        for (hash, (seq, kind)) in tombstones {
            let mut removed = None;
            let name_of = |l: Location| self.name_of(l);
            self.index.update(&hash, &name_of, |cur| match cur {
                Some(loc) if self.seq_at(loc).is_none_or(|s| s < seq) => {
                    removed = Some(loc);
                    None
                }
                other => other,
            });
            if let Some(loc) = removed {
                self.account_dead(loc);
            }
            if kind == RecordKind::Quarantine && self.index.get(&hash, &name_of).is_none() {
                quarantined.insert(hash);
            }
        }
        *self.quarantined.get_mut() = quarantined;
        self.next_seq
            .store(max_seq.saturating_add(1), Ordering::Relaxed);
        report.blobs_indexed = self.index.len();
        Ok(())
    }

    /// The entries of a hint file, or `None` if it is unusable (then the segment is scanned).
    /// Moves an unreadable segment (and its hint file) into `damaged/`, counting the records
    /// its hint file lists as lost. A failure to move leaves it in place, reported.
    fn set_aside(
        &self,
        id: u32,
        path: PathBuf,
        problem: FormatError,
        has_hint: bool,
        report: &mut RecoveryReport,
    ) {
        if has_hint && let Ok(Some(listed)) = self.read_hint(id, SEGMENT_BYTES_MAX) {
            report.records_lost += listed.len() as u64;
        }
        let moved_to = (|| {
            self.storage.create_dir_all(&self.damaged_dir).ok()?;
            let name = path.file_name()?.to_string_lossy().into_owned();
            let taken = self.storage.list_dir(&self.damaged_dir).ok()?;
            let free = (0..DAMAGED_NAMES_MAX)
                .map(|k| format!("{name}.{k}"))
                .find(|n| !taken.contains(n))
                .map(|n| self.damaged_dir.join(n))?;
            self.storage.rename(&path, &free).ok()?;
            if has_hint {
                let hint = self.segment_dir.join(hint_file_name(id));
                let mut hint_to = free.clone().into_os_string();
                hint_to.push(".hint");
                let _ = self.storage.rename(&hint, Path::new(&hint_to));
            }
            self.storage.sync_dir(&self.segment_dir).ok()?;
            self.storage.sync_dir(&self.damaged_dir).ok()?;
            Some(free)
        })();
        report.unreadable_segments.push(UnreadableSegment {
            path,
            problem,
            moved_to,
        });
    }

    fn read_hint(&self, id: u32, segment_bytes: u64) -> Result<Option<Vec<HintEntry>>> {
        let path = self.segment_dir.join(hint_file_name(id));
        let file = self
            .storage
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file.len().map_err(|e| Error::io("size of", &path, e))?;
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        if file.read_at(&mut bytes, 0).is_err() {
            return Ok(None);
        }
        Ok(format::decode_hint_file(&bytes, id, segment_bytes).ok())
    }
}

fn read_segment_header(
    file: &dyn StorageFile,
    file_bytes: u64,
    id: u32,
) -> Result<SegmentHeader, FormatError> {
    if file_bytes < SEGMENT_HEADER_BYTES {
        return Err(FormatError::Truncated);
    }
    let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_at(&mut b, 0)
        .map_err(|_| FormatError::Truncated)?;
    let header = format::decode_segment_header(&b)?;
    let size_ok = match header.kind {
        // A shared segment cut short (a file system that lost a size change) is read as it is
        // and sealed; appends go to a new segment.
        SegmentKind::Shared => {
            header.capacity_bytes >= file_bytes && header.capacity_bytes <= SEGMENT_BYTES_MAX
        }
        SegmentKind::Dedicated => header.capacity_bytes == file_bytes,
    };
    if header.segment_id != id || !size_ok {
        return Err(FormatError::BadLength);
    }
    Ok(header)
}

/// The length of the shortest prefix of `tail` after which every byte is zero; `None` if the
/// whole tail is zero. Checks 4 KiB blocks from the end, eight bytes at a time.
fn dirty_prefix_bytes(tail: &[u8]) -> Option<u64> {
    const BLOCK_BYTES: usize = 4096;
    let is_zero = |block: &[u8]| {
        let words = block.chunks_exact(8);
        let rest = words.remainder();
        rest.iter().all(|&b| b == 0)
            && words
                .into_iter()
                .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
    };
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK_BYTES);
        let block = &tail[start..end];
        if !is_zero(block) {
            let last = block.iter().rposition(|&b| b != 0).expect("not all zero");
            return Some((start + last + 1) as u64);
        }
        end = start;
    }
    None
}

/// Whether a segment file whose header is unreadable never held anything: empty, or zeros
/// where its header and first record would be.
fn never_written(file: &dyn StorageFile, file_bytes: u64) -> bool {
    let probe = file_bytes.min(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
    let mut b = vec![0u8; probe as usize];
    file.read_at(&mut b, 0).is_ok() && b.iter().all(|&x| x == 0)
}

/// A record encoded but for its sequence number, so that the checksums and the copy are done
/// before the append lock is taken and only the 64-byte header is built under it.
struct EncodedRecord<'a> {
    kind: RecordKind,
    hash: Hash,
    payload: &'a [u8],
    table: Vec<u8>,
    /// Small records: the whole record in one buffer (header bytes still zero), one write.
    whole: Option<Vec<u8>>,
}

impl<'a> EncodedRecord<'a> {
    /// Payloads up to this size are copied into one buffer and written with one call.
    const SINGLE_WRITE_BYTES_MAX: usize = 256 * 1024;

    fn new(kind: RecordKind, hash: &Hash, payload: &'a [u8]) -> EncodedRecord<'a> {
        let table = format::chunk_table(payload);
        let whole = (payload.len() <= Self::SINGLE_WRITE_BYTES_MAX).then(|| {
            let mut buf = Vec::with_capacity(format::record_bytes(payload.len() as u64) as usize);
            buf.resize(RECORD_HEADER_BYTES as usize, 0);
            buf.extend_from_slice(payload);
            buf.extend_from_slice(&table);
            buf
        });
        EncodedRecord {
            kind,
            hash: *hash,
            payload,
            table,
            whole,
        }
    }

    fn record_bytes(&self) -> u64 {
        format::record_bytes(self.payload.len() as u64)
    }

    /// Writes the record at `offset` with sequence number `seq`.
    fn write(&mut self, file: &dyn StorageFile, offset: u64, seq: u64) -> std::io::Result<()> {
        let len = self.payload.len() as u64;
        let header = format::record_header(self.kind, &self.hash, len, seq, &self.table);
        let header = format::encode_record_header(&header);
        if let Some(whole) = &mut self.whole {
            whole[..RECORD_HEADER_BYTES as usize].copy_from_slice(&header);
            return file.write_at(whole, offset);
        }
        file.write_at(&header, offset)?;
        file.write_at(self.payload, offset + RECORD_HEADER_BYTES)?;
        file.write_at(
            &self.table,
            offset + RECORD_HEADER_BYTES + self.payload.len() as u64,
        )
    }
}

pub(crate) fn sub_saturating(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn mem_store() -> Store {
        Store::open_with(
            Arc::new(MemStorage::new()),
            Path::new("/s"),
            Config::default(),
        )
        .unwrap()
    }

    #[test]
    fn an_index_entry_pointing_at_a_removed_segment_is_dropped_and_counted() {
        let store = mem_store();
        let kept = store.put(b"a blob that stays").unwrap();
        // An entry no segment backs, as a bug in compaction would leave.
        let dangling = Hash::of(b"a blob whose segment is gone");
        let nowhere = Location {
            segment_id: 999,
            offset: 64,
        };
        let inner = &store.inner;
        inner
            .index
            .update(&dangling, &|l| inner.name_of(l), |_| Some(nowhere));
        assert_eq!(store.stat(&dangling).unwrap(), BlobStat::Absent);
        assert_eq!(store.stats().dangling_index_entries, 1);
        inner
            .index
            .update(&dangling, &|l| inner.name_of(l), |_| Some(nowhere));
        assert!(store.get(&dangling).unwrap().is_none());
        assert_eq!(store.stats().dangling_index_entries, 2);
        assert!(
            store.get(&dangling).unwrap().is_none(),
            "dropped, not found again"
        );
        assert_eq!(store.stats().dangling_index_entries, 2);
        assert_eq!(&*store.get(&kept).unwrap().unwrap(), b"a blob that stays");
    }

    #[test]
    fn a_blob_record_the_index_does_not_name_yet_keeps_its_segment_open() {
        // Compaction keeps only the records the index names, and a put names its record after
        // its fsync: until then its segment is neither sealed early nor compacted.
        let store = mem_store();
        // Mostly dead bytes, so that the open segment is worth sealing and compacting.
        let dead = store.put(&[7u8; 200_000]).unwrap();
        store.delete(&dead).unwrap();
        let inner = &store.inner;
        let bytes = b"appended, not yet in the index";
        let hash = Hash::of(bytes);
        let (seg, loc, _) = inner
            .append(RecordKind::Blob, &hash, bytes, None, true)
            .unwrap();
        assert!(
            !store.seal_open_segment_if_dead(0).unwrap(),
            "sealed while held"
        );
        inner.publish(hash, &seg, loc);
        inner.placed_done(&seg).unwrap();
        assert!(store.seal_open_segment_if_dead(0).unwrap());
        store.compact().unwrap();
        assert_eq!(&*store.get(&hash).unwrap().unwrap(), bytes);
        assert_eq!(store.stats().dangling_index_entries, 0);
    }
}
