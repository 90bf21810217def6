//! The soak test: a six-node cluster of `cairn node` processes under steady churn (puts,
//! overwrites and deletes through the native client and the S3 front), with a layout change
//! and a node killed and restarted on the way, and the garbage collector and compaction on
//! short intervals. Every so often it prints the space amplification: the bytes the nodes'
//! data directories take on disk over the live bytes times the replication factor. At the end
//! every acknowledged blob and object must read back (and every deleted one be gone), and the
//! amplification must come down to `AMPLIFICATION_MAX` once the churn stops.
//!
//! Environment: `CAIRN_SOAK_SECS`, how long the churn lasts (default `SOAK_SECS_DEFAULT`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::Hash;
use cairn_tests::SplitMix64;
use cairn_tests::s3::{S3Client, S3Signer};

mod common;
use common::procs::ProcessCluster;

const SOAK_SECS_DEFAULT: u64 = 120;
/// Disk bytes over live bytes times the replication factor, at most, once the churn stopped
/// and the collector and compaction caught up.
const AMPLIFICATION_MAX: f64 = 1.5;
/// How long the collector and compaction get to catch up after the churn.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The churn keeps about this many native blobs and S3 keys.
const NATIVE_BLOBS: usize = 120;
const S3_KEYS: u64 = 80;
const BLOB_BYTES_MIN: u64 = 32 * 1024;
const BLOB_BYTES_MAX: u64 = 512 * 1024;
/// Time one operation may take at most: the client's deadline (10 s) and the S3 front's
/// metadata timeouts are far below it, so an operation still pending then is a hang, reported
/// with the state of every node's process rather than left to stall the run.
const OP_TIMEOUT: Duration = Duration::from_secs(90);

