//! The six `signedIdentity` rules, table-driven, with containers/image's own cases where the
//! image side is a name containerd can hold (a tag or a digest, never both, never bare).

use super::*;

const D: &str = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const D2: &str = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const RHEL: &str = "registry.access.redhat.com/rhel7/rhel:7.2.3";
const RHEL_BARE: &str = "registry.access.redhat.com/rhel7/rhel";

fn check(rule: &SignedIdentity, cases: &[(&str, &str, bool)]) {
    for (image, signed, want) in cases {
        let name = Reference::parse_normalized(image).unwrap();
        assert_eq!(
            rule.matches(&name, signed),
            *want,
            "{rule}: image {image}, signed for {signed}"
        );
    }
}

fn s(a: &str, b: &str) -> String {
    format!("{a}{b}")
}

#[test]
fn match_exact() {
    let (bd, bd2, nd) = (s("busybox", D), s("busybox", D2), s("notbusybox", D));
    check(
        &SignedIdentity::MatchExact,
        &[
            ("busybox:latest", "busybox:latest", true),
            (RHEL, RHEL, true),
            (&bd, &bd, true),
            ("library/busybox:latest", "busybox:latest", true),
            ("busybox:latest", "docker.io/library/busybox:latest", true),
            (
                "busybox:latest",
                "index.docker.io/library/busybox:latest",
                true,
            ),
            ("busybox:latest", "busybox:notlatest", false),
            ("busybox:latest", "notbusybox:latest", false),
            ("busybox:latest", "hostname/library/busybox:latest", false),
            ("busybox:latest", RHEL, false),
            (&bd, &nd, false),
            ("busybox:latest", &bd, false),
            (&bd, &bd2, false),
            // a bare repository is never an exact identity
            ("busybox:latest", "busybox", false),
            ("busybox:latest", &s("busybox:latest", D), false),
            ("busybox:latest", "UPPERCASE_IS_INVALID", false),
            ("busybox:latest", "", false),
        ],
    );
}

#[test]
fn match_repo_digest_or_exact() {
    let (bd, bd2) = (s("busybox", D), s("busybox", D2));
    check(
        &SignedIdentity::MatchRepoDigestOrExact,
        &[
            ("busybox:latest", "busybox:latest", true),
            ("busybox:latest", "busybox:notlatest", false),
            (&s(RHEL, "tagsuffix"), RHEL, false),
            ("library/busybox:latest", "busybox:notlatest", false),
            (
                "docker.io/library/busybox:notlatest",
                "busybox:latest",
                false,
            ),
            // what cosign signs by default: the bare repository — never accepted
            ("busybox:latest", "busybox", false),
            (&bd, "busybox", false),
            (RHEL, RHEL_BARE, false),
            ("busybox:latest", &bd, false),
            // named by digest: any tag or digest of the same repository
            (&bd, "busybox:latest", true),
            (&bd, &bd2, true),
            (&bd, &s("busybox:1", D), true),
            (&bd, "notbusybox:latest", false),
            ("busybox:latest", &s("busybox:latest", D), false),
        ],
    );
}

#[test]
fn match_repository() {
    let (bd, bd2, nd) = (s("busybox", D), s("busybox", D2), s("notbusybox", D));
    check(
        &SignedIdentity::MatchRepository,
        &[
            ("busybox:latest", "busybox:latest", true),
            ("busybox:latest", "busybox:notlatest", true),
            (&s(RHEL, "tagsuffix"), RHEL, true),
            (
                "busybox:notlatest",
                "docker.io/library/busybox:latest",
                true,
            ),
            ("busybox:latest", &bd, true),
            (&bd, &bd2, true),
            (RHEL, RHEL_BARE, true),
            ("busybox:latest", "busybox", true),
            ("busybox:latest", &s("busybox:latest", D), true),
            ("busybox:latest", "notbusybox:latest", false),
            (
                "hostname/library/busybox:latest",
                "busybox:notlatest",
                false,
            ),
            ("busybox:latest", RHEL, false),
            (&bd, &nd, false),
            ("busybox:latest", "UPPERCASE_IS_INVALID", false),
        ],
    );
}

#[test]
fn exact_reference() {
    let rule = SignedIdentity::exact_reference("docker.io/library/busybox:1.36").unwrap();
    check(
        &rule,
        &[
            // the image's own name does not matter, only the signature's
            ("evil/anything:1", "busybox:1.36", true),
            ("busybox:1.36", "docker.io/library/busybox:1.36", true),
            ("busybox:1.36", "busybox:1.37", false),
            ("busybox:1.36", "busybox", false),
            ("busybox:1.36", &s("busybox", D), false),
        ],
    );
    let by_digest = SignedIdentity::exact_reference(&s("busybox", D)).unwrap();
    check(
        &by_digest,
        &[
            ("busybox:1", &s("busybox", D), true),
            ("busybox:1", &s("busybox", D2), false),
        ],
    );
    assert_eq!(
        SignedIdentity::exact_reference("busybox").unwrap_err(),
        IdentityError::NameOnly("busybox".into())
    );
    assert!(matches!(
        SignedIdentity::exact_reference("Not/Valid:1"),
        Err(IdentityError::Invalid { .. })
    ));
}

