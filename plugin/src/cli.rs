//! The command line: `airlift import`, modelled on `ctr images import`. A thin adapter over
//! [`crate::import`].

use crate::archive::understand::PlanOptions;
use crate::containerd::Containerd;
use crate::import::{self, ImportOptions, Mode, Source};
use crate::platform::{Platform, PlatformPolicy};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Imports container image archives into containerd with minimal copying.
#[derive(Parser, Debug)]
#[command(name = "airlift", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import an image archive (docker save or OCI layout; tar, gzip, zstd, lz4 or bzip2).
    Import(ImportArgs),
    /// Run the daemon: import the archives of the images directories, keep them imported and
    /// pinned while they are there, release them when they go.
    Serve(ServeArgs),
    /// Show the daemon's status.
    Status(SocketArgs),
    /// List the archives the daemon knows.
    Ls(LsArgs),
    /// Wait until the daemon's startup import is done (for ordering kubelet after it).
    Wait(WaitArgs),
    /// Unpin an archive's images and release its lease (the daemon forgets the archive).
    Forget(ForgetArgs),
}

/// The daemon's API socket.
#[derive(Args, Debug)]
pub struct SocketArgs {
    /// airlift's API socket.
    #[arg(long, default_value = "/run/airlift/airlift.sock")]
    pub socket: PathBuf,
}

/// `airlift ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `airlift wait`.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Give up after this many seconds (exit status 1); 0 waits forever.
    #[arg(long, default_value = "0", value_name = "SECONDS")]
    pub timeout: f64,
}

/// `airlift forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// The archive's path.
    pub file: PathBuf,
}

/// `airlift serve`: flags override the configuration file.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file [default: /etc/airlift/config.toml, if present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// containerd's socket.
    #[arg(long, short = 'a')]
    pub address: Option<PathBuf>,
    /// containerd namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Images directory to watch (repeatable; replaces the configured list).
    #[arg(long = "images-dir", value_name = "DIR")]
    pub images_dirs: Vec<PathBuf>,
    /// State directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// API socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Prometheus metrics address (host:port).
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
    /// Archives imported at the same time.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Settle interval in milliseconds.
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// How blobs reach containerd.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Serve containerd's content store from DIR on the API socket (airlift as containerd's
    /// content proxy plugin; `[content_proxy] root` in the file).
    #[arg(long, value_name = "DIR")]
    pub content_proxy_root: Option<PathBuf>,
}

/// `airlift import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The archive, or `-` for standard input.
    pub file: String,
    /// containerd's socket (k3s: /run/k3s/containerd/containerd.sock).
    #[arg(
        long,
        short = 'a',
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: PathBuf,
    /// containerd namespace (kubelet's is k8s.io).
    #[arg(
        long,
        short = 'n',
        env = "CONTAINERD_NAMESPACE",
        default_value = "k8s.io"
    )]
    pub namespace: String,
    /// Import this platform (os/arch[/variant]); repeatable. Default: what this host runs.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Import every platform in the archive.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Repository for tag-only names (`1.35` becomes `<base-name>:1.35`).
    #[arg(long, value_name = "NAME")]
    pub base_name: Option<String>,
    /// Also create an image named NAME for the archive's whole index.
    #[arg(long, value_name = "NAME")]
    pub index_name: Option<String>,
    /// Also create `<repository>@sha256:…` names for every image.
    #[arg(long)]
    pub digest_refs: bool,
    /// Extra image label (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Do not pin the images (kubelet may then garbage-collect them).
    #[arg(long)]
    pub no_pin: bool,
    /// How blobs reach containerd.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for containerd's socket.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// Where imports are remembered: an unchanged archive imported again with the same options
    /// is not read again (its images, pins and lease are checked).
    #[arg(long, default_value = "/var/lib/airlift", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Import even if the archive is unchanged since its last import.
    #[arg(long)]
    pub force: bool,
    /// Have the running daemon import the file (it then tracks the archive).
    #[arg(long)]
    pub daemon: bool,
    /// The daemon's API socket (with --daemon).
    #[arg(long, default_value = "/run/airlift/airlift.sock")]
    pub socket: PathBuf,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match cli.command {
        Command::Import(args) => {
            init_logging("warn", crate::config::LogFormat::Text);
            if args.daemon {
                runtime.block_on(run_daemon_import(args))
            } else {
                runtime.block_on(run_import(args))
            }
        }
        Command::Serve(args) => runtime.block_on(run_serve(args)),
        Command::Status(args) => runtime.block_on(run_status(args)),
        Command::Ls(args) => runtime.block_on(run_ls(args)),
        Command::Wait(args) => runtime.block_on(run_wait(args)),
        Command::Forget(args) => runtime.block_on(run_forget(args)),
    };
    drop(runtime);
    crate::liveness::release();
    code
}

