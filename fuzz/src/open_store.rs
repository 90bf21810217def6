//! The `open_store` fuzz target: builds a store directory on `MemStorage` from the input, opens
//! it, and uses it. Opening may fail; nothing may panic, and nothing corrupt may ever be served.
//!
//! The first input byte picks how the directory is built:
//!
//! - `RAW` (0 mod 3): the files are input bytes verbatim. The rest of the input is frames of
//!   `[file: u8][length: u16 LE][bytes]`; `file % 5` names one of `RAW_FILES`, and frames for
//!   the same file append to it.
//! - `ASSEMBLED` (1 mod 3): the input describes one or two segments record by record (kind,
//!   name, payload, sequence number) and their hint files entry by entry; the harness encodes
//!   them with correct checksums, so that recovery gets past the checksums and meets the
//!   structures themselves (hints pointing anywhere, duplicate names, odd sequence numbers).
//!   A few raw byte patches follow.
//! - `VALID` (2 mod 3): a real store is built with puts, deletes, streaming writes, compaction
//!   (some placed in their segment before their bytes arrive) and reopenings chosen by the
//!   input. The process may be killed, or the power lost, at an
//!   input-chosen change to the file system (`KillSwitch`), in the middle of any of these;
//!   otherwise the store is closed, or loses power (`MemStorage::crash`), at the end. Then
//!   bytes of its files may be overwritten at input-chosen offsets. Without overwrites, every
//!   acknowledged put must come back intact and every acknowledged delete must stay deleted.
//!   Layout: `[config][power-loss seed: u64, if config & 0x40][dying change: u16, if config &
//!   0x80][operation count][operations][end-of-run crash seed: u64][patch count][patches]`.
//!
//! Then, in every mode: open; `get` everything listed (bytes that do not hash to their name are
//! allowed only if the files really hold a record with valid checksums that says so: the fuzzer
//! forged it, and only `scrub` is meant to catch that); `scrub`, after which everything served
//! must hash to its name; put two blobs (one small, one streamed into a dedicated segment) and
//! read them back; reopen, and find every blob that was good still there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::format::{self, HintEntry, RecordKind, SegmentHeader, SegmentKind};
use cairn_engine::limits::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use cairn_engine::storage::{MemStorage, Storage};
use cairn_engine::{Config, Error, Hash, Store, SyncMode};

use crate::input::{Input, pattern};
use crate::kill::{Death, KillSwitch};

/// Where the store lives on the in-memory file system.
pub const DIR: &str = "/cairn";

/// First input byte, mod 3.
pub const RAW: u8 = 0;
pub const ASSEMBLED: u8 = 1;
pub const VALID: u8 = 2;

/// The files a `RAW` frame can write, relative to `DIR`.
pub const RAW_FILES: [&str; 5] = [
    "segments/0000000001.seg",
    "segments/0000000002.seg",
    "segments/0000000001.hint",
    "segments/0000000002.hint",
    "tmp/0000000003.seg",
];

/// Segment sizes a `VALID` store can be configured with.
pub const VALID_SEGMENT_BYTES: [u64; 4] = [4096, 8192, 16384, 65536];

/// A `VALID` build dies (if the input asks) at one of its first this many file system changes.
pub const KILL_AFTER_CHANGES_MAX: u16 = 400;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    match inp.u8() % 3 {
        RAW => {
            let mem = raw_image(&mut inp);
            exercise(&mem, &default_config(), None);
        }
        ASSEMBLED => {
            let mem = assembled_image(&mut inp);
            exercise(&mem, &default_config(), None);
        }
        _ => {
            let (mem, config, model) = valid_image(&mut inp);
            exercise(&mem, &config, model.as_ref());
        }
    }
}

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn default_config() -> Config {
    Config {
        segment_bytes: 4096,
        stream_buffer_bytes: 1024,
        sync: SyncMode::Always,
        ..Config::default()
    }
}

