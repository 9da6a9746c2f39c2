//! End-to-end: `airlift serve` against real containerd — startup gate, runtime import, pins
//! following archives, restarts and crashes.

mod common;

use airlift_integration::archives::{one_image, write_entries, MIB};
use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ALL: &str = "platforms = [\"all\"]";

fn copy_fixture(name: &str, dir: &Path) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::copy(fixtures_dir().join(name), &to).unwrap();
    to
}

fn pinned(rt: &tokio::runtime::Runtime, ctd: &Containerd, name: &str) -> Option<bool> {
    images(rt, ctd, "k8s.io")
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| {
            i.labels.get("io.cri-containerd.pinned").map(String::as_str) == Some("pinned")
                && i.labels.get("airlift.io/pinned").map(String::as_str) == Some("true")
        })
}

fn leases(ctd: &Containerd) -> Vec<String> {
    let out = ctd
        .ctr_output(&["-n", "k8s.io", "leases", "ls", "-q"])
        .unwrap();
    out.lines()
        .map(str::to_string)
        .filter(|l| l.starts_with("airlift-"))
        .collect()
}

/// Starts the daemon, waits for its startup import and asserts `name` is pinned.
fn restart_pinned(rt: &tokio::runtime::Runtime, ctd: &Containerd, d: &mut Daemon, name: &str) {
    d.start();
    d.wait();
    assert_eq!(pinned(rt, ctd, name), Some(true), "{}", d.log());
}

