//! End-to-end: `airlift import --unpack` and the daemon's `unpack` on real containerd 2.x and
//! 1.7. containerd reports the images unpacked (`ctr images check`), a container starts from
//! one with no further unpacking (`ctr run`, runc), garbage collection removes every snapshot
//! once the images and leases are gone, multi-arch archives unpack the host's platform only,
//! a layer whose diff ID does not match fails the unpack and keeps the import, and a daemon
//! configured to unpack unpacks what it imported before at its first verification.

mod common;

use airlift_integration::{fixtures_dir, Containerd, Options, Version};
use common::daemon::Daemon;
use common::*;
use std::io::Read;
use std::path::Path;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";

/// A container id no other test (nor another containerd of this machine) uses: runc's state
/// directory is shared by every containerd, per namespace.
fn container_id(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("airlift-unpack-{what}-{}-{n}", std::process::id())
}

/// Runs `/bin/echo TEXT` in a container of busybox (`ctr run --rm`) and checks what it printed.
fn echo_in_container(ctd: &Containerd, what: &str, text: &str) {
    let out = ctd
        .ctr_output(&[
            "-n",
            "k8s.io",
            "run",
            "--rm",
            BUSYBOX,
            &container_id(what),
            "/bin/echo",
            text,
        ])
        .unwrap();
    assert!(out.contains(text), "{out}");
}

/// Whether `ctr images check` reports `name` complete and unpacked.
fn unpacked(ctd: &Containerd, name: &str) -> bool {
    let out = ctd
        .ctr_output(&["-n", "k8s.io", "images", "check"])
        .unwrap();
    out.lines().any(|l| {
        l.starts_with(&format!("{name} "))
            && l.contains("complete")
            && l.trim_end().ends_with("true")
    })
}

