//! `airlift mirrors`: containerd's registry hosts configuration (`hosts.toml` files under its
//! `config_path`, e.g. `/etc/containerd/certs.d`) written from a k3s-style `registries.yaml`
//! and the airlift registry endpoints of other nodes (peers), so that containerd pulls from the
//! peers first, then the mirrors, and — always — from the image's own registry last.
//!
//! A straight line: [`registries`] (the YAML, as a model) → [`plan`] (the files to write; pure,
//! their text [`crate::hosts::write`]'s) → [`files`] (written atomically, what they replace
//! kept, taken away again).
//! `airlift mirrors` and `airlift serve` (its `[mirrors]` table, at start) both call [`apply`].

pub mod files;
pub mod plan;
pub mod registries;

pub use files::{Action, Change, BACKUP};
pub use registries::Registries;

use crate::hosts::EndpointError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// containerd's conventional hosts directory (`config_path`); k3s uses
/// `/var/lib/rancher/k3s/agent/etc/containerd/certs.d`, rke2 the same under `rke2`.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The registries.yaml; none: only the peers (for every registry, through `_default`).
    pub registries: Option<PathBuf>,
    /// containerd's hosts directory.
    pub hosts_dir: PathBuf,
    /// Other nodes' airlift registry endpoints (`http://10.0.0.5:5050`), tried first.
    pub peers: Vec<String>,
}

/// What [`apply`] or [`remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every file looked at and what happened to it.
    pub changes: Vec<Change>,
    /// What the input asked for that hosts.toml cannot express, and files left alone.
    pub warnings: Vec<String>,
}

/// A failure, naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The registries file could not be read.
    #[error("{}: {cause}", crate::escape::shown(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The registries file is not valid YAML of the expected shape.
    #[error("{}: {cause}", crate::escape::shown(path))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        cause: serde_yaml_ng::Error,
    },
    /// A registry named in the file is not `host[:port]` (or `*`).
    #[error(
        "{}: registry {registry:?} is not a registry host[:port] (or \"*\"): {cause}",
        crate::escape::shown(path)
    )]
    Registry {
        /// The file.
        path: PathBuf,
        /// The registry, as named.
        registry: String,
        /// What is wrong.
        cause: EndpointError,
    },
    /// A mirror endpoint is not an endpoint URL.
    #[error(
        "{}: mirrors.\"{registry}\".endpoint[{index}] {raw:?} is not an endpoint URL: {cause}",
        crate::escape::shown(path)
    )]
    Endpoint {
        /// The file.
        path: PathBuf,
        /// The registry mirrored.
        registry: String,
        /// Its position in the list.
        index: usize,
        /// As written.
        raw: String,
        /// What is wrong.
        cause: EndpointError,
    },
    /// A rewrite's pattern is not a regular expression.
    #[error(
        "{}: mirrors.\"{registry}\".rewrite: {pattern:?} is not a regular expression: {cause}",
        crate::escape::shown(path)
    )]
    Rewrite {
        /// The file.
        path: PathBuf,
        /// The registry mirrored.
        registry: String,
        /// The pattern.
        pattern: String,
        /// The regex crate's complaint.
        cause: regex::Error,
    },
    /// A host's TLS names a key and no certificate.
    #[error(
        "{}: configs.\"{host}\".tls: key_file without cert_file",
        crate::escape::shown(path)
    )]
    KeyWithoutCert {
        /// The file.
        path: PathBuf,
        /// The host.
        host: String,
    },
    /// A peer is not an endpoint URL.
    #[error("peer {url:?}: {cause}")]
    Peer {
        /// As given.
        url: String,
        /// What is wrong.
        cause: EndpointError,
    },
    /// A peer without a scheme.
    #[error(
        "peer {url:?}: give the scheme: http://HOST:PORT, or https:// for an endpoint with TLS"
    )]
    PeerScheme {
        /// As given.
        url: String,
    },
    /// A peer with a path.
    #[error("peer {url:?}: an airlift registry endpoint has no path (its API is at /v2)")]
    PeerPath {
        /// As given.
        url: String,
    },
    /// A file or directory of the hosts directory could not be read or written.
    #[error("{}: {what}: {cause}", crate::escape::shown(path))]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        cause: std::io::Error,
    },
}

/// Checks the peers (for configuration validation).
pub fn check_peers(peers: &[String]) -> Result<(), MirrorError> {
    peers.iter().try_for_each(|p| plan::peer(p).map(|_| ()))
}

/// The files `opts` describes, directory name → text, and the warnings; nothing is written.
pub fn render(opts: &Options) -> Result<(BTreeMap<String, String>, Vec<String>), MirrorError> {
    let peers = opts
        .peers
        .iter()
        .map(|p| plan::peer(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (registries, source) = match &opts.registries {
        Some(path) => (Registries::load(path)?, path.clone()),
        None => (Registries::default(), PathBuf::from("(no registries file)")),
    };
    let (planned, warnings) = plan::plan(&registries, &peers, &source)?;
    let mut described = crate::escape::shown(&source).to_string();
    if !peers.is_empty() {
        let list: Vec<&str> = peers.iter().map(|p| p.url.as_str()).collect();
        described.push_str(&format!(" and peers {}", list.join(", ")));
    }
    let files = planned
        .iter()
        .map(|f| (f.dir.clone(), crate::hosts::write::render(f, &described)))
        .collect();
    Ok((files, warnings))
}

/// Writes the hosts directory `opts` describes: every registry's `hosts.toml` (files replaced
/// kept in [`BACKUP`] beside them), and airlift's files of registries no longer described
/// taken away.
pub fn apply(opts: &Options) -> Result<Report, MirrorError> {
    let (files, mut warnings) = render(opts)?;
    let changes = files::write_all(&opts.hosts_dir, &files, &mut warnings)?;
    Ok(Report { changes, warnings })
}

/// Takes away every `hosts.toml` airlift wrote under `hosts_dir`: what it replaced is put back,
/// the others are deleted. Files airlift did not write are left alone.
pub fn remove(hosts_dir: &Path) -> Result<Report, MirrorError> {
    let mut warnings = Vec::new();
    let changes = files::remove_all(hosts_dir, &mut warnings)?;
    Ok(Report { changes, warnings })
}

#[cfg(test)]
mod tests;
