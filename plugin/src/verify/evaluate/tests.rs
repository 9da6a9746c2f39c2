//! Whole decisions: which scope, every requirement, the messages a refusal carries.

use super::*;
use crate::verify::signature::testkit::*;

fn refused(v: Verdict) -> (String, String, String) {
    match v {
        Verdict::Refused {
            scope,
            requirement,
            why,
        } => (scope, requirement, why),
        other => panic!("not refused: {other}"),
    }
}

fn allowed(v: Verdict) -> (String, Vec<String>) {
    match v {
        Verdict::Allowed { scope, met } => (scope, met),
        other => panic!("not allowed: {other}"),
    }
}

#[test]
fn the_most_specific_scope_decides_alone() {
    let p = policy(
        r#"{"default":[{"type":"reject"}],
            "transports":{
              "docker":{
                "docker.io/library/busybox:1.36":[{"type":"insecureAcceptAnything"}],
                "docker.io/library/busybox":[{"type":"reject"}],
                "docker.io/library":[{"type":"insecureAcceptAnything"}],
                "docker.io":[{"type":"reject"}],
                "registry.example.com:5000":[{"type":"insecureAcceptAnything"}],
                "*.example.com":[{"type":"reject"}],
                "*.net":[{"type":"insecureAcceptAnything"}],
                "":[{"type":"reject"}]
              },
              "atomic":{"":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/nonexistent"}]}
            }}"#,
    );
    let d = image_digest();
    for (name, scope, ok) in [
        (
            "busybox:1.36",
            r#"transports.docker["docker.io/library/busybox:1.36"]"#,
            true,
        ),
        (
            "busybox:1.37",
            r#"transports.docker["docker.io/library/busybox"]"#,
            false,
        ),
        (
            "alpine:3",
            r#"transports.docker["docker.io/library"]"#,
            true,
        ),
        (
            "rancher/pause:3.6",
            r#"transports.docker["docker.io"]"#,
            false,
        ),
        (
            "registry.example.com:5000/team/app:1",
            r#"transports.docker["registry.example.com:5000"]"#,
            true,
        ),
        // the port is no part of a wildcard
        (
            "registry.example.com:6000/team/app:1",
            r#"transports.docker["*.example.com"]"#,
            false,
        ),
        (
            "mirror.internal.net/x:1",
            r#"transports.docker["*.net"]"#,
            true,
        ),
        ("quay.io/x:1", r#"transports.docker[""]"#, false),
    ] {
        let v = p.evaluate(&candidate(name, &d, vec![]));
        assert_eq!(v.scope(), scope, "{name}");
        assert_eq!(v.is_allowed(), ok, "{name}: {v}");
    }
    // no docker scope matches: the default
    let only_default = policy(
        r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"quay.io":[{"type":"reject"}]}}}"#,
    );
    assert_eq!(
        only_default
            .evaluate(&candidate("busybox:1", &d, vec![]))
            .scope(),
        "default"
    );
}

