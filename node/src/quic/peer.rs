//! The node protocol's dispatcher: reads one [`PeerMsg`], hands it to the part of the node
//! that answers its kind (healing, metadata, layouts, status, the collector, keys and buckets), and sends the
//! [`PeerReply`] back. Only this file matches on `PeerMsg`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_client::framing;
use cairn_core::limits::{PEER_MESSAGE_BYTES_MAX, RESPONSE_HEADER_BYTES_MAX};
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_core::wire::{self, ErrorCode, Response};

use super::fail;
use super::identity::PeerIdentity;
use crate::limits::BODY_STALL_TIMEOUT_MS;
use crate::state::State;
use crate::{healing, meta};

/// A node-protocol message: read it, answer it.
pub(super) async fn request(
    state: &Arc<State>,
    identity: &PeerIdentity,
    len: u32,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let len = len as usize;
    if len > PEER_MESSAGE_BYTES_MAX {
        let _ = recv.stop(wire::STREAM_ABORT_CODE.into());
        let message = format!("message over the {PEER_MESSAGE_BYTES_MAX}-byte limit");
        return fail(&mut send, ErrorCode::HeaderTooLarge, message).await;
    }
    let mut buf = vec![0u8; len];
    let read = tokio::time::timeout(
        Duration::from_millis(BODY_STALL_TIMEOUT_MS),
        recv.read_exact(&mut buf),
    )
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return fail(&mut send, ErrorCode::Truncated, "node message cut short").await;
    }
    let msg: PeerMsg = match wire::decode_frame(&buf) {
        Ok(msg) => msg,
        Err(e) => return fail(&mut send, ErrorCode::BadRequest, e.to_string()).await,
    };
    if msg.since_protocol() > identity.protocol {
        let message = format!(
            "this message needs protocol cairn/{}; this connection speaks cairn/{}",
            msg.since_protocol(),
            identity.protocol
        );
        return fail(&mut send, ErrorCode::BadRequest, message).await;
    }
    if let Some(from) = msg.sender()
        && !identity.speaks_for(from)
    {
        state.impersonations_refused.fetch_add(1, Ordering::Relaxed);
        if identity.first_refusal() {
            tracing::warn!(
                claimed = from,
                "a node-protocol message in a node's name came over a connection whose \
                 certificate does not name that node; refused (once logged per connection)"
            );
        }
        let message = format!("this connection's certificate does not name node {from}");
        return fail(&mut send, ErrorCode::Forbidden, message).await;
    }
    let reply = answer(state, msg).await;
    let body = match postcard::to_allocvec(&reply) {
        Ok(body) if body.len() <= PEER_MESSAGE_BYTES_MAX => body,
        _ => return fail(&mut send, ErrorCode::Internal, "reply too large").await,
    };
    let header = Response::Peer {
        len: body.len() as u32,
    };
    if framing::write_frame(&mut send, &header, RESPONSE_HEADER_BYTES_MAX)
        .await
        .is_ok()
    {
        let _ = send.write_all(&body).await;
    }
    let _ = send.finish();
}

/// Answers a node-protocol message (the server side of `net::peer::call`).
async fn answer(state: &Arc<State>, msg: PeerMsg) -> PeerReply {
    match msg {
        PeerMsg::Heartbeat { from, report } => healing::on_heartbeat(state, &from, report),
        PeerMsg::Heal { from, msg } => healing::on_heal_message(state, &from, msg).await,
        PeerMsg::Status => PeerReply::Status(Box::new(healing::status::status(state))),
        PeerMsg::ApplyLayout { layout } => {
            let version = layout.version;
            let s = state.clone();
            match crate::task::spawn_blocking(move || s.adopt(layout, None)).await {
                Ok(Ok(())) => PeerReply::LayoutApplied { version },
                Ok(Err(e)) => PeerReply::Refused {
                    message: e.to_string(),
                },
                Err(e) => PeerReply::Refused {
                    message: format!("adopting the layout failed: {e}"),
                },
            }
        }
        PeerMsg::FetchLayouts => {
            let routing = state.routing();
            PeerReply::Layouts {
                layout: routing.layout.clone(),
                previous: routing.previous.as_ref().map(|p| p.layout.clone()),
            }
        }
        PeerMsg::Meta { from: _, msg } => {
            let s = state.clone();
            match crate::task::spawn_blocking(move || meta::cluster::answer(&s, msg)).await {
                Ok(reply) => PeerReply::Meta(reply),
                Err(e) => PeerReply::Refused {
                    message: e.to_string(),
                },
            }
        }
        PeerMsg::GcStart => gc_reply(state, true),
        PeerMsg::GcStatus => gc_reply(state, false),
        PeerMsg::RepairNow => PeerReply::RepairStarted {
            started_ms: healing::repair_now(state),
        },
        PeerMsg::ScrubNow { bytes_per_sec } => PeerReply::ScrubStarted {
            already: healing::scrub_now(state, bytes_per_sec),
        },
        PeerMsg::Keys(request) => match &state.keys_desk {
            Some(desk) => match desk.ask(request).await {
                Ok(answer) => PeerReply::Keys(answer),
                Err(e) => PeerReply::Refused {
                    message: e.to_string(),
                },
            },
            None => PeerReply::Refused {
                message: "the S3 front (which keeps keys and buckets) is off on this node".into(),
            },
        },
    }
}

fn gc_reply(state: &State, start: bool) -> PeerReply {
    match &state.gc {
        Some(gc) => PeerReply::Gc {
            started: start && gc.start(),
            status: gc.status(),
        },
        None => PeerReply::Refused {
            message: "the S3 front (and its garbage collector) is off on this node".into(),
        },
    }
}
