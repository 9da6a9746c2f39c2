//! Startup and the files it sees, on the fake: a restart repairs from the records without
//! reading archives and releases those that went, containerd failing midway, the `[mirrors]`
//! table, ignored names, scan order, settling and priorities.

use super::*;

#[test]
fn a_restart_repairs_from_the_records_without_reading_archives() {
    let n = Node::new();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    {
        let d = n.daemon();
        n.reconcile(&d, &a);
    }
    let writes = n.fake.count("write");
    // While the daemon is down: an image is deleted, a pin stripped, the lease removed.
    {
        let mut s = n.fake.state();
        s.images.remove(BUSYBOX);
        s.images
            .get_mut(TOOLS)
            .unwrap()
            .labels
            .remove(labels::CRI_PINNED);
        s.leases.clear();
    }
    let d = n.daemon();
    n.rt.block_on(d.startup());
    assert!(d.startup_done());
    assert_eq!(n.fake.count("write"), writes, "an archive was read again");
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    assert_eq!(n.pinned(TOOLS).unwrap(), a.display().to_string());
    let lease = labels::archive_lease(&a);
    let s = n.fake.state();
    assert_eq!(
        s.leases[&lease].content.len(),
        d.archive(&a).unwrap().record.unwrap().blobs.len()
    );
}

#[test]
fn a_restart_releases_archives_that_went_and_imports_new_ones() {
    let n = Node::new();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    {
        let d = n.daemon();
        n.reconcile(&d, &a);
    }
    std::fs::remove_file(&a).unwrap();
    let b = n.put("busybox-docker.tar", "b.tar");
    let d = n.daemon();
    n.rt.block_on(d.startup());
    assert_eq!(n.pinned(TOOLS).unwrap(), "unpinned");
    assert_eq!(d.archive(&b).unwrap().state, State::Imported);
    assert!(d.archive(&a).is_none());
    let (queued, importing, known) = d.counts();
    assert_eq!((queued, importing, known), (0, 0, 1));
}

#[test]
fn containerd_failing_mid_import_is_tried_again() {
    let n = Node::new();
    let d = n.daemon();
    let a = n.put("busybox-docker.tar", "a.tar");
    n.fake
        .fail_times("put_image", 2, crate::error::Class::Unavailable);
    n.reconcile(&d, &a);
    assert_eq!(d.archive(&a).unwrap().state, State::Imported);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
}

#[tokio::test]
async fn a_mirrors_table_is_written_before_anything_starts_and_its_errors_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
    )
    .unwrap();
    let mut cfg = Config {
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    cfg.mirrors.registries = Some(registries.clone());
    cfg.mirrors.hosts_dir = dir.path().join("certs.d");
    let e = run(cfg.clone(), std::future::pending()).await.unwrap_err();
    let e = e.to_string();
    assert!(
        e.starts_with("mirrors: ")
            && e.contains(&registries.display().to_string())
            && e.contains("endpoint[0]"),
        "{e}"
    );
    assert!(!dir.path().join("state").exists(), "nothing started");
    // A good file is written before the daemon needs containerd.
    std::fs::write(
        &registries,
        "mirrors:\n  docker.io:\n    endpoint: [m.example.com]\n",
    )
    .unwrap();
    write_mirrors(&cfg.mirrors.options().unwrap()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("certs.d/docker.io/hosts.toml")).unwrap();
    assert!(text.contains("[host.\"https://m.example.com\"]"), "{text}");
}

#[test]
fn ignored_names() {
    for name in [
        ".a.tar.Xa81",
        "a.tar.tmp",
        "a.tar.part",
        "a.tar.partial",
        "a.tar~",
    ] {
        assert!(ignored(name), "{name}");
    }
    assert!(!ignored("a.tar.zst"));
}

#[test]
fn scan_lists_archives_oldest_first_and_skips_the_ignored() {
    let n = Node::new();
    let d = n.daemon();
    let now = std::time::SystemTime::now();
    for (name, age) in [
        ("new.tar", 10),
        ("old.tar", 300),
        ("mid.tar", 100),
        (".hidden.tar", 500),
    ] {
        let p = n.images().join(name);
        std::fs::write(&p, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(now - std::time::Duration::from_secs(age))
            .unwrap();
    }
    std::fs::create_dir(n.images().join("subdir.tar")).unwrap();
    let names: Vec<String> = d
        .scan()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["old.tar", "mid.tar", "new.tar"]);
}

#[test]
fn a_file_written_just_now_is_waited_for() {
    let n = Node::new();
    let p = n.images().join("a.tar");
    std::fs::write(&p, b"x").unwrap();
    let started = std::time::Instant::now();
    n.rt.block_on(serve::wait_settled(&p, Duration::from_millis(300)));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // An old file is not waited for.
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let started = std::time::Instant::now();
    n.rt.block_on(serve::wait_settled(&p, Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[test]
fn priority_archives_are_imported_first() {
    let n = Node::new();
    let first = n.put("busybox-docker.tar", "zz-pause.tar");
    n.age(&first, -10);
    for (f, name, age) in [
        ("bundle-ctr-export.tar", "big-bundle.tar", -300),
        ("busybox-arm64-multitag-docker.tar", "other.tar", -200),
    ] {
        let p = n.put(f, name);
        n.age(&p, age);
    }
    let d = n.daemon_with(|c| {
        c.priority = vec!["*pause*".into()];
        c.concurrency = 1;
    });
    let order: Vec<String> = d
        .scan()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(order, ["zz-pause.tar", "big-bundle.tar", "other.tar"]);
    n.rt.block_on(d.startup());
    // The first image record written was the priority archive's.
    let first_image = n
        .fake
        .calls()
        .into_iter()
        .find(|c| c.op == "put_image")
        .unwrap();
    assert_eq!(
        first_image.subject,
        BUSYBOX,
        "{:#?}",
        n.fake
            .calls()
            .iter()
            .filter(|c| matches!(c.op, "put_image" | "create_lease"))
            .collect::<Vec<_>>()
    );
    assert_eq!(n.pinned(BUSYBOX).unwrap(), first.display().to_string());
}
