//! Bucket operations: CreateBucket, HeadBucket, GetBucketLocation, DeleteBucket (empty only)
//! and ListBuckets.

use cairn_core::meta::Table;

use super::*;
use crate::s3::access::{AclRequest, check_acl};
use crate::s3::rules::timestamp;

impl S3Front {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let input = req.input;
        check_acl(&AclRequest::new(
            input.acl.as_ref().map(|a| a.as_str()),
            &[
                &input.grant_full_control,
                &input.grant_read,
                &input.grant_read_acp,
                &input.grant_write,
                &input.grant_write_acp,
            ],
            None,
        ))?;
        let bucket = input.bucket;
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

    pub(super) async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    pub(super) async fn delete_bucket(
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

    pub(super) async fn list_buckets(
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
}