fn import_unpack(ctd: &Containerd, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json", "--unpack"];
    all.extend_from_slice(args);
    let out = import(ctd, "k8s.io", &all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bundle unpacked by the import: containerd says so, the config carries the snapshot's GC
/// label, a container runs from it without unpacking anything more, a second archive sharing
/// the layers finds them unpacked, and GC takes every snapshot once images and leases go.
fn unpacked_runs_and_is_collected(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let bundle = fixtures_dir().join("bundle-ctr-export.tar");
    let (code, report, stderr) = import_unpack(&ctd, &[bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let u = &report["unpack"];
    assert_eq!(u["snapshotter"], "overlayfs", "{report}");
    assert!(
        u["images"].as_array().unwrap().iter().any(|i| i == BUSYBOX),
        "{report}"
    );
    assert!(u["layers_applied"].as_u64().unwrap() >= 1, "{report}");
    assert!(unpacked(&ctd, BUSYBOX), "{}", ctd.log_tail(30));
    let before = committed(&ctd);
    assert!(!before.is_empty());

    // The config names the top chain, as containerd's unpacker labels it.
    let labels = ctd.ctr_output(&["-n", "k8s.io", "content", "ls"]).unwrap();
    assert!(
        labels.contains("containerd.io/gc.ref.snapshot.overlayfs="),
        "{labels}"
    );

    // A container starts from it, and no layer is unpacked for it.
    echo_in_container(&ctd, "run", "hello from an unpacked image");
    assert_eq!(committed(&ctd), before, "ctr run unpacked again");

    // The same layers in another archive: found unpacked, nothing applied. The snapshotter
    // named after a space, as `ctr --snapshotter overlayfs` is written.
    let same = fixtures_dir().join("busybox-multiarch-oci.tar");
    let (code, report, stderr) = import_unpack(&ctd, &["overlayfs", same.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["unpack"]["snapshotter"], "overlayfs", "{report}");
    assert_eq!(report["unpack"]["layers_applied"], 0, "{report}");
    assert!(report["unpack"]["layers_present"].as_u64().unwrap() >= 1);

    // Images gone, the archives' leases still there: a synchronous collection keeps the
    // snapshots (the leases hold them). Then the leases go too: it leaves none.
    let names = ctd
        .ctr_output(&["-n", "k8s.io", "images", "ls", "-q"])
        .unwrap();
    for n in names.lines() {
        ctd.ctr_output(&["-n", "k8s.io", "images", "rm", n])
            .unwrap();
    }
    ctd.collect_garbage("k8s.io").unwrap();
    assert_eq!(
        committed(&ctd),
        before,
        "the archives' leases no longer hold the snapshots"
    );
    let leases = ctd
        .ctr_output(&["-n", "k8s.io", "leases", "ls", "-q"])
        .unwrap();
    for l in leases.lines() {
        ctd.ctr_output(&["-n", "k8s.io", "leases", "rm", "--sync", l])
            .unwrap();
    }
    let snapshots = snapshot_list(&ctd);
    assert_eq!(
        snapshots.lines().skip(1).count(),
        0,
        "snapshots left:\n{snapshots}"
    );
}

on_containerd!(unpacked_runs_and_is_collected {
    unpacked_runs_and_is_collected_containerd_2: Version::V2;
    unpacked_runs_and_is_collected_containerd_17: Version::V17;
});

/// A multi-arch archive imported for every platform: only the host's platform is unpacked.
fn multi_arch_unpacks_the_host_platform(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let archive = fixtures_dir().join("busybox-multiarch-oci.tar");
    let (code, report, stderr) =
        import_unpack(&ctd, &["--all-platforms", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(unpacked(&ctd, BUSYBOX), "{report}");
    // One single-layer manifest per platform; the host's alone is applied.
    assert_eq!(report["unpack"]["layers_applied"], 1, "{report}");
    assert_eq!(committed(&ctd).len(), 1);
}

on_containerd!(multi_arch_unpacks_the_host_platform {
    multi_arch_unpacks_the_host_platform_containerd_2: Version::V2;
    multi_arch_unpacks_the_host_platform_containerd_17: Version::V17;
});

/// The name of the archive [`wrong_diff_id`] makes.
const WRONG: &str = "docker.io/library/busybox:wrong-diff-id";

/// `busybox-amd64-only-ctr-export.tar` (a gzip layer) with its config's diff ID changed and
/// named [`WRONG`]: every document that names a changed blob is changed in turn (and renamed
/// to its new digest), so the archive is consistent — only the layer cannot be unpacked as the
/// config says.
fn wrong_diff_id(dir: &Path) -> std::path::PathBuf {
    let mut entries: Vec<(tar::Header, Vec<u8>)> = Vec::new();
    let fixture = fixtures_dir().join("busybox-amd64-only-ctr-export.tar");
    let mut a = tar::Archive::new(std::fs::File::open(fixture).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((e.header().clone(), data));
    }
    let uncompressed = "89af0ba52eb875ee0acd961cfbc8957307183a93e354fa482e56e751d46b0fbd";
    let wrong = "1111111111111111111111111111111111111111111111111111111111111111";
    // (old, new) texts to replace in every JSON document, until nothing changes.
    let mut pending = vec![(uncompressed.to_string(), wrong.to_string())];
    while let Some((old, new)) = pending.pop() {
        for (h, data) in entries.iter_mut() {
            let Ok(text) = std::str::from_utf8(data) else {
                continue;
            };
            if serde_json::from_str::<serde_json::Value>(text).is_err() || !text.contains(&old) {
                continue;
            }
            let changed = text.replace(&old, &new);
            let path = h.path().unwrap().to_string_lossy().into_owned();
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let renamed = sha256_hex(changed.as_bytes());
                pending.push((hex.to_string(), renamed.clone()));
                h.set_path(format!("blobs/sha256/{renamed}")).unwrap();
            }
            *data = changed.into_bytes();
        }
    }
    let path = dir.join("wrong-diff-id.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (mut h, data) in entries {
        let name = h.path().unwrap().to_string_lossy().into_owned();
        let data = if name == "index.json" || name == "manifest.json" {
            String::from_utf8(data)
                .unwrap()
                .replace(BUSYBOX, WRONG)
                .replace(".ref.name\":\"1.35\"", ".ref.name\":\"wrong-diff-id\"")
                .into_bytes()
        } else {
            data
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, data.as_slice()).unwrap();
    }
    out.finish().unwrap();
    path
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex_of(&sha2::Sha256::digest(data))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A layer whose diff ID does not match the config: the unpack fails cleanly (exit status 3,
/// the error named, no snapshot left), and the import stands (the image is there and pinned).
fn a_wrong_diff_id_fails_the_unpack_not_the_import(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = wrong_diff_id(dir.path());
    let (code, report, stderr) = import_unpack(&ctd, &[archive.to_str().unwrap()]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    let errors = report["unpack"]["errors"].to_string();
    assert!(errors.contains("diff ID"), "{errors}");
    assert!(stderr.contains("unpacking"), "{stderr}");
    assert_eq!(report["images"][0]["name"], WRONG, "{report}");
    let images = ctd.ctr_output(&["-n", "k8s.io", "images", "ls"]).unwrap();
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(WRONG) && l.contains("io.cri-containerd.pinned=pinned")),
        "{images}"
    );
    let snapshots = snapshot_list(&ctd);
    assert_eq!(snapshots.lines().skip(1).count(), 0, "{snapshots}");
    assert!(!unpacked(&ctd, WRONG));
}

on_containerd!(a_wrong_diff_id_fails_the_unpack_not_the_import {
    a_wrong_diff_id_containerd_2: Version::V2;
    a_wrong_diff_id_containerd_17: Version::V17;
});

/// The daemon: configured with `unpack`, it unpacks what it imports; one that imported without
/// unpacking unpacks those images at its first verification after a restart with `unpack`
/// (from containerd's content); an archive whose unpack fails shows why in `airlift ls`.
fn the_daemon_unpacks_and_catches_up(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let mut d = Daemon::new(&ctd, "");
    std::fs::copy(
        fixtures_dir().join("busybox-docker.tar"),
        d.images().join("busybox.tar"),
    )
    .unwrap();
    d.start();
    d.wait();
    assert!(!unpacked(&ctd, BUSYBOX));
    d.stop();

    d.config = "unpack = \"overlayfs\"\n".into();
    let bad = wrong_diff_id(&d.images());
    d.start();
    d.wait();
    d.until("the earlier import to be unpacked at verification", || {
        unpacked(&ctd, BUSYBOX)
    });
    d.until("the failed unpack to show in ls", || {
        d.archive(&bad)
            .is_some_and(|a| a["unpack_error"].to_string().contains("diff ID"))
    });
    let a = d.archive(&bad).unwrap();
    assert_eq!(a["state"], "imported", "{a}");
    let listed = String::from_utf8_lossy(&d.cli(&["ls"]).stdout).into_owned();
    assert!(listed.contains("not unpacked:"), "{listed}");
}

on_containerd!(the_daemon_unpacks_and_catches_up {
    the_daemon_unpacks_and_catches_up_containerd_2: Version::V2;
    the_daemon_unpacks_and_catches_up_containerd_17: Version::V17;
});

/// The same with containerd's content store being airlift's (content proxy mode), and in
/// stream mode: the differ reads the layers through whichever store holds them.
fn unpacked_in_proxy_and_stream_mode(version: Version) {
    let (mut proxy, _root) = Daemon::content_proxy();
    let ctd = proxy.serve_as_content_proxy(version, Options::default());
    let bundle = fixtures_dir().join("bundle-ctr-export.tar.zst");
    let (code, report, stderr) = import_unpack(&ctd, &[bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}\n{stderr}\n{}", proxy.log());
    assert!(unpacked(&ctd, BUSYBOX), "{report}\n{}", ctd.log_tail(30));
    echo_in_container(&ctd, "proxy", "proxied");
    drop(ctd);
    drop(proxy);

    let ctd = Containerd::start(version).unwrap();
    let archive = fixtures_dir().join("busybox-multiarch-oci.tgz");
    let (code, report, stderr) =
        import_unpack(&ctd, &["--mode", "stream", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["mode"], "stream", "{report}");
    assert!(unpacked(&ctd, BUSYBOX), "{report}");
}

on_containerd!(unpacked_in_proxy_and_stream_mode {
    unpacked_in_proxy_and_stream_mode_containerd_2: Version::V2;
    unpacked_in_proxy_and_stream_mode_containerd_17: Version::V17;
});
