//! `cairn`: run a node or a local development cluster, make certificates, and put, get, stat
//! and delete blobs from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn_client::{Client, ClientOptions, Hash, Identity, Layout};
use cairn_node::config::{ClientFileConfig, NodeConfig};
use cairn_node::dev::{self, ClusterSpec};
use cairn_node::{Node, certs};
use clap::{Parser, Subcommand};

/// Client configuration used when neither --client nor CAIRN_CLIENT says otherwise: the one
/// `cairn dev` writes.
const CLIENT_CONFIG_DEFAULT: &str = "cairn-dev/client.toml";

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a replicated content-addressed blob store"
)]
struct Cli {
    /// Client configuration (layout, certificates) for put, get, stat, rm and status.
    #[arg(long, global = true, env = "CAIRN_CLIENT", default_value = CLIENT_CONFIG_DEFAULT)]
    client: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Node {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local cluster in this process: 6 nodes in 3 zones, factor 3, write quorum 2.
    Dev {
        /// Where certificates, configurations and data go.
        #[arg(long, default_value = "cairn-dev")]
        dir: PathBuf,
        /// QUIC port of the first node; the others follow.
        #[arg(long, default_value_t = dev::DEV_BASE_PORT)]
        base_port: u16,
        /// Check the cluster with a put and a get, then stop instead of serving.
        #[arg(long)]
        check_only: bool,
    },
    /// Make a CA (kept in DIR/ca.pem and DIR/ca.key) and node and client certificates.
    Certs {
        #[arg(long)]
        dir: PathBuf,
        /// A node id to issue a certificate for (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A client name to issue a certificate for (repeatable).
        #[arg(long = "client-name")]
        clients: Vec<String>,
    },
    /// Store a file; prints its hash.
    Put { file: PathBuf },
    /// Fetch a blob into a file (or stdout with -o -).
    Get {
        hash: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show a blob's length and which of its replicas hold it.
    Stat { hash: String },
    /// Delete a blob.
    Rm { hash: String },
    /// Show every node of the layout and whether it answers.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    cairn_node::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node { config } => {
            let config = NodeConfig::load(&config)?;
            let node = Node::start(&config).await?;
            tokio::signal::ctrl_c().await?;
            node.shutdown().await;
            Ok(())
        }
        Command::Dev {
            dir,
            base_port,
            check_only,
        } => run_dev(&dir, base_port, check_only).await,
        Command::Certs {
            dir,
            nodes,
            clients,
        } => {
            for path in certs::generate(&dir, &nodes, &clients)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Put { file } => {
            let client = connect(&cli.client).await?;
            let hash = client.put_file(&file).await?;
            println!("{hash}");
            client.close().await;
            Ok(())
        }
        Command::Get { hash, output } => {
            let client = connect(&cli.client).await?;
            let hash: Hash = hash.parse()?;
            if output == Path::new("-") {
                let n = client.get_to_writer(&hash, tokio::io::stdout()).await?;
                eprintln!("{n} bytes");
            } else {
                // Written beside the target and renamed only once the hash is verified.
                let dir = output.parent().filter(|p| !p.as_os_str().is_empty());
                let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
                let file = tokio::fs::File::from_std(tmp.reopen()?);
                let n = client.get_to_writer(&hash, file).await?;
                tmp.persist(&output)?;
                eprintln!("{n} bytes written to {}", output.display());
            }
            client.close().await;
            Ok(())
        }
        Command::Stat { hash } => {
            let client = connect(&cli.client).await?;
            let hash: Hash = hash.parse()?;
            match client.head(&hash).await? {
                Some(len) => println!("{hash}: {len} bytes"),
                None => println!("{hash}: not found"),
            }
            for id in client.replicas_of(&hash) {
                let held = match client.head_on(&id, &hash).await {
                    Ok(Some(_)) => "holds it".to_string(),
                    Ok(None) => "does not hold it".to_string(),
                    Err(e) => format!("unreachable ({e})"),
                };
                println!("  replica {id}: {held}");
            }
            client.close().await;
            Ok(())
        }
        Command::Rm { hash } => {
            let client = connect(&cli.client).await?;
            let hash: Hash = hash.parse()?;
            let existed = client.delete(&hash).await?;
            println!("{}", if existed { "deleted" } else { "was not stored" });
            client.close().await;
            Ok(())
        }
        Command::Status => {
            let client = connect(&cli.client).await?;
            let layout = client
                .refresh_layout()
                .await
                .unwrap_or_else(|_| client.layout());
            println!(
                "layout version {}, replication factor {}, write quorum {}",
                layout.version, layout.replication_factor, layout.write_quorum
            );
            let probe = Hash::MIN;
            for node in &layout.nodes {
                let state = match client.head_on(&node.id, &probe).await {
                    Ok(_) => "up".to_string(),
                    Err(e) => format!("down ({e})"),
                };
                println!(
                    "  {:<8} {:<10} {:<22} weight {:<6} {state}",
                    node.id, node.zone, node.addr, node.weight
                );
            }
            client.close().await;
            Ok(())
        }
    }
}

async fn connect(path: &Path) -> Result<Client> {
    let config = ClientFileConfig::load(path).map_err(|e| {
        format!("{e}\n(start a local cluster with `cairn dev`, or pass --client FILE)")
    })?;
    let layout = Layout::load(&config.layout)?;
    let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let options = ClientOptions {
        zone: config.zone.clone(),
        ..ClientOptions::default()
    };
    Ok(Client::connect(layout, &identity, options).await?)
}

async fn run_dev(dir: &Path, base_port: u16, check_only: bool) -> Result<()> {
    let spec = ClusterSpec::local(dev::DEV_NODES, dev::DEV_ZONES, [127, 0, 0, 1], base_port);
    let files = dev::write_cluster(dir, &spec)?;
    let mut nodes = Vec::new();
    for path in &files.node_configs {
        nodes.push(Node::start(&NodeConfig::load(path)?).await?);
    }
    let layout = Layout::load(&files.layout)?;
    println!(
        "Cairn dev cluster: {} nodes in {} zones, replication factor {}, write quorum {}",
        layout.nodes.len(),
        layout.zone_count(),
        layout.replication_factor,
        layout.write_quorum
    );
    for node in &layout.nodes {
        println!("  {:<4} {:<8} {}", node.id, node.zone, node.addr);
    }
    println!("Data, certificates and configurations: {}", dir.display());

    // Check the cluster end to end through the client, as a user would.
    let client = connect(&files.client_config).await?;
    let sample = format!("hello from the Cairn dev cluster in {}\n", dir.display());
    let hash = client.put(sample.clone().into_bytes()).await?;
    let back = client.get(&hash).await?;
    if back != sample.as_bytes() {
        return Err("the check blob read back different bytes".into());
    }
    let mut held = Vec::new();
    for id in client.replicas_of(&hash) {
        if client.head_on(&id, &hash).await?.is_some() {
            held.push(id);
        }
    }
    println!(
        "Check: put {} bytes as {hash}, read them back verified; held by {}",
        sample.len(),
        held.join(", ")
    );
    client.close().await;

    let exe = std::env::args().next().unwrap_or_else(|| "cairn".into());
    let config = files.client_config.display();
    println!();
    println!("Try it (from another terminal):");
    println!("  {exe} --client {config} put FILE");
    println!("  {exe} --client {config} get HASH -o FILE");
    println!("  {exe} --client {config} stat HASH");
    println!("  {exe} --client {config} rm HASH");
    println!("  {exe} --client {config} status");
    if check_only {
        println!("Stopping (--check-only).");
    } else {
        println!("Serving until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
