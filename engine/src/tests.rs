//! Behaviour tests of the whole store on the in-memory and fault-injecting backends.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::limits::{
    HASH_BATCH_BYTES, STREAM_BUFFER_BYTES_MAX, WRITE_BUFFER_SPARE_BYTES_MIN,
    WRITE_BUFFERS_SPARE_MAX,
};
use crate::storage::{FaultyStorage, MemStorage, Storage};
use crate::*;

const DIR: &str = "/store";

fn small_config() -> Config {
    Config {
        segment_bytes: 16 * 1024,
        stream_buffer_bytes: 8 * 1024,
        ..Config::default()
    }
}

fn open(storage: &MemStorage, config: Config) -> Store {
    Store::open_with(Arc::new(storage.clone()), Path::new(DIR), config).expect("open")
}

fn blob(seed: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}

/// The path of the oldest segment file.
fn first_segment(mem: &MemStorage) -> std::path::PathBuf {
    let mut segments = mem
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"));
    segments.next().expect("a segment file")
}

/// Puts `count` distinct blobs of `len` bytes (contents `blob(0..count, len)`).
fn put_many(store: &Store, count: u32, len: usize) -> Vec<Hash> {
    (0..count)
        .map(|i| store.put(&blob(i, len)).unwrap())
        .collect()
}

#[test]
fn put_get_stat_delete_and_dedup() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let data = blob(1, 1000);
    let h = store.put(&data).unwrap();
    assert_eq!(h, Hash::of(&data));
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &data[..]);
    assert_eq!(store.stat(&h).unwrap(), BlobStat::Present { bytes: 1000 });
    let written = store.stats().live_bytes + store.stats().dead_bytes;
    assert_eq!(store.put(&data).unwrap(), h, "dedup returns the same hash");
    assert_eq!(
        store.stats().live_bytes + store.stats().dead_bytes,
        written,
        "dedup writes nothing"
    );
    assert_eq!(
        &*store.read_range(&h, 10, 5).unwrap().unwrap(),
        &data[10..15]
    );
    assert!(matches!(
        store.read_range(&h, 999, 2),
        Err(Error::RangeOutOfBounds { .. })
    ));
    let empty = store.put(b"").unwrap();
    assert_eq!(store.get(&empty).unwrap().unwrap().len(), 0);
    assert!(store.delete(&h).unwrap());
    assert!(!store.delete(&h).unwrap());
    assert!(store.get(&h).unwrap().is_none());
    assert_eq!(store.stat(&h).unwrap(), BlobStat::Absent);
    assert_eq!(store.stats().blob_count, 1);
}

#[test]
fn blob_handle_outlives_store_and_crosses_threads() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let data = blob(2, 3000);
    let h = store.put(&data).unwrap();
    let handle = store.get(&h).unwrap().unwrap();
    drop(store);
    let copy = handle.clone();
    let joined = std::thread::spawn(move || copy.to_vec()).join().unwrap();
    assert_eq!(joined, data);
}

#[test]
fn blobs_larger_than_a_segment_and_streams() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    // put() of a blob four times the segment size goes to a dedicated segment.
    let big = blob(3, 64 * 1024 + 17);
    let h = store.put(&big).unwrap();
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &big[..]);
    // A streamed blob that spills past the stream buffer, written in odd-sized pieces, large
    // enough that its checksum table spills to a side file too (over 64 KiB of table).
    let huge = blob(4, 17 * 1024 * 1024 + 3);
    let mut w = store.writer();
    for piece in huge.chunks(777_777) {
        w.write(piece).unwrap();
    }
    let hh = w.commit(Some(&Hash::of(&huge))).unwrap();
    assert_eq!(&*store.get(&hh).unwrap().unwrap(), &huge[..]);
    assert_eq!(
        &*store.read_range(&hh, 5_000_000, 100).unwrap().unwrap(),
        &huge[5_000_000..5_000_100]
    );
    // A small stream is stored like put.
    let mut w = store.writer();
    w.write(b"hello ").unwrap();
    w.write(b"world").unwrap();
    assert_eq!(w.commit(None).unwrap(), Hash::of(b"hello world"));
    drop(store);
    let store = open(&mem, small_config());
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &big[..]);
    assert_eq!(&*store.get(&hh).unwrap().unwrap(), &huge[..]);
    assert!(
        mem.paths().iter().all(|p| !p.starts_with("/store/tmp")),
        "no temp files left"
    );
}

#[test]
fn stream_with_wrong_hash_or_abort_leaves_nothing() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let before = store.stats();
    for len in [100usize, 50_000] {
        let data = blob(5, len);
        let mut w = store.writer();
        w.write(&data).unwrap();
        let wrong = Hash::of(b"something else");
        match w.commit(Some(&wrong)) {
            Err(Error::HashMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Hash::of(&data));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert!(store.get(&Hash::of(&data)).unwrap().is_none());
        let mut w = store.writer();
        w.write(&data).unwrap();
        w.abort();
        assert!(store.get(&Hash::of(&data)).unwrap().is_none());
    }
    let after = store.stats();
    assert_eq!(after.blob_count, before.blob_count);
    assert_eq!(
        after.used_bytes, before.used_bytes,
        "reservations given back"
    );
    assert!(mem.paths().iter().all(|p| !p.starts_with("/store/tmp")));
}

#[test]
fn reopen_uses_hints_and_keeps_everything() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let mut hashes = Vec::new();
    for i in 0..200 {
        hashes.push(store.put(&blob(i, 300 + i as usize)).unwrap());
    }
    for h in &hashes[..50] {
        store.delete(h).unwrap();
    }
    let stats = store.stats();
    drop(store);
    let store = open(&mem, small_config());
    let report = store.recovery_report().clone();
    assert!(report.hint_files_used >= 5, "{report:?}");
    assert_eq!(
        report.segments_scanned, 1,
        "only the open segment is scanned: {report:?}"
    );
    assert!(report.torn_tails.is_empty());
    for (i, h) in hashes.iter().enumerate() {
        let got = store.get(h).unwrap();
        if i < 50 {
            assert!(got.is_none());
        } else {
            assert_eq!(&*got.unwrap(), &blob(i as u32, 300 + i)[..]);
        }
    }
    let again = store.stats();
    assert_eq!(again.blob_count, stats.blob_count);
    assert_eq!(again.live_bytes, stats.live_bytes);
    assert_eq!(again.dead_bytes, stats.dead_bytes);
}

#[test]
fn list_by_range_is_sorted_and_paged() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let mut all = put_many(&store, 100, 10);
    all.sort();
    assert_eq!(store.list(&Hash::MIN, None, usize::MAX), all);
    let mut paged = Vec::new();
    let mut start = Hash::MIN;
    loop {
        let page = store.list(&start, None, 7);
        let Some(last) = page.last() else { break };
        let mut next = *last.as_bytes();
        for b in next.iter_mut().rev() {
            *b = b.wrapping_add(1);
            if *b != 0 {
                break;
            }
        }
        start = Hash::from_bytes(next);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let (lo, hi) = (all[20], all[40]);
    assert_eq!(store.list(&lo, Some(&hi), usize::MAX), all[20..40].to_vec());
}

