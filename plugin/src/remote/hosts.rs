//! Which hosts a pull of one registry's image goes to, in order, read from containerd's registry
//! hosts directory (`certs.d`) as containerd's own resolver reads it
//! (core/remotes/docker/config/hosts.go, 1.7 and 2.x):
//!
//! - the directory of `host:port` is `host_port_`, else `host:port`, else `_default`: the first
//!   that exists;
//! - its `hosts.toml` lists `[host."URL"]` entries, tried in file order, and the top-level entry
//!   last; without a `server` (or with an empty one) that last entry is the registry itself
//!   (`https://registry-1.docker.io` for docker.io, plain HTTP for localhost on a port other
//!   than 443);
//! - a URL without a path gets `/v2`, one with a path gets `/v2` appended unless it ends in `/v2`
//!   or `override_path` is set; a URL without a scheme is HTTPS;
//! - `capabilities` (default `pull`, `resolve`, `push`) say which hosts resolve tags and which
//!   serve content; `ca`, `client`, `skip_verify`, `header` and `dial_timeout` apply per host,
//!   and k3s's `rewrite` (regular expression → replacement on the repository) too;
//! - a directory without `hosts.toml` is the older layout: its `*.crt` are CAs and its
//!   `*.cert`/`*.key` pairs client certificates of the registry itself.

use crate::mirrors::hosts::plain_http_by_default;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The time to connect to a host when its entry does not say (containerd's default).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// One host a pull may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The API root (`/v2`, or the path as given with `override_path`).
    pub path: String,
    /// Serves content (manifests and blobs by digest).
    pub pull: bool,
    /// Resolves tags.
    pub resolve: bool,
    /// CA certificates (PEM files) trusted besides the system's.
    pub ca: Vec<PathBuf>,
    /// Client certificates: the certificate's file and the key's (none: in the certificate's).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Time to connect.
    pub dial_timeout: Duration,
    /// k3s's repository rewrites, in order (the first that matches applies).
    pub rewrite: Vec<(String, String)>,
}

impl Host {
    /// A host with containerd's defaults: every capability, the system's roots, no headers.
    fn new(scheme: String, authority: String, path: String) -> Host {
        Host {
            scheme,
            authority,
            path,
            pull: true,
            resolve: true,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
            dial_timeout: DIAL_TIMEOUT,
            rewrite: Vec::new(),
        }
    }

    /// `scheme://authority/path`, for messages.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }

    /// The repository as this host names it (after the first matching rewrite).
    pub fn repository(&self, repo: &str) -> String {
        for (pattern, replacement) in &self.rewrite {
            if let Ok(re) = regex::Regex::new(pattern) {
                if re.is_match(repo) {
                    return re.replace(repo, replacement.as_str()).into_owned();
                }
            }
        }
        repo.to_string()
    }
}

/// The directories that may hold `registry`'s configuration, in the order looked at.
fn candidates(dir: &Path, registry: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some((host, port)) = registry.rsplit_once(':') {
        out.push(dir.join(format!("{host}_{port}_")));
    }
    out.push(dir.join(registry));
    out.push(dir.join("_default"));
    out
}

