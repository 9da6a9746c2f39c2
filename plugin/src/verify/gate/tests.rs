//! The gate in whole imports on the containerd fake: OCI layouts carrying cosign signatures in
//! the shapes people make, what is recorded for an allowed image and nothing for a refused one.

use super::*;
use crate::archive::understand::attached;
use crate::import::{run, Alone, ImportOptions, Placement, Report, Source};
use crate::testing::{runtime, tar};
use crate::testkit::fake::Fake;
use crate::verify::signature::{
    self,
    testkit::{path, payload, sign},
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// An OCI layout being built: blobs and index.json entries.
#[derive(Default)]
struct Layout {
    blobs: Vec<(String, Vec<u8>)>,
    entries: Vec<serde_json::Value>,
}

impl Layout {
    fn blob(&mut self, media_type: &str, bytes: Vec<u8>) -> serde_json::Value {
        let d = Digest::of(&bytes);
        let size = bytes.len();
        self.blobs
            .push((format!("blobs/sha256/{}", d.hex()), bytes));
        json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
    }

    /// A one-layer image; its manifest's descriptor.
    fn image(&mut self, tag: &str) -> serde_json::Value {
        let config = json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}});
        let config = self.blob(crate::oci::MEDIA_OCI_CONFIG, config.to_string().into());
        let layer = self.blob(
            "application/vnd.oci.image.layer.v1.tar",
            format!("layer of {tag}").into_bytes(),
        );
        let m = json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_OCI_MANIFEST,
            "config": config, "layers": [layer]});
        self.blob(crate::oci::MEDIA_OCI_MANIFEST, m.to_string().into())
    }

    /// A `.sig` manifest for `subject` signed by `key` for `identity`; its descriptor.
    fn signature(&mut self, subject: &Digest, identity: &str, key: &str) -> serde_json::Value {
        let p = payload(subject, identity);
        let sig = STANDARD.encode(sign(key, &p));
        let mut layer = self.blob(signature::SIMPLE_SIGNING_MEDIA_TYPE, p);
        layer["annotations"] = json!({signature::SIGNATURE_ANNOTATION: sig});
        let config = self.blob(crate::oci::MEDIA_OCI_CONFIG, b"{}".to_vec());
        let m = json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_OCI_MANIFEST,
            "config": config, "layers": [layer]});
        self.blob(crate::oci::MEDIA_OCI_MANIFEST, m.to_string().into())
    }

    fn entry(&mut self, mut desc: serde_json::Value, annotations: serde_json::Value) {
        desc["annotations"] = annotations;
        self.entries.push(desc);
    }

    fn write(mut self, dir: &Path, name: &str) -> PathBuf {
        let index = json!({"schemaVersion": 2, "manifests": self.entries});
        self.blobs
            .push(("index.json".into(), index.to_string().into()));
        self.blobs.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        let p = dir.join(name);
        std::fs::write(&p, tar(&self.blobs)).unwrap();
        p
    }
}

fn digest_of(desc: &serde_json::Value) -> Digest {
    desc["digest"].as_str().unwrap().parse().unwrap()
}

fn named(name: &str) -> serde_json::Value {
    json!({crate::oci::ANNOTATION_IMAGE_NAME: name})
}

/// Imports `archive` on `fake` with `settings`.
fn import(fake: &Fake, archive: &Path, settings: Settings) -> Report {
    let gate = Gate::load(&settings).unwrap().map(Arc::new);
    let mut opts = crate::testing::all_platforms();
    opts.plan.named = gate
        .as_ref()
        .map(|g| g.names_by_digest())
        .unwrap_or_default();
    let opts = ImportOptions {
        verify: gate,
        ..opts
    };
    runtime()
        .block_on(run(
            &fake.client(),
            &Placement::Remote("test".into()),
            &Source::File(archive.to_path_buf()),
            &opts,
            Arc::new(AtomicU64::new(0)),
            &Alone,
        ))
        .unwrap()
}

/// A policy file requiring the site key for `registry.example.com`, accepting the rest.
fn site_policy(dir: &Path, identity: &str) -> PathBuf {
    let p = dir.join("policy.json");
    let policy = json!({"default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {"registry.example.com": [{"type": "sigstoreSigned",
            "keyPath": path("site.pub"), "signedIdentity": {"type": identity}}]}}});
    std::fs::write(&p, policy.to_string()).unwrap();
    p
}

