//! Local clusters: the files a cluster needs (certificates, layout, node and client
//! configurations), and `cairn dev`, which writes them and runs every node in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_core::heal::HealSettings;
use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::membership::FailureDetectorSettings;

use crate::certs::{self, CertError};
use crate::config::{ClientFileConfig, HintSettings, NodeConfig, TlsFiles};

/// Nodes in the default development cluster.
pub const DEV_NODES: usize = 6;
/// Zones in the default development cluster.
pub const DEV_ZONES: usize = 3;
/// First QUIC port of the default development cluster; node i listens on this plus i.
pub const DEV_BASE_PORT: u16 = 7401;
/// A local cluster's HTTP ports sit this far above its QUIC ports (7401 serves HTTP on 8401).
pub const DEV_HTTP_PORT_OFFSET: u16 = 1000;
/// A local cluster's S3 ports sit this far above its QUIC ports (7401 serves S3 on 9401).
pub const DEV_S3_PORT_OFFSET: u16 = 2000;
/// Engine segment size for development and test nodes: small, so a local cluster of several
/// nodes does not preallocate gigabytes.
pub const DEV_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Name of the client certificate `write_cluster` issues.
pub const CLIENT_CERT_NAME: &str = "client";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("certificates: {0}")]
    Certs(#[from] CertError),
    #[error("layout: {0}")]
    Layout(#[from] cairn_core::LayoutError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a local cluster looks like.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// (id, address, zone) of each node.
    pub nodes: Vec<(String, SocketAddr, String)>,
    pub replication_factor: usize,
    pub write_quorum: usize,
    pub segment_bytes: u64,
    pub hints: HintSettings,
    pub failure_detector: FailureDetectorSettings,
    pub heal: HealSettings,
    /// Every node's `[http]`; each listens on its own `http_addr`.
    pub http: crate::config::HttpSettings,
    /// Every node's `[s3]`, if the S3 front is on; each listens on its own `s3_addr`, and the
    /// credentials are generated beside the certificates.
    pub s3: Option<crate::config::S3Settings>,
    /// Every node's `[space]`.
    pub space: crate::config::SpaceSettings,
}

impl ClusterSpec {
    /// `nodes` nodes named n1, n2, ... spread round-robin over `zones` zones, listening on
    /// `ip` from `base_port` up; factor 3 (or fewer nodes), write quorum 2 (or the factor).
    pub fn local(nodes: usize, zones: usize, ip: [u8; 4], base_port: u16) -> ClusterSpec {
        let zone_names = ["zone-a", "zone-b", "zone-c", "zone-d", "zone-e", "zone-f"];
        let nodes: Vec<_> = (0..nodes)
            .map(|i| {
                let zone = match zone_names.get(i % zones.max(1)) {
                    Some(z) => z.to_string(),
                    None => format!("zone-{}", i % zones.max(1)),
                };
                let addr = SocketAddr::from((ip, base_port + i as u16));
                (format!("n{}", i + 1), addr, zone)
            })
            .collect();
        let replication_factor = nodes.len().min(3);
        ClusterSpec {
            nodes,
            replication_factor,
            write_quorum: replication_factor.min(2),
            segment_bytes: DEV_SEGMENT_BYTES,
            hints: HintSettings::default(),
            failure_detector: Default::default(),
            heal: Default::default(),
            http: Default::default(),
            s3: Some(crate::config::S3Settings {
                // A new cluster has no node of a version that cannot read inline objects.
                inline_object_bytes_max: crate::config::S3_INLINE_OBJECT_BYTES_DEV,
                ..crate::config::S3Settings::new(
                    SocketAddr::from((ip, 0)),
                    PathBuf::from("certs/s3-credentials.toml"),
                )
            }),
            space: Default::default(),
        }
    }

    /// The S3 address of the node whose QUIC address is `quic`: the same IP, the port
    /// `DEV_S3_PORT_OFFSET` above (port 0 stays 0).
    pub fn s3_addr(&self, quic: &SocketAddr) -> SocketAddr {
        let port = match quic.port() {
            0 => 0,
            p => p.saturating_add(DEV_S3_PORT_OFFSET),
        };
        SocketAddr::new(quic.ip(), port)
    }

    /// The HTTP address of the node whose QUIC address is `quic`: the same IP, the port
    /// `DEV_HTTP_PORT_OFFSET` above (port 0 stays 0).
    pub fn http_addr(&self, quic: &SocketAddr) -> SocketAddr {
        let port = match quic.port() {
            0 => 0,
            p => p.saturating_add(DEV_HTTP_PORT_OFFSET),
        };
        SocketAddr::new(quic.ip(), port)
    }

    pub fn layout(&self, version: u64) -> Layout {
        Layout {
            version,
            replication_factor: self.replication_factor,
            write_quorum: self.write_quorum,
            nodes: self
                .nodes
                .iter()
                .map(|(id, addr, zone)| NodeSpec {
                    id: id.clone(),
                    addr: (*addr).into(),
                    zone: zone.clone(),
                    weight: 100,
                })
                .collect(),
        }
    }
}

/// Where `write_cluster` put things.
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    pub dir: PathBuf,
    pub layout: PathBuf,
    pub node_configs: Vec<PathBuf>,
    pub client_config: PathBuf,
    pub certs: PathBuf,
    /// Shell-style `NAME=value` lines for S3 clients (keys, region, endpoints), if the S3
    /// front is on.
    pub s3_env: Option<PathBuf>,
}

