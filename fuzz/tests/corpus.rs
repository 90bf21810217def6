//! Replays Cairn's committed fuzz corpus through the harnesses without libFuzzer, so that a
//! plain `cargo test` catches a regression on any seed or saved crash input.

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "corpus", target]
        .iter()
        .collect();
    let mut count = 0;
    for entry in fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).expect("read corpus file");
        println!("{}", path.display());
        run(&data);
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn decode_record_corpus() {
    replay("decode_record", cairn_fuzz::decode::run);
}

#[test]
fn open_store_corpus() {
    replay("open_store", cairn_fuzz::open_store::run);
}
