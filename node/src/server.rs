//! A running node: one engine, one QUIC endpoint, the request handlers, the put coordinator and
//! the hint delivery loop.
//!
//! Every request arrives on its own bidirectional stream and is handled by its own task. The
//! coordinator's decisions come from [`crate::quorum::WriteQuorum`]; this file does the IO.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::pool::{Pool, read_response};
use cairn_client::tls::{self, Identity};
use cairn_client::wire::{
    self, ByteRange, Decision, DeleteRole, ErrorCode, FrameError, Op, PutRole, Request, Response,
};
use cairn_client::{Layout, NodeSpec, Routing};
use cairn_engine::{BlobStat, BlobWriter, Error as EngineError, Hash, Store};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::catalog::NodeCatalog;
use crate::config::NodeConfig;
use crate::heal::{Catalog, Entry, Healer, Scrubber};
use crate::healing::{self, Healing, wall_ms};
use crate::hints::{self, Hint, HintKind, HintLog};
use crate::membership::Membership;
use crate::peer::PeerMsg;
use crate::quorum::{Report, Step, WriteQuorum};
use crate::versions::VersionTable;

/// Requests a node handles at once; beyond it, requests are answered `Busy`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;

/// Connections a node accepts at once; beyond it, new connections are refused.
pub const CONNECTIONS_MAX: usize = 1024;

/// Time a peer has to send a request header after opening a stream.
pub const HEADER_TIMEOUT_MS: u64 = 10_000;

/// Longest pause between two pieces of a body being received or forwarded.
pub const BODY_STALL_TIMEOUT_MS: u64 = 10_000;

/// Time a replica waits for the coordinator's commit or abort.
pub const DECISION_TIMEOUT_MS: u64 = 30_000;

/// Time a coordinator waits for a replica's answer (prepared, stored, deleted).
pub const REPLICA_RESPONSE_TIMEOUT_MS: u64 = 60_000;

/// Largest piece of a body read from a stream at once.
pub const BODY_CHUNK_BYTES_MAX: usize = 256 * 1024;

/// Body pieces queued toward each replica while it catches up: with `BODY_CHUNK_BYTES_MAX`,
/// at most 4 MiB per replica per put.
pub const FORWARD_QUEUE_CHUNKS: usize = 16;

