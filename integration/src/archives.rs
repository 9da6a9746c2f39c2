//! Made-up image archives for the end-to-end tests and the benchmark, generated
//! deterministically: the one place that writes archives nobody downloaded.
//!
//! Everything here is a pure function of its arguments (sizes, seeds, names): the same call
//! writes the same bytes on every machine, in every run, however the output is read. The
//! benchmark relies on that to cache its workloads; tests rely on it for stable digests.
//!
//! The pieces, bottom up:
//!
//! - [`Xorshift`], the pseudo-random generator, and [`RandomBytes`], its output as an endless
//!   stream of incompressible bytes; [`random_bytes`] collects some.
//! - [`TextBytes`]: text-like content (words of [`WORDS`], compressing about 3-4x), for layers
//!   that compress like real ones.
//! - [`LayerTar`]: a layer, a tar holding one file of [`Content`], produced on the fly by a
//!   reader, so a layer of gigabytes never sits in memory.
//! - [`DockerSave`]: a docker-save (`docker save`) archive written entry by entry: layers
//!   (`<name>/layer.tar`, their diff IDs computed as they are written), image configs listing
//!   those diff IDs, then `manifest.json`. [`docker_save`] writes a whole archive from a list
//!   of [`LayerSpec`]s and [`ImageSpec`]s; [`one_image`] the common test case of one image with
//!   one big random layer.
//! - [`Entry`], [`read_entries`], [`write_entries`]: a real archive's entries in memory, to be
//!   rewritten into a broken variant (a flipped byte, a missing blob, a hostile entry).
//!
//! ```no_run
//! use airlift_integration::archives::{docker_save, Content, ImageSpec, LayerSpec, MIB};
//!
//! // Two images sharing a text-like base layer, each with a random layer of its own.
//! let layer = |name: &str, size, content, seed| LayerSpec {
//!     name: name.into(),
//!     size,
//!     content,
//!     seed,
//! };
//! let layers = [
//!     layer("base", 8 * MIB, Content::Text, 1),
//!     layer("app0", MIB, Content::Random, 2),
//!     layer("app1", MIB, Content::Random, 3),
//! ];
//! let images = [0, 1].map(|i| ImageSpec {
//!     name: format!("example.com/app{i}:1"),
//!     layers: vec!["base".into(), format!("app{i}")],
//! });
//! docker_save(std::path::Path::new("/tmp/two.tar"), &layers, &images)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use airlift::digest::{Digest, HashingReader};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// One mebibyte, the unit layer sizes are usually given in.
pub const MIB: u64 = 1 << 20;

/// The tar block size: headers are one block, data is padded to whole blocks.
const BLOCK: u64 = 512;

/// Text content is laid out in pages of this many bytes of the layer tar (see [`LayerTar`]).
const TEXT_PAGE: u64 = 8 << 10;

/// The path of the one file in a [`LayerTar`].
pub const LAYER_FILE: &str = "usr/share/data.bin";

/// The words [`TextBytes`] is made of; the last ends a line.
pub const WORDS: [&str; 16] = [
    "alpha ",
    "bravo ",
    "charlie ",
    "delta ",
    "echo ",
    "foxtrot ",
    "golf ",
    "hotel ",
    "india ",
    "juliet ",
    "kilo ",
    "lima ",
    "mike ",
    "november ",
    "oscar ",
    "papa\n",
];

/// The pseudo-random generator: Marsaglia's xorshift64 (shifts 13, 7, 17). Fast, with no state
/// beyond one word, and plenty for making up data; not for anything that must be unguessable.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator seeded with `seed`. The lowest bit is set, because zero is a fixed point of
    /// xorshift: seeds `2k` and `2k + 1` give the same sequence.
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed | 1)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Incompressible bytes: the [`Xorshift`] numbers of a seed, each as its 8 little-endian bytes,
/// one after the other, without end. Reading it in pieces of any size gives the same stream.
#[derive(Debug, Clone)]
pub struct RandomBytes {
    rng: Xorshift,
    /// The bytes of the last number drawn; `word[used..]` are not given out yet.
    word: [u8; 8],
    used: usize,
}

