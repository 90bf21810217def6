//! The copy of one blob between this node and a peer: a push of a blob held here (`Op::Store`:
//! the receiver keeps it only if no newer tombstone of the hash stands there, so a late copy
//! never undoes a delete) and a fetch of a peer's blob (`Op::Get`, verified here before it is
//! kept). Hint delivery and the healer's transfers use them.

use std::time::Duration;

use cairn_client::ClientError;
use cairn_client::pool::read_response;
use cairn_core::Routing;
use cairn_core::heal::Catalog;
use cairn_core::layout::NodeSpec;
use cairn_core::wire::{Op, Request, Response};
use cairn_engine::Hash;

use crate::limits::{BODY_CHUNK_BYTES_MAX, REPLICA_RESPONSE_TIMEOUT_MS};
use crate::replica::{self, LocalError};
use crate::state::State;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{node}: the stream failed: {message}")]
    Stream { node: String, message: String },
    #[error("{node}: unexpected answer {response:?}")]
    Unexpected {
        node: String,
        response: Box<Response>,
    },
    #[error("{node}: the stream ended after {received} of {len} bytes")]
    Truncated {
        node: String,
        received: u64,
        len: u64,
    },
    #[error("{node}: sent more than the {len} bytes it announced")]
    TooLong { node: String, len: u64 },
    #[error("{node}'s copy hashes to {actual}, not {expected}")]
    Corrupt {
        node: String,
        expected: Hash,
        actual: Hash,
    },
    #[error("this node's copy: {0}")]
    Local(#[from] LocalError),
    #[error("the local copy is gone")]
    Gone,
    #[error("{node} is not in the layout")]
    NotInLayout { node: String },
    #[error("{node}: no answer within {ms} ms")]
    Timeout { node: String, ms: u64 },
    #[error(transparent)]
    Refused(#[from] replica::CopyRefused),
}

/// Copies a blob held here to one node as a copy (`Store`), with the version this node
/// holds it at.
pub(crate) async fn push_copy(
    state: &State,
    routing: &Routing,
    node: &NodeSpec,
    hash: Hash,
    blob: &[u8],
) -> Result<(), CopyError> {
    let request = Request {
        layout_version: routing.layout.version,
        op: Op::Store {
            hash: *hash.as_bytes(),
            len: blob.len() as u64,
            version: state
                .catalog
                .entry(hash.as_bytes())
                .map_or(0, |e| e.version),
        },
    };
    let stream = |e: &dyn std::fmt::Display| CopyError::Stream {
        node: node.id.clone(),
        message: e.to_string(),
    };
    let work = async {
        let (mut send, mut recv) = state.pool.open(node, &request).await?;
        send.write_all(blob).await.map_err(|e| stream(&e))?;
        let _ = send.finish();
        match read_response(&node.id, &mut recv).await? {
            Response::Stored { .. } => Ok(()),
            other => Err(CopyError::Unexpected {
                node: node.id.clone(),
                response: Box::new(other),
            }),
        }
    };
    match tokio::time::timeout(Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS), work).await {
        Ok(result) => result,
        Err(_) => Err(CopyError::Timeout {
            node: node.id.clone(),
            ms: REPLICA_RESPONSE_TIMEOUT_MS,
        }),
    }
}

/// Fetches a peer's copy of a blob, checks its hash, and keeps it here durably with `version`
/// (unless a newer tombstone stands here). Returns the bytes copied.
pub(crate) async fn fetch_copy(
    state: &std::sync::Arc<State>,
    routing: &Routing,
    node: &NodeSpec,
    hash: Hash,
    version: u64,
) -> Result<u64, CopyError> {
    replica::refuse_copy_while_layout_unadopted(state)?;
    let request = Request {
        layout_version: routing.layout.version,
        op: Op::Get {
            hash: *hash.as_bytes(),
            range: None,
        },
    };
    let (response, mut recv) = state.pool.call(node, &request).await?;
    let len = match response {
        Response::Blob { len, .. } => len,
        other => {
            return Err(CopyError::Unexpected {
                node: node.id.clone(),
                response: Box::new(other),
            });
        }
    };
    let mut writer = replica::open_writer(&state.store, hash, len)
        .await
        .map_err(|e| CopyError::Local(e.into()))?;
    let mut left = len;
    while left > 0 {
        let chunk = recv
            .read_chunk(BODY_CHUNK_BYTES_MAX, true)
            .await
            .map_err(|e| CopyError::Stream {
                node: node.id.clone(),
                message: e.to_string(),
            })?
            .ok_or(CopyError::Truncated {
                node: node.id.clone(),
                received: len - left,
                len,
            })?;
        left = left
            .checked_sub(chunk.bytes.len() as u64)
            .ok_or(CopyError::TooLong {
                node: node.id.clone(),
                len,
            })?;
        writer
            .write(&chunk.bytes)
            .map_err(|e| CopyError::Local(e.into()))?;
    }
    if writer.hash() != hash {
        return Err(CopyError::Corrupt {
            node: node.id.clone(),
            expected: hash,
            actual: writer.hash(),
        });
    }
    let s = state.clone();
    crate::task::spawn_blocking(move || replica::commit_copy(&s, writer, hash, version))
        .await
        .map_err(LocalError::from)??;
    Ok(len)
}
