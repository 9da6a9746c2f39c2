//! The API's routes: a request head in, a response out. Only `GET` and `HEAD` are served; every
//! other method is `405 UNSUPPORTED`.
//!
//! - `/v2/` — the API version check;
//! - `/v2/_catalog` — the served repositories, by the names clients use ([`names::client_name`]);
//! - `/v2/<name>/tags/list` — a served repository's tags;
//! - `/v2/<name>/manifests/<tag|digest>` — a served image's manifest or index, or one reachable
//!   from it, as stored (no conversion, whatever `Accept` says);
//! - `/v2/<name>/blobs/<digest>` — a config or layer reachable from an image of `<name>`, with
//!   `Range`;
//! - `/v2/<name>/referrers/<digest>` — the manifests of `<name>` that refer to `<digest>`
//!   ([`referrers`](super::referrers)).
//!
//! Signatures are served as tags: cosign's `sha256-<hex>.sig` and the referrers tag
//! `sha256-<hex>` of a served image ([`Listing::of`]).
//!
//! `n` and `last` paginate the two lists, with a `Link` header to the next page.

use super::errors::Code;
use super::http::{Body, Request, Response};
use super::names::{self, Object, Repository};
use super::range::{self, Wanted};
use super::served::{Blob, Image, Listing, Source};
use super::Registry;
use crate::containerd::Client;
use crate::digest::Digest;
use std::sync::Arc;

/// Which route a request took (the `route` label of the request counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/referrers/<digest>`.
    Referrers,
    /// Anything else.
    Other,
}

impl Route {
    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags => "tags",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Referrers => "referrers",
            Route::Other => "other",
        }
    }
}

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
enum Path<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Referrers(&'a str, &'a str),
    Unknown,
}

fn route(path: &str) -> Path<'_> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Path::Unknown;
    };
    let rest = match rest {
        "" | "/" => return Path::Base,
        r => match r.strip_prefix('/') {
            Some(r) => r,
            None => return Path::Unknown,
        },
    };
    if rest == "_catalog" {
        return Path::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Path::Tags(name);
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Path::Unknown;
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return Path::Unknown;
    };
    match kind {
        "manifests" => Path::Manifest(name, last),
        "blobs" => Path::Blob(name, last),
        "referrers" => Path::Referrers(name, last),
        _ => Path::Unknown,
    }
}

/// Percent-decodes a path; `None` when an escape is broken or the result is not UTF-8 text
/// without control characters.
pub(super) fn decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

/// An error response.
pub fn error(code: Code, detail: &str) -> Response {
    Response::new(code.status(), Body::Bytes(code.body(detail)))
        .with("Content-Type", "application/json")
}

fn json(value: serde_json::Value) -> Response {
    Response::new(
        200,
        Body::Bytes(serde_json::to_vec(&value).expect("JSON of strings")),
    )
    .with("Content-Type", "application/json")
}

/// The page of `all` (sorted) that `n` and `last` ask for, and whether more follow.
fn page<'a>(all: &'a [String], req: &Request) -> (&'a [String], Option<String>) {
    let start = match req.param("last") {
        Some(last) => all.partition_point(|x| x.as_str() <= last),
        None => 0,
    };
    let rest = &all[start..];
    match req.param("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n < rest.len() => (&rest[..n], rest[..n].last().cloned()),
        _ => (rest, None),
    }
}

fn paged(resp: Response, path: &str, n: Option<&str>, next: Option<String>) -> Response {
    match (next, n) {
        (Some(last), Some(n)) => {
            resp.with("Link", format!("<{path}?n={n}&last={last}>; rel=\"next\""))
        }
        _ => resp,
    }
}

