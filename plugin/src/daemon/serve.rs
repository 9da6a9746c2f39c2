//! Serving: the API socket, metrics, the registry endpoint ([`crate::registry`]) when
//! configured, the directory watcher feeding [`Daemon::reconcile`], the startup import beside
//! them, and a clean shutdown (in-flight imports abandoned, temporary files removed; the next
//! start resumes).

use super::{metrics, server, setup, watch, Daemon, DaemonError};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for the startup import and in-flight imports to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

impl Daemon {
    /// Runs everything until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let api = server::listen(self.clone()).await?;
        if self.cfg.content_proxy.root.is_some() {
            // containerd starts after airlift and needs its content store, while the startup
            // import needs containerd: as a content proxy, "ready" means the store is served
            // (kubelet waits for the import with `airlift wait`).
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
        let metrics_server = if self.cfg.metrics_address.is_empty() {
            None
        } else {
            Some(metrics::serve(self.clone()).await.map_err(setup(format!(
                "metrics address {}",
                self.cfg.metrics_address
            )))?)
        };
        let registry = self.registry().await?;
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<watch::Event>(1024);
        let watcher = tokio::spawn(watch::watch(
            self.cfg.watched_dirs(),
            self.cfg.settle(),
            events_tx,
            self.settling.clone(),
        ));
        let startup = {
            let d = self.clone();
            tokio::spawn(async move { d.startup().await })
        };
        // Repairs follow containerd's events once the startup import is done.
        let follower = {
            let d = self.clone();
            tokio::spawn(async move {
                d.wait_startup().await;
                d.follow_events().await
            })
        };
        let dispatcher = {
            let d = self.clone();
            tokio::spawn(async move {
                d.wait_startup().await;
                while let Some(ev) = events_rx.recv().await {
                    let d = d.clone();
                    let (watch::Event::Settled(p) | watch::Event::Removed(p)) = ev;
                    // Counted as queued from the moment the watcher lets go of it.
                    let queued = d.enqueue(&p);
                    tokio::spawn(async move {
                        d.reconcile_queued(&p, false, queued).await;
                    });
                }
            })
        };
        let peers: Vec<_> = self
            .cfg
            .follow
            .iter()
            .map(|url| {
                tracing::info!(peer = %url, "following");
                tokio::spawn(crate::pull::follow::follow(
                    self.cfg.state_dir.clone(),
                    self.importer.options().hosts_dir.clone(),
                    url.clone(),
                    Duration::from_secs(self.cfg.follow_seconds),
                    Duration::from_secs(self.cfg.follow_grace_seconds),
                ))
            })
            .collect();
        shutdown.await;
        tracing::info!("shutting down");
        peers.iter().for_each(|p| p.abort());
        self.cancel.store(true, Ordering::Relaxed);
        self.slots.close();
        watcher.abort();
        dispatcher.abort();
        follower.abort();
        // In-flight imports notice the cancel flag at their next read and clean up.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, startup).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.counts().1 > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        api.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        if let Some(r) = registry {
            r.abort();
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        Ok(())
    }
}

/// The registry endpoint's way to containerd: the daemon's connection, one attempt a call.
struct Connect(Arc<Daemon>);

#[async_trait::async_trait]
impl crate::registry::Connect for Connect {
    async fn connect(&self) -> crate::containerd::Result<crate::containerd::Client> {
        self.0.importer.connection().connect().await
    }
}

impl Daemon {
    /// Starts the registry endpoint, when configured.
    async fn registry(
        self: &Arc<Self>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
        let cfg = &self.cfg.registry;
        if cfg.address.is_empty() {
            return Ok(None);
        }
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::registry::tls::server_config(cert, key, cfg.client_ca.as_deref()).map_err(
                    |e| DaemonError::Setup {
                        what: "registry endpoint".into(),
                        cause: std::io::Error::other(e),
                    },
                )?,
            ),
            _ => None,
        };
        let settings = crate::registry::Settings {
            policy: cfg.serve,
            content_root: self.cfg.content_proxy.root.clone(),
            max_connections: cfg.max_connections,
            send_buffer: cfg.send_buffer_kib << 10,
            tls,
        };
        let listener = tokio::net::TcpListener::bind(&cfg.address)
            .await
            .map_err(setup(format!("registry address {}", cfg.address)))?;
        tracing::info!(
            address = %cfg.address,
            tls = settings.tls.is_some(),
            client_certificates = cfg.client_ca.is_some(),
            serve = ?cfg.serve,
            "serving the registry endpoint"
        );
        let registry = crate::registry::Registry::new(
            settings,
            Arc::new(Connect(self.clone())),
            self.metrics.registry_endpoint.clone(),
        );
        Ok(Some(crate::registry::serve(Arc::new(registry), listener)))
    }
}

/// Whether `path` was last modified at least `settle` ago.
pub(super) fn is_settled(path: &Path, settle: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= settle)
}

/// Waits until `path` was last modified at least `settle` ago and stays unchanged that long.
pub(super) async fn wait_settled(path: &Path, settle: Duration) {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    loop {
        let before = stat(path);
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or(settle);
        if age >= settle {
            return;
        }
        tokio::time::sleep(settle - age).await;
        if stat(path) == before && before.is_some() {
            continue; // re-checks the age, which is now past the interval
        }
    }
}
