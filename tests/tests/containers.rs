//! Cairn in containers: the six-node cluster of `docker/compose.yml` (three zones, factor 3,
//! write quorum 2, the image `scripts/image` builds), written to through the nodes' HTTP fronts
//! while, one after the other, a node is stopped, a node is killed, a node is paused, a whole
//! zone is cut off the network (and comes back with new addresses, found again through the
//! layout's host names) and every node is restarted in turn. Writes go on during every
//! fault, and every write through a front in a live zone must succeed. After each fault, with
//! it still active and again once healed, every acknowledged blob must read back byte for byte
//! through a front of every zone that is up; once healed, every acknowledged blob must be held
//! by all of its replicas again within `REPLICATION_TIMEOUT`. Writes that fail are reported
//! with the phase and the test goes on (they were not acknowledged, so the checks stay valid);
//! it fails at the end with all of them. A read or replication check that fails stops it.
//! On failure the whole node logs go to `target/tmp/<project>-containers.log`.
//!
//! The second test is a rolling upgrade: the cluster starts on the previous release's image
//! (`CAIRN_PREVIOUS_IMAGE`), and each node is recreated from the current one in turn, with its
//! volume and address, while writers and readers go on through the HTTP fronts, the S3 fronts
//! and the native client. No operation may fail but one cut short by its own node's
//! replacement (retried elsewhere; the native client retries by itself, so none of its may
//! fail), nothing written may be missing afterwards, and `cairn status` must show the new
//! version and protocol on exactly the nodes replaced so far. Afterwards a key managed online
//! (new in this version) writes through S3, and one node rolled back to the previous image
//! serves every blob and object. `scripts/upgrade-test` runs it.
//!
//! Needs Docker and docker-compose 1.29; `scripts/container-test` builds the image and runs the
//! first test.
//! Environment:
//!   CAIRN_COMPOSE_FILE     the compose file (default `docker/compose.yml`)
//!   CAIRN_COMPOSE_PROJECT  the compose project name (default `cairntest<pid>`)
//!   CAIRN_CONTAINER_BLOBS  blobs written before the faults (default 2000)
//!   CAIRN_IMAGE            the image the compose file runs (default `cairn:dev`)
//!   CAIRN_PREVIOUS_IMAGE   the previous release's image (the upgrade test)
//!   CAIRN_SUBNET           the network's /24 as three octets (default: the first of
//!                          10.231.7.0/24, 10.231.8.0/24, ... no Docker network overlaps)
//! The cluster's containers, network and volumes are removed at the end, passed or failed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_node::config::NodeConfig;
use cairn_tests::http::{HttpClient, HttpResponse};
use parking_lot::Mutex;

/// The whole test, start and clean-up excluded, must end within this.
const TEST_DEADLINE: Duration = Duration::from_secs(540);
/// How long the nodes may take to answer /readyz after `up`.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a restarted, resumed or reconnected node may take to answer /readyz.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cluster may take to put every copy back after a fault is healed.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a fault stays in place, writes going on, before the reads are checked.
const FAULT_HOLD: Duration = Duration::from_secs(4);
/// How long a fault lasts at least: past the failure detector's default `down_after_ms` and the
/// QUIC idle timeout (10 s each), so the others see the node down and its connections dead.
const FAULT_MIN: Duration = Duration::from_secs(12);
/// Writes before a fault starts and after it is healed, in each phase.
const LOAD_MARGIN: Duration = Duration::from_secs(1);
/// Blobs written before the faults unless CAIRN_CONTAINER_BLOBS says otherwise.
const INITIAL_BLOBS_DEFAULT: usize = 2_000;
/// Concurrent writers of the initial load.
const INITIAL_WRITERS: usize = 8;
/// Concurrent writers during the faults, and the pause each takes between two puts.
const FAULT_WRITERS: usize = 2;
const FAULT_WRITE_PAUSE: Duration = Duration::from_millis(25);
/// Concurrent requests of the read and replication checks.
const CHECK_CONCURRENCY: usize = 8;
/// Attempts at each read of a check (a failed attempt is reported even when a retry succeeds).
const READ_ATTEMPTS: usize = 3;
/// Time one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HAProxy's health checks: every `HAPROXY_CHECK_MS`, a server out after `HAPROXY_FALL`
/// failed ones; a connection to a server that does not answer in `HAPROXY_CONNECT_MS` is
/// retried on another.
const HAPROXY_CHECK_MS: u64 = 500;
const HAPROXY_FALL: u32 = 2;
const HAPROXY_CONNECT_MS: u64 = 1_000;
/// Clients writing and reading through HAProxy, and for how long before and after the kill.
const HAPROXY_CLIENTS: usize = 4;
const HAPROXY_LOAD_BEFORE: Duration = Duration::from_secs(3);
const HAPROXY_LOAD_AFTER: Duration = Duration::from_secs(8);
/// Seed of the blob contents.
const SEED: u64 = 0xC41D_2026_0001;

// ---------------------------------------------------------------------------------------------
// Docker and docker-compose

/// Runs a command to completion: its stdout, or a message with its stderr.
fn run_blocking(program: &str, args: &[String]) -> Result<String, String> {
    run_blocking_with(program, args, &[])
}

