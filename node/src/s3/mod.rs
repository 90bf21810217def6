//! The S3 front: buckets and keys over Cairn's blobs, for artifact servers that already speak
//! S3 (Artifactory, Nexus, the Docker registry, Jenkins).
//!
//! The S3 protocol itself (routing, XML, SigV4 in headers and presigned URLs, aws-chunked
//! bodies with trailing checksums, error documents) is the `s3s` crate's; this module answers
//! the operations. An object is a record in the replicated metadata ([`crate::meta`]) naming
//! the blobs that hold its bytes: one for a PutObject, one per part for a multipart upload
//! (completing it writes no bytes again), none for an empty object. Blobs are written through
//! the node's cluster client, like any client's, before the record that names them.
//!
//! - [`ops`]: the operations, by family (buckets, objects, listings, multipart uploads).
//! - [`rules`]: S3's rules as plain functions (keys, conditions, ranges, tokens, errors).
//! - [`access`]: what each operation needs of its key, ownership and ACLs, and the
//!   server-side encryption Cairn refuses (plain functions).
//! - [`keys`]: the access keys, the configuration file's and those managed online, and their
//!   permissions on buckets; [`admin`]: `cairn key` and `cairn bucket`, answered.
//! - [`body`]: taking in a request body in chunks (stored as they fill, hashes, checksums).
//! - [`records`]: the records and their keys.
//! - [`gc`]: removing blobs no object or upload refers to, after applying the buckets'
//!   lifecycle rules.
//! - [`tags`], [`checksums`], [`lifecycle`]: S3's rules for tags, additional checksums and
//!   lifecycle configurations (plain functions).
//! - [`spelling`]: response header names spelled as S3 spells them.

mod access;
mod admin;
mod body;
mod checksums;
pub mod gc;
mod keys;
mod lifecycle;
mod ops;
pub mod records;
mod rules;
mod spelling;
mod tags;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::S3Settings;
use crate::error::NodeError;
use crate::front::stall::StallGuard;
use crate::front::tls::{FrontStream, FrontTls};
use crate::limits::{
    ACCEPT_RETRY_PAUSE_MS, HTTP_RETRY_AFTER_SECS, S3_CLOCK_SKEW_SECS_MAX, S3_CONNECTIONS_MAX,
    S3_HEADER_BYTES_MAX, S3_HEADERS_COUNT_MAX, S3_PRESIGNED_EXPIRES_SECS_MAX,
    S3_XML_BODY_BYTES_MAX,
};
use crate::state::State;

/// A status an operation answers with where S3's differs from the one the S3 library gives
/// its output (PutBucketTagging's 204, HeadObject's 206 for a part): set as a response
/// extension by the operation, applied by the listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusOverride(pub hyper::StatusCode);

/// The S3 front of one node: the operations' side.
pub(crate) struct S3Front {
    state: Arc<State>,
    settings: S3Settings,
    /// Buckets found to exist, and when: a put checks its bucket at most once per
    /// `S3_BUCKET_SEEN_MS` through this node.
    buckets_seen: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The access keys and what each may do.
    keys: Arc<keys::Keyring>,
    /// Chunk buffers kept for the next bodies.
    chunk_buffers: Arc<body::ChunkBuffers>,
}

/// A running S3 front.
pub(crate) struct S3Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    /// The access keys' refresh and the key and bucket desk.
    helpers: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl S3Server {
    pub fn stop(&self) {
        self.task.abort();
        for helper in &self.helpers {
            helper.abort();
        }
        let _ = self.stop.send(true);
    }
}

/// The S3 operation a request turned out to be, as the S3 library routed it: written by
/// [`Access::check`], read for the request's metrics. A request refused before its access
/// check (over the in-flight limit, a presigned URL valid too long, a malformed request, a bad
/// signature) is `none`.
#[derive(Clone, Default)]
struct OperationSlot(Arc<parking_lot::Mutex<Option<String>>>);

impl OperationSlot {
    fn name(&self) -> String {
        self.0.lock().clone().unwrap_or_else(|| "none".to_string())
    }
}

