//! The state formats airlift has written, read from their golden directories
//! (`integration/golden/state-v<N>/`, made by the airlift of that format): every record reads,
//! what this airlift writes of one differs from it only by its `format`, and a record of a
//! newer format is refused and left as it is.

use super::*;
use std::collections::BTreeMap;

/// The golden state directory of `format`: `<repo>/integration/golden/state-v<format>`.
fn golden(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/golden")
        .join(format!("state-v{format}/var/lib/airlift"))
}

/// The record files of a golden state directory, by archive file name.
fn files(format: u32) -> BTreeMap<String, PathBuf> {
    let dir = golden(format).join("archives");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let file = e.unwrap().path();
        let r: Record = serde_json::from_slice(&fs::read(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = r.path.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, file);
    }
    out
}

#[test]
fn every_format_airlift_has_written_reads() {
    for format in 1..=FORMAT {
        let loaded = Records::open(&golden(format)).unwrap().load_all().unwrap();
        assert!(
            loaded.refused.is_empty(),
            "format {format}: {:?}",
            loaded.refused
        );
        let by_name: BTreeMap<String, Record> = loaded
            .records
            .into_iter()
            .map(|r| (r.path.file_name().unwrap().to_string_lossy().into(), r))
            .collect();
        let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["app.tar", "broken.tar", "drop.tar", "tools.tar"],
            "format {format}"
        );
        let app = &by_name["app.tar"];
        assert_eq!(app.outcome, Outcome::Imported, "format {format}: {app:?}");
        assert_eq!(app.names().count(), 2, "format {format}: {app:?}");
        assert_eq!(app.unpacked_into, "overlayfs", "format {format}: {app:?}");
        let lease = crate::labels::archive_lease(&app.path);
        assert_eq!(
            app.lease.as_deref(),
            Some(lease.as_str()),
            "format {format}"
        );
        let broken = &by_name["broken.tar"];
        assert_eq!(broken.outcome, Outcome::Failed, "format {format}");
        assert!(
            !broken.last_error.is_empty() && broken.identity.size > 0,
            "{broken:?}"
        );
        assert!(by_name["drop.tar"].intake, "format {format}");
        assert!(!by_name["tools.tar"].intake, "format {format}");
    }
}

#[test]
fn what_this_airlift_writes_differs_only_by_its_format() {
    // An older airlift reads a record this one writes as it read its own: the same fields with
    // the same values, and `format`, which it does not know and skips.
    for format in 1..=FORMAT {
        for (name, file) in files(format) {
            let golden: serde_json::Value =
                serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
            let record: Record = serde_json::from_value(golden.clone()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let records = Records::open(dir.path()).unwrap();
            records.save(&record).unwrap();
            let written = fs::read(records.file(&record.path)).unwrap();
            let mut written: serde_json::Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(written["format"], FORMAT, "{name}");
            written.as_object_mut().unwrap().remove("format");
            let mut golden = golden;
            golden.as_object_mut().unwrap().remove("format");
            assert_eq!(
                written, golden,
                "format {format}, {name}: a field was added, removed or changed; decide whether \
                 older airlifts read it right (then update the golden directory) or whether it \
                 is a new format (then FORMAT + 1, a new golden directory, RELIABILITY.md)"
            );
        }
    }
}

#[test]
fn a_record_of_a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (_, file) = files(FORMAT).into_iter().next().unwrap();
    let mut newer: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    newer["format"] = (FORMAT + 1).into();
    // A newer format may change any field's meaning: this one no longer reads as a record.
    newer["images"] = "changed".into();
    let text = serde_json::to_vec_pretty(&newer).unwrap();
    let archive = crate::escape::unescape(newer["path"].as_str().unwrap()).unwrap();
    let at = records.file(&archive);
    fs::write(&at, &text).unwrap();

    let loaded = records.load_all().unwrap();
    assert!(loaded.records.is_empty());
    let refused = &loaded.refused[..];
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].archive.as_deref(), Some(archive.as_path()));
    let said = refused[0].to_string();
    for part in [
        at.display().to_string(),
        format!("state format {}", FORMAT + 1),
        format!("reads formats up to {FORMAT}"),
    ] {
        assert!(said.contains(&part), "{said:?} does not say {part:?}");
    }
    assert_eq!(records.refused(&archive).as_ref(), Some(&refused[0]));
    assert_eq!(records.get(&archive), None);

    // Neither replaced nor removed.
    let mine = Record::new(&archive, Identity::default());
    let err = records.save(&mine).unwrap_err().to_string();
    assert!(
        err.contains(&format!("state format {}", FORMAT + 1)),
        "{err}"
    );
    let err = records.remove(&archive).unwrap_err().to_string();
    assert!(err.contains("left as it is"), "{err}");
    assert_eq!(fs::read(&at).unwrap(), text);

    // Records without a format are format 1; format 0 does not exist.
    let mut v0 = newer.clone();
    v0["format"] = 0.into();
    fs::write(&at, serde_json::to_vec(&v0).unwrap()).unwrap();
    let loaded = records.load_all().unwrap();
    assert!(loaded.records.is_empty() && loaded.refused.is_empty());
}
