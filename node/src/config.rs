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
//!
//! [s3]                             # optional: the S3 front (off without this section)
//! listen = "127.0.0.1:9480"
//! credentials_file = "certs/s3-credentials.toml"  # [[keys]] access_key, secret_key
//! # key_encryption_key_file = "..."  # seals managed keys (default: s3-key-encryption.key
//! #                                   # beside the credentials file, if it exists)
//! region = "us-east-1"
//! object_bytes_max = 5368709120    # largest PutObject or part (EntityTooLarge above)
//! inline_object_bytes_max = 0      # objects up to this size live in their record (one write);
//!                                   # 0: off. Turn on once every node runs 0.3 or later.
//! requests_in_flight_max = 256     # beyond it, 503 SlowDown
//! idle_timeout_ms = 60000
//! meta_sync_interval_ms = 30000    # how often metadata replicas compare digests
//! gc_interval_ms = 3600000         # how often the garbage collector runs (0: only `cairn gc`)
//! gc_grace_ms = 86400000           # a blob written or referred to this recently is kept
//! gc_deletes_per_sec = 200         # the collector's pace
//!
//! [space]                          # optional
//! compaction_dead_percent_min = 25 # a segment is rewritten once this much of it is dead
//! compaction_bytes_per_sec = 67108864  # live bytes compaction copies per second, at most
//! compaction_interval_ms = 60000   # how often the node looks for segments to compact
//! nearly_full_free_percent = 10    # below this much free space the disk is "nearly full"
//! ```
//! Relative paths are taken from the directory holding the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_core::heal::HealSettings;
use cairn_core::membership::FailureDetectorSettings;
use serde::{Deserialize, Serialize};

use crate::limits::{
    GC_GRACE_MS_MIN, HTTP_TOKEN_BYTES_MIN, S3_INLINE_OBJECT_BYTES_LIMIT, S3_SECRET_KEY_BYTES_MIN,
};

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
    /// A key no configuration knows: a misspelling, most likely.
    #[error(
        "{path}{}: unknown key `{key}`{}",
        line.map(|l| format!(", line {l}")).unwrap_or_default(),
        closest.as_ref().map(|c| format!("; did you mean `{c}`?")).unwrap_or_default()
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        closest: Option<String>,
    },
    /// A file holding a secret that others than its owner (and the node's own group) may read.
    #[error(
        "{path} holds a secret and is readable by others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}: `{key}` {problem}")]
    OutOfRange {
        path: PathBuf,
        key: &'static str,
        problem: &'static str,
    },
    /// An environment variable that overrides a setting could not be taken.
    #[error("environment variable {name}={value:?}: {problem}")]
    Env {
        name: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("{path}: no node id (set `id`, or CAIRN_NODE_ID)")]
    NoId { path: PathBuf },
}

/// The environment variables that override a node configuration's settings (`NodeConfig::
/// load_with_env`), so that one configuration file serves every node of a StatefulSet, each
/// given its id, addresses and files by its pod. Paths in them are taken as they are.
pub const NODE_ENV_OVERRIDES: [(&str, &str); 9] = [
    ("CAIRN_NODE_ID", "id"),
    ("CAIRN_DATA_DIR", "data_dir"),
    ("CAIRN_LAYOUT", "layout"),
    ("CAIRN_LISTEN", "listen"),
    ("CAIRN_HTTP_LISTEN", "http.listen"),
    ("CAIRN_S3_LISTEN", "s3.listen"),
    ("CAIRN_TLS_CA", "tls.ca"),
    ("CAIRN_TLS_CERT", "tls.cert"),
    ("CAIRN_TLS_KEY", "tls.key"),
];

/// Paths to a peer's PEM files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
    /// TLS for the front (`[http.tls]`): served with this certificate and key, reloaded when
    /// the files change. Plain HTTP without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<FrontTlsFiles>,
}

