//! Spawning the node's tasks so that what they log carries the node's id: `Node::start` runs
//! inside a span naming the node, and every task and blocking job it starts, directly or not,
//! runs inside that span too (`cairn dev` runs several nodes in one process).

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::Instrument;

/// `tokio::spawn`, inside the current span.
pub(crate) fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_span())
}

/// `tokio::task::spawn_blocking`, inside the current span.
pub(crate) fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}
