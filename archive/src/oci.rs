//! The OCI and Docker image formats, shared by every station that reads or writes images (the
//! archive's plan, ingest, unpacking, the registry endpoint, client pulls, the visibility walk):
//! media types, descriptors, manifests, indexes and configs, containerd's GC labels of children,
//! and the JSON encoding containerd uses when it synthesises them.

use crate::digest::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker uncompressed layer.
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker compressed layer.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// containerd's annotation carrying the full image name on index entries.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's reference-name annotation (a tag, or sometimes a full reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Whether a media type names an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Whether a media type names an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// containerd's `images.IsKnownConfig`.
pub fn is_known_config(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_DOCKER_CONFIG
            | MEDIA_OCI_CONFIG
            | "application/octet-stream"
            | "application/vnd.containerd.container.checkpoint.config.v1+proto"
    )
}

/// containerd's `images.IsLayerType`.
pub fn is_layer(media_type: &str) -> bool {
    let base = media_type.split('+').next().unwrap_or(media_type);
    base.starts_with("application/vnd.oci.image.layer.")
        || base.starts_with("application/vnd.docker.image.rootfs.")
        || media_type == "application/vnd.containerd.container.rw.tar"
}

/// Whether a layer is foreign or non-distributable: its content need not travel with the image
/// (its descriptor carries the URLs it comes from), so an archive may leave it out, as `docker
/// save` and registries do.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.docker.image.rootfs.foreign.")
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

/// The garbage-collection label prefix containerd's `images.ChildGCLabels` uses for a child of
/// this media type. Keys ending in `.` get an index appended.
pub fn gc_label_prefix(media_type: &str) -> &'static str {
    if is_known_config(media_type) {
        "containerd.io/gc.ref.content.config"
    } else if is_manifest(media_type) {
        "containerd.io/gc.ref.content.m."
    } else if is_layer(media_type) {
        "containerd.io/gc.ref.content.l."
    } else {
        "containerd.io/gc.ref.content."
    }
}

/// Computes containerd's GC labels for a parent with these children, in order
/// (`images.SetChildrenMappedLabels`).
pub fn gc_labels(children: &[Descriptor]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for child in children {
        let prefix = gc_label_prefix(&child.media_type);
        let n = counts.entry(prefix).or_insert(0);
        let key = if *n > 0 || prefix.ends_with('.') {
            format!("{prefix}{n}")
        } else {
            prefix.to_string()
        };
        *n += 1;
        labels.insert(key, child.digest.to_string());
    }
    labels
}

/// An OCI content descriptor. Field order follows the Go struct so that synthesised JSON
/// matches containerd byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Alternative download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations (image names on index entries).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform of a manifest referenced from an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type, for artifacts.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub artifact_type: String,
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: size as i64,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: String::new(),
        }
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// The referenced manifests or nested indexes.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (or an OCI 1.1 artifact manifest in the same shape).
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (an OCI 1.1 referrer: a signature, an attestation).
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// The artifact type of a referrer (else its config's media type says it).
    #[serde(rename = "artifactType", default)]
    pub artifact_type: String,
    /// The manifest's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config airlift reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// The platform fields (`architecture`, `os`, `variant`, …) at the config's top level.
    #[serde(flatten)]
    pub platform: Platform,
    /// The layer chain.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// `layers` for a chain of layers (empty is taken as `layers`, as containerd does).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Digests of the uncompressed layers.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Why an image config gives no layer chain airlift can unpack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The config is not a config (its parser's complaint).
    #[error("image config {digest}: {cause}")]
    Config {
        /// The config.
        digest: Digest,
        /// What the JSON parser said.
        cause: String,
    },
    /// `rootfs.type` is not `layers`.
    #[error("rootfs type {0:?} is not a layer chain")]
    NotLayers(String),
    /// A diff ID that is not a digest.
    #[error("diff ID {0:?} is not a sha256 digest")]
    DiffId(String),
}

/// The diff IDs of a config's layer chain, or why it has none airlift can unpack.
pub fn layer_chain(config: &ImageConfig) -> Result<Vec<Digest>, ChainError> {
    let Some(rootfs) = &config.rootfs else {
        return Ok(Vec::new());
    };
    if !rootfs.kind.is_empty() && rootfs.kind != "layers" {
        return Err(ChainError::NotLayers(rootfs.kind.clone()));
    }
    rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|_| ChainError::DiffId(d.clone()))
        })
        .collect()
}

/// One image of a docker-save `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerSaveImage {
    /// Path of the config file in the archive.
    pub config: String,
    /// Names, e.g. `busybox:1.35`.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer files, base first.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// `oci-layout`.
#[derive(Debug, Clone, Deserialize)]
pub struct OciLayout {
    /// Must be `1.0.0`.
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// The Docker schema 2 manifest containerd's importer synthesises for a docker-save image.
#[derive(Serialize)]
pub struct SynthesizedManifest<'a> {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Always the Docker schema 2 manifest type.
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    /// The config.
    pub config: &'a Descriptor,
    /// The layers.
    pub layers: &'a [Descriptor],
}

/// The index containerd's importer synthesises for a docker-save archive (no media type field).
#[derive(Serialize)]
pub struct SynthesizedIndex<'a> {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// One entry per name (or per unnamed image).
    pub manifests: &'a [Descriptor],
}

/// Serialises like Go's `encoding/json.Marshal`: compact, struct field order, sorted map keys,
/// and `<`, `>`, `&`, U+2028, U+2029 escaped.
pub fn go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let s = serde_json::to_string(value).expect("serialising plain data cannot fail");
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(media: &str, seed: &[u8]) -> Descriptor {
        Descriptor::new(media, Digest::of(seed), 1)
    }

    #[test]
    fn gc_labels_follow_containerd_numbering() {
        let labels = gc_labels(&[
            d(MEDIA_DOCKER_CONFIG, b"c"),
            d(MEDIA_DOCKER_LAYER, b"l0"),
            d("application/vnd.oci.image.layer.v1.tar+zstd", b"l1"),
        ]);
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "containerd.io/gc.ref.content.config",
                "containerd.io/gc.ref.content.l.0",
                "containerd.io/gc.ref.content.l.1"
            ]
        );
        let labels = gc_labels(&[
            d(MEDIA_OCI_MANIFEST, b"a"),
            d(MEDIA_DOCKER_MANIFEST, b"b"),
            d(MEDIA_OCI_INDEX, b"i"),
        ]);
        assert_eq!(
            labels["containerd.io/gc.ref.content.m.0"],
            Digest::of(b"a").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.m.1"],
            Digest::of(b"b").to_string()
        );
        assert_eq!(
            labels["containerd.io/gc.ref.content.0"],
            Digest::of(b"i").to_string()
        );
    }

    #[test]
    fn go_json_escapes_like_go() {
        let mut desc = d(MEDIA_OCI_MANIFEST, b"x");
        desc.annotations.insert("k".into(), "a<b>&c".into());
        let s = String::from_utf8(go_json(&desc)).unwrap();
        assert!(s.contains(r#""a\u003cb\u003e\u0026c""#), "{s}");
        assert!(s.starts_with(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:"#
        ));
    }

    #[test]
    fn platform_serialises_in_go_field_order() {
        let p = Platform::new("linux", "arm", "v7");
        assert_eq!(
            String::from_utf8(go_json(&p)).unwrap(),
            r#"{"architecture":"arm","os":"linux","variant":"v7"}"#
        );
    }
}
