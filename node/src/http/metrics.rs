//! `/metrics`: the node's figures in the Prometheus text format (version 0.0.4).
//!
//! Request figures are recorded as requests finish ([`HttpMetrics`]); engine, replication and
//! peer figures are read from the node when scraped ([`render`]). The format is written here by
//! hand: three line shapes (`# HELP`, `# TYPE`, samples), escaped label values, and histograms
//! as cumulative `_bucket` lines with `_sum` and `_count`.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_engine::latency::{LATENCY_BUCKET_BOUNDS_US, LatencySnapshot};
use parking_lot::Mutex;

use crate::figures::RequestFigures;
use crate::state::State;
use cairn_core::membership::PeerState;
use cairn_core::status::DiskState;

/// What an HTTP request did, as metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Put,
    Get,
    Head,
    Delete,
    Replicas,
    Cluster,
    Health,
    Metrics,
    Other,
}

impl Operation {
    pub fn label(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::Delete => "delete",
            Operation::Replicas => "replicas",
            Operation::Cluster => "cluster",
            Operation::Health => "health",
            Operation::Metrics => "metrics",
            Operation::Other => "other",
        }
    }
}

/// Why the front turned a request or connection away before serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// Over `requests_in_flight_max`.
    Requests,
    /// Over `HTTP_CONNECTIONS_MAX`.
    Connections,
    /// Missing or wrong bearer token.
    Unauthorized,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::Requests => "requests_in_flight",
            Rejection::Connections => "connections",
            Rejection::Unauthorized => "unauthorized",
        }
    }
}

