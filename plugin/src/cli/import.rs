//! `airlift import FILE`: one request to the [`Importer`] ([`Importer::run`]: recall or import,
//! the record kept, leftovers cleaned), with a progress bar and a summary.

use super::args::ImportArgs;
use super::output;
use crate::import::Source;
use crate::service::{Connection, Importer, Patience, Remember, Request, Socket};
use crate::state::Records;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The exit status of an import whose images are imported but not (all) unpacked.
pub const UNPACK_FAILED: u8 = 3;

/// Runs `airlift import`.
pub async fn run(args: ImportArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("airlift: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(asked) = args.asked() {
        for note in asked.platform_notes() {
            let note = note
                .replace("platforms = [\"all\"]", "--all-platforms")
                .replace("serve_platforms", "--serve-platform");
            eprintln!("airlift: note: {note}");
        }
    }
    let source = if args.file == "-" {
        Source::Stdin
    } else {
        Source::File(PathBuf::from(&args.file))
    };
    // Imports are remembered apart from the daemon's records (standard input and pipes are
    // never recalled).
    let records = match &source {
        Source::File(p) if std::fs::metadata(p).is_ok_and(|m| m.is_file()) => {
            Records::open(&args.state_dir.join("imports")).ok()
        }
        _ => None,
    };
    let socket = Socket {
        address: args.containerd.address.clone(),
        namespace: args.containerd.namespace.clone(),
        timeout: Duration::from_secs(args.connect_timeout),
    };
    let connection = Connection::new(Box::new(socket), Patience::Once, opts.cancel.clone());
    let importer = Importer::new(opts, records, Remember::Successes, connection);
    let req = Request {
        force: args.force,
        ..Request::default()
    };
    let bar =
        (!args.json && std::io::stderr().is_terminal()).then(|| output::progress_bar(&source));
    let ticker = bar.clone().map(|bar| {
        let progress = req.progress.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let result = importer.run(&source, &req).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "archive": source.display_name(), "error": e.to_string() })
                );
            }
            eprintln!("airlift: {e}");
            ExitCode::FAILURE
        }
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serialises")
                );
            } else {
                output::print_report(&report);
            }
            if !report.ok() {
                ExitCode::FAILURE
            } else if report.unpack_error().is_some() {
                // Imported, pinned and recorded; only unpacking failed.
                ExitCode::from(UNPACK_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
