//! Metadata across the cluster: quorum writes, quorum reads with read repair, merged scans and
//! walks, and the answers an owner gives from its own store. The messages travel in the node
//! protocol (`PeerMsg::Meta`); the merge rules are `cairn_core::meta`'s; this module fans
//! requests out to a partition's owners and counts their answers against
//! `cairn_core::quorum::Quorums`.

use std::sync::Arc;
use std::time::Duration;

use cairn_core::layout::NodeSpec;
use cairn_core::limits::{META_PAGE_BYTES_MAX, META_PAGE_ENTRIES_MAX};
use cairn_core::meta::{Entry, Merged, MetaKey, MetaMsg, MetaReply, Partition, Stamp, merge_pages};
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_core::quorum::Quorums;
use tokio::sync::mpsc;

use crate::clock;
use crate::limits::{
    META_CALL_TIMEOUT_MS, META_RESTAMP_ATTEMPTS_MAX, META_RETRY_PAUSE_MS_MAX,
    META_RETRY_PAUSE_MS_MIN,
};
use crate::local::meta_store::StoreError;
use crate::net::peer::{self, PeerCallError};
use crate::state::State;

/// Why one owner did not answer a metadata request as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaCallError {
    #[error(transparent)]
    Peer(#[from] PeerCallError),
    /// The owner answered with a failure of its own.
    #[error("{node} refused: {message}")]
    Refused { node: String, message: String },
    #[error("{node}: unexpected answer {reply:?}")]
    Unexpected { node: String, reply: Box<PeerReply> },
    #[error("{node}: no answer in {META_CALL_TIMEOUT_MS} ms")]
    Timeout { node: String },
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error(
        "metadata quorum not reached: {answered} of the {needed} owners needed answered ({})",
        list(failures)
    )]
    Unavailable {
        answered: usize,
        needed: usize,
        failures: Vec<MetaCallError>,
    },
    #[error("unexpected answer {reply:?}")]
    Unexpected { reply: Box<MetaReply> },
    #[error(transparent)]
    Call(#[from] MetaCallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn list(failures: &[MetaCallError]) -> String {
    let all: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    all.join("; ")
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
            let now = clock::wall_ms();
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
pub(super) async fn ask_local(
    state: &Arc<State>,
    msg: MetaMsg,
) -> Result<MetaReply, MetaCallError> {
    let s = state.clone();
    match crate::task::spawn_blocking(move || answer(&s, msg)).await? {
        MetaReply::Failed { message } => Err(MetaCallError::Refused {
            node: state.id.clone(),
            message,
        }),
        reply => Ok(reply),
    }
}

/// When a metadata call started now must end: `META_CALL_TIMEOUT_MS` from now.
fn call_deadline() -> tokio::time::Instant {
    clock::deadline_after(Duration::from_millis(META_CALL_TIMEOUT_MS))
}

/// Sends one request to one owner (this node included) and waits for its answer, for at
/// most `META_CALL_TIMEOUT_MS`.
pub(super) async fn ask(
    state: &Arc<State>,
    node: &NodeSpec,
    msg: MetaMsg,
) -> Result<MetaReply, MetaCallError> {
    let deadline = call_deadline();
    ask_until(state, node, msg, deadline).await
}

/// [`ask`], given up at `deadline`; an owner that is restarting is asked again meanwhile.
async fn ask_until(
    state: &Arc<State>,
    node: &NodeSpec,
    msg: MetaMsg,
    deadline: tokio::time::Instant,
) -> Result<MetaReply, MetaCallError> {
    if node.id == state.id {
        return ask_local(state, msg).await;
    }
    let layout_version = state.routing().layout.version;
    let request = PeerMsg::Meta {
        from: state.id.clone(),
        msg,
    };
    let mut pause = Duration::from_millis(META_RETRY_PAUSE_MS_MIN);
    loop {
        let call = peer::call(&state.pool, node, layout_version, &request);
        let error = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(PeerReply::Meta(MetaReply::Failed { message }))) => {
                return Err(MetaCallError::Refused {
                    node: node.id.clone(),
                    message,
                });
            }
            Ok(Ok(PeerReply::Meta(reply))) => return Ok(reply),
            Ok(Ok(other)) => {
                return Err(MetaCallError::Unexpected {
                    node: node.id.clone(),
                    reply: Box::new(other),
                });
            }
            // The node may be restarting, or not yet known to be up: try again while the
            // deadline allows.
            Ok(Err(e)) if e.is_transient() => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(MetaCallError::Timeout {
                    node: node.id.clone(),
                });
            }
        };
        if clock::passed(deadline.checked_sub(pause).unwrap_or(deadline)) {
            return Err(error.into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(META_RETRY_PAUSE_MS_MAX));
    }
}

