//! Bucket operations: CreateBucket (of a bucket already owned: 200, as S3 in us-east-1),
//! HeadBucket, GetBucketLocation, DeleteBucket (of a bucket without objects; unfinished uploads
//! are aborted, as S3 does) and ListBuckets (paged by `max-buckets` and a continuation token).
//! The bucket settings Cairn does not have are answered as S3 answers a bucket that never had
//! them: GetBucketVersioning (never enabled) and GetBucketEncryption (no configuration);
//! enabling versioning is refused.
//!
//! A managed key owns the buckets it creates; ListBuckets lists the buckets the key may use;
//! DeleteBucket takes every key's permission on the bucket with it.

use cairn_core::keys::Permission as KeyPermission;
use cairn_core::meta::Table;

use super::*;
use crate::limits::{S3_FORGET_BATCH_ENTRIES_MAX, S3_LIST_BUCKETS_MAX};
use crate::s3::access::{acl_request, check_acl, owner};
use crate::s3::records::{GrantRecord, PartRecord, split_pair};
use crate::s3::rules::{decode_token, encode_token, timestamp};

impl S3Front {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let access_key = req.credentials.map(|c| c.access_key).unwrap_or_default();
        let input = req.input;
        check_acl(&acl_request!(input, None))?;
        let bucket = input.bucket;
        let key = records::bucket_key(&bucket);
        if decode_record::<BucketRecord>(self.read_meta(&key).await?).is_some() {
            // Cairn answers as S3's us-east-1 (GetBucketLocation's empty answer), where
            // creating a bucket one owns succeeds and changes nothing; a bucket of others'
            // is theirs.
            let owned = self.keys.permission(&access_key, &bucket).await?;
            if owned != Some(KeyPermission::Owner) {
                return Err(s3_error!(
                    BucketAlreadyExists,
                    "The requested bucket name is not available"
                ));
            }
            return Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{bucket}")),
            }));
        }
        // A managed key owns the buckets it creates; its grant is written first, so the
        // bucket is never there without its owner.
        if !self.keys.is_seed(&access_key) {
            let grant = GrantRecord {
                permission: KeyPermission::Owner,
            };
            let grant_key = records::grant_key(&bucket, &access_key);
            self.write_meta(grant_key, Some(records::encode(&grant)))
                .await?;
            self.keys
                .note_grant(&access_key, &bucket, KeyPermission::Owner);
        }
        let record = BucketRecord {
            created_ms: now_ms(),
        };
        if let Err(e) = self.write_meta(key, Some(records::encode(&record))).await {
            // No grant may outlive a bucket that was not made: it would give its key the
            // next bucket of that name.
            if !self.keys.is_seed(&access_key) {
                let grant_key = records::grant_key(&bucket, &access_key);
                let _ = self.write_meta(grant_key, None).await;
            }
            return Err(e);
        }
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
        if !listing.objects.is_empty() {
            return Err(s3_error!(BucketNotEmpty, "bucket {bucket} holds objects"));
        }
        self.abort_every_upload(&bucket).await?;
        // Its settings go before it, so a bucket created again under the name has none.
        self.write_meta(records::bucket_tagging_key(&bucket), None)
            .await?;
        self.write_meta(records::bucket_lifecycle_key(&bucket), None)
            .await?;
        let mut granted = Vec::new();
        let grants = Partition::new(Table::Buckets, records::GRANTS_PARTITION);
        let prefix = records::grant_sort_key(&bucket, "");
        self.walk(&grants, None, &prefix, |sort_key, _| {
            granted.push(sort_key.to_vec());
            Walk::Next
        })
        .await?;
        for sort_key in granted {
            let key = MetaKey::new(Table::Buckets, records::GRANTS_PARTITION, sort_key);
            self.write_meta(key, None).await?;
        }
        self.buckets_seen.lock().remove(&bucket);
        self.write_meta(records::bucket_key(&bucket), None).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    /// Aborts every unfinished upload of a bucket, a batch at a time: the parts' records, then
    /// the upload's (their blobs are left to the collector).
    async fn abort_every_upload(&self, bucket: &str) -> S3Result<()> {
        let part = Partition::new(Table::Uploads, bucket);
        loop {
            let mut uploads = Vec::new();
            self.walk(&part, None, b"", |sort_key, _| {
                uploads.extend(split_pair(sort_key));
                match uploads.len() < S3_FORGET_BATCH_ENTRIES_MAX {
                    true => Walk::Next,
                    false => Walk::Stop,
                }
            })
            .await?;
            if uploads.is_empty() {
                return Ok(());
            }
            for (key, upload_id) in uploads {
                let parts: Vec<(u32, PartRecord)> = self.parts_of(bucket, &key, &upload_id).await?;
                self.forget_upload(bucket, &key, &upload_id, &parts).await?;
            }
        }
    }

    pub(super) async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let access_key = req.credentials.map(|c| c.access_key).unwrap_or_default();
        let input = req.input;
        let max = match input.max_buckets {
            None => S3_LIST_BUCKETS_MAX,
            Some(n) if (1..=S3_LIST_BUCKETS_MAX as i32).contains(&n) => n as usize,
            Some(n) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-buckets is {n}; it runs from 1 to {S3_LIST_BUCKETS_MAX}"
                ));
            }
        };
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?.into_bytes()),
            None => None,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let part = Partition::new(Table::Buckets, records::BUCKETS_PARTITION);
        let mut buckets = Vec::new();
        let mut more = false;
        self.walk(&part, after, prefix.as_bytes(), |name, value| {
            if buckets.len() == max {
                more = true;
                return Walk::Stop;
            }
            if let (Ok(name), Some(record)) = (
                std::str::from_utf8(name),
                records::decode::<BucketRecord>(value),
            ) && self.keys.may_see(&access_key, name)
            {
                buckets.push(Bucket {
                    name: Some(name.to_string()),
                    creation_date: Some(timestamp(record.created_ms)),
                    ..Default::default()
                });
            }
            Walk::Next
        })
        .await?;
        let continuation_token = match more {
            true => buckets
                .last()
                .and_then(|b| b.name.as_deref())
                .map(encode_token),
            false => None,
        };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            continuation_token,
            prefix: input.prefix,
        }))
    }

    pub(super) async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        // No <Status>: versioning was never enabled.
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    pub(super) async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        let enabled = req
            .input
            .versioning_configuration
            .status
            .as_ref()
            .is_some_and(|s| s.as_str() == BucketVersioningStatus::ENABLED);
        if enabled {
            return Err(s3_error!(
                NotImplemented,
                "Cairn keeps one version of each object: versioning cannot be enabled"
            ));
        }
        // Suspending what was never enabled changes nothing.
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    pub(super) async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Err(s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found"
        ))
    }
}