#[test]
fn exact_repository() {
    let rule = SignedIdentity::exact_repository("quay.io/vendor/busybox").unwrap();
    check(
        &rule,
        &[
            ("busybox:1", "quay.io/vendor/busybox:1", true),
            ("anything:2", "quay.io/vendor/busybox", true),
            ("busybox:1", &s("quay.io/vendor/busybox", D), true),
            ("busybox:1", "quay.io/vendor/busybox2:1", false),
            ("busybox:1", "busybox:1", false),
        ],
    );
    assert!(SignedIdentity::exact_repository("busybox").is_ok());
    assert!(SignedIdentity::exact_repository("").is_err());
}

#[test]
fn remap_identity() {
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        (
            "does-not-match.com",
            "does-not-match.rewritten",
            "busybox:latest",
            "busybox:latest",
            true,
        ),
        (
            "does-not-match.com",
            "does-not-match.rewritten",
            "busybox:latest",
            "notbusybox:latest",
            false,
        ),
        (
            "mirror.example",
            "public.com",
            "mirror.example/busybox:1",
            "public.com/busybox:1",
            true,
        ),
        (
            "mirror.example",
            "public.com",
            "mirror.example/busybox:1",
            "public.com/busybox:not1",
            false,
        ),
        (
            "mirror.example",
            "docker.io/library",
            "mirror.example/busybox:latest",
            "busybox:latest",
            true,
        ),
        (
            "mirror.example",
            "docker.io/library",
            "mirror.example/alpine:latest",
            "busybox:latest",
            false,
        ),
        (
            "docker.io/library",
            "original.com",
            "copied:latest",
            "original.com/copied:latest",
            true,
        ),
        (
            "docker.io/library",
            "original.com",
            "copied:latest",
            "original.com/ns/copied:latest",
            false,
        ),
        // prefixes are not normalised: "busybox" is a host, matching nothing on docker.io
        (
            "busybox",
            "example.com/busybox",
            "busybox:latest",
            "example.com/busybox:latest",
            false,
        ),
        // a prefix only matches whole path components
        (
            "mirror.example",
            "vendor.example",
            "prefixmirror.example/ns/image:1",
            "vendor.example/ns/image:1",
            false,
        ),
        (
            "example.com/ns/mirror",
            "example.com/ns/vendor",
            "example.com/ns/mirror:tag",
            "example.com/ns/vendor:tag",
            true,
        ),
        // then matchRepoDigestOrExact: a bare signed repository is never enough
        (
            "mirror.example",
            "vendor.example",
            "mirror.example/ns/image:1",
            "vendor.example/ns/image",
            false,
        ),
        // by digest, any tag of the remapped repository
        (
            "mirror.example",
            "vendor.example",
            &s("mirror.example/ns/image", D),
            "vendor.example/ns/image:9",
            true,
        ),
        // a rewrite that is no canonical reference never matches
        (
            "mirror.example/ns/image",
            "notlocalhost",
            "mirror.example/ns/image:tag",
            "notlocalhost:tag",
            false,
        ),
    ];
    for (prefix, signed_prefix, image, signed, want) in cases {
        let rule = SignedIdentity::remap(prefix, signed_prefix).unwrap();
        check(&rule, &[(image, signed, *want)]);
    }
}

#[test]
fn remap_prefixes_are_validated() {
    for ok in [
        "docker.io",
        "example.com:5000",
        "localhost",
        "busybox",
        "[::1]:5000",
        "example.com/ns",
        "example.com/ns/image",
        "docker.io/library",
    ] {
        assert!(SignedIdentity::remap(ok, "vendor.example").is_ok(), "{ok}");
    }
    for bad in [
        "",
        "example.com/",
        "example.com/ns:tag",
        "example.com/Upper",
        &s("example.com/ns", D),
        "-bad.example",
        "example.com:port",
        "a//b",
    ] {
        assert_eq!(
            SignedIdentity::remap("docker.io", bad).unwrap_err(),
            IdentityError::Prefix(bad.to_string()),
            "{bad}"
        );
    }
}

#[test]
fn which_rules_a_bundle_can_meet() {
    let unnamed: Vec<_> = [
        SignedIdentity::MatchExact,
        SignedIdentity::MatchRepoDigestOrExact,
        SignedIdentity::MatchRepository,
        SignedIdentity::exact_reference("busybox:1").unwrap(),
        SignedIdentity::exact_repository("busybox").unwrap(),
        SignedIdentity::remap("a.example", "b.example").unwrap(),
    ]
    .iter()
    .map(|r| (r.type_name(), r.accepts_unnamed()))
    .collect();
    assert_eq!(
        unnamed,
        [
            ("matchExact", false),
            ("matchRepoDigestOrExact", true),
            ("matchRepository", true),
            ("exactReference", false),
            ("exactRepository", true),
            ("remapIdentity", true),
        ]
    );
}

#[test]
fn docker_references_parse_like_docker() {
    for (input, want) in [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1", "docker.io/library/busybox:1"),
        (
            "index.docker.io/library/busybox",
            "docker.io/library/busybox",
        ),
        ("localhost:5000/a", "localhost:5000/a"),
        ("localhost:5000", "docker.io/library/localhost:5000"),
        (&s("busybox:1", D), &s("docker.io/library/busybox:1", D)),
    ] {
        assert_eq!(
            DockerRef::parse(input).unwrap().to_string(),
            want,
            "{input}"
        );
    }
    for bad in ["", "Busybox", "busybox:", "busybox@sha256:short", "a//b"] {
        assert!(DockerRef::parse(bad).is_err(), "{bad}");
    }
}
