//! Repairs on the fake: what others change restored from the record, a fighting actor backed
//! off, what happened while unsubscribed found by verification, content gone imported again, and
//! what dead processes left removed late.

use super::*;

#[test]
fn what_others_change_is_restored_from_the_record() {
    let n = Node::new();
    let (d, paths) = following(&n, &[("bundle-ctr-export.tar", "a.tar")]);
    let a = paths[0].display().to_string();
    let writes = n.fake.count("write");
    // k3s's startup unpin: the CRI pin goes from images labelled io.cattle.k3s.pinned.
    n.fake.change_image(BUSYBOX, |i| {
        i.labels
            .insert("io.cattle.k3s.pinned".into(), "pinned".into());
    });
    n.fake.change_image(BUSYBOX, |i| {
        i.labels.remove(labels::CRI_PINNED);
    });
    until("the pin to be restored", || {
        n.pinned(BUSYBOX).as_deref() == Some(a.as_str())
    });
    // Someone else's label stays.
    assert!(n
        .fake
        .image(BUSYBOX)
        .unwrap()
        .labels
        .contains_key("io.cattle.k3s.pinned"));
    // ctr images rm / crictl rmi.
    n.fake.delete_image(TOOLS);
    until("the deleted image to be back", || {
        n.pinned(TOOLS).as_deref() == Some(a.as_str())
    });
    // Another importer re-tags the name.
    let target = n.target(BUSYBOX);
    n.fake
        .change_image(BUSYBOX, |i| i.digest = "sha256:elsewhere".into());
    until("the name to point back", || n.target(BUSYBOX) == target);
    // No archive byte was read for any of it.
    assert_eq!(n.fake.count("write"), writes);
    let (counts, _) = d.repair_counts();
    assert_eq!(counts.get("unpinned"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("deleted"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("repointed"), Some(&1), "{counts:?}");
    // An image no archive provides is nobody's business.
    n.rt.block_on(n.fake.client().put_image(
        &crate::containerd::ImageTarget {
            name: "other:1".into(),
            media_type: "m".into(),
            digest: "sha256:00".into(),
            size: 1,
            annotations: Default::default(),
        },
        &Default::default(),
    ))
    .unwrap();
    n.fake.delete_image("other:1");
    std::thread::sleep(Duration::from_millis(100));
    assert!(n.fake.image("other:1").is_none());
}

#[test]
fn a_fighting_actor_is_backed_off_and_the_pin_restored_once_it_stops() {
    let n = Node::new();
    let (d, paths) = following(&n, &[("busybox-docker.tar", "a.tar")]);
    let a = paths[0].display().to_string();
    // For two seconds, strip the pin every 20 ms.
    let started = std::time::Instant::now();
    let mut strips = 0;
    while started.elapsed() < Duration::from_secs(2) {
        n.fake.change_image(BUSYBOX, |i| {
            i.labels.remove(labels::CRI_PINNED);
        });
        strips += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (counts, _) = d.repair_counts();
    let during = counts.get("unpinned").copied().unwrap_or(0);
    assert!(
        during <= 6,
        "{during} repairs for {strips} strips: no back-off"
    );
    assert!(
        during >= 3,
        "{during} repairs: the first ones are immediate"
    );
    // Once it stops, the pin comes back (after the back-off delay).
    until("the pin after the fight", || {
        n.pinned(BUSYBOX).as_deref() == Some(a.as_str())
    });
}

#[test]
fn what_happened_while_unsubscribed_is_found_by_verification() {
    let n = Node::new();
    let (_d, paths) = following(&n, &[("bundle-ctr-export.tar", "a.tar")]);
    let a = paths[0].display().to_string();
    // containerd "restarts": subscriptions end; meanwhile an image is deleted, a lease removed.
    let subscriptions = n.fake.count("subscribe");
    {
        // Changed without events, as while containerd restarts.
        let mut s = n.fake.state();
        s.images.remove(TOOLS);
        s.leases.clear();
    }
    n.fake.end_subscriptions();
    until("a new subscription", || {
        n.fake.count("subscribe") > subscriptions
    });
    until("the image to be restored", || {
        n.pinned(TOOLS).as_deref() == Some(a.as_str())
    });
    until("the lease to be recreated", || {
        !n.fake.state().leases.is_empty()
    });
}

#[test]
fn content_gone_means_the_archive_is_imported_again() {
    let n = Node::new();
    let (_d, paths) = following(&n, &[("busybox-docker.tar", "a.tar")]);
    let a = paths[0].display().to_string();
    let writes = n.fake.count("write");
    // Image and lease removed, and the garbage collector took the content, before the event.
    {
        let mut s = n.fake.state();
        s.leases.clear();
        s.images.remove(BUSYBOX);
    }
    assert!(!n.fake.collect_garbage().is_empty());
    n.fake.publish(crate::containerd::Event::ImageDeleted {
        name: BUSYBOX.into(),
    });
    until("the archive to be imported again", || {
        n.pinned(BUSYBOX).as_deref() == Some(a.as_str())
    });
    assert!(
        n.fake.count("write") > writes,
        "the archive was not read again"
    );
}

/// A lease a dying airlift process still had in flight lands after the startup cleanup: the
/// next verification removes it, and never the lease of a live process.
#[test]
fn verification_removes_what_dead_processes_left_late() {
    let n = Node::new();
    let root = n.dir.path().join("content");
    let root = crate::store::layout::ContentRoot::new(&root);
    std::fs::create_dir_all(root.temp()).unwrap();
    let fake = n.fake.clone().with_content_root(root.path());
    let d = n.daemon();
    n.rt.block_on(d.startup());
    let client = fake.client();
    let dead = "airlift-import-p1x1-0";
    let live = format!("airlift-import-{}-0", crate::liveness::token());
    n.rt.block_on(async {
        client
            .create_lease(dead, Default::default(), None)
            .await
            .unwrap();
        client
            .create_lease(&live, Default::default(), None)
            .await
            .unwrap();
        d.resync(&client, "test").await;
        let left = client.list_leases("").await.unwrap();
        assert!(!left.iter().any(|l| l == dead), "{left:?}");
        assert!(left.contains(&live), "{left:?}");
    });
}
