//! `airlift mirrors`: containerd's registry hosts configuration (`hosts.toml` files under its
//! `config_path`, e.g. `/etc/containerd/certs.d`) written from a k3s-style `registries.yaml`
//! and the airlift registry endpoints of other nodes (peers), so that containerd pulls from the
//! peers first, then the mirrors, and — always — from the image's own registry last.
//!
//! A straight line: [`registries`] (the YAML, as a model) → [`hosts`] (the files to write, as
//! text; pure) → [`files`] (written atomically, what they replace kept, taken away again).
//! `airlift mirrors` and `airlift serve` (its `[mirrors]` table, at start) both call [`apply`].

pub mod files;
pub mod hosts;
pub mod registries;

pub use files::{Action, Change, BACKUP};
pub use registries::Registries;

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
        cause: String,
    },
    /// A value in the registries file is not usable (an endpoint that is not a URL...).
    #[error("{}: {what}", crate::escape::shown(path))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and what is wrong with it.
        what: String,
    },
    /// A peer is not an `http(s)://host:port` URL.
    #[error("peer {url:?}: {why}")]
    Peer {
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
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
    peers.iter().try_for_each(|p| hosts::peer(p).map(|_| ()))
}

/// The files `opts` describes, directory name → text, and the warnings; nothing is written.
pub fn render(opts: &Options) -> Result<(BTreeMap<String, String>, Vec<String>), MirrorError> {
    let peers = opts
        .peers
        .iter()
        .map(|p| hosts::peer(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (registries, source) = match &opts.registries {
        Some(path) => (Registries::load(path)?, path.clone()),
        None => (Registries::default(), PathBuf::from("(no registries file)")),
    };
    let (planned, warnings) = hosts::plan(&registries, &peers, &source)?;
    let mut described = crate::escape::shown(&source).to_string();
    if !peers.is_empty() {
        let list: Vec<&str> = peers.iter().map(|p| p.url.as_str()).collect();
        described.push_str(&format!(" and peers {}", list.join(", ")));
    }
    let files = planned
        .iter()
        .map(|f| (f.dir.clone(), hosts::render(f, &described)))
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
