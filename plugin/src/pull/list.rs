//! Pull lists: a `.txt` file in an images directory (k3s's and rke2's convention: one image
//! reference per line, `#` comments, blank lines) is a source like an archive, except that its
//! images are pulled (by containerd's transfer service with the registry hosts directory airlift
//! is given; on containerd 1.7 by airlift itself, [`super::pull`]). They then go through the
//! archive's record step ([`crate::import::record`]): the list's lease holds what was pulled, the image
//! records are written with airlift's labels and pins under the same precedence rule, the record
//! names each image's target, and when a line or the file goes its images are unpinned like a
//! removed archive's.

use super::PullError;
use crate::containerd::{Client, ContainerdError, ImageTarget, Pull};
use crate::error::Class;
use crate::import::record::{self, Recorded};
use crate::import::{ImportError, ImportOptions, Precedence, Report};
use crate::ingest::Counters;
use crate::labels;
use crate::platform::{Platform, PlatformPolicy};
use crate::reference::Reference;
use crate::store::StoreKind;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// The largest pull list read (a list of thousands of images is a few hundred KiB).
const MAX_LIST: u64 = 1 << 20;

/// Whether `path` names a pull list (by its extension, as k3s decides).
pub fn is_list(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "txt")
}

/// A list's lines: the references it names, normalised and without repeats (with their line
/// numbers), and a message for every line that is not a reference.
pub fn parse(archive: &str, text: &str) -> (Vec<(usize, Reference)>, Vec<String>) {
    let mut refs: Vec<(usize, Reference)> = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Reference::parse_normalized(line) {
            Ok(r) if refs.iter().any(|(_, x)| *x == r) => {}
            Ok(r) => refs.push((i + 1, r)),
            Err(e) => bad.push(format!("{archive}: line {}: {e}", i + 1)),
        }
    }
    (refs, bad)
}

/// The platforms a pull asks for under `policy` (every platform when empty).
fn platforms(policy: &PlatformPolicy) -> Vec<Platform> {
    match policy {
        PlatformPolicy::All => Vec::new(),
        PlatformPolicy::Host => vec![Platform::host()],
        PlatformPolicy::Only(list) => list.clone(),
    }
}