/// Archives present at start are imported and pinned before `airlift wait` returns; deleting one
/// unpins only the images no other present archive provides, and removes its lease.
fn startup_and_delete(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    let bundle = copy_fixture("bundle-ctr-export.tar.zst", &d.images());
    let multitag = copy_fixture("busybox-arm64-multitag-docker.tar.lz4", &d.images());
    std::fs::write(d.images().join(".hidden.tar"), b"ignored").unwrap();
    std::fs::write(d.images().join("download.tar.part"), b"ignored").unwrap();
    d.start();
    d.wait();
    // Everything is there the moment wait returns.
    let names = [
        "docker.io/library/busybox:1.35",
        "docker.io/library/busybox:stable",
        "registry.example.com/tools/busybox:1.35-arm64",
        "registry.example.com/tools/busybox:latest",
    ];
    for n in names {
        assert_eq!(
            pinned(&rt, &ctd, n),
            Some(true),
            "{n} not pinned at ready\n{}",
            d.log()
        );
    }
    // Nor later, once the watcher has handed over what it found.
    d.until_idle();
    assert_eq!(d.ls().len(), 2, "ignored files were imported: {:?}", d.ls());
    assert_eq!(leases(&ctd).len(), 2);

    // Delete the multitag archive: busybox:stable loses its pin; the tools images are also in
    // the bundle, so they keep it.
    let deleted = std::time::Instant::now();
    std::fs::remove_file(&multitag).unwrap();
    d.until("busybox:stable to be unpinned", || {
        pinned(&rt, &ctd, "docker.io/library/busybox:stable") == Some(false)
    });
    for n in [
        "docker.io/library/busybox:1.35",
        "registry.example.com/tools/busybox:1.35-arm64",
        "registry.example.com/tools/busybox:latest",
    ] {
        assert_eq!(
            pinned(&rt, &ctd, n),
            Some(true),
            "{n} lost its pin\n{}",
            d.log()
        );
    }
    d.until("the multitag lease to go", || leases(&ctd).len() == 1);
    let took = deleted.elapsed();
    // Deletions are acted on at once (no settle interval); generous bound for a loaded machine,
    // where each of the few containerd transactions involved may wait seconds for its fsync.
    assert!(took < Duration::from_secs(15), "unpinning took {took:?}");
    assert!(d.archive(&multitag).is_none());
    // The names the release re-pointed at the bundle raise image events, which the daemon checks
    // like anyone's: the bundle shows "restoring" until those checks end, then "imported".
    d.until("the bundle to show imported", || {
        d.archive(&bundle).is_some_and(|a| a["state"] == "imported")
    });

    // The API: status, forget, import --daemon.
    let status = d.status();
    assert!(
        status.contains("startup import:  done") && status.contains("connected"),
        "{status}"
    );
    let out = d.cli(&["forget", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pinned(&rt, &ctd, "docker.io/library/busybox:1.35"),
        Some(false)
    );
    assert_eq!(leases(&ctd).len(), 0);
    let out = d.cli(&["import", "--daemon", "--json", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "imported", "{v}");
    assert_eq!(
        pinned(&rt, &ctd, "docker.io/library/busybox:1.35"),
        Some(true)
    );
    assert_eq!(
        d.stop().map(|s| s.success()),
        Some(true),
        "unclean stop\n{}",
        d.log()
    );
}

on_containerd!(startup_and_delete {
    startup_and_delete_containerd_2: Version::V2;
    startup_and_delete_containerd_17: Version::V17;
});

/// A file copied slowly in chunks is imported exactly once, after its last chunk; a file written
/// elsewhere and renamed in is imported once; replacing an archive with the same size and a newer
/// mtime imports it again; a corrupt archive is recorded as failed with its reason while the
/// others import, and fixing it imports it.
#[test]
fn runtime_imports() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    d.start();
    d.wait();

    // Slow chunked copy: open, append, close, pause, several times.
    let data = std::fs::read(fixtures_dir().join("busybox-docker.tar")).unwrap();
    let slow = d.images().join("slow.tar");
    for chunk in data.chunks(data.len() / 6 + 1) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slow)
            .unwrap();
        f.write_all(chunk).unwrap();
        drop(f);
        // Well inside the settle interval (300 ms), so a loaded machine's stalls do not make
        // a pause look like the end of the copy.
        std::thread::sleep(Duration::from_millis(50));
    }
    d.until("slow.tar to be imported", || {
        d.archive(&slow).is_some_and(|a| a["state"] == "imported")
    });
    // Nothing more to come: every chunk's event reached the watcher before the import began.
    d.until_idle();
    assert_eq!(d.archive(&slow).unwrap()["imports"], 1, "{}", d.log());
    assert!(
        !d.log().contains("failed"),
        "a partial file was imported:\n{}",
        d.log()
    );

    // Written elsewhere (a dotfile, as rsync does) and renamed in.
    let tmp = d.images().join(".multi.tgz.Xa81");
    std::fs::copy(fixtures_dir().join("busybox-multiarch-oci.tgz"), &tmp).unwrap();
    let multi = d.images().join("multi.tgz");
    std::fs::rename(&tmp, &multi).unwrap();
    d.until("multi.tgz to be imported", || {
        d.archive(&multi).is_some_and(|a| a["state"] == "imported")
    });
    d.until_idle();
    assert_eq!(d.archive(&multi).unwrap()["imports"], 1, "{}", d.log());

    // Replaced with the same size and a newer mtime.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(fixtures_dir().join("busybox-docker.tar"), &slow).unwrap();
    d.until("slow.tar to be imported again", || {
        d.archive(&slow).is_some_and(|a| a["imports"] == 2)
    });

    // A corrupt archive: failed with its reason; the daemon stays up; fixing it imports it.
    let bad = d.images().join("bad.tar.zst");
    let good = std::fs::read(fixtures_dir().join("bundle-ctr-export.tar.zst")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    d.until("bad.tar.zst to fail", || {
        d.archive(&bad).is_some_and(|a| a["state"] == "failed")
    });
    let err = d.archive(&bad).unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("bad.tar.zst") && err.contains("entry"),
        "{err}"
    );
    let other = copy_fixture("busybox-arm64-multitag-docker.tar", &d.images());
    d.until("the next archive to import", || {
        d.archive(&other).is_some_and(|a| a["state"] == "imported")
    });
    std::fs::write(&bad, &good).unwrap();
    d.until("the fixed archive to import", || {
        d.archive(&bad).is_some_and(|a| a["state"] == "imported")
    });
    assert_eq!(
        pinned(&rt, &ctd, "registry.example.com/tools/busybox:latest"),
        Some(true)
    );
    assert_eq!(leftovers(&ctd), Vec::<std::path::PathBuf>::new());
}

