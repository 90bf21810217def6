//! Streaming writes: `BlobWriter` for blobs of any size in bounded memory; `Placed`, a record
//! placed in the open shared segment and written there as its bytes arrive; and
//! `DedicatedFile`, the segment of its own that a large blob is written into under a temporary
//! name.
//!
//! A placed record's whole pages go around the page cache (`direct::DirectRun`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::direct::DirectRun;
use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::format::{self, RecordHeader, RecordKind, SegmentHeader, SegmentKind};
use crate::hash::{Hash, StreamHasher};
use crate::index::Location;
use crate::limits::{
    BLOB_BYTES_MAX, CRC_CHUNK_BYTES, HASH_BATCH_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    STREAM_TABLE_BUFFER_BYTES_MAX,
};
use crate::segment::Segment;
use crate::storage::StorageFile;

/// Where a dedicated segment's payload starts.
const PAYLOAD_OFFSET: u64 = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES;

/// A dedicated segment being written in the temporary directory. Its checksum table is built as
/// the payload arrives; past `STREAM_TABLE_BUFFER_BYTES_MAX` it spills to a side file, so memory
/// stays bounded whatever the blob's size.
pub(crate) struct DedicatedFile {
    id: u32,
    temp_path: PathBuf,
    file: Arc<dyn StorageFile>,
    payload_bytes: u64,
    reserved_bytes: u64,
    chunk_crc: crc32fast::Hasher,
    table: Vec<u8>,
    table_crc: crc32fast::Hasher,
    side: Option<(PathBuf, Arc<dyn StorageFile>)>,
    side_bytes: u64,
}

impl DedicatedFile {
    pub(crate) fn create(inner: &Inner) -> Result<DedicatedFile> {
        inner.check_writable()?;
        inner.reserve_bytes(PAYLOAD_OFFSET)?;
        let id = match inner.allocate_segment_id() {
            Ok(id) => id,
            Err(e) => {
                inner.release_bytes(PAYLOAD_OFFSET);
                return Err(e);
            }
        };
        let temp_path = inner.temp_dir.join(format!("{id:010}.seg"));
        let file = match inner.storage.create(&temp_path) {
            Ok(f) => f,
            Err(e) => {
                inner.release_bytes(PAYLOAD_OFFSET);
                return Err(Error::io("create", &temp_path, e));
            }
        };
        Ok(DedicatedFile {
            id,
            temp_path,
            file,
            payload_bytes: 0,
            reserved_bytes: PAYLOAD_OFFSET,
            chunk_crc: crc32fast::Hasher::new(),
            table: Vec::new(),
            table_crc: crc32fast::Hasher::new(),
            side: None,
            side_bytes: 0,
        })
    }

    pub(crate) fn append(&mut self, inner: &Inner, mut data: &[u8]) -> Result<()> {
        inner.reserve_bytes(data.len() as u64)?;
        self.reserved_bytes += data.len() as u64;
        self.file
            .write_at(data, PAYLOAD_OFFSET + self.payload_bytes)
            .map_err(|e| Error::io("write", &self.temp_path, e))?;
        while !data.is_empty() {
            let filled = self.payload_bytes % CRC_CHUNK_BYTES;
            let take = data.len().min((CRC_CHUNK_BYTES - filled) as usize);
            self.chunk_crc.update(&data[..take]);
            self.payload_bytes += take as u64;
            data = &data[take..];
            if self.payload_bytes.is_multiple_of(CRC_CHUNK_BYTES) {
                self.end_chunk(inner)?;
            }
        }
        Ok(())
    }

