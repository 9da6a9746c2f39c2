//! The daemon on the containerd fake: pins follow the archives (and only those that went or
//! stopped providing an image), and a restart repairs from the records without reading them.
//!
//! By subject: [`names`], [`startup`], [`api`], [`repair`], [`lists`], [`seed`].

mod api;
mod lists;
mod names;
mod repair;
mod seed;
mod startup;

use super::*;
use crate::labels;
use crate::testing::fixture;
use crate::testkit::fake::Fake;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const TOOLS: &str = "registry.example.com/tools/busybox:latest";

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
