//! Simple signing: cosign 3.1.1's `.sig` layers (key, each key type, PKI certificate, Fulcio
//! with a forged SET), containers/image's fixtures, and payloads read strictly.

use super::*;
use crate::digest::Digest;
use crate::verify::signature::testkit::*;
use crate::verify::signature::{Outcome, Signature};
use crate::verify::Policy;

/// Checks as the image cosign signed, named `busybox:1.36` of the signing registry.
fn check(p: &Policy, sig: &Signature) -> Outcome {
    let name = format!("{SIGNED_REPO}:1.36");
    check_as(p, sig, &name, &image_digest(), while_valid())
}

const REPO: &str = r#""signedIdentity":{"type":"matchRepository"}"#;

#[test]
fn cosign_signatures_by_each_key_type() {
    for (fixture, key) in [
        ("sig-site", "site.pub"),
        ("sig-rsa", "rsa.pub"),
        ("sig-ed25519-pure", "ed25519.pub"),
        ("sig-p384", "p384.pub"),
    ] {
        let p = keyed(key, "matchRepository");
        assert_eq!(
            accepted(check(&p, &simple(fixture))),
            format!(
                "signed by {} (simple signing, identity {SIGNED_REPO})",
                path(key)
            ),
            "{fixture}"
        );
    }
}

#[test]
fn ed25519ph_is_not_verified() {
    // cosign 3.x signs with Ed25519ph for Ed25519 keys; containers/image verifies pure
    // Ed25519 only, and so does airlift
    let p = keyed("ed25519.pub", "matchRepository");
    assert_eq!(
        rejected(check(&p, &simple("sig-ed25519"))).to_string(),
        not_verified_by("ed25519.pub")
    );
}

#[test]
fn another_key_a_tampered_payload_another_image() {
    let p = keyed("other.pub", "matchRepository");
    assert_eq!(
        rejected(check(&p, &simple("sig-site"))).to_string(),
        not_verified_by("other.pub")
    );
    let p = keyed("site.pub", "matchRepository");
    let tampered = edit_simple("sig-site", |payload, _| payload[20] ^= 1);
    assert!(matches!(
        rejected(check(&p, &tampered)),
        Rejection::NotSignedBy { .. }
    ));
    // a signature made for another image, presented for this one
    let other = other_digest();
    let r = rejected(check_as(
        &p,
        &simple("sig-site"),
        &format!("{SIGNED_REPO}:1"),
        &other,
        0,
    ));
    assert_eq!(
        r.to_string(),
        format!(
            "Signature for digest {} does not match (the image is {other})",
            image_digest()
        )
    );
}

#[test]
fn any_of_several_keys() {
    let p = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","keyPaths":["other.pub","site.pub"],{REPO}}}"#
    ));
    assert!(accepted(check(&p, &simple("sig-site")))
        .starts_with(&format!("signed by {} ", path("site.pub"))));
    let data = STANDARD.encode(read("site.pub"));
    let p = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","keyDatas":["{data}"],{REPO}}}"#
    ));
    assert!(accepted(check(&p, &simple("sig-site"))).starts_with("signed by keyDatas[0] "));
}

