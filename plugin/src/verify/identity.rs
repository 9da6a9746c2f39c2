//! `signedIdentity`: whether the name a signature was made for is acceptable for the name an
//! image is imported under, with containers/image's six rules (`policy_reference_match.go`).
//!
//! Names on both sides are Docker references normalised as `docker/reference` does
//! (`busybox` → `docker.io/library/busybox`). A signed name may be a bare repository, carry a
//! tag, a digest, or both; an image's name always has a tag or a digest (containerd's names).

use crate::digest::Digest;
use crate::reference::{valid_tag, InvalidReference, Reference};
use std::fmt;

/// A `signedIdentity` rule of a `sigstoreSigned` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// Tag or digest of the signature equal to the image's name.
    MatchExact,
    /// The default: the same tag when the image is named by tag, the same repository when it
    /// is named by digest; a signature for a bare repository never matches.
    MatchRepoDigestOrExact,
    /// The same repository, whatever the tag or digest.
    MatchRepository,
    /// The signature names exactly `docker_reference` (which has a tag or digest).
    ExactReference { docker_reference: String },
    /// The signature names `docker_repository`'s repository.
    ExactRepository { docker_repository: String },
    /// The image's name with `prefix` replaced by `signed_prefix`, then
    /// `MatchRepoDigestOrExact`.
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

/// Why a `signedIdentity` value is refused at load.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// An `exactReference`/`exactRepository` value that is no reference.
    #[error("Invalid format of {field}: {source}")]
    Invalid {
        field: &'static str,
        source: InvalidReference,
    },
    /// An `exactReference` without tag or digest.
    #[error("dockerReference {0:?} contains neither a tag nor digest")]
    NameOnly(String),
    /// A `remapIdentity` prefix that is neither a host nor a repository namespace.
    #[error("prefix {0:?} is not valid")]
    Prefix(String),
}

impl SignedIdentity {
    /// `exactReference`, validated as containers/image does at load.
    pub fn exact_reference(r: &str) -> Result<SignedIdentity, IdentityError> {
        let parsed = DockerRef::parse(r).map_err(|source| IdentityError::Invalid {
            field: "dockerReference",
            source,
        })?;
        if parsed.is_name_only() {
            return Err(IdentityError::NameOnly(r.to_string()));
        }
        Ok(SignedIdentity::ExactReference {
            docker_reference: r.to_string(),
        })
    }

    /// `exactRepository`, validated as containers/image does at load.
    pub fn exact_repository(r: &str) -> Result<SignedIdentity, IdentityError> {
        DockerRef::parse(r).map_err(|source| IdentityError::Invalid {
            field: "dockerRepository",
            source,
        })?;
        Ok(SignedIdentity::ExactRepository {
            docker_repository: r.to_string(),
        })
    }

    /// `remapIdentity`; each prefix is a host (`host[:port]`) or a repository namespace with
    /// its host (`host/ns…`), never normalised.
    pub fn remap(prefix: &str, signed_prefix: &str) -> Result<SignedIdentity, IdentityError> {
        for p in [prefix, signed_prefix] {
            if !valid_prefix(p) {
                return Err(IdentityError::Prefix(p.to_string()));
            }
        }
        Ok(SignedIdentity::RemapIdentity {
            prefix: prefix.to_string(),
            signed_prefix: signed_prefix.to_string(),
        })
    }

    /// The rule's name in policy.json.
    pub fn type_name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference { .. } => "exactReference",
            SignedIdentity::ExactRepository { .. } => "exactRepository",
            SignedIdentity::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// Whether a bundle, which signs a digest and no name, can satisfy this rule: not when the
    /// rule demands one exact tag or digest named by the signer (`matchExact`,
    /// `exactReference`).
    pub fn accepts_unnamed(&self) -> bool {
        !matches!(
            self,
            SignedIdentity::MatchExact | SignedIdentity::ExactReference { .. }
        )
    }

