//! The `decode_record` fuzz target: feeds arbitrary bytes to every decoder of
//! `cairn_engine::format` and checks the properties that must hold whatever the bytes are.
//!
//! - No decoder panics.
//! - Whatever decodes re-encodes to exactly the bytes it came from (record header, segment
//!   header, hint file).
//! - A hint file's entries all lie inside the segment size they were checked against.
//! - `scan_records` returns records that lie inside the input, each of which decodes on its
//!   own, contiguous but for the version 2 records it passed over (whose identity decodes), and
//!   stops exactly where it says it stopped; checking more (payload CRCs, then content hashes)
//!   only ever drops records from a scan.
//! - A record encoded from the input scans back whole, a flipped payload byte is caught by
//!   exactly the chunk that holds it, and a misnamed record is caught by the content check.

use cairn_engine::Hash;
use cairn_engine::format::{
    self, FormatError, RecordKind, ScanCheck, decode_hint_file, decode_record_header,
    decode_segment_header, encode_hint_file, encode_record_header, encode_segment_header,
    scan_records, verify_payload_range,
};
use cairn_engine::limits::{
    BLOB_BYTES_MAX, CRC_CHUNK_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

use crate::input::Input;

/// Most start offsets tried per input, beyond the fixed ones.
const SCAN_STARTS_MAX: usize = 16;

/// Runs every decoder on `data`.
pub fn run(data: &[u8]) {
    headers(data);
    hint_file(data);
    scans(data);
    payload_ranges(data);
    encoded_record(data);
}

fn headers(data: &[u8]) {
    if let Ok(h) = decode_record_header(data) {
        assert_eq!(&encode_record_header(&h)[..], &data[..64], "{h:?}");
        assert!(h.payload_bytes <= BLOB_BYTES_MAX);
        assert!(h.kind == RecordKind::Blob || h.payload_bytes == 0);
    }
    if let Ok(h) = decode_segment_header(data) {
        assert_eq!(&encode_segment_header(&h)[..], &data[..64], "{h:?}");
    }
}

fn hint_file(data: &[u8]) {
    let le_u32 = |at: usize| {
        data.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let tail = data.len().saturating_sub(8);
    let tail_u64 = data
        .get(tail..)
        .filter(|b| b.len() == 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // The id the header names (else every decode fails on the id), and sizes from tiny to huge.
    let named_id = le_u32(12);
    let cases = [
        (named_id, tail_u64),
        (named_id, u64::MAX),
        (named_id, data.len() as u64),
        (named_id, 4096),
        (tail_u64 as u32, tail_u64 >> 32),
    ];
    for (id, segment_bytes) in cases {
        let Ok(entries) = decode_hint_file(data, id, segment_bytes) else {
            continue;
        };
        assert_eq!(encode_hint_file(id, &entries), data, "hint re-encodes");
        for e in &entries {
            assert!(e.payload_bytes <= BLOB_BYTES_MAX);
            assert!(u64::from(e.offset) >= SEGMENT_HEADER_BYTES);
            assert!(
                u64::from(e.offset) + format::record_bytes(e.payload_bytes) <= segment_bytes,
                "hint entry {e:?} outside a segment of {segment_bytes} bytes"
            );
            assert!(e.kind == RecordKind::Blob || e.payload_bytes == 0);
        }
    }
}

fn scans(data: &[u8]) {
    let len = data.len() as u64;
    let mut starts = vec![0, SEGMENT_HEADER_BYTES, len, len + 1, u64::MAX];
    starts.extend(
        data.get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
    );
    // Wherever a record magic appears, so that records at odd offsets get scanned too.
    starts.extend(
        data.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == format::RECORD_MAGIC)
            .map(|(i, _)| i as u64)
            .take(SCAN_STARTS_MAX),
    );
    for start in starts {
        let headers = check_scan(data, start, ScanCheck::Headers);
        let payload = check_scan(data, start, ScanCheck::Payload);
        let content = check_scan(data, start, ScanCheck::Content);
        for (looser, stricter) in [(&headers, &payload), (&payload, &content)] {
            assert!(
                stricter.iter().all(|o| looser.contains(o)),
                "a stricter check may only drop records"
            );
        }
    }
}

/// Checks a record a scan passed over at `at`, where the previous one ended (`expected`):
/// its identity decodes, it is of version 2, and it lies inside the input. Returns its end.
fn passed_over(data: &[u8], at: u64, expected: u64) -> u64 {
    assert_eq!(at, expected, "a skipped record follows the one before");
    let header = decode_record_header(&data[at as usize..]).expect("a skipped record decodes");
    assert_eq!(
        header.version,
        format::FORMAT_VERSION,
        "only version 2 is skipped"
    );
    let end = at + format::record_bytes(header.payload_bytes);
    assert!(
        end <= data.len() as u64,
        "a skipped record ends inside the input"
    );
    end
}

/// Scans from `start` and checks the result; returns the records' offsets.
fn check_scan(data: &[u8], start: u64, check: ScanCheck) -> Vec<u64> {
    let len = data.len() as u64;
    let scan = scan_records(data, start, check);
    let mut expected = start;
    let mut skipped = scan.skipped.iter().peekable();
    for r in &scan.records {
        while let Some(&&(at, _)) = skipped.peek().filter(|s| s.0 < r.offset) {
            expected = passed_over(data, at, expected);
            skipped.next();
        }
        assert_eq!(r.offset, expected, "records are contiguous");
        let end = r.offset + format::record_bytes(r.header.payload_bytes);
        assert!(end <= len, "record {r:?} ends past the input ({len} bytes)");
        let at = r.offset as usize;
        assert_eq!(decode_record_header(&data[at..]), Ok(r.header));
        let payload_end = at + (RECORD_HEADER_BYTES + r.header.payload_bytes) as usize;
        let payload = &data[at + RECORD_HEADER_BYTES as usize..payload_end];
        let table = &data[payload_end..end as usize];
        let full = verify_payload_range(payload, table, &r.header, 0, payload.len() as u64);
        if check >= ScanCheck::Payload {
            assert_eq!(full, Ok(()), "a verified scan returned a bad payload");
        } else {
            assert!(
                !matches!(
                    full,
                    Err(FormatError::TableChecksum | FormatError::BadLength)
                ),
                "a scan returned a record whose table is bad: {full:?}"
            );
        }
        if check >= ScanCheck::Content && r.header.kind == RecordKind::Blob {
            assert_eq!(
                Hash::of(payload),
                r.header.hash,
                "a content-checked scan misnamed"
            );
        }
        expected = end;
    }
    for &(at, _) in skipped {
        expected = passed_over(data, at, expected);
    }
    assert_eq!(scan.valid_end, expected);
    match scan.stopped_by {
        None => assert!(expected >= len, "stopped early without a reason"),
        Some(_) => assert!(expected < len, "a reason to stop at the end of the bytes"),
    }
    scan.records.iter().map(|r| r.offset).collect()
}

/// `verify_payload_range` on slices of the input chosen by the input.
fn payload_ranges(data: &[u8]) {
    let mut inp = Input::new(data);
    let len = data.len();
    let mut cut = [inp.u16(), inp.u16()].map(|c| usize::from(c) % (len + 1));
    cut.sort_unstable();
    let [a, b] = cut;
    let header = format::RecordHeader {
        version: 1 + u16::from(inp.u8() & 1),
        kind: RecordKind::Blob,
        hash: Hash::of(b""),
        payload_bytes: a as u64,
        seq: inp.u64(),
        table_crc: inp.u32(),
    };
    let start = u64::from(inp.u32());
    let end = u64::from(inp.u32());
    let (payload, table) = (&data[..a], &data[a..b]);
    let _ = verify_payload_range(payload, table, &header, start, end);
    let _ = verify_payload_range(payload, table, &header, start.min(end), start.max(end));
    let _ = verify_payload_range(payload, table, &header, 0, u64::MAX);
}

/// Encodes a record from the input, then checks that it scans back and that damage is caught.
fn encoded_record(data: &[u8]) {
    let mut inp = Input::new(data);
    let seq = inp.u64().max(1); // 0 is a version 2 record not yet committed
    let flip_at = usize::from(inp.u16()) | (usize::from(inp.u8()) << 16);
    let range = (u64::from(inp.u32()), u64::from(inp.u32()));
    let payload = data;
    let hash = Hash::of(payload);
    let mut rec = Vec::new();
    format::encode_blob_record(hash, seq, payload, &mut rec);
    let payload_bytes = payload.len() as u64;
    assert_eq!(rec.len() as u64, format::record_bytes(payload_bytes));

    let scan = scan_records(&rec, 0, ScanCheck::Content);
    assert_eq!(scan.records.len(), 1);
    assert_eq!(scan.valid_end, rec.len() as u64);
    assert_eq!(scan.stopped_by, None);
    let header = scan.records[0].header;
    assert_eq!(header.kind, RecordKind::Blob);
    assert_eq!(header.hash, hash);
    assert_eq!(header.seq, seq);
    assert_eq!(header.payload_bytes, payload_bytes);

    let h = RECORD_HEADER_BYTES as usize;
    let table = &rec[h + payload.len()..];
    let (start, end) = {
        let (x, y) = (range.0 % (payload_bytes + 1), range.1 % (payload_bytes + 1));
        (x.min(y), x.max(y))
    };
    assert_eq!(
        verify_payload_range(payload, table, &header, start, end),
        Ok(())
    );

    if payload.is_empty() {
        return;
    }
    let flip_at = flip_at % payload.len();
    let mut bad = rec.clone();
    bad[h + flip_at] ^= 0x5a;
    let bad_payload = &bad[h..h + payload.len()];
    let chunk = flip_at as u64 / CRC_CHUNK_BYTES;
    let touched =
        start < end && start / CRC_CHUNK_BYTES <= chunk && chunk <= (end - 1) / CRC_CHUNK_BYTES;
    let got = verify_payload_range(bad_payload, table, &header, start, end);
    if touched {
        assert_eq!(
            got,
            Err(FormatError::PayloadChecksum { chunk_index: chunk })
        );
    } else {
        assert_eq!(got, Ok(()), "untouched chunks are not checked");
    }
    assert!(scan_records(&bad, 0, ScanCheck::Payload).records.is_empty());
    assert_eq!(scan_records(&bad, 0, ScanCheck::Headers).records.len(), 1);
    // A record misnamed with valid checksums passes every check but the content hash.
    let mut misnamed = Vec::new();
    let other = Hash::of(&rec);
    format::encode_blob_record(other, seq, payload, &mut misnamed);
    assert_eq!(
        scan_records(&misnamed, 0, ScanCheck::Payload).records.len(),
        1
    );
    let scan = scan_records(&misnamed, 0, ScanCheck::Content);
    assert!(scan.records.is_empty());
    assert_eq!(scan.skipped, vec![(0, FormatError::ContentHash)]);
}