#[test]
fn identities_cosign_signs() {
    // cosign's default identity is the bare repository: the default rule never accepts it
    let p = policy_requiring(r#"{"type":"sigstoreSigned","keyPath":"site.pub"}"#);
    assert_eq!(
        rejected(check(&p, &simple("sig-site"))).to_string(),
        format!("signed for {SIGNED_REPO}, named {SIGNED_REPO}:1.36 (signedIdentity matchRepoDigestOrExact)")
    );
    // --sign-container-identity=docker.io/library/busybox:1.36
    let id = simple("sig-site-identity");
    let digest = image_digest();
    assert!(matches!(
        check_as(&p, &id, "busybox:1.36", &digest, 0),
        Outcome::Accepted(_)
    ));
    assert_eq!(
        rejected(check_as(&p, &id, "docker.io/evil/busybox:1.36", &digest, 0)).to_string(),
        "signed for docker.io/library/busybox:1.36, named docker.io/evil/busybox:1.36 (signedIdentity matchRepoDigestOrExact)"
    );
    // the mirror's name, remapped to what the vendor signed
    let p = policy_requiring(
        r#"{"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{"type":"remapIdentity","prefix":"mirror.example.com/hub","signedPrefix":"docker.io"}}"#,
    );
    assert!(matches!(
        check_as(
            &p,
            &id,
            "mirror.example.com/hub/library/busybox:1.36",
            &digest,
            0
        ),
        Outcome::Accepted(_)
    ));
    assert!(matches!(
        check_as(
            &p,
            &id,
            "mirror.example.com/hub/library/busybox:1.37",
            &digest,
            0
        ),
        Outcome::Rejected(Rejection::Identity { .. })
    ));
}

#[test]
fn payloads_of_other_names_signed_here() {
    // every rule end to end, on payloads the site key signs for other names
    let digest = image_digest();
    for (rule, image, signed, ok) in [
        (
            r#"{"type":"matchExact"}"#,
            "busybox:1",
            "docker.io/library/busybox:1",
            true,
        ),
        (
            r#"{"type":"matchExact"}"#,
            "busybox:1",
            "docker.io/library/busybox:2",
            false,
        ),
        (
            r#"{"type":"matchRepository"}"#,
            "busybox:1",
            "busybox:2",
            true,
        ),
        (
            r#"{"type":"matchRepository"}"#,
            "busybox:1",
            "evil/busybox:1",
            false,
        ),
        (
            r#"{"type":"exactReference","dockerReference":"vendor.io/b:1"}"#,
            "busybox:9",
            "vendor.io/b:1",
            true,
        ),
        (
            r#"{"type":"exactReference","dockerReference":"vendor.io/b:1"}"#,
            "busybox:9",
            "vendor.io/b:2",
            false,
        ),
        (
            r#"{"type":"exactRepository","dockerRepository":"vendor.io/b"}"#,
            "busybox:9",
            "vendor.io/b:7",
            true,
        ),
        (
            r#"{"type":"exactRepository","dockerRepository":"vendor.io/b"}"#,
            "busybox:9",
            "vendor.io/c:7",
            false,
        ),
    ] {
        let p = policy_requiring(&format!(
            r#"{{"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{rule}}}"#
        ));
        let sig = signed_simple("site.p8", payload(&digest, signed), &[]);
        let o = check_as(&p, &sig, image, &digest, 0);
        assert_eq!(
            matches!(o, Outcome::Accepted(_)),
            ok,
            "{rule} {image} {signed}: {o:?}"
        );
    }
}

#[test]
fn missing_or_broken_signature_annotation() {
    let p = keyed("site.pub", "matchRepository");
    let broken = edit_simple("sig-site", |_, a| {
        a.insert(SIGNATURE_ANNOTATION.into(), "@@@".into());
    });
    assert!(
        matches!(rejected(check(&p, &broken)), Rejection::Invalid(m) if m.starts_with("base64"))
    );
    let bare = edit_simple("sig-site", |_, a| a.clear());
    assert_eq!(
        rejected(check(&p, &bare)).to_string(),
        "invalid signature: missing dev.cosignproject.cosign/signature annotation"
    );
}

fn pki(extra: &str) -> Policy {
    policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","pki":{{"caRootsPath":"root.pem","caIntermediatesPath":"int.pem"{extra}}},{REPO}}}"#
    ))
}

#[test]
fn pki_certificates() {
    let p = pki(r#","subjectEmail":"signer@example.com""#);
    let sig = simple("sig-pki");
    assert_eq!(
        accepted(check(&p, &sig)),
        format!(
            "signed by a certificate for signer@example.com (CA roots {}) (simple signing, identity {SIGNED_REPO})",
            path("root.pem")
        )
    );
    let host =
        pki(r#","subjectEmail":"signer@example.com","subjectHostname":"signer.example.com""#);
    assert!(matches!(check(&host, &sig), Outcome::Accepted(_)));
    let (nb, na) = leaf_validity();
    let name = format!("{SIGNED_REPO}:1");
    let d = image_digest();
    for (p, now, want) in [
        (
            pki(r#","subjectEmail":"someone@example.com""#),
            while_valid(),
            "Required email \"someone@example.com\" not found",
        ),
        (
            pki(r#","subjectHostname":"other.example.com""#),
            while_valid(),
            "Unexpected subject hostname",
        ),
        (
            pki(r#","subjectEmail":"signer@example.com""#),
            na + 1,
            "Expired",
        ),
        (
            pki(r#","subjectEmail":"signer@example.com""#),
            nb - 1,
            "NotValidYet",
        ),
    ] {
        let r = rejected(check_as(&p, &sig, &name, &d, now)).to_string();
        assert!(
            r.starts_with("no signature by a certificate for ") && r.contains(want),
            "{r}"
        );
    }
    // the same name, another key: the wrong root
    let wrong = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","pki":{{"caRootsPath":"other-root.pem","caIntermediatesPath":"int.pem","subjectEmail":"signer@example.com"}},{REPO}}}"#
    ));
    assert!(rejected(check(&wrong, &sig))
        .to_string()
        .contains("veryfing leaf certificate failed"));
    // cosign 3.1.1 drops the chain, so without the policy's intermediates there is no path
    let no_int = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","pki":{{"caRootsPath":"root.pem","subjectEmail":"signer@example.com"}},{REPO}}}"#
    ));
    assert!(matches!(check(&no_int, &sig), Outcome::Rejected(_)));
}

fn fulcio(rekor: &str, issuer: &str) -> Policy {
    policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","fulcio":{{"caPath":"root.pem","oidcIssuer":"{issuer}","subjectEmail":"signer@example.com"}},"rekorPublicKeyPath":"{rekor}",{REPO}}}"#
    ))
}

