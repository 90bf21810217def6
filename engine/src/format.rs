//! The on-disk format as pure functions over byte slices: encode and decode segment headers,
//! record headers, chunk checksum tables and hint files. FORMAT.md draws the same structures.
//!
//! Nothing here touches a file, so the fuzzer can feed any bytes to every decoder. A decoder
//! never panics: bad bytes are a `FormatError`.

use crate::Hash;
use crate::limits::{
    CRC_CHUNK_BYTES, HINT_ENTRY_BYTES, HINT_HEADER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// The format version written by this build. Version log: FORMAT.md.
pub const FORMAT_VERSION: u16 = 2;

/// The first format version; its files are still read (never appended to).
pub const FORMAT_VERSION_1: u16 = 1;

/// Hint files have not changed since the first version and still say 1.
pub const HINT_FORMAT_VERSION: u16 = 1;

pub const SEGMENT_MAGIC: [u8; 8] = *b"CAIRNSEG";
pub const RECORD_MAGIC: [u8; 4] = *b"CRec";
pub const HINT_MAGIC: [u8; 8] = *b"CAIRNHNT";

/// What is wrong with some bytes that were supposed to be a format structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// All zero: the unwritten (or cleanly truncated) end of a segment.
    Zeroed,
    BadMagic,
    UnsupportedVersion {
        version: u16,
    },
    BadKind {
        kind: u8,
    },
    ReservedNotZero,
    HeaderChecksum,
    /// A length that does not fit the file or the limits.
    BadLength,
    TableChecksum,
    PayloadChecksum {
        chunk_index: u64,
    },
    EntriesChecksum,
    /// A blob record's payload does not hash to the name in its header.
    ContentHash,
    /// A version 2 record whose bytes were placed but never committed (a stream that was cut
    /// off, or one still being written): its space is dead, nothing was acknowledged.
    Uncommitted,
}

/// A segment is either shared by many small records or dedicated to one large blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Shared = 1,
    Dedicated = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version the segment was created with; records appended to it are of the same
    /// version, so a segment of an older version is never appended to.
    pub version: u16,
    pub kind: SegmentKind,
    pub segment_id: u32,
    /// Shared: the file's (preallocated) size. Dedicated: the size of the whole file.
    pub capacity_bytes: u64,
}

pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..10].copy_from_slice(&h.version.to_le_bytes());
    b[10] = h.kind as u8;
    b[12..16].copy_from_slice(&h.segment_id.to_le_bytes());
    b[16..24].copy_from_slice(&h.capacity_bytes.to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, FormatError> {
    let b = b
        .get(..SEGMENT_HEADER_BYTES as usize)
        .ok_or(FormatError::Truncated)?;
    if b.iter().all(|&x| x == 0) {
        return Err(FormatError::Zeroed);
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if le_u32(&b[60..64]) != crc32fast::hash(&b[0..60]) {
        return Err(FormatError::HeaderChecksum);
    }
    let version = le_u16(&b[8..10]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(FormatError::UnsupportedVersion { version });
    }
    let kind = match b[10] {
        1 => SegmentKind::Shared,
        2 => SegmentKind::Dedicated,
        kind => return Err(FormatError::BadKind { kind }),
    };
    if b[11] != 0 || b[24..60].iter().any(|&x| x != 0) {
        return Err(FormatError::ReservedNotZero);
    }
    Ok(SegmentHeader {
        version,
        kind,
        segment_id: le_u32(&b[12..16]),
        capacity_bytes: le_u64(&b[16..24]),
    })
}

/// What a record says about its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The blob's bytes follow.
    Blob = 1,
    /// The blob was deleted.
    Tombstone = 2,
    /// The blob was found corrupt and must not be served until a good copy is put again.
    Quarantine = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// 1 or 2 (FORMAT.md): they differ in what the header's checksums cover.
    pub version: u16,
    pub kind: RecordKind,
    pub hash: Hash,
    pub payload_bytes: u64,
    /// Store-wide sequence number; for one hash, the record with the highest wins at recovery.
    /// Version 2: 0 until the record is committed.
    pub seq: u64,
    /// Version 1: CRC32 of the chunk checksum table. Version 2: the commit checksum, CRC32 of
    /// the sequence number's 8 bytes followed by the table (`commit_crc`); 0 until committed.
    pub table_crc: u32,
}

impl RecordHeader {
    /// Whether `table` (the record's checksum table, as read) checks against the header: for a
    /// version 2 record, also that it was committed.
    pub fn table_checks(&self, table: &[u8]) -> bool {
        match self.version {
            FORMAT_VERSION_1 => crc32fast::hash(table) == self.table_crc,
            _ => self.seq != 0 && commit_crc(self.seq, table) == self.table_crc,
        }
    }

    /// Why `table_checks` failed: a version 2 record never committed, or a bad table.
    pub fn table_problem(&self) -> FormatError {
        match self.version != FORMAT_VERSION_1 && self.seq == 0 && self.table_crc == 0 {
            true => FormatError::Uncommitted,
            false => FormatError::TableChecksum,
        }
    }
}

/// A version 2 record's commit checksum: CRC32 of its sequence number (8 bytes, little-endian)
/// followed by its checksum table.
pub fn commit_crc(seq: u64, table: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(table);
    crc.finalize()
}

/// Where a version 2 record's commit (sequence number and commit checksum) sits in its header.
pub const RECORD_COMMIT_OFFSET: u64 = 52;

/// A version 2 record header as written before its payload: identity checked, not committed.
pub fn encode_record_identity(
    kind: RecordKind,
    hash: &Hash,
    payload_bytes: u64,
) -> [u8; RECORD_HEADER_BYTES as usize] {
    encode_record_header(&RecordHeader {
        version: FORMAT_VERSION,
        kind,
        hash: *hash,
        payload_bytes,
        seq: 0,
        table_crc: 0,
    })
}

/// The 12 bytes that commit a version 2 record, written at `RECORD_COMMIT_OFFSET` in its
/// header once its payload and table are in place.
pub fn encode_record_commit(seq: u64, table: &[u8]) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..8].copy_from_slice(&seq.to_le_bytes());
    b[8..12].copy_from_slice(&commit_crc(seq, table).to_le_bytes());
    b
}

