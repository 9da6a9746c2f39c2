//! containerd's image verifier plugins (`io.containerd.image-verifier.v1.bindir`), run for an
//! import exactly as containerd 2.x runs them for a pull (`pkg/imageverifier/bindir`), so a
//! site's pull verifiers hold for its imports.
//!
//! Every entry of the directory, in byte order of its name, counts; the first
//! `max_verifiers` run (all of them when it is negative), one after the other, each as
//! `BIN -name NAME -digest DIGEST -stdin-media-type application/vnd.oci.descriptor.v1+json`
//! with the image's descriptor as JSON and a newline on its standard input, in a process group
//! of its own that is killed when `per_verifier_timeout` passes. Its standard output (up to 32
//! KiB) is its reason; its standard error is logged at debug. Exit 0 allows; any other exit
//! refuses and stops the run; death by a signal, a timeout or a failure to start is an error,
//! which refuses the image too. A missing directory, or an empty one, allows.
//!
//! The descriptor is the image's target as a pull resolves it: media type, digest and size
//! (no annotations, no platform). A verifier that leaves a process behind holding its standard
//! output keeps the run waiting, and is killed with it at the timeout.

use crate::oci::Descriptor;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

/// containerd's `outputLimitBytes`: how much of a verifier's stdout (and stderr) is read.
const OUTPUT_LIMIT: u64 = 1 << 15;
/// The media type of what a verifier reads on stdin.
pub const DESCRIPTOR_MEDIA_TYPE: &str = "application/vnd.oci.descriptor.v1+json";

/// The verifier plugins' configuration, named as containerd names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifiers {
    /// `bin_dir`: the directory of verifier executables.
    pub bin_dir: PathBuf,
    /// `max_verifiers`: how many entries run at most; negative means all.
    pub max_verifiers: i64,
    /// `per_verifier_timeout`: how long one verifier may take.
    pub per_verifier_timeout: Duration,
}

impl Default for Verifiers {
    /// containerd's defaults.
    fn default() -> Verifiers {
        Verifiers {
            bin_dir: PathBuf::from("/opt/containerd/image-verifier/bin"),
            max_verifiers: 10,
            per_verifier_timeout: Duration::from_secs(10),
        }
    }
}

/// The verifiers' decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Whether the image may be imported.
    pub ok: bool,
    /// Why: `a-log => ok, b-check => fine`, or `verifier b-check rejected image (exit code 3):
    /// evil is refused`.
    pub reason: String,
}

/// A verifier that could not give a judgement (the image is refused all the same). Each
/// message names the verifier, as containerd's do.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The directory exists but cannot be listed.
    #[error("image verifier directory {dir}: failed to list directory contents: {source}")]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A verifier that cannot be started (not executable, a directory, a bad interpreter).
    #[error("failed to call verifier {name}: starting process: {path}: {source}")]
    Start {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A verifier that could not be waited for.
    #[error("failed to call verifier {name} (runtime {runtime:?}): waiting on command to exit: {source}")]
    Wait {
        name: String,
        runtime: Duration,
        source: std::io::Error,
    },
    /// A verifier killed by a signal (a crash).
    #[error("failed to call verifier {name} (runtime {runtime:?}): waiting on command to exit: signal: {}", signal_name(*.signal))]
    Signal {
        name: String,
        runtime: Duration,
        signal: i32,
    },
    /// A verifier still running at `per_verifier_timeout`: its process group was killed.
    #[error("failed to call verifier {name} (runtime {runtime:?}): no judgement within {timeout:?}; its process group was killed (signal: killed)")]
    Timeout {
        name: String,
        runtime: Duration,
        timeout: Duration,
    },
}

