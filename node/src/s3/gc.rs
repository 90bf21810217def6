//! The garbage collector: removes blobs the S3 front wrote that no object and no unfinished
//! upload refers to any more, and that nobody wrote or referred to within the grace period.
//!
//! Dedup means one blob may back many objects, so a blob is never removed because one object
//! went; the collector decides from the whole picture:
//!
//! 1. At its start `S`, it lists the blob marks (`Table::Blobs`, written by every put, part
//!    upload and copy) touched before `S - grace`: the candidates. A blob the native API
//!    holds (`meta::marks`) is none: the native API keeps a blob until it is deleted there.
//! 2. It then gathers every blob that an object or a part of an unfinished upload names, and
//!    with each bucket's lifecycle configuration, what its rules make due.
//! 3. It expires and aborts what is due, each record read again first and removed only if
//!    unchanged, with a stamp just above the version judged (a newer write wins). Their blobs
//!    were gathered in step 2, so they go in the next collection, as a deleted object's do.
//! 4. For each candidate not named, it reads the mark again (a quorum read) and, if it is
//!    still old and no hold has appeared since, deletes the blob *conditionally*: the
//!    tombstone's version is `S - grace`, so on every replica it stands only over copies
//!    written before then, and removes the mark conditionally too (a stamp just above the one
//!    it read, so a newer touch wins).
//!
//! Why a put racing the collector cannot lose data: an operation that adds a reference either
//! writes the blob (a put's version is its start time) or touches its mark and then reads its
//! source again (a copy), and commits the reference within [`reference_window_ms`] (a quarter
//! of the grace period, plus the commit's own bounded time) of that, or fails. A reference
//! relying on a write or touch before `S - grace` was committed before `S`, so step 2 sees
//! it. One relying on a later write keeps its blob, because the conditional tombstone does
//! not stand over that write. One relying on a later touch is seen by step 4's second read,
//! or its source was there at step 2. This holds while nodes' clocks agree to well within the
//! grace period (which is at least `GC_GRACE_MS_MIN`).
//!
//! Why a blob the native API stored is kept: its put (or refresh) writes the blob with the
//! put's start as version, and queues its hold, which the hold writer commits within a second
//! or a few (`meta::marks`; it counts and logs a hold it gave up on). A copy the conditional
//! tombstone could stand over was written before `S - grace`, so its hold was in place before
//! `S`, where step 1 sees it, and step 4 reads it again before deleting. This needs the
//! metadata to take the hold within the grace period: a day by default, 10 s at the least.
//!
//! The collector runs on a schedule on one node (the lowest-numbered node it sees up), and on
//! demand (`cairn gc`); it is paced at `gc_deletes_per_sec` and reports its progress.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::meta::{Entry, MetaKey, Partition, Stamp, Table};
use cairn_engine::Hash;

use super::lifecycle::Lifecycle;
use super::records::{self, BlobMark, ObjectRecord, PartRecord, UploadRecord};
use crate::clock;
use crate::config::S3Settings;
use crate::limits::{S3_FORGET_BATCH_ENTRIES_MAX, S3_LIFECYCLE_DUE_PER_RUN_MAX};
use crate::meta::cluster::{self as meta, MetaError, Walk};
use crate::meta::marks;
use crate::state::{GcHandle, State};

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    #[error("a layout change is still moving data; collection postponed")]
    LayoutChanging,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the record of {key} is unreadable; nothing was collected")]
    Unreadable { key: String },
}

/// How long after writing or touching a blob an operation may start committing a reference to
/// it: a quarter of the grace period, so that with the commit's own time (at most
/// `META_CALL_TIMEOUT_MS`, and the grace period is at least `GC_GRACE_MS_MIN`) the reference is
/// in place within the grace period.
pub fn reference_window_ms(settings: &S3Settings) -> u64 {
    settings.gc_grace_ms / 4
}

