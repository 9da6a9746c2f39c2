//! Configuration of `airlift serve`: a TOML file whose every key is optional, overridden by
//! command-line flags. Unknown keys and bad values are errors at startup.

use crate::import::Mode;
use crate::platform::PlatformPolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/airlift/config.toml";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = crate::error::UnknownName;

    fn from_str(s: &str) -> Result<LogFormat, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(crate::error::UnknownName::new(
                "log format",
                other,
                "text or json",
            )),
        }
    }
}

/// The daemon's settings. See `config/airlift.toml` for the annotated example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// containerd's socket.
    pub address: PathBuf,
    /// containerd namespace.
    pub namespace: String,
    /// Directories watched for archives.
    pub images_dirs: Vec<PathBuf>,
    /// Intake directories: an archive is imported like any other, then deleted once the import
    /// succeeded; its images stay pinned (and held by its lease) until `airlift forget`.
    pub intake_dirs: Vec<PathBuf>,
    /// Glob patterns on archive file names (`pause*`, `*cni*.tar.zst`): matching archives are
    /// imported first, in the order of the first pattern they match, then the rest by age.
    pub priority: Vec<String>,
    /// Seconds between verifications of every record against containerd while running, which
    /// catch what events missed (0: only after each reconnect).
    pub resync_seconds: u64,
    /// containerd's registry hosts directory (hosts.toml files, `certs.d`) the images of `.txt`
    /// pull lists are pulled through; containerd's default hosts when unset.
    pub hosts_dir: Option<PathBuf>,
    /// Unpack imported images into this snapshotter (`overlayfs`), so that containers start
    /// without unpacking; off when unset.
    pub unpack: Option<String>,
    /// Other nodes' registry endpoints (`http://10.0.0.5:5050`) whose images are pulled and
    /// pinned here, as long as they serve them.
    pub follow: Vec<String>,
    /// Seconds between listings of a followed peer.
    pub follow_seconds: u64,
    /// Seconds an image a followed peer no longer serves keeps its pin (an unreachable peer
    /// changes nothing).
    pub follow_grace_seconds: u64,
    /// Where airlift records what it imported.
    pub state_dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// Prometheus metrics listen address (`host:port`); off when empty.
    pub metrics_address: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Archives imported at the same time.
    pub concurrency: usize,
    /// How long a new or changed file must stay unchanged before it is imported, in milliseconds.
    pub settle_ms: u64,
    /// Platforms: empty for what the host runs, `["all"]` for everything, or a list such as
    /// `["linux/amd64", "linux/arm64/v8"]`.
    pub platforms: Vec<String>,
    /// Platforms this node stores and serves to other nodes without running them (a seed of a
    /// mixed-architecture cluster): `["linux/arm64"]`, `["all"]`; none by default. Their
    /// content is imported, held and pinned with the rest, but not unpacked, and an image of
    /// served platforms alone is not one `airlift wait --image` counts as this node's.
    pub serve_platforms: Vec<String>,
    /// Pin imported images.
    pub pin: bool,
    /// Extra labels for every imported image.
    pub labels: BTreeMap<String, String>,
    /// Also create `<repository>@sha256:…` names.
    pub digest_refs: bool,
    /// How blobs reach containerd.
    pub mode: Mode,
    /// `[content_proxy]`: serve containerd's content store (containerd's `[proxy_plugins]`).
    pub content_proxy: ContentProxy,
    /// `[registry]`: serve the namespace's images read-only over the OCI Distribution API.
    pub registry: Registry,
    /// `[mirrors]`: containerd's hosts.toml files written at start (`airlift mirrors`).
    pub mirrors: Mirrors,
    /// `[verify]`: signatures and policy checked at import (`airlift import --policy`).
    pub verify: crate::verify::Settings,
}

