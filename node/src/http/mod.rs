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
//! | `GET /healthz` | liveness: 200 while the process runs (no token needed, as for both `/readyz`) |
//! | `GET /readyz` | ready to serve reads (503 with the reason) |
//! | `GET /readyz/writes` | ready to take writes too: not full, not read-only (503 with the reason) |
//! | `GET /v1/cluster` | what `cairn status` shows, as JSON |
//! | `GET /metrics` | Prometheus text |

mod blobs;
pub(crate) mod metrics;
mod probes;
pub mod range;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_core::status::ClusterStatus;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use metrics::{HttpMetrics, Operation, Rejection};

use crate::clock;
use crate::config::HttpSettings;
use crate::error::NodeError;
use crate::front::stall::StallGuard;
use crate::front::tls::{FrontStream, FrontTls};
use crate::limits::{
    ACCEPT_RETRY_PAUSE_MS, HTTP_CONNECTIONS_MAX, HTTP_HEADER_BYTES_MAX, HTTP_HEADERS_COUNT_MAX,
    HTTP_PATH_BYTES_MAX, HTTP_RETRY_AFTER_SECS, REFUSAL_WRITE_MS_MAX,
};
use crate::local::files;
use crate::state::State;

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
    /// TLS, when `[http.tls]` is set.
    tls: Option<FrontTls>,
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
    let token = settings.load_token()?;
    let spool_dir = files::empty_dir(&state.data_dir.join("http-spool"))?;
    let tls = settings
        .tls
        .as_ref()
        .map(|files| FrontTls::start(files, state.tls_figures("http")))
        .transpose()?;
    let (listener, addr) = crate::front::bind(settings.listen).await?;
    let front = Arc::new(Front {
        tls,
        state,
        settings: settings.clone(),
        token: token.map(|t| blake3::hash(t.as_bytes())),
        requests: Arc::new(Semaphore::new(settings.requests_in_flight_max)),
        metrics: HttpMetrics::default(),
        spool_dir,
    });
    let (stop, stopped) = watch::channel(false);
    let scheme = if front.tls.is_some() { "https" } else { "http" };
    let task = crate::task::spawn(accept_loop(front, listener, stopped));
    tracing::info!(%addr, scheme, "HTTP front serving");
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
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            front.metrics.rejected(Rejection::Connections);
            // A plain-text 503 means nothing to a TLS client: it is just closed.
            if front.tls.is_none() {
                crate::task::spawn(refuse(tcp));
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let front = front.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        crate::task::spawn(async move {
            let guarded = StallGuard::new(tcp, idle);
            let Some(stream) = FrontStream::open(front.tls.as_ref(), guarded).await else {
                return;
            };
            let io = TokioIo::new(stream);
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
    let _ = tokio::time::timeout(Duration::from_millis(REFUSAL_WRITE_MS_MAX), write).await;
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
    ReadyForWrites,
    Cluster,
    Metrics,
}

impl Front {
    async fn serve(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let started = clock::now();
        let (op, result) = self.route(request).await;
        let response = result.unwrap_or_else(HttpError::into_response);
        self.metrics
            .finished(op, response.status().as_u16(), clock::since(started));
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
        // Why a node is not ready is told to token holders only.
        let why = |reason: &dyn std::fmt::Display| match self.authorized(&request) {
            true => reason.to_string(),
            false => "not ready (the reason is told with the bearer token)".to_string(),
        };
        let op = match (&route, &method) {
            (Route::Blobs | Route::Blob(_), &Method::PUT) => Operation::Put,
            (Route::Blob(_), &Method::GET) => Operation::Get,
            (Route::Blob(_), &Method::HEAD) => Operation::Head,
            (Route::Blob(_), &Method::DELETE) => Operation::Delete,
            (Route::Replicas(_), &Method::GET) => Operation::Replicas,
            (Route::Cluster, &Method::GET) => Operation::Cluster,
            (Route::Health | Route::Ready | Route::ReadyForWrites, &Method::GET) => {
                Operation::Health
            }
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
            Route::Health | Route::Ready | Route::ReadyForWrites | Route::Metrics => None,
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
            Route::Ready => match probes::readiness(&self.state) {
                // Ready for reads; whether writes are taken too is said beside it.
                Ok(()) => Ok(json_response(
                    StatusCode::OK,
                    serde_json::json!({
                        "status": "ready",
                        "writes": match probes::write_readiness(&self.state) {
                            Ok(()) => "ready".to_string(),
                            Err(reason) => why(&reason),
                        },
                    })
                    .to_string(),
                )),
                Err(reason) => Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    why(&reason),
                )),
            },
            Route::ReadyForWrites => match probes::write_readiness(&self.state) {
                Ok(()) => Ok(json_response(
                    StatusCode::OK,
                    serde_json::json!({ "status": "ready" }).to_string(),
                )),
                Err(reason) => Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready_for_writes",
                    why(&reason),
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

    /// Whether the request carries this node's token (or the node needs none).
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        bearer(request).is_some_and(|given| blake3::hash(given.trim().as_bytes()) == *expected)
    }

    /// The path, then the token: what every request must pass before it is routed. The probes
    /// answer without the token, so a kubelet or a load balancer can use them; without it they
    /// say only ready or not (the reason, which may name figures of the node, is for token
    /// holders). Everything else requires the token.
    fn check(&self, request: &Request<Incoming>) -> Result<Route, HttpError> {
        let route = route(request.uri().path());
        if let Ok(Route::Health | Route::Ready | Route::ReadyForWrites) = route {
            return route;
        }
        if let Some(expected) = &self.token {
            let given = bearer(request);
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
        route
    }

    async fn cluster(&self) -> Response<Body> {
        let layout = self.state.routing().layout.clone();
        let own = crate::healing::status::status(&self.state);
        let statuses =
            crate::admin::statuses(&self.state.pool, &layout, Some((&self.state.id, own))).await;
        let status = ClusterStatus::of(&layout, &statuses);
        let json = serde_json::to_string(&status).expect("a cluster status serializes");
        json_response(StatusCode::OK, json)
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
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
        ["readyz", "writes"] => Ok(Route::ReadyForWrites),
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

fn parse_hash(text: &str) -> Result<cairn_engine::Hash, HttpError> {
    text.parse().map_err(|e| {
        HttpError::bad_request(
            "bad_hash",
            format!("a blob is named by 64 lowercase hex digits of its BLAKE3 hash: {e}"),
        )
    })
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
