//! A segment: one file of records, mapped for reads, with its own group commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, FormatError, RecordHeader, RecordKind};
use crate::latency::LatencyHistogram;
use crate::limits::{READ_AHEAD_BYTES_MIN, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::{Mapping, StorageFile};
use crate::{Blob, Hash};

#[derive(Debug, Default)]
struct SyncState {
    /// The generation the next fsync to start will have. A sync of generation `g` covers every
    /// write that completed before it started.
    next_gen: u64,
    /// The newest generation whose fsync has finished.
    synced_gen: u64,
    in_progress: bool,
    failed: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    pub map: Arc<dyn Mapping>,
    /// Size of the file: the preallocated capacity of a shared segment, the exact size of a
    /// dedicated one.
    pub file_bytes: u64,
    /// End of the last record written.
    pub written_end: AtomicU64,
    /// Bytes of the records that the index points at.
    pub live_bytes: AtomicU64,
    /// The smallest sequence number of any record in the segment (`u64::MAX` if none). A
    /// tombstone with sequence `s` may be dropped only when every other segment has a larger
    /// minimum: then no older record of its hash can exist anywhere.
    pub min_seq: AtomicU64,
    /// Set once the segment takes no more records (its hint file is being or was written).
    pub sealed: AtomicBool,
    /// Records placed in the segment whose bytes are still arriving, or appended blob records
    /// the index does not name yet, and whether the segment is full: then the last of them to
    /// finish seals it (a hint file lists committed records only, so sealing waits for every
    /// placed record to commit or be abandoned; and compaction, which keeps only the records
    /// the index names, must not take a segment before its records are in the index).
    pub placing: Mutex<Placing>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Every fsync of a segment, timed.
    pub fsyncs: Arc<LatencyHistogram>,
    /// Set by every read; cleared by `Store::release_cold_mappings`, which lets go only of the
    /// mappings of segments nobody read since its last pass.
    pub read_since_release: AtomicBool,
    /// Whether the segment was created to take direct writes (a shared segment the store
    /// created with `Config::direct_writes`): its reads do not read ahead until it is sealed
    /// (`Mapping::read_ahead` says why). A segment reopened by recovery was read ahead by its
    /// scan, and takes every byte through the cache.
    without_read_ahead: bool,
    /// Whether records placed in it now write their payloads around the page cache: set with
    /// `without_read_ahead`, cleared by a failed append, whose torn bytes the next records
    /// overwrite through the cache and which may have left folios of many pages behind.
    direct_writes: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct Placing {
    pub records: u32,
    pub seal_due: bool,
}

/// What a group commit reports when its fsync failed.
pub(crate) struct SyncFailed(pub std::io::Error);

impl Segment {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u32,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        map: Arc<dyn Mapping>,
        written_end: u64,
        sealed: bool,
        takes_direct_writes: bool,
        fsyncs: Arc<LatencyHistogram>,
    ) -> Segment {
        if takes_direct_writes {
            file.read_ahead(false);
            map.read_ahead(false);
        }
        let direct_writes = AtomicBool::new(takes_direct_writes);
        Segment {
            id,
            path,
            file_bytes: map.len(),
            file,
            map,
            written_end: AtomicU64::new(written_end),
            live_bytes: AtomicU64::new(0),
            min_seq: AtomicU64::new(u64::MAX),
            sealed: AtomicBool::new(sealed),
            placing: Mutex::new(Placing::default()),
            sync: Mutex::new(SyncState {
                next_gen: 1,
                ..SyncState::default()
            }),
            synced: Condvar::new(),
            fsyncs,
            read_since_release: AtomicBool::new(false),
            without_read_ahead: takes_direct_writes,
            direct_writes,
        }
    }

    /// Whether a record placed now writes its payload around the page cache.
    pub(crate) fn takes_direct_writes(&self) -> bool {
        self.direct_writes.load(Ordering::Acquire)
    }

    /// After a failed append, under the append lock: the records placed from now on write
    /// through the cache.
    pub(crate) fn stop_direct_writes(&self) {
        self.direct_writes.store(false, Ordering::Release);
    }

    /// Called when the segment takes no more records: closes what direct writes kept open, and
    /// lets reads of it read ahead again, as reads of sealed segments do.
    pub(crate) fn end_direct_writes(&self) {
        self.file.end_direct_writes();
        if self.without_read_ahead {
            self.file.read_ahead(true);
            self.map.read_ahead(true);
        }
    }

    /// Returns once every write to this file that completed before the call is durable.
    /// Concurrent callers share fsyncs: while one runs, the others queue behind it and the next
    /// one covers them all. A failed fsync is never retried: every waiter, now and later, gets
    /// the failure.
    pub(crate) fn sync_written(&self) -> Result<(), SyncFailed> {
        let mut st = self.sync.lock();
        let target = st.next_gen;
        loop {
            if st.failed {
                return Err(SyncFailed(std::io::Error::other(
                    "an earlier fsync of this segment failed",
                )));
            }
            if st.synced_gen >= target {
                return Ok(());
            }
            if st.in_progress {
                self.synced.wait(&mut st);
                continue;
            }
            st.in_progress = true;
            let generation = st.next_gen;
            st.next_gen += 1;
            drop(st);
            let started = std::time::Instant::now();
            let result = self.file.sync_data();
            self.fsyncs.record(started.elapsed());
            st = self.sync.lock();
            st.in_progress = false;
            match result {
                Ok(()) => st.synced_gen = generation,
                Err(e) => {
                    st.failed = true;
                    self.synced.notify_all();
                    return Err(SyncFailed(e));
                }
            }
            self.synced.notify_all();
        }
    }

    pub(crate) fn note_record(&self, seq: u64, live_record_bytes: u64) {
        self.min_seq.fetch_min(seq, Ordering::Relaxed);
        self.live_bytes
            .fetch_add(live_record_bytes, Ordering::Relaxed);
    }

    pub(crate) fn written_bytes(&self) -> u64 {
        self.written_end
            .load(Ordering::Relaxed)
            .saturating_sub(SEGMENT_HEADER_BYTES)
    }

    fn corrupted(&self, offset: u64, kind: CorruptionKind) -> Error {
        Error::Corrupted {
            segment: self.id,
            offset,
            kind,
        }
    }

    /// Decodes the record header at `offset`, through the mapping: for a read of the record's
    /// bytes, which maps the pages anyway.
    pub(crate) fn header_at(&self, offset: u64) -> Result<RecordHeader> {
        self.check_header_bounds(offset)?;
        self.decode_header(offset, self.map.bytes(offset, RECORD_HEADER_BYTES))
    }

    /// Decodes the record header at `offset`, read from the file (one `pread`): for a look at
    /// the header alone (a name, a length, a sequence number). Through the mapping, the kernel
    /// would map the pages around it too (64 KiB), and they would stay resident for no reader.
    pub(crate) fn header_read(&self, offset: u64) -> Result<RecordHeader> {
        self.check_header_bounds(offset)?;
        let mut bytes = [0u8; RECORD_HEADER_BYTES as usize];
        self.file
            .read_at(&mut bytes, offset)
            .map_err(|e| Error::io("read a record header of", &self.path, e))?;
        self.decode_header(offset, &bytes)
    }

    fn check_header_bounds(&self, offset: u64) -> Result<()> {
        let end = offset
            .checked_add(RECORD_HEADER_BYTES)
            .filter(|&e| e <= self.map.len());
        if end.is_none() {
            return Err(self.corrupted(offset, CorruptionKind::RecordBounds));
        }
        Ok(())
    }

    fn decode_header(&self, offset: u64, bytes: &[u8]) -> Result<RecordHeader> {
        let header = format::decode_record_header(bytes)
            .map_err(|_| self.corrupted(offset, CorruptionKind::RecordHeader))?;
        let end = offset.checked_add(format::record_bytes(header.payload_bytes));
        if end.is_none_or(|e| e > self.map.len()) {
            return Err(self.corrupted(offset, CorruptionKind::RecordBounds));
        }
        Ok(header)
    }

    /// The hash named by the header at `offset`, if it is readable (through the mapping).
    pub(crate) fn name_at(&self, offset: u64) -> Option<Hash> {
        self.header_at(offset).ok().map(|h| h.hash)
    }

    /// The hash named by the header at `offset`, if it is readable (from the file).
    pub(crate) fn name_read(&self, offset: u64) -> Option<Hash> {
        self.header_read(offset).ok().map(|h| h.hash)
    }

    /// Reads `[start, end)` of the blob `hash` whose record is at `offset` (the whole blob when
    /// `range` is `None`), checking the header, the checksum table and every chunk it returns.
    pub(crate) fn read_blob(
        &self,
        offset: u64,
        hash: &Hash,
        range: Option<(u64, u64)>,
    ) -> Result<Blob> {
        // Checked first: a read makes its cache line shared, not dirty, while the flag stands.
        if !self.read_since_release.load(Ordering::Relaxed) {
            self.read_since_release.store(true, Ordering::Relaxed);
        }
        let header = self.header_at(offset)?;
        if header.kind != RecordKind::Blob {
            return Err(self.corrupted(offset, CorruptionKind::RecordHeader));
        }
        if header.hash != *hash {
            return Err(self.corrupted(offset, CorruptionKind::HashNameMismatch));
        }
        let len = header.payload_bytes;
        let (start, end) = match range {
            None => (0, len),
            Some((offset_in_blob, length_bytes)) => {
                let end = offset_in_blob
                    .checked_add(length_bytes)
                    .filter(|&e| e <= len);
                let Some(end) = end else {
                    return Err(Error::RangeOutOfBounds {
                        offset: offset_in_blob,
                        length_bytes,
                        blob_bytes: len,
                    });
                };
                (offset_in_blob, end)
            }
        };
        let payload_start = offset + RECORD_HEADER_BYTES;
        if end - start >= READ_AHEAD_BYTES_MIN {
            // A record written around the page cache, or long evicted, is read from the disk:
            // in large reads from here on, not page by page as the checksum check touches it.
            self.map.will_need(payload_start + start, end - start);
        }
        let payload = self.map.bytes(payload_start, len);
        let table = self
            .map
            .bytes(payload_start + len, format::table_bytes(len));
        format::verify_payload_range(payload, table, &header, start, end).map_err(|e| {
            let kind = match e {
                FormatError::PayloadChecksum { chunk_index } => {
                    CorruptionKind::PayloadChecksum { chunk_index }
                }
                _ => CorruptionKind::ChecksumTable,
            };
            self.corrupted(offset, kind)
        })?;
        Ok(Blob {
            map: self.map.clone(),
            start: payload_start + start,
            len: end - start,
        })
    }
}
