//! Hinted handoff: a coordinator's durable promise to bring a replica that missed a write (or a
//! delete) up to date once it is reachable again.
//!
//! `HintQueue` is the plain state machine (which hints are due, backoff after failures; time is
//! passed in). `HintLog` makes it durable: a [`RecordLog`] of `HintRecord`s, replayed at start,
//! rewritten when most of it is delivered.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cairn_engine::Hash;
use serde::{Deserialize, Serialize};

use crate::recordlog::{LogError, RecordLog};

/// Largest hint record accepted when replaying (a hash, an id and a node id).
pub const HINT_RECORD_BYTES_MAX: usize = 1024;

/// Hints a node keeps at most; beyond it new hints are refused (the replica is then repaired by
/// read repair or, later, anti-entropy).
pub const HINTS_PENDING_MAX: usize = 1_000_000;

/// Delivered records the log may hold before it is rewritten.
pub const HINT_LOG_DEAD_RECORDS_MAX: usize = 4096;

/// What a hint makes the target do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HintKind {
    /// Receive a copy of the blob.
    Put,
    /// Delete its copy.
    Delete,
}

/// One pending hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub hash: Hash,
    pub target: String,
    pub kind: HintKind,
}

#[derive(Debug, Serialize, Deserialize)]
enum HintRecord {
    Add {
        id: u64,
        hash: [u8; 32],
        target: String,
        kind: HintKind,
    },
    Done {
        id: u64,
    },
}

#[derive(Debug)]
struct Entry {
    hint: Hint,
    /// Milliseconds (on the caller's clock) before which the hint is not retried.
    not_before_ms: u64,
    failures: u32,
    in_flight: bool,
}

/// Pending hints and when each is due. Pure: the caller passes the time in milliseconds.
#[derive(Debug)]
pub struct HintQueue {
    entries: BTreeMap<u64, Entry>,
    retry_ms_min: u64,
    retry_ms_max: u64,
}

impl HintQueue {
    pub fn new(retry_ms_min: u64, retry_ms_max: u64) -> HintQueue {
        HintQueue {
            entries: BTreeMap::new(),
            retry_ms_min,
            retry_ms_max: retry_ms_max.max(retry_ms_min),
        }
    }