/// The hosts a pull of an image on `registry` tries, in order. `dir` is the hosts directory
/// (none: the registry alone); `default_scheme` the registry's own scheme when not HTTPS (a
/// plain-HTTP peer).
pub fn hosts(
    dir: Option<&Path>,
    registry: &str,
    default_scheme: Option<&str>,
) -> Result<Vec<Host>, String> {
    let upstream = || {
        let authority = if registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let scheme = match default_scheme {
            Some(s) => s.to_string(),
            None if plain_http_by_default(registry) => "http".to_string(),
            None => "https".to_string(),
        };
        Host::new(scheme, authority, "/v2".into())
    };
    let Some(dir) = dir else {
        return Ok(vec![upstream()]);
    };
    let Some(found) = candidates(dir, registry).into_iter().find(|d| d.is_dir()) else {
        return Ok(vec![upstream()]);
    };
    let file = found.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut host = upstream();
            legacy_certificates(&found, &mut host)?;
            return Ok(vec![host]);
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    parse(&text, &found, registry, default_scheme, upstream())
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The older layout: `*.crt` CAs and `*.cert` + `*.key` client pairs in the directory.
fn legacy_certificates(dir: &Path, host: &mut Host) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => host.ca.push(path),
            Some("cert") => {
                let key = path.with_extension("key");
                host.client.push((path, key.exists().then_some(key)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One `hosts.toml`: its `[host]` entries in file order, then the top-level entry.
fn parse(
    text: &str,
    base: &Path,
    registry: &str,
    default_scheme: Option<&str>,
    upstream: Host,
) -> Result<Vec<Host>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = hosts
            .as_table()
            .ok_or("`host` must be a table of `[host.\"URL\"]` entries")?;
        for (url, entry) in hosts {
            let entry = entry
                .as_table()
                .ok_or_else(|| format!("host {url:?}: not a table"))?;
            out.push(entry_of(url, entry, base, None)?);
        }
    }
    let server = table.get("server").and_then(|s| s.as_str()).unwrap_or("");
    let mut last = if server.is_empty() {
        entry_of("", &table, base, Some(upstream))?
    } else {
        entry_of(server, &table, base, None)?
    };
    if server.is_empty() && default_scheme.is_none() && plain_http_by_default(registry) {
        last.scheme = "http".into();
    }
    out.push(last);
    Ok(out)
}

/// A string, or an array of strings.
fn strings(v: &toml::Value, key: &str) -> Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{key}`: expected strings"))
            })
            .collect(),
        _ => Err(format!("`{key}`: expected a string or an array of strings")),
    }
}

/// `p` relative to the file's directory unless absolute.
fn file(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A host entry from its URL (empty with `upstream`: the registry itself) and keys.
fn entry_of(
    url: &str,
    t: &toml::Table,
    base: &Path,
    upstream: Option<Host>,
) -> Result<Host, String> {
    let override_path = t
        .get("override_path")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let mut host = match upstream {
        Some(h) => h,
        None => {
            let (scheme, rest) = match url.split_once("://") {
                Some((s @ ("http" | "https"), rest)) => (s.to_string(), rest),
                Some((s, _)) => return Err(format!("host {url:?}: unsupported scheme {s:?}")),
                None => ("https".to_string(), url),
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
                None => (rest, ""),
            };
            if authority.is_empty() {
                return Err(format!("host {url:?}: no host"));
            }
            let path = if path.is_empty() {
                "/v2".to_string()
            } else if override_path || path.ends_with("/v2") {
                path.to_string()
            } else {
                format!("{path}/v2")
            };
            Host::new(scheme, authority.to_string(), path)
        }
    };
    if let Some(caps) = t.get("capabilities") {
        let caps = strings(caps, "capabilities")?;
        host.pull = caps.iter().any(|c| c == "pull");
        host.resolve = caps.iter().any(|c| c == "resolve");
    }
    if let Some(ca) = t.get("ca") {
        host.ca = strings(ca, "ca")?.iter().map(|p| file(base, p)).collect();
    }
    if let Some(client) = t.get("client") {
        host.client = match client {
            toml::Value::String(s) => vec![(file(base, s), None)],
            toml::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok((file(base, s), None)),
                    toml::Value::Array(pair) => match pair.as_slice() {
                        [toml::Value::String(c), toml::Value::String(k)] => {
                            Ok((file(base, c), Some(file(base, k))))
                        }
                        _ => Err("`client`: a pair is [certificate, key]".to_string()),
                    },
                    _ => Err("`client`: expected paths or [certificate, key] pairs".to_string()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("`client`: expected a path or a list".into()),
        };
    }
    if let Some(v) = t.get("skip_verify") {
        host.skip_verify = v.as_bool().ok_or("`skip_verify`: expected true or false")?;
    }
    if let Some(h) = t.get("header") {
        let h = h.as_table().ok_or("`header`: expected a table")?;
        for (k, v) in h {
            for value in strings(v, "header")? {
                host.headers.push((k.clone(), value));
            }
        }
    }
    if let Some(d) = t.get("dial_timeout") {
        let d = d
            .as_str()
            .ok_or("`dial_timeout`: expected a duration such as \"5s\"")?;
        host.dial_timeout = go_duration(d).ok_or_else(|| format!("`dial_timeout`: {d:?}"))?;
    }
    if let Some(r) = t.get("rewrite") {
        let r = r.as_table().ok_or("`rewrite`: expected a table")?;
        for (k, v) in r {
            let v = v.as_str().ok_or("`rewrite`: expected strings")?;
            regex::Regex::new(k).map_err(|e| format!("`rewrite` {k:?}: {e}"))?;
            // Go and the regex crate read `$1` and `${1}` alike.
            host.rewrite.push((k.clone(), v.to_string()));
        }
    }
    Ok(host)
}

/// A Go duration as hosts.toml writes it (`500ms`, `5s`, `1m30s`).
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += Duration::from_secs_f64(value * secs);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, sub: &str, text: &str) {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("hosts.toml"), text).unwrap();
    }

    fn urls(hosts: &[Host]) -> Vec<String> {
        hosts.iter().map(Host::url).collect()
    }

    #[test]
    fn without_a_directory_the_registry_itself() {
        let h = hosts(None, "docker.io", None).unwrap();
        assert_eq!(urls(&h), ["https://registry-1.docker.io/v2"]);
        let h = hosts(None, "localhost:5000", None).unwrap();
        assert_eq!(urls(&h), ["http://localhost:5000/v2"]);
        let h = hosts(None, "127.0.0.1:5000", None).unwrap();
        assert_eq!(urls(&h), ["http://127.0.0.1:5000/v2"]);
        let h = hosts(None, "localhost", None).unwrap();
        assert_eq!(
            urls(&h),
            ["https://localhost/v2"],
            "no port: HTTPS, as containerd"
        );
        let h = hosts(None, "10.0.0.5:5050", Some("http")).unwrap();
        assert_eq!(urls(&h), ["http://10.0.0.5:5050/v2"]);
        let h = hosts(None, "quay.io", None).unwrap();
        assert_eq!(urls(&h), ["https://quay.io/v2"]);
    }

    #[test]
    fn mirrors_in_file_order_then_the_upstream() {
        let dir = tempfile::tempdir().unwrap();
        // Out of alphabetical order on purpose: file order is what counts.
        write(
            dir.path(),
            "docker.io",
            r#"server = "https://registry-1.docker.io"
[host."http://peer-b:5050"]
  capabilities = ["pull", "resolve"]
[host."https://mirror-a.example/prefix"]
  capabilities = ["pull"]
  ca = "mirror-ca.pem"
  skip_verify = true
  dial_timeout = "1.5s"
  [host."https://mirror-a.example/prefix".header]
    x-token = ["a", "b"]
[host."registry.local/api"]
  override_path = true
  client = [["c.pem", "/abs/k.pem"]]
  [host."registry.local/api".rewrite]
    "^library/(.*)" = "mirrored/$1"
"#,
        );
        let h = hosts(Some(dir.path()), "docker.io", None).unwrap();
        assert_eq!(
            urls(&h),
            [
                "http://peer-b:5050/v2",
                "https://mirror-a.example/prefix/v2",
                "https://registry.local/api",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert!(h[0].pull && h[0].resolve);
        assert!(h[1].pull && !h[1].resolve, "capabilities as given");
        assert_eq!(h[1].ca, [dir.path().join("docker.io/mirror-ca.pem")]);
        assert!(h[1].skip_verify);
        assert_eq!(h[1].dial_timeout, Duration::from_millis(1500));
        assert_eq!(
            h[1].headers,
            [
                ("x-token".into(), "a".into()),
                ("x-token".into(), "b".into())
            ]
        );
        assert_eq!(
            h[2].client,
            [(
                dir.path().join("docker.io/c.pem"),
                Some(PathBuf::from("/abs/k.pem"))
            )]
        );
        assert_eq!(h[2].repository("library/busybox"), "mirrored/busybox");
        assert_eq!(h[2].repository("org/app"), "org/app");
        assert!(h[3].pull && h[3].resolve);
    }

    #[test]
    fn directories_looked_up_as_containerd_does() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "_default", "[host.\"http://any:1\"]\n");
        write(dir.path(), "reg:5000", "[host.\"http://colon:1\"]\n");
        // `_default` with an empty server: each image's own registry last.
        let h = hosts(Some(dir.path()), "quay.io", None).unwrap();
        assert_eq!(urls(&h), ["http://any:1/v2", "https://quay.io/v2"]);
        let h = hosts(Some(dir.path()), "reg:5000", None).unwrap();
        assert_eq!(urls(&h), ["http://colon:1/v2", "https://reg:5000/v2"]);
        write(dir.path(), "reg_5000_", "[host.\"http://underscore:1\"]\n");
        let h = hosts(Some(dir.path()), "reg:5000", None).unwrap();
        assert_eq!(urls(&h)[0], "http://underscore:1/v2", "host_port_ first");
        // A server replaces the upstream.
        write(
            dir.path(),
            "ghcr.io",
            "server = \"https://proxy.example\"\n",
        );
        let h = hosts(Some(dir.path()), "ghcr.io", None).unwrap();
        assert_eq!(urls(&h), ["https://proxy.example/v2"]);
        // The older layout: certificates only.
        std::fs::create_dir_all(dir.path().join("old.example")).unwrap();
        std::fs::write(dir.path().join("old.example/ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("old.example/me.cert"), "x").unwrap();
        std::fs::write(dir.path().join("old.example/me.key"), "x").unwrap();
        let h = hosts(Some(dir.path()), "old.example", None).unwrap();
        assert_eq!(urls(&h), ["https://old.example/v2"]);
        assert_eq!(h[0].ca, [dir.path().join("old.example/ca.crt")]);
        assert_eq!(
            h[0].client,
            [(
                dir.path().join("old.example/me.cert"),
                Some(dir.path().join("old.example/me.key"))
            )]
        );
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "docker.io", "[host.\"ftp://x\"]\n");
        let e = hosts(Some(dir.path()), "docker.io", None).unwrap_err();
        assert!(
            e.contains("docker.io/hosts.toml") && e.contains("ftp"),
            "{e}"
        );
        write(dir.path(), "docker.io", "server = [\n");
        let e = hosts(Some(dir.path()), "docker.io", None).unwrap_err();
        assert!(e.contains("docker.io/hosts.toml"), "{e}");
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("5"), None);
    }
}
