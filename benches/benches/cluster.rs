//! Cairn's cluster benchmark: puts and gets through `cairn_client::Client` against a local
//! six-node, three-zone cluster at replication factor 1 and at factor 3, measured in the same
//! run as raw QUIC between two endpoints with Cairn's own TLS and transport settings; and the
//! HTTP mode, 1 MiB puts and gets through the nodes' HTTP fronts beside the same load through
//! the QUIC client; and the S3 mode, PutObject and GetObject of 4 KiB and 4 MiB objects
//! through the nodes' S3 fronts beside the same blobs through the HTTP fronts. Prints a table
//! and the goal ratios, and writes `<target>/cairn-bench/cluster.json`.
//!
//! Every node, the client and both baseline endpoints run in this one process, on 127.0.0.1,
//! in one tokio runtime: they share the machine's cores as they would on one host. Each round
//! measures every case once, baselines first; the figures are medians over rounds, and each
//! ratio is the median of the per-round ratios, so that both sides of a ratio were measured
//! seconds apart.
//!
//! `CAIRN_BENCH_QUICK=1` shrinks every case for a smoke run (its summary goes to
//! `cluster-quick.json`, so it never replaces a full run's); `CAIRN_BENCH_ONLY=<text>[,<text>...]`
//! measures only the cases whose key (as in the summary, e.g. `factor3_put_4MiB_x32`) contains
//! one of the texts, and writes `cluster-partial.json`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_benches::{
    blob, load_average, median, stamp, sync_all_file_systems, target_dir, unique_id,
};
use cairn_client::{Client, ClientOptions, Hash, Identity};
use cairn_node::dev::{ClusterFiles, ClusterSpec, write_cluster};
use cairn_node::{Node, NodeConfig};
use cairn_tests::http::{HttpClient, HttpConnection, HttpResponse};
use cairn_tests::s3::S3Signer;
use serde_json::{Value, json};
use tempfile::TempDir;

#[path = "common/quic.rs"]
mod quic;