/// `run_blocking` with environment variables set for the command.
fn run_blocking_with(
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// `run_blocking` off the runtime's worker threads, so the load keeps going meanwhile.
async fn run(program: &'static str, args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || run_blocking(program, &args))
        .await
        .expect("command thread")
}

async fn docker(args: &[&str]) -> String {
    let args = args.iter().map(|s| s.to_string()).collect();
    run("docker", args).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A compose project.
#[derive(Clone)]
struct Compose {
    project: String,
    file: PathBuf,
    /// Its network's /24 as the first three octets (`CAIRN_SUBNET` in the compose file), shared
    /// by every clone: chosen by `first_up`.
    subnet: Arc<Mutex<String>>,
}

impl Compose {
    fn args(&self, rest: &[&str]) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            self.project.clone(),
            "-f".to_string(),
            self.file.display().to_string(),
        ];
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    }

    /// `docker-compose` with the services' image set to `image` (`CAIRN_IMAGE`).
    async fn run_as(&self, image: &str, rest: &[&str]) -> Result<String, String> {
        let args = self.args(rest);
        let env = vec![
            ("CAIRN_IMAGE".to_string(), image.to_string()),
            ("CAIRN_SUBNET".to_string(), self.subnet.lock().clone()),
        ];
        tokio::task::spawn_blocking(move || run_blocking_with("docker-compose", &args, &env))
            .await
            .expect("command thread")
    }

    /// The project's first `up`, the one that makes its network: on `CAIRN_SUBNET` if that is
    /// set, else on the first /24 of 10.231.0.0/16 from 10.231.7 that no Docker network
    /// overlaps (another project or run may hold one), tried again on the next free one when
    /// another run took it meanwhile.
    async fn first_up(&self, image: &str, rest: &[&str]) -> String {
        let fixed = std::env::var("CAIRN_SUBNET").ok();
        let mut tried = Vec::new();
        loop {
            let subnet = match &fixed {
                Some(subnet) => subnet.clone(),
                None => free_subnet(&tried).await,
            };
            *self.subnet.lock() = subnet.clone();
            match self.run_as(image, rest).await {
                Ok(out) => {
                    eprintln!("compose network on {subnet}.0/24");
                    return out;
                }
                Err(e)
                    if fixed.is_none()
                        && e.contains("Pool overlaps")
                        && tried.len() + 1 < SUBNET_ATTEMPTS_MAX =>
                {
                    eprintln!("{subnet}.0/24 was taken meanwhile; trying the next free one");
                    let _ = self.run_as(image, &["down", "-v", "-t", "5"]).await;
                    tried.push(subnet);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.project)
    }

    /// The id of the (only) container of a service, stopped or running.
    async fn container(&self, service: &str) -> String {
        let label = format!("label=com.docker.compose.service={service}");
        self.only_id(&["ps", "-aq"], &label).await
    }

    /// The id of the project's network `name`.
    async fn network(&self, name: &str) -> String {
        let label = format!("label=com.docker.compose.network={name}");
        self.only_id(&["network", "ls", "-q"], &label).await
    }

    /// The one id that the listing `list` gives for this project and `label`.
    async fn only_id(&self, list: &[&str], label: &str) -> String {
        let project = self.label();
        let mut args = list.to_vec();
        args.extend(["--no-trunc", "--filter", &project, "--filter", label]);
        let out = docker(&args).await;
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "{label} in project {}: {ids:?}", self.project);
        ids[0].to_string()
    }

    fn down_blocking(&self) -> Result<String, String> {
        run_blocking(
            "docker-compose",
            &self.args(&["down", "-v", "--remove-orphans", "-t", "5"]),
        )
    }
}

/// Takes a compose project down with its volumes when dropped, by a panic too.
struct Cleanup(Compose);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let compose = &self.0;
        if std::thread::panicking() {
            // The whole logs to a file, the last lines of each node here.
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{}-containers.log", compose.project));
            match run_blocking("docker-compose", &compose.args(&["logs", "--no-color"])) {
                Ok(logs) => match std::fs::write(&path, &logs) {
                    Ok(()) => eprintln!("the node logs are in {}", path.display()),
                    Err(e) => eprintln!("{}: {e}", path.display()),
                },
                Err(e) => eprintln!("no logs: {e}"),
            }
            if let Ok(tail) = run_blocking(
                "docker-compose",
                &compose.args(&["logs", "--no-color", "--tail", "15"]),
            ) {
                eprintln!("--- last lines of the node logs ---\n{tail}");
            }
        }
        // A paused container would hold `down` up; resume any first.
        if let Ok(paused) = run_blocking(
            "docker",
            &[
                "ps".into(),
                "-q".into(),
                "--filter".into(),
                compose.label(),
                "--filter".into(),
                "status=paused".into(),
            ],
        ) {
            for id in paused.split_whitespace() {
                let _ = run_blocking("docker", &["unpause".into(), id.into()]);
            }
        }
        match compose.down_blocking() {
            Ok(_) => eprintln!("compose project {} removed", compose.project),
            Err(e) => eprintln!("cleaning up: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A node's HTTP front, every request bounded in time (a paused node would hold one forever).
/// Its address changes when the node comes back on the network with another one.
#[derive(Clone)]
struct Front {
    client: Arc<Mutex<HttpClient>>,
}

impl Front {
    fn new(addr: SocketAddr, token: Option<&str>) -> Front {
        Front {
            client: Arc::new(Mutex::new(HttpClient::new(addr, token.map(str::to_string)))),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.client.lock().addr
    }

    fn moved_to(&self, ip: std::net::IpAddr) {
        self.client.lock().addr.set_ip(ip);
    }

    /// The answer, or why there was none (a refused connection, a broken one, no answer in
    /// time).
    async fn request(&self, method: &str, path: &str, body: Bytes) -> Result<HttpResponse, String> {
        let client = self.client.lock().clone();
        let addr = client.addr;
        let request = client.request(method, path, &[], body);
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(format!("{method} {path} via {addr}: {e}")),
            Err(_) => Err(format!(
                "{method} {path} via {addr}: no answer within {REQUEST_TIMEOUT:?}"
            )),
        }
    }

    async fn put(&self, path: &str, body: Bytes) -> Result<HttpResponse, String> {
        self.request("PUT", path, body).await
    }

    async fn get(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("GET", path, Bytes::new()).await
    }

    async fn head(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("HEAD", path, Bytes::new()).await
    }

    async fn delete(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("DELETE", path, Bytes::new()).await
    }
}

/// The start of a body, for messages.
fn text(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned()
}

fn json(response: &HttpResponse) -> Result<serde_json::Value, String> {
    serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "status {} with a body that is not JSON ({e}): {:?}",
            response.status,
            text(response)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The cluster

struct Node {
    id: String,
    zone: String,
    /// The container's address on the compose network: fixed by the compose file, and moved
    /// by `moved_ip` when the node comes back from a partition.
    ip: Mutex<String>,
    /// Its container's id (a new one when an upgrade recreates it).
    container: Mutex<String>,
    http: Front,
}

/// A blob the cluster acknowledged.
#[derive(Clone)]
struct Acked {
    hash: String,
    data: Bytes,
}

struct Cluster {
    compose: Compose,
    network: String,
    nodes: Vec<Node>,
    zones: Vec<String>,
    replication_factor: usize,
    token: String,
    acked: Mutex<Vec<Acked>>,
    /// Index of the next blob to write.
    next_blob: AtomicUsize,
    /// Which nodes' fronts writes may use, and a count of its changes.
    fronts: Mutex<(u64, Vec<bool>)>,
    /// What went against the contract during the faults (reported together at the end).
    violations: Mutex<Vec<String>>,
}

/// What the writers of one phase did.
#[derive(Default)]
struct WriteReport {
    acked: usize,
    bytes: usize,
    /// Writes that failed through a front that was to stay up.
    failures: Vec<String>,
    /// Writes cut short because their front was taken out meanwhile (each is retried elsewhere).
    excused: usize,
}

struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriteReport>>,
}

impl Writers {
    /// Tells the writers to stop, and waits for them.
    async fn stop(self) -> WriteReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits for the writers (started with a limit, they stop at it).
    async fn join(self) -> WriteReport {
        let mut total = WriteReport::default();
        for task in self.tasks {
            let r = task.await.expect("writer task");
            total.acked += r.acked;
            total.bytes += r.bytes;
            total.failures.extend(r.failures);
            total.excused += r.excused;
        }
        total
    }
}

/// What a read check saw.
struct ReadReport {
    reads: usize,
    bytes: usize,
    /// Reads whose first attempt failed but a retry succeeded, with the first error of a few.
    retried: usize,
    examples: Vec<String>,
}

/// A deterministic blob: mostly 1-16 KiB, some up to 256 KiB, a few up to 1 MiB.
fn blob(index: usize) -> Bytes {
    let mut state = SEED ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let pick = next() % 100;
    let len = if pick < 90 {
        1024 + next() % (15 * 1024 + 1)
    } else if pick < 97 {
        16 * 1024 + next() % (240 * 1024 + 1)
    } else {
        256 * 1024 + next() % (768 * 1024 + 1)
    } as usize;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&next().to_le_bytes());
    }
    data.truncate(len);
    Bytes::from(data)
}

fn hash_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Runs `f` over `items` with `workers` tasks at once; the results in no particular order.
async fn parallel<T, R, F, Fut>(items: Vec<T>, workers: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send,
{
    let queue = Arc::new(Mutex::new(items.into_iter()));
    let f = Arc::new(f);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, f) = (queue.clone(), f.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let item = queue.lock().next();
                    let Some(item) = item else { break };
                    out.push(f(item).await);
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("check task"));
    }
    results
}

/// Stores `data` through `front`, checking the answer names its hash and length.
async fn put_blob(front: &Front, data: &Bytes) -> Result<(), String> {
    let response = front.put("/v1/blobs", data.clone()).await?;
    if response.status != 201 && response.status != 200 {
        return Err(format!(
            "PUT /v1/blobs ({} bytes) through {}: {} {}",
            data.len(),
            front.addr(),
            response.status,
            text(&response)
        ));
    }
    let json = json(&response)?;
    let expected = hash_hex(data);
    if json["hash"] != expected.as_str() || json["len"] != data.len() as u64 {
        return Err(format!(
            "PUT /v1/blobs through {} answered {json}, expected hash {expected} len {}",
            front.addr(),
            data.len()
        ));
    }
    Ok(())
}

/// Why a read did not return the blob.
enum ReadFailure {
    /// No answer, a cut-off body, or an error status: may pass on a retry.
    Transient(String),
    /// A complete 200 with other bytes: never retried, it breaks the contract at once.
    WrongBytes(String),
}

/// Reads `blob` through `front`, byte for byte.
/// A child process killed (and reaped) when dropped, however the test ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `hash` through `front` once and compares it with `data`.
async fn read_blob_at(front: &Front, hash: &str, data: &[u8]) -> Result<(), String> {
    let path = format!("/v1/blobs/{hash}");
    let response = front.get(&path).await?;
    if response.status != 200 || response.body[..] != data[..] {
        return Err(format!(
            "GET {path} through {}: {}, {} bytes of {}",
            front.addr(),
            response.status,
            response.body.len(),
            data.len()
        ));
    }
    Ok(())
}

async fn read_blob(front: &Front, blob: &Acked) -> Result<(), ReadFailure> {
    let path = format!("/v1/blobs/{}", blob.hash);
    let response = front.get(&path).await.map_err(ReadFailure::Transient)?;
    if response.status != 200 {
        return Err(ReadFailure::Transient(format!(
            "GET {path} through {}: {} {}",
            front.addr(),
            response.status,
            text(&response)
        )));
    }
    if response.body[..] != blob.data[..] {
        return Err(ReadFailure::WrongBytes(format!(
            "GET {path} through {}: {} bytes that differ from the {} written",
            front.addr(),
            response.body.len(),
            blob.data.len()
        )));
    }
    Ok(())
}