/// Who may do what: every operation needs a signed request (as the S3 library's default
/// check) by a key with the permission it needs (`access::need_of`, `keys::Keyring`). It also
/// notes the operation for the request's metrics.
struct Access(Arc<keys::Keyring>);

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let name = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            *slot.0.lock() = Some(name.clone());
        }
        let Some(credentials) = cx.credentials() else {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        };
        let copy_source = cx
            .headers()
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok());
        let need = access::need_of(&name, cx.s3_path(), copy_source);
        self.0.authorize(&credentials.access_key, &need).await
    }
}

/// The access keys: the configuration file's and those managed online; an unknown one is
/// refused as S3 does.
struct AccessKeys(Arc<keys::Keyring>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for AccessKeys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        self.0.secret_of(access_key).await.map(Into::into)
    }
}

/// Virtual-host-style addressing under one domain: `BUCKET.<domain>` names the bucket, and
/// every other host (the domain itself, an address, a node's own name) is path-style. (The S3
/// library's own hosts take any other name for a bucket, which would turn a path-style request
/// to `n1:9480` into one for bucket `n1`.)
struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    fn under(domain: &str) -> VirtualHosts {
        VirtualHosts {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// The bucket `host` names, if it is one under the domain.
    fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let cut = name.len().checked_sub(self.domain.len() + 1)?;
        let (bucket, rest) = name.split_at(cut);
        (rest.len() == self.domain.len() + 1
            && rest.as_bytes()[0] == b'.'
            && rest[1..].eq_ignore_ascii_case(&self.domain)
            && !bucket.is_empty())
        .then_some(bucket)
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        // DNS names are case-insensitive; bucket names are lowercase.
        Ok(match self.bucket_of(host) {
            Some(bucket) => s3s::host::VirtualHost::new(self.domain.as_str())
                .with_bucket(bucket.to_ascii_lowercase()),
            None => s3s::host::VirtualHost::new(host),
        })
    }
}

/// Binds the S3 front and starts serving.
pub(crate) async fn start(state: Arc<State>, settings: &S3Settings) -> Result<S3Server, NodeError> {
    let keyring = Arc::new(keys::Keyring::new(
        state.clone(),
        settings.load_credentials()?,
        settings.load_key_encryption_key()?,
    ));
    let tls = settings
        .tls
        .as_ref()
        .map(|files| FrontTls::start(files, state.tls_figures("s3")))
        .transpose()?
        .map(Arc::new);
    // Versions before 0.3 spooled large bodies here; none does now.
    let _ = std::fs::remove_dir_all(state.data_dir.join("s3-spool"));
    let (listener, addr) = crate::front::bind(settings.listen).await?;
    let ids = Arc::new(RequestIds::new(&state.id));
    let front_state = state.clone();
    let admin_state = state.clone();
    let front = S3Front {
        state,
        settings: settings.clone(),
        buckets_seen: Default::default(),
        keys: keyring.clone(),
        chunk_buffers: Default::default(),
    };
    let mut builder = S3ServiceBuilder::new(front);
    builder.set_auth(AccessKeys(keyring.clone()));
    builder.set_access(Access(keyring.clone()));
    if let Some(domain) = &settings.virtual_host_domain {
        builder.set_host(VirtualHosts::under(domain));
    }
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = S3_XML_BODY_BYTES_MAX;
    config.presigned_url_max_skew_time_secs = S3_CLOCK_SKEW_SECS_MAX;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let service = builder.build();
    let (stop, stopped) = watch::channel(false);
    let requests = Arc::new(Semaphore::new(settings.requests_in_flight_max));
    let idle = Duration::from_millis(settings.idle_timeout_ms);
    let spellings = spelling::s3_spellings().await;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let connection = Connection {
        state: front_state,
        service,
        ids,
        spellings,
        tls,
        requests,
        idle,
    };
    let task = crate::task::spawn(accept_loop(connection, listener, stopped));
    let mut helpers = vec![crate::task::spawn(keyring.clone().refresh_loop())];
    if let Some(inbox) = admin_state.keys_desk.as_ref().and_then(|d| d.take_inbox()) {
        helpers.push(crate::task::spawn(admin::serve(
            admin_state.clone(),
            keyring.clone(),
            inbox,
        )));
    }
    tracing::info!(%addr, scheme, "S3 front serving");
    Ok(S3Server {
        addr,
        task,
        helpers,
        stop,
    })
}

