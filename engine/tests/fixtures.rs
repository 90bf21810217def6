//! Old-format fixtures: a store written by format version 1, kept in the repository, must stay
//! readable by every later version. `write_version_1_fixture` made it (run it with `--ignored`
//! only when adding a fixture for a new version, into a new directory).

use std::path::{Path, PathBuf};

use cairn_engine::{Config, Hash, Store, SyncMode};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-store")
}

fn config() -> Config {
    Config {
        segment_bytes: 8 * 1024,
        sync: SyncMode::Always,
        ..Config::default()
    }
}

/// The blobs the fixture holds: small ones in shared segments, one in a dedicated segment.
fn contents() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..40u32)
        .map(|i| {
            format!("cairn fixture blob {i}")
                .repeat(i as usize + 1)
                .into_bytes()
        })
        .collect();
    out.push(Vec::new());
    out.push((0..20_000u32).map(|i| (i % 251) as u8).collect());
    out
}

fn deleted() -> Vec<u8> {
    b"cairn fixture: deleted".to_vec()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn reads_version_1_store() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let store = Store::open(dir.path(), config()).unwrap();
    let report = store.recovery_report();
    assert!(report.hint_files_used >= 1, "{report:?}");
    assert!(
        report.unreadable_segments.is_empty() && report.torn_tails.is_empty(),
        "{report:?}"
    );
    for data in contents() {
        let got = store
            .get(&Hash::of(&data))
            .unwrap()
            .expect("fixture blob present");
        assert_eq!(&*got, &data[..]);
    }
    assert!(store.get(&Hash::of(&deleted())).unwrap().is_none());
    assert!(store.scrub().unwrap().corrupt.is_empty());
    assert_eq!(store.stats().blob_count, contents().len() as u64);
}

#[test]
fn a_version_1_store_takes_new_records_in_new_segments_and_keeps_its_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let config = Config {
        segment_bytes: 1024 * 1024,
        ..config()
    };
    let store = Store::open(dir.path(), config.clone()).unwrap();
    // A small record, and one placed before its bytes arrive (record version 2).
    let small = store.put(b"written by version 2").unwrap();
    let placed_bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let placed = Hash::of(&placed_bytes);
    let mut w = store.writer_for(placed, placed_bytes.len() as u64).unwrap();
    w.write(&placed_bytes).unwrap();
    w.commit(Some(&placed)).unwrap();
    drop(store);
    // Version 1 segments are never appended to: their bytes are the fixture's.
    for entry in std::fs::read_dir(fixture_dir().join("segments")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "seg") {
            let now = std::fs::read(dir.path().join("segments").join(entry.file_name()));
            assert!(
                now.unwrap() == std::fs::read(entry.path()).unwrap(),
                "{:?} changed",
                entry.file_name()
            );
        }
    }
    let store = Store::open(dir.path(), config).unwrap();
    let report = store.recovery_report();
    assert!(!report.dropped_anything(), "{report:?}");
    for data in contents() {
        assert_eq!(&*store.get(&Hash::of(&data)).unwrap().unwrap(), &data[..]);
    }
    assert_eq!(
        &*store.get(&small).unwrap().unwrap(),
        b"written by version 2"
    );
    assert_eq!(&*store.get(&placed).unwrap().unwrap(), &placed_bytes[..]);
    assert!(store.scrub().unwrap().corrupt.is_empty());
}

#[test]
#[ignore = "writes the fixture; run by hand for a new format version"]
fn write_version_1_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, config()).unwrap();
    let gone = store.put(&deleted()).unwrap();
    for data in contents() {
        store.put(&data).unwrap();
    }
    store.delete(&gone).unwrap();
    drop(store);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    std::fs::write(dir.join("tmp/.keep"), b"").unwrap();
}