use quic::{
    REQUEST_BYTES, RESPONSE_BYTES, RawQuic, STREAM_REQUEST, free_base_port, process_cpu_s, sink,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const BLOB_SIZES: [usize; 3] = [4 * KIB, 64 * KIB, 4 * MIB];
/// Nodes and zones of each benchmark cluster (n1..n6, two per zone).
const NODE_COUNT: usize = 6;
const ZONE_COUNT: usize = 3;
/// The client's zone: its reads prefer the replica there.
const CLIENT_ZONE: &str = "zone-a";
/// Where the search for free UDP ports starts: well away from the development cluster's 7401.
const PORT_SEARCH_START: u16 = 17401;
/// Requests in flight in every throughput run, Cairn's and the request/response baseline's.
const IN_FLIGHT: usize = 32;
/// The bulk baseline: this many streams at once, each carrying `BULK_STREAM_BYTES`.
const BULK_STREAMS: usize = 64;
const BULK_STREAM_BYTES: usize = MIB;
/// Operations per measurement at full scale, per blob size: sequential puts, concurrent puts,
/// sequential gets, concurrent gets. Each measurement also stops at `Scale::budget`.
const OP_COUNTS: [(usize, [usize; 4]); 5] = [
    (4 * KIB, [500, 4000, 1000, 8000]),
    (64 * KIB, [200, 2000, 500, 4000]),
    (4 * MIB, [30, 96, 60, 192]),
    (MIB, [60, 192, 120, 384]),
    (64 * MIB, [4, 16, 8, 32]),
];
/// Requests in flight at which 4 MiB GetObject's p99 is held against its p50.
const GET_TAIL_IN_FLIGHT: usize = 16;
/// Requests in flight for 64 MiB objects (the S3 mode): each holds its body in memory.
const LARGE_IN_FLIGHT: usize = 4;
/// Time a client operation may take, retries included: a failing cluster shows up as failed
/// operations (or a failed warm-up) instead of stalling the run.
const DEADLINE_MS: u64 = 10_000;

/// Goals, judged on the median of the per-round figures.
const GOAL_PUT_4MIB_FRACTION_OF_RAW_THIRD: f64 = 0.60;
const GOAL_PUT_4KIB_P50_MS: f64 = 1.5;
const GOAL_PUT_4KIB_P99_MS: f64 = 5.0;
const GOAL_GET_4KIB_FRACTION_OF_RAW: f64 = 0.70;
const GOAL_HTTP_FRACTION_OF_QUIC: f64 = 0.80;
/// The HTTP mode's blob size.
const HTTP_BLOB_BYTES: usize = MIB;
/// The S3 mode: throughput through the S3 fronts at least this fraction of the HTTP fronts'
/// for 4 MiB objects, and 4 KiB put latency (p50) at most this multiple of theirs.
const GOAL_S3_FRACTION_OF_HTTP: f64 = 0.80;
const GOAL_S3_PUT_4KIB_P50_MULTIPLE_OF_HTTP: f64 = 1.5;
/// 4 MiB GetObject at `GET_TAIL_IN_FLIGHT`: p99 at most this multiple of p50.
const GOAL_S3_GET_4MIB_P99_MULTIPLE_OF_P50: f64 = 1.5;
/// The bucket the S3 mode writes to.
const S3_BENCH_BUCKET: &str = "cairn-bench";

/// How big and how long everything is.
struct Scale {
    quick: bool,
    /// Run by `cargo bench` (not as a test), so the summary is written.
    measuring: bool,
    rounds: usize,
    /// A measurement starts no new operation after this long.
    budget: Duration,
    /// Divides every operation count.
    shrink: usize,
    /// Bulk baseline: waves of `BULK_STREAMS` streams per measurement.
    bulk_waves: usize,
    /// One-stream bulk baseline: MiB sent on a single stream.
    one_stream_mib: usize,
    rr_sequential: usize,
    rr_concurrent: usize,
    /// `CAIRN_BENCH_ONLY`: measure only the cases whose key contains one of these
    /// comma-separated texts.
    only: Option<String>,
}

impl Scale {
    fn from_env() -> Scale {
        let quick_env = std::env::var("CAIRN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let measuring = std::env::args().any(|a| a == "--bench");
        let only = std::env::var("CAIRN_BENCH_ONLY")
            .ok()
            .filter(|v| !v.is_empty());
        if quick_env || !measuring {
            Scale {
                quick: true,
                measuring,
                rounds: 1,
                budget: Duration::from_millis(500),
                shrink: 8,
                bulk_waves: 1,
                one_stream_mib: 128,
                rr_sequential: 250,
                rr_concurrent: 2000,
                only,
            }
        } else {
            Scale {
                quick: false,
                measuring,
                rounds: 3,
                budget: Duration::from_millis(2500),
                shrink: 1,
                bulk_waves: 4,
                one_stream_mib: 1024,
                rr_sequential: 2000,
                rr_concurrent: 16_000,
                only,
            }
        }
    }

    /// Whether the case named `key` is measured.
    fn wants(&self, key: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.split(',').any(|o| key.contains(o)))
    }

    /// Operations for one measurement: `which` indexes `OP_COUNTS`' arrays.
    fn op_count(&self, blob_bytes: usize, which: usize) -> usize {
        let (_, counts) = OP_COUNTS
            .iter()
            .find(|(bytes, _)| *bytes == blob_bytes)
            .expect("every blob size has operation counts");
        let in_flight = match (which.is_multiple_of(2), blob_bytes >= 64 * MIB) {
            (true, _) => 1,
            (false, true) => LARGE_IN_FLIGHT,
            (false, false) => IN_FLIGHT,
        };
        (counts[which] / self.shrink).max(in_flight).max(4)
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

fn size_key(bytes: usize) -> String {
    size_label(bytes).replace(' ', "")
}

/// One measurement: `ops` operations of `bytes_per_op` bytes each succeeded.
struct Sample {
    ops: usize,
    bytes_per_op: u64,
    elapsed: Duration,
    /// Each successful operation's latency, sorted.
    latencies_ns: Vec<u64>,
    /// The indices of the operations that succeeded, in no particular order.
    succeeded: Vec<usize>,
    /// Operations that returned an error, and the first error.
    failures: usize,
    first_failure: Option<String>,
    /// Process CPU time (every node, the client, the baseline) during the measurement.
    cpu_s: Option<f64>,
}

impl Sample {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn mb_per_s(&self) -> f64 {
        self.ops as f64 * self.bytes_per_op as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Nearest-rank percentile `q` (0 < q <= 1) of the latencies, in milliseconds.
    fn percentile_ms(&self, q: f64) -> f64 {
        percentile_ms(&self.latencies_ns, q)
    }

    /// Cores kept busy on average: process CPU seconds over wall-clock seconds.
    fn cpu_cores(&self) -> Option<f64> {
        self.cpu_s.map(|s| s / self.elapsed.as_secs_f64())
    }

    fn json(&self) -> Value {
        json!({
            "ops": self.ops,
            "seconds": self.elapsed.as_secs_f64(),
            "ops_per_s": self.ops_per_s(),
            "mb_per_s": self.mb_per_s(),
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.percentile_ms(1.0),
            "cpu_cores": self.cpu_cores(),
            "failures": self.failures,
            "first_failure": self.first_failure,
        })
    }
}

/// Nearest-rank percentile `q` of sorted latencies, in milliseconds; NaN if there are none.
fn percentile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1e6
}

/// One case, measured once per round.
struct Case {
    key: String,
    label: String,
    in_flight: usize,
    rounds: Vec<Sample>,
}

impl Case {
    /// The median over rounds of one figure.
    fn median_of(&self, figure: impl Fn(&Sample) -> f64) -> f64 {
        let mut values: Vec<f64> = self.rounds.iter().map(figure).collect();
        median(&mut values)
    }

    fn ops_per_s(&self) -> f64 {
        self.median_of(Sample::ops_per_s)
    }

    fn mb_per_s(&self) -> f64 {
        self.median_of(Sample::mb_per_s)
    }

    fn p50_ms(&self) -> f64 {
        self.median_of(|s| s.percentile_ms(0.50))
    }

    fn p99_ms(&self) -> f64 {
        self.median_of(|s| s.percentile_ms(0.99))
    }

    fn cpu_cores(&self) -> Option<f64> {
        let mut values: Vec<f64> = self.rounds.iter().filter_map(Sample::cpu_cores).collect();
        (!values.is_empty()).then(|| median(&mut values))
    }

    fn failures(&self) -> usize {
        self.rounds.iter().map(|s| s.failures).sum()
    }

    /// Percentiles over every round's latencies together.
    fn pooled_ms(&self, q: f64) -> f64 {
        let mut all: Vec<u64> = self
            .rounds
            .iter()
            .flat_map(|s| s.latencies_ns.iter().copied())
            .collect();
        all.sort_unstable();
        percentile_ms(&all, q)
    }

    fn json(&self) -> Value {
        json!({
            "key": self.key,
            "label": self.label,
            "in_flight": self.in_flight,
            "bytes_per_op": self.rounds[0].bytes_per_op,
            "median_of_rounds": {
                "ops_per_s": self.ops_per_s(),
                "mb_per_s": self.mb_per_s(),
                "p50_ms": self.p50_ms(),
                "p99_ms": self.p99_ms(),
                "cpu_cores": self.cpu_cores(),
            },
            "failures": self.failures(),
            "all_rounds_pooled": {
                "p50_ms": self.pooled_ms(0.50),
                "p99_ms": self.pooled_ms(0.99),
            },
            "rounds": self.rounds.iter().map(Sample::json).collect::<Vec<_>>(),
        })
    }
}

/// Every case, in the order first measured.
#[derive(Default)]
struct Results {
    cases: Vec<Case>,
    /// Clusters whose cases were skipped, and why.
    not_measured: Vec<String>,
}

impl Results {
    fn record(&mut self, key: &str, label: &str, in_flight: usize, sample: Sample) {
        match self.cases.iter_mut().find(|c| c.key == key) {
            Some(case) => case.rounds.push(sample),
            None => self.cases.push(Case {
                key: key.to_string(),
                label: label.to_string(),
                in_flight,
                rounds: vec![sample],
            }),
        }
    }

    fn case(&self, key: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.key == key)
    }

    /// Per round, `numerator`'s figure over `denominator`'s (both measured in that round).
    fn per_round_ratios(
        &self,
        numerator: (&str, fn(&Sample) -> f64),
        denominator: (&str, fn(&Sample) -> f64),
    ) -> Vec<f64> {
        let (Some(n), Some(d)) = (self.case(numerator.0), self.case(denominator.0)) else {
            return Vec::new();
        };
        n.rounds
            .iter()
            .zip(&d.rounds)
            .map(|(a, b)| numerator.1(a) / denominator.1(b))
            .collect()
    }
}

/// Writes back every dirty page before a measurement, so one case's writeback does not run
/// during the next.
async fn settle() {
    tokio::task::spawn_blocking(sync_all_file_systems)
        .await
        .expect("sync task")
        .expect("sync");
}

/// Runs `op(0)`, `op(1)`, ... up to `count` operations with `in_flight` running at a time, and
/// stops starting new ones after `budget`. An operation that fails is counted, not retried.
async fn measure<F, Fut>(
    count: usize,
    in_flight: usize,
    budget: Duration,
    bytes_per_op: u64,
    op: F,
) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    settle().await;
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu_s();
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight.min(count))
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut failures = Vec::new();
                while start.elapsed() < budget {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let began = Instant::now();
                    match op(i).await {
                        Ok(()) => done.push((i, began.elapsed().as_nanos() as u64)),
                        Err(e) => failures.push(e),
                    }
                }
                (done, failures)
            })
        })
        .collect();
    let mut done = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for worker in workers {
        let (d, f) = worker.await.expect("benchmark worker panicked");
        done.extend(d);
        failures.extend(f);
    }
    let elapsed = start.elapsed();
    let cpu_s = process_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let mut latencies_ns: Vec<u64> = done.iter().map(|&(_, ns)| ns).collect();
    latencies_ns.sort_unstable();
    Sample {
        ops: done.len(),
        bytes_per_op,
        elapsed,
        latencies_ns,
        succeeded: done.into_iter().map(|(i, _)| i).collect(),
        failures: failures.len(),
        first_failure: failures.into_iter().next(),
        cpu_s,
    }
}

