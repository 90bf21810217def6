//! Every bound the engine enforces, in one place, with units in the names.
//!
//! Exceeding one of these is a typed error, never a crash. The relations between them are
//! checked at compile time at the bottom of this file.

/// Bytes in a record header. Fixed so that a reader can find a record's payload without parsing.
pub const RECORD_HEADER_BYTES: u64 = 64;

/// Bytes in a segment file header; records start right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;

/// Payload bytes covered by one CRC32 in a record's chunk checksum table. A range read checks
/// only the chunks it touches, so reading 4 KiB of a 64 GiB blob does not checksum 64 GiB.
pub const CRC_CHUNK_BYTES: u64 = 64 * 1024;

/// Largest blob the engine stores: 1 TiB. Blobs this size live in a dedicated segment.
pub const BLOB_BYTES_MAX: u64 = 1 << 40;

/// Smallest configurable shared segment: big enough for a header and a few small records.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;

/// Largest configurable shared segment. Offsets inside a shared segment are stored as `u32` in
/// the index (that is what keeps an index entry at 16 bytes), so a segment is at most 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// Default capacity of a shared segment.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// By default, a blob whose name and length are known before its bytes (`Store::writer_for`) is
/// placed in its shared segment and written there as it arrives from this size on; a smaller
/// one is gathered whole and written in one call (`Config::placed_payload_bytes_min`).
pub const PLACED_PAYLOAD_BYTES_MIN: u64 = 256 * 1024;

/// A placed record's payload goes to the disk around the page cache (`O_DIRECT`) in writes of
/// this many bytes: pages written this way are not first touched in memory (4 to 11 us per
/// 4 KiB page on a VM) and leave no dirty pages for the kernel's writeback to throttle.
pub const DIRECT_WRITE_BYTES: usize = 1024 * 1024;

/// A read of at least this many bytes of a blob asks the kernel to read them ahead
/// (`Mapping::will_need`) before checking them: a large blob not in the page cache (one written
/// around it, or evicted) then comes from the disk in large reads, not a page at a time.
pub const READ_AHEAD_BYTES_MIN: u64 = 256 * 1024;

/// `Mapping::will_need` asks for a range in steps of this many bytes: Linux reads at most the
/// larger of the device's read-ahead window and its largest IO for one request (128 KiB by
/// default), and a segment read without read-ahead would fault the rest in a page at a time.
pub const WILL_NEED_STEP_BYTES: u64 = 128 * 1024;

/// A direct write's file offset, length and buffer address are multiples of this: 4 KiB,
/// which covers every logical block size Linux file systems ask for.
pub const DIRECT_WRITE_ALIGN_BYTES: usize = 4096;

/// A placed record's payload is written through the page cache for this many bytes at either
/// end (and up to the page boundaries after and before them), around it in between. The kernel
/// caches a file in folios of one or more pages (read-around makes 16 KiB ones; a 64 KiB page
/// kernel has no smaller ones), and a direct write cannot drop a cached folio that a neighbour's
/// bytes, written through the cache at the same moment, keep dirty: the stale pages would stay
/// readable. No folio of up to this size holds both a page written direct and a byte another
/// writer wrote through the cache.
pub const DIRECT_WRITE_GUARD_BYTES: u64 = 64 * 1024;

/// Direct-write buffers the store keeps for the next placed records once theirs is committed;
/// beyond it they are freed. A buffer reused is not first touched again.
pub const DIRECT_BUFFERS_SPARE_MAX: usize = 4;

/// Bytes the kernel maps around a faulting page of a file mapping, when they are in the page
/// cache (Linux's default `fault_around_bytes`). A read of a record's bytes can leave this much
/// of its neighbours resident on each side; releasing a record's pages releases them too.
pub const FAULT_AROUND_BYTES: u64 = 64 * 1024;

/// A streaming writer keeps at most this many bytes in memory. A blob that ends within it is
/// stored like `put`; a longer one spills to its own dedicated segment as it arrives.
pub const STREAM_BUFFER_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Streaming writers' buffers the store keeps for the next writers once theirs is done, at
/// most: a large blob written into a reused buffer does not pay for the first touch of fresh
/// pages (4 to 11 us per 4 KiB page on a VM). Buffers beyond it are freed.
pub const WRITE_BUFFERS_SPARE_MAX: usize = 2;

/// A streaming writer's buffer is taken from the spares (and given back) only when it is at
/// least this long; smaller ones are cheap to allocate.
pub const WRITE_BUFFER_SPARE_BYTES_MIN: u64 = 1024 * 1024;

/// A streaming writer buffers at most this many bytes of its chunk checksum table before it
/// spills them to a side file, so its memory does not grow with the blob (a 64 GiB blob has a
/// 4 MiB table).
pub const STREAM_TABLE_BUFFER_BYTES_MAX: u64 = 64 * 1024;

/// Bytes a `StreamHasher` gathers before handing them to BLAKE3: its SIMD paths hash up to 16
/// of its 1 KiB chunks at once, so an update of this much fills the widest of them.
pub const HASH_BATCH_BYTES: usize = 16 * 1024;

/// Number of independently locked shards of the in-memory index.
pub const INDEX_SHARD_COUNT: usize = 64;

/// Bytes of one hint file entry (see FORMAT.md).
pub const HINT_ENTRY_BYTES: u64 = 56;

/// Bytes of a hint file header (see FORMAT.md).
pub const HINT_HEADER_BYTES: u64 = 32;

/// Longest fsync interval accepted for `SyncMode::Interval`: one minute.
pub const SYNC_INTERVAL_MS_MAX: u64 = 60_000;

/// How many times a read retries after the segment it was pointed at was compacted away
/// underneath it. Each retry re-reads the index, which compaction updates before it removes a
/// segment, so one retry is normally enough.
pub const READ_RETRY_COUNT_MAX: u32 = 8;

/// Zeros are written over a torn tail in pieces of at most this size.
pub const ZERO_WRITE_BYTES_MAX: u64 = 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN >= SEGMENT_HEADER_BYTES + 16 * RECORD_HEADER_BYTES);
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= SEGMENT_BYTES_MIN);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(STREAM_BUFFER_BYTES_MAX <= BLOB_BYTES_MAX);
const _: () = assert!(STREAM_TABLE_BUFFER_BYTES_MAX.is_multiple_of(4));
const _: () = assert!(INDEX_SHARD_COUNT.is_power_of_two() && INDEX_SHARD_COUNT <= 256);
const _: () = assert!(CRC_CHUNK_BYTES.is_power_of_two());
const _: () = assert!(DIRECT_WRITE_ALIGN_BYTES.is_power_of_two());
const _: () = assert!(DIRECT_WRITE_BYTES.is_multiple_of(DIRECT_WRITE_ALIGN_BYTES));
// A 1 TiB blob's checksum table must itself be addressable in memory on 64-bit targets.
const _: () = assert!((BLOB_BYTES_MAX / CRC_CHUNK_BYTES) * 4 < (1 << 32));

/// Copies of one segment file's name recovery keeps in `damaged/` (`NAME.0` up to this);
/// beyond it, a damaged segment stays where it is, reported.
pub const DAMAGED_NAMES_MAX: u32 = 1000;
