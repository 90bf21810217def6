//! The deterministic cluster simulator behind `simulation.rs`: layouts, a node's store, the
//! client history and its checks, and the simulated world that ties them together.

pub mod history;
pub mod layouts;
pub mod store;
pub mod world;
