//! The HTTP front: what an artifact server (or a load balancer's probe) talks to.
//!
//! Every node serves it beside QUIC. Blob requests go through the cluster with a
//! [`cairn_client::Client`] sharing the node's endpoint, routed and failed over exactly as any
//! client's are, so any node serves any blob. The front adds only HTTP: paths, headers, status
//! codes, JSON errors, limits, the bearer token and metrics.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/blobs` | 201 (new) or 200 (already stored), `{"hash","len"}` |
//! | `PUT /v1/blobs/{hash}` | the same; 422 when the body hashes otherwise |
//! | `GET`, `HEAD /v1/blobs/{hash}` | 200, or 206 for one `Range`; 416; 404 |
//! | `DELETE /v1/blobs/{hash}` | 204, or 404 |
//! | `GET /v1/blobs/{hash}/replicas` | which replicas hold it |
//! | `GET /healthz`, `/readyz` | liveness; readiness (503 with the reason) |
//! | `GET /v1/cluster` | what `cairn status` shows, as JSON |
//! | `GET /metrics` | Prometheus text |

mod blobs;
pub mod range;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::HttpSettings;
use crate::membership::PeerState;
use crate::metrics::{self, HttpMetrics, Operation, Rejection};
use crate::server::{NodeError, State};

/// Connections the front holds open at once; beyond it, a new connection gets a 503 and is
/// closed.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;

/// Largest request head (request line and headers); beyond it, 431.
pub const HTTP_HEADER_BYTES_MAX: usize = 16 * 1024;

/// Most header fields in one request; beyond it, 431.
pub const HTTP_HEADERS_COUNT_MAX: usize = 64;

/// Longest request path; beyond it, 414.
pub const HTTP_PATH_BYTES_MAX: usize = 1024;

/// Request bodies up to this size are held in memory on their way to the cluster; larger ones
/// are spooled to a file in the data directory.
pub const HTTP_BODY_IN_MEMORY_BYTES_MAX: u64 = 2 * 1024 * 1024;

/// The `Retry-After` a 503 carries.
pub const HTTP_RETRY_AFTER_SECS: u64 = 1;

/// A response body in the making: a JSON document, or a blob streaming from the cluster.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// The front of one node.
pub(crate) struct Front {
    state: Arc<State>,
    settings: HttpSettings,
    /// BLAKE3 of the configured token: comparing hashes takes the same time wherever they
    /// differ.
    token: Option<blake3::Hash>,
    requests: Arc<Semaphore>,
    metrics: HttpMetrics,
    spool_dir: PathBuf,
}

/// A running HTTP front.
pub(crate) struct HttpServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl HttpServer {
    /// Stops accepting and closes every connection (requests in flight are cut off).
    pub fn stop(&self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }
}

/// Binds the front and starts serving.
pub(crate) async fn start(
    state: Arc<State>,
    settings: &HttpSettings,
) -> Result<HttpServer, NodeError> {
    let token = settings
        .load_token()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let spool_dir = crate::spool::empty_dir(&state.data_dir.join("http-spool"))?;
    let (listener, addr) = crate::spool::bind(settings.listen).await?;
    let front = Arc::new(Front {
        state,
        settings: settings.clone(),
        token: token.map(|t| blake3::hash(t.as_bytes())),
        requests: Arc::new(Semaphore::new(settings.requests_in_flight_max)),
        metrics: HttpMetrics::default(),
        spool_dir,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(front, listener, stopped));
    tracing::info!(%addr, "HTTP front serving");
    Ok(HttpServer { addr, task, stop })
}

async fn accept_loop(front: Arc<Front>, listener: TcpListener, stopped: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    let idle = Duration::from_millis(front.settings.idle_timeout_ms);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_header_size(HTTP_HEADER_BYTES_MAX)
        .max_headers(HTTP_HEADERS_COUNT_MAX);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, say: wait for some to be given back.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            front.metrics.rejected(Rejection::Connections);
            tokio::spawn(refuse(tcp));
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let front = front.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(StallGuard::new(tcp, idle));
            let service = hyper::service::service_fn(move |request| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.serve(request).await) }
            });
            let connection = builder.serve_connection(io, service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = stopped.wait_for(|s| *s) => {}
            }
            drop(permit);
        });
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut tcp: TcpStream) {
    let body = error_json("overloaded", "too many connections; retry later");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: {HTTP_RETRY_AFTER_SECS}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A failed request, answered with a JSON body `{"code", "message"}`.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status, error_json(self.code, &self.message));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(HTTP_RETRY_AFTER_SECS),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({ "code": code, "message": message }).to_string()
}

