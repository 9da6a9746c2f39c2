//! One chain committed through containerd's own services, as containerd's unpacker does it
//! (`core/unpack/unpacker.go`): `Snapshots.Prepare` of an extraction key
//! (`extract-<time>-<random> <chain ID>`) on the parent chain, labelled with the target chain
//! (`containerd.io/snapshot.ref`), `Diff.Apply` of the layer blob onto its mounts, a check that
//! the differ's digest of the uncompressed layer is the diff ID, and `Snapshots.Commit` under
//! the chain ID. The layer's bytes are never touched here: whiteouts, ownership, extended
//! attributes and links are the differ's.
//!
//! A chain committed already is found without applying anything: the prepare answers
//! `AlreadyExists` for the target chain (and adds it to the caller's lease in the same
//! transaction), or the commit does. Within this process one chain is committed by one caller at
//! a time ([`lock`]); the others then find it committed.

use super::plan::Node;
use crate::containerd::{Containerd, ContainerdError, Descriptor, Labels};
use crate::digest::Digest;
use crate::error::Class;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The label naming the chain an extraction snapshot is for.
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// The label with the diff ID of the layer (containerd 2.3 and later set it).
pub const SNAPSHOT_DIFF_ID: &str = "containerd.io/snapshot/diff-id";
/// The label with the parent's chain ID (containerd 2.3 and later set it).
pub const SNAPSHOT_PARENT: &str = "containerd.io/snapshot/parent-chain-id";
/// Layer annotations with this prefix are passed on as snapshot labels, as containerd does.
const INHERITED: &str = "containerd.io/snapshot/";

/// How a chain came to be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The layer was applied and committed now.
    Applied,
    /// It was committed already (another image, another import, another client).
    Present,
}

/// The labels of a chain's snapshot: the layer's inherited annotations, the target chain, its
/// diff ID and parent.
pub fn labels(node: &Node, blob: &Descriptor) -> Labels {
    let mut l: Labels = blob
        .annotations
        .iter()
        .filter(|(k, _)| *k == SNAPSHOT_REF || k.starts_with(INHERITED))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(SNAPSHOT_REF.into(), node.chain.to_string());
    l.insert(SNAPSHOT_DIFF_ID.into(), node.diff_id.to_string());
    if let Some(p) = &node.parent {
        l.insert(SNAPSHOT_PARENT.into(), p.to_string());
    }
    l
}

/// A fresh extraction key for `chain`: `extract-<nanoseconds>-<4 characters> <chain>`.
pub fn extraction_key(chain: &Digest) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    // Unique within the process by the counter, across processes by the pid.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 20);
    let tag: String = (0..4)
        .map(|i| URL_SAFE[((n >> (6 * i)) & 63) as usize] as char)
        .collect();
    format!("extract-{nanos}-{tag} {chain}")
}

/// Serialises commits of one chain in this process: `key` names containerd, namespace,
/// snapshotter and chain.
pub async fn lock(key: String) -> ChainGuard {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let m = locks
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .clone();
    let guard = m.clone().lock_owned().await;
    ChainGuard {
        key,
        _guard: guard,
        lock: m,
        locks,
    }
}

/// Held while one chain is committed; the lock is forgotten with its last holder.
pub struct ChainGuard {
    key: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    lock: Arc<tokio::sync::Mutex<()>>,
    locks: &'static Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap();
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.lock) <= 2 {
            locks.remove(&self.key);
        }
    }
}

/// Why a chain could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// containerd refused or failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The differ's digest of the uncompressed layer is not the diff ID the config lists.
    #[error("layer {layer}: the differ computed diff ID {actual}, but the image config lists {expected}")]
    WrongDiffId {
        /// The layer blob.
        layer: Digest,
        /// The config's diff ID.
        expected: Digest,
        /// What the differ computed.
        actual: Digest,
    },
}

/// Commits `node`'s chain in `snapshotter`, applying `blob` on its parent (committed already)
/// unless the chain is committed. Under `client`'s lease the chain joins it; a failure leaves
/// no extraction snapshot behind.
pub async fn commit(
    client: &dyn Containerd,
    snapshotter: &str,
    node: &Node,
    blob: &Descriptor,
) -> Result<Committed, ApplyError> {
    let chain = node.chain.to_string();
    let parent = node
        .parent
        .as_ref()
        .map(Digest::to_string)
        .unwrap_or_default();
    let labels = labels(node, blob);
    let mut prepared = None;
    for _ in 0..3 {
        let key = extraction_key(&node.chain);
        match client
            .prepare_snapshot(snapshotter, &key, &parent, &labels)
            .await
        {
            Ok(mounts) => {
                prepared = Some((key, mounts));
                break;
            }
            Err(e) if e.class() == Class::AlreadyExists => {
                if client.stat_snapshot(snapshotter, &chain).await?.is_some() {
                    return Ok(Committed::Present);
                }
                // The key was taken (rare): another one.
                tracing::debug!(%key, "extraction snapshot exists, but not the chain; trying another key");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some((key, mounts)) = prepared else {
        return Err(ContainerdError::call(
            format!("prepare an extraction snapshot for {chain}"),
            Class::AlreadyExists,
            "three extraction keys were taken",
        )
        .into());
    };
    let abort = |why: &str| {
        let key = key.clone();
        let why = why.to_string();
        async move {
            if let Err(e) = client.remove_snapshot(snapshotter, &key).await {
                tracing::warn!(%key, error = %e, "could not remove the extraction snapshot after {why}");
            }
        }
    };
    let diff_id = match client.apply_diff(blob, &mounts).await {
        Ok(d) => d,
        Err(e) => {
            abort("a failed apply").await;
            return Err(e.into());
        }
    };
    if diff_id != node.diff_id {
        abort("a wrong diff ID").await;
        return Err(ApplyError::WrongDiffId {
            layer: blob.digest.clone(),
            expected: node.diff_id.clone(),
            actual: diff_id,
        });
    }
    match client
        .commit_snapshot(snapshotter, &chain, &key, &labels)
        .await
    {
        Ok(()) => Ok(Committed::Applied),
        Err(e) if e.class() == Class::AlreadyExists => {
            abort("finding the chain committed").await;
            Ok(Committed::Present)
        }
        Err(e) => {
            abort("a failed commit").await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keys_and_labels_follow_containerd() {
        let chain = Digest::of(b"chain");
        let k = extraction_key(&chain);
        assert!(
            k.starts_with("extract-") && k.ends_with(&format!(" {chain}")),
            "{k}"
        );
        assert_ne!(k, extraction_key(&chain));
        let node = Node {
            chain: chain.clone(),
            parent: Some(Digest::of(b"parent")),
            diff_id: Digest::of(b"diff"),
            blob: None,
        };
        let blob = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: Digest::of(b"blob"),
            size: 4,
            annotations: BTreeMap::from([
                ("containerd.io/snapshot/remote.x".into(), "y".into()),
                ("org.opencontainers.image.title".into(), "t".into()),
            ]),
        };
        let l = labels(&node, &blob);
        assert_eq!(l[SNAPSHOT_REF], chain.to_string());
        assert_eq!(l[SNAPSHOT_DIFF_ID], Digest::of(b"diff").to_string());
        assert_eq!(l[SNAPSHOT_PARENT], Digest::of(b"parent").to_string());
        assert_eq!(l["containerd.io/snapshot/remote.x"], "y");
        assert!(!l.contains_key("org.opencontainers.image.title"));
    }
}
