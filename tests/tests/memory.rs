//! Memory as an orchestrator sees it: one node in a container whose memory limit is well below
//! the data it holds (`MEMORY_LIMIT_MIB` against `CAIRN_MEMORY_DATA_MIB`, 512 MiB against
//! 4 GiB by default) takes the data through its HTTP front, then serves every blob under
//! `READERS` concurrent readers, then reads its newest blobs over and over (the hot set), each
//! read checked against the blob's name. It must never be OOM-killed and must answer every
//! read byte for byte.
//!
//! While it runs, the test samples what an orchestrator reads: the container's memory usage
//! and working set (usage less inactive file pages, as the kubelet and `docker stats` compute
//! it) from its cgroup, and the node's own resident memory and mapped-segment memory from its
//! `/metrics`. It prints them against the data size and writes them to
//! `target/cairn-bench/memory.json`.
//!
//! Needs Docker and the image (`scripts/memory-test` builds it and runs this test).
//! Environment:
//!   CAIRN_IMAGE                     the image (default `cairn:dev`)
//!   CAIRN_MEMORY_LIMIT_MIB          the container's memory limit (default 512)
//!   CAIRN_MEMORY_DATA_MIB           data written (default 4096)
//!   CAIRN_MAPPED_RESIDENT_BYTES_MAX the node's `mapped_resident_bytes_max` (default: the
//!                                   node's default; 0 turns the bound off, for a baseline)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::Hash;
use cairn_tests::http::HttpClient;
use parking_lot::Mutex;

/// The container's memory limit (swap included: none) unless `CAIRN_MEMORY_LIMIT_MIB` says
/// otherwise.
const MEMORY_LIMIT_MIB_DEFAULT: u64 = 512;
/// Data written unless `CAIRN_MEMORY_DATA_MIB` says otherwise.
const DATA_MIB_DEFAULT: u64 = 4096;
/// Size of each blob: artifact-sized.
const BLOB_BYTES: usize = 4 << 20;
const WRITERS: usize = 4;
const READERS: usize = 8;
/// Times every blob is read.
const READ_PASSES: usize = 1;
/// Then the newest `1 / HOT_SHARE` of the blobs are read over and over for `HOT_READS`: an
/// artifact server's recent artifacts. The node should keep resident what that reads, not
/// what the full pass read.
const HOT_SHARE: u64 = 16;
const HOT_READS: Duration = Duration::from_secs(10);
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The whole test, start and clean-up excluded, must end within this.
const TEST_DEADLINE: Duration = Duration::from_secs(900);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The node's segment size (`segment_bytes` in its configuration below).
const SEGMENT_BYTES: u64 = 64 << 20;
/// The node's `mapped_resident_bytes_max` when the configuration leaves it out.
const MAPPED_RESIDENT_BYTES_MAX_DEFAULT: u64 =
    cairn_node::config::MAPPED_RESIDENT_BYTES_MAX_DEFAULT;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The container and volumes of one run, removed when dropped.
