//! The daemon's API server: airlift's gRPC API ([`crate::api`]) on a unix socket, with
//! containerd's content service beside it when airlift is containerd's content store.

use super::{ArchiveStatus, Daemon, DaemonError, State};
use crate::api::proto;
use crate::error::Class;
use crate::proxy::ContentService;
use crate::store::local::LocalStore;
use proto::airlift_server::{Airlift, AirliftServer};
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
fn archive(d: &Daemon, a: &ArchiveStatus) -> proto::Archive {
    let r = a.record.as_ref();
    let shadows = r.map(|r| d.shadows(r)).unwrap_or_default();
    let mut state = state(a.state);
    if a.state == State::Imported && d.restoring(&a.path) {
        state = proto::ArchiveState::Restoring;
    }
    proto::Archive {
        path: a.path.display().to_string(),
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
        last_error: r.map(|r| r.last_error.clone()).unwrap_or_default(),
        imported_at: r.map_or(0, |r| r.imported_at),
        imports: r.map_or(0, |r| r.imports),
        shadowed: shadows
            .into_iter()
            .map(|(name, by)| proto::Shadowed {
                name,
                by: by.display().to_string(),
            })
            .collect(),
        intake: r.is_some_and(|r| r.intake),
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
        let path = PathBuf::from(&req.get_ref().path);
        if !path.is_absolute() {
            return Err(Class::InvalidArgument
                .status(format!("{}: the path must be absolute", path.display())));
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| Class::NotFound.status(format!("{}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(
                Class::InvalidArgument.status(format!("{}: not a regular file", path.display()))
            );
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
            let result =
                match job.await {
                    Ok(Some(a)) => Ok(proto::ImportProgress {
                        bytes_read: a.record.as_ref().map_or(0, |r| r.bytes),
                        total_bytes: total,
                        done: true,
                        archive: Some(archive(&daemon, &a)),
                    }),
                    Ok(None) => Err(Class::NotFound
                        .status(format!("{}: the archive disappeared", path.display()))),
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
        Ok(Response::new(proto::ListResponse {
            archives: self
                .0
                .archives()
                .iter()
                .map(|a| archive(&self.0, a))
                .collect(),
        }))
    }

    async fn forget(
        &self,
        req: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let path = PathBuf::from(&req.get_ref().path);
        let daemon = self.0.clone();
        let p = path.clone();
        let forgotten = self
            .1
            .spawn(async move { daemon.forget(&p).await })
            .await
            .map_err(|e| Class::Internal.status(e.to_string()))?;
        match forgotten {
            Some(unpinned) => Ok(Response::new(proto::ForgetResponse { unpinned })),
            None => Err(Class::NotFound.status(format!("{}: not a known archive", path.display()))),
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
            content_proxy_root: self
                .0
                .config()
                .content_proxy
                .root
                .as_ref()
                .map(|r| r.display().to_string())
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
            .spawn(async move { daemon.not_ready(&names).await })
            .await
            .map_err(|e| Class::Internal.status(e.to_string()))?
            .map_err(|e| Class::InvalidArgument.status(e))?;
        Ok(Response::new(proto::ReadyResponse {
            ready: missing.is_empty(),
            missing,
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
                what: format!("content proxy root {}", root.display()),
                cause: std::io::Error::other(e.to_string()),
            })?;
            tracing::info!(root = %root.display(), socket = %socket.display(), "serving containerd's content store");
            Some(ContentService::new(store).into_server())
        }
        None => None,
    };
    let what = format!("API socket {}", socket.display());
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(super::setup(what.clone()))?;
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
