//! The evidence for one image — the cosign signatures an archive carries for its digest — and
//! whether one of them meets a `sigstoreSigned` requirement.
//!
//! Both forms cosign 3.x writes: a simple-signing layer of the `sha256-<hex>.sig` manifest
//! (`verify::simple`, checked exactly as containers/image checks it), and a Sigstore bundle
//! v0.3 in an OCI 1.1 referrer (`verify::bundle`). Each is verified on its own; the policy
//! evaluation decides what several mean.

use super::crypto::{self, CryptoError, PublicKey};
use super::policy::{NamedKey, SigstoreSigned, Trust};
use crate::digest::Digest;
use crate::reference::Reference;
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::fmt;

/// The layer media type of a simple-signing signature.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The artifact type of a bundle referrer (and the media type of its layer).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The layer annotation with the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotation with the signing certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The layer annotation with the certificate chain (PEM, intermediates then root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The layer annotation with the Rekor SET (JSON).
pub const SET_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// One signature found for an image's digest, as an archive carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A layer of a `sha256-<hex>.sig` manifest: the payload blob, exact bytes, and the
    /// layer's annotations (signature, certificate, chain, SET).
    SimpleSigning {
        payload: Vec<u8>,
        annotations: BTreeMap<String, String>,
    },
    /// The layer of a referrer manifest whose `artifactType` is [`BUNDLE_MEDIA_TYPE`]: the
    /// bundle JSON, exact bytes, and the referrer manifest's annotations (unsigned, so never
    /// trusted: carried for reports, such as the predicate type it claims).
    Bundle {
        bundle: Vec<u8>,
        manifest_annotations: BTreeMap<String, String>,
    },
}

/// Why one signature does not meet a requirement. The messages are containers/image's where it
/// has one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not made by the required key or certificate, or the key's evidence (SET, chain) fails.
    #[error("no signature by {signer}: {why}")]
    NotSignedBy { signer: String, why: String },
    /// Made for another image.
    #[error("Signature for digest {signed} does not match (the image is {image})")]
    Digest { signed: String, image: Digest },
    /// Made for a name the requirement's `signedIdentity` does not accept.
    #[error("signed for {signed}, named {named} (signedIdentity {rule})")]
    Identity {
        signed: String,
        named: String,
        rule: String,
    },
    /// A bundle (which signs no name) under a rule that demands a signed tag or digest.
    #[error(
        "a bundle signs a digest and no name, and signedIdentity {rule} requires a signed name"
    )]
    Unnamed { rule: String },
    /// Not a well-formed signature.
    #[error("invalid signature: {0}")]
    Invalid(String),
    /// Several signatures, none accepted: each one's reason.
    #[error("None of the signatures were accepted, reasons: {}", join(.0))]
    NoneAccepted(Vec<Rejection>),
}

/// Reasons, `; `-separated (containers/image's list of rejections).
fn join(rejections: &[Rejection]) -> String {
    let reasons: Vec<String> = rejections.iter().map(|r| r.to_string()).collect();
    reasons.join("; ")
}

/// A signature that meets a requirement: by whom, and what it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The key's path (or `keyData`), or the certificate's subject.
    pub signer: String,
    /// The form and what it binds: `simple signing, identity docker.io/library/nginx:1.27`,
    /// `bundle, digest only, no signed identity`.
    pub evidence: String,
}

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signed by {} ({})", self.signer, self.evidence)
    }
}

/// What one signature says about one requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted(Accepted),
    Rejected(Rejection),
    /// Not an image signature (a bundle with another predicate type: an attestation); it
    /// neither meets nor fails a requirement.
    NotASignature,
}

/// The image a signature is checked for.
pub(crate) struct Subject<'a> {
    pub(crate) name: &'a Reference,
    pub(crate) digest: &'a Digest,
    /// Now, in seconds since the epoch (when a `pki` certificate must be valid).
    pub(crate) now: u64,
}

impl Signature {
    /// Checks this signature against one requirement.
    pub(crate) fn check(&self, req: &SigstoreSigned, image: &Subject<'_>) -> Outcome {
        match self {
            Signature::SimpleSigning {
                payload,
                annotations,
            } => match super::simple::check(req, payload, annotations, image) {
                Ok(a) => Outcome::Accepted(a),
                Err(r) => Outcome::Rejected(r),
            },
            Signature::Bundle { bundle, .. } => super::bundle::check(req, bundle, image),
        }
    }
}

/// A key a signature may be checked with, and who it stands for.
pub(crate) struct SignerKey<'a> {
    pub(crate) key: std::borrow::Cow<'a, PublicKey>,
    pub(crate) signer: String,
}

impl<'a> From<&'a NamedKey> for SignerKey<'a> {
    /// A key of the policy, named as the policy names it.
    fn from(k: &'a NamedKey) -> SignerKey<'a> {
        SignerKey {
            key: std::borrow::Cow::Borrowed(&k.key),
            signer: k.label.clone(),
        }
    }
}

/// "no signature by …" for this requirement.
pub(crate) fn not_signed(req: &SigstoreSigned, why: impl fmt::Display) -> Rejection {
    Rejection::NotSignedBy {
        signer: req.signer(),
        why: why.to_string(),
    }
}

/// The key of a signing certificate, once the requirement's CA vouches for it at `at`
/// (seconds since the epoch): the path to a root for code signing, then the Fulcio issuer and
/// email, or the PKI email and host name. `chain` holds intermediates the signature carries.
pub(crate) fn certificate_key<'a>(
    req: &SigstoreSigned,
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'static>],
    at: u64,
) -> Result<SignerKey<'a>, Rejection> {
    let not = |why: CryptoError| not_signed(req, why);
    let facts = crypto::leaf(leaf).map_err(not)?;
    let time = crypto::unix_time(at);
    match &req.trust {
        Trust::Fulcio(f) => {
            crypto::verify_path(leaf, &f.roots, chain, time).map_err(not)?;
            let issuer = facts.issuer.map_err(not)?;
            if issuer != f.oidc_issuer {
                let why = format!("Unexpected Fulcio OIDC issuer {issuer:?}");
                return Err(not_signed(req, why));
            }
            if !facts.emails.contains(&f.subject_email) {
                return Err(not_signed(
                    req,
                    missing_email(&f.subject_email, &facts.emails),
                ));
            }
            Ok(SignerKey {
                key: std::borrow::Cow::Owned(facts.key),
                signer: format!("{} (Fulcio, {issuer})", f.subject_email),
            })
        }
        Trust::Pki(p) => {
            let mut intermediates = p.intermediates.clone();
            intermediates.extend_from_slice(chain);
            crypto::verify_path(leaf, &p.roots, &intermediates, time).map_err(not)?;
            if let Some(email) = &p.subject_email {
                if !facts.emails.contains(email) {
                    return Err(not_signed(req, missing_email(email, &facts.emails)));
                }
            }
            if let Some(host) = &p.subject_hostname {
                crypto::verify_hostname(leaf, host)
                    .map_err(|e| not_signed(req, format!("Unexpected subject hostname: {e}")))?;
            }
            Ok(SignerKey {
                key: std::borrow::Cow::Owned(facts.key),
                signer: req.signer(),
            })
        }
        Trust::Keys(_) => Err(not_signed(req, "the requirement names keys, not a CA")),
    }
}

/// containers/image's message for a certificate without the required email.
fn missing_email(email: &str, emails: &[String]) -> String {
    format!("Required email {email:?} not found (got {emails:?})")
}

#[cfg(test)]
pub(crate) mod testkit;
