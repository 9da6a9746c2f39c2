//! The command line's arguments, and what they turn into: import options for `airlift import`, a
//! configuration for `airlift serve` (the file, then the flags).

use crate::config::{Config, ConfigError, LogFormat};
use crate::import::{ImportOptions, Mode};
use crate::service::options::{Asked, OptionsError};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    Status(StatusArgs),
    /// List the archives the daemon knows.
    Ls(LsArgs),
    /// Wait until the daemon's startup import is done (for ordering kubelet after it).
    Wait(WaitArgs),
    /// Unpin an archive's images and release its lease (the daemon forgets the archive).
    Forget(ForgetArgs),
    /// Check what others see of the images airlift provides (or those named): kubelet through
    /// CRI (present, pinned, its repo digests naming the target) and a peer such as Spegel (every blob present and
    /// labelled with its distribution source), and for images verified at import what each
    /// met. Exits non-zero listing what is missing.
    Verify(VerifyArgs),
    /// Write containerd's registry hosts configuration (hosts.toml) from a k3s-style
    /// registries.yaml and other nodes' airlift registry endpoints (`--remove` undoes it).
    Mirrors(MirrorsArgs),
}

/// `airlift verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Images to check (default: every image labelled by airlift in the namespace).
    pub images: Vec<String>,
    /// containerd's socket, which also serves CRI (k3s: /run/k3s/containerd/containerd.sock).
    #[arg(
        long,
        short = 'a',
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: PathBuf,
    /// containerd namespace (CRI's is k8s.io; in any other, CRI is not asked).
    #[arg(
        long,
        short = 'n',
        env = "CONTAINERD_NAMESPACE",
        default_value = "k8s.io"
    )]
    pub namespace: String,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `airlift mirrors`.
#[derive(Args, Debug)]
pub struct MirrorsArgs {
    /// A k3s-style registries.yaml (`mirrors`: endpoints, rewrites; `configs`: TLS).
    #[arg(long, value_name = "FILE", conflicts_with = "remove")]
    pub registries: Option<PathBuf>,
    /// containerd's hosts directory, its `config_path` (k3s:
    /// /var/lib/rancher/k3s/agent/etc/containerd/certs.d).
    #[arg(long, value_name = "DIR", default_value = crate::mirrors::DEFAULT_HOSTS_DIR)]
    pub hosts_dir: PathBuf,
    /// Another node's airlift registry endpoint, `http(s)://HOST:PORT`, tried before the
    /// mirrors for every registry (repeatable, in order).
    #[arg(long = "peer", value_name = "URL", conflicts_with = "remove")]
    pub peers: Vec<String>,
    /// Take away the files airlift wrote: what they replaced is put back, the others deleted.
    #[arg(long)]
    pub remove: bool,
    /// Print the files that would be written; write nothing.
    #[arg(long, conflicts_with = "remove")]
    pub dry_run: bool,
}

fn mode_parser() -> impl TypedValueParser<Value = Mode> {
    PossibleValuesParser::new(["auto", "direct", "stream"])
        .map(|s| s.parse::<Mode>().expect("a listed mode"))
}

fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(["text", "json"])
        .map(|s| s.parse::<LogFormat>().expect("a listed format"))
}

/// The daemon's API socket.
#[derive(Args, Debug)]
pub struct SocketArgs {
    /// airlift's API socket.
    #[arg(long, default_value = "/run/airlift/airlift.sock")]
    pub socket: PathBuf,
}

