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
    for dir in dirs.iter().filter(|d| !d.is_dir()) {
        tracing::warn!(
            dir = %crate::escape::shown(dir),
            "images directory does not exist (yet): watched once it appears"
        );
    }
    loop {
        tokio::select! {
            _ = dir_check.tick() => {
                for dir in &dirs {
                    if watched.values().any(|d| d == dir) || !dir.is_dir() {
                        continue;
                    }
                    match stream.watches().add(dir, mask) {
                        Ok(wd) => {
                            tracing::info!(dir = %crate::escape::shown(&dir), "watching");
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
                        Err(e) => tracing::warn!(dir = %crate::escape::shown(&dir), error = %e, "cannot watch"),
                    }
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let mut done = Vec::new();
                for (path, (at, seen)) in pending.iter_mut() {
                    if now.duration_since(*at) < settle {
                        continue;
                    }
                    match stat(path) {
                        current @ Some(_) if current == *seen => {
                            done.push(Event::Settled(path.clone()))
                        }
                        // Gone, or not a regular file (a FIFO, a device, a link to nothing):
                        // not an archive, so nothing to wait for; whatever it replaced is gone.
                        None => done.push(Event::Removed(path.clone())),
                        current => {
                            *at = now;
                            *seen = current;
                        }
                    }
                }
                for ev in done {
                    let (Event::Settled(p) | Event::Removed(p)) = &ev;
                    pending.remove(p);
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                publish(&pending, &tx);
            }
            ev = stream.next() => {
                let Some(Ok(ev)) = ev else {
                    tracing::error!("the inotify stream ended");
                    return;
                };
                let Some(dir) = watched.get(&ev.wd).cloned() else { continue };
                if ev.mask.intersects(inotify::EventMask::IGNORED | inotify::EventMask::DELETE_SELF | inotify::EventMask::MOVE_SELF) {
                    tracing::warn!(dir = %crate::escape::shown(&dir), "images directory went away; waiting for it to come back");
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Watched {
        dir: tempfile::TempDir,
        rx: tokio::sync::mpsc::Receiver<Event>,
        settling: Arc<AtomicU32>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(settle: Duration) -> Watched {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let settling = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(watch(
            vec![dir.path().join("images")],
            settle,
            tx,
            settling.clone(),
        ));
        Watched {
            dir,
            rx,
            settling,
            task,
        }
    }

    async fn next(w: &mut Watched) -> Event {
        tokio::time::timeout(Duration::from_secs(10), w.rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("the watcher runs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_directory_is_watched_and_files_settle_once() {
        let mut w = start(Duration::from_millis(200)).await;
        // The directory appears after the watcher started, with a file already in it.
        let images = w.dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        std::fs::write(images.join("early.tar"), b"x").unwrap();
        assert_eq!(next(&mut w).await, Event::Settled(images.join("early.tar")));
        // A file written in chunks settles once, after the last chunk; dotfiles are ignored.
        std::fs::write(images.join(".partial.tar.X1"), b"ignored").unwrap();
        let slow = images.join("slow.tar");
        for i in 0..4 {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&slow)
                .unwrap();
            f.write_all(&[i; 100]).unwrap();
            drop(f);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Until it settles, the file in hand is counted.
        let deadline = Instant::now() + Duration::from_secs(2);
        while w.settling.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "a file in hand was not counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(next(&mut w).await, Event::Settled(slow.clone()));
        assert_eq!(std::fs::metadata(&slow).unwrap().len(), 400);
        // Nothing else is in hand now, and the next event is the removal.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&slow).unwrap();
        assert_eq!(next(&mut w).await, Event::Removed(slow));
        assert!(w.rx.try_recv().is_err(), "an extra event");
        w.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_count_of_files_in_hand_returns_to_zero() {
        let mut w = start(Duration::from_millis(50)).await;
        let images = w.dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await; // the directory is picked up
        std::fs::write(images.join("a.tar"), b"a").unwrap();
        assert_eq!(next(&mut w).await, Event::Settled(images.join("a.tar")));
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.settling.load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "still counted as settling");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.task.abort();
    }
}
