//! The IO side of self-healing: drives [`Membership`], [`Healer`] and [`Scrubber`] with the
//! wall clock, QUIC and the engine. The decisions are theirs; this file only carries them out.
//!
//! One task (`heal_loop`) ticks the state machines and runs their actions; messages and copies
//! run in their own tasks and report back through a channel, so the state machines are only
//! ever touched under their locks and never across an `await`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_client::wire::{Op, Request, Response};
use cairn_client::{Layout, NodeSpec, Routing};
use cairn_engine::{Error as EngineError, Hash};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::heal::{Action, Catalog, Direction, Entry, HealMsg, Healer, Scrubber, Verdict, compare};
use crate::membership::{MemberEvent, Membership, NodeReport};
use crate::peer::{self, NodeStatus, PeerMsg, PeerReply, PeerStatus};
use crate::server::State;

/// Longest pause of the heal loop between two ticks.
pub const HEAL_TICK_MS_MAX: u64 = 100;

/// Longest a node-protocol call (a heartbeat, an anti-entropy request) may take.
pub const PEER_CALL_TIMEOUT_MS: u64 = 10_000;

/// Longest a blob copy may take.
pub const TRANSFER_TIMEOUT_MS: u64 = 300_000;

/// How often a node writes down that it is alive, and where its scrub stands.
pub const ALIVE_WRITE_INTERVAL_MS: u64 = 10_000;

