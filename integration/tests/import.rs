//! End-to-end: `airlift import` against real containerd 2.x and 1.7, in direct and stream mode.

mod common;

use airlift::store::layout::ContentRoot;
use airlift::store::{direct::DirectStore, stream::StreamStore, Staging};
use airlift::testkit::conformance;
use airlift_integration::archives::{self, write_entries, Entry, MIB};
use airlift_integration::{fixtures_dir, Containerd, Version};
use common::*;
use std::process::Command;
use std::sync::Arc;

fn canonical(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

/// Every fixture, every compression: names and targets equal containerd's importer's, labels are
/// set, the archive lease holds the content, and a second import writes no blob.
fn fixtures_match_containerd(version: Version, mode: &str) {
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    for (i, path) in fixtures().iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ns = format!("fx{i}");
        let p = path.to_str().unwrap();
        let base = base_name(&name);
        let mut args = vec!["--all-platforms", "--mode", mode, p];
        if let Some(base) = &base {
            args.extend(["--base-name", base]);
        }
        let report = import_ok(&ctd, &ns, &args);
        assert_eq!(report["mode"], mode, "{name}");
        assert_eq!(
            image_pairs(&rt, &ctd, &ns),
            expected(&name),
            "{name} on containerd {version} ({mode})"
        );
        for image in images(&rt, &ctd, &ns) {
            let l = &image.labels;
            assert_eq!(
                l.get("io.cri-containerd.image").map(String::as_str),
                Some("managed"),
                "{name}"
            );
            assert_eq!(
                l.get("io.cri-containerd.pinned").map(String::as_str),
                Some("pinned"),
                "{name}"
            );
            assert_eq!(
                l.get("airlift.io/pinned").map(String::as_str),
                Some("true"),
                "{name}"
            );
            assert_eq!(
                l.get("airlift.io/archive"),
                Some(&canonical(path)),
                "{name}"
            );
        }
        // The archive lease holds the target of every image.
        let lease = report["lease"].as_str().expect("archive lease").to_string();
        let held = rt
            .block_on(client(&rt, &ctd, &ns).lease_content(&lease))
            .unwrap();
        for (_, digest) in expected(&name) {
            assert!(
                held.contains(&digest),
                "{name}: lease {lease} lacks {digest}"
            );
        }
        // Importing again: unchanged, so answered from the record without reading the archive.
        let again = import_ok(&ctd, &ns, &args);
        assert_eq!(again["outcome"], "unchanged", "{name}: {again}");
        assert!(again["mode"].is_null(), "{name}: nothing stored: {again}");
        assert_eq!(again["archive_bytes"], 0, "{name}: {again}");
        // Forced: the archive is read again, but no blob is written again.
        let mut forced = args.clone();
        forced.push("--force");
        let again = import_ok(&ctd, &ns, &forced);
        assert_eq!(again["mode"], mode, "{name}: {again}");
        assert_eq!(
            again["blobs_written"], 0,
            "{name}: second import wrote blobs: {again}"
        );
        assert_eq!(image_pairs(&rt, &ctd, &ns), expected(&name), "{name}");
        // An image removed since: the record no longer stands, the archive is imported again.
        let first = &expected(&name)[0].0;
        ctd.ctr_output(&["-n", &ns, "images", "rm", first]).unwrap();
        let again = import_ok(&ctd, &ns, &args);
        assert_eq!(again["mode"], mode, "{name}: {again}");
        assert_eq!(image_pairs(&rt, &ctd, &ns), expected(&name), "{name}");
    }
    assert_eq!(
        leftovers(&ctd),
        Vec::<std::path::PathBuf>::new(),
        "temporary files left behind"
    );
}

on_containerd!(fixtures_match_containerd {
    fixtures_containerd_2_direct: Version::V2, "direct";
    fixtures_containerd_2_stream: Version::V2, "stream";
    fixtures_containerd_17_direct: Version::V17, "direct";
    fixtures_containerd_17_stream: Version::V17, "stream";
});

