//! S: serving W1's blobs. airlift serve's registry endpoint against reading the same files from
//! the page cache, against a bare sendfile server and against the distribution registry
//! (`docker-registry`) serving the same images, every blob fetched over loopback by [`CLIENTS`]
//! parallel clients (`curl`); then node B, pulling W1 through containerd from each registry.

mod node;
mod registry;
mod sendfile;

use crate::contenders::{containerd, stop, Bins, NS};
use crate::measure::{median, parallel, Sample};
use crate::report::Report;
use crate::workloads::Workloads;
use registry::{blobs_of, docker_registry, loopback};
use std::net::SocketAddr;

/// Parallel clients of the serving benchmark.
const CLIENTS: usize = 4;

/// A fixed send buffer, for the contenders that try one (KiB).
const SMALL_SEND_BUFFER_KIB: usize = 256;

/// Measures S, `runs` times each (and twice as often, at least 6 times, for the blobs).
pub fn run(report: &mut Report, bins: &Bins, workloads: &Workloads, runs: usize) {
    let ctd = containerd(None);
    let dir = workloads.scratch("serve");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let w1 = workloads.file("w1.tar");
    std::fs::hard_link(&w1, images.join("w1.tar"))
        .or_else(|_| std::fs::copy(&w1, images.join("w1.tar")).map(|_| ()))
        .unwrap();
    let airlift = bins.current();
    let ours = loopback();
    let mut serve = airlift.command();
    serve
        .args(["serve", "--namespace", NS, "--address"])
        .arg(ctd.address())
        .arg("--images-dir")
        .arg(&images)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--registry-address")
        .arg(ours.to_string());
    let daemon = airlift.serve(serve, &dir.path().join("airlift.sock"), 300);
    let (blobs, image_names) = blobs_of(&format!("http://{ours}"));
    let total: u64 = blobs.iter().map(|b| b.2).sum();

    // The peer registry, holding the same images (same digests), copied from airlift's
    // endpoint by skopeo.
    let theirs = loopback();
    let registry = docker_registry(dir.path(), theirs, ours, &image_names);

    // Every client fetches every blob: CLIENTS nodes pulling W1 at once. One curl per client,
    // its connection kept alive from blob to blob; the peer reads the same files with one cat
    // per client.
    let content = ctd.content_root().join("blobs/sha256");
    let curl = |at: SocketAddr| -> Vec<Vec<String>> {
        let mut argv: Vec<String> = ["curl", "-sSf"].iter().map(|s| s.to_string()).collect();
        for (repo, d, _) in &blobs {
            argv.extend(["-o".into(), "/dev/null".into()]);
            argv.push(format!("http://{at}/v2/{repo}/blobs/{d}"));
        }
        vec![argv; CLIENTS]
    };
    let mut cat = vec!["cat".to_string()];
    cat.extend(blobs.iter().map(|(_, d, _)| {
        content
            .join(d.trim_start_matches("sha256:"))
            .display()
            .to_string()
    }));
    // The same daemon's endpoint with a small fixed send buffer: a second daemon on the
    // namespace, serving everything (W1 alone) with no archives of its own.
    let small = loopback();
    let small_config = dir.path().join("small.toml");
    std::fs::write(
        &small_config,
        format!(
            "[registry]\naddress = \"{small}\"\nserve = \"all\"\nsend_buffer_kib = {SMALL_SEND_BUFFER_KIB}\n"
        ),
    )
    .unwrap();
    let mut serve_small = airlift.command();
    serve_small
        .args(["serve", "--namespace", NS, "--config"])
        .arg(&small_config)
        .arg("--address")
        .arg(ctd.address())
        .arg("--images-dir")
        .arg(dir.path().join("no-images"))
        .arg("--state-dir")
        .arg(dir.path().join("small-state"));
    let small_daemon = airlift.serve(serve_small, &dir.path().join("small.sock"), 60);
    let small_buffer = format!("{SMALL_SEND_BUFFER_KIB} KiB send buffer");
    let floor = sendfile::serve(content.clone(), 0);
    let small_floor = sendfile::serve(content.clone(), SMALL_SEND_BUFFER_KIB << 10);
    let me = std::process::id();
    let contenders: Vec<(String, Vec<Vec<String>>, Vec<u32>)> = vec![
        ("page cache (cat)".into(), vec![cat; CLIENTS], vec![]),
        ("sendfile floor".into(), curl(floor), vec![me]),
        ("airlift serve".into(), curl(ours), vec![daemon.id()]),
        ("docker-registry".into(), curl(theirs), vec![registry.id()]),
        (
            format!("sendfile floor, {small_buffer}"),
            curl(small_floor),
            vec![me],
        ),
        (
            format!("airlift serve, {small_buffer}"),
            curl(small),
            vec![small_daemon.id()],
        ),
    ];
    let total = total * CLIENTS as u64;
    println!(
        "\nS (W1: {} images, {} blobs; {CLIENTS} parallel clients each fetch every blob over loopback, {:.0} MB in all):",
        image_names.len(),
        blobs.len(),
        total as f64 / 1e6
    );
    let mut walls = Vec::new();
    let mut lines = Vec::new();
    for (name, clients, pids) in &contenders {
        // Once to warm the page cache (and the servers' caches), then measured.
        assert!(parallel(clients, pids).0.ok, "{name} failed");
        let samples: Vec<(Sample, f64)> = (0..runs.max(3) * 2)
            .map(|_| parallel(clients, pids))
            .collect();
        let m = Sample::median(&samples.iter().map(|s| s.0).collect::<Vec<_>>());
        let server_cpu = median(samples.iter().map(|s| s.1).collect());
        assert!(m.ok, "{name} failed");
        walls.push(m.wall);
        let mbs = total as f64 / 1e6 / m.wall;
        let vs_cache = walls[0] / m.wall;
        println!(
            "  {name:<18} wall {:>7.3} s  {mbs:>7.0} MB/s  CPU {:>6.3} s (server {server_cpu:.3} s)  × page cache throughput {vs_cache:.2}",
            m.wall, m.cpu,
        );
        lines.push((name.to_string(), m, server_cpu, mbs, vs_cache));
    }
    let (floor_wall, registry_wall) = (walls[1], walls[3]);
    stop(small_daemon);
    for (name, m, server_cpu, mbs, vs_cache) in &lines {
        report.row(
            &[
                &format!("S W1 blobs × {CLIENTS} clients"),
                name,
                &format!("{:.3}", m.wall),
                &format!("{:.3} (server {server_cpu:.3})", m.cpu),
                "",
                "",
                &format!("× page cache {vs_cache:.2}"),
                &format!(
                    "{mbs:.0} MB/s, × sendfile floor {:.2}, × docker-registry {:.2}",
                    floor_wall / m.wall,
                    registry_wall / m.wall
                ),
            ],
            None,
        );
    }
    println!(
        "  airlift serve: {:.2} × the page cache's throughput, {:.2} × the sendfile floor's, {:.2} × docker-registry's; with a {small_buffer}: {:.2} × the page cache's, {:.2} × the floor's with it",
        walls[0] / walls[2],
        walls[1] / walls[2],
        walls[3] / walls[2],
        walls[0] / walls[5],
        walls[4] / walls[5],
    );
    node::run(report, workloads, &image_names, ours, theirs, runs);
    stop(daemon);
    stop(registry);
}
