//! End-to-end: signature verification at import (`airlift import --policy`, `--lock`,
//! `--verifier-bin-dir`; `airlift serve` with `[verify]`), against real containerd and real
//! cosign signatures ([`common::signed`]: images on a loopback `docker-registry` signed by
//! cosign 3.x, copied out into OCI layout archives with their signatures).
//!
//! An image the policy, the lock or a verifier refuses is not created (no image record, no
//! lease holding its blobs) and named on stderr with the reason, the import's exit status is 1,
//! and the other images of the command are imported; an image that passes is imported and
//! pinned with its signature manifests recorded beside it. Each test skips, saying why, when
//! cosign, `docker-registry`, `skopeo` or containerd are not provisioned.

mod common;

use airlift_integration::{Containerd, Version};
use common::daemon::Daemon;
use common::signed::{self, Archive, Signed};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The namespace CRI uses, where the images land.
const NS: &str = "k8s.io";

/// A policy refusing everything but images of `registry.example.com` signed by the site key
/// (the default `signedIdentity`, `matchRepoDigestOrExact`).
fn policy(set: &Signed, dir: &Path) -> PathBuf {
    write_policy(
        dir,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {"registry.example.com": [
                {"type": "sigstoreSigned", "keyPath": set.site_pub},
            ]}},
        }),
    )
}

/// `policy.json` in `dir` with `value`.
fn write_policy(dir: &Path, value: serde_json::Value) -> PathBuf {
    let path = dir.join("policy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    path
}

/// A scratch directory for policies, locks and verifiers, removed when dropped.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("airlift-verify")
        .tempdir_in("/tmp")
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `airlift import` into [`NS`] with `args`, its output shown on failures.
fn run(ctd: &Containerd, args: &[&str]) -> Output {
    let out = import(ctd, NS, args);
    eprintln!(
        "airlift import {args:?}: {}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    out
}

/// Asserts that `out` succeeded with nothing refused.
fn assert_ok(out: &Output) {
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("refused"),
        "{}\nstderr:\n{stderr}\nstdout:\n{}",
        out.status,
        text(&out.stdout)
    );
}

/// Asserts that `out` exited with status 1 and names `archive`'s image as refused on a line
/// of stderr that has each of `reasons` too; that line.
fn assert_refused(out: &Output, archive: &Archive, reasons: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let archive_path = archive.path.display().to_string();
    let line = stderr
        .lines()
        .find(|l| l.contains(&archive_path) && l.contains(&archive.name) && l.contains("refused"))
        .unwrap_or_else(|| {
            panic!(
                "no line names {archive_path} and {} as refused:\n{stderr}",
                archive.name
            )
        });
    for reason in reasons {
        assert!(line.contains(reason), "{reason:?} missing from {line:?}");
    }
    line.to_string()
}

/// Asserts that `archive`'s image is imported under its name and pinned, its signature
/// manifests recorded as `records` (name, digest when known), pinned too.
fn assert_imported(ctd: &Containerd, archive: &Archive, records: &[(String, Option<&str>)]) {
    let rt = rt();
    let all = images(&rt, ctd, NS);
    let listed: Vec<(&str, &str)> = all
        .iter()
        .map(|i| (i.name.as_str(), i.digest.as_str()))
        .collect();
    let mut wanted = vec![(archive.name.clone(), Some(archive.digest.as_str()))];
    wanted.extend(records.iter().cloned());
    for (name, digest) in wanted {
        let image = all
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} not imported; images: {listed:?}"));
        if let Some(digest) = digest {
            assert_eq!(image.digest, digest, "{name}");
        }
        assert_pinned(image);
    }
}

/// Asserts that nothing of `archive`'s image is in containerd: no image record by its name or
/// with its digest (`ctr images ls` agrees), and no lease holds any of its blobs.
fn assert_absent(ctd: &Containerd, archive: &Archive) {
    let rt = rt();
    let records = image_pairs(&rt, ctd, NS);
    assert!(
        !records
            .iter()
            .any(|(n, d)| *n == archive.name || *d == archive.digest),
        "{} ({}) was created: {records:?}",
        archive.name,
        archive.digest
    );
    let listed = ctd.ctr_output(&["-n", NS, "images", "ls"]).unwrap();
    assert!(
        !listed.contains(&archive.name) && !listed.contains(&archive.digest),
        "ctr lists {}:\n{listed}",
        archive.name
    );
    let c = client(&rt, ctd, NS);
    for lease in rt.block_on(c.list_leases("")).unwrap() {
        let held = rt.block_on(c.lease_content(&lease)).unwrap();
        for blob in &archive.blobs {
            assert!(
                !held.contains(blob),
                "lease {lease} holds {blob} of the refused {}",
                archive.name
            );
        }
    }
}