    fn end_chunk(&mut self, inner: &Inner) -> Result<()> {
        let crc = std::mem::replace(&mut self.chunk_crc, crc32fast::Hasher::new()).finalize();
        self.table.extend_from_slice(&crc.to_le_bytes());
        self.table_crc.update(&crc.to_le_bytes());
        if self.table.len() as u64 >= STREAM_TABLE_BUFFER_BYTES_MAX {
            if self.side.is_none() {
                let path = inner.temp_dir.join(format!("{:010}.table", self.id));
                let file = inner
                    .storage
                    .create(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                self.side = Some((path, file));
            }
            let (path, file) = self.side.as_ref().expect("set above");
            file.write_at(&self.table, self.side_bytes)
                .map_err(|e| Error::io("write", path, e))?;
            self.side_bytes += self.table.len() as u64;
            self.table.clear();
        }
        Ok(())
    }

    /// Completes the segment and makes the blob durable and visible: table, record header and
    /// segment header written, fsync, rename into the segment directory, fsync the directory.
    pub(crate) fn finish(mut self, inner: &Inner, hash: Hash) -> Result<()> {
        let result = self.finish_inner(inner, hash);
        if result.is_err() || self.file_is_temp() {
            self.discard(inner);
        }
        result
    }

    fn file_is_temp(&self) -> bool {
        // Set to an empty path once renamed into place.
        !self.temp_path.as_os_str().is_empty()
    }

    fn finish_inner(&mut self, inner: &Inner, hash: Hash) -> Result<()> {
        if inner.contains(&hash) {
            return Ok(()); // stored meanwhile; this copy is discarded
        }
        inner.check_writable()?;
        if !self.payload_bytes.is_multiple_of(CRC_CHUNK_BYTES) {
            self.end_chunk(inner)?;
        }
        let table_bytes = format::table_bytes(self.payload_bytes);
        inner.reserve_bytes(table_bytes)?;
        self.reserved_bytes += table_bytes;
        let mut at = PAYLOAD_OFFSET + self.payload_bytes;
        if let Some((path, side)) = &self.side {
            let mut piece = vec![0u8; STREAM_TABLE_BUFFER_BYTES_MAX as usize];
            let mut copied = 0;
            while copied < self.side_bytes {
                let n = piece.len().min((self.side_bytes - copied) as usize);
                side.read_at(&mut piece[..n], copied)
                    .map_err(|e| Error::io("read", path, e))?;
                self.file
                    .write_at(&piece[..n], at)
                    .map_err(|e| Error::io("write", &self.temp_path, e))?;
                copied += n as u64;
                at += n as u64;
            }
        }
        self.file
            .write_at(&self.table, at)
            .map_err(|e| Error::io("write", &self.temp_path, e))?;
        let file_bytes = at + self.table.len() as u64;
        debug_assert_eq!(
            file_bytes,
            SEGMENT_HEADER_BYTES + format::record_bytes(self.payload_bytes)
        );
        let seq = inner.allocate_seq()?;
        // The commit checksum covers the sequence number, then the table hashed as it was built.
        let mut commit_crc = crc32fast::Hasher::new();
        commit_crc.update(&seq.to_le_bytes());
        commit_crc.combine(&self.table_crc);
        let header = RecordHeader {
            version: format::FORMAT_VERSION,
            kind: RecordKind::Blob,
            hash,
            payload_bytes: self.payload_bytes,
            seq,
            table_crc: commit_crc.finalize(),
        };
        let segment_header = SegmentHeader {
            version: format::FORMAT_VERSION,
            kind: SegmentKind::Dedicated,
            segment_id: self.id,
            capacity_bytes: file_bytes,
        };
        let write = |bytes: &[u8], offset| {
            self.file
                .write_at(bytes, offset)
                .map_err(|e| Error::io("write", &self.temp_path, e))
        };
        write(&format::encode_record_header(&header), SEGMENT_HEADER_BYTES)?;
        write(&format::encode_segment_header(&segment_header), 0)?;
        self.file
            .sync_data()
            .map_err(|e| inner.fsync_failed(&self.temp_path, e))?;
        let path = inner.segment_dir.join(format!("{:010}.seg", self.id));
        inner
            .storage
            .rename(&self.temp_path, &path)
            .map_err(|e| Error::io("rename", &self.temp_path, e))?;
        self.temp_path = PathBuf::new();
        inner
            .storage
            .sync_dir(&inner.segment_dir)
            .map_err(|e| inner.fsync_failed(&inner.segment_dir, e))?;
        let map = self.file.map().map_err(|e| Error::io("map", &path, e))?;
        let seg = Arc::new(Segment::new(
            self.id,
            path,
            self.file.clone(),
            map,
            file_bytes,
            true,
            false,
            inner.fsyncs.clone(),
        ));
        // Counted live before compaction can see it, so that compaction (which takes only
        // segments whose live bytes are below a share of those written) leaves it alone until
        // `publish` names its record.
        seg.note_record(seq, format::record_bytes(self.payload_bytes));
        inner.add_segment(seg.clone());
        // The reservation now belongs to the segment.
        self.reserved_bytes = 0;
        inner.publish(
            hash,
            &seg,
            Location {
                segment_id: self.id,
                offset: SEGMENT_HEADER_BYTES as u32,
            },
        );
        Ok(())
    }

    /// Removes what was written and gives back the reserved space.
    pub(crate) fn discard(&mut self, inner: &Inner) {
        if self.file_is_temp() {
            let _ = inner.storage.remove(&self.temp_path);
            self.temp_path = PathBuf::new();
        }
        if let Some((path, _)) = self.side.take() {
            let _ = inner.storage.remove(&path);
        }
        inner.release_bytes(std::mem::take(&mut self.reserved_bytes));
    }
}

/// A blob record placed in a shared segment (`Inner::place`) and written there as its bytes
/// arrive. Pieces are gathered into `CRC_CHUNK_BYTES` chunks; each full chunk is hashed,
/// checksummed and written once, in place. The commit writes the checksum table, then the
/// sequence number and commit checksum into the header (FORMAT.md, record version 2).
struct Placed {
    seg: Arc<Segment>,
    /// Where whole chunks go on their way to the file: their middle around the page cache,
    /// unless the segment takes none (`Segment::takes_direct_writes`) or the payload is too
    /// short.
    run: Option<DirectRun>,
    /// Where the record starts in the segment.
    offset: u64,
    hash: Hash,
    /// Set when the caller hashed the bytes already (`Store::put`): they are not hashed again.
    hashed: bool,
    payload_bytes: u64,
    /// The chunk being gathered.
    chunk: Vec<u8>,
    /// Payload bytes written to the segment so far (whole chunks).
    written_bytes: u64,
    table: Vec<u8>,
}

impl Placed {
    /// Done with: its segment, and the direct-write buffer handed back to the store.
    fn finish(self, inner: &Inner) -> Arc<Segment> {
        if let Some(run) = self.run {
            if run.declined() {
                inner.direct_writes_declined.fetch_add(1, Ordering::Relaxed);
            }
            inner.give_direct_buffer(run.into_buffer());
        }
        self.seg
    }

