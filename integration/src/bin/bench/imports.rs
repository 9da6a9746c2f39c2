//! W1, W2, W3 and W6: each workload imported by airlift (direct and stream mode, and the
//! baseline's too when there is one), `ctr images import` (`--local` and through the transfer
//! API) and the floor; and W4, W1 `.tar.zst` imported again while its content is present.

use crate::contenders::{ctr_import, floor, reset, Airlift, Bins};
use crate::measure::{alternating, group, measure, median, Sample};
use crate::report::{self, Report, Versus};
use crate::workloads::{Workloads, IMPORTS};
use airlift_integration::Containerd;
use std::path::Path;
use std::process::{Command, Stdio};

/// One contender of the import suite.
enum Contender<'a> {
    Airlift(Airlift<'a>, &'static str),
    Ctr { local: bool },
    Floor,
}

impl Contender<'_> {
    fn name(&self) -> String {
        match self {
            Contender::Airlift(a, mode) => a.label(&format!("airlift {mode}")),
            Contender::Ctr { local: true } => "ctr --local".into(),
            Contender::Ctr { local: false } => "ctr (transfer)".into(),
            Contender::Floor => "floor".into(),
        }
    }

    fn command(&self, ctd: &Containerd, bins: &Bins, file: &Path, scratch: &Path) -> Command {
        match self {
            Contender::Airlift(a, mode) => a.import(ctd, mode, file, scratch),
            Contender::Ctr { local } => ctr_import(ctd, file, *local, false),
            Contender::Floor => floor(&bins.floor, file, scratch),
        }
    }
}

/// A contender's median, and for airlift's current build, its baseline's.
struct Row {
    name: String,
    median: Sample,
    baseline: Option<Sample>,
}

/// Measures the workloads of [`IMPORTS`] whose label `selected` takes, `runs` times each.
pub fn run(
    report: &mut Report,
    ctd: &Containerd,
    bins: &Bins,
    workloads: &Workloads,
    selected: impl Fn(&str) -> bool,
    runs: usize,
) {
    let pid = ctd.pid().unwrap();
    let scratch = ctd.root().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // Each group is measured in turn, run by run: an airlift mode with its baseline.
    let airlift = |mode| {
        bins.airlifts()
            .into_iter()
            .map(|a| Contender::Airlift(a, mode))
            .collect::<Vec<_>>()
    };
    let groups = [
        airlift("direct"),
        airlift("stream"),
        vec![Contender::Ctr { local: true }],
        vec![Contender::Ctr { local: false }],
        vec![Contender::Floor],
    ];
    let names: Vec<String> = groups.iter().flatten().map(Contender::name).collect();
    let width = report::width(&names, 16);
    for (wname, file) in IMPORTS.into_iter().filter(|(n, _)| selected(n)) {
        let file = workloads.file(file);
        println!(
            "\n{wname}: {} ({:.0} MB)",
            file.display(),
            std::fs::metadata(&file).unwrap().len() as f64 / 1e6
        );
        let mut rows = Vec::new();
        for contenders in &groups {
            let medians = group(runs, contenders.len(), |i| {
                reset(ctd);
                let _ = std::fs::remove_file(scratch.join("floor.out"));
                measure(&mut contenders[i].command(ctd, bins, &file, &scratch), pid)
            });
            for (c, (median, baseline)) in contenders.iter().zip(medians) {
                rows.push(Row {
                    name: c.name(),
                    median,
                    baseline,
                });
            }
        }
        table(report, wname, &rows, width);
        if wname.starts_with("W1 .tar.zst") {
            w4(report, ctd, bins, &file, &scratch, runs, &rows);
        }
    }
}

/// Prints the medians of one workload and adds them to the report, with ratios to `ctr
/// --local`, to the floor and to the baseline.
fn table(report: &mut Report, wname: &str, rows: &[Row], width: usize) {
    let base = rows
        .iter()
        .find(|r| r.name == "ctr --local")
        .map(|r| r.median);
    let fl = rows
        .iter()
        .find(|r| r.name == "floor")
        .map(|r| r.median.wall)
        .unwrap();
    for Row {
        name: c,
        median: m,
        baseline,
    } in rows
    {
        let vs_ctr = match base {
            Some(b) if b.ok && m.ok => format!("{:.2}", m.wall / b.wall),
            _ => "—".into(),
        };
        let vs_floor = if m.ok {
            format!("{:.2}", m.wall / fl)
        } else {
            "—".into()
        };
        let wall = report::wall(m);
        let versus = baseline.map(|b| Versus::samples(m, &b));
        println!(
            "  {c:<width$} wall {wall:>8} s  cpu {:>7.3} s  rss {:>6.1} MiB  written {:>7.1} MB  ×ctr {vs_ctr:>5}  ×floor {vs_floor:>5}{}",
            m.cpu,
            m.rss_mib,
            m.written_mb,
            Versus::printed(versus.as_ref())
        );
        report.row(
            &[
                wname,
                c,
                &wall,
                &format!("{:.3}", m.cpu),
                &format!("{:.1}", m.rss_mib),
                &format!("{:.1}", m.written_mb),
                &vs_ctr,
                &vs_floor,
            ],
            versus.as_ref(),
        );
    }
}

/// W4: the same archive again, its content present: as a repeated command (the unchanged
/// archive is recalled, not read) and forced (read, hashed, nothing written); each airlift
/// binary against its own first import in `rows`.
fn w4(
    report: &mut Report,
    ctd: &Containerd,
    bins: &Bins,
    file: &Path,
    scratch: &Path,
    runs: usize,
    rows: &[Row],
) {
    let pid = ctd.pid().unwrap();
    let airlifts = bins.airlifts();
    for (label, force) in [("recalled", false), ("--force", true)] {
        let samples = alternating(runs, airlifts.len(), |i| {
            reset(ctd);
            let mut first = airlifts[i].import(ctd, "direct", file, scratch);
            assert!(first.stdout(Stdio::null()).status().unwrap().success());
            let mut again = airlifts[i].import(ctd, "direct", file, scratch);
            if force {
                again.arg("--force");
            }
            measure(&mut again, pid).wall
        });
        let walls: Vec<f64> = samples.into_iter().map(median).collect();
        for (a, w4) in airlifts.iter().zip(&walls) {
            let name = a.label("airlift direct");
            let first = rows.iter().find(|r| r.name == name).map(|r| r.median.wall);
            let share = first.map(|f| w4 / f * 100.0).unwrap_or(0.0);
            let versus = (!a.baseline && walls.len() > 1).then(|| Versus::walls(*w4, walls[1]));
            println!(
                "  W4 (W1 .tar.zst again, content present, {label}): {name} wall {w4:.3} s = {share:.1} % of the first import{}",
                Versus::printed(versus.as_ref())
            );
            report.row(
                &[
                    &format!("W4 (W1 .tar.zst again, {label})"),
                    &name,
                    &format!("{w4:.3}"),
                    "",
                    "",
                    "",
                    "",
                    &format!("{share:.1} % of W1"),
                ],
                versus.as_ref(),
            );
        }
    }
}
