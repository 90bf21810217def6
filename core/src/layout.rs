//! The cluster layout: which nodes exist, where they are (zone), how much they hold (weight), and
//! how many copies of each blob the cluster keeps. Parsed from TOML and validated before use
//! (reading the file is the client crate's `load_layout`); the placement function
//! (`crate::placement`) is a pure function of a valid layout.
//!
//! ```toml
//! version = 1
//! replication_factor = 3
//! write_quorum = 2
//!
//! [[nodes]]
//! id = "n1"
//! addr = "127.0.0.1:7401"     # or a host name: "n1.cairn.svc:7401"
//! zone = "zone-a"
//! weight = 100
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::addr::NodeAddr;

use crate::limits::{NODE_ID_BYTES_MAX, NODES_MAX, REPLICATION_FACTOR_MAX, ZONE_NAME_BYTES_MAX};

/// One storage node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Stable name of the node; a DNS label, used as its TLS server name and to seed placement.
    pub id: String,
    /// Address of its QUIC endpoint: an IP address, or a host name resolved when connecting.
    pub addr: NodeAddr,
    /// Failure domain (rack, room, site). Copies of a blob go to distinct zones where possible.
    pub zone: String,
    /// Capacity weight: the node's share of blobs is proportional to it, where zones allow.
    pub weight: u32,
}

/// A versioned cluster layout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Increases with every change; nodes and clients act on the highest version they know.
    pub version: u64,
    /// Copies kept of every blob.
    pub replication_factor: usize,
    /// Copies that must be durable before a write is acknowledged.
    pub write_quorum: usize,
    pub nodes: Vec<NodeSpec>,
}

/// Why a layout cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("node id {id:?} appears more than once in the layout")]
    DuplicateId { id: String },
    #[error("nodes {first_id:?} and {second_id:?} both have the address {addr}")]
    DuplicateAddress {
        addr: NodeAddr,
        first_id: String,
        second_id: String,
    },
    #[error("node id {id:?} is not a valid DNS label: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("node {id:?} has an empty zone")]
    EmptyZone { id: String },
    #[error("node {id:?} has a zone name of {bytes} bytes, above the limit of {max}")]
    ZoneTooLong {
        id: String,
        bytes: usize,
        max: usize,
    },
    #[error("node {id:?} has weight 0; every node needs a weight of at least 1")]
    ZeroWeight { id: String },
    #[error("the replication factor is 0; it must be at least 1")]
    FactorZero,
    #[error("the replication factor is {replication_factor}, above the limit of {max}")]
    FactorTooLarge {
        replication_factor: usize,
        max: usize,
    },
    #[error(
        "the write quorum is {write_quorum}; it must be between 1 and the replication factor \
         ({replication_factor})"
    )]
    QuorumOutOfRange {
        write_quorum: usize,
        replication_factor: usize,
    },
    #[error(
        "the layout has {nodes} nodes, fewer than the replication factor ({replication_factor})"
    )]
    TooFewNodes {
        nodes: usize,
        replication_factor: usize,
    },
    #[error("the layout has {nodes} nodes, above the limit of {max}")]
    TooManyNodes { nodes: usize, max: usize },
    #[error("the layout is not valid TOML for a layout: {message}")]
    Parse { message: String },
    #[error("cannot read the layout file {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
}

impl Layout {
    /// Parses a layout from TOML and validates it.
    pub fn from_toml_str(text: &str) -> Result<Layout, LayoutError> {
        let layout: Layout = toml::from_str(text).map_err(|e| LayoutError::Parse {
            message: e.message().to_owned(),
        })?;
        layout.validate()?;
        Ok(layout)
    }

