//! The fake's introspection: the version and content store it was told to report.

use super::Fake;
use crate::containerd::{Introspection, Result};
use std::path::PathBuf;

#[async_trait::async_trait]
impl Introspection for Fake {
    async fn version(&self) -> Result<String> {
        self.enter("version", "")?;
        Ok(self.state().version.clone())
    }

    async fn content_root(&self) -> Result<Option<PathBuf>> {
        self.enter("content_root", "")?;
        Ok(self.state().content_root.clone())
    }

    async fn content_proxy_address(&self) -> Result<Option<PathBuf>> {
        self.enter("content_proxy_address", "")?;
        Ok(self.state().proxy_address.clone())
    }
}
