//! The commands that talk to a running daemon over its API socket: `status`, `ls`, `wait`,
//! `forget` and `import --daemon`.

use super::args::{ForgetArgs, ImportArgs, LsArgs, StatusArgs, WaitArgs};
use super::output;
use crate::api::{self, proto, ApiClient};
use crate::import::Source;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

async fn client(socket: &std::path::Path) -> Result<ApiClient, ExitCode> {
    api::connect(socket).await.map_err(|e| {
        eprintln!("airlift: {e}");
        ExitCode::FAILURE
    })
}

/// `airlift status`.
pub async fn status(args: StatusArgs) -> ExitCode {
    let mut c = match client(&args.socket.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.status(proto::StatusRequest {}).await {
        Ok(r) => {
            let s = r.into_inner();
            if args.json {
                println!("{}", output::status_json(&s));
            } else {
                print!("{}", output::status_text(&s));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlift: status: {}", e.message());
            ExitCode::FAILURE
        }
    }
}

/// `airlift ls`.
pub async fn ls(args: LsArgs) -> ExitCode {
    let mut c = match client(&args.socket.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let list = match c.list(proto::ListRequest {}).await {
        Ok(r) => r.into_inner().archives,
        Err(e) => {
            eprintln!("airlift: ls: {}", e.message());
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let v: Vec<serde_json::Value> = list.iter().map(output::archive_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print!("{}", output::archive_table(&list));
    }
    ExitCode::SUCCESS
}

/// `airlift wait`: until the startup import is done or, with `--image`, until those images are
/// imported and pinned.
pub async fn wait(args: WaitArgs) -> ExitCode {
    let deadline = (args.timeout > 0.0)
        .then(|| std::time::Instant::now() + Duration::from_secs_f64(args.timeout));
    let mut missing = Vec::new();
    let mut served_only = Vec::new();
    loop {
        if let Ok(mut c) = api::connect(&args.socket.socket).await {
            if args.images.is_empty() {
                if let Ok(r) = c.status(proto::StatusRequest {}).await {
                    if r.into_inner().startup_done {
                        return ExitCode::SUCCESS;
                    }
                }
            } else {
                let req = proto::ReadyRequest {
                    images: args.images.clone(),
                };
                match c.ready(req).await {
                    Ok(r) if r.get_ref().ready => return ExitCode::SUCCESS,
                    Ok(r) => {
                        let r = r.into_inner();
                        missing = r.missing;
                        served_only = r.served_only;
                    }
                    Err(e) if e.code() == tonic::Code::InvalidArgument => {
                        eprintln!("airlift: wait: {}", e.message());
                        return ExitCode::from(2);
                    }
                    Err(_) => {}
                }
            }
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            let what = if args.images.is_empty() {
                "did not finish its startup import".to_string()
            } else {
                let runs: Vec<&String> = missing
                    .iter()
                    .filter(|m| !served_only.contains(m))
                    .collect();
                let mut what = Vec::new();
                if !runs.is_empty() {
                    let runs: Vec<&str> = runs.iter().map(|s| s.as_str()).collect();
                    what.push(format!("has not imported and pinned {}", runs.join(", ")));
                }
                if !served_only.is_empty() {
                    what.push(format!(
                        "holds {} only to serve other platforms (serve_platforms): this node runs none of its platforms",
                        served_only.join(", ")
                    ));
                }
                what.join(", and ")
            };
            eprintln!(
                "airlift: wait: the daemon at {} {what} within {} s",
                crate::escape::shown(&args.socket.socket),
                args.timeout
            );
            return ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `airlift forget`.
pub async fn forget(args: ForgetArgs) -> ExitCode {
    let mut c = match client(&args.socket.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = std::path::absolute(&args.file).unwrap_or(args.file.clone());
    let req = proto::ForgetRequest {
        path: crate::escape::shown(&path).to_string(),
    };
    match c.forget(req).await {
        Ok(r) => {
            for name in r.into_inner().unpinned {
                println!("unpinned {name}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlift: forget: {}", e.message());
            ExitCode::FAILURE
        }
    }
}

/// `airlift import --daemon`: the daemon imports (and from then on tracks) the file.
pub async fn import(args: ImportArgs) -> ExitCode {
    let path = match std::fs::canonicalize(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("airlift: {}: {e}", args.file);
            return ExitCode::FAILURE;
        }
    };
    let mut c = match client(&args.socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = proto::ImportRequest {
        path: crate::escape::shown(&path).to_string(),
    };
    let mut stream = match c.import(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            eprintln!("airlift: {}", e.message());
            return ExitCode::FAILURE;
        }
    };
    let bar = (!args.json && std::io::stderr().is_terminal())
        .then(|| output::progress_bar(&Source::File(path.clone())));
    let mut last = None;
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if let Some(bar) = &bar {
                    bar.set_position(p.bytes_read);
                }
                if p.done {
                    last = p.archive;
                }
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("airlift: {}: {}", crate::escape::shown(&path), e.message());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let Some(a) = last else {
        eprintln!(
            "airlift: {}: the daemon did not report a result",
            crate::escape::shown(&path)
        );
        return ExitCode::FAILURE;
    };
    let state = api::state_name(a.state);
    if args.json {
        println!("{}", output::archive_json(&a));
    } else {
        for i in &a.images {
            println!("{i}");
        }
        println!(
            "{}: {state}; {} images in {:.2} s",
            a.path,
            a.images.len(),
            a.duration_seconds
        );
    }
    if state == "imported" {
        ExitCode::SUCCESS
    } else {
        eprintln!("airlift: {}: {}", a.path, a.last_error);
        ExitCode::FAILURE
    }
}
