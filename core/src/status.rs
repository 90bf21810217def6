//! What nodes report of themselves and what the `cairn` command makes of it: one node's
//! status ([`NodeStatus`], carried by the node protocol), the cluster view `cairn status` and
//! `GET /v1/cluster` show ([`ClusterStatus`]), where a layout change stands ([`MoveProgress`]),
//! and the garbage collector's progress ([`GcStatus`]). Data and pure functions over it.

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, NodeSpec};
use crate::membership::{NodeReport, PeerState};

/// One node's view of itself and its peers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    /// The software version the node runs.
    pub version: String,
    pub report: NodeReport,
    pub peers: Vec<PeerStatus>,
    pub hints_pending: u64,
    pub tombstones: u64,
    pub transfers_queued: u64,
    pub transfers_in_flight: u64,
    pub sessions_completed: u64,
    /// Corrupt copies found here by any read or by the scrub.
    pub corrupt_found: u64,
    pub space: SpaceStatus,
    /// Why the engine stopped taking writes, if it did.
    pub read_only: Option<String>,
    pub recovery: RecoveryStatus,
    pub repair: RepairStatus,
    pub scrub: ScrubStatus,
    /// The layout before the current one, while the node still routes by it (its moves are
    /// not over).
    pub previous_layout_version: Option<u64>,
    /// Out of the layout and holding nothing: the node may be stopped and its data deleted.
    pub drained: bool,
    /// The S3 front's collector and lifecycle pass on this node (none without an S3 front).
    pub gc: Option<GcStatus>,
}

/// How full a node's disk is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    #[default]
    Ok,
    /// Under the configured share of free space.
    NearlyFull,
    /// Writes fail (or did lately) for lack of space.
    Full,
}

impl DiskState {
    pub fn label(self) -> &'static str {
        match self {
            DiskState::Ok => "ok",
            DiskState::NearlyFull => "nearly full",
            DiskState::Full => "full",
        }
    }
}

/// A node's disk and what compaction does to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceStatus {
    pub disk: DiskState,
    /// Size of the disk (or the engine's capacity, if smaller) and what is free on it.
    pub disk_total_bytes: u64,
    pub free_bytes: u64,
    /// Bytes of segment files, and of the records in them readers can reach, and of the rest.
    pub segment_files_bytes: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    /// What compaction would give back now.
    pub reclaimable_bytes: u64,
    pub compaction_rounds: u64,
    pub compaction_reclaimed_bytes: u64,
    pub compaction_errors: u64,
}

/// What the engine's last open dropped (the cluster's other replicas restore it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    /// Records a hint file listed and recovery could not find.
    pub records_lost: u64,
    /// Segments whose damaged or torn tail was cut off.
    pub torn_tails: u64,
    /// Segments that could not be read at all, and where they were moved.
    pub unreadable_segments: u64,
    pub moved_aside: Vec<String>,
}

impl RecoveryStatus {
    pub fn dropped_anything(&self) -> bool {
        self.records_lost > 0 || self.torn_tails > 0 || self.unreadable_segments > 0
    }
}

/// Blobs with fewer copies than the layout asks, as far as this node's healer knows, and how
/// soon they will have them all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Blobs this node answers for with an owner that is not up, plus writes that missed a
    /// replica that is up (hints held here for it). Summed over the nodes, each blob counts
    /// about once.
    pub under_replicated_blobs: u64,
    /// Owners found not up: their copies wait until they return or leave the layout.
    pub waiting_for: Vec<String>,
    /// Copies made and hints delivered over the last minute.
    pub repairs_per_min: u64,
    /// When every copy that can be made now will be, at the last minute's pace (`None`:
    /// nothing to repair, no progress in the last minute, or only nodes that are down lack
    /// copies).
    pub eta_secs: Option<u64>,
}

/// Where the scrub stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// A pass is under way, and how far it has gone through the hash space.
    pub running: bool,
    pub pass_percent: u8,
    pub passes_completed: u64,
    pub verified_blobs: u64,
    /// Corrupt copies the scrub found (also in `NodeStatus::corrupt_found`).
    pub corrupt_found: u64,
}