    /// The layout as TOML, in the form `from_toml_str` reads.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a layout has only TOML-representable fields")
    }

    /// Checks every rule a layout must follow; the error names the first offending entry.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let factor = self.replication_factor;
        if factor == 0 {
            return Err(LayoutError::FactorZero);
        }
        if factor > REPLICATION_FACTOR_MAX {
            return Err(LayoutError::FactorTooLarge {
                replication_factor: factor,
                max: REPLICATION_FACTOR_MAX,
            });
        }
        if self.write_quorum == 0 || self.write_quorum > factor {
            return Err(LayoutError::QuorumOutOfRange {
                write_quorum: self.write_quorum,
                replication_factor: factor,
            });
        }
        if self.nodes.len() > NODES_MAX {
            return Err(LayoutError::TooManyNodes {
                nodes: self.nodes.len(),
                max: NODES_MAX,
            });
        }
        let mut ids = BTreeSet::new();
        let mut addrs: HashMap<&NodeAddr, &str> = HashMap::new();
        for node in &self.nodes {
            if let Err(reason) = check_dns_label(&node.id) {
                return Err(LayoutError::InvalidId {
                    id: node.id.clone(),
                    reason,
                });
            }
            if !ids.insert(node.id.as_str()) {
                return Err(LayoutError::DuplicateId {
                    id: node.id.clone(),
                });
            }
            if let Some(first_id) = addrs.insert(&node.addr, &node.id) {
                return Err(LayoutError::DuplicateAddress {
                    addr: node.addr.clone(),
                    first_id: first_id.to_owned(),
                    second_id: node.id.clone(),
                });
            }
            if node.zone.is_empty() {
                return Err(LayoutError::EmptyZone {
                    id: node.id.clone(),
                });
            }
            if node.zone.len() > ZONE_NAME_BYTES_MAX {
                return Err(LayoutError::ZoneTooLong {
                    id: node.id.clone(),
                    bytes: node.zone.len(),
                    max: ZONE_NAME_BYTES_MAX,
                });
            }
            if node.weight == 0 {
                return Err(LayoutError::ZeroWeight {
                    id: node.id.clone(),
                });
            }
        }
        if self.nodes.len() < factor {
            return Err(LayoutError::TooFewNodes {
                nodes: self.nodes.len(),
                replication_factor: factor,
            });
        }
        Ok(())
    }

    /// Index in `nodes` of the node named `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Number of distinct zones.
    pub fn zone_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.zone.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// Checks that `id` is a DNS label: 1 to 63 bytes of `[a-z0-9-]`, not starting or ending with