/// A store directory holding exactly `files` (paths relative to `DIR`).
fn image(files: &[(String, Vec<u8>)]) -> MemStorage {
    let mem = MemStorage::new();
    for sub in ["segments", "tmp"] {
        mem.create_dir_all(&dir().join(sub)).expect("mkdir");
    }
    for (name, bytes) in files {
        let path = dir().join(name);
        let file = mem.create(&path).expect("create");
        file.write_at(bytes, 0).expect("write");
        file.sync_data().expect("sync");
    }
    mem.sync_dir(&dir().join("segments")).expect("sync dir");
    mem.sync_dir(&dir().join("tmp")).expect("sync dir");
    mem
}

fn raw_image(inp: &mut Input<'_>) -> MemStorage {
    let mut files: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    while !inp.is_empty() {
        let which = usize::from(inp.u8()) % RAW_FILES.len();
        let len = usize::from(inp.u16());
        files
            .entry(which)
            .or_default()
            .extend_from_slice(inp.bytes(len));
    }
    let files: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(which, bytes)| (RAW_FILES[which].to_owned(), bytes))
        .collect();
    image(&files)
}

fn segment_name(id: u32) -> String {
    format!("segments/{id:010}.seg")
}

fn hint_name(id: u32) -> String {
    format!("segments/{id:010}.hint")
}

/// Overwrites bytes of input-chosen files at input-chosen offsets; returns how many landed.
fn patch(mem: &MemStorage, inp: &mut Input<'_>, count: u8) -> usize {
    let mut landed = 0;
    for _ in 0..count {
        let paths = mem.paths();
        let which = usize::from(inp.u8());
        let offset = u64::from(inp.u32());
        let len = usize::from(inp.u8() % 16) + 1;
        let bytes = inp.bytes(len).to_vec();
        if paths.is_empty() || bytes.is_empty() {
            continue;
        }
        let path = &paths[which % paths.len()];
        let Ok(size) = mem.open(path).and_then(|f| f.len()) else {
            continue;
        };
        if size < bytes.len() as u64 {
            continue;
        }
        let offset = offset % (size - bytes.len() as u64 + 1);
        if mem.corrupt(path, offset, &bytes).is_ok() {
            landed += 1;
        }
    }
    landed
}

/// Segments and hints encoded by the harness from an input description.
fn assembled_image(inp: &mut Input<'_>) -> MemStorage {
    let flags = inp.u8();
    let segment_count = 1 + u32::from(flags & 1);
    let mut names: Vec<Hash> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for id in 1..=segment_count {
        let seg_flags = inp.u8();
        let dedicated = seg_flags & 3 == 2;
        let record_count = if dedicated { 1 } else { (seg_flags >> 2) % 8 };
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let mut entries = Vec::new();
        for _ in 0..record_count {
            let r = inp.u8();
            let kind = match (r & 3, dedicated) {
                (_, true) | (0 | 1, false) => RecordKind::Blob,
                (2, false) => RecordKind::Tombstone,
                _ => RecordKind::Quarantine,
            };
            let payload = if kind == RecordKind::Blob {
                let len = if r & 0x80 != 0 {
                    65_536 + usize::from(inp.u16() % 2048)
                } else {
                    usize::from(inp.u16() % 3000)
                };
                pattern(u64::from(inp.u8()), len)
            } else {
                Vec::new()
            };
            let hash = match (r >> 2) & 3 {
                2 if !names.is_empty() => names[usize::from(inp.u8()) % names.len()],
                3 => Hash::from_bytes(inp.bytes32()),
                _ => Hash::of(&payload),
            };
            let seq = if r & 0x40 != 0 {
                inp.u64()
            } else {
                u64::from(inp.u8())
            };
            let offset = bytes.len() as u32;
            if kind == RecordKind::Blob {
                format::encode_blob_record(hash, seq, &payload, &mut bytes);
            } else {
                let header = format::record_header(kind, &hash, 0, seq, &[]);
                bytes.extend_from_slice(&format::encode_record_header(&header));
            }
            entries.push(HintEntry {
                hash,
                seq,
                payload_bytes: payload.len() as u64,
                offset,
                kind,
            });
            names.push(hash);
        }
        let file_bytes = if dedicated {
            bytes.len() as u64
        } else {
            // Preallocated like a real shared segment, sometimes with room to spare.
            let size =
                (bytes.len() as u64).div_ceil(4096) * 4096 + 4096 * u64::from(seg_flags >> 7);
            bytes.resize(size as usize, 0);
            size
        };
        let header_id = if seg_flags & 0x20 != 0 { inp.u32() } else { id };
        let capacity_bytes = if seg_flags & 0x40 != 0 {
            inp.u64()
        } else {
            file_bytes
        };
        let header = if seg_flags & 3 == 3 {
            // A header straight from the input.
            let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
            let raw = inp.bytes(h.len());
            h[..raw.len()].copy_from_slice(raw);
            h
        } else {
            format::encode_segment_header(&SegmentHeader {
                version: format::FORMAT_VERSION,
                kind: if dedicated {
                    SegmentKind::Dedicated
                } else {
                    SegmentKind::Shared
                },
                segment_id: header_id,
                capacity_bytes,
            })
        };
        bytes[..header.len()].copy_from_slice(&header);
        files.push((segment_name(id), bytes));

        let hint_flags = inp.u8();
        if hint_flags & 1 != 0 {
            for _ in 0..(hint_flags >> 1) % 4 {
                mutate_hint(&mut entries, &names, inp);
            }
            let hint_id = if hint_flags & 0x80 != 0 {
                inp.u32()
            } else {
                id
            };
            files.push((hint_name(id), format::encode_hint_file(hint_id, &entries)));
        }
    }
    if flags & 2 != 0 {
        // A leftover of a streaming write.
        let len = usize::from(inp.u16() % 4096);
        files.push(("tmp/0000000003.seg".to_owned(), inp.bytes(len).to_vec()));
    }
    let mem = image(&files);
    patch(&mem, inp, (flags >> 2) % 4);
    mem
}

