//! Bundles: cosign 3.1.1's (key and certificate), with a forged transparency-log entry for
//! Fulcio and for Rekor keys, attestations that are not signatures, and each way one must fail.

use super::*;
use crate::digest::Digest;
use crate::verify::signature::testkit::*;
use crate::verify::signature::{Outcome, Signature};
use crate::verify::Policy;
use base64::engine::general_purpose::STANDARD;
use serde_json::{json, Value};

/// Checks for an image of any name (a bundle signs none) with target `digest`, as of `now`.
fn check_at(p: &Policy, sig: &Signature, digest: &Digest, now: u64) -> Outcome {
    check_as(p, sig, "evil.example.com/any/name:1", digest, now)
}

fn check(p: &Policy, sig: &Signature) -> Outcome {
    check_at(p, sig, &image_digest(), while_valid())
}

fn rejection(o: Outcome) -> String {
    rejected(o).to_string()
}

#[test]
fn a_key_signed_bundle_proves_the_digest_not_a_name() {
    let b = bundle("bundle-site");
    // any name: a bundle signs none
    let accepted = Outcome::Accepted(crate::verify::signature::Accepted {
        signer: path("site.pub"),
        evidence: "bundle, digest only, no signed identity".into(),
    });
    let unnamed = |rule: &str| {
        Outcome::Rejected(Rejection::Unnamed {
            rule: rule.to_string(),
        })
    };
    // each of the six rules, for an image whose name is nothing like the signer's repository
    for (identity, want) in [
        (r#"{"type":"matchRepoDigestOrExact"}"#, accepted.clone()),
        (r#"{"type":"matchRepository"}"#, accepted.clone()),
        (
            r#"{"type":"exactRepository","dockerRepository":"vendor.example/app"}"#,
            accepted.clone(),
        ),
        (
            r#"{"type":"remapIdentity","prefix":"mirror.example","signedPrefix":"vendor.example"}"#,
            accepted.clone(),
        ),
        // rules that demand a signed tag or digest cannot be met by one
        (r#"{"type":"matchExact"}"#, unnamed("matchExact")),
        (
            r#"{"type":"exactReference","dockerReference":"busybox:1"}"#,
            unnamed("exactReference busybox:1"),
        ),
    ] {
        let p = policy_requiring(&format!(
            r#"{{"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{identity}}}"#
        ));
        assert_eq!(check(&p, &b), want, "{identity}");
    }
    assert_eq!(
        rejection(check(&keyed("site.pub", "matchExact"), &b)),
        "a bundle signs a digest and no name, and signedIdentity matchExact requires a signed name"
    );
}

#[test]
fn another_key_another_image_a_tampered_statement() {
    let b = bundle("bundle-site");
    assert_eq!(
        rejection(check(&keyed("other.pub", "matchRepository"), &b)),
        not_verified_by("other.pub")
    );
    let p = keyed("site.pub", "matchRepository");
    let other = other_digest();
    assert_eq!(
        rejection(check_at(&p, &b, &other, 0)),
        format!(
            "Signature for digest {} does not match (the image is {other})",
            image_digest()
        )
    );
    // the statement rewritten for the other image: the signature no longer holds
    let (statement, _) = bundle_parts(&b);
    let changed = String::from_utf8(statement)
        .unwrap()
        .replace(image_digest().hex(), other.hex());
    let tampered = edit_bundle(&b, |v| {
        v["dsseEnvelope"]["payload"] = STANDARD.encode(&changed).into();
    });
    assert!(rejection(check_at(&p, &tampered, &other, 0))
        .ends_with("cryptographic signature verification failed"));
    // the public key hint is only a hint
    let hinted = edit_bundle(&b, |v| {
        v["verificationMaterial"]["publicKey"]["hint"] = "AAAA".into();
    });
    assert!(matches!(check(&p, &hinted), Outcome::Accepted(_)));
}

fn pki(roots: &str) -> Policy {
    policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","pki":{{"caRootsPath":"{roots}","caIntermediatesPath":"int.pem","subjectEmail":"signer@example.com"}}}}"#
    ))
}

#[test]
fn a_certificate_signed_bundle() {
    let b = bundle("bundle-pki");
    assert_eq!(
        check(&pki("root.pem"), &b),
        Outcome::Accepted(crate::verify::signature::Accepted {
            signer: format!(
                "a certificate for signer@example.com (CA roots {})",
                path("root.pem")
            ),
            evidence: "bundle, digest only, no signed identity".into()
        })
    );
    assert!(
        rejection(check(&pki("other-root.pem"), &b)).contains("veryfing leaf certificate failed")
    );
    let (_, na) = leaf_validity();
    assert!(rejection(check_at(&pki("root.pem"), &b, &image_digest(), na + 1)).contains("Expired"));
    // a key bundle under a pki requirement has no certificate
    assert!(rejection(check(&pki("root.pem"), &bundle("bundle-site")))
        .ends_with("the bundle carries no certificate"));
}

/// The cosign certificate bundle with a transparency-log entry forged for `time`.
fn logged(time: i64) -> Signature {
    let b = bundle("bundle-pki");
    let (statement, sig) = bundle_parts(&b);
    let entry = forge_dsse_entry(&read("leaf.pem"), &sig, &statement, time);
    edit_bundle(&b, |v| {
        v["verificationMaterial"]["tlogEntries"] = json!([entry])
    })
}

#[test]
fn fulcio_bundles_need_a_logged_entry_in_the_certificate_validity() {
    let p = policy_requiring(
        r#"{"type":"sigstoreSigned","fulcio":{"caPath":"root.pem","oidcIssuer":"https://issuer.example.com","subjectEmail":"signer@example.com"},"rekorPublicKeyPath":"rekor.pub"}"#,
    );
    let (nb, na) = leaf_validity();
    // (the certificate form carries no intermediates: the CA file must hold what anchors it)
    let with_int = policy_requiring(
        r#"{"type":"sigstoreSigned","fulcio":{"caPath":"int.pem","oidcIssuer":"https://issuer.example.com","subjectEmail":"signer@example.com"},"rekorPublicKeyPath":"rekor.pub"}"#,
    );
    assert!(matches!(
        check_at(&with_int, &logged(nb as i64 + 60), &image_digest(), 0),
        Outcome::Accepted(_)
    ));
    assert!(
        rejection(check(&p, &logged(nb as i64 + 60))).contains("veryfing leaf certificate failed")
    );
    let early = rejection(check(&with_int, &logged(nb as i64 - 60)));
    assert!(early.contains("NotValidYet"), "{early}");
    let late = rejection(check(&with_int, &logged(na as i64 + 60)));
    assert!(late.contains("Expired"), "{late}");
    assert!(rejection(check(&with_int, &bundle("bundle-pki")))
        .ends_with("the bundle has no transparency log entry, and the policy names Rekor keys"));
}

#[test]
fn keys_with_rekor_keys_need_a_logged_entry() {
    let p = policy_requiring(
        r#"{"type":"sigstoreSigned","keyPath":"site.pub","rekorPublicKeyPath":"rekor.pub"}"#,
    );
    let b = bundle("bundle-site");
    assert!(
        rejection(check(&p, &b)).contains("No public key verified against the transparency log")
    );
    let (statement, sig) = bundle_parts(&b);
    let entry = forge_dsse_entry(&read("site.pub"), &sig, &statement, 1_800_000_000);
    let with_entry = edit_bundle(&b, |v| {
        v["verificationMaterial"]["tlogEntries"] = json!([entry])
    });
    assert!(matches!(check(&p, &with_entry), Outcome::Accepted(_)));
}

#[test]
fn attestations_are_not_signatures() {
    let p = keyed("site.pub", "matchRepository");
    let provenance = statement(&image_digest(), "https://slsa.dev/provenance/v1");
    let att = make_bundle("site.p8", &provenance, json!({"publicKey": {"hint": ""}}));
    assert_eq!(check(&p, &att), Outcome::NotASignature);
    let sig = make_bundle(
        "site.p8",
        &statement(&image_digest(), SIGN_PREDICATE),
        json!({"publicKey": {}}),
    );
    assert!(matches!(check(&p, &sig), Outcome::Accepted(_)));
}

/// A change made to a bundle's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn malformed_bundles() {
    let p = keyed("site.pub", "matchRepository");
    let b = bundle("bundle-site");
    let (statement, _) = bundle_parts(&b);
    let not_in_toto = String::from_utf8(statement).unwrap().replace(
        "https://in-toto.io/Statement/v1",
        "https://example.com/Statement",
    );
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| {
                v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into()
            }),
            "airlift verifies",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("dsseEnvelope");
                v["messageSignature"] = json!({});
            }),
            "a message signature",
        ),
        (
            Box::new(|v| v["dsseEnvelope"]["payloadType"] = "text/plain".into()),
            "payload type",
        ),
        (
            Box::new(|v| {
                let s = v["dsseEnvelope"]["signatures"][0].clone();
                v["dsseEnvelope"]["signatures"] = json!([s.clone(), s]);
            }),
            "exactly one signature",
        ),
        (
            Box::new(|v| v["dsseEnvelope"]["payload"] = "!!".into()),
            "base64",
        ),
        (
            Box::new(|v| v["verificationMaterial"]["x509CertificateChain"] = json!({})),
            "never a certificate chain",
        ),
        (
            Box::new(move |v| v["dsseEnvelope"]["payload"] = STANDARD.encode(&not_in_toto).into()),
            "is not in-toto's",
        ),
    ];
    for (edit, want) in cases {
        let r = rejection(check(&p, &edit_bundle(&b, edit)));
        assert!(
            r.starts_with("invalid signature: bundle: ") && r.contains(want),
            "{want}: {r}"
        );
    }
    let not_json = Signature::Bundle {
        bundle: b"{".to_vec(),
        manifest_annotations: Default::default(),
    };
    assert!(rejection(check(&p, &not_json)).starts_with("invalid signature: bundle: "));
}

#[test]
fn protobuf_base64_forms() {
    let (statement, _) = bundle_parts(&bundle("bundle-site"));
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&statement);
    assert_eq!(b64(&url).unwrap(), statement);
    assert_eq!(b64(&STANDARD.encode(&statement)).unwrap(), statement);
    assert_eq!(
        pae("application/vnd.in-toto+json", b"{}"),
        b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
    );
}
