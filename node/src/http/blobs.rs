//! Blob requests: put (streamed to the cluster when the request names the blob and its
//! length, else hashed and held until it is whole), get and head (with one range), delete,
//! and which replicas hold a blob. Each goes through the cluster with the
//! node's [`cairn_client::Client`]; its errors become HTTP status codes here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use cairn_client::limits::REFRESH_BYTES_MIN;
use cairn_client::{BlobStream, ClientError, Hash};
use cairn_core::wire::{ByteRange, ErrorCode};
use cairn_engine::StreamHasher;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::range::{self, RangeRequest};
use super::{Body, Front, HttpError, json_response};
use crate::front::spool::{Held, Spool};
use crate::limits::{HTTP_BODY_IN_MEMORY_BYTES_MAX, HTTP_STREAM_PIECES_QUEUED_MAX};

/// The optional request header that states a put's length in bytes.
pub const EXPECTED_LENGTH_HEADER: &str = "x-cairn-length";

/// A put's body once it has all arrived: its hash, and where its bytes wait.
struct Received {
    hash: Hash,
    len: u64,
    bytes: Held,
}

impl Front {
    pub(super) async fn put(
        self: &Arc<Self>,
        request: Request<Incoming>,
        named: Option<Hash>,
    ) -> Result<Response<Body>, HttpError> {
        let max = self.settings.body_bytes_max;
        let expected = expected_length(request.headers())?;
        let announced = hyper::body::Body::size_hint(request.body()).exact();
        if let (Some(e), Some(a)) = (expected, announced)
            && e != a
        {
            return Err(HttpError::bad_request(
                "length_mismatch",
                format!("{EXPECTED_LENGTH_HEADER} says {e} bytes, content-length {a}"),
            ));
        }
        if let Some(len) = expected.or(announced)
            && len > max
        {
            return Err(too_large(len, max));
        }
        // A PUT naming a large blob the cluster holds already is answered before its body is
        // read: with `Expect: 100-continue` the client never sends it.
        // The blob's hold goes before each put, whose version it must follow closely
        // (`meta::marks`); a put that then fails leaves a hold that costs nothing.
        if let (Some(named), Some(len)) = (named, expected.or(announced))
            && len >= REFRESH_BYTES_MIN
        {
            self.hold(&named);
            if self.state.cluster_client.put_if_held(named, len).await {
                return Ok(stored_response(StatusCode::OK, &named, len));
            }
        }
        if let (Some(named), Some(len)) = (named, expected.or(announced))
            && len > HTTP_BODY_IN_MEMORY_BYTES_MAX
        {
            // Held above: such a body is over `REFRESH_BYTES_MIN` (checked in `limits`).
            return self.put_streamed(request.into_body(), named, len).await;
        }
        let received = self.receive(request.into_body(), max).await?;
        if let Some(e) = expected
            && e != received.len
        {
            return Err(HttpError::bad_request(
                "length_mismatch",
                format!(
                    "{EXPECTED_LENGTH_HEADER} says {e} bytes; the body had {}",
                    received.len
                ),
            ));
        }
        if let Some(named) = named
            && named != received.hash
        {
            return Err(HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                format!(
                    "the body hashes to {}, not {named}; nothing was stored",
                    received.hash
                ),
            ));
        }
        let client = &self.state.cluster_client;
        let (hash, len) = (received.hash, received.len);
        self.hold(&hash);
        let outcome = received
            .bytes
            .put(client, hash, len)
            .await
            .map_err(from_client)?;
        let status = match outcome.existed {
            true => StatusCode::OK,
            false => StatusCode::CREATED,
        };
        Ok(stored_response(status, &hash, len))
    }

    /// A put that names its blob and length: the body goes to the cluster as it arrives, never
    /// held whole. The coordinator checks the hash and stores nothing on a mismatch; the last
    /// piece waits until the body has ended at exactly `len` bytes, so a body cut short or
    /// running long never completes the upload. Once a piece has left, a failure of the
    /// coordinator cannot be retried elsewhere with this body: it is answered 503.
    async fn put_streamed(
        &self,
        mut body: Incoming,
        named: Hash,
        len: u64,
    ) -> Result<Response<Body>, HttpError> {
        let (tx, rx) = tokio::sync::mpsc::channel(HTTP_STREAM_PIECES_QUEUED_MAX);
        let feed = async move {
            let mut held: Option<Bytes> = None;
            let mut got = 0u64;
            let ended = loop {
                let Some(frame) = body.frame().await else {
                    break match got == len {
                        true => Ok(()),
                        false => Err(HttpError::bad_request(
                            "length_mismatch",
                            format!(
                                "the body had {got} bytes, not the {len} announced; nothing \
                                 was stored"
                            ),
                        )),
                    };
                };
                let data = match frame.map(|f| f.into_data()) {
                    Ok(Ok(data)) => data,
                    Ok(Err(_trailers)) => continue,
                    Err(e) => {
                        break Err(HttpError::bad_request(
                            "truncated",
                            format!(
                                "the body ended early after {got} bytes: {e}; nothing was \
                                 stored"
                            ),
                        ));
                    }
                };
                if data.is_empty() {
                    continue; // held back must be the last bytes, not an empty frame
                }
                got += data.len() as u64;
                if got > len {
                    break Err(HttpError::bad_request(
                        "length_mismatch",
                        format!("the body runs past the {len} bytes announced; nothing was stored"),
                    ));
                }
                self.metrics
                    .received_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(piece) = held.replace(data)
                    && tx.send(Ok(piece)).await.is_err()
                {
                    break Ok(()); // the put ended early; its outcome says why
                }
            };
            match &ended {
                Ok(()) => {
                    if let Some(last) = held {
                        let _ = tx.send(Ok(last)).await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.message.clone()))).await;
                }
            }
            ended
        };
        let client = &self.state.cluster_client;
        let put = client.put_known_pieces(named, len, rx);
        let (ended, stored) = tokio::join!(feed, put);
        ended?;
        let outcome = stored.map_err(|e| match e {
            ClientError::Io(e) => HttpError::unavailable(format!(
                "the upload to the cluster failed part-way ({e}); nothing was stored, send it \
                 again"
            )),
            other => from_client(other),
        })?;
        let status = match outcome.existed {
            true => StatusCode::OK,
            false => StatusCode::CREATED,
        };
        Ok(stored_response(status, &named, len))
    }

    /// Keeps `hash` from the S3 front's collector: blobs stored here stay until deleted here.
    fn hold(&self, hash: &Hash) {
        crate::meta::marks::hold(&self.state, hash.as_bytes());
    }

    /// Reads a body to its end, hashing it, holding up to `HTTP_BODY_IN_MEMORY_BYTES_MAX` in
    /// memory and spooling the rest. Nothing reaches the cluster before the body is whole.
    async fn receive(&self, mut body: Incoming, max: u64) -> Result<Received, HttpError> {
        let mut hasher = StreamHasher::new();
        let mut spool = Spool::new(self.spool_dir.clone(), HTTP_BODY_IN_MEMORY_BYTES_MAX);
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                HttpError::bad_request(
                    "truncated",
                    format!("the body ended early after {len} bytes: {e}; nothing was stored"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len += data.len() as u64;
            if len > max {
                return Err(too_large(len, max));
            }
            self.metrics
                .received_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            hasher.update(&data);
            spool.push(&data).await.map_err(spool_error)?;
        }
        Ok(Received {
            hash: hasher.finalize(),
            len,
            bytes: spool.finish().await.map_err(spool_error)?,
        })
    }

    pub(super) async fn get(
        self: &Arc<Self>,
        request: Request<Incoming>,
        hash: Hash,
        head_only: bool,
    ) -> Result<Response<Body>, HttpError> {
        let client = &self.state.cluster_client;
        let range_header = request
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let wanted = match (head_only, range_header) {
            (false, Some(text)) => {
                let blob_len = client
                    .head(&hash)
                    .await
                    .map_err(from_client)?
                    .ok_or_else(|| not_found(&hash))?;
                match range::resolve(text, blob_len) {
                    RangeRequest::Full => None,
                    RangeRequest::Part { offset, len } => {
                        Some((ByteRange { offset, len }, blob_len))
                    }
                    RangeRequest::Unsatisfiable => {
                        let mut response = HttpError::new(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "range_not_satisfiable",
                            format!("{text:?} lies outside a blob of {blob_len} bytes"),
                        )
                        .into_response();
                        response.headers_mut().insert(
                            header::CONTENT_RANGE,
                            header_value(format!("bytes */{blob_len}")),
                        );
                        return Ok(response);
                    }
                }
            }
            _ => None,
        };
        if head_only {
            let blob_len = client
                .head(&hash)
                .await
                .map_err(from_client)?
                .ok_or_else(|| not_found(&hash))?;
            let mut response = Response::new(super::full(Bytes::new()));
            blob_headers(response.headers_mut(), &hash, blob_len);
            return Ok(response);
        }
        let range = wanted.map(|(r, _)| r);
        if let Some(bytes) = self.local_read(hash, range).await {
            let len = bytes.len() as u64;
            self.metrics.sent_bytes.fetch_add(len, Ordering::Relaxed);
            let mut response = Response::new(super::full(bytes));
            blob_headers(response.headers_mut(), &hash, len);
            if let Some((r, blob_len)) = wanted {
                set_partial(&mut response, r, blob_len);
            }
            return Ok(response);
        }
        let reader = client.open_read(&hash, range).await.map_err(from_client)?;
        let mut response = Response::new(http_body_util::BodyExt::boxed(BlobBody {
            stream: reader.stream,
            left: reader.len,
            front: self.clone(),
        }));
        blob_headers(response.headers_mut(), &hash, reader.len);
        if let Some(r) = range {
            set_partial(&mut response, r, reader.blob_len);
        }
        Ok(response)
    }

    /// A read served from this node's own engine, when it is one of the blob's replicas and
    /// holds it: the nearest replica, which the client's ordering (own zone, then round-trip
    /// time) would pick first anyway, without the QUIC hop to itself. A whole blob is
    /// BLAKE3-checked as the client checks it; a range, by the engine's chunk checksums. Any
    /// miss or damage falls back to the cluster (damage is also reported for repair).
    async fn local_read(&self, hash: Hash, range: Option<ByteRange>) -> Option<Bytes> {
        crate::replica::local_read(&self.state, hash, range).await
    }

    pub(super) async fn delete(self: &Arc<Self>, hash: Hash) -> Result<Response<Body>, HttpError> {
        match self.state.cluster_client.delete(&hash).await {
            Ok(true) => {
                let mut response = Response::new(super::full(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
            Ok(false) => Err(not_found(&hash)),
            Err(e) => Err(from_client(e)),
        }
    }

    pub(super) async fn replicas(
        self: &Arc<Self>,
        hash: Hash,
    ) -> Result<Response<Body>, HttpError> {
        let client = &self.state.cluster_client;
        let layout = client.layout();
        let mut replicas = Vec::new();
        for id in client.replicas_of(&hash) {
            let zone = layout
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.zone.clone());
            let (holds, error) = match client.head_on(&id, &hash).await {
                Ok(found) => (Some(found.is_some()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            replicas.push(serde_json::json!({
                "node": id, "zone": zone, "holds": holds, "error": error,
            }));
        }
        let json = serde_json::json!({
            "hash": hash.to_string(),
            "layout_version": layout.version,
            "replicas": replicas,
        });
        Ok(json_response(StatusCode::OK, json.to_string()))
    }
}

/// A blob streaming from the cluster into a response. An error (a hash mismatch found at the
/// end, a replica lost midway) ends the body with an error, and the connection is closed before
/// the announced length: a client never takes a cut-off or corrupt body for a whole one.
struct BlobBody {
    stream: BlobStream,
    left: u64,
    front: Arc<Front>,
}

impl hyper::body::Body for BlobBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.stream.poll_piece(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                let n = piece.len() as u64;
                self.left = self.left.saturating_sub(n);
                self.front
                    .metrics
                    .sent_bytes
                    .fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "a blob read failed midway; closing the response");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Makes a 206 of `response`, which carries `range` of a blob of `blob_len` bytes.
fn set_partial(response: &mut Response<Body>, range: ByteRange, blob_len: u64) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let last = range.offset + range.len - 1;
    response.headers_mut().insert(
        header::CONTENT_RANGE,
        header_value(format!("bytes {}-{last}/{blob_len}", range.offset)),
    );
}

fn blob_headers(headers: &mut HeaderMap, hash: &Hash, len: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::ETAG, etag(hash));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // A blob's bytes never change under its name.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
}

fn etag(hash: &Hash) -> HeaderValue {
    header_value(format!("\"{hash}\""))
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("ASCII digits and punctuation make a header value")
}

fn expected_length(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    let Some(value) = headers.get(EXPECTED_LENGTH_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            HttpError::bad_request(
                "bad_length",
                format!("{EXPECTED_LENGTH_HEADER} must be a byte count"),
            )
        })
}

fn too_large(len: u64, max: u64) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body has {len} bytes or more; this node takes at most {max}"),
    )
}

