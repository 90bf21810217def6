//! Frames on QUIC streams: reads and writes the length-prefixed postcard frames of
//! [`cairn_core::wire`], and turns the streams' own failures into typed errors.

use cairn_core::wire::{FrameError, decode_frame, encode_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a frame could not be read from or written to a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The frame itself is bad (over its limit, malformed, cut short).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream was reset or stopped.
    #[error("stream failed: {0}")]
    Stream(String),
    /// The connection under the stream failed.
    #[error("connection failed: {0}")]
    Connection(quinn::ConnectionError),
}

/// Reads one frame from a QUIC stream, refusing frames over `max_bytes` before reading them.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_bytes: usize,
) -> Result<T, FramingError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(read_exact_error)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            bytes: len,
            max_bytes,
        }
        .into());
    }
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(read_exact_error)?;
    Ok(decode_frame(&payload)?)
}

/// Writes one frame to a QUIC stream.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    max_bytes: usize,
) -> Result<(), FramingError> {
    let frame = encode_frame(value, max_bytes)?;
    send.write_all(&frame).await.map_err(write_error)
}

/// Turns a stream write failure into a `FramingError`, keeping connection failures typed.
pub fn write_error(e: quinn::WriteError) -> FramingError {
    match e {
        quinn::WriteError::ConnectionLost(c) => FramingError::Connection(c),
        other => FramingError::Stream(other.to_string()),
    }
}

/// Turns a stream read failure into a `FramingError`, keeping connection failures typed.
pub fn read_error(e: quinn::ReadError) -> FramingError {
    match e {
        quinn::ReadError::ConnectionLost(c) => FramingError::Connection(c),
        other => FramingError::Stream(other.to_string()),
    }
}

fn read_exact_error(e: quinn::ReadExactError) -> FramingError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated.into(),
        quinn::ReadExactError::ReadError(e) => read_error(e),
    }
}