/// The `[mirrors]` table: at start the daemon writes containerd's `hosts.toml` files, as
/// `airlift mirrors` does. Off while neither `registries` nor `peers` is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mirrors {
    /// A k3s-style registries.yaml (`/etc/rancher/k3s/registries.yaml`).
    pub registries: Option<PathBuf>,
    /// containerd's hosts directory (its `config_path`).
    pub hosts_dir: PathBuf,
    /// Other nodes' airlift registry endpoints (`http://10.0.0.5:5050`), tried first.
    pub peers: Vec<String>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            registries: None,
            hosts_dir: crate::mirrors::DEFAULT_HOSTS_DIR.into(),
            peers: Vec::new(),
        }
    }
}

impl Mirrors {
    /// What `airlift mirrors` would be given; none when the table is off.
    pub fn options(&self) -> Option<crate::mirrors::Options> {
        (self.registries.is_some() || !self.peers.is_empty()).then(|| crate::mirrors::Options {
            registries: self.registries.clone(),
            hosts_dir: self.hosts_dir.clone(),
            peers: self.peers.clone(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.options().is_none() {
            return Ok(());
        }
        if let Some(r) = self.registries.as_ref().filter(|r| !r.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "mirrors.registries {} is not an absolute path",
                crate::escape::shown(r)
            )));
        }
        if !self.hosts_dir.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "mirrors.hosts_dir {} is not an absolute path",
                crate::escape::shown(&self.hosts_dir)
            )));
        }
        crate::mirrors::check_peers(&self.peers)
            .map_err(|e| ConfigError::Invalid(format!("mirrors.peers: {e}")))
    }
}

/// The `[registry]` table: the read-only registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    /// Listen address (`host:port`); off when empty.
    pub address: String,
    /// Which images: `airlift` (those airlift imported or pulled) or `all`.
    pub serve: crate::registry::Policy,
    /// The server's certificate chain (PEM): HTTPS instead of plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM): only clients with a certificate it signed are let in.
    pub client_ca: Option<PathBuf>,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// Each connection's socket send buffer in KiB; 0 leaves it to the kernel's autotuning.
    pub send_buffer_kib: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            address: String::new(),
            serve: crate::registry::Policy::Airlift,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            max_connections: 512,
            send_buffer_kib: 0,
        }
    }
}

/// The `[content_proxy]` table: airlift as containerd's content store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentProxy {
    /// The store's directory, in containerd's content layout (e.g. an existing
    /// `/var/lib/containerd/io.containerd.content.v1.content`). Unset: no content service.
    pub root: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: "/run/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            images_dirs: vec!["/var/lib/rancher/k3s/agent/images".into()],
            intake_dirs: Vec::new(),
            priority: Vec::new(),
            resync_seconds: 300,
            hosts_dir: None,
            unpack: None,
            follow: Vec::new(),
            follow_seconds: 60,
            follow_grace_seconds: 600,
            state_dir: "/var/lib/airlift".into(),
            socket: "/run/airlift/airlift.sock".into(),
            metrics_address: String::new(),
            log_format: LogFormat::Text,
            concurrency: 2,
            settle_ms: 1000,
            platforms: Vec::new(),
            serve_platforms: Vec::new(),
            pin: true,
            labels: BTreeMap::new(),
            digest_refs: false,
            mode: Mode::Auto,
            content_proxy: ContentProxy::default(),
            registry: Registry::default(),
            mirrors: Mirrors::default(),
            verify: crate::verify::Settings::default(),
        }
    }
}

