//! `cairn`: run a node or a local development cluster, make certificates, and put, get, stat
//! and delete blobs from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn_client::{
    Client, ClientOptions, Hash, Identity, NodeSpec, hash_file_with_progress, load_layout,
};
use cairn_core::keys::{KeysAnswer, KeysRequest, Permission};
use cairn_core::layout_edit::{self, RebalanceRefusal};
use cairn_core::status::{ClusterStatus, MoveProgress, NodeStatus};
use cairn_node::admin::Admin;
use cairn_node::config::{ClientFileConfig, NodeConfig};
use cairn_node::dev::{self, ClusterSpec};
use cairn_node::limits::{GC_POLL_MS, SCRUB_ON_DEMAND_BYTES_PER_SEC_DEFAULT, STATUS_POLL_MS};
use cairn_node::operate;
use cairn_node::{Node, certs, clock};
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
        /// Only write the cluster's files (certificates, layout, node configurations, S3
        /// credentials and `s3.env`), to run each node as its own `cairn node` process.
        #[arg(long)]
        files_only: bool,
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
        /// Also write DIR/http.token, a random bearer token for the HTTP front (kept if present).
        #[arg(long)]
        http_token: bool,
        /// Also write DIR/s3-credentials.toml (one access key for the S3 front) and
        /// DIR/s3-key-encryption.key (the key that seals managed keys), each kept if present.
        #[arg(long)]
        s3_credentials: bool,
    },
    /// Store a file (or standard input, with -); prints its hash.
    Put { file: PathBuf },
    /// Fetch a blob into a file (or stdout with -o -).
    Get {
        hash: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show a blob's length and which of its replicas hold it (exit status 1: not found).
    Stat { hash: String },
    /// Delete a blob.
    Rm { hash: String },
    /// Show every node: zone, state, used and free bytes, layout version.
    Status,
    /// Collect garbage now: delete blobs that no S3 object or upload refers to (and that were
    /// not written within the grace period), with a progress display.
    Gc {
        /// The node to run it on (default: the first that answers).
        #[arg(long)]
        node: Option<String>,
        /// Only show how the last or current collection went.
        #[arg(long)]
        status: bool,
    },
    /// Compare every node's blobs with its peers' now and make every missing copy, with
    /// progress (exit 1: copies still missing, e.g. on a node that is down).
    Repair {
        /// Only this node (default: all).
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Verify every blob against its hash now, with progress; corrupt copies are replaced
    /// from replicas (exit 1: some were found).
    Scrub {
        /// Only this node (default: all).
        #[arg(long)]
        node: Option<String>,
        /// Pace on nodes whose scheduled scrub is off.
        #[arg(long, default_value_t = SCRUB_ON_DEMAND_BYTES_PER_SEC_DEFAULT)]
        bytes_per_sec: u64,
        #[arg(long, default_value_t = 86_400)]
        timeout_secs: u64,
    },
    /// Take a node out of the layout and wait until it has handed everything off and holds
    /// nothing; then it can be stopped.
    Drain {
        id: String,
        #[arg(long, default_value_t = 86_400)]
        timeout_secs: u64,
    },
    /// Change the cluster's layout online, or follow the data moves a change started.
    Layout {
        #[command(subcommand)]
        command: LayoutCommand,
    },
    /// Manage the S3 front's access keys online (every node, no restart): create one (its
    /// secret is shown once), list them, delete one, give or take a permission on a bucket.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage buckets online: create, list (with the keys that may use each), delete an empty
    /// one, show one (objects, bytes, keys).
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
    /// Check configuration files without starting anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an access key; prints its id and secret (the secret is never shown again).
    Create {
        /// A name for people (who or what uses the key).
        name: String,
        /// It may create buckets through S3 (and owns those it creates).
        #[arg(long)]
        create_buckets: bool,
    },
    /// Every managed key and its permissions (never a secret).
    List,
    /// Delete a key and its permissions.
    Delete { access_key: String },
    /// Give a key a permission on a bucket: read, write (includes read) or owner (includes
    /// write, and the bucket's settings).
    Allow {
        access_key: String,
        bucket: String,
        permission: PermissionArg,
    },
    /// Take every permission a key has on a bucket.
    Deny { access_key: String, bucket: String },
}

#[derive(Subcommand)]
enum BucketCommand {
    Create {
        bucket: String,
    },
    List,
    /// Delete a bucket that holds no object and no unfinished upload.
    Delete {
        bucket: String,
    },
    Info {
        bucket: String,
    },
}

/// A permission as the command line names it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PermissionArg {
    Read,
    Write,
    Owner,
}

