//! The SIGKILL crash test: a real `crash-child` process writes to a Cairn store from several
//! threads and is killed at a random moment, over and over, in one store directory. After each
//! kill the store must open, hold every blob whose put was acknowledged (intact), hold none whose
//! delete was acknowledged, serve nothing corrupt, and scrub clean.
//!
//! Environment: `CAIRN_CRASH_KILLS` (default 20) kill points; `CAIRN_CRASH_SEED` replays a run
//! (the seed picks the kill times and the children's seeds; thread scheduling still varies).
//! On failure the store directory and the operation log are kept and their path is printed.

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_engine::{Error, Hash, Store};
use cairn_tests::{
    Expect, Expectations, LogCounts, SplitMix64, compactions, complete_len, crash_config,
    derive_seed,
};

const KILLS_DEFAULT: u64 = 20;
/// A child runs this long (uniformly chosen) before it is killed.
const RUN_MS_MIN: u64 = 30;
const RUN_MS_MAX: u64 = 300;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

/// What one round found, for its summary line.
struct RoundFindings {
    present: u64,
    torn_tails: usize,
    hint_files_used: u64,
    segments_scanned: u64,
    temp_files_removed: u64,
}

/// Opens the store and checks it against what the log says must hold.
fn check_store(dir: &Path, expectations: &Expectations) -> Result<RoundFindings, String> {
    let store = Store::open(dir, crash_config()).map_err(|e| format!("open failed: {e}"))?;
    let report = store.recovery_report().clone();
    if !report.unreadable_segments.is_empty() {
        return Err(format!(
            "recovery found unreadable segments after a process kill: {:?}",
            report.unreadable_segments
        ));
    }
    let intact = |hash: &Hash, blob: &[u8]| -> Result<(), String> {
        let actual = Hash::of(blob);
        if actual != *hash {
            return Err(format!(
                "get({hash}) returned {} bytes that hash to {actual}",
                blob.len()
            ));
        }
        Ok(())
    };
    for (hash, expect) in &expectations.by_hash {
        let got = store.get(hash);
        match (expect, got) {
            (Expect::Present | Expect::Either, Ok(Some(blob))) => intact(hash, &blob)?,
            (Expect::Absent | Expect::Either, Ok(None)) => {}
            (Expect::Present, Ok(None)) => {
                return Err(format!("acknowledged put of {hash} is lost"));
            }
            (Expect::Absent, Ok(Some(blob))) => {
                return Err(format!(
                    "acknowledged delete of {hash} is undone: get returned {} bytes",
                    blob.len()
                ));
            }
            (_, Err(e)) => return Err(format!("get({hash}) (expected {expect:?}) failed: {e}")),
        }
    }
    let listed = store.list(&Hash::MIN, None, usize::MAX);
    for hash in &listed {
        if !expectations.by_hash.contains_key(hash) {
            return Err(format!("{hash} is stored but no child ever put it"));
        }
        match store.get(hash) {
            Ok(Some(blob)) => intact(hash, &blob)?,
            Ok(None) => return Err(format!("{hash} is listed but get finds nothing")),
            Err(e) => return Err(format!("get({hash}) of a listed blob failed: {e}")),
        }
    }
    let scrub = store
        .scrub()
        .map_err(|e: Error| format!("scrub failed: {e}"))?;
    if !scrub.corrupt.is_empty() {
        return Err(format!("scrub found corrupt blobs: {:?}", scrub.corrupt));
    }
    Ok(RoundFindings {
        present: listed.len() as u64,
        torn_tails: report.torn_tails.len(),
        hint_files_used: report.hint_files_used,
        segments_scanned: report.segments_scanned,
        temp_files_removed: report.temp_files_removed,
    })
}

