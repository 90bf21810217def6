//! Taking connections and streams within the node's limits, reading each request's header in
//! time, refusing clients on an older layout, and handing each request to its handler.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::framing::{self, FramingError};
use cairn_core::limits::REQUEST_HEADER_BYTES_MAX;
use cairn_core::wire::{self, DeleteRole, ErrorCode, FrameError, Op, PutRole, Request, Response};
use cairn_engine::Hash;

use super::blobs::GetTurns;
use super::identity::PeerIdentity;
use super::{blobs, coordinator, fail, peer, respond};
use crate::limits::HEADER_TIMEOUT_MS;
use crate::state::State;

/// Accepts connections until the endpoint closes; each stream becomes a task.
pub(crate) async fn accept_loop(state: Arc<State>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = state.connections.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "connection limit reached");
            incoming.refuse();
            continue;
        };
        let state = state.clone();
        crate::task::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "handshake refused");
                    return;
                }
            };
            let identity = Arc::new(PeerIdentity::of(&conn));
            let turns = Arc::new(GetTurns::new());
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (identity, turns) = (identity.clone(), turns.clone());
                crate::task::spawn(handle_stream(state.clone(), identity, turns, send, recv));
            }
            drop(permit);
        });
    }
}

async fn handle_stream(
    state: Arc<State>,
    identity: Arc<PeerIdentity>,
    turns: Arc<GetTurns>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Ok(_permit) = state.requests.clone().try_acquire_owned() else {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        return fail(&mut send, ErrorCode::Busy, "too many requests in flight").await;
    };
    let header = tokio::time::timeout(
        Duration::from_millis(HEADER_TIMEOUT_MS),
        framing::read_frame::<Request>(&mut recv, REQUEST_HEADER_BYTES_MAX),
    )
    .await;
    let request = match header {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            let code = match e {
                FramingError::Frame(FrameError::TooLarge { .. }) => ErrorCode::HeaderTooLarge,
                _ => ErrorCode::BadRequest,
            };
            let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
            return fail(&mut send, code, format!("request header: {e}")).await;
        }
        Err(_) => {
            let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
            let message = format!("no request header within {HEADER_TIMEOUT_MS} ms");
            return fail(&mut send, ErrorCode::BadRequest, message).await;
        }
    };
    let routing = state.routing();
    let from_client = matches!(
        request.op,
        Op::Put {
            role: PutRole::Coordinate,
            ..
        } | Op::Get { .. }
            | Op::Head { .. }
            | Op::Delete {
                role: DeleteRole::Coordinate,
                ..
            }
            | Op::Refresh {
                role: PutRole::Coordinate,
                ..
            }
    );
    if from_client && request.layout_version < routing.layout.version {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        let layout = routing.layout.clone();
        return respond(&mut send, &Response::StaleLayout { layout }).await;
    }
    // A client's put keeps its blob from the collector (`meta::marks`); the node's own fronts
    // say for themselves (the HTTP front holds what it stores, the S3 front marks it).
    if let Op::Put {
        hash,
        role: PutRole::Coordinate,
        ..
    }
    | Op::Refresh {
        hash,
        role: PutRole::Coordinate,
        ..
    } = request.op
        && !identity.is_node()
    {
        crate::meta::marks::hold(&state, &hash);
    }
    match request.op {
        Op::Put { hash, len, role } => {
            let hash = Hash::from_bytes(hash);
            if len > cairn_engine::limits::BLOB_BYTES_MAX {
                let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
                let max = cairn_engine::limits::BLOB_BYTES_MAX;
                let message = format!("blob of {len} bytes is over the {max}-byte limit");
                return fail(&mut send, ErrorCode::BlobTooLarge, message).await;
            }
            match role {
                PutRole::Coordinate => {
                    coordinator::put(&state, &routing, hash, len, send, recv).await
                }
                PutRole::Replica => blobs::replica_put(&state, hash, len, send, recv).await,
            }
        }
        Op::Get { hash, range } => {
            blobs::get(&state, &turns, Hash::from_bytes(hash), range, send).await
        }
        Op::Head { hash } => blobs::head(&state, Hash::from_bytes(hash), send).await,
        Op::Delete {
            hash,
            role,
            version,
        } => {
            let hash = Hash::from_bytes(hash);
            match role {
                DeleteRole::Coordinate => {
                    // Any delete but the collector's (a node's, conditional) is the native
                    // API's.
                    let native = version == 0 || !identity.is_node();
                    coordinator::delete(&state, &routing, hash, version, native, send).await
                }
                DeleteRole::Replica => blobs::replica_delete(&state, hash, version, send).await,
            }
        }
        Op::FetchLayout => {
            let layout = routing.layout.clone();
            let previous = routing.previous.as_ref().map(|p| p.layout.clone());
            respond(&mut send, &Response::Layout { layout, previous }).await
        }
        Op::Store { hash, len, version } => {
            if len > cairn_engine::limits::BLOB_BYTES_MAX {
                let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
                return fail(
                    &mut send,
                    ErrorCode::BlobTooLarge,
                    "copy over the blob limit",
                )
                .await;
            }
            blobs::store_copy(&state, Hash::from_bytes(hash), len, version, send, recv).await
        }
        Op::Peer { len } => peer::request(&state, &identity, len, send, recv).await,
        Op::Repair { hash, targets } => {
            let response = blobs::repair(&state, &routing, Hash::from_bytes(hash), targets);
            respond(&mut send, &response).await
        }
        Op::Refresh {
            hash,
            len,
            role,
            version,
        } => {
            let hash = Hash::from_bytes(hash);
            match role {
                PutRole::Coordinate => {
                    coordinator::refresh(&state, &routing, hash, len, send).await
                }
                PutRole::Replica => {
                    coordinator::refresh_replica(&state, hash, len, version, send).await
                }
            }
        }
    }
}
