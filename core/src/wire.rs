//! The wire protocol between clients and nodes, and between nodes: one request per QUIC
//! bidirectional stream.
//!
//! ```text
//! request stream:   [u32 LE header length][postcard Request][body: exactly `len` raw bytes, puts only]
//!                   [u32 LE length][postcard Decision]      (replica puts only, after `Prepared`)
//! response stream:  [u32 LE header length][postcard Response][body: raw bytes, gets only]
//! ```
//!
//! Headers are small and bounded (`REQUEST_HEADER_BYTES_MAX`, `RESPONSE_HEADER_BYTES_MAX`); blob
//! bytes never go through postcard, they stream raw under QUIC flow control, so memory stays
//! bounded whatever the blob size. Every error crosses the wire as an [`ErrorCode`] and a message.
//! The ALPN string names the protocol version: peers offer the current and the previous one
//! ([`ALPNS_SPOKEN`]) and speak the newest they share, so a cluster is upgraded node by node;
//! a peer sharing none is refused during the handshake.
//!
//! This module holds the messages and their encoding only; reading and writing them on QUIC
//! streams is `cairn_client::framing`.

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::limits::ERROR_MESSAGE_BYTES_MAX;

/// ALPN identifier of this protocol version.
pub const ALPN: &[u8] = b"cairn/5";

/// ALPN identifier of the previous protocol version, which nodes and clients still speak so
/// that a cluster can be upgraded one node at a time.
pub const ALPN_PREVIOUS: &[u8] = b"cairn/4";

/// The versions spoken, newest first: a client offers them in this order and a server picks
/// the first it shares with the client, so two peers of this version speak it, and a peer of
/// the previous version is answered in its own.
///
/// What `cairn/5` adds to `cairn/4`: the node protocol's `PeerMsg::Keys` and
/// `PeerReply::Keys` (key and bucket administration), appended to their enums so that every
/// other message encodes as before. A node refuses a `cairn/5` message on a `cairn/4`
/// connection, and the `cairn` command sends none to a node of `cairn/4`.
pub const ALPNS_SPOKEN: [&[u8]; 2] = [ALPN, ALPN_PREVIOUS];

/// The version number an ALPN identifier names (`cairn/5` is 5).
pub fn protocol_version(alpn: &[u8]) -> Option<u32> {
    std::str::from_utf8(alpn.strip_prefix(b"cairn/")?)
        .ok()?
        .parse()
        .ok()
}

/// QUIC application error code a stream is reset or stopped with when a request is abandoned.
pub const STREAM_ABORT_CODE: u32 = 1;

/// QUIC application error code a connection is closed with on shutdown.
pub const CONNECTION_CLOSE_CODE: u32 = 0;

/// A blob name on the wire: the 32 bytes of its BLAKE3 hash.
pub type WireHash = [u8; 32];

/// A byte range of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

/// What a node is asked to do with a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutRole {
    /// From a client: store and replicate to the blob's replicas, acknowledge at write quorum.
    Coordinate,
    /// From a coordinator: receive, verify, answer `Prepared`, then wait for the `Decision`.
    Replica,
}

/// What a node is asked to do with a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteRole {
    /// From a client: delete on the blob's replicas, acknowledge at write quorum.
    Coordinate,
    /// From a coordinator: delete the local copy only.
    Replica,
}

/// One request; the first frame of every stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The sender's layout version; a node with a newer layout answers `StaleLayout`.
    pub layout_version: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Store a blob of `len` bytes, which follow the header raw.
    Put {
        hash: WireHash,
        len: u64,
        role: PutRole,
    },
    /// Read a blob or a range of it.
    Get {
        hash: WireHash,
        range: Option<ByteRange>,
    },
    /// Does this node hold the blob, and how long is it?
    Head { hash: WireHash },
    Delete {
        hash: WireHash,
        role: DeleteRole,
        /// The tombstone's version, like a put's. From a client, 0 means "now"; any other value
        /// makes the delete stand only where the blob was last written before it.
        version: u64,
    },
    /// Node to node: store this copy (from anti-entropy or hand-off) durably with its version;
    /// `len` bytes follow.
    Store {
        hash: WireHash,
        len: u64,
        version: u64,
    },
    /// Node to node, and the `cairn` command to a node: a message of the node protocol
    /// (heartbeats, anti-entropy, status, layout changes); `len` postcard bytes follow.
    Peer { len: u32 },
    /// Send me your layout.
    FetchLayout,
    /// You hold this blob; copy it to these nodes, which were found without it (read repair).
    Repair {
        hash: WireHash,
        targets: Vec<String>,
    },
    /// A put of a blob its replicas may hold already, without its bytes: from a client, have
    /// the replicas that hold it (`len` bytes, intact) take the put's version, and answer
    /// `Stored` if a write quorum did (else `NotFound`: send the bytes with `Put`); from a
    /// coordinator (`version` set), do so here.
    Refresh {
        hash: WireHash,
        len: u64,
        role: PutRole,
        version: u64,
    },
}

/// A coordinator's second word to a replica that answered `Prepared`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Write quorum was prepared: make the blob durable and visible with `version`, the put's
    /// own raised above every tombstone the write quorum reported when it prepared. A newer
    /// tombstone here (a delete that came during the put) stands over it.
    Commit { version: u64 },
    /// Write quorum was not reached: drop the bytes.
    Abort,
}

