//! The verification policy: containers-policy.json(5), the `policy.json` of containers/image
//! (podman, skopeo, CRI-O), read as strictly as containers/image reads it, with every key and
//! CA it names read and parsed at load.
//!
//! Only `default` and the `transports.docker` scopes apply to images airlift imports. Other
//! transports' scopes are checked as strictly (so a file containers/image refuses is refused
//! here too), their key files left unread, and then ignored; their scope names are not checked
//! (containers/image checks those of the transports it knows). Relative key paths are taken
//! relative to the policy file's directory (containers/image takes them relative to the
//! working directory, which a daemon's is not a meaningful one).
//!
//! airlift refuses at load what it cannot verify, rather than refusing every image later:
//! `signedBy` (GPG) and `signedBaseLayer` requirements where they would apply, and keys of
//! other types than ECDSA P-256/P-384, RSA and Ed25519 (P-521 among them).

mod parse;
mod scope;

use super::crypto::{CryptoError, PublicKey};
use super::identity::{IdentityError, SignedIdentity};
use super::json::JsonError;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A policy ready to evaluate images against: every key parsed.
#[derive(Debug)]
pub struct Policy {
    /// `default`: the requirements of an image no `transports.docker` scope matches.
    default: Vec<Requirement>,
    /// `transports.docker`: scope → requirements.
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// One requirement; all of a scope's must hold.
#[derive(Debug)]
pub enum Requirement {
    /// `insecureAcceptAnything`.
    InsecureAcceptAnything,
    /// `reject`.
    Reject,
    /// `sigstoreSigned`.
    SigstoreSigned(Box<SigstoreSigned>),
}

/// A `sigstoreSigned` requirement: who must have signed, which transparency log vouches for
/// it, and which names the signature may have been made for.
#[derive(Debug)]
pub struct SigstoreSigned {
    /// Whose signature counts.
    pub(crate) trust: Trust,
    /// Rekor public keys (`rekorPublicKey…`); empty when none is configured.
    pub(crate) rekor: Vec<PublicKey>,
    /// `signedIdentity`.
    pub(crate) identity: SignedIdentity,
}

/// The key source of a `sigstoreSigned` requirement.
#[derive(Debug)]
pub(crate) enum Trust {
    /// `keyPath`, `keyPaths`, `keyData`, `keyDatas`: any of these keys.
    Keys(Vec<NamedKey>),
    /// `fulcio`: a certificate from this CA, for this issuer and email, at the time a Rekor
    /// SET proves.
    Fulcio(Fulcio),
    /// `pki`: a certificate chaining to these roots, for this email and/or host name, now.
    Pki(Pki),
}

/// A public key and where the policy has it from (its path, or `keyData`).
#[derive(Debug)]
pub(crate) struct NamedKey {
    pub(crate) label: String,
    pub(crate) key: PublicKey,
}

/// The `fulcio` object.
#[derive(Debug)]
pub(crate) struct Fulcio {
    pub(crate) roots: Vec<TrustAnchor<'static>>,
    /// `caPath`, or `caData`.
    pub(crate) ca: String,
    pub(crate) oidc_issuer: String,
    pub(crate) subject_email: String,
}

/// The `pki` object.
#[derive(Debug)]
pub(crate) struct Pki {
    pub(crate) roots: Vec<TrustAnchor<'static>>,
    pub(crate) intermediates: Vec<CertificateDer<'static>>,
    /// `caRootsPath`, or `caRootsData`.
    pub(crate) ca: String,
    pub(crate) subject_email: Option<String>,
    pub(crate) subject_hostname: Option<String>,
}

/// What a key or CA file of a policy is for, as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// `keyPath`, `keyPaths`, `keyData`, `keyDatas`.
    PublicKey,
    /// `rekorPublicKey…`.
    RekorKey,
    /// `fulcio.caPath`, `fulcio.caData`.
    FulcioCa,
    /// `pki.caRootsPath`, `pki.caRootsData`.
    PkiRoots,
    /// `pki.caIntermediatesPath`, `pki.caIntermediatesData`.
    PkiIntermediates,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::PublicKey => "public key",
            KeyRole::RekorKey => "Rekor public key",
            KeyRole::FulcioCa => "Fulcio CA",
            KeyRole::PkiRoots => "PKI CA roots",
            KeyRole::PkiIntermediates => "PKI CA intermediates",
        })
    }
}

