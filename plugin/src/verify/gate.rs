//! The gate of an import: what verification is asked for (`[verify]`, `--policy`, `--lock`,
//! `--verifier-bin-dir`), loaded once ([`Gate::load`]: a policy or lock that cannot be used
//! stops the command), then applied to each archive's plan between planning and recording
//! ([`Gate::apply`]): an image the digest lock, the policy or a verifier plugin refuses leaves
//! the plan, with its attachments, and becomes a failure naming why.

use super::{Candidate, Lock, LockError, Policy, PolicyError, Signature, Verdict, Verifiers};
use crate::archive::understand::attached::{repository, Attachment, Kind};
use crate::archive::understand::{Plan, Problem};
use crate::containerd::Containerd;
use crate::digest::Digest;
use crate::reference::Reference;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// The label an image airlift verified carries: what it met (`airlift verify` reads it).
pub const VERIFIED_LABEL: &str = "airlift.io/verified";
/// containerd's limit on a label's size, which the summary is kept under.
const LABEL_LIMIT: usize = 4000;

/// What verification is asked for: the `[verify]` table, or the flags of the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A containers-policy.json(5) file (`/etc/containers/policy.json`).
    pub policy: Option<PathBuf>,
    /// A digest lock: `NAME@sha256:…` lines.
    pub lock: Option<PathBuf>,
    /// containerd's image verifier plugins' directory (its `bin_dir`).
    pub verifier_bin_dir: Option<PathBuf>,
    /// How many verifiers run at most (containerd's `max_verifiers`; default 10, negative: all).
    pub max_verifiers: Option<i64>,
    /// How long one verifier may take (containerd's `per_verifier_timeout`, `"10s"`).
    #[serde(default, with = "humantime_serde_opt")]
    pub per_verifier_timeout: Option<Duration>,
}

/// `per_verifier_timeout` as containerd writes it (`"10s"`, `"1m30s"`).
mod humantime_serde_opt {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// Why the verification asked for cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The policy file.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The lock file.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The verifier directory is not one.
    #[error("verifier_bin_dir {0}: not a directory")]
    BinDir(String),
}

/// Verification, loaded: every key read, every lock line parsed.
#[derive(Debug)]
pub struct Gate {
    /// What was loaded, as a fingerprint: an import made under other settings (another policy,
    /// lock or verifier directory, or the same files changed) does not stand for this one.
    fingerprint: String,
    policy: Option<(String, Policy)>,
    lock: Option<Lock>,
    verifiers: Option<Verifiers>,
}

/// The registry manifest an image recorded under another digest was signed as (a docker-save
/// image, whose manifest airlift makes: [`crate::import::sidecar`]), with the signatures
/// carried for it.
#[derive(Debug, Clone)]
pub struct SignedAs {
    /// The registry manifest's descriptor.
    pub manifest: crate::oci::Descriptor,
    /// The attachments carried beside the archive (for any subject).
    pub attachments: std::sync::Arc<Vec<Attachment>>,
}

/// What the gate decided for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The image's name.
    pub image: String,
    /// Allowed, with what each check met; or refused, and why.
    pub outcome: Result<Vec<String>, String>,
}

