//! A small durable log of checksummed records, shared by the hint log and the version table.
//!
//! ```text
//! record: [u32 LE payload length][u32 LE CRC32 of payload][payload: postcard record]
//! ```
//! A torn or corrupt record ends the replay and the file is cut there: only a record whose
//! append was never acknowledged can be torn, since an append counts once it is fsynced.
//! Concurrent appends share fsyncs (group commit). When most records are dead, the owner
//! rewrites the log from its live state: a new file, fsynced, renamed over the old one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

struct Writer {
    file: File,
    /// Appends written so far.
    written: u64,
}

/// An append-only record file.
pub struct RecordLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Appends known durable; fsyncs are taken under this lock.
    synced: Mutex<u64>,
    record_bytes_max: usize,
}

impl RecordLog {
    /// Opens (or creates) the log and replays its valid records into `apply`, in order.
    pub fn open<R: DeserializeOwned>(
        path: &Path,
        record_bytes_max: usize,
        mut apply: impl FnMut(R),
    ) -> Result<RecordLog, LogError> {
        let io = |source| LogError {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut at = 0;
        while bytes.len() - at >= 8 {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            if len > record_bytes_max || bytes.len() - at - 8 < len {
                break;
            }
            let payload = &bytes[at + 8..at + 8 + len];
            if crc32fast::hash(payload) != crc {
                break;
            }
            let Ok(record) = postcard::from_bytes::<R>(payload) else {
                break;
            };
            apply(record);
            at += 8 + len;
        }
        if at < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - at,
                "log ends in a torn record; cutting it"
            );
            file.set_len(at as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(RecordLog {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer { file, written: 0 }),
            synced: Mutex::new(0),
            record_bytes_max,
        })
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError {
            path: self.path.clone(),
            source,
        }
    }

    fn encode<R: Serialize>(&self, record: &R) -> Vec<u8> {
        let payload = postcard::to_allocvec(record).expect("log records serialize");
        debug_assert!(payload.len() <= self.record_bytes_max);
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend((payload.len() as u32).to_le_bytes());
        out.extend(crc32fast::hash(&payload).to_le_bytes());
        out.extend(payload);
        out
    }

    /// Appends records and returns once they are durable. Concurrent callers share fsyncs.
    pub fn append<R: Serialize>(&self, records: &[R]) -> Result<(), LogError> {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend(self.encode(r));
        }
        let mine = {
            let mut w = self.writer.lock();
            w.file.write_all(&bytes).map_err(|e| self.io(e))?;
            w.written += 1;
            w.written
        };
        let mut synced = self.synced.lock();
        if *synced >= mine {
            return Ok(()); // another caller's fsync covered this append
        }
        let (file, upto) = {
            let w = self.writer.lock();
            (w.file.try_clone().map_err(|e| self.io(e))?, w.written)
        };
        file.sync_data().map_err(|e| self.io(e))?;
        *synced = upto;
        Ok(())
    }

    /// Replaces the log with `records` (the live state), durably.
    pub fn rewrite<R: Serialize>(&self, records: impl Iterator<Item = R>) -> Result<(), LogError> {
        let tmp = self.path.with_extension("tmp");
        let io = |source| LogError {
            path: tmp.clone(),
            source,
        };
        let mut out = Vec::new();
        for r in records {
            out.extend(self.encode(&r));
        }
        let mut w = self.writer.lock();
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&out).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        w.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Bytes the file holds now.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}
