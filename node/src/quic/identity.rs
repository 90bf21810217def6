//! Who is at the other end of a connection: the names its certificate carries, and the
//! protocol version it speaks. Every peer
//! holds a certificate of the cluster's CA (mutual TLS), but that says only that it belongs to
//! the cluster; a node-protocol message in a node's name (a heartbeat, a healing or metadata
//! message) is acted on as that node's word, so it is accepted only from a connection whose
//! certificate names that node as a node (`cairn certs` gives a node's certificate its id and
//! `node.cairn`, a client's neither).

use std::sync::atomic::{AtomicBool, Ordering};

use cairn_client::SEED_SERVER_NAME;
use rustls::pki_types::{CertificateDer, ServerName};

/// The certificate a connection's peer presented, and whether a refusal was logged for it.
pub(crate) struct PeerIdentity {
    leaf: Option<CertificateDer<'static>>,
    /// The protocol version the handshake settled on (`wire::ALPNS_SPOKEN`).
    pub(crate) protocol: u32,
    warned: AtomicBool,
}

impl PeerIdentity {
    pub(crate) fn of(conn: &quinn::Connection) -> PeerIdentity {
        let leaf = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.into_iter().next());
        let protocol = cairn_client::tls::negotiated_protocol(conn).unwrap_or(0);
        PeerIdentity {
            leaf,
            protocol,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether the peer's certificate names `node` as a node of the cluster.
    pub(crate) fn speaks_for(&self, node: &str) -> bool {
        self.names(&[node, SEED_SERVER_NAME])
    }

    /// Whether the peer's certificate is a node's (of any node): a node's requests come from
    /// its fronts, its healing and its collector, a client's from outside.
    pub(crate) fn is_node(&self) -> bool {
        self.names(&[SEED_SERVER_NAME])
    }

    /// Whether the peer's certificate is valid for every one of `names`.
    fn names(&self, names: &[&str]) -> bool {
        let Some(leaf) = &self.leaf else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        names.iter().all(|name| {
            ServerName::try_from(*name)
                .is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
        })
    }

    /// Whether this is the connection's first refusal (to be logged: once, not per message).
    pub(crate) fn first_refusal(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}
