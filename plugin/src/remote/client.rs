//! The HTTP side of a client pull: one `reqwest` client per host's TLS settings, GETs of
//! `/v2/<repository>/manifests|blobs/<object>` with `?ns=<registry>` on mirrors, and the
//! registry token dance (a `401` with `WWW-Authenticate: Bearer realm=…` answered by fetching
//! an anonymous pull token, cached per host and repository).

use crate::hosts::Host;
use std::collections::HashMap;
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

/// A failed request: what was asked and why, and whether the host does not have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The URL asked.
    pub url: String,
    /// The status or transport error.
    pub why: String,
    /// The status the host answered, if it answered.
    pub status: Option<u16>,
}

impl Failed {
    /// The host answered that it does not have it.
    pub fn not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.url, self.why)
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
    fn client(&self, host: &Host) -> Result<reqwest::Client, String> {
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
        for ca in &host.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = host.client.first() {
            let mut pem =
                std::fs::read(cert).map_err(|e| format!("client {}: {e}", cert.display()))?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key).map_err(|e| format!("client key {}: {e}", key.display()))?,
                );
            }
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client {}: {e}", cert.display()))?;
            b = b.identity(id);
        }
        let c = b.build().map_err(|e| e.to_string())?;
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
        let failed = |why: String, status: Option<u16>| Failed {
            url: url.clone(),
            why,
            status,
        };
        let client = self.client(host).map_err(|e| failed(e, None))?;
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
            .map_err(|e| failed(transport(&e), None))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let header = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(params) = challenge(&header) else {
                return Err(failed(
                    format!(
                        "401 Unauthorized{}: the registry wants credentials, which airlift does not send (hosts.toml's `header` can carry an Authorization)",
                        if header.is_empty() { String::new() } else { format!(" ({header})") }
                    ),
                    Some(401),
                ));
            };
            if had_token {
                self.tokens.lock().unwrap().remove(&token_key);
            }
            let token = self
                .token(&client, host, &params, repo)
                .await
                .map_err(|e| failed(e, None))?;
            self.tokens
                .lock()
                .unwrap()
                .insert(token_key.clone(), token.clone());
            response = send(Some(token))
                .await
                .map_err(|e| failed(transport(&e), None))?;
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string));
        let why = match code {
            Some(c) => format!("{status} ({c})"),
            None => status.to_string(),
        };
        Err(failed(why, Some(status.as_u16())))
    }

    /// An anonymous pull token from the challenge's realm.
    async fn token(
        &self,
        client: &reqwest::Client,
        host: &Host,
        params: &HashMap<String, String>,
        repo: &str,
    ) -> Result<String, String> {
        let realm = params
            .get("realm")
            .ok_or("401 Unauthorized with a Bearer challenge naming no realm")?;
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
            .map_err(|e| format!("token from {realm}: {}", transport(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("token from {realm}: {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("token from {realm}: {}", transport(&e)))?;
        if body.len() > MAX_TOKEN {
            return Err(format!("token from {realm}: an answer over 1 MiB"));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("token from {realm}: not JSON: {e}"))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("token from {realm}: no token in the answer"))
    }
}

/// A response's body, at most `limit` bytes (more is an error naming `what`).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(format!("{what} over {} MiB", limit >> 20));
        }
    }
    Ok(body)
}

/// A transport error with its causes (reqwest's top-level message alone says little).
pub fn transport(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
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
