//! The workloads: image archives written by [`airlift_integration::archives`], whose output
//! depends on nothing but the arguments given here, so a file cached in the workloads'
//! directory stays valid as long as these do. Each is generated the first time a suite asks for
//! it.

use airlift_integration::archives::{docker_save, Content, DockerSave, ImageSpec, LayerSpec, MIB};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workloads of the import suite, in the order they are measured: (label, file). `--only`
/// selects them by a prefix of the label.
pub const IMPORTS: [(&str, &str); 6] = [
    ("W1 .tar.zst", "w1.tar.zst"),
    ("W1 .tar.gz", "w1.tar.gz"),
    ("W1 .tar", "w1.tar"),
    ("W2 .tar (2 GB layer)", "w2.tar"),
    ("W3 200 images", "w3.tar"),
    ("W6 zstd --long=31", "w6.tar.zst"),
];

/// The directory the workloads are cached in.
pub struct Workloads {
    dir: PathBuf,
}

impl Workloads {
    pub fn new(dir: PathBuf) -> Workloads {
        std::fs::create_dir_all(&dir).unwrap();
        Workloads { dir }
    }

    /// The workload file `name` (one of [`IMPORTS`]' files), generated first if it is not
    /// cached.
    pub fn file(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        if path.exists() {
            return path;
        }
        match name {
            "w1.tar" => w1(&self.dir, &path),
            "w2.tar" => w2(&self.dir, &path),
            "w3.tar" => w3(&self.dir, &path),
            "w1.tar.zst" => compress(&self.file("w1.tar"), &path, &["zstd", "-3", "-T0"]),
            "w1.tar.gz" => compress(&self.file("w1.tar"), &path, &["gzip", "-6"]),
            "w6.tar.zst" => compress(
                &self.file("w1.tar"),
                &path,
                &["zstd", "-3", "-T0", "--long=31"],
            ),
            other => panic!("no workload {other}"),
        }
        path
    }

    /// A scratch directory beside the workloads (on their filesystem), removed when dropped.
    pub fn scratch(&self, prefix: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.dir)
            .unwrap()
    }
}

/// A layer of a workload: a file of `size` bytes of `content` made from `seed`.
fn layer(name: &str, size: u64, content: Content, seed: u64) -> LayerSpec {
    LayerSpec {
        name: name.to_owned(),
        size,
        content,
        seed,
    }
}

/// Writes a docker-save archive to `dst` (through a temporary file in `dir`).
fn save(dir: &Path, dst: &Path, layers: &[LayerSpec], images: &[ImageSpec]) {
    let tmp = dir.join(dst.file_name().unwrap()).with_extension("tmp");
    docker_save(&tmp, layers, images).unwrap();
    std::fs::rename(tmp, dst).unwrap();
}

/// W1: 6 images of ~70 MB, sharing a 64 MiB text base layer.
fn w1(dir: &Path, dst: &Path) {
    eprintln!("generating W1 (6 images, ~400 MB) ...");
    let mut layers = vec![layer("base", 64 * MIB, Content::Text, 1)];
    let mut images = Vec::new();
    for i in 0..6u64 {
        layers.push(layer(
            &format!("bin{i}"),
            32 * MIB,
            Content::Random,
            100 + i,
        ));
        layers.push(layer(&format!("doc{i}"), 24 * MIB, Content::Text, 200 + i));
        images.push(ImageSpec {
            name: format!("bench.example.com/w1/app{i}:1"),
            layers: vec!["base".into(), format!("bin{i}"), format!("doc{i}")],
        });
    }
    save(dir, dst, &layers, &images);
}

/// W2: one image with a single 2 GiB layer.
fn w2(dir: &Path, dst: &Path) {
    eprintln!("generating W2 (one 2 GB layer) ...");
    save(
        dir,
        dst,
        &[layer("big", 2048 * MIB, Content::Random, 7)],
        &[ImageSpec {
            name: "bench.example.com/w2/big:1".into(),
            layers: vec!["big".into()],
        }],
    );
}

/// W3: 200 small images sharing a 1 MiB base.
fn w3(dir: &Path, dst: &Path) {
    eprintln!("generating W3 (200 small images) ...");
    let mut layers = vec![layer("base", MIB, Content::Text, 3)];
    let mut images = Vec::new();
    for i in 0..200u64 {
        layers.push(layer(
            &format!("app{i}"),
            16 * 1024,
            Content::Random,
            1000 + i,
        ));
        images.push(ImageSpec {
            name: format!("bench.example.com/w3/small{i}:1"),
            layers: vec!["base".into(), format!("app{i}")],
        });
    }
    save(dir, dst, &layers, &images);
}

/// Compresses `src` into `dst` with `args` (`gzip ...` or `zstd ...`).
fn compress(src: &Path, dst: &Path, args: &[&str]) {
    let tmp = dst.with_extension("partial");
    let status = if args[0] == "gzip" {
        let out = std::fs::File::create(&tmp).unwrap();
        Command::new("gzip")
            .args(&args[1..])
            .arg("-c")
            .arg(src)
            .stdout(out)
            .status()
            .unwrap()
    } else {
        Command::new(args[0])
            .args(&args[1..])
            .arg("-q")
            .arg("-f")
            .arg(src)
            .arg("-o")
            .arg(&tmp)
            .status()
            .unwrap()
    };
    assert!(status.success(), "{args:?} failed");
    std::fs::rename(&tmp, dst).unwrap();
}

/// W5: 100 small distinct archives in `images`, each with an image name and a (not a tar)
/// layer of its own.
pub fn w5_archives(images: &Path) {
    std::fs::create_dir_all(images).unwrap();
    for i in 0..100 {
        let mut archive = DockerSave::new(Vec::new());
        archive
            .raw_layer("l", format!("layer{i}").as_bytes())
            .unwrap();
        let config = serde_json::json!({
            "architecture": airlift::platform::Platform::host().architecture,
            "os": "linux",
        });
        archive
            .image(
                "c.json",
                &config,
                &[format!("bench.example.com/w5/a{i}:1")],
                &["l"],
            )
            .unwrap();
        let bytes = archive.finish().unwrap();
        std::fs::write(images.join(format!("a{i:03}.tar")), bytes).unwrap();
    }
}