#[test]
fn compaction_reclaims_space_and_keeps_readers_valid() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let hashes = put_many(&store, 300, 500);
    let kept_handle = store.get(&hashes[0]).unwrap().unwrap();
    for h in hashes
        .iter()
        .skip(1)
        .step_by(2)
        .chain(std::iter::once(&hashes[0]))
    {
        store.delete(h).unwrap();
    }
    let before = store.stats();
    let report = store.compact().unwrap();
    let after = store.stats();
    assert!(report.segments_removed > 0, "{report:?}");
    assert!(after.used_bytes < before.used_bytes);
    assert!(after.dead_bytes < before.dead_bytes);
    assert_eq!(after.blob_count, before.blob_count);
    assert_eq!(
        &*kept_handle,
        &blob(0, 500)[..],
        "a handle into a removed segment stays valid"
    );
    for (i, h) in hashes.iter().enumerate() {
        let live = i != 0 && i % 2 == 0;
        assert_eq!(store.get(h).unwrap().is_some(), live, "blob {i}");
    }
    drop(store);
    let store = open(&mem, small_config());
    for (i, h) in hashes.iter().enumerate() {
        let live = i != 0 && i % 2 == 0;
        assert_eq!(
            store.get(h).unwrap().is_some(),
            live,
            "blob {i} after reopen"
        );
    }
}

/// Compacts every candidate once, as a paced caller does; returns the reports.
fn compaction_round(store: &Store) -> Vec<CompactionReport> {
    store
        .compaction_candidates()
        .into_iter()
        .filter_map(|id| store.compact_segment(id).unwrap())
        .collect()
}

#[test]
fn paced_compaction_goes_a_segment_at_a_time_and_an_emptied_store_ends_with_no_segment() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let hashes = put_many(&store, 300, 500);
    assert_eq!(store.stats().reclaimable_bytes, 0, "nothing deleted yet");
    // Segments fill in order: deleting the first 90% of the blobs leaves the early segments
    // dead and the later ones live.
    for h in &hashes[..270] {
        store.delete(h).unwrap();
    }
    let before = store.stats();
    assert!(before.reclaimable_bytes > 0);
    let candidates = store.compaction_candidates();
    assert!(candidates.len() > 1, "{candidates:?}");
    let reports = compaction_round(&store);
    assert_eq!(reports.len(), candidates.len());
    assert!(
        reports.iter().all(|r| r.segments_removed == 1),
        "{reports:?}"
    );
    let after = store.stats();
    assert!(after.used_bytes < before.used_bytes);
    assert!(after.reclaimable_bytes < before.reclaimable_bytes);
    assert_eq!(
        store.compact_segment(candidates[0]).unwrap(),
        None,
        "a removed segment is no candidate"
    );
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(store.get(h).unwrap().is_some(), i >= 270, "blob {i}");
    }

    // Everything goes: the open segment is sealed once nothing in it is live, and the store
    // ends with no segment file at all (kept tombstones last a round more each).
    for h in &hashes[270..] {
        store.delete(h).unwrap();
    }
    let segment_files = |mem: &MemStorage| {
        mem.paths()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .count()
    };
    for _ in 0..10 {
        store.seal_open_segment_if_dead(u64::MAX).unwrap();
        compaction_round(&store);
        if segment_files(&mem) == 0 {
            break;
        }
    }
    assert_eq!(segment_files(&mem), 0, "{:?}", mem.paths());
    assert_eq!(store.stats().used_bytes, 0);
    // The store still works, and reopens with what it holds.
    let again = store.put(b"after").unwrap();
    drop(store);
    let store = open(&mem, small_config());
    assert_eq!(&*store.get(&again).unwrap().unwrap(), b"after");
    assert_eq!(store.stats().blob_count, 1);
    for h in &hashes {
        assert!(store.get(h).unwrap().is_none(), "a deleted blob came back");
    }
}

#[test]
fn the_open_segment_is_sealed_for_compaction_only_when_dead_enough() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let a = store.put(&blob(1, 3000)).unwrap();
    let _b = store.put(&blob(2, 4000)).unwrap();
    assert!(!store.seal_open_segment_if_dead(1).unwrap(), "all live");
    store.delete(&a).unwrap();
    // Under half dead is not past the default threshold (live below half).
    assert!(!store.seal_open_segment_if_dead(1).unwrap());
    let c = store.put(&blob(3, 2000)).unwrap();
    store.delete(&c).unwrap();
    assert!(
        !store.seal_open_segment_if_dead(1 << 20).unwrap(),
        "dead bytes under the minimum"
    );
    assert!(store.seal_open_segment_if_dead(1).unwrap());
    let reports = compaction_round(&store);
    assert_eq!(reports.len(), 1, "the sealed segment: {reports:?}");
    assert_eq!(reports[0].blobs_moved, 1);
    assert_eq!(reports[0].segments_removed, 1);
}

#[test]
fn compaction_runs_alongside_writers_and_readers() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let h = store.put(&blob(i, 400)).unwrap();
                if !i.is_multiple_of(3) {
                    store.delete(&h).unwrap();
                }
                i += 1;
            }
            i
        })
    };
    for _ in 0..30 {
        store.compact().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    store.compact().unwrap();
    let check = |store: &Store| {
        for i in 0..written {
            let h = Hash::of(&blob(i, 400));
            assert_eq!(
                store.get(&h).unwrap().is_some(),
                i.is_multiple_of(3),
                "blob {i}"
            );
        }
    };
    check(&store);
    drop(store);
    check(&open(&mem, small_config()));
}

#[test]
fn concurrent_writers_share_fsyncs() {
    // A disk whose fsync takes 1 ms, like a slow disk: writers arriving meanwhile must queue
    // behind it and share the next one.
    let faulty = FaultyStorage::new(Arc::new(MemStorage::new()));
    faulty.faults().sync_delay_us.store(1000, Ordering::Relaxed);
    let config = Config {
        segment_bytes: 1 << 20,
        ..Config::default()
    };
    let store = Store::open_with(Arc::new(faulty), Path::new(DIR), config).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    store.put(&blob(t * 1000 + i, 100)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.blob_count, 800);
    // Every put returned durable; with sharing there are fewer fsyncs than puts. (Without it,
    // there would be one per put plus segment creation.)
    assert!(stats.fsync_count < 400, "fsyncs: {}", stats.fsync_count);
}

