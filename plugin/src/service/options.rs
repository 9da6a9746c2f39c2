//! Import options, built in one place whoever asks: `airlift import` from its flags, the daemon
//! from its configuration. Both say the same things in the same words — platforms (one parser,
//! [`PlatformPolicy::parse`]), labels, pins, the store mode, unpacking, the hosts directory — and
//! [`Asked::options`] checks them and makes the [`ImportOptions`] every import runs with.

use crate::archive::understand::PlanOptions;
use crate::config::Config;
use crate::import::{ImportOptions, Mode};
use crate::platform::{InvalidPlatform, PlatformPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What an import is asked to do, as the flags or the configuration say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Platforms by name: none for what the host runs, `all` for every platform, or a list.
    pub platforms: Vec<String>,
    /// Platforms served to other nodes, not run: none, `all`, or a list
    /// ([`PlatformPolicy::parse_served`]).
    pub serve_platforms: Vec<String>,
    /// The repository of tag-only names.
    pub base_name: Option<String>,
    /// A name for the archive's whole index.
    pub index_name: Option<String>,
    /// Also `<repository>@sha256:…` names.
    pub digest_refs: bool,
    /// Extra image labels.
    pub labels: BTreeMap<String, String>,
    /// Pin the images.
    pub pin: bool,
    /// How blobs reach containerd.
    pub mode: Mode,
    /// Unpack into this snapshotter.
    pub unpack: Option<String>,
    /// The registry hosts directory the pulls of pull lists go through.
    pub hosts_dir: Option<PathBuf>,
    /// The content root to write into when containerd does not report one (airlift's own store,
    /// as containerd's content proxy).
    pub content_root: Option<PathBuf>,
    /// Where a decoder's scratch files go.
    pub scratch_dir: Option<PathBuf>,
    /// Named pipes may be read as archives.
    pub pipes: bool,
    /// Verification at import (`[verify]`, `--policy`, `--lock`, `--verifier-bin-dir`).
    pub verify: crate::verify::Settings,
}

impl Default for Asked {
    fn default() -> Self {
        Asked {
            platforms: Vec::new(),
            serve_platforms: Vec::new(),
            base_name: None,
            index_name: None,
            digest_refs: false,
            labels: BTreeMap::new(),
            pin: true,
            mode: Mode::Auto,
            unpack: None,
            hosts_dir: None,
            content_root: None,
            scratch_dir: None,
            pipes: false,
            verify: crate::verify::Settings::default(),
        }
    }
}

