//! Following a peer: the daemon lists what another node's registry endpoint serves (`GET
//! /v2/_catalog`, then `/v2/<name>/tags/list` for each repository) and keeps it as a pull list
//! of its own, `<state dir>/follow/<peer>.txt`, which the daemon watches like an images
//! directory — so every image the peer serves is pulled from it and pinned, and one it stops
//! serving is unpinned once it has been gone for the grace period. A peer that does not answer
//! changes nothing: its list stays as it was.

use super::client;
use crate::hosts::{self, Host, Scheme};
use crate::reference::Reference;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first line of a list this module writes: the peer its images are pulled from.
pub const FROM: &str = "# airlift follows: ";

/// Repositories and tags asked for per page.
const PAGE: usize = 1000;

/// One request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read.
const MAX_BODY: usize = 16 << 20;

/// The directory of the lists of followed peers.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("follow")
}

/// A followed peer: its `host:port`, and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `host:port`.
    pub host: String,
    /// `https://`: TLS, with the CA and client certificate the hosts directory names for
    /// `host` (as containerd reads them for its pulls from the peer).
    pub https: bool,
}

/// Why a URL cannot be followed, or a peer not listed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// No scheme, or one other than `http` and `https`.
    #[error("follow {url:?}: not an http:// or https:// URL")]
    Scheme {
        /// As given.
        url: String,
    },
    /// A path, credentials, or no host.
    #[error("follow {url:?}: expected http://host:port or https://host:port")]
    Form {
        /// As given.
        url: String,
    },
    /// The hosts directory's entry for the peer cannot be read.
    #[error(transparent)]
    Hosts(#[from] hosts::HostsError),
    /// A request to the peer failed.
    #[error(transparent)]
    Request(#[from] client::Failed),
    /// An answer could not be read.
    #[error("GET {target}: {cause}")]
    Answer {
        /// The path and query asked.
        target: String,
        /// Why.
        cause: client::RequestError,
    },
    /// The peer answered with a status other than 200.
    #[error("GET {target}: status {status}")]
    Status {
        /// The path and query asked.
        target: String,
        /// The status.
        status: u16,
    },
    /// The peer's answer is not the JSON of a list.
    #[error("GET {target}: {cause}")]
    Json {
        /// The path and query asked.
        target: String,
        /// The parser's complaint.
        cause: serde_json::Error,
    },
    /// No answer in time.
    #[error("no answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

impl Peer {
    /// A peer URL checked: `http://host:port` or `https://host:port` (a trailing `/` allowed).
    pub fn parse(url: &str) -> Result<Peer, FollowError> {
        let e = hosts::Endpoint::parse(url).map_err(|e| match e {
            hosts::EndpointError::Scheme(_) => FollowError::Scheme { url: url.into() },
            _ => FollowError::Form { url: url.into() },
        })?;
        match (e.scheme, e.path.is_empty()) {
            (None, _) => Err(FollowError::Scheme { url: url.into() }),
            (Some(_), false) => Err(FollowError::Form { url: url.into() }),
            (Some(scheme), true) => Ok(Peer {
                host: e.authority(),
                https: scheme == Scheme::Https,
            }),
        }
    }

    /// How a pull reaches the peer: the entry of the hosts directory for it (TLS settings),
    /// or plain HTTP/HTTPS to it.
    pub fn endpoint(&self, hosts_dir: Option<&Path>) -> Result<Host, hosts::HostsError> {
        let scheme = if self.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let mut hosts = hosts::hosts(hosts_dir, &self.host, Some(scheme))?;
        // The last entry is the peer itself (a `server` for it names it with its TLS keys).
        let mut host = hosts.pop().expect("a registry's own entry is always last");
        host.scheme = scheme.as_str().to_string();
        Ok(host)
    }
}

/// The list file of `url`.
pub fn list_path(state_dir: &Path, url: &str) -> Option<PathBuf> {
    let peer = Peer::parse(url).ok()?;
    Some(dir(state_dir).join(format!("{}.txt", peer.host.replace(':', "_"))))
}

/// `GET <peer><target>`: the status and body (an error status is not an error here).
async fn get(
    registry: &client::Registry,
    peer: &Host,
    target: &str,
) -> Result<(u16, Vec<u8>), FollowError> {
    let url = format!("{}://{}{target}", peer.scheme, peer.authority);
    let call = async {
        let response = match registry.get_url(peer, url, "", None, None).await {
            Ok(r) => r,
            Err(f) => match f.status() {
                Some(status) => return Ok((status, Vec::new())),
                None => return Err(FollowError::Request(f)),
            },
        };
        let status = response.status().as_u16();
        let body = client::read_body(response, MAX_BODY, "an answer")
            .await
            .map_err(|cause| FollowError::Answer {
                target: target.to_string(),
                cause,
            })?;
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| FollowError::Timeout)?
}

/// The JSON list `key` of `GET target`, page by page.
async fn paged(
    registry: &client::Registry,
    peer: &Host,
    target: &str,
    key: &str,
) -> Result<Vec<String>, FollowError> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut page = format!("{target}?n={PAGE}");
        if let Some(last) = all.last() {
            page.push_str(&format!("&last={last}"));
        }
        let (status, body) = get(registry, peer, &page).await?;
        if status != 200 {
            return Err(FollowError::Status {
                target: page,
                status,
            });
        }
        let v: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(cause) => {
                return Err(FollowError::Json {
                    target: page,
                    cause,
                })
            }
        };
        let items: Vec<String> = v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let more = items.len() == PAGE;
        all.extend(items);
        if !more {
            return Ok(all);
        }
    }
}

