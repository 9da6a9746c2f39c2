//! End-to-end: airlift against containerd's own importer, live. Every fixture, in every
//! compression, is imported with `ctr images import --local --all-platforms --no-unpack` into
//! one namespace and with `airlift import --all-platforms` into another, on containerd 2.x and
//! 1.7; the two sets of image records (name → target media type and digest) must be equal, and
//! equal to the golden table `integration/fixtures/expected.tsv` the other tests rely on.
//!
//! `ctr --local` reads a plain tar only: a compressed fixture is decompressed for it first (with
//! the compressor's own tool, as an operator, or k3s, would), while airlift reads the file as
//! it is. A fixture naming its images by tag only is imported with the table's `--base-name` on
//! both sides: ctr then names each such image `<base>:<tag>`, as airlift does (without one, ctr
//! invents a dated `import-<yyyy-mm-dd>` base, airlift skips the images).

mod common;

use airlift_integration::{Containerd, Options, Version};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fixtures plain `ctr images import --all-platforms` refuses, with what its error says. Their
/// golden rows are what containerd's client import with `WithSkipMissing` (k3s's) makes of them.
const CTR_FAILS: [(&str, &str); 1] = [(
    // Its index lists an arm64 manifest the export left out.
    "busybox-amd64-only-ctr-export",
    "content digest sha256:a49e55263e08f9f2102d84f6d88aecfd4da77a17b8382438e2a9ebc88ce4876b: \
     not found",
)];

/// `(name, target media type, target digest)` of an image record, as compared here.
type Record = (String, String, String);

/// The image records of a namespace, sorted.
fn records(rt: &tokio::runtime::Runtime, ctd: &Containerd, namespace: &str) -> Vec<Record> {
    let mut v: Vec<Record> = images(rt, ctd, namespace)
        .into_iter()
        .map(|i| (i.name, i.media_type, i.digest))
        .collect();
    v.sort();
    v
}

/// The golden records of a fixture file, sorted.
fn golden_records(fixture: &str) -> Vec<Record> {
    let mut v: Vec<Record> = golden_for(fixture)
        .into_iter()
        .map(|r| (r.name, r.media_type, r.digest))
        .collect();
    v.sort();
    v
}

/// `path` as a plain tar: itself, or decompressed into `dir` by the tool its magic bytes call
/// for.
fn plain_tar(path: &Path, dir: &Path) -> PathBuf {
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(path).unwrap(), &mut magic).unwrap();
    let tool: &[&str] = match magic {
        [0x28, 0xb5, 0x2f, 0xfd] => &["zstd", "-dc", "--long=31"],
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        [0x04, 0x22, 0x4d, 0x18] => &["lz4", "-dc"],
        [b'B', b'Z', b'h', _] => &["bzip2", "-dc"],
        _ => return path.to_path_buf(),
    };
    let out = dir.join(format!(
        "{}.tar",
        path.file_name().unwrap().to_string_lossy()
    ));
    let status = Command::new(tool[0])
        .args(&tool[1..])
        .arg(path)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (is {} installed?)", path.display(), tool[0]));
    assert!(status.success(), "{tool:?} {}: {status}", path.display());
    out
}

