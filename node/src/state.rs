//! The handles every part of a running node shares ([`State`]): its engine, its routing, its
//! connection pool, its own durable state, the healing state machines, its metadata, the
//! garbage collector's controls, the desk of key and bucket administration, and the cluster client its fronts route through. Adopting a
//! new layout happens here, because every one of them must learn it together.
//!
//! Architecture invariant: this module imports none of the node's servers, loops or fronts
//! (`quic`, `healing`, `hints`, `meta`, `http`, `s3`, `net`, `admin`); they all import it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_core::Routing;
use cairn_core::heal::{Healer, Scrubber};
use cairn_core::hints::{Hint, HintKind};
use cairn_core::keys::{KeysAnswer, KeysRequest};
use cairn_core::layout::Layout;
use cairn_core::membership::Membership;
use cairn_core::meta::{Entry, MetaKey};
use cairn_core::status::GcStatus;
use cairn_engine::{Hash, Store};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use cairn_core::status::RateWindow;

use crate::clock;
use crate::error::NodeError;
use crate::limits::{
    ADOPT_RETRY_MS_MAX, ADOPT_RETRY_MS_MIN, ENTRY_LOCK_STRIPES, HOLD_FLUSH_POLL_MS, HOLD_QUEUE_MAX,
    KEYS_DESK_CALLS_MAX,
};
use crate::local::catalog::NodeCatalog;
use crate::local::files;
use crate::local::hint_log::HintLog;
use crate::local::meta_store::Meta;
use crate::local::space::SpaceState;
use crate::local::versions::VersionTable;

/// What tasks report back to the heal loop (`crate::healing`).
pub(crate) enum HealEvent {
    Reply {
        from: String,
        msg: cairn_core::heal::HealMsg,
    },
    TransferDone {
        id: u64,
        ok: bool,
    },
    PeerUp {
        peer: String,
    },
    /// A read found the local copy corrupt (the engine quarantined it).
    Corrupt {
        hash: [u8; 32],
    },
    Wake,
}

/// The healing state machines of a node, each under its own lock (never held across an
/// `await`), and the channel to the loop that drives them.
pub(crate) struct HealingState {
    pub membership: Mutex<Membership>,
    pub healer: Mutex<Healer>,
    pub scrubber: Mutex<Scrubber>,
    pub events: mpsc::UnboundedSender<HealEvent>,
    /// Corrupt copies found here by any read, and by the scrub alone.
    pub corrupt_found: AtomicU64,
    pub scrub_corrupt_found: AtomicU64,
    /// Blob bytes copied to or from peers by transfers that succeeded.
    pub copied_bytes: AtomicU64,
    /// Hints delivered since the node started.
    pub hints_delivered: AtomicU64,
    /// Copies made and hints delivered, over the last minute (the repair ETA's pace).
    pub repairs: Mutex<RateWindow>,
}

impl HealingState {
    /// Wakes the heal loop (a new layout, say).
    pub(crate) fn wake(&self) {
        let _ = self.events.send(HealEvent::Wake);
    }
}

/// Administrative requests about access keys and buckets (`cairn key`, `cairn bucket`): the
/// node protocol hands them to the S3 front here, and the front answers them, without either
/// knowing the other.
pub(crate) struct KeysDesk {
    calls: mpsc::Sender<KeysCall>,
    inbox: Mutex<Option<mpsc::Receiver<KeysCall>>>,
}

/// One request at the desk, with where its answer goes (a refusal is `KeysAnswer::Refused`).
pub(crate) struct KeysCall {
    pub request: KeysRequest,
    pub answer: oneshot::Sender<KeysAnswer>,
}

/// Why the desk could not hand a request on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DeskError {
    #[error("{KEYS_DESK_CALLS_MAX} key and bucket requests are already waiting here")]
    Busy,
    #[error("the S3 front stopped before answering")]
    Stopped,
}

impl KeysDesk {
    pub(crate) fn new() -> KeysDesk {
        let (calls, inbox) = mpsc::channel(KEYS_DESK_CALLS_MAX);
        KeysDesk {
            calls,
            inbox: Mutex::new(Some(inbox)),
        }
    }

    /// The requests, for the front that answers them (once).
    pub(crate) fn take_inbox(&self) -> Option<mpsc::Receiver<KeysCall>> {
        self.inbox.lock().take()
    }