/// Runs collections, one at a time: when asked (`cairn gc`, through the node's [`GcHandle`])
/// and every `gc_interval_ms` on the node that is the lowest-numbered one it sees up (so,
/// normally, on one node of the cluster).
pub(crate) async fn collector_loop(state: Arc<State>, settings: S3Settings) {
    let Some(handle) = state.gc.as_ref() else {
        return;
    };
    let interval = settings.gc_interval_ms;
    let collector = Collector {
        settings: &settings,
        handle,
    };
    loop {
        let scheduled = async {
            if interval == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(Duration::from_millis(interval)).await
            }
        };
        tokio::select! {
            _ = handle.started() => {}
            _ = scheduled => {
                if !state.lowest_up_node() || !handle.begin() {
                    continue;
                }
            }
        }
        let result = collector.run(&state).await;
        handle.end(|status| {
            status.finished_ms = clock::wall_ms();
            status.phase = "done".into();
            match &result {
                Err(e @ GcError::LayoutChanging) => {
                    // Expected while data moves: said once, and shown in the status, the
                    // metrics and `cairn gc`'s exit code until a collection runs.
                    if status.postponed.is_none() {
                        tracing::info!(reason = %e, "garbage collection postponed");
                    }
                    status.postponed = Some(e.to_string());
                }
                Err(e) => {
                    status.runs += 1;
                    status.errors += 1;
                    status.last_error = Some(e.to_string());
                    tracing::warn!(error = %e, "garbage collection stopped");
                }
                Ok(()) => {
                    status.runs += 1;
                    if status.errors == 0 {
                        status.last_success_ms = status.finished_ms;
                    }
                    tracing::info!(
                        deleted = status.deleted,
                        bytes = status.deleted_bytes,
                        kept = status.kept,
                        "garbage collection finished"
                    )
                }
            }
        });
    }
}

/// What a bucket's lifecycle rules made due, with the stamp of the record judged.
enum Due {
    Expire {
        bucket: String,
        key: String,
        stamp: Stamp,
    },
    Abort {
        bucket: String,
        key: String,
        upload_id: String,
        stamp: Stamp,
    },
}

/// One collection's view of its settings and of the handle it reports its progress to.
struct Collector<'a> {
    settings: &'a S3Settings,
    handle: &'a GcHandle,
}