/// The owners of a partition under the current layout, and the quorums over them.
fn owners(state: &State, part: &Partition) -> (Vec<NodeSpec>, Quorums) {
    let routing = state.routing();
    let owners: Vec<NodeSpec> = routing
        .replicas(&part.placement_hash())
        .into_iter()
        .cloned()
        .collect();
    let quorums = Quorums::of(&routing.layout, owners.len());
    (owners, quorums)
}

/// The owners of a partition under the current layout (the digest exchange's partners).
pub(super) fn owners_of(state: &State, part: &Partition) -> Vec<NodeSpec> {
    owners(state, part).0
}

/// Asks every owner at once, until `deadline`; the answers arrive on the receiver as they
/// come, each owner's request running to its end even after the caller stops listening.
fn fan_out(
    state: &Arc<State>,
    owners: &[NodeSpec],
    msg: &MetaMsg,
    deadline: tokio::time::Instant,
) -> mpsc::UnboundedReceiver<(usize, Result<MetaReply, MetaCallError>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, node) in owners.iter().enumerate() {
        let (state, node, msg, tx) = (state.clone(), node.clone(), msg.clone(), tx.clone());
        crate::task::spawn(async move {
            let reply = ask_until(&state, &node, msg, deadline).await;
            let _ = tx.send((i, reply));
        });
    }
    rx
}

/// Asks every owner and collects the answers `pick` accepts (it hands back the others) until
/// `needed` have come, or so many failed (or `deadline` passed) that `needed` no longer can;
/// returns them with the owner's index.
async fn gather<T>(
    state: &Arc<State>,
    owners: &[NodeSpec],
    msg: &MetaMsg,
    needed: usize,
    deadline: tokio::time::Instant,
    pick: impl Fn(MetaReply) -> Result<T, MetaReply>,
) -> Result<Vec<(usize, T)>, MetaError> {
    let mut answers = fan_out(state, owners, msg, deadline);
    let (mut got, mut failures) = (Vec::new(), Vec::new());
    while let Some((i, reply)) = answers.recv().await {
        match reply.map(&pick) {
            Ok(Ok(answer)) => got.push((i, answer)),
            Ok(Err(other)) => failures.push(MetaCallError::Unexpected {
                node: owners[i].id.clone(),
                reply: Box::new(PeerReply::Meta(other)),
            }),
            Err(e) => failures.push(e),
        }
        if got.len() >= needed || failures.len() > owners.len() - needed {
            break;
        }
    }
    if got.len() < needed {
        return Err(MetaError::Unavailable {
            answered: got.len(),
            needed,
            failures,
        });
    }
    Ok(got)
}

/// A new stamp from this node's clock.
pub(crate) fn stamp(state: &State) -> Stamp {
    state.meta.hlc.lock().now(clock::wall_ms())
}

/// Writes entries of one partition to its owners; returns once the write quorum has them
/// durably, and they stand: if an owner kept a newer entry (written through a node whose clock
/// ran ahead of ours), the clock moves past it and the write is sent again with a new stamp, so
/// a write acknowledged after another one is never hidden behind it. The whole write, its new
/// stamps included, ends within `META_CALL_TIMEOUT_MS` (the collector's safety counts on it:
/// see `s3::gc`), or fails.
pub(crate) async fn write(
    state: &Arc<State>,
    mut writes: Vec<(MetaKey, Entry)>,
) -> Result<(), MetaError> {
    let deadline = call_deadline();
    for _ in 0..META_RESTAMP_ATTEMPTS_MAX {
        let Some(newer) = write_once(state, &writes, deadline).await? else {
            return Ok(());
        };
        let fresh = {
            let mut hlc = state.meta.hlc.lock();
            let _ = hlc.observe(newer, clock::wall_ms());
            hlc.now(clock::wall_ms())
        };
        for (_, entry) in &mut writes {
            entry.stamp = fresh;
        }
    }
    write_once(state, &writes, deadline).await.map(|_| ())
}

