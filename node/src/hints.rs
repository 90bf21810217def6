//! Hint delivery: the loop that brings replicas which missed a put or a delete up to date,
//! once they are reachable. Which hints are due, and the backoff after a failure, are the
//! queue's (`cairn_core::hints`); what a hint means given what this node holds now is
//! `cairn_core::hints::plan`; the hints themselves are durable in `local::hint_log`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_client::ClientError;
use cairn_core::heal::Catalog;
use cairn_core::hints::{Hint, HintKind, HintStep, plan};
use cairn_core::wire::{DeleteRole, Op, Request, Response};
use cairn_engine::{BlobStat, Hash};

use crate::limits::{HINT_DELIVERY_BATCH_MAX, HINT_TICK_MS};
use crate::net::copy::{self, CopyError};
use crate::replica::is_corrupt;
use crate::state::State;

/// Why a hint could not be delivered yet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{node} answered {response:?}")]
    Unexpected {
        node: String,
        response: Box<Response>,
    },
    #[error("the local copy of {hash} is quarantined until it is repaired")]
    Quarantined { hash: Hash },
}

/// Delivers due hints, forever.
pub(crate) async fn hint_loop(state: Arc<State>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(HINT_TICK_MS)) => {}
            _ = state.hint_wake.notified() => {}
        }
        let now = state.now_ms();
        let due = state
            .hints
            .lock()
            .queue()
            .take_due(now, HINT_DELIVERY_BATCH_MAX);
        for (id, hint) in due {
            let result = deliver(&state, &hint).await;
            let now = state.now_ms();
            let mut log = state.hints.lock();
            match result {
                Ok(()) => {
                    tracing::debug!(hash = %hint.hash, target = %hint.target, "hint delivered");
                    state
                        .healing
                        .hints_delivered
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = log.delivered(id) {
                        tracing::error!(error = %e, "cannot record a delivered hint");
                    }
                }
                Err(e) => {
                    tracing::debug!(hash = %hint.hash, target = %hint.target, error = %e, "hint not delivered yet");
                    log.queue().failed(id, now);
                }
            }
        }
    }
}

/// Brings one replica up to date. `Ok` also when there is nothing left to do.
async fn deliver(state: &State, hint: &Hint) -> Result<(), DeliverError> {
    let routing = state.routing();
    let Some(node) = routing.layout.nodes.iter().find(|n| n.id == hint.target) else {
        tracing::warn!(target = %hint.target, "hint target left the layout; dropping the hint");
        return Ok(());
    };
    match plan(hint, state.catalog.entry(hint.hash.as_bytes())) {
        // A copy the engine quarantined is not gone: the healer fetches a good one, and the
        // hint waits for it. So does a hint whose copy could not be looked at (a read error).
        HintStep::Drop if hint.kind == HintKind::Put => match state.store.stat(&hint.hash) {
            Ok(BlobStat::Absent | BlobStat::Present { .. }) => Ok(()),
            Ok(_) => Err(DeliverError::Quarantined { hash: hint.hash }),
            Err(e) => Err(CopyError::Local(e.into()).into()),
        },
        HintStep::Drop => Ok(()),
        HintStep::Push(_) => {
            let found = state.store.get(&hint.hash).map_err(|e| {
                if is_corrupt(&e) {
                    state.noticed_corrupt(hint.hash);
                }
                CopyError::Local(e.into())
            })?;
            let Some(blob) = found else {
                tracing::warn!(hash = %hint.hash, "no local copy left to hand off");
                return Ok(());
            };
            copy::push_copy(state, &routing, node, hint.hash, &blob).await?;
            Ok(())
        }
        HintStep::Tombstone(tombstone) => {
            let request = Request {
                layout_version: routing.layout.version,
                op: Op::Delete {
                    hash: *hint.hash.as_bytes(),
                    role: DeleteRole::Replica,
                    version: tombstone.version,
                },
            };
            match state.pool.call(node, &request).await? {
                (Response::Deleted { .. }, _) => Ok(()),
                (other, _) => Err(DeliverError::Unexpected {
                    node: node.id.clone(),
                    response: Box::new(other),
                }),
            }
        }
    }
}
