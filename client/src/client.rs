//! The async client: routes each request by the placement function, fails over between
//! replicas, retries within a deadline and verifies what it reads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_engine::{Hash, StreamHasher};
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use cairn_core::addr::NodeAddr;
use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::routing::Routing;
use cairn_core::wire::{self, ByteRange, DeleteRole, ErrorCode, Op, PutRole, Request, Response};

use crate::error::ClientError;
use crate::framing;
use crate::limits::{
    ANSWER_AFTER_BODY_MS, BODY_STALL_MS, GET_IN_MEMORY_BYTES_MAX, REFRESH_BYTES_MIN,
    RETRY_BACKOFF_MS_MAX, RETRY_BACKOFF_MS_MIN, STREAM_QUEUE_PIECES, UPLOAD_CHUNK_BYTES,
};
use crate::pieces::Gather;
use crate::pool::{Pool, read_response};
use crate::tls::{self, Identity};

/// Default time an operation may take, retries included.
pub const DEADLINE_MS_DEFAULT: u64 = 30_000;

/// Server name a seed node is reached by when only its address is known. Node certificates
/// made by `cairn certs` carry it beside their node id.
pub const SEED_SERVER_NAME: &str = "node.cairn";

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The client's zone: reads prefer replicas there.
    pub zone: Option<String>,
    /// Time an operation may take, retries included.
    pub deadline_ms: u64,
    /// Local address to bind; port 0 picks one.
    pub bind: SocketAddr,
    /// ALPN offered; only tests of version mismatch change it.
    #[doc(hidden)]
    pub alpn: Vec<u8>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            zone: None,
            deadline_ms: DEADLINE_MS_DEFAULT,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            alpn: wire::ALPN.to_vec(),
        }
    }
}

/// What a put uploads: bytes in memory or a file, both re-readable for retries, or pieces
/// that arrive while they are sent, readable once.
enum Body<'a> {
    Bytes(Bytes),
    /// A file, and what to tell of each attempt's progress (bytes of the file sent so far).
    File(&'a Path, Option<Progress<'a>>),
    Pieces(&'a PiecesOnce),
}

impl Body<'_> {
    /// True once an attempt took a piece of a body that cannot be read again.
    fn spent(&self) -> bool {
        match self {
            Body::Pieces(pieces) => pieces.rx.lock().is_none(),
            Body::Bytes(_) | Body::File(..) => false,
        }
    }
}

/// The pieces of a body that arrives while it is sent (see [`Client::put_known_pieces`]). An
/// attempt takes the receiver and gives it back only if it took no piece from it, so a put
/// fails over to another replica only before its first byte left.
struct PiecesOnce {
    rx: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>>>,
}

/// Told how many bytes of an upload have been sent (counting from 0 again on a retry).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A connection to a Cairn cluster. Cheap to clone; clones share connections.
///
/// ```no_run
/// # async fn example() -> Result<(), cairn_client::ClientError> {
/// use cairn_client::{Client, ClientOptions, Identity, Layout};
/// let layout = cairn_client::load_layout("cairn-dev/layout.toml".as_ref())?;
/// let identity = Identity::load(
///     "cairn-dev/certs/ca.pem".as_ref(),
///     "cairn-dev/certs/client.pem".as_ref(),
///     "cairn-dev/certs/client.key".as_ref(),
/// )?;
/// let client = Client::connect(layout, &identity, ClientOptions::default()).await?;
/// let hash = client.put(b"hello".to_vec()).await?;
/// assert_eq!(client.get(&hash).await?, b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    routing: RwLock<Arc<Routing>>,
    pool: Pool,
    options: ClientOptions,
}

/// Tracks an operation's deadline and retry pauses.
struct Attempts {
    start: Instant,
    deadline: Duration,
    count: u32,
    backoff_ms: u64,
}

impl Attempts {
    fn new(deadline_ms: u64) -> Attempts {
        Attempts {
            start: Instant::now(),
            deadline: Duration::from_millis(deadline_ms),
            count: 0,
            backoff_ms: RETRY_BACKOFF_MS_MIN,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.start.elapsed())
    }

