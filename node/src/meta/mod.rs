//! Replicated metadata: small versioned records (buckets, objects, uploads, parts, GC marks)
//! kept beside the blobs, placed by the same zone-aware placement.
//!
//! - A record lives in a *partition*: a table and a bucket. All of a bucket's objects are one
//!   partition, so a listing is one ordered range scan on each replica; the partition is placed
//!   like a blob whose hash is BLAKE3 of its name ([`Partition::placement_hash`]).
//! - Every record carries a [`hlc::Stamp`]; replicas merge last-writer-wins on it, so writes
//!   that arrive in any order, twice, or late, converge. Deletes are tombstones.
//! - Writes go to every owner and succeed at the layout's write quorum; reads ask every owner
//!   and answer once `factor - write_quorum + 1` have, taking the highest stamp, so a read
//!   always meets the latest acknowledged write ([`cluster`]).
//! - Owners that missed a write catch up by read repair and by a periodic exchange of
//!   partition digests ([`cluster::sync_round`]).
//! - [`store`] keeps the records on each node in redb.

pub mod cluster;
pub mod hlc;
pub mod store;

use serde::{Deserialize, Serialize};

pub use hlc::{Hlc, Stamp};
pub use store::{Digest, MetaStore, Page, StoreError};

/// The kinds of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Table {
    /// One partition (bucket name ""): bucket name → bucket record.
    Buckets = 1,
    /// Per bucket: object key → object record.
    Objects = 2,
    /// Per bucket: `key \0 upload id` → multipart upload record.
    Uploads = 3,
    /// Per bucket: `key \0 upload id \0 part number (u32 BE)` → part record.
    Parts = 4,
    /// Per first four bits of a blob hash (one hex digit): blob hash → when the S3 front last
    /// wrote or referred to it. The blobs the garbage collector may remove.
    Blobs = 5,
}

impl Table {
    pub fn from_u8(v: u8) -> Option<Table> {
        Some(match v {
            1 => Table::Buckets,
            2 => Table::Objects,
            3 => Table::Uploads,
            4 => Table::Parts,
            5 => Table::Blobs,
            _ => return None,
        })
    }
}

/// A table's records for one bucket: the unit of placement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    pub table: Table,
    pub bucket: String,
}

impl Partition {
    pub fn new(table: Table, bucket: impl Into<String>) -> Partition {
        Partition {
            table,
            bucket: bucket.into(),
        }
    }

    /// Where the partition lives: the placement of this hash.
    pub fn placement_hash(&self) -> cairn_engine::Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"cairn metadata partition\0");
        hasher.update(&[self.table as u8]);
        hasher.update(self.bucket.as_bytes());
        cairn_engine::Hash::from_bytes(*hasher.finalize().as_bytes())
    }
}

/// One record's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetaKey {
    pub part: Partition,
    pub key: Vec<u8>,
}

impl MetaKey {
    pub fn new(table: Table, bucket: impl Into<String>, key: impl Into<Vec<u8>>) -> MetaKey {
        MetaKey {
            part: Partition::new(table, bucket),
            key: key.into(),
        }
    }
}

/// A record's version and value (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub stamp: Stamp,
    pub value: Option<Vec<u8>>,
}

/// The node's side of metadata: its store and its clock.
pub struct Meta {
    pub store: MetaStore,
    pub hlc: parking_lot::Mutex<Hlc>,
}

impl Meta {
    pub fn open(path: &std::path::Path, node_id: &str) -> Result<Meta, StoreError> {
        Ok(Meta {
            store: MetaStore::open(path)?,
            hlc: parking_lot::Mutex::new(Hlc::new(node_id)),
        })
    }
}
