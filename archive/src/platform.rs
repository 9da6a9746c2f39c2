//! Platforms (`linux/arm64/v8`): parsing, normalisation and the host's set of runnable
//! platforms, following containerd's `platforms` package.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An OS/architecture/variant triple as it appears in OCI descriptors and image configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// OS version (Windows only, in practice).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// Why a `--platform` value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
pub struct InvalidPlatform(pub String);

impl Platform {
    /// Builds a normalised platform.
    pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
            ..Default::default()
        }
        .normalized()
    }

    /// Parses `os/arch[/variant]` (or a bare `arch`, meaning linux).
    pub fn parse(s: &str) -> Result<Platform, InvalidPlatform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !parts.iter().all(ok) {
            return Err(InvalidPlatform(s.to_string()));
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new("linux", arch, "")),
            [os, arch] => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            _ => Err(InvalidPlatform(s.to_string())),
        }
    }

    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new("linux", arch, "")
    }

    /// Normalises like containerd: lowercase, architecture aliases, and default variants
    /// dropped or filled in (`aarch64` → `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`).
    pub fn normalized(mut self) -> Platform {
        self.os = self.os.to_lowercase();
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        let arch = self.architecture.to_lowercase();
        let variant = self.variant.to_lowercase();
        let (arch, variant) = match arch.as_str() {
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                let v = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_string(), v)
            }
            "aarch64" | "arm64" => {
                let v = match variant.as_str() {
                    "8" | "v8" | "v8.0" => String::new(),
                    _ => variant,
                };
                ("arm64".to_string(), v)
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        self.architecture = arch;
        self.variant = variant;
        self
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Which platforms an import keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformPolicy {
    /// What the host can run (containerd's `platforms.Only(host)`): the host platform and the
    /// older variants and 32-bit siblings it executes natively.
    Host,
    /// Every platform in the archive.
    All,
    /// Exactly these platforms (each matched with its compatible variants, as containerd does).
    Only(Vec<Platform>),
}

impl PlatformPolicy {
    /// The policy a list of platforms names, as `--platform` (repeated) and the daemon's
    /// `platforms` key give it: none, or `host` alone, is what the host runs; `all` alone is
    /// every platform; anything else is exactly those (`linux/arm64/v8`, `arm64`).
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<PlatformPolicy, InvalidPlatform> {
        match list {
            [] => Ok(PlatformPolicy::Host),
            [one] if one.as_ref() == "host" => Ok(PlatformPolicy::Host),
            [one] if one.as_ref() == "all" => Ok(PlatformPolicy::All),
            list => list
                .iter()
                .map(|p| Platform::parse(p.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map(PlatformPolicy::Only),
        }
    }

    /// The platforms a node serves, as `--serve-platform` (repeated) and the daemon's
    /// `serve_platforms` key give them: none is none (not the host's), `all` alone is every
    /// platform, anything else exactly those. `host` means nothing here and is refused.
    pub fn parse_served<S: AsRef<str>>(list: &[S]) -> Result<PlatformPolicy, InvalidPlatform> {
        match list {
            [] => Ok(PlatformPolicy::Only(Vec::new())),
            [one] if one.as_ref() == "all" => Ok(PlatformPolicy::All),
            list => list
                .iter()
                .map(|p| match p.as_ref() {
                    "host" | "all" => Err(InvalidPlatform(p.as_ref().to_string())),
                    p => Platform::parse(p),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(PlatformPolicy::Only),
        }
    }

    /// Whether this selects no platform at all (no served platforms).
    pub fn is_none(&self) -> bool {
        matches!(self, PlatformPolicy::Only(list) if list.is_empty())
    }

    /// Whether content for `p` is wanted.
    pub fn matches(&self, p: &Platform) -> bool {
        match self {
            PlatformPolicy::All => true,
            PlatformPolicy::Host => runs_on(&Platform::host(), p),
            PlatformPolicy::Only(list) => list.iter().any(|want| runs_on(want, p)),
        }
    }

    /// Whether this is the default host policy (skips are then informational).
    pub fn is_host_default(&self) -> bool {
        matches!(self, PlatformPolicy::Host)
    }
}

/// How well a machine of platform `want` runs images built for `image`, as containerd's
/// platform ordering ranks an index's manifests (lower is better: the exact platform first,
/// then older variants of its architecture, newest first, then the other architectures it
/// runs); `None` when it does not run them at all. A node pulling an index takes the one
/// best-ranked manifest, which is what a node serving `want` keeps for it.
pub fn preference(want: &Platform, image: &Platform) -> Option<u32> {
    let image = image.clone().normalized();
    if !runs_on(want, &image) {
        return None;
    }
    if *want == image {
        return Some(0);
    }
    let older = 100 - variant_number(&image.variant).unwrap_or(0).min(99);
    if want.architecture == image.architecture {
        Some(older)
    } else {
        Some(1000 + older)
    }
}

fn variant_number(v: &str) -> Option<u32> {
    v.strip_prefix('v').unwrap_or(v).parse().ok()
}

/// Whether a machine of platform `host` runs images built for `image`.
fn runs_on(host: &Platform, image: &Platform) -> bool {
    let image = image.clone().normalized();
    if host.os != image.os {
        return false;
    }
    match (host.architecture.as_str(), image.architecture.as_str()) {
        (h, i) if h == i => {
            if host.variant == image.variant || image.variant.is_empty() {
                return true;
            }
            match (
                variant_number(&host.variant),
                variant_number(&image.variant),
            ) {
                // amd64 v1 is written as "", arm v7 is the arm default.
                (None, Some(_)) if host.variant.is_empty() && h == "amd64" => false,
                (Some(hv), Some(iv)) => iv <= hv,
                _ => false,
            }
        }
        ("amd64", "386") => true,
        ("arm64", "arm") => {
            // arm64 hosts run arm v8 and older 32-bit variants.
            variant_number(&image.variant).is_some_and(|v| v <= 8)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_from_lists() {
        let none: [&str; 0] = [];
        assert_eq!(PlatformPolicy::parse(&none), Ok(PlatformPolicy::Host));
        assert_eq!(PlatformPolicy::parse(&["host"]), Ok(PlatformPolicy::Host));
        assert_eq!(PlatformPolicy::parse(&["all"]), Ok(PlatformPolicy::All));
        assert_eq!(
            PlatformPolicy::parse(&["linux/arm64/v8", "arm"]),
            Ok(PlatformPolicy::Only(vec![
                Platform::new("linux", "arm64", ""),
                Platform::new("linux", "arm", "v7"),
            ]))
        );
        assert_eq!(
            PlatformPolicy::parse(&["linux/amd64", "linux//x"]),
            Err(InvalidPlatform("linux//x".into()))
        );
    }

    #[test]
    fn served_platforms_from_lists() {
        let none: [&str; 0] = [];
        let served = PlatformPolicy::parse_served(&none).unwrap();
        assert!(served.is_none());
        assert!(!served.matches(&Platform::host()));
        assert_eq!(
            PlatformPolicy::parse_served(&["all"]),
            Ok(PlatformPolicy::All)
        );
        assert_eq!(
            PlatformPolicy::parse_served(&["linux/arm64"]),
            Ok(PlatformPolicy::Only(vec![Platform::new(
                "linux", "arm64", ""
            )]))
        );
        assert_eq!(
            PlatformPolicy::parse_served(&["host"]),
            Err(InvalidPlatform("host".into()))
        );
        assert_eq!(
            PlatformPolicy::parse_served(&["linux/arm64", "all"]),
            Err(InvalidPlatform("all".into()))
        );
    }

    #[test]
    fn the_best_manifest_for_a_platform_as_containerd_ranks_them() {
        let arm64 = Platform::new("linux", "arm64", "");
        let rank = |s: &str| preference(&arm64, &Platform::parse(s).unwrap());
        assert_eq!(rank("linux/arm64/v8"), Some(0));
        assert!(rank("linux/arm/v7").unwrap() < rank("linux/arm/v6").unwrap());
        assert_eq!(rank("linux/amd64"), None);
        let v7 = Platform::new("linux", "arm", "v7");
        let rank = |s: &str| preference(&v7, &Platform::parse(s).unwrap());
        assert_eq!(rank("linux/arm/v7"), Some(0));
        assert!(rank("linux/arm/v6").unwrap() < rank("linux/arm/v5").unwrap());
        assert_eq!(rank("linux/arm64"), None);
        let amd64 = Platform::new("linux", "amd64", "");
        assert!(preference(&amd64, &Platform::new("linux", "386", "")).unwrap() > 0);
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap(),
            Platform::new("linux", "arm64", "")
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::parse("amd64").unwrap().to_string(), "linux/amd64");
        assert!(Platform::parse("linux//x").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn matches_like_containerd() {
        let amd64 = Platform::new("linux", "amd64", "");
        let arm64 = Platform::new("linux", "arm64", "");
        let only_arm64 = PlatformPolicy::Only(vec![arm64.clone()]);
        assert!(only_arm64.matches(&Platform::new("linux", "arm64", "v8")));
        assert!(only_arm64.matches(&Platform::new("linux", "arm", "v7")));
        assert!(!only_arm64.matches(&amd64));
        let only_amd64 = PlatformPolicy::Only(vec![amd64.clone()]);
        assert!(only_amd64.matches(&Platform::new("linux", "386", "")));
        assert!(!only_amd64.matches(&Platform::new("linux", "amd64", "v3")));
        assert!(!only_amd64.matches(&Platform::new("windows", "amd64", "")));
        assert!(PlatformPolicy::All.matches(&Platform::new("linux", "s390x", "")));
        let host = Platform::host();
        assert!(PlatformPolicy::Host.matches(&host));
        let other = if host.architecture == "amd64" {
            arm64
        } else {
            amd64
        };
        assert!(!PlatformPolicy::Host.matches(&other));
    }
}
