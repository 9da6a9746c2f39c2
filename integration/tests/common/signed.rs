//! Signed image archives for the signature verification tests, made once per test binary with
//! the real tools: small images pushed to a `docker-registry` on loopback, signed there by
//! cosign (two key pairs from `cosign generate-key-pair`; simple signing and Sigstore bundles,
//! offline: no transparency log, no signing config), then copied out with their signatures into
//! OCI layout archives by `skopeo copy --preserve-digests` and `cosign save`.
//!
//! [`signed`] makes the set on first use (a few seconds, mostly cosign) in a directory under
//! `/tmp` removed when the test binary exits, or says why it cannot (cosign not provisioned,
//! `docker-registry` or `skopeo` missing) and the test skips. [`provisioned`] adds the check
//! that a containerd release is there.
//!
//! Each archive's image has a name of its own under `registry.example.com`, and content of its
//! own (one layer holding a text), so its blobs tell it apart from the others' in containerd.

use airlift_integration::{cache_dir, containerd_bin_dir, Version};
use sha2::{Digest as _, Sha256};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Signed by the site key in simple-signing form, its signed identity its own name.
pub const SIMPLE: &str = "registry.example.com/signed/simple:1";
/// Signed by the site key as a Sigstore bundle (a digest, no name).
pub const BUNDLE: &str = "registry.example.com/signed/bundle:1";
/// Not signed.
pub const UNSIGNED: &str = "registry.example.com/unsigned/app:1";
/// Signed by the other key in simple-signing form, its signed identity its own name.
pub const OTHER: &str = "registry.example.com/signed/other:1";
/// [`SIMPLE`]'s image and signature under another name.
pub const MISNAMED: &str = "registry.example.com/renamed/simple:1";
/// [`UNSIGNED`]'s image under another name, carrying [`SIMPLE`]'s signature as its own.
pub const SWAPPED: &str = "registry.example.com/signed/swapped:1";

/// One archive of the set.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The OCI layout tar.
    pub path: PathBuf,
    /// The image's name in the archive (a ref name); for a `cosign save` layout, which names
    /// nothing, the name a lock line gives it.
    pub name: String,
    /// The image's manifest digest.
    pub digest: String,
    /// The image's manifest, config and layer digests (none shared with another image).
    pub blobs: Vec<String>,
    /// The signature manifests the archive carries for the image: the `.sig` manifest, or the
    /// bundle's referrer manifest.
    pub signatures: Vec<String>,
}

impl Archive {
    /// The archive's path as a `&str`, for argument lists.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The hex of the image's digest (`sha256-<hex>` tags).
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap()
    }

    /// The name the `.sig` manifest is recorded under: `<repository>:sha256-<hex>.sig`.
    pub fn sig_name(&self) -> String {
        format!("{}:sha256-{}.sig", repository(&self.name), self.hex())
    }

    /// The name the referrers of the image are recorded under: `<repository>:sha256-<hex>`.
    pub fn referrers_name(&self) -> String {
        format!("{}:sha256-{}", repository(&self.name), self.hex())
    }
}