fn init_logging(default: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLIFT_LOG")
        .unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        crate::config::LogFormat::Json => builder.json().init(),
        crate::config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The daemon's configuration: the file, then the flags.
pub fn serve_config(args: &ServeArgs) -> Result<crate::config::Config, String> {
    let mut cfg = crate::config::Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(v) = &args.address {
        cfg.address = v.clone();
    }
    if let Some(v) = &args.namespace {
        cfg.namespace = v.clone();
    }
    if !args.images_dirs.is_empty() {
        cfg.images_dirs = args.images_dirs.clone();
    }
    if let Some(v) = &args.state_dir {
        cfg.state_dir = v.clone();
    }
    if let Some(v) = &args.socket {
        cfg.socket = v.clone();
    }
    if let Some(v) = &args.metrics_address {
        cfg.metrics_address = v.clone();
    }
    if let Some(v) = args.log_format {
        cfg.log_format = v;
    }
    if let Some(v) = args.concurrency {
        cfg.concurrency = v;
    }
    if let Some(v) = args.settle_ms {
        cfg.settle_ms = v;
    }
    if let Some(v) = args.mode {
        cfg.mode = v;
    }
    if let Some(v) = &args.content_proxy_root {
        cfg.content_proxy.root = Some(v.clone());
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

async fn run_serve(args: ServeArgs) -> ExitCode {
    let cfg = match serve_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlift: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging("info", cfg.log_format);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match crate::daemon::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("airlift: {e}");
            ExitCode::FAILURE
        }
    }
}

type ApiClient =
    crate::daemon::api::proto::airlift_client::AirliftClient<tonic::transport::Channel>;

async fn api_client(socket: &std::path::Path) -> Result<ApiClient, ExitCode> {
    crate::daemon::api::connect(socket).await.map_err(|e| {
        eprintln!("airlift: {e}");
        ExitCode::FAILURE
    })
}

async fn run_status(args: SocketArgs) -> ExitCode {
    let mut c = match api_client(&args.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.status(crate::daemon::api::proto::StatusRequest {}).await {
        Ok(r) => {
            let s = r.into_inner();
            println!(
                "startup import:  {}",
                if s.startup_done {
                    "done"
                } else {
                    "in progress"
                }
            );
            println!(
                "containerd:      {}",
                if s.containerd_connected {
                    "connected"
                } else {
                    "not connected"
                }
            );
            println!("archives:        {}", s.archives);
            println!("importing:       {}", s.importing);
            println!("queued:          {}", s.queue_length);
            println!("bytes read:      {}", s.archive_bytes_read);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlift: status: {}", e.message());
            ExitCode::FAILURE
        }
    }
}

fn archive_json(a: &crate::daemon::api::proto::Archive) -> serde_json::Value {
    serde_json::json!({
        "path": a.path,
        "state": crate::daemon::api::state_name(a.state),
        "images": a.images,
        "bytes": a.bytes,
        "duration_seconds": a.duration_seconds,
        "last_error": a.last_error,
        "imported_at": a.imported_at,
        "imports": a.imports,
    })
}

async fn run_ls(args: LsArgs) -> ExitCode {
    let mut c = match api_client(&args.socket.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let list = match c.list(crate::daemon::api::proto::ListRequest {}).await {
        Ok(r) => r.into_inner().archives,
        Err(e) => {
            eprintln!("airlift: ls: {}", e.message());
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let v: Vec<serde_json::Value> = list.iter().map(archive_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!(
            "{:<10} {:>7} {:>9} {:>8}  PATH",
            "STATE", "IMAGES", "MB", "SECONDS"
        );
        for a in &list {
            println!(
                "{:<10} {:>7} {:>9.1} {:>8.2}  {}",
                crate::daemon::api::state_name(a.state),
                a.images.len(),
                a.bytes as f64 / 1e6,
                a.duration_seconds,
                a.path
            );
            if !a.last_error.is_empty() {
                println!("           error: {}", a.last_error);
            }
        }
    }
    ExitCode::SUCCESS
}

async fn run_wait(args: WaitArgs) -> ExitCode {
    let deadline = (args.timeout > 0.0)
        .then(|| std::time::Instant::now() + Duration::from_secs_f64(args.timeout));
    loop {
        if let Ok(mut c) = crate::daemon::api::connect(&args.socket.socket).await {
            if let Ok(r) = c.status(crate::daemon::api::proto::StatusRequest {}).await {
                if r.into_inner().startup_done {
                    return ExitCode::SUCCESS;
                }
            }
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            eprintln!(
                "airlift: wait: the daemon at {} did not finish its startup import within {} s",
                args.socket.socket.display(),
                args.timeout
            );
            return ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_forget(args: ForgetArgs) -> ExitCode {
    let mut c = match api_client(&args.socket.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = std::path::absolute(&args.file).unwrap_or(args.file.clone());
    let req = crate::daemon::api::proto::ForgetRequest {
        path: path.display().to_string(),
    };
    match c.forget(req).await {
        Ok(r) => {
            for name in r.into_inner().unpinned {
                println!("unpinned {name}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlift: forget: {}", e.message());
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon_import(args: ImportArgs) -> ExitCode {
    let path = match std::fs::canonicalize(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("airlift: {}: {e}", args.file);
            return ExitCode::FAILURE;
        }
    };
    let mut c = match api_client(&args.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = crate::daemon::api::proto::ImportRequest {
        path: path.display().to_string(),
    };
    let mut stream = match c.import(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            eprintln!("airlift: {}", e.message());
            return ExitCode::FAILURE;
        }
    };
    let bar = (!args.json && std::io::stderr().is_terminal())
        .then(|| progress_bar(&Source::File(path.clone())));
    let mut last = None;
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if let Some(bar) = &bar {
                    bar.set_position(p.bytes_read);
                }
                if p.done {
                    last = p.archive;
                }
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("airlift: {}: {}", path.display(), e.message());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let Some(a) = last else {
        eprintln!(
            "airlift: {}: the daemon did not report a result",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    let state = crate::daemon::api::state_name(a.state);
    if args.json {
        println!("{}", archive_json(&a));
    } else {
        for i in &a.images {
            println!("{i}");
        }
        println!(
            "{}: {state}; {} images in {:.2} s",
            a.path,
            a.images.len(),
            a.duration_seconds
        );
    }
    if state == "imported" {
        ExitCode::SUCCESS
    } else {
        eprintln!("airlift: {}: {}", a.path, a.last_error);
        ExitCode::FAILURE
    }
}

/// Turns the flags into import options.
pub fn options(args: &ImportArgs) -> Result<ImportOptions, String> {
    let platforms = if args.all_platforms {
        PlatformPolicy::All
    } else if args.platform.is_empty() {
        PlatformPolicy::Host
    } else {
        let parsed: Result<Vec<Platform>, _> =
            args.platform.iter().map(|p| Platform::parse(p)).collect();
        PlatformPolicy::Only(parsed.map_err(|e| e.to_string())?)
    };
    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("invalid --label {l:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("invalid --label {l:?}: empty key"));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(ImportOptions {
        plan: PlanOptions {
            platforms,
            base_name: args.base_name.clone(),
            index_name: args.index_name.clone(),
            digest_refs: args.digest_refs,
        },
        labels,
        pin: !args.no_pin,
        mode: args.mode,
        scratch_dir: Some(args.state_dir.clone()),
        ..ImportOptions::default()
    })
}

/// When containerd's content store is airlift (a content proxy plugin), the store's directory as
/// the serving daemon reports it: the import then writes there directly, as into containerd's
/// own content root.
async fn proxy_content_root(client: &Containerd) -> Option<PathBuf> {
    if !matches!(client.content_root().await, Ok(None)) {
        return None;
    }
    let address = client.content_proxy_address().await.ok()??;
    let mut api = crate::daemon::api::connect(&address).await.ok()?;
    let status = api
        .status(crate::daemon::api::proto::StatusRequest {})
        .await;
    match status.map(|s| s.into_inner().content_proxy_root) {
        Ok(root) if !root.is_empty() => Some(PathBuf::from(root)),
        _ => {
            tracing::info!(address = %address.display(), "the content proxy plugin does not report its store");
            None
        }
    }
}

async fn run_import(args: ImportArgs) -> ExitCode {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("airlift: {e}");
            return ExitCode::from(2);
        }
    };
    let source = if args.file == "-" {
        Source::Stdin
    } else {
        Source::File(PathBuf::from(&args.file))
    };
    let client = match Containerd::connect(
        &args.address,
        &args.namespace,
        Duration::from_secs(args.connect_timeout),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlift: {}: {e}", source.display_name());
            return ExitCode::FAILURE;
        }
    };
    let mut opts = opts;
    if opts.mode != Mode::Stream {
        opts.content_root = proxy_content_root(&client).await;
    }
    let progress = Arc::new(AtomicU64::new(0));
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| progress_bar(&source));
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let recall = match &source {
        Source::File(_) => crate::recall::Recall::open(&args.state_dir),
        Source::Stdin => None,
    };
    let fingerprint = crate::recall::Recall::fingerprint(&client, &opts);
    let mut remembered = None;
    if let (Some(recall), Source::File(path)) = (&recall, &source) {
        if !args.force {
            remembered = recall.check(&client, path, &fingerprint, opts.pin).await;
        }
    }
    let identity = match &source {
        Source::File(path) => crate::recall::Recall::identity(path),
        Source::Stdin => None,
    };
    let result = match remembered {
        Some(report) => Ok(report),
        None => import::import(&client, &source, &opts, progress.clone()).await,
    };
    if let (Some(recall), Some((path, id)), Ok(report)) = (&recall, identity, &result) {
        if report.mode != "unchanged" {
            recall.remember(path, id, fingerprint, report);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "archive": source.display_name(), "error": e.to_string() })
                );
            }
            eprintln!("airlift: {e}");
            ExitCode::FAILURE
        }
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serialises")
                );
            } else {
                print_report(&report);
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn progress_bar(source: &Source) -> indicatif::ProgressBar {
    let len = match source {
        Source::File(p) => std::fs::metadata(p).map(|m| m.len()).ok(),
        Source::Stdin => None,
    };
    let bar = match len {
        Some(len) => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("template"),
        ),
    };
    bar.set_message(format!("importing {}", source.display_name()));
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Formats bytes as MB with one decimal.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn print_report(r: &import::Report) {
    for image in &r.images {
        println!("{}\t{}\t{}", image.name, image.media_type, image.digest);
    }
    for s in &r.not_selected {
        println!("not imported (platform not selected): {s}");
    }
    for s in &r.skipped {
        eprintln!("airlift: warning: skipped {s}");
    }
    for f in &r.failed {
        eprintln!("airlift: error: {f}");
    }
    if r.mode == "unchanged" {
        println!(
            "{}: unchanged since its last import; {} images present and pinned, nothing read ({:.3} s; --force imports anyway)",
            r.archive,
            r.images.len(),
            r.seconds
        );
        return;
    }
    let rate = if r.seconds > 0.0 {
        r.archive_bytes as f64 / 1e6 / r.seconds
    } else {
        0.0
    };
    let failed = if r.failed.is_empty() {
        String::new()
    } else {
        format!(", {} failed", r.failed.len())
    };
    println!(
        "{}: {} images imported{failed}; {} blobs written, {} already present; {} written, {} read in {:.2} s ({rate:.1} MB/s, {} mode)",
        r.archive,
        r.images.len(),
        r.blobs_written,
        r.blobs_present,
        mb(r.bytes_written),
        mb(r.archive_bytes),
        r.seconds,
        r.mode
    );
}