#[test]
fn a_signed_image_is_imported_with_its_signature_and_an_unsigned_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::default();
    let good = l.image("good");
    let bad = l.image("bad");
    let free = l.image("free");
    let sig = l.signature(
        &digest_of(&good),
        "registry.example.com/team/app",
        "site.p8",
    );
    l.entry(good.clone(), named("registry.example.com/team/app:1"));
    l.entry(bad.clone(), named("registry.example.com/team/other:1"));
    l.entry(free, named("docker.io/library/free:1"));
    let tag = format!("sha256-{}.sig", digest_of(&good).hex());
    l.entry(sig.clone(), json!({crate::oci::ANNOTATION_REF_NAME: tag}));
    let archive = l.write(dir.path(), "signed.tar");
    let fake = Fake::new();
    let policy = site_policy(dir.path(), "matchRepository");
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy.clone()),
            ..Settings::default()
        },
    );
    let images = fake.state().images.clone();
    // The signed image, its signature under cosign's tag, and the image no scope restricts.
    let app = &images["registry.example.com/team/app:1"];
    assert!(app.labels[VERIFIED_LABEL].contains("signed by"), "{app:?}");
    let sig_name = format!("registry.example.com/team/app:{tag}");
    assert_eq!(images[&sig_name].digest, sig["digest"].as_str().unwrap());
    assert_eq!(
        images[&sig_name].labels[attached::SUBJECT_LABEL],
        good["digest"].as_str().unwrap()
    );
    assert_eq!(
        images[&sig_name].labels[crate::labels::CRI_PINNED],
        "pinned"
    );
    assert!(images.contains_key("docker.io/library/free:1"));
    // The unsigned one: no record, no blob of its own held, a failure naming it and why.
    assert!(!images.contains_key("registry.example.com/team/other:1"));
    assert_eq!(images.len(), 3, "{:?}", images.keys());
    let why = &r.refused["registry.example.com/team/other:1"];
    assert!(why.contains("refused by policy scope"), "{why}");
    assert!(why.contains("A signature was required"), "{why}");
    assert!(r
        .failed
        .iter()
        .any(|f| f.contains("team/other:1") && f.contains("refused")));
    let lease = r.lease.clone().unwrap();
    let held = &fake.state().leases[&lease];
    assert!(
        !format!("{held:?}").contains(digest_of(&bad).hex()),
        "{held:?}"
    );
    assert_eq!(r.verified.len(), 2, "{:?}", r.verified);
}

#[test]
fn a_signature_for_another_name_or_key_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::default();
    let img = l.image("app");
    let d = digest_of(&img);
    let sig = l.signature(&d, "registry.example.com/team/app:1", "site.p8");
    l.entry(img, named("registry.example.com/evil/app:1"));
    l.entry(
        sig,
        json!({crate::oci::ANNOTATION_REF_NAME: format!("sha256-{}.sig", d.hex())}),
    );
    let archive = l.write(dir.path(), "renamed.tar");
    let fake = Fake::new();
    let policy = site_policy(dir.path(), "matchRepoDigestOrExact");
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy),
            ..Settings::default()
        },
    );
    let why = &r.refused["registry.example.com/evil/app:1"];
    assert!(
        why.contains("signed for registry.example.com/team/app:1")
            && why.contains("named registry.example.com/evil/app:1"),
        "{why}"
    );
    // Neither the image nor its signature is recorded.
    assert!(fake.state().images.is_empty(), "{:?}", fake.state().images);

    // Signed by a key the policy does not name.
    let mut l = Layout::default();
    let img = l.image("app");
    let d = digest_of(&img);
    let sig = l.signature(&d, "registry.example.com/team/app", "leaf.p8");
    l.entry(img, named("registry.example.com/team/app:1"));
    l.entry(
        sig,
        json!({crate::oci::ANNOTATION_REF_NAME: format!("sha256-{}.sig", d.hex())}),
    );
    let archive = l.write(dir.path(), "other-key.tar");
    let policy = site_policy(dir.path(), "matchRepository");
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy),
            ..Settings::default()
        },
    );
    let why = &r.refused["registry.example.com/team/app:1"];
    assert!(
        why.contains(&format!("no signature by {}", path("site.pub"))),
        "{why}"
    );
}

