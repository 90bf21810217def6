//! Quorum arithmetic, all of it: the write and read quorums of an operation over a set of
//! owners ([`Quorums`]), and the write-quorum decision of a coordinated put ([`WriteQuorum`]), a
//! plain state machine that is told what each replica reported and says what to do next. No
//! IO, no clock. The put and delete coordinators (`crate::coordinator`) build on it.
//!
//! A put runs in two phases. In the first, every replica receives the bytes and checks the hash
//! (`Prepared`). Once the write quorum has prepared, the coordinator tells them to commit; if so
//! many failed that the quorum can no longer prepare, it tells them to abort, so a failed put
//! leaves nothing visible. The put is acknowledged once the write quorum has committed durably.

use crate::layout::Layout;

/// The quorums of one operation over `owners` replicas: a write stands once `write` of them
/// hold it, and a read that hears from `read` of them meets every acknowledged write, because
/// `read + write > owners`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    pub owners: usize,
    pub write: usize,
    pub read: usize,
}

impl Quorums {
    /// The layout's write quorum, capped by the owners there are (at least one), and the read
    /// quorum that overlaps it.
    pub fn of(layout: &Layout, owners: usize) -> Quorums {
        let write = layout.write_quorum.min(owners).max(1);
        let read = (owners + 1).saturating_sub(write).max(1);
        let q = Quorums {
            owners,
            write,
            read,
        };
        assert!(
            owners == 0 || q.read + q.write > owners,
            "{q:?} do not overlap"
        );
        assert!(
            q.write <= owners.max(1) && q.read <= owners.max(1),
            "{q:?} exceed the owners"
        );
        q
    }
}

/// What a replica reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    Prepared,
    Stored,
    Failed,
}

/// What the coordinator should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for more reports.
    Wait,
    /// The quorum has prepared: tell every prepared replica to commit (said once).
    Commit,
    /// The quorum can no longer prepare: tell every replica to abort (said once).
    Abort,
    /// The quorum has stored the blob durably: acknowledge the client (said once).
    Acknowledge,
    /// Too many commits failed for the quorum to store the blob (said once).
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Committing,
    Done,
}

/// Tracks one put's replicas toward its write quorum: the arithmetic under
/// [`crate::coordinator::PutCoordinator`], which keeps each replica's state and hands this
/// counter each replica's reports in order (`Prepared` at most once, then `Stored` or `Failed`
/// once). Drive the coordinator, not this.
#[derive(Debug)]
pub struct WriteQuorum {
    replicas: usize,
    quorum: usize,
    prepared: usize,
    stored: usize,
    failed: usize,
    phase: Phase,
}

impl WriteQuorum {
    /// `replicas` replicas take part (the coordinator's own copy included, if it holds one);
    /// `quorum` of them must store the blob.
    pub fn new(replicas: usize, quorum: usize) -> WriteQuorum {
        assert!(quorum >= 1, "a write quorum of 0 acknowledges nothing");
        WriteQuorum {
            replicas,
            quorum,
            prepared: 0,
            stored: 0,
            failed: 0,
            phase: Phase::Preparing,
        }
    }

    /// The write quorum: replicas that must store the blob.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Records one replica's report and says what to do. Each replica reports `Prepared` at
    /// most once, then ends with `Stored` (only after `Prepared`) or `Failed`, once.
    pub fn report(&mut self, report: Report) -> Step {
        match report {
            Report::Prepared => self.prepared += 1,
            Report::Stored => self.stored += 1,
            Report::Failed => self.failed += 1,
        }
        assert!(
            self.prepared <= self.replicas
                && self.stored <= self.prepared
                && self.stored + self.failed <= self.replicas,
            "more reports than replicas: {self:?}"
        );
        self.step()
    }

