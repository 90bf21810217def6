//! Multipart uploads: Create, UploadPart, UploadPartCopy, Complete (one record naming the
//! parts' blobs; no bytes written again), Abort, ListParts and ListMultipartUploads.

use cairn_core::meta::Table;

use super::*;
use crate::limits::{
    S3_CHUNK_BYTES, S3_LIST_KEYS_MAX, S3_LIST_PARTS_MAX, S3_OBJECT_BLOBS_MAX, S3_PART_BYTES_MIN,
    S3_PART_NUMBER_MAX,
};
use crate::s3::access::{SseRequest, check_object_write, refuse_sse, refuse_sse_read};
use crate::s3::body::ClaimedChecksum;
use crate::s3::checksums::{self, answer_checksum};
use crate::s3::gc::{self, Removal};
use crate::s3::records::{ChecksumAlgorithm, PartRecord, UploadRecord};
use crate::s3::rules::content_headers;
use crate::s3::rules::{
    check_content_md5, check_key, claimed_of, copy_source_key, copy_source_range, etag,
    refuse_conditional_write, timestamp, user_metadata,
};
use crate::s3::tags;

/// The checksum of `algorithm` a Complete names: for one part (`CompletedPart`), or for the
/// whole object (`CompleteMultipartUploadInput`); both name the fields alike.
macro_rules! named_checksum {
    ($input:expr, $algorithm:expr) => {
        match $algorithm {
            ChecksumAlgorithm::Crc32 => $input.checksum_crc32.as_ref(),
            ChecksumAlgorithm::Crc32c => $input.checksum_crc32c.as_ref(),
            ChecksumAlgorithm::Crc64nvme => $input.checksum_crc64nvme.as_ref(),
            ChecksumAlgorithm::Sha1 => $input.checksum_sha1.as_ref(),
            ChecksumAlgorithm::Sha256 => $input.checksum_sha256.as_ref(),
        }
    };
}

impl S3Front {
    /// Stores a part's received bytes and its record (within the reference window of `started`),
    /// and notes its blob for the collector.
    pub(super) async fn commit_part(
        &self,
        upload: UploadKey<'_>,
        number: i32,
        received: Received,
        algorithm: Option<ChecksumAlgorithm>,
        started: Instant,
    ) -> S3Result<PartRecord> {
        let (len, etag) = (received.len, received.md5_hex.clone());
        let checksum = algorithm
            .and_then(|a| received.checksum(Some(a)))
            .map(|c| c.value.clone());
        let record = PartRecord::of_blobs(&received.blobs, etag, now_ms(), checksum);
        debug_assert_eq!(record.bytes(), len);
        self.within_reference_window(started)?;
        let key = records::part_key(upload.bucket, upload.key, upload.upload_id, number as u32);
        self.write_meta(key, Some(records::encode(&record))).await?;
        Ok(record)
    }

