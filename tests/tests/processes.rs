//! Real processes: a six-node cluster of `cairn node` processes on their own loopback
//! addresses, under a write load, while nodes and whole zones are killed (SIGKILL), paused
//! (SIGSTOP) and restarted. Afterwards every acknowledged blob must read back byte for byte
//! and sit on all of its replicas.
//!
//! The `cairn` binary is taken from `CAIRN_BIN`, or next to this test's own executable
//! (`target/debug/cairn`); `scripts/test` builds it first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::Hash;
use parking_lot::Mutex;

mod common;
use common::procs::ProcessCluster;

/// How long the cluster may take to converge after the faults.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two puts of the load.
const LOAD_PAUSE_MS: u64 = 20;
/// Most blobs the load writes (it also stops when told).
const LOAD_BLOBS_MAX: usize = 2_000;

fn content(i: usize) -> Vec<u8> {
    common::seeded_bytes(i as u64 + 7, [100, 4096, 30_000, 200_000][i % 4] + i)
}

async fn pause_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_paused_and_restarted_nodes_and_zones_lose_no_acknowledged_blob() {
    let mut cluster = ProcessCluster::start(&common::test_spec(31), "warn", |_| {});
    // The load gives up on a put after 5 s, so it keeps going through the faults.
    let client = Arc::new(cluster.client(5_000).await);
    // Wait for the cluster to take writes.
    let start = Instant::now();
    while client.put(b"ready".to_vec()).await.is_err() {
        assert!(
            start.elapsed() < START_TIMEOUT,
            "the cluster never took a write"
        );
        pause_ms(200).await;
    }

    let acked: Arc<Mutex<Vec<(Hash, usize)>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, acked, failed, stop) =
            (client.clone(), acked.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < LOAD_BLOBS_MAX {
                match client.put(content(i)).await {
                    Ok(hash) => acked.lock().push((hash, i)),
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                i += 1;
                pause_ms(LOAD_PAUSE_MS).await;
            }
        })
    };

    pause_ms(1_000).await;
    // A node killed and restarted.
    cluster.kill("n1");
    pause_ms(2_000).await;
    cluster.restart("n1");
    pause_ms(1_500).await;
    // A node paused past the failure detector's down timeout, then resumed.
    cluster.signal("n4", "STOP");
    pause_ms(3_000).await;
    cluster.signal("n4", "CONT");
    pause_ms(1_500).await;
    // A whole zone killed, then restarted.
    cluster.kill("n2");
    cluster.kill("n5");
    pause_ms(3_000).await;
    cluster.restart("n2");
    cluster.restart("n5");
    pause_ms(1_500).await;
    // A whole zone paused.
    cluster.signal("n3", "STOP");
    cluster.signal("n6", "STOP");
    pause_ms(2_500).await;
    cluster.signal("n3", "CONT");
    cluster.signal("n6", "CONT");
    pause_ms(1_000).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let acked = acked.lock().clone();
    assert!(
        acked.len() >= 50,
        "the load got only {} puts acknowledged",
        acked.len()
    );
    // Once the cluster has healed, every acknowledged blob sits on every one of its replicas
    // and reads back byte for byte.
    let checker = cluster.client(20_000).await;
    let start = Instant::now();
    let mut missing: Vec<(Hash, String)> = Vec::new();
    loop {
        missing.clear();
        for (hash, _) in &acked {
            for id in client.replicas_of(hash) {
                if !matches!(client.head_on(&id, hash).await, Ok(Some(_))) {
                    missing.push((*hash, id));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < CONVERGE_TIMEOUT,
            "{} copies still missing after {CONVERGE_TIMEOUT:?}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        pause_ms(1_000).await;
    }
    for (hash, i) in &acked {
        assert_eq!(checker.get(hash).await.unwrap(), content(*i), "{hash}");
    }
    checker.close().await;
    // The zone killed was seen going down, said once at WARN per peer and outage (the logs
    // run at WARN): not silently, and not once per hint.
    let n3_log = cluster.log("n3");
    for victim in ["n2", "n5"] {
        let said = n3_log
            .lines()
            .filter(|l| l.contains("peer down") && l.contains(&format!("peer={victim}")))
            .count();
        assert!(
            (1..=3).contains(&said),
            "n3 said {victim} was down {said} times:\n{n3_log}"
        );
    }
    assert!(!n3_log.contains("hint recorded"), "{n3_log}");
    eprintln!(
        "{} puts acknowledged, {} failed during the faults; all fully replicated after {:?}",
        acked.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed()
    );
    client.close().await;
}
