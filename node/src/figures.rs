//! Figures the fronts record as they serve, kept where the fronts and `/metrics` both reach
//! them (`State::figures`): S3 requests by operation and status, and each TLS front's
//! certificate reloads. (The HTTP front's own request figures live in the front.)

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
}

/// Latency of finished requests, by operation name and status code.
#[derive(Default)]
pub(crate) struct RequestFigures {
    requests: Mutex<BTreeMap<(String, u16), Arc<LatencyHistogram>>>,
}

impl RequestFigures {
    pub fn finished(&self, operation: &str, status: u16, elapsed: Duration) {
        let series = self
            .requests
            .lock()
            .entry((operation.to_string(), status))
            .or_default()
            .clone();
        series.record(elapsed);
    }

    /// Every (operation, status) seen, with its latencies so far.
    pub fn snapshot(&self) -> Vec<((String, u16), LatencySnapshot)> {
        self.requests
            .lock()
            .iter()
            .map(|(key, h)| (key.clone(), h.snapshot()))
            .collect()
    }
}

/// A TLS front's certificate reloads: pairs taken up, and changes refused.
pub(crate) struct TlsFigures {
    /// `http` or `s3`.
    pub front: &'static str,
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
}
