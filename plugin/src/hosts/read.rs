//! What a pull of one registry's image tries, in order, read from the hosts directory as
//! containerd's own resolver reads it (the rules are the module's, [`super`]): `capabilities`
//! (default `pull`, `resolve`, `push`) say which hosts resolve tags and which serve content;
//! `ca`, `client`, `skip_verify`, `header` and `dial_timeout` apply per host, and k3s's `rewrite`
//! (regular expression → replacement on the repository) too. A directory without `hosts.toml`
//! is the older layout: its `*.crt` are CAs and its `*.cert`/`*.key` pairs client certificates
//! of the registry itself.

use super::{Endpoint, EndpointError, Scheme};
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

/// Why the hosts directory could not be read for a registry; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A file or directory could not be read.
    #[error("{}: {cause}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A `hosts.toml` is not TOML.
    #[error("{}: {cause}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        cause: toml::de::Error,
    },
    /// A key has a value of the wrong kind.
    #[error("{}: `{key}`: {expected}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A host's URL is not one.
    #[error("{}: host {url:?}: {cause}", path.display())]
    Endpoint {
        /// The file.
        path: PathBuf,
        /// The URL, as written.
        url: String,
        /// What is wrong with it.
        cause: EndpointError,
    },
    /// A `[host."URL"]` entry that is not a table.
    #[error("{}: host {url:?}: not a table", path.display())]
    NotATable {
        /// The file.
        path: PathBuf,
        /// The URL, as written.
        url: String,
    },
    /// `dial_timeout` is not a Go duration.
    #[error("{}: `dial_timeout`: {value:?}", path.display())]
    Duration {
        /// The file.
        path: PathBuf,
        /// As written.
        value: String,
    },
    /// A `rewrite` pattern is not a regular expression.
    #[error("{}: `rewrite` {pattern:?}: {cause}", path.display())]
    Rewrite {
        /// The file.
        path: PathBuf,
        /// The pattern.
        pattern: String,
        /// The regex crate's complaint.
        cause: regex::Error,
    },
}

