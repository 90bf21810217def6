//! The QUIC server: every request arrives on its own bidirectional stream and is handled by
//! its own task. [`accept`] takes connections and streams within the node's limits and
//! dispatches each request by its `Op`; [`blobs`] answers a replica's requests (get, head, a
//! replica's put and commit, a copy, a delete, a repair); [`coordinator`] drives
//! `cairn_core::coordinator` for a client's put or delete; [`peer`] answers the node protocol.
//!
//! Architecture invariant: nothing imports this module but the composition root
//! (`crate::node`); everything it needs lives below it.

mod accept;
mod blobs;
mod body;
mod coordinator;
mod identity;
mod peer;

pub(crate) use accept::accept_loop;

use cairn_client::framing;
use cairn_core::limits::RESPONSE_HEADER_BYTES_MAX;
use cairn_core::wire::{ErrorCode, Response};

/// Writes a response header and finishes the stream.
async fn respond(send: &mut quinn::SendStream, response: &Response) {
    if let Err(e) = framing::write_frame(send, response, RESPONSE_HEADER_BYTES_MAX).await {
        tracing::debug!(error = %e, "cannot send response");
    }
    let _ = send.finish();
}

/// Answers with an error and finishes the stream.
async fn fail(send: &mut quinn::SendStream, code: ErrorCode, message: impl Into<String>) {
    respond(send, &Response::error(code, message)).await;
}