impl Registry {
    /// The response to `req`, and the route it took.
    pub async fn respond(&self, req: &Request) -> (Route, Response) {
        // Routed on the path as sent, each part decoded after: an encoded `/` or `..` stays
        // inside the part it was sent in, where the name and digest rules refuse it.
        let parsed = route(&req.path);
        let r = match parsed {
            Path::Base => Route::Base,
            Path::Catalog => Route::Catalog,
            Path::Tags(_) => Route::Tags,
            Path::Manifest(..) => Route::Manifest,
            Path::Blob(..) => Route::Blob,
            Path::Referrers(..) => Route::Referrers,
            Path::Unknown => Route::Other,
        };
        if req.method != "GET" && req.method != "HEAD" {
            let resp = error(Code::Unsupported, &format!("{} is not served", req.method))
                .with("Allow", "GET, HEAD");
            return (r, resp);
        }
        let resp = match self.answer(req, parsed).await {
            Ok(resp) | Err(resp) => resp,
        };
        (
            r,
            resp.with("Docker-Distribution-API-Version", "registry/2.0"),
        )
    }

    async fn answer(&self, req: &Request, path: Path<'_>) -> Result<Response, Response> {
        let repository = |name: &str| {
            let name = decode(name)
                .ok_or_else(|| error(Code::NameInvalid, "the name is not valid text"))?;
            // containerd escapes the registry's `:` (`ns=localhost%3A5000`).
            let ns = match req.param("ns").filter(|ns| !ns.is_empty()) {
                Some(ns) => Some(decode(ns).ok_or_else(|| {
                    error(Code::NameInvalid, "the ns parameter is not valid text")
                })?),
                None => None,
            };
            names::repository(&name, ns.as_deref()).map_err(|e| error(Code::NameInvalid, &e.why))
        };
        let part = |p: &str| decode(p).unwrap_or_default();
        match path {
            Path::Base => Ok(json(serde_json::json!({}))),
            Path::Unknown => Err(error(Code::NotFound, "")),
            Path::Catalog => {
                let (client, _) = self.backend().await?;
                let listing = self.listing(&client, false).await?;
                let mut all: Vec<String> = listing
                    .repositories
                    .keys()
                    .map(names::client_name)
                    .collect();
                all.sort();
                all.dedup();
                let (items, next) = page(&all, req);
                let resp = json(serde_json::json!({ "repositories": items }));
                Ok(paged(resp, "/v2/_catalog", req.param("n"), next))
            }
            Path::Tags(name) => {
                let repo = repository(name)?;
                let (client, _) = self.backend().await?;
                let images = self.images(&client, &repo).await?;
                let mut tags: Vec<String> = images.iter().filter_map(|i| i.tag.clone()).collect();
                tags.sort();
                tags.dedup();
                let (items, next) = page(&tags, req);
                let resp = json(serde_json::json!({ "name": part(name), "tags": items }));
                Ok(paged(
                    resp,
                    &format!("/v2/{name}/tags/list"),
                    req.param("n"),
                    next,
                ))
            }
            Path::Manifest(name, reference) => {
                let repo = repository(name)?;
                let reference = &part(reference);
                let object = names::object(reference).map_err(|e| match e {
                    names::BadObject::Digest => error(Code::DigestInvalid, reference),
                    names::BadObject::Tag => error(Code::ManifestUnknown, reference),
                })?;
                let (client, source) = self.backend().await?;
                let (digest, media_type) = self.manifest(&client, &source, &repo, &object).await?;
                let data = source
                    .read(&digest, super::served::MAX_MANIFEST)
                    .await
                    .map_err(|e| self.failed(&e))?
                    .ok_or_else(|| error(Code::ManifestUnknown, &digest.to_string()))?;
                let media_type = if media_type.is_empty() {
                    serde_json::from_slice::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                        .unwrap_or_else(|| crate::oci::MEDIA_OCI_MANIFEST.to_string())
                } else {
                    media_type
                };
                Ok(Response::new(200, Body::Bytes(data))
                    .with("Content-Type", media_type)
                    .with("Docker-Content-Digest", digest.to_string())
                    .with("ETag", format!("\"{digest}\"")))
            }
            Path::Referrers(name, digest) => {
                let repo = repository(name)?;
                let digest = &part(digest);
                let digest: Digest = digest
                    .parse()
                    .map_err(|_| error(Code::DigestInvalid, digest))?;
                self.referrers(req, &repo, &digest).await
            }
            Path::Blob(name, digest) => {
                let repo = repository(name)?;
                let digest = &part(digest);
                let digest: Digest = digest
                    .parse()
                    .map_err(|_| error(Code::DigestInvalid, digest))?;
                let (client, source) = self.backend().await?;
                if !self.reaches(&client, &source, &repo, &digest).await? {
                    return Err(error(Code::BlobUnknown, &digest.to_string()));
                }
                let blob = source
                    .open(&digest)
                    .await
                    .map_err(|e| self.failed(&e))?
                    .ok_or_else(|| error(Code::BlobUnknown, &digest.to_string()))?;
                let size = blob.size();
                let wanted = range::wanted(req.header("range"), size);
                if wanted == Wanted::Unsatisfiable {
                    return Err(Response::new(416, Body::Empty)
                        .with("Content-Range", format!("bytes */{size}")));
                }
                let (offset, len) = wanted.span(size);
                let body = match blob {
                    Blob::File(file, _) => Body::File { file, offset, len },
                    Blob::Api(_) => Body::Api {
                        client,
                        digest: digest.clone(),
                        offset,
                        len,
                    },
                };
                let resp = match wanted {
                    Wanted::Part { start, end } => Response::new(206, body)
                        .with("Content-Range", format!("bytes {start}-{end}/{size}")),
                    _ => Response::new(200, body),
                };
                Ok(resp
                    .with("Content-Type", "application/octet-stream")
                    .with("Accept-Ranges", "bytes")
                    .with("Docker-Content-Digest", digest.to_string())
                    .with("ETag", format!("\"{digest}\"")))
            }
        }
    }