fn not_found(hash: &Hash) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no replica holds {hash}"),
    )
}

fn spool_error(e: std::io::Error) -> HttpError {
    HttpError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "spool_failed",
        format!("cannot hold the body on this node's disk: {e}"),
    )
}

/// A cluster failure as an HTTP answer. A request that ran out of time answers for what failed
/// last, and with 503 when that might pass on a retry (the write quorum out of reach, replicas
/// down).
fn from_client(e: ClientError) -> HttpError {
    let message = e.to_string();
    let (cause, timed_out) = match &e {
        ClientError::Deadline { last, .. } => (last.as_ref(), true),
        other => (other, false),
    };
    let status = |status, code| HttpError::new(status, code, message.clone());
    match cause {
        ClientError::NotFound { hash } => not_found(hash),
        ClientError::RangeOutOfBounds { .. } => {
            status(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
        }
        ClientError::Remote { code, .. } => match code {
            ErrorCode::HashMismatch => status(StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
            ErrorCode::BlobTooLarge => status(StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ErrorCode::StoreFull => status(StatusCode::INSUFFICIENT_STORAGE, "store_full"),
            ErrorCode::NotFound => status(StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::QuorumFailed
            | ErrorCode::Busy
            | ErrorCode::ReadOnly
            | ErrorCode::Corrupted
            | ErrorCode::Truncated => HttpError::unavailable(message),
            _ if timed_out => HttpError::unavailable(message),
            _ => status(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
        ClientError::Unreachable { .. } | ClientError::Corrupt { .. } => {
            HttpError::unavailable(message)
        }
        _ if timed_out => HttpError::unavailable(message),
        _ => status(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The answer to a PUT that stored (or found stored) `len` bytes named `hash`.
fn stored_response(status: StatusCode, hash: &Hash, len: u64) -> Response<Body> {
    let json = serde_json::json!({ "hash": hash.to_string(), "len": len }).to_string();
    let mut response = json_response(status, json);
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(hash));
    headers.insert(
        header::LOCATION,
        HeaderValue::try_from(format!("/v1/blobs/{hash}")).expect("a hex path is a header"),
    );
    response
}
