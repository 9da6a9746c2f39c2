//! The images-directory daemon (`airlift serve`): imports every archive present at startup before
//! reporting ready, imports new and changed archives while running, and unpins and releases the
//! images of archives that are removed.
//!
//! Every change to one archive — startup reconciliation, a file event, an API call — goes
//! through [`Daemon::reconcile`], serialised per path; imports run concurrently up to the
//! configured limit. Pins move only for archives that are gone or no longer provide an image:
//! no image of a present archive is ever unpinned, not even for a moment.

pub mod api;
pub mod metrics;
pub mod records;
pub mod watch;

use crate::config::Config;
use crate::containerd::Containerd;
use crate::import::{self, ImportOptions, Source, LABEL_ARCHIVE, LABEL_CRI_PINNED, LABEL_PINNED};
use records::{Identity, Outcome, Record, RecordedImage, Records};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch as tokio_watch, Semaphore};

/// Where an archive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for an import slot or for the file to settle.
    Pending,
    /// Being imported.
    Importing,
    /// Imported.
    Imported,
    /// The last import failed.
    Failed,
}

/// What the daemon knows of one archive.
#[derive(Debug, Clone)]
pub struct ArchiveStatus {
    /// Its path.
    pub path: PathBuf,
    /// Its state.
    pub state: State,
    /// Its record, once imported or failed.
    pub record: Option<Record>,
    /// Bytes read by the running import.
    pub progress: Arc<AtomicU64>,
    /// Its size, when known.
    pub total: u64,
}

struct Inner {
    archives: BTreeMap<PathBuf, ArchiveStatus>,
    queued: u32,
    importing: u32,
}

/// The running daemon.
pub struct Daemon {
    cfg: Config,
    options: ImportOptions,
    records: Records,
    inner: Mutex<Inner>,
    path_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    slots: Semaphore,
    startup: tokio_watch::Sender<bool>,
    connected: AtomicBool,
    bytes_read: AtomicU64,
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

/// Names of files the daemon never imports: dotfiles (rsync's `.name.XXXXXX`) and partial
/// downloads.
pub fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".partial")
        || name.ends_with('~')
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    let daemon = Daemon::new(cfg)?;
    daemon.clone().serve(shutdown).await
}

