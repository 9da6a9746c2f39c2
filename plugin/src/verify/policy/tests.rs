//! Loading: every key source read at load, each error naming the file, the place and the key,
//! containers/image's structural rules and messages, and what airlift refuses outright.

use super::*;
use crate::reference::Reference;
use crate::verify::signature::testkit::{self, read};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A directory holding `policy.json` with `text`, and copies of these fixtures.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(fixtures: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for f in fixtures {
            std::fs::write(dir.path().join(f), read(f)).unwrap();
        }
        Site { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("policy.json")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn load(&self, text: &str) -> Result<Policy, PolicyError> {
        std::fs::write(self.file(), text).unwrap();
        Policy::load(&self.file())
    }
}

/// `{"default":[{"type":"reject"}],"transports":{"docker":{"docker.io":[REQ]}}}`.
fn docker_io(req: &str) -> String {
    format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"docker.io":[{req}]}}}}}}"#
    )
}

const AT: &str = r#"transports.docker["docker.io"][0]"#;

/// The requirements a name gets, as text.
fn requirements_for(p: &Policy, name: &str) -> (String, Vec<String>) {
    let (scope, reqs) = p.scope_for(&Reference::parse_normalized(name).unwrap());
    (scope, reqs.iter().map(|r| r.to_string()).collect())
}

#[test]
fn every_key_source_is_read_at_load() {
    let site = Site::new(&["site.pub", "other.pub", "rekor.pub", "root.pem", "int.pem"]);
    let b64 = |f: &str| STANDARD.encode(read(f));
    // a base64 value broken over lines, as a Go []byte may be written
    let wrapped = b64("rsa.pub")
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\\n");
    let text = format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{
          "a.example/one":[{{"type":"sigstoreSigned","keyPath":"site.pub"}}],
          "a.example/two":[{{"type":"sigstoreSigned","keyPaths":["site.pub","{other}"],"rekorPublicKeyPath":"rekor.pub"}}],
          "a.example/three":[{{"type":"sigstoreSigned","keyData":"{site}","signedIdentity":{{"type":"matchExact"}}}}],
          "a.example/four":[{{"type":"sigstoreSigned","keyDatas":["{site}","{wrapped}"],"rekorPublicKeyDatas":["{rekor}"]}}],
          "a.example/five":[{{"type":"sigstoreSigned","fulcio":{{"caPath":"root.pem","oidcIssuer":"https://issuer.example.com","subjectEmail":"s@example.com"}},"rekorPublicKeyData":"{rekor}"}}],
          "a.example/six":[{{"type":"sigstoreSigned","pki":{{"caRootsData":"{root}","caIntermediatesPath":"int.pem","subjectHostname":"signer.example.com"}}}}]
        }}}}}}"#,
        other = site.path("other.pub"),
        site = b64("site.pub"),
        rekor = b64("rekor.pub"),
        root = b64("root.pem"),
    );
    let p = site.load(&text).unwrap();
    let one = |name: &str| requirements_for(&p, name).1.remove(0);
    // relative paths from the policy's directory; the default identity rule
    assert_eq!(
        one("a.example/one:1"),
        format!(
            "sigstoreSigned {}, signedIdentity matchRepoDigestOrExact",
            site.path("site.pub")
        )
    );
    assert_eq!(
        one("a.example/two:1"),
        format!(
            "sigstoreSigned {}, {} with a Rekor SET, signedIdentity matchRepoDigestOrExact",
            site.path("site.pub"),
            site.path("other.pub")
        )
    );
    assert_eq!(
        one("a.example/three:1"),
        "sigstoreSigned keyData, signedIdentity matchExact"
    );
    assert_eq!(
        one("a.example/four:1"),
        "sigstoreSigned keyDatas[0], keyDatas[1] with a Rekor SET, signedIdentity matchRepoDigestOrExact"
    );
    assert_eq!(
        one("a.example/five:1"),
        format!(
            "sigstoreSigned fulcio (CA {}, issuer https://issuer.example.com, email s@example.com) with a Rekor SET, signedIdentity matchRepoDigestOrExact",
            site.path("root.pem")
        )
    );
    assert_eq!(
        one("a.example/six:1"),
        "sigstoreSigned pki (CA roots caRootsData, signer.example.com), signedIdentity matchRepoDigestOrExact"
    );
}

