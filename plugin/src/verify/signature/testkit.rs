//! Test helpers: the fixtures of `verify/testdata` (real cosign 3.1.1 output, see its README),
//! policies over them, and signatures the tests make themselves with the fixtures' private
//! keys (payloads for other names, forged Rekor SETs, bundles of other shapes).

use crate::digest::Digest;
use crate::reference::Reference;
use crate::verify::policy::SigstoreSigned;
use crate::verify::signature::{Outcome, Rejection, Subject};
use crate::verify::{Candidate, Policy, Requirement, Signature};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fixtures' directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/verify/testdata")
}

/// A fixture's bytes.
pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fixture's path, as policies and messages show it.
pub fn path(name: &str) -> String {
    dir().join(name).display().to_string()
}

/// The image the fixtures signed.
pub fn image_digest() -> Digest {
    String::from_utf8(read("image.digest"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Another image of the same registry.
pub fn other_digest() -> Digest {
    String::from_utf8(read("other-image.digest"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The repository cosign signed (its default identity).
pub const SIGNED_REPO: &str = "127.0.0.1:15790/library/busybox";

/// A policy whose relative paths are fixtures.
pub fn policy(json: &str) -> Policy {
    Policy::parse(json, &dir()).unwrap_or_else(|e| panic!("policy: {e}\n{json}"))
}

/// `{"default":[{"type":"reject"}],"transports":{"docker":{"": [REQ]}}}`.
pub fn policy_requiring(req: &str) -> Policy {
    policy(&format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"":[{req}]}}}}}}"#
    ))
}

/// A policy requiring a signature by the fixture key `key`, with this `signedIdentity` type.
pub fn keyed(key: &str, identity: &str) -> Policy {
    policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","keyPath":"{key}","signedIdentity":{{"type":"{identity}"}}}}"#
    ))
}

/// The refusal of a signature the fixture key `key` did not make.
pub fn not_verified_by(key: &str) -> String {
    format!(
        "no signature by {}: cryptographic signature verification failed",
        path(key)
    )
}

/// The one `sigstoreSigned` requirement of a [`policy_requiring`] policy.
pub fn requirement(p: &Policy) -> &SigstoreSigned {
    let name = Reference::parse_normalized("example.com/any:1").unwrap();
    match &p.scope_for(&name).1[0] {
        Requirement::SigstoreSigned(s) => s,
        other => panic!("{other}"),
    }
}

/// One signature checked against that requirement, for an image named `name` with target
/// `digest`, as of `now`.
pub fn check_as(p: &Policy, sig: &Signature, name: &str, digest: &Digest, now: u64) -> Outcome {
    let name = Reference::parse_normalized(name).unwrap();
    let image = Subject {
        name: &name,
        digest,
        now,
    };
    sig.check(requirement(p), &image)
}

/// How an accepted signature is reported.
pub fn accepted(o: Outcome) -> String {
    match o {
        Outcome::Accepted(a) => a.to_string(),
        other => panic!("not accepted: {other:?}"),
    }
}

/// Why a signature was rejected.
pub fn rejected(o: Outcome) -> Rejection {
    match o {
        Outcome::Rejected(r) => r,
        other => panic!("not rejected: {other:?}"),
    }
}

/// A simple-signing fixture: `NAME.payload` and `NAME.annotations.json`.
pub fn simple(name: &str) -> Signature {
    Signature::SimpleSigning {
        payload: read(&format!("{name}.payload")),
        annotations: serde_json::from_slice(&read(&format!("{name}.annotations.json"))).unwrap(),
    }
}

/// A bundle fixture: `NAME.bundle.json` and its referrer manifest's annotations.
pub fn bundle(name: &str) -> Signature {
    let manifest: Value = serde_json::from_slice(&read(&format!("{name}.manifest.json"))).unwrap();
    Signature::Bundle {
        bundle: read(&format!("{name}.bundle.json")),
        manifest_annotations: serde_json::from_value(manifest["annotations"].clone()).unwrap(),
    }
}

/// An image named `name` with target `digest` and these signatures.
pub fn candidate(name: &str, digest: &Digest, signatures: Vec<Signature>) -> Candidate {
    Candidate {
        name: Reference::parse_normalized(name).unwrap(),
        digest: digest.clone(),
        signatures,
    }
}

/// Seconds since the epoch as a time.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The signing certificate's validity, in seconds since the epoch.
pub fn leaf_validity() -> (u64, u64) {
    let der = &crate::verify::crypto::certificates(&read("leaf.pem")).unwrap()[0];
    let leaf = crate::verify::crypto::leaf(der).unwrap();
    (leaf.not_before, leaf.not_after)
}

/// A time the signing certificate is valid at: a day into its validity.
pub fn while_valid() -> u64 {
    leaf_validity().0 + 86_400
}

/// Signs with a fixture's P-256 PKCS#8 key (`site.p8`, `leaf.p8`, `rekor.p8`): ECDSA over
/// SHA-256, ASN.1.
pub fn sign(key: &str, msg: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &read(key), &rng).unwrap();
    pair.sign(&rng, msg).unwrap().as_ref().to_vec()
}

