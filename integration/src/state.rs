//! Golden state directories (`integration/golden/state-v<N>/`): what an airlift of state format
//! N left on a node — its state directory, `/var/lib/airlift` with the images and intake
//! directories inside, and containerd's root (`containerd-root.tar.zst`) — made by
//! `golden-state` (`integration/src/bin/golden-state.rs`) and read by the upgrade tests.
//!
//! The archive paths airlift records (in its records, in the `airlift.io/archive` label, in the
//! lease ids) are absolute, so airlift runs, when it makes them and when it reads them, in a
//! mount namespace of its own where `/var/lib/airlift` is a directory of the test's
//! ([`at_var_lib_airlift`]): every recorded path stands as it was, with no rewriting. What no
//! copy keeps is a file's identity (device, inode, change time): [`reidentify`] gives each
//! record the identity of its file as copied, as if it had never moved.

use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where airlift's state directory is, for the golden directories: the default.
pub const VAR_LIB_AIRLIFT: &str = "/var/lib/airlift";

/// `integration/golden/state-v<format>`.
pub fn golden_dir(format: u32) -> PathBuf {
    crate::repo_root()
        .join("integration/golden")
        .join(format!("state-v{format}"))
}

/// A wrapper command (`unshare -m ... exec "$@"`) that runs a program in a private mount
/// namespace where `/var/lib` is an empty tmpfs and `/var/lib/airlift` is `dir`.
pub fn at_var_lib_airlift(dir: &Path) -> Vec<String> {
    [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /var/lib && mkdir /var/lib/airlift && \
         mount --bind \"$1\" /var/lib/airlift && shift && exec \"$@\"",
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.display().to_string()])
    .collect()
}

/// Writes containerd's `root` (stopped) to `tar` (`.tar.zst`), entries sorted, owners numeric.
pub fn pack_root(root: &Path, tar: &Path) -> Result<()> {
    run(Command::new("tar")
        .args(["--zstd", "--sort=name", "--numeric-owner", "-cf"])
        .arg(tar)
        .arg("-C")
        .arg(root)
        .arg("."))
}

/// Unpacks a [`pack_root`] tarball into `root` (created), keeping owners, modes and extended
/// attributes (overlayfs snapshots need them).
pub fn unpack_root(tar: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    run(Command::new("tar")
        .args([
            "--zstd",
            "--numeric-owner",
            "--same-owner",
            "-p",
            "--xattrs",
            "-xf",
        ])
        .arg(tar)
        .arg("-C")
        .arg(root))
}

/// Copies directory `from` into `to` (created), as `cp -a` does.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    run(Command::new("cp").arg("-a").arg(from.join(".")).arg(to))
}

/// Gives every record under `state` (`archives/*.json`) whose archive is at
/// `/var/lib/airlift/<rest>` the identity of `state/<rest>` as it is now, and returns how
/// many. Records of files not there (an intake archive, deleted once imported) are left as
/// they are. Nothing else of a record changes.
pub fn reidentify(state: &Path) -> Result<usize> {
    let dir = state.join("archives");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let file = e?.path();
        if file.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        let record: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
        let Some(path) = record["path"].as_str() else {
            bail!("{}: no path", file.display());
        };
        let Some(rest) = path.strip_prefix(VAR_LIB_AIRLIFT) else {
            bail!("{}: {path} is not under {VAR_LIB_AIRLIFT}", file.display());
        };
        let Ok(id) = airlift::state::Identity::of(&state.join(rest.trim_start_matches('/'))) else {
            continue;
        };
        // Only the identity is replaced, in place: every other byte stays as written.
        let replaced = identity_text(&text)
            .and_then(|old| {
                let new = serde_json::to_string_pretty(&id).ok()?;
                replace_identity(&text, &old, &new)
            })
            .with_context(|| format!("{}: no identity object", file.display()))?;
        std::fs::write(&file, replaced).with_context(|| format!("{}", file.display()))?;
        n += 1;
    }
    Ok(n)
}

/// The text of the `"identity": {...}` object of a record, as written.
fn identity_text(text: &str) -> Option<String> {
    let start = text.find("\"identity\"")?;
    let open = start + text[start..].find('{')?;
    let close = open + text[open..].find('}')?;
    Some(text[open..=close].to_string())
}

fn replace_identity(text: &str, old: &str, new: &str) -> Option<String> {
    let at = text.find(old)?;
    // The new object indented as the old one was (one level into the record).
    let indented = new.replace('\n', "\n  ");
    Some(format!(
        "{}{indented}{}",
        &text[..at],
        &text[at + old.len()..]
    ))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("archives")).unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/a.tar"), b"abc").unwrap();
        let record = "{\n  \"path\": \"/var/lib/airlift/images/a.tar\",\n  \"identity\": {\n    \"dev\": 1,\n    \"ino\": 2,\n    \"size\": 3,\n    \"mtime_ns\": 4,\n    \"ctime_ns\": 5\n  },\n  \"outcome\": \"imported\"\n}";
        let gone = record.replace("a.tar", "gone.tar");
        std::fs::write(dir.path().join("archives/x.json"), record).unwrap();
        std::fs::write(dir.path().join("archives/y.json"), &gone).unwrap();
        assert_eq!(reidentify(dir.path()).unwrap(), 1);
        let text = std::fs::read_to_string(dir.path().join("archives/x.json")).unwrap();
        let id = airlift::state::Identity::of(&dir.path().join("images/a.tar")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["identity"], serde_json::to_value(id).unwrap());
        assert!(text.ends_with("\"outcome\": \"imported\"\n}"), "{text}");
        assert!(
            text.contains("\n  \"identity\": {\n    \"dev\": "),
            "{text}"
        );
        let untouched = std::fs::read_to_string(dir.path().join("archives/y.json")).unwrap();
        assert_eq!(untouched, gone);
    }
}
