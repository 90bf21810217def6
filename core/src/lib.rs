//! Cairn's sans-IO core: everything a node and a client decide, with none of the doing.
//!
//! This crate holds the cluster's rules as plain data and state machines: the layout and the
//! placement function, routing across a layout change, quorum arithmetic, the put and delete
//! coordinators, the wire and node-protocol messages, failure detection, self-healing, hinted
//! handoff's queue, the metadata keys and merge rules, and layout edits.
//!
//! **The contract.** Nothing here does IO or reads a clock or a random source. Time is an
//! argument (`now_ms`), inputs are method calls (`on_*`, `tick`), and outputs are returned
//! values (actions, steps, replies) that the caller carries out. The node (`cairn-node`)
//! drives these machines with tokio, QUIC and its disks; the deterministic simulator
//! (`tests/simulation.rs`) drives the very same machines with a virtual clock and a faulty
//! virtual network, so what it checks is what ships. The crate depends on no async runtime,
//! no network or TLS library and no database, and uses no `std::fs`; a test (`tidy`) keeps it
//! so.
//!
//! - [`layout`], [`placement`], [`routing`]: where every blob lives, under the current and the
//!   previous layout; [`layout_edit`]: the next layout.
//! - [`quorum`], [`coordinator`]: how many replicas make a write, and the put and delete
//!   coordinators.
//! - [`wire`], [`node_proto`], [`status`]: what crosses the network.
//! - [`membership`]: failure detection from heartbeats.
//! - [`heal`]: anti-entropy, transfers, hand-off, purge and scrub pacing.
//! - [`hints`]: hinted handoff's queue and what delivering a hint means.
//! - [`keys`]: access keys' permissions on buckets, and their administration's messages.
//! - [`meta`]: metadata keys, the hybrid logical clock, last-writer-wins merging.
//! - [`limits`]: every bound, with the relations between them checked at compile time.

pub mod addr;
pub mod coordinator;
pub mod heal;
pub mod hints;
pub mod keys;
pub mod layout;
pub mod layout_edit;
pub mod limits;
pub mod membership;
pub mod meta;
pub mod node_proto;
pub mod placement;
pub mod quorum;
pub mod routing;
pub mod status;
pub mod wire;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cairn_engine::Hash;
pub use layout::{Layout, LayoutError, NodeSpec};
pub use routing::Routing;
