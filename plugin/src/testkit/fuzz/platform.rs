//! The `platform` target: platform parsing, normalisation and matching.

use crate::platform::{Platform, PlatformPolicy};

/// Platform strings and raw platforms (one per line, `os/arch/variant`), and the whole input as
/// a JSON platform: normalisation is idempotent, parsing gives normalised platforms that print
/// and parse as themselves, matching ignores normalisation and a platform matches itself.
pub fn platform(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut all = Vec::new();
    for line in text.lines().take(8) {
        if let Ok(p) = Platform::parse(line) {
            assert_eq!(p.clone().normalized(), p, "{line:?} parses unnormalised");
            assert_eq!(Platform::parse(&p.to_string()).as_ref(), Ok(&p), "{line:?}");
            all.push(p);
        }
        let mut parts = line.splitn(3, '/');
        let raw = Platform {
            os: parts.next().unwrap_or_default().to_string(),
            architecture: parts.next().unwrap_or_default().to_string(),
            variant: parts.next().unwrap_or_default().to_string(),
            ..Platform::default()
        };
        all.push(raw);
    }
    if let Ok(p) = serde_json::from_slice::<Platform>(data) {
        let again: Platform = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p, "a platform's JSON does not read back");
        all.push(p);
    }
    for p in &all {
        let n = p.clone().normalized();
        assert_eq!(n.clone().normalized(), n, "normalising {p:?} twice");
        assert!(
            PlatformPolicy::Only(vec![n.clone()]).matches(p),
            "{n} and {p:?}"
        );
        assert!(PlatformPolicy::All.matches(p));
        assert_eq!(
            PlatformPolicy::Host.matches(p),
            PlatformPolicy::Only(vec![Platform::host()]).matches(p)
        );
        for q in &all {
            let only = PlatformPolicy::Only(vec![q.clone().normalized()]);
            assert_eq!(only.matches(p), only.matches(&n), "{q:?} matching {p:?}");
        }
    }
}
