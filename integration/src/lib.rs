//! Test harness: throwaway containerd instances for airlift's end-to-end tests.
//!
//! The containerd binaries come from `integration/provision.sh`, which unpacks
//! Debian's containerd 2.x (sid) and 1.7.x (trixie) into the cache dir and
//! records where in `<cache>/containerd.env`. Each [`Containerd`] runs in a
//! private temporary directory under `/tmp` (root, state, sockets, config and
//! log), so any number of instances can run side by side; dropping one kills
//! the daemon and removes the directory.
//!
//! Made-up image archives (for tests and the benchmark) come from [`archives`]; the golden
//! state directories (what an airlift of each state format left on a node) from [`state`].
//!
//! ```no_run
//! use airlift_integration::{Containerd, Version};
//!
//! let containerd = Containerd::start(Version::V2)?;
//! let out = containerd.ctr_output(&["-n", "k8s.io", "images", "ls", "-q"])?;
//! assert!(out.is_empty(), "{}", containerd.log());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tempfile::TempDir;

pub mod archives;
pub mod golden;
pub mod netns;
pub mod spegel;
pub mod state;
pub mod tools;

/// How long [`Containerd::start`] and [`Containerd::restart`] wait for the
/// daemon to serve requests. A start takes well under a second on an idle
/// machine, but containerd fsyncs its metadata database while it loads, and
/// right after a build has left gigabytes of dirty pages that fsync has been
/// seen to take half a minute; the bound is generous so that only a daemon
/// that truly does not come up fails a test.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A start slower than this is reported on stderr (with the time it took), so
/// a slow machine shows in the test output before it shows as a failure.
const SLOW_START: Duration = Duration::from_secs(10);

/// How long a stopping daemon gets after `SIGTERM` before it is sent `SIGKILL`.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long [`Containerd::ctr_output`] lets one `ctr` invocation run before
/// killing it and failing.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(300);

/// Number of log lines quoted in error messages.
const LOG_TAIL_LINES: usize = 60;

/// A containerd release provisioned by `integration/provision.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// containerd 2.x (Debian sid); config format `version = 3`.
    V2,
    /// containerd 1.7.x (Debian trixie); config format `version = 2`.
    V17,
}

impl Version {
    /// Every provisioned version, newest first.
    pub const ALL: [Version; 2] = [Version::V2, Version::V17];

    /// The version prefix `ctr version` reports for this release (`"2."` or
    /// `"1.7."`).
    pub fn version_prefix(self) -> &'static str {
        match self {
            Version::V2 => "2.",
            Version::V17 => "1.7.",
        }
    }

    /// The key under which `containerd.env` records this release's bin dir.
    fn env_key(self) -> &'static str {
        match self {
            Version::V2 => "CONTAINERD_2",
            Version::V17 => "CONTAINERD_17",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V2 => f.write_str("containerd 2.x"),
            Version::V17 => f.write_str("containerd 1.7"),
        }
    }
}

/// How to configure a [`Containerd`] started with [`Containerd::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Load the CRI plugins (image service and runtime, served on the same
    /// gRPC socket). When false they are listed in `disabled_plugins`.
    pub cri: bool,
    /// TOML appended verbatim to the generated `config.toml`.
    ///
    /// It lands after the generated tables, so it must begin with a table
    /// header (a bare key would end up in the last generated table), and it
    /// must not repeat a header the harness writes:
    /// `[grpc]`, `[ttrpc]`, `[debug]`, `[metrics]`,
    /// `[plugins."io.containerd.internal.v1.opt"]`, and for containerd 2.x
    /// `[plugins."io.containerd.image-verifier.v1.bindir"]`,
    /// `[plugins."io.containerd.cri.v1.images"]`,
    /// `[plugins."io.containerd.cri.v1.runtime".cni]`; for containerd 1.7
    /// `[plugins."io.containerd.grpc.v1.cri".containerd]`,
    /// `[plugins."io.containerd.grpc.v1.cri".cni]`.
    /// Parent tables of those (e.g. `[plugins."io.containerd.grpc.v1.cri"]`
    /// or `[plugins."io.containerd.cri.v1.runtime"]`) may be defined.
    pub extra_config: String,
    /// Use airlift, listening on this socket, as the content store: the built-in content
    /// plugin is disabled and a `[proxy_plugins.airlift]` entry of type `content` added.
    pub content_proxy: Option<PathBuf>,
    /// With [`Options::content_proxy`]: the store's directory, exported by the proxy plugin as
    /// `root` (`exports = { root = "…" }`, as `config/containerd-content-proxy.toml` has it),
    /// so containerd's introspection reports it as its content root.
    pub content_proxy_root: Option<PathBuf>,
    /// Put containerd's root (its content store among it) on a filesystem of its own of this
    /// many MiB ([`small_filesystem`]), for tests of a full disk.
    pub root_mib: Option<u64>,
    /// Run containerd (and `ctr`) in this network namespace ([`netns::Net`]): its pulls go
    /// out from there.
    pub netns: Option<String>,
    /// A `.tar.zst` of another containerd's root, unpacked into the root before the first
    /// start: containerd starts on what that one left ([`state::pack_root`] makes them).
    pub seed_root: Option<PathBuf>,
}