impl RandomBytes {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> RandomBytes {
        RandomBytes {
            rng: Xorshift::new(seed),
            word: [0; 8],
            used: 8,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let rest = (8 - self.used).min(buf.len());
        buf[..rest].copy_from_slice(&self.word[self.used..self.used + rest]);
        self.used += rest;
        let mut chunks = buf[rest..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.word = self.rng.next_u64().to_le_bytes();
            tail.copy_from_slice(&self.word[..tail.len()]);
            self.used = tail.len();
        }
    }
}

impl Read for RandomBytes {
    /// Fills all of `buf`: the stream never ends.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf);
        Ok(buf.len())
    }
}

/// The first `len` bytes of [`RandomBytes`] of `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    RandomBytes::new(seed).fill(&mut v);
    v
}

/// Text-like bytes: words of [`WORDS`], each picked by the low 4 bits of the next [`Xorshift`]
/// number of the seed. Reading it in pieces of any size gives the same stream; only
/// [`TextBytes::cut`] breaks a word.
#[derive(Debug, Clone)]
pub struct TextBytes {
    rng: Xorshift,
    /// What is left of the current word.
    word: &'static [u8],
}

impl TextBytes {
    /// The text of `seed`.
    pub fn new(seed: u64) -> TextBytes {
        TextBytes {
            rng: Xorshift::new(seed),
            word: &[],
        }
    }

    /// Fills `buf` with the next bytes of the text.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut at = 0;
        while at < buf.len() {
            if self.word.is_empty() {
                self.word = WORDS[(self.rng.next_u64() & 15) as usize].as_bytes();
            }
            let k = self.word.len().min(buf.len() - at);
            buf[at..at + k].copy_from_slice(&self.word[..k]);
            self.word = &self.word[k..];
            at += k;
        }
    }

    /// Drops the rest of the current word: the next byte begins a new one.
    pub fn cut(&mut self) {
        self.word = &[];
    }
}

/// What the file in a [`LayerTar`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// [`RandomBytes`]: incompressible, like data that is compressed already.
    Random,
    /// [`TextBytes`]: compresses about 3-4x, as real layers often do.
    Text,
}

/// The content generator of a [`LayerTar`].
#[derive(Debug, Clone)]
enum Filler {
    Random(RandomBytes),
    Text(TextBytes),
}

/// A layer produced on the fly: a tar holding one regular file, [`LAYER_FILE`], of `size`
/// bytes of [`Content`] made from `seed`.
///
/// The tar is a 512-byte ustar header (mode 0644, mtime 0), the data, zeros to
/// the next 512-byte boundary, and the two zero blocks that end a tar:
/// [`LayerTar::tar_len`] bytes in all.
///
/// Text content is laid out in pages of 8 KiB of the tar (the first page holds the header
/// too): a word that does not fit at the end of a page is cut there, and the next page begins
/// with a new word. The first implementation filled each 8 KiB read on its own and cut words
/// where the read ended; the pages keep its output, so the benchmark's cached workloads stay
/// valid, without making the output depend on how it is read.
#[derive(Debug, Clone)]
pub struct LayerTar {
    header: [u8; BLOCK as usize],
    /// Bytes of the tar given out so far.
    pos: u64,
    /// The file's size.
    size: u64,
    /// The tar's size.
    total: u64,
    filler: Filler,
}

impl LayerTar {
    /// The layer whose file is `size` bytes of `content` made from `seed`.
    pub fn new(size: u64, content: Content, seed: u64) -> LayerTar {
        let mut h = tar::Header::new_ustar();
        h.set_path(LAYER_FILE).expect("a short relative path");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        let mut header = [0; BLOCK as usize];
        header.copy_from_slice(h.as_bytes());
        LayerTar {
            header,
            pos: 0,
            size,
            total: BLOCK + size.div_ceil(BLOCK) * BLOCK + 2 * BLOCK,
            filler: match content {
                Content::Random => Filler::Random(RandomBytes::new(seed)),
                Content::Text => Filler::Text(TextBytes::new(seed)),
            },
        }
    }

    /// The length of the whole tar in bytes (what reading it to the end yields).
    pub fn tar_len(&self) -> u64 {
        self.total
    }
}

