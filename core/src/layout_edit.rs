//! Layout edits: plain functions from one layout to the next (version + 1), each validated
//! before anything is sent. `cairn layout add|remove|reweight|set-factor|rebalance` are these
//! functions and a broadcast.

use crate::layout::{Layout, LayoutError, NodeSpec};
use crate::status::{DiskState, NodeStatus};

/// A node whose share of the used bytes exceeds its share of the capacity by more than this
/// many percentage points makes `rebalance` propose weights from capacities.
pub const REBALANCE_FILL_SPREAD_PERCENT: u64 = 10;

/// Weight a node of the median capacity gets from `rebalance`.
pub const REBALANCE_WEIGHT_UNIT: u64 = 100;

/// Why a layout edit cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutEditError {
    #[error("node {id} is already in the layout")]
    Duplicate { id: String },
    #[error("node {id} is not in the layout")]
    Unknown { id: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

fn next(layout: &Layout) -> Layout {
    let mut l = layout.clone();
    l.version += 1;
    l
}

/// The layout with a node added.
pub fn add_node(layout: &Layout, node: NodeSpec) -> Result<Layout, LayoutEditError> {
    if layout.node_index(&node.id).is_some() {
        return Err(LayoutEditError::Duplicate { id: node.id });
    }
    let mut l = next(layout);
    l.nodes.push(node);
    l.validate()?;
    Ok(l)
}

/// The layout without a node: its data is copied to the nodes the placement now names.
pub fn remove_node(layout: &Layout, id: &str) -> Result<Layout, LayoutEditError> {
    let i = layout
        .node_index(id)
        .ok_or_else(|| LayoutEditError::Unknown { id: id.to_string() })?;
    let mut l = next(layout);
    l.nodes.remove(i);
    l.validate()?;
    Ok(l)
}

pub fn reweight(layout: &Layout, id: &str, weight: u32) -> Result<Layout, LayoutEditError> {
    let i = layout
        .node_index(id)
        .ok_or_else(|| LayoutEditError::Unknown { id: id.to_string() })?;
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
) -> Result<Layout, LayoutEditError> {
    let mut l = next(layout);
    l.replication_factor = factor;
    l.write_quorum = write_quorum.unwrap_or(factor / 2 + 1);
    l.validate()?;
    Ok(l)
}

/// Why `rebalance` proposes no new layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RebalanceRefusal {
    #[error("every node holds about its weight's share and no disk is nearly full; nothing to do")]
    InLine,
    #[error(
        "the disk of {} is {}, but with replication factor {factor} on {nodes} nodes every node \
         holds every blob: weights cannot help; add a node or give it more space",
        full.join(", "),
        if full.len() == 1 { "full or nearly full" } else { "full or nearly full on each" }
    )]
    EveryNodeHoldsEverything {
        full: Vec<String>,
        factor: usize,
        nodes: usize,
    },
    #[error("no node reported its fill")]
    NoFigures,
}

/// Weights proportional to each node's capacity (used + free bytes), if some node's share of
/// the used bytes is more than `REBALANCE_FILL_SPREAD_PERCENT` points above its share of the
/// weights, or some node's disk is full or nearly full; a refusal saying why not otherwise.
/// Nodes without a status keep their weight.
pub fn rebalance(
    layout: &Layout,
    statuses: &[(String, NodeStatus)],
) -> Result<Layout, RebalanceRefusal> {
    let used: u64 = statuses.iter().map(|(_, s)| s.report.used_bytes).sum();
    let weights: u64 = layout.nodes.iter().map(|n| n.weight as u64).sum();
    if used == 0 || weights == 0 {
        return Err(RebalanceRefusal::NoFigures);
    }
    let out_of_line = statuses.iter().any(|(id, s)| {
        let Some(i) = layout.node_index(id) else {
            return false;
        };
        let fill_pct = s.report.used_bytes * 100 / used;
        let weight_pct = layout.nodes[i].weight as u64 * 100 / weights;
        fill_pct > weight_pct + REBALANCE_FILL_SPREAD_PERCENT
    });
    let full: Vec<String> = statuses
        .iter()
        .filter(|(id, s)| layout.node_index(id).is_some() && s.space.disk != DiskState::Ok)
        .map(|(id, _)| id.clone())
        .collect();
    if !out_of_line && full.is_empty() {
        return Err(RebalanceRefusal::InLine);
    }
    if layout.nodes.len() <= layout.replication_factor && !full.is_empty() {
        return Err(RebalanceRefusal::EveryNodeHoldsEverything {
            full,
            factor: layout.replication_factor,
            nodes: layout.nodes.len(),
        });
    }
    let mut capacities: Vec<u64> = statuses
        .iter()
        .map(|(_, s)| s.report.used_bytes + s.report.free_bytes)
        .filter(|c| *c > 0)
        .collect();
    if capacities.is_empty() {
        return Err(RebalanceRefusal::NoFigures);
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
    l.validate().map_err(|_| RebalanceRefusal::NoFigures)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeReport;
    use crate::status::NodeStatus;

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
                ..NodeStatus::default()
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
            Err(LayoutEditError::Duplicate { .. })
        ));
        let removed = remove_node(&l, "n2").unwrap();
        assert_eq!((removed.version, removed.nodes.len()), (4, 3));
        assert!(matches!(
            remove_node(&l, "n9"),
            Err(LayoutEditError::Unknown { .. })
        ));
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
        assert_eq!(rebalance(&l, &even), Err(RebalanceRefusal::InLine));
        // n1 has a small disk and holds far more than its quarter.
        let mut skewed = even.clone();
        skewed[0] = status("n1", 400, 100);
        let next = rebalance(&l, &skewed).unwrap();
        assert_eq!(next.version, 4);
        assert!(next.nodes[0].weight < next.nodes[1].weight);
        assert_eq!(next.nodes[1].weight, REBALANCE_WEIGHT_UNIT as u32);
    }

    #[test]
    fn a_full_disk_is_rebalanced_even_when_every_node_holds_its_share() {
        let l = layout();
        // Equal shares of the data, but n2's disk is small and full.
        let mut statuses: Vec<_> = (1..=4)
            .map(|i| status(&format!("n{i}"), 100, 900))
            .collect();
        statuses[1] = status("n2", 100, 0);
        statuses[1].1.space.disk = DiskState::Full;
        let next = rebalance(&l, &statuses).expect("a lighter weight for n2");
        assert!(next.nodes[1].weight < next.nodes[0].weight, "{next:?}");
        // With as many nodes as copies, weights cannot move anything: the refusal says so.
        let three = Layout {
            nodes: l.nodes[..3].to_vec(),
            ..l.clone()
        };
        let refusal = rebalance(&three, &statuses[..3]).unwrap_err();
        assert!(matches!(
            refusal,
            RebalanceRefusal::EveryNodeHoldsEverything { .. }
        ));
        assert!(refusal.to_string().contains("n2"), "{refusal}");
    }
}
