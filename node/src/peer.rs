//! The node protocol: heartbeats, anti-entropy, status and layout changes, carried by
//! `Op::Peer` streams as postcard messages (`PeerMsg` in, `PeerReply` out). Nodes speak it to
//! each other; the `cairn` command speaks it for `status` and `layout`.

use cairn_client::ClientError;
use cairn_client::layout::{Layout, NodeSpec};
use cairn_client::pool::{Pool, read_response};
use cairn_client::wire::{self, Op, Request, Response};
use serde::{Deserialize, Serialize};

use crate::heal::HealMsg;
use crate::membership::{NodeReport, PeerState};

/// A message of the node protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerMsg {
    Heartbeat {
        from: String,
        report: NodeReport,
    },
    Heal {
        from: String,
        msg: HealMsg,
    },
    /// What `cairn status` shows.
    Status,
    /// Adopt this layout if it is newer (from `cairn layout`, or a peer passing it on).
    ApplyLayout {
        layout: Layout,
    },
    /// Send your layout and the one before it.
    FetchLayouts,
    /// A metadata request (`meta::cluster`).
    Meta {
        from: String,
        msg: crate::meta::cluster::MetaMsg,
    },
    /// Start a garbage collection (from `cairn gc`).
    GcStart,
    /// How is the garbage collection going?
    GcStatus,
}

/// The answer to a `PeerMsg`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerReply {
    /// The answer to a heartbeat, with the receiver's layout version: a sender with a newer
    /// layout offers it (the receiver may not know the sender, so could not fetch it).
    HeartbeatAck {
        layout_version: u64,
    },
    Heal {
        msg: Option<HealMsg>,
    },
    Status(Box<NodeStatus>),
    LayoutApplied {
        version: u64,
    },
    Layouts {
        layout: Layout,
        previous: Option<Layout>,
    },
    Refused {
        message: String,
    },
    Meta(crate::meta::cluster::MetaReply),
    Gc {
        /// A collection was started by this request (false: one was already running).
        started: bool,
        status: crate::s3::gc::GcStatus,
    },
}

/// One node's view of itself and its peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub report: NodeReport,
    pub peers: Vec<PeerStatus>,
    pub hints_pending: u64,
    pub tombstones: u64,
    pub transfers_queued: u64,
    pub transfers_in_flight: u64,
    pub sessions_completed: u64,
    pub scrub_verified_blobs: u64,
    /// Corrupt copies found here by the scrub, and by any read.
    pub scrub_corrupt_found: u64,
    pub corrupt_found: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    pub state: PeerState,
    /// Milliseconds since its last heartbeat (`None`: never heard).
    pub silent_ms: Option<u64>,
    pub report: Option<NodeReport>,
}

/// Why a node-protocol call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerCallError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{node}: {message}")]
    Protocol { node: String, message: String },
}

fn protocol(node: &NodeSpec, message: impl Into<String>) -> PeerCallError {
    PeerCallError::Protocol {
        node: node.id.clone(),
        message: message.into(),
    }
}

/// Sends one message to a node and reads its reply.
pub async fn call(
    pool: &Pool,
    node: &NodeSpec,
    layout_version: u64,
    msg: &PeerMsg,
) -> Result<PeerReply, PeerCallError> {
    let body = postcard::to_allocvec(msg).map_err(|e| protocol(node, e.to_string()))?;
    if body.len() > wire::PEER_MESSAGE_BYTES_MAX {
        return Err(protocol(node, "message over PEER_MESSAGE_BYTES_MAX"));
    }
    let request = Request {
        layout_version,
        op: Op::Peer {
            len: body.len() as u32,
        },
    };
    let (mut send, mut recv) = pool.open(node, &request).await?;
    send.write_all(&body)
        .await
        .map_err(|e| protocol(node, e.to_string()))?;
    let _ = send.finish();
    match read_response(&node.id, &mut recv).await? {
        Response::Peer { len } => {
            let len = len as usize;
            if len > wire::PEER_MESSAGE_BYTES_MAX {
                return Err(protocol(node, "reply over PEER_MESSAGE_BYTES_MAX"));
            }
            let mut buf = vec![0u8; len];
            recv.read_exact(&mut buf)
                .await
                .map_err(|e| protocol(node, e.to_string()))?;
            wire::decode_frame(&buf).map_err(|e| protocol(node, e.to_string()))
        }
        Response::Error { code, message } => Err(protocol(node, format!("{code}: {message}"))),
        other => Err(protocol(node, format!("unexpected answer {other:?}"))),
    }
}
