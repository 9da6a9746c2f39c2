//! The images-directory daemon (`airlift serve`): imports every archive present at startup before
//! reporting ready, imports new and changed archives while running, and unpins and releases the
//! images of archives that are removed.
//!
//! Every change to one archive — startup reconciliation, a file event, an API call — goes
//! through [`Daemon::reconcile`] ([`reconcile`]), serialised per path, and every import, every
//! recall of a record and every connection to containerd through the one [`Importer`]; imports
//! run concurrently up to the configured limit. Pins move only for archives that are gone or no
//! longer provide an image ([`crate::pins`]): no image of a present archive is ever unpinned,
//! not even for a moment.
//!
//! The parts: [`status`] (what the daemon knows of each archive), [`reconcile`] (one archive's
//! import or release), [`names`] (which archive a name several provide comes from, and making
//! containerd show it), [`repair`] (containerd's events followed, what others change restored),
//! [`startup`] (crash cleanup, then every archive before ready), [`slots`] (import slots in
//! priority order), [`serve`] (the watcher, the API, metrics and the registry endpoint,
//! shutdown), [`watch`] (inotify), [`server`] (the API), [`metrics`] (Prometheus).

pub mod metrics;
pub mod names;
pub mod reconcile;
pub mod repair;
pub mod serve;
pub mod server;
pub mod slots;
pub mod startup;
pub mod status;
pub mod watch;

use crate::config::Config;
use crate::containerd::Client;
use crate::service::options::Asked;
use crate::service::{Connection, Connector, Importer, Patience, Remember, Socket};
use crate::state::Records;
use status::Inner;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as tokio_watch;

pub use status::{ArchiveStatus, State};

/// The running daemon.
pub struct Daemon {
    cfg: Config,
    /// Every import, every recall of a record, and the way to containerd.
    importer: Importer,
    inner: Mutex<Inner>,
    path_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    slots: slots::Slots,
    /// The `priority` patterns, compiled.
    priority: Vec<globset::GlobMatcher>,
    /// Numbers the turns of queued archives.
    turns: AtomicU64,
    /// Repairs of what others change.
    repairs: repair::Repairs,
    /// Pull lists whose pulls failed, by path: how many times in a row (the next try waits).
    pull_failures: std::sync::Mutex<std::collections::HashMap<PathBuf, u32>>,
    /// The names each pull list left to an archive that takes precedence: pulled once that
    /// archive no longer provides them.
    yielded:
        std::sync::Mutex<std::collections::HashMap<PathBuf, std::collections::BTreeSet<String>>>,
    startup: tokio_watch::Sender<bool>,
    bytes_read: AtomicU64,
    /// Subscribed to containerd's events, with every record verified since.
    following: AtomicBool,
    /// Files the watcher has seen and not yet handed over (see [`watch::watch`]).
    settling: Arc<std::sync::atomic::AtomicU32>,
    cancel: Arc<AtomicBool>,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The import options the configuration names cannot be used.
    #[error("config: {0}")]
    Options(#[from] crate::service::options::OptionsError),
    /// containerd's hosts.toml files (`[mirrors]`) could not be written.
    #[error("mirrors: {0}")]
    Mirrors(#[from] crate::mirrors::MirrorError),
    /// The state directory or a socket could not be set up.
    #[error("{what}: {cause}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |cause| DaemonError::Setup { what, cause }
}

/// Names of files the daemon never imports: dotfiles (rsync's `.name.XXXXXX`), partial
/// downloads, and a docker-save archive's signatures (`<archive>.sigs`, read with it).
pub fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(crate::import::sidecar::SUFFIX)
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".partial")
        || name.ends_with('~')
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    if let Some(opts) = cfg.mirrors.options() {
        write_mirrors(&opts)?;
    }
    let daemon = Daemon::new(cfg)?;
    daemon.clone().serve(shutdown).await
}

/// `[mirrors]`: containerd's hosts.toml files, written before anything else starts, as
/// `airlift mirrors` writes them; what hosts.toml cannot express is logged as a warning.
fn write_mirrors(opts: &crate::mirrors::Options) -> Result<(), DaemonError> {
    let report = crate::mirrors::apply(opts)?;
    for w in &report.warnings {
        tracing::warn!("mirrors: {w}");
    }
    for c in &report.changes {
        let file = crate::escape::shown(&c.path).to_string();
        match c.action {
            crate::mirrors::Action::Unchanged => tracing::debug!(%file, "hosts.toml unchanged"),
            ref action => tracing::info!(%file, ?action, "hosts.toml"),
        }
    }
    Ok(())
}

impl Daemon {
    /// Sets up state; nothing runs yet.
    pub fn new(cfg: Config) -> Result<Arc<Daemon>, DaemonError> {
        let socket = Socket {
            address: cfg.address.clone(),
            namespace: cfg.namespace.clone(),
            timeout: Duration::from_secs(5),
        };
        Daemon::with_connector(cfg, Box::new(socket))
    }

    /// [`Daemon::new`] reaching containerd through `connector`.
    pub fn with_connector(
        mut cfg: Config,
        connector: Box<dyn Connector>,
    ) -> Result<Arc<Daemon>, DaemonError> {
        // Archive paths are recorded and labelled resolved: a symlinked images directory must
        // not make the same archive look like two.
        for dir in cfg.images_dirs.iter_mut().chain(cfg.intake_dirs.iter_mut()) {
            if let Ok(real) = std::fs::canonicalize(&*dir) {
                *dir = real;
            }
        }
        let priority = cfg.priority_set()?;
        let records = Records::open(&cfg.state_dir).map_err(setup(format!(
            "state directory {}",
            crate::escape::shown(&cfg.state_dir)
        )))?;
        let asked = Asked::of_config(&cfg);
        let options = asked.options()?;
        for note in asked.platform_notes() {
            tracing::warn!("{note}");
        }
        let cancel = options.cancel.clone();
        let (startup, _) = tokio_watch::channel(false);
        Ok(Arc::new(Daemon {
            slots: slots::Slots::new(cfg.concurrency),
            priority,
            turns: AtomicU64::new(0),
            repairs: repair::Repairs::default(),
            pull_failures: Default::default(),
            yielded: Default::default(),
            importer: Importer::new(
                options,
                Some(records),
                Remember::Everything,
                Connection::new(connector, Patience::Wait, cancel.clone()),
            ),
            cancel,
            cfg,
            inner: Mutex::new(Inner::default()),
            path_locks: Mutex::new(HashMap::new()),
            startup,
            following: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            settling: Arc::default(),
            metrics: metrics::Metrics::new(),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The daemon's records.
    fn records(&self) -> &Records {
        self.importer.records().expect("the daemon keeps records")
    }

    /// Resolves once the startup import is done.
    pub async fn wait_startup(&self) {
        let mut rx = self.startup.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Whether the startup import is done.
    pub fn startup_done(&self) -> bool {
        *self.startup.borrow()
    }

    /// Whether containerd answered the last attempt.
    pub fn containerd_connected(&self) -> bool {
        self.importer.connection().connected()
    }

    /// Archive bytes read since start.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Whether the daemon is shutting down.
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Connects to containerd, waiting (with backoff, logged) until it answers or shutdown.
    pub async fn connect(&self) -> Option<Client> {
        self.importer.connection().wait().await.ok()
    }

    fn path_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.path_locks
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests;
