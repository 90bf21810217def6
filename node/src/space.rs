//! The node's disk: compaction by itself, paced ([`compaction_loop`]), a node that left the
//! layout saying once that it holds nothing, and the memory its segment mappings hold
//! ([`mapped_memory_loop`]). What the node knows of its disk is
//! `local::space::SpaceState`.
//!
//! Compaction is the engine's (`Store::compaction_candidates`, `Store::compact_segment`); this
//! module decides when and how fast. Every `compaction_interval_ms` a round seals the open
//! segment if enough of it is dead, then rewrites each candidate segment once, sleeping after
//! each so that live bytes are copied at `compaction_bytes_per_sec` at most. Deleted and
//! overwritten blobs, copies handed off to their owners and tombstones the healer dropped
//! after their grace period all become dead bytes, and all go back to the disk this way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_engine::{CompactionReport, Error as EngineError};

use crate::limits::{LEAVING_CHECK_INTERVAL_MS, MAPPED_RESIDENT_CHECK_MS};
use crate::local;
use crate::state::State;

/// The size of the disk the node's data directory is on (the engine's capacity if smaller).
pub(crate) fn disk_total_bytes(state: &State) -> u64 {
    let fs = local::fs_space(&state.data_dir).map_or(u64::MAX, |s| s.total_bytes);
    fs.min(state.store.stats().capacity_bytes)
}

/// Runs a compaction round every `compaction_interval_ms` (never when it is 0), and every
/// `LEAVING_CHECK_INTERVAL_MS` on a node out of the layout, which empties itself.
pub(crate) async fn compaction_loop(state: Arc<State>) {
    let interval_ms = state.space.settings.compaction_interval_ms;
    let mut failing = false;
    loop {
        let leaving = state.routing().layout.node_index(&state.id).is_none();
        let pause_ms = match (interval_ms, leaving) {
            (0, false) => None,
            (0, true) => Some(LEAVING_CHECK_INTERVAL_MS),
            (i, true) => Some(i.min(LEAVING_CHECK_INTERVAL_MS)),
            (i, false) => Some(i),
        };
        let pause = async {
            match pause_ms {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = pause => {}
            _ = state.space.wake.notified() => {}
        }
        if interval_ms == 0 && !leaving {
            continue;
        }
        match compaction_round(&state).await {
            Ok(report) => {
                if report.segments_removed > 0 {
                    tracing::info!(
                        segments = report.segments_removed,
                        reclaimed_bytes = report.bytes_reclaimed,
                        moved_bytes = report.bytes_moved,
                        "compaction gave space back"
                    );
                }
                failing = false;
            }
            Err(e) => {
                state
                    .space
                    .compaction_errors
                    .fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "compaction failed; retrying every round");
                }
                failing = true;
            }
        }
        let drained = drained(&state);
        let before = state.space.set_drained(drained);
        if drained && !before {
            tracing::warn!(
                data_dir = %state.data_dir.display(),
                "this node is out of the layout and holds nothing: stop it and delete its data directory"
            );
        }
    }
}

/// One round: seal the open segment if enough of it is dead, then rewrite each candidate once,
/// paced at `compaction_bytes_per_sec`.
pub(crate) async fn compaction_round(state: &Arc<State>) -> Result<CompactionReport, EngineError> {
    let dead_bytes_min = state.space.segment_bytes / 4;
    let s = state.clone();
    crate::task::spawn_blocking(move || s.store.seal_open_segment_if_dead(dead_bytes_min))
        .await
        .expect("sealing does not panic")?;
    let mut total = CompactionReport::default();
    let rate = state.space.settings.compaction_bytes_per_sec.max(1);
    for id in state.store.compaction_candidates() {
        let s = state.clone();
        let report = crate::task::spawn_blocking(move || s.store.compact_segment(id))
            .await
            .expect("compaction does not panic")?;
        let Some(report) = report else { continue };
        state
            .space
            .compaction_reclaimed_bytes
            .fetch_add(report.bytes_reclaimed, Ordering::Relaxed);
        let pause = Duration::from_secs_f64(report.bytes_moved as f64 / rate as f64);
        total.segments_removed += report.segments_removed;
        total.bytes_reclaimed += report.bytes_reclaimed;
        total.bytes_moved += report.bytes_moved;
        total.blobs_moved += report.blobs_moved;
        tokio::time::sleep(pause).await;
    }
    state
        .space
        .compaction_rounds
        .fetch_add(1, Ordering::Relaxed);
    Ok(total)
}

/// Whether this node is out of the layout and holds nothing any more: no blob, no segment
/// file, no metadata, no hint. It may then be stopped and its data directory deleted.
fn drained(state: &State) -> bool {
    let routing = state.routing();
    if routing.layout.node_index(&state.id).is_some() {
        return false;
    }
    let stats = state.store.stats();
    stats.blob_count == 0
        && stats.segment_count == 0
        && state.hints.lock().pending() == 0
        && state.meta.store.partitions().is_ok_and(|p| p.is_empty())
        && state.healing.healer.lock().settled()
}

/// Keeps the memory of the engine's segment mappings under `mapped_resident_bytes_max`. Every
/// `MAPPED_RESIDENT_CHECK_MS` it reads how much of the process's resident memory is file pages
/// (`RssFile`: in a node, the mapped segments); past the bound it has the engine let go of the
/// pages of every segment no read touched since the check before. They stay in the page cache,
/// so a read of a recent blob costs a minor fault. Off when the bound is 0, or where `/proc`
/// is not Linux's.
pub(crate) async fn mapped_memory_loop(state: Arc<State>) {
    let bound = state.space.settings.mapped_resident_bytes_max;
    if bound == 0 {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(MAPPED_RESIDENT_CHECK_MS)).await;
        let Some(resident) = resident_file_bytes() else {
            return;
        };
        state
            .space
            .mapped_resident_bytes
            .store(resident, Ordering::Relaxed);
        if resident <= bound {
            continue;
        }
        let store = state.store.clone();
        let segments = crate::task::spawn_blocking(move || store.release_cold_mappings())
            .await
            .unwrap_or(0);
        state.space.mapped_releases.fetch_add(1, Ordering::Relaxed);
        let after = resident_file_bytes().unwrap_or(0);
        state
            .space
            .mapped_resident_bytes
            .store(after, Ordering::Relaxed);
        tracing::debug!(
            before_bytes = resident,
            after_bytes = after,
            segments,
            "released the segment mappings' resident memory"
        );
    }
}

/// `RssFile` of `/proc/self/status`, in bytes: the process's resident file-backed pages.
fn resident_file_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