pub(crate) fn json_response(status: StatusCode, json: String) -> Response<Body> {
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Where a request goes.
enum Route {
    Blobs,
    Blob(String),
    Replicas(String),
    Health,
    Ready,
    Cluster,
    Metrics,
}

impl Front {
    async fn serve(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let (op, result) = self.route(request).await;
        let response = result.unwrap_or_else(HttpError::into_response);
        self.metrics
            .finished(op, response.status().as_u16(), started.elapsed());
        response
    }

    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
    ) -> (Operation, Result<Response<Body>, HttpError>) {
        let route = match self.check(&request) {
            Ok(route) => route,
            Err(e) => return (Operation::Other, Err(e)),
        };
        let method = request.method().clone();
        let op = match (&route, &method) {
            (Route::Blobs | Route::Blob(_), &Method::PUT) => Operation::Put,
            (Route::Blob(_), &Method::GET) => Operation::Get,
            (Route::Blob(_), &Method::HEAD) => Operation::Head,
            (Route::Blob(_), &Method::DELETE) => Operation::Delete,
            (Route::Replicas(_), &Method::GET) => Operation::Replicas,
            (Route::Cluster, &Method::GET) => Operation::Cluster,
            (Route::Health | Route::Ready, &Method::GET) => Operation::Health,
            (Route::Metrics, &Method::GET) => Operation::Metrics,
            (route, _) => {
                let allow = match route {
                    Route::Blobs => "PUT",
                    Route::Blob(_) => "GET, HEAD, PUT, DELETE",
                    _ => "GET",
                };
                let e = HttpError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not served here; allowed: {allow}"),
                );
                let mut response = e.into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return (Operation::Other, Ok(response));
            }
        };
        // Probes and metrics are answered from memory and stay cheap under any load; everything
        // that reaches the cluster counts against the limit.
        let _permit = match route {
            Route::Health | Route::Ready | Route::Metrics => None,
            _ => match self.requests.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.metrics.rejected(Rejection::Requests);
                    let limit = self.settings.requests_in_flight_max;
                    let e = HttpError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        format!("{limit} requests in flight already; retry later"),
                    );
                    return (op, Err(e));
                }
            },
        };
        let result = match route {
            Route::Blobs => self.put(request, None).await,
            Route::Blob(hash) => match parse_hash(&hash) {
                Err(e) => Err(e),
                Ok(hash) => match method {
                    Method::PUT => self.put(request, Some(hash)).await,
                    Method::GET => self.get(request, hash, false).await,
                    Method::HEAD => self.get(request, hash, true).await,
                    _ => self.delete(hash).await,
                },
            },
            Route::Replicas(hash) => match parse_hash(&hash) {
                Err(e) => Err(e),
                Ok(hash) => self.replicas(hash).await,
            },
            Route::Health => Ok(json_response(
                StatusCode::OK,
                serde_json::json!({ "status": "ok" }).to_string(),
            )),
            Route::Ready => match readiness(&self.state) {
                Ok(()) => Ok(json_response(
                    StatusCode::OK,
                    serde_json::json!({ "status": "ready" }).to_string(),
                )),
                Err(reason) => Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    reason,
                )),
            },
            Route::Cluster => Ok(self.cluster().await),
            Route::Metrics => {
                let in_flight =
                    self.settings.requests_in_flight_max - self.requests.available_permits();
                let text = metrics::render(&self.state, &self.metrics, in_flight);
                let mut response = Response::new(full(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
        };
        (op, result)
    }

    /// The token, then the path: what every request must pass before it is routed.
    fn check(&self, request: &Request<Incoming>) -> Result<Route, HttpError> {
        if let Some(expected) = &self.token {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token);
            let Some(given) = given else {
                self.metrics.rejected(Rejection::Unauthorized);
                return Err(HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this node requires `Authorization: Bearer <token>`",
                ));
            };
            if blake3::hash(given.trim().as_bytes()) != *expected {
                self.metrics.rejected(Rejection::Unauthorized);
                return Err(HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the bearer token is not this cluster's",
                ));
            }
        }
        route(request.uri().path())
    }

    async fn cluster(&self) -> Response<Body> {
        let layout = self.state.routing().layout.clone();
        let own = crate::healing::status(&self.state);
        let statuses =
            crate::admin::statuses(&self.state.pool, &layout, Some((&self.state.id, own))).await;
        let status = crate::admin::ClusterStatus::of(&layout, &statuses);
        let json = serde_json::to_string(&status).expect("a cluster status serializes");
        json_response(StatusCode::OK, json)
    }
}