/// Changes one hint entry in a way that still encodes with valid checksums.
fn mutate_hint(entries: &mut Vec<HintEntry>, names: &[Hash], inp: &mut Input<'_>) {
    let what = inp.u8();
    if entries.is_empty() {
        if what & 0x80 != 0 {
            entries.push(HintEntry {
                hash: Hash::from_bytes(inp.bytes32()),
                seq: u64::from(inp.u8()),
                payload_bytes: u64::from(inp.u16()),
                offset: u32::from(inp.u16()),
                kind: RecordKind::Blob,
            });
        }
        return;
    }
    let i = usize::from(inp.u8()) % entries.len();
    let e = &mut entries[i];
    match what % 8 {
        0 => e.offset = inp.u32(),
        1 => e.offset = e.offset.wrapping_add(u32::from(inp.u8())),
        2 => e.seq = inp.u64(),
        3 => {
            e.kind = match inp.u8() % 3 {
                0 => RecordKind::Blob,
                1 => RecordKind::Tombstone,
                _ => RecordKind::Quarantine,
            }
        }
        4 => e.payload_bytes = u64::from(inp.u32()),
        5 => {
            e.hash = if names.is_empty() || inp.u8() & 1 == 0 {
                Hash::from_bytes(inp.bytes32())
            } else {
                names[usize::from(inp.u8()) % names.len()]
            }
        }
        6 => {
            entries.remove(i);
        }
        _ => {
            let copy = *e;
            entries.push(copy);
        }
    }
}

/// What the operations acknowledged so far say must be true of a hash.
#[derive(Debug, Clone)]
enum Expect {
    /// Put and not deleted since: must be there, with these bytes.
    Present(Vec<u8>),
    /// Deleted and not put since: must not be there.
    Absent,
    /// An operation on it was cut short by the death: either is fine.
    Either,
}

/// Expectations of a `VALID` store, by hash.
type Model = BTreeMap<Hash, Expect>;

/// Records that an operation on `hash` was cut short: a put never removes a blob, anything
/// else leaves its state unknown.
fn cut_short(model: &mut Model, hash: Hash, put: bool) {
    let state = model.entry(hash).or_insert(Expect::Either);
    if !(put && matches!(state, Expect::Present(_))) {
        *state = Expect::Either;
    }
}

