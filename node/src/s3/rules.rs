//! S3's rules, as plain functions: keys, user metadata and conditional headers, the byte
//! ranges of an object's blobs, continuation tokens and URL encoding, and the S3 errors that
//! Cairn's own errors become. No IO; the operations (`ops/`) call these.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_client::ClientError;
use cairn_core::wire::{ByteRange, ErrorCode};
use cairn_engine::Hash;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::body::{Claimed, ClaimedChecksum};
use super::records::{self, BlobRef, ObjectRecord};
use crate::limits::{S3_KEY_BYTES_MAX, S3_LIST_KEYS_MAX, S3_USER_METADATA_BYTES_MAX};
use crate::meta::cluster::MetaError;

pub(super) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub(super) fn ms_of(ts: &Timestamp) -> u64 {
    let t: SystemTime = time_to_system(ts);
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn time_to_system(ts: &Timestamp) -> SystemTime {
    let odt: time::OffsetDateTime = ts.clone().into();
    SystemTime::from(odt)
}

pub(super) fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

pub(super) fn meta_error(e: MetaError) -> S3Error {
    let mut err = s3_error!(ServiceUnavailable, "metadata unavailable: {e}");
    err.set_status_code(hyper::StatusCode::SERVICE_UNAVAILABLE);
    err
}

pub(super) fn client_error(e: ClientError) -> S3Error {
    match &e {
        ClientError::Remote {
            code: ErrorCode::StoreFull,
            ..
        } => {
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                format!("the cluster has no room: {e}"),
            );
            err.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE);
            err
        }
        ClientError::Remote {
            code: ErrorCode::NotFound,
            ..
        }
        | ClientError::NotFound { .. } => {
            s3_error!(InternalError, "an object's blob is missing: {e}")
        }
        _ if e.is_transient() => s3_error!(ServiceUnavailable, "{e}"),
        _ => s3_error!(InternalError, "{e}"),
    }
}

pub(super) fn user_metadata(metadata: Option<Metadata>) -> S3Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = metadata.unwrap_or_default().into_iter().collect();
    pairs.sort();
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > S3_USER_METADATA_BYTES_MAX {
        return Err(s3_error!(
            MetadataTooLarge,
            "{bytes} bytes of user metadata; the limit is {S3_USER_METADATA_BYTES_MAX}"
        ));
    }
    Ok(pairs)
}

pub(super) fn metadata_map(pairs: &[(String, String)]) -> Option<Metadata> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

/// The standard headers of a write that creates an object, taken from its input (PutObject,
/// CopyObject and CreateMultipartUpload name them alike).
macro_rules! content_headers {
    ($input:expr) => {
        $crate::s3::records::ContentHeaders {
            content_type: $input.content_type.take(),
            cache_control: $input.cache_control.take(),
            content_disposition: $input.content_disposition.take(),
            content_encoding: $input.content_encoding.take(),
            content_language: $input.content_language.take(),
            expires_ms: $input.expires.as_ref().map($crate::s3::rules::ms_of),
        }
    };
}
pub(super) use content_headers;

/// Writes an object's standard headers into a GetObject or HeadObject answer.
macro_rules! answer_headers {
    ($output:expr, $headers:expr) => {{
        let h: &$crate::s3::records::ContentHeaders = $headers;
        $output.content_type = h.content_type.clone();
        $output.cache_control = h.cache_control.clone();
        $output.content_disposition = h.content_disposition.clone();
        $output.content_encoding = h.content_encoding.clone();
        $output.content_language = h.content_language.clone();
        $output.expires = h.expires_ms.map($crate::s3::rules::timestamp);
    }};
}
pub(super) use answer_headers;

/// Conditional writes (`If-Match`, `If-None-Match: *` on PutObject and
/// CompleteMultipartUpload) need a compare-and-set the metadata does not offer: refuse them
/// rather than overwrite silently.
pub(super) fn refuse_conditional_write(conditional: bool) -> S3Result<()> {
    if conditional {
        return Err(s3_error!(
            NotImplemented,
            "conditional writes (If-Match, If-None-Match) are not supported"
        ));
    }
    Ok(())
}

/// A `Content-MD5` must be the base64 of 16 bytes (24 characters ending `==`); anything else,
/// empty included, is `InvalidDigest`, refused before the body is read. (One of the right form
/// that differs from the body's MD5 is `BadDigest`, once the body has arrived.)
pub(super) fn check_content_md5(claimed: Option<&str>) -> S3Result<()> {
    let Some(claimed) = claimed else {
        return Ok(());
    };
    let decoded = base64_simd::STANDARD.decode_to_vec(claimed.trim().as_bytes());
    if !decoded.is_ok_and(|digest| digest.len() == 16) {
        return Err(s3_error!(
            InvalidDigest,
            "The Content-MD5 you specified was not valid: {claimed:?} is not the base64 of 16 bytes"
        ));
    }
    Ok(())
}

