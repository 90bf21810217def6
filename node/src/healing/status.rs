//! What a node says of itself: the report its heartbeats carry ([`report`]) and the status
//! `cairn status` and `GET /v1/cluster` show ([`status`]), read from the engine, the healing
//! state machines and the node's logs.

use std::sync::atomic::Ordering;

use cairn_core::membership::NodeReport;
use cairn_core::status::{
    DiskState, NodeStatus, PeerStatus, RecoveryStatus, RepairStatus, ScrubStatus, SpaceStatus,
};

use crate::clock;
use crate::local;
use crate::space;
use crate::state::State;

/// What this node says about itself in heartbeats.
pub(crate) fn report(state: &State) -> NodeReport {
    let stats = state.store.stats();
    let (progress, settled) = {
        let healer = state.healing.healer.lock();
        let meta_settled =
            state.meta_settled_since_ms.load(Ordering::Relaxed) >= healer.layout_since_ms();
        (healer.progress(), healer.settled() && meta_settled)
    };
    let free_bytes = stats
        .free_bytes
        .min(local::fs_available_bytes(&state.data_dir).unwrap_or(u64::MAX));
    NodeReport {
        layout_version: state.routing().layout.version,
        blob_count: stats.blob_count,
        used_bytes: stats.used_bytes,
        free_bytes,
        misplaced_bytes: progress.misplaced_bytes,
        moved_bytes: progress.moved_bytes,
        settled,
        writable: stats.read_only.is_none()
            && state.space.disk(free_bytes, space::disk_total_bytes(state)) != DiskState::Full,
    }
}

/// This node's view of itself and its peers.
pub(crate) fn status(state: &State) -> NodeStatus {
    let now = clock::wall_ms();
    // Membership first, then the healer: the order the heal loop takes them in. Taken the other
    // way round, a status asked for while the loop ticked waited on the loop, which waited on
    // it, and so did every heartbeat after them.
    let membership = state.healing.membership.lock();
    let healer = state.healing.healer.lock();
    let progress = healer.progress();
    let peers: Vec<PeerStatus> = membership
        .view()
        .map(|v| PeerStatus {
            id: v.id.clone(),
            state: v.state,
            silent_ms: v.heard_ms.map(|h| now.saturating_sub(h)),
            report: v.report.clone(),
            synced_since_ms: healer.synced_since_ms(&v.id),
        })
        .collect();
    drop(healer);
    let (hints_pending, hints_to_up) = {
        let mut hints = state.hints.lock();
        let pending = hints.pending() as u64;
        let to_up = hints
            .queue()
            .pending()
            .filter(|(_, h)| membership.is_up(&h.target))
            .count() as u64;
        (pending, to_up)
    };
    drop(membership);
    let stats = state.store.stats();
    let report = report(state);
    let total = space::disk_total_bytes(state);
    let space = &state.space;
    let repairs_per_min = state.healing.repairs.lock().per_min();
    let repairable =
        hints_to_up + progress.transfers_queued as u64 + progress.transfers_in_flight as u64;
    let recovery = state.store.recovery_report();
    let scrubber = state.healing.scrubber.lock();
    let scrub = ScrubStatus {
        running: scrubber.running(now),
        pass_percent: scrubber.pass_percent(),
        passes_completed: scrubber.passes_completed,
        verified_blobs: scrubber.verified_blobs,
        corrupt_found: state.healing.scrub_corrupt_found.load(Ordering::Relaxed),
    };
    drop(scrubber);
    NodeStatus {
        id: state.id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        space: SpaceStatus {
            disk: space.disk(report.free_bytes, total),
            disk_total_bytes: total,
            free_bytes: report.free_bytes,
            segment_files_bytes: stats.used_bytes,
            live_bytes: stats.live_bytes,
            dead_bytes: stats.dead_bytes,
            reclaimable_bytes: stats.reclaimable_bytes,
            compaction_rounds: space.compaction_rounds.load(Ordering::Relaxed),
            compaction_reclaimed_bytes: space.compaction_reclaimed_bytes.load(Ordering::Relaxed),
            compaction_errors: space.compaction_errors.load(Ordering::Relaxed),
        },
        read_only: stats.read_only.map(|r| r.to_string()),
        recovery: RecoveryStatus {
            records_lost: recovery.records_lost,
            torn_tails: recovery.torn_tails.len() as u64,
            unreadable_segments: recovery.unreadable_segments.len() as u64,
            moved_aside: recovery
                .unreadable_segments
                .iter()
                .filter_map(|u| u.moved_to.as_ref().map(|p| p.display().to_string()))
                .collect(),
        },
        repair: RepairStatus {
            under_replicated_blobs: progress.under_replicated.blobs + hints_to_up,
            waiting_for: progress.under_replicated.waiting_for.into_iter().collect(),
            repairs_per_min,
            eta_secs: (repairable > 0 && repairs_per_min > 0)
                .then(|| repairable.saturating_mul(60).div_ceil(repairs_per_min)),
        },
        scrub,
        report,
        peers,
        hints_pending,
        tombstones: state.versions.tombstone_count() as u64,
        transfers_queued: progress.transfers_queued as u64,
        transfers_in_flight: progress.transfers_in_flight as u64,
        sessions_completed: progress.sessions_completed,
        corrupt_found: state.healing.corrupt_found.load(Ordering::Relaxed),
        previous_layout_version: state.routing().previous.as_ref().map(|p| p.layout.version),
        drained: space.is_drained(),
        gc: state.gc.as_ref().map(|gc| gc.status()),
    }
}
