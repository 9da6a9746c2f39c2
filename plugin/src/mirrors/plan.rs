//! From a [`Registries`] model and the peers to the `hosts.toml` files to write: which registry
//! directories get a file, the `[host."…"]` entries in the order they are tried (peers, then the
//! mirror endpoints), the TLS keys hosts.toml can carry, and the one rule that keeps the
//! fallback working — the top-level `server` is always the registry's own upstream
//! (`https://registry-1.docker.io` for docker.io, `""` for `_default`: the image's own
//! registry), never a mirror. Endpoints are read as k3s reads them, through
//! [`crate::hosts::Endpoint`]; the files' text is [`crate::hosts::write`]'s.

use super::registries::{HostConfig, Registries};
use super::MirrorError;
use crate::hosts::write::{HostEntry, HostsFile, TlsKeys};
use crate::hosts::{self, EndpointError, Scheme};
use std::collections::BTreeMap;
use std::path::Path;

/// How long containerd tries to connect to a peer before moving on to the next host.
pub const PEER_DIAL_TIMEOUT: &str = "2s";

/// An endpoint, normalised as containerd and k3s read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port][/path]`, the path cleaned, `/`, `/v2` and no path all written as
    /// no path.
    pub url: String,
    /// The host as `configs` names it (`docker.io` for `registry-1.docker.io`).
    pub config_host: String,
    /// Whether the URL has a path.
    pub has_path: bool,
    /// Whether containerd must be told the path is the API root.
    pub override_path: bool,
}

/// Reads an endpoint as k3s does: `host[:port]` or `http(s)://host[:port][/path]`; no scheme
/// means https, or http for localhost on a port other than 443; `docker.io` is
/// `registry-1.docker.io`.
pub fn endpoint(raw: &str) -> Result<Endpoint, EndpointError> {
    hosts::Endpoint::parse(raw).map(normalised)
}

/// `e` as k3s writes it into hosts.toml.
fn normalised(e: hosts::Endpoint) -> Endpoint {
    let authority = e.authority();
    let scheme = e
        .scheme
        .unwrap_or(if hosts::plain_http_by_default(&authority) {
            Scheme::Http
        } else {
            Scheme::Https
        });
    let path = if e.path == "/v2" { "" } else { e.path.as_str() };
    let (host, config_host) = match authority.as_str() {
        "docker.io" | "registry-1.docker.io" => ("registry-1.docker.io", "docker.io"),
        a => (a, a),
    };
    Endpoint {
        url: format!("{scheme}://{host}{path}"),
        config_host: config_host.to_string(),
        has_path: !path.is_empty(),
        override_path: !path.is_empty() && !path.ends_with("/v2"),
    }
}

/// A peer (another node's airlift registry endpoint): `http(s)://host:port`, nothing else.
pub fn peer(raw: &str) -> Result<Endpoint, MirrorError> {
    let url = raw.to_string();
    let e = hosts::Endpoint::parse(raw).map_err(|cause| MirrorError::Peer {
        url: url.clone(),
        cause,
    })?;
    if e.scheme.is_none() {
        return Err(MirrorError::PeerScheme { url });
    }
    let e = normalised(e);
    if e.has_path {
        return Err(MirrorError::PeerPath { url });
    }
    Ok(e)
}

/// The registry's own upstream as containerd would reach it without a hosts.toml.
fn upstream(registry: &str) -> String {
    match registry {
        "*" => String::new(),
        r => {
            let (scheme, authority) = hosts::upstream(r);
            format!("{scheme}://{authority}")
        }
    }
}

/// containerd's directory name for a registry: `host:port` is `host_port_`, `*` `_default`.
fn directory(registry: &str) -> String {
    match registry {
        "*" => "_default".into(),
        r => hosts::directory(r),
    }
}

fn tls_of(
    configs: &BTreeMap<String, HostConfig>,
    hosts: &[&str],
    source: &Path,
) -> Result<TlsKeys, MirrorError> {
    let Some((host, tls)) = hosts.iter().find_map(|h| {
        configs
            .get(*h)
            .and_then(|c| c.tls.as_ref())
            .map(|t| (*h, t))
    }) else {
        return Ok(TlsKeys::default());
    };
    let client = match (&tls.cert_file, &tls.key_file) {
        (Some(c), k) => Some((c.clone(), k.clone())),
        (None, Some(_)) => {
            return Err(MirrorError::KeyWithoutCert {
                path: source.to_path_buf(),
                host: host.to_string(),
            })
        }
        (None, None) => None,
    };
    Ok(TlsKeys {
        ca: tls.ca_file.clone(),
        client,
        skip_verify: tls.insecure_skip_verify,
    })
}