/// One response; the first frame a node writes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Put acknowledged: durable on at least the write quorum of replicas (or, from a replica,
    /// durable here).
    Stored {
        hash: WireHash,
        /// The coordinating node held the blob before this put (a re-put of stored bytes).
        existed: bool,
    },
    /// A replica received every byte and the hash matched; it waits for the `Decision`.
    /// `tombstone_version`: the version of the tombstone of this hash it held then, 0 if none.
    Prepared {
        tombstone_version: u64,
    },
    /// A get: `len` bytes follow; `blob_len` is the whole blob's length.
    Blob {
        len: u64,
        blob_len: u64,
    },
    /// A head: the node holds the blob.
    Found {
        blob_len: u64,
    },
    Deleted {
        existed: bool,
    },
    Layout {
        layout: Layout,
        /// The layout before it, while data may still sit where it placed it: reads fall back
        /// to its replicas.
        previous: Option<Layout>,
    },
    /// The answer to `Peer`: `len` postcard bytes follow.
    Peer {
        len: u32,
    },
    /// Read repair accepted; copies are made in the background.
    RepairQueued,
    /// The node's layout is newer than the request's: adopt it and retry.
    StaleLayout {
        layout: Layout,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Why a request failed, as it crosses the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The node does not hold the blob.
    NotFound,
    /// The request could not be decoded or breaks a rule of the protocol.
    BadRequest,
    /// A header was over its size limit.
    HeaderTooLarge,
    /// The body's BLAKE3 differs from the hash claimed.
    HashMismatch,
    /// The body ended before the announced length.
    Truncated,
    /// Fewer replicas than the write quorum could store the blob; nothing was acknowledged.
    QuorumFailed,
    /// The node's store has no room.
    StoreFull,
    /// The blob is larger than a node accepts.
    BlobTooLarge,
    /// The range lies outside the blob.
    RangeOutOfBounds,
    /// The node's copy is corrupt (now quarantined); read another replica.
    Corrupted,
    /// The node's store is read-only after an IO failure.
    ReadOnly,
    /// The node is over a concurrency limit; retry later.
    Busy,
    /// A failure inside the node.
    Internal,
    /// The connection's certificate does not name the node a message claims to come from.
    Forbidden,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Response {
    /// An error response, with the message cut to `ERROR_MESSAGE_BYTES_MAX`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        let mut message = message.into();
        if message.len() > ERROR_MESSAGE_BYTES_MAX {
            let mut cut = ERROR_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Response::Error { code, message }
    }
}

/// Why a frame could not be encoded or decoded. Reading frames from a stream (and the stream's
/// own failures) is the client crate's `framing`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {bytes} bytes is over the {max_bytes}-byte limit")]
    TooLarge { bytes: usize, max_bytes: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("stream ended before a whole frame arrived")]
    Truncated,
}

/// Encodes `value` as one length-prefixed frame.
pub fn encode_frame<T: Serialize>(value: &T, max_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = frame.len() - 4;
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            bytes: len,
            max_bytes,
        });
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes a frame's payload (without its length prefix). Trailing bytes are an error.
pub fn decode_frame<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the frame",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::REQUEST_HEADER_BYTES_MAX;

    #[test]
    fn request_round_trip_and_size() {
        let req = Request {
            layout_version: 7,
            op: Op::Put {
                hash: [9; 32],
                len: 1 << 40,
                role: PutRole::Replica,
            },
        };
        let frame = encode_frame(&req, REQUEST_HEADER_BYTES_MAX).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert!(len < 64, "a put header is {len} bytes");
        let back: Request = decode_frame(&frame[4..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let req = Request {
            layout_version: 1,
            op: Op::Repair {
                hash: [0; 32],
                targets: vec!["x".repeat(100); 10],
            },
        };
        assert!(matches!(
            encode_frame(&req, 64),
            Err(FrameError::TooLarge { max_bytes: 64, .. })
        ));
        let frame = encode_frame(&req, REQUEST_HEADER_BYTES_MAX).unwrap();
        let cut: Result<Request, _> = decode_frame(&frame[4..frame.len() - 3]);
        assert!(matches!(cut, Err(FrameError::Malformed(_))));
        let mut extra = frame[4..].to_vec();
        extra.push(0);
        let long: Result<Request, _> = decode_frame(&extra);
        assert!(matches!(long, Err(FrameError::Malformed(_))));
        let garbage: Result<Request, _> = decode_frame(&[0xff; 20]);
        assert!(garbage.is_err());
    }

    #[test]
    fn error_messages_are_cut_on_a_char_boundary() {
        let Response::Error { message, .. } =
            Response::error(ErrorCode::Internal, "é".repeat(2000))
        else {
            panic!("not an error response");
        };
        assert!(message.len() <= ERROR_MESSAGE_BYTES_MAX);
        assert!(message.chars().all(|c| c == 'é'));
    }
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn the_versions_spoken_are_the_current_then_the_one_before() {
        let versions: Vec<u32> = ALPNS_SPOKEN
            .iter()
            .map(|a| protocol_version(a).unwrap())
            .collect();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0], versions[1] + 1);
        assert_eq!(protocol_version(ALPN), Some(versions[0]));
        assert_eq!(protocol_version(b"http/1.1"), None);
        assert_eq!(protocol_version(b"cairn/x"), None);
    }
}