    /// What to do given the reports so far (also right after `new`, for a quorum of zero
    /// reachable replicas).
    pub fn step(&mut self) -> Step {
        match self.phase {
            Phase::Preparing if self.prepared + self.stored >= self.quorum => {
                self.phase = Phase::Committing;
                Step::Commit
            }
            Phase::Preparing if self.replicas.saturating_sub(self.failed) < self.quorum => {
                self.phase = Phase::Done;
                Step::Abort
            }
            Phase::Committing if self.stored >= self.quorum => {
                self.phase = Phase::Done;
                Step::Acknowledge
            }
            Phase::Committing if self.replicas.saturating_sub(self.failed) < self.quorum => {
                self.phase = Phase::Done;
                Step::Fail
            }
            _ => Step::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_of_two_in_three_commits_then_acknowledges() {
        let mut q = WriteQuorum::new(3, 2);
        assert_eq!(q.step(), Step::Wait);
        assert_eq!(q.report(Report::Prepared), Step::Wait);
        assert_eq!(q.report(Report::Failed), Step::Wait);
        assert_eq!(q.report(Report::Prepared), Step::Commit);
        assert_eq!(q.report(Report::Stored), Step::Wait);
        assert_eq!(q.report(Report::Stored), Step::Acknowledge);
        // Said once: asking again changes nothing.
        assert_eq!(q.step(), Step::Wait);
    }

    #[test]
    fn aborts_as_soon_as_the_quorum_cannot_prepare() {
        let mut q = WriteQuorum::new(3, 2);
        assert_eq!(q.report(Report::Failed), Step::Wait);
        assert_eq!(q.report(Report::Failed), Step::Abort);
        assert_eq!(q.report(Report::Prepared), Step::Wait);
    }

    #[test]
    fn fails_when_commits_fail_below_quorum() {
        let mut q = WriteQuorum::new(3, 3);
        for _ in 0..3 {
            q.report(Report::Prepared);
        }
        assert_eq!(q.report(Report::Stored), Step::Wait);
        assert_eq!(q.report(Report::Failed), Step::Fail);
    }

    #[test]
    fn no_reachable_replicas_aborts_at_once() {
        let mut q = WriteQuorum::new(0, 1);
        assert_eq!(q.step(), Step::Abort);
    }

    #[test]
    fn every_report_order_reaches_a_single_verdict() {
        // All 3^3 report sequences of three replicas, quorum 2: exactly one of
        // Acknowledge/Fail/Abort is said, and Acknowledge only with two stores.
        for code in 0..27u32 {
            let reports: Vec<Report> = (0..3)
                .map(|i| match code / 3u32.pow(i) % 3 {
                    0 => Report::Prepared,
                    1 => Report::Failed,
                    _ => Report::Failed,
                })
                .collect();
            let mut q = WriteQuorum::new(3, 2);
            let mut steps = Vec::new();
            for r in &reports {
                steps.push(q.report(*r));
            }
            if steps.contains(&Step::Commit) {
                for r in &reports {
                    if *r == Report::Prepared {
                        steps.push(q.report(Report::Stored));
                    }
                }
            }
            let verdicts = steps
                .iter()
                .filter(|s| matches!(s, Step::Acknowledge | Step::Abort | Step::Fail))
                .count();
            assert_eq!(verdicts, 1, "{reports:?} gave {steps:?}");
            let prepared = reports.iter().filter(|r| **r == Report::Prepared).count();
            assert_eq!(steps.contains(&Step::Acknowledge), prepared >= 2);
        }
    }
}

#[cfg(test)]
mod quorums_tests {
    use super::*;
    use crate::layout::NodeSpec;

    fn layout(factor: usize, write_quorum: usize) -> Layout {
        Layout {
            version: 1,
            replication_factor: factor,
            write_quorum,
            nodes: (0..factor)
                .map(|i| NodeSpec {
                    id: format!("n{i}"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)).into(),
                    zone: format!("z{i}"),
                    weight: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn read_and_write_quorums_overlap() {
        assert_eq!(
            Quorums::of(&layout(3, 2), 3),
            Quorums {
                owners: 3,
                write: 2,
                read: 2
            }
        );
        assert_eq!(Quorums::of(&layout(3, 3), 3).read, 1);
        assert_eq!(Quorums::of(&layout(3, 1), 3).read, 3);
        // Fewer owners than the layout's quorum (a partition mid-move): capped, still overlapping.
        let q = Quorums::of(&layout(3, 2), 1);
        assert_eq!((q.write, q.read), (1, 1));
    }
}