/// Milliseconds since the Unix epoch: the clock versions and the healer run on.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What tasks report back to the heal loop.
pub(crate) enum Event {
    Reply {
        from: String,
        msg: HealMsg,
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

/// The healing state of a node.
pub(crate) struct Healing {
    pub membership: Mutex<Membership>,
    pub healer: Mutex<Healer>,
    pub scrubber: Mutex<Scrubber>,
    pub events: mpsc::UnboundedSender<Event>,
    /// Corrupt copies found here by any read, and by the scrub alone.
    pub corrupt_found: AtomicU64,
    pub scrub_corrupt_found: AtomicU64,
    /// Blob bytes copied to or from peers by transfers that succeeded.
    pub copied_bytes: AtomicU64,
}

fn cursor_path(state: &State) -> PathBuf {
    state.data_dir.join("scrub.cursor")
}

fn alive_path(state: &State) -> PathBuf {
    state.data_dir.join("alive.ms")
}

/// The scrub cursor left by the last run.
pub(crate) fn load_scrub_cursor(data_dir: &std::path::Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(data_dir.join("scrub.cursor")).ok()?;
    bytes.try_into().ok()
}

/// When this node last wrote down that it was alive (`None`: never).
pub(crate) fn load_last_alive_ms(data_dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir.join("alive.ms")).ok()?;
    text.trim().parse().ok()
}

/// Bytes the file system holding `path` has free for an unprivileged writer.
pub fn fs_available_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What this node says about itself in heartbeats.
pub(crate) fn report(state: &State) -> NodeReport {
    let stats = state.store.stats();
    let progress = state.healing.healer.lock().progress();
    NodeReport {
        layout_version: state.routing().layout.version,
        blob_count: stats.blob_count,
        used_bytes: stats.used_bytes,
        free_bytes: stats
            .free_bytes
            .min(fs_available_bytes(&state.data_dir).unwrap_or(u64::MAX)),
        misplaced_bytes: progress.misplaced_bytes,
        moved_bytes: progress.moved_bytes,
    }
}

pub(crate) fn status(state: &State) -> NodeStatus {
    let now = wall_ms();
    let progress = state.healing.healer.lock().progress();
    let peers = state
        .healing
        .membership
        .lock()
        .view()
        .map(|v| PeerStatus {
            id: v.id.clone(),
            state: v.state,
            silent_ms: v.heard_ms.map(|h| now.saturating_sub(h)),
            report: v.report.clone(),
        })
        .collect();
    NodeStatus {
        id: state.id.clone(),
        report: report(state),
        peers,
        hints_pending: state.hints.lock().pending() as u64,
        tombstones: state.versions.tombstone_count() as u64,
        transfers_queued: progress.transfers_queued as u64,
        transfers_in_flight: progress.transfers_in_flight as u64,
        sessions_completed: progress.sessions_completed,
        scrub_verified_blobs: state.healing.scrubber.lock().verified_blobs,
        scrub_corrupt_found: state.healing.scrub_corrupt_found.load(Ordering::Relaxed),
        corrupt_found: state.healing.corrupt_found.load(Ordering::Relaxed),
    }
}

/// Ticks the state machines and carries out their actions, until the node stops.
pub(crate) async fn heal_loop(state: Arc<State>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut alive_written_ms = 0;
    loop {
        let now = wall_ms();
        if now.saturating_sub(alive_written_ms) >= ALIVE_WRITE_INTERVAL_MS {
            alive_written_ms = now;
            let _ = std::fs::write(alive_path(&state), now.to_string());
            if let Some(c) = state.healing.scrubber.lock().cursor() {
                let _ = std::fs::write(cursor_path(&state), c);
            }
        }
        let member_events = state.healing.membership.lock().tick(now);
        handle_member_events(&state, member_events);
        let actions = {
            let membership = state.healing.membership.lock();
            let up = |p: &str| membership.is_up(p);
            state.healing.healer.lock().tick(now, &state.catalog, &up)
        };
        execute(&state, actions).await;
        scrub_step(&state, now).await;
        let wake = state.healing.healer.lock().next_wake_ms(now);
        let pause = wake.saturating_sub(now).clamp(1, HEAL_TICK_MS_MAX);
        let sleep = tokio::time::sleep(Duration::from_millis(pause));
        tokio::pin!(sleep);
        tokio::select! {
            _ = &mut sleep => {}
            event = events.recv() => {
                let Some(event) = event else { return };
                handle_event(&state, event).await;
                // Take whatever else is waiting before ticking again.
                while let Ok(event) = events.try_recv() {
                    handle_event(&state, event).await;
                }
            }
        }
    }
}

async fn handle_event(state: &Arc<State>, event: Event) {
    let now = wall_ms();
    let actions = match event {
        Event::Reply { from, msg } => {
            state
                .healing
                .healer
                .lock()
                .on_message(now, &from, msg, &state.catalog)
        }
        Event::TransferDone { id, ok } => {
            state
                .healing
                .healer
                .lock()
                .on_transfer_done(now, id, ok, &state.catalog)
        }
        Event::PeerUp { peer } => {
            state.healing.healer.lock().on_peer_up(now, &peer);
            state.hints.lock().queue().wake(&peer, state.now_ms());
            state.hint_wake.notify_one();
            Vec::new()
        }
        Event::Corrupt { hash } => {
            let membership = state.healing.membership.lock();
            let up = |p: &str| membership.is_up(p);
            let entry = Entry::live(hash, 0, 0);
            state.healing.healer.lock().on_corrupt(now, entry, &up);
            Vec::new()
        }
        Event::Wake => Vec::new(),
    };
    execute(state, actions).await;
}

fn handle_member_events(state: &Arc<State>, events: Vec<MemberEvent>) {
    for event in events {
        match event {
            MemberEvent::SendHeartbeat { to } => {
                let state = state.clone();
                tokio::spawn(async move {
                    let msg = PeerMsg::Heartbeat {
                        from: state.id.clone(),
                        report: report(&state),
                    };
                    let reply = call_peer(&state, &to, &msg).await;
                    let routing = state.routing();
                    if let Ok(PeerReply::HeartbeatAck { layout_version }) = reply
                        && layout_version < routing.layout.version
                    {
                        let offer = PeerMsg::ApplyLayout {
                            layout: routing.layout.clone(),
                        };
                        let _ = call_peer(&state, &to, &offer).await;
                    }
                });
            }
            MemberEvent::StateChanged { peer, from, to } => {
                tracing::info!(%peer, ?from, ?to, "peer state changed");
                if to == crate::membership::PeerState::Up {
                    let _ = state.healing.events.send(Event::PeerUp { peer });
                }
            }
            MemberEvent::NewerLayout { peer, version } => {
                let state = state.clone();
                tokio::spawn(async move {
                    match call_peer(&state, &peer, &PeerMsg::FetchLayouts).await {
                        Ok(PeerReply::Layouts { layout, previous }) => {
                            if let Err(e) = state.adopt(layout, previous) {
                                tracing::debug!(%peer, version, error = %e, "layout not adopted");
                            }
                        }
                        other => tracing::debug!(%peer, ?other, "cannot fetch a newer layout"),
                    }
                });
            }
        }
    }
}

/// A node-protocol call to a peer by id, bounded in time.
pub(crate) async fn call_peer(
    state: &State,
    peer: &str,
    msg: &PeerMsg,
) -> Result<PeerReply, String> {
    let routing = state.routing();
    let node = find_node(&routing, peer).ok_or_else(|| format!("{peer} is not in the layout"))?;
    let wait = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
    let call = peer::call(&state.pool, &node, routing.layout.version, msg);
    match tokio::time::timeout(wait, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{peer}: no answer within {PEER_CALL_TIMEOUT_MS} ms"
        )),
    }
}

