//! The S3 front's records in the replicated metadata (postcard values of `meta` entries), and
//! the keys they live under.

use serde::{Deserialize, Serialize};

use cairn_core::meta::{MetaKey, Table};

/// A blob an object is made of, or a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub hash: [u8; 32],
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub created_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// Without quotes: hex MD5 of the bytes, or for a multipart object hex MD5 of the parts'
    /// MD5s followed by `-` and the part count.
    pub etag: String,
    pub content_type: Option<String>,
    pub user_metadata: Vec<(String, String)>,
    pub last_modified_ms: u64,
    /// The object's bytes in order: one blob, a multipart object's parts, or none (empty).
    pub blobs: Vec<BlobRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub initiated_ms: u64,
    pub content_type: Option<String>,
    pub user_metadata: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub blob: BlobRef,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: u64,
}

/// The collector's knowledge of a blob the S3 front wrote: when it was last written or
/// referred to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMark {
    pub touched_ms: u64,
    pub len: u64,
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    postcard::to_allocvec(record).expect("a record always encodes")
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// The one partition of the bucket table.
pub const BUCKETS_PARTITION: &str = "";

pub fn bucket_key(bucket: &str) -> MetaKey {
    MetaKey::new(Table::Buckets, BUCKETS_PARTITION, bucket.as_bytes())
}

pub fn object_key(bucket: &str, key: &str) -> MetaKey {
    MetaKey::new(Table::Objects, bucket, key.as_bytes())
}

/// Uploads sort by key, then upload id: `key \0 upload id`.
pub fn upload_sort_key(key: &str, upload_id: &str) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(upload_id.as_bytes());
    out
}

pub fn split_upload_sort_key(sort_key: &[u8]) -> Option<(String, String)> {
    let zero = sort_key.iter().position(|&b| b == 0)?;
    let key = std::str::from_utf8(&sort_key[..zero]).ok()?;
    let id = std::str::from_utf8(&sort_key[zero + 1..]).ok()?;
    Some((key.to_string(), id.to_string()))
}

pub fn upload_key(bucket: &str, key: &str, upload_id: &str) -> MetaKey {
    MetaKey::new(Table::Uploads, bucket, upload_sort_key(key, upload_id))
}

/// Parts sort by upload, then number: `key \0 upload id \0 number (u32 BE)`.
pub fn parts_prefix(key: &str, upload_id: &str) -> Vec<u8> {
    let mut out = upload_sort_key(key, upload_id);
    out.push(0);
    out
}

pub fn part_key(bucket: &str, key: &str, upload_id: &str, number: u32) -> MetaKey {
    let mut sort_key = parts_prefix(key, upload_id);
    sort_key.extend_from_slice(&number.to_be_bytes());
    MetaKey::new(Table::Parts, bucket, sort_key)
}

pub fn part_number_of(sort_key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = sort_key
        .get(sort_key.len().checked_sub(4)?..)?
        .try_into()
        .ok()?;
    Some(u32::from_be_bytes(tail))
}

/// Blob marks are spread over `BLOB_MARK_PARTITIONS` partitions by the first four bits of
/// the hash: enough to spread them over the cluster, few enough that a batch of marks is a few
/// writes.
pub const BLOB_MARK_PARTITIONS: u8 = 16;

pub fn blob_mark_key(hash: &[u8; 32]) -> MetaKey {
    MetaKey::new(
        Table::Blobs,
        blob_mark_partition(hash[0] >> 4),
        hash.to_vec(),
    )
}

/// The name of mark partition `index` (below `BLOB_MARK_PARTITIONS`).
pub fn blob_mark_partition(index: u8) -> String {
    format!("{index:x}")
}

/// Hex MD5 of a multipart object: MD5 of the parts' binary MD5s, `-`, the part count.
pub fn multipart_etag(part_etags: &[String]) -> Option<String> {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for etag in part_etags {
        md5.update(hex_decode(etag)?);
    }
    Some(format!("{}-{}", hex(&md5.finalize()), part_etags.len()))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_etag_is_the_md5_of_the_part_md5s_and_the_count() {
        // Two parts "a" and "b": md5("a") = 0cc175b9..., md5("b") = 92eb5ffe...
        let parts = [
            "0cc175b9c0f1b6a831c399e269772661".to_string(),
            "92eb5ffee6ae2fec3ad71c777531578f".to_string(),
        ];
        use md5::Digest;
        let mut joined = Vec::new();
        joined.extend_from_slice(&md5::Md5::digest(b"a"));
        joined.extend_from_slice(&md5::Md5::digest(b"b"));
        let expected = format!("{}-2", hex(&md5::Md5::digest(&joined)));
        assert_eq!(multipart_etag(&parts).unwrap(), expected);
        assert!(multipart_etag(&["xyz".to_string()]).is_none());
    }

    #[test]
    fn part_keys_sort_by_number_within_their_upload() {
        let a = part_key("b", "k", "u", 2).key;
        let b = part_key("b", "k", "u", 10).key;
        assert!(a < b);
        assert!(a.starts_with(&parts_prefix("k", "u")));
        assert_eq!(part_number_of(&b), Some(10));
        assert_eq!(
            split_upload_sort_key(&upload_sort_key("a/b", "id1")),
            Some(("a/b".into(), "id1".into()))
        );
    }
}
