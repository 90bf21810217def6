//! Readiness: whether this node can serve now, for `/readyz` (a load balancer takes a node
//! out of rotation on a 503, with the reason).

use cairn_core::membership::PeerState;
use cairn_core::quorum::Quorums;

use crate::state::State;

/// Why a node is not ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    #[error("the engine is read-only: {reason}")]
    ReadOnly { reason: String },
    #[error("this node is not in layout version {version}")]
    NotInLayout { version: u64 },
    #[error("{up} of {nodes} nodes are up; a read quorum needs {needed}")]
    TooFewUp {
        up: usize,
        nodes: usize,
        needed: usize,
    },
}

/// Whether this node can serve: its engine takes writes, it is in the layout, and enough of
/// the layout's nodes are up (itself included) for a read quorum.
pub(super) fn readiness(state: &State) -> Result<(), NotReady> {
    if let Some(reason) = state.store.stats().read_only {
        return Err(NotReady::ReadOnly {
            reason: format!("{reason:?}"),
        });
    }
    let routing = state.routing();
    let layout = &routing.layout;
    if layout.node_index(&state.id).is_none() {
        return Err(NotReady::NotInLayout {
            version: layout.version,
        });
    }
    let needed = Quorums::of(layout, layout.replication_factor).read;
    let up = 1 + state
        .healing
        .membership
        .lock()
        .view()
        .filter(|v| v.state == PeerState::Up && layout.node_index(&v.id).is_some())
        .count();
    if up < needed {
        return Err(NotReady::TooFewUp {
            up,
            nodes: layout.nodes.len(),
            needed,
        });
    }
    Ok(())
}
