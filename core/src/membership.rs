//! Failure detection, as a plain state machine: it is told the time and the heartbeats that
//! arrived, and says whom to send heartbeats to and which peers changed state. No IO, no clock.
//!
//! A peer is `Up` while heartbeats keep arriving, `Suspect` once none has arrived for
//! `suspect_after_ms`, and `Down` after `down_after_ms`. Any heartbeat makes it `Up` again. A peer
//! that was never heard from starts `Suspect`, so a node does not trust a peer before it has
//! spoken. Heartbeats also carry what `cairn status` shows (fill, layout version), so every node
//! has a recent picture of the whole cluster and learns of a newer layout within one interval.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Default pause between two heartbeats to every peer.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 500;

/// Default silence after which a peer is suspected.
pub const SUSPECT_AFTER_MS_DEFAULT: u64 = 2_000;

/// Default silence after which a peer is declared down.
pub const DOWN_AFTER_MS_DEFAULT: u64 = 10_000;

/// Timeouts of failure detection, from the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureDetectorSettings {
    pub heartbeat_interval_ms: u64,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
}

impl Default for FailureDetectorSettings {
    fn default() -> FailureDetectorSettings {
        FailureDetectorSettings {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            suspect_after_ms: SUSPECT_AFTER_MS_DEFAULT,
            down_after_ms: DOWN_AFTER_MS_DEFAULT,
        }
    }
}

/// Failure-detection timeouts out of order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DetectorSettingsError {
    #[error("heartbeat_interval_ms must be above 0")]
    ZeroInterval,
    #[error(
        "suspect_after_ms ({suspect_after_ms}) must be above heartbeat_interval_ms ({heartbeat_interval_ms})"
    )]
    SuspectTooSoon {
        suspect_after_ms: u64,
        heartbeat_interval_ms: u64,
    },
    #[error("down_after_ms ({down_after_ms}) must be above suspect_after_ms ({suspect_after_ms})")]
    DownTooSoon {
        down_after_ms: u64,
        suspect_after_ms: u64,
    },
}

impl FailureDetectorSettings {
    /// The timeouts must be ordered: interval < suspect < down.
    pub fn validate(&self) -> Result<(), DetectorSettingsError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(DetectorSettingsError::ZeroInterval);
        }
        if self.suspect_after_ms <= self.heartbeat_interval_ms {
            return Err(DetectorSettingsError::SuspectTooSoon {
                suspect_after_ms: self.suspect_after_ms,
                heartbeat_interval_ms: self.heartbeat_interval_ms,
            });
        }
        if self.down_after_ms <= self.suspect_after_ms {
            return Err(DetectorSettingsError::DownTooSoon {
                down_after_ms: self.down_after_ms,
                suspect_after_ms: self.suspect_after_ms,
            });
        }
        Ok(())
    }
}

/// What a node says about itself in every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub layout_version: u64,
    pub blob_count: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Bytes this node holds that the current layout places elsewhere and that it still has to
    /// hand over (the remaining work of a layout change, seen from this node).
    pub misplaced_bytes: u64,
    /// Bytes handed over since this node adopted its layout.
    pub moved_bytes: u64,
    /// Everything this node holds is where `layout_version` places it, as far as this node can
    /// tell: see `Healer::settled`. The layout change to that version is over once every node
    /// of it says so.
    pub settled: bool,
    /// The node's engine takes writes (its disk is neither full nor failed).
    pub writable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    Up,
    Suspect,
    Down,
}

/// One peer as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: String,
    pub state: PeerState,
    /// When the last heartbeat arrived (`None`: never).
    pub heard_ms: Option<u64>,
    pub report: Option<NodeReport>,
}

/// What the membership tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// Send this node's heartbeat to the peer now.
    SendHeartbeat { to: String },
    /// The peer's state changed. `Up` after `Suspect` or `Down` means it came back: compare
    /// data with it.
    StateChanged {
        peer: String,
        from: PeerState,
        to: PeerState,
    },
    /// The peer runs a newer layout than this node: fetch it.
    NewerLayout { peer: String, version: u64 },
}

/// The failure detector of one node.
///
/// # The driver's contract
///
/// - Time is an argument: `now_ms` is this node's wall clock in milliseconds and never
///   decreases from one call to the next.
/// - Call [`Membership::set_peers`] at start and whenever a layout is adopted, with every node
///   to watch: the layout's and the previous layout's, this node aside.
/// - Call [`Membership::tick`] at least once per heartbeat interval, and send this node's
///   heartbeat to each peer a `SendHeartbeat` names.
/// - Give every heartbeat received, from any node, to [`Membership::on_heartbeat`].
/// - On `NewerLayout`, fetch that peer's layout; on `StateChanged` to `Up`, tell the healer
///   (`Healer::on_peer_up`) and wake the hints for that peer.
#[derive(Debug)]
pub struct Membership {
    settings: FailureDetectorSettings,
    peers: BTreeMap<String, PeerView>,
    next_heartbeat_ms: u64,
    layout_version: u64,
}