    /// The served listing, or the error response.
    pub(super) async fn listing(
        &self,
        client: &Client,
        missed: bool,
    ) -> Result<Arc<Listing>, Response> {
        self.served
            .listing(client, missed)
            .await
            .map_err(|e| self.unavailable(&e))
    }

    /// The served images of `repo` (listing again once if it has none): 404 `NAME_UNKNOWN`
    /// when there are none.
    pub(super) async fn images(
        &self,
        client: &Client,
        repo: &Repository,
    ) -> Result<Vec<Image>, Response> {
        for missed in [false, true] {
            if let Some(images) = self.listing(client, missed).await?.repositories.get(repo) {
                return Ok(images.clone());
            }
        }
        Err(error(Code::NameUnknown, &names::client_name(repo)))
    }

    /// The digest and media type of the manifest `object` names in `repo`. A tag is looked up
    /// in containerd at each request (one call: a tag just created or deleted is seen at once);
    /// a digest among what the repository's served images reach.
    async fn manifest(
        &self,
        client: &Client,
        source: &Source,
        repo: &Repository,
        object: &Object,
    ) -> Result<(Digest, String), Response> {
        if let Object::Tag(t) = object {
            if let Some(found) = self.served_tag(client, repo, t).await? {
                return Ok(found);
            }
            // Which error: whether the repository is served at all.
            self.images(client, repo).await?;
            return Err(error(Code::ManifestUnknown, t));
        }
        for missed in [false, true] {
            let Some(images) = self
                .listing(client, missed)
                .await?
                .repositories
                .get(repo)
                .cloned()
            else {
                continue;
            };
            if let Object::Digest(d) = object {
                for i in &images {
                    let reach = self
                        .served
                        .reach(source, i)
                        .await
                        .map_err(|e| self.failed(&e))?;
                    if let Some(m) = reach.manifests.get(d) {
                        return Ok((d.clone(), m.media_type.clone()));
                    }
                }
            }
            if missed {
                return Err(error(Code::ManifestUnknown, &object_text(object)));
            }
        }
        Err(error(Code::NameUnknown, &names::client_name(repo)))
    }