impl Read for LayerTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.total - self.pos) as usize;
        let data_end = BLOCK + self.size;
        let mut at = 0;
        while at < n {
            let p = self.pos + at as u64;
            let left = (n - at) as u64;
            let k = if p < BLOCK {
                let k = left.min(BLOCK - p);
                buf[at..at + k as usize]
                    .copy_from_slice(&self.header[p as usize..(p + k) as usize]);
                k
            } else if p < data_end {
                let mut k = left.min(data_end - p);
                let out = &mut buf[at..];
                match &mut self.filler {
                    Filler::Random(r) => r.fill(&mut out[..k as usize]),
                    Filler::Text(t) => {
                        if p.is_multiple_of(TEXT_PAGE) {
                            t.cut();
                        }
                        k = k.min(TEXT_PAGE - p % TEXT_PAGE);
                        t.fill(&mut out[..k as usize]);
                    }
                }
                k
            } else {
                // Padding and the end-of-archive blocks.
                buf[at..n].fill(0);
                left
            };
            at += k as usize;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A layer of a [`docker_save`] archive.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Its name in the archive: the layer is the entry `<name>/layer.tar`.
    pub name: String,
    /// The size of the file in the layer ([`LayerTar`]).
    pub size: u64,
    /// What the file holds.
    pub content: Content,
    /// The seed of its content.
    pub seed: u64,
}

/// An image of a [`docker_save`] archive.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Its name (the manifest's one `RepoTags` entry).
    pub name: String,
    /// Its layers, bottom first, by [`LayerSpec::name`].
    pub layers: Vec<String>,
}

/// Writes a docker-save archive to `path`: every layer of `layers` (in order), then for image
/// `i` of `images` its config `config-<i>.json` ([`DockerSave::config`] with the environment
/// `IMAGE=<i>`), then `manifest.json`.
///
/// Panics if an image names a layer not in `layers`.
pub fn docker_save(path: &Path, layers: &[LayerSpec], images: &[ImageSpec]) -> io::Result<()> {
    let mut archive = DockerSave::create(path)?;
    for l in layers {
        archive.layer(&l.name, LayerTar::new(l.size, l.content, l.seed))?;
    }
    for (i, image) in images.iter().enumerate() {
        let layers: Vec<&str> = image.layers.iter().map(String::as_str).collect();
        let config = archive.config(&[format!("IMAGE={i}")], &layers);
        archive.image(
            &format!("config-{i}.json"),
            &config,
            std::slice::from_ref(&image.name),
            &layers,
        )?;
    }
    archive.finish()?;
    Ok(())
}

/// Writes a small docker-save archive to `path`, for tests that need images rather than bytes:
/// `layers` (name, seed) each a text file of `size` bytes, `images` (name, layer names).
pub fn small(
    path: &Path,
    size: u64,
    layers: &[(&str, u64)],
    images: &[(&str, &[&str])],
) -> io::Result<()> {
    let layers: Vec<LayerSpec> = layers
        .iter()
        .map(|&(name, seed)| LayerSpec {
            name: name.into(),
            size,
            content: Content::Text,
            seed,
        })
        .collect();
    let images: Vec<ImageSpec> = images
        .iter()
        .map(|&(name, layers)| ImageSpec {
            name: name.into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
        })
        .collect();
    docker_save(path, &layers, &images)
}

/// Writes a docker-save archive to `path` holding one image, `name`, whose one layer holds
/// `size` bytes of random content made from `seed`: an import that takes a while.
pub fn one_image(path: &Path, name: &str, size: u64, seed: u64) -> io::Result<()> {
    let layer = LayerSpec {
        name: "layer0".into(),
        size,
        content: Content::Random,
        seed,
    };
    let image = ImageSpec {
        name: name.into(),
        layers: vec!["layer0".into()],
    };
    docker_save(path, &[layer], &[image])
}

/// A docker-save archive being written, entry by entry: layers first, then each image's config
/// (which lists its layers' diff IDs, known once they are written), and `manifest.json` at
/// [`DockerSave::finish`]. Every entry has a GNU tar header with mode 0644 and mtime 0.
pub struct DockerSave<W: Write> {
    tar: tar::Builder<W>,
    /// Layer name → diff ID (the digest of its uncompressed tar).
    diff_ids: HashMap<String, Digest>,
    /// The `manifest.json` entries so far.
    manifest: Vec<serde_json::Value>,
}