/// The directories that may hold `registry`'s configuration, in the order looked at.
fn candidates(dir: &Path, registry: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let own = super::directory(registry);
    if own != registry {
        out.push(dir.join(own));
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
    default_scheme: Option<Scheme>,
) -> Result<Vec<Host>, HostsError> {
    let upstream = || {
        let (plain, authority) = super::upstream(registry);
        Host::new(
            default_scheme.unwrap_or(plain).as_str().into(),
            authority.to_string(),
            "/v2".into(),
        )
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
        Err(cause) => return Err(HostsError::Read { path: file, cause }),
    };
    File {
        path: &file,
        base: &found,
    }
    .parse(&text, upstream())
}

/// The older layout: `*.crt` CAs and `*.cert` + `*.key` client pairs in the directory.
fn legacy_certificates(dir: &Path, host: &mut Host) -> Result<(), HostsError> {
    let entries = std::fs::read_dir(dir).map_err(|cause| HostsError::Read {
        path: dir.to_path_buf(),
        cause,
    })?;
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

/// One `hosts.toml` being read: the file (named in errors) and its directory (relative paths
/// are relative to it).
struct File<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl File<'_> {
    fn value(&self, key: &'static str, expected: &'static str) -> HostsError {
        HostsError::Value {
            path: self.path.to_path_buf(),
            key,
            expected,
        }
    }

    /// Its `[host]` entries in file order, then the top-level entry.
    fn parse(&self, text: &str, upstream: Host) -> Result<Vec<Host>, HostsError> {
        let table: toml::Table = toml::from_str(text).map_err(|cause| HostsError::Toml {
            path: self.path.to_path_buf(),
            cause,
        })?;
        let mut out = Vec::new();
        if let Some(hosts) = table.get("host") {
            let hosts = hosts
                .as_table()
                .ok_or_else(|| self.value("host", "must be a table of `[host.\"URL\"]` entries"))?;
            for (url, entry) in hosts {
                let entry = entry.as_table().ok_or_else(|| HostsError::NotATable {
                    path: self.path.to_path_buf(),
                    url: url.clone(),
                })?;
                out.push(self.entry(url, entry, None)?);
            }
        }
        let server = table.get("server").and_then(|s| s.as_str()).unwrap_or("");
        out.push(if server.is_empty() {
            self.entry("", &table, Some(upstream))?
        } else {
            self.entry(server, &table, None)?
        });
        Ok(out)
    }

    /// A string, or an array of strings.
    fn strings(&self, v: &toml::Value, key: &'static str) -> Result<Vec<String>, HostsError> {
        match v {
            toml::Value::String(s) => Ok(vec![s.clone()]),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.value(key, "expected strings"))
                })
                .collect(),
            _ => Err(self.value(key, "expected a string or an array of strings")),
        }
    }

    /// `p` relative to the file's directory unless absolute.
    fn file(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `client`: a path, or a list of paths and [certificate, key] pairs.
    fn client(&self, v: &toml::Value) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsError> {
        match v {
            toml::Value::String(s) => Ok(vec![(self.file(s), None)]),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok((self.file(s), None)),
                    toml::Value::Array(pair) => match pair.as_slice() {
                        [toml::Value::String(c), toml::Value::String(k)] => {
                            Ok((self.file(c), Some(self.file(k))))
                        }
                        _ => Err(self.value("client", "a pair is [certificate, key]")),
                    },
                    _ => Err(self.value("client", "expected paths or [certificate, key] pairs")),
                })
                .collect(),
            _ => Err(self.value("client", "expected a path or a list")),
        }
    }

    /// A host entry from its URL (empty with `upstream`: the registry itself) and keys.
    fn entry(
        &self,
        url: &str,
        t: &toml::Table,
        upstream: Option<Host>,
    ) -> Result<Host, HostsError> {
        let override_path = t
            .get("override_path")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mut host = match upstream {
            Some(h) => h,
            None => {
                let e = Endpoint::read(url).map_err(|cause| HostsError::Endpoint {
                    path: self.path.to_path_buf(),
                    url: url.to_string(),
                    cause,
                })?;
                let path = if e.path.is_empty() {
                    "/v2".to_string()
                } else if override_path || e.path.ends_with("/v2") {
                    e.path.clone()
                } else {
                    format!("{}/v2", e.path)
                };
                let scheme = e.scheme.unwrap_or(Scheme::Https);
                Host::new(scheme.as_str().into(), e.authority(), path)
            }
        };
        if let Some(caps) = t.get("capabilities") {
            let caps = self.strings(caps, "capabilities")?;
            host.pull = caps.iter().any(|c| c == "pull");
            host.resolve = caps.iter().any(|c| c == "resolve");
        }
        if let Some(ca) = t.get("ca") {
            host.ca = self
                .strings(ca, "ca")?
                .iter()
                .map(|p| self.file(p))
                .collect();
        }
        if let Some(client) = t.get("client") {
            host.client = self.client(client)?;
        }
        if let Some(v) = t.get("skip_verify") {
            host.skip_verify = v
                .as_bool()
                .ok_or_else(|| self.value("skip_verify", "expected true or false"))?;
        }
        if let Some(h) = t.get("header") {
            let h = h
                .as_table()
                .ok_or_else(|| self.value("header", "expected a table"))?;
            for (k, v) in h {
                for value in self.strings(v, "header")? {
                    host.headers.push((k.clone(), value));
                }
            }
        }
        if let Some(d) = t.get("dial_timeout") {
            let d = d
                .as_str()
                .ok_or_else(|| self.value("dial_timeout", "expected a duration such as \"5s\""))?;
            host.dial_timeout = go_duration(d).ok_or_else(|| HostsError::Duration {
                path: self.path.to_path_buf(),
                value: d.to_string(),
            })?;
        }
        if let Some(r) = t.get("rewrite") {
            let r = r
                .as_table()
                .ok_or_else(|| self.value("rewrite", "expected a table"))?;
            for (k, v) in r {
                let v = v
                    .as_str()
                    .ok_or_else(|| self.value("rewrite", "expected strings"))?;
                regex::Regex::new(k).map_err(|cause| HostsError::Rewrite {
                    path: self.path.to_path_buf(),
                    pattern: k.clone(),
                    cause,
                })?;
                // Go and the regex crate read `$1` and `${1}` alike.
                host.rewrite.push((k.clone(), v.to_string()));
            }
        }
        Ok(host)
    }
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
        let h = hosts(None, "10.0.0.5:5050", Some(Scheme::Http)).unwrap();
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
        let e = hosts(Some(dir.path()), "docker.io", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker.io/hosts.toml") && e.contains("ftp"),
            "{e}"
        );
        write(dir.path(), "docker.io", "server = [\n");
        let e = hosts(Some(dir.path()), "docker.io", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker.io/hosts.toml"), "{e}");
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("5"), None);
    }
}