impl From<PermissionArg> for Permission {
    fn from(arg: PermissionArg) -> Permission {
        match arg {
            PermissionArg::Read => Permission::Read,
            PermissionArg::Write => Permission::Write,
            PermissionArg::Owner => Permission::Owner,
        }
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a node's configuration: every key known, every setting in range, the layout
    /// holding this node, certificates and secrets readable (and by their owner only).
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum LayoutCommand {
    /// Print the cluster's current layout (TOML).
    Show,
    /// Add a node.
    Add {
        id: String,
        /// Its QUIC address, host:port.
        #[arg(long)]
        addr: cairn_core::addr::NodeAddr,
        #[arg(long)]
        zone: String,
        #[arg(long, default_value_t = 100)]
        weight: u32,
    },
    /// Remove a node for good; every blob that loses a copy gets it back elsewhere.
    Remove { id: String },
    /// Change a node's weight (its share of the data).
    Reweight { id: String, weight: u32 },
    /// Change the replication factor (and the write quorum; default: a majority).
    SetFactor {
        factor: usize,
        #[arg(long)]
        write_quorum: Option<usize>,
    },
    /// Weigh nodes by capacity if some node is much fuller than its weight's share.
    Rebalance,
    /// Apply a whole layout file; its version must be above the cluster's.
    Apply {
        file: PathBuf,
        /// Succeed without a change when the cluster already has exactly this layout (for a
        /// job that applies the file on every deployment).
        #[arg(long)]
        unchanged_ok: bool,
    },
    /// Show the data moves of the last change, with a progress bar (until done, or once).
    Status {
        /// Print one line and stop instead of following the moves.
        #[arg(long)]
        once: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    cairn_node::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `cairn stat` for a blob no replica holds.
const EXIT_NOT_FOUND: u8 = 1;
/// Exit code of a command whose work was postponed and may succeed later (`EX_TEMPFAIL`).
const EXIT_POSTPONED: u8 = 75;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Stat { hash } => stat(&cli.client, &hash).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let summary = config_check(&file)?;
            println!("{}: ok ({summary})", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { node, status } => gc_command(&cli.client, node, status).await,
        Command::Key { command } => {
            let request = match command {
                KeyCommand::Create {
                    name,
                    create_buckets,
                } => KeysRequest::CreateKey {
                    name,
                    create_buckets,
                },
                KeyCommand::List => KeysRequest::ListKeys,
                KeyCommand::Delete { access_key } => KeysRequest::DeleteKey { access_key },
                KeyCommand::Allow {
                    access_key,
                    bucket,
                    permission,
                } => KeysRequest::Allow {
                    access_key,
                    bucket,
                    permission: permission.into(),
                },
                KeyCommand::Deny { access_key, bucket } => KeysRequest::Deny { access_key, bucket },
            };
            keys_command(&cli.client, request).await
        }
        Command::Bucket { command } => {
            let request = match command {
                BucketCommand::Create { bucket } => KeysRequest::CreateBucket { bucket },
                BucketCommand::List => KeysRequest::ListBuckets,
                BucketCommand::Delete { bucket } => KeysRequest::DeleteBucket { bucket },
                BucketCommand::Info { bucket } => KeysRequest::BucketInfo { bucket },
            };
            keys_command(&cli.client, request).await
        }
        Command::Repair { node, timeout_secs } => {
            let mut admin = admin(&cli.client)?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let outcome = operate::repair(&mut admin, node.as_deref(), timeout, &mut say).await?;
            finish(admin, outcome).await
        }
        Command::Scrub {
            node,
            bytes_per_sec,
            timeout_secs,
        } => {
            let mut admin = admin(&cli.client)?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let outcome = operate::scrub(
                &mut admin,
                node.as_deref(),
                bytes_per_sec,
                timeout,
                &mut say,
            )
            .await?;
            finish(admin, outcome).await
        }
        Command::Drain { id, timeout_secs } => {
            let mut admin = admin(&cli.client)?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let outcome = operate::drain(&mut admin, &id, timeout, &mut say).await?;
            finish(admin, outcome).await
        }
        command => run_command(&cli.client, command)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// A progress line of a long command.
fn say(line: &str) {
    println!("{line}");
}

/// Prints how an operator's command ended; its exit code.
async fn finish(admin: Admin, outcome: operate::Outcome) -> Result<ExitCode> {
    admin.close().await;
    println!("{}", outcome.summary);
    Ok(ExitCode::from(outcome.exit_code))
}

/// The process's environment variable `name`, if set (and valid UTF-8).
fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Checks a node configuration the way `cairn node` would before it starts: a summary of what
/// it found, or the first problem.
fn config_check(file: &Path) -> Result<String> {
    let config = NodeConfig::load_with_env(file, &environment)?;
    config.failure_detector.validate()?;
    config.heal.validate()?;
    let layout = load_layout(&config.layout)?;
    let me = layout
        .nodes
        .iter()
        .find(|n| n.id == config.id)
        .ok_or_else(|| format!("node {} is not in {}", config.id, config.layout.display()))?;
    cairn_node::config::check_secret_file(&config.tls.key)?;
    Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let token = config.http.load_token()?;
    let s3_tls = config.s3.as_ref().and_then(|s3| s3.tls.as_ref());
    for files in config.http.tls.iter().chain(s3_tls) {
        cairn_node::front::tls::check(files)?;
    }
    let https = |tls: &Option<_>| if tls.is_some() { " over TLS" } else { "" };
    let keys = match &config.s3 {
        Some(s3) => s3.load_credentials()?.len(),
        None => 0,
    };
    let managed_keys = match &config.s3 {
        Some(s3) if s3.load_key_encryption_key()?.is_some() => ", managed keys on",
        Some(_) => ", managed keys off (no key-encryption key)",
        None => "",
    };
    let from_env: Vec<String> = cairn_node::config::NODE_ENV_OVERRIDES
        .iter()
        .filter(|(name, _)| environment(name).is_some())
        .map(|(name, key)| format!("{key} from {name}"))
        .collect();
    let from_env = match from_env.is_empty() {
        true => String::new(),
        false => format!("; {}", from_env.join(", ")),
    };
    Ok(format!(
        "node {} in zone {} of layout version {}; HTTP on {}{}{}; {}{from_env}",
        config.id,
        me.zone,
        layout.version,
        config.http.listen,
        https(&config.http.tls),
        if token.is_some() { " with a token" } else { "" },
        match &config.s3 {
            Some(s3) => format!(
                "S3 on {}{} with {keys} access key(s){managed_keys}{}",
                s3.listen,
                https(&s3.tls),
                match &s3.virtual_host_domain {
                    Some(domain) => format!(", virtual hosts under {domain}"),
                    None => String::new(),
                }
            ),
            None => "S3 off".to_string(),
        }
    ))
}

/// `cairn stat`: the blob's length and which replicas hold it; exit status 1 when none does.
async fn stat(client_config: &Path, hash: &str) -> Result<ExitCode> {
    let client = connect(client_config).await?;
    let hash: Hash = hash.parse()?;
    let found = client.head(&hash).await?;
    match found {
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
    Ok(match found {
        Some(_) => ExitCode::SUCCESS,
        None => ExitCode::from(EXIT_NOT_FOUND),
    })
}

async fn run_command(client_config: &Path, command: Command) -> Result<()> {
    match command {
        Command::Node { config } => {
            let config = NodeConfig::load_with_env(&config, &environment)?;
            let node = Node::start(&config).await?;
            stop_signal().await?;
            tracing::info!("stopping");
            node.shutdown().await;
            Ok(())
        }
        Command::Dev {
            dir,
            base_port,
            check_only,
            files_only: true,
        } => {
            let _ = check_only;
            let spec =
                ClusterSpec::local(dev::DEV_NODES, dev::DEV_ZONES, [127, 0, 0, 1], base_port);
            let files = dev::write_cluster(&dir, &spec)?;
            for path in &files.node_configs {
                println!("{}", path.display());
            }
            if let Some(env) = &files.s3_env {
                println!("{}", env.display());
            }
            Ok(())
        }
        Command::Dev {
            dir,
            base_port,
            check_only,
            files_only: false,
        } => run_dev(&dir, base_port, check_only).await,
        Command::Certs {
            dir,
            nodes,
            clients,
            http_token,
            s3_credentials,
        } => {
            for path in certs::generate(&dir, &nodes, &clients)? {
                println!("{}", path.display());
            }
            if http_token {
                println!("{}", certs::generate_http_token(&dir)?.display());
            }
            if s3_credentials {
                println!("{}", certs::generate_s3_credentials(&dir)?.display());
            }
            Ok(())
        }
        Command::Put { file } if file == Path::new("-") => {
            let client = connect(client_config).await?;
            let hash = client.put_stream(tokio::io::stdin()).await?;
            println!("{hash}");
            client.close().await;
            Ok(())
        }
        Command::Put { file } => {
            let client = connect(client_config).await?;
            let len = std::fs::metadata(&file)?.len();
            let bar = transfer_bar(len, "hashing");
            let (hash, len) = hash_file_with_progress(&file, &|n| bar.set_position(n)).await?;
            bar.set_position(0);
            bar.set_message("storing");
            let progress = |n| bar.set_position(n);
            let stored = client
                .put_file_known_with_progress(hash, len, &file, &progress)
                .await?;
            bar.finish_and_clear();
            println!("{hash}");
            if !stored.sent {
                eprintln!("(already stored on a write quorum; no bytes sent)");
            } else if stored.existed {
                eprintln!("(already stored)");
            }
            client.close().await;
            Ok(())
        }
        Command::Get { hash, output } => {
            let client = connect(client_config).await?;
            let hash: Hash = hash.parse()?;
            if output == Path::new("-") {
                let n = download(&client, &hash, tokio::io::stdout()).await?;
                eprintln!("{n} bytes");
            } else {
                // Written beside the target and renamed only once the hash is verified.
                let dir = output.parent().filter(|p| !p.as_os_str().is_empty());
                let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
                let file = tokio::fs::File::from_std(tmp.reopen()?);
                let n = download(&client, &hash, file).await?;
                tmp.persist(&output)?;
                eprintln!("{n} bytes written to {}", output.display());
            }
            client.close().await;
            Ok(())
        }
        Command::Rm { hash } => {
            let client = connect(client_config).await?;
            let hash: Hash = hash.parse()?;
            let existed = client.delete(&hash).await?;
            println!("{}", if existed { "deleted" } else { "was not stored" });
            client.close().await;
            Ok(())
        }
        Command::Status => {
            let mut admin = admin(client_config)?;
            let layout = admin.current_layout().await?;
            let status = ClusterStatus::of(&layout, &admin.statuses().await);
            let mut protocols = std::collections::HashMap::new();
            for node in &layout.nodes {
                if let Some(p) = admin.protocol_of(node).await {
                    protocols.insert(node.id.clone(), p);
                }
            }
            print_status(&status, &protocols);
            admin.close().await;
            Ok(())
        }
        Command::Layout { command } => layout_command(client_config, command).await,
        Command::Stat { .. }
        | Command::Config { .. }
        | Command::Gc { .. }
        | Command::Key { .. }
        | Command::Bucket { .. }
        | Command::Repair { .. }
        | Command::Scrub { .. }
        | Command::Drain { .. } => {
            unreachable!("answered by run")
        }
    }
}

/// Runs or shows a collection. Exits 0 when it ran cleanly, `EXIT_POSTPONED` when it was
/// postponed (try again later), 1 when it ran with errors.
/// `cairn key` and `cairn bucket`: one request, carried out by the first node that can.
async fn keys_command(client: &Path, request: KeysRequest) -> Result<ExitCode> {
    let mut admin = admin(client)?;
    admin.current_layout().await?;
    let outcome = admin.keys(request).await;
    admin.close().await;
    let (_, answer) = outcome?;
    let grants = |grants: &[(String, Permission)]| {
        let all: Vec<String> = grants.iter().map(|(n, p)| format!("{n}:{p}")).collect();
        match all.is_empty() {
            true => "-".to_string(),
            false => all.join(","),
        }
    };
    match answer {
        KeysAnswer::Created {
            access_key,
            secret_key,
        } => {
            println!("access_key = \"{access_key}\"");
            println!("secret_key = \"{}\"", secret_key.0);
            eprintln!("the secret is not shown again; it works on every node now");
        }
        KeysAnswer::Keys(keys) => {
            println!(
                "{:<26} {:<24} {:<14} PERMISSIONS",
                "ACCESS KEY", "NAME", "CREATE BUCKETS"
            );
            for k in keys {
                let create = if k.create_buckets { "yes" } else { "no" };
                println!(
                    "{:<26} {:<24} {:<14} {}",
                    k.access_key,
                    k.name,
                    create,
                    grants(&k.grants)
                );
            }
        }
        KeysAnswer::Buckets(buckets) => {
            println!("{:<40} {:<24} KEYS", "BUCKET", "CREATED");
            for b in buckets {
                println!(
                    "{:<40} {:<24} {}",
                    b.name,
                    time_of(b.created_ms),
                    grants(&b.grants)
                );
            }
        }
        KeysAnswer::Bucket(b) => {
            let more = if b.complete {
                ""
            } else {
                " at least (counting stopped)"
            };
            println!("bucket:  {}", b.name);
            println!("created: {}", time_of(b.created_ms));
            println!(
                "objects: {}{more}, {} ({} bytes)",
                b.objects,
                bytes(b.bytes),
                b.bytes
            );
            println!(
                "keys:    {} (and the configuration file's keys)",
                grants(&b.grants)
            );
        }
        KeysAnswer::Done(what) => println!("{what}"),
        KeysAnswer::Refused(why) => return Err(why.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// A wall-clock time in milliseconds, as RFC 3339 UTC.
fn time_of(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

async fn gc_command(client: &Path, node: Option<String>, status_only: bool) -> Result<ExitCode> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let mut admin = admin(client)?;
    admin.current_layout().await?;
    let (id, started, mut status) = admin.gc(node.as_deref(), !status_only).await?;
    if !status_only {
        if started {
            println!("garbage collection started on {id}");
        } else {
            println!("a garbage collection is already running on {id}; following it");
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("a valid template"),
        );
        loop {
            bar.set_message(format!(
                "{}: {} marks, {} candidates, {} referenced, {} expired, {} uploads aborted, {}/{} examined, {} deleted ({} bytes), {} kept",
                status.phase,
                status.marks_scanned,
                status.candidates,
                status.referenced_blobs,
                status.expired_objects,
                status.aborted_uploads,
                status.examined,
                status.candidates,
                status.deleted,
                status.deleted_bytes,
                status.kept
            ));
            bar.tick();
            if !status.running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(GC_POLL_MS)).await;
            status = admin.gc(Some(&id), false).await?.2;
        }
        bar.finish_and_clear();
    }
    println!(
        "{id}: {} ({} runs): {} marks scanned, {} candidates, {} blobs referenced, {} objects expired, {} uploads aborted, {} deleted ({} bytes), {} kept, {} errors{}",
        if status.running { "running" } else { "idle" },
        status.runs,
        status.marks_scanned,
        status.candidates,
        status.referenced_blobs,
        status.expired_objects,
        status.aborted_uploads,
        status.deleted,
        status.deleted_bytes,
        status.kept,
        status.errors,
        status
            .last_error
            .as_deref()
            .map(|e| format!(" (last: {e})"))
            .unwrap_or_default()
    );
    admin.close().await;
    if let Some(reason) = &status.postponed {
        println!("{id}: {reason}; it runs by itself once the moves are over");
        return Ok(ExitCode::from(EXIT_POSTPONED));
    }
    if status.errors > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, the signal `docker stop` and init systems send.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// A progress bar over `len` bytes, drawn on stderr when it is a terminal and hidden otherwise
/// (piped output stays clean).
fn transfer_bar(len: u64, what: &'static str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let target = match std::io::stderr().is_terminal() {
        true => ProgressDrawTarget::stderr(),
        false => ProgressDrawTarget::hidden(),
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// Streams a blob into `out` with a progress bar; the stream fails rather than ends if the
/// bytes do not hash to the blob's name.
async fn download(
    client: &Client,
    hash: &Hash,
    mut out: impl tokio::io::AsyncWrite + Unpin,
) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut reader = client.open_read(hash, None).await?;
    let bar = transfer_bar(reader.len, "fetching");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
        total += n as u64;
        bar.set_position(total);
    }
    out.flush().await?;
    bar.finish_and_clear();
    Ok(total)
}

fn admin(path: &Path) -> Result<Admin> {
    let config = ClientFileConfig::load(path).map_err(|e| {
        format!("{e}\n(start a local cluster with `cairn dev`, or pass --client FILE)")
    })?;
    let layout = load_layout(&config.layout)?;
    let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    Ok(Admin::new(layout, &identity)?)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints `cairn status`; `protocols` holds the protocol version each node speaks with this
/// command (newest both know).
fn print_status(status: &ClusterStatus, protocols: &std::collections::HashMap<String, u32>) {
    println!(
        "layout version {}, replication factor {}, write quorum {}, {} nodes in {} zones",
        status.layout_version,
        status.replication_factor,
        status.write_quorum,
        status.nodes.len(),
        status.zones
    );
    println!(
        "  {:<8} {:<8} {:<8} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7} {:>11} {:<9} {:<8}",
        "node",
        "zone",
        "state",
        "live",
        "dead",
        "free",
        "blobs",
        "misplaced",
        "layout",
        "disk",
        "version",
        "protocol"
    );
    let figure = |v: Option<u64>| v.unwrap_or_default();
    for n in &status.nodes {
        match &n.error {
            None => println!(
                "  {:<8} {:<8} {:<8} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7} {:>11} {:<9} {:<8}",
                n.id,
                n.zone,
                n.state,
                bytes(figure(n.live_bytes)),
                bytes(figure(n.dead_bytes)),
                bytes(figure(n.free_bytes)),
                figure(n.blobs),
                bytes(figure(n.misplaced_bytes)),
                figure(n.layout_version),
                n.disk.unwrap_or_default(),
                n.version.as_deref().unwrap_or_default(),
                protocols
                    .get(&n.id)
                    .map_or("-".to_string(), |p| format!("cairn/{p}"))
            ),
            Some(e) => println!("  {:<8} {:<8} {:<8} ({e})", n.id, n.zone, n.state),
        }
    }
    let problems: Vec<String> = status
        .nodes
        .iter()
        .flat_map(|n| n.problems.iter().map(move |p| format!("{}: {p}", n.id)))
        .collect();
    if status.under_replicated_blobs > 0 {
        println!(
            "{} blobs have fewer than {} copies",
            status.under_replicated_blobs, status.replication_factor
        );
    }
    for line in problems {
        println!("! {line}");
    }
    for n in &status.nodes {
        if let Some(gc) = &n.gc {
            println!("{}", collector_line(&n.id, gc));
        }
    }
}

/// `cairn status`'s line for a node's collector and lifecycle pass.
fn collector_line(id: &str, gc: &cairn_core::status::GcStatus) -> String {
    let when = if gc.running {
        format!("running ({})", gc.phase)
    } else {
        let ago_secs = cairn_node::clock::wall_ms().saturating_sub(gc.finished_ms) / 1000;
        format!("last run finished {ago_secs} s ago")
    };
    format!(
        "collector on {id}: {when}: {} objects expired, {} uploads aborted by lifecycle rules, {} blobs deleted ({}), {} errors",
        gc.expired_objects,
        gc.aborted_uploads,
        gc.deleted,
        bytes(gc.deleted_bytes),
        gc.errors
    )
}

async fn layout_command(client: &Path, command: LayoutCommand) -> Result<()> {
    let mut admin = admin(client)?;
    let current = admin.current_layout().await?;
    let next = match command {
        LayoutCommand::Show => {
            print!("{}", current.to_toml_string());
            return Ok(());
        }
        LayoutCommand::Add {
            id,
            addr,
            zone,
            weight,
        } => layout_edit::add_node(
            &current,
            NodeSpec {
                id,
                addr,
                zone,
                weight,
            },
        )?,
        LayoutCommand::Remove { id } => layout_edit::remove_node(&current, &id)?,
        LayoutCommand::Reweight { id, weight } => layout_edit::reweight(&current, &id, weight)?,
        LayoutCommand::SetFactor {
            factor,
            write_quorum,
        } => layout_edit::set_factor(&current, factor, write_quorum)?,
        LayoutCommand::Rebalance => {
            let statuses: Vec<(String, NodeStatus)> = admin
                .statuses()
                .await
                .into_iter()
                .filter_map(|(n, s)| s.ok().map(|s| (n.id, s)))
                .collect();
            match layout_edit::rebalance(&current, &statuses) {
                Ok(next) => next,
                Err(RebalanceRefusal::InLine) => {
                    println!("{}", RebalanceRefusal::InLine);
                    return Ok(());
                }
                Err(refusal) => return Err(refusal.into()),
            }
        }
        LayoutCommand::Apply { file, unchanged_ok } => {
            let next = load_layout(&file)?;
            if unchanged_ok && next == current {
                println!(
                    "{}: the cluster already has layout version {}; nothing to apply",
                    file.display(),
                    current.version
                );
                admin.close().await;
                return Ok(());
            }
            if next.version <= current.version {
                return Err(format!(
                    "{}: version {} is not above the cluster's {}",
                    file.display(),
                    next.version,
                    current.version
                )
                .into());
            }
            next
        }
        LayoutCommand::Status { once, timeout_secs } => {
            return follow_moves(&mut admin, once, timeout_secs).await;
        }
    };
    for said in admin.apply(&next).await? {
        println!("  {said}");
    }
    println!(
        "layout version {} applied; data moves in the background (`cairn layout status`)",
        next.version
    );
    admin.close().await;
    Ok(())
}

/// Polls every node until the moves of the current layout are done, with a progress bar on a
/// terminal (a line per poll otherwise).
async fn follow_moves(admin: &mut Admin, once: bool, timeout_secs: u64) -> Result<()> {
    let started = clock::now();
    let timeout = std::time::Duration::from_secs(timeout_secs);
    let bar = transfer_bar(0, "moves");
    if once {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    loop {
        let layout = admin.current_layout().await?;
        let statuses = admin.statuses_with_leaving().await;
        let p = MoveProgress::of(&layout, &statuses);
        let total = p.moved_bytes + p.misplaced_bytes;
        bar.set_length(total.max(1));
        bar.set_position(p.moved_bytes);
        let waiting = if p.nodes_waited_for.is_empty() {
            String::new()
        } else {
            format!(", waiting for {}", p.nodes_waited_for.join(", "))
        };
        let line = format!(
            "layout {}: {}/{} nodes on it, {} settled, {} moved, {} to move, {} copies pending{waiting}",
            p.layout_version,
            p.nodes_on_version,
            p.nodes_total,
            p.nodes_settled,
            bytes(p.moved_bytes),
            bytes(p.misplaced_bytes),
            p.transfers_pending
        );
        bar.set_message(format!("layout {}", p.layout_version));
        if bar.is_hidden() {
            println!("{line}");
        }
        if p.done() || once {
            bar.finish_and_clear();
            if p.done() {
                println!("{line}; done");
            }
            break;
        }
        if clock::since(started) >= timeout {
            bar.abandon();
            return Err(format!("still moving after {timeout_secs} s: {line}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(STATUS_POLL_MS)).await;
    }
    admin.close().await;
    Ok(())
}

async fn connect(path: &Path) -> Result<Client> {
    let config = ClientFileConfig::load(path).map_err(|e| {
        format!("{e}\n(start a local cluster with `cairn dev`, or pass --client FILE)")
    })?;
    let layout = load_layout(&config.layout)?;
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
    let layout = load_layout(&files.layout)?;
    println!(
        "Cairn dev cluster: {} nodes in {} zones, replication factor {}, write quorum {}",
        layout.nodes.len(),
        layout.zone_count(),
        layout.replication_factor,
        layout.write_quorum
    );
    for node in &layout.nodes {
        let running = nodes.iter().find(|n| n.id() == node.id);
        let http = running
            .map(|n| format!("http://{}", n.http_addr()))
            .unwrap_or_default();
        let s3 = running
            .and_then(|n| n.s3_addr())
            .map(|a| format!("s3 http://{a}"))
            .unwrap_or_default();
        println!(
            "  {:<4} {:<8} {:<16} {http}  {s3}",
            node.id, node.zone, node.addr
        );
    }
    if let Some(env) = &files.s3_env {
        println!("S3 credentials and endpoints: {}", env.display());
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
    println!("  {exe} --client {config} layout show");
    if check_only {
        println!("Stopping (--check-only).");
    } else {
        println!("Serving until Ctrl-C.");
        stop_signal().await?;
    }
    // Together, so that no node watches the others go one by one.
    let stopping: Vec<_> = nodes
        .into_iter()
        .map(|node| tokio::spawn(node.shutdown()))
        .collect();
    for stop in stopping {
        let _ = stop.await;
    }
    Ok(())
}
