//! Where a node's QUIC endpoint is: an IP address and port, or a host name and port that the
//! edge resolves each time it connects (so a node recreated with a new IP is found again once
//! its old connection fails). This module only parses, validates and encodes; it resolves
//! nothing.
//!
//! In text (TOML, JSON) an address is `host:port`, `a.b.c.d:port` or `[v6]:port`. In the
//! node protocol (postcard) an IP address encodes exactly as a `std::net::SocketAddr` does
//! (variant 0 or 1), and a name as variant 2, so a layout of IP addresses reads the same on a
//! node of the previous protocol version.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{HOST_LABEL_BYTES_MAX, HOST_NAME_BYTES_MAX};

/// A node's address: an IP address, or a DNS name resolved when used.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

/// Why a text is not a node address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address (`host:port`, `a.b.c.d:port` or `[v6]:port`): {reason}")]
pub struct AddrError {
    pub text: String,
    pub reason: &'static str,
}

impl NodeAddr {
    /// The port, whichever form the address has.
    pub fn port(&self) -> u16 {
        match self {
            NodeAddr::Ip(addr) => addr.port(),
            NodeAddr::Name { port, .. } => *port,
        }
    }

    /// The IP address, when the address is one (a name is resolved by the edge).
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            NodeAddr::Ip(addr) => Some(*addr),
            NodeAddr::Name { .. } => None,
        }
    }
}

impl From<SocketAddr> for NodeAddr {
    fn from(addr: SocketAddr) -> NodeAddr {
        NodeAddr::Ip(addr)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAddr::Ip(addr) => addr.fmt(f),
            NodeAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for NodeAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<NodeAddr, AddrError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(NodeAddr::Ip(addr));
        }
        let error = |reason| AddrError {
            text: text.to_owned(),
            reason,
        };
        let (host, port) = text.rsplit_once(':').ok_or(error("no `:port`"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| error("the port is not 0 to 65535"))?;
        if port == 0 {
            return Err(error("port 0 cannot be connected to"));
        }
        check_host_name(host).map_err(error)?;
        Ok(NodeAddr::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A DNS name as RFC 1123 has it: dot-separated labels of letters, digits and `-`, none
/// starting or ending with `-`, and not all digits (that would be a mistyped IP address).
pub fn check_host_name(host: &str) -> Result<(), &'static str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("the host name is empty");
    }
    if host.len() > HOST_NAME_BYTES_MAX {
        return Err("the host name is longer than 253 bytes");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > HOST_LABEL_BYTES_MAX {
            return Err("each label of a host name has 1 to 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("a host name holds only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a host name may not start or end with '-'");
        }
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("it looks like an IPv4 address but is not one");
    }
    Ok(())
}

/// The node protocol's form: `SocketAddr`'s two variants, then names.
#[derive(Serialize, Deserialize)]
#[serde(rename = "SocketAddr")]
enum Wire {
    V4(SocketAddrV4),
    V6(SocketAddrV6),
    Name(String, u16),
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return serializer.collect_str(self);
        }
        match self {
            NodeAddr::Ip(addr) => addr.serialize(serializer),
            NodeAddr::Name { host, port } => Wire::Name(host.clone(), *port).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeAddr, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            return text.parse().map_err(serde::de::Error::custom);
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::V4(addr) => NodeAddr::Ip(addr.into()),
            Wire::V6(addr) => NodeAddr::Ip(addr.into()),
            Wire::Name(host, port) => format!("{host}:{port}")
                .parse()
                .map_err(serde::de::Error::custom)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_parse_and_print_back() {
        for text in [
            "127.0.0.1:7401",
            "[::1]:7401",
            "n1:7401",
            "n1.cairn-zone-a.storage.svc.cluster.local:7401",
        ] {
            let addr: NodeAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert!(matches!("10.0.0.1:1".parse(), Ok(NodeAddr::Ip(_))));
        assert_eq!(
            "N1.Example:9".parse::<NodeAddr>().unwrap(),
            NodeAddr::Name {
                host: "n1.example".into(),
                port: 9
            }
        );
    }

    #[test]
    fn a_malformed_address_is_refused_with_the_reason() {
        for (text, reason) in [
            ("n1", "no `:port`"),
            ("n1:", "the port is not 0 to 65535"),
            ("n1:70000", "the port is not 0 to 65535"),
            ("n1:0", "port 0 cannot be connected to"),
            (":7401", "the host name is empty"),
            (
                "n_1:7401",
                "a host name holds only letters, digits, '-' and '.'",
            ),
            (
                "-n1:7401",
                "a label of a host name may not start or end with '-'",
            ),
            ("a..b:7401", "each label of a host name has 1 to 63 bytes"),
            (
                "10.0.0.300:7401",
                "it looks like an IPv4 address but is not one",
            ),
            (
                "::1:7401",
                "a host name holds only letters, digits, '-' and '.'",
            ),
        ] {
            let err = text.parse::<NodeAddr>().unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
        }
        let long = format!("{}:1", vec!["a".repeat(63); 4].join("."));
        assert_eq!(
            long.parse::<NodeAddr>().unwrap_err().reason,
            "the host name is longer than 253 bytes"
        );
    }

    #[test]
    fn an_ip_address_encodes_for_peers_as_a_socket_address_does() {
        for text in ["10.1.2.3:7401", "[fe80::1]:65535"] {
            let socket: SocketAddr = text.parse().unwrap();
            let bytes = postcard::to_allocvec(&NodeAddr::Ip(socket)).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&socket).unwrap());
            let back: NodeAddr = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, NodeAddr::Ip(socket));
        }
        let name: NodeAddr = "n3.cairn:7401".parse().unwrap();
        let bytes = postcard::to_allocvec(&name).unwrap();
        assert_eq!(postcard::from_bytes::<NodeAddr>(&bytes).unwrap(), name);
        // A name a peer sends is checked as one read from a file is.
        let bad = postcard::to_allocvec(&Wire::Name("bad_name".into(), 1)).unwrap();
        assert!(postcard::from_bytes::<NodeAddr>(&bad).is_err());
    }
}
