//! The fake's garbage collector.

use super::State;
use crate::digest::Digest;
use std::collections::BTreeSet;
use std::time::SystemTime;

/// containerd's collector in miniature: expired leases go, then every blob no image target or
/// lease reaches (directly or through `containerd.io/gc.ref.content.*` labels).
pub(super) fn collect(s: &mut State) -> Vec<Digest> {
    let now = SystemTime::now();
    s.leases.retain(|_, l| {
        l.labels
            .get("containerd.io/gc.expire")
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_none_or(|at| at > now)
    });
    let mut todo: Vec<String> = s.images.values().map(|i| i.digest.clone()).collect();
    todo.extend(s.leases.values().flat_map(|l| l.content.iter().cloned()));
    let mut reached = BTreeSet::new();
    while let Some(d) = todo.pop() {
        let Ok(digest) = d.parse::<Digest>() else {
            continue;
        };
        if !reached.insert(digest.clone()) {
            continue;
        }
        if let Some(b) = s.blobs.get(&digest) {
            for (k, v) in &b.labels {
                if k.starts_with("containerd.io/gc.ref.content") {
                    todo.push(v.clone());
                }
            }
        }
    }
    let gone: Vec<Digest> = s
        .blobs
        .keys()
        .filter(|d| !reached.contains(*d))
        .cloned()
        .collect();
    for d in &gone {
        s.blobs.remove(d);
    }
    // Snapshots: those leases hold and those reached blobs name, with their parents.
    let mut todo: Vec<(String, String)> = s
        .leases
        .values()
        .flat_map(|l| l.snapshots.iter().cloned())
        .collect();
    for d in &reached {
        if let Some(b) = s.blobs.get(d) {
            for (k, v) in &b.labels {
                if let Some(sn) = k.strip_prefix("containerd.io/gc.ref.snapshot.") {
                    todo.push((sn.to_string(), v.clone()));
                }
            }
        }
    }
    let mut kept = BTreeSet::new();
    while let Some(k) = todo.pop() {
        let Some(snap) = s.snapshots.get(&k) else {
            continue;
        };
        if !snap.parent.is_empty() {
            todo.push((k.0.clone(), snap.parent.clone()));
        }
        kept.insert(k);
    }
    s.snapshots.retain(|k, _| kept.contains(k));
    gone
}
