//! What an operator meets on day two, tried with the real `cairn` command: configuration
//! checks that name a misspelled key, secrets only their owner may read, exit codes that say
//! what happened, standard input and output. The binary is `target/debug/cairn`
//! (`scripts/test` builds it first; `CAIRN_BIN` overrides it).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_node::dev::{self, ClusterFiles};
use common::{TestCluster, metrics_of};

/// Runs `cairn` with `args` (and `stdin`), returning what it printed and its exit status.
fn cairn(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(cairn_tests::cairn_bin())
        .args(args)
        .env("CAIRN_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn runs");
    let mut input = child.stdin.take().expect("a pipe");
    input.write_all(stdin.unwrap_or_default()).expect("stdin");
    drop(input);
    child.wait_with_output().expect("cairn ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cluster_files(dir: &Path) -> ClusterFiles {
    let spec = dev::ClusterSpec::local(3, 3, [127, 0, 0, 1], 17_100);
    dev::write_cluster(dir, &spec).expect("cluster files")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn config_check_names_a_misspelled_key_its_file_line_and_the_closest_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let files = cluster_files(dir.path());
    let config = files.node_configs[0].to_str().unwrap().to_string();
    let good = cairn(&["config", "check", &config], None);
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert!(
        text(&good.stdout).contains("ok (node n1"),
        "{}",
        text(&good.stdout)
    );

    let original = std::fs::read_to_string(&config).unwrap();
    // The same file without its id serves any node named by the environment.
    let anonymous = original
        .lines()
        .filter(|l| !l.starts_with("id = "))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, &anonymous).unwrap();
    let by_env = Command::new(cairn_tests::cairn_bin())
        .args(["config", "check", &config])
        .env("CAIRN_NODE_ID", "n1")
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", text(&by_env.stderr));
    assert!(
        text(&by_env.stdout).contains("id from CAIRN_NODE_ID"),
        "{}",
        text(&by_env.stdout)
    );
    let nameless = cairn(&["config", "check", &config], None);
    assert!(!nameless.status.success());
    assert!(
        text(&nameless.stderr).contains("no node id"),
        "{}",
        text(&nameless.stderr)
    );
    let bad_listen = Command::new(cairn_tests::cairn_bin())
        .args(["node", "--config", &config])
        .env("CAIRN_NODE_ID", "n1")
        .env("CAIRN_LISTEN", "seven")
        .output()
        .unwrap();
    assert!(!bad_listen.status.success());
    assert!(
        text(&bad_listen.stderr).contains("CAIRN_LISTEN=\"seven\""),
        "{}",
        text(&bad_listen.stderr)
    );

    // A misspelling at the top level, then one inside a section.
    let top = original.replacen("data_dir", "data_dri", 1);
    std::fs::write(&config, &top).unwrap();
    let line = top.lines().position(|l| l.starts_with("data_dri")).unwrap() + 1;
    let bad = cairn(&["config", "check", &config], None);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(err.contains("unknown key `data_dri`"), "{err}");
    assert!(err.contains("did you mean `data_dir`?"), "{err}");
    assert!(err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains(&config), "{err}");
    // `cairn node` refuses to start on the same file, with the same words.
    let node = cairn(&["node", "--config", &config], None);
    assert!(!node.status.success());
    assert!(text(&node.stderr).contains("unknown key `data_dri`"));

    assert!(original.contains("\n[heal]\n") && original.contains("anti_entropy_interval_ms"));
    let section = original.replacen("anti_entropy_interval_ms", "anti_entropy_interval", 1);
    std::fs::write(&config, section).unwrap();
    let bad = cairn(&["config", "check", &config], None);
    let err = text(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("unknown key `anti_entropy_interval`")
            && err.contains("did you mean `anti_entropy_interval_ms`?"),
        "{err}"
    );
}