pub fn encode_record_header(h: &RecordHeader) -> [u8; RECORD_HEADER_BYTES as usize] {
    let mut b = [0u8; RECORD_HEADER_BYTES as usize];
    b[0..4].copy_from_slice(&RECORD_MAGIC);
    b[4..6].copy_from_slice(&h.version.to_le_bytes());
    b[6] = h.kind as u8;
    b[8..40].copy_from_slice(h.hash.as_bytes());
    b[40..48].copy_from_slice(&h.payload_bytes.to_le_bytes());
    if h.version == FORMAT_VERSION_1 {
        b[48..56].copy_from_slice(&h.seq.to_le_bytes());
        b[56..60].copy_from_slice(&h.table_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
    } else {
        let crc = crc32fast::hash(&b[0..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b[52..60].copy_from_slice(&h.seq.to_le_bytes());
        b[60..64].copy_from_slice(&h.table_crc.to_le_bytes());
    }
    b
}

/// A whole header of the current version, for a record written in one piece: `table` is the
/// record's checksum table.
pub fn record_header(
    kind: RecordKind,
    hash: &Hash,
    payload_bytes: u64,
    seq: u64,
    table: &[u8],
) -> RecordHeader {
    RecordHeader {
        version: FORMAT_VERSION,
        kind,
        hash: *hash,
        payload_bytes,
        seq,
        table_crc: commit_crc(seq, table),
    }
}

pub fn decode_record_header(b: &[u8]) -> Result<RecordHeader, FormatError> {
    let b = b
        .get(..RECORD_HEADER_BYTES as usize)
        .ok_or(FormatError::Truncated)?;
    if b.iter().all(|&x| x == 0) {
        return Err(FormatError::Zeroed);
    }
    if b[0..4] != RECORD_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = le_u16(&b[4..6]);
    let (seq, table_crc) = match version {
        FORMAT_VERSION_1 => {
            if le_u32(&b[60..64]) != crc32fast::hash(&b[0..60]) {
                return Err(FormatError::HeaderChecksum);
            }
            (le_u64(&b[48..56]), le_u32(&b[56..60]))
        }
        FORMAT_VERSION => {
            if le_u32(&b[48..52]) != crc32fast::hash(&b[0..48]) {
                return Err(FormatError::HeaderChecksum);
            }
            (le_u64(&b[52..60]), le_u32(&b[60..64]))
        }
        version => return Err(FormatError::UnsupportedVersion { version }),
    };
    let kind = match b[6] {
        1 => RecordKind::Blob,
        2 => RecordKind::Tombstone,
        3 => RecordKind::Quarantine,
        kind => return Err(FormatError::BadKind { kind }),
    };
    if b[7] != 0 {
        return Err(FormatError::ReservedNotZero);
    }
    let payload_bytes = le_u64(&b[40..48]);
    if kind != RecordKind::Blob && payload_bytes != 0 {
        return Err(FormatError::BadLength);
    }
    if payload_bytes > crate::limits::BLOB_BYTES_MAX {
        return Err(FormatError::BadLength);
    }
    Ok(RecordHeader {
        version,
        kind,
        hash: Hash::from_bytes(b[8..40].try_into().expect("32 bytes")),
        payload_bytes,
        seq,
        table_crc,
    })
}

/// Number of chunks (and table entries) for a payload.
pub fn chunk_count(payload_bytes: u64) -> u64 {
    payload_bytes.div_ceil(CRC_CHUNK_BYTES)
}

/// Bytes of the chunk checksum table that follows a payload.
pub fn table_bytes(payload_bytes: u64) -> u64 {
    chunk_count(payload_bytes) * 4
}

/// Total bytes a record takes on disk: header, payload and checksum table.
pub fn record_bytes(payload_bytes: u64) -> u64 {
    RECORD_HEADER_BYTES + payload_bytes + table_bytes(payload_bytes)
}

/// The chunk checksum table of a payload held in memory.
pub fn chunk_table(payload: &[u8]) -> Vec<u8> {
    let mut table = Vec::with_capacity(table_bytes(payload.len() as u64) as usize);
    for chunk in payload.chunks(CRC_CHUNK_BYTES as usize) {
        table.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
    }
    table
}

/// Encodes a whole blob record (header, payload, table) into `out`.
pub fn encode_blob_record(hash: Hash, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let table = chunk_table(payload);
    let header = record_header(RecordKind::Blob, &hash, payload.len() as u64, seq, &table);
    out.reserve(record_bytes(payload.len() as u64) as usize);
    out.extend_from_slice(&encode_record_header(&header));
    out.extend_from_slice(payload);
    out.extend_from_slice(&table);
}

/// Checks the chunks of `payload` that overlap `[start, end)` against `table`, after checking
/// the table itself against `header`. `payload` and `table` are the record's whole payload
/// and table.
pub fn verify_payload_range(
    payload: &[u8],
    table: &[u8],
    header: &RecordHeader,
    start: u64,
    end: u64,
) -> Result<(), FormatError> {
    if table.len() as u64 != table_bytes(payload.len() as u64) || start > end {
        return Err(FormatError::BadLength);
    }
    if end > payload.len() as u64 {
        return Err(FormatError::BadLength);
    }
    if !header.table_checks(table) {
        return Err(header.table_problem());
    }
    if start == end {
        return Ok(());
    }
    let first = start / CRC_CHUNK_BYTES;
    let last = (end - 1) / CRC_CHUNK_BYTES;
    for chunk_index in first..=last {
        let chunk_start = (chunk_index * CRC_CHUNK_BYTES) as usize;
        let chunk_end = payload.len().min(chunk_start + CRC_CHUNK_BYTES as usize);
        let expected = le_u32(&table[chunk_index as usize * 4..chunk_index as usize * 4 + 4]);
        if crc32fast::hash(&payload[chunk_start..chunk_end]) != expected {
            return Err(FormatError::PayloadChecksum { chunk_index });
        }
    }
    Ok(())
}

/// A record found by scanning a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: u64,
    pub header: RecordHeader,
}

/// The outcome of scanning the records of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<ScannedRecord>,
    /// End of the last valid record: where the next record goes.
    pub valid_end: u64,
    /// Why the scan stopped before the end of the bytes, if it did. `Zeroed` is the clean end
    /// of a preallocated segment; anything else is a torn or corrupt tail.
    pub stopped_by: Option<FormatError>,
    /// Version 2 records passed over: their header's identity checks out, so their length is
    /// known, but they were never committed (`Uncommitted`, or a commit torn by a crash) or
    /// their bytes do not check. (offset, problem)
    pub skipped: Vec<(u64, FormatError)>,
}

/// How much of each record `scan_records` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScanCheck {
    /// Header CRC and checksum-table CRC: enough for records this process wrote and synced.
    Headers,
    /// Also every payload chunk's CRC: a torn write can leave a good header in front of a
    /// payload that never reached the disk.
    Payload,
    /// Also that each blob's payload hashes to the name in its header, so that no record is
    /// accepted whose bytes are not what it claims, whatever bytes the tail holds.
    Content,
}

