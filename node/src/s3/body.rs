//! Taking in an S3 request body: cutting it into chunks as it arrives and storing each chunk
//! as a blob of its own (placed by its own hash, so on its own replica set) while the next one
//! arrives, hashing it on the way (MD5 for its ETag, and any checksum the client announced),
//! and checking it against what the client claimed.
//!
//! Memory per body is bounded by `S3_CHUNK_BYTES` times one more than
//! `S3_CHUNKS_IN_FLIGHT_MAX`, whatever its size; nothing is spooled. A body refused part-way
//! (cut off, too long, not matching its digest) may leave chunks stored: each is marked for
//! the collector as it is stored, and since no record names it, it is collected like any
//! unreferenced blob.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use md5::Digest as _;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3Result, s3_error};
use tokio::task::JoinHandle;

use super::checksums;
use super::records::{BlobRef, Checksum, ChecksumAlgorithm, ChecksumKind};
use crate::limits::{
    S3_CHUNK_BUFFERS_SPARE_MAX, S3_CHUNK_BYTES, S3_CHUNKS_IN_FLIGHT_MAX,
    S3_REFUSED_BODY_DRAIN_BYTES_MAX, S3_REFUSED_BODY_DRAIN_MS,
};

pub struct Received {
    pub len: u64,
    /// Hex MD5.
    pub md5_hex: String,
    /// The checksums the request asked for, computed, each matching what it claimed.
    pub checksums: Vec<Checksum>,
    /// The body's chunks, in order, each stored (none for an empty body or one kept inline).
    pub blobs: Vec<BlobRef>,
    /// The body, when it is to be stored inside its record (not stored as a blob).
    pub inline: Vec<u8>,
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

/// Where a body's chunks go (`S3Front`'s `ChunkSink`: the cluster, each chunk marked for the
/// collector).
pub trait ChunkStore: Clone + Send + Sync + 'static {
    /// Stores one chunk; the write quorum holds it durably when this returns `Ok`.
    fn store(&self, bytes: Bytes) -> impl Future<Output = S3Result<BlobRef>> + Send;

    /// An empty buffer for the next chunk, of at least `capacity` bytes.
    fn buffer(&self, capacity: usize) -> BytesMut;
}

/// Buffers of chunks whose store is done, kept for the next chunks (at most
/// `S3_CHUNK_BUFFERS_SPARE_MAX`, each of `S3_CHUNK_BYTES`), so that a large body reuses the
/// same few buffers instead of fresh memory for each chunk.
#[derive(Debug, Default)]
pub struct ChunkBuffers {
    spare: parking_lot::Mutex<Vec<BytesMut>>,
}

impl ChunkBuffers {
    /// An empty buffer of at least `capacity` bytes: a spare one for a chunk of more than a
    /// small share of `S3_CHUNK_BYTES`.
    pub fn take(&self, capacity: usize) -> BytesMut {
        if capacity as u64 > S3_CHUNK_BYTES / 8
            && let Some(buffer) = self.spare.lock().pop()
        {
            return buffer;
        }
        BytesMut::with_capacity(capacity)
    }