/// GC labels as containerd's importer sets them, distribution sources, and after deleting the
/// images and leases containerd's garbage collector leaves no blob behind.
fn gc_labels_and_cleanup(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let ns = "gc";
    let docker = fixtures_dir().join("busybox-docker.tar");
    let multi = fixtures_dir().join("busybox-multiarch-oci.tgz");
    import_ok(&ctd, ns, &["--all-platforms", docker.to_str().unwrap()]);
    import_ok(
        &ctd,
        ns,
        &["--all-platforms", "--digest-refs", multi.to_str().unwrap()],
    );

    let docker_manifest = expected_target("busybox-docker.tar", "docker.io/library/busybox:1.35");
    let index_digest = expected_target(
        "busybox-multiarch-oci.tgz",
        "docker.io/library/busybox:1.35",
    );
    let manifest = blob(&rt, &ctd, ns, &docker_manifest).expect("synthesised manifest stored");
    let l = sorted(&manifest.labels);
    assert_eq!(
        l["containerd.io/gc.ref.content.config"],
        "sha256:3c63c9c166711109a348b05fd7860edf5355b932eac5e2835313507de144cf40"
    );
    assert_eq!(
        l["containerd.io/gc.ref.content.l.0"],
        "sha256:89af0ba52eb875ee0acd961cfbc8957307183a93e354fa482e56e751d46b0fbd"
    );
    assert_eq!(
        l["containerd.io/distribution.source.docker.io"],
        "library/busybox"
    );
    let layer = blob(
        &rt,
        &ctd,
        ns,
        "sha256:89af0ba52eb875ee0acd961cfbc8957307183a93e354fa482e56e751d46b0fbd",
    )
    .unwrap();
    assert_eq!(
        layer.labels["containerd.io/distribution.source.docker.io"],
        "library/busybox"
    );

    let index = blob(&rt, &ctd, ns, &index_digest).unwrap();
    let il = sorted(&index.labels);
    assert!(
        il.contains_key("containerd.io/gc.ref.content.m.0")
            && il.contains_key("containerd.io/gc.ref.content.m.1"),
        "{il:?}"
    );
    let names: Vec<String> = images(&rt, &ctd, ns).into_iter().map(|i| i.name).collect();
    assert!(
        names.contains(&format!("docker.io/library/busybox@{index_digest}")),
        "{names:?}"
    );
    assert!(!blobs_on_disk(&ctd).is_empty());

    // Delete the archive leases, then the images with a synchronous garbage collection.
    let leases = ctd.ctr_output(&["-n", ns, "leases", "ls", "-q"]).unwrap();
    for lease in leases.lines().filter(|l| l.starts_with("airlift-")) {
        ctd.ctr_output(&["-n", ns, "leases", "rm", lease]).unwrap();
    }
    let mut rm = vec!["-n", ns, "images", "rm", "--sync"];
    rm.extend(names.iter().map(String::as_str));
    ctd.ctr_output(&rm).unwrap();
    let content = ctd.ctr_output(&["-n", ns, "content", "ls", "-q"]).unwrap();
    assert_eq!(content.trim(), "", "content left in the namespace");
    assert_eq!(
        blobs_on_disk(&ctd),
        Vec::<String>::new(),
        "blobs left on disk after GC"
    );
}

on_containerd!(gc_labels_and_cleanup {
    gc_labels_and_cleanup_containerd_2: Version::V2;
    gc_labels_and_cleanup_containerd_17: Version::V17;
});