/// An UploadPartCopy's `x-amz-copy-source-range`: `bytes=first-last`, both within a source of
/// `size` bytes, as S3 requires (no open or suffix ranges); the offset and length it names.
pub(super) fn copy_source_range(text: &str, size: u64) -> S3Result<(u64, u64)> {
    let parsed = text.strip_prefix("bytes=").and_then(|range| {
        let (first, last) = range.split_once('-')?;
        let first: u64 = first.parse().ok()?;
        let last: u64 = last.parse().ok()?;
        (first <= last).then_some((first, last))
    });
    let Some((first, last)) = parsed else {
        return Err(s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first \
             and last are the zero-based offsets of the first and last bytes to copy (got {text:?})"
        ));
    };
    if last >= size {
        return Err(s3_error!(
            InvalidArgument,
            "Range specified is not valid for source object of size: {size}"
        ));
    }
    Ok((first, last - first + 1))
}

pub(super) fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > S3_KEY_BYTES_MAX {
        return Err(s3_error!(
            KeyTooLongError,
            "a key is 1 to {S3_KEY_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

/// Does an `If-Match`-style condition hold for this ETag?
pub(super) fn condition_matches(condition: &ETagCondition, etag_hex: &str) -> bool {
    match condition.as_etag() {
        None => condition.is_any(),
        Some(tag) => tag.value() == etag_hex,
    }
}

/// Evaluates a GET's or HEAD's conditional headers (RFC 9110 order, as S3).
pub(super) fn check_conditions(
    record: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified_secs = record.last_modified_ms / 1000;
    if let Some(cond) = if_match {
        if !condition_matches(cond, &record.etag) {
            return Err(s3_error!(PreconditionFailed, "If-Match failed"));
        }
    } else if let Some(since) = if_unmodified_since
        && modified_secs > ms_of(since) / 1000
    {
        return Err(s3_error!(
            PreconditionFailed,
            "modified since If-Unmodified-Since"
        ));
    }
    if let Some(cond) = if_none_match {
        if condition_matches(cond, &record.etag) {
            return Err(not_modified(record));
        }
    } else if let Some(since) = if_modified_since
        && modified_secs <= ms_of(since) / 1000
    {
        return Err(not_modified(record));
    }
    Ok(())
}

/// 304, with the object's ETag and Last-Modified as S3 sends them (RFC 9110 asks for both).
fn not_modified(record: &ObjectRecord) -> S3Error {
    let mut error = s3_error!(NotModified);
    let mut headers = hyper::HeaderMap::new();
    if let Ok(tag) = hyper::header::HeaderValue::from_str(&format!("\"{}\"", record.etag)) {
        headers.insert(hyper::header::ETAG, tag);
    }
    let mut date = Vec::new();
    if timestamp(record.last_modified_ms)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
        && let Ok(date) = hyper::header::HeaderValue::from_bytes(&date)
    {
        headers.insert(hyper::header::LAST_MODIFIED, date);
    }
    error.set_headers(headers);
    error
}

/// How many parts a multipart object was completed from (its ETag's `-N`); `None` for an object
/// a PutObject or CopyObject of one wrote.
pub(super) fn parts_count(record: &ObjectRecord) -> Option<u32> {
    let (_, count) = record.etag.rsplit_once('-')?;
    count.parse().ok()
}

/// Where part `number` of an object lies: its offset and length. A multipart object's parts
/// are its `part_lens`; any other object is its one part.
/// `InvalidPartNumber` (416) past the last part, as S3.
pub(super) fn part_span(record: &ObjectRecord, number: i32) -> S3Result<(u64, u64)> {
    let count = parts_count(record).unwrap_or(1);
    if number < 1 || number as u64 > u64::from(count) {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            format!("The requested partnumber is not satisfiable: the object has {count} parts"),
        );
        e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(e);
    }
    if parts_count(record).is_none() {
        return Ok((0, record.size));
    }
    let index = number as usize - 1;
    let lens = record.part_lens();
    match lens.get(index) {
        Some(len) => Ok((lens[..index].iter().sum(), *len)),
        // Without `part_sizes` an empty part keeps no blob; only the last part can be empty.
        None if index == lens.len() && number as u32 == count => Ok((record.size, 0)),
        None => Err(s3_error!(
            InternalError,
            "the object's record names {} parts' sizes for {count} parts",
            lens.len()
        )),
    }
}

/// The pieces of an object's blobs covering `range` (offset, length) of the object.
pub(super) fn segments(blobs: &[BlobRef], offset: u64, len: u64) -> Vec<(Hash, ByteRange, u64)> {
    let mut out = Vec::new();
    let (mut start, end) = (offset, offset + len);
    let mut base = 0u64;
    for blob in blobs {
        let blob_end = base + blob.len;
        if start < blob_end && start < end {
            let from = start - base;
            let to = end.min(blob_end) - base;
            out.push((
                Hash::from_bytes(blob.hash),
                ByteRange {
                    offset: from,
                    len: to - from,
                },
                blob.len,
            ));
            start = base + to;
        }
        base = blob_end;
    }
    out
}

/// The bucket and key a copy reads from.
pub(super) fn copy_source_key(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "only bucket/key copy sources")),
    }
}

