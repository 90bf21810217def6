//! The put and delete coordinators, as state machines. A node that takes a client's put or
//! delete drives one of these over the operation's replicas (itself among them, if it is one);
//! the simulator drives the same ones over its virtual network. They are told what each
//! replica reported and answer with what to do: tell a replica to commit or abort, record a
//! hint for a replica that missed the write, answer the client.
//!
//! **Put.** Two phases. Every replica receives the bytes and checks the hash (`Prepared`). Once
//! the write quorum has prepared, each prepared replica is told to commit, and so is each one
//! that prepares later (one more copy); if so many failed that the quorum can no longer
//! prepare, every replica still undecided is told to abort, so a failed put leaves nothing
//! visible. The put is acknowledged once the write quorum has stored it durably. Replicas known
//! to have missed it get a durable hint first; one that fails after the acknowledgement gets a
//! hint then.
//!
//! **A put's version.** A put carries its coordinator's clock, a delete's tombstone its own;
//! the newer stands. Clocks differ, so a put that follows a delete could carry the older
//! version and vanish. Each replica therefore reports, as it prepares, the version of the
//! tombstone it holds, and the commit carries the put's version raised above every tombstone
//! the write quorum reported. A delete acknowledged before the put began was recorded by a
//! write quorum, which meets the put's (when twice the quorum exceeds the replica count, as in
//! every layout with a majority quorum), so the put stands over it. The version is fixed when
//! the commits go out and is the same on every replica: a tombstone that reaches a replica
//! after that (a delete during or after the put) is newer and stands there, and anti-entropy
//! carries it to the rest. Raising the version at each replica instead, over whatever
//! tombstone it holds at commit, would let a late replica bring back a blob whose delete was
//! acknowledged after the put's.
//!
//! **Delete.** One phase. Every replica records the tombstone; once every replica has answered
//! (or failed), the delete is acknowledged if the write quorum recorded it, and each replica
//! that did not gets a hint; otherwise it fails and the client retries.
//!
//! Replicas are named by their index in the operation's replica list. The coordinating node's
//! own copy is one of them (`local`) and never gets a hint: hints are delivered from this node.

use crate::quorum::{Report, Step, WriteQuorum};

/// A replica's index in the operation's replica list.
pub type ReplicaIx = usize;

/// What the put coordinator asks its driver to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutAction {
    /// Tell the replica to make its prepared copy durable and visible with `version` (said
    /// once, and only to a replica that has prepared; the same version for every replica).
    Commit { replica: ReplicaIx, version: u64 },
    /// Tell the replica to drop what it received (said once).
    Abort(ReplicaIx),
    /// Record, durably, a hint that the replica missed the put.
    Hint(ReplicaIx),
    /// Answer the client: the write quorum holds the blob durably. Every `Hint` owed so far
    /// comes before it.
    Acknowledge,
    /// Answer the client: the write quorum cannot store the blob.
    Fail,
}

/// What the delete coordinator asks its driver to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteAction {
    /// Record, durably, a hint that the replica missed the delete.
    Hint(ReplicaIx),
    /// Answer the client: the write quorum recorded the tombstone. `existed`: some replica held
    /// the blob.
    Acknowledge { existed: bool },
    /// Answer the client: fewer than the write quorum recorded it.
    Fail,
}

/// The verdict of an operation, once given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Acknowledged,
    Failed,
    /// The driver gave up before a verdict (the body was cut off or did not match its hash).
    Cancelled,
}

/// Where one replica of a put stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PutReplica {
    /// Receiving the bytes.
    Sending,
    /// Holds the bytes, checked; waits for the decision.
    Prepared,
    /// Told to commit.
    Committing,
    Stored,
    Failed,
    Aborted,
}

impl PutReplica {
    fn is_final(self) -> bool {
        matches!(
            self,
            PutReplica::Stored | PutReplica::Failed | PutReplica::Aborted
        )
    }
}

