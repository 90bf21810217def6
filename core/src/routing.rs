//! Routing: a layout, the placement computed from it, and the layout before it. Every node and
//! client routes by one of these, swapped whole when a newer layout arrives, so the current
//! and the previous placement are always read together.

use std::sync::Arc;

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
        let placement = Arc::new(Placement::new(&layout)?);
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
