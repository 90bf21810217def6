//! Metadata keys: the kinds of records ([`Table`]), the unit of placement ([`Partition`]: a
//! table's records for one bucket), one record's address ([`MetaKey`]) and its versioned value
//! ([`Entry`]), with the byte form every owner stores and digests them under.
//!
//! Byte form of a key: `[table u8][bucket length u16 BE][bucket bytes][key bytes]`; the first
//! three parts are the partition's prefix, so a partition is one contiguous range.

use serde::{Deserialize, Serialize};

use super::hlc::Stamp;

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

impl Partition {
    /// The partition's byte prefix: every key of the partition starts with it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.bucket.len());
        out.push(self.table as u8);
        out.extend_from_slice(&(self.bucket.len() as u16).to_be_bytes());
        out.extend_from_slice(self.bucket.as_bytes());
        out
    }

    /// The partition a byte prefix names (`None`: not a partition's prefix).
    pub fn decode(prefix: &[u8]) -> Option<Partition> {
        let (&table, rest) = prefix.split_first()?;
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let bucket = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        Some(Partition {
            table: Table::from_u8(table)?,
            bucket: bucket.to_string(),
        })
    }
}

impl MetaKey {
    /// The key's byte form: its partition's prefix, then the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.part.encode();
        out.extend_from_slice(&self.key);
        out
    }
}