impl Daemon {
    /// Sets up state; nothing runs yet.
    pub fn new(mut cfg: Config) -> Result<Arc<Daemon>, DaemonError> {
        // Archive paths are recorded and labelled resolved: a symlinked images directory must
        // not make the same archive look like two.
        for dir in &mut cfg.images_dirs {
            if let Ok(real) = std::fs::canonicalize(&*dir) {
                *dir = real;
            }
        }
        let records = Records::open(&cfg.state_dir).map_err(setup(format!(
            "state directory {}",
            cfg.state_dir.display()
        )))?;
        let options = ImportOptions {
            plan: crate::archive::understand::PlanOptions {
                platforms: cfg.platform_policy()?,
                base_name: None,
                index_name: None,
                digest_refs: cfg.digest_refs,
            },
            labels: cfg.labels.clone(),
            pin: cfg.pin,
            mode: cfg.mode,
            content_root: cfg.content_proxy.root.clone(),
            scratch_dir: Some(cfg.state_dir.clone()),
            ..ImportOptions::default()
        };
        let (startup, _) = tokio_watch::channel(false);
        Ok(Arc::new(Daemon {
            slots: Semaphore::new(cfg.concurrency),
            cancel: options.cancel.clone(),
            options,
            records,
            cfg,
            inner: Mutex::new(Inner {
                archives: BTreeMap::new(),
                queued: 0,
                importing: 0,
            }),
            path_locks: Mutex::new(HashMap::new()),
            startup,
            connected: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            metrics: metrics::Metrics::new(),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
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
        self.connected.load(Ordering::Relaxed)
    }

    /// Archive bytes read since start.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// (queued, importing, known archives).
    pub fn counts(&self) -> (u32, u32, u32) {
        let inner = self.inner.lock().unwrap();
        (inner.queued, inner.importing, inner.archives.len() as u32)
    }

    /// Every archive's status.
    pub fn archives(&self) -> Vec<ArchiveStatus> {
        self.inner
            .lock()
            .unwrap()
            .archives
            .values()
            .cloned()
            .collect()
    }

    /// One archive's status.
    pub fn archive(&self, path: &Path) -> Option<ArchiveStatus> {
        self.inner.lock().unwrap().archives.get(path).cloned()
    }

    fn set_state(&self, path: &Path, state: State, record: Option<Option<Record>>) {
        let mut inner = self.inner.lock().unwrap();
        let entry = inner
            .archives
            .entry(path.to_path_buf())
            .or_insert_with(|| ArchiveStatus {
                path: path.to_path_buf(),
                state,
                record: None,
                progress: Arc::new(AtomicU64::new(0)),
                total: 0,
            });
        entry.state = state;
        if let Some(r) = record {
            entry.record = r;
        }
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    fn forget_state(&self, path: &Path) {
        let mut inner = self.inner.lock().unwrap();
        inner.archives.remove(path);
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// Connects to containerd, waiting (with backoff, logged) until it answers or shutdown.
    pub async fn connect(&self) -> Option<Containerd> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return None;
            }
            match Containerd::connect(
                &self.cfg.address,
                &self.cfg.namespace,
                Duration::from_secs(5),
            )
            .await
            {
                Ok(c) => match c.content_root().await {
                    Ok(_) => {
                        if !self.connected.swap(true, Ordering::Relaxed) && attempt > 0 {
                            tracing::info!(address = %self.cfg.address.display(), "containerd is reachable");
                        }
                        return Some(c);
                    }
                    Err(e) => self.unreachable(&e.to_string(), attempt, delay),
                },
                Err(e) => self.unreachable(&e.to_string(), attempt, delay),
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn unreachable(&self, error: &str, attempt: u32, delay: Duration) {
        self.connected.store(false, Ordering::Relaxed);
        if attempt == 0 || attempt.is_power_of_two() {
            tracing::warn!(%error, retry_in = ?delay, "waiting for containerd");
        }
    }

    fn path_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.path_locks
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// The archive files of the images directories, oldest modification first (name breaks ties).
    pub fn scan(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in &self.cfg.images_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if ignored(&name) {
                    continue;
                }
                if let Ok(m) = std::fs::metadata(&path) {
                    if m.is_file() {
                        found.push((m.modified().ok(), name, path));
                    }
                }
            }
        }
        found.sort();
        found.into_iter().map(|(_, _, p)| p).collect()
    }

    /// Everything the daemon does for one path: import it if new or changed (or `force`),
    /// release it if gone. Serialised per path.
    pub async fn reconcile(self: &Arc<Self>, path: &Path, force: bool) -> Option<ArchiveStatus> {
        let lock = self.path_lock(path);
        {
            let mut inner = self.inner.lock().unwrap();
            inner.queued += 1;
        }
        let _guard = lock.lock().await;
        {
            let mut inner = self.inner.lock().unwrap();
            inner.queued -= 1;
        }
        let record = self.archive(path).and_then(|a| a.record);
        match Identity::of(path) {
            Err(_) => {
                if let Some(record) = record {
                    self.release(&record).await;
                }
                None
            }
            Ok(identity) => {
                let unchanged = record.as_ref().is_some_and(|r| r.identity == identity);
                if unchanged && !force {
                    return self.archive(path);
                }
                self.import(path, identity, record).await;
                self.archive(path)
            }
        }
    }

    /// Imports an archive, retrying while containerd is away.
    async fn import(self: &Arc<Self>, path: &Path, identity: Identity, previous: Option<Record>) {
        self.set_state(path, State::Pending, None);
        let Ok(_permit) = self.slots.acquire().await else {
            return;
        };
        {
            let mut inner = self.inner.lock().unwrap();
            inner.importing += 1;
            if let Some(a) = inner.archives.get_mut(path) {
                a.total = identity.size;
                a.progress.store(0, Ordering::Relaxed);
            }
        }
        self.set_state(path, State::Importing, None);
        let progress = self.archive(path).map(|a| a.progress).unwrap_or_default();
        let source = Source::File(path.to_path_buf());
        let mut attempt = 0;
        let result = loop {
            let Some(client) = self.connect().await else {
                break None;
            };
            progress.store(0, Ordering::Relaxed);
            tracing::info!(archive = %path.display(), "importing");
            let r = import::import(&client, &source, &self.options, progress.clone()).await;
            self.bytes_read
                .fetch_add(progress.load(Ordering::Relaxed), Ordering::Relaxed);
            match r {
                Err(e)
                    if e.is_containerd_fault()
                        && !self.cancel.load(Ordering::Relaxed)
                        && attempt < 30 =>
                {
                    attempt += 1;
                    tracing::warn!(archive = %path.display(), error = %e, "containerd failed during the import; trying again");
                    self.connected.store(false, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break Some(other),
            }
        };
        {
            let mut inner = self.inner.lock().unwrap();
            inner.importing -= 1;
        }
        let Some(result) = result else {
            // Shutting down: the next start resumes.
            self.set_state(path, State::Pending, None);
            return;
        };
        if self.cancel.load(Ordering::Relaxed) {
            self.set_state(path, State::Pending, None);
            return;
        }
        match result {
            Ok(report) => {
                self.metrics.import_done(&report);
                let images: Vec<RecordedImage> =
                    report.images.iter().map(RecordedImage::from).collect();
                let ok = report.ok();
                let last_error = report.failed.join("; ");
                let record = Record {
                    path: path.to_path_buf(),
                    identity,
                    outcome: if ok {
                        Outcome::Imported
                    } else {
                        Outcome::Failed
                    },
                    last_error: last_error.clone(),
                    images,
                    blobs: report.blobs.clone(),
                    lease: report.lease.clone(),
                    bytes: report.archive_bytes,
                    seconds: report.seconds,
                    imported_at: now_unix(),
                    imports: previous.as_ref().map_or(0, |p| p.imports) + 1,
                    fingerprint: String::new(),
                };
                if ok {
                    tracing::info!(archive = %path.display(), images = report.images.len(), seconds = report.seconds, "imported");
                } else {
                    tracing::error!(archive = %path.display(), error = %last_error, "some images of the archive failed");
                }
                // Images the archive provided before but no longer does lose their pin. After a
                // partial failure nothing is unpinned: an image that failed this time keeps its
                // earlier record (and pin) while the archive still names it.
                let mut record = record;
                if let Some(prev) = &previous {
                    let now: BTreeSet<String> =
                        record.images.iter().map(|i| i.name.clone()).collect();
                    let dropped: Vec<RecordedImage> = prev
                        .images
                        .iter()
                        .filter(|i| !now.contains(&i.name))
                        .cloned()
                        .collect();
                    if ok {
                        let names: Vec<String> = dropped.iter().map(|i| i.name.clone()).collect();
                        self.unpin(&names, path).await;
                    } else {
                        record.images.extend(dropped);
                    }
                    if record.lease.is_none() {
                        record.lease = prev.lease.clone();
                    }
                }
                if let Err(e) = self.records.save(&record) {
                    tracing::error!(archive = %path.display(), error = %e, "could not save the state record");
                }
                self.set_state(
                    path,
                    if ok { State::Imported } else { State::Failed },
                    Some(Some(record)),
                );
            }
            Err(e) => {
                self.metrics.import_failed();
                tracing::error!(error = %e, "import failed");
                // Keep what a previous import provided (its images stay pinned); remember the
                // failure against this identity so it is tried again only when the file changes.
                let mut record = previous.unwrap_or(Record {
                    path: path.to_path_buf(),
                    identity,
                    outcome: Outcome::Failed,
                    last_error: String::new(),
                    images: Vec::new(),
                    blobs: Vec::new(),
                    lease: None,
                    bytes: 0,
                    seconds: 0.0,
                    imported_at: 0,
                    imports: 0,
                    fingerprint: String::new(),
                });
                // A broken archive is not tried again until it changes; a failure of containerd
                // or of the local disk is not the archive's fault: tried again at the next event
                // or start.
                record.identity = if !e.is_archive_fault() {
                    Identity::default()
                } else {
                    identity
                };
                record.outcome = Outcome::Failed;
                record.last_error = e.to_string();
                if let Err(e) = self.records.save(&record) {
                    tracing::error!(archive = %path.display(), error = %e, "could not save the state record");
                }
                self.set_state(path, State::Failed, Some(Some(record)));
            }
        }
    }

    /// The image names provided by present archives other than `except`, with their archive.
    fn providers(&self, except: &Path) -> HashMap<String, PathBuf> {
        let inner = self.inner.lock().unwrap();
        let mut out = HashMap::new();
        for a in inner.archives.values() {
            if a.path == except || !a.path.exists() {
                continue;
            }
            if let Some(r) = &a.record {
                for i in &r.images {
                    out.insert(i.name.clone(), a.path.clone());
                }
            }
        }
        out
    }

    /// Removes the pins from `names` (taken from `archive`), unless another present archive
    /// provides them: those are re-labelled with that archive instead.
    async fn unpin(&self, names: &[String], archive: &Path) -> Vec<String> {
        if names.is_empty() {
            return Vec::new();
        }
        let Some(client) = self.connect().await else {
            return Vec::new();
        };
        let providers = self.providers(archive);
        let mut unpinned = Vec::new();
        for name in names {
            let mut labels: BTreeMap<String, Option<String>> = BTreeMap::new();
            if let Some(other) = providers.get(name) {
                labels.insert(LABEL_ARCHIVE.into(), Some(other.display().to_string()));
            } else {
                labels.insert(LABEL_CRI_PINNED.into(), None);
                labels.insert(LABEL_PINNED.into(), None);
                labels.insert(LABEL_ARCHIVE.into(), None);
            }
            // Only touch images that still name this archive.
            let image = match client.get_image(name).await {
                Ok(Some(img))
                    if img.labels.get(LABEL_ARCHIVE).map(PathBuf::from).as_deref()
                        == Some(archive) =>
                {
                    img
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "could not look the image up");
                    continue;
                }
            };
            match client.set_image_labels(&image, &labels).await {
                Ok(()) if providers.contains_key(name) => {}
                Ok(()) => {
                    tracing::info!(image = %name, archive = %archive.display(), "unpinned");
                    unpinned.push(name.clone());
                }
                Err(e) => tracing::warn!(image = %name, error = %e, "could not unpin"),
            }
        }
        unpinned
    }

    /// The archive is gone (or forgotten): unpin its images and release its lease.
    pub async fn release(&self, record: &Record) -> Vec<String> {
        let names: Vec<String> = record.images.iter().map(|i| i.name.clone()).collect();
        let unpinned = self.unpin(&names, &record.path).await;
        // The recorded lease, and the one named after the path (a failed first import may have
        // created it without recording it).
        let mut leases: BTreeSet<String> = record.lease.iter().cloned().collect();
        leases.insert(crate::import::archive_lease_id(&record.path));
        if let Some(client) = self.connect().await {
            for lease in &leases {
                if let Err(e) = client.delete_lease(lease).await {
                    tracing::warn!(%lease, error = %e, "could not delete the archive lease");
                }
            }
        }
        if let Err(e) = self.records.remove(&record.path) {
            tracing::warn!(archive = %record.path.display(), error = %e, "could not remove the state record");
        }
        self.forget_state(&record.path);
        tracing::info!(archive = %record.path.display(), "released");
        unpinned
    }

    /// Checks that an unchanged archive's images are still there and pinned, and its lease
    /// holds; repairs from the record. Returns false when content is gone (re-import needed).
    async fn verify(
        &self,
        client: &Containerd,
        record: &Record,
        images: &HashMap<String, crate::containerd::ImageRecord>,
        leases: &BTreeSet<String>,
    ) -> bool {
        if record.outcome != Outcome::Imported {
            return true;
        }
        let labels = self.options.image_labels(Some(&record.path));
        for want in &record.images {
            let ok = images.get(&want.name).is_some_and(|have| {
                have.digest == want.digest
                    && labels
                        .iter()
                        .all(|(k, v)| k == LABEL_ARCHIVE || have.labels.get(k) == Some(v))
            });
            if ok {
                continue;
            }
            let digest = match want.digest.parse() {
                Ok(d) => d,
                Err(_) => return false,
            };
            if !matches!(client.info(&digest).await, Ok(Some(_))) {
                tracing::info!(image = %want.name, "content is gone; importing the archive again");
                return false;
            }
            let target = containerd_client::types::Descriptor {
                media_type: want.media_type.clone(),
                digest: want.digest.clone(),
                size: want.size,
                annotations: Default::default(),
            };
            match client.put_image(&want.name, target, &labels).await {
                Ok(()) => tracing::info!(image = %want.name, "repaired the image record"),
                Err(e) => {
                    tracing::warn!(image = %want.name, error = %e, "repair failed; importing again");
                    return false;
                }
            }
        }
        if let Some(lease) = &record.lease {
            if !leases.contains(lease) {
                let mut l = HashMap::new();
                l.insert(LABEL_ARCHIVE.to_string(), record.path.display().to_string());
                if client.create_lease(lease, l, None).await.is_err() {
                    return false;
                }
                for b in &record.blobs {
                    if client.lease_resource(lease, b, true).await.is_err() {
                        return false;
                    }
                }
                tracing::info!(%lease, "recreated the archive lease");
            }
        }
        true
    }

    /// Startup: clean up after a crash, reconcile every archive, then report ready.
    pub async fn startup(self: &Arc<Self>) {
        let Some(client) = self.connect().await else {
            return;
        };
        cleanup_leftovers(&client, self.cfg.content_proxy.root.as_deref()).await;

        let records = self.records.load_all().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the state directory");
            Vec::new()
        });
        {
            let mut inner = self.inner.lock().unwrap();
            for r in &records {
                let state = if r.outcome == Outcome::Imported {
                    State::Imported
                } else {
                    State::Failed
                };
                inner.archives.insert(
                    r.path.clone(),
                    ArchiveStatus {
                        path: r.path.clone(),
                        state,
                        record: Some(r.clone()),
                        progress: Arc::new(AtomicU64::new(0)),
                        total: r.identity.size,
                    },
                );
            }
        }
        // Gone archives first: their images lose their pins (unless a present archive provides them).
        for r in records.iter().filter(|r| !r.path.exists()) {
            self.release(r).await;
        }
        let images: HashMap<String, crate::containerd::ImageRecord> =
            match client.list_images(vec![]).await {
                Ok(list) => list.into_iter().map(|i| (i.name.clone(), i)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list images");
                    HashMap::new()
                }
            };
        let leases: BTreeSet<String> = client
            .list_leases("id~=^airlift-archive-")
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        let settle = self.cfg.settle();
        for path in self.scan() {
            let record = self.archive(&path).and_then(|a| a.record);
            let identity = Identity::of(&path).ok();
            let unchanged = matches!((&record, identity), (Some(r), Some(id)) if r.identity == id);
            let mut force = false;
            if unchanged {
                let r = record.as_ref().unwrap();
                if self.verify(&client, r, &images, &leases).await {
                    continue;
                }
                force = true;
            }
            // A file modified within the settle interval may still be being written: it is
            // imported (still before ready) once it has stayed unchanged for the interval.
            let d = self.clone();
            tasks.spawn(async move {
                wait_settled(&path, settle).await;
                d.reconcile(&path, force).await
            });
        }
        while tasks.join_next().await.is_some() {}
        if self.cancel.load(Ordering::Relaxed) {
            return;
        }
        self.startup.send_replace(true);
        let (_, _, n) = self.counts();
        tracing::info!(archives = n, "startup import done; ready");
        if self.cfg.content_proxy.root.is_none() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        } else {
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status("startup import done")],
            );
        }
    }

    /// Forgets an archive: unpins its images and releases its lease. Returns the images unpinned.
    pub async fn forget(self: &Arc<Self>, path: &Path) -> Option<Vec<String>> {
        let lock = self.path_lock(path);
        let _guard = lock.lock().await;
        let record = self.archive(path)?.record?;
        Some(self.release(&record).await)
    }

    /// Runs everything until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let api = api::listen(self.clone()).await?;
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
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<watch::Event>(1024);
        let watcher = tokio::spawn(watch::watch(
            self.cfg.images_dirs.clone(),
            self.cfg.settle(),
            events_tx,
        ));
        let startup = {
            let d = self.clone();
            tokio::spawn(async move { d.startup().await })
        };
        let dispatcher = {
            let d = self.clone();
            tokio::spawn(async move {
                d.wait_startup().await;
                while let Some(ev) = events_rx.recv().await {
                    let d = d.clone();
                    tokio::spawn(async move {
                        match ev {
                            watch::Event::Settled(p) | watch::Event::Removed(p) => {
                                d.reconcile(&p, false).await;
                            }
                        }
                    });
                }
            })
        };
        shutdown.await;
        tracing::info!("shutting down");
        self.cancel.store(true, Ordering::Relaxed);
        watcher.abort();
        dispatcher.abort();
        // In-flight imports notice the cancel flag at their next read and clean up.
        let _ = tokio::time::timeout(Duration::from_secs(20), startup).await;
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while self.counts().1 > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        api.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        Ok(())
    }
}

