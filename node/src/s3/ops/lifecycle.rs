//! Bucket lifecycle configurations: Put, Get and Delete, a record of their own per bucket
//! (`records::bucket_lifecycle_key`). The collector's pass applies them (`crate::s3::gc`).

use super::*;
use crate::s3::lifecycle::{self, Lifecycle};

impl S3Front {
    pub(super) async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let bucket = &req.input.bucket;
        self.require_bucket(bucket).await?;
        let entry = self
            .read_meta(&records::bucket_lifecycle_key(bucket))
            .await?;
        match decode_record::<Lifecycle>(entry) {
            Some(config) => Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
                rules: Some(lifecycle::to_dto(&config)),
                transition_default_minimum_object_size: None,
            })),
            None => Err(s3_error!(
                NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist"
            )),
        }
    }

    pub(super) async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let config = input
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "no LifecycleConfiguration"))?;
        let config = lifecycle::from_dto(config)?;
        self.require_bucket(&input.bucket).await?;
        self.write_meta(
            records::bucket_lifecycle_key(&input.bucket),
            Some(records::encode(&config)),
        )
        .await?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    pub(super) async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        let bucket = &req.input.bucket;
        self.require_bucket(bucket).await?;
        self.write_meta(records::bucket_lifecycle_key(bucket), None)
            .await?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput {}))
    }
}