/// Asserts that nothing was imported at all: no image record, none of `archive`'s blobs in
/// the content store.
fn assert_nothing_imported(ctd: &Containerd, archive: &Archive) {
    let rt = rt();
    assert_eq!(image_pairs(&rt, ctd, NS), vec![]);
    let on_disk = blobs_on_disk(ctd);
    for blob in &archive.blobs {
        assert!(!on_disk.contains(blob), "{blob} was stored");
    }
}

/// The `.sig` record of a simple-signed archive: `<repo>:sha256-<hex>.sig` → the `.sig`
/// manifest.
fn sig_record(archive: &Archive) -> (String, Option<&str>) {
    (archive.sig_name(), Some(archive.signatures[0].as_str()))
}

/// An archive holding a signed image and an unsigned one, imported under the policy: the
/// signed one is imported and pinned with its `.sig` record; the unsigned one is refused (exit
/// status 1, named with the reason), created nowhere.
fn accepted_and_refused(version: Version) {
    let Some(set) = signed::provisioned(version) else {
        return;
    };
    let ctd = Containerd::start(version).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.mixed.arg()],
    );
    let unsigned = Archive {
        path: set.mixed.path.clone(),
        ..set.unsigned.clone()
    };
    assert_refused(&out, &unsigned, &["signature"]);
    assert_not_refused(&out, signed::SIMPLE);
    assert_imported(&ctd, &set.mixed, &[sig_record(&set.mixed)]);
    assert_absent(&ctd, &unsigned);
    // The record says what the image met.
    let rt = rt();
    let record = images(&rt, &ctd, NS)
        .into_iter()
        .find(|i| i.name == signed::SIMPLE)
        .unwrap();
    let verified = record.labels.get("airlift.io/verified");
    assert!(
        verified.is_some_and(|v| v.contains(set.site_pub.to_str().unwrap())),
        "{:?}",
        sorted(&record.labels)
    );
}

on_containerd!(accepted_and_refused {
    accepted_and_refused_containerd_2: Version::V2;
    accepted_and_refused_containerd_17: Version::V17;
});

/// A signed image and an unsigned one in two archives, one import each: the refusal names the
/// unsigned one's archive and takes nothing from the image imported before.
#[test]
fn two_archives_one_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    // `airlift import` takes one archive, as `ctr images import` does: one command each.
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.simple.arg()],
    );
    assert_ok(&out);
    assert_not_refused(&out, signed::SIMPLE);
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.unsigned.arg()],
    );
    assert_refused(&out, &set.unsigned, &["signature"]);
    // The refusal takes nothing from the image imported before.
    assert_imported(&ctd, &set.simple, &[sig_record(&set.simple)]);
    assert_absent(&ctd, &set.unsigned);
}

/// Asserts that no line of `out`'s stderr says `name` was refused.
fn assert_not_refused(out: &Output, name: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("refused") && l.contains(name)),
        "{name} refused:\n{stderr}"
    );
}

/// A bundle-signed image whose referrer manifest the archive lists (unnamed) is imported, the
/// referrers recorded as `<repo>:sha256-<hex>`.
#[test]
fn bundle_accepted() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.bundle.arg()],
    );
    assert_ok(&out);
    assert_imported(&ctd, &set.bundle, &[(set.bundle.referrers_name(), None)]);
    let rt = rt();
    for referrer in &set.bundle.signatures {
        assert!(
            blob(&rt, &ctd, NS, referrer).is_some(),
            "{referrer} not stored"
        );
    }
}

/// A bundle signed by the site key, under a policy wanting the other key: refused, nothing of
/// it created.
#[test]
fn bundle_by_another_key_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = write_policy(
        dir.path(),
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {"registry.example.com": [
                {"type": "sigstoreSigned", "keyPath": set.other_pub},
            ]}},
        }),
    );
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.bundle.arg()],
    );
    assert_refused(
        &out,
        &set.bundle,
        &["no signature by", set.other_pub.to_str().unwrap()],
    );
    assert_absent(&ctd, &set.bundle);
    let rt = rt();
    let records = image_pairs(&rt, &ctd, NS);
    assert!(
        !records
            .iter()
            .any(|(n, _)| *n == set.bundle.referrers_name()),
        "the refused image's referrers were recorded: {records:?}"
    );
}