/// Scans records from `start` until the bytes end or stop making sense. A version 1 record
/// that fails a check ends the scan; a version 2 one is passed over (its length is known from
/// its checked identity) and listed in `skipped`.
pub fn scan_records(bytes: &[u8], start: u64, check: ScanCheck) -> Scan {
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    let mut offset = start;
    let len = bytes.len() as u64;
    let stopped_by = loop {
        if offset >= len {
            break None;
        }
        let header = match decode_record_header(&bytes[offset as usize..]) {
            Ok(h) => h,
            Err(e) => break Some(e),
        };
        let total = record_bytes(header.payload_bytes);
        let Some(end) = offset.checked_add(total).filter(|&end| end <= len) else {
            break Some(FormatError::BadLength);
        };
        let payload_start = offset + RECORD_HEADER_BYTES;
        let payload_end = payload_start + header.payload_bytes;
        let payload = &bytes[payload_start as usize..payload_end as usize];
        let table = &bytes[payload_end as usize..end as usize];
        let problem = if !header.table_checks(table) {
            Some(header.table_problem())
        } else if check >= ScanCheck::Payload
            && let Err(e) = verify_payload_range(payload, table, &header, 0, header.payload_bytes)
        {
            Some(e)
        } else if check >= ScanCheck::Content
            && header.kind == RecordKind::Blob
            && Hash::of(payload) != header.hash
        {
            Some(FormatError::ContentHash)
        } else {
            None
        };
        if let Some(problem) = problem {
            if header.version == FORMAT_VERSION_1 {
                break Some(problem);
            }
            skipped.push((offset, problem));
            offset = end;
            continue;
        }
        records.push(ScannedRecord { offset, header });
        offset = end;
    };
    Scan {
        records,
        valid_end: offset,
        stopped_by,
        skipped,
    }
}

