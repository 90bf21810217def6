//! A small HTTP/1.1 client for tests and benchmarks of the HTTP front: hyper over plain TCP,
//! with the bearer token when one is set. [`HttpClient::request`] opens a connection per call;
//! [`HttpClient::connect`] keeps one open for a run of requests.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;

/// An answer, read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics if it is not: the front answers JSON wherever these are used).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Where requests go, and the token they carry.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// One open keep-alive connection.
pub struct HttpConnection {
    sender: SendRequest<Full<Bytes>>,
    token: Option<String>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> HttpClient {
        HttpClient { addr, token }
    }

    pub async fn connect(&self) -> std::io::Result<HttpConnection> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(HttpConnection {
            sender,
            token: self.token.clone(),
        })
    }

    /// One request on a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> std::io::Result<HttpResponse> {
        self.connect()
            .await?
            .request(method, path, headers, body)
            .await
    }

    pub async fn put(&self, path: &str, body: impl Into<Bytes>) -> std::io::Result<HttpResponse> {
        self.request("PUT", path, &[], body).await
    }

    pub async fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("GET", path, &[], Bytes::new()).await
    }

    pub async fn head(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("HEAD", path, &[], Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.request("DELETE", path, &[], Bytes::new()).await
    }
}

impl HttpConnection {
    /// True once the connection has ended (the server closed it, say after its idle timeout).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> std::io::Result<HttpResponse> {
        let mut all: Vec<(&str, &str)> = vec![("host", "cairn")];
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        if let Some(bearer) = &bearer {
            all.push(("authorization", bearer));
        }
        all.extend_from_slice(headers);
        self.request_raw(method, path, &all, body).await
    }

    /// A request with exactly these headers (the caller sets `host` and any credentials).
    pub async fn request_raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> std::io::Result<HttpResponse> {
        let mut builder = hyper::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body.into()))
            .map_err(std::io::Error::other)?;
        self.sender.ready().await.map_err(std::io::Error::other)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
