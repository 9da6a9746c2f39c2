//! From a [`Registries`] model and the peers to the `hosts.toml` files containerd reads, as
//! text: which registry directories get a file, the `[host."…"]` entries in the order they are
//! tried (peers, then the mirror endpoints), the TLS keys hosts.toml can carry, and the one rule
//! that keeps the fallback working — the top-level `server` is always the registry's own
//! upstream (`https://registry-1.docker.io` for docker.io, `""` for `_default`: the image's own
//! registry), never a mirror.
//!
//! What containerd does with the file (core/remotes/docker/config/hosts.go, 1.7 and 2.x): the
//! `[host]` entries are tried in file order and the top-level entry last; a URL without a path
//! gets `/v2`, one with a path gets `/v2` appended unless it ends in `/v2` or `override_path` is
//! set. k3s's containerd appends the top-level entry only when a `server` key is present
//! (k3s#9728), hence `server = ""` rather than no key in `_default`; 1.7 rejects a file with no
//! `[host]` table at all (containerd#10027), hence an empty `[host]` in a file with none.

use super::registries::{HostConfig, Registries};
use super::MirrorError;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The first line of every file airlift writes: how `--remove` knows a file is airlift's.
pub const HEADER: &str =
    "# Written by airlift mirrors; `airlift mirrors --remove` restores what was here. Do not edit.";

/// One `hosts.toml` to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The registry as registries.yaml names it (`docker.io`, `*`).
    pub registry: String,
    /// Its directory under the hosts directory (`docker.io`, `_default`, `host_5000_`).
    pub dir: String,
    /// The top-level `server`: the registry's own upstream, `""` for `_default`.
    pub server: String,
    /// TLS of the upstream itself (`configs` of the registry).
    pub tls: TlsKeys,
    /// The entries tried before the upstream, in order.
    pub hosts: Vec<HostEntry>,
}

/// One `[host."URL"]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// `scheme://host[:port][/path]`.
    pub url: String,
    /// The path is the API root as given (no `/v2` appended).
    pub override_path: bool,
    /// TLS of this host (`configs` of its host).
    pub tls: TlsKeys,
    /// k3s's `rewrite` (regex → replacement), for mirror endpoints only.
    pub rewrite: BTreeMap<String, String>,
    /// `dial_timeout`: for peers, so a node that is down (its packets dropped, not refused)
    /// costs each pull seconds rather than containerd's 30 s per request.
    pub dial_timeout: Option<&'static str>,
}

/// How long containerd tries to connect to a peer before moving on to the next host.
pub const PEER_DIAL_TIMEOUT: &str = "2s";

/// The TLS keys of one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsKeys {
    /// `ca`.
    pub ca: Option<String>,
    /// `client`: certificate and key (none: the key is in the certificate's file).
    pub client: Option<(String, Option<String>)>,
    /// `skip_verify = true`.
    pub skip_verify: bool,
}

impl TlsKeys {
    fn is_empty(&self) -> bool {
        *self == TlsKeys::default()
    }
}

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

/// Whether containerd talks plain HTTP to `host[:port]` when nothing says otherwise: the local
/// machine on a port other than 443 (core/remotes/docker/config/hosts.go).
pub fn plain_http_by_default(host: &str) -> bool {
    is_localhost(host) && port_of(host).is_some_and(|p| p != "443")
}

fn is_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

fn port_of(host: &str) -> Option<&str> {
    let (h, p) = host.rsplit_once(':')?;
    (!h.ends_with(':') && (!h.contains(':') || h.ends_with(']'))).then_some(p)
}

/// Checks `host[:port]` (a name, an IPv4 address or a bracketed IPv6 address).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("no host".into());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{host:?}: unclosed '['"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?}: not an IPv6 address"));
        }
        match after {
            "" => (v6, None),
            p if p.starts_with(':') => (v6, Some(&p[1..])),
            _ => return Err(format!("{host:?}: unexpected {after:?} after ']'")),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if !host.starts_with('[')
        && (name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(n) if n > 0) {
            return Err(format!(
                "{host:?}: port {p:?} is not a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

/// Reads an endpoint as k3s does: `host[:port]` or `http(s)://host[:port][/path]`; no scheme
/// means https, or http for localhost on a port other than 443; `docker.io` is
/// `registry-1.docker.io`.
pub fn endpoint(raw: &str) -> Result<Endpoint, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty".into());
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, rest)) => {
            let s = s.to_ascii_lowercase();
            if s != "http" && s != "https" {
                return Err(format!("scheme {s:?} is not http or https"));
            }
            (Some(s), rest)
        }
        None => (None, raw),
    };
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed".into());
    }
    check_host(authority)?;
    let mut segments = Vec::new();
    for s in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if s == ".." {
            return Err("'..' in the path".into());
        }
        segments.push(s);
    }
    let path = if segments.is_empty() || segments == ["v2"] {
        String::new()
    } else {
        format!("/{}", segments.join("/"))
    };
    let scheme = scheme.unwrap_or_else(|| {
        if plain_http_by_default(authority) {
            "http".into()
        } else {
            "https".into()
        }
    });
    let (host, config_host) = match authority {
        "docker.io" | "registry-1.docker.io" => ("registry-1.docker.io", "docker.io"),
        a => (a, a),
    };
    Ok(Endpoint {
        url: format!("{scheme}://{host}{path}"),
        config_host: config_host.to_string(),
        has_path: !path.is_empty(),
        override_path: !path.is_empty() && !path.ends_with("/v2"),
    })
}

