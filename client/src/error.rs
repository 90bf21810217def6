//! `ClientError`: every way a cluster request can fail, typed so callers can tell a refused
//! certificate from a dead node from a missing blob.

use cairn_engine::Hash;

use cairn_core::layout::LayoutError;
use cairn_core::wire::{self, ErrorCode};

use crate::framing::FramingError;
use crate::tls::TlsError;

/// TLS alert codes (RFC 8446) that say why a handshake was refused.
const ALERT_BAD_CERTIFICATE: u64 = 42;
const ALERT_CERTIFICATE_UNKNOWN: u64 = 46;
const ALERT_UNKNOWN_CA: u64 = 48;
const ALERT_DECRYPT_ERROR: u64 = 51;
const ALERT_CERTIFICATE_REQUIRED: u64 = 116;
const ALERT_NO_APPLICATION_PROTOCOL: u64 = 120;

/// QUIC transport error codes 0x100..=0x1ff carry a TLS alert.
const CRYPTO_ERROR_BASE: u64 = 0x100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS handshake failed on certificates: ours was missing or not signed by the cluster
    /// CA, or the node's was not.
    #[error("node {node} refused the connection: {reason}")]
    Refused { node: String, reason: String },
    /// The node speaks another protocol version.
    #[error(
        "node {node} does not speak protocol {ours} ({message}); client and node versions differ"
    )]
    ProtocolVersion {
        node: String,
        ours: String,
        message: String,
    },
    /// The node could not be reached, or the connection to it failed.
    #[error("node {node} unreachable: {message}")]
    Unreachable { node: String, message: String },
    /// The node answered with an error.
    #[error("node {node} answered {code}: {message}")]
    Remote {
        node: String,
        code: ErrorCode,
        message: String,
    },
    /// No reachable replica holds the blob.
    #[error("blob {hash} not found")]
    NotFound { hash: Hash },
    /// The bytes a node sent do not hash to the blob's name.
    #[error("node {node} sent corrupt bytes for {expected} (they hash to {actual})")]
    Corrupt {
        node: String,
        expected: Hash,
        actual: Hash,
    },
    /// The node broke the protocol (a malformed or unexpected response).
    #[error("node {node} broke the protocol: {message}")]
    Protocol { node: String, message: String },
    /// The operation did not finish within its deadline; `last` is the last failure seen.
    #[error("gave up after {elapsed_ms} ms and {attempts} attempts; last error: {last}")]
    Deadline {
        elapsed_ms: u64,
        attempts: u32,
        last: Box<ClientError>,
    },
    /// The range asked for lies outside the blob.
    #[error("range {offset}+{len} lies outside a blob of {blob_len} bytes")]
    RangeOutOfBounds {
        offset: u64,
        len: u64,
        blob_len: u64,
    },
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("local IO: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    pub(crate) fn from_frame(node: &str, e: FramingError) -> ClientError {
        match e {
            FramingError::Connection(c) => classify_connection_error(node, &c),
            FramingError::Stream(message) => ClientError::Unreachable {
                node: node.to_string(),
                message,
            },
            other => ClientError::Protocol {
                node: node.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// Whether trying again (the same node later, or another replica) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Corrupt { .. } => true,
            ClientError::Remote { code, .. } => matches!(
                code,
                ErrorCode::QuorumFailed
                    | ErrorCode::Busy
                    | ErrorCode::Internal
                    | ErrorCode::Corrupted
                    | ErrorCode::ReadOnly
                    | ErrorCode::StoreFull
                    | ErrorCode::NotFound
            ),
            _ => false,
        }
    }
}

/// Turns a QUIC connection failure into a typed error, reading TLS alerts for refusals.
pub fn classify_connection_error(node: &str, e: &quinn::ConnectionError) -> ClientError {
    let node = node.to_string();
    let (code, reason) = match e {
        quinn::ConnectionError::ConnectionClosed(close) => (
            u64::from(close.error_code),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        quinn::ConnectionError::TransportError(t) => (u64::from(t.code), t.reason.clone()),
        quinn::ConnectionError::VersionMismatch => {
            return ClientError::ProtocolVersion {
                node,
                ours: String::from_utf8_lossy(wire::ALPN).into_owned(),
                message: "no common QUIC version".into(),
            };
        }
        other => {
            return ClientError::Unreachable {
                node,
                message: other.to_string(),
            };
        }
    };
    let Some(alert) = code.checked_sub(CRYPTO_ERROR_BASE).filter(|a| *a < 0x100) else {
        return ClientError::Unreachable {
            node,
            message: e.to_string(),
        };
    };
    let reason = if reason.is_empty() {
        e.to_string()
    } else {
        reason
    };
    match alert {
        ALERT_NO_APPLICATION_PROTOCOL => ClientError::ProtocolVersion {
            node,
            ours: String::from_utf8_lossy(wire::ALPN).into_owned(),
            message: reason,
        },
        ALERT_CERTIFICATE_REQUIRED => ClientError::Refused {
            node,
            reason: format!("the node requires a client certificate ({reason})"),
        },
        ALERT_BAD_CERTIFICATE
        | ALERT_CERTIFICATE_UNKNOWN
        | ALERT_UNKNOWN_CA
        | ALERT_DECRYPT_ERROR => ClientError::Refused {
            node,
            reason: format!("certificate not accepted: not signed by the cluster CA? ({reason})"),
        },
        _ => ClientError::Refused {
            node,
            reason: format!("TLS alert {alert}: {reason}"),
        },
    }
}
