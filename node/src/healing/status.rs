//! What a node says of itself: the report its heartbeats carry ([`report`]) and the status
//! `cairn status` and `GET /v1/cluster` show ([`status`]), read from the engine, the healing
//! state machines and the node's logs.

use std::sync::atomic::Ordering;

use cairn_core::membership::NodeReport;
use cairn_core::status::{NodeStatus, PeerStatus};

use crate::clock;
use crate::local;
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
    NodeReport {
        layout_version: state.routing().layout.version,
        blob_count: stats.blob_count,
        used_bytes: stats.used_bytes,
        free_bytes: stats
            .free_bytes
            .min(local::fs_available_bytes(&state.data_dir).unwrap_or(u64::MAX)),
        misplaced_bytes: progress.misplaced_bytes,
        moved_bytes: progress.moved_bytes,
        settled,
        writable: stats.read_only.is_none(),
    }
}

/// This node's view of itself and its peers.
pub(crate) fn status(state: &State) -> NodeStatus {
    let now = clock::wall_ms();
    let progress = state.healing.healer.lock().progress();
    let peers = state
        .healing
        .membership
        .lock()
        .view()
        .map(|v| PeerStatus {
            id: v.id.clone(),
            state: v.state,
            silent_ms: v.heard_ms.map(|h| now.saturating_sub(h)),
            report: v.report.clone(),
        })
        .collect();
    NodeStatus {
        id: state.id.clone(),
        report: report(state),
        peers,
        hints_pending: state.hints.lock().pending() as u64,
        tombstones: state.versions.tombstone_count() as u64,
        transfers_queued: progress.transfers_queued as u64,
        transfers_in_flight: progress.transfers_in_flight as u64,
        sessions_completed: progress.sessions_completed,
        scrub_verified_blobs: state.healing.scrubber.lock().verified_blobs,
        scrub_corrupt_found: state.healing.scrub_corrupt_found.load(Ordering::Relaxed),
        corrupt_found: state.healing.corrupt_found.load(Ordering::Relaxed),
    }
}
