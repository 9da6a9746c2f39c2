//! The daemon on the containerd fake: pins follow the archives (and only those that went or
//! stopped providing an image), and a restart repairs from the records without reading them.

use super::*;
use crate::labels;
use crate::testing::fixture;
use crate::testkit::fake::Fake;

#[async_trait::async_trait]
impl Connector for Fake {
    async fn connect(&self, _: &Config) -> Result<Client, crate::containerd::ContainerdError> {
        Ok(self.client())
    }
}

struct Node {
    fake: Fake,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        Node {
            fake: Fake::new(),
            dir,
            rt: crate::testing::runtime(),
        }
    }

    fn images(&self) -> PathBuf {
        self.dir.path().join("images").canonicalize().unwrap()
    }

    fn daemon(&self) -> Arc<Daemon> {
        self.daemon_with(|_| {})
    }

    fn daemon_with(&self, f: impl FnOnce(&mut Config)) -> Arc<Daemon> {
        let mut cfg = Config {
            images_dirs: vec![self.images()],
            state_dir: self.dir.path().join("state"),
            socket: self.dir.path().join("airlift.sock"),
            platforms: vec!["all".into()],
            settle_ms: 0,
            ..Config::default()
        };
        f(&mut cfg);
        Daemon::with_connector(cfg, Box::new(self.fake.clone())).unwrap()
    }

    fn intake(&self) -> PathBuf {
        let d = self.dir.path().join("intake");
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    fn put(&self, fixture_name: &str, as_name: &str) -> PathBuf {
        let p = self.images().join(as_name);
        let tmp = self.images().join(format!(".{as_name}.tmp"));
        std::fs::copy(fixture(fixture_name), &tmp).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    fn reconcile(&self, d: &Arc<Daemon>, p: &Path) {
        self.rt.block_on(d.reconcile(p, false));
    }

    fn pinned(&self, name: &str) -> Option<String> {
        self.fake.image(name).map(|i| {
            match (
                i.labels.get(labels::CRI_PINNED),
                i.labels.get(labels::ARCHIVE),
            ) {
                (Some(_), Some(a)) => a.clone(),
                (Some(_), None) => "pinned, no archive".into(),
                (None, _) => "unpinned".into(),
            }
        })
    }

    /// The images written (created, re-pointed, relabelled or unpinned) since call `from`.
    fn relabelled(&self, from: usize) -> Vec<String> {
        let mut v: Vec<String> = self.fake.calls()[from..]
            .iter()
            .filter(|c| c.op == "set_image_labels" || c.op == "put_image")
            .map(|c| c.subject.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Sets a file's modification time `secs` seconds from now.
    fn age(&self, p: &Path, secs: i64) {
        let t = if secs >= 0 {
            std::time::SystemTime::now() + Duration::from_secs(secs as u64)
        } else {
            std::time::SystemTime::now() - Duration::from_secs((-secs) as u64)
        };
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn target(&self, name: &str) -> String {
        self.fake.image(name).map(|i| i.digest).unwrap_or_default()
    }
}

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const TOOLS: &str = "registry.example.com/tools/busybox:latest";

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
    assert!(d.records().load_all().unwrap().is_empty());
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
    let winners = super::names::winners(&d.present_records());
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
fn the_api_imports_lists_and_forgets() {
    use crate::api::proto;
    let n = Node::new();
    let d = n.daemon();
    let a = n.put("busybox-docker.tar", "a.tar");
    n.rt.block_on(async {
        let server = server::listen(d.clone()).await.unwrap();
        let mut api = crate::api::connect(&d.config().socket).await.unwrap();
        let mut progress = api
            .import(proto::ImportRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(p) = progress.message().await.unwrap() {
            if p.done {
                last = p.archive;
            }
        }
        let archive = last.expect("a final message with the archive");
        assert_eq!(crate::api::state_name(archive.state), "imported");
        assert_eq!(archive.images, [BUSYBOX]);
        let list = api.list(proto::ListRequest {}).await.unwrap().into_inner();
        assert_eq!(list.archives.len(), 1);
        let status = api
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status.archives, status.importing, status.queue_length),
            (1, 0, 0)
        );
        // A relative path is refused with a message naming it.
        let e = api
            .import(proto::ImportRequest {
                path: "a.tar".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("a.tar"), "{}", e.message());
        let forgotten = api
            .forget(proto::ForgetRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(forgotten.unpinned, [BUSYBOX]);
        let e = api
            .forget(proto::ForgetRequest {
                path: a.display().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        server.abort();
    });
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
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

/// Waits (up to 10 s) until `f` holds.
fn until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

/// A node whose daemon has done its startup import and follows containerd's events.
fn following(n: &Node, archives: &[(&str, &str)]) -> (Arc<Daemon>, Vec<PathBuf>) {
    let paths: Vec<PathBuf> = archives.iter().map(|(f, a)| n.put(f, a)).collect();
    let d = n.daemon();
    n.rt.block_on(d.startup());
    let follower = d.clone();
    n.rt.spawn(async move { follower.follow_events().await });
    // Subscribed once the fake holds the subscription.
    until("the subscription", || n.fake.subscriptions() > 0);
    (d, paths)
}

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

#[test]
fn intake_archives_are_deleted_once_imported_and_kept_until_forgotten() {
    let n = Node::new();
    let intake = n.intake();
    let d = n.daemon_with(|c| c.intake_dirs = vec![intake.clone()]);
    let a = intake.join("a.tar");
    std::fs::copy(fixture("busybox-docker.tar"), &a).unwrap();
    n.reconcile(&d, &a);
    assert!(!a.exists(), "the intake archive was not deleted");
    let status = d.archive(&a).unwrap();
    assert_eq!(status.state, State::Imported);
    assert!(status.record.unwrap().intake);
    // Its removal is not a release.
    n.reconcile(&d, &a);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    // Across a restart.
    let d = n.daemon_with(|c| c.intake_dirs = vec![intake.clone()]);
    n.rt.block_on(d.startup());
    assert_eq!(n.pinned(BUSYBOX).unwrap(), a.display().to_string());
    assert!(n
        .fake
        .state()
        .leases
        .contains_key(&labels::archive_lease(&a)));
    // A new archive at the same path replaces it as a changed archive would.
    std::fs::copy(fixture("busybox-arm64-multitag-docker.tar"), &a).unwrap();
    n.reconcile(&d, &a);
    assert!(!a.exists());
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
    assert_eq!(n.pinned(TOOLS).unwrap(), a.display().to_string());
    // A failed import leaves the file in place, shown as failed.
    let data = std::fs::read(fixture("bundle-ctr-export.tar")).unwrap();
    let b = intake.join("b.tar");
    std::fs::write(&b, &data[..data.len() / 2]).unwrap();
    n.reconcile(&d, &b);
    assert!(b.exists());
    assert_eq!(d.archive(&b).unwrap().state, State::Failed);
    // Forgotten: released.
    let unpinned = n.rt.block_on(d.forget(&a)).unwrap();
    assert_eq!(unpinned.len(), 3, "{unpinned:?}");
    assert_eq!(n.pinned(TOOLS).unwrap(), "unpinned");
    assert!(!n
        .fake
        .state()
        .leases
        .contains_key(&labels::archive_lease(&a)));
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

#[test]
fn readiness_of_named_images() {
    let n = Node::new();
    let d = n.daemon();
    let rt = &n.rt;
    assert_eq!(
        rt.block_on(d.not_ready(&["busybox:1.35".into()])).unwrap(),
        [BUSYBOX]
    );
    let a = n.put("busybox-docker.tar", "a.tar");
    n.reconcile(&d, &a);
    assert!(rt
        .block_on(d.not_ready(&["busybox:1.35".into()]))
        .unwrap()
        .is_empty());
    // Unpinned by someone: not ready until restored.
    n.fake.change_image(BUSYBOX, |i| {
        i.labels.remove(labels::CRI_PINNED);
    });
    assert_eq!(
        rt.block_on(d.not_ready(&["docker.io/library/busybox:1.35".into()]))
            .unwrap()
            .len(),
        1
    );
    assert!(rt
        .block_on(d.not_ready(&["Bad:Ref".into()]))
        .unwrap_err()
        .contains("Bad:Ref"));
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