/// A cosign payload for `digest` and `reference`, as cosign writes it.
pub fn payload(digest: &Digest, reference: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// A simple-signing signature of `payload` by a fixture key, with extra annotations.
pub fn signed_simple(key: &str, payload: Vec<u8>, extra: &[(&str, String)]) -> Signature {
    let mut annotations = BTreeMap::from([(
        crate::verify::signature::SIGNATURE_ANNOTATION.to_string(),
        STANDARD.encode(sign(key, &payload)),
    )]);
    for (k, v) in extra {
        annotations.insert(k.to_string(), v.clone());
    }
    Signature::SimpleSigning {
        payload,
        annotations,
    }
}

/// A simple-signing fixture with its payload or annotations changed by `f`.
pub fn edit_simple(
    name: &str,
    f: impl FnOnce(&mut Vec<u8>, &mut BTreeMap<String, String>),
) -> Signature {
    let Signature::SimpleSigning {
        mut payload,
        mut annotations,
    } = simple(name)
    else {
        unreachable!("simple() makes simple signatures")
    };
    f(&mut payload, &mut annotations);
    Signature::SimpleSigning {
        payload,
        annotations,
    }
}

/// The SPKI DER of a fixture public key.
fn spki_der(pem_name: &str) -> Vec<u8> {
    crate::verify::crypto::PublicKey::from_pem(&read(pem_name))
        .unwrap()
        .spki_der()
        .to_vec()
}

/// The log's ID: SHA-256 of the Rekor key's DER.
fn log_id() -> Vec<u8> {
    Sha256::digest(spki_der("rekor.pub")).to_vec()
}

/// A `dev.sigstore.cosign/bundle` SET, as Rekor would sign it with `rekor.p8`, for a
/// hashedrekord entry of `signer_pem` (a certificate or key, PEM) signing `payload` at `time`.
pub fn forge_set(signer_pem: &[u8], signature: &[u8], payload: &[u8], time: i64) -> String {
    let body = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
        "signature": {"content": STANDARD.encode(signature),
                      "publicKey": {"content": STANDARD.encode(signer_pem)}}}});
    let p = json!({
        "body": STANDARD.encode(serde_json::to_vec(&body).unwrap()),
        "integratedTime": time,
        "logIndex": 7,
        "logID": hex::encode(log_id()),
    });
    let set = sign("rekor.p8", &serde_json_canonicalizer::to_vec(&p).unwrap());
    json!({"SignedEntryTimestamp": STANDARD.encode(set), "Payload": p}).to_string()
}

/// A bundle `tlogEntries[]` item, as Rekor would log a DSSE envelope signed by `signer_pem`
/// (signature `signature` over PAE of `payload`) at `time`, its SET signed with `rekor.p8`.
pub fn forge_dsse_entry(signer_pem: &[u8], signature: &[u8], payload: &[u8], time: i64) -> Value {
    let body = json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "envelopeHash": {"algorithm": "sha256", "value": "00"},
        "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))},
        "signatures": [{"signature": STANDARD.encode(signature),
                        "verifier": STANDARD.encode(signer_pem)}]}});
    let body = STANDARD.encode(serde_json::to_vec(&body).unwrap());
    let p = json!({"body": body, "integratedTime": time, "logIndex": 9,
                   "logID": hex::encode(log_id())});
    let set = sign("rekor.p8", &serde_json_canonicalizer::to_vec(&p).unwrap());
    json!({
        "logIndex": "9",
        "logId": {"keyId": STANDARD.encode(log_id())},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode(set)},
        "canonicalizedBody": body,
    })
}

/// An in-toto statement for `digest` with `predicate_type`.
pub fn statement(digest: &Digest, predicate_type: &str) -> Vec<u8> {
    json!({"_type": "https://in-toto.io/Statement/v1",
           "subject": [{"digest": {"sha256": digest.hex()}, "annotations": {}}],
           "predicateType": predicate_type, "predicate": {}})
    .to_string()
    .into_bytes()
}

/// A v0.3 bundle: `statement` in a DSSE envelope signed by a fixture key, with this
/// verification material.
pub fn make_bundle(key: &str, statement: &[u8], material: Value) -> Signature {
    let pae = crate::verify::bundle::pae("application/vnd.in-toto+json", statement);
    let b = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": material,
        "dsseEnvelope": {"payload": STANDARD.encode(statement),
                         "payloadType": "application/vnd.in-toto+json",
                         "signatures": [{"sig": STANDARD.encode(sign(key, &pae))}]}});
    Signature::Bundle {
        bundle: b.to_string().into_bytes(),
        manifest_annotations: BTreeMap::new(),
    }
}

/// A bundle's JSON, changed by `f`.
pub fn edit_bundle(sig: &Signature, f: impl FnOnce(&mut Value)) -> Signature {
    let Signature::Bundle {
        bundle,
        manifest_annotations,
    } = sig
    else {
        panic!("not a bundle")
    };
    let mut v: Value = serde_json::from_slice(bundle).unwrap();
    f(&mut v);
    Signature::Bundle {
        bundle: v.to_string().into_bytes(),
        manifest_annotations: manifest_annotations.clone(),
    }
}

/// The DSSE payload and signature of a bundle.
pub fn bundle_parts(sig: &Signature) -> (Vec<u8>, Vec<u8>) {
    let Signature::Bundle { bundle, .. } = sig else {
        panic!("not a bundle")
    };
    let v: Value = serde_json::from_slice(bundle).unwrap();
    let env = &v["dsseEnvelope"];
    (
        STANDARD.decode(env["payload"].as_str().unwrap()).unwrap(),
        STANDARD
            .decode(env["signatures"][0]["sig"].as_str().unwrap())
            .unwrap(),
    )
}
