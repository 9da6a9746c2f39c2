//! The fake's snapshotters and differ: snapshots prepared on committed parents and committed
//! under their names, and a differ that answers the digest of a layer's uncompressed bytes.

use super::{stored_labels, Fake, Snapshot, State};
use crate::containerd::{
    ContainerdError, Descriptor, Labels, Mount, Result, SnapshotInfo, SnapshotKind, Snapshots,
};
use crate::digest::Digest;
use crate::error::Class;

/// The error of a snapshot call.
fn snapshot_error(op: String, class: Class, message: &str) -> ContainerdError {
    ContainerdError::call(op, class, message)
}

/// The uncompressed bytes of a layer blob of `media_type`, as the differ reads them.
fn uncompressed(media_type: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    } else if media_type.ends_with("zstd") {
        out = zstd::decode_all(data)?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Snapshots for Fake {
    async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        self.enter("prepare_snapshot", key)?;
        let op = || format!("prepare snapshot {key:?} in {snapshotter}");
        let mut s = self.state();
        let committed = |s: &State, name: &str| {
            s.snapshots
                .get(&(snapshotter.to_string(), name.to_string()))
                .is_some_and(|x| x.kind == SnapshotKind::Committed)
        };
        if let Some(target) = labels.get("containerd.io/snapshot.ref") {
            if committed(&s, target) {
                self.hold_snapshot(&mut s, snapshotter, target, true);
                return Err(snapshot_error(
                    op(),
                    Class::AlreadyExists,
                    &format!("target snapshot {target:?}: already exists"),
                ));
            }
        }
        let k = (snapshotter.to_string(), key.to_string());
        if s.snapshots.contains_key(&k) {
            return Err(snapshot_error(op(), Class::AlreadyExists, "already exists"));
        }
        if !parent.is_empty() && !committed(&s, parent) {
            return Err(snapshot_error(
                op(),
                Class::NotFound,
                &format!("parent snapshot {parent} does not exist"),
            ));
        }
        s.snapshots.insert(
            k,
            Snapshot {
                kind: SnapshotKind::Active,
                parent: parent.to_string(),
                labels: stored_labels(labels),
                applied: Vec::new(),
            },
        );
        self.hold_snapshot(&mut s, snapshotter, key, true);
        Ok(vec![Mount {
            kind: "fake".into(),
            source: format!("{snapshotter}/{key}"),
            target: String::new(),
            options: Vec::new(),
        }])
    }

    async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &Labels,
    ) -> Result<()> {
        self.enter("commit_snapshot", name)?;
        let op = || format!("commit snapshot {name} in {snapshotter}");
        let mut s = self.state();
        self.hold_snapshot(&mut s, snapshotter, name, true);
        let n = (snapshotter.to_string(), name.to_string());
        if s.snapshots.contains_key(&n) {
            return Err(snapshot_error(op(), Class::AlreadyExists, "already exists"));
        }
        let k = (snapshotter.to_string(), key.to_string());
        let Some(active) = s
            .snapshots
            .get(&k)
            .filter(|a| a.kind == SnapshotKind::Active)
            .cloned()
        else {
            return Err(snapshot_error(
                op(),
                Class::NotFound,
                "no such active snapshot",
            ));
        };
        s.snapshots.remove(&k);
        // The committed snapshot has the commit's labels only: the active one's go with it.
        s.snapshots.insert(
            n,
            Snapshot {
                kind: SnapshotKind::Committed,
                parent: active.parent,
                labels: stored_labels(labels),
                applied: active.applied,
            },
        );
        self.hold_snapshot(&mut s, snapshotter, key, false);
        Ok(())
    }

    async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>> {
        self.enter("stat_snapshot", key)?;
        Ok(self
            .state()
            .snapshots
            .get(&(snapshotter.to_string(), key.to_string()))
            .map(|x| SnapshotInfo {
                name: key.to_string(),
                parent: x.parent.clone(),
                kind: x.kind,
                labels: x.labels.clone(),
            }))
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.enter("remove_snapshot", key)?;
        let mut s = self.state();
        let parent = s
            .snapshots
            .iter()
            .any(|((sn, _), x)| sn == snapshotter && x.parent == key);
        if parent {
            return Err(snapshot_error(
                format!("remove snapshot {key:?} in {snapshotter}"),
                Class::FailedPrecondition,
                "cannot remove snapshot with child",
            ));
        }
        s.snapshots
            .remove(&(snapshotter.to_string(), key.to_string()));
        Ok(())
    }

    async fn apply_diff(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Digest> {
        self.enter("apply_diff", layer.digest.to_string())?;
        let op = || format!("apply layer {} ({})", layer.digest, layer.media_type);
        let data = {
            let s = self.state();
            s.blobs
                .get(&layer.digest)
                .ok_or_else(|| ContainerdError::call(op(), Class::NotFound, "content not found"))?
                .data
                .clone()
        };
        let target = mounts
            .first()
            .and_then(|m| m.source.split_once('/'))
            .map(|(sn, key)| (sn.to_string(), key.to_string()));
        let plain = uncompressed(&layer.media_type, &data)
            .map_err(|e| ContainerdError::call(op(), Class::Internal, e.to_string()))?;
        let diff_id = Digest::of(&plain);
        let mut s = self.state();
        let active = target
            .and_then(|k| s.snapshots.get_mut(&k))
            .filter(|a| a.kind == SnapshotKind::Active)
            .ok_or_else(|| {
                ContainerdError::call(
                    op(),
                    Class::InvalidArgument,
                    "not an active snapshot's mounts",
                )
            })?;
        active.applied.push(layer.digest.clone());
        Ok(diff_id)
    }
}