/// Pulls every image `path` lists; returns the report an archive's import would give.
pub async fn run(
    client: &Client,
    path: &Path,
    opts: &ImportOptions,
    precedence: &dyn Precedence,
) -> Result<Report, ImportError> {
    let started = Instant::now();
    let archive = crate::escape::shown(&path).to_string();
    let open_err = |cause: std::io::Error| ImportError::Open {
        archive: archive.clone(),
        cause,
    };
    let cd_err = |cause: ContainerdError| ImportError::Containerd {
        archive: archive.clone(),
        cause,
    };
    let mut text = String::new();
    let read = crate::sys::open_archive(path, opts.pipes)
        .map_err(open_err)?
        .take(MAX_LIST + 1)
        .read_to_string(&mut text);
    match read {
        Ok(n) if n as u64 > MAX_LIST => {
            return Err(open_err(std::io::Error::other(format!(
                "a pull list larger than {} KiB",
                MAX_LIST >> 10
            ))))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(open_err(std::io::Error::other(
                "a pull list must be text (UTF-8): one image reference per line",
            )))
        }
        Err(e) => return Err(open_err(e)),
    }
    let (refs, mut failed) = parse(&archive, &text);
    // A followed peer's list ([`crate::pull::follow`]): its images come from the peer.
    let peer = super::follow::followed(&text);

    // The list's lease holds what its pulls bring, as an archive's holds its blobs.
    let lease = record::source_lease(client, path).await.map_err(cd_err)?;
    let leased = client.with_lease(Some(&lease));
    let image_labels = opts.image_labels(Some(path));
    // Under verification, nothing is pinned before it is allowed: the pull labels its images
    // without the pins, which the record step adds to the allowed ones.
    let pull_labels: crate::containerd::Labels = match &opts.verify {
        Some(_) => image_labels
            .iter()
            .filter(|(k, _)| ![labels::CRI_PINNED, labels::PINNED].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => image_labels.clone(),
    };
    let mut own: BTreeMap<String, crate::containerd::Labels> = BTreeMap::new();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut verified: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let wanted = platforms(&opts.plan.platforms);
    // containerd 2 pulls through its transfer service; 1.7's takes no hosts directory, so
    // airlift pulls there itself (asked once per list, and only when there is a line).
    let mut client_side = None;

    let mut images: Vec<ImageTarget> = Vec::new();
    let mut skipped = Vec::new();
    let mut yielded = Vec::new();
    for (line, reference) in &refs {
        if opts.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ImportError::Abandoned { archive });
        }
        let name = reference.to_string();
        if precedence.yields(&name) {
            tracing::info!(%archive, image = %name, "provided by another archive, which takes precedence; not pulled");
            skipped.push(format!(
                "{archive}: line {line}: {name}: another archive provides it and takes precedence"
            ));
            yielded.push(name);
            continue;
        }
        let before = match &opts.verify {
            Some(_) => client.get_image(&name).await.map_err(cd_err)?,
            None => None,
        };
        let pull = Pull {
            reference: name.clone(),
            hosts_dir: opts.hosts_dir.clone(),
            labels: pull_labels.clone(),
            platforms: wanted.clone(),
            from: peer.as_ref().map(|p| on_peer(&p.host, reference)),
            plain_http: peer.as_ref().is_some_and(|p| !p.https),
        };
        tracing::info!(%archive, image = %name, "pulling");
        if client_side.is_none() {
            client_side = Some(
                client
                    .version()
                    .await
                    .map(|v| v.starts_with("1."))
                    .map_err(cd_err)?,
            );
        }
        let pulled = if client_side == Some(true) {
            crate::pull::pull(&leased, &pull).await
        } else {
            leased.pull(&pull).await.map_err(PullError::from)
        };
        match pulled {
            Ok(()) => {}
            Err(e) if e.class() == Class::Unavailable && !reachable(client).await => {
                // containerd itself is away: the whole list is tried again.
                return Err(cd_err(e.into_containerd()));
            }
            Err(e) => {
                // An image this list pulled before stays as it is when it cannot be pulled
                // again (its registry or peer away, the tag gone there): what the node has
                // is not failed for what a registry says now.
                let before = client
                    .get_image(&name)
                    .await
                    .map_err(cd_err)?
                    .filter(|r| r.labels.get(labels::ARCHIVE) == Some(&archive));
                if let Some(r) = before {
                    tracing::warn!(%archive, image = %name, error = %e, "cannot pull again; the image pulled before is kept");
                    skipped.push(format!(
                        "{archive}: line {line}: {name}: not pulled again ({e}); the image pulled before is kept"
                    ));
                    images.push(ImageTarget::of(r));
                    continue;
                }
                tracing::warn!(%archive, image = %name, error = %e, "pull failed");
                failed.push(format!("{archive}: line {line}: {name}: {e}"));
                continue;
            }
        }
        match client.get_image(&name).await.map_err(cd_err)? {
            Some(r) => {
                let Some(gate) = opts.verify.as_deref() else {
                    images.push(ImageTarget::of(r));
                    continue;
                };
                let from = |r: &Reference| peer.as_ref().map(|p| on_peer(&p.host, r));
                let checked =
                    super::verified::check(gate, &leased, &pull, reference, &r, from).await;
                match checked.outcome {
                    Ok(met) => {
                        tracing::info!(%archive, image = %name, "verified: {}", met.join("; "));
                        own.insert(
                            name.clone(),
                            BTreeMap::from([(
                                crate::verify::gate::VERIFIED_LABEL.to_string(),
                                crate::verify::gate::summary(&met),
                            )]),
                        );
                        verified.insert(name.clone(), met);
                        // Every signature record names the image it signs (not the record
                        // pushed before it).
                        let subject = r.digest.clone();
                        images.push(ImageTarget::of(r));
                        for a in checked.attachments {
                            let label = (labels::SUBJECT.to_string(), subject.clone());
                            own.insert(a.name.clone(), BTreeMap::from([label]));
                            images.push(a);
                        }
                    }
                    Err(why) => {
                        tracing::warn!(%archive, image = %name, "{why}");
                        super::verified::undo(client, &r, before.as_ref(), &checked.attachments)
                            .await;
                        failed.push(format!("{archive}: line {line}: {name}: {why}"));
                        refused.insert(name.clone(), why);
                    }
                }
            }
            None => failed.push(format!(
                "{archive}: line {line}: {name}: pulled, but its image record is gone (removed by someone meanwhile)"
            )),
        }
    }
    // The pins again, with the rest of airlift's labels: a pull of a name that existed replaced
    // its labels. A name another archive won meanwhile goes back to it.
    let shadowed = record::write_images(
        client,
        &images,
        &image_labels,
        &own,
        precedence,
        &archive,
        "pulled",
    )
    .await
    .map_err(cd_err)?;
    let blobs = client.lease_content(&lease).await.map_err(cd_err)?;
    let recorded = Recorded {
        images,
        shadowed,
        yielded,
        lease: Some(lease),
        blobs,
        failed,
        skipped,
        not_selected: Vec::new(),
        served_only: Vec::new(),
        unserved: Vec::new(),
    };
    let mut report = Report::new(
        archive,
        StoreKind::Pulled,
        recorded,
        &Counters::default(),
        text.len() as u64,
        started,
        None,
    );
    report.verified = verified;
    report.refused = refused;
    Ok(report)
}

/// `reference` as a reference on the registry endpoint at `host`, whose first path component
/// names the registry unless it is docker.io.
fn on_peer(host: &str, reference: &Reference) -> String {
    let path = match reference.domain() {
        "docker.io" => reference.path().to_string(),
        domain => format!("{domain}/{}", reference.path()),
    };
    match reference.object() {
        o if o.starts_with('@') => format!("{host}/{path}{o}"),
        o => format!("{host}/{path}:{o}"),
    }
}

/// Whether containerd answers (a failed pull said "unavailable": containerd, or the registry?).
async fn reachable(client: &Client) -> bool {
    client.list_leases("id==airlift-probe").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lines_of_references() {
        let text = "# k3s images\n\ndocker.io/rancher/mirrored-pause:3.6\n  busybox  \nbusybox:latest\nnot a reference\nquay.io/a/b@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd\n";
        let (refs, bad) = parse("/i/list.txt", text);
        let names: Vec<String> = refs.iter().map(|(_, r)| r.to_string()).collect();
        assert_eq!(
            names,
            [
                "docker.io/rancher/mirrored-pause:3.6",
                "docker.io/library/busybox:latest",
                "quay.io/a/b@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd",
            ]
        );
        assert_eq!(refs[1].0, 4, "line numbers count comments and blanks");
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].starts_with("/i/list.txt: line 6: "),
            "names the list and the line: {bad:?}"
        );
        assert!(is_list(Path::new("/i/images.txt")));
        let r = |s: &str| Reference::parse_normalized(s).unwrap();
        assert_eq!(
            on_peer("10.0.0.5:5050", &r("busybox:1.36")),
            "10.0.0.5:5050/library/busybox:1.36"
        );
        assert_eq!(
            on_peer("h:1", &r("quay.io/org/app@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd")),
            "h:1/quay.io/org/app@sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd"
        );
        assert!(!is_list(Path::new("/i/images.tar")));
    }
}
