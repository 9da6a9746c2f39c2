//! `airlift mirrors`: writes (or, with `--remove`, takes away) containerd's hosts.toml files
//! through [`crate::mirrors`], and says what it did to each file.

use super::args::MirrorsArgs;
use crate::escape::shown;
use crate::mirrors::{self, Action, Options, Report, BACKUP};
use std::process::ExitCode;

/// What one change is called in the output.
fn describe(action: &Action) -> &'static str {
    match action {
        Action::Created => "created",
        Action::Replaced => "replaced",
        Action::Updated => "updated",
        Action::Unchanged => "unchanged",
        Action::Restored => "restored",
        Action::Removed => "removed",
    }
}

/// Prints a report: one line per file, warnings on standard error.
pub fn print(report: &Report) {
    for w in &report.warnings {
        eprintln!("airlift: warning: {w}");
    }
    for c in &report.changes {
        let path = shown(&c.path);
        match c.action {
            Action::Replaced => println!("replaced {path} (the old file kept as {BACKUP})"),
            Action::Restored => println!("restored {path} (from {BACKUP})"),
            ref a => println!("{} {path}", describe(a)),
        }
    }
}

/// `airlift mirrors`.
pub fn run(args: MirrorsArgs) -> ExitCode {
    let result = if args.remove {
        mirrors::remove(&args.hosts_dir)
    } else if args.registries.is_none() && args.peers.is_empty() {
        eprintln!("airlift: mirrors: nothing to write: give --registries FILE and/or --peer URL (or --remove)");
        return ExitCode::from(2);
    } else {
        let opts = Options {
            registries: args.registries.clone(),
            hosts_dir: args.hosts_dir.clone(),
            peers: args.peers.clone(),
        };
        if args.dry_run {
            return match mirrors::render(&opts) {
                Ok((files, warnings)) => {
                    for w in &warnings {
                        eprintln!("airlift: warning: {w}");
                    }
                    for (dir, text) in files {
                        let path = args.hosts_dir.join(dir).join("hosts.toml");
                        println!("## {}\n{text}", shown(&path));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("airlift: mirrors: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        mirrors::apply(&opts)
    };
    match result {
        Ok(report) => {
            print(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlift: mirrors: {e}");
            ExitCode::FAILURE
        }
    }
}