/// A node of the current layout, or of the previous one (a node being removed).
fn find_node(routing: &Routing, id: &str) -> Option<NodeSpec> {
    let find = |l: &Layout| l.nodes.iter().find(|n| n.id == id).cloned();
    find(&routing.layout).or_else(|| routing.previous.as_ref().and_then(|p| find(&p.layout)))
}

/// Carries out actions in order.
pub(crate) async fn execute(state: &Arc<State>, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Send { to, msg } => {
                let state = state.clone();
                tokio::spawn(async move {
                    let call = PeerMsg::Heal {
                        from: state.id.clone(),
                        msg,
                    };
                    if let Ok(PeerReply::Heal { msg: Some(msg) }) =
                        call_peer(&state, &to, &call).await
                    {
                        let _ = state.healing.events.send(Event::Reply { from: to, msg });
                    }
                });
            }
            Action::Transfer {
                id,
                peer,
                direction,
                entry,
            } => {
                let state = state.clone();
                tokio::spawn(async move {
                    let wait = Duration::from_millis(TRANSFER_TIMEOUT_MS);
                    let work = transfer(&state, &peer, direction, entry);
                    let ok = match tokio::time::timeout(wait, work).await {
                        Ok(Ok(())) => true,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, ?direction, error = %e, "copy failed");
                            false
                        }
                        Err(_) => false,
                    };
                    let _ = state.healing.events.send(Event::TransferDone { id, ok });
                });
            }
            Action::ApplyTombstone { entry } => {
                let s = state.clone();
                let r = tokio::task::spawn_blocking(move || apply_tombstone(&s, entry)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot apply a tombstone");
                }
            }
            Action::DropLocal { hash } => {
                let s = state.clone();
                let r = tokio::task::spawn_blocking(move || -> Result<(), String> {
                    s.store
                        .delete(&Hash::from_bytes(hash))
                        .map_err(|e| e.to_string())?;
                    s.versions.forget(&hash, None).map_err(|e| e.to_string())?;
                    s.catalog.touch();
                    Ok(())
                })
                .await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot drop a handed-off copy");
                }
            }
            Action::ForgetVersion { entry } => {
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = s.versions.forget(&entry.hash, Some(&entry));
                    s.catalog.touch();
                })
                .await;
            }
        }
    }
}

