//! The one reader of endpoint URLs (`http(s)://host[:port][/path]`, or `host[:port][/path]`
//! without a scheme), built on the `url` crate: the `[host."…"]` keys and `server` of
//! hosts.toml, k3s's mirror endpoints, registries named in registries.yaml, peers and followed
//! peers all go through it.
//!
//! Two readings of one parse: [`Endpoint::read`] takes a URL as containerd takes a hosts.toml key
//! (Go's `url.Parse`: credentials, a query and a fragment are there but unused), and
//! [`Endpoint::parse`] as airlift takes an endpoint it writes or asks (those refused, and so are
//! `..` in the path and a host that is not a name or an address). Either way the path is
//! cleaned as Go's `path.Clean` cleans it, and the port is kept as written, a scheme's default
//! port included (containerd keeps it; the `url` crate would leave it out).

use std::fmt;

/// An endpoint's scheme: containerd speaks nothing else to a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn other(self) -> Scheme {
        match self {
            Scheme::Http => Scheme::Https,
            Scheme::Https => Scheme::Http,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not an endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Nothing (or only blanks).
    #[error("empty")]
    Empty,
    /// A scheme other than `http` or `https`.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// `scheme://` and no host.
    #[error("no host")]
    NoHost,
    /// The host is neither a name nor an IPv4 or bracketed IPv6 address.
    #[error("{0:?} is not a host name or address")]
    Host(String),
    /// The port is not a number from 1 to 65535 (`host:port` as written).
    #[error("{0:?}: port {port:?} is not a number from 1 to 65535", port = port_text(.0))]
    Port(String),
    /// `user:password@` (hosts.toml cannot carry credentials).
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// `?…` or `#…`.
    #[error("a query or fragment is not allowed")]
    QueryOrFragment,
    /// A `..` segment in the path.
    #[error("'..' in the path")]
    DotDot,
    /// Something else the `url` crate refuses.
    #[error("{0}")]
    Url(url::ParseError),
}

/// The port of `host:port` as written.
fn port_text(authority: &str) -> &str {
    authority.rsplit_once(':').map_or("", |(_, p)| p)
}

/// An endpoint URL, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme, when written.
    pub scheme: Option<Scheme>,
    /// The host: a name (lowercase), or an IPv4 or IPv6 address.
    pub host: url::Host<String>,
    /// The port, when written.
    pub port: Option<u16>,
    /// The path cleaned (no empty or `.` segments, `..` resolved, no trailing `/`), `""` for
    /// none.
    pub path: String,
}

/// What one parse saw, before either reading decides what to make of it.
struct Parsed {
    endpoint: Endpoint,
    url: url::Url,
    /// The text after `scheme://` (or all of it), for the checks and messages the `url` crate
    /// cannot give.
    rest: String,
}

/// The authority of `rest` as written: what comes before the path, query or fragment.
fn written_authority(rest: &str) -> &str {
    rest.split(['/', '\\', '?', '#']).next().unwrap_or("")
}

fn parse(raw: &str) -> Result<Parsed, EndpointError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(EndpointError::Empty);
    }
    // Whether a scheme is written is the one thing decided on the text: `host:port` would
    // parse as the scheme `host`.
    let written = raw.find("://").map(|i| &raw[..i]);
    let scheme = match written {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("http") => Some(Scheme::Http),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(Scheme::Https),
        Some(s) => return Err(EndpointError::Scheme(s.to_ascii_lowercase())),
    };
    let rest = written.map_or(raw, |s| &raw[s.len() + 3..]);
    let authority = written_authority(rest);
    if authority.is_empty() {
        return Err(EndpointError::NoHost);
    }
    let parsing = scheme.unwrap_or(Scheme::Https);
    let url = url::Url::parse(&format!("{parsing}://{rest}")).map_err(|e| match e {
        url::ParseError::EmptyHost => EndpointError::NoHost,
        url::ParseError::InvalidPort => EndpointError::Port(authority.to_string()),
        url::ParseError::IdnaError
        | url::ParseError::InvalidDomainCharacter
        | url::ParseError::InvalidIpv4Address
        | url::ParseError::InvalidIpv6Address => EndpointError::Host(authority.to_string()),
        e => EndpointError::Url(e),
    })?;
    let host = url.host().ok_or(EndpointError::NoHost)?.to_owned();
    // A scheme's default port is left out by the `url` crate: the other scheme keeps it.
    let port = url.port().or_else(|| {
        url::Url::parse(&format!("{}://{rest}", parsing.other()))
            .ok()?
            .port()
    });
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let path = if segments.is_empty() {
        String::new()
    } else {
        format!("/{}", segments.join("/"))
    };
    Ok(Parsed {
        endpoint: Endpoint {
            scheme,
            host,
            port,
            path,
        },
        rest: rest.to_string(),
        url,
    })
}

impl Endpoint {
    /// `raw` as containerd reads a hosts.toml key: credentials, a query and a fragment are
    /// left out of what is used.
    pub fn read(raw: &str) -> Result<Endpoint, EndpointError> {
        parse(raw).map(|p| p.endpoint)
    }