#[test]
fn each_key_error_names_the_file_the_place_and_the_key() {
    let site = Site::new(&["site.pub", "p521.pub", "rsa.pub", "root.pem"]);
    let not_pem = STANDARD.encode("not a key");
    let cases: Vec<(String, String, String)> = vec![
        (
            docker_io(r#"{"type":"sigstoreSigned","keyPath":"missing.pub"}"#),
            format!(
                "{AT}: cannot read public key {}: ",
                site.path("missing.pub")
            ),
            "No such file".into(),
        ),
        (
            docker_io(r#"{"type":"sigstoreSigned","keyPaths":["site.pub","p521.pub"]}"#),
            format!("{AT}: public key {}: ", site.path("p521.pub")),
            "unsupported key type: ECDSA P-521".into(),
        ),
        (
            docker_io(r#"{"type":"sigstoreSigned","keyPath":"root.pem"}"#),
            format!("{AT}: public key {}: ", site.path("root.pem")),
            r#"a PEM block of type "CERTIFICATE", not a PUBLIC KEY"#.into(),
        ),
        (
            docker_io(&format!(
                r#"{{"type":"sigstoreSigned","keyDatas":["{}","{not_pem}"]}}"#,
                STANDARD.encode(read("site.pub"))
            )),
            format!("{AT}: public key keyDatas[1]: "),
            "no PEM block found".into(),
        ),
        (
            docker_io(
                r#"{"type":"sigstoreSigned","keyPath":"site.pub","rekorPublicKeyPath":"rsa.pub"}"#,
            ),
            format!("{AT}: Rekor public key {}: ", site.path("rsa.pub")),
            "not an ECDSA key".into(),
        ),
        (
            docker_io(
                r#"{"type":"sigstoreSigned","fulcio":{"caPath":"/nonexistent/fulcio.pem","oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyPath":"site.pub"}"#,
            ),
            format!("{AT}.fulcio: cannot read Fulcio CA /nonexistent/fulcio.pem: "),
            "No such file".into(),
        ),
        (
            docker_io(
                r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"site.pub","subjectEmail":"e"}}"#,
            ),
            format!("{AT}.pki: PKI CA roots {}: ", site.path("site.pub")),
            "no certificate found".into(),
        ),
        (
            docker_io(
                r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"root.pem","caIntermediatesPath":"int.pem","subjectEmail":"e"}}"#,
            ),
            format!(
                "{AT}.pki: cannot read PKI CA intermediates {}: ",
                site.path("int.pem")
            ),
            "No such file".into(),
        ),
        (
            docker_io(r#"{"type":"sigstoreSigned","keyData":"@@@"}"#),
            format!("{AT}: keyData: illegal base64 data"),
            "Invalid symbol".into(),
        ),
        // the default applies too, and is named
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"missing.pub"}]}"#.into(),
            format!(
                "default[0]: cannot read public key {}",
                site.path("missing.pub")
            ),
            "No such file".into(),
        ),
    ];
    for (text, place, why) in cases {
        let e = site.load(&text).unwrap_err().to_string();
        let file = site.file().display().to_string();
        assert!(e.contains(&format!("policy {file}: ")), "{text}\n{e}");
        assert!(e.contains(&place) && e.contains(&why), "{text}\n{e}");
    }
}

