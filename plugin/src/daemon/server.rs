//! The daemon's API server: airlift's gRPC API ([`crate::api`]) on a unix socket, with
//! containerd's content service beside it when airlift is containerd's content store.

use super::{ArchiveStatus, Daemon, DaemonError, State};
use crate::api::proto;
use crate::error::Class;
use crate::proxy::ContentService;
use crate::store::local::LocalStore;
use proto::airlift_server::{Airlift, AirliftServer};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

fn state(s: State) -> proto::ArchiveState {
    match s {
        State::Pending => proto::ArchiveState::Pending,
        State::Importing => proto::ArchiveState::Importing,
        State::Imported => proto::ArchiveState::Imported,
        State::Failed => proto::ArchiveState::Failed,
    }
}

/// One archive as the API shows it: the names that come from it, those another archive takes
/// precedence for, and "restoring" while one of its images is being restored.
fn archive(a: &ArchiveStatus, all: &Listing) -> proto::Archive {
    let r = a.record.as_ref();
    let winners = &all.winners;
    let shadows = r
        .map(|r| super::names::shadowed(winners, r))
        .unwrap_or_default();
    let mut state = state(a.state);
    let restoring = all
        .restoring
        .iter()
        .any(|n| winners.get(n) == Some(&a.path));
    if a.state == State::Imported && restoring {
        state = proto::ArchiveState::Restoring;
    }
    proto::Archive {
        path: crate::escape::shown(&a.path).to_string(),
        state: state as i32,
        images: r
            .map(|r| {
                r.names()
                    .filter(|n| !shadows.contains_key(*n))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        bytes: r.map_or(0, |r| r.bytes),
        duration_seconds: r.map_or(0.0, |r| r.seconds),
        last_error: a
            .refused
            .clone()
            .or_else(|| r.map(|r| r.last_error.clone()))
            .unwrap_or_default(),
        unpack_error: r.map(|r| r.unpack_error.clone()).unwrap_or_default(),
        served_only: r
            .map(|r| {
                r.served_only
                    .iter()
                    .filter(|n| !shadows.contains_key(*n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        imported_at: r.map_or(0, |r| r.imported_at),
        imports: r.map_or(0, |r| r.imports),
        shadowed: shadows
            .into_iter()
            .map(|(name, by)| proto::Shadowed {
                name,
                by: crate::escape::shown(&by).to_string(),
            })
            .collect(),
        intake: r.is_some_and(|r| r.intake),
        note: String::new(),
    }
}

/// The path a request names (escaped, as airlift writes paths into strings).
fn requested(text: &str) -> Result<PathBuf, Status> {
    crate::escape::unescape(text).ok_or_else(|| {
        Class::InvalidArgument.status(format!("{text}: not a path as airlift writes them"))
    })
}

/// What every archive's entry is computed from, taken once per listing (so that listing
/// hundreds of archives stays linear).
struct Listing {
    /// Name → the archive it comes from.
    winners: HashMap<String, PathBuf>,
    /// Names being restored.
    restoring: Vec<String>,
}

impl Listing {
    fn of(d: &Daemon) -> Listing {
        Listing {
            winners: super::names::winners(&d.present_records()),
            restoring: d.repairs_pending(),
        }
    }
}

/// airlift's API; its work runs on the daemon's runtime (`.1`), not the API thread's.
struct Service(Arc<Daemon>, tokio::runtime::Handle);

type ProgressStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ImportProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Airlift for Service {
    type ImportStream = ProgressStream;

    async fn import(
        &self,
        req: Request<proto::ImportRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let path = requested(&req.get_ref().path)?;
        if !path.is_absolute() {
            return Err(Class::InvalidArgument.status(format!(
                "{}: the path must be absolute",
                crate::escape::shown(&path)
            )));
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| Class::NotFound.status(format!("{}: {e}", crate::escape::shown(&path))))?;
        if !meta.is_file() {
            return Err(Class::InvalidArgument.status(format!(
                "{}: not a regular file",
                crate::escape::shown(&path)
            )));
        }
        let daemon = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.1.spawn(async move {
            let job = {
                let d = daemon.clone();
                let p = path.clone();
                tokio::spawn(async move { d.reconcile(&p, true).await })
            };
            let total = meta.len();
            while !job.is_finished() {
                let bytes = daemon
                    .archive(&path)
                    .map_or(0, |a| a.progress.load(Ordering::Relaxed));
                let msg = proto::ImportProgress {
                    bytes_read: bytes,
                    total_bytes: total,
                    done: false,
                    archive: None,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let result = match job.await {
                Ok(Some(a)) => Ok(proto::ImportProgress {
                    bytes_read: a.record.as_ref().map_or(0, |r| r.bytes),
                    total_bytes: total,
                    done: true,
                    archive: Some(archive(&a, &Listing::of(&daemon))),
                }),
                Ok(None) => Err(Class::NotFound.status(format!(
                    "{}: the archive disappeared",
                    crate::escape::shown(&path)
                ))),
                Err(e) => Err(Class::Internal.status(e.to_string())),
            };
            let _ = tx.send(result).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list(
        &self,
        _: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let all = Listing::of(&self.0);
        Ok(Response::new(proto::ListResponse {
            archives: self
                .0
                .archives()
                .iter()
                .map(|a| archive(a, &all))
                .chain(
                    self.0
                        .not_archives()
                        .into_iter()
                        .map(|(path, note)| proto::Archive {
                            path: crate::escape::shown(&path).to_string(),
                            state: proto::ArchiveState::Ignored as i32,
                            note,
                            ..Default::default()
                        }),
                )
                .collect(),
        }))
    }

    async fn forget(
        &self,
        req: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let path = requested(&req.get_ref().path)?;
        // A record of a newer state format: this airlift cannot know what to release.
        if let Some(refused) = self.0.archive(&path).and_then(|a| a.refused) {
            return Err(Class::FailedPrecondition.status(refused));
        }
        let daemon = self.0.clone();
        let p = path.clone();
        let forgotten = self
            .1
            .spawn(async move { daemon.forget(&p).await })
            .await
            .map_err(|e| Class::Internal.status(e.to_string()))?;
        match forgotten {
            Some(unpinned) => Ok(Response::new(proto::ForgetResponse { unpinned })),
            None => Err(Class::NotFound.status(format!(
                "{}: not a known archive",
                crate::escape::shown(&path)
            ))),
        }
    }

    async fn status(
        &self,
        _: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let (queued, importing, archives) = self.0.counts();
        let (repairs, restoring) = self.0.repair_counts();
        Ok(Response::new(proto::StatusResponse {
            repairs: repairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            restoring: restoring as u32,
            following: self.0.following(),
            startup_done: self.0.startup_done(),
            containerd_connected: self.0.containerd_connected(),
            queue_length: queued,
            settling: self.0.settling(),
            importing,
            archives,
            archive_bytes_read: self.0.bytes_read(),
            refused_records: self.0.refused(),
            content_proxy_root: self
                .0
                .config()
                .content_proxy
                .root
                .as_ref()
                .map(|r| crate::escape::shown(&r).to_string())
                .unwrap_or_default(),
        }))
    }

    async fn ready(
        &self,
        req: Request<proto::ReadyRequest>,
    ) -> Result<Response<proto::ReadyResponse>, Status> {
        let names = req.into_inner().images;
        let daemon = self.0.clone();
        let missing = self
            .1
            .spawn(async move {
                let missing = daemon.not_ready(&names).await?;
                let served = missing
                    .iter()
                    .filter(|n| daemon.serving_only(n))
                    .cloned()
                    .collect::<Vec<_>>();
                Ok::<_, crate::reference::InvalidReference>((missing, served))
            })
            .await
            .map_err(|e| Class::Internal.status(e.to_string()))?
            .map_err(|e| Class::InvalidArgument.status(e.to_string()))?;
        let (missing, served_only) = missing;
        Ok(Response::new(proto::ReadyResponse {
            ready: missing.is_empty(),
            missing,
            served_only,
        }))
    }
}

/// The API server's thread; [`ApiServer::abort`] stops it.
pub struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ApiServer {
    /// Stops serving.
    pub fn abort(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Makes the API socket's directory (`0755`, whatever the umask) or checks the one there: it
/// must not be writable by others, who could otherwise put their own socket in airlift's place.
fn socket_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "its directory {} is writable by others (mode {:o}); make it 0755 or choose \
                 another socket path",
                crate::escape::shown(dir),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Binds the API socket (mode 0660) and serves it in the background, with containerd's content
/// service beside airlift's own when a content proxy root is configured.
///
/// The socket is served by a thread of its own running a single-threaded runtime: containerd
/// asks for content in 32 KiB requests, and keeping each request on one thread (no wake-ups
/// across threads) roughly halves what one costs. airlift's own API hands its work to the
/// daemon's runtime.
pub async fn listen(daemon: Arc<Daemon>) -> Result<ApiServer, DaemonError> {
    let socket = daemon.config().socket.clone();
    let content = match &daemon.config().content_proxy.root {
        Some(root) => {
            let store = LocalStore::open(root).map_err(|e| DaemonError::Setup {
                what: format!("content proxy root {}", crate::escape::shown(&root)),
                cause: std::io::Error::other(e.to_string()),
            })?;
            tracing::info!(root = %crate::escape::shown(&root), socket = %crate::escape::shown(&socket), "serving containerd's content store");
            Some(ContentService::new(store).into_server())
        }
        None => None,
    };
    let what = format!("API socket {}", crate::escape::shown(&socket));
    if let Some(dir) = socket.parent() {
        socket_dir(dir).map_err(super::setup(what.clone()))?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener =
        std::os::unix::net::UnixListener::bind(&socket).map_err(super::setup(what.clone()))?;
    listener
        .set_nonblocking(true)
        .map_err(super::setup(what.clone()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .map_err(super::setup(what.clone()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::setup(what.clone()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = Service(daemon, tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("airlift-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the API server cannot listen");
                        return;
                    }
                };
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(AirliftServer::new(service))
                    .add_optional_service(content)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                {
                    // Without its socket airlift is of no use (and as a content proxy, containerd
                    // has no content store): exit, so the supervisor restarts it.
                    tracing::error!(error = %e, "the API server failed; exiting");
                    std::process::exit(1);
                }
            })
        })
        .map_err(super::setup(what))?;
    Ok(ApiServer { stop: Some(stop) })
}
