//! A real Spegel (v0.7.4, from [`crate::tools`]) on one node of a [`crate::netns::Net`]: its
//! registry, router and HTTP bootstrap on the node's address (Spegel ignores peers on
//! loopback), reading containerd's events and images over its socket and blob bytes from a
//! content directory (`--containerd-content-path`). Killed when dropped.

use anyhow::{Context as _, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry port containerd's `hosts.toml` points at.
pub const REGISTRY_PORT: u16 = 5000;
/// The libp2p router's port.
pub const ROUTER_PORT: u16 = 5001;
/// The HTTP bootstrap port (`/id` answers the node's multiaddr).
pub const BOOTSTRAP_PORT: u16 = 5002;
/// The metrics (and debug web) port.
pub const METRICS_PORT: u16 = 9090;

/// How Spegel is started on a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's network namespace.
    pub netns: String,
    /// The node's address in it.
    pub ip: IpAddr,
    /// containerd's socket.
    pub containerd: PathBuf,
    /// Where the blob bytes are read: `--containerd-content-path`.
    pub content_path: PathBuf,
    /// The node whose HTTP bootstrap every node asks first (itself for the first node).
    pub bootstrap: IpAddr,
}

/// A running `spegel registry`.
#[derive(Debug)]
pub struct Spegel {
    config: Config,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Spegel {
    /// Starts `spegel registry` from `bin_dir` in the node's namespace; not waited for (see
    /// [`Spegel::wait_serving`]).
    pub fn start(bin_dir: &Path, config: Config) -> Result<Spegel> {
        let dir = tempfile::Builder::new()
            .prefix("airlift-spegel-")
            .tempdir_in("/tmp")
            .context("creating Spegel's directory")?;
        let log = std::fs::File::create(dir.path().join("spegel.log"))?;
        let at = |port: u16| SocketAddr::new(config.ip, port).to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &config.netns])
            .arg(bin_dir.join("spegel"))
            .arg("registry")
            .arg(format!("--containerd-sock={}", config.containerd.display()))
            .arg("--containerd-namespace=k8s.io")
            .arg(format!(
                "--containerd-content-path={}",
                config.content_path.display()
            ))
            .arg(format!("--registry-addr={}", at(REGISTRY_PORT)))
            .arg(format!("--router-addr={}", at(ROUTER_PORT)))
            .arg(format!("--metrics-addr={}", at(METRICS_PORT)))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg("--bootstrap-kind=http")
            .arg(format!("--http-bootstrap-addr={}", at(BOOTSTRAP_PORT)))
            .arg(format!(
                "--http-bootstrap-peer=http://{}",
                SocketAddr::new(config.bootstrap, BOOTSTRAP_PORT)
            ))
            // The default (20 ms) is for an idle machine; a test shares two cores with builds.
            .arg("--mirror-resolve-timeout=500ms")
            .arg("--debug-web-enabled=false")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting spegel (ip netns exec)")?;
        Ok(Spegel {
            config,
            dir,
            child: Some(child),
        })
    }

    /// The registry's URL (`http://IP:5000`), what a node's `hosts.toml` names as its mirror.
    pub fn url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.config.ip, REGISTRY_PORT))
    }

    /// How it was started.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("spegel.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the registry answers `GET /v2/` in the node's namespace (and the process
    /// still runs).
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!(
                    "spegel on {} exited ({status}):\n{}",
                    self.config.ip,
                    self.log_tail(30)
                );
            }
            if self.get("/v2/").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "spegel on {} did not serve within {timeout:?}:\n{}",
                    self.config.ip,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET` (`curl`) of a path of this node's registry from inside its namespace, as
    /// containerd asks it: the HTTP status and the body.
    pub fn get(&self, path_and_query: &str) -> Result<(u16, Vec<u8>)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.config.netns, "curl", "-sS"])
            .args(["--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .arg(format!("{}{path_and_query}", self.url()))
            .output()
            .context("running curl (ip netns exec)")?;
        anyhow::ensure!(
            out.status.success(),
            "curl {}{path_and_query}: {}",
            self.url(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = out.stdout;
        let cut = text.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&text[cut..]).trim().parse()?;
        Ok((code, text[..cut].to_vec()))
    }

    /// Stops it (`SIGTERM`, then `SIGKILL` after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: plain syscall; the child is not reaped yet, so the pid is ours.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Spegel {
    fn drop(&mut self) {
        self.stop();
    }
}
