//! Replays every saved fuzz reproducer (`fuzz/regressions/<target>/`) and every seed
//! (`fuzz/seeds/<target>/`) through the very function its fuzz target runs
//! ([`airlift::testkit::fuzz`]), so that a crash the fuzzer found stays a failing test until it is
//! fixed, and stays fixed after. Every known target must have both directories, not empty. The
//! harnesses are in airlift's test kit, which the crate's own tests build with (`Cargo.toml`:
//! the crate is its own dev-dependency with the `testkit` feature), so `cargo test -p airlift`
//! runs this replay as surely as `cargo test --workspace` does.
//!
//! The archive seeds are the project's fixtures made small (every layer replaced by a tiny one,
//! every digest and size that refers to it rewritten); `cargo test -p airlift --test
//! fuzz_regressions -- --ignored write_seeds` writes them again, with the `understand` seeds made
//! from the same archives.

use airlift::digest::Digest;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// What a fuzz target runs on one input.
type Target = fn(&[u8]);

/// The fuzz targets, by name.
const TARGETS: [(&str, Target); 7] = [
    ("archive", airlift::testkit::fuzz::archive),
    ("understand", airlift::testkit::fuzz::understand),
    ("reference", airlift::testkit::fuzz::reference),
    ("platform", airlift::testkit::fuzz::platform),
    ("filters", airlift::testkit::fuzz::filters),
    ("config", airlift::testkit::fuzz::config),
    ("proxy_write", airlift::testkit::fuzz::proxy_write),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; the directory must exist and hold some.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
}

/// Runs every input of `fuzz/<kind>/<target>/`, then fails naming each one that panicked.
fn replay(kind: &str, target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target")
        .1;
    let failed: Vec<String> = inputs(kind, target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("an input");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs fail: {failed:#?}"
    );
}

/// Every directory under `fuzz/seeds` and `fuzz/regressions` is a known target's.
#[test]
fn every_input_directory_is_a_targets() {
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let name = e.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} is no target's"
            );
        }
    }
}

macro_rules! replays {
    ($($target:ident),*) => {
        $(
            #[test]
            fn $target() {
                replay("seeds", stringify!($target));
                replay("regressions", stringify!($target));
            }
        )*
    };
}

replays!(
    archive,
    understand,
    reference,
    platform,
    filters,
    config,
    proxy_write
);

// ---------------------------------------------------------------------------------------------
// Writing the archive and understand seeds from the fixtures.

/// One tar entry as read.
struct Entry {
    header: tar::Header,
    name: String,
    link: Option<String>,
    data: Vec<u8>,
}

fn read_entries(tar_bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries().expect("a tar") {
        let mut e = e.expect("an entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.push(Entry {
            header: e.header().clone(),
            name,
            link,
            data,
        });
    }
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a gzip layer");
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A tiny layer: one file.
fn tiny_layer(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let text = format!("layer {n} of a fuzz seed\n");
    let mut h = tar::Header::new_ustar();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "etc/motd", text.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

/// Every 64-hex run in `s` replaced through `map`.
fn remap_hex(s: &str, map: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (old, new) in map {
        out = out.replace(old, new);
    }
    out
}

/// Rewrites digests (and the sizes beside them) in a JSON value.
fn remap_json(
    v: &mut serde_json::Value,
    map: &BTreeMap<String, String>,
    sizes: &BTreeMap<String, u64>,
) {
    match v {
        serde_json::Value::String(s) => *s = remap_hex(s, map),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| remap_json(x, map, sizes)),
        serde_json::Value::Object(o) => {
            o.values_mut().for_each(|x| remap_json(x, map, sizes));
            let hex = o
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| d.strip_prefix("sha256:"))
                .map(str::to_string);
            if let (Some(hex), true) = (hex, o.contains_key("size")) {
                if let Some(size) = sizes.get(&hex) {
                    o.insert("size".into(), (*size).into());
                }
            }
        }
        _ => {}
    }
}