#[test]
fn failed_fsync_turns_the_store_read_only() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(Arc::new(mem.clone()));
    let faults = faulty.faults().clone();
    let store = Store::open_with(Arc::new(faulty), Path::new(DIR), small_config()).unwrap();
    let kept = store.put(b"before").unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    let err = store.put(b"during").unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly(ReadOnlyReason::FsyncFailed { .. })),
        "{err:?}"
    );
    assert!(
        store.get(&Hash::of(b"during")).unwrap().is_none(),
        "not acknowledged, not visible"
    );
    // The fault is gone, but the store does not pretend the lost write is safe.
    faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(store.put(b"after"), Err(Error::ReadOnly(_))));
    assert!(matches!(store.delete(&kept), Err(Error::ReadOnly(_))));
    assert_eq!(&*store.get(&kept).unwrap().unwrap(), b"before");
    assert!(store.stats().read_only.is_some());
    drop(store);
    let store = open(&mem, small_config());
    assert_eq!(&*store.get(&kept).unwrap().unwrap(), b"before");
    store.put(b"after").unwrap();
}

#[test]
fn disk_full_mid_write_leaves_a_usable_store() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(Arc::new(mem.clone()));
    let faults = faulty.faults().clone();
    let store = Store::open_with(Arc::new(faulty), Path::new(DIR), small_config()).unwrap();
    let kept = put_many(&store, 20, 700);
    faults.space_left_bytes.store(300, Ordering::SeqCst);
    let err = store.put(&blob(100, 700)).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    let big = blob(101, 200_000);
    assert!(matches!(store.put(&big), Err(Error::DiskFull { .. })));
    let mut w = store.writer();
    assert!(w.write(&big).is_err());
    assert!(matches!(w.commit(None), Err(Error::WriterFailed)));
    for (i, h) in kept.iter().enumerate() {
        assert_eq!(&*store.get(h).unwrap().unwrap(), &blob(i as u32, 700)[..]);
    }
    // Space comes back: the store carries on where it was, over the torn bytes.
    faults.space_left_bytes.store(u64::MAX, Ordering::SeqCst);
    let h = store.put(&blob(100, 700)).unwrap();
    drop(store);
    let store = open(&mem, small_config());
    assert!(
        store.recovery_report().torn_tails.is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.get(&h).unwrap().is_some());
    for h in &kept {
        assert!(store.get(h).unwrap().is_some());
    }
}

#[test]
fn store_full_fails_before_writing() {
    let mem = MemStorage::new();
    let config = Config {
        capacity_bytes: 40 * 1024,
        ..small_config()
    };
    let store = open(&mem, config);
    let mut stored = 0;
    let err = loop {
        match store.put(&blob(stored, 1000)) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::StoreFull { .. }), "{err:?}");
    assert!(stored > 10);
    let stats = store.stats();
    assert!(stats.used_bytes <= stats.capacity_bytes);
    assert!(matches!(
        store.put(&blob(999, 100_000)),
        Err(Error::StoreFull { .. })
    ));
    for i in 0..stored {
        assert!(store.get(&Hash::of(&blob(i, 1000))).unwrap().is_some());
    }
}

#[test]
fn corruption_is_caught_quarantined_and_repairable() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let data = blob(7, 5000);
    let h = store.put(&data).unwrap();
    let other = store.put(&blob(8, 5000)).unwrap();
    drop(store);
    // Flip a payload byte of the first record of the first segment.
    let seg = first_segment(&mem);
    let offset = limits::SEGMENT_HEADER_BYTES + limits::RECORD_HEADER_BYTES + 100;
    mem.corrupt(&seg, offset, &[data[100] ^ 0xff]).unwrap();
    let store = open(&mem, small_config());
    let report = store.scrub().unwrap();
    assert_eq!(report.corrupt, vec![h]);
    assert_eq!(report.blobs_checked, 2);
    assert!(matches!(store.get(&h), Err(Error::Quarantined { .. })));
    assert_eq!(store.stat(&h).unwrap(), BlobStat::Quarantined);
    assert!(store.get(&other).unwrap().is_some());
    drop(store);
    // The quarantine survives a restart, and a good copy repairs it.
    let store = open(&mem, small_config());
    assert_eq!(store.stat(&h).unwrap(), BlobStat::Quarantined);
    store.put(&data).unwrap();
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &data[..]);
    drop(store);
    let store = open(&mem, small_config());
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &data[..]);
}

#[test]
fn a_read_that_hits_bad_bytes_fails_and_quarantines() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let data = blob(9, 2000);
    let h = store.put(&data).unwrap();
    let seg = first_segment(&mem);
    mem.corrupt(
        &seg,
        limits::SEGMENT_HEADER_BYTES + limits::RECORD_HEADER_BYTES + 5,
        &[data[5] ^ 1],
    )
    .unwrap();
    assert!(matches!(store.get(&h), Err(Error::Corrupted { .. })));
    assert!(matches!(store.get(&h), Err(Error::Quarantined { .. })));
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let mem = MemStorage::new();
    let store = open(
        &mem,
        Config {
            sync: SyncMode::Never,
            ..small_config()
        },
    );
    let h = store.put(&blob(1, 100)).unwrap();
    store.sync().unwrap();
    drop(store);
    // Garbage where the next record would go.
    let seg = first_segment(&mem);
    let end = limits::SEGMENT_HEADER_BYTES + format::record_bytes(100);
    mem.corrupt(&seg, end, b"CRec garbage that is not a record")
        .unwrap();
    let store = open(&mem, small_config());
    assert_eq!(store.recovery_report().torn_tails.len(), 1);
    assert!(store.get(&h).unwrap().is_some());
    let h2 = store.put(&blob(2, 100)).unwrap();
    drop(store);
    let store = open(&mem, small_config());
    assert!(store.recovery_report().torn_tails.is_empty());
    assert!(store.get(&h).unwrap().is_some() && store.get(&h2).unwrap().is_some());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let second = Store::open_with(Arc::new(mem.clone()), Path::new(DIR), small_config());
    assert!(matches!(second, Err(Error::Locked { .. })));
    drop(store);
    open(&mem, small_config());
}

#[test]
fn bad_config_is_refused() {
    let mem = MemStorage::new();
    for config in [
        Config {
            segment_bytes: 10,
            ..Config::default()
        },
        Config {
            compact_live_ratio_below: 2.0,
            ..Config::default()
        },
        Config {
            sync: SyncMode::Interval { period_ms: 0 },
            ..Config::default()
        },
        Config {
            stream_buffer_bytes: u64::MAX,
            ..Config::default()
        },
    ] {
        let r = Store::open_with(Arc::new(mem.clone()), Path::new(DIR), config);
        assert!(matches!(r, Err(Error::InvalidConfig { .. })));
    }
}

