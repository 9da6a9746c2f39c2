//! [`Leases`] over containerd's leases service.

use super::{unless, Grpc};
use crate::containerd::{snapshot_resource, ContainerdError, Labels, Leases, Result};
use crate::error::Class;
use containerd_client::services::v1 as api;
use std::collections::HashMap;
use std::time::Duration;

impl Grpc {
    /// Adds or removes one resource of a lease.
    async fn lease_update(&self, id: &str, resource: api::Resource, add: bool) -> Result<()> {
        let what = format!("update lease {id} with {}", resource.id);
        let mut client = self.leases();
        let result = if add {
            client
                .add_resource(self.request(api::AddResourceRequest {
                    id: id.to_string(),
                    resource: Some(resource),
                }))
                .await
                .map(|_| ())
        } else {
            client
                .delete_resource(self.request(api::DeleteResourceRequest {
                    id: id.to_string(),
                    resource: Some(resource),
                }))
                .await
                .map(|_| ())
        };
        result.map_err(|s| ContainerdError::from_status(what, &s))
    }

    /// The ids of a lease's resources of type `kind`.
    async fn lease_resources(&self, id: &str, kind: &str) -> Result<Vec<String>> {
        let resp = self
            .leases()
            .list_resources(self.request(api::ListResourcesRequest { id: id.to_string() }))
            .await
            .map_err(|s| ContainerdError::from_status(format!("list resources of lease {id}"), &s))?
            .into_inner();
        Ok(resp
            .resources
            .into_iter()
            .filter(|r| r.r#type == kind)
            .map(|r| r.id)
            .collect())
    }
}

#[async_trait::async_trait]
impl Leases for Grpc {
    async fn create_lease(&self, id: &str, labels: Labels, expire: Option<Duration>) -> Result<()> {
        let mut labels: HashMap<String, String> = labels.into_iter().collect();
        if let Some(after) = expire {
            let at = std::time::SystemTime::now() + after;
            labels.insert(
                "containerd.io/gc.expire".into(),
                crate::containerd::rfc3339(at),
            );
        }
        let r = self
            .leases()
            .create(self.request(api::CreateRequest {
                id: id.to_string(),
                labels,
            }))
            .await;
        unless(r, Class::AlreadyExists, || format!("create lease {id}")).map(|_| ())
    }

    async fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        let r = self
            .leases()
            .delete(self.request(api::DeleteRequest {
                id: id.to_string(),
                sync,
            }))
            .await;
        unless(r, Class::NotFound, || format!("delete lease {id}")).map(|_| ())
    }

    async fn list_leases(&self, filter: &str) -> Result<Vec<String>> {
        let resp = self
            .leases()
            .list(self.request(api::ListRequest {
                filters: vec![filter.to_string()],
            }))
            .await
            .map_err(|s| ContainerdError::from_status("list leases", &s))?
            .into_inner();
        Ok(resp.leases.into_iter().map(|l| l.id).collect())
    }

    async fn lease_content(&self, id: &str) -> Result<Vec<String>> {
        self.lease_resources(id, "content").await
    }

    async fn lease_resource(&self, id: &str, digest: &str, add: bool) -> Result<()> {
        let resource = api::Resource {
            id: digest.to_string(),
            r#type: "content".into(),
        };
        self.lease_update(id, resource, add).await
    }

    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>> {
        self.lease_resources(id, &snapshot_resource(snapshotter))
            .await
    }

    async fn lease_snapshot(
        &self,
        id: &str,
        snapshotter: &str,
        key: &str,
        add: bool,
    ) -> Result<()> {
        let resource = api::Resource {
            id: key.to_string(),
            r#type: snapshot_resource(snapshotter),
        };
        self.lease_update(id, resource, add).await
    }
}