#[test]
fn secrets_are_written_for_their_owner_only_and_loose_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = cluster_files(dir.path());
    let certs = &files.certs;
    let mut secrets = vec![certs.join("ca.key"), certs.join("client.key")];
    secrets.extend((1..=3).map(|i| certs.join(format!("n{i}.key"))));
    secrets.push(certs.join("s3-credentials.toml"));
    for secret in &secrets {
        assert_eq!(mode(secret), 0o600, "{}", secret.display());
    }
    // A key others may read: refused at start and by the check, with the fix.
    let key = certs.join("n1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = files.node_configs[0].to_str().unwrap().to_string();
    for args in [
        vec!["config", "check", config.as_str()],
        vec!["node", "--config", config.as_str()],
    ] {
        let out = cairn(&args, None);
        assert!(!out.status.success(), "{args:?} started with a loose key");
        let err = text(&out.stderr);
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{args:?}: {err}"
        );
    }
    // Writing the files again narrows what an older version left open.
    dev::write_cluster(
        dir.path(),
        &dev::ClusterSpec::local(3, 3, [127, 0, 0, 1], 17_100),
    )
    .unwrap();
    assert_eq!(mode(&key), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reads_standard_input_get_writes_standard_output_and_stat_exits_1_when_missing() {
    let cluster = TestCluster::start(61).await;
    let client = cluster.files.client_config.to_str().unwrap().to_string();
    let bytes = b"artifact bytes from a pipe\n".repeat(1000);
    let put = {
        let (client, bytes) = (client.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || cairn(&["--client", &client, "put", "-"], Some(&bytes)))
            .await
            .unwrap()
    };
    assert!(put.status.success(), "{}", text(&put.stderr));
    let hash = text(&put.stdout).trim().to_string();
    assert_eq!(hash, cairn_client::Hash::of(&bytes).to_string());

    let (c, h) = (client.clone(), hash.clone());
    let get =
        tokio::task::spawn_blocking(move || cairn(&["--client", &c, "get", &h, "-o", "-"], None))
            .await
            .unwrap();
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(
        get.stdout, bytes,
        "get -o - writes the blob to standard output"
    );

    let (c, h) = (client.clone(), hash.clone());
    let found = tokio::task::spawn_blocking(move || cairn(&["--client", &c, "stat", &h], None))
        .await
        .unwrap();
    assert_eq!(found.status.code(), Some(0), "{}", text(&found.stderr));
    let missing = cairn_client::Hash::of(b"never stored").to_string();
    let (c, h) = (client.clone(), missing.clone());
    let not_found = tokio::task::spawn_blocking(move || cairn(&["--client", &c, "stat", &h], None))
        .await
        .unwrap();
    assert_eq!(
        not_found.status.code(),
        Some(1),
        "{}",
        text(&not_found.stdout)
    );
    assert!(text(&not_found.stdout).contains("not found"));
    cluster.shutdown().await;
}

/// Runs `cairn --client FILE args...` off the async threads.
async fn cairn_with(client: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--client".to_string(), client.to_str().unwrap().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        cairn(&args, None)
    })
    .await
    .unwrap()
}

