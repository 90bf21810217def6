//! Listings: ListObjectsV2 and ListObjects, with prefixes, delimiters, markers, continuation
//! tokens and `encoding-type=url`, both over one walk of the bucket's records.

use cairn_core::meta::Table;

use super::*;
use crate::s3::rules::{
    decode_token, encode_token, encoded, etag, max_keys, timestamp, url_encode,
};

#[derive(Default)]
pub(super) struct Listing {
    pub(super) objects: Vec<(String, ObjectRecord)>,
    pub(super) prefixes: Vec<String>,
    pub(super) truncated: bool,
    /// The last key or common prefix returned.
    pub(super) next_marker: Option<String>,
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

impl S3Front {
    /// A listing of a bucket's objects, shared by both ListObjects versions.
    pub(super) async fn list(
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
                Some(mut record) => {
                    // A page keeps what a listing shows: not an inline object's bytes, nor
                    // a large object's chunks.
                    record.inline = Vec::new();
                    record.blobs = Vec::new();
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

    pub(super) async fn list_objects_v2(
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

    pub(super) async fn list_objects(
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
}
