//! What nodes report of themselves and what the `cairn` command makes of it: one node's
//! status ([`NodeStatus`], carried by the node protocol), the cluster view `cairn status` and
//! `GET /v1/cluster` show ([`ClusterStatus`]), where a layout change stands ([`MoveProgress`]),
//! and the garbage collector's progress ([`GcStatus`]). Data and pure functions over it.

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, NodeSpec};
use crate::membership::{NodeReport, PeerState};

/// One node's view of itself and its peers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

/// Where a collection stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    pub running: bool,
    /// "marks", "references", "deleting", or "done".
    pub phase: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub marks_scanned: u64,
    pub candidates: u64,
    pub referenced_blobs: u64,
    /// Candidates looked at in the deleting phase.
    pub examined: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Candidates kept: referred to, or touched again since the collection began.
    pub kept: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Collections finished since the node started.
    pub runs: u64,
    /// Why the last collection did not start (a layout change still moving data); cleared by
    /// the next collection that runs.
    pub postponed: Option<String>,
}

/// What `cairn status` prints and `GET /v1/cluster` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub layout_version: u64,
    pub replication_factor: usize,
    pub write_quorum: usize,
    pub zones: usize,
    pub nodes: Vec<NodeLine>,
}

/// One node in a [`ClusterStatus`]. Figures are absent for a node that did not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLine {
    pub id: String,
    pub zone: String,
    /// `up`, `suspect`, `down` or `unreachable`: what the answering nodes' failure detectors
    /// say of it, by majority.
    pub state: &'static str,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub blobs: Option<u64>,
    pub misplaced_bytes: Option<u64>,
    pub layout_version: Option<u64>,
    pub hints_pending: Option<u64>,
    pub transfers_pending: Option<u64>,
    pub error: Option<String>,
}

impl ClusterStatus {
    pub fn of<E: Display>(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, E>)]) -> Self {
        let mut seen: BTreeMap<&str, Vec<PeerState>> = BTreeMap::new();
        for (_, s) in statuses {
            if let Ok(s) = s {
                for p in &s.peers {
                    seen.entry(p.id.as_str()).or_default().push(p.state);
                }
            }
        }
        let nodes = statuses
            .iter()
            .map(|(node, s)| {
                let views = seen.get(node.id.as_str()).cloned().unwrap_or_default();
                let up = views.iter().filter(|v| **v == PeerState::Up).count();
                let state = match s {
                    Ok(_) if views.is_empty() || up * 2 >= views.len() => "up",
                    Ok(_) => "suspect",
                    Err(_) if views.contains(&PeerState::Down) => "down",
                    Err(_) => "unreachable",
                };
                let ok = s.as_ref().ok();
                NodeLine {
                    id: node.id.clone(),
                    zone: node.zone.clone(),
                    state,
                    used_bytes: ok.map(|s| s.report.used_bytes),
                    free_bytes: ok.map(|s| s.report.free_bytes),
                    blobs: ok.map(|s| s.report.blob_count),
                    misplaced_bytes: ok.map(|s| s.report.misplaced_bytes),
                    layout_version: ok.map(|s| s.report.layout_version),
                    hints_pending: ok.map(|s| s.hints_pending),
                    transfers_pending: ok.map(|s| s.transfers_queued + s.transfers_in_flight),
                    error: s.as_ref().err().map(|e| e.to_string()),
                }
            })
            .collect();
        ClusterStatus {
            layout_version: layout.version,
            replication_factor: layout.replication_factor,
            write_quorum: layout.write_quorum,
            zones: layout.zone_count(),
            nodes,
        }
    }
}

/// Where a layout change stands, summed over the nodes that answered: those of the layout and
/// those only the previous layout had (they hand off what they hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveProgress {
    pub layout_version: u64,
    pub nodes_on_version: usize,
    pub nodes_answering: usize,
    pub nodes_total: usize,
    /// Nodes that say everything they hold is where the layout places it.
    pub nodes_settled: usize,
    /// Nodes of the layout that did not answer, and nodes that left it but still answer and
    /// are not empty: the change is not over while there are any.
    pub nodes_waited_for: Vec<String>,
    pub moved_bytes: u64,
    pub misplaced_bytes: u64,
    pub transfers_pending: u64,
}

impl MoveProgress {
    pub fn of<E>(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, E>)]) -> Self {
        let mut p = MoveProgress {
            layout_version: layout.version,
            nodes_total: statuses.len(),
            ..Default::default()
        };
        for (node, s) in statuses {
            let member = layout.node_index(&node.id).is_some();
            let Ok(s) = s else {
                if member {
                    p.nodes_waited_for.push(node.id.clone());
                }
                continue;
            };
            p.nodes_answering += 1;
            let on_version = s.report.layout_version == layout.version;
            if on_version {
                p.nodes_on_version += 1;
            }
            if on_version && s.report.settled {
                p.nodes_settled += 1;
            } else {
                p.nodes_waited_for.push(node.id.clone());
            }
            p.moved_bytes += s.report.moved_bytes;
            p.misplaced_bytes += s.report.misplaced_bytes;
            p.transfers_pending += s.transfers_queued + s.transfers_in_flight;
        }
        p
    }

    /// Every copy is where the layout places it: every node of the layout answered, runs it
    /// and is settled, and so is every node that left it and still answers.
    pub fn done(&self) -> bool {
        self.nodes_answering > 0
            && self.nodes_waited_for.is_empty()
            && self.misplaced_bytes == 0
            && self.transfers_pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            addr: "127.0.0.1:7000".parse().unwrap(),
            zone: "z".into(),
            weight: 1,
        }
    }

    fn status(id: &str, version: u64, settled: bool) -> Result<NodeStatus, String> {
        Ok(NodeStatus {
            id: id.into(),
            report: NodeReport {
                layout_version: version,
                settled,
                ..NodeReport::default()
            },
            ..NodeStatus::default()
        })
    }

    #[test]
    fn moves_are_done_only_when_every_node_is_settled_and_the_removed_ones_are_empty() {
        let layout = Layout {
            version: 2,
            replication_factor: 1,
            write_quorum: 1,
            nodes: vec![node("a"), node("b")],
        };
        let done = |statuses: Vec<(NodeSpec, Result<NodeStatus, String>)>| {
            MoveProgress::of(&layout, &statuses).done()
        };
        assert!(done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
        ]));
        // Nothing misplaced is reported yet, but b has not finished its first pass.
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, false)),
        ]));
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), Err("unreachable".into())),
        ]));
        // A removed node that still answers must be empty; one that does not is not awaited.
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
            (node("gone"), status("gone", 2, false)),
        ]));
        assert!(done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
            (node("gone"), Err("unreachable".into())),
        ]));
    }
}
