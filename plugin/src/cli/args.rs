//! The command line's arguments, and what they turn into: import options for `airlift import`, a
//! configuration for `airlift serve` (the file, then the flags).

use crate::config::{Config, ConfigError, LogFormat};
use crate::import::{ImportOptions, Mode};
use crate::service::options::{Asked, OptionsError};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// What `airlift --version` says after the name: the version and the commit it was built from
/// (`0.1.0 (0123456789ab)`; the build script's `AIRLIFT_COMMIT`, "unknown" outside git).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AIRLIFT_COMMIT"), ")");

/// Imports container image archives into containerd with minimal copying.
#[derive(Parser, Debug)]
#[command(name = "airlift", version = VERSION, about, long_about = None)]
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
    /// Write the man pages or a shell's completions (for packaging; hidden).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// `airlift generate`: files made from this command line, for the release tarball and the
/// .deb (`integration/dist.sh`). Hidden: a packaged airlift installs them already.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write.
    #[command(subcommand)]
    pub what: Generate,
}

/// What `airlift generate` writes.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// A man page per command (airlift.1, airlift-import.1, …) into DIR.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// SHELL's completions into DIR (airlift.bash, _airlift, airlift.fish, …), or to standard
    /// output without DIR.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        /// The directory (created if missing).
        dir: Option<PathBuf>,
    },
}

/// `airlift verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Images to check (default: every image labelled by airlift in the namespace).
    pub images: Vec<String>,
    /// containerd's socket and namespace (CRI is asked in k8s.io only).
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// A platform this node serves (as `serve_platforms`; os/arch[/variant], or `all`):
    /// of every multi-arch image, the manifest a node of that platform would pull must be here,
    /// with its config and layers, each labelled. Repeatable.
    #[arg(long, value_name = "PLATFORM")]
    pub serve_platform: Vec<String>,
}