/// Waits until `path` was last modified at least `settle` ago and stays unchanged that long.
async fn wait_settled(path: &Path, settle: Duration) {
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

/// Removes what a crashed airlift left behind: temporary blob files, ingests and import leases of
/// processes that no longer run.
async fn cleanup_leftovers(client: &Containerd, proxy_root: Option<&Path>) {
    // Whether a process is gone is told by its lock in the content root's temporary directory;
    // without access to it, nothing is judged (import leases expire by themselves).
    let root = match proxy_root {
        Some(r) => r.to_path_buf(),
        None => match client.content_root().await {
            Ok(Some(r)) => r,
            _ => return,
        },
    };
    let temp = root.join(crate::store::direct::TEMP_DIR);
    if !temp.is_dir() {
        return;
    }
    crate::store::direct::clean_stale(&temp);
    let dead = |id: &str, prefix: &str| {
        crate::liveness::token_of(id, prefix).is_some_and(|t| crate::liveness::is_dead(&temp, t))
    };
    if let Ok(leases) = client.list_leases("id~=^airlift-import-").await {
        for id in leases.iter().filter(|id| dead(id, "airlift-import-")) {
            let _ = client.delete_lease(id).await;
        }
    }
    if let Ok(refs) = client.ingest_refs().await {
        for r in refs.iter().filter(|r| dead(r, "airlift-")) {
            let _ = client.abort(r).await;
        }
    }
}