impl DockerSave<BufWriter<File>> {
    /// Starts an archive at `path` (created or truncated).
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(DockerSave::new(BufWriter::with_capacity(
            4 << 20,
            File::create(path)?,
        )))
    }
}

impl<W: Write> DockerSave<W> {
    /// Starts an archive written to `out`.
    pub fn new(out: W) -> Self {
        DockerSave {
            tar: tar::Builder::new(out),
            diff_ids: HashMap::new(),
            manifest: Vec::new(),
        }
    }

    /// Appends `layer` as the entry `<name>/layer.tar`; returns its diff ID.
    pub fn layer(&mut self, name: &str, layer: LayerTar) -> io::Result<Digest> {
        let len = layer.tar_len();
        let mut hashing = HashingReader::new(layer);
        self.append(&format!("{name}/layer.tar"), len, &mut hashing)?;
        let (digest, _) = hashing.finish();
        self.diff_ids.insert(name.to_owned(), digest.clone());
        Ok(digest)
    }

    /// Appends `bytes`, as they are, as the entry `<name>/layer.tar` (a layer that need not be
    /// a tar: neither airlift nor containerd looks inside a layer it does not unpack); returns
    /// its digest, which stands as its diff ID.
    pub fn raw_layer(&mut self, name: &str, bytes: &[u8]) -> io::Result<Digest> {
        self.append(&format!("{name}/layer.tar"), bytes.len() as u64, bytes)?;
        let digest = Digest::of(bytes);
        self.diff_ids.insert(name.to_owned(), digest.clone());
        Ok(digest)
    }

    /// The config of an image of `layers` (written before): the host's architecture, `linux`,
    /// the environment `env` and the layers' diff IDs.
    ///
    /// Panics if a layer was not written.
    pub fn config(&self, env: &[String], layers: &[&str]) -> serde_json::Value {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| match self.diff_ids.get(*l) {
                Some(d) => d.to_string(),
                None => panic!("layer {l} was not written before the config naming it"),
            })
            .collect();
        serde_json::json!({
            "architecture": airlift::platform::Platform::host().architecture,
            "os": "linux",
            "config": {"Env": env},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
    }

    /// Appends an image: its config (compact JSON) as the entry `config_name`, and its
    /// `manifest.json` entry naming `tags` and `layers` (written before).
    pub fn image(
        &mut self,
        config_name: &str,
        config: &serde_json::Value,
        tags: &[String],
        layers: &[&str],
    ) -> io::Result<()> {
        let config = config.to_string();
        self.append(config_name, config.len() as u64, config.as_bytes())?;
        self.manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": tags,
            "Layers": layers.iter().map(|l| format!("{l}/layer.tar")).collect::<Vec<_>>(),
        }));
        Ok(())
    }

    /// Appends `manifest.json` and the end of the archive, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let manifest = serde_json::to_vec(&self.manifest).map_err(io::Error::other)?;
        self.append("manifest.json", manifest.len() as u64, &manifest[..])?;
        let mut out = self.tar.into_inner()?;
        out.flush()?;
        Ok(out)
    }

    fn append(&mut self, path: &str, len: u64, data: impl Read) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        self.tar.append_data(&mut h, path, data)
    }
}

/// One tar entry held in memory, to be changed and written back ([`write_entries`]).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its header (the size and checksum are set again when written).
    pub header: tar::Header,
    /// Its full path (a long one may not fit in `header`, which is written as it is).
    pub path: String,
    /// Its data.
    pub data: Vec<u8>,
}

