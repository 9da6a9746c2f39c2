//! Names: which archive each image name comes from. When several present archives provide the
//! same name, the one with the newest modification time wins (for equal times, the path that
//! sorts first) — the same rule at startup, while running and after a restart. The others'
//! images of that name are *shadowed*: their content stays held by their leases, ready for when
//! the winner goes or stops providing the name, and then the name is re-pointed at the next
//! provider's target, with its labels. [`Daemon::assert_name`] makes containerd show what the
//! rule says, and is what every import, release and repair ends with.

use super::Daemon;
use crate::containerd::{Client, ImageTarget};
use crate::pins::{self, Change, Desired};
use crate::state::Record;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The records of the archives that provide their images now.
fn present(inner: &super::status::Inner) -> Vec<Record> {
    inner
        .archives
        .values()
        .filter_map(|a| a.provisional.clone().or_else(|| a.record.clone()))
        .filter(|r| r.is_present())
        .collect()
}

/// The archive every name provided by `records` comes from (the rule of
/// [`Daemon::desired`], for all names at once).
pub fn winners(records: &[Record]) -> HashMap<String, PathBuf> {
    let mut best: HashMap<&str, &Record> = HashMap::new();
    for r in records {
        for n in r.names() {
            let e = best.entry(n).or_insert(r);
            if beats(rank(r), rank(e)) {
                *e = r;
            }
        }
    }
    best.into_iter()
        .map(|(n, r)| (n.to_string(), r.path.clone()))
        .collect()
}

/// The names `record` provides that come from another archive, by `winners`, with that archive.
pub fn shadowed(winners: &HashMap<String, PathBuf>, record: &Record) -> BTreeMap<String, PathBuf> {
    record
        .names()
        .filter_map(|n| {
            let by = winners.get(n)?;
            (*by != record.path).then(|| (n.to_string(), by.clone()))
        })
        .collect()
}

/// Whether an archive (path, modification time) takes precedence over another.
pub fn beats(a: (&Path, i128), b: (&Path, i128)) -> bool {
    a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
}

fn rank(r: &Record) -> (&Path, i128) {
    (&r.path, r.identity.mtime_ns)
}

impl Daemon {
    /// The records of the archives that provide their images now (a running import's
    /// provisional record for its archive, once it writes image records).
    pub(super) fn present_records(&self) -> Vec<Record> {
        // Copied under the lock, their files looked at outside it.
        let candidates: Vec<Record> = {
            let inner = self.inner.lock().unwrap();
            inner
                .archives
                .values()
                .filter_map(|a| a.provisional.clone().or_else(|| a.record.clone()))
                .collect()
        };
        candidates.into_iter().filter(|r| r.is_present()).collect()
    }

    /// What containerd should show of `name`: its winner's target and labels.
    pub fn desired(&self, name: &str) -> Option<Desired> {
        self.desired_among(&self.present_records(), name)
    }

    pub(super) fn desired_among(&self, records: &[Record], name: &str) -> Option<Desired> {
        let mut best: Option<(&Record, &ImageTarget)> = None;
        for r in records {
            let Some(t) = r.images.iter().find(|i| i.name == name) else {
                continue;
            };
            if best.is_none_or(|(b, _)| beats(rank(r), rank(b))) {
                best = Some((r, t));
            }
        }
        best.map(|(r, t)| Desired {
            archive: r.path.clone(),
            target: t.clone(),
            labels: self.importer.labels(&r.path),
        })
    }

    /// Whether some present archive provides `name`.
    pub fn provides(&self, name: &str) -> bool {
        self.present_records()
            .iter()
            .any(|r| r.names().any(|n| n == name))
    }

    /// Whether another present archive takes precedence over `path` (at `identity`) for `name`.
    pub(super) fn yields(&self, path: &Path, identity: crate::state::Identity, name: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        present(&inner).iter().any(|r| {
            r.path != path
                && beats(rank(r), (path, identity.mtime_ns))
                && r.names().any(|n| n == name)
        })
    }

