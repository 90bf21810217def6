//! The engine's demo: opens a store (a fresh directory unless one is given), writes blobs of
//! mixed sizes from several threads with every put durable, reads them all back, deletes a
//! third, compacts, reopens, scrubs, and prints what it measured.
//!
//! `cargo run --release -p cairn-engine --example demo [-- DIR]`

use std::path::PathBuf;
use std::time::Instant;

use cairn_engine::{Config, Hash, Store};

const WRITER_THREAD_COUNT: u32 = 8;
const SMALL_BLOB_COUNT_PER_THREAD: u32 = 500;
const SMALL_BLOB_BYTES: usize = 4096;
const LARGE_BLOB_COUNT: u32 = 32;
const LARGE_BLOB_BYTES: usize = 1024 * 1024;
const STREAMED_BLOB_BYTES: usize = 96 * 1024 * 1024;

fn contents(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id())),
    };
    println!("store: {}", dir.display());
    // Small segments, so that the demo fills and seals several and compaction has work to do.
    let config = Config {
        segment_bytes: 4 * 1024 * 1024,
        ..Config::default()
    };
    let store = Store::open(&dir, config.clone())?;

    let started = Instant::now();
    let small: Vec<Hash> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITER_THREAD_COUNT)
            .map(|t| {
                let store = store.clone();
                s.spawn(move || {
                    (0..SMALL_BLOB_COUNT_PER_THREAD)
                        .map(|i| store.put(&contents(t * 1_000_000 + i, SMALL_BLOB_BYTES)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .flatten()
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "durable 4 KiB puts, {WRITER_THREAD_COUNT} threads: {} blobs in {seconds:.2} s = {:.0} puts/s",
        small.len(),
        small.len() as f64 / seconds
    );

    let started = Instant::now();
    let large: Vec<Hash> = (0..LARGE_BLOB_COUNT)
        .map(|i| store.put(&contents(7_000_000 + i, LARGE_BLOB_BYTES)))
        .collect::<Result<_, _>>()?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = u64::from(LARGE_BLOB_COUNT) * LARGE_BLOB_BYTES as u64;
    println!(
        "durable 1 MiB puts, 1 thread: {:.0} MB/s",
        mb_per_s(bytes, seconds)
    );

    let started = Instant::now();
    let mut writer = store.writer();
    let piece = contents(9, 1024 * 1024);
    for _ in 0..STREAMED_BLOB_BYTES / piece.len() {
        writer.write(&piece)?;
    }
    let streamed = writer.commit(None)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "streamed {} MiB blob: {:.0} MB/s",
        STREAMED_BLOB_BYTES >> 20,
        mb_per_s(STREAMED_BLOB_BYTES as u64, seconds)
    );

    let started = Instant::now();
    let mut read_bytes = 0u64;
    for h in small.iter().chain(&large).chain(std::iter::once(&streamed)) {
        let blob = store.get(h)?.ok_or("a stored blob is missing")?;
        read_bytes += blob.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "read back every blob, checksums checked: {:.0} MB/s",
        mb_per_s(read_bytes, seconds)
    );

    for h in small.iter().step_by(3) {
        store.delete(h)?;
    }
    let before = store.stats();
    let report = store.compact()?;
    let after = store.stats();
    println!(
        "deleted {} blobs; compaction removed {} segments, moved {} blobs; dead bytes {} -> {}",
        small.len().div_ceil(3),
        report.segments_removed,
        report.blobs_moved,
        before.dead_bytes,
        after.dead_bytes
    );
    drop(store);

    let started = Instant::now();
    let store = Store::open(&dir, config)?;
    println!(
        "reopened in {:.1} ms: {:?}",
        started.elapsed().as_secs_f64() * 1e3,
        store.recovery_report()
    );
    let scrub = store.scrub()?;
    println!(
        "scrub: {} blobs, {} bytes checked, {} corrupt",
        scrub.blobs_checked,
        scrub.bytes_checked,
        scrub.corrupt.len()
    );
    if !scrub.corrupt.is_empty() {
        return Err("scrub found corrupt blobs".into());
    }
    let stats = store.stats();
    println!(
        "stats: {} blobs, {} live bytes, {} dead bytes, {} segments, index ~{:.1} bytes/blob",
        stats.blob_count,
        stats.live_bytes,
        stats.dead_bytes,
        stats.segment_count,
        stats.index_heap_bytes as f64 / stats.blob_count.max(1) as f64
    );
    drop(store);
    if std::env::args_os().nth(1).is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
