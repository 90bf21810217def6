//! A client's put and delete, coordinated by this node: the IO around
//! `cairn_core::coordinator`. A put streams the body to every replica as it arrives (and into
//! this node's engine, if it is one), reports each replica's progress to a [`PutCoordinator`]
//! and carries out what it decides: commit, abort, hint, answer. A delete sends the tombstone to
//! every replica and does the same with a [`DeleteCoordinator`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::ClientError;
use cairn_client::framing::{self, FramingError};
use cairn_client::pool::read_response;
use cairn_core::Routing;
use cairn_core::coordinator::{DeleteAction, DeleteCoordinator, PutAction, PutCoordinator};
use cairn_core::hints::HintKind;
use cairn_core::layout::NodeSpec;
use cairn_core::limits::REQUEST_HEADER_BYTES_MAX;
use cairn_core::meta::Entry;
use cairn_core::wire::{self, Decision, DeleteRole, ErrorCode, Op, PutRole, Request, Response};
use cairn_engine::{BlobStat, BlobWriter, Hash};
use tokio::sync::{mpsc, oneshot};

use super::body::BodyReader;
use super::{fail, respond};
use crate::clock;
use crate::limits::{
    BODY_STALL_TIMEOUT_MS, FORWARD_PENDING_BYTES_MAX, FORWARD_QUEUE_CHUNKS,
    REPLICA_RESPONSE_TIMEOUT_MS,
};
use crate::meta::cluster::{self as meta, MetaError};
use crate::meta::marks;
use crate::replica::{self, LocalError};
use crate::state::State;

/// What one replica reported to the coordinator.
#[derive(Debug)]
enum Event {
    /// With the version of the replica's tombstone of the hash (0: none).
    Prepared(u64),
    Stored,
    Failed,
}

/// A put from a client: store locally if this node is a replica, stream the bytes to the other
/// replicas as they arrive, and acknowledge at write quorum. Replicas that end after the answer
/// are followed in the background (a late failure still gets its hint).
pub(super) async fn put(
    state: &Arc<State>,
    routing: &Routing,
    hash: Hash,
    len: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let replicas: Vec<NodeSpec> = routing.replicas(&hash).into_iter().cloned().collect();
    let local = replicas.iter().position(|n| n.id == state.id);
    let existed =
        local.is_some() && matches!(state.store.stat(&hash), Ok(BlobStat::Present { .. }));
    let version = clock::wall_ms();
    let (coordinator, first) =
        PutCoordinator::new(replicas.len(), routing.layout.write_quorum, local, version);

    // One link per remote replica, fed the body as it arrives.
    let (events, reports) = mpsc::unbounded_channel::<(usize, Event)>();
    let mut feeds: Vec<mpsc::Sender<Bytes>> = Vec::with_capacity(replicas.len());
    let mut decisions: Vec<Option<oneshot::Sender<Decision>>> = Vec::with_capacity(replicas.len());
    for (i, node) in replicas.iter().enumerate() {
        if Some(i) == local {
            decisions.push(None);
            continue;
        }
        let (feed, feed_rx) = mpsc::channel::<Bytes>(FORWARD_QUEUE_CHUNKS);
        let (decide, decision) = oneshot::channel::<Decision>();
        let link = ReplicaLink {
            state: state.clone(),
            node: node.clone(),
            request: Request {
                layout_version: routing.layout.version,
                op: Op::Put {
                    hash: *hash.as_bytes(),
                    len,
                    role: PutRole::Replica,
                },
            },
            len,
        };
        crate::task::spawn(link.run(feed_rx, decision, events.clone(), i));
        feeds.push(feed);
        decisions.push(Some(decide));
    }
    drop(events);
    let links_open = !feeds.is_empty();
    let opened = match local {
        Some(_) => Some(replica::open_writer(&state.store, hash, len).await),
        None => None,
    };
    let (writer, local_error) = match opened {
        None => (None, None),
        Some(Ok(w)) => (Some(w), None),
        Some(Err(e)) => {
            let e = LocalError::from(e);
            replica::note_if_full(state, &e);
            (None, Some(e))
        }
    };
    let mut run = PutRun {
        state: state.clone(),
        replicas,
        local,
        hash,
        write_quorum: routing.layout.write_quorum,
        coordinator,
        decisions,
        writer,
        local_commit: None,
        local_error,
        reports,
        links_open,
    };

    let mut hasher = local.is_none().then(blake3::Hasher::new);
    let mut body = BodyReader::new(&mut recv, len);
    let received = loop {
        let chunk = match body.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Some(w) = &mut run.writer
            && let Err(e) = w.write(&chunk)
        {
            let e = LocalError::from(e);
            replica::note_if_full(state, &e);
            run.local_error = Some(e);
            run.writer = None;
        }
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        let mut i = 0;
        while i < feeds.len() {
            if feeds[i].send(chunk.clone()).await.is_err() {
                feeds.swap_remove(i);
            } else {
                i += 1;
            }
        }
    };
    // Dropping the feeds before `len` bytes makes every replica link reset its stream.
    drop(feeds);
    if let Err(e) = received {
        let actions = run.coordinator.cancel();
        run.carry_out(actions);
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        return fail(&mut send, e.code(), e.to_string()).await;
    }
    // The body's hash, as this node's copy or its hasher saw it.
    let actual = match (&run.writer, hasher) {
        (Some(w), _) => Some(w.hash()),
        (None, Some(h)) => Some(Hash::from(h.finalize())),
        (None, None) => None,
    };
    if let Some(actual) = actual
        && actual != hash
    {
        let actions = run.coordinator.cancel();
        run.carry_out(actions);
        let message = format!("body hashes to {actual}, not {hash}");
        return fail(&mut send, ErrorCode::HashMismatch, message).await;
    }
    if let Some(e) = &run.local_error {
        tracing::warn!(%hash, error = %e, "local copy failed");
    }
    let mut actions = first;
    if let Some(l) = local {
        actions.extend(match run.writer {
            Some(_) => run
                .coordinator
                .on_prepared(l, replica::tombstone_version(state, &hash)),
            None => run.coordinator.on_failed(l),
        });
    }
    match run.until_answer(actions).await {
        Answer::Stored => {
            let stored = Response::Stored {
                hash: *hash.as_bytes(),
                existed,
            };
            respond(&mut send, &stored).await;
        }
        Answer::Failed(message) => fail(&mut send, ErrorCode::QuorumFailed, message).await,
    }
    if !run.coordinator.is_settled() {
        crate::task::spawn(run.until_settled());
    }
}

