//! [`Snapshots`] over containerd's snapshots and diff services.

use super::{unless, Grpc};
use crate::containerd::{
    ContainerdError, Descriptor, Labels, Mount, Result, SnapshotInfo, SnapshotKind, Snapshots,
};
use crate::digest::Digest;
use crate::error::Class;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots as snapshots_api;

#[async_trait::async_trait]
impl Snapshots for Grpc {
    async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        let resp = self
            .snapshots()
            .prepare(self.request(snapshots_api::PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
                parent: parent.to_string(),
                labels: labels.clone().into_iter().collect(),
            }))
            .await
            .map_err(|s| {
                ContainerdError::from_status(
                    format!("prepare snapshot {key:?} in {snapshotter}"),
                    &s,
                )
            })?
            .into_inner();
        Ok(resp.mounts.into_iter().map(mount).collect())
    }

    async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &Labels,
    ) -> Result<()> {
        self.snapshots()
            .commit(self.request(snapshots_api::CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: name.to_string(),
                key: key.to_string(),
                labels: labels.clone().into_iter().collect(),
            }))
            .await
            .map_err(|s| {
                ContainerdError::from_status(format!("commit snapshot {name} in {snapshotter}"), &s)
            })?;
        Ok(())
    }

    async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>> {
        let r = self
            .snapshots()
            .stat(self.request(snapshots_api::StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            }))
            .await;
        Ok(unless(r, Class::NotFound, || {
            format!("stat snapshot {key:?} in {snapshotter}")
        })?
        .and_then(|r| r.into_inner().info)
        .map(|i| SnapshotInfo {
            kind: match snapshots_api::Kind::try_from(i.kind) {
                Ok(snapshots_api::Kind::Active) => SnapshotKind::Active,
                Ok(snapshots_api::Kind::Committed) => SnapshotKind::Committed,
                _ => SnapshotKind::Other,
            },
            name: i.name,
            parent: i.parent,
            labels: i.labels,
        }))
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        let r = self
            .snapshots()
            .remove(self.request(snapshots_api::RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            }))
            .await;
        unless(r, Class::NotFound, || {
            format!("remove snapshot {key:?} in {snapshotter}")
        })
        .map(|_| ())
    }

    async fn apply_diff(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Digest> {
        let op = || format!("apply layer {} ({})", layer.digest, layer.media_type);
        let resp = DiffClient::new(self.channel.clone())
            .apply(
                self.request(api::ApplyRequest {
                    diff: Some(containerd_client::types::Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.to_string(),
                        size: layer.size,
                        annotations: layer.annotations.clone().into_iter().collect(),
                    }),
                    mounts: mounts
                        .iter()
                        .map(|m| containerd_client::types::Mount {
                            r#type: m.kind.clone(),
                            source: m.source.clone(),
                            target: m.target.clone(),
                            options: m.options.clone(),
                        })
                        .collect(),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|s| ContainerdError::from_status(op(), &s))?
            .into_inner();
        let applied = resp.applied.unwrap_or_default().digest;
        applied.parse().map_err(|_| {
            ContainerdError::call(
                op(),
                Class::Internal,
                format!("the differ answered a malformed digest {applied:?}"),
            )
        })
    }
}

fn mount(m: containerd_client::types::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}
