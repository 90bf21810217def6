//! What the two fronts (HTTP and S3) share, so that neither imports the other: binding a
//! listener, the stall guard on connections, TLS, and the HTTP front's body spool.

pub mod spool;
pub mod stall;
pub mod tls;

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::error::NodeError;

/// Binds a front's TCP listener; returns it and the address it got.
pub(crate) async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let bind_error = |source| NodeError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}