#[test]
fn the_rules_of_containers_policy_json() {
    let site = Site::new(&["site.pub", "root.pem"]);
    let key = r#""keyPath":"site.pub""#;
    let fulcio = r#""fulcio":{"caPath":"root.pem","oidcIssuer":"i","subjectEmail":"e"}"#;
    let pki = r#""pki":{"caRootsPath":"root.pem","subjectEmail":"e"}"#;
    let sig = |fields: &str| docker_io(&format!(r#"{{"type":"sigstoreSigned",{fields}}}"#));
    let cases = [
        ("{}".to_string(), "default: Default policy is missing"),
        (r#"{"default":[]}"#.into(), "default: List of verification policy requirements must not be empty"),
        (r#"{"default":[{"type":"reject"}],"extra":1}"#.into(), r#"Unknown key "extra""#),
        (r#"{"default":[{"type":"reject"}],"default":[{"type":"reject"}]}"#.into(), r#"Duplicate key "default""#),
        (r#"{"default":{"type":"reject"}}"#.into(), "default: list of requirements expected"),
        (r#"{"default":[{"type":"signedByX"}]}"#.into(), r#"default[0]: Unknown policy requirement type "signedByX""#),
        (r#"{"default":[{"type":"reject","keyPath":"x"}]}"#.into(), r#"default[0]: Unknown key "keyPath""#),
        (docker_io(r#"{"type":"insecureAcceptAnything","x":1}"#), r#"Unknown key "x""#),
        (sig(r#""signedIdentity":{"type":"matchRepository"}"#), "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio, and pki must be specified"),
        (sig(&format!(r#"{key},"keyData":"""#)), "exactly one of keyPath"),
        (sig(&format!("{key},{pki}")), "exactly one of keyPath"),
        (sig(r#""keyPaths":[]"#), r#""keyPaths" contains no entries"#),
        (sig(&format!(r#"{key},"rekorPublicKeyPath":"site.pub","rekorPublicKeyPaths":["site.pub"]"#)), "at most one of rekorPublickeyPath"),
        (sig(fulcio), "must be specified if fulcio is used"),
        (sig(&format!(r#"{pki},"rekorPublicKeyPath":"site.pub""#)), "are not supported for pki"),
        (sig(r#""fulcio":{"caPath":"root.pem","subjectEmail":"e"},"rekorPublicKeyPath":"site.pub""#), "fulcio: oidcIssuer not specified"),
        (sig(r#""fulcio":{"caPath":"root.pem","caData":"","oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyPath":"site.pub""#), "caPath and caData cannot be used simultaneously"),
        (sig(r#""fulcio":{"oidcIssuer":"i","subjectEmail":"e","caFile":"x"},"rekorPublicKeyPath":"site.pub""#), r#"fulcio: Unknown key "caFile""#),
        (sig(r#""pki":{"caRootsPath":"root.pem"}"#), "At least one of subjectEmail, subjectHostname must be specified"),
        (sig(&format!(r#"{key},"signedIdentity":{{"type":"matchEverything"}}"#)), r#"signedIdentity: Unknown policy reference match type "matchEverything""#),
        (sig(&format!(r#"{key},"signedIdentity":{{"type":"matchExact","x":1}}"#)), r#"signedIdentity: Unknown key "x""#),
        (sig(&format!(r#"{key},"signedIdentity":{{"type":"exactReference","dockerReference":"busybox"}}"#)), "signedIdentity: dockerReference \"busybox\" contains neither a tag nor digest"),
        (sig(&format!(r#"{key},"signedIdentity":{{"type":"exactRepository"}}"#)), r#"Key "dockerRepository" missing"#),
        (sig(&format!(r#"{key},"signedIdentity":{{"type":"remapIdentity","prefix":"docker.io","signedPrefix":"a.example/x:1"}}"#)), r#"prefix "a.example/x:1" is not valid"#),
        // other transports are held to the same rules
        (r#"{"default":[{"type":"reject"}],"transports":{"atomic":{"":[]}}}"#.into(), r#"transports.atomic[""]: List of verification policy requirements must not be empty"#),
        (r#"{"default":[{"type":"reject"}],"transports":{"oci":{"":[{"type":"sigstoreSigned"}]}}}"#.into(), r#"transports.oci[""][0]: exactly one of keyPath"#),
        (r#"{"default":[{"type":"reject"}],"transports":{"atomic":{"":[{"type":"signedBy","keyType":"PGP","keyPath":"k"}]}}}"#.into(), r#"invalid keyType "PGP""#),
        (r#"{"default":[{"type":"reject"}],"transports":{"atomic":{"":[{"type":"signedBaseLayer"}]}}}"#.into(), r#"Key "baseLayerIdentity" missing"#),
    ];
    for (text, want) in cases {
        let e = site.load(&text).unwrap_err().to_string();
        let file = site.file().display().to_string();
        assert!(
            e.starts_with(&format!("invalid policy {file}: ")),
            "{text}\n{e}"
        );
        assert!(e.contains(want), "{text}\n{e}");
    }
}

#[test]
fn gpg_and_base_layer_requirements_are_refused_where_they_apply() {
    let site = Site::new(&[]);
    for (text, at, kind) in [
        (
            docker_io(r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/etc/pki/rpm-gpg/KEY"}"#),
            AT,
            "signedBy",
        ),
        (
            r#"{"default":[{"type":"signedBaseLayer","baseLayerIdentity":{"type":"matchRepository"}}]}"#.into(),
            "default[0]",
            "signedBaseLayer",
        ),
    ] {
        let e = site.load(&text).unwrap_err();
        assert!(matches!(e, PolicyError::Unsupported { .. }), "{e}");
        assert_eq!(
            e.to_string().split(" (").next().unwrap(),
            format!(
                "policy {}: {at}: {kind} requirements are not supported by airlift",
                site.file().display()
            )
        );
    }
    // in a transport airlift does not import from, they are checked and ignored, as are the
    // keys of its sigstoreSigned requirements (never read)
    let p = site
        .load(
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{
                 "atomic":{"":[{"type":"signedBy","keyType":"GPGKeys","keyPaths":["/nonexistent/a"],"signedIdentity":{"type":"matchRepository"}}]},
                 "containers-storage":{"":[{"type":"signedBaseLayer","baseLayerIdentity":{"type":"exactRepository","dockerRepository":"busybox"}}]},
                 "docker-daemon":{"":[{"type":"sigstoreSigned","keyPath":"/nonexistent/key.pub"}]}}}"#,
        )
        .unwrap();
    assert_eq!(
        requirements_for(&p, "busybox:1"),
        (
            "default".to_string(),
            vec!["insecureAcceptAnything".to_string()]
        )
    );
}

#[test]
fn a_policy_that_cannot_be_read() {
    let e = Policy::load(Path::new("/nonexistent/policy.json")).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("cannot read policy /nonexistent/policy.json: "),
        "{e}"
    );
    let e = Policy::parse("{", Path::new("/")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid policy (inline policy): EOF"),
        "{e}"
    );
}

#[test]
fn parse_takes_relative_paths_from_its_base() {
    let p = Policy::parse(
        r#"{"default":[{"type":"sigstoreSigned","keyPath":"site.pub"}]}"#,
        &testkit::dir(),
    )
    .unwrap();
    assert_eq!(
        requirements_for(&p, "busybox:1").1,
        [format!(
            "sigstoreSigned {}, signedIdentity matchRepoDigestOrExact",
            testkit::path("site.pub")
        )]
    );
}
