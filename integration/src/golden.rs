//! The golden table, `integration/fixtures/expected.tsv`: what containerd's own importer makes
//! of each fixture. Read by the archive-side tests (`integration/tests/fixtures.rs`) and the
//! end-to-end tests, and checked against live containerd (`integration/tests/ctr.rs`).

use crate::fixtures_dir;
use std::path::PathBuf;

/// One row of the golden table, `integration/fixtures/expected.tsv`: an image record
/// containerd's own importer makes of a fixture (`--all-platforms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The fixture's stem: its file name up to the first `.` (every compression of it).
    pub stem: String,
    /// The `--base-name` the fixture needs (it names its images by tag only).
    pub base_name: Option<String>,
    /// The image name.
    pub name: String,
    /// The target's media type.
    pub media_type: String,
    /// The target's digest.
    pub digest: String,
}

/// Every row of the golden table.
pub fn golden() -> Vec<Expected> {
    let path = fixtures_dir().join("expected.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
            [stem, base, name, media_type, digest] => Expected {
                stem: stem.into(),
                base_name: (base != "-").then(|| base.into()),
                name: name.into(),
                media_type: media_type.into(),
                digest: digest.into(),
            },
            _ => panic!("{}: not 5 tab-separated columns: {l:?}", path.display()),
        })
        .collect()
}

/// The golden rows of a fixture file (any compression of it), sorted by name; panics when the
/// table has none.
pub fn golden_for(fixture: &str) -> Vec<Expected> {
    let stem = fixture.split('.').next().unwrap();
    let mut rows: Vec<Expected> = golden().into_iter().filter(|r| r.stem == stem).collect();
    assert!(
        !rows.is_empty(),
        "integration/fixtures/expected.tsv has no row for {fixture}"
    );
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Expected `(name, target digest)` pairs for a fixture file, sorted.
pub fn expected(fixture: &str) -> Vec<(String, String)> {
    golden_for(fixture)
        .into_iter()
        .map(|r| (r.name, r.digest))
        .collect()
}

/// The `--base-name` a fixture file needs, if any.
pub fn base_name(fixture: &str) -> Option<String> {
    golden_for(fixture).swap_remove(0).base_name
}

/// The target digest the golden table gives image `name` of a fixture file.
pub fn expected_target(fixture: &str, name: &str) -> String {
    match golden_for(fixture).into_iter().find(|r| r.name == name) {
        Some(r) => r.digest,
        None => panic!("expected.tsv has no image {name} for {fixture}"),
    }
}

/// Files of `integration/fixtures` that are not fixture archives.
const NOT_FIXTURES: [&str; 3] = ["README.md", "SHA256SUMS", "expected.tsv"];

/// Every fixture archive (every file of `integration/fixtures` but the README, the checksums and
/// the golden table), sorted. Panics if one has no row in the golden table.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !NOT_FIXTURES.iter().any(|n| p.ends_with(n)))
        .collect();
    v.sort();
    for p in &v {
        golden_for(&p.file_name().unwrap().to_string_lossy());
    }
    v
}