    /// Hands a request to the front and waits for its answer.
    pub(crate) async fn ask(&self, request: KeysRequest) -> Result<KeysAnswer, DeskError> {
        let (answer, answered) = oneshot::channel();
        let call = KeysCall { request, answer };
        if self.calls.try_send(call).is_err() {
            return Err(DeskError::Busy);
        }
        answered.await.map_err(|_| DeskError::Stopped)
    }
}

/// The native API's holds on their way to the metadata (`meta::marks` makes and writes them):
/// the fronts and the node protocol queue them here without waiting, so a put never waits for
/// its hold. A hold dropped (the queue full), given up on, or still queued a while into a
/// shutdown is counted (`cairn_holds_not_written_total`); the first is said at WARN.
pub(crate) struct HoldQueue {
    queue: mpsc::Sender<(MetaKey, Entry)>,
    inbox: Mutex<Option<mpsc::Receiver<(MetaKey, Entry)>>>,
    /// Queued and not yet written or given up on.
    pending: AtomicUsize,
    lost: AtomicU64,
    /// Whether a loss was said (once: the counter and its alert tell of later ones).
    said: AtomicBool,
}

impl HoldQueue {
    pub(crate) fn new() -> HoldQueue {
        let (queue, inbox) = mpsc::channel(HOLD_QUEUE_MAX);
        HoldQueue {
            queue,
            inbox: Mutex::new(Some(inbox)),
            pending: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            said: AtomicBool::new(false),
        }
    }

    /// Queues a hold; drops and counts it if the queue is full.
    pub(crate) fn push(&self, key: MetaKey, entry: Entry) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queue.try_send((key, entry)) {
            self.forget_pending(1);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the hold queue is full",
                mpsc::error::TrySendError::Closed(_) => "the hold writer has stopped",
            };
            self.lose(1, why);
        }
    }

    /// Saturating: a shutdown's flush may have counted these as lost already.
    fn forget_pending(&self, holds: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(holds))
            });
    }

    /// The queued holds, for the writer (once).
    pub(crate) fn take_inbox(&self) -> Option<mpsc::Receiver<(MetaKey, Entry)>> {
        self.inbox.lock().take()
    }

    /// `holds` were written (`lost: None`) or given up on.
    pub(crate) fn done(&self, holds: usize, lost: Option<&str>) {
        if let Some(why) = lost {
            self.lose(holds, why);
        }
        self.forget_pending(holds);
    }

    /// Holds dropped or given up on since the node started.
    pub(crate) fn not_written(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits, at most `wait_ms`, for the holds queued so far to be written or given up on;
    /// counts those still waiting then as lost (the node is stopping).
    pub(crate) async fn flush(&self, wait_ms: u64) {
        for _ in 0..wait_ms / HOLD_FLUSH_POLL_MS {
            if self.pending.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(HOLD_FLUSH_POLL_MS)).await;
        }
        let left = self.pending.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.lose(left, "the node stopped before they were written");
        }
    }

    fn lose(&self, holds: usize, why: &str) {
        self.lost.fetch_add(holds as u64, Ordering::Relaxed);
        if !self.said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                holds,
                why,
                "holds of blobs stored through the native API not written (said once; \
                 cairn_holds_not_written_total counts them all): such a blob whose bytes an \
                 object shares may be collected once the object is gone"
            );
        }
    }
}

/// The garbage collector's controls and progress: the node protocol (`cairn gc`) and the node
/// start it and read it here, without knowing the S3 front that runs it.
pub(crate) struct GcHandle {
    running: AtomicBool,
    status: Mutex<GcStatus>,
    wake: Notify,
}

impl GcHandle {
    pub(crate) fn new() -> GcHandle {
        GcHandle {
            running: AtomicBool::new(false),
            status: Mutex::new(GcStatus::default()),
            wake: Notify::new(),
        }
    }

    pub(crate) fn status(&self) -> GcStatus {
        self.status.lock().clone()
    }

    /// Asks the collector to start now unless a collection is running; says whether this call
    /// started one.
    pub(crate) fn start(&self) -> bool {
        if !self.begin() {
            return false;
        }
        self.wake.notify_one();
        true
    }

    /// Claims the collector for a run: false if one is running.
    pub(crate) fn begin(&self) -> bool {
        if self.running.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Running from this call on, so a caller polling the status never reads the last run's.
        self.status.lock().running = true;
        true
    }

