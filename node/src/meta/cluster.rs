//! Metadata across the cluster: quorum writes, quorum reads with read repair, merged scans,
//! and the digest exchange that brings every owner of a partition to the same contents.
//!
//! The messages travel in the node protocol (`PeerMsg::Meta`). The merging is plain code
//! ([`merge_pages`]); this file's async functions only fan requests out and count answers.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::NodeSpec;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Digest, Entry, MetaKey, Page, Partition, Stamp, StoreError};
use crate::healing::wall_ms;
use crate::peer::{self, PeerMsg, PeerReply};
use crate::server::State;

/// Time one owner has to answer one metadata request.
pub const META_CALL_TIMEOUT_MS: u64 = 5_000;

/// First pause before a metadata request to an unreachable owner is tried again; it doubles
/// up to `META_RETRY_PAUSE_MS_MAX` while `META_CALL_TIMEOUT_MS` lasts.
pub const META_RETRY_PAUSE_MS_MIN: u64 = 25;
pub const META_RETRY_PAUSE_MS_MAX: u64 = 500;

/// Most entries in one scan page.
pub const META_PAGE_ENTRIES_MAX: usize = 1_000;

/// Most bytes of entries in one scan page or one write batch: under the node protocol's
/// message limit with room to spare.
pub const META_PAGE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// A metadata request between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaMsg {
    /// Merge these entries (one partition).
    Write {
        writes: Vec<(MetaKey, Entry)>,
    },
    Read {
        key: MetaKey,
    },
    /// A page of a partition after `after`, with `prefix`, tombstones included.
    Scan {
        part: Partition,
        after: Option<Vec<u8>>,
        prefix: Vec<u8>,
        limit: u32,
    },
    Digest {
        part: Partition,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaReply {
    /// The entries were merged; `newer`: the highest stamp this owner kept over one of them
    /// (a write it had seen with a higher stamp), if any.
    Written {
        newer: Option<Stamp>,
    },
    Entry(Option<Entry>),
    Page(Page),
    Digest(Digest),
    Failed {
        message: String,
    },
}

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error(
        "metadata quorum not reached: {answered} of the {needed} owners needed answered ({detail})"
    )]
    Unavailable {
        answered: usize,
        needed: usize,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Answers a metadata request from this node's store (blocking: run off the async threads).
pub(crate) fn answer(state: &State, msg: MetaMsg) -> MetaReply {
    let result = match msg {
        MetaMsg::Write { writes } => {
            // A node that no longer owns a partition takes no writes to it: it is handing the
            // partition over, and would drop them.
            let routing = state.routing();
            for (key, _) in &writes {
                let owned = routing
                    .replicas(&key.part.placement_hash())
                    .iter()
                    .any(|n| n.id == state.id);
                if !owned {
                    return MetaReply::Failed {
                        message: format!(
                            "{} does not own this partition under layout version {}",
                            state.id, routing.layout.version
                        ),
                    };
                }
            }
            let now = wall_ms();
            {
                let mut hlc = state.meta.hlc.lock();
                for (_, entry) in &writes {
                    if let Err(e) = hlc.observe(entry.stamp, now) {
                        return MetaReply::Failed {
                            message: e.to_string(),
                        };
                    }
                }
            }
            state
                .meta
                .store
                .apply(&writes)
                .map(|kept| MetaReply::Written {
                    newer: kept.into_iter().flatten().max(),
                })
        }
        MetaMsg::Read { key } => state.meta.store.get(&key).map(MetaReply::Entry),
        MetaMsg::Scan {
            part,
            after,
            prefix,
            limit,
        } => state
            .meta
            .store
            .scan(
                &part,
                after.as_deref(),
                &prefix,
                (limit as usize).min(META_PAGE_ENTRIES_MAX),
                META_PAGE_BYTES_MAX,
            )
            .map(MetaReply::Page),
        MetaMsg::Digest { part } => state.meta.store.digest(&part).map(MetaReply::Digest),
    };
    result.unwrap_or_else(|e| MetaReply::Failed {
        message: e.to_string(),
    })
}

/// Answers a request from this node's own store, off the async threads.
async fn ask_local(state: &Arc<State>, msg: MetaMsg) -> Result<MetaReply, String> {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || answer(&s, msg)).await {
        Ok(MetaReply::Failed { message }) => Err(message),
        Ok(reply) => Ok(reply),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends one request to one owner (this node included) and waits for its answer.
async fn ask(state: &Arc<State>, node: &NodeSpec, msg: MetaMsg) -> Result<MetaReply, String> {
    if node.id == state.id {
        return ask_local(state, msg).await;
    }
    let layout_version = state.routing().layout.version;
    let request = PeerMsg::Meta {
        from: state.id.clone(),
        msg,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(META_CALL_TIMEOUT_MS);
    let mut pause = Duration::from_millis(META_RETRY_PAUSE_MS_MIN);
    loop {
        let call = peer::call(&state.pool, node, layout_version, &request);
        let error = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(PeerReply::Meta(MetaReply::Failed { message }))) => return Err(message),
            Ok(Ok(PeerReply::Meta(reply))) => return Ok(reply),
            Ok(Ok(other)) => return Err(format!("{}: unexpected answer {other:?}", node.id)),
            // The node may be restarting, or not yet known to be up: try again while the
            // deadline allows.
            Ok(Err(peer::PeerCallError::Client(e))) if e.is_transient() => e.to_string(),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "{}: no answer in {META_CALL_TIMEOUT_MS} ms",
                    node.id
                ));
            }
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(META_RETRY_PAUSE_MS_MAX));
    }
}