impl ClusterFiles {
    /// TLS files of the cluster's client certificate.
    pub fn client_tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.certs.join("ca.pem"),
            cert: self.certs.join(format!("{CLIENT_CERT_NAME}.pem")),
            key: self.certs.join(format!("{CLIENT_CERT_NAME}.key")),
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(path, text).map_err(|source| DevError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a cluster's certificates, layout (version 1) and configurations under `dir`. An
/// existing `dir/layout.toml` is kept (a restarted cluster keeps its layout and data).
pub fn write_cluster(dir: &Path, spec: &ClusterSpec) -> Result<ClusterFiles, DevError> {
    std::fs::create_dir_all(dir).map_err(|source| DevError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let layout_path = dir.join("layout.toml");
    let certs_dir = dir.join("certs");
    if !layout_path.exists() {
        let layout = spec.layout(1);
        layout.validate()?;
        write(&layout_path, &layout.to_toml_string())?;
    }
    let ids: Vec<String> = spec.nodes.iter().map(|n| n.0.clone()).collect();
    if !certs_dir.join(format!("{CLIENT_CERT_NAME}.pem")).exists() {
        certs::generate(&certs_dir, &ids, &[CLIENT_CERT_NAME.to_string()])?;
    } else {
        // Kept from an earlier run, perhaps by a version that left keys readable to all.
        certs::narrow_keys(&certs_dir)?;
    }
    let s3_key = match &spec.s3 {
        Some(_) => {
            let path = certs::generate_s3_credentials(&certs_dir)?;
            let settings =
                crate::config::S3Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), path);
            settings
                .load_credentials()
                .ok()
                .and_then(|keys| keys.into_iter().next())
        }
        None => None,
    };
    let mut node_configs = Vec::new();
    for (id, addr, _) in &spec.nodes {
        let config = NodeConfig {
            id: id.clone(),
            data_dir: PathBuf::from("data").join(id),
            layout: PathBuf::from("layout.toml"),
            listen: None,
            segment_bytes: Some(spec.segment_bytes),
            tls: TlsFiles {
                ca: PathBuf::from("certs/ca.pem"),
                cert: PathBuf::from(format!("certs/{id}.pem")),
                key: PathBuf::from(format!("certs/{id}.key")),
            },
            hints: spec.hints.clone(),
            failure_detector: spec.failure_detector.clone(),
            heal: spec.heal.clone(),
            http: crate::config::HttpSettings {
                listen: spec.http_addr(addr),
                ..spec.http.clone()
            },
            s3: spec.s3.as_ref().map(|s3| crate::config::S3Settings {
                listen: spec.s3_addr(addr),
                ..s3.clone()
            }),
            space: spec.space.clone(),
        };
        let path = dir.join(format!("{id}.toml"));
        let text = toml::to_string(&config).expect("node configs serialize");
        write(&path, &text)?;
        node_configs.push(path);
    }
    let client = ClientFileConfig {
        layout: PathBuf::from("layout.toml"),
        zone: spec.nodes.first().map(|n| n.2.clone()),
        tls: TlsFiles {
            ca: PathBuf::from("certs/ca.pem"),
            cert: PathBuf::from(format!("certs/{CLIENT_CERT_NAME}.pem")),
            key: PathBuf::from(format!("certs/{CLIENT_CERT_NAME}.key")),
        },
    };
    let client_config = dir.join("client.toml");
    write(
        &client_config,
        &toml::to_string(&client).expect("client configs serialize"),
    )?;
    let s3_env = match (&spec.s3, s3_key) {
        (Some(s3), Some(key)) => {
            let endpoints: Vec<String> = spec
                .nodes
                .iter()
                .map(|(_, addr, _)| format!("http://{}", spec.s3_addr(addr)))
                .collect();
            let text = format!(
                "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_DEFAULT_REGION={}\n\
                 CAIRN_S3_ENDPOINT={}\nCAIRN_S3_ENDPOINTS={}\n",
                key.access_key,
                key.secret_key,
                s3.region,
                endpoints.first().cloned().unwrap_or_default(),
                endpoints.join(",")
            );
            let path = dir.join("s3.env");
            write(&path, &text)?;
            Some(path)
        }
        _ => None,
    };
    Ok(ClusterFiles {
        dir: dir.to_path_buf(),
        layout: layout_path,
        node_configs,
        client_config,
        certs: certs_dir,
        s3_env,
    })
}