/// A front's certificate (chain, leaf first) and private key, PEM files (`[http.tls]`,
/// `[s3.tls]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FrontTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a front's certificate and key cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("front TLS files {cert} and {key}: {problem}")]
pub struct FrontTlsError {
    pub cert: String,
    pub key: String,
    pub problem: String,
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
            tls: None,
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
        check_secret_file(path)?;
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

/// Where the S3 front listens unless configured.
pub const S3_LISTEN_DEFAULT: &str = "127.0.0.1:9480";

/// The region the S3 front signs for unless configured.
pub const S3_REGION_DEFAULT: &str = "us-east-1";

/// Largest object in one PutObject, and largest part, unless configured: 5 GiB, as S3.
pub const S3_OBJECT_BYTES_MAX_DEFAULT: u64 = 5 << 30;

/// Objects stored inside their record unless configured: none. A record holding its object is
/// of record version 3, which nodes before 0.3 cannot read, so it is turned on (`cairn dev`
/// does, with `S3_INLINE_OBJECT_BYTES_DEV`) once every node runs 0.3 or later.
pub const S3_INLINE_OBJECT_BYTES_MAX_DEFAULT: u64 = 0;

/// What `cairn dev` and the tests' clusters store inline: 16 KiB.
pub const S3_INLINE_OBJECT_BYTES_DEV: u64 = 16 * 1024;

/// S3 requests a node serves at once unless configured.
pub const S3_REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 256;

/// How often the owners of a metadata partition compare digests unless configured.
pub const META_SYNC_INTERVAL_MS_DEFAULT: u64 = 30_000;

/// How often the garbage collector runs unless configured: hourly.
pub const GC_INTERVAL_MS_DEFAULT: u64 = 3_600_000;

/// How long a blob is kept after it was last written or referred to, unless configured: a day.
pub const GC_GRACE_MS_DEFAULT: u64 = 86_400_000;

/// Blobs the collector deletes per second unless configured.
pub const GC_DELETES_PER_SEC_DEFAULT: u32 = 200;

/// The S3 front's settings (`[s3]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    #[serde(default = "s3_listen_default")]
    pub listen: SocketAddr,
    /// A TOML file of `[[keys]]` tables, each with `access_key` and `secret_key`.
    pub credentials_file: PathBuf,
    /// The key that seals managed access keys' secrets: 64 hexadecimal digits, the same on
    /// every node. Default: `KEY_ENCRYPTION_KEY_FILE_NAME` beside the credentials file, if it
    /// exists (without it, the node knows only the credentials file's keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key_file: Option<PathBuf>,
    #[serde(default = "s3_region_default")]
    pub region: String,
    #[serde(default = "s3_object_bytes_max_default")]
    pub object_bytes_max: u64,
    /// Objects of up to this many bytes are stored inside their record (so a PutObject is one
    /// quorum write), at most `S3_INLINE_OBJECT_BYTES_LIMIT`; 0 turns it off.
    #[serde(default = "s3_inline_object_bytes_max_default")]
    pub inline_object_bytes_max: u64,
    #[serde(default = "s3_requests_in_flight_max_default")]
    pub requests_in_flight_max: usize,
    #[serde(default = "http_idle_timeout_ms_default")]
    pub idle_timeout_ms: u64,
    #[serde(default = "meta_sync_interval_ms_default")]
    pub meta_sync_interval_ms: u64,
    #[serde(default = "gc_interval_ms_default")]
    pub gc_interval_ms: u64,
    #[serde(default = "gc_grace_ms_default")]
    pub gc_grace_ms: u64,
    #[serde(default = "gc_deletes_per_sec_default")]
    pub gc_deletes_per_sec: u32,
    /// Virtual-host-style addressing: a request for `BUCKET.<domain>` names bucket `BUCKET`.
    /// Requests to any other host (the domain itself, an IP address, a node's name) stay
    /// path-style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_host_domain: Option<String>,
    /// TLS for the front (`[s3.tls]`), as `[http.tls]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<FrontTlsFiles>,
}