struct Scratch {
    name: String,
    volumes: Vec<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// The blob numbered `i`: 4 MiB from BLAKE3's output stream, fast in any build.
fn content(i: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; BLOB_BYTES];
    blake3::Hasher::new()
        .update(b"cairn memory test")
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

/// Figures read from the container's cgroup (v1 or v2), in bytes.
#[derive(Clone, Copy, Default, Debug)]
struct Cgroup {
    usage: u64,
    working_set: u64,
}

fn cgroup_dir(id: &str) -> Option<PathBuf> {
    [
        format!("/sys/fs/cgroup/memory/docker/{id}"),
        format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
        format!("/sys/fs/cgroup/docker/{id}"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_dir())
}

fn read_cgroup(dir: &Path) -> Option<Cgroup> {
    let number = |file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let stat_value = |key: &str| {
        stat.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    };
    // v1: memory.usage_in_bytes and total_inactive_file; v2: memory.current and inactive_file.
    let (usage, inactive) = match number("memory.usage_in_bytes") {
        Some(usage) => (usage, stat_value("total_inactive_file ")?),
        None => (number("memory.current")?, stat_value("inactive_file ")?),
    };
    Some(Cgroup {
        usage,
        working_set: usage.saturating_sub(inactive),
    })
}

/// A sample of the node's `/metrics`: `name value` for the families asked.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[derive(Default)]
struct Peaks {
    usage: AtomicU64,
    working_set: AtomicU64,
    resident: AtomicU64,
    mapped: AtomicU64,
    samples: AtomicU64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Docker and the image; scripts/memory-test runs it"]
async fn a_node_holding_far_more_than_its_memory_limit_serves_every_blob_and_is_never_oom_killed() {
    let image = std::env::var("CAIRN_IMAGE").unwrap_or_else(|_| "cairn:dev".into());
    let data_mib: u64 = std::env::var("CAIRN_MEMORY_DATA_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DATA_MIB_DEFAULT);
    let limit_mib: u64 = std::env::var("CAIRN_MEMORY_LIMIT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MEMORY_LIMIT_MIB_DEFAULT);
    let bound = std::env::var("CAIRN_MAPPED_RESIDENT_BYTES_MAX").ok();
    let blobs = (data_mib << 20) / BLOB_BYTES as u64;
    let run = format!("cairnmem{}", std::process::id());
    let scratch = Scratch {
        name: run.clone(),
        volumes: vec![format!("{run}-certs"), format!("{run}-data")],
    };

    // The node's files: a one-node layout and its configuration, readable by the image's
    // user; certificates and the token made by the image itself into a volume.
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(
        etc.path().join("layout.toml"),
        "version = 1\nreplication_factor = 1\nwrite_quorum = 1\n\n[[nodes]]\nid = \"m1\"\n\
         addr = \"127.0.0.1:7401\"\nzone = \"zone-a\"\nweight = 100\n",
    )
    .unwrap();
    let space = match &bound {
        Some(bytes) => format!("\n[space]\nmapped_resident_bytes_max = {bytes}\n"),
        None => String::new(),
    };
    std::fs::write(
        etc.path().join("node.toml"),
        format!(
            "id = \"m1\"\ndata_dir = \"/data\"\nlayout = \"layout.toml\"\n\
             segment_bytes = {SEGMENT_BYTES}\n\n[tls]\nca = \"/certs/ca.pem\"\n\
             cert = \"/certs/m1.pem\"\nkey = \"/certs/m1.key\"\n\n[http]\n\
             listen = \"0.0.0.0:8080\"\ntoken_file = \"/certs/http.token\"\n{space}"
        ),
    )
    .unwrap();
    for file in ["layout.toml", "node.toml"] {
        let path = etc.path().join(file);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
    }
    std::fs::set_permissions(
        etc.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let certs_volume = format!("{}:/certs", scratch.volumes[0]);
    docker(&[
        "run",
        "--rm",
        "--read-only",
        "-v",
        &certs_volume,
        &image,
        "certs",
        "--dir",
        "/certs",
        "--node",
        "m1",
        "--http-token",
    ])
    .unwrap();
    let etc_mount = format!("{}:/etc/cairn:ro", etc.path().display());
    let certs_mount = format!("{}:/certs:ro", scratch.volumes[0]);
    let data_mount = format!("{}:/data", scratch.volumes[1]);
    let limit = format!("{limit_mib}m");
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &run,
        "--read-only",
        "--memory",
        &limit,
        "--memory-swap",
        &limit,
        "-e",
        "NO_COLOR=1",
        "-v",
        &etc_mount,
        "-v",
        &certs_mount,
        "-v",
        &data_mount,
        &image,
        "node",
        "--config",
        "/etc/cairn/node.toml",
    ])
    .unwrap();
    let copied = tempfile::tempdir().unwrap();
    let token_path = copied.path().join("http.token");
    docker(&[
        "cp",
        &format!("{run}:/certs/http.token"),
        &token_path.display().to_string(),
    ])
    .unwrap();
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &run,
    ])
    .unwrap();
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), 8080);
    let front = HttpClient::new(addr, Some(token));
    let cgroup = cgroup_dir(&id).unwrap_or_else(|| panic!("no memory cgroup for {id}"));