#[test]
fn fulcio_with_a_set() {
    let sig = simple("sig-fulcio");
    let p = fulcio("rekor.pub", "https://issuer.example.com");
    // checked at the SET's time, whatever now is
    let name = format!("{SIGNED_REPO}:1");
    let d = image_digest();
    for now in [0, u64::MAX / 2] {
        assert_eq!(
            accepted(check_as(&p, &sig, &name, &d, now)),
            format!("signed by signer@example.com (Fulcio, https://issuer.example.com) (simple signing, identity {SIGNED_REPO})")
        );
    }
    let other_log = rejected(check(
        &fulcio("site.pub", "https://issuer.example.com"),
        &sig,
    ));
    assert!(
        other_log
            .to_string()
            .ends_with("cryptographic signature verification of Rekor SET failed"),
        "{other_log}"
    );
    let issuer = rejected(check(
        &fulcio("rekor.pub", "https://accounts.example.com"),
        &sig,
    ));
    assert!(
        issuer
            .to_string()
            .ends_with("Unexpected Fulcio OIDC issuer \"https://issuer.example.com\""),
        "{issuer}"
    );
}

/// The fulcio fixture's layer, re-signed by the leaf with a SET forged for `time`.
fn fulcio_at(time: i64) -> Signature {
    edit_simple("sig-fulcio", |payload, annotations| {
        let sig = sign("leaf.p8", payload);
        let set = forge_set(&read("leaf.pem"), &sig, payload, time);
        annotations.insert(SIGNATURE_ANNOTATION.into(), STANDARD.encode(&sig));
        annotations.insert(SET_ANNOTATION.into(), set);
    })
}

#[test]
fn fulcio_certificates_must_be_valid_at_the_set_time() {
    let p = fulcio("rekor.pub", "https://issuer.example.com");
    let (nb, na) = leaf_validity();
    assert!(matches!(
        check(&p, &fulcio_at(nb as i64 + 60)),
        Outcome::Accepted(_)
    ));
    let early = rejected(check(&p, &fulcio_at(nb as i64 - 60))).to_string();
    assert!(
        early.contains("veryfing leaf certificate failed") && early.contains("NotValidYet"),
        "{early}"
    );
    let late = rejected(check(&p, &fulcio_at(na as i64 + 60))).to_string();
    assert!(late.contains("Expired"), "{late}");
    // no SET at all
    let no_set = edit_simple("sig-fulcio", |_, a| {
        a.remove(SET_ANNOTATION);
    });
    let r = rejected(check(&p, &no_set));
    assert!(
        r.to_string()
            .ends_with("missing dev.sigstore.cosign/bundle annotation"),
        "{r}"
    );
}