/// Runs `cairn gc` until it exits 0 (it ran), checking that every other answer is "postponed"
/// (75); panics after `deadline`.
async fn gc_until_it_runs(client: &Path, deadline: std::time::Duration) -> Output {
    let started = std::time::Instant::now();
    loop {
        let gc = cairn_with(client, &["gc"]).await;
        match gc.status.code() {
            Some(0) => return gc,
            Some(75) => assert!(
                text(&gc.stdout).contains("postponed"),
                "{}",
                text(&gc.stdout)
            ),
            other => panic!("cairn gc exited {other:?}: {}", text(&gc.stderr)),
        }
        assert!(
            started.elapsed() < deadline,
            "the collector still postponed after {deadline:?}: {}",
            text(&gc.stdout)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_waited_for_and_the_collector_resumes_once_the_moves_are_over() {
    let mut cluster = TestCluster::start_spec(62, |spec| {
        // Slow enough that the removed node still holds copies for a few seconds.
        spec.heal.bandwidth_bytes_per_sec = 512 * 1024;
    })
    .await;
    let client_file = cluster.files.client_config.clone();
    let client = cluster.client().await;
    for i in 0..20 {
        client
            .put(common::seeded_bytes(i, 300_000))
            .await
            .expect("put");
    }
    client.close().await;
    let n3_blobs = || cluster.node("n3").store().stats().blob_count;
    assert!(n3_blobs() > 0);

    let removed = cairn_with(&client_file, &["layout", "remove", "n3"]).await;
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    // While data moves, the collector is postponed, says why, and exits 75.
    let gc = cairn_with(&client_file, &["gc"]).await;
    assert_eq!(gc.status.code(), Some(75), "{}", text(&gc.stdout));
    assert!(text(&gc.stdout).contains("a layout change is still moving data"));

    // `layout status` is done only once n3, still running, has handed everything off.
    let started = std::time::Instant::now();
    let mut waited_for_n3 = false;
    loop {
        let status = cairn_with(&client_file, &["layout", "status", "--once"]).await;
        assert!(status.status.success(), "{}", text(&status.stderr));
        let said = text(&status.stdout);
        if said.contains("done") {
            assert_eq!(
                n3_blobs(),
                0,
                "done while the removed node holds copies: {said}"
            );
            break;
        }
        waited_for_n3 |= said.contains("waiting for") && said.contains("n3");
        assert!(
            started.elapsed().as_secs() < 120,
            "moves never done: {said}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(waited_for_n3, "the removed node was never named as awaited");

    // The collector resumes by itself: `cairn gc` runs, and the previous layout is forgotten.
    gc_until_it_runs(&client_file, std::time::Duration::from_secs(60)).await;
    let n1_dir = cluster.configs[cluster.index("n1")].data_dir.clone();
    common::wait_until("n1 to forget the previous layout", || {
        !n1_dir.join("layout.previous.toml").exists()
    })
    .await;
    // ... also after a restart.
    cluster.kill("n1").await;
    cluster.restart("n1").await;
    let gc = gc_until_it_runs(&client_file, std::time::Duration::from_secs(10)).await;
    assert!(text(&gc.stdout).contains("n1:"), "{}", text(&gc.stdout));
    cluster.shutdown().await;
}

/// Bytes of segment files over the running nodes.
fn segment_bytes(cluster: &TestCluster) -> u64 {
    cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.status().space.segment_files_bytes)
        .sum()
}

/// Segment files in a node's store.
fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("store").join("segments"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_gives_space_back_by_itself_and_a_drained_node_ends_empty() {
    const SEGMENT_BYTES: u64 = 2 * 1024 * 1024;
    let cluster = TestCluster::start_spec(63, |spec| {
        spec.segment_bytes = SEGMENT_BYTES;
        spec.space.compaction_interval_ms = 500;
    })
    .await;
    let client_file = cluster.files.client_config.clone();
    let client = cluster.client().await;
    let mut blobs = Vec::new();
    for i in 0..60 {
        let bytes = common::seeded_bytes(1000 + i, 200_000);
        blobs.push((client.put(bytes.clone()).await.unwrap(), bytes));
    }
    let full = segment_bytes(&cluster);
    // Two thirds go: their copies become dead bytes on every replica.
    let (gone, kept): (Vec<_>, Vec<_>) =
        blobs.into_iter().enumerate().partition(|(i, _)| i % 3 != 0);
    for (_, (hash, _)) in &gone {
        client.delete(hash).await.unwrap();
    }
    // Compaction has given the space back once the nodes are down to the segment files their
    // live bytes fill plus an open one each (about 13 of the 20 or so files the puts took, with
    // a third of the blobs kept), and to under three quarters of the bytes in any case, should
    // a replica's delete still be on its way. Files are whole segments: a bound of half the
    // bytes sat on the outcome (runs ended at 8 to 10 files of 20 or 21).
    let reachable = || -> u64 {
        (cluster.nodes.iter().flatten())
            .map(|n| (n.status().space.live_bytes.div_ceil(SEGMENT_BYTES) + 1) * SEGMENT_BYTES)
            .sum()
    };
    let figures = || {
        let per_node: Vec<String> = (cluster.nodes.iter().flatten())
            .map(|n| {
                let space = n.status().space;
                format!(
                    "{}: {} segment bytes, {} live",
                    n.id(),
                    space.segment_files_bytes,
                    space.live_bytes
                )
            })
            .collect();
        format!("({full} bytes after the puts; {})", per_node.join("; "))
    };
    common::wait_until_showing(
        "compaction to give back the deleted bytes",
        || segment_bytes(&cluster) <= reachable().min(full * 3 / 4),
        figures,
    )
    .await;
    let reclaimed: u64 = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.status().space.compaction_reclaimed_bytes)
        .sum();
    assert!(reclaimed > 0);
    for (_, (hash, bytes)) in &kept {
        assert_eq!(&client.get(hash).await.unwrap()[..], &bytes[..]);
    }
    for (_, (hash, _)) in &gone {
        assert!(client.get(hash).await.is_err(), "a deleted blob came back");
    }

    // Draining a node: it hands everything off, empties its store and says it can go.
    let n6_dir = cluster.configs[cluster.index("n6")].data_dir.clone();
    assert!(segment_files(&n6_dir) > 0);
    let drain = cairn_with(&client_file, &["drain", "n6", "--timeout-secs", "120"]).await;
    let said = text(&drain.stdout);
    assert_eq!(
        drain.status.code(),
        Some(0),
        "{said}{}",
        text(&drain.stderr)
    );
    assert!(said.contains("n6 holds nothing"), "{said}");
    assert!(said.contains("can be stopped"), "{said}");
    assert_eq!(segment_files(&n6_dir), 0, "n6 still has segment files");
    assert_eq!(cluster.node("n6").store().stats().blob_count, 0);
    let status = cairn_with(&client_file, &["status"]).await;
    assert!(status.status.success());
    for (_, (hash, bytes)) in &kept {
        assert_eq!(&client.get(hash).await.unwrap()[..], &bytes[..]);
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_disk_is_refilled_by_cairn_repair_and_cairn_scrub_reports_corruption() {
    let mut cluster = TestCluster::start(64).await;
    let client_file = cluster.files.client_config.clone();
    let client = cluster.client().await;
    let mut blobs = Vec::new();
    for i in 0..40 {
        let bytes = common::seeded_bytes(2000 + i, 250_000);
        blobs.push((client.put(bytes.clone()).await.unwrap(), bytes));
    }
    let clean = cairn_with(&client_file, &["repair"]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
    assert!(text(&clean.stdout).contains("every blob has all its copies"));

    // The disk replacement procedure of the README: stop the node, give it an empty data
    // directory, start it, run `cairn repair --node` until it says every copy is back.
    let n2_blobs = cluster.node("n2").store().stats().blob_count;
    let n2_live = cluster.node("n2").status().space.live_bytes;
    cluster.kill("n2").await;
    let dir = cluster.configs[cluster.index("n2")].data_dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.restart("n2").await;
    let started = std::time::Instant::now();
    let repair = cairn_with(
        &client_file,
        &["repair", "--node", "n2", "--timeout-secs", "120"],
    )
    .await;
    let took = started.elapsed();
    let said = text(&repair.stdout);
    assert_eq!(
        repair.status.code(),
        Some(0),
        "{said}{}",
        text(&repair.stderr)
    );
    let node = cluster.node("n2");
    assert_eq!(node.store().stats().blob_count, n2_blobs, "{said}");
    println!(
        "disk replacement: n2 refilled with {n2_blobs} blobs, {n2_live} bytes, in {:.1} s",
        took.as_secs_f64()
    );
    let routing = cairn_client::Routing::new(cluster.layout()).unwrap();
    for (hash, bytes) in &blobs {
        assert!(cluster.placed_exactly(&routing, hash, bytes));
    }

    // A scrub now, on a node whose scheduled scrub is off: clean, then a corrupt copy found.
    let scrub = cairn_with(&client_file, &["scrub", "--node", "n1"]).await;
    assert_eq!(scrub.status.code(), Some(0), "{}", text(&scrub.stdout));
    assert!(text(&scrub.stdout).contains("no corrupt copy"));
    let (hash, bytes) = blobs
        .iter()
        .find(|(h, _)| routing.replicas(h).iter().any(|n| n.id == "n1"))
        .unwrap();
    let n1_store = cluster.configs[cluster.index("n1")].data_dir.join("store");
    assert!(common::corrupt_copies(&n1_store, &bytes[1000..1064]) > 0);
    let scrub = cairn_with(&client_file, &["scrub", "--node", "n1"]).await;
    let said = text(&scrub.stdout);
    assert_eq!(scrub.status.code(), Some(1), "{said}");
    assert!(said.contains("1 corrupt copies found"), "{said}");
    common::wait_until(
        "the corrupt copy to be repaired",
        || matches!(cluster.node("n1").store().get(hash), Ok(Some(b)) if b[..] == bytes[..]),
    )
    .await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_recovery_dropped_is_shown_and_a_damaged_segment_is_moved_aside() {
    let mut cluster = TestCluster::start_spec(65, |spec| {
        spec.segment_bytes = 1024 * 1024;
    })
    .await;
    let client_file = cluster.files.client_config.clone();
    let client = cluster.client().await;
    let mut blobs = Vec::new();
    for i in 0..60 {
        let bytes = common::seeded_bytes(3000 + i, 100_000);
        blobs.push((client.put(bytes.clone()).await.unwrap(), bytes));
    }
    let before = cluster.node("n4").store().stats().blob_count;
    cluster.kill("n4").await;
    let segments_dir = cluster.configs[cluster.index("n4")]
        .data_dir
        .join("store")
        .join("segments");
    let mut segments: Vec<_> = std::fs::read_dir(&segments_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // The first segment loses its second half; the second's header is damaged.
    let first = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    let len = first.metadata().unwrap().len();
    first.set_len(len / 2).unwrap();
    drop(first);
    {
        use std::os::unix::fs::FileExt;
        let second = std::fs::OpenOptions::new()
            .write(true)
            .open(&segments[1])
            .unwrap();
        second.write_at(b"XXXX", 0).unwrap();
    }
    cluster.restart("n4").await;
    let status = cluster.node("n4").status();
    let after = cluster.node("n4").store().stats().blob_count;
    assert!(after < before);
    assert_eq!(
        status.recovery.records_lost,
        before - after,
        "{:?}",
        status.recovery
    );
    assert_eq!(status.recovery.unreadable_segments, 1);
    assert_eq!(status.recovery.moved_aside.len(), 1);
    assert!(
        std::path::Path::new(&status.recovery.moved_aside[0]).exists(),
        "{:?}",
        status.recovery
    );
    assert!(
        !segments[1].exists(),
        "the damaged segment is moved out of the way"
    );
    let shown = cairn_with(&client_file, &["status"]).await;
    let said = text(&shown.stdout);
    assert!(
        said.contains(&format!(
            "n4: the last open dropped {} records",
            before - after
        )),
        "{said}"
    );
    let text_metrics = metrics_of(cluster.node("n4")).await;
    assert!(
        text_metrics.contains(&format!(
            "\ncairn_recovery_records_lost {}\n",
            before - after
        )),
        "{text_metrics}"
    );
    // The cluster is right again: anti-entropy brings back every copy.
    common::wait_until("n4 refilled from its peers", || {
        blobs
            .iter()
            .all(|(h, b)| cluster.fully_replicated(&client, h, b))
    })
    .await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_dev_logs_name_their_node_keep_client_mistakes_quiet_and_a_layout_change_suspects_nobody()
 {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port();
    let mut dev = Command::new(cairn_tests::cairn_bin())
        .args(["dev", "--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        // The default filter, with the failure detector's state changes shown.
        .env("CAIRN_LOG", "info,s3s=off,cairn_node::healing=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(dev.stdout.take().unwrap());
    let stderr = dev.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut all).unwrap();
        all
    });
    // Serving once it prints how to try it.
    for line in stdout.lines() {
        if line.unwrap().starts_with("Serving until") {
            break;
        }
    }
    let client_file = dir.path().join("client.toml");
    assert!(client_file.exists());
    // A client's mistake: a bucket that does not exist.
    let env = std::fs::read_to_string(dir.path().join("s3.env")).unwrap();
    let value = |key: &str| {
        env.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("export {key}="))
                    .or_else(|| l.strip_prefix(&format!("{key}=")))
            })
            .unwrap_or_else(|| panic!("{key} in s3.env: {env}"))
            .trim_matches('"')
            .to_string()
    };
    let signer = cairn_tests::s3::S3Signer {
        access_key: value("AWS_ACCESS_KEY_ID"),
        secret_key: value("AWS_SECRET_ACCESS_KEY"),
        region: "us-east-1".into(),
        clock_offset_secs: 0,
    };
    let s3_addr =
        std::net::SocketAddr::from(([127, 0, 0, 1], base + cairn_node::dev::DEV_S3_PORT_OFFSET));
    let s3 = cairn_tests::s3::S3Client::new(s3_addr, signer);
    let missing = s3
        .request("GET", "/no-such-bucket-typo", &[], &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    // A layout change, followed to its end.
    let changed = cairn_with(&client_file, &["layout", "reweight", "n1", "150"]).await;
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let moved = cairn_with(&client_file, &["layout", "status", "--timeout-secs", "120"]).await;
    assert!(
        moved.status.success(),
        "{}{}",
        text(&moved.stdout),
        text(&moved.stderr)
    );
    // The layout job's call, applying the file of the cluster's own layout: nothing to do
    // with --unchanged-ok, refused without it.
    let shown = cairn_with(&client_file, &["layout", "show"]).await;
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let current = dir.path().join("current-layout.toml");
    std::fs::write(&current, &shown.stdout).unwrap();
    let current = current.to_str().unwrap();
    let again = cairn_with(
        &client_file,
        &["layout", "apply", "--unchanged-ok", current],
    )
    .await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("nothing to apply"),
        "{}",
        text(&again.stdout)
    );
    let refused = cairn_with(&client_file, &["layout", "apply", current]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("is not above"),
        "{}",
        text(&refused.stderr)
    );
    let since_change = std::time::Instant::now();
    while since_change.elapsed() < std::time::Duration::from_secs(3) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dev.id().to_string())
        .status();
    dev.wait().unwrap();
    let all = logs.join().unwrap();
    let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 10, "{all}");
    for line in &lines {
        assert!(
            line.contains("node{id=n"),
            "a line without its node: {line}"
        );
        assert!(!line.contains("ERROR"), "an ERROR line: {line}");
        assert!(!line.contains("peer down"), "a peer seen down: {line}");
    }
    // Peers start suspected until first heard; from the layout change on, none is.
    let change = lines
        .iter()
        .position(|l| l.contains("adopting layout"))
        .unwrap_or_else(|| panic!("the layout change is logged: {all}"));
    for line in &lines[change..] {
        assert!(!line.contains("to=Suspect"), "a peer suspected: {line}");
    }
}

/// The `cairn_*` metric names a text names (histogram suffixes taken off).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("cairn_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let name = &text[start..end];
        if !preceded && !name.starts_with("cairn_dashboard") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        i = end.max(start + 1);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alert_rules_and_the_dashboard_name_is_one_a_node_exports() {
    let cluster = TestCluster::start(66).await;
    let exported: std::collections::BTreeSet<String> = metrics_of(cluster.node("n1"))
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("monitoring");
    for file in [
        "cairn-alerts.yml",
        "cairn-alerts.test.yml",
        "cairn-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let named = metric_names(&text);
        assert!(named.len() > 5, "{file}: {named:?}");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no node exports: {unknown:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_stored_already_is_not_sent_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = TestCluster::start(67).await;
    let client_file = cluster.files.client_config.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("artifact.bin");
    let bytes = common::seeded_bytes(67, 8 * 1024 * 1024);
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();
    let first = cairn_with(&client_file, &["put", path]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(!text(&first.stderr).contains("no bytes sent"));
    let hash = text(&first.stdout).trim().to_string();
    let again = cairn_with(&client_file, &["put", path]).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), hash);
    assert!(
        text(&again.stderr).contains("no bytes sent"),
        "{}",
        text(&again.stderr)
    );

    // Over HTTP: a PUT naming the blob, asking to continue before its body, is answered at
    // once; the body is never sent.
    let mut tcp = tokio::net::TcpStream::connect(cluster.node("n3").http_addr())
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/blobs/{hash} HTTP/1.1\r\nhost: cairn\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        bytes.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(tcp);

    // Once deleted, the bytes are sent again (and read back whole).
    let removed = cairn_with(&client_file, &["rm", &hash]).await;
    assert!(removed.status.success());
    let third = cairn_with(&client_file, &["put", path]).await;
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert!(!text(&third.stderr).contains("no bytes sent"));
    let client = cluster.client().await;
    assert_eq!(client.get(&hash.parse().unwrap()).await.unwrap(), bytes);
    client.close().await;
    cluster.shutdown().await;
}