/// `airlift status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Return as soon as this image is imported and pinned, startup import done or not
    /// (repeatable: all of them); e.g. `--image registry.k8s.io/pause:3.9`.
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,
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
    /// Intake directory (repeatable; replaces the configured list): archives are imported,
    /// then deleted; their images stay pinned until `airlift forget`.
    #[arg(long = "intake-dir", value_name = "DIR")]
    pub intake_dirs: Vec<PathBuf>,
    /// Seconds between verifications of every record against containerd (0: only after
    /// reconnecting).
    #[arg(long, value_name = "SECONDS")]
    pub resync_seconds: Option<u64>,
    /// containerd's registry hosts directory (hosts.toml files) for the pulls of `.txt` pull
    /// lists, e.g. /etc/containerd/certs.d.
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
    #[command(flatten)]
    pub unpack: UnpackArg,
    #[command(flatten)]
    pub verify: VerifyArg,
    /// Another node's registry endpoint (http://HOST:PORT or https://HOST:PORT, its CA and
    /// client certificate from the hosts directory) whose images are pulled and pinned here
    /// while it serves them (repeatable; replaces the configured list).
    #[arg(long = "follow", value_name = "URL")]
    pub follow: Vec<String>,
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
    #[arg(long, value_parser = log_format_parser())]
    pub log_format: Option<LogFormat>,
    /// Archives imported at the same time.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Settle interval in milliseconds.
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// How blobs reach containerd.
    #[arg(long, value_parser = mode_parser())]
    pub mode: Option<Mode>,
    /// Serve containerd's content store from DIR on the API socket (airlift as containerd's
    /// content proxy plugin; `[content_proxy] root` in the file).
    #[arg(long, value_name = "DIR")]
    pub content_proxy_root: Option<PathBuf>,
    /// Serve the namespace's images read-only over the OCI Distribution API on ADDR
    /// (host:port; `[registry] address` in the file).
    #[arg(long, value_name = "ADDR")]
    pub registry_address: Option<String>,
    /// Which images the registry endpoint serves: those airlift imported or pulled, or all.
    #[arg(long, value_name = "WHICH", value_parser = PossibleValuesParser::new(["airlift", "all"])
        .map(|s| s.parse::<crate::registry::Policy>().expect("a listed policy")))]
    pub registry_serve: Option<crate::registry::Policy>,
    /// The registry endpoint's certificate chain (PEM): HTTPS.
    #[arg(long, value_name = "FILE", requires = "registry_tls_key")]
    pub registry_tls_cert: Option<PathBuf>,
    /// The registry endpoint's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "registry_tls_cert")]
    pub registry_tls_key: Option<PathBuf>,
    /// Let in only registry clients with a certificate this CA (PEM) signed.
    #[arg(long, value_name = "FILE")]
    pub registry_client_ca: Option<PathBuf>,
}

/// `airlift import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The archive, a `.txt` pull list (one image reference per line), or `-` for standard input.
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
    #[arg(long, value_parser = mode_parser(), default_value = "auto")]
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
    /// containerd's registry hosts directory (hosts.toml files) for a `.txt` pull list's
    /// pulls, e.g. /etc/containerd/certs.d.
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
    #[command(flatten)]
    pub unpack: UnpackArg,
    #[command(flatten)]
    pub verify: VerifyArg,
}

impl ImportArgs {
    /// What the flags ask of the import (checked by [`Asked::options`]).
    pub fn asked(&self) -> Result<Asked, OptionsError> {
        let platforms = if self.all_platforms {
            vec!["all".to_string()]
        } else {
            self.platform.clone()
        };
        Ok(Asked {
            platforms,
            base_name: self.base_name.clone(),
            index_name: self.index_name.clone(),
            digest_refs: self.digest_refs,
            labels: self
                .label
                .iter()
                .map(|l| crate::service::options::label(l))
                .collect::<Result<_, _>>()?,
            pin: !self.no_pin,
            mode: self.mode,
            unpack: self.unpack.snapshotter.clone(),
            hosts_dir: self.hosts_dir.clone(),
            content_root: None,
            scratch_dir: Some(self.state_dir.clone()),
            pipes: true,
            verify: self.verify.over(crate::verify::Settings::default()),
        })
    }

    /// The import options the flags describe.
    pub fn options(&self) -> Result<ImportOptions, OptionsError> {
        self.asked()?.options()
    }
}

