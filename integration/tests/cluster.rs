//! End-to-end: a cluster of three nodes over real Spegel (v0.7.4). Each node is a network
//! namespace on one bridge with its own containerd 2.x (CRI reading the node's hosts directory,
//! compressed layers kept after unpacking), its own `spegel registry` (bootstrapped over HTTP
//! from node A) and its own `airlift serve`.
//!
//! Node A imports the release bundle (a multi-arch busybox and two made-up images sharing a
//! layer). Nodes B and C list the same names in a pull list, with a `hosts.toml` written by
//! `airlift mirrors` that tries their own Spegel first and keeps the images' own registries
//! (unreachable here) as the fallback. Then: B and C have every image, pinned, at A's digests;
//! an archive dropped on A while everything runs is pulled on B by CRI (`crictl pull`, what
//! kubelet does for a pod) within seconds, and reaches C through a new pull-list line; B's
//! `ctr images pull --platform linux/arm64` gets busybox's arm64 content from A, which stores
//! that platform for others (`serve_platforms`); A goes away and B and C keep everything, C's
//! daemon restarting and pulling its list again from B.
//! The same story runs with A in content-proxy mode, its Spegel told airlift's store
//! (`--containerd-content-path`).

mod common;

use airlift_integration::archives::{docker_save, one_image, Content, ImageSpec, LayerSpec, MIB};
use airlift_integration::netns::Net;
use airlift_integration::{fixtures_dir, tools, Containerd};
use common::cluster::{missing_pins, peer, seed, Node};
use common::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const WEB: &str = "example.com/apps/web:1";
const WORKER: &str = "example.com/apps/worker:1";
const LATE: &str = "example.com/apps/late:1";
const BUNDLE: [&str; 3] = [BUSYBOX, WEB, WORKER];

/// The release bundle in `dir`: the multi-arch busybox fixture, and two made-up images sharing
/// a text-like base layer; and a later archive of one more image.
fn archives(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let busybox = dir.join("busybox-multiarch-oci.tar");
    std::fs::copy(fixtures_dir().join("busybox-multiarch-oci.tar"), &busybox).unwrap();
    let layer = |name: &str, size, content, seed| LayerSpec {
        name: name.into(),
        size,
        content,
        seed,
    };
    let apps = dir.join("apps.tar");
    docker_save(
        &apps,
        &[
            layer("base", 2 * MIB, Content::Text, 31),
            layer("web", MIB, Content::Random, 32),
            layer("worker", MIB, Content::Random, 33),
        ],
        &[
            ImageSpec {
                name: WEB.into(),
                layers: vec!["base".into(), "web".into()],
            },
            ImageSpec {
                name: WORKER.into(),
                layers: vec!["base".into(), "worker".into()],
            },
        ],
    )
    .unwrap();
    let late = dir.join("late.tar");
    one_image(&late, LATE, MIB, 34).unwrap();
    (vec![busybox, apps], late)
}