/// A running local cluster and a client of it.
struct Cluster {
    key: String,
    label: String,
    replication_factor: usize,
    write_quorum: usize,
    base_port: u16,
    files: ClusterFiles,
    nodes: Vec<Node>,
    client: Client,
    /// Why the warm-up failed, if it did; the cluster's cases are then skipped.
    error: Option<String>,
}

impl Cluster {
    async fn start(
        dir: &Path,
        base_port: u16,
        replication_factor: usize,
        write_quorum: usize,
    ) -> Cluster {
        let mut spec = ClusterSpec::local(NODE_COUNT, ZONE_COUNT, [127, 0, 0, 1], base_port);
        spec.replication_factor = replication_factor;
        spec.write_quorum = write_quorum;
        let files = write_cluster(dir, &spec).expect("write cluster files");
        let mut nodes = Vec::with_capacity(files.node_configs.len());
        for path in &files.node_configs {
            let config = NodeConfig::load(path).expect("load node configuration");
            nodes.push(Node::start(&config).await.expect("start node"));
        }
        let client_tls = files.client_tls();
        let identity = Identity::load(&client_tls.ca, &client_tls.cert, &client_tls.key)
            .expect("load client identity");
        let layout = cairn_client::load_layout(&files.layout).expect("load layout");
        let options = ClientOptions {
            zone: Some(CLIENT_ZONE.to_string()),
            deadline_ms: DEADLINE_MS,
            ..ClientOptions::default()
        };
        let client = Client::connect(layout, &identity, options)
            .await
            .expect("connect client");
        Cluster {
            key: format!("factor{replication_factor}"),
            label: format!("factor {replication_factor} quorum {write_quorum}"),
            replication_factor,
            write_quorum,
            base_port,
            files,
            nodes,
            client,
            error: None,
        }
    }

    /// Opens the client's connections to every node and the nodes' to each other. A cluster
    /// that cannot store and read back small blobs is marked with the error.
    async fn warm_up(&mut self, puts: usize) {
        for i in 0..puts {
            let mut bytes = blob(4 * KIB, 0xc1u64 << 32 | i as u64);
            stamp(&mut bytes, unique_id());
            let round_trip = async {
                let hash = self.client.put(bytes).await?;
                self.client.get(&hash).await
            };
            let failed = match round_trip.await {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            eprintln!("{}: warm-up put and get failed: {failed}", self.label);
            self.error = Some(failed);
            return;
        }
    }

    async fn shutdown(self) {
        self.client.close().await;
        for node in self.nodes {
            node.shutdown().await;
        }
    }

    fn json(&self) -> Value {
        json!({
            "nodes": NODE_COUNT,
            "zones": ZONE_COUNT,
            "replication_factor": self.replication_factor,
            "write_quorum": self.write_quorum,
            "base_port": self.base_port,
            "client_zone": CLIENT_ZONE,
            "not_measured_because": self.error,
        })
    }
}

/// `count` distinct blobs of `blob_bytes` and their hashes, made before a measurement starts.
/// `count` blobs never stored before. Every MiB of each is stamped, not only its start: the S3
/// front stores a large body as chunks, each a blob, and chunks alike would be deduplicated.
fn fresh_blobs(blob_bytes: usize, count: usize) -> (Arc<Vec<Bytes>>, Arc<Vec<Hash>>) {
    let base = blob(blob_bytes, blob_bytes as u64);
    let blobs: Vec<Bytes> = (0..count)
        .map(|_| {
            let mut bytes = base.clone();
            for piece in bytes.chunks_mut(MIB) {
                stamp(piece, unique_id());
            }
            Bytes::from(bytes)
        })
        .collect();
    let hashes = blobs.iter().map(|b| Hash::of(b)).collect();
    (Arc::new(blobs), Arc::new(hashes))
}

/// Puts `count` fresh blobs, `in_flight` at a time; returns the measurement and the hashes of
/// the blobs stored.
async fn measure_puts(
    scale: &Scale,
    client: &Client,
    blob_bytes: usize,
    count: usize,
    in_flight: usize,
) -> (Sample, Vec<Hash>) {
    let (blobs, hashes) = fresh_blobs(blob_bytes, count);
    let (client, expected) = (client.clone(), hashes.clone());
    let sample = measure(
        count,
        in_flight,
        scale.budget,
        blob_bytes as u64,
        move |i| {
            let (client, blob, hash) = (client.clone(), blobs[i].clone(), expected[i]);
            async move {
                let stored = client.put(blob).await.map_err(|e| e.to_string())?;
                assert_eq!(stored, hash, "put returned another hash");
                Ok(())
            }
        },
    )
    .await;
    let stored = sample.succeeded.iter().map(|&i| hashes[i]).collect();
    (sample, stored)
}

/// Gets `count` times, cycling through `hashes`, `in_flight` at a time.
async fn measure_gets(
    scale: &Scale,
    client: &Client,
    blob_bytes: usize,
    hashes: &[Hash],
    count: usize,
    in_flight: usize,
) -> Sample {
    assert!(!hashes.is_empty(), "gets need stored blobs");
    let (client, hashes) = (client.clone(), Arc::new(hashes.to_vec()));
    measure(
        count,
        in_flight,
        scale.budget,
        blob_bytes as u64,
        move |i| {
            let (client, hash) = (client.clone(), hashes[i % hashes.len()]);
            async move {
                let bytes = client.get(&hash).await.map_err(|e| e.to_string())?;
                assert_eq!(bytes.len(), blob_bytes, "get returned a short blob");
                Ok(())
            }
        },
    )
    .await
}

/// Keep-alive connections to every node's HTTP front, or S3 front, reused across operations.
struct Fronts {
    clients: Vec<HttpClient>,
    /// Signs every request (the S3 fronts).
    signer: Option<S3Signer>,
    idle: Vec<std::sync::Mutex<Vec<HttpConnection>>>,
}

impl Fronts {
    fn new(cluster: &Cluster) -> Fronts {
        Fronts {
            clients: cluster
                .nodes
                .iter()
                .map(|n| HttpClient::new(n.http_addr(), None))
                .collect(),
            signer: None,
            idle: cluster.nodes.iter().map(|_| Default::default()).collect(),
        }
    }