impl ServeArgs {
    /// The daemon's configuration: the file, then the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(self.config.as_deref())?;
        let set = |field: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *field = v.clone();
            }
        };
        set(&mut cfg.address, &self.address);
        set(&mut cfg.state_dir, &self.state_dir);
        set(&mut cfg.socket, &self.socket);
        if let Some(v) = &self.namespace {
            cfg.namespace = v.clone();
        }
        if !self.images_dirs.is_empty() {
            cfg.images_dirs = self.images_dirs.clone();
        }
        if !self.intake_dirs.is_empty() {
            cfg.intake_dirs = self.intake_dirs.clone();
        }
        if let Some(v) = self.resync_seconds {
            cfg.resync_seconds = v;
        }
        if let Some(v) = &self.hosts_dir {
            cfg.hosts_dir = Some(v.clone());
        }
        if let Some(v) = &self.unpack.snapshotter {
            cfg.unpack = Some(v.clone());
        }
        cfg.verify = self.verify.over(cfg.verify);
        if !self.follow.is_empty() {
            cfg.follow = self.follow.clone();
        }
        if let Some(v) = &self.metrics_address {
            cfg.metrics_address = v.clone();
        }
        if let Some(v) = self.log_format {
            cfg.log_format = v;
        }
        if let Some(v) = self.concurrency {
            cfg.concurrency = v;
        }
        if let Some(v) = self.settle_ms {
            cfg.settle_ms = v;
        }
        if let Some(v) = self.mode {
            cfg.mode = v;
        }
        if let Some(v) = &self.content_proxy_root {
            cfg.content_proxy.root = Some(v.clone());
        }
        if let Some(v) = &self.registry_address {
            cfg.registry.address = v.clone();
        }
        if let Some(v) = self.registry_serve {
            cfg.registry.serve = v;
        }
        if let Some(v) = &self.registry_tls_cert {
            cfg.registry.tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.registry_tls_key {
            cfg.registry.tls_key = Some(v.clone());
        }
        if let Some(v) = &self.registry_client_ca {
            cfg.registry.client_ca = Some(v.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn import_flags_become_options() {
        let Command::Import(a) = parse(&[
            "airlift",
            "import",
            "x.tar",
            "--platform",
            "linux/arm64",
            "--label",
            "a=b",
            "--no-pin",
            "--mode",
            "stream",
            "--base-name",
            "example.com/base",
        ])
        .command
        else {
            panic!("not an import")
        };
        let o = a.options().unwrap();
        assert!(
            matches!(o.plan.platforms, crate::platform::PlatformPolicy::Only(ref p) if p.len() == 1)
        );
        assert_eq!(o.labels["a"], "b");
        assert!(!o.pin);
        assert_eq!(o.mode, Mode::Stream);
        assert_eq!(o.plan.base_name.as_deref(), Some("example.com/base"));
        let Command::Import(a) = parse(&["airlift", "import", "x.tar", "--label", "=b"]).command
        else {
            panic!()
        };
        assert!(a.options().unwrap_err().to_string().contains("empty key"));
        assert!(Cli::try_parse_from(["airlift", "import", "x", "--mode", "fast"]).is_err());
    }

    #[test]
    fn serve_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "namespace = \"from-file\"\nconcurrency = 3\n").unwrap();
        let Command::Serve(a) = parse(&[
            "airlift",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--concurrency",
            "5",
            "--log-format",
            "json",
            "--registry-address",
            "127.0.0.1:5050",
            "--registry-serve",
            "all",
        ])
        .command
        else {
            panic!()
        };
        let c = a.config().unwrap();
        assert_eq!((c.namespace.as_str(), c.concurrency), ("from-file", 5));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.registry.address, "127.0.0.1:5050");
        assert_eq!(c.registry.serve, crate::registry::Policy::All);
    }
}

/// Verification at import, for `import` and `serve` (over `[verify]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VerifyArg {
    /// A containers-policy.json(5) file (e.g. /etc/containers/policy.json): images it does not
    /// allow, by the cosign signatures the archive carries, are not imported.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A digest lock: lines NAME@sha256:…; a listed name imports with exactly that digest.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// containerd's image verifier plugins (its bin_dir): each runs for every image, as
    /// containerd runs it on a pull.
    #[arg(long, value_name = "DIR")]
    pub verifier_bin_dir: Option<PathBuf>,
}

impl VerifyArg {
    /// `settings` with what the flags set.
    pub fn over(&self, mut settings: crate::verify::Settings) -> crate::verify::Settings {
        if let Some(p) = &self.policy {
            settings.policy = Some(p.clone());
        }
        if let Some(p) = &self.lock {
            settings.lock = Some(p.clone());
        }
        if let Some(p) = &self.verifier_bin_dir {
            settings.verifier_bin_dir = Some(p.clone());
        }
        settings
    }
}

/// `--unpack[=SNAPSHOTTER]`, for `import` and `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UnpackArg {
    /// Unpack the images into containerd's snapshotter as they are imported (overlayfs unless
    /// named: --unpack=native), so that containers start without unpacking.
    #[arg(
        long = "unpack",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = crate::unpack::DEFAULT_SNAPSHOTTER,
        value_name = "SNAPSHOTTER"
    )]
    pub snapshotter: Option<String>,
}
