//! [`Transfer`] over containerd's transfer service.

use super::Grpc;
use crate::containerd::{ContainerdError, Pull, Result, Transfer};
use containerd_client::services::v1 as api;

#[async_trait::async_trait]
impl Transfer for Grpc {
    async fn pull(&self, pull: &Pull) -> Result<()> {
        use containerd_client::types::transfer as t;
        use prost::Message;
        // The transfer service finds its implementation of a source or destination by the
        // message's full name, without the `type.googleapis.com/` prefix.
        let any = |name: &str, value: Vec<u8>| prost_types::Any {
            type_url: format!("containerd.types.transfer.{name}"),
            value,
        };
        let source = t::OciRegistry {
            reference: pull.from.clone().unwrap_or_else(|| pull.reference.clone()),
            resolver: Some(t::RegistryResolver {
                host_dir: pull
                    .hosts_dir
                    .as_ref()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                default_scheme: if pull.plain_http {
                    "http".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
        };
        let destination = t::ImageStore {
            name: pull.reference.clone(),
            labels: pull.labels.clone().into_iter().collect(),
            platforms: pull
                .platforms
                .iter()
                .map(|p| containerd_client::types::Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone(),
                    os_version: p.os_version.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let request = api::TransferRequest {
            source: Some(any("OCIRegistry", source.encode_to_vec())),
            destination: Some(any("ImageStore", destination.encode_to_vec())),
            options: None,
        };
        api::transfer_client::TransferClient::new(self.channel.clone())
            .transfer(self.request(request))
            .await
            .map_err(|s| ContainerdError::from_status(format!("pull {}", pull.reference), &s))?;
        Ok(())
    }
}
