//! What the cluster tests share: a six-node cluster on its own loopback addresses, blob
//! contents, waiting for convergence.
// Each test file uses part of this module.
#![allow(dead_code)]

pub mod procs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_client::pool::Pool;
use cairn_client::tls::{self, Identity};
use cairn_client::{Client, ClientOptions, Hash, Layout, Routing};
use cairn_core::heal::HealSettings;
use cairn_core::membership::FailureDetectorSettings;
use cairn_core::wire;
use cairn_node::config::HintSettings;
use cairn_node::dev::{self, ClusterFiles, ClusterSpec};
use cairn_node::{Node, NodeConfig};

/// Engine segments of test nodes: small, so six nodes preallocate little.
pub const TEST_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// QUIC port every test node listens on (each node has its own address).
pub const TEST_PORT: u16 = 7400;
/// How long a test waits for hints and repairs to converge.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub files: ClusterFiles,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<Node>>,
}

impl TestCluster {
    /// Six nodes in three zones (n1,n4 in zone-a; n2,n5 in zone-b; n3,n6 in zone-c), factor 3,
    /// write quorum 2, on 127.0.`net`.1-6.
    pub async fn start(net: u8) -> TestCluster {
        TestCluster::start_with(net, 3, 2).await
    }

    pub async fn start_with(net: u8, factor: usize, quorum: usize) -> TestCluster {
        TestCluster::start_spec(net, |spec| {
            spec.replication_factor = factor;
            spec.write_quorum = quorum;
        })
        .await
    }

    /// Six nodes as `start`, with fast failure detection and healing, and `edit` applied to
    /// the spec last.
    pub async fn start_spec(net: u8, edit: impl FnOnce(&mut ClusterSpec)) -> TestCluster {
        let mut spec = test_spec(net);
        edit(&mut spec);
        let dir = tempfile::tempdir().unwrap();
        let files = dev::write_cluster(dir.path(), &spec).unwrap();
        let configs: Vec<NodeConfig> = files
            .node_configs
            .iter()
            .map(|p| NodeConfig::load(p).unwrap())
            .collect();
        let mut nodes = Vec::new();
        for config in &configs {
            nodes.push(Some(start_node(config).await));
        }
        TestCluster {
            dir,
            files,
            configs,
            nodes,
        }
    }

    pub fn identity(&self) -> Identity {
        let t = self.files.client_tls();
        Identity::load(&t.ca, &t.cert, &t.key).unwrap()
    }

    pub fn layout(&self) -> Layout {
        cairn_client::load_layout(&self.files.layout).unwrap()
    }

    pub async fn client(&self) -> Client {
        let options = ClientOptions {
            zone: Some("zone-a".into()),
            deadline_ms: 20_000,
            ..ClientOptions::default()
        };
        Client::connect(self.layout(), &self.identity(), options)
            .await
            .unwrap()
    }

    pub fn index(&self, id: &str) -> usize {
        self.configs.iter().position(|c| c.id == id).unwrap()
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes[self.index(id)].as_ref().expect("node running")
    }

    pub async fn kill(&mut self, id: &str) {
        let i = self.index(id);
        self.nodes[i].take().expect("node running").shutdown().await;
    }

    pub async fn restart(&mut self, id: &str) {
        let i = self.index(id);
        assert!(self.nodes[i].is_none());
        self.nodes[i] = Some(start_node(&self.configs[i]).await);
    }

    /// A raw connection pool speaking the wire protocol with the client certificate.
    pub fn raw_pool(&self) -> Pool {
        let endpoint = tls::bind_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
        Pool::new(
            endpoint,
            tls::client_config(&self.identity(), wire::ALPN).unwrap(),
        )
    }

    /// Whether every replica `routing` names holds `hash` with exactly `bytes`, and no other
    /// running node holds it.
    pub fn placed_exactly(&self, routing: &Routing, hash: &Hash, bytes: &[u8]) -> bool {
        let owners: Vec<&str> = routing
            .replicas(hash)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        self.configs.iter().zip(&self.nodes).all(|(config, node)| {
            let Some(node) = node else {
                return true;
            };
            let held = node.store().get(hash);
            if owners.contains(&config.id.as_str()) {
                matches!(held, Ok(Some(b)) if &b[..] == bytes)
            } else {
                matches!(held, Ok(None))
            }
        })
    }

    /// Whether every replica named by the placement holds `hash` with exactly `bytes`.
    pub fn fully_replicated(&self, client: &Client, hash: &Hash, bytes: &[u8]) -> bool {
        client.replicas_of(hash).iter().all(|id| {
            let i = self.index(id);
            match &self.nodes[i] {
                Some(node) => matches!(node.store().get(hash), Ok(Some(b)) if &b[..] == bytes),
                None => false,
            }
        })
    }