    fn payload_at(&self) -> u64 {
        self.offset + RECORD_HEADER_BYTES
    }

    /// Writes the gathered chunk in place and adds its checksum to the table.
    fn write_chunk(&mut self, hasher: &mut StreamHasher) -> Result<()> {
        if !self.hashed {
            hasher.update(&self.chunk);
        }
        let crc = crc32fast::hash(&self.chunk);
        self.table.extend_from_slice(&crc.to_le_bytes());
        let at = self.payload_at() + self.written_bytes;
        let file = &*self.seg.file;
        match &mut self.run {
            Some(run) => run.write(file, &self.chunk, at),
            None => file.write_at(&self.chunk, at),
        }
        .map_err(|e| Error::io("write record to", &self.seg.path, e))?;
        self.written_bytes += self.chunk.len() as u64;
        self.chunk.clear();
        Ok(())
    }

    fn write(&mut self, hasher: &mut StreamHasher, mut data: &[u8]) -> Result<()> {
        let taken = self.written_bytes + (self.chunk.len() + data.len()) as u64;
        if taken > self.payload_bytes {
            return Err(Error::LengthMismatch {
                announced_bytes: self.payload_bytes,
                written_bytes: taken,
            });
        }
        while !data.is_empty() {
            let take = data.len().min(CRC_CHUNK_BYTES as usize - self.chunk.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CRC_CHUNK_BYTES as usize {
                self.write_chunk(hasher)?;
            }
        }
        Ok(())
    }

    /// Writes the last chunk and the table, checks the name, then commits: the record becomes
    /// durable (as the sync mode says) and visible.
    fn commit(&mut self, inner: &Inner, hasher: &mut StreamHasher) -> Result<Hash> {
        let taken = self.written_bytes + self.chunk.len() as u64;
        if taken != self.payload_bytes {
            return Err(Error::LengthMismatch {
                announced_bytes: self.payload_bytes,
                written_bytes: taken,
            });
        }
        if !self.chunk.is_empty() {
            self.write_chunk(hasher)?;
        }
        let hash = match self.hashed {
            true => self.hash,
            false => std::mem::take(hasher).finalize(),
        };
        if hash != self.hash {
            return Err(Error::HashMismatch {
                expected: self.hash,
                actual: hash,
            });
        }
        let file = &self.seg.file;
        let path = &self.seg.path;
        file.write_at(&self.table, self.payload_at() + self.payload_bytes)
            .map_err(|e| Error::io("write record to", path, e))?;
        inner.check_writable()?;
        let seq = inner.allocate_seq()?;
        let commit = format::encode_record_commit(seq, &self.table);
        file.write_at(&commit, self.offset + format::RECORD_COMMIT_OFFSET)
            .map_err(|e| Error::io("write record to", path, e))?;
        self.seg
            .note_record(seq, format::record_bytes(self.payload_bytes));
        inner.durable_placed(&self.seg)?;
        let loc = Location {
            segment_id: self.seg.id,
            offset: u32::try_from(self.offset).expect("segments are at most 4 GiB"),
        };
        inner.publish(hash, &self.seg, loc);
        Ok(hash)
    }
}

/// Writes one blob as a stream of chunks. Up to `STREAM_BUFFER_BYTES_MAX` bytes are held in
/// memory; a longer blob spills into a dedicated segment as it arrives. Nothing is visible until
/// `commit`; dropping the writer without committing aborts it.
pub struct BlobWriter {
    store: Store,
    /// Hashes what is written: spilled pieces as they come, the in-memory buffer from
    /// `buffer_hashed_bytes` on, once `HASH_BATCH_BYTES` of it are waiting (no copy).
    hasher: StreamHasher,
    buffer: Vec<u8>,
    buffer_hashed_bytes: usize,
    spill: Option<DedicatedFile>,
    /// Set by `Store::writer_for` for a record placed in a shared segment: then neither the
    /// buffer nor a spill is used.
    placed: Option<Placed>,
    bytes_written: u64,
    failed: bool,
}

impl BlobWriter {
    pub(crate) fn new(store: Store) -> BlobWriter {
        BlobWriter {
            store,
            hasher: StreamHasher::new(),
            buffer: Vec::new(),
            buffer_hashed_bytes: 0,
            spill: None,
            placed: None,
            bytes_written: 0,
            failed: false,
        }
    }