    /// The target and media type of `repo:tag`, looked up in containerd now; `None` when there
    /// is no such record or it is not served (by the policy, or as the signature of a served
    /// image: [`Listing::of`]).
    pub(super) async fn served_tag(
        &self,
        client: &Client,
        repo: &Repository,
        tag: &str,
    ) -> Result<Option<(Digest, String)>, Response> {
        let record = super::served::within(client.get_image(&format!("{repo}:{tag}")))
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some(record) = record else {
            return Ok(None);
        };
        let Ok(digest) = record.digest.parse() else {
            return Ok(None);
        };
        let mut served = self.served.serves(&record);
        if !served && super::signatures::signs(tag, &record.labels).is_some() {
            for missed in [false, true] {
                if self
                    .listing(client, missed)
                    .await?
                    .serves_signature(repo, &record)
                {
                    served = true;
                    break;
                }
            }
        }
        Ok(served.then_some((digest, record.media_type)))
    }

    /// Whether `digest` is reachable from a served image of `repo` (a config or a layer, or a
    /// manifest, which distribution serves as a blob too).
    async fn reaches(
        &self,
        client: &Client,
        source: &Source,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<bool, Response> {
        for missed in [false, true] {
            let listing = self.listing(client, missed).await?;
            let Some(images) = listing.repositories.get(repo) else {
                continue;
            };
            for i in images {
                let reach = self
                    .served
                    .reach(source, i)
                    .await
                    .map_err(|e| self.failed(&e))?;
                if reach.blobs.contains(digest) || reach.manifests.contains_key(digest) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn object_text(o: &Object) -> String {
    match o {
        Object::Tag(t) => t.clone(),
        Object::Digest(d) => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route() {
        assert_eq!(route("/v2/"), Path::Base);
        assert_eq!(route("/v2"), Path::Base);
        assert_eq!(route("/v2/_catalog"), Path::Catalog);
        assert_eq!(
            route("/v2/library/busybox/tags/list"),
            Path::Tags("library/busybox")
        );
        assert_eq!(
            route("/v2/quay.io/org/app/manifests/v1"),
            Path::Manifest("quay.io/org/app", "v1")
        );
        assert_eq!(route("/v2/a/blobs/sha256:x"), Path::Blob("a", "sha256:x"));
        assert_eq!(
            route("/v2/org/app/referrers/sha256:x"),
            Path::Referrers("org/app", "sha256:x")
        );
        for bad in [
            "/",
            "/v2x",
            "/v3/",
            "/v2/a",
            "/v2/manifests/x",
            "/v2/a/other/x",
            "/v2/a/blobs/uploads/",
        ] {
            assert!(
                matches!(route(bad), Path::Unknown | Path::Blob("a/blobs", _)),
                "{bad}: {:?}",
                route(bad)
            );
        }
    }

    #[test]
    fn paths_decode() {
        assert_eq!(decode("/v2/a%2Fb").as_deref(), Some("/v2/a/b"));
        assert_eq!(decode("/v2/%2e%2e/x").as_deref(), Some("/v2/../x"));
        assert_eq!(decode("/v2/%zz"), None);
        assert_eq!(decode("/v2/%"), None);
        assert_eq!(decode("/v2/%0a"), None);
        assert_eq!(decode("/v2/%ff"), None);
    }

    #[test]
    fn lists_paginate() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let req = Request::new("GET", "/v2/_catalog?n=2", &[]);
        assert_eq!(page(&all, &req), (&all[..2], Some("b".into())));
        let req = Request::new("GET", "/v2/_catalog?n=2&last=b", &[]);
        assert_eq!(page(&all, &req), (&all[2..], None));
        let req = Request::new("GET", "/v2/_catalog?last=a", &[]);
        assert_eq!(page(&all, &req), (&all[1..], None));
        let req = Request::new("GET", "/v2/_catalog?n=x", &[]);
        assert_eq!(page(&all, &req).0.len(), 4);
    }
}
