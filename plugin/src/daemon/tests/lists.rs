//! Pull lists through the daemon, on the fake: pulled, pinned, retried and released, and a line
//! left to an archive pulled once that archive goes.

use super::*;

/// A `.txt` pull list: its images are pulled, pinned and labelled with the list; a line that
/// goes unpins its image, the file that goes unpins the rest; a pull that fails is retried.
#[test]
fn pull_lists_are_pulled_pinned_retried_and_released() {
    let n = Node::new();
    let (a, b) = ("docker.io/library/a:1", "example.com/team/b:2");
    let ta = n.fake.add_remote(a, &[b"layer of a"]);
    let d = n.daemon();
    let list = n.images().join("images.txt");
    std::fs::write(
        &list,
        format!("# pre-pulled\n{a}\n\nexample.com/team/b:2\n"),
    )
    .unwrap();
    n.reconcile(&d, &list);
    // b is not in the registry yet: a is pulled and pinned, the list failed for b.
    assert_eq!(n.pinned(a).unwrap(), list.display().to_string());
    assert_eq!(n.target(a), ta.digest);
    let status = d.archive(&list).unwrap();
    assert_eq!(status.state, State::Failed, "{status:?}");
    let error = status.record.as_ref().unwrap().last_error.clone();
    assert!(
        error.contains("line 4") && error.contains(b) && error.contains("not found"),
        "{error}"
    );
    // The lease holds what was pulled.
    let lease = crate::labels::archive_lease(&list);
    assert!(n.fake.state().leases[&lease]
        .content
        .contains(&ta.digest.to_string()));

    // The registry gets b; the daemon tries again by itself.
    n.fake.add_remote(b, &[b"layer of b"]);
    n.rt.block_on(async {
        for _ in 0..100 {
            if d.archive(&list).is_some_and(|s| s.state == State::Imported) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(d.archive(&list).unwrap().state, State::Imported);
    assert_eq!(n.pinned(b).unwrap(), list.display().to_string());

    // A line goes: its image is unpinned, the other keeps its pin.
    std::fs::write(&list, format!("{b}\n")).unwrap();
    n.reconcile(&d, &list);
    assert_eq!(n.pinned(a).unwrap(), "unpinned");
    assert_eq!(n.pinned(b).unwrap(), list.display().to_string());
    // The file goes: the rest is unpinned and the lease released.
    std::fs::remove_file(&list).unwrap();
    n.reconcile(&d, &list);
    assert_eq!(n.pinned(b).unwrap(), "unpinned");
    assert!(!n.fake.state().leases.contains_key(&lease));
}

/// A pull list's line that a newer archive provides is left to that archive; when the archive
/// goes, the list pulls the line (rather than leaving the name unpinned).
#[test]
fn a_line_left_to_an_archive_is_pulled_when_the_archive_goes() {
    let n = Node::new();
    let pulled = n.fake.add_remote(BUSYBOX, &[b"the registry's busybox"]);
    let d = n.daemon();
    let list = n.images().join("images.txt");
    std::fs::write(&list, format!("{BUSYBOX}\n")).unwrap();
    n.age(&list, -600);
    let archive = n.put("bundle-ctr-export.tar", "bundle.tar");
    n.reconcile(&d, &archive);
    n.reconcile(&d, &list);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), archive.display().to_string());
    assert_ne!(n.target(BUSYBOX), pulled.digest, "the newer archive wins");
    assert_eq!(
        n.fake.count("pull"),
        0,
        "a line left to the archive is not pulled"
    );

    std::fs::remove_file(&archive).unwrap();
    n.reconcile(&d, &archive);
    n.rt.block_on(async {
        for _ in 0..100 {
            if n.target(BUSYBOX) == pulled.digest {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(n.target(BUSYBOX), pulled.digest, "pulled by the list");
    assert_eq!(n.pinned(BUSYBOX).unwrap(), list.display().to_string());
}

/// Under a policy, a refused archive image and a refused pull-list image show in the record
/// with why, are not pinned, and are judged once per change: no retry, no re-import at resync.
#[test]
fn refusals_are_shown_and_judged_once_per_change() {
    let n = Node::new();
    let policy = n.dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"docker.io/library/a":[{"type":"reject"}],"docker.io/library/busybox":[{"type":"reject"}]}}}"#,
    )
    .unwrap();
    n.fake.add_remote("docker.io/library/a:1", &[b"layer of a"]);
    let d = n.daemon_with(|c| c.verify.policy = Some(policy.clone()));
    let archive = n.put("busybox-docker.tar", "busybox.tar");
    let list = n.images().join("images.txt");
    std::fs::write(&list, "docker.io/library/a:1\n").unwrap();
    n.rt.block_on(d.startup());
    for (path, name) in [(&archive, BUSYBOX), (&list, "docker.io/library/a:1")] {
        let status = d.archive(path).unwrap();
        let error = status.record.as_ref().unwrap().last_error.clone();
        assert!(
            error.contains(name) && error.contains("rejected by policy"),
            "{error}"
        );
        assert!(n.fake.image(name).is_none(), "{name} is there");
    }
    let metrics = d.metrics.encode();
    assert!(
        metrics.contains("airlift_verifications_total{result=\"refused\"} 2"),
        "{metrics}"
    );
    let imports = |p: &Path| d.archive(p).unwrap().record.unwrap().imports;
    let before = (imports(&archive), imports(&list));
    // Neither the list's retry nor a resync judges them again.
    std::thread::sleep(Duration::from_millis(2500));
    n.reconcile(&d, &archive);
    n.reconcile(&d, &list);
    assert_eq!((imports(&archive), imports(&list)), before);
}

/// A restart under other verification settings judges again what was imported under the old
/// ones (an image the new policy refuses is released: unpinned, no longer leased); a restart
/// under the same ones reads nothing.
#[test]
fn a_new_policy_judges_again_at_restart() {
    let n = Node::new();
    let archive = n.put("busybox-docker.tar", "busybox.tar");
    {
        let d = n.daemon();
        n.rt.block_on(d.startup());
        assert_eq!(n.pinned(BUSYBOX).unwrap(), archive.display().to_string());
    }
    let policy = n.dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let writes = {
        let d = n.daemon_with(|c| c.verify.policy = Some(policy.clone()));
        n.rt.block_on(d.startup());
        let record = d.archive(&archive).unwrap().record.unwrap();
        assert_eq!(record.imports, 2);
        assert!(
            record.last_error.contains("rejected by policy"),
            "{record:?}"
        );
        assert!(record.images.is_empty(), "{record:?}");
        assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
        n.fake.count("write")
    };
    let d = n.daemon_with(|c| c.verify.policy = Some(policy.clone()));
    n.rt.block_on(d.startup());
    assert_eq!(d.archive(&archive).unwrap().record.unwrap().imports, 2);
    assert_eq!(n.fake.count("write"), writes, "the archive was read again");
}

/// A policy the daemon cannot use stops it at start, naming the file and the key.
#[test]
fn a_policy_that_cannot_be_used_stops_the_daemon() {
    let n = Node::new();
    let policy = n.dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/site.pub"}]}"#,
    )
    .unwrap();
    let mut cfg = Config {
        images_dirs: vec![n.images()],
        state_dir: n.dir.path().join("state"),
        ..Config::default()
    };
    cfg.verify.policy = Some(policy.clone());
    let e = match Daemon::with_connector(cfg, Box::new(n.fake.clone())) {
        Ok(_) => panic!("the daemon started with a key it cannot read"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&policy.display().to_string()) && e.contains("/nonexistent/site.pub"),
        "{e}"
    );
}