impl Default for Options {
    /// CRI enabled, no extra configuration.
    fn default() -> Self {
        Options {
            cri: true,
            extra_config: String::new(),
            content_proxy: None,
            content_proxy_root: None,
            root_mib: None,
            netns: None,
            seed_root: None,
        }
    }
}

/// A running throwaway containerd.
///
/// Everything it owns lives in one temporary directory under `/tmp`
/// ([`Containerd::dir`]). Dropping it stops the daemon (`SIGTERM`, then
/// `SIGKILL` after [`STOP_GRACE`]), kills shims it started, unmounts anything
/// left mounted below the directory and removes it.
#[derive(Debug)]
pub struct Containerd {
    version: Version,
    options: Options,
    bin_dir: PathBuf,
    /// `None` only while dropping.
    tempdir: Option<TempDir>,
    dir: PathBuf,
    root: PathBuf,
    state: PathBuf,
    address: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Containerd {
    /// Starts containerd `version` with the CRI plugins enabled and waits
    /// until it serves requests.
    pub fn start(version: Version) -> Result<Containerd> {
        Containerd::start_with(version, Options::default())
    }

    /// Starts containerd `version` configured by `opts` and waits until it
    /// serves requests (the socket accepts connections and `ctr version`
    /// succeeds, within [`START_TIMEOUT`]).
    pub fn start_with(version: Version, opts: Options) -> Result<Containerd> {
        let bin_dir = containerd_bin_dir(version)?;
        // Under /tmp, not $TMPDIR: the socket path must stay well below the
        // 108-byte limit of unix socket addresses.
        let tempdir = tempfile::Builder::new()
            .prefix("airlift-ctd-")
            .tempdir_in("/tmp")
            .context("creating the containerd temp dir")?;
        let dir = tempdir.path().to_path_buf();
        let mut containerd = Containerd {
            version,
            options: opts,
            bin_dir,
            root: dir.join("root"),
            state: dir.join("state"),
            address: dir.join("c.sock"),
            config: dir.join("config.toml"),
            log_path: dir.join("containerd.log"),
            dir,
            tempdir: Some(tempdir),
            child: None,
            starts: 0,
        };
        if let Some(mib) = containerd.options.root_mib {
            small_filesystem(&containerd.root, &containerd.dir.join("root.img"), mib)?;
        }
        if let Some(tar) = &containerd.options.seed_root {
            state::unpack_root(tar, &containerd.root)?;
        }
        for sub in ["cni/bin", "cni/conf", "opt"] {
            fs::create_dir_all(containerd.dir.join(sub))
                .with_context(|| format!("creating {}", containerd.dir.join(sub).display()))?;
        }
        fs::write(&containerd.config, containerd.config_toml())
            .with_context(|| format!("writing {}", containerd.config.display()))?;
        containerd.spawn()?;
        Ok(containerd)
    }

    /// Which containerd release this is.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The options it was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The directory holding the containerd and ctr binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The instance's private temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The CRI socket: the same gRPC socket as [`Containerd::address`].
    pub fn cri_address(&self) -> &Path {
        &self.address
    }

    /// containerd's `root` directory (persistent data: content, metadata,
    /// snapshots).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's `state` directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The content store: `<root>/io.containerd.content.v1.content`.
    pub fn content_root(&self) -> PathBuf {
        self.root.join("io.containerd.content.v1.content")
    }

    /// The generated `config.toml`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `ctr --address <socket>` command to add arguments to. No namespace
    /// is set (`CONTAINERD_NAMESPACE` is removed from its environment, so
    /// ctr uses `default` unless `-n` is given).
    pub fn ctr(&self) -> Command {
        let mut cmd = self.command(&self.bin_dir.join("ctr"));
        cmd.arg("--address")
            .arg(&self.address)
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_ADDRESS")
            .stdin(Stdio::null());
        cmd
    }

    /// A command running `program`, in the network namespace of [`Options::netns`] if any.
    fn command(&self, program: &Path) -> Command {
        match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `ctr --address <socket> <args>` and returns its stdout. Fails,
    /// quoting stderr and the end of containerd's log, if ctr exits
    /// non-zero or runs longer than [`CTR_TIMEOUT`].
    pub fn ctr_output(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.ctr();
        cmd.args(args);
        let what = format!("ctr {}", args.join(" "));
        let output = output_with_timeout(cmd, CTR_TIMEOUT)
            .with_context(|| format!("{what} against {}", self.version))?;
        if !output.status.success() {
            bail!(
                "`{what}` against {} failed ({}):\n{}\n--- containerd log (tail) ---\n{}",
                self.version,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end(),
                self.log_tail(LOG_TAIL_LINES),
            );
        }
        String::from_utf8(output.stdout).with_context(|| format!("`{what}` printed non-UTF-8"))
    }

    /// Runs containerd's garbage collection to the end (a lease created in `namespace` and
    /// removed with `--sync`), so a collection an earlier deletion scheduled cannot run in the
    /// middle of what follows.
    pub fn collect_garbage(&self, namespace: &str) -> Result<()> {
        const LEASE: &str = "airlift-integration-gc";
        self.ctr_output(&["-n", namespace, "leases", "create", "--id", LEASE])?;
        self.ctr_output(&["-n", namespace, "leases", "rm", "--sync", LEASE])?;
        Ok(())
    }

    /// The server version `ctr version` reports, e.g. `2.1.9+unknown`.
    pub fn server_version(&self) -> Result<String> {
        let out = self.ctr_output(&["version"])?;
        parse_server_version(&out)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no server version in `ctr version` output:\n{out}"))
    }

    /// Stops the daemon (`SIGTERM`, then `SIGKILL` after [`STOP_GRACE`]),
    /// keeping its directories. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
            let _ = self.append_log(&format!(
                "=== airlift harness: containerd stopped ({}) ===",
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
            ));
        }
    }

