//! The layouts a simulated cluster moves between: a fixed menu of shapes (which nodes, their
//! zones and weights, the replication factor and write quorum). Each shape is placed once per
//! test process (placement takes a good fraction of a second); a run stamps shapes with the
//! versions it gives them, which costs a copy of the placement table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cairn_core::heal::BlobHash;
use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::placement::Placement;
use cairn_core::{Hash, Routing};

/// Nodes that exist in every run (not all of them are in every layout).
pub const NODE_COUNT: usize = 6;

/// Their ids; a node's index in this array is its index everywhere in the simulator.
pub const NODE_IDS: [&str; NODE_COUNT] = ["n1", "n2", "n3", "n4", "n5", "n6"];

const NODE_ZONES: [&str; NODE_COUNT] = ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b", "zone-c"];

/// Port of every node's (never used) address; nodes differ by the last address byte.
const NODE_PORT: u16 = 7100;

/// Weight of a node unless its shape says otherwise.
const WEIGHT_DEFAULT: u32 = 100;

/// One layout without its version.
pub struct Shape {
    pub name: &'static str,
    /// (node index, weight).
    pub nodes: &'static [(usize, u32)],
    pub replication_factor: usize,
    pub write_quorum: usize,
}

const W: u32 = WEIGHT_DEFAULT;

/// The menu. Every run starts on `SHAPE_BASE`; each layout change moves to another shape.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "base: n1-n5 in 3 zones, factor 3, quorum 2",
        nodes: &[(0, W), (1, W), (2, W), (3, W), (4, W)],
        replication_factor: 3,
        write_quorum: 2,
    },
    Shape {
        name: "n6 joins",
        nodes: &[(0, W), (1, W), (2, W), (3, W), (4, W), (5, W)],
        replication_factor: 3,
        write_quorum: 2,
    },
    Shape {
        name: "n5 leaves",
        nodes: &[(0, W), (1, W), (2, W), (3, W)],
        replication_factor: 3,
        write_quorum: 2,
    },
    Shape {
        name: "factor 2, quorum 1",
        nodes: &[(0, W), (1, W), (2, W), (3, W), (4, W)],
        replication_factor: 2,
        write_quorum: 1,
    },
    Shape {
        name: "reweighted",
        nodes: &[(0, W), (1, 3 * W), (2, W), (3, W / 2), (4, 2 * W)],
        replication_factor: 3,
        write_quorum: 2,
    },
];

/// The shape every run starts on, at version `BASE_VERSION`.
pub const SHAPE_BASE: usize = 0;
pub const BASE_VERSION: u64 = 1;

/// A node's index from its id.
pub fn node_ix(id: &str) -> Option<usize> {
    NODE_IDS.iter().position(|n| *n == id)
}

fn layout_of(shape: &Shape, version: u64) -> Layout {
    Layout {
        version,
        replication_factor: shape.replication_factor,
        write_quorum: shape.write_quorum,
        nodes: shape
            .nodes
            .iter()
            .map(|&(ix, weight)| NodeSpec {
                id: NODE_IDS[ix].to_string(),
                addr: std::net::SocketAddr::from(([127, 0, 9, ix as u8 + 1], NODE_PORT)).into(),
                zone: NODE_ZONES[ix].to_string(),
                weight,
            })
            .collect(),
    }
}

/// The placement of every shape, computed once per process.
fn placements() -> &'static [Placement] {
    static PLACEMENTS: OnceLock<Vec<Placement>> = OnceLock::new();
    PLACEMENTS.get_or_init(|| {
        SHAPES
            .iter()
            .map(|s| Placement::new(&layout_of(s, BASE_VERSION)).expect("a valid shape"))
            .collect()
    })
}

/// A layout as the simulator uses it: the routing the healer is given, and node indices.
pub struct SimLayout {
    pub shape: usize,
    pub routing: Arc<Routing>,
    /// Simulator node index of each of the layout's nodes.
    node_of: Vec<usize>,
    /// Bit `i` set: node `i` is in the layout.
    pub members: u8,
}

impl SimLayout {
    pub fn version(&self) -> u64 {
        self.routing.layout.version
    }

    pub fn write_quorum(&self) -> usize {
        self.routing.layout.write_quorum
    }

    pub fn contains(&self, ix: usize) -> bool {
        self.members & (1 << ix) != 0
    }

    /// The owners of a hash, bit `i` for node `i`.
    pub fn owner_mask(&self, hash: &BlobHash) -> u8 {
        self.routing
            .placement
            .replicas(&Hash::from_bytes(*hash))
            .iter()
            .fold(0u8, |m, &i| m | 1 << self.node_of[usize::from(i)])
    }

    /// Ids of the layout's nodes other than `me`.
    pub fn peer_ids(&self, me: usize) -> impl Iterator<Item = &'static str> + '_ {
        self.node_of
            .iter()
            .filter(move |&&ix| ix != me)
            .map(|&ix| NODE_IDS[ix])
    }
}

/// Layouts made so far, by (shape, version).
type LayoutCache = Mutex<HashMap<(usize, u64), Arc<SimLayout>>>;

/// The layout of `shape` at `version`, made once per process and shared.
pub fn sim_layout(shape: usize, version: u64) -> Arc<SimLayout> {
    static CACHE: OnceLock<LayoutCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().expect("no panic while holding the cache");
    cache
        .entry((shape, version))
        .or_insert_with(|| {
            let layout = layout_of(&SHAPES[shape], version);
            let node_of: Vec<usize> = layout
                .nodes
                .iter()
                .map(|n| node_ix(&n.id).expect("a known node"))
                .collect();
            let members = node_of.iter().fold(0u8, |m, &ix| m | 1 << ix);
            // The placement does not depend on the version; only the layout carries it.
            let placement = Arc::new(placements()[shape].clone());
            Arc::new(SimLayout {
                shape,
                routing: Arc::new(Routing {
                    layout,
                    placement,
                    previous: None,
                }),
                node_of,
                members,
            })
        })
        .clone()
}

/// Node indices of the bits set in a mask, lowest first.
pub fn mask_nodes(mask: u8) -> impl Iterator<Item = usize> {
    (0..NODE_COUNT).filter(move |i| mask & (1 << i) != 0)
}
