//! Watch: inotify on the images directories, turned into "this file has settled" and "this file
//! is gone" events.
//!
//! A file is reported once it was closed after writing or renamed into place and then kept its
//! size and modification time for the settle interval, so a file copied slowly in chunks is
//! reported once, after its last chunk. Deletions and renames away are reported at once. A
//! directory that does not exist yet is watched from the moment it appears.

use super::ignored;
use inotify::{Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt;

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A file was written or moved in and has stayed unchanged for the settle interval.
    Settled(PathBuf),
    /// A file was deleted or moved away.
    Removed(PathBuf),
}

fn stat(path: &std::path::Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file()
        .then(|| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

/// Files seen and not yet settled: path → (last event, size and mtime seen then).
type Pending = HashMap<PathBuf, (Instant, Option<(u64, SystemTime)>)>;

/// Watches `dirs` until the receiver goes away. `settling` counts the files seen and not yet
/// settled, plus the events sent and not yet received: zero means the watcher has nothing
/// in hand.
pub async fn watch(
    dirs: Vec<PathBuf>,
    settle: Duration,
    tx: tokio::sync::mpsc::Sender<Event>,
    settling: Arc<AtomicU32>,
) {
    let publish = |pending: &Pending, tx: &tokio::sync::mpsc::Sender<Event>| {
        let in_channel = tx.max_capacity() - tx.capacity();
        settling.store((pending.len() + in_channel) as u32, Ordering::SeqCst);
    };
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "inotify is unavailable; new archives will not be noticed");
            return;
        }
    };
    let mut stream = match inotify.into_event_stream(vec![0u8; 64 * 1024]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "inotify is unavailable; new archives will not be noticed");
            return;
        }
    };
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    let mut watched: HashMap<WatchDescriptor, PathBuf> = HashMap::new();
    let mut pending: Pending = HashMap::new();
    let tick = (settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut ticker = tokio::time::interval(tick);
    let mut dir_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = dir_check.tick() => {
                for dir in &dirs {
                    if watched.values().any(|d| d == dir) || !dir.is_dir() {
                        continue;
                    }
                    match stream.watches().add(dir, mask) {
                        Ok(wd) => {
                            tracing::info!(dir = %dir.display(), "watching");
                            watched.insert(wd, dir.clone());
                            // Files that arrived before the watch: treat as new events.
                            if let Ok(entries) = std::fs::read_dir(dir) {
                                for e in entries.flatten() {
                                    if !ignored(&e.file_name().to_string_lossy()) {
                                        let p = e.path();
                                        pending.insert(p.clone(), (Instant::now(), stat(&p)));
                                    }
                                }
                            }
                            publish(&pending, &tx);
                        }
                        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch"),
                    }
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let mut settled = Vec::new();
                for (path, (at, seen)) in pending.iter_mut() {
                    if now.duration_since(*at) < settle {
                        continue;
                    }
                    let current = stat(path);
                    if current.is_some() && current == *seen {
                        settled.push(path.clone());
                    } else {
                        *at = now;
                        *seen = current;
                    }
                }
                for p in settled {
                    pending.remove(&p);
                    if tx.send(Event::Settled(p)).await.is_err() {
                        return;
                    }
                }
                // Files that vanished while pending need no event beyond their removal.
                pending.retain(|p, _| p.exists());
                publish(&pending, &tx);
            }
            ev = stream.next() => {
                let Some(Ok(ev)) = ev else {
                    tracing::error!("the inotify stream ended");
                    return;
                };
                let Some(dir) = watched.get(&ev.wd).cloned() else { continue };
                if ev.mask.intersects(inotify::EventMask::IGNORED | inotify::EventMask::DELETE_SELF | inotify::EventMask::MOVE_SELF) {
                    tracing::warn!(dir = %dir.display(), "images directory went away; waiting for it to come back");
                    let _ = stream.watches().remove(ev.wd.clone());
                    watched.remove(&ev.wd);
                    continue;
                }
                let Some(name) = ev.name else { continue };
                let name = name.to_string_lossy().into_owned();
                if ignored(&name) || ev.mask.contains(inotify::EventMask::ISDIR) {
                    continue;
                }
                let path = dir.join(&name);
                if ev.mask.intersects(inotify::EventMask::DELETE | inotify::EventMask::MOVED_FROM) {
                    pending.remove(&path);
                    if tx.send(Event::Removed(path)).await.is_err() {
                        return;
                    }
                } else {
                    pending.insert(path.clone(), (Instant::now(), stat(&path)));
                }
                publish(&pending, &tx);
            }
        }
    }
}