/// Why the options asked for cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A platform is not `os/arch[/variant]`.
    #[error(transparent)]
    Platform(#[from] InvalidPlatform),
    /// A `--label` is not `KEY=VALUE` with a key.
    #[error("invalid --label {label:?}: {why}")]
    Label {
        /// The label as given.
        label: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The snapshotter's name cannot be one.
    #[error(transparent)]
    Snapshotter(#[from] crate::unpack::UnpackError),
    /// The policy, the lock or the verifier directory cannot be used.
    #[error(transparent)]
    Verify(#[from] crate::verify::GateError),
}

/// A `--label KEY=VALUE`, split.
pub fn label(text: &str) -> Result<(String, String), OptionsError> {
    let bad = |why| OptionsError::Label {
        label: text.to_string(),
        why,
    };
    match text.split_once('=') {
        None => Err(bad("expected KEY=VALUE")),
        Some(("", _)) => Err(bad("empty key")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
    }
}

impl Asked {
    /// What the daemon's configuration asks of every import: its scratch files in the state
    /// directory, its pull lists through the hosts directory it is given or the one its
    /// `[mirrors]` table writes.
    pub fn of_config(cfg: &Config) -> Asked {
        Asked {
            platforms: cfg.platforms.clone(),
            serve_platforms: cfg.serve_platforms.clone(),
            base_name: None,
            index_name: None,
            digest_refs: cfg.digest_refs,
            labels: cfg.labels.clone(),
            pin: cfg.pin,
            mode: cfg.mode,
            unpack: cfg.unpack.clone(),
            hosts_dir: cfg
                .hosts_dir
                .clone()
                .or_else(|| cfg.mirrors.options().map(|_| cfg.mirrors.hosts_dir.clone())),
            content_root: cfg.content_proxy.root.clone(),
            scratch_dir: Some(cfg.state_dir.clone()),
            pipes: false,
            verify: cfg.verify.clone(),
        }
    }

    /// The platform policy asked for.
    pub fn platform_policy(&self) -> Result<PlatformPolicy, InvalidPlatform> {
        PlatformPolicy::parse(&self.platforms)
    }

    /// What is worth saying about the platforms asked for, though it is no error: served
    /// platforms the node runs anyway (run, so unpacked too), or serving beside importing
    /// every platform (every platform is imported to run already).
    pub fn platform_notes(&self) -> Vec<String> {
        let (Ok(run), Ok(serve)) = (
            self.platform_policy(),
            PlatformPolicy::parse_served(&self.serve_platforms),
        ) else {
            return Vec::new();
        };
        match (&run, &serve) {
            (_, s) if s.is_none() => Vec::new(),
            (PlatformPolicy::All, _) => vec![
                "serve_platforms is redundant with platforms = [\"all\"]: every platform is \
                 imported as the node's own already (and the host's unpacked)"
                    .to_string(),
            ],
            (_, PlatformPolicy::Only(wants)) => wants
                .iter()
                .filter(|w| run.matches(w))
                .map(|w| {
                    format!("{w} is served and run by this node: it is run (imported as the node's own and unpacked)")
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Checks what was asked and makes the import options.
    pub fn options(&self) -> Result<ImportOptions, OptionsError> {
        if let Some(sn) = &self.unpack {
            crate::unpack::valid_snapshotter(sn)?;
        }
        let gate = crate::verify::Gate::load(&self.verify)?;
        Ok(ImportOptions {
            plan: PlanOptions {
                platforms: self.platform_policy()?,
                serve: PlatformPolicy::parse_served(&self.serve_platforms)?,
                base_name: self.base_name.clone(),
                index_name: self.index_name.clone(),
                digest_refs: self.digest_refs,
                named: gate
                    .as_ref()
                    .map(|g| g.names_by_digest())
                    .unwrap_or_default(),
            },
            labels: self.labels.clone(),
            pin: self.pin,
            mode: self.mode,
            content_root: self.content_root.clone(),
            scratch_dir: self.scratch_dir.clone(),
            pipes: self.pipes,
            hosts_dir: self.hosts_dir.clone(),
            unpack: self.unpack.clone(),
            verify: gate.map(std::sync::Arc::new),
            ..ImportOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value() {
        assert_eq!(label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(label("a=").unwrap(), ("a".into(), String::new()));
        let e = label("=b").unwrap_err().to_string();
        assert_eq!(e, "invalid --label \"=b\": empty key");
        let e = label("ab").unwrap_err().to_string();
        assert!(e.contains("expected KEY=VALUE"), "{e}");
    }

    #[test]
    fn the_configuration_asks_what_the_flags_would() {
        let cfg = Config::parse(
            "platforms = [\"linux/arm64\"]\ndigest_refs = true\nunpack = \"native\"\n[labels]\nteam = \"edge\"\n[mirrors]\npeers = [\"http://10.0.0.5:5050\"]\n",
        )
        .unwrap();
        let o = Asked::of_config(&cfg).options().unwrap();
        assert!(matches!(o.plan.platforms, PlatformPolicy::Only(ref p) if p.len() == 1));
        assert!(o.plan.digest_refs && o.pin && !o.pipes);
        assert_eq!(o.labels["team"], "edge");
        assert_eq!(o.unpack.as_deref(), Some("native"));
        assert_eq!(o.hosts_dir, Some(PathBuf::from("/etc/containerd/certs.d")));
        assert_eq!(o.scratch_dir, Some(cfg.state_dir.clone()));
        let bad = Asked {
            unpack: Some("no/such".into()),
            ..Asked::default()
        };
        assert!(bad
            .options()
            .unwrap_err()
            .to_string()
            .contains("snapshotter"));
    }
}