    /// The import of `path` (at `identity`) is about to write `images`: which of them another
    /// present archive takes precedence for — and, in the same step, `images` count as provided
    /// by `path` from now on, so that neither a concurrent import nor a repair undoes them.
    pub(super) fn claim(
        &self,
        path: &Path,
        identity: crate::state::Identity,
        images: &[ImageTarget],
    ) -> BTreeSet<String> {
        let mut inner = self.inner.lock().unwrap();
        let others = present(&inner);
        let shadowed = others
            .iter()
            .filter(|r| r.path != path && beats(rank(r), (path, identity.mtime_ns)))
            .flat_map(|r| r.names().map(str::to_string))
            .filter(|n| images.iter().any(|i| i.name == *n))
            .collect();
        if let Some(a) = inner.archives.get_mut(path) {
            // What it provides meanwhile: the new images, and those of its last record that the
            // new ones do not replace (they are let go of only once the import is done).
            let mut r = a
                .record
                .clone()
                .unwrap_or_else(|| Record::new(path, identity));
            r.images
                .retain(|old| !images.iter().any(|i| i.name == old.name));
            r.images.extend(images.iter().cloned());
            r.identity = identity;
            a.provisional = Some(r);
        }
        shadowed
    }

    /// For each name `record` provides that another present archive wins, that archive.
    pub fn shadows(&self, record: &Record) -> BTreeMap<String, PathBuf> {
        shadowed(&winners(&self.present_records()), record)
    }

    /// `record` with only the images it wins: what containerd must show of it.
    pub(super) fn won(&self, record: &Record) -> Record {
        let shadowed = self.shadows(record);
        let mut r = record.clone();
        r.images.retain(|i| !shadowed.contains_key(&i.name));
        r
    }

    /// Makes containerd show `name` as the rule says: its winner's record, or — when no present
    /// archive provides it and its image names `released` — no pins. Returns what was changed.
    pub async fn assert_name(
        &self,
        client: &Client,
        name: &str,
        released: Option<&Path>,
    ) -> Result<Change, crate::containerd::ContainerdError> {
        let desired = self.desired(name);
        let actual = client.get_image(name).await?;
        let change = pins::decide(actual.as_ref(), desired.as_ref(), released);
        if let (Change::Put(_), Some(want)) = (&change, &desired) {
            // A record pointing at content that is gone would be a broken image: the content
            // must be there (the winner's lease holds it unless someone removed the lease).
            let digest: crate::digest::Digest = want.target.digest.parse().map_err(|_| {
                crate::containerd::ContainerdError::call(
                    format!("restore {name}"),
                    crate::error::Class::FailedPrecondition,
                    "the recorded digest is invalid",
                )
            })?;
            if client.info(&digest).await?.is_none() {
                return Err(crate::containerd::ContainerdError::call(
                    format!("restore {name}"),
                    crate::error::Class::NotFound,
                    format!("its content {digest} is gone"),
                ));
            }
        }
        pins::apply(
            client.as_ref(),
            name,
            actual.as_ref(),
            desired.as_ref(),
            &change,
        )
        .await?;
        Ok(change)
    }

    /// [`Daemon::assert_name`] for several names, logging failures (the next verification tries
    /// again); returns the names unpinned.
    pub(super) async fn assert_names(
        &self,
        client: &Client,
        names: &BTreeSet<String>,
        released: Option<&Path>,
    ) -> Vec<String> {
        let mut unpinned = Vec::new();
        for name in names {
            match self.assert_name(client, name, released).await {
                Ok(Change::Unpin) => unpinned.push(name.clone()),
                Ok(Change::Put(why)) if released.is_some() => {
                    let from = self
                        .desired(name)
                        .map(|d| crate::escape::shown(&d.archive).to_string());
                    tracing::info!(image = %name, archive = from.as_deref().unwrap_or(""), what = why.as_str(), "now provided by another archive");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "could not bring the image in line")
                }
            }
        }
        unpinned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_wins_and_the_path_breaks_ties() {
        let (a, b) = (Path::new("/i/a.tar"), Path::new("/i/b.tar"));
        assert!(beats((a, 2), (b, 1)));
        assert!(!beats((a, 1), (b, 2)));
        assert!(
            beats((a, 1), (b, 1)),
            "equal times: the path that sorts first"
        );
        assert!(!beats((b, 1), (a, 1)));
        assert!(!beats((a, 1), (a, 1)), "nothing beats itself");
    }
}