#[test]
fn cosign_save_layouts_are_named_by_the_lock_and_held_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::default();
    let img = l.image("app");
    let d = digest_of(&img);
    let sig = l.signature(&d, "registry.example.com/team/app", "site.p8");
    l.entry(
        img,
        json!({attached::COSIGN_KIND: "dev.cosignproject.cosign/image"}),
    );
    l.entry(
        sig,
        json!({attached::COSIGN_KIND: attached::KIND_SIGNATURES}),
    );
    let archive = l.write(dir.path(), "saved.tar");
    let policy = site_policy(dir.path(), "matchRepository");
    // Without a name the image is skipped, and the message says how to name it.
    let fake = Fake::new();
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy.clone()),
            ..Settings::default()
        },
    );
    assert!(fake.state().images.is_empty());
    assert!(r.skipped.iter().any(|s| s.contains("cosign save")), "{r:?}");
    // A lock line names it, and its signature (found by its payload) lets it in.
    let lock = dir.path().join("lock");
    std::fs::write(&lock, format!("registry.example.com/team/app:1@{d}\n")).unwrap();
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy),
            lock: Some(lock.clone()),
            ..Settings::default()
        },
    );
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    let names: Vec<String> = fake.state().images.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "registry.example.com/team/app:1".to_string(),
            format!("registry.example.com/team/app:sha256-{}.sig", d.hex())
        ]
    );
    assert!(r.verified["registry.example.com/team/app:1"][0].starts_with("digest lock"));

    // A lock naming another digest for a named image refuses it.
    let mut l = Layout::default();
    let img = l.image("other");
    l.entry(img, named("registry.example.com/team/app:1"));
    let archive = l.write(dir.path(), "unlocked.tar");
    let fake = Fake::new();
    let r = import(
        &fake,
        &archive,
        Settings {
            lock: Some(lock),
            ..Settings::default()
        },
    );
    let why = &r.refused["registry.example.com/team/app:1"];
    assert!(why.contains(&format!("lock says {d}")), "{why}");
    assert!(fake.state().images.is_empty());
}

#[test]
fn verifier_plugins_judge_imports_as_pulls() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("acme-check");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$2\" in *evil*) echo \"evil is refused\"; exit 1;; esac\necho fine\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut l = Layout::default();
    let a = l.image("a");
    let b = l.image("b");
    l.entry(a, named("registry.example.com/good/app:1"));
    l.entry(b, named("registry.example.com/evil/app:1"));
    let archive = l.write(dir.path(), "judged.tar");
    let fake = Fake::new();
    let r = import(
        &fake,
        &archive,
        Settings {
            verifier_bin_dir: Some(bin),
            ..Settings::default()
        },
    );
    let why = &r.refused["registry.example.com/evil/app:1"];
    assert!(
        why.contains("acme-check") && why.contains("evil is refused"),
        "{why}"
    );
    let names: Vec<String> = fake.state().images.keys().cloned().collect();
    assert_eq!(names, ["registry.example.com/good/app:1"]);
}

#[test]
fn settings_that_cannot_be_used_stop_before_any_import() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.json");
    std::fs::write(
        &p,
        r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/site.pub"}]}"#,
    )
    .unwrap();
    let e = Gate::load(&Settings {
        policy: Some(p.clone()),
        ..Settings::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&p.display().to_string()) && e.contains("/nonexistent/site.pub"),
        "{e}"
    );
    assert!(Gate::load(&Settings::default()).unwrap().is_none());
    let cfg: Settings = toml::from_str(
        "policy = \"/etc/containers/policy.json\"\nper_verifier_timeout = \"1m30s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.per_verifier_timeout, Some(Duration::from_secs(90)));
    assert!(toml::from_str::<Settings>("polcy = \"x\"").is_err());
}