/// The client's answer to a put, once the coordinator gives it.
enum Answer {
    Stored,
    Failed(String),
}

/// One put in progress: the coordinator and what its decisions act on.
struct PutRun {
    state: Arc<State>,
    replicas: Vec<NodeSpec>,
    local: Option<usize>,
    hash: Hash,
    write_quorum: usize,
    coordinator: PutCoordinator,
    /// Per remote replica, where its link waits for the decision (taken once given).
    decisions: Vec<Option<oneshot::Sender<Decision>>>,
    /// This node's own copy, until it is committed or dropped.
    writer: Option<BlobWriter>,
    /// This node's commit, running off the async threads.
    local_commit: Option<oneshot::Receiver<Result<(), LocalError>>>,
    local_error: Option<LocalError>,
    reports: mpsc::UnboundedReceiver<(usize, Event)>,
    links_open: bool,
}

impl PutRun {
    /// Drives the coordinator until it gives the client's answer.
    async fn until_answer(&mut self, mut actions: Vec<PutAction>) -> Answer {
        loop {
            if let Some(answer) = self.carry_out(actions) {
                return answer;
            }
            assert!(
                !self.coordinator.is_settled(),
                "a settled put gave its answer"
            );
            actions = self.next().await;
        }
    }

    /// Drives the coordinator until every replica has ended.
    async fn until_settled(mut self) {
        while !self.coordinator.is_settled() {
            let actions = self.next().await;
            self.carry_out(actions);
        }
    }

    /// Carries out the coordinator's actions in order: commits and aborts go to the links,
    /// this node's commit runs off the async threads, hints are recorded durably; returns the
    /// client's answer if it is among them (after every hint before it).
    fn carry_out(&mut self, actions: Vec<PutAction>) -> Option<Answer> {
        let mut answer = None;
        for action in actions {
            match action {
                PutAction::Commit {
                    replica: i,
                    version,
                } => match self.decisions[i].take() {
                    Some(d) => {
                        let _ = d.send(Decision::Commit { version });
                    }
                    None => {
                        let w = self.writer.take().expect("the local replica prepared");
                        let (tx, rx) = oneshot::channel();
                        let (s, hash) = (self.state.clone(), self.hash);
                        crate::task::spawn_blocking(move || {
                            let _ = tx.send(replica::commit_copy(&s, w, hash, version));
                        });
                        self.local_commit = Some(rx);
                    }
                },
                PutAction::Abort(i) => match self.decisions[i].take() {
                    Some(d) => {
                        let _ = d.send(Decision::Abort);
                    }
                    None => self.writer = None,
                },
                PutAction::Hint(i) => {
                    self.state
                        .hint(self.hash, &self.replicas[i].id, HintKind::Put)
                }
                PutAction::Acknowledge => answer = Some(Answer::Stored),
                PutAction::Fail => answer = Some(Answer::Failed(self.failure())),
            }
        }
        answer
    }

