//! Sigstore bundles v0.3 (what `cosign sign` writes by default from 3.0 on): a DSSE envelope
//! over an in-toto statement whose subject is the image's digest, signed by a key or by a
//! certificate's key.
//!
//! A bundle signs a digest and no name, so what it can prove differs from a simple-signing
//! signature: it meets a `sigstoreSigned` requirement on its signer and digest alone (reported
//! as "digest only, no signed identity"), except under the `signedIdentity` rules that demand
//! a signed tag or digest (`matchExact`, `exactReference`), which no bundle can meet. A site
//! binds names to bundle-signed digests with the lock file.
//!
//! The public key hint in a bundle is ignored: the policy's keys are tried. A certificate is
//! checked as for simple signing; a `fulcio` requirement needs a transparency-log entry with a
//! SET (its `integratedTime` is when the certificate must have been valid), and Rekor keys
//! configured with plain keys require one too.

use super::crypto;
use super::policy::{SigstoreSigned, Trust};
use super::rekor::{self, RekorError, TlogEntry};
use super::signature::{
    certificate_key, not_signed, Accepted, Outcome, Rejection, SignerKey, Subject,
    BUNDLE_MEDIA_TYPE,
};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The DSSE payload type of an in-toto statement.
const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The in-toto statement types accepted.
const STATEMENT_TYPES: &[&str] = &[
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
];
/// The predicate of an image signature made by `cosign sign`.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<StatementSubject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct StatementSubject {
    digest: BTreeMap<String, String>,
}

/// Protobuf JSON `bytes`: base64, standard or URL-safe, padded or not.
fn b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let engine = if s.contains(['-', '_']) { &URL } else { &STD };
    engine.decode(s)
}

/// A bundle's `what` field, decoded.
fn field(what: &str, s: &str) -> Result<Vec<u8>, Rejection> {
    b64(s).map_err(|e| invalid(format_args!("{what}: base64 decoding: {e}")))
}

/// DSSE's pre-authentication encoding: what the signature signs.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Checks one bundle against a requirement for `image`.
pub(crate) fn check(req: &SigstoreSigned, bundle: &[u8], image: &Subject<'_>) -> Outcome {
    let verified = Signed::parse(bundle).and_then(|signed| match signed {
        Some(signed) => signed.verify(req, image).map(Some),
        None => Ok(None),
    });
    match verified {
        Ok(Some(a)) => Outcome::Accepted(a),
        Ok(None) => Outcome::NotASignature,
        Err(r) => Outcome::Rejected(r),
    }
}

/// A malformed bundle.
fn invalid(why: impl std::fmt::Display) -> Rejection {
    Rejection::Invalid(format!("bundle: {why}"))
}

/// What a bundle signs and how (untrusted until [`Signed::verify`]).
struct Signed {
    /// The in-toto statement, exact bytes.
    payload: Vec<u8>,
    statement: Statement,
    /// The DSSE signature over the PAE of `payload`.
    signature: Vec<u8>,
    material: Material,
}

impl Signed {
    /// The bundle's parts, or `None` for an attestation (an in-toto statement of another
    /// predicate than an image signature's).
    fn parse(bundle: &[u8]) -> Result<Option<Signed>, Rejection> {
        let b: Bundle = serde_json::from_slice(bundle).map_err(invalid)?;
        if b.media_type != BUNDLE_MEDIA_TYPE {
            return Err(invalid(format_args!(
                "media type {:?}, airlift verifies {BUNDLE_MEDIA_TYPE}",
                b.media_type
            )));
        }
        let Some(env) = b.dsse_envelope else {
            return Err(invalid(if b.message_signature.is_some() {
                "a message signature, not a DSSE envelope (cosign signs images with DSSE)"
            } else {
                "no DSSE envelope"
            }));
        };
        if env.payload_type != IN_TOTO {
            let t = env.payload_type;
            return Err(invalid(format_args!("payload type {t:?}, not {IN_TOTO}")));
        }
        let payload = field("payload", &env.payload)?;
        let statement: Statement = serde_json::from_slice(&payload)
            .map_err(|e| invalid(format_args!("in-toto statement: {e}")))?;
        if !STATEMENT_TYPES.contains(&statement.kind.as_str()) {
            let t = statement.kind;
            return Err(invalid(format_args!(
                "statement type {t:?} is not in-toto's"
            )));
        }
        if statement.predicate_type != SIGN_PREDICATE {
            return Ok(None);
        }
        let [signature] = env.signatures.as_slice() else {
            return Err(invalid(format_args!(
                "a DSSE envelope must carry exactly one signature, this one has {}",
                env.signatures.len()
            )));
        };
        let signature = field("signature", &signature.sig)?;
        if b.verification_material.x509_certificate_chain.is_some() {
            return Err(invalid(
                "a v0.3 bundle carries a certificate, never a certificate chain",
            ));
        }
        Ok(Some(Signed {
            payload,
            statement,
            signature,
            material: b.verification_material,
        }))
    }

