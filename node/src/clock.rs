//! The node's clocks, and the only place in `cairn-node` that reads the time: the wall clock
//! (milliseconds since the Unix epoch, what versions, stamps and the healer run on) and the
//! monotonic clock (what durations, deadlines and the hint queue run on). Everything else is
//! handed the time, which keeps the rest of the node's decisions replayable and reviewable.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this node's wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The monotonic clock now: the start of a duration.
pub fn now() -> Instant {
    Instant::now()
}

/// Time passed since `start` on the monotonic clock.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}

/// Milliseconds passed since `start` on the monotonic clock.
pub fn since_ms(start: Instant) -> u64 {
    u64::try_from(since(start).as_millis()).unwrap_or(u64::MAX)
}

/// The tokio timer's instant `after` from now: a deadline for `timeout_at` or `Sleep::reset`.
pub fn deadline_after(after: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + after
}

/// Whether a tokio deadline has passed.
pub fn passed(deadline: tokio::time::Instant) -> bool {
    tokio::time::Instant::now() >= deadline
}
