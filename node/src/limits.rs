//! Every bound of the node shell in one place: its timeouts, concurrency caps and buffer sizes,
//! for the QUIC server, healing, hints, metadata, the HTTP and S3 fronts and the node's own
//! logs. Units are last in every name. The protocol's bounds are `cairn_core::limits`; the
//! relations between the two are checked here when the crate compiles. Exceeding a bound is an
//! error answered to whoever asked (`Busy`, 503, `EntityTooLarge`, ...), never a crash.

use cairn_client::limits::{CONNECTION_RECEIVE_WINDOW_BYTES, SEND_WINDOW_BYTES};
use cairn_core::limits::{META_PAGE_BYTES_MAX, NODE_ID_BYTES_MAX, PEER_MESSAGE_BYTES_MAX};

// ---- The QUIC server ----

/// Requests a node handles at once; beyond it, requests are answered `Busy`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;

/// Connections a node accepts at once; beyond it, new connections are refused.
pub const CONNECTIONS_MAX: usize = 1024;

/// Time a peer has to send a request header after opening a stream.
pub const HEADER_TIMEOUT_MS: u64 = 10_000;

/// Longest pause between two pieces of a body being received or forwarded.
pub const BODY_STALL_TIMEOUT_MS: u64 = 10_000;

/// Time a replica waits for the coordinator's commit or abort.
pub const DECISION_TIMEOUT_MS: u64 = 30_000;

/// Time a coordinator waits for a replica's answer (prepared, stored, deleted).
pub const REPLICA_RESPONSE_TIMEOUT_MS: u64 = 60_000;

/// Largest piece of a body read from a stream at once.
pub const BODY_CHUNK_BYTES_MAX: usize = 256 * 1024;

/// Body pieces queued toward each replica while it catches up: with `BODY_CHUNK_BYTES_MAX`,
/// at most 4 MiB per replica per put.
pub const FORWARD_QUEUE_CHUNKS: usize = 16;

/// Body bytes a replica link takes while its connection is still opening; a replica slower than
/// that to connect misses the put (and gets a hint).
pub const FORWARD_PENDING_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Bytes of get responses one connection sends at a time; further gets wait their turn in
/// arrival order. Three quarters of the send window (which is also the receive window): an
/// admitted response does not wait on the window, and the rest is left for headers, small
/// gets and other answers. (The transport resumes window-blocked streams newest first, which
/// left the earliest gets behind later ones.)
pub const GET_SEND_BYTES_MAX: u64 = SEND_WINDOW_BYTES / 4 * 3;

/// Longest a get waits for its turn; then it is answered `Busy`, and the reader tries another
/// replica.
pub const GET_TURN_WAIT_MS_MAX: u64 = 5_000;

/// Longest a get holds its turn: a reader slower than that keeps its stream going, and the
/// next gets go.
pub const GET_TURN_HOLD_MS_MAX: u64 = 2_000;

/// Gets of at most this many bytes skip the turns: a few packets each, they cannot crowd
/// the window.
pub const GET_UNQUEUED_BYTES_MAX: u64 = 64 * 1024;

/// Stripes of the per-hash commit lock (a hash's stripe is its first byte, modulo this).
pub const ENTRY_LOCK_STRIPES: usize = 256;

/// Whole blobs up to this size are served by a front (HTTP or S3) from its own engine when it
/// holds a replica; larger ones stream through the cluster path, which verifies as it goes.
pub const LOCAL_READ_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How long `shutdown` waits for connections to close cleanly.
pub const SHUTDOWN_IDLE_WAIT_MS: u64 = 3_000;

/// How long `shutdown` waits for the node's tasks to let go of it: steps of this many ms.
pub const SHUTDOWN_WAIT_STEP_MS: u64 = 20;
pub const SHUTDOWN_WAIT_STEPS: u32 = 250;

// ---- Healing and the node protocol ----

/// Longest pause of the heal loop between two ticks.
pub const HEAL_TICK_MS_MAX: u64 = 100;

/// Longest a node-protocol call (a heartbeat, an anti-entropy request) may take.
pub const PEER_CALL_TIMEOUT_MS: u64 = 10_000;