/// Every fixture through ctr and through airlift on `version`, compared with each other and
/// with the golden table; ctr's known refusals asserted as such.
fn agrees_with_ctr(version: Version) {
    let started = std::time::Instant::now();
    let ctd = Containerd::start_with(
        version,
        Options {
            cri: false,
            ..Options::default()
        },
    )
    .unwrap();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    let mut compared = 0;
    let mut refused = 0;
    for (i, path) in fixtures.iter().enumerate() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = file.split('.').next().unwrap();
        let golden = golden_records(&file);
        let base = base_name(&file);
        let (ctr_ns, airlift_ns) = (format!("ctr-{i}"), format!("airlift-{i}"));

        let mut ctr = ctd.ctr();
        ctr.args(["-n", &ctr_ns, "images", "import", "--local"])
            .args(["--all-platforms", "--no-unpack"]);
        let mut airlift = vec!["--all-platforms".to_string()];
        if let Some(base) = &base {
            ctr.args(["--base-name", base]);
            airlift.extend(["--base-name".to_string(), base.clone()]);
        }
        ctr.arg(plain_tar(path, dir.path()));
        let out = ctr.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);

        airlift.push(path.display().to_string());
        let airlift: Vec<&str> = airlift.iter().map(String::as_str).collect();
        import_ok(&ctd, &airlift_ns, &airlift);
        let theirs = records(&rt, &ctd, &ctr_ns);
        let ours = records(&rt, &ctd, &airlift_ns);
        assert_eq!(
            ours, golden,
            "{file}: airlift on {version} against the table"
        );

        match CTR_FAILS.iter().find(|(s, _)| *s == stem) {
            Some((_, error)) => {
                // The known difference: ctr refuses what airlift imports.
                assert!(
                    !out.status.success(),
                    "{file}: ctr on {version} now imports it: {theirs:?}; \
                     drop it from CTR_FAILS"
                );
                assert!(
                    stderr.contains(error),
                    "{file}: ctr on {version} fails otherwise than known: {stderr}"
                );
                assert_eq!(theirs, vec![], "{file}: ctr failed, yet created images");
                refused += 1;
            }
            None => {
                assert!(
                    out.status.success(),
                    "{file}: ctr on {version} failed: {stderr}\n{}",
                    ctd.log_tail(30)
                );
                assert_eq!(ours, theirs, "{file}: airlift and ctr differ on {version}");
                assert_eq!(theirs, golden, "{file}: ctr on {version} against the table");
                compared += 1;
            }
        }
    }
    assert_eq!(compared + refused, fixtures.len());
    assert!(compared >= 10 && refused >= 1, "{compared} compared");
    eprintln!(
        "{version}: {compared} fixtures agree with ctr, {refused} refused by ctr as known, in {:?}",
        started.elapsed()
    );
}

on_containerd!(agrees_with_ctr {
    fixtures_agree_with_ctr_containerd_2: Version::V2;
    fixtures_agree_with_ctr_containerd_17: Version::V17;
});

/// An image whose foreign or non-distributable layer is absent from its archive: containerd
/// imports it (the layer carries a URL instead of content), and so does airlift, to the same
/// record. An absent ordinary layer is refused by airlift, naming it.
fn absent_foreign_layers_agree_with_ctr(version: Version) {
    let ctd = Containerd::start_with(
        version,
        Options {
            cri: false,
            ..Options::default()
        },
    )
    .unwrap();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    for (i, media_type) in [
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("foreign-{i}.tar"));
        let manifest = airlift_integration::archives::oci_with_absent_layer(
            &path,
            "example.com/foreign:1",
            media_type,
        )
        .unwrap();
        let (ctr_ns, airlift_ns) = (format!("ctr-{i}"), format!("airlift-{i}"));
        let out = ctd
            .ctr()
            .args(["-n", &ctr_ns, "images", "import", "--local", "--no-unpack"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{media_type}: ctr on {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        import_ok(&ctd, &airlift_ns, &[path.to_str().unwrap()]);
        let theirs = records(&rt, &ctd, &ctr_ns);
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert_eq!(theirs[0].2, manifest.to_string());
        assert_eq!(records(&rt, &ctd, &airlift_ns), theirs, "{media_type}");
    }
    let path = dir.path().join("ordinary.tar");
    airlift_integration::archives::oci_with_absent_layer(
        &path,
        "example.com/ordinary:1",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
    .unwrap();
    let out = import(&ctd, "refused", &[path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ordinary.tar") && err.contains("missing from the archive"),
        "{err}"
    );
    assert_eq!(records(&rt, &ctd, "refused"), vec![]);
}

on_containerd!(absent_foreign_layers_agree_with_ctr {
    absent_foreign_layers_agree_with_ctr_containerd_2: Version::V2;
    absent_foreign_layers_agree_with_ctr_containerd_17: Version::V17;
});