/// `NAME:TAG` → `NAME`.
pub fn repository(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// The whole set.
#[derive(Debug)]
pub struct Signed {
    /// Where everything lives.
    pub dir: PathBuf,
    /// The site's public key (its private key signed [`SIMPLE`] and [`BUNDLE`]).
    pub site_pub: PathBuf,
    /// The other public key (its private key signed [`OTHER`]).
    pub other_pub: PathBuf,
    /// (a) [`SIMPLE`] and its `sha256-<hex>.sig` manifest (a ref name of the layout).
    pub simple: Archive,
    /// (b) [`BUNDLE`] and its bundle's referrer manifest, listed in `index.json` without a name.
    pub bundle: Archive,
    /// (b) [`BUNDLE`] and the referrers tag index (`sha256-<hex>`, cosign's fallback for a
    /// registry without the referrers API) listing its referrer manifest, which is unlisted.
    pub bundle_tagged: Archive,
    /// (c) `cosign save` of [`BUNDLE`]'s image: entries annotated `kind`, no ref names, the
    /// referrer manifest unlisted.
    pub saved: Archive,
    /// (d) [`UNSIGNED`], no signature.
    pub unsigned: Archive,
    /// (e) [`OTHER`] and its `.sig` manifest, signed by the other key.
    pub other: Archive,
    /// (f) [`MISNAMED`]: [`SIMPLE`]'s image and `.sig`, whose signed identity is [`SIMPLE`].
    pub misnamed: Archive,
    /// (f) [`SWAPPED`]: [`UNSIGNED`]'s image and, as `sha256-<its hex>.sig`, [`SIMPLE`]'s
    /// signature manifest, whose payload names [`SIMPLE`]'s digest.
    pub swapped: Archive,
    /// (g) one layout holding (a) and (d): [`SIMPLE`] with its `.sig`, and [`UNSIGNED`]. Its
    /// `Archive` describes [`SIMPLE`]; [`UNSIGNED`] is [`Signed::unsigned`]'s image.
    pub mixed: Archive,
    /// (h) [`SIMPLE`]'s image as `docker save` writes it (`skopeo copy` to a docker-archive),
    /// in a directory of its own, with its signatures file `<archive>.sigs` beside it: the
    /// layout of (a), the registry manifest cosign signed and its `.sig`. `digest` is the
    /// registry manifest's; the image airlift records has another (docker save keeps none).
    pub docker_save: Archive,
    /// (h) The same docker-save archive in another directory, with no `.sigs` file.
    pub docker_save_bare: Archive,
}

/// The cosign binary `integration/provision.sh` recorded (`COSIGN=` in
/// `<cache>/containerd.env`), or why there is none.
pub fn cosign() -> Result<PathBuf, String> {
    let env = cache_dir().join("containerd.env");
    let text = std::fs::read_to_string(&env).map_err(|e| format!("{}: {e}", env.display()))?;
    let path = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == "COSIGN")
        .map(|(_, v)| PathBuf::from(v.trim()))
        .ok_or_else(|| format!("{} has no COSIGN=", env.display()))?;
    if !path.is_file() {
        return Err(format!(
            "{} (COSIGN= in {}) is missing",
            path.display(),
            env.display()
        ));
    }
    Ok(path)
}

/// The cosign binary, or `None` after printing why the test skips.
pub fn cosign_or_skip() -> Option<PathBuf> {
    match cosign() {
        Ok(path) => Some(path),
        Err(why) => {
            eprintln!(
                "skipped: cosign not provisioned ({why}; run `bash integration/provision.sh`)"
            );
            None
        }
    }
}

/// The signed set, or `None` after printing why the test skips.
pub fn signed() -> Option<&'static Signed> {
    static SET: OnceLock<Result<Signed, String>> = OnceLock::new();
    match SET.get_or_init(make) {
        Ok(set) => Some(set),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The signed set when containerd `version` is provisioned too, or `None` after printing why
/// the test skips.
pub fn provisioned(version: Version) -> Option<&'static Signed> {
    if let Err(e) = containerd_bin_dir(version) {
        eprintln!("skipped: {version} not provisioned ({e:#})");
        return None;
    }
    signed()
}

/// The directory the set is made in, removed when the process exits.
static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn make() -> Result<Signed, String> {
    let cosign = cosign().map_err(|why| {
        format!("cosign not provisioned ({why}; run `bash integration/provision.sh`)")
    })?;
    for tool in ["docker-registry", "skopeo", "tar"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} not installed (`bash integration/provision.sh` installs it)"
            ));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("airlift-signed")
        .tempdir_in("/tmp")
        .map_err(|e| format!("a temporary directory: {e}"))?
        .keep();
    DIR.set(dir.clone()).unwrap();
    unsafe { libc::atexit(remove_dir) };
    let started = Instant::now();
    let set = Maker::new(&dir, cosign)?.make()?;
    eprintln!(
        "signed fixtures made in {:.1}s in {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(set)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Makes the set: the registry, the tools' environment, the steps.
struct Maker {
    dir: PathBuf,
    cosign: PathBuf,
    registry: Registry,
}

/// An image pushed to the registry.
struct Pushed {
    /// `127.0.0.1:PORT/REPO`.
    repo: String,
    digest: String,
    blobs: Vec<String>,
}

impl Pushed {
    fn by_digest(&self) -> String {
        format!("{}@{}", self.repo, self.digest)
    }

    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap()
    }
}

impl Maker {
    fn new(dir: &Path, cosign: PathBuf) -> Result<Maker, String> {
        for sub in ["home", "keys", "layouts", "archives", "registry"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
        }
        let registry = Registry::start(&dir.join("registry"))?;
        Ok(Maker {
            dir: dir.to_path_buf(),
            cosign,
            registry,
        })
    }