/// The digest a blob's entry name declares (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar`).
fn name_hex(name: &str) -> Option<String> {
    let name = name.trim_start_matches("./");
    let hex = name.strip_prefix("blobs/sha256/").or_else(|| {
        name.strip_suffix(".json")
            .or_else(|| name.strip_suffix(".tar"))
            .filter(|h| !h.contains('/'))
    })?;
    Digest::from_hex(hex).map(|d| d.hex().to_string())
}

/// The fixture made small: every layer replaced by a tiny one, and every document referring to
/// it (transitively) rewritten, so that all digests hold again.
fn shrink(tar_bytes: &[u8]) -> Vec<Entry> {
    let mut entries = read_entries(tar_bytes);
    let mut map = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    let mut layers = BTreeMap::new();
    for e in entries.iter_mut() {
        if e.header.entry_type() != tar::EntryType::Regular
            || airlift::ingest::looks_like_json(&e.data)
        {
            continue;
        }
        let Some(hex) = name_hex(&e.name) else {
            continue;
        };
        let gzipped = e.data.starts_with(&[0x1f, 0x8b]);
        let old_diff = if gzipped {
            Digest::of(&gunzip(&e.data))
        } else {
            Digest::of(&e.data)
        };
        // The same content (compressed or not) becomes the same tiny layer.
        let next = layers.len();
        let tiny = tiny_layer(*layers.entry(old_diff.clone()).or_insert(next));
        map.insert(
            old_diff.hex().to_string(),
            Digest::of(&tiny).hex().to_string(),
        );
        e.data = if gzipped { gzip(&tiny) } else { tiny };
        let new = Digest::of(&e.data);
        map.insert(hex.clone(), new.hex().to_string());
        sizes.insert(new.hex().to_string(), e.data.len() as u64);
    }
    let originals: Vec<Vec<u8>> = entries.iter().map(|e| e.data.clone()).collect();
    loop {
        let before = map.len();
        for (e, original) in entries.iter_mut().zip(&originals) {
            if e.header.entry_type() != tar::EntryType::Regular
                || !airlift::ingest::looks_like_json(original)
            {
                continue;
            }
            let mut v: serde_json::Value = serde_json::from_slice(original).expect("JSON");
            remap_json(&mut v, &map, &sizes);
            e.data = serde_json::to_vec(&v).unwrap();
            if let Some(hex) = name_hex(&e.name) {
                let new = Digest::of(&e.data);
                if new.hex() != hex {
                    map.insert(hex, new.hex().to_string());
                    sizes.insert(new.hex().to_string(), e.data.len() as u64);
                }
            }
        }
        if map.len() == before {
            break;
        }
    }
    for e in entries.iter_mut() {
        e.name = remap_hex(&e.name, &map);
        e.link = e.link.as_deref().map(|l| remap_hex(l, &map));
    }
    entries
}

fn write_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = e.header.clone();
        h.set_size(e.data.len() as u64);
        match &e.link {
            Some(target) => b.append_link(&mut h, &e.name, target).unwrap(),
            None => b.append_data(&mut h, &e.name, &e.data[..]).unwrap(),
        }
    }
    b.into_inner().unwrap()
}

