//! Rekor signed entry timestamps (SETs), checked offline against the policy's Rekor keys: the
//! log's signature over its entry, and that the entry records this very signature, key and
//! payload. Its time is when the signature existed (what a Fulcio certificate is checked at).
//!
//! Two carriers: the simple-signing annotation `dev.sigstore.cosign/bundle`, checked exactly as
//! containers/image's `VerifyRekorSET` (a `hashedrekord` 0.0.1 entry), and a bundle's
//! `tlogEntries[].inclusionPromise` (a `dsse` 0.0.1 entry, what Rekor records for a DSSE
//! envelope).

use super::crypto::{pem_blocks, PublicKey};
use super::json::{self, Object};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Why a SET does not vouch for a signature (containers/image's words where it has them).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RekorError {
    /// The SET or its entry is not in the expected shape.
    #[error("invalid Rekor SET: {0}")]
    Format(String),
    /// No configured Rekor key signed it.
    #[error("cryptographic signature verification of Rekor SET failed")]
    Signature,
    /// The entry records another key or certificate.
    #[error("publicKey in Rekor SET does not match")]
    Key,
    /// The entry records another signature.
    #[error("signature in Rekor SET does not match")]
    SignatureContent,
    /// The entry records another payload.
    #[error("payload in Rekor SET does not match")]
    Payload,
    /// A bundle without a transparency-log entry, where the policy requires one.
    #[error("the bundle has no transparency log entry, and the policy names Rekor keys")]
    NoEntry,
}

fn format(why: impl Into<String>) -> RekorError {
    RekorError::Format(why.into())
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, RekorError> {
    STANDARD
        .decode(s)
        .map_err(|e| format(format!("{what}: base64 decoding: {e}")))
}

/// Checks the log's signature: ECDSA over SHA-256 of the RFC 8785 canonical form of `payload`.
fn verify_signed_entry(
    rekor_keys: &[PublicKey],
    payload: &Value,
    set: &[u8],
) -> Result<Vec<u8>, RekorError> {
    let canonical = serde_json_canonicalizer::to_vec(payload)
        .map_err(|e| format(format!("canonicalizing Rekor SET JSON: {e}")))?;
    if !rekor_keys.iter().any(|k| k.verify(&canonical, set)) {
        return Err(RekorError::Signature);
    }
    Ok(canonical)
}

/// The DER of the one PEM block in `pem`, which must hold nothing else.
fn single_pem(pem: &[u8], what: &str) -> Result<Vec<u8>, RekorError> {
    let mut blocks = pem_blocks(pem).map_err(|e| format(format!("{what}: {e}")))?;
    match blocks.len() {
        0 => Err(format(format!("{what} is not in PEM format"))),
        1 => Ok(blocks.remove(0).1),
        _ => Err(format(format!("{what} has trailing data"))),
    }
}

/// A SET from the `dev.sigstore.cosign/bundle` annotation, as containers/image's
/// `VerifyRekorSET`. `signer_der` is the DER of the key (SubjectPublicKeyInfo) or certificate
/// that made `signature` over `payload`. Returns the entry's `integratedTime`.
pub fn verify_annotation(
    rekor_keys: &[PublicKey],
    set_json: &str,
    signer_der: &[u8],
    signature: &[u8],
    payload: &[u8],
) -> Result<i64, RekorError> {
    let bad = |e: json::JsonError| format(e.to_string());
    let set = json::parse(set_json.as_bytes()).map_err(bad)?;
    let set = Object::new(&set, "").map_err(bad)?;
    set.exactly(&["SignedEntryTimestamp", "Payload"])
        .map_err(bad)?;
    let set_sig = b64(
        set.required_str("SignedEntryTimestamp").map_err(bad)?,
        "SignedEntryTimestamp",
    )?;
    let canonical = verify_signed_entry(rekor_keys, set.field("Payload").map_err(bad)?, &set_sig)?;

    let entry = json::parse(&canonical).map_err(bad)?;
    let entry = Object::new(&entry, "Payload").map_err(bad)?;
    entry
        .exactly(&["body", "integratedTime", "logIndex", "logID"])
        .map_err(bad)?;
    let time = entry.required_i64("integratedTime").map_err(bad)?;
    entry.required_i64("logIndex").map_err(bad)?;
    entry.required_str("logID").map_err(bad)?;
    let body = b64(entry.required_str("body").map_err(bad)?, "body")?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| format(format!("decoding the body of a Rekor SET payload: {e}")))?;
    let (kind, version) = (&body["kind"], &body["apiVersion"]);
    if kind != "hashedrekord" || version != "0.0.1" {
        return Err(format(format!(
            "unsupported Rekor SET Payload {kind} version {version} (a hashedrekord 0.0.1 is required)"
        )));
    }
    let spec = &body["spec"];
    let recorded = spec["signature"]["publicKey"]["content"]
        .as_str()
        .ok_or_else(|| format(r#"Missing "signature.publicKey" field in hashedrekord"#))?;
    if single_pem(&b64(recorded, "publicKey")?, "publicKey in Rekor SET")? != signer_der {
        return Err(RekorError::Key);
    }
    let recorded_sig = spec["signature"]["content"]
        .as_str()
        .ok_or_else(|| format(r#"Missing "signature" field in hashedrekord"#))?;
    if b64(recorded_sig, "signature.content")? != signature {
        return Err(RekorError::SignatureContent);
    }
    let hash = &spec["data"]["hash"];
    if hash["algorithm"] != "sha256" {
        return Err(format(format!(
            r#"Unexpected "data.hash.algorithm" value {}"#,
            hash["algorithm"]
        )));
    }
    if hash["value"].as_str() != Some(hex::encode(Sha256::digest(payload)).as_str()) {
        return Err(RekorError::Payload);
    }
    Ok(time)
}

/// One transparency-log entry of a bundle (`TransparencyLogEntry`, protobuf JSON).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlogEntry {
    /// int64, as protobuf JSON writes it: a string.
    #[serde(default)]
    pub log_index: Option<Value>,
    #[serde(default)]
    pub log_id: Option<LogId>,
    #[serde(default)]
    pub kind_version: Option<KindVersion>,
    #[serde(default)]
    pub integrated_time: Option<Value>,
    #[serde(default)]
    pub inclusion_promise: Option<InclusionPromise>,
    #[serde(default)]
    pub canonicalized_body: Option<String>,
}

/// The log's key ID (SHA-256 of its key), base64.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogId {
    pub key_id: String,
}

/// The entry's kind and version (`dsse` `0.0.1`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct KindVersion {
    pub kind: String,
    pub version: String,
}

/// The SET of a bundle's entry.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionPromise {
    pub signed_entry_timestamp: String,
}