/// A peer (another node's airlift registry endpoint): `http(s)://host:port`, nothing else.
pub fn peer(raw: &str) -> Result<Endpoint, MirrorError> {
    let bad = |why: String| MirrorError::Peer {
        url: raw.to_string(),
        why,
    };
    if !raw.trim().contains("://") {
        return Err(bad(
            "give the scheme: http://HOST:PORT, or https:// for an endpoint with TLS".into(),
        ));
    }
    let e = endpoint(raw).map_err(bad)?;
    if e.has_path {
        return Err(bad(
            "an airlift registry endpoint has no path (its API is at /v2)".into(),
        ));
    }
    Ok(e)
}

/// The registry's own upstream as containerd would reach it without a hosts.toml.
fn upstream(registry: &str) -> String {
    match registry {
        "*" => String::new(),
        "docker.io" => "https://registry-1.docker.io".into(),
        r if plain_http_by_default(r) => format!("http://{r}"),
        r => format!("https://{r}"),
    }
}

/// containerd's directory name for a registry: `host:port` is `host_port_`.
fn directory(registry: &str) -> String {
    if registry == "*" {
        return "_default".into();
    }
    match registry.rfind(':') {
        Some(i) if i > 0 => format!("{}_{}_", &registry[..i], &registry[i + 1..]),
        _ => registry.to_string(),
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
            return Err(MirrorError::Invalid {
                path: source.to_path_buf(),
                what: format!("configs.\"{host}\".tls: key_file without cert_file"),
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
    let invalid = |what: String| MirrorError::Invalid {
        path: source.to_path_buf(),
        what,
    };
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
            check_host(name).map_err(|why| {
                invalid(format!(
                    "registry {name:?} is not a registry host[:port] (or \"*\"): {why}"
                ))
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
                regex::Regex::new(pattern).map_err(|e| {
                    invalid(format!(
                        "mirrors.\"{name}\".rewrite: {pattern:?} is not a regular expression: {e}"
                    ))
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
                let e = endpoint(raw).map_err(|why| {
                    invalid(format!(
                        "mirrors.\"{name}\".endpoint[{i}] {raw:?} is not an endpoint URL: {why}"
                    ))
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

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn tls_lines(out: &mut String, tls: &TlsKeys, indent: &str) {
    if let Some(ca) = &tls.ca {
        let _ = writeln!(out, "{indent}ca = {}", quote(ca));
    }
    match &tls.client {
        Some((cert, Some(key))) => {
            let _ = writeln!(out, "{indent}client = [[{}, {}]]", quote(cert), quote(key));
        }
        Some((cert, None)) => {
            let _ = writeln!(out, "{indent}client = {}", quote(cert));
        }
        None => {}
    }
    if tls.skip_verify {
        let _ = writeln!(out, "{indent}skip_verify = true");
    }
}

/// The file's text; `source` is named in its second comment line.
pub fn render(file: &HostsFile, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{HEADER}");
    let _ = writeln!(out, "# registry {:?}, from {source}", file.registry);
    if file.server.is_empty() {
        let _ = writeln!(
            out,
            "# server = \"\": after the hosts below, the image's own registry."
        );
    }
    let _ = writeln!(out, "server = {}", quote(&file.server));
    tls_lines(&mut out, &file.tls, "");
    if file.hosts.is_empty() {
        out.push_str("\n[host]\n");
    }
    for h in &file.hosts {
        let key = quote(&h.url);
        let _ = writeln!(out, "\n[host.{key}]");
        out.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
        if h.override_path {
            out.push_str("  override_path = true\n");
        }
        if let Some(t) = h.dial_timeout {
            let _ = writeln!(out, "  dial_timeout = {}", quote(t));
        }
        tls_lines(&mut out, &h.tls, "  ");
        if !h.rewrite.is_empty() {
            let _ = writeln!(out, "\n  [host.{key}.rewrite]");
            for (pattern, replacement) in &h.rewrite {
                let _ = writeln!(out, "    {} = {}", quote(pattern), quote(replacement));
            }
        }
    }
    out
}
