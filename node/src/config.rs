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
//!
//! [http]                           # optional: the HTTP front
//! listen = "127.0.0.1:7480"        # any address but loopback needs token_file
//! token_file = "certs/http.token"  # bearer token every request must carry
//! body_bytes_max = 68719476736     # largest blob accepted over HTTP (413 above)
//! requests_in_flight_max = 256     # beyond it, 503 with Retry-After
//! deadline_ms = 10000              # time a request may take to start in the cluster, retries included
//! idle_timeout_ms = 60000          # a connection making no progress this long is closed
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

/// Where the HTTP front listens unless the configuration says otherwise.
pub const HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:7480";

/// Largest blob the HTTP front accepts unless configured: 64 GiB.
pub const HTTP_BODY_BYTES_MAX_DEFAULT: u64 = 64 << 30;

/// HTTP requests a node serves at once unless configured.
pub const HTTP_REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 256;

/// Time an HTTP request may take to start in the cluster (retries and fail-over included)
/// unless configured; past it the answer is 503. A body that keeps moving is not cut off.
pub const HTTP_DEADLINE_MS_DEFAULT: u64 = 10_000;

/// Longest a connection may make no progress (headers, body pieces, a client reading the
/// response) unless configured; then it is closed. Above the deadline, so a request waiting on
/// the cluster is not cut off.
pub const HTTP_IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// The HTTP front's settings (`[http]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// A file holding the bearer token every request must carry; required unless `listen` is a
    /// loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub body_bytes_max: u64,
    pub requests_in_flight_max: usize,
    pub deadline_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            listen: HTTP_LISTEN_DEFAULT
                .parse()
                .expect("a valid default address"),
            token_file: None,
            body_bytes_max: HTTP_BODY_BYTES_MAX_DEFAULT,
            requests_in_flight_max: HTTP_REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            deadline_ms: HTTP_DEADLINE_MS_DEFAULT,
            idle_timeout_ms: HTTP_IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl HttpSettings {
    /// Reads the token, refusing a non-loopback address without one.
    pub fn load_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            if self.listen.ip().is_loopback() {
                return Ok(None);
            }
            return Err(ConfigError::Parse {
                path: PathBuf::from("[http]"),
                message: format!(
                    "listen = {} is not a loopback address: set token_file",
                    self.listen
                ),
            });
        };
        let token = read(path)?.trim().to_string();
        if token.len() < HTTP_TOKEN_BYTES_MIN {
            return Err(ConfigError::Parse {
                path: path.clone(),
                message: format!("a token needs at least {HTTP_TOKEN_BYTES_MIN} characters"),
            });
        }
        Ok(Some(token))
    }
}

/// Shortest bearer token accepted.
pub const HTTP_TOKEN_BYTES_MIN: usize = 16;

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
    #[serde(default)]
    pub http: HttpSettings,
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
        if let Some(token) = &mut config.http.token_file {
            resolve(base, token);
        }
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