/// Maps a path to a route. Paths are matched as they are: no decoding, no `.` or `..`
/// segments, no empty segments, so one resource has one name.
fn route(path: &str) -> Result<Route, HttpError> {
    if path.len() > HTTP_PATH_BYTES_MAX {
        return Err(HttpError::new(
            StatusCode::URI_TOO_LONG,
            "path_too_long",
            format!(
                "the path has {} bytes; at most {HTTP_PATH_BYTES_MAX}",
                path.len()
            ),
        ));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(HttpError::bad_request(
            "bad_path",
            "the path must start with /",
        ));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('%'))
    {
        return Err(HttpError::bad_request(
            "bad_path",
            "paths have no empty, '.' or '..' segments and no percent-encoding",
        ));
    }
    match segments.as_slice() {
        ["healthz"] => Ok(Route::Health),
        ["readyz"] => Ok(Route::Ready),
        ["metrics"] => Ok(Route::Metrics),
        ["v1", "cluster"] => Ok(Route::Cluster),
        ["v1", "blobs"] => Ok(Route::Blobs),
        ["v1", "blobs", hash] => Ok(Route::Blob(hash.to_string())),
        ["v1", "blobs", hash, "replicas"] => Ok(Route::Replicas(hash.to_string())),
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("nothing is served at {path}"),
        )),
    }
}

fn parse_hash(text: &str) -> Result<cairn_client::Hash, HttpError> {
    text.parse().map_err(|e| {
        HttpError::bad_request(
            "bad_hash",
            format!("a blob is named by 64 lowercase hex digits of its BLAKE3 hash: {e}"),
        )
    })
}

/// Whether this node can serve: its engine takes writes, it is in the layout, and enough of
/// the layout's nodes are up (itself included) for a read quorum.
fn readiness(state: &State) -> Result<(), String> {
    if let Some(reason) = state.store.stats().read_only {
        return Err(format!("the engine is read-only: {reason:?}"));
    }
    let routing = state.routing();
    let layout = &routing.layout;
    if layout.node_index(&state.id).is_none() {
        return Err(format!(
            "this node is not in layout version {}",
            layout.version
        ));
    }
    let need = (layout.replication_factor + 1)
        .saturating_sub(layout.write_quorum)
        .max(1);
    let up = 1 + state
        .healing
        .membership
        .lock()
        .view()
        .filter(|v| v.state == PeerState::Up && layout.node_index(&v.id).is_some())
        .count();
    if up < need {
        return Err(format!(
            "{up} of {} nodes are up; a read quorum needs {need}",
            layout.nodes.len()
        ));
    }
    Ok(())
}

/// A connection that makes no progress (nothing read, nothing written) for `stall` fails with
/// `TimedOut`: a client that stops sending a body, or stops reading a response, lets go of its
/// connection and request slot.
pub(crate) struct StallGuard<T> {
    io: T,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(io: T, stall: Duration) -> Self {
        StallGuard {
            io,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
        }
    }

    fn progress(&mut self) {
        self.armed = false;
    }

    /// The IO is pending: arm the timer if it is not, and fail once it fires.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.stall;
            self.timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no progress for {} ms", self.stall.as_millis()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_as_they_are() {
        let hash = "a".repeat(64);
        assert!(matches!(route("/v1/blobs"), Ok(Route::Blobs)));
        assert!(matches!(route(&format!("/v1/blobs/{hash}")), Ok(Route::Blob(h)) if h == hash));
        assert!(matches!(
            route(&format!("/v1/blobs/{hash}/replicas")),
            Ok(Route::Replicas(_))
        ));
        for bad in [
            "/v1/blobs/../healthz",
            "/v1/./blobs",
            "/v1//blobs",
            "/v1/blobs/",
            "/v1/blobs/a%2Fb",
            "/v1/blobs%2F..%2Fhealthz",
            "healthz",
        ] {
            let e = route(bad).err().expect(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.code, "bad_path", "{bad}");
        }
        let long = format!("/v1/blobs/{}", "a".repeat(HTTP_PATH_BYTES_MAX));
        assert_eq!(route(&long).err().unwrap().status, StatusCode::URI_TOO_LONG);
        assert_eq!(
            route("/v2/blobs").err().unwrap().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn hashes_are_64_lowercase_hex_digits() {
        assert!(parse_hash(&"0f".repeat(32)).is_ok());
        for bad in [
            "",
            "0f",
            &"0F".repeat(32),
            &"0g".repeat(32),
            &"0".repeat(65),
        ] {
            let e = parse_hash(bad).expect_err(bad);
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_hash"));
        }
    }
}