#[test]
fn reject_by_default_with_one_signed_scope() {
    let p = policy(
        r#"{"default":[{"type":"reject"}],
            "transports":{"docker":{"127.0.0.1:15790/library":[
              {"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{"type":"matchRepository"}}]}}}"#,
    );
    let d = image_digest();
    let name = format!("{SIGNED_REPO}:1.36");
    let (scope, met) = allowed(p.evaluate(&candidate(&name, &d, vec![simple("sig-site")])));
    assert_eq!(scope, r#"transports.docker["127.0.0.1:15790/library"]"#);
    assert_eq!(
        met,
        [format!(
            "sigstoreSigned {key}, signedIdentity matchRepository: signed by {key} (simple signing, identity {SIGNED_REPO})",
            key = path("site.pub")
        )]
    );
    let (_, met) = allowed(p.evaluate(&candidate(&name, &d, vec![bundle("bundle-site")])));
    assert_eq!(
        met,
        [format!(
            "sigstoreSigned {key}, signedIdentity matchRepository: signed by {key} (bundle, digest only, no signed identity)",
            key = path("site.pub")
        )]
    );
    // unsigned
    let (scope, requirement, why) = refused(p.evaluate(&candidate(&name, &d, vec![])));
    assert_eq!(scope, r#"transports.docker["127.0.0.1:15790/library"]"#);
    assert_eq!(
        requirement,
        format!(
            "sigstoreSigned {}, signedIdentity matchRepository",
            path("site.pub")
        )
    );
    assert_eq!(
        why,
        format!(
            "no signature by {}: A signature was required, but no signature exists",
            path("site.pub")
        )
    );
    // elsewhere: rejected by policy
    let (scope, requirement, why) = refused(p.evaluate(&candidate(
        "docker.io/evil/nginx:1",
        &d,
        vec![simple("sig-site")],
    )));
    assert_eq!(
        (scope.as_str(), requirement.as_str()),
        ("default", "reject")
    );
    assert_eq!(
        why,
        "Running image docker.io/evil/nginx:1 is rejected by policy."
    );
}

#[test]
fn several_rejections_are_joined() {
    let p = policy_requiring(r#"{"type":"sigstoreSigned","keyPath":"site.pub"}"#);
    let d = image_digest();
    let other_key = signed_simple("leaf.p8", payload(&d, "docker.io/library/nginx:1.27"), &[]);
    let other_name = signed_simple("site.p8", payload(&d, "docker.io/library/nginx:1.27"), &[]);
    let (_, _, why) = refused(p.evaluate(&candidate(
        "docker.io/evil/nginx:1.27",
        &d,
        vec![other_key, other_name],
    )));
    assert_eq!(
        why,
        format!(
            "None of the signatures were accepted, reasons: no signature by {}: cryptographic signature verification failed; signed for docker.io/library/nginx:1.27, named docker.io/evil/nginx:1.27 (signedIdentity matchRepoDigestOrExact)",
            path("site.pub")
        )
    );
    // one good signature among bad ones is enough
    let good = signed_simple("site.p8", payload(&d, "docker.io/library/nginx:1.27"), &[]);
    let bad = signed_simple("leaf.p8", payload(&d, "docker.io/library/nginx:1.27"), &[]);
    assert!(p
        .evaluate(&candidate("nginx:1.27", &d, vec![bad, good]))
        .is_allowed());
}

#[test]
fn every_requirement_must_hold() {
    // two keys, each required
    let p = policy(
        r#"{"default":[
             {"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{"type":"matchRepository"}},
             {"type":"sigstoreSigned","keyPath":"ed25519.pub","signedIdentity":{"type":"matchRepository"}},
             {"type":"insecureAcceptAnything"}]}"#,
    );
    let d = image_digest();
    let name = format!("{SIGNED_REPO}:1");
    let (scope, requirement, why) =
        refused(p.evaluate(&candidate(&name, &d, vec![simple("sig-site")])));
    assert_eq!(scope, "default");
    assert!(
        requirement.starts_with(&format!("sigstoreSigned {}", path("ed25519.pub"))),
        "{requirement}"
    );
    assert!(
        why.starts_with(&format!("no signature by {}: ", path("ed25519.pub"))),
        "{why}"
    );
    let (_, met) = allowed(p.evaluate(&candidate(
        &name,
        &d,
        vec![simple("sig-site"), simple("sig-ed25519-pure")],
    )));
    assert_eq!(met.len(), 3);
    assert_eq!(met[2], "insecureAcceptAnything: accepted without checks");
    // the first refusing requirement, in policy order
    let p =
        policy(r#"{"default":[{"type":"reject"},{"type":"sigstoreSigned","keyPath":"site.pub"}]}"#);
    assert_eq!(
        refused(p.evaluate(&candidate("x:1", &d, vec![]))).1,
        "reject"
    );
}

#[test]
fn attachments_are_counted_apart() {
    let p = policy_requiring(r#"{"type":"sigstoreSigned","keyPath":"site.pub"}"#);
    let d = image_digest();
    let sbom = make_bundle(
        "site.p8",
        &statement(&d, "https://spdx.dev/Document"),
        serde_json::json!({"publicKey": {}}),
    );
    let (_, _, why) = refused(p.evaluate(&candidate("x:1", &d, vec![sbom])));
    assert_eq!(
        why,
        format!("no signature by {}: A signature was required, but no signature exists (0 non-sigstore signatures, 1 sigstore non-signature attachments)", path("site.pub"))
    );
}

#[test]
fn a_multi_platform_image_is_signed_by_its_index() {
    // the candidate's digest is the index; a signature made for one platform's manifest
    // (another digest) does not count for the image
    let p = policy_requiring(
        r#"{"type":"sigstoreSigned","keyPath":"site.pub","signedIdentity":{"type":"matchRepository"}}"#,
    );
    let index = Digest::of(b"an index");
    let platform = Digest::of(b"a platform manifest");
    let on_index = signed_simple("site.p8", payload(&index, "docker.io/library/app:1"), &[]);
    let on_platform = signed_simple(
        "site.p8",
        payload(&platform, "docker.io/library/app:1"),
        &[],
    );
    assert!(p
        .evaluate(&candidate("app:1", &index, vec![on_index]))
        .is_allowed());
    let (_, _, why) = refused(p.evaluate(&candidate("app:1", &index, vec![on_platform])));
    assert!(
        why.starts_with(&format!("Signature for digest {platform} does not match")),
        "{why}"
    );
}

#[test]
fn pki_is_checked_at_the_given_time() {
    let p = policy_requiring(
        r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"root.pem","caIntermediatesPath":"int.pem","subjectEmail":"signer@example.com"},"signedIdentity":{"type":"matchRepository"}}"#,
    );
    let c = candidate(
        &format!("{SIGNED_REPO}:1"),
        &image_digest(),
        vec![simple("sig-pki")],
    );
    let (nb, na) = leaf_validity();
    assert!(p.evaluate_at(&c, at(nb + 60)).is_allowed());
    assert!(!p.evaluate_at(&c, at(na + 60)).is_allowed());
    // the same answer every time
    assert_eq!(
        p.evaluate_at(&c, at(nb + 60)),
        p.evaluate_at(&c, at(nb + 60))
    );
}

#[test]
fn verdicts_read_as_sentences() {
    let p = policy(r#"{"default":[{"type":"reject"}]}"#);
    let v = p.evaluate(&candidate("nginx:1", &image_digest(), vec![]));
    assert_eq!(
        v.to_string(),
        "refused by policy scope default, requirement reject: Running image docker.io/library/nginx:1 is rejected by policy."
    );
    let p = policy(r#"{"default":[{"type":"insecureAcceptAnything"}]}"#);
    assert_eq!(
        p.evaluate(&candidate("nginx:1", &image_digest(), vec![]))
            .to_string(),
        "allowed by policy scope default: insecureAcceptAnything: accepted without checks"
    );
}
