//! A cluster of `cairn node` processes: each node its own process, logging to a file beside
//! the cluster's files, killed for real (SIGKILL) and restarted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientOptions, Identity};
use cairn_node::NodeConfig;
use cairn_node::dev::{self, ClusterFiles, ClusterSpec};
use cairn_tests::http::HttpClient;

/// How long a cluster may take to take its first put.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub files: ClusterFiles,
    pub ids: Vec<String>,
    pub children: Vec<Option<Child>>,
    /// `CAIRN_LOG` of the nodes.
    pub log_filter: String,
}

impl ProcessCluster {
    /// Writes the cluster's files for `spec`, lets `edit` change them (a node's data
    /// directory, say), and starts every node.
    pub fn start(spec: &ClusterSpec, log_filter: &str, edit: impl FnOnce(&ClusterFiles)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = dev::write_cluster(dir.path(), spec).unwrap();
        edit(&files);
        let mut cluster = ProcessCluster {
            dir,
            files,
            ids: spec.nodes.iter().map(|n| n.0.clone()).collect(),
            children: Vec::new(),
            log_filter: log_filter.to_string(),
        };
        for i in 0..cluster.ids.len() {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        cluster
    }

    pub fn spawn(&self, i: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&self.ids[i]))
            .unwrap();
        Command::new(cairn_tests::cairn_bin())
            .arg("node")
            .arg("--config")
            .arg(&self.files.node_configs[i])
            .env("CAIRN_LOG", &self.log_filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.log"))
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    pub fn index(&self, id: &str) -> usize {
        self.ids.iter().position(|x| x == id).unwrap()
    }

    pub fn pid(&self, id: &str) -> u32 {
        self.children[self.index(id)]
            .as_ref()
            .expect("running")
            .id()
    }

    pub fn config(&self, id: &str) -> NodeConfig {
        NodeConfig::load(&self.files.node_configs[self.index(id)]).unwrap()
    }

    /// The node's HTTP front (loopback, no token).
    pub fn http(&self, id: &str) -> HttpClient {
        HttpClient::new(self.config(id).http.listen, None)
    }

    pub fn kill(&mut self, id: &str) {
        let i = self.index(id);
        let mut child = self.children[i].take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self, id: &str) {
        let i = self.index(id);
        assert!(self.children[i].is_none());
        self.children[i] = Some(self.spawn(i));
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to a node's process.
    pub fn signal(&self, id: &str, signal: &str) {
        let pid = self.pid(id);
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Runs `cairn --client <the cluster's> args`; its exit code and what it printed.
    pub fn cairn(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(cairn_tests::cairn_bin())
            .arg("--client")
            .arg(&self.files.client_config)
            .args(args)
            .env("CAIRN_LOG", "warn")
            .output()
            .unwrap();
        let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
        said.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code(), said)
    }

    /// A client of the cluster, once a put goes through.
    pub async fn client(&self, deadline_ms: u64) -> Client {
        let t = self.files.client_tls();
        let identity = Identity::load(&t.ca, &t.cert, &t.key).unwrap();
        let layout = cairn_client::load_layout(&self.files.layout).unwrap();
        let options = ClientOptions {
            zone: Some("zone-a".into()),
            deadline_ms,
            ..ClientOptions::default()
        };
        let started = Instant::now();
        loop {
            if let Ok(c) = Client::connect(layout.clone(), &identity, options.clone()).await
                && c.put(b"hello".to_vec()).await.is_ok()
            {
                return c;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the cluster did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
