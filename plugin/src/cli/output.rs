//! What the command line prints: the import summary, the progress bar, the daemon's archives.

use crate::api::proto;
use crate::import::{Outcome, Report, Source};

/// A progress bar on standard error for reading `source`.
pub fn progress_bar(source: &Source) -> indicatif::ProgressBar {
    let len = match source {
        Source::File(p) => std::fs::metadata(p).map(|m| m.len()).ok(),
        Source::Stdin => None,
    };
    let bar = match len {
        Some(len) => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("template"),
        ),
    };
    bar.set_message(format!("importing {}", source.display_name()));
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Formats bytes as MB with one decimal.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The summary of an import: one line per image, the skips and failures, then a total.
pub fn summary(r: &Report) -> String {
    let mut out = String::new();
    for image in &r.images {
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            image.name, image.media_type, image.digest
        ));
    }
    for s in &r.not_selected {
        out.push_str(&format!("not imported (platform not selected): {s}\n"));
    }
    for s in &r.served_only {
        out.push_str(&format!(
            "served only (held for other platforms, not this node's to run): {s}\n"
        ));
    }
    for s in &r.unserved {
        out.push_str(&format!(
            "nothing to serve (no manifest in the archive) for {s}\n"
        ));
    }
    match r.outcome {
        Outcome::Unchanged | Outcome::Repaired => {
            for w in &r.repaired {
                out.push_str(&format!("repaired: {w}\n"));
            }
            let how = if r.outcome == Outcome::Repaired {
                "restored from its record"
            } else {
                "present and pinned"
            };
            out.push_str(&format!(
                "{}: unchanged since its last import; {} images {how}, nothing read ({:.3} s; --force imports anyway)\n",
                r.archive,
                r.images.len(),
                r.seconds
            ));
        }
        Outcome::Imported | Outcome::Partial => {
            let rate = if r.seconds > 0.0 {
                r.archive_bytes as f64 / 1e6 / r.seconds
            } else {
                0.0
            };
            let failed = if r.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed", r.failed.len())
            };
            let mode = r.mode.map_or("no".to_string(), |m| m.to_string());
            out.push_str(&format!(
                "{}: {} images imported{failed}; {} blobs written, {} already present; {} written, {} read in {:.2} s ({rate:.1} MB/s, {mode} mode)\n",
                r.archive,
                r.images.len(),
                r.blobs_written,
                r.blobs_present,
                mb(r.bytes_written),
                mb(r.archive_bytes),
                r.seconds,
            ));
        }
    }
    if let Some(u) = &r.unpack {
        out.push_str(&format!(
            "{}: {} images unpacked into {}; {} layers applied, {} already unpacked ({:.2} s){}\n",
            r.archive,
            u.images.len(),
            u.snapshotter,
            u.layers_applied,
            u.layers_present,
            u.seconds,
            if u.ok() {
                ""
            } else {
                "; some failed (see above)"
            },
        ));
    }
    out
}

/// Prints an import's summary (warnings and errors to standard error).
pub fn print_report(r: &Report) {
    for s in &r.skipped {
        eprintln!("airlift: warning: skipped {s}");
    }
    for f in &r.failed {
        eprintln!("airlift: error: {f}");
    }
    for e in r.unpack.iter().flat_map(|u| &u.errors) {
        eprintln!("airlift: error: unpacking {e} (the images are imported)");
    }
    print!("{}", summary(r));
}

/// One of the daemon's archives as JSON (`airlift ls --json`).
pub fn archive_json(a: &proto::Archive) -> serde_json::Value {
    let shadowed: Vec<serde_json::Value> = a
        .shadowed
        .iter()
        .map(|s| serde_json::json!({ "name": s.name, "by": s.by }))
        .collect();
    serde_json::json!({
        "path": a.path,
        "state": crate::api::state_name(a.state),
        "images": a.images,
        "shadowed": shadowed,
        "intake": a.intake,
        "bytes": a.bytes,
        "duration_seconds": a.duration_seconds,
        "last_error": a.last_error,
        "unpack_error": a.unpack_error,
        "served_only": a.served_only,
        "note": a.note,
        "imported_at": a.imported_at,
        "imports": a.imports,
    })
}

