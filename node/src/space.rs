//! The node's disk: compaction by itself, paced ([`compaction_loop`]); how full the disk is
//! ([`SpaceState::disk`]); and a node that left the layout saying once that it holds nothing.
//!
//! Compaction is the engine's (`Store::compaction_candidates`, `Store::compact_segment`); this
//! module decides when and how fast. Every `compaction_interval_ms` a round seals the open
//! segment if enough of it is dead, then rewrites each candidate segment once, sleeping after
//! each so that live bytes are copied at `compaction_bytes_per_sec` at most. Deleted and
//! overwritten blobs, copies handed off to their owners and tombstones the healer dropped
//! after their grace period all become dead bytes, and all go back to the disk this way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cairn_core::status::DiskState;
use cairn_engine::{CompactionReport, Error as EngineError};
use tokio::sync::Notify;

use crate::clock;
use crate::config::SpaceSettings;
use crate::limits::{DISK_FULL_REMEMBERED_MS, LEAVING_CHECK_INTERVAL_MS};
use crate::local;
use crate::replica::{self, LocalError};
use crate::state::State;

/// What the node knows of its disk beyond the engine's figures.
pub(crate) struct SpaceState {
    pub settings: SpaceSettings,
    /// The engine's segment size: the open segment is sealed for compaction once a quarter of
    /// a segment in it is dead.
    pub segment_bytes: u64,
    pub compaction_rounds: AtomicU64,
    pub compaction_reclaimed_bytes: AtomicU64,
    pub compaction_errors: AtomicU64,
    /// When (wall clock) a write last failed for lack of space; 0: never.
    last_full_ms: AtomicU64,
    /// Wakes the compaction loop early (a node that just emptied itself).
    pub wake: Notify,
    /// The node is out of the layout and holds nothing (see [`drained`]); said once at WARN.
    drained: AtomicBool,
}

impl SpaceState {
    pub(crate) fn new(settings: SpaceSettings, segment_bytes: u64) -> SpaceState {
        SpaceState {
            settings,
            segment_bytes,
            compaction_rounds: AtomicU64::new(0),
            compaction_reclaimed_bytes: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            last_full_ms: AtomicU64::new(0),
            wake: Notify::new(),
            drained: AtomicBool::new(false),
        }
    }

    /// Whether the node was last found out of the layout and holding nothing.
    pub(crate) fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// A local write failed: if for lack of space, the disk counts as full for a while.
    pub(crate) fn noticed(&self, e: &LocalError) {
        if replica::is_full(e) {
            let before = self.last_full_ms.swap(clock::wall_ms(), Ordering::Relaxed);
            if before == 0 || clock::wall_ms().saturating_sub(before) > DISK_FULL_REMEMBERED_MS {
                tracing::warn!(error = %e, "the disk is full: this node takes no new copies");
            }
        }
    }

    /// How full the disk is: `Full` when writes failed for lack of space lately or less than a
    /// segment's worth is free, `NearlyFull` under `nearly_full_free_percent`.
    pub(crate) fn disk(&self, free_bytes: u64, total_bytes: u64) -> DiskState {
        let last_full = self.last_full_ms.load(Ordering::Relaxed);
        let recently_full =
            last_full > 0 && clock::wall_ms().saturating_sub(last_full) < DISK_FULL_REMEMBERED_MS;
        if recently_full || free_bytes < self.segment_bytes {
            DiskState::Full
        } else if u128::from(free_bytes) * 100
            < u128::from(total_bytes) * u128::from(self.settings.nearly_full_free_percent)
        {
            DiskState::NearlyFull
        } else {
            DiskState::Ok
        }
    }
}

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
        let before = state.space.drained.swap(drained, Ordering::Relaxed);
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
