//! The S3 operations, each a method of [`S3Front`] in the file of its family: buckets
//! (`bucket.rs`), objects (`object.rs`), listings (`list.rs`), multipart uploads
//! (`multipart.rs`), access control lists and policies (`acl.rs`), tags and object
//! attributes (`tagging.rs`) and lifecycle configurations (`lifecycle.rs`). The `s3s::S3`
//! implementation below only delegates, one line each, to the method of the same name. Metadata is read and written through [`crate::meta::cluster`], blobs
//! through the node's cluster client; S3's rules are `super::rules`.

mod acl;
mod bucket;
mod lifecycle;
mod list;
mod multipart;
mod object;
mod tagging;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cairn_core::meta::{Entry, MetaKey, Partition, Stamp};
use cairn_core::wire::ByteRange;
use cairn_engine::Hash;
use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};

use super::S3Front;
use super::body::{self, ChunkBuffers, ChunkStore, Claimed, Received};
use super::records::{self, BlobRef, BucketRecord, ObjectRecord};
use super::rules::{client_error, condition_matches, meta_error, segments};
use crate::clock;
use crate::limits::{S3_BUCKET_SEEN_MS, S3_BUCKETS_SEEN_MAX, S3_READ_AHEAD_PIECES};
use crate::meta::cluster::{self as meta, Walk};
use crate::state::State;

fn now_ms() -> u64 {
    clock::wall_ms()
}

fn decode_record<T: records::Record>(entry: Option<Entry>) -> Option<T> {
    entry
        .and_then(|e| e.value)
        .and_then(|v| records::decode(&v))
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
    state: &Arc<State>,
    (hash, range, blob_len): (Hash, ByteRange, u64),
) -> S3Result<Segment> {
    let range = (range.offset != 0 || range.len != blob_len).then_some(range);
    if let Some(bytes) = crate::replica::local_read(state, hash, range).await {
        return Ok(Segment::Local(bytes));
    }
    state
        .cluster_client
        .open_read(&hash, range)
        .await
        .map(Segment::Remote)
        .map_err(client_error)
}

/// `len` bytes from `offset` of an object stored inside its record, once its bytes are checked
/// against its ETag (their MD5): the metadata keeps no BLAKE3 name for them, and a damaged
/// record is refused rather than served.
fn inline_range(record: &ObjectRecord, offset: u64, len: u64) -> S3Result<Bytes> {
    use md5::Digest as _;
    let bytes = &record.inline;
    let intact =
        bytes.len() as u64 == record.size && records::hex(&md5::Md5::digest(bytes)) == record.etag;
    if !intact {
        return Err(s3_error!(
            InternalError,
            "the object's record is damaged: its bytes do not match its ETag"
        ));
    }
    let range = offset as usize..(offset + len) as usize;
    bytes
        .get(range)
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| s3_error!(InternalError, "a range outside the object's bytes"))
}

/// Where a body's chunks go: the cluster, through the node's client, each marked for the
/// collector.
#[derive(Clone)]
struct ChunkSink {
    state: Arc<State>,
    buffers: Arc<ChunkBuffers>,
}

impl ChunkStore for ChunkSink {
    /// The mark goes first, and is written before the chunk is: so that a chunk is marked
    /// whatever becomes of the put (it fails after some replicas wrote it, or the request goes
    /// away), and so that a native delete that finds no mark does not stand over the chunk
    /// (`meta::marks`). A mark without its blob costs the collector one read, and the put's own
    /// version, later than the mark, keeps its blob from a collection decided before.
    async fn store(&self, bytes: Bytes) -> S3Result<BlobRef> {
        let hash = Hash::from(blake3::hash(&bytes));
        let blob = BlobRef {
            hash: *hash.as_bytes(),
            len: bytes.len() as u64,
        };
        if let Err(e) = super::gc::mark(&self.state, &blob).await {
            self.buffers.give(bytes);
            return Err(meta_error(e));
        }
        let put = self
            .state
            .cluster_client
            .put_known(hash, bytes.clone())
            .await;
        self.buffers.give(bytes);
        put.map_err(client_error)?;
        Ok(blob)
    }

