//! Taking in an S3 request body: hashing it (BLAKE3 for its name, MD5 for its ETag, and any
//! checksum the client announced), holding it in memory or in a spool file, and checking it
//! against what the client claimed, all before anything reaches the cluster.

use std::path::Path;

use cairn_engine::Hash;
use md5::Digest as _;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::checksums;
use super::records::{Checksum, ChecksumAlgorithm, ChecksumKind};
use crate::front::spool::{Held, Spool};
use crate::limits::{
    S3_BODY_IN_MEMORY_BYTES_MAX, S3_REFUSED_BODY_DRAIN_BYTES_MAX, S3_REFUSED_BODY_DRAIN_MS,
};

pub struct Received {
    pub hash: Hash,
    pub len: u64,
    /// Hex MD5.
    pub md5_hex: String,
    /// The checksums the request asked for, computed, each matching what it claimed.
    pub checksums: Vec<Checksum>,
    pub held: Held,
}

impl Received {
    /// The checksum of this algorithm, or with none named the first computed.
    pub fn checksum(&self, algorithm: Option<ChecksumAlgorithm>) -> Option<&Checksum> {
        match algorithm {
            Some(a) => self.checksums.iter().find(|c| c.algorithm == a),
            None => self.checksums.first(),
        }
    }
}

/// What a request claims of its body (`rules::claimed_of`).
#[derive(Default)]
pub struct Claimed {
    pub content_length: Option<i64>,
    /// Base64 MD5 from `Content-MD5`.
    pub content_md5: Option<String>,
    /// The checksums to compute, in `checksums::ALGORITHMS` order.
    pub checksums: Vec<ClaimedChecksum>,
}

pub struct ClaimedChecksum {
    pub algorithm: ChecksumAlgorithm,
    /// Base64, from its header.
    pub value: Option<String>,
    /// Its value follows the body in a trailer.
    pub trailer: bool,
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
    let mut checks = checksums::hasher(claimed.checksums.iter().map(|c| c.algorithm));
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
        let ours = base64_encode(&md5);
        if claimed_md5.trim() != ours {
            return Err(s3_error!(
                BadDigest,
                "Content-MD5 {claimed_md5} does not match the body's {ours}"
            ));
        }
    }
    let sums = checks.finalize();
    let mut checksums_computed = Vec::new();
    for c in &claimed.checksums {
        let header = c.algorithm.header();
        let from_trailer = c
            .trailer
            .then(|| {
                trailers.and_then(|t| {
                    t.read(|h| {
                        h.get(&header)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    })
                })
            })
            .flatten()
            .flatten();
        let computed = checksums::value_of(&sums, c.algorithm);
        if let Some(said) = c.value.as_ref().or(from_trailer.as_ref())
            && Some(said) != computed
        {
            return Err(s3_error!(
                BadDigest,
                "{header} {said} does not match the body's {}",
                computed.map_or("-", String::as_str)
            ));
        }
        if let Some(value) = computed {
            checksums_computed.push(Checksum {
                algorithm: c.algorithm,
                kind: ChecksumKind::FullObject,
                value: value.clone(),
            });
        }
    }
    let held = spool.finish().await.map_err(spool_error)?;
    Ok(Received {
        hash: Hash::from(hasher.finalize()),
        len,
        md5_hex: super::records::hex(&md5),
        checksums: checksums_computed,
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

/// Standard base64 with padding, as `Content-MD5` and `x-amz-checksum-*` carry digests.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// Reads and drops the body of a request refused before its body was read, so that the
/// client, still sending, reads the error rather than a connection closed under it. At most
/// `S3_REFUSED_BODY_DRAIN_BYTES_MAX` bytes and `S3_REFUSED_BODY_DRAIN_MS`; past either the
/// connection is closed, as it would have been.
pub async fn drain(body: Option<StreamingBlob>) {
    use futures_core::Stream;
    let Some(mut body) = body else {
        return;
    };
    let read_all = async {
        let mut len = 0u64;
        while len <= S3_REFUSED_BODY_DRAIN_BYTES_MAX {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_next(cx)).await;
            match next {
                Some(Ok(data)) => len += data.len() as u64,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(S3_REFUSED_BODY_DRAIN_MS),
        read_all,
    )
    .await;
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
