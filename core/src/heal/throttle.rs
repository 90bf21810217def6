//! A token bucket that paces bytes: healing copies and the scrub each have one.

/// Pacing of bytes: a token bucket refilled at `rate` bytes per second, holding at most one
/// second's worth. A copy larger than the bucket may start when the bucket is full and leaves
/// it in debt, so every size eventually passes.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate_bytes_per_sec: u64,
    tokens: i128,
    last_ms: u64,
}

impl Throttle {
    /// `rate_bytes_per_sec` 0: unlimited.
    pub fn new(rate_bytes_per_sec: u64, now_ms: u64) -> Throttle {
        Throttle {
            rate_bytes_per_sec,
            tokens: rate_bytes_per_sec as i128,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_ms) as i128;
        self.last_ms = self.last_ms.max(now_ms);
        let cap = self.rate_bytes_per_sec as i128;
        self.tokens = (self.tokens + elapsed_ms * cap / 1000).min(cap);
    }

    /// Takes `bytes` if the bucket allows it now.
    pub fn try_take(&mut self, now_ms: u64, bytes: u64) -> bool {
        if self.rate_bytes_per_sec == 0 {
            return true;
        }
        self.refill(now_ms);
        let cap = self.rate_bytes_per_sec as i128;
        let bytes = bytes as i128;
        if self.tokens >= bytes || (bytes > cap && self.tokens >= cap) {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// When `bytes` could next be taken.
    pub fn ready_at_ms(&self, bytes: u64) -> u64 {
        if self.rate_bytes_per_sec == 0 {
            return self.last_ms;
        }
        let need = (bytes as i128).min(self.rate_bytes_per_sec as i128) - self.tokens;
        if need <= 0 {
            return self.last_ms;
        }
        self.last_ms + (need * 1000 / self.rate_bytes_per_sec as i128) as u64 + 1
    }
}