/// The owners of a partition under the current layout, and the write and read quorums.
fn owners(state: &State, part: &Partition) -> (Vec<NodeSpec>, usize, usize) {
    let routing = state.routing();
    let owners: Vec<NodeSpec> = routing
        .replicas(&part.placement_hash())
        .into_iter()
        .cloned()
        .collect();
    let write_quorum = routing.layout.write_quorum.min(owners.len()).max(1);
    let read_quorum = (owners.len() + 1).saturating_sub(write_quorum).max(1);
    (owners, write_quorum, read_quorum)
}

/// Asks every owner at once; the answers arrive on the receiver as they come, each owner's
/// request running to its end even after the caller stops listening.
fn fan_out(
    state: &Arc<State>,
    owners: &[NodeSpec],
    msg: &MetaMsg,
) -> mpsc::UnboundedReceiver<(usize, Result<MetaReply, String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, node) in owners.iter().enumerate() {
        let (state, node, msg, tx) = (state.clone(), node.clone(), msg.clone(), tx.clone());
        tokio::spawn(async move {
            let reply = ask(&state, &node, msg).await;
            let _ = tx.send((i, reply));
        });
    }
    rx
}

/// Asks every owner and collects the answers `pick` accepts (it hands back the others) until `needed` have come, or so
/// many failed that `needed` no longer can; returns them with the owner's index.
async fn gather<T>(
    state: &Arc<State>,
    owners: &[NodeSpec],
    msg: &MetaMsg,
    needed: usize,
    pick: impl Fn(MetaReply) -> Result<T, MetaReply>,
) -> Result<Vec<(usize, T)>, MetaError> {
    let mut answers = fan_out(state, owners, msg);
    let (mut got, mut failed) = (Vec::new(), Vec::new());
    while let Some((i, reply)) = answers.recv().await {
        match reply.map(&pick) {
            Ok(Ok(answer)) => got.push((i, answer)),
            Ok(Err(other)) => failed.push(format!("unexpected answer {other:?}")),
            Err(e) => failed.push(e),
        }
        if got.len() >= needed || failed.len() > owners.len() - needed {
            break;
        }
    }
    if got.len() < needed {
        return Err(MetaError::Unavailable {
            answered: got.len(),
            needed,
            detail: failed.join("; "),
        });
    }
    Ok(got)
}

