//! A replica's side of blob requests: get and head from the engine, a coordinator's put
//! (receive, check, say `Prepared`, then commit or abort as told), a healer's copy, a
//! coordinator's delete, and a read repair's request for copies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use cairn_client::framing;
use cairn_core::Routing;
use cairn_core::hints::HintKind;
use cairn_core::limits::{REPAIR_TARGETS_MAX, REQUEST_HEADER_BYTES_MAX, RESPONSE_HEADER_BYTES_MAX};
use cairn_core::wire::{self, ByteRange, Decision, ErrorCode, Response};
use cairn_engine::{BlobStat, BlobWriter, Hash};

use super::body::receive;
use super::{fail, respond};
use crate::limits::{
    DECISION_TIMEOUT_MS, GET_SEND_BYTES_MAX, GET_TURN_HOLD_MS_MAX, GET_TURN_WAIT_MS_MAX,
    GET_UNQUEUED_BYTES_MAX,
};
use crate::replica::{self, LocalError, engine_code, is_corrupt};
use crate::state::State;

/// One connection's turns at sending get responses: `GET_SEND_BYTES_MAX` bytes, handed out
/// in the order gets ask (tokio's semaphore is fair), each held until the peer has
/// acknowledged the whole response or for `GET_TURN_HOLD_MS_MAX`, whichever comes first.
/// Without them, a connection carrying more gets than its window let the newest ones send
/// first.
pub(super) struct GetTurns(tokio::sync::Semaphore);

impl GetTurns {
    pub(super) fn new() -> GetTurns {
        GetTurns(tokio::sync::Semaphore::new(GET_SEND_BYTES_MAX as usize))
    }

    /// Whether a response of `bytes` waits for a turn: small ones do not.
    fn queues(bytes: u64) -> bool {
        bytes > GET_UNQUEUED_BYTES_MAX
    }

    /// Waits for the turn of a response of `bytes`; none for a small one.
    async fn take(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if !GetTurns::queues(bytes) {
            return None;
        }
        // At most `GET_SEND_BYTES_MAX`, which fits a u32 (checked in `limits`).
        let permits = bytes.min(GET_SEND_BYTES_MAX) as u32;
        // The semaphore is never closed.
        self.0.acquire_many(permits).await.ok()
    }
}

pub(super) async fn get(
    state: &State,
    turns: &GetTurns,
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
    // The turn comes before the read, so a waiting get holds no mapping; a reader that gives
    // up stops waiting, and one that waits too long is told `Busy` and tries another replica.
    let wait = Duration::from_millis(GET_TURN_WAIT_MS_MAX);
    let len = match range {
        None => blob_len,
        Some(r)
            if r.offset
                .checked_add(r.len)
                .is_some_and(|end| end <= blob_len) =>
        {
            r.len
        }
        Some(_) => 0, // out of bounds: refused by the read below, with no turn to wait for
    };
    // A small get, the common case, sets up no wait at all.
    let turn = if !GetTurns::queues(len) {
        None
    } else {
        tokio::select! {
            turn = tokio::time::timeout(wait, turns.take(len)) => match turn {
                Ok(turn) => turn,
                Err(_) => {
                    let message = format!("no turn to send within {GET_TURN_WAIT_MS_MAX} ms");
                    return fail(&mut send, ErrorCode::Busy, message).await;
                }
            },
            _ = send.stopped() => return,
        }
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
    let queued = turn.is_some();
    let sending = async {
        let framed = framing::write_frame(&mut send, &header, RESPONSE_HEADER_BYTES_MAX).await;
        if framed.is_err() {
            return;
        }
        // The transport sends from the mapping itself: no copy of the blob into its buffers.
        if let Err(e) = send.write_chunk(Bytes::from_owner(blob)).await {
            tracing::debug!(%hash, error = %e, "get aborted by the reader");
            return;
        }
        let _ = send.finish();
        if queued {
            // The turn ends once the peer has the whole response.
            let _ = send.stopped().await;
        }
    };
    tokio::pin!(sending);
    let hold = Duration::from_millis(GET_TURN_HOLD_MS_MAX);
    if tokio::time::timeout(hold, &mut sending).await.is_err() {
        // A reader this slow keeps its stream going, but not the connection's turns.
        drop(turn);
        sending.await;
    }
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
    if let Err(refused) = replica::refuse_copy_while_layout_unadopted(state) {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        return fail(&mut send, ErrorCode::StoreFull, refused.to_string()).await;
    }
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

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Polls `f` once: whether it is still waiting.
    async fn waits<F: Future + Unpin>(f: &mut F) -> bool {
        tokio::time::timeout(Duration::ZERO, f).await.is_err()
    }

    #[tokio::test]
    async fn gets_take_their_turns_in_arrival_order_and_small_ones_skip_them() {
        let turns = GetTurns::new();
        let first = turns.take(GET_SEND_BYTES_MAX - 4 * MIB).await;
        assert!(first.is_some(), "a large get holds a turn");

        // 4 MiB are free, but an 8 MiB get asked first: a 4 MiB get asking after it waits
        // behind it rather than overtaking it.
        let mut second = Box::pin(turns.take(8 * MIB));
        assert!(waits(&mut second).await);
        let mut third = Box::pin(turns.take(4 * MIB));
        assert!(
            waits(&mut third).await,
            "a later get overtook an earlier one"
        );

        // A small get does not wait at all.
        let small = tokio::time::timeout(Duration::ZERO, turns.take(GET_UNQUEUED_BYTES_MAX)).await;
        assert!(matches!(small, Ok(None)), "a small get waited for a turn");

        drop(first);
        let second = second.await;
        let third = third.await;
        assert!(second.is_some() && third.is_some());

        // A get larger than the whole budget takes all of it, once the others are done.
        let mut whole = Box::pin(turns.take(64 * MIB));
        assert!(waits(&mut whole).await);
        drop((second, third));
        assert!(whole.await.is_some());
    }
}
