//! SETs: containers/image's own fixture (a real Rekor SET from sigstore's public log), SETs the
//! tests forge with the fixture Rekor key, and each way they must fail.

use super::*;
use crate::verify::signature::testkit::{forge_dsse_entry, forge_set, read, sign};
use serde_json::Value;

fn key(name: &str) -> PublicKey {
    PublicKey::from_pem(&read(name)).unwrap()
}

/// containers/image's `dir-img-cosign-key-rekor-valid`: payload, signature, SET.
fn cimage_key_rekor() -> (Vec<u8>, Vec<u8>, String) {
    let sig: Value =
        serde_json::from_slice(&read("cimage/key-rekor-valid.signature.json")).unwrap();
    let a = &sig["annotations"];
    (
        STANDARD.decode(sig["payload"].as_str().unwrap()).unwrap(),
        STANDARD
            .decode(a["dev.cosignproject.cosign/signature"].as_str().unwrap())
            .unwrap(),
        a["dev.sigstore.cosign/bundle"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[test]
fn a_real_rekor_set_verifies() {
    let (payload, sig, set) = cimage_key_rekor();
    let signer = key("cimage/cosign2.pub");
    let rekor = [key("site.pub"), key("cimage/rekor.pub")];
    let t = verify_annotation(&rekor, &set, signer.spki_der(), &sig, &payload).unwrap();
    assert!(t > 1_600_000_000, "{t}");

    // another log's key
    assert_eq!(
        verify_annotation(&[key("rekor.pub")], &set, signer.spki_der(), &sig, &payload),
        Err(RekorError::Signature)
    );
    // the entry is for another key, another signature, another payload
    assert_eq!(
        verify_annotation(&rekor, &set, key("site.pub").spki_der(), &sig, &payload),
        Err(RekorError::Key)
    );
    assert_eq!(
        verify_annotation(&rekor, &set, signer.spki_der(), b"other", &payload),
        Err(RekorError::SignatureContent)
    );
    assert_eq!(
        verify_annotation(&rekor, &set, signer.spki_der(), &sig, b"{}"),
        Err(RekorError::Payload)
    );
}

#[test]
fn a_changed_set_no_longer_verifies() {
    let (payload, sig, set) = cimage_key_rekor();
    let signer = key("cimage/cosign2.pub");
    let rekor = [key("cimage/rekor.pub")];
    let mut v: Value = serde_json::from_str(&set).unwrap();
    v["Payload"]["integratedTime"] =
        (v["Payload"]["integratedTime"].as_i64().unwrap() - 86_400).into();
    assert_eq!(
        verify_annotation(&rekor, &v.to_string(), signer.spki_der(), &sig, &payload),
        Err(RekorError::Signature)
    );
    for bad in [
        "not json",
        r#"{"SignedEntryTimestamp":"AA=="}"#,
        r#"{"SignedEntryTimestamp":"AA==","Payload":{},"extra":1}"#,
        r#"{"SignedEntryTimestamp":"AA==","SignedEntryTimestamp":"AA==","Payload":{}}"#,
    ] {
        assert!(
            matches!(
                verify_annotation(&rekor, bad, signer.spki_der(), &sig, &payload),
                Err(RekorError::Format(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn forged_sets_verify_with_the_forging_key_only() {
    let payload = b"payload";
    let sig = sign("site.p8", payload);
    let pem = read("site.pub");
    let set = forge_set(&pem, &sig, payload, 1_800_000_000);
    let site = key("site.pub");
    assert_eq!(
        verify_annotation(&[key("rekor.pub")], &set, site.spki_der(), &sig, payload),
        Ok(1_800_000_000)
    );
    assert_eq!(
        verify_annotation(
            &[key("cimage/rekor.pub")],
            &set,
            site.spki_der(),
            &sig,
            payload
        ),
        Err(RekorError::Signature)
    );
}

#[test]
fn dsse_entries() {
    let payload = b"statement";
    let sig = sign("leaf.p8", payload);
    let leaf = read("leaf.pem");
    let leaf_der = crate::verify::crypto::certificates(&leaf)
        .unwrap()
        .remove(0);
    let rekor = [key("rekor.pub")];
    let entry: TlogEntry =
        serde_json::from_value(forge_dsse_entry(&leaf, &sig, payload, 1_800_000_123)).unwrap();
    assert_eq!(
        verify_dsse_entry(&rekor, &entry, &leaf_der, &sig, payload),
        Ok(1_800_000_123)
    );
    assert_eq!(
        verify_dsse_entry(&[key("site.pub")], &entry, &leaf_der, &sig, payload),
        Err(RekorError::Signature)
    );
    assert_eq!(
        verify_dsse_entry(&rekor, &entry, key("site.pub").spki_der(), &sig, payload),
        Err(RekorError::Key)
    );
    assert_eq!(
        verify_dsse_entry(&rekor, &entry, &leaf_der, b"another", payload),
        Err(RekorError::SignatureContent)
    );
    assert_eq!(
        verify_dsse_entry(&rekor, &entry, &leaf_der, &sig, b"another statement"),
        Err(RekorError::Payload)
    );
    // a changed time breaks the SET
    let mut moved = entry.clone();
    moved.integrated_time = Some("1800000124".into());
    assert_eq!(
        verify_dsse_entry(&rekor, &moved, &leaf_der, &sig, payload),
        Err(RekorError::Signature)
    );
    let mut promise_less = entry;
    promise_less.inclusion_promise = None;
    assert!(matches!(
        verify_dsse_entry(&rekor, &promise_less, &leaf_der, &sig, payload),
        Err(RekorError::Format(_))
    ));
}