/// One put's coordinator.
///
/// # The driver's contract
///
/// - Make it with [`PutCoordinator::new`] once the replica list is known, and carry out the
///   actions it returns (with no replica reachable, the verdict is immediate).
/// - Report each replica's progress as it happens: [`on_prepared`](Self::on_prepared) when
///   the replica holds every byte and its hash matched (with the version of the tombstone it
///   holds, 0 if none), then [`on_stored`](Self::on_stored)
///   once its commit is durable, or [`on_failed`](Self::on_failed) at any point (an error, a
///   timeout, a lost connection). Reports that come twice, late or after a failure are
///   ignored.
/// - Carry out the returned actions in order: a `Hint` must be durable before the
///   `Acknowledge` that follows it is answered.
/// - If the body itself is bad (cut off, hashing to another name), call
///   [`cancel`](Self::cancel) and answer the client with that error.
/// - Keep driving it after the verdict until [`is_settled`](Self::is_settled): replicas that
///   end later are committed, or hinted, then.
#[derive(Debug)]
pub struct PutCoordinator {
    replicas: Vec<PutReplica>,
    local: Option<ReplicaIx>,
    quorum: WriteQuorum,
    /// The write quorum prepared and the commits went out (whatever came of them since).
    committing: bool,
    /// The version commits carry: the put's, raised above every tombstone reported before
    /// the commits went out; fixed from then on.
    version: u64,
    verdict: Option<Verdict>,
}

impl PutCoordinator {
    /// A put with `version` (its coordinator's clock) over `replicas` replicas of which
    /// `write_quorum` must store it; `local` is this node's own index, if it is a replica.
    /// Returns the actions due at once (a verdict, when no quorum is possible).
    pub fn new(
        replicas: usize,
        write_quorum: usize,
        local: Option<ReplicaIx>,
        version: u64,
    ) -> (PutCoordinator, Vec<PutAction>) {
        assert!(
            local.is_none_or(|l| l < replicas),
            "local replica out of range"
        );
        let mut coordinator = PutCoordinator {
            replicas: vec![PutReplica::Sending; replicas],
            local,
            quorum: WriteQuorum::new(replicas, write_quorum),
            committing: false,
            version,
            verdict: None,
        };
        let mut actions = Vec::new();
        let step = coordinator.quorum.step();
        coordinator.take_step(step, &mut actions);
        coordinator.assert_invariants();
        (coordinator, actions)
    }

    /// The replica holds every byte, and they hash to the blob's name; it holds a tombstone
    /// of the hash with `tombstone_version` (0: none).
    pub fn on_prepared(&mut self, replica: ReplicaIx, tombstone_version: u64) -> Vec<PutAction> {
        let mut actions = Vec::new();
        if self.replicas[replica] != PutReplica::Sending {
            return actions; // a duplicate, or a report after a failure or an abort
        }
        self.replicas[replica] = PutReplica::Prepared;
        if !self.committing && tombstone_version >= self.version {
            // A tie goes to the tombstone: the put must be newer to stand.
            self.version = tombstone_version + 1;
        }
        let step = self.quorum.report(Report::Prepared);
        match self.verdict {
            // Too late to count, but a copy: commit it after an acknowledgement, drop it
            // after any other verdict.
            Some(Verdict::Acknowledged) => self.commit(replica, &mut actions),
            Some(_) => self.abort(replica, &mut actions),
            None => {
                if self.committing {
                    // Prepared while the quorum already commits: commit it too.
                    self.commit(replica, &mut actions);
                }
                self.take_step(step, &mut actions);
            }
        }
        self.assert_invariants();
        actions
    }

    /// The replica's commit is durable.
    pub fn on_stored(&mut self, replica: ReplicaIx) -> Vec<PutAction> {
        let mut actions = Vec::new();
        if self.replicas[replica] != PutReplica::Committing {
            return actions; // a duplicate, or a commit the coordinator never asked for
        }
        self.replicas[replica] = PutReplica::Stored;
        let step = self.quorum.report(Report::Stored);
        if self.verdict.is_none() {
            self.take_step(step, &mut actions);
        }
        self.assert_invariants();
        actions
    }