/// Longest a blob copy may take.
pub const TRANSFER_TIMEOUT_MS: u64 = 300_000;

/// How often a node writes down that it is alive, and where its scrub stands.
pub const ALIVE_WRITE_INTERVAL_MS: u64 = 10_000;

// ---- Hints ----

/// Hints delivered per round of the delivery loop.
pub const HINT_DELIVERY_BATCH_MAX: usize = 64;

/// How often the delivery loop looks for due hints.
pub const HINT_TICK_MS: u64 = 100;

/// Largest hint record accepted when replaying (a hash, an id and a node id).
pub const HINT_RECORD_BYTES_MAX: usize = 1024;

/// Hints a node keeps at most; beyond it new hints are refused (the replica is then repaired by
/// read repair or, later, anti-entropy).
pub const HINTS_PENDING_MAX: usize = 1_000_000;

/// Delivered records the hint log may hold before it is rewritten.
pub const HINT_LOG_DEAD_RECORDS_MAX: usize = 4096;

// ---- This node's own logs and views ----

/// Largest version record accepted when replaying.
pub const VERSION_RECORD_BYTES_MAX: usize = 128;

/// Dead records the version log may hold before it is rewritten.
pub const VERSION_LOG_DEAD_RECORDS_MAX: usize = 4096;

/// A snapshot of a changing store is rebuilt once it is this old.
pub const SNAPSHOT_AGE_MS_MAX: u64 = 2_000;

// ---- Metadata ----

/// Time one owner has to answer one metadata request.
pub const META_CALL_TIMEOUT_MS: u64 = 5_000;

/// First pause before a metadata request to an unreachable owner is tried again; it doubles
/// up to `META_RETRY_PAUSE_MS_MAX` while `META_CALL_TIMEOUT_MS` lasts.
pub const META_RETRY_PAUSE_MS_MIN: u64 = 25;
pub const META_RETRY_PAUSE_MS_MAX: u64 = 500;

/// Times a write that lost to a newer one on some owner is stamped again and resent.
pub const META_RESTAMP_ATTEMPTS_MAX: usize = 3;

/// Shortest pause between two rounds of the metadata digest exchange.
pub const META_SYNC_INTERVAL_MS_MIN: u64 = 100;

/// Longest pause between two rounds of the metadata digest exchange while a layout change is
/// not yet settled for metadata (a round since the adoption left something out).
pub const META_SYNC_UNSETTLED_INTERVAL_MS: u64 = 1_000;

// ---- Layouts ----

/// First pause before a layout that failed to be adopted (its file could not be written) is
/// tried again; it doubles up to `ADOPT_RETRY_MS_MAX` while the failures go on.
pub const ADOPT_RETRY_MS_MIN: u64 = 500;
pub const ADOPT_RETRY_MS_MAX: u64 = 30_000;

// ---- The disk ----

/// After a write fails for lack of space, the disk counts as full for this long (space freed
/// by compaction or an operator shows after it).
pub const DISK_FULL_REMEMBERED_MS: u64 = 60_000;

/// How often a node out of the layout checks whether it has emptied itself (and compacts).
pub const LEAVING_CHECK_INTERVAL_MS: u64 = 2_000;

// ---- The HTTP front ----

/// Connections the HTTP front holds open at once; beyond it, a new connection gets a 503 and
/// is closed.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;

/// Largest request head (request line and headers); beyond it, 431.
pub const HTTP_HEADER_BYTES_MAX: usize = 16 * 1024;

/// Most header fields in one request; beyond it, 431.
pub const HTTP_HEADERS_COUNT_MAX: usize = 64;

/// Longest request path; beyond it, 414.
pub const HTTP_PATH_BYTES_MAX: usize = 1024;

/// Request bodies up to this size are held in memory on their way to the cluster; larger ones
/// go to it as they arrive when the request names the blob and its length, and are spooled to
/// a file in the data directory otherwise (the blob's hash places it, so it must be known
/// before the first byte is sent).
pub const HTTP_BODY_IN_MEMORY_BYTES_MAX: u64 = 2 * 1024 * 1024;

/// Pieces of a body (as they came off the connection, each at most hyper's read buffer of
/// some hundred KiB) queued between the connection and the cluster on a put that streams.
pub const HTTP_STREAM_PIECES_QUEUED_MAX: usize = 4;

