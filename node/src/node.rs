//! The composition root: [`Node::start`] opens this node's engine and logs, builds its shared
//! [`State`], and starts every server and loop (QUIC, healing, hint delivery, metadata sync,
//! the HTTP and S3 fronts, the garbage collector); [`Node::shutdown`] stops them.
//!
//! Architecture invariant: this is the only module that names every part of the node, and
//! nothing in the crate imports it but `lib.rs` (which re-exports [`Node`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::pool::Pool;
use cairn_client::tls::{self, Identity};
use cairn_core::Routing;
use cairn_core::heal::{Healer, Scrubber};
use cairn_core::layout::Layout;
use cairn_core::membership::Membership;
use cairn_core::status::{GcStatus, NodeStatus};
use cairn_core::wire;
use cairn_engine::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{META_SYNC_INTERVAL_MS_DEFAULT, NodeConfig};
use crate::error::NodeError;
use crate::limits::{
    CONNECTIONS_MAX, HOLD_FLUSH_WAIT_MS, REQUESTS_IN_FLIGHT_MAX, SHUTDOWN_IDLE_WAIT_MS,
    SHUTDOWN_WAIT_STEP_MS, SHUTDOWN_WAIT_STEPS,
};
use crate::local::catalog::NodeCatalog;
use crate::local::files;
use crate::local::hint_log::HintLog;
use crate::local::meta_store::{Meta, MetaStore};
use crate::local::space::SpaceState;
use crate::local::versions::VersionTable;
use crate::meta::cluster::MetaError;
use crate::meta::sync::SyncReport;
use crate::space;
use crate::state::{GcHandle, HealingState, HoldQueue, KeysDesk, State, StateParts, peer_ids};
use crate::{clock, healing, hints, http, meta, quic, s3};
use tracing::Instrument;