    /// The replica failed: an error, a timeout, a lost connection, a refused commit.
    pub fn on_failed(&mut self, replica: ReplicaIx) -> Vec<PutAction> {
        let mut actions = Vec::new();
        if self.replicas[replica].is_final() {
            return actions;
        }
        self.replicas[replica] = PutReplica::Failed;
        let step = self.quorum.report(Report::Failed);
        match self.verdict {
            None => self.take_step(step, &mut actions),
            Some(Verdict::Acknowledged) => self.hint(replica, &mut actions),
            Some(_) => {}
        }
        self.assert_invariants();
        actions
    }

    /// The body is unusable: every undecided replica is told to abort, and there is no
    /// verdict of the quorum (the driver answers with the body's error).
    pub fn cancel(&mut self) -> Vec<PutAction> {
        let mut actions = Vec::new();
        if self.verdict.is_none() {
            self.verdict = Some(Verdict::Cancelled);
            self.abort_undecided(&mut actions);
        }
        self.assert_invariants();
        actions
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// The version the put's commits carry (final once the first commit went out).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The verdict is given and every replica has ended: nothing more will happen.
    pub fn is_settled(&self) -> bool {
        self.verdict.is_some() && self.replicas.iter().all(|r| r.is_final())
    }

    /// Replicas that failed, in replica order (for the failure's message).
    pub fn failed(&self) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.indices(PutReplica::Failed)
    }

    /// Replicas that have not ended (a driver with nothing left to hear from fails these).
    pub fn unfinished(&self) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_final())
            .map(|(i, _)| i)
    }

    /// Replicas still receiving the bytes (a driver's prepare timeout fails these).
    pub fn sending(&self) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.indices(PutReplica::Sending)
    }

    /// Replicas told to commit that have not answered (a driver's commit timeout fails
    /// these).
    pub fn committing(&self) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.indices(PutReplica::Committing)
    }

    fn indices(&self, state: PutReplica) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(_, r)| **r == state)
            .map(|(i, _)| i)
    }

    fn take_step(&mut self, step: Step, actions: &mut Vec<PutAction>) {
        match step {
            Step::Wait => {}
            Step::Commit => {
                self.committing = true;
                for i in 0..self.replicas.len() {
                    if self.replicas[i] == PutReplica::Prepared {
                        self.commit(i, actions);
                    }
                }
            }
            Step::Abort | Step::Fail => {
                self.verdict = Some(Verdict::Failed);
                self.abort_undecided(actions);
                actions.push(PutAction::Fail);
            }
            Step::Acknowledge => {
                self.verdict = Some(Verdict::Acknowledged);
                for i in 0..self.replicas.len() {
                    if self.replicas[i] == PutReplica::Failed {
                        self.hint(i, actions);
                    }
                }
                actions.push(PutAction::Acknowledge);
            }
        }
    }

    fn commit(&mut self, replica: ReplicaIx, actions: &mut Vec<PutAction>) {
        assert_eq!(self.replicas[replica], PutReplica::Prepared);
        self.replicas[replica] = PutReplica::Committing;
        actions.push(PutAction::Commit {
            replica,
            version: self.version,
        });
    }

    fn abort(&mut self, replica: ReplicaIx, actions: &mut Vec<PutAction>) {
        assert!(!self.replicas[replica].is_final());
        self.replicas[replica] = PutReplica::Aborted;
        actions.push(PutAction::Abort(replica));
    }

    /// Aborts every replica not yet told to commit.
    fn abort_undecided(&mut self, actions: &mut Vec<PutAction>) {
        for i in 0..self.replicas.len() {
            if matches!(self.replicas[i], PutReplica::Sending | PutReplica::Prepared) {
                self.abort(i, actions);
            }
        }
    }

    fn hint(&self, replica: ReplicaIx, actions: &mut Vec<PutAction>) {
        if self.local != Some(replica) {
            actions.push(PutAction::Hint(replica));
        }
    }

    fn assert_invariants(&self) {
        let count = |s: PutReplica| self.replicas.iter().filter(|r| **r == s).count();
        let stored = count(PutReplica::Stored);
        // What must hold: an acknowledged put rests on the write quorum's durable copies.
        if self.verdict == Some(Verdict::Acknowledged) {
            assert!(
                stored >= self.quorum.quorum(),
                "acknowledged with {stored} of {} copies stored",
                self.quorum.quorum()
            );
        }
        // What must not: a commit before the quorum prepared, or an abort before a verdict.
        if !self.committing {
            assert_eq!(
                count(PutReplica::Committing) + stored,
                0,
                "a replica committed before the write quorum prepared"
            );
        }
        if self.verdict.is_none() {
            assert_eq!(count(PutReplica::Aborted), 0, "aborted before a verdict");
        }
    }
}