/// The `Retry-After` a 503 carries.
pub const HTTP_RETRY_AFTER_SECS: u64 = 1;

/// Shortest bearer token accepted.
pub const HTTP_TOKEN_BYTES_MIN: usize = 16;

/// How long a front waits to tell a refused connection why before closing it.
pub const REFUSAL_WRITE_MS_MAX: u64 = 1_000;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
pub const ACCEPT_RETRY_PAUSE_MS: u64 = 50;

/// How often a node compares its segment mappings' resident memory with
/// `mapped_resident_bytes_max`.
pub const MAPPED_RESIDENT_CHECK_MS: u64 = 500;

/// How often a front with TLS reads its certificate and key files to see whether they changed.
pub const FRONT_TLS_RELOAD_CHECK_MS: u64 = 5_000;

/// Longest TLS handshake a front waits for; a client slower than this is dropped.
pub const FRONT_TLS_HANDSHAKE_MS_MAX: u64 = 10_000;

// ---- The S3 front ----

/// Connections the S3 front holds open at once; beyond it, new connections are closed.
pub const S3_CONNECTIONS_MAX: usize = 1024;

/// Largest request head; beyond it, 431.
pub const S3_HEADER_BYTES_MAX: usize = 64 * 1024;

/// Most header fields in one request (S3 requests carry many `x-amz-` headers).
pub const S3_HEADERS_COUNT_MAX: usize = 128;

/// Largest XML request body (CompleteMultipartUpload's part list, DeleteObjects' keys).
pub const S3_XML_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most a request's signing time may differ from the node's clock: 15 minutes, as S3.
pub const S3_CLOCK_SKEW_SECS_MAX: u32 = 15 * 60;

/// Tags an object may carry: 10, as S3.
pub const S3_OBJECT_TAGS_MAX: usize = 10;

/// Tags a bucket may carry: 50, as S3.
pub const S3_BUCKET_TAGS_MAX: usize = 50;

/// Longest tag key, in characters: 128, as S3.
pub const S3_TAG_KEY_CHARS_MAX: usize = 128;

/// Longest tag value, in characters: 256, as S3.
pub const S3_TAG_VALUE_CHARS_MAX: usize = 256;

/// Rules a bucket's lifecycle configuration may hold: 1,000, as S3.
pub const S3_LIFECYCLE_RULES_MAX: usize = 1_000;

/// Objects and uploads one collection's lifecycle pass expires or aborts at most; the rest
/// are found due again by the next collection. (Each is held in memory until applied, paced
/// at `gc_deletes_per_sec`.)
pub const S3_LIFECYCLE_DUE_PER_RUN_MAX: usize = 100_000;

/// Parts one ListParts or GetObjectAttributes answer lists at most: 1,000, as S3.
pub const S3_LIST_PARTS_MAX: usize = 1_000;

/// Longest lifecycle rule id, in characters: 255, as S3.
pub const S3_LIFECYCLE_RULE_ID_CHARS_MAX: usize = 255;

/// Most buckets one ListBuckets answer holds (`max-buckets` runs from 1 to this, as S3).
pub const S3_LIST_BUCKETS_MAX: usize = 10_000;

/// Longest a presigned URL may be valid: 7 days, as S3 (`X-Amz-Expires` above it is refused).
pub const S3_PRESIGNED_EXPIRES_SECS_MAX: u64 = 7 * 24 * 3600;

/// A request refused before its body was read still has its body read and dropped, up to
/// this many bytes, so that the client reads the error instead of a closed connection; past
/// it the connection is closed.
pub const S3_REFUSED_BODY_DRAIN_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How long reading and dropping a refused request's body may take before the connection is
/// closed instead.
pub const S3_REFUSED_BODY_DRAIN_MS: u64 = 10_000;

/// S3 request bodies are cut into chunks of this size as they arrive, each stored as a blob
/// of its own. 8 MiB is the part size of the AWS CLI and SDKs, so their parts are one chunk
/// each; and it is at most what a replica takes in whole (`STREAM_BUFFER_BYTES_MAX`).
pub const S3_CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// The most an object stored inside its record (`inline_object_bytes_max`) may hold: 64 KiB,
/// so that a listing's page of records stays far below `META_PAGE_BYTES_MAX`'s share.
pub const S3_INLINE_OBJECT_BYTES_LIMIT: u64 = 64 * 1024;