/// A protobuf-JSON int64: a JSON string of digits, or (leniently) a number.
fn int64(v: &Option<Value>, what: &str) -> Result<i64, RekorError> {
    match v {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| format(format!("{what} is not an int64")))
}

/// A bundle's entry for a DSSE envelope: the SET over `{body, integratedTime, logIndex, logID}`
/// as Rekor signs it, then the `dsse` 0.0.1 body must record this payload's hash, and this
/// signature by this signer. Returns `integratedTime`.
pub fn verify_dsse_entry(
    rekor_keys: &[PublicKey],
    entry: &TlogEntry,
    signer_der: &[u8],
    signature: &[u8],
    payload: &[u8],
) -> Result<i64, RekorError> {
    let promise = entry
        .inclusion_promise
        .as_ref()
        .ok_or_else(|| format("the transparency log entry has no inclusion promise (SET)"))?;
    let body_b64 = entry
        .canonicalized_body
        .as_deref()
        .ok_or_else(|| format("the transparency log entry has no canonicalizedBody"))?;
    let key_id = entry
        .log_id
        .as_ref()
        .ok_or_else(|| format("the transparency log entry has no logId"))?;
    let time = int64(&entry.integrated_time, "integratedTime")?;
    let payload_json = json!({
        "body": body_b64,
        "integratedTime": time,
        "logIndex": int64(&entry.log_index, "logIndex")?,
        "logID": hex::encode(b64(&key_id.key_id, "logId.keyId")?),
    });
    verify_signed_entry(
        rekor_keys,
        &payload_json,
        &b64(&promise.signed_entry_timestamp, "signedEntryTimestamp")?,
    )?;
    let body: Value = serde_json::from_slice(&b64(body_b64, "canonicalizedBody")?)
        .map_err(|e| format(format!("decoding the transparency log entry body: {e}")))?;
    let (kind, version) = (&body["kind"], &body["apiVersion"]);
    if kind != "dsse" || version != "0.0.1" {
        return Err(format(format!(
            "unsupported transparency log entry {kind} version {version} for a DSSE envelope (dsse 0.0.1 is required)"
        )));
    }
    if let Some(kv) = &entry.kind_version {
        if kind != kv.kind.as_str() || version != kv.version.as_str() {
            return Err(format("kindVersion does not match the entry body"));
        }
    }
    let spec = &body["spec"];
    let hash = &spec["payloadHash"];
    if hash["algorithm"] != "sha256"
        || hash["value"].as_str() != Some(hex::encode(Sha256::digest(payload)).as_str())
    {
        return Err(RekorError::Payload);
    }
    let recorded = spec["signatures"]
        .as_array()
        .ok_or_else(|| format("the dsse entry has no signatures"))?;
    let mut key_seen = false;
    for s in recorded {
        let (Some(sig), Some(verifier)) = (s["signature"].as_str(), s["verifier"].as_str()) else {
            return Err(format("a dsse entry signature lacks signature or verifier"));
        };
        if single_pem(&b64(verifier, "verifier")?, "verifier in the dsse entry")? != signer_der {
            continue;
        }
        key_seen = true;
        if b64(sig, "signature")? == signature {
            return Ok(time);
        }
    }
    Err(if key_seen {
        RekorError::SignatureContent
    } else {
        RekorError::Key
    })
}

#[cfg(test)]
mod tests;
