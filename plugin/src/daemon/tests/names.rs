//! The rule for names several archives provide, on the fake: pins move only for archives that
//! went or stopped providing an image, the newest archive wins a shared name, a broken
//! replacement keeps every pin.

use super::*;

#[test]
fn pins_move_only_for_archives_that_went_or_stopped_providing() {
    let n = Node::new();
    let d = n.daemon();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    n.reconcile(&d, &a);
    let b = n.put("busybox-multiarch-oci.tar", "b.tar");
    n.reconcile(&d, &b);
    // Both provide busybox (same target); the later import labelled it.
    assert_eq!(n.pinned(BUSYBOX).unwrap(), b.display().to_string());
    assert_eq!(n.pinned(TOOLS).unwrap(), a.display().to_string());

    // b goes: busybox stays pinned, now naming a, which still provides it.
    std::fs::remove_file(&b).unwrap();
    let mark = n.fake.calls().len();
    n.reconcile(&d, &b);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    assert_eq!(
        n.relabelled(mark),
        [BUSYBOX],
        "only the shared name changed"
    );
    assert!(n
        .fake
        .state()
        .leases
        .keys()
        .all(|l| *l != labels::archive_lease(&b)));

    // a is replaced by an archive without busybox: busybox loses its pin; the tools names (still
    // provided) are written by the import again, never unpinned, not even for a moment.
    let mark = n.fake.calls().len();
    n.put("busybox-arm64-multitag-docker.tar", "a.tar");
    n.reconcile(&d, &a);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
    let unpinned: Vec<String> = n.fake.calls()[mark..]
        .iter()
        .filter(|c| c.op == "set_image_labels")
        .map(|c| c.subject.clone())
        .collect();
    assert_eq!(unpinned, [BUSYBOX]);
    assert_eq!(n.pinned(TOOLS).unwrap(), a.display().to_string());
    assert_eq!(
        n.pinned("docker.io/library/busybox:stable").unwrap(),
        a.display().to_string()
    );

    // a goes: everything it provided is unpinned, its lease and record go.
    std::fs::remove_file(&a).unwrap();
    n.reconcile(&d, &a);
    assert_eq!(n.pinned(TOOLS).unwrap(), "unpinned");
    assert!(n.fake.state().leases.is_empty());
    assert!(d.archives().is_empty());
    assert!(d.records().load_all().unwrap().records.is_empty());
}

/// Two archives provide busybox:1.35 with different targets: the newer wins, at import, after
/// the winner goes (the name is re-pointed at the other's target, with its labels), and an older
/// archive imported later does not take the name.
#[test]
fn the_newest_archive_wins_a_shared_name() {
    const INDEX: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
    const DOCKER: &str = "sha256:9c0b0fd8eabfb086e699955045c31650c8620d9ca78ca73e69f772cb3b74a7af";
    let n = Node::new();
    let d = n.daemon();
    let old = n.put("busybox-docker.tar", "old.tar");
    n.age(&old, -100);
    let new = n.put("bundle-ctr-export.tar", "new.tar");
    n.age(&new, -10);
    // The newer first, then the older: the older does not take the name.
    n.reconcile(&d, &new);
    n.reconcile(&d, &old);
    assert_eq!(n.target(BUSYBOX), INDEX);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), new.display().to_string());
    let shadows = d.shadows(&d.archive(&old).unwrap().record.unwrap());
    assert_eq!(shadows.get(BUSYBOX), Some(&new));
    // The rule for all names at once agrees with the rule for one.
    let winners = crate::daemon::names::winners(&d.present_records());
    assert_eq!(winners.get(BUSYBOX), Some(&new));
    for (name, by) in &winners {
        assert_eq!(
            d.desired(name).map(|w| w.archive).as_ref(),
            Some(by),
            "{name}"
        );
    }
    // The older's content is held by its lease all the same.
    let lease = labels::archive_lease(&old);
    assert!(n.fake.state().leases[&lease].content.contains(DOCKER));
    // The winner goes: re-pointed at the older's target, with the older's labels.
    std::fs::remove_file(&new).unwrap();
    n.reconcile(&d, &new);
    assert_eq!(n.target(BUSYBOX), DOCKER);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), old.display().to_string());
    assert!(d
        .shadows(&d.archive(&old).unwrap().record.unwrap())
        .is_empty());
    // Back, newer: it takes the name again at its import.
    let new = n.put("bundle-ctr-export.tar", "new.tar");
    n.reconcile(&d, &new);
    assert_eq!(n.target(BUSYBOX), INDEX);
    // The same rule after a restart, whoever last wrote the name: someone points it back at
    // the older's target while the daemon is down; the restart puts the newer's back.
    n.fake.change_image(BUSYBOX, |i| i.digest = DOCKER.into());
    let d = n.daemon();
    n.rt.block_on(d.startup());
    assert_eq!(n.target(BUSYBOX), INDEX);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), new.display().to_string());
}

#[test]
fn a_broken_replacement_keeps_every_pin() {
    let n = Node::new();
    let d = n.daemon();
    let a = n.put("bundle-ctr-export.tar", "a.tar");
    n.reconcile(&d, &a);
    // Replaced by a truncated copy: the import fails, nothing is unpinned.
    let data = std::fs::read(fixture("bundle-ctr-export.tar")).unwrap();
    std::fs::write(&a, &data[..data.len() / 2]).unwrap();
    let mark = n.fake.calls().len();
    n.reconcile(&d, &a);
    let status = d.archive(&a).unwrap();
    assert_eq!(status.state, State::Failed);
    let err = &status.record.unwrap().last_error;
    assert!(err.contains("a.tar"), "{err}");
    assert!(
        n.relabelled(mark).is_empty(),
        "pins moved after a failed import"
    );
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    // Unchanged since the failure: not tried again.
    let mark = n.fake.calls().len();
    n.reconcile(&d, &a);
    assert_eq!(n.fake.calls().len(), mark);
}