    /// Why the put failed, for the client.
    fn failure(&self) -> String {
        let failed: Vec<&str> = self
            .coordinator
            .failed()
            .map(|i| self.replicas[i].id.as_str())
            .collect();
        let mut reasons = failed.join(", ");
        if let Some(e) = &self.local_error {
            reasons.push_str(&format!("; {}: {e}", self.state.id));
        }
        format!(
            "fewer than {} of {} replicas could store the blob (failed: {reasons})",
            self.write_quorum,
            self.replicas.len()
        )
    }

    /// Waits for the next report (a replica's, or this node's own commit's) and tells the
    /// coordinator. Every link reports its own failure before it ends, so a closed channel
    /// only means no link is left.
    async fn next(&mut self) -> Vec<PutAction> {
        loop {
            let (replica, event) = tokio::select! {
                event = self.reports.recv(), if self.links_open => match event {
                    Some(event) => event,
                    None => {
                        self.links_open = false;
                        continue;
                    }
                },
                result = async { self.local_commit.as_mut().expect("guarded").await },
                    if self.local_commit.is_some() => {
                    self.local_commit = None;
                    let l = self.local.expect("a local commit has a local replica");
                    match result {
                        Ok(Ok(())) => (l, Event::Stored),
                        Ok(Err(e)) => {
                            tracing::warn!(hash = %self.hash, error = %e, "local commit failed");
                            self.local_error = Some(e);
                            (l, Event::Failed)
                        }
                        Err(_) => (l, Event::Failed),
                    }
                }
                else => {
                    // Nothing left to hear from: whatever has not ended has failed.
                    let silent: Vec<usize> = self.coordinator.unfinished().collect();
                    let actions = silent
                        .into_iter()
                        .flat_map(|i| self.coordinator.on_failed(i))
                        .collect();
                    assert!(
                        self.coordinator.is_settled(),
                        "a put with nothing left to hear from is settled"
                    );
                    return actions;
                }
            };
            return match event {
                Event::Prepared(tombstone_version) => {
                    self.coordinator.on_prepared(replica, tombstone_version)
                }
                Event::Stored => self.coordinator.on_stored(replica),
                Event::Failed => self.coordinator.on_failed(replica),
            };
        }
    }
}