    let started = Instant::now();
    loop {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(2), front.get("/readyz/writes")).await
            && r.status == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the node is not ready after 60 s: {}",
            docker(&["logs", "--tail", "40", &run]).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Memory, sampled all along.
    let peaks = Arc::new(Peaks::default());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, done, front, cgroup) =
            (peaks.clone(), done.clone(), front.clone(), cgroup.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(c) = read_cgroup(&cgroup) {
                    peaks.usage.fetch_max(c.usage, Ordering::Relaxed);
                    peaks
                        .working_set
                        .fetch_max(c.working_set, Ordering::Relaxed);
                }
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(2), front.get("/metrics")).await
                {
                    let text = String::from_utf8_lossy(&r.body);
                    if let Some(v) = metric(&text, "process_resident_memory_bytes") {
                        peaks.resident.fetch_max(v, Ordering::Relaxed);
                    }
                    if let Some(v) = metric(&text, "cairn_mapped_resident_bytes") {
                        peaks.mapped.fetch_max(v, Ordering::Relaxed);
                    }
                }
                peaks.samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };
    let deadline = Instant::now() + TEST_DEADLINE;

    // Writes.
    let write_start = Instant::now();
    let hashes: Arc<Mutex<Vec<(u64, Hash)>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (front, hashes, next) = (front.clone(), hashes.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= blobs || Instant::now() > deadline {
                    return;
                }
                let bytes = content(i);
                let hash = Hash::of(&bytes);
                let put = front.request("PUT", "/v1/blobs", &[], Bytes::from(bytes));
                let r = tokio::time::timeout(REQUEST_TIMEOUT, put)
                    .await
                    .unwrap_or_else(|_| panic!("blob {i}: no answer in {REQUEST_TIMEOUT:?}"))
                    .unwrap_or_else(|e| panic!("blob {i}: {e}"));
                assert!(r.status == 201 || r.status == 200, "blob {i}: {}", r.status);
                hashes.lock().push((i, hash));
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let write_secs = write_start.elapsed().as_secs_f64();
    let hashes = hashes.lock().clone();
    assert_eq!(
        hashes.len() as u64,
        blobs,
        "not every blob was written in time"
    );
    let after_writes = read_cgroup(&cgroup).unwrap_or_default();

    // Reads: every blob, READ_PASSES times, checked against its name.
    let read_start = Instant::now();
    let queue: Arc<Mutex<Vec<Hash>>> = Arc::new(Mutex::new(
        (0..READ_PASSES)
            .flat_map(|_| hashes.iter().map(|(_, h)| *h))
            .collect(),
    ));
    let failures = Arc::new(AtomicU64::new(0));
    let reads_done = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (front, queue, failures) = (front.clone(), queue.clone(), failures.clone());
        let reads_done = reads_done.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let Some(hash) = queue.lock().pop() else {
                    return;
                };
                if Instant::now() > deadline {
                    return;
                }
                let path = format!("/v1/blobs/{hash}");
                reads_done.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(REQUEST_TIMEOUT, front.get(&path)).await {
                    Ok(Ok(r)) if r.status == 200 && Hash::of(&r.body) == hash => {}
                    other => {
                        let what = match other {
                            Ok(Ok(r)) => format!("status {}, {} bytes", r.status, r.body.len()),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer".into(),
                        };
                        eprintln!("read of {hash} failed: {what}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    let read_secs = read_start.elapsed().as_secs_f64();

    // The hot set: the newest blobs, read again and again.
    let mut newest = hashes.clone();
    newest.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    let hot: Arc<Vec<Hash>> = Arc::new(
        newest
            .iter()
            .take((blobs / HOT_SHARE).max(1) as usize)
            .map(|(_, h)| *h)
            .collect(),
    );
    let hot_until = Instant::now() + HOT_READS;
    let hot_reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (front, hot, failures) = (front.clone(), hot.clone(), failures.clone());
        let hot_reads = hot_reads.clone();
        readers.push(tokio::spawn(async move {
            let mut k = r;
            while Instant::now() < hot_until {
                let hash = hot[k % hot.len()];
                k += READERS;
                let path = format!("/v1/blobs/{hash}");
                match tokio::time::timeout(REQUEST_TIMEOUT, front.get(&path)).await {
                    Ok(Ok(r)) if r.status == 200 && Hash::of(&r.body) == hash => {
                        hot_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        eprintln!("hot read of {hash} failed");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    // What stays resident once the hot set is all that is read.
    let hot_metrics = front.get("/metrics").await.unwrap();
    let hot_text = String::from_utf8_lossy(&hot_metrics.body).into_owned();
    let resident_hot =
        metric(&hot_text, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    let mapped_hot =
        metric(&hot_text, "cairn_mapped_resident_bytes").expect("cairn_mapped_resident_bytes");
    let after_hot = read_cgroup(&cgroup).unwrap_or_default();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let after_reads = read_cgroup(&cgroup).unwrap_or_default();

    let oom_killed = docker(&["inspect", "-f", "{{.State.OOMKilled}}", &run]).unwrap();
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &run]).unwrap();
    let restarts = docker(&["inspect", "-f", "{{.RestartCount}}", &run]).unwrap();
    let data_bytes = blobs * BLOB_BYTES as u64;
    let read_bytes = data_bytes * READ_PASSES as u64;
    let report = serde_json::json!({
        "case": "one node, memory limit below its data, read load",
        "bound_mapped_resident_bytes_max": bound.clone().unwrap_or_else(|| "default".into()),
        "memory_limit_mib": limit_mib,
        "data_mib": mib(data_bytes),
        "blobs": blobs,
        "blob_bytes": BLOB_BYTES,
        "write_mb_per_sec": data_bytes as f64 / write_secs / 1e6,
        "read_mb_per_sec": read_bytes as f64 / read_secs / 1e6,
        "reads": reads_done.load(Ordering::Relaxed),
        "failed_reads": failures.load(Ordering::Relaxed),
        "oom_killed": oom_killed,
        "peak_usage_mib": mib(peaks.usage.load(Ordering::Relaxed)),
        "peak_working_set_mib": mib(peaks.working_set.load(Ordering::Relaxed)),
        "working_set_after_writes_mib": mib(after_writes.working_set),
        "working_set_after_reads_mib": mib(after_reads.working_set),
        "peak_process_resident_mib": mib(peaks.resident.load(Ordering::Relaxed)),
        "peak_mapped_resident_mib": mib(peaks.mapped.load(Ordering::Relaxed)),
        "hot_set_mib": mib(hot.len() as u64 * BLOB_BYTES as u64),
        "hot_reads": hot_reads.load(Ordering::Relaxed),
        "process_resident_after_hot_reads_mib": mib(resident_hot),
        "mapped_resident_after_hot_reads_mib": mib(mapped_hot),
        "working_set_after_hot_reads_mib": mib(after_hot.working_set),
        "samples": peaks.samples.load(Ordering::Relaxed),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cairn-bench");
    std::fs::create_dir_all(&out).unwrap();
    let name = match &bound {
        Some(b) => format!("memory-limit-{limit_mib}mib-bound-{b}.json"),
        None => format!("memory-limit-{limit_mib}mib.json"),
    };
    std::fs::write(
        out.join(name),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();

    if oom_killed != "false" || running != "true" || restarts != "0" {
        eprintln!(
            "{}",
            docker(&["logs", "--tail", "60", &run]).unwrap_or_default()
        );
    }
    assert_eq!(oom_killed, "false", "the node was OOM-killed");
    assert_eq!(running, "true", "the node is no longer running");
    assert_eq!(restarts, "0");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "reads failed");
    // With the node's bound on, only the hot set's segments (and a segment or two around it)
    // stay mapped once nothing else is read: the cold ones were let go.
    if bound.as_deref() != Some("0") {
        let bound_bytes = match &bound {
            Some(b) => b.parse::<u64>().expect("a byte count"),
            None => MAPPED_RESIDENT_BYTES_MAX_DEFAULT,
        };
        let allowed = bound_bytes.max(hot.len() as u64 * BLOB_BYTES as u64 + 2 * SEGMENT_BYTES);
        assert!(
            mapped_hot <= allowed,
            "{} MiB of segments stay mapped after the hot reads; at most {} MiB expected",
            mib(mapped_hot),
            mib(allowed)
        );
    }
    assert_eq!(
        reads_done.load(Ordering::Relaxed),
        blobs * READ_PASSES as u64,
        "not every read was made within {TEST_DEADLINE:?}"
    );
    drop(scratch);
}