/// A restart over many unchanged archives reads no archive byte, and a poll of the pins every few
/// milliseconds across the restart never sees an image unpinned.
#[test]
fn restart_reads_nothing_and_never_unpins() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    let sources = [
        "bundle-ctr-export.tar",
        "busybox-arm64-multitag-docker.tar",
        "busybox-docker.tar",
        "busybox-multiarch-oci.tar",
    ];
    for i in 0..24 {
        let src = sources[i % sources.len()];
        std::fs::copy(
            fixtures_dir().join(src),
            d.images().join(format!("a{i:02}-{src}")),
        )
        .unwrap();
    }
    d.start();
    d.wait();
    let names: Vec<String> = images(&rt, &ctd, "k8s.io")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(names.len() >= 4, "{names:?}");

    // Watch the pins continuously from another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU32::new(0));
    let poller = {
        let stop = stop.clone();
        let polls = polls.clone();
        let address = ctd.address().to_path_buf();
        let names = names.clone();
        std::thread::spawn(move || {
            let rt = rt_small();
            let c = common::grpc(&rt, &address, "k8s.io");
            while !stop.load(Ordering::Relaxed) {
                let imgs = rt.block_on(c.list_images(vec![])).unwrap();
                for n in &names {
                    let img = imgs.iter().find(|i| &i.name == n);
                    let ok = img.is_some_and(|i| {
                        i.labels.get("io.cri-containerd.pinned").map(String::as_str)
                            == Some("pinned")
                    });
                    let at = polls.load(Ordering::Relaxed);
                    assert!(ok, "{n} was not pinned at poll {at}: {img:?}");
                }
                polls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    // Record every open of an archive during the restart.
    let opens = common::inotify_opens(&d.images());
    assert_eq!(d.stop().map(|s| s.success()), Some(true));
    d.start();
    d.wait();
    // Past the startup import, the watcher hands over every archive it found (all unchanged):
    // the restart is over once the daemon has nothing left in hand, and the poller has looked
    // at the pins a few times since.
    d.until_idle();
    let at_idle = polls.load(Ordering::Relaxed);
    d.until("the pins to be polled after the daemon went idle", || {
        poller.is_finished() || polls.load(Ordering::Relaxed) >= at_idle + 3
    });
    stop.store(true, Ordering::Relaxed);
    poller
        .join()
        .expect("an image lost its pin during the restart");
    let polls = polls.load(Ordering::Relaxed);
    assert!(polls > 20, "only {polls} polls");
    let opened = opens();
    assert_eq!(
        opened,
        Vec::<String>::new(),
        "archives were opened during the restart"
    );
    assert!(d.status().contains("bytes read:      0"), "{}", d.status());
    for a in d.ls() {
        assert_eq!(a["imports"], 1, "{a}");
    }
}

fn rt_small() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// containerd not running at start: the daemon waits and imports once it appears; containerd
/// restarted during an import (streaming, so the restart cuts a blob in half): the import is
/// retried and completes.
#[test]
fn containerd_away_and_restarted() {
    let mut ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    // Stream mode: blob data crosses the socket, so the restart breaks the import mid-blob.
    let mut d = Daemon::new(&ctd, "mode = \"stream\"");
    let big = d.images().join("big.tar");
    one_image(&big, "example.com/big:1", 400 * MIB, 7).unwrap();
    ctd.stop();
    d.start();
    d.until("the daemon to report containerd away", || {
        d.status().contains("not connected")
    });
    ctd.restart().unwrap();
    d.wait();
    assert_eq!(pinned(&rt, &ctd, "example.com/big:1"), Some(true));

    // A second big archive; restart containerd while it is being read.
    let log_before = d.log().len();
    let big2 = d.images().join(".big2.tar");
    one_image(&big2, "example.com/big:2", 400 * MIB, 9).unwrap();
    let target = d.images().join("big2.tar");
    std::fs::rename(&big2, &target).unwrap();
    // Under way: its ingest is being written in containerd.
    d.until("the import to be under way", || {
        d.archive(&target)
            .is_some_and(|a| a["state"] == "importing")
            && !leftovers(&ctd).is_empty()
    });
    ctd.stop();
    std::thread::sleep(Duration::from_millis(300));
    ctd.restart().unwrap();
    d.until("the import to complete", || {
        d.archive(&target).is_some_and(|a| a["state"] == "imported")
    });
    assert_eq!(pinned(&rt, &ctd, "example.com/big:2"), Some(true));
    let during = d.log()[log_before..].to_string();
    assert!(
        during.contains("trying again"),
        "the import did not meet the containerd restart:\n{during}"
    );
}

/// `kill -9` of the daemon during an import, then a restart: the import completes, no image was
/// ever visible half-imported, and no temporary file remains.
#[test]
fn killed_during_import() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, "");
    d.start();
    d.wait();
    let tmp = d.images().join(".big.tar");
    one_image(&tmp, "example.com/big:kill", 400 * MIB, 11).unwrap();
    let path = d.images().join("big.tar");
    std::fs::rename(&tmp, &path).unwrap();
    d.until("the import to be under way", || {
        d.archive(&path).is_some_and(|a| a["state"] == "importing") && !leftovers(&ctd).is_empty()
    });
    d.kill9();
    assert_eq!(
        pinned(&rt, &ctd, "example.com/big:kill"),
        None,
        "an image record exists after the crash"
    );
    d.start();
    d.wait();
    assert_eq!(
        pinned(&rt, &ctd, "example.com/big:kill"),
        Some(true),
        "{}",
        d.log()
    );
    assert_eq!(
        leftovers(&ctd),
        Vec::<std::path::PathBuf>::new(),
        "temporary files remain"
    );
    let stale: Vec<String> = ctd
        .ctr_output(&["-n", "k8s.io", "leases", "ls", "-q"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("airlift-import-"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        stale,
        Vec::<String>::new(),
        "import leases of the dead process remain"
    );

    // SIGTERM during an import: stops cleanly with temporaries removed; the next start resumes.
    let tmp = d.images().join(".big3.tar");
    one_image(&tmp, "example.com/big:term", 400 * MIB, 13).unwrap();
    let path3 = d.images().join("big3.tar");
    std::fs::rename(&tmp, &path3).unwrap();
    d.until("the import to be under way", || {
        d.archive(&path3).is_some_and(|a| a["state"] == "importing")
    });
    assert_eq!(d.stop().map(|s| s.success()), Some(true), "{}", d.log());
    assert_eq!(
        leftovers(&ctd),
        Vec::<std::path::PathBuf>::new(),
        "temporary files remain after SIGTERM"
    );
    d.start();
    d.wait();
    assert_eq!(
        pinned(&rt, &ctd, "example.com/big:term"),
        Some(true),
        "{}",
        d.log()
    );
}

/// Bad configuration is refused at startup with a clear message; metrics are served.
#[test]
fn config_errors_and_metrics() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "adress = \"/x\"\n").unwrap();
    let out = std::process::Command::new(airlift_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml") && stderr.contains("unknown field `adress`"),
        "{stderr}"
    );
    let out = std::process::Command::new(airlift_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut d = Daemon::new(
        &ctd,
        &format!("metrics_address = \"127.0.0.1:{port}\"\nlog_format = \"json\""),
    );
    copy_fixture("busybox-docker.tar", &d.images());
    d.start();
    d.wait();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("airlift_imports_total{result=\"ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("airlift_archives{state=\"imported\"} 1"),
        "{body}"
    );
    assert!(body.contains("airlift_blobs_written_total"), "{body}");
    let first = d.log().lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with('{'), "log is not JSON: {first}");
}

/// At startup, an unchanged archive whose image or lease went missing is repaired from the
/// record without reading the archive; one whose content is gone is imported again; a recorded
/// archive that is gone loses its pins and lease. The daemon reports readiness over
/// `$NOTIFY_SOCKET` and its API socket is mode 0660.
#[test]
fn startup_repairs_and_releases() {
    let ctd = Containerd::start(Version::V17).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    let docker = copy_fixture("busybox-docker.tar", &d.images());
    let multitag = copy_fixture("busybox-arm64-multitag-docker.tar", &d.images());
    let notify = d.notify_socket();
    d.start();
    notify.expect_ready();
    d.wait();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "API socket mode {mode:o}");
    assert_eq!(d.stop().map(|s| s.success()), Some(true));

    // Someone removed the image record (the archive's lease still holds its content), and the
    // multitag archive was deleted while the daemon was down.
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "rm",
        "docker.io/library/busybox:1.35",
    ])
    .unwrap();
    let lease = airlift::labels::archive_lease(&std::fs::canonicalize(&docker).unwrap());
    std::fs::remove_file(&multitag).unwrap();
    restart_pinned(&rt, &ctd, &mut d, "docker.io/library/busybox:1.35");
    assert!(
        d.status().contains("bytes read:      0"),
        "the archive was read for a repair: {}",
        d.status()
    );
    assert_eq!(
        pinned(&rt, &ctd, "docker.io/library/busybox:stable"),
        Some(false),
        "gone archive still pinned"
    );
    assert_eq!(d.stop().map(|s| s.success()), Some(true));

    // Someone removed the archive's lease (the pinned image still holds the content).
    ctd.ctr_output(&["-n", "k8s.io", "leases", "rm", &lease])
        .unwrap();
    d.start();
    d.wait();
    assert!(
        leases(&ctd).contains(&lease),
        "lease not recreated\n{}",
        d.log()
    );
    assert!(
        d.status().contains("bytes read:      0"),
        "the archive was read for a repair: {}",
        d.status()
    );
    assert_eq!(leases(&ctd).len(), 1, "{:?}", leases(&ctd));
    assert_eq!(d.stop().map(|s| s.success()), Some(true));

    // Content gone entirely (image, lease and blobs): imported again.
    ctd.ctr_output(&["-n", "k8s.io", "leases", "rm", &lease])
        .unwrap();
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "rm",
        "--sync",
        "docker.io/library/busybox:1.35",
    ])
    .unwrap();
    let manifest = expected_target("busybox-docker.tar", "docker.io/library/busybox:1.35");
    assert!(blob(&rt, &ctd, "k8s.io", &manifest).is_none());
    restart_pinned(&rt, &ctd, &mut d, "docker.io/library/busybox:1.35");
    assert!(!d.status().contains("bytes read:      0"), "{}", d.status());
    assert_eq!(d.archive(&docker).unwrap()["imports"], 2);
}