/// Percent-encodes all but unreserved characters and `/`, as S3 does for `encoding-type=url`.
pub(super) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` percent-encoded if the client asked for `encoding-type=url`.
pub(super) fn encoded(text: Option<String>, encoding: Option<&EncodingType>) -> Option<String> {
    match encoding {
        Some(e) if e.as_str() == EncodingType::URL => text.as_deref().map(url_encode),
        _ => text,
    }
}

pub(super) fn max_keys(requested: Option<i32>) -> usize {
    requested
        .map(|m| m.max(0) as usize)
        .unwrap_or(S3_LIST_KEYS_MAX)
        .min(S3_LIST_KEYS_MAX)
}

/// Continuation tokens are the hex of the last key or prefix a page returned.
pub(super) fn encode_token(marker: &str) -> String {
    records::hex(marker.as_bytes())
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes
        .filter(|_| token.len().is_multiple_of(2))
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))
}

/// What a request claims of its body: its length, `Content-MD5`, and the checksums to
/// compute: each `x-amz-checksum-*` header (with its value), each one announced as a trailer
/// (`x-amz-trailer`), and the algorithm named by `x-amz-checksum-algorithm` (computed and
/// stored even when no value is sent, as S3 does).
pub(super) fn claimed_of(
    content_length: Option<i64>,
    content_md5: Option<String>,
    sums: [Option<String>; 5],
    algorithm: Option<&s3s::dto::ChecksumAlgorithm>,
    headers: &hyper::HeaderMap,
) -> S3Result<Claimed> {
    let [crc32, crc32c, sha1, sha256, crc64nvme] = sums;
    let announced: Vec<String> = headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let named = algorithm
        .map(|a| records::ChecksumAlgorithm::parse(a.as_str()))
        .transpose()?;
    let mut checksums = Vec::new();
    for (algorithm, value) in [
        (records::ChecksumAlgorithm::Crc32, crc32),
        (records::ChecksumAlgorithm::Crc32c, crc32c),
        (records::ChecksumAlgorithm::Crc64nvme, crc64nvme),
        (records::ChecksumAlgorithm::Sha1, sha1),
        (records::ChecksumAlgorithm::Sha256, sha256),
    ] {
        let trailer = announced.contains(&algorithm.header());
        if value.is_some() || trailer || named == Some(algorithm) {
            checksums.push(ClaimedChecksum {
                algorithm,
                value,
                trailer,
            });
        }
    }
    Ok(Claimed {
        content_length,
        content_md5,
        checksums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: u64) -> BlobRef {
        BlobRef { hash: [n; 32], len }
    }

    #[test]
    fn a_range_over_part_boundaries_reads_each_part_in_turn() {
        let blobs = [blob(1, 10), blob(2, 10), blob(3, 5)];
        let got: Vec<(u8, u64, u64)> = segments(&blobs, 8, 14)
            .into_iter()
            .map(|(h, r, _)| (h.as_bytes()[0], r.offset, r.len))
            .collect();
        assert_eq!(got, vec![(1, 8, 2), (2, 0, 10), (3, 0, 2)]);
        let whole: u64 = segments(&blobs, 0, 25).iter().map(|(_, r, _)| r.len).sum();
        assert_eq!(whole, 25);
        assert!(segments(&blobs, 0, 0).is_empty());
    }

    #[test]
    fn a_part_is_read_where_its_blob_lies() {
        let mut multipart = record("abc-3", 0);
        multipart.blobs = vec![blob(1, 10), blob(2, 10), blob(3, 4)];
        multipart.size = 24;
        assert_eq!(parts_count(&multipart), Some(3));
        assert_eq!(part_span(&multipart, 1).unwrap(), (0, 10));
        assert_eq!(part_span(&multipart, 3).unwrap(), (20, 4));
        for past in [0, 4, -1] {
            let e = part_span(&multipart, past).unwrap_err();
            assert_eq!(e.code().as_str(), "InvalidPartNumber");
            assert_eq!(
                e.status_code(),
                Some(hyper::StatusCode::RANGE_NOT_SATISFIABLE)
            );
        }
        // An empty last part keeps no blob.
        multipart.blobs.pop();
        multipart.size = 20;
        assert_eq!(part_span(&multipart, 3).unwrap(), (20, 0));
        // An object of one PutObject is its one part.
        let mut single = record("0123456789abcdef0123456789abcdef", 0);
        single.size = 7;
        assert_eq!(parts_count(&single), None);
        assert_eq!(part_span(&single, 1).unwrap(), (0, 7));
        assert!(part_span(&single, 2).is_err());
    }

    #[test]
    fn content_md5_must_be_the_base64_of_16_bytes() {
        // MD5 of the empty string.
        assert!(check_content_md5(Some("1B2M2Y8AsgTpgAmY7PhCfg==")).is_ok());
        assert!(check_content_md5(None).is_ok());
        for bad in [
            "",
            "   ",
            "1B2M2Y8AsgTpgAmY7PhCfg",
            "1B2M2Y8AsgTpgAmY7PhCf!==",
            "1B2M2Y8AsgTpgAmY7PhCfh==",
            "d41d8cd98f00b204e9800998ecf8427e",
        ] {
            let e = check_content_md5(Some(bad)).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidDigest, "{bad:?}");
        }
    }

    #[test]
    fn a_copy_source_range_is_first_to_last_within_the_source() {
        assert_eq!(copy_source_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert_eq!(copy_source_range("bytes=5-5", 10).unwrap(), (5, 1));
        for bad in ["bytes=0-10", "bytes=10-20"] {
            let e = copy_source_range(bad, 10).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message().unwrap().contains("size: 10"), "{bad}");
        }
        for bad in [
            "0-9",
            "bytes=5-",
            "bytes=-5",
            "bytes=9-5",
            "bytes=a-b",
            "bytes=0-1,2-3",
        ] {
            let e = copy_source_range(bad, 10).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message().unwrap().contains("bytes=first-last"), "{bad}");
        }
    }

    #[test]
    fn continuation_tokens_round_trip_and_refuse_garbage() {
        let token = encode_token("a/b c");
        assert_eq!(decode_token(&token).unwrap(), "a/b c");
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }

    fn record(etag: &str, last_modified_ms: u64) -> ObjectRecord {
        ObjectRecord {
            size: 1,
            etag: etag.into(),
            headers: Default::default(),
            user_metadata: Vec::new(),
            last_modified_ms,
            blobs: Vec::new(),
            tags: Vec::new(),
            checksum: None,
            part_checksums: Vec::new(),
            upload_id: None,
            part_sizes: Vec::new(),
            inline: Vec::new(),
        }
    }

    #[test]
    fn conditional_headers_follow_s3() {
        let r = record("abc", 10_000);
        let tag = |t: &str| ETagCondition::ETag(ETag::Strong(t.into()));
        assert!(check_conditions(&r, Some(&tag("abc")), None, None, None).is_ok());
        let failed = check_conditions(&r, Some(&tag("x")), None, None, None).unwrap_err();
        assert_eq!(*failed.code(), S3ErrorCode::PreconditionFailed);
        let unchanged = check_conditions(&r, None, Some(&tag("abc")), None, None).unwrap_err();
        assert_eq!(*unchanged.code(), S3ErrorCode::NotModified);
        let headers = unchanged.headers().expect("a 304 carries headers");
        assert_eq!(headers[hyper::header::ETAG], "\"abc\"");
        assert_eq!(
            headers[hyper::header::LAST_MODIFIED],
            "Thu, 01 Jan 1970 00:00:10 GMT"
        );
        let later = timestamp(20_000);
        let earlier = timestamp(5_000);
        assert_eq!(
            *check_conditions(&r, None, None, Some(&later), None)
                .unwrap_err()
                .code(),
            S3ErrorCode::NotModified
        );
        assert!(check_conditions(&r, None, None, Some(&earlier), None).is_ok());
        assert_eq!(
            *check_conditions(&r, None, None, None, Some(&earlier))
                .unwrap_err()
                .code(),
            S3ErrorCode::PreconditionFailed
        );
    }
}
