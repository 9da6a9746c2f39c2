//! containerd: the operations airlift asks of containerd, one small trait per containerd
//! service, named as containerd names them — [`Content`] (blobs, ingests, claims of shared
//! content), [`Leases`], [`Images`], [`Snapshots`] (with the differ), [`Subscriber`] (events),
//! [`Introspection`] (version, content root) and [`Transfer`] (pulls) — and [`Containerd`], their
//! sum, the handle everything above holds ([`Client`]). Each trait has two implementations:
//! [`grpc::Grpc`], the client of containerd's API socket (one file per service in [`grpc`]),
//! and the in-memory fake of the test kit (`testkit::fake`, behind the `testkit` feature), which
//! one behaviour suite (`testkit::behaviour`) holds to what real containerd 2.x and 1.7 do.
//!
//! Every call is made in one namespace and, when the handle carries one, under one lease (what
//! containerd's clients send as `containerd-namespace` and `containerd-lease`):
//! [`Containerd::with_lease`] gives a handle of the same connection under another lease. A
//! function that needs one service alone can take that trait (`&dyn Images`); a handle coerces
//! to it.

pub mod content;
pub mod events;
pub mod grpc;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod snapshots;
pub mod transfer;

use crate::digest::Digest;
use crate::error::Class;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use content::{BlobInfo, Chunk, Chunks, Content, Written};
pub use events::{Event, Events, Subscriber};
pub use grpc::Grpc;
pub use images::{ImageRecord, ImageTarget, Images, LabelChanges};
pub use introspection::Introspection;
pub use leases::{snapshot_resource, Leases};
pub use snapshots::{Descriptor, Mount, SnapshotInfo, SnapshotKind, Snapshots};
pub use transfer::{Pull, Transfer};

/// A handle on containerd: one connection (or fake), one namespace, optionally one lease.
pub type Client = Arc<dyn Containerd>;

/// A failed containerd call.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be reached.
    #[error("containerd is not reachable at {address}: {cause}")]
    Unreachable {
        /// The socket.
        address: PathBuf,
        /// Why, each cause said once.
        cause: String,
    },
    /// A call failed.
    #[error("containerd {op}: {message}")]
    Call {
        /// What airlift asked for (and of what).
        op: String,
        /// containerd's error class.
        class: Class,
        /// containerd's message.
        message: String,
    },
}

impl ContainerdError {
    /// A failed call of class `class`.
    pub fn call(
        op: impl Into<String>,
        class: Class,
        message: impl Into<String>,
    ) -> ContainerdError {
        ContainerdError::Call {
            op: op.into(),
            class,
            message: message.into(),
        }
    }

    /// A failed call, from the gRPC status containerd answered.
    pub fn from_status(op: impl Into<String>, status: &tonic::Status) -> ContainerdError {
        ContainerdError::call(op, Class::of_status(status), status.message())
    }

    /// The error class: an unreachable containerd is `Unavailable`.
    pub fn class(&self) -> Class {
        match self {
            ContainerdError::Unreachable { .. } => Class::Unavailable,
            ContainerdError::Call { class, .. } => *class,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ContainerdError>;

/// Labels as airlift sets them (sorted, so calls are deterministic).
pub type Labels = BTreeMap<String, String>;

/// Where a handle's calls go: the socket, the namespace and the lease they are made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The socket (for messages, and to tell one containerd from another).
    pub address: PathBuf,
    /// The namespace every call is made in.
    pub namespace: String,
    /// The lease calls are made under, if any.
    pub lease: Option<String>,
}

impl Scope {
    /// The same scope under `lease`.
    pub fn leased(&self, lease: Option<&str>) -> Scope {
        Scope {
            lease: lease.map(str::to_string),
            ..self.clone()
        }
    }
}

/// A handle on containerd: every service airlift uses, in one namespace and optionally under
/// one lease. Implementations convert their failures to [`ContainerdError`] with containerd's
/// [`Class`]es, nowhere else.
pub trait Containerd:
    Content + Leases + Images + Snapshots + Subscriber + Introspection + Transfer + Send + Sync
{
    /// Where the calls go.
    fn scope(&self) -> &Scope;

    /// The socket.
    fn address(&self) -> &Path {
        &self.scope().address
    }

    /// The namespace.
    fn namespace(&self) -> &str {
        &self.scope().namespace
    }

    /// The lease, if any.
    fn lease(&self) -> Option<&str> {
        self.scope().lease.as_deref()
    }

    /// The same connection with every call made under `lease`.
    fn with_lease(&self, lease: Option<&str>) -> Client;
}

/// Whether the namespace has a blob, and its size. A blob found is first added to the handle's
/// lease (when it has one), so garbage collection cannot take it between this check and the
/// moment an image refers to it.
pub async fn exists_leased(client: &dyn Containerd, digest: &Digest) -> Result<Option<u64>> {
    // Absent (the common case on a first import) costs one call; present costs a lease update
    // and a second look, which closes the window in which GC could have taken it.
    if client.info(digest).await?.is_none() {
        return Ok(None);
    }
    if let Some(lease) = client.lease() {
        client
            .lease_resource(lease, &digest.to_string(), true)
            .await?;
    }
    Ok(client.info(digest).await?.map(|i| i.size))
}

/// Formats a time as RFC 3339 in UTC (what containerd's `gc.expire` label holds).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn unreachable_is_unavailable_and_calls_keep_their_class() {
        let e = ContainerdError::Unreachable {
            address: "/x".into(),
            cause: "gone".into(),
        };
        assert_eq!(e.class(), Class::Unavailable);
        let e = ContainerdError::from_status("get image x", &tonic::Status::not_found("nope"));
        assert_eq!(e.class(), Class::NotFound);
        assert_eq!(e.to_string(), "containerd get image x: nope");
    }
}