/// A bundle-signed image whose referrer the archive has through the referrers tag index
/// (`sha256-<hex>`, the referrer manifest itself unlisted) is imported.
#[test]
fn bundle_through_tag_index_accepted() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &[
            "--policy",
            policy.to_str().unwrap(),
            set.bundle_tagged.arg(),
        ],
    );
    assert_ok(&out);
    assert_imported(
        &ctd,
        &set.bundle_tagged,
        &[(set.bundle_tagged.referrers_name(), None)],
    );
}

/// A docker-save archive with its signatures file beside it (`<archive>.sigs`): the chain
/// from the signed registry manifest to the archive's config and layers holds, so accepted;
/// the same archive without the file is refused.
#[test]
fn docker_save_with_signatures_file() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &[
            "--policy",
            policy.to_str().unwrap(),
            set.docker_save_bare.arg(),
        ],
    );
    // The recorded image is not the signed manifest: check by name only.
    let bare = Archive {
        digest: String::new(),
        ..set.docker_save_bare.clone()
    };
    assert_refused(&out, &bare, &["signature"]);
    let rt = rt();
    assert_eq!(image_pairs(&rt, &ctd, NS), vec![]);

    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.docker_save.arg()],
    );
    assert_ok(&out);
    let record = images(&rt, &ctd, NS)
        .into_iter()
        .find(|i| i.name == signed::SIMPLE)
        .unwrap_or_else(|| panic!("{} not imported", signed::SIMPLE));
    assert_eq!(
        record
            .labels
            .get("io.cri-containerd.pinned")
            .map(String::as_str),
        Some("pinned"),
        "{:?}",
        sorted(&record.labels)
    );
}

/// A `cosign save` layout (no ref names; the bundle's referrer manifest unlisted among the
/// blobs), its image named by a lock line: accepted, the referrers recorded.
#[test]
fn cosign_save_layout_accepted() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let lock = dir.path().join("lock");
    std::fs::write(&lock, format!("{}@{}\n", set.saved.name, set.saved.digest)).unwrap();
    let out = run(
        &ctd,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
            set.saved.arg(),
        ],
    );
    assert_ok(&out);
    assert_imported(&ctd, &set.saved, &[(set.saved.referrers_name(), None)]);
}

/// Signed by another key than the policy's: refused, naming the key the policy wants.
#[test]
fn wrong_key_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.other.arg()],
    );
    assert_refused(
        &out,
        &set.other,
        &["no signature by", set.site_pub.to_str().unwrap()],
    );
    assert_absent(&ctd, &set.other);
}

/// Signed for one name (the simple-signing payload's identity), named another in the archive:
/// refused under the default `signedIdentity`, the message naming both.
#[test]
fn signed_identity_mismatch_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.misnamed.arg()],
    );
    assert_refused(
        &out,
        &set.misnamed,
        &[
            &format!("signed for {}", signed::SIMPLE),
            &format!("named {}", signed::MISNAMED),
        ],
    );
    assert_absent(&ctd, &set.misnamed);
}

/// Another image's `.sig` manifest carried as this one's: its payload names the other digest,
/// so refused.
#[test]
fn signature_of_another_digest_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.swapped.arg()],
    );
    assert_refused(&out, &set.swapped, &[&set.simple.digest]);
    assert_absent(&ctd, &set.swapped);
}

/// A lock naming another digest for the image refuses it ("lock says"), though its signature
/// passes; the lock naming its own digest lets it in.
#[test]
fn lock_mismatch_refused() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let lock = dir.path().join("lock");
    std::fs::write(
        &lock,
        format!(
            "# what the bundle holds\n{}@{}\n",
            signed::SIMPLE,
            set.unsigned.digest
        ),
    )
    .unwrap();
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
        set.simple.arg(),
    ];
    let out = run(&ctd, &args);
    assert_refused(&out, &set.simple, &["lock says", &set.unsigned.digest]);
    assert_absent(&ctd, &set.simple);

    std::fs::write(&lock, format!("{}@{}\n", signed::SIMPLE, set.simple.digest)).unwrap();
    let out = run(&ctd, &args);
    assert_ok(&out);
    assert_imported(&ctd, &set.simple, &[sig_record(&set.simple)]);
}