/// Broken archives fail with one clear message naming the archive and the cause, create no
/// image and leave no temporary file.
fn broken_archives(version: Version, mode: &str) {
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(std::path::PathBuf, &str)> = Vec::new();

    let tgz = std::fs::read(fixtures_dir().join("busybox-multiarch-oci.tgz")).unwrap();
    let truncated = dir.path().join("truncated.tgz");
    std::fs::write(&truncated, &tgz[..tgz.len() / 2]).unwrap();
    cases.push((truncated, "incomplete"));

    let amd64_layer =
        "blobs/sha256/fb42d26c29a4fcd7174ffb08a27c9b41644420f4865ba835bcc10d2dfc0b0692";
    let mut entries = fixture_entries("busybox-multiarch-oci.tar");
    for e in &mut entries {
        if e.path == amd64_layer {
            e.data[1000] ^= 0x40;
        }
    }
    let flipped = dir.path().join("flipped-oci.tar");
    write_entries(&flipped, &entries).unwrap();
    cases.push((flipped, "fb42d26c29a4"));

    let mut entries = fixture_entries("busybox-docker.tar");
    for e in &mut entries {
        if e.path.starts_with("89af0ba5") {
            e.data[5000] ^= 0x01;
        }
    }
    let flipped = dir.path().join("flipped-docker.tar");
    write_entries(&flipped, &entries).unwrap();
    cases.push((flipped, "hashes to"));

    let mut entries = fixture_entries("busybox-multiarch-oci.tar");
    entries.retain(|e| !e.path.contains("3c63c9c1667"));
    let dropped = dir.path().join("dropped.tar");
    write_entries(&dropped, &entries).unwrap();
    cases.push((dropped, "missing from the archive"));

    let mut entries = fixture_entries("busybox-docker.tar");
    entries.insert(
        0,
        Entry::raw("../evil", tar::EntryType::Regular, None, b"x".to_vec()),
    );
    let escape = dir.path().join("dotdot.tar");
    write_entries(&escape, &entries).unwrap();
    cases.push((escape, "'..'"));

    let mut entries = fixture_entries("busybox-docker.tar");
    entries.push(Entry::raw(
        "abc/layer.tar",
        tar::EntryType::Symlink,
        Some("../../etc/passwd"),
        Vec::new(),
    ));
    let symlink = dir.path().join("symlink.tar");
    write_entries(&symlink, &entries).unwrap();
    cases.push((symlink, "outside the archive"));

    let text = dir.path().join("notes.tar");
    std::fs::write(
        &text,
        "these are not the images you are looking for\n".repeat(20),
    )
    .unwrap();
    cases.push((text, "not an image archive"));

    let empty = dir.path().join("empty.tar.zst");
    std::fs::write(&empty, b"").unwrap();
    cases.push((empty, "empty"));

    let bad_json = dir.path().join("badjson.tar");
    let mut entries = fixture_entries("busybox-docker.tar");
    for e in &mut entries {
        if e.path == "manifest.json" {
            e.data = b"[{\"Config\": ".to_vec();
        }
    }
    write_entries(&bad_json, &entries).unwrap();
    cases.push((bad_json, "invalid JSON"));

    for (i, (path, needle)) in cases.iter().enumerate() {
        let ns = format!("bad{i}");
        let out = import(
            &ctd,
            &ns,
            &["--all-platforms", "--mode", mode, path.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: import succeeded",
            path.display()
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "{}: message does not name the archive: {stderr}",
            path.display()
        );
        assert!(
            stderr.contains(needle),
            "{}: message lacks {needle:?}: {stderr}",
            path.display()
        );
        assert_eq!(
            image_pairs(&rt, &ctd, &ns),
            vec![],
            "{}: images created",
            path.display()
        );
        assert_eq!(
            leftovers(&ctd),
            Vec::<std::path::PathBuf>::new(),
            "{}: temporary files left",
            path.display()
        );
    }

    // One broken image does not stop the intact one beside it.
    let mut entries = fixture_entries("bundle-ctr-export.tar");
    entries.retain(|e| !e.path.contains("61d78c22183e"));
    let partial = dir.path().join("partial.tar");
    write_entries(&partial, &entries).unwrap();
    let out = import(
        &ctd,
        "partial",
        &[
            "--platform",
            "linux/amd64",
            "--mode",
            mode,
            partial.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 images imported, 2 failed"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        image_pairs(&rt, &ctd, "partial"),
        vec![(
            "docker.io/library/busybox:1.35".to_string(),
            expected_target("bundle-ctr-export.tar", "docker.io/library/busybox:1.35")
        )]
    );
}

on_containerd!(broken_archives {
    broken_archives_containerd_2_direct: Version::V2, "direct";
    broken_archives_containerd_2_stream: Version::V2, "stream";
    broken_archives_containerd_17_direct: Version::V17, "direct";
});

/// Standard input, options, and containerd being away.
#[test]
fn stdin_options_and_unreachable_containerd() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let fixture = fixtures_dir().join("bundle-ctr-export.tar.zst");
    let out = Command::new(airlift_bin())
        .args([
            "import",
            "--json",
            "--all-platforms",
            "--no-pin",
            "--label",
            "team=edge",
            "--index-name",
            "example.com/bundle:all",
            "--namespace",
            "stdin",
            "--address",
        ])
        .arg(ctd.address())
        .arg("-")
        .stdin(std::fs::File::open(&fixture).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["lease"].is_null(),
        "no archive lease for standard input: {report}"
    );
    let imgs = images(&rt, &ctd, "stdin");
    let mut want = expected("bundle-ctr-export.tar");
    want.push(("example.com/bundle:all".into(), String::new()));
    want.sort();
    assert_eq!(
        imgs.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        want.iter().map(|w| w.0.clone()).collect::<Vec<_>>()
    );
    for i in &imgs {
        assert!(
            !i.labels.contains_key("io.cri-containerd.pinned"),
            "{}: pinned despite --no-pin",
            i.name
        );
        assert_eq!(i.labels.get("team").map(String::as_str), Some("edge"));
    }
    let index = imgs
        .iter()
        .find(|i| i.name == "example.com/bundle:all")
        .unwrap();
    assert_eq!(index.media_type, "application/vnd.oci.image.index.v1+json");

    // Tag-only names without --base-name: skipped with a warning, nothing created, success.
    let tagonly = fixtures_dir().join("busybox-oci-tagonly.tar");
    let out = import(
        &ctd,
        "tagonly",
        &["--all-platforms", tagonly.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base-name"));
    assert_eq!(image_pairs(&rt, &ctd, "tagonly"), vec![]);

    // containerd not reachable.
    let out = Command::new(airlift_bin())
        .args([
            "import",
            "--connect-timeout",
            "2",
            "--address",
            "/nonexistent/containerd.sock",
        ])
        .arg(&fixture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not reachable") && stderr.contains("bundle-ctr-export.tar.zst"),
        "{stderr}"
    );
}

/// The content-store conformance suite against the direct and streaming stores on real containerd.
#[test]
fn store_conformance_on_real_containerd() {
    for version in [Version::V2, Version::V17] {
        let ctd = Containerd::start(version).unwrap();
        let rt = rt();
        // As in an import, everything happens under a lease: unreferenced content may be
        // garbage-collected at any moment otherwise.
        let plain = client(&rt, &ctd, "conformance");
        rt.block_on(plain.create_lease("conformance", Default::default(), None))
            .unwrap();
        let c = grpc(&rt, ctd.address(), "conformance").leased("conformance");
        let handle = rt.handle().clone();
        rt.block_on(conformance::content_api::run(
            &c,
            &format!("containerd {version}'s built-in store"),
        ));
        let stream = StreamStore::new(Arc::new(c.clone()), handle.clone(), "conf-stream".into());
        conformance::run(&stream);
        let root = ContentRoot::new(ctd.content_root());
        let direct = DirectStore::open(&root, Arc::new(c), handle, "conf-direct".into()).unwrap();
        conformance::run(&direct);

        // Staged blobs become visible only when claimed: with their labels, in the lease of the
        // claiming connection, in one go; blobs not needed are never linked. The suites above
        // deleted content, and the collection that schedules would sweep a linked blob not yet
        // claimed: let it finish first.
        ctd.collect_garbage("conformance").unwrap();
        use airlift::store::ContentStore;
        let wanted = conformance::bytes(70_000, 7);
        let unwanted = conformance::bytes(80_000, 8);
        let w = direct
            .put(&mut &wanted[..], wanted.len() as u64, None)
            .unwrap()
            .digest;
        let u = direct
            .put(&mut &unwanted[..], unwanted.len() as u64, None)
            .unwrap()
            .digest;
        direct.flush().unwrap();
        assert!(
            blob(&rt, &ctd, "conformance", &w.to_string()).is_none(),
            "visible before its claim"
        );
        rt.block_on(plain.create_lease("archive-test", Default::default(), None))
            .unwrap();
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(
            w.clone(),
            std::collections::BTreeMap::from([("example.com/k".to_string(), "v".to_string())]),
        );
        let needed = std::collections::BTreeSet::from([&w]);
        let claimed = direct
            .claim_staged(
                plain.with_lease(Some("archive-test")).as_ref(),
                &labels,
                &needed,
            )
            .unwrap();
        assert_eq!(claimed, std::collections::BTreeSet::from([w.clone()]));
        let info = blob(&rt, &ctd, "conformance", &w.to_string()).expect("claimed blob visible");
        assert_eq!(
            info.labels.get("example.com/k").map(String::as_str),
            Some("v")
        );
        let held = rt.block_on(plain.lease_content("archive-test")).unwrap();
        assert!(held.contains(&w.to_string()), "{held:?}");
        assert!(blob(&rt, &ctd, "conformance", &u.to_string()).is_none());
        assert!(
            !ctd.content_root()
                .join("blobs/sha256")
                .join(u.hex())
                .exists(),
            "unneeded blob linked"
        );
        // A blob staged and never claimed goes with the store, before `drop` returns.
        let orphan = conformance::bytes(90_000, 9);
        direct
            .put(&mut &orphan[..], orphan.len() as u64, None)
            .unwrap();
        drop(direct);
        assert_eq!(
            leftovers(&ctd),
            Vec::<std::path::PathBuf>::new(),
            "containerd {version}"
        );
    }
}

/// With the CRI plugin, CRI's image service reports the imported images, pinned.
fn cri_reports_pinned(version: Version) {
    use k8s_cri::v1::{ImageSpec, ImageStatusRequest};
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let docker = fixtures_dir().join("busybox-docker.tar");
    import_ok(&ctd, "k8s.io", &["--digest-refs", docker.to_str().unwrap()]);
    let image = cri_listed(&rt, &ctd, "docker.io/library/busybox:1.35")
        .expect("CRI does not list the imported image");
    assert!(image.pinned, "CRI reports the image unpinned: {image:?}");
    let status = rt
        .block_on(cri(&rt, &ctd).image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: "docker.io/library/busybox:1.35".into(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .unwrap()
        .into_inner();
    let image = status.image.expect("ImageStatus finds the image");
    assert!(image.pinned);
    assert!(
        image
            .repo_digests
            .iter()
            .any(|d| d.ends_with(&expected_target(
                "busybox-docker.tar",
                "docker.io/library/busybox:1.35"
            ))),
        "{:?}",
        image.repo_digests
    );
}

on_containerd!(cri_reports_pinned {
    cri_reports_pinned_containerd_2: Version::V2;
    cri_reports_pinned_containerd_17: Version::V17;
});

/// A blob found present is added to the import's lease before anything relies on it, so a
/// garbage collection between the check and the image record cannot take it.
#[test]
fn present_blobs_are_protected_by_the_import_lease() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let ns = "protect";
    let c = client(&rt, &ctd, ns);
    // A blob held only by a setup lease (containerd's startup garbage collection would
    // otherwise take it before the test looks at it).
    rt.block_on(c.create_lease("setup", Default::default(), None))
        .unwrap();
    let data = conformance::bytes(10_000, 42);
    let stream = StreamStore::new(
        c.with_lease(Some("setup")),
        rt.handle().clone(),
        "protect".into(),
    );
    let put = airlift::store::ContentStore::put(&stream, &mut &data[..], data.len() as u64, None)
        .unwrap();
    let digest = put.digest.to_string();

    rt.block_on(c.create_lease("import-test", Default::default(), None))
        .unwrap();
    let leased = c.with_lease(Some("import-test"));
    let store = StreamStore::new(leased, rt.handle().clone(), "protect2".into());
    assert_eq!(
        airlift::store::ContentStore::exists(&store, &put.digest).unwrap(),
        Some(10_000)
    );
    let held = rt.block_on(c.lease_content("import-test")).unwrap();
    assert!(held.contains(&digest), "{held:?}");
    // From here on only the import's lease holds it.
    rt.block_on(c.delete_lease("setup", false)).unwrap();
    // A synchronous garbage collection (triggered by removing an unrelated image) keeps it.
    let docker = fixtures_dir().join("busybox-docker.tar");
    let collect = || {
        import_ok(&ctd, ns, &["--all-platforms", docker.to_str().unwrap()]);
        let rm = [
            "-n",
            ns,
            "images",
            "rm",
            "--sync",
            "docker.io/library/busybox:1.35",
        ];
        ctd.ctr_output(&rm).unwrap();
    };
    collect();
    assert!(
        blob(&rt, &ctd, ns, &digest).is_some(),
        "garbage collection took a leased blob"
    );
    // Without the lease it goes.
    rt.block_on(c.delete_lease("import-test", false)).unwrap();
    collect();
    assert!(
        blob(&rt, &ctd, ns, &digest).is_none(),
        "the unleased blob should have been collected"
    );
}

/// Runs `cmd` to completion and returns its stdout, stderr, whether it succeeded, and its peak
/// resident memory in KiB. The peak is the child's own (`VmHWM`, polled until it exits):
/// `wait4`'s `ru_maxrss` would also count this test process's memory, which the child shared
/// until its `exec`.
fn run_measuring_memory(cmd: &mut Command) -> (String, String, bool, u64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let outs = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    (
        outs.join().unwrap(),
        errs.join().unwrap(),
        status.success(),
        peak,
    )
}

/// A `zstd --long` archive refers far back, so its decoder keeps a window as large as that
/// distance. The window is spilled to a file mapping, so the import's memory stays bounded all the
/// same, in both modes.
#[test]
fn long_zstd_windows_import_in_bounded_memory() {
    use std::io::Write;
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("long.tar");
    archives::one_image(&tar, "example.com/long:1", 160 * MIB, 7).unwrap();
    let zst = dir.path().join("long.tar.zst");
    {
        let mut enc =
            zstd::stream::write::Encoder::new(std::fs::File::create(&zst).unwrap(), 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(27).unwrap();
        std::io::copy(&mut std::fs::File::open(&tar).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap().flush().unwrap();
    }
    std::fs::remove_file(&tar).unwrap();
    for mode in ["direct", "stream"] {
        let ns = format!("long-{mode}");
        let (stdout, stderr, ok, rss_kib) = run_measuring_memory(
            Command::new(airlift_bin())
                .args(["import", "--json", "--mode", mode, "--address"])
                .arg(ctd.address())
                .args(["--namespace", &ns, "--state-dir"])
                .arg(dir.path().join("state"))
                .arg(&zst)
                .env_remove("CONTAINERD_ADDRESS"),
        );
        assert!(ok, "{mode}: {stderr}\n{stdout}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            report["images"][0]["name"], "example.com/long:1",
            "{report}"
        );
        // Direct mode spills beside the blobs, stream mode in the state directory; both are
        // under this test's temporary directories.
        let scratch = if mode == "direct" {
            ctd.content_root()
        } else {
            dir.path().to_path_buf()
        };
        if !airlift::archive::spill::spills_to(&scratch) {
            // Elsewhere (a tmpfs /tmp) the window stays on the heap, and airlift says so.
            assert!(stderr.contains("keeping it in memory"), "{mode}: {stderr}");
            eprintln!(
                "{mode}: {} is not ext4 or xfs; memory bound not checked",
                scratch.display()
            );
            continue;
        }
        assert!(
            !stderr.contains("keeping it in memory"),
            "{mode}: the window was not spilled: {stderr}"
        );
        // The window alone is 128 MiB; the bound for the whole process is 64 MiB.
        assert!(
            rss_kib <= 64 << 10,
            "{mode}: peak RSS {} MiB for a 128 MiB window",
            rss_kib >> 10
        );
    }
}