    pub fn insert(&mut self, id: u64, hint: Hint, now_ms: u64) {
        self.entries.insert(
            id,
            Entry {
                hint,
                not_before_ms: now_ms,
                failures: 0,
                in_flight: false,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `limit` hints due at `now_ms`, marked in flight until `delivered` or `failed`.
    pub fn take_due(&mut self, now_ms: u64, limit: usize) -> Vec<(u64, Hint)> {
        let mut due = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            if due.len() == limit {
                break;
            }
            if !e.in_flight && e.not_before_ms <= now_ms {
                e.in_flight = true;
                due.push((*id, e.hint.clone()));
            }
        }
        due
    }

    pub fn delivered(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// The delivery failed: retry after a backoff that doubles per failure, capped.
    pub fn failed(&mut self, id: u64, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.failures = e.failures.saturating_add(1);
            let shift = e.failures.min(20) - 1;
            let backoff = self
                .retry_ms_min
                .saturating_mul(1 << shift)
                .min(self.retry_ms_max);
            e.not_before_ms = now_ms + backoff;
            e.in_flight = false;
        }
    }

    /// Makes every hint for `target` due now (the target was seen alive again).
    pub fn wake(&mut self, target: &str, now_ms: u64) {
        for e in self.entries.values_mut() {
            if e.hint.target == target && !e.in_flight {
                e.not_before_ms = now_ms;
            }
        }
    }

    pub fn pending_for(&self, target: &str) -> usize {
        self.entries
            .values()
            .filter(|e| e.hint.target == target)
            .count()
    }

    fn live(&self) -> impl Iterator<Item = (u64, &Hint)> {
        self.entries.iter().map(|(id, e)| (*id, &e.hint))
    }
}

/// Why the hint log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HintError {
    #[error("hint log: {0}")]
    Io(#[from] LogError),
    #[error("{pending} hints pending, the limit")]
    Full { pending: usize },
}

/// The durable hint log and its queue.
pub struct HintLog {
    log: RecordLog,
    queue: HintQueue,
    next_id: u64,
    dead_records: usize,
}

impl HintLog {
    /// Opens (creating) `dir/hints.log` and replays it.
    pub fn open(dir: &Path, retry_ms_min: u64, retry_ms_max: u64) -> Result<HintLog, HintError> {
        let mut queue = HintQueue::new(retry_ms_min, retry_ms_max);
        let mut next_id = 0;
        let mut records = 0;
        let log = RecordLog::open(&dir.join("hints.log"), HINT_RECORD_BYTES_MAX, |record| {
            records += 1;
            match record {
                HintRecord::Add {
                    id,
                    hash,
                    target,
                    kind,
                } => {
                    let hint = Hint {
                        hash: Hash::from_bytes(hash),
                        target,
                        kind,
                    };
                    queue.insert(id, hint, 0);
                    next_id = u64::max(next_id, id + 1);
                }
                HintRecord::Done { id } => queue.delivered(id),
            }
        })?;
        let dead_records = records - queue.len();
        Ok(HintLog {
            log,
            queue,
            next_id,
            dead_records,
        })
    }

    pub fn queue(&mut self) -> &mut HintQueue {
        &mut self.queue
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Records a hint durably (fsynced before return), then queues it.
    pub fn add(&mut self, hint: Hint, now_ms: u64) -> Result<u64, HintError> {
        if self.queue.len() >= HINTS_PENDING_MAX {
            return Err(HintError::Full {
                pending: self.queue.len(),
            });
        }
        let id = self.next_id;
        self.log.append(&[add_record(id, &hint)])?;
        self.next_id += 1;
        self.queue.insert(id, hint, now_ms);
        Ok(id)
    }

    /// Records a delivery; rewrites the log once it is mostly delivered records.
    pub fn delivered(&mut self, id: u64) -> Result<(), HintError> {
        self.log.append(&[HintRecord::Done { id }])?;
        self.queue.delivered(id);
        self.dead_records += 2;
        if self.dead_records > HINT_LOG_DEAD_RECORDS_MAX && self.dead_records > self.queue.len() {
            self.log
                .rewrite(self.queue.live().map(|(id, hint)| add_record(id, hint)))?;
            self.dead_records = 0;
        }
        Ok(())
    }
}

fn add_record(id: u64, hint: &Hint) -> HintRecord {
    HintRecord::Add {
        id,
        hash: *hint.hash.as_bytes(),
        target: hint.target.clone(),
        kind: hint.kind,
    }
}

/// Milliseconds since `start`, the clock the hint queue runs on.
pub fn elapsed_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How often the delivery loop looks for due hints.
pub const HINT_TICK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn hint(n: u8, target: &str) -> Hint {
        Hint {
            hash: Hash::from_bytes([n; 32]),
            target: target.into(),
            kind: HintKind::Put,
        }
    }

    #[test]
    fn queue_backs_off_and_wakes() {
        let mut q = HintQueue::new(100, 1000);
        q.insert(1, hint(1, "b"), 0);
        assert_eq!(q.take_due(0, 10).len(), 1);
        assert!(
            q.take_due(0, 10).is_empty(),
            "in flight hints are not handed out twice"
        );
        q.failed(1, 0);
        assert!(q.take_due(99, 10).is_empty());
        assert_eq!(q.take_due(100, 10).len(), 1);
        q.failed(1, 100);
        assert!(
            q.take_due(299, 10).is_empty(),
            "second failure waits 200 ms"
        );
        q.wake("b", 150);
        assert_eq!(q.take_due(150, 10).len(), 1);
        for _ in 0..30 {
            q.failed(1, 0);
        }
        assert!(q.take_due(999, 10).is_empty());
        assert_eq!(q.take_due(1000, 10).len(), 1, "backoff is capped");
        q.delivered(1);
        assert!(q.is_empty());
    }

    #[test]
    fn log_survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = HintLog::open(dir.path(), 10, 100).unwrap();
            let a = log.add(hint(1, "b"), 0).unwrap();
            log.add(hint(2, "c"), 0).unwrap();
            log.delivered(a).unwrap();
        }
        let path = dir.path().join("hints.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut log = HintLog::open(dir.path(), 10, 100).unwrap();
        assert_eq!(log.pending(), 1);
        let due = log.queue().take_due(0, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, hint(2, "c"));
        // New ids never reuse old ones.
        let id = log.add(hint(3, "d"), 0).unwrap();
        assert!(id > due[0].0);
    }

    #[test]
    fn log_is_rewritten_when_mostly_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HintLog::open(dir.path(), 10, 100).unwrap();
        let keep = log.add(hint(0, "keep"), 0).unwrap();
        for i in 0..HINT_LOG_DEAD_RECORDS_MAX {
            let id = log.add(hint((i % 200) as u8, "x"), 0).unwrap();
            log.delivered(id).unwrap();
        }
        // Without a rewrite the log would hold every Add and Done record: about 57 bytes per
        // delivered hint, 233 KB here. A rewrite halfway leaves about half of that.
        let size = std::fs::metadata(dir.path().join("hints.log"))
            .unwrap()
            .len();
        assert!(size < 150_000, "log not rewritten: {size} bytes");
        drop(log);
        let mut log = HintLog::open(dir.path(), 10, 100).unwrap();
        let due = log.queue().take_due(0, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, keep);
    }
}
