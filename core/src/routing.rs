//! Routing: a layout, the placement computed from it, and the layout before it. Every node and
//! client routes by one of these, swapped whole when a newer layout arrives, so the current
//! and the previous placement are always read together.

use std::sync::{Arc, Mutex, Weak};

use cairn_engine::Hash;

use crate::layout::{Layout, LayoutError, NodeSpec};
use crate::placement::Placement;

/// A layout and the placement computed from it, swapped together when a newer layout arrives;
/// with the layout before it, whose replicas reads fall back to while data moves.
#[derive(Clone)]
pub struct Routing {
    pub layout: Layout,
    pub placement: Arc<Placement>,
    pub previous: Option<Arc<Routing>>,
}

impl Routing {
    pub fn new(layout: Layout) -> Result<Routing, LayoutError> {
        let placement = shared_placement(&layout)?;
        Ok(Routing {
            layout,
            placement,
            previous: None,
        })
    }

    /// The routing of `layout`, which follows `self`; `previous_layout` is the layout before
    /// `layout` if known (else `self`'s is taken).
    pub fn successor(
        self: &Arc<Routing>,
        layout: Layout,
        previous_layout: Option<Layout>,
    ) -> Result<Routing, LayoutError> {
        let previous = match previous_layout {
            Some(p) if p.version == self.layout.version => self.without_previous(),
            Some(p) if p.version < layout.version => Arc::new(Routing::new(p)?),
            _ => self.without_previous(),
        };
        let mut next = Routing::new(layout)?;
        next.previous = Some(previous);
        Ok(next)
    }

    /// This routing without the layout before it: once a layout change has moved every copy,
    /// reads need not fall back to the old owners.
    pub fn retired(&self) -> Routing {
        Routing {
            layout: self.layout.clone(),
            placement: self.placement.clone(),
            previous: None,
        }
    }

    fn without_previous(&self) -> Arc<Routing> {
        Arc::new(Routing {
            layout: self.layout.clone(),
            placement: self.placement.clone(),
            previous: None,
        })
    }

    /// Where to read a blob: its replicas, then those of the previous layout that are not
    /// replicas now (they may still hold it while data moves).
    pub fn read_candidates(&self, hash: &Hash) -> (Vec<&NodeSpec>, Vec<&NodeSpec>) {
        let current = self.replicas(hash);
        let fallback = match &self.previous {
            Some(p) => p
                .replicas(hash)
                .into_iter()
                .filter(|n| !current.iter().any(|c| c.id == n.id))
                .collect(),
            None => Vec::new(),
        };
        (current, fallback)
    }

    /// The blob's replicas, in placement order.
    pub fn replicas(&self, hash: &Hash) -> Vec<&NodeSpec> {
        self.placement
            .replicas(hash)
            .iter()
            .map(|&i| &self.layout.nodes[usize::from(i)])
            .collect()
    }
}

/// The placements of the layouts routed by in this process. Nodes and clients that run in one
/// process (tests, benchmarks, an embedded cluster) and adopt the same layout share one table
/// instead of each building its own (for six nodes, about 0.2 s of two cores and 6 MiB each).
/// Weak: a table lives as long as some routing holds it.
static SHARED_PLACEMENTS: Mutex<Vec<(Layout, Weak<Placement>)>> = Mutex::new(Vec::new());

/// The placement of `layout`: the one this process already holds for an equal layout, or a new
/// one. Built under the lock, so that a second adopter of the same layout waits for this build
/// rather than making its own.
fn shared_placement(layout: &Layout) -> Result<Arc<Placement>, LayoutError> {
    let mut shared = SHARED_PLACEMENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shared.retain(|(_, placement)| placement.strong_count() > 0);
    if let Some(placement) = shared
        .iter()
        .find(|(l, _)| l == layout)
        .and_then(|(_, placement)| placement.upgrade())
    {
        return Ok(placement);
    }
    let placement = Arc::new(Placement::new(layout)?);
    shared.push((layout.clone(), Arc::downgrade(&placement)));
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(version: u64, port: u16) -> Layout {
        Layout {
            version,
            replication_factor: 2,
            write_quorum: 1,
            nodes: (0..3)
                .map(|i| NodeSpec {
                    id: format!("shared-{i}"),
                    addr: format!("127.0.0.1:{}", port + i).parse().unwrap(),
                    zone: format!("z{i}"),
                    weight: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn routings_of_equal_layouts_share_one_placement_while_one_holds_it() {
        let port = 23_100;
        let a = Routing::new(layout(1, port)).unwrap();
        let b = Routing::new(layout(1, port)).unwrap();
        assert!(Arc::ptr_eq(&a.placement, &b.placement));
        // Another version, or other addresses, is another layout: its own table.
        let newer = Routing::new(layout(2, port)).unwrap();
        assert!(!Arc::ptr_eq(&a.placement, &newer.placement));
        let moved = Routing::new(layout(1, port + 10)).unwrap();
        assert!(!Arc::ptr_eq(&a.placement, &moved.placement));
        // Once no routing holds a table, it is gone, and the next routing builds one anew.
        let weak = Arc::downgrade(&a.placement);
        drop((a, b));
        assert!(weak.upgrade().is_none());
        let again = Routing::new(layout(1, port)).unwrap();
        assert_eq!(again.placement.table(), newer.placement.table());
    }
}
