//! A replica's side of blob requests: get and head from the engine, a coordinator's put
//! (receive, check, say `Prepared`, then commit or abort as told), a healer's copy, a
//! coordinator's delete, and a read repair's request for copies.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::framing;
use cairn_core::Routing;
use cairn_core::hints::HintKind;
use cairn_core::limits::{REPAIR_TARGETS_MAX, REQUEST_HEADER_BYTES_MAX, RESPONSE_HEADER_BYTES_MAX};
use cairn_core::wire::{ByteRange, Decision, ErrorCode, Response};
use cairn_engine::{BlobStat, BlobWriter, Hash};

use super::body::receive;
use super::{fail, respond};
use crate::limits::DECISION_TIMEOUT_MS;
use crate::replica::{self, LocalError, engine_code, is_corrupt};
use crate::state::State;

pub(super) async fn get(
    state: &State,
    hash: Hash,
    range: Option<ByteRange>,
    mut send: quinn::SendStream,
) {
    let blob_len = match state.store.stat(&hash) {
        Ok(BlobStat::Present { bytes }) => bytes,
        Ok(BlobStat::Absent) => return fail(&mut send, ErrorCode::NotFound, "not held here").await,
        Ok(_) => {
            state.noticed_corrupt(hash);
            return fail(&mut send, ErrorCode::Corrupted, "quarantined here").await;
        }
        Err(e) => return fail(&mut send, engine_code(&e), e.to_string()).await,
    };
    let read = match range {
        None => state.store.get(&hash),
        Some(r) => state.store.read_range(&hash, r.offset, r.len),
    };
    let blob = match read {
        Ok(Some(blob)) => blob,
        Ok(None) => return fail(&mut send, ErrorCode::NotFound, "not held here").await,
        Err(e) => {
            if is_corrupt(&e) {
                state.noticed_corrupt(hash);
            }
            return fail(&mut send, engine_code(&e), e.to_string()).await;
        }
    };
    let header = Response::Blob {
        len: blob.len() as u64,
        blob_len,
    };
    if framing::write_frame(&mut send, &header, RESPONSE_HEADER_BYTES_MAX)
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = send.write_all(&blob).await {
        tracing::debug!(%hash, error = %e, "get aborted by the reader");
        return;
    }
    let _ = send.finish();
}

pub(super) async fn head(state: &State, hash: Hash, mut send: quinn::SendStream) {
    let response = match state.store.stat(&hash) {
        Ok(BlobStat::Present { bytes }) => Response::Found { blob_len: bytes },
        Ok(BlobStat::Absent) => Response::error(ErrorCode::NotFound, "not held here"),
        Ok(_) => Response::error(ErrorCode::Corrupted, "quarantined here"),
        Err(e) => Response::error(engine_code(&e), e.to_string()),
    };
    respond(&mut send, &response).await
}

/// A put from a coordinator: receive, check the hash, say `Prepared` with the version of the
/// tombstone held here, then commit with the coordinator's version or abort, as told.
pub(super) async fn replica_put(
    state: &Arc<State>,
    hash: Hash,
    len: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let writer = match receive(state, hash, len, &mut recv).await {
        Ok(writer) => writer,
        Err(e) => return fail(&mut send, e.code(), e.to_string()).await,
    };
    let prepared = Response::Prepared {
        tombstone_version: replica::tombstone_version(state, &hash),
    };
    if framing::write_frame(&mut send, &prepared, RESPONSE_HEADER_BYTES_MAX)
        .await
        .is_err()
    {
        return;
    }
    let decision = tokio::time::timeout(
        Duration::from_millis(DECISION_TIMEOUT_MS),
        framing::read_frame::<Decision>(&mut recv, REQUEST_HEADER_BYTES_MAX),
    )
    .await;
    let Ok(Ok(Decision::Commit { version })) = decision else {
        // Abort, or the coordinator went away: nothing becomes visible.
        return;
    };
    let stored = commit(state, writer, hash, version).await;
    respond(&mut send, &stored).await;
}

/// Makes a received copy durable off the async threads (`replica::commit_copy`); the answer
/// to send.
async fn commit(state: &Arc<State>, writer: BlobWriter, hash: Hash, version: u64) -> Response {
    let s = state.clone();
    let committed =
        crate::task::spawn_blocking(move || replica::commit_copy(&s, writer, hash, version)).await;
    match committed.map_err(LocalError::from).and_then(|r| r) {
        Ok(()) => Response::Stored {
            hash: *hash.as_bytes(),
            existed: false,
        },
        Err(e) => Response::error(e.code(), e.to_string()),
    }
}

/// A copy from a peer's healer (anti-entropy, hand-off) or hint: receive, check, store
/// durably.
pub(super) async fn store_copy(
    state: &Arc<State>,
    hash: Hash,
    len: u64,
    version: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let writer = match receive(state, hash, len, &mut recv).await {
        Ok(writer) => writer,
        Err(e) => return fail(&mut send, e.code(), e.to_string()).await,
    };
    let stored = commit(state, writer, hash, version).await;
    respond(&mut send, &stored).await;
}

/// A delete from a coordinator: this node's copy only.
pub(super) async fn replica_delete(
    state: &Arc<State>,
    hash: Hash,
    version: u64,
    mut send: quinn::SendStream,
) {
    let response = match replica::local_delete(state, hash, version).await {
        Ok(existed) => Response::Deleted { existed },
        Err(e) => Response::error(e.code(), e.to_string()),
    };
    respond(&mut send, &response).await
}

/// Read repair: queue a copy of a blob held here to replicas found without it.
pub(super) fn repair(
    state: &State,
    routing: &Routing,
    hash: Hash,
    targets: Vec<String>,
) -> Response {
    if targets.len() > REPAIR_TARGETS_MAX {
        return Response::error(
            ErrorCode::BadRequest,
            format!("more than {REPAIR_TARGETS_MAX} repair targets"),
        );
    }
    if !matches!(state.store.stat(&hash), Ok(BlobStat::Present { .. })) {
        return Response::error(ErrorCode::NotFound, "not held here");
    }
    let replicas = routing.replicas(&hash);
    for target in &targets {
        if target != &state.id && replicas.iter().any(|n| &n.id == target) {
            state.hint(hash, target, HintKind::Put);
        }
    }
    Response::RepairQueued
}