/// Body bytes a replica link takes while its connection is still opening; a replica slower than
/// that to connect misses the put (and gets a hint).
pub const FORWARD_PENDING_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Hints delivered per round of the delivery loop.
pub const HINT_DELIVERY_BATCH_MAX: usize = 64;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("layout: {0}")]
    Layout(#[from] cairn_client::LayoutError),
    #[error("node {id} is not in the layout (version {version})")]
    NotInLayout { id: String, version: u64 },
    #[error("TLS: {0}")]
    Tls(#[from] cairn_client::tls::TlsError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("hint log: {0}")]
    Hints(#[from] hints::HintError),
    #[error("version table: {0}")]
    Versions(#[from] crate::recordlog::LogError),
    #[error("metadata: {0}")]
    Meta(#[from] crate::meta::StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("layout version {offered} is not newer than the current {current}")]
    LayoutNotNewer { offered: u64, current: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) struct State {
    pub(crate) id: String,
    pub(crate) store: Store,
    routing: RwLock<Arc<Routing>>,
    pub(crate) pool: Pool,
    pub(crate) hints: Mutex<HintLog>,
    pub(crate) hint_wake: Notify,
    clock: Instant,
    pub(crate) data_dir: PathBuf,
    requests: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    pub(crate) versions: Arc<VersionTable>,
    pub(crate) catalog: NodeCatalog,
    pub(crate) healing: Healing,
    /// Routes requests taken in over HTTP through the cluster, as any client would.
    pub(crate) cluster_client: cairn_client::Client,
    /// This node's replicas of the cluster's metadata, and its clock.
    pub(crate) meta: crate::meta::Meta,
    /// The garbage collector, when the S3 front is on.
    pub(crate) gc: Option<Arc<crate::s3::gc::Collector>>,
    /// Taken while a hash's version and bytes change together (a commit, a tombstone), so a
    /// put and a delete of one hash on one node are ordered; striped by the hash's first byte.
    entry_locks: Vec<Mutex<()>>,
}

/// How long `shutdown` waits for connections to close cleanly.
pub const SHUTDOWN_IDLE_WAIT_MS: u64 = 3_000;

/// How long `shutdown` waits for the node's tasks to let go of it: steps of this many ms.
pub const SHUTDOWN_WAIT_STEP_MS: u64 = 20;
pub const SHUTDOWN_WAIT_STEPS: u32 = 250;

/// Stripes of the per-hash commit lock.
pub const ENTRY_LOCK_STRIPES: usize = 256;

/// A running node. Dropping it without `shutdown` leaves its tasks running.
pub struct Node {
    state: Arc<State>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    http: crate::http::HttpServer,
    s3: Option<crate::s3::S3Server>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens the engine, loads the layout and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: &NodeConfig) -> Result<Node, NodeError> {
        let layout = load_layout(config)?;
        let me = layout
            .nodes
            .iter()
            .find(|n| n.id == config.id)
            .ok_or_else(|| NodeError::NotInLayout {
                id: config.id.clone(),
                version: layout.version,
            })?;
        let listen = config.listen.unwrap_or(me.addr);
        let zone = me.zone.clone();
        let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| NodeError::Io { path, source }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
        let mut engine_config = cairn_engine::Config::default();
        if let Some(bytes) = config.segment_bytes {
            engine_config.segment_bytes = bytes;
        }
        let store_dir = config.data_dir.join("store");
        let store = tokio::task::spawn_blocking(move || Store::open(store_dir, engine_config))
            .await
            .expect("engine open does not panic")?;
        let report = store.recovery_report();
        tracing::info!(blobs = report.blobs_indexed, "engine open");
        let hint_log = HintLog::open(
            &config.data_dir,
            config.hints.retry_ms_min,
            config.hints.retry_ms_max,
        )?;
        config
            .failure_detector
            .validate()
            .and_then(|()| config.heal.validate())
            .map_err(NodeError::Config)?;
        let versions = Arc::new(VersionTable::open(&config.data_dir)?);
        let meta_path = config.data_dir.join("meta.redb");
        let node_id = config.id.clone();
        let meta =
            tokio::task::spawn_blocking(move || crate::meta::Meta::open(&meta_path, &node_id))
                .await
                .expect("metadata open does not panic")?;
        let previous = Layout::load(&config.data_dir.join("layout.previous.toml"))
            .ok()
            .filter(|p| p.version < layout.version);
        let server = tls::server_config(&identity)?;
        let endpoint =
            tls::bind_endpoint(listen, Some(server)).map_err(|source| NodeError::Bind {
                addr: listen,
                source,
            })?;
        let addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
            addr: listen,
            source,
        })?;
        let client = tls::client_config(&identity, wire::ALPN)?;
        let pool = Pool::new(endpoint.clone(), client.clone());
        tracing::info!(
            id = %config.id,
            %addr,
            layout_version = layout.version,
            hints_pending = hint_log.pending(),
            "node serving"
        );
        let mut routing = Routing::new(layout)?;
        if let Some(p) = previous {
            routing.previous = Some(Arc::new(Routing::new(p)?));
        }
        let routing = Arc::new(routing);
        let now = wall_ms();
        let mut membership = Membership::new(config.failure_detector.clone(), now);
        membership.set_peers(
            peer_ids(&routing, &config.id).iter().map(|s| s.as_str()),
            routing.layout.version,
        );
        let mut healer = Healer::new(&config.id, config.heal.clone(), routing.clone(), now);
        let last_alive = healing::load_last_alive_ms(&config.data_dir);
        if last_alive.is_some_and(|t| now.saturating_sub(t) > config.heal.tombstone_grace_ms) {
            tracing::warn!(
                "this node was out of contact for longer than the tombstone grace period; \
                 it will not hand off copies it holds (deletes it missed may be purged)"
            );
            healer.set_handoff_enabled(false);
        }
        let scrubber = Scrubber::new(
            &config.heal,
            healing::load_scrub_cursor(&config.data_dir),
            now,
        );
        let (events, events_rx) = mpsc::unbounded_channel();
        let catalog =
            NodeCatalog::new(&config.id, store.clone(), versions.clone(), routing.clone());
        let cluster_client = cairn_client::Client::with_endpoint(
            (*routing).clone(),
            endpoint.clone(),
            client,
            cairn_client::ClientOptions {
                zone: Some(zone),
                deadline_ms: config.http.deadline_ms,
                ..Default::default()
            },
        );
        let state = Arc::new(State {
            id: config.id.clone(),
            store,
            versions,
            catalog,
            healing: Healing {
                membership: parking_lot::Mutex::new(membership),
                healer: parking_lot::Mutex::new(healer),
                scrubber: parking_lot::Mutex::new(scrubber),
                events,
                corrupt_found: Default::default(),
                scrub_corrupt_found: Default::default(),
                copied_bytes: Default::default(),
            },
            entry_locks: (0..ENTRY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            routing: RwLock::new(routing),
            cluster_client,
            meta,
            gc: config
                .s3
                .as_ref()
                .map(|s3| Arc::new(crate::s3::gc::Collector::new(s3.clone()))),
            pool,
            hints: Mutex::new(hint_log),
            hint_wake: Notify::new(),
            clock: Instant::now(),
            data_dir: config.data_dir.clone(),
            requests: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
            connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        });
        let http = crate::http::start(state.clone(), &config.http).await?;
        let s3 = match &config.s3 {
            Some(settings) => Some(crate::s3::start(state.clone(), settings).await?),
            None => None,
        };
        let sync_interval_ms = config
            .s3
            .as_ref()
            .map_or(crate::config::META_SYNC_INTERVAL_MS_DEFAULT, |s| {
                s.meta_sync_interval_ms
            });
        let mut tasks = vec![
            tokio::spawn(accept_loop(state.clone(), endpoint.clone())),
            tokio::spawn(hint_loop(state.clone())),
            tokio::spawn(healing::heal_loop(state.clone(), events_rx)),
            tokio::spawn(meta_sync_loop(state.clone(), sync_interval_ms)),
        ];
        if let Some(gc) = &state.gc {
            tasks.push(tokio::spawn(crate::s3::gc::schedule(
                state.clone(),
                gc.clone(),
            )));
        }
        Ok(Node {
            state,
            endpoint,
            addr,
            http,
            s3,
            tasks,
        })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the HTTP front listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.addr
    }

    /// Where the S3 front listens, if it is on.
    pub fn s3_addr(&self) -> Option<SocketAddr> {
        self.s3.as_ref().map(|s| s.addr)
    }

    /// Starts a garbage collection here unless one is running (or the S3 front is off).
    pub fn start_gc(&self) -> bool {
        self.state
            .gc
            .as_ref()
            .is_some_and(|gc| gc.start(&self.state))
    }

    /// The garbage collector's progress, if the S3 front is on.
    pub fn gc_status(&self) -> Option<crate::s3::gc::GcStatus> {
        self.state.gc.as_ref().map(|gc| gc.status())
    }

    /// One round of the metadata digest exchange, now (tests use it to converge on demand).
    pub async fn sync_metadata(
        &self,
    ) -> Result<crate::meta::cluster::SyncReport, crate::meta::cluster::MetaError> {
        crate::meta::cluster::sync_round(&self.state).await
    }

    /// The node's metadata store (tests look at replicas directly).
    pub fn meta_store(&self) -> &crate::meta::MetaStore {
        &self.state.meta.store
    }

    /// The node's engine (tests look at replicas directly).
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn layout(&self) -> Layout {
        self.state.routing.read().layout.clone()
    }

    /// Switches to a newer layout (kept in the data directory for restarts); the layout in use
    /// is accepted again as a no-op. An older or invalid layout is refused. A layout without
    /// this node is adopted too: the node then hands off what it holds.
    pub fn apply_layout(&self, layout: Layout) -> Result<(), NodeError> {
        layout.validate()?;
        self.state.adopt(layout, None)
    }

    /// What `cairn status` shows of this node.
    pub fn status(&self) -> crate::peer::NodeStatus {
        healing::status(&self.state)
    }

    /// Versioned entries (recent puts and tombstones) this node holds.
    pub fn versions_held(&self) -> usize {
        self.state.versions.len()
    }

    /// Hints this node still has to deliver.
    pub fn hints_pending(&self) -> usize {
        self.state.hints.lock().pending()
    }

    /// Stops serving: closes connections, stops background work, syncs the engine.
    pub async fn shutdown(self) {
        self.http.stop();
        if let Some(s3) = &self.s3 {
            s3.stop();
        }
        for task in &self.tasks {
            task.abort();
        }
        self.endpoint
            .close(wire::CONNECTION_CLOSE_CODE.into(), b"node shutting down");
        let idle = Duration::from_millis(SHUTDOWN_IDLE_WAIT_MS);
        let _ = tokio::time::timeout(idle, self.endpoint.wait_idle()).await;
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sync()).await;
        // Tasks still holding the node (a heartbeat, a copy) end once the endpoint is closed;
        // wait for them so the socket is free for a restart.
        for _ in 0..SHUTDOWN_WAIT_STEPS {
            if Arc::strong_count(&self.state) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_WAIT_STEP_MS)).await;
        }
    }
}

