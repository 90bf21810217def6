//! Scrub pacing: which blobs to verify next, within a bytes-per-second budget, resumable from
//! a cursor the driver stores. The driver reads and checks them; a corrupt one goes to
//! [`super::Healer::on_corrupt`].

use super::catalog::Catalog;
use super::entry::{BlobHash, Entry, EntryKind};
use super::settings::HealSettings;
use super::throttle::Throttle;
use crate::limits::SCRUB_BLOBS_PER_STEP_MAX;

/// Scrub pacing: which hashes to verify next, at a bytes-per-second budget, resumable from a
/// cursor the driver stores.
///
/// # The driver's contract
///
/// - Call [`Scrubber::step`] regularly with the time (milliseconds on the wall clock, never
///   decreasing); read each blob it returns, check it against its name, and report a corrupt
///   one to the healer (`Healer::on_corrupt`) once the engine has quarantined it.
/// - Store [`Scrubber::cursor`] now and then and give it to [`Scrubber::new`] after a restart,
///   so a pass resumes where it stood.
#[derive(Debug)]
pub struct Scrubber {
    cursor: Option<BlobHash>,
    throttle: Throttle,
    next_pass_ms: u64,
    interval_ms: u64,
    enabled: bool,
    /// Blobs and bytes verified since the node started, and passes completed.
    pub verified_blobs: u64,
    pub verified_bytes: u64,
    pub passes_completed: u64,
}

impl Scrubber {
    pub fn new(settings: &HealSettings, cursor: Option<BlobHash>, now_ms: u64) -> Scrubber {
        Scrubber {
            cursor,
            throttle: Throttle::new(settings.scrub_bytes_per_sec, now_ms),
            next_pass_ms: now_ms,
            interval_ms: settings.scrub_interval_ms,
            enabled: settings.scrub_bytes_per_sec > 0,
            verified_blobs: 0,
            verified_bytes: 0,
            passes_completed: 0,
        }
    }

    /// Where the pass stands; store it to resume after a restart.
    pub fn cursor(&self) -> Option<BlobHash> {
        self.cursor
    }

    /// Live blobs to verify now (empty when the budget or the schedule says wait).
    pub fn step(&mut self, now_ms: u64, catalog: &dyn Catalog) -> Vec<Entry> {
        if !self.enabled || now_ms < self.next_pass_ms {
            return Vec::new();
        }
        let batch = catalog.scan(self.cursor.as_ref(), SCRUB_BLOBS_PER_STEP_MAX);
        let mut out = Vec::new();
        for e in &batch {
            if e.kind == EntryKind::Live {
                if !self.throttle.try_take(now_ms, e.bytes) {
                    return out;
                }
                self.verified_blobs += 1;
                self.verified_bytes += e.bytes;
                out.push(*e);
            }
            self.cursor = Some(e.hash);
        }
        if batch.len() < SCRUB_BLOBS_PER_STEP_MAX {
            self.cursor = None;
            self.next_pass_ms = now_ms + self.interval_ms;
            self.passes_completed += 1;
        }
        out
    }
}
