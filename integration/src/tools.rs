//! The third-party binaries kept zstd-compressed beside the repository, in
//! `<repo>/../shared/tools` (Spegel, crictl, containerd/ctr/shim 2.4): found, and unpacked
//! once by the directory's own `unpack.sh`. Tests that need them skip, saying [`SKIPPED`],
//! where the directory is absent (a clone on its own).

use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// What a test prints when it skips for want of the tools.
pub const SKIPPED: &str = "skipped: ../shared/tools not present";

/// `<repo>/../shared/tools`, when it is there.
pub fn dir() -> Option<PathBuf> {
    let dir = crate::repo_root().parent()?.join("shared").join("tools");
    dir.join("unpack.sh").is_file().then_some(dir)
}

/// The directory holding the unpacked binaries (`spegel`, `crictl`, ...), unpacking them on
/// first use; `None` when the tools are absent.
pub fn bin_dir() -> Option<Result<PathBuf>> {
    static UNPACKED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let src = dir()?;
    let r = UNPACKED.get_or_init(|| unpack(&src).map_err(|e| format!("{e:#}")));
    Some(r.clone().map_err(anyhow::Error::msg))
}

fn unpack(src: &std::path::Path) -> Result<PathBuf> {
    let script = src.join("unpack.sh");
    let run = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !run.status.success() {
        bail!(
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let out = PathBuf::from(String::from_utf8_lossy(&run.stdout).trim());
    if !out.join("spegel").is_file() {
        bail!(
            "{} printed {}, which has no spegel",
            script.display(),
            out.display()
        );
    }
    Ok(out)
}