    pub async fn shutdown(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown().await;
        }
    }
}

/// Deterministic blob contents of mixed sizes.
pub fn blob(i: usize) -> Vec<u8> {
    let sizes = [0, 1, 100, 4096, 65_536, 300_000, 1_500_000];
    seeded_bytes(i as u64 + 1, sizes[i % sizes.len()] + i)
}

/// `len` bytes from an xorshift generator seeded with `seed`.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn wait_until(what: &str, check: impl FnMut() -> bool) {
    wait_until_showing(what, check, String::new).await
}

/// `wait_until`, saying what `figures` says if the wait times out.
pub async fn wait_until_showing(
    what: &str,
    mut check: impl FnMut() -> bool,
    figures: impl Fn() -> String,
) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < CONVERGE_TIMEOUT,
            "timed out waiting for {what} {}",
            figures()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Six nodes in three zones on 127.0.`net`.1-6, factor 3, write quorum 2, with small segments
/// and fast failure detection, hints and healing.
pub fn test_spec(net: u8) -> ClusterSpec {
    let mut spec = ClusterSpec::local(6, 3, [127, 0, net, 1], TEST_PORT);
    spec.failure_detector = FailureDetectorSettings {
        heartbeat_interval_ms: 100,
        suspect_after_ms: 500,
        down_after_ms: 2_000,
    };
    spec.heal = HealSettings {
        anti_entropy_interval_ms: 500,
        handoff_interval_ms: 300,
        request_timeout_ms: 2_000,
        // Debug builds hash slowly; the scrub test turns it on.
        scrub_bytes_per_sec: 0,
        ..HealSettings::default()
    };
    for (i, node) in spec.nodes.iter_mut().enumerate() {
        node.1 = SocketAddr::from(([127, 0, net, i as u8 + 1], TEST_PORT));
    }
    spec.segment_bytes = TEST_SEGMENT_BYTES;
    spec.hints = HintSettings {
        retry_ms_min: 50,
        retry_ms_max: 500,
    };
    spec
}

/// Starts a node, waiting while its address is still held by the node it replaces: an
/// in-process node's socket is freed only once its connections to dead peers have drained.
pub async fn start_node(config: &NodeConfig) -> Node {
    for _ in 0..150 {
        match Node::start(config).await {
            Ok(node) => return node,
            Err(cairn_node::NodeError::Bind { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(e) => panic!("{}: {e}", config.id),
        }
    }
    panic!("{}: address still in use after 30 s", config.id)
}

/// Flips a byte of every occurrence of `needle` in the files under `dir` (a blob may have a
/// superseded record beside its live one); returns how many were flipped.
pub fn corrupt_copies(dir: &std::path::Path, needle: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let mut flipped = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for (at, _) in data
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle)
            {
                file.write_all_at(&[data[at] ^ 0xff], at as u64).unwrap();
                flipped += 1;
            }
            file.sync_all().unwrap();
        }
    }
    flipped
}

/// No node's engine holds `hash`.
pub fn stored_nowhere(cluster: &TestCluster, hash: &Hash) -> bool {
    cluster
        .nodes
        .iter()
        .flatten()
        .all(|n| matches!(n.store().stat(hash), Ok(cairn_engine::BlobStat::Absent)))
}

/// A node's `/metrics` exposition, read through its HTTP front.
pub async fn metrics_of(node: &Node) -> String {
    let answer = cairn_tests::http::HttpClient::new(node.http_addr(), None)
        .get("/metrics")
        .await
        .unwrap();
    String::from_utf8(answer.body).unwrap()
}

/// A base port whose six QUIC, HTTP and S3 ports (as `cairn dev` and `ClusterSpec` lay them
/// out) are all free on every address: probed, below Linux's ephemeral range.
pub fn free_base_port() -> u16 {
    use cairn_node::dev::{DEV_HTTP_PORT_OFFSET, DEV_NODES, DEV_S3_PORT_OFFSET};
    let free = |port: u16| {
        std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
    };
    (0..200)
        .map(|k| 21_000 + ((std::process::id() as u16 % 50) * 100 + k * 10) % 8_000)
        .find(|&base| {
            (0..DEV_NODES as u16).all(|i| {
                free(base + i)
                    && free(base + i + DEV_HTTP_PORT_OFFSET)
                    && free(base + i + DEV_S3_PORT_OFFSET)
            })
        })
        .expect("a free range of ports")
}
