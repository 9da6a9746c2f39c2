//! The contenders and their containerd: the binaries measured (airlift, the baseline it is
//! compared with, the floor), the commands that import an archive with each, and a throwaway
//! containerd whose namespace is reset between runs.

use airlift_integration::{Containerd, Options, Version};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The namespace every contender imports into.
pub const NS: &str = "bench";

/// The binaries under measurement.
pub struct Bins {
    /// airlift as built from this tree.
    pub airlift: PathBuf,
    /// Another airlift binary (`--baseline`), measured beside it.
    pub baseline: Option<PathBuf>,
    /// The physical floor (`integration/src/bin/floor.rs`).
    pub floor: PathBuf,
}

impl Bins {
    /// airlift as built from this tree.
    pub fn current(&self) -> Airlift<'_> {
        Airlift {
            bin: &self.airlift,
            baseline: false,
        }
    }

    /// The airlift binaries to measure: the current one, then the baseline if there is one.
    pub fn airlifts(&self) -> Vec<Airlift<'_>> {
        let baseline = self.baseline.iter().map(|bin| Airlift {
            bin,
            baseline: true,
        });
        std::iter::once(self.current()).chain(baseline).collect()
    }
}

/// One airlift binary: the current build, or the baseline it is compared with. Both are run the
/// same way, each with a state directory of its own.
#[derive(Clone, Copy)]
pub struct Airlift<'a> {
    pub bin: &'a Path,
    pub baseline: bool,
}

impl Airlift<'_> {
    /// The name of a contender run with this binary: `name` for the current build, marked for
    /// the baseline.
    pub fn label(&self, name: &str) -> String {
        if self.baseline {
            format!("{name} (baseline)")
        } else {
            name.to_string()
        }
    }

    /// Where this binary keeps its state under `scratch`.
    pub fn state_dir(&self, scratch: &Path) -> PathBuf {
        scratch.join(if self.baseline {
            "state-baseline"
        } else {
            "state"
        })
    }

    /// A command running this binary.
    pub fn command(&self) -> Command {
        Command::new(self.bin)
    }

    /// Starts `serve` (an `airlift serve` command of this binary, without `--socket`) on
    /// `socket`, and returns it once `airlift wait` says it is ready; panics if it is not within
    /// `timeout` seconds.
    pub fn serve(&self, mut serve: Command, socket: &Path, timeout: u32) -> Child {
        let daemon = serve
            .arg("--socket")
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ok = self
            .command()
            .args(["wait", "--timeout", &timeout.to_string(), "--socket"])
            .arg(socket)
            .status()
            .unwrap()
            .success();
        assert!(ok, "airlift serve did not become ready");
        daemon
    }

    /// `airlift import --mode MODE` of `file` (every platform) into [`NS`], its state under
    /// `scratch`.
    pub fn import(&self, ctd: &Containerd, mode: &str, file: &Path, scratch: &Path) -> Command {
        let mut c = self.command();
        c.args([
            "import",
            "--namespace",
            NS,
            "--all-platforms",
            "--mode",
            mode,
            "--state-dir",
        ])
        .arg(self.state_dir(scratch))
        .arg("--address")
        .arg(ctd.address())
        .arg(file);
        c
    }
}

/// Stops a daemon: `SIGTERM`, then waits for it to end.
pub fn stop(mut daemon: Child) {
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

/// `ctr images import --all-platforms` of `file` into [`NS`]: with `--local` (containerd's
/// client importer) or through the transfer API; with `--no-unpack` unless `unpack`.
pub fn ctr_import(ctd: &Containerd, file: &Path, local: bool, unpack: bool) -> Command {
    let mut c = ctd.ctr();
    c.args(["-n", NS, "images", "import", "--all-platforms"]);
    if !unpack {
        c.arg("--no-unpack");
    }
    if local {
        c.arg("--local");
    }
    // `ctr --local` takes a plain tar, as k3s's importer does after decompressing: give it
    // the archive through the decompressor, as an operator (or k3s) would.
    let mut head = [0u8; 4];
    let _ = std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut head));
    let decompress = match head {
        [0x28, 0xb5, 0x2f, 0xfd] => Some("zstd -dc --long=31"),
        [0x1f, 0x8b, _, _] => Some("gzip -dc"),
        _ => None,
    };
    match decompress {
        Some(d) if local => {
            let ctr = format!("{:?}", c.get_program());
            let args: Vec<String> = c
                .get_args()
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect();
            let mut sh = Command::new("bash");
            sh.arg("-c").arg(format!(
                "set -o pipefail; {d} {file:?} | {ctr} {} -",
                args.join(" ")
            ));
            sh
        }
        _ => {
            c.arg(file);
            c
        }
    }
}

/// The floor reading `file` and writing it to one file in `scratch`.
pub fn floor(bin: &Path, file: &Path, scratch: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg(file).arg(scratch.join("floor.out"));
    c
}

/// A throwaway containerd 2.x without CRI, with airlift at `content_proxy` as its content store
/// when given.
pub fn containerd(content_proxy: Option<PathBuf>) -> Containerd {
    Containerd::start_with(
        Version::V2,
        Options {
            cri: false,
            content_proxy,
            ..Options::default()
        },
    )
    .unwrap()
}

/// Empties [`NS`]: images and leases removed, then a synchronous garbage collection; fails if
/// any content is left.
pub fn reset(ctd: &Containerd) {
    let imgs = ctd
        .ctr_output(&["-n", NS, "images", "ls", "-q"])
        .unwrap_or_default();
    let imgs: Vec<&str> = imgs.lines().filter(|l| !l.is_empty()).collect();
    for chunk in imgs.chunks(100) {
        let mut args = vec!["-n", NS, "images", "rm"];
        args.extend(chunk);
        let _ = ctd.ctr_output(&args);
    }
    let leases = ctd
        .ctr_output(&["-n", NS, "leases", "ls", "-q"])
        .unwrap_or_default();
    for l in leases.lines().filter(|l| !l.is_empty()) {
        let _ = ctd.ctr_output(&["-n", NS, "leases", "rm", l]);
    }
    let _ = ctd.collect_garbage(NS);
    let left = ctd
        .ctr_output(&["-n", NS, "content", "ls", "-q"])
        .unwrap_or_default();
    assert!(left.trim().is_empty(), "content left after reset: {left}");
}
