//! Access control lists: GetBucketAcl and GetObjectAcl answer the owner's `FULL_CONTROL`;
//! PutBucketAcl and PutObjectAcl accept the same and refuse anything else (`super::access`).
//! Bucket policies: a bucket has none (GetBucketPolicy answers NoSuchBucketPolicy, as S3 does
//! for a bucket without one; Nexus reads it when it starts), and setting one is refused.

use super::*;
use crate::s3::access::{acl_request, check_acl, owner, owner_grants};

impl S3Front {
    pub(super) async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(owner_grants()),
            owner: Some(owner()),
        }))
    }

    pub(super) async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        check_acl(&acl_request!(input, input.access_control_policy.as_ref()))?;
        Ok(S3Response::new(PutBucketAclOutput {}))
    }

    pub(super) async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.object(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(owner_grants()),
            owner: Some(owner()),
            request_charged: None,
        }))
    }

    pub(super) async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let input = req.input;
        self.object(&input.bucket, &input.key).await?;
        check_acl(&acl_request!(input, input.access_control_policy.as_ref()))?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    pub(super) async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Err(s3_error!(
            NoSuchBucketPolicy,
            "The bucket policy does not exist"
        ))
    }

    pub(super) async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Err(s3_error!(
            NotImplemented,
            "Cairn has no bucket policies; access is by key"
        ))
    }
}