#[test]
fn interval_mode_syncs_in_the_background() {
    let mem = MemStorage::new();
    let store = open(
        &mem,
        Config {
            sync: SyncMode::Interval { period_ms: 5 },
            ..small_config()
        },
    );
    let h = store.put(b"soon durable").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Wait until a crash at this instant always keeps the blob.
    loop {
        let survived = (0..20).all(|seed| {
            let after = mem.crash(seed);
            Store::open_with(Arc::new(after), Path::new(DIR), small_config())
                .is_ok_and(|s| s.get(&h).is_ok_and(|b| b.is_some()))
        });
        if survived {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background sync never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn real_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let small = store.put(b"on a real disk").unwrap();
    let big = blob(11, 100_000);
    let hb = store.put(&big).unwrap();
    drop(store);
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(&*store.get(&small).unwrap().unwrap(), b"on a real disk");
    assert_eq!(&*store.get(&hb).unwrap().unwrap(), &big[..]);
    let storage: &dyn Storage = &storage::RealStorage;
    assert!(
        storage
            .list_dir(&dir.path().join("segments"))
            .unwrap()
            .len()
            >= 2
    );
}

#[test]
fn a_streaming_writer_names_a_blob_written_in_small_pieces_kept_or_spilled() {
    let mem = MemStorage::new();
    let stream_buffer_bytes = 64 * 1024;
    let config = Config {
        stream_buffer_bytes,
        ..Config::default()
    };
    let store = open(&mem, config);
    // In memory (hashed from the buffer in batches) and spilled (hashed piece by piece), in
    // pieces smaller than a batch, around it and larger; the name asked for midway too.
    for len in [1000, 50_000, 200_000] {
        let bytes = blob(len as u32, len);
        for cut in [700, HASH_BATCH_BYTES + 1, 40_000] {
            let mut w = store.writer();
            for (i, piece) in bytes.chunks(cut).enumerate() {
                w.write(piece).unwrap();
                if i == 2 {
                    let done = (3 * cut).min(len);
                    assert_eq!(w.hash(), Hash::of(&bytes[..done]), "{len} by {cut}, midway");
                }
            }
            assert_eq!(w.hash(), Hash::of(&bytes), "{len} by {cut}");
            let hash = w.commit(Some(&Hash::of(&bytes))).unwrap();
            assert_eq!(store.get(&hash).unwrap().unwrap().as_ref(), &bytes[..]);
        }
    }
}

#[test]
fn streaming_writers_reuse_large_buffers_and_keep_only_a_few() {
    let mem = MemStorage::new();
    let config = Config {
        segment_bytes: 64 << 20,
        ..Config::default()
    };
    let store = open(&mem, config);
    let spares = || store.inner.spare_buffer_count();
    let big = WRITE_BUFFER_SPARE_BYTES_MIN as usize * 2;
    let write = |seed: u32, len: usize| {
        let mut w = store.writer();
        w.reserve(len as u64);
        w.write(&blob(seed, len)).unwrap();
        w
    };
    // A committed writer's buffer is kept, and the next large writer writes into it.
    let hash = write(1, big).commit(None).unwrap();
    assert_eq!(spares(), 1);
    let next = write(2, big);
    assert_eq!(spares(), 0);
    // A small writer neither takes a spare nor leaves its buffer.
    next.abort();
    assert_eq!(spares(), 1);
    let small = write(50, 1000);
    assert_eq!(spares(), 1);
    small.commit(None).unwrap();
    assert_eq!(spares(), 1);
    // A writer refused for its hash, one dropped, and one that spilled to a dedicated segment
    // give theirs back; at most WRITE_BUFFERS_SPARE_MAX stay.
    let refused = write(3, big);
    assert_eq!(spares(), 0);
    assert!(refused.commit(Some(&Hash::of(b"another blob"))).is_err());
    assert_eq!(spares(), 1);
    let dropped = write(4, big);
    assert_eq!(spares(), 0);
    drop(dropped);
    assert_eq!(spares(), 1);
    let mut spilled = write(5, big);
    assert_eq!(spares(), 0);
    let long = blob(6, STREAM_BUFFER_BYTES_MAX as usize + 1);
    spilled.write(&long).unwrap();
    assert_eq!(spares(), 1);
    let spilled_hash = spilled.commit(None).unwrap();
    let writers: Vec<_> = (7..7 + WRITE_BUFFERS_SPARE_MAX as u32 + 2)
        .map(|seed| write(seed, big))
        .collect();
    assert_eq!(spares(), 0);
    drop(writers);
    assert_eq!(spares(), WRITE_BUFFERS_SPARE_MAX);
    // What the reused buffers held does not leak into later blobs.
    let reused = write(60, big / 2).commit(None).unwrap();
    assert_eq!(
        &*store.get(&reused).unwrap().unwrap(),
        &blob(60, big / 2)[..]
    );
    assert_eq!(&*store.get(&hash).unwrap().unwrap(), &blob(1, big)[..]);
    let mut whole = blob(5, big);
    whole.extend_from_slice(&long);
    assert_eq!(&*store.get(&spilled_hash).unwrap().unwrap(), &whole[..]);
}

#[test]
fn released_mappings_read_the_same_bytes_again_even_under_a_live_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let blobs: Vec<Vec<u8>> = (0..40).map(|i| blob(100 + i, 30_000)).collect();
    let hashes: Vec<Hash> = blobs.iter().map(|b| store.put(b).unwrap()).collect();
    // A handle taken before the release reads through the same mapping after it.
    let held = store.get(&hashes[0]).unwrap().unwrap();
    for (hash, bytes) in hashes.iter().zip(&blobs) {
        assert_eq!(&*store.get(hash).unwrap().unwrap(), &bytes[..]);
    }
    // Every segment was just read: none is cold yet. Unread since, all are the next time.
    assert_eq!(store.release_cold_mappings(), 0);
    let released = store.release_cold_mappings();
    assert!(released >= 2, "{released} segments");
    assert_eq!(&*held, &blobs[0][..]);
    for (hash, bytes) in hashes.iter().zip(&blobs) {
        assert_eq!(&*store.get(hash).unwrap().unwrap(), &bytes[..]);
        assert_eq!(store.verify(hash).unwrap(), Some(bytes.len() as u64));
    }
    // Writes after a release land and read back too.
    let later = blob(999, 50_000);
    let h = store.put(&later).unwrap();
    store.release_cold_mappings();
    store.release_cold_mappings();
    assert_eq!(&*store.get(&h).unwrap().unwrap(), &later[..]);
}

#[test]
fn compaction_leaves_a_damaged_segment_in_place() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let hashes = put_many(&store, 100, 500);
    for h in hashes.iter().skip(1) {
        store.delete(h).unwrap();
    }
    // Damage the first record's header in the first (sealed) segment: a scan stops there.
    let seg = first_segment(&mem);
    mem.corrupt(&seg, limits::SEGMENT_HEADER_BYTES + 1, b"X")
        .unwrap();
    let report = store.compact().unwrap();
    assert_eq!(report.segments_skipped_damaged, 1, "{report:?}");
    assert!(mem.paths().contains(&seg), "the damaged segment is kept");
    assert!(matches!(
        store.get(&hashes[0]),
        Err(Error::Corrupted { .. })
    ));
}

