//! Simple-signing signatures (the `.sig` form), verified exactly as containers/image verifies a
//! sigstore signature (`policy_eval_sigstore.go`, `internal/sigstore_payload.go`): the key or
//! certificate (with its Rekor SET when the policy names Rekor keys), the signature over the
//! payload's exact bytes, then the payload read strictly, its digest, its identity.

use super::crypto;
use super::json::{self, Object};
use super::policy::{SigstoreSigned, Trust};
use super::rekor;
use super::signature::{
    certificate_key, not_signed, Accepted, Rejection, SignerKey, Subject, CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION, SET_ANNOTATION, SIGNATURE_ANNOTATION,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `critical.type` of a cosign container image signature.
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// What a payload claims (untrusted until its signature verifies).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) digest: String,
    pub(crate) reference: String,
}

/// Checks one simple-signing signature against a requirement for `image`.
pub(crate) fn check(
    req: &SigstoreSigned,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
    image: &Subject<'_>,
) -> Result<Accepted, Rejection> {
    let b64_sig = annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| Rejection::Invalid(format!("missing {SIGNATURE_ANNOTATION} annotation")))?;
    let signature = STANDARD
        .decode(b64_sig)
        .map_err(|e| Rejection::Invalid(format!("base64 decoding: {e}")))?;
    let annotation = |key: &str| {
        annotations
            .get(key)
            .ok_or_else(|| not_signed(req, format!("missing {key} annotation")))
    };

    let keys: Vec<SignerKey> = match &req.trust {
        Trust::Keys(keys) if req.rekor.is_empty() => keys.iter().map(SignerKey::from).collect(),
        Trust::Keys(keys) => {
            // The SET names one key; only that one may then verify the payload.
            let set = annotation(SET_ANNOTATION)?;
            let mut failures = Vec::new();
            let found = keys.iter().find(|k| {
                let r = rekor::verify_annotation(
                    &req.rekor,
                    set,
                    k.key.spki_der(),
                    &signature,
                    payload,
                );
                r.map_err(|e| failures.push(e.to_string())).is_ok()
            });
            match found {
                Some(k) => vec![SignerKey::from(k)],
                None => {
                    return Err(not_signed(
                        req,
                        format!(
                            "No public key verified against the RekorSET: {}",
                            failures.join(", ")
                        ),
                    ))
                }
            }
        }
        Trust::Fulcio(_) => {
            let set = annotation(SET_ANNOTATION)?;
            let leaf = leaf_certificate(req, annotation(CERTIFICATE_ANNOTATION)?)?;
            let chain = chain(req, annotations)?;
            let time = rekor::verify_annotation(&req.rekor, set, &leaf, &signature, payload)
                .map_err(|e| not_signed(req, e.to_string()))?;
            let time = u64::try_from(time)
                .map_err(|_| not_signed(req, format!("Rekor SET time {time} is before 1970")))?;
            vec![certificate_key(req, &leaf, &chain, time)?]
        }
        Trust::Pki(_) => {
            let leaf = leaf_certificate(req, annotation(CERTIFICATE_ANNOTATION)?)?;
            let chain = chain(req, annotations)?;
            vec![certificate_key(req, &leaf, &chain, image.now)?]
        }
    };

    let Some(signer) = keys.iter().find(|k| k.key.verify(payload, &signature)) else {
        return Err(not_signed(
            req,
            "cryptographic signature verification failed",
        ));
    };
    let claims = parse_payload(payload)?;
    if claims.digest != image.digest.to_string() {
        return Err(Rejection::Digest {
            signed: claims.digest,
            image: image.digest.clone(),
        });
    }
    if !req.identity.matches(image.name, &claims.reference) {
        return Err(Rejection::Identity {
            signed: claims.reference,
            named: image.name.to_string(),
            rule: req.identity.to_string(),
        });
    }
    Ok(Accepted {
        signer: signer.signer.clone(),
        evidence: format!("simple signing, identity {}", claims.reference),
    })
}

/// The one certificate of the certificate annotation (`parseLeafCertFromPEM`).
fn leaf_certificate(req: &SigstoreSigned, pem: &str) -> Result<CertificateDer<'static>, Rejection> {
    let mut certs = crypto::certificates(pem.as_bytes())
        .map_err(|e| not_signed(req, format!("parsing leaf certificate: {e}")))?;
    if certs.len() != 1 {
        return Err(not_signed(
            req,
            "unexpected multiple certificates present in signature certificate data",
        ));
    }
    Ok(certs.remove(0))
}

/// The intermediates of the chain annotation: all its certificates but the last, which is
/// taken to be the root (and must come from the policy instead).
fn chain(
    req: &SigstoreSigned,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<CertificateDer<'static>>, Rejection> {
    match annotations.get(CHAIN_ANNOTATION).filter(|c| !c.is_empty()) {
        None => Ok(Vec::new()),
        Some(pem) => {
            let mut certs = crypto::certificates(pem.as_bytes())
                .map_err(|e| not_signed(req, format!("loading certificate chain: {e}")))?;
            certs.pop();
            Ok(certs)
        }
    }
}

/// The payload, read as strictly as containers/image reads it
/// (`UntrustedSigstorePayload.strictUnmarshalJSON`).
pub(crate) fn parse_payload(payload: &[u8]) -> Result<Payload, Rejection> {
    let s = |e: json::JsonError| Rejection::Invalid(e.to_string());
    let doc = json::parse(payload).map_err(s)?;
    let top = Object::new(&doc, "payload").map_err(s)?;
    top.exactly(&["critical", "optional"]).map_err(s)?;
    match top.field("optional").map_err(s)? {
        Value::Null => {}
        optional => {
            let o = Object::new(optional, "optional").map_err(s)?;
            o.str("creator").map_err(s)?;
            if let Some(t) = o.get("timestamp") {
                let whole = t.as_i64().is_some()
                    || t.as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.2e18);
                if !whole {
                    let why = "Field optional.timestamp is not an integer";
                    return Err(Rejection::Invalid(why.to_string()));
                }
            }
        }
    }
    let critical = Object::new(top.field("critical").map_err(s)?, "critical").map_err(s)?;
    critical
        .exactly(&["type", "image", "identity"])
        .map_err(s)?;
    let t = critical.required_str("type").map_err(s)?;
    if t != SIGNATURE_TYPE {
        return Err(Rejection::Invalid(format!(
            "Unrecognized signature type {t}"
        )));
    }
    let image = Object::new(critical.field("image").map_err(s)?, "critical.image").map_err(s)?;
    image.exactly(&["docker-manifest-digest"]).map_err(s)?;
    let digest = image.required_str("docker-manifest-digest").map_err(s)?;
    if !valid_digest(digest) {
        let why = format!("invalid docker-manifest-digest value {digest:?}");
        return Err(Rejection::Invalid(why));
    }
    let identity =
        Object::new(critical.field("identity").map_err(s)?, "critical.identity").map_err(s)?;
    identity.exactly(&["docker-reference"]).map_err(s)?;
    Ok(Payload {
        digest: digest.to_string(),
        reference: identity
            .required_str("docker-reference")
            .map_err(s)?
            .to_string(),
    })
}

/// A digest as go-digest's `Parse` accepts it: a known algorithm and its hex length.
fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