    /// Stops the daemon if it runs and starts it again with the same
    /// configuration, root, state and socket; waits as [`Containerd::start`]
    /// does.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Upgrades in place, as a node does: stops the daemon, then starts the release whose
    /// binaries are in `bin_dir` (configured as `version` is: 1.7 → 2.x rewrites the
    /// configuration in 2.x's format) on the same root, state and socket.
    pub fn upgrade(&mut self, version: Version, bin_dir: &Path) -> Result<()> {
        self.stop();
        self.version = version;
        self.bin_dir = bin_dir.to_path_buf();
        fs::write(&self.config, self.config_toml())
            .with_context(|| format!("writing {}", self.config.display()))?;
        self.spawn()
    }

    /// containerd's log (stdout and stderr of every run so far).
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    /// The last `lines` lines of [`Containerd::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn append_log(&self, line: &str) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(f, "{line}")
    }

    /// Spawns the daemon and waits until it serves requests.
    fn spawn(&mut self) -> Result<()> {
        debug_assert!(self.child.is_none());
        self.starts += 1;
        self.append_log(&format!(
            "=== airlift harness: starting {} (start #{}) ===",
            self.version, self.starts
        ))
        .with_context(|| format!("writing {}", self.log_path.display()))?;
        let log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let log_err = log.try_clone()?;
        // containerd-shim-runc-v2 comes from the bin dir, runc from /usr/sbin.
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.bin_dir.display()
        );
        let child = self
            .command(&self.bin_dir.join("containerd"))
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .with_context(|| format!("spawning {}/containerd", self.bin_dir.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// Waits until the socket accepts connections and `ctr version` works.
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        let mut last_error = String::from("socket not created yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "{} exited during startup ({status}); log tail:\n{}",
                        self.version,
                        self.log_tail(LOG_TAIL_LINES)
                    );
                }
            }
            if UnixStream::connect(&self.address).is_ok() {
                let mut cmd = self.ctr();
                cmd.args(["--connect-timeout", "2s", "version"]);
                match output_with_timeout(cmd, Duration::from_secs(10)) {
                    Ok(out) if out.status.success() => {
                        if started.elapsed() > SLOW_START {
                            eprintln!(
                                "note: {} took {:.1?} to start (log: {})",
                                self.version,
                                started.elapsed(),
                                self.log_path.display()
                            );
                        }
                        return Ok(());
                    }
                    Ok(out) => {
                        last_error = format!(
                            "ctr version: {}: {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim_end()
                        )
                    }
                    Err(e) => last_error = format!("ctr version: {e:#}"),
                }
            } else if self.address.exists() {
                last_error = "socket exists but refuses connections".to_owned();
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not become ready within {START_TIMEOUT:?} (last: {last_error}); \
                     log tail:\n{}",
                    self.version,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `config.toml` for this instance.
    fn config_toml(&self) -> String {
        let q = |p: &Path| toml_string(&p.to_string_lossy());
        let opt = self.dir.join("opt");
        let cni_bin = self.dir.join("cni/bin");
        let cni_conf = self.dir.join("cni/conf");
        let ttrpc = self.dir.join("c.sock.ttrpc");

        // NRI listens on the global /var/run/nri/nri.sock, which parallel
        // instances would fight over; airlift does not need it.
        let mut disabled = vec!["io.containerd.nri.v1.nri"];
        if !self.options.cri {
            match self.version {
                Version::V2 => disabled.extend([
                    "io.containerd.grpc.v1.cri",
                    "io.containerd.cri.v1.images",
                    "io.containerd.cri.v1.runtime",
                    "io.containerd.podsandbox.controller.v1.podsandbox",
                ]),
                Version::V17 => disabled.push("io.containerd.grpc.v1.cri"),
            }
        }
        if self.options.content_proxy.is_some() {
            disabled.push("io.containerd.content.v1.content");
        }
        let disabled = disabled
            .iter()
            .map(|p| toml_string(p))
            .collect::<Vec<_>>()
            .join(", ");

        let common = format!(
            r#"root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {address}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
            root = q(&self.root),
            state = q(&self.state),
            address = q(&self.address),
            ttrpc = q(&ttrpc),
            opt = q(&opt),
        );
        let specific = match self.version {
            Version::V2 => format!(
                r#"
[plugins."io.containerd.image-verifier.v1.bindir"]
  bin_dir = {verifier}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  # Compressed layers stay after unpacking, so peers (Spegel) can be served them.
  discard_unpacked_layers = false

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [{cni_bin}]
  conf_dir = {cni_conf}
"#,
                verifier = q(&opt.join("image-verifier/bin")),
                cni_bin = q(&cni_bin),
                cni_conf = q(&cni_conf),
            ),
            Version::V17 => format!(
                r#"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
"#,
                cni_bin = q(&cni_bin),
                cni_conf = q(&cni_conf),
            ),
        };
        let header = match self.version {
            Version::V2 => "# Generated by airlift-integration for containerd 2.x.\nversion = 3\n",
            Version::V17 => "# Generated by airlift-integration for containerd 1.7.\nversion = 2\n",
        };
        let mut config = format!("{header}{common}{specific}");
        if let Some(socket) = &self.options.content_proxy {
            config.push_str(&format!(
                "\n[proxy_plugins.airlift]\n  type = \"content\"\n  address = {}\n",
                q(socket)
            ));
            if let Some(root) = &self.options.content_proxy_root {
                config.push_str(&format!("  exports = {{ root = {} }}\n", q(root)));
            }
        }
        if !self.options.extra_config.is_empty() {
            config.push_str("\n# Options::extra_config\n");
            config.push_str(&self.options.extra_config);
            if !config.ends_with('\n') {
                config.push('\n');
            }
        }
        config
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        kill_shims(&self.address);
        unmount_below(&self.dir);
        if let Some(tempdir) = self.tempdir.take() {
            let path = tempdir.path().to_path_buf();
            if let Err(e) = tempdir.close() {
                eprintln!("airlift-integration: removing {}: {e}", path.display());
            }
        }
    }
}

