//! airlift's benchmark: airlift against containerd's own importer and the physical floor, on
//! workloads generated deterministically (by [`airlift_integration::archives`], cached in
//! `.cache/bench/v2/`), in one run on one throwaway containerd 2.x.
//!
//! `bench [--runs N] [--only W1,W3,...,U,P,S] [--out FILE]` — see `integration/bench.sh`, which
//! provisions containerd and builds everything in release mode first.
//!
//! Each contender is measured `--runs` times (default 3) with the namespace reset in between
//! (images and leases removed, garbage collected); medians are printed, with ratios to
//! `ctr --local` and to the floor. CPU time and bytes written include containerd's share.

use airlift_integration::archives::{docker_save, Content, DockerSave, ImageSpec, LayerSpec, MIB};
use airlift_integration::{Containerd, Options, Version};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const NS: &str = "bench";

/// One measurement.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    written_mb: f64,
    ok: bool,
}

impl Sample {
    /// The medians of several runs (the peak of the peak RSS); ok when every run was.
    fn median(samples: &[Sample]) -> Sample {
        Sample {
            wall: median(samples.iter().map(|s| s.wall).collect()),
            cpu: median(samples.iter().map(|s| s.cpu).collect()),
            rss_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
            written_mb: median(samples.iter().map(|s| s.written_mb).collect()),
            ok: samples.iter().all(|s| s.ok),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// containerd's (utime + stime) seconds and bytes written so far.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0))
        / tck;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let written = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (cpu, written)
}

/// Runs a command, measuring wall time, CPU (its own plus containerd's), its peak RSS and the
/// bytes written (its own plus containerd's).
fn measure(cmd: &mut Command, ctd_pid: u32) -> Sample {
    measure_with(cmd, &[ctd_pid])
}

/// [`measure`], counting the CPU time and writes of every process in `servers`.
fn measure_with(cmd: &mut Command, servers: &[u32]) -> Sample {
    let usage = || {
        servers
            .iter()
            .map(|p| proc_usage(*p))
            .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (cpu0, w0) = usage();
    let start = Instant::now();
    // Reaped below with wait4, which also yields its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut stderr = child.stderr.unwrap();
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, w1) = usage();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        eprintln!("    failed: {}", err.lines().last().unwrap_or(""));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Sample {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime) + (cpu1 - cpu0),
        rss_mib: ru.ru_maxrss as f64 / 1024.0,
        written_mb: (ru.ru_oublock as f64 * 512.0 + (w1 - w0) as f64) / 1e6,
        ok,
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn compress(src: &Path, dst: &Path, args: &[&str]) {
    if dst.exists() {
        return;
    }
    let tmp = dst.with_extension("partial");
    let status = if args[0] == "gzip" {
        let out = std::fs::File::create(&tmp).unwrap();
        Command::new("gzip")
            .args(&args[1..])
            .arg("-c")
            .arg(src)
            .stdout(out)
            .status()
            .unwrap()
    } else {
        Command::new(args[0])
            .args(&args[1..])
            .arg("-q")
            .arg("-f")
            .arg(src)
            .arg("-o")
            .arg(&tmp)
            .status()
            .unwrap()
    };
    assert!(status.success(), "{args:?} failed");
    std::fs::rename(&tmp, dst).unwrap();
}

/// A layer of a workload: a file of `size` bytes of `content` made from `seed`.
fn layer(name: &str, size: u64, content: Content, seed: u64) -> LayerSpec {
    LayerSpec {
        name: name.to_owned(),
        size,
        content,
        seed,
    }
}

/// Generates (or reuses) the workload files in `dir`. They are written by
/// [`airlift_integration::archives`], whose output depends on nothing but the arguments given
/// here: a cached file stays valid as long as these do.
fn workloads(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    let w1 = dir.join("w1.tar");
    if !w1.exists() {
        eprintln!("generating W1 (6 images, ~400 MB) ...");
        let mut layers = vec![layer("base", 64 * MIB, Content::Text, 1)];
        let mut images = Vec::new();
        for i in 0..6u64 {
            layers.push(layer(
                &format!("bin{i}"),
                32 * MIB,
                Content::Random,
                100 + i,
            ));
            layers.push(layer(&format!("doc{i}"), 24 * MIB, Content::Text, 200 + i));
            images.push(ImageSpec {
                name: format!("bench.example.com/w1/app{i}:1"),
                layers: vec!["base".into(), format!("bin{i}"), format!("doc{i}")],
            });
        }
        docker_save(&dir.join("w1.tmp"), &layers, &images).unwrap();
        std::fs::rename(dir.join("w1.tmp"), &w1).unwrap();
    }
    compress(&w1, &dir.join("w1.tar.zst"), &["zstd", "-3", "-T0"]);
    compress(&w1, &dir.join("w1.tar.gz"), &["gzip", "-6"]);
    compress(
        &w1,
        &dir.join("w6.tar.zst"),
        &["zstd", "-3", "-T0", "--long=31"],
    );
    let w2 = dir.join("w2.tar");
    if !w2.exists() {
        eprintln!("generating W2 (one 2 GB layer) ...");
        docker_save(
            &dir.join("w2.tmp"),
            &[layer("big", 2048 * MIB, Content::Random, 7)],
            &[ImageSpec {
                name: "bench.example.com/w2/big:1".into(),
                layers: vec!["big".into()],
            }],
        )
        .unwrap();
        std::fs::rename(dir.join("w2.tmp"), &w2).unwrap();
    }
    let w3 = dir.join("w3.tar");
    if !w3.exists() {
        eprintln!("generating W3 (200 small images) ...");
        let mut layers = vec![layer("base", MIB, Content::Text, 3)];
        let mut images = Vec::new();
        for i in 0..200u64 {
            layers.push(layer(
                &format!("app{i}"),
                16 * 1024,
                Content::Random,
                1000 + i,
            ));
            images.push(ImageSpec {
                name: format!("bench.example.com/w3/small{i}:1"),
                layers: vec!["base".into(), format!("app{i}")],
            });
        }
        docker_save(&dir.join("w3.tmp"), &layers, &images).unwrap();
        std::fs::rename(dir.join("w3.tmp"), &w3).unwrap();
    }
    vec![
        ("W1 .tar.zst", dir.join("w1.tar.zst")),
        ("W1 .tar.gz", dir.join("w1.tar.gz")),
        ("W1 .tar", w1),
        ("W2 .tar (2 GB layer)", w2),
        ("W3 200 images", w3),
        ("W6 zstd --long=31", dir.join("w6.tar.zst")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Contenders

/// A throwaway containerd 2.x without CRI, with airlift at `content_proxy` as its content store
/// when given.
fn containerd(content_proxy: Option<PathBuf>) -> Containerd {
    Containerd::start_with(
        Version::V2,
        Options {
            cri: false,
            content_proxy,
            ..Options::default()
        },
    )
    .unwrap()
}

fn reset(ctd: &Containerd) {
    let imgs = ctd
        .ctr_output(&["-n", NS, "images", "ls", "-q"])
        .unwrap_or_default();
    let imgs: Vec<&str> = imgs.lines().filter(|l| !l.is_empty()).collect();
    for chunk in imgs.chunks(100) {
        let mut args = vec!["-n", NS, "images", "rm"];
        args.extend(chunk);
        let _ = ctd.ctr_output(&args);
    }
    let leases = ctd
        .ctr_output(&["-n", NS, "leases", "ls", "-q"])
        .unwrap_or_default();
    for l in leases.lines().filter(|l| !l.is_empty()) {
        let _ = ctd.ctr_output(&["-n", NS, "leases", "rm", l]);
    }
    let _ = ctd.collect_garbage(NS);
    let left = ctd
        .ctr_output(&["-n", NS, "content", "ls", "-q"])
        .unwrap_or_default();
    assert!(left.trim().is_empty(), "content left after reset: {left}");
}

fn contender(
    name: &str,
    ctd: &Containerd,
    airlift: &Path,
    floor: &Path,
    file: &Path,
    scratch: &Path,
) -> Command {
    match name {
        "airlift direct" | "airlift stream" => {
            let mut c = Command::new(airlift);
            c.args([
                "import",
                "--namespace",
                NS,
                "--all-platforms",
                "--mode",
                if name.ends_with("direct") {
                    "direct"
                } else {
                    "stream"
                },
                "--state-dir",
            ])
            .arg(scratch.join("state"))
            .arg("--address")
            .arg(ctd.address())
            .arg(file);
            c
        }
        "ctr --local" | "ctr (transfer)" | "ctr --local, unpacking" => {
            let mut c = ctd.ctr();
            c.args(["-n", NS, "images", "import", "--all-platforms"]);
            if !name.ends_with("unpacking") {
                c.arg("--no-unpack");
            }
            let local = name.starts_with("ctr --local");
            if local {
                c.arg("--local");
            }
            // `ctr --local` takes a plain tar, as k3s's importer does after decompressing: give it
            // the archive through the decompressor, as an operator (or k3s) would.
            let mut head = [0u8; 4];
            let _ = std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut head));
            let decompress = match head {
                [0x28, 0xb5, 0x2f, 0xfd] => Some("zstd -dc --long=31"),
                [0x1f, 0x8b, _, _] => Some("gzip -dc"),
                _ => None,
            };
            match decompress {
                Some(d) if local => {
                    let ctr = format!("{:?}", c.get_program());
                    let args: Vec<String> = c
                        .get_args()
                        .map(|a| format!("{:?}", a.to_string_lossy()))
                        .collect();
                    let mut sh = Command::new("bash");
                    sh.arg("-c").arg(format!(
                        "set -o pipefail; {d} {file:?} | {ctr} {} -",
                        args.join(" ")
                    ));
                    sh
                }
                _ => {
                    c.arg(file);
                    c
                }
            }
        }
        "floor" => {
            let mut c = Command::new(floor);
            c.arg(file).arg(scratch.join("floor.out"));
            c
        }
        other => panic!("unknown contender {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = get("--runs").map(|r| r.parse().unwrap()).unwrap_or(3);
    let only: Option<Vec<String>> =
        get("--only").map(|s| s.split(',').map(str::to_string).collect());
    let out = get("--out");
    let root = airlift_integration::repo_root();
    let target = root.join("target/release");
    let airlift = target.join("airlift");
    let floor = target.join("floor");
    assert!(
        airlift.exists() && floor.exists(),
        "build first: cargo build --release -p airlift -p airlift-integration"
    );
    let data = airlift_integration::cache_dir().join("bench").join("v2");
    let mut all = workloads(&data);
    if let Some(only) = &only {
        all.retain(|(n, _)| only.iter().any(|o| n.starts_with(o.as_str())));
    }
    let ctd = containerd(None);
    let ctd_pid = ctd.pid().unwrap();
    let scratch = ctd.root().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let version = ctd.server_version().unwrap_or_default();
    let contenders = [
        "airlift direct",
        "airlift stream",
        "ctr --local",
        "ctr (transfer)",
        "floor",
    ];
    let mut report = String::new();
    let machine = format!(
        "{} cores, {}, containerd {version}, {} runs per figure (median)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default(),
        runs
    );
    println!("machine: {machine}");
    report.push_str(&format!("Machine: {machine}.\n\n"));
    report.push_str("| workload | contender | wall s | CPU s | peak RSS MiB | written MB | × ctr --local | × floor |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (wname, file) in &all {
        println!(
            "\n{wname}: {} ({:.0} MB)",
            file.display(),
            std::fs::metadata(file).unwrap().len() as f64 / 1e6
        );
        let mut medians: Vec<(&str, Sample)> = Vec::new();
        for c in contenders {
            let mut samples = Vec::new();
            for _ in 0..runs {
                reset(&ctd);
                let _ = std::fs::remove_file(scratch.join("floor.out"));
                samples.push(measure(
                    &mut contender(c, &ctd, &airlift, &floor, file, &scratch),
                    ctd_pid,
                ));
            }
            let m = Sample::median(&samples);
            medians.push((c, m));
        }
        let base = medians
            .iter()
            .find(|(c, _)| *c == "ctr --local")
            .map(|(_, m)| *m);
        let fl = medians
            .iter()
            .find(|(c, _)| *c == "floor")
            .map(|(_, m)| m.wall)
            .unwrap();
        for (c, m) in &medians {
            let vs_ctr = match base {
                Some(b) if b.ok && m.ok => format!("{:.2}", m.wall / b.wall),
                _ => "—".into(),
            };
            let vs_floor = if m.ok {
                format!("{:.2}", m.wall / fl)
            } else {
                "—".into()
            };
            let wall = if m.ok {
                format!("{:.3}", m.wall)
            } else {
                "failed".into()
            };
            println!("  {c:<16} wall {wall:>8} s  cpu {:>7.3} s  rss {:>6.1} MiB  written {:>7.1} MB  ×ctr {vs_ctr:>5}  ×floor {vs_floor:>5}", m.cpu, m.rss_mib, m.written_mb);
            report.push_str(&format!(
                "| {wname} | {c} | {wall} | {:.3} | {:.1} | {:.1} | {vs_ctr} | {vs_floor} |\n",
                m.cpu, m.rss_mib, m.written_mb
            ));
        }
        if wname.starts_with("W1 .tar.zst") {
            let w1_first = medians
                .iter()
                .find(|(c, _)| *c == "airlift direct")
                .map(|(_, m)| m.wall);
            // W4: the same archive again, its content present: as a repeated command (the
            // unchanged archive is recalled, not read) and forced (read, hashed, nothing written).
            for (label, force) in [("recalled", false), ("--force", true)] {
                let mut samples = Vec::new();
                for _ in 0..runs {
                    reset(&ctd);
                    let mut first =
                        contender("airlift direct", &ctd, &airlift, &floor, file, &scratch);
                    assert!(first
                        .stdout(std::process::Stdio::null())
                        .status()
                        .unwrap()
                        .success());
                    let mut again =
                        contender("airlift direct", &ctd, &airlift, &floor, file, &scratch);
                    if force {
                        again.arg("--force");
                    }
                    samples.push(measure(&mut again, ctd_pid));
                }
                let w4 = median(samples.iter().map(|s| s.wall).collect());
                let share = w1_first.map(|f| w4 / f * 100.0).unwrap_or(0.0);
                println!("  W4 (W1 .tar.zst again, content present, {label}): airlift direct wall {w4:.3} s = {share:.1} % of the first import");
                report.push_str(&format!("| W4 (W1 .tar.zst again, {label}) | airlift direct | {w4:.3} | | | | | {share:.1} % of W1 |\n"));
            }
        }
    }
    if only.as_ref().is_none_or(|o| o.iter().any(|x| x == "W5")) {
        let (ready, read) = w5(&ctd, &airlift, &data);
        println!("\nW5 (airlift serve restarted over 100 unchanged archives): ready in {:.0} ms, {read} archive bytes read", ready * 1000.0);
        report.push_str(&format!("| W5 (restart over 100 unchanged archives) | airlift serve | {ready:.3} | | | | | ready in {:.0} ms, {read} bytes read |\n", ready * 1000.0));
    }
    if only.as_ref().is_none_or(|o| o.iter().any(|x| x == "U")) {
        unpacking(&mut report, &ctd, &airlift, &floor, &data, runs);
    }
    if only.as_ref().is_none_or(|o| o.iter().any(|x| x == "P")) {
        drop(ctd);
        proxy(&mut report, &airlift, &data, runs);
    }
    if only.as_ref().is_none_or(|o| o.iter().any(|x| x == "S")) {
        serve(&mut report, &airlift, &data, runs);
    }
    if let Some(out) = out {
        std::fs::write(&out, report).unwrap();
        eprintln!("table written to {out}");
    }
}

/// U: W1 (`.tar` and `.tar.zst`) imported and unpacked into overlayfs. `airlift import
/// --unpack` against `ctr images import --local` (which unpacks, one layer after another once
/// all content is written), and against the two halves alone: `airlift import` without
/// unpacking, and unpacking alone (`ctr images mount` of each image after that import, then
/// unmounted). The overlap works when airlift's wall time is close to the slower half.
fn unpacking(
    report: &mut String,
    ctd: &Containerd,
    airlift: &Path,
    floor: &Path,
    data: &Path,
    runs: usize,
) {
    let pid = ctd.pid().unwrap();
    let scratch = ctd.root().join("scratch-unpack");
    std::fs::create_dir_all(&scratch).unwrap();
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    report.push_str("\n| U workload | contender | wall s | CPU s | × ctr --local, unpacking | × the slower half |\n|---|---|---:|---:|---:|---:|\n");
    let mount_all = format!(
        "set -e; for i in $({ctr} -n {NS} images ls -q); do {ctr} -n {NS} images mount $i {m} >/dev/null; {ctr} -n {NS} images unmount --rm {m} >/dev/null; done",
        ctr = format!("{:?} --address {:?}", ctd.ctr().get_program(), ctd.address()),
        m = mnt.display()
    );
    for (wname, file) in [
        ("W1 .tar", data.join("w1.tar")),
        ("W1 .tar.zst", data.join("w1.tar.zst")),
    ] {
        println!("\nU {wname}: import and unpack");
        let mut rows: Vec<(&str, Sample)> = Vec::new();
        for name in [
            "airlift --unpack",
            "ctr --local, unpacking",
            "airlift import alone",
            "unpacking alone",
        ] {
            let mut samples = Vec::new();
            for _ in 0..runs {
                reset(ctd);
                let s = match name {
                    "airlift --unpack" => {
                        let mut c =
                            contender("airlift direct", ctd, airlift, floor, &file, &scratch);
                        c.arg("--unpack");
                        measure(&mut c, pid)
                    }
                    "airlift import alone" => measure(
                        &mut contender("airlift direct", ctd, airlift, floor, &file, &scratch),
                        pid,
                    ),
                    "unpacking alone" => {
                        let mut first =
                            contender("airlift direct", ctd, airlift, floor, &file, &scratch);
                        assert!(first
                            .stdout(std::process::Stdio::null())
                            .status()
                            .unwrap()
                            .success());
                        let mut sh = Command::new("bash");
                        sh.arg("-c").arg(&mount_all);
                        measure(&mut sh, pid)
                    }
                    other => measure(
                        &mut contender(other, ctd, airlift, floor, &file, &scratch),
                        pid,
                    ),
                };
                samples.push(s);
            }
            rows.push((name, Sample::median(&samples)));
        }
        let wall = |n: &str| rows.iter().find(|(c, _)| *c == n).map(|(_, m)| m.wall);
        let ctr = wall("ctr --local, unpacking").unwrap();
        let slower = wall("airlift import alone")
            .unwrap()
            .max(wall("unpacking alone").unwrap());
        for (c, m) in &rows {
            let shown = if m.ok {
                format!("{:.3}", m.wall)
            } else {
                "failed".into()
            };
            println!(
                "  {c:<24} wall {shown:>8} s  cpu {:>7.3} s  ×ctr {:>5.2}  ×slower half {:>5.2}",
                m.cpu,
                m.wall / ctr,
                m.wall / slower
            );
            report.push_str(&format!(
                "| {wname} | {c} | {shown} | {:.3} | {:.2} | {:.2} |\n",
                m.cpu,
                m.wall / ctr,
                m.wall / slower
            ));
        }
    }
    reset(ctd);
}

/// W5: `airlift serve` restarted over 100 unchanged archives: time until `airlift wait` returns.
fn w5(ctd: &Containerd, airlift: &Path, data: &Path) -> (f64, String) {
    reset(ctd);
    let dir = tempfile::Builder::new()
        .prefix("w5")
        .tempdir_in(data)
        .unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    // 100 small distinct archives, each with an image name and a (not a tar) layer of its own.
    for i in 0..100 {
        let mut archive = DockerSave::new(Vec::new());
        archive
            .raw_layer("l", format!("layer{i}").as_bytes())
            .unwrap();
        let config = serde_json::json!({
            "architecture": airlift::platform::Platform::host().architecture,
            "os": "linux",
        });
        archive
            .image(
                "c.json",
                &config,
                &[format!("bench.example.com/w5/a{i}:1")],
                &["l"],
            )
            .unwrap();
        let bytes = archive.finish().unwrap();
        std::fs::write(images.join(format!("a{i:03}.tar")), bytes).unwrap();
    }
    let socket = dir.path().join("a.sock");
    let serve = |d: &Path| {
        Command::new(airlift)
            .args([
                "serve",
                "--namespace",
                NS,
                "--settle-ms",
                "100",
                "--address",
            ])
            .arg(ctd.address())
            .arg("--images-dir")
            .arg(&images)
            .arg("--state-dir")
            .arg(d.join("state"))
            .arg("--socket")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait = || {
        Command::new(airlift)
            .args(["wait", "--timeout", "120", "--socket"])
            .arg(&socket)
            .status()
            .unwrap()
    };
    let mut first = serve(dir.path());
    assert!(wait().success());
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    first.wait().unwrap();
    let mut samples = Vec::new();
    let mut read = String::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut d = serve(dir.path());
        assert!(wait().success());
        samples.push(start.elapsed().as_secs_f64());
        let st = Command::new(airlift)
            .args(["status", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        read = String::from_utf8_lossy(&st.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("bytes read:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        d.wait().unwrap();
    }
    (median(samples), read)
}

/// P: containerd's own work with airlift as its content store (a content proxy plugin) against
/// containerd with its built-in store: `ctr images import` with unpack of W1 `.tar`, and
/// `ctr content get` of W2's 2 GB layer. CPU and writes include airlift's share.
fn proxy(report: &mut String, airlift: &Path, data: &Path, runs: usize) {
    let dir = tempfile::Builder::new()
        .prefix("proxy")
        .tempdir_in(data)
        .unwrap();
    let socket = dir.path().join("airlift.sock");
    let builtin = containerd(None);
    let proxied = containerd(Some(socket.clone()));
    let mut daemon = Command::new(airlift)
        .args(["serve", "--namespace", "airlift-bench", "--address"])
        .arg(proxied.address())
        .arg("--images-dir")
        .arg(dir.path().join("images"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--content-proxy-root")
        .arg(dir.path().join("content"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ok = Command::new(airlift)
        .args(["wait", "--timeout", "60", "--socket"])
        .arg(&socket)
        .status()
        .unwrap()
        .success();
    assert!(ok, "airlift serve did not become ready");
    let w1 = data.join("w1.tar");
    let w2 = data.join("w2.tar");
    println!("\nP (containerd through airlift's content proxy vs its built-in store):");
    let mut lines = Vec::new();
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
            let mut samples = Vec::new();
            for _ in 0..runs {
                reset(ctd);
                let mut import = ctd.ctr();
                import.args(["-n", NS, "images", "import", "--local"]);
                if get {
                    import.arg("--no-unpack");
                }
                import.arg(file);
                if !get {
                    samples.push(measure_with(&mut import, &pids));
                    continue;
                }
                assert!(import
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success());
                let largest = ctd
                    .ctr_output(&["-n", NS, "content", "ls"])
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
                    .expect("a 2 GB layer");
                let mut cat = Command::new("bash");
                cat.arg("-c").arg(format!(
                    "set -o pipefail; {:?} --address {:?} -n {NS} content get {largest} | cat > /dev/null",
                    ctd.bin_dir().join("ctr"),
                    ctd.address()
                ));
                samples.push(measure_with(&mut cat, &pids));
            }
            let m = Sample::median(&samples);
            let ok = m.ok;
            walls.push(m.wall);
            let ratio = m.wall / walls[0];
            let wall = if ok {
                format!("{:.3}", m.wall)
            } else {
                "failed".into()
            };
            println!(
                "  {label:<42} {store:<15} wall {wall:>8} s  cpu {:>7.3} s  written {:>7.1} MB  × built-in {ratio:.2}",
                m.cpu, m.written_mb
            );
            lines.push(format!(
                "| {label} | {store} | {wall} | {:.3} | | {:.1} | | × built-in {ratio:.2} |\n",
                m.cpu, m.written_mb
            ));
        }
    }
    for l in lines {
        report.push_str(&l);
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

/// Parallel clients of the serving benchmark.
const CLIENTS: usize = 4;

/// A free loopback address.
fn loopback() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A whole HTTP GET of `url` (plain, no redirects, `Connection: close`): the body.
fn http_get(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sSf", url]).output().unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The `(repository, digest, size)` of every blob of every image a registry at `base` lists
/// (each digest once), and the images as `repository:tag`.
fn blobs_of(base: &str) -> (Vec<(String, String, u64)>, Vec<String>) {
    let catalog: serde_json::Value =
        serde_json::from_slice(&http_get(&format!("{base}/v2/_catalog"))).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut blobs = Vec::new();
    let mut images = Vec::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value =
            serde_json::from_slice(&http_get(&format!("{base}/v2/{repo}/tags/list"))).unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            images.push(format!("{repo}:{tag}"));
            let m: serde_json::Value =
                serde_json::from_slice(&http_get(&format!("{base}/v2/{repo}/manifests/{tag}")))
                    .unwrap();
            let layers = m["layers"].as_array().unwrap().iter();
            for d in std::iter::once(&m["config"]).chain(layers) {
                let digest = d["digest"].as_str().unwrap().to_string();
                if seen.insert(digest.clone()) {
                    blobs.push((repo.to_string(), digest, d["size"].as_u64().unwrap()));
                }
            }
        }
    }
    (blobs, images)
}

/// Runs the client commands at once and waits for all; measures the whole (CPU: the clients'
/// and the servers'), and the CPU time of the servers alone.
fn parallel(clients: &[Vec<String>], servers: &[u32]) -> (Sample, f64) {
    let server_cpu = || servers.iter().map(|p| proc_usage(*p).0).sum::<f64>();
    let (cpu0, before) = (server_cpu(), Instant::now());
    // Reaped below with wait4, which also yields their resource usage.
    #[allow(clippy::zombie_processes)]
    let pids: Vec<i32> = clients
        .iter()
        .map(|argv| {
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(std::fs::File::create("/dev/null").unwrap())
                .spawn()
                .expect("spawn a client")
                .id() as i32
        })
        .collect();
    let (mut cpu, mut ok) = (0.0, true);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    for pid in pids {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        cpu += tv(ru.ru_utime) + tv(ru.ru_stime);
    }
    let wall = before.elapsed().as_secs_f64();
    let server = server_cpu() - cpu0;
    let s = Sample {
        wall,
        cpu: cpu + server,
        ok,
        ..Sample::default()
    };
    (s, server)
}

/// The least an HTTP server can do to hand out blobs: a thread per connection that reads a
/// request head, answers `200` with the `Content-Length` of the file the path's last component
/// names in `dir`, and `sendfile`s it; keep-alive; a send buffer fixed at `send_buffer` bytes
/// (0: the kernel's autotuning). No checks, no limits: the floor the registry endpoint is
/// measured against, never anything to serve with.
fn sendfile_floor(dir: PathBuf, send_buffer: usize) -> std::net::SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_nodelay(true);
                if send_buffer > 0 {
                    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&conn, send_buffer);
                }
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("");
                    let hex = path.rsplit(':').next().unwrap_or("");
                    let Ok(file) = std::fs::File::open(dir.join(hex)) else {
                        let _ =
                            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    };
                    let len = file.metadata().unwrap().len();
                    let _ = conn.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                    );
                    let mut at = 0u64;
                    while at < len {
                        let count = (len - at) as usize;
                        match rustix::fs::sendfile(&conn, &file, Some(&mut at), count) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A fixed send buffer, for the contenders that try one (KiB).
const SMALL_SEND_BUFFER_KIB: usize = 256;

/// S: serving W1's blobs. airlift serve's registry endpoint against reading the same files from
/// the page cache and against the distribution registry (`docker-registry`) serving the same
/// images, every blob fetched over loopback by `CLIENTS` parallel clients (`curl`).
fn serve(report: &mut String, airlift: &Path, data: &Path, runs: usize) {
    let ctd = containerd(None);
    let dir = tempfile::Builder::new()
        .prefix("serve")
        .tempdir_in(data)
        .unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::hard_link(data.join("w1.tar"), images.join("w1.tar"))
        .or_else(|_| std::fs::copy(data.join("w1.tar"), images.join("w1.tar")).map(|_| ()))
        .unwrap();
    let socket = dir.path().join("airlift.sock");
    let ours = loopback();
    let mut daemon = Command::new(airlift)
        .args(["serve", "--namespace", NS, "--address"])
        .arg(ctd.address())
        .arg("--images-dir")
        .arg(&images)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--registry-address")
        .arg(ours.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ok = Command::new(airlift)
        .args(["wait", "--timeout", "300", "--socket"])
        .arg(&socket)
        .status()
        .unwrap()
        .success();
    assert!(ok, "airlift serve did not become ready");
    let base = format!("http://{ours}");
    let (blobs, image_names) = blobs_of(&base);
    let total: u64 = blobs.iter().map(|b| b.2).sum();

    // The peer registry, holding the same images (same digests), copied from airlift's
    // endpoint by skopeo.
    let theirs = loopback();
    let reg_dir = dir.path().join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg_config = reg_dir.join("config.yml");
    std::fs::write(
        &reg_config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {theirs}\n",
            reg_dir.join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&reg_config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (bash integration/provision.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(theirs).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for image in &image_names {
        let ok = Command::new("skopeo")
            .env("HOME", dir.path())
            .args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--preserve-digests",
                "-q",
            ])
            .arg(format!("docker://{ours}/{image}"))
            .arg(format!("docker://{theirs}/{image}"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "skopeo copy {image} into docker-registry");
    }

    // Every client fetches every blob: CLIENTS nodes pulling W1 at once. One curl per client,
    // its connection kept alive from blob to blob; the peer reads the same files with one cat
    // per client.
    let content = ctd.content_root().join("blobs/sha256");
    let curl = |at: std::net::SocketAddr| -> Vec<Vec<String>> {
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
    let small_socket = dir.path().join("small.sock");
    let mut small_daemon = Command::new(airlift)
        .args(["serve", "--namespace", NS, "--config"])
        .arg(&small_config)
        .arg("--address")
        .arg(ctd.address())
        .arg("--images-dir")
        .arg(dir.path().join("no-images"))
        .arg("--state-dir")
        .arg(dir.path().join("small-state"))
        .arg("--socket")
        .arg(&small_socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(Command::new(airlift)
        .args(["wait", "--timeout", "60", "--socket"])
        .arg(&small_socket)
        .status()
        .unwrap()
        .success());
    let small_buffer = format!("{SMALL_SEND_BUFFER_KIB} KiB send buffer");
    let floor = sendfile_floor(content.clone(), 0);
    let small_floor = sendfile_floor(content.clone(), SMALL_SEND_BUFFER_KIB << 10);
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
    unsafe { libc::kill(small_daemon.id() as i32, libc::SIGTERM) };
    let _ = small_daemon.wait();
    for (name, m, server_cpu, mbs, vs_cache) in &lines {
        report.push_str(&format!(
            "| S W1 blobs × {CLIENTS} clients | {name} | {:.3} | {:.3} (server {server_cpu:.3}) | | | × page cache {vs_cache:.2} | {mbs:.0} MB/s, × sendfile floor {:.2}, × docker-registry {:.2} |\n",
            m.wall,
            m.cpu,
            floor_wall / m.wall,
            registry_wall / m.wall
        ));
    }
    println!(
        "  airlift serve: {:.2} × the page cache's throughput, {:.2} × the sendfile floor's, {:.2} × docker-registry's; with a {small_buffer}: {:.2} × the page cache's, {:.2} × the floor's with it",
        walls[0] / walls[2],
        walls[1] / walls[2],
        walls[3] / walls[2],
        walls[0] / walls[5],
        walls[4] / walls[5],
    );
    pull_through_containerd(report, data, &image_names, ours, theirs, runs);
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
        libc::kill(registry.id() as i32, libc::SIGTERM);
    }
    let _ = daemon.wait();
    let _ = registry.wait();
}

/// S, node B: a fresh containerd pulling all of W1 (`ctr images pull` of each image, unpack
/// included, as a node does) through a hosts.toml mirror pointing at airlift serve's endpoint,
/// against one pointing at docker-registry holding the same images.
fn pull_through_containerd(
    report: &mut String,
    data: &Path,
    images: &[String],
    ours: std::net::SocketAddr,
    theirs: std::net::SocketAddr,
    runs: usize,
) {
    let hosts = tempfile::Builder::new()
        .prefix("hosts")
        .tempdir_in(data)
        .unwrap();
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
        report.push_str(&format!(
            "| S node B pulls W1 through containerd | {name} | {wall:.3} | | | | | × docker-registry {:.2} |\n",
            wall / walls[1]
        ));
    }
}