    /// The S3 fronts, with the cluster's first access key.
    fn s3(cluster: &Cluster) -> Fronts {
        let settings = NodeConfig::load(&cluster.files.node_configs[0])
            .expect("load node configuration")
            .s3
            .expect("the benchmark cluster runs the S3 front");
        let key = settings
            .load_credentials()
            .expect("load S3 credentials")
            .remove(0);
        Fronts {
            clients: cluster
                .nodes
                .iter()
                .map(|n| HttpClient::new(n.s3_addr().expect("an S3 front"), None))
                .collect(),
            signer: Some(S3Signer {
                access_key: key.access_key,
                secret_key: key.secret_key,
                region: settings.region,
                clock_offset_secs: 0,
            }),
            idle: cluster.nodes.iter().map(|_| Default::default()).collect(),
        }
    }

    /// One request to front `i % fronts` (spread as a load balancer would), on an idle
    /// connection when there is one still open (a front closes one idle for its
    /// `idle_timeout_ms`, as the oldest in this pool may be between rounds).
    async fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        let front = i % self.clients.len();
        let idle = {
            let mut idle = self.idle[front].lock().expect("pool lock");
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let mut connection = match idle {
            Some(c) => c,
            None => self.clients[front]
                .connect()
                .await
                .map_err(|e| e.to_string())?,
        };
        let response = match &self.signer {
            Some(signer) => {
                let addr = self.clients[front].addr;
                let sent = signer.send(&mut connection, addr, method, path, &[], &[], body);
                sent.await
            }
            None => connection.request(method, path, &[], body).await,
        }
        .map_err(|e| e.to_string())?;
        self.idle[front].lock().expect("pool lock").push(connection);
        Ok(response)
    }
}

/// The HTTP mode: 1 MiB puts and gets through the nodes' HTTP fronts, spread over all six, and
/// the same load through the QUIC client, in the same round.
async fn http_round(scale: &Scale, cluster: &Cluster, fronts: &Arc<Fronts>, results: &mut Results) {
    if cluster.error.is_some() {
        return;
    }
    let blob_bytes = HTTP_BLOB_BYTES;
    let size = size_label(blob_bytes);
    let key = |path: &str, op: &str| {
        format!(
            "{}_{path}_{op}_{}_x{IN_FLIGHT}",
            cluster.key,
            size_key(blob_bytes)
        )
    };
    let puts = scale.op_count(blob_bytes, 1);
    let gets = scale.op_count(blob_bytes, 3);
    let mut stored = Vec::new();
    if scale.wants(&key("quic", "put")) {
        let (sample, hashes) =
            measure_puts(scale, &cluster.client, blob_bytes, puts, IN_FLIGHT).await;
        stored.extend(hashes);
        let label = format!("{} put {size}, QUIC client", cluster.label);
        results.record(&key("quic", "put"), &label, IN_FLIGHT, sample);
    }
    if scale.wants(&key("http", "put")) {
        let (blobs, hashes) = fresh_blobs(blob_bytes, puts);
        let (f, expected) = (fronts.clone(), hashes.clone());
        let sample = measure(puts, IN_FLIGHT, scale.budget, blob_bytes as u64, move |i| {
            let (f, blob, hash) = (f.clone(), blobs[i].clone(), expected[i]);
            async move {
                let r = f.request(i, "PUT", "/v1/blobs", blob).await?;
                if r.status != 201 {
                    return Err(format!("put answered {}", r.status));
                }
                assert_eq!(
                    r.json()["hash"],
                    hash.to_string(),
                    "put answered another hash"
                );
                Ok(())
            }
        })
        .await;
        stored.extend(sample.succeeded.iter().map(|&i| hashes[i]));
        let label = format!("{} put {size}, HTTP fronts", cluster.label);
        results.record(&key("http", "put"), &label, IN_FLIGHT, sample);
    }
    let wants_gets = scale.wants(&key("quic", "get")) || scale.wants(&key("http", "get"));
    if stored.is_empty() && wants_gets {
        let (_, hashes) = measure_puts(scale, &cluster.client, blob_bytes, puts, IN_FLIGHT).await;
        stored = hashes;
    }
    if stored.is_empty() {
        return;
    }
    if scale.wants(&key("quic", "get")) {
        let sample =
            measure_gets(scale, &cluster.client, blob_bytes, &stored, gets, IN_FLIGHT).await;
        let label = format!("{} get {size}, QUIC client", cluster.label);
        results.record(&key("quic", "get"), &label, IN_FLIGHT, sample);
    }
    if scale.wants(&key("http", "get")) {
        let (f, hashes) = (fronts.clone(), Arc::new(stored));
        let sample = measure(gets, IN_FLIGHT, scale.budget, blob_bytes as u64, move |i| {
            let (f, hash) = (f.clone(), hashes[i % hashes.len()]);
            async move {
                let r = f
                    .request(i, "GET", &format!("/v1/blobs/{hash}"), Bytes::new())
                    .await?;
                if r.status != 200 || r.body.len() != blob_bytes {
                    return Err(format!(
                        "get answered {} with {} bytes",
                        r.status,
                        r.body.len()
                    ));
                }
                Ok(())
            }
        })
        .await;
        let label = format!("{} get {size}, HTTP fronts", cluster.label);
        results.record(&key("http", "get"), &label, IN_FLIGHT, sample);
    }
}

/// The S3 mode: for 4 KiB (one at a time, for latency), 4 MiB (`IN_FLIGHT` at once, for
/// throughput) and 64 MiB objects (`LARGE_IN_FLIGHT` at once), puts then gets through the HTTP
/// fronts and through the S3 fronts, in the same round.
async fn s3_round(
    scale: &Scale,
    cluster: &Cluster,
    fronts: &Arc<Fronts>,
    s3: &Arc<Fronts>,
    results: &mut Results,
) {
    if cluster.error.is_some() {
        return;
    }
    for (blob_bytes, in_flight) in [
        (4 * KIB, 1),
        (4 * MIB, IN_FLIGHT),
        (64 * MIB, LARGE_IN_FLIGHT),
    ] {
        let size = size_label(blob_bytes);
        let key = |path: &str, op: &str| {
            format!(
                "{}_{path}_{op}_{}_x{in_flight}",
                cluster.key,
                size_key(blob_bytes)
            )
        };
        let tail_key = format!(
            "{}_s3_get_{}_x{GET_TAIL_IN_FLIGHT}",
            cluster.key,
            size_key(blob_bytes)
        );
        let wanted = [
            ("http", "put"),
            ("http_named", "put"),
            ("http", "get"),
            ("s3", "put"),
            ("s3", "get"),
        ]
        .iter()
        .any(|&(path, op)| scale.wants(&key(path, op)))
            || (blob_bytes == 4 * MIB && scale.wants(&tail_key));
        if !wanted {
            continue; // no blobs to make (64 MiB ones take seconds)
        }
        let puts = scale.op_count(blob_bytes, if in_flight == 1 { 0 } else { 1 });
        let gets = scale.op_count(blob_bytes, if in_flight == 1 { 2 } else { 3 });
        let round = unique_id();
        let (blobs, hashes) = fresh_blobs(blob_bytes, puts);
        let mut stored_http = Vec::new();
        if scale.wants(&key("http", "put")) || scale.wants(&key("http", "get")) {
            let (f, b) = (fronts.clone(), blobs.clone());
            let sample = measure(puts, in_flight, scale.budget, blob_bytes as u64, move |i| {
                let (f, blob) = (f.clone(), b[i].clone());
                async move {
                    let r = f.request(i, "PUT", "/v1/blobs", blob).await?;
                    match r.status {
                        200 | 201 => Ok(()),
                        s => Err(format!("put answered {s}")),
                    }
                }
            })
            .await;
            stored_http.extend(sample.succeeded.iter().map(|&i| hashes[i]));
            let label = format!("{} put {size}, HTTP fronts", cluster.label);
            results.record(&key("http", "put"), &label, in_flight, sample);
        }
        // The same sizes through the HTTP fronts with each request naming its blob
        // (`PUT /v1/blobs/{hash}`): a body over the in-memory bound goes to the cluster as it
        // arrives instead of to a spool file first. Blobs of their own, as for S3 below.
        if scale.wants(&key("http_named", "put")) {
            let (b, h) = fresh_blobs(blob_bytes, puts);
            let f = fronts.clone();
            let sample = measure(puts, in_flight, scale.budget, blob_bytes as u64, move |i| {
                let (f, blob, hash) = (f.clone(), b[i].clone(), h[i]);
                async move {
                    let path = format!("/v1/blobs/{hash}");
                    match f.request(i, "PUT", &path, blob).await?.status {
                        200 | 201 => Ok(()),
                        s => Err(format!("put answered {s}")),
                    }
                }
            })
            .await;
            let label = format!("{} put {size} naming it, HTTP fronts", cluster.label);
            results.record(&key("http_named", "put"), &label, in_flight, sample);
        }
        // The same bytes again through S3: dedup would make its puts cheaper, so S3 stores
        // blobs of its own (the same sizes, other contents).
        let (s3_blobs, _) = fresh_blobs(blob_bytes, puts);
        let mut stored_s3 = Vec::new();
        if scale.wants(&key("s3", "put"))
            || scale.wants(&key("s3", "get"))
            || (blob_bytes == 4 * MIB && scale.wants(&tail_key))
        {
            let (c, b) = (s3.clone(), s3_blobs.clone());
            let sample = measure(puts, in_flight, scale.budget, blob_bytes as u64, move |i| {
                let (c, blob) = (c.clone(), b[i].clone());
                async move {
                    let path = format!("/{S3_BENCH_BUCKET}/{round}/object-{i}");
                    let r = c.request(i, "PUT", &path, blob).await?;
                    match r.status {
                        200 => Ok(()),
                        s => Err(format!(
                            "PutObject answered {s}: {}",
                            String::from_utf8_lossy(&r.body)
                        )),
                    }
                }
            })
            .await;
            stored_s3.extend(sample.succeeded.iter().copied());
            let label = format!("{} PutObject {size}, S3 fronts", cluster.label);
            results.record(&key("s3", "put"), &label, in_flight, sample);
        }
        if !stored_http.is_empty() && scale.wants(&key("http", "get")) {
            let (f, hashes) = (fronts.clone(), Arc::new(stored_http));
            let sample = measure(gets, in_flight, scale.budget, blob_bytes as u64, move |i| {
                let (f, hash) = (f.clone(), hashes[i % hashes.len()]);
                async move {
                    let r = f
                        .request(i, "GET", &format!("/v1/blobs/{hash}"), Bytes::new())
                        .await?;
                    if r.status != 200 || r.body.len() != blob_bytes {
                        return Err(format!(
                            "get answered {} with {} bytes",
                            r.status,
                            r.body.len()
                        ));
                    }
                    Ok(())
                }
            })
            .await;
            let label = format!("{} get {size}, HTTP fronts", cluster.label);
            results.record(&key("http", "get"), &label, in_flight, sample);
        }
        if !stored_s3.is_empty() {
            let objects = Arc::new(stored_s3);
            // 4 MiB GetObject's tail is judged at `GET_TAIL_IN_FLIGHT`, as well as at the
            // throughput runs' count.
            let tail = (blob_bytes == 4 * MIB).then_some(GET_TAIL_IN_FLIGHT);
            for in_flight in std::iter::once(in_flight).chain(tail) {
                let key = format!(
                    "{}_s3_get_{}_x{in_flight}",
                    cluster.key,
                    size_key(blob_bytes)
                );
                if !scale.wants(&key) {
                    continue;
                }
                let s3_gets = S3Gets {
                    s3: s3.clone(),
                    objects: objects.clone(),
                    round,
                    blob_bytes,
                };
                let sample = s3_gets.measure(scale, gets, in_flight).await;
                let label = format!("{} GetObject {size}, S3 fronts", cluster.label);
                results.record(&key, &label, in_flight, sample);
            }
        }
    }
}

/// GetObject of the objects a round stored through the S3 fronts, cycling through them.
struct S3Gets {
    s3: Arc<Fronts>,
    objects: Arc<Vec<usize>>,
    round: u64,
    blob_bytes: usize,
}

impl S3Gets {
    async fn measure(self, scale: &Scale, count: usize, in_flight: usize) -> Sample {
        let this = Arc::new(self);
        let bytes = this.blob_bytes as u64;
        measure(count, in_flight, scale.budget, bytes, move |i| {
            let this = this.clone();
            async move {
                let object = this.objects[i % this.objects.len()];
                let path = format!("/{S3_BENCH_BUCKET}/{}/object-{object}", this.round);
                let r = this.s3.request(i, "GET", &path, Bytes::new()).await?;
                if r.status != 200 || r.body.len() != this.blob_bytes {
                    return Err(format!(
                        "GetObject answered {} with {} bytes",
                        r.status,
                        r.body.len()
                    ));
                }
                Ok(())
            }
        })
        .await
    }
}

/// One round of a cluster's cases: for each blob size, sequential then concurrent puts, then
/// sequential then concurrent gets of the blobs just stored.
async fn cluster_round(scale: &Scale, cluster: &Cluster, results: &mut Results) {
    if cluster.error.is_some() {
        return;
    }
    for blob_bytes in BLOB_SIZES {
        let size = size_label(blob_bytes);
        let key = |op: &str, in_flight: usize| {
            format!("{}_{op}_{}_x{in_flight}", cluster.key, size_key(blob_bytes))
        };
        let mut stored = Vec::new();
        for (which, in_flight) in [(0, 1), (1, IN_FLIGHT)] {
            if !scale.wants(&key("put", in_flight)) {
                continue;
            }
            let count = scale.op_count(blob_bytes, which);
            let (sample, hashes) =
                measure_puts(scale, &cluster.client, blob_bytes, count, in_flight).await;
            stored.extend(hashes);
            results.record(
                &key("put", in_flight),
                &format!("{} put {size}", cluster.label),
                in_flight,
                sample,
            );
        }
        let gets = [(2, 1), (3, IN_FLIGHT)]
            .map(|(which, in_flight)| (which, in_flight, scale.wants(&key("get", in_flight))));
        if stored.is_empty() && gets.iter().any(|g| g.2) {
            // Only the gets are measured: store something for them to read.
            let count = scale.op_count(blob_bytes, 1);
            let (_, hashes) =
                measure_puts(scale, &cluster.client, blob_bytes, count, IN_FLIGHT).await;
            stored = hashes;
        }
        if stored.is_empty() {
            continue;
        }
        for (which, in_flight, wanted) in gets {
            if !wanted {
                continue;
            }
            let count = scale.op_count(blob_bytes, which);
            let sample = measure_gets(
                scale,
                &cluster.client,
                blob_bytes,
                &stored,
                count,
                in_flight,
            )
            .await;
            results.record(
                &key("get", in_flight),
                &format!("{} get {size}", cluster.label),
                in_flight,
                sample,
            );
        }
    }
}

/// The baseline's measurements (`RawQuic` itself is shared with the healing benchmark).
impl RawQuic {
    /// `count` streams of `BULK_STREAM_BYTES`, `BULK_STREAMS` at a time.
    async fn bulk_streams(&self, scale: &Scale) -> Sample {
        let payload = Bytes::from(blob(BULK_STREAM_BYTES, 0xb0));
        let conn = self.conn.clone();
        let count = BULK_STREAMS * scale.bulk_waves;
        measure(
            count,
            BULK_STREAMS,
            scale.budget,
            BULK_STREAM_BYTES as u64,
            move |_| {
                let (conn, payload) = (conn.clone(), payload.clone());
                async move {
                    sink(&conn, [payload]).await;
                    Ok(())
                }
            },
        )
        .await
    }

