//! Every bound of the protocol and the state machines, in one place: sizes of frames and
//! messages, how much one request may ask or one reply may carry, how much a state machine
//! keeps in memory, and how much one step may do. Units are last in every name. The relations
//! between them are checked when the crate compiles; a value over a bound is refused with an
//! error where it comes from outside, and is a bug (an assertion) where it comes from inside.

// ---- The layout ----

/// Most nodes a layout may hold: placement stores node indices as `u16`, and its fitting step
/// costs time proportional to the node count.
pub const NODES_MAX: usize = 4096;

/// Longest node id, in bytes: a DNS label, because ids are the TLS server names of nodes.
pub const NODE_ID_BYTES_MAX: usize = 63;

/// Longest host name in a node's address, in bytes: DNS's limit for a name in text.
pub const HOST_NAME_BYTES_MAX: usize = 253;

/// Longest label of a host name, in bytes: DNS's limit.
pub const HOST_LABEL_BYTES_MAX: usize = 63;

/// Longest zone name, in bytes: a whole layout must fit in one response header.
pub const ZONE_NAME_BYTES_MAX: usize = 63;

/// Most copies of a blob a layout may ask for: the placement table holds this many `u16` per
/// partition, and nothing gains from more copies than this.
pub const REPLICATION_FACTOR_MAX: usize = 8;

// ---- The wire ----

/// Largest request header accepted. A request header holds a hash, a few integers and at most a
/// few node ids.
pub const REQUEST_HEADER_BYTES_MAX: usize = 4 * 1024;

/// Largest response header accepted. A response may carry two whole layouts (`Layout`: the
/// current one and the one before it).
pub const RESPONSE_HEADER_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Largest error message sent over the wire; longer ones are cut.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Largest node-protocol message (`Op::Peer` and its answer): an anti-entropy page of entries,
/// a page of metadata, or a whole layout.
pub const PEER_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most node ids a `Repair` request may name.
pub const REPAIR_TARGETS_MAX: usize = 16;

// ---- Anti-entropy ----

/// Children of one node of the comparison tree: 4 bits of the hash per level.
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

/// Most pages of one leaf a session collects before it gives up on it (and fails).
pub const AE_LEAF_PAGES_MAX: usize = 64;

/// Sessions started by peers that a node remembers while waiting for their `Done`.
pub const AE_ANSWERING_SESSIONS_MAX: usize = 4096;

// ---- Hand-off, transfers, purge, scrub ----

/// Most entries one hand-off offer or tombstone push carries.
pub const HANDOFF_ENTRIES_PER_OFFER_MAX: usize = 512;

/// Entries a hand-off pass examines per tick.
pub const HANDOFF_SCAN_ENTRIES_PER_TICK: usize = 4096;

/// Misplaced entries a node tracks at once while their owners confirm them.
pub const HANDOFF_PENDING_ENTRIES_MAX: usize = 16_384;

/// While a hand-off pass runs or entries wait for their owners, the healer asks to be woken
/// this often.
pub const HANDOFF_RESCAN_WAKE_MS: u64 = 100;

/// Copies a node leaves to their designated source at once, at most; beyond it, it copies.
pub const DEFERRED_COPIES_MAX: usize = 65_536;

/// Most transfers (blob copies) in flight at once, whatever the configuration says.
pub const TRANSFERS_IN_FLIGHT_MAX: usize = 256;

/// Versioned entries the purge examines per step.
pub const PURGE_SCAN_ENTRIES_PER_TICK: usize = 4096;

/// Pause between two purge steps.
pub const PURGE_STEP_INTERVAL_MS: u64 = 1_000;

/// Blobs the scrubber hands out per step.
pub const SCRUB_BLOBS_PER_STEP_MAX: usize = 64;

// ---- Metadata ----

/// Most a remote stamp may run ahead of the local wall clock before it is refused: a peer with
/// a clock this far off would drag every later stamp with it.
pub const HLC_REMOTE_AHEAD_MS_MAX: u64 = 60_000;

/// Most entries in one metadata scan page.
pub const META_PAGE_ENTRIES_MAX: usize = 1_000;

/// Most bytes of entries in one metadata scan page or one write batch (a page stops once it
/// reaches this, so it may pass it by one entry).
pub const META_PAGE_BYTES_MAX: usize = 2 * 1024 * 1024;

// ---- Sizes on the wire, for the relations below ----

/// Most postcard bytes of one heal `Entry`: a 32-byte hash, a kind, two varint u64s.
const ENTRY_WIRE_BYTES_MAX: usize = 32 + 1 + 10 + 10;

/// Most postcard bytes of one `Summary`: two varint u64s.
const SUMMARY_WIRE_BYTES_MAX: usize = 10 + 10;

/// Most postcard bytes of one `NodeSpec`: id and zone with their lengths, an IPv6 socket
/// address with its tag, a varint u32 weight.
const NODE_SPEC_WIRE_BYTES_MAX: usize =
    (NODE_ID_BYTES_MAX + 1) + (ZONE_NAME_BYTES_MAX + 1) + (1 + 16 + 3 + 5 + 5) + 5;

/// Room for a message's other fields (enum tags, ids, lengths, versions).
const MESSAGE_OVERHEAD_BYTES_MAX: usize = 256;

// A layout's placement table indexes nodes by u16.
const _: () = assert!(NODES_MAX <= u16::MAX as usize + 1);
const _: () = assert!(REPLICATION_FACTOR_MAX <= NODES_MAX);

// The comparison tree: whole levels within a 32-bit prefix, one node's children in one request,
// and every request and reply within a node-protocol message.
const _: () =
    assert!(AE_PREFIX_BITS_MAX <= 32 && AE_PREFIX_BITS_MAX.is_multiple_of(AE_FANOUT_BITS));
const _: () = assert!(1 << AE_FANOUT_BITS <= AE_SUMMARIES_PER_REQUEST_MAX);
const _: () = assert!(
    AE_SUMMARIES_PER_REQUEST_MAX * SUMMARY_WIRE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX
        <= PEER_MESSAGE_BYTES_MAX
);
const _: () = assert!(
    AE_ENTRIES_PER_REPLY_MAX * ENTRY_WIRE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX
        <= PEER_MESSAGE_BYTES_MAX
);
const _: () = assert!(AE_LEAF_ENTRIES_MAX as usize <= AE_ENTRIES_PER_REPLY_MAX);
const _: () = assert!(
    HANDOFF_ENTRIES_PER_OFFER_MAX * ENTRY_WIRE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX
        <= PEER_MESSAGE_BYTES_MAX
);
const _: () = assert!(HANDOFF_ENTRIES_PER_OFFER_MAX <= HANDOFF_PENDING_ENTRIES_MAX);
const _: () = assert!(HANDOFF_SCAN_ENTRIES_PER_TICK <= HANDOFF_PENDING_ENTRIES_MAX);

// Headers: a repair request names its targets; an error fits a response; two layouts fit a
// response header and a node-protocol message.
const _: () = assert!(
    REPAIR_TARGETS_MAX * (NODE_ID_BYTES_MAX + 1) + MESSAGE_OVERHEAD_BYTES_MAX
        <= REQUEST_HEADER_BYTES_MAX
);
const _: () =
    assert!(ERROR_MESSAGE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX <= RESPONSE_HEADER_BYTES_MAX);
const _: () = assert!(
    2 * NODES_MAX * NODE_SPEC_WIRE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX
        <= RESPONSE_HEADER_BYTES_MAX
);
const _: () = assert!(RESPONSE_HEADER_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX);

// A metadata page, with one entry's overshoot, fits a node-protocol message.
const _: () = assert!(2 * META_PAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX);
