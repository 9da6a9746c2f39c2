//! Compiles airlift's own API and the content service it serves as a containerd proxy plugin
//! (`proto/`) without protoc: protox parses, tonic-prost-build generates. Also names the commit
//! `airlift --version` reports (`AIRLIFT_COMMIT`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    commit();
    let airlift = "../proto/airlift/v1/airlift.proto";
    let content = "../proto/containerd/services/content/v1/content.proto";
    for proto in [airlift, content] {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile([airlift], ["../proto"])?)?;
    // Only the server side: airlift's client of containerd comes from containerd-client.
    // Blob data stays in the buffers it arrived in (`bytes::Bytes`), never copied into a `Vec`.
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".containerd.services.content.v1")
        .compile_fds(protox::compile([content], ["../proto"])?)?;
    Ok(())
}

/// `AIRLIFT_COMMIT` for the crate: `git rev-parse --short=12 HEAD`; outside a git checkout (a
/// source tarball) the `AIRLIFT_COMMIT` environment variable; else "unknown". The script runs
/// again only when HEAD moves (`HEAD`, the branch's ref, `packed-refs`), so a rebuild on
/// another commit stays as cheap as any.
fn commit() {
    println!("cargo:rerun-if-env-changed=AIRLIFT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            // A worktree's HEAD is in its own git dir, its branches in the common one.
            let dirs = [
                git(&["rev-parse", "--git-dir"]),
                git(&["rev-parse", "--git-common-dir"]),
            ];
            let mut watched: Vec<PathBuf> = Vec::new();
            for dir in dirs.iter().flatten() {
                let dir = Path::new(dir);
                watched.push(dir.join("HEAD"));
                watched.push(dir.join("packed-refs"));
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watched.push(dir.join(r));
                }
            }
            // A path that does not exist would make cargo run the script on every build.
            for path in watched.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            c
        }
        None => std::env::var("AIRLIFT_COMMIT").unwrap_or_else(|_| "unknown".into()),
    };
    println!("cargo:rustc-env=AIRLIFT_COMMIT={commit}");
}