#[test]
fn a_record_with_the_largest_sequence_number_does_not_overflow() {
    // A record whose checksums are fine but whose sequence number is the largest possible, as
    // damaged or hostile files can hold: the store opens, reads, and refuses new writes.
    let mem = MemStorage::new();
    drop(open(&mem, small_config()));
    let data = b"last".to_vec();
    let mut record = Vec::new();
    format::encode_blob_record(Hash::of(&data), u64::MAX, &data, &mut record);
    let seg = std::path::Path::new(DIR).join("segments/0000000001.seg");
    let file = mem.create(&seg).unwrap();
    let header = format::SegmentHeader {
        version: format::FORMAT_VERSION,
        kind: format::SegmentKind::Shared,
        segment_id: 1,
        capacity_bytes: 16 * 1024,
    };
    file.set_len(16 * 1024).unwrap();
    file.write_at(&format::encode_segment_header(&header), 0)
        .unwrap();
    file.write_at(&record, limits::SEGMENT_HEADER_BYTES)
        .unwrap();
    let store = open(&mem, small_config());
    assert_eq!(&*store.get(&Hash::of(&data)).unwrap().unwrap(), b"last");
    assert!(matches!(
        store.put(b"more"),
        Err(Error::IdsExhausted { .. })
    ));
}

#[test]
fn recovery_counts_the_records_a_truncation_cut_and_sets_a_damaged_segment_aside() {
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    // Enough to fill (and seal, with a hint file) the first segments.
    let hashes = put_many(&store, 120, 500);
    drop(store);
    let mut segments: Vec<_> = mem
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // The first segment loses its second half; the second gets a damaged header.
    let first = &segments[0];
    let first_len = mem.open(first).unwrap().len().unwrap();
    let cut_at = limits::SEGMENT_HEADER_BYTES + 10 * format::record_bytes(500);
    mem.open(first).unwrap().set_len(cut_at).unwrap();
    assert!(cut_at < first_len);
    let second = segments[1].clone();
    mem.corrupt(&second, 0, b"XXXX").unwrap();

    let store = open(&mem, small_config());
    let report = store.recovery_report().clone();
    assert!(report.dropped_anything());
    assert_eq!(report.unreadable_segments.len(), 1, "{report:?}");
    let damaged = &report.unreadable_segments[0];
    assert_eq!(damaged.path, second);
    let moved_to = damaged.moved_to.clone().expect("moved aside");
    assert!(
        moved_to.starts_with(Path::new(DIR).join("damaged")),
        "{moved_to:?}"
    );
    let paths = mem.paths();
    assert!(
        paths.contains(&moved_to) && !paths.contains(&second),
        "{paths:?}"
    );
    let present = hashes
        .iter()
        .filter(|h| store.get(h).ok().flatten().is_some())
        .count() as u64;
    assert_eq!(
        report.records_lost,
        hashes.len() as u64 - present,
        "every blob that went is counted: {report:?}"
    );
    assert!(report.records_lost > 10);
    drop(store);
    // The next open finds nothing more to drop.
    let store = open(&mem, small_config());
    assert!(
        !store.recovery_report().dropped_anything(),
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn a_shared_segment_cut_short_keeps_its_blobs() {
    // A segment file shorter than the capacity its header states, cut right after its last
    // record (what a crash while resizing could leave), opens with every blob in it.
    let mem = MemStorage::new();
    let store = open(&mem, small_config());
    let hashes = put_many(&store, 5, 300);
    drop(store);
    let seg = first_segment(&mem);
    let end = limits::SEGMENT_HEADER_BYTES + 5 * format::record_bytes(300);
    mem.open(&seg).unwrap().set_len(end).unwrap();
    let store = open(&mem, small_config());
    assert!(
        store.recovery_report().unreadable_segments.is_empty(),
        "{:?}",
        store.recovery_report()
    );
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(&*store.get(h).unwrap().unwrap(), &blob(i as u32, 300)[..]);
    }
    store.put(b"and it takes writes again").unwrap();
}

/// A config where a record of up to about 1 MiB is shared and `PLACED_PAYLOAD_BYTES_MIN` blobs
/// are placed.
fn placing_config() -> Config {
    Config {
        segment_bytes: 4 * 1024 * 1024 + 64,
        ..Config::default()
    }
}

/// Writes `data` into `w` in uneven pieces, as a network stream delivers them.
fn write_in_pieces(w: &mut BlobWriter, data: &[u8]) {
    let mut rest = data;
    for n in [1usize, 1200, 70_000, 3].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let take = (*n).min(rest.len());
        w.write(&rest[..take]).unwrap();
        rest = &rest[take..];
    }
}

#[test]
fn a_placed_blob_is_written_in_place_and_one_never_committed_hides_nothing() {
    let mem = MemStorage::new();
    let store = open(&mem, placing_config());
    let len = limits::PLACED_PAYLOAD_BYTES_MIN as usize + 5000;
    let (cut, kept) = (blob(1, len), blob(2, len));
    let (cut_hash, kept_hash) = (Hash::of(&cut), Hash::of(&kept));
    let mut cut_writer = store.writer_for(cut_hash, len as u64).unwrap();
    cut_writer.write(&cut[..len / 2]).unwrap();
    let before = put_many(&store, 5, 3000);
    let mut kept_writer = store.writer_for(kept_hash, len as u64).unwrap();
    write_in_pieces(&mut kept_writer, &kept);
    assert_eq!(kept_writer.hash(), kept_hash);
    let small: Vec<Hash> = (10..15)
        .map(|i| store.put(&blob(i, 3000)).unwrap())
        .collect();
    assert_eq!(kept_writer.commit(Some(&kept_hash)).unwrap(), kept_hash);
    drop(cut_writer); // a stream cut off: never committed
    let after: Vec<Hash> = (20..25)
        .map(|i| store.put(&blob(i, 3000)).unwrap())
        .collect();
    assert_eq!(&*store.get(&kept_hash).unwrap().unwrap(), &kept[..]);
    assert!(store.get(&cut_hash).unwrap().is_none());
    let acknowledged: Vec<Hash> = [before, small, after, vec![kept_hash]].concat();
    drop(store);
    // Every write here was synced (`SyncMode::Always`), the cut record's bytes too by the
    // fsyncs after it: after a power loss every acknowledged blob is found, and the record
    // placed but never committed is passed over, not taken for a torn tail that would hide the
    // records after it.
    for seed in 0..8 {
        let store = open(&mem.crash(seed), placing_config());
        let report = store.recovery_report();
        assert!(report.torn_tails.is_empty(), "seed {seed}: {report:?}");
        assert_eq!(report.records_skipped.len(), 1, "seed {seed}: {report:?}");
        assert!(!report.dropped_anything(), "seed {seed}: {report:?}");
        for hash in &acknowledged {
            assert!(
                store.get(hash).unwrap().is_some(),
                "seed {seed}: {hash} lost"
            );
        }
        assert_eq!(&*store.get(&kept_hash).unwrap().unwrap(), &kept[..]);
        assert!(store.get(&cut_hash).unwrap().is_none());
        assert!(store.scrub().unwrap().corrupt.is_empty());
    }
}