/// The configured layout, or the newer one this node adopted from a peer, whichever is newer.
fn load_layout(config: &NodeConfig) -> Result<Layout, NodeError> {
    let configured = Layout::load(&config.layout)?;
    let adopted_path = config.data_dir.join("layout.toml");
    match Layout::load(&adopted_path) {
        Ok(adopted) if adopted.version > configured.version => Ok(adopted),
        _ => Ok(configured),
    }
}

/// The ids of the layout's nodes, and of the previous layout's, but `me`.
fn peer_ids(routing: &Routing, me: &str) -> Vec<String> {
    let mut ids: Vec<String> = routing.layout.nodes.iter().map(|n| n.id.clone()).collect();
    if let Some(p) = &routing.previous {
        ids.extend(p.layout.nodes.iter().map(|n| n.id.clone()));
    }
    ids.sort();
    ids.dedup();
    ids.retain(|id| id != me);
    ids
}

impl State {
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.read().clone()
    }

    pub(crate) fn entry_lock(&self, hash: &[u8; 32]) -> &Mutex<()> {
        &self.entry_locks[hash[0] as usize % ENTRY_LOCK_STRIPES]
    }

    pub(crate) fn now_ms(&self) -> u64 {
        hints::elapsed_ms(self.clock)
    }

    /// Adopts a newer layout, keeping it (and the one it replaces) durably for restarts first.
    /// A layout without this node is adopted too: the node then hands off what it holds.
    pub(crate) fn adopt(&self, layout: Layout, previous: Option<Layout>) -> Result<(), NodeError> {
        layout.validate()?;
        let mut routing = self.routing.write();
        if layout == routing.layout {
            return Ok(()); // already adopted, from a peer
        }
        if layout.version <= routing.layout.version {
            return Err(NodeError::LayoutNotNewer {
                offered: layout.version,
                current: routing.layout.version,
            });
        }
        tracing::info!(
            from = routing.layout.version,
            to = layout.version,
            "adopting layout"
        );
        let next = Arc::new(routing.successor(layout, previous)?);
        if let Some(p) = &next.previous {
            let path = self.data_dir.join("layout.previous.toml");
            write_durably(&path, p.layout.to_toml_string().as_bytes())
                .map_err(|source| NodeError::Io { path, source })?;
        }
        let path = self.data_dir.join("layout.toml");
        write_durably(&path, next.layout.to_toml_string().as_bytes())
            .map_err(|source| NodeError::Io { path, source })?;
        *routing = next.clone();
        drop(routing);
        let previous = next.previous.as_ref().map(|p| p.layout.clone());
        if let Err(e) = self
            .cluster_client
            .adopt_layout(next.layout.clone(), previous)
        {
            tracing::warn!(error = %e, "the HTTP front's client kept its layout");
        }
        let now = wall_ms();
        self.catalog.set_routing(next.clone());
        self.healing.healer.lock().set_routing(now, next.clone());
        self.healing.membership.lock().set_peers(
            peer_ids(&next, &self.id).iter().map(|s| s.as_str()),
            next.layout.version,
        );
        if next.layout.node_index(&self.id).is_none() {
            tracing::warn!(
                version = next.layout.version,
                "this node left the layout; handing off what it holds"
            );
        }
        self.healing.wake();
        Ok(())
    }

    /// Records a durable hint and wakes the delivery loop.
    fn hint(&self, hash: Hash, target: &str, kind: HintKind) {
        let hint = Hint {
            hash,
            target: target.to_string(),
            kind,
        };
        let now = self.now_ms();
        match self.hints.lock().add(hint, now) {
            Ok(_) => tracing::info!(%hash, target, ?kind, "hint recorded"),
            Err(e) => tracing::error!(%hash, target, error = %e, "cannot record hint"),
        }
        self.hint_wake.notify_one();
    }
}

async fn accept_loop(state: Arc<State>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = state.connections.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "connection limit reached");
            incoming.refuse();
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "handshake refused");
                    return;
                }
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(handle_stream(state.clone(), send, recv));
            }
            drop(permit);
        });
    }
}

async fn respond(send: &mut quinn::SendStream, response: &Response) {
    if let Err(e) = wire::write_frame(send, response, wire::RESPONSE_HEADER_BYTES_MAX).await {
        tracing::debug!(error = %e, "cannot send response");
    }
    let _ = send.finish();
}

async fn fail(send: &mut quinn::SendStream, code: ErrorCode, message: impl Into<String>) {
    respond(send, &Response::error(code, message)).await;
}

fn engine_code(e: &EngineError) -> ErrorCode {
    match e {
        EngineError::DiskFull { .. } | EngineError::StoreFull { .. } => ErrorCode::StoreFull,
        EngineError::BlobTooLarge { .. } => ErrorCode::BlobTooLarge,
        EngineError::HashMismatch { .. } => ErrorCode::HashMismatch,
        EngineError::Corrupted { .. } | EngineError::Quarantined { .. } => ErrorCode::Corrupted,
        EngineError::ReadOnly(_) => ErrorCode::ReadOnly,
        EngineError::RangeOutOfBounds { .. } => ErrorCode::RangeOutOfBounds,
        _ => ErrorCode::Internal,
    }
}