/// A link target as an archive path (symbolic links are relative to their directory).
fn resolve(link: &str, target: &str, symbolic: bool) -> String {
    let mut parts: Vec<&str> = if symbolic {
        let mut p: Vec<&str> = link.split('/').collect();
        p.pop();
        p
    } else {
        Vec::new()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The same files in the `understand` target's format.
fn as_listing(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match (e.header.entry_type(), &e.link) {
            (tar::EntryType::Regular, _) => {
                out.extend_from_slice(format!("== {}\n", e.name).as_bytes());
                out.extend_from_slice(&e.data);
                out.push(b'\n');
            }
            (kind, Some(target)) => {
                let symbolic = kind == tar::EntryType::Symlink;
                let target = resolve(&e.name, target, symbolic);
                out.extend_from_slice(format!("=> {} -> {target}\n", e.name).as_bytes());
            }
            _ => {}
        }
    }
    out
}

fn images(tar_bytes: &[u8]) -> usize {
    use airlift::archive::understand::{plan, PlanOptions};
    let store = airlift::testkit::memory::MemoryStore::default();
    let inv = airlift::ingest::ingest(
        std::io::Cursor::new(tar_bytes.to_vec()),
        &store,
        &std::env::temp_dir(),
        &mut Default::default(),
    )
    .expect("the archive ingests");
    let opts = PlanOptions {
        platforms: airlift::platform::PlatformPolicy::All,
        base_name: Some("example.com/base".into()),
        ..PlanOptions::default()
    };
    plan(&inv, &opts).expect("a plan").images.len()
}

#[test]
#[ignore = "writes fuzz/seeds/{archive,understand} from the fixtures"]
fn write_seeds() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    names.sort();
    let archive_dir = fuzz_dir().join("seeds/archive");
    let listing_dir = fuzz_dir().join("seeds/understand");
    for (i, name) in names.iter().enumerate() {
        let original = std::fs::read(fixtures.join(name)).unwrap();
        let entries = shrink(&original);
        let small = write_tar(&entries);
        assert_eq!(
            images(&small),
            images(&original),
            "{name}: images lost in shrinking"
        );
        let stem = name.trim_end_matches(".tar");
        std::fs::write(archive_dir.join(format!("{stem}.tar")), &small).unwrap();
        // Each compression, on one fixture or another.
        let compressed = match i % 4 {
            0 => ("tgz", gzip(&small)),
            1 => ("tar.zst", zstd::encode_all(&small[..], 19).unwrap()),
            2 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                enc.write_all(&small).unwrap();
                ("tar.lz4", enc.finish().unwrap())
            }
            _ => {
                let mut enc =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                enc.write_all(&small).unwrap();
                ("tar.bz2", enc.finish().unwrap())
            }
        };
        std::fs::write(
            archive_dir.join(format!("{stem}.{}", compressed.0)),
            compressed.1,
        )
        .unwrap();
        std::fs::write(
            listing_dir.join(format!("{stem}.txt")),
            as_listing(&entries),
        )
        .unwrap();
        if stem == "busybox-multiarch-oci" {
            for (kind, bytes) in [
                ("pax", write_tar_pax(&entries)),
                ("longnames", write_tar_long_names(&entries)),
            ] {
                assert_eq!(images(&bytes), images(&original), "{name} ({kind})");
                std::fs::write(archive_dir.join(format!("{stem}-{kind}.tar")), &bytes).unwrap();
            }
            // A frame declaring a 2 GiB window, as `zstd --long=31` writes: the window spills.
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.long_distance_matching(true).unwrap();
            enc.window_log(31).unwrap();
            enc.write_all(&small).unwrap();
            let long = enc.finish().unwrap();
            std::fs::write(archive_dir.join(format!("{stem}-long31.tar.zst")), long).unwrap();
        }
    }
}

/// The entries with their names in PAX `path` records (the headers carry a placeholder).
fn write_tar_pax(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.header.entry_type());
        h.set_mode(0o644);
        h.set_size(e.data.len() as u64);
        let size = e.data.len().to_string();
        let mut records = vec![("path", e.name.as_bytes()), ("size", size.as_bytes())];
        if let Some(target) = &e.link {
            records.push(("linkpath", target.as_bytes()));
        }
        b.append_pax_extensions(records).unwrap();
        h.set_path("placeholder").unwrap();
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The entries under names longer than a header holds, in GNU long-name entries (the `tar`
/// crate would drop the `./` components that make them long).
fn write_tar_long_names(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let name = format!("{}{}", "./".repeat(60), e.name);
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
        let data = [name.as_bytes(), b"\0"].concat();
        long.set_size(data.len() as u64);
        long.set_mode(0o644);
        long.set_cksum();
        b.append(&long, &data[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.header.entry_type());
        h.set_mode(0o644);
        h.set_size(e.data.len() as u64);
        h.as_mut_bytes()[..100].copy_from_slice(&name.as_bytes()[..100]);
        if let Some(target) = &e.link {
            h.set_link_name(target).unwrap();
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}