/// One entry of a hint file: where a record of a sealed segment is, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry {
    pub hash: Hash,
    pub seq: u64,
    pub payload_bytes: u64,
    pub offset: u32,
    pub kind: RecordKind,
}

impl HintEntry {
    pub fn from_scanned(r: &ScannedRecord) -> HintEntry {
        HintEntry {
            hash: r.header.hash,
            seq: r.header.seq,
            payload_bytes: r.header.payload_bytes,
            offset: u32::try_from(r.offset).expect("shared segments are at most 4 GiB"),
            kind: r.header.kind,
        }
    }
}

pub fn encode_hint_file(segment_id: u32, entries: &[HintEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * HINT_ENTRY_BYTES as usize);
    for e in entries {
        body.extend_from_slice(e.hash.as_bytes());
        body.extend_from_slice(&e.seq.to_le_bytes());
        body.extend_from_slice(&e.payload_bytes.to_le_bytes());
        body.extend_from_slice(&e.offset.to_le_bytes());
        body.push(e.kind as u8);
        body.extend_from_slice(&[0, 0, 0]);
    }
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES as usize + body.len());
    out.extend_from_slice(&HINT_MAGIC);
    out.extend_from_slice(&HINT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a hint file for `segment_id`. Every entry's offset is checked against
/// `segment_bytes` so that a bad hint can never point a read outside its segment.
pub fn decode_hint_file(
    b: &[u8],
    segment_id: u32,
    segment_bytes: u64,
) -> Result<Vec<HintEntry>, FormatError> {
    let header = b
        .get(..HINT_HEADER_BYTES as usize)
        .ok_or(FormatError::Truncated)?;
    if header[0..8] != HINT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if le_u32(&header[28..32]) != crc32fast::hash(&header[0..28]) {
        return Err(FormatError::HeaderChecksum);
    }
    let version = le_u16(&header[8..10]);
    if version != HINT_FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { version });
    }
    if header[10..12] != [0, 0] {
        return Err(FormatError::ReservedNotZero);
    }
    if le_u32(&header[12..16]) != segment_id {
        return Err(FormatError::BadLength);
    }
    let count = le_u64(&header[16..24]);
    let body = &b[HINT_HEADER_BYTES as usize..];
    if count.checked_mul(HINT_ENTRY_BYTES) != Some(body.len() as u64) {
        return Err(FormatError::BadLength);
    }
    if crc32fast::hash(body) != le_u32(&header[24..28]) {
        return Err(FormatError::EntriesChecksum);
    }
    let mut entries = Vec::with_capacity(count as usize);
    for e in body.chunks_exact(HINT_ENTRY_BYTES as usize) {
        let kind = match e[52] {
            1 => RecordKind::Blob,
            2 => RecordKind::Tombstone,
            3 => RecordKind::Quarantine,
            kind => return Err(FormatError::BadKind { kind }),
        };
        if e[53..56] != [0, 0, 0] {
            return Err(FormatError::ReservedNotZero);
        }
        let entry = HintEntry {
            hash: Hash::from_bytes(e[0..32].try_into().expect("32 bytes")),
            seq: le_u64(&e[32..40]),
            payload_bytes: le_u64(&e[40..48]),
            offset: le_u32(&e[48..52]),
            kind,
        };
        let fits = entry.payload_bytes <= crate::limits::BLOB_BYTES_MAX
            && u64::from(entry.offset) >= SEGMENT_HEADER_BYTES
            && u64::from(entry.offset) + record_bytes(entry.payload_bytes) <= segment_bytes;
        if !fits || (kind != RecordKind::Blob && entry.payload_bytes != 0) {
            return Err(FormatError::BadLength);
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().expect("2 bytes"))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            kind: SegmentKind::Dedicated,
            segment_id: 7,
            capacity_bytes: 1 << 33,
        };
        let mut b = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&b), Ok(h));
        assert_eq!(decode_segment_header(&b[..63]), Err(FormatError::Truncated));
        b[20] ^= 1;
        assert_eq!(decode_segment_header(&b), Err(FormatError::HeaderChecksum));
        assert_eq!(decode_segment_header(&[0; 64]), Err(FormatError::Zeroed));
    }

    #[test]
    fn record_round_trip_and_every_bit_flip_is_caught() {
        let payload: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let hash = Hash::of(&payload);
        let mut rec = Vec::new();
        encode_blob_record(hash, 42, &payload, &mut rec);
        assert_eq!(rec.len() as u64, record_bytes(payload.len() as u64));
        let scan = scan_records(&rec, 0, ScanCheck::Content);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.valid_end, rec.len() as u64);
        assert_eq!(scan.records[0].header.hash, hash);
        assert_eq!(scan.records[0].header.seq, 42);
        // Flip one bit in the header, the payload and the table: each must be detected. A flip
        // in the identity (bytes 0..52) ends the scan; anywhere else the record is passed over.
        for pos in [0usize, 9, 45, 50, 55, 63, 64, 70_000, rec.len() - 1] {
            let mut bad = rec.clone();
            bad[pos] ^= 0x10;
            let scan = scan_records(&bad, 0, ScanCheck::Content);
            assert!(scan.records.is_empty(), "flip at {pos} not caught");
            match pos < 52 {
                true => assert!(scan.stopped_by.is_some(), "flip at {pos}"),
                false => {
                    assert_eq!(scan.stopped_by, None, "flip at {pos}");
                    assert_eq!(scan.skipped.len(), 1, "flip at {pos}");
                    assert_eq!(scan.valid_end, rec.len() as u64);
                }
            }
        }
    }

    /// A version 1 record, as the first format wrote it.
    fn version_1_record(hash: Hash, seq: u64, payload: &[u8]) -> Vec<u8> {
        let table = chunk_table(payload);
        let header = RecordHeader {
            version: FORMAT_VERSION_1,
            kind: RecordKind::Blob,
            hash,
            payload_bytes: payload.len() as u64,
            seq,
            table_crc: crc32fast::hash(&table),
        };
        let mut rec = encode_record_header(&header).to_vec();
        rec.extend_from_slice(payload);
        rec.extend_from_slice(&table);
        rec
    }

    #[test]
    fn version_1_records_still_read_and_a_bad_one_still_ends_the_scan() {
        let payload = vec![3u8; 100_000];
        let hash = Hash::of(&payload);
        let rec = version_1_record(hash, 9, &payload);
        // The header CRC of version 1 covers bytes 0..60: the same bytes read as version 2
        // would not check.
        assert_eq!(le_u32(&rec[60..64]), crc32fast::hash(&rec[0..60]));
        let scan = scan_records(&rec, 0, ScanCheck::Content);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.records[0].header.version, FORMAT_VERSION_1);
        assert_eq!(scan.records[0].header.seq, 9);
        let mut two = rec.clone();
        two.extend_from_slice(&rec);
        two[64 + 5] ^= 1;
        let scan = scan_records(&two, 0, ScanCheck::Content);
        assert!(scan.records.is_empty());
        assert_eq!(scan.valid_end, 0);
        assert_eq!(
            scan.stopped_by,
            Some(FormatError::PayloadChecksum { chunk_index: 0 })
        );
    }

    #[test]
    fn a_placed_record_is_passed_over_until_its_commit_is_written() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let hash = Hash::of(&payload);
        let table = chunk_table(&payload);
        let mut placed =
            encode_record_identity(RecordKind::Blob, &hash, payload.len() as u64).to_vec();
        placed.extend_from_slice(&payload);
        placed.extend_from_slice(&table);
        let mut after = Vec::new();
        encode_blob_record(Hash::of(b"next"), 8, b"next", &mut after);
        let mut bytes = placed.clone();
        bytes.extend_from_slice(&after);
        let scan = scan_records(&bytes, 0, ScanCheck::Content);
        assert_eq!(scan.skipped, vec![(0, FormatError::Uncommitted)]);
        assert_eq!(scan.records.len(), 1, "the record after it is still found");
        assert_eq!(scan.records[0].offset, placed.len() as u64);
        assert_eq!(scan.valid_end, bytes.len() as u64);
        // Commit it: the same bytes now hold two records.
        let at = RECORD_COMMIT_OFFSET as usize;
        bytes[at..at + 12].copy_from_slice(&encode_record_commit(7, &table));
        let scan = scan_records(&bytes, 0, ScanCheck::Content);
        assert!(scan.skipped.is_empty());
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.records[0].header.seq, 7);
        // A commit torn half-way does not check.
        bytes[at + 6..at + 12].fill(0);
        let scan = scan_records(&bytes, 0, ScanCheck::Headers);
        assert_eq!(scan.skipped, vec![(0, FormatError::TableChecksum)]);
    }

    #[test]
    fn range_verification_checks_only_touched_chunks() {
        let payload = vec![5u8; 3 * CRC_CHUNK_BYTES as usize];
        let table = chunk_table(&payload);
        let len = payload.len() as u64;
        let crc = &record_header(RecordKind::Blob, &Hash::of(&payload), len, 1, &table);
        let mut bad = payload.clone();
        bad[2 * CRC_CHUNK_BYTES as usize + 1] ^= 1;
        let chunk = CRC_CHUNK_BYTES;
        assert_eq!(
            verify_payload_range(&bad, &table, crc, 0, 2 * chunk),
            Ok(())
        );
        assert_eq!(
            verify_payload_range(&bad, &table, crc, chunk, 2 * chunk + 2),
            Err(FormatError::PayloadChecksum { chunk_index: 2 })
        );
        assert_eq!(
            verify_payload_range(&payload, &table, crc, 0, 3 * chunk + 1),
            Err(FormatError::BadLength)
        );
    }

    #[test]
    fn empty_blob_record() {
        let mut rec = Vec::new();
        encode_blob_record(Hash::of(b""), 1, b"", &mut rec);
        assert_eq!(rec.len() as u64, RECORD_HEADER_BYTES);
        let scan = scan_records(&rec, 0, ScanCheck::Content);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.records[0].header.payload_bytes, 0);
    }

    #[test]
    fn hint_round_trip_and_bounds() {
        let entries = vec![
            HintEntry {
                hash: Hash::of(b"a"),
                seq: 3,
                payload_bytes: 10,
                offset: 64,
                kind: RecordKind::Blob,
            },
            HintEntry {
                hash: Hash::of(b"b"),
                seq: 4,
                payload_bytes: 0,
                offset: 200,
                kind: RecordKind::Tombstone,
            },
        ];
        let b = encode_hint_file(9, &entries);
        assert_eq!(decode_hint_file(&b, 9, 4096), Ok(entries));
        assert_eq!(decode_hint_file(&b, 8, 4096), Err(FormatError::BadLength));
        assert_eq!(decode_hint_file(&b, 9, 100), Err(FormatError::BadLength));
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert_eq!(
            decode_hint_file(&bad, 9, 4096),
            Err(FormatError::EntriesChecksum)
        );
    }
}