    /// One stream carrying `one_stream_mib` MiB, sent 1 MiB at a time.
    async fn one_stream(&self, scale: &Scale) -> Sample {
        let payload = Bytes::from(blob(MIB, 0xb1));
        let conn = self.conn.clone();
        let chunks = scale.one_stream_mib;
        let total_bytes = (chunks * MIB) as u64;
        measure(1, 1, scale.budget, total_bytes, move |_| {
            let (conn, payload) = (conn.clone(), payload.clone());
            async move {
                sink(&conn, std::iter::repeat_n(payload, chunks)).await;
                Ok(())
            }
        })
        .await
    }

    /// `count` requests answered with `RESPONSE_BYTES`, each on a new stream, `in_flight` at a
    /// time.
    async fn requests(&self, scale: &Scale, count: usize, in_flight: usize) -> Sample {
        let conn = self.conn.clone();
        measure(
            count,
            in_flight,
            scale.budget,
            RESPONSE_BYTES as u64,
            move |_| {
                let conn = conn.clone();
                async move {
                    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
                    let mut request = [0u8; REQUEST_BYTES];
                    request[0] = STREAM_REQUEST;
                    send.write_all(&request).await.expect("send request");
                    let _ = send.finish();
                    let response = recv
                        .read_to_end(RESPONSE_BYTES)
                        .await
                        .expect("read response");
                    assert_eq!(response.len(), RESPONSE_BYTES, "short response");
                    Ok(())
                }
            },
        )
        .await
    }
}

/// One round of the baseline's cases.
async fn raw_round(scale: &Scale, raw: &RawQuic, results: &mut Results) {
    let key = format!("raw_bulk_1MiB_streams_x{BULK_STREAMS}");
    if scale.wants(&key) {
        let sample = raw.bulk_streams(scale).await;
        results.record(
            &key,
            &format!("raw QUIC bulk, {BULK_STREAMS} x 1 MiB streams"),
            BULK_STREAMS,
            sample,
        );
    }
    if scale.wants("raw_bulk_one_stream") {
        let sample = raw.one_stream(scale).await;
        results.record(
            "raw_bulk_one_stream",
            &format!("raw QUIC bulk, one {} MiB stream", scale.one_stream_mib),
            1,
            sample,
        );
    }
    for (count, in_flight) in [(scale.rr_sequential, 1), (scale.rr_concurrent, IN_FLIGHT)] {
        let key = format!("raw_request_4KiB_x{in_flight}");
        if !scale.wants(&key) {
            continue;
        }
        let sample = raw.requests(scale, count, in_flight).await;
        results.record(&key, "raw QUIC 4 KiB request/response", in_flight, sample);
    }
}

/// A goal the figures are judged against.
struct Goal {
    text: String,
    target: String,
    value: Option<f64>,
    /// Per-round values the median came from (empty when the goal is on a single figure).
    rounds: Vec<f64>,
    met: Option<bool>,
}

impl Goal {
    fn json(&self) -> Value {
        json!({
            "goal": self.text,
            "target": self.target,
            "value": self.value,
            "per_round": self.rounds,
            "met": self.met,
        })
    }
}

fn ratio_goal(text: &str, target: f64, rounds: Vec<f64>) -> Goal {
    let value = (!rounds.is_empty()).then(|| median(&mut rounds.clone()));
    Goal {
        text: text.to_string(),
        target: format!(">= {target:.2}"),
        value,
        rounds,
        met: value.map(|v| v >= target),
    }
}

fn ratio_at_most_goal(text: &str, target: f64, rounds: Vec<f64>) -> Goal {
    let value = (!rounds.is_empty()).then(|| median(&mut rounds.clone()));
    Goal {
        text: text.to_string(),
        target: format!("<= {target:.2}"),
        value,
        rounds,
        met: value.map(|v| v <= target),
    }
}

fn below_goal(text: &str, target: f64, value: Option<f64>) -> Goal {
    Goal {
        text: text.to_string(),
        target: format!("< {target}"),
        value,
        rounds: Vec::new(),
        met: value.map(|v| v < target),
    }
}

fn goals(results: &Results) -> Vec<Goal> {
    let mb = Sample::mb_per_s as fn(&Sample) -> f64;
    let ops = Sample::ops_per_s as fn(&Sample) -> f64;
    let put_4m = results.per_round_ratios(
        (&format!("factor3_put_4MiB_x{IN_FLIGHT}"), mb),
        (&format!("raw_bulk_1MiB_streams_x{BULK_STREAMS}"), |s| {
            s.mb_per_s() / 3.0
        }),
    );
    let http_named_put_4m = results.per_round_ratios(
        (&format!("factor3_http_named_put_4MiB_x{IN_FLIGHT}"), mb),
        (&format!("raw_bulk_1MiB_streams_x{BULK_STREAMS}"), |s| {
            s.mb_per_s() / 3.0
        }),
    );
    let put_4k = results.case("factor3_put_4KiB_x1");
    let get_4k = results.per_round_ratios(
        (&format!("factor3_get_4KiB_x{IN_FLIGHT}"), ops),
        (&format!("raw_request_4KiB_x{IN_FLIGHT}"), ops),
    );
    let http = |op: &str| {
        let key = |path: &str| format!("factor3_{path}_{op}_1MiB_x{IN_FLIGHT}");
        results.per_round_ratios((&key("http"), mb), (&key("quic"), mb))
    };
    let s3 = |op: &str| {
        let key = |path: &str| format!("factor3_{path}_{op}_4MiB_x{IN_FLIGHT}");
        results.per_round_ratios((&key("s3"), mb), (&key("http"), mb))
    };
    let p50 = |s: &Sample| s.percentile_ms(0.5);
    let s3_put_4k = results.per_round_ratios(
        ("factor3_s3_put_4KiB_x1", p50),
        ("factor3_http_put_4KiB_x1", p50),
    );
    let s3_get_4m_tail = {
        let key = format!("factor3_s3_get_4MiB_x{GET_TAIL_IN_FLIGHT}");
        results.per_round_ratios((&key, |s| s.percentile_ms(0.99)), (&key, p50))
    };
    vec![
        ratio_goal(
            &format!(
                "(v) 4 MiB PutObject, factor 3, {IN_FLIGHT} in flight: MB/s through the S3 \
                 fronts over MB/s through the HTTP fronts"
            ),
            GOAL_S3_FRACTION_OF_HTTP,
            s3("put"),
        ),
        ratio_goal(
            &format!(
                "(v) 4 MiB GetObject, factor 3, {IN_FLIGHT} in flight: MB/s through the S3 \
                 fronts over MB/s through the HTTP fronts"
            ),
            GOAL_S3_FRACTION_OF_HTTP,
            s3("get"),
        ),
        ratio_at_most_goal(
            "(v) 4 KiB PutObject, factor 3, sequential: p50 through the S3 fronts over p50 \
             through the HTTP fronts",
            GOAL_S3_PUT_4KIB_P50_MULTIPLE_OF_HTTP,
            s3_put_4k,
        ),
        ratio_at_most_goal(
            &format!("(v) 4 MiB GetObject, factor 3, {GET_TAIL_IN_FLIGHT} in flight: p99 over p50"),
            GOAL_S3_GET_4MIB_P99_MULTIPLE_OF_P50,
            s3_get_4m_tail,
        ),
        ratio_goal(
            &format!(
                "(iv) 1 MiB puts, factor 3, {IN_FLIGHT} in flight: MB/s through the HTTP fronts \
                 over MB/s through the QUIC client"
            ),
            GOAL_HTTP_FRACTION_OF_QUIC,
            http("put"),
        ),
        ratio_goal(
            &format!(
                "(iv) 1 MiB gets, factor 3, {IN_FLIGHT} in flight: MB/s through the HTTP fronts \
                 over MB/s through the QUIC client"
            ),
            GOAL_HTTP_FRACTION_OF_QUIC,
            http("get"),
        ),
        ratio_goal(
            &format!(
                "(i) 4 MiB puts, factor 3, {IN_FLIGHT} in flight: MB/s over (raw QUIC \
                 {BULK_STREAMS}-stream MB/s / 3)"
            ),
            GOAL_PUT_4MIB_FRACTION_OF_RAW_THIRD,
            put_4m,
        ),
        ratio_goal(
            &format!(
                "(i) 4 MiB puts naming each blob through the HTTP fronts, factor 3, \
                 {IN_FLIGHT} in flight: MB/s over (raw QUIC {BULK_STREAMS}-stream MB/s / 3)"
            ),
            GOAL_PUT_4MIB_FRACTION_OF_RAW_THIRD,
            http_named_put_4m,
        ),
        below_goal(
            "(ii) 4 KiB puts, factor 3 quorum 2, sequential: p50 ms",
            GOAL_PUT_4KIB_P50_MS,
            put_4k.map(Case::p50_ms),
        ),
        below_goal(
            "(ii) 4 KiB puts, factor 3 quorum 2, sequential: p99 ms",
            GOAL_PUT_4KIB_P99_MS,
            put_4k.map(Case::p99_ms),
        ),
        ratio_goal(
            &format!(
                "(iii) 4 KiB gets, factor 3, {IN_FLIGHT} in flight: ops/s over raw QUIC 4 KiB \
                 request/response ops/s"
            ),
            GOAL_GET_4KIB_FRACTION_OF_RAW,
            get_4k,
        ),
    ]
}

fn main() {
    let scale = Scale::from_env();
    let out = target_dir().join("cairn-bench");
    // Leftovers of an interrupted run.
    let scratch = out.join("cluster-tmp");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).expect("remove old scratch directory");
    }
    std::fs::create_dir_all(&scratch).expect("create scratch directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let load_at_start = load_average();
    let started = Instant::now();
    let (results, clusters) = runtime.block_on(run(&scale, &scratch));
    let elapsed_s = started.elapsed().as_secs_f64();
    let load_at_end = load_average();
    drop(runtime);
    let _ = std::fs::remove_dir_all(&scratch);

    let goals = goals(&results);
    print_table(
        &scale,
        &results,
        &goals,
        (load_at_start, load_at_end),
        elapsed_s,
    );
    if scale.measuring {
        let summary = json!({
            "quick": scale.quick,
            "rounds": scale.rounds,
            "in_flight": IN_FLIGHT,
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "seconds": elapsed_s,
            "load_average_1_5_15_min": {"at_start": load_at_start, "at_end": load_at_end},
            "clusters": clusters,
            "units": {
                "mb_per_s": "10^6 bytes per second",
                "ops_per_s": "operations completed over the measurement's wall-clock time",
                "p50_ms, p99_ms": "nearest-rank percentiles of one round's operation latencies",
                "median_of_rounds": "the median over rounds of each round's figure",
                "cpu_cores": "process CPU time over wall-clock time: every node, the client \
                              and the baseline run in this process",
                "goal ratios": "the median over rounds of the ratio within each round",
            },
            "cases": results.cases.iter().map(Case::json).collect::<Vec<_>>(),
            "not_measured": results.not_measured,
            "goals": goals.iter().map(Goal::json).collect::<Vec<_>>(),
        });
        // A partial or quick run must not replace the summary of a full one.
        let name = if scale.only.is_some() {
            "cluster-partial.json"
        } else if scale.quick {
            "cluster-quick.json"
        } else {
            "cluster.json"
        };
        let path = out.join(name);
        let text = serde_json::to_string_pretty(&summary).expect("encode summary");
        std::fs::write(&path, text + "\n").expect("write summary");
        println!("summary written to {}", path.display());
    }
}

