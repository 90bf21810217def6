//! Taking in an S3 request body: hashing it (BLAKE3 for its name, MD5 for its ETag, and any
//! checksum the client announced), holding it in memory or in a spool file, and checking it
//! against what the client claimed, all before anything reaches the cluster.

use std::path::Path;

use cairn_engine::Hash;
use md5::Digest as _;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use crate::front::spool::{Held, Spool};
use crate::limits::S3_BODY_IN_MEMORY_BYTES_MAX;

pub struct Received {
    pub hash: Hash,
    pub len: u64,
    /// Hex MD5.
    pub md5_hex: String,
    pub held: Held,
}

/// The checksums a request announced (headers, or trailers of an aws-chunked body).
#[derive(Default)]
pub struct Claimed {
    pub content_length: Option<i64>,
    /// Base64 MD5 from `Content-MD5`.
    pub content_md5: Option<String>,
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub crc64nvme: Option<String>,
    /// The names in `x-amz-trailer`: checksums that follow the body.
    pub trailers_announced: Vec<String>,
}

fn spool_error(e: std::io::Error) -> S3Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return s3_error!(ServiceUnavailable, "the node's spool disk is full");
    }
    S3Error::with_message(S3ErrorCode::InternalError, format!("spool: {e}"))
}

/// Reads a body to its end; refuses one over `max` bytes, cut short, or not matching what was
/// claimed for it.
pub async fn receive(
    body: Option<StreamingBlob>,
    claimed: &Claimed,
    trailers: Option<&s3s::TrailingHeaders>,
    max: u64,
    spool_dir: &Path,
) -> S3Result<Received> {
    use futures_core::Stream;
    if let Some(len) = claimed.content_length
        && len as u64 > max
    {
        return Err(s3_error!(
            EntityTooLarge,
            "{len} bytes is over this node's limit of {max}"
        ));
    }
    let mut hasher = blake3::Hasher::new();
    let mut md5 = md5::Md5::new();
    let mut checks = s3s::checksum::ChecksumHasher::default();
    if claimed.crc32.is_some() || trailer_named(claimed, "x-amz-checksum-crc32") {
        checks.crc32 = Some(Default::default());
    }
    if claimed.crc32c.is_some() || trailer_named(claimed, "x-amz-checksum-crc32c") {
        checks.crc32c = Some(Default::default());
    }
    if claimed.sha1.is_some() || trailer_named(claimed, "x-amz-checksum-sha1") {
        checks.sha1 = Some(Default::default());
    }
    if claimed.sha256.is_some() || trailer_named(claimed, "x-amz-checksum-sha256") {
        checks.sha256 = Some(Default::default());
    }
    if claimed.crc64nvme.is_some() || trailer_named(claimed, "x-amz-checksum-crc64nvme") {
        checks.crc64nvme = Some(Default::default());
    }
    let mut spool = Spool::new(spool_dir.to_path_buf(), S3_BODY_IN_MEMORY_BYTES_MAX);
    let mut len = 0u64;
    if let Some(mut body) = body {
        loop {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_next(cx)).await;
            let data = match next {
                None => break,
                Some(Ok(data)) => data,
                Some(Err(e)) => return Err(body_error(len, &*e)),
            };
            len += data.len() as u64;
            if len > max {
                return Err(s3_error!(
                    EntityTooLarge,
                    "over this node's limit of {max} bytes"
                ));
            }
            hasher.update(&data);
            md5.update(&data);
            checks.update(&data);
            spool.push(&data).await.map_err(spool_error)?;
        }
    }
    if let Some(expected) = claimed.content_length
        && expected as u64 != len
    {
        return Err(s3_error!(
            IncompleteBody,
            "Content-Length said {expected} bytes, {len} arrived; nothing was stored"
        ));
    }
    let md5 = md5.finalize();
    if let Some(claimed_md5) = &claimed.content_md5 {
        let ours = base64_md5(&md5);
        if claimed_md5.trim() != ours {
            return Err(s3_error!(
                BadDigest,
                "Content-MD5 {claimed_md5} does not match the body's {ours}"
            ));
        }
    }
    let sums = checks.finalize();
    let pairs = [
        ("crc32", &claimed.crc32, &sums.checksum_crc32),
        ("crc32c", &claimed.crc32c, &sums.checksum_crc32c),
        ("sha1", &claimed.sha1, &sums.checksum_sha1),
        ("sha256", &claimed.sha256, &sums.checksum_sha256),
        ("crc64nvme", &claimed.crc64nvme, &sums.checksum_crc64nvme),
    ];
    for (name, claimed, computed) in pairs {
        let header = format!("x-amz-checksum-{name}");
        let from_trailer = trailers
            .and_then(|t| {
                t.read(|h| {
                    h.get(&header)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
            })
            .flatten();
        let Some(claimed) = claimed.clone().or(from_trailer) else {
            continue;
        };
        if Some(&claimed) != computed.as_ref() {
            return Err(s3_error!(
                BadDigest,
                "{header} {claimed} does not match the body's {}",
                computed.as_deref().unwrap_or("-")
            ));
        }
    }
    let held = spool.finish().await.map_err(spool_error)?;
    Ok(Received {
        hash: Hash::from(hasher.finalize()),
        len,
        md5_hex: super::records::hex(&md5),
        held,
    })
}

/// What a body that failed part-way is answered with. s3s reports a chunk whose signature
/// does not verify through the body stream, with an error type it does not export, so its
/// message is what tells it apart from a body cut short.
fn body_error(len: u64, e: &(dyn std::error::Error + Send + Sync)) -> S3Error {
    let text = e.to_string();
    if text.contains("SignatureMismatch") {
        return s3_error!(
            SignatureDoesNotMatch,
            "a chunk's signature does not match its bytes; nothing was stored"
        );
    }
    s3_error!(
        IncompleteBody,
        "the body ended early after {len} bytes ({text}); nothing was stored"
    )
}

/// Does the request announce a trailer of this name (`x-amz-trailer`)? Trailers arrive after
/// the body, so the hasher must be on from the start.
fn trailer_named(claimed: &Claimed, name: &str) -> bool {
    claimed
        .trailers_announced
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

fn base64_md5(md5: &[u8]) -> String {
    base64_encode(md5)
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(super::base64_encode(b""), "");
        assert_eq!(super::base64_encode(b"f"), "Zg==");
        assert_eq!(super::base64_encode(b"fo"), "Zm8=");
        assert_eq!(super::base64_encode(b"foo"), "Zm9v");
        assert_eq!(super::base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(super::base64_encode(&[0xfb, 0xff]), "+/8=");
    }
}