#[test]
fn keys_with_a_rekor_key_need_a_set() {
    let p = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","keyPath":"site.pub","rekorPublicKeyPath":"rekor.pub",{REPO}}}"#
    ));
    let r = rejected(check(&p, &simple("sig-site")));
    assert!(
        r.to_string()
            .ends_with("missing dev.sigstore.cosign/bundle annotation"),
        "{r}"
    );
    let digest = image_digest();
    let body = payload(&digest, "busybox:1");
    let sig = sign("site.p8", &body);
    let set = forge_set(&read("site.pub"), &sig, &body, 1_800_000_000);
    let with_set = Signature::SimpleSigning {
        payload: body,
        annotations: [
            (SIGNATURE_ANNOTATION.to_string(), STANDARD.encode(&sig)),
            (SET_ANNOTATION.to_string(), set),
        ]
        .into(),
    };
    assert!(matches!(
        check_as(&p, &with_set, "busybox:2", &digest, 0),
        Outcome::Accepted(_)
    ));
}

#[test]
fn containers_image_fixtures() {
    // cosign2.pub with a real Rekor SET, and a real Fulcio certificate with its SET
    let digest: Digest = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a"
        .parse()
        .unwrap();
    let sig = |name: &str| {
        let v: serde_json::Value = serde_json::from_slice(&read(name)).unwrap();
        Signature::SimpleSigning {
            payload: STANDARD.decode(v["payload"].as_str().unwrap()).unwrap(),
            annotations: serde_json::from_value(v["annotations"].clone()).unwrap(),
        }
    };
    let p = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","keyPaths":["site.pub","cimage/cosign2.pub"],"rekorPublicKeyPath":"cimage/rekor.pub",{REPO}}}"#
    ));
    let key = sig("cimage/key-rekor-valid.signature.json");
    let name = "192.168.64.2:5000/cosign-signed/key-1:latest";
    assert!(matches!(
        check_as(&p, &key, name, &digest, 0),
        Outcome::Accepted(_)
    ));
    let p = policy_requiring(&format!(
        r#"{{"type":"sigstoreSigned","fulcio":{{"caPath":"cimage/fulcio_v1.crt.pem","oidcIssuer":"https://github.com/login/oauth","subjectEmail":"mitr@redhat.com"}},"rekorPublicKeyPath":"cimage/rekor.pub",{REPO}}}"#
    ));
    let name = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1:latest";
    let fulcio = sig("cimage/fulcio-rekor-valid.signature.json");
    assert_eq!(
        accepted(check_as(&p, &fulcio, name, &digest, 0)),
        "signed by mitr@redhat.com (Fulcio, https://github.com/login/oauth) (simple signing, identity 192.168.64.2:5000/cosign-signed/fulcio-rekor-1)"
    );
}

#[test]
fn payloads_are_read_strictly() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let ok = |p: String| parse_payload(p.as_bytes());
    let body = |critical: &str, optional: &str| {
        format!(r#"{{"critical":{critical},"optional":{optional}}}"#)
    };
    let critical = format!(
        r#"{{"identity":{{"docker-reference":"busybox:1"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}}"#
    );
    assert_eq!(
        ok(body(&critical, "null")).unwrap(),
        Payload {
            digest: d.into(),
            reference: "busybox:1".into()
        }
    );
    assert!(ok(body(
        &critical,
        r#"{"creator":"c","timestamp":1700000000,"team":"x"}"#
    ))
    .is_ok());
    assert!(parse_payload(&read("sig-site.payload")).is_ok());
    for (bad, why) in [
        (body(&critical, r#"{"timestamp":1.5}"#), "not an integer"),
        (body(&critical, r#"{"creator":1}"#), "JSON string expected"),
        (
            format!(r#"{{"critical":{critical}}}"#),
            r#"Key "optional" missing"#,
        ),
        (
            format!(r#"{{"critical":{critical},"optional":null,"x":1}}"#),
            r#"Unknown key "x""#,
        ),
        (
            body(
                &critical.replace("cosign container", "other container"),
                "null",
            ),
            "Unrecognized signature type",
        ),
        (
            body(&critical.replace(d, "sha256:abc"), "null"),
            "invalid docker-manifest-digest",
        ),
        (
            body(
                &critical.replace("\"type\"", "\"extra\":1,\"type\""),
                "null",
            ),
            r#"Unknown key "extra""#,
        ),
        (
            body(
                &critical.replace("\"busybox:1\"", "\"busybox:1\",\"x\":2"),
                "null",
            ),
            r#"Unknown key "x""#,
        ),
        (
            format!(r#"{{"critical":{critical},"critical":{critical},"optional":null}}"#),
            "Duplicate key",
        ),
    ] {
        let e = ok(bad.clone()).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid signature: ") && e.contains(why),
            "{bad}: {e}"
        );
    }
}