/// Whether all `factor` replicas of `hash` hold it, as `front` sees them; or why not.
async fn fully_replicated(front: &Front, hash: &str, factor: usize) -> Result<(), String> {
    let path = format!("/v1/blobs/{hash}/replicas");
    let response = front.get(&path).await?;
    let json = json(&response)?;
    if response.status != 200 {
        return Err(format!(
            "GET {path} through {}: {} {json}",
            front.addr(),
            response.status
        ));
    }
    let replicas = json["replicas"].as_array().cloned().unwrap_or_default();
    let holding = replicas.iter().filter(|r| r["holds"] == true).count();
    if replicas.len() != factor || holding != factor {
        return Err(format!(
            "{hash}: {holding} of {factor} replicas hold it: {json}"
        ));
    }
    Ok(())
}

/// The UTC time of day, as the node logs show it.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day_ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Cluster {
    /// `docker-compose up -d`, the token from the certs volume, every node ready.
    async fn start(compose: Compose) -> Cluster {
        // A project left over by an earlier run of the same name goes first.
        let _ = run("docker-compose", compose.args(&["down", "-v", "-t", "5"])).await;
        let image = std::env::var("CAIRN_IMAGE").unwrap_or_else(|_| "cairn:dev".to_string());
        compose.first_up(&image, &["up", "-d"]).await;
        Cluster::started(compose).await
    }

    /// The cluster of `docker-compose up -d`, once every node is ready.
    async fn started(compose: Compose) -> Cluster {
        let dir = compose
            .file
            .parent()
            .expect("the compose file's directory")
            .join("cluster");
        let layout = cairn_client::load_layout(&dir.join("layout.toml"))
            .expect("docker/cluster/layout.toml");

        // `up` waited for the certs service to finish; the token is in its volume. A scratch
        // image has no `cat`: copy the file out of the stopped container.
        let certs = compose.container("certs").await;
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let token_path = scratch.path().join("http.token");
        docker(&[
            "cp",
            &format!("{certs}:/certs/http.token"),
            &token_path.display().to_string(),
        ])
        .await;
        let token = std::fs::read_to_string(&token_path)
            .expect("the token copied out")
            .trim()
            .to_string();
        assert!(token.len() >= 16, "a short token: {token:?}");

        let network = compose.network("cairn").await;
        let mut nodes = Vec::new();
        for spec in &layout.nodes {
            let config = NodeConfig::load(&dir.join(format!("{}.toml", spec.id)))
                .unwrap_or_else(|e| panic!("{e}"));
            // The layout names the nodes (Docker's DNS resolves them for the nodes, inside the
            // network); the test, outside it, reaches each by the address Docker gave it.
            let container = compose.container(&spec.id).await;
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &container,
            ])
            .await
            .trim()
            .to_string();
            let ip: std::net::IpAddr = ip
                .parse()
                .unwrap_or_else(|e| panic!("{}'s address {ip:?}: {e}", spec.id));
            let http_addr = SocketAddr::new(ip, config.http.listen.port());
            nodes.push(Node {
                id: spec.id.clone(),
                zone: spec.zone.clone(),
                ip: Mutex::new(ip.to_string()),
                container: Mutex::new(container),
                http: Front::new(http_addr, Some(&token)),
            });
        }
        let mut zones: Vec<String> = nodes.iter().map(|n| n.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let count = nodes.len();
        let cluster = Cluster {
            compose,
            network,
            nodes,
            zones,
            replication_factor: layout.replication_factor,
            token,
            acked: Mutex::new(Vec::new()),
            next_blob: AtomicUsize::new(0),
            fronts: Mutex::new((0, vec![true; count])),
            violations: Mutex::new(Vec::new()),
        };
        let all: Vec<usize> = (0..count).collect();
        cluster.wait_ready(&all, START_TIMEOUT).await;
        cluster
    }

    fn index(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn zone_members(&self, zone: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].zone == zone)
            .collect()
    }

    /// Waits until every node of `which` answers /readyz with 200.
    async fn wait_ready(&self, which: &[usize], timeout: Duration) {
        let start = Instant::now();
        for &i in which {
            let node = &self.nodes[i];
            loop {
                let last = match node.http.get("/readyz").await {
                    Ok(r) if r.status == 200 => break,
                    Ok(r) => format!("{} {}", r.status, text(&r)),
                    Err(e) => e,
                };
                assert!(
                    start.elapsed() < timeout,
                    "{} not ready after {timeout:?}: {last}",
                    node.id
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// Lets writes use only the fronts of `allowed`.
    fn set_fronts(&self, allowed: impl Fn(usize) -> bool) {
        let mut fronts = self.fronts.lock();
        fronts.0 += 1;
        fronts.1 = (0..self.nodes.len()).map(allowed).collect();
    }

    /// One front per zone, among the nodes not in `out`.
    fn zone_fronts(&self, out: &[usize]) -> Vec<usize> {
        self.zones
            .iter()
            .filter_map(|zone| {
                self.zone_members(zone)
                    .into_iter()
                    .find(|i| !out.contains(i))
            })
            .collect()
    }

    /// Writes blobs `count` at a time until told to stop or `limit` blobs are acknowledged,
    /// through the allowed fronts in turn, pausing `pause` after each put.
    fn start_writers(
        self: &Arc<Self>,
        count: usize,
        pause: Duration,
        limit: Option<usize>,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let tasks = (0..count)
            .map(|w| {
                let (cluster, stop, written) = (self.clone(), stop.clone(), written.clone());
                tokio::spawn(async move {
                    let mut report = WriteReport::default();
                    let mut turn = w;
                    while !stop.load(Ordering::Relaxed) {
                        let index = match limit {
                            Some(limit) => {
                                let n = written.fetch_add(1, Ordering::Relaxed);
                                if n >= limit {
                                    break;
                                }
                                cluster.next_blob.fetch_add(1, Ordering::Relaxed)
                            }
                            None => cluster.next_blob.fetch_add(1, Ordering::Relaxed),
                        };
                        let data = blob(index);
                        loop {
                            let (generation, allowed) = cluster.fronts.lock().clone();
                            let candidates: Vec<usize> =
                                (0..allowed.len()).filter(|&i| allowed[i]).collect();
                            assert!(!candidates.is_empty(), "no front to write through");
                            turn += 1;
                            let front = candidates[turn % candidates.len()];
                            let put = Instant::now();
                            match put_blob(&cluster.nodes[front].http, &data).await {
                                Ok(()) => {
                                    report.acked += 1;
                                    report.bytes += data.len();
                                    cluster.acked.lock().push(Acked {
                                        hash: hash_hex(&data),
                                        data: data.clone(),
                                    });
                                }
                                Err(e) => {
                                    let now = cluster.fronts.lock().clone();
                                    if now.0 != generation && !now.1[front] {
                                        // The front was taken out under the write: try another.
                                        report.excused += 1;
                                        continue;
                                    }
                                    report.failures.push(format!(
                                        "blob {index} through {}, failed after {} at {}: {e}",
                                        cluster.nodes[front].id,
                                        secs(put.elapsed()),
                                        utc_now()
                                    ));
                                }
                            }
                            break;
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    report
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Reads every acknowledged blob through each front of `fronts`, byte for byte.
    async fn check_reads(self: &Arc<Self>, what: &str, fronts: &[usize]) -> ReadReport {
        let acked = self.acked.lock().clone();
        let items: Vec<(usize, Acked)> = fronts
            .iter()
            .flat_map(|&f| acked.iter().map(move |b| (f, b.clone())))
            .collect();
        let reads = items.len();
        let bytes = items.iter().map(|(_, b)| b.data.len()).sum();
        let cluster = self.clone();
        let results = parallel(items, CHECK_CONCURRENCY, move |(front, blob)| {
            let cluster = cluster.clone();
            async move {
                let node = &cluster.nodes[front];
                let mut first_error = None;
                for attempt in 1..=READ_ATTEMPTS {
                    match read_blob(&node.http, &blob).await {
                        Ok(()) => return Ok(first_error),
                        Err(ReadFailure::WrongBytes(e)) => {
                            return Err(format!("via {}: {e}", node.id));
                        }
                        Err(ReadFailure::Transient(e)) => {
                            let e = format!("via {}: {e}", node.id);
                            if attempt == READ_ATTEMPTS {
                                return Err(e);
                            }
                            first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                unreachable!()
            }
        })
        .await;
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{what}: {} of {reads} reads failed {READ_ATTEMPTS} times, e.g. {:#?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        let retried: Vec<&String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|e| e.as_ref()))
            .collect();
        ReadReport {
            reads,
            bytes,
            retried: retried.len(),
            examples: retried.iter().take(3).map(|s| s.to_string()).collect(),
        }
    }

    /// Waits until every acknowledged blob is held by all of its replicas.
    async fn wait_fully_replicated(self: &Arc<Self>, what: &str) -> Duration {
        let start = Instant::now();
        let mut pending: Vec<String> = self.acked.lock().iter().map(|b| b.hash.clone()).collect();
        let total = pending.len();
        loop {
            let cluster = self.clone();
            let items: Vec<(usize, String)> = pending.drain(..).enumerate().collect();
            let results = parallel(items, CHECK_CONCURRENCY, move |(i, hash)| {
                let cluster = cluster.clone();
                async move {
                    let front = &cluster.nodes[i % cluster.nodes.len()].http;
                    let r = fully_replicated(front, &hash, cluster.replication_factor).await;
                    (hash, r)
                }
            })
            .await;
            let mut reasons = Vec::new();
            for (hash, r) in results {
                if let Err(e) = r {
                    pending.push(hash);
                    reasons.push(e);
                }
            }
            if pending.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < REPLICATION_TIMEOUT,
                "{what}: {} of {total} blobs still lack a copy after {REPLICATION_TIMEOUT:?}, e.g. {:#?}",
                pending.len(),
                &reasons[..reasons.len().min(5)]
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The faults

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `docker stop` (SIGTERM, a clean stop), then `docker start`.
    Stop(&'static str),
    /// `docker kill -s KILL`, then `docker start`.
    Kill(&'static str),
    /// `docker pause` (frozen, its sockets open), then `docker unpause`.
    Pause(&'static str),
    /// Both nodes of a zone disconnected from the network, then reconnected with their
    /// addresses.
    Disconnect(&'static str),
    /// `docker restart` of every node in turn, each ready before the next.
    RollingRestart,
}

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::Stop(id) => format!("docker stop {id}"),
            Fault::Kill(id) => format!("docker kill -s KILL {id}"),
            Fault::Pause(id) => format!("docker pause {id}"),
            Fault::Disconnect(zone) => format!("network disconnect {zone}"),
            Fault::RollingRestart => "rolling restart".to_string(),
        }
    }

    /// The nodes the fault takes out.
    fn out(&self, cluster: &Cluster) -> Vec<usize> {
        match self {
            Fault::Stop(id) | Fault::Kill(id) | Fault::Pause(id) => vec![cluster.index(id)],
            Fault::Disconnect(zone) => cluster.zone_members(zone),
            Fault::RollingRestart => Vec::new(),
        }
    }
}

/// The address a node takes when it comes back from a partition: in the same /24, 20 above
/// (or below) its last one, never one of the compose file's fixed addresses (.11 to .16).
fn moved_ip(ip: &str) -> String {
    let (net, last) = ip.rsplit_once('.').expect("an IPv4 address");
    let last: u8 = last.parse().expect("an IPv4 address");
    let moved = if last < 200 { last + 20 } else { last - 180 };
    format!("{net}.{moved}")
}

impl Cluster {
    async fn apply(&self, fault: Fault, out: &[usize]) {
        for &i in out {
            let c = self.nodes[i].container.lock().clone();
            let c = c.as_str();
            match fault {
                Fault::Stop(_) => docker(&["stop", "-t", "15", c]).await,
                Fault::Kill(_) => docker(&["kill", "-s", "KILL", c]).await,
                Fault::Pause(_) => docker(&["pause", c]).await,
                Fault::Disconnect(_) => docker(&["network", "disconnect", &self.network, c]).await,
                Fault::RollingRestart => unreachable!(),
            };
        }
    }

    async fn heal(&self, fault: Fault, out: &[usize]) {
        for &i in out {
            let node = &self.nodes[i];
            let c = node.container.lock().clone();
            let c = c.as_str();
            match fault {
                Fault::Stop(_) | Fault::Kill(_) => docker(&["start", c]).await,
                Fault::Pause(_) => docker(&["unpause", c]).await,
                // Back on the network with another address, as a rescheduled pod comes back:
                // its peers find it again only by resolving its name anew. (The name is the
                // compose service's alias, given back as a headless service gives a pod's.)
                Fault::Disconnect(_) => {
                    let ip = moved_ip(&node.ip.lock());
                    let args = ["network", "connect", "--ip", &ip, "--alias", &node.id];
                    let out = docker(&[&args[..], &[&self.network, c]].concat()).await;
                    node.http.moved_to(ip.parse().expect("an IPv4 address"));
                    *node.ip.lock() = ip;
                    out
                }
                Fault::RollingRestart => unreachable!(),
            };
        }
        self.wait_ready(out, READY_TIMEOUT).await;
    }

    /// A progress line, with the time since the start and the UTC time of day (as in the
    /// node logs).
    fn log(&self, start: Instant, line: &str) {
        eprintln!(
            "[{:>6.1} s {}] {line}",
            start.elapsed().as_secs_f64(),
            utc_now()
        );
    }

    /// One fault under a write load, with its checks; returns the summary lines.
    /// Checks every acknowledged blob through `fronts`, logs how it went, and returns the line.
    async fn reads_line(
        self: &Arc<Self>,
        t0: Instant,
        name: &str,
        when: &str,
        fronts: &[usize],
    ) -> String {
        let reads = Instant::now();
        let r = self.check_reads(&format!("{name} ({when})"), fronts).await;
        let line = format!(
            "{name}: {when}, {} reads ({}) through {} byte-exact in {}, {} retried",
            r.reads,
            mb(r.bytes),
            self.names(fronts),
            secs(reads.elapsed()),
            r.retried
        );
        self.log(t0, &line);
        for e in &r.examples {
            self.log(t0, &format!("  first attempt failed: {e}"));
        }
        line
    }

    async fn fault_phase(self: &Arc<Self>, fault: Fault, t0: Instant) -> Vec<String> {
        let start = Instant::now();
        let name = fault.name();
        let out = fault.out(self);
        let mut lines = Vec::new();
        self.set_fronts(|i| !out.contains(&i));
        let writers = self.start_writers(FAULT_WRITERS, FAULT_WRITE_PAUSE, None);
        tokio::time::sleep(LOAD_MARGIN).await;

        if let Fault::RollingRestart = fault {
            for i in 0..self.nodes.len() {
                let restart = Instant::now();
                self.set_fronts(|j| j != i);
                let c = self.nodes[i].container.lock().clone();
                docker(&["restart", "-t", "15", &c]).await;
                self.wait_ready(&[i], READY_TIMEOUT).await;
                self.set_fronts(|_| true);
                self.log(
                    t0,
                    &format!(
                        "{name}: {} ready again after {}",
                        self.nodes[i].id,
                        secs(restart.elapsed())
                    ),
                );
            }
        } else {
            self.apply(fault, &out).await;
            let applied = Instant::now();
            self.log(t0, &format!("{name}: applied"));
            tokio::time::sleep(FAULT_HOLD).await;
            let fronts = self.zone_fronts(&out);
            let line = self.reads_line(t0, &name, "while active", &fronts).await;
            lines.push(line);
            if let Some(left) = FAULT_MIN.checked_sub(applied.elapsed()) {
                tokio::time::sleep(left).await;
            }
            let held = applied.elapsed();
            let heal = Instant::now();
            self.heal(fault, &out).await;
            self.set_fronts(|_| true);
            let line = format!(
                "{name}: lifted after {}, {} ready again after {}",
                secs(held),
                self.names(&out),
                secs(heal.elapsed())
            );
            self.log(t0, &line);
            lines.push(line);
        }

        tokio::time::sleep(LOAD_MARGIN).await;
        let written = writers.stop().await;
        let line = format!(
            "{name}: {} writes ({}) acknowledged during the fault, {} failed ({} cut short by the fault and retried elsewhere)",
            written.acked,
            mb(written.bytes),
            written.failures.len(),
            written.excused
        );
        self.log(t0, &line);
        lines.push(line);
        if !written.failures.is_empty() {
            // Failed writes are not acknowledged, so the checks below stay valid: go on, and
            // fail the test at the end with everything that went wrong.
            for failure in &written.failures {
                self.log(t0, &format!("  WRITE FAILED: {failure}"));
            }
            self.violations.lock().push(format!(
                "{name}: {} of {} writes through fronts in live zones failed, e.g. {:#?}",
                written.failures.len(),
                written.failures.len() + written.acked,
                &written.failures[..written.failures.len().min(3)]
            ));
        }

        let all = self.zone_fronts(&[]);
        let line = self.reads_line(t0, &name, "healed", &all).await;
        lines.push(line);
        let took = self.wait_fully_replicated(&name).await;
        let line = format!(
            "{name}: all {} blobs on all {} replicas after {}; phase took {}",
            self.acked.lock().len(),
            self.replication_factor,
            secs(took),
            secs(start.elapsed())
        );
        self.log(t0, &line);
        lines.push(line);
        lines
    }

    fn names(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| self.nodes[i].id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster behind Debian's HAProxy, as a load balancer in front of the six HTTP
    /// fronts uses it: health checks on `/readyz` (no token), retries of a request whose
    /// server failed. Clients write and read through it while a node is killed; every request
    /// must succeed, or fail only within the health check's detection time after the kill.
    async fn behind_haproxy(&self, t0: Instant) -> String {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let servers: String = self
            .nodes
            .iter()
            .map(|n| format!("    server {} {}\n", n.id, n.http.addr()))
            .collect();
        let config = format!(
            "global\n    maxconn 256\n\
             defaults\n    mode http\n    timeout connect {HAPROXY_CONNECT_MS}ms\n\
             \x20   timeout client 30s\n    timeout server 30s\n    retries 3\n\
             \x20   option redispatch 1\n\
             \x20   retry-on conn-failure empty-response response-timeout 503\n\
             \x20   option http-buffer-request\n\
             frontend cairn\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /readyz\n\
             \x20   http-check expect status 200\n\
             \x20   default-server check inter {HAPROXY_CHECK_MS}ms fall {HAPROXY_FALL} rise 2\n\
             {servers}"
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).expect("the HAProxy configuration");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&config_path)
            .output()
            .expect("haproxy (scripts/container-test installs it)");
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let haproxy = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy started");
        let haproxy = KilledOnDrop(haproxy);
        let front = Front::new(SocketAddr::from(([127, 0, 0, 1], port)), Some(&self.token));
        let up = Instant::now();
        while front.get("/readyz").await.map(|r| r.status) != Ok(200) {
            assert!(up.elapsed() < READY_TIMEOUT, "HAProxy does not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Every server marked up first (rise 2 checks).
        tokio::time::sleep(Duration::from_millis(3 * HAPROXY_CHECK_MS)).await;

        let stop = Arc::new(AtomicBool::new(false));
        let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut clients = Vec::new();
        for c in 0..HAPROXY_CLIENTS {
            let (front, stop, killed_at) = (front.clone(), stop.clone(), killed_at.clone());
            let project = self.compose.project.clone();
            clients.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let data = Bytes::from(format!("{project} haproxy {c} {i} ").repeat(200));
                    let hash = hash_hex(&data);
                    let sent = Instant::now();
                    let result = match put_blob(&front, &data).await {
                        Ok(()) => read_blob_at(&front, &hash, &data).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            let after_kill =
                                killed_at.lock().map(|k| sent.saturating_duration_since(k));
                            failed.push((after_kill, e));
                        }
                    }
                }
                (ok, failed)
            }));
        }
        tokio::time::sleep(HAPROXY_LOAD_BEFORE).await;
        let victim = self.index("n4");
        let c = self.nodes[victim].container.lock().clone();
        docker(&["kill", "-s", "KILL", &c]).await;
        *killed_at.lock() = Some(Instant::now());
        self.log(t0, "behind HAProxy: n4 killed under load");
        tokio::time::sleep(HAPROXY_LOAD_AFTER).await;
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for client in clients {
            let (o, f) = client.await.expect("a client task");
            ok += o;
            failed.extend(f);
        }
        drop(haproxy);
        let c = self.nodes[victim].container.lock().clone();
        docker(&["start", &c]).await;
        self.wait_ready(&[victim], READY_TIMEOUT).await;

        // The detection time: the checks that must fail before n4 is out, and one interval more
        // for the check in flight at the kill.
        let window = Duration::from_millis(HAPROXY_CHECK_MS * (u64::from(HAPROXY_FALL) + 1));
        let late: Vec<_> = failed
            .iter()
            .filter(|(after, _)| after.is_none_or(|a| a > window))
            .collect();
        let line = format!(
            "behind HAProxy (checks every {HAPROXY_CHECK_MS} ms on /readyz, fall {HAPROXY_FALL}): \
             {} put+get rounds, {} failed ({} of them later than {} after n4 was killed)",
            ok + failed.len(),
            failed.len(),
            late.len(),
            secs(window),
        );
        self.log(t0, &line);
        if !failed.is_empty() {
            eprintln!(
                "failed through HAProxy: {:#?}",
                &failed[..failed.len().min(5)]
            );
        }
        assert!(
            late.is_empty(),
            "requests through HAProxy failed outside the detection window: {late:#?}"
        );
        assert!(ok > 0, "nothing went through HAProxy");
        line
    }

    /// The contract's basics: the token is required, a blob's headers, a delete.
    async fn smoke(&self) {
        let front = &self.nodes[0].http;
        for token in [None, Some("not-the-token-at-all")] {
            let r = Front::new(front.addr(), token).get("/v1/cluster").await;
            let r = r.expect("an answer");
            assert_eq!(r.status, 401, "token {token:?}: {}", text(&r));
        }

        let r = front.get("/v1/cluster").await.expect("an answer");
        let cluster = json(&r).expect("JSON");
        assert_eq!(r.status, 200, "{cluster}");
        assert_eq!(
            cluster["nodes"].as_array().map(Vec::len),
            Some(self.nodes.len()),
            "{cluster}"
        );

        // A blob outside the acknowledged set (it is deleted again).
        let data = Bytes::from(format!("smoke test blob {}", self.compose.project));
        let hash = hash_hex(&data);
        put_blob(front, &data).await.expect("a put");
        let path = format!("/v1/blobs/{hash}");
        let other = &self.nodes[1].http;
        let r = other.head(&path).await.expect("an answer");
        assert_eq!(r.status, 200, "HEAD {path}");
        assert_eq!(
            r.header("content-length"),
            Some(data.len().to_string().as_str())
        );
        let r = other.get(&path).await.expect("an answer");
        assert_eq!((r.status, &r.body[..]), (200, &data[..]), "GET {path}");
        let r = front.delete(&path).await.expect("an answer");
        assert_eq!(r.status, 204, "DELETE {path}: {}", text(&r));
        let r = other.get(&path).await.expect("an answer");
        assert_eq!(r.status, 404, "GET {path} after the delete: {}", text(&r));
        assert!(!self.token.is_empty());
    }
}

/// How many /24s `Compose::first_up` tries when other runs keep taking the free one it found.
const SUBNET_ATTEMPTS_MAX: usize = 8;

/// The first /24 of 10.231.0.0/16 from 10.231.7 (the compose file's default) that neither
/// overlaps a Docker network nor is in `tried`, as its first three octets.
async fn free_subnet(tried: &[String]) -> String {
    let ids = docker(&["network", "ls", "-q"]).await;
    let mut args = vec![
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
    ];
    args.extend(ids.split_whitespace());
    let taken: Vec<(u32, u32)> = docker(&args)
        .await
        .split_whitespace()
        .filter_map(|cidr| {
            let (addr, bits) = cidr.split_once('/')?;
            let addr: std::net::Ipv4Addr = addr.parse().ok()?; // IPv6 networks cannot overlap
            let bits: u32 = bits.parse().ok()?;
            let size = 1u64 << (32 - bits.min(32));
            let first = u32::from(addr) & !((size - 1) as u32);
            Some((first, (u64::from(first) + size - 1) as u32))
        })
        .collect();
    (7..=u8::MAX)
        .map(|third| format!("10.231.{third}"))
        .find(|prefix| {
            let first = u32::from(
                format!("{prefix}.0")
                    .parse::<std::net::Ipv4Addr>()
                    .expect("an IPv4 address"),
            );
            let last = first + 255;
            !tried.contains(prefix) && taken.iter().all(|&(s, e)| e < first || last < s)
        })
        .unwrap_or_else(|| {
            panic!("no /24 of 10.231.0.0/16 is free of Docker's networks: {taken:?}")
        })
}

fn compose_from_env() -> Compose {
    let file = std::env::var_os("CAIRN_COMPOSE_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/compose.yml"));
    let file = file
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let project = std::env::var("CAIRN_COMPOSE_PROJECT")
        .unwrap_or_else(|_| format!("cairntest{}", std::process::id()));
    let subnet = std::env::var("CAIRN_SUBNET").unwrap_or_else(|_| "10.231.7".to_string());
    Compose {
        project,
        file,
        subnet: Arc::new(Mutex::new(subnet)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Docker: scripts/container-test runs it"]
async fn containers_survive_stops_kills_pauses_partitions_and_restarts() {
    let t0 = Instant::now();
    let compose = compose_from_env();
    eprintln!(
        "compose project {} from {}",
        compose.project,
        compose.file.display()
    );
    let initial_blobs = std::env::var("CAIRN_CONTAINER_BLOBS")
        .ok()
        .map(|s| s.parse::<usize>().expect("CAIRN_CONTAINER_BLOBS: a number"))
        .unwrap_or(INITIAL_BLOBS_DEFAULT);
    let mut summary: Vec<String> = Vec::new();

    // Takes the project down however this ends; dropped after the cluster.
    let _cleanup = Cleanup(compose.clone());
    let cluster = Arc::new(Cluster::start(compose).await);
    let line = format!(
        "cluster up: {} nodes in {} zones ready after {}",
        cluster.nodes.len(),
        cluster.zones.len(),
        secs(t0.elapsed())
    );
    cluster.log(t0, &line);
    summary.push(line);

    let body = {
        let cluster = cluster.clone();
        async move {
            let mut summary = Vec::new();
            cluster.smoke().await;
            cluster.log(
                t0,
                "contract basics: 401 without token, HEAD, GET, DELETE ok",
            );

            let load = Instant::now();
            let written = cluster
                .start_writers(INITIAL_WRITERS, Duration::ZERO, Some(initial_blobs))
                .join()
                .await;
            assert!(
                written.failures.is_empty(),
                "initial load: {} writes failed, e.g. {:#?}",
                written.failures.len(),
                &written.failures[..written.failures.len().min(5)]
            );
            let line = format!(
                "initial load: {} blobs ({}) through all six fronts in {}",
                written.acked,
                mb(written.bytes),
                secs(load.elapsed())
            );
            cluster.log(t0, &line);
            summary.push(line);
            let all = cluster.zone_fronts(&[]);
            let reads = Instant::now();
            let r = cluster.check_reads("initial load", &all).await;
            let line = format!(
                "initial load: {} reads ({}) byte-exact in {}, {} retried",
                r.reads,
                mb(r.bytes),
                secs(reads.elapsed()),
                r.retried
            );
            cluster.log(t0, &line);
            summary.push(line);
            let took = cluster.wait_fully_replicated("initial load").await;
            summary.push(format!(
                "initial load: fully replicated, checked in {}",
                secs(took)
            ));

            for fault in [
                Fault::Stop("n1"),
                Fault::Kill("n5"),
                Fault::Pause("n3"),
                Fault::Disconnect("zone-b"),
                Fault::RollingRestart,
            ] {
                summary.extend(cluster.fault_phase(fault, t0).await);
            }
            summary.push(cluster.behind_haproxy(t0).await);
            summary
        }
    };
    match tokio::time::timeout(TEST_DEADLINE, body).await {
        Ok(lines) => summary.extend(lines),
        Err(_) => panic!("the container test took over {TEST_DEADLINE:?}"),
    }

    let acked = cluster.acked.lock().len();
    eprintln!("\n=== container test summary ===");
    for line in &summary {
        eprintln!("  {line}");
    }
    eprintln!(
        "  total: {acked} blobs acknowledged, all read back and fully replicated; {}",
        secs(t0.elapsed())
    );
    let violations = cluster.violations.lock().clone();
    assert!(
        violations.is_empty(),
        "{} of the faults broke the contract:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A rolling upgrade

const UPGRADE_S3_BUCKET: &str = "upgrade";
/// Concurrent writers (each also reading back) through the S3 fronts and through the native
/// client during the upgrade, and the pause each takes between two puts.
const UPGRADE_S3_WRITERS: usize = 2;
const UPGRADE_NATIVE_WRITERS: usize = 2;
const UPGRADE_WRITE_PAUSE: Duration = Duration::from_millis(25);
/// Time a native-client operation may take, retries on other replicas included.
const UPGRADE_NATIVE_DEADLINE_MS: u64 = 30_000;

/// The two images of a rolling upgrade.
struct Upgrade {
    previous: String,
    current: String,
}

/// What one kind of load did during the upgrade.
#[derive(Default)]
struct LoadReport {
    writes: usize,
    reads: usize,
    /// Operations cut short because their front was taken out meanwhile (retried elsewhere).
    excused: usize,
    failures: Vec<String>,
}

impl LoadReport {
    fn add(&mut self, other: LoadReport) {
        self.writes += other.writes;
        self.reads += other.reads;
        self.excused += other.excused;
        self.failures.extend(other.failures);
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name}: {} writes and {} reads, {} failed ({} cut short by a node's replacement and retried elsewhere)",
            self.writes,
            self.reads,
            self.failures.len(),
            self.excused
        )
    }
}

/// An object written through the S3 front.
#[derive(Clone)]
struct S3Object {
    key: String,
    data: Bytes,
}

impl Cluster {
    /// The cluster on the previous version: certificates, the S3 key and the key-encryption
    /// key made by the current image's `certs` (the credentials file's format is unchanged,
    /// and the previous version ignores the key-encryption key's file), the nodes started from
    /// the previous image. Returns it with the S3 key.
    async fn start_previous(compose: Compose, upgrade: &Upgrade) -> (Cluster, (String, String)) {
        let _ = run("docker-compose", compose.args(&["down", "-v", "-t", "5"])).await;
        let must = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
        compose
            .first_up(&upgrade.current, &["up", "-d", "--no-deps", "certs"])
            .await;
        let certs = compose.container("certs").await;
        let exit = docker(&["wait", &certs]).await;
        assert_eq!(exit.trim(), "0", "the certs service failed");
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let path = scratch.path().join("s3-credentials.toml");
        let from = format!("{certs}:/certs/s3-credentials.toml");
        docker(&["cp", &from, &path.display().to_string()]).await;
        let text = std::fs::read_to_string(&path).expect("the S3 credentials");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no {name} in s3-credentials.toml"))
                .to_string()
        };
        let key = (value("access_key"), value("secret_key"));
        let nodes = ["n1", "n2", "n3", "n4", "n5", "n6"];
        let mut args = vec!["up", "-d", "--no-deps"];
        args.extend(nodes);
        must(compose.run_as(&upgrade.previous, &args).await);
        (Cluster::started(compose).await, key)
    }

    /// `cairn status` from the CLI container of the current image: per node, its version and
    /// the protocol it speaks with that CLI.
    async fn versions(&self, current: &str) -> Vec<(String, String, String)> {
        let out = self
            .compose
            .run_as(current, &["run", "--rm", "-T", "cli", "status"])
            .await
            .unwrap_or_else(|e| panic!("cairn status: {e}"));
        out.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let id = *fields.first()?;
                self.nodes.iter().any(|n| n.id == id).then(|| {
                    let n = fields.len();
                    (
                        id.to_string(),
                        fields[n - 2].to_string(),
                        fields[n - 1].to_string(),
                    )
                })
            })
            .collect()
    }

    fn s3_client(&self, i: usize, key: &(String, String)) -> cairn_tests::s3::S3Client {
        let ip: std::net::IpAddr = self.nodes[i].ip.lock().parse().expect("an IP address");
        cairn_tests::s3::S3Client::new(
            SocketAddr::new(ip, 9000),
            cairn_tests::s3::S3Signer {
                access_key: key.0.clone(),
                secret_key: key.1.clone(),
                region: "us-east-1".to_string(),
                clock_offset_secs: 0,
            },
        )
    }

    /// A front writes may use now, in turn, with the generation of the allowed set.
    fn next_front(&self, turn: &mut usize) -> (u64, usize) {
        let (generation, allowed) = self.fronts.lock().clone();
        let candidates: Vec<usize> = (0..allowed.len()).filter(|&i| allowed[i]).collect();
        assert!(!candidates.is_empty(), "no front to use");
        *turn += 1;
        (generation, candidates[*turn % candidates.len()])
    }

    /// Whether a failure through `front` is excused: the front was taken out meanwhile.
    fn taken_out(&self, generation: u64, front: usize) -> bool {
        let now = self.fronts.lock().clone();
        now.0 != generation && !now.1[front]
    }

    /// One S3 request through the allowed fronts in turn, taken again through another when its
    /// front was taken out under it; `Ok` once `expect` accepts the answer, else the failure.
    async fn s3_request(
        &self,
        turn: &mut usize,
        key: &(String, String),
        (method, path, body): (&str, &str, Bytes),
        expect: impl Fn(&HttpResponse) -> Result<(), String>,
        report: &mut LoadReport,
    ) -> Result<(), String> {
        loop {
            let (generation, front) = self.next_front(turn);
            let s3 = self.s3_client(front, key);
            let request = s3.request(method, path, &[], &[], body.clone());
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                Ok(Ok(r)) => expect(&r),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer in time".to_string()),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(_) if self.taken_out(generation, front) => report.excused += 1,
                Err(e) => {
                    let node = &self.nodes[front].id;
                    return Err(format!(
                        "{method} {path} through {node}'s S3 front at {}: {e}",
                        utc_now()
                    ));
                }
            }
        }
    }

    /// Writes objects through the allowed S3 fronts and reads earlier ones back through
    /// another, until told to stop.
    fn start_s3_load(
        self: &Arc<Self>,
        key: &(String, String),
        stop: Arc<AtomicBool>,
        objects: Arc<Mutex<Vec<S3Object>>>,
    ) -> Vec<tokio::task::JoinHandle<LoadReport>> {
        (0..UPGRADE_S3_WRITERS)
            .map(|w| {
                let (cluster, stop, objects) = (self.clone(), stop.clone(), objects.clone());
                let key = key.clone();
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    let mut turn = w;
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let object = S3Object {
                            key: format!("w{w}/o{n}"),
                            data: blob(1_000_000 + w * 100_000 + n),
                        };
                        let path = format!("/{UPGRADE_S3_BUCKET}/{}", object.key);
                        let stored = |r: &HttpResponse| match r.status {
                            200 => Ok(()),
                            status => Err(format!("{status} {}", text(r))),
                        };
                        let put = ("PUT", path.as_str(), object.data.clone());
                        match cluster
                            .s3_request(&mut turn, &key, put, stored, &mut report)
                            .await
                        {
                            Ok(()) => {
                                report.writes += 1;
                                objects.lock().push(object);
                            }
                            Err(e) => report.failures.push(e),
                        }
                        let earlier = {
                            let objects = objects.lock();
                            objects.get(n * 7919 % objects.len().max(1)).cloned()
                        };
                        if let Some(earlier) = earlier {
                            let path = format!("/{UPGRADE_S3_BUCKET}/{}", earlier.key);
                            let same = |r: &HttpResponse| match r.status == 200
                                && r.body == earlier.data
                            {
                                true => Ok(()),
                                false => Err(format!(
                                    "{}, {} bytes of {}",
                                    r.status,
                                    r.body.len(),
                                    earlier.data.len()
                                )),
                            };
                            let get = ("GET", path.as_str(), Bytes::new());
                            match cluster
                                .s3_request(&mut turn, &key, get, same, &mut report)
                                .await
                            {
                                Ok(()) => report.reads += 1,
                                Err(e) => report.failures.push(e),
                            }
                        }
                        tokio::time::sleep(UPGRADE_WRITE_PAUSE).await;
                    }
                    report
                })
            })
            .collect()
    }

    /// Writes blobs with the native client (QUIC, straight to the replicas) and reads earlier
    /// ones back, until told to stop. The client fails over by itself: every failure counts.
    fn start_native_load(
        self: &Arc<Self>,
        client: Arc<cairn_client::Client>,
        stop: Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<LoadReport>> {
        (0..UPGRADE_NATIVE_WRITERS)
            .map(|w| {
                let (cluster, client, stop) = (self.clone(), client.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    let mut mine: Vec<(cairn_client::Hash, Bytes)> = Vec::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let data = blob(2_000_000 + w * 100_000 + n);
                        match client.put(data.clone()).await {
                            Ok(hash) => {
                                report.writes += 1;
                                cluster.acked.lock().push(Acked {
                                    hash: hash.to_string(),
                                    data: data.clone(),
                                });
                                mine.push((hash, data));
                            }
                            Err(e) => report
                                .failures
                                .push(format!("native put at {}: {e}", utc_now())),
                        }
                        if let Some((hash, data)) = mine.get(n * 7919 % mine.len().max(1)) {
                            match client.get(hash).await {
                                Ok(got) if got[..] == data[..] => report.reads += 1,
                                Ok(got) => report.failures.push(format!(
                                    "native get of {hash}: {} other bytes",
                                    got.len()
                                )),
                                Err(e) => report
                                    .failures
                                    .push(format!("native get of {hash} at {}: {e}", utc_now())),
                            }
                        }
                        tokio::time::sleep(UPGRADE_WRITE_PAUSE).await;
                    }
                    report
                })
            })
            .collect()
    }

    /// The native client, from outside the compose network: the layout with each node's
    /// address in place of its name (placement does not depend on addresses), and the CLI's
    /// certificate out of the certs volume.
    async fn native_client(&self, scratch: &Path) -> cairn_client::Client {
        let dir = self
            .compose
            .file
            .parent()
            .expect("a directory")
            .join("cluster");
        let mut layout = cairn_client::load_layout(&dir.join("layout.toml")).expect("the layout");
        for spec in &mut layout.nodes {
            let i = self.index(&spec.id);
            let ip: std::net::IpAddr = self.nodes[i].ip.lock().parse().expect("an IP address");
            spec.addr = SocketAddr::new(ip, spec.addr.port()).into();
        }
        let certs = self.compose.container("certs").await;
        for file in ["ca.pem", "client.pem", "client.key"] {
            let to = scratch.join(file).display().to_string();
            docker(&["cp", &format!("{certs}:/certs/{file}"), &to]).await;
        }
        let identity = cairn_client::tls::Identity::load(
            &scratch.join("ca.pem"),
            &scratch.join("client.pem"),
            &scratch.join("client.key"),
        )
        .expect("the client identity");
        let options = cairn_client::ClientOptions {
            deadline_ms: UPGRADE_NATIVE_DEADLINE_MS,
            ..Default::default()
        };
        cairn_client::Client::connect(layout, &identity, options)
            .await
            .expect("the native client")
    }

    /// Recreates every node in turn from the current image (same volume, same address),
    /// under load through the HTTP fronts, the S3 fronts and the native client; checks what
    /// `cairn status` says of each node's version on the way.
    async fn rolling_upgrade(
        self: &Arc<Self>,
        upgrade: &Upgrade,
        s3_key: &(String, String),
        t0: Instant,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let native = Arc::new(self.native_client(scratch.path()).await);
        let current_version = env!("CARGO_PKG_VERSION");
        let current_protocol = String::from_utf8_lossy(cairn_core::wire::ALPN).into_owned();

        let before = self.versions(&upgrade.current).await;
        assert_eq!(
            before.len(),
            self.nodes.len(),
            "cairn status rows: {before:?}"
        );
        // The previous release speaks this version's protocol or the one before it.
        let previous_protocol = before[0].2.clone();
        assert!(
            cairn_core::wire::ALPNS_SPOKEN
                .iter()
                .any(|alpn| **alpn == *previous_protocol.as_bytes()),
            "the previous release speaks {previous_protocol}, which this version does not"
        );
        for (id, version, protocol) in &before {
            assert!(
                version != current_version && *protocol == previous_protocol,
                "before the upgrade, {id} runs {version} and speaks {protocol}"
            );
        }
        let line = format!(
            "before: every node runs {} and speaks {previous_protocol} (cairn status)",
            before[0].1
        );
        self.log(t0, &line);
        lines.push(line);

        let s3 = self.s3_client(0, s3_key);
        let made = s3
            .request(
                "PUT",
                &format!("/{UPGRADE_S3_BUCKET}"),
                &[],
                &[],
                Bytes::new(),
            )
            .await
            .expect("CreateBucket");
        assert_eq!(made.status, 200, "CreateBucket: {}", text(&made));

        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let objects = Arc::new(Mutex::new(Vec::new()));
        let http = self.start_writers(FAULT_WRITERS, FAULT_WRITE_PAUSE, None);
        let s3_tasks = self.start_s3_load(s3_key, stop.clone(), objects.clone());
        let native_tasks = self.start_native_load(native.clone(), stop.clone());
        tokio::time::sleep(LOAD_MARGIN).await;

        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id.clone();
            let step = Instant::now();
            self.set_fronts(|j| j != i);
            self.compose
                .run_as(&upgrade.current, &["up", "-d", "--no-deps", &id])
                .await
                .unwrap_or_else(|e| panic!("upgrading {id}: {e}"));
            *self.nodes[i].container.lock() = self.compose.container(&id).await;
            self.wait_ready(&[i], READY_TIMEOUT).await;
            self.set_fronts(|_| true);
            let versions = self.versions(&upgrade.current).await;
            let upgraded: Vec<&str> = versions
                .iter()
                .filter(|(_, v, p)| v == current_version && *p == current_protocol)
                .map(|(id, _, _)| id.as_str())
                .collect();
            let expected: Vec<&str> = self.nodes[..=i].iter().map(|n| n.id.as_str()).collect();
            assert_eq!(
                upgraded, expected,
                "cairn status after upgrading {id}: {versions:?}"
            );
            self.log(
                t0,
                &format!(
                    "upgrade: {id} runs {current_version} ({current_protocol}) after {}; cairn status shows {} of {} nodes upgraded",
                    secs(step.elapsed()),
                    upgraded.len(),
                    versions.len()
                ),
            );
        }
        tokio::time::sleep(LOAD_MARGIN).await;
        stop.store(true, Ordering::Relaxed);
        let written = http.stop().await;
        let mut s3_load = LoadReport::default();
        for task in s3_tasks {
            s3_load.add(task.await.expect("S3 load task"));
        }
        let mut native_load = LoadReport::default();
        for task in native_tasks {
            native_load.add(task.await.expect("native load task"));
        }
        let http_load = LoadReport {
            writes: written.acked,
            reads: 0,
            excused: written.excused,
            failures: written.failures,
        };
        let line = format!(
            "upgrade: six nodes recreated from the current image one by one in {}",
            secs(start.elapsed())
        );
        self.log(t0, &line);
        lines.push(line);
        for (name, load) in [
            ("upgrade, HTTP fronts", &http_load),
            ("upgrade, S3 fronts", &s3_load),
            ("upgrade, native client", &native_load),
        ] {
            let line = load.line(name);
            self.log(t0, &line);
            lines.push(line);
            for failure in &load.failures {
                self.log(t0, &format!("  FAILED: {failure}"));
            }
            if !load.failures.is_empty() {
                self.violations.lock().push(format!(
                    "{name}: {} operations failed, e.g. {:#?}",
                    load.failures.len(),
                    &load.failures[..load.failures.len().min(3)]
                ));
            }
        }

        // Nothing lost: every blob (HTTP and native) through a front of every zone, every
        // object through an S3 front of every zone, the native client's blobs through it.
        let all = self.zone_fronts(&[]);
        let line = self.reads_line(t0, "upgrade", "done", &all).await;
        lines.push(line);
        let objects = objects.lock().clone();
        let mut lost = Vec::new();
        for &front in &all {
            let s3 = self.s3_client(front, s3_key);
            for object in &objects {
                let path = format!("/{UPGRADE_S3_BUCKET}/{}", object.key);
                match s3.request("GET", &path, &[], &[], Bytes::new()).await {
                    Ok(r) if r.status == 200 && r.body == object.data => {}
                    Ok(r) => {
                        lost.push(format!("{path} via {}: {}", self.nodes[front].id, r.status))
                    }
                    Err(e) => lost.push(format!("{path} via {}: {e}", self.nodes[front].id)),
                }
            }
        }
        assert!(
            lost.is_empty(),
            "S3 objects not read back after the upgrade: {lost:#?}"
        );
        let line = format!(
            "upgrade: all {} S3 objects read back byte for byte through {}; 0 lost",
            objects.len(),
            self.names(&all)
        );
        self.log(t0, &line);
        lines.push(line);
        let took = self.wait_fully_replicated("upgrade").await;
        let line = format!(
            "upgrade: all {} blobs on all {} replicas after {}; 0 lost",
            self.acked.lock().len(),
            self.replication_factor,
            secs(took)
        );
        self.log(t0, &line);
        lines.push(line);
        native.close().await;

        // What the new version adds works now: a key managed online, given write on the
        // bucket, writes through the S3 front.
        let cli = |args: &[&str]| {
            let mut all = vec!["run", "--rm", "-T", "cli"];
            all.extend(args);
            let all: Vec<String> = all.iter().map(|a| a.to_string()).collect();
            let compose = self.compose.clone();
            let image = upgrade.current.clone();
            async move {
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                compose.run_as(&image, &all).await
            }
        };
        let created = cli(&["key", "create", "after-upgrade"])
            .await
            .unwrap_or_else(|e| panic!("cairn key create after the upgrade: {e}"));
        let field = |name: &str| {
            created
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no {name} in {created:?}"))
                .to_string()
        };
        let managed = (field("access_key"), field("secret_key"));
        cli(&["key", "allow", &managed.0, UPGRADE_S3_BUCKET, "write"])
            .await
            .unwrap_or_else(|e| panic!("cairn key allow: {e}"));
        let mut wrote = None;
        for _ in 0..50 {
            let r = self
                .s3_client(5, &managed)
                .request(
                    "PUT",
                    &format!("/{UPGRADE_S3_BUCKET}/managed"),
                    &[],
                    &[],
                    Bytes::from_static(b"m"),
                )
                .await;
            if let Ok(r) = &r
                && r.status == 200
            {
                wrote = Some(());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            wrote.is_some(),
            "the managed key could not write after cairn key allow"
        );
        let line =
            "after: cairn key create and allow work; the new key writes through the S3 front"
                .to_string();
        self.log(t0, &line);
        lines.push(line);

        // Rollback, as documented: a node given the previous image again (same volume) comes
        // back ready, speaks the previous protocol, and serves what the new version wrote.
        let back = Instant::now();
        let id = self.nodes[0].id.clone();
        self.compose
            .run_as(&upgrade.previous, &["up", "-d", "--no-deps", &id])
            .await
            .unwrap_or_else(|e| panic!("rolling {id} back: {e}"));
        *self.nodes[0].container.lock() = self.compose.container(&id).await;
        self.wait_ready(&[0], READY_TIMEOUT).await;
        let versions = self.versions(&upgrade.current).await;
        let rolled_back = versions
            .iter()
            .any(|(n, v, p)| *n == id && v != current_version && *p == previous_protocol);
        assert!(
            rolled_back,
            "cairn status after rolling {id} back: {versions:?}"
        );
        let r = self.check_reads("rollback", &[0]).await;
        // What the rolled-back node reports of files it could not open (a release before this
        // one's engine format sets them aside and gets their blobs from the replicas).
        let status = self
            .compose
            .run_as(&upgrade.current, &["run", "--rm", "-T", "cli", "status"])
            .await
            .unwrap_or_else(|e| panic!("cairn status: {e}"));
        let reported: Vec<&str> = status
            .lines()
            .filter(|l| l.contains("dropped") || l.contains("under-replicated"))
            .collect();
        let line = format!("rollback: cairn status reports {reported:?}");
        self.log(t0, &line);
        lines.push(line);
        let s3 = self.s3_client(0, s3_key);
        for object in &objects {
            let path = format!("/{UPGRADE_S3_BUCKET}/{}", object.key);
            let r = s3.request("GET", &path, &[], &[], Bytes::new()).await;
            assert!(
                matches!(&r, Ok(r) if r.status == 200 && r.body == object.data),
                "{path} through {id} rolled back: {:?}",
                r.map(|r| r.status)
            );
        }
        let line = format!(
            "rollback: {id} back on {} after {}, speaks {previous_protocol}; {} blobs through HTTP and {} S3 objects read back through it",
            upgrade.previous,
            secs(back.elapsed()),
            r.reads,
            objects.len()
        );
        self.log(t0, &line);
        lines.push(line);
        lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Docker and the previous version's image: scripts/upgrade-test runs it"]
async fn a_rolling_upgrade_under_load_fails_and_loses_nothing() {
    let t0 = Instant::now();
    let compose = compose_from_env();
    let upgrade = Upgrade {
        previous: std::env::var("CAIRN_PREVIOUS_IMAGE")
            .expect("CAIRN_PREVIOUS_IMAGE: the previous version's image"),
        current: std::env::var("CAIRN_IMAGE").unwrap_or_else(|_| "cairn:dev".to_string()),
    };
    eprintln!(
        "compose project {}: from {} to {}",
        compose.project, upgrade.previous, upgrade.current
    );
    let _cleanup = Cleanup(compose.clone());
    let (cluster, s3_key) = Cluster::start_previous(compose, &upgrade).await;
    let cluster = Arc::new(cluster);
    let mut summary = vec![format!(
        "cluster of {} up, every node ready after {}",
        upgrade.previous,
        secs(t0.elapsed())
    )];
    let body = {
        let cluster = cluster.clone();
        async move {
            let written = cluster
                .start_writers(INITIAL_WRITERS, Duration::ZERO, Some(500))
                .join()
                .await;
            assert!(
                written.failures.is_empty(),
                "initial load: {:?}",
                written.failures
            );
            cluster.rolling_upgrade(&upgrade, &s3_key, t0).await
        }
    };
    match tokio::time::timeout(TEST_DEADLINE, body).await {
        Ok(lines) => summary.extend(lines),
        Err(_) => panic!("the upgrade test took over {TEST_DEADLINE:?}"),
    }
    eprintln!("\n=== upgrade test summary ===");
    for line in &summary {
        eprintln!("  {line}");
    }
    let violations = cluster.violations.lock().clone();
    assert!(
        violations.is_empty(),
        "the upgrade broke the contract:\n{}",
        violations.join("\n")
    );
}