/// A real store, built by operations the input chooses. The process may be killed (or the
/// power lost) at an input-chosen change to the file system, possibly in the middle of an
/// operation, a compaction or a reopening; otherwise the store is closed or loses power at the
/// end. Then bytes of its files may be overwritten. Returns the expectations, unless damage
/// landed.
fn valid_image(inp: &mut Input<'_>) -> (MemStorage, Config, Option<Model>) {
    let cfg = inp.u8();
    let config = Config {
        segment_bytes: VALID_SEGMENT_BYTES[usize::from(cfg & 3)],
        stream_buffer_bytes: if cfg & 4 == 0 { 256 } else { 2048 },
        // Blobs streamed with their name known are placed from this size on.
        placed_payload_bytes_min: if cfg & 4 == 0 { 64 } else { 700 },
        compact_live_ratio_below: if cfg & 8 == 0 { 0.5 } else { 1.0 },
        // With direct writes, `put`s from the placing size on are placed too (and their whole
        // pages written direct, which the memory storage checks for alignment); without, they
        // are appended whole. The bit is shared: the corpus's inputs cover both.
        direct_writes: cfg & 8 == 0,
        sync: SyncMode::Always,
        ..Config::default()
    };
    let ending = (cfg >> 4) & 3;
    let death = if cfg & 0x40 == 0 {
        Death::Kill
    } else {
        Death::PowerLoss { seed: inp.u64() }
    };
    let changes = if cfg & 0x80 == 0 {
        u64::MAX
    } else {
        1 + u64::from(inp.u16() % KILL_AFTER_CHANGES_MAX)
    };
    let mem = MemStorage::new();
    let switch = KillSwitch::new(mem.clone(), changes, death);
    let open = || Store::open_with(Arc::new(switch.clone()), dir(), config.clone());
    // Every failure before the death is a bug; after it, failures are what dying looks like.
    let check = |what: &str, e: cairn_engine::Error| {
        assert!(switch.is_dead(), "{what} failed before any death: {e}");
    };
    let mut model = Model::new();
    let mut known: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    let mut written: Vec<Hash> = Vec::new();
    let mut store = match open() {
        Ok(store) => Some(store),
        Err(e) => {
            check("first open", e);
            None
        }
    };
    let op_count = inp.u8() % 32;
    for op_index in 0..op_count {
        let Some(s) = store.as_ref() else { break };
        let op = inp.u8();
        let size_class = (op >> 3) & 3;
        match op % 8 {
            0..=2 => {
                let len = match size_class {
                    0 => usize::from(inp.u8()),
                    1 => usize::from(inp.u16() % 1200),
                    2 => usize::from(inp.u16() % 5000),
                    _ => 65_536 + usize::from(inp.u8()) * 64,
                };
                let bytes = pattern(u64::from(inp.u8()) << 8 | u64::from(op_index), len);
                let h = Hash::of(&bytes);
                known.insert(h, bytes.clone());
                written.push(h);
                match s.put(&bytes) {
                    Ok(stored) => {
                        assert_eq!(stored, h);
                        model.insert(h, Expect::Present(bytes));
                    }
                    Err(e) => {
                        check("put", e);
                        cut_short(&mut model, h, true);
                        break;
                    }
                }
            }
            3 if !written.is_empty() => {
                let h = written[usize::from(inp.u8()) % written.len()];
                match s.delete(&h) {
                    Ok(_) => {
                        model.insert(h, Expect::Absent);
                    }
                    Err(e) => {
                        check("delete", e);
                        cut_short(&mut model, h, false);
                        break;
                    }
                }
            }
            4 => {
                let len = usize::from(inp.u16() % 6000);
                let bytes = pattern(u64::from(inp.u8()) << 8 | u64::from(op_index), len);
                let pieces = inp.u8();
                let piece_bytes = usize::from(pieces) * 16 + 1;
                let h = Hash::of(&bytes);
                known.insert(h, bytes.clone());
                written.push(h);
                // Named before its bytes (placed in its segment if large enough), or not.
                let w = match pieces & 1 {
                    0 => Ok(s.writer()),
                    _ => s.writer_for(h, len as u64),
                };
                let streamed = w.and_then(|mut w| {
                    bytes
                        .chunks(piece_bytes)
                        .try_for_each(|piece| w.write(piece))
                        .and_then(|()| w.commit(Some(&h)))
                });
                match streamed {
                    Ok(stored) => {
                        assert_eq!(stored, h);
                        model.insert(h, Expect::Present(bytes));
                    }
                    Err(e) => {
                        check("streamed put", e);
                        cut_short(&mut model, h, true);
                        break;
                    }
                }
            }
            5 => {
                if let Err(e) = s.compact() {
                    check("compact", e);
                    break;
                }
            }
            6 => {
                store = None;
                match open() {
                    Ok(reopened) => store = Some(reopened),
                    Err(e) => {
                        check("reopen", e);
                        break;
                    }
                }
            }
            7 if !written.is_empty() => {
                // Put again what was put before (perhaps deleted since).
                let h = written[usize::from(inp.u8()) % written.len()];
                let bytes = known[&h].clone();
                match s.put(&bytes) {
                    Ok(stored) => {
                        assert_eq!(stored, h);
                        model.insert(h, Expect::Present(bytes));
                    }
                    Err(e) => {
                        check("put again", e);
                        cut_short(&mut model, h, true);
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    let crash_seed = inp.u64();
    let mut in_flight = None;
    if ending == 2
        && let Some(s) = &store
    {
        // A streamed write that already spilled to disk, or one placed in its segment and
        // half written, in flight at the end.
        let spill = pattern(crash_seed, config.stream_buffer_bytes as usize + 100);
        let w = match crash_seed & 1 {
            0 => Ok(s.writer()),
            _ => s.writer_for(Hash::of(&spill), spill.len() as u64),
        };
        let half = spill.len() / (1 + (crash_seed & 1) as usize);
        match w.and_then(|mut w| w.write(&spill[..half]).map(|()| w)) {
            Ok(w) => in_flight = Some(w),
            Err(e) => check("stream write", e),
        }
    }
    let mem = match (switch.remains(), ending) {
        (Some(remains), _) => remains,
        (None, 0) => mem,
        // Power loss with the store open (and perhaps a streamed write in flight).
        (None, 1 | 2) => mem.crash(crash_seed),
        // Power loss after a clean close.
        (None, _) => {
            drop(in_flight.take());
            drop(store.take());
            mem.crash(crash_seed)
        }
    };
    drop(in_flight);
    drop(store);
    let patch_count = inp.u8() % 8;
    let landed = patch(&mem, inp, patch_count);
    (mem, config, (landed == 0).then_some(model))
}

/// Every stored hash.
fn list_all(store: &Store) -> Vec<Hash> {
    store.list(&Hash::MIN, None, usize::MAX)
}

/// Whether some segment file holds, at any offset, a blob record named `hash` whose payload is
/// `bytes` and whose checksums are all valid: a forgery that only a content hash can catch.
fn forged_record_exists(mem: &MemStorage, hash: &Hash, bytes: &[u8]) -> bool {
    let segments: PathBuf = dir().join("segments");
    for path in mem.paths() {
        if path.parent() != Some(segments.as_path()) || path.extension().is_none_or(|e| e != "seg")
        {
            continue;
        }
        let Ok(file) = mem.open(&path) else { continue };
        let Ok(len) = file.len() else { continue };
        let mut data = vec![0u8; len as usize];
        if file.read_at(&mut data, 0).is_err() {
            continue;
        }
        for at in 0..data.len() {
            let Ok(h) = format::decode_record_header(&data[at..]) else {
                continue;
            };
            if h.kind != RecordKind::Blob
                || h.hash != *hash
                || h.payload_bytes != bytes.len() as u64
            {
                continue;
            }
            let start = at + RECORD_HEADER_BYTES as usize;
            let end = start + bytes.len();
            let table_end = end + format::table_bytes(h.payload_bytes) as usize;
            if table_end > data.len() || data[start..end] != *bytes {
                continue;
            }
            let table = &data[end..table_end];
            if format::verify_payload_range(bytes, table, &h, 0, h.payload_bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Reads `hash`; whatever comes back must be its blob (or, before a scrub, a forged record).
/// Returns whether the blob was served intact.
fn check_get(mem: &MemStorage, store: &Store, hash: &Hash, scrubbed: bool) -> bool {
    let Ok(Some(blob)) = store.get(hash) else {
        return false;
    };
    if Hash::of(&blob) == *hash {
        return true;
    }
    assert!(
        !scrubbed,
        "after a scrub, get({hash}) served {} bytes that hash to {}",
        blob.len(),
        Hash::of(&blob)
    );
    assert!(
        forged_record_exists(mem, hash, &blob),
        "get({hash}) served {} bytes that hash to {} and match no checksummed record",
        blob.len(),
        Hash::of(&blob)
    );
    false
}

/// Opens the store on `mem` and puts it through its paces.
fn exercise(mem: &MemStorage, config: &Config, model: Option<&Model>) {
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let store = match Store::open_with(storage.clone(), dir(), config.clone()) {
        Ok(store) => store,
        Err(e) => {
            assert!(model.is_none(), "an undamaged store fails to open: {e}");
            return;
        }
    };
    if let Some(model) = model {
        for (hash, state) in model {
            let got = store.get(hash);
            match state {
                Expect::Present(bytes) => match &got {
                    Ok(Some(blob)) => assert!(**blob == **bytes, "{hash} came back different"),
                    other => panic!(
                        "acknowledged put of {hash} lost: {other:?}, {:?}",
                        store.recovery_report()
                    ),
                },
                Expect::Absent => assert!(
                    matches!(got, Ok(None)),
                    "acknowledged delete of {hash} undone: {got:?}"
                ),
                Expect::Either => {
                    if let Ok(Some(blob)) = &got {
                        assert_eq!(Hash::of(blob), *hash, "{hash} came back different");
                    }
                }
            }
        }
    }
    for hash in list_all(&store) {
        check_get(mem, &store, &hash, false);
    }

    let report = store.scrub().expect("scrub of in-memory storage");
    if model.is_some() {
        assert_eq!(report.corrupt, [], "scrub of an undamaged store");
    }
    let mut good: Vec<Hash> = list_all(&store)
        .into_iter()
        .filter(|h| check_get(mem, &store, h, true))
        .collect();
    for hash in &report.corrupt {
        let got = store.get(hash);
        assert!(
            !matches!(got, Ok(Some(_))),
            "{hash} found corrupt by scrub is still served"
        );
    }

    let small = b"a small blob put after opening".to_vec();
    let large = pattern(0xca12, 3 * config.stream_buffer_bytes as usize + 17);
    // Files can hold the largest sequence number or segment id; then the store refuses writes
    // with a typed error, which is the one failure a put here may have.
    match store.put(&small) {
        Ok(h) => {
            assert!(
                check_get(mem, &store, &h, true),
                "fresh put of {h} unreadable"
            );
            good.push(h);
            let streamed = (|| {
                let mut w = store.writer();
                for piece in large.chunks(700) {
                    w.write(piece)?;
                }
                w.commit(Some(&Hash::of(&large)))
            })();
            match streamed {
                Ok(h) => {
                    assert!(
                        check_get(mem, &store, &h, true),
                        "fresh streamed {h} unreadable"
                    );
                    good.push(h);
                }
                Err(Error::IdsExhausted { .. }) => {}
                Err(e) => panic!("streamed put after opening: {e:?}"),
            }
        }
        Err(Error::IdsExhausted { .. }) => {}
        Err(e) => panic!("put after opening: {e:?}"),
    }
    drop(store);

    let store = Store::open_with(storage, dir(), config.clone()).expect("reopen");

    for hash in &good {
        assert!(
            check_get(mem, &store, hash, false),
            "{hash} was intact before reopening and is not after"
        );
    }
    for hash in list_all(&store) {
        check_get(mem, &store, &hash, false);
    }
}
