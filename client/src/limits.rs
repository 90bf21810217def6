//! Every bound of the client and of the QUIC transport nodes share: retry pacing, body and
//! answer timeouts, memory held per read, connection pacing, and QUIC's windows and timeouts.
//! Units are last in every name; the relations between them are checked when the crate
//! compiles. The protocol's own bounds (frame sizes) are `cairn_core::limits`.

// ---- Operations ----

/// First pause between retry rounds; doubles up to `RETRY_BACKOFF_MS_MAX`.
pub const RETRY_BACKOFF_MS_MIN: u64 = 20;

/// Longest pause between retry rounds.
pub const RETRY_BACKOFF_MS_MAX: u64 = 1_000;

/// Blobs from this size on are first offered without their bytes (`Op::Refresh`): if a write
/// quorum of replicas holds them intact, nothing is sent. Below it, sending is cheaper than
/// the extra round trip and the replicas' reading of their copies.
pub const REFRESH_BYTES_MIN: u64 = 1024 * 1024;

/// Size of the reads a put makes from a file or stream.
pub const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;

/// Longest pause between two pieces of a body being sent or received once a transfer has
/// started; the operation's deadline bounds only its start, so a large blob that keeps moving
/// is not cut off.
pub const BODY_STALL_MS: u64 = 10_000;

/// Time a node has to answer a put once its body is sent (the replicas' commits; an fsync of a
/// large blob), or the operation's time left if that is longer.
pub const ANSWER_AFTER_BODY_MS: u64 = 60_000;

/// Largest blob `get` collects into memory; larger blobs are read with `get_to_writer`.
pub const GET_IN_MEMORY_BYTES_MAX: u64 = 1 << 30;

/// Pieces a `BlobStream` buffers ahead of its reader (each about `READ_PIECE_BYTES`).
pub const STREAM_QUEUE_PIECES: usize = 16;

/// A read passes its bytes on in pieces of at least this size (but the last): QUIC hands
/// them out about a packet at a time, and each piece costs the reader a hand-off.
pub const READ_PIECE_BYTES: usize = 32 * 1024;

// ---- Connections ----

/// How long a connection attempt may take before the node counts as unreachable.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Longest wait for a node's host name to resolve, before the connection is attempted (and
/// apart from `CONNECT_TIMEOUT_MS`). Past it the node counts as unreachable for this attempt.
pub const RESOLVE_TIMEOUT_MS: u64 = 2_000;

/// After a failed connection attempt, requests skip the node for this long before trying
/// again; each further failure doubles the pause, up to `DOWN_BACKOFF_MS_MAX`.
pub const DOWN_BACKOFF_MS_MIN: u64 = 250;

/// Longest pause before a node that keeps failing is tried again. Bounds how long a node that
/// came back waits to be used.
pub const DOWN_BACKOFF_MS_MAX: u64 = 4_000;

// ---- QUIC transport ----

/// Concurrent bidirectional streams (requests) one peer may open on a connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// A connection silent for this long is closed; a dead peer is noticed within it.
pub const IDLE_TIMEOUT_MS: u64 = 4_000;

/// Keep-alive period: well under the idle timeout so idle pooled connections stay open.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 1_000;

/// Bytes one stream may have in flight toward the receiver before flow control stops it.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// Bytes all streams of a connection may have in flight toward the receiver.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Bytes buffered for sending per connection.
pub const SEND_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

/// UDP socket send and receive buffer size. The default 208 KiB loses thousands of packets per
/// GiB on loopback bursts; 4 MiB loses none.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

// ---- Relations ----

// Retries and node pauses grow from their floor to their ceiling.
const _: () = assert!(RETRY_BACKOFF_MS_MIN <= RETRY_BACKOFF_MS_MAX);
const _: () = assert!(DOWN_BACKOFF_MS_MIN <= DOWN_BACKOFF_MS_MAX);
// Keep-alives keep an idle pooled connection open, and a connection attempt gives up before
// the transport would call the peer dead.
const _: () = assert!(KEEP_ALIVE_INTERVAL_MS < IDLE_TIMEOUT_MS);
const _: () = assert!(CONNECT_TIMEOUT_MS <= IDLE_TIMEOUT_MS);
// One stream's window fits the connection's, and a read of one upload chunk fits a stream's.
const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES <= CONNECTION_RECEIVE_WINDOW_BYTES);
const _: () = assert!(UPLOAD_CHUNK_BYTES <= STREAM_RECEIVE_WINDOW_BYTES as usize);
// A gathered piece is long enough for the stream hasher to hash in place.
const _: () = assert!(READ_PIECE_BYTES >= cairn_engine::limits::HASH_BATCH_BYTES);
// A stalled body is noticed before a put's answer is given up on.
const _: () = assert!(BODY_STALL_MS < ANSWER_AFTER_BODY_MS);