/// What serving one connection takes, shared by all of them.
struct Connection {
    state: Arc<State>,
    service: S3Service,
    ids: Arc<RequestIds>,
    spellings: hyper::http::Extensions,
    tls: Option<Arc<FrontTls>>,
    requests: Arc<Semaphore>,
    idle: Duration,
}

async fn accept_loop(shared: Connection, listener: TcpListener, stopped: watch::Receiver<bool>) {
    let Connection {
        state,
        service,
        ids,
        spellings,
        tls,
        requests,
        idle,
    } = shared;
    let connections = Arc::new(Semaphore::new(S3_CONNECTIONS_MAX));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_buf_size(S3_HEADER_BYTES_MAX.max(8192))
        .max_headers(S3_HEADERS_COUNT_MAX);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "S3 accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (service, requests, builder) = (service.clone(), requests.clone(), builder.clone());
        let (ids, spellings, tls) = (ids.clone(), spellings.clone(), tls.clone());
        let state = state.clone();
        let mut stopped = stopped.clone();
        crate::task::spawn(async move {
            let guarded = StallGuard::new(tcp, idle);
            let Some(stream) = FrontStream::open(tls.as_deref(), guarded).await else {
                return;
            };
            let io = TokioIo::new(stream);
            let serve = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (service, requests, ids) = (service.clone(), requests.clone(), ids.clone());
                let spellings = spellings.clone();
                let state = state.clone();
                async move {
                    let started = crate::clock::now();
                    let id = ids.next();
                    let operation = OperationSlot::default();
                    let answered = answer(&service, &requests, request, &id, &operation).await;
                    let mut response = ids.stamp(answered, &id);
                    if let Some(StatusOverride(status)) = response.extensions_mut().remove() {
                        *response.status_mut() = status;
                    }
                    state.figures.s3_requests.finished(
                        &operation.name(),
                        response.status().as_u16(),
                        crate::clock::since(started),
                    );
                    response.extensions_mut().extend(spellings);
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder.serve_connection(io, serve);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "S3 connection ended");
                    }
                }
                _ = stopped.wait_for(|s| *s) => {}
            }
            drop(permit);
        });
    }
}

/// One request's answer: refused when over `requests_in_flight_max` or presigned for too
/// long, else what the S3 service answers.
async fn answer(
    service: &S3Service,
    requests: &Arc<Semaphore>,
    mut request: Request<Incoming>,
    id: &str,
    operation: &OperationSlot,
) -> Response<s3s::Body> {
    let Ok(_slot) = requests.clone().try_acquire_owned() else {
        return slow_down();
    };
    if let Some(refusal) = presigned_too_long(request.uri().query()) {
        return refusal;
    }
    request.extensions_mut().insert(operation.clone());
    let request = request.map(s3s::Body::from);
    match service.call(request).await {
        Ok(response) => {
            // A client's mistake is the client's to see (in its answer); a
            // server error is the operator's.
            if response.status().is_server_error() {
                tracing::warn!(status = %response.status(), request_id = id, "S3 request failed");
            } else if response.status().is_client_error() {
                tracing::debug!(status = %response.status(), request_id = id, "S3 request refused");
            }
            response
        }
        Err(e) => {
            tracing::warn!(error = ?e, request_id = id, "S3 request failed");
            internal_error()
        }
    }
}

/// A presigned URL valid for longer than S3 allows: refused as S3 refuses it.
fn presigned_too_long(query: Option<&str>) -> Option<Response<s3s::Body>> {
    let expires = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Expires="))?;
    let secs: u64 = expires.parse().unwrap_or(u64::MAX);
    (secs > S3_PRESIGNED_EXPIRES_SECS_MAX).then(|| {
        xml_error(
            400,
            "AuthorizationQueryParametersError",
            &format!(
                "X-Amz-Expires must be less than a week (in seconds) that is \
                 {S3_PRESIGNED_EXPIRES_SECS_MAX}"
            ),
        )
    })
}