impl Registry {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.address.is_empty() {
            return Ok(());
        }
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "registry.address {:?} is not host:port",
                self.address
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "registry.tls_cert and registry.tls_key go together".into(),
            ));
        }
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::Invalid(
                "registry.client_ca needs registry.tls_cert and registry.tls_key".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "registry.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid.
    #[error("config {path}: {}", .cause.detail())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        cause: Box<ConfigError>,
    },
    /// Not TOML, or not the keys and types of the configuration.
    #[error("config: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A platform is not `os/arch[/variant]`.
    #[error("config: {0}")]
    Platform(#[from] crate::platform::InvalidPlatform),
    /// `unpack` does not name a snapshotter.
    #[error("config: {0}")]
    Snapshotter(#[from] crate::unpack::UnpackError),
    /// A `follow` peer is not an endpoint.
    #[error("config: {0}")]
    Peer(#[from] crate::pull::follow::FollowError),
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// What is wrong, without saying where.
    fn detail(&self) -> String {
        match self {
            ConfigError::Read { cause, .. } => cause.to_string(),
            ConfigError::File { cause, .. } => cause.detail(),
            ConfigError::Syntax(e) => e.to_string(),
            ConfigError::Platform(e) => e.to_string(),
            ConfigError::Snapshotter(e) => e.to_string(),
            ConfigError::Peer(e) => e.to_string(),
            ConfigError::Invalid(why) => why.clone(),
        }
    }
}

impl Config {
    /// Loads `path`. A missing file at the default path means all defaults; a missing file that
    /// was named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(cause) => return Err(ConfigError::Read { path, cause }),
        };
        Config::parse(&text).map_err(|cause| ConfigError::File {
            path,
            cause: Box::new(cause),
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(sn) = &self.unpack {
            crate::unpack::valid_snapshotter(sn)?;
        }
        for url in &self.follow {
            crate::pull::follow::Peer::parse(url)?;
        }
        if self.follow_seconds == 0 {
            return Err(ConfigError::Invalid(
                "follow_seconds must be at least 1".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.images_dirs.is_empty() && self.intake_dirs.is_empty() {
            return Err(ConfigError::Invalid(
                "images_dirs and intake_dirs are both empty".into(),
            ));
        }
        if let Some(d) = self
            .intake_dirs
            .iter()
            .find(|d| self.images_dirs.contains(d))
        {
            return Err(ConfigError::Invalid(format!(
                "{} is both an images directory and an intake directory",
                crate::escape::shown(&d)
            )));
        }
        self.priority_set()?;
        if self.namespace.is_empty() {
            return Err(ConfigError::Invalid("namespace is empty".into()));
        }
        if !self.metrics_address.is_empty()
            && self
                .metrics_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "metrics_address {:?} is not host:port",
                self.metrics_address
            )));
        }
        if let Some(root) = &self.content_proxy.root {
            if !root.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "content_proxy.root {} is not an absolute path",
                    crate::escape::shown(&root)
                )));
            }
        }
        self.platform_policy()?;
        PlatformPolicy::parse_served(&self.serve_platforms).map_err(|e| {
            ConfigError::Invalid(format!(
                "serve_platforms: {e} (\"all\" may only stand alone)"
            ))
        })?;
        self.registry.validate()?;
        self.mirrors.validate()?;
        Ok(())
    }

    /// The platform policy the `platforms` key names ([`PlatformPolicy::parse`]).
    pub fn platform_policy(&self) -> Result<PlatformPolicy, crate::platform::InvalidPlatform> {
        PlatformPolicy::parse(&self.platforms)
    }

    /// The priority patterns, compiled.
    pub fn priority_set(&self) -> Result<Vec<globset::GlobMatcher>, ConfigError> {
        self.priority
            .iter()
            .map(|p| {
                globset::Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| ConfigError::Invalid(format!("priority pattern {p:?}: {e}")))
            })
            .collect()
    }

    /// Whether `path` is in one of the intake directories.
    pub fn is_intake(&self, path: &Path) -> bool {
        path.parent()
            .is_some_and(|d| self.intake_dirs.iter().any(|i| i == d))
    }

    /// Every watched directory: images directories, then intake directories.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let follow = (!self.follow.is_empty()).then(|| crate::pull::follow::dir(&self.state_dir));
        self.images_dirs
            .iter()
            .chain(&self.intake_dirs)
            .cloned()
            .chain(follow)
            .collect()
    }

    /// The settle interval.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

#[cfg(test)]
mod tests;