    /// The signer, the signature, the subject digest, then whether the requirement's
    /// `signedIdentity` can be met by a signature that names no image.
    fn verify(&self, req: &SigstoreSigned, image: &Subject<'_>) -> Result<Accepted, Rejection> {
        let keys = self.keys(req, image)?;
        let signed = pae(IN_TOTO, &self.payload);
        let Some(signer) = keys.iter().find(|k| k.key.verify(&signed, &self.signature)) else {
            return Err(not_signed(
                req,
                "cryptographic signature verification failed",
            ));
        };
        let want = image.digest.hex();
        let subjects = &self.statement.subject;
        if !subjects
            .iter()
            .any(|s| s.digest.get("sha256").map(String::as_str) == Some(want))
        {
            let signed = subjects
                .iter()
                .find_map(|s| s.digest.iter().next())
                .map(|(alg, hex)| format!("{alg}:{hex}"))
                .unwrap_or_else(|| "(no subject)".to_string());
            return Err(Rejection::Digest {
                signed,
                image: image.digest.clone(),
            });
        }
        if !req.identity.accepts_unnamed() {
            return Err(Rejection::Unnamed {
                rule: req.identity.to_string(),
            });
        }
        Ok(Accepted {
            signer: signer.signer.clone(),
            evidence: "bundle, digest only, no signed identity".to_string(),
        })
    }

    /// The keys the signature may be checked with: the policy's (those a logged entry vouches
    /// for, when the policy names Rekor keys), or the certificate's once its CA vouches for it.
    fn keys<'r>(
        &self,
        req: &'r SigstoreSigned,
        image: &Subject<'_>,
    ) -> Result<Vec<SignerKey<'r>>, Rejection> {
        match &req.trust {
            Trust::Keys(keys) => {
                let mut failures = Vec::new();
                let mut usable = Vec::new();
                for k in keys {
                    if !req.rekor.is_empty() {
                        if let Err(e) = self.logged(req, k.key.spki_der()) {
                            failures.push(e.to_string());
                            continue;
                        }
                    }
                    usable.push(SignerKey::from(k));
                }
                if usable.is_empty() {
                    let why = format!(
                        "No public key verified against the transparency log: {}",
                        failures.join(", ")
                    );
                    return Err(not_signed(req, why));
                }
                Ok(usable)
            }
            Trust::Fulcio(_) => {
                let leaf = self.certificate(req)?;
                let time = self.logged(req, &leaf).map_err(|e| not_signed(req, e))?;
                let time = u64::try_from(time).map_err(|_| {
                    not_signed(req, format!("integratedTime {time} is before 1970"))
                })?;
                Ok(vec![certificate_key(req, &leaf, &[], time)?])
            }
            Trust::Pki(_) => {
                let leaf = self.certificate(req)?;
                Ok(vec![certificate_key(req, &leaf, &[], image.now)?])
            }
        }
    }

    /// The signing certificate (v0.3 carries the leaf alone).
    fn certificate(&self, req: &SigstoreSigned) -> Result<CertificateDer<'static>, Rejection> {
        let raw = self
            .material
            .certificate
            .as_ref()
            .ok_or_else(|| not_signed(req, "the bundle carries no certificate"))?;
        let der = field("certificate", &raw.raw_bytes)?;
        crypto::leaf(&der).map_err(|e| not_signed(req, e))?;
        Ok(CertificateDer::from(der))
    }

    /// When a logged entry proves `signer_der` (a key's SubjectPublicKeyInfo or a certificate)
    /// made this signature: the first entry that does; else why the last one does not (a
    /// bundle carries one).
    fn logged(&self, req: &SigstoreSigned, signer_der: &[u8]) -> Result<i64, RekorError> {
        let mut last = RekorError::NoEntry;
        for entry in &self.material.tlog_entries {
            let (sig, payload) = (&self.signature, &self.payload);
            match rekor::verify_dsse_entry(&req.rekor, entry, signer_der, sig, payload) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests;