/// Chunks of one S3 request body being stored at once, beside the one filling: a body holds
/// at most `S3_CHUNK_BYTES` times one more than this in memory.
pub const S3_CHUNKS_IN_FLIGHT_MAX: usize = 2;

/// Chunk buffers of finished S3 chunk stores the front keeps for the next chunks, at most:
/// a chunk in a reused buffer does not pay for the first touch of 8 MiB of fresh pages. One
/// body uses one more than `S3_CHUNKS_IN_FLIGHT_MAX` at a time; the front holds this many
/// (24 MiB) when idle.
pub const S3_CHUNK_BUFFERS_SPARE_MAX: usize = S3_CHUNKS_IN_FLIGHT_MAX + 1;

/// Keys a listing returns at most, whatever `max-keys` asks: 1,000, as S3.
pub const S3_LIST_KEYS_MAX: usize = 1_000;

/// Keys one DeleteObjects may name: 1,000, as S3.
pub const S3_DELETE_OBJECTS_MAX: usize = 1_000;

/// Part numbers run from 1 to this, as S3.
pub const S3_PART_NUMBER_MAX: i32 = 10_000;

/// Blobs one object's record may name: 32,768 chunks of 8 MiB, a 256 GiB multipart object
/// (a PutObject is at most `object_bytes_max`, 640 chunks at the default 5 GiB). A record
/// names every chunk (42 bytes at most each), and a page of records may run one record over
/// `META_PAGE_BYTES_MAX` yet must fit a node-protocol message; a larger
/// CompleteMultipartUpload is refused (`EntityTooLarge`).
pub const S3_OBJECT_BLOBS_MAX: usize = 32_768;

/// Every part but the last must be at least this long: 5 MiB, as S3.
pub const S3_PART_BYTES_MIN: u64 = 5 * 1024 * 1024;

/// Longest object key, in bytes, as S3.
pub const S3_KEY_BYTES_MAX: usize = 1024;

/// Most bytes of user metadata (`x-amz-meta-*` names and values) on one object: 2 KiB, as S3.
pub const S3_USER_METADATA_BYTES_MAX: usize = 2 * 1024;

/// Part records deleted in one metadata write when an upload is completed or aborted: with
/// keys of at most `S3_KEY_BYTES_MAX`, a batch stays far under the node protocol's limit.
pub const S3_FORGET_BATCH_ENTRIES_MAX: usize = 500;

/// How long a node takes a bucket it found to still exist without asking again: a
/// DeleteBucket through another node may let puts through this one into the deleted bucket
/// for this long (their objects stay invisible unless the bucket is created again).
pub const S3_BUCKET_SEEN_MS: u64 = 1_000;

/// Buckets a node remembers as seen; beyond it, it forgets them all.
pub const S3_BUCKETS_SEEN_MAX: usize = 10_000;

/// Pieces of an object read ahead of the client.
pub const S3_READ_AHEAD_PIECES: usize = 8;

/// Shortest S3 secret key accepted.
pub const S3_SECRET_KEY_BYTES_MIN: usize = 16;

/// How often a node reads every managed access key and permission again: a deleted key or a
/// withdrawn permission stops working on every node within this time.
pub const S3_KEYS_REFRESH_MS: u64 = 1_000;
/// How long an access key or permission read and not found is taken as absent before a
/// request makes the node read it again.
pub const S3_KEYS_RECHECK_MS: u64 = 1_000;
/// Reads of access keys or permissions not known to a node, at most, per second: beyond,
/// a request naming one is refused as if it did not exist.
pub const S3_KEYS_UNKNOWN_READS_PER_SEC_MAX: u32 = 50;
/// Keys and permissions remembered as not found (the memory is cleared when full).
pub const S3_KEYS_NOT_FOUND_REMEMBERED_MAX: usize = 4_096;
/// Access keys managed online, at most.
pub const S3_MANAGED_KEYS_MAX: usize = 10_000;
/// Characters in a managed key's name, at most.
pub const S3_KEY_NAME_CHARS_MAX: usize = 128;
/// Key and bucket requests (`cairn key`, `cairn bucket`) waiting for a node's S3 front, at
/// most; beyond, they are refused.
pub const KEYS_DESK_CALLS_MAX: usize = 64;
/// Objects `cairn bucket info` counts, at most (it says so beyond).
pub const S3_BUCKET_INFO_OBJECTS_COUNTED_MAX: u64 = 100_000;

