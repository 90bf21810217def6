//! What a node knows of its disk beyond the engine's figures: compaction's counters, when a
//! write last failed for lack of space, whether the node has emptied itself; and how full the
//! disk therefore is ([`SpaceState::disk`]). The loop that compacts is `space.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_core::status::DiskState;
use tokio::sync::Notify;

use crate::clock;
use crate::config::SpaceSettings;
use crate::limits::DISK_FULL_REMEMBERED_MS;

/// What the node knows of its disk beyond the engine's figures.
pub struct SpaceState {
    pub settings: SpaceSettings,
    /// The engine's segment size: the open segment is sealed for compaction once a quarter of
    /// a segment in it is dead.
    pub segment_bytes: u64,
    pub compaction_rounds: AtomicU64,
    pub compaction_reclaimed_bytes: AtomicU64,
    pub compaction_errors: AtomicU64,
    /// Bytes of segment mappings resident when last looked at (`space::mapped_memory_loop`).
    pub mapped_resident_bytes: AtomicU64,
    /// Times the node let go of its segment mappings' resident memory.
    pub mapped_releases: AtomicU64,
    /// When (wall clock) a write last failed for lack of space; 0: never.
    last_full_ms: AtomicU64,
    /// Wakes the compaction loop early (a node that just emptied itself).
    pub wake: Notify,
    /// The node is out of the layout and holds nothing (`space::drained`).
    drained: AtomicBool,
}

impl SpaceState {
    pub fn new(settings: SpaceSettings, segment_bytes: u64) -> SpaceState {
        SpaceState {
            settings,
            segment_bytes,
            compaction_rounds: AtomicU64::new(0),
            compaction_reclaimed_bytes: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            mapped_resident_bytes: AtomicU64::new(0),
            mapped_releases: AtomicU64::new(0),
            last_full_ms: AtomicU64::new(0),
            wake: Notify::new(),
            drained: AtomicBool::new(false),
        }
    }

    /// Whether the node was last found out of the layout and holding nothing.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Records whether the node is drained; says whether it was before.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::Relaxed)
    }

    /// A local write failed for lack of space (`error`): the disk counts as full for a while,
    /// said once at WARN.
    pub fn noticed_full(&self, error: &dyn std::fmt::Display) {
        let before = self.last_full_ms.swap(clock::wall_ms(), Ordering::Relaxed);
        if before == 0 || clock::wall_ms().saturating_sub(before) > DISK_FULL_REMEMBERED_MS {
            tracing::warn!(%error, "the disk is full: this node takes no new copies");
        }
    }

    /// How full the disk is: `Full` when writes failed for lack of space lately or less than a
    /// segment's worth is free, `NearlyFull` under `nearly_full_free_percent`.
    pub fn disk(&self, free_bytes: u64, total_bytes: u64) -> DiskState {
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
