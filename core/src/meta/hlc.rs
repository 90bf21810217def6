//! A hybrid logical clock: stamps that follow the wall clock, never go backwards on one node,
//! and order every write after any stamp its node has seen. Ties between nodes break on a tag
//! derived from the node id, so two stamps are never equal unless they are the same write.
//!
//! The clock is a plain value: the caller passes the wall time in.

use serde::{Deserialize, Serialize};

use crate::limits::HLC_REMOTE_AHEAD_MS_MAX;

/// A version stamp. Ordered by wall time, then counter, then node tag.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch, as the writing node's clock (or a clock it had seen)
    /// said.
    pub wall_ms: u64,
    /// Writes within one millisecond, or behind a stamp seen from a faster clock.
    pub counter: u32,
    /// Which node wrote it: the first 8 bytes of BLAKE3 of the node id.
    pub node: u64,
}

impl Stamp {
    /// The smallest stamp above `self` that any node could have written: a write that means
    /// "only if nothing newer than `self` arrived" (GC's conditional removals use it).
    pub fn successor(self) -> Stamp {
        match self.counter.checked_add(1) {
            Some(counter) => Stamp {
                counter,
                node: 0,
                ..self
            },
            None => Stamp {
                wall_ms: self.wall_ms + 1,
                counter: 0,
                node: 0,
            },
        }
    }
}

impl Stamp {
    /// The stamp of a write that stands only if nothing newer than the version stamped `self`
    /// was written (a record rewritten from what was read: a retagged object, an expired one).
    /// It is just above `self`: the same time and counter, a node tag a little higher. So
    /// every write stamped by a node that had seen `self` (a later time or counter) is above
    /// it, and so is, but for a chance of 2^-32, one stamped in the same millisecond by a node
    /// that had not. The tag is raised by a hash of what is written (`None`: a removal), so
    /// two such writes based on one read differ in stamp unless they write the same: owners
    /// never keep different values under one stamp.
    pub fn just_above(self, value: Option<&[u8]>) -> Stamp {
        let mut hasher = blake3::Hasher::new();
        match value {
            None => hasher.update(&[0]),
            Some(bytes) => hasher.update(&[1]).update(bytes),
        };
        let digest = hasher.finalize();
        let raise = u32::from_le_bytes(digest.as_bytes()[..4].try_into().expect("4 bytes"));
        Stamp {
            node: self.node.saturating_add(1 + u64::from(raise)),
            ..self
        }
    }
}

/// One node's clock.
///
/// # The driver's contract
///
/// - Stamp every write with [`Hlc::now`], passing the node's wall clock in milliseconds.
/// - Show it every stamp that arrives from elsewhere (a write to merge, a record read) with
///   [`Hlc::observe`], so later stamps order after it; a stamp too far ahead is refused.
#[derive(Debug)]
pub struct Hlc {
    node: u64,
    last: Stamp,
}

/// A stamp from further ahead than `HLC_REMOTE_AHEAD_MS_MAX`.
#[derive(Debug, thiserror::Error)]
#[error("stamp {ahead_ms} ms ahead of this node's clock (limit {HLC_REMOTE_AHEAD_MS_MAX} ms)")]
pub struct ClockAhead {
    pub ahead_ms: u64,
}

/// A node's tag in its stamps.
pub fn node_tag(id: &str) -> u64 {
    let hash = blake3::hash(id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(bytes)
}

impl Hlc {
    pub fn new(node_id: &str) -> Hlc {
        Hlc {
            node: node_tag(node_id),
            last: Stamp::default(),
        }
    }

    /// A new stamp, above every stamp this clock has given or seen.
    pub fn now(&mut self, wall_ms: u64) -> Stamp {
        self.last = if wall_ms > self.last.wall_ms {
            Stamp {
                wall_ms,
                counter: 0,
                node: self.node,
            }
        } else {
            match self.last.counter.checked_add(1) {
                Some(counter) => Stamp {
                    wall_ms: self.last.wall_ms,
                    counter,
                    node: self.node,
                },
                None => Stamp {
                    wall_ms: self.last.wall_ms + 1,
                    counter: 0,
                    node: self.node,
                },
            }
        };
        self.last
    }

    /// Takes a stamp seen from elsewhere into account, so later local stamps order after it.
    pub fn observe(&mut self, stamp: Stamp, wall_ms: u64) -> Result<(), ClockAhead> {
        let ahead_ms = stamp.wall_ms.saturating_sub(wall_ms);
        if ahead_ms > HLC_REMOTE_AHEAD_MS_MAX {
            return Err(ClockAhead { ahead_ms });
        }
        if stamp > self.last {
            self.last = Stamp {
                node: self.node,
                ..stamp
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stamp_just_above_a_read_is_below_any_write_after_it_and_distinct_per_value() {
        let read = Stamp {
            wall_ms: 1_000,
            counter: 3,
            node: 77,
        };
        let retag = read.just_above(Some(b"tags"));
        let expire = read.just_above(None);
        assert!(retag > read && expire > read);
        assert_ne!(retag, expire, "two values from one read get two stamps");
        assert_eq!(retag, read.just_above(Some(b"tags")));
        let mut clock = Hlc::new("n5");
        clock.observe(read, 1_000).unwrap();
        let later = clock.now(1_000);
        assert!(later > retag && later > expire, "{later:?}");
    }

    use super::*;

    #[test]
    fn stamps_increase_even_when_the_wall_clock_stalls_or_steps_back() {
        let mut hlc = Hlc::new("n1");
        let a = hlc.now(1_000);
        let b = hlc.now(1_000);
        let c = hlc.now(900);
        let d = hlc.now(1_001);
        assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
        assert_eq!(c.wall_ms, 1_000);
        assert_eq!(
            d,
            Stamp {
                wall_ms: 1_001,
                counter: 0,
                node: node_tag("n1")
            }
        );
    }

    #[test]
    fn a_stamp_seen_from_a_faster_clock_orders_later_writes_after_it() {
        let mut slow = Hlc::new("slow");
        let mut fast = Hlc::new("fast");
        let remote = fast.now(5_000);
        slow.observe(remote, 4_000).unwrap();
        let local = slow.now(4_001);
        assert!(local > remote, "{local:?} should follow {remote:?}");
    }

    #[test]
    fn a_stamp_from_far_ahead_is_refused_and_leaves_the_clock_alone() {
        let mut hlc = Hlc::new("n1");
        let before = hlc.now(1_000);
        let far = Stamp {
            wall_ms: 1_000 + HLC_REMOTE_AHEAD_MS_MAX + 1,
            counter: 0,
            node: 7,
        };
        assert!(hlc.observe(far, 1_000).is_err());
        let after = hlc.now(1_000);
        assert_eq!(after.wall_ms, before.wall_ms);
    }

    #[test]
    fn stamps_of_different_nodes_in_one_millisecond_differ() {
        let a = Hlc::new("n1").now(7);
        let b = Hlc::new("n2").now(7);
        assert_ne!(a, b);
        assert!(a.successor() > a && a.successor().wall_ms == 7);
    }
}