impl NodeStatus {
    /// What an operator must know about this node, one line each (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.space.disk {
            DiskState::Ok => {}
            disk => out.push(format!(
                "disk {} ({} of {} bytes free)",
                disk.label(),
                self.space.free_bytes,
                self.space.disk_total_bytes
            )),
        }
        if let Some(why) = &self.read_only {
            out.push(format!("read-only: {why}"));
        }
        if self.recovery.dropped_anything() {
            let r = &self.recovery;
            let mut line = format!(
                "the last open dropped {} records ({} torn tails, {} unreadable segments)",
                r.records_lost, r.torn_tails, r.unreadable_segments
            );
            if !r.moved_aside.is_empty() {
                line.push_str(&format!("; moved aside: {}", r.moved_aside.join(", ")));
            }
            out.push(line);
        }
        if self.repair.under_replicated_blobs > 0 {
            let mut line = format!(
                "{} blobs under-replicated",
                self.repair.under_replicated_blobs
            );
            if !self.repair.waiting_for.is_empty() {
                line.push_str(&format!(
                    ", waiting for {}",
                    self.repair.waiting_for.join(", ")
                ));
            }
            match self.repair.eta_secs {
                Some(eta) => line.push_str(&format!(", repaired in about {eta} s")),
                None if self.repair.waiting_for.is_empty() => {
                    line.push_str(", no repair progress in the last minute")
                }
                None => {}
            }
            out.push(line);
        }
        if self.scrub.corrupt_found > 0 {
            out.push(format!(
                "the scrub found {} corrupt copies (repaired from replicas)",
                self.scrub.corrupt_found
            ));
        }
        if self.drained {
            out.push("out of the layout and empty: it can be stopped".into());
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    pub state: PeerState,
    /// Milliseconds since its last heartbeat (`None`: never heard).
    pub silent_ms: Option<u64>,
    pub report: Option<NodeReport>,
    /// Start (this node's clock) of the last anti-entropy session with the peer that completed.
    pub synced_since_ms: Option<u64>,
}

/// Where a collection stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    pub running: bool,
    /// "marks", "references", "lifecycle", "deleting", or "done".
    pub phase: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub marks_scanned: u64,
    pub candidates: u64,
    pub referenced_blobs: u64,
    /// Candidates looked at in the deleting phase.
    pub examined: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Candidates kept: referred to, or touched again since the collection began.
    pub kept: u64,
    /// Objects the buckets' lifecycle rules expired in this collection.
    pub expired_objects: u64,
    /// Unfinished multipart uploads the lifecycle rules aborted in this collection.
    pub aborted_uploads: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Collections finished since the node started.
    pub runs: u64,
    /// Why the last collection did not start (a layout change still moving data); cleared by
    /// the next collection that runs.
    pub postponed: Option<String>,
    /// When (wall clock) a collection last finished without errors; 0: never since the start.
    pub last_success_ms: u64,
}

/// What `cairn status` prints and `GET /v1/cluster` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub layout_version: u64,
    pub replication_factor: usize,
    pub write_quorum: usize,
    pub zones: usize,
    pub nodes: Vec<NodeLine>,
    /// Under-replicated blobs summed over the nodes that answered.
    pub under_replicated_blobs: u64,
}

/// One node in a [`ClusterStatus`]. Figures are absent for a node that did not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLine {
    pub id: String,
    pub zone: String,
    /// `up`, `suspect`, `down` or `unreachable`: what the answering nodes' failure detectors
    /// say of it, by majority.
    pub state: &'static str,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub blobs: Option<u64>,
    pub misplaced_bytes: Option<u64>,
    pub layout_version: Option<u64>,
    pub hints_pending: Option<u64>,
    pub transfers_pending: Option<u64>,
    pub version: Option<String>,
    pub disk: Option<&'static str>,
    pub live_bytes: Option<u64>,
    pub dead_bytes: Option<u64>,
    pub reclaimable_bytes: Option<u64>,
    pub under_replicated_blobs: Option<u64>,
    pub scrub_percent: Option<u8>,
    /// The collector's last or current run on this node, if it ran here since the node started.
    pub gc: Option<GcStatus>,
    /// What an operator must know about the node (`NodeStatus::problems`).
    pub problems: Vec<String>,
    pub error: Option<String>,
}

