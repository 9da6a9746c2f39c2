//! Which requirements apply to an image: the most specific `transports.docker` scope its name
//! matches, exactly as containers/image looks it up (`requirementsForImageRef`,
//! `docker/policyconfiguration`).

use super::{Policy, Requirement};
use crate::reference::Reference;

impl Policy {
    /// The scope that applies to `name`, and its requirements. The scope is named for messages
    /// as it stands in the policy: `transports.docker["docker.io/library"]`, or `default`.
    ///
    /// The first of these that the policy has wins, and less specific scopes are not looked
    /// at: the full name (`docker.io/library/busybox:1.36`, or `…@sha256:…`); the repository
    /// and each parent namespace, longest first, down to the registry host with its port
    /// (`docker.io/library/busybox`, `docker.io/library`, `docker.io`); the host's parent
    /// domains as wildcards, port dropped (`*.example.com`, `*.com`); the docker transport's
    /// `""`; the global `default`.
    pub fn scope_for(&self, name: &Reference) -> (String, &[Requirement]) {
        for candidate in scopes(name) {
            if let Some(reqs) = self.docker.get(&candidate) {
                return (format!("transports.docker[{candidate:?}]"), reqs);
            }
        }
        ("default".to_string(), &self.default)
    }
}

/// The scopes a name matches, most specific first (`PolicyConfigurationIdentity`, then
/// `DockerReferenceNamespaces`, then `""`).
fn scopes(name: &Reference) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let mut n = name.repository();
    loop {
        out.push(n.clone());
        match n.rfind('/') {
            Some(i) => n.truncate(i),
            None => break,
        }
    }
    // `n` is now the host; wildcards drop its port.
    if let Some(colon) = n.find(':') {
        n.truncate(colon);
    }
    while let Some(dot) = n.find('.') {
        n = n[dot + 1..].to_string();
        out.push(format!("*.{n}"));
    }
    out.push(String::new());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_from_most_specific() {
        let r = Reference::parse_normalized("a.b.example.com:5000/ns/sub/app:1").unwrap();
        assert_eq!(
            scopes(&r),
            [
                "a.b.example.com:5000/ns/sub/app:1",
                "a.b.example.com:5000/ns/sub/app",
                "a.b.example.com:5000/ns/sub",
                "a.b.example.com:5000/ns",
                "a.b.example.com:5000",
                "*.b.example.com",
                "*.example.com",
                "*.com",
                "",
            ]
        );
        let hub = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(
            scopes(&hub),
            [
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "docker.io/library",
                "docker.io",
                "*.io",
                "",
            ]
        );
        let d = format!("localhost/app@{}", crate::digest::Digest::of(b"x"));
        let local = Reference::parse_normalized(&d).unwrap();
        assert_eq!(
            scopes(&local),
            [d.as_str(), "localhost/app", "localhost", ""]
        );
    }
}
