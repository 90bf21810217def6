//! Outbound calls to other nodes: one node-protocol call ([`peer`]) and the copy of one blob
//! to or from a peer ([`copy`]). What the node's servers, loops and fronts send goes through
//! here; what they receive is `crate::quic`'s.

pub mod copy;
pub mod peer;
