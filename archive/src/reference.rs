//! Image references: parsing and normalisation exactly as containerd and Docker do
//! (`busybox:stable` → `docker.io/library/busybox:stable`).
//!
//! A reference that fails these rules never becomes an image name.

use crate::digest::Digest;
use std::fmt;

/// A normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {reference:?}: {why}")]
pub struct InvalidReference {
    /// The string as given.
    pub reference: String,
    /// The rule it breaks.
    pub why: &'static str,
}

const DEFAULT_DOMAIN: &str = "docker.io";
const NAME_MAX: usize = 255;

fn invalid(reference: &str, why: &'static str) -> InvalidReference {
    InvalidReference {
        reference: reference.to_string(),
        why,
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels separated by dots, or a bracketed IPv6 address, optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip6, after)) => {
                if ip6.is_empty() || !ip6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return false;
                }
                (
                    None,
                    after
                        .strip_prefix(':')
                        .map(Some)
                        .unwrap_or(if after.is_empty() { None } else { Some("x") }),
                )
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    let b = label.as_bytes();
                    !b.is_empty()
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                })
        }
    }
}

/// A tag: `[\w][\w.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parses and normalises like containerd's `reference/docker.ParseDockerRef`: the default
    /// domain is `docker.io`, single-component Docker Hub names get `library/`, a name without
    /// tag or digest gets `:latest`, and a name with both keeps only the digest.
    pub fn parse_normalized(s: &str) -> Result<Reference, InvalidReference> {
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        // As containerd: 64 hex characters are an image ID, never a name.
        if Digest::from_hex(s).is_some() {
            return Err(invalid(s, "64 hex characters are an image ID, not a name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                d.parse::<Digest>()
                    .map_err(|_| invalid(s, "the digest is not sha256:<64 hex>"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(invalid(
                    s,
                    "the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                ));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if !valid_domain(&domain) {
            return Err(invalid(s, "the registry host is not valid"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(s, "repository names must be lowercase"));
        }
        if !path.split('/').all(valid_component) {
            return Err(invalid(
                s,
                "a repository path component is not [a-z0-9]+ joined by '.', '_', '__' or '-'",
            ));
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(invalid(
                s,
                "the repository name is longer than 255 characters",
            ));
        }
        let tag = match (&tag, &digest) {
            (_, Some(_)) => None,
            (Some(t), None) => Some(t.clone()),
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The same repository pinned by digest: `domain/path@sha256:…`.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// What OCI calls the reference name: the tag, or `@digest` (containerd's `ociReferenceName`).
    pub fn object(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("@{d}"),
            (Some(t), None) => t.clone(),
            (None, None) => String::new(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether an OCI `ref.name` annotation is a full reference (containerd's rule: it contains
/// `/`, `:` or `@`) rather than a bare tag such as `1.35` or `v1`.
pub fn is_full_reference(ref_name: &str) -> bool {
    ref_name.contains(['/', ':', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_containerd() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:stable", "docker.io/library/busybox:stable"),
            ("library/busybox:1.35", "docker.io/library/busybox:1.35"),
            ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
            ("docker.io/rancher/mirrored-pause:3.6", "docker.io/rancher/mirrored-pause:3.6"),
            ("registry.example.com/tools/busybox:1.35-arm64", "registry.example.com/tools/busybox:1.35-arm64"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("localhost/app:v1", "localhost/app:v1"),
            ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
            ("my_org/my-app__x.y:1", "docker.io/my_org/my-app__x.y:1"),
            (
                "busybox:1.35@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd",
                "docker.io/library/busybox@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd",
            ),
        ];
        for (input, want) in cases {
            let r = Reference::parse_normalized(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_references() {
        for bad in [
            "",
            "Busybox:1",
            "busybox:",
            "busybox:-x",
            "a//b",
            "-a/b",
            "a/b-",
            "a..b/c",
            "host:port:bad/x",
            "busybox@sha256:short",
            "bad host/x",
            // an image ID (containerd: "cannot specify 64-byte hexadecimal strings")
            "2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd",
        ] {
            assert!(
                Reference::parse_normalized(bad).is_err(),
                "{bad:?} accepted"
            );
        }
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(Reference::parse_normalized(&long).is_err());
    }

    #[test]
    fn parts_and_object() {
        let r = Reference::parse_normalized("registry.example.com/tools/busybox:latest").unwrap();
        assert_eq!(r.domain(), "registry.example.com");
        assert_eq!(r.path(), "tools/busybox");
        assert_eq!(r.object(), "latest");
        let d = Digest::of(b"x");
        assert_eq!(
            r.with_digest(&d).to_string(),
            format!("registry.example.com/tools/busybox@{d}")
        );
        assert!(is_full_reference("busybox:1"));
        assert!(!is_full_reference("1.35"));
        assert!(!is_full_reference("v1"));
    }
}
