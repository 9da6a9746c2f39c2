//! k3s's `registries.yaml`, as a model: `mirrors` (a registry's endpoints and rewrites) and
//! `configs` (a host's TLS files and credentials), keyed by registry host, `"*"` for every
//! registry. Keys airlift does not know are errors, so a typo (`endpoints:`) cannot silently
//! drop a mirror.

use super::MirrorError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The whole file. Both tables may be absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registries {
    /// Per registry (`docker.io`, `registry.example.com:5000`, `"*"`): where to pull from first.
    #[serde(deserialize_with = "nullable_map")]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Per host (a registry or a mirror endpoint's host): TLS and credentials.
    #[serde(deserialize_with = "nullable_map")]
    pub configs: BTreeMap<String, HostConfig>,
}

/// One `mirrors` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mirror {
    /// Endpoints tried in order before the registry itself (URLs, or `host[:port]`).
    #[serde(deserialize_with = "nullable")]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement applied to the repository name at the mirrors (k3s's
    /// containerd honours it; upstream containerd's hosts.toml has no such key).
    #[serde(deserialize_with = "nullable")]
    pub rewrite: BTreeMap<String, String>,
}

/// One `configs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Credentials: hosts.toml cannot carry them (a warning says so).
    pub auth: Option<Auth>,
    /// TLS files and verification.
    pub tls: Option<Tls>,
}

/// `configs.<host>.auth`: only its presence matters to airlift.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// base64 of `user:password`.
    pub auth: Option<String>,
    /// An identity token.
    pub identity_token: Option<String>,
}

/// `configs.<host>.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// CA bundle (PEM) the host's certificate must chain to.
    pub ca_file: Option<String>,
    /// Client certificate (PEM).
    pub cert_file: Option<String>,
    /// The client certificate's key (PEM).
    pub key_file: Option<String>,
    /// Skip verifying the host's certificate.
    pub insecure_skip_verify: bool,
}

/// `mirrors: {"*": }` (a key with nothing after it) is common in k3s files: null reads as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A map whose values may be null (`"*":` alone): each null is the value's default.
fn nullable_map<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let m = Option::<BTreeMap<String, Option<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

impl Registries {
    /// Parses YAML text; the error is the parser's, with line and column.
    pub fn parse(text: &str) -> Result<Registries, serde_yaml_ng::Error> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let r: Option<Registries> = serde_yaml_ng::from_str(text)?;
        Ok(r.unwrap_or_default())
    }

    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Registries, MirrorError> {
        let text = std::fs::read_to_string(path).map_err(|cause| MirrorError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Registries::parse(&text).map_err(|cause| MirrorError::Parse {
            path: path.to_path_buf(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_k3s_file_reads() {
        let r = Registries::parse(
            r#"
mirrors:
  "*":
  docker.io:
    endpoint:
      - "https://mirror.example.com"
      - mirror2.example.com:5000
  registry.example.com:
    endpoint: ["https://cache.example.com/proxy"]
    rewrite:
      "^library/(.*)": "mirrored/$1"
configs:
  mirror.example.com:
    tls:
      ca_file: /etc/ssl/mirror-ca.pem
      insecure_skip_verify: true
    auth:
      username: u
      password: p
"#,
        )
        .unwrap();
        assert_eq!(r.mirrors["*"], Mirror::default());
        assert_eq!(r.mirrors["docker.io"].endpoint.len(), 2);
        assert_eq!(
            r.mirrors["registry.example.com"].rewrite["^library/(.*)"],
            "mirrored/$1"
        );
        let c = &r.configs["mirror.example.com"];
        assert!(c.tls.as_ref().unwrap().insecure_skip_verify);
        assert_eq!(c.auth.as_ref().unwrap().username.as_deref(), Some("u"));
        assert_eq!(Registries::parse("").unwrap(), Registries::default());
        assert_eq!(
            Registries::parse("mirrors:\n").unwrap(),
            Registries::default()
        );
    }

    #[test]
    fn typos_and_bad_yaml_are_errors_with_a_line() {
        let e = Registries::parse("mirrors:\n  docker.io:\n    endpoints: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `endpoints`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = Registries::parse("mirrors:\n  docker.io:\n   endpoint: [a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
        let e = Registries::parse("configs:\n  x:\n    tls:\n      ca: /a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `ca`"), "{e}");
    }
}
