//! Pieces shared by the benchmarks that run Cairn nodes in process (`cluster.rs`, `healing.rs`),
//! each of which includes this file with `#[path]`: free UDP ports for a local cluster, the
//! process's CPU time, and the raw-QUIC baseline, a quinn server and a client connection to it
//! with Cairn's own TLS identities, transport limits and socket buffers (`cairn_client::tls`).
//!
//! Each baseline stream's first byte says what the server does with it: `STREAM_SINK` reads
//! the stream to its end and finishes its own side; `STREAM_REQUEST` reads a `REQUEST_BYTES`
//! request and answers `RESPONSE_BYTES` bytes.

use std::net::{SocketAddr, UdpSocket};

use bytes::Bytes;
use cairn_benches::blob;
use cairn_client::{Identity, tls};
use cairn_core::wire;
use cairn_node::dev::ClusterFiles;

/// The request/response baseline's answer: a 4 KiB body, as a 4 KiB get returns.
pub const RESPONSE_BYTES: usize = 4 * 1024;
/// The request/response baseline's request: about the size of Cairn's get header.
pub const REQUEST_BYTES: usize = 48;
/// First byte of a baseline stream: what the server does with it.
pub const STREAM_SINK: u8 = 0;
pub const STREAM_REQUEST: u8 = 1;

/// Process CPU time in `/proc/self/stat` is counted in these (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU seconds this process has used, from `/proc/self/stat` (user plus system).
pub fn process_cpu_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, starting with field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / CLOCK_TICKS_PER_S)
}

/// A base port, at or above `search_start`, with `count` consecutive free UDP ports on
/// 127.0.0.1 from it.
pub fn free_base_port(search_start: u16, count: usize) -> u16 {
    let mut base = search_start;
    loop {
        let all_free = (0..count).all(|i| UdpSocket::bind(("127.0.0.1", base + i as u16)).is_ok());
        if all_free {
            return base;
        }
        base = base
            .checked_add(100)
            .filter(|b| usize::from(*b) + count < usize::from(u16::MAX))
            .expect("a run of free UDP ports");
    }
}

/// The baseline: a quinn server with n1's identity and a client connection to it with the
/// cluster's client identity, both bound by `tls::bind_endpoint` as Cairn's nodes are.
pub struct RawQuic {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl RawQuic {
    pub async fn start(files: &ClusterFiles) -> RawQuic {
        let certs = &files.certs;
        let server_identity = Identity::load(
            &certs.join("ca.pem"),
            &certs.join("n1.pem"),
            &certs.join("n1.key"),
        )
        .expect("load n1 identity");
        let client_tls = files.client_tls();
        let client_identity = Identity::load(&client_tls.ca, &client_tls.cert, &client_tls.key)
            .expect("load client identity");
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let server_config = tls::server_config(&server_identity).expect("server config");
        let server = tls::bind_endpoint(localhost, Some(server_config)).expect("bind server");
        let client = tls::bind_endpoint(localhost, None).expect("bind client");
        let client_config =
            tls::client_config(&client_identity, wire::ALPN).expect("client config");
        tokio::spawn(raw_accept_loop(server.clone()));
        let addr = server.local_addr().expect("server address");
        let conn = client
            .connect_with(client_config, addr, "n1")
            .expect("start handshake")
            .await
            .expect("handshake");
        RawQuic {
            server,
            client,
            conn,
        }
    }

    pub async fn shutdown(self) {
        self.conn
            .close(wire::CONNECTION_CLOSE_CODE.into(), b"benchmark done");
        self.client.wait_idle().await;
        self.server
            .close(wire::CONNECTION_CLOSE_CODE.into(), b"benchmark done");
    }
}

/// Sends `chunks` on a new stream and waits for the server to have read them all.
pub async fn sink(conn: &quinn::Connection, chunks: impl IntoIterator<Item = Bytes>) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(&[STREAM_SINK]).await.expect("send kind");
    for chunk in chunks {
        send.write_chunk(chunk).await.expect("send chunk");
    }
    let _ = send.finish();
    recv.read_to_end(0).await.expect("server finished");
}

async fn raw_accept_loop(endpoint: quinn::Endpoint) {
    let response = Bytes::from(blob(RESPONSE_BYTES, 0xb2));
    while let Some(incoming) = endpoint.accept().await {
        let response = response.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(raw_serve(send, recv, response.clone()));
            }
        });
    }
}

async fn raw_serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream, response: Bytes) {
    let mut kind = [0u8; 1];
    if recv.read_exact(&mut kind).await.is_err() {
        return;
    }
    match kind[0] {
        STREAM_SINK => while let Ok(Some(_)) = recv.read_chunk(usize::MAX, false).await {},
        STREAM_REQUEST => {
            if recv.read_to_end(REQUEST_BYTES).await.is_err() {
                return;
            }
            if send.write_chunk(response).await.is_err() {
                return;
            }
        }
        other => panic!("unknown baseline stream kind {other}"),
    }
    let _ = send.finish();
}