/// Why a replica link failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("replica too slow to connect")]
    SlowToConnect,
    #[error("sending: {0}")]
    Send(#[from] quinn::WriteError),
    #[error("sending: {0}")]
    Frame(#[from] FramingError),
    #[error("replica stalled")]
    Stalled,
    #[error("put abandoned")]
    Abandoned,
    #[error("answered {0:?}")]
    Unexpected(Box<Response>),
    #[error("no answer within {REPLICA_RESPONSE_TIMEOUT_MS} ms")]
    Timeout,
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
        events: mpsc::UnboundedSender<(usize, Event)>,
        i: usize,
    ) {
        if let Err(e) = self.exchange(feed, decision, &events, i).await {
            tracing::info!(node = %self.node.id, error = %e, "replica missed a put");
            let _ = events.send((i, Event::Failed));
        }
    }

    async fn exchange(
        &self,
        mut feed: mpsc::Receiver<Bytes>,
        decision: oneshot::Receiver<Decision>,
        events: &mpsc::UnboundedSender<(usize, Event)>,
        i: usize,
    ) -> Result<(), LinkError> {
        // While the connection opens, keep taking the body (up to a bound) so a slow or dead
        // replica does not hold back the others.
        let open = self.state.pool.open(&self.node, &self.request);
        tokio::pin!(open);
        let mut early = Vec::new();
        let mut early_bytes = 0usize;
        let mut feed_open = true;
        let (mut send, mut recv) = loop {
            tokio::select! {
                opened = &mut open => break opened?,
                chunk = feed.recv(), if feed_open => match chunk {
                    Some(chunk) => {
                        early_bytes += chunk.len();
                        if early_bytes > FORWARD_PENDING_BYTES_MAX {
                            return Err(LinkError::SlowToConnect);
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
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(LinkError::Stalled),
            }
        }
        if sent < self.len {
            let _ = send.reset(wire::STREAM_ABORT_CODE.into());
            return Err(LinkError::Abandoned);
        }
        let tombstone_version = match self.answer(&mut recv).await? {
            Response::Prepared { tombstone_version } => tombstone_version,
            other => return Err(LinkError::Unexpected(Box::new(other))),
        };
        let _ = events.send((i, Event::Prepared(tombstone_version)));
        let decision = decision.await.unwrap_or(Decision::Abort);
        framing::write_frame(&mut send, &decision, REQUEST_HEADER_BYTES_MAX).await?;
        let _ = send.finish();
        if decision == Decision::Abort {
            return Ok(());
        }
        match self.answer(&mut recv).await? {
            Response::Stored { .. } => {
                let _ = events.send((i, Event::Stored));
                Ok(())
            }
            other => Err(LinkError::Unexpected(Box::new(other))),
        }
    }

    async fn answer(&self, recv: &mut quinn::RecvStream) -> Result<Response, LinkError> {
        let wait = Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS);
        match tokio::time::timeout(wait, read_response(&self.node.id, recv)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(LinkError::Timeout),
        }
    }
}

/// A delete from a client: delete on every replica, acknowledge at write quorum, hint the rest.
/// The tombstone's version is the client's if it set one (a conditional delete, standing only
/// where the blob was last written before it), else now.
///
/// A `native` delete (through `/v1/blobs` or a client, not the collector) first lets go of the
/// native API's hold; if the S3 front has marked the blob, its bytes may back an object, so
/// they stay for the collector to judge (`meta::marks`), and the delete is acknowledged.
pub(super) async fn delete(
    state: &Arc<State>,
    routing: &Routing,
    hash: Hash,
    requested_version: u64,
    native: bool,
    mut send: quinn::SendStream,
) {
    // Taken before the mark is read: an S3 put whose mark that read missed writes its chunk
    // after it, so a tombstone of this version does not stand over it.
    let now = clock::wall_ms();
    if native {
        match release_hold(state, &hash).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::debug!(%hash, "native delete of a blob the S3 front marked: kept");
                // Whether there was a blob to delete, as a delete that removed it would say.
                let existed = !matches!(state.cluster_client.head(&hash).await, Ok(None));
                return respond(&mut send, &Response::Deleted { existed }).await;
            }
            Err(e) => {
                let message =
                    format!("the blob's hold and mark could not be read or written: {e}; retry");
                return fail(&mut send, ErrorCode::QuorumFailed, message).await;
            }
        }
    }
    let replicas: Vec<NodeSpec> = routing.replicas(&hash).into_iter().cloned().collect();
    let local = replicas.iter().position(|n| n.id == state.id);
    let version = if requested_version > 0 {
        requested_version
    } else {
        now
    };
    let (mut coordinator, mut actions) =
        DeleteCoordinator::new(replicas.len(), routing.layout.write_quorum, local);
    let (answers, mut outcomes) = mpsc::unbounded_channel::<(usize, Option<bool>)>();
    for (i, node) in replicas.iter().enumerate() {
        if Some(i) == local {
            continue;
        }
        let (state, node, answers) = (state.clone(), node.clone(), answers.clone());
        let request = Request {
            layout_version: routing.layout.version,
            op: Op::Delete {
                hash: *hash.as_bytes(),
                role: DeleteRole::Replica,
                version,
            },
        };
        crate::task::spawn(async move {
            let wait = Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS);
            let result = tokio::time::timeout(wait, state.pool.call(&node, &request)).await;
            let existed = match result {
                Ok(Ok((Response::Deleted { existed }, _))) => Some(existed),
                _ => None,
            };
            let _ = answers.send((i, existed));
        });
    }
    drop(answers);
    if let Some(l) = local {
        let outcome = replica::local_delete(state, hash, version).await;
        actions.extend(match outcome {
            Ok(existed) => coordinator.on_deleted(l, existed),
            Err(e) => {
                tracing::warn!(%hash, error = %e, "local delete failed");
                coordinator.on_failed(l)
            }
        });
    }
    loop {
        for action in actions.drain(..) {
            match action {
                DeleteAction::Hint(i) => state.hint(hash, &replicas[i].id, HintKind::Delete),
                DeleteAction::Acknowledge { existed } => {
                    return respond(&mut send, &Response::Deleted { existed }).await;
                }
                DeleteAction::Fail => {
                    let message = format!(
                        "only {} of {} replicas deleted the blob; retry the delete",
                        coordinator.deleted(),
                        replicas.len()
                    );
                    return fail(&mut send, ErrorCode::QuorumFailed, message).await;
                }
            }
        }
        match outcomes.recv().await {
            Some((i, Some(existed))) => actions = coordinator.on_deleted(i, existed),
            Some((i, None)) => actions = coordinator.on_failed(i),
            None => {
                let silent: Vec<usize> = coordinator.waiting().collect();
                actions = silent
                    .into_iter()
                    .flat_map(|i| coordinator.on_failed(i))
                    .collect();
                assert!(
                    coordinator.verdict().is_some(),
                    "a delete every replica answered has a verdict"
                );
            }
        }
    }
}