    fn make(self) -> Result<Signed, String> {
        let keys = self.dir.join("keys");
        for prefix in ["site", "other"] {
            self.run(self.cosign_cmd().current_dir(&keys).args([
                "generate-key-pair",
                "--output-key-prefix",
                prefix,
            ]))?;
        }
        let simple = self.push("signed/simple", "signed in simple-signing form")?;
        let bundle = self.push("signed/bundle", "signed as a Sigstore bundle")?;
        let unsigned = self.push("unsigned/app", "not signed")?;
        let other = self.push("signed/other", "signed by the other key")?;

        self.sign(&simple, "site", Some(SIMPLE))?;
        self.sign(&other, "other", Some(OTHER))?;
        self.sign(&bundle, "site", None)?;
        // What cosign itself makes of them: each verifies with its own key only.
        self.verify(&simple, "site", true)?;
        self.verify(&bundle, "site", true)?;
        self.verify(&other, "other", true)?;
        self.verify(&other, "site", false)?;

        let sig_tag = |p: &Pushed| format!("sha256-{}.sig", p.hex());
        let sig_manifest = |p: &Pushed| self.manifest_digest(&format!("{}:{}", p.repo, sig_tag(p)));
        let archive =
            |pushed: &Pushed, name: &str, path: PathBuf, signatures: Vec<String>| Archive {
                path,
                name: name.to_string(),
                digest: pushed.digest.clone(),
                blobs: pushed.blobs.clone(),
                signatures,
            };

        // (a) the image and its .sig manifest, both named in index.json.
        let path = self.layout("simple", |l| {
            self.copy(&simple.by_digest(), l, Some(SIMPLE))?;
            self.copy(
                &format!("{}:{}", simple.repo, sig_tag(&simple)),
                l,
                Some(&sig_tag(&simple)),
            )
        })?;
        let simple_sig = sig_manifest(&simple)?;
        let simple_archive = archive(&simple, SIMPLE, path, vec![simple_sig.clone()]);

        // (b) the image and its bundle's referrer manifest, listed without a name; and the same
        // through the referrers tag index, the referrer manifest left unlisted.
        let tag_index = format!("{}:sha256-{}", bundle.repo, bundle.hex());
        let index_bytes = self.raw(&tag_index)?;
        let index: serde_json::Value =
            serde_json::from_slice(&index_bytes).map_err(|e| format!("{tag_index}: {e}"))?;
        let referrers: Vec<String> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect();
        if referrers.is_empty() {
            return Err(format!("{tag_index} lists no referrer: {index}"));
        }
        let path = self.layout("bundle", |l| {
            self.copy(&bundle.by_digest(), l, Some(BUNDLE))?;
            for r in &referrers {
                self.copy(&format!("{}@{r}", bundle.repo), l, None)?;
            }
            Ok(())
        })?;
        let bundle_archive = archive(&bundle, BUNDLE, path, referrers.clone());
        let path = self.layout("bundle-tagged", |l| {
            self.copy(&bundle.by_digest(), l, Some(BUNDLE))?;
            for r in &referrers {
                self.copy(&format!("{}@{r}", bundle.repo), l, None)?;
            }
            // The referrer manifests unlisted, the tag index listed in their place.
            let digest = put_blob(l, &index_bytes)?;
            edit_index(l, |manifests| {
                manifests.retain(|m| !referrers.iter().any(|r| m["digest"] == r.as_str()));
                manifests.push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": digest,
                    "size": index_bytes.len(),
                    "annotations": {
                        "org.opencontainers.image.ref.name": format!("sha256-{}", bundle.hex()),
                    },
                }));
            })
        })?;
        let mut tagged_signatures = referrers.clone();
        tagged_signatures.push(sha256(&index_bytes));
        let bundle_tagged_archive = archive(&bundle, BUNDLE, path, tagged_signatures);

        // (c) cosign save of the bundle-signed image.
        let saved_dir = self.dir.join("layouts").join("saved");
        self.run(self.cosign_cmd().args([
            "save",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "--dir",
            saved_dir.to_str().unwrap(),
            &bundle.by_digest(),
        ]))?;
        let path = self.tar(&saved_dir, "saved")?;
        let saved_archive = archive(&bundle, BUNDLE, path, referrers.clone());

        // (d) unsigned.
        let path = self.layout("unsigned", |l| {
            self.copy(&unsigned.by_digest(), l, Some(UNSIGNED))
        })?;
        let unsigned_archive = archive(&unsigned, UNSIGNED, path, vec![]);

        // (e) signed by the other key.
        let path = self.layout("other", |l| {
            self.copy(&other.by_digest(), l, Some(OTHER))?;
            self.copy(
                &format!("{}:{}", other.repo, sig_tag(&other)),
                l,
                Some(&sig_tag(&other)),
            )
        })?;
        let other_archive = archive(&other, OTHER, path, vec![sig_manifest(&other)?]);

        // (f) the simple image and signature under another name; the unsigned image with the
        // simple image's signature as its own.
        let path = self.layout("misnamed", |l| {
            self.copy(&simple.by_digest(), l, Some(MISNAMED))?;
            self.copy(
                &format!("{}:{}", simple.repo, sig_tag(&simple)),
                l,
                Some(&sig_tag(&simple)),
            )
        })?;
        let misnamed_archive = archive(&simple, MISNAMED, path, vec![simple_sig.clone()]);
        let path = self.layout("swapped", |l| {
            self.copy(&unsigned.by_digest(), l, Some(SWAPPED))?;
            self.copy(
                &format!("{}:{}", simple.repo, sig_tag(&simple)),
                l,
                Some(&sig_tag(&unsigned)),
            )
        })?;
        let swapped_archive = archive(&unsigned, SWAPPED, path, vec![simple_sig.clone()]);

        // (g) a signed image and an unsigned one in one layout.
        let path = self.layout("mixed", |l| {
            self.copy(&simple.by_digest(), l, Some(SIMPLE))?;
            self.copy(
                &format!("{}:{}", simple.repo, sig_tag(&simple)),
                l,
                Some(&sig_tag(&simple)),
            )?;
            self.copy(&unsigned.by_digest(), l, Some(UNSIGNED))
        })?;
        let mixed_archive = archive(&simple, SIMPLE, path, vec![simple_sig.clone()]);

        // (h) the simple image saved as docker save does, with and without its signatures
        // file.
        let mut docker = Vec::new();
        for (sub, sigs) in [("docker-save", true), ("docker-save-bare", false)] {
            let dir = self.dir.join("archives").join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join("simple.tar");
            self.run(self.skopeo_cmd().args([
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{}", simple.by_digest()),
                &format!("docker-archive:{}:{SIMPLE}", path.display()),
            ]))?;
            if sigs {
                let sidecar = dir.join("simple.tar.sigs");
                std::fs::copy(&simple_archive.path, &sidecar)
                    .map_err(|e| format!("{}: {e}", sidecar.display()))?;
            }
            docker.push(archive(&simple, SIMPLE, path, vec![simple_sig.clone()]));
        }
        let docker_save_bare = docker.pop().unwrap();
        let docker_save = docker.pop().unwrap();

        Ok(Signed {
            dir: self.dir.clone(),
            site_pub: keys.join("site.pub"),
            other_pub: keys.join("other.pub"),
            simple: simple_archive,
            bundle: bundle_archive,
            bundle_tagged: bundle_tagged_archive,
            saved: saved_archive,
            unsigned: unsigned_archive,
            other: other_archive,
            misnamed: misnamed_archive,
            swapped: swapped_archive,
            mixed: mixed_archive,
            docker_save,
            docker_save_bare,
        })
    }

    /// cosign with no password on the keys, its home (and any cache) in the set's directory.
    fn cosign_cmd(&self) -> Command {
        let mut c = Command::new(&self.cosign);
        c.env("HOME", self.dir.join("home"))
            .env("COSIGN_PASSWORD", "")
            .env("COSIGN_YES", "true");
        c
    }

    /// skopeo, plain HTTP, no policy, its home in the set's directory.
    fn skopeo_cmd(&self) -> Command {
        let mut c = Command::new("skopeo");
        c.env("HOME", self.dir.join("home"))
            .arg("--insecure-policy");
        c
    }

    /// Runs `cmd`; its stdout, or an error with its stderr.
    fn run(&self, cmd: &mut Command) -> Result<Vec<u8>, String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out.stdout)
    }

    /// A small image of its own (one layer holding `text`) pushed as `REPO:1`.
    fn push(&self, repo: &str, text: &str) -> Result<Pushed, String> {
        let layout = self
            .dir
            .join("layouts")
            .join(format!("src-{}", repo.replace('/', "-")));
        let (digest, blobs) = write_image(&layout, text).map_err(|e| format!("{repo}: {e}"))?;
        let repo = format!("{}/{repo}", self.registry.addr);
        self.run(self.skopeo_cmd().args([
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{repo}:1"),
        ]))?;
        Ok(Pushed {
            repo,
            digest,
            blobs,
        })
    }

    /// Signs `image` with the key `key` offline: simple signing with `identity` as the signed
    /// name when given, else a Sigstore bundle.
    fn sign(&self, image: &Pushed, key: &str, identity: Option<&str>) -> Result<(), String> {
        let key = self.dir.join("keys").join(format!("{key}.key"));
        let mut cmd = self.cosign_cmd();
        cmd.args(["sign", "--key"]).arg(&key).args([
            "--use-signing-config=false",
            "--tlog-upload=false",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "-y",
        ]);
        if let Some(identity) = identity {
            cmd.arg("--new-bundle-format=false")
                .arg(format!("--sign-container-identity={identity}"));
        }
        self.run(cmd.arg(image.by_digest())).map(drop)
    }

    /// `cosign verify` of `image` with the public key `key` (offline: no transparency log):
    /// an error unless it `accepts` as expected.
    fn verify(&self, image: &Pushed, key: &str, accepts: bool) -> Result<(), String> {
        let key = self.dir.join("keys").join(format!("{key}.pub"));
        let out = self
            .cosign_cmd()
            .args(["verify", "--key"])
            .arg(&key)
            .args([
                "--insecure-ignore-tlog",
                "--allow-http-registry",
                "--allow-insecure-registry",
                &image.by_digest(),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cosign verify: {e}"))?;
        if out.status.success() != accepts {
            return Err(format!(
                "cosign verify --key {} {}: {} (expected it to {}):\n{}",
                key.display(),
                image.by_digest(),
                out.status,
                if accepts { "accept" } else { "refuse" },
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The raw manifest at `reference` (`127.0.0.1:PORT/REPO:TAG` or `@DIGEST`).
    fn raw(&self, reference: &str) -> Result<Vec<u8>, String> {
        self.run(self.skopeo_cmd().args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ]))
    }

    /// The digest of the manifest at `reference`.
    fn manifest_digest(&self, reference: &str) -> Result<String, String> {
        Ok(sha256(&self.raw(reference)?))
    }

    /// Copies the manifest at `reference` (digests kept) into the layout `layout`, named
    /// `ref_name` in its index, or unnamed.
    fn copy(&self, reference: &str, layout: &Path, ref_name: Option<&str>) -> Result<(), String> {
        let dest = match ref_name {
            Some(n) => format!("oci:{}:{n}", layout.display()),
            None => format!("oci:{}", layout.display()),
        };
        self.run(self.skopeo_cmd().args([
            "copy",
            "-q",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &dest,
        ]))
        .map(drop)
    }

    /// An OCI layout filled by `fill`, tarred into `archives/<name>.tar`.
    fn layout(
        &self,
        name: &str,
        fill: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<PathBuf, String> {
        let dir = self.dir.join("layouts").join(name);
        fill(&dir)?;
        self.tar(&dir, name)
    }

    /// `archives/<name>.tar` of the layout `dir`: `oci-layout`, `index.json`, `blobs/`.
    fn tar(&self, dir: &Path, name: &str) -> Result<PathBuf, String> {
        let path = self.dir.join("archives").join(format!("{name}.tar"));
        self.run(
            Command::new("tar")
                .arg("-C")
                .arg(dir)
                .arg("-cf")
                .arg(&path)
                .args(["oci-layout", "index.json", "blobs"]),
        )?;
        Ok(path)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Writes `bytes` into the layout's blobs; its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> Result<String, String> {
    let digest = sha256(bytes);
    let dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(digest.strip_prefix("sha256:").unwrap());
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(digest)
}

/// Rewrites the `manifests` of the layout's `index.json` with `edit`.
fn edit_index(layout: &Path, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Result<(), String> {
    let path = layout.join("index.json");
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut index: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut manifests: Vec<serde_json::Value> =
        serde_json::from_value(index["manifests"].take()).unwrap_or_default();
    edit(&mut manifests);
    index["manifests"] = serde_json::Value::Array(manifests);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// An OCI layout at `dir` holding one image tagged `1`: a layer (uncompressed tar) with one
/// file holding `text`, its config, its manifest. The manifest's digest, and the digests of
/// manifest, config and layer.
fn write_image(dir: &Path, text: &str) -> Result<(String, Vec<String>), String> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    layer
        .append_data(&mut header, "hello.txt", text.as_bytes())
        .map_err(|e| e.to_string())?;
    let layer = layer.into_inner().map_err(|e| e.to_string())?;
    let layer_digest = put_blob(dir, &layer)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = put_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let digest = put_blob(dir, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write("index.json", &serde_json::to_vec(&index).unwrap())?;
    Ok((digest.clone(), vec![digest, config_digest, layer_digest]))
}

/// A `docker-registry` on a free loopback port, storing under `dir`, killed when dropped.
struct Registry {
    addr: SocketAddr,
    child: Child,
}

impl Registry {
    fn start(dir: &Path) -> Result<Registry, String> {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("docker-registry: {e}"))?;
        let mut registry = Registry { addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || registry.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry did not come up on {addr}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
