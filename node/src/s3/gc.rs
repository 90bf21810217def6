//! The garbage collector: removes blobs the S3 front wrote that no object and no unfinished
//! upload refers to any more, and that nobody wrote or referred to within the grace period.
//!
//! Dedup means one blob may back many objects, so a blob is never removed because one object
//! went; the collector decides from the whole picture:
//!
//! 1. At its start `S`, it lists the blob marks (`Table::Blobs`, written by every put, part
//!    upload and copy) touched before `S - grace`: the candidates.
//! 2. It then gathers every blob that an object or a part of an unfinished upload names.
//! 3. For each candidate not named, it reads the mark again (a quorum read) and, if it is
//!    still old, deletes the blob *conditionally*: the tombstone's version is `S - grace`, so
//!    on every replica it stands only over copies written before then, and removes the mark
//!    conditionally too (a stamp just above the one it read, so a newer touch wins).
//!
//! Why a put racing the collector cannot lose data: an operation that adds a reference either
//! writes the blob (a put's version is its start time) or touches its mark and then reads its
//! source again (a copy), and commits the reference within [`reference_window_ms`] (a quarter
//! of the grace period, plus the commit's own bounded time) of that, or fails. A reference relying on a write or touch before `S - grace`
//! was committed before `S`, so step 2 sees it. One relying on a later write keeps its blob,
//! because the conditional tombstone does not stand over that write. One relying on a later
//! touch is seen by step 3's second read, or its source was there at step 2. This holds while
//! nodes' clocks agree to well within the grace period (which is at least
//! `GC_GRACE_MS_MIN`).
//!
//! The collector runs on a schedule on one node (the lowest-numbered node it sees up), and on
//! demand (`cairn gc`); it is paced at `gc_deletes_per_sec` and reports its progress.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_engine::Hash;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::records::{self, BlobMark, ObjectRecord, PartRecord};
use crate::config::S3Settings;
use crate::healing::wall_ms;
use crate::meta::cluster::{self as meta, Walk};
use crate::meta::{Entry, MetaKey, Partition, Table};
use crate::server::State;

/// How long after writing or touching a blob an operation may start committing a reference to
/// it: a quarter of the grace period, so that with the commit's own time (at most
/// `META_CALL_TIMEOUT_MS`, and the grace period is at least `GC_GRACE_MS_MIN`) the reference is
/// in place within the grace period.
pub fn reference_window_ms(settings: &S3Settings) -> u64 {
    settings.gc_grace_ms / 4
}

/// Where a collection stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    pub running: bool,
    /// "marks", "references", "deleting", or "done".
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
    pub errors: u64,
    pub last_error: Option<String>,
    /// Collections finished since the node started.
    pub runs: u64,
}

/// One node's collector.
pub struct Collector {
    settings: S3Settings,
    running: AtomicBool,
    status: Mutex<GcStatus>,
}

impl Collector {
    pub fn new(settings: S3Settings) -> Collector {
        Collector {
            settings,
            running: AtomicBool::new(false),
            status: Mutex::new(GcStatus::default()),
        }
    }

