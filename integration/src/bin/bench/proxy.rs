//! P: containerd's own work with airlift as its content store (a content proxy plugin) against
//! containerd with its built-in store: `ctr images import` with unpack of W1 `.tar`, and
//! `ctr content get` of W2's 2 GB layer. CPU and writes include airlift's share.

use crate::contenders::{containerd, reset, stop, Bins, NS};
use crate::measure::{measure_with, Sample};
use crate::report::{self, Report};
use crate::workloads::Workloads;
use airlift_integration::Containerd;
use std::process::{Command, Stdio};

/// Measures P1 and P2, `runs` times each, in two fresh containerd instances.
pub fn run(report: &mut Report, bins: &Bins, workloads: &Workloads, runs: usize) {
    let dir = workloads.scratch("proxy");
    let socket = dir.path().join("airlift.sock");
    let builtin = containerd(None);
    let proxied = containerd(Some(socket.clone()));
    let airlift = bins.current();
    let mut serve = airlift.command();
    serve
        .args(["serve", "--namespace", "airlift-bench", "--address"])
        .arg(proxied.address())
        .arg("--images-dir")
        .arg(dir.path().join("images"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--content-proxy-root")
        .arg(dir.path().join("content"));
    let daemon = airlift.serve(serve, &socket, 60);
    let w1 = workloads.file("w1.tar");
    let w2 = workloads.file("w2.tar");
    println!("\nP (containerd through airlift's content proxy vs its built-in store):");
    for (label, file, get) in [
        ("P1 ctr images import (unpack), W1 .tar", &w1, false),
        ("P2 ctr content get, W2's 2 GB layer", &w2, true),
    ] {
        let mut walls = Vec::new();
        for (store, ctd, extra) in [
            ("built-in store", &builtin, None),
            ("airlift proxy", &proxied, Some(daemon.id())),
        ] {
            let mut pids = vec![ctd.pid().unwrap()];
            pids.extend(extra);
            let samples: Vec<Sample> = (0..runs)
                .map(|_| {
                    reset(ctd);
                    let mut import = ctd.ctr();
                    import.args(["-n", NS, "images", "import", "--local"]);
                    if get {
                        import.arg("--no-unpack");
                    }
                    import.arg(file);
                    if !get {
                        return measure_with(&mut import, &pids);
                    }
                    assert!(import.stdout(Stdio::null()).status().unwrap().success());
                    measure_with(&mut content_get(ctd, &largest_blob(ctd)), &pids)
                })
                .collect();
            let m = Sample::median(&samples);
            walls.push(m.wall);
            let ratio = m.wall / walls[0];
            let wall = report::wall(&m);
            println!(
                "  {label:<42} {store:<15} wall {wall:>8} s  cpu {:>7.3} s  written {:>7.1} MB  × built-in {ratio:.2}",
                m.cpu, m.written_mb
            );
            report.row(
                &[
                    label,
                    store,
                    &wall,
                    &format!("{:.3}", m.cpu),
                    "",
                    &format!("{:.1}", m.written_mb),
                    "",
                    &format!("× built-in {ratio:.2}"),
                ],
                None,
            );
        }
    }
    stop(daemon);
}

/// The digest of the (only) blob of a gigabyte or more in [`NS`].
fn largest_blob(ctd: &Containerd) -> String {
    ctd.ctr_output(&["-n", NS, "content", "ls"])
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let d = f.next()?.to_string();
            let size = f.next()?;
            Some((size.ends_with("GB"), d))
        })
        .find(|(big, _)| *big)
        .map(|(_, d)| d)
        .expect("a 2 GB layer")
}

/// `ctr content get` of `digest`, read to the end.
fn content_get(ctd: &Containerd, digest: &str) -> Command {
    let mut cat = Command::new("bash");
    cat.arg("-c").arg(format!(
        "set -o pipefail; {:?} --address {:?} -n {NS} content get {digest} | cat > /dev/null",
        ctd.bin_dir().join("ctr"),
        ctd.address()
    ));
    cat
}
