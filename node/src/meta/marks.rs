//! What the collector knows of a blob, in the metadata's blob table (`Table::Blobs`):
//!
//! - a **mark** (`hash` → `s3::records::BlobMark`): the S3 front wrote or referred to the blob,
//!   so the collector may remove it once no object or upload names it;
//! - a **hold** (`hash` + `HOLD_SUFFIX` → [`BlobHold`]): the native API (the HTTP front's
//!   `/v1/blobs`, or a client of the node protocol) stored the blob, so the collector never
//!   removes it; a native delete lets go of it.
//!
//! Dedup makes one blob both an object's chunk and a blob stored through the native API when
//! their bytes are equal. The mark and the hold keep each side's claim, so that the collector
//! does not remove a blob the native API stored, and a native delete does not remove an
//! object's bytes (`quic::coordinator::delete`).
//!
//! - A mark is written before its chunk is stored, and the put waits for it (`s3::gc::mark`):
//!   a native delete that finds no mark then knows every S3 put of those bytes yet to come
//!   writes them after the delete began.
//! - Holds are queued on the node's `State::holds` and written by [`write_holds`], in batches
//!   and off the answer's path: the put's own version keeps its blob from any collection
//!   decided within the grace period, and the writer commits within seconds (`s3::gc` gives
//!   the reasoning).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::meta::{Entry, MetaKey, Partition, Table};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::limits::{HOLD_BATCH_MAX, HOLD_LINGER_MS, HOLD_RETRY_PAUSE_MS, HOLD_WRITE_ATTEMPTS};
use crate::state::State;

/// Marks and holds are spread over `BLOB_MARK_PARTITIONS` partitions by the first four bits of
/// the hash: enough to spread them over the cluster, few enough that a batch is a few writes.
/// A blob's mark and hold share its partition.
pub const BLOB_MARK_PARTITIONS: u8 = 16;

/// What follows the hash in a hold's key. Releases before holds existed read only keys of 32
/// bytes in this table, so they pass over holds.
pub const HOLD_SUFFIX: &[u8] = b"h";

/// The name of mark partition `index` (below `BLOB_MARK_PARTITIONS`).
pub fn blob_mark_partition(index: u8) -> String {
    format!("{index:x}")
}

pub fn blob_mark_key(hash: &[u8; 32]) -> MetaKey {
    MetaKey::new(
        Table::Blobs,
        blob_mark_partition(hash[0] >> 4),
        hash.to_vec(),
    )
}

pub fn blob_hold_key(hash: &[u8; 32]) -> MetaKey {
    let mut key = hash.to_vec();
    key.extend_from_slice(HOLD_SUFFIX);
    MetaKey::new(Table::Blobs, blob_mark_partition(hash[0] >> 4), key)
}

/// The blob a hold's key names, or `None` for any other key of the table (a mark's).
pub fn held_hash(key: &[u8]) -> Option<[u8; 32]> {
    let hash = key.strip_suffix(HOLD_SUFFIX)?;
    hash.try_into().ok()
}

/// A hold's value: when the native API last stored the blob. Only its presence counts; the
/// time is for whoever reads the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHold {
    pub held_ms: u64,
}

/// Queues a hold: the native API stores `hash` now (`State::holds`; a put never waits for it).
pub(crate) fn hold(state: &State, hash: &[u8; 32]) {
    let value = postcard::to_allocvec(&BlobHold {
        held_ms: clock::wall_ms(),
    })
    .expect("a hold encodes");
    let entry = Entry {
        stamp: super::cluster::stamp(state),
        value: Some(value),
    };
    state.holds.push(blob_hold_key(hash), entry);
}

/// Writes the queued holds in batches gathered for `HOLD_LINGER_MS`, one write per partition,
/// the partitions at once. A hold is written to stand only over older entries, so a native
/// delete's release stamped after it wins, however late the hold lands.
pub(crate) async fn write_holds(state: Arc<State>) {
    let Some(mut pending) = state.holds.take_inbox() else {
        return;
    };
    while let Some(first) = pending.recv().await {
        let mut by_partition: BTreeMap<Partition, Vec<(MetaKey, Entry)>> = BTreeMap::new();
        by_partition
            .entry(first.0.part.clone())
            .or_default()
            .push(first);
        let mut taken = 1;
        let linger = tokio::time::sleep(Duration::from_millis(HOLD_LINGER_MS));
        tokio::pin!(linger);
        while taken < HOLD_BATCH_MAX {
            let hold = tokio::select! {
                hold = pending.recv() => hold,
                _ = &mut linger => None,
            };
            let Some(hold) = hold else { break };
            by_partition
                .entry(hold.0.part.clone())
                .or_default()
                .push(hold);
            taken += 1;
        }
        // Each partition's write runs on its own, and the next batch is gathered meanwhile: one
        // partition out of reach (its tries take up to half a minute) holds back no other.
        for holds in by_partition.into_values() {
            crate::task::spawn(write_batch(state.clone(), holds));
        }
    }
}

async fn write_batch(state: Arc<State>, holds: Vec<(MetaKey, Entry)>) {
    for attempt in 1..=HOLD_WRITE_ATTEMPTS {
        match super::cluster::write_conditional(&state, holds.clone()).await {
            Ok(()) => return state.holds.done(holds.len(), None),
            Err(_) if attempt < HOLD_WRITE_ATTEMPTS => {
                let pause = HOLD_RETRY_PAUSE_MS * u64::from(attempt);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => state.holds.done(holds.len(), Some(&e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_shares_its_marks_partition_and_is_told_from_it() {
        let hash = [0xa7; 32];
        let (mark, hold) = (blob_mark_key(&hash), blob_hold_key(&hash));
        assert_eq!(mark.part, hold.part);
        assert_eq!(held_hash(&hold.key), Some(hash));
        assert_eq!(held_hash(&mark.key), None);
        assert_eq!(held_hash(b"h"), None);
    }
}