    /// Keeps a stored chunk's buffer if nothing else holds it, it is a whole chunk's, and
    /// there is room.
    pub fn give(&self, bytes: Bytes) {
        let Ok(mut buffer) = bytes.try_into_mut() else {
            return;
        };
        if buffer.capacity() as u64 != S3_CHUNK_BYTES {
            return;
        }
        let mut spare = self.spare.lock();
        if spare.len() < S3_CHUNK_BUFFERS_SPARE_MAX {
            buffer.clear();
            spare.push(buffer);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    fn spare_count(&self) -> usize {
        self.spare.lock().len()
    }
}

/// The chunks of one body on their way to the cluster, oldest first. A chunk's store runs as
/// a task of its own, so chunks go to their replica sets side by side; at most
/// `S3_CHUNKS_IN_FLIGHT_MAX` at a time. Dropping this (the request went away) lets the stores
/// under way finish; each marked its chunk first, so the collector finds it.
struct ChunkStores<S> {
    sink: S,
    in_flight: VecDeque<JoinHandle<S3Result<BlobRef>>>,
    stored: Vec<BlobRef>,
}

impl<S: ChunkStore> ChunkStores<S> {
    /// Starts storing `bytes`, first waiting for the oldest store if as many are under way as
    /// may be.
    async fn push(&mut self, bytes: Bytes) -> S3Result<()> {
        if self.in_flight.len() >= S3_CHUNKS_IN_FLIGHT_MAX {
            self.finish_oldest().await?;
        }
        let sink = self.sink.clone();
        let store = async move { sink.store(bytes).await };
        self.in_flight.push_back(crate::task::spawn(store));
        Ok(())
    }

    async fn finish_oldest(&mut self) -> S3Result<()> {
        if let Some(handle) = self.in_flight.pop_front() {
            let blob = handle
                .await
                .map_err(|e| s3_error!(InternalError, "a chunk's store failed: {e}"))??;
            self.stored.push(blob);
        }
        Ok(())
    }

    /// Stores the last chunk (if any) and waits for every store; the chunks in order. A body
    /// of one chunk is stored without a task of its own.
    async fn finish(mut self, last: Bytes) -> S3Result<Vec<BlobRef>> {
        if self.in_flight.is_empty() && self.stored.is_empty() {
            if last.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![self.sink.store(last).await?]);
        }
        if !last.is_empty() {
            self.push(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(std::mem::take(&mut self.stored))
    }
}

/// Reads a body to its end, storing it chunk by chunk; refuses one over `max` bytes, cut
/// short, or not matching what was claimed for it (what was stored of it stays unreferenced).
/// A body of at most `inline_max` bytes (and at least one) is not stored but returned, for its
/// record to hold.
pub async fn receive(
    body: Option<StreamingBlob>,
    claimed: &Claimed,
    trailers: Option<&s3s::TrailingHeaders>,
    (max, inline_max): (u64, u64),
    sink: impl ChunkStore,
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
    let mut md5 = md5::Md5::new();
    let mut checks = checksums::hasher(claimed.checksums.iter().map(|c| c.algorithm));
    let mut stores = ChunkStores {
        sink,
        in_flight: VecDeque::new(),
        stored: Vec::new(),
    };
    // A chunk's buffer is as long as what is still to come, when the length was announced.
    let chunk_capacity = |taken: u64| match claimed.content_length {
        Some(total) => (total.max(0) as u64)
            .saturating_sub(taken)
            .min(S3_CHUNK_BYTES) as usize,
        None => S3_CHUNK_BYTES as usize,
    };
    let mut chunk = stores.sink.buffer(chunk_capacity(0));
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
            md5.update(&data);
            checks.update(&data);
            let mut rest = &data[..];
            while !rest.is_empty() {
                // A full chunk goes once a byte after it arrived: the last chunk waits for
                // the checks below, so a body of one chunk that fails them stores nothing.
                if chunk.len() as u64 == S3_CHUNK_BYTES {
                    let taken = len - rest.len() as u64;
                    let full = std::mem::take(&mut chunk);
                    stores.push(full.freeze()).await?;
                    // Taken once the oldest store is done, so that its buffer is the one reused.
                    chunk = stores.sink.buffer(chunk_capacity(taken));
                }
                let take = rest.len().min(S3_CHUNK_BYTES as usize - chunk.len());
                chunk.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
    }
    if let Some(expected) = claimed.content_length
        && expected as u64 != len
    {
        return Err(s3_error!(
            IncompleteBody,
            "Content-Length said {expected} bytes, {len} arrived; no object was written"
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
    let (blobs, inline) = match len > 0 && len <= inline_max {
        true => (Vec::new(), chunk.to_vec()),
        false => (stores.finish(chunk.freeze()).await?, Vec::new()),
    };
    Ok(Received {
        len,
        md5_hex: super::records::hex(&md5),
        checksums: checksums_computed,
        blobs,
        inline,
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
            "a chunk's signature does not match its bytes; no object was written"
        );
    }
    s3_error!(
        IncompleteBody,
        "the body ended early after {len} bytes ({text}); no object was written"
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
    use bytes::Bytes;

    use super::ChunkBuffers;
    use crate::limits::{S3_CHUNK_BUFFERS_SPARE_MAX, S3_CHUNK_BYTES};

    const CHUNK: usize = S3_CHUNK_BYTES as usize;

    #[test]
    fn chunk_buffers_are_reused_only_when_whole_and_unshared_and_at_most_so_many_kept() {
        let buffers = ChunkBuffers::default();
        let mut first = buffers.take(CHUNK);
        first.extend_from_slice(&[7u8; 1000]);
        let address = first.as_ptr();
        buffers.give(first.freeze());
        assert_eq!(buffers.spare_count(), 1);
        // The next chunk gets the same memory back, empty.
        let again = buffers.take(CHUNK);
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
        assert!(again.capacity() >= CHUNK);
        // A chunk still held elsewhere (a store under way) is not taken back.
        let shared = again.freeze();
        let held = shared.clone();
        buffers.give(shared);
        assert_eq!(buffers.spare_count(), 0);
        drop(held);
        // Nor is a buffer allocated for a short last chunk or a small body; and a small one
        // is not handed a spare.
        buffers.give(Bytes::from(vec![1u8; 4096]));
        assert_eq!(buffers.spare_count(), 0);
        let kept: Vec<_> = (0..S3_CHUNK_BUFFERS_SPARE_MAX + 2)
            .map(|_| buffers.take(CHUNK))
            .collect();
        for b in kept {
            buffers.give(b.freeze());
        }
        assert_eq!(buffers.spare_count(), S3_CHUNK_BUFFERS_SPARE_MAX);
        assert!(buffers.take(64 * 1024).capacity() < CHUNK);
        assert_eq!(buffers.spare_count(), S3_CHUNK_BUFFERS_SPARE_MAX);
    }

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