/// Where one replica of a delete stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeleteReplica {
    Waiting,
    Deleted,
    Failed,
}

/// One delete's coordinator.
///
/// # The driver's contract
///
/// - Make it with [`DeleteCoordinator::new`] once the replica list is known, and send the
///   tombstone to every replica.
/// - Report each replica's answer once: [`on_deleted`](Self::on_deleted) when it recorded the
///   tombstone durably, [`on_failed`](Self::on_failed) on an error or a timeout (every replica
///   must answer or time out: the verdict waits for all). Repeated reports are ignored.
/// - Carry out the returned actions in order: every `Hint` is durable before the
///   `Acknowledge` that follows it is answered.
#[derive(Debug)]
pub struct DeleteCoordinator {
    replicas: Vec<DeleteReplica>,
    local: Option<ReplicaIx>,
    write_quorum: usize,
    existed: bool,
    verdict: Option<Verdict>,
}

impl DeleteCoordinator {
    /// A delete over `replicas` replicas of which `write_quorum` must record it; `local` is
    /// this node's own index, if it is a replica. Returns the actions due at once (a verdict,
    /// when there are no replicas).
    pub fn new(
        replicas: usize,
        write_quorum: usize,
        local: Option<ReplicaIx>,
    ) -> (DeleteCoordinator, Vec<DeleteAction>) {
        assert!(
            write_quorum >= 1,
            "a write quorum of 0 acknowledges nothing"
        );
        assert!(
            local.is_none_or(|l| l < replicas),
            "local replica out of range"
        );
        let mut coordinator = DeleteCoordinator {
            replicas: vec![DeleteReplica::Waiting; replicas],
            local,
            write_quorum,
            existed: false,
            verdict: None,
        };
        let mut actions = Vec::new();
        coordinator.decide(&mut actions);
        coordinator.assert_invariants();
        (coordinator, actions)
    }

    /// The replica recorded the tombstone durably; `existed`: it held the blob.
    pub fn on_deleted(&mut self, replica: ReplicaIx, existed: bool) -> Vec<DeleteAction> {
        self.answered(replica, DeleteReplica::Deleted, existed)
    }

    /// The replica failed to record it, or did not answer in time.
    pub fn on_failed(&mut self, replica: ReplicaIx) -> Vec<DeleteAction> {
        self.answered(replica, DeleteReplica::Failed, false)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Replicas that recorded the tombstone.
    pub fn deleted(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| **r == DeleteReplica::Deleted)
            .count()
    }

