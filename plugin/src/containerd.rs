//! containerd: the gRPC client airlift uses, with containerd's error classes mapped in one place.
//!
//! Every request carries the namespace (`containerd-namespace`) and, when set, the lease
//! (`containerd-lease`) as gRPC metadata, exactly as containerd's own clients do.

use crate::digest::Digest;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::{
    content_client::ContentClient, images_client::ImagesClient,
    introspection_client::IntrospectionClient, leases_client::LeasesClient,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// containerd's error classes (`errdefs`), as carried by gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// A precondition (size, digest) failed.
    FailedPrecondition,
    /// Locked or not reachable; try again.
    Unavailable,
    /// The request is malformed.
    InvalidArgument,
    /// Anything else.
    Other,
}

/// A failed containerd call.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be reached.
    #[error("containerd is not reachable at {address}: {cause}")]
    Unreachable {
        /// The socket.
        address: PathBuf,
        /// Why.
        cause: String,
    },
    /// A call failed.
    #[error("containerd {op}: {message} ({code:?})")]
    Call {
        /// What airlift asked for.
        op: String,
        /// gRPC code.
        code: Code,
        /// containerd's message.
        message: String,
    },
}

impl ContainerdError {
    fn call(op: impl Into<String>, status: tonic::Status) -> ContainerdError {
        ContainerdError::Call {
            op: op.into(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The containerd error class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ContainerdError::Unreachable { .. } => ErrorClass::Unavailable,
            ContainerdError::Call { code, .. } => match code {
                Code::NotFound => ErrorClass::NotFound,
                Code::AlreadyExists => ErrorClass::AlreadyExists,
                Code::FailedPrecondition => ErrorClass::FailedPrecondition,
                Code::Unavailable => ErrorClass::Unavailable,
                Code::InvalidArgument => ErrorClass::InvalidArgument,
                _ => ErrorClass::Other,
            },
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ContainerdError>;

/// A connection to containerd, bound to a namespace and optionally a lease.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    address: PathBuf,
    namespace: String,
    lease: Option<String>,
}

/// Metadata about a blob in the namespace.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// Its size.
    pub size: u64,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// An image record.
#[derive(Debug, Clone)]
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

impl Containerd {
    /// Connects to the socket at `address` (waiting at most `timeout`).
    pub async fn connect(address: &Path, namespace: &str, timeout: Duration) -> Result<Containerd> {
        let unreachable = |cause: String| ContainerdError::Unreachable {
            address: address.to_path_buf(),
            cause,
        };
        let channel = tokio::time::timeout(timeout, containerd_client::connect(address))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| {
                let mut cause = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    cause = format!("{cause}: {s}");
                    src = s.source();
                }
                unreachable(cause)
            })?;
        Ok(Containerd {
            channel,
            address: address.to_path_buf(),
            namespace: namespace.to_string(),
            lease: None,
        })
    }

    /// The socket address.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same connection with every request made under `lease`.
    pub fn with_lease(&self, lease: Option<&str>) -> Containerd {
        Containerd {
            lease: lease.map(str::to_string),
            ..self.clone()
        }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        md.insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace is ASCII"),
        );
        if let Some(lease) = &self.lease {
            md.insert(
                "containerd-lease",
                lease.parse().expect("lease id is ASCII"),
            );
        }
        req
    }

    /// A raw Content API client (for streaming writes).
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Wraps a request with namespace and lease metadata.
    pub fn wrap<T>(&self, msg: T) -> Request<T> {
        self.request(msg)
    }

    /// The content store's root directory, as containerd's introspection API reports it (`None`
    /// for a content proxy plugin).
    pub async fn content_root(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("root").await
    }

    /// The socket of containerd's content proxy plugin, when its content store is one.
    pub async fn content_proxy_address(&self) -> Result<Option<PathBuf>> {
        self.content_plugin_export("address").await
    }

    async fn content_plugin_export(&self, key: &str) -> Result<Option<PathBuf>> {
        let resp = IntrospectionClient::new(self.channel.clone())
            .plugins(self.request(api::PluginsRequest {
                filters: vec!["type==io.containerd.content.v1".into()],
            }))
            .await
            .map_err(|s| ContainerdError::call("introspection", s))?
            .into_inner();
        Ok(resp
            .plugins
            .iter()
            .find(|p| p.init_err.is_none())
            .and_then(|p| p.exports.get(key))
            .map(PathBuf::from))
    }