/// Every image (normalised reference) the peer at `peer` serves, signature tags left out.
pub async fn catalog(peer: &Host) -> Result<Vec<String>, FollowError> {
    let registry = client::Registry::default();
    let mut refs = Vec::new();
    for repo in paged(&registry, peer, "/v2/_catalog", "repositories").await? {
        let target = format!("/v2/{repo}/tags/list");
        for tag in paged(&registry, peer, &target, "tags").await? {
            // Signatures (`sha256-<hex>.sig`, referrers tags) are no images of their own: they
            // come with the image they sign when the follower verifies it.
            if crate::archive::understand::attached::tag_subject(&tag).is_some() {
                continue;
            }
            // The endpoint names docker.io repositories as Docker Hub does, others with their
            // registry: normalising maps both back.
            if let Ok(r) = Reference::parse_normalized(&format!("{repo}:{tag}")) {
                refs.push(r.to_string());
            }
        }
    }
    refs.sort();
    refs.dedup();
    Ok(refs)
}

/// The text of the list of `url`: its first line names the peer, then one image per line.
pub fn render(url: &str, refs: &[String]) -> String {
    let mut s = format!("{FROM}{url}\n");
    for r in refs {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// The peer a pull list follows, if it is one this module wrote.
pub fn followed(text: &str) -> Option<Peer> {
    let url = text.lines().next()?.strip_prefix(FROM)?;
    Peer::parse(url.trim()).ok()
}

/// Writes `text` to `path` atomically (its temporary file a dotfile, which the watcher ignores),
/// unless it holds that already.
fn replace(path: &Path, text: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(path.parent().expect("a list has a directory"))?;
    crate::sys::write_atomic(path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// Follows `url` until the task is dropped: every `every`, the peer's catalog; an image it
/// stops serving stays in the list for `grace` after it was last seen.
pub async fn follow(
    state_dir: PathBuf,
    hosts_dir: Option<PathBuf>,
    url: String,
    every: Duration,
    grace: Duration,
) {
    let (Ok(peer), Some(path)) = (Peer::parse(&url), list_path(&state_dir, &url)) else {
        return;
    };
    let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
    // What the list holds already counts as seen now (a restart does not unpin anything).
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines().skip(1) {
            seen.insert(line.to_string(), Instant::now());
        }
    }
    let mut failing = false;
    loop {
        // Read again each time: the TLS keys of the peer may be put in place later.
        let listed = match peer.endpoint(hosts_dir.as_deref()) {
            Ok(endpoint) => catalog(&endpoint).await,
            Err(e) => Err(e.into()),
        };
        match listed {
            Ok(refs) => {
                if failing {
                    tracing::info!(peer = %url, "the followed peer answers again");
                    failing = false;
                }
                let now = Instant::now();
                for r in refs {
                    seen.insert(r, now);
                }
                seen.retain(|_, at| now.duration_since(*at) <= grace);
                let refs: Vec<String> = seen.keys().cloned().collect();
                match replace(&path, &render(&url, &refs)) {
                    Ok(true) => {
                        tracing::info!(peer = %url, images = refs.len(), "the followed peer's images changed")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(peer = %url, list = %path.display(), error = %e, "cannot write the followed peer's list")
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(peer = %url, error = %e, "cannot list the followed peer's images; its images keep their pins");
                    failing = true;
                }
                // Unreachable time does not count towards the grace period.
                let now = Instant::now();
                for at in seen.values_mut() {
                    *at = (*at).max(now - grace.min(every));
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_their_lists() {
        let p = Peer::parse("http://10.0.0.5:5050/").unwrap();
        assert_eq!((p.host.as_str(), p.https), ("10.0.0.5:5050", false));
        let p = Peer::parse("https://10.0.0.5:5050").unwrap();
        assert_eq!((p.host.as_str(), p.https), ("10.0.0.5:5050", true));
        assert!(Peer::parse("ftp://h:1")
            .unwrap_err()
            .to_string()
            .contains("https://"));
        assert!(Peer::parse("http://h:1/v2").is_err());
        // TLS keys for the peer from the hosts directory, as containerd finds them.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("h_1_")).unwrap();
        std::fs::write(dir.path().join("h_1_/ca.crt"), "x").unwrap();
        let e = Peer::parse("https://h:1")
            .unwrap()
            .endpoint(Some(dir.path()))
            .unwrap();
        assert_eq!(e.url(), "https://h:1/v2");
        assert_eq!(e.ca, [dir.path().join("h_1_/ca.crt")]);
        let e = Peer::parse("http://h:1").unwrap().endpoint(None).unwrap();
        assert_eq!(e.url(), "http://h:1/v2");
        let text = render("http://h:1", &["docker.io/library/a:1".into()]);
        assert_eq!(
            text,
            "# airlift follows: http://h:1\ndocker.io/library/a:1\n"
        );
        assert_eq!(followed(&text).map(|p| p.host).as_deref(), Some("h:1"));
        assert_eq!(followed("docker.io/library/a:1\n"), None);
        assert_eq!(
            list_path(Path::new("/s"), "http://h:1").unwrap(),
            Path::new("/s/follow/h_1.txt")
        );
    }
}