    /// Waits until [`GcHandle::start`] asks for a run.
    pub(crate) async fn started(&self) {
        self.wake.notified().await;
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut GcStatus)) {
        f(&mut self.status.lock());
    }

    /// The run claimed by `begin` or `start` is over.
    pub(crate) fn end(&self, f: impl FnOnce(&mut GcStatus)) {
        {
            let mut status = self.status.lock();
            f(&mut status);
            status.running = false;
        }
        self.running.store(false, Ordering::SeqCst);
    }
}

pub(crate) struct State {
    pub(crate) id: String,
    pub(crate) store: Store,
    routing: RwLock<Arc<Routing>>,
    pub(crate) pool: cairn_client::pool::Pool,
    pub(crate) hints: Mutex<HintLog>,
    pub(crate) hint_wake: Notify,
    /// The start of the monotonic clock the hint queue runs on.
    started: Instant,
    pub(crate) data_dir: PathBuf,
    pub(crate) requests: Arc<Semaphore>,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) versions: Arc<VersionTable>,
    pub(crate) catalog: NodeCatalog,
    pub(crate) healing: HealingState,
    /// Routes requests taken in over HTTP and S3 through the cluster, as any client would.
    pub(crate) cluster_client: cairn_client::Client,
    /// This node's replicas of the cluster's metadata, and its clock.
    pub(crate) meta: Meta,
    /// Writes the native API's holds on blobs, in the background.
    pub(crate) holds: HoldQueue,
    /// The garbage collector, when the S3 front is on.
    pub(crate) gc: Option<GcHandle>,
    /// Key and bucket administration, when the S3 front is on.
    pub(crate) keys_desk: Option<KeysDesk>,
    /// Compaction's progress and how full the disk is.
    pub(crate) space: SpaceState,
    /// The last failure to adopt a layout, while that layout is not adopted.
    adopt_failure: Mutex<Option<AdoptFailure>>,
    /// Held while a layout is adopted (or the previous one retired).
    adopt_lock: Mutex<()>,
    /// Start (wall clock) of the last metadata sync round that left nothing out: every partition
    /// held here compared with every owner, none held that this node does not own.
    pub(crate) meta_settled_since_ms: AtomicU64,
    /// Wakes the metadata sync loop (a new layout moves partitions).
    pub(crate) meta_sync_wake: Notify,
    /// Node-protocol messages refused because the connection's certificate does not name the
    /// node they claim to come from.
    pub(crate) impersonations_refused: AtomicU64,
    /// What the fronts count: S3 requests, certificate reloads.
    pub(crate) figures: crate::figures::FrontFigures,
    /// Taken while a hash's version and bytes change together (a commit, a tombstone), so a
    /// put and a delete of one hash on one node are ordered; striped by the hash's first byte.
    entry_locks: Vec<Mutex<()>>,
}

/// A layout version this node failed to adopt, and when it may try again.
struct AdoptFailure {
    version: u64,
    error: String,
    pause_ms: u64,
    retry_ms: u64,
    /// The routing the failed attempt built, held so that its placement table (shared by
    /// layout within the process) is found again by the retry rather than built anew.
    built: Option<Arc<Routing>>,
}

/// What a [`State`] is made of; everything but the locks and the clock's start.
pub(crate) struct StateParts {
    pub id: String,
    pub store: Store,
    pub routing: Arc<Routing>,
    pub pool: cairn_client::pool::Pool,
    pub hints: HintLog,
    pub data_dir: PathBuf,
    pub requests_in_flight_max: usize,
    pub connections_max: usize,
    pub versions: Arc<VersionTable>,
    pub catalog: NodeCatalog,
    pub healing: HealingState,
    pub cluster_client: cairn_client::Client,
    pub meta: Meta,
    pub holds: HoldQueue,
    pub gc: Option<GcHandle>,
    pub keys_desk: Option<KeysDesk>,
    pub space: SpaceState,
}