    pub fn status(&self) -> GcStatus {
        self.status.lock().clone()
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Starts a collection in the background unless one is running; says whether it started.
    pub(crate) fn start(self: &Arc<Self>, state: &Arc<State>) -> bool {
        if self.running.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Running from this call on, so a caller polling the status never reads the last run's.
        self.status.lock().running = true;
        let (me, state) = (self.clone(), state.clone());
        tokio::spawn(async move {
            let result = me.run(&state).await;
            let mut status = me.status.lock();
            status.running = false;
            status.finished_ms = wall_ms();
            status.phase = "done".into();
            status.runs += 1;
            if let Err(e) = result {
                status.errors += 1;
                status.last_error = Some(e.clone());
                tracing::warn!(error = %e, "garbage collection stopped");
            } else {
                tracing::info!(
                    deleted = status.deleted,
                    bytes = status.deleted_bytes,
                    kept = status.kept,
                    "garbage collection finished"
                );
            }
            drop(status);
            me.running.store(false, Ordering::SeqCst);
        });
        true
    }

    fn update(&self, f: impl FnOnce(&mut GcStatus)) {
        f(&mut self.status.lock());
    }

    async fn run(&self, state: &Arc<State>) -> Result<(), String> {
        // While a layout change moves partitions, a read quorum of the new owners may not yet
        // hold every reference: collect nothing until the move is done.
        if state.routing().previous.is_some() {
            return Err("a layout change is still moving data; collection postponed".into());
        }
        let start = wall_ms();
        let cutoff = start.saturating_sub(self.settings.gc_grace_ms);
        self.update(|s| {
            let runs = s.runs;
            *s = GcStatus {
                running: true,
                phase: "marks".into(),
                started_ms: start,
                runs,
                ..GcStatus::default()
            };
        });

        // 1. Candidates: marks older than the grace period.
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        for index in 0..records::BLOB_MARK_PARTITIONS {
            let part = Partition::new(Table::Blobs, records::blob_mark_partition(index));
            let mut scanned = 0;
            meta::walk(state, &part, None, b"", |key, entry| {
                scanned += 1;
                let mark: Option<BlobMark> = entry.value.as_deref().and_then(records::decode);
                if let (Ok(hash), Some(mark)) = (<[u8; 32]>::try_from(key), mark)
                    && mark.touched_ms < cutoff
                    && entry.stamp.wall_ms < cutoff
                {
                    candidates.push(hash);
                }
                Walk::Next
            })
            .await
            .map_err(|e| e.to_string())?;
            let found = candidates.len() as u64;
            self.update(|s| {
                s.marks_scanned += scanned;
                s.candidates = found;
            });
        }

        // 2. References: every object's blobs and every unfinished upload's parts.
        self.update(|s| s.phase = "references".into());
        let referenced = self.references(state).await?;
        let count = referenced.len() as u64;
        self.update(|s| s.referenced_blobs = count);

        // 3. Delete what nothing names and nobody touched since.
        self.update(|s| s.phase = "deleting".into());
        let pause =
            Duration::from_secs_f64(1.0 / f64::from(self.settings.gc_deletes_per_sec.max(1)));
        for hash in candidates {
            self.update(|s| s.examined += 1);
            if referenced.contains(&hash) {
                self.update(|s| s.kept += 1);
                continue;
            }
            let key = records::blob_mark_key(&hash);
            let entry: Option<Entry> = meta::read(state, &key).await.map_err(|e| e.to_string())?;
            let Some(entry) = entry else { continue };
            let mark: Option<BlobMark> = entry.value.as_deref().and_then(records::decode);
            let Some(mark) = mark else { continue };
            if mark.touched_ms >= cutoff || entry.stamp.wall_ms >= cutoff {
                self.update(|s| s.kept += 1);
                continue;
            }
            match state
                .cluster_client
                .delete_written_before(&Hash::from_bytes(hash), cutoff.max(1))
                .await
            {
                Ok(_) => {
                    let removal = Entry {
                        stamp: entry.stamp.successor(),
                        value: None,
                    };
                    if let Err(e) = meta::write_conditional(state, vec![(key, removal)]).await {
                        self.update(|s| {
                            s.errors += 1;
                            s.last_error = Some(e.to_string());
                        });
                    }
                    self.update(|s| {
                        s.deleted += 1;
                        s.deleted_bytes += mark.len;
                    });
                }
                Err(e) => self.update(|s| {
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                }),
            }
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Every blob an object or an unfinished upload's part names, in every bucket that ever
    /// existed (a put racing a DeleteBucket may have left objects in a deleted one).
    ///
    /// Per bucket, parts are gathered before objects: completing an upload writes the object
    /// and only then forgets the parts, so a part's blob is seen in one of the two.
    async fn references(&self, state: &Arc<State>) -> Result<HashSet<[u8; 32]>, String> {
        let mut buckets = Vec::new();
        let part = Partition::new(Table::Buckets, records::BUCKETS_PARTITION);
        meta::walk_entries(state, &part, None, b"", true, |name, _| {
            if let Ok(name) = std::str::from_utf8(name) {
                buckets.push(name.to_string());
            }
            Walk::Next
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut referenced = HashSet::new();
        let mut unreadable = None;
        for bucket in buckets {
            let parts = Partition::new(Table::Parts, &*bucket);
            meta::walk(state, &parts, None, b"", |key, entry| {
                match entry
                    .value
                    .as_deref()
                    .and_then(records::decode::<PartRecord>)
                {
                    Some(record) => {
                        referenced.insert(record.blob.hash);
                    }
                    None => unreadable = Some(String::from_utf8_lossy(key).into_owned()),
                }
                Walk::Next
            })
            .await
            .map_err(|e| e.to_string())?;
            let objects = Partition::new(Table::Objects, &*bucket);
            meta::walk(state, &objects, None, b"", |key, entry| {
                match entry
                    .value
                    .as_deref()
                    .and_then(records::decode::<ObjectRecord>)
                {
                    Some(record) => referenced.extend(record.blobs.iter().map(|b| b.hash)),
                    None => unreadable = Some(String::from_utf8_lossy(key).into_owned()),
                }
                Walk::Next
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        // A record the collector cannot read might name anything: collect nothing.
        if let Some(key) = unreadable {
            return Err(format!(
                "the record of {key} is unreadable; nothing was collected"
            ));
        }
        Ok(referenced)
    }
}

/// Marks waiting for the mark writer; beyond it, a put waits for room.
pub const S3_MARK_QUEUE_MAX: usize = 16_384;

/// Marks written in one go (grouped by partition).
pub const S3_MARK_BATCH_MAX: usize = 512;

/// Tries of one batch of marks before the writer gives up on it (its blobs are then never
/// collected: space, never data).
pub const S3_MARK_WRITE_ATTEMPTS: u32 = 5;

/// How long the mark writer gathers marks after the first before writing them: under load,
/// one write per partition carries many marks.
pub const S3_MARK_LINGER_MS: u64 = 100;

/// Pause between tries of a batch of marks, times the try's number.
pub const S3_MARK_RETRY_PAUSE_MS: u64 = 500;

/// Writes the marks of blobs the S3 front stored, after their records, in batches: a mark
/// only tells the collector which blobs are its to consider (a put's own version keeps its
/// blob safe), so it need not delay the put's answer.
pub(crate) struct MarkWriter {
    queue: tokio::sync::mpsc::Sender<(MetaKey, Entry)>,
}

impl MarkWriter {
    pub(crate) fn start(state: Arc<State>) -> MarkWriter {
        let (queue, pending) = tokio::sync::mpsc::channel(S3_MARK_QUEUE_MAX);
        tokio::spawn(write_marks(state, pending));
        MarkWriter { queue }
    }

    /// Notes that `blob` was written (or referred to) now.
    pub(crate) async fn note(&self, state: &State, blob: &records::BlobRef) {
        let entry = Entry {
            stamp: meta::stamp(state),
            value: Some(records::encode(&BlobMark {
                touched_ms: wall_ms(),
                len: blob.len,
            })),
        };
        let _ = self
            .queue
            .send((records::blob_mark_key(&blob.hash), entry))
            .await;
    }
}

async fn write_marks(
    state: Arc<State>,
    mut pending: tokio::sync::mpsc::Receiver<(MetaKey, Entry)>,
) {
    while let Some(first) = pending.recv().await {
        let mut by_partition: std::collections::BTreeMap<Partition, Vec<(MetaKey, Entry)>> =
            Default::default();
        by_partition
            .entry(first.0.part.clone())
            .or_default()
            .push(first);
        let mut taken = 1;
        let linger = tokio::time::sleep(Duration::from_millis(S3_MARK_LINGER_MS));
        tokio::pin!(linger);
        while taken < S3_MARK_BATCH_MAX {
            let mark = tokio::select! {
                mark = pending.recv() => mark,
                _ = &mut linger => None,
            };
            let Some(mark) = mark else { break };
            by_partition
                .entry(mark.0.part.clone())
                .or_default()
                .push(mark);
            taken += 1;
        }
        for (part, marks) in by_partition {
            for attempt in 1..=S3_MARK_WRITE_ATTEMPTS {
                match meta::write(&state, marks.clone()).await {
                    Ok(()) => break,
                    Err(e) if attempt == S3_MARK_WRITE_ATTEMPTS => {
                        tracing::warn!(partition = ?part, error = %e, marks = marks.len(),
                            "blob marks not written; their blobs will not be collected");
                    }
                    Err(_) => {
                        let pause = S3_MARK_RETRY_PAUSE_MS * u64::from(attempt);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
        }
    }
}

/// Runs a collection every `gc_interval_ms` on the node that is the lowest-numbered one it
/// sees up (so, normally, on one node of the cluster).
pub(crate) async fn schedule(state: Arc<State>, collector: Arc<Collector>) {
    let interval = collector.settings.gc_interval_ms;
    if interval == 0 {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(interval)).await;
        if crate::healing::lowest_up_node(&state) {
            collector.start(&state);
        }
    }
}
