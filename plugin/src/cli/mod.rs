//! The command line: `airlift import` (modelled on `ctr images import`), `airlift serve`,
//! `airlift mirrors`, `airlift verify`, and the commands that ask a running daemon. A thin
//! adapter: [`args`] parses, [`import`], [`daemon`], [`mirrors`] and [`verify`] call the
//! library, [`output`] prints; [`generate`] writes the man pages and completions.

pub mod args;
pub mod daemon;
pub mod generate;
pub mod import;
pub mod mirrors;
pub mod output;
pub mod verify;

use crate::config::LogFormat;
use args::{Cli, Command, ServeArgs};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse_words(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match cli.command {
        Command::Import(args) => {
            init_logging("warn", LogFormat::Text);
            if args.daemon {
                runtime.block_on(daemon::import(args))
            } else {
                runtime.block_on(import::run(args))
            }
        }
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Status(args) => runtime.block_on(daemon::status(args)),
        Command::Ls(args) => runtime.block_on(daemon::ls(args)),
        Command::Wait(args) => runtime.block_on(daemon::wait(args)),
        Command::Forget(args) => runtime.block_on(daemon::forget(args)),
        Command::Verify(args) => {
            init_logging("warn", LogFormat::Text);
            runtime.block_on(verify::run(args))
        }
        Command::Mirrors(args) => mirrors::run(args),
        Command::Generate(args) => generate::run(args),
    };
    drop(runtime);
    crate::liveness::release();
    code
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLIFT_LOG")
        .unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// `airlift serve`: the daemon until SIGTERM or SIGINT.
async fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlift: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging("info", cfg.log_format);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match crate::daemon::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("airlift: {e}");
            ExitCode::FAILURE
        }
    }
}