/// Sends `SIGTERM`, waits up to [`STOP_GRACE`], then `SIGKILL`s and reaps.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall; `child` has not been reaped, so the pid is ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills `containerd-shim*` processes started for the daemon at `address`
/// (they outlive the daemon and would keep files below its dir busy).
fn kill_shims(address: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let address = address.as_os_str().as_encoded_bytes();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|&b| b == 0);
        let is_shim = args.next().is_some_and(|a0| {
            a0.rsplit(|&b| b == b'/')
                .next()
                .unwrap_or(a0)
                .starts_with(b"containerd-shim")
        });
        if is_shim && args.any(|a| a == address) {
            // SAFETY: plain syscall on a process identified by its command line.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
/// Mounts a filesystem of `mib` MiB at `at` (created): an ext4 image at `image`, loop-mounted,
/// or where loop devices are unavailable a tmpfs of that size. It is unmounted when the
/// directory holding it is cleaned up ([`Containerd`]'s drop), or with [`unmount`].
pub fn small_filesystem(at: &Path, image: &Path, mib: u64) -> Result<()> {
    fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
    let loop_mounted = (|| -> Result<()> {
        let f = fs::File::create(image)?;
        f.set_len(mib << 20)?;
        drop(f);
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image)
            .output()?;
        anyhow::ensure!(
            mkfs.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&mkfs.stderr)
        );
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at)
            .output()?;
        anyhow::ensure!(
            mount.status.success(),
            "mount -o loop: {}",
            String::from_utf8_lossy(&mount.stderr)
        );
        Ok(())
    })();
    if let Err(e) = loop_mounted {
        let _ = fs::remove_file(image);
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .context("mount -t tmpfs")?;
        anyhow::ensure!(
            mount.status.success(),
            "neither a loop-mounted ext4 ({e}) nor a tmpfs could be mounted at {}: {}",
            at.display(),
            String::from_utf8_lossy(&mount.stderr)
        );
    }
    Ok(())
}

