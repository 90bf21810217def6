//! A Cairn storage node, the IO shell around `cairn-core`: one engine, one QUIC endpoint, the
//! healing, hint and metadata loops, the HTTP and S3 fronts; and the pieces of the `cairn`
//! command (certificates, local clusters, administration).
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 1. [`node`]: the composition root, [`Node`].
//! 2. `quic` (the QUIC server), [`healing`], [`hints`], [`meta`], [`http`], [`s3`], [`admin`]:
//!    the servers, loops and fronts, side by side. The few arrows between them run one way:
//!    `quic` hands node-protocol messages to `healing` and `meta`, `http` asks `healing` and
//!    `admin` for the cluster's status, `s3` reads and writes through `meta`; none of them is
//!    imported by `healing`, `meta` or `admin`.
//! 3. [`net`] (calls to other nodes), [`front`] (what the fronts share), [`replica`] (this
//!    node's own blob operations).
//! 4. `state`: the handles every part shares.
//! 5. [`error`], then [`local`]: this node's own durable state.
//! 6. [`clock`] (the only module that reads the time), [`limits`], [`config`], `figures`
//!    (what the fronts count, for `/metrics`).
//!
//! [`certs`] and [`dev`] serve the `cairn` command and tests.

pub mod admin;
pub mod certs;
pub mod clock;
pub mod config;
pub mod dev;
pub mod error;
mod figures;
pub mod front;
pub mod healing;
pub mod hints;
pub mod http;
pub mod limits;
pub mod local;
pub mod meta;
pub mod net;
pub mod node;
pub mod operate;
mod quic;
pub mod replica;
pub mod s3;
mod space;
mod state;
mod task;

pub use config::{ClientFileConfig, NodeConfig};

/// The log filter unless `CAIRN_LOG` says otherwise. The S3 library logs every client mistake
/// (a typo in a key, a missing bucket) at ERROR; the S3 front logs requests itself, at WARN for
/// server errors and DEBUG for refusals, so the library is kept quiet.
pub const LOG_FILTER_DEFAULT: &str = "info,s3s=off";
pub use error::NodeError;
pub use node::Node;

/// Sets up structured logs on stderr, filtered by `CAIRN_LOG` (for example `info` or
/// `cairn_node=debug,warn`; default `LOG_FILTER_DEFAULT`).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("CAIRN_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| LOG_FILTER_DEFAULT.parse().expect("a valid default filter"));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours on a terminal only: a log file or a journal gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}
