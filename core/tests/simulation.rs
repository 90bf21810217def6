//! Deterministic simulation of a Cairn cluster, built from `cairn-core` alone: six nodes run
//! the state machines that ship (the healer and scrubber of `heal`, the failure detector of
//! `membership`, the put and delete coordinators of `coordinator`, and hinted handoff's queue
//! and plan of `hints`) on a virtual clock, under clients and injected faults (lost, late,
//! duplicated and reordered messages; one-way and two-way partitions; crashes that lose unsynced
//! writes; corrupt copies; layout changes). After the faults stop the cluster must converge,
//! every hint must have been delivered, and the history of acknowledged operations must hold:
//! no acknowledged blob lost, no deleted blob back, nothing corrupt served. See `sim/world.rs`
//! for the model.
//!
//! Environment: `CAIRN_SIM_SEEDS` (default 2000) seeds are run, from `CAIRN_SIM_FIRST_SEED`
//! (default 0); `CAIRN_SIM_SEED=<n>` replays one seed and prints its trace
//! (`cargo test -p cairn-core --test simulation -- --nocapture`).

mod sim;

use std::time::Instant;

use sim::world::{RunStats, World};

/// Seeds run when `CAIRN_SIM_SEEDS` is not set.
const SEEDS_DEFAULT: u64 = 2000;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
    )
}

fn replay_hint(seed: u64) -> String {
    format!(
        "replay with: CAIRN_SIM_SEED={seed} cargo test -p cairn-core --test simulation -- \
         --nocapture"
    )
}

/// Runs one seed; a failed check or a panic in the node's code names the seed.
fn run_seed(seed: u64, trace: bool) -> RunStats {
    let result = std::panic::catch_unwind(|| World::new(seed, trace).run());
    match result {
        Ok(Ok(stats)) => stats,
        Ok(Err(reason)) => panic!("seed {seed}: {reason}\n{}", replay_hint(seed)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} panicked: {message}\n{}", replay_hint(seed))
        }
    }
}

#[test]
fn simulated_clusters_keep_acknowledged_blobs_and_converge() {
    if let Some(seed) = env_u64("CAIRN_SIM_SEED") {
        let stats = run_seed(seed, true);
        println!("seed {seed} passed: {stats:?}");
        return;
    }
    let seeds = env_u64("CAIRN_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let first = env_u64("CAIRN_SIM_FIRST_SEED").unwrap_or(0);
    let started = Instant::now();
    assert_eq!(
        run_seed(first, false),
        run_seed(first, false),
        "seed {first} ran differently twice"
    );
    let mut total = RunStats::default();
    for seed in first..first + seeds {
        total.add(&run_seed(seed, false));
    }
    let elapsed = Instant::now() - started;
    println!("{seeds} seeds in {elapsed:.1?}: {total:?}");
}
