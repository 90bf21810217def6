//! One pooled QUIC connection per node, shared by every request to it (requests are multiplexed
//! as streams), and the failure memory that keeps requests from waiting on a dead node.
//!
//! Used by the client and by nodes talking to each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use cairn_core::addr::NodeAddr;
use cairn_core::layout::NodeSpec;
use cairn_core::limits::{REQUEST_HEADER_BYTES_MAX, RESPONSE_HEADER_BYTES_MAX};
use cairn_core::wire::{self, Request, Response};

use crate::error::{ClientError, classify_connection_error};
use crate::framing;
use crate::limits::{
    CONNECT_TIMEOUT_MS, DOWN_BACKOFF_MS_MAX, DOWN_BACKOFF_MS_MIN, RESOLVE_TIMEOUT_MS,
};

#[derive(Default)]
struct Slot {
    conn: Option<quinn::Connection>,
    down_until: Option<Instant>,
    failures: u32,
}

impl Slot {
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(16);
        let pause = (DOWN_BACKOFF_MS_MIN << shift).min(DOWN_BACKOFF_MS_MAX);
        self.down_until = Some(Instant::now() + Duration::from_millis(pause));
    }
}

/// Connections to nodes, by node id.
pub struct Pool {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Pool {
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig) -> Pool {
        Pool {
            endpoint,
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots.lock().entry(id.to_string()).or_default().clone()
    }

    /// Whether a recent failure marks the node as down (requests should try others first).
    pub fn is_down(&self, id: &str) -> bool {
        let slot = self.slot(id);
        let Ok(slot) = slot.try_lock() else {
            return false;
        };
        slot.conn.is_none() && slot.down_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether the last attempt to reach the node failed and none has succeeded since: reads
    /// try such a node last, so they do not wait on it while other replicas answer.
    pub fn is_suspect(&self, id: &str) -> bool {
        let slot = self.slot(id);
        let Ok(slot) = slot.try_lock() else {
            return false;
        };
        slot.failures > 0
    }

    /// Smoothed round-trip time of the open connection to the node, if there is one.
    pub fn rtt(&self, id: &str) -> Option<Duration> {
        let slot = self.slot(id);
        let slot = slot.try_lock().ok()?;
        slot.conn
            .as_ref()
            .filter(|c| c.close_reason().is_none())
            .map(|c| c.rtt())
    }

    /// The open connection to `node`, connecting if needed. A node that failed recently is
    /// reported unreachable at once, until its backoff has passed.
    pub async fn connection(&self, node: &NodeSpec) -> Result<quinn::Connection, ClientError> {
        let slot = self.slot(&node.id);
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            slot.conn = None;
        }
        if slot.down_until.is_some_and(|t| Instant::now() < t) {
            return Err(ClientError::Unreachable {
                node: node.id.clone(),
                message: "failed recently; retrying after a pause".into(),
            });
        }
        let result = self.connect(node).await;
        match &result {
            Ok(conn) => {
                slot.conn = Some(conn.clone());
                slot.down_until = None;
                slot.failures = 0;
            }
            Err(_) => slot.failed(),
        }
        result
    }

    async fn connect(&self, node: &NodeSpec) -> Result<quinn::Connection, ClientError> {
        let ipv6 = self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6());
        let addr = resolve(node, ipv6).await?;
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, &node.id)
            .map_err(|e| ClientError::Unreachable {
                node: node.id.clone(),
                message: e.to_string(),
            })?;
        match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify_connection_error(&node.id, &e)),
            Err(_) => Err(ClientError::Unreachable {
                node: node.id.clone(),
                message: format!("no handshake within {CONNECT_TIMEOUT_MS} ms"),
            }),
        }
    }

    /// Forgets the connection to a node after a transport failure, marking it down.
    /// Forgets a node's failures: it is known to be up again (a node heard its heartbeat), so
    /// the next request connects at once instead of waiting out the backoff.
    pub fn clear_backoff(&self, id: &str) {
        let slot = self.slot(id);
        if let Ok(mut slot) = slot.try_lock()
            && slot.down_until.is_some()
        {
            slot.down_until = None;
            slot.failures = 0;
        }
    }

    /// A node already marked down (no connection, backoff running) is left as it is: the
    /// failure that marked it is the one being reported, and counting it again would keep
    /// pushing its next attempt away while requests keep arriving.
    pub async fn mark_down(&self, id: &str) {
        let slot = self.slot(id);
        let mut slot = slot.lock().await;
        if slot.conn.is_none() && slot.down_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Some(conn) = slot.conn.take() {
            conn.close(wire::CONNECTION_CLOSE_CODE.into(), b"peer failed");
        }
        slot.failed();
    }

    /// Opens a stream to `node` and sends `request`'s header, leaving the stream open for a
    /// body. Transport failures mark the node down.
    pub async fn open(
        &self,
        node: &NodeSpec,
        request: &Request,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let conn = self.connection(node).await?;
        let (mut send, recv) = match conn.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                self.mark_down(&node.id).await;
                return Err(classify_connection_error(&node.id, &e));
            }
        };
        framing::write_frame(&mut send, request, REQUEST_HEADER_BYTES_MAX)
            .await
            .map_err(|e| ClientError::from_frame(&node.id, e))?;
        Ok((send, recv))
    }

    /// A request without a body: sends it, finishes the stream, reads the response header.
    pub async fn call(
        &self,
        node: &NodeSpec,
        request: &Request,
    ) -> Result<(Response, quinn::RecvStream), ClientError> {
        let (mut send, mut recv) = self.open(node, request).await?;
        let _ = send.finish();
        let response = read_response(&node.id, &mut recv).await?;
        Ok((response, recv))
    }

    /// Closes every connection and waits for the peers to be told.
    pub async fn close(&self) {
        self.endpoint
            .close(wire::CONNECTION_CLOSE_CODE.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

/// Reads a response header from a node.
pub async fn read_response(
    node: &str,
    recv: &mut quinn::RecvStream,
) -> Result<Response, ClientError> {
    framing::read_frame(recv, RESPONSE_HEADER_BYTES_MAX)
        .await
        .map_err(|e| ClientError::from_frame(node, e))
}

/// The IP address to connect to `node` at. A host name is resolved on every connection
/// attempt, never cached here: a node recreated with a new IP (a rescheduled pod, a recreated
/// container) is found again as soon as its old connection fails. The resolver's own cache
/// (nscd, systemd-resolved, the cluster DNS) keeps the answer as long as its TTL allows. An
/// IPv4 endpoint can reach only IPv4 addresses, so it takes the first of those.
async fn resolve(node: &NodeSpec, ipv6: bool) -> Result<SocketAddr, ClientError> {
    let (host, port) = match &node.addr {
        NodeAddr::Ip(addr) => return Ok(*addr),
        NodeAddr::Name { host, port } => (host.as_str(), *port),
    };
    let unreachable = |message: String| ClientError::Unreachable {
        node: node.id.clone(),
        message,
    };
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_millis(RESOLVE_TIMEOUT_MS), lookup).await {
        Err(_) => Err(unreachable(format!(
            "{host} was not resolved within {RESOLVE_TIMEOUT_MS} ms"
        ))),
        Ok(Err(e)) => Err(unreachable(format!("cannot resolve {host}: {e}"))),
        // The resolver orders its answers (RFC 6724); the first usable is the one to try.
        Ok(Ok(mut addrs)) => addrs.find(|a| ipv6 || a.is_ipv4()).ok_or_else(|| {
            unreachable(format!(
                "{host} resolves to no address this endpoint can reach"
            ))
        }),
    }
}