#[test]
fn a_placed_blob_that_is_too_long_short_or_misnamed_stores_nothing() {
    let mem = MemStorage::new();
    let store = open(&mem, placing_config());
    let len = limits::PLACED_PAYLOAD_BYTES_MIN as usize;
    let data = blob(3, len);
    let hash = Hash::of(&data);
    let mut long = store.writer_for(hash, len as u64).unwrap();
    long.write(&data).unwrap();
    assert!(matches!(
        long.write(b"x"),
        Err(Error::LengthMismatch { .. })
    ));
    drop(long);
    let mut short = store.writer_for(hash, len as u64).unwrap();
    short.write(&data[..len - 1]).unwrap();
    assert!(matches!(
        short.commit(None),
        Err(Error::LengthMismatch { .. })
    ));
    let other = Hash::of(b"another blob");
    let mut misnamed = store.writer_for(other, len as u64).unwrap();
    misnamed.write(&data).unwrap();
    assert!(matches!(
        misnamed.commit(None),
        Err(Error::HashMismatch { .. })
    ));
    assert!(store.get(&hash).unwrap().is_none());
    assert!(store.get(&other).unwrap().is_none());
    // The space they took is dead, not live; the same blob written right is stored.
    let mut right = store.writer_for(hash, len as u64).unwrap();
    right.write(&data).unwrap();
    right.commit(Some(&hash)).unwrap();
    assert_eq!(&*store.get(&hash).unwrap().unwrap(), &data[..]);
    let stats = store.stats();
    assert_eq!(stats.blob_count, 1);
    drop(store);
    let store = open(&mem, placing_config());
    assert_eq!(store.recovery_report().records_skipped.len(), 3);
    assert_eq!(&*store.get(&hash).unwrap().unwrap(), &data[..]);
}

#[test]
fn a_full_segment_is_sealed_only_once_the_records_placed_in_it_are_done() {
    let mem = MemStorage::new();
    let store = open(&mem, placing_config());
    let len = limits::PLACED_PAYLOAD_BYTES_MIN as usize;
    let data = blob(4, len);
    let hash = Hash::of(&data);
    let mut placed = store.writer_for(hash, len as u64).unwrap();
    placed.write(&data[..1000]).unwrap();
    let hints = || {
        mem.paths()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "hint"))
            .count()
    };
    // Enough small blobs to fill the first segment and open the next.
    let others = put_many(&store, 70, 64 * 1024);
    assert!(store.stats().segment_count >= 2);
    assert_eq!(
        hints(),
        0,
        "sealed while a record placed in it was being written"
    );
    placed.write(&data[1000..]).unwrap();
    placed.commit(None).unwrap();
    assert_eq!(
        hints(),
        1,
        "the last placed record done seals the full segment"
    );
    drop(store);
    let store = open(&mem, placing_config());
    assert!(store.recovery_report().hint_files_used >= 1);
    assert_eq!(&*store.get(&hash).unwrap().unwrap(), &data[..]);
    for h in &others {
        assert!(store.get(h).unwrap().is_some());
    }
}

#[test]
fn a_record_found_bad_at_recovery_stays_out_of_the_hint_file_written_at_seal() {
    let mem = MemStorage::new();
    let config = placing_config();
    let store = open(&mem, config.clone());
    let bad = blob(30, 100_000);
    let bad_hash = store.put(&bad).unwrap();
    let good = store.put(&blob(31, 5000)).unwrap();
    drop(store);
    // Damage the first record's payload in the open segment (it has no hint file).
    let seg = first_segment(&mem);
    let payload_at = limits::SEGMENT_HEADER_BYTES + limits::RECORD_HEADER_BYTES;
    mem.corrupt(&seg, payload_at + 10, b"\xff\xfe").unwrap();
    let store = open(&mem, config.clone());
    let report = store.recovery_report().clone();
    assert!(
        matches!(
            report.records_skipped[..],
            [(_, _, format::FormatError::PayloadChecksum { .. })]
        ),
        "{report:?}"
    );
    assert!(report.dropped_anything());
    assert!(store.get(&bad_hash).unwrap().is_none());
    // Fill the segment so that it is sealed: its hint file comes from a scan of headers.
    let others = put_many(&store, 70, 64 * 1024);
    assert!(store.stats().segment_count >= 2);
    drop(store);
    let store = open(&mem, config);
    assert!(store.recovery_report().hint_files_used >= 1);
    assert!(
        store.get(&bad_hash).unwrap().is_none(),
        "the bad record came back"
    );
    assert!(store.get(&good).unwrap().is_some());
    for h in &others {
        assert!(store.get(h).unwrap().is_some());
    }
    assert!(store.scrub().unwrap().corrupt.is_empty());
}

#[test]
fn stats_and_compaction_never_deadlock_with_writers_that_create_segments() {
    // `stats` and compaction read the segment list; index updates look segments up from inside
    // an index shard's lock; creating or removing a segment writes the list. None of them may
    // wait for another while holding the list, or a waiting writer closes a cycle.
    let mem = MemStorage::new();
    let config = Config {
        segment_bytes: 4096,
        stream_buffer_bytes: 1024,
        sync: SyncMode::Never,
        ..Config::default()
    };
    let store = open(&mem, config);
    let (done, finished) = std::sync::mpsc::channel();
    let rounds = 3000u32;
    for worker in 0..3u32 {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..rounds {
                match worker {
                    0 => {
                        let _ = store.stats();
                        let _ = store.compaction_candidates();
                    }
                    1 => {
                        let h = store.put(&blob(i, 700)).unwrap();
                        if i % 2 == 0 {
                            store.delete(&h).unwrap();
                        }
                    }
                    _ => {
                        let _ = store.compact();
                    }
                }
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..3 {
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a worker is stuck: the store's locks deadlocked");
    }
}

#[test]
fn a_placed_blob_cut_by_power_loss_before_its_sync_is_absent_or_whole() {
    // `SyncMode::Never`: the commit, the table and the payload reach the disk in any part and
    // order, or not at all, until a sync.
    // A small placed blob (four writes: identity, one chunk, table, commit), so that the crash
    // model (each unsynced write kept whole, in part or not at all) keeps all of them in some
    // seeds and not in others.
    let config = Config {
        sync: SyncMode::Never,
        placed_payload_bytes_min: 1024,
        ..placing_config()
    };
    let mem = MemStorage::new();
    let store = open(&mem, config.clone());
    let len = 5000;
    let placed = blob(40, len);
    let placed_hash = Hash::of(&placed);
    let mut w = store.writer_for(placed_hash, len as u64).unwrap();
    write_in_pieces(&mut w, &placed);
    w.commit(Some(&placed_hash)).unwrap();
    let after = store.put(&blob(41, 3000)).unwrap();
    let (mut kept, mut lost) = (0, 0);
    for seed in 0..64 {
        let store = open(&mem.crash(seed), config.clone());
        match store.get(&placed_hash).unwrap() {
            Some(got) => {
                assert_eq!(&*got, &placed[..], "seed {seed}");
                kept += 1;
            }
            None => lost += 1,
        }
        if let Some(got) = store.get(&after).unwrap() {
            assert_eq!(&*got, &blob(41, 3000)[..], "seed {seed}");
        }
        assert!(store.scrub().unwrap().corrupt.is_empty(), "seed {seed}");
    }
    // Both outcomes happen: the crash model does tear the unsynced writes.
    assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");
    // Once synced, a power loss keeps it.
    store.sync().unwrap();
    for seed in 0..8 {
        let store = open(&mem.crash(seed), config.clone());
        assert_eq!(&*store.get(&placed_hash).unwrap().unwrap(), &placed[..]);
        assert!(store.get(&after).unwrap().is_some());
    }
}

/// Resident bytes of each mapping of a file under `dir`, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn resident_bytes_of_mappings_under(dir: &std::path::Path) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.to_str().unwrap();
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            if let Some(path) = current.take() {
                let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().unwrap();
                found.push((path, kib * 1024));
            }
        } else if !line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.ends_with(':'))
        {
            // A mapping's first line: address range, permissions, offset, device, inode, path.
            current = line
                .find('/')
                .map(|at| &line[at..])
                .filter(|path| path.starts_with(dir))
                .map(str::to_owned);
        }
    }
    found
}

