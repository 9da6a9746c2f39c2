//! The HTTP side of a client pull: one `reqwest` client per host's TLS settings, GETs of
//! `/v2/<repository>/manifests|blobs/<object>` with `?ns=<registry>` on mirrors, and the
//! registry token dance (a `401` with `WWW-Authenticate: Bearer realm=…` answered by fetching
//! an anonymous pull token, cached per host and repository).
//!
//! Its errors are its own: [`RequestError`] (what went wrong with one request), [`Failed`] (one
//! host's failure, with its URL) and [`RegistryError`] (a client pull that failed on the
//! registry's side), with the class containerd would give each (not found, unavailable, …), so
//! that a caller tells a registry that does not have an image from one that cannot be reached.

use crate::digest::{Digest, InvalidDigest};
use crate::error::Class;
use crate::hosts::{Host, HostsError};
use crate::reference::InvalidReference;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A read that stalls this long fails (and the next host is tried).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest token answer read.
const MAX_TOKEN: usize = 1 << 20;

/// The clients and tokens of one pull.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, reqwest::Client>>,
    tokens: Mutex<HashMap<String, String>>,
}

/// What went wrong with one request to one host.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The host answered with an error status (and the registry's error code, when it gave one).
    #[error("{status}{}", code.as_ref().map_or(String::new(), |c| format!(" ({c})")))]
    Status {
        /// The status.
        status: reqwest::StatusCode,
        /// The first `errors[].code` of the body.
        code: Option<String>,
    },
    /// A `401` without a token to fetch: the registry wants credentials.
    #[error(
        "401 Unauthorized{}: the registry wants credentials, which airlift does not send (hosts.toml's `header` can carry an Authorization)",
        if challenge.is_empty() { String::new() } else { format!(" ({challenge})") }
    )]
    Credentials {
        /// The `WWW-Authenticate` header, if any.
        challenge: String,
    },
    /// A Bearer challenge naming no realm to ask for a token.
    #[error("401 Unauthorized with a Bearer challenge naming no realm")]
    NoRealm,
    /// The token could not be had from the challenge's realm.
    #[error("token from {realm}: {cause}")]
    Token {
        /// The realm.
        realm: String,
        /// Why.
        cause: Box<RequestError>,
    },
    /// The realm's answer has no token.
    #[error("no token in the answer")]
    NoToken,
    /// An answer that is not JSON.
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    /// No connection, or it broke (each cause said once).
    #[error("{}", crate::error::chain(.0))]
    Transport(reqwest::Error),
    /// An answer larger than what is read.
    #[error("{what} over {} MiB", limit >> 20)]
    TooLarge {
        /// What it is (`a manifest`).
        what: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A TLS file the host's entry names could not be read or used.
    #[error("{what} {}: {cause}", path.display())]
    TlsFile {
        /// `CA`, `client`, `client key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(reqwest::Error),
    /// A manifest asked for by digest whose bytes hash to another.
    #[error("served a manifest whose digest is {actual}, not {wanted}")]
    WrongDigest {
        /// What the bytes hash to.
        actual: Digest,
        /// What was asked for.
        wanted: Digest,
    },
    /// A blob longer than its descriptor says.
    #[error("more than the {size} bytes its descriptor says")]
    TooLong {
        /// The descriptor's size.
        size: u64,
    },
    /// A blob shorter than its descriptor says.
    #[error("{sent} bytes where its descriptor says {size}")]
    Short {
        /// What came.
        sent: u64,
        /// The descriptor's size.
        size: u64,
    },
    /// The content store refused what was fetched (a digest that does not match).
    #[error(transparent)]
    Store(crate::containerd::ContainerdError),
}

/// A failed request: what was asked and why.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {cause}")]
pub struct Failed {
    /// The URL asked.
    pub url: String,
    /// Why it failed.
    pub cause: RequestError,
}

impl Failed {
    /// The status the host answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match &self.cause {
            RequestError::Status { status, .. } => Some(status.as_u16()),
            RequestError::Credentials { .. } => Some(401),
            _ => None,
        }
    }

    /// The host answered that it does not have it.
    pub fn not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// A client pull that failed on the registry's side, or on what the registry served.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference (or its name on a followed peer) is not one.
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    /// The reference's digest is not one.
    #[error(transparent)]
    Digest(#[from] InvalidDigest),
    /// The hosts directory could not be read for the registry.
    #[error("registry hosts: {0}")]
    Hosts(#[from] HostsError),
    /// No host of the hosts directory may serve it (their capabilities).
    #[error("{what}: no host in the hosts directory may serve it (capabilities)")]
    NoHost {
        /// What was wanted.
        what: String,
    },
    /// Every host that may serve it failed.
    #[error("{what}: {}", failures.iter().map(Failed::to_string).collect::<Vec<_>>().join("; "))]
    Failed {
        /// What was wanted.
        what: String,
        /// Each host's failure, in the order tried.
        failures: Vec<Failed>,
    },
    /// What the reference names is not a manifest or an index.
    #[error("{url}: not an image manifest or index (media type {media_type:?})")]
    NotManifest {
        /// Where it came from.
        url: String,
        /// Its media type.
        media_type: String,
    },
    /// A manifest or index that is not valid JSON of its kind.
    #[error("{digest} ({media_type}): {cause}")]
    Json {
        /// Its digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// The parser's complaint.
        cause: serde_json::Error,
    },
    /// An index with no manifest of the platforms pulled.
    #[error("{image}: its index {digest} has no manifest for the platforms pulled")]
    NoPlatform {
        /// The image (its source).
        image: String,
        /// The index.
        digest: Digest,
    },
    /// A fetch running beside the others failed.
    #[error("{0}")]
    Task(tokio::task::JoinError),
}

impl RegistryError {
    /// The class containerd would give it: not found when no host has it, unavailable when a
    /// host could not be reached or failed, invalid for what cannot be pulled at all.
    pub fn class(&self) -> Class {
        match self {
            RegistryError::Reference(_)
            | RegistryError::Digest(_)
            | RegistryError::Hosts(_)
            | RegistryError::NotManifest { .. }
            | RegistryError::Json { .. } => Class::InvalidArgument,
            RegistryError::NoHost { .. } | RegistryError::NoPlatform { .. } => Class::NotFound,
            RegistryError::Failed { failures, .. } if failures.iter().all(Failed::not_found) => {
                Class::NotFound
            }
            RegistryError::Failed { .. } => Class::Unavailable,
            RegistryError::Task(_) => Class::Internal,
        }
    }
}

/// The parameters of a `Bearer` challenge.
fn challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_ascii_lowercase();
        s = s[eq + 1..].trim_start();
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let end = q.find('"')?;
            value = q[..end].to_string();
            s = &q[end + 1..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        out.insert(key, value);
        s = s.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

impl Registry {
    /// The client for `host`'s TLS settings.
    fn client(&self, host: &Host) -> Result<reqwest::Client, RequestError> {
        let key = format!(
            "{:?}|{:?}|{}|{:?}",
            host.ca, host.client, host.skip_verify, host.dial_timeout
        );
        if let Some(c) = self.clients.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(host.dial_timeout)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("airlift/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(host.skip_verify);
        let tls = |what: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |cause: Box<dyn std::error::Error + Send + Sync>| RequestError::TlsFile {
                what,
                path,
                cause,
            }
        };
        for ca in &host.ca {
            let pem = std::fs::read(ca).map_err(|e| tls("CA", ca)(e.into()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls("CA", ca)(e.into()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = host.client.first() {
            let mut pem = std::fs::read(cert).map_err(|e| tls("client", cert)(e.into()))?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| tls("client key", key)(e.into()))?);
            }
            let id =
                reqwest::Identity::from_pem(&pem).map_err(|e| tls("client", cert)(e.into()))?;
            b = b.identity(id);
        }
        let c = b.build().map_err(RequestError::Client)?;
        self.clients.lock().unwrap().insert(key, c.clone());
        Ok(c)
    }

    /// `GET <host>/<repository>/<what>` (`manifests/<tag>`, `blobs/<digest>`), with `ns` when
    /// the host is not the image's registry; a `401` is answered with a token once.
    pub async fn get(
        &self,
        host: &Host,
        repository: &str,
        what: &str,
        accept: Option<&str>,
        ns: Option<&str>,
    ) -> Result<reqwest::Response, Failed> {
        let repo = host.repository(repository);
        let url = format!("{}/{repo}/{what}", host.url());
        self.get_url(host, url, &repo, accept, ns).await
    }

    /// `GET url` on `host` (its TLS and headers, `?ns=` when given), a `401` answered with a
    /// token for `repo` once.
    pub async fn get_url(
        &self,
        host: &Host,
        url: String,
        repo: &str,
        accept: Option<&str>,
        ns: Option<&str>,
    ) -> Result<reqwest::Response, Failed> {
        let failed = |cause: RequestError| Failed {
            url: url.clone(),
            cause,
        };
        let client = self.client(host).map_err(failed)?;
        let token_key = format!("{}/{repo}", host.authority);
        let send = |token: Option<String>| {
            let mut r = client.get(&url);
            if let Some(ns) = ns {
                // Encoded as containerd encodes it (`:` as `%3A`).
                r = r.query(&[("ns", ns)]);
            }
            for (k, v) in &host.headers {
                r = r.header(k, v);
            }
            if let Some(a) = accept {
                r = r.header(reqwest::header::ACCEPT, a);
            }
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let cached = self.tokens.lock().unwrap().get(&token_key).cloned();
        let had_token = cached.is_some();
        let mut response = send(cached)
            .await
            .map_err(|e| failed(RequestError::Transport(e)))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let header = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(params) = challenge(&header) else {
                return Err(failed(RequestError::Credentials { challenge: header }));
            };
            if had_token {
                self.tokens.lock().unwrap().remove(&token_key);
            }
            let token = self
                .token(&client, host, &params, repo)
                .await
                .map_err(failed)?;
            self.tokens
                .lock()
                .unwrap()
                .insert(token_key.clone(), token.clone());
            response = send(Some(token))
                .await
                .map_err(|e| failed(RequestError::Transport(e)))?;
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string));
        Err(failed(RequestError::Status { status, code }))
    }

    /// An anonymous pull token from the challenge's realm.
    async fn token(
        &self,
        client: &reqwest::Client,
        host: &Host,
        params: &HashMap<String, String>,
        repo: &str,
    ) -> Result<String, RequestError> {
        let realm = params.get("realm").ok_or(RequestError::NoRealm)?;
        let failed = |cause: RequestError| RequestError::Token {
            realm: realm.clone(),
            cause: Box::new(cause),
        };
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{repo}:pull"));
        let mut query = vec![("scope", scope)];
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut r = client.get(realm).query(&query);
        for (k, v) in &host.headers {
            r = r.header(k, v);
        }
        let response = r
            .send()
            .await
            .map_err(|e| failed(RequestError::Transport(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(RequestError::Status { status, code: None }));
        }
        let body = read_body(response, MAX_TOKEN, "an answer")
            .await
            .map_err(failed)?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| failed(RequestError::Json(e)))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| failed(RequestError::NoToken))
    }
}

/// A response's body, at most `limit` bytes (more is an error naming `what`).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, RequestError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(RequestError::Transport)? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(RequestError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let p = challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let p = challenge("Bearer realm=http://h/t, service=s").unwrap();
        assert_eq!(p["realm"], "http://h/t");
        assert_eq!(p["service"], "s");
        assert!(challenge(r#"Basic realm="x""#).is_none());
    }
}
