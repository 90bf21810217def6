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

/// The standard headers S3 stores with an object and returns on GET and HEAD, as the client
/// sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires_ms: Option<u64>,
}

impl ContentHeaders {
    /// Headers with a content type alone (all a record of version 1 kept).
    fn of_type(content_type: Option<String>) -> ContentHeaders {
        ContentHeaders {
            content_type,
            ..Default::default()
        }
    }
}

/// A checksum algorithm S3 offers (`x-amz-checksum-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
}

/// Whether a checksum covers the whole object's bytes, or (multipart) the parts' checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumKind {
    FullObject,
    /// The checksum of the parts' binary checksums, written with `-` and the part count.
    Composite,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub kind: ChecksumKind,
    /// Base64, as S3 writes it (a composite one ends `-N`).
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// Without quotes: hex MD5 of the bytes, or for a multipart object hex MD5 of the parts'
    /// MD5s followed by `-` and the part count.
    pub etag: String,
    pub headers: ContentHeaders,
    pub user_metadata: Vec<(String, String)>,
    pub last_modified_ms: u64,
    /// The object's bytes in order: one blob, a multipart object's parts, or none (empty).
    pub blobs: Vec<BlobRef>,
    pub tags: Vec<(String, String)>,
    pub checksum: Option<Checksum>,
    /// A multipart object's parts' checksums, in order (when the upload had an algorithm).
    pub part_checksums: Vec<String>,
    /// The multipart upload this object completed, so that a repeated Complete is answered.
    pub upload_id: Option<String>,
    /// A multipart object's part sizes, every part's, when some part is more than one blob;
    /// empty otherwise, and then part n is blob n (new in version 3).
    pub part_sizes: Vec<u64>,
    /// The object's bytes, for an object stored inside its record (`blobs` is then empty);
    /// empty otherwise (new in version 3).
    pub inline: Vec<u8>,
}

impl ObjectRecord {
    /// The sizes of a multipart object's parts, in order (an empty last part holds no blob,
    /// so without `part_sizes` it has no entry here).
    pub fn part_lens(&self) -> Vec<u64> {
        if self.part_sizes.is_empty() {
            self.blobs.iter().map(|b| b.len).collect()
        } else {
            self.part_sizes.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub initiated_ms: u64,
    pub headers: ContentHeaders,
    pub user_metadata: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// The algorithm and kind CreateMultipartUpload asked for; every part then carries one.
    pub checksum: Option<(ChecksumAlgorithm, ChecksumKind)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part's first chunk (of `s3::body`); for an empty part the empty blob, which is
    /// never stored.
    pub blob: BlobRef,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: u64,
    /// Base64, of the upload's algorithm.
    pub checksum: Option<String>,
    /// The part's chunks after the first (new in version 3).
    pub blobs_after: Vec<BlobRef>,
}

impl PartRecord {
    /// A part of these chunks (none: an empty part).
    pub fn of_blobs(
        blobs: &[BlobRef],
        etag: String,
        last_modified_ms: u64,
        checksum: Option<String>,
    ) -> PartRecord {
        let empty = BlobRef {
            hash: *blake3::hash(b"").as_bytes(),
            len: 0,
        };
        PartRecord {
            blob: blobs.first().copied().unwrap_or(empty),
            etag,
            last_modified_ms,
            checksum,
            blobs_after: blobs.get(1..).unwrap_or_default().to_vec(),
        }
    }

    /// The part's stored blobs, in order (none for an empty part).
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        std::iter::once(&self.blob)
            .chain(&self.blobs_after)
            .filter(|b| b.len > 0)
    }

    /// The part's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blobs().map(|b| b.len).sum()
    }
}

/// The collector's knowledge of a blob the S3 front wrote: when it was last written or
/// referred to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMark {
    pub touched_ms: u64,
    pub len: u64,
}

/// A bucket's tags (PutBucketTagging), under `bucket_tagging_key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketTagging {
    pub tags: Vec<(String, String)>,
}

/// The first bytes of every record written since records carry a version, then the version.
/// No record written before can begin so: an object's (postcard) would need a 67-byte size
/// and an 83-character ETag (ETags have at most 38), an upload's or bucket's begins with a
/// millisecond time (a varint whose first byte is at least 0x80), a mark's likewise; a part's
/// begins with its blob's hash, and would also have to decode whole as the new form.
pub const RECORD_MAGIC: [u8; 2] = *b"CS";