/// A new stamp from this node's clock.
pub(crate) fn stamp(state: &State) -> super::Stamp {
    state.meta.hlc.lock().now(wall_ms())
}

/// Times a write that lost to a newer one on some owner is stamped again and resent.
pub const META_RESTAMP_ATTEMPTS_MAX: usize = 3;

/// Writes entries of one partition to its owners; returns once the write quorum has them
/// durably, and they stand: if an owner kept a newer entry (written through a node whose clock
/// ran ahead of ours), the clock moves past it and the write is sent again with a new stamp, so
/// a write acknowledged after another one is never hidden behind it.
pub(crate) async fn write(
    state: &Arc<State>,
    mut writes: Vec<(MetaKey, Entry)>,
) -> Result<(), MetaError> {
    for _ in 0..META_RESTAMP_ATTEMPTS_MAX {
        let Some(newer) = write_once(state, &writes).await? else {
            return Ok(());
        };
        let fresh = {
            let mut hlc = state.meta.hlc.lock();
            let _ = hlc.observe(newer, wall_ms());
            hlc.now(wall_ms())
        };
        for (_, entry) in &mut writes {
            entry.stamp = fresh;
        }
    }
    write_once(state, &writes).await.map(|_| ())
}

/// Writes entries that stand only if nothing newer was written meanwhile (the collector's
/// removal of a mark): a newer entry on an owner wins, and that is an answer, not an error.
pub(crate) async fn write_conditional(
    state: &Arc<State>,
    writes: Vec<(MetaKey, Entry)>,
) -> Result<(), MetaError> {
    write_once(state, &writes).await.map(|_| ())
}

/// One round of a write: every owner asked, done at the write quorum; returns the newest stamp
/// an answering owner kept over one of the entries.
async fn write_once(
    state: &Arc<State>,
    writes: &[(MetaKey, Entry)],
) -> Result<Option<Stamp>, MetaError> {
    let Some((first, _)) = writes.first() else {
        return Ok(None);
    };
    debug_assert!(writes.iter().all(|(k, _)| k.part == first.part));
    let (owners, needed, _) = owners(state, &first.part);
    let msg = MetaMsg::Write {
        writes: writes.to_vec(),
    };
    let written = gather(state, &owners, &msg, needed, |reply| match reply {
        MetaReply::Written { newer } => Ok(newer),
        other => Err(other),
    })
    .await?;
    Ok(written.into_iter().filter_map(|(_, newer)| newer).max())
}

/// Reads one record from a read quorum of its owners: the entry with the highest stamp (a
/// tombstone included). Owners found behind are sent the winner.
pub(crate) async fn read(state: &Arc<State>, key: &MetaKey) -> Result<Option<Entry>, MetaError> {
    let (owners, _, needed) = owners(state, &key.part);
    let msg = MetaMsg::Read { key: key.clone() };
    let seen = gather(state, &owners, &msg, needed, |reply| match reply {
        MetaReply::Entry(entry) => Ok(entry),
        other => Err(other),
    })
    .await?;
    let best = seen
        .iter()
        .filter_map(|(_, e)| e.clone())
        .max_by_key(|e| e.stamp);
    if let Some(best) = &best {
        // Later writes through this node order after what it has read.
        let _ = state.meta.hlc.lock().observe(best.stamp, wall_ms());
    }
    if let Some(best) = &best {
        for (i, entry) in &seen {
            if entry.as_ref().map(|e| e.stamp) != Some(best.stamp) {
                let (state, node) = (state.clone(), owners[*i].clone());
                let msg = MetaMsg::Write {
                    writes: vec![(key.clone(), best.clone())],
                };
                tokio::spawn(async move {
                    if let Err(e) = ask(&state, &node, msg).await {
                        tracing::debug!(node = %node.id, error = %e, "metadata read repair failed");
                    }
                });
            }
        }
    }
    Ok(best)
}

