//! Writes Cairn's seed corpus into `fuzz/corpus/<target>/`: valid encodings of every format
//! structure for `decode_record`, and store images in each of `open_store`'s three input modes.
//! Run with `cargo run --example write_seeds` from `fuzz/`; the output is deterministic.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::format::{self, HintEntry, RecordKind, SegmentHeader, SegmentKind};
use cairn_engine::storage::{MemStorage, Storage};
use cairn_engine::{Config, Hash, Store, SyncMode};
use cairn_fuzz::input::pattern;
use cairn_fuzz::open_store::{ASSEMBLED, DIR, RAW, RAW_FILES, VALID};

/// Little-endian input bytes, built field by field.
#[derive(Default)]
struct Seed(Vec<u8>);

impl Seed {
    fn u8(mut self, v: u8) -> Seed {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Seed {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Seed {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Seed {
        self.0.extend_from_slice(v);
        self
    }
}

fn tombstone(hash: Hash, seq: u64, kind: RecordKind) -> [u8; 64] {
    format::encode_record_header(&format::record_header(kind, &hash, 0, seq, &[]))
}

fn decode_record_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let header = format::encode_segment_header(&SegmentHeader {
        version: format::FORMAT_VERSION,
        kind: SegmentKind::Shared,
        segment_id: 1,
        capacity_bytes: 4096,
    });
    seeds.push(("segment-header".to_owned(), header.to_vec()));

    let mut small = Vec::new();
    format::encode_blob_record(Hash::of(b"hello cairn"), 7, b"hello cairn", &mut small);
    seeds.push(("record-small".to_owned(), small.clone()));

    let big = pattern(3, 70_000);
    let mut two_chunks = Vec::new();
    format::encode_blob_record(Hash::of(&big), 9, &big, &mut two_chunks);
    seeds.push(("record-two-chunks".to_owned(), two_chunks));

    let gone = Hash::of(b"gone");
    seeds.push((
        "record-tombstone".to_owned(),
        tombstone(gone, 11, RecordKind::Tombstone).to_vec(),
    ));

    let mut segment = header.to_vec();
    let mut entries = Vec::new();
    for (i, payload) in [&b"first"[..], &pattern(4, 900), b""]
        .into_iter()
        .enumerate()
    {
        let hash = Hash::of(payload);
        let offset = segment.len() as u32;
        format::encode_blob_record(hash, i as u64 + 1, payload, &mut segment);
        entries.push(HintEntry {
            hash,
            seq: i as u64 + 1,
            payload_bytes: payload.len() as u64,
            offset,
            kind: RecordKind::Blob,
        });
    }
    entries.push(HintEntry {
        hash: gone,
        seq: 12,
        payload_bytes: 0,
        offset: segment.len() as u32,
        kind: RecordKind::Quarantine,
    });
    segment.extend_from_slice(&tombstone(gone, 12, RecordKind::Quarantine));
    seeds.push((
        "hint-file".to_owned(),
        format::encode_hint_file(1, &entries),
    ));
    segment.resize(4096, 0);
    seeds.push(("segment-with-records".to_owned(), segment));
    seeds
}

/// A real store's files, framed for `open_store`'s `RAW` mode. Files whose names `RAW_FILES`
/// cannot express are left out.
fn raw_seed(build: impl FnOnce(&Store)) -> Vec<u8> {
    let mem = MemStorage::new();
    let config = Config {
        segment_bytes: 4096,
        sync: SyncMode::Always,
        ..Config::default()
    };
    let store = Store::open_with(Arc::new(mem.clone()), Path::new(DIR), config).expect("open");
    build(&store);
    drop(store);
    let mut seed = Seed::default().u8(RAW);
    for path in mem.paths() {
        let rel = path.strip_prefix(DIR).expect("inside the store");
        let Some(which) = RAW_FILES.iter().position(|f| Path::new(f) == rel) else {
            continue;
        };
        let file = mem.open(&path).expect("open file");
        let mut bytes = vec![0u8; file.len().expect("len") as usize];
        file.read_at(&mut bytes, 0).expect("read");
        for piece in bytes.chunks(u16::MAX as usize) {
            seed = seed.u8(which as u8).u16(piece.len() as u16).bytes(piece);
        }
    }
    seed.0
}

fn open_store_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Five ~900-byte blobs fill segment 1 (sealed, with a hint) and start segment 2, where a
    // delete then lands.
    seeds.push((
        "raw-sealed-and-open-segments".to_owned(),
        raw_seed(|store| {
            let hashes: Vec<Hash> = (0..5)
                .map(|i| store.put(&pattern(i, 900)).expect("put"))
                .collect();
            store.delete(&hashes[1]).expect("delete");
        }),
    ));
    seeds.push((
        "raw-one-segment".to_owned(),
        raw_seed(|store| {
            for i in 0..3 {
                store.put(&pattern(10 + i, 100 * i as usize)).expect("put");
            }
        }),
    ));

    // Two shared segments: the first with three records and a hint whose first entry's
    // offset is moved; the second with a blob and a tombstone of the first segment's blob.
    seeds.push((
        "assembled-two-segments-with-hint".to_owned(),
        Seed::default()
            .u8(ASSEMBLED)
            .u8(0b01) // two segments, no leftover, no patches
            .u8(3 << 2) // shared, three records
            .u8(0) // blob named by its hash, small sequence number
            .u16(500)
            .u8(1)
            .u8(5)
            .u8(1) // blob
            .u16(1200)
            .u8(2)
            .u8(6)
            .u8(2) // tombstone
            .u8(7)
            .u8(1 | (1 << 1)) // a hint with one mutation:
            .u8(1) // nudge an offset
            .u8(0)
            .u8(64)
            .u8(2 << 2) // shared, two records
            .u8(0)
            .u16(300)
            .u8(3)
            .u8(8)
            .u8(2 | (2 << 2)) // tombstone of an earlier name
            .u8(0)
            .u8(9)
            .u8(0) // no hint
            .0,
    ));
    seeds.push((
        "assembled-dedicated".to_owned(),
        Seed::default()
            .u8(ASSEMBLED)
            .u8(0b10) // one segment and a leftover streaming file
            .u8(2) // dedicated
            .u8(0x80) // a blob over one checksum chunk
            .u16(100)
            .u8(4)
            .u8(1)
            .u8(0) // no hint
            .u16(16)
            .bytes(&[0xab; 16])
            .0,
    ));

    // Puts of every size, a streamed put, deletes, a compaction and a reopening; then each of
    // the four endings; the last with a few overwritten bytes.
    // `death`: none, or (power loss, change number) at which the process dies.
    let ops = |ending: u8, death: Option<(bool, u16)>, patches: &[(u8, u32, &[u8])]| {
        let mut cfg = ending << 4; // 4 KiB segments, 256-byte stream buffer
        if let Some((power_loss, _)) = death {
            cfg |= 0x80 | if power_loss { 0x40 } else { 0 };
        }
        let mut s = Seed::default().u8(VALID).u8(cfg);
        if let Some((power_loss, change)) = death {
            if power_loss {
                s = s.u64(0xdead);
            }
            s = s.u16(change - 1); // the harness counts changes from 1
        }
        let mut s = s
            .u8(12)
            .u8(0) // put, tiny
            .u8(200)
            .u8(1)
            .u8(1 << 3) // put, up to 1200 bytes
            .u16(900)
            .u8(2)
            .u8(2 << 3) // put, up to 5000 bytes: a dedicated segment
            .u16(3000)
            .u8(3)
            .u8(1 << 3)
            .u16(1000)
            .u8(4)
            .u8(4) // streamed put
            .u16(2500)
            .u8(5)
            .u8(40)
            .u8(3) // delete
            .u8(1)
            .u8(5) // compact
            .u8(1 << 3)
            .u16(700)
            .u8(6)
            .u8(6) // reopen
            .u8(7) // put again
            .u8(1)
            .u8(3)
            .u8(0)
            .u8(5)
            .u64(0x5eed);
        s = s.u8(patches.len() as u8);
        for (which, offset, bytes) in patches {
            s = s
                .u8(*which)
                .bytes(&offset.to_le_bytes())
                .u8(bytes.len() as u8 - 1)
                .bytes(bytes);
        }
        s.0
    };
    seeds.push(("valid-close".to_owned(), ops(0, None, &[])));
    seeds.push(("valid-power-loss".to_owned(), ops(1, None, &[])));
    seeds.push(("valid-power-loss-mid-stream".to_owned(), ops(2, None, &[])));
    seeds.push(("valid-close-then-power-loss".to_owned(), ops(3, None, &[])));
    seeds.push((
        "valid-close-then-damage".to_owned(),
        ops(0, None, &[(0, 100, &[0xff; 4]), (1, 2000, &[0; 8])]),
    ));
    for change in [9, 23, 47] {
        seeds.push((
            format!("valid-kill-at-change-{change}"),
            ops(0, Some((false, change)), &[]),
        ));
    }
    seeds.push((
        "valid-power-loss-at-change-30".to_owned(),
        ops(0, Some((true, 30)), &[]),
    ));
    seeds
}

fn write(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "corpus", target]
        .iter()
        .collect();
    fs::create_dir_all(&dir).expect("create corpus directory");
    for (name, bytes) in seeds {
        assert!(bytes.len() < 100 * 1024, "seed {name} is too big");
        fs::write(dir.join(name), bytes).expect("write seed");
        println!("{target}/{name}: {} bytes", bytes.len());
    }
}

fn main() {
    write("decode_record", &decode_record_seeds());
    write("open_store", &open_store_seeds());
}
