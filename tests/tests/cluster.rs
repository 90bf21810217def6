//! Cluster tests: real nodes on their own loopback addresses (127.0.T.x, one T per test so tests
//! run side by side), each with its own engine directory, talking QUIC with mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::framing;
use cairn_client::pool::{Pool, read_response};
use cairn_client::tls::{self, Identity};
use cairn_client::{Client, ClientError, ClientOptions, Hash};
use cairn_core::layout::NodeSpec;
use cairn_core::limits::REQUEST_HEADER_BYTES_MAX;
use cairn_core::wire::{self, Decision, DeleteRole, ErrorCode, Op, PutRole, Request, Response};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_any_node_is_readable_from_every_replica() {
    let cluster = TestCluster::start(11).await;
    let client = cluster.client().await;
    let mut written = Vec::new();
    for i in 0..28 {
        let bytes = blob(i);
        let hash = client.put(bytes.clone()).await.unwrap();
        assert_eq!(hash, Hash::of(&bytes));
        written.push((hash, bytes));
    }
    // Through a node that is not a replica, and through each replica: coordinated puts.
    let pool = cluster.raw_pool();
    let layout = cluster.layout();
    for (k, node) in layout.nodes.iter().enumerate() {
        let bytes = blob(1000 + k);
        let hash = Hash::of(&bytes);
        let request = Request {
            layout_version: layout.version,
            op: Op::Put {
                hash: *hash.as_bytes(),
                len: bytes.len() as u64,
                role: PutRole::Coordinate,
            },
        };
        let (mut send, mut recv) = pool.open(node, &request).await.unwrap();
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        let response = read_response(&node.id, &mut recv).await.unwrap();
        assert_eq!(
            response,
            Response::Stored {
                hash: *hash.as_bytes(),
                existed: false,
            },
            "put through {}",
            node.id
        );
        written.push((hash, bytes));
    }
    // Acknowledged at quorum 2; the third copy lands right after.
    wait_until("every replica to hold every blob", || {
        written
            .iter()
            .all(|(h, b)| cluster.fully_replicated(&client, h, b))
    })
    .await;
    for (hash, bytes) in &written {
        let replicas = client.replicas_of(hash);
        assert_eq!(replicas.len(), 3);
        let zones: std::collections::HashSet<_> = replicas
            .iter()
            .map(|id| layout.nodes[layout.node_index(id).unwrap()].zone.clone())
            .collect();
        assert_eq!(zones.len(), 3, "replicas of {hash} span every zone");
        assert_eq!(&client.get(hash).await.unwrap(), bytes);
        let mut streamed = Vec::new();
        let mut reader = client.get_stream(hash);
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut streamed)
            .await
            .unwrap();
        assert_eq!(&streamed, bytes);
        assert_eq!(client.head(hash).await.unwrap(), Some(bytes.len() as u64));
        if bytes.len() > 10 {
            let range = client.get_range(hash, 3, 7).await.unwrap();
            assert_eq!(range, bytes[3..10]);
        }
        // Nodes that are not replicas hold nothing.
        for node in &layout.nodes {
            if !replicas.contains(&node.id) {
                assert!(cluster.node(&node.id).store().get(hash).unwrap().is_none());
            }
        }
    }
    // Deletes reach every replica.
    let (hash, _) = &written[3];
    assert!(client.delete(hash).await.unwrap());
    wait_until("the delete to reach every replica", || {
        client
            .replicas_of(hash)
            .iter()
            .all(|id| cluster.node(id).store().get(hash).unwrap().is_none())
    })
    .await;
    assert!(matches!(
        client.get(hash).await,
        Err(ClientError::NotFound { .. })
    ));
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_survive_a_node_and_a_zone_and_hints_restore_full_replication() {
    let mut cluster = TestCluster::start(12).await;
    let client = cluster.client().await;
    let mut written = Vec::new();
    let put = async |client: &Client, from: usize, to: usize, written: &mut Vec<_>| {
        for i in from..to {
            let bytes = blob(i);
            let hash = client.put(bytes.clone()).await.unwrap();
            written.push((hash, bytes));
        }
    };
    put(&client, 0, 20, &mut written).await;

    cluster.kill("n1").await;
    for (hash, bytes) in &written {
        assert_eq!(&client.get(hash).await.unwrap(), bytes);
    }
    put(&client, 20, 40, &mut written).await;

    // All of zone-a: every blob keeps two replicas, and write quorum 2 is still reachable.
    cluster.kill("n4").await;
    for (hash, bytes) in &written {
        assert_eq!(&client.get(hash).await.unwrap(), bytes);
    }
    put(&client, 40, 60, &mut written).await;
    let hinted: usize = ["n2", "n3", "n5", "n6"]
        .iter()
        .map(|id| cluster.node(id).hints_pending())
        .sum();
    assert!(hinted > 0, "writes that missed zone-a left hints");

    cluster.restart("n1").await;
    cluster.restart("n4").await;
    wait_until(
        "hints to be delivered and every blob fully replicated",
        || {
            let pending: usize = cluster
                .nodes
                .iter()
                .flatten()
                .map(|n| n.hints_pending())
                .sum();
            pending == 0
                && written
                    .iter()
                    .all(|(h, b)| cluster.fully_replicated(&client, h, b))
        },
    )
    .await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_cluster_certificate_or_protocol_are_refused() {
    let cluster = TestCluster::start(13).await;
    let layout = cluster.layout();
    let n1 = layout.nodes[0].clone();
    let options = ClientOptions {
        deadline_ms: 3_000,
        ..ClientOptions::default()
    };

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    cairn_node::certs::generate(other.path(), &[], &["client".to_string()]).unwrap();
    let stranger = Identity::load(
        &other.path().join("ca.pem"),
        &other.path().join("client.pem"),
        &other.path().join("client.key"),
    )
    .unwrap();
    let client = Client::connect(layout.clone(), &stranger, options.clone())
        .await
        .unwrap();
    let err = client.put(b"nope".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { .. }),
        "another CA: {err}"
    );
    client.close().await;

    // Another protocol version.
    let old = ClientOptions {
        alpn: b"cairn/0".to_vec(),
        ..options.clone()
    };
    let client = Client::connect(layout.clone(), &cluster.identity(), old)
        .await
        .unwrap();
    let err = client.head(&Hash::of(b"x")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::ProtocolVersion { .. }),
        "old protocol: {err}"
    );
    let ours = String::from_utf8_lossy(wire::ALPN).into_owned();
    assert!(err.to_string().contains(&ours), "{err}");
    client.close().await;

    // No certificate at all: the handshake fails and no request is ever read.
    let identity = cluster.identity();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quic));
    let endpoint = tls::bind_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
    let pool = Pool::new(endpoint, config);
    let bytes = b"anonymous".to_vec();
    let hash = Hash::of(&bytes);
    let request = Request {
        layout_version: layout.version,
        op: Op::Put {
            hash: *hash.as_bytes(),
            len: bytes.len() as u64,
            role: PutRole::Coordinate,
        },
    };
    let outcome = async {
        let (mut send, mut recv) = pool.open(&n1, &request).await?;
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        read_response(&n1.id, &mut recv).await
    }
    .await;
    match outcome {
        Err(ClientError::Refused { reason, .. }) => {
            assert!(reason.contains("requires a client certificate"), "{reason}")
        }
        other => panic!("anonymous peer was not refused: {other:?}"),
    }
    for node in cluster.nodes.iter().flatten() {
        assert!(node.store().get(&hash).unwrap().is_none());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_store_nothing() {
    let cluster = TestCluster::start(14).await;
    let layout = cluster.layout();
    let pool = cluster.raw_pool();
    let client = cluster.client().await;
    let nothing_stored = |hash: &Hash| {
        cluster
            .nodes
            .iter()
            .flatten()
            .all(|n| n.store().get(hash).unwrap().is_none())
    };
    let bytes = blob(5);
    let hash = Hash::of(&bytes);
    let coordinator = {
        let first = &client.replicas_of(&hash)[0];
        layout.nodes[layout.node_index(first).unwrap()].clone()
    };
    let put = |hash: Hash, len: u64| Request {
        layout_version: layout.version,
        op: Op::Put {
            hash: *hash.as_bytes(),
            len,
            role: PutRole::Coordinate,
        },
    };
    let error_code = |r: Response| match r {
        Response::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    };

    // An oversized header: refused by its length prefix, before it is read.
    let conn = pool.connection(&coordinator).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&(1_000_000u32).to_le_bytes()).await.unwrap();
    let _ = send.finish();
    let (code, _) = error_code(read_response("n", &mut recv).await.unwrap());
    assert_eq!(code, ErrorCode::HeaderTooLarge);

    // A header that is not a request.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let _ = send.finish();
    let (code, _) = error_code(read_response("n", &mut recv).await.unwrap());
    assert_eq!(code, ErrorCode::BadRequest);

    // A truncated upload.
    let (mut send, mut recv) = pool
        .open(&coordinator, &put(hash, bytes.len() as u64))
        .await
        .unwrap();
    send.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    send.finish().unwrap();
    let (code, message) = error_code(read_response("n", &mut recv).await.unwrap());
    assert_eq!(code, ErrorCode::Truncated, "{message}");

    // A body whose hash differs from the one claimed.
    let mut wrong = bytes.clone();
    wrong[0] ^= 1;
    let (mut send, mut recv) = pool
        .open(&coordinator, &put(hash, wrong.len() as u64))
        .await
        .unwrap();
    send.write_all(&wrong).await.unwrap();
    send.finish().unwrap();
    let (code, message) = error_code(read_response("n", &mut recv).await.unwrap());
    assert_eq!(code, ErrorCode::HashMismatch, "{message}");

    // A body longer than announced.
    let (mut send, mut recv) = pool
        .open(&coordinator, &put(hash, bytes.len() as u64 - 1))
        .await
        .unwrap();
    let _ = send.write_all(&bytes).await;
    let _ = send.finish();
    let (code, _) = error_code(read_response("n", &mut recv).await.unwrap());
    assert_eq!(code, ErrorCode::BadRequest);

    // Give any replica a moment: nothing may appear anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(nothing_stored(&hash));
    assert!(nothing_stored(&Hash::of(&wrong)));

    // A malformed hash never becomes a request; a well-formed one not stored is NotFound.
    assert!("not-a-hash".parse::<Hash>().is_err());
    assert!("ab".repeat(31).parse::<Hash>().is_err());
    assert!(matches!(
        client.get(&hash).await,
        Err(ClientError::NotFound { .. })
    ));
    // A range outside the blob.
    let stored = client.put(b"short".to_vec()).await.unwrap();
    let err = client.get_range(&stored, 3, 10).await.unwrap_err();
    assert!(matches!(err, ClientError::RangeOutOfBounds { .. }), "{err}");

    // The node is still healthy after all of that.
    let good = client.put(bytes.clone()).await.unwrap();
    assert_eq!(client.get(&good).await.unwrap(), bytes);
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_client_is_corrected_and_its_request_succeeds() {
    let cluster = TestCluster::start(15).await;
    let client = cluster.client().await;
    assert_eq!(client.layout().version, 1);
    // Layout 2 weighs the nodes differently, which moves some blobs.
    let mut newer = cluster.layout();
    newer.version = 2;
    for (i, node) in newer.nodes.iter_mut().enumerate() {
        node.weight = 100 + 50 * i as u32;
    }
    // One node is told; heartbeats carry the version to the others, which fetch it.
    cluster.node("n1").apply_layout(newer.clone()).unwrap();
    wait_until("every node to adopt layout 2", || {
        cluster
            .nodes
            .iter()
            .flatten()
            .all(|n| n.layout().version == 2)
    })
    .await;
    let bytes = blob(9);
    let hash = client.put(bytes.clone()).await.unwrap();
    assert_eq!(
        client.layout().version,
        2,
        "the client adopted the newer layout"
    );
    assert_eq!(client.get(&hash).await.unwrap(), bytes);
    // The blob sits where layout 2 places it.
    let routing = cairn_client::Routing::new(newer.clone()).unwrap();
    for node in routing.replicas(&hash) {
        let i = cluster.index(&node.id);
        let held = || {
            matches!(
                cluster.nodes[i].as_ref().unwrap().store().get(&hash),
                Ok(Some(_))
            )
        };
        wait_until("the new replicas to hold the blob", held).await;
    }
    // An older layout is refused by a node.
    assert!(cluster.node("n1").apply_layout(cluster.layout()).is_err());
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_found_without_a_blob_is_repaired_by_a_read() {
    let cluster = TestCluster::start(16).await;
    let client = cluster.client().await;
    let bytes = blob(4);
    let hash = client.put(bytes.clone()).await.unwrap();
    wait_until("full replication", || {
        cluster.fully_replicated(&client, &hash, &bytes)
    })
    .await;
    // The replica the client reads first (its own zone) loses its copy.
    let replicas = client.replicas_of(&hash);
    let layout = cluster.layout();
    let first = replicas
        .iter()
        .find(|id| layout.nodes[layout.node_index(id).unwrap()].zone == "zone-a")
        .unwrap()
        .clone();
    assert!(cluster.node(&first).store().delete(&hash).unwrap());
    assert_eq!(client.get(&hash).await.unwrap(), bytes);
    wait_until("read repair to restore the copy", || {
        cluster.fully_replicated(&client, &hash, &bytes)
    })
    .await;
    client.close().await;
    cluster.shutdown().await;
}

/// A put and a delete of one hash, in either order, end as the later one says: a delete that
/// reaches a replica while a put waits there for its commit stands over the put (a late
/// replica must not bring a deleted blob back), and a put that follows a delete stands over
/// it even when the delete's coordinator had a clock an hour ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_and_a_delete_end_as_the_later_one_says() {
    let cluster = TestCluster::start(19).await;
    let client = cluster.client().await;
    let layout = cluster.layout();
    let pool = cluster.raw_pool();
    let node = |id: &str| layout.nodes[layout.node_index(id).unwrap()].clone();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // A replica put as a coordinator's link makes it: the bytes, then the replica's answer;
    // the stream waits for the decision.
    let prepare = async |replica: &NodeSpec, bytes: &[u8]| {
        let request = Request {
            layout_version: layout.version,
            op: Op::Put {
                hash: *Hash::of(bytes).as_bytes(),
                len: bytes.len() as u64,
                role: PutRole::Replica,
            },
        };
        let (mut send, mut recv) = pool.open(replica, &request).await.unwrap();
        send.write_all(bytes).await.unwrap();
        let prepared = read_response(&replica.id, &mut recv).await.unwrap();
        (send, recv, prepared)
    };
    let delete_request = |hash: &Hash, version: u64| Request {
        layout_version: layout.version,
        op: Op::Delete {
            hash: *hash.as_bytes(),
            role: DeleteRole::Replica,
            version,
        },
    };

    // A replica prepares a put, as its coordinator's link has it do; a delete newer than the
    // put reaches it before the commit does.
    let bytes = blob(3);
    let hash = Hash::of(&bytes);
    let replica = node(&client.replicas_of(&hash)[2]);
    let put_version = now_ms();
    let (mut send, mut recv, prepared) = prepare(&replica, &bytes).await;
    assert_eq!(
        prepared,
        Response::Prepared {
            tombstone_version: 0
        }
    );
    let (deleted, _) = pool
        .call(&replica, &delete_request(&hash, put_version + 1))
        .await
        .unwrap();
    assert_eq!(deleted, Response::Deleted { existed: false });
    let commit = Decision::Commit {
        version: put_version,
    };
    framing::write_frame(&mut send, &commit, REQUEST_HEADER_BYTES_MAX)
        .await
        .unwrap();
    send.finish().unwrap();
    let stored = read_response(&replica.id, &mut recv).await.unwrap();
    assert!(matches!(stored, Response::Stored { .. }), "{stored:?}");
    assert!(
        cluster
            .node(&replica.id)
            .store()
            .get(&hash)
            .unwrap()
            .is_none(),
        "the delete is newer than the put: the commit must not bring the blob back"
    );
    // The replica reports its tombstone to the next put it prepares (which then aborts).
    let (mut send, _, prepared) = prepare(&replica, &bytes).await;
    assert_eq!(
        prepared,
        Response::Prepared {
            tombstone_version: put_version + 1
        }
    );
    framing::write_frame(&mut send, &Decision::Abort, REQUEST_HEADER_BYTES_MAX)
        .await
        .unwrap();
    send.finish().unwrap();

    // Every replica holds a tombstone an hour ahead of this clock (a delete coordinated by a
    // node whose clock ran ahead); a put through the cluster after it must stand, everywhere,
    // and stay after anti-entropy has compared the replicas.
    let bytes = blob(4);
    let hash = Hash::of(&bytes);
    let ahead = now_ms() + 3_600_000;
    for id in client.replicas_of(&hash) {
        let (deleted, _) = pool
            .call(&node(&id), &delete_request(&hash, ahead))
            .await
            .unwrap();
        assert_eq!(deleted, Response::Deleted { existed: false }, "{id}");
    }
    client.put(bytes.clone()).await.unwrap();
    assert_eq!(client.get(&hash).await.unwrap(), bytes);
    wait_until("the put on every replica", || {
        cluster.fully_replicated(&client, &hash, &bytes)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster.fully_replicated(&client, &hash, &bytes),
        "anti-entropy must not let the older tombstone win"
    );
    pool.close().await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factor_one_and_full_quorum_clusters_store_and_serve() {
    for (net, factor, quorum) in [(17, 1, 1), (18, 3, 3)] {
        let cluster = TestCluster::start_with(net, factor, quorum).await;
        let client = cluster.client().await;
        for i in 0..8 {
            let bytes = blob(i);
            let hash = client.put(bytes.clone()).await.unwrap();
            assert_eq!(client.replicas_of(&hash).len(), factor);
            // Write quorum = factor: every replica holds it when the put returns.
            assert!(cluster.fully_replicated(&client, &hash, &bytes));
            assert_eq!(client.get(&hash).await.unwrap(), bytes);
        }
        client.close().await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_speaks_for_its_node_and_no_other() {
    use cairn_core::membership::NodeReport;
    use cairn_core::node_proto::{PeerMsg, PeerReply};
    use cairn_node::net::peer::{PeerCallError, call};

    let cluster = TestCluster::start(20).await;
    let layout = cluster.layout();
    let n1 = layout.nodes.iter().find(|n| n.id == "n1").unwrap().clone();
    let pool_as = |cert: &str| {
        let certs = &cluster.files.certs;
        let identity = Identity::load(
            &certs.join("ca.pem"),
            &certs.join(format!("{cert}.pem")),
            &certs.join(format!("{cert}.key")),
        )
        .unwrap();
        let endpoint = tls::bind_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
        Pool::new(endpoint, tls::client_config(&identity, wire::ALPN).unwrap())
    };
    let heartbeat = |from: &str| PeerMsg::Heartbeat {
        from: from.into(),
        report: NodeReport::default(),
    };
    // n2's certificate, valid in the cluster: a heartbeat in its own name is taken.
    let n2 = pool_as("n2");
    let own = call(&n2, &n1, layout.version, &heartbeat("n2")).await;
    assert!(matches!(own, Ok(PeerReply::HeartbeatAck { .. })), "{own:?}");
    // In n3's name it is refused, and so is a metadata message in n3's name.
    let refused = |result: Result<PeerReply, PeerCallError>| {
        matches!(
            result,
            Err(PeerCallError::Refused {
                code: ErrorCode::Forbidden,
                ..
            })
        )
    };
    let forged = call(&n2, &n1, layout.version, &heartbeat("n3")).await;
    assert!(refused(forged), "n2 spoke for n3");
    let write = PeerMsg::Meta {
        from: "n3".into(),
        msg: cairn_core::meta::MetaMsg::Write { writes: Vec::new() },
    };
    assert!(
        refused(call(&n2, &n1, layout.version, &write).await),
        "n2 wrote metadata as n3"
    );
    // The cluster's client certificate speaks for no node.
    let client = cluster.raw_pool();
    let forged = call(&client, &n1, layout.version, &heartbeat("n2")).await;
    assert!(refused(forged), "a client certificate spoke for n2");
    // What is not in a node's name stays open to the client certificate.
    let status = call(&client, &n1, layout.version, &PeerMsg::Status).await;
    assert!(matches!(status, Ok(PeerReply::Status(_))), "{status:?}");

    let exposition = metrics_of(cluster.node("n1")).await;
    assert!(
        exposition.contains("\ncairn_impersonations_refused_total 3\n"),
        "the refusals are not counted"
    );
    cluster.shutdown().await;
}

/// Rolling upgrades: a peer of the previous protocol version (offering only its ALPN) is
/// answered in it: a client of that version puts and reads, and a node of that version is
/// answered its node-protocol messages; a message the previous version does not have is
/// refused on such a connection, and taken on one of the current version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_the_previous_protocol_version_are_answered_in_it() {
    use cairn_core::keys::{KeysAnswer, KeysRequest};
    use cairn_core::node_proto::{PeerMsg, PeerReply};
    use cairn_node::net::peer::{PeerCallError, call};

    let cluster = TestCluster::start(26).await;
    let layout = cluster.layout();
    let n1 = layout.nodes[0].clone();
    let previous = ClientOptions {
        alpn: wire::ALPN_PREVIOUS.to_vec(),
        deadline_ms: 10_000,
        ..ClientOptions::default()
    };
    let client = Client::connect(layout.clone(), &cluster.identity(), previous)
        .await
        .unwrap();
    let bytes = b"written by a client of the previous version".to_vec();
    let hash = client.put(bytes.clone()).await.unwrap();
    assert_eq!(client.get(&hash).await.unwrap(), bytes);
    client.close().await;

    let pool_speaking = |alpn: &[u8]| {
        let endpoint = tls::bind_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
        Pool::new(
            endpoint,
            tls::client_config(&cluster.identity(), alpn).unwrap(),
        )
    };
    let old = pool_speaking(wire::ALPN_PREVIOUS);
    let conn = old.connection(&n1).await.unwrap();
    assert_eq!(
        tls::negotiated_protocol(&conn),
        wire::protocol_version(wire::ALPN_PREVIOUS)
    );
    let status = call(&old, &n1, layout.version, &PeerMsg::Status).await;
    assert!(matches!(status, Ok(PeerReply::Status(_))), "{status:?}");
    let keys = PeerMsg::Keys(KeysRequest::ListKeys);
    let refused = call(&old, &n1, layout.version, &keys).await;
    assert!(
        matches!(
            refused,
            Err(PeerCallError::Refused {
                code: ErrorCode::BadRequest,
                ..
            })
        ),
        "a cairn/5 message on a cairn/4 connection: {refused:?}"
    );

    let current = pool_speaking(wire::ALPN);
    let conn = current.connection(&n1).await.unwrap();
    assert_eq!(
        tls::negotiated_protocol(&conn),
        wire::protocol_version(wire::ALPN)
    );
    // Taken: these nodes have no S3 front, so the answer is that it is off.
    let taken = call(&current, &n1, layout.version, &keys).await;
    assert!(
        match &taken {
            Ok(PeerReply::Keys(KeysAnswer::Keys(_))) => true,
            Ok(PeerReply::Refused { message }) => message.contains("S3 front"),
            _ => false,
        },
        "{taken:?}"
    );
    cluster.shutdown().await;
}

/// A layout may name its nodes by host name (as a StatefulSet's headless service does): every
/// node here is `localhost:PORT`, listens on every address at that port (its own entry gives no
/// IP), and resolves its peers' names when it connects, again after a peer was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_named_by_host_name_find_each_other_and_find_a_restarted_one_again() {
    let base = free_base_port();
    let mut spec = test_spec(0);
    for (i, node) in spec.nodes.iter_mut().enumerate() {
        node.1 = SocketAddr::from(([127, 0, 0, 1], base + i as u16));
    }
    let dir = tempfile::tempdir().unwrap();
    let files = cairn_node::dev::write_cluster(dir.path(), &spec).unwrap();
    let text = std::fs::read_to_string(&files.layout).unwrap();
    std::fs::write(&files.layout, text.replace("\"127.0.0.1:", "\"localhost:")).unwrap();
    let layout = cairn_client::load_layout(&files.layout).unwrap();
    assert!(
        layout.nodes.iter().all(|n| n.addr.ip().is_none()),
        "every node is named: {layout:?}"
    );
    let configs: Vec<cairn_node::NodeConfig> = files
        .node_configs
        .iter()
        .map(|p| cairn_node::NodeConfig::load(p).unwrap())
        .collect();
    let mut nodes = Vec::new();
    for config in &configs {
        let node = start_node(config).await;
        assert_eq!(node.local_addr().ip(), std::net::Ipv4Addr::UNSPECIFIED);
        nodes.push(Some(node));
    }
    let mut cluster = TestCluster {
        dir,
        files,
        configs,
        nodes,
    };
    let client = cluster.client().await;
    let blobs: Vec<Vec<u8>> = (0..20).map(blob).collect();
    for bytes in &blobs {
        client.put(bytes.clone()).await.unwrap();
    }
    // Every copy where placement puts it: the nodes reached each other by name.
    for bytes in &blobs {
        let hash = Hash::of(bytes);
        wait_until("every copy placed", || {
            cluster.fully_replicated(&client, &hash, bytes)
        })
        .await;
    }
    // A node down and back: its peers connect to it again by resolving its name anew.
    cluster.kill("n2").await;
    let more: Vec<Vec<u8>> = (20..30).map(blob).collect();
    for bytes in &more {
        client.put(bytes.clone()).await.unwrap();
    }
    cluster.restart("n2").await;
    for bytes in &more {
        let hash = Hash::of(bytes);
        wait_until("every copy placed after the restart", || {
            cluster.fully_replicated(&client, &hash, bytes)
        })
        .await;
        assert_eq!(client.get(&hash).await.unwrap(), *bytes);
    }
    client.close().await;
    cluster.shutdown().await;
}

/// A reader that stops reading a large get keeps its stream, but not the connection's turns:
/// the next large get on the same connection is answered once the stalled one's turn runs out,
/// not refused `Busy` when its wait does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_the_connections_get_turns_for_a_bounded_time() {
    use cairn_node::limits::{GET_SEND_BYTES_MAX, GET_TURN_HOLD_MS_MAX, GET_TURN_WAIT_MS_MAX};

    let cluster = TestCluster::start(68).await;
    let client = cluster.client().await;
    // Larger than all the turns of a connection together.
    let big = seeded_bytes(68, GET_SEND_BYTES_MAX as usize + 4 * 1024 * 1024);
    let big_hash = client.put(big.clone()).await.unwrap();
    // A blob of 1 MiB sharing a replica with the large one.
    let (small, small_hash, node) = (0..)
        .find_map(|seed| {
            let bytes = seeded_bytes(6800 + seed, 1024 * 1024);
            let hash = Hash::of(&bytes);
            let shared = client
                .replicas_of(&hash)
                .into_iter()
                .find(|id| client.replicas_of(&big_hash).contains(id))?;
            Some((bytes, hash, shared))
        })
        .unwrap();
    client.put(small.clone()).await.unwrap();
    wait_until("the shared replica to hold both blobs", || {
        let store = cluster.node(&node).store();
        [big_hash, small_hash]
            .iter()
            .all(|h| matches!(store.get(h), Ok(Some(_))))
    })
    .await;

    let layout = cluster.layout();
    let spec = layout.nodes.iter().find(|n| n.id == node).unwrap();
    let pool = cluster.raw_pool();
    let get = |hash: Hash| Request {
        layout_version: layout.version,
        op: Op::Get {
            hash: *hash.as_bytes(),
            range: None,
        },
    };
    // The stalled reader: it takes the answer's header and no byte of the body.
    let started = std::time::Instant::now();
    let (_stalled_send, mut stalled) = pool.open(spec, &get(big_hash)).await.unwrap();
    let header = read_response(&node, &mut stalled).await.unwrap();
    assert!(matches!(header, Response::Blob { .. }), "{header:?}");

    let (_send, mut recv) = pool.open(spec, &get(small_hash)).await.unwrap();
    let header = read_response(&node, &mut recv).await.unwrap();
    let waited_ms = started.elapsed().as_millis() as u64;
    assert_eq!(
        header,
        Response::Blob {
            len: small.len() as u64,
            blob_len: small.len() as u64
        },
        "after {waited_ms} ms (a turn is held {GET_TURN_HOLD_MS_MAX} ms at most, waited for \
         {GET_TURN_WAIT_MS_MAX} ms at most)"
    );
    assert!(
        waited_ms >= GET_TURN_HOLD_MS_MAX,
        "the second get did not wait for the first one's turn: {waited_ms} ms"
    );
    let body = recv.read_to_end(small.len()).await.unwrap();
    assert_eq!(body, small);

    // The stalled reader can still read its whole blob.
    let body = stalled.read_to_end(big.len()).await.unwrap();
    assert_eq!(Hash::of(&body), big_hash);
    client.close().await;
    cluster.shutdown().await;
}
