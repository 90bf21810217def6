//! Cairn's cluster client, and the pieces every Cairn peer shares: the cluster layout, the
//! placement function, the wire protocol and the TLS setup.
//!
//! Nodes use this crate too, so the client and the nodes route by the same code and cannot
//! disagree on where a blob lives.
//!
//! - [`layout`]: the cluster's nodes, zones, weights, replication factor and write quorum.
//! - [`placement`]: the pure function from a blob hash and a layout to its replicas.
//! - [`wire`]: request and response headers, framing, error codes, the ALPN version.
//! - [`tls`]: mutual-TLS identities, quinn configurations, endpoints.
//! - [`pool`]: one pooled connection per node.
//! - [`Client`]: put, get, head, delete with failover, retries and verification.

mod client;
mod error;
pub mod layout;
pub mod placement;
pub mod pool;
pub mod tls;
pub mod wire;

pub use cairn_engine::Hash;
pub use client::{
    Client, ClientOptions, DEADLINE_MS_DEFAULT, GET_IN_MEMORY_BYTES_MAX, RETRY_BACKOFF_MS_MAX,
    RETRY_BACKOFF_MS_MIN, Routing, SEED_SERVER_NAME, UPLOAD_CHUNK_BYTES, hash_file,
};
pub use error::{ClientError, classify_connection_error};
pub use layout::{Layout, LayoutError, NodeSpec};
pub use tls::Identity;