    pub(crate) fn placed(
        store: Store,
        seg: Arc<Segment>,
        offset: u64,
        hash: Hash,
        payload_bytes: u64,
        hashed: bool,
    ) -> BlobWriter {
        let payload_at = offset + RECORD_HEADER_BYTES;
        let run = match seg.takes_direct_writes() {
            true => DirectRun::for_payload(payload_at, payload_at + payload_bytes, || {
                store.inner.take_direct_buffer()
            }),
            false => None,
        };
        let mut writer = BlobWriter::new(store);
        writer.placed = Some(Placed {
            seg,
            run,
            offset,
            hash,
            hashed,
            payload_bytes,
            chunk: Vec::with_capacity(CRC_CHUNK_BYTES as usize),
            written_bytes: 0,
            table: Vec::with_capacity(format::table_bytes(payload_bytes) as usize),
        });
        writer
    }

    /// A placed record that will not be committed: its space stays dead (compaction takes it
    /// back), and the segment may be sealed once nothing else is placed in it.
    fn abandon_placed(&mut self) {
        if let Some(placed) = self.placed.take() {
            // Nobody is left to tell of a failed seal (a failed fsync has turned the store
            // read-only; a hint file that could not be written leaves the segment unsealed, to
            // be sealed when the store next opens), as when an append's seal fails.
            let seg = placed.finish(&self.store.inner);
            let _ = self.store.inner.placed_done(&seg);
        }
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Prepares for a blob of `bytes` bytes (an announced length): the in-memory buffer is
    /// allocated once, up to the stream buffer limit, instead of growing by doubling. Only a
    /// hint; writing more or less is fine.
    pub fn reserve(&mut self, bytes: u64) {
        if self.spill.is_none() && self.placed.is_none() && !self.failed {
            let cap = bytes.min(self.store.inner.config.stream_buffer_bytes) as usize;
            if self.buffer.capacity() == 0 {
                self.buffer = self.store.inner.take_buffer(cap);
            } else {
                self.buffer.reserve(cap.saturating_sub(self.buffer.len()));
            }
        }
    }

    /// The BLAKE3 hash of the bytes written so far: lets a caller check a claimed name before
    /// deciding to commit.
    pub fn hash(&self) -> Hash {
        let mut hasher = self.hasher.clone();
        match &self.placed {
            // Its caller hashed the bytes (`Store::put`): the hasher was never fed.
            Some(placed) if placed.hashed => return placed.hash,
            Some(placed) => hasher.update(&placed.chunk),
            None => hasher.update(self.buffer_unhashed()),
        }
        hasher.finalize()
    }

    /// The tail of the in-memory buffer not hashed yet (none once spilled).
    fn buffer_unhashed(&self) -> &[u8] {
        &self.buffer[self.buffer_hashed_bytes..]
    }

    /// Hashes the rest of the in-memory buffer.
    fn hash_buffer(&mut self) {
        self.hasher.update(&self.buffer[self.buffer_hashed_bytes..]);
        self.buffer_hashed_bytes = self.buffer.len();
    }

    /// Adds the next chunk. After an error the writer holds nothing and only `abort` remains.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::WriterFailed);
        }
        let result = self.write_inner(data);
        if result.is_err() {
            self.fail();
        }
        result
    }