/// A replaced archive that no longer contains an image unpins it; a directory that does not
/// exist at start is picked up when it appears.
#[test]
fn replaced_archive_and_late_directory() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    std::fs::remove_dir(d.images()).unwrap();
    d.start();
    d.wait();
    std::fs::create_dir(d.images()).unwrap();
    let path = d.images().join("app.tar");
    std::fs::copy(
        fixtures_dir().join("busybox-arm64-multitag-docker.tar"),
        &path,
    )
    .unwrap();
    d.until("the archive in the new directory to import", || {
        d.archive(&path).is_some_and(|a| a["state"] == "imported")
    });
    assert_eq!(
        pinned(&rt, &ctd, "docker.io/library/busybox:stable"),
        Some(true)
    );

    // Replace it (rename over) with an archive providing a different image.
    let tmp = d.images().join(".app.tar.new");
    std::fs::copy(fixtures_dir().join("busybox-docker.tar"), &tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    d.until("the replacement to import", || {
        d.archive(&path)
            .is_some_and(|a| a["imports"] == 2 && a["state"] == "imported")
    });
    assert_eq!(
        pinned(&rt, &ctd, "docker.io/library/busybox:1.35"),
        Some(true)
    );
    for gone in [
        "docker.io/library/busybox:stable",
        "registry.example.com/tools/busybox:latest",
    ] {
        assert_eq!(
            pinned(&rt, &ctd, gone),
            Some(false),
            "{gone} still pinned\n{}",
            d.log()
        );
    }
}

