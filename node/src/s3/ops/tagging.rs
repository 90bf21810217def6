//! Tags: Put/Get/DeleteObjectTagging (in the object's record, rewritten only if nothing newer
//! was written since it was read) and Put/Get/DeleteBucketTagging (a record of their own);
//! also GetObjectAttributes.

use super::*;
use crate::limits::S3_LIST_PARTS_MAX;
use crate::s3::StatusOverride;
use crate::s3::access::refuse_sse_read;
use crate::s3::checksums::answer_checksum;
use crate::s3::records::BucketTagging;
use crate::s3::rules::{parts_count, timestamp};
use crate::s3::tags::{self, TagOwner};

impl S3Front {
    pub(super) async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let record = self.object(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tags::to_tag_set(&record.tags),
            version_id: None,
        }))
    }

    pub(super) async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let new_tags = tags::from_tagging(input.tagging, TagOwner::Object)?;
        self.retag_object(&input.bucket, &input.key, new_tags)
            .await?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id: None }))
    }

    pub(super) async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        self.retag_object(&input.bucket, &input.key, Vec::new())
            .await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: None,
        }))
    }

    /// Sets an object's tags. A put of the same key between the read and the write wins (see
    /// `replace_object`); the tagging is then answered as if it came first.
    async fn retag_object(&self, bucket: &str, key: &str, tags: tags::Tags) -> S3Result<()> {
        let (stamp, record) = self.object_entry(bucket, key).await?;
        let record = ObjectRecord { tags, ..record };
        self.replace_object(bucket, key, stamp, Some(&record)).await
    }

    pub(super) async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let bucket = &req.input.bucket;
        self.require_bucket(bucket).await?;
        let entry = self.read_meta(&records::bucket_tagging_key(bucket)).await?;
        match decode_record::<BucketTagging>(entry) {
            Some(tagging) if !tagging.tags.is_empty() => {
                Ok(S3Response::new(GetBucketTaggingOutput {
                    tag_set: tags::to_tag_set(&tagging.tags),
                }))
            }
            _ => Err(s3_error!(NoSuchTagSet, "The TagSet does not exist")),
        }
    }

    pub(super) async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let input = req.input;
        let tags = tags::from_tagging(input.tagging, TagOwner::Bucket)?;
        self.require_bucket(&input.bucket).await?;
        self.write_meta(
            records::bucket_tagging_key(&input.bucket),
            Some(records::encode(&BucketTagging { tags })),
        )
        .await?;
        // 204, as S3 answers it.
        let mut response = S3Response::new(PutBucketTaggingOutput {});
        response
            .extensions
            .insert(StatusOverride(hyper::StatusCode::NO_CONTENT));
        Ok(response)
    }

    pub(super) async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let bucket = &req.input.bucket;
        self.require_bucket(bucket).await?;
        self.write_meta(records::bucket_tagging_key(bucket), None)
            .await?;
        Ok(S3Response::new(DeleteBucketTaggingOutput {}))
    }

    pub(super) async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        refuse_sse_read(
            input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
        )?;
        let record = self.object(&input.bucket, &input.key).await?;
        // `x-amz-object-attributes` is one comma-separated header, or several.
        let wants = |name: &str| {
            input
                .object_attributes
                .iter()
                .flat_map(|a| a.as_str().split(','))
                .any(|a| a.trim().eq_ignore_ascii_case(name))
        };
        let mut output = GetObjectAttributesOutput {
            last_modified: Some(timestamp(record.last_modified_ms)),
            ..Default::default()
        };
        if wants(ObjectAttributes::ETAG) {
            // S3 writes this one unquoted; s3s quotes every ETag it writes.
            output.e_tag = Some(ETag::Strong(record.etag.clone()));
        }
        if wants(ObjectAttributes::OBJECT_SIZE) {
            output.object_size = Some(record.size as i64);
        }
        if wants(ObjectAttributes::STORAGE_CLASS) {
            output.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        }
        if wants(ObjectAttributes::CHECKSUM)
            && let Some(c) = &record.checksum
        {
            let mut checksum = Checksum::default();
            answer_checksum!(checksum, Some(c));
            output.checksum = Some(checksum);
        }
        if wants(ObjectAttributes::OBJECT_PARTS)
            && let Some(count) = parts_count(&record)
        {
            output.object_parts = Some(object_parts(&record, count, &input));
        }
        Ok(S3Response::new(output))
    }
}

/// GetObjectAttributes' page of a multipart object's parts.
fn object_parts(
    record: &ObjectRecord,
    count: u32,
    input: &GetObjectAttributesInput,
) -> GetObjectAttributesParts {
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let max = input.max_parts.map_or(S3_LIST_PARTS_MAX, |m| {
        (m.max(0) as usize).min(S3_LIST_PARTS_MAX)
    });
    // Only the last part may be empty; without `part_sizes` it holds no blob and has no entry.
    let mut parts = Vec::new();
    let lens = record.part_lens();
    let mut truncated = false;
    for number in (marker + 1)..=count {
        if parts.len() == max {
            truncated = true;
            break;
        }
        let index = (number - 1) as usize;
        let mut part = ObjectPart {
            part_number: Some(number as i32),
            size: Some(lens.get(index).map_or(0, |l| *l as i64)),
            ..Default::default()
        };
        if let (Some(c), Some(value)) = (&record.checksum, record.part_checksums.get(index)) {
            let part_checksum = crate::s3::records::Checksum {
                value: value.clone(),
                ..c.clone()
            };
            answer_checksum!(part, values Some(&part_checksum));
        }
        parts.push(part);
    }
    GetObjectAttributesParts {
        is_truncated: Some(truncated),
        max_parts: Some(max as i32),
        next_part_number_marker: truncated
            .then(|| parts.last().and_then(|p| p.part_number))
            .flatten(),
        part_number_marker: input.part_number_marker,
        parts: Some(parts),
        total_parts_count: Some(count as i32),
    }
}
