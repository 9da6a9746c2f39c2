//! End-to-end: the surfaces others can reach. What lands in an images directory that is not an
//! archive — a FIFO, a symbolic link to a device or to nothing — never hangs the daemon and is
//! shown as ignored by `airlift ls`; a file name with bytes that are not UTF-8, or with control
//! characters, is imported, shown escaped, remembered across restarts and released; the API
//! socket's directory may not be writable by others.

mod common;

use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// The `ls` entries in the ignored state, as (file name, note).
fn ignored(d: &Daemon) -> Vec<(String, String)> {
    let mut v: Vec<_> = d
        .ls()
        .into_iter()
        .filter(|a| a["state"] == "ignored")
        .map(|a| {
            let path = a["path"].as_str().unwrap().to_string();
            let name = path.rsplit('/').next().unwrap().to_string();
            (name, a["note"].as_str().unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn special_files_and_odd_names() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, "");
    std::fs::create_dir_all(d.images()).unwrap();
    // A name with an invalid byte, a newline and an escape sequence.
    let odd = d
        .images()
        .join(OsStr::from_bytes(b"busy\xff\nbox\x1b[31m.tar"));
    std::fs::copy(fixtures_dir().join("busybox-docker.tar"), &odd).unwrap();
    mkfifo(&d.images().join("stuck.tar"));
    std::os::unix::fs::symlink("/dev/zero", d.images().join("zero.tar")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", d.images().join("gone.tar")).unwrap();
    d.start();
    d.wait();

    let entry = d.archive(&odd).expect("the odd name is listed");
    assert_eq!(entry["state"], "imported", "{entry}");
    assert_eq!(
        entry["path"].as_str().unwrap(),
        format!(
            "{}/busy\\xff\\u{{a}}box\\u{{1b}}[31m.tar",
            d.images().display()
        )
    );
    assert_eq!(
        ignored(&d),
        vec![
            (
                "gone.tar".into(),
                "a symbolic link to nothing; ignored".into()
            ),
            (
                "stuck.tar".into(),
                "a FIFO, not a regular file; ignored".into()
            ),
            (
                "zero.tar".into(),
                "a symbolic link to a character device, not a regular file; ignored".into()
            ),
        ]
    );
    // The table shows the escaped name on one line.
    let table = String::from_utf8(d.cli(&["ls"]).stdout).unwrap();
    let line = table
        .lines()
        .find(|l| l.contains("busy"))
        .expect("the odd archive in the table");
    assert!(
        line.contains("busy\\xff\\u{a}box\\u{1b}[31m.tar"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "{table}");
    let image = images(&rt, &ctd, "k8s.io")
        .into_iter()
        .find(|i| i.name == BUSYBOX)
        .expect("the image");
    assert_eq!(image.labels["io.cri-containerd.pinned"], "pinned");

    // A FIFO made while the daemon runs: the daemon comes back to idle (nothing is waited for).
    mkfifo(&d.images().join("late.tar"));
    std::thread::sleep(Duration::from_millis(100));
    d.until_idle();
    assert_eq!(ignored(&d).len(), 4);

    // The odd name's record survives a restart: unchanged, not imported again.
    d.stop();
    let before = d.log().matches("INFO importing").count();
    d.start();
    d.wait();
    let after = d.log().matches("INFO importing").count();
    assert_eq!(before, 1, "{}", d.log());
    assert_eq!(before, after, "re-imported after a restart:\n{}", d.log());

    // Removing it releases its image.
    std::fs::remove_file(&odd).unwrap();
    d.until("the image to be unpinned", || {
        images(&rt, &ctd, "k8s.io")
            .iter()
            .find(|i| i.name == BUSYBOX)
            .is_some_and(|i| !i.labels.contains_key("io.cri-containerd.pinned"))
    });
    d.stop();
}

#[test]
fn the_command_line_reads_pipes_and_refuses_devices() {
    let ctd = Containerd::start(Version::V2).unwrap();
    // A device: refused at once, saying what it is.
    let out = import(&ctd, "k8s.io", &["/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file (a character device)"),
        "{err}"
    );
    // A pipe (the shell's process substitution) is read as an archive.
    let fixture = fixtures_dir().join("busybox-docker.tar");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{:?} import --address {:?} --state-dir {:?} <(cat {:?})",
            airlift_bin(),
            ctd.address(),
            ctd.dir().join("airlift-state"),
            fixture
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = rt();
    assert!(image_pairs(&rt, &ctd, "k8s.io")
        .iter()
        .any(|(n, _)| n == BUSYBOX));
}

#[test]
fn the_socket_directory_may_not_be_writable_by_others() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let mut d = Daemon::new(&ctd, "");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d.start();
    let status = d
        .wait_exit(Duration::from_secs(30))
        .expect("airlift serve exits");
    assert!(!status.success());
    assert!(
        d.log().contains("is writable by others (mode 777)"),
        "{}",
        d.log()
    );
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.start();
    d.wait();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
    d.stop();
}