/// A verifier plugin directory (containerd's bindir protocol): a verifier that exits 1 refuses
/// the image with its name and the reason it printed; one that exits 0 lets it in.
#[test]
fn verifier_plugins() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let bin = dir.path().join("verifiers");
    std::fs::create_dir(&bin).unwrap();
    let verifier = |name: &str, script: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--verifier-bin-dir",
        bin.to_str().unwrap(),
        set.simple.arg(),
    ];

    let refuser = verifier(
        "site-check",
        "#!/bin/sh\ncat >/dev/null\necho \"$4 is not on the site's list\"\nexit 1\n",
    );
    let out = run(&ctd, &args);
    assert_refused(
        &out,
        &set.simple,
        &[
            "site-check",
            &format!("{} is not on the site's list", set.simple.digest),
        ],
    );
    assert_absent(&ctd, &set.simple);

    std::fs::remove_file(refuser).unwrap();
    let log = dir.path().join("verifier.log");
    verifier(
        "site-check",
        &format!(
            "#!/bin/sh\necho \"$*\" >>{log}\ncat >>{log}\necho fine\nexit 0\n",
            log = log.display()
        ),
    );
    let out = run(&ctd, &args);
    assert_ok(&out);
    assert_imported(&ctd, &set.simple, &[sig_record(&set.simple)]);
    // Run as containerd runs it: the image's name and digest, its descriptor on stdin.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!("-digest {}", set.simple.digest)) && log.contains("\"digest\""),
        "{log}"
    );
}

/// A policy that does not parse stops the command before anything is imported, naming the file.
#[test]
fn invalid_policy_stops() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\"default\": [{\"type\": \"insecureAcceptAnything\"}],",
    )
    .unwrap();
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.simple.arg()],
    );
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(policy.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );
    assert_nothing_imported(&ctd, &set.simple);
}

/// A policy naming a key file that cannot be read stops the command before anything is
/// imported, naming the key file.
#[test]
fn unreadable_key_stops() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let missing = dir.path().join("missing.pub");
    let policy = write_policy(
        dir.path(),
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {"registry.example.com": [
                {"type": "sigstoreSigned", "keyPath": missing},
            ]}},
        }),
    );
    let out = run(
        &ctd,
        &["--policy", policy.to_str().unwrap(), set.simple.arg()],
    );
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );
    assert_nothing_imported(&ctd, &set.simple);
}

/// Without `--policy` airlift imports as it always has: signed and unsigned images alike, the
/// signature manifests the archive carries recorded too.
#[test]
fn no_policy_imports_everything() {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    assert_ok(&run(&ctd, &[set.simple.arg()]));
    assert_ok(&run(&ctd, &[set.unsigned.arg()]));
    assert_imported(&ctd, &set.simple, &[sig_record(&set.simple)]);
    assert_imported(&ctd, &set.unsigned, &[]);
}

/// `airlift serve` with `[verify]` in its configuration, or `--policy`: an archive of an
/// unsigned image shows as refused in `airlift ls` with the reason, its image absent; a signed
/// archive beside it is imported.
fn daemon_refuses(flag: bool) {
    let Some(set) = signed::provisioned(Version::V2) else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = scratch();
    let policy = policy(set, dir.path());
    let mut d = if flag {
        let mut d = Daemon::new(&ctd, "");
        d.args = vec!["--policy".into(), policy.display().to_string()];
        d
    } else {
        Daemon::new(&ctd, &format!("[verify]\npolicy = {:?}\n", policy))
    };
    let simple = d.images().join("simple.tar");
    let unsigned = d.images().join("unsigned.tar");
    std::fs::copy(&set.simple.path, &simple).unwrap();
    std::fs::copy(&set.unsigned.path, &unsigned).unwrap();
    d.start();
    d.wait();
    d.until("simple.tar to be imported", || {
        d.archive(&simple).is_some_and(|a| a["state"] == "imported")
    });
    let refusal = |a: &serde_json::Value| {
        a["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused"))
    };
    d.until("unsigned.tar to show as refused", || {
        d.archive(&unsigned).is_some_and(|a| refusal(&a))
    });
    let entry = d.archive(&unsigned).unwrap();
    eprintln!("airlift ls: {entry:#}");
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains(signed::UNSIGNED) && error.contains("signature"),
        "{entry:#}"
    );
    assert_imported(&ctd, &set.simple, &[sig_record(&set.simple)]);
    let moved = Archive {
        path: unsigned.clone(),
        ..set.unsigned.clone()
    };
    assert_absent(&ctd, &moved);
}

#[test]
fn daemon_refuses_by_config() {
    daemon_refuses(false)
}

#[test]
fn daemon_refuses_by_flag() {
    daemon_refuses(true)
}