async fn handle_stream(
    state: Arc<State>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Ok(_permit) = state.requests.clone().try_acquire_owned() else {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        return fail(&mut send, ErrorCode::Busy, "too many requests in flight").await;
    };
    let header = tokio::time::timeout(
        Duration::from_millis(HEADER_TIMEOUT_MS),
        wire::read_frame::<Request>(&mut recv, wire::REQUEST_HEADER_BYTES_MAX),
    )
    .await;
    let request = match header {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            let code = match e {
                FrameError::TooLarge { .. } => ErrorCode::HeaderTooLarge,
                _ => ErrorCode::BadRequest,
            };
            let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
            return fail(&mut send, code, format!("request header: {e}")).await;
        }
        Err(_) => {
            let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
            let message = format!("no request header within {HEADER_TIMEOUT_MS} ms");
            return fail(&mut send, ErrorCode::BadRequest, message).await;
        }
    };
    let routing = state.routing();
    let from_client = matches!(
        request.op,
        Op::Put {
            role: PutRole::Coordinate,
            ..
        } | Op::Get { .. }
            | Op::Head { .. }
            | Op::Delete {
                role: DeleteRole::Coordinate,
                ..
            }
    );
    if from_client && request.layout_version < routing.layout.version {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        let layout = routing.layout.clone();
        return respond(&mut send, &Response::StaleLayout { layout }).await;
    }
    match request.op {
        Op::Put {
            hash,
            len,
            role,
            version,
        } => {
            let hash = Hash::from_bytes(hash);
            if len > cairn_engine::limits::BLOB_BYTES_MAX {
                let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
                let max = cairn_engine::limits::BLOB_BYTES_MAX;
                let message = format!("blob of {len} bytes is over the {max}-byte limit");
                return fail(&mut send, ErrorCode::BlobTooLarge, message).await;
            }
            match role {
                PutRole::Coordinate => {
                    coordinate_put(&state, &routing, hash, len, send, recv).await
                }
                PutRole::Replica => replica_put(&state, hash, len, version, send, recv).await,
            }
        }
        Op::Get { hash, range } => get(&state, Hash::from_bytes(hash), range, send).await,
        Op::Head { hash } => {
            let response = match state.store.stat(&Hash::from_bytes(hash)) {
                Ok(BlobStat::Present { bytes }) => Response::Found { blob_len: bytes },
                Ok(BlobStat::Absent) => Response::error(ErrorCode::NotFound, "not held here"),
                Ok(_) => Response::error(ErrorCode::Corrupted, "quarantined here"),
                Err(e) => Response::error(engine_code(&e), e.to_string()),
            };
            respond(&mut send, &response).await
        }
        Op::Delete {
            hash,
            role,
            version,
        } => {
            let hash = Hash::from_bytes(hash);
            match role {
                DeleteRole::Coordinate => {
                    coordinate_delete(&state, &routing, hash, version, send).await
                }
                DeleteRole::Replica => {
                    let response = match local_delete(&state, hash, version).await {
                        Ok(existed) => Response::Deleted { existed },
                        Err((code, message)) => Response::error(code, message),
                    };
                    respond(&mut send, &response).await
                }
            }
        }
        Op::FetchLayout => {
            let layout = routing.layout.clone();
            let previous = routing.previous.as_ref().map(|p| p.layout.clone());
            respond(&mut send, &Response::Layout { layout, previous }).await
        }
        Op::Store { hash, len, version } => {
            if len > cairn_engine::limits::BLOB_BYTES_MAX {
                let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
                return fail(
                    &mut send,
                    ErrorCode::BlobTooLarge,
                    "copy over the blob limit",
                )
                .await;
            }
            store_copy(&state, Hash::from_bytes(hash), len, version, send, recv).await
        }
        Op::Peer { len } => peer_request(&state, len, send, recv).await,
        Op::Repair { hash, targets } => {
            let response = repair(&state, &routing, Hash::from_bytes(hash), targets);
            respond(&mut send, &response).await
        }
    }
}

async fn get(state: &State, hash: Hash, range: Option<ByteRange>, mut send: quinn::SendStream) {
    let blob_len = match state.store.stat(&hash) {
        Ok(BlobStat::Present { bytes }) => bytes,
        Ok(BlobStat::Absent) => return fail(&mut send, ErrorCode::NotFound, "not held here").await,
        Ok(_) => {
            healing::noticed_corrupt(state, hash);
            return fail(&mut send, ErrorCode::Corrupted, "quarantined here").await;
        }
        Err(e) => return fail(&mut send, engine_code(&e), e.to_string()).await,
    };
    let read = match range {
        None => state.store.get(&hash),
        Some(r) => state.store.read_range(&hash, r.offset, r.len),
    };
    let blob = match read {
        Ok(Some(blob)) => blob,
        Ok(None) => return fail(&mut send, ErrorCode::NotFound, "not held here").await,
        Err(e) => {
            if engine_code(&e) == ErrorCode::Corrupted {
                healing::noticed_corrupt(state, hash);
            }
            return fail(&mut send, engine_code(&e), e.to_string()).await;
        }
    };
    let header = Response::Blob {
        len: blob.len() as u64,
        blob_len,
    };
    if wire::write_frame(&mut send, &header, wire::RESPONSE_HEADER_BYTES_MAX)
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = send.write_all(&blob).await {
        tracing::debug!(%hash, error = %e, "get aborted by the reader");
        return;
    }
    let _ = send.finish();
}

/// Reads a body of exactly `len` bytes piece by piece. An `Err` says why the body is unusable
/// (the error to answer with).
struct BodyReader<'a> {
    recv: &'a mut quinn::RecvStream,
    len: u64,
    received: u64,
}

impl BodyReader<'_> {
    fn new(recv: &mut quinn::RecvStream, len: u64) -> BodyReader<'_> {
        BodyReader {
            recv,
            len,
            received: 0,
        }
    }

    /// The next piece, or `None` once all `len` bytes have arrived.
    async fn next(&mut self) -> Result<Option<Bytes>, (ErrorCode, String)> {
        let (received, len) = (self.received, self.len);
        if received == len {
            return Ok(None);
        }
        let piece = tokio::time::timeout(
            Duration::from_millis(BODY_STALL_TIMEOUT_MS),
            self.recv.read_chunk(BODY_CHUNK_BYTES_MAX, true),
        )
        .await;
        let chunk = match piece {
            Err(_) => {
                let m = format!(
                    "body stalled for {BODY_STALL_TIMEOUT_MS} ms after {received} of {len} bytes"
                );
                return Err((ErrorCode::Truncated, m));
            }
            Ok(Err(e)) => {
                let m = format!("body failed after {received} of {len} bytes: {e}");
                return Err((ErrorCode::Truncated, m));
            }
            Ok(Ok(None)) => {
                let m = format!("body ended after {received} of {len} bytes");
                return Err((ErrorCode::Truncated, m));
            }
            Ok(Ok(Some(chunk))) => chunk.bytes,
        };
        self.received += chunk.len() as u64;
        if self.received > len {
            let m = format!("body longer than the {len} bytes announced");
            return Err((ErrorCode::BadRequest, m));
        }
        Ok(Some(chunk))
    }
}

