//! The durable hint log: this node's hints ([`cairn_core::hints::HintQueue`]) kept in a
//! [`RecordLog`] of `HintRecord`s, replayed at start, fsynced before a hint counts, rewritten
//! when most of it is delivered.

use std::path::Path;

use cairn_core::hints::{Hint, HintKind, HintQueue};
use cairn_engine::Hash;
use serde::{Deserialize, Serialize};

use super::recordlog::{LogError, RecordLog};
use crate::limits::{HINT_LOG_DEAD_RECORDS_MAX, HINT_RECORD_BYTES_MAX, HINTS_PENDING_MAX};

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
                .rewrite(self.queue.pending().map(|(id, hint)| add_record(id, hint)))?;
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