/// `-`.
fn check_dns_label(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > NODE_ID_BYTES_MAX {
        return Err("it is longer than 63 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("it may hold only lowercase letters, digits and '-'");
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err("it may not start or end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
version = 1
replication_factor = 3
write_quorum = 2

[[nodes]]
id = "n1"
addr = "127.0.0.1:7401"
zone = "zone-a"
weight = 100

[[nodes]]
id = "n2"
addr = "127.0.0.1:7402"
zone = "zone-b"
weight = 100

[[nodes]]
id = "n3"
addr = "127.0.0.1:7403"
zone = "zone-c"
weight = 200
"#;

    fn example() -> Layout {
        Layout::from_toml_str(EXAMPLE).expect("the example layout is valid")
    }

    fn invalid(edit: impl FnOnce(&mut Layout)) -> LayoutError {
        let mut layout = example();
        edit(&mut layout);
        let err = layout.validate().expect_err("the edited layout is invalid");
        // Parsing the same layout back must reject it the same way.
        assert_eq!(
            Layout::from_toml_str(&layout.to_toml_string()).expect_err("rejected when parsed"),
            err
        );
        err
    }

    #[test]
    fn example_parses() {
        let layout = example();
        assert_eq!(layout.version, 1);
        assert_eq!(layout.replication_factor, 3);
        assert_eq!(layout.write_quorum, 2);
        assert_eq!(layout.nodes.len(), 3);
        assert_eq!(layout.nodes[2].weight, 200);
        assert_eq!(layout.nodes[1].addr, "127.0.0.1:7402".parse().unwrap());
        assert_eq!(layout.node_index("n3"), Some(2));
        assert_eq!(layout.node_index("n4"), None);
        assert_eq!(layout.zone_count(), 3);
    }

    #[test]
    fn toml_round_trip() {
        let layout = example();
        let text = layout.to_toml_string();
        assert_eq!(Layout::from_toml_str(&text).unwrap(), layout);
    }

    #[test]
    fn parse_errors() {
        let err = Layout::from_toml_str("version = 1\nreplication_factor = 3\n").unwrap_err();
        assert!(matches!(err, LayoutError::Parse { .. }), "{err}");
        let bad_addr = EXAMPLE.replace("127.0.0.1:7401", "localhost");
        let err = Layout::from_toml_str(&bad_addr).unwrap_err();
        assert!(matches!(err, LayoutError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("no `:port`"), "{err}");
        let named = EXAMPLE.replace("127.0.0.1:7401", "n1.cairn:7401");
        let layout = Layout::from_toml_str(&named).unwrap();
        assert_eq!(layout.nodes[0].addr.to_string(), "n1.cairn:7401");
        assert_eq!(Layout::from_toml_str(&layout.to_toml_string()), Ok(layout));
        let unknown = EXAMPLE.replace("weight = 100\n", "weight = 100\ncolour = \"red\"\n");
        let err = Layout::from_toml_str(&unknown).unwrap_err();
        assert!(matches!(err, LayoutError::Parse { .. }), "{err}");
    }

    #[test]
    fn duplicate_id() {
        let err = invalid(|l| l.nodes[1].id = "n1".into());
        assert_eq!(err, LayoutError::DuplicateId { id: "n1".into() });
        assert!(err.to_string().contains("\"n1\""));
    }

    #[test]
    fn duplicate_address() {
        let err = invalid(|l| l.nodes[2].addr = l.nodes[0].addr.clone());
        assert_eq!(
            err,
            LayoutError::DuplicateAddress {
                addr: "127.0.0.1:7401".parse().unwrap(),
                first_id: "n1".into(),
                second_id: "n3".into(),
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("\"n1\"") && message.contains("\"n3\""),
            "{message}"
        );
    }

    #[test]
    fn invalid_ids() {
        for (id, reason_part) in [
            ("", "empty"),
            ("N1", "lowercase"),
            ("n_1", "lowercase"),
            ("n.1", "lowercase"),
            ("-n1", "start or end"),
            ("n1-", "start or end"),
            (&"a".repeat(64)[..], "longer"),
        ] {
            let err = invalid(|l| l.nodes[0].id = id.to_owned());
            match &err {
                LayoutError::InvalidId { id: got, reason } => {
                    assert_eq!(got, id);
                    assert!(reason.contains(reason_part), "{id:?}: {reason}");
                }
                other => panic!("{id:?}: {other}"),
            }
        }
        let mut layout = example();
        layout.nodes[0].id = "a".repeat(63);
        layout.nodes[1].id = "0-9".into();
        layout
            .validate()
            .expect("63 characters and inner '-' are fine");
    }

    #[test]
    fn empty_zone() {
        let err = invalid(|l| l.nodes[1].zone.clear());
        assert_eq!(err, LayoutError::EmptyZone { id: "n2".into() });
    }

    #[test]
    fn zone_too_long() {
        let err = invalid(|l| l.nodes[0].zone = "z".repeat(ZONE_NAME_BYTES_MAX + 1));
        assert!(matches!(err, LayoutError::ZoneTooLong { .. }), "{err}");
        let mut fine = example();
        fine.nodes[0].zone = "z".repeat(ZONE_NAME_BYTES_MAX);
        assert_eq!(fine.validate(), Ok(()));
    }

    #[test]
    fn zero_weight() {
        let err = invalid(|l| l.nodes[2].weight = 0);
        assert_eq!(err, LayoutError::ZeroWeight { id: "n3".into() });
    }

    #[test]
    fn factor_zero_and_too_large() {
        let err = invalid(|l| l.replication_factor = 0);
        assert_eq!(err, LayoutError::FactorZero);
        let err = invalid(|l| {
            l.replication_factor = REPLICATION_FACTOR_MAX + 1;
            l.write_quorum = 1;
        });
        assert_eq!(
            err,
            LayoutError::FactorTooLarge {
                replication_factor: REPLICATION_FACTOR_MAX + 1,
                max: REPLICATION_FACTOR_MAX,
            }
        );
    }

    #[test]
    fn quorum_out_of_range() {
        for quorum in [0, 4] {
            let err = invalid(|l| l.write_quorum = quorum);
            assert_eq!(
                err,
                LayoutError::QuorumOutOfRange {
                    write_quorum: quorum,
                    replication_factor: 3,
                }
            );
        }
    }

    #[test]
    fn too_few_nodes() {
        let err = invalid(|l| {
            l.nodes.pop();
        });
        assert_eq!(
            err,
            LayoutError::TooFewNodes {
                nodes: 2,
                replication_factor: 3,
            }
        );
    }

    #[test]
    fn too_many_nodes() {
        let mut layout = example();
        layout.nodes = (0..=NODES_MAX)
            .map(|i| NodeSpec {
                id: format!("n{i}"),
                addr: std::net::SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 7401))
                    .into(),
                zone: "zone-a".into(),
                weight: 1,
            })
            .collect();
        assert_eq!(
            layout.validate().unwrap_err(),
            LayoutError::TooManyNodes {
                nodes: NODES_MAX + 1,
                max: NODES_MAX,
            }
        );
        layout.nodes.pop();
        layout.validate().expect("NODES_MAX nodes are fine");
    }
}
