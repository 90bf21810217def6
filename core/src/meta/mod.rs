//! Replicated metadata, the pure half: small versioned records (buckets, objects, uploads,
//! parts, the collector's blob marks) that the S3 front keeps beside the blobs.
//!
//! - [`key`]: the kinds of records, the partition (a table's records for one bucket, the unit
//!   of placement: placed like a blob whose hash is BLAKE3 of its name), a record's key and its
//!   versioned value.
//! - [`hlc`]: the hybrid logical clock that stamps every write.
//! - [`merge`]: last writer wins by stamp (tombstones included), and the merge of several
//!   owners' pages into one.
//! - [`msg`]: the messages between owners.
//!
//! The node keeps the records in redb and fans requests out to the owners; both are IO and live
//! in `cairn-node`.

pub mod hlc;
pub mod key;
pub mod merge;
pub mod msg;

pub use hlc::{ClockAhead, Hlc, Stamp};
pub use key::{Entry, MetaKey, Partition, Table};
pub use merge::{Merged, merge_pages, supersedes};
pub use msg::{Digest, MetaMsg, MetaReply, Page};