impl Entry {
    /// A hostile entry (a path with `..`, a link out of the archive): a ustar header written
    /// byte by byte, so that the tar crate's own checks, which refuse such paths, do not stop
    /// it. `name` and `link` must fit their fields (100 bytes).
    pub fn raw(name: &str, kind: tar::EntryType, link: Option<&str>, data: Vec<u8>) -> Entry {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_mut_bytes()[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        Entry {
            header: h,
            path: name.to_owned(),
            data,
        }
    }
}

/// The entries of the (uncompressed) tar at `path`, in order.
pub fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    let data = std::fs::read(path)?;
    let mut archive = tar::Archive::new(&data[..]);
    let mut entries = Vec::new();
    for e in archive.entries()? {
        let mut e = e?;
        let mut header = e.header().clone();
        let path = e.path()?.to_string_lossy().into_owned();
        // A path under 100 bytes is written into the header's name field, so the header says
        // what the entry said; a longer one keeps the header as it came, which holds it only
        // in ustar form (prefix and name): a GNU long-name record is not kept.
        if path.len() < 100 {
            header.set_path(&path)?;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        entries.push(Entry { header, path, data });
    }
    Ok(entries)
}

/// Writes `entries` as a tar to `path`, each header as it is but for its size and checksum.
pub fn write_entries(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = e.header.clone();
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, &e.data[..])?;
    }
    std::fs::write(path, b.into_inner()?)
}