/// Starts both clusters and the baseline, runs every round, shuts everything down.
async fn run(scale: &Scale, scratch: &Path) -> (Results, Value) {
    let base_port = free_base_port(PORT_SEARCH_START, 2 * NODE_COUNT);
    let dir = |name: &str| -> TempDir {
        tempfile::Builder::new()
            .prefix(name)
            .tempdir_in(scratch)
            .expect("create cluster directory")
    };
    let (dir3, dir1) = (dir("factor3-"), dir("factor1-"));
    let mut factor3 = Cluster::start(dir3.path(), base_port, 3, 2).await;
    let mut factor1 = Cluster::start(dir1.path(), base_port + NODE_COUNT as u16, 1, 1).await;
    let raw = RawQuic::start(&factor3.files).await;

    // Connections and handshakes happen here, not in the first measurement.
    factor3.warm_up(4 * NODE_COUNT).await;
    factor1.warm_up(4 * NODE_COUNT).await;
    let _ = raw.requests(scale, 64, IN_FLIGHT).await;
    let _ = raw.bulk_streams(scale).await;
    let fronts = Arc::new(Fronts::new(&factor3));
    let s3 = Arc::new(Fronts::s3(&factor3));
    let created = s3
        .request(0, "PUT", &format!("/{S3_BENCH_BUCKET}"), Bytes::new())
        .await
        .map(|r| r.status);
    if created != Ok(200) {
        factor3.error = Some(format!("cannot create the S3 mode's bucket: {created:?}"));
    }

    let mut results = Results::default();
    for round in 0..scale.rounds {
        let began = Instant::now();
        raw_round(scale, &raw, &mut results).await;
        cluster_round(scale, &factor3, &mut results).await;
        cluster_round(scale, &factor1, &mut results).await;
        http_round(scale, &factor3, &fronts, &mut results).await;
        s3_round(scale, &factor3, &fronts, &s3, &mut results).await;
        eprintln!(
            "round {} of {} done in {:.1} s",
            round + 1,
            scale.rounds,
            began.elapsed().as_secs_f64()
        );
    }
    let clusters = json!([factor3.json(), factor1.json()]);
    let not_measured = [&factor3, &factor1]
        .iter()
        .filter_map(|c| Some(format!("{}: not measured: {}", c.label, c.error.as_ref()?)))
        .collect();
    raw.shutdown().await;
    factor3.shutdown().await;
    factor1.shutdown().await;
    drop((dir3, dir1));
    results.not_measured = not_measured;
    (results, clusters)
}

