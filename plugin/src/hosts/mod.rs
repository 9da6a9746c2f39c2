//! containerd's registry hosts directory (`config_path`, e.g. `/etc/containerd/certs.d`), in one
//! home: the rules containerd applies to it (core/remotes/docker/config/hosts.go, 1.7 and 2.x),
//! the reading of it as containerd resolves a registry's hosts ([`read`], for airlift's own
//! pulls and followed peers), the text of the files airlift writes into it ([`mod@write`], for
//! [`crate::mirrors`]), and the one reader of the endpoint URLs both sides name ([`endpoint`]).
//!
//! The rules, as containerd has them:
//!
//! - the directory of `host:port` is `host_port_`, else `host:port`, else `_default`: the first
//!   that exists ([`directory`]);
//! - its `hosts.toml` lists `[host."URL"]` entries, tried in file order, and the top-level entry
//!   last; without a `server` (or with an empty one) that last entry is the registry itself
//!   ([`upstream`]: `https://registry-1.docker.io` for docker.io, plain HTTP for the local
//!   machine on a port other than 443, [`plain_http_by_default`]); with a `server` it replaces
//!   the registry;
//! - a URL without a path gets `/v2`, one with a path gets `/v2` appended unless it ends in `/v2`
//!   or `override_path` is set; a URL without a scheme is HTTPS.

pub mod endpoint;
pub mod read;
pub mod write;

pub use endpoint::{Endpoint, EndpointError, Scheme};
pub use read::{hosts, Host, HostsError};

/// Whether containerd talks plain HTTP to `host[:port]` when nothing says otherwise: the local
/// machine on a port other than 443.
pub fn plain_http_by_default(host: &str) -> bool {
    Endpoint::read(host).is_ok_and(|e| e.is_localhost() && e.port.is_some_and(|p| p != 443))
}

/// containerd's directory name for a registry's own configuration: `host:port` is
/// `host_port_`, a registry without a port its own name.
pub fn directory(registry: &str) -> String {
    match registry.rfind(':') {
        Some(i) if i > 0 => format!("{}_{}_", &registry[..i], &registry[i + 1..]),
        _ => registry.to_string(),
    }
}

/// How containerd reaches a registry with nothing configured: its scheme ([`Scheme::Https`], or
/// [`Scheme::Http`] by [`plain_http_by_default`]) and authority (`registry-1.docker.io` for
/// `docker.io`).
pub fn upstream(registry: &str) -> (Scheme, &str) {
    let authority = match registry {
        "docker.io" => "registry-1.docker.io",
        r => r,
    };
    let scheme = if plain_http_by_default(registry) {
        Scheme::Http
    } else {
        Scheme::Https
    };
    (scheme, authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_containerd_applies() {
        assert!(plain_http_by_default("localhost:5000"));
        assert!(plain_http_by_default("127.0.0.1:5000"));
        assert!(plain_http_by_default("[::1]:80"));
        assert!(!plain_http_by_default("localhost"), "no port: HTTPS");
        assert!(!plain_http_by_default("localhost:443"));
        assert!(!plain_http_by_default("10.0.0.5:5050"));
        assert_eq!(directory("reg.example.com:5000"), "reg.example.com_5000_");
        assert_eq!(directory("quay.io"), "quay.io");
        assert_eq!(
            upstream("docker.io"),
            (Scheme::Https, "registry-1.docker.io")
        );
        assert_eq!(upstream("localhost:5000"), (Scheme::Http, "localhost:5000"));
    }
}