/// containerd's socket and namespace, as `ctr` takes them (`--address`, `--namespace` and the
/// same environment variables), for the commands that talk to containerd themselves.
#[derive(Args, Debug, Clone)]
pub struct ContainerdArgs {
    /// containerd's socket, which also serves CRI (k3s: /run/k3s/containerd/containerd.sock).
    #[arg(
        long,
        short = 'a',
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: PathBuf,
    /// containerd namespace (kubelet's, and CRI's, is k8s.io).
    #[arg(
        long,
        short = 'n',
        env = "CONTAINERD_NAMESPACE",
        default_value = "k8s.io"
    )]
    pub namespace: String,
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
    /// containerd's socket and namespace.
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    /// Import this platform (os/arch[/variant]); repeatable. Default: what this host runs.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Import every platform in the archive.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Also store this platform's content (os/arch[/variant], or `all`) to serve it to other
    /// nodes (through Spegel or airlift's registry endpoint) without running it: of a multi-arch
    /// index, the manifest a node of that platform would pull, with its config and layers —
    /// held, labelled and pinned like the rest, never unpacked; an image of served platforms
    /// alone is not counted as this node's. Repeatable. A platform this host runs is run.
    #[arg(long, value_name = "PLATFORM")]
    pub serve_platform: Vec<String>,
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
            serve_platforms: self.serve_platform.clone(),
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

    fn import(args: &[&str]) -> ImportArgs {
        match Cli::try_parse_words(args).unwrap().command {
            Command::Import(a) => a,
            c => panic!("not an import: {c:?}"),
        }
    }

    #[test]
    fn unpack_takes_a_snapshotter_with_a_space_an_equals_sign_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("overlayfs");
        std::fs::write(&existing, b"").unwrap();
        let existing = existing.to_str().unwrap();
        // (command line after `airlift import`, snapshotter, archive)
        let cases: &[(&[&str], Option<&str>, &str)] = &[
            (&["--unpack", "native", "x.tar"], Some("native"), "x.tar"),
            (&["--unpack=native", "x.tar"], Some("native"), "x.tar"),
            (
                &["--unpack", "fuse-overlayfs", "x.tar"],
                Some("fuse-overlayfs"),
                "x.tar",
            ),
            (&["--unpack", "x.tar"], Some("overlayfs"), "x.tar"),
            (&["x.tar", "--unpack"], Some("overlayfs"), "x.tar"),
            (
                &["--unpack", "images/x.tar.zst"],
                Some("overlayfs"),
                "images/x.tar.zst",
            ),
            (&["--unpack", "-"], Some("overlayfs"), "-"),
            (
                &["--unpack", "--no-pin", "x.tar"],
                Some("overlayfs"),
                "x.tar",
            ),
            // An existing file is the archive, whatever its name.
            (&["--unpack", existing], Some("overlayfs"), existing),
            (&["x.tar"], None, "x.tar"),
            // After `--`, a word is never the snapshotter.
            (&["--unpack", "--", "native"], Some("overlayfs"), "native"),
        ];
        for (words, snapshotter, file) in cases {
            let argv = [&["airlift", "import"][..], *words].concat();
            let a = import(&argv);
            assert_eq!(a.unpack.snapshotter.as_deref(), *snapshotter, "{words:?}");
            assert_eq!(a.file, *file, "{words:?}");
        }
        // A snapshotter's name and no archive: the archive is missing, said by clap.
        assert!(Cli::try_parse_words(["airlift", "import", "--unpack", "native"]).is_err());
        let Command::Serve(s) = Cli::try_parse_words(["airlift", "serve", "--unpack", "native"])
            .unwrap()
            .command
        else {
            panic!("not serve")
        };
        assert_eq!(s.unpack.snapshotter.as_deref(), Some("native"));
    }

    #[test]
    fn version_names_the_commit() {
        let e = Cli::try_parse_from(["airlift", "--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let said = e.render().to_string();
        let want = format!("airlift {} (", env!("CARGO_PKG_VERSION"));
        assert!(said.starts_with(&want), "{said}");
        let commit = said.trim_end().strip_prefix(&want).unwrap();
        let commit = commit.strip_suffix(')').unwrap();
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()))
                || Some(commit) == option_env!("AIRLIFT_COMMIT"),
            "{said}"
        );
    }

    #[test]
    fn snapshotter_words() {
        for w in ["overlayfs", "native", "fuse-overlayfs", "zfs", "my_snap2"] {
            assert!(is_snapshotter_word(w), "{w}");
        }
        for w in ["", "-", "x.tar", "a/b", "Overlay", "2fs", "-x", "/tmp"] {
            assert!(!is_snapshotter_word(w), "{w}");
        }
    }

    #[test]
    fn import_and_verify_share_the_containerd_flags() {
        let a = import(&[
            "airlift",
            "import",
            "-a",
            "/run/k3s.sock",
            "-n",
            "ns",
            "x.tar",
        ]);
        assert_eq!(a.containerd.address, PathBuf::from("/run/k3s.sock"));
        assert_eq!(a.containerd.namespace, "ns");
        let Command::Verify(v) = parse(&["airlift", "verify", "--address", "/s", "img"]).command
        else {
            panic!("not verify")
        };
        assert_eq!(v.containerd.address, PathBuf::from("/s"));
        assert_eq!(v.containerd.namespace, "k8s.io");
        assert_eq!(v.images, ["img"]);
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

/// `--unpack[=SNAPSHOTTER]`, for `import` and `serve`; `--unpack SNAPSHOTTER` too, by the
/// rule of [`unpack_words`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UnpackArg {
    /// Unpack the images into containerd's snapshotter as they are imported (overlayfs unless
    /// named: --unpack=native or --unpack native), so that containers start without unpacking.
    /// The word after a bare --unpack is the snapshotter only if it is a snapshotter's name
    /// (lowercase letters, digits, '-' and '_', starting with a letter) and no file of that
    /// name exists: `--unpack images.tar` takes images.tar as the archive.
    #[arg(
        long = "unpack",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = crate::unpack::DEFAULT_SNAPSHOTTER,
        value_name = "SNAPSHOTTER"
    )]
    pub snapshotter: Option<String>,
}

/// Whether `word` names a snapshotter rather than an archive: lowercase letters, digits, `-` and
/// `_`, starting with a letter (containerd's snapshotters: overlayfs, native, btrfs, zfs,
/// devmapper, erofs, fuse-overlayfs, stargz, nydus, soci…), and no file of that name here.
/// An archive's name has a dot, a slash or is `-` almost always; one that has none is still
/// an archive when it exists.
pub fn is_snapshotter_word(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && std::fs::symlink_metadata(word).is_err()
}

/// The command line as clap should read it: `--unpack WORD`, as `ctr --snapshotter overlayfs`
/// is written, becomes `--unpack=WORD` when WORD [names a snapshotter](is_snapshotter_word);
/// otherwise `--unpack` stays bare (the default snapshotter) and WORD is read as what it is
/// (`airlift import --unpack images.tar`: the archive). clap itself cannot decide this: an
/// optional value is taken or not by position, never by what it is. Nothing after `--` is
/// touched.
pub fn unpack_words<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut words = args.into_iter().map(Into::into).peekable();
    while let Some(word) = words.next() {
        if word == "--" {
            out.push(word);
            out.extend(words);
            break;
        }
        if word == "--unpack" {
            if let Some(next) = words.peek().and_then(|n| n.to_str()) {
                if is_snapshotter_word(next) {
                    let joined = format!("--unpack={next}");
                    words.next();
                    out.push(joined.into());
                    continue;
                }
            }
        }
        out.push(word);
    }
    out
}

impl Cli {
    /// The command line parsed, `--unpack WORD` read by the rule of [`unpack_words`].
    pub fn try_parse_words<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Self::try_parse_from(unpack_words(args))
    }
}