    fn buffer(&self, capacity: usize) -> BytesMut {
        self.buffers.take(capacity)
    }
}

/// Aborts a task when dropped: a read ahead nobody will take.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

fn new_upload_id() -> S3Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| s3_error!(InternalError, "no randomness for an upload id"))?;
    Ok(records::hex(&bytes))
}

impl S3Front {
    pub(super) async fn write_meta(&self, key: MetaKey, value: Option<Vec<u8>>) -> S3Result<()> {
        let entry = Entry {
            stamp: meta::stamp(&self.state),
            value,
        };
        meta::write(&self.state, vec![(key, entry)])
            .await
            .map_err(meta_error)
    }

    pub(super) async fn read_meta(&self, key: &MetaKey) -> S3Result<Option<Entry>> {
        meta::read(&self.state, key).await.map_err(meta_error)
    }

    pub(super) async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let seen = self.buckets_seen.lock().get(bucket).copied();
        if seen.is_some_and(|t| clock::since(t) < Duration::from_millis(S3_BUCKET_SEEN_MS)) {
            return Ok(());
        }
        let entry = self.read_meta(&records::bucket_key(bucket)).await?;
        match decode_record::<BucketRecord>(entry) {
            Some(_) => {
                let mut seen = self.buckets_seen.lock();
                if seen.len() >= S3_BUCKETS_SEEN_MAX {
                    seen.clear();
                }
                seen.insert(bucket.to_string(), clock::now());
                Ok(())
            }
            None => Err(s3_error!(NoSuchBucket, "no bucket {bucket}")),
        }
    }

    /// An object's record; NoSuchKey (or NoSuchBucket) if there is none.
    pub(super) async fn object(&self, bucket: &str, key: &str) -> S3Result<ObjectRecord> {
        self.object_entry(bucket, key)
            .await
            .map(|(_, record)| record)
    }

    /// An object's record and the stamp it was written with; NoSuchKey (or NoSuchBucket) if
    /// there is none.
    pub(super) async fn object_entry(
        &self,
        bucket: &str,
        key: &str,
    ) -> S3Result<(Stamp, ObjectRecord)> {
        let entry = self.read_meta(&records::object_key(bucket, key)).await?;
        let stamp = entry.as_ref().map(|e| e.stamp);
        match (stamp, decode_record::<ObjectRecord>(entry)) {
            (Some(stamp), Some(record)) => Ok((stamp, record)),
            _ => {
                self.require_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey, "no key {key} in {bucket}"))
            }
        }
    }

    /// Replaces the object record read at `read`, unless anything newer was written since:
    /// the write is stamped just above `read` (`Stamp::just_above`), so a put or delete that
    /// came after the read wins over it, and two replacements from one read never tie.
    pub(super) async fn replace_object(
        &self,
        bucket: &str,
        key: &str,
        read: Stamp,
        record: Option<&ObjectRecord>,
    ) -> S3Result<()> {
        let value = record.map(records::encode);
        let entry = Entry {
            stamp: read.just_above(value.as_deref()),
            value,
        };
        meta::write_conditional(&self.state, vec![(records::object_key(bucket, key), entry)])
            .await
            .map_err(meta_error)
    }

    /// Reads a body to its end, storing it in chunks; see `body::receive`. The caller notes
    /// nothing for the collector: each chunk is marked as it is stored. With `inline`, a body
    /// of at most `inline_object_bytes_max` is returned for the record to hold instead.
    pub(super) async fn receive(
        &self,
        body: Option<StreamingBlob>,
        claimed: Claimed,
        req_trailers: Option<&s3s::TrailingHeaders>,
        inline: bool,
    ) -> S3Result<Received> {
        let inline_max = match inline {
            true => self.settings.inline_object_bytes_max,
            false => 0,
        };
        let sink = ChunkSink {
            state: self.state.clone(),
            buffers: self.chunk_buffers.clone(),
        };
        body::receive(
            body,
            &claimed,
            req_trailers,
            (self.settings.object_bytes_max, inline_max),
            sink,
        )
        .await
    }

    /// A copy's source object, with its `x-amz-copy-source-if-(none-)match` conditions.
    pub(super) async fn copy_source(
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

    /// Refuses to commit a reference later than the collector allows (see `gc`): the caller
    /// wrote or touched what it refers to at `since`.
    pub(super) fn within_reference_window(&self, since: Instant) -> S3Result<()> {
        let window = Duration::from_millis(super::gc::reference_window_ms(&self.settings));
        if clock::since(since) > window {
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
    pub(super) async fn open_object(
        &self,
        record: &ObjectRecord,
        offset: u64,
        len: u64,
    ) -> S3Result<StreamingBlob> {
        let (tx, rx) = tokio::sync::mpsc::channel(S3_READ_AHEAD_PIECES);
        if !record.inline.is_empty() {
            let piece = inline_range(record, offset, len)?;
            tx.try_send(Ok(piece))
                .expect("a new channel has room for one piece");
            return Ok(StreamingBlob::wrap(ObjectStream { rx }));
        }
        let mut parts = segments(&record.blobs, offset, len).into_iter();
        // The first blob opens before the answer starts, so a missing or unreachable blob is a
        // typed error rather than a cut-off body.
        let first = match parts.next() {
            Some(segment) => Some(open_segment(&self.state, segment).await?),
            None => None,
        };
        let state = self.state.clone();
        crate::task::spawn(async move {
            let mut next = first;
            while let Some(source) = next.take() {
                // The next blob opens while this one streams, so its first bytes are on
                // their way when this one ends.
                let ahead = parts.next().map(|segment| {
                    let state = state.clone();
                    crate::task::spawn(async move { open_segment(&state, segment).await })
                });
                let _abort_ahead = ahead.as_ref().map(|h| AbortOnDrop(h.abort_handle()));
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
                let Some(ahead) = ahead else { break };
                let opened = ahead
                    .await
                    .unwrap_or_else(|e| Err(s3_error!(InternalError, "opening a blob: {e}")));
                match opened {
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
    pub(super) async fn walk(
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
}

#[async_trait::async_trait]
impl S3 for S3Front {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        S3Front::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        S3Front::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        S3Front::get_bucket_location(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        S3Front::delete_bucket(self, req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        S3Front::list_buckets(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        S3Front::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        S3Front::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        S3Front::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        S3Front::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        S3Front::delete_objects(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        S3Front::copy_object(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        S3Front::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        S3Front::list_objects(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        S3Front::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        S3Front::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        S3Front::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        S3Front::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        S3Front::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        S3Front::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        S3Front::list_multipart_uploads(self, req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        S3Front::get_bucket_acl(self, req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        S3Front::put_bucket_acl(self, req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        S3Front::get_object_acl(self, req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        S3Front::put_object_acl(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        S3Front::get_object_tagging(self, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        S3Front::put_object_tagging(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        S3Front::delete_object_tagging(self, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        S3Front::get_bucket_tagging(self, req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        S3Front::put_bucket_tagging(self, req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        S3Front::delete_bucket_tagging(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        S3Front::get_object_attributes(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        S3Front::get_bucket_lifecycle_configuration(self, req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        S3Front::put_bucket_lifecycle_configuration(self, req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        S3Front::delete_bucket_lifecycle(self, req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        S3Front::get_bucket_policy(self, req).await
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        S3Front::put_bucket_policy(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        S3Front::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        S3Front::put_bucket_versioning(self, req).await
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        S3Front::get_bucket_encryption(self, req).await
    }
}

/// The answer to a request refused before its body was read: the body is read and dropped
/// first (`body::drain`), so the client reads this error rather than a closed connection.
pub(super) async fn refuse_unread(body: Option<StreamingBlob>, error: S3Error) -> S3Error {
    body::drain(body).await;
    error
}