/// A put from a client: store locally if this node is a replica, stream the bytes to the other
/// replicas as they arrive, and acknowledge at write quorum.
async fn coordinate_put(
    state: &Arc<State>,
    routing: &Routing,
    hash: Hash,
    len: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let replicas: Vec<NodeSpec> = routing.replicas(&hash).into_iter().cloned().collect();
    let local = replicas.iter().any(|n| n.id == state.id);
    let existed = local && matches!(state.store.stat(&hash), Ok(BlobStat::Present { .. }));
    let remotes: Vec<NodeSpec> = replicas.into_iter().filter(|n| n.id != state.id).collect();
    let total = remotes.len() + usize::from(local);
    let mut quorum = WriteQuorum::new(total, routing.layout.write_quorum);
    let version = wall_ms();

    let (events, mut reports) = mpsc::unbounded_channel::<(usize, Report)>();
    let mut feeds = Vec::with_capacity(remotes.len());
    let mut decisions = Vec::with_capacity(remotes.len());
    for (i, node) in remotes.iter().enumerate() {
        let (feed, feed_rx) = mpsc::channel::<Bytes>(FORWARD_QUEUE_CHUNKS);
        let (decide, decision) = oneshot::channel::<Decision>();
        let request = Request {
            layout_version: routing.layout.version,
            op: Op::Put {
                hash: *hash.as_bytes(),
                len,
                role: PutRole::Replica,
                version,
            },
        };
        let link = ReplicaLink {
            state: state.clone(),
            node: node.clone(),
            request,
            len,
        };
        tokio::spawn(link.run(feed_rx, decision, events.clone(), i));
        feeds.push(Some(feed));
        decisions.push(Some(decide));
    }

    let mut writer: Option<BlobWriter> = local.then(|| {
        let mut w = state.store.writer();
        w.reserve(len);
        w
    });
    let mut local_error: Option<String> = None;
    let mut hasher = (!local).then(blake3::Hasher::new);
    let mut body = BodyReader::new(&mut recv, len);
    let received = loop {
        let chunk = match body.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Some(w) = &mut writer
            && let Err(e) = w.write(&chunk)
        {
            local_error = Some(e.to_string());
            writer = None;
        }
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        for feed in feeds.iter_mut() {
            if let Some(tx) = feed
                && tx.send(chunk.clone()).await.is_err()
            {
                *feed = None;
            }
        }
    };
    if let Err((code, message)) = received {
        // Dropping the feeds before `len` bytes makes every replica link reset its stream.
        drop(feeds);
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        return fail(&mut send, code, message).await;
    }
    drop(feeds);

    // Our own copy counts as prepared once its hash matches.
    let actual = match (&writer, hasher) {
        (Some(w), _) => Some(w.hash()),
        (None, Some(h)) => Some(Hash::from(h.finalize())),
        (None, None) => None,
    };
    if let Some(actual) = actual
        && actual != hash
    {
        for d in decisions.iter_mut().filter_map(Option::take) {
            let _ = d.send(Decision::Abort);
        }
        let message = format!("body hashes to {actual}, not {hash}");
        return fail(&mut send, ErrorCode::HashMismatch, message).await;
    }
    let mut failed: Vec<String> = Vec::new();
    let mut step = if local {
        quorum.report(match writer {
            Some(_) => Report::Prepared,
            None => Report::Failed,
        })
    } else {
        quorum.step()
    };
    if let Some(e) = &local_error {
        tracing::warn!(%hash, error = %e, "local copy failed");
    }
    drop(events);
    const LOCAL: usize = usize::MAX;
    let mut local_events = None;
    let mut links_open = !remotes.is_empty();
    loop {
        match step {
            Step::Wait => {}
            Step::Commit => {
                for d in decisions.iter_mut().filter_map(Option::take) {
                    let _ = d.send(Decision::Commit);
                }
                if let Some(w) = writer.take() {
                    let (tx, rx) = oneshot::channel();
                    let s = state.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(commit_copy(&s, w, hash, version, true));
                    });
                    local_events = Some(rx);
                }
            }
            Step::Abort | Step::Fail => {
                for d in decisions.iter_mut().filter_map(Option::take) {
                    let _ = d.send(Decision::Abort);
                }
                let mut reasons = failed.join(", ");
                if let Some(e) = &local_error {
                    reasons.push_str(&format!("; {}: {e}", state.id));
                }
                let message = format!(
                    "fewer than {} of {total} replicas could store the blob (failed: {reasons})",
                    routing.layout.write_quorum
                );
                return fail(&mut send, ErrorCode::QuorumFailed, message).await;
            }
            Step::Acknowledge => break,
        }
        // Wait for the next report: a replica's, or our own commit's. Every link reports its
        // own failure before it ends, so a closed channel only means no link is left.
        let next = tokio::select! {
            event = reports.recv(), if links_open => match event {
                Some(event) => event,
                None => {
                    links_open = false;
                    continue;
                }
            },
            result = async { local_events.as_mut().expect("guarded").await }, if local_events.is_some() => {
                local_events = None;
                (LOCAL, match result {
                    Ok(Ok(_)) => Report::Stored,
                    Ok(Err((_, e))) => {
                        local_error = Some(e);
                        Report::Failed
                    }
                    Err(_) => Report::Failed,
                })
            }
            else => {
                // Nothing left to hear from, and no verdict: the quorum cannot be reached.
                step = Step::Fail;
                continue;
            }
        };
        let (i, report) = next;
        if report == Report::Failed && i != LOCAL {
            failed.push(remotes[i].id.clone());
        }
        step = quorum.report(report);
    }
    // Acknowledged. Replicas known to have missed the write get a durable hint first.
    for id in &failed {
        state.hint(hash, id, HintKind::Put);
    }
    respond(
        &mut send,
        &Response::Stored {
            hash: *hash.as_bytes(),
            existed,
        },
    )
    .await;
    // The rest finish in the background; a late failure becomes a hint too.
    let state = state.clone();
    tokio::spawn(async move {
        if let Some(rx) = local_events
            && !matches!(rx.await, Ok(Ok(_)))
        {
            tracing::warn!(%hash, "local commit failed after the quorum acknowledged");
        }
        while let Some((i, report)) = reports.recv().await {
            if report == Report::Failed {
                state.hint(hash, &remotes[i].id, HintKind::Put);
            }
        }
    });
}