/// Each node's process state as the kernel shows it (`R` running, `S` sleeping, `Z` exited, ...).
fn process_states(cluster: &ProcessCluster) -> String {
    let ids = cluster.ids.clone();
    ids.iter()
        .map(|id| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", cluster.pid(id)));
            let state = stat
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
                .flatten()
                .unwrap_or('-');
            format!("{id}:{state}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `work`, or a panic naming `what` and the nodes' states if it takes over `OP_TIMEOUT`.
async fn within<T>(cluster: &ProcessCluster, what: &str, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(out) => out,
        Err(_) => panic!(
            "soak: {what} still pending after {OP_TIMEOUT:?}; node processes: {}",
            process_states(cluster)
        ),
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks: sparse tails do not count).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

struct Model {
    native: BTreeMap<Hash, Vec<u8>>,
    native_deleted: Vec<Hash>,
    objects: BTreeMap<String, Vec<u8>>,
    objects_deleted: Vec<String>,
}

impl Model {
    /// Live bytes: native blobs and distinct object contents (the S3 front stores each
    /// content once).
    fn live_bytes(&self) -> u64 {
        let mut contents: BTreeMap<Hash, u64> = BTreeMap::new();
        for b in self.objects.values() {
            contents.insert(Hash::of(b), b.len() as u64);
        }
        self.native.values().map(|b| b.len() as u64).sum::<u64>() + contents.values().sum::<u64>()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_every_acknowledged_write_and_space_stays_bounded() {
    let soak = Duration::from_secs(
        std::env::var("CAIRN_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(SOAK_SECS_DEFAULT),
    );
    let mut spec = common::test_spec(35);
    spec.segment_bytes = 2 * 1024 * 1024;
    spec.space.compaction_interval_ms = 2_000;
    {
        let s3 = spec.s3.as_mut().expect("the S3 front");
        s3.gc_interval_ms = 3_000;
        s3.gc_grace_ms = 10_000;
        s3.meta_sync_interval_ms = 2_000;
    }
    let factor = spec.replication_factor as f64;
    let mut cluster = ProcessCluster::start(&spec, "warn", |_| {});
    let client = cluster.client(10_000).await;
    let key = cluster
        .config("n1")
        .s3
        .unwrap()
        .load_credentials()
        .unwrap()
        .remove(0);
    let s3 = S3Client::new(
        cluster.config("n1").s3.unwrap().listen,
        S3Signer {
            access_key: key.access_key,
            secret_key: key.secret_key,
            region: "us-east-1".into(),
            clock_offset_secs: 0,
        },
    );
    assert_eq!(
        s3.request("PUT", "/soak", &[], &[], Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    let data_dir = cluster.dir.path().join("data");
    let hello_bytes = 5;

    let mut model = Model {
        native: BTreeMap::new(),
        native_deleted: Vec::new(),
        objects: BTreeMap::new(),
        objects_deleted: Vec::new(),
    };
    let mut rng = SplitMix64::new(0x50a4);
    let started = Instant::now();
    let mut next_sample = started + SAMPLE_EVERY;
    let (mut layout_changed, mut restarted) = (false, false);
    let mut samples: Vec<(u64, u64, u64, f64)> = Vec::new();
    let sample = |model: &Model, at: Duration, samples: &mut Vec<(u64, u64, u64, f64)>| {
        let live = model.live_bytes() + hello_bytes;
        let disk = disk_bytes(&data_dir);
        let amplification = disk as f64 / (live as f64 * factor);
        println!(
            "soak t={:>4}s live={:>6.1} MiB disk={:>7.1} MiB amplification={amplification:.2}",
            at.as_secs(),
            live as f64 / 1048576.0,
            disk as f64 / 1048576.0
        );
        samples.push((at.as_secs(), live, disk, amplification));
        amplification
    };
    let (mut ops, mut failed) = (0u64, 0u64);
    while started.elapsed() < soak {
        let now = started.elapsed();
        if Instant::now() >= next_sample {
            sample(&model, now, &mut samples);
            next_sample += SAMPLE_EVERY;
        }
        if !layout_changed && now >= soak / 3 {
            layout_changed = true;
            let (code, said) = cluster.cairn(&["layout", "reweight", "n2", "200"]);
            assert_eq!(code, Some(0), "{said}");
        }
        if !restarted && now >= soak * 2 / 3 {
            restarted = true;
            cluster.kill("n5");
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.restart("n5");
        }
        ops += 1;
        let len = rng.between(BLOB_BYTES_MIN, BLOB_BYTES_MAX) as usize;
        let content = common::seeded_bytes(rng.next_u64(), len);
        // Three in ten: a native put (a delete once the target is reached); one in ten: a
        // native delete; four in ten: an S3 put (new key or overwrite); two: an S3 delete.
        let dice = rng.below(10);
        let native_put = dice < 3 && model.native.len() < NATIVE_BLOBS;
        let native_delete =
            (dice < 3 && !native_put) || (dice == 3 && model.native.len() > NATIVE_BLOBS / 2);
        if native_put {
            match within(&cluster, "a native put", client.put(content.clone())).await {
                Ok(hash) => {
                    model.native.insert(hash, content);
                }
                Err(_) => failed += 1,
            }
        } else if native_delete {
            let i = rng.below(model.native.len().max(1) as u64) as usize;
            let Some(hash) = model.native.keys().nth(i).copied() else {
                continue;
            };
            // A failed delete may or may not have happened: the blob is checked neither way.
            model.native.remove(&hash);
            match within(&cluster, "a native delete", client.delete(&hash)).await {
                Ok(_) => model.native_deleted.push(hash),
                Err(_) => failed += 1,
            }
        } else if dice < 8 {
            let key = format!("k{}", rng.below(S3_KEYS));
            let path = format!("/soak/{key}");
            // Whatever the answer, the key's old content is no longer expected.
            model.objects.remove(&key);
            model.objects_deleted.retain(|k| *k != key);
            let put = s3.request("PUT", &path, &[], &[], Bytes::from(content.clone()));
            match within(&cluster, "an S3 put", put).await {
                Ok(r) if r.status == 200 => {
                    model.objects.insert(key, content);
                }
                _ => failed += 1,
            }
        } else {
            let i = rng.below(model.objects.len().max(1) as u64) as usize;
            let Some(key) = model.objects.keys().nth(i).cloned() else {
                continue;
            };
            model.objects.remove(&key);
            let path = format!("/soak/{key}");
            let delete = s3.request("DELETE", &path, &[], &[], Bytes::new());
            match within(&cluster, "an S3 delete", delete).await {
                Ok(r) if r.status == 204 => model.objects_deleted.push(key),
                _ => failed += 1,
            }
        }
    }
    println!(
        "soak: {ops} operations in {} s ({failed} failed, not counted), {} blobs and {} objects live",
        started.elapsed().as_secs(),
        model.native.len(),
        model.objects.len()
    );

    // The churn stops: the collector and compaction catch up.
    let settle = Instant::now();
    let final_amplification = loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let a = sample(&model, started.elapsed(), &mut samples);
        if a <= AMPLIFICATION_MAX || settle.elapsed() >= SETTLE_TIMEOUT {
            break a;
        }
    };
    let peak = samples.iter().map(|s| s.3).fold(0.0, f64::max);
    println!(
        "soak: space amplification {final_amplification:.2} at the end ({} s after the churn), {peak:.2} at the worst",
        settle.elapsed().as_secs()
    );

    for (hash, bytes) in &model.native {
        let got = within(&cluster, "a native get", client.get(hash)).await;
        assert_eq!(&got.unwrap()[..], &bytes[..], "{hash}");
    }
    for hash in &model.native_deleted {
        assert!(
            within(&cluster, "a native get", client.get(hash))
                .await
                .is_err(),
            "deleted blob {hash} came back"
        );
    }
    for (key, bytes) in &model.objects {
        let path = format!("/soak/{key}");
        let get = s3.request("GET", &path, &[], &[], Bytes::new());
        let r = within(&cluster, "an S3 get", get).await.unwrap();
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(&r.body[..], &bytes[..], "{key}");
    }
    for key in &model.objects_deleted {
        let path = format!("/soak/{key}");
        let get = s3.request("GET", &path, &[], &[], Bytes::new());
        let r = within(&cluster, "an S3 get", get).await.unwrap();
        assert_eq!(r.status, 404, "deleted object {key} came back");
    }
    assert!(
        final_amplification <= AMPLIFICATION_MAX,
        "space amplification {final_amplification:.2} above {AMPLIFICATION_MAX} after {} s of settling",
        SETTLE_TIMEOUT.as_secs()
    );
    within(&cluster, "closing the client", client.close()).await;
    drop(cluster);
}
