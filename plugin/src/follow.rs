//! Following a peer: the daemon lists what another node's registry endpoint serves (`GET
//! /v2/_catalog`, then `/v2/<name>/tags/list` for each repository) and keeps it as a pull list
//! of its own, `<state dir>/follow/<peer>.txt`, which the daemon watches like an images
//! directory — so every image the peer serves is pulled from it and pinned, and one it stops
//! serving is unpinned once it has been gone for the grace period. A peer that does not answer
//! changes nothing: its list stays as it was.

use crate::reference::Reference;
use http_body_util::BodyExt;
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

/// A peer URL checked: `http://host:port` (a trailing `/` allowed); its `host:port`.
pub fn peer_host(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("follow {url:?}: not an http:// URL (HTTPS peers are not supported yet)")
    })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("follow {url:?}: expected http://host:port"));
    }
    Ok(host.to_string())
}

/// The list file of `url`.
pub fn list_path(state_dir: &Path, url: &str) -> Option<PathBuf> {
    let host = peer_host(url).ok()?;
    Some(dir(state_dir).join(format!("{}.txt", host.replace(':', "_"))))
}

/// `GET http://<host><target>`: the status and body.
async fn get(host: &str, target: &str) -> io::Result<(u16, Vec<u8>)> {
    let call = async {
        let tcp = tokio::net::TcpStream::connect(host).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(conn);
        let request = hyper::Request::get(target)
            .header("host", host)
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(io::Error::other)?;
        let response = send.send_request(request).await.map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok::<_, io::Error>((status, body.to_vec()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 30 s"))?
}

/// The JSON list `key` of `GET target`, page by page.
async fn paged(host: &str, target: &str, key: &str) -> io::Result<Vec<String>> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut page = format!("{target}?n={PAGE}");
        if let Some(last) = all.last() {
            page.push_str(&format!("&last={last}"));
        }
        let (status, body) = get(host, &page).await?;
        if status != 200 {
            return Err(io::Error::other(format!("GET {page}: status {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| io::Error::other(format!("GET {page}: {e}")))?;
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

/// Every image (normalised reference) the peer at `host` serves.
pub async fn catalog(host: &str) -> io::Result<Vec<String>> {
    let mut refs = Vec::new();
    for repo in paged(host, "/v2/_catalog", "repositories").await? {
        for tag in paged(host, &format!("/v2/{repo}/tags/list"), "tags").await? {
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
pub fn followed(text: &str) -> Option<String> {
    let host = text.lines().next()?.strip_prefix(FROM)?;
    peer_host(host.trim()).ok()
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
pub async fn follow(state_dir: PathBuf, url: String, every: Duration, grace: Duration) {
    let (Ok(host), Some(path)) = (peer_host(&url), list_path(&state_dir, &url)) else {
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
        match catalog(&host).await {
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
        assert_eq!(peer_host("http://10.0.0.5:5050/").unwrap(), "10.0.0.5:5050");
        assert!(peer_host("https://10.0.0.5:5050")
            .unwrap_err()
            .contains("HTTPS"));
        assert!(peer_host("http://h:1/v2").is_err());
        let text = render("http://h:1", &["docker.io/library/a:1".into()]);
        assert_eq!(
            text,
            "# airlift follows: http://h:1\ndocker.io/library/a:1\n"
        );
        assert_eq!(followed(&text).as_deref(), Some("h:1"));
        assert_eq!(followed("docker.io/library/a:1\n"), None);
        assert_eq!(
            list_path(Path::new("/s"), "http://h:1").unwrap(),
            Path::new("/s/follow/h_1.txt")
        );
    }
}
