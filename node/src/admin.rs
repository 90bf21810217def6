//! What the `cairn` command does to a running cluster: read every node's status, change the
//! layout (`add`, `remove`, `reweight`, `set-factor`, `rebalance`, `apply`) and follow the data
//! moves a change starts.
//!
//! Layout edits are plain functions from one layout to the next (version + 1), validated
//! before anything is sent. A new layout is offered to every node; nodes that miss it learn it
//! from their peers' heartbeats.

use std::net::SocketAddr;

use cairn_client::layout::{Layout, NodeSpec};
use cairn_client::pool::Pool;
use cairn_client::tls::{self, Identity};
use cairn_client::wire;
use serde::Serialize;

use crate::membership::PeerState;
use crate::peer::{self, NodeStatus, PeerMsg, PeerReply};

/// A node whose share of the used bytes exceeds its share of the capacity by more than this
/// many percentage points makes `rebalance` propose weights from capacities.
pub const REBALANCE_FILL_SPREAD_PERCENT: u64 = 10;

/// Weight a node of the median capacity gets from `rebalance`.
pub const REBALANCE_WEIGHT_UNIT: u64 = 100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("{0}")]
    Layout(#[from] cairn_client::LayoutError),
    #[error("no node of the layout answered: {0}")]
    Unreachable(String),
    #[error("node {0} is already in the layout")]
    Duplicate(String),
    #[error("node {0} is not in the layout")]
    Unknown(String),
    #[error("{0}")]
    Refused(String),
    #[error("TLS: {0}")]
    Tls(#[from] cairn_client::tls::TlsError),
    #[error("cannot bind a local endpoint: {0}")]
    Bind(std::io::Error),
}

/// A connection pool to a cluster, for administration.
pub struct Admin {
    pool: Pool,
    /// The layout used to find nodes (the configured one, or newer once fetched).
    pub layout: Layout,
}

impl Admin {
    pub fn new(layout: Layout, identity: &Identity) -> Result<Admin, AdminError> {
        let endpoint = tls::bind_endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None)
            .map_err(AdminError::Bind)?;
        let config = tls::client_config(identity, wire::ALPN)?;
        Ok(Admin {
            pool: Pool::new(endpoint, config),
            layout,
        })
    }

    async fn call(&self, node: &NodeSpec, msg: &PeerMsg) -> Result<PeerReply, String> {
        call(&self.pool, &self.layout, node, msg).await
    }

    /// The newest layout any node holds (adopted here too).
    pub async fn current_layout(&mut self) -> Result<Layout, AdminError> {
        let mut best: Option<Layout> = None;
        let mut errors = Vec::new();
        for node in self.layout.nodes.clone() {
            match self.call(&node, &PeerMsg::FetchLayouts).await {
                Ok(PeerReply::Layouts { layout, .. }) => {
                    if best.as_ref().is_none_or(|b| layout.version > b.version) {
                        best = Some(layout);
                    }
                }
                Ok(other) => errors.push(format!("{}: {other:?}", node.id)),
                Err(e) => errors.push(format!("{}: {e}", node.id)),
            }
        }
        let layout = best.ok_or_else(|| AdminError::Unreachable(errors.join("; ")))?;
        if layout.version > self.layout.version {
            self.layout = layout.clone();
        }
        Ok(layout)
    }

    /// Every node's status, in layout order (an error for nodes that did not answer).
    pub async fn statuses(&self) -> Vec<(NodeSpec, Result<NodeStatus, String>)> {
        statuses(&self.pool, &self.layout, None).await
    }

    /// Offers `layout` to every node of it and of the current layout. Succeeds once one node
    /// adopted it (the others learn it by gossip); returns what each node said.
    pub async fn apply(&mut self, layout: &Layout) -> Result<Vec<(String, String)>, AdminError> {
        layout.validate()?;
        let mut targets = layout.nodes.clone();
        for n in &self.layout.nodes {
            if !targets.iter().any(|t| t.id == n.id) {
                targets.push(n.clone());
            }
        }
        let msg = PeerMsg::ApplyLayout {
            layout: layout.clone(),
        };
        let mut said = Vec::new();
        let mut adopted = 0;
        for node in &targets {
            let answer = match self.call(node, &msg).await {
                Ok(PeerReply::LayoutApplied { version }) => {
                    adopted += 1;
                    format!("adopted version {version}")
                }
                Ok(PeerReply::Refused { message }) => format!("refused: {message}"),
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(e) => format!("unreachable: {e}"),
            };
            said.push((node.id.clone(), answer));
        }
        if adopted == 0 {
            let all: Vec<String> = said.iter().map(|(n, a)| format!("{n}: {a}")).collect();
            return Err(AdminError::Refused(all.join("; ")));
        }
        self.layout = layout.clone();
        Ok(said)
    }

    /// Starts a garbage collection on the first node that answers (or asks how it goes, with
    /// `start` false); returns that node, whether this call started it, and its progress.
    pub async fn gc(
        &self,
        node: Option<&str>,
        start: bool,
    ) -> Result<(String, bool, crate::s3::gc::GcStatus), AdminError> {
        let msg = if start {
            PeerMsg::GcStart
        } else {
            PeerMsg::GcStatus
        };
        let mut errors = Vec::new();
        for n in self
            .layout
            .nodes
            .iter()
            .filter(|n| node.is_none_or(|id| id == n.id))
        {
            match self.call(n, &msg).await {
                Ok(PeerReply::Gc { started, status }) => {
                    return Ok((n.id.clone(), started, status));
                }
                Ok(PeerReply::Refused { message }) => errors.push(format!("{}: {message}", n.id)),
                Ok(other) => errors.push(format!("{}: unexpected answer {other:?}", n.id)),
                Err(e) => errors.push(format!("{}: {e}", n.id)),
            }
        }
        Err(AdminError::Unreachable(errors.join("; ")))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One node-protocol call, given up after `PEER_CALL_TIMEOUT_MS`.
async fn call(
    pool: &Pool,
    layout: &Layout,
    node: &NodeSpec,
    msg: &PeerMsg,
) -> Result<PeerReply, String> {
    let wait = std::time::Duration::from_millis(crate::healing::PEER_CALL_TIMEOUT_MS);
    match tokio::time::timeout(wait, peer::call(pool, node, layout.version, msg)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// Every node's status, asked of all nodes at once, in layout order; `local` answers for one
/// node without a call (a node reporting on its cluster knows its own status).
pub(crate) async fn statuses(
    pool: &Pool,
    layout: &Layout,
    local: Option<(&str, NodeStatus)>,
) -> Vec<(NodeSpec, Result<NodeStatus, String>)> {
    let asks = layout.nodes.iter().map(|node| async {
        if let Some((id, status)) = &local
            && *id == node.id
        {
            return (node.clone(), Ok(status.clone()));
        }
        let status = match call(pool, layout, node, &PeerMsg::Status).await {
            Ok(PeerReply::Status(s)) => Ok(*s),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        (node.clone(), status)
    });
    join_all(asks.collect()).await
}

/// Runs futures together on the calling task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
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
    pub fn of(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, String>)]) -> Self {
        let mut seen: std::collections::BTreeMap<&str, Vec<PeerState>> = Default::default();
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
                    error: s.as_ref().err().cloned(),
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

fn next(layout: &Layout) -> Layout {
    let mut l = layout.clone();
    l.version += 1;
    l
}

/// The layout with a node added.
pub fn add_node(layout: &Layout, node: NodeSpec) -> Result<Layout, AdminError> {
    if layout.node_index(&node.id).is_some() {
        return Err(AdminError::Duplicate(node.id));
    }
    let mut l = next(layout);
    l.nodes.push(node);
    l.validate()?;
    Ok(l)
}

/// The layout without a node: its data is copied to the nodes the placement now names.
pub fn remove_node(layout: &Layout, id: &str) -> Result<Layout, AdminError> {
    let i = layout
        .node_index(id)
        .ok_or_else(|| AdminError::Unknown(id.to_string()))?;
    let mut l = next(layout);
    l.nodes.remove(i);
    l.validate()?;
    Ok(l)
}

pub fn reweight(layout: &Layout, id: &str, weight: u32) -> Result<Layout, AdminError> {
    let i = layout
        .node_index(id)
        .ok_or_else(|| AdminError::Unknown(id.to_string()))?;
    let mut l = next(layout);
    l.nodes[i].weight = weight;
    l.validate()?;
    Ok(l)
}

/// The layout with another replication factor (and write quorum, by default a majority).
pub fn set_factor(
    layout: &Layout,
    factor: usize,
    write_quorum: Option<usize>,
) -> Result<Layout, AdminError> {
    let mut l = next(layout);
    l.replication_factor = factor;
    l.write_quorum = write_quorum.unwrap_or(factor / 2 + 1);
    l.validate()?;
    Ok(l)
}

/// Weights proportional to each node's capacity (used + free bytes), if some node's share of
/// the used bytes is more than `REBALANCE_FILL_SPREAD_PERCENT` points above its share of the
/// weights; `None` when the cluster is in line. Nodes without a status keep their weight.
pub fn rebalance(layout: &Layout, statuses: &[(String, NodeStatus)]) -> Option<Layout> {
    let used: u64 = statuses.iter().map(|(_, s)| s.report.used_bytes).sum();
    let weights: u64 = layout.nodes.iter().map(|n| n.weight as u64).sum();
    if used == 0 || weights == 0 {
        return None;
    }
    let out_of_line = statuses.iter().any(|(id, s)| {
        let Some(i) = layout.node_index(id) else {
            return false;
        };
        let fill_pct = s.report.used_bytes * 100 / used;
        let weight_pct = layout.nodes[i].weight as u64 * 100 / weights;
        fill_pct > weight_pct + REBALANCE_FILL_SPREAD_PERCENT
    });
    if !out_of_line {
        return None;
    }
    let mut capacities: Vec<u64> = statuses
        .iter()
        .map(|(_, s)| s.report.used_bytes + s.report.free_bytes)
        .filter(|c| *c > 0)
        .collect();
    if capacities.is_empty() {
        return None;
    }
    capacities.sort_unstable();
    let median = capacities[capacities.len() / 2].max(1);
    let mut l = next(layout);
    for (id, s) in statuses {
        if let Some(i) = l.node_index(id) {
            let capacity = s.report.used_bytes + s.report.free_bytes;
            let w = (capacity as u128 * REBALANCE_WEIGHT_UNIT as u128 / median as u128).max(1);
            l.nodes[i].weight = w.min(u32::MAX as u128) as u32;
        }
    }
    l.validate().ok()?;
    Some(l)
}

/// Where a layout change stands, summed over the nodes that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveProgress {
    pub layout_version: u64,
    pub nodes_on_version: usize,
    pub nodes_answering: usize,
    pub nodes_total: usize,
    pub moved_bytes: u64,
    pub misplaced_bytes: u64,
    pub transfers_pending: u64,
}

impl MoveProgress {
    pub fn of(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, String>)]) -> Self {
        let mut p = MoveProgress {
            layout_version: layout.version,
            nodes_total: statuses.len(),
            ..Default::default()
        };
        for (_, s) in statuses {
            let Ok(s) = s else { continue };
            p.nodes_answering += 1;
            if s.report.layout_version == layout.version {
                p.nodes_on_version += 1;
            }
            p.moved_bytes += s.report.moved_bytes;
            p.misplaced_bytes += s.report.misplaced_bytes;
            p.transfers_pending += s.transfers_queued + s.transfers_in_flight;
        }
        p
    }

    /// Every answering node runs the layout and has nothing left to move.
    pub fn done(&self) -> bool {
        self.nodes_answering > 0
            && self.nodes_on_version == self.nodes_answering
            && self.misplaced_bytes == 0
            && self.transfers_pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeReport;

    fn layout() -> Layout {
        Layout {
            version: 3,
            replication_factor: 3,
            write_quorum: 2,
            nodes: (1..=4)
                .map(|i| NodeSpec {
                    id: format!("n{i}"),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    zone: format!("z{}", i % 3),
                    weight: 100,
                })
                .collect(),
        }
    }

    fn status(id: &str, used: u64, free: u64) -> (String, NodeStatus) {
        (
            id.to_string(),
            NodeStatus {
                id: id.to_string(),
                report: NodeReport {
                    used_bytes: used,
                    free_bytes: free,
                    ..Default::default()
                },
                peers: Vec::new(),
                hints_pending: 0,
                tombstones: 0,
                transfers_queued: 0,
                transfers_in_flight: 0,
                sessions_completed: 0,
                scrub_verified_blobs: 0,
                scrub_corrupt_found: 0,
                corrupt_found: 0,
            },
        )
    }

    #[test]
    fn edits_bump_the_version_and_are_validated() {
        let l = layout();
        let spec = NodeSpec {
            id: "n5".into(),
            addr: "127.0.0.1:7005".parse().unwrap(),
            zone: "z1".into(),
            weight: 50,
        };
        let added = add_node(&l, spec.clone()).unwrap();
        assert_eq!((added.version, added.nodes.len()), (4, 5));
        assert!(matches!(
            add_node(&added, spec),
            Err(AdminError::Duplicate(_))
        ));
        let removed = remove_node(&l, "n2").unwrap();
        assert_eq!((removed.version, removed.nodes.len()), (4, 3));
        assert!(matches!(remove_node(&l, "n9"), Err(AdminError::Unknown(_))));
        assert_eq!(reweight(&l, "n1", 7).unwrap().nodes[0].weight, 7);
        let f = set_factor(&l, 2, None).unwrap();
        assert_eq!((f.replication_factor, f.write_quorum), (2, 2));
        assert!(set_factor(&l, 0, None).is_err());
        assert!(set_factor(&l, 3, Some(4)).is_err());
    }

    #[test]
    fn rebalance_weighs_by_capacity_only_when_out_of_line() {
        let l = layout();
        let even: Vec<_> = (1..=4)
            .map(|i| status(&format!("n{i}"), 100, 900))
            .collect();
        assert!(rebalance(&l, &even).is_none());
        // n1 has a small disk and holds far more than its quarter.
        let mut skewed = even.clone();
        skewed[0] = status("n1", 400, 100);
        let next = rebalance(&l, &skewed).unwrap();
        assert_eq!(next.version, 4);
        assert!(next.nodes[0].weight < next.nodes[1].weight);
        assert_eq!(next.nodes[1].weight, REBALANCE_WEIGHT_UNIT as u32);
    }
}
