//! W5: `airlift serve` restarted over 100 unchanged archives: the time until `airlift wait`
//! returns, and the archive bytes the daemon read.

use crate::contenders::{reset, stop, Airlift, Bins, NS};
use crate::measure::{alternating, median};
use crate::report::{Report, Versus};
use crate::workloads::{w5_archives, Workloads};
use airlift_integration::Containerd;
use std::path::Path;
use std::process::Child;
use std::time::Instant;

/// Restarts per binary.
const RESTARTS: usize = 5;

/// Measures W5 with every airlift binary, each over archives and a state of its own, the
/// binaries' restarts taken in turn.
pub fn run(report: &mut Report, ctd: &Containerd, bins: &Bins, workloads: &Workloads) {
    reset(ctd);
    let airlifts = bins.airlifts();
    let dirs: Vec<_> = airlifts
        .iter()
        .map(|_| {
            let dir = workloads.scratch("w5");
            w5_archives(&dir.path().join("images"));
            dir
        })
        .collect();
    // The first start imports the archives.
    for (a, dir) in airlifts.iter().zip(&dirs) {
        stop(serve(a, ctd, dir.path()));
    }
    let restarts = alternating(RESTARTS, airlifts.len(), |i| {
        restart(&airlifts[i], ctd, dirs[i].path())
    });
    let measured: Vec<(f64, String)> = restarts
        .into_iter()
        .map(|runs| {
            let read = runs.last().map(|r| r.1.clone()).unwrap_or_default();
            (median(runs.into_iter().map(|r| r.0).collect()), read)
        })
        .collect();
    for (i, (a, (ready, read))) in airlifts.iter().zip(&measured).enumerate() {
        // On the current build's row, against the baseline's.
        let versus = (i == 0 && measured.len() > 1).then(|| Versus::walls(*ready, measured[1].0));
        let versus = versus.as_ref();
        let name = a.label("airlift serve");
        let ms = ready * 1000.0;
        if a.baseline {
            println!("  {name}: ready in {ms:.0} ms, {read} archive bytes read");
        } else {
            println!(
                "\nW5 (airlift serve restarted over 100 unchanged archives): ready in {ms:.0} ms, {read} archive bytes read{}",
                Versus::printed(versus)
            );
        }
        report.row(
            &[
                "W5 (restart over 100 unchanged archives)",
                &name,
                &format!("{ready:.3}"),
                "",
                "",
                "",
                "",
                &format!("ready in {ms:.0} ms, {read} bytes read"),
            ],
            versus,
        );
    }
}

/// `airlift serve` over `dir`'s images and state, once ready.
fn serve(a: &Airlift, ctd: &Containerd, dir: &Path) -> Child {
    let mut serve = a.command();
    serve
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
        .arg(dir.join("images"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    a.serve(serve, &dir.join("a.sock"), 120)
}

/// One restart: seconds until ready, and the archive bytes it read (`airlift status`).
fn restart(a: &Airlift, ctd: &Containerd, dir: &Path) -> (f64, String) {
    let start = Instant::now();
    let daemon = serve(a, ctd, dir);
    let ready = start.elapsed().as_secs_f64();
    let st = a
        .command()
        .args(["status", "--socket"])
        .arg(dir.join("a.sock"))
        .output()
        .unwrap();
    let read = String::from_utf8_lossy(&st.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("bytes read:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    stop(daemon);
    (ready, read)
}