#[cfg(target_os = "linux")]
#[test]
fn passes_over_segments_nobody_reads_leave_none_of_their_pages_resident() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        segment_bytes: 2 * 1024 * 1024,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    let len = limits::PLACED_PAYLOAD_BYTES_MIN as usize + 4096;
    for seed in 0..20 {
        let data = blob(seed, len);
        let mut w = store.writer_for(Hash::of(&data), len as u64).unwrap();
        write_in_pieces(&mut w, &data);
        w.commit(None).unwrap();
    }
    let segments = dir.path().canonicalize().unwrap().join("segments");
    let sealed: Vec<String> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint"))
        .map(|p| p.with_extension("seg").to_str().unwrap().to_owned())
        .collect();
    assert!(sealed.len() >= 2, "sealed: {sealed:?}");
    let assert_none_resident = |after: &str| {
        let mapped = resident_bytes_of_mappings_under(&segments);
        for path in &sealed {
            let mut mappings = mapped.iter().filter(|(p, _)| p == path).peekable();
            assert!(
                mappings.peek().is_some(),
                "{path} is not mapped: {mapped:?}"
            );
            let resident: u64 = mappings.map(|(_, bytes)| bytes).sum();
            assert_eq!(resident, 0, "after {after}, {path}: {mapped:?}");
        }
    };
    assert_none_resident("sealing");
    // A listing reads every header through the mappings too.
    assert_eq!(store.list(&Hash::MIN, None, usize::MAX).len(), 20);
    assert_none_resident("a listing");
    // So do a stat and a lookup by name (the index confirms a name in the record's header).
    for seed in 0..20 {
        let hash = Hash::of(&blob(seed, len));
        assert_eq!(
            store.stat(&hash).unwrap(),
            BlobStat::Present { bytes: len as u64 }
        );
    }
    assert_none_resident("a stat of every blob");
    // And a scrub, which reads every blob whole: its pages go once each blob is checked.
    let scrubbed = store.scrub().unwrap();
    assert_eq!(scrubbed.blobs_checked, 20);
    assert_none_resident("a scrub");
    // A read maps its pages again, and the bytes are the same.
    let first = blob(0, len);
    assert_eq!(&*store.get(&Hash::of(&first)).unwrap().unwrap(), &first[..]);
}

/// How many of the pages of `path` from `start` to `end` (whole pages inside the range) are in
/// the page cache, asked of the kernel with `mincore` on a fresh mapping of the file.
#[cfg(target_os = "linux")]
fn cached_pages_of(path: &Path, start: u64, end: u64) -> (usize, usize) {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only mapping of a file nothing writes while the test looks at it; only its
    // residency is asked, no byte is read.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    let page = limits::DIRECT_WRITE_ALIGN_BYTES as u64;
    let first = start.next_multiple_of(page);
    let last = end - end % page;
    let pages = ((last - first) / page) as usize;
    let mut cached = vec![0u8; pages];
    // SAFETY: the range lies inside the mapping (both ends page-aligned) and `cached` has one
    // byte per page of it.
    let ok = unsafe {
        libc::mincore(
            map.as_ptr().add(first as usize) as *mut libc::c_void,
            (last - first) as usize,
            cached.as_mut_ptr(),
        )
    };
    assert_eq!(ok, 0, "mincore: {}", std::io::Error::last_os_error());
    (cached.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

#[cfg(target_os = "linux")]
#[test]
fn a_placed_blob_goes_to_the_disk_around_the_page_cache_and_reads_back_whole() {
    // An odd length, written in uneven pieces, so that the payload starts and ends inside a
    // page and its direct writes end with a partial buffer.
    let len = 3 * 1024 * 1024 + 5000;
    let data = blob(7, len);
    let hash = Hash::of(&data);
    let mut cached_by_mode = Vec::new();
    for direct_writes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            segment_bytes: 64 * 1024 * 1024,
            direct_writes,
            ..Config::default()
        };
        let store = Store::open(dir.path(), config.clone()).unwrap();
        assert!(store.places(len as u64));
        let mut w = store.writer_for(hash, len as u64).unwrap();
        write_in_pieces(&mut w, &data);
        w.commit(Some(&hash)).unwrap();
        // The store's first record: right after the segment header, its payload after its own.
        let segment = std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        // The guard bands at either end of the payload go through the cache on purpose.
        let payload_at = limits::SEGMENT_HEADER_BYTES + limits::RECORD_HEADER_BYTES;
        let guard = limits::DIRECT_WRITE_GUARD_BYTES;
        let cached = cached_pages_of(
            &segment,
            payload_at + guard,
            payload_at + len as u64 - guard,
        );
        cached_by_mode.push((direct_writes, cached));
        assert_eq!(&*store.get(&hash).unwrap().unwrap(), &data[..]);
        drop(store);
        let store = Store::open(dir.path(), config).unwrap();
        assert_eq!(&*store.get(&hash).unwrap().unwrap(), &data[..]);
    }
    // Direct: no page between the guard bands was left in the cache. Through the cache: the
    // pages written stay there (clean, once synced), as they did before direct writes.
    let [
        (true, (direct_cached, pages)),
        (false, (buffered_cached, _)),
    ] = cached_by_mode[..]
    else {
        unreachable!()
    };
    assert_eq!(direct_cached, 0, "{cached_by_mode:?}");
    assert!(buffered_cached > pages / 2, "{cached_by_mode:?}");
}

/// Whether this process maps `path` with reads that do not read ahead (`VM_RAND_READ`, shown as
/// `rr` among the mapping's flags in `/proc/self/smaps`); `None` if it does not map it.
#[cfg(target_os = "linux")]
fn maps_without_read_ahead(path: &Path) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let path = path.to_str().unwrap();
    let mut lines = smaps.lines().skip_while(|l| !l.ends_with(path));
    lines.next()?;
    let flags = lines.find(|l| l.starts_with("VmFlags:")).unwrap();
    Some(flags.split_whitespace().any(|f| f == "rr"))
}

