//! A small HTTP/1.1 client for tests of Cairn's HTTP front: hyper's connection API over a
//! tokio `TcpStream`, one connection per request (nothing stale survives a node that was
//! stopped, paused or cut off), a bearer token, a timeout on the whole exchange, bodies in
//! memory.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Time a request may take, connecting included, unless `with_timeout` says otherwise.
pub const HTTP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Why a request got no answer: the connection failed, the exchange broke or timed out. An
/// answer with an error status is an `HttpResponse`, not an `HttpError`.
#[derive(Clone, Debug)]
pub struct HttpError {
    pub addr: SocketAddr,
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.addr, self.message)
    }
}

impl std::error::Error for HttpError {}

/// A whole answer.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "{} with a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// The body as text, cut to `max` bytes, for messages.
    pub fn text(&self, max: usize) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(max)]).into_owned()
    }
}

/// A node's HTTP front at one address.
#[derive(Clone, Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl HttpClient {
    /// Requests carry `Authorization: Bearer <token>` when a token is given.
    pub fn new(addr: SocketAddr, token: Option<&str>) -> HttpClient {
        HttpClient {
            addr,
            token: token.map(str::to_string),
            timeout: HTTP_TIMEOUT_DEFAULT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request on a fresh connection; the whole answer, or why there was none.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, headers, body)).await {
            Ok(result) => result.map_err(|message| HttpError {
                addr: self.addr,
                message,
            }),
            Err(_) => Err(HttpError {
                addr: self.addr,
                message: format!("no answer within {:?}", self.timeout),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // The connection runs until the answer is read and the sender dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.addr.to_string());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if method == Method::PUT || method == Method::POST {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: body: {e}"))?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn put(&self, path: &str, body: impl Into<Bytes>) -> Result<HttpResponse, HttpError> {
        self.request(Method::PUT, path, &[], body.into()).await
    }

    pub async fn get(&self, path: &str) -> Result<HttpResponse, HttpError> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn head(&self, path: &str) -> Result<HttpResponse, HttpError> {
        self.request(Method::HEAD, path, &[], Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Result<HttpResponse, HttpError> {
        self.request(Method::DELETE, path, &[], Bytes::new()).await
    }

    /// A GET whose answer must be JSON: its status and parsed body.
    pub async fn get_json(&self, path: &str) -> Result<(StatusCode, serde_json::Value), HttpError> {
        let response = self.get(path).await?;
        let json = response.json().map_err(|message| HttpError {
            addr: self.addr,
            message: format!("GET {path}: {message}"),
        })?;
        Ok((response.status, json))
    }
}