/// The coordinator's side of one replica's put: streams the body, reports `Prepared`, passes
/// the decision on, reports `Stored`. Any failure reports `Failed` (once).
struct ReplicaLink {
    state: Arc<State>,
    node: NodeSpec,
    request: Request,
    len: u64,
}

impl ReplicaLink {
    async fn run(
        self,
        feed: mpsc::Receiver<Bytes>,
        decision: oneshot::Receiver<Decision>,
        events: mpsc::UnboundedSender<(usize, Report)>,
        i: usize,
    ) {
        if let Err(e) = self.exchange(feed, decision, &events, i).await {
            tracing::info!(node = %self.node.id, error = %e, "replica missed a put");
            let _ = events.send((i, Report::Failed));
        }
    }

    async fn exchange(
        &self,
        mut feed: mpsc::Receiver<Bytes>,
        decision: oneshot::Receiver<Decision>,
        events: &mpsc::UnboundedSender<(usize, Report)>,
        i: usize,
    ) -> Result<(), String> {
        // While the connection opens, keep taking the body (up to a bound) so a slow or dead
        // replica does not hold back the others.
        let open = self.state.pool.open(&self.node, &self.request);
        tokio::pin!(open);
        let mut early = Vec::new();
        let mut early_bytes = 0usize;
        let mut feed_open = true;
        let (mut send, mut recv) = loop {
            tokio::select! {
                opened = &mut open => break opened.map_err(|e| e.to_string())?,
                chunk = feed.recv(), if feed_open => match chunk {
                    Some(chunk) => {
                        early_bytes += chunk.len();
                        if early_bytes > FORWARD_PENDING_BYTES_MAX {
                            return Err("replica too slow to connect".into());
                        }
                        early.push(chunk);
                    }
                    None => feed_open = false,
                },
            }
        };
        let stall = Duration::from_millis(BODY_STALL_TIMEOUT_MS);
        let mut sent = 0u64;
        let mut pieces = early.into_iter();
        loop {
            let chunk = match pieces.next() {
                Some(chunk) => chunk,
                None if feed_open => match feed.recv().await {
                    Some(chunk) => chunk,
                    None => break,
                },
                None => break,
            };
            sent += chunk.len() as u64;
            match tokio::time::timeout(stall, send.write_chunk(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("sending: {e}")),
                Err(_) => return Err("replica stalled".into()),
            }
        }
        if sent < self.len {
            let _ = send.reset(wire::STREAM_ABORT_CODE.into());
            return Err("put abandoned".into());
        }
        match self.answer(&mut recv).await? {
            Response::Prepared => {}
            other => return Err(format!("answered {other:?}")),
        }
        let _ = events.send((i, Report::Prepared));
        let decision = decision.await.unwrap_or(Decision::Abort);
        wire::write_frame(&mut send, &decision, wire::REQUEST_HEADER_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        if decision == Decision::Abort {
            return Ok(());
        }
        match self.answer(&mut recv).await? {
            Response::Stored { .. } => {
                let _ = events.send((i, Report::Stored));
                Ok(())
            }
            other => Err(format!("answered {other:?}")),
        }
    }

    async fn answer(&self, recv: &mut quinn::RecvStream) -> Result<Response, String> {
        let wait = Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS);
        match tokio::time::timeout(wait, read_response(&self.node.id, recv)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {REPLICA_RESPONSE_TIMEOUT_MS} ms")),
        }
    }
}

/// Receives a body of `len` bytes into a writer and checks its hash.
async fn receive(
    state: &State,
    hash: Hash,
    len: u64,
    recv: &mut quinn::RecvStream,
) -> Result<BlobWriter, (ErrorCode, String)> {
    let mut writer = Some(state.store.writer());
    if let Some(w) = &mut writer {
        w.reserve(len);
    }
    let mut write_error = None;
    let mut body = BodyReader::new(recv, len);
    while let Some(chunk) = body.next().await? {
        if let Some(w) = &mut writer
            && let Err(e) = w.write(&chunk)
        {
            write_error = Some(e);
            writer = None;
        }
    }
    let Some(writer) = writer else {
        let e = write_error.expect("a failed writer has an error");
        return Err((engine_code(&e), e.to_string()));
    };
    let actual = writer.hash();
    if actual != hash {
        return Err((
            ErrorCode::HashMismatch,
            format!("body hashes to {actual}, not {hash}"),
        ));
    }
    Ok(writer)
}

/// Makes a received blob durable and visible with its version, unless a newer tombstone of
/// the hash stands here (then the copy is superseded and dropped). `fresh`: a client's put,
/// which must stand over any tombstone here.
pub(crate) fn commit_copy(
    state: &State,
    writer: BlobWriter,
    hash: Hash,
    version: u64,
    fresh: bool,
) -> Result<(), (ErrorCode, String)> {
    let _guard = state.entry_lock(hash.as_bytes()).lock();
    let Some(version) = healing::put_version(state, hash.as_bytes(), version, fresh) else {
        return Ok(());
    };
    if version > 0 {
        state
            .versions
            .record(&[Entry::live(*hash.as_bytes(), version, 0)], wall_ms())
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    }
    writer
        .commit(Some(&hash))
        .map_err(|e| (engine_code(&e), e.to_string()))?;
    state.catalog.touch();
    Ok(())
}