fn s3_listen_default() -> SocketAddr {
    S3_LISTEN_DEFAULT.parse().expect("a valid default address")
}
fn s3_region_default() -> String {
    S3_REGION_DEFAULT.to_string()
}
fn s3_object_bytes_max_default() -> u64 {
    S3_OBJECT_BYTES_MAX_DEFAULT
}
fn s3_inline_object_bytes_max_default() -> u64 {
    S3_INLINE_OBJECT_BYTES_MAX_DEFAULT
}
fn s3_requests_in_flight_max_default() -> usize {
    S3_REQUESTS_IN_FLIGHT_MAX_DEFAULT
}
fn http_idle_timeout_ms_default() -> u64 {
    HTTP_IDLE_TIMEOUT_MS_DEFAULT
}
fn meta_sync_interval_ms_default() -> u64 {
    META_SYNC_INTERVAL_MS_DEFAULT
}
fn gc_interval_ms_default() -> u64 {
    GC_INTERVAL_MS_DEFAULT
}
fn gc_grace_ms_default() -> u64 {
    GC_GRACE_MS_DEFAULT
}
fn gc_deletes_per_sec_default() -> u32 {
    GC_DELETES_PER_SEC_DEFAULT
}

impl S3Settings {
    /// Settings for `listen`, with every other value at its default.
    pub fn new(listen: SocketAddr, credentials_file: PathBuf) -> S3Settings {
        S3Settings {
            listen,
            credentials_file,
            key_encryption_key_file: None,
            region: s3_region_default(),
            object_bytes_max: S3_OBJECT_BYTES_MAX_DEFAULT,
            inline_object_bytes_max: S3_INLINE_OBJECT_BYTES_MAX_DEFAULT,
            requests_in_flight_max: S3_REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            idle_timeout_ms: HTTP_IDLE_TIMEOUT_MS_DEFAULT,
            meta_sync_interval_ms: META_SYNC_INTERVAL_MS_DEFAULT,
            gc_interval_ms: GC_INTERVAL_MS_DEFAULT,
            gc_grace_ms: GC_GRACE_MS_DEFAULT,
            gc_deletes_per_sec: GC_DELETES_PER_SEC_DEFAULT,
            virtual_host_domain: None,
            tls: None,
        }
    }

    /// Reads the access keys; at least one is required.
    pub fn load_credentials(&self) -> Result<Vec<S3Key>, ConfigError> {
        let path = &self.credentials_file;
        let file = self.credentials()?;
        if file.keys.is_empty() {
            return Err(ConfigError::Parse {
                path: path.clone(),
                message: "no [[keys]]: the S3 front needs at least one access key".into(),
            });
        }
        for key in &file.keys {
            if key.secret_key.len() < S3_SECRET_KEY_BYTES_MIN {
                return Err(ConfigError::Parse {
                    path: path.clone(),
                    message: format!(
                        "the secret of {} is shorter than {S3_SECRET_KEY_BYTES_MIN} characters",
                        key.access_key
                    ),
                });
            }
        }
        if let Some(domain) = &self.virtual_host_domain
            && let Err(reason) = cairn_core::addr::check_host_name(domain)
        {
            return Err(ConfigError::Parse {
                path: PathBuf::from("[s3]"),
                message: format!("virtual_host_domain = {domain:?} is not a DNS name: {reason}"),
            });
        }
        if self.inline_object_bytes_max > S3_INLINE_OBJECT_BYTES_LIMIT {
            return Err(ConfigError::Parse {
                path: PathBuf::from("[s3]"),
                message: format!(
                    "inline_object_bytes_max = {} is over the limit of {S3_INLINE_OBJECT_BYTES_LIMIT}",
                    self.inline_object_bytes_max
                ),
            });
        }
        if self.gc_grace_ms < GC_GRACE_MS_MIN {
            return Err(ConfigError::Parse {
                path: PathBuf::from("[s3]"),
                message: format!("gc_grace_ms must be at least {GC_GRACE_MS_MIN}"),
            });
        }
        Ok(file.keys)
    }

    /// The key that seals the secrets of access keys managed online (see
    /// `key_encryption_key_file`); `None` when the default file does not exist.
    pub fn load_key_encryption_key(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let path = match &self.key_encryption_key_file {
            Some(path) => path.clone(),
            None => {
                let beside = self.credentials_file.parent().unwrap_or(Path::new("."));
                let path = beside.join(KEY_ENCRYPTION_KEY_FILE_NAME);
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
        };
        check_secret_file(&path)?;
        let text = read(&path)?;
        let digits = text.trim().as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(ConfigError::Parse {
                path,
                message: "a key-encryption key is 64 hexadecimal digits (32 bytes)".into(),
            });
        }
        let mut key = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).expect("hex digits are ASCII");
            key[i] = u8::from_str_radix(pair, 16).expect("checked: two hex digits");
        }
        Ok(Some(key))
    }

    fn credentials(&self) -> Result<S3CredentialsFile, ConfigError> {
        let path = &self.credentials_file;
        check_secret_file(path)?;
        parse(path, &read(path)?)
    }
}

