//! The gRPC client of containerd's API socket: [`Containerd`] over containerd's images, leases,
//! content, introspection, snapshots and diff services. Every status containerd answers becomes a
//! [`ContainerdError`] here, with its class; nothing above looks at gRPC codes.

use super::{
    BlobInfo, Chunk, Chunks, Client, Containerd, ContainerdError, Descriptor, Event, Events,
    ImageRecord, ImageTarget, LabelChanges, Labels, Mount, Pull, Result, Scope, SnapshotInfo,
    SnapshotKind, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots::{
    self as snapshots_api, snapshots_client::SnapshotsClient,
};
use containerd_client::services::v1::{
    content_client::ContentClient, diff_client::DiffClient, events_client::EventsClient,
    images_client::ImagesClient, introspection_client::IntrospectionClient,
    leases_client::LeasesClient,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
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
    /// ([`crate::store::conformance::content_api`]); requests go through [`Grpc::wrap`].
    pub fn raw_content(&self) -> ContentClient<Channel> {
        self.content()
    }

    /// A request carrying this handle's namespace and lease.
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

    /// Updates the fields `paths` of an image record to `image`'s.
    async fn update_image(&self, image: api::Image, paths: Vec<String>, op: &str) -> Result<()> {
        let name = image.name.clone();
        self.images()
            .update(self.request(api::UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask { paths }),
                ..Default::default()
            }))
            .await
            .map_err(|s| ContainerdError::from_status(format!("{op} {name}"), &s))?;
        Ok(())
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

fn descriptor(image: &ImageTarget) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: image.media_type.clone(),
        digest: image.digest.clone(),
        size: image.size,
        annotations: image.annotations.clone().into_iter().collect(),
    }
}

/// Decodes an event envelope by its topic.
fn event(envelope: containerd_client::types::Envelope) -> Event {
    use prost::Message;
    let data = envelope.event.map(|a| a.value).unwrap_or_default();
    let data = data.as_slice();
    let other = || Event::Other {
        topic: envelope.topic.clone(),
    };
    match envelope.topic.as_str() {
        "/images/create" => api::ImageCreate::decode(data).map_or_else(
            |_| other(),
            |e| Event::ImageCreated {
                name: e.name,
                labels: e.labels,
            },
        ),
        "/images/update" => api::ImageUpdate::decode(data).map_or_else(
            |_| other(),
            |e| Event::ImageUpdated {
                name: e.name,
                labels: e.labels,
            },
        ),
        "/images/delete" => api::ImageDelete::decode(data)
            .map_or_else(|_| other(), |e| Event::ImageDeleted { name: e.name }),
        "/content/create" => containerd_client::events::ContentCreate::decode(data)
            .map_or_else(|_| other(), |e| Event::ContentCreated { digest: e.digest }),
        _ => other(),
    }
}

fn image_record(i: api::Image) -> ImageRecord {
    let t = i.target.unwrap_or_default();
    ImageRecord {
        name: i.name,
        media_type: t.media_type,
        digest: t.digest,
        size: t.size,
        labels: i.labels,
    }
}

