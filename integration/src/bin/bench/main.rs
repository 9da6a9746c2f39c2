//! airlift's benchmark: airlift against containerd's own importer and the physical floor, on
//! workloads generated deterministically (by [`airlift_integration::archives`], cached in
//! `.cache/bench/v2/`), in one run on one throwaway containerd 2.x.
//!
//! `bench [--runs N] [--only W1,W3,...,U,P,S] [--out FILE] [--baseline BIN]` — see
//! `integration/bench.sh`, which provisions containerd and builds everything in release mode
//! first.
//!
//! Each contender is measured `--runs` times (default 3) with the namespace reset in between
//! (images and leases removed, garbage collected); medians are printed, with ratios to
//! `ctr --local` and to the floor. CPU time and bytes written include containerd's share.
//!
//! One module per suite: [`imports`] (W1, W2, W3, W6, and W4), [`restart`] (W5), [`unpack`]
//! (U), [`proxy`] (P), [`serve`] (S); beside them [`workloads`] (generation), [`contenders`]
//! (the binaries, their commands, containerd), [`measure`] and [`report`].

mod contenders;
mod imports;
mod measure;
mod proxy;
mod report;
mod restart;
mod serve;
mod unpack;
mod workloads;

use clap::Parser;
use contenders::{containerd, Bins};
use report::Report;
use std::path::PathBuf;
use workloads::{Workloads, IMPORTS};

/// The suites that are not import workloads, as `--only` names them.
const SUITES: [&str; 4] = ["W5", "U", "P", "S"];

/// airlift's benchmark: airlift against `ctr images import` and the physical floor.
///
/// On generated workloads (cached in `.cache/bench/v2/`), on a throwaway containerd 2.x, each
/// contender run `--runs` times with the namespace reset in between; medians printed. Run it
/// through `integration/bench.sh`, which provisions containerd and builds the binaries first.
#[derive(Parser)]
#[command(name = "bench")]
struct Args {
    /// Runs per figure; the figures are their medians.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,

    /// Only these suites, comma-separated (default: all).
    ///
    /// The import workloads by a prefix of their name: W1 (the three W1 archives, and W4 with
    /// W1 .tar.zst), W2, W3, W6; then W5 (a daemon restarted over unchanged archives), U
    /// (import and unpack), P (the content proxy), S (serving blobs).
    #[arg(long, value_name = "SUITES", value_delimiter = ',')]
    only: Option<Vec<String>>,

    /// Also write the figures as Markdown tables to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Another airlift binary (an older build) measured beside this tree's, on W1–W6 and U.
    ///
    /// Both are run the same way, each with a state directory of its own, taken in turn run by
    /// run; airlift's rows get the ratios current / baseline of wall and CPU time, and the run
    /// ends with their geometric mean.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
}

impl Args {
    /// Whether `--only` selects the suite `name` (one of [`SUITES`]).
    fn suite(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    }

    /// Whether `--only` selects the import workload labelled `label`.
    fn workload(&self, label: &str) -> bool {
        let only = self.only.as_ref();
        only.is_none_or(|o| o.iter().any(|x| label.starts_with(x.as_str())))
    }
}

fn main() {
    let args = Args::parse();
    for x in args.only.iter().flatten() {
        if !SUITES.contains(&x.as_str()) && !IMPORTS.iter().any(|(l, _)| l.starts_with(x.as_str()))
        {
            eprintln!("--only {x}: no such suite or workload");
        }
    }
    let target = airlift_integration::repo_root().join("target/release");
    let bins = Bins {
        airlift: target.join("airlift"),
        baseline: args.baseline.clone(),
        floor: target.join("floor"),
    };
    assert!(
        bins.airlift.exists() && bins.floor.exists(),
        "build first: cargo build --release -p airlift -p airlift-integration"
    );
    if let Some(b) = &bins.baseline {
        assert!(b.is_file(), "--baseline {}: no such file", b.display());
    }
    let workloads = Workloads::new(airlift_integration::cache_dir().join("bench").join("v2"));
    let ctd = containerd(None);
    let version = ctd.server_version().unwrap_or_default();
    let machine = report::machine(&version, args.runs);
    println!("machine: {machine}");
    if let Some(b) = &bins.baseline {
        println!("baseline: {}", b.display());
    }
    let mut report = Report::new(&machine, bins.baseline.as_deref());
    let runs = args.runs;
    imports::run(
        &mut report,
        &ctd,
        &bins,
        &workloads,
        |l| args.workload(l),
        runs,
    );
    if args.suite("W5") {
        restart::run(&mut report, &ctd, &bins, &workloads);
    }
    if args.suite("U") {
        unpack::run(&mut report, &ctd, &bins, &workloads, runs);
    }
    if args.suite("P") {
        drop(ctd);
        proxy::run(&mut report, &bins, &workloads, runs);
    }
    if args.suite("S") {
        serve::run(&mut report, &bins, &workloads, runs);
    }
    if let Some(summary) = report.summary() {
        println!("\n{summary}");
    }
    if let Some(out) = &args.out {
        std::fs::write(out, report.markdown()).unwrap();
        eprintln!("table written to {}", out.display());
    }
}
