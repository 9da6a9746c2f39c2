//! The `reference` target: image references against containerd's own grammar.

use crate::digest::Digest;
use crate::reference::{is_full_reference, valid_tag, Reference};
use regex::Regex;
use std::sync::OnceLock;

/// containerd's reference grammar (`distribution/reference`'s regular expressions).
struct Grammar {
    reference: Regex,
    identifier: Regex,
    tag: Regex,
}

fn grammar() -> &'static Grammar {
    static GRAMMAR: OnceLock<Grammar> = OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let component = format!("{alnum}(?:{separator}{alnum})*");
        let label = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let host = format!(r"(?:{label}(?:\.{label})*|\[(?:[a-fA-F0-9:]+)\])");
        let domain = format!("{host}(?::[0-9]+)?");
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}";
        let name = format!("(?:({domain})/)?{component}(?:/{component})*");
        Grammar {
            reference: Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$"))
                .expect("the reference grammar"),
            identifier: Regex::new("^[a-f0-9]{64}$").expect("the identifier grammar"),
            tag: Regex::new(&format!("^{tag}$")).expect("the tag grammar"),
        }
    })
}

/// containerd's `reference/docker.ParseDockerRef`, transcribed, printed: `None` where it fails,
/// and where airlift departs from it on purpose: digests are sha256 only (the one algorithm of
/// airlift's digests), and a name always has a registry host (see below).
fn containerd_parse(s: &str) -> Option<String> {
    let g = grammar();
    if g.identifier.is_match(s) {
        return None; // "cannot specify 64-byte hexadecimal strings"
    }
    // splitDockerDomain
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), s.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_lowercase() != remote {
        return None;
    }
    let full = format!("{domain}/{remainder}");
    let caps = g.reference.captures(&full)?;
    // A first component that looks like a registry host but is not a valid one (`a_b.c/d`) is
    // read by containerd's grammar as a path component, giving a name without a domain: airlift
    // refuses such names instead ("the registry host is not valid").
    let _domain = caps.get(2)?;
    let name = caps.get(1)?.as_str();
    if name.len() > 255 {
        return None;
    }
    let tag = caps.get(3).map(|m| m.as_str());
    let digest = caps.get(4).map(|m| m.as_str());
    if let Some(d) = digest {
        d.parse::<Digest>().ok()?;
    }
    Some(match (tag, digest) {
        (_, Some(d)) => format!("{name}@{d}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    })
}

/// A string as an image reference: airlift's parse agrees with containerd's, and a parsed
/// reference prints as itself.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_full_reference(s);
    assert_eq!(valid_tag(s), grammar().tag.is_match(s), "tag {s:?}");
    let parsed = Reference::parse_normalized(s);
    assert_eq!(
        parsed.as_ref().ok().map(|r| r.to_string()),
        containerd_parse(s),
        "{s:?} parses unlike containerd's ParseDockerRef ({parsed:?})"
    );
    let r = match parsed {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let printed = r.to_string();
    assert_eq!(
        Reference::parse_normalized(&printed).as_ref(),
        Ok(&r),
        "{printed:?}"
    );
    assert!(printed.starts_with(&r.repository()));
    assert_eq!(r.repository(), format!("{}/{}", r.domain(), r.path()));
    assert!(r.repository().len() <= 255);
    match r.tag() {
        Some(t) => assert!(valid_tag(t) && r.object() == t, "{printed:?}"),
        None => assert!(r.object().starts_with("@sha256:"), "{printed:?}"),
    }
    let pinned = r.with_digest(&Digest::of(data));
    assert_eq!(
        Reference::parse_normalized(&pinned.to_string()).as_ref(),
        Ok(&pinned)
    );
}
