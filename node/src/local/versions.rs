//! The version table: the versions of recent puts and the tombstones of deletes, durable in
//! `versions.log` (a [`RecordLog`]) and held in memory.
//!
//! The engine keeps bytes; this table keeps what replicas need to order a put against a delete
//! of the same hash (see `cairn_core::heal`). Every coordinated put and delete records its version here
//! before it is acknowledged. The healer forgets a version once the grace period has passed
//! and every owner has seen it; a live copy whose version is forgotten counts as version 0.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use cairn_core::heal::{BlobHash, Entry, EntryKind};

use super::recordlog::{LogError, RecordLog};
use crate::limits::{VERSION_LOG_DEAD_RECORDS_MAX, VERSION_RECORD_BYTES_MAX};

#[derive(Debug, Serialize, Deserialize)]
enum VersionRecord {
    Set {
        hash: BlobHash,
        tombstone: bool,
        version: u64,
        bytes: u64,
        recorded_ms: u64,
    },
    Forget {
        hash: BlobHash,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub entry: Entry,
    /// When this node recorded it (its wall clock, milliseconds since the Unix epoch).
    pub recorded_ms: u64,
}

struct Inner {
    map: BTreeMap<BlobHash, Versioned>,
    dead_records: usize,
}

pub struct VersionTable {
    log: RecordLog,
    inner: RwLock<Inner>,
}

fn set_record(v: &Versioned) -> VersionRecord {
    VersionRecord::Set {
        hash: v.entry.hash,
        tombstone: v.entry.kind == EntryKind::Tombstone,
        version: v.entry.version,
        bytes: v.entry.bytes,
        recorded_ms: v.recorded_ms,
    }
}

impl VersionTable {
    /// Opens (creating) `dir/versions.log` and replays it.
    pub fn open(dir: &Path) -> Result<VersionTable, LogError> {
        let mut map = BTreeMap::new();
        let mut records = 0usize;
        let log = RecordLog::open(
            &dir.join("versions.log"),
            VERSION_RECORD_BYTES_MAX,
            |record: VersionRecord| {
                records += 1;
                match record {
                    VersionRecord::Set {
                        hash,
                        tombstone,
                        version,
                        bytes,
                        recorded_ms,
                    } => {
                        let entry = if tombstone {
                            Entry::tombstone(hash, version)
                        } else {
                            Entry::live(hash, version, bytes)
                        };
                        map.insert(hash, Versioned { entry, recorded_ms });
                    }
                    VersionRecord::Forget { hash } => {
                        map.remove(&hash);
                    }
                }
            },
        )?;
        let dead_records = records - map.len();
        Ok(VersionTable {
            log,
            inner: RwLock::new(Inner { map, dead_records }),
        })
    }

    pub fn get(&self, hash: &BlobHash) -> Option<Versioned> {
        self.inner.read().map.get(hash).copied()
    }

    /// The tombstone of a hash, if it has one.
    pub fn tombstone(&self, hash: &BlobHash) -> Option<Entry> {
        self.get(hash)
            .map(|v| v.entry)
            .filter(|e| e.kind == EntryKind::Tombstone)
    }

    /// Records entries durably (returns once fsynced).
    pub fn record(&self, entries: &[Entry], recorded_ms: u64) -> Result<(), LogError> {
        let records: Vec<VersionRecord> = {
            let mut inner = self.inner.write();
            entries
                .iter()
                .map(|&entry| {
                    let v = Versioned { entry, recorded_ms };
                    if inner.map.insert(entry.hash, v).is_some() {
                        inner.dead_records += 1;
                    }
                    set_record(&v)
                })
                .collect()
        };
        self.log.append(&records)?;
        self.maybe_rewrite()
    }

    /// Forgets a hash's version, if it is still `expected` (`None`: whatever it is).
    pub fn forget(&self, hash: &BlobHash, expected: Option<&Entry>) -> Result<bool, LogError> {
        {
            let mut inner = self.inner.write();
            match inner.map.get(hash) {
                Some(v) if expected.is_none_or(|e| *e == v.entry) => {
                    inner.map.remove(hash);
                    inner.dead_records += 2;
                }
                _ => return Ok(false),
            }
        }
        self.log.append(&[VersionRecord::Forget { hash: *hash }])?;
        self.maybe_rewrite()?;
        Ok(true)
    }

    fn maybe_rewrite(&self) -> Result<(), LogError> {
        let inner = self.inner.read();
        if inner.dead_records > VERSION_LOG_DEAD_RECORDS_MAX && inner.dead_records > inner.map.len()
        {
            drop(inner);
            // Taking the write lock keeps appends' memory updates out while the log is rebuilt.
            let mut inner = self.inner.write();
            self.log.rewrite(inner.map.values().map(set_record))?;
            inner.dead_records = 0;
        }
        Ok(())
    }

    /// Up to `limit` entries with `start <= hash < end`, in order.
    pub fn range(
        &self,
        start: Bound<BlobHash>,
        end: Option<BlobHash>,
        limit: usize,
    ) -> Vec<Versioned> {
        let inner = self.inner.read();
        let end = end.map_or(Bound::Unbounded, Bound::Excluded);
        inner
            .map
            .range((start, end))
            .take(limit)
            .map(|(_, v)| *v)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tombstones held now.
    pub fn tombstone_count(&self) -> usize {
        self.inner
            .read()
            .map
            .values()
            .filter(|v| v.entry.kind == EntryKind::Tombstone)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_survive_reopen_and_forget_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let t = Entry::tombstone([1; 32], 10);
        let l = Entry::live([2; 32], 11, 5);
        {
            let table = VersionTable::open(dir.path()).unwrap();
            table.record(&[t, l], 100).unwrap();
            assert!(
                !table
                    .forget(&[1; 32], Some(&Entry::tombstone([1; 32], 9)))
                    .unwrap()
            );
            assert!(table.forget(&[2; 32], Some(&l)).unwrap());
        }
        let table = VersionTable::open(dir.path()).unwrap();
        assert_eq!(table.tombstone(&[1; 32]), Some(t));
        assert_eq!(table.get(&[1; 32]).unwrap().recorded_ms, 100);
        assert!(table.get(&[2; 32]).is_none());
        assert_eq!(table.range(Bound::Unbounded, None, 10).len(), 1);
    }

    #[test]
    fn the_log_is_rewritten_when_mostly_dead() {
        let dir = tempfile::tempdir().unwrap();
        let table = VersionTable::open(dir.path()).unwrap();
        let keep = Entry::live([0xff; 32], 1, 1);
        table.record(&[keep], 1).unwrap();
        for i in 0..(VERSION_LOG_DEAD_RECORDS_MAX / 2 + 10) as u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            table
                .record(&[Entry::tombstone(h, 1)], 1)
                .unwrap_or_else(|e| panic!("{e}"));
            table.forget(&h, None).unwrap();
        }
        let size = table.log.file_bytes();
        assert!(size < 250_000, "log not rewritten: {size} bytes");
        drop(table);
        let table = VersionTable::open(dir.path()).unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&[0xff; 32]).unwrap().entry, keep);
    }
}
