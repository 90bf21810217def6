//! `crash-child`: the process the crash test kills. It opens a Cairn store with
//! `SyncMode::Always` and small segments and, from several threads, forever puts blobs of varied
//! sizes (some streamed, some large enough for a dedicated segment), deletes some of them and
//! compacts, logging each operation before it starts and after it returns `Ok`.
//!
//! Usage: `crash-child <store dir> <log file> <seed>`.
//!
//! Log lines are `begin put <hash>`, `ack put <hash>`, `begin delete <hash>`,
//! `ack delete <hash>` (plus `begin compact`, `ack compact <segments removed> <blobs moved>`,
//! and `start <seed>` / `opened` when the child starts), each appended with a single
//! `write` on a file opened with `O_APPEND`, so lines never interleave; the page cache keeps them
//! across a SIGKILL, so no fsync is needed. Any error from the store ends the process with exit
//! status 3 (a panic, 4) and a message on stderr: the child must only ever die by the signal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::exit;
use std::sync::Arc;
use std::thread;

use cairn_engine::{Hash, Store};
use cairn_tests::{
    IDENTITY_BYTES, Op, Phase, SplitMix64, blob_contents, crash_config, derive_seed, log_line,
};

/// Writer threads.
const THREADS: u32 = 4;
/// Thread 0 compacts every this many operations.
const COMPACT_EVERY_OPS: u64 = 8;
/// Percent of operations that delete one of the thread's live blobs (when it has any).
const DELETE_PERCENT: u64 = 30;
/// Percent of puts that go through the streaming writer.
const STREAM_PERCENT: u64 = 25;

fn die(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("crash-child: {what}: {e}");
    exit(3);
}

struct Log(File);

impl Log {
    fn line(&self, text: &str) {
        // One write(2) per line: O_APPEND makes each land whole at the end of the file.
        if let Err(e) = (&self.0).write_all(text.as_bytes()) {
            die("write log", e);
        }
    }

    fn op(&self, phase: Phase, op: Op, hash: &Hash) {
        self.line(&log_line(phase, op, hash));
    }
}

/// A blob size: mostly small, some up to a quarter segment, some over it (dedicated segments),
/// up to 300 KiB. Only thread 0 writes blobs too short to carry their writer's identity.
fn blob_len(rng: &mut SplitMix64, thread: u32) -> usize {
    let roll = rng.below(100);
    let len = match roll {
        0..10 => rng.below(IDENTITY_BYTES as u64),
        10..50 => rng.between(IDENTITY_BYTES as u64, 4096),
        50..75 => rng.between(4096, 64 * 1024),
        75..90 => rng.between(64 * 1024, 128 * 1024),
        _ => rng.between(128 * 1024, 300 * 1024),
    } as usize;
    if thread != 0 && len < IDENTITY_BYTES {
        IDENTITY_BYTES + len
    } else {
        len
    }
}

fn put(store: &Store, rng: &mut SplitMix64, bytes: &[u8]) -> Hash {
    if rng.below(100) >= STREAM_PERCENT {
        return store.put(bytes).unwrap_or_else(|e| die("put", e));
    }
    let mut writer = store.writer();
    let mut rest = bytes;
    while !rest.is_empty() {
        let piece = (rng.between(1, 32 * 1024) as usize).min(rest.len());
        writer
            .write(&rest[..piece])
            .unwrap_or_else(|e| die("stream write", e));
        rest = &rest[piece..];
    }
    writer
        .commit(Some(&Hash::of(bytes)))
        .unwrap_or_else(|e| die("stream commit", e))
}

fn worker(store: Store, log: Arc<Log>, seed: u64, thread: u32) {
    let mut rng = SplitMix64::new(derive_seed(seed, u64::from(thread)));
    let mut live: Vec<Hash> = Vec::new();
    for counter in 0u64.. {
        if thread == 0 && counter % COMPACT_EVERY_OPS == COMPACT_EVERY_OPS - 1 {
            log.line("begin compact\n");
            let done = store.compact().unwrap_or_else(|e| die("compact", e));
            log.line(&format!(
                "ack compact {} {}\n",
                done.segments_removed, done.blobs_moved
            ));
            continue;
        }
        if !live.is_empty() && rng.below(100) < DELETE_PERCENT {
            let hash = live.swap_remove(rng.below(live.len() as u64) as usize);
            log.op(Phase::Begin, Op::Delete, &hash);
            store.delete(&hash).unwrap_or_else(|e| die("delete", e));
            log.op(Phase::Ack, Op::Delete, &hash);
            continue;
        }
        let len = blob_len(&mut rng, thread);
        let bytes = blob_contents(seed, thread, counter, len);
        let hash = Hash::of(&bytes);
        log.op(Phase::Begin, Op::Put, &hash);
        let stored = put(&store, &mut rng, &bytes);
        if stored != hash {
            die("put", format!("stored as {stored}, expected {hash}"));
        }
        log.op(Phase::Ack, Op::Put, &hash);
        if !live.contains(&hash) {
            live.push(hash);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, log_path, seed] = &args[..] else {
        eprintln!("usage: crash-child <store dir> <log file> <seed>");
        exit(2);
    };
    // A panic in any thread ends the whole process, so that the test notices.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        exit(4);
    }));
    let seed: u64 = seed.parse().unwrap_or_else(|e| die("seed", e));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(PathBuf::from(log_path))
        .unwrap_or_else(|e| die("open log", e));
    let log = Arc::new(Log(log));
    log.line(&format!("start {seed}\n"));
    let store = Store::open(dir, crash_config()).unwrap_or_else(|e| die("open store", e));
    log.line("opened\n");
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (store, log) = (store.clone(), log.clone());
            thread::spawn(move || worker(store, log, seed, thread))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    die("writers", "stopped");
}
