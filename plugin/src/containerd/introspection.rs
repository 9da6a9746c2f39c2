//! containerd's introspection and version services: which containerd this is, and where its
//! content store keeps blobs (a directory on this machine, or a content proxy plugin).

use super::Result;
use std::path::PathBuf;

/// What containerd says of itself.
#[async_trait::async_trait]
pub trait Introspection: Send + Sync {
    /// The content store's root directory as containerd's introspection reports it; `None` when
    /// its content store is a proxy plugin.
    async fn content_root(&self) -> Result<Option<PathBuf>>;

    /// The socket of containerd's content proxy plugin, when its content store is one.
    async fn content_proxy_address(&self) -> Result<Option<PathBuf>>;

    /// containerd's version (`2.1.4`, `1.7.24`), as its Version service reports it.
    async fn version(&self) -> Result<String>;
}