/// `crictl pull` through the node's CRI (its hosts directory, its Spegel): what kubelet does
/// when a pod needs the image.
fn crictl_pull(bin: &Path, node: &Node, name: &str) -> Result<(), String> {
    let socket = format!("unix://{}", node.ctd.cri_address().display());
    let out = Command::new(bin.join("crictl"))
        .args(["--image-endpoint", &socket, "--runtime-endpoint", &socket])
        .args(["--timeout", "30s", "pull", name])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The manifests of `platform` in the index `index` as `ctd` stores it, with their configs and
/// layers: every blob an `ctr images pull --platform` of it needs.
fn platform_blobs(ctd: &Containerd, index: &str, platform: (&str, &str)) -> Vec<String> {
    let json = |digest: &str| -> serde_json::Value {
        let text = ctd
            .ctr_output(&["-n", "k8s.io", "content", "get", digest])
            .unwrap_or_else(|e| panic!("{digest} ({platform:?} in the index {index}): {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{digest}: not JSON: {e}"))
    };
    let mut blobs = Vec::new();
    for m in json(index)["manifests"].as_array().unwrap() {
        if m["platform"]["os"] != platform.0 || m["platform"]["architecture"] != platform.1 {
            continue;
        }
        let digest = m["digest"].as_str().unwrap().to_string();
        let manifest = json(&digest);
        blobs.push(digest);
        blobs.push(manifest["config"]["digest"].as_str().unwrap().to_string());
        for l in manifest["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    assert!(!blobs.is_empty(), "{index} lists no {platform:?} manifest");
    blobs
}

/// The blobs of `blobs` that `ctd` does not have in k8s.io.
fn absent(ctd: &Containerd, blobs: &[String]) -> Vec<String> {
    let listed = ctd
        .ctr_output(&["-n", "k8s.io", "content", "ls", "-q"])
        .unwrap();
    blobs
        .iter()
        .filter(|d| !listed.lines().any(|l| l == d.as_str()))
        .cloned()
        .collect()
}

/// B asks for another platform: `ctr images pull --platform linux/arm64` through B's hosts
/// directory (its Spegel) finds busybox's arm64 manifest and layers, which B never pulled and
/// only A stores (its `serve_platforms`); B keeps its pin meanwhile.
fn arm64_from_a(
    a: &Node,
    b: &Node,
    rt: &tokio::runtime::Runtime,
    expected: &[(String, String)],
) -> Duration {
    let index = &expected.iter().find(|(n, _)| n == BUSYBOX).unwrap().1;
    // On amd64 machines (as airlift's tests run) A holds the arm64 manifest only because it
    // serves that platform.
    let arm64 = platform_blobs(&a.ctd, index, ("linux", "arm64"));
    assert_eq!(
        absent(&a.ctd, &arm64),
        Vec::<String>::new(),
        "node A lacks these linux/arm64 blobs of {BUSYBOX} (serve_platforms)\n{}",
        a.logs()
    );
    assert_eq!(
        absent(&b.ctd, &arm64),
        arm64,
        "node B pulled only its own platform of {BUSYBOX}, not these linux/arm64 blobs"
    );
    let hosts = b.hosts.to_str().unwrap();
    let t0 = Instant::now();
    b.ctd
        .ctr_output(&[
            "-n",
            "k8s.io",
            "images",
            "pull",
            "--platform",
            "linux/arm64",
            "--hosts-dir",
            hosts,
            BUSYBOX,
        ])
        .unwrap_or_else(|e| panic!("node B: arm64 {BUSYBOX}: {e}\n{}\n{}", a.logs(), b.logs()));
    assert_eq!(
        absent(&b.ctd, &arm64),
        Vec::<String>::new(),
        "node B lacks these linux/arm64 blobs of {BUSYBOX} after its pull"
    );
    let took = t0.elapsed();
    b.until_pinned(rt, expected);
    took
}

fn cluster(proxy: bool) {
    let Some(bin) = tools::bin_dir() else {
        eprintln!("{}", tools::SKIPPED);
        return;
    };
    let bin = bin.unwrap();
    if !Net::available() {
        eprintln!("skipped: no network namespaces here (root and iproute2 are needed)");
        return;
    }
    let started = Instant::now();
    let mut net = Net::new();
    let switch = net.add("sw").unwrap();
    let bridge = net.bridge(&switch).unwrap();
    let ips: Vec<IpAddr> = (1..=3)
        .map(|i| format!("10.210.0.{i}").parse().unwrap())
        .collect();
    let mut spaces = Vec::new();
    for (tag, ip) in ["a", "b", "c"].iter().zip(&ips) {
        let ns = net.add(tag).unwrap();
        net.attach(&ns, &ip.to_string(), &switch, &bridge).unwrap();
        spaces.push(ns);
    }
    let work = tempfile::tempdir().unwrap();
    let (bundle, late) = archives(work.path());
    let rt = rt();

    // A imports the bundle; B and C pull its names through their Spegel.
    // A stores linux/arm64's content too (pinned and leased, not unpacked), for nodes of that
    // platform.
    let serve = "serve_platforms = [\"linux/arm64\"]";
    let mut a = seed(&net, &spaces[0], ips[0], &bin, proxy, serve, &bundle);
    let expected: Vec<(String, String)> = BUNDLE
        .iter()
        .map(|name| {
            let i = images(&rt, &a.ctd, "k8s.io")
                .into_iter()
                .find(|i| i.name == *name)
                .unwrap_or_else(|| panic!("node A did not import {name}\n{}", a.logs()));
            (i.name, i.digest)
        })
        .collect();
    a.verify();
    if proxy {
        // Spegel read A's blobs from airlift's store: containerd's own content directory was
        // never made.
        assert!(
            !a.ctd.content_root().exists(),
            "{} exists with airlift as the content store",
            a.ctd.content_root().display()
        );
    }
    let b = peer(&net, "B", &spaces[1], ips[1], &bin, ips[0], &BUNDLE);
    let c = peer(&net, "C", &spaces[2], ips[2], &bin, ips[0], &BUNDLE);
    for n in [&b, &c] {
        n.until_pinned(&rt, &expected);
        n.airlift.until("the pull list pulled", || {
            n.airlift
                .archive(&n.list())
                .is_some_and(|s| s["state"] == "imported")
        });
        n.verify();
    }
    let ready = started.elapsed();

    // An archive dropped on A while everything runs: B's CRI pulls it within seconds.
    let dropped = a.airlift.images().join(".late.tar.new");
    std::fs::copy(&late, &dropped).unwrap();
    std::fs::rename(&dropped, a.airlift.images().join("late.tar")).unwrap();
    let t0 = Instant::now();
    let mut last = String::new();
    while let Err(e) = crictl_pull(&bin, &b, LATE) {
        last = e;
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "node B never pulled {LATE} dropped on A: {last}\n{}\n{}",
            a.logs(),
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let on_b = t0.elapsed();
    let late_digest = images(&rt, &a.ctd, "k8s.io")
        .into_iter()
        .find(|i| i.name == LATE)
        .map(|i| i.digest)
        .unwrap_or_else(|| panic!("node A did not import {LATE}\n{}", a.logs()));
    // What CRI pulls is not pinned (kubelet's image GC may take it): a node that must keep an
    // image lists it.
    let pulled = images(&rt, &b.ctd, "k8s.io")
        .into_iter()
        .find(|i| i.name == LATE)
        .unwrap_or_else(|| panic!("node B's CRI pulled {LATE}, but it is not there"));
    assert_eq!(
        pulled.digest, late_digest,
        "node B's {LATE} (last error: {last})"
    );
    assert_eq!(
        pulled.labels.get("io.cri-containerd.pinned"),
        None,
        "node B's {LATE}"
    );
    assert!(
        on_b < Duration::from_secs(20),
        "{LATE} took {on_b:?} from A's images directory to B"
    );
    // C keeps it: a line in its pull list.
    let t1 = Instant::now();
    let mut with_late = BUNDLE.to_vec();
    with_late.push(LATE);
    c.write_list(&with_late);
    let mut all = expected.clone();
    all.push((LATE.to_string(), late_digest));
    c.until_pinned(&rt, &all);
    let on_c = t1.elapsed();

    let arm64 = arm64_from_a(&a, &b, &rt, &expected);

    // A goes away: B and C keep everything — after a garbage collection, pinned and whole.
    a.spegel.stop();
    a.airlift.stop();
    a.ctd.stop();
    for n in [&b, &c] {
        n.ctd.collect_garbage("k8s.io").unwrap();
        let mine = if n.tag == "C" { &all } else { &expected };
        assert!(
            missing_pins(&rt, &n.ctd, mine).is_empty(),
            "node {} after A went: {:?}",
            n.tag,
            missing_pins(&rt, &n.ctd, mine)
        );
        n.verify();
    }
    // C's daemon restarts: it pulls its list again, from B now, and keeps every pin.
    let mut c = c;
    c.airlift.stop();
    c.airlift.start();
    c.airlift.wait();
    c.airlift.until("C's list pulled again with A gone", || {
        c.airlift
            .archive(&c.list())
            .is_some_and(|s| s["state"] == "imported")
    });
    c.until_pinned(&rt, &all);
    c.verify();
    eprintln!(
        "measured ({}): three nodes ready and B, C pinned in {ready:.1?}; {LATE} on B by CRI {on_b:.1?} after it was dropped on A, pinned on C {on_c:.1?} after its list line; linux/arm64 busybox from A to B in {arm64:.1?}; whole test {:.1?}",
        if proxy { "A as content proxy" } else { "A as sidecar" },
        started.elapsed()
    );
}

#[test]
fn three_nodes_over_spegel() {
    cluster(false);
}

#[test]
fn three_nodes_over_spegel_seed_in_content_proxy_mode() {
    cluster(true);
}
