//! End-to-end: faults outside airlift — a content store or state directory that is full,
//! containerd killed in the middle of a direct-mode import, state records torn or garbage — on
//! containerd 2.x and 1.7. Every failure names the archive and the cause, leaves no temporary
//! file, partial blob or image, and the daemon stays up and succeeds once the fault is gone.

mod common;

use airlift_integration::archives::{one_image, MIB};
use airlift_integration::{fixtures_dir, small_filesystem, unmount, Containerd, Options, Version};
use common::daemon::Daemon;
use common::*;
use std::path::Path;
use std::time::Duration;

const ALL: &str = "platforms = [\"all\"]";

/// Fills the filesystem of `dir` with a file `filler` until at most `leave` bytes are free.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let free = {
        let s = rustix::fs::statvfs(dir).unwrap();
        s.f_bavail * s.f_frsize
    };
    let mut f = std::fs::File::create(&filler).unwrap();
    // Written, not just sized: a sparse file would not take the space. With nothing to leave,
    // written until the filesystem refuses, in ever smaller pieces, so that not even a block is
    // left (statvfs's count is only an estimate).
    let mut left = if leave == 0 {
        u64::MAX
    } else {
        free.saturating_sub(leave)
    };
    let mut piece = 1usize << 20;
    let chunk = vec![0u8; piece];
    while left > 0 {
        let n = left.min(piece as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) | Err(_) if piece > 512 => piece /= 2,
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n as u64,
        }
    }
    let _ = f.sync_all();
    filler
}

/// The content root on a 96 MiB filesystem with 16 MiB free: a 40 MiB image does not fit.
fn content_store_full(version: Version) {
    let ctd = Containerd::start_with(
        version,
        Options {
            root_mib: Some(96),
            ..Options::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.tar");
    one_image(&big, "example.com/full:1", 40 * MIB, 3).unwrap();
    std::fs::create_dir_all(ctd.content_root()).unwrap();
    let filler = fill(ctd.root(), 16 * MIB);
    for mode in ["direct", "stream"] {
        let out = import(&ctd, "k8s.io", &["--mode", mode, big.to_str().unwrap()]);
        assert!(!out.status.success(), "{mode}: imported on a full disk");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("big.tar"), "{mode}: {err}");
        assert!(
            err.contains("does not fit") || err.contains("no space left on device"),
            "{mode}: the message does not name the lack of space: {err}"
        );
        println!("{version}, {mode}: {}", err.trim());
        assert_eq!(leftovers(&ctd), Vec::<std::path::PathBuf>::new(), "{mode}");
        assert!(
            images(&rt(), &ctd, "k8s.io").is_empty(),
            "{mode}: an image was recorded"
        );
    }
    // The daemon: failed with the reason, still up, imported once there is room.
    let mut d = Daemon::new(&ctd, &format!("{ALL}\nresync_seconds = 2\n"));
    d.start();
    d.wait();
    std::fs::copy(&big, d.images().join("big.tar")).unwrap();
    let archive = std::fs::canonicalize(d.images().join("big.tar")).unwrap();
    d.until("the import to fail", || {
        d.archive(&archive).is_some_and(|a| a["state"] == "failed")
    });
    let error = d.archive(&archive).unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("does not fit"), "{error}");
    assert!(d.cli(&["status"]).status.success(), "the daemon is down");
    assert_eq!(leftovers(&ctd), Vec::<std::path::PathBuf>::new());
    std::fs::remove_file(&filler).unwrap();
    d.until("the import once there is room", || {
        d.archive(&archive)
            .is_some_and(|a| a["state"] == "imported")
    });
    assert_eq!(images(&rt(), &ctd, "k8s.io").len(), 1);
}

on_containerd!(content_store_full {
    content_store_full_containerd_2: Version::V2;
    content_store_full_containerd_17: Version::V17;
});

