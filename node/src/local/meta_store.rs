//! The local metadata store: one redb table of versioned entries, ordered by partition and
//! key, so a bucket's listing is one range scan.
//!
//! Every write merges last-writer-wins by [`Stamp`]: an entry replaces what is stored only if
//! its stamp is higher, so replicas that receive the same writes in any order, any number of
//! times, end up equal. A delete is an entry without a value (a tombstone), kept so that an
//! older write arriving late cannot bring the key back.
//!
//! Stored key: `MetaKey::encode` (`[table u8][bucket length u16 BE][bucket bytes][key bytes]`).
//! Stored value: postcard of [`Entry`]. The merge rule is `cairn_core::meta::supersedes`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use cairn_core::meta::{Digest, Entry, Hlc, MetaKey, Page, Partition, Stamp, supersedes};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The partitions present here: encoded partition prefix → empty.
const PARTITIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("partitions");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("metadata store: {0}")]
    Redb(#[from] redb::Error),
    #[error("metadata store: undecodable entry: {0}")]
    Decode(#[from] postcard::Error),
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// This node's side of metadata: its store and its clock.
pub struct Meta {
    pub store: MetaStore,
    pub hlc: parking_lot::Mutex<Hlc>,
}

impl Meta {
    pub fn open(path: &Path, node_id: &str) -> Result<Meta, StoreError> {
        Ok(Meta {
            store: MetaStore::open(path)?,
            hlc: parking_lot::Mutex::new(Hlc::new(node_id)),
        })
    }
}

/// The records this node owns, in redb.
pub struct MetaStore {
    db: Database,
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    postcard::to_allocvec(entry).expect("an entry always encodes")
}

impl MetaStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<MetaStore, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(PARTITIONS)?;
        txn.commit()?;
        Ok(MetaStore { db })
    }

    /// Merges entries last-writer-wins in one durable transaction. For each entry: `None` if
    /// it was stored (new, or newer than what was there), or the stamp of what was kept.
    pub fn apply(&self, writes: &[(MetaKey, Entry)]) -> Result<Vec<Option<Stamp>>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut kept = Vec::with_capacity(writes.len());
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut partitions = txn.open_table(PARTITIONS)?;
            for (key, entry) in writes {
                let stored_key = key.encode();
                let stored = match entries.get(stored_key.as_slice())? {
                    Some(old) => Some(decode_entry(old.value())?.stamp),
                    None => None,
                };
                if supersedes(entry.stamp, stored) {
                    entries.insert(stored_key.as_slice(), encode_entry(entry).as_slice())?;
                    partitions.insert(key.part.encode().as_slice(), &[][..])?;
                    kept.push(None);
                } else {
                    kept.push(stored);
                }
            }
        }
        txn.commit()?;
        Ok(kept)
    }

    pub fn get(&self, key: &MetaKey) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        match entries.get(key.encode().as_slice())? {
            Some(v) => Ok(Some(decode_entry(v.value())?)),
            None => Ok(None),
        }
    }

    /// A partition's entries with keys after `after` (all of them if `None`) that start with
    /// `prefix`, in key order, tombstones included; at most `limit` entries and about
    /// `bytes_max` bytes.
    pub fn scan(
        &self,
        part: &Partition,
        after: Option<&[u8]>,
        prefix: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Page, StoreError> {
        let base = part.encode();
        let mut with_prefix = base.clone();
        with_prefix.extend_from_slice(prefix);
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let range = match after {
            Some(after) => {
                let mut start = base.clone();
                start.extend_from_slice(after);
                if start < with_prefix {
                    entries.range(with_prefix.as_slice()..)?
                } else {
                    entries.range::<&[u8]>((
                        std::ops::Bound::Excluded(start.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))?
                }
            }
            None => entries.range(with_prefix.as_slice()..)?,
        };
        let mut page = Page::default();
        let mut bytes = 0usize;
        for item in range {
            let (k, v) = item?;
            let k = k.value();
            if !k.starts_with(&with_prefix) {
                break;
            }
            if page.entries.len() >= limit || bytes >= bytes_max {
                page.truncated = true;
                break;
            }
            bytes += k.len() + v.value().len();
            page.entries
                .push((k[base.len()..].to_vec(), decode_entry(v.value())?));
        }
        Ok(page)
    }

    /// Every partition with entries here.
    pub fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        let txn = self.db.begin_read()?;
        let partitions = txn.open_table(PARTITIONS)?;
        let mut out = Vec::new();
        for item in partitions.iter()? {
            let (k, _) = item?;
            if let Some(part) = Partition::decode(k.value()) {
                out.push(part);
            }
        }
        Ok(out)
    }

    /// A partition's summary: XOR of a 64-bit digest of every (key, stamp), and the count.
    pub fn digest(&self, part: &Partition) -> Result<Digest, StoreError> {
        let base = part.encode();
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut digest = Digest::default();
        for item in entries.range(base.as_slice()..)? {
            let (k, v) = item?;
            if !k.value().starts_with(&base) {
                break;
            }
            digest.add(k.value(), decode_entry(v.value())?.stamp);
        }
        Ok(digest)
    }

    /// Forgets a partition this node no longer owns (its owners hold all of it).
    pub fn drop_partition(&self, part: &Partition) -> Result<(), StoreError> {
        let base = part.encode();
        let txn = self.db.begin_write()?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let keys: Vec<Vec<u8>> = entries
                .range(base.as_slice()..)?
                .map_while(|item| match item {
                    Ok((k, _)) if k.value().starts_with(&base) => Some(Ok(k.value().to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            for k in keys {
                entries.remove(k.as_slice())?;
            }
            txn.open_table(PARTITIONS)?.remove(base.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::meta::Table;

    fn part(bucket: &str) -> Partition {
        Partition {
            table: Table::Objects,
            bucket: bucket.into(),
        }
    }

    fn key(bucket: &str, k: &str) -> MetaKey {
        MetaKey {
            part: part(bucket),
            key: k.as_bytes().to_vec(),
        }
    }

    fn entry(wall_ms: u64, value: Option<&str>) -> Entry {
        Entry {
            stamp: Stamp {
                wall_ms,
                counter: 0,
                node: 1,
            },
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_highest_stamp_wins_whatever_the_order_of_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(&dir.path().join("a.redb")).unwrap();
        let b = MetaStore::open(&dir.path().join("b.redb")).unwrap();
        let writes = [
            (key("x", "k"), entry(1, Some("one"))),
            (key("x", "k"), entry(3, None)),
            (key("x", "k"), entry(2, Some("two"))),
        ];
        for w in &writes {
            a.apply(std::slice::from_ref(w)).unwrap();
        }
        for w in writes.iter().rev() {
            b.apply(std::slice::from_ref(w)).unwrap();
        }
        assert_eq!(a.get(&key("x", "k")).unwrap(), Some(entry(3, None)));
        assert_eq!(b.get(&key("x", "k")).unwrap(), Some(entry(3, None)));
        assert_eq!(a.digest(&part("x")).unwrap(), b.digest(&part("x")).unwrap());
        assert_eq!(
            a.apply(&[(key("x", "k"), entry(2, Some("late")))]).unwrap(),
            vec![Some(entry(3, None).stamp)]
        );
    }

    #[test]
    fn scans_stay_in_their_partition_and_page_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(&dir.path().join("m.redb")).unwrap();
        let mut writes = Vec::new();
        for k in ["a/1", "a/2", "b/1", "c"] {
            writes.push((key("x", k), entry(1, Some(k))));
        }
        writes.push((key("xy", "a/0"), entry(1, Some("other bucket"))));
        writes.push((key("w", "a/9"), entry(1, Some("other bucket"))));
        s.apply(&writes).unwrap();
        let keys = |p: &Page| -> Vec<String> {
            p.entries
                .iter()
                .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
                .collect()
        };
        let all = s.scan(&part("x"), None, b"", 10, usize::MAX).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/2", "b/1", "c"]);
        assert!(!all.truncated);
        let first = s.scan(&part("x"), None, b"", 2, usize::MAX).unwrap();
        assert_eq!(keys(&first), ["a/1", "a/2"]);
        assert!(first.truncated);
        let next = s
            .scan(&part("x"), Some(b"a/2"), b"", 2, usize::MAX)
            .unwrap();
        assert_eq!(keys(&next), ["b/1", "c"]);
        let prefixed = s.scan(&part("x"), None, b"a/", 10, usize::MAX).unwrap();
        assert_eq!(keys(&prefixed), ["a/1", "a/2"]);
        let after_in_prefix = s
            .scan(&part("x"), Some(b"a/1"), b"a/", 10, usize::MAX)
            .unwrap();
        assert_eq!(keys(&after_in_prefix), ["a/2"]);
        let mut parts = s.partitions().unwrap();
        parts.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        assert_eq!(parts, [part("w"), part("x"), part("xy")]);
        s.drop_partition(&part("x")).unwrap();
        assert!(
            s.scan(&part("x"), None, b"", 10, usize::MAX)
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(
            s.scan(&part("xy"), None, b"", 10, usize::MAX)
                .unwrap()
                .entries
                .len(),
            1
        );
    }
}