/// Shortest grace period of the garbage collector accepted: well above any clock skew between
/// nodes and any request's duration.
pub const GC_GRACE_MS_MIN: u64 = 10_000;

/// The native API's holds waiting for the hold writer (`meta::marks`); beyond it, a hold is
/// dropped and counted (a put never waits for one).
pub const HOLD_QUEUE_MAX: usize = 16_384;

/// Holds written in one go (grouped by partition).
pub const HOLD_BATCH_MAX: usize = 4_096;

/// Tries of one batch of holds before the writer gives up on it and counts it (its blobs are
/// then kept from the collector only by their version, for the grace period).
pub const HOLD_WRITE_ATTEMPTS: u32 = 5;

/// How long the hold writer gathers holds after the first before writing them: under load,
/// one write per partition carries many holds. Each write is a commit (an fsync) on each of
/// the partition's owners; at 100 ms, sequential native 4 KiB puts lost a fifth of their rate
/// to them. It is far below the collector's grace period, which is all a hold must beat.
pub const HOLD_LINGER_MS: u64 = 1_000;

/// Pause between tries of a batch of holds, times the try's number.
pub const HOLD_RETRY_PAUSE_MS: u64 = 500;

/// How often a stopping node looks whether its queued holds are written.
pub const HOLD_FLUSH_POLL_MS: u64 = 50;

/// How long a stopping node waits for its queued holds to be written: one linger and one
/// metadata write.
pub const HOLD_FLUSH_WAIT_MS: u64 = HOLD_LINGER_MS + 2_000;

// ---- The `cairn` command ----

/// How often `cairn gc` asks for progress.
pub const GC_POLL_MS: u64 = 500;

/// How often `cairn layout status`, `cairn repair`, `cairn scrub` and `cairn drain` ask the
/// nodes how it goes.
pub const STATUS_POLL_MS: u64 = 1_000;

/// Scrub pace of a pass `cairn scrub` starts on a node whose scheduled scrub is off.
pub const SCRUB_ON_DEMAND_BYTES_PER_SEC_DEFAULT: u64 = 256 * 1024 * 1024;

// ---- Relations ----

