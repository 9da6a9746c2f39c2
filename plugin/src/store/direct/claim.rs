//! Claims of the direct store: staged blobs linked into place under their digests, their names
//! made durable, and claimed into the namespace by digest (streamed instead when a claim fails).

use super::{DirectStore, TempFile, CLAIMS_IN_FLIGHT};
use crate::containerd::Containerd;
use crate::digest::Digest;
use crate::store::{ContentStore, Result, Staging, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::sync::Arc;

impl Staging for DirectStore {
    fn claim_now(&self, client: &dyn Containerd, digests: &[Digest]) -> Result<()> {
        self.claim_batch(client, digests)
    }

    fn claim_staged(
        &self,
        client: &dyn Containerd,
        labels: &BTreeMap<Digest, BTreeMap<String, String>>,
        needed: &BTreeSet<&Digest>,
    ) -> Result<BTreeSet<Digest>> {
        self.flush()?;
        let staged: Vec<(Digest, (TempFile, u64))> =
            self.shared.staged.lock().unwrap().drain().collect();
        let mut linked = Vec::new();
        for (digest, (tmp, size)) in staged {
            if !needed.contains(&digest) {
                continue; // no image uses it: its temporary file goes with `tmp`
            }
            let target = self.shared.root.blob(&digest);
            match fs::hard_link(tmp.path(), &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::io(format!(
                        "linking blob {digest} into {}",
                        crate::escape::shown(&target)
                    ))(e))
                }
            }
            linked.push((digest, tmp, size));
        }
        if linked.is_empty() {
            return Ok(BTreeSet::new());
        }
        // One directory fsync makes every new name durable before containerd records them.
        let blobs = self.shared.root.blobs();
        File::open(&blobs)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(format!(
                "syncing {}",
                crate::escape::shown(&blobs)
            )))?;
        // Claims run concurrently: containerd's round trips overlap its metadata commits.
        let client = client.with_lease(client.lease());
        let results = self.shared.handle.block_on(async {
            let limit = Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, (digest, _, size)) in linked.iter().enumerate() {
                let (client, limit) = (client.clone(), limit.clone());
                let reference = self.shared.stream.next_ref();
                let (digest, size) = (digest.clone(), *size);
                let l = labels.get(&digest).cloned().unwrap_or_default();
                tasks.spawn(async move {
                    let _slot = limit.acquire_owned().await;
                    fail::fail_point!("claim", |_| crate::sys::crash());
                    (i, client.claim(&reference, &digest, size, &l).await)
                });
            }
            let mut results = Vec::new();
            while let Some(r) = tasks.join_next().await {
                results.push(r.expect("claim task panicked"));
            }
            results
        });
        let mut claimed = BTreeSet::new();
        for (i, result) in results {
            let (digest, tmp, size) = &linked[i];
            match result {
                Ok(true) => {
                    claimed.insert(digest.clone());
                }
                Ok(false) => {
                    // The namespace had it, perhaps held only by another lease that may go at
                    // any moment: the claiming lease holds it now too.
                    if self
                        .shared
                        .handle
                        .block_on(crate::containerd::exists_leased(client.as_ref(), digest))?
                        .is_none()
                    {
                        tracing::warn!(%digest, "the blob went while being claimed; streaming it instead");
                        self.shared.stream_instead(tmp, digest, *size)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "claiming the on-disk blob failed; streaming it instead");
                    self.shared.stream_instead(tmp, digest, *size)?;
                }
            }
        }
        Ok(claimed)
    }
}

impl DirectStore {
    /// Links staged blobs into place, makes their names durable (one directory fsync) and claims
    /// them without labels through `client`, waiting first for the fsyncs still pending. Blobs
    /// not staged are left alone.
    fn claim_batch(&self, client: &dyn Containerd, digests: &[Digest]) -> Result<()> {
        {
            let mut pending = self.shared.pending.lock().unwrap();
            while digests.iter().any(|d| pending.contains_key(d)) {
                pending = self.shared.settled.wait(pending).unwrap();
            }
        }
        let taken: Vec<(Digest, (TempFile, u64))> = {
            let mut staged = self.shared.staged.lock().unwrap();
            digests
                .iter()
                .filter_map(|d| staged.remove(d).map(|s| (d.clone(), s)))
                .collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        let mut linked = Vec::new();
        let mut failure = None;
        for (digest, (tmp, size)) in taken {
            if failure.is_some() {
                self.shared
                    .staged
                    .lock()
                    .unwrap()
                    .insert(digest, (tmp, size));
                continue;
            }
            let target = self.shared.root.blob(&digest);
            match fs::hard_link(tmp.path(), &target) {
                Ok(()) => linked.push((digest, tmp, size)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    linked.push((digest, tmp, size))
                }
                Err(e) => {
                    failure = Some(StoreError::io(format!(
                        "linking blob {digest} into {}",
                        crate::escape::shown(&target)
                    ))(e));
                    // Back where the record step finds it (and reports the failure again).
                    self.shared
                        .staged
                        .lock()
                        .unwrap()
                        .insert(digest, (tmp, size));
                }
            }
        }
        if !linked.is_empty() {
            let blobs = self.shared.root.blobs();
            if let Err(e) = File::open(&blobs).and_then(|d| d.sync_all()) {
                // Unclaimed: the record step links and syncs them again.
                let mut staged = self.shared.staged.lock().unwrap();
                for (digest, tmp, size) in linked {
                    staged.insert(digest, (tmp, size));
                }
                return Err(StoreError::io(format!(
                    "syncing {}",
                    crate::escape::shown(&blobs)
                ))(e));
            }
        }
        let client = client.with_lease(client.lease());
        let mut results = self.shared.handle.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, (digest, _, size)) in linked.iter().enumerate() {
                let (client, digest, size) = (client.clone(), digest.clone(), *size);
                let reference = self.shared.stream.next_ref();
                tasks.spawn(async move {
                    (
                        i,
                        client
                            .claim(&reference, &digest, size, &BTreeMap::new())
                            .await,
                    )
                });
            }
            let mut results = Vec::new();
            while let Some(r) = tasks.join_next().await {
                results.push(r.expect("claim task panicked"));
            }
            results
        });
        results.sort_by_key(|(i, _)| *i);
        let results = results.into_iter().map(|(_, r)| r);
        for ((digest, tmp, size), result) in linked.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(%digest, error = %e, "claiming the on-disk blob failed; streaming it instead");
                self.shared.stream_instead(tmp, digest, *size)?;
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