/// Removes the native API's hold on `hash`; whether the S3 front marked the blob (so that an
/// object may name it). The release stands only over older holds (a put's hold stamped after
/// it wins, however late it lands). A mark found is written again with a new stamp: the
/// collector then waits a whole grace period from this delete, after which the conditional
/// tombstone stands over every copy the native API wrote, rather than dropping the mark while
/// the copy is still too young and leaving the bytes to nobody. While a layout change moves
/// partitions, the mark is looked for under both layouts.
async fn release_hold(state: &Arc<State>, hash: &Hash) -> Result<bool, MetaError> {
    let release = Entry {
        stamp: meta::stamp(state),
        value: None,
    };
    meta::write_conditional(
        state,
        vec![(marks::blob_hold_key(hash.as_bytes()), release)],
    )
    .await?;
    let key = marks::blob_mark_key(hash.as_bytes());
    let Some(mark) = meta::read_either_layout(state, &key).await? else {
        return Ok(false);
    };
    if mark.value.is_none() {
        return Ok(false);
    }
    let touched = Entry {
        stamp: meta::stamp(state),
        value: mark.value,
    };
    meta::write(state, vec![(key, touched)]).await?;
    Ok(true)
}

/// A put without its bytes (`Op::Refresh` from a client): every replica holding an intact copy
/// takes the put's version. `Stored` once a write quorum did, so the put stands exactly as one
/// that sent the bytes (over deletes before it, and past the collector's grace); `NotFound`
/// otherwise, and the client sends the bytes. Replicas without a copy are left to
/// anti-entropy, as they are after a put that reached only a quorum.
pub(super) async fn refresh(
    state: &Arc<State>,
    routing: &Routing,
    hash: Hash,
    len: u64,
    mut send: quinn::SendStream,
) {
    let replicas: Vec<NodeSpec> = routing.replicas(&hash).into_iter().cloned().collect();
    let version = clock::wall_ms();
    let (answers, mut outcomes) = mpsc::unbounded_channel::<bool>();
    for node in &replicas {
        let (state, node, answers) = (state.clone(), node.clone(), answers.clone());
        let request = Request {
            layout_version: routing.layout.version,
            op: Op::Refresh {
                hash: *hash.as_bytes(),
                len,
                role: PutRole::Replica,
                version,
            },
        };
        crate::task::spawn(async move {
            let held = if node.id == state.id {
                let s = state.clone();
                crate::task::spawn_blocking(move || replica::refresh(&s, hash, len, version))
                    .await
                    .is_ok_and(|r| r.unwrap_or(false))
            } else {
                let wait = Duration::from_millis(REPLICA_RESPONSE_TIMEOUT_MS);
                let result = tokio::time::timeout(wait, state.pool.call(&node, &request)).await;
                matches!(result, Ok(Ok((Response::Stored { .. }, _))))
            };
            let _ = answers.send(held);
        });
    }
    drop(answers);
    let (mut held, mut answered) = (0, 0);
    while let Some(h) = outcomes.recv().await {
        answered += 1;
        held += usize::from(h);
        if held >= routing.layout.write_quorum {
            let response = Response::Stored {
                hash: *hash.as_bytes(),
                existed: true,
            };
            return respond(&mut send, &response).await;
        }
        if answered == replicas.len() {
            break;
        }
    }
    let message = format!(
        "{held} of {} replicas hold the blob intact; send its bytes",
        replicas.len()
    );
    fail(&mut send, ErrorCode::NotFound, message).await
}

/// `Op::Refresh` from a coordinator: take the version if an intact copy is here.
pub(super) async fn refresh_replica(
    state: &Arc<State>,
    hash: Hash,
    len: u64,
    version: u64,
    mut send: quinn::SendStream,
) {
    let s = state.clone();
    let held = crate::task::spawn_blocking(move || replica::refresh(&s, hash, len, version)).await;
    match held {
        Ok(Ok(true)) => {
            let response = Response::Stored {
                hash: *hash.as_bytes(),
                existed: true,
            };
            respond(&mut send, &response).await
        }
        Ok(Ok(false)) => fail(&mut send, ErrorCode::NotFound, "no intact copy here").await,
        Ok(Err(e)) => fail(&mut send, e.code(), e.to_string()).await,
        Err(e) => fail(&mut send, ErrorCode::Internal, e.to_string()).await,
    }
}
