//! Reporting: the machine line, the Markdown tables `--out` writes (the main one and U's), the
//! figures formatted alike in both, and the comparison of airlift with the baseline.

use crate::measure::Sample;
use std::path::Path;

/// The Markdown report, gathered while the suites run.
pub struct Report {
    head: String,
    main: String,
    unpack: String,
    baseline: bool,
    /// The wall-time ratios current / baseline, with what they were measured on.
    compared: Vec<(String, f64)>,
}

/// The columns the baseline adds to a table.
const VERSUS_HEADER: &str = " × baseline, wall | × baseline, CPU |";
const VERSUS_ALIGN: &str = "---:|---:|";

impl Report {
    pub fn new(machine: &str, baseline: Option<&Path>) -> Report {
        let mut head = format!("Machine: {machine}.\n\n");
        if let Some(b) = baseline {
            head.push_str(&format!("Baseline: `{}`.\n\n", b.display()));
        }
        Report {
            head,
            main: String::new(),
            unpack: String::new(),
            baseline: baseline.is_some(),
            compared: Vec::new(),
        }
    }

    /// A row of the main table; `versus` fills the baseline's columns (empty without).
    pub fn row(&mut self, cells: &[&str], versus: Option<&Versus>) {
        let row = self.line(cells, versus);
        self.main += &row;
    }

    /// A row of U's table; `versus` fills the baseline's columns (empty without).
    pub fn unpack_row(&mut self, cells: &[&str], versus: Option<&Versus>) {
        let row = self.line(cells, versus);
        self.unpack += &row;
    }

    /// The Markdown line of a row, its comparison with the baseline kept for the summary.
    fn line(&mut self, cells: &[&str], versus: Option<&Versus>) -> String {
        let mut cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
        if self.baseline {
            let [wall, cpu] = versus.map(Versus::cells).unwrap_or_default();
            cells.extend([wall, cpu]);
        }
        if let Some(v) = versus.filter(|v| v.ok) {
            self.compared
                .push((format!("{}, {}", cells[0], cells[1]), v.wall));
        }
        markdown_row(&cells)
    }

    /// The whole report: the machine, the main table, U's table if U ran, and with a baseline,
    /// the summary of the comparison.
    pub fn markdown(&self) -> String {
        let mut out = self.head.clone();
        let versus = |header: &str, align: &str| {
            if self.baseline {
                format!("{header}{VERSUS_HEADER}\n{align}{VERSUS_ALIGN}\n")
            } else {
                format!("{header}\n{align}\n")
            }
        };
        out += &versus(
            "| workload | contender | wall s | CPU s | peak RSS MiB | written MB | × ctr --local | × floor |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        );
        out += &self.main;
        if !self.unpack.is_empty() {
            out += "\n";
            out += &versus(
                "| U workload | contender | wall s | CPU s | × ctr --local, unpacking | × the slower half |",
                "|---|---|---:|---:|---:|---:|",
            );
            out += &self.unpack;
        }
        if let Some(summary) = self.summary() {
            out += &format!("\n{summary}.\n");
        }
        out
    }

    /// With a baseline: how airlift's wall times compare with it over every figure measured.
    pub fn summary(&self) -> Option<String> {
        if !self.baseline || self.compared.is_empty() {
            return None;
        }
        let n = self.compared.len() as f64;
        let mean = (self.compared.iter().map(|(_, r)| r.ln()).sum::<f64>() / n).exp();
        let by_ratio = |a: &&(String, f64), b: &&(String, f64)| a.1.total_cmp(&b.1);
        let (low, high) = (
            self.compared.iter().min_by(by_ratio).unwrap(),
            self.compared.iter().max_by(by_ratio).unwrap(),
        );
        Some(format!(
            "airlift against the baseline, wall time: {mean:.2} × (geometric mean of {} figures), from {:.2} × ({}) to {:.2} × ({})",
            self.compared.len(),
            low.1,
            low.0,
            high.1,
            high.0
        ))
    }
}

/// A Markdown table row; an empty cell is written `| |`.
fn markdown_row(cells: &[String]) -> String {
    let mut row = String::from("|");
    for c in cells {
        if c.is_empty() {
            row += " |";
        } else {
            row += &format!(" {c} |");
        }
    }
    row + "\n"
}

/// airlift's figures against the baseline's: current / baseline.
pub struct Versus {
    ok: bool,
    wall: f64,
    cpu: Option<f64>,
}

impl Versus {
    /// Wall and CPU time; not ok when either failed.
    pub fn samples(current: &Sample, baseline: &Sample) -> Versus {
        Versus {
            ok: current.ok && baseline.ok,
            wall: current.wall / baseline.wall,
            cpu: Some(current.cpu / baseline.cpu),
        }
    }

    /// Wall time alone.
    pub fn walls(current: f64, baseline: f64) -> Versus {
        Versus {
            ok: true,
            wall: current / baseline,
            cpu: None,
        }
    }

    fn cells(&self) -> [String; 2] {
        match (self.ok, self.cpu) {
            (false, _) => ["—".into(), "—".into()],
            (true, cpu) => [
                format!("{:.2}", self.wall),
                cpu.map(|c| format!("{c:.2}")).unwrap_or_default(),
            ],
        }
    }

    /// The comparison as printed at the end of a contender's line (nothing without one).
    pub fn printed(versus: Option<&Versus>) -> String {
        match versus.map(Versus::cells) {
            None => String::new(),
            Some([wall, cpu]) if cpu.is_empty() => format!("  ×baseline {wall}"),
            Some([wall, cpu]) => format!("  ×baseline {wall} (cpu {cpu})"),
        }
    }
}

/// A median wall time as printed: seconds, or `failed`.
pub fn wall(m: &Sample) -> String {
    if m.ok {
        format!("{:.3}", m.wall)
    } else {
        "failed".into()
    }
}

/// The width of a contender column: the longest of `names`, at least `min`.
pub fn width<S: AsRef<str>>(names: &[S], min: usize) -> usize {
    names
        .iter()
        .map(|n| n.as_ref().chars().count())
        .fold(min, usize::max)
}

/// What the figures were measured on: cores, CPU model, containerd's version, runs per figure.
pub fn machine(containerd_version: &str, runs: usize) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "{cores} cores, {model}, containerd {containerd_version}, {runs} runs per figure (median)"
    )
}