    fn write_inner(&mut self, data: &[u8]) -> Result<()> {
        let total = self.bytes_written + data.len() as u64;
        if total > BLOB_BYTES_MAX {
            return Err(Error::BlobTooLarge {
                bytes: total,
                max_bytes: BLOB_BYTES_MAX,
            });
        }
        if let Some(placed) = &mut self.placed {
            placed.write(&mut self.hasher, data)?;
            self.bytes_written = total;
            return Ok(());
        }
        let inner = &self.store.inner;
        if self.spill.is_none() && total > inner.config.stream_buffer_bytes {
            let mut file = DedicatedFile::create(inner)?;
            // Fields, not `hash_buffer`: `inner` borrows the store.
            self.hasher.update(&self.buffer[self.buffer_hashed_bytes..]);
            self.buffer_hashed_bytes = 0;
            let buffered = std::mem::take(&mut self.buffer);
            let appended = file.append(inner, &buffered);
            inner.give_buffer(buffered);
            self.spill = Some(file);
            appended?;
        }
        match &mut self.spill {
            Some(file) => {
                file.append(inner, data)?;
                self.hasher.update(data);
            }
            None => {
                self.buffer.extend_from_slice(data);
                if self.buffer_unhashed().len() >= HASH_BATCH_BYTES {
                    self.hash_buffer();
                }
            }
        }
        self.bytes_written = total;
        Ok(())
    }

    fn fail(&mut self) {
        self.failed = true;
        self.abandon_placed();
        self.buffer_hashed_bytes = 0;
        self.store
            .inner
            .give_buffer(std::mem::take(&mut self.buffer));
        if let Some(mut file) = self.spill.take() {
            file.discard(&self.store.inner);
        }
    }

    /// Stores the blob and returns its hash. With `expected`, a blob that hashes otherwise is
    /// not stored and the call fails with `HashMismatch`.
    pub fn commit(mut self, expected: Option<&Hash>) -> Result<Hash> {
        if self.failed {
            return Err(Error::WriterFailed);
        }
        if let Some(placed) = &mut self.placed {
            if let Some(expected) = expected
                && *expected != placed.hash
            {
                let actual = self.hash();
                self.fail();
                return Err(Error::HashMismatch {
                    expected: *expected,
                    actual,
                });
            }
            let inner = self.store.inner.clone();
            let committed = placed.commit(&inner, &mut self.hasher);
            let seg = self.placed.take().expect("placed").finish(&inner);
            let done = inner.placed_done(&seg);
            return committed.and_then(|hash| done.map(|()| hash));
        }
        self.hash_buffer();
        let hash = self.hasher.finalize();
        if let Some(expected) = expected
            && *expected != hash
        {
            self.fail();
            return Err(Error::HashMismatch {
                expected: *expected,
                actual: hash,
            });
        }
        let inner = self.store.inner.clone();
        match self.spill.take() {
            Some(file) => file.finish(&inner, hash)?,
            None => {
                let buffer = std::mem::take(&mut self.buffer);
                let stored = inner.put_hashed(hash, &buffer);
                inner.give_buffer(buffer);
                stored?;
            }
        }
        Ok(hash)
    }

    /// Drops everything written; nothing becomes visible.
    pub fn abort(mut self) {
        self.fail();
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.abandon_placed();
        if let Some(mut file) = self.spill.take() {
            file.discard(&self.store.inner);
        }
        self.store
            .inner
            .give_buffer(std::mem::take(&mut self.buffer));
    }
}

impl io::Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BlobWriter::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