    /// Replicas that have not answered (a driver's timeout fails these).
    pub fn waiting(&self) -> impl Iterator<Item = ReplicaIx> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == DeleteReplica::Waiting)
            .map(|(i, _)| i)
    }

    fn answered(
        &mut self,
        replica: ReplicaIx,
        state: DeleteReplica,
        existed: bool,
    ) -> Vec<DeleteAction> {
        let mut actions = Vec::new();
        if self.replicas[replica] != DeleteReplica::Waiting {
            return actions;
        }
        self.replicas[replica] = state;
        self.existed |= existed;
        self.decide(&mut actions);
        self.assert_invariants();
        actions
    }

    /// Once every replica has answered: acknowledge at the write quorum (hinting the rest), or
    /// fail.
    fn decide(&mut self, actions: &mut Vec<DeleteAction>) {
        if self.verdict.is_some() || self.replicas.contains(&DeleteReplica::Waiting) {
            return;
        }
        let deleted = self
            .replicas
            .iter()
            .filter(|r| **r == DeleteReplica::Deleted)
            .count();
        if deleted < self.write_quorum {
            self.verdict = Some(Verdict::Failed);
            actions.push(DeleteAction::Fail);
            return;
        }
        self.verdict = Some(Verdict::Acknowledged);
        for (i, r) in self.replicas.iter().enumerate() {
            if *r == DeleteReplica::Failed && self.local != Some(i) {
                actions.push(DeleteAction::Hint(i));
            }
        }
        actions.push(DeleteAction::Acknowledge {
            existed: self.existed,
        });
    }

    fn assert_invariants(&self) {
        let waiting = self.waiting().count();
        // What must hold: a verdict once every replica answered, and an acknowledgement only
        // on the write quorum's tombstones.
        if waiting == 0 {
            assert!(self.verdict.is_some(), "every replica answered, no verdict");
        }
        if self.verdict == Some(Verdict::Acknowledged) {
            assert!(
                self.deleted() >= self.write_quorum,
                "acknowledged with {} of {} tombstones",
                self.deleted(),
                self.write_quorum
            );
        }
        // What must not: a verdict while a replica may still answer.
        if self.verdict.is_some() {
            assert_eq!(waiting, 0, "a verdict before every replica answered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The put's version in these tests.
    const V: u64 = 1_000;

    fn commit(replica: ReplicaIx) -> PutAction {
        PutAction::Commit {
            replica,
            version: V,
        }
    }

    fn verdicts(actions: &[PutAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, PutAction::Acknowledge | PutAction::Fail))
            .count()
    }

    #[test]
    fn a_put_commits_the_prepared_then_acknowledges_with_hints_first() {
        let (mut c, first) = PutCoordinator::new(3, 2, Some(0), V);
        assert!(first.is_empty());
        assert!(c.on_prepared(0, 0).is_empty());
        assert!(c.on_failed(2).is_empty());
        assert_eq!(c.on_prepared(1, 0), vec![commit(0), commit(1)]);
        assert!(c.on_stored(0).is_empty());
        assert_eq!(
            c.on_stored(1),
            vec![PutAction::Hint(2), PutAction::Acknowledge]
        );
        assert!(c.is_settled());
        assert_eq!(c.verdict(), Some(Verdict::Acknowledged));
    }

    #[test]
    fn the_commit_version_rises_above_the_quorums_tombstones_and_is_then_fixed() {
        let (mut c, _) = PutCoordinator::new(3, 2, None, V);
        // An older tombstone changes nothing; a newer one, or a tie, raises the version.
        assert!(c.on_prepared(0, V - 1).is_empty());
        assert_eq!(c.version(), V);
        let raised = |replica| PutAction::Commit {
            replica,
            version: V + 6,
        };
        assert_eq!(c.on_prepared(1, V + 5), vec![raised(0), raised(1)]);
        // A tombstone reported after the commits went out is a delete during the put: it
        // stands over the copy on its replica, and the version stays what the others got.
        assert_eq!(c.on_prepared(2, V + 50), vec![raised(2)]);
        assert_eq!(c.version(), V + 6);
        let (mut tie, _) = PutCoordinator::new(1, 1, None, V);
        assert_eq!(
            tie.on_prepared(0, V),
            vec![PutAction::Commit {
                replica: 0,
                version: V + 1
            }]
        );
    }

    #[test]
    fn a_late_replica_commits_and_a_late_failure_is_hinted() {
        let (mut c, _) = PutCoordinator::new(3, 2, None, V);
        c.on_prepared(0, 0);
        c.on_prepared(1, 0);
        c.on_stored(0);
        assert_eq!(c.on_stored(1), vec![PutAction::Acknowledge]);
        assert!(!c.is_settled(), "replica 2 has not ended");
        assert_eq!(c.on_prepared(2, 0), vec![commit(2)]);
        assert_eq!(c.on_failed(2), vec![PutAction::Hint(2)]);
        assert!(c.is_settled());
    }

    #[test]
    fn the_local_replica_is_never_hinted() {
        let (mut c, _) = PutCoordinator::new(3, 2, Some(1), V);
        c.on_failed(1);
        c.on_prepared(0, 0);
        c.on_prepared(2, 0);
        c.on_stored(0);
        assert_eq!(c.on_stored(2), vec![PutAction::Acknowledge]);
    }

    #[test]
    fn a_put_aborts_as_soon_as_the_quorum_cannot_prepare() {
        let (mut c, _) = PutCoordinator::new(3, 2, None, V);
        c.on_prepared(0, 0);
        c.on_failed(1);
        assert_eq!(
            c.on_failed(2),
            vec![PutAction::Abort(0), PutAction::Fail],
            "the prepared replica is told to drop its bytes"
        );
        assert!(c.is_settled());
        assert!(
            c.on_prepared(0, 0).is_empty(),
            "a late report changes nothing"
        );
    }

    #[test]
    fn no_reachable_replica_fails_at_once() {
        let (c, first) = PutCoordinator::new(0, 1, None, V);
        assert_eq!(first, vec![PutAction::Fail]);
        assert!(c.is_settled());
    }

    #[test]
    fn a_cancelled_put_aborts_everyone_undecided_and_gives_no_verdict_of_its_own() {
        let (mut c, _) = PutCoordinator::new(3, 2, Some(0), V);
        c.on_prepared(1, 0);
        assert_eq!(
            c.cancel(),
            vec![
                PutAction::Abort(0),
                PutAction::Abort(1),
                PutAction::Abort(2)
            ]
        );
        assert_eq!(c.verdict(), Some(Verdict::Cancelled));
        assert!(c.on_prepared(2, 0).is_empty());
    }

    #[test]
    fn every_report_order_of_three_replicas_reaches_one_verdict() {
        // Each replica prepares and stores, prepares and fails, or fails at once; the reports
        // interleave in every order. Exactly one verdict; an acknowledgement only with two
        // stored copies; every replica ends.
        for outcome in 0..27u32 {
            let fates: Vec<u32> = (0..3).map(|i| outcome / 3u32.pow(i) % 3).collect();
            for order in permutations(6) {
                let (mut c, mut actions) = PutCoordinator::new(3, 2, None, V);
                let mut prepared = [false; 3];
                for step in order {
                    let (replica, second) = (step % 3, step >= 3);
                    let fate = fates[replica];
                    let out = match (fate, second) {
                        (0 | 1, false) => {
                            prepared[replica] = true;
                            c.on_prepared(replica, 0)
                        }
                        (0, true) if prepared[replica] => c.on_stored(replica),
                        (1, true) | (2, false) => c.on_failed(replica),
                        _ => Vec::new(),
                    };
                    actions.extend(out);
                }
                // Replicas that have not ended fail (a timeout).
                let silent: Vec<_> = c.unfinished().collect();
                for r in silent {
                    actions.extend(c.on_failed(r));
                }
                assert_eq!(verdicts(&actions), 1, "{fates:?}: {actions:?}");
                assert!(c.is_settled(), "{fates:?}: {c:?}");
                if c.verdict() == Some(Verdict::Acknowledged) {
                    let stored = fates.iter().filter(|f| **f == 0).count();
                    assert!(stored >= 2, "{fates:?} acknowledged: {actions:?}");
                }
            }
        }
    }

    /// Every order of `0..n`.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for i in 0..=p.len() {
                let mut q = p.clone();
                q.insert(i, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn a_delete_waits_for_every_replica_then_hints_the_ones_that_missed_it() {
        let (mut c, first) = DeleteCoordinator::new(3, 2, Some(0));
        assert!(first.is_empty());
        assert!(c.on_deleted(0, false).is_empty());
        assert!(
            c.on_deleted(1, true).is_empty(),
            "replica 2 has not answered"
        );
        assert_eq!(
            c.on_failed(2),
            vec![
                DeleteAction::Hint(2),
                DeleteAction::Acknowledge { existed: true }
            ]
        );
        assert!(c.on_deleted(2, false).is_empty(), "said once");
    }

    #[test]
    fn a_delete_below_the_quorum_fails_without_hints() {
        let (mut c, _) = DeleteCoordinator::new(3, 2, None);
        c.on_deleted(0, true);
        c.on_failed(1);
        assert_eq!(c.on_failed(2), vec![DeleteAction::Fail]);
        let (_, at_once) = DeleteCoordinator::new(0, 1, None);
        assert_eq!(at_once, vec![DeleteAction::Fail]);
    }
}
