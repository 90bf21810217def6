//! Request bodies on QUIC streams: read piece by piece, exactly as long as announced, never
//! stalling longer than `BODY_STALL_TIMEOUT_MS`; and a replica's receipt of a body into the
//! engine, checked against the hash it was sent under.

use std::time::Duration;

use bytes::Bytes;
use cairn_core::wire::ErrorCode;
use cairn_engine::{BlobWriter, Hash};

use crate::limits::{BODY_CHUNK_BYTES_MAX, BODY_STALL_TIMEOUT_MS};
use crate::replica::{self, LocalError};
use crate::state::State;

/// Why a body is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("body stalled for {BODY_STALL_TIMEOUT_MS} ms after {received} of {len} bytes")]
    Stalled { received: u64, len: u64 },
    #[error("body failed after {received} of {len} bytes: {source}")]
    Failed {
        received: u64,
        len: u64,
        source: quinn::ReadError,
    },
    #[error("body ended after {received} of {len} bytes")]
    Ended { received: u64, len: u64 },
    #[error("body longer than the {len} bytes announced")]
    TooLong { len: u64 },
}

impl BodyError {
    /// The wire's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::TooLong { .. } => ErrorCode::BadRequest,
            _ => ErrorCode::Truncated,
        }
    }
}

/// Reads a body of exactly `len` bytes piece by piece.
pub(super) struct BodyReader<'a> {
    recv: &'a mut quinn::RecvStream,
    len: u64,
    received: u64,
}

impl BodyReader<'_> {
    pub(super) fn new(recv: &mut quinn::RecvStream, len: u64) -> BodyReader<'_> {
        BodyReader {
            recv,
            len,
            received: 0,
        }
    }

    /// The next piece, or `None` once all `len` bytes have arrived.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        let (received, len) = (self.received, self.len);
        if received == len {
            return Ok(None);
        }
        let piece = tokio::time::timeout(
            Duration::from_millis(BODY_STALL_TIMEOUT_MS),
            self.recv.read_chunk(BODY_CHUNK_BYTES_MAX, true),
        )
        .await;
        let chunk = match piece {
            Err(_) => return Err(BodyError::Stalled { received, len }),
            Ok(Err(source)) => {
                return Err(BodyError::Failed {
                    received,
                    len,
                    source,
                });
            }
            Ok(Ok(None)) => return Err(BodyError::Ended { received, len }),
            Ok(Ok(Some(chunk))) => chunk.bytes,
        };
        self.received += chunk.len() as u64;
        if self.received > len {
            return Err(BodyError::TooLong { len });
        }
        debug_assert!(self.received <= self.len);
        Ok(Some(chunk))
    }
}

/// Why a replica could not take a body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl ReceiveError {
    /// The wire's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReceiveError::Body(e) => e.code(),
            ReceiveError::Local(e) => e.code(),
        }
    }
}

/// Receives a body of `len` bytes into a writer and checks its hash. A write that fails (a
/// full disk) still reads the body to its end, so the sender is answered, not reset.
pub(super) async fn receive(
    state: &State,
    hash: Hash,
    len: u64,
    recv: &mut quinn::RecvStream,
) -> Result<BlobWriter, ReceiveError> {
    let (mut writer, mut write_error) =
        match crate::replica::open_writer(&state.store, hash, len).await {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
    let mut body = BodyReader::new(recv, len);
    while let Some(chunk) = body.next().await? {
        if let Some(w) = &mut writer
            && let Err(e) = w.write(&chunk)
        {
            write_error = Some(e);
            writer = None;
        }
    }
    let Some(writer) = writer else {
        let e = LocalError::Engine(write_error.expect("a failed writer has an error"));
        replica::note_if_full(state, &e);
        return Err(e.into());
    };
    let actual = writer.hash();
    if actual != hash {
        return Err(LocalError::HashMismatch {
            expected: hash,
            actual,
        }
        .into());
    }
    Ok(writer)
}
