//! The HTTP front of six in-process nodes: every blob request through every node, probes and
//! metrics, and bad input (bad paths, oversized heads and bodies, bodies cut off, clients that
//! stall, floods, missing tokens), none of which may leave a partial blob or stop a node.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cairn_client::Hash;
use cairn_engine::BlobStat;
use cairn_tests::http::{HttpClient, HttpResponse};
use common::{TestCluster, blob, stored_nowhere};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn front(cluster: &TestCluster, id: &str, token: Option<&str>) -> HttpClient {
    HttpClient::new(cluster.node(id).http_addr(), token.map(str::to_string))
}

fn hash_of(response: &HttpResponse) -> Hash {
    response.json()["hash"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_every_blob_over_http() {
    let cluster = TestCluster::start(41).await;
    let ids = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let mut stored = Vec::new();
    for i in 0..12 {
        let bytes = blob(i);
        let writer = front(&cluster, ids[i % 6], None);
        let r = writer.put("/v1/blobs", bytes.clone()).await.unwrap();
        assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
        let hash = hash_of(&r);
        assert_eq!(hash, Hash::of(&bytes));
        assert_eq!(r.json()["len"], bytes.len());
        assert_eq!(r.header("etag"), Some(format!("\"{hash}\"").as_str()));
        stored.push((hash, bytes));
    }
    // A re-put of stored bytes is 200, by name or not.
    let (hash, bytes) = &stored[3];
    let again = front(&cluster, "n2", None);
    assert_eq!(
        again.put("/v1/blobs", bytes.clone()).await.unwrap().status,
        200
    );
    let named = again.put(&format!("/v1/blobs/{hash}"), bytes.clone()).await;
    assert_eq!(named.unwrap().status, 200);

    for (hash, bytes) in &stored {
        for id in ids {
            let r = front(&cluster, id, None);
            let got = r.get(&format!("/v1/blobs/{hash}")).await.unwrap();
            assert_eq!(got.status, 200);
            assert!(got.body == *bytes, "{hash} through {id}");
            assert_eq!(
                got.header("content-length"),
                Some(bytes.len().to_string().as_str())
            );
            let head = r.head(&format!("/v1/blobs/{hash}")).await.unwrap();
            assert_eq!(head.status, 200);
            assert!(head.body.is_empty());
            assert_eq!(head.header("content-length"), got.header("content-length"));
            assert_eq!(head.header("etag"), Some(format!("\"{hash}\"").as_str()));
        }
    }

    // Ranges: a middle, a suffix, an open end, past the end.
    let (hash, bytes) = &stored[5];
    let n = bytes.len();
    assert!(n > 1000);
    let r = front(&cluster, "n4", None);
    let path = format!("/v1/blobs/{hash}");
    for (header, from, to) in [
        ("bytes=10-109".to_string(), 10, 110),
        ("bytes=-50".to_string(), n - 50, n),
        (format!("bytes={}-", n - 7), n - 7, n),
        (format!("bytes=0-{}", n + 100), 0, n),
    ] {
        let got = r
            .request("GET", &path, &[("range", &header)], vec![])
            .await
            .unwrap();
        assert_eq!(got.status, 206, "{header}");
        assert!(got.body == bytes[from..to], "{header}");
        let content_range = format!("bytes {from}-{}/{n}", to - 1);
        assert_eq!(got.header("content-range"), Some(content_range.as_str()));
    }
    let past = format!("bytes={n}-");
    let got = r
        .request("GET", &path, &[("range", &past)], vec![])
        .await
        .unwrap();
    assert_eq!(got.status, 416);
    assert_eq!(got.json()["code"], "range_not_satisfiable");
    assert_eq!(
        got.header("content-range"),
        Some(format!("bytes */{n}").as_str())
    );
    // Several ranges are not served as such: the whole blob comes back.
    let several = r.request("GET", &path, &[("range", "bytes=0-1,5-6")], vec![]);
    let several = several.await.unwrap();
    assert_eq!((several.status, several.body.len()), (200, n));

    // A body that hashes otherwise than its name: 422, and stored nowhere.
    let other = b"not the named blob".to_vec();
    let wrong = r
        .put(&format!("/v1/blobs/{}", stored[0].0), other.clone())
        .await
        .unwrap();
    assert_eq!(wrong.status, 422);
    assert_eq!(wrong.json()["code"], "hash_mismatch");
    assert!(stored_nowhere(&cluster, &Hash::of(&other)));
    // The expected-length header must agree with the body.
    let short = r.request(
        "PUT",
        "/v1/blobs",
        &[("x-cairn-length", "5")],
        other.clone(),
    );
    let short = short.await.unwrap();
    assert_eq!(
        (short.status, short.json()["code"].as_str()),
        (400, Some("length_mismatch"))
    );
    assert!(stored_nowhere(&cluster, &Hash::of(&other)));
    let ok = r.request(
        "PUT",
        "/v1/blobs",
        &[("x-cairn-length", "18")],
        other.clone(),
    );
    assert_eq!(ok.await.unwrap().status, 201);

    // Malformed names are 400; unknown blobs 404; every error body is JSON.
    for bad in ["xyz", &"A".repeat(64), &"0".repeat(63)] {
        let got = r.get(&format!("/v1/blobs/{bad}")).await.unwrap();
        assert_eq!(
            (got.status, got.json()["code"].as_str()),
            (400, Some("bad_hash"))
        );
    }
    let absent = Hash::of(b"never stored");
    let got = r.get(&format!("/v1/blobs/{absent}")).await.unwrap();
    assert_eq!(
        (got.status, got.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        r.head(&format!("/v1/blobs/{absent}")).await.unwrap().status,
        404
    );
    let got = r.request("POST", "/v1/blobs", &[], vec![]).await.unwrap();
    assert_eq!((got.status, got.header("allow")), (405, Some("PUT")));

    // Which replicas hold a blob.
    let got = r.get(&format!("/v1/blobs/{hash}/replicas")).await.unwrap();
    let replicas = got.json()["replicas"].as_array().unwrap().clone();
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|r| r["holds"] == true), "{replicas:?}");

    // Delete through a node that may not hold it: 204, then 404 everywhere.
    let (hash, _) = &stored[7];
    let d = front(&cluster, "n3", None);
    assert_eq!(
        d.delete(&format!("/v1/blobs/{hash}")).await.unwrap().status,
        204
    );
    assert_eq!(
        d.delete(&format!("/v1/blobs/{hash}")).await.unwrap().status,
        404
    );
    for id in ids {
        let got = front(&cluster, id, None)
            .get(&format!("/v1/blobs/{hash}"))
            .await
            .unwrap();
        assert_eq!(got.status, 404, "through {id}");
    }

    // Probes, the cluster's status, metrics.
    assert_eq!(r.get("/healthz").await.unwrap().status, 200);
    let mut ready = r.get("/readyz").await.unwrap();
    for _ in 0..100 {
        if ready.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = r.get("/readyz").await.unwrap();
    }
    assert_eq!(
        ready.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&ready.body)
    );
    let status = r.get("/v1/cluster").await.unwrap().json();
    assert_eq!(status["replication_factor"], 3);
    assert_eq!(status["write_quorum"], 2);
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");
    let blobs: u64 = nodes.iter().map(|n| n["blobs"].as_u64().unwrap()).sum();
    assert_eq!(
        blobs,
        3 * 12,
        "12 blobs + 1, less the deleted one, 3 copies each"
    );
    let metrics = r.get("/metrics").await.unwrap();
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(metrics.body).unwrap();
    for expected in [
        "cairn_http_requests_total{operation=\"get\",status=\"206\"} 4\n",
        "cairn_http_requests_total{operation=\"put\",status=\"422\"} 1\n",
        "cairn_http_request_duration_seconds_bucket{operation=\"get\",status=\"206\",le=\"+Inf\"} 4\n",
        "# TYPE cairn_engine_fsync_duration_seconds histogram\n",
        // This file system takes direct writes.
        "cairn_engine_direct_writes_declined_total 0\n",
        "cairn_peer_state{peer=\"n1\",zone=\"zone-a\",state=\"up\"} 1\n",
        "# TYPE cairn_hints_pending gauge\n",
        "# TYPE cairn_antientropy_rounds_total counter\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        // Cairn's own, and the process families under the names every client library uses.
        assert!(
            name.starts_with("cairn_") || name.starts_with("process_"),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    cluster.shutdown().await;
}

/// Writes `bytes` on a fresh connection and reads until the node closes it or `wait` passes;
/// returns what came back.
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    read_all(&mut tcp, wait).await
}

async fn read_all(tcp: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

const TOKEN: &str = "a-test-token-of-enough-length";
const REQUESTS_IN_FLIGHT_MAX: usize = 4;
const BODY_BYTES_MAX: u64 = 1 << 20;
const IDLE_TIMEOUT_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaves_no_partial_blob_and_no_node_down() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("http.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // A secret: readable by its owner only, or the node refuses it.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cluster = TestCluster::start_spec(42, |spec| {
        spec.http.token_file = Some(token_file.clone());
        spec.http.requests_in_flight_max = REQUESTS_IN_FLIGHT_MAX;
        spec.http.body_bytes_max = BODY_BYTES_MAX;
        spec.http.idle_timeout_ms = IDLE_TIMEOUT_MS;
    })
    .await;
    let addr = cluster.node("n1").http_addr();
    let auth = format!("authorization: Bearer {TOKEN}\r\n");
    let good = front(&cluster, "n1", Some(TOKEN));

    // The token: missing or wrong is 401 on every path but the probes, which answer anyone
    // (a kubelet, a load balancer) and say nothing beyond ready or not, and why.
    for token in [None, Some("wrong-token-of-enough-length")] {
        let c = front(&cluster, "n1", token);
        for path in ["/metrics", "/v1/blobs", "/v1/cluster", "/nowhere"] {
            let r = c.request("PUT", path, &[], b"x".to_vec()).await.unwrap();
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (401, Some("unauthorized")),
                "{path}"
            );
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
        for path in ["/healthz", "/readyz", "/readyz/writes"] {
            let r = c.get(path).await.unwrap();
            assert_eq!(r.status, 200, "{path} without the token");
        }
        let r = c
            .request("PUT", "/healthz", &[], b"x".to_vec())
            .await
            .unwrap();
        assert_eq!(r.status, 405, "only GET is served on a probe");
    }
    assert!(stored_nowhere(&cluster, &Hash::of(b"x")));
    assert_eq!(good.get("/healthz").await.unwrap().status, 200);

    // Paths: traversal, encoded slashes, empty segments, overlong.
    for path in [
        "/v1/blobs/../healthz",
        "/v1/blobs/..%2F..%2Fhealthz",
        "/v1/blobs%2Fx",
        "//v1/blobs",
    ] {
        let r = good.get(path).await.unwrap();
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (400, Some("bad_path")),
            "{path}"
        );
    }
    let long = format!("/v1/blobs/{}", "a".repeat(4000));
    assert_eq!(good.get(&long).await.unwrap().status, 414);

    // Heads over their limits: one huge header, too many headers.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{auth}x-big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let answer = raw(addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let many: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{auth}{many}\r\n");
    let answer = raw(addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 431, "{answer}");

    // Bodies over the maximum: announced, or streamed without a length. The announced one is
    // refused from its head alone, so only the head is sent: a client still writing a body the
    // node will not read may see the connection reset before it reads the answer.
    let big = vec![7u8; BODY_BYTES_MAX as usize + 1];
    let head = format!(
        "PUT /v1/blobs HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\n\r\n",
        big.len()
    );
    let answer = raw(addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
    let mut chunked =
        format!("PUT /v1/blobs HTTP/1.1\r\nhost: x\r\n{auth}transfer-encoding: chunked\r\n\r\n")
            .into_bytes();
    for piece in big.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(addr, &chunked, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(stored_nowhere(&cluster, &Hash::of(&big)));

    // A body cut off mid-stream: the client goes away after part of it.
    let whole = blob(5);
    let head = format!(
        "PUT /v1/blobs HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\n\r\n",
        whole.len()
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&whole[..whole.len() / 2]).await.unwrap();
    drop(tcp);
    // A client that stalls midway: the node closes the connection after the idle timeout.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&whole[..1000]).await.unwrap();
    let started = std::time::Instant::now();
    let answer = read_all(&mut tcp, Duration::from_millis(IDLE_TIMEOUT_MS * 5)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(IDLE_TIMEOUT_MS * 4),
        "the node held a stalled connection for {waited:?}"
    );
    assert!(answer.is_empty() || status_of(&answer) >= 400, "{answer}");
    // A client that sends half a head and stops is cut off too.
    let answer = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost:",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.is_empty() || status_of(&answer) >= 400, "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stored_nowhere(&cluster, &Hash::of(&whole)));
    for id in ["n1", "n2", "n3", "n4", "n5", "n6"] {
        let spool = cluster.configs[cluster.index(id)]
            .data_dir
            .join("http-spool");
        assert_eq!(
            std::fs::read_dir(&spool).unwrap().count(),
            0,
            "{id}'s spool"
        );
    }

    // A flood beyond the request limit: slots held by slow uploads, then many requests at once.
    let mut holders = Vec::new();
    for _ in 0..REQUESTS_IN_FLIGHT_MAX {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&whole[..100]).await.unwrap();
        holders.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut flood = Vec::new();
    for i in 0..64 {
        let c = good.clone();
        flood.push(tokio::spawn(async move {
            c.put("/v1/blobs", blob(1000 + i)).await
        }));
    }
    let mut overloaded = 0;
    for f in flood {
        let r = f.await.unwrap().unwrap();
        assert!(matches!(r.status, 201 | 503), "status {}", r.status);
        if r.status == 503 {
            assert_eq!(r.json()["code"], "overloaded");
            assert_eq!(r.header("retry-after"), Some("1"));
            overloaded += 1;
        }
    }
    assert!(overloaded > 0, "every request of the flood was served");
    drop(holders);
    // The node is still up and serving, and rejected requests stored nothing.
    let mut served = false;
    for _ in 0..50 {
        let r = good.put("/v1/blobs", blob(2000)).await.unwrap();
        if r.status == 201 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the node did not recover from the flood");
    let metrics = String::from_utf8(good.get("/metrics").await.unwrap().body).unwrap();
    assert!(
        metrics.contains("cairn_http_rejected_total{reason=\"requests_in_flight\"}"),
        "{metrics}"
    );
    assert!(stored_nowhere(&cluster, &Hash::of(&whole)));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_quorum_out_of_reach_is_503_with_retry_after() {
    let mut cluster = TestCluster::start_spec(43, |spec| {
        spec.http.deadline_ms = 2_000;
    })
    .await;
    let n1 = front(&cluster, "n1", None);
    let first = n1.put("/v1/blobs", blob(1)).await.unwrap();
    assert_eq!(first.status, 201);
    // Two of three zones gone: no blob can reach two replicas.
    for id in ["n2", "n3", "n5", "n6"] {
        cluster.kill(id).await;
    }
    let r = n1.put("/v1/blobs", blob(2)).await.unwrap();
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Reads still work from zone-a's copies, so the node stays ready until its last peer goes:
    // then a read quorum (2 of factor 3 with write quorum 2) is out of reach.
    cluster.kill("n4").await;
    let mut ready = n1.get("/readyz").await.unwrap();
    for _ in 0..100 {
        if ready.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = n1.get("/readyz").await.unwrap();
    }
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["code"], "not_ready");
    assert_eq!(n1.get("/healthz").await.unwrap().status, 200);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_behind_a_front_is_never_served() {
    let cluster = TestCluster::start(44).await;
    let bytes = blob(5); // 300,005 bytes
    let put = front(&cluster, "n1", None)
        .put("/v1/blobs", bytes.clone())
        .await;
    let hash = hash_of(&put.unwrap());
    let holds =
        |n: &cairn_node::Node| matches!(n.store().stat(&hash), Ok(BlobStat::Present { .. }));
    common::wait_until("every replica to hold the blob", || {
        cluster.nodes.iter().flatten().filter(|n| holds(n)).count() == 3
    })
    .await;
    let holder = cluster
        .configs
        .iter()
        .zip(&cluster.nodes)
        .find(|(_, n)| holds(n.as_ref().unwrap()))
        .map(|(c, _)| c.clone())
        .unwrap();
    let flipped = common::corrupt_copies(&holder.data_dir.join("store"), &bytes[2000..2064]);
    assert!(flipped > 0, "blob bytes not found on {}'s disk", holder.id);
    // Through the damaged replica's own front: the whole blob and a range over the damage come
    // back right, from another replica.
    let c = front(&cluster, &holder.id, None);
    let path = format!("/v1/blobs/{hash}");
    let got = c.get(&path).await.unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "a corrupt copy was served");
    let got = c.request("GET", &path, &[("range", "bytes=1990-2100")], vec![]);
    let got = got.await.unwrap();
    assert_eq!(got.status, 206);
    assert!(got.body == bytes[1990..=2100], "a corrupt range was served");
    assert!(cluster.node(&holder.id).status().corrupt_found >= 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_outlives_the_deadline() {
    const DEADLINE_MS: u64 = 2_000;
    let cluster = TestCluster::start_spec(45, |spec| spec.http.deadline_ms = DEADLINE_MS).await;
    let bytes: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let put = front(&cluster, "n1", None)
        .put("/v1/blobs", bytes.clone())
        .await
        .unwrap();
    assert_eq!(put.status, 201);
    let hash = hash_of(&put);
    // Through a front that holds no replica, so the blob streams from the cluster.
    let n1 = front(&cluster, "n1", None);
    let replicas = n1.get(&format!("/v1/blobs/{hash}/replicas")).await.unwrap();
    let replicas = replicas.json()["replicas"].clone();
    let holders: Vec<&str> = replicas
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    let reader = ["n1", "n2", "n3", "n4", "n5", "n6"]
        .into_iter()
        .find(|id| !holders.contains(id))
        .unwrap();
    let mut tcp = TcpStream::connect(cluster.node(reader).http_addr())
        .await
        .unwrap();
    let head = format!("GET /v1/blobs/{hash} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    // About 4 MiB/s: six seconds for the blob, three times the deadline.
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let took = started.elapsed();
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &received[..split]
    );
    assert!(
        received[split..] == bytes[..],
        "{} of {} bytes",
        received.len() - split,
        bytes.len()
    );
    assert!(
        took > Duration::from_millis(2 * DEADLINE_MS),
        "the read took only {took:?}"
    );
    cluster.shutdown().await;
}

/// A chunked body of `pieces`, one HTTP chunk each, and its end.
fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_naming_its_blob_streams_to_the_cluster_unspooled() {
    let cluster = TestCluster::start(46).await;
    let addr = cluster.node("n1").http_addr();
    let spool = cluster.configs[cluster.index("n1")]
        .data_dir
        .join("http-spool");
    let spooled = || std::fs::read_dir(&spool).map_or(0, |d| d.count());
    let six_mib = common::seeded_bytes(46, 6 << 20);
    let hash = Hash::of(&six_mib);

    // Two thirds of the body sent, the rest held back: nothing is spooled meanwhile (a body
    // over 2 MiB used to go to a file first), and the rest completes the put.
    let head = format!(
        "PUT /v1/blobs/{hash} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        six_mib.len()
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&six_mib[..4 << 20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spooled(), 0, "n1 spooled a body that names its blob");
    tcp.write_all(&six_mib[4 << 20..]).await.unwrap();
    let answer = read_all(&mut tcp, Duration::from_secs(30)).await;
    assert_eq!(status_of(&answer), 201, "{answer}");
    assert!(answer.contains(&hash.to_string()), "{answer}");
    let got = front(&cluster, "n2", None)
        .get(&format!("/v1/blobs/{hash}"))
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert!(
        got.body == six_mib,
        "the streamed blob reads back otherwise"
    );

    // A body that hashes otherwise than its name: 422, and neither name nor body is stored.
    let other = common::seeded_bytes(47, 3 << 20);
    let never = Hash::of(&common::seeded_bytes(48, 3 << 20));
    let head = format!(
        "PUT /v1/blobs/{never} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        other.len()
    );
    let answer = raw(
        addr,
        &[head.as_bytes(), &other].concat(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(status_of(&answer), 422, "{answer}");
    assert!(answer.contains("\"hash_mismatch\""), "{answer}");

    // A chunked body running past its announced length, or ending short of it: 400. The one
    // running long holds its named blob whole in its first bytes and its excess comes a second
    // later, so only holding the last piece back until the body ends keeps it from being
    // stored meanwhile.
    let exact = common::seeded_bytes(49, 3 << 20);
    let named = Hash::of(&exact);
    let (first, second) = exact.split_at(2 << 20);
    for (before, after, what) in [
        (vec![first, second], vec![&b"past the end"[..]], "long"),
        (vec![first, &second[..1000]], vec![], "short"),
    ] {
        let head = format!(
            "PUT /v1/blobs/{named} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             transfer-encoding: chunked\r\nx-cairn-length: {}\r\n\r\n",
            exact.len()
        );
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let before = chunked(&before);
        tcp.write_all(&before[..before.len() - 5]).await.unwrap(); // not the last chunk
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            stored_nowhere(&cluster, &named),
            "{what}: stored before its end"
        );
        tcp.write_all(&chunked(&after)).await.unwrap();
        let answer = read_all(&mut tcp, Duration::from_secs(30)).await;
        assert_eq!(status_of(&answer), 400, "{what}: {answer}");
        assert!(answer.contains("\"length_mismatch\""), "{what}: {answer}");
    }

    // A body cut off part-way: the client goes away.
    let cut = common::seeded_bytes(50, 5 << 20);
    let head = format!(
        "PUT /v1/blobs/{} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        Hash::of(&cut),
        cut.len()
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&cut[..3 << 20]).await.unwrap();
    drop(tcp);

    tokio::time::sleep(Duration::from_secs(1)).await;
    for refused in [&other[..], &exact, &cut] {
        assert!(stored_nowhere(&cluster, &Hash::of(refused)));
    }
    assert!(stored_nowhere(&cluster, &never));
    assert_eq!(spooled(), 0);
    cluster.shutdown().await;
}
