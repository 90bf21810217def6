//! The operator's commands that start work on running nodes and follow it to its end:
//! `cairn repair`, `cairn scrub` and `cairn drain`. Each starts, prints a progress line per
//! poll through the caller's `say`, and ends with an [`Outcome`]: what happened, in a line,
//! and the exit code it deserves (0 done and clean; 1 done but something is wrong, or not
//! done in time).

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_core::layout::NodeSpec;
use cairn_core::layout_edit;
use cairn_core::membership::PeerState;
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_core::status::NodeStatus;

use crate::admin::{Admin, AdminError};
use crate::clock;
use crate::limits::STATUS_POLL_MS;

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: u8,
    pub summary: String,
}

impl Outcome {
    fn done(summary: String) -> Outcome {
        Outcome {
            exit_code: 0,
            summary,
        }
    }

    fn failed(summary: String) -> Outcome {
        Outcome {
            exit_code: 1,
            summary,
        }
    }
}

/// `cairn repair`: anti-entropy with every peer now on the chosen nodes (all by default), then
/// waits until each has compared with every peer that is up and made every copy it found
/// missing. Clean (0) when no blob is left under-replicated; 1 when some are (a node is down),
/// with who they wait for, or when `timeout` passed first.
pub async fn repair(
    admin: &mut Admin,
    node: Option<&str>,
    timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, AdminError> {
    admin.current_layout().await?;
    let targets = admin.targets(node)?;
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    for t in &targets {
        match admin.ask(t, &PeerMsg::RepairNow).await {
            Ok(PeerReply::RepairStarted { started_ms }) => {
                started.insert(t.id.clone(), started_ms);
            }
            Ok(other) => say(&format!("{}: unexpected answer {other:?}", t.id)),
            Err(e) => say(&format!("{}: not started: {e}", t.id)),
        }
    }
    if started.is_empty() {
        return Ok(Outcome::failed("no node started a repair".into()));
    }
    let began = clock::now();
    loop {
        let mut pending = Vec::new();
        let mut under = 0;
        let mut waiting_for: Vec<String> = Vec::new();
        for t in targets.iter().filter(|t| started.contains_key(&t.id)) {
            let since = started[&t.id];
            match admin.status_of(t).await {
                Ok(s) => {
                    // Every peer of the layout that is not down must have compared since
                    // (one not heard from yet is waited for: it is up or down soon).
                    let unsynced = s
                        .peers
                        .iter()
                        .filter(|p| admin.layout.node_index(&p.id).is_some())
                        .filter(|p| p.state != PeerState::Down)
                        .filter(|p| p.synced_since_ms.is_none_or(|at| at < since))
                        .count();
                    let copies = s.transfers_queued + s.transfers_in_flight;
                    if unsynced > 0 || copies > 0 {
                        pending.push(format!(
                            "{}: {unsynced} peers to compare, {copies} copies to make",
                            t.id
                        ));
                    }
                    under += s.repair.under_replicated_blobs;
                    waiting_for.extend(s.repair.waiting_for.iter().cloned());
                }
                Err(e) => pending.push(format!("{}: no answer ({e})", t.id)),
            }
        }
        waiting_for.sort();
        waiting_for.dedup();
        if pending.is_empty() {
            let secs = clock::since(began).as_secs();
            return Ok(if under == 0 {
                Outcome::done(format!(
                    "repair done in {secs} s: every blob has all its copies"
                ))
            } else if waiting_for.is_empty() {
                Outcome::failed(format!(
                    "repair done in {secs} s, but {under} blobs still lack copies (hints not yet delivered)"
                ))
            } else {
                Outcome::failed(format!(
                    "repair done in {secs} s, but {under} blobs lack copies on {} (down): they are \
                     made when it returns, or remove it from the layout",
                    waiting_for.join(", ")
                ))
            });
        }
        say(&pending.join("; "));
        if clock::since(began) >= timeout {
            return Ok(Outcome::failed(format!(
                "repair not done after {} s: {}",
                timeout.as_secs(),
                pending.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
    }
}

/// `cairn scrub`: a scrub pass now on the chosen nodes (all by default; a node whose scrub is
/// off runs one pass at `bytes_per_sec`), followed until each has finished a pass. Clean (0)
/// when no corrupt copy was found; 1 when some were (they are repaired from replicas, but a
/// disk that corrupts data needs looking at), or when `timeout` passed first.
pub async fn scrub(
    admin: &mut Admin,
    node: Option<&str>,
    bytes_per_sec: u64,
    timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, AdminError> {
    admin.current_layout().await?;
    let targets = admin.targets(node)?;
    // Where each node stood before: passes completed and corrupt copies found.
    let mut before: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in &targets {
        let status = match admin.status_of(t).await {
            Ok(s) => s,
            Err(e) => {
                say(&format!("{}: not started: {e}", t.id));
                continue;
            }
        };
        match admin.ask(t, &PeerMsg::ScrubNow { bytes_per_sec }).await {
            // A pass already under way counts too: the command waits for its end.
            Ok(PeerReply::ScrubStarted { .. }) => {
                before.insert(
                    t.id.clone(),
                    (status.scrub.passes_completed, status.scrub.corrupt_found),
                );
            }
            Ok(other) => say(&format!("{}: unexpected answer {other:?}", t.id)),
            Err(e) => say(&format!("{}: not started: {e}", t.id)),
        }
    }
    if before.is_empty() {
        return Ok(Outcome::failed("no node started a scrub".into()));
    }
    let began = clock::now();
    loop {
        let mut pending = Vec::new();
        let mut verified = 0;
        let mut corrupt = 0;
        for t in targets.iter().filter(|t| before.contains_key(&t.id)) {
            let (passes, found) = before[&t.id];
            match admin.status_of(t).await {
                Ok(s) => {
                    corrupt += s.scrub.corrupt_found.saturating_sub(found);
                    verified += s.scrub.verified_blobs;
                    if s.scrub.passes_completed <= passes {
                        pending.push(format!("{}: {}%", t.id, s.scrub.pass_percent));
                    }
                }
                Err(e) => pending.push(format!("{}: no answer ({e})", t.id)),
            }
        }
        let secs = clock::since(began).as_secs();
        if pending.is_empty() {
            return Ok(if corrupt == 0 {
                Outcome::done(format!(
                    "scrub done in {secs} s on {} nodes: no corrupt copy",
                    before.len()
                ))
            } else {
                Outcome::failed(format!(
                    "scrub done in {secs} s on {} nodes: {corrupt} corrupt copies found and \
                     repaired from replicas; check the disks that held them (`cairn status`)",
                    before.len()
                ))
            });
        }
        say(&format!(
            "scrubbing: {} ({verified} blobs verified, {corrupt} corrupt)",
            pending.join(", ")
        ));
        if clock::since(began) >= timeout {
            return Ok(Outcome::failed(format!(
                "scrub not done after {} s: {}",
                timeout.as_secs(),
                pending.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
    }
}

/// `cairn drain ID`: takes the node out of the layout (if it still is in it) and waits until
/// it has handed everything to its new owners and holds nothing, then says it can be stopped.
/// 1 when `timeout` passed first, or the node stopped answering before it was empty.
pub async fn drain(
    admin: &mut Admin,
    id: &str,
    timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, AdminError> {
    let current = admin.current_layout().await?;
    let node: NodeSpec = admin
        .targets(Some(id))?
        .into_iter()
        .next()
        .expect("targets names the node or fails");
    if current.node_index(id).is_some() {
        let next = layout_edit::remove_node(&current, id)?;
        for said in admin.apply(&next).await? {
            say(&format!("  {said}"));
        }
        say(&format!(
            "layout version {}: {id} removed; it hands off what it holds",
            next.version
        ));
    }
    let began = clock::now();
    loop {
        match admin.status_of(&node).await {
            Ok(s) if s.drained => {
                return Ok(Outcome::done(format!(
                    "{id} holds nothing after {} s: it can be stopped, and its data directory deleted",
                    clock::since(began).as_secs()
                )));
            }
            Ok(s) => say(&drain_line(id, &s)),
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "{id} stopped answering before it was empty ({e}); its copies are restored \
                     from the other replicas by anti-entropy (`cairn repair`)"
                )));
            }
        }
        if clock::since(began) >= timeout {
            return Ok(Outcome::failed(format!(
                "{id} still holds data after {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
    }
}

fn drain_line(id: &str, s: &NodeStatus) -> String {
    format!(
        "{id}: {} blobs, {} bytes of segments, {} bytes to hand off, {} copies pending, {} hints",
        s.report.blob_count,
        s.space.segment_files_bytes,
        s.report.misplaced_bytes,
        s.transfers_queued + s.transfers_in_flight,
        s.hints_pending
    )
}
