//! Liveness of airlift processes, valid across PID namespaces (a containerised daemon and a
//! command line on the host may share one content root).
//!
//! Each process has a token that names its temporary files, ingests and import leases, and holds
//! an exclusive `flock` on `<temp dir>/<token>.lock` for as long as it runs. Leftovers whose
//! token's lock file is missing or can be locked belong to a process that is gone.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// This process's token: no `-` inside, as names are split on it.
pub fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("p{}x{:x}", std::process::id(), nanos)
    })
}

fn held() -> &'static Mutex<HashMap<PathBuf, File>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, File>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Holds this process's lock in `dir` (once per directory, for the life of the process).
pub fn hold(dir: &Path) -> io::Result<()> {
    let mut held = held().lock().unwrap();
    if held.contains_key(dir) {
        return Ok(());
    }
    // Locked under a temporary name, then renamed into place: a cleaner never sees an unlocked
    // lock file of a live process.
    let staging = dir.join(format!("{}.lock.new", token()));
    let file = File::create(&staging)?;
    if !crate::sys::try_lock(&file) {
        return Err(io::Error::other("cannot lock the liveness file"));
    }
    fs::rename(&staging, dir.join(format!("{}.lock", token())))?;
    held.insert(dir.to_path_buf(), file);
    Ok(())
}

/// Removes this process's lock files (at a clean exit; after a crash, the next cleaner does).
pub fn release() {
    for (dir, _file) in held().lock().unwrap().drain() {
        let _ = fs::remove_file(dir.join(format!("{}.lock", token())));
    }
}

/// Whether the process that used `token` is gone, judged by its lock in `dir`.
pub fn is_dead(dir: &Path, token: &str) -> bool {
    if token == self::token() {
        return false;
    }
    match File::open(dir.join(format!("{token}.lock"))) {
        Err(_) => true,
        Ok(f) => crate::sys::try_lock(&f), // released again when `f` closes
    }
}

/// The token at the start of a name (`<token>-…`), after `prefix`.
pub fn token_of<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?
        .split('-')
        .next()
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_lock_is_alive_and_missing_or_free_locks_are_dead() {
        let dir = tempfile::tempdir().unwrap();
        hold(dir.path()).unwrap();
        hold(dir.path()).unwrap();
        assert!(!is_dead(dir.path(), token()));
        assert!(dir.path().join(format!("{}.lock", token())).exists());
        assert!(is_dead(dir.path(), "p1x0"));
        File::create(dir.path().join("p2x0.lock")).unwrap();
        assert!(
            is_dead(dir.path(), "p2x0"),
            "an unlocked lock file means its owner is gone"
        );
        // A lock held through another open file description counts as alive.
        let other = File::open(dir.path().join("p2x0.lock")).unwrap();
        assert!(crate::sys::try_lock(&other));
        assert!(!is_dead(dir.path(), "p2x0"));
        assert_eq!(
            token_of("airlift-import-p9xab", "airlift-import-"),
            Some("p9xab")
        );
        assert_eq!(token_of("p9xab-17", ""), Some("p9xab"));
    }
}
