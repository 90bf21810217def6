//! Why a node could not start, or could not take a new layout: [`NodeError`]. The errors of
//! the node's parts are their own types (a replica's `LocalError`, a peer call's
//! `PeerCallError`, a metadata call's `MetaError`, ...); this one gathers what reaches the
//! caller of [`crate::node::Node`].

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_core::heal::HealSettingsError;
use cairn_core::membership::DetectorSettingsError;

use crate::config::ConfigError;
use crate::local::files::FileError;
use crate::local::hint_log::HintError;
use crate::local::meta_store::StoreError;
use crate::local::recordlog::LogError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("layout: {0}")]
    Layout(#[from] cairn_core::LayoutError),
    #[error("node {id} is not in the layout (version {version})")]
    NotInLayout { id: String, version: u64 },
    #[error("TLS: {0}")]
    Tls(#[from] cairn_client::tls::TlsError),
    #[error("{0}")]
    FrontTls(#[from] crate::config::FrontTlsError),
    #[error("engine: {0}")]
    Engine(#[from] cairn_engine::Error),
    #[error("hint log: {0}")]
    Hints(#[from] HintError),
    #[error("version table: {0}")]
    Versions(#[from] LogError),
    #[error("metadata: {0}")]
    Meta(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("configuration: [heal] {0}")]
    Heal(#[from] HealSettingsError),
    #[error("configuration: [failure_detector] {0}")]
    Detector(#[from] DetectorSettingsError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("layout version {offered} is not newer than the current {current}")]
    LayoutNotNewer { offered: u64, current: u64 },
    /// Adopting this layout failed lately; it is tried again after a pause.
    #[error(
        "adopting layout version {version} failed ({last_error}); next attempt in {retry_in_ms} ms"
    )]
    AdoptPaused {
        version: u64,
        last_error: String,
        retry_in_ms: u64,
    },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
