//! The node protocol: heartbeats, anti-entropy, status, layout changes, metadata and the
//! garbage collector's controls, carried by `Op::Peer` streams as postcard messages
//! ([`PeerMsg`] in, [`PeerReply`] out). Nodes speak it to each other; the `cairn` command
//! speaks it for `status`, `layout`, `gc`, `repair`, `scrub`, `key` and `bucket`. Data only: who answers what is the node's.

use serde::{Deserialize, Serialize};

use crate::heal::HealMsg;
use crate::keys::{KeysAnswer, KeysRequest};
use crate::layout::Layout;
use crate::membership::NodeReport;
use crate::meta::{MetaMsg, MetaReply};
use crate::status::{GcStatus, NodeStatus};

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
    /// A metadata request.
    Meta {
        from: String,
        msg: MetaMsg,
    },
    /// Start a garbage collection (from `cairn gc`).
    GcStart,
    /// How is the garbage collection going?
    GcStatus,
    /// Compare with every peer now (from `cairn repair`).
    RepairNow,
    /// Start a scrub pass now; where the scheduled scrub is off, one pass runs at
    /// `bytes_per_sec` (from `cairn scrub`).
    ScrubNow {
        bytes_per_sec: u64,
    },
    /// Manage access keys and buckets (from `cairn key` and `cairn bucket`). Since protocol
    /// `cairn/5`: a node of `cairn/4` cannot decode it, and the command refuses to send it to
    /// one.
    Keys(KeysRequest),
}

impl PeerMsg {
    /// The oldest protocol version that has this message (see `wire::ALPNS_SPOKEN`).
    pub fn since_protocol(&self) -> u32 {
        match self {
            PeerMsg::Keys(_) => 5,
            _ => 4,
        }
    }

    /// The node a message speaks for, if it speaks for one: the receiver acts on it as that
    /// node's word, so the connection's certificate must name that node.
    pub fn sender(&self) -> Option<&str> {
        match self {
            PeerMsg::Heartbeat { from, .. }
            | PeerMsg::Heal { from, .. }
            | PeerMsg::Meta { from, .. } => Some(from),
            PeerMsg::Status
            | PeerMsg::ApplyLayout { .. }
            | PeerMsg::FetchLayouts
            | PeerMsg::GcStart
            | PeerMsg::GcStatus
            | PeerMsg::RepairNow
            | PeerMsg::ScrubNow { .. }
            | PeerMsg::Keys(_) => None,
        }
    }
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
    Meta(MetaReply),
    Gc {
        /// A collection was started by this request (false: one was already running).
        started: bool,
        status: GcStatus,
    },
    /// Anti-entropy sessions with every peer up are due from `started_ms` (the node's clock).
    RepairStarted {
        started_ms: u64,
    },
    /// A scrub pass is under way (`already`: it was before this request).
    ScrubStarted {
        already: bool,
    },
    /// Since `cairn/5`.
    Keys(KeysAnswer),
}