/// The records' newest format version. 1: postcard without a header. 2: `RECORD_MAGIC`, the
/// version byte, postcard; objects gained the standard headers, tags, a checksum, the parts'
/// checksums and the completing upload's id; uploads the headers, tags and checksum
/// algorithm; parts a checksum. 3: objects gained `part_sizes` and `inline`, parts
/// `blobs_after`: lists at the end of the record.
///
/// A record is written in the oldest version that holds it, so that a node of the version
/// before reads it during a rolling upgrade and after a rollback: version 2, with the lists
/// left out, while the lists new in version 3 are empty (every part one chunk, as the AWS
/// CLI's and SDKs' 8 MiB parts are, and the object not inline), version 3 otherwise.
pub const RECORD_VERSION: u8 = 3;

/// A record kept in the metadata: written in the oldest version that holds it, read in any.
pub trait Record: Serialize + for<'de> Deserialize<'de> {
    /// Reads a record of version 1 (postcard, no header).
    fn from_version_1(bytes: &[u8]) -> Option<Self>;

    /// How many of the record's last fields are lists new in version 3.
    const LISTS_SINCE_3: usize = 0;

    /// Whether those lists are all empty (they are left out in version 2).
    fn lists_since_3_empty(&self) -> bool {
        true
    }
}

pub fn encode<T: Record>(record: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(2);
    let mut out = postcard::to_extend(record, out).expect("a record always encodes");
    if T::LISTS_SINCE_3 > 0 {
        if record.lists_since_3_empty() {
            // An empty list is its length alone: one zero byte each, at the end.
            out.truncate(out.len() - T::LISTS_SINCE_3);
        } else {
            out[RECORD_MAGIC.len()] = 3;
        }
    }
    out
}

pub fn decode<T: Record>(bytes: &[u8]) -> Option<T> {
    let decoded = match bytes {
        [m0, m1, 3, body @ ..] if [*m0, *m1] == RECORD_MAGIC && T::LISTS_SINCE_3 > 0 => {
            decode_whole(body)
        }
        [m0, m1, 2, body @ ..] if [*m0, *m1] == RECORD_MAGIC => {
            if T::LISTS_SINCE_3 > 0 {
                let mut whole = body.to_vec();
                whole.extend(std::iter::repeat_n(0, T::LISTS_SINCE_3));
                decode_whole(&whole)
            } else {
                decode_whole(body)
            }
        }
        _ => None,
    };
    decoded.or_else(|| T::from_version_1(bytes))
}

/// Decodes a postcard value that must fill `bytes` exactly.
fn decode_whole<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// The records as version 1 wrote them.
mod version_1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Object {
        pub size: u64,
        pub etag: String,
        pub content_type: Option<String>,
        pub user_metadata: Vec<(String, String)>,
        pub last_modified_ms: u64,
        pub blobs: Vec<BlobRef>,
    }

    #[derive(Deserialize)]
    pub struct Upload {
        pub initiated_ms: u64,
        pub content_type: Option<String>,
        pub user_metadata: Vec<(String, String)>,
    }

    #[derive(Deserialize)]
    pub struct Part {
        pub blob: BlobRef,
        pub etag: String,
        pub last_modified_ms: u64,
    }
}

impl Record for ObjectRecord {
    fn from_version_1(bytes: &[u8]) -> Option<Self> {
        let v1: version_1::Object = decode_whole(bytes)?;
        Some(ObjectRecord {
            size: v1.size,
            etag: v1.etag,
            headers: ContentHeaders::of_type(v1.content_type),
            user_metadata: v1.user_metadata,
            last_modified_ms: v1.last_modified_ms,
            blobs: v1.blobs,
            tags: Vec::new(),
            checksum: None,
            part_checksums: Vec::new(),
            upload_id: None,
            part_sizes: Vec::new(),
            inline: Vec::new(),
        })
    }

    const LISTS_SINCE_3: usize = 2;

    fn lists_since_3_empty(&self) -> bool {
        self.part_sizes.is_empty() && self.inline.is_empty()
    }
}