impl Gate {
    /// Loads what `settings` ask for; `None` when they ask for nothing.
    pub fn load(settings: &Settings) -> Result<Option<Gate>, GateError> {
        if settings.policy.is_none()
            && settings.lock.is_none()
            && settings.verifier_bin_dir.is_none()
        {
            return Ok(None);
        }
        let policy = match &settings.policy {
            Some(p) => Some((crate::escape::shown(p).to_string(), Policy::load(p)?)),
            None => None,
        };
        let lock = settings.lock.as_deref().map(Lock::load).transpose()?;
        let verifiers = match &settings.verifier_bin_dir {
            Some(dir) => {
                if dir.exists() && !dir.is_dir() {
                    return Err(GateError::BinDir(crate::escape::shown(dir).to_string()));
                }
                let d = Verifiers::default();
                Some(Verifiers {
                    bin_dir: dir.clone(),
                    max_verifiers: settings.max_verifiers.unwrap_or(d.max_verifiers),
                    per_verifier_timeout: settings
                        .per_verifier_timeout
                        .unwrap_or(d.per_verifier_timeout),
                })
            }
            None => None,
        };
        let file = |p: &Option<PathBuf>| match p {
            Some(p) => format!(
                "{}@{}",
                crate::escape::shown(p),
                std::fs::read(p)
                    .map(|b| Digest::of(&b).to_string())
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let fingerprint = format!(
            "policy={}|lock={}|verifiers={:?}",
            file(&settings.policy),
            file(&settings.lock),
            verifiers
        );
        Ok(Some(Gate {
            fingerprint,
            policy,
            lock,
            verifiers,
        }))
    }

    /// What was loaded, to tell imports made under other settings apart.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Names for images an archive leaves unnamed: the lock's, by digest.
    pub fn names_by_digest(&self) -> BTreeMap<Digest, Vec<String>> {
        self.lock.as_ref().map(Lock::by_digest).unwrap_or_default()
    }

    /// Decides on every image of `plan` and takes the refused out of it (with the attachments
    /// recorded for them, when no image of their repository is left with that digest), each a
    /// [`Problem::Failed`] saying why. Signatures are those the archive carries for the image's
    /// target, and those containerd holds under its repository's `sha256-<hex>.sig` and
    /// referrers tags. Returns every decision.
    pub async fn apply(
        &self,
        plan: &mut Plan,
        signed_as: &BTreeMap<Digest, SignedAs>,
        containerd: &dyn Containerd,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let mut refused: BTreeSet<String> = BTreeSet::new();
        for image in plan.images.iter().filter(|i| i.subject.is_none()) {
            let outcome = match signed_as.get(&image.target.digest) {
                Some(s) => {
                    self.decide(&image.name, &s.manifest, &s.attachments, containerd)
                        .await
                }
                None => {
                    self.decide(&image.name, &image.target, &plan.attachments, containerd)
                        .await
                }
            };
            if let Err(why) = &outcome {
                refused.insert(image.name.clone());
                plan.problems.push(Problem::Failed {
                    image: image.name.clone(),
                    entry: None,
                    cause: why.clone(),
                });
            }
            decisions.push(Decision {
                image: image.name.clone(),
                outcome,
            });
        }
        plan.images.retain(|i| !refused.contains(&i.name));
        let kept: BTreeSet<(String, Digest)> = plan
            .images
            .iter()
            .filter(|i| i.subject.is_none())
            .filter_map(|i| Some((repository(&i.name)?, i.target.digest.clone())))
            .collect();
        plan.images
            .retain(|i| match (&i.subject, repository(&i.name)) {
                (Some(s), Some(repo)) => kept.contains(&(repo, s.clone())),
                _ => true,
            });
        decisions
    }

    /// One image already in containerd (a pull list's): its signatures those containerd holds
    /// under its repository's `.sig` and referrers tags.
    pub async fn decide_stored(
        &self,
        name: &str,
        target: &crate::oci::Descriptor,
        containerd: &dyn Containerd,
    ) -> Result<Vec<String>, String> {
        self.decide(name, target, &[], containerd).await
    }

    /// One image: the lock, then the policy, then the verifier plugins.
    async fn decide(
        &self,
        name: &str,
        target: &crate::oci::Descriptor,
        attachments: &[Attachment],
        containerd: &dyn Containerd,
    ) -> Result<Vec<String>, String> {
        let reference = Reference::parse_normalized(name).map_err(|e| e.to_string())?;
        let mut met = Vec::new();
        if let Some(lock) = &self.lock {
            lock.check(&reference, &target.digest)
                .map_err(|e| format!("refused by the digest lock: {e}"))?;
            if lock.get(&reference).is_some() {
                met.push(format!("digest lock: {}", target.digest));
            }
        }
        if let Some((file, policy)) = &self.policy {
            let mut signatures = carried(attachments, &target.digest);
            signatures.extend(stored(containerd, &reference, &target.digest).await);
            let candidate = Candidate {
                name: reference.clone(),
                digest: target.digest.clone(),
                signatures,
            };
            match policy.evaluate(&candidate) {
                Verdict::Allowed { scope, met: lines } => {
                    met.push(format!("policy {file} scope {scope}: {}", lines.join("; ")))
                }
                refused @ Verdict::Refused { .. } => return Err(refused.to_string()),
            }
        }
        if let Some(verifiers) = &self.verifiers {
            let mut descriptor = crate::oci::Descriptor::new(
                &target.media_type,
                target.digest.clone(),
                target.size as u64,
            );
            descriptor.annotations.clear();
            match verifiers.judge(name, &descriptor).await {
                Ok(j) if j.ok => met.push(format!("image verifiers: {}", j.reason)),
                Ok(j) => return Err(format!("refused by image verifier: {}", j.reason)),
                Err(e) => return Err(format!("refused by image verifier: {e}")),
            }
        }
        Ok(met)
    }
}

/// The summary an allowed image's [`VERIFIED_LABEL`] carries (kept under containerd's limit).
pub fn summary(met: &[String]) -> String {
    let mut s = if met.is_empty() {
        "no requirement applies".to_string()
    } else {
        met.join(" | ")
    };
    if s.len() > LABEL_LIMIT {
        let mut end = LABEL_LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The signatures an archive carries for `digest`: the simple-signing layers of its `.sig`
/// manifests, the bundles of its referrers.
pub fn carried(attachments: &[Attachment], digest: &Digest) -> Vec<Signature> {
    let mut out = Vec::new();
    for a in attachments.iter().filter(|a| &a.subject == digest) {
        out.extend(signatures_of(
            &a.kind,
            &a.manifest.annotations,
            &layers_data(a),
        ));
    }
    out
}

/// The signatures of one attachment: its layers' descriptors and bytes.
fn signatures_of(
    kind: &Kind,
    manifest_annotations: &BTreeMap<String, String>,
    layers: &[(crate::oci::Descriptor, Option<Vec<u8>>)],
) -> Vec<Signature> {
    let mut out = Vec::new();
    for (layer, data) in layers {
        let Some(data) = data else { continue };
        match kind {
            Kind::Signatures if layer.media_type == super::signature::SIMPLE_SIGNING_MEDIA_TYPE => {
                out.push(Signature::SimpleSigning {
                    payload: data.clone(),
                    annotations: layer.annotations.clone(),
                })
            }
            Kind::Referrer { artifact_type }
                if artifact_type == super::signature::BUNDLE_MEDIA_TYPE
                    || layer.media_type == super::signature::BUNDLE_MEDIA_TYPE =>
            {
                out.push(Signature::Bundle {
                    bundle: data.clone(),
                    manifest_annotations: manifest_annotations.clone(),
                })
            }
            _ => {}
        }
    }
    out
}

/// The signatures containerd already holds for `digest` under `name`'s repository: the
/// `sha256-<hex>.sig` record's layers and the bundles the `sha256-<hex>` referrers index
/// lists. What cannot be read is no evidence.
async fn stored(containerd: &dyn Containerd, name: &Reference, digest: &Digest) -> Vec<Signature> {
    let repo = name.repository();
    let mut out = Vec::new();
    let tag = format!("{repo}:sha256-{}", digest.hex());
    if let Ok(Some(record)) = containerd.get_image(&format!("{tag}.sig")).await {
        if let Some(layers) = manifest_layers(containerd, &record.digest.parse().ok()).await {
            out.extend(signatures_of(
                &Kind::Signatures,
                &BTreeMap::new(),
                &layers.1,
            ));
        }
    }
    if let Ok(Some(record)) = containerd.get_image(&tag).await {
        let Some(index) =
            read_json::<crate::oci::Index>(containerd, &record.digest.parse().ok()).await
        else {
            return out;
        };
        for child in index.manifests {
            if let Some((m, layers)) = manifest_layers(containerd, &Some(child.digest)).await {
                let artifact_type = if m.artifact_type.is_empty() {
                    m.config.media_type.clone()
                } else {
                    m.artifact_type.clone()
                };
                out.extend(signatures_of(
                    &Kind::Referrer { artifact_type },
                    &m.annotations,
                    &layers,
                ));
            }
        }
    }
    out
}

/// Layers of one stored signature manifest, as (descriptor, bytes).
type Layers = Vec<(crate::oci::Descriptor, Option<Vec<u8>>)>;

/// A stored manifest and its layers' bytes (each small: signatures are).
async fn manifest_layers(
    containerd: &dyn Containerd,
    digest: &Option<Digest>,
) -> Option<(crate::oci::Manifest, Layers)> {
    let m: crate::oci::Manifest = read_json(containerd, digest).await?;
    let mut layers = Vec::new();
    for l in &m.layers {
        let data = if l.size <= 1 << 20 {
            containerd.read(&l.digest, 0, l.size as u64).await.ok()
        } else {
            None
        };
        layers.push((l.clone(), data));
    }
    Some((m, layers))
}

/// A small stored document, parsed.
async fn read_json<T: serde::de::DeserializeOwned>(
    containerd: &dyn Containerd,
    digest: &Option<Digest>,
) -> Option<T> {
    let digest = digest.as_ref()?;
    let info = containerd.info(digest).await.ok()??;
    if info.size > 4 << 20 {
        return None;
    }
    let bytes = containerd.read(digest, 0, info.size).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// An attachment's layers with their bytes.
fn layers_data(a: &Attachment) -> Layers {
    a.layers
        .iter()
        .map(|l| (l.descriptor.clone(), l.data.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