/// Writes entries that stand only if nothing newer was written meanwhile (the collector's
/// removal of a mark): a newer entry on an owner wins, and that is an answer, not an error.
pub(crate) async fn write_conditional(
    state: &Arc<State>,
    writes: Vec<(MetaKey, Entry)>,
) -> Result<(), MetaError> {
    let deadline = call_deadline();
    write_once(state, &writes, deadline).await.map(|_| ())
}

/// One round of a write: every owner asked, done at the write quorum; returns the newest stamp
/// an answering owner kept over one of the entries.
async fn write_once(
    state: &Arc<State>,
    writes: &[(MetaKey, Entry)],
    deadline: tokio::time::Instant,
) -> Result<Option<Stamp>, MetaError> {
    let Some((first, _)) = writes.first() else {
        return Ok(None);
    };
    debug_assert!(writes.iter().all(|(k, _)| k.part == first.part));
    let (owners, quorums) = owners(state, &first.part);
    let msg = MetaMsg::Write {
        writes: writes.to_vec(),
    };
    let written = gather(
        state,
        &owners,
        &msg,
        quorums.write,
        deadline,
        |reply| match reply {
            MetaReply::Written { newer } => Ok(newer),
            other => Err(other),
        },
    )
    .await?;
    Ok(written.into_iter().filter_map(|(_, newer)| newer).max())
}

/// Reads one record from a read quorum of its owners: the entry with the highest stamp (a
/// tombstone included). Owners found behind are sent the winner.
pub(crate) async fn read(state: &Arc<State>, key: &MetaKey) -> Result<Option<Entry>, MetaError> {
    let (owners, quorums) = owners(state, &key.part);
    read_from(state, key, owners, quorums).await
}

/// [`read`], and, if that finds no value while a layout change moves partitions, also from a
/// read quorum of the previous layout's owners (which may still hold writes the new ones have
/// not received): the newer entry of the two.
pub(crate) async fn read_either_layout(
    state: &Arc<State>,
    key: &MetaKey,
) -> Result<Option<Entry>, MetaError> {
    let current = read(state, key).await?;
    if current.as_ref().is_some_and(|e| e.value.is_some()) {
        return Ok(current);
    }
    let Some(previous) = state.routing().previous.clone() else {
        return Ok(current);
    };
    let owners: Vec<NodeSpec> = previous
        .replicas(&key.part.placement_hash())
        .into_iter()
        .cloned()
        .collect();
    let quorums = Quorums::of(&previous.layout, owners.len());
    let before = read_from(state, key, owners, quorums).await?;
    Ok([current, before]
        .into_iter()
        .flatten()
        .max_by_key(|e| e.stamp))
}

async fn read_from(
    state: &Arc<State>,
    key: &MetaKey,
    owners: Vec<NodeSpec>,
    quorums: Quorums,
) -> Result<Option<Entry>, MetaError> {
    let msg = MetaMsg::Read { key: key.clone() };
    let deadline = call_deadline();
    let seen = gather(
        state,
        &owners,
        &msg,
        quorums.read,
        deadline,
        |reply| match reply {
            MetaReply::Entry(entry) => Ok(entry),
            other => Err(other),
        },
    )
    .await?;
    let best = seen
        .iter()
        .filter_map(|(_, e)| e.clone())
        .max_by_key(|e| e.stamp);
    if let Some(best) = &best {
        // Later writes through this node order after what it has read.
        let _ = state.meta.hlc.lock().observe(best.stamp, clock::wall_ms());
    }
    if let Some(best) = &best {
        for (i, entry) in &seen {
            if entry.as_ref().map(|e| e.stamp) != Some(best.stamp) {
                let (state, node) = (state.clone(), owners[*i].clone());
                let msg = MetaMsg::Write {
                    writes: vec![(key.clone(), best.clone())],
                };
                crate::task::spawn(async move {
                    if let Err(e) = ask(&state, &node, msg).await {
                        tracing::debug!(node = %node.id, error = %e, "metadata read repair failed");
                    }
                });
            }
        }
    }
    Ok(best)
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
    let (owners, quorums) = owners(state, part);
    let msg = MetaMsg::Scan {
        part: part.clone(),
        after,
        prefix: prefix.to_vec(),
        limit: limit.clamp(1, META_PAGE_ENTRIES_MAX) as u32,
    };
    let deadline = call_deadline();
    let pages = gather(
        state,
        &owners,
        &msg,
        quorums.read,
        deadline,
        |reply| match reply {
            MetaReply::Page(page) => Ok(page),
            other => Err(other),
        },
    )
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