/// Runs one child for `run`, then kills it with SIGKILL.
fn run_and_kill(
    dir: &Path,
    log: &Path,
    stderr: &Path,
    child_seed: u64,
    run: Duration,
) -> Result<(), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
        .arg(dir)
        .arg(log)
        .arg(child_seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(stderr).map_err(|e| format!("create {stderr:?}: {e}"))?)
        .spawn()
        .map_err(|e| format!("spawn crash-child: {e}"))?;
    thread::sleep(run);
    let early = child
        .try_wait()
        .map_err(|e| format!("wait for crash-child: {e}"))?;
    let status = match early {
        Some(status) => status,
        None => {
            // SIGKILL on Unix.
            child.kill().map_err(|e| format!("kill crash-child: {e}"))?;
            child
                .wait()
                .map_err(|e| format!("wait for crash-child: {e}"))?
        }
    };
    if status.signal() != Some(9) {
        let err = fs::read_to_string(stderr).unwrap_or_default();
        return Err(format!(
            "crash-child ended by itself ({status}) instead of by the kill; its stderr:\n{err}"
        ));
    }
    Ok(())
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    let kills = env_u64("CAIRN_CRASH_KILLS").unwrap_or(KILLS_DEFAULT);
    let seed = env_u64("CAIRN_CRASH_SEED").unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    println!("crash test: {kills} kills, seed {seed} (replay with CAIRN_CRASH_SEED={seed})");
    let mut work = tempfile::Builder::new()
        .prefix("cairn-crash-")
        .tempdir()
        .expect("temporary directory");
    let dir: PathBuf = work.path().join("store");
    let log: PathBuf = work.path().join("ops.log");
    let mut rng = SplitMix64::new(seed);
    let mut expectations = Expectations::default();
    let mut log_read = 0usize;
    let started = Instant::now();
    let mut totals = LogCounts::default();

    for round in 1..=kills {
        let child_seed = derive_seed(seed, round);
        let run = Duration::from_millis(rng.between(RUN_MS_MIN, RUN_MS_MAX));
        let stderr = work.path().join(format!("child-{round}.stderr"));
        let outcome = run_and_kill(&dir, &log, &stderr, child_seed, run).and_then(|()| {
            // A child killed before it created the log leaves none.
            let text = match fs::read_to_string(&log) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                read => read.map_err(|e| format!("read log: {e}"))?,
            };
            let end = complete_len(&text);
            let round_text = &text[log_read.min(end)..end];
            let counts = expectations.apply(round_text);
            let compacted = compactions(round_text);
            log_read = end;
            let findings = check_store(&dir, &expectations)?;
            Ok((counts, compacted, findings))
        });
        match outcome {
            Ok((counts, (compactions, segments_compacted), f)) => {
                totals.acked_puts += counts.acked_puts;
                totals.acked_deletes += counts.acked_deletes;
                totals.in_flight += counts.in_flight;
                println!(
                    "round {round:>3}/{kills}: ran {:>3} ms (child seed {child_seed}): \
                     {} acked puts, {} acked deletes, {} in flight, {} compactions \
                     ({} segments removed); store holds {} blobs; recovery: {} torn tails, \
                     {} hint files used, {} segments scanned, {} temp files removed",
                    run.as_millis(),
                    counts.acked_puts,
                    counts.acked_deletes,
                    counts.in_flight,
                    compactions,
                    segments_compacted,
                    f.present,
                    f.torn_tails,
                    f.hint_files_used,
                    f.segments_scanned,
                    f.temp_files_removed,
                );
            }
            Err(problem) => {
                work.disable_cleanup(true);
                panic!(
                    "round {round} (seed {seed}, child seed {child_seed}): {problem}\n\
                     store and log kept in {}",
                    work.path().display()
                );
            }
        }
    }
    println!(
        "crash test passed: {kills} kills in {:.1} s; {} acked puts, {} acked deletes, {} \
         operations in flight at a kill",
        started.elapsed().as_secs_f64(),
        totals.acked_puts,
        totals.acked_deletes,
        totals.in_flight,
    );
}