// A replica's queue of body pieces fits what a replica link may hold while it connects.
const _: () = assert!(FORWARD_QUEUE_CHUNKS * BODY_CHUNK_BYTES_MAX <= FORWARD_PENDING_BYTES_MAX);
// A stalled body is noticed before the coordinator gives up on the replica, and a replica's
// wait for its decision ends before the coordinator's wait for it.
const _: () = assert!(BODY_STALL_TIMEOUT_MS < REPLICA_RESPONSE_TIMEOUT_MS);
const _: () = assert!(DECISION_TIMEOUT_MS < REPLICA_RESPONSE_TIMEOUT_MS);
const _: () = assert!(HEADER_TIMEOUT_MS <= DECISION_TIMEOUT_MS);
// The gets a connection sends at once fit both its windows (and a turn, counted in `u32`
// permits), and a small get skipping the turns is smaller than one turn.
const _: () = assert!(GET_SEND_BYTES_MAX <= SEND_WINDOW_BYTES);
const _: () = assert!(GET_SEND_BYTES_MAX <= CONNECTION_RECEIVE_WINDOW_BYTES as u64);
const _: () = assert!(GET_SEND_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(GET_UNQUEUED_BYTES_MAX < GET_SEND_BYTES_MAX);
// A turn held to its end leaves the next get time to be sent before it gives up waiting.
const _: () = assert!(GET_TURN_HOLD_MS_MAX < GET_TURN_WAIT_MS_MAX);
// The commit lock is striped by one byte of the hash.
const _: () = assert!(ENTRY_LOCK_STRIPES > 0 && ENTRY_LOCK_STRIPES <= 256);
// The heal loop ticks well within a peer call's time.
const _: () = assert!(HEAL_TICK_MS_MAX < PEER_CALL_TIMEOUT_MS);
/// Most postcard bytes of a hint record: its tag, an id, a hash, a node id with its length,
/// and a kind.
const HINT_RECORD_WIRE_BYTES_MAX: usize = 1 + 10 + 32 + (NODE_ID_BYTES_MAX + 1) + 1;
const _: () = assert!(HINT_RECORD_WIRE_BYTES_MAX <= HINT_RECORD_BYTES_MAX);
/// Most postcard bytes of a version record: its tag, a hash, a kind, three varint u64s.
const VERSION_RECORD_WIRE_BYTES_MAX: usize = 1 + 32 + 1 + 3 * 10;
const _: () = assert!(VERSION_RECORD_WIRE_BYTES_MAX <= VERSION_RECORD_BYTES_MAX);
// A metadata call retries within its own time.
const _: () = assert!(META_RETRY_PAUSE_MS_MIN <= META_RETRY_PAUSE_MS_MAX);
const _: () = assert!(META_RETRY_PAUSE_MS_MAX < META_CALL_TIMEOUT_MS);
// A batch of part deletions (keys of at most `S3_KEY_BYTES_MAX` and their stamps) fits one
// metadata write, and so one node-protocol message.
const _: () = assert!(S3_FORGET_BATCH_ENTRIES_MAX * (S3_KEY_BYTES_MAX + 64) <= META_PAGE_BYTES_MAX);
const _: () = assert!(META_PAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX);
// A batch of marks (a 32-byte hash, a stamp and a touch time each) fits one metadata write.
const _: () = assert!(HOLD_BATCH_MAX * (33 + 64) <= META_PAGE_BYTES_MAX);
const _: () = assert!(HOLD_BATCH_MAX <= HOLD_QUEUE_MAX);
// A reference to a blob is in place within the collector's grace period: its commit starts
// within a quarter of it (`s3::gc::reference_window_ms`) and a metadata write, new stamps
// included, ends within `META_CALL_TIMEOUT_MS`; both well before a collection that could take
// the blob.
const _: () = assert!(GC_GRACE_MS_MIN / 4 + META_CALL_TIMEOUT_MS < GC_GRACE_MS_MIN);
// A hold's first write starts well within the shortest grace period.
const _: () = assert!(HOLD_LINGER_MS * 4 <= GC_GRACE_MS_MIN);
// Shutdown waits a bounded time for its tasks.
const _: () = assert!(SHUTDOWN_WAIT_STEP_MS * SHUTDOWN_WAIT_STEPS as u64 <= 10_000);
// An object inline in its record fits one chunk, and a metadata page many times over.
const _: () = assert!(S3_INLINE_OBJECT_BYTES_LIMIT <= S3_CHUNK_BYTES);
const _: () = assert!(S3_INLINE_OBJECT_BYTES_LIMIT * 16 <= META_PAGE_BYTES_MAX as u64);
// A page of records run over by one object's record (its chunks at their largest encoding, a
// 32-byte hash and a 10-byte varint, and 64 KiB for the rest) fits a peer message with room.
const _: () = assert!(
    META_PAGE_BYTES_MAX + S3_OBJECT_BLOBS_MAX * 42 + 64 * 1024 <= PEER_MESSAGE_BYTES_MAX * 7 / 8
);
// A chunk of an S3 body is taken in whole by a replica.
const _: () = assert!(S3_CHUNK_BYTES <= cairn_engine::limits::STREAM_BUFFER_BYTES_MAX);
// An HTTP put that streams is over the size from which the front offers it without its bytes,
// and holds its blob then.
const _: () = assert!(HTTP_BODY_IN_MEMORY_BYTES_MAX >= cairn_client::limits::REFRESH_BYTES_MIN);
// The in-memory part of a front's body is far below what a blob may be.
const _: () = assert!(HTTP_BODY_IN_MEMORY_BYTES_MAX <= LOCAL_READ_BYTES_MAX);
