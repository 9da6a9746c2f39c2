//! U: W1 (`.tar` and `.tar.zst`) imported and unpacked into overlayfs. `airlift import
//! --unpack` against `ctr images import --local` (which unpacks, one layer after another once
//! all content is written), and against the two halves alone: `airlift import` without
//! unpacking, and unpacking alone (`ctr images mount` of each image after that import, then
//! unmounted). The overlap works when airlift's wall time is close to the slower half.

use crate::contenders::{ctr_import, reset, Airlift, Bins, NS};
use crate::measure::{group, measure, Sample};
use crate::report::{self, Report, Versus};
use crate::workloads::Workloads;
use airlift_integration::Containerd;
use std::process::{Command, Stdio};

/// One contender of U.
enum Contender<'a> {
    /// `airlift import --unpack`.
    Unpack(Airlift<'a>),
    /// `ctr images import --local`, unpacking.
    Ctr,
    /// `airlift import`, not unpacking.
    Import(Airlift<'a>),
    /// `ctr images mount` and unmount of every image, after an `airlift import`.
    Mount,
}

impl Contender<'_> {
    fn name(&self) -> String {
        match self {
            Contender::Unpack(a) => a.label("airlift --unpack"),
            Contender::Ctr => "ctr --local, unpacking".into(),
            Contender::Import(a) => a.label("airlift import alone"),
            Contender::Mount => "unpacking alone".into(),
        }
    }
}

/// Measures U, `runs` times each; airlift's contenders each beside the baseline's.
pub fn run(report: &mut Report, ctd: &Containerd, bins: &Bins, workloads: &Workloads, runs: usize) {
    let pid = ctd.pid().unwrap();
    let scratch = ctd.root().join("scratch-unpack");
    std::fs::create_dir_all(&scratch).unwrap();
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount_all = format!(
        "set -e; for i in $({ctr} -n {NS} images ls -q); do {ctr} -n {NS} images mount $i {m} >/dev/null; {ctr} -n {NS} images unmount --rm {m} >/dev/null; done",
        ctr = format!("{:?} --address {:?}", ctd.ctr().get_program(), ctd.address()),
        m = mnt.display()
    );
    let groups = [
        bins.airlifts().into_iter().map(Contender::Unpack).collect(),
        vec![Contender::Ctr],
        bins.airlifts().into_iter().map(Contender::Import).collect(),
        vec![Contender::Mount],
    ];
    let names: Vec<String> = groups.iter().flatten().map(Contender::name).collect();
    let width = report::width(&names, 24);
    for (wname, file) in [("W1 .tar", "w1.tar"), ("W1 .tar.zst", "w1.tar.zst")] {
        let file = workloads.file(file);
        println!("\nU {wname}: import and unpack");
        let mut rows: Vec<(String, Sample, Option<Versus>)> = Vec::new();
        for contenders in &groups {
            let medians = group(runs, contenders.len(), |i| {
                reset(ctd);
                let mut c = match &contenders[i] {
                    Contender::Unpack(a) => {
                        let mut c = a.import(ctd, "direct", &file, &scratch);
                        c.arg("--unpack");
                        c
                    }
                    Contender::Ctr => ctr_import(ctd, &file, true, true),
                    Contender::Import(a) => a.import(ctd, "direct", &file, &scratch),
                    Contender::Mount => {
                        let mut first = bins.current().import(ctd, "direct", &file, &scratch);
                        assert!(first.stdout(Stdio::null()).status().unwrap().success());
                        let mut sh = Command::new("bash");
                        sh.arg("-c").arg(&mount_all);
                        sh
                    }
                };
                measure(&mut c, pid)
            });
            for (c, (m, baseline)) in contenders.iter().zip(medians) {
                rows.push((c.name(), m, baseline.map(|b| Versus::samples(&m, &b))));
            }
        }
        let wall = |n: &str| rows.iter().find(|(c, ..)| c == n).map(|(_, m, _)| m.wall);
        let ctr = wall("ctr --local, unpacking").unwrap();
        let slower = wall("airlift import alone")
            .unwrap()
            .max(wall("unpacking alone").unwrap());
        for (c, m, versus) in &rows {
            let shown = report::wall(m);
            println!(
                "  {c:<width$} wall {shown:>8} s  cpu {:>7.3} s  ×ctr {:>5.2}  ×slower half {:>5.2}{}",
                m.cpu,
                m.wall / ctr,
                m.wall / slower,
                Versus::printed(versus.as_ref())
            );
            report.unpack_row(
                &[
                    wname,
                    c,
                    &shown,
                    &format!("{:.3}", m.cpu),
                    &format!("{:.2}", m.wall / ctr),
                    &format!("{:.2}", m.wall / slower),
                ],
                versus.as_ref(),
            );
        }
    }
    reset(ctd);
}
