//! The S3 front of six in-process nodes: objects written through one node and read, listed and
//! overwritten through the others; metadata replicas that miss writes and catch up; concurrent
//! writers of one key converging; bad requests refused with S3's errors and nothing stored;
//! the garbage collector removing exactly the blobs nothing refers to; and large bodies
//! stored in chunks, read back whole, by range and by part, and collected when refused.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::{Hash, Routing};
use cairn_core::meta::{Partition, Table};
use cairn_tests::http::{HttpClient, HttpResponse};
use cairn_tests::s3::{S3Client, S3Signer, xml_values};
use common::{TestCluster, metrics_of, seeded_bytes, stored_nowhere, wait_until};

const IDS: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

fn signer(cluster: &TestCluster) -> S3Signer {
    let key = cluster.configs[0]
        .s3
        .as_ref()
        .expect("the test cluster runs the S3 front")
        .load_credentials()
        .unwrap()
        .remove(0);
    S3Signer {
        access_key: key.access_key,
        secret_key: key.secret_key,
        region: "us-east-1".into(),
        clock_offset_secs: 0,
    }
}

fn s3(cluster: &TestCluster, id: &str) -> S3Client {
    S3Client::new(cluster.node(id).s3_addr().unwrap(), signer(cluster))
}

async fn call(
    client: &S3Client,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    client
        .request(method, path, query, &[], body)
        .await
        .unwrap()
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The nodes that own a metadata partition.
fn owners(cluster: &TestCluster, part: &Partition) -> Vec<String> {
    let routing = Routing::new(cluster.layout()).unwrap();
    routing
        .replicas(&part.placement_hash())
        .into_iter()
        .map(|n| n.id.clone())
        .collect()
}

/// Every live key one node holds locally in a partition.
fn local_keys(cluster: &TestCluster, id: &str, part: &Partition) -> BTreeSet<String> {
    let page = cluster
        .node(id)
        .meta_store()
        .scan(part, None, b"", usize::MAX, usize::MAX)
        .unwrap();
    page.entries
        .into_iter()
        .filter(|(_, e)| e.value.is_some())
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

fn stored_somewhere(cluster: &TestCluster, hash: &Hash) -> bool {
    !stored_nowhere(cluster, hash)
}

/// Six nodes whose collector runs only when asked, with the shortest grace period. Every
/// object is stored as blobs (none inside its record), since the collector is about blobs.
async fn collector_cluster(seed: u8) -> TestCluster {
    TestCluster::start_spec(seed, |spec| {
        let s3 = spec.s3.as_mut().unwrap();
        s3.gc_grace_ms = cairn_node::limits::GC_GRACE_MS_MIN;
        s3.gc_interval_ms = 0;
        s3.inline_object_bytes_max = 0;
    })
    .await
}

/// Runs one collection on `node` and returns its status once it is over.
async fn collect(node: &cairn_node::Node, what: &str) -> cairn_core::status::GcStatus {
    assert!(node.start_gc());
    wait_until(what, || !node.gc_status().unwrap().running).await;
    node.gc_status().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_through_one_node_are_read_and_listed_through_every_node() {
    let cluster = TestCluster::start(51).await;
    let n1 = s3(&cluster, "n1");
    let r = call(&n1, "PUT", "/shared", &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let mut written = Vec::new();
    for i in 0..12 {
        let key = format!("dir{}/object-{i}", i % 3);
        let bytes = seeded_bytes(i as u64, 1_000 + i * 5_000);
        let writer = s3(&cluster, IDS[i % 6]);
        let r = call(
            &writer,
            "PUT",
            &format!("/shared/{key}"),
            &[],
            bytes.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", md5_hex(&bytes)).as_str())
        );
        // Read-after-write: the very next read, through any other node, sees it.
        let reader = s3(&cluster, IDS[(i + 3) % 6]);
        let got = call(&reader, "GET", &format!("/shared/{key}"), &[], Bytes::new()).await;
        assert_eq!(got.status, 200);
        assert!(got.body == bytes, "{key} read back different bytes");
        written.push(key);
    }
    written.sort();
    for id in IDS {
        let r = call(
            &s3(&cluster, id),
            "GET",
            "/shared",
            &[("list-type", "2")],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(xml_values(&r.body, "Key"), written, "listing through {id}");
        let r = call(
            &s3(&cluster, id),
            "GET",
            "/shared",
            &[("list-type", "2"), ("delimiter", "/")],
            Bytes::new(),
        )
        .await;
        assert_eq!(
            xml_values(&r.body, "Prefix"),
            ["", "dir0/", "dir1/", "dir2/"]
        );
    }
    // An overwrite is what every node serves next; a delete is seen everywhere at once.
    let newer = seeded_bytes(99, 777);
    let r = call(
        &s3(&cluster, "n2"),
        "PUT",
        "/shared/dir0/object-0",
        &[],
        newer.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        &s3(&cluster, "n5"),
        "DELETE",
        "/shared/dir1/object-1",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);
    for id in IDS {
        let c = s3(&cluster, id);
        let got = call(&c, "GET", "/shared/dir0/object-0", &[], Bytes::new()).await;
        assert!(got.body == newer, "{id} served the old bytes");
        let gone = call(&c, "GET", "/shared/dir1/object-1", &[], Bytes::new()).await;
        assert_eq!(gone.status, 404);
        assert_eq!(xml_values(&gone.body, "Code"), ["NoSuchKey"]);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_owner_that_missed_writes_catches_up_and_reads_survive_losing_one() {
    // No background digest exchange: the test's own round is the one that catches up.
    let mut cluster = TestCluster::start_spec(52, |spec| {
        spec.s3.as_mut().unwrap().meta_sync_interval_ms = 3_600_000;
    })
    .await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/catchup", &[], Bytes::new()).await.status,
        200
    );
    let part = Partition::new(Table::Objects, "catchup");
    let owners = owners(&cluster, &part);
    let absent = owners[0].clone();
    let writer_id = IDS
        .iter()
        .find(|id| !owners.contains(&id.to_string()))
        .unwrap();
    let writer = s3(&cluster, writer_id);
    cluster.kill(&absent).await;
    let mut keys = BTreeSet::new();
    for i in 0..20 {
        let key = format!("k{i:02}");
        let r = call(
            &writer,
            "PUT",
            &format!("/catchup/{key}"),
            &[],
            seeded_bytes(i, 300),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "a put with one metadata owner down: {}",
            text(&r)
        );
        keys.insert(key);
    }
    // Writers keep retrying an unreachable owner for a while after their quorum answered;
    // outlast that, so only the digest exchange can bring the writes back.
    let retries = cairn_node::limits::META_CALL_TIMEOUT_MS;
    tokio::time::sleep(Duration::from_millis(retries + 1_000)).await;
    cluster.restart(&absent).await;
    assert!(local_keys(&cluster, &absent, &part).is_empty());
    // One exchange of digests brings the owner that was away up to date.
    let report = cluster.node(&owners[1]).sync_metadata().await.unwrap();
    assert!(report.exchanged >= 1, "{report:?}");
    assert_eq!(local_keys(&cluster, &absent, &part), keys);
    // With another owner down, a read quorum still finds every key.
    cluster.kill(&owners[1]).await;
    let r = call(
        &writer,
        "GET",
        "/catchup",
        &[("list-type", "2")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        xml_values(&r.body, "Key")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        keys
    );
    // With two of three down, the front says so rather than answering from one replica.
    cluster.kill(&owners[2]).await;
    let r = call(&writer, "GET", "/catchup/k00", &[], Bytes::new()).await;
    assert_eq!(r.status, 503, "{}", text(&r));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_converge_on_one_value_everywhere() {
    let cluster = TestCluster::start(53).await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/race", &[], Bytes::new()).await.status,
        200
    );
    let mut tasks = Vec::new();
    for round in 0..5u64 {
        for (i, id) in IDS.iter().enumerate() {
            let client = s3(&cluster, id);
            let bytes = seeded_bytes(round * 10 + i as u64, 2_000);
            tasks.push(tokio::spawn(async move {
                let r = call(&client, "PUT", "/race/contended", &[], bytes.clone()).await;
                assert_eq!(r.status, 200);
                bytes
            }));
        }
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    for id in IDS {
        cluster.node(id).sync_metadata().await.unwrap();
    }
    let part = Partition::new(Table::Objects, "race");
    let stored: Vec<_> = owners(&cluster, &part)
        .iter()
        .map(|id| {
            let page = cluster
                .node(id)
                .meta_store()
                .scan(&part, None, b"", 10, usize::MAX)
                .unwrap();
            page.entries
        })
        .collect();
    assert!(
        stored.windows(2).all(|w| w[0] == w[1]),
        "owners differ: {stored:?}"
    );
    let mut served = BTreeSet::new();
    for id in IDS {
        let got = call(
            &s3(&cluster, id),
            "GET",
            "/race/contended",
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 200);
        served.insert(got.body.clone());
    }
    assert_eq!(served.len(), 1, "nodes serve different values");
    assert!(
        bodies.contains(served.iter().next().unwrap()),
        "the value served was never written"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_s3_errors_and_store_nothing() {
    let cluster = TestCluster::start_spec(54, |spec| {
        spec.s3.as_mut().unwrap().object_bytes_max = 64 * 1024;
    })
    .await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/strict", &[], Bytes::new()).await.status,
        200
    );
    let code = |r: &HttpResponse| xml_values(&r.body, "Code").join(",");

    // A Content-MD5 that does not match the body.
    let body = seeded_bytes(1, 5_000);
    let wrong_md5 = "AAAAAAAAAAAAAAAAAAAAAA==";
    let r = n1
        .request(
            "PUT",
            "/strict/md5",
            &[],
            &[("content-md5", wrong_md5)],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, code(&r).as_str()), (400, "BadDigest"));
    assert!(stored_nowhere(&cluster, &Hash::of(&body)));

    // Over the configured limit, announced by Content-Length.
    let big = seeded_bytes(2, 65 * 1024);
    let r = call(&n1, "PUT", "/strict/big", &[], big.clone()).await;
    assert_eq!((r.status, code(&r).as_str()), (400, "EntityTooLarge"));
    assert!(stored_nowhere(&cluster, &Hash::of(&big)));

    // A wrong secret, an unknown key, a clock 20 minutes slow.
    let mut bad = signer(&cluster);
    bad.secret_key = "not-the-secret-key-at-all".into();
    let r = call(
        &S3Client::new(n1.addr, bad),
        "PUT",
        "/strict/x",
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let mut unknown = signer(&cluster);
    unknown.access_key = "CAIRNUNKNOWNKEY".into();
    let r = call(
        &S3Client::new(n1.addr, unknown),
        "GET",
        "/strict/x",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "InvalidAccessKeyId"));
    let mut slow = signer(&cluster);
    slow.clock_offset_secs = -20 * 60;
    let r = call(
        &S3Client::new(n1.addr, slow),
        "GET",
        "/strict/x",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "RequestTimeTooSkewed"));

    // A body cut off before its Content-Length: the connection ends, nothing is stored.
    let partial = seeded_bytes(3, 10_000);
    let path = "/strict/cut";
    let host = n1.addr.to_string();
    let length = (partial.len() * 2).to_string();
    let mut headers = n1
        .signer
        .sign("PUT", &host, path, &[], &[("content-length", &length)]);
    headers.push(("host".into(), host.clone()));
    headers.push(("content-length".into(), length.clone()));
    let head: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(n1.addr).await.unwrap();
        tcp.write_all(format!("PUT {path} HTTP/1.1\r\n{head}\r\n").as_bytes())
            .await
            .unwrap();
        tcp.write_all(&partial).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut answer = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "a cut-off body was accepted: {answer}"
        );
    }
    let r = call(&n1, "GET", path, &[], Bytes::new()).await;
    assert_eq!((r.status, code(&r).as_str()), (404, "NoSuchKey"));

    // Missing things have their own codes.
    let r = call(&n1, "GET", "/no-such-bucket/x", &[], Bytes::new()).await;
    assert_eq!((r.status, code(&r).as_str()), (404, "NoSuchBucket"));
    let r = call(&n1, "PUT", "/no-such-bucket/x", &[], body.clone()).await;
    assert_eq!((r.status, code(&r).as_str()), (404, "NoSuchBucket"));
    let r = call(
        &n1,
        "GET",
        "/strict/x",
        &[("uploadId", "nope")],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (404, "NoSuchUpload"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_removes_exactly_the_blobs_nothing_refers_to() {
    let grace_ms = cairn_node::limits::GC_GRACE_MS_MIN;
    let cluster = collector_cluster(55).await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/gcbucket", &[], Bytes::new())
            .await
            .status,
        200
    );
    let put = |key: &'static str, bytes: Vec<u8>| {
        let client = n1.clone();
        async move {
            let r = call(&client, "PUT", &format!("/gcbucket/{key}"), &[], bytes).await;
            assert_eq!(r.status, 200, "{}", text(&r));
        }
    };
    let kept = seeded_bytes(10, 4_000); // one object
    let shared = seeded_bytes(11, 4_000); // two objects, one then deleted
    let copied = seeded_bytes(12, 4_000); // an object copied, the original deleted
    let dropped = seeded_bytes(13, 4_000); // an object deleted
    let overwritten = seeded_bytes(14, 4_000); // an object overwritten
    put("kept", kept.clone()).await;
    put("shared-a", shared.clone()).await;
    put("shared-b", shared.clone()).await;
    put("copied", copied.clone()).await;
    put("dropped", dropped.clone()).await;
    put("overwritten", overwritten.clone()).await;
    let r = n1
        .request(
            "PUT",
            "/gcbucket/copy",
            &[],
            &[("x-amz-copy-source", "gcbucket/copied")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    for key in ["shared-a", "copied", "dropped"] {
        assert_eq!(
            call(
                &n1,
                "DELETE",
                &format!("/gcbucket/{key}"),
                &[],
                Bytes::new()
            )
            .await
            .status,
            204
        );
    }
    put("overwritten", seeded_bytes(15, 100)).await;
    // An unfinished upload's part is referred to; an aborted one's is not.
    let part = seeded_bytes(16, 3_000);
    let aborted_part = seeded_bytes(17, 3_000);
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let r = call(
            &n1,
            "POST",
            "/gcbucket/big",
            &[("uploads", "")],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        uploads.push(xml_values(&r.body, "UploadId").remove(0));
    }
    for (id, bytes) in uploads.iter().zip([part.clone(), aborted_part.clone()]) {
        let r = call(
            &n1,
            "PUT",
            "/gcbucket/big",
            &[("partNumber", "1"), ("uploadId", id)],
            bytes,
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
    }
    let r = call(
        &n1,
        "DELETE",
        "/gcbucket/big",
        &[("uploadId", &uploads[1])],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);

    // Within the grace period nothing goes, referred to or not.
    let node = cluster.node("n3");
    let first = collect(node, "the first collection").await;
    assert_eq!((first.deleted, first.candidates), (0, 0), "{first:?}");
    assert!(stored_somewhere(&cluster, &Hash::of(&dropped)));

    tokio::time::sleep(Duration::from_millis(grace_ms + 500)).await;
    let second = collect(node, "the second collection").await;
    assert_eq!(second.errors, 0, "{second:?}");
    assert_eq!(second.deleted, 3, "{second:?}");
    for gone in [&dropped, &overwritten, &aborted_part] {
        assert!(
            stored_nowhere(&cluster, &Hash::of(gone)),
            "an unreferenced blob survived"
        );
    }
    for held in [&kept, &shared, &copied, &part] {
        assert!(
            stored_somewhere(&cluster, &Hash::of(held)),
            "a referenced blob was deleted"
        );
    }
    for (key, bytes) in [("kept", &kept), ("shared-b", &shared), ("copy", &copied)] {
        let got = call(
            &s3(&cluster, "n4"),
            "GET",
            &format!("/gcbucket/{key}"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 200, "{key}: {}", text(&got));
        assert!(got.body == *bytes, "{key}");
    }
    cluster.shutdown().await;
}

/// Dedup makes one blob both an object's chunk and a blob stored through the native API: the
/// collector keeps what the native API holds, a native delete keeps what an object names, and
/// a hold that lands after its blob's delete does not stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_shared_by_an_object_and_the_native_api_stays_for_each() {
    let grace_ms = cairn_node::limits::GC_GRACE_MS_MIN;
    let cluster = collector_cluster(60).await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/dedup", &[], Bytes::new()).await.status,
        200
    );
    let client = cluster.client().await;
    let http = HttpClient::new(cluster.node("n2").http_addr(), None);
    let by_client = seeded_bytes(30, 4_000);
    let by_http = seeded_bytes(31, 4_000);
    let named = seeded_bytes(32, 4_000);
    // Stored through the native API, then as objects, which are then deleted.
    client.put(by_client.clone()).await.unwrap();
    let r = http.put("/v1/blobs", by_http.clone()).await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    for (key, bytes) in [("a", &by_client), ("b", &by_http)] {
        let path = format!("/dedup/{key}");
        let r = call(&n1, "PUT", &path, &[], bytes.clone()).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let r = call(&n1, "DELETE", &path, &[], Bytes::new()).await;
        assert_eq!(r.status, 204);
    }
    // An object whose bytes a client of the native API deletes.
    let r = call(&n1, "PUT", "/dedup/c", &[], named.clone()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(client.delete(&Hash::of(&named)).await.unwrap());
    let r = http
        .delete(&format!("/v1/blobs/{}", Hash::of(&named)))
        .await
        .unwrap();
    assert_eq!(r.status, 204);

    tokio::time::sleep(Duration::from_millis(grace_ms + 500)).await;
    let node = cluster.node("n3");
    let first = collect(node, "the first collection").await;
    assert_eq!(first.errors, 0, "{first:?}");
    assert_eq!(first.deleted, 0, "{first:?}");
    for bytes in [&by_client, &by_http] {
        let got = client.get(&Hash::of(bytes)).await;
        assert!(
            got.as_ref().is_ok_and(|got| got == bytes),
            "the collector removed a blob the native API holds: {:?}",
            got.err()
        );
    }
    let got = call(&s3(&cluster, "n5"), "GET", "/dedup/c", &[], Bytes::new()).await;
    assert_eq!(got.status, 200, "{}", text(&got));
    assert!(got.body == named, "the object's bytes differ");

    // Deleted through the native API too, the two blobs go in the next collection.
    assert!(client.delete(&Hash::of(&by_client)).await.unwrap());
    let r = http
        .delete(&format!("/v1/blobs/{}", Hash::of(&by_http)))
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    tokio::time::sleep(Duration::from_millis(grace_ms + 500)).await;
    let second = collect(node, "the second collection").await;
    assert_eq!((second.errors, second.deleted), (0, 2), "{second:?}");
    for gone in [&by_client, &by_http] {
        assert!(stored_nowhere(&cluster, &Hash::of(gone)));
    }
    assert!(stored_somewhere(&cluster, &Hash::of(&named)));

    // A blob deleted right after its put: its hold, written later, does not stand over the
    // delete's release.
    let brief = client.put(seeded_bytes(33, 4_000)).await.unwrap();
    assert!(client.delete(&brief).await.unwrap());
    let hold_ms = cairn_node::limits::HOLD_LINGER_MS;
    tokio::time::sleep(Duration::from_millis(hold_ms + 1_500)).await;
    let key = cairn_node::meta::marks::blob_hold_key(brief.as_bytes());
    for id in owners(&cluster, &key.part) {
        let page = cluster
            .node(&id)
            .meta_store()
            .scan(&key.part, None, b"", usize::MAX, usize::MAX)
            .unwrap();
        let entry = page.entries.iter().find(|(k, _)| *k == key.key);
        assert!(
            entry.is_some_and(|(_, e)| e.value.is_none()),
            "{id}: the hold of a deleted blob came back: {entry:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_live_inside_their_record_and_read_back_whole_by_range_and_copied() {
    let inline_max = cairn_node::config::S3_INLINE_OBJECT_BYTES_DEV as usize;
    let cluster = TestCluster::start(58).await;
    let n1 = s3(&cluster, "n1");
    let n5 = s3(&cluster, "n5");
    assert_eq!(
        call(&n1, "PUT", "/small", &[], Bytes::new()).await.status,
        200
    );
    let body = seeded_bytes(40, inline_max);
    let r = call(&n1, "PUT", "/small/inline", &[], body.clone()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("etag").unwrap(), format!("\"{}\"", md5_hex(&body)));
    assert!(
        stored_nowhere(&cluster, &Hash::of(&body)),
        "an inline object became a blob"
    );
    let got = call(&n5, "GET", "/small/inline", &[], Bytes::new()).await;
    assert!(
        got.status == 200 && got.body == body,
        "the inline object read back differs"
    );
    let got = n5
        .request(
            "GET",
            "/small/inline",
            &[],
            &[("range", "bytes=100-199")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(got.status, 206);
    assert!(got.body == body[100..200]);
    let r = n1
        .request(
            "PUT",
            "/small/copy",
            &[],
            &[("x-amz-copy-source", "small/inline")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = call(&n5, "GET", "/small/copy", &[], Bytes::new()).await;
    assert!(got.status == 200 && got.body == body, "the copy differs");
    // One byte more is a blob, as before.
    let larger = seeded_bytes(41, inline_max + 1);
    let r = call(&n1, "PUT", "/small/larger", &[], larger.clone()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(
        stored_somewhere(&cluster, &Hash::of(&larger)),
        "a larger object is not a blob"
    );
    let got = call(&n5, "GET", "/small/larger", &[], Bytes::new()).await;
    assert!(got.status == 200 && got.body == larger);
    // An empty object is neither.
    let r = call(&n1, "PUT", "/small/empty", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    let got = call(&n5, "GET", "/small/empty", &[], Bytes::new()).await;
    assert!(got.status == 200 && got.body.is_empty());
    cluster.shutdown().await;
}

/// The chunks `s3::body` cuts a body into.
fn chunks_of(bytes: &[u8]) -> Vec<Hash> {
    let chunk_bytes = cairn_node::limits::S3_CHUNK_BYTES as usize;
    bytes.chunks(chunk_bytes).map(Hash::of).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_stored_in_chunks_read_back_by_range_and_part_and_collected_if_refused() {
    let chunk = cairn_node::limits::S3_CHUNK_BYTES as usize;
    // Long enough that a debug build on a loaded machine takes a body of several chunks
    // within the reference window (a quarter of it).
    let grace_ms = 4 * cairn_node::limits::GC_GRACE_MS_MIN;
    let cluster = TestCluster::start_spec(59, |spec| {
        let s3 = spec.s3.as_mut().unwrap();
        s3.gc_grace_ms = grace_ms;
        s3.gc_interval_ms = 0;
    })
    .await;
    let n1 = s3(&cluster, "n1");
    let n4 = s3(&cluster, "n4");
    assert_eq!(
        call(&n1, "PUT", "/large", &[], Bytes::new()).await.status,
        200
    );

    // A PutObject of two chunks and a bit: each chunk is a blob of its own.
    let body = seeded_bytes(30, 2 * chunk + 7);
    let r = call(&n1, "PUT", "/large/object", &[], body.clone()).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("etag").unwrap(), format!("\"{}\"", md5_hex(&body)));
    let chunks = chunks_of(&body);
    assert_eq!(chunks.len(), 3);
    for hash in &chunks {
        assert!(stored_somewhere(&cluster, hash), "a chunk is missing");
    }
    assert!(
        stored_nowhere(&cluster, &Hash::of(&body)),
        "the body was stored whole"
    );
    let got = call(&n4, "GET", "/large/object", &[], Bytes::new()).await;
    assert_eq!(got.status, 200);
    assert!(got.body == body, "the object read back differs");
    // Ranges across a chunk boundary, and within the last chunk.
    for (first, last) in [
        (chunk - 10, chunk + 9),
        (2 * chunk + 1, 2 * chunk + 6),
        (0, 0),
    ] {
        let range = format!("bytes={first}-{last}");
        let got = n4
            .request(
                "GET",
                "/large/object",
                &[],
                &[("range", &range)],
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(got.status, 206, "{range}");
        assert!(got.body == body[first..=last], "{range}");
    }

    // A multipart upload whose first part is two chunks.
    let r = call(
        &n1,
        "POST",
        "/large/multi",
        &[("uploads", "")],
        Bytes::new(),
    )
    .await;
    let upload = xml_values(&r.body, "UploadId").remove(0);
    let parts = [seeded_bytes(31, chunk + 1000), seeded_bytes(32, 100)];
    let mut etags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let number = (i + 1).to_string();
        let r = call(
            &n1,
            "PUT",
            "/large/multi",
            &[("partNumber", &number), ("uploadId", &upload)],
            part.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        etags.push(r.header("etag").unwrap().to_string());
    }
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        etags[0], etags[1]
    );
    let r = call(
        &n1,
        "POST",
        "/large/multi",
        &[("uploadId", &upload)],
        complete,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let whole = [parts[0].clone(), parts[1].clone()].concat();
    let got = call(&n4, "GET", "/large/multi", &[], Bytes::new()).await;
    assert!(
        got.status == 200 && got.body == whole,
        "the multipart object differs"
    );
    for (number, part) in [("1", &parts[0]), ("2", &parts[1])] {
        let got = call(
            &n4,
            "GET",
            "/large/multi",
            &[("partNumber", number)],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 206, "part {number}");
        assert!(got.body == *part, "part {number} differs");
        let head = call(
            &n4,
            "HEAD",
            "/large/multi",
            &[("partNumber", number)],
            Bytes::new(),
        )
        .await;
        let len = head.header("content-length").map(str::to_string);
        assert_eq!(len, Some(part.len().to_string()), "HEAD of part {number}");
    }
    let r = n4
        .request(
            "GET",
            "/large/multi",
            &[("attributes", "")],
            &[("x-amz-object-attributes", "ObjectParts")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        xml_values(&r.body, "Size"),
        vec![parts[0].len().to_string(), parts[1].len().to_string()],
        "GetObjectAttributes' part sizes"
    );

    // A body refused after it was stored (its Content-MD5 is another body's) leaves nothing
    // visible, and its chunks are collected once the grace period is over.
    let refused = seeded_bytes(33, chunk + 5);
    let wrong_md5 = cairn_tests::s3::base64(&{
        use md5::Digest;
        md5::Md5::digest(b"another body")
    });
    let r = n1
        .request(
            "PUT",
            "/large/refused",
            &[],
            &[("content-md5", &wrong_md5)],
            refused.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("BadDigest"), "{}", text(&r));
    let got = call(&n4, "GET", "/large/refused", &[], Bytes::new()).await;
    assert_eq!(got.status, 404);
    let refused_chunks = chunks_of(&refused);
    // The first chunk was on its way when the refusal was answered: its store finishes in the
    // background. The last chunk waits for the checks, so it was never stored.
    wait_until("the refused body's first chunk is stored", || {
        stored_somewhere(&cluster, &refused_chunks[0])
    })
    .await;
    assert!(
        stored_nowhere(&cluster, &refused_chunks[1]),
        "a refused body's last chunk was stored"
    );
    tokio::time::sleep(Duration::from_millis(grace_ms + 1000)).await;
    let node = cluster.node("n2");
    let status = collect(node, "the collection").await;
    assert_eq!(status.errors, 0, "{status:?}");
    assert!(
        stored_nowhere(&cluster, &refused_chunks[0]),
        "a refused body's chunk survived the collection"
    );
    for hash in chunks.iter().chain(&chunks_of(&parts[0])) {
        assert!(
            stored_somewhere(&cluster, hash),
            "a referenced chunk was deleted"
        );
    }
    let got = call(&n4, "GET", "/large/multi", &[], Bytes::new()).await;
    assert!(got.status == 200 && got.body == whole);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_delete_spares_a_blob_written_after_its_version() {
    let cluster = TestCluster::start(56).await;
    let client = cluster.client().await;
    let before = seeded_bytes(20, 2_000);
    let after = seeded_bytes(21, 2_000);
    let old = client.put(before.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = cairn_node::clock::wall_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new = client.put(after.clone()).await.unwrap();
    // The collector's delete: "only where last written before the cutoff". A put racing it
    // (written after the cutoff) keeps its blob on every replica.
    client.delete_written_before(&old, cutoff).await.unwrap();
    client.delete_written_before(&new, cutoff).await.unwrap();
    assert!(stored_nowhere(&cluster, &old));
    assert_eq!(client.get(&new).await.unwrap(), after);
    wait_until("the spared blob on all replicas", || {
        cluster.fully_replicated(&client, &new, &after)
    })
    .await;
    client.close().await;
    cluster.shutdown().await;
}

/// Sends `body` as it is (already encoded) with headers signed for `payload`.
async fn put_encoded(
    client: &S3Client,
    path: &str,
    payload: &str,
    extra: &[(&str, &str)],
    encode: impl FnOnce(&cairn_tests::s3::Signed) -> Vec<u8>,
    decoded_len: usize,
) -> HttpResponse {
    let host = client.addr.to_string();
    let decoded = decoded_len.to_string();
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", &decoded),
    ];
    headers.extend_from_slice(extra);
    let signed = client
        .signer
        .sign_payload("PUT", &host, path, &[], &headers, payload);
    let body = encode(&signed);
    let mut all = headers.clone();
    all.push(("host", &host));
    for (k, v) in &signed.headers {
        all.push((k, v));
    }
    cairn_tests::http::HttpClient::new(client.addr, None)
        .connect()
        .await
        .unwrap()
        .request_raw("PUT", path, &all, body)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_chunked_bodies_signed_and_with_trailing_checksums_are_taken_and_checked() {
    use cairn_tests::s3::{crc32_checksum, signed_chunks, unsigned_chunks_with_crc32};
    let cluster = TestCluster::start(57).await;
    let n2 = s3(&cluster, "n2");
    assert_eq!(
        call(&n2, "PUT", "/chunked", &[], Bytes::new()).await.status,
        200
    );
    let data = seeded_bytes(30, 200_000);
    let code = |r: &HttpResponse| xml_values(&r.body, "Code").join(",");
    let read = |key: &'static str| {
        let c = s3(&cluster, "n5");
        async move { call(&c, "GET", &format!("/chunked/{key}"), &[], Bytes::new()).await }
    };

    // Signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), 64 KiB each.
    let signed = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    let r = put_encoded(
        &n2,
        "/chunked/signed",
        signed,
        &[],
        |s| signed_chunks(s, &data, 65_536),
        data.len(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = read("signed").await;
    assert!(
        got.status == 200 && got.body == data,
        "signed chunks read back wrong"
    );

    // One byte changed after the chunks were signed: refused, nothing stored.
    let r = put_encoded(
        &n2,
        "/chunked/tampered",
        signed,
        &[],
        |s| {
            let mut body = signed_chunks(s, &data, 65_536);
            let at = body.len() / 2;
            body[at] ^= 1;
            body
        },
        data.len(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "SignatureDoesNotMatch"),
        "{}",
        text(&r)
    );
    assert_eq!(read("tampered").await.status, 404);

    // Unsigned chunks with a trailing CRC32 (STREAMING-UNSIGNED-PAYLOAD-TRAILER), as current
    // SDKs send by default: the right checksum is taken, a wrong one is BadDigest.
    let trailer = [("x-amz-trailer", "x-amz-checksum-crc32")];
    let unsigned = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
    let good = crc32_checksum(&data);
    let r = put_encoded(
        &n2,
        "/chunked/trailer",
        unsigned,
        &trailer,
        |_| unsigned_chunks_with_crc32(&data, 65_536, &good),
        data.len(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let got = read("trailer").await;
    assert!(
        got.status == 200 && got.body == data,
        "trailer upload read back wrong"
    );
    let wrong = crc32_checksum(b"other bytes");
    let r = put_encoded(
        &n2,
        "/chunked/bad-trailer",
        unsigned,
        &trailer,
        |_| unsigned_chunks_with_crc32(&data, 65_536, &wrong),
        data.len(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "BadDigest"),
        "{}",
        text(&r)
    );
    assert_eq!(read("bad-trailer").await.status, 404);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_rules_expire_what_they_name_and_the_collector_then_frees_the_blobs() {
    let grace_ms = cairn_node::limits::GC_GRACE_MS_MIN;
    let cluster = collector_cluster(57).await;
    let n1 = s3(&cluster, "n1");
    assert_eq!(
        call(&n1, "PUT", "/lcbucket", &[], Bytes::new())
            .await
            .status,
        200
    );
    // Nexus's rule (soft-deleted objects are tagged deleted=true), with a date already past
    // so that it is due now; and a prefix rule.
    let config = "<LifecycleConfiguration>\
        <Rule><ID>soft-deleted</ID><Status>Enabled</Status>\
          <Filter><Tag><Key>deleted</Key><Value>true</Value></Tag></Filter>\
          <Expiration><Date>2020-01-01T00:00:00Z</Date></Expiration></Rule>\
        <Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter>\
          <Expiration><Date>2020-01-01T00:00:00Z</Date></Expiration>\
          <AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation>\
          </AbortIncompleteMultipartUpload></Rule>\
        <Rule><ID>off</ID><Status>Disabled</Status><Filter><Prefix>keep/</Prefix></Filter>\
          <Expiration><Date>2020-01-01T00:00:00Z</Date></Expiration></Rule>\
        </LifecycleConfiguration>";
    let r = call(&n1, "PUT", "/lcbucket", &[("lifecycle", "")], config).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = call(
        &s3(&cluster, "n5"),
        "GET",
        "/lcbucket",
        &[("lifecycle", "")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        xml_values(&r.body, "ID"),
        vec!["soft-deleted", "tmp", "off"],
        "{}",
        text(&r)
    );

    let expired = seeded_bytes(30, 3_000);
    let tagged = seeded_bytes(31, 3_000);
    let kept = seeded_bytes(32, 3_000);
    for (key, bytes, tagging) in [
        ("tmp/a", &expired, ""),
        ("blobs/deleted", &tagged, "deleted=true"),
        ("blobs/live", &kept, "deleted=false"),
        ("keep/b", &kept, ""),
    ] {
        let headers: &[(&str, &str)] = if tagging.is_empty() {
            &[]
        } else {
            &[("x-amz-tagging", tagging)]
        };
        let r = n1
            .request(
                "PUT",
                &format!("/lcbucket/{key}"),
                &[],
                headers,
                bytes.clone(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{key}: {}", text(&r));
    }
    // A young unfinished upload under tmp/ is not aborted (7 days).
    let r = call(
        &n1,
        "POST",
        "/lcbucket/tmp/up",
        &[("uploads", "")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));

    let node = cluster.node("n2");
    let status = collect(node, "the collection").await;
    assert_eq!(status.errors, 0, "{status:?}");
    assert_eq!(
        (status.expired_objects, status.aborted_uploads),
        (2, 0),
        "{status:?}"
    );
    // What `cairn status` shows of it comes with the node's status.
    let shown = node
        .status()
        .gc
        .expect("a node with an S3 front reports its collector");
    assert_eq!(shown.expired_objects, 2, "{shown:?}");
    let exposition = metrics_of(node).await;
    for line in [
        "\ncairn_lifecycle_expired_objects 2\n",
        "\ncairn_lifecycle_aborted_uploads 0\n",
    ] {
        assert!(exposition.contains(line), "{line:?} not in /metrics");
    }
    let n4 = s3(&cluster, "n4");
    for (key, code) in [
        ("tmp/a", 404),
        ("blobs/deleted", 404),
        ("blobs/live", 200),
        ("keep/b", 200),
    ] {
        let got = call(&n4, "GET", &format!("/lcbucket/{key}"), &[], Bytes::new()).await;
        assert_eq!(got.status, code, "{key}: {}", text(&got));
    }
    let r = call(&n4, "GET", "/lcbucket", &[("uploads", "")], Bytes::new()).await;
    assert_eq!(xml_values(&r.body, "Key"), vec!["tmp/up"], "{}", text(&r));

    // The expired objects' blobs go the way of deleted objects' once the grace period passed.
    tokio::time::sleep(Duration::from_millis(grace_ms + 500)).await;
    let status = collect(node, "the second collection").await;
    assert_eq!(
        (status.errors, status.expired_objects),
        (0, 0),
        "{status:?}"
    );
    assert!(stored_nowhere(&cluster, &Hash::of(&expired)));
    assert!(stored_nowhere(&cluster, &Hash::of(&tagged)));
    assert!(stored_somewhere(&cluster, &Hash::of(&kept)));

    let r = call(
        &n1,
        "DELETE",
        "/lcbucket",
        &[("lifecycle", "")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let r = call(&n1, "GET", "/lcbucket", &[("lifecycle", "")], Bytes::new()).await;
    assert_eq!(r.status, 404);
    assert!(
        text(&r).contains("NoSuchLifecycleConfiguration"),
        "{}",
        text(&r)
    );

    // A bucket deleted and created again has neither the old rules nor the old tags.
    let r = call(&n1, "PUT", "/lcbucket", &[("lifecycle", "")], config).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let tagging = "<Tagging><TagSet><Tag><Key>team</Key><Value>a</Value></Tag></TagSet></Tagging>";
    let r = call(&n1, "PUT", "/lcbucket", &[("tagging", "")], tagging).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    for key in ["blobs/live", "keep/b"] {
        let r = call(
            &n1,
            "DELETE",
            &format!("/lcbucket/{key}"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 204, "{key}: {}", text(&r));
    }
    assert_eq!(
        call(&n1, "DELETE", "/lcbucket", &[], Bytes::new())
            .await
            .status,
        204
    );
    assert_eq!(
        call(&n1, "PUT", "/lcbucket", &[], Bytes::new())
            .await
            .status,
        200
    );
    for (query, code) in [
        ("lifecycle", "NoSuchLifecycleConfiguration"),
        ("tagging", "NoSuchTagSet"),
    ] {
        let r = call(&n4, "GET", "/lcbucket", &[(query, "")], Bytes::new()).await;
        assert_eq!(r.status, 404, "{query}: {}", text(&r));
        assert!(text(&r).contains(code), "{}", text(&r));
    }
    cluster.shutdown().await;
}