impl Record for UploadRecord {
    fn from_version_1(bytes: &[u8]) -> Option<Self> {
        let v1: version_1::Upload = decode_whole(bytes)?;
        Some(UploadRecord {
            initiated_ms: v1.initiated_ms,
            headers: ContentHeaders::of_type(v1.content_type),
            user_metadata: v1.user_metadata,
            tags: Vec::new(),
            checksum: None,
        })
    }
}

impl Record for PartRecord {
    fn from_version_1(bytes: &[u8]) -> Option<Self> {
        let v1: version_1::Part = decode_whole(bytes)?;
        Some(PartRecord {
            blob: v1.blob,
            etag: v1.etag,
            last_modified_ms: v1.last_modified_ms,
            checksum: None,
            blobs_after: Vec::new(),
        })
    }

    const LISTS_SINCE_3: usize = 1;

    fn lists_since_3_empty(&self) -> bool {
        self.blobs_after.is_empty()
    }
}

/// An access key managed online (`cairn key create`), under `access_key_key`. Its secret is
/// sealed (`s3::keys`): the signature check needs the plain secret, so it is encrypted with
/// the cluster's key-encryption key, not hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub name: String,
    /// Nonce, then the sealed secret and its tag.
    pub sealed_secret: Vec<u8>,
    pub create_buckets: bool,
    pub created_ms: u64,
}

/// A key's permission on a bucket, under `grant_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub permission: cairn_core::keys::Permission,
}

/// New in version 2.
impl Record for AccessKeyRecord {
    fn from_version_1(_: &[u8]) -> Option<Self> {
        None
    }
}

/// New in version 2.
impl Record for GrantRecord {
    fn from_version_1(_: &[u8]) -> Option<Self> {
        None
    }
}

/// Unchanged since version 1.
impl Record for BucketRecord {
    fn from_version_1(bytes: &[u8]) -> Option<Self> {
        decode_whole(bytes)
    }
}

/// Unchanged since version 1.
impl Record for BlobMark {
    fn from_version_1(bytes: &[u8]) -> Option<Self> {
        decode_whole(bytes)
    }
}

/// New in version 2.
impl Record for BucketTagging {
    fn from_version_1(_: &[u8]) -> Option<Self> {
        None
    }
}

/// The one partition of the bucket table.
pub const BUCKETS_PARTITION: &str = "";

pub fn bucket_key(bucket: &str) -> MetaKey {
    MetaKey::new(Table::Buckets, BUCKETS_PARTITION, bucket.as_bytes())
}

/// What a bucket carries besides its record lives in a partition of the bucket table per kind,
/// under the bucket's name: writing one never races with writing another, and ListBuckets,
/// which walks `BUCKETS_PARTITION`, does not see them. Access keys and their grants live the
/// same way.
pub const BUCKET_TAGGING_PARTITION: &str = "tagging";
/// The partition of buckets' lifecycle configurations.
pub const BUCKET_LIFECYCLE_PARTITION: &str = "lifecycle";

pub fn bucket_tagging_key(bucket: &str) -> MetaKey {
    MetaKey::new(Table::Buckets, BUCKET_TAGGING_PARTITION, bucket.as_bytes())
}

pub fn bucket_lifecycle_key(bucket: &str) -> MetaKey {
    MetaKey::new(
        Table::Buckets,
        BUCKET_LIFECYCLE_PARTITION,
        bucket.as_bytes(),
    )
}

/// The partition of access keys managed online, by access key id.
pub const ACCESS_KEYS_PARTITION: &str = "keys";
/// The partition of keys' permissions on buckets, by `bucket \0 access key`: a bucket's
/// grants are one prefix, and granting on one bucket never races with another.
pub const GRANTS_PARTITION: &str = "grants";

pub fn access_key_key(access_key: &str) -> MetaKey {
    MetaKey::new(Table::Buckets, ACCESS_KEYS_PARTITION, access_key.as_bytes())
}

/// A grant's sort key: `bucket \0 access key` (split by [`split_pair`]).
pub fn grant_sort_key(bucket: &str, access_key: &str) -> Vec<u8> {
    pair(bucket, access_key)
}

pub fn grant_key(bucket: &str, access_key: &str) -> MetaKey {
    MetaKey::new(
        Table::Buckets,
        GRANTS_PARTITION,
        grant_sort_key(bucket, access_key),
    )
}

pub fn object_key(bucket: &str, key: &str) -> MetaKey {
    MetaKey::new(Table::Objects, bucket, key.as_bytes())
}

