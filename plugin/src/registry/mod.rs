//! The registry endpoint: the images containerd holds in the daemon's namespace, served
//! read-only over the OCI Distribution API, so other nodes (containerd through a `hosts.toml`
//! mirror, skopeo, a follower) can pull them from this one.
//!
//! The parts: [`names`] (repository names and the registry they mean), [`routes`] (the API),
//! [`served`] (which images are served and what each reaches — nothing else is),
//! [`signatures`] (the tags signatures are kept under, served with the image they sign),
//! [`referrers`] (the OCI 1.1 referrers list), [`range`]
//! (`Range` requests), [`errors`] (the spec's error bodies), [`http`] (HTTP/1.1 framing, with
//! blobs sent by `sendfile` from the content root), [`tls`] (rustls, optionally requiring
//! client certificates).
//!
//! Blobs are read from the content root where it is on this machine (containerd's, or
//! airlift's own in content proxy mode), through containerd's Content API otherwise.
//! Connections are bounded ([`Settings::max_connections`]); each must send its request head
//! within [`http::HEAD_TIMEOUT`] and keep reading its response.

pub mod errors;
pub mod http;
pub mod names;
pub mod range;
pub mod referrers;
pub mod routes;
pub mod served;
pub mod signatures;
pub mod tls;

use crate::containerd::{Client, ContainerdError};
use crate::error::Class;
use crate::store::layout::ContentRoot;
use errors::Code;
use http::{Conn, Head, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use served::Policy;
use served::{Served, Source};
use std::path::PathBuf;
use std::sync::Arc;

/// How the endpoint reaches containerd (the daemon's connection; a fake in tests).
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// A connection, or why there is none.
    async fn connect(&self) -> crate::containerd::Result<Client>;
}

/// What the endpoint is configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Which images are served.
    pub policy: Policy,
    /// airlift's own content root, when it is containerd's content store (proxy mode): blobs
    /// are read from it.
    pub content_root: Option<PathBuf>,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Each connection's socket send buffer in bytes; 0 leaves it to the kernel.
    pub send_buffer: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The endpoint's counters, registered with the daemon's metrics.
#[derive(Clone, Default)]
pub struct Counters {
    requests: Family<RequestLabels, Counter>,
    bytes: Family<RouteLabel, Counter>,
}

impl Counters {
    /// Registers the counters (`registry_requests_total{route,method,status}`,
    /// `registry_sent_bytes_total{route}`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "registry_requests",
            "Registry endpoint requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "registry_sent_bytes",
            "Body bytes the registry endpoint sent, by route",
            self.bytes.clone(),
        );
    }

    fn count(&self, route: routes::Route, method: &str, status: u16, bytes: u64) {
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route: route.label(),
                method,
                status,
            })
            .inc();
        if bytes > 0 {
            self.bytes
                .get_or_create(&RouteLabel {
                    route: route.label(),
                })
                .inc_by(bytes);
        }
    }
}

/// The endpoint.
pub struct Registry {
    settings: Settings,
    connect: Arc<dyn Connect>,
    backend: tokio::sync::Mutex<Option<(Client, Source)>>,
    served: Served,
    counters: Counters,
}

impl Registry {
    /// An endpoint reaching containerd through `connect`, counting into `counters`.
    pub fn new(settings: Settings, connect: Arc<dyn Connect>, counters: Counters) -> Registry {
        Registry {
            served: Served::new(settings.policy),
            settings,
            connect,
            backend: tokio::sync::Mutex::new(None),
            counters,
        }
    }

    /// The connection to containerd and where blobs are read, set up on first use (and again
    /// after containerd was unreachable).
    async fn backend(&self) -> Result<(Client, Source), Response> {
        let mut b = self.backend.lock().await;
        if let Some(b) = &*b {
            return Ok(b.clone());
        }
        let client = served::within(self.connect.connect())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let source = match &self.settings.content_root {
            Some(root) => Source::Files(ContentRoot::new(root)),
            None => match served::within(client.content_root())
                .await
                .map_err(|e| self.unavailable(&e))?
                .map(ContentRoot::new)
            {
                Some(root) if root.is_here() => Source::Files(root),
                _ => Source::Api(client.clone()),
            },
        };
        tracing::info!(
            blobs = %match &source {
                Source::Files(r) => crate::escape::shown(&r.path()).to_string(),
                Source::Api(_) => "containerd's Content API".to_string(),
            },
            "registry endpoint reads blobs from"
        );
        *b = Some((client.clone(), source.clone()));
        Ok((client, source))
    }

    /// The response to a containerd failure; an unreachable containerd is connected to again
    /// at the next request.
    fn unavailable(&self, e: &ContainerdError) -> Response {
        if e.class() == Class::Unavailable {
            if let Ok(mut b) = self.backend.try_lock() {
                *b = None;
            }
        }
        tracing::warn!(error = %e, "registry endpoint: containerd");
        routes::error(Code::Unavailable, "containerd did not answer")
    }

    /// The response to a failure reading content.
    fn failed(&self, e: &std::io::Error) -> Response {
        tracing::warn!(error = %e, "registry endpoint: reading content");
        routes::error(Code::Unavailable, "content could not be read")
    }

    /// Serves one connection until it ends.
    async fn connection(&self, mut conn: Conn) {
        let mut buf = Vec::new();
        loop {
            let req = match http::read_head(&mut conn, &mut buf).await {
                Head::Request(r) => r,
                Head::Closed => break,
                Head::Bad(status) => {
                    let resp = Response::new(status, http::Body::Empty);
                    self.counters.count(routes::Route::Other, "", status, 0);
                    let _ = http::write(&mut conn, resp, false, false).await;
                    break;
                }
            };
            let (route, resp) = self.respond(&req).await;
            let status = resp.status;
            tracing::debug!(
                method = %crate::escape::shown(&req.method),
                path = %crate::escape::shown(&req.path),
                query = %crate::escape::shown(&req.query),
                status,
                "registry request"
            );
            let head_only = req.method == "HEAD";
            let close = req.close || resp.status >= 500;
            let sent = http::write(&mut conn, resp, head_only, !close).await;
            self.counters
                .count(route, &req.method, status, *sent.as_ref().unwrap_or(&0));
            if sent.is_err() || close {
                break;
            }
        }
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.shutdown()).await;
    }
}

/// Serves `registry` on `listener` until the task is aborted.
pub fn serve(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        registry.settings.max_connections.max(1),
    ));
    let tls = registry
        .settings
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be closed.
                    tracing::warn!(error = %e, "registry endpoint: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if registry.settings.send_buffer > 0 {
                let _ = crate::sys::set_send_buffer(&tcp, registry.settings.send_buffer);
            }
            let registry = registry.clone();
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                let plain = tls.is_none();
                tokio::spawn(async move {
                    let mut conn = Conn::Plain(tcp);
                    let resp = routes::error(Code::Unavailable, "too many connections")
                        .with("Retry-After", "1");
                    registry.counters.count(routes::Route::Other, "", 503, 0);
                    if plain {
                        let _ = http::write(&mut conn, resp, false, false).await;
                    }
                });
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let conn = match tls {
                    None => Conn::Plain(tcp),
                    Some(acceptor) => {
                        match tokio::time::timeout(http::HEAD_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "registry endpoint: TLS handshake");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                registry.connection(conn).await;
            });
        }
    })
}

#[cfg(test)]
mod tests;