/// Why a policy cannot be used. Every message names the policy file and, past the file's
/// syntax, where in it (`at`: `transports.docker["docker.io"][0]`, which names the scope and
/// the requirement); a key or CA at fault is named by its path (or its `…Data` field).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file cannot be read.
    #[error("cannot read policy {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Not JSON, a repeated key, an unknown or missing key, a value of the wrong type.
    #[error("invalid policy {file}: {source}")]
    Json { file: String, source: JsonError },
    /// A rule of containers-policy.json(5) broken (containers/image's message).
    #[error("invalid policy {file}: {at}: {why}")]
    Invalid {
        file: String,
        at: String,
        why: String,
    },
    /// A `signedIdentity` refused (`at` ends in `.signedIdentity`).
    #[error("invalid policy {file}: {at}: {source}")]
    Identity {
        file: String,
        at: String,
        source: IdentityError,
    },
    /// A requirement type airlift does not verify.
    #[error("policy {file}: {at}: {kind} requirements are not supported by airlift ({why})")]
    Unsupported {
        file: String,
        at: String,
        kind: &'static str,
        why: &'static str,
    },
    /// A key or CA file that cannot be read.
    #[error("policy {file}: {at}: cannot read {role} {path}: {source}")]
    KeyFile {
        file: String,
        at: String,
        role: KeyRole,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key or CA that does not parse or cannot be used (boxed: the largest cause).
    #[error("policy {file}: {at}: {role} {key}: {source}")]
    Key {
        file: String,
        at: String,
        role: KeyRole,
        key: String,
        source: Box<CryptoError>,
    },
}

impl Policy {
    /// Reads and checks the policy at `path`, and every key file it names.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse::Loader::new(&file, base).policy(&text)
    }

    /// Checks a policy given as text; relative key paths are taken from `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Policy, PolicyError> {
        parse::Loader::new("(inline policy)", base_dir).policy(text.as_bytes())
    }
}

impl fmt::Display for Requirement {
    /// What the requirement asks, for messages: `reject`, `sigstoreSigned keyPath
    /// /etc/keys/site.pub`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::InsecureAcceptAnything => f.write_str("insecureAcceptAnything"),
            Requirement::Reject => f.write_str("reject"),
            Requirement::SigstoreSigned(s) => {
                write!(f, "sigstoreSigned ")?;
                match &s.trust {
                    Trust::Keys(keys) => {
                        let labels: Vec<_> = keys.iter().map(|k| k.label.as_str()).collect();
                        write!(f, "{}", labels.join(", "))?;
                    }
                    Trust::Fulcio(c) => write!(
                        f,
                        "fulcio (CA {}, issuer {}, email {})",
                        c.ca, c.oidc_issuer, c.subject_email
                    )?,
                    Trust::Pki(p) => write!(f, "pki (CA roots {}, {})", p.ca, p.subject())?,
                }
                if !s.rekor.is_empty() {
                    write!(f, " with a Rekor SET")?;
                }
                write!(f, ", signedIdentity {}", s.identity)
            }
        }
    }
}

impl SigstoreSigned {
    /// Who must have signed, for "no signature by …".
    pub(crate) fn signer(&self) -> String {
        match &self.trust {
            Trust::Keys(keys) if keys.len() == 1 => keys[0].label.clone(),
            Trust::Keys(keys) => {
                let labels: Vec<_> = keys.iter().map(|k| k.label.as_str()).collect();
                format!("any of {}", labels.join(", "))
            }
            Trust::Fulcio(c) => format!(
                "a Fulcio certificate for {} from {} (CA {})",
                c.subject_email, c.oidc_issuer, c.ca
            ),
            Trust::Pki(p) => format!("a certificate for {} (CA roots {})", p.subject(), p.ca),
        }
    }
}

impl Pki {
    /// The subject a certificate must name.
    fn subject(&self) -> String {
        match (&self.subject_email, &self.subject_hostname) {
            (Some(e), Some(h)) => format!("{e} and {h}"),
            (Some(e), None) => e.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