/// A put from a coordinator: receive, check the hash, say `Prepared`, then commit or abort as
/// told.
async fn replica_put(
    state: &Arc<State>,
    hash: Hash,
    len: u64,
    version: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let writer = match receive(state, hash, len, &mut recv).await {
        Ok(writer) => writer,
        Err((code, message)) => return fail(&mut send, code, message).await,
    };
    if wire::write_frame(
        &mut send,
        &Response::Prepared,
        wire::RESPONSE_HEADER_BYTES_MAX,
    )
    .await
    .is_err()
    {
        return;
    }
    let decision = tokio::time::timeout(
        Duration::from_millis(DECISION_TIMEOUT_MS),
        wire::read_frame::<Decision>(&mut recv, wire::REQUEST_HEADER_BYTES_MAX),
    )
    .await;
    if !matches!(decision, Ok(Ok(Decision::Commit))) {
        // Abort, or the coordinator went away: nothing becomes visible.
        return;
    }
    let s = state.clone();
    let committed =
        tokio::task::spawn_blocking(move || commit_copy(&s, writer, hash, version, true)).await;
    respond(&mut send, &stored_or_error(hash, committed)).await;
}

fn stored_or_error(
    hash: Hash,
    committed: Result<Result<(), (ErrorCode, String)>, tokio::task::JoinError>,
) -> Response {
    match committed {
        Ok(Ok(())) => Response::Stored {
            hash: *hash.as_bytes(),
            existed: false,
        },
        Ok(Err((code, message))) => Response::error(code, message),
        Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
    }
}

/// A copy from a peer's healer (anti-entropy, hand-off): receive, check, store durably.
async fn store_copy(
    state: &Arc<State>,
    hash: Hash,
    len: u64,
    version: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let writer = match receive(state, hash, len, &mut recv).await {
        Ok(writer) => writer,
        Err((code, message)) => return fail(&mut send, code, message).await,
    };
    let s = state.clone();
    let committed =
        tokio::task::spawn_blocking(move || commit_copy(&s, writer, hash, version, false)).await;
    respond(&mut send, &stored_or_error(hash, committed)).await;
}

/// A node-protocol message: read it, answer it.
async fn peer_request(
    state: &Arc<State>,
    len: u32,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let len = len as usize;
    if len > wire::PEER_MESSAGE_BYTES_MAX {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        let message = format!(
            "message over the {}-byte limit",
            wire::PEER_MESSAGE_BYTES_MAX
        );
        return fail(&mut send, ErrorCode::HeaderTooLarge, message).await;
    }
    let mut buf = vec![0u8; len];
    let read = tokio::time::timeout(
        Duration::from_millis(BODY_STALL_TIMEOUT_MS),
        recv.read_exact(&mut buf),
    )
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return fail(&mut send, ErrorCode::Truncated, "node message cut short").await;
    }
    let msg: PeerMsg = match wire::decode_frame(&buf) {
        Ok(msg) => msg,
        Err(e) => return fail(&mut send, ErrorCode::BadRequest, e.to_string()).await,
    };
    let reply = healing::answer(state, msg).await;
    let body = match postcard::to_allocvec(&reply) {
        Ok(body) if body.len() <= wire::PEER_MESSAGE_BYTES_MAX => body,
        _ => return fail(&mut send, ErrorCode::Internal, "reply too large").await,
    };
    let header = Response::Peer {
        len: body.len() as u32,
    };
    if wire::write_frame(&mut send, &header, wire::RESPONSE_HEADER_BYTES_MAX)
        .await
        .is_ok()
    {
        let _ = send.write_all(&body).await;
    }
    let _ = send.finish();
}

/// Deletes a hash here: records its tombstone (if it stands over what is here) and drops the
/// bytes.
async fn local_delete(
    state: &Arc<State>,
    hash: Hash,
    version: u64,
) -> Result<bool, (ErrorCode, String)> {
    let s = state.clone();
    let tombstone = Entry::tombstone(*hash.as_bytes(), version);
    match tokio::task::spawn_blocking(move || healing::apply_tombstone(&s, tombstone)).await {
        Ok(Ok(existed)) => Ok(existed),
        Ok(Err(e)) => Err((ErrorCode::Internal, e)),
        Err(e) => Err((ErrorCode::Internal, e.to_string())),
    }
}

/// A delete from a client: delete on every replica, acknowledge at write quorum, hint the rest.
/// The tombstone's version is the client's if it set one (a conditional delete, standing only
/// where the blob was last written before it), else now.
async fn coordinate_delete(
    state: &Arc<State>,
    routing: &Routing,
    hash: Hash,
    requested_version: u64,
    mut send: quinn::SendStream,
) {
    let replicas: Vec<NodeSpec> = routing.replicas(&hash).into_iter().cloned().collect();
    let version = if requested_version > 0 {
        requested_version
    } else {
        wall_ms()
    };
    let mut tasks = Vec::new();
    for node in replicas.iter().filter(|n| n.id != state.id).cloned() {
        let state = state.clone();
        let request = Request {
            layout_version: routing.layout.version,
            op: Op::Delete {
                hash: *hash.as_bytes(),
                role: DeleteRole::Replica,
                version,
            },
        };
        tasks.push(tokio::spawn(async move {
            let wait = Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS);
            let result = tokio::time::timeout(wait, state.pool.call(&node, &request)).await;
            let existed = match result {
                Ok(Ok((Response::Deleted { existed }, _))) => Some(existed),
                _ => None,
            };
            (node.id, existed)
        }));
    }
    let mut outcomes = Vec::new();
    if replicas.iter().any(|n| n.id == state.id) {
        outcomes.push((
            state.id.clone(),
            local_delete(state, hash, version).await.ok(),
        ));
    }
    for task in tasks {
        if let Ok(outcome) = task.await {
            outcomes.push(outcome);
        }
    }
    let done = outcomes.iter().filter(|(_, e)| e.is_some()).count();
    let existed = outcomes.iter().any(|(_, e)| *e == Some(true));
    if done < routing.layout.write_quorum {
        let message = format!(
            "only {done} of {} replicas deleted the blob; retry the delete",
            replicas.len()
        );
        return fail(&mut send, ErrorCode::QuorumFailed, message).await;
    }
    for (id, _) in outcomes.iter().filter(|(_, e)| e.is_none()) {
        state.hint(hash, id, HintKind::Delete);
    }
    respond(&mut send, &Response::Deleted { existed }).await;
}

/// Brings this node's metadata partitions in line with their other owners, every
/// `interval_ms`.
async fn meta_sync_loop(state: Arc<State>, interval_ms: u64) {
    let interval = Duration::from_millis(interval_ms.max(100));
    loop {
        tokio::time::sleep(interval).await;
        match crate::meta::cluster::sync_round(&state).await {
            Ok(report) if report.exchanged > 0 || report.handed_off > 0 => {
                tracing::info!(?report, "metadata sync round");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "metadata sync round failed"),
        }
    }
}