/// The files to write for `registries` (read from `source`) and `peers`, and the warnings
/// about what hosts.toml cannot express.
pub fn plan(
    registries: &Registries,
    peers: &[Endpoint],
    source: &Path,
) -> Result<(Vec<HostsFile>, Vec<String>), MirrorError> {
    let shown = crate::escape::shown(source);
    let mut warnings = Vec::new();
    for (host, c) in &registries.configs {
        if c.auth.is_some() {
            warnings.push(format!(
                "{shown}: configs.\"{host}\".auth: hosts.toml cannot carry credentials, so they \
                 are not written; give them to containerd's CRI (registry configs) or to kubelet \
                 (image pull secrets)"
            ));
        }
    }
    // Every registry named, and `*` whenever peers serve everything else.
    let mut names: Vec<&str> = registries
        .mirrors
        .keys()
        .chain(registries.configs.keys())
        .map(String::as_str)
        .collect();
    if !peers.is_empty() {
        names.push("*");
    }
    names.sort();
    names.dedup();
    let mut files = Vec::new();
    for name in names {
        if name != "*" {
            hosts::Endpoint::authority_only(name).map_err(|cause| MirrorError::Registry {
                path: source.to_path_buf(),
                registry: name.to_string(),
                cause,
            })?;
        }
        let mirror = registries.mirrors.get(name);
        let mut hosts: Vec<HostEntry> = Vec::new();
        for p in peers {
            if !hosts.iter().any(|h| h.url == p.url) {
                hosts.push(HostEntry {
                    url: p.url.clone(),
                    override_path: false,
                    tls: tls_of(&registries.configs, &[&p.config_host], source)?,
                    rewrite: BTreeMap::new(),
                    dial_timeout: Some(PEER_DIAL_TIMEOUT),
                });
            }
        }
        let server = upstream(name);
        if let Some(m) = mirror {
            for pattern in m.rewrite.keys() {
                regex::Regex::new(pattern).map_err(|cause| MirrorError::Rewrite {
                    path: source.to_path_buf(),
                    registry: name.to_string(),
                    pattern: pattern.clone(),
                    cause,
                })?;
            }
            if !m.rewrite.is_empty() {
                warnings.push(format!(
                    "{shown}: mirrors.\"{name}\".rewrite: containerd's hosts.toml has no \
                     rewrite; written as [host.\"…\".rewrite] for k3s's containerd, which \
                     applies it — upstream containerd ignores it and asks the mirrors for the \
                     name unchanged"
                ));
            }
            for (i, raw) in m.endpoint.iter().enumerate() {
                let e = endpoint(raw).map_err(|cause| MirrorError::Endpoint {
                    path: source.to_path_buf(),
                    registry: name.to_string(),
                    index: i,
                    raw: raw.clone(),
                    cause,
                })?;
                if e.url == server && i + 1 == m.endpoint.len() {
                    // The upstream itself, last: the top-level entry already is it.
                    continue;
                }
                if hosts.iter().any(|h| h.url == e.url) {
                    warnings.push(format!(
                        "{shown}: mirrors.\"{name}\".endpoint[{i}] {raw:?}: {} is already \
                         listed (a peer or an earlier endpoint); skipped",
                        e.url
                    ));
                    continue;
                }
                let config_host = e.config_host.clone();
                let alias = (config_host == "docker.io").then_some("registry-1.docker.io");
                let lookup: Vec<&str> = alias.into_iter().chain([config_host.as_str()]).collect();
                hosts.push(HostEntry {
                    url: e.url,
                    override_path: e.override_path,
                    tls: tls_of(&registries.configs, &lookup, source)?,
                    rewrite: m.rewrite.clone(),
                    dial_timeout: None,
                });
            }
        }
        let lookup: Vec<&str> = match name {
            "docker.io" => vec!["registry-1.docker.io", "docker.io"],
            n => vec![n],
        };
        let tls = tls_of(&registries.configs, &lookup, source)?;
        if hosts.is_empty() && tls.is_empty() {
            // Nothing a hosts.toml would change.
            continue;
        }
        files.push(HostsFile {
            registry: name.to_string(),
            dir: directory(name),
            server,
            tls,
            hosts,
        });
    }
    Ok((files, warnings))
}