    /// `raw` as an endpoint airlift writes or asks: no credentials, query, fragment or `..`,
    /// a host name of letters, digits, `-`, `.` and `_` (or an address), a port from 1.
    pub fn parse(raw: &str) -> Result<Endpoint, EndpointError> {
        let Parsed {
            endpoint,
            url,
            rest,
        } = parse(raw)?;
        let authority = written_authority(&rest);
        if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
            return Err(EndpointError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(EndpointError::QueryOrFragment);
        }
        let path = rest[authority.len()..]
            .split(['?', '#'])
            .next()
            .unwrap_or("");
        if path.split(['/', '\\']).any(|s| s == "..") {
            return Err(EndpointError::DotDot);
        }
        if let url::Host::Domain(name) = &endpoint.host {
            let ok = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !ok {
                return Err(EndpointError::Host(authority.to_string()));
            }
        }
        if endpoint.port == Some(0) {
            return Err(EndpointError::Port(authority.to_string()));
        }
        Ok(endpoint)
    }

    /// `host[:port]` alone (a registry as images and registries.yaml name it), checked as
    /// [`Endpoint::parse`] checks.
    pub fn authority_only(raw: &str) -> Result<Endpoint, EndpointError> {
        let e = Endpoint::parse(raw)?;
        if e.scheme.is_some() {
            return Err(EndpointError::Scheme(
                e.scheme.map_or("", Scheme::as_str).to_string(),
            ));
        }
        if !e.path.is_empty() {
            return Err(EndpointError::Host(raw.to_string()));
        }
        Ok(e)
    }

    /// `host[:port]`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Whether the host is this machine (`localhost`, a loopback address).
    pub fn is_localhost(&self) -> bool {
        match &self.host {
            url::Host::Domain(d) => d == "localhost",
            url::Host::Ipv4(a) => a.is_loopback(),
            url::Host::Ipv6(a) => a.is_loopback(),
        }
    }

    /// `scheme://host[:port][/path]`, with `default` when no scheme was written.
    pub fn url(&self, default: Scheme) -> String {
        format!(
            "{}://{}{}",
            self.scheme.unwrap_or(default),
            self.authority(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> (Option<Scheme>, String, String) {
        let e = Endpoint::read(raw).unwrap();
        (e.scheme, e.authority(), e.path)
    }

    #[test]
    fn urls_read_as_containerd_reads_them() {
        use Scheme::*;
        assert_eq!(
            read("https://mirror.example.com"),
            (Some(Https), "mirror.example.com".into(), "".into())
        );
        assert_eq!(
            read("registry.local/api/"),
            (None, "registry.local".into(), "/api".into())
        );
        assert_eq!(
            read("localhost:5000"),
            (None, "localhost:5000".into(), "".into())
        );
        assert_eq!(
            read("10.0.0.5:5050"),
            (None, "10.0.0.5:5050".into(), "".into())
        );
        // A scheme's default port stays as written; the path is cleaned as path.Clean does.
        assert_eq!(
            read("https://x:443//a/./b/../c/"),
            (Some(Https), "x:443".into(), "/a/c".into())
        );
        assert_eq!(read("http://x:80"), (Some(Http), "x:80".into(), "".into()));
        assert_eq!(
            read("HTTP://[::1]:5000/v2"),
            (Some(Http), "[::1]:5000".into(), "/v2".into())
        );
        // Credentials and queries are not used, as containerd does not use them.
        assert_eq!(
            read("https://u:p@x/p?q#f"),
            (Some(Https), "x".into(), "/p".into())
        );
        assert_eq!(
            Endpoint::read("ftp://x"),
            Err(EndpointError::Scheme("ftp".into()))
        );
        assert_eq!(Endpoint::read("https://"), Err(EndpointError::NoHost));
        assert!(Endpoint::read("localhost:5000").unwrap().is_localhost());
        assert!(Endpoint::read("127.0.0.2").unwrap().is_localhost());
        assert!(Endpoint::read("[::1]").unwrap().is_localhost());
        assert!(!Endpoint::read("10.0.0.5").unwrap().is_localhost());
    }

    #[test]
    fn endpoints_airlift_takes_are_checked() {
        for (raw, want) in [
            ("", "empty"),
            ("gopher://x", "scheme \"gopher\" is not http or https"),
            ("https://", "no host"),
            ("https://a b", "\"a b\" is not a host name or address"),
            ("https://a*b", "\"a*b\" is not a host name or address"),
            ("https://[::g]", "not a host name or address"),
            ("https://u:p@x", "credentials in the URL"),
            ("https://x?a=b", "a query or fragment"),
            ("https://x/a/../b", "'..' in the path"),
            (
                "https://x:99999",
                "\"x:99999\": port \"99999\" is not a number",
            ),
            ("x:0", "port \"0\""),
        ] {
            let e = Endpoint::parse(raw).unwrap_err().to_string();
            assert!(e.contains(want), "{raw:?}: {e}");
        }
        let e = Endpoint::parse("https://[::1]:5000/a/").unwrap();
        assert_eq!(
            (e.authority(), e.path.as_str()),
            ("[::1]:5000".into(), "/a")
        );
        assert_eq!(e.url(Scheme::Http), "https://[::1]:5000/a");
        assert_eq!(
            Endpoint::parse("m.example.com").unwrap().url(Scheme::Https),
            "https://m.example.com"
        );
        assert!(Endpoint::authority_only("reg.example.com:5000").is_ok());
        assert!(Endpoint::authority_only("https://docker.io").is_err());
        assert!(Endpoint::authority_only("docker.io/x").is_err());
    }
}
