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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Import(args) => runtime.block_on(run_import(args)),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLIFT_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
        ..ImportOptions::default()
    })
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
    let result = import::import(&client, &source, &opts, progress.clone()).await;
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