/// An archive replaced by a broken version is recorded as failed, but the images it provided
/// keep their pins while the archive is there; deleting it then releases them.
#[test]
fn broken_replacement_keeps_pins() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, ALL);
    let path = copy_fixture("bundle-ctr-export.tar", &d.images());
    d.start();
    d.wait();
    let names = [
        "docker.io/library/busybox:1.35",
        "registry.example.com/tools/busybox:1.35-arm64",
        "registry.example.com/tools/busybox:latest",
    ];
    for n in names {
        assert_eq!(pinned(&rt, &ctd, n), Some(true), "{n}");
    }
    // The replacement lacks the arm64 config: every image of it fails.
    let mut entries = fixture_entries("bundle-ctr-export.tar");
    entries.retain(|e| !e.path.contains("61d78c22183e"));
    let tmp = d.images().join(".bundle.new");
    write_entries(&tmp, &entries).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    d.until("the replacement to fail", || {
        d.archive(&path).is_some_and(|a| a["state"] == "failed")
    });
    for n in names {
        assert_eq!(
            pinned(&rt, &ctd, n),
            Some(true),
            "{n} lost its pin to a broken replacement\n{}",
            d.log()
        );
    }
    assert_eq!(leases(&ctd).len(), 1);
    std::fs::remove_file(&path).unwrap();
    d.until("the images to be unpinned", || {
        names.iter().all(|n| pinned(&rt, &ctd, n) == Some(false))
    });
    d.until("the lease to go", || leases(&ctd).is_empty());
}