/// Unmounts `at` (a [`small_filesystem`]).
pub fn unmount(at: &Path) {
    let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH);
}

fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `c` is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Decodes the `\ooo` octal escapes of /proc/self/mountinfo paths.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `cmd` capturing its output; kills it and fails after `timeout`.
fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: plain syscall; the waiting thread has not reaped the
                // child yet (it would have sent its output), so the pid is ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = rx.recv();
            bail!("{:?} timed out after {timeout:?}", cmd.get_program())
        }
    }
}

/// Extracts the `Version:` of the `Server:` section of `ctr version` output.
fn parse_server_version(out: &str) -> Option<&str> {
    let server = &out[out.find("Server:")?..];
    server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(str::trim)
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration crate has a parent directory")
        .to_path_buf()
}

/// The provisioning cache: `$AIRLIFT_CACHE` (a relative path is taken from
/// the repo root, as `provision.sh` does), or `<repo root>/.cache`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("AIRLIFT_CACHE") {
        // join() keeps an absolute path as it is.
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join(".cache"),
    }
}

/// The directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`
/// for `version`, as recorded in `<cache>/containerd.env` by
/// `integration/provision.sh`. The error says to run that script when the
/// file or the binaries are missing.
pub fn containerd_bin_dir(version: Version) -> Result<PathBuf> {
    bin_dir_from_env_file(&cache_dir().join("containerd.env"), version)
}

fn bin_dir_from_env_file(env_file: &Path, version: Version) -> Result<PathBuf> {
    const HINT: &str = "run `bash integration/provision.sh` (from the repository root) \
                        to fetch containerd";
    let text = match fs::read_to_string(env_file) {
        Ok(text) => text,
        Err(e) => bail!("cannot read {}: {e}; {HINT}", env_file.display()),
    };
    let key = version.env_key();
    let dir = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| PathBuf::from(v.trim()))
        .ok_or_else(|| anyhow!("{} has no {key}=...; {HINT}", env_file.display()))?;
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} (from {key} in {}) is missing; {HINT}",
                dir.join(bin).display(),
                env_file.display()
            );
        }
    }
    Ok(dir)
}

/// `<repo root>/integration/fixtures`, where test inputs live.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("integration").join("fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_env_file_points_to_provision_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = bin_dir_from_env_file(&dir.path().join("containerd.env"), Version::V2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("integration/provision.sh"), "{err}");
    }

    #[test]
    fn env_file_without_binaries_points_to_provision_script() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("containerd.env");
        fs::write(&env, format!("CONTAINERD_2={}\n", dir.path().display())).unwrap();
        let err = bin_dir_from_env_file(&env, Version::V2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("integration/provision.sh"), "{err}");
        let err = bin_dir_from_env_file(&env, Version::V17)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONTAINERD_17"), "{err}");
    }

    #[test]
    fn parses_server_version() {
        let out = "Client:\n  Version:  2.1.9+unknown\n  Revision: \n\nServer:\n  \
                   Version:  1.7.24~ds1\n  Revision: x\n";
        assert_eq!(parse_server_version(out), Some("1.7.24~ds1"));
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/tmp/x\"), r"/tmp/x\");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