impl ClusterStatus {
    pub fn of<E: Display>(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, E>)]) -> Self {
        let mut seen: BTreeMap<&str, Vec<PeerState>> = BTreeMap::new();
        for (_, s) in statuses {
            if let Ok(s) = s {
                for p in &s.peers {
                    seen.entry(p.id.as_str()).or_default().push(p.state);
                }
            }
        }
        let nodes = statuses
            .iter()
            .map(|(node, s)| {
                let views = seen.get(node.id.as_str()).cloned().unwrap_or_default();
                let up = views.iter().filter(|v| **v == PeerState::Up).count();
                let state = match s {
                    Ok(_) if views.is_empty() || up * 2 >= views.len() => "up",
                    Ok(_) => "suspect",
                    Err(_) if views.contains(&PeerState::Down) => "down",
                    Err(_) => "unreachable",
                };
                let ok = s.as_ref().ok();
                NodeLine {
                    id: node.id.clone(),
                    zone: node.zone.clone(),
                    state,
                    used_bytes: ok.map(|s| s.report.used_bytes),
                    free_bytes: ok.map(|s| s.report.free_bytes),
                    blobs: ok.map(|s| s.report.blob_count),
                    misplaced_bytes: ok.map(|s| s.report.misplaced_bytes),
                    layout_version: ok.map(|s| s.report.layout_version),
                    hints_pending: ok.map(|s| s.hints_pending),
                    transfers_pending: ok.map(|s| s.transfers_queued + s.transfers_in_flight),
                    version: ok.map(|s| s.version.clone()),
                    disk: ok.map(|s| s.space.disk.label()),
                    live_bytes: ok.map(|s| s.space.live_bytes),
                    dead_bytes: ok.map(|s| s.space.dead_bytes),
                    reclaimable_bytes: ok.map(|s| s.space.reclaimable_bytes),
                    under_replicated_blobs: ok.map(|s| s.repair.under_replicated_blobs),
                    scrub_percent: ok.map(|s| s.scrub.pass_percent),
                    gc: ok
                        .and_then(|s| s.gc.clone())
                        .filter(|g| g.running || g.runs > 0),
                    problems: ok.map(NodeStatus::problems).unwrap_or_default(),
                    error: s.as_ref().err().map(|e| e.to_string()),
                }
            })
            .collect();
        let under_replicated_blobs = statuses
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .map(|s| s.repair.under_replicated_blobs)
            .sum();
        ClusterStatus {
            layout_version: layout.version,
            replication_factor: layout.replication_factor,
            write_quorum: layout.write_quorum,
            zones: layout.zone_count(),
            nodes,
            under_replicated_blobs,
        }
    }
}

/// Where a layout change stands, summed over the nodes that answered: those of the layout and
/// those only the previous layout had (they hand off what they hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveProgress {
    pub layout_version: u64,
    pub nodes_on_version: usize,
    pub nodes_answering: usize,
    pub nodes_total: usize,
    /// Nodes that say everything they hold is where the layout places it.
    pub nodes_settled: usize,
    /// Nodes of the layout that did not answer, and nodes that left it but still answer and
    /// are not empty: the change is not over while there are any.
    pub nodes_waited_for: Vec<String>,
    pub moved_bytes: u64,
    pub misplaced_bytes: u64,
    pub transfers_pending: u64,
}

impl MoveProgress {
    pub fn of<E>(layout: &Layout, statuses: &[(NodeSpec, Result<NodeStatus, E>)]) -> Self {
        let mut p = MoveProgress {
            layout_version: layout.version,
            nodes_total: statuses.len(),
            ..Default::default()
        };
        for (node, s) in statuses {
            let member = layout.node_index(&node.id).is_some();
            let Ok(s) = s else {
                if member {
                    p.nodes_waited_for.push(node.id.clone());
                }
                continue;
            };
            p.nodes_answering += 1;
            let on_version = s.report.layout_version == layout.version;
            if on_version {
                p.nodes_on_version += 1;
            }
            if on_version && s.report.settled {
                p.nodes_settled += 1;
            } else {
                p.nodes_waited_for.push(node.id.clone());
            }
            p.moved_bytes += s.report.moved_bytes;
            p.misplaced_bytes += s.report.misplaced_bytes;
            p.transfers_pending += s.transfers_queued + s.transfers_in_flight;
        }
        p
    }

