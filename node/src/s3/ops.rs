//! The S3 operations, each a method of [`S3Front`]: metadata reads and writes through
//! [`crate::meta::cluster`], blob reads and writes through the node's cluster client.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_client::ClientError;
use cairn_client::wire::{ByteRange, ErrorCode};
use cairn_engine::Hash;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::S3Front;
use super::body::{self, Claimed, Received};
use super::records::{
    self, BlobMark, BlobRef, BucketRecord, ObjectRecord, PartRecord, UploadRecord,
};
use crate::healing::wall_ms;
use crate::meta::cluster::{self as meta, MetaError, Walk};
use crate::meta::{Entry, MetaKey, Partition, Table};

/// Keys a listing returns at most, whatever `max-keys` asks: 1,000, as S3.
pub const S3_LIST_KEYS_MAX: usize = 1_000;

/// Keys one DeleteObjects may name: 1,000, as S3.
pub const S3_DELETE_OBJECTS_MAX: usize = 1_000;

/// Part numbers run from 1 to this, as S3.
pub const S3_PART_NUMBER_MAX: i32 = 10_000;

/// Every part but the last must be at least this long: 5 MiB, as S3.
pub const S3_PART_BYTES_MIN: u64 = 5 * 1024 * 1024;

/// Longest object key, in bytes, as S3.
pub const S3_KEY_BYTES_MAX: usize = 1024;

/// Most bytes of user metadata (`x-amz-meta-*` names and values) on one object: 2 KiB, as S3.
pub const S3_USER_METADATA_BYTES_MAX: usize = 2 * 1024;

/// Part records deleted in one metadata write when an upload is completed or aborted: with
/// keys of at most `S3_KEY_BYTES_MAX`, a batch stays far under the node protocol's limit.
pub const S3_FORGET_BATCH_ENTRIES_MAX: usize = 500;

/// How long a node takes a bucket it found to still exist without asking again: a
/// DeleteBucket through another node may let puts through this one into the deleted bucket
/// for this long (their objects stay invisible unless the bucket is created again).
pub const S3_BUCKET_SEEN_MS: u64 = 1_000;

/// Buckets a node remembers as seen; beyond it, it forgets them all.
pub const S3_BUCKETS_SEEN_MAX: usize = 10_000;

/// Pieces of an object read ahead of the client.
pub const S3_READ_AHEAD_PIECES: usize = 8;

fn now_ms() -> u64 {
    wall_ms()
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn ms_of(ts: &Timestamp) -> u64 {
    let t: SystemTime = time_to_system(ts);
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn time_to_system(ts: &Timestamp) -> SystemTime {
    let odt: time::OffsetDateTime = ts.clone().into();
    SystemTime::from(odt)
}

fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

fn meta_error(e: MetaError) -> S3Error {
    let mut err = s3_error!(ServiceUnavailable, "metadata unavailable: {e}");
    err.set_status_code(hyper::StatusCode::SERVICE_UNAVAILABLE);
    err
}

fn client_error(e: ClientError) -> S3Error {
    match &e {
        ClientError::Remote {
            code: ErrorCode::StoreFull,
            ..
        } => {
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                format!("the cluster has no room: {e}"),
            );
            err.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE);
            err
        }
        ClientError::Remote {
            code: ErrorCode::NotFound,
            ..
        }
        | ClientError::NotFound { .. } => {
            s3_error!(InternalError, "an object's blob is missing: {e}")
        }
        _ if e.is_transient() => s3_error!(ServiceUnavailable, "{e}"),
        _ => s3_error!(InternalError, "{e}"),
    }
}

fn decode_record<T: for<'de> serde::Deserialize<'de>>(entry: Option<Entry>) -> Option<T> {
    entry
        .and_then(|e| e.value)
        .and_then(|v| records::decode(&v))
}

fn user_metadata(metadata: Option<Metadata>) -> S3Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = metadata.unwrap_or_default().into_iter().collect();
    pairs.sort();
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > S3_USER_METADATA_BYTES_MAX {
        return Err(s3_error!(
            MetadataTooLarge,
            "{bytes} bytes of user metadata; the limit is {S3_USER_METADATA_BYTES_MAX}"
        ));
    }
    Ok(pairs)
}

fn metadata_map(pairs: &[(String, String)]) -> Option<Metadata> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

/// Conditional writes (`If-Match`, `If-None-Match: *` on PutObject and
/// CompleteMultipartUpload) need a compare-and-set the metadata does not offer: refuse them
/// rather than overwrite silently.
fn refuse_conditional_write(conditional: bool) -> S3Result<()> {
    if conditional {
        return Err(s3_error!(
            NotImplemented,
            "conditional writes (If-Match, If-None-Match) are not supported"
        ));
    }
    Ok(())
}

fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > S3_KEY_BYTES_MAX {
        return Err(s3_error!(
            KeyTooLongError,
            "a key is 1 to {S3_KEY_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

/// Does an `If-Match`-style condition hold for this ETag?
fn condition_matches(condition: &ETagCondition, etag_hex: &str) -> bool {
    match condition.as_etag() {
        None => condition.is_any(),
        Some(tag) => tag.value() == etag_hex,
    }
}

/// Evaluates a GET's or HEAD's conditional headers (RFC 9110 order, as S3).
fn check_conditions(
    record: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified_secs = record.last_modified_ms / 1000;
    if let Some(cond) = if_match {
        if !condition_matches(cond, &record.etag) {
            return Err(s3_error!(PreconditionFailed, "If-Match failed"));
        }
    } else if let Some(since) = if_unmodified_since
        && modified_secs > ms_of(since) / 1000
    {
        return Err(s3_error!(
            PreconditionFailed,
            "modified since If-Unmodified-Since"
        ));
    }
    if let Some(cond) = if_none_match {
        if condition_matches(cond, &record.etag) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(since) = if_modified_since
        && modified_secs <= ms_of(since) / 1000
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

/// The pieces of an object's blobs covering `range` (offset, length) of the object.
fn segments(blobs: &[BlobRef], offset: u64, len: u64) -> Vec<(Hash, ByteRange, u64)> {
    let mut out = Vec::new();
    let (mut start, end) = (offset, offset + len);
    let mut base = 0u64;
    for blob in blobs {
        let blob_end = base + blob.len;
        if start < blob_end && start < end {
            let from = start - base;
            let to = end.min(blob_end) - base;
            out.push((
                Hash::from_bytes(blob.hash),
                ByteRange {
                    offset: from,
                    len: to - from,
                },
                blob.len,
            ));
            start = base + to;
        }
        base = blob_end;
    }
    out
}

/// The bucket and key a copy reads from.
fn copy_source_key(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "only bucket/key copy sources")),
    }
}

/// Which upload a part belongs to.
#[derive(Clone, Copy)]
struct UploadKey<'a> {
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
}

/// Where one blob's piece of an object comes from.
enum Segment {
    Local(Bytes),
    Remote(cairn_client::BlobReader),
}

/// Opens one blob's piece of an object: from this node's engine if it holds a good replica,
/// else through the cluster.
async fn open_segment(
    state: &Arc<crate::server::State>,
    (hash, range, blob_len): (Hash, ByteRange, u64),
) -> S3Result<Segment> {
    let range = (range.offset != 0 || range.len != blob_len).then_some(range);
    if let Some(bytes) = crate::server::local_read(state, hash, range).await {
        return Ok(Segment::Local(bytes));
    }
    state
        .cluster_client
        .open_read(&hash, range)
        .await
        .map(Segment::Remote)
        .map_err(client_error)
}

/// An object's bytes as a stream: its blobs read one after another, each verified.
struct ObjectStream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl futures_core::Stream for ObjectStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl S3Front {
    fn client(&self) -> &cairn_client::Client {
        &self.state.cluster_client
    }

    async fn write_meta(&self, key: MetaKey, value: Option<Vec<u8>>) -> S3Result<()> {
        let entry = Entry {
            stamp: meta::stamp(&self.state),
            value,
        };
        meta::write(&self.state, vec![(key, entry)])
            .await
            .map_err(meta_error)
    }

    async fn read_meta(&self, key: &MetaKey) -> S3Result<Option<Entry>> {
        meta::read(&self.state, key).await.map_err(meta_error)
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let seen = self.buckets_seen.lock().get(bucket).copied();
        if seen.is_some_and(|t| t.elapsed() < Duration::from_millis(S3_BUCKET_SEEN_MS)) {
            return Ok(());
        }
        let entry = self.read_meta(&records::bucket_key(bucket)).await?;
        match decode_record::<BucketRecord>(entry) {
            Some(_) => {
                let mut seen = self.buckets_seen.lock();
                if seen.len() >= S3_BUCKETS_SEEN_MAX {
                    seen.clear();
                }
                seen.insert(bucket.to_string(), Instant::now());
                Ok(())
            }
            None => Err(s3_error!(NoSuchBucket, "no bucket {bucket}")),
        }
    }

    /// An object's record; NoSuchKey (or NoSuchBucket) if there is none.
    async fn object(&self, bucket: &str, key: &str) -> S3Result<ObjectRecord> {
        let entry = self.read_meta(&records::object_key(bucket, key)).await?;
        match decode_record::<ObjectRecord>(entry) {
            Some(record) => Ok(record),
            None => {
                self.require_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey, "no key {key} in {bucket}"))
            }
        }
    }

    async fn receive(
        &self,
        body: Option<StreamingBlob>,
        claimed: Claimed,
        req_trailers: Option<&s3s::TrailingHeaders>,
    ) -> S3Result<Received> {
        body::receive(
            body,
            &claimed,
            req_trailers,
            self.settings.object_bytes_max,
            &self.spool_dir,
        )
        .await
    }

    /// Stores a received body as a blob; returns what the object's record names. The put's
    /// version, set when it starts, keeps the blob from any collection decided before. The
    /// caller notes the blob for the collector (`marks`) once the record is written.
    async fn store_blob(&self, received: Received) -> S3Result<Vec<BlobRef>> {
        if received.len == 0 {
            return Ok(Vec::new());
        }
        let hash = received.hash;
        let put = received.held.put(self.client(), hash, received.len).await;
        put.map_err(client_error)?;
        Ok(vec![BlobRef {
            hash: *hash.as_bytes(),
            len: received.len,
        }])
    }

    /// A copy's source object, with its `x-amz-copy-source-if-(none-)match` conditions.
    async fn copy_source(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<ObjectRecord> {
        let source = self.object(bucket, key).await?;
        if if_match.is_some_and(|c| !condition_matches(c, &source.etag)) {
            return Err(s3_error!(
                PreconditionFailed,
                "x-amz-copy-source-if-match failed"
            ));
        }
        if if_none_match.is_some_and(|c| condition_matches(c, &source.etag)) {
            return Err(s3_error!(
                PreconditionFailed,
                "x-amz-copy-source-if-none-match failed"
            ));
        }
        Ok(source)
    }

    /// Stores a part's received bytes and its record (within the reference window of `started`),
    /// and notes its blob for the collector.
    async fn commit_part(
        &self,
        upload: UploadKey<'_>,
        number: i32,
        received: Received,
        started: Instant,
    ) -> S3Result<PartRecord> {
        let (len, etag) = (received.len, received.md5_hex.clone());
        let hash = *received.hash.as_bytes();
        self.store_blob(received).await?;
        let record = PartRecord {
            blob: BlobRef { hash, len },
            etag,
            last_modified_ms: now_ms(),
        };
        self.within_reference_window(started)?;
        let key = records::part_key(upload.bucket, upload.key, upload.upload_id, number as u32);
        self.write_meta(key, Some(records::encode(&record))).await?;
        self.marks.note(&self.state, &record.blob).await;
        Ok(record)
    }

    /// Refuses to commit a reference later than the collector allows (see `gc`): the caller
    /// wrote or touched what it refers to at `since`.
    fn within_reference_window(&self, since: Instant) -> S3Result<()> {
        let window = Duration::from_millis(super::gc::reference_window_ms(&self.settings));
        if since.elapsed() > window {
            return Err(s3_error!(
                ServiceUnavailable,
                "the request took longer than {} ms; nothing was committed, retry it",
                window.as_millis()
            ));
        }
        Ok(())
    }

    /// Opens an object's bytes (or `range` of them) and streams them. A blob this node holds
    /// a replica of is read from its own engine (checked); the others through the cluster.
    async fn open_object(
        &self,
        record: &ObjectRecord,
        offset: u64,
        len: u64,
    ) -> S3Result<StreamingBlob> {
        let mut parts = segments(&record.blobs, offset, len).into_iter();
        let (tx, rx) = tokio::sync::mpsc::channel(S3_READ_AHEAD_PIECES);
        // The first blob opens before the answer starts, so a missing or unreachable blob is a
        // typed error rather than a cut-off body.
        let first = match parts.next() {
            Some(segment) => Some(open_segment(&self.state, segment).await?),
            None => None,
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut next = first;
            while let Some(source) = next.take() {
                match source {
                    Segment::Local(bytes) => {
                        if tx.send(Ok(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Segment::Remote(mut reader) => loop {
                        let piece = std::future::poll_fn(|cx| reader.stream.poll_piece(cx)).await;
                        match piece {
                            Some(Ok(bytes)) => {
                                if tx.send(Ok(bytes)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                            None => break,
                        }
                    },
                }
                let Some(segment) = parts.next() else { break };
                match open_segment(&state, segment).await {
                    Ok(source) => next = Some(source),
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(StreamingBlob::wrap(ObjectStream { rx }))
    }

    /// Walks a partition's live records; `each` gets the key and the record's bytes.
    async fn walk(
        &self,
        part: &Partition,
        after: Option<Vec<u8>>,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Walk,
    ) -> S3Result<()> {
        meta::walk(&self.state, part, after, prefix, |key, entry| {
            each(key, entry.value.as_deref().unwrap_or_default())
        })
        .await
        .map_err(meta_error)
    }

    /// A listing of a bucket's objects, shared by both ListObjects versions.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<String>,
        max: usize,
    ) -> S3Result<Listing> {
        self.require_bucket(bucket).await?;
        let mut listing = Listing::default();
        if max == 0 {
            return Ok(listing);
        }
        let part = Partition::new(Table::Objects, bucket);
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut last_prefix: Option<String> = None;
        let mut error = None;
        // A marker that is a common prefix (the last entry of a previous page) resumes after
        // every key under it.
        let mut start = after.map(String::into_bytes);
        if let (Some(d), Some(marker)) = (delimiter, start.as_mut())
            && marker.starts_with(prefix.as_bytes())
            && marker.ends_with(d.as_bytes())
            && marker.len() > prefix.len()
        {
            marker.push(0xFF);
        }
        self.walk(&part, start, prefix.as_bytes(), |key, value| {
            let Ok(key) = std::str::from_utf8(key) else {
                return Walk::Next;
            };
            if let Some(d) = delimiter
                && let Some(pos) = key[prefix.len()..].find(d)
            {
                let common = &key[..prefix.len() + pos + d.len()];
                if last_prefix.as_deref() == Some(common) {
                    return Walk::Next;
                }
                if listing.count() == max {
                    listing.truncated = true;
                    return Walk::Stop;
                }
                last_prefix = Some(common.to_string());
                listing.prefixes.push(common.to_string());
                listing.next_marker = Some(common.to_string());
                // Every key under the common prefix sorts below the prefix with 0xFF after it
                // (no UTF-8 byte is 0xFF).
                let mut skip = common.as_bytes().to_vec();
                skip.push(0xFF);
                return Walk::SkipTo(skip);
            }
            if listing.count() == max {
                listing.truncated = true;
                return Walk::Stop;
            }
            match records::decode::<ObjectRecord>(value) {
                Some(record) => {
                    listing.next_marker = Some(key.to_string());
                    listing.objects.push((key.to_string(), record));
                }
                None => error = Some(key.to_string()),
            }
            Walk::Next
        })
        .await?;
        if let Some(key) = error {
            return Err(s3_error!(
                InternalError,
                "the record of {key} is unreadable"
            ));
        }
        Ok(listing)
    }

    /// Every part record of an upload, in part number order.
    async fn parts_of(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<Vec<(u32, PartRecord)>> {
        let part = Partition::new(Table::Parts, bucket);
        let mut parts = Vec::new();
        self.walk(
            &part,
            None,
            &records::parts_prefix(key, upload_id),
            |k, v| {
                if let (Some(n), Some(record)) = (records::part_number_of(k), records::decode(v)) {
                    parts.push((n, record));
                }
                Walk::Next
            },
        )
        .await?;
        Ok(parts)
    }

    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<UploadRecord> {
        let entry = self
            .read_meta(&records::upload_key(bucket, key, upload_id))
            .await?;
        decode_record(entry)
            .ok_or_else(|| s3_error!(NoSuchUpload, "no upload {upload_id} for {key}"))
    }

    /// Deletes an upload's record and its parts' records (their blobs are left to the
    /// collector).
    async fn forget_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, PartRecord)],
    ) -> S3Result<()> {
        let stamp = meta::stamp(&self.state);
        let part_deletes: Vec<(MetaKey, Entry)> = parts
            .iter()
            .map(|(n, _)| {
                (
                    records::part_key(bucket, key, upload_id, *n),
                    Entry { stamp, value: None },
                )
            })
            .collect();
        let upload_delete = vec![(
            records::upload_key(bucket, key, upload_id),
            Entry { stamp, value: None },
        )];
        // Parts first, in batches well under the node protocol's message limit; the upload
        // last, so a failure part-way leaves it listed and an abort can be retried.
        for batch in part_deletes.chunks(S3_FORGET_BATCH_ENTRIES_MAX) {
            meta::write(&self.state, batch.to_vec())
                .await
                .map_err(meta_error)?;
        }
        meta::write(&self.state, upload_delete)
            .await
            .map_err(meta_error)
    }
}

#[derive(Default)]
struct Listing {
    objects: Vec<(String, ObjectRecord)>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned.
    next_marker: Option<String>,
}

impl Listing {
    fn count(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }

    /// Keys and prefixes as the client asked for them: `encoding-type=url` wants them
    /// percent-encoded.
    fn encode_keys(&mut self, encoding: Option<&EncodingType>) {
        if encoding.is_some_and(|e| e.as_str() == EncodingType::URL) {
            for (key, _) in &mut self.objects {
                *key = url_encode(key);
            }
            for prefix in &mut self.prefixes {
                *prefix = url_encode(prefix);
            }
            self.next_marker = self.next_marker.as_deref().map(url_encode);
        }
    }

    fn contents(&self) -> Option<Vec<Object>> {
        Some(
            self.objects
                .iter()
                .map(|(key, r)| Object {
                    key: Some(key.clone()),
                    size: Some(r.size as i64),
                    e_tag: Some(etag(&r.etag)),
                    last_modified: Some(timestamp(r.last_modified_ms)),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                })
                .collect(),
        )
    }

    fn common_prefixes(&self) -> Option<Vec<CommonPrefix>> {
        (!self.prefixes.is_empty()).then(|| {
            self.prefixes
                .iter()
                .map(|p| CommonPrefix {
                    prefix: Some(p.clone()),
                })
                .collect()
        })
    }
}

/// Percent-encodes all but unreserved characters and `/`, as S3 does for `encoding-type=url`.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` percent-encoded if the client asked for `encoding-type=url`.
fn encoded(text: Option<String>, encoding: Option<&EncodingType>) -> Option<String> {
    match encoding {
        Some(e) if e.as_str() == EncodingType::URL => text.as_deref().map(url_encode),
        _ => text,
    }
}

fn max_keys(requested: Option<i32>) -> usize {
    requested
        .map(|m| m.max(0) as usize)
        .unwrap_or(S3_LIST_KEYS_MAX)
        .min(S3_LIST_KEYS_MAX)
}

/// Continuation tokens are the hex of the last key or prefix a page returned.
fn encode_token(marker: &str) -> String {
    records::hex(marker.as_bytes())
}

fn decode_token(token: &str) -> S3Result<String> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes
        .filter(|_| token.len().is_multiple_of(2))
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))
}

fn new_upload_id() -> S3Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| s3_error!(InternalError, "no randomness for an upload id"))?;
    Ok(records::hex(&bytes))
}

