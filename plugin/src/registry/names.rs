//! Repository names as clients send them, and the image references they stand for.
//!
//! A request names a repository by its path under `/v2/` (`library/busybox`). Which registry the
//! image belongs to comes from the `ns=` query parameter containerd adds when it uses a mirror;
//! without one, from the first path component when it looks like a host, as in Docker
//! references (it has a dot or a colon, or is `localhost`): `quay.io/org/app` is
//! `quay.io/org/app`, `localhost:5000/x` is `localhost:5000/x`; anything else is on `docker.io`
//! (`busybox` is `docker.io/library/busybox`).
//!
//! The other way, [`client_name`] is the path a client uses for an image this endpoint serves,
//! as `/v2/_catalog` lists it: Docker Hub's own form for `docker.io` (`library/busybox`), the
//! full repository for any other registry (`quay.io/org/app`), which maps back to the same
//! repository by the rule above.

use crate::reference::{valid_tag, Reference};

/// Longest repository name accepted (the reference grammar's limit, with room for a host).
pub const MAX_NAME: usize = 255;

/// Why a repository name or tag from a request is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name {name:?}: {why}")]
pub struct InvalidName {
    /// The name as requested.
    pub name: String,
    /// The rule it breaks.
    pub why: String,
}

fn invalid(name: &str, why: impl Into<String>) -> InvalidName {
    InvalidName {
        name: name.chars().take(MAX_NAME + 16).collect(),
        why: why.into(),
    }
}

/// Whether the first component of a path names a registry host (Docker's rule).
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// A repository: a registry host and a path in it, normalised as containerd names images
/// (`docker.io` + `library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// The registry host.
    pub domain: String,
    /// The path within the registry.
    pub path: String,
}

impl Repository {
    /// The repository of an image reference.
    pub fn of(r: &Reference) -> Repository {
        Repository {
            domain: r.domain().to_string(),
            path: r.path().to_string(),
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)
    }
}

/// The repository a request for `name` means, with `ns` the registry containerd named in its
/// `ns=` parameter, if any.
pub fn repository(name: &str, ns: Option<&str>) -> Result<Repository, InvalidName> {
    if name.is_empty() {
        return Err(invalid(name, "empty"));
    }
    if name.len() > MAX_NAME {
        return Err(invalid(name, "longer than 255 characters"));
    }
    if name.contains('@') {
        return Err(invalid(name, "'@' in a repository name"));
    }
    let full = match ns {
        Some(ns) => {
            let ns = registry_host(ns)
                .ok_or_else(|| invalid(name, "the ns parameter is not a registry host"))?;
            if name.contains(':') {
                return Err(invalid(name, "':' in a repository path"));
            }
            format!("{ns}/{name}")
        }
        None => {
            let (first, rest) = name.split_once('/').unwrap_or((name, ""));
            if rest.contains(':') || (rest.is_empty() && first.contains(':')) {
                return Err(invalid(name, "':' in a repository path"));
            }
            if first.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(invalid(name, "repository names are lowercase"));
            }
            if looks_like_host(first) && rest.is_empty() {
                return Err(invalid(name, "a registry host with no repository path"));
            }
            name.to_string()
        }
    };
    let r = Reference::parse_normalized(&full).map_err(|e| invalid(name, e.why))?;
    Ok(Repository::of(&r))
}

/// A registry host as containerd passes it in `ns=`, normalised (`index.docker.io` and
/// `registry-1.docker.io` are `docker.io`); `None` when it is not a host.
fn registry_host(ns: &str) -> Option<&str> {
    let ns = match ns {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    };
    let ok = !ns.is_empty()
        && ns.len() <= MAX_NAME
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(ns)
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A tag (`1.35`).
    Tag(String),
    /// A digest (`sha256:…`).
    Digest(crate::digest::Digest),
}

/// Why a manifest reference is not a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadObject {
    /// It has the shape of a digest (`algorithm:hex`) but is not a valid sha256 digest.
    Digest,
    /// It is neither a tag nor a digest.
    Tag,
}

/// Parses the `<reference>` of `/v2/<name>/manifests/<reference>`.
pub fn object(reference: &str) -> Result<Object, BadObject> {
    if reference.contains(':') {
        return reference
            .parse()
            .map(Object::Digest)
            .map_err(|_| BadObject::Digest);
    }
    if valid_tag(reference) {
        Ok(Object::Tag(reference.to_string()))
    } else {
        Err(BadObject::Tag)
    }
}