impl Verifiers {
    /// Runs the verifiers for the image `name` whose target is `descriptor`.
    pub async fn judge(
        &self,
        name: &str,
        descriptor: &Descriptor,
    ) -> Result<Judgement, VerifierError> {
        let Some(entries) = self.entries().await? else {
            let dir = self.bin_dir.display();
            return Ok(Judgement {
                ok: true,
                reason: format!("image verifier directory {dir} does not exist"),
            });
        };
        if entries.is_empty() {
            let dir = self.bin_dir.display();
            return Ok(Judgement {
                ok: true,
                reason: format!("no image verifier binaries found in {dir}"),
            });
        }
        let plain = Descriptor::new(
            &descriptor.media_type,
            descriptor.digest.clone(),
            descriptor.size.max(0) as u64,
        );
        let mut stdin = serde_json::to_vec(&plain).expect("a descriptor serialises");
        stdin.push(b'\n');
        let mut reasons = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if self.max_verifiers >= 0 && i as i64 >= self.max_verifiers {
                tracing::warn!(
                    dir = %self.bin_dir.display(),
                    entries = entries.len(),
                    max_verifiers = self.max_verifiers,
                    "image verifiers are being skipped since the directory has more entries than the configured max"
                );
                break;
            }
            let bin = entry.to_string_lossy().into_owned();
            let digest = descriptor.digest.to_string();
            let (code, out) = self.run(entry, &bin, name, &digest, &stdin).await?;
            if code != 0 {
                return Ok(Judgement {
                    ok: false,
                    reason: format!("verifier {bin} rejected image (exit code {code}): {out}"),
                });
            }
            reasons.push(format!("{bin} => {out}"));
        }
        Ok(Judgement {
            ok: true,
            reason: reasons.join(", "),
        })
    }

    /// The directory's entries sorted by name, bytewise (Go's `os.ReadDir`); `None` when the
    /// directory does not exist.
    async fn entries(&self) -> Result<Option<Vec<OsString>>, VerifierError> {
        let failed = |source| VerifierError::List {
            dir: self.bin_dir.clone(),
            source,
        };
        let mut dir = match tokio::fs::read_dir(&self.bin_dir).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let mut entries = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(failed)? {
            entries.push(entry.file_name());
        }
        entries.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        Ok(Some(entries))
    }

    /// One verifier: its exit code and reason, or why it gave none.
    async fn run(
        &self,
        entry: &OsString,
        bin: &str,
        name: &str,
        digest: &str,
        stdin: &[u8],
    ) -> Result<(i32, String), VerifierError> {
        let path = self.bin_dir.join(entry);
        let start = Instant::now();
        let mut child = tokio::process::Command::new(&path)
            .args(["-name", name, "-digest", digest])
            .args(["-stdin-media-type", DESCRIPTOR_MEDIA_TYPE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills whatever it started too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| VerifierError::Start {
                name: bin.to_string(),
                path: path.clone(),
                source,
            })?;
        let pid = child.id();
        let (mut input, output, errors) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let work = async {
            // Written beside the reads: a verifier need not read its input.
            let feed = async move {
                if let Err(e) = input.write_all(stdin).await {
                    tracing::warn!(image_verifier = bin, error = %e, "failed to completely write descriptor to stdin");
                }
                drop(input);
            };
            let (_, reason, ()) = tokio::join!(feed, read_reason(output), log_stderr(errors, bin));
            Ok::<(ExitStatus, String), std::io::Error>((child.wait().await?, reason))
        };
        let outcome = tokio::time::timeout(self.per_verifier_timeout, work).await;
        let runtime = start.elapsed();
        let name = bin.to_string();
        match outcome {
            Ok(Ok((status, reason))) => match (status.code(), status.signal()) {
                (Some(code), _) => Ok((code, reason)),
                (None, signal) => Err(VerifierError::Signal {
                    name,
                    runtime,
                    signal: signal.unwrap_or(0),
                }),
            },
            Ok(Err(source)) => Err(VerifierError::Wait {
                name,
                runtime,
                source,
            }),
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.wait().await;
                Err(VerifierError::Timeout {
                    name,
                    runtime,
                    timeout: self.per_verifier_timeout,
                })
            }
        }
    }
}

/// Reads `stream` to its end, keeping the first [`OUTPUT_LIMIT`] bytes; `true` when there was
/// more (the rest is read and dropped, so the verifier never blocks on a full pipe).
async fn read_limited<R: AsyncRead + Unpin>(stream: R) -> (Vec<u8>, bool) {
    let mut limited = stream.take(OUTPUT_LIMIT);
    let mut kept = Vec::new();
    let _ = limited.read_to_end(&mut kept).await;
    let mut rest = limited.into_inner();
    let mut peek = [0u8; 1];
    let more = matches!(rest.read(&mut peek).await, Ok(n) if n > 0);
    let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    (kept, more)
}

/// The verifier's stdout up to the limit, trimmed, marked when there was more.
async fn read_reason(out: tokio::process::ChildStdout) -> String {
    let (kept, more) = read_limited(out).await;
    let mut reason = String::from_utf8_lossy(&kept).trim().to_string();
    if more {
        reason.push_str("(stdout truncated)");
    }
    reason
}

/// The verifier's stderr, each line logged at debug, up to the limit.
async fn log_stderr(err: tokio::process::ChildStderr, bin: &str) {
    let (kept, more) = read_limited(err).await;
    let mut lines = BufReader::new(kept.as_slice()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(image_verifier = bin, stream = "stderr", "{line}");
    }
    if more {
        tracing::debug!(
            image_verifier = bin,
            stream = "stderr",
            "(previous logs may be truncated)"
        );
    }
}

/// Go's name for a signal, as `signal: segmentation fault` reads in its exit errors.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGPIPE => "broken pipe".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests;
