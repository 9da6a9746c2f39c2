//! The decision for one image: its scope's requirements, each met or not by the signatures
//! found for its digest, as containers/image's `IsRunningImageAllowed` decides it.

use super::policy::{Policy, Requirement, SigstoreSigned};
use super::signature::{not_signed, Accepted, Outcome, Rejection, Signature, Subject};
use crate::digest::Digest;
use crate::reference::Reference;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An image to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The name it is imported under (what scopes and `signedIdentity` are matched against).
    pub name: Reference,
    /// Its target: the manifest, or for a multi-platform image the index. A signature on the
    /// index covers every platform (the index pins each manifest by digest); signatures made
    /// only for a platform's manifest do not count for the image.
    pub digest: Digest,
    /// The signatures found for that digest: simple-signing layers (those of media type
    /// [`SIMPLE_SIGNING_MEDIA_TYPE`](super::signature::SIMPLE_SIGNING_MEDIA_TYPE) only) and
    /// bundles, in any order; the first one a requirement accepts meets it.
    pub signatures: Vec<Signature>,
}

/// What the policy says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every requirement of the scope is met; `met` says what each was and how it was met,
    /// one line per requirement, in policy order (`sigstoreSigned /etc/keys/site.pub,
    /// signedIdentity matchRepository: signed by /etc/keys/site.pub (simple signing, identity
    /// registry.example.com/app)`).
    Allowed { scope: String, met: Vec<String> },
    /// A requirement is not met: the first, in policy order; `requirement` is what it asks,
    /// `why` the reason ("no signature by /etc/keys/site.pub: …", "signed for
    /// docker.io/library/nginx:1.27, named docker.io/evil/nginx:1.27 …", "Running image … is
    /// rejected by policy.").
    Refused {
        scope: String,
        requirement: String,
        why: String,
    },
}

impl Verdict {
    /// Whether the image may be imported.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }

    /// The scope that decided (`transports.docker["docker.io/library"]`, `default`).
    pub fn scope(&self) -> &str {
        match self {
            Verdict::Allowed { scope, .. } | Verdict::Refused { scope, .. } => scope,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed { scope, met } => {
                write!(f, "allowed by policy scope {scope}: {}", met.join("; "))
            }
            Verdict::Refused {
                scope,
                requirement,
                why,
            } => write!(
                f,
                "refused by policy scope {scope}, requirement {requirement}: {why}"
            ),
        }
    }
}

impl Policy {
    /// Decides on `image` now (the time only matters to `pki` certificates).
    pub fn evaluate(&self, image: &Candidate) -> Verdict {
        self.evaluate_at(image, SystemTime::now())
    }

    /// Decides on `image` as of `now`: deterministic, no I/O (every key was read at load).
    pub fn evaluate_at(&self, image: &Candidate, now: SystemTime) -> Verdict {
        let (scope, requirements) = self.scope_for(&image.name);
        let subject = Subject {
            name: &image.name,
            digest: &image.digest,
            now: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut met = Vec::new();
        for req in requirements {
            let refused = |why: String| Verdict::Refused {
                scope: scope.clone(),
                requirement: req.to_string(),
                why,
            };
            match req {
                Requirement::InsecureAcceptAnything => {
                    met.push(format!("{req}: accepted without checks"));
                }
                Requirement::Reject => {
                    let name = &image.name;
                    return refused(format!("Running image {name} is rejected by policy."));
                }
                Requirement::SigstoreSigned(s) => {
                    match sigstore_signed(s, &image.signatures, &subject) {
                        Ok(accepted) => met.push(format!("{req}: {accepted}")),
                        Err(rejection) => return refused(rejection.to_string()),
                    }
                }
            }
        }
        Verdict::Allowed { scope, met }
    }
}

/// One `sigstoreSigned` requirement: met by the first signature accepted; otherwise why not,
/// in containers/image's words (`isRunningImageAllowed`).
fn sigstore_signed(
    req: &SigstoreSigned,
    signatures: &[Signature],
    image: &Subject<'_>,
) -> Result<Accepted, Rejection> {
    let mut rejections: Vec<Rejection> = Vec::new();
    let mut attachments = 0;
    for sig in signatures {
        match sig.check(req, image) {
            Outcome::Accepted(a) => return Ok(a),
            Outcome::Rejected(r) => rejections.push(r),
            Outcome::NotASignature => attachments += 1,
        }
    }
    Err(match rejections.len() {
        0 if attachments == 0 => {
            not_signed(req, "A signature was required, but no signature exists")
        }
        0 => not_signed(
            req,
            format_args!(
                "A signature was required, but no signature exists (0 non-sigstore signatures, {attachments} sigstore non-signature attachments)"
            ),
        ),
        1 => rejections.remove(0),
        _ => Rejection::NoneAccepted(rejections),
    })
}

#[cfg(test)]
mod tests;
