//! Helpers shared by the whole-system tests: the store configuration and deterministic blob
//! contents of the crash child, a small seeded random number generator, and the operation log
//! that the crash child writes and the crash test checks the store against; [`http`], a
//! small client of the HTTP front; and [`s3`], a SigV4-signing client of the S3 front.

pub mod http;
pub mod s3;

use std::collections::HashMap;

use cairn_engine::{Config, Hash, SyncMode};

/// Shared segments of the crash child: small, so that they fill, seal and compact often.
pub const CRASH_SEGMENT_BYTES: u64 = 256 * 1024;

/// How the crash child (and the test that checks its work) opens the store.
pub fn crash_config() -> Config {
    Config {
        segment_bytes: CRASH_SEGMENT_BYTES,
        sync: SyncMode::Always,
        compact_live_ratio_below: 0.5,
        // Streamed blobs above this spill into a dedicated segment as they arrive.
        stream_buffer_bytes: 64 * 1024,
        ..Config::default()
    }
}

pub use cairn_core::testing::SplitMix64;

/// The `cairn` binary the process tests run: `CAIRN_BIN`, or the one beside the test binary
/// (`target/debug/cairn`, which `scripts/test` builds first).
pub fn cairn_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return std::path::PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug/deps/<test>")
        .join("cairn");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p cairn-node --bin cairn` (scripts/test does) or set CAIRN_BIN",
        path.display()
    );
    path
}

/// Derives an independent seed from a seed and a label.
pub fn derive_seed(seed: u64, label: u64) -> u64 {
    SplitMix64::new(seed ^ label.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64()
}

/// Bytes at the start of every blob of at least this size that name its writer, so that blobs
/// of different writers (or rounds) never share a hash.
pub const IDENTITY_BYTES: usize = 20;

/// The contents of blob number `counter` of writer `thread` in the child run with `seed`:
/// `len` bytes, the same every time. Blobs of `IDENTITY_BYTES` or more begin with
/// (seed, thread, counter) and so are unique; shorter ones may repeat.
pub fn blob_contents(seed: u64, thread: u32, counter: u64, len: usize) -> Vec<u8> {
    let mut key = [0u8; IDENTITY_BYTES];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&thread.to_le_bytes());
    key[12..20].copy_from_slice(&counter.to_le_bytes());
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&key)
        .finalize_xof()
        .fill(&mut out);
    if len >= IDENTITY_BYTES {
        out[..IDENTITY_BYTES].copy_from_slice(&key);
    }
    out
}

/// What an operation log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The operation is about to start.
    Begin,
    /// The operation returned `Ok`.
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Delete,
}

/// One line of the operation log: `begin put <hash>`, `ack delete <hash>`, ...
pub fn log_line(phase: Phase, op: Op, hash: &Hash) -> String {
    let phase = match phase {
        Phase::Begin => "begin",
        Phase::Ack => "ack",
    };
    let op = match op {
        Op::Put => "put",
        Op::Delete => "delete",
    };
    format!("{phase} {op} {hash}\n")
}

/// Parses a log line (without its newline). Lines about other things (compactions, child
/// starts) are `None`.
pub fn parse_line(line: &str) -> Option<(Phase, Op, Hash)> {
    let mut words = line.split(' ');
    let phase = match words.next()? {
        "begin" => Phase::Begin,
        "ack" => Phase::Ack,
        _ => return None,
    };
    let op = match words.next()? {
        "put" => Op::Put,
        "delete" => Op::Delete,
        _ => return None,
    };
    let hash = words.next()?.parse().ok()?;
    words.next().is_none().then_some((phase, op, hash))
}

/// What the log says must be true of a hash after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A put was acknowledged and no delete began since: the blob must be there, intact.
    Present,
    /// A delete was acknowledged and no put began since: the blob must be gone.
    Absent,
    /// An operation was in flight: either is fine, but if the blob is there it must be intact.
    Either,
}

/// Counts of one stretch of log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    pub acked_puts: u64,
    pub acked_deletes: u64,
    /// Operations begun and not acknowledged.
    pub in_flight: u64,
}

/// Folds log lines into what must hold of each hash. Operations on one hash must come from one
/// writer at a time, so that the log orders them.
#[derive(Debug, Default)]
pub struct Expectations {
    pub by_hash: HashMap<Hash, Expect>,
}

impl Expectations {
    /// Applies the complete lines of `text` (a trailing partial line is ignored) and counts
    /// what they did.
    pub fn apply(&mut self, text: &str) -> LogCounts {
        let mut counts = LogCounts::default();
        let mut pending: HashMap<(Op, Hash), u64> = HashMap::new();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        for line in complete.lines() {
            let Some((phase, op, hash)) = parse_line(line) else {
                continue;
            };
            let state = self.by_hash.entry(hash).or_insert(Expect::Either);
            *state = match (phase, op, *state) {
                // A put never removes anything.
                (Phase::Begin, Op::Put, Expect::Present) => Expect::Present,
                (Phase::Begin, _, _) => Expect::Either,
                (Phase::Ack, Op::Put, _) => Expect::Present,
                (Phase::Ack, Op::Delete, _) => Expect::Absent,
            };
            match phase {
                Phase::Begin => *pending.entry((op, hash)).or_default() += 1,
                Phase::Ack => {
                    if let Some(n) = pending.get_mut(&(op, hash)) {
                        *n = n.saturating_sub(1);
                    }
                    match op {
                        Op::Put => counts.acked_puts += 1,
                        Op::Delete => counts.acked_deletes += 1,
                    }
                }
            }
        }
        counts.in_flight = pending.values().sum();
        counts
    }
}

/// Compactions that completed in `text`, and the segments they removed in all.
pub fn compactions(text: &str) -> (u64, u64) {
    let mut done = (0, 0);
    for line in text.lines() {
        let mut words = line.split(' ');
        if (words.next(), words.next()) == (Some("ack"), Some("compact")) {
            done.0 += 1;
            done.1 += words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    done
}

/// Where the complete lines of `text` end: the bytes after it are a line still being written.
pub fn complete_len(text: &str) -> usize {
    text.rfind('\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let h = Hash::of(b"x");
        for phase in [Phase::Begin, Phase::Ack] {
            for op in [Op::Put, Op::Delete] {
                let line = log_line(phase, op, &h);
                assert_eq!(parse_line(line.trim_end()), Some((phase, op, h)));
            }
        }
        assert_eq!(parse_line("begin compact"), None);
        assert_eq!(parse_line("ack put 12"), None);
    }

    #[test]
    fn expectations_follow_the_last_operation() {
        let (a, b, c, d) = (
            Hash::of(b"a"),
            Hash::of(b"b"),
            Hash::of(b"c"),
            Hash::of(b"d"),
        );
        let mut log = String::new();
        for (phase, op, h) in [
            (Phase::Begin, Op::Put, a),
            (Phase::Ack, Op::Put, a),
            (Phase::Begin, Op::Put, b),
            (Phase::Ack, Op::Put, b),
            (Phase::Begin, Op::Delete, b),
            (Phase::Ack, Op::Delete, b),
            (Phase::Begin, Op::Put, c),
            (Phase::Ack, Op::Put, c),
            (Phase::Begin, Op::Delete, c),
            (Phase::Begin, Op::Put, a),
            (Phase::Begin, Op::Put, d),
        ] {
            log.push_str(&log_line(phase, op, &h));
        }
        log.push_str("ack put ");
        let mut e = Expectations::default();
        let counts = e.apply(&log);
        assert_eq!(
            e.by_hash[&a],
            Expect::Present,
            "re-putting keeps it present"
        );
        assert_eq!(e.by_hash[&b], Expect::Absent);
        assert_eq!(e.by_hash[&c], Expect::Either);
        assert_eq!(e.by_hash[&d], Expect::Either);
        assert_eq!(counts.acked_puts, 3);
        assert_eq!(counts.acked_deletes, 1);
        assert_eq!(counts.in_flight, 3);
        assert_eq!(complete_len(&log), log.len() - "ack put ".len());
    }

    #[test]
    fn compactions_are_counted() {
        let log = "begin compact\nack compact 2 10\nbegin compact\nack compact 0 0\nopened\n";
        assert_eq!(compactions(log), (2, 2));
    }

    #[test]
    fn contents_are_deterministic_and_disjoint() {
        assert_eq!(blob_contents(1, 2, 3, 100), blob_contents(1, 2, 3, 100));
        assert_ne!(blob_contents(1, 2, 3, 100), blob_contents(1, 3, 3, 100));
        assert_ne!(blob_contents(1, 2, 3, 100), blob_contents(2, 2, 3, 100));
        assert_ne!(blob_contents(1, 2, 3, 100), blob_contents(1, 2, 4, 100));
        assert_eq!(blob_contents(1, 2, 3, 0), Vec::<u8>::new());
        assert_eq!(blob_contents(1, 2, 3, 7).len(), 7);
    }
}