fn claimed_of(
    content_length: Option<i64>,
    content_md5: Option<String>,
    sums: [Option<String>; 5],
    headers: &hyper::HeaderMap,
) -> Claimed {
    let [crc32, crc32c, sha1, sha256, crc64nvme] = sums;
    let trailers_announced = headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    Claimed {
        content_length,
        content_md5,
        crc32,
        crc32c,
        sha1,
        sha256,
        crc64nvme,
        trailers_announced,
    }
}

#[async_trait::async_trait]
impl S3 for S3Front {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let key = records::bucket_key(&bucket);
        if decode_record::<BucketRecord>(self.read_meta(&key).await?).is_some() {
            return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {bucket} exists"));
        }
        let record = BucketRecord {
            created_ms: now_ms(),
        };
        self.write_meta(key, Some(records::encode(&record))).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let listing = self.list(&bucket, "", None, None, 1).await?;
        let mut uploads = 0;
        self.walk(
            &Partition::new(Table::Uploads, &*bucket),
            None,
            b"",
            |_, _| {
                uploads += 1;
                Walk::Stop
            },
        )
        .await?;
        if !listing.objects.is_empty() || uploads > 0 {
            return Err(s3_error!(
                BucketNotEmpty,
                "bucket {bucket} holds objects or uploads"
            ));
        }
        self.buckets_seen.lock().remove(&bucket);
        self.write_meta(records::bucket_key(&bucket), None).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let part = Partition::new(Table::Buckets, records::BUCKETS_PARTITION);
        let mut buckets = Vec::new();
        self.walk(&part, None, b"", |name, value| {
            if let (Ok(name), Some(record)) = (
                std::str::from_utf8(name),
                records::decode::<BucketRecord>(value),
            ) {
                buckets.push(Bucket {
                    name: Some(name.to_string()),
                    creation_date: Some(timestamp(record.created_ms)),
                    ..Default::default()
                });
            }
            Walk::Next
        })
        .await?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("cairn".into()),
                id: Some("cairn".into()),
            }),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let started = Instant::now();
        let input = req.input;
        check_key(&input.key)?;
        refuse_conditional_write(input.if_match.is_some() || input.if_none_match.is_some())?;
        let user_metadata = user_metadata(input.metadata)?;
        let claimed = claimed_of(
            input.content_length,
            input.content_md5,
            [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_sha1,
                input.checksum_sha256,
                input.checksum_crc64nvme,
            ],
            &req.headers,
        );
        let (bucket_ok, received) = tokio::join!(
            self.require_bucket(&input.bucket),
            self.receive(input.body, claimed, req.trailing_headers.as_ref())
        );
        bucket_ok?;
        let received = received?;
        let (size, md5) = (received.len, received.md5_hex.clone());
        let blobs = self.store_blob(received).await?;
        let record = ObjectRecord {
            size,
            etag: md5.clone(),
            content_type: input.content_type,
            user_metadata,
            last_modified_ms: now_ms(),
            blobs,
        };
        self.within_reference_window(started)?;
        self.write_meta(
            records::object_key(&input.bucket, &input.key),
            Some(records::encode(&record)),
        )
        .await?;
        for blob in &record.blobs {
            self.marks.note(&self.state, blob).await;
        }
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&md5)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let record = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (offset, len, content_range) = match input.range {
            None => (0, record.size, None),
            Some(range) => {
                let r = range.check(record.size).map_err(|_| {
                    s3_error!(
                        InvalidRange,
                        "the range is outside the object's {} bytes",
                        record.size
                    )
                })?;
                if r.end <= r.start {
                    // A suffix range of an empty object: there is no byte to send.
                    return Err(s3_error!(InvalidRange, "the object is empty"));
                }
                (
                    r.start,
                    r.end - r.start,
                    Some(format!("bytes {}-{}/{}", r.start, r.end - 1, record.size)),
                )
            }
        };
        let body = self.open_object(&record, offset, len).await?;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&record.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            content_type: record.content_type.clone(),
            metadata: metadata_map(&record.user_metadata),
            parts_count: (record.etag.contains('-')).then_some(record.blobs.len() as i32),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let record = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(record.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&record.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            content_type: record.content_type.clone(),
            metadata: metadata_map(&record.user_metadata),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        self.write_meta(records::object_key(&input.bucket, &input.key), None)
            .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let objects = input.delete.objects;
        if objects.len() > S3_DELETE_OBJECTS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "more than {S3_DELETE_OBJECTS_MAX} keys"
            ));
        }
        let stamp = meta::stamp(&self.state);
        let writes: Vec<(MetaKey, Entry)> = objects
            .iter()
            .map(|o| {
                (
                    records::object_key(&input.bucket, &o.key),
                    Entry { stamp, value: None },
                )
            })
            .collect();
        let quiet = input.delete.quiet.unwrap_or(false);
        let result = meta::write(&self.state, writes).await;
        let (deleted, errors) = match result {
            Ok(()) => (
                objects
                    .iter()
                    .map(|o| DeletedObject {
                        key: Some(o.key.clone()),
                        ..Default::default()
                    })
                    .collect(),
                Vec::new(),
            ),
            Err(e) => (
                Vec::new(),
                objects
                    .iter()
                    .map(|o| Error {
                        key: Some(o.key.clone()),
                        code: Some("ServiceUnavailable".into()),
                        message: Some(e.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        };
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet && !deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let started = Instant::now();
        let input = req.input;
        check_key(&input.key)?;
        let (src_bucket, src_key) = copy_source_key(&input.copy_source)?;
        let source = self
            .copy_source(
                src_bucket,
                src_key,
                input.copy_source_if_match.as_ref(),
                input.copy_source_if_none_match.as_ref(),
            )
            .await?;
        self.require_bucket(&input.bucket).await?;
        // The copy refers to the source's blobs without writing them: touch their marks, then
        // read the source again, so the collector either sees the touch or the source (see
        // `gc`).
        let stamp = meta::stamp(&self.state);
        let marks: Vec<(MetaKey, Entry)> = source
            .blobs
            .iter()
            .map(|b| {
                (
                    records::blob_mark_key(&b.hash),
                    Entry {
                        stamp,
                        value: Some(records::encode(&BlobMark {
                            touched_ms: now_ms(),
                            len: b.len,
                        })),
                    },
                )
            })
            .collect();
        let mut by_partition: std::collections::BTreeMap<Partition, Vec<(MetaKey, Entry)>> =
            Default::default();
        for (k, e) in marks {
            by_partition.entry(k.part.clone()).or_default().push((k, e));
        }
        for writes in by_partition.into_values() {
            meta::write(&self.state, writes).await.map_err(meta_error)?;
        }
        let again = self.object(src_bucket, src_key).await?;
        if again.blobs != source.blobs {
            return Err(s3_error!(
                ServiceUnavailable,
                "the source changed during the copy; retry it"
            ));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let (content_type, user_metadata) = if replace {
            (input.content_type, user_metadata(input.metadata)?)
        } else {
            (source.content_type.clone(), source.user_metadata.clone())
        };
        let record = ObjectRecord {
            content_type,
            user_metadata,
            last_modified_ms: now_ms(),
            ..source
        };
        self.within_reference_window(started)?;
        self.write_meta(
            records::object_key(&input.bucket, &input.key),
            Some(records::encode(&record)),
        )
        .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&record.etag)),
                last_modified: Some(timestamp(record.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone(),
        };
        let max = max_keys(input.max_keys);
        let mut listing = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after,
                max,
            )
            .await?;
        // The token carries the raw marker; only what the client reads is encoded.
        let next_token = listing
            .truncated
            .then(|| listing.next_marker.as_deref().map(encode_token))
            .flatten();
        let encoding = input.encoding_type.as_ref();
        listing.encode_keys(encoding);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: encoded(Some(prefix), encoding),
            delimiter: encoded(input.delimiter, encoding),
            max_keys: Some(max as i32),
            key_count: Some(listing.count() as i32),
            is_truncated: Some(listing.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next_token,
            start_after: encoded(input.start_after, encoding),
            contents: listing.contents(),
            common_prefixes: listing.common_prefixes(),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys);
        let mut listing = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.clone(),
                max,
            )
            .await?;
        let encoding = input.encoding_type.as_ref();
        listing.encode_keys(encoding);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: encoded(Some(prefix), encoding),
            marker: encoded(Some(input.marker.unwrap_or_default()), encoding),
            delimiter: encoded(input.delimiter, encoding),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_marker: listing
                .truncated
                .then(|| listing.next_marker.clone())
                .flatten(),
            contents: listing.contents(),
            common_prefixes: listing.common_prefixes(),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        self.require_bucket(&input.bucket).await?;
        let upload_id = new_upload_id()?;
        let record = UploadRecord {
            initiated_ms: now_ms(),
            content_type: input.content_type,
            user_metadata: user_metadata(input.metadata)?,
        };
        self.write_meta(
            records::upload_key(&input.bucket, &input.key, &upload_id),
            Some(records::encode(&record)),
        )
        .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let started = Instant::now();
        let input = req.input;
        if !(1..=S3_PART_NUMBER_MAX).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers run from 1 to {S3_PART_NUMBER_MAX}"
            ));
        }
        let claimed = claimed_of(
            input.content_length,
            input.content_md5,
            [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_sha1,
                input.checksum_sha256,
                input.checksum_crc64nvme,
            ],
            &req.headers,
        );
        let (upload, received) = tokio::join!(
            self.upload(&input.bucket, &input.key, &input.upload_id),
            self.receive(input.body, claimed, req.trailing_headers.as_ref())
        );
        upload?;
        let received = received?;
        let upload = UploadKey {
            bucket: &input.bucket,
            key: &input.key,
            upload_id: &input.upload_id,
        };
        let record = self
            .commit_part(upload, input.part_number, received, started)
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&record.etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let started = Instant::now();
        let input = req.input;
        if !(1..=S3_PART_NUMBER_MAX).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers run from 1 to {S3_PART_NUMBER_MAX}"
            ));
        }
        let (src_bucket, src_key) = copy_source_key(&input.copy_source)?;
        self.upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let source = self
            .copy_source(
                src_bucket,
                src_key,
                input.copy_source_if_match.as_ref(),
                input.copy_source_if_none_match.as_ref(),
            )
            .await?;
        let (offset, len) = match &input.copy_source_range {
            None => (0, source.size),
            Some(text) => {
                let range = Range::parse(text).map_err(|_| {
                    s3_error!(
                        InvalidArgument,
                        "x-amz-copy-source-range {text} is not a byte range"
                    )
                })?;
                let r = range.check(source.size).map_err(|_| {
                    s3_error!(
                        InvalidRange,
                        "the range is outside the source's {} bytes",
                        source.size
                    )
                })?;
                (r.start, r.end - r.start)
            }
        };
        if len > self.settings.object_bytes_max {
            return Err(s3_error!(
                EntityTooLarge,
                "a part of {len} bytes is over the limit"
            ));
        }
        // The part's bytes are a new blob (a range need not fall on the source's blobs); they
        // are read verified and taken in like an upload's.
        let stream = self.open_object(&source, offset, len).await?;
        let claimed = Claimed {
            content_length: Some(len as i64),
            ..Default::default()
        };
        let received = self.receive(Some(stream), claimed, None).await?;
        let upload = UploadKey {
            bucket: &input.bucket,
            key: &input.key,
            upload_id: &input.upload_id,
        };
        let record = self
            .commit_part(upload, input.part_number, received, started)
            .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&record.etag)),
                last_modified: Some(timestamp(record.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        refuse_conditional_write(input.if_match.is_some() || input.if_none_match.is_some())?;
        let upload = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let stored = self
            .parts_of(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let requested = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts named"));
        }
        let mut chosen: Vec<&PartRecord> = Vec::with_capacity(requested.len());
        let mut previous = 0;
        for part in &requested {
            let number = part.part_number.unwrap_or(0);
            if number <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order"
                ));
            }
            previous = number;
            let Some((_, record)) = stored.iter().find(|(n, _)| *n as i32 == number) else {
                return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
            };
            if let Some(tag) = &part.e_tag
                && tag.value() != record.etag
            {
                return Err(s3_error!(InvalidPart, "part {number}'s ETag differs"));
            }
            chosen.push(record);
        }
        for record in &chosen[..chosen.len() - 1] {
            if record.blob.len < S3_PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "every part but the last needs at least {S3_PART_BYTES_MIN} bytes"
                ));
            }
        }
        let etags: Vec<String> = chosen.iter().map(|r| r.etag.clone()).collect();
        let etag_hex = records::multipart_etag(&etags)
            .ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
        let record = ObjectRecord {
            size: chosen.iter().map(|r| r.blob.len).sum(),
            etag: etag_hex.clone(),
            content_type: upload.content_type,
            user_metadata: upload.user_metadata,
            last_modified_ms: now_ms(),
            blobs: chosen
                .iter()
                .map(|r| r.blob)
                .filter(|b| b.len > 0)
                .collect(),
        };
        // The object first: until the upload's records go, its parts are referred to twice,
        // never zero times.
        self.write_meta(
            records::object_key(&input.bucket, &input.key),
            Some(records::encode(&record)),
        )
        .await?;
        self.forget_upload(&input.bucket, &input.key, &input.upload_id, &stored)
            .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&etag_hex)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let stored = self
            .parts_of(&input.bucket, &input.key, &input.upload_id)
            .await?;
        self.forget_upload(&input.bucket, &input.key, &input.upload_id, &stored)
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let stored = self
            .parts_of(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = input
            .max_parts
            .map(|m| m.max(0) as usize)
            .unwrap_or(S3_LIST_KEYS_MAX)
            .min(S3_LIST_KEYS_MAX);
        let after: Vec<&(u32, PartRecord)> = stored.iter().filter(|(n, _)| *n > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<Part> = after
            .iter()
            .take(max)
            .map(|(n, r)| Part {
                part_number: Some(*n as i32),
                e_tag: Some(etag(&r.etag)),
                size: Some(r.blob.len as i64),
                last_modified: Some(timestamp(r.last_modified_ms)),
                ..Default::default()
            })
            .collect();
        let next = page.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: truncated.then_some(next).flatten(),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(page),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input
            .max_uploads
            .map(|m| m.max(0) as usize)
            .unwrap_or(S3_LIST_KEYS_MAX)
            .min(S3_LIST_KEYS_MAX);
        let after = input
            .key_marker
            .as_ref()
            .map(|key| match &input.upload_id_marker {
                Some(id) => records::upload_sort_key(key, id),
                None => {
                    let mut k = records::upload_sort_key(key, "");
                    k.push(0xFF);
                    k
                }
            });
        let mut uploads = Vec::new();
        let mut truncated = false;
        self.walk(
            &Partition::new(Table::Uploads, &*input.bucket),
            after,
            prefix.as_bytes(),
            |k, v| {
                if uploads.len() == max {
                    truncated = true;
                    return Walk::Stop;
                }
                if let (Some((key, id)), Some(record)) = (
                    records::split_upload_sort_key(k),
                    records::decode::<UploadRecord>(v),
                ) {
                    uploads.push(MultipartUpload {
                        key: Some(key),
                        upload_id: Some(id),
                        initiated: Some(timestamp(record.initiated_ms)),
                        ..Default::default()
                    });
                }
                Walk::Next
            },
        )
        .await?;
        let (next_key, next_id) = match uploads.last() {
            Some(u) if truncated => (u.key.clone(), u.upload_id.clone()),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: u64) -> BlobRef {
        BlobRef { hash: [n; 32], len }
    }

    #[test]
    fn a_range_over_part_boundaries_reads_each_part_in_turn() {
        let blobs = [blob(1, 10), blob(2, 10), blob(3, 5)];
        let got: Vec<(u8, u64, u64)> = segments(&blobs, 8, 14)
            .into_iter()
            .map(|(h, r, _)| (h.as_bytes()[0], r.offset, r.len))
            .collect();
        assert_eq!(got, vec![(1, 8, 2), (2, 0, 10), (3, 0, 2)]);
        let whole: u64 = segments(&blobs, 0, 25).iter().map(|(_, r, _)| r.len).sum();
        assert_eq!(whole, 25);
        assert!(segments(&blobs, 0, 0).is_empty());
    }

    #[test]
    fn continuation_tokens_round_trip_and_refuse_garbage() {
        let token = encode_token("a/b c");
        assert_eq!(decode_token(&token).unwrap(), "a/b c");
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }

    fn record(etag: &str, last_modified_ms: u64) -> ObjectRecord {
        ObjectRecord {
            size: 1,
            etag: etag.into(),
            content_type: None,
            user_metadata: Vec::new(),
            last_modified_ms,
            blobs: Vec::new(),
        }
    }

    #[test]
    fn conditional_headers_follow_s3() {
        let r = record("abc", 10_000);
        let tag = |t: &str| ETagCondition::ETag(ETag::Strong(t.into()));
        assert!(check_conditions(&r, Some(&tag("abc")), None, None, None).is_ok());
        let failed = check_conditions(&r, Some(&tag("x")), None, None, None).unwrap_err();
        assert_eq!(*failed.code(), S3ErrorCode::PreconditionFailed);
        let unchanged = check_conditions(&r, None, Some(&tag("abc")), None, None).unwrap_err();
        assert_eq!(*unchanged.code(), S3ErrorCode::NotModified);
        let later = timestamp(20_000);
        let earlier = timestamp(5_000);
        assert_eq!(
            *check_conditions(&r, None, None, Some(&later), None)
                .unwrap_err()
                .code(),
            S3ErrorCode::NotModified
        );
        assert!(check_conditions(&r, None, None, Some(&earlier), None).is_ok());
        assert_eq!(
            *check_conditions(&r, None, None, None, Some(&earlier))
                .unwrap_err()
                .code(),
            S3ErrorCode::PreconditionFailed
        );
    }
}