/// Uploads sort by key, then upload id: `key \0 upload id` (split by [`split_pair`]).
pub fn upload_sort_key(key: &str, upload_id: &str) -> Vec<u8> {
    pair(key, upload_id)
}

/// `first \0 second`: sorts by `first`, then `second`.
fn pair(first: &str, second: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(first.len() + 1 + second.len());
    out.extend_from_slice(first.as_bytes());
    out.push(0);
    out.extend_from_slice(second.as_bytes());
    out
}

/// The two halves of an upload's or a grant's sort key.
pub fn split_pair(sort_key: &[u8]) -> Option<(String, String)> {
    let zero = sort_key.iter().position(|&b| b == 0)?;
    let first = std::str::from_utf8(&sort_key[..zero]).ok()?;
    let second = std::str::from_utf8(&sort_key[zero + 1..]).ok()?;
    Some((first.to_string(), second.to_string()))
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

    /// Records as version 1 wrote them (postcard, no header), to check they are still read.
    mod written_by_version_1 {
        use serde::Serialize;

        #[derive(Serialize)]
        pub struct Object {
            pub size: u64,
            pub etag: String,
            pub content_type: Option<String>,
            pub user_metadata: Vec<(String, String)>,
            pub last_modified_ms: u64,
            pub blobs: Vec<super::BlobRef>,
        }

        #[derive(Serialize)]
        pub struct Upload {
            pub initiated_ms: u64,
            pub content_type: Option<String>,
            pub user_metadata: Vec<(String, String)>,
        }

        #[derive(Serialize)]
        pub struct Part {
            pub blob: super::BlobRef,
            pub etag: String,
            pub last_modified_ms: u64,
        }
    }

    #[test]
    fn records_of_version_1_are_read_and_new_ones_carry_the_version() {
        let blob = BlobRef {
            hash: [7; 32],
            len: 5,
        };
        let object = postcard::to_allocvec(&written_by_version_1::Object {
            size: 5,
            etag: "0cc175b9c0f1b6a831c399e269772661".into(),
            content_type: Some("text/plain".into()),
            user_metadata: vec![("a".into(), "b".into())],
            last_modified_ms: 1_700_000_000_000,
            blobs: vec![blob],
        })
        .unwrap();
        let read: ObjectRecord = decode(&object).unwrap();
        assert_eq!(read.headers.content_type.as_deref(), Some("text/plain"));
        assert_eq!((read.size, read.blobs.clone()), (5, vec![blob]));
        assert!(read.tags.is_empty() && read.checksum.is_none() && read.upload_id.is_none());
        let upload = postcard::to_allocvec(&written_by_version_1::Upload {
            initiated_ms: 1_700_000_000_000,
            content_type: None,
            user_metadata: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            decode::<UploadRecord>(&upload).unwrap().initiated_ms,
            1_700_000_000_000
        );
        let part = postcard::to_allocvec(&written_by_version_1::Part {
            blob,
            etag: "x".into(),
            last_modified_ms: 3,
        })
        .unwrap();
        assert_eq!(decode::<PartRecord>(&part).unwrap().blob, blob);

        let encoded = encode(&read);
        assert_eq!(encoded[..3], [RECORD_MAGIC[0], RECORD_MAGIC[1], 2]);
        assert_eq!(decode::<ObjectRecord>(&encoded).unwrap(), read);
        // A version-1 object cannot begin with the header: its second byte would be an ETag
        // length of 83.
        assert!(decode::<ObjectRecord>(&encoded[..encoded.len() - 1]).is_none());
        assert!(decode::<ObjectRecord>(b"garbage").is_none());
    }

    /// Objects and parts as version 2 wrote them (and a node of 0.2 reads them).
    mod written_by_version_2 {
        use super::super::{BlobRef, Checksum, ContentHeaders};
        use serde::Serialize;

        #[derive(Serialize)]
        pub struct Object {
            pub size: u64,
            pub etag: String,
            pub headers: ContentHeaders,
            pub user_metadata: Vec<(String, String)>,
            pub last_modified_ms: u64,
            pub blobs: Vec<BlobRef>,
            pub tags: Vec<(String, String)>,
            pub checksum: Option<Checksum>,
            pub part_checksums: Vec<String>,
            pub upload_id: Option<String>,
        }

        #[derive(Serialize)]
        pub struct Part {
            pub blob: BlobRef,
            pub etag: String,
            pub last_modified_ms: u64,
            pub checksum: Option<String>,
        }
    }

    fn version_2_bytes(value: &impl Serialize) -> Vec<u8> {
        let mut out = vec![RECORD_MAGIC[0], RECORD_MAGIC[1], 2];
        out.extend(postcard::to_allocvec(value).unwrap());
        out
    }

    #[test]
    fn records_are_written_in_version_2_unless_they_need_version_3() {
        let chunk = |n: u8, len: u64| BlobRef { hash: [n; 32], len };
        let v2 = written_by_version_2::Object {
            size: 9,
            etag: "0cc175b9c0f1b6a831c399e269772661-2".into(),
            headers: ContentHeaders::of_type(Some("application/x-tar".into())),
            user_metadata: vec![("a".into(), "b".into())],
            last_modified_ms: 1_700_000_000_000,
            blobs: vec![chunk(1, 5), chunk(2, 4)],
            tags: vec![("t".into(), "v".into())],
            checksum: None,
            part_checksums: Vec::new(),
            upload_id: Some("u".into()),
        };
        let bytes = version_2_bytes(&v2);
        let read: ObjectRecord = decode(&bytes).unwrap();
        assert_eq!(read.blobs, v2.blobs);
        assert_eq!(read.upload_id.as_deref(), Some("u"));
        assert_eq!(read.part_lens(), vec![5, 4]);
        // What version 2 can hold is written exactly as version 2 wrote it.
        assert_eq!(encode(&read), bytes);

        // Parts of several chunks need version 3, and read back whole.
        let mut split = read.clone();
        split.blobs.push(chunk(3, 2));
        split.part_sizes = vec![5, 6];
        split.size = 11;
        let encoded = encode(&split);
        assert_eq!(
            encoded[..3],
            [RECORD_MAGIC[0], RECORD_MAGIC[1], RECORD_VERSION]
        );
        let back: ObjectRecord = decode(&encoded).unwrap();
        assert_eq!(back, split);
        assert_eq!(back.part_lens(), vec![5, 6]);
        // So does an object stored inside its record.
        let inline = ObjectRecord {
            blobs: Vec::new(),
            part_sizes: Vec::new(),
            inline: b"small".to_vec(),
            size: 5,
            ..read.clone()
        };
        let encoded = encode(&inline);
        assert_eq!(encoded[2], RECORD_VERSION);
        assert_eq!(decode::<ObjectRecord>(&encoded).unwrap(), inline);

        let part = written_by_version_2::Part {
            blob: chunk(4, 8),
            etag: "x".into(),
            last_modified_ms: 3,
            checksum: Some("c".into()),
        };
        let bytes = version_2_bytes(&part);
        let read: PartRecord = decode(&bytes).unwrap();
        assert_eq!((read.blob, read.bytes()), (chunk(4, 8), 8));
        assert_eq!(encode(&read), bytes);
        let chunks = [chunk(5, 8), chunk(6, 8), chunk(7, 1)];
        let big = PartRecord::of_blobs(&chunks, "y".into(), 4, None);
        let encoded = encode(&big);
        assert_eq!(encoded[2], RECORD_VERSION);
        let back: PartRecord = decode(&encoded).unwrap();
        assert_eq!(back.blobs().copied().collect::<Vec<_>>(), chunks);
        assert_eq!(back.bytes(), 17);
        let empty = PartRecord::of_blobs(&[], "z".into(), 4, None);
        assert_eq!((empty.blobs().count(), empty.bytes()), (0, 0));
        assert_eq!(encode(&empty)[2], 2);
        // A version-3 record is not taken for another kind of record of version 2.
        assert!(decode::<UploadRecord>(&encoded).is_none());
    }

    #[test]
    fn part_keys_sort_by_number_within_their_upload() {
        let a = part_key("b", "k", "u", 2).key;
        let b = part_key("b", "k", "u", 10).key;
        assert!(a < b);
        assert!(a.starts_with(&parts_prefix("k", "u")));
        assert_eq!(part_number_of(&b), Some(10));
        assert_eq!(
            split_pair(&upload_sort_key("a/b", "id1")),
            Some(("a/b".into(), "id1".into()))
        );
    }
}
