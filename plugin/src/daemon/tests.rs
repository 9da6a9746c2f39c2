//! The daemon on the containerd fake: pins follow the archives (and only those that went or
//! stopped providing an image), and a restart repairs from the records without reading them.

use super::*;
use crate::containerd::fake::Fake;
use crate::labels;
use crate::testing::fixture;

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
        let cfg = Config {
            images_dirs: vec![self.images()],
            state_dir: self.dir.path().join("state"),
            socket: self.dir.path().join("airlift.sock"),
            platforms: vec!["all".into()],
            settle_ms: 0,
            ..Config::default()
        };
        Daemon::with_connector(cfg, Box::new(self.fake.clone())).unwrap()
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

    /// The images whose labels changed since call `from`.
    fn relabelled(&self, from: usize) -> Vec<String> {
        self.fake.calls()[from..]
            .iter()
            .filter(|c| c.op == "set_image_labels")
            .map(|c| c.subject.clone())
            .collect()
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

    // a is replaced by an archive without busybox: busybox loses its pin, the tools names
    // (still provided) are not touched at all, not even for a moment.
    let mark = n.fake.calls().len();
    n.put("busybox-arm64-multitag-docker.tar", "a.tar");
    n.reconcile(&d, &a);
    assert_eq!(n.pinned(BUSYBOX).unwrap(), "unpinned");
    assert_eq!(n.relabelled(mark), [BUSYBOX]);
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
