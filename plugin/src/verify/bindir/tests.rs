//! Verifier plugins as shell scripts in a temporary directory: what they are given, each way
//! they end, and how many of them run.

use super::*;
use crate::digest::Digest;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The image every test judges.
const NAME: &str = "registry.example.com/team/app:1";

fn descriptor() -> Descriptor {
    let mut d = Descriptor::new(
        "application/vnd.oci.image.index.v1+json",
        Digest::of(b"an index"),
        506,
    );
    // what an archive's index entry carries, and a pull's descriptor does not
    d.annotations
        .insert("org.opencontainers.image.ref.name".into(), "1".into());
    d
}

/// A directory of verifiers, one `#!/bin/sh` script each (`mode` 0755 unless given).
fn bin_dir(scripts: &[(&str, &str, u32)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, mode) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    dir
}

fn verifiers(dir: &Path, max_verifiers: i64, timeout: Duration) -> Verifiers {
    Verifiers {
        bin_dir: dir.to_path_buf(),
        max_verifiers,
        per_verifier_timeout: timeout,
    }
}

async fn judge(dir: &Path, max_verifiers: i64) -> Result<Judgement, VerifierError> {
    verifiers(dir, max_verifiers, Duration::from_secs(10))
        .judge(NAME, &descriptor())
        .await
}

/// Whether a process is still there (a zombie is not).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn containerd_defaults() {
    let d = Verifiers::default();
    assert_eq!(d.bin_dir, Path::new("/opt/containerd/image-verifier/bin"));
    assert_eq!(
        (d.max_verifiers, d.per_verifier_timeout),
        (10, Duration::from_secs(10))
    );
}

#[tokio::test]
async fn every_verifier_allows_in_name_order() {
    // `a-log` writes down what it was given; `B-upper` sorts before both (bytewise)
    let dir = bin_dir(&[
        ("b-ok", "echo '  fine  '", 0o755),
        (
            "a-log",
            "printf '%s\\n' \"$@\" > \"$0.args\"; cat > \"$0.stdin\"; echo a says ok",
            0o755,
        ),
        ("B-upper", "echo first; echo on stderr >&2", 0o755),
    ]);
    let j = judge(dir.path(), -1).await.unwrap();
    assert_eq!(
        j,
        Judgement {
            ok: true,
            reason: "B-upper => first, a-log => a says ok, b-ok => fine".into()
        }
    );
    let d = descriptor();
    let args = std::fs::read_to_string(dir.path().join("a-log.args")).unwrap();
    assert_eq!(
        args,
        format!("-name\n{NAME}\n-digest\n{}\n-stdin-media-type\napplication/vnd.oci.descriptor.v1+json\n", d.digest)
    );
    // the descriptor as a pull resolves it, compact JSON and a newline
    let stdin = std::fs::read_to_string(dir.path().join("a-log.stdin")).unwrap();
    assert_eq!(
        stdin,
        format!(
            "{{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"{}\",\"size\":506}}\n",
            d.digest
        )
    );
}

#[tokio::test]
async fn a_refusal_stops_the_run_with_its_reason() {
    let dir = bin_dir(&[
        ("a-ok", "echo ok", 0o755),
        ("b-reject", "echo 'evil is refused'; exit 3", 0o755),
        ("c-never", "touch \"$0.ran\"", 0o755),
    ]);
    let j = judge(dir.path(), 10).await.unwrap();
    assert_eq!(
        j,
        Judgement {
            ok: false,
            reason: "verifier b-reject rejected image (exit code 3): evil is refused".into()
        }
    );
    assert!(!dir.path().join("c-never.ran").exists());
}

#[tokio::test]
async fn a_hang_is_killed_with_its_whole_process_group() {
    let dir = bin_dir(&[(
        "a-hang",
        "echo $$ > \"$0.pid\"; sleep 30 & echo $! > \"$0.child\"; sleep 30",
        0o755,
    )]);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let e = verifiers(dir.path(), 10, timeout)
        .judge(NAME, &descriptor())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        matches!(&e, VerifierError::Timeout { name, timeout: t, .. } if name == "a-hang" && *t == timeout),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("failed to call verifier a-hang (runtime "),
        "{e}"
    );
    let pids = ["a-hang.pid", "a-hang.child"]
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap());
    // the verifier and the sleep it left in the background, both gone
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in &pids {
        assert!(!alive(p), "process {} survived", p.trim());
    }
}

#[tokio::test]
async fn a_crash_is_an_error() {
    let dir = bin_dir(&[("a-crash", "kill -SEGV $$", 0o755)]);
    let e = judge(dir.path(), 10).await.unwrap_err();
    assert!(
        matches!(&e, VerifierError::Signal { name, signal: libc::SIGSEGV, .. } if name == "a-crash"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("failed to call verifier a-crash (runtime "),
        "{msg}"
    );
    assert!(
        msg.ends_with("waiting on command to exit: signal: segmentation fault"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_executable_is_an_error() {
    let dir = bin_dir(&[("a-noexec", "exit 0", 0o644)]);
    let e = judge(dir.path(), 10).await.unwrap_err();
    assert!(
        matches!(&e, VerifierError::Start { name, .. } if name == "a-noexec"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("failed to call verifier a-noexec: starting process: "),
        "{msg}"
    );
    assert!(msg.contains("ermission denied"), "{msg}");
}

#[tokio::test]
async fn no_directory_or_an_empty_one_allows() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("bin");
    let j = judge(&missing, 10).await.unwrap();
    assert!(j.ok);
    assert_eq!(
        j.reason,
        format!(
            "image verifier directory {} does not exist",
            missing.display()
        )
    );
    let j = judge(dir.path(), 10).await.unwrap();
    assert!(j.ok);
    assert_eq!(
        j.reason,
        format!(
            "no image verifier binaries found in {}",
            dir.path().display()
        )
    );
}

#[tokio::test]
async fn max_verifiers_cuts_the_sorted_list() {
    let dir = bin_dir(&[
        ("a", "echo a >> \"$(dirname \"$0\")/ran\"; echo a", 0o755),
        ("b", "echo b >> \"$(dirname \"$0\")/ran\"; echo b", 0o755),
        // counted, never run
        ("c-noexec", "exit 0", 0o644),
    ]);
    let ran = dir.path().join("ran");
    let j = judge(dir.path(), 2).await.unwrap();
    assert_eq!(j.reason, "a => a, b => b");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "a\nb\n");
    // (the log file itself is an entry now, sorted after the others)
    let j = judge(dir.path(), 1).await.unwrap();
    assert_eq!((j.ok, j.reason.as_str()), (true, "a => a"));
    let j = judge(dir.path(), 0).await.unwrap();
    assert_eq!((j.ok, j.reason.as_str()), (true, ""));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "a\nb\na\n");
    // negative: all of them, the one that cannot start among them
    assert!(matches!(
        judge(dir.path(), -1).await,
        Err(VerifierError::Start { name, .. }) if name == "c-noexec"
    ));
}

#[tokio::test]
async fn a_long_reason_is_cut_at_32_kib() {
    let dir = bin_dir(&[(
        "a-loud",
        "head -c 40000 /dev/zero | tr '\\0' x; exit 1",
        0o755,
    )]);
    let j = judge(dir.path(), 10).await.unwrap();
    let prefix = "verifier a-loud rejected image (exit code 1): ";
    assert!(!j.ok);
    assert_eq!(
        j.reason.len(),
        prefix.len() + 32 * 1024 + "(stdout truncated)".len()
    );
    assert!(j.reason.starts_with(prefix) && j.reason.ends_with("x(stdout truncated)"));
}
