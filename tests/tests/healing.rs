//! Self-healing on a real cluster: six nodes on their own loopback addresses (127.0.T.x, one
//! T per test), with fast failure detection and anti-entropy. Each test breaks something (a
//! disk, a node, a copy, the layout) and waits for the cluster to repair itself, reading every
//! blob back on the way.

use std::sync::Arc;

use cairn_client::{Client, Hash, Routing};
use cairn_core::heal::HealSettings;
use cairn_core::layout_edit;

mod common;
use common::*;

/// Puts `count` blobs of mixed sizes; returns them with their hashes.
async fn put_blobs(client: &Client, first: usize, count: usize) -> Vec<(Hash, Vec<u8>)> {
    let mut out = Vec::new();
    for i in first..first + count {
        // Sizes up to 300 KB keep moves quick.
        let bytes = blob(i % 6 + 7 * i);
        let hash = client.put(bytes.clone()).await.unwrap();
        out.push((hash, bytes));
    }
    out
}

async fn read_all(client: &Client, blobs: &[(Hash, Vec<u8>)]) {
    for (hash, bytes) in blobs {
        assert_eq!(&client.get(hash).await.unwrap(), bytes, "{hash}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_refills_a_replica_whose_disk_was_replaced() {
    let mut cluster = TestCluster::start(21).await;
    let client = cluster.client().await;
    let blobs = put_blobs(&client, 0, 40).await;
    let routing = Routing::new(cluster.layout()).unwrap();
    let held_by_n2 = blobs
        .iter()
        .filter(|(h, _)| routing.replicas(h).iter().any(|n| n.id == "n2"))
        .count();
    assert!(held_by_n2 > 0);
    // n2's disk is replaced: the node comes back empty. No hint names it (every put reached
    // it), so only anti-entropy can refill it.
    cluster.kill("n2").await;
    let dir = cluster.configs[cluster.index("n2")].data_dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.restart("n2").await;
    assert_eq!(cluster.node("n2").store().stats().blob_count, 0);
    wait_until("n2 to be refilled by anti-entropy", || {
        blobs
            .iter()
            .all(|(h, b)| cluster.placed_exactly(&routing, h, b))
    })
    .await;
    assert_eq!(
        cluster.node("n2").store().stats().blob_count as usize,
        held_by_n2
    );
    read_all(&client, &blobs).await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_dead_node_re_replicates_everything_it_held() {
    let mut cluster = TestCluster::start(22).await;
    let client = cluster.client().await;
    let blobs = put_blobs(&client, 100, 40).await;
    cluster.kill("n3").await;
    // One command: the layout without n3, told to one node; the others learn it by gossip.
    let next = layout_edit::remove_node(&cluster.layout(), "n3").unwrap();
    cluster.node("n1").apply_layout(next.clone()).unwrap();
    let routing = Routing::new(next).unwrap();
    wait_until("every blob to be on its new replicas", || {
        blobs
            .iter()
            .all(|(h, b)| cluster.placed_exactly(&routing, h, b))
    })
    .await;
    read_all(&client, &blobs).await;
    assert_eq!(client.layout().version, 2, "the client followed the layout");
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_layout_change_keeps_every_blob_readable_and_drops_old_copies_last() {
    let cluster = TestCluster::start_spec(23, |spec| {
        // Slow enough that reads run while data is still moving.
        spec.heal.bandwidth_bytes_per_sec = 400 * 1024;
    })
    .await;
    let client = cluster.client().await;
    let blobs = put_blobs(&client, 200, 30).await;
    // Zones a, b, c each have two nodes; weighing n4, n5, n6 far above n1, n2, n3 moves most
    // blobs entirely, so until they move only the old owners hold them.
    let mut next = cluster.layout();
    next.version = 2;
    for n in &mut next.nodes {
        n.weight = if ["n4", "n5", "n6"].contains(&n.id.as_str()) {
            1000
        } else {
            1
        };
    }
    let old = Arc::new(Routing::new(cluster.layout()).unwrap());
    let routing = Routing::new(next.clone()).unwrap();
    let moved_entirely = blobs
        .iter()
        .filter(|(h, _)| {
            let now: Vec<_> = routing.replicas(h).iter().map(|n| n.id.clone()).collect();
            old.replicas(h).iter().all(|n| !now.contains(&n.id))
        })
        .count();
    assert!(
        moved_entirely > 0,
        "the change must move some blobs entirely"
    );
    for node in cluster.nodes.iter().flatten() {
        node.apply_layout(next.clone()).unwrap();
    }
    // Reads during the move: the client routes by the new layout and falls back to the old.
    read_all(&client, &blobs).await;
    let moving = cluster
        .nodes
        .iter()
        .flatten()
        .any(|n| n.status().report.misplaced_bytes > 0);
    let still_on_old = blobs
        .iter()
        .any(|(h, b)| !cluster.placed_exactly(&routing, h, b));
    assert!(
        moving || still_on_old,
        "the throttle should leave moves running while the reads ran"
    );
    // Writes go to the new owners at once.
    let fresh = put_blobs(&client, 300, 5).await;
    for (h, b) in &fresh {
        for owner in routing.replicas(h) {
            let node = cluster.node(&owner.id);
            wait_until(
                "a new owner to hold a fresh blob",
                || matches!(node.store().get(h), Ok(Some(x)) if x[..] == b[..]),
            )
            .await;
        }
    }
    wait_until("every blob to sit only on its new owners", || {
        blobs
            .iter()
            .all(|(h, b)| cluster.placed_exactly(&routing, h, b))
    })
    .await;
    read_all(&client, &blobs).await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_missed_by_a_replica_is_not_resurrected_and_tombstones_are_purged() {
    let mut cluster = TestCluster::start_spec(24, |spec| {
        spec.heal = HealSettings {
            tombstone_grace_ms: 3_000,
            ..spec.heal.clone()
        };
        // No hints: only anti-entropy can carry the delete to the replica that missed it.
        spec.hints.retry_ms_min = 3_600_000;
        spec.hints.retry_ms_max = 3_600_000;
    })
    .await;
    let client = cluster.client().await;
    let blobs = put_blobs(&client, 400, 10).await;
    let (hash, _) = blobs[3].clone();
    let owners = client.replicas_of(&hash);
    // One replica is down while the blob is deleted.
    cluster.kill(&owners[0]).await;
    assert!(client.delete(&hash).await.unwrap());
    cluster.restart(&owners[0]).await;
    assert!(
        matches!(cluster.node(&owners[0]).store().get(&hash), Ok(Some(_))),
        "the returning replica still holds the deleted blob"
    );
    wait_until("anti-entropy to delete the stale copy", || {
        matches!(cluster.node(&owners[0]).store().get(&hash), Ok(None))
    })
    .await;
    // Past the grace period, every owner has seen the tombstone: it is purged everywhere,
    // and the blob stays deleted.
    wait_until("the tombstone to be purged on every node", || {
        cluster
            .nodes
            .iter()
            .flatten()
            .all(|n| n.status().tombstones == 0)
    })
    .await;
    for node in cluster.nodes.iter().flatten() {
        assert!(matches!(node.store().get(&hash), Ok(None)));
    }
    assert!(client.get(&hash).await.is_err());
    // A put of the same bytes after the delete stands.
    let (again, bytes) = (blobs[3].0, blobs[3].1.clone());
    assert_eq!(client.put(bytes.clone()).await.unwrap(), again);
    let routing = Routing::new(cluster.layout()).unwrap();
    wait_until("the re-put blob to be fully replicated", || {
        cluster.placed_exactly(&routing, &again, &bytes)
    })
    .await;
    read_all(&client, &blobs).await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_a_corrupt_copy_and_repairs_it_from_a_replica() {
    let cluster = TestCluster::start_spec(25, |spec| {
        spec.heal.scrub_bytes_per_sec = 64 * 1024 * 1024;
        spec.heal.scrub_interval_ms = 300;
        // Nothing but the scrub reads the damaged copy: no scheduled anti-entropy.
        spec.heal.anti_entropy_interval_ms = 3_600_000;
    })
    .await;
    let client = cluster.client().await;
    let blobs = put_blobs(&client, 500, 6).await;
    let (hash, bytes) = blobs
        .iter()
        .find(|(_, b)| b.len() > 60_000)
        .cloned()
        .expect("a large blob");
    let owner = client.replicas_of(&hash)[0].clone();
    let i = cluster.index(&owner);
    // Flip one byte of the blob inside its segment file.
    let store_dir = cluster.configs[i].data_dir.join("store");
    // Hints for replicas that missed a put read blobs too, and a hint may be recorded after
    // its put was acknowledged: wait until every replica holds every blob and no hint is left,
    // so that the scrub is what reads the damaged copy.
    wait_until("every blob on all its replicas, and no hint left", || {
        blobs
            .iter()
            .all(|(h, b)| cluster.fully_replicated(&client, h, b))
            && cluster
                .nodes
                .iter()
                .flatten()
                .all(|n| n.hints_pending() == 0)
    })
    .await;
    assert!(
        common::corrupt_copies(&store_dir, &bytes[1000..1064]) > 0,
        "blob bytes not found on disk"
    );
    let node = cluster.node(&owner);
    let started = std::time::Instant::now();
    while node.status().scrub.corrupt_found == 0 {
        let s = node.status();
        assert!(
            started.elapsed() < common::CONVERGE_TIMEOUT,
            "the scrub did not find the corrupt copy: scrub verified {} blobs, found {} corrupt; \
             other reads found {}; the copy verifies as {:?}",
            s.scrub.verified_blobs,
            s.scrub.corrupt_found,
            s.corrupt_found,
            node.store().verify(&hash).map_err(|e| e.to_string())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_until(
        "the copy to be repaired from a replica",
        || matches!(node.store().verify(&hash), Ok(Some(n)) if n == bytes.len() as u64),
    )
    .await;
    assert_eq!(&node.store().get(&hash).unwrap().unwrap()[..], &bytes[..]);
    // One corrupt copy, counted once: by the scrub, and in the total of all finders.
    let status = node.status();
    assert_eq!((status.scrub.corrupt_found, status.corrupt_found), (1, 1));
    let text = metrics_of(node).await;
    assert!(
        text.contains("\ncairn_corrupt_copies_found_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\ncairn_scrub_corrupt_copies_found_total 1\n"),
        "{text}"
    );
    read_all(&client, &blobs).await;
    client.close().await;
    cluster.shutdown().await;
}