impl Layout {
    /// A Sigstore bundle referrer of `subject` signed by `key`; its descriptor.
    fn bundle(&mut self, subject: &serde_json::Value, key: &str) -> serde_json::Value {
        use crate::verify::signature::testkit::{make_bundle, statement};
        let st = statement(&digest_of(subject), "https://sigstore.dev/cosign/sign/v1");
        let Signature::Bundle { bundle, .. } =
            make_bundle(key, &st, json!({"publicKey": {"hint": ""}}))
        else {
            unreachable!()
        };
        let layer = self.blob(signature::BUNDLE_MEDIA_TYPE, bundle);
        let config = self.blob("application/vnd.oci.empty.v1+json", b"{}".to_vec());
        let m = json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_OCI_MANIFEST,
            "artifactType": signature::BUNDLE_MEDIA_TYPE, "config": config, "layers": [layer],
            "subject": subject});
        self.blob(crate::oci::MEDIA_OCI_MANIFEST, m.to_string().into())
    }
}

#[test]
fn bundles_count_in_every_shape_a_layout_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let policy = site_policy(dir.path(), "matchRepository");
    for shape in ["listed", "unlisted", "referrers tag"] {
        let mut l = Layout::default();
        let img = l.image("app");
        let d = digest_of(&img);
        let referrer = l.bundle(&img, "site.p8");
        l.entry(img.clone(), named("registry.example.com/team/app:1"));
        match shape {
            "listed" => l.entry(referrer.clone(), json!({})),
            "unlisted" => {}
            _ => {
                let mut child = referrer.clone();
                child["artifactType"] = json!(signature::BUNDLE_MEDIA_TYPE);
                let index = json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_OCI_INDEX,
                    "manifests": [child]});
                let index = l.blob(crate::oci::MEDIA_OCI_INDEX, index.to_string().into());
                l.entry(
                    index,
                    json!({crate::oci::ANNOTATION_REF_NAME: format!("sha256-{}", d.hex())}),
                );
            }
        }
        let archive = l.write(dir.path(), "bundled.tar");
        let fake = Fake::new();
        let r = import(
            &fake,
            &archive,
            Settings {
                policy: Some(policy.clone()),
                ..Settings::default()
            },
        );
        assert!(r.refused.is_empty(), "{shape}: {:?}", r.refused);
        assert!(
            r.verified["registry.example.com/team/app:1"][0].contains("bundle"),
            "{shape}: {:?}",
            r.verified
        );
        // The referrers are recorded under the referrers tag, listed with their artifact type.
        let tag = format!("registry.example.com/team/app:sha256-{}", d.hex());
        let rec = fake
            .image(&tag)
            .unwrap_or_else(|| panic!("{shape}: no {tag}"));
        let index: serde_json::Value = serde_json::from_slice(
            &fake.state().blobs[&rec.digest.parse::<Digest>().unwrap()].data,
        )
        .unwrap();
        assert_eq!(
            index["manifests"][0]["digest"], referrer["digest"],
            "{shape}"
        );
        assert_eq!(
            index["manifests"][0]["artifactType"],
            signature::BUNDLE_MEDIA_TYPE,
            "{shape}"
        );
        // Only the image and its referrers index: the bundle is no image of its own.
        assert_eq!(
            fake.state().images.len(),
            2,
            "{shape}: {:?}",
            fake.state().images.keys()
        );
    }
    // A bundle by another key does not count.
    let mut l = Layout::default();
    let img = l.image("app");
    let referrer = l.bundle(&img, "leaf.p8");
    l.entry(img, named("registry.example.com/team/app:1"));
    l.entry(referrer, json!({}));
    let archive = l.write(dir.path(), "other-bundle.tar");
    let fake = Fake::new();
    let r = import(
        &fake,
        &archive,
        Settings {
            policy: Some(policy),
            ..Settings::default()
        },
    );
    assert!(
        r.refused.contains_key("registry.example.com/team/app:1"),
        "{r:?}"
    );
    assert!(fake.state().images.is_empty());
}

