//! A Cairn storage node: one engine, one QUIC endpoint, the put coordinator, read and delete
//! handling, hinted handoff; and the pieces of the `cairn` command (certificates, local
//! clusters).
//!
//! - [`server`]: the running node and its request handlers.
//! - [`quorum`]: the write-quorum state machine a coordinator follows.
//! - [`hints`]: hinted handoff, a queue state machine over a durable log.
//! - [`membership`]: failure detection from heartbeats, a plain state machine.
//! - [`heal`]: anti-entropy, hand-off, tombstone purge and scrub pacing, a plain state machine.
//! - [`http`]: the HTTP front (blobs, probes, cluster status, metrics).
//! - [`metrics`]: the Prometheus text exposition of `/metrics`.
//! - [`meta`]: replicated, versioned metadata records and their local redb store.
//! - [`s3`]: the S3 front (objects, multipart uploads, listings) and its garbage collector.
//! - [`config`]: node and client configuration files.
//! - [`certs`]: a development CA and certificates.
//! - [`dev`]: the files of a local cluster.

pub mod admin;
pub mod catalog;
pub mod certs;
pub mod config;
pub mod dev;
pub mod heal;
pub mod healing;
pub mod hints;
pub mod http;
pub mod membership;
pub mod meta;
pub mod metrics;
pub mod peer;
pub mod quorum;
pub mod recordlog;
pub mod s3;
pub mod server;
mod spool;
pub mod versions;

pub use config::{ClientFileConfig, NodeConfig};
pub use server::{Node, NodeError};

/// Sets up structured logs on stderr, filtered by `CAIRN_LOG` (for example `info` or
/// `cairn_node=debug,warn`; default `info`).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("CAIRN_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| "info".parse().expect("a valid default filter"));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}