#[async_trait::async_trait]
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

    async fn content_root(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("root").await
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

    async fn content_proxy_address(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("address").await
    }

    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let r = self
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        Ok(
            unless(r, Class::NotFound, || format!("content info {digest}"))?.map(|r| {
                let info = r.into_inner().info.unwrap_or_default();
                BlobInfo {
                    size: info.size as u64,
                    labels: info.labels,
                }
            }),
        )
    }

    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.request(api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.to_string(),
                    labels: labels.clone().into_iter().collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| ContainerdError::from_status(format!("label blob {digest}"), &s))?;
        Ok(())
    }

    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        let op = || format!("read blob {digest}");
        let mut stream = self
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.to_string(),
                offset: offset as i64,
                size: size as i64,
            }))
            .await
            .map_err(|s| ContainerdError::from_status(op(), &s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| ContainerdError::from_status(op(), &s))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn write(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
        chunks: Chunks,
    ) -> Result<Written> {
        let committed = Arc::new(AtomicBool::new(false));
        let mut offset = 0u64;
        let (r, expected_str) = (reference.to_string(), expected.map(|d| d.to_string()));
        let saw_commit = committed.clone();
        let messages = tokio_stream::wrappers::ReceiverStream::new(chunks).map(move |chunk| {
            let mut msg = api::WriteContentRequest {
                r#ref: r.clone(),
                total: total as i64,
                expected: expected_str.clone().unwrap_or_default(),
                ..Default::default()
            };
            match chunk {
                Chunk::Data(data) => {
                    msg.action = api::WriteAction::Write as i32;
                    msg.offset = offset as i64;
                    offset += data.len() as u64;
                    msg.data = data;
                }
                Chunk::Commit(digest) => {
                    msg.action = api::WriteAction::Commit as i32;
                    msg.offset = offset as i64;
                    msg.expected = digest.to_string();
                    saw_commit.store(true, Ordering::Relaxed);
                }
            }
            msg
        });
        let result = async {
            let mut resp = self
                .content()
                .write(self.request(messages))
                .await?
                .into_inner();
            while resp.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        }
        .await;
        match result {
            Ok(()) if committed.load(Ordering::Relaxed) => Ok(Written::Committed),
            Ok(()) => Ok(Written::Abandoned),
            Err(s) if Class::of_status(&s) == Class::AlreadyExists => Ok(Written::AlreadyExists),
            Err(s) => Err(ContainerdError::from_status(
                format!(
                    "write blob {}",
                    expected.map_or(reference.to_string(), |d| d.to_string())
                ),
                &s,
            )),
        }
    }

    async fn claim(
        &self,
        reference: &str,
        digest: &Digest,
        size: u64,
        labels: &Labels,
    ) -> Result<bool> {
        let msg = |action: api::WriteAction| {
            let commit = action == api::WriteAction::Commit;
            api::WriteContentRequest {
                action: action as i32,
                r#ref: reference.to_string(),
                total: size as i64,
                expected: digest.to_string(),
                // Labels take effect with the commit: one transaction for blob and labels.
                labels: if commit {
                    labels.clone().into_iter().collect()
                } else {
                    HashMap::new()
                },
                // COMMIT at the current offset, so containerd does not truncate the shared blob.
                offset: if commit { size as i64 } else { 0 },
                ..Default::default()
            }
        };
        let reqs = vec![msg(api::WriteAction::Stat), msg(api::WriteAction::Commit)];
        let result = async {
            let mut resp = self
                .content()
                .write(self.request(tokio_stream::iter(reqs)))
                .await?
                .into_inner();
            while resp.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        }
        .await;
        match result {
            Ok(()) => Ok(true),
            Err(s) if Class::of_status(&s) == Class::AlreadyExists => Ok(false),
            Err(s) => {
                let _ = self.abort(reference).await;
                Err(ContainerdError::from_status(
                    format!("claim blob {digest}"),
                    &s,
                ))
            }
        }
    }

    async fn ingest_refs(&self) -> Result<Vec<String>> {
        let resp = self
            .content()
            .list_statuses(self.request(api::ListStatusesRequest {
                filters: vec!["ref~=^airlift-".into()],
            }))
            .await
            .map_err(|s| ContainerdError::from_status("list ingests", &s))?
            .into_inner();
        Ok(resp.statuses.into_iter().map(|s| s.r#ref).collect())
    }

    async fn abort(&self, reference: &str) -> Result<()> {
        let r = self
            .content()
            .abort(self.request(api::AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await;
        unless(r, Class::NotFound, || format!("abort ingest {reference}")).map(|_| ())
    }

    async fn create_lease(&self, id: &str, labels: Labels, expire: Option<Duration>) -> Result<()> {
        let mut labels: HashMap<String, String> = labels.into_iter().collect();
        if let Some(after) = expire {
            let at = std::time::SystemTime::now() + after;
            labels.insert("containerd.io/gc.expire".into(), super::rfc3339(at));
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

    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let r = self
            .images()
            .get(self.request(api::GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        Ok(unless(r, Class::NotFound, || format!("get image {name}"))?
            .and_then(|r| r.into_inner().image.map(image_record)))
    }

    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>> {
        let resp = self
            .images()
            .list(self.request(api::ListImagesRequest { filters }))
            .await
            .map_err(|s| ContainerdError::from_status("list images", &s))?
            .into_inner();
        Ok(resp.images.into_iter().map(image_record).collect())
    }

    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()> {
        let name = &image.name;
        let record = api::Image {
            name: name.clone(),
            labels: labels.clone().into_iter().collect(),
            target: Some(descriptor(image)),
            ..Default::default()
        };
        let mut client = self.images();
        // New names are the common case: create first, update when the name exists.
        let created = client
            .create(self.request(api::CreateImageRequest {
                image: Some(record.clone()),
                ..Default::default()
            }))
            .await;
        if unless(created, Class::AlreadyExists, || {
            format!("create image {name}")
        })?
        .is_some()
        {
            return Ok(());
        }
        let mut paths = vec!["target".to_string()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        self.update_image(record, paths, "update image").await
    }

    async fn subscribe(&self, topics: &[&str]) -> Result<Events> {
        // One filter per topic (filters are alternatives); each also names the namespace.
        let filters = topics
            .iter()
            .map(|t| format!("namespace=={:?},topic~={t:?}", self.scope.namespace))
            .collect();
        let request = self.request(api::SubscribeRequest { filters });
        let mut client = EventsClient::new(self.channel.clone());
        // containerd answers a subscription only with its first event (no response headers
        // before): the call runs on a task of its own, and the stream is handed back at once.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let call = async {
                let mut stream = match client.subscribe(request).await {
                    Ok(r) => r.into_inner(),
                    Err(s) => {
                        let e = ContainerdError::from_status("subscribe to events", &s);
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                loop {
                    let next = match stream.message().await {
                        Ok(Some(envelope)) => Ok(event(envelope)),
                        Ok(None) => return,
                        Err(s) => Err(ContainerdError::from_status("receive events", &s)),
                    };
                    let failed = next.is_err();
                    if tx.send(next).await.is_err() || failed {
                        return;
                    }
                }
            };
            // Ends with the subscriber (the receiving side dropped), event or not.
            tokio::select! {
                _ = call => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn set_image_labels(&self, image: &ImageRecord, labels: &LabelChanges) -> Result<()> {
        let name = &image.name;
        // The current target is sent along: containerd dereferences it even when only labels
        // are updated (an update without a target crashes containerd 1.7 and 2.1).
        let update = api::Image {
            name: name.clone(),
            labels: labels
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect(),
            target: Some(containerd_client::types::Descriptor {
                media_type: image.media_type.clone(),
                digest: image.digest.clone(),
                size: image.size,
                annotations: Default::default(),
            }),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.update_image(update, paths, "label image").await
    }

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

    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>> {
        self.lease_resources(id, &super::snapshot_resource(snapshotter))
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
            r#type: super::snapshot_resource(snapshotter),
        };
        self.lease_update(id, resource, add).await
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
