//! containerd's transfer service: an image pulled by containerd itself (a pull list's line).

use super::{Labels, Result};
use std::path::PathBuf;

/// A pull by containerd itself (its transfer service): from the registry of `reference`, as the
/// hosts.toml files of `hosts_dir` (or containerd's defaults) say, into an image record named
/// `reference` created with `labels`; content under the handle's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// The image, normalised (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// containerd's registry hosts directory (`certs.d`), if not its default.
    pub hosts_dir: Option<PathBuf>,
    /// The image record's labels.
    pub labels: Labels,
    /// The platforms whose content is pulled; every platform when empty.
    pub platforms: Vec<crate::platform::Platform>,
    /// Where to pull it from instead, as a reference on another registry (a followed peer's
    /// endpoint: `10.0.0.5:5050/library/busybox:1.36`).
    pub from: Option<String>,
    /// The registry the pull's source names speaks plain HTTP (a followed `http://` peer).
    pub plain_http: bool,
}

/// The transfer service.
#[async_trait::async_trait]
pub trait Transfer: Send + Sync {
    /// Has containerd pull an image ([`Pull`]) through its transfer service; returns once its
    /// record exists. containerd 1.7's transfer service takes no hosts directory: see
    /// [`crate::pull`] for the pull airlift makes itself there.
    async fn pull(&self, pull: &Pull) -> Result<()>;
}
