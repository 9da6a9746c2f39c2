//! The pull side: images that come from a registry rather than an archive. Pull lists
//! ([`list`]) have containerd pull them, or, on containerd 1.7 (whose transfer service takes no
//! hosts directory and no plain-HTTP default), this module's own client pull ([`pull`]); a
//! followed peer's images are listed into a pull list of the daemon's own ([`follow`]).
//!
//! The client pull is what containerd's Go client does in `Pull`, with airlift's rules. The
//! reference is resolved through the hosts directory ([`crate::hosts::read`]), the manifests of
//! the wanted platforms, their configs and layers are fetched ([`client`]) straight into the
//! content store under the caller's lease — each blob labelled as containerd labels it (GC
//! references to the children kept, `containerd.io/distribution.source.<registry>`), a blob
//! the namespace has not fetched again — and the image record is created last, so a pull that
//! fails half-way leaves no image behind (and what it fetched is the lease's). Its failures are
//! [`PullError`]s: containerd's, or the registry client's own ([`client::RegistryError`]).

pub mod client;
pub mod follow;
pub mod list;
pub mod verified;

use crate::containerd::{
    exists_leased, Chunk, Client, ContainerdError, ImageTarget, Labels, Pull, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use crate::hosts::{Host, Scheme};
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::platform::PlatformPolicy;
use crate::reference::Reference;
use client::{Failed, Registry, RegistryError, RequestError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The largest manifest or index read.
const MAX_MANIFEST: usize = 8 << 20;

/// Blobs of one manifest fetched at once.
const PARALLEL: usize = 3;

/// The size of the chunks sent to the content store.
const CHUNK: usize = 1 << 20;

/// What a manifest request accepts (containerd's list).
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, */*";

/// A pull that failed: containerd's pull, or airlift's own (its registry side, or storing what
/// it fetched).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// containerd failed: its pull, or a call of airlift's own pull.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// airlift's registry client failed.
    #[error("pull {reference}: {cause}")]
    Registry {
        /// The image pulled.
        reference: String,
        /// Why.
        cause: Box<RegistryError>,
    },
}

impl PullError {
    /// containerd's error class: [`Class::Unavailable`] when containerd, a registry or a peer
    /// cannot be reached now; [`Class::NotFound`] when no host has the image.
    pub fn class(&self) -> Class {
        match self {
            PullError::Containerd(e) => e.class(),
            PullError::Registry { cause, .. } => cause.class(),
        }
    }

    /// As a containerd error, for a caller that reports containerd's errors only (a pull list
    /// tried again while containerd is away): containerd's own, or the registry client's under
    /// its class.
    pub fn into_containerd(self) -> ContainerdError {
        match self {
            PullError::Containerd(e) => e,
            PullError::Registry { reference, cause } => ContainerdError::call(
                format!("pull {reference}"),
                cause.class(),
                cause.to_string(),
            ),
        }
    }
}

/// One pull under way (shared by the blob fetches it runs at once).
struct Puller {
    client: Client,
    registry: Registry,
    hosts: Vec<Host>,
    /// Where the content comes from (the image, or its name on a followed peer).
    source: Reference,
    /// The distribution-source label every blob gets: key and repository.
    label: (String, String),
    platforms: PlatformPolicy,
    /// The image pulled, as asked for (named in errors).
    reference: String,
}

/// Pulls `pull.reference` into the namespace of `client` (its lease holds what is fetched) and
/// creates its image record with `pull.labels`.
pub async fn pull(client: &Client, pull: &Pull) -> Result<(), PullError> {
    let fail = |e: RegistryError| PullError::Registry {
        reference: pull.reference.clone(),
        cause: Box::new(e),
    };
    let image = Reference::parse_normalized(&pull.reference).map_err(|e| fail(e.into()))?;
    let source = match &pull.from {
        Some(f) => Reference::parse_normalized(f).map_err(|e| fail(e.into()))?,
        None => image.clone(),
    };
    // A followed peer's scheme is known; a registry's is HTTPS (plain HTTP for localhost).
    let scheme = match (&pull.from, pull.plain_http) {
        (_, true) => Some(Scheme::Http),
        (Some(_), false) => Some(Scheme::Https),
        (None, false) => None,
    };
    let hosts = crate::hosts::hosts(pull.hosts_dir.as_deref(), source.domain(), scheme)
        .map_err(|e| fail(e.into()))?;
    // The ingests are named with this process's token: a cleaner of dead processes' leftovers
    // must see this one alive.
    if let Ok(Some(root)) = client.content_root().await {
        let _ = crate::liveness::hold(&crate::store::layout::ContentRoot::new(root).temp());
    }
    let p = Arc::new(Puller {
        client: client.clone(),
        registry: Registry::default(),
        hosts,
        label: (
            format!("containerd.io/distribution.source.{}", image.domain()),
            image.path().to_string(),
        ),
        source,
        platforms: if pull.platforms.is_empty() {
            PlatformPolicy::All
        } else {
            PlatformPolicy::Only(pull.platforms.clone())
        },
        reference: pull.reference.clone(),
    });
    let (root, body) = p.resolve().await?;
    p.clone().store_manifest(root.clone(), body).await?;
    let target = ImageTarget {
        name: pull.reference.clone(),
        media_type: root.media_type.clone(),
        digest: root.digest.to_string(),
        size: root.size,
        annotations: BTreeMap::new(),
    };
    Ok(client.put_image(&target, &pull.labels).await?)
}

impl Puller {
    fn fail(&self, e: RegistryError) -> PullError {
        PullError::Registry {
            reference: self.reference.clone(),
            cause: Box::new(e),
        }
    }

    /// `?ns=` for a host that is not the registry itself.
    fn ns(&self, host: &Host) -> Option<&str> {
        let own = host.authority == self.source.domain()
            || (self.source.domain() == "docker.io" && host.authority == "registry-1.docker.io");
        (!own).then_some(self.source.domain())
    }

    /// Every host's failure, as one error (none: no host may serve it).
    fn failed(&self, what: String, failures: Vec<Failed>) -> PullError {
        self.fail(if failures.is_empty() {
            RegistryError::NoHost { what }
        } else {
            RegistryError::Failed { what, failures }
        })
    }

    /// `GET …/manifests/<object>` from the first of the hosts with the capability that answers
    /// with a manifest (or index) whose digest is `want` when one is wanted.
    async fn manifest(
        &self,
        object: &str,
        want: Option<&Digest>,
        resolving: bool,
    ) -> Result<(String, Option<String>, Vec<u8>), Vec<Failed>> {
        let mut failures = Vec::new();
        for host in &self.hosts {
            if !(if resolving { host.resolve } else { host.pull }) {
                continue;
            }
            let what = format!("manifests/{object}");
            let response = match self
                .registry
                .get(host, self.source.path(), &what, Some(ACCEPT), self.ns(host))
                .await
            {
                Ok(r) => r,
                Err(f) => {
                    failures.push(f);
                    continue;
                }
            };
            let url = response.url().to_string();
            let media_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
            let cause = match read_small(response).await {
                Ok(b) => match want {
                    Some(d) if Digest::of(&b) != *d => RequestError::WrongDigest {
                        actual: Digest::of(&b),
                        wanted: d.clone(),
                    },
                    _ => return Ok((url, media_type, b)),
                },
                Err(cause) => cause,
            };
            failures.push(Failed { url, cause });
        }
        Err(failures)
    }

    /// The manifest (or index) the reference names, with its bytes.
    async fn resolve(&self) -> Result<(Descriptor, Vec<u8>), PullError> {
        let object = self.source.object();
        let want = match object.strip_prefix('@') {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| self.fail(e.into()))?),
            None => None,
        };
        let object = want.as_ref().map_or(object.clone(), Digest::to_string);
        let (url, header, body) = self
            .manifest(&object, want.as_ref(), want.is_none())
            .await
            .map_err(|f| self.failed(format!("resolving {}", self.source), f))?;
        let media_type = match header {
            Some(t) if oci::is_index(&t) || oci::is_manifest(&t) => t,
            _ => media_type_of(&body).unwrap_or_default(),
        };
        if !oci::is_index(&media_type) && !oci::is_manifest(&media_type) {
            return Err(self.fail(RegistryError::NotManifest { url, media_type }));
        }
        let size = body.len() as u64;
        Ok((Descriptor::new(&media_type, Digest::of(&body), size), body))
    }

    /// Stores a manifest or index and everything under it that is wanted, children first.
    async fn store_manifest(
        self: Arc<Self>,
        desc: Descriptor,
        body: Vec<u8>,
    ) -> Result<(), PullError> {
        let bad = |cause: serde_json::Error| {
            self.fail(RegistryError::Json {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                cause,
            })
        };
        let children: Vec<Descriptor> = if oci::is_index(&desc.media_type) {
            let index: Index = serde_json::from_slice(&body).map_err(bad)?;
            let kept: Vec<Descriptor> = index
                .manifests
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_none_or(|p| self.platforms.matches(p))
                })
                .cloned()
                .collect();
            if kept.is_empty() && !index.manifests.is_empty() {
                return Err(self.fail(RegistryError::NoPlatform {
                    image: self.source.to_string(),
                    digest: desc.digest.clone(),
                }));
            }
            for child in &kept {
                if oci::is_index(&child.media_type) || oci::is_manifest(&child.media_type) {
                    let (_, _, bytes) = self
                        .manifest(&child.digest.to_string(), Some(&child.digest), false)
                        .await
                        .map_err(|f| self.failed(format!("fetching {}", child.digest), f))?;
                    Box::pin(self.clone().store_manifest(child.clone(), bytes)).await?;
                } else {
                    self.clone().store_blob(child.clone()).await?;
                }
            }
            kept
        } else {
            let manifest: Manifest = serde_json::from_slice(&body).map_err(bad)?;
            // Foreign layers travel apart from the image, as containerd's pull skips them.
            let kept: Vec<Descriptor> = std::iter::once(manifest.config)
                .chain(
                    manifest
                        .layers
                        .into_iter()
                        .filter(|l| !oci::is_non_distributable(&l.media_type)),
                )
                .collect();
            let mut pending = kept.iter();
            let mut running = tokio::task::JoinSet::new();
            loop {
                while running.len() < PARALLEL {
                    let Some(d) = pending.next() else { break };
                    running.spawn(self.clone().store_blob(d.clone()));
                }
                match running.join_next().await {
                    Some(Ok(r)) => r?,
                    Some(Err(e)) => return Err(self.fail(RegistryError::Task(e))),
                    None => break,
                }
            }
            kept
        };
        Ok(self
            .store_bytes(&desc, body, &oci::gc_labels(&children))
            .await?)
    }

    /// Stores a manifest's bytes fetched already (unless present), with its labels.
    async fn store_bytes(
        &self,
        desc: &Descriptor,
        body: Vec<u8>,
        extra: &Labels,
    ) -> Result<(), ContainerdError> {
        if exists_leased(self.client.as_ref(), &desc.digest)
            .await?
            .is_none()
        {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let r#ref = ingest_ref(&desc.digest);
            let size = body.len() as u64;
            let _ = tx.send(Chunk::Data(body)).await;
            let _ = tx.send(Chunk::Commit(desc.digest.clone())).await;
            drop(tx);
            let w = self
                .client
                .write(&r#ref, size, Some(&desc.digest), rx)
                .await;
            written(&self.client, &r#ref, w).await?;
        }
        self.label(desc, extra).await
    }

    /// Sets a stored blob's labels: `extra` and the distribution source.
    async fn label(&self, desc: &Descriptor, extra: &Labels) -> Result<(), ContainerdError> {
        let info = self.client.info(&desc.digest).await?;
        let labels = labels(&self.label, info.as_ref().map(|i| &i.labels), extra);
        self.client.set_blob_labels(&desc.digest, &labels).await
    }

    /// Fetches a blob that is not a manifest (a config, a layer) into the content store,
    /// streamed from the first host that has it (unless the namespace has it), and labels it.
    async fn store_blob(self: Arc<Self>, desc: Descriptor) -> Result<(), PullError> {
        if exists_leased(self.client.as_ref(), &desc.digest)
            .await?
            .is_none()
        {
            let mut failures: Vec<Failed> = Vec::new();
            let mut done = false;
            for host in self.hosts.iter().filter(|h| h.pull) {
                let what = format!("blobs/{}", desc.digest);
                let response = match self
                    .registry
                    .get(host, self.source.path(), &what, None, self.ns(host))
                    .await
                {
                    Ok(r) => r,
                    Err(f) => {
                        failures.push(f);
                        continue;
                    }
                };
                let url = response.url().to_string();
                match self.stream(&desc, response).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(cause) => failures.push(Failed { url, cause }),
                }
            }
            if !done {
                return Err(self.failed(
                    format!("fetching {} ({})", desc.digest, desc.media_type),
                    failures,
                ));
            }
        }
        Ok(self.label(&desc, &Labels::new()).await?)
    }

    /// Streams one response body into the content store, committed against the descriptor.
    async fn stream(
        &self,
        desc: &Descriptor,
        mut response: reqwest::Response,
    ) -> Result<(), RequestError> {
        let size = desc.size as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let r#ref = ingest_ref(&desc.digest);
        let feed = async move {
            let mut sent = 0u64;
            let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
            loop {
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        sent += bytes.len() as u64;
                        if sent > size {
                            return Err(RequestError::TooLong { size });
                        }
                        buf.extend_from_slice(&bytes);
                        if buf.len() >= CHUNK {
                            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                            if tx.send(Chunk::Data(full)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(RequestError::Transport(e)),
                }
            }
            if sent != size {
                return Err(RequestError::Short { sent, size });
            }
            if !buf.is_empty() && tx.send(Chunk::Data(buf)).await.is_err() {
                return Ok(());
            }
            let _ = tx.send(Chunk::Commit(desc.digest.clone())).await;
            Ok(())
        };
        let write = self.client.write(&r#ref, size, Some(&desc.digest), rx);
        let (fed, w) = tokio::join!(feed, write);
        let w = written(&self.client, &r#ref, w).await;
        fed?;
        w.map_err(RequestError::Store)
    }
}

/// A blob's labels: `extra`, and the distribution source merged with those it names already.
fn labels(
    source: &(String, String),
    existing: Option<&std::collections::HashMap<String, String>>,
    extra: &Labels,
) -> Labels {
    let mut labels = extra.clone();
    let (key, repo) = source;
    let mut repos: BTreeSet<String> = existing
        .and_then(|l| l.get(key))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    repos.insert(repo.clone());
    labels.insert(key.clone(), repos.into_iter().collect::<Vec<_>>().join(","));
    labels
}

/// The ingest ref of a blob: this process's token first, as [`crate::leftovers`] expects.
fn ingest_ref(digest: &Digest) -> String {
    format!(
        "airlift-{}-pull-{}",
        crate::liveness::token(),
        &digest.hex()[..16]
    )
}

/// The end of a write: an abandoned ingest is aborted (nothing half-written stays).
async fn written(
    client: &Client,
    r#ref: &str,
    w: Result<Written, ContainerdError>,
) -> Result<(), ContainerdError> {
    match w {
        Ok(Written::Committed | Written::AlreadyExists) => Ok(()),
        Ok(Written::Abandoned) => {
            let _ = client.abort(r#ref).await;
            Err(ContainerdError::call(
                format!("write {ref}"),
                Class::Unavailable,
                "the blob's download stopped before it was complete",
            ))
        }
        Err(e) => {
            let _ = client.abort(r#ref).await;
            Err(e)
        }
    }
}

/// A manifest body, at most [`MAX_MANIFEST`] bytes.
async fn read_small(response: reqwest::Response) -> Result<Vec<u8>, RequestError> {
    client::read_body(response, MAX_MANIFEST, "a manifest").await
}

/// The `mediaType` a manifest names itself.
fn media_type_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let t: Typed = serde_json::from_slice(body).ok()?;
    if !t.media_type.is_empty() {
        return Some(t.media_type);
    }
    // OCI allows leaving it out: what the document holds tells.
    if t.manifests.is_some() {
        Some(oci::MEDIA_OCI_INDEX.into())
    } else if t.config.is_some() {
        Some(oci::MEDIA_OCI_MANIFEST.into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