/// Records a tombstone if it stands over the local entry, then drops the local copy.
pub(crate) fn apply_tombstone(state: &State, tombstone: Entry) -> Result<bool, String> {
    let _guard = state.entry_lock(&tombstone.hash).lock();
    let local = state.catalog.entry(&tombstone.hash);
    if compare(local.as_ref(), Some(&tombstone)) != Verdict::Theirs {
        return Ok(false);
    }
    state
        .versions
        .record(&[tombstone], wall_ms())
        .map_err(|e| e.to_string())?;
    let existed = state
        .store
        .delete(&Hash::from_bytes(tombstone.hash))
        .map_err(|e| e.to_string())?;
    state.catalog.touch();
    Ok(existed)
}

/// One blob copy between this node and a peer.
async fn transfer(
    state: &Arc<State>,
    peer: &str,
    direction: Direction,
    entry: Entry,
) -> Result<(), String> {
    let routing = state.routing();
    let node = find_node(&routing, peer).ok_or_else(|| format!("{peer} is not in the layout"))?;
    let hash = Hash::from_bytes(entry.hash);
    match direction {
        Direction::Push => {
            let blob = match state.store.get(&hash) {
                Ok(Some(blob)) => blob,
                Ok(None) => return Err("the local copy is gone".into()),
                Err(e) => {
                    if let EngineError::Corrupted { .. } | EngineError::Quarantined { .. } = e {
                        noticed_corrupt(state, hash);
                    }
                    return Err(e.to_string());
                }
            };
            crate::server::push_copy(state, &routing, &node, hash, &blob).await?;
            let copied = blob.len() as u64;
            state
                .healing
                .copied_bytes
                .fetch_add(copied, Ordering::Relaxed);
            Ok(())
        }
        Direction::Fetch => {
            let request = Request {
                layout_version: routing.layout.version,
                op: Op::Get {
                    hash: entry.hash,
                    range: None,
                },
            };
            let (response, mut recv) = state
                .pool
                .call(&node, &request)
                .await
                .map_err(|e| e.to_string())?;
            let len = match response {
                Response::Blob { len, .. } => len,
                other => return Err(format!("answered {other:?}")),
            };
            let mut writer = state.store.writer();
            writer.reserve(len);
            let mut left = len;
            while left > 0 {
                let chunk = recv
                    .read_chunk(crate::server::BODY_CHUNK_BYTES_MAX, true)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the peer's stream ended early")?;
                left = left
                    .checked_sub(chunk.bytes.len() as u64)
                    .ok_or("the peer sent too many bytes")?;
                writer.write(&chunk.bytes).map_err(|e| e.to_string())?;
            }
            if writer.hash() != hash {
                return Err(format!("the peer's copy hashes to {}", writer.hash()));
            }
            let s = state.clone();
            tokio::task::spawn_blocking(move || {
                crate::server::commit_copy(&s, writer, hash, entry.version, false)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|(_, e)| e)?;
            state.healing.copied_bytes.fetch_add(len, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// A read found a corrupt copy here: count it and have the healer fetch a good one.
pub(crate) fn noticed_corrupt(state: &State, hash: Hash) {
    tracing::warn!(%hash, "corrupt copy quarantined; fetching a good one");
    state.healing.corrupt_found.fetch_add(1, Ordering::Relaxed);
    state.catalog.touch();
    let _ = state.healing.events.send(Event::Corrupt {
        hash: *hash.as_bytes(),
    });
}

/// One scrub step: verify what the scrubber hands out; fetch a good copy of anything corrupt.
async fn scrub_step(state: &Arc<State>, now: u64) {
    let batch = state.healing.scrubber.lock().step(now, &state.catalog);
    for entry in batch {
        let s = state.clone();
        let result =
            tokio::task::spawn_blocking(move || s.store.verify(&Hash::from_bytes(entry.hash)))
                .await;
        if let Ok(Err(EngineError::Corrupted { .. } | EngineError::Quarantined { .. })) = result {
            state
                .healing
                .scrub_corrupt_found
                .fetch_add(1, Ordering::Relaxed);
            noticed_corrupt(state, Hash::from_bytes(entry.hash));
        }
    }
}

/// Answers a node-protocol message (the server side of `call_peer`).
pub(crate) async fn answer(state: &Arc<State>, msg: PeerMsg) -> PeerReply {
    let now = wall_ms();
    match msg {
        PeerMsg::Heartbeat { from, report } => {
            // The peer is alive: requests to it need not wait out an earlier failure's pause.
            state.pool.clear_backoff(&from);
            let events = state
                .healing
                .membership
                .lock()
                .on_heartbeat(now, &from, report);
            handle_member_events(state, events);
            PeerReply::HeartbeatAck {
                layout_version: state.routing().layout.version,
            }
        }
        PeerMsg::Heal { from, msg } => {
            let actions = state
                .healing
                .healer
                .lock()
                .on_message(now, &from, msg, &state.catalog);
            // The reply to `from` is the answer; the other actions (tombstones to apply) are
            // carried out before it is sent.
            let mut reply = None;
            let mut rest = Vec::new();
            for action in actions {
                match action {
                    Action::Send { to, msg } if to == from && reply.is_none() => reply = Some(msg),
                    other => rest.push(other),
                }
            }
            execute(state, rest).await;
            PeerReply::Heal { msg: reply }
        }
        PeerMsg::Status => PeerReply::Status(Box::new(status(state))),
        PeerMsg::ApplyLayout { layout } => {
            let version = layout.version;
            match state.adopt(layout, None) {
                Ok(()) => PeerReply::LayoutApplied { version },
                Err(e) => PeerReply::Refused {
                    message: e.to_string(),
                },
            }
        }
        PeerMsg::FetchLayouts => {
            let routing = state.routing();
            PeerReply::Layouts {
                layout: routing.layout.clone(),
                previous: routing.previous.as_ref().map(|p| p.layout.clone()),
            }
        }
        PeerMsg::Meta { from: _, msg } => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || crate::meta::cluster::answer(&s, msg)).await {
                Ok(reply) => PeerReply::Meta(reply),
                Err(e) => PeerReply::Refused {
                    message: e.to_string(),
                },
            }
        }
        PeerMsg::GcStart => gc_reply(state, true),
        PeerMsg::GcStatus => gc_reply(state, false),
    }
}

fn gc_reply(state: &Arc<State>, start: bool) -> PeerReply {
    match &state.gc {
        Some(gc) => PeerReply::Gc {
            started: start && gc.start(state),
            status: gc.status(),
        },
        None => PeerReply::Refused {
            message: "the S3 front (and its garbage collector) is off on this node".into(),
        },
    }
}

/// Is this node the lowest-numbered one (by id order in the layout) it sees up? Scheduled
/// work meant for one node runs there.
pub(crate) fn lowest_up_node(state: &State) -> bool {
    let routing = state.routing();
    let membership = state.healing.membership.lock();
    routing
        .layout
        .nodes
        .iter()
        .find(|n| n.id == state.id || membership.is_up(&n.id))
        .is_some_and(|n| n.id == state.id)
}

/// The version a live entry of `hash` must carry to stand: for a fresh put, above any local
/// tombstone; for a copy, its own.
pub(crate) fn put_version(
    state: &State,
    hash: &[u8; 32],
    version: u64,
    fresh: bool,
) -> Option<u64> {
    let tombstone = state.versions.tombstone(hash);
    match tombstone {
        Some(t) if fresh => Some(version.max(t.version + 1)),
        Some(t) => {
            let incoming = Entry::live(*hash, version, 0);
            (compare(Some(&incoming), Some(&t)) == Verdict::Ours).then_some(version)
        }
        None => Some(version),
    }
}

impl Healing {
    pub(crate) fn wake(&self) {
        let _ = self.events.send(Event::Wake);
    }
}