/// Request ids, as S3 gives them: 16 hex digits, this node's tag then a counter. Every answer
/// carries one (`x-amz-request-id`, with the node's id as `x-amz-id-2`), and so does every error
/// document (`RequestId`), so a client's report can be found in the node's log.
struct RequestIds {
    node: hyper::header::HeaderValue,
    tag: u32,
    next: std::sync::atomic::AtomicU32,
}

impl RequestIds {
    fn new(node_id: &str) -> RequestIds {
        let seed = format!("{node_id} {}", crate::clock::wall_ms());
        let hash = blake3::hash(seed.as_bytes());
        let tag = u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 bytes"));
        RequestIds {
            node: hyper::header::HeaderValue::from_str(node_id)
                .unwrap_or(hyper::header::HeaderValue::from_static("cairn")),
            tag,
            next: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:08X}{n:08X}", self.tag)
    }

    /// Sets the answer's request id headers, and puts the id into an error document.
    fn stamp(&self, mut response: Response<s3s::Body>, id: &str) -> Response<s3s::Body> {
        let value = hyper::header::HeaderValue::from_str(id).expect("hex digits");
        let headers = response.headers_mut();
        headers.insert("x-amz-request-id", value);
        headers.insert("x-amz-id-2", self.node.clone());
        if response.status().is_client_error() || response.status().is_server_error() {
            let with_id = response
                .body()
                .bytes()
                .and_then(|body| error_document_with_id(&body, id));
            if let Some(body) = with_id {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_LENGTH, body.len().into());
                *response.body_mut() = s3s::Body::from(body);
            }
        }
        response
    }
}

/// An S3 error document with `<RequestId>` added before its end, unless it has one.
fn error_document_with_id(body: &[u8], id: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if text.contains("<RequestId>") {
        return None;
    }
    let end = text.rfind("</Error>")?;
    Some(format!(
        "{}<RequestId>{id}</RequestId>{}",
        &text[..end],
        &text[end..]
    ))
}

fn xml_error(status: u16, code: &str, message: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = Response::new(s3s::Body::from(body));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    response
}

/// Over `requests_in_flight_max`: S3's answer to a client going too fast.
fn slow_down() -> Response<s3s::Body> {
    let mut response = xml_error(503, "SlowDown", "Please reduce your request rate.");
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(HTTP_RETRY_AFTER_SECS),
    );
    response
}

fn internal_error() -> Response<s3s::Body> {
    xml_error(
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    )
}

#[cfg(test)]
mod tests {
    use super::VirtualHosts;

    #[test]
    fn a_host_under_the_domain_names_a_bucket_and_any_other_is_path_style() {
        let hosts = VirtualHosts::under("S3.Cairn.Example.");
        for (host, bucket) in [
            ("releases.s3.cairn.example", Some("releases")),
            ("releases.s3.cairn.example:9480", Some("releases")),
            (
                "my.dotted.bucket.s3.cairn.example",
                Some("my.dotted.bucket"),
            ),
            ("Releases.S3.CAIRN.example.", Some("Releases")),
            ("s3.cairn.example", None),
            ("s3.cairn.example:9480", None),
            (".s3.cairn.example", None),
            ("releases.xs3.cairn.example", None),
            ("n1:9480", None),
            ("10.0.0.1:9480", None),
            ("[::1]:9480", None),
        ] {
            assert_eq!(hosts.bucket_of(host), bucket, "{host}");
        }
        use s3s::host::S3Host;
        let parsed = hosts
            .parse_host_header("Releases.S3.CAIRN.example")
            .unwrap();
        assert_eq!(
            parsed.bucket(),
            Some("releases"),
            "a bucket name is lowercase"
        );
        let parsed = hosts.parse_host_header("n1:9480").unwrap();
        assert_eq!(parsed.bucket(), None);
    }
}