/// Entries of a partition in key order, and where to go on from (`None`: the end).
pub type Merged = (Vec<(Vec<u8>, Entry)>, Option<Vec<u8>>);

/// Merges pages of one partition from several owners: the highest stamp per key, in key
/// order. A page cut short covers keys only up to its last one, so the merge is complete only
/// up to the smallest such key: entries past it are left out and that key is returned as the
/// place to go on from.
pub fn merge_pages(pages: Vec<Page>) -> Merged {
    let horizon: Option<Vec<u8>> = pages
        .iter()
        .filter(|p| p.truncated)
        .filter_map(|p| p.entries.last().map(|(k, _)| k.clone()))
        .min();
    let mut merged: std::collections::BTreeMap<Vec<u8>, Entry> = std::collections::BTreeMap::new();
    for page in pages {
        for (key, entry) in page.entries {
            if horizon.as_ref().is_some_and(|h| &key > h) {
                continue;
            }
            match merged.get(&key) {
                Some(old) if old.stamp >= entry.stamp => {}
                _ => {
                    merged.insert(key, entry);
                }
            }
        }
    }
    (merged.into_iter().collect(), horizon)
}

/// One merged page of a partition from a read quorum of its owners, tombstones included, and
/// where the next page starts (`None`: this was the last).
pub(crate) async fn scan_page(
    state: &Arc<State>,
    part: &Partition,
    after: Option<Vec<u8>>,
    prefix: &[u8],
    limit: usize,
) -> Result<Merged, MetaError> {
    let (owners, _, needed) = owners(state, part);
    let msg = MetaMsg::Scan {
        part: part.clone(),
        after,
        prefix: prefix.to_vec(),
        limit: limit.clamp(1, META_PAGE_ENTRIES_MAX) as u32,
    };
    let pages = gather(state, &owners, &msg, needed, |reply| match reply {
        MetaReply::Page(page) => Ok(page),
        other => Err(other),
    })
    .await?;
    Ok(merge_pages(
        pages.into_iter().map(|(_, page)| page).collect(),
    ))
}

/// What a walk over a partition does after one entry.
pub enum Walk {
    Next,
    Stop,
    /// Go on after this key (a listing skipping a common prefix).
    SkipTo(Vec<u8>),
}

/// Walks a partition's live entries (merged from read quorums, page by page) after `after`
/// with `prefix`, in key order, until `each` says stop or the partition ends.
pub(crate) async fn walk(
    state: &Arc<State>,
    part: &Partition,
    after: Option<Vec<u8>>,
    prefix: &[u8],
    each: impl FnMut(&[u8], &Entry) -> Walk,
) -> Result<(), MetaError> {
    walk_entries(state, part, after, prefix, false, each).await
}

