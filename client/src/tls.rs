//! Mutual TLS over QUIC: loading a cluster identity, building quinn client and server
//! configurations, and binding UDP endpoints.
//!
//! Every peer, node or client, presents a certificate signed by the cluster's CA, and checks the
//! other side's against the same CA. A node's certificate names its node id (a DNS label), which
//! is the server name clients connect with, so a node cannot impersonate another. Only TLS 1.3
//! with the ring provider is compiled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use cairn_core::wire::{ALPN, ALPNS_SPOKEN};

use crate::limits::{
    CONNECTION_RECEIVE_WINDOW_BYTES, IDLE_TIMEOUT_MS, KEEP_ALIVE_INTERVAL_MS, SEND_WINDOW_BYTES,
    STREAM_RECEIVE_WINDOW_BYTES, STREAMS_PER_CONNECTION_MAX, UDP_SOCKET_BUFFER_BYTES,
};

/// Why a TLS identity or configuration could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{what} holds no {expected}")]
    Empty {
        what: String,
        expected: &'static str,
    },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// A peer's credentials: the cluster CA it trusts, its certificate chain and private key.
#[derive(Debug)]
pub struct Identity {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads PEM files: the CA certificate(s), this peer's certificate chain, its private key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| TlsError::Read {
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        Identity::from_pem(&read(ca)?, &read(cert)?, &read(key)?).map_err(|e| match e {
            TlsError::Empty { what, expected } => TlsError::Empty {
                what: match what.as_str() {
                    "CA" => ca.display().to_string(),
                    "certificate" => cert.display().to_string(),
                    _ => key.display().to_string(),
                },
                expected,
            },
            other => other,
        })
    }

    /// Parses PEM text: the CA certificate(s), this peer's certificate chain, its private key.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Identity, TlsError> {
        let certs = |text: &str, what: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let list: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Config(format!("{what}: {e}")))?;
            if list.is_empty() {
                return Err(TlsError::Empty {
                    what: what.to_string(),
                    expected: "PEM certificate",
                });
            }
            Ok(list)
        };
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| TlsError::Empty {
            what: "key".to_string(),
            expected: "PEM private key",
        })?;
        Ok(Identity {
            ca: certs(ca, "CA")?,
            chain: certs(cert, "certificate")?,
            key,
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.ca {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The transport limits shared by every Cairn endpoint.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(STREAMS_PER_CONNECTION_MAX))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(IDLE_TIMEOUT_MS))
                .expect("idle timeout fits a QUIC varint"),
        ))
        .keep_alive_interval(Some(Duration::from_millis(KEEP_ALIVE_INTERVAL_MS)))
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES);
    t
}

/// A client configuration presenting `identity` and offering `alpn`: for [`ALPN`], every
/// version spoken (`wire::ALPNS_SPOKEN`, newest first); any other only itself (tests of a
/// version mismatch).
pub fn client_config(identity: &Identity, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(identity.roots()?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = match alpn == ALPN {
        true => ALPNS_SPOKEN.iter().map(|a| a.to_vec()).collect(),
        false => vec![alpn.to_vec()],
    };
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A server configuration presenting `identity` and requiring a client certificate signed by
/// the cluster CA: a peer without one fails the handshake, before any request is read.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(identity.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The server's order decides: the newest version the client offers too.
    tls.alpn_protocols = ALPNS_SPOKEN.iter().map(|a| a.to_vec()).collect();
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Binds a UDP socket with `UDP_SOCKET_BUFFER_BYTES` buffers and wraps it in a quinn endpoint,
/// accepting connections when `server` is given. Must be called inside a tokio runtime.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: an unprivileged process may be capped below the request by the kernel.
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime found for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket.into(),
        runtime,
    )
}

/// The protocol version a connection's handshake settled on (`None`: no ALPN, which the
/// configurations here never allow).
pub fn negotiated_protocol(conn: &quinn::Connection) -> Option<u32> {
    let data = conn.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    cairn_core::wire::protocol_version(data.protocol.as_deref()?)
}