/// Figures the HTTP front records as it serves.
#[derive(Default)]
pub struct HttpMetrics {
    /// Latency of finished requests, by operation and status code.
    requests: RequestFigures,
    rejected: Mutex<BTreeMap<Rejection, u64>>,
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl HttpMetrics {
    pub fn finished(&self, op: Operation, status: u16, elapsed: Duration) {
        self.requests.finished(op.label(), status, elapsed);
    }

    pub fn rejected(&self, why: Rejection) {
        *self.rejected.lock().entry(why).or_default() += 1;
    }

    /// Requests finished with `op` and `status` so far.
    #[cfg(test)]
    pub fn count(&self, op: Operation, status: u16) -> u64 {
        self.requests.count(op.label(), status)
    }
}

/// A Prometheus text exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a metric family: its help and type lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram's buckets (cumulative, in seconds), sum and count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencySnapshot) {
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match LATENCY_BUCKET_BOUNDS_US.get(i) {
                Some(us) => seconds(*us),
                None => "+Inf".to_string(),
            };
            self.text.push_str(name);
            self.text.push_str("_bucket");
            write_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_us));
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// A front's request figures: `cairn_<front>_requests_total` and
    /// `cairn_<front>_request_duration_seconds`, by operation and status code.
    pub fn requests(
        &mut self,
        front: &str,
        count_help: &str,
        duration_help: &str,
        rows: &[(&str, u16, &LatencySnapshot)],
    ) {
        let total = format!("cairn_{front}_requests_total");
        let duration = format!("cairn_{front}_request_duration_seconds");
        self.family(&total, "counter", count_help);
        for (op, status, h) in rows {
            let status = status.to_string();
            self.sample(&total, &[("operation", op), ("status", &status)], h.count());
        }
        self.family(&duration, "histogram", duration_help);
        for (op, status, h) in rows {
            let status = status.to_string();
            self.histogram(&duration, &[("operation", op), ("status", &status)], h);
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Microseconds as decimal seconds, exactly.
fn seconds(us: u64) -> String {
    let frac = us % 1_000_000;
    if frac == 0 {
        return format!("{}", us / 1_000_000);
    }
    let digits = format!("{frac:06}");
    format!("{}.{}", us / 1_000_000, digits.trim_end_matches('0'))
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (key, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Everything `/metrics` shows: the front's request figures, then the node's, read now.
pub(crate) fn render(state: &State, http: &HttpMetrics, requests_in_flight: usize) -> String {
    let mut e = Exposition::default();
    let requests = http.requests.snapshot();
    let rows: Vec<_> = requests
        .iter()
        .map(|(op, status, h)| (op.as_str(), *status, h))
        .collect();
    e.requests(
        "http",
        "HTTP requests served, by operation and status code.",
        "Time from a request's arrival to its response's headers (a GET's body streams after).",
        &rows,
    );
    e.family(
        "cairn_http_rejected_total",
        "counter",
        "Requests or connections turned away before being served, by reason.",
    );
    for (why, n) in http.rejected.lock().iter() {
        e.sample("cairn_http_rejected_total", &[("reason", why.label())], n);
    }
    e.family(
        "cairn_http_requests_in_flight",
        "gauge",
        "HTTP requests being served now.",
    );
    e.sample("cairn_http_requests_in_flight", &[], requests_in_flight);
    e.family(
        "cairn_http_received_bytes_total",
        "counter",
        "Request body bytes received.",
    );
    let received = http.received_bytes.load(Ordering::Relaxed);
    e.sample("cairn_http_received_bytes_total", &[], received);
    e.family(
        "cairn_http_sent_bytes_total",
        "counter",
        "Response body bytes sent.",
    );
    let sent = http.sent_bytes.load(Ordering::Relaxed);
    e.sample("cairn_http_sent_bytes_total", &[], sent);

    let s3 = state.figures.s3_requests.snapshot();
    let rows: Vec<_> = s3
        .iter()
        .map(|(op, status, h)| (op.as_str(), *status, h))
        .collect();
    e.requests(
        "s3",
        "S3 requests answered, by operation (as S3 names it; `none` if refused before routing) and status code.",
        "Time from an S3 request's arrival to its response's headers (a GetObject's body streams after).",
        &rows,
    );

    e.family(
        "cairn_build_info",
        "gauge",
        "Always 1: the version of the cairn binary and the node protocol it speaks.",
    );
    let protocol = String::from_utf8_lossy(cairn_core::wire::ALPN);
    e.sample(
        "cairn_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("protocol", protocol.as_ref()),
        ],
        1,
    );
    process_figures(&mut e);

    let stats = state.store.stats();
    let gauges: [(&str, &str, u64); 7] = [
        (
            "cairn_engine_blobs",
            "Blobs in this node's engine.",
            stats.blob_count,
        ),
        (
            "cairn_engine_live_bytes",
            "Bytes on disk of records readers can reach.",
            stats.live_bytes,
        ),
        (
            "cairn_engine_dead_bytes",
            "Bytes on disk of deleted or superseded records: what compaction can reclaim.",
            stats.dead_bytes,
        ),
        (
            "cairn_engine_segments",
            "Segment files.",
            stats.segment_count,
        ),
        (
            "cairn_engine_used_bytes",
            "Bytes of segment files.",
            stats.used_bytes,
        ),
        (
            "cairn_engine_quarantined_blobs",
            "Blobs found corrupt and no longer served from this node.",
            stats.quarantined_count,
        ),
        (
            "cairn_engine_read_only",
            "1 if the engine stopped taking writes after an IO failure.",
            u64::from(stats.read_only.is_some()),
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, "gauge", help);
        e.sample(name, &[], value);
    }
    e.family(
        "cairn_engine_dangling_index_entries_total",
        "counter",
        "Index entries found pointing at a segment no longer there, dropped (a bug: the blobs \
         read as absent here and are fetched again from their replicas), since the node started.",
    );
    e.sample(
        "cairn_engine_dangling_index_entries_total",
        &[],
        stats.dangling_index_entries,
    );
    e.family(
        "cairn_engine_direct_writes_declined_total",
        "counter",
        "Large records whose bytes the file system would not take around the page cache \
         (no O_DIRECT), written through it instead, since the node started.",
    );
    e.sample(
        "cairn_engine_direct_writes_declined_total",
        &[],
        stats.direct_writes_declined,
    );
    e.family(
        "cairn_engine_fsync_duration_seconds",
        "histogram",
        "Time the engine's fsyncs of segment files took.",
    );
    e.histogram(
        "cairn_engine_fsync_duration_seconds",
        &[],
        &stats.fsync_latency,
    );

    let status = crate::healing::status::status(state);
    e.family(
        "cairn_node_free_bytes",
        "gauge",
        "Bytes this node can still store (engine capacity and file system, whichever is less).",
    );
    e.sample("cairn_node_free_bytes", &[], status.report.free_bytes);
    let replication = [
        (
            "cairn_layout_version",
            "gauge",
            "Version of the layout this node routes by.",
            status.report.layout_version,
        ),
        (
            "cairn_hints_pending",
            "gauge",
            "Hints this node holds for replicas that missed a write or delete.",
            status.hints_pending,
        ),
        (
            "cairn_repair_transfers_queued",
            "gauge",
            "Blob copies the healer has queued (anti-entropy repairs and hand-offs).",
            status.transfers_queued,
        ),
        (
            "cairn_repair_transfers_in_flight",
            "gauge",
            "Blob copies being made now.",
            status.transfers_in_flight,
        ),
        (
            "cairn_antientropy_rounds_total",
            "counter",
            "Anti-entropy sessions this node completed with a peer.",
            status.sessions_completed,
        ),
        (
            "cairn_repair_copied_bytes_total",
            "counter",
            "Blob bytes the healer copied to or from peers.",
            state.healing.copied_bytes.load(Ordering::Relaxed),
        ),
        (
            "cairn_misplaced_bytes",
            "gauge",
            "Bytes held here that the layout places elsewhere, still to hand over.",
            status.report.misplaced_bytes,
        ),
        (
            "cairn_tombstones",
            "gauge",
            "Delete tombstones this node keeps until every owner has them.",
            status.tombstones,
        ),
        (
            "cairn_holds_not_written_total",
            "counter",
            "Holds on blobs stored through the native API that were dropped (queue full) or given up on (the metadata out of reach): such a blob is kept from the S3 collector only for the grace period.",
            state.holds.not_written(),
        ),
        (
            "cairn_impersonations_refused_total",
            "counter",
            "Node-protocol messages refused because the connection's certificate does not name the node they claim to come from.",
            state
                .impersonations_refused
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "cairn_corrupt_copies_found_total",
            "counter",
            "Corrupt copies found here, by the scrub or by a read.",
            status.corrupt_found,
        ),
        (
            "cairn_scrub_corrupt_copies_found_total",
            "counter",
            "Corrupt copies the scrub found here (also counted in cairn_corrupt_copies_found_total).",
            status.scrub.corrupt_found,
        ),
        (
            "cairn_scrub_running",
            "gauge",
            "1 while a scrub pass is under way.",
            u64::from(status.scrub.running),
        ),
        (
            "cairn_scrub_passes_total",
            "counter",
            "Scrub passes completed since the node started.",
            status.scrub.passes_completed,
        ),
        (
            "cairn_scrub_verified_blobs_total",
            "counter",
            "Blobs the scrub read and checked since the node started.",
            status.scrub.verified_blobs,
        ),
        (
            "cairn_under_replicated_blobs",
            "gauge",
            "Blobs with fewer copies than the layout asks, as far as this node's healer knows (summed over nodes, each blob counts about once).",
            status.repair.under_replicated_blobs,
        ),
        (
            "cairn_repairs_total",
            "counter",
            "Copies made by the healer and hints delivered, since the node started.",
            state.healing.healer.lock().progress().copies_made
                + state.healing.hints_delivered.load(Ordering::Relaxed),
        ),
        (
            "cairn_layout_moving",
            "gauge",
            "1 while this node still routes by the previous layout (a layout change is not over).",
            u64::from(status.previous_layout_version.is_some()),
        ),
        (
            "cairn_node_drained",
            "gauge",
            "1 when this node is out of the layout and holds nothing (it can be stopped).",
            u64::from(status.drained),
        ),
        (
            "cairn_disk_total_bytes",
            "gauge",
            "Size of the disk under the data directory (or the engine's capacity, if smaller).",
            status.space.disk_total_bytes,
        ),
        (
            "cairn_disk_nearly_full",
            "gauge",
            "1 when free space is under the configured share of the disk.",
            u64::from(status.space.disk == DiskState::NearlyFull),
        ),
        (
            "cairn_disk_full",
            "gauge",
            "1 when writes fail (or did in the last minute) for lack of space.",
            u64::from(status.space.disk == DiskState::Full),
        ),
        (
            "cairn_engine_reclaimable_bytes",
            "gauge",
            "Bytes compaction would give back now.",
            status.space.reclaimable_bytes,
        ),
        (
            "cairn_compaction_rounds_total",
            "counter",
            "Compaction rounds run since the node started.",
            status.space.compaction_rounds,
        ),
        (
            "cairn_compaction_reclaimed_bytes_total",
            "counter",
            "Bytes compaction gave back since the node started.",
            status.space.compaction_reclaimed_bytes,
        ),
        (
            "cairn_mapped_resident_bytes",
            "gauge",
            "Resident bytes of file pages (the engine's segment mappings) when last looked at.",
            state.space.mapped_resident_bytes.load(Ordering::Relaxed),
        ),
        (
            "cairn_mapped_releases_total",
            "counter",
            "Times the node let go of its segment mappings' resident memory (over mapped_resident_bytes_max).",
            state.space.mapped_releases.load(Ordering::Relaxed),
        ),
        (
            "cairn_compaction_errors_total",
            "counter",
            "Compaction rounds that failed since the node started.",
            status.space.compaction_errors,
        ),
        (
            "cairn_recovery_records_lost",
            "gauge",
            "Records the engine's last open could not find (cut off or in an unreadable segment).",
            status.recovery.records_lost,
        ),
        (
            "cairn_recovery_torn_tails",
            "gauge",
            "Segments whose damaged tail the engine's last open cut off.",
            status.recovery.torn_tails,
        ),
        (
            "cairn_recovery_unreadable_segments",
            "gauge",
            "Segment files the engine's last open could not read (moved to the store's damaged/ directory).",
            status.recovery.unreadable_segments,
        ),
    ];
    for (name, kind, help, value) in replication {
        e.family(name, kind, help);
        e.sample(name, &[], value);
    }
    // The families always, so that rules naming them load; a sample per front that has TLS.
    let tls = state.figures.tls.lock().clone();
    let families = [
        (
            "cairn_front_tls_reloads_total",
            "Certificate pairs a front took up after its files changed, since the node started.",
            &tls.iter()
                .map(|t| (t.front, t.reloads.load(Ordering::Relaxed)))
                .collect::<Vec<_>>(),
        ),
        (
            "cairn_front_tls_reload_failures_total",
            "Changes of a front's certificate or key files that could not be served (the previous pair stays).",
            &tls.iter()
                .map(|t| (t.front, t.failures.load(Ordering::Relaxed)))
                .collect(),
        ),
    ];
    for (name, help, samples) in families {
        e.family(name, "counter", help);
        for (front, value) in samples {
            e.sample(name, &[("front", front)], value);
        }
    }
    if state.gc.is_some() {
        let name = "cairn_s3_keys_refresh_failures_total";
        e.family(
            name,
            "counter",
            "Reads of the managed access keys and permissions that failed (the last ones read stay in force).",
        );
        let failures = &state.figures.s3_keys_refresh_failures;
        e.sample(name, &[], failures.load(Ordering::Relaxed));
    }
    if let Some(gc) = &state.gc {
        let gc = gc.status();
        let collector = [
            (
                "cairn_gc_running",
                "gauge",
                "1 while a garbage collection runs on this node.",
                u64::from(gc.running),
            ),
            (
                "cairn_gc_runs_total",
                "counter",
                "Garbage collections finished on this node.",
                gc.runs,
            ),
            (
                "cairn_gc_candidates",
                "gauge",
                "Blobs the current or last collection found unwritten for the grace period.",
                gc.candidates,
            ),
            (
                "cairn_gc_deleted_blobs",
                "gauge",
                "Blobs the current or last collection deleted.",
                gc.deleted,
            ),
            (
                "cairn_gc_deleted_bytes",
                "gauge",
                "Bytes of the blobs the current or last collection deleted.",
                gc.deleted_bytes,
            ),
            (
                "cairn_lifecycle_expired_objects",
                "gauge",
                "Objects the buckets' lifecycle rules expired in the current or last collection.",
                gc.expired_objects,
            ),
            (
                "cairn_lifecycle_aborted_uploads",
                "gauge",
                "Unfinished uploads the buckets' lifecycle rules aborted in the current or last collection.",
                gc.aborted_uploads,
            ),
            (
                "cairn_gc_errors",
                "gauge",
                "Errors in the current or last collection.",
                gc.errors,
            ),
            (
                "cairn_gc_last_success_timestamp_seconds",
                "gauge",
                "When a collection last finished without errors on this node (0: not since it started).",
                gc.last_success_ms / 1000,
            ),
            (
                "cairn_gc_postponed",
                "gauge",
                "1 while collections are postponed (a layout change still moving data).",
                u64::from(gc.postponed.is_some()),
            ),
        ];
        for (name, kind, help, value) in collector {
            e.family(name, kind, help);
            e.sample(name, &[], value);
        }
    }
    if let Some(eta) = status.repair.eta_secs {
        e.family(
            "cairn_repair_eta_seconds",
            "gauge",
            "When the copies that can be made now will be, at the last minute's pace.",
        );
        e.sample("cairn_repair_eta_seconds", &[], eta);
    }
    e.family(
        "cairn_info",
        "gauge",
        "1, labelled with the node's id and software version.",
    );
    e.sample(
        "cairn_info",
        &[
            ("node", state.id.as_str()),
            ("version", status.version.as_str()),
        ],
        1,
    );
    e.family(
        "cairn_peer_state",
        "gauge",
        "1 for each peer's current state as this node's failure detector sees it (with the peer's zone).",
    );
    let routing = state.routing();
    for peer in &status.peers {
        let zone = crate::net::peer::find_node(&routing, &peer.id)
            .map(|n| n.zone)
            .unwrap_or_default();
        for (state, label) in [
            (PeerState::Up, "up"),
            (PeerState::Suspect, "suspect"),
            (PeerState::Down, "down"),
        ] {
            let labels = [
                ("peer", peer.id.as_str()),
                ("zone", zone.as_str()),
                ("state", label),
            ];
            e.sample("cairn_peer_state", &labels, u8::from(peer.state == state));
        }
    }
    e.finish()
}

/// The process's own figures, under the names every Prometheus client library gives them
/// (`process_*`), read from `/proc/self` on Linux; nothing elsewhere.
fn process_figures(e: &mut Exposition) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(fields) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
        return;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // Numbered as in proc(5), from field 3 (state) on.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // SAFETY: as above.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        e.family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
        );
        let centis = (utime + stime) * 100 / ticks_per_sec;
        e.sample(
            "process_cpu_seconds_total",
            &[],
            format!("{}.{:02}", centis / 100, centis % 100),
        );
    }
    if let Some(vsize) = field(23) {
        e.family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size, in bytes (mapped segments included).",
        );
        e.sample("process_virtual_memory_bytes", &[], vsize);
    }
    if let Some(rss) = field(24) {
        e.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory, in bytes: anonymous memory and the pages of mapped segments in memory.",
        );
        e.sample("process_resident_memory_bytes", &[], rss * page_bytes);
    }
    let boot_secs = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(boot_secs), Some(start_ticks)) = (boot_secs, field(22)) {
        e.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        e.sample(
            "process_start_time_seconds",
            &[],
            boot_secs + start_ticks / ticks_per_sec,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.family("process_open_fds", "gauge", "Open file descriptors.");
        e.sample("process_open_fds", &[], fds.count());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        e.family(
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors.",
        );
        e.sample("process_max_fds", &[], limit.rlim_cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_an_infinite_bucket_sum_and_count() {
        let h = cairn_engine::latency::LatencyHistogram::default();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(20));
        let mut e = Exposition::default();
        e.family("x_seconds", "histogram", "help");
        e.histogram("x_seconds", &[("op", "get")], &h.snapshot());
        let text = e.finish();
        assert!(text.contains("x_seconds_bucket{op=\"get\",le=\"0.00005\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{op=\"get\",le=\"0.001\"} 2\n"));
        assert!(text.contains("x_seconds_bucket{op=\"get\",le=\"10\"} 2\n"));
        assert!(text.contains("x_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("x_seconds_sum{op=\"get\"} 20.00074\n"));
        assert!(text.contains("x_seconds_count{op=\"get\"} 3\n"));
        assert!(text.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("m", &[("peer", "a\"b\\c\nd")], 1);
        assert_eq!(e.finish(), "m{peer=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
    }

    #[test]
    fn request_series_count_by_operation_and_status() {
        let m = HttpMetrics::default();
        m.finished(Operation::Put, 201, Duration::from_millis(2));
        m.finished(Operation::Put, 201, Duration::from_millis(3));
        m.finished(Operation::Put, 413, Duration::from_millis(1));
        assert_eq!(m.count(Operation::Put, 201), 2);
        assert_eq!(m.count(Operation::Put, 413), 1);
        assert_eq!(m.count(Operation::Get, 200), 0);
    }
}
