//! The text of the `hosts.toml` files airlift writes ([`crate::mirrors`] decides which): the
//! top-level `server` and TLS keys, then the `[host."…"]` entries in the order containerd tries
//! them, each with `capabilities = ["pull", "resolve"]`, its TLS keys, `override_path`,
//! `dial_timeout` and k3s's `rewrite`; every file opens with [`HEADER`], by which airlift knows
//! its own files again.
//!
//! k3s's containerd appends the top-level entry only when a `server` key is present (k3s#9728),
//! hence `server = ""` rather than no key in `_default`; 1.7 rejects a file with no `[host]`
//! table at all (containerd#10027), hence an empty `[host]` in a file with none.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        *self == TlsKeys::default()
    }
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