/// The path a client uses for `repository` (a normalised `registry/path`) at this endpoint:
/// `library/busybox` for `docker.io/library/busybox`, `quay.io/org/app` for `quay.io/org/app`.
pub fn client_name(repository: &Repository) -> String {
    let path = &repository.path;
    let first = path.split('/').next().unwrap_or(path);
    if repository.domain == "docker.io" && !looks_like_host(first) {
        path.to_string()
    } else {
        repository.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, ns: Option<&str>) -> String {
        repository(name, ns)
            .unwrap_or_else(|e| panic!("{name} {ns:?}: {e}"))
            .to_string()
    }

    #[test]
    fn names_become_repositories_as_docker_references_do() {
        let cases = [
            ("library/busybox", None, "docker.io/library/busybox"),
            ("busybox", None, "docker.io/library/busybox"),
            (
                "rancher/mirrored-pause",
                None,
                "docker.io/rancher/mirrored-pause",
            ),
            ("quay.io/org/app", None, "quay.io/org/app"),
            ("localhost:5000/x", None, "localhost:5000/x"),
            ("localhost/x/y", None, "localhost/x/y"),
            (
                "registry.example.com/tools/busybox",
                None,
                "registry.example.com/tools/busybox",
            ),
            (
                "docker.io/library/busybox",
                None,
                "docker.io/library/busybox",
            ),
            // containerd's mirror requests carry the registry in ns=.
            (
                "library/busybox",
                Some("docker.io"),
                "docker.io/library/busybox",
            ),
            ("busybox", Some("docker.io"), "docker.io/library/busybox"),
            ("org/app", Some("quay.io"), "quay.io/org/app"),
            ("x", Some("localhost:5000"), "localhost:5000/x"),
            (
                "library/busybox",
                Some("registry-1.docker.io"),
                "docker.io/library/busybox",
            ),
            // With ns=, a first component that looks like a host is part of the path.
            ("a.b/c", Some("example.com"), "example.com/a.b/c"),
        ];
        for (name, ns, want) in cases {
            assert_eq!(repo(name, ns), want, "{name} {ns:?}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for (name, ns) in [
            ("", None),
            ("..", None),
            ("library/..", None),
            ("../etc/passwd", None),
            ("library/./busybox", None),
            ("a//b", None),
            ("Library/busybox", None),
            ("busybox:1", None),
            ("library/busybox@sha256:00", None),
            ("quay.io", None),
            ("localhost:5000", None),
            ("library/busybox", Some("")),
            ("library/busybox", Some("bad/ns")),
            ("library/busybox", Some("a b")),
            ("x:1", Some("docker.io")),
            ("-a/b", None),
            ("a/b\n", None),
        ] {
            assert!(repository(name, ns).is_err(), "{name:?} {ns:?} accepted");
        }
        assert!(repository(&"a".repeat(300), None).is_err());
    }

    #[test]
    fn client_names_map_back_to_their_repository() {
        for full in [
            "docker.io/library/busybox",
            "docker.io/rancher/mirrored-pause",
            "quay.io/org/app",
            "localhost:5000/x",
            "registry.example.com/tools/busybox",
        ] {
            let r = Repository::of(&Reference::parse_normalized(full).unwrap());
            let name = client_name(&r);
            assert_eq!(repo(&name, None), full, "{name}");
        }
        let r = Repository::of(&Reference::parse_normalized("busybox").unwrap());
        assert_eq!(client_name(&r), "library/busybox");
        let r = Repository::of(&Reference::parse_normalized("quay.io/org/app:v1").unwrap());
        assert_eq!(client_name(&r), "quay.io/org/app");
    }

    #[test]
    fn objects_are_tags_or_digests() {
        let d = crate::digest::Digest::of(b"x");
        assert_eq!(object(&d.to_string()), Ok(Object::Digest(d)));
        assert_eq!(object("1.35"), Ok(Object::Tag("1.35".into())));
        assert_eq!(object("sha256:abc"), Err(BadObject::Digest));
        assert_eq!(object("sha512:abc"), Err(BadObject::Digest));
        assert_eq!(object("-x"), Err(BadObject::Tag));
        assert_eq!(object(".."), Err(BadObject::Tag));
        assert_eq!(object(&"a".repeat(129)), Err(BadObject::Tag));
    }
}
