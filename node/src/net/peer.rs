//! One node-protocol call: a [`PeerMsg`] out on its own stream (`Op::Peer`), its
//! [`PeerReply`] back, bounded in size and time. Nodes call each other for heartbeats,
//! anti-entropy and metadata; the `cairn` command calls nodes for status, layouts and `gc`.

use std::time::Duration;

use cairn_client::ClientError;
use cairn_client::pool::{Pool, read_response};
use cairn_core::Routing;
use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::limits::PEER_MESSAGE_BYTES_MAX;
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_core::wire::{self, ErrorCode, FrameError, Op, Request, Response};

use crate::limits::PEER_CALL_TIMEOUT_MS;
use crate::state::State;

/// Why a node-protocol call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerCallError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{node} is not in the layout")]
    NotInLayout { node: String },
    #[error("{node}: the message is over the {PEER_MESSAGE_BYTES_MAX}-byte limit")]
    TooLarge { node: String },
    #[error("{node}: {source}")]
    Frame { node: String, source: FrameError },
    #[error("{node}: the stream failed: {source}")]
    Stream {
        node: String,
        source: std::io::Error,
    },
    /// The node answered the call with an error of its own.
    #[error("{node} answered {code}: {message}")]
    Refused {
        node: String,
        code: ErrorCode,
        message: String,
    },
    #[error("{node}: unexpected answer {response:?}")]
    Unexpected {
        node: String,
        response: Box<Response>,
    },
    /// The node understood the message and declined it, saying why.
    #[error("{node} declined: {message}")]
    Declined { node: String, message: String },
    #[error("{node}: unexpected reply {reply:?}")]
    UnexpectedReply { node: String, reply: Box<PeerReply> },
    #[error("{node}: no answer within {ms} ms")]
    Timeout { node: String, ms: u64 },
}

impl PeerCallError {
    /// Whether trying again (later) may succeed: the node may be restarting, or not yet
    /// known to be up.
    pub fn is_transient(&self) -> bool {
        match self {
            PeerCallError::Client(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Sends one message to a node and reads its reply.
pub async fn call(
    pool: &Pool,
    node: &NodeSpec,
    layout_version: u64,
    msg: &PeerMsg,
) -> Result<PeerReply, PeerCallError> {
    let frame = |source| PeerCallError::Frame {
        node: node.id.clone(),
        source,
    };
    let stream = |source| PeerCallError::Stream {
        node: node.id.clone(),
        source,
    };
    let body =
        postcard::to_allocvec(msg).map_err(|e| frame(FrameError::Malformed(e.to_string())))?;
    if body.len() > PEER_MESSAGE_BYTES_MAX {
        return Err(PeerCallError::TooLarge {
            node: node.id.clone(),
        });
    }
    let request = Request {
        layout_version,
        op: Op::Peer {
            len: body.len() as u32,
        },
    };
    let (mut send, mut recv) = pool.open(node, &request).await?;
    send.write_all(&body).await.map_err(|e| stream(e.into()))?;
    let _ = send.finish();
    match read_response(&node.id, &mut recv).await? {
        Response::Peer { len } => {
            let len = len as usize;
            if len > PEER_MESSAGE_BYTES_MAX {
                return Err(PeerCallError::TooLarge {
                    node: node.id.clone(),
                });
            }
            let mut buf = vec![0u8; len];
            recv.read_exact(&mut buf)
                .await
                .map_err(|e| stream(std::io::Error::other(e)))?;
            wire::decode_frame(&buf).map_err(frame)
        }
        Response::Error { code, message } => Err(PeerCallError::Refused {
            node: node.id.clone(),
            code,
            message,
        }),
        other => Err(PeerCallError::Unexpected {
            node: node.id.clone(),
            response: Box::new(other),
        }),
    }
}

/// [`call`], given up after `PEER_CALL_TIMEOUT_MS`.
pub async fn call_bounded(
    pool: &Pool,
    node: &NodeSpec,
    layout_version: u64,
    msg: &PeerMsg,
) -> Result<PeerReply, PeerCallError> {
    let wait = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
    match tokio::time::timeout(wait, call(pool, node, layout_version, msg)).await {
        Ok(result) => result,
        Err(_) => Err(PeerCallError::Timeout {
            node: node.id.clone(),
            ms: PEER_CALL_TIMEOUT_MS,
        }),
    }
}

/// A node-protocol call from this node to a peer named by id, bounded in time.
pub(crate) async fn call_peer(
    state: &State,
    peer: &str,
    msg: &PeerMsg,
) -> Result<PeerReply, PeerCallError> {
    let routing = state.routing();
    let node = find_node(&routing, peer).ok_or_else(|| PeerCallError::NotInLayout {
        node: peer.to_string(),
    })?;
    call_bounded(&state.pool, &node, routing.layout.version, msg).await
}

/// A node of the current layout, or of the previous one (a node being removed).
pub(crate) fn find_node(routing: &Routing, id: &str) -> Option<NodeSpec> {
    let find = |l: &Layout| l.nodes.iter().find(|n| n.id == id).cloned();
    find(&routing.layout).or_else(|| routing.previous.as_ref().and_then(|p| find(&p.layout)))
}