#[cfg(target_os = "linux")]
const MIB: u64 = 1024 * 1024;

/// A sparse 64 MiB file in `dir`, mapped, its reads set to read ahead or not. Its holes read as
/// zeros, so what is cached is what the kernel chose to read.
#[cfg(target_os = "linux")]
fn sparse_file(
    dir: &Path,
    read_ahead: bool,
) -> (
    std::path::PathBuf,
    Arc<dyn crate::storage::StorageFile>,
    Arc<dyn crate::storage::Mapping>,
) {
    let path = dir.join("sparse");
    let file = crate::storage::RealStorage.create(&path).unwrap();
    file.set_len(64 * MIB).unwrap();
    let map = file.map().unwrap();
    file.read_ahead(read_ahead);
    map.read_ahead(read_ahead);
    (path, file, map)
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_without_read_ahead_caches_the_pages_read_alone() {
    let mut cached_by_mode = Vec::new();
    for read_ahead in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (path, file, map) = sparse_file(dir.path(), read_ahead);
        // A fault through the mapping, and reads of two pages one after the other through the
        // descriptor (the kernel reads ahead of sequential reads, not of a lone small one).
        assert_eq!(map.bytes(16 * MIB + 100, 1), [0]);
        let mut page = [1u8; 4096];
        file.read_at(&mut page, 48 * MIB).unwrap();
        file.read_at(&mut page, 48 * MIB + 4096).unwrap();
        assert_eq!(page, [0u8; 4096]);
        let around_fault = cached_pages_of(&path, 15 * MIB, 17 * MIB).0;
        let around_reads = cached_pages_of(&path, 47 * MIB, 50 * MIB).0;
        cached_by_mode.push((read_ahead, around_fault, around_reads));
    }
    // Without read-ahead, the pages touched alone; with it (the kernel's default), more.
    let [(false, 1, 2), (true, fault, reads)] = cached_by_mode[..] else {
        panic!("pages cached (read ahead, around the fault, around the reads): {cached_by_mode:?}");
    };
    assert!(fault > 1 && reads > 2, "{cached_by_mode:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn asking_for_a_long_range_ahead_reads_all_of_it_without_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _file, map) = sparse_file(dir.path(), false);
    // More than the kernel reads for one request on any setting of `read_ahead_kb` up to
    // 16 MiB (this machine's is 8 MiB): asked whole, the rest would come a page per fault.
    map.will_need(4 * MIB + 100, 40 * MIB);
    let (cached, pages) = cached_pages_of(&path, 5 * MIB, 44 * MIB);
    assert_eq!(cached, pages, "pages cached of the range asked for");
}

#[cfg(target_os = "linux")]
#[test]
fn a_segment_taking_direct_writes_reads_without_read_ahead_until_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    let segment = |id: u32| segments.join(format!("{id:010}.seg"));
    let config = Config {
        segment_bytes: 4 * 1024 * 1024,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    let first = store.put(&blob(1, 512 * 1024)).unwrap();
    let names: Vec<String> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["0000000001.seg"], "segment files");
    assert_eq!(maps_without_read_ahead(&segment(1)), Some(true));
    // Fill it: the next segment is created and the first sealed.
    let mut seed = 2;
    while !segment(2).exists() {
        store.put(&blob(seed, 512 * 1024)).unwrap();
        seed += 1;
    }
    assert_eq!(maps_without_read_ahead(&segment(1)), Some(false));
    assert_eq!(maps_without_read_ahead(&segment(2)), Some(true));
    assert_eq!(
        &*store.get(&first).unwrap().unwrap(),
        &blob(1, 512 * 1024)[..]
    );
    drop(store);
    // Reopened, the unsealed segment was read by recovery and takes no direct writes: it reads
    // ahead as any other.
    let store = Store::open(
        dir.path(),
        Config {
            segment_bytes: 4 * 1024 * 1024,
            ..Config::default()
        },
    )
    .unwrap();
    assert_eq!(maps_without_read_ahead(&segment(2)), Some(false));
    drop(store);
}

#[test]
fn a_placed_record_the_file_will_not_take_direct_goes_through_the_cache_and_is_counted() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(Arc::new(mem.clone()));
    let faults = faulty.faults().clone();
    let config = Config {
        segment_bytes: 16 * 1024 * 1024,
        ..Config::default()
    };
    let store = Store::open_with(Arc::new(faulty), Path::new(DIR), config.clone()).unwrap();
    // Several direct writes' worth: counted once per record.
    let len = 3 * 1024 * 1024 + 3;
    faults.decline_direct.store(true, Ordering::Relaxed);
    let declined = store.put(&blob(1, len)).unwrap();
    assert_eq!(store.stats().direct_writes_declined, 1);
    faults.decline_direct.store(false, Ordering::Relaxed);
    let taken = store.put(&blob(2, len)).unwrap();
    assert_eq!(store.stats().direct_writes_declined, 1);
    // Both are whole, and stay so across a crash.
    let crashed = mem.crash(7);
    drop(store);
    let store = Store::open_with(Arc::new(crashed), Path::new(DIR), config).unwrap();
    assert_eq!(&*store.get(&declined).unwrap().unwrap(), &blob(1, len)[..]);
    assert_eq!(&*store.get(&taken).unwrap().unwrap(), &blob(2, len)[..]);
    assert_eq!(
        store.stats().direct_writes_declined,
        0,
        "counted since open"
    );
}

#[test]
fn after_a_failed_append_the_segment_takes_no_more_direct_writes() {
    let faulty = FaultyStorage::new(Arc::new(MemStorage::new()));
    let faults = faulty.faults().clone();
    let config = Config {
        segment_bytes: 16 * 1024 * 1024,
        ..Config::default()
    };
    let store = Store::open_with(Arc::new(faulty), Path::new(DIR), config).unwrap();
    let len = 1024 * 1024;
    let before = store.put(&blob(1, len)).unwrap();
    let direct = faults.direct_written_bytes.load(Ordering::Relaxed);
    assert!(direct > 0, "the first placed record went direct");
    // An append the disk cuts short leaves torn bytes where the next record goes.
    faults.space_left_bytes.store(100, Ordering::Relaxed);
    assert!(store.put(&blob(2, 1000)).is_err());
    faults.space_left_bytes.store(u64::MAX, Ordering::Relaxed);
    let after = store.put(&blob(3, len)).unwrap();
    assert_eq!(
        faults.direct_written_bytes.load(Ordering::Relaxed),
        direct,
        "a record over torn bytes went direct"
    );
    assert_eq!(&*store.get(&before).unwrap().unwrap(), &blob(1, len)[..]);
    assert_eq!(&*store.get(&after).unwrap().unwrap(), &blob(3, len)[..]);
}
