//! Makes a golden state directory (`integration/golden/state-v<N>/`): what the `airlift` binary
//! given leaves on a node, run as `airlift serve` over a throwaway containerd 2.x.
//!
//! `golden-state --airlift BIN --out DIR`
//!
//! The daemon runs in a mount namespace where `/var/lib/airlift` (its state directory, the
//! default) is `DIR/var/lib/airlift`, with the images directory `images/` and the intake
//! directory `intake/` inside, unpacking into overlayfs. It is given:
//!
//! - `images/app.tar`: two images sharing a base layer;
//! - `images/tools.tar`: one image;
//! - `images/broken.tar`: not an archive (its record says why it failed);
//! - `intake/drop.tar`: one image, deleted once imported (its record stays).
//!
//! Once it is idle it is stopped (SIGTERM), then containerd, whose root is written to
//! `DIR/containerd-root.tar.zst`. Every archive is made from fixed seeds: the same bytes each
//! time.

use airlift_integration::archives::{one_image, small};
use airlift_integration::state::{at_var_lib_airlift, pack_root, VAR_LIB_AIRLIFT};
use airlift_integration::{Containerd, Version};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (airlift, out) = match args.as_slice() {
        [_, a, bin, o, dir] if a == "--airlift" && o == "--out" => {
            (PathBuf::from(bin), PathBuf::from(dir))
        }
        _ => bail!("usage: golden-state --airlift BIN --out DIR"),
    };
    let airlift = std::fs::canonicalize(&airlift).with_context(|| airlift.display().to_string())?;
    if out.exists() {
        bail!("{} exists: remove it first", out.display());
    }
    let state = out.join("var/lib/airlift");
    archives(&state)?;
    let mut ctd = Containerd::start(Version::V2)?;
    let work = tempfile::tempdir()?;
    let socket = work.path().join("airlift.sock");
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "address = {:?}\nimages_dirs = [\"{VAR_LIB_AIRLIFT}/images\"]\n\
             intake_dirs = [\"{VAR_LIB_AIRLIFT}/intake\"]\nstate_dir = \"{VAR_LIB_AIRLIFT}\"\n\
             socket = {socket:?}\nsettle_ms = 100\nunpack = \"overlayfs\"\n",
            ctd.address()
        ),
    )?;
    let wrapper = at_var_lib_airlift(&state);
    let log = std::fs::File::create(work.path().join("airlift.log"))?;
    let mut serve = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(&airlift)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("AIRLIFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let idle = until_idle(&airlift, &socket, &state);
    // SAFETY: plain syscall on our child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    serve.wait()?;
    if let Err(e) = idle {
        let log = std::fs::read_to_string(work.path().join("airlift.log")).unwrap_or_default();
        bail!("{e:#}\nairlift log:\n{log}");
    }
    ctd.stop();
    pack_root(ctd.root(), &out.join("containerd-root.tar.zst"))?;
    let version = Command::new(&airlift).arg("--version").output()?;
    println!(
        "{} made by {} over containerd {}",
        out.display(),
        String::from_utf8_lossy(&version.stdout).trim(),
        ctd.version()
    );
    Ok(())
}

/// The archives, in `state/images` and `state/intake`.
fn archives(state: &Path) -> Result<()> {
    let (images, intake) = (state.join("images"), state.join("intake"));
    std::fs::create_dir_all(&images)?;
    std::fs::create_dir_all(&intake)?;
    small(
        &images.join("app.tar"),
        512,
        &[("base", 1), ("one", 2), ("two", 3)],
        &[
            ("example.com/golden/app:1", &["base", "one"]),
            ("example.com/golden/app:2", &["base", "two"]),
        ],
    )?;
    one_image(
        &images.join("tools.tar"),
        "example.com/golden/tools:1",
        700,
        4,
    )?;
    std::fs::write(images.join("broken.tar"), b"not an archive\n")?;
    // Dropped into the intake directory once the others are in (below).
    Ok(())
}

/// Waits until the daemon is idle with every archive known, the intake archive dropped and
/// gone.
fn until_idle(airlift: &Path, socket: &Path, state: &Path) -> Result<()> {
    let status = || -> Option<serde_json::Value> {
        let out = Command::new(airlift)
            .args(["status", "--json", "--socket"])
            .arg(socket)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let idle =
        |n: u64| status().is_some_and(|s| s["idle"] == true && s["archives"].as_u64() == Some(n));
    wait("the first three archives", || idle(3))?;
    let drop = state.join("intake/drop.tar");
    one_image(&drop, "example.com/golden/drop:1", 600, 5)?;
    wait("the intake archive", || !drop.exists() && idle(4))
}

fn wait(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two polls in a row: nothing between two of the daemon's counters.
    std::thread::sleep(Duration::from_millis(300));
    if !f() {
        return wait(what, f);
    }
    Ok(())
}