impl State {
    /// The reload figures of a front about to serve TLS, registered for `/metrics`.
    pub(crate) fn tls_figures(&self, front: &'static str) -> Arc<crate::figures::TlsFigures> {
        let figures = Arc::new(crate::figures::TlsFigures {
            front,
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        self.figures.tls.lock().push(figures.clone());
        figures
    }

    pub(crate) fn new(parts: StateParts) -> State {
        State {
            id: parts.id,
            store: parts.store,
            routing: RwLock::new(parts.routing),
            pool: parts.pool,
            hints: Mutex::new(parts.hints),
            hint_wake: Notify::new(),
            started: clock::now(),
            data_dir: parts.data_dir,
            requests: Arc::new(Semaphore::new(parts.requests_in_flight_max)),
            connections: Arc::new(Semaphore::new(parts.connections_max)),
            versions: parts.versions,
            catalog: parts.catalog,
            healing: parts.healing,
            cluster_client: parts.cluster_client,
            meta: parts.meta,
            holds: parts.holds,
            gc: parts.gc,
            keys_desk: parts.keys_desk,
            space: parts.space,
            adopt_failure: Mutex::new(None),
            adopt_lock: Mutex::new(()),
            meta_settled_since_ms: AtomicU64::new(0),
            meta_sync_wake: Notify::new(),
            impersonations_refused: AtomicU64::new(0),
            figures: Default::default(),
            entry_locks: (0..ENTRY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.read().clone()
    }

    pub(crate) fn entry_lock(&self, hash: &[u8; 32]) -> &Mutex<()> {
        &self.entry_locks[hash[0] as usize % ENTRY_LOCK_STRIPES]
    }

    /// Milliseconds on the monotonic clock the hint queue runs on.
    pub(crate) fn now_ms(&self) -> u64 {
        clock::since_ms(self.started)
    }

    /// The layout version this node failed to adopt and has not adopted since, with why (a
    /// full disk cannot take the layout file).
    pub(crate) fn layout_unadopted(&self) -> Option<(u64, String)> {
        let failure = self.adopt_failure.lock();
        failure.as_ref().map(|f| (f.version, f.error.clone()))
    }

    /// Adopts a newer layout, keeping it (and the one it replaces) durably for restarts first.
    /// A layout without this node is adopted too: the node then hands off what it holds.
    ///
    /// A failure (a full disk cannot take the layout file) is said once at WARN, and the same
    /// version is refused without a try until a pause, doubling from `ADOPT_RETRY_MS_MIN` to
    /// `ADOPT_RETRY_MS_MAX`, has passed: peers offer it with every heartbeat. The pause is
    /// checked under the adoption lock, so offers queued behind a failing attempt are refused
    /// too, and a retry finds the placement table the failed attempt built.
    pub(crate) fn adopt(&self, layout: Layout, previous: Option<Layout>) -> Result<(), NodeError> {
        let _one_at_a_time = self.adopt_lock.lock();
        let now = clock::wall_ms();
        let mut built = None;
        if let Some(f) = self.adopt_failure.lock().as_mut()
            && f.version == layout.version
        {
            if now < f.retry_ms {
                return Err(NodeError::AdoptPaused {
                    version: f.version,
                    last_error: f.error.clone(),
                    retry_in_ms: f.retry_ms - now,
                });
            }
            built = f.built.take();
        }
        let version = layout.version;
        let result = self.try_adopt(layout, previous, &mut built);
        let mut failure = self.adopt_failure.lock();
        match result {
            Ok(()) => {
                if failure.take().is_some() {
                    tracing::info!(version, "layout adopted after earlier failures");
                }
                Ok(())
            }
            Err(e @ NodeError::LayoutNotNewer { .. }) => Err(e),
            Err(e) => {
                let pause_ms = match &*failure {
                    Some(f) if f.version == version => (f.pause_ms * 2).min(ADOPT_RETRY_MS_MAX),
                    _ => {
                        tracing::warn!(
                            version,
                            error = %e,
                            "cannot adopt the cluster's new layout; retrying with growing pauses"
                        );
                        ADOPT_RETRY_MS_MIN
                    }
                };
                tracing::debug!(version, error = %e, pause_ms, "layout not adopted");
                // From the end of the attempt: building the table may outlast the pause.
                *failure = Some(AdoptFailure {
                    version,
                    error: e.to_string(),
                    pause_ms,
                    retry_ms: clock::wall_ms() + pause_ms,
                    built,
                });
                Err(e)
            }
        }
    }

    /// One attempt at adopting `layout`, under the adoption lock. A failure after the successor
    /// routing was built leaves it in `built`, which keeps its placement table for the retry.
    fn try_adopt(
        &self,
        layout: Layout,
        previous: Option<Layout>,
        built: &mut Option<Arc<Routing>>,
    ) -> Result<(), NodeError> {
        layout.validate()?;
        let current = self.routing();
        if layout == current.layout {
            return Ok(()); // already adopted, from a peer
        }
        if layout.version <= current.layout.version {
            return Err(NodeError::LayoutNotNewer {
                offered: layout.version,
                current: current.layout.version,
            });
        }
        tracing::info!(
            from = current.layout.version,
            to = layout.version,
            "adopting layout"
        );
        // The placement table is computed outside the routing lock, which every request and
        // heartbeat reads (or found: a failed attempt's, still held in `built`).
        let next = Arc::new(current.successor(layout, previous)?);
        if let Err(e) = files::save_layouts(
            &self.data_dir,
            &next.layout,
            next.previous.as_ref().map(|p| &p.layout),
        ) {
            *built = Some(next);
            return Err(e.into());
        }
        *self.routing.write() = next.clone();
        self.cluster_client.adopt_routing(next.clone());
        let now = clock::wall_ms();
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
        self.meta_sync_wake.notify_one();
        Ok(())
    }

    /// Forgets the previous layout once its moves are over: reads stop falling back to its
    /// replicas, and work that waits for moves (the collector) may run.
    pub(crate) fn retire_previous(&self) -> Result<(), NodeError> {
        let _one_at_a_time = self.adopt_lock.lock();
        let mut routing = self.routing.write();
        let Some(previous) = &routing.previous else {
            return Ok(());
        };
        tracing::info!(
            version = routing.layout.version,
            previous = previous.layout.version,
            "every copy is where the layout places it; forgetting the previous layout"
        );
        files::forget_previous_layout(&self.data_dir)?;
        let retired = Arc::new(routing.retired());
        *routing = retired.clone();
        drop(routing);
        self.cluster_client.retire_previous_layout();
        self.catalog.set_routing(retired.clone());
        self.healing.healer.lock().retire_previous(retired);
        self.healing.membership.lock().set_peers(
            peer_ids(&self.routing(), &self.id)
                .iter()
                .map(|s| s.as_str()),
            self.routing().layout.version,
        );
        // A collection postponed for the moves runs now rather than at its next turn.
        if let Some(gc) = &self.gc
            && gc.status().postponed.is_some()
        {
            gc.start();
        }
        Ok(())
    }

    /// Records a durable hint and wakes the delivery loop.
    pub(crate) fn hint(&self, hash: Hash, target: &str, kind: HintKind) {
        let hint = Hint {
            hash,
            target: target.to_string(),
            kind,
        };
        let now = self.now_ms();
        match self.hints.lock().add(hint, now) {
            Ok(_) => tracing::debug!(%hash, target, ?kind, "hint recorded"),
            Err(e) => tracing::error!(%hash, target, error = %e, "cannot record hint"),
        }
        self.hint_wake.notify_one();
    }

    /// A read found a corrupt copy here (the engine quarantined it): count it and have the
    /// healer fetch a good one.
    pub(crate) fn noticed_corrupt(&self, hash: Hash) {
        tracing::warn!(%hash, "corrupt copy quarantined; fetching a good one");
        self.healing.corrupt_found.fetch_add(1, Ordering::Relaxed);
        self.catalog.touch();
        let _ = self.healing.events.send(HealEvent::Corrupt {
            hash: *hash.as_bytes(),
        });
    }

    /// Is this node the first of the layout (in layout order) it sees up? Scheduled work meant
    /// for one node runs there.
    pub(crate) fn lowest_up_node(&self) -> bool {
        let routing = self.routing();
        let membership = self.healing.membership.lock();
        routing
            .layout
            .nodes
            .iter()
            .find(|n| n.id == self.id || membership.is_up(&n.id))
            .is_some_and(|n| n.id == self.id)
    }
}

/// The ids of the layout's nodes, and of the previous layout's, but `me`.
pub(crate) fn peer_ids(routing: &Routing, me: &str) -> Vec<String> {
    let mut ids: Vec<String> = routing.layout.nodes.iter().map(|n| n.id.clone()).collect();
    if let Some(p) = &routing.previous {
        ids.extend(p.layout.nodes.iter().map(|n| n.id.clone()));
    }
    ids.sort();
    ids.dedup();
    ids.retain(|id| id != me);
    ids
}