    /// Every copy is where the layout places it: every node of the layout answered, runs it
    /// and is settled, and so is every node that left it and still answers.
    pub fn done(&self) -> bool {
        self.nodes_answering > 0
            && self.nodes_waited_for.is_empty()
            && self.misplaced_bytes == 0
            && self.transfers_pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_window_looks_back_one_minute() {
        let mut w = RateWindow::default();
        assert_eq!(w.per_min(), 0);
        w.sample(0, 0);
        w.sample(500, 10);
        assert_eq!(w.per_min(), 0, "under a second apart");
        for s in 1..=120 {
            // 2 per second for two minutes, then nothing.
            w.sample(s * 1_000, 2 * s);
        }
        assert_eq!(w.per_min(), 120);
        for s in 121..=200 {
            w.sample(s * 1_000, 240);
        }
        assert_eq!(w.per_min(), 0, "nothing in the last minute");
    }

    #[test]
    fn problems_name_what_an_operator_must_act_on() {
        let mut s = NodeStatus::default();
        assert!(s.problems().is_empty());
        s.space.disk = DiskState::Full;
        s.recovery.records_lost = 46;
        s.repair.under_replicated_blobs = 12;
        s.repair.waiting_for = vec!["n3".into()];
        let problems = s.problems().join("\n");
        assert!(problems.contains("disk full"), "{problems}");
        assert!(problems.contains("dropped 46 records"), "{problems}");
        assert!(
            problems.contains("12 blobs under-replicated, waiting for n3"),
            "{problems}"
        );
    }

    fn node(id: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            addr: "127.0.0.1:7000".parse().unwrap(),
            zone: "z".into(),
            weight: 1,
        }
    }

    fn status(id: &str, version: u64, settled: bool) -> Result<NodeStatus, String> {
        Ok(NodeStatus {
            id: id.into(),
            report: NodeReport {
                layout_version: version,
                settled,
                ..NodeReport::default()
            },
            ..NodeStatus::default()
        })
    }

    #[test]
    fn moves_are_done_only_when_every_node_is_settled_and_the_removed_ones_are_empty() {
        let layout = Layout {
            version: 2,
            replication_factor: 1,
            write_quorum: 1,
            nodes: vec![node("a"), node("b")],
        };
        let done = |statuses: Vec<(NodeSpec, Result<NodeStatus, String>)>| {
            MoveProgress::of(&layout, &statuses).done()
        };
        assert!(done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
        ]));
        // Nothing misplaced is reported yet, but b has not finished its first pass.
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, false)),
        ]));
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), Err("unreachable".into())),
        ]));
        // A removed node that still answers must be empty; one that does not is not awaited.
        assert!(!done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
            (node("gone"), status("gone", 2, false)),
        ]));
        assert!(done(vec![
            (node("a"), status("a", 2, true)),
            (node("b"), status("b", 2, true)),
            (node("gone"), Err("unreachable".into())),
        ]));
    }
}

/// A running total's rate over the last minute, from samples taken now and then (time passed
/// in, milliseconds, never decreasing).
#[derive(Clone, Debug, Default)]
pub struct RateWindow {
    samples: std::collections::VecDeque<(u64, u64)>,
}

/// The span a [`RateWindow`] looks back over.
pub const RATE_WINDOW_MS: u64 = 60_000;

impl RateWindow {
    pub fn sample(&mut self, now_ms: u64, total: u64) {
        self.samples.push_back((now_ms, total));
        // Keep one sample at least a window old, as the base.
        while self.samples.len() > 2 && now_ms.saturating_sub(self.samples[1].0) >= RATE_WINDOW_MS {
            self.samples.pop_front();
        }
    }

    /// The increase per minute over the samples held (0 until two are a second apart).
    pub fn per_min(&self) -> u64 {
        let (Some(&(t0, v0)), Some(&(t1, v1))) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let span_ms = t1.saturating_sub(t0);
        if span_ms < 1_000 {
            return 0;
        }
        v1.saturating_sub(v0).saturating_mul(60_000) / span_ms
    }
}