/// The key-encryption key's file name, looked for beside the credentials file.
pub const KEY_ENCRYPTION_KEY_FILE_NAME: &str = "s3-key-encryption.key";

/// One S3 access key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Key {
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3CredentialsFile {
    #[serde(default)]
    keys: Vec<S3Key>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Required, here or in `CAIRN_NODE_ID`.
    #[serde(default)]
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
    pub failure_detector: FailureDetectorSettings,
    #[serde(default)]
    pub heal: HealSettings,
    #[serde(default)]
    pub http: HttpSettings,
    /// The S3 front; off unless the section is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
    #[serde(default)]
    pub space: SpaceSettings,
}

/// A segment is compacted once this share of it (percent) is dead, unless configured. With a
/// quarter dead at most, segment files hold at most 4/3 of the live bytes: the space bound the
/// soak test holds Cairn to (1.5x) with room for open segments and metadata.
pub const COMPACTION_DEAD_PERCENT_MIN_DEFAULT: u8 = 25;

/// Live bytes compaction copies per second at most, unless configured: 64 MiB/s, a fraction
/// of a disk's sequential bandwidth, so that foreground writes keep theirs.
pub const COMPACTION_BYTES_PER_SEC_DEFAULT: u64 = 64 << 20;

/// How often a node looks for segments to compact, unless configured.
pub const COMPACTION_INTERVAL_MS_DEFAULT: u64 = 60_000;

/// Free space (percent of the disk's usable space) under which the disk is "nearly full".
pub const NEARLY_FULL_FREE_PERCENT_DEFAULT: u8 = 10;

/// How a node keeps its disk (`[space]`): compaction's trigger and pace, and when the disk
/// counts as nearly full.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceSettings {
    pub compaction_dead_percent_min: u8,
    pub compaction_bytes_per_sec: u64,
    /// 0 turns automatic compaction off.
    pub compaction_interval_ms: u64,
    pub nearly_full_free_percent: u8,
    /// Most bytes of segment mappings the process keeps resident: past it the node lets go of
    /// them (they stay in the page cache, readable). 0: no bound.
    pub mapped_resident_bytes_max: u64,
    /// The middle of every placed blob (from 256 KiB up to a quarter of a segment, its name
    /// known before its bytes) goes to the disk around the page cache (`O_DIRECT`), where the
    /// file system allows it. Off: through the cache, so that a blob read right after it was
    /// written comes from memory, at the cost of touching and writing back every page.
    pub direct_writes: bool,
}

/// Segment mappings kept resident unless configured: 256 MiB.
pub const MAPPED_RESIDENT_BYTES_MAX_DEFAULT: u64 = 256 << 20;

impl Default for SpaceSettings {
    fn default() -> SpaceSettings {
        SpaceSettings {
            compaction_dead_percent_min: COMPACTION_DEAD_PERCENT_MIN_DEFAULT,
            compaction_bytes_per_sec: COMPACTION_BYTES_PER_SEC_DEFAULT,
            compaction_interval_ms: COMPACTION_INTERVAL_MS_DEFAULT,
            nearly_full_free_percent: NEARLY_FULL_FREE_PERCENT_DEFAULT,
            mapped_resident_bytes_max: MAPPED_RESIDENT_BYTES_MAX_DEFAULT,
            direct_writes: true,
        }
    }
}

impl SpaceSettings {
    /// The first setting out of range: its key and what is wrong.
    fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !(1..=100).contains(&self.compaction_dead_percent_min) {
            return Some((
                "space.compaction_dead_percent_min",
                "must be between 1 and 100",
            ));
        }
        if self.compaction_bytes_per_sec == 0 {
            return Some(("space.compaction_bytes_per_sec", "must be above 0"));
        }
        if self.nearly_full_free_percent > 50 {
            return Some(("space.nearly_full_free_percent", "must be at most 50"));
        }
        None
    }
}