/// The state directory full: the import itself succeeds, the daemon says it could not write the
/// record and stays up; the record is written once there is room.
#[test]
fn state_directory_full() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let mut d = Daemon::new(&ctd, &format!("{ALL}\nresync_seconds = 2\n"));
    let state = d.dir.path().join("state");
    small_filesystem(&state, &d.dir.path().join("state.img"), 8).unwrap();
    d.start();
    d.wait();
    let filler = fill(&state, 0);
    std::fs::copy(
        fixtures_dir().join("busybox-docker.tar"),
        d.images().join("a.tar"),
    )
    .unwrap();
    let archive = std::fs::canonicalize(d.images().join("a.tar")).unwrap();
    d.until("the import", || {
        d.archive(&archive)
            .is_some_and(|a| a["state"] == "imported")
    });
    assert!(
        d.log().contains("could not save the state record"),
        "{}",
        d.log()
    );
    let records = || {
        std::fs::read_dir(state.join("archives"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!(records(), 0);
    std::fs::remove_file(&filler).unwrap();
    d.until("the record to be written", || records() == 1);
    d.stop();
    unmount(&state);
}

/// containerd killed in the middle of a direct-mode import: `airlift import` fails naming
/// containerd, and once it is back the same command completes (what the dead attempt left is
/// cleaned up); the daemon tries again by itself and completes.
fn containerd_killed_mid_import(version: Version) {
    let mut ctd = Containerd::start(version).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.tar");
    one_image(&big, "example.com/killed:1", 300 * MIB, 9).unwrap();
    let mut child = std::process::Command::new(airlift_bin())
        .args(["import", "--mode", "direct", "--address"])
        .arg(ctd.address())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg(&big)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // containerd goes once a blob is being written into its content root (a fixed delay raced
    // the import, which can write the 300 MiB in under 0.4 s).
    let started = std::time::Instant::now();
    while leftovers(&ctd).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it was seen writing a blob"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no blob written"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    ctd.stop();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("big.tar") && err.contains("containerd"),
        "{err}"
    );
    ctd.restart().unwrap();
    let report = import_ok(&ctd, "k8s.io", &["--mode", "direct", big.to_str().unwrap()]);
    assert_eq!(report["outcome"], "imported");
    let check = ctd
        .ctr_output(&["-n", "k8s.io", "images", "check"])
        .unwrap();
    assert!(
        check.contains("complete") && !check.contains("incomplete"),
        "{check}"
    );
    assert_eq!(leftovers(&ctd), Vec::<std::path::PathBuf>::new());
    let leases = ctd
        .ctr_output(&["-n", "k8s.io", "leases", "ls", "-q"])
        .unwrap();
    assert!(!leases.contains("airlift-import-"), "{leases}");

    // The daemon, direct mode.
    let mut d = Daemon::new(&ctd, "mode = \"direct\"\n");
    d.start();
    d.wait();
    let path = d.images().join("big2.tar");
    one_image(&path, "example.com/killed:2", 300 * MIB, 10).unwrap();
    d.until("the import to be under way", || {
        d.archive(&path).is_some_and(|a| a["state"] == "importing")
    });
    ctd.stop();
    std::thread::sleep(Duration::from_millis(300));
    ctd.restart().unwrap();
    d.until("the import to complete", || {
        d.archive(&path).is_some_and(|a| a["state"] == "imported")
    });
    let check = ctd
        .ctr_output(&["-n", "k8s.io", "images", "check"])
        .unwrap();
    assert!(!check.contains("incomplete"), "{check}");
}

on_containerd!(containerd_killed_mid_import {
    containerd_killed_mid_import_containerd_2: Version::V2;
    containerd_killed_mid_import_containerd_17: Version::V17;
});

/// A torn (truncated) and a garbage state record: logged with their path, the archives imported
/// again, never a crash, their images never unpinned.
#[test]
fn torn_and_garbage_records() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    std::fs::copy(
        fixtures_dir().join("busybox-docker.tar"),
        d.images().join("a.tar"),
    )
    .unwrap();
    std::fs::copy(
        fixtures_dir().join("busybox-arm64-multitag-docker.tar"),
        d.images().join("b.tar"),
    )
    .unwrap();
    d.start();
    d.wait();
    d.stop();
    let records: Vec<_> = std::fs::read_dir(d.dir.path().join("state/archives"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(records.len(), 2);
    let text = std::fs::read(&records[0]).unwrap();
    std::fs::write(&records[0], &text[..text.len() / 2]).unwrap();
    std::fs::write(&records[1], b"\x00\x01garbage").unwrap();
    d.start();
    d.wait();
    let log = d.log();
    for r in &records {
        assert!(
            log.contains(&r.display().to_string()),
            "not named: {}\n{log}",
            r.display()
        );
    }
    for name in [
        "docker.io/library/busybox:1.35",
        "registry.example.com/tools/busybox:latest",
    ] {
        let img = images(&rt, &ctd, "k8s.io")
            .into_iter()
            .find(|i| i.name == name)
            .unwrap();
        assert_eq!(img.labels["io.cri-containerd.pinned"], "pinned", "{name}");
    }
    for a in d.ls() {
        assert_eq!(a["state"], "imported", "{a}");
    }
    for r in &records {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(r).unwrap()).unwrap();
    }
}
