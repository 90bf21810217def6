//! Readiness, for a load balancer or an orchestrator: `/readyz` says whether this node can
//! serve reads, `/readyz/writes` whether it can also take writes. A node whose disk is full or
//! whose engine went read-only still serves every blob it and its peers hold, so it stays in
//! rotation for reads (and must not be restarted for it); only writes go elsewhere.

use cairn_core::membership::PeerState;
use cairn_core::quorum::Quorums;
use cairn_core::status::DiskState;

use crate::healing::status;
use crate::space;
use crate::state::State;

/// Why a node is not ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    #[error("the engine is read-only: {reason}")]
    ReadOnly { reason: String },
    #[error("the disk is full ({free_bytes} bytes free)")]
    DiskFull { free_bytes: u64 },
    #[error("this node is not in layout version {version}")]
    NotInLayout { version: u64 },
    #[error("{up} of {nodes} nodes are up; a {what} quorum needs {needed}")]
    TooFewUp {
        up: usize,
        nodes: usize,
        needed: usize,
        what: &'static str,
    },
}

/// Nodes of the layout up (this one included), and those of them that take writes.
fn nodes_up(state: &State) -> (usize, usize) {
    let routing = state.routing();
    let layout = &routing.layout;
    let membership = state.healing.membership.lock();
    let peers: Vec<_> = membership
        .view()
        .filter(|v| v.state == PeerState::Up && layout.node_index(&v.id).is_some())
        .collect();
    let writable = peers
        .iter()
        .filter(|v| v.report.as_ref().is_none_or(|r| r.writable))
        .count();
    (1 + peers.len(), writable)
}

/// Whether this node can serve reads: it is in the layout and enough of the layout's nodes
/// are up (itself included) for a read quorum.
pub(super) fn readiness(state: &State) -> Result<(), NotReady> {
    let routing = state.routing();
    let layout = &routing.layout;
    if layout.node_index(&state.id).is_none() {
        return Err(NotReady::NotInLayout {
            version: layout.version,
        });
    }
    let needed = Quorums::of(layout, layout.replication_factor).read;
    let (up, _) = nodes_up(state);
    if up < needed {
        return Err(NotReady::TooFewUp {
            up,
            nodes: layout.nodes.len(),
            needed,
            what: "read",
        });
    }
    Ok(())
}

/// Whether this node can take writes: it can serve reads, its engine takes writes, its disk
/// is not full, and enough of the layout's nodes that take writes are up for a write quorum.
pub(super) fn write_readiness(state: &State) -> Result<(), NotReady> {
    readiness(state)?;
    if let Some(reason) = state.store.stats().read_only {
        return Err(NotReady::ReadOnly {
            reason: reason.to_string(),
        });
    }
    let free_bytes = status::report(state).free_bytes;
    if state.space.disk(free_bytes, space::disk_total_bytes(state)) == DiskState::Full {
        return Err(NotReady::DiskFull { free_bytes });
    }
    let routing = state.routing();
    let layout = &routing.layout;
    let (_, writable_peers) = nodes_up(state);
    let writable = 1 + writable_peers;
    if writable < layout.write_quorum {
        return Err(NotReady::TooFewUp {
            up: writable,
            nodes: layout.nodes.len(),
            needed: layout.write_quorum,
            what: "write",
        });
    }
    Ok(())
}