/// An OCI-layout archive of one image named `name` whose second layer, of `media_type`, is
/// left out, as a registry's foreign or non-distributable layer is (it carries a URL instead).
/// Returns the manifest's digest.
pub fn oci_with_absent_layer(path: &Path, name: &str, media_type: &str) -> io::Result<Digest> {
    let mut present = Vec::new();
    LayerTar::new(4096, Content::Text, 1).read_to_end(&mut present)?;
    let absent = b"never in the archive";
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers",
                   "diff_ids": [Digest::of(&present).to_string(), Digest::of(absent).to_string()]},
    }))?;
    let descriptor = |media_type: &str, data: &[u8]| {
        serde_json::json!({"mediaType": media_type, "digest": Digest::of(data).to_string(),
                           "size": data.len()})
    };
    let mut foreign = descriptor(media_type, absent);
    foreign["urls"] = serde_json::json!(["https://example.com/layer"]);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &present), foreign],
    }))?;
    let mut top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or(name),
    });
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]}))?;
    let mut entries = Vec::new();
    let mut add = |path: String, data: Vec<u8>| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        entries.push(Entry { header, path, data });
    };
    add(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    add("index.json".into(), index);
    for blob in [&config, &present, &manifest] {
        add(
            format!("blobs/sha256/{}", Digest::of(blob).hex()),
            blob.clone(),
        );
    }
    for e in &mut entries {
        e.header.set_path(&e.path)?;
    }
    write_entries(path, &entries)?;
    Ok(Digest::of(&manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `r` to the end in pieces of `piece` bytes.
    fn read_in_pieces(mut r: impl Read, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; piece];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn xorshift_is_the_classic_sequence() {
        let mut r = Xorshift::new(1);
        assert_eq!(r.next_u64(), 1082269761);
        assert_eq!(r.next_u64(), 1152992998833853505);
        // Even seeds are made odd.
        assert_eq!(Xorshift::new(6).next_u64(), Xorshift::new(7).next_u64());
    }

    #[test]
    fn random_bytes_are_the_numbers_in_little_endian() {
        let mut r = Xorshift::new(9);
        let want: Vec<u8> = (0..4).flat_map(|_| r.next_u64().to_le_bytes()).collect();
        assert_eq!(random_bytes(32, 9), want);
        assert_eq!(random_bytes(13, 9), want[..13]);
    }

    #[test]
    fn streams_do_not_depend_on_read_sizes() {
        let whole = random_bytes(10_000, 5);
        let mut pieces = RandomBytes::new(5);
        let mut got = Vec::new();
        for len in [1, 7, 8, 3, 100, 4096, 5785] {
            let mut b = vec![0; len];
            pieces.fill(&mut b);
            got.extend(b);
        }
        assert_eq!(got, whole);

        let mut text = vec![0; 10_000];
        TextBytes::new(5).fill(&mut text);
        let mut pieces = TextBytes::new(5);
        let mut got = Vec::new();
        for len in [1, 2, 997, 9000] {
            let mut b = vec![0; len];
            pieces.fill(&mut b);
            got.extend(b);
        }
        assert_eq!(got, text);
        // Whole words, but for the last, cut where the text ends.
        let s = String::from_utf8(text).unwrap();
        let words: Vec<&str> = s.split_inclusive([' ', '\n']).collect();
        let (last, whole) = words.split_last().unwrap();
        assert!(whole.iter().all(|w| WORDS.contains(w)), "{s}");
        assert!(WORDS.iter().any(|w| w.starts_with(last)), "{last}");
    }

    #[test]
    fn layer_tars_are_valid_and_read_size_independent() {
        for content in [Content::Random, Content::Text] {
            let size = 3 * TEXT_PAGE + 123;
            let layer = LayerTar::new(size, content, 42);
            let len = layer.tar_len();
            let whole = read_in_pieces(layer.clone(), 1 << 20);
            assert_eq!(whole.len() as u64, len);
            assert_eq!(len % BLOCK, 0);
            for piece in [1, 511, 512, 4096, 8192, 10_000] {
                assert_eq!(
                    read_in_pieces(layer.clone(), piece),
                    whole,
                    "{content:?} in pieces of {piece}"
                );
            }
            let mut archive = tar::Archive::new(&whole[..]);
            let mut entries = archive.entries().unwrap();
            let mut file = entries.next().unwrap().unwrap();
            assert_eq!(file.path().unwrap().to_str(), Some(LAYER_FILE));
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            assert_eq!(data.len() as u64, size);
            drop(file);
            assert!(entries.next().is_none());
            if content == Content::Random {
                assert_eq!(data, random_bytes(size as usize, 42));
            }
        }
    }

    #[test]
    fn text_words_are_cut_at_page_ends_only() {
        let size = 4 * TEXT_PAGE;
        let tar = read_in_pieces(LayerTar::new(size, Content::Text, 3), 1000);
        let data = &tar[BLOCK as usize..(BLOCK + size) as usize];
        // Each page parses as whole words, but for a cut one at its end.
        let mut start = 0;
        let mut end = (TEXT_PAGE - BLOCK) as usize;
        while start < data.len() {
            let end_here = end.min(data.len());
            let mut page = &data[start..end_here];
            while let Some(w) = WORDS.iter().find(|w| page.starts_with(w.as_bytes())) {
                page = &page[w.len()..];
            }
            assert!(
                WORDS.iter().any(|w| w.as_bytes().starts_with(page)),
                "page at {start} does not parse: {:?}",
                String::from_utf8_lossy(page)
            );
            start = end_here;
            end += TEXT_PAGE as usize;
        }
    }

    #[test]
    fn docker_save_writes_configs_with_diff_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let layers = [
            LayerSpec {
                name: "base".into(),
                size: 20_000,
                content: Content::Text,
                seed: 1,
            },
            LayerSpec {
                name: "top".into(),
                size: 1000,
                content: Content::Random,
                seed: 2,
            },
        ];
        let images = [ImageSpec {
            name: "example.com/a:1".into(),
            layers: vec!["base".into(), "top".into()],
        }];
        docker_save(&path, &layers, &images).unwrap();
        let entries = read_entries(&path).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "base/layer.tar",
                "top/layer.tar",
                "config-0.json",
                "manifest.json"
            ]
        );
        let config: serde_json::Value = serde_json::from_slice(&entries[2].data).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([
                Digest::of(&entries[0].data).to_string(),
                Digest::of(&entries[1].data).to_string()
            ])
        );
        assert_eq!(config["config"]["Env"], serde_json::json!(["IMAGE=0"]));
        assert_eq!(
            String::from_utf8(entries[3].data.clone()).unwrap(),
            r#"[{"Config":"config-0.json","RepoTags":["example.com/a:1"],"Layers":["base/layer.tar","top/layer.tar"]}]"#
        );
        // Written twice, the same bytes.
        let again = dir.path().join("b.tar");
        docker_save(&again, &layers, &images).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }

    #[test]
    fn entries_round_trip_and_raw_entries_stay_hostile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.tar");
        one_image(&path, "example.com/one:1", 4096, 7).unwrap();
        let mut entries = read_entries(&path).unwrap();
        let copy = dir.path().join("copy.tar");
        write_entries(&copy, &entries).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&copy).unwrap());

        entries.insert(
            0,
            Entry::raw("../evil", tar::EntryType::Regular, None, b"x".to_vec()),
        );
        write_entries(&copy, &entries).unwrap();
        let raw = std::fs::read(&copy).unwrap();
        assert_eq!(&raw[..7], b"../evil");
        assert_eq!(&raw[512..513], b"x");
    }
}