impl Membership {
    pub fn new(settings: FailureDetectorSettings, now_ms: u64) -> Membership {
        Membership {
            settings,
            peers: BTreeMap::new(),
            next_heartbeat_ms: now_ms,
            layout_version: 0,
        }
    }

    /// The peers to watch (the layout's nodes but this one) and this node's layout version.
    /// Known peers keep their state; new ones start `Suspect`, never heard from.
    pub fn set_peers<'a>(&mut self, peers: impl IntoIterator<Item = &'a str>, layout_version: u64) {
        let mut next = BTreeMap::new();
        for id in peers {
            let view = self.peers.remove(id).unwrap_or_else(|| PeerView {
                id: id.to_string(),
                state: PeerState::Suspect,
                heard_ms: None,
                report: None,
            });
            next.insert(id.to_string(), view);
        }
        self.peers = next;
        self.layout_version = layout_version;
        self.assert_invariants();
    }

    /// Heartbeats due and state changes from silence.
    pub fn tick(&mut self, now_ms: u64) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + self.settings.heartbeat_interval_ms;
            events.extend(
                self.peers
                    .keys()
                    .map(|id| MemberEvent::SendHeartbeat { to: id.clone() }),
            );
        }
        for view in self.peers.values_mut() {
            let silent_ms = view.heard_ms.map_or(u64::MAX, |h| now_ms.saturating_sub(h));
            let state = if view.heard_ms.is_some() && silent_ms < self.settings.suspect_after_ms {
                PeerState::Up
            } else if silent_ms < self.settings.down_after_ms || view.heard_ms.is_none() {
                // Never heard from: suspected, not down, until the first down timeout passes
                // from when we started watching.
                if view.heard_ms.is_none() && view.state == PeerState::Down {
                    PeerState::Down
                } else {
                    PeerState::Suspect
                }
            } else {
                PeerState::Down
            };
            if state != view.state {
                events.push(MemberEvent::StateChanged {
                    peer: view.id.clone(),
                    from: view.state,
                    to: state,
                });
                view.state = state;
            }
        }
        self.assert_invariants();
        events
    }

    /// A heartbeat arrived from `from`. A node outside the layout is not watched, but its newer
    /// layout is reported: after a change it may be the only one that knows it.
    pub fn on_heartbeat(
        &mut self,
        now_ms: u64,
        from: &str,
        report: NodeReport,
    ) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        if report.layout_version > self.layout_version {
            events.push(MemberEvent::NewerLayout {
                peer: from.to_string(),
                version: report.layout_version,
            });
        }
        let Some(view) = self.peers.get_mut(from) else {
            return events;
        };
        view.heard_ms = Some(view.heard_ms.map_or(now_ms, |h| h.max(now_ms)));
        view.report = Some(report);
        if view.state != PeerState::Up {
            events.push(MemberEvent::StateChanged {
                peer: from.to_string(),
                from: view.state,
                to: PeerState::Up,
            });
            view.state = PeerState::Up;
        }
        self.assert_invariants();
        events
    }

    pub fn state(&self, peer: &str) -> Option<PeerState> {
        self.peers.get(peer).map(|v| v.state)
    }

    pub fn is_up(&self, peer: &str) -> bool {
        self.state(peer) == Some(PeerState::Up)
    }

    pub fn view(&self) -> impl Iterator<Item = &PeerView> {
        self.peers.values()
    }

    pub fn settings(&self) -> &FailureDetectorSettings {
        &self.settings
    }

    /// Whether the layout change to `layout` is over as far as the heartbeats tell, so the
    /// previous layout (`previous_only`: the ids of its nodes that `layout` no longer has) may
    /// be forgotten: this node is settled (`self_settled`), every other node of `layout` is up
    /// and reports `layout`'s version and settled, and every node only the previous layout had
    /// is settled (empty) or not up. A removed node that is down cannot be waited for; what it
    /// held the remaining replicas had too (its copies were replicas, not the only ones).
    pub fn layout_settled<'a>(
        &self,
        self_id: &str,
        layout: &Layout,
        previous_only: impl IntoIterator<Item = &'a str>,
        self_settled: bool,
    ) -> bool {
        let settled_on = |view: &PeerView| {
            view.report
                .as_ref()
                .is_some_and(|r| r.settled && r.layout_version == layout.version)
        };
        let current = layout.nodes.iter().filter(|n| n.id != self_id).all(|n| {
            self.peers
                .get(&n.id)
                .is_some_and(|v| v.state == PeerState::Up && settled_on(v))
        });
        let removed = previous_only.into_iter().all(|id| {
            self.peers
                .get(id)
                .is_none_or(|v| v.state != PeerState::Up || settled_on(v))
        });
        self_settled && current && removed
    }

    /// Checks the views in debug builds and in the simulator.
    fn assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (id, view) in &self.peers {
            assert_eq!(*id, view.id, "a view filed under another id");
            // What must not: a peer trusted before it has spoken.
            assert!(
                view.state != PeerState::Up || view.heard_ms.is_some(),
                "{id} is up but was never heard from"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FailureDetectorSettings {
        FailureDetectorSettings {
            heartbeat_interval_ms: 100,
            suspect_after_ms: 300,
            down_after_ms: 1000,
        }
    }

    fn changes(events: &[MemberEvent]) -> Vec<(String, PeerState)> {
        events
            .iter()
            .filter_map(|e| match e {
                MemberEvent::StateChanged { peer, to, .. } => Some((peer.clone(), *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn silence_suspects_then_downs_and_a_heartbeat_revives() {
        let mut m = Membership::new(settings(), 0);
        m.set_peers(["a", "b"], 1);
        let first = m.tick(0);
        let sends = first
            .iter()
            .filter(|e| matches!(e, MemberEvent::SendHeartbeat { .. }))
            .count();
        assert_eq!(sends, 2);
        assert_eq!(m.state("a"), Some(PeerState::Suspect));
        m.on_heartbeat(10, "a", NodeReport::default());
        m.on_heartbeat(10, "b", NodeReport::default());
        assert!(m.is_up("a"));
        assert!(
            m.tick(50).is_empty(),
            "no heartbeat due before the interval"
        );
        m.on_heartbeat(250, "b", NodeReport::default());
        assert_eq!(
            changes(&m.tick(320)),
            vec![("a".to_string(), PeerState::Suspect)]
        );
        m.on_heartbeat(1000, "b", NodeReport::default());
        assert_eq!(
            changes(&m.tick(1011)),
            vec![("a".to_string(), PeerState::Down)]
        );
        assert!(m.is_up("b"), "b kept talking");
        let back = m.on_heartbeat(2000, "a", NodeReport::default());
        assert_eq!(changes(&back), vec![("a".to_string(), PeerState::Up)]);
    }

    #[test]
    fn a_newer_layout_is_reported_even_from_strangers_who_are_not_watched() {
        let mut m = Membership::new(settings(), 0);
        m.set_peers(["a"], 3);
        let report = NodeReport {
            layout_version: 4,
            ..NodeReport::default()
        };
        let events = m.on_heartbeat(1, "a", report.clone());
        assert!(events.contains(&MemberEvent::NewerLayout {
            peer: "a".into(),
            version: 4
        }));
        // A node outside this one's layout may be the only one to know the newer layout.
        assert_eq!(
            m.on_heartbeat(1, "zz", report),
            vec![MemberEvent::NewerLayout {
                peer: "zz".into(),
                version: 4
            }]
        );
        let old = NodeReport {
            layout_version: 3,
            ..NodeReport::default()
        };
        assert!(m.on_heartbeat(1, "zz", old).is_empty());
        assert_eq!(m.view().count(), 1, "strangers are not watched");
    }

    #[test]
    fn a_layout_change_is_over_once_every_node_of_it_is_settled_and_the_removed_ones_are_empty() {
        use crate::layout::NodeSpec;
        let layout = Layout {
            version: 5,
            replication_factor: 2,
            write_quorum: 1,
            nodes: ["a", "b", "me"]
                .iter()
                .enumerate()
                .map(|(i, id)| NodeSpec {
                    id: id.to_string(),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    zone: "z".into(),
                    weight: 1,
                })
                .collect(),
        };
        let report = |version, settled| NodeReport {
            layout_version: version,
            settled,
            ..NodeReport::default()
        };
        let mut m = Membership::new(settings(), 0);
        m.set_peers(["a", "b", "gone"], 5);
        let over = |m: &Membership, me| m.layout_settled("me", &layout, ["gone"], me);
        assert!(!over(&m, true), "nobody heard from yet");
        m.on_heartbeat(1, "a", report(5, true));
        m.on_heartbeat(1, "b", report(4, true));
        assert!(!over(&m, true), "b is settled on the layout before");
        m.on_heartbeat(2, "b", report(5, true));
        m.on_heartbeat(2, "gone", report(5, false));
        assert!(!over(&m, true), "the removed node still holds copies");
        assert!(!over(&m, false), "this node is not settled");
        m.on_heartbeat(3, "gone", report(5, true));
        assert!(over(&m, true));
        // A removed node that went down is not waited for; a node of the layout is.
        m.on_heartbeat(500, "gone", report(5, false));
        m.on_heartbeat(1550, "a", report(5, true));
        m.on_heartbeat(1550, "b", report(5, true));
        m.tick(1600);
        assert_eq!(m.state("gone"), Some(PeerState::Down));
        assert!(over(&m, true));
        m.tick(2700);
        assert!(!over(&m, true), "a and b went silent");
    }

    #[test]
    fn settings_must_be_ordered() {
        assert!(settings().validate().is_ok());
        let mut bad = settings();
        bad.down_after_ms = 200;
        assert_eq!(
            bad.validate(),
            Err(DetectorSettingsError::DownTooSoon {
                down_after_ms: 200,
                suspect_after_ms: 300
            })
        );
    }
}
