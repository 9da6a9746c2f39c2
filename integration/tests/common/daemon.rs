//! A running `airlift serve` for the end-to-end tests.

use super::airlift_bin;
use airlift_integration::Containerd;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `airlift serve` in a temporary directory, pointed at a containerd.
pub struct Daemon {
    /// Holds images/, state/, the socket and the log.
    pub dir: tempfile::TempDir,
    /// The containerd socket.
    pub address: PathBuf,
    /// Extra configuration lines.
    pub config: String,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// Extra arguments of `airlift serve`, after `--config FILE`.
    pub args: Vec<String>,
    /// A command the daemon is started under (`unshare ... sh -c '...; exec "$@"' sh`), which
    /// must exec it in the end; none when empty.
    pub wrapper: Vec<String>,
    /// The airlift binary `serve` runs (none: this build's, [`airlift_bin`]).
    pub bin: Option<PathBuf>,
    child: Option<Child>,
}

impl Daemon {
    /// Prepares (does not start) a daemon for `ctd` with extra TOML `config`.
    pub fn new(ctd: &Containerd, config: &str) -> Daemon {
        let mut d = Daemon::unbound(config);
        d.address = ctd.address().to_path_buf();
        d
    }

    /// Prepares a daemon whose containerd is not running yet (containerd may need the daemon's
    /// socket in its configuration): set `address` before [`Daemon::start`].
    pub fn unbound(config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("airlift-d")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        Daemon {
            dir,
            address: PathBuf::new(),
            config: config.to_string(),
            env: Vec::new(),
            args: Vec::new(),
            wrapper: Vec::new(),
            bin: None,
            child: None,
        }
    }

    /// Prepares a daemon serving containerd's content store from `<dir>/content` (returned),
    /// whose containerd is not running yet.
    pub fn content_proxy() -> (Daemon, PathBuf) {
        let mut d = Daemon::unbound("");
        let root = d.dir.path().join("content");
        d.config = format!("[content_proxy]\nroot = {root:?}\n");
        (d, root)
    }

    /// Starts containerd `version` (configured by `opts`) with this daemon's socket as its
    /// content proxy, then the daemon against it, and waits until the daemon is ready.
    #[allow(dead_code)]
    pub fn serve_as_content_proxy(
        &mut self,
        version: airlift_integration::Version,
        opts: airlift_integration::Options,
    ) -> Containerd {
        let ctd = Containerd::start_with(
            version,
            airlift_integration::Options {
                content_proxy: Some(self.socket()),
                ..opts
            },
        )
        .unwrap();
        self.address = ctd.address().to_path_buf();
        self.start();
        self.wait();
        ctd
    }

    /// Has the daemon, once started, report to a `$NOTIFY_SOCKET` of its own; call
    /// [`Notifications::expect_ready`] on the result.
    pub fn notify_socket(&mut self) -> Notifications {
        let path = self.dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        self.env
            .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
        Notifications(socket)
    }

    /// The images directory.
    pub fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    /// The state directory.
    #[allow(dead_code)]
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("airlift.sock")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("airlift.log")).unwrap_or_default()
    }

    /// Starts `airlift serve`.
    pub fn start(&mut self) {
        let cfg = self.dir.path().join("config.toml");
        let text = format!(
            "address = {:?}\nimages_dirs = [{:?}]\nstate_dir = {:?}\nsocket = {:?}\nsettle_ms = 300\n{}\n",
            self.address,
            self.images(),
            self.dir.path().join("state"),
            self.socket(),
            self.config
        );
        std::fs::write(&cfg, text).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("airlift.log"))
            .unwrap();
        let bin = self.bin.clone().unwrap_or_else(airlift_bin);
        let mut cmd = super::wrapped(&self.wrapper, bin);
        let child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .args(&self.args)
            .env("AIRLIFT_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// `airlift wait` with a timeout; panics with the log when it fails.
    pub fn wait(&self) {
        let out = self.cli(&["wait", "--timeout", "60"]);
        assert!(
            out.status.success(),
            "airlift wait failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Runs an airlift client subcommand against this daemon's socket.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(airlift_bin());
        cmd.arg(args[0])
            .arg("--socket")
            .arg(self.socket())
            .args(&args[1..]);
        cmd.output().unwrap()
    }

    /// `airlift ls --json`.
    pub fn ls(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["ls", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The `ls` entry of an archive.
    pub fn archive(&self, path: &Path) -> Option<serde_json::Value> {
        self.ls()
            .into_iter()
            .find(|a| a["path"] == airlift::escape::shown(path).to_string())
    }

    /// Polls until `f` holds, panicking with `what` and the log otherwise. The limit (120 s) is
    /// for a loaded machine re-importing hundreds of MB; a passing test returns at once.
    pub fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}\nlog:\n{}", self.log());
    }

    /// `airlift status` as printed (empty if the daemon does not answer).
    pub fn status(&self) -> String {
        String::from_utf8_lossy(&self.cli(&["status"]).stdout).into_owned()
    }

    /// `airlift status` as (key, value) pairs, e.g. `("queued", "0")`.
    pub fn status_fields(&self) -> BTreeMap<String, String> {
        self.status()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// `airlift status --json`; panics when the daemon does not answer.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until the daemon follows containerd's events (repairs are then immediate).
    pub fn until_following(&self) {
        self.until("the daemon to follow containerd's events", || {
            self.status_json()["following_events"] == true
        });
    }

    /// Whether the daemon is idle right now: its startup import is done, and no file is
    /// settling, queued or being imported.
    pub fn idle(&self) -> bool {
        let s = self.status_fields();
        let field = |k: &str| s.get(k).map(String::as_str);
        field("startup import") == Some("done")
            && ["settling", "queued", "importing"]
                .iter()
                .all(|k| field(k) == Some("0"))
    }

    /// Waits (as [`Daemon::until`] does) until the daemon is [idle](Daemon::idle) in two
    /// polls in a row, so that an assertion that nothing more happens can follow.
    ///
    /// A file event the kernel has not yet handed to the daemon's watcher is not counted:
    /// call this once the daemon has acted on what the test did (an archive shows as imported,
    /// say), not right after touching the images directory. The second poll guards against
    /// the moments between two of the daemon's counters (an event leaving the watcher before
    /// it is counted as queued, an import starting before it is counted as importing).
    pub fn until_idle(&self) {
        let mut idle_before = false;
        self.until("the daemon to be idle", || {
            let idle = self.idle();
            let done = idle && idle_before;
            idle_before = idle;
            done
        });
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!("airlift did not stop on SIGTERM\n{}", self.log());
    }

    /// Waits (at most `timeout`) for the daemon to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the daemon sends to its `$NOTIFY_SOCKET`.
pub struct Notifications(std::os::unix::net::UnixDatagram);

impl Notifications {
    /// Waits (30 s at most) for the daemon's `READY=1`.
    pub fn expect_ready(&self) {
        let mut buf = [0u8; 256];
        let n = self.0.recv(&mut buf).expect("no readiness notification");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