/// What the CLI needs to reach a cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
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
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match unknown_key(e.message()) {
            Some((key, known)) => ConfigError::UnknownKey {
                path: path.to_path_buf(),
                closest: closest(&key, &known),
                line: line_of_key(text, &key).or(line),
                key,
            },
            None => ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        }
    })
}

/// The line (from 1) where `key` is set, if it is set on exactly one line.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match (lines.next(), lines.next()) {
        (Some((i, _)), None) => Some(i + 1),
        _ => None,
    }
}

/// The key and the known keys of serde's "unknown field `x`, expected one of `a`, `b`".
fn unknown_key(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let known = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), known))
}

/// The known key closest to `key` by edit distance, if it is close enough to be a misspelling.
fn closest(key: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Refuses a file holding a secret (a private key, a token, credentials) that anyone but its
/// owner may read, or its group unless that group is the node's own (Kubernetes' `fsGroup`
/// leaves a secret volume's files readable by the pod's group: that group is the node).
pub fn check_secret_file(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    // Never writable by the group, never readable by others.
    let exposed = if in_own_groups(meta.gid()) {
        0o027
    } else {
        0o077
    };
    if mode & exposed != 0 {
        return Err(ConfigError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Whether `gid` is this process's effective group or one of its supplementary groups.
fn in_own_groups(gid: u32) -> bool {
    // SAFETY: getegid reads the process's credentials and cannot fail.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `groups.len()` entries; getgroups writes at most that many and
    // returns how many, or -1 if there are more (then the group is taken as not the node's).
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
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

impl FrontTlsFiles {
    fn resolve(&mut self, base: &Path) {
        resolve(base, &mut self.cert);
        resolve(base, &mut self.key);
    }
}

impl NodeConfig {
    /// Reads a node configuration, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_file(path, None)
    }

    /// Reads a node configuration as [`NodeConfig::load`] does, with the settings of
    /// [`NODE_ENV_OVERRIDES`] taken from `env` where it has them (the process's environment,
    /// for `cairn node`). The file may then leave `id` out.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut config = NodeConfig::from_file(path, env("CAIRN_NODE_ID"))?;
        let address = |name: &'static str, value: String| {
            value.parse::<SocketAddr>().map_err(|_| ConfigError::Env {
                name,
                value,
                problem: "is not an address and port (like 10.0.0.1:7401 or [::]:7401)",
            })
        };
        if let Some(v) = env("CAIRN_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("CAIRN_LAYOUT") {
            config.layout = PathBuf::from(v);
        }
        if let Some(v) = env("CAIRN_LISTEN") {
            config.listen = Some(address("CAIRN_LISTEN", v)?);
        }
        if let Some(v) = env("CAIRN_HTTP_LISTEN") {
            config.http.listen = address("CAIRN_HTTP_LISTEN", v)?;
        }
        if let Some(v) = env("CAIRN_S3_LISTEN") {
            let listen = address("CAIRN_S3_LISTEN", v.clone())?;
            match &mut config.s3 {
                Some(s3) => s3.listen = listen,
                None => {
                    return Err(ConfigError::Env {
                        name: "CAIRN_S3_LISTEN",
                        value: v,
                        problem: "is set, but the configuration has no [s3] section",
                    });
                }
            }
        }
        if let Some(v) = env("CAIRN_TLS_CA") {
            config.tls.ca = PathBuf::from(v);
        }
        if let Some(v) = env("CAIRN_TLS_CERT") {
            config.tls.cert = PathBuf::from(v);
        }
        if let Some(v) = env("CAIRN_TLS_KEY") {
            config.tls.key = PathBuf::from(v);
        }
        Ok(config)
    }

    /// Reads a node configuration file, resolving relative paths against its directory; `id`
    /// replaces the file's node id.
    fn from_file(path: &Path, id: Option<String>) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig = parse(path, &read(path)?)?;
        if let Some(id) = id {
            config.id = id;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut config.data_dir);
        resolve(base, &mut config.layout);
        config.tls.resolve(base);
        if let Some(token) = &mut config.http.token_file {
            resolve(base, token);
        }
        if let Some(tls) = &mut config.http.tls {
            tls.resolve(base);
        }
        if let Some(s3) = &mut config.s3 {
            resolve(base, &mut s3.credentials_file);
            if let Some(file) = &mut s3.key_encryption_key_file {
                resolve(base, file);
            }
            if let Some(tls) = &mut s3.tls {
                tls.resolve(base);
            }
        }
        if let Some((key, problem)) = config.space.problem() {
            return Err(ConfigError::OutOfRange {
                path: path.to_path_buf(),
                key,
                problem,
            });
        }
        if config.id.is_empty() {
            return Err(ConfigError::NoId {
                path: path.to_path_buf(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_may_be_read_by_its_owner_and_the_nodes_own_group_and_by_no_one_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        std::fs::write(&key, "secret").unwrap();
        let set = |mode| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode));
        // The file's group is the one this process created it with: its own.
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o660, false),
            (0o644, false),
        ] {
            set(mode).unwrap();
            assert_eq!(check_secret_file(&key).is_ok(), ok, "mode {mode:o}");
        }
        // A group that is not the node's may not read it (where this process may give the
        // file away to another group: as root).
        // SAFETY: chown on a path this test owns.
        let path = std::ffi::CString::new(key.to_str().unwrap()).unwrap();
        if unsafe { libc::chown(path.as_ptr(), u32::MAX, 54_321) } == 0 {
            set(0o640).unwrap();
            assert!(matches!(
                check_secret_file(&key),
                Err(ConfigError::Exposed { mode: 0o640, .. })
            ));
            set(0o600).unwrap();
            assert!(check_secret_file(&key).is_ok());
        }
    }

    const FILE: &str = r#"
data_dir = "data"
layout = "layout.toml"

[tls]
ca = "certs/ca.pem"
cert = "certs/node.pem"
key = "certs/node.key"

[s3]
credentials_file = "s3.toml"
"#;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn one_file_serves_every_node_given_its_id_addresses_and_files_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, FILE).unwrap();
        // Without an id anywhere, the node cannot start.
        let e = NodeConfig::load_with_env(&path, &env_of(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::NoId { .. }), "{e}");
        assert!(matches!(
            NodeConfig::load(&path).unwrap_err(),
            ConfigError::NoId { .. }
        ));
        let env = env_of(&[
            ("CAIRN_NODE_ID", "cairn-a-1"),
            ("CAIRN_DATA_DIR", "/var/lib/cairn"),
            ("CAIRN_LISTEN", "0.0.0.0:7401"),
            ("CAIRN_HTTP_LISTEN", "0.0.0.0:8080"),
            ("CAIRN_S3_LISTEN", "[::]:9000"),
            ("CAIRN_TLS_CERT", "/certs/cairn-a-1.pem"),
            ("CAIRN_TLS_KEY", "/certs/cairn-a-1.key"),
        ]);
        let config = NodeConfig::load_with_env(&path, &env).unwrap();
        assert_eq!(config.id, "cairn-a-1");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/cairn"));
        assert_eq!(config.listen, Some("0.0.0.0:7401".parse().unwrap()));
        assert_eq!(config.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.s3.unwrap().listen, "[::]:9000".parse().unwrap());
        assert_eq!(config.tls.cert, PathBuf::from("/certs/cairn-a-1.pem"));
        // What the environment leaves alone comes from the file, relative to it.
        assert_eq!(config.layout, dir.path().join("layout.toml"));
        assert_eq!(config.tls.ca, dir.path().join("certs/ca.pem"));

        let bad = env_of(&[("CAIRN_NODE_ID", "n1"), ("CAIRN_LISTEN", "7401")]);
        let e = NodeConfig::load_with_env(&path, &bad).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Env {
                    name: "CAIRN_LISTEN",
                    ..
                }
            ),
            "{e}"
        );
        std::fs::write(
            &path,
            FILE.replace("[s3]\ncredentials_file = \"s3.toml\"\n", ""),
        )
        .unwrap();
        let s3_off = env_of(&[("CAIRN_NODE_ID", "n1"), ("CAIRN_S3_LISTEN", "[::]:9000")]);
        let e = NodeConfig::load_with_env(&path, &s3_off).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Env {
                    name: "CAIRN_S3_LISTEN",
                    ..
                }
            ),
            "{e}"
        );
    }
}