impl Collector<'_> {
    fn update(&self, f: impl FnOnce(&mut cairn_core::status::GcStatus)) {
        self.handle.update(f);
    }

    async fn run(&self, state: &Arc<State>) -> Result<(), GcError> {
        // While a layout change moves partitions, a read quorum of the new owners may not yet
        // hold every reference: collect nothing until the move is done.
        if state.routing().previous.is_some() {
            return Err(GcError::LayoutChanging);
        }
        let start = clock::wall_ms();
        let cutoff = start.saturating_sub(self.settings.gc_grace_ms);
        self.update(|s| {
            *s = cairn_core::status::GcStatus {
                running: true,
                phase: "marks".into(),
                started_ms: start,
                runs: s.runs,
                last_success_ms: s.last_success_ms,
                ..Default::default()
            };
        });

        // 1. Candidates: marks older than the grace period, but none the native API holds.
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        for index in 0..marks::BLOB_MARK_PARTITIONS {
            let part = Partition::new(Table::Blobs, marks::blob_mark_partition(index));
            let mut scanned = 0;
            meta::walk(state, &part, None, b"", |key, entry| {
                scanned += 1;
                // The walk goes in key order, and a hold's key follows its mark's.
                if let Some(hash) = marks::held_hash(key) {
                    if entry.value.is_some() && candidates.last() == Some(&hash) {
                        candidates.pop();
                    }
                    return Walk::Next;
                }
                let mark: Option<BlobMark> = entry.value.as_deref().and_then(records::decode);
                if let (Ok(hash), Some(mark)) = (<[u8; 32]>::try_from(key), mark)
                    && mark.touched_ms < cutoff
                    && entry.stamp.wall_ms < cutoff
                {
                    candidates.push(hash);
                }
                Walk::Next
            })
            .await?;
            let found = candidates.len() as u64;
            self.update(|s| {
                s.marks_scanned += scanned;
                s.candidates = found;
            });
        }

        // 2. References: every object's blobs and every unfinished upload's parts; and what
        // the buckets' lifecycle rules expire or abort.
        self.update(|s| s.phase = "references".into());
        let (referenced, due) = self.references(state, start).await?;
        let count = referenced.len() as u64;
        self.update(|s| s.referenced_blobs = count);

        // 3. Lifecycle: expired objects go as a DeleteObject would (their blobs stay referred
        // to in this collection and go in the next), aborted uploads as an abort would.
        self.update(|s| s.phase = "lifecycle".into());
        self.apply_lifecycle(state, due).await;

        // 4. Delete what nothing names and nobody touched since.
        self.update(|s| s.phase = "deleting".into());
        let pause = self.pause();
        for hash in candidates {
            self.update(|s| s.examined += 1);
            if referenced.contains(&hash) {
                self.update(|s| s.kept += 1);
                continue;
            }
            let key = marks::blob_mark_key(&hash);
            let entry: Option<Entry> = meta::read(state, &key).await?;
            let Some(entry) = entry else { continue };
            let mark: Option<BlobMark> = entry.value.as_deref().and_then(records::decode);
            let Some(mark) = mark else { continue };
            if mark.touched_ms >= cutoff || entry.stamp.wall_ms >= cutoff {
                self.update(|s| s.kept += 1);
                continue;
            }
            // A hold whose write was slow to land, after step 1's walk.
            let hold = meta::read(state, &marks::blob_hold_key(&hash)).await?;
            if hold.is_some_and(|h| h.value.is_some()) {
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
    async fn references(
        &self,
        state: &Arc<State>,
        now_ms: u64,
    ) -> Result<(HashSet<[u8; 32]>, Vec<Due>), GcError> {
        let mut buckets = Vec::new();
        let part = Partition::new(Table::Buckets, records::BUCKETS_PARTITION);
        meta::walk_entries(state, &part, None, b"", true, |name, _| {
            if let Ok(name) = std::str::from_utf8(name) {
                buckets.push(name.to_string());
            }
            Walk::Next
        })
        .await?;
        let mut referenced = HashSet::new();
        let mut due = Vec::new();
        let mut unreadable = None;
        for bucket in buckets {
            let lifecycle: Option<Lifecycle> =
                meta::read(state, &records::bucket_lifecycle_key(&bucket))
                    .await?
                    .and_then(|e| e.value)
                    .and_then(|v| records::decode(&v));
            if let Some(lifecycle) = &lifecycle {
                let uploads = Partition::new(Table::Uploads, &*bucket);
                meta::walk(state, &uploads, None, b"", |sort_key, entry| {
                    let upload = entry
                        .value
                        .as_deref()
                        .and_then(records::decode::<UploadRecord>);
                    if let (Some(upload), Some((key, upload_id))) =
                        (upload, records::split_pair(sort_key))
                        && due.len() < S3_LIFECYCLE_DUE_PER_RUN_MAX
                        && lifecycle.aborts(&key, upload.initiated_ms, now_ms)
                    {
                        due.push(Due::Abort {
                            bucket: bucket.clone(),
                            key,
                            upload_id,
                            stamp: entry.stamp,
                        });
                    }
                    Walk::Next
                })
                .await?;
            }
            let parts = Partition::new(Table::Parts, &*bucket);
            meta::walk(state, &parts, None, b"", |key, entry| {
                match entry
                    .value
                    .as_deref()
                    .and_then(records::decode::<PartRecord>)
                {
                    Some(record) => referenced.extend(record.blobs().map(|b| b.hash)),
                    None => unreadable = Some(String::from_utf8_lossy(key).into_owned()),
                }
                Walk::Next
            })
            .await?;
            let objects = Partition::new(Table::Objects, &*bucket);
            meta::walk(state, &objects, None, b"", |key, entry| {
                match entry
                    .value
                    .as_deref()
                    .and_then(records::decode::<ObjectRecord>)
                {
                    Some(record) => {
                        referenced.extend(record.blobs.iter().map(|b| b.hash));
                        if let (Some(lifecycle), Ok(name)) = (&lifecycle, std::str::from_utf8(key))
                            && due.len() < S3_LIFECYCLE_DUE_PER_RUN_MAX
                            && lifecycle.expires(
                                name,
                                record.size,
                                &record.tags,
                                record.last_modified_ms,
                                now_ms,
                            )
                        {
                            due.push(Due::Expire {
                                bucket: bucket.clone(),
                                key: name.to_string(),
                                stamp: entry.stamp,
                            });
                        }
                    }
                    None => unreadable = Some(String::from_utf8_lossy(key).into_owned()),
                }
                Walk::Next
            })
            .await?;
        }
        // A record the collector cannot read might name anything: collect nothing.
        if let Some(key) = unreadable {
            return Err(GcError::Unreadable { key });
        }
        Ok((referenced, due))
    }

    /// The pause between two removals, for `gc_deletes_per_sec`.
    fn pause(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.settings.gc_deletes_per_sec.max(1)))
    }

    /// Expires and aborts what the lifecycle rules made due, paced like the deletions. Each
    /// record is read again just before its removal and left alone if it changed since it was
    /// judged; the removal is stamped just above the version judged (`Stamp::just_above`), so
    /// a put, a retagging or a new part written meanwhile wins, and a rule never removes what
    /// it did not judge.
    async fn apply_lifecycle(&self, state: &Arc<State>, due: Vec<Due>) {
        for item in due {
            let result = match &item {
                Due::Expire { bucket, key, stamp } => {
                    let record = records::object_key(bucket, key);
                    self.remove_if_unchanged(state, record, *stamp).await
                }
                Due::Abort {
                    bucket,
                    key,
                    upload_id,
                    stamp,
                } => {
                    self.abort_upload(state, bucket, key, upload_id, *stamp)
                        .await
                }
            };
            match result {
                Ok(true) => self.update(|s| match item {
                    Due::Expire { .. } => s.expired_objects += 1,
                    Due::Abort { .. } => s.aborted_uploads += 1,
                }),
                Ok(false) => {}
                Err(e) => self.update(|s| {
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                }),
            }
            tokio::time::sleep(self.pause()).await;
        }
    }

    /// Removes a record if it still stands as judged (stamp `judged`); says whether it did.
    async fn remove_if_unchanged(
        &self,
        state: &Arc<State>,
        key: MetaKey,
        judged: Stamp,
    ) -> Result<bool, MetaError> {
        let now = meta::read(state, &key).await?;
        if now.map(|e| e.stamp) != Some(judged) {
            return Ok(false);
        }
        let removal = Entry {
            stamp: judged.just_above(None),
            value: None,
        };
        meta::write_conditional(state, vec![(key, removal)]).await?;
        Ok(true)
    }

    /// Aborts an upload as AbortMultipartUpload does, if it still stands as judged: its parts'
    /// records, then its own, each removal conditional on the version read. (A part that
    /// arrives after the parts were listed outlives the upload: its blob is kept, as after a
    /// client's abort racing an UploadPart.)
    async fn abort_upload(
        &self,
        state: &Arc<State>,
        bucket: &str,
        key: &str,
        upload_id: &str,
        judged: Stamp,
    ) -> Result<bool, MetaError> {
        let upload = records::upload_key(bucket, key, upload_id);
        if meta::read(state, &upload).await?.map(|e| e.stamp) != Some(judged) {
            return Ok(false);
        }
        let parts = Partition::new(Table::Parts, bucket);
        let mut removals = Vec::new();
        meta::walk(
            state,
            &parts,
            None,
            &records::parts_prefix(key, upload_id),
            |sort_key, entry| {
                if let Some(n) = records::part_number_of(sort_key) {
                    removals.push((
                        records::part_key(bucket, key, upload_id, n),
                        Entry {
                            stamp: entry.stamp.just_above(None),
                            value: None,
                        },
                    ));
                }
                Walk::Next
            },
        )
        .await?;
        let removal = Entry {
            stamp: judged.just_above(None),
            value: None,
        };
        write_upload_removal(state, removals, (upload, removal), Removal::Conditional).await?;
        Ok(true)
    }
}