    /// Sleeps before the next round, or gives up with `last` once the deadline is near.
    async fn pause(&mut self, last: ClientError) -> Result<(), ClientError> {
        self.count += 1;
        let pause = Duration::from_millis(self.backoff_ms);
        if self.remaining() <= pause {
            return Err(ClientError::Deadline {
                elapsed_ms: self.start.elapsed().as_millis() as u64,
                attempts: self.count,
                last: Box::new(last),
            });
        }
        tokio::time::sleep(pause).await;
        self.backoff_ms = (self.backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
        Ok(())
    }
}

/// What one replica said to a read.
enum ReadOutcome {
    Done(u64),
    Missing,
}

impl Client {
    /// Connects to the cluster described by `layout` (connections open lazily).
    pub async fn connect(
        layout: Layout,
        identity: &Identity,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        layout.validate()?;
        let config = tls::client_config(identity, &options.alpn)?;
        let endpoint = tls::bind_endpoint(options.bind, None)?;
        Ok(Client {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(Routing::new(layout)?)),
                pool: Pool::new(endpoint, config),
                options,
            }),
        })
    }

    /// A client over an endpoint the caller already bound (a node routing requests it took in
    /// over HTTP shares its QUIC endpoint), with `config` as its TLS identity.
    pub fn with_endpoint(
        routing: Routing,
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        options: ClientOptions,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(routing)),
                pool: Pool::new(endpoint, config),
                options,
            }),
        }
    }

    /// Routes by `layout` (and `previous`, for read fall-back) from now on if it is newer.
    pub fn adopt_layout(
        &self,
        layout: Layout,
        previous: Option<Layout>,
    ) -> Result<(), ClientError> {
        self.adopt_with(layout, previous)
    }

    /// Stops falling back to the previous layout's replicas (its moves are over).
    pub fn retire_previous_layout(&self) {
        let mut routing = self.inner.routing.write();
        if routing.previous.is_some() {
            *routing = Arc::new(routing.retired());
        }
    }

    /// Connects through one node's address, fetching the layout from it.
    pub async fn connect_seed(
        seed: impl Into<NodeAddr>,
        identity: &Identity,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let config = tls::client_config(identity, &options.alpn)?;
        let endpoint = tls::bind_endpoint(options.bind, None)?;
        let pool = Pool::new(endpoint, config);
        let seed_node = NodeSpec {
            id: SEED_SERVER_NAME.to_string(),
            addr: seed.into(),
            zone: String::new(),
            weight: 1,
        };
        let request = Request {
            layout_version: 0,
            op: Op::FetchLayout,
        };
        let (response, _) = pool.call(&seed_node, &request).await?;
        let (layout, previous) = match response {
            Response::Layout { layout, previous } => (layout, previous),
            Response::StaleLayout { layout } => (layout, None),
            other => return Err(unexpected(&seed_node.id, &other)),
        };
        layout.validate()?;
        let mut routing = Routing::new(layout)?;
        if let Some(p) = previous.filter(|p| p.validate().is_ok()) {
            routing.previous = Some(Arc::new(Routing::new(p)?));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(routing)),
                pool,
                options,
            }),
        })
    }

    /// The layout requests are routed by.
    pub fn layout(&self) -> Layout {
        self.inner.routing.read().layout.clone()
    }

    /// The ids of the blob's replicas under the current layout, in placement order.
    pub fn replicas_of(&self, hash: &Hash) -> Vec<String> {
        let routing = self.routing();
        routing
            .replicas(hash)
            .iter()
            .map(|n| n.id.clone())
            .collect()
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner.routing.read().clone()
    }

    /// Adopts `layout` if it is valid and newer than ours.
    fn adopt(&self, layout: Layout) -> Result<(), ClientError> {
        self.adopt_with(layout, None)
    }

    /// Computes the routing of a newer layout (its placement table takes a while) outside the
    /// lock requests read, then swaps it in.
    fn adopt_with(&self, layout: Layout, previous: Option<Layout>) -> Result<(), ClientError> {
        layout.validate()?;
        let current = self.inner.routing.read().clone();
        if layout.version > current.layout.version {
            self.adopt_routing(Arc::new(current.successor(layout, previous)?));
        }
        Ok(())
    }

    /// Routes by `next` from now on if its layout is newer (a node shares the routing it
    /// computed with its fronts' client).
    pub fn adopt_routing(&self, next: Arc<Routing>) {
        let mut routing = self.inner.routing.write();
        if next.layout.version > routing.layout.version {
            tracing::info!(
                from = routing.layout.version,
                to = next.layout.version,
                "adopting newer layout"
            );
            *routing = next;
        }
    }

    fn request(&self, routing: &Routing, op: Op) -> Request {
        Request {
            layout_version: routing.layout.version,
            op,
        }
    }

    /// Stores `bytes`; returns their hash once the write quorum holds them durably.
    pub async fn put(&self, bytes: impl Into<Bytes>) -> Result<Hash, ClientError> {
        let bytes = bytes.into();
        let hash = Hash::of(&bytes);
        self.put_body(hash, bytes.len() as u64, Body::Bytes(bytes))
            .await?;
        Ok(hash)
    }

    /// Stores a file's contents (read twice: once to hash, once to send).
    pub async fn put_file(&self, path: &Path) -> Result<Hash, ClientError> {
        let (hash, len) = hash_file(path).await?;
        self.put_body(hash, len, Body::File(path, None)).await?;
        Ok(hash)
    }

    /// Stores everything `reader` yields. The bytes are spooled to a temporary file while they
    /// are hashed, since a blob's hash decides where it goes before the first byte is sent.
    pub async fn put_stream(
        &self,
        mut reader: impl AsyncRead + Unpin,
    ) -> Result<Hash, ClientError> {
        let spool = tempfile::NamedTempFile::new()?;
        let mut file = tokio::fs::File::from_std(spool.reopen()?);
        let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await?;
        }
        file.flush().await?;
        drop(file);
        self.put_file(spool.path()).await
    }

    /// Stores `bytes` under `hash`, which the caller computed; the coordinating node checks it
    /// (a mismatch is `Remote { code: HashMismatch }` and nothing is stored). Says whether the
    /// coordinator already held the blob.
    pub async fn put_known(&self, hash: Hash, bytes: Bytes) -> Result<PutOutcome, ClientError> {
        let len = bytes.len() as u64;
        let (existed, sent) = self.put_body(hash, len, Body::Bytes(bytes)).await?;
        Ok(PutOutcome {
            hash,
            existed,
            sent,
        })
    }

    /// Stores a file of `len` bytes under `hash`, which the caller computed; like
    /// [`Client::put_known`]. The file must not change until this returns.
    pub async fn put_file_known(
        &self,
        hash: Hash,
        len: u64,
        path: &Path,
    ) -> Result<PutOutcome, ClientError> {
        let (existed, sent) = self.put_body(hash, len, Body::File(path, None)).await?;
        Ok(PutOutcome {
            hash,
            existed,
            sent,
        })
    }

    /// Stores the `len` bytes that `pieces` yields, in order, under `hash`, which the caller
    /// computed or was given; like [`Client::put_known`], but each piece goes out as it
    /// arrives and nothing is held whole. The coordinator stores nothing unless exactly `len`
    /// bytes arrive and hash to `hash`: an `Err` piece, or the channel closing short, fails the
    /// put (the error is the piece's, as `ClientError::Io`). The pieces cannot be read twice,
    /// so the put fails over to another replica only until its first piece was taken; after
    /// that a failure is returned, for the caller to try again with the body. It does not
    /// offer the put without its bytes first: call [`Client::put_if_held`] before reading them.
    pub async fn put_known_pieces(
        &self,
        hash: Hash,
        len: u64,
        pieces: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<PutOutcome, ClientError> {
        let pieces = PiecesOnce {
            rx: parking_lot::Mutex::new(Some(pieces)),
        };
        let (existed, sent) = self.put_body(hash, len, Body::Pieces(&pieces)).await?;
        Ok(PutOutcome {
            hash,
            existed,
            sent,
        })
    }

    /// [`Client::put_file_known`], telling `progress` how much of the file has been sent.
    pub async fn put_file_known_with_progress(
        &self,
        hash: Hash,
        len: u64,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<PutOutcome, ClientError> {
        let body = Body::File(path, Some(progress));
        let (existed, sent) = self.put_body(hash, len, body).await?;
        Ok(PutOutcome {
            hash,
            existed,
            sent,
        })
    }

    /// Stores a body; whether the blob existed, and whether its bytes were sent.
    async fn put_body(
        &self,
        hash: Hash,
        len: u64,
        body: Body<'_>,
    ) -> Result<(bool, bool), ClientError> {
        let mut attempts = Attempts::new(self.inner.options.deadline_ms);
        // Pieces are offered by their caller (`put_if_held`) before they are read, if at all.
        let offer = !matches!(body, Body::Pieces(_));
        if offer && len >= REFRESH_BYTES_MIN && self.refresh(hash, len, &attempts).await {
            return Ok((true, false));
        }
        loop {
            let routing = self.routing();
            let mut last = None;
            let mut stale = false;
            // The first live replica coordinates; the others are tried in order if it fails.
            for node in self.live_first(routing.replicas(&hash)) {
                if body.spent() {
                    return Err(last.unwrap_or_else(|| no_replicas(&hash)));
                }
                let request = self.request(
                    &routing,
                    Op::Put {
                        hash: *hash.as_bytes(),
                        len,
                        role: PutRole::Coordinate,
                    },
                );
                let attempt = self.put_to(node, &request, &body, attempts.remaining());
                match attempt.await {
                    Ok(Response::Stored { existed, .. }) => return Ok((existed, true)),
                    Ok(Response::StaleLayout { layout }) => {
                        self.adopt(layout)?;
                        stale = true;
                        if body.spent() {
                            // Its pieces went to a node that did not read them.
                            last = Some(ClientError::Remote {
                                node: node.id.clone(),
                                code: ErrorCode::Busy,
                                message: "the layout changed while the body was sent; \
                                          send it again"
                                    .into(),
                            });
                        }
                        break;
                    }
                    Ok(Response::Error { code, message }) => {
                        let e = remote(node, code, message);
                        if !e.is_transient() {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                    Ok(other) => last = Some(unexpected(&node.id, &other)),
                    Err(e) if e.is_transient() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if body.spent() {
                return Err(last.unwrap_or_else(|| no_replicas(&hash)));
            }
            if !stale {
                attempts
                    .pause(last.unwrap_or_else(|| no_replicas(&hash)))
                    .await?;
            }
        }
    }

    /// A put of `len` bytes named `hash` without sending them: true if a write quorum of
    /// replicas held the blob intact and took the put's version (it then stands as a put that
    /// sent the bytes would); false if the bytes must be sent. Every put of a blob from
    /// `REFRESH_BYTES_MIN` on tries this first; a front that knows a body's hash before reading
    /// it (an HTTP PUT naming it) can spare the upload.
    pub async fn put_if_held(&self, hash: Hash, len: u64) -> bool {
        let attempts = Attempts::new(self.inner.options.deadline_ms);
        self.refresh(hash, len, &attempts).await
    }

    /// Offers a put without its bytes (`Op::Refresh`) to the first live replica: true if a
    /// write quorum of replicas held the blob intact and took the put's version. Any failure
    /// means only that the bytes must be sent.
    async fn refresh(&self, hash: Hash, len: u64, attempts: &Attempts) -> bool {
        let routing = self.routing();
        let Some(node) = self.live_first(routing.replicas(&hash)).into_iter().next() else {
            return false;
        };
        let request = self.request(
            &routing,
            Op::Refresh {
                hash: *hash.as_bytes(),
                len,
                role: PutRole::Coordinate,
                version: 0,
            },
        );
        let call = self.inner.pool.call(node, &request);
        matches!(
            self.bounded(node, attempts.remaining(), call).await,
            Ok((Response::Stored { .. }, _))
        )
    }

    async fn put_to(
        &self,
        node: &NodeSpec,
        request: &Request,
        body: &Body<'_>,
        time_left: Duration,
    ) -> Result<Response, ClientError> {
        // The deadline bounds the start; the body may take as long as it keeps moving.
        let open = self.inner.pool.open(node, request);
        let (mut send, mut recv) = self.bounded(node, time_left, open).await?;
        // A node may answer before reading the body (a stale layout, a full disk); its answer
        // counts more than the write error that stopping our stream causes.
        let sent = match send_body(&node.id, &mut send, body).await {
            Err(ClientError::Io(e)) if matches!(body, Body::Pieces(_)) => {
                // The pieces' source failed: the stream is cut, so that nothing is stored.
                let _ = send.reset(quinn::VarInt::from_u32(0));
                return Err(ClientError::Io(e));
            }
            sent => sent,
        };
        let _ = send.finish();
        let answer_wait = time_left.max(Duration::from_millis(ANSWER_AFTER_BODY_MS));
        let answer = async { read_response(&node.id, &mut recv).await };
        match self.bounded(node, answer_wait, answer).await {
            Ok(response) => Ok(response),
            Err(e) => Err(sent.err().unwrap_or(e)),
        }
    }

    /// Runs `work` against `node` within `time_left`; a timeout marks the node down.
    async fn bounded<T>(
        &self,
        node: &NodeSpec,
        time_left: Duration,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(time_left, work).await {
            Ok(Err(e)) => {
                if matches!(e, ClientError::Unreachable { .. }) {
                    self.inner.pool.mark_down(&node.id).await;
                }
                Err(e)
            }
            Ok(ok) => ok,
            Err(_) => {
                self.inner.pool.mark_down(&node.id).await;
                Err(ClientError::Unreachable {
                    node: node.id.clone(),
                    message: "timed out".into(),
                })
            }
        }
    }

    /// Live nodes first, in the given order, then those marked down.
    fn live_first<'a>(&self, nodes: Vec<&'a NodeSpec>) -> Vec<&'a NodeSpec> {
        let (mut live, down): (Vec<_>, Vec<_>) = nodes
            .into_iter()
            .partition(|n| !self.inner.pool.is_down(&n.id));
        live.extend(down);
        live
    }

    /// Replicas ordered for reading: the client's zone first, then by measured round-trip time
    /// (unmeasured last), then placement order; nodes that failed last time go last.
    fn read_order<'a>(&self, nodes: Vec<&'a NodeSpec>) -> Vec<&'a NodeSpec> {
        let zone = self.inner.options.zone.as_deref();
        let mut keyed: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let pool = &self.inner.pool;
                let rtt = pool.rtt(&n.id).unwrap_or(Duration::MAX);
                (
                    pool.is_down(&n.id),
                    Some(n.zone.as_str()) != zone,
                    rtt,
                    i,
                    n,
                )
            })
            .collect();
        keyed.sort_by_key(|k| (k.0, k.1, k.2, k.3));
        keyed.into_iter().map(|k| k.4).collect()
    }

    /// Reads a whole blob into memory, verifying its BLAKE3 hash.
    pub async fn get(&self, hash: &Hash) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.read(hash, None, &mut out).await?;
        Ok(out)
    }

    /// Reads `len` bytes at `offset`. The serving node checks the record checksums of the
    /// chunks the range covers; QUIC's AEAD protects the bytes in flight.
    pub async fn get_range(
        &self,
        hash: &Hash,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.read(hash, Some(ByteRange { offset, len }), &mut out)
            .await?;
        Ok(out)
    }

    /// Streams a whole blob into `writer`, returning its length. The hash is checked at the end:
    /// on `Err(Corrupt)` the writer has received bytes that must be discarded.
    pub async fn get_to_writer(
        &self,
        hash: &Hash,
        mut writer: impl AsyncWrite + Unpin + Send,
    ) -> Result<u64, ClientError> {
        let mut sink = WriterSink {
            writer: &mut writer,
            written: 0,
        };
        let n = self.read(hash, None, &mut sink).await?;
        writer.flush().await?;
        Ok(n)
    }

    /// A reader over a whole blob, for callers that consume a stream. Bytes arrive as they are
    /// received; the hash is checked at the end, and a mismatch (or any failure after bytes were
    /// handed out) surfaces as an `io::Error` instead of the end of the stream, so a consumer that
    /// reads to the end never mistakes a bad blob for a good one.
    pub fn get_stream(&self, hash: &Hash) -> BlobStream {
        self.spawn_read(*hash, None, None)
    }

    /// Starts reading a blob (or `range` of it) and returns once a replica has answered, with
    /// the length to expect: errors before the first byte (not found, range out of bounds,
    /// unreachable) come back typed. Full reads are hash-checked at the end; a mismatch, or any
    /// failure after bytes were handed out, ends the stream with an error instead of its end.
    pub async fn open_read(
        &self,
        hash: &Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobReader, ClientError> {
        let (start_tx, start_rx) = tokio::sync::oneshot::channel();
        let stream = self.spawn_read(*hash, range, Some(start_tx));
        let (len, blob_len) = start_rx.await.map_err(|_| ClientError::Protocol {
            node: "-".into(),
            message: "the read task ended without an answer".into(),
        })??;
        Ok(BlobReader {
            len,
            blob_len,
            stream,
        })
    }

    /// Reads in a task of its own into a stream. A failure before the read started goes to
    /// `start` if given; any other ends the stream with an error.
    fn spawn_read(&self, hash: Hash, range: Option<ByteRange>, start: Option<Start>) -> BlobStream {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_PIECES);
        let client = self.clone();
        tokio::spawn(async move {
            let mut sink = ChannelSink {
                tx: tx.clone(),
                written: 0,
                start,
            };
            if let Err(e) = client.read(&hash, range, &mut sink).await {
                match sink.start.take() {
                    Some(start) => {
                        let _ = start.send(Err(e));
                    }
                    None => {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                    }
                }
            }
        });
        BlobStream {
            rx,
            current: Bytes::new(),
        }
    }

    async fn read(
        &self,
        hash: &Hash,
        range: Option<ByteRange>,
        sink: &mut dyn Sink,
    ) -> Result<u64, ClientError> {
        let mut attempts = Attempts::new(self.inner.options.deadline_ms);
        loop {
            let routing = self.routing();
            let mut last = None;
            let mut missing = Vec::new();
            let mut stale = false;
            let (current, fallback) = routing.read_candidates(hash);
            let owners = current.len();
            let order = self.read_order(current).into_iter();
            for (i, node) in order.chain(self.read_order(fallback)).enumerate() {
                let request = self.request(
                    &routing,
                    Op::Get {
                        hash: *hash.as_bytes(),
                        range,
                    },
                );
                sink.restart()?;
                let time_left = attempts.remaining();
                match self
                    .read_from(node, &request, hash, range, &mut *sink, time_left)
                    .await
                {
                    Ok(Ok(ReadOutcome::Done(n))) => {
                        if !missing.is_empty() {
                            self.repair(&routing, node, hash, missing);
                        }
                        return Ok(n);
                    }
                    Ok(Ok(ReadOutcome::Missing)) if i < owners => missing.push(node.id.clone()),
                    Ok(Ok(ReadOutcome::Missing)) => {}
                    Ok(Err(layout)) => {
                        self.adopt(layout)?;
                        stale = true;
                        break;
                    }
                    Err(e) if e.is_transient() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if stale {
                continue;
            }
            let e = match last {
                Some(e) => e,
                // Every replica answered and none holds it.
                None => return Err(ClientError::NotFound { hash: *hash }),
            };
            attempts.pause(e).await?;
        }
    }

    /// One read from one node. `Ok(Err(layout))` means the node has a newer layout. The answer
    /// must start within `time_left`; after that, the body may take as long as it keeps coming
    /// (no piece later than `BODY_STALL_MS` after the one before).
    async fn read_from(
        &self,
        node: &NodeSpec,
        request: &Request,
        hash: &Hash,
        range: Option<ByteRange>,
        sink: &mut dyn Sink,
        time_left: Duration,
    ) -> Result<Result<ReadOutcome, Layout>, ClientError> {
        let call = self.inner.pool.call(node, request);
        let (response, mut recv) = self.bounded(node, time_left, call).await?;
        let (len, blob_len) = match response {
            Response::Blob { len, blob_len } => (len, blob_len),
            Response::StaleLayout { layout } => return Ok(Err(layout)),
            Response::Error {
                code: ErrorCode::NotFound,
                ..
            } => return Ok(Ok(ReadOutcome::Missing)),
            Response::Error {
                code: ErrorCode::RangeOutOfBounds,
                ..
            } => {
                let r = range.unwrap_or(ByteRange { offset: 0, len: 0 });
                return Err(ClientError::RangeOutOfBounds {
                    offset: r.offset,
                    len: r.len,
                    blob_len: 0,
                });
            }
            Response::Error { code, message } => return Err(remote(node, code, message)),
            other => return Err(unexpected(&node.id, &other)),
        };
        let expected_len = match range {
            Some(r) => r.len,
            None => blob_len,
        };
        if len != expected_len {
            return Err(ClientError::Protocol {
                node: node.id.clone(),
                message: format!("sent {len} bytes where {expected_len} were asked for"),
            });
        }
        if range.is_none() && len > GET_IN_MEMORY_BYTES_MAX && sink.in_memory() {
            return Err(ClientError::Protocol {
                node: node.id.clone(),
                message: format!(
                    "blob of {len} bytes is over the in-memory limit; use get_to_writer"
                ),
            });
        }
        // An empty answer is checked before it is announced: nothing follows to hold back.
        if range.is_none() && len == 0 && Hash::of(&[]) != *hash {
            return Err(ClientError::Corrupt {
                node: node.id.clone(),
                expected: *hash,
                actual: Hash::of(&[]),
            });
        }
        sink.begin(len, blob_len);
        // QUIC hands out about a packet at a time: pieces are gathered before they are hashed
        // and passed on.
        let mut gather = Gather::default();
        let mut hasher = range.is_none().then(StreamHasher::new);
        let mut received = 0u64;
        // The last piece is handed out only once the whole blob hashed right, so an output that
        // counts bytes (an HTTP response with its length announced) never completes with a
        // blob that is not the one asked for.
        let mut held: Option<Bytes> = None;
        let stall = Duration::from_millis(BODY_STALL_MS);
        while received < len {
            let piece = tokio::time::timeout(stall, recv.read_chunk(usize::MAX, true)).await;
            let chunk = match piece {
                Err(_) => {
                    self.inner.pool.mark_down(&node.id).await;
                    return Err(ClientError::Unreachable {
                        node: node.id.clone(),
                        message: format!(
                            "no byte for {BODY_STALL_MS} ms after {received} of {len}"
                        ),
                    });
                }
                Ok(chunk) => {
                    chunk.map_err(|e| ClientError::from_frame(&node.id, framing::read_error(e)))?
                }
            };
            let Some(chunk) = chunk else {
                return Err(ClientError::Unreachable {
                    node: node.id.clone(),
                    message: format!("stream ended after {received} of {len} bytes"),
                });
            };
            received += chunk.bytes.len() as u64;
            if received > len {
                return Err(ClientError::Protocol {
                    node: node.id.clone(),
                    message: format!("sent more than the {len} bytes announced"),
                });
            }
            let piece = gather.push(chunk.bytes);
            let rest = if received == len { gather.rest() } else { None };
            for piece in piece.into_iter().chain(rest) {
                if let Some(h) = &mut hasher {
                    h.update(&piece);
                }
                if let Some(previous) = held.replace(piece) {
                    sink.write(previous).await?;
                }
            }
        }
        if let Some(h) = hasher {
            let actual = h.finalize();
            if actual != *hash {
                return Err(ClientError::Corrupt {
                    node: node.id.clone(),
                    expected: *hash,
                    actual,
                });
            }
        }
        if let Some(last) = held {
            sink.write(last).await?;
        }
        Ok(Ok(ReadOutcome::Done(len)))
    }

    /// Asks `holder` to copy the blob to the replicas that were found without it.
    fn repair(&self, routing: &Routing, holder: &NodeSpec, hash: &Hash, missing: Vec<String>) {
        let client = self.clone();
        let holder = holder.clone();
        let request = self.request(
            routing,
            Op::Repair {
                hash: *hash.as_bytes(),
                targets: missing,
            },
        );
        tokio::spawn(async move {
            if let Err(e) = client.inner.pool.call(&holder, &request).await {
                tracing::debug!(node = %holder.id, error = %e, "read repair request failed");
            }
        });
    }

    /// The blob's length if some replica holds it, `None` if every replica answered without it.
    pub async fn head(&self, hash: &Hash) -> Result<Option<u64>, ClientError> {
        let mut attempts = Attempts::new(self.inner.options.deadline_ms);
        loop {
            let routing = self.routing();
            let mut last = None;
            let mut stale = false;
            let (current, fallback) = routing.read_candidates(hash);
            let order = self.read_order(current).into_iter();
            for node in order.chain(self.read_order(fallback)) {
                match self.head_request(&routing, node, hash, &attempts).await {
                    Ok(Response::Found { blob_len }) => return Ok(Some(blob_len)),
                    Ok(Response::Error {
                        code: ErrorCode::NotFound,
                        ..
                    }) => {}
                    Ok(Response::StaleLayout { layout }) => {
                        self.adopt(layout)?;
                        stale = true;
                        break;
                    }
                    Ok(Response::Error { code, message }) => {
                        last = Some(remote(node, code, message))
                    }
                    Ok(other) => last = Some(unexpected(&node.id, &other)),
                    Err(e) if e.is_transient() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if stale {
                continue;
            }
            match last {
                None => return Ok(None),
                Some(e) => attempts.pause(e).await?,
            }
        }
    }

    async fn head_request(
        &self,
        routing: &Routing,
        node: &NodeSpec,
        hash: &Hash,
        attempts: &Attempts,
    ) -> Result<Response, ClientError> {
        let request = self.request(
            routing,
            Op::Head {
                hash: *hash.as_bytes(),
            },
        );
        let work = async { Ok(self.inner.pool.call(node, &request).await?.0) };
        self.bounded(node, attempts.remaining(), work).await
    }

    /// Asks one node, by id, whether it holds the blob: `Some(len)` or `None`. No failover.
    pub async fn head_on(&self, node_id: &str, hash: &Hash) -> Result<Option<u64>, ClientError> {
        let routing = self.routing();
        let node = routing
            .layout
            .nodes
            .iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| ClientError::Unreachable {
                node: node_id.to_string(),
                message: "not in the layout".into(),
            })?;
        let attempts = Attempts::new(self.inner.options.deadline_ms);
        match self.head_request(&routing, node, hash, &attempts).await? {
            Response::Found { blob_len } => Ok(Some(blob_len)),
            Response::Error {
                code: ErrorCode::NotFound,
                ..
            } => Ok(None),
            Response::Error { code, message } => Err(remote(node, code, message)),
            other => Err(unexpected(&node.id, &other)),
        }
    }

    /// Deletes a blob from its replicas; returns whether it existed. Acknowledged at write
    /// quorum; replicas that missed it are told later.
    pub async fn delete(&self, hash: &Hash) -> Result<bool, ClientError> {
        self.delete_written_before(hash, 0).await
    }

    /// Deletes a blob only where it was last written before `version_ms` (milliseconds since
    /// the Unix epoch on the writing node's clock): a put at or after that time keeps its copy,
    /// however the two requests interleave. `0` means now, as [`Client::delete`].
    pub async fn delete_written_before(
        &self,
        hash: &Hash,
        version_ms: u64,
    ) -> Result<bool, ClientError> {
        let mut attempts = Attempts::new(self.inner.options.deadline_ms);
        loop {
            let routing = self.routing();
            let mut last = None;
            let mut stale = false;
            for node in self.live_first(routing.replicas(hash)) {
                let request = self.request(
                    &routing,
                    Op::Delete {
                        hash: *hash.as_bytes(),
                        role: DeleteRole::Coordinate,
                        version: version_ms,
                    },
                );
                let work = async { Ok(self.inner.pool.call(node, &request).await?.0) };
                match self.bounded(node, attempts.remaining(), work).await {
                    Ok(Response::Deleted { existed }) => return Ok(existed),
                    Ok(Response::StaleLayout { layout }) => {
                        self.adopt(layout)?;
                        stale = true;
                        break;
                    }
                    Ok(Response::Error { code, message }) => {
                        last = Some(remote(node, code, message))
                    }
                    Ok(other) => last = Some(unexpected(&node.id, &other)),
                    Err(e) if e.is_transient() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if !stale {
                attempts
                    .pause(last.unwrap_or_else(|| no_replicas(hash)))
                    .await?;
            }
        }
    }

    /// Fetches the layout a node holds, adopting it if newer.
    pub async fn refresh_layout(&self) -> Result<Layout, ClientError> {
        let routing = self.routing();
        let mut last = None;
        for node in self.live_first(routing.layout.nodes.iter().collect()) {
            let request = self.request(&routing, Op::FetchLayout);
            match self.inner.pool.call(node, &request).await {
                Ok((Response::Layout { layout, previous }, _)) => {
                    self.adopt_with(layout, previous)?;
                    return Ok(self.layout());
                }
                Ok((Response::StaleLayout { layout }, _)) => {
                    self.adopt(layout)?;
                    return Ok(self.layout());
                }
                Ok((other, _)) => last = Some(unexpected(&node.id, &other)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            node: "-".into(),
            message: "the layout lists no nodes".into(),
        }))
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

/// Where read bytes go.
trait Sink: Send {
    /// Takes a piece as received (no copy for outputs that keep pieces).
    fn write(
        &mut self,
        bytes: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>>;
    /// Prepares for another attempt: discards what a failed attempt wrote, or, for an output
    /// that cannot take bytes back, refuses once any were handed out.
    fn restart(&mut self) -> std::io::Result<()>;
    fn in_memory(&self) -> bool;
    /// A replica answered: `len` bytes of a `blob_len`-byte blob follow.
    fn begin(&mut self, _len: u64, _blob_len: u64) {}
}

/// `restart` for outputs that cannot take bytes back.
fn restart_unless_written(written: u64) -> std::io::Result<()> {
    match written {
        0 => Ok(()),
        n => Err(std::io::Error::other(format!(
            "the read failed after {n} bytes were handed to the output; not retried"
        ))),
    }
}

impl Sink for Vec<u8> {
    fn write(
        &mut self,
        bytes: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
        self.extend_from_slice(&bytes);
        Box::pin(std::future::ready(Ok(())))
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.clear();
        Ok(())
    }

    fn in_memory(&self) -> bool {
        true
    }
}

struct WriterSink<'w, W> {
    writer: &'w mut W,
    written: u64,
}

impl<W: AsyncWrite + Unpin + Send> Sink for WriterSink<'_, W> {
    fn write(
        &mut self,
        bytes: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
        self.written += bytes.len() as u64;
        Box::pin(async move { self.writer.write_all(&bytes).await })
    }

    fn restart(&mut self) -> std::io::Result<()> {
        restart_unless_written(self.written)
    }

    fn in_memory(&self) -> bool {
        false
    }
}

/// A blob being read as a stream; see [`Client::get_stream`].
pub struct BlobStream {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl BlobStream {
    /// The next piece as received, without copying: `None` at the verified end.
    pub fn poll_piece(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::io::Result<Bytes>>> {
        if !self.current.is_empty() {
            return std::task::Poll::Ready(Some(Ok(std::mem::take(&mut self.current))));
        }
        self.rx.poll_recv(cx)
    }
}

impl AsyncRead for BlobStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                let piece = self.current.split_to(n);
                buf.put_slice(&piece);
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.current = bytes,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What `open_read` waits for: the lengths, or the typed error of a read that never started.
type Start = tokio::sync::oneshot::Sender<Result<(u64, u64), ClientError>>;

struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    written: u64,
    start: Option<Start>,
}

impl Sink for ChannelSink {
    fn write(
        &mut self,
        bytes: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
        self.written += bytes.len() as u64;
        Box::pin(async move {
            self.tx
                .send(Ok(bytes))
                .await
                .map_err(|_| std::io::Error::other("the stream's reader went away"))
        })
    }

    fn restart(&mut self) -> std::io::Result<()> {
        restart_unless_written(self.written)
    }

    fn in_memory(&self) -> bool {
        false
    }

    fn begin(&mut self, len: u64, blob_len: u64) {
        if let Some(start) = self.start.take() {
            let _ = start.send(Ok((len, blob_len)));
        }
    }
}

/// A blob read that a replica has started answering; see [`Client::open_read`].
pub struct BlobReader {
    /// Bytes the stream yields (the range's length, or the blob's).
    pub len: u64,
    /// The whole blob's length.
    pub blob_len: u64,
    pub stream: BlobStream,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub hash: Hash,
    /// The coordinating replica already held the blob.
    pub existed: bool,
    /// The bytes were sent (false: a write quorum held the blob and took the put without
    /// them, see [`Client::put_if_held`]).
    pub sent: bool,
}

/// Sends a put's body, failing if no piece goes out for `BODY_STALL_MS`.
async fn send_body(
    node: &str,
    send: &mut quinn::SendStream,
    body: &Body<'_>,
) -> Result<(), ClientError> {
    let stall = Duration::from_millis(BODY_STALL_MS);
    let stalled = || ClientError::Unreachable {
        node: node.to_string(),
        message: format!("the body did not move for {BODY_STALL_MS} ms"),
    };
    let fail = |e: quinn::WriteError| ClientError::from_frame(node, framing::write_error(e));
    match body {
        Body::Bytes(bytes) => {
            for at in (0..bytes.len()).step_by(UPLOAD_CHUNK_BYTES) {
                let piece = bytes.slice(at..(at + UPLOAD_CHUNK_BYTES).min(bytes.len()));
                tokio::time::timeout(stall, send.write_chunk(piece))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(fail)?;
            }
            Ok(())
        }
        Body::File(path, progress) => {
            let mut file = tokio::fs::File::open(path).await?;
            let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
            let mut sent = 0u64;
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                tokio::time::timeout(stall, send.write_all(&buf[..n]))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(fail)?;
                sent += n as u64;
                if let Some(progress) = progress {
                    progress(sent);
                }
            }
        }
        Body::Pieces(pieces) => {
            let Some(mut rx) = pieces.rx.lock().take() else {
                return Err(
                    std::io::Error::other("the body was taken by an earlier attempt").into(),
                );
            };
            // Watched while the next piece is awaited: a node that answers before reading the
            // body (a newer layout) or is lost is seen at once, and before the first piece is
            // taken the put can still go elsewhere.
            let stopped = send.stopped();
            tokio::pin!(stopped);
            let mut took = false;
            let result = async {
                loop {
                    let piece = tokio::select! {
                        biased;
                        _ = &mut stopped => {
                            return Err(ClientError::Unreachable {
                                node: node.to_string(),
                                message: "the node stopped taking the body".into(),
                            });
                        }
                        piece = rx.recv() => piece,
                    };
                    let Some(piece) = piece else {
                        return Ok(());
                    };
                    took = true;
                    tokio::time::timeout(stall, send.write_chunk(piece?))
                        .await
                        .map_err(|_| stalled())?
                        .map_err(fail)?;
                }
            }
            .await;
            if !took {
                *pieces.rx.lock() = Some(rx);
            }
            result
        }
    }
}

/// Hashes a file with BLAKE3, returning its hash and length.
pub async fn hash_file(path: &Path) -> Result<(Hash, u64), ClientError> {
    hash_file_with_progress(path, &|_| {}).await
}

/// [`hash_file`], telling `progress` how many bytes have been hashed.
pub async fn hash_file_with_progress(
    path: &Path,
    progress: Progress<'_>,
) -> Result<(Hash, u64), ClientError> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok((Hash::from(hasher.finalize()), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
        progress(len);
    }
}

fn remote(node: &NodeSpec, code: ErrorCode, message: String) -> ClientError {
    ClientError::Remote {
        node: node.id.clone(),
        code,
        message,
    }
}

fn unexpected(node: &str, response: &Response) -> ClientError {
    ClientError::Protocol {
        node: node.to_string(),
        message: format!("unexpected response {response:?}"),
    }
}

fn no_replicas(hash: &Hash) -> ClientError {
    ClientError::Unreachable {
        node: "-".into(),
        message: format!("no replica of {hash} could be tried"),
    }
}
