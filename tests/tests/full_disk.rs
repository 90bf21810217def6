//! A full disk, for real: a four-node cluster of `cairn node` processes (factor 3, write
//! quorum 2) where n4's data directory lies on a small file system of its own, which the
//! writes fill. The node must say so plainly and keep serving: `cairn status` and `/metrics`
//! show the full disk and the blobs left with two copies, `/readyz` stays 200 (reads are
//! served) while `/readyz/writes` is 503, and `cairn layout rebalance` moves data off it. The
//! new layout cannot be written on the full disk: the node must not spin on it (it stays
//! well under a core, says so once at WARN, and stays up for its peers), and must adopt it as
//! soon as space is freed. Every acknowledged blob reads back at the end.
//!
//! The file system is `CAIRN_FULL_DISK_DIR`, which must be small (tens of MiB) and empty;
//! `scripts/full-disk-test` mounts a tmpfs for it (that needs root) and runs this test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_client::Hash;
use cairn_node::dev;
use cairn_tests::http::HttpClient;

mod common;
use common::procs::ProcessCluster;

/// Blobs written: far more than the small disk holds.
const BLOBS: usize = 160;
const BLOB_BYTES: usize = 512 * 1024;

/// CPU time (user + system, in clock ticks) a process used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_sec() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

/// Fills the file system under `dir` to the last byte with one file.
/// What another tenant of n4's small file system holds until space comes back.
const TENANT_BYTES: usize = 2 * 1024 * 1024;

fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    while f.write_all(&small[..1]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a small file system of its own in CAIRN_FULL_DISK_DIR (scripts/full-disk-test)"]
async fn a_full_disk_is_shown_keeps_serving_reads_and_does_not_spin() {
    let small = PathBuf::from(
        std::env::var("CAIRN_FULL_DISK_DIR").expect("CAIRN_FULL_DISK_DIR: a small file system"),
    );
    let mut spec = dev::ClusterSpec::local(4, 4, [127, 0, 34, 1], common::TEST_PORT);
    spec.replication_factor = 3;
    spec.write_quorum = 2;
    spec.segment_bytes = 1024 * 1024;
    spec.failure_detector = common::test_spec(34).failure_detector;
    spec.heal = common::test_spec(34).heal;
    for (i, node) in spec.nodes.iter_mut().enumerate() {
        node.1 = std::net::SocketAddr::from(([127, 0, 34, i as u8 + 1], common::TEST_PORT));
    }
    // n4 keeps its data on the small file system.
    let n4_data = small.join("n4");
    let cluster = ProcessCluster::start(&spec, "info", |files| {
        let n4_config = &files.node_configs[3];
        let text = std::fs::read_to_string(n4_config).unwrap();
        let text = text.replace(
            "data_dir = \"data/n4\"",
            &format!("data_dir = {:?}", n4_data),
        );
        assert!(text.contains(n4_data.to_str().unwrap()), "{text}");
        std::fs::write(n4_config, text).unwrap();
    });
    let client = cluster.client(10_000).await;

    // Another tenant of the disk holds some of it, given back at the end: what n4's failed
    // writes leave free when the disk fills (and the filler below takes) may be a page or two.
    let tenant = small.join("tenant");
    std::fs::write(&tenant, vec![0x5Au8; TENANT_BYTES]).unwrap();

    // Writes go on past the point where n4's disk is full (two copies are a quorum).
    let mut acked: Vec<(Hash, Vec<u8>)> = Vec::new();
    for i in 0..BLOBS {
        let bytes = common::seeded_bytes(40_000 + i as u64, BLOB_BYTES);
        match client.put(bytes.clone()).await {
            Ok(hash) => acked.push((hash, bytes)),
            Err(e) => panic!("put {i} failed with one full disk of four: {e}"),
        }
    }
    let (code, said) = cluster.cairn(&["status"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("n4: disk full"), "{said}");
    assert!(said.contains("blobs have fewer than 3 copies"), "{said}");
    let n4 = cluster.http("n4");
    let metrics = String::from_utf8(n4.get("/metrics").await.unwrap().body).unwrap();
    assert!(metrics.contains("\ncairn_disk_full 1\n"), "{metrics}");
    let mut under = 0;
    for i in 0..4 {
        let http = cluster.http(&format!("n{}", i + 1));
        let text = String::from_utf8(http.get("/metrics").await.unwrap().body).unwrap();
        under += text
            .lines()
            .find_map(|l| l.strip_prefix("cairn_under_replicated_blobs "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("the under-replicated gauge");
    }
    assert!(under > 0, "no node counts the blobs n4 lacks");
    println!(
        "n4 full after {} acknowledged puts; {under} blobs counted under-replicated",
        acked.len()
    );
    // Reads are served by the full node; writes are not taken there.
    let ready = n4.get("/readyz").await.unwrap();
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let writes = n4.get("/readyz/writes").await.unwrap();
    assert_eq!(writes.status, 503);
    assert!(String::from_utf8_lossy(&writes.body).contains("disk is full"));

    // Whatever space is left goes too (another tenant of the disk, say): the new layout the
    // rebalance makes cannot be written there.
    let filler = fill(&small);
    let (code, said) = cluster.cairn(&["layout", "rebalance"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("applied"), "{said}");
    let new_layout = cluster.cairn(&["layout", "show"]).1;
    let weight_of = |layout: &str, id: &str| -> u32 {
        let l = cairn_client::Layout::from_toml_str(layout).unwrap();
        l.nodes[l.node_index(id).unwrap()].weight
    };
    assert!(
        weight_of(&new_layout, "n4") < weight_of(&new_layout, "n1"),
        "rebalance must weigh the full disk down: {new_layout}"
    );
    // n4 cannot adopt it: it must neither spin nor go silent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = cluster.pid("n4");
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let used = (cpu_ticks(pid) - before) as f64 / ticks_per_sec() as f64 / window.as_secs_f64();
    assert!(
        used < 0.5,
        "n4 used {:.0}% of a core while it could not adopt",
        used * 100.0
    );
    println!(
        "n4 used {:.1}% of a core while it could not adopt the layout",
        used * 100.0
    );
    let log = cluster.log("n4");
    let warned = log.matches("cannot adopt the cluster's new layout").count();
    assert_eq!(warned, 1, "one WARN line, not a loop:\n{log}");
    let (_, said) = cluster.cairn(&["status"]);
    let n4_line = said
        .lines()
        .find(|l| l.trim_start().starts_with("n4 "))
        .unwrap();
    assert!(n4_line.contains(" up "), "{said}");
    let got = HttpClient::get(&n4, &format!("/v1/blobs/{}", acked[0].0))
        .await
        .unwrap();
    assert_eq!(got.status, 200, "the full node still serves reads");

    // Space comes back: the layout is adopted without anyone's help.
    let filler_bytes = std::fs::metadata(&filler).unwrap().len();
    println!("the filler held {filler_bytes} bytes; the other tenant {TENANT_BYTES}");
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&tenant).unwrap();
    let version = cairn_client::Layout::from_toml_str(&new_layout)
        .unwrap()
        .version;
    let log_tail = || {
        let log = cluster.log("n4");
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "; {}; n4's data: {}; its store: {}; n4's last log lines:\n{}",
            std::process::Command::new("df")
                .arg("-B1")
                .arg(&n4_data)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
            bytes_under(&n4_data),
            bytes_under(&n4_data.join("store")),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    };
    let adopted = || {
        std::fs::read_to_string(n4_data.join("layout.toml"))
            .ok()
            .and_then(|t| cairn_client::Layout::from_toml_str(&t).ok())
            .is_some_and(|l| l.version == version)
    };
    common::wait_until_showing("n4 to adopt the new layout", adopted, log_tail).await;
    assert!(
        cluster
            .log("n4")
            .contains("layout adopted after earlier failures")
    );
    for (hash, bytes) in &acked {
        assert_eq!(&client.get(hash).await.unwrap()[..], &bytes[..], "{hash}");
    }
    client.close().await;
}

/// Bytes under each entry of `dir` (its files, and what each subdirectory holds in all).
fn bytes_under(dir: &std::path::Path) -> String {
    fn total(path: &std::path::Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|d| d.flatten().map(|e| total(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| format!("{} {}", e.file_name().to_string_lossy(), total(&e.path())))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries.join(", ")
}
