//! The IO side of self-healing: drives `Membership`, `Healer` and `Scrubber` (all
//! `cairn_core`) with the wall clock, QUIC and the engine. The decisions are theirs; this
//! module only carries them out.
//!
//! One task ([`heal_loop`]) ticks the state machines and runs their actions; messages and
//! copies run in their own tasks and report back through the node's heal channel
//! (`state::HealEvent`), so the state machines are only ever touched under their locks and
//! never across an `await`. [`status`] is what a node says of itself.

pub mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_core::heal::{Action, Direction, Entry, HealMsg};
use cairn_core::membership::{MemberEvent, NodeReport, PeerState};
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_engine::Hash;
use tokio::sync::mpsc;

use crate::clock;
use crate::limits::{ALIVE_WRITE_INTERVAL_MS, HEAL_TICK_MS_MAX, TRANSFER_TIMEOUT_MS};
use crate::local::files;
use crate::net::copy::{self, CopyError};
use crate::net::peer::{call_peer, find_node};
use crate::replica::{self, is_corrupt};
use crate::state::{HealEvent, State};

/// Ticks the state machines and carries out their actions, until the node stops.
pub(crate) async fn heal_loop(state: Arc<State>, mut events: mpsc::UnboundedReceiver<HealEvent>) {
    let mut alive_written_ms = 0;
    let mut retire_failing = false;
    loop {
        let now = clock::wall_ms();
        if now.saturating_sub(alive_written_ms) >= ALIVE_WRITE_INTERVAL_MS {
            alive_written_ms = now;
            let cursor = state.healing.scrubber.lock().cursor();
            if let Err(e) = files::save_alive(&state.data_dir, now, cursor) {
                tracing::debug!(error = %e, "cannot write down that this node is alive");
            }
        }
        let repairs_total = state.healing.healer.lock().progress().copies_made
            + state.healing.hints_delivered.load(Ordering::Relaxed);
        state.healing.repairs.lock().sample(now, repairs_total);
        let member_events = state.healing.membership.lock().tick(now);
        handle_member_events(&state, member_events);
        let actions = {
            let membership = state.healing.membership.lock();
            let up = |p: &str| membership.is_up(p);
            state.healing.healer.lock().tick(now, &state.catalog, &up)
        };
        execute(&state, actions).await;
        scrub_step(&state, now).await;
        retire_previous_when_settled(&state, &mut retire_failing);
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

/// Forgets the previous layout once every node says its copies are where the current layout
/// places them (`Membership::layout_settled`).
fn retire_previous_when_settled(state: &Arc<State>, failing: &mut bool) {
    let routing = state.routing();
    let Some(previous) = &routing.previous else {
        return;
    };
    let previous_only = previous
        .layout
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .filter(|id| *id != state.id && routing.layout.node_index(id).is_none());
    let self_settled = status::report(state).settled;
    let over = state.healing.membership.lock().layout_settled(
        &state.id,
        &routing.layout,
        previous_only,
        self_settled,
    );
    if !over {
        return;
    }
    match state.retire_previous() {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(error = %e, "cannot forget the previous layout; retrying");
        }
        Err(_) => {}
    }
}

async fn handle_event(state: &Arc<State>, event: HealEvent) {
    let now = clock::wall_ms();
    let actions = match event {
        HealEvent::Reply { from, msg } => {
            state
                .healing
                .healer
                .lock()
                .on_message(now, &from, msg, &state.catalog)
        }
        HealEvent::TransferDone { id, ok } => {
            state
                .healing
                .healer
                .lock()
                .on_transfer_done(now, id, ok, &state.catalog)
        }
        HealEvent::PeerUp { peer } => {
            state.healing.healer.lock().on_peer_up(now, &peer);
            state.hints.lock().queue().wake(&peer, state.now_ms());
            state.hint_wake.notify_one();
            Vec::new()
        }
        HealEvent::Corrupt { hash } => {
            let membership = state.healing.membership.lock();
            let up = |p: &str| membership.is_up(p);
            let entry = Entry::live(hash, 0, 0);
            state.healing.healer.lock().on_corrupt(now, entry, &up);
            Vec::new()
        }
        HealEvent::Wake => Vec::new(),
    };
    execute(state, actions).await;
}

fn handle_member_events(state: &Arc<State>, events: Vec<MemberEvent>) {
    for event in events {
        match event {
            MemberEvent::SendHeartbeat { to } => {
                let state = state.clone();
                crate::task::spawn(async move {
                    let msg = PeerMsg::Heartbeat {
                        from: state.id.clone(),
                        report: status::report(&state),
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
                match to {
                    PeerState::Down => tracing::warn!(%peer, "peer down"),
                    PeerState::Up if from == PeerState::Down => {
                        tracing::info!(%peer, "peer back up")
                    }
                    _ => tracing::debug!(%peer, ?from, ?to, "peer state changed"),
                }
                if to == PeerState::Up {
                    let _ = state.healing.events.send(HealEvent::PeerUp { peer });
                }
            }
            MemberEvent::NewerLayout { peer, version } => {
                let state = state.clone();
                crate::task::spawn(async move {
                    match call_peer(&state, &peer, &PeerMsg::FetchLayouts).await {
                        Ok(PeerReply::Layouts { layout, previous }) => {
                            let s = state.clone();
                            let adopted =
                                crate::task::spawn_blocking(move || s.adopt(layout, previous))
                                    .await;
                            if let Ok(Err(e)) = adopted {
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

/// Makes anti-entropy with every other node of the layout due now (`cairn repair`); returns
/// when, on this node's clock, so that the caller can tell sessions that began after it.
pub(crate) fn repair_now(state: &Arc<State>) -> u64 {
    let now = clock::wall_ms();
    let routing = state.routing();
    {
        let mut healer = state.healing.healer.lock();
        for node in routing.layout.nodes.iter().filter(|n| n.id != state.id) {
            healer.compare_now(now, &node.id);
        }
    }
    tracing::info!("repair asked for: comparing with every peer now");
    state.healing.wake();
    now
}

/// Starts a scrub pass now (`cairn scrub`); says whether one was under way already.
pub(crate) fn scrub_now(state: &Arc<State>, bytes_per_sec: u64) -> bool {
    let already = state
        .healing
        .scrubber
        .lock()
        .start_now(clock::wall_ms(), bytes_per_sec.max(1));
    tracing::info!(already, "scrub asked for");
    state.healing.wake();
    already
}

/// A heartbeat from a peer: the failure detector hears it, and the answer carries this node's
/// layout version (a sender with a newer layout then offers it).
pub(crate) fn on_heartbeat(state: &Arc<State>, from: &str, report: NodeReport) -> PeerReply {
    // The peer is alive: requests to it need not wait out an earlier failure's pause.
    state.pool.clear_backoff(from);
    let now = clock::wall_ms();
    let events = state
        .healing
        .membership
        .lock()
        .on_heartbeat(now, from, report);
    handle_member_events(state, events);
    PeerReply::HeartbeatAck {
        layout_version: state.routing().layout.version,
    }
}

/// A healer's message from a peer: the reply to it is the answer; the other actions
/// (tombstones to apply) are carried out before it is sent.
pub(crate) async fn on_heal_message(state: &Arc<State>, from: &str, msg: HealMsg) -> PeerReply {
    let now = clock::wall_ms();
    let actions = state
        .healing
        .healer
        .lock()
        .on_message(now, from, msg, &state.catalog);
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

/// Carries out actions in order.
async fn execute(state: &Arc<State>, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Send { to, msg } => {
                let state = state.clone();
                crate::task::spawn(async move {
                    let call = PeerMsg::Heal {
                        from: state.id.clone(),
                        msg,
                    };
                    if let Ok(PeerReply::Heal { msg: Some(msg) }) =
                        call_peer(&state, &to, &call).await
                    {
                        let _ = state
                            .healing
                            .events
                            .send(HealEvent::Reply { from: to, msg });
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
                crate::task::spawn(async move {
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
                    let _ = state
                        .healing
                        .events
                        .send(HealEvent::TransferDone { id, ok });
                });
            }
            Action::ApplyTombstone { entry } => {
                let s = state.clone();
                let r =
                    crate::task::spawn_blocking(move || replica::apply_tombstone(&s, entry)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot apply a tombstone");
                }
            }
            Action::DropLocal { hash } => {
                let s = state.clone();
                let r = crate::task::spawn_blocking(move || replica::drop_local(&s, &hash)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot drop a handed-off copy");
                }
            }
            Action::ForgetVersion { entry } => {
                let s = state.clone();
                let r =
                    crate::task::spawn_blocking(move || replica::forget_version(&s, &entry)).await;
                if let Ok(Err(e)) = r {
                    tracing::debug!(error = %e, "cannot forget a version");
                }
            }
        }
    }
}

/// One blob copy between this node and a peer.
async fn transfer(
    state: &Arc<State>,
    peer: &str,
    direction: Direction,
    entry: Entry,
) -> Result<(), CopyError> {
    let routing = state.routing();
    let node = find_node(&routing, peer).ok_or(CopyError::NotInLayout {
        node: peer.to_string(),
    })?;
    let hash = Hash::from_bytes(entry.hash);
    let copied = match direction {
        Direction::Push => {
            let blob = match state.store.get(&hash) {
                Ok(Some(blob)) => blob,
                Ok(None) => return Err(CopyError::Gone),
                Err(e) => {
                    if is_corrupt(&e) {
                        state.noticed_corrupt(hash);
                    }
                    return Err(CopyError::Local(e.into()));
                }
            };
            copy::push_copy(state, &routing, &node, hash, &blob).await?;
            blob.len() as u64
        }
        Direction::Fetch => copy::fetch_copy(state, &routing, &node, hash, entry.version).await?,
    };
    state
        .healing
        .copied_bytes
        .fetch_add(copied, Ordering::Relaxed);
    Ok(())
}

/// One scrub step: verify what the scrubber hands out; fetch a good copy of anything corrupt.
async fn scrub_step(state: &Arc<State>, now: u64) {
    let batch = state.healing.scrubber.lock().step(now, &state.catalog);
    for entry in batch {
        let s = state.clone();
        let result =
            crate::task::spawn_blocking(move || s.store.verify(&Hash::from_bytes(entry.hash)))
                .await;
        if let Ok(Err(e)) = result
            && is_corrupt(&e)
        {
            state
                .healing
                .scrub_corrupt_found
                .fetch_add(1, Ordering::Relaxed);
            state.noticed_corrupt(Hash::from_bytes(entry.hash));
        }
    }
    state.healing.scrubber.lock().checked();
}