/// Whole blobs up to this size are served by a front (HTTP or S3) from its own engine when it
/// holds a replica; larger ones stream through the cluster path, which verifies as it goes.
pub const LOCAL_READ_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// A blob (or `range` of it) from this node's own engine, if the node is one of its replicas
/// and holds a good copy: a whole blob is hashed against its name, a range checked by the
/// engine's chunk CRCs. A corrupt copy is reported to the healer and `None` returned, so the
/// caller goes through the cluster instead.
pub(crate) async fn local_read(
    state: &Arc<State>,
    hash: Hash,
    range: Option<ByteRange>,
) -> Option<Bytes> {
    let routing = state.routing();
    if !routing.replicas(&hash).iter().any(|n| n.id == state.id) {
        return None;
    }
    let state = state.clone();
    let read = tokio::task::spawn_blocking(move || {
        // Hashing first would hold back the first byte: large blobs stream instead.
        if range.is_none()
            && matches!(state.store.stat(&hash), Ok(BlobStat::Present { bytes }) if bytes > LOCAL_READ_BYTES_MAX)
        {
            return None;
        }
        let blob = match range {
            None => state.store.get(&hash),
            Some(r) => state.store.read_range(&hash, r.offset, r.len),
        };
        match blob {
            Ok(Some(blob)) if range.is_some() || Hash::of(&blob) == hash => {
                Some(Bytes::from_owner(blob))
            }
            Ok(Some(_))
            | Err(cairn_engine::Error::Corrupted { .. })
            | Err(cairn_engine::Error::Quarantined { .. }) => {
                healing::noticed_corrupt(&state, hash);
                None
            }
            Ok(None) | Err(_) => None,
        }
    });
    read.await.ok().flatten()
}

/// Read repair: queue a copy of a blob held here to replicas found without it.
fn repair(state: &State, routing: &Routing, hash: Hash, targets: Vec<String>) -> Response {
    if targets.len() > wire::REPAIR_TARGETS_MAX {
        return Response::error(
            ErrorCode::BadRequest,
            format!("more than {} repair targets", wire::REPAIR_TARGETS_MAX),
        );
    }
    if !matches!(state.store.stat(&hash), Ok(BlobStat::Present { .. })) {
        return Response::error(ErrorCode::NotFound, "not held here");
    }
    let replicas = routing.replicas(&hash);
    for target in &targets {
        if target != &state.id && replicas.iter().any(|n| &n.id == target) {
            state.hint(hash, target, HintKind::Put);
        }
    }
    Response::RepairQueued
}

/// Delivers due hints, forever.
async fn hint_loop(state: Arc<State>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(hints::HINT_TICK) => {}
            _ = state.hint_wake.notified() => {}
        }
        let now = state.now_ms();
        let due = state
            .hints
            .lock()
            .queue()
            .take_due(now, HINT_DELIVERY_BATCH_MAX);
        for (id, hint) in due {
            let result = deliver(&state, &hint).await;
            let now = state.now_ms();
            let mut log = state.hints.lock();
            match result {
                Ok(()) => {
                    tracing::info!(hash = %hint.hash, target = %hint.target, "hint delivered");
                    if let Err(e) = log.delivered(id) {
                        tracing::error!(error = %e, "cannot record a delivered hint");
                    }
                }
                Err(e) => {
                    tracing::debug!(hash = %hint.hash, target = %hint.target, error = %e, "hint not delivered yet");
                    log.queue().failed(id, now);
                }
            }
        }
    }
}

/// Brings one replica up to date. `Ok` also when there is nothing left to do.
async fn deliver(state: &State, hint: &Hint) -> Result<(), String> {
    let routing = state.routing();
    let Some(node) = routing.layout.nodes.iter().find(|n| n.id == hint.target) else {
        tracing::warn!(target = %hint.target, "hint target left the layout; dropping the hint");
        return Ok(());
    };
    let op = match hint.kind {
        HintKind::Delete => {
            let Some(tombstone) = state.versions.tombstone(hint.hash.as_bytes()) else {
                // Superseded by a later put, or purged: nothing left to pass on.
                return Ok(());
            };
            Op::Delete {
                hash: *hint.hash.as_bytes(),
                role: DeleteRole::Replica,
                version: tombstone.version,
            }
        }
        HintKind::Put => {
            let found = state.store.get(&hint.hash).map_err(|e| {
                if engine_code(&e) == ErrorCode::Corrupted {
                    healing::noticed_corrupt(state, hint.hash);
                }
                e.to_string()
            })?;
            let Some(blob) = found else {
                tracing::warn!(hash = %hint.hash, "no local copy left to hand off");
                return Ok(());
            };
            return push_copy(state, &routing, node, hint.hash, &blob).await;
        }
    };
    let request = Request {
        layout_version: routing.layout.version,
        op,
    };
    match state.pool.call(node, &request).await {
        Ok((Response::Deleted { .. }, _)) => Ok(()),
        Ok((other, _)) => Err(format!("answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Copies a blob held here to one node as a copy (`Store`): the receiver keeps it only if no
/// newer tombstone of the hash stands there, so a late copy never undoes a delete. Used by
/// hint delivery and by the healer.
pub(crate) async fn push_copy(
    state: &State,
    routing: &Routing,
    node: &NodeSpec,
    hash: Hash,
    blob: &[u8],
) -> Result<(), String> {
    let request = Request {
        layout_version: routing.layout.version,
        op: Op::Store {
            hash: *hash.as_bytes(),
            len: blob.len() as u64,
            version: state
                .catalog
                .entry(hash.as_bytes())
                .map_or(0, |e| e.version),
        },
    };
    let work = async {
        let (mut send, mut recv) = state
            .pool
            .open(node, &request)
            .await
            .map_err(|e| e.to_string())?;
        send.write_all(blob).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        match read_response(&node.id, &mut recv).await {
            Ok(Response::Stored { .. }) => Ok(()),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS), work).await {
        Ok(result) => result,
        Err(_) => Err("timed out".into()),
    }
}

/// Writes a file by temporary file, fsync and rename, so a crash leaves the old or the new.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
