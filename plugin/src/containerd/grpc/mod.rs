//! The gRPC client of containerd's API socket: the connection, its namespace and lease, and
//! each service trait over containerd's service of that name, one file each. Every status
//! containerd answers becomes a [`ContainerdError`] here, with its class; nothing above looks at
//! gRPC codes.

mod content;
mod events;
mod images;
mod introspection;
mod leases;
mod snapshots;
mod transfer;

use super::{Client, Containerd, ContainerdError, Result, Scope};
use crate::error::Class;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::{
    content_client::ContentClient, images_client::ImagesClient, leases_client::LeasesClient,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Request;

/// Largest message airlift accepts from containerd (a `Read` chunk, a long image list).
const MAX_MESSAGE: usize = 64 << 20;

/// A connection to containerd's socket, bound to a namespace and optionally a lease.
#[derive(Clone)]
pub struct Grpc {
    channel: Channel,
    scope: Scope,
}

impl Grpc {
    /// Connects to the socket at `address`, waiting at most `timeout`.
    pub async fn connect(address: &Path, namespace: &str, timeout: Duration) -> Result<Grpc> {
        let unreachable = |cause: String| ContainerdError::Unreachable {
            address: address.to_path_buf(),
            cause,
        };
        let channel = tokio::time::timeout(timeout, containerd_client::connect(address))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(crate::error::chain(&e)))?;
        Ok(Grpc {
            channel,
            scope: Scope {
                address: address.to_path_buf(),
                namespace: namespace.to_string(),
                lease: None,
            },
        })
    }

    /// Connects, as a shared handle.
    pub async fn client(address: &Path, namespace: &str, timeout: Duration) -> Result<Client> {
        Ok(Arc::new(Grpc::connect(address, namespace, timeout).await?))
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        md.insert(
            "containerd-namespace",
            self.scope.namespace.parse().expect("namespace is ASCII"),
        );
        if let Some(lease) = &self.scope.lease {
            md.insert(
                "containerd-lease",
                lease.parse().expect("lease id is ASCII"),
            );
        }
        req
    }

    /// The same connection under `lease` (a concrete [`Containerd::with_lease`]).
    pub fn leased(&self, lease: &str) -> Grpc {
        Grpc {
            channel: self.channel.clone(),
            scope: self.scope.leased(Some(lease)),
        }
    }

    /// The raw Content API client, for checks of the wire protocol itself
    /// (`testkit::conformance::content_api`); requests go through [`Grpc::wrap`].
    #[cfg(any(test, feature = "testkit"))]
    pub fn raw_content(&self) -> ContentClient<Channel> {
        self.content()
    }

    /// A request carrying this handle's namespace and lease.
    #[cfg(any(test, feature = "testkit"))]
    pub fn wrap<T>(&self, msg: T) -> Request<T> {
        self.request(msg)
    }

    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// What CRI (served on the same socket) reports of an image: `None` when it does not see it.
    pub async fn cri_image(&self, name: &str) -> Result<Option<k8s_cri::v1::Image>> {
        use k8s_cri::v1 as cri;
        let request = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: name.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let status = cri::image_service_client::ImageServiceClient::new(self.channel.clone())
            .image_status(Request::new(request))
            .await
            .map_err(|s| ContainerdError::from_status(format!("CRI image status {name}"), &s))?
            .into_inner();
        Ok(status.image)
    }
}

/// `Ok(None)` for a status of class `absent`, the error otherwise.
fn unless<T>(
    result: std::result::Result<T, tonic::Status>,
    absent: Class,
    op: impl FnOnce() -> String,
) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(s) if Class::of_status(&s) == absent => Ok(None),
        Err(s) => Err(ContainerdError::from_status(op(), &s)),
    }
}

impl Containerd for Grpc {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn with_lease(&self, lease: Option<&str>) -> Client {
        Arc::new(Grpc {
            channel: self.channel.clone(),
            scope: self.scope.leased(lease),
        })
    }
}