/// [`walk`], with tombstones too if `tombstones`.
pub(crate) async fn walk_entries(
    state: &Arc<State>,
    part: &Partition,
    after: Option<Vec<u8>>,
    prefix: &[u8],
    tombstones: bool,
    mut each: impl FnMut(&[u8], &Entry) -> Walk,
) -> Result<(), MetaError> {
    let mut cursor = after;
    loop {
        let (entries, next) =
            scan_page(state, part, cursor.clone(), prefix, META_PAGE_ENTRIES_MAX).await?;
        let mut jumped = false;
        for (key, entry) in entries {
            if cursor.as_ref().is_some_and(|c| &key <= c) {
                continue;
            }
            cursor = Some(key.clone());
            if entry.value.is_none() && !tombstones {
                continue;
            }
            match each(&key, &entry) {
                Walk::Next => {}
                Walk::Stop => return Ok(()),
                Walk::SkipTo(to) => {
                    cursor = Some(to);
                    jumped = true;
                    break;
                }
            }
        }
        if jumped {
            continue;
        }
        match next {
            Some(next) if cursor.as_ref().is_none_or(|c| &next > c) => cursor = Some(next),
            Some(_) => {}
            None => return Ok(()),
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
    pub failed: u64,
}

/// Compares every partition held here with each of its other owners and, where the digests
/// differ, sends all of ours and takes all of theirs. A partition this node no longer owns is
/// sent to its owners and dropped once all of them have it.
pub(crate) async fn sync_round(state: &Arc<State>) -> Result<SyncReport, MetaError> {
    let mut report = SyncReport::default();
    let partitions = {
        let s = state.clone();
        tokio::task::spawn_blocking(move || s.meta.store.partitions())
            .await
            .map_err(|e| MetaError::Unavailable {
                answered: 0,
                needed: 0,
                detail: e.to_string(),
            })??
    };
    for part in partitions {
        report.partitions += 1;
        let (owners, _, _) = owners(state, &part);
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
        if !owned && all_synced {
            let s = state.clone();
            let p = part.clone();
            if let Ok(Ok(())) =
                tokio::task::spawn_blocking(move || s.meta.store.drop_partition(&p)).await
            {
                report.handed_off += 1;
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

async fn ask_side(state: &Arc<State>, side: Side<'_>, msg: MetaMsg) -> Result<MetaReply, String> {
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
) -> Result<bool, String> {
    let digest = |side| ask_side(state, side, MetaMsg::Digest { part: part.clone() });
    match (digest(Side::Here).await?, digest(Side::Peer(node)).await?) {
        (MetaReply::Digest(local), MetaReply::Digest(remote)) if local == remote => {
            return Ok(false);
        }
        (MetaReply::Digest(_), MetaReply::Digest(_)) => {}
        other => return Err(format!("unexpected answers {other:?}")),
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
) -> Result<(), String> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let msg = MetaMsg::Scan {
            part: part.clone(),
            after: after.clone(),
            prefix: Vec::new(),
            limit: META_PAGE_ENTRIES_MAX as u32,
        };
        let MetaReply::Page(page) = ask_side(state, from, msg).await? else {
            return Err("unexpected answer to a scan".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Stamp;

    fn e(wall_ms: u64, v: Option<&str>) -> Entry {
        Entry {
            stamp: Stamp {
                wall_ms,
                counter: 0,
                node: 0,
            },
            value: v.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn page(entries: &[(&str, Entry)], truncated: bool) -> Page {
        Page {
            entries: entries
                .iter()
                .map(|(k, e)| (k.as_bytes().to_vec(), e.clone()))
                .collect(),
            truncated,
        }
    }

    #[test]
    fn the_newest_entry_of_each_key_wins_a_merge_tombstones_included() {
        let a = page(&[("a", e(1, Some("old"))), ("b", e(5, None))], false);
        let b = page(
            &[
                ("a", e(2, Some("new"))),
                ("b", e(4, Some("undeleted"))),
                ("c", e(1, Some("c"))),
            ],
            false,
        );
        let (merged, next) = merge_pages(vec![a, b]);
        assert_eq!(next, None);
        assert_eq!(
            merged,
            vec![
                (b"a".to_vec(), e(2, Some("new"))),
                (b"b".to_vec(), e(5, None)),
                (b"c".to_vec(), e(1, Some("c"))),
            ]
        );
    }

    #[test]
    fn a_merge_stops_where_the_shortest_cut_page_stops() {
        // Owner A's page was cut after "b"; owner B went further. "c" from B alone may be
        // stale (A's entry for "c" was not sent), so the merge ends at "b".
        let a = page(&[("a", e(1, Some("a"))), ("b", e(1, Some("b")))], true);
        let b = page(
            &[
                ("a", e(1, Some("a"))),
                ("c", e(1, Some("c"))),
                ("d", e(1, Some("d"))),
            ],
            true,
        );
        let (merged, next) = merge_pages(vec![a, b]);
        assert_eq!(next.as_deref(), Some(&b"b"[..]));
        let keys: Vec<_> = merged.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