/// Operations per second: whole numbers, with decimals only for slow cases.
fn fmt_rate(ops_per_s: f64) -> String {
    if ops_per_s < 100.0 {
        format!("{ops_per_s:.1}")
    } else {
        format!("{ops_per_s:.0}")
    }
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn print_table(
    scale: &Scale,
    results: &Results,
    goals: &[Goal],
    (load_at_start, load_at_end): (Option<[f64; 3]>, Option<[f64; 3]>),
    elapsed_s: f64,
) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let three = |v: Option<[f64; 3]>| {
        v.map_or_else(
            || "n/a".to_string(),
            |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
        )
    };
    println!();
    println!(
        "Cairn cluster vs raw QUIC on 127.0.0.1 ({} run, median of {} round(s), {:.0} s): \
         {NODE_COUNT} nodes in {ZONE_COUNT} zones, client in {CLIENT_ZONE}, all in one process",
        if scale.quick { "QUICK" } else { "full" },
        scale.rounds,
        elapsed_s,
    );
    println!(
        "load average 1/5/15 min ({cores} cores): at start {}, at end {}",
        three(load_at_start),
        three(load_at_end)
    );
    println!(
        "{:<42} {:>9} {:>10} {:>9} {:>9} {:>9} {:>5} {:>6}  ops/s per round",
        "case", "in flight", "ops/s", "MB/s", "p50 ms", "p99 ms", "cpu", "failed"
    );
    for case in &results.cases {
        let per_round: Vec<String> = case
            .rounds
            .iter()
            .map(|s| fmt_rate(s.ops_per_s()))
            .collect();
        println!(
            "{:<42} {:>9} {:>10} {:>9.1} {:>9.3} {:>9.3} {:>5} {:>6}  {}",
            case.label,
            case.in_flight,
            fmt_rate(case.ops_per_s()),
            case.mb_per_s(),
            case.p50_ms(),
            case.p99_ms(),
            fmt_opt(case.cpu_cores(), 2),
            case.failures(),
            per_round.join(" "),
        );
    }
    for case in &results.cases {
        if let Some(first) = case.rounds.iter().find_map(|s| s.first_failure.as_ref()) {
            println!("{}: {} failed; first: {first}", case.label, case.failures());
        }
    }
    for line in &results.not_measured {
        println!("{line}");
    }
    println!("(cpu: cores this process kept busy, of {cores})");
    println!();
    println!("{:<92} {:>8} {:>8}  result", "goal", "value", "target");
    for g in goals {
        let rounds = if g.rounds.is_empty() {
            String::new()
        } else {
            let r: Vec<String> = g.rounds.iter().map(|v| format!("{v:.2}")).collect();
            format!("  (per round: {})", r.join(" "))
        };
        println!(
            "{:<92} {:>8} {:>8}  {}{rounds}",
            g.text,
            fmt_opt(g.value, 3),
            g.target,
            match g.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            },
        );
    }
}
