//! containerd's images service: the image records airlift creates, points, labels and reads,
//! and the target an import, a record and a repair speak of ([`ImageTarget`]).

use super::{Labels, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// An image record as containerd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Its name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
    /// Labels.
    pub labels: HashMap<String, String>,
}

/// An image name and what it points to: what an import creates, what airlift records, and what
/// a repair recreates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTarget {
    /// The image's name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
    /// The target descriptor's annotations (from the archive's index entry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageTarget {
    /// What an existing image record points to (it carries no annotations).
    pub fn of(record: ImageRecord) -> ImageTarget {
        ImageTarget {
            name: record.name,
            media_type: record.media_type,
            digest: record.digest,
            size: record.size,
            annotations: BTreeMap::new(),
        }
    }

    /// Whether `image` points where this target does.
    pub fn points(&self, image: &ImageRecord) -> bool {
        image.digest == self.digest
    }
}

/// Label changes: a value sets the label, `None` removes it.
pub type LabelChanges = BTreeMap<String, Option<String>>;

/// The images service. Every change is published as an event (`/images/create`,
/// `/images/update`, `/images/delete`) with the record's labels after it.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    /// An image record, or `None`.
    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>>;

    /// The image records matching containerd filters (all with none).
    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>>;

    /// Creates an image record, or points an existing one at `image`'s target and sets the given
    /// labels (others are kept).
    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()>;

    /// Sets or (with `None`) removes labels of an existing image, keeping its target.
    async fn set_image_labels(&self, image: &ImageRecord, changes: &LabelChanges) -> Result<()>;

    /// Deletes the record `name` if it still targets `digest` (containerd's `target` check; 1.7
    /// ignores it, so callers read the record just before). An absent name is no error.
    async fn delete_image(&self, name: &str, digest: &str) -> Result<()>;
}