    /// Every part record of an upload, in part number order.
    pub(super) async fn parts_of(
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

    pub(super) async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<UploadRecord> {
        let entry = self
            .read_meta(&records::upload_key(bucket, key, upload_id))
            .await?;
        decode_record(entry)
            .ok_or_else(|| s3_error!(NoSuchUpload, "no upload {upload_id} for {key}"))
    }

    /// Deletes an upload's record and its parts' records (their blobs are left to the
    /// collector).
    pub(super) async fn forget_upload(
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
        let upload_delete = (
            records::upload_key(bucket, key, upload_id),
            Entry { stamp, value: None },
        );
        gc::write_upload_removal(&self.state, part_deletes, upload_delete, Removal::Fresh)
            .await
            .map_err(meta_error)
    }

    pub(super) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let mut input = req.input;
        check_key(&input.key)?;
        check_object_write!(input)?;
        let tags = tags::from_header(input.tagging.as_deref())?;
        let checksum = match &input.checksum_algorithm {
            Some(a) => {
                let algorithm = ChecksumAlgorithm::parse(a.as_str())?;
                let kind = checksums::upload_kind(
                    algorithm,
                    input.checksum_type.as_ref().map(|t| t.as_str()),
                )?;
                Some((algorithm, kind))
            }
            None => None,
        };
        self.require_bucket(&input.bucket).await?;
        let upload_id = new_upload_id()?;
        let record = UploadRecord {
            initiated_ms: now_ms(),
            headers: content_headers!(input),
            user_metadata: user_metadata(input.metadata.take())?,
            tags,
            checksum,
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
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: checksum
                .map(|(_, kind)| ChecksumType::from(checksums::kind_name(kind).to_string())),
            ..Default::default()
        }))
    }

    pub(super) async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let started = clock::now();
        let input = req.input;
        let checked = check_part_write(
            input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
            input.part_number,
        )
        .and_then(|()| check_content_md5(input.content_md5.as_deref()));
        if let Err(e) = checked {
            return Err(refuse_unread(input.body, e).await);
        }
        // The upload first: its checksum algorithm says what to compute for the part.
        let upload = match self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
        {
            Ok(upload) => upload,
            Err(e) => return Err(refuse_unread(input.body, e).await),
        };
        let named = upload
            .checksum
            .map(|(algorithm, _)| s3s::dto::ChecksumAlgorithm::from(algorithm.name().to_string()));
        let claimed = match claimed_of(
            input.content_length,
            input.content_md5,
            [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_sha1,
                input.checksum_sha256,
                input.checksum_crc64nvme,
            ],
            named.as_ref().or(input.checksum_algorithm.as_ref()),
            &req.headers,
        ) {
            Ok(claimed) => claimed,
            Err(e) => return Err(refuse_unread(input.body, e).await),
        };
        let received = self
            .receive(input.body, claimed, req.trailing_headers.as_ref(), false)
            .await?;
        let algorithm = upload.checksum.map(|(algorithm, _)| algorithm);
        let upload = UploadKey {
            bucket: &input.bucket,
            key: &input.key,
            upload_id: &input.upload_id,
        };
        let checksum = received.checksum(algorithm).cloned();
        let record = self
            .commit_part(upload, input.part_number, received, algorithm, started)
            .await?;
        let mut output = UploadPartOutput {
            e_tag: Some(etag(&record.etag)),
            ..Default::default()
        };
        answer_checksum!(output, values checksum.as_ref());
        Ok(S3Response::new(output))
    }

    pub(super) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let started = clock::now();
        let input = req.input;
        check_part_write(
            input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
            input.part_number,
        )?;
        refuse_sse_read(
            input.copy_source_sse_customer_algorithm.is_some()
                || input.copy_source_sse_customer_key.is_some(),
        )?;
        let (src_bucket, src_key) = copy_source_key(&input.copy_source)?;
        let algorithm = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?
            .checksum
            .map(|(algorithm, _)| algorithm);
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
            Some(text) => copy_source_range(text, source.size)?,
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
            content_md5: None,
            checksums: algorithm
                .map(|algorithm| ClaimedChecksum {
                    algorithm,
                    value: None,
                    trailer: false,
                })
                .into_iter()
                .collect(),
        };
        let received = self.receive(Some(stream), claimed, None, false).await?;
        let checksum = received.checksum(algorithm).cloned();
        let upload = UploadKey {
            bucket: &input.bucket,
            key: &input.key,
            upload_id: &input.upload_id,
        };
        let record = self
            .commit_part(upload, input.part_number, received, algorithm, started)
            .await?;
        let mut result = CopyPartResult {
            e_tag: Some(etag(&record.etag)),
            last_modified: Some(timestamp(record.last_modified_ms)),
            ..Default::default()
        };
        answer_checksum!(result, values checksum.as_ref());
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            ..Default::default()
        }))
    }

    pub(super) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        refuse_conditional_write(input.if_match.is_some() || input.if_none_match.is_some())?;
        let requested = input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.clone())
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts named"));
        }
        let upload = match self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
        {
            Ok(upload) => upload,
            Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchUpload => {
                return self.completed_already(&input, &requested, e).await;
            }
            Err(e) => return Err(e),
        };
        let stored = self
            .parts_of(&input.bucket, &input.key, &input.upload_id)
            .await?;
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
                // A Complete that wrote the object and forgot the parts but failed before
                // forgetting the upload is answered from the object when retried.
                let missing = s3_error!(InvalidPart, "part {number} was not uploaded");
                let answer = self.completed_already(&input, &requested, missing).await?;
                let _ = self
                    .forget_upload(&input.bucket, &input.key, &input.upload_id, &stored)
                    .await;
                return Ok(answer);
            };
            if let Some(tag) = &part.e_tag
                && tag.value() != record.etag
            {
                return Err(s3_error!(InvalidPart, "part {number}'s ETag differs"));
            }
            if let Some((algorithm, _)) = upload.checksum
                && let Some(said) = named_checksum!(part, algorithm)
                && Some(said) != record.checksum.as_ref()
            {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s {} checksum differs",
                    algorithm.name()
                ));
            }
            chosen.push(record);
        }
        let blob_count: usize = chosen.iter().map(|r| r.blobs().count()).sum();
        if blob_count > S3_OBJECT_BLOBS_MAX {
            return Err(s3_error!(
                EntityTooLarge,
                "the parts are {blob_count} chunks of up to {S3_CHUNK_BYTES} bytes; an object \
                 may have at most {S3_OBJECT_BLOBS_MAX}"
            ));
        }
        for record in &chosen[..chosen.len() - 1] {
            if record.bytes() < S3_PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "every part but the last needs at least {S3_PART_BYTES_MIN} bytes"
                ));
            }
        }
        let etags: Vec<String> = chosen.iter().map(|r| r.etag.clone()).collect();
        let etag_hex = records::multipart_etag(&etags)
            .ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
        let (checksum, part_checksums) = match upload.checksum {
            None => (None, Vec::new()),
            Some((algorithm, kind)) => {
                let parts: Vec<(String, u64)> = chosen
                    .iter()
                    .map(|r| r.checksum.clone().map(|c| (c, r.bytes())))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "the upload was created with a {} checksum and a part has none",
                            algorithm.name()
                        )
                    })?;
                let checksum = checksums::of_parts(algorithm, kind, &parts)?;
                if let Some(said) = named_checksum!(input, algorithm)
                    && *said != checksum.value
                {
                    return Err(s3_error!(
                        BadDigest,
                        "{} {said} does not match the object's {}",
                        algorithm.header(),
                        checksum.value
                    ));
                }
                (Some(checksum), parts.into_iter().map(|(c, _)| c).collect())
            }
        };
        // Part n is blob n unless some part is more than one chunk; then the record says
        // where each part ends.
        let part_sizes = match chosen.iter().all(|r| r.blobs_after.is_empty()) {
            true => Vec::new(),
            false => chosen.iter().map(|r| r.bytes()).collect(),
        };
        let record = ObjectRecord {
            size: chosen.iter().map(|r| r.bytes()).sum(),
            etag: etag_hex.clone(),
            headers: upload.headers,
            user_metadata: upload.user_metadata,
            last_modified_ms: now_ms(),
            blobs: chosen.iter().flat_map(|r| r.blobs()).copied().collect(),
            tags: upload.tags,
            checksum,
            part_checksums,
            upload_id: Some(input.upload_id.clone()),
            part_sizes,
            inline: Vec::new(),
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
        Ok(S3Response::new(completed(&input, &record)))
    }

    /// A Complete whose upload is gone: if the object it made still stands with the ETag these
    /// parts give, the Complete was repeated (a retry after a lost answer) and is answered as
    /// the first was; otherwise the upload is unknown.
    async fn completed_already(
        &self,
        input: &CompleteMultipartUploadInput,
        requested: &[CompletedPart],
        no_such_upload: S3Error,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let Ok(record) = self.object(&input.bucket, &input.key).await else {
            return Err(no_such_upload);
        };
        let etags: Option<Vec<String>> = requested
            .iter()
            .map(|p| p.e_tag.as_ref().map(|t| t.value().to_string()))
            .collect();
        let same = record.upload_id.as_deref() == Some(input.upload_id.as_str())
            && etags.and_then(|e| records::multipart_etag(&e)).as_deref() == Some(&record.etag);
        if !same {
            return Err(no_such_upload);
        }
        Ok(S3Response::new(completed(input, &record)))
    }

    pub(super) async fn abort_multipart_upload(
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

    pub(super) async fn list_parts(
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
            .unwrap_or(S3_LIST_PARTS_MAX)
            .min(S3_LIST_PARTS_MAX);
        let after: Vec<&(u32, PartRecord)> = stored.iter().filter(|(n, _)| *n > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<Part> = after
            .iter()
            .take(max)
            .map(|(n, r)| Part {
                part_number: Some(*n as i32),
                e_tag: Some(etag(&r.etag)),
                size: Some(r.bytes() as i64),
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

    pub(super) async fn list_multipart_uploads(
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
                if let (Some((key, id)), Some(record)) =
                    (records::split_pair(k), records::decode::<UploadRecord>(v))
                {
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

/// What UploadPart and UploadPartCopy check before anything else: no SSE-C key (Cairn does
/// not encrypt), and a part number S3 allows.
fn check_part_write(customer_key: bool, part_number: i32) -> S3Result<()> {
    refuse_sse(&SseRequest {
        customer_key,
        ..Default::default()
    })?;
    if !(1..=S3_PART_NUMBER_MAX).contains(&part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers run from 1 to {S3_PART_NUMBER_MAX}"
        ));
    }
    Ok(())
}

/// The answer to a Complete that made `record`.
fn completed(
    input: &CompleteMultipartUploadInput,
    record: &ObjectRecord,
) -> CompleteMultipartUploadOutput {
    let mut output = CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(etag(&record.etag)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        ..Default::default()
    };
    answer_checksum!(output, record.checksum.as_ref());
    output
}