/// A running node. Dropping it without `shutdown` leaves its tasks running.
pub struct Node {
    state: Arc<State>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    http: http::HttpServer,
    s3: Option<s3::S3Server>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens the engine, loads the layout and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: &NodeConfig) -> Result<Node, NodeError> {
        // Everything the node logs, from any of its tasks, names it.
        let span = tracing::info_span!("node", id = %config.id);
        Node::start_in_span(config).instrument(span).await
    }

    async fn start_in_span(config: &NodeConfig) -> Result<Node, NodeError> {
        let layout = load_layout(config)?;
        let me = layout
            .nodes
            .iter()
            .find(|n| n.id == config.id)
            .ok_or_else(|| NodeError::NotInLayout {
                id: config.id.clone(),
                version: layout.version,
            })?;
        // A node named by a host name listens on every address, at the port its name gives.
        let listen = config.listen.unwrap_or_else(|| {
            me.addr
                .ip()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], me.addr.port())))
        });
        let zone = me.zone.clone();
        crate::config::check_secret_file(&config.tls.key)?;
        let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        // The address first: a node that cannot listen fails before its engine's open repairs
        // anything (the open's report would otherwise be lost to the next attempt).
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
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| NodeError::Io { path, source }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
        let mut engine_config = cairn_engine::Config::default();
        if let Some(bytes) = config.segment_bytes {
            engine_config.segment_bytes = bytes;
        }
        engine_config.compact_live_ratio_below =
            1.0 - f64::from(config.space.compaction_dead_percent_min) / 100.0;
        engine_config.direct_writes = config.space.direct_writes;
        let space = SpaceState::new(config.space.clone(), engine_config.segment_bytes);
        let store_dir = config.data_dir.join("store");
        let store = crate::task::spawn_blocking(move || Store::open(store_dir, engine_config))
            .await
            .expect("engine open does not panic")?;
        let report = store.recovery_report();
        tracing::info!(blobs = report.blobs_indexed, "engine open");
        if report.dropped_anything() {
            let moved: Vec<String> = report
                .unreadable_segments
                .iter()
                .map(|u| match &u.moved_to {
                    Some(to) => format!(
                        "{} ({:?}) moved to {}",
                        u.path.display(),
                        u.problem,
                        to.display()
                    ),
                    None => format!("{} ({:?}) left in place", u.path.display(), u.problem),
                })
                .collect();
            tracing::warn!(
                records_lost = report.records_lost,
                torn_tails = report.torn_tails.len(),
                unreadable_segments = ?moved,
                "the engine's open dropped records; anti-entropy fetches them from the replicas"
            );
        }
        let hint_log = HintLog::open(
            &config.data_dir,
            config.hints.retry_ms_min,
            config.hints.retry_ms_max,
        )?;
        config.failure_detector.validate()?;
        config.heal.validate()?;
        let versions = Arc::new(VersionTable::open(&config.data_dir)?);
        let meta_path = config.data_dir.join("meta.redb");
        let node_id = config.id.clone();
        let meta = crate::task::spawn_blocking(move || Meta::open(&meta_path, &node_id))
            .await
            .expect("metadata open does not panic")?;
        let previous =
            files::previous_layout(&config.data_dir).filter(|p| p.version < layout.version);
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
        let now = clock::wall_ms();
        let mut membership = Membership::new(config.failure_detector.clone(), now);
        membership.set_peers(
            peer_ids(&routing, &config.id).iter().map(|s| s.as_str()),
            routing.layout.version,
        );
        let mut healer = Healer::new(&config.id, config.heal.clone(), routing.clone(), now);
        let last_alive = files::last_alive_ms(&config.data_dir);
        if last_alive.is_some_and(|t| now.saturating_sub(t) > config.heal.tombstone_grace_ms) {
            tracing::warn!(
                "this node was out of contact for longer than the tombstone grace period; \
                 it will not hand off copies it holds (deletes it missed may be purged)"
            );
            healer.set_handoff_enabled(false);
        }
        let scrubber = Scrubber::new(&config.heal, files::scrub_cursor(&config.data_dir), now);
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
        let state = Arc::new(State::new(StateParts {
            id: config.id.clone(),
            store,
            routing,
            pool,
            hints: hint_log,
            data_dir: config.data_dir.clone(),
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
            connections_max: CONNECTIONS_MAX,
            versions,
            catalog,
            healing: HealingState {
                membership: parking_lot::Mutex::new(membership),
                healer: parking_lot::Mutex::new(healer),
                scrubber: parking_lot::Mutex::new(scrubber),
                events,
                corrupt_found: Default::default(),
                scrub_corrupt_found: Default::default(),
                copied_bytes: Default::default(),
                hints_delivered: Default::default(),
                repairs: Default::default(),
            },
            cluster_client,
            meta,
            holds: HoldQueue::new(),
            gc: config.s3.as_ref().map(|_| GcHandle::new()),
            keys_desk: config.s3.as_ref().map(|_| KeysDesk::new()),
            space,
        }));
        let http = http::start(state.clone(), &config.http).await?;
        let s3 = match &config.s3 {
            Some(settings) => Some(s3::start(state.clone(), settings).await?),
            None => None,
        };
        let sync_interval_ms = config
            .s3
            .as_ref()
            .map_or(META_SYNC_INTERVAL_MS_DEFAULT, |s| s.meta_sync_interval_ms);
        let mut tasks = vec![
            crate::task::spawn(quic::accept_loop(state.clone(), endpoint.clone())),
            crate::task::spawn(hints::hint_loop(state.clone())),
            crate::task::spawn(healing::heal_loop(state.clone(), events_rx)),
            crate::task::spawn(meta::sync::sync_loop(state.clone(), sync_interval_ms)),
            crate::task::spawn(space::compaction_loop(state.clone())),
            crate::task::spawn(space::mapped_memory_loop(state.clone())),
            crate::task::spawn(meta::marks::write_holds(state.clone())),
        ];
        if let Some(settings) = &config.s3 {
            tasks.push(crate::task::spawn(s3::gc::collector_loop(
                state.clone(),
                settings.clone(),
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
        self.state.gc.as_ref().is_some_and(|gc| gc.start())
    }

    /// The garbage collector's progress, if the S3 front is on.
    pub fn gc_status(&self) -> Option<GcStatus> {
        self.state.gc.as_ref().map(|gc| gc.status())
    }

    /// One round of the metadata digest exchange, now (tests use it to converge on demand).
    pub async fn sync_metadata(&self) -> Result<SyncReport, MetaError> {
        meta::sync::sync_round(&self.state).await
    }

    /// The node's metadata store (tests look at replicas directly).
    pub fn meta_store(&self) -> &MetaStore {
        &self.state.meta.store
    }

    /// The node's engine (tests look at replicas directly).
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn layout(&self) -> Layout {
        self.state.routing().layout.clone()
    }

    /// Switches to a newer layout (kept in the data directory for restarts); the layout in use
    /// is accepted again as a no-op. An older or invalid layout is refused. A layout without
    /// this node is adopted too: the node then hands off what it holds.
    pub fn apply_layout(&self, layout: Layout) -> Result<(), NodeError> {
        layout.validate()?;
        self.state.adopt(layout, None)
    }

    /// What `cairn status` shows of this node.
    pub fn status(&self) -> NodeStatus {
        healing::status::status(&self.state)
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
        self.state.holds.flush(HOLD_FLUSH_WAIT_MS).await;
        for task in &self.tasks {
            task.abort();
        }
        self.endpoint
            .close(wire::CONNECTION_CLOSE_CODE.into(), b"node shutting down");
        let idle = Duration::from_millis(SHUTDOWN_IDLE_WAIT_MS);
        let _ = tokio::time::timeout(idle, self.endpoint.wait_idle()).await;
        let store = self.state.store.clone();
        let _ = crate::task::spawn_blocking(move || store.sync()).await;
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
    let configured = cairn_client::load_layout(&config.layout)?;
    match files::adopted_layout(&config.data_dir) {
        Some(adopted) if adopted.version > configured.version => Ok(adopted),
        _ => Ok(configured),
    }
}
