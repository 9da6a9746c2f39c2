//! [`Introspection`] over containerd's introspection and version services.

use super::Grpc;
use crate::containerd::{ContainerdError, Introspection, Result};
use containerd_client::services::v1 as api;
use containerd_client::services::v1::introspection_client::IntrospectionClient;
use std::path::PathBuf;

impl Grpc {
    async fn content_plugin_export(&self, key: &str) -> Result<Option<PathBuf>> {
        let resp = IntrospectionClient::new(self.channel.clone())
            .plugins(self.request(api::PluginsRequest {
                filters: vec!["type==io.containerd.content.v1".into()],
            }))
            .await
            .map_err(|s| ContainerdError::from_status("introspection", &s))?
            .into_inner();
        Ok(resp
            .plugins
            .iter()
            .find(|p| p.init_err.is_none())
            .and_then(|p| p.exports.get(key))
            .map(PathBuf::from))
    }
}

#[async_trait::async_trait]
impl Introspection for Grpc {
    async fn content_root(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("root").await
    }

    async fn content_proxy_address(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("address").await
    }

    async fn version(&self) -> Result<String> {
        let v = api::version_client::VersionClient::new(self.channel.clone())
            .version(self.request(()))
            .await
            .map_err(|s| ContainerdError::from_status("version", &s))?
            .into_inner()
            .version;
        Ok(v.trim_start_matches('v').to_string())
    }
}
