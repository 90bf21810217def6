//! The digest exchange: every `meta_sync_interval_ms`, each partition held here is compared
//! (by digest) with each of its other owners, and where they differ, every entry is sent both
//! ways (the receiver merges last writer wins). A partition this node no longer owns is handed
//! to its owners and dropped here once all of them have it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_core::layout::NodeSpec;
use cairn_core::limits::META_PAGE_ENTRIES_MAX;
use cairn_core::meta::{Entry, MetaKey, MetaMsg, MetaReply, Partition};

use super::cluster::{MetaCallError, MetaError, ask, ask_local, owners_of};
use crate::clock;
use crate::limits::{META_SYNC_INTERVAL_MS_MIN, META_SYNC_UNSETTLED_INTERVAL_MS};
use crate::state::State;

/// Brings this node's metadata partitions in line with their other owners, every
/// `interval_ms`, and at once when a layout is adopted. Until a round after the adoption
/// leaves nothing out, rounds come every `META_SYNC_UNSETTLED_INTERVAL_MS` at most: a layout
/// change is not over (and the collector waits) until then.
pub(crate) async fn sync_loop(state: Arc<State>, interval_ms: u64) {
    let interval_ms = interval_ms.max(META_SYNC_INTERVAL_MS_MIN);
    let mut failing = false;
    loop {
        let settled = state.meta_settled_since_ms.load(Ordering::Relaxed)
            >= state.healing.healer.lock().layout_since_ms();
        let pause_ms = if settled {
            interval_ms
        } else {
            interval_ms.min(META_SYNC_UNSETTLED_INTERVAL_MS)
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            _ = state.meta_sync_wake.notified() => {}
        }
        let started_ms = clock::wall_ms();
        match sync_round(&state).await {
            Ok(report) => {
                if report.exchanged > 0 || report.handed_off > 0 {
                    tracing::info!(?report, "metadata sync round");
                }
                if report.failed == 0 && report.unowned_left == 0 {
                    state
                        .meta_settled_since_ms
                        .store(started_ms, Ordering::Relaxed);
                }
                failing = false;
            }
            // Once per spell of failures: the next rounds retry on their own.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "metadata sync round failed");
            }
            Err(e) => tracing::debug!(error = %e, "metadata sync round failed again"),
        }
    }
}

/// What one round of the digest exchange did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub partitions: u64,
    /// Partition copies found to differ from an owner's and exchanged.
    pub exchanged: u64,
    /// Partitions handed to their owners and dropped here (this node no longer owns them).
    pub handed_off: u64,
    /// Partitions this node no longer owns and could not yet hand to all their owners.
    pub unowned_left: u64,
    /// Comparisons with an owner that failed.
    pub failed: u64,
}

/// Compares every partition held here with each of its other owners and, where the digests
/// differ, sends all of ours and takes all of theirs. A partition this node no longer owns is
/// sent to its owners and dropped once all of them have it.
pub(crate) async fn sync_round(state: &Arc<State>) -> Result<SyncReport, MetaError> {
    let mut report = SyncReport::default();
    let partitions = {
        let s = state.clone();
        crate::task::spawn_blocking(move || s.meta.store.partitions()).await??
    };
    for part in partitions {
        report.partitions += 1;
        let owners = owners_of(state, &part);
        let owned = owners.iter().any(|n| n.id == state.id);
        let mut all_synced = true;
        for node in owners.iter().filter(|n| n.id != state.id) {
            match sync_with(state, node, &part, owned).await {
                Ok(exchanged) => report.exchanged += u64::from(exchanged),
                Err(e) => {
                    all_synced = false;
                    report.failed += 1;
                    tracing::debug!(node = %node.id, partition = ?part, error = %e, "metadata sync failed");
                }
            }
        }
        if !owned {
            let s = state.clone();
            let p = part.clone();
            let dropped = all_synced
                && matches!(
                    crate::task::spawn_blocking(move || s.meta.store.drop_partition(&p)).await,
                    Ok(Ok(()))
                );
            if dropped {
                report.handed_off += 1;
            } else {
                report.unowned_left += 1;
            }
        }
    }
    Ok(report)
}

/// A page's entries as writes to `part`.
fn keyed(part: &Partition, entries: Vec<(Vec<u8>, Entry)>) -> Vec<(MetaKey, Entry)> {
    entries
        .into_iter()
        .map(|(key, entry)| {
            let part = part.clone();
            (MetaKey { part, key }, entry)
        })
        .collect()
}

/// This node's store, or another owner's.
#[derive(Clone, Copy)]
enum Side<'a> {
    Here,
    Peer(&'a NodeSpec),
}

async fn ask_side(
    state: &Arc<State>,
    side: Side<'_>,
    msg: MetaMsg,
) -> Result<MetaReply, MetaCallError> {
    match side {
        Side::Here => ask_local(state, msg).await,
        Side::Peer(node) => ask(state, node, msg).await,
    }
}

/// Brings one partition in line with one owner; says whether anything had to move.
async fn sync_with(
    state: &Arc<State>,
    node: &NodeSpec,
    part: &Partition,
    pull: bool,
) -> Result<bool, MetaError> {
    let digest = |side| ask_side(state, side, MetaMsg::Digest { part: part.clone() });
    match (digest(Side::Here).await?, digest(Side::Peer(node)).await?) {
        (MetaReply::Digest(local), MetaReply::Digest(remote)) if local == remote => {
            return Ok(false);
        }
        (MetaReply::Digest(_), MetaReply::Digest(_)) => {}
        (MetaReply::Digest(_), other) | (other, _) => {
            return Err(MetaError::Unexpected {
                reply: Box::new(other),
            });
        }
    }
    copy_partition(state, part, Side::Here, Side::Peer(node)).await?;
    if pull {
        copy_partition(state, part, Side::Peer(node), Side::Here).await?;
    }
    Ok(true)
}

/// Sends every entry of `part` that `from` holds to `to`, a page at a time (`to` merges them).
async fn copy_partition(
    state: &Arc<State>,
    part: &Partition,
    from: Side<'_>,
    to: Side<'_>,
) -> Result<(), MetaError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let msg = MetaMsg::Scan {
            part: part.clone(),
            after: after.clone(),
            prefix: Vec::new(),
            limit: META_PAGE_ENTRIES_MAX as u32,
        };
        let page = match ask_side(state, from, msg).await? {
            MetaReply::Page(page) => page,
            other => {
                return Err(MetaError::Unexpected {
                    reply: Box::new(other),
                });
            }
        };
        after = page.entries.last().map(|(k, _)| k.clone());
        let writes = keyed(part, page.entries);
        if !writes.is_empty() {
            ask_side(state, to, MetaMsg::Write { writes }).await?;
        }
        if !page.truncated {
            return Ok(());
        }
    }
}