    /// Whether a signature made for `signed` is acceptable for an image named `image`. A
    /// signed name that does not parse never matches.
    pub fn matches(&self, image: &Reference, signed: &str) -> bool {
        let Ok(sig) = DockerRef::parse(signed) else {
            return false;
        };
        let intended = DockerRef::from_reference(image);
        match self {
            SignedIdentity::MatchExact => {
                !intended.is_name_only() && !sig.is_name_only() && sig == intended
            }
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(&intended, &sig),
            SignedIdentity::MatchRepository => sig.name == intended.name,
            SignedIdentity::ExactReference { docker_reference } => {
                match DockerRef::parse(docker_reference) {
                    Ok(want) => !want.is_name_only() && !sig.is_name_only() && sig == want,
                    Err(_) => false,
                }
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                match DockerRef::parse(docker_repository) {
                    Ok(want) => sig.name == want.name,
                    Err(_) => false,
                }
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => match remap(&intended, prefix, signed_prefix) {
                Some(remapped) => repo_digest_or_exact(&remapped, &sig),
                None => false,
            },
        }
    }
}

impl fmt::Display for SignedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignedIdentity::ExactReference { docker_reference } => {
                write!(f, "exactReference {docker_reference}")
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                write!(f, "exactRepository {docker_repository}")
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => write!(f, "remapIdentity {prefix} → {signed_prefix}"),
            other => f.write_str(other.type_name()),
        }
    }
}

/// `matchRepoDigestOrExactReferenceValues`.
fn repo_digest_or_exact(intended: &DockerRef, sig: &DockerRef) -> bool {
    if sig.is_name_only() {
        return false;
    }
    if intended.tag.is_some() {
        sig == intended
    } else if intended.digest.is_some() {
        sig.name == intended.name
    } else {
        false
    }
}

/// `remapReferencePrefix`: the name with its first `prefix` replaced, when the repository is
/// `prefix` or below it; `None` when the result is not a canonical reference.
fn remap(intended: &DockerRef, prefix: &str, signed_prefix: &str) -> Option<DockerRef> {
    let name = &intended.name;
    let below = name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'/');
    if !below {
        return Some(intended.clone());
    }
    let rewritten = intended.to_string().replacen(prefix, signed_prefix, 1);
    let parsed = DockerRef::parse(&rewritten).ok()?;
    // `reference.ParseNamed`: the rewritten string must already be in canonical form.
    (parsed.to_string() == rewritten).then_some(parsed)
}

/// A remapping prefix (`validateIdentityRemappingPrefix`): a registry host, or `host/path…`
/// whose path components are those of a repository name.
fn valid_prefix(p: &str) -> bool {
    if p.contains('@') {
        return false;
    }
    match p.split_once('/') {
        None => valid_domain(p),
        Some((host, path)) => {
            valid_domain(host)
                && !path.contains(':')
                && Reference::parse_normalized(&format!("example.com/{path}")).is_ok()
        }
    }
}

/// A registry host as `docker/reference`'s domain grammar: DNS-like labels (a single label
/// such as `localhost` or `busybox` included), a bracketed IPv6 address, an optional port.
fn valid_domain(d: &str) -> bool {
    if d.contains(['.', ':']) || d == "localhost" || d.bytes().any(|b| b.is_ascii_uppercase()) {
        // What a reference reads as its registry host, and keeps as it is.
        Reference::parse_normalized(&format!("{d}/x"))
            .map(|r| r.domain() == d || d == "index.docker.io")
            .unwrap_or(false)
    } else {
        let b = d.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    }
}

/// A Docker reference as `docker/reference.ParseNormalizedNamed` gives it: normalised
/// repository, optional tag, optional digest (both may be present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DockerRef {
    name: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl DockerRef {
    /// Parses and normalises; the error is why the string is no reference.
    pub(crate) fn parse(s: &str) -> Result<DockerRef, InvalidReference> {
        let invalid = |why| InvalidReference {
            reference: s.to_string(),
            why,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let d = d.parse::<Digest>();
                (
                    r,
                    Some(d.map_err(|_| invalid("the digest is not sha256:<64 hex>"))?),
                )
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if tag.is_some_and(|t| !valid_tag(t)) {
            return Err(invalid("the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        // The repository part alone, normalised (and checked) as containerd and Docker do.
        let repo = Reference::parse_normalized(name).map_err(|e| invalid(e.why))?;
        Ok(DockerRef {
            name: repo.repository(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    fn from_reference(r: &Reference) -> DockerRef {
        DockerRef::parse(&r.to_string()).expect("a Reference is a valid Docker reference")
    }

    fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
