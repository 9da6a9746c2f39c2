//! End-to-end: load. Hundreds of small archives and a few large ones dropped at once into the
//! watched directory of `airlift serve` on containerd 2.x: every one is imported, no more than
//! `concurrency` imports run at a time, the API answers `status` throughout (its latency
//! sampled every 20 ms, the p99 reported), peak memory stays bounded, and once the load is over
//! the daemon holds no more file descriptors or threads than before it.
//!
//! The sizes come from the environment, so that `integration/load.sh` can run the long version:
//! `LOAD_SMALL` (default 300) archives of one 32 KiB layer, `LOAD_LARGE` (default 3) of
//! `LOAD_LARGE_MIB` (default 128) MiB each. The figures are printed as one `load:` line.

mod common;

use airlift::api::proto::StatusRequest;
use airlift_integration::archives::{one_image, MIB};
use airlift_integration::{Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A figure of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// What the open file descriptors of `pid` are.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    v.sort();
    v
}

/// Open file descriptors and threads of `pid`.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).unwrap().count();
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

/// What the status sampler saw.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    most_importing: u32,
    failures: usize,
}

/// Asks the daemon's `status` every 20 ms until `stop`, timing each answer.
fn sample_status(socket: std::path::PathBuf, stop: Arc<AtomicBool>) -> Samples {
    let rt = rt();
    rt.block_on(async move {
        let mut client = airlift::api::connect(&socket).await.unwrap();
        let mut s = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match client.status(StatusRequest {}).await {
                Ok(r) => {
                    s.latencies.push(started.elapsed());
                    s.most_importing = s.most_importing.max(r.get_ref().importing);
                }
                Err(_) => s.failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    })
}

#[test]
fn hundreds_of_archives_at_once() {
    let small = env("LOAD_SMALL", 300);
    let large = env("LOAD_LARGE", 3);
    let large_mib = env("LOAD_LARGE_MIB", 128);
    let concurrency = 2;
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let mut d = Daemon::new(&ctd, &format!("concurrency = {concurrency}\n"));
    d.start();
    d.wait();
    // One import first, so that what the daemon opens once for good (its liveness lock in
    // the content root, its connections) is in the baseline.
    one_image(
        &d.images().join("warm-up.tar"),
        "example.com/warm-up:1",
        4096,
        1,
    )
    .unwrap();
    let warm_up = std::fs::canonicalize(d.images().join("warm-up.tar")).unwrap();
    d.until("the warm-up import", || {
        d.archive(&warm_up)
            .is_some_and(|a| a["state"] == "imported")
    });
    d.until_idle();
    let pid = d.pid();
    let before = fds_and_threads(pid);
    let fds_before = fd_targets(pid);

    // Written beside the images directory, then moved in all at once.
    let staging = d.dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let mut names = Vec::new();
    for i in 0..small {
        let name = format!("small-{i:04}.tar");
        one_image(
            &staging.join(&name),
            &format!("example.com/load/small-{i}:1"),
            32 << 10,
            1000 + i,
        )
        .unwrap();
        names.push(name);
    }
    for i in 0..large {
        let name = format!("large-{i}.tar");
        one_image(
            &staging.join(&name),
            &format!("example.com/load/large-{i}:1"),
            large_mib * MIB,
            9000 + i,
        )
        .unwrap();
        names.push(name);
    }
    let total_bytes: u64 = names
        .iter()
        .map(|n| std::fs::metadata(staging.join(n)).unwrap().len())
        .sum();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (socket, stop) = (d.socket(), stop.clone());
        std::thread::spawn(move || sample_status(socket, stop))
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    for n in &names {
        std::fs::rename(staging.join(n), d.images().join(n)).unwrap();
    }
    let expected = names.len();
    d.until("every archive to be imported", || {
        d.ls().iter().filter(|a| a["state"] == "imported").count() == expected + 1
    });
    let took = started.elapsed();
    d.until_idle();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    // Everything imported, and pinned.
    let imported: Vec<_> = images(&rt, &ctd, "k8s.io")
        .into_iter()
        .filter(|i| i.name.starts_with("example.com/load/"))
        .collect();
    assert_eq!(imported.len(), expected);
    assert!(imported
        .iter()
        .all(|i| i.labels.get("io.cri-containerd.pinned").map(String::as_str) == Some("pinned")));
    let failed = d.log().matches(" ERROR ").count();
    assert_eq!(failed, 0, "{}", d.log());

    // The concurrency limit held, and was reached.
    assert!(
        samples.most_importing <= concurrency,
        "{} imports at once",
        samples.most_importing
    );
    assert_eq!(samples.most_importing, concurrency);

    // The API answered throughout.
    let mut lat = samples.latencies.clone();
    lat.sort();
    assert!(lat.len() > 20, "{} status answers", lat.len());
    assert_eq!(samples.failures, 0, "status calls failed");
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let (p50, p99, max) = (pct(0.5), pct(0.99), *lat.last().unwrap());
    assert!(p99 < Duration::from_secs(1), "status p99 {p99:?}");

    // Memory bounded: the decoders' buffers, not the archives, are what is held.
    let peak_kib = proc_status_kib(pid, "VmHWM");
    assert!(peak_kib < 256 << 10, "peak RSS {peak_kib} KiB");

    // Once the load is over, nothing is left open: descriptors and threads come back to what
    // they were before (tokio's idle blocking threads leave after 10 s).
    let mut after = fds_and_threads(pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (after.0 > before.0 || after.1 > before.1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = fds_and_threads(pid);
    }
    assert!(
        after.0 <= before.0,
        "file descriptors: {} before, {} after\nbefore: {fds_before:#?}\nafter: {:#?}",
        before.0,
        after.0,
        fd_targets(pid)
    );
    assert!(
        after.1 <= before.1,
        "threads: {} before, {} after",
        before.1,
        after.1
    );
    eprintln!(
        "load: {small} small + {large} x {large_mib} MiB archives ({:.0} MB) imported in {:.1} s \
         ({:.0} archives/s); at most {} imports at once (limit {concurrency}); status answered \
         {} times: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak RSS {:.0} MiB; fds {} -> {}, \
         threads {} -> {}",
        total_bytes as f64 / 1e6,
        took.as_secs_f64(),
        expected as f64 / took.as_secs_f64(),
        samples.most_importing,
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        peak_kib as f64 / 1024.0,
        before.0,
        after.0,
        before.1,
        after.1,
    );
    d.stop();
}
