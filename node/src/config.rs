//! A node's configuration file (TOML) and the client configuration the CLI reads.
//!
//! ```toml
//! id = "n1"                       # this node's id in the layout
//! data_dir = "data/n1"            # engine segments, hint log, adopted layouts
//! layout = "layout.toml"          # the cluster layout
//! listen = "127.0.0.1:7401"       # optional: defaults to this node's address in the layout
//! segment_bytes = 268435456       # optional: engine segment size
//!
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/n1.pem"
//! key = "certs/n1.key"
//!
//! [hints]                          # optional
//! retry_ms_min = 200
//! retry_ms_max = 5000
//! ```
//! Relative paths are taken from the directory holding the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First pause before a failed hint delivery is retried.
pub const HINT_RETRY_MS_MIN_DEFAULT: u64 = 200;

/// Longest pause between hint delivery attempts.
pub const HINT_RETRY_MS_MAX_DEFAULT: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Paths to a peer's PEM files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HintSettings {
    pub retry_ms_min: u64,
    pub retry_ms_max: u64,
}

impl Default for HintSettings {
    fn default() -> HintSettings {
        HintSettings {
            retry_ms_min: HINT_RETRY_MS_MIN_DEFAULT,
            retry_ms_max: HINT_RETRY_MS_MAX_DEFAULT,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: String,
    pub data_dir: PathBuf,
    pub layout: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub hints: HintSettings,
    #[serde(default)]
    pub failure_detector: crate::membership::FailureDetectorSettings,
    #[serde(default)]
    pub heal: crate::heal::HealSettings,
}

/// What the CLI needs to reach a cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientFileConfig {
    pub layout: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub tls: TlsFiles,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl TlsFiles {
    fn resolve(&mut self, base: &Path) {
        resolve(base, &mut self.ca);
        resolve(base, &mut self.cert);
        resolve(base, &mut self.key);
    }
}

impl NodeConfig {
    /// Reads a node configuration, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig = parse(path, &read(path)?)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut config.data_dir);
        resolve(base, &mut config.layout);
        config.tls.resolve(base);
        Ok(config)
    }
}

impl ClientFileConfig {
    /// Reads a client configuration, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<ClientFileConfig, ConfigError> {
        let mut config: ClientFileConfig = parse(path, &read(path)?)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut config.layout);
        config.tls.resolve(base);
        Ok(config)
    }
}
