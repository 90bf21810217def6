//! Cairn's cluster client over QUIC, and the network pieces every Cairn peer shares: TLS setup,
//! pooled connections and frames on streams.
//!
//! What the client decides (the layout, placement, routing, the wire messages) is
//! `cairn-core`'s; nodes route by the same code, so client and nodes cannot disagree on where a
//! blob lives. This crate does the IO.
//!
//! - [`Client`]: put, get, head, delete with failover, retries and verification.
//! - [`load_layout`]: a layout file, read and validated.
//! - [`tls`]: mutual-TLS identities, quinn configurations, endpoints.
//! - [`pool`]: one pooled connection per node.
//! - [`framing`]: the wire's frames on QUIC streams.
//! - [`limits`]: every bound of the client and the QUIC transport.
//!
//! A whole round trip against a three-node cluster started in this process (`cairn dev` runs
//! a six-node one; a real deployment has a layout file and certificates from its CA):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! use cairn_client::{Client, ClientOptions, Identity, Layout};
//! use cairn_node::dev::{ClusterSpec, write_cluster};
//! use cairn_node::{Node, NodeConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let mut spec = ClusterSpec::local(3, 3, [127, 0, 0, 1], 0);
//! # for (i, node) in spec.nodes.iter_mut().enumerate() {
//! #     node.1 = std::net::SocketAddr::from(([127, 0, 77, i as u8 + 1], 7400));
//! # }
//! # spec.segment_bytes = 4 * 1024 * 1024;
//! let files = write_cluster(dir.path(), &spec)?;
//! let mut nodes = Vec::new();
//! for config in &files.node_configs {
//!     nodes.push(Node::start(&NodeConfig::load(config)?).await?);
//! }
//!
//! let layout = cairn_client::load_layout(&files.layout)?;
//! let tls = files.client_tls();
//! let identity = Identity::load(&tls.ca, &tls.cert, &tls.key)?;
//! let client = Client::connect(layout, &identity, ClientOptions::default()).await?;
//!
//! let hash = client.put(b"artifact bytes".to_vec()).await?; // durable on 2 of 3 replicas
//! assert_eq!(client.get(&hash).await?, b"artifact bytes"); // BLAKE3-verified
//! assert_eq!(client.get_range(&hash, 9, 5).await?, b"bytes");
//! assert_eq!(client.head(&hash).await?, Some(14));
//! assert!(client.delete(&hash).await?);
//!
//! client.close().await;
//! for node in nodes {
//!     node.shutdown().await;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod client;
mod error;
pub mod framing;
mod layout_file;
pub mod limits;
mod pieces;
pub mod pool;
pub mod tls;

pub use cairn_core::{Hash, Layout, LayoutError, NodeSpec, Routing};
pub use client::{
    BlobReader, BlobStream, Client, ClientOptions, DEADLINE_MS_DEFAULT, Progress, PutOutcome,
    SEED_SERVER_NAME, hash_file, hash_file_with_progress,
};
pub use error::{ClientError, classify_connection_error};
pub use layout_file::load_layout;
pub use tls::Identity;
