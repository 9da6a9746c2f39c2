//! Prometheus metrics, served at `http://<metrics_address>/metrics` when configured.

use super::{Daemon, State};
use crate::import::Report;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    imports: Family<ResultLabel, Counter>,
    bytes: Counter,
    duration: Histogram,
    archives: Family<StateLabel, Gauge>,
    blobs_written: Counter,
    blobs_skipped: Counter,
    repairs: Family<WhatLabel, Counter>,
    verifications: Family<ResultLabel, Counter>,
    /// The registry endpoint's counters.
    pub registry_endpoint: crate::registry::Counters,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("airlift");
        let imports = Family::<ResultLabel, Counter>::default();
        registry.register(
            "imports",
            "Archive imports by result (ok, partial, failed)",
            imports.clone(),
        );
        let bytes = Counter::default();
        registry.register(
            "imported_bytes",
            "Archive bytes read by successful imports",
            bytes.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "import_duration_seconds",
            "Duration of archive imports",
            duration.clone(),
        );
        let archives = Family::<StateLabel, Gauge>::default();
        registry.register("archives", "Known archives by state", archives.clone());
        let blobs_written = Counter::default();
        registry.register(
            "blobs_written",
            "Blobs written to containerd",
            blobs_written.clone(),
        );
        let blobs_skipped = Counter::default();
        registry.register(
            "blobs_skipped",
            "Blobs already present and not written again",
            blobs_skipped.clone(),
        );
        let repairs = Family::<WhatLabel, Counter>::default();
        registry.register(
            "repairs",
            "Images restored from the records after someone else changed them, by what was wrong",
            repairs.clone(),
        );
        let verifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "verifications",
            "Images verified at import, by result (allowed, refused)",
            verifications.clone(),
        );
        let registry_counters = crate::registry::Counters::default();
        registry_counters.register(&mut registry);
        Metrics {
            registry_endpoint: registry_counters,
            repairs,
            verifications,
            registry,
            imports,
            bytes,
            duration,
            archives,
            blobs_written,
            blobs_skipped,
        }
    }

    /// Counts a finished import.
    pub fn import_done(&self, r: &Report) {
        let result = if r.ok() { "ok" } else { "partial" };
        self.imports
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        self.bytes.inc_by(r.archive_bytes);
        self.duration.observe(r.seconds);
        self.blobs_written.inc_by(r.blobs_written);
        self.blobs_skipped.inc_by(r.blobs_present);
        for (result, n) in [("allowed", r.verified.len()), ("refused", r.refused.len())] {
            if n > 0 {
                self.verifications
                    .get_or_create(&ResultLabel {
                        result: result.into(),
                    })
                    .inc_by(n as u64);
            }
        }
    }

    /// Counts a failed import.
    pub fn import_failed(&self) {
        self.imports
            .get_or_create(&ResultLabel {
                result: "failed".into(),
            })
            .inc();
    }

    /// Counts a repair of `what` (deleted, unpinned, repointed, relabelled, lease, reimported).
    pub fn repaired(&self, what: &str) {
        self.repairs
            .get_or_create(&WhatLabel { what: what.into() })
            .inc();
    }

    /// Sets the per-state archive gauges.
    pub fn set_states(&self, states: impl Iterator<Item = State>) {
        let mut counts = [0i64; 4];
        for s in states {
            counts[s as usize] += 1;
        }
        for (i, name) in ["pending", "importing", "imported", "failed"]
            .iter()
            .enumerate()
        {
            self.archives
                .get_or_create(&StateLabel {
                    state: name.to_string(),
                })
                .set(counts[i]);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a string");
        out
    }
}

/// Serves `/metrics` on the configured address.
pub async fn serve(daemon: Arc<Daemon>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(&daemon.config().metrics_address).await?;
    tracing::info!(address = %daemon.config().metrics_address, "serving metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let daemon = daemon.clone();
                        async move {
                            let (status, body) = if req.uri().path() == "/metrics" {
                                (200, daemon.metrics.encode())
                            } else {
                                (404, "not found: try /metrics\n".to_string())
                            };
                            let resp = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                                .expect("static response");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_imports_and_states() {
        let m = Metrics::new();
        let mut r = crate::service::recalled(
            &crate::state::Record::new(std::path::Path::new("/a.tar"), Default::default()),
            crate::import::Outcome::Imported,
            vec![],
            std::time::Instant::now(),
        );
        r.blobs_written = 3;
        r.archive_bytes = 1000;
        m.import_done(&r);
        m.import_failed();
        m.set_states([State::Imported, State::Failed, State::Imported].into_iter());
        m.repaired("unpinned");
        m.repaired("unpinned");
        let text = m.encode();
        for line in [
            "airlift_imports_total{result=\"ok\"} 1",
            "airlift_imports_total{result=\"failed\"} 1",
            "airlift_imported_bytes_total 1000",
            "airlift_blobs_written_total 3",
            "airlift_archives{state=\"imported\"} 2",
            "airlift_archives{state=\"failed\"} 1",
            "airlift_repairs_total{what=\"unpinned\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