/// The daemon's status as JSON (`airlift status --json`).
pub fn status_json(s: &proto::StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "startup_done": s.startup_done,
        "containerd_connected": s.containerd_connected,
        "archives": s.archives,
        "importing": s.importing,
        "queued": s.queue_length,
        "settling": s.settling,
        "idle": s.startup_done && s.importing == 0 && s.queue_length == 0 && s.settling == 0,
        "restoring": s.restoring,
        "following_events": s.following,
        "repairs": s.repairs.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "archive_bytes_read": s.archive_bytes_read,
        "content_proxy_root": s.content_proxy_root,
        "refused_records": s.refused_records,
    })
}

/// The daemon's status as text (`airlift status`).
pub fn status_text(s: &proto::StatusResponse) -> String {
    let yes_no = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
    let repairs: u64 = s.repairs.values().sum();
    let by: Vec<String> = s
        .repairs
        .iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<17}{v}\n"));
    line(
        "startup import:",
        yes_no(s.startup_done, "done", "in progress").into(),
    );
    line(
        "containerd:",
        yes_no(s.containerd_connected, "connected", "not connected").into(),
    );
    line(
        "events:",
        yes_no(s.following, "followed", "not followed (yet)").into(),
    );
    line("archives:", s.archives.to_string());
    line("importing:", s.importing.to_string());
    line("queued:", s.queue_length.to_string());
    line("settling:", s.settling.to_string());
    line(
        "repairs:",
        if by.is_empty() {
            "0".into()
        } else {
            format!("{repairs} ({})", by.join(", "))
        },
    );
    line("restoring:", s.restoring.to_string());
    line("bytes read:", s.archive_bytes_read.to_string());
    line(
        "refused records:",
        match s.refused_records.len() {
            0 => "0".into(),
            n => format!("{n} (of a newer state format: `airlift ls` names their archives)"),
        },
    );
    out
}

/// The daemon's archives as a table (`airlift ls`).
pub fn archive_table(list: &[proto::Archive]) -> String {
    let mut out = format!(
        "{:<10} {:>7} {:>9} {:>8}  PATH\n",
        "STATE", "IMAGES", "MB", "SECONDS"
    );
    for a in list {
        out.push_str(&format!(
            "{:<10} {:>7} {:>9.1} {:>8.2}  {}\n",
            crate::api::state_name(a.state),
            a.images.len(),
            a.bytes as f64 / 1e6,
            a.duration_seconds,
            a.path
        ));
        if a.intake {
            out.push_str("           intake: the archive was deleted after its import\n");
        }
        for s in &a.shadowed {
            out.push_str(&format!("           {} comes from {}\n", s.name, s.by));
        }
        if !a.last_error.is_empty() {
            out.push_str(&format!("           error: {}\n", a.last_error));
        }
        if !a.unpack_error.is_empty() {
            out.push_str(&format!("           not unpacked: {}\n", a.unpack_error));
        }
        for s in &a.served_only {
            out.push_str(&format!(
                "           {s}: served only (held for other platforms, not this node's)\n"
            ));
        }
        if !a.note.is_empty() {
            out.push_str(&format!("           {}\n", a.note));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKind;

    #[test]
    fn summaries_say_what_happened() {
        let mut r = crate::service::recalled(
            &crate::state::Record::new(std::path::Path::new("/a.tar"), Default::default()),
            Outcome::Unchanged,
            vec![],
            std::time::Instant::now(),
        );
        assert!(summary(&r)
            .contains("/a.tar: unchanged since its last import; 0 images present and pinned"));
        r.outcome = Outcome::Imported;
        r.mode = Some(StoreKind::Direct);
        r.archive_bytes = 2_000_000;
        r.seconds = 1.0;
        let s = summary(&r);
        assert!(s.contains("0 images imported; 0 blobs written"), "{s}");
        assert!(s.contains("(2.0 MB/s, direct mode)"), "{s}");
        let a = proto::Archive {
            path: "/a.tar".into(),
            state: proto::ArchiveState::Failed as i32,
            last_error: "broken".into(),
            ..Default::default()
        };
        let t = archive_table(&[a]);
        assert!(t.contains("failed") && t.contains("error: broken"), "{t}");
    }
}
