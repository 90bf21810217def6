//! Figures the fronts record as they serve, kept where the fronts and `/metrics` both reach
//! them (`State::figures`): S3 requests by operation and status, failed reads of the access
//! keys, and each TLS front's certificate reloads. The HTTP front keeps its own `RequestFigures` in the front.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cairn_engine::latency::{LatencyHistogram, LatencySnapshot};
use parking_lot::Mutex;

/// What the fronts count, for `/metrics`.
#[derive(Default)]
pub(crate) struct FrontFigures {
    pub s3_requests: RequestFigures,
    /// One per front serving TLS.
    pub tls: Mutex<Vec<Arc<TlsFigures>>>,
    /// Reads of the managed access keys and permissions that failed (the S3 front's).
    pub s3_keys_refresh_failures: AtomicU64,
}

/// Latency of finished requests, by operation name and status code: the HTTP front's and the
/// S3 front's alike.
#[derive(Default)]
pub(crate) struct RequestFigures {
    requests: Mutex<BTreeMap<String, BTreeMap<u16, Arc<LatencyHistogram>>>>,
}

impl RequestFigures {
    pub fn finished(&self, operation: &str, status: u16, elapsed: Duration) {
        let series = {
            let mut requests = self.requests.lock();
            // Looked up by `&str`: an operation seen before costs no allocation.
            let by_status = match requests.get_mut(operation) {
                Some(by_status) => by_status,
                None => requests.entry(operation.to_string()).or_default(),
            };
            by_status.entry(status).or_default().clone()
        };
        series.record(elapsed);
    }

    /// Every (operation, status) seen, with its latencies so far.
    pub fn snapshot(&self) -> Vec<(String, u16, LatencySnapshot)> {
        let requests = self.requests.lock();
        requests
            .iter()
            .flat_map(|(op, by_status)| {
                by_status
                    .iter()
                    .map(|(status, h)| (op.clone(), *status, h.snapshot()))
            })
            .collect()
    }

    /// Requests finished with `operation` and `status` so far.
    #[cfg(test)]
    pub fn count(&self, operation: &str, status: u16) -> u64 {
        let requests = self.requests.lock();
        requests
            .get(operation)
            .and_then(|by_status| by_status.get(&status))
            .map_or(0, |h| h.count())
    }
}

/// A TLS front's certificate reloads: pairs taken up, and changes refused.
pub(crate) struct TlsFigures {
    /// `http` or `s3`.
    pub front: &'static str,
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
}