    /// Whether the namespace has a blob, and its size; a blob found is first added to this
    /// connection's lease (when it has one), so garbage collection cannot take it between this
    /// check and the moment an image refers to it.
    pub async fn exists_leased(&self, digest: &Digest) -> Result<Option<u64>> {
        // Absent (the common case on a first import) costs one read; present costs a lease
        // update and a second look, which closes the window in which GC could have taken it.
        if self.info(digest).await?.is_none() {
            return Ok(None);
        }
        if let Some(lease) = &self.lease {
            self.lease_resource(lease, &digest.to_string(), true)
                .await?;
        }
        Ok(self.info(digest).await?.map(|i| i.size))
    }

    /// Information on a blob, or `None` when the namespace does not have it.
    pub async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        match self
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(r) => {
                let info = r.into_inner().info.unwrap_or_default();
                Ok(Some(BlobInfo {
                    size: info.size as u64,
                    labels: info.labels,
                }))
            }
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ContainerdError::call(format!("content info {digest}"), s)),
        }
    }

    /// Sets labels on a blob (only the keys given; others are kept).
    pub async fn set_blob_labels(
        &self,
        digest: &Digest,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
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
            .map_err(|s| ContainerdError::call(format!("label blob {digest}"), s))?;
        Ok(())
    }

    /// Reads `size` bytes of a blob from `offset` (0 = to the end).
    pub async fn read(&self, digest: &Digest, offset: i64, size: i64) -> Result<Vec<u8>> {
        let op = || format!("read blob {digest}");
        let mut stream = self
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.to_string(),
                offset,
                size,
            }))
            .await
            .map_err(|s| ContainerdError::call(op(), s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| ContainerdError::call(op(), s))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    /// The refs of ingests in progress whose ref starts with `airlift-`.
    pub async fn ingest_refs(&self) -> Result<Vec<String>> {
        let resp = self
            .content()
            .list_statuses(self.request(api::ListStatusesRequest {
                filters: vec!["ref~=^airlift-".into()],
            }))
            .await
            .map_err(|s| ContainerdError::call("list ingests", s))?
            .into_inner();
        Ok(resp.statuses.into_iter().map(|s| s.r#ref).collect())
    }

    /// Abandons an ingest.
    pub async fn abort(&self, reference: &str) -> Result<()> {
        match self
            .content()
            .abort(self.request(api::AbortRequest {
                r#ref: reference.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ContainerdError::call(
                format!("abort ingest {reference}"),
                s,
            )),
        }
    }

    /// Claims a blob that is already on disk in the content root into the namespace, by digest
    /// alone: a STAT and a COMMIT carrying `expected`, `total` and the blob's labels, no data.
    /// Under a lease, the blob joins it in the same transaction. Returns `false` when the
    /// namespace had it already (its labels are then unchanged).
    pub async fn claim(
        &self,
        reference: &str,
        digest: &Digest,
        size: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let msg = |action: i32| api::WriteContentRequest {
            action,
            r#ref: reference.to_string(),
            total: size as i64,
            expected: digest.to_string(),
            // Labels take effect with the commit: one transaction for blob and labels.
            labels: if action == api::WriteAction::Commit as i32 {
                labels.clone().into_iter().collect()
            } else {
                HashMap::new()
            },
            // COMMIT at the current offset, so containerd does not truncate the shared blob.
            offset: if action == api::WriteAction::Commit as i32 {
                size as i64
            } else {
                0
            },
            ..Default::default()
        };
        let reqs = vec![
            msg(api::WriteAction::Stat as i32),
            msg(api::WriteAction::Commit as i32),
        ];
        let op = || format!("claim blob {digest}");
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
            Err(s) if s.code() == Code::AlreadyExists => Ok(false),
            Err(s) => {
                let _ = self.abort(reference).await;
                Err(ContainerdError::call(op(), s))
            }
        }
    }

    /// Creates a lease. `expire` sets containerd's `containerd.io/gc.expire` label.
    pub async fn create_lease(
        &self,
        id: &str,
        mut labels: HashMap<String, String>,
        expire: Option<Duration>,
    ) -> Result<()> {
        if let Some(after) = expire {
            let at = std::time::SystemTime::now() + after;
            labels.insert("containerd.io/gc.expire".into(), rfc3339(at));
        }
        match LeasesClient::new(self.channel.clone())
            .create(self.request(api::CreateRequest {
                id: id.to_string(),
                labels,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(ContainerdError::call(format!("create lease {id}"), s)),
        }
    }

    /// Deletes a lease (missing is fine).
    pub async fn delete_lease(&self, id: &str) -> Result<()> {
        match LeasesClient::new(self.channel.clone())
            .delete(self.request(api::DeleteRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ContainerdError::call(format!("delete lease {id}"), s)),
        }
    }

    /// The ids of the leases in the namespace that match a filter (e.g. `id==x`).
    pub async fn list_leases(&self, filter: &str) -> Result<Vec<String>> {
        let resp = LeasesClient::new(self.channel.clone())
            .list(self.request(api::ListRequest {
                filters: vec![filter.to_string()],
            }))
            .await
            .map_err(|s| ContainerdError::call("list leases", s))?
            .into_inner();
        Ok(resp.leases.into_iter().map(|l| l.id).collect())
    }

    /// The content digests a lease holds.
    pub async fn lease_content(&self, id: &str) -> Result<Vec<String>> {
        let resp = LeasesClient::new(self.channel.clone())
            .list_resources(self.request(api::ListResourcesRequest { id: id.to_string() }))
            .await
            .map_err(|s| ContainerdError::call(format!("list resources of lease {id}"), s))?
            .into_inner();
        Ok(resp
            .resources
            .into_iter()
            .filter(|r| r.r#type == "content")
            .map(|r| r.id)
            .collect())
    }

    /// Adds (or, with `add == false`, removes) a blob to a lease.
    pub async fn lease_resource(&self, id: &str, digest: &str, add: bool) -> Result<()> {
        let resource = Some(api::Resource {
            id: digest.to_string(),
            r#type: "content".into(),
        });
        let mut client = LeasesClient::new(self.channel.clone());
        let result = if add {
            client
                .add_resource(self.request(api::AddResourceRequest {
                    id: id.to_string(),
                    resource,
                }))
                .await
                .map(|_| ())
        } else {
            client
                .delete_resource(self.request(api::DeleteResourceRequest {
                    id: id.to_string(),
                    resource,
                }))
                .await
                .map(|_| ())
        };
        result.map_err(|s| ContainerdError::call(format!("update lease {id} with {digest}"), s))
    }

    /// Gets an image record.
    pub async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        match ImagesClient::new(self.channel.clone())
            .get(self.request(api::GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.map(image_record)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ContainerdError::call(format!("get image {name}"), s)),
        }
    }

    /// Lists image records (optionally filtered, containerd filter syntax).
    pub async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>> {
        let resp = ImagesClient::new(self.channel.clone())
            .list(self.request(api::ListImagesRequest { filters }))
            .await
            .map_err(|s| ContainerdError::call("list images", s))?
            .into_inner();
        Ok(resp.images.into_iter().map(image_record).collect())
    }

    /// Creates an image record, or updates its target and the given labels when the name exists.
    pub async fn put_image(
        &self,
        name: &str,
        target: containerd_client::types::Descriptor,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let image = api::Image {
            name: name.to_string(),
            labels: labels.clone().into_iter().collect(),
            target: Some(target),
            ..Default::default()
        };
        let mut client = ImagesClient::new(self.channel.clone());
        // New names are the common case: create first, update when the name exists.
        match client
            .create(self.request(api::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(ContainerdError::call(format!("create image {name}"), s)),
        }
        let mut paths = vec!["target".to_string()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        client
            .update(self.request(api::UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask { paths }),
                ..Default::default()
            }))
            .await
            .map_err(|s| ContainerdError::call(format!("update image {name}"), s))?;
        Ok(())
    }

    /// Sets or (with `None` values) removes labels of an existing image. The current target is
    /// sent along: containerd dereferences it even when only labels are updated (an update
    /// without a target crashes containerd 1.7 and 2.1).
    pub async fn set_image_labels(
        &self,
        image: &ImageRecord,
        labels: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let name = &image.name;
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
        ImagesClient::new(self.channel.clone())
            .update(self.request(api::UpdateImageRequest {
                image: Some(update),
                update_mask: Some(prost_types::FieldMask { paths }),
                ..Default::default()
            }))
            .await
            .map_err(|s| ContainerdError::call(format!("label image {name}"), s))?;
        Ok(())
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

/// Formats a time as RFC 3339 in UTC (what containerd's `gc.expire` label holds).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