#[test]
fn a_docker_save_archive_is_verified_by_the_signatures_file_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let layer = b"an uncompressed layer tar, as docker save keeps it".to_vec();
    let diff_id = Digest::of(&layer);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}})
    .to_string()
    .into_bytes();
    let config_digest = Digest::of(&config);
    let manifest = json!([{"Config": format!("{}.json", config_digest.hex()),
        "RepoTags": ["registry.example.com/team/app:1", "registry.example.com/team/unsigned:1"],
        "Layers": ["l/layer.tar"]}]);
    let archive = dir.path().join("app.tar");
    std::fs::write(
        &archive,
        tar(&[
            (
                "manifest.json".to_string(),
                manifest.to_string().into_bytes(),
            ),
            (format!("{}.json", config_digest.hex()), config.clone()),
            ("l/layer.tar".to_string(), layer.clone()),
        ]),
    )
    .unwrap();
    // The registry's manifest: the same config, the layer compressed (any bytes will do: only
    // the config links the manifest to the archive's content).
    let mut side = Layout::default();
    let cfg = side.blob(crate::oci::MEDIA_OCI_CONFIG, config);
    let gz = side.blob(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        b"gzip of it".to_vec(),
    );
    let m = json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_OCI_MANIFEST,
        "config": cfg, "layers": [gz]});
    let registry_manifest = side.blob(crate::oci::MEDIA_OCI_MANIFEST, m.to_string().into());
    let signed = digest_of(&registry_manifest);
    let sig = side.signature(&signed, "registry.example.com/team/app", "site.p8");
    side.entry(registry_manifest, named("registry.example.com/team/app:1"));
    side.entry(
        sig,
        json!({crate::oci::ANNOTATION_REF_NAME: format!("sha256-{}.sig", signed.hex())}),
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        json!({"default": [{"type": "sigstoreSigned", "keyPath": path("site.pub"),
            "signedIdentity": {"type": "matchRepository"}}]})
        .to_string(),
    )
    .unwrap();
    let settings = Settings {
        policy: Some(policy),
        ..Settings::default()
    };
    // Without the signatures file, nothing is signed.
    let fake = Fake::new();
    let r = import(&fake, &archive, settings.clone());
    assert_eq!(r.refused.len(), 2, "{r:?}");
    assert!(fake.state().images.is_empty());
    // With it, the name the signature is for gets in; the other name of the image does not.
    side.write(dir.path(), "app.tar.sigs");
    let r = import(&fake, &archive, settings);
    assert!(
        r.verified.contains_key("registry.example.com/team/app:1"),
        "{r:?}"
    );
    let why = &r.refused["registry.example.com/team/unsigned:1"];
    assert!(
        why.contains("signed for registry.example.com/team/app"),
        "{why}"
    );
    let names: Vec<String> = fake.state().images.keys().cloned().collect();
    assert_eq!(names, ["registry.example.com/team/app:1"]);
    assert!(crate::daemon::ignored("app.tar.sigs"));
}

#[test]
fn a_signature_containerd_already_holds_counts_too() {
    let dir = tempfile::tempdir().unwrap();
    let policy = site_policy(dir.path(), "matchRepository");
    let settings = Settings {
        policy: Some(policy),
        ..Settings::default()
    };
    // First the image with its signature, then an archive of the same image without it.
    let mut l = Layout::default();
    let img = l.image("app");
    let d = digest_of(&img);
    let sig = l.signature(&d, "registry.example.com/team/app", "site.p8");
    l.entry(img.clone(), named("registry.example.com/team/app:1"));
    l.entry(
        sig,
        json!({crate::oci::ANNOTATION_REF_NAME: format!("sha256-{}.sig", d.hex())}),
    );
    let signed = l.write(dir.path(), "signed.tar");
    let mut l = Layout::default();
    let again = l.image("app");
    assert_eq!(digest_of(&again), d);
    l.entry(again, named("registry.example.com/team/app:2"));
    let bare = l.write(dir.path(), "bare.tar");
    let fake = Fake::new();
    // Alone, the bare archive is refused.
    let r = import(&fake, &bare, settings.clone());
    assert_eq!(r.refused.len(), 1, "{r:?}");
    let r = import(&fake, &signed, settings.clone());
    assert!(r.refused.is_empty(), "{r:?}");
    let r = import(&fake, &bare, settings);
    assert!(r.refused.is_empty(), "{r:?}");
    assert!(fake.image("registry.example.com/team/app:2").is_some());
}
