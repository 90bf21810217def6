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
///   one to the healer (`Healer::on_corrupt`) once the engine has quarantined it. Then call
///   [`Scrubber::checked`]: a pass counts as completed once its last blobs are checked.
/// - Store [`Scrubber::cursor`] now and then and give it to [`Scrubber::new`] after a restart,
///   so a pass resumes where it stood.
#[derive(Debug)]
pub struct Scrubber {
    cursor: Option<BlobHash>,
    throttle: Throttle,
    next_pass_ms: u64,
    interval_ms: u64,
    enabled: bool,
    /// A pass asked for (`start_now`) on a node whose scheduled scrub is off: it runs once.
    once: bool,
    /// The last step handed out the pass's last blobs; it completes once they are checked.
    ending: bool,
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
            once: false,
            ending: false,
            verified_blobs: 0,
            verified_bytes: 0,
            passes_completed: 0,
        }
    }

    /// Where the pass stands; store it to resume after a restart.
    pub fn cursor(&self) -> Option<BlobHash> {
        self.cursor
    }

    /// Starts a pass now (one under way goes on). Where the scheduled scrub is off, one pass
    /// runs at `bytes_per_sec`; says whether a pass was already under way.
    pub fn start_now(&mut self, now_ms: u64, bytes_per_sec: u64) -> bool {
        let under_way = self.running(now_ms);
        if !self.enabled {
            self.enabled = true;
            self.once = true;
            self.throttle = Throttle::new(bytes_per_sec, now_ms);
        }
        self.next_pass_ms = self.next_pass_ms.min(now_ms);
        under_way
    }

    /// Whether a pass is under way.
    pub fn running(&self, now_ms: u64) -> bool {
        self.ending || (self.enabled && (self.cursor.is_some() || now_ms >= self.next_pass_ms))
    }

    /// How far the current pass has gone through the hash space, in percent (0 between passes).
    pub fn pass_percent(&self) -> u8 {
        let Some(cursor) = self.cursor else { return 0 };
        let position = u64::from_be_bytes(cursor[..8].try_into().expect("8 bytes"));
        u8::try_from(((u128::from(position) * 100) >> 64) as u64).unwrap_or(100)
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
            self.ending = true;
            if self.once {
                self.once = false;
                self.enabled = false;
            }
        }
        out
    }

    /// The blobs of the last step are checked (and any corrupt one reported).
    pub fn checked(&mut self) {
        if std::mem::take(&mut self.ending) {
            self.passes_completed += 1;
        }
    }
}
