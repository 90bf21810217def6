//! Object operations: PutObject, GetObject and HeadObject (ranges and conditional headers),
//! DeleteObject, DeleteObjects and CopyObject (a new record naming the same blobs).

use super::*;
use crate::limits::S3_DELETE_OBJECTS_MAX;
use crate::s3::StatusOverride;
use crate::s3::access::{check_object_write, refuse_sse_read};
use crate::s3::checksums::answer_checksum;
use crate::s3::records::{BlobMark, Checksum, ChecksumKind};
use crate::s3::rules::{answer_headers, content_headers};
use crate::s3::rules::{
    check_conditions, check_content_md5, check_key, claimed_of, copy_source_key, etag,
    metadata_map, part_span, parts_count, refuse_conditional_write, timestamp, user_metadata,
};
use crate::s3::tags;

fn checksum_enabled(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

/// The checksum a read answers with: the object's for the whole object, a part's for a part
/// read by number, none for a range (S3 has none to give).
fn checksum_of_read(
    record: &ObjectRecord,
    part_number: Option<i32>,
    whole: bool,
) -> Option<Checksum> {
    match part_number {
        None if whole => record.checksum.clone(),
        None => None,
        Some(n) if record.part_checksums.is_empty() => {
            (n == 1).then(|| record.checksum.clone()).flatten()
        }
        Some(n) => {
            let algorithm = record.checksum.as_ref()?.algorithm;
            let value = record
                .part_checksums
                .get(usize::try_from(n).ok()?.checked_sub(1)?)?;
            Some(Checksum {
                algorithm,
                kind: ChecksumKind::FullObject,
                value: value.clone(),
            })
        }
    }
}

/// The `Content-Range` of a part read by number (none for an empty part).
fn part_range(offset: u64, len: u64, size: u64) -> Option<String> {
    (len > 0).then(|| format!("bytes {offset}-{}/{size}", offset + len - 1))
}

impl S3Front {
    pub(super) async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let started = clock::now();
        let mut input = req.input;
        let checked = check_key(&input.key)
            .and_then(|()| check_object_write!(input))
            .and_then(|()| {
                refuse_conditional_write(input.if_match.is_some() || input.if_none_match.is_some())
            })
            .and_then(|()| check_content_md5(input.content_md5.as_deref()))
            .and_then(|()| user_metadata(input.metadata.take()));
        let user_metadata = match checked {
            Ok(user_metadata) => user_metadata,
            Err(e) => return Err(refuse_unread(input.body, e).await),
        };
        let tags = match tags::from_header(input.tagging.as_deref()) {
            Ok(tags) => tags,
            Err(e) => return Err(refuse_unread(input.body, e).await),
        };
        let claimed = match claimed_of(
            input.content_length,
            input.content_md5.take(),
            [
                input.checksum_crc32.take(),
                input.checksum_crc32c.take(),
                input.checksum_sha1.take(),
                input.checksum_sha256.take(),
                input.checksum_crc64nvme.take(),
            ],
            input.checksum_algorithm.as_ref(),
            &req.headers,
        ) {
            Ok(claimed) => claimed,
            Err(e) => return Err(refuse_unread(input.body, e).await),
        };
        let headers = content_headers!(input);
        let (bucket_ok, received) = tokio::join!(
            self.require_bucket(&input.bucket),
            self.receive(input.body, claimed, req.trailing_headers.as_ref(), true)
        );
        bucket_ok?;
        let received = received?;
        let (size, md5) = (received.len, received.md5_hex.clone());
        let checksum = received.checksum(None).cloned();
        let record = ObjectRecord {
            size,
            etag: md5.clone(),
            headers,
            user_metadata,
            last_modified_ms: now_ms(),
            blobs: received.blobs,
            inline: received.inline,
            tags,
            checksum,
            part_checksums: Vec::new(),
            upload_id: None,
            part_sizes: Vec::new(),
        };
        self.within_reference_window(started)?;
        self.write_meta(
            records::object_key(&input.bucket, &input.key),
            Some(records::encode(&record)),
        )
        .await?;
        let mut output = PutObjectOutput {
            e_tag: Some(etag(&md5)),
            ..Default::default()
        };
        answer_checksum!(output, record.checksum.as_ref());
        Ok(S3Response::new(output))
    }

    pub(super) async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        refuse_sse_read(
            input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
        )?;
        let record = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let whole = input.range.is_none();
        let (offset, len, content_range) = match (input.part_number, input.range) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Cannot specify both Range header and partNumber query parameter"
                ));
            }
            (Some(number), None) => {
                let (offset, len) = part_span(&record, number)?;
                (offset, len, part_range(offset, len, record.size))
            }
            (None, None) => (0, record.size, None),
            (None, Some(range)) => {
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
        let mut output = GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&record.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            metadata: metadata_map(&record.user_metadata),
            parts_count: input
                .part_number
                .and(parts_count(&record))
                .map(|n| n as i32),
            tag_count: (!record.tags.is_empty()).then_some(record.tags.len() as i32),
            ..Default::default()
        };
        answer_headers!(output, &record.headers);
        if checksum_enabled(input.checksum_mode.as_ref()) {
            answer_checksum!(
                output,
                checksum_of_read(&record, input.part_number, whole).as_ref()
            );
        }
        Ok(S3Response::new(output))
    }

    pub(super) async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        refuse_sse_read(
            input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
        )?;
        let record = self.object(&input.bucket, &input.key).await?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (len, content_range) = match input.part_number {
            Some(number) => {
                let (offset, len) = part_span(&record, number)?;
                (len, part_range(offset, len, record.size))
            }
            None => (record.size, None),
        };
        let mut output = HeadObjectOutput {
            content_length: Some(len as i64),
            content_range,
            parts_count: input
                .part_number
                .and(parts_count(&record))
                .map(|n| n as i32),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&record.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            metadata: metadata_map(&record.user_metadata),
            ..Default::default()
        };
        answer_headers!(output, &record.headers);
        if checksum_enabled(input.checksum_mode.as_ref()) {
            answer_checksum!(
                output,
                checksum_of_read(&record, input.part_number, true).as_ref()
            );
        }
        let mut response = S3Response::new(output);
        if input.part_number.is_some() {
            // A part is partial content, as for GetObject.
            response
                .extensions
                .insert(StatusOverride(hyper::StatusCode::PARTIAL_CONTENT));
        }
        if !record.tags.is_empty() {
            response.headers.insert(
                "x-amz-tagging-count",
                hyper::header::HeaderValue::from(record.tags.len()),
            );
        }
        Ok(response)
    }

    pub(super) async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        self.write_meta(records::object_key(&input.bucket, &input.key), None)
            .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn delete_objects(
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

    pub(super) async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let started = clock::now();
        let mut input = req.input;
        check_key(&input.key)?;
        check_object_write!(input)?;
        refuse_sse_read(
            input.copy_source_sse_customer_algorithm.is_some()
                || input.copy_source_sse_customer_key.is_some(),
        )?;
        let (src_bucket, src_key) = copy_source_key(&input.copy_source)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let replace_tags = input
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
        let new_tags = tags::from_header(input.tagging.as_deref())?;
        if (src_bucket, src_key) == (input.bucket.as_str(), input.key.as_str())
            && !replace
            && !replace_tags
            && input.storage_class.is_none()
            && input.website_redirect_location.is_none()
        {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
            ));
        }
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
                    crate::meta::marks::blob_mark_key(&b.hash),
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
        if let Some(asked) = &input.checksum_algorithm
            && source.checksum.as_ref().map(|c| c.algorithm.name()) != Some(asked.as_str())
        {
            return Err(s3_error!(
                NotImplemented,
                "a copy keeps its source's checksum; computing a {} one is not supported",
                asked.as_str()
            ));
        }
        let (headers, user_metadata) = if replace {
            (
                content_headers!(input),
                user_metadata(input.metadata.take())?,
            )
        } else {
            (source.headers.clone(), source.user_metadata.clone())
        };
        let tags = if replace_tags {
            new_tags
        } else {
            source.tags.clone()
        };
        let record = ObjectRecord {
            headers,
            user_metadata,
            tags,
            last_modified_ms: now_ms(),
            upload_id: None,
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
}
