//! Measuring: a command's wall time, CPU time, peak RSS and bytes written (its own and its
//! servers'), medians of several runs, and runs of several contenders taken in turn.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One measurement.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
    pub rss_mib: f64,
    pub written_mb: f64,
    pub ok: bool,
}

impl Sample {
    /// The medians of several runs (the peak of the peak RSS); ok when every run was.
    pub fn median(samples: &[Sample]) -> Sample {
        Sample {
            wall: median(samples.iter().map(|s| s.wall).collect()),
            cpu: median(samples.iter().map(|s| s.cpu).collect()),
            rss_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
            written_mb: median(samples.iter().map(|s| s.written_mb).collect()),
            ok: samples.iter().all(|s| s.ok),
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `runs` runs of each of `contenders` contenders, taken in turn run by run, the order reversed
/// every other run, so that a machine's drift (writeback, a neighbour's build) falls on all of
/// them alike: `once(i)` measures contender `i`. The results per contender, in run order.
pub fn alternating<T>(
    runs: usize,
    contenders: usize,
    mut once: impl FnMut(usize) -> T,
) -> Vec<Vec<T>> {
    let mut results: Vec<Vec<T>> = (0..contenders).map(|_| Vec::new()).collect();
    for run in 0..runs {
        for k in 0..contenders {
            let i = if run % 2 == 0 { k } else { contenders - 1 - k };
            results[i].push(once(i));
        }
    }
    results
}

/// The medians of a group of contenders measured [`alternating`]ly, each with the median of
/// the contender it is compared with: a group is airlift's current build and then its
/// baseline, or a contender alone.
pub fn group(
    runs: usize,
    contenders: usize,
    once: impl FnMut(usize) -> Sample,
) -> Vec<(Sample, Option<Sample>)> {
    let medians: Vec<Sample> = alternating(runs, contenders, once)
        .iter()
        .map(|s| Sample::median(s))
        .collect();
    let baseline = medians.get(1).copied();
    medians
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, baseline.filter(|_| i == 0)))
        .collect()
}

/// A process's (utime + stime) seconds and bytes written so far.
pub fn proc_usage(pid: u32) -> (f64, u64) {
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

/// What `wait4` tells of a child that ended.
struct Reaped {
    ok: bool,
    cpu: f64,
    rss_mib: f64,
    written_bytes: f64,
}

/// Waits for child `pid` to end, with its resource usage.
fn reap(pid: i32) -> Reaped {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Reaped {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_mib: ru.ru_maxrss as f64 / 1024.0,
        written_bytes: ru.ru_oublock as f64 * 512.0,
    }
}

/// Runs a command, measuring wall time, CPU (its own plus containerd's), its peak RSS and the
/// bytes written (its own plus containerd's).
pub fn measure(cmd: &mut Command, ctd_pid: u32) -> Sample {
    measure_with(cmd, &[ctd_pid])
}

/// [`measure`], counting the CPU time and writes of every process in `servers`.
pub fn measure_with(cmd: &mut Command, servers: &[u32]) -> Sample {
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut stderr = child.stderr.unwrap();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    let reaped = reap(pid);
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, w1) = usage();
    if !reaped.ok {
        eprintln!("    failed: {}", err.lines().last().unwrap_or(""));
    }
    Sample {
        wall,
        cpu: reaped.cpu + (cpu1 - cpu0),
        rss_mib: reaped.rss_mib,
        written_mb: (reaped.written_bytes + (w1 - w0) as f64) / 1e6,
        ok: reaped.ok,
    }
}

/// Runs the client commands at once and waits for all; measures the whole (CPU: the clients'
/// and the servers'), and the CPU time of the servers alone.
pub fn parallel(clients: &[Vec<String>], servers: &[u32]) -> (Sample, f64) {
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
    for pid in pids {
        let reaped = reap(pid);
        ok &= reaped.ok;
        cpu += reaped.cpu;
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
