//! S, node B: a fresh containerd pulling all of W1 (`ctr images pull` of each image, unpack
//! included, as a node does) through a hosts.toml mirror pointing at airlift serve's endpoint,
//! against one pointing at docker-registry holding the same images.

use crate::contenders::{containerd, NS};
use crate::measure::median;
use crate::report::Report;
use crate::workloads::Workloads;
use std::net::SocketAddr;
use std::time::Instant;

/// Measures node B's pulls of `images` from `ours` (airlift serve) and from `theirs`
/// (docker-registry), at least 3 times each.
pub fn run(
    report: &mut Report,
    workloads: &Workloads,
    images: &[String],
    ours: SocketAddr,
    theirs: SocketAddr,
    runs: usize,
) {
    let hosts = workloads.scratch("hosts");
    // The images are bench.example.com/...: airlift's endpoint takes the registry from ns=;
    // docker-registry holds them under repositories prefixed with it.
    let registry = "bench.example.com";
    let write = |name: &str, host: String| {
        let dir = hosts.path().join(name).join(registry);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), host).unwrap();
        hosts.path().join(name)
    };
    let contenders = [
        (
            "from airlift serve",
            write(
                "airlift",
                format!("[host.\"http://{ours}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
            ),
        ),
        (
            "from docker-registry",
            write(
                "registry",
                format!("[host.\"http://{theirs}/v2/{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"),
            ),
        ),
    ];
    println!(
        "\nS, node B (a fresh containerd pulls W1's {} images through a hosts.toml mirror, unpacking them):",
        images.len()
    );
    let mut walls = Vec::new();
    for (name, dir) in &contenders {
        let mut samples = Vec::new();
        for _ in 0..runs.max(3) {
            let node = containerd(None);
            let started = Instant::now();
            for image in images {
                node.ctr_output(&[
                    "-n",
                    NS,
                    "images",
                    "pull",
                    "--plain-http",
                    "--hosts-dir",
                    dir.to_str().unwrap(),
                    image,
                ])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            samples.push(started.elapsed().as_secs_f64());
        }
        let wall = median(samples);
        println!("  {name:<22} wall {wall:>7.3} s");
        walls.push(wall);
    }
    println!(
        "  node B pulling from airlift serve: {:.2} × the time from docker-registry",
        walls[0] / walls[1]
    );
    for ((name, _), wall) in contenders.iter().zip(&walls) {
        report.row(
            &[
                "S node B pulls W1 through containerd",
                name,
                &format!("{wall:.3}"),
                "",
                "",
                "",
                "",
                &format!("× docker-registry {:.2}", wall / walls[1]),
            ],
            None,
        );
    }
}