/// How removals are written: with the stamps given, resent with a new stamp if an owner holds a
/// newer entry (`meta::write`: a client's abort), or standing only where nothing newer was
/// written (`meta::write_conditional`: a lifecycle rule's).
#[derive(Clone, Copy)]
pub(crate) enum Removal {
    Fresh,
    Conditional,
}

/// Writes an upload's removal: its parts' records first, in batches well under the node
/// protocol's message limit, and its own record last, so that a failure part-way leaves the
/// upload listed and the removal can be retried.
pub(crate) async fn write_upload_removal(
    state: &Arc<State>,
    parts: Vec<(MetaKey, Entry)>,
    upload: (MetaKey, Entry),
    how: Removal,
) -> Result<(), MetaError> {
    let write = |entries: Vec<(MetaKey, Entry)>| async move {
        match how {
            Removal::Fresh => meta::write(state, entries).await,
            Removal::Conditional => meta::write_conditional(state, entries).await,
        }
    };
    for batch in parts.chunks(S3_FORGET_BATCH_ENTRIES_MAX) {
        write(batch.to_vec()).await?;
    }
    write(vec![upload]).await
}

/// Marks `blob` as written (or referred to) by the S3 front now, before it is stored: the mark
/// tells the collector which blobs are its to consider, and a native delete which bytes an
/// object may hold (`meta::marks`). A body's chunks are marked as they are stored, before any
/// record names them, so that the chunks of a body refused part-way are collected too.
pub(crate) async fn mark(state: &Arc<State>, blob: &records::BlobRef) -> Result<(), MetaError> {
    let entry = Entry {
        stamp: meta::stamp(state),
        value: Some(records::encode(&BlobMark {
            touched_ms: clock::wall_ms(),
            len: blob.len,
        })),
    };
    meta::write(state, vec![(marks::blob_mark_key(&blob.hash), entry)]).await
}
